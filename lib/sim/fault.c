/* SPDX-License-Identifier: MIT */
/*
 * The fault injector: a kernel ops table wrapping another one (the
 * simulator's or the real system calls) that counts calls per op and
 * makes chosen calls fail with an errno or transfer fewer bytes, so the
 * library's error paths, EINTR retries and short-transfer loops can be
 * driven deterministically.
 *
 * Its counters and armed faults are under one mutex, held only to count
 * a call and pick the fault that hits it: the inner op runs outside it,
 * so several threads may go through one injector.
 */
#include "sim_internal.h"

#include <stdlib.h>

struct fault_arm {
	uint32_t op;
	uint32_t times;       /* >= 1 */
	uint64_t nth;         /* >= 1 */
	int32_t error;
	uint64_t short_len;
	uint64_t ioctl_request;
	uint64_t seen;        /* matching calls since the fault was armed */
};

struct vfiomig_fault {
	pthread_mutex_t lock;            /* calls, fired, arms */
	struct vfiomig_kernel_ops inner; /* the caller's table, missing ops NULL */
	void *inner_user;
	uint64_t calls[VFIOMIG_KOP_COUNT];
	uint64_t fired;
	struct fault_arm *arms;
	size_t narms, arms_cap;
};

int vfiomig_fault_new(const struct vfiomig_kernel_ops *inner, void *inner_user,
		      struct vfiomig_fault **out)
{
	struct vfiomig_fault *f;
	size_t sz;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!inner || inner->sz < sizeof(size_t))
		return -EINVAL;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	if (pthread_mutex_init(&f->lock, NULL)) {
		free(f);
		return -ENOMEM;
	}
	/* Keep the ops the caller's table has; beyond its sz they stay NULL (-ENOSYS). */
	sz = inner->sz < sizeof(f->inner) ? inner->sz : sizeof(f->inner);
	memcpy(&f->inner, inner, sz);
	f->inner.sz = sizeof(f->inner);
	f->inner_user = inner_user;
	*out = f;
	return 0;
}

void vfiomig_fault_free(struct vfiomig_fault *f)
{
	if (!f)
		return;
	pthread_mutex_destroy(&f->lock);
	free(f->arms);
	free(f);
}

static bool fault_transfer_op(uint32_t op)
{
	return op == VFIOMIG_KOP_READ || op == VFIOMIG_KOP_WRITE || op == VFIOMIG_KOP_PREAD ||
	       op == VFIOMIG_KOP_PWRITE;
}

int vfiomig_fault_add(struct vfiomig_fault *f, const struct vfiomig_fault_spec *spec)
{
	struct fault_arm a = { 0 }, *arms;

	if (!f || !spec || vm_sized_check(spec, VM_KNOWN_SZ(struct vfiomig_fault_spec, error)))
		return -EINVAL;
	a.op = VM_OPTS_GET(spec, struct vfiomig_fault_spec, op, 0);
	a.times = VM_OPTS_GET(spec, struct vfiomig_fault_spec, times, 0);
	a.nth = VM_OPTS_GET(spec, struct vfiomig_fault_spec, nth, 0);
	a.error = VM_OPTS_GET(spec, struct vfiomig_fault_spec, error, 0);
	a.short_len = VM_OPTS_GET(spec, struct vfiomig_fault_spec, short_len, 0);
	a.ioctl_request = VM_OPTS_GET(spec, struct vfiomig_fault_spec, ioctl_request, 0);
	if (a.op >= VFIOMIG_KOP_COUNT)
		return -EINVAL;
	if (a.error > 0 || a.error < -4095)
		return -EINVAL; /* a negative errno, or 0 for a short transfer */
	if (!a.error && !fault_transfer_op(a.op))
		return -EINVAL; /* only transfers can be shortened */
	if (a.ioctl_request && a.op != VFIOMIG_KOP_IOCTL)
		return -EINVAL;
	if (!a.times)
		a.times = 1;
	if (!a.nth)
		a.nth = 1;
	pthread_mutex_lock(&f->lock);
	if (f->narms == f->arms_cap) {
		size_t ncap = f->arms_cap ? f->arms_cap * 2 : 4;

		arms = realloc(f->arms, ncap * sizeof(*arms));
		if (!arms) {
			pthread_mutex_unlock(&f->lock);
			return -ENOMEM;
		}
		f->arms = arms;
		f->arms_cap = ncap;
	}
	f->arms[f->narms++] = a;
	pthread_mutex_unlock(&f->lock);
	return 0;
}

void vfiomig_fault_clear(struct vfiomig_fault *f)
{
	if (!f)
		return;
	pthread_mutex_lock(&f->lock);
	f->narms = 0;
	pthread_mutex_unlock(&f->lock);
}

/* The counters are read under the lock, the one thing changed through a const injector. */
static pthread_mutex_t *fault_const_lock(const struct vfiomig_fault *f)
{
	return (pthread_mutex_t *)&f->lock;
}

uint64_t vfiomig_fault_calls(const struct vfiomig_fault *f, uint32_t op)
{
	uint64_t n;

	if (!f || op >= VFIOMIG_KOP_COUNT)
		return 0;
	pthread_mutex_lock(fault_const_lock(f));
	n = f->calls[op];
	pthread_mutex_unlock(fault_const_lock(f));
	return n;
}

uint64_t vfiomig_fault_fired(const struct vfiomig_fault *f)
{
	uint64_t n;

	if (!f)
		return 0;
	pthread_mutex_lock(fault_const_lock(f));
	n = f->fired;
	pthread_mutex_unlock(fault_const_lock(f));
	return n;
}

