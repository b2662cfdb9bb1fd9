/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: the kernel interface.
 *
 * Every system call the library makes on VFIO objects (open, close,
 * dup, ioctl, read, write, pread, pwrite, mmap, munmap, and the sysfs lookups
 * readlink / readdir) goes through one table of these ops. By default
 * they are the real system calls. A VMM may supply its own table to put
 * another transport under the library (for instance a vfio-user client,
 * or a sandbox broker that opens device files on its behalf); the
 * simulated kernel in libvfiomig-sim and fault injection use the same
 * door. See docs/ARCHITECTURE.md for the contract.
 *
 * Contract for every op:
 *  - `user` is the ctx's kernel_user pointer, always first;
 *  - success returns >= 0 (as the syscall would), failure returns a
 *    negative errno value; errno is neither read nor required to be set;
 *  - semantics are those of the Linux system call of the same name
 *    (short reads/writes allowed, -EINTR allowed: the library retries);
 *  - an op that is NULL, or lies beyond `sz`, makes that call fail with
 *    -ENOSYS (never a silent fallback to the real kernel);
 *  - a table larger than this library knows (built against a newer
 *    header) is accepted when the ops it does not know are all NULL (an
 *    info line says so) and refused with -EINVAL otherwise: the library
 *    would never call them.
 */
#ifndef VFIOMIG_KERNEL_H
#define VFIOMIG_KERNEL_H

#include <vfiomig/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Called by readdir once per entry ("." and ".." excluded); non-zero stops. */
typedef int (*vfiomig_dirent_fn)(void *cb_user, const char *name);

struct vfiomig_kernel_ops {
	size_t sz;
	/* flags as open(2); the library always passes O_CLOEXEC. Returns fd. */
	int (*open)(void *user, const char *path, int flags);
	int (*close)(void *user, int fd);
	/* As fcntl(fd, F_DUPFD_CLOEXEC, 0): a new fd for the same open file. */
	int (*dup)(void *user, int fd);
	/* Returns the ioctl's non-negative result. */
	int (*ioctl)(void *user, int fd, unsigned long request, void *arg);
	ssize_t (*read)(void *user, int fd, void *buf, size_t len);
	ssize_t (*write)(void *user, int fd, const void *buf, size_t len);
	ssize_t (*pread)(void *user, int fd, void *buf, size_t len, uint64_t offset);
	ssize_t (*pwrite)(void *user, int fd, const void *buf, size_t len, uint64_t offset);
	/* MAP_SHARED mapping of fd at offset; stores the address in *addr. */
	int (*mmap)(void *user, int fd, uint64_t offset, size_t len, int prot, void **addr);
	int (*munmap)(void *user, void *addr, size_t len);
	/* As readlink(2): no NUL is stored; returns the length. */
	ssize_t (*readlink)(void *user, const char *path, char *buf, size_t len);
	/* Calls fn for every entry of directory `path`; returns 0, fn's non-zero value, or -errno. */
	int (*readdir)(void *user, const char *path, vfiomig_dirent_fn fn, void *cb_user);
};

/* The real system calls (`user` is ignored). */
VFIOMIG_API const struct vfiomig_kernel_ops *vfiomig_kernel_ops_default(void);

#ifdef __cplusplus
}
#endif
#endif
