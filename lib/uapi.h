/* SPDX-License-Identifier: MIT */
/*
 * Our own definitions of the Linux VFIO / iommufd uAPI the library and
 * the simulator use, written from the documented ABI (struct layouts and
 * ioctl numbers), so the build never depends on which <linux/vfio.h> the
 * build host carries (Debian 12's is from 6.1: no PRE_COPY, no cdev, no
 * v1 struct). Every layout is pinned by static asserts.
 *
 * Names are prefixed `vu_` / `VU_` so they can never clash with a
 * kernel header a user of this file might also include.
 */
#ifndef VFIOMIG_UAPI_H
#define VFIOMIG_UAPI_H

#include <stddef.h>
#include <stdint.h>

#define VU_ASSERT_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " size")
#define VU_ASSERT_OFF(type, field, off) \
	_Static_assert(offsetof(type, field) == (off), #type "." #field " offset")

/* _IO(';', nr): no size or direction bits, so this is the whole encoding. */
#define VU_IO(nr)  (0x3b00ul + (nr))
#define VU_BASE    100

/* ------------------------------------------------------------ container */
#define VU_API_VERSION           0
#define VU_GET_API_VERSION       VU_IO(VU_BASE + 0)
#define VU_CHECK_EXTENSION       VU_IO(VU_BASE + 1)
#define VU_SET_IOMMU             VU_IO(VU_BASE + 2)
#define VU_TYPE1_IOMMU           1
#define VU_TYPE1v2_IOMMU         3
#define VU_UNMAP_ALL             9 /* extension */
#define VU_UPDATE_VADDR          10

/* ---------------------------------------------------------------- group */
#define VU_GROUP_GET_STATUS      VU_IO(VU_BASE + 3)
#define VU_GROUP_SET_CONTAINER   VU_IO(VU_BASE + 4)
#define VU_GROUP_UNSET_CONTAINER VU_IO(VU_BASE + 5)
#define VU_GROUP_GET_DEVICE_FD   VU_IO(VU_BASE + 6)

struct vu_group_status {
	uint32_t argsz;
	uint32_t flags;
};
#define VU_GROUP_FLAGS_VIABLE        (1u << 0)
#define VU_GROUP_FLAGS_CONTAINER_SET (1u << 1)
VU_ASSERT_SIZE(struct vu_group_status, 8);

/* --------------------------------------------------------------- device */
#define VU_DEVICE_GET_INFO        VU_IO(VU_BASE + 7)
#define VU_DEVICE_GET_REGION_INFO VU_IO(VU_BASE + 8)
#define VU_DEVICE_GET_IRQ_INFO    VU_IO(VU_BASE + 9)
#define VU_DEVICE_SET_IRQS        VU_IO(VU_BASE + 10)
#define VU_DEVICE_RESET           VU_IO(VU_BASE + 11)
#define VU_DEVICE_FEATURE         VU_IO(VU_BASE + 17)
#define VU_DEVICE_BIND_IOMMUFD    VU_IO(VU_BASE + 18)
#define VU_DEVICE_ATTACH_IOMMUFD_PT VU_IO(VU_BASE + 19)
#define VU_DEVICE_DETACH_IOMMUFD_PT VU_IO(VU_BASE + 20)
#define VU_MIG_GET_PRECOPY_INFO   VU_IO(VU_BASE + 21) /* on the data_fd */

struct vu_device_info {
	uint32_t argsz;
	uint32_t flags;
	uint32_t num_regions;
	uint32_t num_irqs;
	uint32_t cap_offset;
	uint32_t pad;
};
#define VU_DEVICE_FLAGS_RESET (1u << 0)
#define VU_DEVICE_FLAGS_PCI   (1u << 1)
#define VU_DEVICE_FLAGS_CAPS  (1u << 7)
VU_ASSERT_SIZE(struct vu_device_info, 24);
VU_ASSERT_OFF(struct vu_device_info, cap_offset, 16);

struct vu_info_cap_header {
	uint16_t id;
	uint16_t version;
	uint32_t next;
};
VU_ASSERT_SIZE(struct vu_info_cap_header, 8);

struct vu_region_info {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t cap_offset;
	uint64_t size;
	uint64_t offset;
};
#define VU_REGION_INFO_FLAG_READ  (1u << 0)
#define VU_REGION_INFO_FLAG_WRITE (1u << 1)
#define VU_REGION_INFO_FLAG_MMAP  (1u << 2)
#define VU_REGION_INFO_FLAG_CAPS  (1u << 3)
VU_ASSERT_SIZE(struct vu_region_info, 32);
VU_ASSERT_OFF(struct vu_region_info, cap_offset, 12);
VU_ASSERT_OFF(struct vu_region_info, size, 16);
VU_ASSERT_OFF(struct vu_region_info, offset, 24);

#define VU_REGION_INFO_CAP_SPARSE_MMAP   1
#define VU_REGION_INFO_CAP_TYPE          2
#define VU_REGION_INFO_CAP_MSIX_MAPPABLE 3

struct vu_region_sparse_mmap_area {
	uint64_t offset;
	uint64_t size;
};
struct vu_region_info_cap_sparse_mmap {
	struct vu_info_cap_header header;
	uint32_t nr_areas;
	uint32_t reserved;
	struct vu_region_sparse_mmap_area areas[];
};
VU_ASSERT_SIZE(struct vu_region_info_cap_sparse_mmap, 16);

struct vu_region_info_cap_type {
	struct vu_info_cap_header header;
	uint32_t type;
	uint32_t subtype;
};
VU_ASSERT_SIZE(struct vu_region_info_cap_type, 16);

#define VU_REGION_TYPE_MIGRATION_DEPRECATED    3
#define VU_REGION_SUBTYPE_MIGRATION_DEPRECATED 1

/* PCI region indexes */
#define VU_PCI_BAR0_REGION_INDEX   0
#define VU_PCI_BAR2_REGION_INDEX   2
#define VU_PCI_ROM_REGION_INDEX    6
#define VU_PCI_CONFIG_REGION_INDEX 7
#define VU_PCI_VGA_REGION_INDEX    8
#define VU_PCI_NUM_REGIONS         9
#define VU_PCI_NUM_IRQS            5

struct vu_irq_info {
	uint32_t argsz;
	uint32_t flags;
	uint32_t index;
	uint32_t count;
};
VU_ASSERT_SIZE(struct vu_irq_info, 16);

/* ---------------------------------------------------------------- type1 */
#define VU_IOMMU_GET_INFO    VU_IO(VU_BASE + 12)
#define VU_IOMMU_MAP_DMA     VU_IO(VU_BASE + 13)
#define VU_IOMMU_UNMAP_DMA   VU_IO(VU_BASE + 14)
#define VU_IOMMU_DIRTY_PAGES VU_IO(VU_BASE + 17)

struct vu_iommu_type1_info {
	uint32_t argsz;
	uint32_t flags;
	uint64_t iova_pgsizes;
	uint32_t cap_offset;
	uint32_t pad;
};
#define VU_IOMMU_INFO_PGSIZES (1u << 0)
#define VU_IOMMU_INFO_CAPS    (1u << 1)
VU_ASSERT_SIZE(struct vu_iommu_type1_info, 24);
VU_ASSERT_OFF(struct vu_iommu_type1_info, iova_pgsizes, 8);
VU_ASSERT_OFF(struct vu_iommu_type1_info, cap_offset, 16);

#define VU_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE 1
#define VU_IOMMU_TYPE1_INFO_CAP_MIGRATION  2
#define VU_IOMMU_TYPE1_INFO_DMA_AVAIL      3

struct vu_iova_range {
	uint64_t start;
	uint64_t end; /* inclusive */
};
struct vu_iommu_type1_info_cap_iova_range {
	struct vu_info_cap_header header;
	uint32_t nr_iovas;
	uint32_t reserved;
	struct vu_iova_range iova_ranges[];
};
VU_ASSERT_SIZE(struct vu_iommu_type1_info_cap_iova_range, 16);

struct vu_iommu_type1_info_cap_migration {
	struct vu_info_cap_header header;
	uint32_t flags;
	uint64_t pgsize_bitmap;
	uint64_t max_dirty_bitmap_size;
};
VU_ASSERT_SIZE(struct vu_iommu_type1_info_cap_migration, 32);
VU_ASSERT_OFF(struct vu_iommu_type1_info_cap_migration, pgsize_bitmap, 16);
VU_ASSERT_OFF(struct vu_iommu_type1_info_cap_migration, max_dirty_bitmap_size, 24);

struct vu_iommu_type1_info_dma_avail {
	struct vu_info_cap_header header;
	uint32_t avail;
};
VU_ASSERT_SIZE(struct vu_iommu_type1_info_dma_avail, 12);

struct vu_iommu_type1_dma_map {
	uint32_t argsz;
	uint32_t flags;
	uint64_t vaddr;
	uint64_t iova;
	uint64_t size;
};
#define VU_DMA_MAP_FLAG_READ  (1u << 0)
#define VU_DMA_MAP_FLAG_WRITE (1u << 1)
VU_ASSERT_SIZE(struct vu_iommu_type1_dma_map, 32);

struct vu_bitmap {
	uint64_t pgsize;
	uint64_t size; /* bytes */
	uint64_t data; /* user pointer */
};
VU_ASSERT_SIZE(struct vu_bitmap, 24);

struct vu_iommu_type1_dma_unmap {
	uint32_t argsz;
	uint32_t flags;
	uint64_t iova;
	uint64_t size;
	/* followed by struct vu_bitmap with GET_DIRTY_BITMAP */
};
#define VU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP (1u << 0)
#define VU_DMA_UNMAP_FLAG_ALL              (1u << 1)
VU_ASSERT_SIZE(struct vu_iommu_type1_dma_unmap, 24);

struct vu_iommu_type1_dirty_bitmap {
	uint32_t argsz;
	uint32_t flags;
	/* followed by data */
};
#define VU_IOMMU_DIRTY_PAGES_FLAG_START      (1u << 0)
#define VU_IOMMU_DIRTY_PAGES_FLAG_STOP       (1u << 1)
#define VU_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP (1u << 2)
VU_ASSERT_SIZE(struct vu_iommu_type1_dirty_bitmap, 8);

struct vu_iommu_type1_dirty_bitmap_get {
	uint64_t iova;
	uint64_t size;
	struct vu_bitmap bitmap;
};
VU_ASSERT_SIZE(struct vu_iommu_type1_dirty_bitmap_get, 40);

/* -------------------------------------------------------- device feature */
struct vu_device_feature {
	uint32_t argsz;
	uint32_t flags;
	/* uint8_t data[] follows */
};
VU_ASSERT_SIZE(struct vu_device_feature, 8);
#define VU_DEVICE_FEATURE_MASK  0xffffu
#define VU_DEVICE_FEATURE_GET   (1u << 16)
#define VU_DEVICE_FEATURE_SET   (1u << 17)
#define VU_DEVICE_FEATURE_PROBE (1u << 18)

#define VU_FEATURE_MIGRATION         1
#define VU_FEATURE_MIG_DEVICE_STATE  2
#define VU_FEATURE_DMA_LOGGING_START 6
#define VU_FEATURE_DMA_LOGGING_STOP  7
#define VU_FEATURE_DMA_LOGGING_REPORT 8
#define VU_FEATURE_MIG_DATA_SIZE     9

struct vu_feature_migration {
	uint64_t flags;
};
#define VU_MIGRATION_STOP_COPY (1u << 0)
#define VU_MIGRATION_P2P       (1u << 1)
#define VU_MIGRATION_PRE_COPY  (1u << 2)

struct vu_feature_mig_state {
	uint32_t device_state;
	int32_t data_fd;
};
VU_ASSERT_SIZE(struct vu_feature_mig_state, 8);

enum vu_device_mig_state {
	VU_STATE_ERROR = 0,
	VU_STATE_STOP = 1,
	VU_STATE_RUNNING = 2,
	VU_STATE_STOP_COPY = 3,
	VU_STATE_RESUMING = 4,
	VU_STATE_RUNNING_P2P = 5,
	VU_STATE_PRE_COPY = 6,
	VU_STATE_PRE_COPY_P2P = 7,
	VU_STATE_NR = 8,
};

struct vu_precopy_info {
	uint32_t argsz;
	uint32_t flags;
	uint64_t initial_bytes;
	uint64_t dirty_bytes;
};
VU_ASSERT_SIZE(struct vu_precopy_info, 24);

struct vu_feature_mig_data_size {
	uint64_t stop_copy_length;
};

struct vu_feature_dma_logging_range {
	uint64_t iova;
	uint64_t length;
};
struct vu_feature_dma_logging_control {
	uint64_t page_size;
	uint32_t num_ranges;
	uint32_t reserved;
	uint64_t ranges; /* user pointer */
};
VU_ASSERT_SIZE(struct vu_feature_dma_logging_control, 24);
VU_ASSERT_OFF(struct vu_feature_dma_logging_control, ranges, 16);

struct vu_feature_dma_logging_report {
	uint64_t iova;
	uint64_t length;
	uint64_t page_size;
	uint64_t bitmap; /* user pointer */
};
VU_ASSERT_SIZE(struct vu_feature_dma_logging_report, 32);

/* ------------------------------------------------- v1 migration region */
struct vu_device_migration_info_v1 {
	uint32_t device_state;
	uint32_t reserved;
	uint64_t pending_bytes;
	uint64_t data_offset;
	uint64_t data_size;
};
#define VU_V1_STATE_STOP     0u
#define VU_V1_STATE_RUNNING  (1u << 0)
#define VU_V1_STATE_SAVING   (1u << 1)
#define VU_V1_STATE_RESUMING (1u << 2)
#define VU_V1_STATE_MASK     (VU_V1_STATE_RUNNING | VU_V1_STATE_SAVING | VU_V1_STATE_RESUMING)
VU_ASSERT_SIZE(struct vu_device_migration_info_v1, 32);
VU_ASSERT_OFF(struct vu_device_migration_info_v1, pending_bytes, 8);
VU_ASSERT_OFF(struct vu_device_migration_info_v1, data_offset, 16);
VU_ASSERT_OFF(struct vu_device_migration_info_v1, data_size, 24);

/* ------------------------------------------------------- cdev / iommufd */
struct vu_device_bind_iommufd {
	uint32_t argsz;
	uint32_t flags;
	int32_t iommufd;
	uint32_t out_devid;
};
VU_ASSERT_SIZE(struct vu_device_bind_iommufd, 16);

struct vu_device_attach_iommufd_pt {
	uint32_t argsz;
	uint32_t flags;
	uint32_t pt_id;
};
VU_ASSERT_SIZE(struct vu_device_attach_iommufd_pt, 12);

#define VU_IOMMUFD_IO(nr)          (0x3b00ul + 0x80 + (nr))
#define VU_IOMMU_DESTROY           VU_IOMMUFD_IO(0)
#define VU_IOMMU_IOAS_ALLOC        VU_IOMMUFD_IO(1)
#define VU_IOMMU_HWPT_ALLOC        VU_IOMMUFD_IO(9)
#define VU_IOMMU_GET_HW_INFO       VU_IOMMUFD_IO(10)
#define VU_IOMMU_HWPT_SET_DIRTY_TRACKING VU_IOMMUFD_IO(11)
#define VU_IOMMU_HWPT_GET_DIRTY_BITMAP   VU_IOMMUFD_IO(12)

struct vu_iommu_destroy {
	uint32_t size;
	uint32_t id;
};
VU_ASSERT_SIZE(struct vu_iommu_destroy, 8);

struct vu_iommu_ioas_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t out_ioas_id;
};
VU_ASSERT_SIZE(struct vu_iommu_ioas_alloc, 12);

