/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking through the library on the simulated kernel: the
 * three mechanisms and the automatic choice, coarse vs precise type1,
 * chunked queries, unmap with a dirty bitmap, device logging with range
 * coalescing and a lost log, iommufd HWPT tracking, page-size
 * conversion, and the migration state machine starting tracking before
 * pre-copy.
 */
#include "testutil.h"

#include <stdlib.h>

#include "uapi.h"

#define PG 4096ull

static struct simenv env;

static void setup(void)
{
	simenv_init_flags(&env, VFIOMIG_SIM_F_IOMMUFD_DIRTY, true);
}

static void teardown(void)
{
	simenv_fini(&env);
}

TestSuite(dirty, .init = setup, .fini = teardown);

static struct vfiomig_device *open_dev(const char *spec, const char *name, uint32_t flags,
				       struct vfiomig_sim_device **sd)
{
	VFIOMIG_OPTS(device_open_opts, o, .flags = flags);
	struct vfiomig_device *dev;

	*sd = sim_add(&env, spec);
	cr_assert_eq(vfiomig_device_open(env.ctx, name, &o, &dev), 0, "%s", env.log.last);
	return dev;
}

static bool bit(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

/* DMA-mapped memory must be page-aligned (the kernel refuses an unaligned vaddr). */
static char buf[1 << 16] __attribute__((aligned(4096)));

/*
 * A kernel that says more than the simulator does: its ops, with ioctl
 * answers rewritten and requests recorded. The ctx's kernel_user is the
 * simulator itself; the lie's state is a static (one test per worker).
 */
static struct {
	uint64_t mig_pgsize_bitmap;      /* type1 MIGRATION cap: pgsize_bitmap to report (0: truth) */
	uint32_t log_starts;             /* DMA_LOGGING_START requests seen */
	uint32_t log_nr;                 /* the last one's ranges */
	struct vu_feature_dma_logging_range log_ranges[8];
} lie;

static int lie_ioctl(void *user, int fd, unsigned long req, void *arg)
{
	int ret;

	if (req == VU_DEVICE_FEATURE) {
		const struct vu_device_feature *f = arg;

		if ((f->flags & VU_DEVICE_FEATURE_MASK) == VU_FEATURE_DMA_LOGGING_START &&
		    !(f->flags & VU_DEVICE_FEATURE_PROBE)) {
			const struct vu_feature_dma_logging_control *ctl = (const void *)(f + 1);
			const struct vu_feature_dma_logging_range *r =
				(const void *)(uintptr_t)ctl->ranges;

			lie.log_starts++;
			lie.log_nr = ctl->num_ranges;
			for (uint32_t i = 0; i < ctl->num_ranges && i < 8; i++)
				lie.log_ranges[i] = r[i];
		}
	}
	ret = vfiomig_sim_kernel_ops()->ioctl(user, fd, req, arg);
	if (ret >= 0 && req == VU_IOMMU_GET_INFO && lie.mig_pgsize_bitmap) {
		struct vu_iommu_type1_info *info = arg;
		unsigned char *b = arg;
		uint32_t at = (info->flags & VU_IOMMU_INFO_CAPS) ? info->cap_offset : 0;

		/* Walk the chain the simulator built (the buffer holds it when argsz fits). */
		for (int n = 0; at && n < 8; n++) {
			struct vu_info_cap_header h;

			memcpy(&h, b + at, sizeof(h));
			if (h.id == VU_IOMMU_TYPE1_INFO_CAP_MIGRATION)
				memcpy(b + at + offsetof(struct vu_iommu_type1_info_cap_migration,
							  pgsize_bitmap),
				       &lie.mig_pgsize_bitmap, sizeof(uint64_t));
			at = h.next;
		}
	}
	return ret;
}

static struct vfiomig_ctx *lying_ctx(void)
{
	static struct vfiomig_kernel_ops ops;
	struct vfiomig_ctx *ctx;

	ops = *vfiomig_sim_kernel_ops();
	ops.ioctl = lie_ioctl;
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = logcap_fn, .log_user = &env.log,
		     .log_priority = VFIOMIG_LOG_INFO, .kernel_ops = &ops, .kernel_user = env.sim);
	cr_assert_eq(vfiomig_ctx_new(&co, &ctx), 0);
	return ctx;
}

