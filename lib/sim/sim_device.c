/* SPDX-License-Identifier: MIT */
/*
 * The simulated device itself: its region table (memory-backed, memfd
 * when mmappable), PCI config space with its writable-bit mask, the
 * standard vfio-pci regions, and the device ioctls (GET_INFO,
 * GET_REGION_INFO, GET_IRQ_INFO, RESET, FEATURE) as vfio-pci answers them
 * (pci/vfio_pci_core.c, pci/vfio_pci_rdwr.c, pci/vfio_pci_config.c).
 * Device files, which give access to it, are in sim_devfile.c. Region
 * contents and the ioctls are the device lock's; the region table is
 * fixed once the device is added, so finding a region needs no lock.
 */
#include "sim_internal.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define SIM_BAR2_SIZE    4096u
#define SIM_CFG_SIZE     256u
#define SIM_MAX_REGIONS  256u
#define SIM_BAR0_BASE    0x4000000000ull   /* fake bus addresses in config space */
#define SIM_BAR2_BASE    0xfd000000u

/* VFIO_IRQ_INFO_* and the PCI IRQ indexes (uAPI values). */
#define SIM_IRQ_EVENTFD    (1u << 0)
#define SIM_IRQ_MASKABLE   (1u << 1)
#define SIM_IRQ_AUTOMASKED (1u << 2)
#define SIM_IRQ_NORESIZE   (1u << 3)
#define SIM_IRQ_INTX 0
#define SIM_IRQ_MSI  1
#define SIM_IRQ_MSIX 2
#define SIM_IRQ_ERR  3
#define SIM_IRQ_REQ  4

/* -------------------------------------------------------------- regions */

int sim_device_add_region(struct vfiomig_sim_device *dev, const struct sim_region *tmpl)
{
	struct sim_region *regions, *r;
	uint32_t index = dev->num_regions;

	if (index >= SIM_MAX_REGIONS || tmpl->nr_areas > SIM_MAX_SPARSE_AREAS)
		return -EINVAL;
	if (tmpl->size > SIM_BAR0_MAX)
		return -EINVAL;
	regions = realloc(dev->regions, (index + 1) * sizeof(*regions));
	if (!regions)
		return -ENOMEM;
	dev->regions = regions;
	r = &regions[index];
	*r = *tmpl;
	r->index = index;
	/* Deliberately not index << 40: the library must use the offset we report. */
	r->offset = ((uint64_t)(index + 1) << 36) + 0x1000ull * index;
	r->memfd = -1;
	r->mem = NULL;
	r->mem_len = 0;
	r->mem_is_map = false;
	if (r->size && (r->flags & VU_REGION_INFO_FLAG_MMAP)) {
		void *p;

		r->memfd = memfd_create("vfiomig-sim-region", MFD_CLOEXEC);
		if (r->memfd < 0)
			return -errno;
		if (ftruncate(r->memfd, (off_t)r->size) < 0) {
			int err = -errno;

			close(r->memfd);
			return err;
		}
		p = mmap(NULL, (size_t)r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->memfd, 0);
		if (p == MAP_FAILED) {
			int err = -errno;

			close(r->memfd);
			return err;
		}
		r->mem = p;
		r->mem_is_map = true;
	} else if (r->size) {
		r->mem = calloc(1, (size_t)r->size);
		if (!r->mem)
			return -ENOMEM;
	}
	r->mem_len = (size_t)r->size;
	dev->num_regions++;
	return (int)index;
}

static void sim_region_free(struct sim_region *r)
{
	if (r->mem_is_map)
		munmap(r->mem, r->mem_len);
	else
		free(r->mem);
	if (r->memfd >= 0)
		close(r->memfd);
	r->mem = NULL;
	r->memfd = -1;
}

struct sim_region *sim_region_at(struct vfiomig_sim_device *dev, uint64_t off)
{
	for (uint32_t i = 0; i < dev->num_regions; i++) {
		struct sim_region *r = &dev->regions[i];

		if (r->size && off >= r->offset && off - r->offset < r->size)
			return r;
	}
	return NULL;
}

