/* SPDX-License-Identifier: MIT */
/*
 * Private internals shared by the library's source files: the context,
 * logging helpers, opts-struct validation and the kernel-interface
 * dispatch every other file calls instead of making system calls.
 */
#ifndef VFIOMIG_INTERNAL_H
#define VFIOMIG_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <vfiomig/vfiomig.h>

#include "sized.h"
#include "uapi.h"

struct vm_group;

struct vfiomig_ctx {
	unsigned int refs;              /* atomic: the caller's, plus one per object made from it */
	vfiomig_log_fn log_fn;
	void *log_user;
	int log_priority;
	/*
	 * The log callback is called by one thread at a time (the library's
	 * own worker threads log too: see vfiomig_mig_set_save_complete()).
	 * Recursive: a callback may log through vfiomig_ctx_log().
	 */
	pthread_mutex_t log_lock;
	struct vfiomig_kernel_ops kops; /* full-size copy; missing ops are NULL */
	void *kops_user;
	struct vm_group *groups;        /* open groups, shared by their devices */
};

/*
 * The one-ERR-line bookkeeping of the API call a thread is in (VM_API()),
 * kept per thread so that the library's worker threads and the caller's
 * thread each have their own.
 */
struct vm_tls {
	struct vfiomig_ctx *ctx;        /* the context of the call this thread is in, or NULL */
	unsigned int depth;             /* nesting of VM_API() scopes on ctx */
	unsigned int quiet;             /* vm_quiet_begin() nesting: ERR lines go to debug */
	int own_logged;                 /* this call's ERR line went out (when err_flag is ours) */
	int *err_flag;                  /* where "the ERR line went out" is kept: own_logged, or a
					   flag a parallel run's workers share with their caller */
	char err_msg[256];              /* the last ERR line this thread made (a failure's reason) */
};
extern __thread struct vm_tls vm_tls;

/* --------------------------------------------------------------- logging */

__attribute__((format(printf, 3, 4)))
void vm_log(struct vfiomig_ctx *ctx, int priority, const char *fmt, ...);

/*
 * Log an error line "<fmt>: <strerror(-err)>" and return err (negative
 * errno), so callers can write `return vm_err(ctx, -EINVAL, "...")`.
 * ctx may be NULL (no log).
 *
 * The promise of the API is one ERR line per failing call. Inside a call
 * marked with VM_API(), the first vm_err() is the line (the innermost
 * layer, which knows best what failed); later ones in the same call are
 * delivered at debug level. Lines that report something besides the
 * failure (a source device that had to be reset) are warnings.
 */
__attribute__((format(printf, 3, 4)))
int vm_err(struct vfiomig_ctx *ctx, int err, const char *fmt, ...);

/* The -ENOMEM line: "<what>: Cannot allocate memory". */
int vm_enomem(struct vfiomig_ctx *ctx, const char *what);

/*
 * A public function's arguments are unusable (a NULL pointer, a sized
 * struct whose sz is not set): -EINVAL and the line naming the function.
 * A NULL object handle itself gets a plain -EINVAL: there is no context
 * to log to.
 */
int vm_arg_err(struct vfiomig_ctx *ctx, const char *func);

struct vm_api_scope {
	struct vfiomig_ctx *ctx;
	/* Entered from the scope of another context (or none): that one, restored on leave. */
	bool switched;
	struct vm_tls prev;
};

/*
 * The scope holds a reference on ctx: a call that releases the last
 * object of a context (vfiomig_stream_free(), vfiomig_mig_free(), ...)
 * frees it only when the call returns.
 */
static inline struct vm_api_scope vm_api_enter(struct vfiomig_ctx *ctx)
{
	struct vm_api_scope sc = { .ctx = ctx };

	if (!ctx)
		return sc;
	__atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
	if (vm_tls.ctx != ctx) {
		sc.switched = true;
		sc.prev.ctx = vm_tls.ctx;
		sc.prev.depth = vm_tls.depth;
		sc.prev.quiet = vm_tls.quiet;
		sc.prev.own_logged = vm_tls.own_logged;
		sc.prev.err_flag = vm_tls.err_flag;
		vm_tls.ctx = ctx;
		vm_tls.depth = 0;
		vm_tls.quiet = 0;
	}
	if (vm_tls.depth++ == 0) {
		vm_tls.own_logged = 0;
		vm_tls.err_flag = &vm_tls.own_logged;
		vm_tls.err_msg[0] = '\0'; /* a failure's reason is a line of this call */
	}
	return sc;
}

