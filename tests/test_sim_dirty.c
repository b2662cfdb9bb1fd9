/* SPDX-License-Identifier: MIT */
/*
 * DMA mappings and dirty-page tracking in the simulated kernel, driven
 * through its kernel ops: type1 MAP / UNMAP / DIRTY_PAGES with the
 * kernel's errno for each wrong argument, coarse (IOMMU-backed group)
 * vs precise (mdev group) reports, unmap with a dirty bitmap, the
 * DMA_AVAIL count; device DMA logging with vfio's validation, page-size
 * conversion and a lost log; iommufd IOAS_MAP / UNMAP, GET_HW_INFO,
 * HWPT_ALLOC, automatic HWPTs, dirty tracking through a HWPT; and the
 * dmalog spec key. Every test ends with no simulated fd or mapping left,
 * then assert_no_leaks(): heap blocks and fds as at the mark the suite's
 * .init takes (see testutil.h).
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/sim.h>

#include "sim/sim_internal.h"

#define K  (vfiomig_sim_kernel_ops())
#define PG 4096ull

/* ------------------------------------------------------------- helpers */

static struct vfiomig_sim *sim_make(uint32_t flags)
{
	VFIOMIG_OPTS(sim_opts, o, .flags = flags);
	struct vfiomig_sim *sim = NULL;

	cr_assert_eq(vfiomig_sim_new(&o, &sim), 0);
	return sim;
}

static struct vfiomig_sim_device *dev_make(struct vfiomig_sim *sim, uint32_t kind, uint32_t flags,
					   uint32_t migration)
{
	VFIOMIG_OPTS(sim_device_opts, o, .kind = kind, .flags = flags, .migration = migration);
	struct vfiomig_sim_device *dev = NULL;

	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &dev), 0, "%s", sim_last_error(sim));
	return dev;
}

/*
 * No simulated fd or mapping left. The heap is checked once per test, at
 * its end: a test may run more than one simulator.
 */
static void finish(struct vfiomig_sim *sim)
{
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 0);
	vfiomig_sim_free(sim);
}

static int kopen(struct vfiomig_sim *sim, const char *path)
{
	return K->open(sim, path, O_RDWR | O_CLOEXEC);
}

static int kioctl(struct vfiomig_sim *sim, int fd, unsigned long req, void *arg)
{
	return K->ioctl(sim, fd, req, arg);
}

static void kclose(struct vfiomig_sim *sim, int fd)
{
	cr_assert_eq(K->close(sim, fd), 0);
}

static int group_open(struct vfiomig_sim *sim, const struct vfiomig_sim_device *dev)
{
	char path[64];

	snprintf(path, sizeof(path), "/dev/vfio/%d", vfiomig_sim_device_group(dev));
	return kopen(sim, path);
}

static int set_container(struct vfiomig_sim *sim, int g, int c)
{
	return kioctl(sim, g, VU_GROUP_SET_CONTAINER, &c);
}

/* A type1 container (type 1 or 3) with the device's group; the device opened through it. */
struct t1 {
	int c, g, d;
};

static struct t1 t1_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev,
			unsigned long type)
{
	struct t1 t;

	t.c = kopen(sim, "/dev/vfio/vfio");
	cr_assert_geq(t.c, 0);
	t.g = group_open(sim, dev);
	cr_assert_geq(t.g, 0);
	cr_assert_eq(set_container(sim, t.g, t.c), 0);
	cr_assert_eq(kioctl(sim, t.c, VU_SET_IOMMU, (void *)type), 0);
	t.d = kioctl(sim, t.g, VU_GROUP_GET_DEVICE_FD, (void *)vfiomig_sim_device_name(dev));
	cr_assert_geq(t.d, 0);
	return t;
}

static void t1_close(struct vfiomig_sim *sim, struct t1 *t)
{
	kclose(sim, t->d);
	kclose(sim, t->g);
	kclose(sim, t->c);
}

static int map_dma(struct vfiomig_sim *sim, int c, uint64_t vaddr, uint64_t iova, uint64_t size,
		   uint32_t flags)
{
	struct vu_iommu_type1_dma_map m = { .argsz = sizeof(m), .flags = flags, .vaddr = vaddr,
					    .iova = iova, .size = size };

	return kioctl(sim, c, VU_IOMMU_MAP_DMA, &m);
}

#define RW (VU_DMA_MAP_FLAG_READ | VU_DMA_MAP_FLAG_WRITE)

/* Plain unmap; *unmapped gets the size written back. */
static int unmap_dma(struct vfiomig_sim *sim, int c, uint64_t iova, uint64_t size, uint32_t flags,
		     uint64_t *unmapped)
{
	struct vu_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .flags = flags, .iova = iova,
					      .size = size };
	int ret = kioctl(sim, c, VU_IOMMU_UNMAP_DMA, &u);

	if (unmapped)
		*unmapped = u.size;
	return ret;
}

struct unmap_bm {
	struct vu_iommu_type1_dma_unmap u;
	struct vu_bitmap bm;
};

static int unmap_dirty(struct vfiomig_sim *sim, int c, uint64_t iova, uint64_t size,
		       uint64_t pgsize, uint64_t *bm, uint64_t bytes, uint64_t *unmapped)
{
	struct unmap_bm q = {
		.u = { .argsz = sizeof(q), .flags = VU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP,
		       .iova = iova, .size = size },
		.bm = { .pgsize = pgsize, .size = bytes, .data = (uint64_t)(uintptr_t)bm },
	};
	int ret = kioctl(sim, c, VU_IOMMU_UNMAP_DMA, &q);

	if (unmapped)
		*unmapped = q.u.size;
	return ret;
}

static int dirty_op(struct vfiomig_sim *sim, int c, uint32_t flags)
{
	struct vu_iommu_type1_dirty_bitmap d = { .argsz = sizeof(d), .flags = flags };

	return kioctl(sim, c, VU_IOMMU_DIRTY_PAGES, &d);
}

struct get_bm {
	struct vu_iommu_type1_dirty_bitmap h;
	struct vu_iommu_type1_dirty_bitmap_get g;
};

static int get_bitmap(struct vfiomig_sim *sim, int c, uint64_t iova, uint64_t size,
		      uint64_t pgsize, uint64_t *bm, uint64_t bytes)
{
	struct get_bm q = {
		.h = { .argsz = sizeof(q), .flags = VU_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP },
		.g = { .iova = iova, .size = size,
		       .bitmap = { .pgsize = pgsize, .size = bytes,
				   .data = (uint64_t)(uintptr_t)bm } },
	};

	return kioctl(sim, c, VU_IOMMU_DIRTY_PAGES, &q);
}

/* The DMA_AVAIL capability of VFIO_IOMMU_GET_INFO. */
static uint32_t dma_avail(struct vfiomig_sim *sim, int c)
{
	uint8_t buf[256] = { 0 };
	struct vu_iommu_type1_info info = { .argsz = sizeof(buf) };
	uint32_t off;

	memcpy(buf, &info, sizeof(info));
	cr_assert_eq(kioctl(sim, c, VU_IOMMU_GET_INFO, buf), 0);
	memcpy(&info, buf, sizeof(info));
	for (off = info.cap_offset; off;) {
		struct vu_iommu_type1_info_dma_avail a;

		cr_assert_lt(off, sizeof(buf) - sizeof(a));
		memcpy(&a, buf + off, sizeof(a));
		if (a.header.id == VU_IOMMU_TYPE1_INFO_DMA_AVAIL)
			return a.avail;
		off = a.header.next;
	}
	cr_assert_fail("no DMA_AVAIL capability");
	return 0;
}

/* ------------------------------------------------------------ type1 map */

TestSuite(type1, .init = leak_baseline);

