/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking of device DMA over the three kernel mechanisms
 * (type1 container, device DMA logging, iommufd HWPT dirty bits), with
 * the choice between them, range coalescing for device logging, chunked
 * queries into one preallocated scratch bitmap, page-size conversion,
 * and type1 DMA (un)mapping, including unmap-with-dirty-bitmap.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>

#define DEFAULT_PAGE    4096u      /* tracking page when the caller gives none */
#define SCRATCH_BYTES   (1u << 20) /* default: one kernel query of 8M pages = 32 GiB at 4 KiB */

struct vfiomig_dirty {
	struct vfiomig_device *dev;
	struct vfiomig_ctx *ctx;
	uint32_t mech;
	bool running;
	bool coarse;                 /* type1 on an IOMMU-backed group: everything is dirty */
	bool no_clear;               /* iommufd: queries keep the bits (NO_CLEAR) */
	uint64_t pgsize;             /* the mechanism's tracking page */
	uint64_t *scratch;
	size_t scratch_bytes;
	struct vu_feature_dma_logging_range *ranges; /* DEVICE: what was started */
	uint32_t nr_ranges;
};

static const char *const mech_names[VFIOMIG_DIRTY_MECH_NR] = { "auto", "type1", "device", "iommufd" };

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int container_fd(const struct vfiomig_device *dev)
{
	if (dev->group && dev->group->container && dev->group->container->iommu_set)
		return dev->group->container->fd;
	return -1;
}

/* The type1 migration capability of the device's container: 0, or -errno / -ENOENT. */
static int type1_cap(struct vfiomig_device *dev, struct vfiomig_iommu_migration *mig)
{
	size_t len;
	void *info;
	int ret;

	ret = vfiomig_device_get_iommu_info_raw(dev, &info, &len);
	if (ret)
		return ret;
	ret = vfiomig_cap_iommu_migration(dev->ctx, info, len, mig);
	vfiomig_free(info);
	if (!ret && !mig->pgsize_bitmap)
		ret = -ENOENT;
	return ret;
}

static int device_logging_probe(struct vfiomig_device *dev)
{
	struct vu_feature_dma_logging_control ctl = { 0 };

	return vm_device_feature(dev, VU_DEVICE_FEATURE_PROBE | VU_DEVICE_FEATURE_SET |
				      VU_FEATURE_DMA_LOGGING_START, &ctl, sizeof(ctl));
}

int vfiomig_dirty_probe(struct vfiomig_device *dev, struct vfiomig_dirty_info *p)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vfiomig_dirty_info out = { .sz = sizeof(out) };
	struct vfiomig_iommu_migration mig;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!p || p->sz < sizeof(size_t))
		return vm_arg_err(dev->ctx, __func__);

	/* DEVICE: the device logs its own DMA. */
	ret = device_logging_probe(dev);
	if (ret >= 0)
		out.available |= 1u << VFIOMIG_DIRTY_MECH_DEVICE;
	else
		snprintf(out.why_not[VFIOMIG_DIRTY_MECH_DEVICE], sizeof(out.why_not[0]),
			 "the device has no DMA logging (VFIO_DEVICE_FEATURE probe: %s)",
			 vfiomig_strerror(ret));

	/* IOMMUFD: needs the cdev path onto a dirty-tracking HWPT. */
	if (dev->iommu && dev->hwpt_id)
		out.available |= 1u << VFIOMIG_DIRTY_MECH_IOMMUFD;
	else
		snprintf(out.why_not[VFIOMIG_DIRTY_MECH_IOMMUFD], sizeof(out.why_not[0]), "%s",
			 dev->iommu ? "opened without VFIOMIG_OPEN_DIRTY_HWPT (no dirty-tracking "
				      "HWPT attached)"
				    : "not opened through the vfio cdev + iommufd path");

	/* TYPE1: the container's migration capability. */
	if (container_fd(dev) < 0) {
		snprintf(out.why_not[VFIOMIG_DIRTY_MECH_TYPE1], sizeof(out.why_not[0]),
			 "no type1 container (%s)", dev->iommu ? "iommufd path" : "adopted without it");
	} else {
		ret = type1_cap(dev, &mig);
		if (ret == 0) {
			out.available |= 1u << VFIOMIG_DIRTY_MECH_TYPE1;
			out.type1_pgsize = mig.pgsize_bitmap & -mig.pgsize_bitmap;
			out.type1_max_bitmap = mig.max_dirty_bitmap_size;
			out.type1_coarse = !vm_device_is_mdev(dev);
		} else if (ret == -ENOENT) {
			snprintf(out.why_not[VFIOMIG_DIRTY_MECH_TYPE1], sizeof(out.why_not[0]),
				 "the type1 IOMMU has no migration capability (no dirty tracking)");
		} else {
			return ret;
		}
	}

	if (out.available & (1u << VFIOMIG_DIRTY_MECH_DEVICE))
		out.best = VFIOMIG_DIRTY_MECH_DEVICE;
	else if (out.available & (1u << VFIOMIG_DIRTY_MECH_IOMMUFD))
		out.best = VFIOMIG_DIRTY_MECH_IOMMUFD;
	else if (out.available & (1u << VFIOMIG_DIRTY_MECH_TYPE1))
		out.best = VFIOMIG_DIRTY_MECH_TYPE1;
	vm_out_copy(p, &out, sizeof(out));
	return 0;
}

