/* SPDX-License-Identifier: MIT */
/*
 * The device handle: resolving a device spec through sysfs, opening and
 * wiring group + container (type1v2) or cdev + iommufd, adopting fds a
 * VMM already holds, the shared group/container bookkeeping, device info
 * and reset.
 */
#include "internal.h"

#include <ctype.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>

#define SYSFS_PCI  "/sys/bus/pci/devices/"
#define SYSFS_MDEV "/sys/bus/mdev/devices/"
#define DEV_VFIO   "/dev/vfio/"
#define DEV_CDEV   "/dev/vfio/devices/"
#define PATH_MAX_LEN 512
/*
 * More regions than this in VFIO_DEVICE_GET_INFO is taken for a broken
 * device or transport: the region cache is sized by it.
 */
#define VM_MAX_REGIONS 4096u

/* ------------------------------------------------------------ containers */

static struct vm_container *container_new(int fd, bool own, bool is_iommufd)
{
	struct vm_container *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->fd = fd;
	c->own = own;
	c->is_iommufd = is_iommufd;
	c->refs = 1;
	return c;
}

static void container_put(struct vfiomig_ctx *ctx, struct vm_container *c)
{
	if (!c || --c->refs)
		return;
	if (c->own)
		vk_close(ctx, c->fd);
	free(c);
}

static void group_put(struct vfiomig_ctx *ctx, struct vm_group *g)
{
	struct vm_group **pp;

	if (!g || --g->refs)
		return;
	for (pp = &ctx->groups; *pp; pp = &(*pp)->next) {
		if (*pp == g) {
			*pp = g->next;
			break;
		}
	}
	/* Closing the group detaches it from its container first (kernel order). */
	if (g->own)
		vk_close(ctx, g->fd);
	container_put(ctx, g->container);
	free(g);
}

/* ---------------------------------------------------------- spec parsing */

static bool is_hex_run(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}

static bool is_uuid(const char *s)
{
	static const size_t runs[] = { 8, 4, 4, 4, 12 };

	if (strlen(s) != 36)
		return false;
	for (size_t i = 0; i < VM_ARRAY_SIZE(runs); i++) {
		if (!is_hex_run(s, runs[i]))
			return false;
		s += runs[i];
		if (i < 4 && *s++ != '-')
			return false;
	}
	return true;
}

/* "DDDD:BB:DD.F" or "BB:DD.F" -> canonical "dddd:bb:dd.f" in out. */
static bool parse_pci_addr(const char *s, char *out, size_t outlen)
{
	unsigned int dom = 0, bus, dev, fn;
	char tail;

	if (strlen(s) == 12 && is_hex_run(s, 4) && s[4] == ':' && is_hex_run(s + 5, 2) &&
	    s[7] == ':' && is_hex_run(s + 8, 2) && s[10] == '.' && isdigit((unsigned char)s[11])) {
		if (sscanf(s, "%4x:%2x:%2x.%1u%c", &dom, &bus, &dev, &fn, &tail) != 4)
			return false;
	} else if (strlen(s) == 7 && is_hex_run(s, 2) && s[2] == ':' && is_hex_run(s + 3, 2) &&
		   s[5] == '.' && isdigit((unsigned char)s[6])) {
		if (sscanf(s, "%2x:%2x.%1u%c", &bus, &dev, &fn, &tail) != 3)
			return false;
	} else {
		return false;
	}
	if (dev > 0x1f || fn > 7)
		return false;
	snprintf(out, outlen, "%04x:%02x:%02x.%u", dom, bus, dev, fn);
	return true;
}

struct resolved {
	char sysfs[PATH_MAX_LEN]; /* "" when opened by cdev path alone */
	char name[128];           /* basename: what GET_DEVICE_FD wants */
	char cdev[PATH_MAX_LEN];  /* "" unless given */
};

