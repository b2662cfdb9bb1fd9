/* SPDX-License-Identifier: MIT */
/*
 * The simulated file system: what sysfs and /dev look like for the
 * simulator's devices (iommu_group, driver and mdev_type links,
 * vfio-dev directories, /sys/kernel/iommu_groups, /dev/vfio, /dev/iommu)
 * and the path ops of the kernel ops table: open, readlink, readdir.
 * They run under the simulator lock; readdir calls the caller's function
 * after letting it go, so the function may call the simulator.
 */
#include "sim_internal.h"

#include <stdio.h>
#include <stdlib.h>

#define SIM_PATH_MAX 4096

/* -------------------------------------------------------------- lookups */

/* Canonical decimal (no sign, no leading zero), at most max. */
static bool sim_parse_dec(const char *s, unsigned long max, unsigned long *out)
{
	unsigned long v = 0;

	if (!*s || (s[0] == '0' && s[1]))
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		if (v > (max - (unsigned long)(*s - '0')) / 10)
			return false;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	*out = v;
	return true;
}

static int sim_path_norm(const char *path, char *out, size_t outlen)
{
	size_t n;

	if (!path)
		return -EFAULT;
	n = strnlen(path, outlen);
	if (n == outlen)
		return -ENAMETOOLONG;
	memcpy(out, path, n + 1);
	while (n > 1 && out[n - 1] == '/')
		out[--n] = '\0';
	return 0;
}

/* The device whose sysfs directory is path or contains it; *rest gets the remainder. */
static struct vfiomig_sim_device *sim_sysfs_device(const struct vfiomig_sim *sim,
						   const char *path, const char **rest)
{
	for (size_t i = 0; i < sim->ndevs; i++) {
		const char *sp = sim->devs[i]->sysfs_path;
		size_t n = strlen(sp);

		if (strncmp(path, sp, n) == 0 && (path[n] == '\0' || path[n] == '/')) {
			*rest = path + n;
			return sim->devs[i];
		}
	}
	return NULL;
}

static bool sim_has_cdev(const struct vfiomig_sim *sim, const struct vfiomig_sim_device *dev)
{
	return !(sim->flags & VFIOMIG_SIM_F_NO_IOMMUFD) && sim_device_vfio_bound(dev);
}

/* ------------------------------------------------------- open, readlink */

static int sim_open_locked(struct vfiomig_sim *sim, const char *p)
{
	unsigned long n;

	if (strcmp(p, "/dev/vfio/vfio") == 0)
		return sim_container_open(sim);
	if (strcmp(p, "/dev/iommu") == 0)
		return sim->flags & VFIOMIG_SIM_F_NO_IOMMUFD ? -ENOENT : sim_iommufd_open(sim);
	if (strncmp(p, "/dev/vfio/devices/vfio", 22) == 0) {
		if (sim->flags & VFIOMIG_SIM_F_NO_IOMMUFD || !sim_parse_dec(p + 22, INT32_MAX, &n))
			return -ENOENT;
		for (size_t i = 0; i < sim->ndevs; i++) {
			struct vfiomig_sim_device *dev = sim->devs[i];

			if (dev->cdev_index == (int)n && sim_has_cdev(sim, dev))
				return sim_cdev_open(sim, dev);
		}
		return -ENOENT;
	}
	if (strncmp(p, "/dev/vfio/", 10) == 0 && sim_parse_dec(p + 10, INT32_MAX, &n)) {
		struct sim_group *g = sim_group_find(sim, (int)n);

		return g ? sim_group_open(sim, g) : -ENOENT;
	}
	return -ENOENT;
}

int sim_op_open(void *user, const char *path, int flags)
{
	struct vfiomig_sim *sim = user;
	char p[SIM_PATH_MAX];
	int err;

	(void)flags;
	if (!sim)
		return -EINVAL;
	err = sim_path_norm(path, p, sizeof(p));
	if (err)
		return err;
	sim_lock(sim);
	err = sim_open_locked(sim, p);
	sim_unlock(sim);
	return err;
}

static ssize_t sim_link_out(const char *target, char *buf, size_t len)
{
	size_t n = strlen(target);

	if (!len)
		return -EINVAL;
	if (!buf)
		return -EFAULT;
	n = sim_min(n, len);
	memcpy(buf, target, n); /* as readlink(2): truncated, no NUL */
	return (ssize_t)n;
}

