/* SPDX-License-Identifier: MIT */
/*
 * Capability chains of VFIO info buffers (IOMMU type1 info, region info,
 * device info): walking them, and the typed accessors for the
 * capabilities the library understands.
 *
 * The bytes come from the kernel, a simulator or a fuzzer, so nothing in
 * them is trusted: every offset is checked against the end of the data
 * before it is read, fields are read with memcpy (a chain offset need not
 * be aligned), and `next` must move strictly forward, which bounds every
 * walk without remembering where it has been.
 */
#include "internal.h"

/* Where each kind of info keeps its chain. */
struct info_kind {
	const char *name;
	uint32_t hdr_size;
	uint32_t caps_flag;
	uint32_t cap_offset_at;
};

static const struct info_kind info_kinds[] = {
	[VFIOMIG_INFO_IOMMU_TYPE1] = {
		.name = "IOMMU type1 info",
		.hdr_size = sizeof(struct vu_iommu_type1_info),
		.caps_flag = VU_IOMMU_INFO_CAPS,
		.cap_offset_at = offsetof(struct vu_iommu_type1_info, cap_offset),
	},
	[VFIOMIG_INFO_REGION] = {
		.name = "region info",
		.hdr_size = sizeof(struct vu_region_info),
		.caps_flag = VU_REGION_INFO_FLAG_CAPS,
		.cap_offset_at = offsetof(struct vu_region_info, cap_offset),
	},
	[VFIOMIG_INFO_DEVICE] = {
		.name = "device info",
		.hdr_size = sizeof(struct vu_device_info),
		.caps_flag = VU_DEVICE_FLAGS_CAPS,
		.cap_offset_at = offsetof(struct vu_device_info, cap_offset),
	},
};

/*
 * What the library knows about a capability id. Array capabilities carry
 * a u32 element count right after the header and their elements after a
 * 16-byte fixed part, so min_len doubles as the start of the array.
 */
struct cap_rule {
	uint32_t kind;
	uint16_t id;
	const char *name;
	uint32_t min_len;
	uint32_t elem_size;  /* 0: not an array */
	const char *count_name;
};

static const struct cap_rule cap_rules[] = {
	{ VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_IOVA_RANGE, "IOVA_RANGE",
	  sizeof(struct vu_iommu_type1_info_cap_iova_range), sizeof(struct vu_iova_range),
	  "nr_iovas" },
	{ VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_MIGRATION, "MIGRATION",
	  sizeof(struct vu_iommu_type1_info_cap_migration), 0, NULL },
	{ VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_DMA_AVAIL, "DMA_AVAIL",
	  sizeof(struct vu_iommu_type1_info_dma_avail), 0, NULL },
	{ VFIOMIG_INFO_REGION, VFIOMIG_CAP_REGION_SPARSE_MMAP, "SPARSE_MMAP",
	  sizeof(struct vu_region_info_cap_sparse_mmap), sizeof(struct vu_region_sparse_mmap_area),
	  "nr_areas" },
	{ VFIOMIG_INFO_REGION, VFIOMIG_CAP_REGION_TYPE, "TYPE",
	  sizeof(struct vu_region_info_cap_type), 0, NULL },
	{ VFIOMIG_INFO_REGION, VFIOMIG_CAP_REGION_MSIX_MAPPABLE, "MSIX_MAPPABLE",
	  sizeof(struct vu_info_cap_header), 0, NULL },
};

/* The fixed header of one buffer, as far as the chain is concerned. */
struct info_hdr {
	const struct info_kind *k;
	uint32_t end;   /* end of the data: argsz, known to be <= len */
	uint32_t first; /* cap_offset */
};

static uint32_t rd32(const void *buf, size_t off)
{
	uint32_t v;

	memcpy(&v, (const unsigned char *)buf + off, sizeof(v));
	return v;
}

static uint64_t rd64(const void *buf, size_t off)
{
	uint64_t v;

	memcpy(&v, (const unsigned char *)buf + off, sizeof(v));
	return v;
}