/*
 * Count the call and find the fault hitting it: every armed fault counts
 * its matching calls; the first one whose window [nth, nth + times) holds
 * this call applies. Returns a copy (*out) of what to do: true when a
 * fault hits.
 */
static bool fault_hit(struct vfiomig_fault *f, uint32_t op, unsigned long request,
		      struct fault_arm *out)
{
	const struct fault_arm *hit = NULL;

	pthread_mutex_lock(&f->lock);
	f->calls[op]++;
	for (size_t i = 0; i < f->narms; i++) {
		struct fault_arm *a = &f->arms[i];

		if (a->op != op || (a->ioctl_request && a->ioctl_request != request))
			continue;
		a->seen++;
		if (!hit && a->seen >= a->nth && a->seen - a->nth < a->times)
			hit = a;
	}
	if (hit) {
		f->fired++;
		*out = *hit;
	}
	pthread_mutex_unlock(&f->lock);
	return hit != NULL;
}

/*
 * For transfers: returns 1 to call the inner op with *len (maybe
 * shortened), or 0 with *ret set (an error, or a transfer of 0 bytes).
 */
static int fault_transfer(struct vfiomig_fault *f, uint32_t op, size_t *len, ssize_t *ret)
{
	struct fault_arm a;

	if (!fault_hit(f, op, 0, &a))
		return 1;
	if (a.error) {
		*ret = a.error;
		return 0;
	}
	if (!a.short_len) {
		*ret = 0;
		return 0;
	}
	if (a.short_len < *len)
		*len = (size_t)a.short_len;
	return 1;
}

#define FAULT_INNER(f, op, ...) \
	((f)->inner.op ? (f)->inner.op((f)->inner_user, __VA_ARGS__) : -ENOSYS)

static int fault_open(void *user, const char *path, int flags)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_OPEN, 0, &a);

	return hit ? a.error : FAULT_INNER(f, open, path, flags);
}

static int fault_close(void *user, int fd)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_CLOSE, 0, &a);
	int ret = FAULT_INNER(f, close, fd);

	/* Linux releases the fd even when close() reports an error: so does a failed close here. */
	return hit ? a.error : ret;
}

static int fault_dup(void *user, int fd)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_DUP, 0, &a);

	return hit ? a.error : FAULT_INNER(f, dup, fd);
}

static int fault_ioctl(void *user, int fd, unsigned long request, void *arg)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_IOCTL, request, &a);

	return hit ? a.error : FAULT_INNER(f, ioctl, fd, request, arg);
}

static ssize_t fault_read(void *user, int fd, void *buf, size_t len)
{
	struct vfiomig_fault *f = user;
	ssize_t ret;

	if (!fault_transfer(f, VFIOMIG_KOP_READ, &len, &ret))
		return ret;
	return FAULT_INNER(f, read, fd, buf, len);
}

static ssize_t fault_write(void *user, int fd, const void *buf, size_t len)
{
	struct vfiomig_fault *f = user;
	ssize_t ret;

	if (!fault_transfer(f, VFIOMIG_KOP_WRITE, &len, &ret))
		return ret;
	return FAULT_INNER(f, write, fd, buf, len);
}

static ssize_t fault_pread(void *user, int fd, void *buf, size_t len, uint64_t off)
{
	struct vfiomig_fault *f = user;
	ssize_t ret;

	if (!fault_transfer(f, VFIOMIG_KOP_PREAD, &len, &ret))
		return ret;
	return FAULT_INNER(f, pread, fd, buf, len, off);
}

static ssize_t fault_pwrite(void *user, int fd, const void *buf, size_t len, uint64_t off)
{
	struct vfiomig_fault *f = user;
	ssize_t ret;

	if (!fault_transfer(f, VFIOMIG_KOP_PWRITE, &len, &ret))
		return ret;
	return FAULT_INNER(f, pwrite, fd, buf, len, off);
}

static int fault_mmap(void *user, int fd, uint64_t off, size_t len, int prot, void **addr)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_MMAP, 0, &a);

	return hit ? a.error : FAULT_INNER(f, mmap, fd, off, len, prot, addr);
}

static int fault_munmap(void *user, void *addr, size_t len)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_MUNMAP, 0, &a);

	return hit ? a.error : FAULT_INNER(f, munmap, addr, len);
}

static ssize_t fault_readlink(void *user, const char *path, char *buf, size_t len)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_READLINK, 0, &a);

	return hit ? a.error : FAULT_INNER(f, readlink, path, buf, len);
}

static int fault_readdir(void *user, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	struct vfiomig_fault *f = user;
	struct fault_arm a;
	bool hit = fault_hit(f, VFIOMIG_KOP_READDIR, 0, &a);

	return hit ? a.error : FAULT_INNER(f, readdir, path, fn, cb_user);
}

static const struct vfiomig_kernel_ops fault_ops = {
	.sz = sizeof(struct vfiomig_kernel_ops),
	.open = fault_open,
	.close = fault_close,
	.dup = fault_dup,
	.ioctl = fault_ioctl,
	.read = fault_read,
	.write = fault_write,
	.pread = fault_pread,
	.pwrite = fault_pwrite,
	.mmap = fault_mmap,
	.munmap = fault_munmap,
	.readlink = fault_readlink,
	.readdir = fault_readdir,
};

const struct vfiomig_kernel_ops *vfiomig_fault_kernel_ops(void)
{
	return &fault_ops;
}
