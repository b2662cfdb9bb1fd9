/* SPDX-License-Identifier: MIT */
/*
 * Tests for the capability-chain parser (lib/caps.c): well-formed buffers
 * laid out the way the kernel lays them out, every kind of malformed
 * chain (each must fail with one error log line), and a seeded random
 * robustness run meant for ASan/UBSan builds. Also owns the fuzzing seeds
 * in tests/data/caps/: the builders here are their source (set
 * VFIOMIG_WRITE_CAPS_SEEDS=DIR to write them out again). Every test ends
 * with assert_no_leaks(): heap blocks and fds as at the mark the suite's
 * .init takes (see testutil.h).
 */
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

/* ------------------------------------------------------------ uAPI facts */

/* Header layouts, per kind: size, CAPS flag, where cap_offset lives. */
static const struct {
	uint32_t hdr, caps_flag, cap_off_at;
} kinds[] = {
	[VFIOMIG_INFO_IOMMU_TYPE1] = { 24, 1u << 1, 16 },
	[VFIOMIG_INFO_REGION] = { 32, 1u << 3, 12 },
	[VFIOMIG_INFO_DEVICE] = { 24, 1u << 7, 16 },
};

#define IOMMU_INFO_PGSIZES 1u
#define REGION_RW_MMAP     (1u | 2u | 4u)
#define DEVICE_RESET_PCI   (1u | 2u)
#define PCI_INDEX_OFFSET(i) ((uint64_t)(i) << 40)
#define MIB                (1024ull * 1024)

/* -------------------------------------------------------------- builder */

struct bld {
	uint8_t b[4096];
	uint32_t len;  /* bytes laid out so far */
	uint32_t kind;
	uint32_t last; /* offset of the last capability, 0: none yet */
};

static void put(struct bld *b, uint32_t off, const void *v, size_t n)
{
	cr_assert_leq(off + n, sizeof(b->b), "builder overflow");
	memcpy(b->b + off, v, n);
}

static void put16(struct bld *b, uint32_t off, uint16_t v)
{
	put(b, off, &v, sizeof(v));
}

static void put32(struct bld *b, uint32_t off, uint32_t v)
{
	put(b, off, &v, sizeof(v));
}

static void put64(struct bld *b, uint32_t off, uint64_t v)
{
	put(b, off, &v, sizeof(v));
}

static uint32_t get32(const struct bld *b, uint32_t off)
{
	uint32_t v;

	memcpy(&v, b->b + off, sizeof(v));
	return v;
}

static void bld_init(struct bld *b, uint32_t kind, uint32_t flags)
{
	memset(b, 0, sizeof(*b));
	b->kind = kind;
	b->len = kinds[kind].hdr;
	put32(b, 0, b->len);
	put32(b, 4, flags);
}

/*
 * Append a capability with a zeroed payload of plen bytes and link it
 * from the previous one (or cap_offset), packed like the kernel packs
 * them: no alignment padding, so offsets can be odd multiples of 4.
 */
static uint32_t bld_cap(struct bld *b, uint16_t id, uint16_t version, uint32_t plen)
{
	uint32_t off = b->len;

	put16(b, off, id);
	put16(b, off + 2, version);
	put32(b, off + 4, 0);
	for (uint32_t i = 0; i < plen; i++)
		b->b[off + 8 + i] = 0;
	if (b->last) {
		put32(b, b->last + 4, off);
	} else {
		put32(b, kinds[b->kind].cap_off_at, off);
		put32(b, 4, get32(b, 4) | kinds[b->kind].caps_flag);
	}
	b->last = off;
	b->len = off + 8 + plen;
	put32(b, 0, b->len); /* argsz: what the kernel reports when the buffer fits */
	return off;
}

static uint32_t cap_migration(struct bld *b, uint32_t flags, uint64_t pgsizes, uint64_t maxsz)
{
	uint32_t off = bld_cap(b, VFIOMIG_CAP_IOMMU_MIGRATION, 1, 24);

	put32(b, off + 8, flags);
	put64(b, off + 16, pgsizes);
	put64(b, off + 24, maxsz);
	return off;
}

static uint32_t cap_dma_avail(struct bld *b, uint32_t avail)
{
	uint32_t off = bld_cap(b, VFIOMIG_CAP_IOMMU_DMA_AVAIL, 1, 4);

	put32(b, off + 8, avail);
	return off;
}

/* IOVA_RANGE and SPARSE_MMAP share one shape: {hdr; u32 nr; u32 rsvd; {u64, u64}[nr]}. */
static uint32_t cap_pairs(struct bld *b, uint16_t id, uint32_t n, const uint64_t (*p)[2])
{
	uint32_t off = bld_cap(b, id, 1, 8 + 16 * n);

	put32(b, off + 8, n);
	for (uint32_t i = 0; i < n; i++) {
		put64(b, off + 16 + 16 * i, p[i][0]);
		put64(b, off + 24 + 16 * i, p[i][1]);
	}
	return off;
}

static uint32_t cap_type(struct bld *b, uint32_t type, uint32_t subtype)
{
	uint32_t off = bld_cap(b, VFIOMIG_CAP_REGION_TYPE, 1, 8);

	put32(b, off + 8, type);
	put32(b, off + 12, subtype);
	return off;
}

/* x86 host: everything below the MSI window, then everything above it up to 48 bits. */
static const uint64_t x86_iovas[2][2] = {
	{ 0, 0xfedfffffull },
	{ 0xfef00000ull, 0xffffffffffffull },
};

/* A BAR whose middle page holds the MSI-X table, so it cannot be mmapped. */
static const uint64_t bar_areas[2][2] = {
	{ 0, 0x2000 },
	{ 0x3000, 0x1000 },
};

/* VFIO_IOMMU_GET_INFO on a type1v2 container, in type1's order. */
static void build_type1(struct bld *b)
{
	bld_init(b, VFIOMIG_INFO_IOMMU_TYPE1, IOMMU_INFO_PGSIZES);
	put64(b, 8, 0x40201000ull); /* 4K | 2M | 1G */
	cap_migration(b, 0, 0x1000, 256 * MIB);
	cap_dma_avail(b, 65535);
	cap_pairs(b, VFIOMIG_CAP_IOMMU_IOVA_RANGE, 2, x86_iovas);
}

