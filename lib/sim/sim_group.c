/* SPDX-License-Identifier: MIT */
/*
 * IOMMU groups: which devices a group holds, whether it is viable (no
 * other driver owns the DMA of one of its devices), and the group file
 * /dev/vfio/<group> with its ioctls (GET_STATUS, SET_CONTAINER,
 * UNSET_CONTAINER, GET_DEVICE_FD). The errno values follow
 * drivers/vfio/group.c and container.c.
 */
#include "sim_internal.h"

#include <stdlib.h>

/* ------------------------------------------------------ groups, viability */

struct sim_group *sim_group_find(const struct vfiomig_sim *sim, int num)
{
	for (size_t i = 0; i < sim->ngroups; i++)
		if (sim->groups[i]->num == num)
			return sim->groups[i];
	return NULL;
}

struct sim_group *sim_group_new(struct vfiomig_sim *sim, bool emulated)
{
	struct sim_group **groups, *g;

	groups = sim_grow(sim->groups, &sim->groups_cap, sim->ngroups + 1, sizeof(*groups));
	if (!groups)
		return NULL;
	sim->groups = groups;
	g = calloc(1, sizeof(*g));
	if (!g)
		return NULL;
	g->num = sim->next_group++;
	g->emulated = emulated;
	sim->groups[sim->ngroups++] = g;
	return g;
}

bool sim_device_vfio_bound(const struct vfiomig_sim_device *dev)
{
	static const char *const mdev_drivers[] = { "vfio_mdev", "mtty", "mdpy", "mbochs" };
	const char *d = dev->driver;
	size_t n = strlen(d);

	if (dev->kind == VFIOMIG_DEVKIND_MDEV) {
		for (size_t i = 0; i < VM_ARRAY_SIZE(mdev_drivers); i++)
			if (strcmp(d, mdev_drivers[i]) == 0)
				return true;
		return false;
	}
	/* vfio-pci itself, or a variant driver (mlx5_vfio_pci, ...). */
	return strcmp(d, "vfio-pci") == 0 || (n > 9 && strcmp(d + n - 9, "_vfio_pci") == 0);
}

bool sim_driver_claims_dma(const struct vfiomig_sim_device *dev)
{
	/* Unbound devices and pci-stub (driver_managed_dma) leave the group viable. */
	return dev->driver[0] && !sim_device_vfio_bound(dev) && strcmp(dev->driver, "pci-stub");
}

bool sim_group_viable(const struct vfiomig_sim *sim, const struct sim_group *g)
{
	for (size_t i = 0; i < sim->ndevs; i++)
		if (sim->devs[i]->group == g && sim_driver_claims_dma(sim->devs[i]))
			return false;
	return true;
}

bool sim_group_has_vfio(const struct vfiomig_sim *sim, const struct sim_group *g)
{
	for (size_t i = 0; i < sim->ndevs; i++)
		if (sim->devs[i]->group == g && sim_device_vfio_bound(sim->devs[i]))
			return true;
	return false;
}

/* ------------------------------------------------------------ group files */

struct sim_group_file {
	struct sim_obj obj;
	struct sim_group *group;
};

static int sim_group_get_status(struct sim_group *g, void *arg)
{
	struct vu_group_status st;

	if (!arg)
		return -EFAULT;
	memcpy(&st.argsz, arg, sizeof(st.argsz));
	if (st.argsz < sizeof(st))
		return -EINVAL;
	st.flags = 0;
	/* With a container set the group owns its DMA: viable by construction. */
	if (g->container || g->iommufd)
		st.flags = VU_GROUP_FLAGS_CONTAINER_SET | VU_GROUP_FLAGS_VIABLE;
	else if (sim_group_viable(g->file->sim, g))
		st.flags = VU_GROUP_FLAGS_VIABLE;
	memcpy(arg, &st, sizeof(st));
	return 0;
}

static int sim_group_set_container(struct sim_group *g, void *arg)
{
	struct vfiomig_sim *sim = g->file->sim;
	struct sim_container *c;
	struct sim_group **groups;
	struct sim_obj *o;
	int fd;

	if (!arg)
		return -EFAULT;
	memcpy(&fd, arg, sizeof(fd));
	o = sim_fd_lookup(sim, fd);
	if (!o && !sim_fd_is_real(fd))
		return -EBADF;
	if (g->container || g->iommufd)
		return -EINVAL;
	if (o && o->type == SIM_OBJ_IOMMUFD) {
		/* iommufd's VFIO compatibility: the group uses the iommufd as its container. */
		g->iommufd = (struct sim_iommufd *)o;
		sim_obj_get(o);
		sim_event_add(sim, "SET_CONTAINER %d iommufd", g->num);
		return 0;
	}
	if (!o || o->type != SIM_OBJ_CONTAINER)
		return -EBADFD; /* an fd VFIO does not recognise */
	c = (struct sim_container *)o;
	/* Claiming the group's DMA ownership fails while another driver holds it. */
	if (!sim_group_viable(sim, g))
		return -EPERM;
	/* Joining a container with its IOMMU set: the new domain must take its mappings. */
	if (c->iommu_type) {
		int err = sim_type1_group_check(c, g);

		if (err)
			return err;
	}
	groups = sim_grow(c->groups, &c->groups_cap, c->ngroups + 1, sizeof(*groups));
	if (!groups)
		return -ENOMEM;
	c->groups = groups;
	c->groups[c->ngroups++] = g;
	g->container = c;
	sim_obj_get(&c->obj);
	sim_event_add(sim, "SET_CONTAINER %d", g->num);
	return 0;
}