Test(type1, map_validates_like_the_kernel)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct vu_iommu_type1_dma_map m = { .argsz = 31, .flags = RW, .iova = 0, .size = PG };
	struct t1 t;
	int c2;

	/* Before VFIO_SET_IOMMU the container answers -EINVAL. */
	c2 = kopen(sim, "/dev/vfio/vfio");
	cr_assert_eq(map_dma(sim, c2, 0, 0, PG, RW), -EINVAL);
	kclose(sim, c2);

	t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_MAP_DMA, NULL), -EFAULT);
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_MAP_DMA, &m), -EINVAL, "argsz below 32");
	cr_assert_eq(map_dma(sim, t.c, 0, 0, PG, RW | (1u << 7)), -EINVAL, "unknown flag");
	cr_assert_eq(map_dma(sim, t.c, 0, 0, PG, RW | (1u << 2)), -EINVAL, "VADDR not offered");
	cr_assert_eq(map_dma(sim, t.c, 0, 0, PG, 0), -EINVAL, "neither READ nor WRITE");
	cr_assert_eq(map_dma(sim, t.c, 0, 0, 0, RW), -EINVAL, "size 0");
	cr_assert_eq(map_dma(sim, t.c, 0, 0x800, PG, RW), -EINVAL, "iova unaligned");
	cr_assert_eq(map_dma(sim, t.c, 0, 0, PG + 1, RW), -EINVAL, "size unaligned");
	cr_assert_eq(map_dma(sim, t.c, 0x10, 0, PG, RW), -EINVAL, "vaddr unaligned");
	cr_assert_eq(map_dma(sim, t.c, 0, UINT64_MAX - PG + 1, 2 * PG, RW), -EINVAL, "iova wraps");
	cr_assert_eq(map_dma(sim, t.c, UINT64_MAX - PG + 1, 0, 2 * PG, RW), -EINVAL,
		     "vaddr wraps");
	/* IOVA ranges of an IOMMU-backed container: not the MSI window, not past 48 bits. */
	cr_assert_eq(map_dma(sim, t.c, 0, 0xfee00000, PG, RW), -EINVAL);
	cr_assert_eq(map_dma(sim, t.c, 0, 0xfed00000, 0x200000, RW), -EINVAL, "straddles");
	cr_assert_eq(map_dma(sim, t.c, 0, 1ull << 48, PG, RW), -EINVAL);
	cr_assert_eq(map_dma(sim, t.c, 0, 0xfef00000, PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, (1ull << 48) - PG, PG, VU_DMA_MAP_FLAG_READ), 0);

	/* vaddr is never touched: any aligned number will do. */
	cr_assert_eq(map_dma(sim, t.c, 0x7000, 0x100000, 4 * PG, VU_DMA_MAP_FLAG_WRITE), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 4 * PG, RW), -EEXIST);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000 + 3 * PG, 2 * PG, RW), -EEXIST, "tail overlap");
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000 - PG, 2 * PG, RW), -EEXIST, "head overlap");
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000 - 4 * PG, 12 * PG, RW), -EEXIST, "covers");
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000 + 4 * PG, PG, RW), 0, "adjacent is fine");
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000 - PG, PG, RW), 0, "adjacent below");
	cr_assert_eq(dma_avail(sim, t.c), 65535 - 5);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, emulated_container_has_no_iova_ranges)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *mdev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct vfiomig_sim_device *pci = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t = t1_open(sim, mdev, VU_TYPE1v2_IOMMU);
	int g2;

	/* No IOMMU domain: the MSI window and high IOVAs are fine. */
	cr_assert_eq(map_dma(sim, t.c, 0, 0xfee00000, PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 1ull << 50, PG, RW), 0);
	/* An IOMMU-backed group cannot join: its domain cannot take those mappings. */
	g2 = group_open(sim, pci);
	cr_assert_eq(set_container(sim, g2, t.c), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, 0, 0, VU_DMA_UNMAP_FLAG_ALL, NULL), 0);
	cr_assert_eq(set_container(sim, g2, t.c), 0);
	kclose(sim, g2);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, dma_avail_counts_down_to_enospc)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	uint64_t n = 0;

	cr_assert_eq(dma_avail(sim, t.c), 65535);
	for (uint64_t i = 0; i < 65535; i++)
		cr_assert_eq(map_dma(sim, t.c, 0, 0x10000000 + i * PG, PG, RW), 0);
	cr_assert_eq(dma_avail(sim, t.c), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x1000, PG, RW), -ENOSPC);
	/* An overlap is found before the limit. */
	cr_assert_eq(map_dma(sim, t.c, 0, 0x10000000, PG, RW), -EEXIST);
	cr_assert_eq(unmap_dma(sim, t.c, 0x10000000, PG, 0, &n), 0);
	cr_assert_eq(n, PG);
	cr_assert_eq(dma_avail(sim, t.c), 1);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x1000, PG, RW), 0);
	/* The last group leaving tears the IOMMU down with its mappings. */
	t1_close(sim, &t);
	t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	cr_assert_eq(dma_avail(sim, t.c), 65535);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x10000000, PG, RW), 0);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, unmap_whole_mappings_only_and_reports_the_size)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_iommu_type1_dma_unmap shortu = { .argsz = 23, .iova = 0x100000, .size = PG };
	uint64_t n = 1;

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 4 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x104000, 4 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x200000, PG, RW), 0);
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_UNMAP_DMA, &shortu), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, 0x100000, PG, 1u << 5, NULL), -EINVAL, "unknown flag");
	cr_assert_eq(unmap_dma(sim, t.c, 0x100800, PG, 0, NULL), -EINVAL, "unaligned");
	cr_assert_eq(unmap_dma(sim, t.c, 0x100000, 0, 0, NULL), -EINVAL, "size 0");
	cr_assert_eq(unmap_dma(sim, t.c, 0x100000, PG + 1, 0, NULL), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, 2 * PG, UINT64_MAX - PG + 1, 0, NULL), -EINVAL, "wraps");
	/* type1v2: a range that bisects a mapping at either end. */
	cr_assert_eq(unmap_dma(sim, t.c, 0x101000, 3 * PG, 0, NULL), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, 0x100000, 5 * PG, 0, NULL), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, 0, 0x100000 + PG, 0, NULL), -EINVAL);
	/* Nothing there: success, size 0. */
	cr_assert_eq(unmap_dma(sim, t.c, 0x300000, PG, 0, &n), 0);
	cr_assert_eq(n, 0);
	/* Two adjacent mappings and the gap up to a third, in one go. */
	cr_assert_eq(unmap_dma(sim, t.c, 0, 0x200000, 0, &n), 0);
	cr_assert_eq(n, 8 * PG);
	cr_assert_eq(dma_avail(sim, t.c), 65534);
	/* UNMAP_ALL: iova and size must be 0. */
	cr_assert_eq(unmap_dma(sim, t.c, 0, PG, VU_DMA_UNMAP_FLAG_ALL, NULL), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, PG, 0, VU_DMA_UNMAP_FLAG_ALL, NULL), -EINVAL);
	cr_assert_eq(unmap_dma(sim, t.c, 0, 0, VU_DMA_UNMAP_FLAG_ALL, &n), 0);
	cr_assert_eq(n, PG);
	cr_assert_eq(dma_avail(sim, t.c), 65535);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, v1_unmap_keeps_the_old_granularity_rules)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1_IOMMU);
	uint64_t n = 1;

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 4 * PG, RW), 0);
	/* Starting inside a mapping: success, nothing unmapped. */
	cr_assert_eq(unmap_dma(sim, t.c, 0x101000, PG, 0, &n), 0);
	cr_assert_eq(n, 0);
	/* Covering its first IOVA: the whole mapping goes. */
	cr_assert_eq(unmap_dma(sim, t.c, 0x100000, PG, 0, &n), 0);
	cr_assert_eq(n, 4 * PG);
	/* Dirty tracking is a type1v2 feature. */
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), -EACCES);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

/* ---------------------------------------------------------- type1 dirty */