Test(dirty, probe_reports_mechanisms_and_reasons)
{
	VFIOMIG_OPTS(dirty_info, p);
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev("sim:pci,name=0000:03:00.0", "0000:03:00.0", 0, &sd);

	cr_assert_eq(vfiomig_dirty_probe(dev, &p), 0);
	cr_assert_eq(p.available, 1u << VFIOMIG_DIRTY_MECH_TYPE1);
	cr_assert_eq(p.best, VFIOMIG_DIRTY_MECH_TYPE1);
	cr_assert_eq(p.type1_pgsize, PG);
	cr_assert_eq(p.type1_max_bitmap, 256ull << 20);
	cr_assert_eq(p.type1_coarse, 1, "a vfio-pci group never pins: coarse");
	cr_assert(strstr(p.why_not[VFIOMIG_DIRTY_MECH_DEVICE], "DMA logging"), "%s",
		  p.why_not[VFIOMIG_DIRTY_MECH_DEVICE]);
	cr_assert(strstr(p.why_not[VFIOMIG_DIRTY_MECH_IOMMUFD], "cdev"), "%s",
		  p.why_not[VFIOMIG_DIRTY_MECH_IOMMUFD]);
	vfiomig_device_close(dev);

	dev = open_dev("sim:pci,name=0000:04:00.0,dmalog=1", "0000:04:00.0", 0, &sd);
	cr_assert_eq(vfiomig_dirty_probe(dev, &p), 0);
	cr_assert_eq(p.best, VFIOMIG_DIRTY_MECH_DEVICE, "device logging is preferred");
	cr_assert_eq(p.available, (1u << VFIOMIG_DIRTY_MECH_TYPE1) | (1u << VFIOMIG_DIRTY_MECH_DEVICE));
	vfiomig_device_close(dev);
}

Test(dirty, type1_coarse_reports_every_mapped_page)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev("sim:pci,name=0000:03:00.0", "0000:03:00.0", 0, &sd);
	struct vfiomig_dirty *d;
	uint64_t bm[4];

	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x100000, 16 * PG, VFIOMIG_DMA_READ |
				     VFIOMIG_DMA_WRITE), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x200000, 16 * PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x200000, PG, VFIOMIG_DMA_WRITE), -EEXIST);
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dirty_mechanism(d), VFIOMIG_DIRTY_MECH_TYPE1);
	cr_assert_eq(vfiomig_dirty_page_size(d), PG);
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 16 * PG, PG, bm, sizeof(bm)),
		     VFIOMIG_DIRTY_RESULT_ALL);
	cr_assert_eq(vfiomig_bitmap_count(bm, 16), 16);
	/* Every query says it again: the kernel cannot tell for an IOMMU-backed group. */
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(vfiomig_dirty_query(d, 0x200000, 16 * PG, PG, bm, sizeof(bm)),
		     VFIOMIG_DIRTY_RESULT_ALL);
	cr_assert_eq(vfiomig_bitmap_count(bm, 16), 16);
	/* Bad queries. */
	cr_assert_eq(vfiomig_dirty_query(d, 0x100001, 16 * PG, PG, bm, sizeof(bm)), -EINVAL);
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 16 * PG, PG, bm, 1), -ENOSPC);
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 16 * PG, 3000, bm, sizeof(bm)), -EINVAL);
	cr_assert_eq(vfiomig_dirty_stop(d), 0);
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 16 * PG, PG, bm, sizeof(bm)), -EINVAL);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

static const char *const mdev_spec = "sim:mdev,name=83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
static const char *const mdev_name = "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";