static const struct cap_rule *cap_rule(uint32_t kind, uint16_t id)
{
	for (size_t i = 0; i < VM_ARRAY_SIZE(cap_rules); i++)
		if (cap_rules[i].kind == kind && cap_rules[i].id == id)
			return &cap_rules[i];
	return NULL;
}

/*
 * Read the fixed header. -ENOENT (no log) when the info has no chain:
 * that is the normal answer for most regions and older kernels.
 */
static int info_parse(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len,
		      struct info_hdr *h)
{
	const struct info_kind *k;
	uint32_t argsz, flags;

	if (kind >= VM_ARRAY_SIZE(info_kinds) || !info_kinds[kind].name)
		return vm_err(ctx, -EINVAL, "capability chain: unknown info kind %u", kind);
	k = &info_kinds[kind];
	if (!buf)
		return vm_err(ctx, -EINVAL, "%s: no buffer", k->name);
	if (len < k->hdr_size)
		return vm_err(ctx, -EINVAL,
			      "%s: buffer of %zu bytes is shorter than the %u-byte header", k->name,
			      len, k->hdr_size);
	argsz = rd32(buf, 0);
	flags = rd32(buf, 4);
	if (argsz < k->hdr_size)
		return vm_err(ctx, -EINVAL, "%s: argsz %u is smaller than the %u-byte header",
			      k->name, argsz, k->hdr_size);
	/*
	 * The kernel answers a too-small buffer by raising argsz (and leaving
	 * cap_offset 0): the chain is not in this buffer, only a bigger one
	 * can hold it.
	 */
	if (argsz > len)
		return vm_err(ctx, -ENOSPC,
			      "%s: argsz %u is larger than the %zu-byte buffer (truncated: grow "
			      "the buffer and ask again)",
			      k->name, argsz, len);
	h->k = k;
	h->end = argsz;
	h->first = rd32(buf, k->cap_offset_at);
	if (!(flags & k->caps_flag) || h->first == 0)
		return -ENOENT;
	return 0;
}

/*
 * Read the capability header at `off` and check what the walk relies on:
 * it lies after the fixed header and inside the data, and its `next`
 * leaves room for this header and for the next one.
 */
static int cap_read(struct vfiomig_ctx *ctx, const struct info_hdr *h, const void *buf,
		    uint32_t off, struct vfiomig_cap *cap)
{
	const char *name = h->k->name;
	struct vu_info_cap_header ch;

	if (off < h->k->hdr_size)
		return vm_err(ctx, -EINVAL,
			      "%s: capability at offset %u is inside the %u-byte header", name, off,
			      h->k->hdr_size);
	if (off >= h->end)
		return vm_err(ctx, -EINVAL,
			      "%s: capability at offset %u is past the end of the data at %u", name,
			      off, h->end);
	if ((uint64_t)off + sizeof(ch) > h->end)
		return vm_err(ctx, -EINVAL,
			      "%s: capability at offset %u: its %zu-byte header crosses the end of "
			      "the data at %u",
			      name, off, sizeof(ch), h->end);
	memcpy(&ch, (const unsigned char *)buf + off, sizeof(ch));
	if (ch.next) {
		if (ch.next <= off)
			return vm_err(ctx, -EINVAL,
				      "%s: capability %u at offset %u: next %u does not move "
				      "forward",
				      name, ch.id, off, ch.next);
		if (ch.next - off < sizeof(ch))
			return vm_err(ctx, -EINVAL,
				      "%s: capability %u at offset %u: next %u overlaps its "
				      "%zu-byte header",
				      name, ch.id, off, ch.next, sizeof(ch));
		if ((uint64_t)ch.next + sizeof(ch) > h->end)
			return vm_err(ctx, -EINVAL,
				      "%s: capability %u at offset %u: next %u leaves no room "
				      "for a capability before the end of the data at %u",
				      name, ch.id, off, ch.next, h->end);
	}
	cap->id = ch.id;
	cap->version = ch.version;
	cap->offset = off;
	cap->len = (ch.next ? ch.next : h->end) - off;
	cap->next = ch.next;
	return 0;
}