Test(type1, dirty_pages_takes_exactly_one_operation)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_iommu_type1_dirty_bitmap d = { .argsz = 7, .flags = 1 };
	uint64_t bm[1] = { 0 };

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 8 * PG, RW), 0);
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_DIRTY_PAGES, &d), -EINVAL, "argsz below 8");
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_DIRTY_PAGES, NULL), -EFAULT);
	cr_assert_eq(dirty_op(sim, t.c, 0), -EINVAL);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START |
			      VU_IOMMU_DIRTY_PAGES_FLAG_STOP), -EINVAL);
	cr_assert_eq(dirty_op(sim, t.c, 1u << 3), -EINVAL);
	/* Not started: no bitmap, even for a valid range. */
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, 8), -EINVAL);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_STOP), 0, "stop when stopped");
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), 0);
	/* START again is a no-op: the written page is still there. */
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 1);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_STOP), 0);
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, 8), -EINVAL);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, get_bitmap_validates_range_page_size_and_bitmap)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct get_bm q = { .h = { .argsz = 8 + 39,
				   .flags = VU_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP } };
	uint64_t bm[8] = { 0 };

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 8 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x200000, 8 * PG, RW), 0);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_DIRTY_PAGES, &q), -EINVAL, "argsz below 8 + 40");
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, 2 * PG, bm, 8), -EINVAL,
		     "only the smallest page size");
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, 0, bm, 8), -EINVAL);
	cr_assert_eq(get_bitmap(sim, t.c, 0x100800, 8 * PG, PG, bm, 8), -EINVAL, "iova");
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 0, PG, bm, 8), -EINVAL, "size 0");
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG + 8, PG, bm, 8), -EINVAL, "size");
	cr_assert_eq(get_bitmap(sim, t.c, PG, UINT64_MAX - PG + 1, PG, bm, 8), -EINVAL, "wraps");
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, 0), -EINVAL, "bitmap size 0");
	/* 65 pages need two words. */
	cr_assert_eq(get_bitmap(sim, t.c, 0, 65 * PG, PG, bm, 8), -EINVAL, "bitmap too small");
	cr_assert_eq(get_bitmap(sim, t.c, 0, 65 * PG, PG, bm, 16), 0);
	/* At most 256 MiB of bitmap per query. */
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, (256ull << 20) + 8), -EINVAL);
	cr_assert_eq(get_bitmap(sim, t.c, 1ull << 44, 1ull << 43, PG, bm, 256ull << 20), 0,
		     "2^31 pages fit exactly");
	cr_assert_eq(get_bitmap(sim, t.c, 1ull << 44, (1ull << 43) + 64 * PG, PG, bm,
			       256ull << 20), -EINVAL);
	/* A range must start at a mapping's start and end at a mapping's end, or outside them. */
	cr_assert_eq(get_bitmap(sim, t.c, 0x101000, 7 * PG, PG, bm, 8), -EINVAL);
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 7 * PG, PG, bm, 8), -EINVAL);
	cr_assert_eq(get_bitmap(sim, t.c, 0xff000, 2 * PG, PG, bm, 8), -EINVAL);
	cr_assert_eq(get_bitmap(sim, t.c, 0x1ff000, 2 * PG, PG, bm, 8), -EINVAL);
	cr_assert_eq(get_bitmap(sim, t.c, 0xf0000, 0x120000, PG, bm, 40), 0, "both, and gaps");
	cr_assert_eq(get_bitmap(sim, t.c, 0x300000, PG, PG, NULL, 8), 0, "nothing mapped there");
	/* A mapping in the range, but no bitmap memory. */
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, NULL, 8), -EFAULT);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, coarse_for_an_iommu_backed_group)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	uint64_t bm[1];

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 4 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x108000, 2 * PG, RW), 0);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	/* Every mapped page, every time, written or not; the gap stays clear. */
	for (int round = 0; round < 2; round++) {
		bm[0] = 0;
		cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 10 * PG, PG, bm, 8), 0);
		cr_assert_eq(bm[0], 0xfull | (0x3ull << 8));
	}
	/* Bits are only ever set: a caller bit in the gap survives. */
	bm[0] = 1ull << 5;
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 10 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 0xfull | (1ull << 5) | (0x3ull << 8));
	/* A bitmap based below the mapping: the mapping's bits are offset. */
	bm[0] = 0;
	cr_assert_eq(get_bitmap(sim, t.c, 0x108000 - 3 * PG, 5 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 0x3ull << 3);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, precise_for_an_emulated_group_written_and_pinned)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	uint64_t bm[2];

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 64 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x140000, 64 * PG, RW), 0);
	/* Before START: writes are not recorded; pins are (populated at START). */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), 0);
	cr_assert_eq(vfiomig_sim_device_pin(dev, 0x100000 + 9 * PG, PG), 0);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	/* Bytes 0x103ff0..0x104010 straddle pages 3 and 4; the write spans both mappings. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x103ff0, 0x20), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x13f000, 2 * PG), 0);
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 128 * PG, PG, bm, 16), 0);
	cr_assert_eq(bm[0], (1ull << 3) | (1ull << 4) | (1ull << 9) | (1ull << 63));
	cr_assert_eq(bm[1], 1);
	/* Read and clear: written bits are gone, the pinned page is reported again. */
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 128 * PG, PG, bm, 16), 0);
	cr_assert_eq(bm[0], 1ull << 9);
	cr_assert_eq(bm[1], 0);
	/* A query of one mapping clears only that mapping's bits. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x140000, PG), 0);
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(get_bitmap(sim, t.c, 0x140000, 64 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 1);
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 64 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 1 | (1ull << 9));
	/* STOP forgets; a new START starts clean (pins aside). */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 2 * PG, PG), 0);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_STOP), 0);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 64 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 1ull << 9);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, a_pci_group_in_the_container_makes_it_coarse)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *mdev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct vfiomig_sim_device *pci = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t = t1_open(sim, mdev, VU_TYPE1v2_IOMMU);
	uint64_t bm[1];
	int g2;

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 8 * PG, RW), 0);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	g2 = group_open(sim, pci);
	cr_assert_eq(set_container(sim, g2, t.c), 0);
	bm[0] = 0;
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 0xff);
	/* The IOMMU-backed group leaves: precise again. */
	cr_assert_eq(kioctl(sim, g2, VU_GROUP_UNSET_CONTAINER, NULL), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0x100000 + PG, PG), 0);
	bm[0] = 0;
	cr_assert_eq(get_bitmap(sim, t.c, 0x100000, 8 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 2);
	kclose(sim, g2);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, unmap_hands_over_dirty_bits)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct unmap_bm shortq = { .u = { .argsz = 24 + 23, .flags = 1, .iova = 0x100000,
					  .size = PG } };
	uint64_t bm[1] = { 0 }, n = 0;

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 8 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x110000, 8 * PG, RW), 0);
	/* Only while tracking. */
	cr_assert_eq(unmap_dirty(sim, t.c, 0x100000, 8 * PG, PG, bm, 8, NULL), -EINVAL);
	cr_assert_eq(dirty_op(sim, t.c, VU_IOMMU_DIRTY_PAGES_FLAG_START), 0);
	cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_UNMAP_DMA, &shortq), -EINVAL, "no room for bitmap");
	cr_assert_eq(unmap_dirty(sim, t.c, 0x100000, 8 * PG, 2 * PG, bm, 8, NULL), -EINVAL);
	cr_assert_eq(unmap_dirty(sim, t.c, 0x100000, 8 * PG, 0, bm, 8, NULL), -EINVAL);
	cr_assert_eq(unmap_dirty(sim, t.c, 0x100000, 65 * PG, PG, bm, 8, NULL), -EINVAL,
		     "bitmap too small");
	{
		struct unmap_bm q = { .u = { .argsz = sizeof(q),
					     .flags = VU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP |
						      VU_DMA_UNMAP_FLAG_ALL },
				      .bm = { .pgsize = PG, .size = 8 } };

		cr_assert_eq(kioctl(sim, t.c, VU_IOMMU_UNMAP_DMA, &q), -EINVAL, "not with ALL");
	}
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 6 * PG, PG), 0);
	cr_assert_eq(vfiomig_sim_device_pin(dev, 0x110000 + PG, PG), 0);
	/* Both mappings at once: bits are placed relative to the unmap's IOVA. */
	cr_assert_eq(unmap_dirty(sim, t.c, 0x100000, 0x18000, PG, bm, 8, &n), 0);
	cr_assert_eq(n, 16 * PG);
	cr_assert_eq(bm[0], (1ull << 6) | (1ull << 17));
	/* Gone, with their pins: a DMA there faults; a new mapping there is clean. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), -EFAULT);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x110000, 8 * PG, RW), 0);
	bm[0] = 0;
	cr_assert_eq(get_bitmap(sim, t.c, 0x110000, 8 * PG, PG, bm, 8), 0);
	cr_assert_eq(bm[0], 0);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(type1, dma_write_and_pin_need_a_mapping)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *mdev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct vfiomig_sim_device *pci = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct t1 t;

	/* Attached to nothing. */
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0, PG), -ENODEV);
	cr_assert_eq(vfiomig_sim_device_pin(mdev, 0, PG), -ENODEV);
	cr_assert_eq(vfiomig_sim_device_dma_write(NULL, 0, PG), -EINVAL);
	t = t1_open(sim, mdev, VU_TYPE1v2_IOMMU);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 2 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x102000, 2 * PG, RW), 0);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x200000, PG, VU_DMA_MAP_FLAG_READ), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0x100000, 0), -EINVAL, "length 0");
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, UINT64_MAX, 2), -EINVAL, "wraps");
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0x100000, 4 * PG), 0, "adjacent mappings");
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0x103000, 2 * PG), -EFAULT, "runs off");
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0xff000, 2 * PG), -EFAULT, "starts before");
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0x300000, 1), -EFAULT);
	cr_assert_eq(vfiomig_sim_device_dma_write(mdev, 0x200000, 1), -EFAULT, "read-only");
	cr_assert_eq(vfiomig_sim_device_pin(mdev, 0x200000, PG), 0, "pinning a read mapping");
	cr_assert_eq(vfiomig_sim_device_pin(mdev, 0x300000, PG), -EFAULT);
	cr_assert_eq(vfiomig_sim_device_pin(mdev, 0x100000, 0), -EINVAL);
	/* Only an emulated device pins through VFIO. */
	cr_assert_eq(vfiomig_sim_device_pin(pci, 0x100000, PG), -EINVAL);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