Test(dirty, type1_precise_for_an_mdev_group_reads_and_clears)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev(mdev_spec, mdev_name, 0, &sd);
	struct vfiomig_dirty *d;
	uint64_t bm[1];

	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x100000, 64 * PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x100000 + 3 * PG, 2 * PG), 0);
	cr_assert_eq(vfiomig_sim_device_pin(sd, 0x100000 + 40 * PG, PG), 0);
	bm[0] = 0;
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 64 * PG, PG, bm, sizeof(bm)),
		     VFIOMIG_DIRTY_RESULT_EXACT);
	cr_assert_eq(bm[0], (3ull << 3) | (1ull << 40));
	/* Written bits were cleared by the read; pinned pages stay dirty. */
	bm[0] = 0;
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 64 * PG, PG, bm, sizeof(bm)), 0);
	cr_assert_eq(bm[0], 1ull << 40);
	/* A coarser VMM page size: 16 KiB pages. */
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x100000 + 5 * PG, PG), 0);
	bm[0] = 0;
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 64 * PG, 4 * PG, bm, sizeof(bm)), 0);
	cr_assert_eq(bm[0], (1ull << 1) | (1ull << 10));
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

Test(dirty, type1_unmap_hands_over_the_dirty_bits)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev(mdev_spec, mdev_name, 0, &sd);
	struct vfiomig_dirty *d;
	uint64_t bm[1] = { 0 };

	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x100000, 8 * PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x100000 + 6 * PG, PG), 0);
	cr_assert_eq(vfiomig_dma_unmap(dev, 0x100000, 8 * PG, PG, bm, sizeof(bm)), 8 * PG, "%s",
		     env.log.last);
	cr_assert_eq(bm[0], 1ull << 6);
	/* Gone: a DMA there now faults. */
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x100000, PG), -EFAULT);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

Test(dirty, large_queries_are_split_into_kernel_sized_chunks)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev(mdev_spec, mdev_name, 0, &sd);
	const uint64_t half = 32ull << 30; /* one 1 MiB scratch bitmap covers 32 GiB */
	struct vfiomig_dirty *d;
	uint64_t *bm, calls;
	size_t bytes = (size_t)(2 * half / PG / 8);

	cr_assert_eq(vfiomig_dma_map(dev, buf, 0, half, VFIOMIG_DMA_WRITE), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dma_map(dev, buf, half, half, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 7 * PG, PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, half + 9 * PG, PG), 0);
	bm = calloc(1, bytes);
	cr_assert_not_null(bm);
	calls = vfiomig_fault_calls(env.fault, VFIOMIG_KOP_IOCTL);
	cr_assert_eq(vfiomig_dirty_query(d, 0, 2 * half, PG, bm, bytes), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_fault_calls(env.fault, VFIOMIG_KOP_IOCTL) - calls, 2);
	cr_assert_eq(vfiomig_bitmap_count(bm, 2 * half / PG), 2);
	cr_assert(bit(bm, 7));
	cr_assert(bit(bm, half / PG + 9));
	free(bm);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

struct runs {
	uint64_t iova[8], len[8];
	int n;
};

static int collect(void *user, uint64_t iova, uint64_t len)
{
	struct runs *r = user;

	if (r->n < 8) {
		r->iova[r->n] = iova;
		r->len[r->n] = len;
	}
	r->n++;
	return 0;
}

