/* SPDX-License-Identifier: MIT */
/*
 * White-box tests of the context and the kernel-interface layer: opts
 * checks, logging, op dispatch, the full-I/O loops and the argsz-growth
 * loop (linked against libvfiomig-internal).
 */
#include "testutil.h"

#include <stdlib.h>

#include "internal.h"

static struct logcap lc;

static struct vfiomig_ctx *ctx_with(const struct vfiomig_kernel_ops *k, void *user, int prio)
{
	VFIOMIG_OPTS(ctx_opts, o, .log_fn = logcap_fn, .log_user = &lc, .log_priority = prio,
		     .kernel_ops = k, .kernel_user = user);
	struct vfiomig_ctx *ctx = NULL;

	memset(&lc, 0, sizeof(lc));
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), 0);
	return ctx;
}

Test(ctx, defaults_and_priority)
{
	struct vfiomig_ctx *ctx;

	unsetenv("VFIOMIG_LOG");
	cr_assert_eq(vfiomig_ctx_new(NULL, &ctx), 0);
	cr_assert_eq(vfiomig_ctx_get_log_priority(ctx), VFIOMIG_LOG_ERR);
	vfiomig_ctx_unref(ctx);

	setenv("VFIOMIG_LOG", "debug", 1);
	cr_assert_eq(vfiomig_ctx_new(NULL, &ctx), 0);
	cr_assert_eq(vfiomig_ctx_get_log_priority(ctx), VFIOMIG_LOG_DEBUG);
	cr_assert_eq(vfiomig_ctx_set_log_priority(ctx, 9), -EINVAL);
	cr_assert_eq(vfiomig_ctx_set_log_priority(ctx, VFIOMIG_LOG_INFO), 0);
	cr_assert_eq(vfiomig_ctx_get_log_priority(ctx), VFIOMIG_LOG_INFO);
	vfiomig_ctx_unref(ctx);
	setenv("VFIOMIG_LOG", "6", 1);
	cr_assert_eq(vfiomig_ctx_new(NULL, &ctx), 0);
	cr_assert_eq(vfiomig_ctx_get_log_priority(ctx), VFIOMIG_LOG_INFO);
	vfiomig_ctx_unref(ctx);
	unsetenv("VFIOMIG_LOG");
}

Test(ctx, opts_size_rules)
{
	struct {
		struct vfiomig_ctx_opts o;
		uint32_t future;
	} big;
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_ctx_opts small = { .sz = 4 };

	cr_assert_eq(vfiomig_ctx_new(&small, &ctx), -EINVAL);
	cr_assert_null(ctx);
	memset(&big, 0, sizeof(big));
	big.o.sz = sizeof(big);
	cr_assert_eq(vfiomig_ctx_new(&big.o, &ctx), 0);
	vfiomig_ctx_unref(ctx);
	big.future = 7;
	cr_assert_eq(vfiomig_ctx_new(&big.o, &ctx), -EINVAL);
	{
		VFIOMIG_OPTS(ctx_opts, o, .log_priority = 42);
		cr_assert_eq(vfiomig_ctx_new(&o, &ctx), -EINVAL);
	}
}

/* Opts errors reach the caller's callback, reserved members are checked, failures say why. */
Test(ctx, opts_errors_are_logged_through_the_callers_callback)
{
	struct vfiomig_ctx *ctx = NULL;
	VFIOMIG_OPTS(ctx_opts, o, .log_fn = logcap_fn, .log_user = &lc);

	memset(&lc, 0, sizeof(lc));
	o.reserved = 1;
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), -EINVAL);
	cr_assert_null(ctx);
	cr_assert_eq(lc.errors, 1);
	cr_assert(strstr(lc.last, "vfiomig_ctx_opts") && strstr(lc.last, "reserved"), "%s",
		  lc.last);
	o.reserved = 0;
	o.log_priority = 42;
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), -EINVAL);
	cr_assert_eq(lc.errors, 2);
	cr_assert(strstr(lc.last, "log_priority 42"), "%s", lc.last);
}