static ssize_t sim_readlink_locked(struct vfiomig_sim *sim, const char *p, char *buf, size_t len)
{
	struct vfiomig_sim_device *dev;
	char target[256];
	const char *rest;

	dev = sim_sysfs_device(sim, p, &rest);
	if (!dev)
		return -ENOENT;
	if (strcmp(rest, "/iommu_group") == 0) {
		snprintf(target, sizeof(target), "../../../kernel/iommu_groups/%d",
			 dev->group->num);
		return sim_link_out(target, buf, len);
	}
	if (strcmp(rest, "/driver") == 0) {
		if (!dev->driver[0])
			return -ENOENT;
		snprintf(target, sizeof(target), "../../../bus/%s/drivers/%s",
			 dev->kind == VFIOMIG_DEVKIND_MDEV ? "mdev" : "pci", dev->driver);
		return sim_link_out(target, buf, len);
	}
	if (strcmp(rest, "/mdev_type") == 0 && dev->kind == VFIOMIG_DEVKIND_MDEV) {
		/* The parent device's type directory; the library takes the basename. */
		snprintf(target, sizeof(target),
			 "../../../devices/virtual/vfiomig-sim/vfiomig-sim/mdev_supported_types/%s",
			 dev->mdev_type);
		return sim_link_out(target, buf, len);
	}
	if (rest[0] == '\0' || strcmp(rest, "/vfio-dev") == 0)
		return -EINVAL; /* directories, not links */
	if (strncmp(rest, "/vfio-dev/vfio", 14) == 0 && sim_has_cdev(sim, dev) &&
	    strcmp(dev->cdev_path + strlen("/dev/vfio/devices"), rest + strlen("/vfio-dev")) == 0)
		return -EINVAL;
	return -ENOENT;
}

ssize_t sim_op_readlink(void *user, const char *path, char *buf, size_t len)
{
	struct vfiomig_sim *sim = user;
	char p[SIM_PATH_MAX];
	ssize_t ret;

	if (!sim)
		return -EINVAL;
	ret = sim_path_norm(path, p, sizeof(p));
	if (ret)
		return ret;
	sim_lock(sim);
	ret = sim_readlink_locked(sim, p, buf, len);
	sim_unlock(sim);
	return ret;
}

/* -------------------------------------------------------------- readdir */

/* /sys/kernel/iommu_groups: a directory per group. */
static int sim_readdir_groups(const struct vfiomig_sim *sim, vfiomig_dirent_fn fn, void *cb_user)
{
	char name[64];
	int ret;

	for (size_t i = 0; i < sim->ngroups; i++) {
		snprintf(name, sizeof(name), "%d", sim->groups[i]->num);
		if ((ret = fn(cb_user, name)))
			return ret;
	}
	return 0;
}

/* /sys/kernel/iommu_groups/<rest>: a group's directory, or its devices/. */
static int sim_readdir_group(const struct vfiomig_sim *sim, char *rest, vfiomig_dirent_fn fn,
			     void *cb_user)
{
	char *slash = strchr(rest, '/');
	struct sim_group *g;
	unsigned long n;
	int ret;

	if (slash)
		*slash = '\0';
	if (!sim_parse_dec(rest, INT32_MAX, &n) || !(g = sim_group_find(sim, (int)n)))
		return -ENOENT;
	if (!slash)
		return fn(cb_user, "devices");
	if (strcmp(slash + 1, "devices") != 0)
		return -ENOENT;
	for (size_t i = 0; i < sim->ndevs; i++)
		if (sim->devs[i]->group == g && (ret = fn(cb_user, sim->devs[i]->name)))
			return ret;
	return 0;
}

/* /dev/vfio: the container node, the cdev directory, a node per group bound to VFIO. */
static int sim_readdir_dev_vfio(const struct vfiomig_sim *sim, vfiomig_dirent_fn fn,
				void *cb_user)
{
	char name[64];
	int ret;

	if ((ret = fn(cb_user, "vfio")))
		return ret;
	if (!(sim->flags & VFIOMIG_SIM_F_NO_IOMMUFD) && (ret = fn(cb_user, "devices")))
		return ret;
	for (size_t i = 0; i < sim->ngroups; i++) {
		if (!sim_group_has_vfio(sim, sim->groups[i]))
			continue;
		snprintf(name, sizeof(name), "%d", sim->groups[i]->num);
		if ((ret = fn(cb_user, name)))
			return ret;
	}
	return 0;
}