/* BAR semantics (vfio_pci_bar_rw): a transfer crossing the end is shortened. */
static ssize_t sim_region_mem_rw(struct sim_region *r, void *buf, size_t len, uint64_t off,
				 bool write)
{
	size_t n;

	if (!r->mem || off >= r->size)
		return -EINVAL;
	n = (size_t)sim_min(len, r->size - off);
	if (write)
		memcpy((uint8_t *)r->mem + off, buf, n);
	else
		memcpy(buf, (uint8_t *)r->mem + off, n);
	return (ssize_t)n;
}

ssize_t sim_device_rw(struct vfiomig_sim_device *dev, void *buf, size_t len, uint64_t off,
		      bool write)
{
	struct sim_region *r = sim_region_at(dev, off);

	if (!r)
		return -EINVAL;
	if (!(r->flags & (write ? VU_REGION_INFO_FLAG_WRITE : VU_REGION_INFO_FLAG_READ)))
		return -EINVAL;
	if (len && !buf)
		return -EFAULT;
	if (r->rw)
		return r->rw(dev, r, buf, len, off - r->offset, write);
	return sim_region_mem_rw(r, buf, len, off - r->offset, write);
}

/* --------------------------------------------------------- config space */

/*
 * Config space: the kernel refuses an access crossing the end of config
 * space with -EFAULT (vfio_config_do_rw); writes only change the bits the
 * virtualised config space lets through (IDs are read-only, BARs size-masked).
 */
static ssize_t sim_config_rw(struct vfiomig_sim_device *dev, struct sim_region *r, void *buf,
			     size_t len, uint64_t off, bool write)
{
	uint8_t *cfg = r->mem;
	const uint8_t *src = buf;

	if (off > r->size || len > r->size - off)
		return -EFAULT;
	if (!write) {
		memcpy(buf, cfg + off, len);
		return (ssize_t)len;
	}
	for (size_t i = 0; i < len; i++) {
		uint8_t m = dev->cfg_wmask[off + i];

		cfg[off + i] = (uint8_t)((cfg[off + i] & ~m) | (src[i] & m));
	}
	return (ssize_t)len;
}