/* --------------------------------------------------------- DMA logging */

struct feat {
	struct vu_device_feature h;
	uint8_t data[32];
};

static int feature(struct vfiomig_sim *sim, int d, uint32_t flags, const void *in, size_t len,
		   void *out)
{
	struct feat f;
	int ret;

	memset(&f, 0, sizeof(f));
	f.h.argsz = (uint32_t)(sizeof(f.h) + len);
	f.h.flags = flags;
	if (in)
		memcpy(f.data, in, len);
	ret = kioctl(sim, d, VU_DEVICE_FEATURE, &f);
	if (out)
		memcpy(out, f.data, len);
	return ret;
}

#define LOGGING    VFIOMIG_SIM_DEV_DMA_LOGGING
#define SET_START  (VU_DEVICE_FEATURE_SET | VU_FEATURE_DMA_LOGGING_START)
#define SET_STOP   (VU_DEVICE_FEATURE_SET | VU_FEATURE_DMA_LOGGING_STOP)
#define GET_REPORT (VU_DEVICE_FEATURE_GET | VU_FEATURE_DMA_LOGGING_REPORT)

static int log_start(struct vfiomig_sim *sim, int d, uint64_t page_size,
		     const struct vu_feature_dma_logging_range *r, uint32_t n, uint64_t *page_out)
{
	struct vu_feature_dma_logging_control c = { .page_size = page_size, .num_ranges = n,
						    .ranges = (uint64_t)(uintptr_t)r };
	int ret = feature(sim, d, SET_START, &c, sizeof(c), &c);

	if (page_out)
		*page_out = c.page_size;
	return ret;
}

static int log_report(struct vfiomig_sim *sim, int d, uint64_t iova, uint64_t length,
		      uint64_t page_size, uint64_t *bm)
{
	struct vu_feature_dma_logging_report r = { .iova = iova, .length = length,
						   .page_size = page_size,
						   .bitmap = (uint64_t)(uintptr_t)bm };

	return feature(sim, d, GET_REPORT, &r, sizeof(r), NULL);
}

TestSuite(dmalog, .init = leak_baseline);

Test(dmalog, devices_without_logging_answer_enotty)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *plain = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct vfiomig_sim_device *mig = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, VFIOMIG_SIM_MIG_V2);
	struct vfiomig_sim_device *both = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING,
						   VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P);
	struct vu_feature_dma_logging_range r = { .iova = 0, .length = PG };
	struct vfiomig_sim_device *devs[2] = { plain, mig };
	uint64_t flags = 0;

	for (int i = 0; i < 2; i++) {
		struct t1 t = t1_open(sim, devs[i], VU_TYPE1v2_IOMMU);

		cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), -ENOTTY);
		cr_assert_eq(feature(sim, t.d, SET_STOP, NULL, 0, NULL), -ENOTTY);
		cr_assert_eq(log_report(sim, t.d, 0, PG, PG, &flags), -ENOTTY);
		cr_assert_eq(vfiomig_sim_device_fail_dma_report(devs[i], -EIO), -EINVAL);
		t1_close(sim, &t);
	}
	{
		/* Logging and migration on one device: both answer. */
		struct t1 t = t1_open(sim, both, VU_TYPE1v2_IOMMU);

		cr_assert_eq(feature(sim, t.d, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, NULL,
				     sizeof(flags), &flags), 0);
		cr_assert_eq(flags, VU_MIGRATION_STOP_COPY | VU_MIGRATION_P2P);
		cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), 0);
		cr_assert_eq(feature(sim, t.d, VU_DEVICE_FEATURE_GET | 0x7f, NULL, 8, NULL),
			     -ENOTTY);
		t1_close(sim, &t);
	}
	finish(sim);
	assert_no_leaks();
}

