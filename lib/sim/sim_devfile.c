/* SPDX-License-Identifier: MIT */
/*
 * Device files: a device fd from VFIO_GROUP_GET_DEVICE_FD, or a cdev
 * /dev/vfio/devices/vfioN bound to an iommufd (BIND_IOMMUFD,
 * ATTACH/DETACH_IOMMUFD_PT); region access through pread, pwrite and
 * mmap; what closing the last one undoes (drivers/vfio: vfio_main.c,
 * device_cdev.c).
 */
#include "sim_internal.h"

#include <stdlib.h>
#include <sys/mman.h>

/* ------------------------------------------------------ cdev and iommufd */

static int sim_bind_iommufd(struct sim_devfile *df, void *arg)
{
	struct vfiomig_sim_device *dev = df->dev;
	struct vfiomig_sim *sim = df->obj.sim;
	struct vu_device_bind_iommufd bind;
	struct sim_iommufd *ictx;
	struct sim_obj *o;
	uint32_t devid;
	int err;

	if (!arg)
		return -EFAULT;
	memcpy(&bind.argsz, arg, sizeof(bind.argsz));
	if (bind.argsz < sizeof(bind))
		return -EINVAL;
	memcpy(&bind, arg, sizeof(bind));
	if (bind.flags || bind.iommufd < 0)
		return -EINVAL;
	if (df->group_file)
		return -EINVAL; /* BIND_IOMMUFD is for cdev fds only */
	if (dev->group->file)
		return -EBUSY; /* the group is open: cdev and group use exclude each other */
	if (df->granted)
		return -EINVAL; /* bound already */
	o = sim_fd_lookup(sim, bind.iommufd);
	if (!o)
		return sim_fd_is_real(bind.iommufd) ? -EBADFD : -EBADF;
	if (o->type != SIM_OBJ_IOMMUFD)
		return -EBADFD;
	ictx = (struct sim_iommufd *)o;
	if (dev->open_count)
		return -EINVAL; /* a cdev may open the device only when nobody else has */
	if (!sim_group_viable(sim, dev->group))
		return -EPERM; /* DMA ownership of the group is taken by another driver */
	/* An emulated device binds as an iommufd access, not as a device object. */
	err = sim_iommufd_alloc(ictx, dev->kind == VFIOMIG_DEVKIND_MDEV ? SIM_IOMMUFD_ACCESS
								    : SIM_IOMMUFD_DEVICE, &devid);
	if (err)
		return err;
	sim_iommufd_find(ictx, devid)->dev = dev;
	dev->cdev_file = df;
	df->ictx = ictx;
	sim_obj_get(&ictx->obj);
	df->devid = devid;
	dev_lock(dev); /* pread and pwrite look at it under the device lock alone */
	df->granted = true;
	dev_unlock(dev);
	dev->open_count++;
	dev->cdev_opened = true;
	dev->group->cdev_open_cnt++;
	memcpy((uint8_t *)arg + offsetof(struct vu_device_bind_iommufd, out_devid), &devid,
	       sizeof(devid));
	sim_event_add(sim, "BIND_IOMMUFD %s", dev->name);
	return 0;
}

static void sim_detach_pt(struct sim_devfile *df)
{
	if (!df->pt_id)
		return;
	sim_iommufd_detach(df->ictx, df->pt_id);
	df->pt_id = 0;
}

static int sim_devfile_attach_pt(struct sim_devfile *df, void *arg)
{
	struct vu_device_attach_iommufd_pt at;
	uint32_t pt;
	int err;

	if (!arg)
		return -EFAULT;
	memcpy(&at.argsz, arg, sizeof(at.argsz));
	if (at.argsz < sizeof(at))
		return -EINVAL;
	memcpy(&at, arg, sizeof(at));
	if (at.flags)
		return -EINVAL;
	/*
	 * An IOAS or a HWPT; attached already, the new one replaces the old
	 * (attached first, so an automatic HWPT shared by both survives).
	 * pt_id comes back as what was attached: for a PCI device on an
	 * IOAS, the automatic HWPT made for it.
	 */
	pt = at.pt_id;
	err = sim_iommufd_attach(df->ictx, df->dev, &pt);
	if (err)
		return err;
	sim_detach_pt(df);
	df->pt_id = pt;
	memcpy((uint8_t *)arg + offsetof(struct vu_device_attach_iommufd_pt, pt_id), &pt,
	       sizeof(pt));
	sim_event_add(df->obj.sim, "ATTACH_IOMMUFD_PT %s %u", df->dev->name, at.pt_id);
	return 0;
}

static int sim_devfile_detach_pt(struct sim_devfile *df, void *arg)
{
	struct {
		uint32_t argsz;
		uint32_t flags;
	} d;

	if (!arg)
		return -EFAULT;
	memcpy(&d, arg, sizeof(d));
	if (d.argsz < sizeof(d) || d.flags)
		return -EINVAL;
	sim_detach_pt(df);
	sim_event_add(df->obj.sim, "DETACH_IOMMUFD_PT %s", df->dev->name);
	return 0;
}

/* ------------------------------------------------------ device file ops */