/* ----------------------------------------------------- range coalescing */

static int cmp_range(const void *a, const void *b)
{
	const struct vu_feature_dma_logging_range *x = a, *y = b;

	return x->iova < y->iova ? -1 : x->iova > y->iova;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Page-align, sort and merge overlapping or touching ranges, then, while
 * there are more than `max`, close the smallest gaps (a covering range
 * logs a little extra, which only costs re-sending pages that were clean).
 */
static int coalesce(struct vfiomig_dirty *d, const struct vfiomig_dma_range *in, uint32_t n,
		    uint32_t max)
{
	struct vu_feature_dma_logging_range *r;
	uint64_t *gaps = NULL, threshold;
	uint32_t m = 0, i;

	r = calloc(n, sizeof(*r));
	if (!r)
		return vm_err(d->ctx, -ENOMEM, "device %s: %u dirty ranges", d->dev->name, n);
	for (i = 0; i < n; i++) {
		uint64_t start = in[i].iova & ~(d->pgsize - 1), end;

		if (!in[i].length || __builtin_add_overflow(in[i].iova, in[i].length, &end) ||
		    __builtin_add_overflow(end, d->pgsize - 1, &end)) {
			free(r);
			return vm_err(d->ctx, -EINVAL, "device %s: dirty range %u [0x%llx, +0x%llx) "
				      "is empty or overflows", d->dev->name, i,
				      (unsigned long long)in[i].iova,
				      (unsigned long long)in[i].length);
		}
		end &= ~(d->pgsize - 1);
		r[i].iova = start;
		r[i].length = end - start;
	}
	qsort(r, n, sizeof(*r), cmp_range);
	for (i = 0; i < n; i++) {
		if (m && r[i].iova <= r[m - 1].iova + r[m - 1].length) {
			uint64_t end = r[i].iova + r[i].length;

			if (end > r[m - 1].iova + r[m - 1].length)
				r[m - 1].length = end - r[m - 1].iova;
		} else {
			r[m++] = r[i];
		}
	}
	if (m > max) {
		gaps = malloc((m - 1) * sizeof(*gaps));
		if (!gaps) {
			free(r);
			return -ENOMEM;
		}
		for (i = 1; i < m; i++)
			gaps[i - 1] = r[i].iova - (r[i - 1].iova + r[i - 1].length);
		qsort(gaps, m - 1, sizeof(*gaps), cmp_u64);
		/* Close every gap up to the (m - max)-th smallest. */
		threshold = gaps[m - max - 1];
		free(gaps);
		n = m;
		m = 0;
		for (i = 0; i < n; i++) {
			if (m && r[i].iova - (r[m - 1].iova + r[m - 1].length) <= threshold)
				r[m - 1].length = r[i].iova + r[i].length - r[m - 1].iova;
			else
				r[m++] = r[i];
		}
		vm_info(d->ctx, "device %s: %u DMA ranges coalesced into %u for device logging",
			d->dev->name, n, m);
	}
	d->ranges = r;
	d->nr_ranges = m;
	return 0;
}

/* --------------------------------------------------------- start / stop */

static int start_type1(struct vfiomig_dirty *d, const struct vfiomig_dirty_info *p)
{
	struct vu_iommu_type1_dirty_bitmap db = { .argsz = sizeof(db),
						  .flags = VU_IOMMU_DIRTY_PAGES_FLAG_START };
	int ret;

	d->pgsize = p->type1_pgsize;
	d->coarse = p->type1_coarse;
	d->scratch_bytes = SCRATCH_BYTES;
	if (p->type1_max_bitmap && p->type1_max_bitmap < d->scratch_bytes)
		d->scratch_bytes = (size_t)p->type1_max_bitmap & ~(size_t)7;
	if (d->scratch_bytes < 8)
		return vm_err(d->ctx, -EINVAL, "device %s: max_dirty_bitmap_size %llu",
			      d->dev->name, (unsigned long long)p->type1_max_bitmap);
	ret = vk_ioctl_retry(d->ctx, container_fd(d->dev), VU_IOMMU_DIRTY_PAGES, &db);
	if (ret == -ENOTTY)
		return vm_err(d->ctx, ret, "device %s: VFIO_IOMMU_DIRTY_PAGES(START): not "
			      "supported (iommufd's type1 compatibility container?)", d->dev->name);
	if (ret < 0)
		return vm_err(d->ctx, ret, "device %s: VFIO_IOMMU_DIRTY_PAGES(START)", d->dev->name);
	if (d->coarse)
		vm_info(d->ctx, "device %s: type1 dirty tracking is coarse for an IOMMU-backed group: "
			"every mapped page is reported dirty", d->dev->name);
	return 0;
}

static int start_device(struct vfiomig_dirty *d, const struct vfiomig_dirty_opts *opts)
{
	const struct vfiomig_dma_range *ranges;
	struct vu_feature_dma_logging_control ctl;
	uint32_t n, max;
	int ret;

	ranges = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, ranges, NULL);
	n = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, nr_ranges, 0);
	max = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, max_ranges, 0);
	if (!max)
		max = VU_DMA_LOGGING_MAX_RANGES; /* PAGE_SIZE / 16 on a 4 KiB-page kernel */
	if (!ranges || !n)
		return vm_err(d->ctx, -EINVAL, "device %s: device DMA logging needs the DMA-mapped "
			      "ranges (vfiomig_dirty_opts.ranges)", d->dev->name);
	ret = coalesce(d, ranges, n, max);
	if (ret)
		return ret;
	ctl.page_size = d->pgsize;
	ctl.num_ranges = d->nr_ranges;
	ctl.reserved = 0;
	ctl.ranges = (uint64_t)(uintptr_t)d->ranges;
	ret = vm_device_feature(d->dev, VU_DEVICE_FEATURE_SET | VU_FEATURE_DMA_LOGGING_START,
				&ctl, sizeof(ctl));
	if (ret < 0)
		return vm_err(d->ctx, ret, "device %s: DMA_LOGGING_START (%u ranges, page %llu)",
			      d->dev->name, d->nr_ranges, (unsigned long long)d->pgsize);
	/* The device may track at another granularity than asked for. */
	if (!pow2(ctl.page_size))
		return vm_err(d->ctx, -EPROTO, "device %s: DMA logging page size %llu",
			      d->dev->name, (unsigned long long)ctl.page_size);
	d->pgsize = ctl.page_size;
	d->scratch_bytes = SCRATCH_BYTES;
	return 0;
}