Test(dirty, device_logging_coalesces_ranges_and_reads_and_clears)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev =
		open_dev("sim:pci,name=0000:03:00.0,dmalog=1", "0000:03:00.0", 0, &sd);
	struct vfiomig_dma_range ranges[300];
	struct vfiomig_dirty *d = NULL;
	struct runs r = { .n = 0 };
	uint64_t bm[8];

	/* 300 mappings of one page each, a page apart: more than the kernel's 256. */
	for (int i = 0; i < 300; i++) {
		ranges[i].iova = 0x1000000 + (uint64_t)i * 2 * PG;
		ranges[i].length = PG;
		cr_assert_eq(vfiomig_dma_map(dev, buf, ranges[i].iova, PG, VFIOMIG_DMA_WRITE), 0);
	}
	/* Asking the kernel for all 300 is refused by its own validation. */
	{
		VFIOMIG_OPTS(dirty_opts, o, .mechanism = VFIOMIG_DIRTY_MECH_DEVICE, .ranges = ranges,
			     .nr_ranges = 300, .max_ranges = 300);
		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), -E2BIG, "%s", env.log.last);
	}
	{
		VFIOMIG_OPTS(dirty_opts, o, .mechanism = VFIOMIG_DIRTY_MECH_DEVICE, .ranges = ranges,
			     .nr_ranges = 300);
		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), 0, "%s", env.log.last);
	}
	cr_assert_eq(vfiomig_dirty_mechanism(d), VFIOMIG_DIRTY_MECH_DEVICE);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, ranges[10].iova, PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, ranges[11].iova, PG), 0);
	cr_assert_eq(vfiomig_dirty_query_runs(d, 0x1000000, 599 * PG, collect, &r), 0, "%s",
		     env.log.last);
	cr_assert_eq(r.n, 2);
	cr_assert_eq(r.iova[0], ranges[10].iova);
	cr_assert_eq(r.len[0], PG);
	cr_assert_eq(r.iova[1], ranges[11].iova);
	/* Read and clear: nothing the second time. */
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(vfiomig_dirty_query(d, 0x1000000, 64 * PG, PG, bm, sizeof(bm)), 0);
	cr_assert_eq(vfiomig_bitmap_count(bm, 64), 0);
	/* A lost log is never a silently clean bitmap. */
	cr_assert_eq(vfiomig_sim_device_fail_dma_report(sd, -EIO), 0);
	cr_assert_eq(vfiomig_dirty_query(d, 0x1000000, 64 * PG, PG, bm, sizeof(bm)),
		     VFIOMIG_DIRTY_RESULT_ALL);
	cr_assert_eq(vfiomig_bitmap_count(bm, 64), 64);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

Test(dirty, device_logging_needs_ranges)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev =
		open_dev("sim:pci,name=0000:03:00.0,dmalog=1", "0000:03:00.0", 0, &sd);
	struct vfiomig_dirty *d = NULL;

	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), -EINVAL);
	cr_assert(strstr(env.log.last, "ranges"), "%s", env.log.last);
	cr_assert_null(d);
	{
		VFIOMIG_OPTS(dirty_opts, o, .flags = VFIOMIG_DIRTY_F_NO_CLEAR);
		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), -EOPNOTSUPP);
	}
	{
		VFIOMIG_OPTS(dirty_opts, o, .mechanism = 9);
		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), -EINVAL);
	}
	vfiomig_device_close(dev);
}

Test(dirty, iommufd_hwpt_dirty_tracking)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev =
		open_dev("sim:pci,name=0000:03:00.0", "0000:03:00.0", VFIOMIG_OPEN_DIRTY_HWPT, &sd);
	VFIOMIG_OPTS(dirty_info, p);
	struct vfiomig_dirty *d;
	uint64_t bm[1] = { 0 };

	cr_assert_eq(vfiomig_dirty_probe(dev, &p), 0);
	cr_assert_eq(p.best, VFIOMIG_DIRTY_MECH_IOMMUFD);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x400000, 32 * PG, VFIOMIG_DMA_WRITE), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dirty_mechanism(d), VFIOMIG_DIRTY_MECH_IOMMUFD);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x400000 + 31 * PG, PG), 0);
	cr_assert_eq(vfiomig_dirty_query(d, 0x400000, 32 * PG, PG, bm, sizeof(bm)), 0, "%s",
		     env.log.last);
	cr_assert_eq(bm[0], 1ull << 31);
	/* The read cleared the bits. */
	bm[0] = 0;
	cr_assert_eq(vfiomig_dirty_query(d, 0x400000, 32 * PG, PG, bm, sizeof(bm)), 0);
	cr_assert_eq(bm[0], 0);
	vfiomig_dirty_free(d);
	/* NO_CLEAR: the same bits come back on every query. */
	{
		VFIOMIG_OPTS(dirty_opts, o, .flags = VFIOMIG_DIRTY_F_NO_CLEAR);

		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), 0, "%s", env.log.last);
	}
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x400000 + 4 * PG, PG), 0);
	for (int i = 0; i < 2; i++) {
		bm[0] = 0;
		cr_assert_eq(vfiomig_dirty_query(d, 0x400000, 32 * PG, PG, bm, sizeof(bm)), 0);
		cr_assert_eq(bm[0], 1ull << 4, "query %d: 0x%llx", i, (unsigned long long)bm[0]);
	}
	cr_assert_eq(vfiomig_dma_unmap(dev, 0x400000, 32 * PG, 0, NULL, 0), 32 * PG);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