static int sim_devfile_ioctl(struct sim_obj *obj, unsigned long req, void *arg)
{
	struct sim_devfile *df = (struct sim_devfile *)obj;

	if (req == VU_DEVICE_BIND_IOMMUFD)
		return sim_bind_iommufd(df, arg);
	/* Until the cdev is bound, the device file answers -EINVAL to everything. */
	if (!df->granted)
		return -EINVAL;
	if (!df->group_file) {
		if (req == VU_DEVICE_ATTACH_IOMMUFD_PT)
			return sim_devfile_attach_pt(df, arg);
		if (req == VU_DEVICE_DETACH_IOMMUFD_PT)
			return sim_devfile_detach_pt(df, arg);
	}
	return sim_device_ioctl(df->dev, req, arg);
}

/* Without the simulator lock: two devices' regions move data in parallel. */
static ssize_t sim_devfile_rw(struct sim_devfile *df, void *buf, size_t len, uint64_t off,
			      bool write)
{
	ssize_t ret = -EINVAL;

	dev_lock(df->dev);
	if (df->granted)
		ret = sim_device_rw(df->dev, buf, len, off, write);
	dev_unlock(df->dev);
	return ret;
}

static ssize_t sim_devfile_pread(struct sim_obj *obj, void *buf, size_t len, uint64_t off)
{
	return sim_devfile_rw((struct sim_devfile *)obj, buf, len, off, false);
}

static ssize_t sim_devfile_pwrite(struct sim_obj *obj, const void *buf, size_t len, uint64_t off)
{
	return sim_devfile_rw((struct sim_devfile *)obj, (void *)buf, len, off, true);
}

static int sim_devfile_mmap(struct sim_obj *obj, uint64_t off, size_t len, int prot, void **addr)
{
	struct sim_devfile *df = (struct sim_devfile *)obj;
	struct vfiomig_sim *sim = obj->sim;
	size_t pg = sim->page_size;
	struct sim_region *r;
	struct sim_map *maps;
	uint64_t rel, rlen;
	bool inside = false;
	void *p;

	if (!df->granted)
		return -EINVAL;
	if (!len || off % pg)
		return -EINVAL;
	if (len > SIZE_MAX - (pg - 1))
		return -ENOMEM;
	rlen = (len + pg - 1) / pg * pg; /* as mmap(2): the length is rounded up to pages */
	r = sim_region_at(df->dev, off);
	if (!r || !(r->flags & VU_REGION_INFO_FLAG_MMAP) || r->memfd < 0)
		return -EINVAL;
	rel = off - r->offset;
	if (r->sparse) {
		for (uint32_t i = 0; i < r->nr_areas && !inside; i++) {
			const struct vu_region_sparse_mmap_area *a = &r->areas[i];

			inside = rel >= a->offset && rel - a->offset <= a->size &&
				 rlen <= a->size - (rel - a->offset);
		}
	} else {
		uint64_t end = (r->size + pg - 1) / pg * pg;

		inside = rlen <= end - rel;
	}
	if (!inside)
		return -EINVAL;
	maps = sim_grow(sim->maps, &sim->maps_cap, sim->nmaps + 1, sizeof(*maps));
	if (!maps)
		return -ENOMEM;
	sim->maps = maps;
	p = mmap(NULL, (size_t)rlen, prot, MAP_SHARED, r->memfd, (off_t)rel);
	if (p == MAP_FAILED)
		return -errno;
	sim->maps[sim->nmaps++] = (struct sim_map){ .addr = p, .len = (size_t)rlen };
	*addr = p;
	return 0;
}

static void sim_devfile_fd_closed(struct sim_obj *obj)
{
	struct sim_devfile *df = (struct sim_devfile *)obj;

	sim_event_add(obj->sim, "close device %s", df->dev->name);
}

static void sim_devfile_release(struct sim_obj *obj)
{
	struct sim_devfile *df = (struct sim_devfile *)obj;
	struct vfiomig_sim_device *dev = df->dev;

	if (df->granted) {
		dev->open_count--;
		if (df->group_file) {
			dev->group->container_users--;
		} else {
			sim_detach_pt(df);
			sim_iommufd_remove(df->ictx, df->devid);
			dev->cdev_opened = false;
			dev->cdev_file = NULL;
			dev->group->cdev_open_cnt--;
		}
		if (!dev->open_count)
			sim_dmalog_closed(dev);
	}
	dev->nfiles--;
	if (df->ictx)
		sim_obj_put(&df->ictx->obj);
	if (df->group_file)
		sim_obj_put(df->group_file);
	free(df);
}

static const struct sim_obj_ops sim_devfile_ops = {
	.name = "device",
	.ioctl = sim_devfile_ioctl,
	.pread = sim_devfile_pread,
	.pwrite = sim_devfile_pwrite,
	.mmap = sim_devfile_mmap,
	.fd_closed = sim_devfile_fd_closed,
	.release = sim_devfile_release,
};

struct sim_devfile *sim_devfile_new(struct vfiomig_sim_device *dev)
{
	struct sim_devfile *df = calloc(1, sizeof(*df));

	if (!df)
		return NULL;
	sim_obj_init(&df->obj, dev->sim, SIM_OBJ_DEVICE, &sim_devfile_ops);
	df->dev = dev;
	dev->nfiles++;
	return df;
}

int sim_cdev_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev)
{
	struct sim_devfile *df = sim_devfile_new(dev);
	int fd;

	if (!df)
		return -ENOMEM;
	fd = sim_fd_install_new(sim, &df->obj);
	if (fd >= 0)
		sim_event_add(sim, "open %s", dev->cdev_path);
	return fd;
}