static int set_hwpt_tracking(struct vfiomig_dirty *d, bool on)
{
	struct vu_iommu_hwpt_set_dirty_tracking st = {
		.size = sizeof(st), .hwpt_id = d->dev->hwpt_id,
		.flags = on ? VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE : 0,
	};
	int ret = vk_ioctl_retry(d->ctx, d->dev->iommu->fd, VU_IOMMU_HWPT_SET_DIRTY_TRACKING, &st);

	if (ret < 0)
		return vm_err(d->ctx, ret, "device %s: IOMMU_HWPT_SET_DIRTY_TRACKING(%s, hwpt %u)",
			      d->dev->name, on ? "on" : "off", d->dev->hwpt_id);
	return 0;
}

/* Free a session (tracking already stopped or never started) and drop its device. */
static void dirty_release(struct vfiomig_dirty *d)
{
	vm_device_put(d->dev);
	free(d->scratch);
	free(d->ranges);
	free(d);
}

int vfiomig_dirty_start(struct vfiomig_device *dev, const struct vfiomig_dirty_opts *opts,
			struct vfiomig_dirty **out)
{
	VM_API(dev ? dev->ctx : NULL);
	VFIOMIG_OPTS(dirty_info, p);
	struct vfiomig_dirty *d;
	uint32_t mech;
	uint64_t page, maxq;
	uint32_t dflags;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!out)
		return vm_arg_err(dev->ctx, __func__);
	*out = NULL;
	ret = VM_OPTS_VALID(dev->ctx, opts, struct vfiomig_dirty_opts, flags);
	if (ret)
		return ret;
	mech = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, mechanism, VFIOMIG_DIRTY_MECH_AUTO);
	page = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, page_size, 0);
	maxq = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, max_query, 0);
	dflags = VM_OPTS_GET(opts, struct vfiomig_dirty_opts, flags, 0);
	if (mech >= VFIOMIG_DIRTY_MECH_NR || (page && (!pow2(page) || page < DEFAULT_PAGE)))
		return vm_err(dev->ctx, -EINVAL, "device %s: dirty tracking mechanism %u, page size "
			      "%llu", dev->name, mech, (unsigned long long)page);
	ret = vfiomig_dirty_probe(dev, &p);
	if (ret)
		return ret;
	if (mech == VFIOMIG_DIRTY_MECH_AUTO) {
		if (!p.best)
			return vm_err(dev->ctx, -EOPNOTSUPP, "device %s: no dirty-tracking mechanism: "
				      "type1: %s; device: %s; iommufd: %s", dev->name,
				      p.why_not[VFIOMIG_DIRTY_MECH_TYPE1], p.why_not[VFIOMIG_DIRTY_MECH_DEVICE],
				      p.why_not[VFIOMIG_DIRTY_MECH_IOMMUFD]);
		mech = p.best;
	} else if (!(p.available & (1u << mech))) {
		return vm_err(dev->ctx, -EOPNOTSUPP, "device %s: %s dirty tracking unavailable: %s",
			      dev->name, mech_names[mech], p.why_not[mech]);
	}

	if (dflags & ~VFIOMIG_DIRTY_F_NO_CLEAR)
		return vm_err(dev->ctx, -EINVAL, "device %s: dirty tracking flags 0x%x", dev->name,
			      dflags);
	if ((dflags & VFIOMIG_DIRTY_F_NO_CLEAR) && mech != VFIOMIG_DIRTY_MECH_IOMMUFD)
		return vm_err(dev->ctx, -EOPNOTSUPP, "device %s: VFIOMIG_DIRTY_F_NO_CLEAR needs "
			      "iommufd dirty tracking, not %s", dev->name, mech_names[mech]);

	d = calloc(1, sizeof(*d));
	if (!d)
		return vm_enomem(dev->ctx, "dirty tracking session");
	d->no_clear = dflags & VFIOMIG_DIRTY_F_NO_CLEAR;
	d->dev = vm_device_get(dev);
	d->ctx = dev->ctx;
	d->mech = mech;
	d->pgsize = page ? page : DEFAULT_PAGE;
	switch (mech) {
	case VFIOMIG_DIRTY_MECH_TYPE1:
		ret = start_type1(d, &p);
		break;
	case VFIOMIG_DIRTY_MECH_DEVICE:
		ret = start_device(d, opts);
		break;
	default:
		d->scratch_bytes = SCRATCH_BYTES;
		ret = set_hwpt_tracking(d, true);
		break;
	}
	if (!ret && maxq) {
		/* One bit per tracking page of the largest query, whole words. */
		uint64_t want = VM_BITMAP_BYTES(maxq / d->pgsize);

		if (mech == VFIOMIG_DIRTY_MECH_TYPE1 && p.type1_max_bitmap && want > p.type1_max_bitmap)
			want = p.type1_max_bitmap & ~7ull;
		if (want > SIZE_MAX / 2)
			want = SIZE_MAX / 2 & ~(size_t)7;
		if (want > d->scratch_bytes)
			d->scratch_bytes = (size_t)want;
	}
	if (!ret) {
		d->running = true;
		d->scratch = malloc(d->scratch_bytes);
		if (!d->scratch) {
			size_t bytes = d->scratch_bytes;

			vfiomig_dirty_free(d);
			return vm_err(dev->ctx, -ENOMEM, "device %s: %zu-byte dirty scratch bitmap",
				      dev->name, bytes);
		}
	}
	if (ret) {
		dirty_release(d);
		return ret;
	}
	vm_info(dev->ctx, "device %s: %s dirty tracking started (page %llu)", dev->name,
		mech_names[mech], (unsigned long long)d->pgsize);
	*out = d;
	return 0;
}