Test(dirty, iommufd_without_dirty_capable_iommu_is_refused_at_open)
{
	struct simenv e2;
	struct vfiomig_device *dev = NULL;
	VFIOMIG_OPTS(device_open_opts, o, .flags = VFIOMIG_OPEN_DIRTY_HWPT);

	simenv_init_flags(&e2, 0, false);
	sim_add(&e2, "sim:pci,name=0000:03:00.0");
	cr_assert_eq(vfiomig_device_open(e2.ctx, "0000:03:00.0", &o, &dev), -EOPNOTSUPP);
	cr_assert(strstr(e2.log.last, "dirty tracking"), "%s", e2.log.last);
	cr_assert_null(dev);
	simenv_fini(&e2);
}

Test(dirty, migration_starts_tracking_before_precopy)
{
	VFIOMIG_OPTS(sim_device_opts, so, .name = "0000:03:00.0", .flags = VFIOMIG_SIM_DEV_DMA_LOGGING,
		     .migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_PRE_COPY);
	struct vfiomig_dma_range r = { 0x100000, 16 * PG };
	VFIOMIG_OPTS(mig_opts, mo, .flags = VFIOMIG_MIG_F_DIRTY_TRACKING, .dma_ranges = &r,
		     .nr_dma_ranges = 1);
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_stream *s;
	struct vfiomig_mig *m;
	uint64_t bm[1] = { 0 };

	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &sd), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", NULL, &dev), 0);
	cr_assert_eq(vfiomig_dma_map(dev, buf, r.iova, r.length, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &s), 0);
	cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, &mo, &m), 0, "%s", env.log.last);
	cr_assert_null(vfiomig_mig_dirty(m));
	cr_assert_eq(vfiomig_mig_save_setup(m, s), 0, "%s", env.log.last);
	cr_assert_not_null(vfiomig_mig_dirty(m));
	cr_assert_eq(vfiomig_dirty_mechanism(vfiomig_mig_dirty(m)), VFIOMIG_DIRTY_MECH_DEVICE);
	cr_assert_eq(vfiomig_sim_device_mig_state(sd), VFIOMIG_DEVICE_STATE_PRE_COPY);
	/* The device writes guest memory during pre-copy: the VMM sees it. */
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, r.iova + 2 * PG, PG), 0);
	cr_assert_eq(vfiomig_mig_save_iterate(m, s, 0), 0);
	cr_assert_eq(vfiomig_dirty_query(vfiomig_mig_dirty(m), r.iova, r.length, PG, bm,
					 sizeof(bm)), 0);
	cr_assert_eq(bm[0], 1ull << 2);
	vfiomig_mig_free(m);
	vfiomig_stream_free(s);
	vfiomig_device_close(dev);
}

Test(dirty, blocker_names_every_mechanism_when_none_is_available)
{
	VFIOMIG_OPTS(sim_device_opts, so, .name = "0000:03:00.0", .migration = VFIOMIG_SIM_MIG_V2);
	VFIOMIG_OPTS(device_open_opts, oo, .flags = VFIOMIG_OPEN_CDEV);
	VFIOMIG_OPTS(mig_opts, mo, .flags = VFIOMIG_MIG_F_DIRTY_TRACKING);
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_mig *m = NULL;
	char reason[512];

	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &sd), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, "0000:03:00.0", &oo, &dev), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_mig_check(dev, &mo, reason, sizeof(reason)), -EOPNOTSUPP);
	cr_assert(strstr(reason, "DMA logging") && strstr(reason, "HWPT") &&
		  strstr(reason, "type1"), "reason: %s", reason);
	cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, &mo, &m), -EOPNOTSUPP);
	cr_assert_null(m);
	vfiomig_device_close(dev);
}

