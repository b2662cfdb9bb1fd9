/* SPDX-License-Identifier: MIT */
/*
 * The library context: log callback and priority, the kernel ops table,
 * and the small helpers every object shares (logging, sized-struct checks).
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static void log_stderr(void *user, int priority, const char *msg)
{
	(void)user;
	(void)priority;
	fprintf(stderr, "libvfiomig: %s\n", msg);
}

static int parse_priority(const char *s)
{
	static const struct {
		const char *name;
		int prio;
	} names[] = {
		{ "err", VFIOMIG_LOG_ERR },       { "error", VFIOMIG_LOG_ERR },
		{ "warning", VFIOMIG_LOG_WARNING }, { "warn", VFIOMIG_LOG_WARNING },
		{ "notice", VFIOMIG_LOG_NOTICE }, { "info", VFIOMIG_LOG_INFO },
		{ "debug", VFIOMIG_LOG_DEBUG },
	};
	char *end;
	long v;

	for (size_t i = 0; i < VM_ARRAY_SIZE(names); i++)
		if (strcasecmp(s, names[i].name) == 0)
			return names[i].prio;
	v = strtol(s, &end, 10);
	if (end != s && *end == '\0' && v >= 0 && v <= VFIOMIG_LOG_DEBUG)
		return (int)v;
	return -1;
}

static const char *get_env(const char *name)
{
#ifdef HAVE_SECURE_GETENV
	return secure_getenv(name);
#else
	return getenv(name);
#endif
}

/*
 * Copy the caller's kernel ops table. A table from a newer header may be
 * larger than ours: fine while the ops we do not know are NULL (we would
 * never call them), refused otherwise.
 */
static int copy_kernel_ops(struct vfiomig_ctx *ctx, const struct vfiomig_kernel_ops *kops)
{
	size_t ksz = kops->sz;
	long bad = vm_sized_check(kops, sizeof(ctx->kops));

	if (bad < 0)
		return vm_err(ctx, -EINVAL, "vfiomig_kernel_ops: sz %zu is too small", ksz);
	if (bad > 0)
		return vm_err(ctx, -EINVAL, "vfiomig_kernel_ops: the table (%zu bytes) sets an op at "
			      "byte %ld that this library version (%s, %zu bytes) does not know",
			      ksz, bad - 1, VFIOMIG_VERSION_STRING, sizeof(ctx->kops));
	if (ksz > sizeof(ctx->kops))
		vm_info(ctx, "vfiomig_kernel_ops: the table (%zu bytes) is from a newer header than "
			"this library (%s, %zu bytes); its extra ops are all NULL", ksz,
			VFIOMIG_VERSION_STRING, sizeof(ctx->kops));
	/* Keep only the ops the caller's table has; the rest stay NULL (-ENOSYS). */
	memcpy(&ctx->kops, kops, ksz < sizeof(ctx->kops) ? ksz : sizeof(ctx->kops));
	ctx->kops.sz = sizeof(ctx->kops);
	return 0;
}

int vfiomig_ctx_new(const struct vfiomig_ctx_opts *opts, struct vfiomig_ctx **out)
{
	const struct vfiomig_kernel_ops *kops;
	struct vfiomig_ctx *ctx;
	int err, prio;

	if (!out)
	{
		log_stderr(NULL, VFIOMIG_LOG_ERR, "vfiomig_ctx_new: out is NULL");
		return -EINVAL;
	}
	*out = NULL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		log_stderr(NULL, VFIOMIG_LOG_ERR, "vfiomig_ctx_new: out of memory");
		return -ENOMEM;
	}
	ctx->refs = 1;
	{
		pthread_mutexattr_t a;

		pthread_mutexattr_init(&a);
		pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
		pthread_mutex_init(&ctx->log_lock, &a);
		pthread_mutexattr_destroy(&a);
	}
	/* Until the opts are read, failures are told on stderr. */
	ctx->log_fn = log_stderr;
	ctx->log_priority = VFIOMIG_LOG_ERR;
	/* The caller's log callback, as soon as sz shows it is there: it gets even the opts errors. */
	if (VM_OPTS_GET(opts, struct vfiomig_ctx_opts, log_fn, NULL)) {
		ctx->log_fn = opts->log_fn;
		ctx->log_user = VM_OPTS_GET(opts, struct vfiomig_ctx_opts, log_user, NULL);
	}
	err = VM_OPTS_VALID(ctx, opts, struct vfiomig_ctx_opts, log_priority);
	if (err)
		goto fail;

	prio = VM_OPTS_GET(opts, struct vfiomig_ctx_opts, log_priority, 0);
	if (prio < 0 || prio > VFIOMIG_LOG_DEBUG) {
		err = vm_err(ctx, -EINVAL, "vfiomig_ctx_opts: log_priority %d (%d..%d)", prio,
			     VFIOMIG_LOG_ERR, VFIOMIG_LOG_DEBUG);
		goto fail;
	}
	if (prio == 0) {
		const char *env = get_env("VFIOMIG_LOG");

		prio = env ? parse_priority(env) : -1;
		if (prio <= 0)
			prio = VFIOMIG_LOG_ERR;
	}
	ctx->log_priority = prio;

	kops = VM_OPTS_GET(opts, struct vfiomig_ctx_opts, kernel_ops, NULL);
	ctx->kops_user = VM_OPTS_GET(opts, struct vfiomig_ctx_opts, kernel_user, NULL);
	err = copy_kernel_ops(ctx, kops ? kops : vfiomig_kernel_ops_default());
	if (err)
		goto fail;
	*out = ctx;
	return 0;