static int resolve_spec(struct vfiomig_ctx *ctx, const char *spec, struct resolved *r)
{
	char canon[32];
	size_t n;
	const char *base;

	memset(r, 0, sizeof(*r));
	n = strlen(spec);
	if (n == 0 || n >= PATH_MAX_LEN)
		return vm_err(ctx, -EINVAL, "device spec '%.64s': empty or too long", spec);

	if (strncmp(spec, DEV_CDEV, strlen(DEV_CDEV)) == 0) {
		base = spec + strlen(DEV_CDEV);
		if (strncmp(base, "vfio", 4) != 0 || !base[4] || strchr(base, '/'))
			return vm_err(ctx, -EINVAL, "device spec '%s': not a vfio cdev path", spec);
		snprintf(r->cdev, sizeof(r->cdev), "%s", spec);
		snprintf(r->name, sizeof(r->name), "%s", base);
		return 0;
	}
	if (spec[0] == '/') {
		snprintf(r->sysfs, sizeof(r->sysfs), "%s", spec);
		n = strlen(r->sysfs);
		while (n > 1 && r->sysfs[n - 1] == '/')
			r->sysfs[--n] = '\0';
		base = strrchr(r->sysfs, '/') + 1;
		if (!*base || strlen(base) >= sizeof(r->name))
			return vm_err(ctx, -EINVAL, "device spec '%s': no device name in path", spec);
		snprintf(r->name, sizeof(r->name), "%s", base);
		return 0;
	}
	if (is_uuid(spec)) {
		memcpy(r->name, spec, 37); /* 36 characters and the NUL: is_uuid checked the length */
		for (char *p = r->name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		snprintf(r->sysfs, sizeof(r->sysfs), SYSFS_MDEV "%s", r->name);
		return 0;
	}
	if (parse_pci_addr(spec, canon, sizeof(canon))) {
		snprintf(r->name, sizeof(r->name), "%s", canon);
		snprintf(r->sysfs, sizeof(r->sysfs), SYSFS_PCI "%s", canon);
		return 0;
	}
	return vm_err(ctx, -EINVAL,
		      "device spec '%s': expected a PCI address (0000:03:00.0), an mdev UUID, "
		      "a sysfs path or /dev/vfio/devices/vfioN",
		      spec);
}

/*
 * Read the sysfs link <dir>/<leaf> into link (NUL-terminated) and point
 * *base at its last path component. Returns 0 or -errno (no log).
 */
static int read_link_leaf(struct vfiomig_ctx *ctx, const char *dir, const char *leaf,
			  char link[PATH_MAX_LEN], const char **base)
{
	char path[PATH_MAX_LEN + 64];
	const char *slash;
	ssize_t n;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, leaf) >= sizeof(path))
		return -ENAMETOOLONG;
	n = vk_readlink(ctx, path, link, PATH_MAX_LEN - 1);
	if (n < 0)
		return (int)n;
	link[n] = '\0';
	slash = strrchr(link, '/');
	*base = slash ? slash + 1 : link;
	return 0;
}

/* The IOMMU group number from <sysfs>/iommu_group -> ".../iommu_groups/N". */
static int read_group_number(struct vfiomig_ctx *ctx, const struct resolved *r, int *num)
{
	char link[PATH_MAX_LEN];
	const char *slash;
	char *end;
	long v;
	int ret;

	ret = read_link_leaf(ctx, r->sysfs, "iommu_group", link, &slash);
	if (ret)
		return ret;
	errno = 0;
	v = strtol(slash, &end, 10);
	if (end == slash || *end || v < 0 || v > INT32_MAX)
		return vm_err(ctx, -EINVAL, "device %s: iommu_group link '%s' has no group number",
			      r->name, link);
	*num = (int)v;
	return 0;
}

/* -------------------------------------------------------------- devices */

static struct vfiomig_device *device_alloc(struct vfiomig_ctx *ctx, const char *name)
{
	struct vfiomig_device *dev = calloc(1, sizeof(*dev));

	if (!dev)
		return NULL;
	dev->name = strdup(name);
	if (!dev->name) {
		free(dev);
		return NULL;
	}
	dev->refs = 1;
	dev->ctx = vfiomig_ctx_ref(ctx);
	dev->fd = -1;
	return dev;
}

static void device_free(struct vfiomig_device *dev)
{
	struct vfiomig_ctx *ctx = dev->ctx;

	vm_regions_free(dev);
	if (dev->own_fd)
		vk_close(ctx, dev->fd);
	group_put(ctx, dev->group);
	container_put(ctx, dev->iommu);
	free(dev->sysfs);
	free(dev->name);
	free(dev);
	vfiomig_ctx_unref(ctx);
}

struct vfiomig_device *vm_device_get(struct vfiomig_device *dev)
{
	dev->refs++;
	return dev;
}

void vm_device_put(struct vfiomig_device *dev)
{
	if (dev && --dev->refs == 0)
		device_free(dev);
}

void vfiomig_device_close(struct vfiomig_device *dev)
{
	vm_device_put(dev);
}

/* A new type1v2 container (not yet attached to any group). */
static int container_open(struct vfiomig_ctx *ctx, const char *name, struct vm_container **out)
{
	int fd, ret;

	fd = vk_open(ctx, DEV_VFIO "vfio", O_RDWR);
	if (fd < 0)
		return vm_err(ctx, fd, "device %s: open " DEV_VFIO "vfio (is vfio loaded?)", name);
	ret = vk_ioctl_retry(ctx, fd, VU_GET_API_VERSION, NULL);
	if (ret != VU_API_VERSION) {
		vk_close(ctx, fd);
		return vm_err(ctx, ret < 0 ? ret : -EPROTO,
			      "device %s: VFIO_GET_API_VERSION returned %d, expected %d", name, ret,
			      VU_API_VERSION);
	}
	ret = vk_ioctl_int(ctx, fd, VU_CHECK_EXTENSION, VU_TYPE1v2_IOMMU);
	if (ret <= 0) {
		vk_close(ctx, fd);
		return vm_err(ctx, ret < 0 ? ret : -EOPNOTSUPP,
			      "device %s: the container does not offer the type1v2 IOMMU", name);
	}
	*out = container_new(fd, true, false);
	if (!*out) {
		vk_close(ctx, fd);
		return vm_enomem(ctx, "container");
	}
	return 0;
}

