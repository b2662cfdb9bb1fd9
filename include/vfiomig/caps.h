/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: bounds-checked parser for VFIO capability chains.
 *
 * VFIO's GET_INFO ioctls (IOMMU info, region info, device info) append a
 * chain of capabilities to their fixed header: each starts with
 * {u16 id; u16 version; u32 next}, where `next` is an offset from the
 * start of the info buffer and 0 ends the chain. The meaning of an id
 * depends on which info struct the chain hangs off, so every call names
 * the kind of buffer.
 *
 * Every function here treats the buffer as untrusted: it never reads
 * outside [buf, buf + len), and refuses a malformed chain with -EINVAL
 * and one log line (through ctx; ctx may be NULL for silence): a chain
 * offset inside the fixed header or past the end, a header or payload
 * crossing the end, `next` not moving forward (which also rules out
 * loops), a payload shorter than its id and version require, or an
 * absurd element count. Capabilities are found by id, never by position.
 */
#ifndef VFIOMIG_CAPS_H
#define VFIOMIG_CAPS_H

#include <vfiomig/common.h>
#include <vfiomig/ctx.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which info struct a buffer holds (selects the header layout and id meanings). */
#define VFIOMIG_INFO_IOMMU_TYPE1 1 /* struct vfio_iommu_type1_info (VFIO_IOMMU_GET_INFO) */
#define VFIOMIG_INFO_REGION      2 /* struct vfio_region_info (VFIO_DEVICE_GET_REGION_INFO) */
#define VFIOMIG_INFO_DEVICE      3 /* struct vfio_device_info (VFIO_DEVICE_GET_INFO) */

/* Capability ids (kernel values), per kind. */
#define VFIOMIG_CAP_IOMMU_IOVA_RANGE     1
#define VFIOMIG_CAP_IOMMU_MIGRATION      2
#define VFIOMIG_CAP_IOMMU_DMA_AVAIL      3
#define VFIOMIG_CAP_REGION_SPARSE_MMAP   1
#define VFIOMIG_CAP_REGION_TYPE          2
#define VFIOMIG_CAP_REGION_MSIX_MAPPABLE 3

/* Upper bound on capabilities in one chain; more is refused as absurd. */
#define VFIOMIG_CAPS_MAX 256

/* One capability as found in a buffer. */
struct vfiomig_cap {
	uint16_t id;
	uint16_t version;
	uint32_t offset; /* of its header, from the start of the buffer */
	uint32_t len;    /* header + payload: up to `next`, or to the end of the info */
	uint32_t next;   /* the raw `next` field (0: last) */
};

/*
 * Iterate: vfiomig_caps_first() reads the fixed header of a `kind`
 * buffer (argsz, flags, cap_offset) and returns its first capability;
 * vfiomig_caps_next() moves `cap` to the following one. Both return 0
 * with *cap filled, -ENOENT at the end of the chain (or when the info
 * has no chain), or -EINVAL for a malformed buffer. The info's argsz is
 * honoured as the end of the data when it is within len; argsz larger
 * than len (a truncated info: the caller must grow and call again)
 * gives -ENOSPC.
 */
VFIOMIG_API int vfiomig_caps_first(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf,
				   size_t len, struct vfiomig_cap *cap);
VFIOMIG_API int vfiomig_caps_next(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf,
				  size_t len, struct vfiomig_cap *cap);

/* Find the first capability with `id`: 0, -ENOENT, -EINVAL or -ENOSPC. */
VFIOMIG_API int vfiomig_caps_find(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf,
				  size_t len, uint16_t id, struct vfiomig_cap *cap);

/*
 * Walk the whole chain and check every capability the library knows for
 * `kind` (payload sizes, counts). Returns the number of capabilities, or
 * -EINVAL / -ENOSPC. This is the fuzzing entry point: it must be safe on
 * any input bytes.
 */
VFIOMIG_API int vfiomig_caps_validate(struct vfiomig_ctx *ctx, uint32_t kind, const void *buf,
				      size_t len);

/*
 * ---- typed accessors ----
 * Each returns 0, -ENOENT (no such cap), -EINVAL (malformed), or -ENOSPC
 * (truncated buffer: grow it and ask the kernel again). On failure the
 * outputs are zeroed.
 */

struct vfiomig_iova_range {
	uint64_t start;
	uint64_t end; /* inclusive */
};

/*
 * IOVA ranges of a VFIOMIG_INFO_IOMMU_TYPE1 buffer. Copies at most `max`
 * ranges into `ranges` (may be NULL when max is 0) and stores the total
 * number in *nr, so a caller may ask for the count first.
 */
VFIOMIG_API int vfiomig_cap_iova_ranges(struct vfiomig_ctx *ctx, const void *buf, size_t len,
					struct vfiomig_iova_range *ranges, uint32_t max,
					uint32_t *nr);

/* The type1 migration capability (dirty-page tracking support). */
struct vfiomig_iommu_migration {
	uint32_t flags;
	uint32_t reserved;
	uint64_t pgsize_bitmap;         /* dirty page sizes supported */
	uint64_t max_dirty_bitmap_size; /* bytes of bitmap per GET_BITMAP query */
};
VFIOMIG_API int vfiomig_cap_iommu_migration(struct vfiomig_ctx *ctx, const void *buf, size_t len,
					    struct vfiomig_iommu_migration *mig);

/* Number of DMA mappings still available in the type1 container. */
VFIOMIG_API int vfiomig_cap_dma_avail(struct vfiomig_ctx *ctx, const void *buf, size_t len,
				      uint32_t *avail);

struct vfiomig_sparse_area {
	uint64_t offset; /* from the start of the region */
	uint64_t size;
};

/* Sparse-mmap areas of a VFIOMIG_INFO_REGION buffer (same max/nr rules as above). */
VFIOMIG_API int vfiomig_cap_sparse_mmap(struct vfiomig_ctx *ctx, const void *buf, size_t len,
					struct vfiomig_sparse_area *areas, uint32_t max,
					uint32_t *nr);

/* Region type / subtype of a VFIOMIG_INFO_REGION buffer. */
VFIOMIG_API int vfiomig_cap_region_type(struct vfiomig_ctx *ctx, const void *buf, size_t len,
					uint32_t *type, uint32_t *subtype);

/* 1 if the region buffer carries MSIX_MAPPABLE, 0 if not, or -EINVAL / -ENOSPC. */
VFIOMIG_API int vfiomig_cap_msix_mappable(struct vfiomig_ctx *ctx, const void *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