Test(dmalog, probe_and_get_set_direction)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	const uint32_t P = VU_DEVICE_FEATURE_PROBE;

	cr_assert_eq(feature(sim, t.d, P | SET_START, NULL, 0, NULL), 0);
	cr_assert_eq(feature(sim, t.d, P | SET_STOP, NULL, 0, NULL), 0);
	cr_assert_eq(feature(sim, t.d, P | GET_REPORT, NULL, 0, NULL), 0);
	cr_assert_eq(feature(sim, t.d, P | VU_DEVICE_FEATURE_GET | VU_FEATURE_DMA_LOGGING_START,
			     NULL, 0, NULL), -EINVAL);
	cr_assert_eq(feature(sim, t.d, P | VU_DEVICE_FEATURE_SET | VU_FEATURE_DMA_LOGGING_REPORT,
			     NULL, 0, NULL), -EINVAL);
	/* Without PROBE: SET for START / STOP, GET for REPORT, and room for the payload. */
	cr_assert_eq(feature(sim, t.d, VU_FEATURE_DMA_LOGGING_START, NULL, 24, NULL), -EINVAL);
	cr_assert_eq(feature(sim, t.d, SET_START, NULL, 23, NULL), -EINVAL);
	cr_assert_eq(feature(sim, t.d, GET_REPORT, NULL, 31, NULL), -EINVAL);
	cr_assert_eq(feature(sim, t.d, SET_STOP, NULL, 0, NULL), 0, "stop when stopped");
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(dmalog, start_validates_like_the_core)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_feature_dma_logging_range r[257];
	uint64_t ps = 0;

	for (int i = 0; i < 257; i++)
		r[i] = (struct vu_feature_dma_logging_range){ .iova = (uint64_t)i * 2 * PG,
							      .length = PG };
	cr_assert_eq(log_start(sim, t.d, PG, r, 0, NULL), -EINVAL, "no ranges");
	cr_assert_eq(log_start(sim, t.d, PG, r, 257, NULL), -E2BIG);
	cr_assert_eq(log_start(sim, t.d, PG, NULL, 1, NULL), -EFAULT);
	{
		struct vu_feature_dma_logging_range bad[][2] = {
			{ { 0x800, PG }, { 0, 0 } },                 /* iova unaligned */
			{ { 0, PG + 1 }, { 0, 0 } },                 /* length unaligned */
			{ { 0, 0 }, { 0, 0 } },                      /* empty */
			{ { 0, 4 * PG }, { 3 * PG, PG } },           /* overlap */
			{ { 3 * PG, PG }, { 0, 8 * PG } },           /* overlap, either order */
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
			cr_assert_eq(log_start(sim, t.d, PG, bad[i], 2, NULL), -EINVAL, "case %zu",
				     i);
	}
	{
		/* An overflowing range is -EOVERFLOW, unless an earlier one was bad already. */
		struct vu_feature_dma_logging_range o[2] = { { 0, PG },
							     { UINT64_MAX - PG + 1, 2 * PG } };

		cr_assert_eq(log_start(sim, t.d, PG, o, 2, NULL), -EOVERFLOW);
		o[0].iova = 1;
		cr_assert_eq(log_start(sim, t.d, PG, o, 2, NULL), -EINVAL);
	}
	/* The page size: 0 and non-powers of two are refused; small ones are raised to 4 KiB. */
	cr_assert_eq(log_start(sim, t.d, 0, r, 1, NULL), -EINVAL);
	cr_assert_eq(log_start(sim, t.d, 3 * PG, r, 1, NULL), -EINVAL);
	cr_assert_eq(log_start(sim, t.d, 512, r, 256, &ps), 0, "256 ranges are fine");
	cr_assert_eq(ps, PG, "page_size comes back as tracked");
	cr_assert_eq(log_start(sim, t.d, PG, r, 1, NULL), -EINVAL, "started already (mlx5, pds)");
	cr_assert_eq(feature(sim, t.d, SET_STOP, NULL, 0, NULL), 0);
	{
		struct vu_feature_dma_logging_range touch[2] = { { 0x10000, 0x10000 },
								 { 0, 0x10000 } };

		cr_assert_eq(log_start(sim, t.d, 0x10000, touch, 2, &ps), 0, "touching is fine");
		cr_assert_eq(ps, 0x10000);
	}
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(dmalog, report_reads_and_clears_tracked_writes)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_feature_dma_logging_range r[3] = {
		{ 0x100000, 16 * PG }, { 0x110000, 16 * PG }, { 0x200000, 16 * PG },
	};
	uint64_t bm[1] = { 0 };

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 0x200000, RW), 0);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 16 * PG, PG, bm), -EINVAL, "not started");
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), 0);
	cr_assert_eq(log_start(sim, t.d, PG, r, 3, NULL), 0);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 16 * PG, 2048, bm), -EINVAL, "below 4 KiB");
	cr_assert_eq(log_report(sim, t.d, 0x100000, 16 * PG, 3 * PG, bm), -EINVAL);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 0, PG, bm), -EINVAL, "length 0");
	cr_assert_eq(log_report(sim, t.d, UINT64_MAX - PG + 1, 2 * PG, PG, bm), -EOVERFLOW);
	cr_assert_eq(log_report(sim, t.d, 0x120000, PG, PG, bm), -EINVAL, "not tracked");
	cr_assert_eq(log_report(sim, t.d, 0x1ff000, 2 * PG, PG, bm), -EINVAL, "half tracked");
	cr_assert_eq(log_report(sim, t.d, 0x100000, 0x101000, PG, bm), -EINVAL, "across a gap");
	cr_assert_eq(log_report(sim, t.d, 0x100000, 32 * PG, PG, NULL), -EFAULT);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 32 * PG, PG, bm), 0, "touching ranges");
	cr_assert_eq(bm[0], 0, "written before START");
	/* Writes inside tracked ranges are logged; the rest is mapped but untracked. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 2 * PG, PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x110000 - PG, 2 * PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x120000, 16 * PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x400000, PG), -EFAULT, "unmapped");
	bm[0] = 1ull << 40;
	cr_assert_eq(log_report(sim, t.d, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], (1ull << 2) | (3ull << 15) | (1ull << 40), "set, never cleared");
	bm[0] = 0;
	cr_assert_eq(log_report(sim, t.d, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0, "read and cleared");
	/* Only the reported range is cleared. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x200000, PG), 0);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 16 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 1);
	bm[0] = 0;
	cr_assert_eq(log_report(sim, t.d, 0x200000, 16 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 1);
	cr_assert_eq(feature(sim, t.d, SET_STOP, NULL, 0, NULL), 0);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 16 * PG, PG, bm), -EINVAL, "stopped");
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(dmalog, report_converts_between_page_sizes)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_feature_dma_logging_range r = { 0x100000, 0x100000 };
	uint64_t bm[4], ps = 0;

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 0x100000, RW), 0);
	cr_assert_eq(log_start(sim, t.d, PG, &r, 1, &ps), 0);
	cr_assert_eq(ps, PG);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 3 * PG, PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 17 * PG, PG), 0);
	/* Coarser: a 16 KiB bit is set if any 4 KiB page in it was written. */
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(log_report(sim, t.d, 0x100000, 64 * PG, 4 * PG, bm), 0);
	cr_assert_eq(bm[0], (1ull << 0) | (1ull << 4));
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(log_report(sim, t.d, 0x100000, 64 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0, "the coarser report cleared them");
	cr_assert_eq(feature(sim, t.d, SET_STOP, NULL, 0, NULL), 0);

	/* A device tracking 64 KiB pages reports all 16 of a written page's 4 KiB bits. */
	cr_assert_eq(log_start(sim, t.d, 0x10000, &r, 1, &ps), 0);
	cr_assert_eq(ps, 0x10000);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x110000 + 5 * PG, 1), 0);
	memset(bm, 0, sizeof(bm));
	cr_assert_eq(log_report(sim, t.d, 0x100000, 64 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0xffffull << 16);
	cr_assert_eq(bm[1], 0);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(dmalog, a_failed_report_loses_the_log)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_feature_dma_logging_range r = { 0x100000, 64 * PG };
	uint64_t bm[1] = { 0 };

	cr_assert_eq(vfiomig_sim_device_fail_dma_report(dev, 0), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_fail_dma_report(dev, 5), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_fail_dma_report(NULL, -EIO), -EINVAL);
	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 64 * PG, RW), 0);
	cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + PG, PG), 0);
	cr_assert_eq(vfiomig_sim_device_fail_dma_report(dev, -EIO), 0);
	/* A refused request does not use the knob up. */
	cr_assert_eq(log_report(sim, t.d, 0x100000, 0, PG, bm), -EINVAL);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 64 * PG, PG, bm), -EIO);
	cr_assert_eq(bm[0], 0);
	/* Armed once; what was logged before the failure is gone, logging goes on. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 7 * PG, PG), 0);
	cr_assert_eq(log_report(sim, t.d, 0x100000, 64 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 1ull << 7);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

Test(dmalog, closing_the_device_stops_logging)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, LOGGING, 0);
	struct t1 t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	struct vu_feature_dma_logging_range r = { 0x100000, 64 * PG };
	uint64_t bm[1] = { 0 };
	int d2;

	cr_assert_eq(map_dma(sim, t.c, 0, 0x100000, 64 * PG, RW), 0);
	cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), 0);
	/* A second file keeps the device open. */
	d2 = kioctl(sim, t.g, VU_GROUP_GET_DEVICE_FD, (void *)vfiomig_sim_device_name(dev));
	cr_assert_geq(d2, 0);
	kclose(sim, t.d);
	cr_assert_eq(log_report(sim, d2, 0x100000, 64 * PG, PG, bm), 0);
	kclose(sim, d2);
	t.d = kioctl(sim, t.g, VU_GROUP_GET_DEVICE_FD, (void *)vfiomig_sim_device_name(dev));
	cr_assert_eq(log_report(sim, t.d, 0x100000, 64 * PG, PG, bm), -EINVAL);
	cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), 0);
	t1_close(sim, &t);
	finish(sim);
	assert_no_leaks();
}

/* --------------------------------------------------------------- iommufd */

static int bind(struct vfiomig_sim *sim, int dfd, int ifd, uint32_t *devid)
{
	struct vu_device_bind_iommufd b = { .argsz = sizeof(b), .iommufd = ifd };
	int ret = kioctl(sim, dfd, VU_DEVICE_BIND_IOMMUFD, &b);

	*devid = b.out_devid;
	return ret;
}

static int attach(struct vfiomig_sim *sim, int dfd, uint32_t *pt)
{
	struct vu_device_attach_iommufd_pt a = { .argsz = sizeof(a), .pt_id = *pt };
	int ret = kioctl(sim, dfd, VU_DEVICE_ATTACH_IOMMUFD_PT, &a);

	*pt = a.pt_id;
	return ret;
}

static int detach(struct vfiomig_sim *sim, int dfd)
{
	struct {
		uint32_t argsz, flags;
	} d = { 8, 0 };

	return kioctl(sim, dfd, VU_DEVICE_DETACH_IOMMUFD_PT, &d);
}

static uint32_t ioas_new(struct vfiomig_sim *sim, int ifd)
{
	struct vu_iommu_ioas_alloc a = { .size = sizeof(a) };

	cr_assert_eq(kioctl(sim, ifd, VU_IOMMU_IOAS_ALLOC, &a), 0);
	return a.out_ioas_id;
}