/* BAR0 with a sparse-mmap capability around the MSI-X table. */
static void build_region_bar(struct bld *b)
{
	bld_init(b, VFIOMIG_INFO_REGION, REGION_RW_MMAP);
	put32(b, 8, 0);
	put64(b, 16, 0x4000);
	put64(b, 24, PCI_INDEX_OFFSET(0));
	cap_pairs(b, VFIOMIG_CAP_REGION_SPARSE_MMAP, 2, bar_areas);
}

/* A v1 migration region (type 3 / subtype 1): mmappable data section, then TYPE. */
static void build_region_mig_v1(struct bld *b)
{
	static const uint64_t data[1][2] = { { 0x1000, 0xff000 } };

	bld_init(b, VFIOMIG_INFO_REGION, REGION_RW_MMAP);
	put32(b, 8, 9);
	put64(b, 16, 0x100000);
	put64(b, 24, PCI_INDEX_OFFSET(9));
	cap_pairs(b, VFIOMIG_CAP_REGION_SPARSE_MMAP, 1, data);
	cap_type(b, 3, 1);
}

/* BAR2 whose MSI-X table may be mmapped anyway. */
static void build_region_msix(struct bld *b)
{
	bld_init(b, VFIOMIG_INFO_REGION, REGION_RW_MMAP);
	put32(b, 8, 2);
	put64(b, 16, 0x10000);
	put64(b, 24, PCI_INDEX_OFFSET(2));
	bld_cap(b, VFIOMIG_CAP_REGION_MSIX_MAPPABLE, 1, 0);
}

/* Device info with two capabilities the library does not interpret. */
static void build_device(struct bld *b)
{
	bld_init(b, VFIOMIG_INFO_DEVICE, DEVICE_RESET_PCI);
	put32(b, 8, 9);
	put32(b, 12, 5);
	bld_cap(b, 1, 1, 24);
	bld_cap(b, 6, 1, 8);
}

/* ------------------------------------------------------------ helpers */

struct logrec {
	int n;     /* lines delivered */
	int n_err; /* of which at VFIOMIG_LOG_ERR */
	char last[1024];
};

static void log_cb(void *user, int priority, const char *msg)
{
	struct logrec *l = user;

	l->n++;
	if (priority == VFIOMIG_LOG_ERR)
		l->n_err++;
	snprintf(l->last, sizeof(l->last), "%s", msg);
}

static struct vfiomig_ctx *ctx_new(struct logrec *l)
{
	VFIOMIG_OPTS(ctx_opts, o, .log_fn = log_cb, .log_user = l,
		     .log_priority = VFIOMIG_LOG_DEBUG);
	struct vfiomig_ctx *ctx = NULL;

	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), 0);
	cr_assert_not_null(ctx);
	memset(l, 0, sizeof(*l));
	return ctx;
}

/*
 * An exact-size heap copy at an odd address: ASan then catches any read
 * past `len`, and UBSan any read that assumes alignment.
 */
struct ebuf {
	uint8_t *mem;
	uint8_t *p;
	size_t len;
};

static struct ebuf ebuf_new(const void *src, size_t len)
{
	struct ebuf e;

	e.mem = malloc(len + 1);
	cr_assert_not_null(e.mem);
	e.p = e.mem + 1;
	e.len = len;
	if (len)
		memcpy(e.p, src, len);
	return e;
}

static struct ebuf ebuf_of(const struct bld *b)
{
	return ebuf_new(b->b, b->len);
}

static void ebuf_free(struct ebuf *e)
{
	free(e->mem);
	e->mem = e->p = NULL;
}

/* Exactly one error line since the last reset, naming `what`; then reset. */
static void expect_one_err(struct logrec *l, const char *what)
{
	cr_assert_eq(l->n, 1, "expected one log line, got %d (last: '%s')", l->n, l->last);
	cr_assert_eq(l->n_err, 1, "expected the line at VFIOMIG_LOG_ERR");
	cr_assert_not_null(strstr(l->last, what), "log line '%s' does not mention '%s'", l->last,
			   what);
	memset(l, 0, sizeof(*l));
}

static void expect_no_log(struct logrec *l)
{
	cr_assert_eq(l->n, 0, "expected no log line, got %d (last: '%s')", l->n, l->last);
}

/*
 * A malformed chain: validate and a find for an absent id (which walks
 * the whole chain) must both fail with `err` and one log line each that
 * names `what`.
 */
static void expect_bad_chain(const struct bld *b, size_t len, int err, const char *what)
{
	struct vfiomig_cap cap;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct ebuf e = ebuf_new(b->b, len);

	cr_assert_eq(vfiomig_caps_validate(ctx, b->kind, e.p, e.len), err);
	expect_one_err(&l, what);
	cr_assert_eq(vfiomig_caps_find(ctx, b->kind, e.p, e.len, 0x7777, &cap), err);
	expect_one_err(&l, what);
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
}

/*
 * A sound chain with a bad payload: validate fails with one log line
 * naming `what`; walking past the capability (find of an absent id) does
 * not look inside it, so it neither fails nor logs.
 */
static void expect_bad_payload(const struct bld *b, const char *what)
{
	struct vfiomig_cap cap;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct ebuf e = ebuf_of(b);

	cr_assert_eq(vfiomig_caps_validate(ctx, b->kind, e.p, e.len), -EINVAL);
	expect_one_err(&l, what);
	cr_assert_eq(vfiomig_caps_find(ctx, b->kind, e.p, e.len, 0x7777, &cap), -ENOENT);
	expect_no_log(&l);
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
}

/* ------------------------------------------------------ well-formed chains */

TestSuite(caps, .init = leak_baseline);