Test(dirty, max_query_covers_a_mapping_larger_than_the_default_chunk)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev(mdev_spec, mdev_name, 0, &sd);
	const uint64_t big = 64ull << 30;
	size_t bytes = (size_t)(big / PG / 8);
	struct vfiomig_dirty *d;
	uint64_t *bm = calloc(1, bytes), calls;

	cr_assert_not_null(bm);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0, big, VFIOMIG_DMA_WRITE), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, big - PG, PG), 0);
	/* Default pieces of 32 GiB would split the one 64 GiB mapping: type1 refuses. */
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0);
	cr_assert_eq(vfiomig_dirty_query(d, 0, big, PG, bm, bytes), -EINVAL);
	vfiomig_dirty_free(d);
	{
		VFIOMIG_OPTS(dirty_opts, o, .max_query = big);

		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), 0, "%s", env.log.last);
	}
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, big - PG, PG), 0);
	calls = vfiomig_fault_calls(env.fault, VFIOMIG_KOP_IOCTL);
	cr_assert_eq(vfiomig_dirty_query(d, 0, big, PG, bm, bytes), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_fault_calls(env.fault, VFIOMIG_KOP_IOCTL) - calls, 1);
	cr_assert(bit(bm, big / PG - 1));
	cr_assert_eq(vfiomig_bitmap_count(bm, big / PG), 1);
	free(bm);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
}

/*
 * A type1 IOMMU with 4 KiB, 2 MiB and 1 GiB pages tracks dirt at its
 * smallest page: the whole bitmap is not a page size.
 */
Test(dirty, type1_tracking_page_is_the_smallest_of_the_pgsize_bitmap)
{
	struct vfiomig_ctx *ctx = lying_ctx();
	VFIOMIG_OPTS(dirty_info, p);
	struct vfiomig_sim_device *sd = sim_add(&env, mdev_spec);
	struct vfiomig_device *dev;
	struct vfiomig_dirty *d;
	uint64_t bm[1] = { 0 };

	lie.mig_pgsize_bitmap = 0x40201000ull; /* 4K | 2M | 1G */
	cr_assert_eq(vfiomig_device_open(ctx, mdev_name, NULL, &dev), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dirty_probe(dev, &p), 0, "%s", env.log.last);
	cr_assert(p.available & (1u << VFIOMIG_DIRTY_MECH_TYPE1));
	cr_assert_eq(p.type1_pgsize, PG, "type1 page 0x%llx", (unsigned long long)p.type1_pgsize);
	/* And the session tracks (and queries) at that page. */
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x100000, 8 * PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dirty_start(dev, NULL, &d), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dirty_page_size(d), PG);
	cr_assert_eq(vfiomig_sim_device_dma_write(sd, 0x100000 + 5 * PG, PG), 0);
	cr_assert_eq(vfiomig_dirty_query(d, 0x100000, 8 * PG, PG, bm, sizeof(bm)), 0, "%s",
		     env.log.last);
	cr_assert_eq(bm[0], 1ull << 5);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
}

/*
 * The device gets the fewest ranges that cover the mappings: overlapping
 * ones merge, and so do ranges that only touch (one ends where the next
 * starts), in any order; a real gap keeps two ranges.
 */
