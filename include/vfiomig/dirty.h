/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: dirty-page tracking of device DMA, and bitmap helpers.
 *
 * During pre-copy a VMM re-sends guest pages that changed; pages a
 * passed-through device wrote by DMA change without the CPU knowing, so
 * they must be reported by the kernel or they are lost. Three kernel
 * mechanisms exist; this API puts one face on them:
 *
 *  - VFIOMIG_DIRTY_MECH_TYPE1: the type1 container (VFIO_IOMMU_DIRTY_PAGES).
 *    COARSE for IOMMU-backed groups: a group that never pinned pages
 *    (every vfio-pci device) reports EVERY mapped page dirty on every
 *    query. Precise only for emulated (mdev) groups, which report the
 *    pages they pinned or wrote. iommufd's type1 compatibility container
 *    answers -ENOTTY.
 *  - VFIOMIG_DIRTY_MECH_DEVICE: the device's own DMA logging
 *    (VFIO_DEVICE_FEATURE_DMA_LOGGING_*): precise, at most 256 tracked
 *    ranges (the library coalesces the VMM's mappings into fewer covering
 *    ranges), reports read-and-clear. Any error loses the log: the query
 *    then reports every page dirty, never a silently clean bitmap.
 *  - VFIOMIG_DIRTY_MECH_IOMMUFD: the IOMMU's dirty bits through iommufd
 *    (IOMMU_HWPT_SET_DIRTY_TRACKING / IOMMU_HWPT_GET_DIRTY_BITMAP) for
 *    devices opened through the cdev path onto a dirty-tracking HWPT.
 *
 * Bitmaps are arrays of uint64_t, bit i of word w covering page
 * (w * 64 + i) of the queried range, as the kernel lays them out.
 */
#ifndef VFIOMIG_DIRTY_H
#define VFIOMIG_DIRTY_H

#include <vfiomig/common.h>
#include <vfiomig/device.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfiomig_dirty;

/* Mechanisms */
#define VFIOMIG_DIRTY_MECH_AUTO    0 /* the best the device and kernel offer */
#define VFIOMIG_DIRTY_MECH_TYPE1   1
#define VFIOMIG_DIRTY_MECH_DEVICE  2
#define VFIOMIG_DIRTY_MECH_IOMMUFD 3
#define VFIOMIG_DIRTY_MECH_NR      4
#define VFIOMIG_DIRTY_MECH_BIT(mech) (1u << (mech))

/* Filled by vfiomig_dirty_probe(); set sz first. */
struct vfiomig_dirty_info {
	size_t sz;
	/* VFIOMIG_DIRTY_MECH_BIT(mechanism) per usable mechanism */
	uint32_t available;
	/* what AUTO picks (DEVICE > IOMMUFD > TYPE1), VFIOMIG_DIRTY_MECH_AUTO (0) if none */
	uint32_t best;
	uint64_t type1_pgsize;   /* smallest page of the migration capability's pgsize_bitmap */
	uint64_t type1_max_bitmap; /* max_dirty_bitmap_size: bitmap bytes per kernel query */
	uint32_t type1_coarse;   /* 1: type1 reports every mapped page dirty (IOMMU-backed group) */
	uint32_t reserved;
	/* Why each mechanism is unavailable ("" if available), indexed by mechanism. */
	char why_not[VFIOMIG_DIRTY_MECH_NR][160];
};

/* Which mechanisms this device can use, the automatic choice, and why not the others. */
VFIOMIG_API int vfiomig_dirty_probe(struct vfiomig_device *dev, struct vfiomig_dirty_info *p);

/* An IOVA range the VMM has mapped for DMA. */
struct vfiomig_dma_range {
	uint64_t iova;
	uint64_t length;
};