/* A kernel-ops table from a newer header: fine with NULL extra ops (said in the log), else refused. */
Test(ctx, kernel_ops_larger_than_known)
{
	struct {
		struct vfiomig_kernel_ops k;
		void (*future_op)(void);
	} big;
	struct vfiomig_ctx *ctx = NULL;
	VFIOMIG_OPTS(ctx_opts, o, .log_fn = logcap_fn, .log_user = &lc,
		     .log_priority = VFIOMIG_LOG_INFO, .kernel_ops = &big.k);

	memset(&lc, 0, sizeof(lc));
	memcpy(&big.k, vfiomig_kernel_ops_default(), sizeof(big.k));
	big.k.sz = sizeof(big);
	big.future_op = NULL;
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), 0);
	cr_assert_eq(lc.errors, 0);
	cr_assert(strstr(lc.last, "newer header"), "the bigger table is mentioned: %s", lc.last);
	vfiomig_ctx_unref(ctx);
	big.future_op = abort;
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), -EINVAL);
	cr_assert_null(ctx);
	cr_assert_eq(lc.errors, 1);
	cr_assert(strstr(lc.last, "does not know"), "%s", lc.last);
	/* A table too small to hold its own sz. */
	big.k.sz = 2;
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), -EINVAL);
	cr_assert_eq(lc.errors, 2);
}

Test(ctx, log_lines_are_filtered_formatted_and_carry_strerror)
{
	struct vfiomig_ctx *ctx = ctx_with(NULL, NULL, VFIOMIG_LOG_WARNING);

	vm_dbg(ctx, "hidden %d", 1);
	cr_assert_eq(lc.count, 0);
	cr_assert_eq(vm_err(ctx, -ENOENT, "device %s: open %s", "x", "/dev/vfio/7"), -ENOENT);
	cr_assert_eq(lc.errors, 1);
	cr_assert_str_eq(lc.last, "device x: open /dev/vfio/7: No such file or directory");
	vm_warn(ctx, "careful");
	cr_assert_eq(lc.count, 2);
	cr_assert_str_eq(lc.last, "careful");
	/* NULL ctx: silent, still returns the error. */
	cr_assert_eq(vm_err(NULL, -EIO, "nothing"), -EIO);
	vfiomig_ctx_unref(ctx);
}

/* ---- a scripted fake kernel for the loops ---- */

struct fake {
	int calls;
	int script[16]; /* per call: >0 bytes to transfer (capped), 0 EOF, <0 error */
	unsigned char data[256];
	uint32_t want_argsz; /* for the info ioctl: argsz to ask for */
	int ioctl_calls;
};

static ssize_t fake_pread(void *user, int fd, void *buf, size_t len, uint64_t off)
{
	struct fake *f = user;
	int s = f->script[f->calls++ % 16];

	if (s <= 0)
		return s;
	if ((size_t)s > len)
		s = (int)len;
	memcpy(buf, f->data + off, (size_t)s);
	return s;
}

static int fake_ioctl(void *user, int fd, unsigned long req, void *arg)
{
	struct fake *f = user;
	uint32_t argsz;

	f->ioctl_calls++;
	memcpy(&argsz, arg, 4);
	if (argsz < f->want_argsz) {
		memcpy(arg, &f->want_argsz, 4);
		return 0;
	}
	memset((char *)arg + 24, 0x5a, argsz - 24);
	return 0;
}

Test(ctx, pread_full_loops_and_reports_eof)
{
	static const struct vfiomig_kernel_ops k = { .sz = sizeof(k), .pread = fake_pread };
	struct fake f = { .script = { 3, -EINTR, 5, 100 } };
	struct vfiomig_ctx *ctx = ctx_with(&k, &f, VFIOMIG_LOG_ERR);
	unsigned char out[20];

	for (int i = 0; i < 256; i++)
		f.data[i] = (unsigned char)i;
	cr_assert_eq(vk_pread_full(ctx, 3, out, sizeof(out), 10), 0);
	cr_assert_eq(f.calls, 4);
	for (int i = 0; i < 20; i++)
		cr_assert_eq(out[i], 10 + i);

	memset(&f.script, 0, sizeof(f.script));
	f.script[0] = 4;
	f.script[1] = 0;
	f.calls = 0;
	cr_assert_eq(vk_pread_full(ctx, 3, out, sizeof(out), 0), -EIO);
	f.script[0] = -EFAULT;
	f.calls = 0;
	cr_assert_eq(vk_pread_full(ctx, 3, out, sizeof(out), 0), -EFAULT);
	vfiomig_ctx_unref(ctx);
}