/* /dev/vfio/devices: a vfioN per device with a cdev. */
static int sim_readdir_cdevs(const struct vfiomig_sim *sim, vfiomig_dirent_fn fn, void *cb_user)
{
	char name[64];
	int ret;

	if (sim->flags & VFIOMIG_SIM_F_NO_IOMMUFD)
		return -ENOENT;
	for (size_t i = 0; i < sim->ndevs; i++) {
		if (!sim_has_cdev(sim, sim->devs[i]))
			continue;
		snprintf(name, sizeof(name), "vfio%d", sim->devs[i]->cdev_index);
		if ((ret = fn(cb_user, name)))
			return ret;
	}
	return 0;
}

/* A device's sysfs directory (what the library looks at), or its vfio-dev/. */
static int sim_readdir_device(const struct vfiomig_sim *sim, const char *path,
			      vfiomig_dirent_fn fn, void *cb_user)
{
	struct vfiomig_sim_device *dev;
	const char *rest;
	char name[64];
	int ret;

	dev = sim_sysfs_device(sim, path, &rest);
	if (!dev)
		return -ENOENT;
	if (rest[0] == '\0') {
		if (dev->driver[0] && (ret = fn(cb_user, "driver")))
			return ret;
		if ((ret = fn(cb_user, "iommu_group")))
			return ret;
		if (dev->kind == VFIOMIG_DEVKIND_MDEV && (ret = fn(cb_user, "mdev_type")))
			return ret;
		if (sim_has_cdev(sim, dev))
			return fn(cb_user, "vfio-dev");
		return 0;
	}
	if (strcmp(rest, "/vfio-dev") == 0) {
		if (!sim_has_cdev(sim, dev))
			return -ENOENT;
		snprintf(name, sizeof(name), "vfio%d", dev->cdev_index);
		return fn(cb_user, name);
	}
	return -ENOENT;
}

static int sim_readdir_locked(const struct vfiomig_sim *sim, char *p, vfiomig_dirent_fn fn,
			      void *cb_user)
{
	int ret;

	if (strcmp(p, "/sys/kernel/iommu_groups") == 0)
		return sim_readdir_groups(sim, fn, cb_user);
	if (strncmp(p, "/sys/kernel/iommu_groups/", 25) == 0)
		return sim_readdir_group(sim, p + 25, fn, cb_user);
	if (strcmp(p, "/sys/bus/pci/devices") == 0 || strcmp(p, "/sys/bus/mdev/devices") == 0) {
		uint32_t kind = p[9] == 'p' ? VFIOMIG_DEVKIND_PCI : VFIOMIG_DEVKIND_MDEV;

		for (size_t i = 0; i < sim->ndevs; i++)
			if (sim->devs[i]->kind == kind && (ret = fn(cb_user, sim->devs[i]->name)))
				return ret;
		return 0;
	}
	if (strcmp(p, "/dev/vfio") == 0)
		return sim_readdir_dev_vfio(sim, fn, cb_user);
	if (strcmp(p, "/dev/vfio/devices") == 0)
		return sim_readdir_cdevs(sim, fn, cb_user);
	return sim_readdir_device(sim, p, fn, cb_user);
}

/* A directory's names, one after the other with their NULs, collected under the lock. */
struct sim_names {
	char *buf;
	size_t len, cap;
};

static int sim_names_add(void *user, const char *name)
{
	struct sim_names *nl = user;
	size_t n = strlen(name) + 1;
	char *b = sim_grow(nl->buf, &nl->cap, nl->len + n, 1);

	if (!b)
		return -ENOMEM;
	nl->buf = b;
	memcpy(b + nl->len, name, n);
	nl->len += n;
	return 0;
}

int sim_op_readdir(void *user, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	struct vfiomig_sim *sim = user;
	struct sim_names nl = { NULL, 0, 0 };
	char p[SIM_PATH_MAX];
	int ret;

	if (!sim || !fn)
		return -EINVAL;
	ret = sim_path_norm(path, p, sizeof(p));
	if (ret)
		return ret;
	sim_lock(sim);
	ret = sim_readdir_locked(sim, p, sim_names_add, &nl);
	sim_unlock(sim);
	for (size_t off = 0; !ret && off < nl.len; off += strlen(nl.buf + off) + 1)
		ret = fn(cb_user, nl.buf + off);
	free(nl.buf);
	return ret;
}