static int destroy(struct vfiomig_sim *sim, int ifd, uint32_t id)
{
	struct vu_iommu_destroy x = { .size = sizeof(x), .id = id };

	return kioctl(sim, ifd, VU_IOMMU_DESTROY, &x);
}

static int ioas_map(struct vfiomig_sim *sim, int ifd, uint32_t ioas, uint32_t flags, uint64_t va,
		    uint64_t *iova, uint64_t length)
{
	struct vu_iommu_ioas_map m = { .size = sizeof(m), .flags = flags, .ioas_id = ioas,
				       .user_va = va, .length = length, .iova = *iova };
	int ret = kioctl(sim, ifd, VU_IOMMU_IOAS_MAP, &m);

	*iova = m.iova;
	return ret;
}

#define MAPF (VU_IOMMU_IOAS_MAP_FIXED_IOVA | VU_IOMMU_IOAS_MAP_READABLE | \
	      VU_IOMMU_IOAS_MAP_WRITEABLE)

static int map_fixed(struct vfiomig_sim *sim, int ifd, uint32_t ioas, uint64_t iova,
		     uint64_t length)
{
	return ioas_map(sim, ifd, ioas, MAPF, 0x7f0000000000ull, &iova, length);
}

static int ioas_unmap(struct vfiomig_sim *sim, int ifd, uint32_t ioas, uint64_t iova,
		      uint64_t length, uint64_t *unmapped)
{
	struct vu_iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = iova,
					 .length = length };
	int ret = kioctl(sim, ifd, VU_IOMMU_IOAS_UNMAP, &u);

	if (unmapped)
		*unmapped = u.length;
	return ret;
}

static int hwpt_alloc(struct vfiomig_sim *sim, int ifd, uint32_t dev, uint32_t pt, uint32_t flags,
		      uint32_t *out)
{
	struct vu_iommu_hwpt_alloc a = { .size = sizeof(a), .flags = flags, .dev_id = dev,
					 .pt_id = pt };
	int ret = kioctl(sim, ifd, VU_IOMMU_HWPT_ALLOC, &a);

	*out = a.out_hwpt_id;
	return ret;
}

static int set_dirty(struct vfiomig_sim *sim, int ifd, uint32_t hwpt, uint32_t flags)
{
	struct vu_iommu_hwpt_set_dirty_tracking s = { .size = sizeof(s), .flags = flags,
						      .hwpt_id = hwpt };

	return kioctl(sim, ifd, VU_IOMMU_HWPT_SET_DIRTY_TRACKING, &s);
}

static int get_dirty(struct vfiomig_sim *sim, int ifd, uint32_t hwpt, uint32_t flags,
		     uint64_t iova, uint64_t length, uint64_t page_size, uint64_t *bm)
{
	struct vu_iommu_hwpt_get_dirty_bitmap q = { .size = sizeof(q), .hwpt_id = hwpt,
						    .flags = flags, .iova = iova,
						    .length = length, .page_size = page_size,
						    .data = (uint64_t)(uintptr_t)bm };

	return kioctl(sim, ifd, VU_IOMMU_HWPT_GET_DIRTY_BITMAP, &q);
}

/* A cdev opened and bound to a fresh iommufd. */
struct cdev {
	int ifd, dfd;
	uint32_t devid;
};

static struct cdev cdev_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev, int ifd)
{
	struct cdev x;

	x.ifd = ifd >= 0 ? ifd : kopen(sim, "/dev/iommu");
	cr_assert_geq(x.ifd, 0);
	x.dfd = kopen(sim, vfiomig_sim_device_cdev_path(dev));
	cr_assert_geq(x.dfd, 0);
	cr_assert_eq(bind(sim, x.dfd, x.ifd, &x.devid), 0);
	return x;
}

TestSuite(iommufd, .init = leak_baseline);

Test(iommufd, ioas_map_validates_like_the_kernel)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct cdev x = cdev_open(sim, dev, -1);
	uint32_t ioas = ioas_new(sim, x.ifd), pt;
	uint8_t big[48] = { 0 };
	struct vu_iommu_ioas_map m = { .size = 39, .flags = MAPF, .ioas_id = ioas, .length = PG };
	uint64_t iova;

	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_IOAS_MAP, &m), -EINVAL, "size below 40");
	m.size = sizeof(big);
	memcpy(big, &m, sizeof(m));
	big[44] = 1;
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_IOAS_MAP, big), -E2BIG, "unknown tail");
	big[44] = 0;
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_IOAS_MAP, big), 0, "a zero tail is fine");
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_IOAS_MAP, NULL), -EFAULT);
	iova = 0x100000;
	cr_assert_eq(ioas_map(sim, x.ifd, ioas, MAPF | (1u << 5), 0, &iova, PG), -EOPNOTSUPP);
	m = (struct vu_iommu_ioas_map){ .size = sizeof(m), .flags = MAPF, .ioas_id = ioas,
					.reserved = 1, .length = PG, .iova = 0x100000 };
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_IOAS_MAP, &m), -EOPNOTSUPP, "reserved");
	cr_assert_eq(ioas_map(sim, x.ifd, ioas, VU_IOMMU_IOAS_MAP_FIXED_IOVA, 0, &iova, PG),
		     -EINVAL, "neither readable nor writeable");
	cr_assert_eq(map_fixed(sim, x.ifd, 4242, 0x100000, PG), -ENOENT);
	cr_assert_eq(map_fixed(sim, x.ifd, x.devid, 0x100000, PG), -ENOENT, "not an IOAS");
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, 0), -EINVAL, "length 0");
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, UINT64_MAX, PG), -EOVERFLOW);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, UINT64_MAX), -EOVERFLOW);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, UINT64_MAX - PG + 1, 2 * PG), -EOVERFLOW);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100800, PG), -EINVAL);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, PG + 1), -EINVAL);
	iova = 0x100000;
	cr_assert_eq(ioas_map(sim, x.ifd, ioas, MAPF, 0x10, &iova, PG), -EINVAL, "user_va");
	/* No domain yet: the MSI window is fine. */
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0xfee00000, PG), 0);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, 4 * PG), 0);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x103000, 2 * PG), -EEXIST);
	/* The device's reserved region now cuts a mapping: attach refuses. */
	pt = ioas;
	cr_assert_eq(attach(sim, x.dfd, &pt), -EADDRINUSE);
	cr_assert_eq(ioas_unmap(sim, x.ifd, ioas, 0xfee00000, PG, NULL), 0);
	cr_assert_eq(attach(sim, x.dfd, &pt), 0);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0xfee00000, PG), -EINVAL, "reserved now");
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 1ull << 48, PG), -EINVAL, "past the aperture");
	/* Without FIXED_IOVA the kernel picks: lowest free, from 4 KiB, aligned. */
	iova = 0;
	cr_assert_eq(ioas_map(sim, x.ifd, ioas, MAPF & ~VU_IOMMU_IOAS_MAP_FIXED_IOVA, 0, &iova,
			      PG), 0);
	cr_assert_eq(iova, PG);
	cr_assert_eq(ioas_map(sim, x.ifd, ioas, MAPF & ~VU_IOMMU_IOAS_MAP_FIXED_IOVA, 0, &iova,
			      0x40000), 0);
	cr_assert_eq(iova, 0x40000, "aligned to its power-of-two length");
	cr_assert_eq(ioas_map(sim, x.ifd, ioas, MAPF & ~VU_IOMMU_IOAS_MAP_FIXED_IOVA, 0, &iova,
			      0x100000), 0);
	cr_assert_eq(iova, 0x200000, "skips the mapping at 0x100000");
	kclose(sim, x.dfd);
	kclose(sim, x.ifd);
	finish(sim);
	assert_no_leaks();
}

