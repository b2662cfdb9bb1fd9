/* SPDX-License-Identifier: MIT */
/*
 * The simulated VFIO kernel: the fd table and its typed objects
 * (containers, group files, device files, iommufds), the sysfs and /dev
 * lookups, every ioctl with the kernel's argsz rules, capability chains
 * and errno values, device regions backed by memory (pread, pwrite,
 * mmap) and the event logs; device migration lives in sim_mig.c, DMA
 * mappings and dirty tracking in sim_dirty.c. Where an errno is not
 * obvious, the comment names the kernel behaviour it reproduces
 * (drivers/vfio: container.c, group.c, device_cdev.c, vfio_main.c,
 * pci/vfio_pci_core.c, pci/vfio_pci_rdwr.c, vfio_iommu_type1.c; iommufd).
 */
#include "sim_internal.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define SIM_FIRST_GROUP 10                 /* not 0: tests tell numbers from indexes */
#define SIM_BAR0_DEFAULT (64ull << 10)
#define SIM_BAR0_MAX     (16ull << 30)     /* regions are 64 GiB apart in the file */
#define SIM_BAR2_SIZE    4096u
#define SIM_CFG_SIZE     256u
#define SIM_MAX_REGIONS  256u
#define SIM_BAR0_BASE    0x4000000000ull   /* fake bus addresses in config space */
#define SIM_BAR2_BASE    0xfd000000u

/* type1 facts: the kernel's answers on a typical x86 host. */
#define SIM_IOVA_PGSIZES    (0x1000ull | 0x200000ull | 0x40000000ull)

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

/* ------------------------------------------------------------ helpers */

int sim_opts_check(const void *opts, size_t known_sz)
{
	const unsigned char *p = opts;
	size_t sz;

	if (!opts)
		return 0;
	sz = *(const size_t *)opts;
	if (sz < sizeof(size_t))
		return -EINVAL;
	for (size_t i = known_sz; i < sz; i++)
		if (p[i])
			return -EINVAL;
	return 0;
}

/* Grow an array to hold `need` elements; returns the (maybe moved) array or NULL. */
static void *sim_grow(void *arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 8;
	char *n;

	if (need <= *cap)
		return arr;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2)
			return NULL;
		ncap *= 2;
	}
	if (ncap > SIZE_MAX / elem)
		return NULL;
	n = realloc(arr, ncap * elem);
	if (!n)
		return NULL;
	memset(n + *cap * elem, 0, (ncap - *cap) * elem);
	*cap = ncap;
	return n;
}

static size_t sim_min(size_t a, size_t b)
{
	return a < b ? a : b;
}

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

/* Is fd a real open fd of this process (for -EBADFD vs -EBADF)? */
static bool sim_fd_is_real(int fd)
{
	return fd >= 0 && fcntl(fd, F_GETFD) != -1;
}

/* ------------------------------------------------------- events, errors */

/* Append a line to a log; past SIM_EVENTS_MAX the older half is dropped. Best effort. */
static void sim_log_vadd(struct sim_event **events, size_t *n, size_t *cap, const char *fmt,
			 va_list ap)
{
	struct sim_event *ev;

	if (*n >= SIM_EVENTS_MAX) {
		size_t drop = SIM_EVENTS_MAX / 2;

		memmove(*events, *events + drop, (*n - drop) * sizeof(*ev));
		*n -= drop;
	}
	ev = sim_grow(*events, cap, *n + 1, sizeof(*ev));
	if (!ev)
		return;
	*events = ev;
	ev = &ev[(*n)++];
	vsnprintf(ev->text, sizeof(ev->text), fmt, ap);
}

void sim_event_add(struct vfiomig_sim *sim, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sim_log_vadd(&sim->events, &sim->nevents, &sim->events_cap, fmt, ap);
	va_end(ap);
}

void sim_pub_event(struct vfiomig_sim *sim, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sim_log_vadd(&sim->pub_events, &sim->npub_events, &sim->pub_events_cap, fmt, ap);
	va_end(ap);
	va_start(ap, fmt);
	sim_log_vadd(&sim->events, &sim->nevents, &sim->events_cap, fmt, ap);
	va_end(ap);
}

size_t vfiomig_sim_event_count(const struct vfiomig_sim *sim)
{
	return sim ? sim->npub_events : 0;
}

const char *vfiomig_sim_event(const struct vfiomig_sim *sim, size_t i)
{
	return sim && i < sim->npub_events ? sim->pub_events[i].text : NULL;
}

void vfiomig_sim_events_clear(struct vfiomig_sim *sim)
{
	if (sim)
		sim->npub_events = 0;
}

size_t sim_event_count(const struct vfiomig_sim *sim)
{
	return sim->nevents;
}

