/* SPDX-License-Identifier: MIT */
/*
 * Private internals shared by the library's source files: the context,
 * logging helpers, opts-struct validation and the kernel-interface
 * dispatch every other file calls instead of making system calls.
 */
#ifndef VFIOMIG_INTERNAL_H
#define VFIOMIG_INTERNAL_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <vfiomig/vfiomig.h>

#include "uapi.h"

#define VM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VM_OFFSETOFEND(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

struct vm_group;

struct vfiomig_ctx {
	vfiomig_log_fn log_fn;
	void *log_user;
	int log_priority;
	struct vfiomig_kernel_ops kops; /* full-size copy; missing ops are NULL */
	void *kops_user;
	struct vm_group *groups;        /* open groups, shared by their devices */
};

/* --------------------------------------------------------------- logging */

__attribute__((format(printf, 3, 4)))
void vm_log(struct vfiomig_ctx *ctx, int priority, const char *fmt, ...);

/*
 * Log an error line "<fmt>: <strerror(-err)>" and return err (negative
 * errno), so callers can write `return vm_err(ctx, -EINVAL, "...")`.
 * ctx may be NULL (no log).
 */
__attribute__((format(printf, 3, 4)))
int vm_err(struct vfiomig_ctx *ctx, int err, const char *fmt, ...);

#define vm_dbg(ctx, ...)  vm_log(ctx, VFIOMIG_LOG_DEBUG, __VA_ARGS__)
#define vm_info(ctx, ...) vm_log(ctx, VFIOMIG_LOG_INFO, __VA_ARGS__)
#define vm_warn(ctx, ...) vm_log(ctx, VFIOMIG_LOG_WARNING, __VA_ARGS__)

/* ----------------------------------------------------------- opts structs */

/*
 * Check a caller's sized struct: NULL is fine (all defaults); sz must
 * cover at least the sz field; bytes beyond what this library knows
 * (known_sz) must be zero. Returns 0 or -EINVAL with a log line.
 */
int vm_opts_check(struct vfiomig_ctx *ctx, const void *opts, size_t known_sz, const char *what);

/* The caller's sz of a sized struct (0 for NULL). */
static inline size_t vm_opts_sz(const void *opts)
{
	return opts ? *(const size_t *)opts : 0;
}

/* Does the caller's struct (of caller size sz) contain `field`? */
#define VM_OPTS_HAS(opts, type, field) \
	((opts) && vm_opts_sz(opts) >= VM_OFFSETOFEND(type, field))
#define VM_OPTS_GET(opts, type, field, dflt) \
	(VM_OPTS_HAS(opts, type, field) ? (opts)->field : (dflt))

/*
 * Copy `src` of the library's size into a caller's output struct of
 * size dst->sz (only what fits; sz itself preserved).
 */
void vm_out_copy(void *dst, const void *src, size_t known_sz);

/* ------------------------------------------------------ kernel interface */

int vk_open(struct vfiomig_ctx *ctx, const char *path, int flags);
int vk_close(struct vfiomig_ctx *ctx, int fd);
int vk_dup(struct vfiomig_ctx *ctx, int fd);
int vk_ioctl(struct vfiomig_ctx *ctx, int fd, unsigned long request, void *arg);
ssize_t vk_read(struct vfiomig_ctx *ctx, int fd, void *buf, size_t len);
ssize_t vk_write(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len);
ssize_t vk_pread(struct vfiomig_ctx *ctx, int fd, void *buf, size_t len, uint64_t off);
ssize_t vk_pwrite(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len, uint64_t off);
int vk_mmap(struct vfiomig_ctx *ctx, int fd, uint64_t off, size_t len, int prot, void **addr);
int vk_munmap(struct vfiomig_ctx *ctx, void *addr, size_t len);
ssize_t vk_readlink(struct vfiomig_ctx *ctx, const char *path, char *buf, size_t len);
int vk_readdir(struct vfiomig_ctx *ctx, const char *path, vfiomig_dirent_fn fn, void *cb_user);

/* ioctl, retried while it reports -EINTR. */
int vk_ioctl_retry(struct vfiomig_ctx *ctx, int fd, unsigned long request, void *arg);