Test(dirty, device_logging_merges_touching_and_overlapping_ranges)
{
	struct vfiomig_ctx *ctx = lying_ctx();
	static const struct vfiomig_dma_range in[] = {
		{ 0x102000, PG },     /* touches the first */
		{ 0x200000, PG },     /* apart */
		{ 0x100000, 2 * PG }, /* the first */
		{ 0x101000, PG },     /* inside the first */
		{ 0x103000, PG },     /* touches the second */
	};
	VFIOMIG_OPTS(dirty_opts, o, .mechanism = VFIOMIG_DIRTY_MECH_DEVICE, .ranges = in,
		     .nr_ranges = 5);
	struct vfiomig_device *dev;
	struct vfiomig_dirty *d;

	sim_add(&env, "sim:pci,name=0000:03:00.0,dmalog=1");
	cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x100000, 4 * PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x200000, PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), 0, "%s", env.log.last);
	cr_assert_eq(lie.log_starts, 1);
	cr_assert_eq(lie.log_nr, 2, "the device was given %u ranges", lie.log_nr);
	cr_assert_eq(lie.log_ranges[0].iova, 0x100000);
	cr_assert_eq(lie.log_ranges[0].length, 4 * PG);
	cr_assert_eq(lie.log_ranges[1].iova, 0x200000);
	cr_assert_eq(lie.log_ranges[1].length, PG);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
}

/* No IOMMU tracks below 4 KiB: a smaller page is refused before any mechanism is asked. */
Test(dirty, page_sizes_below_4k_are_refused)
{
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev = open_dev(mdev_spec, mdev_name, 0, &sd);
	static const uint64_t bad[] = { 2048, 1024, 512, 1 };
	struct vfiomig_dirty *d = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		VFIOMIG_OPTS(dirty_opts, o, .page_size = bad[i]);

		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), -EINVAL, "page %llu",
			     (unsigned long long)bad[i]);
		cr_assert_null(d);
		cr_assert(strstr(env.log.last_err, "page size"), "%s", env.log.last_err);
	}
	{
		VFIOMIG_OPTS(dirty_opts, o, .page_size = PG);

		cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), 0, "%s", env.log.last);
		cr_assert_eq(vfiomig_dirty_page_size(d), PG);
		vfiomig_dirty_free(d);
	}
	vfiomig_device_close(dev);
}

/*
 * More mappings than the device takes: the smallest gaps are closed, just
 * enough of them. Gaps of 1, 2, 3 and 4 pages between five mappings, at
 * most three ranges: the 1- and 2-page gaps close, the others stay.
 */
Test(dirty, device_logging_closes_only_the_smallest_gaps)
{
	struct vfiomig_ctx *ctx = lying_ctx();
	static const struct vfiomig_dma_range in[] = {
		{ 0x100000, PG },
		{ 0x100000 + 2 * PG, PG },  /* gap 1 */
		{ 0x100000 + 5 * PG, PG },  /* gap 2 */
		{ 0x100000 + 9 * PG, PG },  /* gap 3 */
		{ 0x100000 + 14 * PG, PG }, /* gap 4 */
	};
	VFIOMIG_OPTS(dirty_opts, o, .mechanism = VFIOMIG_DIRTY_MECH_DEVICE, .ranges = in,
		     .nr_ranges = 5, .max_ranges = 3);
	struct vfiomig_device *dev;
	struct vfiomig_dirty *d;

	sim_add(&env, "sim:pci,name=0000:03:00.0,dmalog=1");
	cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_dma_map(dev, buf, 0x100000, 15 * PG, VFIOMIG_DMA_WRITE), 0);
	cr_assert_eq(vfiomig_dirty_start(dev, &o, &d), 0, "%s", env.log.last);
	cr_assert_eq(lie.log_nr, 3, "the device was given %u ranges", lie.log_nr);
	cr_assert_eq(lie.log_ranges[0].iova, 0x100000);
	cr_assert_eq(lie.log_ranges[0].length, 6 * PG);
	cr_assert_eq(lie.log_ranges[1].iova, 0x100000 + 9 * PG);
	cr_assert_eq(lie.log_ranges[1].length, PG);
	cr_assert_eq(lie.log_ranges[2].iova, 0x100000 + 14 * PG);
	cr_assert_eq(lie.log_ranges[2].length, PG);
	vfiomig_dirty_free(d);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
}