/* Open (or share) the group, attach it to a container with type1v2 set. */
static int group_attach(struct vfiomig_ctx *ctx, const struct resolved *r, int num,
			struct vm_container *share, struct vm_group **out)
{
	struct vu_group_status st = { .argsz = sizeof(st) };
	char path[64];
	struct vm_group *g;
	int fd, ret;

	for (g = ctx->groups; g; g = g->next) {
		if (g->num != num)
			continue;
		if (share && g->container != share)
			return vm_err(ctx, -EINVAL,
				      "device %s: group %d is already open in this context with "
				      "another container",
				      r->name, num);
		g->refs++;
		*out = g;
		return 0;
	}

	snprintf(path, sizeof(path), DEV_VFIO "%d", num);
	fd = vk_open(ctx, path, O_RDWR);
	if (fd < 0) {
		if (fd == -ENOENT)
			return vm_err(ctx, fd, "device %s: open %s (is the device bound to a vfio "
				      "driver?)", r->name, path);
		if (fd == -EBUSY)
			return vm_err(ctx, fd, "device %s: open %s (group already in use by another "
				      "process or context)", r->name, path);
		return vm_err(ctx, fd, "device %s: open %s", r->name, path);
	}
	g = calloc(1, sizeof(*g));
	if (!g) {
		vk_close(ctx, fd);
		return vm_enomem(ctx, "group");
	}
	g->fd = fd;
	g->num = num;
	g->own = true;
	g->refs = 1;

	ret = vk_ioctl_retry(ctx, fd, VU_GROUP_GET_STATUS, &st);
	if (ret < 0) {
		vm_err(ctx, ret, "device %s: VFIO_GROUP_GET_STATUS on group %d", r->name, num);
		goto fail;
	}
	if (!(st.flags & VU_GROUP_FLAGS_VIABLE)) {
		ret = vm_err(ctx, -EBUSY,
			     "device %s: group %d is not viable (bind every device of the group to "
			     "a vfio driver)", r->name, num);
		goto fail;
	}
	if (st.flags & VU_GROUP_FLAGS_CONTAINER_SET) {
		ret = vm_err(ctx, -EBUSY, "device %s: group %d already has a container", r->name,
			     num);
		goto fail;
	}

	if (share) {
		share->refs++;
		g->container = share;
	} else {
		ret = container_open(ctx, r->name, &g->container);
		if (ret)
			goto fail;
	}
	ret = vk_ioctl_retry(ctx, fd, VU_GROUP_SET_CONTAINER, &g->container->fd);
	if (ret < 0) {
		vm_err(ctx, ret, "device %s: VFIO_GROUP_SET_CONTAINER (group %d)", r->name, num);
		goto fail;
	}
	if (!g->container->iommu_set) {
		ret = vk_ioctl_int(ctx, g->container->fd, VU_SET_IOMMU, VU_TYPE1v2_IOMMU);
		if (ret < 0) {
			vm_err(ctx, ret, "device %s: VFIO_SET_IOMMU(type1v2)", r->name);
			goto fail;
		}
		g->container->iommu_set = true;
	}
	g->next = ctx->groups;
	ctx->groups = g;
	*out = g;
	return 0;
fail:
	vk_close(ctx, g->fd);
	container_put(ctx, g->container);
	free(g);
	return ret;
}

struct find_cdev {
	char name[64];
};

static int find_cdev_cb(void *user, const char *name)
{
	struct find_cdev *fc = user;

	if (strncmp(name, "vfio", 4) != 0 || strlen(name) >= sizeof(fc->name))
		return 0;
	snprintf(fc->name, sizeof(fc->name), "%s", name);
	return 1;
}

/* Fill r->cdev from <sysfs>/vfio-dev/vfioN; -ENOENT (no log) when there is none. */
static int find_cdev(struct vfiomig_ctx *ctx, struct resolved *r)
{
	char dir[PATH_MAX_LEN + 16];
	struct find_cdev fc = { { 0 } };
	int ret;

	snprintf(dir, sizeof(dir), "%s/vfio-dev", r->sysfs);
	ret = vk_readdir(ctx, dir, find_cdev_cb, &fc);
	if (ret < 0)
		return ret;
	if (!fc.name[0])
		return -ENOENT;
	snprintf(r->cdev, sizeof(r->cdev), DEV_CDEV "%s", fc.name);
	return 0;
}