/* Payload checks for the ids the library knows; unknown ids pass untouched. */
static int cap_check(struct vfiomig_ctx *ctx, const struct info_hdr *h, uint32_t kind,
		     const void *buf, const struct vfiomig_cap *cap)
{
	const struct cap_rule *r = cap_rule(kind, cap->id);
	const char *name = h->k->name;
	uint32_t nr, room;

	if (!r)
		return 0;
	if (cap->version == 0)
		return vm_err(ctx, -EINVAL, "%s: %s capability (id %u) at offset %u: version 0",
			      name, r->name, cap->id, cap->offset);
	if (cap->len < r->min_len)
		return vm_err(ctx, -EINVAL,
			      "%s: %s capability (id %u) at offset %u: %u bytes, needs at least %u",
			      name, r->name, cap->id, cap->offset, cap->len, r->min_len);
	if (!r->elem_size)
		return 0;

	nr = rd32(buf, cap->offset + sizeof(struct vu_info_cap_header));
	room = (cap->len - r->min_len) / r->elem_size;
	if (nr > room)
		return vm_err(ctx, -EINVAL,
			      "%s: %s capability (id %u) at offset %u: absurd %s %u (its %u bytes "
			      "hold at most %u)",
			      name, r->name, cap->id, cap->offset, r->count_name, nr, cap->len,
			      room);

	for (uint32_t i = 0; i < nr; i++) {
		size_t at = (size_t)cap->offset + r->min_len + (size_t)i * r->elem_size;
		uint64_t a = rd64(buf, at), b = rd64(buf, at + 8), sum;

		if (kind == VFIOMIG_INFO_IOMMU_TYPE1 && a > b)
			return vm_err(ctx, -EINVAL,
				      "%s: %s capability (id %u) at offset %u: range %u starts at "
				      "0x%llx, after its inclusive end 0x%llx",
				      name, r->name, cap->id, cap->offset, i,
				      (unsigned long long)a, (unsigned long long)b);
		if (kind == VFIOMIG_INFO_REGION && __builtin_add_overflow(a, b, &sum))
			return vm_err(ctx, -EINVAL,
				      "%s: %s capability (id %u) at offset %u: area %u (offset "
				      "0x%llx, size 0x%llx) overflows",
				      name, r->name, cap->id, cap->offset, i,
				      (unsigned long long)a, (unsigned long long)b);
	}
	return 0;
}

int vfiomig_caps_first(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len,
		       struct vfiomig_cap *cap)
{
	VM_API(ctx);
	struct vfiomig_cap c;
	struct info_hdr h = { 0 };
	int err;

	if (!cap)
		return vm_err(ctx, -EINVAL, "capability chain: no capability to fill");
	err = info_parse(ctx, kind, buf, len, &h);
	if (err)
		return err;
	err = cap_read(ctx, &h, buf, h.first, &c);
	if (err)
		return err;
	*cap = c;
	return 0;
}

int vfiomig_caps_next(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len,
		      struct vfiomig_cap *cap)
{
	VM_API(ctx);
	struct vfiomig_cap c;
	struct info_hdr h = { 0 };
	int err;

	if (!cap)
		return vm_err(ctx, -EINVAL, "capability chain: no capability to move on from");
	err = info_parse(ctx, kind, buf, len, &h);
	if (err)
		return err;
	if (cap->next == 0)
		return -ENOENT;
	/* *cap is the caller's: re-check the step so no edit of it can loop. */
	if (cap->next <= cap->offset)
		return vm_err(ctx, -EINVAL,
			      "%s: capability %u at offset %u: next %u does not move forward",
			      h.k->name, cap->id, cap->offset, cap->next);
	err = cap_read(ctx, &h, buf, cap->next, &c);
	if (err)
		return err;
	*cap = c;
	return 0;
}