const char *sim_event(const struct vfiomig_sim *sim, size_t i)
{
	return i < sim->nevents ? sim->events[i].text : NULL;
}

long sim_event_find(const struct vfiomig_sim *sim, size_t from, const char *text)
{
	for (size_t i = from; i < sim->nevents; i++)
		if (strcmp(sim->events[i].text, text) == 0)
			return (long)i;
	return -1;
}

void sim_event_clear(struct vfiomig_sim *sim)
{
	sim->nevents = 0;
}

void sim_set_error(struct vfiomig_sim *sim, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sim->last_error, sizeof(sim->last_error), fmt, ap);
	va_end(ap);
}

const char *sim_last_error(const struct vfiomig_sim *sim)
{
	return sim->last_error;
}

/* ------------------------------------------------------------- objects */

void sim_obj_init(struct sim_obj *obj, struct vfiomig_sim *sim, uint32_t type,
		  const struct sim_obj_ops *ops)
{
	obj->ops = ops;
	obj->sim = sim;
	obj->type = type;
	obj->refs = 0;
}

void sim_obj_get(struct sim_obj *obj)
{
	obj->refs++;
}

void sim_obj_put(struct sim_obj *obj)
{
	if (--obj->refs == 0)
		obj->ops->release(obj);
}

/* A real fd, so numbers are unique and leaks show up in the process. */
static int sim_real_fd(void)
{
	int fd = memfd_create("vfiomig-sim", MFD_CLOEXEC);

	if (fd < 0)
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	return fd < 0 ? -errno : fd;
}

