/* SPDX-License-Identifier: MIT */
/*
 * The kernel-interface layer: the default ops (real system calls), the
 * dispatch every other file uses, and the loops built on it (full-length
 * pread/pwrite, info ioctls with argsz growth). Nothing above this file
 * makes a system call on a VFIO object.
 */
#include "internal.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

/* ------------------------------------------------------ real syscalls */

static int sys_open(void *user, const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int sys_close(void *user, int fd)
{
	/* Linux closes the fd even when close() reports EINTR: never retry. */
	return close(fd) < 0 && errno != EINTR ? -errno : 0;
}

static int sys_dup(void *user, int fd)
{
	int nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	return nfd < 0 ? -errno : nfd;
}

static int sys_ioctl(void *user, int fd, unsigned long request, void *arg)
{
	int ret = ioctl(fd, request, arg);
	return ret < 0 ? -errno : ret;
}

static ssize_t sys_read(void *user, int fd, void *buf, size_t len)
{
	ssize_t n = read(fd, buf, len);
	return n < 0 ? -errno : n;
}

static ssize_t sys_write(void *user, int fd, const void *buf, size_t len)
{
	ssize_t n = write(fd, buf, len);
	return n < 0 ? -errno : n;
}

static ssize_t sys_pread(void *user, int fd, void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	n = pread(fd, buf, len, (off_t)off);
	return n < 0 ? -errno : n;
}

static ssize_t sys_pwrite(void *user, int fd, const void *buf, size_t len, uint64_t off)
{
	ssize_t n;

	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	n = pwrite(fd, buf, len, (off_t)off);
	return n < 0 ? -errno : n;
}

static int sys_mmap(void *user, int fd, uint64_t off, size_t len, int prot, void **addr)
{
	void *p;

	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	p = mmap(NULL, len, prot, MAP_SHARED, fd, (off_t)off);
	if (p == MAP_FAILED)
		return -errno;
	*addr = p;
	return 0;
}

static int sys_munmap(void *user, void *addr, size_t len)
{
	return munmap(addr, len) < 0 ? -errno : 0;
}

static ssize_t sys_readlink(void *user, const char *path, char *buf, size_t len)
{
	ssize_t n = readlink(path, buf, len);
	return n < 0 ? -errno : n;
}

static int sys_readdir(void *user, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	struct dirent *de;
	DIR *d;
	int ret = 0;

	d = opendir(path);
	if (!d)
		return -errno;
	for (;;) {
		errno = 0;
		de = readdir(d);
		if (!de) {
			ret = errno ? -errno : 0;
			break;
		}
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		ret = fn(cb_user, de->d_name);
		if (ret)
			break;
	}
	closedir(d);
	return ret;
}

static const struct vfiomig_kernel_ops default_ops = {
	.sz = sizeof(struct vfiomig_kernel_ops),
	.open = sys_open,
	.close = sys_close,
	.dup = sys_dup,
	.ioctl = sys_ioctl,
	.read = sys_read,
	.write = sys_write,
	.pread = sys_pread,
	.pwrite = sys_pwrite,
	.mmap = sys_mmap,
	.munmap = sys_munmap,
	.readlink = sys_readlink,
	.readdir = sys_readdir,
};

const struct vfiomig_kernel_ops *vfiomig_kernel_ops_default(void)
{
	return &default_ops;
}

/* -------------------------------------------------------------- dispatch */

#define VK_CALL(ctx, op, ...) \
	((ctx)->kops.op ? (ctx)->kops.op((ctx)->kops_user, __VA_ARGS__) : -ENOSYS)

int vk_open(struct vfiomig_ctx *ctx, const char *path, int flags)
{
	return VK_CALL(ctx, open, path, flags | O_CLOEXEC);
}

int vk_close(struct vfiomig_ctx *ctx, int fd)
{
	return fd < 0 ? 0 : VK_CALL(ctx, close, fd);
}

int vk_dup(struct vfiomig_ctx *ctx, int fd)
{
	return VK_CALL(ctx, dup, fd);
}

int vk_ioctl(struct vfiomig_ctx *ctx, int fd, unsigned long request, void *arg)
{
	return VK_CALL(ctx, ioctl, fd, request, arg);
}

ssize_t vk_read(struct vfiomig_ctx *ctx, int fd, void *buf, size_t len)
{
	return VK_CALL(ctx, read, fd, buf, len);
}

ssize_t vk_write(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len)
{
	return VK_CALL(ctx, write, fd, buf, len);
}

ssize_t vk_pread(struct vfiomig_ctx *ctx, int fd, void *buf, size_t len, uint64_t off)
{
	return VK_CALL(ctx, pread, fd, buf, len, off);
}

ssize_t vk_pwrite(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
	return VK_CALL(ctx, pwrite, fd, buf, len, off);
}

int vk_mmap(struct vfiomig_ctx *ctx, int fd, uint64_t off, size_t len, int prot, void **addr)
{
	return VK_CALL(ctx, mmap, fd, off, len, prot, addr);
}

int vk_munmap(struct vfiomig_ctx *ctx, void *addr, size_t len)
{
	return VK_CALL(ctx, munmap, addr, len);
}

ssize_t vk_readlink(struct vfiomig_ctx *ctx, const char *path, char *buf, size_t len)
{
	return VK_CALL(ctx, readlink, path, buf, len);
}

int vk_readdir(struct vfiomig_ctx *ctx, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	return VK_CALL(ctx, readdir, path, fn, cb_user);
}

/* ------------------------------------------------------------ loops */

int vk_ioctl_retry(struct vfiomig_ctx *ctx, int fd, unsigned long request, void *arg)
{
	int ret;

	do
		ret = vk_ioctl(ctx, fd, request, arg);
	while (ret == -EINTR);
	return ret;
}

int vk_pread_full(struct vfiomig_ctx *ctx, int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len) {
		ssize_t n = vk_pread(ctx, fd, p, len, off);
		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		if ((size_t)n > len)
			return -EIO; /* a transport claiming more than asked */
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* One loop for pwrite (off != NULL) and write (off == NULL). */
static int write_full(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len,
		      const uint64_t *off)
{
	const char *p = buf;
	uint64_t pos = off ? *off : 0;

	while (len) {
		ssize_t n = off ? vk_pwrite(ctx, fd, p, len, pos) : vk_write(ctx, fd, p, len);

		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0 || (size_t)n > len)
			return -EIO;
		p += n;
		len -= (size_t)n;
		pos += (uint64_t)n;
	}
	return 0;
}

int vk_pwrite_full(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
	return write_full(ctx, fd, buf, len, &off);
}

int vk_write_full(struct vfiomig_ctx *ctx, int fd, const void *buf, size_t len)
{
	return write_full(ctx, fd, buf, len, NULL);
}

int vk_info_ioctl(struct vfiomig_ctx *ctx, int fd, unsigned long request, const void *hdr,
		  size_t minsz, void **bufp, size_t *lenp, const char *what, uint32_t flags)
{
	size_t len = minsz;
	void *buf = NULL;

	/* The kernel asks for more at most once per growth; a few rounds is generous. */
	for (int round = 0; round < 4; round++) {
		uint32_t argsz;
		void *nbuf = realloc(buf, len);
		int ret;

		if (!nbuf) {
			free(buf);
			return vm_err(ctx, -ENOMEM, "%s: %zu bytes", what, len);
		}
		buf = nbuf;
		memset(buf, 0, len);
		memcpy(buf, hdr, minsz);
		argsz = (uint32_t)len;
		memcpy(buf, &argsz, sizeof(argsz));

		ret = vk_ioctl_retry(ctx, fd, request, buf);
		if (ret < 0) {
			free(buf);
			if (ret == -EINVAL && (flags & VK_INFO_QUIET_EINVAL))
				return ret;
			return vm_err(ctx, ret, "%s", what);
		}
		memcpy(&argsz, buf, sizeof(argsz));
		if (argsz <= len) {
			*bufp = buf;
			*lenp = len;
			return 0;
		}
		if (argsz > VM_INFO_MAX) {
			free(buf);
			return vm_err(ctx, -E2BIG, "%s: the kernel asks for %u bytes of info (limit %u)",
				      what, argsz, VM_INFO_MAX);
		}
		len = argsz;
	}
	free(buf);
	return vm_err(ctx, -EOVERFLOW, "%s: argsz kept growing", what);
}
