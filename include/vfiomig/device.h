/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: the device handle.
 *
 * A device is a VFIO device fd plus whatever it is attached through:
 * either the legacy group + container pair (/dev/vfio/<group>,
 * /dev/vfio/vfio, type1v2 IOMMU) or the cdev + iommufd pair
 * (/dev/vfio/devices/vfioN, /dev/iommu). Opening resolves, opens and
 * wires all of them; adopting takes fds the VMM already holds.
 */
#ifndef VFIOMIG_DEVICE_H
#define VFIOMIG_DEVICE_H

#include <vfiomig/common.h>
#include <vfiomig/ctx.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfiomig_device;

/* vfiomig_device_open_opts.flags */
#define VFIOMIG_OPEN_CDEV     (1u << 0) /* use the vfio cdev + iommufd path; fail if absent */
#define VFIOMIG_OPEN_NO_CDEV  (1u << 1) /* never try cdev + iommufd (group + container only) */
/*
 * cdev path: attach the device to a HWPT allocated with dirty tracking
 * (IOMMU_HWPT_ALLOC_DIRTY_TRACKING) instead of the IOAS's automatic
 * domain, so VFIOMIG_DIRTY_MECH_IOMMUFD can be used. -EOPNOTSUPP when the
 * IOMMU has no dirty tracking (IOMMU_GET_HW_INFO).
 */
#define VFIOMIG_OPEN_DIRTY_HWPT (1u << 2)

struct vfiomig_device_open_opts {
	size_t sz;
	/*
	 * Use the container (group path) or iommufd and IOAS (cdev path) of
	 * `share_container_of` rather than new ones: devices of one VM
	 * normally share one. NULL: new ones. Both devices must use the
	 * same path.
	 */
	struct vfiomig_device *share_container_of;
	/* Name used in log lines; default: the device's canonical name. */
	const char *name;
	/*
	 * VFIOMIG_OPEN_*. Default: group + container when the device has an
	 * IOMMU group; the cdev + iommufd path when it has no group but has
	 * a vfio cdev (a kernel without the legacy group interface).
	 */
	uint32_t flags;
	uint32_t reserved;
};

/*
 * Open a device by:
 *  - PCI address: "0000:03:00.0" (the domain may be omitted: "03:00.0");
 *  - sysfs path: "/sys/bus/pci/devices/0000:03:00.0",
 *    "/sys/bus/mdev/devices/<uuid>" or any path whose iommu_group link
 *    resolves;
 *  - mdev UUID: "83b8f4f2-509f-382f-3c1e-e6bfe0fa1001";
 *  - vfio cdev: "/dev/vfio/devices/vfioN" (implies VFIOMIG_OPEN_CDEV).
 * The IOMMU group is resolved through sysfs, the group must be viable
 * (all its devices bound to VFIO drivers), the container is set to
 * type1v2. opts may be NULL. Returns 0 and *out, or -errno (-ENOENT no
 * such device, -EBUSY group not viable or in use, -EINVAL bad spec or
 * opts, ...) with a log line naming the step that failed. Everything
 * opened is closed again on failure.
 */
VFIOMIG_API int vfiomig_device_open(struct vfiomig_ctx *ctx, const char *spec,
				    const struct vfiomig_device_open_opts *opts,
				    struct vfiomig_device **out);

/*
 * vfiomig_device_adopt_opts.flags: exactly one of TAKE or DUP, plus one
 * HAS_* bit per companion fd given (an fd field is read only when its bit
 * is set, so a zeroed opts never adopts fd 0 by accident).
 */
#define VFIOMIG_ADOPT_TAKE          (1u << 0) /* the device owns the fds and closes them */
#define VFIOMIG_ADOPT_DUP           (1u << 1) /* the library dups the fds; the caller keeps its own */
#define VFIOMIG_ADOPT_HAS_CONTAINER (1u << 2)
#define VFIOMIG_ADOPT_HAS_GROUP     (1u << 3)
#define VFIOMIG_ADOPT_HAS_IOMMUFD   (1u << 4)

struct vfiomig_device_adopt_opts {
	size_t sz;
	const char *name; /* for log lines; default "fd:<device_fd>" */
	uint32_t flags;   /* VFIOMIG_ADOPT_* */
	/* Companion fds. Group + container, or iommufd, not both. */
	int32_t container_fd;
	int32_t group_fd;
	int32_t iommufd;
};

/*
 * Adopt a device fd the VMM already holds, with optional companion fds
 * in opts (NULL opts is refused: ownership must be explicit). With
 * VFIOMIG_ADOPT_TAKE the fds belong to the device from this call on,
 * even when it fails (they are closed then) — except when the flags
 * themselves are invalid, where nothing is closed. With VFIOMIG_ADOPT_DUP
 * the caller's fds are never closed. The device fd is checked with
 * VFIO_DEVICE_GET_INFO. Returns 0 and *out, or -errno.
 */
VFIOMIG_API int vfiomig_device_adopt(struct vfiomig_ctx *ctx, int device_fd,
				     const struct vfiomig_device_adopt_opts *opts,
				     struct vfiomig_device **out);

/*
 * Close a device: drops the caller's handle. The device is reference
 * counted by what is built on it (region maps, dirty-tracking sessions,
 * migrations), so the fds the device owns are closed when the last of
 * those is released too; until then they keep working. NULL is accepted.
 */