int vfiomig_dirty_stop(struct vfiomig_dirty *d)
{
	VM_API(d ? d->ctx : NULL);
	int ret = 0;

	if (!d)
		return -EINVAL;
	if (!d->running)
		return 0;
	d->running = false;
	switch (d->mech) {
	case VFIOMIG_DIRTY_MECH_TYPE1: {
		struct vu_iommu_type1_dirty_bitmap db = { .argsz = sizeof(db),
							  .flags = VU_IOMMU_DIRTY_PAGES_FLAG_STOP };

		ret = vk_ioctl_retry(d->ctx, container_fd(d->dev), VU_IOMMU_DIRTY_PAGES, &db);
		if (ret < 0)
			vm_err(d->ctx, ret, "device %s: VFIO_IOMMU_DIRTY_PAGES(STOP)", d->dev->name);
		break;
	}
	case VFIOMIG_DIRTY_MECH_DEVICE: {
		uint64_t none = 0;

		ret = vm_device_feature(d->dev,
					VU_DEVICE_FEATURE_SET | VU_FEATURE_DMA_LOGGING_STOP, &none, 0);
		if (ret < 0)
			vm_err(d->ctx, ret, "device %s: DMA_LOGGING_STOP", d->dev->name);
		break;
	}
	default:
		ret = set_hwpt_tracking(d, false);
		break;
	}
	return ret < 0 ? ret : 0;
}