static int open_cdev(struct vfiomig_ctx *ctx, struct resolved *r, struct vm_container *share,
		     bool dirty_hwpt, struct vfiomig_device *dev)
{
	struct vu_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct vu_device_attach_iommufd_pt att = { .argsz = sizeof(att) };
	struct vm_container *io = share;
	int fd, ret;

	if (!r->cdev[0]) {
		ret = find_cdev(ctx, r);
		if (ret)
			return vm_err(ctx, ret, "device %s: no vfio cdev under %s/vfio-dev (kernel "
				      "without CONFIG_VFIO_DEVICE_CDEV, or device not bound to a "
				      "vfio driver?)", r->name, r->sysfs);
	}
	fd = vk_open(ctx, r->cdev, O_RDWR);
	if (fd < 0)
		return vm_err(ctx, fd, "device %s: open %s", r->name, r->cdev);
	dev->fd = fd;
	dev->own_fd = true;

	if (io) {
		io->refs++;
	} else {
		struct vu_iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
		int ifd = vk_open(ctx, "/dev/iommu", O_RDWR);

		if (ifd < 0)
			return vm_err(ctx, ifd, "device %s: open /dev/iommu", r->name);
		io = container_new(ifd, true, true);
		if (!io) {
			vk_close(ctx, ifd);
			return vm_enomem(ctx, "iommufd");
		}
		ret = vk_ioctl_retry(ctx, ifd, VU_IOMMU_IOAS_ALLOC, &alloc);
		if (ret < 0) {
			container_put(ctx, io);
			return vm_err(ctx, ret, "device %s: IOMMU_IOAS_ALLOC", r->name);
		}
		io->ioas_id = alloc.out_ioas_id;
	}
	dev->iommu = io;
	dev->backend = VFIOMIG_BACKEND_IOMMUFD;

	bind.iommufd = io->fd;
	ret = vk_ioctl_retry(ctx, fd, VU_DEVICE_BIND_IOMMUFD, &bind);
	if (ret < 0)
		return vm_err(ctx, ret, "device %s: VFIO_DEVICE_BIND_IOMMUFD", r->name);
	dev->devid = bind.out_devid;
	att.pt_id = io->ioas_id;
	if (dirty_hwpt) {
		struct vu_iommu_hw_info hw = { .size = sizeof(hw), .dev_id = dev->devid };
		struct vu_iommu_hwpt_alloc ha = { .size = sizeof(ha), .dev_id = dev->devid,
						  .pt_id = io->ioas_id,
						  .flags = VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING };

		ret = vk_ioctl_retry(ctx, io->fd, VU_IOMMU_GET_HW_INFO, &hw);
		if (ret < 0)
			return vm_err(ctx, ret, "device %s: IOMMU_GET_HW_INFO", r->name);
		if (!(hw.out_capabilities & VU_IOMMU_HW_CAP_DIRTY_TRACKING))
			return vm_err(ctx, -EOPNOTSUPP, "device %s: the IOMMU has no dirty tracking "
				      "(IOMMU_GET_HW_INFO capabilities 0x%llx)", r->name,
				      (unsigned long long)hw.out_capabilities);
		ret = vk_ioctl_retry(ctx, io->fd, VU_IOMMU_HWPT_ALLOC, &ha);
		if (ret < 0)
			return vm_err(ctx, ret, "device %s: IOMMU_HWPT_ALLOC(DIRTY_TRACKING)",
				      r->name);
		dev->hwpt_id = ha.out_hwpt_id;
		att.pt_id = ha.out_hwpt_id;
	}
	ret = vk_ioctl_retry(ctx, fd, VU_DEVICE_ATTACH_IOMMUFD_PT, &att);
	if (ret < 0)
		return vm_err(ctx, ret, "device %s: VFIO_DEVICE_ATTACH_IOMMUFD_PT (%s %u)",
			      r->name, dirty_hwpt ? "hwpt" : "ioas", att.pt_id);
	return 0;
}

/* The open flags from opts, checked and with their implications applied. */
static int open_flags(struct vfiomig_ctx *ctx, const char *spec,
		      const struct vfiomig_device_open_opts *opts, uint32_t *out)
{
	const uint32_t known = VFIOMIG_OPEN_CDEV | VFIOMIG_OPEN_NO_CDEV | VFIOMIG_OPEN_DIRTY_HWPT;
	uint32_t flags;
	int ret;

	ret = VM_OPTS_VALID(ctx, opts, struct vfiomig_device_open_opts, flags);
	if (ret)
		return ret;
	flags = VM_OPTS_GET(opts, struct vfiomig_device_open_opts, flags, 0);
	if (flags & ~known)
		return vm_err(ctx, -EINVAL, "device %s: unknown open flags 0x%x", spec,
			      flags & ~known);
	if ((flags & VFIOMIG_OPEN_DIRTY_HWPT) && (flags & VFIOMIG_OPEN_NO_CDEV))
		return vm_err(ctx, -EINVAL, "device %s: VFIOMIG_OPEN_DIRTY_HWPT needs the cdev path, "
			      "not VFIOMIG_OPEN_NO_CDEV", spec);
	if (flags & VFIOMIG_OPEN_DIRTY_HWPT)
		flags |= VFIOMIG_OPEN_CDEV;
	if ((flags & VFIOMIG_OPEN_CDEV) && (flags & VFIOMIG_OPEN_NO_CDEV))
		return vm_err(ctx, -EINVAL, "device %s: VFIOMIG_OPEN_CDEV and _NO_CDEV together",
			      spec);
	*out = flags;
	return 0;
}