struct vfiomig_dirty_opts {
	size_t sz;
	/*
	 * DEVICE (required there): the IOVA ranges to log, i.e. the VMM's
	 * DMA mappings; any order, may touch but not overlap. Copied.
	 */
	const struct vfiomig_dma_range *ranges;
	/* DEVICE / IOMMUFD: tracking page size (power of two); 0: 4096. */
	uint64_t page_size;
	/*
	 * IOVA bytes one kernel query must be able to cover: queries are cut
	 * into pieces of this size, and type1 refuses a piece that splits a
	 * DMA mapping, so set it to at least the largest mapping. It sizes the
	 * one scratch bitmap allocated at start (1 bit per page). 0: 32 GiB
	 * (a 1 MiB bitmap at 4 KiB pages); type1 caps it at what
	 * max_dirty_bitmap_size covers.
	 */
	uint64_t max_query;
	uint32_t mechanism;  /* VFIOMIG_DIRTY_MECH_*; default AUTO */
	/*
	 * DEVICE: coalesce the ranges into at most this many. Default 256, the
	 * kernel's limit (PAGE_SIZE / 16) on 4 KiB-page hosts; a 64 KiB-page
	 * kernel takes 4096. More than the kernel's limit is refused by it (-E2BIG).
	 */
	uint32_t max_ranges;
	uint32_t nr_ranges;  /* entries in `ranges` */
	uint32_t flags;      /* VFIOMIG_DIRTY_F_* */
};

/*
 * vfiomig_dirty_opts.flags: queries leave the dirty bits in place (IOMMUFD
 * only: IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR), so the VMM can look again
 * before it clears them with a normal query; -EOPNOTSUPP elsewhere.
 */
#define VFIOMIG_DIRTY_F_NO_CLEAR (1u << 0)

/*
 * Start tracking. Returns 0 and *out, -EOPNOTSUPP when the requested (or
 * any, for AUTO) mechanism is unavailable — the log says why — or the
 * kernel's -errno. Free with vfiomig_dirty_free() (stops tracking).
 */
VFIOMIG_API int vfiomig_dirty_start(struct vfiomig_device *dev,
				    const struct vfiomig_dirty_opts *opts,
				    struct vfiomig_dirty **out);

/* Stop tracking (the object stays valid for its accessors); 0 or -errno. */
VFIOMIG_API int vfiomig_dirty_stop(struct vfiomig_dirty *d);

/*
 * Stop if still tracking and free; drops the session's reference on its
 * device. NULL is accepted.
 */
VFIOMIG_API void vfiomig_dirty_free(struct vfiomig_dirty *d);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_dirty, vfiomig_dirty_free)

VFIOMIG_API uint32_t vfiomig_dirty_mechanism(const struct vfiomig_dirty *d);
/* The granularity the mechanism tracks at. */
VFIOMIG_API uint64_t vfiomig_dirty_page_size(const struct vfiomig_dirty *d);

/* vfiomig_dirty_query() results */
#define VFIOMIG_DIRTY_RESULT_EXACT 0 /* the bits are what the kernel reported, precisely */
/*
 * The report is not precise: after a lost log every page of the range
 * was set; with coarse type1 tracking the kernel set every mapped page.
 */
#define VFIOMIG_DIRTY_RESULT_ALL   1

/*
 * Dirty pages of [iova, iova + length) since the last query (or the
 * start), OR-ed into `bitmap` at the caller's page size `pgsize` (a power
 * of two: smaller or larger than the mechanism's page, the library
 * converts). The bitmap must hold DIV_ROUND_UP(length / pgsize, 64)
 * words in `bitmap_bytes`; bits are only ever set, never cleared (clear
 * with vfiomig_bitmap_clear() between rounds). iova and length must be
 * multiples of pgsize and of the mechanism's page. Large ranges are split
 * into queries of vfiomig_dirty_opts.max_query bytes internally; no memory
 * is allocated per query.
 * Returns VFIOMIG_DIRTY_RESULT_EXACT, VFIOMIG_DIRTY_RESULT_ALL, or -errno (-EINVAL bad
 * arguments, -ENOSPC bitmap too small).
 */
VFIOMIG_API int vfiomig_dirty_query(struct vfiomig_dirty *d, uint64_t iova, uint64_t length,
				    uint64_t pgsize, uint64_t *bitmap, size_t bitmap_bytes);

/*
 * The same, but calls fn(user, iova, length) once per run of dirty pages
 * (in the mechanism's page size) instead of filling a bitmap. A non-zero
 * return from fn stops and is returned. Returns as vfiomig_dirty_query().
 */