void vfiomig_dirty_free(struct vfiomig_dirty *d)
{
	VM_API(d ? d->ctx : NULL);
	if (!d)
		return;
	vfiomig_dirty_stop(d);
	dirty_release(d);
}

uint32_t vfiomig_dirty_mechanism(const struct vfiomig_dirty *d)
{
	return d ? d->mech : 0;
}

uint64_t vfiomig_dirty_page_size(const struct vfiomig_dirty *d)
{
	return d ? d->pgsize : 0;
}

/* --------------------------------------------------------------- queries */

/* One kernel query of [iova, iova + len) into the zeroed scratch bitmap. */
static int kernel_query(struct vfiomig_dirty *d, uint64_t iova, uint64_t len)
{
	uint64_t npages = len / d->pgsize, bytes = VM_BITMAP_BYTES(npages);
	int ret;

	memset(d->scratch, 0, (size_t)bytes);
	switch (d->mech) {
	case VFIOMIG_DIRTY_MECH_TYPE1: {
		struct {
			struct vu_iommu_type1_dirty_bitmap hdr;
			struct vu_iommu_type1_dirty_bitmap_get get;
		} q = { .hdr = { .argsz = sizeof(q), .flags = VU_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP },
			.get = { .iova = iova, .size = len,
				 .bitmap = { .pgsize = d->pgsize, .size = bytes,
					     .data = (uint64_t)(uintptr_t)d->scratch } } };

		ret = vk_ioctl_retry(d->ctx, container_fd(d->dev), VU_IOMMU_DIRTY_PAGES, &q);
		if (ret < 0)
			return vm_err(d->ctx, ret, "device %s: VFIO_IOMMU_DIRTY_PAGES(GET_BITMAP "
				      "[0x%llx, +0x%llx)) (a query may not split a DMA mapping)",
				      d->dev->name, (unsigned long long)iova,
				      (unsigned long long)len);
		return 0;
	}
	case VFIOMIG_DIRTY_MECH_DEVICE: {
		struct vu_feature_dma_logging_report rep = {
			.iova = iova, .length = len, .page_size = d->pgsize,
			.bitmap = (uint64_t)(uintptr_t)d->scratch,
		};

		ret = vm_device_feature(d->dev,
					VU_DEVICE_FEATURE_GET | VU_FEATURE_DMA_LOGGING_REPORT, &rep,
					sizeof(rep));
		/* Not a failure of the query: it reports every page dirty (a warning, not ERR). */
		if (ret < 0)
			vm_warn(d->ctx, "device %s: DMA_LOGGING_REPORT [0x%llx, +0x%llx): %s: the log "
				"is lost, reporting every page dirty", d->dev->name,
				(unsigned long long)iova, (unsigned long long)len,
				vfiomig_strerror(ret));
		return ret < 0 ? ret : 0;
	}
	default: {
		struct vu_iommu_hwpt_get_dirty_bitmap q = {
			.size = sizeof(q), .hwpt_id = d->dev->hwpt_id, .iova = iova, .length = len,
			.page_size = d->pgsize, .data = (uint64_t)(uintptr_t)d->scratch,
			.flags = d->no_clear ? VU_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR : 0,
		};

		ret = vk_ioctl_retry(d->ctx, d->dev->iommu->fd, VU_IOMMU_HWPT_GET_DIRTY_BITMAP, &q);
		if (ret < 0)
			vm_warn(d->ctx, "device %s: IOMMU_HWPT_GET_DIRTY_BITMAP [0x%llx, +0x%llx): %s: "
				"reporting every page dirty", d->dev->name, (unsigned long long)iova,
				(unsigned long long)len, vfiomig_strerror(ret));
		return ret < 0 ? ret : 0;
	}
	}
}