static inline void vm_api_leave(struct vm_api_scope *sc)
{
	if (!sc->ctx)
		return;
	vm_tls.depth--;
	if (sc->switched) {
		vm_tls.ctx = sc->prev.ctx;
		vm_tls.depth = sc->prev.depth;
		vm_tls.quiet = sc->prev.quiet;
		vm_tls.own_logged = sc->prev.own_logged;
		vm_tls.err_flag = sc->prev.err_flag;
	}
	vfiomig_ctx_unref(sc->ctx);
}

/*
 * A worker thread of a parallel run: its calls share the caller's "ERR
 * line went out" flag, so the whole run still makes one ERR line. Call
 * inside the worker's own VM_API() scope.
 */
static inline void vm_tls_share_err_flag(int *flag)
{
	vm_tls.err_flag = flag;
}

/* The caller's flag, to hand to workers. */
static inline int *vm_tls_err_flag(void)
{
	return vm_tls.err_flag;
}

/* The last ERR line this thread made ("" if none). */
static inline const char *vm_last_err(void)
{
	return vm_tls.err_msg;
}

/*
 * An internal call whose failure the caller handles (a fallback, not a
 * failure): its error lines go out at debug level. Pair with vm_quiet_end().
 */
static inline void vm_quiet_begin(struct vfiomig_ctx *ctx)
{
	(void)ctx;
	vm_tls.quiet++;
}

static inline void vm_quiet_end(struct vfiomig_ctx *ctx)
{
	(void)ctx;
	vm_tls.quiet--;
}

/* First statement of a public function: opens its one-ERR-line scope on ctx. */
#define VM_API(ctx) \
	__attribute__((cleanup(vm_api_leave), unused)) struct vm_api_scope vm_api_scope_ = \
		vm_api_enter(ctx)

#define vm_dbg(ctx, ...)  vm_log(ctx, VFIOMIG_LOG_DEBUG, __VA_ARGS__)
#define vm_info(ctx, ...) vm_log(ctx, VFIOMIG_LOG_INFO, __VA_ARGS__)
#define vm_warn(ctx, ...) vm_log(ctx, VFIOMIG_LOG_WARNING, __VA_ARGS__)

/* uint64_t bitmaps as the kernel lays them out: words / bytes for `bits` bits. */
#define VM_BITMAP_WORDS(bits) (((bits) + 63) / 64)
#define VM_BITMAP_BYTES(bits) (VM_BITMAP_WORDS(bits) * sizeof(uint64_t))

/* ----------------------------------------------------------- opts structs */

/*
 * Check a caller's sized struct (sized.h): NULL is fine (all defaults);
 * sz must cover at least the sz field; bytes past the last field this
 * library knows must be zero (reserved members included). Returns 0 or
 * -EINVAL with a log line naming `what`.
 */
int vm_opts_check(struct vfiomig_ctx *ctx, const void *opts, size_t known_sz, const char *what);
#define VM_OPTS_VALID(ctx, opts, type, last_field) \
	vm_opts_check(ctx, opts, VM_KNOWN_SZ(type, last_field), #type)

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
	unsigned int refs;         /* the caller's handle, plus maps, dirty sessions, migrations */
	struct vfiomig_ctx *ctx;   /* a reference */
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
	struct vfiomig_mig *mig;         /* the migration object on this device, or NULL */
};

/*
 * VFIO_DEVICE_FEATURE with `flags` (feature | GET/SET/PROBE) and a payload
 * of at most 32 bytes, copied in and back out (the kernel copies a failed
 * SET's payload back too). Returns the ioctl's result, -EINTR retried; no
 * log line (callers know what a failure means).
 */
int vm_device_feature(struct vfiomig_device *dev, uint32_t flags, void *payload, size_t len);

/* Reference counting: objects built on a device hold a reference. */
struct vfiomig_device *vm_device_get(struct vfiomig_device *dev);
void vm_device_put(struct vfiomig_device *dev);

/*
 * The basename of the target of the sysfs link <device sysfs>/<leaf>
 * ("driver", "mdev_type") into out; "" when the device has no sysfs path
 * or no such link.
 */
void vm_device_link_name(struct vfiomig_device *dev, const char *leaf, char *out, size_t len);

/* VFIO_DEVICE_RESET, retried on -EINTR; 0 or -errno, no log line. */
int vm_device_reset(struct vfiomig_device *dev);

/* True when the device is a mediated device (emulated IOMMU group). */
bool vm_device_is_mdev(const struct vfiomig_device *dev);

/* Cached device info (fetched on first use). */
int vm_device_info(struct vfiomig_device *dev, const struct vu_device_info **info);

#endif