VFIOMIG_API void vfiomig_device_close(struct vfiomig_device *dev);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_device, vfiomig_device_close)

/* The name used in log lines (owned by the device). */
VFIOMIG_API const char *vfiomig_device_name(const struct vfiomig_device *dev);
VFIOMIG_API struct vfiomig_ctx *vfiomig_device_ctx(const struct vfiomig_device *dev);

/*
 * The fds (still owned by the device: dup them to keep them past
 * vfiomig_device_close()). -ENOENT when the device has none of that kind.
 */
VFIOMIG_API int vfiomig_device_fd(const struct vfiomig_device *dev);
VFIOMIG_API int vfiomig_device_group_fd(const struct vfiomig_device *dev);
VFIOMIG_API int vfiomig_device_container_fd(const struct vfiomig_device *dev);
VFIOMIG_API int vfiomig_device_iommufd(const struct vfiomig_device *dev);
/* IOMMU group number, or -ENOENT (cdev or adopted without it). */
VFIOMIG_API int vfiomig_device_group(const struct vfiomig_device *dev);

/* vfiomig_device_info.flags: the kernel's VFIO_DEVICE_FLAGS_* bits. */
#define VFIOMIG_DEVICE_FLAGS_RESET    (1u << 0)
#define VFIOMIG_DEVICE_FLAGS_PCI      (1u << 1)
#define VFIOMIG_DEVICE_FLAGS_PLATFORM (1u << 2)
#define VFIOMIG_DEVICE_FLAGS_AMBA     (1u << 3)
#define VFIOMIG_DEVICE_FLAGS_CCW      (1u << 4)
#define VFIOMIG_DEVICE_FLAGS_AP       (1u << 5)
#define VFIOMIG_DEVICE_FLAGS_FSL_MC   (1u << 6)
#define VFIOMIG_DEVICE_FLAGS_CAPS     (1u << 7)
#define VFIOMIG_DEVICE_FLAGS_CDX      (1u << 8)

/* vfiomig_device_info.backend */
#define VFIOMIG_BACKEND_GROUP   1 /* group + container */
#define VFIOMIG_BACKEND_IOMMUFD 2 /* cdev + iommufd */
#define VFIOMIG_BACKEND_NONE    3 /* adopted device fd alone */

/* Filled by vfiomig_device_get_info(); set sz first. */
struct vfiomig_device_info {
	size_t sz;
	uint32_t flags;       /* VFIOMIG_DEVICE_FLAGS_* */
	uint32_t num_regions;
	uint32_t num_irqs;
	uint32_t backend;     /* VFIOMIG_BACKEND_* */
	int32_t group;        /* IOMMU group number or -1 */
	uint32_t reserved;
};

/*
 * VFIO_DEVICE_GET_INFO. The library fills the fields that fit in
 * info->sz (which the caller sets, e.g. with VFIOMIG_OPTS). Returns 0 or
 * -errno.
 */
VFIOMIG_API int vfiomig_device_get_info(struct vfiomig_device *dev, struct vfiomig_device_info *info);

/*
 * Raw info buffers, with the argsz growth handled (call, grow to the
 * argsz the kernel asked for, call again; bounded): for the
 * vfiomig_caps_* and vfiomig_cap_* parsers. *buf is allocated by the
 * library and must be released with vfiomig_free(); *len is its size.
 */
VFIOMIG_API int vfiomig_device_get_info_raw(struct vfiomig_device *dev, void **buf, size_t *len);
/* VFIO_IOMMU_GET_INFO of the device's type1 container (-ENOTTY: none / not type1). */
VFIOMIG_API int vfiomig_device_get_iommu_info_raw(struct vfiomig_device *dev, void **buf,
						  size_t *len);

/* vfiomig_migration_info.v2_flags: the kernel's VFIO_MIGRATION_* bits. */
#define VFIOMIG_V2_STOP_COPY (1u << 0)
#define VFIOMIG_V2_P2P       (1u << 1)
#define VFIOMIG_V2_PRE_COPY  (1u << 2)

/* Filled by vfiomig_device_migration_info(); set sz first. */
struct vfiomig_migration_info {
	size_t sz;
	uint64_t v2_flags;   /* VFIOMIG_V2_* when VFIOMIG_PROTO_V2 is offered */
	/* VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_*) of each protocol the device offers; 0: none */
	uint32_t protocols;
	int32_t v1_region;   /* index of the v1 migration region, or -1 */
	/* Why the device cannot migrate (protocols == 0), NUL-terminated; else "". */
	char reason[192];
};

/*
 * What migration protocols the device offers: probes
 * VFIO_DEVICE_FEATURE(GET MIGRATION) and looks for the v1 migration
 * region (type 3 / subtype 1). A device without either is not an error:
 * protocols is 0 and `reason` says why. Returns 0 or -errno for real
 * failures (the ioctl failing other than "not supported").
 */
VFIOMIG_API int vfiomig_device_migration_info(struct vfiomig_device *dev,
					      struct vfiomig_migration_info *info);

/* VFIO_DEVICE_RESET. */
VFIOMIG_API int vfiomig_device_reset(struct vfiomig_device *dev);

#ifdef __cplusplus
}
#endif
#endif