/* Where the scratch results go: a caller bitmap at some page size, or a run callback. */
struct sink {
	uint64_t iova;       /* start of the whole query */
	uint64_t pgsize;     /* bitmap page size */
	uint64_t *bitmap;
	vfiomig_dirty_run_fn fn;
	void *user;
	uint64_t chunk_iova; /* start of the chunk in scratch */
	uint64_t mech_pg;
};

static int sink_run(void *user, uint64_t first, uint64_t count)
{
	struct sink *s = user;
	uint64_t start = s->chunk_iova + first * s->mech_pg;
	uint64_t end = start + count * s->mech_pg;

	if (s->fn)
		return s->fn(s->user, start, end - start);
	start -= s->iova;
	end -= s->iova;
	vfiomig_bitmap_set_range(s->bitmap, start / s->pgsize,
				 (end + s->pgsize - 1) / s->pgsize - start / s->pgsize);
	return 0;
}

/* Report [iova, iova + len) wholly dirty into the sink. */
static int sink_all(struct sink *s, uint64_t iova, uint64_t len)
{
	uint64_t first = (iova - s->iova) / s->pgsize;

	if (s->fn)
		return s->fn(s->user, iova, len);
	vfiomig_bitmap_set_range(s->bitmap, first,
				 (iova - s->iova + len + s->pgsize - 1) / s->pgsize - first);
	return 0;
}