Test(caps, type1_migration_cap_gives_dirty_page_limits)
{
	struct vfiomig_iommu_migration mig;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_iommu_migration(ctx, e.p, e.len, &mig), 0);
	cr_assert_eq(mig.flags, 0);
	cr_assert_eq(mig.pgsize_bitmap, 0x1000);
	cr_assert_eq(mig.max_dirty_bitmap_size, 256 * MIB);
	expect_no_log(&l);
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, type1_dma_avail_cap_gives_remaining_mappings)
{
	uint32_t avail = 0;
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_dma_avail(NULL, e.p, e.len, &avail), 0);
	cr_assert_eq(avail, 65535);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, type1_iova_ranges_are_copied_with_inclusive_ends)
{
	struct vfiomig_iova_range r[4];
	uint32_t nr = 99;
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	e = ebuf_of(&b);
	memset(r, 0xa5, sizeof(r));
	cr_assert_eq(vfiomig_cap_iova_ranges(NULL, e.p, e.len, r, 4, &nr), 0);
	cr_assert_eq(nr, 2);
	cr_assert_eq(r[0].start, 0);
	cr_assert_eq(r[0].end, 0xfedfffffull);
	cr_assert_eq(r[1].start, 0xfef00000ull);
	cr_assert_eq(r[1].end, 0xffffffffffffull);
	/* Entries past the count are left alone. */
	cr_assert_eq(r[2].start, 0xa5a5a5a5a5a5a5a5ull);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, iova_ranges_count_first_then_partial_copy)
{
	struct vfiomig_iova_range r[2];
	uint32_t nr = 99;
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_iova_ranges(NULL, e.p, e.len, NULL, 0, &nr), 0);
	cr_assert_eq(nr, 2);

	memset(r, 0xa5, sizeof(r));
	nr = 0;
	cr_assert_eq(vfiomig_cap_iova_ranges(NULL, e.p, e.len, r, 1, &nr), 0);
	cr_assert_eq(nr, 2, "the total count, not the number copied");
	cr_assert_eq(r[0].end, 0xfedfffffull);
	cr_assert_eq(r[1].start, 0xa5a5a5a5a5a5a5a5ull, "max 1 wrote a second range");
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, type1_chain_walks_in_kernel_order_with_unaligned_offsets)
{
	static const uint16_t want_id[] = { 2, 3, 1 };
	static const uint32_t want_off[] = { 24, 56, 68 };
	static const uint32_t want_len[] = { 32, 12, 48 };
	struct vfiomig_cap cap;
	struct bld b;
	struct ebuf e;
	int i = 0, err;

	build_type1(&b);
	cr_assert_eq(b.len, 116);
	e = ebuf_of(&b);
	for (err = vfiomig_caps_first(NULL, b.kind, e.p, e.len, &cap); err == 0;
	     err = vfiomig_caps_next(NULL, b.kind, e.p, e.len, &cap), i++) {
		cr_assert_lt(i, 3);
		cr_assert_eq(cap.id, want_id[i]);
		cr_assert_eq(cap.version, 1);
		cr_assert_eq(cap.offset, want_off[i]);
		cr_assert_eq(cap.len, want_len[i]);
	}
	cr_assert_eq(err, -ENOENT);
	cr_assert_eq(i, 3);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 3);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, region_sparse_mmap_gives_areas_around_msix_table)
{
	struct vfiomig_sparse_area a[3];
	uint32_t nr = 0, type = 7, subtype = 7;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;
	struct ebuf e;

	build_region_bar(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_sparse_mmap(ctx, e.p, e.len, a, 3, &nr), 0);
	cr_assert_eq(nr, 2);
	cr_assert_eq(a[0].offset, 0);
	cr_assert_eq(a[0].size, 0x2000);
	cr_assert_eq(a[1].offset, 0x3000);
	cr_assert_eq(a[1].size, 0x1000);
	/* Absent capabilities are not errors and are not logged. */
	cr_assert_eq(vfiomig_cap_region_type(ctx, e.p, e.len, &type, &subtype), -ENOENT);
	cr_assert_eq(vfiomig_cap_msix_mappable(ctx, e.p, e.len), 0);
	expect_no_log(&l);
	cr_assert_eq(vfiomig_caps_validate(ctx, b.kind, e.p, e.len), 1);
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, region_type_identifies_v1_migration_region)
{
	struct vfiomig_sparse_area a[1];
	uint32_t type = 0, subtype = 0, nr = 0;
	struct bld b;
	struct ebuf e;

	build_region_mig_v1(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_region_type(NULL, e.p, e.len, &type, &subtype), 0);
	cr_assert_eq(type, 3);
	cr_assert_eq(subtype, 1);
	cr_assert_eq(vfiomig_cap_sparse_mmap(NULL, e.p, e.len, a, 1, &nr), 0);
	cr_assert_eq(nr, 1);
	cr_assert_eq(a[0].offset, 0x1000);
	cr_assert_eq(a[0].size, 0xff000);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 2);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, msix_mappable_reports_one_when_present)
{
	struct bld b;
	struct ebuf e;

	build_region_msix(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_msix_mappable(NULL, e.p, e.len), 1);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 1);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, device_info_chain_of_unknown_ids_is_counted)
{
	struct vfiomig_cap cap;
	struct bld b;
	struct ebuf e;

	build_device(&b);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 2);
	cr_assert_eq(vfiomig_caps_find(NULL, b.kind, e.p, e.len, 6, &cap), 0);
	cr_assert_eq(cap.offset, 24 + 32);
	cr_assert_eq(cap.len, 16);
	cr_assert_eq(cap.next, 0);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, find_by_id_works_in_unusual_order)
{
	struct vfiomig_iommu_migration mig;
	struct vfiomig_iova_range r[2];
	uint32_t nr = 0, avail = 0, type = 0, subtype = 0;
	struct vfiomig_sparse_area a[2];
	struct vfiomig_cap cap;
	struct bld b;
	struct ebuf e;

	/* Reverse of type1's order, with an id nobody knows in the middle. */
	bld_init(&b, VFIOMIG_INFO_IOMMU_TYPE1, IOMMU_INFO_PGSIZES);
	cap_pairs(&b, VFIOMIG_CAP_IOMMU_IOVA_RANGE, 2, x86_iovas);
	bld_cap(&b, 0x4242, 3, 20);
	cap_dma_avail(&b, 100);
	cap_migration(&b, 0, 0x1000, 256 * MIB);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_caps_find(NULL, b.kind, e.p, e.len, VFIOMIG_CAP_IOMMU_MIGRATION,
				       &cap), 0);
	cr_assert_eq(cap.offset, 24 + 48 + 28 + 12);
	cr_assert_eq(vfiomig_cap_iommu_migration(NULL, e.p, e.len, &mig), 0);
	cr_assert_eq(mig.pgsize_bitmap, 0x1000);
	cr_assert_eq(vfiomig_cap_dma_avail(NULL, e.p, e.len, &avail), 0);
	cr_assert_eq(avail, 100);
	cr_assert_eq(vfiomig_cap_iova_ranges(NULL, e.p, e.len, r, 2, &nr), 0);
	cr_assert_eq(nr, 2);
	cr_assert_eq(r[1].end, 0xffffffffffffull);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 4);
	ebuf_free(&e);

	/* Region: TYPE before SPARSE_MMAP. */
	bld_init(&b, VFIOMIG_INFO_REGION, REGION_RW_MMAP);
	cap_type(&b, 3, 1);
	cap_pairs(&b, VFIOMIG_CAP_REGION_SPARSE_MMAP, 2, bar_areas);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_sparse_mmap(NULL, e.p, e.len, a, 2, &nr), 0);
	cr_assert_eq(nr, 2);
	cr_assert_eq(a[1].offset, 0x3000);
	cr_assert_eq(vfiomig_cap_region_type(NULL, e.p, e.len, &type, &subtype), 0);
	cr_assert_eq(type, 3);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, newer_versions_of_known_caps_are_accepted)
{
	struct vfiomig_iommu_migration mig;
	struct bld b;
	struct ebuf e;
	uint32_t off;

	/* A version 2 with a longer payload still has the version 1 fields first. */
	bld_init(&b, VFIOMIG_INFO_IOMMU_TYPE1, 0);
	off = bld_cap(&b, VFIOMIG_CAP_IOMMU_MIGRATION, 2, 24 + 16);
	put64(&b, off + 16, 0x1000);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_iommu_migration(NULL, e.p, e.len, &mig), 0);
	cr_assert_eq(mig.pgsize_bitmap, 0x1000);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 1);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, no_caps_flag_means_no_chain_and_no_log)
{
	struct vfiomig_iommu_migration mig;
	struct vfiomig_iova_range r[1];
	struct vfiomig_cap cap;
	uint32_t nr = 5, avail = 5;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	put32(&b, 4, IOMMU_INFO_PGSIZES); /* CAPS cleared, cap_offset still 24 */
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_caps_first(ctx, b.kind, e.p, e.len, &cap), -ENOENT);
	cr_assert_eq(vfiomig_caps_find(ctx, b.kind, e.p, e.len, 2, &cap), -ENOENT);
	cr_assert_eq(vfiomig_caps_validate(ctx, b.kind, e.p, e.len), 0);
	cr_assert_eq(vfiomig_cap_iommu_migration(ctx, e.p, e.len, &mig), -ENOENT);
	cr_assert_eq(vfiomig_cap_dma_avail(ctx, e.p, e.len, &avail), -ENOENT);
	cr_assert_eq(avail, 0);
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, e.p, e.len, r, 1, &nr), -ENOENT);
	cr_assert_eq(nr, 0);
	expect_no_log(&l);
	ebuf_free(&e);

	/* A bare region header, as most BARs have. */
	bld_init(&b, VFIOMIG_INFO_REGION, REGION_RW_MMAP);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_msix_mappable(ctx, e.p, e.len), 0);
	cr_assert_eq(vfiomig_cap_sparse_mmap(ctx, e.p, e.len, NULL, 0, &nr), -ENOENT);
	cr_assert_eq(vfiomig_caps_validate(ctx, b.kind, e.p, e.len), 0);
	expect_no_log(&l);
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, caps_flag_with_zero_offset_means_no_chain)
{
	struct vfiomig_cap cap;
	struct bld b;
	struct ebuf e;

	bld_init(&b, VFIOMIG_INFO_DEVICE, DEVICE_RESET_PCI | kinds[VFIOMIG_INFO_DEVICE].caps_flag);
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_caps_first(NULL, b.kind, e.p, e.len, &cap), -ENOENT);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 0);
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, data_ends_at_argsz_when_buffer_is_larger)
{
	uint8_t big[200];
	struct vfiomig_cap cap;
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	memset(big, 0xff, sizeof(big));
	memcpy(big, b.b, b.len);
	e = ebuf_new(big, sizeof(big));
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, e.p, e.len), 3);
	cr_assert_eq(vfiomig_caps_find(NULL, b.kind, e.p, e.len, VFIOMIG_CAP_IOMMU_IOVA_RANGE,
				       &cap), 0);
	cr_assert_eq(cap.len, 116 - 68, "the last capability ends at argsz, not at len");
	ebuf_free(&e);
	assert_no_leaks();
}