/*
 * Resolve the spec and choose the path: the group (filling *num) unless
 * the flags or the spec ask for the cdev, or the device has no group but
 * a cdev. Sets VFIOMIG_OPEN_CDEV in *flags when the cdev path is taken.
 */
static int resolve_path(struct vfiomig_ctx *ctx, const char *spec, uint32_t *flags,
			struct resolved *r, int *num)
{
	int ret = resolve_spec(ctx, spec, r);

	if (ret)
		return ret;
	if (r->cdev[0]) {
		if (*flags & VFIOMIG_OPEN_NO_CDEV)
			return vm_err(ctx, -EINVAL, "device %s: a cdev path with VFIOMIG_OPEN_NO_CDEV",
				      spec);
		*flags |= VFIOMIG_OPEN_CDEV;
	}
	if (*flags & VFIOMIG_OPEN_CDEV)
		return 0;
	ret = read_group_number(ctx, r, num);
	if (ret == -ENOENT && !(*flags & VFIOMIG_OPEN_NO_CDEV) && find_cdev(ctx, r) == 0) {
		/* No group link but a cdev: a kernel without the legacy group interface. */
		*flags |= VFIOMIG_OPEN_CDEV;
		return 0;
	}
	if (ret)
		return vm_err(ctx, ret, "device %s: read %s/iommu_group (no such device, or no "
			      "IOMMU group)", r->name, r->sysfs);
	return 0;
}

/* The container (group path) or iommufd (cdev path) of `share`, for a device on that path. */
static int shared_container(struct vfiomig_ctx *ctx, const struct resolved *r, uint32_t flags,
			    const struct vfiomig_device *share, struct vm_container **out)
{
	*out = NULL;
	if (!share)
		return 0;
	if (share->ctx != ctx)
		return vm_err(ctx, -EINVAL, "device %s: share_container_of is from another context",
			      r->name);
	if (!(flags & VFIOMIG_OPEN_CDEV) != (share->backend != VFIOMIG_BACKEND_IOMMUFD))
		return vm_err(ctx, -EINVAL, "device %s: cannot share the container of %s (group "
			      "and iommufd paths differ)", r->name, share->name);
	*out = share->backend == VFIOMIG_BACKEND_IOMMUFD ? share->iommu :
	       share->group ? share->group->container : NULL;
	if (!*out)
		return vm_err(ctx, -EINVAL, "device %s: %s has no container to share", r->name,
			      share->name);
	return 0;
}

/* Group path: the group (shared or opened), the container, then the device fd. */
static int open_in_group(struct vfiomig_ctx *ctx, const struct resolved *r, int num,
			 struct vm_container *share, struct vfiomig_device *dev)
{
	int ret = group_attach(ctx, r, num, share, &dev->group);

	if (ret)
		return ret;
	dev->backend = VFIOMIG_BACKEND_GROUP;
	ret = vk_ioctl(ctx, dev->group->fd, VU_GROUP_GET_DEVICE_FD, (void *)r->name);
	if (ret < 0)
		return vm_err(ctx, ret, "device %s: VFIO_GROUP_GET_DEVICE_FD (group %d)", r->name,
			      num);
	dev->fd = ret;
	dev->own_fd = true;
	return 0;
}

int vfiomig_device_open(struct vfiomig_ctx *ctx, const char *spec,
			const struct vfiomig_device_open_opts *opts, struct vfiomig_device **out)
{
	struct vfiomig_device *share, *dev;
	struct vm_container *share_c;
	const char *name;
	struct resolved r;
	uint32_t flags = 0;
	int ret, num = -1;

	if (!ctx)
		return -EINVAL;
	VM_API(ctx);
	if (!spec || !out)
		return vm_err(ctx, -EINVAL, "vfiomig_device_open: NULL %s", spec ? "out" : "spec");
	*out = NULL;
	ret = open_flags(ctx, spec, opts, &flags);
	if (!ret)
		ret = resolve_path(ctx, spec, &flags, &r, &num);
	share = VM_OPTS_GET(opts, struct vfiomig_device_open_opts, share_container_of, NULL);
	if (!ret)
		ret = shared_container(ctx, &r, flags, share, &share_c);
	if (ret)
		return ret;

	name = VM_OPTS_GET(opts, struct vfiomig_device_open_opts, name, NULL);
	dev = device_alloc(ctx, name ? name : r.name);
	if (dev && r.sysfs[0]) {
		dev->sysfs = strdup(r.sysfs);
		if (!dev->sysfs) {
			device_free(dev);
			dev = NULL;
		}
	}
	if (!dev)
		return vm_err(ctx, -ENOMEM, "device %s: allocating the handle", r.name);

	if (flags & VFIOMIG_OPEN_CDEV)
		ret = open_cdev(ctx, &r, share_c, flags & VFIOMIG_OPEN_DIRTY_HWPT, dev);
	else
		ret = open_in_group(ctx, &r, num, share_c, dev);
	if (!ret)
		ret = vm_device_info(dev, NULL);
	if (ret) {
		device_free(dev);
		return ret;
	}
	vm_dbg(ctx, "device %s: open (fd %d, %s, %u regions, %u irqs)", dev->name, dev->fd,
	       dev->backend == VFIOMIG_BACKEND_GROUP ? "group" : "iommufd",
	       dev->info.num_regions, dev->info.num_irqs);
	*out = dev;
	return 0;
}