/*
 * Walk the chain: stop at the first capability with `id` (id < 0: none,
 * walk to the end checking every known payload). Returns 0 when found,
 * the number of capabilities for a full walk, or a negative errno.
 */
static int caps_walk(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len,
		     int id, struct vfiomig_cap *found)
{
	struct vfiomig_cap c;
	struct info_hdr h = { 0 };
	uint32_t off;
	int err, n;

	err = info_parse(ctx, kind, buf, len, &h);
	if (err)
		return err;
	for (n = 0, off = h.first;; n++, off = c.next) {
		if (n >= VFIOMIG_CAPS_MAX)
			return vm_err(ctx, -EINVAL,
				      "%s: capability at offset %u: more than %d capabilities in "
				      "one chain",
				      h.k->name, off, VFIOMIG_CAPS_MAX);
		err = cap_read(ctx, &h, buf, off, &c);
		if (err)
			return err;
		if (id >= 0 && c.id == id) {
			*found = c;
			return 0;
		}
		if (id < 0) {
			err = cap_check(ctx, &h, kind, buf, &c);
			if (err)
				return err;
		}
		if (!c.next)
			return id < 0 ? n + 1 : -ENOENT;
	}
}

int vfiomig_caps_find(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len,
		      uint16_t id, struct vfiomig_cap *cap)
{
	VM_API(ctx);
	if (!cap)
		return vm_err(ctx, -EINVAL, "capability chain: no capability to fill");
	return caps_walk(ctx, kind, buf, len, id, cap);
}

int vfiomig_caps_validate(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len)
{
	VM_API(ctx);
	int n = caps_walk(ctx, kind, buf, len, -1, NULL);

	return n == -ENOENT ? 0 : n;
}

/* ------------------------------------------------------------ accessors */

/* Find `id` and check its payload, so accessors may read what the rule promises. */
static int cap_get(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf, size_t len,
		   uint16_t id, struct vfiomig_cap *cap)
{
	struct info_hdr h = { .k = &info_kinds[kind] };
	int err;

	err = vfiomig_caps_find(ctx, kind, buf, len, id, cap);
	if (err)
		return err;
	return cap_check(ctx, &h, kind, buf, cap);
}

/*
 * Shared by the two array capabilities, both {hdr; u32 nr; u32 rsvd; {u64, u64}[nr]}:
 * find and check the capability, store the count, and return where the
 * elements start and how many of them to copy.
 */
static int cap_array(struct vfiomig_ctx *ctx, uint32_t kind, uint16_t id, const char *what,
		     const void *buf, size_t len, bool have_out, uint32_t max, uint32_t *nr,
		     size_t *at, uint32_t *ncopy)
{
	struct vfiomig_cap cap;
	uint32_t n;
	int err;

	if (!nr || (max && !have_out))
		return vm_err(ctx, -EINVAL, "%s: no array or count to fill", what);
	*nr = 0;
	err = cap_get(ctx, kind, buf, len, id, &cap);
	if (err)
		return err;
	n = rd32(buf, cap.offset + sizeof(struct vu_info_cap_header));
	*at = (size_t)cap.offset + 16;
	*ncopy = n < max ? n : max;
	*nr = n;
	return 0;
}

int vfiomig_cap_iova_ranges(struct vfiomig_ctx *ctx, const void *buf, size_t len,
			    struct vfiomig_iova_range *ranges, uint32_t max, uint32_t *nr)
{
	VM_API(ctx);
	uint32_t ncopy = 0;
	size_t at = 0;
	int err;

	err = cap_array(ctx, VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_IOVA_RANGE,
			"IOMMU type1 info: IOVA ranges", buf, len, ranges != NULL, max, nr, &at,
			&ncopy);
	if (err)
		return err;
	for (uint32_t i = 0; i < ncopy; i++, at += sizeof(struct vu_iova_range)) {
		ranges[i].start = rd64(buf, at + offsetof(struct vu_iova_range, start));
		ranges[i].end = rd64(buf, at + offsetof(struct vu_iova_range, end));
	}
	return 0;
}