typedef int (*vfiomig_dirty_run_fn)(void *user, uint64_t iova, uint64_t length);
VFIOMIG_API int vfiomig_dirty_query_runs(struct vfiomig_dirty *d, uint64_t iova, uint64_t length,
					 vfiomig_dirty_run_fn fn, void *user);

/* ------------------------------------------------ type1 DMA mappings */

/* vfiomig_dma_map() flags */
#define VFIOMIG_DMA_READ  (1u << 0)
#define VFIOMIG_DMA_WRITE (1u << 1)

/* VFIO_IOMMU_MAP_DMA on the device's type1 container. */
VFIOMIG_API int vfiomig_dma_map(struct vfiomig_device *dev, void *vaddr, uint64_t iova,
				uint64_t length, uint32_t flags);

/*
 * VFIO_IOMMU_UNMAP_DMA. With a bitmap (pgsize = the type1 dirty page
 * size), a mapping removed while tracking is on hands over its dirty bits
 * (VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP) so they are not lost; the bitmap
 * must be zeroed. bitmap NULL: a plain unmap. Returns the bytes unmapped
 * or -errno.
 */
VFIOMIG_API int64_t vfiomig_dma_unmap(struct vfiomig_device *dev, uint64_t iova, uint64_t length,
				      uint64_t pgsize, uint64_t *bitmap, size_t bitmap_bytes);

/* ---------------------------------------------------- bitmap helpers */

/*
 * Fast helpers over uint64_t bitmaps of `nbits` bits (bits past nbits in
 * the last word are ignored and never written). They work a word at a
 * time (popcount / count-trailing-zeros / shifts and masks, AVX2 where the
 * CPU has it), so scanning a 1 TiB guest's 4 KiB-page bitmap (32 MiB) is
 * bounded by memory bandwidth. None allocates; NULL bitmaps are no-ops
 * (count: 0). The caller owns every bitmap; the library keeps no pointer.
 */
VFIOMIG_API uint64_t vfiomig_bitmap_count(const uint64_t *bm, uint64_t nbits);
VFIOMIG_API void vfiomig_bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t nbits);
VFIOMIG_API void vfiomig_bitmap_clear(uint64_t *bm, uint64_t nbits);
VFIOMIG_API void vfiomig_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t count);

/*
 * Calls fn(user, first_bit, count) once per maximal run of set bits below
 * nbits, in increasing order (a run crossing words is one call; count >=
 * 1). A non-zero return from fn stops the walk and is returned; otherwise
 * 0. -EINVAL when bm or fn is NULL. The walk costs a compare per word of
 * gap or of run, plus the calls: with millions of runs, the calls dominate.
 */
typedef int (*vfiomig_bitmap_run_fn)(void *user, uint64_t first, uint64_t count);
VFIOMIG_API int vfiomig_bitmap_for_each_run(const uint64_t *bm, uint64_t nbits,
					    vfiomig_bitmap_run_fn fn, void *user);

/*
 * OR a bitmap of `src_bits` pages of src_pgsize into one at dst_pgsize
 * covering the same bytes (both powers of two, any ratio). A coarser
 * destination (ratio r = dst_pgsize / src_pgsize) sets bit j if any of
 * source bits j*r .. j*r+r-1 below src_bits is set, and holds
 * DIV_ROUND_UP(src_bits, r) bits; a finer one (r = src_pgsize /
 * dst_pgsize) sets bits i*r .. i*r+r-1 for each set source bit i, and holds
 * src_bits * r bits; equal sizes are vfiomig_bitmap_or(). dst must hold
 * that many bits (rounded up to whole words). Bits are only set, never
 * cleared; bits past src_bits are never read as set and bits past the
 * destination's count are never written. Returns 0, or -EINVAL when src
 * or dst is NULL, a size is not a power of two, or src_bits * src_pgsize
 * does not fit in 64 bits.
 */
VFIOMIG_API int vfiomig_bitmap_convert(const uint64_t *src, uint64_t src_bits, uint64_t src_pgsize,
				       uint64_t *dst, uint64_t dst_pgsize);

#ifdef __cplusplus
}
#endif
#endif