Test(caps, next_and_first_reject_null_cap)
{
	struct bld b;

	build_type1(&b);
	cr_assert_eq(vfiomig_caps_first(NULL, b.kind, b.b, b.len, NULL), -EINVAL);
	cr_assert_eq(vfiomig_caps_next(NULL, b.kind, b.b, b.len, NULL), -EINVAL);
	cr_assert_eq(vfiomig_caps_find(NULL, b.kind, b.b, b.len, 1, NULL), -EINVAL);
	assert_no_leaks();
}

Test(caps, next_refuses_a_cap_edited_to_go_backwards)
{
	struct vfiomig_cap cap;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;

	build_type1(&b);
	cr_assert_eq(vfiomig_caps_first(ctx, b.kind, b.b, b.len, &cap), 0);
	cap.next = cap.offset;
	cr_assert_eq(vfiomig_caps_next(ctx, b.kind, b.b, b.len, &cap), -EINVAL);
	expect_one_err(&l, "does not move forward");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, accessors_reject_missing_outputs)
{
	struct vfiomig_iova_range r[1];
	uint32_t nr, t;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;

	build_type1(&b);
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, b.b, b.len, NULL, 1, &nr), -EINVAL);
	expect_one_err(&l, "IOVA ranges");
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, b.b, b.len, r, 1, NULL), -EINVAL);
	expect_one_err(&l, "IOVA ranges");
	cr_assert_eq(vfiomig_cap_iommu_migration(ctx, b.b, b.len, NULL), -EINVAL);
	expect_one_err(&l, "IOMMU type1 info");
	cr_assert_eq(vfiomig_cap_dma_avail(ctx, b.b, b.len, NULL), -EINVAL);
	expect_one_err(&l, "IOMMU type1 info");
	build_region_mig_v1(&b);
	cr_assert_eq(vfiomig_cap_region_type(ctx, b.b, b.len, &t, NULL), -EINVAL);
	expect_one_err(&l, "region info");
	cr_assert_eq(vfiomig_cap_sparse_mmap(ctx, b.b, b.len, NULL, 2, &nr), -EINVAL);
	expect_one_err(&l, "sparse mmap");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