Test(iommufd, ioas_unmap_whole_areas)
{
	struct vfiomig_sim *sim = sim_make(0);
	int ifd = kopen(sim, "/dev/iommu");
	uint32_t ioas = ioas_new(sim, ifd);
	uint64_t n = 0;

	cr_assert_eq(ioas_unmap(sim, ifd, ioas, 0, UINT64_MAX, &n), 0, "all of nothing");
	cr_assert_eq(n, 0);
	cr_assert_eq(ioas_unmap(sim, ifd, ioas, 0x100000, PG, NULL), -ENOENT, "nothing there");
	cr_assert_eq(map_fixed(sim, ifd, ioas, 0x100000, 4 * PG), 0);
	cr_assert_eq(map_fixed(sim, ifd, ioas, 0x200000, 4 * PG), 0);
	cr_assert_eq(ioas_unmap(sim, ifd, 4242, 0x100000, PG, NULL), -ENOENT);
	cr_assert_eq(ioas_unmap(sim, ifd, ioas, 0x100000, 0, NULL), -EINVAL);
	cr_assert_eq(ioas_unmap(sim, ifd, ioas, 0x100000, PG, NULL), -ENOENT, "cuts an area");
	cr_assert_eq(ioas_unmap(sim, ifd, ioas, UINT64_MAX, PG, NULL), -EOVERFLOW);
	cr_assert_eq(ioas_unmap(sim, ifd, ioas, 0, 0x300000, &n), 0);
	cr_assert_eq(n, 8 * PG);
	cr_assert_eq(map_fixed(sim, ifd, ioas, 0x100000, 4 * PG), 0);
	cr_assert_eq(ioas_unmap(sim, ifd, ioas, 0, UINT64_MAX, &n), 0);
	cr_assert_eq(n, 4 * PG);
	kclose(sim, ifd);
	finish(sim);
	assert_no_leaks();
}

Test(iommufd, hw_info_reports_dirty_tracking)
{
	struct vfiomig_sim *sims[2] = { sim_make(0), sim_make(VFIOMIG_SIM_F_IOMMUFD_DIRTY) };

	for (int k = 0; k < 2; k++) {
		struct vfiomig_sim *sim = sims[k];
		struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
		struct vfiomig_sim_device *mdev = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
		struct cdev x = cdev_open(sim, dev, -1), y = cdev_open(sim, mdev, x.ifd);
		uint8_t data[16];
		struct vu_iommu_hw_info h = { .size = 31, .dev_id = x.devid };

		cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_GET_HW_INFO, &h), -EINVAL);
		h = (struct vu_iommu_hw_info){ .size = sizeof(h), .flags = 1, .dev_id = x.devid };
		cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_GET_HW_INFO, &h), -EOPNOTSUPP);
		h = (struct vu_iommu_hw_info){ .size = sizeof(h), .dev_id = 4242 };
		cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_GET_HW_INFO, &h), -ENOENT);
		/* An mdev binds as an access object: not a device to the IOMMU. */
		h = (struct vu_iommu_hw_info){ .size = sizeof(h), .dev_id = y.devid };
		cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_GET_HW_INFO, &h), -ENOENT);
		memset(data, 0xa5, sizeof(data));
		h = (struct vu_iommu_hw_info){ .size = sizeof(h), .dev_id = x.devid,
					       .data_len = sizeof(data),
					       .data_uptr = (uint64_t)(uintptr_t)data,
					       .out_capabilities = 0xf0 };
		cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_GET_HW_INFO, &h), 0);
		cr_assert_eq(h.out_capabilities, k ? VU_IOMMU_HW_CAP_DIRTY_TRACKING : 0);
		cr_assert_eq(h.data_len, 0);
		cr_assert_eq(h.out_data_type, 0);
		for (size_t i = 0; i < sizeof(data); i++)
			cr_assert_eq(data[i], 0, "the unused buffer is zeroed");
		/* An older caller's 32 bytes: no out_capabilities written. */
		h = (struct vu_iommu_hw_info){ .size = 32, .dev_id = x.devid,
					       .out_capabilities = 0xf0 };
		cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_GET_HW_INFO, &h), 0);
		cr_assert_eq(h.out_capabilities, 0xf0);
		kclose(sim, y.dfd);
		kclose(sim, x.dfd);
		kclose(sim, x.ifd);
		finish(sim);
	}
	assert_no_leaks();
}

Test(iommufd, hwpt_alloc_validates_and_shares_the_id_space)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct cdev x = cdev_open(sim, dev, -1);
	uint32_t ioas = ioas_new(sim, x.ifd), h1 = 0, h2 = 0, h3 = 0;
	struct vu_iommu_hwpt_alloc a = { .size = 23, .dev_id = x.devid, .pt_id = ioas };
	const uint32_t D = VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING;

	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_HWPT_ALLOC, &a), -EINVAL, "size below 24");
	a.size = 24;
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_HWPT_ALLOC, &a), 0, "a 24-byte caller");
	h1 = a.out_hwpt_id;
	a = (struct vu_iommu_hwpt_alloc){ .size = sizeof(a), .dev_id = x.devid, .pt_id = ioas,
					  .reserved = 1 };
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_HWPT_ALLOC, &a), -EOPNOTSUPP);
	a = (struct vu_iommu_hwpt_alloc){ .size = sizeof(a), .dev_id = x.devid, .pt_id = ioas,
					  .data_len = 8 };
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_HWPT_ALLOC, &a), -EINVAL, "data without type");
	a = (struct vu_iommu_hwpt_alloc){ .size = sizeof(a), .dev_id = x.devid, .pt_id = ioas,
					  .data_type = 1 };
	cr_assert_eq(kioctl(sim, x.ifd, VU_IOMMU_HWPT_ALLOC, &a), -EINVAL, "type without data");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, ioas, ioas, 0, &h2), -ENOENT, "not a device");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, 4242, 0, &h2), -EINVAL, "no such pt");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, x.devid, 0, &h2), -EINVAL, "pt a device");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, h1, 0, &h2), -EOPNOTSUPP, "nested");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, 1u << 0, &h2), -EOPNOTSUPP,
		     "NEST_PARENT");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, 1u << 9, &h2), -EOPNOTSUPP);
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, D, &h2), -EOPNOTSUPP,
		     "the IOMMU has no dirty tracking");
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, 0, &h3), 0);
	/* One id space: device, IOAS, HWPTs all different. */
	cr_assert_neq(h1, h3);
	cr_assert_neq(h1, ioas);
	cr_assert_neq(h1, x.devid);
	cr_assert_neq(h3, ioas);
	/* A HWPT holds its IOAS. */
	cr_assert_eq(destroy(sim, x.ifd, ioas), -EBUSY);
	cr_assert_eq(destroy(sim, x.ifd, h1), 0);
	cr_assert_eq(destroy(sim, x.ifd, h3), 0);
	cr_assert_eq(destroy(sim, x.ifd, h3), -ENOENT);
	cr_assert_eq(destroy(sim, x.ifd, ioas), 0);
	kclose(sim, x.dfd);
	kclose(sim, x.ifd);
	finish(sim);
	assert_no_leaks();
}

Test(iommufd, attach_to_an_ioas_makes_an_automatic_hwpt)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *d1 = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct vfiomig_sim_device *d2 = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct vfiomig_sim_device *md = dev_make(sim, VFIOMIG_DEVKIND_MDEV, 0, 0);
	struct cdev x = cdev_open(sim, d1, -1), y = cdev_open(sim, d2, x.ifd);
	struct cdev z = cdev_open(sim, md, x.ifd);
	uint32_t ioas = ioas_new(sim, x.ifd), p1 = ioas, p2 = ioas, p3, user;

	cr_assert_eq(vfiomig_sim_device_dma_write(d1, 0x100000, PG), -ENODEV, "not attached");
	cr_assert_eq(attach(sim, x.dfd, &p1), 0);
	cr_assert_neq(p1, ioas, "pt_id comes back as the automatic HWPT");
	cr_assert_eq(attach(sim, y.dfd, &p2), 0);
	cr_assert_eq(p2, p1, "shared by devices on the same IOAS");
	cr_assert_eq(destroy(sim, x.ifd, p1), -EBUSY);
	cr_assert_eq(destroy(sim, x.ifd, ioas), -EBUSY);
	/* DMA goes through the IOAS's mappings. */
	cr_assert_eq(vfiomig_sim_device_dma_write(d1, 0x100000, PG), -EFAULT);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, 4 * PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(d1, 0x100000, PG), 0);
	/* The mdev's access attaches to the IOAS itself, and can pin there. */
	p3 = p1;
	cr_assert_eq(attach(sim, z.dfd, &p3), -ENOENT, "an access takes no HWPT");
	p3 = ioas;
	cr_assert_eq(attach(sim, z.dfd, &p3), 0);
	cr_assert_eq(p3, ioas);
	cr_assert_eq(vfiomig_sim_device_pin(md, 0x100000, PG), 0);
	cr_assert_eq(vfiomig_sim_device_pin(md, 0x200000, PG), -EFAULT);
	/*
	 * Moving to a user HWPT: pt_id comes back unchanged; the automatic
	 * one goes with its last device.
	 */
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, 0, &user), 0);
	p1 = user;
	cr_assert_eq(attach(sim, x.dfd, &p1), 0);
	cr_assert_eq(p1, user);
	cr_assert_eq(detach(sim, y.dfd), 0);
	cr_assert_eq(destroy(sim, x.ifd, p2), -ENOENT, "the automatic HWPT is gone");
	cr_assert_eq(destroy(sim, x.ifd, user), -EBUSY);
	cr_assert_eq(detach(sim, x.dfd), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(d1, 0x100000, PG), -ENODEV);
	cr_assert_eq(destroy(sim, x.ifd, user), 0);
	cr_assert_eq(destroy(sim, x.ifd, ioas), -EBUSY, "the access holds it");
	cr_assert_eq(detach(sim, z.dfd), 0);
	cr_assert_eq(destroy(sim, x.ifd, ioas), 0);
	kclose(sim, z.dfd);
	kclose(sim, y.dfd);
	kclose(sim, x.dfd);
	kclose(sim, x.ifd);
	finish(sim);
	assert_no_leaks();
}

