/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: the library context.
 *
 * A context carries the log callback and the kernel interface every
 * object created from it uses. It is reference counted: vfiomig_ctx_new()
 * returns one reference, and every object made from it (devices, streams,
 * migrations, device sets, dirty-tracking sessions, region maps) holds one
 * of its own until it is closed or freed. So objects may be released in
 * any order: vfiomig_ctx_unref() with devices still open only drops the
 * caller's reference, and the context goes with the last object.
 *
 * Threads: a context and everything created from it may be used from one
 * thread at a time (the caller serialises). Distinct contexts are fully
 * independent and may be used concurrently; the library has no global
 * mutable state. The library starts threads of its own only inside
 * vfiomig_mig_set_save_complete() and vfiomig_mig_set_load(), and joins
 * them before those return; while they run, the context's log callback
 * is still called by one thread at a time (see migration.h).
 */
#ifndef VFIOMIG_CTX_H
#define VFIOMIG_CTX_H

#include <vfiomig/common.h>
#include <vfiomig/kernel.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfiomig_ctx;

/*
 * Log callback: receives an already formatted, NUL-terminated message
 * without a trailing newline, and a priority (VFIOMIG_LOG_*). `user` is
 * the pointer given with the callback. The message is valid only during
 * the call.
 */
typedef void (*vfiomig_log_fn)(void *user, int priority, const char *msg);

struct vfiomig_ctx_opts {
	size_t sz;
	/* Log callback; NULL: messages at or above log_priority go to stderr. */
	vfiomig_log_fn log_fn;
	void *log_user;
	/*
	 * Kernel interface. NULL: the real system calls. See kernel.h. The
	 * table is copied; `kernel_user` is passed to every op.
	 */
	const struct vfiomig_kernel_ops *kernel_ops;
	void *kernel_user;
	/*
	 * Highest priority value that is delivered (VFIOMIG_LOG_*). 0 means the
	 * default: VFIOMIG_LOG_ERR, or the VFIOMIG_LOG environment variable
	 * ("err", "warning", "info", "debug" or a number) when set (read with
	 * secure_getenv).
	 */
	int32_t log_priority;
	uint32_t reserved;
};

/*
 * Create a context. On success stores it in *out (one reference) and
 * returns 0; on failure returns -EINVAL (bad opts, or a kernel_ops table
 * with ops this library does not know) or -ENOMEM, with one log line
 * (through opts->log_fn when opts got that far, else on stderr).
 */
VFIOMIG_API int vfiomig_ctx_new(const struct vfiomig_ctx_opts *opts, struct vfiomig_ctx **out);

/* Take another reference. Returns ctx (NULL is accepted and returned). */
VFIOMIG_API struct vfiomig_ctx *vfiomig_ctx_ref(struct vfiomig_ctx *ctx);

/*
 * Drop a reference; the context is freed when the last one goes (objects
 * made from it hold their own). Returns NULL. NULL is accepted.
 */
VFIOMIG_API struct vfiomig_ctx *vfiomig_ctx_unref(struct vfiomig_ctx *ctx);

/* Replace the log callback (NULL restores the stderr default). */
VFIOMIG_API void vfiomig_ctx_set_log_fn(struct vfiomig_ctx *ctx, vfiomig_log_fn fn, void *user);

/* Set / get the highest priority delivered (VFIOMIG_LOG_ERR..VFIOMIG_LOG_DEBUG). */
VFIOMIG_API int vfiomig_ctx_set_log_priority(struct vfiomig_ctx *ctx, int priority);
VFIOMIG_API int vfiomig_ctx_get_log_priority(const struct vfiomig_ctx *ctx);

/*
 * Emit `msg` through the context's log callback at `priority`, filtered
 * like the library's own lines. For components built on the library (the
 * simulator, VMM shims) that want their messages in the same place.
 */
VFIOMIG_API void vfiomig_ctx_log(struct vfiomig_ctx *ctx, int priority, const char *msg);

/* vfiomig_ctx_unrefp(): see VFIOMIG_CLEANUP in common.h. */
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_ctx, vfiomig_ctx_unref)

#ifdef __cplusplus
}
#endif
#endif