/* Adopted fds, by role. */
enum { ADOPT_DEVICE, ADOPT_CONTAINER, ADOPT_GROUP, ADOPT_IOMMUFD, ADOPT_NR };

/* Check the adopt flags and collect the fds they name into fds[] (nothing is owned yet). */
static int adopt_collect(struct vfiomig_ctx *ctx, int device_fd,
			 const struct vfiomig_device_adopt_opts *opts, int fds[ADOPT_NR],
			 uint32_t *flagsp)
{
	const uint32_t known = VFIOMIG_ADOPT_TAKE | VFIOMIG_ADOPT_DUP |
			       VFIOMIG_ADOPT_HAS_CONTAINER | VFIOMIG_ADOPT_HAS_GROUP |
			       VFIOMIG_ADOPT_HAS_IOMMUFD;
	uint32_t flags;
	int ret;

	if (!opts)
		return vm_err(ctx, -EINVAL, "adopt fd %d: opts are required (ownership must be "
			      "explicit: VFIOMIG_ADOPT_TAKE or VFIOMIG_ADOPT_DUP)", device_fd);
	ret = VM_OPTS_VALID(ctx, opts, struct vfiomig_device_adopt_opts, iommufd);
	if (ret)
		return ret;
	flags = VM_OPTS_GET(opts, struct vfiomig_device_adopt_opts, flags, 0);
	fds[ADOPT_DEVICE] = device_fd;
	fds[ADOPT_CONTAINER] = fds[ADOPT_GROUP] = fds[ADOPT_IOMMUFD] = -1;
	if (flags & VFIOMIG_ADOPT_HAS_CONTAINER)
		fds[ADOPT_CONTAINER] =
			VM_OPTS_GET(opts, struct vfiomig_device_adopt_opts, container_fd, -1);
	if (flags & VFIOMIG_ADOPT_HAS_GROUP)
		fds[ADOPT_GROUP] = VM_OPTS_GET(opts, struct vfiomig_device_adopt_opts, group_fd, -1);
	if (flags & VFIOMIG_ADOPT_HAS_IOMMUFD)
		fds[ADOPT_IOMMUFD] = VM_OPTS_GET(opts, struct vfiomig_device_adopt_opts, iommufd, -1);
	*flagsp = flags;
	if ((flags & ~known) || !(flags & VFIOMIG_ADOPT_TAKE) == !(flags & VFIOMIG_ADOPT_DUP))
		return vm_err(ctx, -EINVAL, "adopt fd %d: flags 0x%x: need exactly one of "
			      "VFIOMIG_ADOPT_TAKE and VFIOMIG_ADOPT_DUP, and no unknown bits",
			      device_fd, flags);
	return 1; /* the flags are good: TAKE now owns what follows */
}

/* Check the collected fds; with DUP, replace them by our own copies. */
static int adopt_own(struct vfiomig_ctx *ctx, int device_fd, bool dup, int fds[ADOPT_NR])
{
	for (int i = 0; i < ADOPT_NR; i++)
		if ((i == ADOPT_DEVICE || fds[i] != -1) && fds[i] < 0)
			return vm_err(ctx, -EBADF, "adopt fd %d: negative fd %d given", device_fd,
				      fds[i]);
	if (fds[ADOPT_IOMMUFD] >= 0 && (fds[ADOPT_CONTAINER] >= 0 || fds[ADOPT_GROUP] >= 0))
		return vm_err(ctx, -EINVAL, "adopt fd %d: give a group and container, or an "
			      "iommufd, not both", device_fd);
	if (!dup)
		return 0;
	for (int i = 0; i < ADOPT_NR; i++) {
		int ret;

		if (fds[i] < 0)
			continue;
		ret = vk_dup(ctx, fds[i]);
		if (ret < 0) {
			int failed = fds[i];

			/* Ours so far: close them; the caller's are untouched. */
			for (int j = 0; j < i; j++)
				if (fds[j] >= 0)
					vk_close(ctx, fds[j]);
			for (int j = 0; j < ADOPT_NR; j++)
				fds[j] = -1;
			return vm_err(ctx, ret, "adopt fd %d: dup of fd %d", device_fd, failed);
		}
		fds[i] = ret;
	}
	return 0;
}