/* ---------------------------------------------------- header-level errors */

Test(caps, rejects_unknown_kind)
{
	struct bld b;

	build_type1(&b);
	b.kind = 0;
	expect_bad_chain(&b, b.len, -EINVAL, "unknown info kind 0");
	b.kind = 4;
	expect_bad_chain(&b, b.len, -EINVAL, "unknown info kind 4");
	assert_no_leaks();
}

Test(caps, rejects_empty_and_one_byte_buffers)
{
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	uint8_t one = 0x18;
	uint32_t nr;

	for (uint32_t k = 1; k <= 3; k++) {
		cr_assert_eq(vfiomig_caps_validate(ctx, k, NULL, 0), -EINVAL);
		expect_one_err(&l, "no buffer");
		cr_assert_eq(vfiomig_caps_validate(ctx, k, &one, 0), -EINVAL);
		expect_one_err(&l, "buffer of 0 bytes is shorter than the");
		cr_assert_eq(vfiomig_caps_validate(ctx, k, &one, 1), -EINVAL);
		expect_one_err(&l, "buffer of 1 bytes is shorter than the");
	}
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, &one, 1, NULL, 0, &nr), -EINVAL);
	expect_one_err(&l, "IOMMU type1 info: buffer of 1 bytes");
	cr_assert_eq(vfiomig_cap_msix_mappable(ctx, &one, 1), -EINVAL);
	expect_one_err(&l, "region info: buffer of 1 bytes");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, rejects_buffer_shorter_than_header)
{
	struct bld b;

	build_region_bar(&b);
	expect_bad_chain(&b, 31, -EINVAL, "region info: buffer of 31 bytes is shorter than the "
			 "32-byte header");
	assert_no_leaks();
}

Test(caps, rejects_argsz_below_header_size)
{
	struct bld b;

	build_region_bar(&b);
	put32(&b, 0, 16);
	expect_bad_chain(&b, b.len, -EINVAL, "region info: argsz 16 is smaller than the 32-byte");
	assert_no_leaks();
}

Test(caps, truncated_info_asks_for_a_bigger_buffer)
{
	struct vfiomig_iova_range r[2];
	uint32_t nr;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct vfiomig_cap cap;
	struct bld b;
	struct ebuf e;

	/* What type1 answers a 24-byte GET_INFO: the size it needs, CAPS, cap_offset 0. */
	bld_init(&b, VFIOMIG_INFO_IOMMU_TYPE1, IOMMU_INFO_PGSIZES | 2u);
	put32(&b, 0, 116);
	expect_bad_chain(&b, b.len, -ENOSPC, "argsz 116 is larger than the 24-byte buffer");

	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, e.p, e.len, r, 2, &nr), -ENOSPC);
	expect_one_err(&l, "grow");
	cr_assert_eq(vfiomig_caps_first(ctx, b.kind, e.p, e.len, &cap), -ENOSPC);
	expect_one_err(&l, "IOMMU type1 info");
	ebuf_free(&e);

	/* A full chain cut short by the caller's buffer. */
	build_type1(&b);
	expect_bad_chain(&b, b.len - 10, -ENOSPC, "argsz 116 is larger than the 106-byte buffer");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

/* ----------------------------------------------------- chain-level errors */

Test(caps, rejects_offset_past_the_buffer)
{
	struct bld b;

	build_type1(&b);
	put32(&b, 16, 4096);
	expect_bad_chain(&b, b.len, -EINVAL,
			 "IOMMU type1 info: capability at offset 4096 is past the end of the data "
			 "at 116");
	assert_no_leaks();
}

Test(caps, rejects_offset_inside_fixed_header)
{
	struct bld b;

	build_region_bar(&b);
	put32(&b, 12, 8);
	expect_bad_chain(&b, b.len, -EINVAL,
			 "region info: capability at offset 8 is inside the 32-byte header");
	assert_no_leaks();
}

Test(caps, rejects_cap_header_crossing_the_end)
{
	struct bld b;

	build_region_bar(&b);
	/* The last cap would start 4 bytes before the end. */
	put32(&b, 12, b.len - 4);
	expect_bad_chain(&b, b.len, -EINVAL,
			 "capability at offset 76: its 8-byte header crosses the end of the data "
			 "at 80");
	assert_no_leaks();
}

Test(caps, rejects_next_with_no_room_before_the_end)
{
	struct bld b;

	build_type1(&b);
	put32(&b, 56 + 4, 112); /* DMA_AVAIL -> 4 bytes before argsz */
	expect_bad_chain(&b, b.len, -EINVAL, "capability 3 at offset 56: next 112 leaves no room");
	assert_no_leaks();
}

Test(caps, rejects_next_pointing_into_slack_past_argsz)
{
	struct bld b;

	/* The builder zeroes its whole array, so 200 bytes are there to read. */
	build_type1(&b);
	put32(&b, 68 + 4, 150); /* beyond argsz 116, still inside the 200-byte buffer */
	expect_bad_chain(&b, 200, -EINVAL, "next 150 leaves no room");
	assert_no_leaks();
}

Test(caps, rejects_self_loop)
{
	struct bld b;

	build_region_bar(&b);
	put32(&b, 32 + 4, 32);
	expect_bad_chain(&b, b.len, -EINVAL,
			 "region info: capability 1 at offset 32: next 32 does not move forward");
	assert_no_leaks();
}

Test(caps, rejects_backward_next_loop)
{
	struct bld b;

	build_type1(&b);
	put32(&b, 68 + 4, 24); /* IOVA_RANGE -> MIGRATION again */
	expect_bad_chain(&b, b.len, -EINVAL,
			 "IOMMU type1 info: capability 1 at offset 68: next 24 does not move "
			 "forward");
	assert_no_leaks();
}

Test(caps, rejects_next_overlapping_own_header)
{
	struct bld b;

	build_type1(&b);
	put32(&b, 24 + 4, 28);
	expect_bad_chain(&b, b.len, -EINVAL, "capability 2 at offset 24: next 28 overlaps");
	assert_no_leaks();
}