/* iommufd dirty tracking (6.7+) */
#define VU_IOMMU_IOAS_MAP   VU_IOMMUFD_IO(5)
#define VU_IOMMU_IOAS_UNMAP VU_IOMMUFD_IO(6)

struct vu_iommu_ioas_unmap {
	uint32_t size;
	uint32_t ioas_id;
	uint64_t iova;
	uint64_t length;
};
VU_ASSERT_SIZE(struct vu_iommu_ioas_unmap, 24);

struct vu_iommu_ioas_map {
	uint32_t size;
	uint32_t flags;
	uint32_t ioas_id;
	uint32_t reserved;
	uint64_t user_va;
	uint64_t length;
	uint64_t iova;
};
#define VU_IOMMU_IOAS_MAP_FIXED_IOVA (1u << 0)
#define VU_IOMMU_IOAS_MAP_WRITEABLE  (1u << 1)
#define VU_IOMMU_IOAS_MAP_READABLE   (1u << 2)
VU_ASSERT_SIZE(struct vu_iommu_ioas_map, 40);

struct vu_iommu_hw_info {
	uint32_t size;
	uint32_t flags;
	uint32_t dev_id;
	uint32_t data_len;
	uint64_t data_uptr;
	uint32_t out_data_type;
	uint32_t reserved;
	uint64_t out_capabilities;
};
#define VU_IOMMU_HW_CAP_DIRTY_TRACKING (1ull << 0)
VU_ASSERT_SIZE(struct vu_iommu_hw_info, 40);
VU_ASSERT_OFF(struct vu_iommu_hw_info, out_capabilities, 32);