static int query(struct vfiomig_dirty *d, uint64_t iova, uint64_t length, struct sink *s)
{
	uint64_t chunk = (uint64_t)d->scratch_bytes * 8 * d->pgsize, off, end;
	int result = VFIOMIG_DIRTY_RESULT_EXACT, ret;

	if (!d->running)
		return vm_err(d->ctx, -EINVAL, "device %s: dirty query while tracking is stopped",
			      d->dev->name);
	if (!length || iova % d->pgsize || length % d->pgsize ||
	    __builtin_add_overflow(iova, length, &end))
		return vm_err(d->ctx, -EINVAL, "device %s: dirty query [0x%llx, +0x%llx) not aligned "
			      "to the %llu-byte tracking page", d->dev->name,
			      (unsigned long long)iova, (unsigned long long)length,
			      (unsigned long long)d->pgsize);
	s->iova = iova;
	s->mech_pg = d->pgsize;
	for (off = 0; off < length; off += chunk) {
		uint64_t n = length - off < chunk ? length - off : chunk;

		ret = kernel_query(d, iova + off, n);
		if (ret < 0) {
			/* Type1 refusals are the caller's range; a lost log is everything dirty. */
			if (d->mech == VFIOMIG_DIRTY_MECH_TYPE1)
				return ret;
			ret = sink_all(s, iova, length);
			return ret ? ret : VFIOMIG_DIRTY_RESULT_ALL;
		}
		if (d->coarse)
			result = VFIOMIG_DIRTY_RESULT_ALL; /* the kernel set every mapped page */
		if (!s->fn && s->pgsize == d->pgsize && ((off / d->pgsize) & 63) == 0) {
			/* Same page size, word-aligned chunk: OR whole words. */
			vfiomig_bitmap_or(s->bitmap + off / d->pgsize / 64, d->scratch,
					  n / d->pgsize);
			ret = 0;
		} else {
			s->chunk_iova = iova + off;
			ret = vfiomig_bitmap_for_each_run(d->scratch, n / d->pgsize, sink_run, s);
		}
		if (ret)
			return ret;
	}
	return result;
}

int vfiomig_dirty_query(struct vfiomig_dirty *d, uint64_t iova, uint64_t length, uint64_t pgsize,
			uint64_t *bitmap, size_t bitmap_bytes)
{
	VM_API(d ? d->ctx : NULL);
	struct sink s = { .pgsize = pgsize, .bitmap = bitmap };
	uint64_t bits;

	if (!d)
		return -EINVAL;
	if (!bitmap)
		return vm_arg_err(d->ctx, __func__);
	if (!pow2(pgsize) || iova % pgsize || length % pgsize)
		return vm_err(d->ctx, -EINVAL, "device %s: dirty query [0x%llx, +0x%llx) at page "
			      "size %llu: not a power of two, or unaligned", d->dev->name,
			      (unsigned long long)iova, (unsigned long long)length,
			      (unsigned long long)pgsize);
	bits = length / pgsize;
	if (bitmap_bytes / sizeof(uint64_t) < VM_BITMAP_WORDS(bits))
		return vm_err(d->ctx, -ENOSPC, "device %s: dirty bitmap of %zu bytes, %llu needed",
			      d->dev->name, bitmap_bytes, (unsigned long long)VM_BITMAP_BYTES(bits));
	return query(d, iova, length, &s);
}

int vfiomig_dirty_query_runs(struct vfiomig_dirty *d, uint64_t iova, uint64_t length,
			     vfiomig_dirty_run_fn fn, void *user)
{
	VM_API(d ? d->ctx : NULL);
	struct sink s = { .fn = fn, .user = user };

	if (!d)
		return -EINVAL;
	if (!fn)
		return vm_arg_err(d->ctx, __func__);
	return query(d, iova, length, &s);
}

/* ------------------------------------------------------ DMA mappings */