Test(caps, rejects_more_than_caps_max)
{
	struct bld b;

	bld_init(&b, VFIOMIG_INFO_DEVICE, 0);
	for (int i = 0; i < VFIOMIG_CAPS_MAX; i++)
		bld_cap(&b, 0x100, 1, 0);
	cr_assert_eq(vfiomig_caps_validate(NULL, b.kind, b.b, b.len), VFIOMIG_CAPS_MAX);
	bld_cap(&b, 0x100, 1, 0);
	expect_bad_chain(&b, b.len, -EINVAL, "more than 256 capabilities");
	assert_no_leaks();
}

/* ---------------------------------------------------- payload-level errors */

Test(caps, rejects_payload_crossing_the_end)
{
	struct vfiomig_iommu_migration mig;
	struct vfiomig_iova_range r[2];
	uint32_t nr;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;
	struct ebuf e;

	/* MIGRATION is the last cap and the data ends 12 bytes into it. */
	bld_init(&b, VFIOMIG_INFO_IOMMU_TYPE1, 0);
	cap_pairs(&b, VFIOMIG_CAP_IOMMU_IOVA_RANGE, 2, x86_iovas);
	cap_migration(&b, 0, 0x1000, 256 * MIB);
	b.len -= 20;
	put32(&b, 0, b.len);
	expect_bad_payload(&b,
			   "MIGRATION capability (id 2) at offset 72: 12 bytes, needs at least 32");
	e = ebuf_of(&b);
	/* The accessor for the intact cap before it still works... */
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, e.p, e.len, r, 2, &nr), 0);
	expect_no_log(&l);
	/* ...the one for the cut cap does not. */
	cr_assert_eq(vfiomig_cap_iommu_migration(ctx, e.p, e.len, &mig), -EINVAL);
	expect_one_err(&l, "needs at least 32");
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

/* Each known id squeezed by the next cap to one byte less than it needs. */
Test(caps, rejects_payload_shorter_than_id_needs)
{
	static const struct {
		uint32_t kind;
		uint16_t id;
		uint32_t need;
		const char *name;
	} t[] = {
		{ VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_IOVA_RANGE, 16, "IOVA_RANGE" },
		{ VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_MIGRATION, 32, "MIGRATION" },
		{ VFIOMIG_INFO_IOMMU_TYPE1, VFIOMIG_CAP_IOMMU_DMA_AVAIL, 12, "DMA_AVAIL" },
		{ VFIOMIG_INFO_REGION, VFIOMIG_CAP_REGION_SPARSE_MMAP, 16, "SPARSE_MMAP" },
		{ VFIOMIG_INFO_REGION, VFIOMIG_CAP_REGION_TYPE, 16, "TYPE" },
	};
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		char what[128];
		uint32_t u32a, u32b;
		struct vfiomig_iommu_migration mig;
		struct bld b;
		struct ebuf e;
		int err = 0;

		bld_init(&b, t[i].kind, 0);
		bld_cap(&b, t[i].id, 1, t[i].need - 1 - 8);
		bld_cap(&b, 0x99, 1, 16);
		snprintf(what, sizeof(what), "%s capability (id %u) at offset %u: %u bytes, needs "
			 "at least %u", t[i].name, t[i].id, kinds[t[i].kind].hdr, t[i].need - 1,
			 t[i].need);
		expect_bad_payload(&b, what);

		e = ebuf_of(&b);
		switch (i) {
		case 0:
			err = vfiomig_cap_iova_ranges(ctx, e.p, e.len, NULL, 0, &u32a);
			break;
		case 1:
			err = vfiomig_cap_iommu_migration(ctx, e.p, e.len, &mig);
			break;
		case 2:
			err = vfiomig_cap_dma_avail(ctx, e.p, e.len, &u32a);
			break;
		case 3:
			err = vfiomig_cap_sparse_mmap(ctx, e.p, e.len, NULL, 0, &u32a);
			break;
		case 4:
			err = vfiomig_cap_region_type(ctx, e.p, e.len, &u32a, &u32b);
			break;
		}
		cr_assert_eq(err, -EINVAL, "accessor for %s", t[i].name);
		expect_one_err(&l, what);
		ebuf_free(&e);
	}
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, rejects_absurd_nr_iovas)
{
	struct vfiomig_iova_range r[2];
	uint32_t nr = 7;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;
	struct ebuf e;

	build_type1(&b);
	put32(&b, 68 + 8, 0xffffffffu);
	expect_bad_payload(&b,
			   "IOVA_RANGE capability (id 1) at offset 68: absurd nr_iovas 4294967295 "
			   "(its 48 bytes hold at most 2)");
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, e.p, e.len, r, 2, &nr), -EINVAL);
	cr_assert_eq(nr, 0);
	expect_one_err(&l, "absurd nr_iovas");
	ebuf_free(&e);

	/* One more than fits is as bad as four billion. */
	put32(&b, 68 + 8, 3);
	expect_bad_payload(&b, "absurd nr_iovas 3");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, rejects_absurd_nr_areas)
{
	struct vfiomig_sparse_area a[2];
	uint32_t nr = 7;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;
	struct ebuf e;

	build_region_bar(&b);
	put32(&b, 32 + 8, 0xffffffffu);
	expect_bad_payload(&b, "SPARSE_MMAP capability (id 1) at offset 32: "
			   "absurd nr_areas 4294967295");
	e = ebuf_of(&b);
	cr_assert_eq(vfiomig_cap_sparse_mmap(ctx, e.p, e.len, a, 2, &nr), -EINVAL);
	cr_assert_eq(nr, 0);
	expect_one_err(&l, "absurd nr_areas");
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, rejects_iova_range_ending_before_it_starts)
{
	struct bld b;

	build_type1(&b);
	put64(&b, 68 + 16 + 16, 0xfef00000ull);
	put64(&b, 68 + 16 + 24, 0xfeefffffull);
	expect_bad_payload(&b, "range 1 starts at 0xfef00000, after its inclusive "
			   "end 0xfeefffff");
	assert_no_leaks();
}