/* Hand the owned fds to the device; each one moved is set to -1 in fds[]. */
static int adopt_wire(struct vfiomig_device *dev, int fds[ADOPT_NR])
{
	dev->fd = fds[ADOPT_DEVICE];
	dev->own_fd = true;
	fds[ADOPT_DEVICE] = -1;
	dev->backend = VFIOMIG_BACKEND_NONE;
	if (fds[ADOPT_CONTAINER] >= 0 || fds[ADOPT_GROUP] >= 0) {
		struct vm_group *g = calloc(1, sizeof(*g));

		if (!g)
			return vm_enomem(dev->ctx, "adopted group");
		g->fd = fds[ADOPT_GROUP];
		g->own = true;
		g->num = -1;
		g->refs = 1;
		dev->group = g;
		dev->backend = VFIOMIG_BACKEND_GROUP;
		fds[ADOPT_GROUP] = -1;
		if (fds[ADOPT_CONTAINER] >= 0) {
			g->container = container_new(fds[ADOPT_CONTAINER], true, false);
			if (!g->container)
				return vm_enomem(dev->ctx, "adopted container");
			/* A VMM hands over a working container: its IOMMU is set. */
			g->container->iommu_set = true;
			fds[ADOPT_CONTAINER] = -1;
		}
	} else if (fds[ADOPT_IOMMUFD] >= 0) {
		dev->iommu = container_new(fds[ADOPT_IOMMUFD], true, true);
		if (!dev->iommu)
			return vm_enomem(dev->ctx, "adopted iommufd");
		dev->backend = VFIOMIG_BACKEND_IOMMUFD;
		fds[ADOPT_IOMMUFD] = -1;
	}
	return 0;
}

int vfiomig_device_adopt(struct vfiomig_ctx *ctx, int device_fd,
			 const struct vfiomig_device_adopt_opts *opts, struct vfiomig_device **out)
{
	int fds[ADOPT_NR];
	struct vfiomig_device *dev = NULL;
	char defname[32];
	const char *name;
	uint32_t flags = 0;
	bool take = false; /* until the flags are known good, close nothing */
	int ret;

	if (!ctx)
		return -EINVAL;
	VM_API(ctx);
	if (!out)
		return vm_err(ctx, -EINVAL, "adopt fd %d: NULL out", device_fd);
	*out = NULL;
	ret = adopt_collect(ctx, device_fd, opts, fds, &flags);
	if (ret < 0)
		return ret;
	take = flags & VFIOMIG_ADOPT_TAKE;
	ret = adopt_own(ctx, device_fd, !take, fds);
	if (ret)
		goto fail;
	take = true; /* every fd in fds[] is now ours to close */

	name = VM_OPTS_GET(opts, struct vfiomig_device_adopt_opts, name, NULL);
	snprintf(defname, sizeof(defname), "fd:%d", device_fd);
	dev = device_alloc(ctx, name ? name : defname);
	if (!dev) {
		ret = vm_enomem(ctx, "adopted device handle");
		goto fail;
	}
	ret = adopt_wire(dev, fds);
	if (ret)
		goto fail;
	ret = vm_device_info(dev, NULL);
	if (ret) {
		vm_err(ctx, ret, "adopt fd %d: not a usable VFIO device fd", device_fd);
		goto fail;
	}
	*out = dev;
	return 0;
fail:
	if (dev)
		device_free(dev);
	if (take)
		for (int i = 0; i < ADOPT_NR; i++)
			if (fds[i] >= 0)
				vk_close(ctx, fds[i]);
	return ret;
}

/* ------------------------------------------------------------ accessors */

const char *vfiomig_device_name(const struct vfiomig_device *dev)
{
	return dev ? dev->name : NULL;
}

struct vfiomig_ctx *vfiomig_device_ctx(const struct vfiomig_device *dev)
{
	return dev ? dev->ctx : NULL;
}

int vfiomig_device_fd(const struct vfiomig_device *dev)
{
	return dev && dev->fd >= 0 ? dev->fd : -ENOENT;
}

int vfiomig_device_group_fd(const struct vfiomig_device *dev)
{
	return dev && dev->group && dev->group->fd >= 0 ? dev->group->fd : -ENOENT;
}

int vfiomig_device_container_fd(const struct vfiomig_device *dev)
{
	return dev && dev->group && dev->group->container ? dev->group->container->fd : -ENOENT;
}

int vfiomig_device_iommufd(const struct vfiomig_device *dev)
{
	return dev && dev->iommu ? dev->iommu->fd : -ENOENT;
}

int vfiomig_device_group(const struct vfiomig_device *dev)
{
	return dev && dev->group && dev->group->num >= 0 ? dev->group->num : -ENOENT;
}

