/* SPDX-License-Identifier: MIT */
/*
 * The simulator itself: creating and freeing it, its event logs and last
 * error, and adding devices (options checked, a name given or made, the
 * group chosen, regions, migration and DMA logging set up). The kernel
 * it simulates lives in the other files (see sim_internal.h); where an
 * errno is not obvious, their comments name the kernel behaviour it
 * reproduces (drivers/vfio: container.c, group.c, device_cdev.c,
 * vfio_main.c, pci/vfio_pci_core.c, pci/vfio_pci_rdwr.c,
 * vfio_iommu_type1.c; iommufd).
 */
#include "sim_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SIM_FIRST_GROUP 10                 /* not 0: tests tell numbers from indexes */
#define SIM_BAR0_DEFAULT (64ull << 10)

/* -------------------------------------------------------------- helpers */

void *sim_grow(void *arr, size_t *cap, size_t need, size_t elem)
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

/* ------------------------------------------------------- events, errors */

/* Append a line to a log; past SIM_EVENTS_MAX the older half is dropped. Best effort. */
__attribute__((format(printf, 4, 0)))
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

/*
 * The logs are read through const pointers, yet reading takes ev_lock:
 * the simulator's one piece of state that must change under a const
 * pointer is that mutex.
 */
static pthread_mutex_t *sim_ev_lock(const struct vfiomig_sim *sim)
{
	return (pthread_mutex_t *)&sim->ev_lock;
}

void sim_event_add(struct vfiomig_sim *sim, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&sim->ev_lock);
	va_start(ap, fmt);
	sim_log_vadd(&sim->events, &sim->nevents, &sim->events_cap, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&sim->ev_lock);
}

void sim_pub_event(struct vfiomig_sim *sim, const char *fmt, ...)
{
	va_list ap;

	/* Both lines at once: the two logs keep the same order. */
	pthread_mutex_lock(&sim->ev_lock);
	va_start(ap, fmt);
	sim_log_vadd(&sim->pub_events, &sim->npub_events, &sim->pub_events_cap, fmt, ap);
	va_end(ap);
	va_start(ap, fmt);
	sim_log_vadd(&sim->events, &sim->nevents, &sim->events_cap, fmt, ap);
	va_end(ap);
	pthread_mutex_unlock(&sim->ev_lock);
}

size_t vfiomig_sim_event_count(const struct vfiomig_sim *sim)
{
	size_t n;

	if (!sim)
		return 0;
	pthread_mutex_lock(sim_ev_lock(sim));
	n = sim->npub_events;
	pthread_mutex_unlock(sim_ev_lock(sim));
	return n;
}

const char *vfiomig_sim_event(const struct vfiomig_sim *sim, size_t i)
{
	const char *text;

	if (!sim)
		return NULL;
	pthread_mutex_lock(sim_ev_lock(sim));
	text = i < sim->npub_events ? sim->pub_events[i].text : NULL;
	pthread_mutex_unlock(sim_ev_lock(sim));
	return text;
}

void vfiomig_sim_events_clear(struct vfiomig_sim *sim)
{
	if (!sim)
		return;
	pthread_mutex_lock(&sim->ev_lock);
	sim->npub_events = 0;
	pthread_mutex_unlock(&sim->ev_lock);
}

size_t sim_event_count(const struct vfiomig_sim *sim)
{
	size_t n;

	pthread_mutex_lock(sim_ev_lock(sim));
	n = sim->nevents;
	pthread_mutex_unlock(sim_ev_lock(sim));
	return n;
}

const char *sim_event(const struct vfiomig_sim *sim, size_t i)
{
	const char *text;

	pthread_mutex_lock(sim_ev_lock(sim));
	text = i < sim->nevents ? sim->events[i].text : NULL;
	pthread_mutex_unlock(sim_ev_lock(sim));
	return text;
}

long sim_event_find(const struct vfiomig_sim *sim, size_t from, const char *text)
{
	long found = -1;

	pthread_mutex_lock(sim_ev_lock(sim));
	for (size_t i = from; i < sim->nevents && found < 0; i++)
		if (strcmp(sim->events[i].text, text) == 0)
			found = (long)i;
	pthread_mutex_unlock(sim_ev_lock(sim));
	return found;
}