static int sim_fd_attach(struct vfiomig_sim *sim, int fd, struct sim_obj *obj)
{
	struct sim_obj **t;

	t = sim_grow(sim->fds, &sim->fds_cap, (size_t)fd + 1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	sim->fds = t;
	if (t[fd]) {
		/* The caller closed this number behind our back; forget the stale entry. */
		struct sim_obj *stale = t[fd];

		t[fd] = NULL;
		sim->open_fds--;
		sim_obj_put(stale);
	}
	t[fd] = obj;
	sim_obj_get(obj);
	sim->open_fds++;
	return 0;
}

int sim_fd_install(struct vfiomig_sim *sim, struct sim_obj *obj)
{
	int fd = sim_real_fd();
	int err;

	if (fd < 0)
		return fd;
	err = sim_fd_attach(sim, fd, obj);
	if (err) {
		close(fd);
		return err;
	}
	return fd;
}

struct sim_obj *sim_fd_lookup(const struct vfiomig_sim *sim, int fd)
{
	if (fd < 0 || (size_t)fd >= sim->fds_cap)
		return NULL;
	return sim->fds[fd];
}

/* Install a freshly created object (refs 0): on failure it is released. */
static int sim_fd_install_new(struct vfiomig_sim *sim, struct sim_obj *obj)
{
	int fd;

	sim_obj_get(obj);
	fd = sim_fd_install(sim, obj);
	sim_obj_put(obj);
	return fd;
}

/* ------------------------------------------------------ capability chains */

void sim_caps_add(struct sim_caps *c, uint16_t id, uint16_t version, const void *cap,
		  size_t cap_len)
{
	struct vu_info_cap_header h = { .id = id, .version = version, .next = 0 };
	size_t size = (cap_len + 7) & ~(size_t)7;
	size_t off = c->len;
	uint8_t *nb;

	if (c->err)
		return;
	nb = realloc(c->buf, off + size);
	if (!nb) {
		c->err = -ENOMEM;
		return;
	}
	c->buf = nb;
	memset(nb + off, 0, size);
	memcpy(nb + off, cap, cap_len);
	memcpy(nb + off, &h, sizeof(h));
	if (off) {
		uint32_t next = (uint32_t)off;

		memcpy(nb + c->last + offsetof(struct vu_info_cap_header, next), &next,
		       sizeof(next));
	}
	c->last = off;
	c->len = off + size;
}

int sim_caps_apply(struct sim_caps *c, void *arg, size_t hdr_len, uint32_t *argsz,
		   uint32_t *flags, uint32_t caps_flag, uint32_t *cap_offset)
{
	int err = c->err;

	if (!err && c->len) {
		*flags |= caps_flag;
		if (*argsz < hdr_len + c->len) {
			*argsz = (uint32_t)(hdr_len + c->len);
			*cap_offset = 0;
		} else {
			size_t off = 0;

			/* `next` is relative to the info buffer, not to the chain. */
			for (;;) {
				struct vu_info_cap_header h;
				uint32_t nxt;

				memcpy(&h, c->buf + off, sizeof(h));
				if (!h.next)
					break;
				nxt = h.next;
				h.next += (uint32_t)hdr_len;
				memcpy(c->buf + off, &h, sizeof(h));
				off = nxt;
			}
			memcpy((uint8_t *)arg + hdr_len, c->buf, c->len);
			*cap_offset = (uint32_t)hdr_len;
		}
	}
	free(c->buf);
	c->buf = NULL;
	c->len = 0;
	return err;
}

/* -------------------------------------------------------- groups, devices */

static struct sim_group *sim_group_find(const struct vfiomig_sim *sim, int num)
{
	for (size_t i = 0; i < sim->ngroups; i++)
		if (sim->groups[i]->num == num)
			return sim->groups[i];
	return NULL;
}

struct vfiomig_sim_device *sim_device_find(const struct vfiomig_sim *sim, const char *name)
{
	for (size_t i = 0; i < sim->ndevs; i++)
		if (strcmp(sim->devs[i]->name, name) == 0)
			return sim->devs[i];
	return NULL;
}

bool sim_device_vfio_bound(const struct vfiomig_sim_device *dev)
{
	static const char *const mdev_drivers[] = { "vfio_mdev", "mtty", "mdpy", "mbochs" };
	const char *d = dev->driver;
	size_t n = strlen(d);

	if (dev->kind == VFIOMIG_DEVKIND_MDEV) {
		for (size_t i = 0; i < SIM_ARRAY_SIZE(mdev_drivers); i++)
			if (strcmp(d, mdev_drivers[i]) == 0)
				return true;
		return false;
	}
	/* vfio-pci itself, or a variant driver (mlx5_vfio_pci, ...). */
	return strcmp(d, "vfio-pci") == 0 || (n > 9 && strcmp(d + n - 9, "_vfio_pci") == 0);
}

/* Does the device's driver take the DMA ownership a VFIO user needs? */
static bool sim_driver_claims_dma(const struct vfiomig_sim_device *dev)
{
	/* Unbound devices and pci-stub (driver_managed_dma) leave the group viable. */
	return dev->driver[0] && !sim_device_vfio_bound(dev) && strcmp(dev->driver, "pci-stub");
}

static bool sim_group_viable(const struct vfiomig_sim *sim, const struct sim_group *g)
{
	for (size_t i = 0; i < sim->ndevs; i++)
		if (sim->devs[i]->group == g && sim_driver_claims_dma(sim->devs[i]))
			return false;
	return true;
}

/* /dev/vfio/<num> exists while some device of the group is bound to VFIO. */
static bool sim_group_has_vfio(const struct vfiomig_sim *sim, const struct sim_group *g)
{
	for (size_t i = 0; i < sim->ndevs; i++)
		if (sim->devs[i]->group == g && sim_device_vfio_bound(sim->devs[i]))
			return true;
	return false;
}

/* ------------------------------------------------------------- containers */

static bool sim_type1_ext(const struct vfiomig_sim *sim, unsigned long ext)
{
	if (sim->flags & VFIOMIG_SIM_F_NO_TYPE1)
		return false;
	return ext == VU_TYPE1_IOMMU || ext == VU_TYPE1v2_IOMMU || ext == VU_UNMAP_ALL;
}

static void sim_group_detach(struct sim_group *g)
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
	if (info.argsz < SIM_OFFSETOFEND(struct vu_iommu_type1_info, iova_pgsizes))
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

		head.nr_iovas = SIM_ARRAY_SIZE(sim_type1_iova_ranges);
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

static int sim_container_open(struct vfiomig_sim *sim)
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

		if (size < SIM_OFFSETOFEND(struct vu_iommu_ioas_alloc, out_ioas_id))
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

		if (size < SIM_OFFSETOFEND(struct vu_iommu_destroy, id))
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

static int sim_iommufd_open(struct vfiomig_sim *sim)
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

/* ------------------------------------------------------------ devices I/O */

static struct sim_region *sim_region_at(struct vfiomig_sim_device *dev, uint64_t off)
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

static void sim_config_init(struct vfiomig_sim_device *dev, size_t devindex)
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

/* ------------------------------------------------------------ device ioctls */

static int sim_device_get_info(struct vfiomig_sim_device *dev, void *arg)
{
	struct vu_device_info info = { 0 };

	if (!arg)
		return -EFAULT;
	memcpy(&info.argsz, arg, sizeof(info.argsz));
	if (info.argsz < SIM_OFFSETOFEND(struct vu_device_info, num_irqs))
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
	if (info.argsz < SIM_OFFSETOFEND(struct vu_region_info, offset))
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

static int sim_device_ioctl(struct vfiomig_sim_device *dev, unsigned long req, void *arg)
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

/* ----------------------------------------------------------- device files */

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
	df->granted = true;
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

static ssize_t sim_devfile_rw(struct sim_devfile *df, void *buf, size_t len, uint64_t off,
			      bool write)
{
	struct sim_region *r;

	if (!df->granted)
		return -EINVAL;
	r = sim_region_at(df->dev, off);
	if (!r)
		return -EINVAL;
	if (!(r->flags & (write ? VU_REGION_INFO_FLAG_WRITE : VU_REGION_INFO_FLAG_READ)))
		return -EINVAL;
	if (len && !buf)
		return -EFAULT;
	if (r->rw)
		return r->rw(df->dev, r, buf, len, off - r->offset, write);
	return sim_region_mem_rw(r, buf, len, off - r->offset, write);
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

static struct sim_devfile *sim_devfile_new(struct vfiomig_sim_device *dev)
{
	struct sim_devfile *df = calloc(1, sizeof(*df));

	if (!df)
		return NULL;
	sim_obj_init(&df->obj, dev->sim, SIM_OBJ_DEVICE, &sim_devfile_ops);
	df->dev = dev;
	dev->nfiles++;
	return df;
}

static int sim_cdev_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev)
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

/* ---------------------------------------------------------------- groups */

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

static int sim_group_unset_container(struct sim_group *g)
{
	if (!g->container && !g->iommufd)
		return -EINVAL;
	if (g->container) {
		if (g->container_users)
			return -EBUSY; /* devices are open through it */
		sim_group_detach(g);
	}
	if (g->iommufd) {
		struct sim_iommufd *ictx = g->iommufd;

		g->iommufd = NULL;
		sim_obj_put(&ictx->obj);
	}
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
	if (g->container)
		sim_group_detach(g);
	if (g->iommufd) {
		struct sim_iommufd *ictx = g->iommufd;

		g->iommufd = NULL;
		sim_obj_put(&ictx->obj);
	}
	g->file = NULL;
	free(gf);
}

static const struct sim_obj_ops sim_group_ops = {
	.name = "group",
	.ioctl = sim_group_ioctl,
	.fd_closed = sim_group_fd_closed,
	.release = sim_group_release,
};

static int sim_group_open(struct vfiomig_sim *sim, struct sim_group *g)
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

/* ------------------------------------------------------------------ paths */

#define SIM_PATH_MAX 4096

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

static int sim_op_open(void *user, const char *path, int flags)
{
	struct vfiomig_sim *sim = user;
	char p[SIM_PATH_MAX];
	unsigned long n;
	int err;

	(void)flags;
	if (!sim)
		return -EINVAL;
	err = sim_path_norm(path, p, sizeof(p));
	if (err)
		return err;
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

static ssize_t sim_op_readlink(void *user, const char *path, char *buf, size_t len)
{
	struct vfiomig_sim *sim = user;
	struct vfiomig_sim_device *dev;
	char p[SIM_PATH_MAX];
	char target[256];
	const char *rest;
	int err;

	if (!sim)
		return -EINVAL;
	err = sim_path_norm(path, p, sizeof(p));
	if (err)
		return err;
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

static int sim_op_readdir(void *user, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	struct vfiomig_sim *sim = user;
	struct vfiomig_sim_device *dev;
	char p[SIM_PATH_MAX];
	char name[64];
	const char *rest;
	unsigned long n;
	int ret;

	if (!sim || !fn)
		return -EINVAL;
	ret = sim_path_norm(path, p, sizeof(p));
	if (ret)
		return ret;

	if (strcmp(p, "/sys/kernel/iommu_groups") == 0) {
		for (size_t i = 0; i < sim->ngroups; i++) {
			snprintf(name, sizeof(name), "%d", sim->groups[i]->num);
			if ((ret = fn(cb_user, name)))
				return ret;
		}
		return 0;
	}
	if (strncmp(p, "/sys/kernel/iommu_groups/", 25) == 0) {
		char *slash = strchr(p + 25, '/');
		struct sim_group *g;

		if (slash)
			*slash = '\0';
		if (!sim_parse_dec(p + 25, INT32_MAX, &n) || !(g = sim_group_find(sim, (int)n)))
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
	if (strcmp(p, "/sys/bus/pci/devices") == 0 || strcmp(p, "/sys/bus/mdev/devices") == 0) {
		uint32_t kind = p[9] == 'p' ? VFIOMIG_DEVKIND_PCI : VFIOMIG_DEVKIND_MDEV;

		for (size_t i = 0; i < sim->ndevs; i++)
			if (sim->devs[i]->kind == kind && (ret = fn(cb_user, sim->devs[i]->name)))
				return ret;
		return 0;
	}
	if (strcmp(p, "/dev/vfio") == 0) {
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
	if (strcmp(p, "/dev/vfio/devices") == 0) {
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
	dev = sim_sysfs_device(sim, p, &rest);
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

/* -------------------------------------------------------------- fd ops */

static int sim_op_close(void *user, int fd)
{
	struct vfiomig_sim *sim = user;
	struct sim_obj *obj;

	if (!sim)
		return -EINVAL;
	obj = sim_fd_lookup(sim, fd);
	if (!obj)
		return -EBADF;
	if (obj->ops->fd_closed)
		obj->ops->fd_closed(obj);
	sim->fds[fd] = NULL;
	sim->open_fds--;
	close(fd);
	sim_obj_put(obj);
	return 0;
}

static int sim_op_dup(void *user, int fd)
{
	struct vfiomig_sim *sim = user;
	struct sim_obj *obj;
	int nfd, err;

	if (!sim)
		return -EINVAL;
	obj = sim_fd_lookup(sim, fd);
	if (!obj)
		return -EBADF;
	nfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (nfd < 0)
		return -errno;
	err = sim_fd_attach(sim, nfd, obj);
	if (err) {
		close(nfd);
		return err;
	}
	return nfd;
}

static int sim_op_ioctl(void *user, int fd, unsigned long request, void *arg)
{
	struct sim_obj *obj = user ? sim_fd_lookup(user, fd) : NULL;

	if (!user)
		return -EINVAL;
	if (!obj)
		return -EBADF;
	return obj->ops->ioctl ? obj->ops->ioctl(obj, request, arg) : -ENOTTY;
}

static ssize_t sim_op_read(void *user, int fd, void *buf, size_t len)
{
	struct sim_obj *obj = user ? sim_fd_lookup(user, fd) : NULL;

	if (!user)
		return -EINVAL;
	if (!obj)
		return -EBADF;
	return obj->ops->read ? obj->ops->read(obj, buf, len) : -EINVAL;
}

static ssize_t sim_op_write(void *user, int fd, const void *buf, size_t len)
{
	struct sim_obj *obj = user ? sim_fd_lookup(user, fd) : NULL;

	if (!user)
		return -EINVAL;
	if (!obj)
		return -EBADF;
	return obj->ops->write ? obj->ops->write(obj, buf, len) : -EINVAL;
}

static ssize_t sim_op_pread(void *user, int fd, void *buf, size_t len, uint64_t off)
{
	struct sim_obj *obj = user ? sim_fd_lookup(user, fd) : NULL;

	if (!user)
		return -EINVAL;
	if (!obj)
		return -EBADF;
	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	return obj->ops->pread ? obj->ops->pread(obj, buf, len, off) : -EINVAL;
}

static ssize_t sim_op_pwrite(void *user, int fd, const void *buf, size_t len, uint64_t off)
{
	struct sim_obj *obj = user ? sim_fd_lookup(user, fd) : NULL;

	if (!user)
		return -EINVAL;
	if (!obj)
		return -EBADF;
	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	return obj->ops->pwrite ? obj->ops->pwrite(obj, buf, len, off) : -EINVAL;
}

static int sim_op_mmap(void *user, int fd, uint64_t off, size_t len, int prot, void **addr)
{
	struct sim_obj *obj = user ? sim_fd_lookup(user, fd) : NULL;

	if (!user || !addr)
		return -EINVAL;
	if (!obj)
		return -EBADF;
	if (off > (uint64_t)INT64_MAX)
		return -EINVAL;
	return obj->ops->mmap ? obj->ops->mmap(obj, off, len, prot, addr) : -ENODEV;
}

static int sim_op_munmap(void *user, void *addr, size_t len)
{
	struct vfiomig_sim *sim = user;

	if (!sim)
		return -EINVAL;
	for (size_t i = 0; i < sim->nmaps; i++) {
		struct sim_map *m = &sim->maps[i];
		size_t pg = sim->page_size;

		if (m->addr != addr)
			continue;
		/* Whole mappings only: partial unmaps would split our bookkeeping. */
		if (!len || len > m->len || (len + pg - 1) / pg * pg != m->len)
			return -EINVAL;
		if (munmap(m->addr, m->len) < 0)
			return -errno;
		*m = sim->maps[--sim->nmaps];
		return 0;
	}
	return -EINVAL;
}

static const struct vfiomig_kernel_ops sim_kernel_ops = {
	.sz = sizeof(struct vfiomig_kernel_ops),
	.open = sim_op_open,
	.close = sim_op_close,
	.dup = sim_op_dup,
	.ioctl = sim_op_ioctl,
	.read = sim_op_read,
	.write = sim_op_write,
	.pread = sim_op_pread,
	.pwrite = sim_op_pwrite,
	.mmap = sim_op_mmap,
	.munmap = sim_op_munmap,
	.readlink = sim_op_readlink,
	.readdir = sim_op_readdir,
};

const struct vfiomig_kernel_ops *vfiomig_sim_kernel_ops(void)
{
	return &sim_kernel_ops;
}

/* ------------------------------------------------------------- simulator */

int vfiomig_sim_new(const struct vfiomig_sim_opts *opts, struct vfiomig_sim **out)
{
	const uint32_t known = VFIOMIG_SIM_F_NO_IOMMUFD | VFIOMIG_SIM_F_NO_TYPE1 |
			       VFIOMIG_SIM_F_IOMMUFD_DIRTY;
	struct vfiomig_sim *sim;
	uint32_t flags;
	long pg;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (sim_opts_check(opts, sizeof(*opts)))
		return -EINVAL;
	flags = SIM_OPTS_GET(opts, struct vfiomig_sim_opts, flags, 0);
	if (flags & ~known)
		return -EINVAL;
	sim = calloc(1, sizeof(*sim));
	if (!sim)
		return -ENOMEM;
	pg = sysconf(_SC_PAGESIZE);
	sim->page_size = pg > 0 ? (size_t)pg : 4096;
	sim->flags = flags;
	sim->next_group = SIM_FIRST_GROUP;
	*out = sim;
	return 0;
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

static void sim_device_free(struct vfiomig_sim_device *dev)
{
	sim_dmalog_free(dev);
	sim_mig_free(dev);
	if (dev->priv_free)
		dev->priv_free(dev);
	for (uint32_t i = 0; i < dev->num_regions; i++)
		sim_region_free(&dev->regions[i]);
	free(dev->regions);
	free(dev);
}

void vfiomig_sim_free(struct vfiomig_sim *sim)
{
	if (!sim)
		return;
	for (size_t fd = 0; fd < sim->fds_cap; fd++)
		if (sim->fds[fd])
			sim_op_close(sim, (int)fd);
	for (size_t i = 0; i < sim->nmaps; i++)
		munmap(sim->maps[i].addr, sim->maps[i].len);
	for (size_t i = 0; i < sim->ndevs; i++)
		sim_device_free(sim->devs[i]);
	for (size_t i = 0; i < sim->ngroups; i++)
		free(sim->groups[i]);
	free(sim->devs);
	free(sim->groups);
	free(sim->fds);
	free(sim->maps);
	free(sim->events);
	free(sim->pub_events);
	free(sim);
}

int vfiomig_sim_ctx_new(struct vfiomig_sim *sim, const struct vfiomig_ctx_opts *opts,
			struct vfiomig_ctx **out)
{
	struct vfiomig_ctx_opts o;
	size_t sz;

	if (!out)
		return -EINVAL;
	*out = NULL;
	if (!sim || sim_opts_check(opts, sizeof(o)))
		return -EINVAL;
	if (SIM_OPTS_GET(opts, struct vfiomig_ctx_opts, kernel_ops, NULL) ||
	    SIM_OPTS_GET(opts, struct vfiomig_ctx_opts, kernel_user, NULL))
		return -EINVAL;
	memset(&o, 0, sizeof(o));
	sz = opts ? sim_min(opts->sz, sizeof(o)) : 0;
	if (sz)
		memcpy(&o, opts, sz);
	o.sz = sizeof(o);
	o.kernel_ops = &sim_kernel_ops;
	o.kernel_user = sim;
	return vfiomig_ctx_new(&o, out);
}

int vfiomig_sim_open_fds(const struct vfiomig_sim *sim)
{
	return sim ? sim->open_fds : -EINVAL;
}

int vfiomig_sim_live_maps(const struct vfiomig_sim *sim)
{
	return sim ? (int)sim->nmaps : -EINVAL;
}

/* ---------------------------------------------------------------- devices */

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

static bool sim_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* "dddd:bb:dd.f" in lower-case hex, as sysfs names PCI functions. */
static bool sim_valid_pci_name(const char *s)
{
	if (strlen(s) != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.')
		return false;
	for (int i = 0; i < 12; i++)
		if (i != 4 && i != 7 && i != 10 && !sim_hex(s[i]))
			return false;
	/* device number 0..0x1f, function 0..7 */
	return (s[8] == '0' || s[8] == '1') && s[11] >= '0' && s[11] <= '7';
}

static bool sim_valid_uuid(const char *s)
{
	if (strlen(s) != 36)
		return false;
	for (int i = 0; i < 36; i++) {
		bool dash = i == 8 || i == 13 || i == 18 || i == 23;

		if (dash ? s[i] != '-' : !sim_hex(s[i]))
			return false;
	}
	return true;
}

static int sim_device_regions(struct vfiomig_sim_device *dev)
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

int vfiomig_sim_device_add(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts,
			   struct vfiomig_sim_device **out)
{
	const uint32_t known = VFIOMIG_SIM_DEV_NO_SPARSE | VFIOMIG_SIM_DEV_MSIX_MAPPABLE |
			       VFIOMIG_SIM_DEV_NO_RESET | VFIOMIG_SIM_DEV_DMA_LOGGING;
	struct vfiomig_sim_device *dev, *peer, **devs;
	struct sim_group *g = NULL, **groups;
	const char *name, *mtype;
	char genname[SIM_NAME_MAX];
	uint32_t kind, flags;
	uint64_t bar0;
	int err;

	if (!sim || !out)
		return -EINVAL;
	*out = NULL;
	sim->last_error[0] = '\0';
	if (sim_opts_check(opts, sizeof(*opts))) {
		sim_set_error(sim, "vfiomig_sim_device_opts: bad sz or unknown non-zero fields");
		return -EINVAL;
	}
	kind = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, kind, 0);
	if (!kind)
		kind = VFIOMIG_DEVKIND_PCI;
	flags = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, flags, 0);
	name = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, name, NULL);
	peer = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, same_group_as, NULL);
	bar0 = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, bar0_size, 0);
	mtype = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, mdev_type, NULL);
	if (kind != VFIOMIG_DEVKIND_PCI && kind != VFIOMIG_DEVKIND_MDEV) {
		sim_set_error(sim, "device kind %u: unknown", kind);
		return -EINVAL;
	}
	if (flags & ~known) {
		sim_set_error(sim, "device flags 0x%x: unknown bits", flags);
		return -EINVAL;
	}
	if (!bar0)
		bar0 = SIM_BAR0_DEFAULT;
	if (bar0 < 4096 || bar0 > SIM_BAR0_MAX || (bar0 & (bar0 - 1))) {
		sim_set_error(sim, "bar0 size 0x%llx: not a power of two in [4 KiB, 16 GiB]",
			      (unsigned long long)bar0);
		return -EINVAL;
	}
	if (mtype && (kind != VFIOMIG_DEVKIND_MDEV || !mtype[0] || strlen(mtype) >= SIM_NAME_MAX)) {
		sim_set_error(sim, "mdev_type: only for mdevs, 1..%d characters", SIM_NAME_MAX - 1);
		return -EINVAL;
	}
	err = sim_mig_check_opts(sim, opts);
	if (err)
		return err;
	if (peer) {
		bool found = false;

		for (size_t i = 0; i < sim->ndevs; i++)
			found |= sim->devs[i] == peer;
		/* An mdev's emulated IOMMU group holds that one device only. */
		if (!found || kind != VFIOMIG_DEVKIND_PCI || peer->kind != VFIOMIG_DEVKIND_PCI) {
			sim_set_error(sim, "same_group_as: not a PCI device of this simulator");
			return -EINVAL;
		}
		g = peer->group;
	}
	if (name) {
		if (kind == VFIOMIG_DEVKIND_PCI ? !sim_valid_pci_name(name) : !sim_valid_uuid(name)) {
			sim_set_error(sim, "device name \"%.64s\": not a %s", name,
				      kind == VFIOMIG_DEVKIND_PCI ? "PCI address (0000:03:00.0)"
							      : "lower-case UUID");
			return -EINVAL;
		}
		if (sim_device_find(sim, name)) {
			sim_set_error(sim, "device name %s: taken", name);
			return -EEXIST;
		}
	} else {
		do {
			if (kind == VFIOMIG_DEVKIND_PCI) {
				unsigned int slot = ++sim->next_pci_slot;

				snprintf(genname, sizeof(genname), "0000:%02x:%02x.0",
					 (slot / 32) & 0xff, slot % 32);
			} else {
				snprintf(genname, sizeof(genname), "5ee0c0de-0000-4000-8000-%012x",
					 ++sim->next_mdev_serial);
			}
		} while (sim_device_find(sim, genname));
		name = genname;
	}

	devs = sim_grow(sim->devs, &sim->devs_cap, sim->ndevs + 1, sizeof(*devs));
	if (!devs)
		return -ENOMEM;
	sim->devs = devs;
	dev = calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->sim = sim;
	dev->kind = kind;
	dev->flags = flags;
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	snprintf(dev->sysfs_path, sizeof(dev->sysfs_path), "/sys/bus/%s/devices/%s",
		 kind == VFIOMIG_DEVKIND_PCI ? "pci" : "mdev", name);
	snprintf(dev->driver, sizeof(dev->driver), "%s",
		 kind == VFIOMIG_DEVKIND_PCI ? "vfio-pci" : "vfio_mdev");
	snprintf(dev->mdev_type, sizeof(dev->mdev_type), "%s",
		 kind == VFIOMIG_DEVKIND_MDEV ? (mtype ? mtype : "vfiomig-sim-1") : "");
	dev->vendor_id = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, vendor_id, 0);
	dev->device_id = SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, device_id, 0);
	if (!dev->vendor_id)
		dev->vendor_id = kind == VFIOMIG_DEVKIND_PCI ? 0x1af4 : 0x4348;
	if (!dev->device_id)
		dev->device_id = kind == VFIOMIG_DEVKIND_PCI ? 0x10f0 : 0x3253;
	dev->subsystem_vendor_id =
		SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, subsystem_vendor_id, 0);
	dev->subsystem_device_id =
		SIM_OPTS_GET(opts, struct vfiomig_sim_device_opts, subsystem_device_id, 0);
	dev->bar0_size = bar0;
	dev->num_irqs = VU_PCI_NUM_IRQS;
	dev->cfg_command_init = 0;

	err = sim_device_regions(dev);
	if (err) {
		sim_set_error(sim, "device %s: region memory: %s", name, strerror(-err));
		sim_device_free(dev);
		return err;
	}
	err = sim_mig_setup(dev, opts);
	if (err) {
		sim_set_error(sim, "device %s: migration state: %s", name, strerror(-err));
		sim_device_free(dev);
		return err;
	}
	/* After migration: DMA logging chains in front of its feature hook. */
	err = sim_dmalog_setup(dev);
	if (err) {
		sim_device_free(dev);
		return err;
	}
	if (!g) {
		groups = sim_grow(sim->groups, &sim->groups_cap, sim->ngroups + 1, sizeof(*groups));
		g = groups ? calloc(1, sizeof(*g)) : NULL;
		if (groups)
			sim->groups = groups;
		if (!g) {
			sim_device_free(dev);
			return -ENOMEM;
		}
		g->num = sim->next_group++;
		g->emulated = kind == VFIOMIG_DEVKIND_MDEV;
		sim->groups[sim->ngroups++] = g;
	}
	dev->group = g;
	dev->cdev_index = sim->next_cdev++;
	snprintf(dev->cdev_path, sizeof(dev->cdev_path), "/dev/vfio/devices/vfio%d",
		 dev->cdev_index);
	sim_config_init(dev, sim->ndevs);
	sim->devs[sim->ndevs++] = dev;
	sim_event_add(sim, "ADD %s group %d", dev->name, g->num);
	*out = dev;
	return 0;
}

const char *vfiomig_sim_device_name(const struct vfiomig_sim_device *dev)
{
	return dev ? dev->name : NULL;
}

const char *vfiomig_sim_device_sysfs_path(const struct vfiomig_sim_device *dev)
{
	return dev ? dev->sysfs_path : NULL;
}

int vfiomig_sim_device_group(const struct vfiomig_sim_device *dev)
{
	return dev ? dev->group->num : -EINVAL;
}

const char *vfiomig_sim_device_cdev_path(const struct vfiomig_sim_device *dev)
{
	if (!dev || dev->sim->flags & VFIOMIG_SIM_F_NO_IOMMUFD)
		return NULL;
	return dev->cdev_path;
}

int vfiomig_sim_device_set_driver(struct vfiomig_sim_device *dev, const char *driver)
{
	struct sim_group *g;
	char old[SIM_NAME_MAX];

	if (!dev)
		return -EINVAL;
	if (!driver)
		driver = "";
	if (strlen(driver) >= SIM_NAME_MAX || strchr(driver, '/'))
		return -EINVAL;
	/* Unbinding waits for the device's users in the kernel; refuse rather than block. */
	if (dev->nfiles)
		return -EBUSY;
	g = dev->group;
	memcpy(old, dev->driver, sizeof(old));
	snprintf(dev->driver, sizeof(dev->driver), "%s", driver);
	/* A driver wanting the DMA API cannot bind while a VFIO user owns the group. */
	if (sim_driver_claims_dma(dev) && (g->container || g->iommufd || g->cdev_open_cnt)) {
		memcpy(dev->driver, old, sizeof(old));
		return -EBUSY;
	}
	sim_event_add(dev->sim, "DRIVER %s %s", dev->name, driver[0] ? driver : "(none)");
	return 0;
}

void *vfiomig_sim_device_region_mem(struct vfiomig_sim_device *dev, uint32_t index, size_t *len)
{
	if (len)
		*len = 0;
	if (!dev || index >= dev->num_regions || !dev->regions[index].mem)
		return NULL;
	if (len)
		*len = dev->regions[index].mem_len;
	return dev->regions[index].mem;
}