int vfiomig_dma_map(struct vfiomig_device *dev, void *vaddr, uint64_t iova, uint64_t length,
		    uint32_t flags)
{
	VM_API(dev ? dev->ctx : NULL);
	int ret;

	if (!dev || !length || (flags & ~(VFIOMIG_DMA_READ | VFIOMIG_DMA_WRITE)) || !flags)
		return dev ? vm_err(dev->ctx, -EINVAL, "device %s: DMA map flags 0x%x / length %llu",
				    dev->name, flags, (unsigned long long)length) : -EINVAL;
	if (container_fd(dev) >= 0) {
		struct vu_iommu_type1_dma_map m = {
			.argsz = sizeof(m), .vaddr = (uint64_t)(uintptr_t)vaddr, .iova = iova,
			.size = length,
			.flags = ((flags & VFIOMIG_DMA_READ) ? VU_DMA_MAP_FLAG_READ : 0) |
				 ((flags & VFIOMIG_DMA_WRITE) ? VU_DMA_MAP_FLAG_WRITE : 0),
		};

		ret = vk_ioctl_retry(dev->ctx, container_fd(dev), VU_IOMMU_MAP_DMA, &m);
	} else if (dev->iommu) {
		struct vu_iommu_ioas_map m = {
			.size = sizeof(m), .ioas_id = dev->iommu->ioas_id,
			.user_va = (uint64_t)(uintptr_t)vaddr, .length = length, .iova = iova,
			.flags = VU_IOMMU_IOAS_MAP_FIXED_IOVA |
				 ((flags & VFIOMIG_DMA_READ) ? VU_IOMMU_IOAS_MAP_READABLE : 0) |
				 ((flags & VFIOMIG_DMA_WRITE) ? VU_IOMMU_IOAS_MAP_WRITEABLE : 0),
		};

		ret = vk_ioctl_retry(dev->ctx, dev->iommu->fd, VU_IOMMU_IOAS_MAP, &m);
	} else {
		return vm_err(dev->ctx, -ENOTTY, "device %s: no container or iommufd to map DMA in",
			      dev->name);
	}
	if (ret < 0)
		return vm_err(dev->ctx, ret, "device %s: DMA map [0x%llx, +0x%llx)", dev->name,
			      (unsigned long long)iova, (unsigned long long)length);
	return 0;
}

int64_t vfiomig_dma_unmap(struct vfiomig_device *dev, uint64_t iova, uint64_t length,
			  uint64_t pgsize, uint64_t *bitmap, size_t bitmap_bytes)
{
	VM_API(dev ? dev->ctx : NULL);
	int ret;

	if (!dev)
		return -EINVAL;
	if (!length)
		return vm_arg_err(dev->ctx, __func__);
	if (container_fd(dev) >= 0) {
		struct {
			struct vu_iommu_type1_dma_unmap u;
			struct vu_bitmap bm;
		} q = { .u = { .argsz = sizeof(q.u), .iova = iova, .size = length } };

		if (bitmap) {
			if (!pow2(pgsize) || bitmap_bytes / sizeof(uint64_t) < VM_BITMAP_WORDS(length / pgsize))
				return vm_err(dev->ctx, -EINVAL, "device %s: unmap dirty bitmap of %zu "
					      "bytes at page %llu for 0x%llx bytes", dev->name,
					      bitmap_bytes, (unsigned long long)pgsize,
					      (unsigned long long)length);
			q.u.argsz = sizeof(q);
			q.u.flags = VU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
			q.bm.pgsize = pgsize;
			q.bm.size = VM_BITMAP_BYTES(length / pgsize);
			q.bm.data = (uint64_t)(uintptr_t)bitmap;
		}
		ret = vk_ioctl_retry(dev->ctx, container_fd(dev), VU_IOMMU_UNMAP_DMA, &q);
		if (ret < 0)
			return vm_err(dev->ctx, ret, "device %s: VFIO_IOMMU_UNMAP_DMA [0x%llx, +0x%llx)%s",
				      dev->name, (unsigned long long)iova,
				      (unsigned long long)length,
				      bitmap ? " with dirty bitmap" : "");
		return (int64_t)q.u.size;
	}
	if (dev->iommu) {
		struct vu_iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = dev->iommu->ioas_id,
						 .iova = iova, .length = length };

		if (bitmap)
			return vm_err(dev->ctx, -EOPNOTSUPP, "device %s: unmap with a dirty bitmap "
				      "is a type1 feature: query the HWPT first", dev->name);
		ret = vk_ioctl_retry(dev->ctx, dev->iommu->fd, VU_IOMMU_IOAS_UNMAP, &u);
		if (ret < 0)
			return vm_err(dev->ctx, ret, "device %s: IOMMU_IOAS_UNMAP [0x%llx, +0x%llx)",
				      dev->name, (unsigned long long)iova,
				      (unsigned long long)length);
		return (int64_t)u.length;
	}
	return vm_err(dev->ctx, -ENOTTY, "device %s: no container or iommufd", dev->name);
}