void sim_event_clear(struct vfiomig_sim *sim)
{
	pthread_mutex_lock(&sim->ev_lock);
	sim->nevents = 0;
	pthread_mutex_unlock(&sim->ev_lock);
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

/* ------------------------------------------------------------ simulator */

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
	if (vm_sized_check(opts, VM_KNOWN_SZ(struct vfiomig_sim_opts, flags)))
		return -EINVAL;
	flags = VM_OPTS_GET(opts, struct vfiomig_sim_opts, flags, 0);
	if (flags & ~known)
		return -EINVAL;
	sim = calloc(1, sizeof(*sim));
	if (!sim)
		return -ENOMEM;
	if (pthread_mutex_init(&sim->lock, NULL)) {
		free(sim);
		return -ENOMEM;
	}
	if (pthread_mutex_init(&sim->ev_lock, NULL)) {
		pthread_mutex_destroy(&sim->lock);
		free(sim);
		return -ENOMEM;
	}
	pg = sysconf(_SC_PAGESIZE);
	sim->page_size = pg > 0 ? (size_t)pg : 4096;
	sim->flags = flags;
	sim->next_group = SIM_FIRST_GROUP;
	*out = sim;
	return 0;
}

void vfiomig_sim_free(struct vfiomig_sim *sim)
{
	if (!sim)
		return;
	sim_fd_close_all(sim);
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
	pthread_mutex_destroy(&sim->lock);
	pthread_mutex_destroy(&sim->ev_lock);
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
	if (!sim || vm_sized_check(opts, VM_KNOWN_SZ(struct vfiomig_ctx_opts, log_priority)))
		return -EINVAL;
	if (VM_OPTS_GET(opts, struct vfiomig_ctx_opts, kernel_ops, NULL) ||
	    VM_OPTS_GET(opts, struct vfiomig_ctx_opts, kernel_user, NULL))
		return -EINVAL;
	memset(&o, 0, sizeof(o));
	sz = opts ? sim_min(opts->sz, sizeof(o)) : 0;
	if (sz)
		memcpy(&o, opts, sz);
	o.sz = sizeof(o);
	o.kernel_ops = vfiomig_sim_kernel_ops();
	o.kernel_user = sim;
	return vfiomig_ctx_new(&o, out);
}

/* The counters are read under the simulator lock, through a const pointer as ev_lock. */
static pthread_mutex_t *sim_const_lock(const struct vfiomig_sim *sim)
{
	return (pthread_mutex_t *)&sim->lock;
}

int vfiomig_sim_open_fds(const struct vfiomig_sim *sim)
{
	int n;

	if (!sim)
		return -EINVAL;
	pthread_mutex_lock(sim_const_lock(sim));
	n = sim->open_fds;
	pthread_mutex_unlock(sim_const_lock(sim));
	return n;
}

int vfiomig_sim_live_maps(const struct vfiomig_sim *sim)
{
	int n;

	if (!sim)
		return -EINVAL;
	pthread_mutex_lock(sim_const_lock(sim));
	n = (int)sim->nmaps;
	pthread_mutex_unlock(sim_const_lock(sim));
	return n;
}

/* ------------------------------------------------------- adding devices */

struct vfiomig_sim_device *sim_device_find(const struct vfiomig_sim *sim, const char *name)
{
	for (size_t i = 0; i < sim->ndevs; i++)
		if (strcmp(sim->devs[i]->name, name) == 0)
			return sim->devs[i];
	return NULL;
}

/* What vfiomig_sim_device_add was asked for, defaults applied. */
struct sim_add_params {
	uint32_t kind, flags;
	const char *name;                 /* NULL: make one up */
	struct vfiomig_sim_device *peer;  /* same_group_as */
	const char *mdev_type;            /* NULL: the default */
	uint64_t bar0_size;
};

/*
 * Step 1: read the options, apply the defaults, refuse what the
 * simulator cannot do (migration options included).
 */
static int sim_add_read_opts(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts,
			     struct sim_add_params *p)
{
	const uint32_t known = VFIOMIG_SIM_DEV_NO_SPARSE | VFIOMIG_SIM_DEV_MSIX_MAPPABLE |
			       VFIOMIG_SIM_DEV_NO_RESET | VFIOMIG_SIM_DEV_DMA_LOGGING;