struct vu_iommu_hwpt_alloc {
	uint32_t size;
	uint32_t flags;
	uint32_t dev_id;
	uint32_t pt_id;
	uint32_t out_hwpt_id;
	uint32_t reserved;
	uint32_t data_type;
	uint32_t data_len;
	uint64_t data_uptr;
};
#define VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING (1u << 1)
VU_ASSERT_SIZE(struct vu_iommu_hwpt_alloc, 40);

struct vu_iommu_hwpt_set_dirty_tracking {
	uint32_t size;
	uint32_t flags;
	uint32_t hwpt_id;
	uint32_t reserved;
};
#define VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE (1u << 0)
VU_ASSERT_SIZE(struct vu_iommu_hwpt_set_dirty_tracking, 16);

struct vu_iommu_hwpt_get_dirty_bitmap {
	uint32_t size;
	uint32_t hwpt_id;
	uint32_t flags;
	uint32_t reserved;
	uint64_t iova;
	uint64_t length;
	uint64_t page_size;
	uint64_t data;
};
#define VU_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR (1u << 0)
VU_ASSERT_SIZE(struct vu_iommu_hwpt_get_dirty_bitmap, 48);

/* The most ranges DMA_LOGGING_START accepts: PAGE_SIZE / sizeof(range). */
#define VU_DMA_LOGGING_MAX_RANGES 256

#endif