static void sim_put_le(uint8_t *p, uint64_t v, unsigned int bytes)
{
	for (unsigned int i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

void sim_config_init(struct vfiomig_sim_device *dev, size_t devindex)
{
	struct sim_region *r = &dev->regions[VU_PCI_CONFIG_REGION_INDEX];
	uint8_t *cfg = r->mem;
	uint8_t *wm = dev->cfg_wmask;
	uint64_t bar0 = SIM_BAR0_BASE + (uint64_t)devindex * SIM_BAR0_MAX;
	uint32_t bar2 = SIM_BAR2_BASE + (uint32_t)(devindex % 0x1000) * SIM_BAR2_SIZE;
	uint64_t bar0_mask = ~(dev->bar0_size - 1) & ~0xfull;
	uint32_t bar2_mask = ~(SIM_BAR2_SIZE - 1) & ~0xfu;

	sim_put_le(cfg + 0x00, dev->vendor_id, 2);
	sim_put_le(cfg + 0x02, dev->device_id, 2);
	sim_put_le(cfg + 0x04, dev->cfg_command_init, 2);
	cfg[0x08] = 0x01; /* revision */
	if (dev->kind == VFIOMIG_DEVKIND_MDEV) {
		/* serial controller, 16550-compatible (as the mtty sample) */
		cfg[0x09] = 0x02;
		cfg[0x0a] = 0x00;
		cfg[0x0b] = 0x07;
	} else {
		/* processing accelerator */
		cfg[0x09] = 0x00;
		cfg[0x0a] = 0x00;
		cfg[0x0b] = 0x12;
	}
	cfg[0x0e] = 0x00; /* header type 0 */
	/* BAR0: 64-bit memory (type bits 10b), so BAR1 is its upper half; BAR2: 32-bit memory. */
	sim_put_le(cfg + 0x10, (bar0 & ~0xfull) | 0x4, 8);
	sim_put_le(cfg + 0x18, bar2, 4);
	sim_put_le(cfg + 0x2c, dev->subsystem_vendor_id, 2);
	sim_put_le(cfg + 0x2e, dev->subsystem_device_id, 2);
	cfg[0x3d] = 0x01; /* INTA */

	memset(wm, 0, sizeof(dev->cfg_wmask));
	sim_put_le(wm + 0x04, 0x0547, 2); /* command: IO, MEM, MASTER, PARITY, SERR, INTX_DISABLE */
	wm[0x0c] = 0xff;                   /* cache line size */
	wm[0x0d] = 0xff;                   /* latency timer */
	sim_put_le(wm + 0x10, bar0_mask, 8);
	sim_put_le(wm + 0x18, bar2_mask, 4);
	wm[0x3c] = 0xff;                   /* interrupt line */
}

/* ---------------------------------------- the standard vfio-pci regions */

int sim_device_init_regions(struct vfiomig_sim_device *dev)
{
	for (uint32_t i = 0; i < VU_PCI_NUM_REGIONS; i++) {
		struct sim_region t = { 0 };
		int ret;

		switch (i) {
		case VU_PCI_BAR0_REGION_INDEX:
			t.flags = VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE |
				  VU_REGION_INFO_FLAG_MMAP;
			t.size = dev->bar0_size;
			if (!(dev->flags & VFIOMIG_SIM_DEV_NO_SPARSE)) {
				/* Two areas around a 4 KiB hole in the middle (an MSI-X table). */
				uint64_t half = t.size / 2;
				uint64_t hole_start = half >= 4096 ? half - 4096 : 0;
				uint64_t hole_end = half >= 4096 ? half : 4096;

				t.sparse = true;
				if (hole_start)
					t.areas[t.nr_areas++] = (struct vu_region_sparse_mmap_area){
						.offset = 0, .size = hole_start
					};
				if (hole_end < t.size)
					t.areas[t.nr_areas++] = (struct vu_region_sparse_mmap_area){
						.offset = hole_end, .size = t.size - hole_end
					};
			}
			t.msix_mappable = dev->flags & VFIOMIG_SIM_DEV_MSIX_MAPPABLE;
			break;
		case VU_PCI_BAR2_REGION_INDEX:
			t.flags = VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE;
			t.size = SIM_BAR2_SIZE;
			break;
		case VU_PCI_CONFIG_REGION_INDEX:
			t.flags = VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE;
			t.size = SIM_CFG_SIZE;
			t.rw = sim_config_rw;
			break;
		case VU_PCI_VGA_REGION_INDEX:
			/* vfio-pci refuses the VGA index without VGA; mdev drivers say size 0. */
			t.refuse_info = dev->kind == VFIOMIG_DEVKIND_PCI;
			break;
		default:
			break; /* unimplemented BARs and ROM: flags 0, size 0 */
		}
		ret = sim_device_add_region(dev, &t);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* -------------------------------------------------------- device ioctls */

static int sim_device_get_info(struct vfiomig_sim_device *dev, void *arg)
{
	struct vu_device_info info = { 0 };

	if (!arg)
		return -EFAULT;
	memcpy(&info.argsz, arg, sizeof(info.argsz));
	if (info.argsz < VM_OFFSETOFEND(struct vu_device_info, num_irqs))
		return -EINVAL;
	info.flags = VU_DEVICE_FLAGS_PCI;
	if (!(dev->flags & VFIOMIG_SIM_DEV_NO_RESET))
		info.flags |= VU_DEVICE_FLAGS_RESET;
	info.num_regions = dev->num_regions;
	info.num_irqs = dev->num_irqs;
	memcpy(arg, &info, sim_min(info.argsz, sizeof(info)));
	return 0;
}

static int sim_device_get_region_info(struct vfiomig_sim_device *dev, void *arg)
{
	struct vu_region_info info;
	struct sim_caps caps = { 0 };
	struct sim_region *r;
	int err;

	if (!arg)
		return -EFAULT;
	/* argsz first: a caller's short struct is refused before we read past it. */
	memcpy(&info.argsz, arg, sizeof(info.argsz));
	if (info.argsz < VM_OFFSETOFEND(struct vu_region_info, offset))
		return -EINVAL;
	memcpy(&info, arg, sizeof(info));
	if (info.index >= dev->num_regions)
		return -EINVAL;
	r = &dev->regions[info.index];
	if (r->refuse_info)
		return -EINVAL; /* vfio-pci: VGA index on a function without VGA */

	info.flags = r->flags;
	info.size = r->size;
	info.offset = r->offset;
	info.cap_offset = 0;

	/* The kernel's order: SPARSE_MMAP, TYPE, MSIX_MAPPABLE. */
	if (r->sparse) {
		struct vu_region_info_cap_sparse_mmap head = { 0 };
		uint8_t buf[sizeof(head) + sizeof(r->areas)];
		size_t alen = r->nr_areas * sizeof(r->areas[0]);

		head.nr_areas = r->nr_areas;
		memcpy(buf, &head, sizeof(head));
		memcpy(buf + sizeof(head), r->areas, alen);
		sim_caps_add(&caps, VU_REGION_INFO_CAP_SPARSE_MMAP, 1, buf, sizeof(head) + alen);
	}
	if (r->has_type) {
		struct vu_region_info_cap_type t = { .type = r->type, .subtype = r->subtype };

		sim_caps_add(&caps, VU_REGION_INFO_CAP_TYPE, 1, &t, sizeof(t));
	}
	if (r->msix_mappable) {
		struct vu_info_cap_header h = { 0 };

		sim_caps_add(&caps, VU_REGION_INFO_CAP_MSIX_MAPPABLE, 1, &h, sizeof(h));
	}
	err = sim_caps_apply(&caps, arg, sizeof(info), &info.argsz, &info.flags,
			     VU_REGION_INFO_FLAG_CAPS, &info.cap_offset);
	if (err)
		return err;
	memcpy(arg, &info, sizeof(info));
	return 0;
}

static int sim_device_get_irq_info(struct vfiomig_sim_device *dev, void *arg)
{
	struct vu_irq_info info;
	const uint8_t *cfg = dev->regions[VU_PCI_CONFIG_REGION_INDEX].mem;

	if (!arg)
		return -EFAULT;
	memcpy(&info.argsz, arg, sizeof(info.argsz));
	if (info.argsz < sizeof(info))
		return -EINVAL;
	memcpy(&info, arg, sizeof(info));
	if (info.index >= dev->num_irqs)
		return -EINVAL;
	switch (info.index) {
	case SIM_IRQ_INTX:
		info.flags = SIM_IRQ_EVENTFD | SIM_IRQ_MASKABLE | SIM_IRQ_AUTOMASKED;
		info.count = cfg[0x3d] ? 1 : 0;
		break;
	case SIM_IRQ_MSI:
	case SIM_IRQ_MSIX:
		/* No MSI / MSI-X capability in the simulated config space. */
		info.flags = SIM_IRQ_EVENTFD | SIM_IRQ_NORESIZE;
		info.count = 0;
		break;
	case SIM_IRQ_REQ:
		info.flags = SIM_IRQ_EVENTFD;
		info.count = 1;
		break;
	default:
		return -EINVAL; /* ERR: only for PCI Express functions */
	}
	memcpy(arg, &info, sizeof(info));
	return 0;
}

static int sim_device_reset(struct vfiomig_sim_device *dev)
{
	struct sim_region *cfgr = &dev->regions[VU_PCI_CONFIG_REGION_INDEX];

	/* vfio-pci answers -EINVAL when the function has no usable reset. */
	if (dev->flags & VFIOMIG_SIM_DEV_NO_RESET)
		return -EINVAL;
	sim_put_le((uint8_t *)cfgr->mem + 0x04, dev->cfg_command_init, 2);
	for (uint32_t i = 0; i < dev->num_regions && i <= 5; i++) {
		struct sim_region *r = &dev->regions[i];

		if (r->mem)
			memset(r->mem, 0, r->mem_len);
	}
	if (dev->reset_hook)
		dev->reset_hook(dev);
	sim_event_add(dev->sim, "RESET %s", dev->name);
	sim_pub_event(dev->sim, "%s: RESET", dev->name);
	return 0;
}

int sim_feature_check(uint32_t flags, size_t argsz, uint32_t supported, size_t minsz)
{
	if ((flags & (VU_DEVICE_FEATURE_GET | VU_DEVICE_FEATURE_SET)) & ~supported)
		return -EINVAL;
	if (flags & VU_DEVICE_FEATURE_PROBE)
		return 0;
	if (!(flags & (VU_DEVICE_FEATURE_GET | VU_DEVICE_FEATURE_SET)))
		return -EINVAL;
	if (argsz < minsz)
		return -EINVAL;
	return 1;
}

static int sim_device_feature(struct vfiomig_sim_device *dev, void *arg)
{
	const uint32_t known = VU_DEVICE_FEATURE_MASK | VU_DEVICE_FEATURE_GET |
			       VU_DEVICE_FEATURE_SET | VU_DEVICE_FEATURE_PROBE;
	struct vu_device_feature f;

	if (!arg)
		return -EFAULT;
	memcpy(&f.argsz, arg, sizeof(f.argsz));
	if (f.argsz < sizeof(f))
		return -EINVAL;
	memcpy(&f, arg, sizeof(f));
	if (f.flags & ~known)
		return -EINVAL;
	if (!(f.flags & VU_DEVICE_FEATURE_PROBE) && (f.flags & VU_DEVICE_FEATURE_SET) &&
	    (f.flags & VU_DEVICE_FEATURE_GET))
		return -EINVAL;
	/* Without migration / logging ops (or any device feature), vfio answers -ENOTTY. */
	if (!dev->feature)
		return -ENOTTY;
	return dev->feature(dev, f.flags, (uint8_t *)arg + sizeof(f), f.argsz - sizeof(f));
}

static int sim_device_ioctl_locked(struct vfiomig_sim_device *dev, unsigned long req, void *arg)
{
	switch (req) {
	case VU_DEVICE_GET_INFO:
		return sim_device_get_info(dev, arg);
	case VU_DEVICE_GET_REGION_INFO:
		return sim_device_get_region_info(dev, arg);
	case VU_DEVICE_GET_IRQ_INFO:
		return sim_device_get_irq_info(dev, arg);
	case VU_DEVICE_RESET:
		return sim_device_reset(dev);
	case VU_DEVICE_FEATURE:
		return sim_device_feature(dev, arg);
	default:
		return -ENOTTY;
	}
}

int sim_device_ioctl(struct vfiomig_sim_device *dev, unsigned long req, void *arg)
{
	int ret;

	dev_lock(dev);
	ret = sim_device_ioctl_locked(dev, req, arg);
	dev_unlock(dev);
	return ret;
}

/* ------------------------------------------------------------- lifetime */

void sim_device_free(struct vfiomig_sim_device *dev)
{
	sim_dmalog_free(dev);
	sim_mig_free(dev);
	if (dev->priv_free)
		dev->priv_free(dev);
	for (uint32_t i = 0; i < dev->num_regions; i++)
		sim_region_free(&dev->regions[i]);
	free(dev->regions);
	pthread_mutex_destroy(&dev->lock);
	free(dev);
}