/* Ends are inclusive: a range of one address (start == end) is a valid range. */
Test(caps, accepts_iova_range_of_a_single_address)
{
	static const uint64_t one[2][2] = {
		{ 0x1000, 0x1000 },
		{ 0xffffffffffffffffull, 0xffffffffffffffffull },
	};
	struct vfiomig_iova_range r[2];
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	uint32_t nr = 0;
	struct bld b;
	struct ebuf e;

	bld_init(&b, VFIOMIG_INFO_IOMMU_TYPE1, IOMMU_INFO_PGSIZES);
	put64(&b, 8, 0x1000);
	cap_pairs(&b, VFIOMIG_CAP_IOMMU_IOVA_RANGE, 2, one);
	e = ebuf_of(&b);
	cr_assert_geq(vfiomig_caps_validate(ctx, b.kind, e.p, e.len), 0);
	cr_assert_eq(vfiomig_cap_iova_ranges(ctx, e.p, e.len, r, 2, &nr), 0);
	expect_no_log(&l);
	cr_assert_eq(nr, 2);
	cr_assert_eq(r[0].start, 0x1000);
	cr_assert_eq(r[0].end, 0x1000);
	cr_assert_eq(r[1].start, UINT64_MAX);
	cr_assert_eq(r[1].end, UINT64_MAX);
	ebuf_free(&e);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, rejects_sparse_area_overflowing)
{
	uint32_t nr;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;

	build_region_bar(&b);
	put64(&b, 32 + 16 + 16, 0xffffffffffff0000ull);
	put64(&b, 32 + 16 + 24, 0x20000);
	expect_bad_payload(&b, "area 1 (offset 0xffffffffffff0000, size 0x20000) "
			   "overflows");
	cr_assert_eq(vfiomig_cap_sparse_mmap(ctx, b.b, b.len, NULL, 0, &nr), -EINVAL);
	expect_one_err(&l, "overflows");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(caps, rejects_version_zero_of_known_caps_only)
{
	uint32_t t, s;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);
	struct bld b;

	build_region_mig_v1(&b);
	put16(&b, 64 + 2, 0); /* TYPE */
	expect_bad_payload(&b, "TYPE capability (id 2) at offset 64: version 0");
	cr_assert_eq(vfiomig_cap_region_type(ctx, b.b, b.len, &t, &s), -EINVAL);
	expect_one_err(&l, "version 0");

	/* An id the library does not interpret is only walked past. */
	build_device(&b);
	put16(&b, 24 + 2, 0);
	cr_assert_eq(vfiomig_caps_validate(ctx, b.kind, b.b, b.len), 2);
	expect_no_log(&l);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

/* ------------------------------------------------- seeds for the fuzzer */

struct seed {
	const char *name;
	void (*build)(struct bld *b);
	int validate; /* expected result */
};

static void seed_loop(struct bld *b)
{
	build_type1(b);
	put32(b, 68 + 4, 24);
}

static void seed_self_loop(struct bld *b)
{
	build_region_bar(b);
	put32(b, 32 + 4, 32);
}

static void seed_absurd_nr(struct bld *b)
{
	build_type1(b);
	put32(b, 68 + 8, 0xffffffffu);
}

static void seed_truncated(struct bld *b)
{
	bld_init(b, VFIOMIG_INFO_IOMMU_TYPE1, IOMMU_INFO_PGSIZES | 2u);
	put32(b, 0, 116);
}

static void seed_short_payload(struct bld *b)
{
	bld_init(b, VFIOMIG_INFO_IOMMU_TYPE1, 0);
	bld_cap(b, VFIOMIG_CAP_IOMMU_MIGRATION, 1, 16);
	bld_cap(b, VFIOMIG_CAP_IOMMU_DMA_AVAIL, 1, 4);
}

static const struct seed seeds[] = {
	{ "iommu-ok.bin", build_type1, 3 },
	{ "region-sparse.bin", build_region_bar, 1 },
	{ "region-mig-v1.bin", build_region_mig_v1, 2 },
	{ "region-msix.bin", build_region_msix, 1 },
	{ "device-ok.bin", build_device, 2 },
	{ "loop.bin", seed_loop, -EINVAL },
	{ "self-loop.bin", seed_self_loop, -EINVAL },
	{ "absurd-nr.bin", seed_absurd_nr, -EINVAL },
	{ "truncated.bin", seed_truncated, -ENOSPC },
	{ "short-payload.bin", seed_short_payload, -EINVAL },
};

/* A seed file is the kind byte followed by the info buffer (see tests/fuzz_caps.c). */
static size_t seed_bytes(const struct seed *s, uint8_t *out, size_t cap)
{
	struct bld b;

	s->build(&b);
	cr_assert_leq((size_t)b.len + 1, cap);
	out[0] = (uint8_t)b.kind;
	memcpy(out + 1, b.b, b.len);
	return (size_t)b.len + 1;
}

Test(caps, seed_files_match_their_builders)
{
	const char *dir = getenv("VFIOMIG_WRITE_CAPS_SEEDS");

	for (size_t i = 0; i < sizeof(seeds) / sizeof(seeds[0]); i++) {
		uint8_t want[1024], got[1025];
		char path[512];
		size_t n = seed_bytes(&seeds[i], want, sizeof(want)), m;
		FILE *f;

		cr_assert_eq(vfiomig_caps_validate(NULL, want[0], want + 1, n - 1),
			     seeds[i].validate, "seed %s", seeds[i].name);
		if (dir && *dir) {
			snprintf(path, sizeof(path), "%s/%s", dir, seeds[i].name);
			f = fopen(path, "wb");
			cr_assert_not_null(f, "cannot write %s", path);
			cr_assert_eq(fwrite(want, 1, n, f), n);
			cr_assert_eq(fclose(f), 0);
		}
		snprintf(path, sizeof(path), "%s/caps/%s", TEST_DATA_DIR, seeds[i].name);
		f = fopen(path, "rb");
		cr_assert_not_null(f, "missing seed %s (regenerate with VFIOMIG_WRITE_CAPS_SEEDS)",
				   path);
		m = fread(got, 1, sizeof(got), f);
		fclose(f);
		cr_assert_eq(m, n, "seed %s has %zu bytes, its builder %zu", seeds[i].name, m, n);
		cr_assert_eq(memcmp(got, want, n), 0, "seed %s differs from its builder",
			     seeds[i].name);
	}
	assert_no_leaks();
}

/* -------------------------------------------------- random robustness */

static uint64_t rng(uint64_t *s)
{
	/* xorshift64*: deterministic for a given seed, good enough to mutate bytes. */
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dull;
}

static bool ok_ret(int r)
{
	return r >= 0 || r == -ENOENT || r == -EINVAL || r == -ENOSPC;
}

/* Errors log exactly one ERR line; success and -ENOENT log nothing; a NULL ctx never logs. */
static void check_log(struct vfiomig_ctx *ctx, struct logrec *l, int r, const char *call,
		      int iter)
{
	int want = (ctx && r < 0 && r != -ENOENT) ? 1 : 0;

	cr_assert(ok_ret(r), "iteration %d: %s returned %d", iter, call, r);
	cr_assert_eq(l->n, want, "iteration %d: %s returned %d with %d log lines (last '%s')",
		     iter, call, r, l->n, l->last);
	cr_assert_eq(l->n_err, want);
	memset(l, 0, sizeof(*l));
}

static void exercise(struct vfiomig_ctx *ctx, struct logrec *l, const uint8_t *p, size_t len,
		     int iter)
{
	struct vfiomig_iova_range r[5];
	struct vfiomig_sparse_area a[5];
	struct vfiomig_iommu_migration mig;
	uint32_t nr, u, v;
	int rc;

	for (uint32_t k = 1; k <= 3; k++) {
		struct vfiomig_cap cap;
		int steps = 0, n;

		n = vfiomig_caps_validate(ctx, k, p, len);
		check_log(ctx, l, n, "validate", iter);
		for (rc = vfiomig_caps_first(ctx, k, p, len, &cap); rc == 0;
		     rc = vfiomig_caps_next(ctx, k, p, len, &cap)) {
			cr_assert_geq(cap.offset, kinds[k].hdr);
			cr_assert_geq(cap.len, 8);
			cr_assert_leq((uint64_t)cap.offset + cap.len, len);
			cr_assert(cap.next == 0 || cap.next == cap.offset + cap.len);
			cr_assert_leq(++steps, (int)(len / 8), "iteration %d: walk did not end",
				      iter);
		}
		check_log(ctx, l, rc, "first/next", iter);
		if (n >= 0)
			cr_assert(rc == -ENOENT && steps == n,
				  "iteration %d: validate counted %d, the walk %d (%d)", iter, n,
				  steps, rc);
	}

	memset(r, 0x5a, sizeof(r));
	rc = vfiomig_cap_iova_ranges(ctx, p, len, r, 4, &nr);
	check_log(ctx, l, rc, "iova_ranges", iter);
	if (rc == 0) {
		cr_assert_leq((uint64_t)nr * 16, len);
		for (uint32_t i = 0; i < nr && i < 4; i++)
			cr_assert_leq(r[i].start, r[i].end);
	}
	cr_assert_eq(r[4].start, 0x5a5a5a5a5a5a5a5aull, "iteration %d: copied past max", iter);

	memset(a, 0x5a, sizeof(a));
	rc = vfiomig_cap_sparse_mmap(ctx, p, len, a, 4, &nr);
	check_log(ctx, l, rc, "sparse_mmap", iter);
	if (rc == 0)
		cr_assert_leq((uint64_t)nr * 16, len);
	cr_assert_eq(a[4].offset, 0x5a5a5a5a5a5a5a5aull, "iteration %d: copied past max", iter);

	rc = vfiomig_cap_iommu_migration(ctx, p, len, &mig);
	check_log(ctx, l, rc, "iommu_migration", iter);
	rc = vfiomig_cap_dma_avail(ctx, p, len, &u);
	check_log(ctx, l, rc, "dma_avail", iter);
	rc = vfiomig_cap_region_type(ctx, p, len, &u, &v);
	check_log(ctx, l, rc, "region_type", iter);
	rc = vfiomig_cap_msix_mappable(ctx, p, len);
	check_log(ctx, l, rc, "msix_mappable", iter);
	cr_assert(rc == 0 || rc == 1 || rc == -EINVAL || rc == -ENOSPC);
}

static void (*const builders[])(struct bld *b) = {
	build_type1, build_region_bar, build_region_mig_v1, build_region_msix, build_device,
	seed_loop, seed_short_payload,
};

/* Values that sit on the edges the parser checks. */
static uint32_t interesting(uint64_t *s, uint32_t len)
{
	static const uint32_t fixed[] = { 0, 1, 4, 7, 8, 16, 24, 32, 0x7fffffff, 0xfffffff8,
					  0xffffffff };
	uint64_t x = rng(s);

	switch (x % 4) {
	case 0:
		return fixed[(x >> 8) % (sizeof(fixed) / sizeof(fixed[0]))];
	case 1:
		return len - (uint32_t)((x >> 8) % 16);
	case 2:
		return (uint32_t)((x >> 8) % (len + 16));
	default:
		return (uint32_t)(x >> 32);
	}
}

Test(caps, random_and_mutated_buffers_never_misbehave)
{
	uint64_t s = 0x9e3779b97f4a7c15ull;
	struct logrec l;
	struct vfiomig_ctx *ctx = ctx_new(&l);

	for (int iter = 0; iter < 4000; iter++) {
		struct bld b;
		struct ebuf e;
		uint32_t len;

		if (iter % 4 == 0) {
			/* Random bytes behind a plausible header. */
			memset(&b, 0, sizeof(b));
			len = (uint32_t)(rng(&s) % 256);
			for (uint32_t i = 0; i < len; i++)
				b.b[i] = (uint8_t)rng(&s);
			if (len >= 32) {
				put32(&b, 0, rng(&s) % 2 ? len : interesting(&s, len));
				put32(&b, 4, (uint32_t)rng(&s) | 0x8a);
				put32(&b, 12, interesting(&s, len));
				put32(&b, 16, interesting(&s, len));
			}
		} else {
			int muts = 1 + (int)(rng(&s) % 4);

			builders[rng(&s) % (sizeof(builders) / sizeof(builders[0]))](&b);
			len = b.len;
			for (int m = 0; m < muts && len; m++) {
				uint64_t x = rng(&s);
				uint32_t at = (uint32_t)((x >> 8) % len);

				switch (x % 5) {
				case 0:
					b.b[at] = (uint8_t)(x >> 40);
					break;
				case 1:
				case 2:
					put32(&b, at & ~3u, interesting(&s, len));
					break;
				case 3:
					len = (uint32_t)((x >> 8) % (len + 1));
					break;
				default:
					put32(&b, 0, interesting(&s, len));
					break;
				}
			}
		}
		e = ebuf_new(b.b, len);
		exercise(ctx, &l, e.p, e.len, iter);
		exercise(NULL, &l, e.p, e.len, iter);
		ebuf_free(&e);
	}
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}