int vfiomig_cap_sparse_mmap(struct vfiomig_ctx *ctx, const void *buf, size_t len,
			    struct vfiomig_sparse_area *areas, uint32_t max, uint32_t *nr)
{
	VM_API(ctx);
	uint32_t ncopy = 0;
	size_t at = 0;
	int err;

	err = cap_array(ctx, VFIOMIG_INFO_REGION, VFIOMIG_CAP_REGION_SPARSE_MMAP,
			"region info: sparse mmap areas", buf, len, areas != NULL, max, nr, &at,
			&ncopy);
	if (err)
		return err;
	for (uint32_t i = 0; i < ncopy; i++, at += sizeof(struct vu_region_sparse_mmap_area)) {
		areas[i].offset = rd64(buf, at + offsetof(struct vu_region_sparse_mmap_area,
							  offset));
		areas[i].size = rd64(buf, at + offsetof(struct vu_region_sparse_mmap_area, size));
	}
	return 0;
}

int vfiomig_cap_iommu_migration(struct vfiomig_ctx *ctx, const void *buf, size_t len,
				struct vfiomig_iommu_migration *mig)
{
	VM_API(ctx);
	struct vfiomig_cap cap;
	int err;

	if (!mig)
		return vm_err(ctx, -EINVAL, "IOMMU type1 info: no migration struct to fill");
	memset(mig, 0, sizeof(*mig));
	err = cap_get(ctx, VFIOMIG_INFO_IOMMU_TYPE1, buf, len, VFIOMIG_CAP_IOMMU_MIGRATION, &cap);
	if (err)
		return err;
#define MIG_AT(field) (cap.offset + offsetof(struct vu_iommu_type1_info_cap_migration, field))
	mig->flags = rd32(buf, MIG_AT(flags));
	mig->pgsize_bitmap = rd64(buf, MIG_AT(pgsize_bitmap));
	mig->max_dirty_bitmap_size = rd64(buf, MIG_AT(max_dirty_bitmap_size));
#undef MIG_AT
	return 0;
}

int vfiomig_cap_dma_avail(struct vfiomig_ctx *ctx, const void *buf, size_t len, uint32_t *avail)
{
	VM_API(ctx);
	struct vfiomig_cap cap;
	int err;

	if (!avail)
		return vm_err(ctx, -EINVAL, "IOMMU type1 info: no DMA_AVAIL count to fill");
	*avail = 0;
	err = cap_get(ctx, VFIOMIG_INFO_IOMMU_TYPE1, buf, len, VFIOMIG_CAP_IOMMU_DMA_AVAIL, &cap);
	if (err)
		return err;
	*avail = rd32(buf, cap.offset + offsetof(struct vu_iommu_type1_info_dma_avail, avail));
	return 0;
}

int vfiomig_cap_region_type(struct vfiomig_ctx *ctx, const void *buf, size_t len,
			    uint32_t *type, uint32_t *subtype)
{
	VM_API(ctx);
	struct vfiomig_cap cap;
	int err;

	if (!type || !subtype)
		return vm_err(ctx, -EINVAL, "region info: no type / subtype to fill");
	*type = 0;
	*subtype = 0;
	err = cap_get(ctx, VFIOMIG_INFO_REGION, buf, len, VFIOMIG_CAP_REGION_TYPE, &cap);
	if (err)
		return err;
	*type = rd32(buf, cap.offset + offsetof(struct vu_region_info_cap_type, type));
	*subtype = rd32(buf, cap.offset + offsetof(struct vu_region_info_cap_type, subtype));
	return 0;
}

int vfiomig_cap_msix_mappable(struct vfiomig_ctx *ctx, const void *buf, size_t len)
{
	VM_API(ctx);
	struct vfiomig_cap cap;
	int err;

	err = cap_get(ctx, VFIOMIG_INFO_REGION, buf, len, VFIOMIG_CAP_REGION_MSIX_MAPPABLE, &cap);
	if (err == -ENOENT)
		return 0;
	return err ? err : 1;
}