Test(iommufd, hwpt_dirty_tracking_reads_and_clears)
{
	struct vfiomig_sim *sim = sim_make(VFIOMIG_SIM_F_IOMMUFD_DIRTY);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct cdev x = cdev_open(sim, dev, -1);
	uint32_t ioas = ioas_new(sim, x.ifd), hw, plain, pt;
	const uint32_t NC = VU_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR;
	uint64_t bm[2] = { 0 };

	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING, &hw),
		     0);
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, 0, &plain), 0);
	pt = hw;
	cr_assert_eq(attach(sim, x.dfd, &pt), 0);
	cr_assert_eq(pt, hw);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, 32 * PG), 0);
	/* Set: unknown flags, not a HWPT, a HWPT without dirty tracking. */
	cr_assert_eq(set_dirty(sim, x.ifd, hw, 1u << 4), -EOPNOTSUPP);
	cr_assert_eq(set_dirty(sim, x.ifd, ioas, 1), -ENOENT);
	cr_assert_eq(set_dirty(sim, x.ifd, plain, 1), -EOPNOTSUPP);
	/* Before it is enabled nothing is recorded, and the read works. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000, PG), 0);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0);
	cr_assert_eq(set_dirty(sim, x.ifd, hw, VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 3 * PG, 2 * PG), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 31 * PG, 1), 0);
	/* Get: flags, reserved, id, alignment, page size, capability. */
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 1u << 3, 0x100000, 32 * PG, PG, bm), -EOPNOTSUPP);
	cr_assert_eq(get_dirty(sim, x.ifd, ioas, 0, 0x100000, 32 * PG, PG, bm), -ENOENT);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100800, 32 * PG, PG, bm), -EINVAL);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG + 8, PG, bm), -EINVAL);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, 0, bm), -EINVAL);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, 3 * PG, bm), -EINVAL);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x101000, 32 * PG, 2 * PG, bm), -EINVAL,
		     "iova not aligned to page_size");
	/* Length 0: last = iova - 1 wraps unless iova is 0. */
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 0, PG, bm), -EOVERFLOW);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0, 0, PG, bm), -EINVAL);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, UINT64_MAX - PG + 1, 2 * PG, PG, bm),
		     -EOVERFLOW);
	cr_assert_eq(get_dirty(sim, x.ifd, plain, 0, 0x100000, 32 * PG, PG, bm), -EOPNOTSUPP);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, PG, NULL), -EFAULT);
	/* NO_CLEAR reads and keeps; a plain read clears. Bits are only ever set. */
	bm[0] = 1ull << 20;
	cr_assert_eq(get_dirty(sim, x.ifd, hw, NC, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], (3ull << 3) | (1ull << 20) | (1ull << 31));
	bm[0] = 0;
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, 4 * PG, bm), 0);
	cr_assert_eq(bm[0], 0x3ull | (1ull << 7), "16 KiB bits");
	bm[0] = 0;
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0, "cleared");
	/* A finer bitmap than the IOMMU page: every bit of the page is set. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + PG, PG), 0);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, 1024, bm), 0);
	cr_assert_eq(bm[0], 0xfull << 4);
	/* Enabling starts clean; disabling stops recording; unmapping drops the bits. */
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 9 * PG, PG), 0);
	cr_assert_eq(set_dirty(sim, x.ifd, hw, VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE), 0);
	cr_assert_eq(set_dirty(sim, x.ifd, hw, 0), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 10 * PG, PG), 0);
	bm[0] = 0;
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0);
	cr_assert_eq(set_dirty(sim, x.ifd, hw, VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE), 0);
	cr_assert_eq(vfiomig_sim_device_dma_write(dev, 0x100000 + 11 * PG, PG), 0);
	cr_assert_eq(ioas_unmap(sim, x.ifd, ioas, 0x100000, 32 * PG, NULL), 0);
	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 0x100000, 32 * PG), 0);
	cr_assert_eq(get_dirty(sim, x.ifd, hw, 0, 0x100000, 32 * PG, PG, bm), 0);
	cr_assert_eq(bm[0], 0);
	/* A HWPT in use cannot go. */
	cr_assert_eq(destroy(sim, x.ifd, hw), -EBUSY);
	kclose(sim, x.dfd);
	cr_assert_eq(destroy(sim, x.ifd, hw), 0);
	kclose(sim, x.ifd);
	finish(sim);
	assert_no_leaks();
}

Test(iommufd, dirty_hwpt_alloc_refuses_a_cut_mapping)
{
	struct vfiomig_sim *sim = sim_make(VFIOMIG_SIM_F_IOMMUFD_DIRTY);
	struct vfiomig_sim_device *dev = dev_make(sim, VFIOMIG_DEVKIND_PCI, 0, 0);
	struct cdev x = cdev_open(sim, dev, -1);
	uint32_t ioas = ioas_new(sim, x.ifd), hw;

	cr_assert_eq(map_fixed(sim, x.ifd, ioas, 1ull << 48, PG), 0);
	cr_assert_eq(hwpt_alloc(sim, x.ifd, x.devid, ioas, VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING, &hw),
		     -EADDRINUSE, "past the domain's aperture");
	kclose(sim, x.dfd);
	kclose(sim, x.ifd);
	finish(sim);
	assert_no_leaks();
}

/* ----------------------------------------------------------- spec, flags */

TestSuite(spec, .init = leak_baseline);

Test(spec, dmalog_key)
{
	struct vfiomig_sim *sim = sim_make(0);
	struct vfiomig_sim_device *dev = NULL;
	struct t1 t;
	struct vu_feature_dma_logging_range r = { 0, PG };

	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci,dmalog=1,mig=v2", &dev), 0);
	t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), 0);
	t1_close(sim, &t);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci,dmalog=0", &dev), 0);
	t = t1_open(sim, dev, VU_TYPE1v2_IOMMU);
	cr_assert_eq(log_start(sim, t.d, PG, &r, 1, NULL), -ENOTTY);
	t1_close(sim, &t);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci,dmalog=2", &dev), -EINVAL);
	cr_assert(strstr(sim_last_error(sim), "dmalog"), "%s", sim_last_error(sim));
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, "sim:pci,dmalog=1,dmalog=1", &dev),
		     -EINVAL);
	finish(sim);
	assert_no_leaks();
}

Test(spec, new_flags_are_known)
{
	VFIOMIG_OPTS(sim_opts, o, .flags = VFIOMIG_SIM_F_IOMMUFD_DIRTY | (1u << 3));
	struct vfiomig_sim *sim = NULL;

	cr_assert_eq(vfiomig_sim_new(&o, &sim), -EINVAL);
	o.flags = VFIOMIG_SIM_F_IOMMUFD_DIRTY;
	cr_assert_eq(vfiomig_sim_new(&o, &sim), 0);
	dev_make(sim, VFIOMIG_DEVKIND_MDEV, VFIOMIG_SIM_DEV_DMA_LOGGING, 0);
	finish(sim);
	assert_no_leaks();
}