/* ioctl with an integer argument (VFIO_SET_IOMMU, VFIO_CHECK_EXTENSION). */
static inline int vk_ioctl_int(struct vfiomig_ctx *ctx, int fd, unsigned long request,
			       unsigned long arg)
{
	return vk_ioctl(ctx, fd, request, (void *)arg);
}

/*
 * Full-length pread / pwrite: loop over short transfers and -EINTR.
 * Returns 0, -EIO when the fd returns 0 before the end, or -errno.
 */
int vk_pread_full(struct vfiomig_ctx *ctx, int fd, void *buf, size_t len, uint64_t off);
int vk_pwrite_full(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len, uint64_t off);
/* Full-length write() on a stream fd (a data_fd): same rules, no offset. */
int vk_write_full(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len);

/*
 * An info ioctl with argsz growth: starts with `minsz` bytes (header
 * pre-filled from `hdr`, argsz set), grows to the argsz the kernel asks
 * for and calls again, at most a few times and at most VM_INFO_MAX bytes.
 * On success *buf (malloc'd, caller frees with free()) and *len.
 */
#define VM_INFO_MAX (1u << 20)
#define VK_INFO_QUIET_EINVAL (1u << 0) /* -EINVAL from the kernel is an answer, not an error: no log */
int vk_info_ioctl(struct vfiomig_ctx *ctx, int fd, unsigned long request, const void *hdr,
		  size_t minsz, void **buf, size_t *len, const char *what, uint32_t flags);

/* --------------------------------------------------------------- devices */

struct vm_region_cache {
	bool valid;
	struct vfiomig_region_info info; /* sz = sizeof */
	void *raw;                       /* the GET_REGION_INFO buffer (caps) */
	size_t raw_len;
};

/* Free the region cache (device close). */
void vm_regions_free(struct vfiomig_device *dev);

/*
 * Groups and containers are shared: devices of one group must share the
 * group fd (the kernel lets a group be opened once), and devices of one
 * VM usually share a container. Each is refcounted by the devices using
 * it; the last user closes the fd if the library owns it.
 */
struct vm_container {
	int fd;            /* /dev/vfio/vfio container, or /dev/iommu */
	bool own;          /* close fd when the last reference goes */
	bool is_iommufd;
	bool iommu_set;    /* container: VFIO_SET_IOMMU done */
	uint32_t ioas_id;  /* iommufd: the IOAS devices attach to */
	unsigned int refs;
};

struct vm_group {
	int fd;
	int num;           /* group number, -1 when unknown (adopted) */
	bool own;
	unsigned int refs;
	struct vm_container *container; /* NULL: none attached */
	struct vm_group *next;          /* in ctx->groups (opened by number only) */
};

struct vfiomig_device {
	struct vfiomig_ctx *ctx;
	char *name;
	char *sysfs;               /* sysfs path when opened by spec, else NULL */
	int fd;
	bool own_fd;
	uint32_t backend;          /* VFIOMIG_BACKEND_* */
	struct vm_group *group;    /* BACKEND_GROUP */
	struct vm_container *iommu;/* BACKEND_IOMMUFD: the iommufd */
	uint32_t devid;            /* iommufd device id */
	uint32_t hwpt_id;          /* iommufd: dirty-tracking HWPT attached, or 0 */
	/* Cached VFIO_DEVICE_GET_INFO. */
	bool info_valid;
	struct vu_device_info info;
	struct vm_region_cache *regions; /* num_regions entries, lazily filled */
};

/*
 * VFIO_DEVICE_FEATURE with `flags` (feature | GET/SET/PROBE) and a payload
 * of at most 32 bytes, copied in and back out (the kernel copies a failed
 * SET's payload back too). Returns the ioctl's result, -EINTR retried; no
 * log line (callers know what a failure means).
 */
int vm_device_feature(struct vfiomig_device *dev, uint32_t flags, void *payload, size_t len);

/* True when the device is a mediated device (emulated IOMMU group). */
bool vm_device_is_mdev(const struct vfiomig_device *dev);

/* Cached device info (fetched on first use). */
int vm_device_info(struct vfiomig_device *dev, const struct vu_device_info **info);

#endif
