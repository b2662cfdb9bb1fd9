/* SPDX-License-Identifier: MIT */
/*
 * The two IOMMU front ends a VFIO user can open: the type1 container
 * /dev/vfio/vfio (extensions, SET_IOMMU, GET_INFO with its capabilities,
 * groups joining and leaving) and the iommufd /dev/iommu (its object id
 * table, IOAS_ALLOC, DESTROY). DMA mappings and dirty tracking behind
 * both are in sim_dirty.c.
 */
#include "sim_internal.h"

#include <stdlib.h>

/* type1 facts: the kernel's answers on a typical x86 host. */
#define SIM_IOVA_PGSIZES    (0x1000ull | 0x200000ull | 0x40000000ull)

/* ------------------------------------------------------- type1 containers */

static bool sim_type1_ext(const struct vfiomig_sim *sim, unsigned long ext)
{
	if (sim->flags & VFIOMIG_SIM_F_NO_TYPE1)
		return false;
	return ext == VU_TYPE1_IOMMU || ext == VU_TYPE1v2_IOMMU || ext == VU_UNMAP_ALL;
}

void sim_group_detach(struct sim_group *g)
{
	struct sim_container *c = g->container;

	for (size_t i = 0; i < c->ngroups; i++) {
		if (c->groups[i] == g) {
			memmove(&c->groups[i], &c->groups[i + 1],
				(c->ngroups - i - 1) * sizeof(c->groups[0]));
			c->ngroups--;
			break;
		}
	}
	g->container = NULL;
	/* Detaching the last group deprivileges the container: its IOMMU goes, mappings too. */
	if (!c->ngroups && c->iommu_type) {
		c->iommu_type = 0;
		sim_type1_teardown(c);
		sim_event_add(c->obj.sim, "IOMMU teardown");
	}
	sim_obj_put(&c->obj);
}

static int sim_type1_get_info(struct sim_container *c, void *arg)
{
	struct vu_iommu_type1_info info = { 0 };
	struct sim_caps caps = { 0 };
	bool iommu_backed = sim_type1_iommu_backed(c);
	size_t copy;
	int err;

	if (!arg)
		return -EFAULT;
	memcpy(&info.argsz, arg, sizeof(info.argsz));
	/* minsz is offsetofend(iova_pgsizes); cap_offset is optional for old callers. */
	if (info.argsz < VM_OFFSETOFEND(struct vu_iommu_type1_info, iova_pgsizes))
		return -EINVAL;

	info.flags = VU_IOMMU_INFO_PGSIZES;
	/* Only emulated (mdev) groups: no IOMMU domain narrows PAGE_MASK. */
	info.iova_pgsizes = iommu_backed ? SIM_IOVA_PGSIZES
					 : ~((uint64_t)c->obj.sim->page_size - 1);

	/* The kernel's order: MIGRATION, DMA_AVAIL, IOVA_RANGE. */
	{
		struct vu_iommu_type1_info_cap_migration mig = { 0 };

		mig.flags = 0;
		mig.pgsize_bitmap = info.iova_pgsizes & -info.iova_pgsizes; /* smallest page */
		mig.max_dirty_bitmap_size = SIM_DIRTY_BITMAP_MAX;
		sim_caps_add(&caps, VU_IOMMU_TYPE1_INFO_CAP_MIGRATION, 1, &mig, sizeof(mig));
	}
	{
		struct vu_iommu_type1_info_dma_avail avail = { 0 };

		avail.avail = sim_type1_dma_avail(c);
		sim_caps_add(&caps, VU_IOMMU_TYPE1_INFO_DMA_AVAIL, 1, &avail, sizeof(avail));
	}
	if (iommu_backed) {
		/* x86: the MSI window 0xfee00000..0xfeefffff is reserved; 48-bit aperture. */
		const size_t rlen = sizeof(sim_type1_iova_ranges);
		struct vu_iommu_type1_info_cap_iova_range head = { 0 };
		uint8_t buf[sizeof(head) + sizeof(sim_type1_iova_ranges)];

		head.nr_iovas = VM_ARRAY_SIZE(sim_type1_iova_ranges);
		memcpy(buf, &head, sizeof(head));
		memcpy(buf + sizeof(head), sim_type1_iova_ranges, rlen);
		sim_caps_add(&caps, VU_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1, buf, sizeof(buf));
	}
	err = sim_caps_apply(&caps, arg, sizeof(info), &info.argsz, &info.flags,
			     VU_IOMMU_INFO_CAPS, &info.cap_offset);
	if (err)
		return err;
	/* Since 6.6 the kernel copies back min(argsz, sizeof(info)). */
	copy = sim_min(info.argsz, sizeof(info));
	memcpy(arg, &info, copy);
	return 0;
}

static int sim_container_ioctl(struct sim_obj *obj, unsigned long req, void *arg)
{
	struct sim_container *c = (struct sim_container *)obj;
	struct vfiomig_sim *sim = obj->sim;
	unsigned long type = (unsigned long)arg;

	switch (req) {
	case VU_GET_API_VERSION:
		return VU_API_VERSION;
	case VU_CHECK_EXTENSION:
		return sim_type1_ext(sim, type) ? 1 : 0;
	case VU_SET_IOMMU:
		/* Only a container with a group may enable an IOMMU, and only once. */
		if (!c->ngroups || c->iommu_type)
			return -EINVAL;
		if (!sim_type1_ext(sim, type))
			return -ENODEV; /* no IOMMU driver claims the type */
		if (type != VU_TYPE1_IOMMU && type != VU_TYPE1v2_IOMMU)
			return -EINVAL; /* type1 claims the extension but cannot open it */
		c->iommu_type = (uint32_t)type;
		sim_event_add(sim, "SET_IOMMU %lu", type);
		return 0;
	default:
		/* Without an IOMMU driver the container answers -EINVAL to everything else. */
		if (!c->iommu_type)
			return -EINVAL;
		if (req == VU_IOMMU_GET_INFO)
			return sim_type1_get_info(c, arg);
		return sim_type1_ioctl(c, req, arg);
	}
}