int vm_device_feature(struct vfiomig_device *dev, uint32_t flags, void *payload, size_t len)
{
	struct {
		struct vu_device_feature hdr;
		uint64_t data[4];
	} buf;
	int ret;

	if (len > sizeof(buf.data))
		return -EINVAL;
	memset(&buf, 0, sizeof(buf));
	buf.hdr.argsz = (uint32_t)(sizeof(buf.hdr) + len);
	buf.hdr.flags = flags;
	memcpy(buf.data, payload, len);
	ret = vk_ioctl_retry(dev->ctx, dev->fd, VU_DEVICE_FEATURE, &buf);
	memcpy(payload, buf.data, len);
	return ret;
}

bool vm_device_is_mdev(const struct vfiomig_device *dev)
{
	return dev->sysfs && strncmp(dev->sysfs, "/sys/bus/mdev/", 14) == 0;
}

int vm_device_info(struct vfiomig_device *dev, const struct vu_device_info **info)
{
	struct vu_device_info di = { .argsz = sizeof(di) };
	int ret;

	if (!dev->info_valid) {
		ret = vk_ioctl_retry(dev->ctx, dev->fd, VU_DEVICE_GET_INFO, &di);
		if (ret < 0)
			return vm_err(dev->ctx, ret, "device %s: VFIO_DEVICE_GET_INFO", dev->name);
		if (di.num_regions > VM_MAX_REGIONS)
			return vm_err(dev->ctx, -EINVAL, "device %s: VFIO_DEVICE_GET_INFO reports "
				      "%u regions (at most %u are believed)", dev->name, di.num_regions,
				      VM_MAX_REGIONS);
		dev->info = di;
		dev->info_valid = true;
	}
	if (info)
		*info = &dev->info;
	return 0;
}

int vfiomig_device_get_info(struct vfiomig_device *dev, struct vfiomig_device_info *info)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vfiomig_device_info out = { .sz = sizeof(out) };
	const struct vu_device_info *di;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!info)
		return vm_arg_err(dev->ctx, __func__);
	if (info->sz < sizeof(size_t))
		return vm_err(dev->ctx, -EINVAL, "device %s: vfiomig_device_info.sz not set",
			      dev->name);
	ret = vm_device_info(dev, &di);
	if (ret)
		return ret;
	out.flags = di->flags;
	out.num_regions = di->num_regions;
	out.num_irqs = di->num_irqs;
	out.backend = dev->backend;
	out.group = dev->group ? dev->group->num : -1;
	vm_out_copy(info, &out, sizeof(out));
	return 0;
}

int vfiomig_device_get_info_raw(struct vfiomig_device *dev, void **buf, size_t *len)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vu_device_info hdr = { 0 };
	char what[160];

	if (!dev)
		return -EINVAL;
	if (!buf || !len)
		return vm_arg_err(dev->ctx, __func__);
	snprintf(what, sizeof(what), "device %s: VFIO_DEVICE_GET_INFO", dev->name);
	return vk_info_ioctl(dev->ctx, dev->fd, VU_DEVICE_GET_INFO, &hdr, sizeof(hdr), buf, len,
			     what, 0);
}

int vfiomig_device_get_iommu_info_raw(struct vfiomig_device *dev, void **buf, size_t *len)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vu_iommu_type1_info hdr = { 0 };
	char what[160];

	if (!dev)
		return -EINVAL;
	if (!buf || !len)
		return vm_arg_err(dev->ctx, __func__);
	if (!dev->group || !dev->group->container || !dev->group->container->iommu_set)
		return vm_err(dev->ctx, -ENOTTY, "device %s: no type1 container to ask for IOMMU "
			      "info", dev->name);
	snprintf(what, sizeof(what), "device %s: VFIO_IOMMU_GET_INFO", dev->name);
	return vk_info_ioctl(dev->ctx, dev->group->container->fd, VU_IOMMU_GET_INFO, &hdr,
			     sizeof(hdr), buf, len, what, 0);
}

int vm_device_reset(struct vfiomig_device *dev)
{
	int ret = vk_ioctl_retry(dev->ctx, dev->fd, VU_DEVICE_RESET, NULL);

	return ret < 0 ? ret : 0;
}

int vfiomig_device_reset(struct vfiomig_device *dev)
{
	int ret;

	if (!dev)
		return -EINVAL;
	VM_API(dev->ctx);
	ret = vm_device_reset(dev);
	if (ret < 0)
		return vm_err(dev->ctx, ret, "device %s: VFIO_DEVICE_RESET", dev->name);
	return 0;
}

void vm_device_link_name(struct vfiomig_device *dev, const char *leaf, char *out, size_t len)
{
	char link[PATH_MAX_LEN];
	const char *base;

	out[0] = '\0';
	if (dev->sysfs && read_link_leaf(dev->ctx, dev->sysfs, leaf, link, &base) == 0 &&
	    strlen(base) < len)
		memcpy(out, base, strlen(base) + 1);
}