	if (vm_sized_check(opts, VM_KNOWN_SZ(struct vfiomig_sim_device_opts, subsystem_device_id))) {
		sim_set_error(sim, "vfiomig_sim_device_opts: bad sz or unknown non-zero fields");
		return -EINVAL;
	}
	p->kind = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, kind, 0);
	if (!p->kind)
		p->kind = VFIOMIG_DEVKIND_PCI;
	p->flags = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, flags, 0);
	p->name = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, name, NULL);
	p->peer = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, same_group_as, NULL);
	p->bar0_size = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, bar0_size, 0);
	p->mdev_type = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, mdev_type, NULL);
	if (p->kind != VFIOMIG_DEVKIND_PCI && p->kind != VFIOMIG_DEVKIND_MDEV) {
		sim_set_error(sim, "device kind %u: unknown", p->kind);
		return -EINVAL;
	}
	if (p->flags & ~known) {
		sim_set_error(sim, "device flags 0x%x: unknown bits", p->flags);
		return -EINVAL;
	}
	if (!p->bar0_size)
		p->bar0_size = SIM_BAR0_DEFAULT;
	if (p->bar0_size < 4096 || p->bar0_size > SIM_BAR0_MAX ||
	    (p->bar0_size & (p->bar0_size - 1))) {
		sim_set_error(sim, "bar0 size 0x%llx: not a power of two in [4 KiB, 16 GiB]",
			      (unsigned long long)p->bar0_size);
		return -EINVAL;
	}
	if (p->mdev_type && (p->kind != VFIOMIG_DEVKIND_MDEV || !p->mdev_type[0] ||
			     strlen(p->mdev_type) >= SIM_NAME_MAX)) {
		sim_set_error(sim, "mdev_type: only for mdevs, 1..%d characters", SIM_NAME_MAX - 1);
		return -EINVAL;
	}
	return sim_mig_check_opts(sim, opts);
}

/* Step 2: the group of same_group_as (*g), or NULL for a new group of its own. */
static int sim_add_peer_group(struct vfiomig_sim *sim, const struct sim_add_params *p,
			      struct sim_group **g)
{
	bool found = false;

	*g = NULL;
	if (!p->peer)
		return 0;
	for (size_t i = 0; i < sim->ndevs; i++)
		found |= sim->devs[i] == p->peer;
	/* An mdev's emulated IOMMU group holds that one device only. */
	if (!found || p->kind != VFIOMIG_DEVKIND_PCI || p->peer->kind != VFIOMIG_DEVKIND_PCI) {
		sim_set_error(sim, "same_group_as: not a PCI device of this simulator");
		return -EINVAL;
	}
	*g = p->peer->group;
	return 0;
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

/*
 * Step 3: the device's name: the caller's, checked and free, or the next
 * free generated one (0000:00:NN.0, or a UUID), written to buf.
 */
static int sim_add_name(struct vfiomig_sim *sim, const struct sim_add_params *p, char *buf,
			size_t len)
{
	bool pci = p->kind == VFIOMIG_DEVKIND_PCI;

	if (p->name) {
		if (pci ? !sim_valid_pci_name(p->name) : !sim_valid_uuid(p->name)) {
			sim_set_error(sim, "device name \"%.64s\": not a %s", p->name,
				      pci ? "PCI address (0000:03:00.0)" : "lower-case UUID");
			return -EINVAL;
		}
		if (sim_device_find(sim, p->name)) {
			sim_set_error(sim, "device name %s: taken", p->name);
			return -EEXIST;
		}
		snprintf(buf, len, "%s", p->name);
		return 0;
	}
	do {
		if (pci) {
			unsigned int slot = ++sim->next_pci_slot;

			snprintf(buf, len, "0000:%02x:%02x.0", (slot / 32) & 0xff, slot % 32);
		} else {
			snprintf(buf, len, "5ee0c0de-0000-4000-8000-%012x", ++sim->next_mdev_serial);
		}
	} while (sim_device_find(sim, buf));
	return 0;
}

/* Step 4: a new device with its identity (names, driver, IDs); not yet in the simulator. */
static struct vfiomig_sim_device *sim_add_new(struct vfiomig_sim *sim,
					      const struct sim_add_params *p,
					      const struct vfiomig_sim_device_opts *opts,
					      const char *name)
{
	bool pci = p->kind == VFIOMIG_DEVKIND_PCI;
	struct vfiomig_sim_device *dev = calloc(1, sizeof(*dev));

	if (!dev)
		return NULL;
	if (pthread_mutex_init(&dev->lock, NULL)) {
		free(dev);
		return NULL;
	}
	dev->sim = sim;
	dev->kind = p->kind;
	dev->flags = p->flags;
	snprintf(dev->name, sizeof(dev->name), "%s", name);
	snprintf(dev->sysfs_path, sizeof(dev->sysfs_path), "/sys/bus/%s/devices/%s",
		 pci ? "pci" : "mdev", name);
	snprintf(dev->driver, sizeof(dev->driver), "%s", pci ? "vfio-pci" : "vfio_mdev");
	snprintf(dev->mdev_type, sizeof(dev->mdev_type), "%s",
		 pci ? "" : (p->mdev_type ? p->mdev_type : "vfiomig-sim-1"));
	dev->vendor_id = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, vendor_id, 0);
	dev->device_id = VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, device_id, 0);
	if (!dev->vendor_id)
		dev->vendor_id = pci ? 0x1af4 : 0x4348;
	if (!dev->device_id)
		dev->device_id = pci ? 0x10f0 : 0x3253;
	dev->subsystem_vendor_id =
		VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, subsystem_vendor_id, 0);
	dev->subsystem_device_id =
		VM_OPTS_GET(opts, struct vfiomig_sim_device_opts, subsystem_device_id, 0);
	dev->bar0_size = p->bar0_size;
	dev->num_irqs = VU_PCI_NUM_IRQS;
	dev->cfg_command_init = 0;
	return dev;
}