static void sim_container_fd_closed(struct sim_obj *obj)
{
	sim_event_add(obj->sim, "close container");
}

static void sim_container_release(struct sim_obj *obj)
{
	struct sim_container *c = (struct sim_container *)obj;

	sim_type1_teardown(c);
	free(c->groups);
	free(c);
}

static const struct sim_obj_ops sim_container_ops = {
	.name = "container",
	.ioctl = sim_container_ioctl,
	.fd_closed = sim_container_fd_closed,
	.release = sim_container_release,
};

int sim_container_open(struct vfiomig_sim *sim)
{
	struct sim_container *c = calloc(1, sizeof(*c));
	int fd;

	if (!c)
		return -ENOMEM;
	sim_obj_init(&c->obj, sim, SIM_OBJ_CONTAINER, &sim_container_ops);
	fd = sim_fd_install_new(sim, &c->obj);
	if (fd >= 0)
		sim_event_add(sim, "open /dev/vfio/vfio");
	return fd;
}

/* --------------------------------------------------------------- iommufd */

struct sim_iommufd_id *sim_iommufd_find(struct sim_iommufd *ictx, uint32_t id)
{
	for (size_t i = 0; i < ictx->nids; i++)
		if (ictx->ids[i].id == id)
			return &ictx->ids[i];
	return NULL;
}

/* The lowest free id from 1 (the kernel's xarray allocates ids that way). */
int sim_iommufd_alloc(struct sim_iommufd *ictx, uint32_t kind, uint32_t *out)
{
	struct sim_iommufd_id *ids;
	uint32_t id = 1;

	while (sim_iommufd_find(ictx, id))
		id++;
	ids = sim_grow(ictx->ids, &ictx->ids_cap, ictx->nids + 1, sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	ictx->ids = ids;
	ids[ictx->nids++] = (struct sim_iommufd_id){ .id = id, .kind = kind };
	*out = id;
	return 0;
}

void sim_iommufd_remove(struct sim_iommufd *ictx, uint32_t id)
{
	for (size_t i = 0; i < ictx->nids; i++) {
		if (ictx->ids[i].id == id) {
			sim_iommufd_id_free(&ictx->ids[i]);
			ictx->ids[i] = ictx->ids[--ictx->nids];
			return;
		}
	}
}

bool sim_tail_zero(const void *arg, size_t known, size_t size)
{
	const uint8_t *p = arg;

	for (size_t i = known; i < size; i++)
		if (p[i])
			return false;
	return true;
}

static int sim_iommufd_ioctl(struct sim_obj *obj, unsigned long req, void *arg)
{
	struct sim_iommufd *ictx = (struct sim_iommufd *)obj;
	uint32_t size;
	int err;

	if (req != VU_IOMMU_IOAS_ALLOC && req != VU_IOMMU_DESTROY)
		return sim_iommufd_dma_ioctl(ictx, req, arg);
	if (!arg)
		return -EFAULT;
	memcpy(&size, arg, sizeof(size));

	if (req == VU_IOMMU_IOAS_ALLOC) {
		struct vu_iommu_ioas_alloc a = { 0 };

		if (size < VM_OFFSETOFEND(struct vu_iommu_ioas_alloc, out_ioas_id))
			return -EINVAL;
		if (!sim_tail_zero(arg, sizeof(a), size))
			return -E2BIG;
		memcpy(&a, arg, sizeof(a));
		if (a.flags)
			return -EOPNOTSUPP;
		err = sim_iommufd_ioas_alloc(ictx, &a.out_ioas_id);
		if (err)
			return err;
		memcpy(arg, &a, sim_min(size, sizeof(a)));
		sim_event_add(obj->sim, "IOAS_ALLOC %u", a.out_ioas_id);
		return 0;
	} else {
		struct vu_iommu_destroy d;

		if (size < VM_OFFSETOFEND(struct vu_iommu_destroy, id))
			return -EINVAL;
		if (!sim_tail_zero(arg, sizeof(d), size))
			return -E2BIG;
		memcpy(&d, arg, sizeof(d));
		/* Objects still in use (a bound device, an attached IOAS or HWPT) refuse to go. */
		return sim_iommufd_destroy(ictx, d.id);
	}
}

static void sim_iommufd_fd_closed(struct sim_obj *obj)
{
	sim_event_add(obj->sim, "close iommufd");
}

static void sim_iommufd_release(struct sim_obj *obj)
{
	struct sim_iommufd *ictx = (struct sim_iommufd *)obj;

	for (size_t i = 0; i < ictx->nids; i++)
		sim_iommufd_id_free(&ictx->ids[i]);
	free(ictx->ids);
	free(ictx);
}

static const struct sim_obj_ops sim_iommufd_ops = {
	.name = "iommufd",
	.ioctl = sim_iommufd_ioctl,
	.fd_closed = sim_iommufd_fd_closed,
	.release = sim_iommufd_release,
};

int sim_iommufd_open(struct vfiomig_sim *sim)
{
	struct sim_iommufd *ictx = calloc(1, sizeof(*ictx));
	int fd;

	if (!ictx)
		return -ENOMEM;
	sim_obj_init(&ictx->obj, sim, SIM_OBJ_IOMMUFD, &sim_iommufd_ops);
	fd = sim_fd_install_new(sim, &ictx->obj);
	if (fd >= 0)
		sim_event_add(sim, "open /dev/iommu");
	return fd;
}