Test(ctx, missing_ops_are_enosys_never_real_syscalls)
{
	/* An old, short table: only sz and open fit. */
	struct vfiomig_kernel_ops k = { .sz = offsetof(struct vfiomig_kernel_ops, close) };
	struct vfiomig_ctx *ctx;

	k.open = NULL;
	ctx = ctx_with(&k, NULL, VFIOMIG_LOG_ERR);
	cr_assert_eq(vk_open(ctx, "/dev/null", 0), -ENOSYS);
	cr_assert_eq(vk_ioctl(ctx, 0, 0, NULL), -ENOSYS);
	cr_assert_eq(vk_readlink(ctx, "/", NULL, 0), -ENOSYS);
	vfiomig_ctx_unref(ctx);
}

Test(ctx, info_ioctl_grows_once_then_succeeds)
{
	static const struct vfiomig_kernel_ops k = { .sz = sizeof(k), .ioctl = fake_ioctl };
	struct fake f = { .want_argsz = 200 };
	struct vfiomig_ctx *ctx = ctx_with(&k, &f, VFIOMIG_LOG_ERR);
	struct vu_iommu_type1_info hdr = { 0 };
	size_t len = 0;
	void *buf = NULL;

	cr_assert_eq(vk_info_ioctl(ctx, 3, VU_IOMMU_GET_INFO, &hdr, sizeof(hdr), &buf, &len, "t", 0),
		     0);
	cr_assert_eq(f.ioctl_calls, 2);
	cr_assert_eq(len, 200);
	cr_assert_eq(((unsigned char *)buf)[199], 0x5a);
	free(buf);

	/* A kernel asking for more than the limit is refused before allocating it. */
	f.want_argsz = VM_INFO_MAX + 1;
	f.ioctl_calls = 0;
	cr_assert_eq(vk_info_ioctl(ctx, 3, VU_IOMMU_GET_INFO, &hdr, sizeof(hdr), &buf, &len, "t", 0),
		     -E2BIG);
	cr_assert_eq(f.ioctl_calls, 1);
	cr_assert_eq(lc.errors, 1);
	vfiomig_ctx_unref(ctx);
}

static int grow_forever_ioctl(void *user, int fd, unsigned long req, void *arg)
{
	uint32_t argsz;

	memcpy(&argsz, arg, 4);
	argsz += 8;
	memcpy(arg, &argsz, 4);
	(*(int *)user)++;
	return 0;
}

Test(ctx, info_ioctl_growth_is_bounded)
{
	static const struct vfiomig_kernel_ops k = { .sz = sizeof(k), .ioctl = grow_forever_ioctl };
	struct vu_iommu_type1_info hdr = { 0 };
	int calls = 0;
	struct vfiomig_ctx *ctx = ctx_with(&k, &calls, VFIOMIG_LOG_ERR);
	size_t len;
	void *buf;

	cr_assert_eq(vk_info_ioctl(ctx, 3, VU_IOMMU_GET_INFO, &hdr, sizeof(hdr), &buf, &len, "t", 0),
		     -EOVERFLOW);
	cr_assert_eq(calls, 4);
	vfiomig_ctx_unref(ctx);
}

Test(ctx, version_and_strerror)
{
	cr_assert_str_eq(vfiomig_version(), VFIOMIG_VERSION_STRING);
	cr_assert_str_eq(vfiomig_strerror(-ENOENT), "No such file or directory");
	vfiomig_free(NULL);
}
