/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: device regions (BARs, config space, device-specific
 * regions such as the v1 migration region).
 *
 * A region's file offset is the `offset` the kernel reports in its region
 * info; the library never assumes index << 40. Region info is read once
 * per device and cached (it does not change while the fd is open).
 * All offsets below are relative to the start of the region and are
 * checked against its size.
 */
#ifndef VFIOMIG_REGION_H
#define VFIOMIG_REGION_H

#include <vfiomig/common.h>
#include <vfiomig/device.h>
#include <vfiomig/caps.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Region flags (kernel VFIO_REGION_INFO_FLAG_* values). */
#define VFIOMIG_REGION_FLAG_READ  (1u << 0)
#define VFIOMIG_REGION_FLAG_WRITE (1u << 1)
#define VFIOMIG_REGION_FLAG_MMAP  (1u << 2)
#define VFIOMIG_REGION_FLAG_CAPS  (1u << 3)

/* vfiomig_region_info.cap_flags: what the capability chain carried. */
#define VFIOMIG_REGION_HAS_TYPE      (1u << 0)
#define VFIOMIG_REGION_HAS_SPARSE    (1u << 1)
#define VFIOMIG_REGION_HAS_MSIX_MAPPABLE (1u << 2)

/* Well-known PCI region indexes. */
#define VFIOMIG_PCI_BAR0_REGION   0
#define VFIOMIG_PCI_ROM_REGION    6
#define VFIOMIG_PCI_CONFIG_REGION 7
#define VFIOMIG_PCI_VGA_REGION    8
#define VFIOMIG_PCI_NUM_REGIONS   9 /* device-specific regions start here */

/* Region type / subtype of the v1 (region-based) migration region. */
#define VFIOMIG_REGION_TYPE_MIGRATION_V1    3
#define VFIOMIG_REGION_SUBTYPE_MIGRATION_V1 1

/* Filled by vfiomig_region_get_info(); set sz first (VFIOMIG_OPTS). */
struct vfiomig_region_info {
	size_t sz;
	uint64_t size;
	uint64_t offset;    /* file offset of the region on the device fd */
	uint32_t index;
	uint32_t flags;     /* VFIOMIG_REGION_FLAG_* */
	uint32_t cap_flags; /* VFIOMIG_REGION_HAS_* */
	uint32_t type;      /* valid with VFIOMIG_REGION_HAS_TYPE */
	uint32_t subtype;
	uint32_t nr_sparse_areas; /* valid with VFIOMIG_REGION_HAS_SPARSE */
};

/*
 * Region info by index. Returns 0, -EINVAL (index >= num_regions or bad
 * sz), or the ioctl's -errno; a malformed capability chain is -EINVAL.
 */
VFIOMIG_API int vfiomig_region_get_info(struct vfiomig_device *dev, uint32_t index,
					struct vfiomig_region_info *info);

/*
 * The region's raw VFIO_DEVICE_GET_REGION_INFO buffer (argsz growth
 * handled), for the vfiomig_cap_* parsers; release with vfiomig_free().
 */
VFIOMIG_API int vfiomig_region_get_info_raw(struct vfiomig_device *dev, uint32_t index, void **buf,
					    size_t *len);

/* Sparse-mmap areas: at most max copied, total in *nr; -ENOENT without the cap. */
VFIOMIG_API int vfiomig_region_get_sparse_areas(struct vfiomig_device *dev, uint32_t index,
						struct vfiomig_sparse_area *areas, uint32_t max,
						uint32_t *nr);

/*
 * Find the first region carrying this type/subtype capability (the
 * device-specific regions). Returns 0 with *info filled (info->sz set by
 * the caller), or -ENOENT when no region matches.
 */
VFIOMIG_API int vfiomig_region_find(struct vfiomig_device *dev, uint32_t type, uint32_t subtype,
				    struct vfiomig_region_info *info);

/*
 * Read / write exactly len bytes at `offset` within the region, looping
 * over short transfers and EINTR. Returns 0, -EINVAL (outside the region
 * or region lacks READ/WRITE), -EIO (the device returned 0 bytes before
 * the end), or the call's -errno.
 */
VFIOMIG_API int vfiomig_region_read(struct vfiomig_device *dev, uint32_t index, uint64_t offset,
				    void *buf, size_t len);
VFIOMIG_API int vfiomig_region_write(struct vfiomig_device *dev, uint32_t index, uint64_t offset,
				     const void *buf, size_t len);

/*
 * Register access at native width: one pread/pwrite of exactly `width`
 * bytes (1, 2, 4 or 8) at an offset aligned to width, as register-style
 * regions (the v1 migration registers, config space) require. The value
 * is in host byte order as the device delivers it. -EINVAL for a bad
 * width or alignment; a short transfer is -EIO (never split).
 */
VFIOMIG_API int vfiomig_region_read_reg(struct vfiomig_device *dev, uint32_t index,
					uint64_t offset, unsigned int width, uint64_t *value);
VFIOMIG_API int vfiomig_region_write_reg(struct vfiomig_device *dev, uint32_t index,
					 uint64_t offset, unsigned int width, uint64_t value);

/* A mapping of a region: the areas the kernel allows, each mapped. */
struct vfiomig_region_map;

/*
 * mmap a region (prot: PROT_READ and/or PROT_WRITE values). The region
 * must have VFIOMIG_REGION_FLAG_MMAP. With a sparse-mmap capability only the
 * listed areas are mapped (an empty list maps nothing and returns
 * -ENOENT); without one the whole region is one area. Returns 0 and *out
 * (free with vfiomig_region_unmap(); the map holds a reference on the
 * device), or -errno with nothing left mapped.
 */
VFIOMIG_API int vfiomig_region_mmap(struct vfiomig_device *dev, uint32_t index, int prot,
				    struct vfiomig_region_map **out);

/* Number of mapped areas. */
VFIOMIG_API uint32_t vfiomig_region_map_count(const struct vfiomig_region_map *map);

/* Area i: its offset in the region, size and address. 0 or -EINVAL (i out of range). */
VFIOMIG_API int vfiomig_region_map_area(const struct vfiomig_region_map *map, uint32_t i,
					uint64_t *offset, uint64_t *size, void **addr);

/*
 * Address of [offset, offset + len) of the region if the whole span lies
 * inside one mapped area; NULL otherwise (then use vfiomig_region_read()).
 */
VFIOMIG_API void *vfiomig_region_map_ptr(const struct vfiomig_region_map *map, uint64_t offset,
					 size_t len);

/* Unmap every area and free the map (which held a reference on its device). NULL is accepted. */
VFIOMIG_API void vfiomig_region_unmap(struct vfiomig_region_map *map);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_region_map, vfiomig_region_unmap)

#ifdef __cplusplus
}
#endif
#endif