/* Leave the container or iommufd the group is set to, if any. */
static void sim_group_leave(struct sim_group *g)
{
	if (g->container)
		sim_group_detach(g);
	if (g->iommufd) {
		struct sim_iommufd *ictx = g->iommufd;

		g->iommufd = NULL;
		sim_obj_put(&ictx->obj);
	}
}

static int sim_group_unset_container(struct sim_group *g)
{
	if (!g->container && !g->iommufd)
		return -EINVAL;
	if (g->container && g->container_users)
		return -EBUSY; /* devices are open through it */
	sim_group_leave(g);
	sim_event_add(g->file->sim, "UNSET_CONTAINER %d", g->num);
	return 0;
}

static int sim_group_get_device_fd(struct sim_group_file *gf, void *arg)
{
	struct sim_group *g = gf->group;
	struct vfiomig_sim *sim = gf->obj.sim;
	struct vfiomig_sim_device *dev;
	struct sim_devfile *df;
	const char *name = arg;
	int fd;

	if (!arg)
		return -EFAULT;
	/* The kernel copies at most a page of name (strndup_user). */
	if (strnlen(name, 4096) == 4096)
		return -EINVAL;
	dev = sim_device_find(sim, name);
	if (!dev || dev->group != g || !sim_device_vfio_bound(dev))
		return -ENODEV;
	/* Opening needs the IOMMU: a container with VFIO_SET_IOMMU done, or an iommufd. */
	if (!g->container && !g->iommufd)
		return -EINVAL;
	if (g->container && !g->container->iommu_type)
		return -EINVAL;
	if (g->iommufd && !sim_group_viable(sim, g))
		return -EPERM;
	df = sim_devfile_new(dev);
	if (!df)
		return -ENOMEM;
	df->group_file = &gf->obj;
	sim_obj_get(&gf->obj); /* a device file holds its group file open */
	df->granted = true;
	dev->open_count++;
	g->container_users++;
	fd = sim_fd_install_new(sim, &df->obj);
	if (fd >= 0)
		sim_event_add(sim, "GET_DEVICE_FD %s", dev->name);
	return fd;
}

static int sim_group_ioctl(struct sim_obj *obj, unsigned long req, void *arg)
{
	struct sim_group_file *gf = (struct sim_group_file *)obj;

	switch (req) {
	case VU_GROUP_GET_STATUS:
		return sim_group_get_status(gf->group, arg);
	case VU_GROUP_SET_CONTAINER:
		return sim_group_set_container(gf->group, arg);
	case VU_GROUP_UNSET_CONTAINER:
		return sim_group_unset_container(gf->group);
	case VU_GROUP_GET_DEVICE_FD:
		return sim_group_get_device_fd(gf, arg);
	default:
		return -ENOTTY;
	}
}

static void sim_group_fd_closed(struct sim_obj *obj)
{
	struct sim_group_file *gf = (struct sim_group_file *)obj;

	sim_event_add(obj->sim, "close group %d", gf->group->num);
}

static void sim_group_release(struct sim_obj *obj)
{
	struct sim_group_file *gf = (struct sim_group_file *)obj;
	struct sim_group *g = gf->group;

	/* The group file goes only once no device file holds it. */
	sim_group_leave(g);
	g->file = NULL;
	free(gf);
}

static const struct sim_obj_ops sim_group_ops = {
	.name = "group",
	.ioctl = sim_group_ioctl,
	.fd_closed = sim_group_fd_closed,
	.release = sim_group_release,
};

int sim_group_open(struct vfiomig_sim *sim, struct sim_group *g)
{
	struct sim_group_file *gf;
	int fd;

	if (!sim_group_has_vfio(sim, g))
		return -ENOENT;
	if (g->file || g->cdev_open_cnt)
		return -EBUSY; /* one open at a time; cdev users block the group */
	gf = calloc(1, sizeof(*gf));
	if (!gf)
		return -ENOMEM;
	sim_obj_init(&gf->obj, sim, SIM_OBJ_GROUP, &sim_group_ops);
	gf->group = g;
	g->file = &gf->obj;
	sim_obj_get(&gf->obj);
	fd = sim_fd_install(sim, &gf->obj);
	sim_obj_put(&gf->obj);
	if (fd >= 0)
		sim_event_add(sim, "open /dev/vfio/%d", g->num);
	return fd;
}