/* Step 5: the device's regions, then its migration engine, then DMA logging. */
static int sim_add_setup(struct vfiomig_sim_device *dev,
			 const struct vfiomig_sim_device_opts *opts)
{
	int err = sim_device_init_regions(dev);

	if (err) {
		sim_set_error(dev->sim, "device %s: region memory: %s", dev->name, strerror(-err));
		return err;
	}
	err = sim_mig_setup(dev, opts);
	if (err) {
		sim_set_error(dev->sim, "device %s: migration state: %s", dev->name,
			      strerror(-err));
		return err;
	}
	/* After migration: DMA logging chains in front of its feature hook. */
	return sim_dmalog_setup(dev);
}

/*
 * Step 7: the device joins group g and the simulator (room for it in
 * sim->devs is made): its cdev number, its config space (whose fake bus
 * addresses follow its index).
 */
static void sim_add_register(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev,
			     struct sim_group *g)
{
	dev->group = g;
	dev->cdev_index = sim->next_cdev++;
	snprintf(dev->cdev_path, sizeof(dev->cdev_path), "/dev/vfio/devices/vfio%d",
		 dev->cdev_index);
	sim_config_init(dev, sim->ndevs);
	sim->devs[sim->ndevs++] = dev;
	sim_event_add(sim, "ADD %s group %d", dev->name, g->num);
}

int vfiomig_sim_device_add(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts,
			   struct vfiomig_sim_device **out)
{
	int err;

	if (!sim || !out)
		return -EINVAL;
	sim_lock(sim);
	err = sim_device_add_locked(sim, opts, out);
	sim_unlock(sim);
	return err;
}

int sim_device_add_locked(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts,
			  struct vfiomig_sim_device **out)
{
	struct vfiomig_sim_device *dev, **devs;
	struct sim_add_params p = { 0 };
	char name[SIM_NAME_MAX];
	struct sim_group *g = NULL;
	int err;

	*out = NULL;
	sim->last_error[0] = '\0';
	err = sim_add_read_opts(sim, opts, &p);
	if (!err)
		err = sim_add_peer_group(sim, &p, &g);
	if (!err)
		err = sim_add_name(sim, &p, name, sizeof(name));
	if (err)
		return err;

	devs = sim_grow(sim->devs, &sim->devs_cap, sim->ndevs + 1, sizeof(*devs));
	if (!devs)
		return -ENOMEM;
	sim->devs = devs;
	dev = sim_add_new(sim, &p, opts, name);
	if (!dev)
		return -ENOMEM;
	err = sim_add_setup(dev, opts);
	/* Step 6: the group: the peer's, or a new one of its own (emulated for an mdev). */
	if (!err && !g && !(g = sim_group_new(sim, p.kind == VFIOMIG_DEVKIND_MDEV)))
		err = -ENOMEM;
	if (err) {
		sim_device_free(dev);
		return err;
	}
	sim_add_register(sim, dev, g);
	*out = dev;
	return 0;
}

/* ----------------------------------------------------- device accessors */

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

static int sim_set_driver_locked(struct vfiomig_sim_device *dev, const char *driver)
{
	struct sim_group *g;
	char old[SIM_NAME_MAX];

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

int vfiomig_sim_device_set_driver(struct vfiomig_sim_device *dev, const char *driver)
{
	int err;

	if (!dev)
		return -EINVAL;
	if (!driver)
		driver = "";
	if (strlen(driver) >= SIM_NAME_MAX || strchr(driver, '/'))
		return -EINVAL;
	sim_lock(dev->sim);
	err = sim_set_driver_locked(dev, driver);
	sim_unlock(dev->sim);
	return err;
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
