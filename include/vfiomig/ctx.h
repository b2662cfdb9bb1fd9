/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: the library context.
 *
 * A context carries the log callback and the kernel interface every
 * object created from it uses. Objects (devices, regions maps, ...)
 * keep a pointer to their context: free the context last.
 *
 * Threads: a context and everything created from it may be used from one
 * thread at a time (the caller serialises). Distinct contexts are fully
 * independent and may be used concurrently; the library has no global
 * mutable state.
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
	 * Highest priority value that is delivered (VFIOMIG_LOG_*). 0 means the
	 * default: VFIOMIG_LOG_ERR, or the VFIOMIG_LOG environment variable
	 * ("err", "warning", "info", "debug" or a number) when set (read with
	 * secure_getenv).
	 */
	int32_t log_priority;
	uint32_t :32;
	/*
	 * Kernel interface. NULL: the real system calls. See kernel.h. The
	 * table is copied; `kernel_user` is passed to every op.
	 */
	const struct vfiomig_kernel_ops *kernel_ops;
	void *kernel_user;
	size_t :0;
};

/*
 * Create a context. On success stores it in *out and returns 0; on
 * failure returns -EINVAL (bad opts) or -ENOMEM. Free it with
 * vfiomig_ctx_free() after every object created from it.
 */
VFIOMIG_API int vfiomig_ctx_new(const struct vfiomig_ctx_opts *opts, struct vfiomig_ctx **out);

/* Free a context. NULL is accepted. */
VFIOMIG_API void vfiomig_ctx_free(struct vfiomig_ctx *ctx);

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

#ifdef __cplusplus
}
#endif
#endif