fail:
	pthread_mutex_destroy(&ctx->log_lock);
	free(ctx);
	return err;
}

__thread struct vm_tls vm_tls;

struct vfiomig_ctx *vfiomig_ctx_ref(struct vfiomig_ctx *ctx)
{
	if (ctx)
		__atomic_add_fetch(&ctx->refs, 1, __ATOMIC_RELAXED);
	return ctx;
}

struct vfiomig_ctx *vfiomig_ctx_unref(struct vfiomig_ctx *ctx)
{
	if (ctx && __atomic_sub_fetch(&ctx->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		pthread_mutex_destroy(&ctx->log_lock);
		free(ctx);
	}
	return NULL;
}

void vfiomig_ctx_set_log_fn(struct vfiomig_ctx *ctx, vfiomig_log_fn fn, void *user)
{
	if (!ctx)
		return;
	ctx->log_fn = fn ? fn : log_stderr;
	ctx->log_user = fn ? user : NULL;
}

int vfiomig_ctx_set_log_priority(struct vfiomig_ctx *ctx, int priority)
{
	if (!ctx || priority < 0 || priority > VFIOMIG_LOG_DEBUG)
		return -EINVAL;
	ctx->log_priority = priority;
	return 0;
}

int vfiomig_ctx_get_log_priority(const struct vfiomig_ctx *ctx)
{
	return ctx ? ctx->log_priority : -EINVAL;
}

__attribute__((format(printf, 4, 0)))
static void vm_vlog(struct vfiomig_ctx *ctx, int priority, const char *suffix, const char *fmt,
		    va_list ap)
{
	char msg[1024];
	int n;

	/* ERR lines are kept even when filtered out: they are a failure's reason (return path). */
	if (!ctx || (priority > ctx->log_priority && priority != VFIOMIG_LOG_ERR))
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n >= 0 && suffix && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", suffix);
	if (priority == VFIOMIG_LOG_ERR) {
		/* Cut to fit (the return path carries at most 255 bytes of it). */
		size_t len = strnlen(msg, sizeof(vm_tls.err_msg) - 1);

		memcpy(vm_tls.err_msg, msg, len);
		vm_tls.err_msg[len] = '\0';
	}
	if (priority <= ctx->log_priority) {
		pthread_mutex_lock(&ctx->log_lock);
		ctx->log_fn(ctx->log_user, priority, msg);
		pthread_mutex_unlock(&ctx->log_lock);
	}
}

void vfiomig_ctx_log(struct vfiomig_ctx *ctx, int priority, const char *msg)
{
	if (ctx && msg)
		vm_log(ctx, priority, "%s", msg);
}

void vm_log(struct vfiomig_ctx *ctx, int priority, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vm_vlog(ctx, priority, NULL, fmt, ap);
	va_end(ap);
}

int vm_err(struct vfiomig_ctx *ctx, int err, const char *fmt, ...)
{
	int prio = VFIOMIG_LOG_ERR;
	va_list ap;

	if (ctx && vm_tls.quiet) {
		prio = VFIOMIG_LOG_DEBUG; /* the caller handles this failure */
	} else if (ctx && vm_tls.ctx == ctx && vm_tls.depth) {
		/* Shared with the caller's thread in a parallel run: atomic. */
		if (__atomic_exchange_n(vm_tls.err_flag, 1, __ATOMIC_ACQ_REL))
			prio = VFIOMIG_LOG_DEBUG; /* this call already said what failed */
	}
	va_start(ap, fmt);
	vm_vlog(ctx, prio, vfiomig_strerror(err), fmt, ap);
	va_end(ap);
	return err;
}

int vm_enomem(struct vfiomig_ctx *ctx, const char *what)
{
	return vm_err(ctx, -ENOMEM, "%s", what);
}

int vm_arg_err(struct vfiomig_ctx *ctx, const char *func)
{
	return vm_err(ctx, -EINVAL, "%s: invalid arguments (a NULL pointer, or a struct whose sz "
		      "is not set)", func);
}

int vm_opts_check(struct vfiomig_ctx *ctx, const void *opts, size_t known_sz, const char *what)
{
	long bad = vm_sized_check(opts, known_sz);

	if (bad < 0)
		return vm_err(ctx, -EINVAL, "%s: sz %zu is too small (set it with VFIOMIG_OPTS)",
			      what, vm_sized_sz(opts));
	if (bad > 0)
		return vm_err(ctx, -EINVAL,
			      "%s: non-zero byte %ld: a reserved member, or a field this library "
			      "version (%s) does not know", what, bad - 1, VFIOMIG_VERSION_STRING);
	return 0;
}

void vm_out_copy(void *dst, const void *src, size_t known_sz)
{
	size_t sz = *(size_t *)dst;
	size_t n = sz < known_sz ? sz : known_sz;

	if (n > sizeof(size_t))
		memcpy((char *)dst + sizeof(size_t), (const char *)src + sizeof(size_t),
		       n - sizeof(size_t));
}

void vfiomig_free(void *ptr)
{
	free(ptr);
}

const char *vfiomig_version(void)
{
	return VFIOMIG_VERSION_STRING;
}

const char *vfiomig_strerror(int err)
{
	return strerror(err < 0 ? -err : err);
}
