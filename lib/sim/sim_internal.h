/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig-sim internals: the simulator's state (devices with their
 * region tables, IOMMU groups, the fd table of typed kernel objects:
 * containers, group files, device files, iommufds) and the private hooks
 * later features plug into (device-specific regions, VFIO_DEVICE_FEATURE
 * handlers, reset hooks, new fd object types, the event logs) and the
 * migration engine's entry points (sim_mig.c).
 *
 * The simulator is a library of its own: it uses only the public API of
 * libvfiomig and the uAPI layouts of lib/uapi.h, never the library's
 * internals, so it exercises the library exactly as the kernel would.
 *
 * Its files: sim.c (simulator lifetime, event logs, adding devices),
 * sim_fd.c (fd table, objects, fd ops, the kernel ops table), sim_paths.c
 * (sysfs and /dev: open, readlink, readdir), sim_group.c (IOMMU groups,
 * group files), sim_iommu.c (type1 containers, iommufds), sim_device.c
 * (regions, config space, device ioctls), sim_devfile.c (device files,
 * cdev binding), sim_caps.c (info capability chains), sim_mig.c
 * (migration), sim_dirty.c (DMA mappings, dirty tracking), sim_spec.c
 * (device spec strings), fault.c (fault injection).
 *
 * Locks (include/vfiomig/sim.h "Threads" says what callers get), taken in
 * this order, never the other way:
 *
 *  1. sim->lock, the simulator lock: the fd table, every object's state
 *     (groups, containers, iommufds, device files and their bookkeeping
 *     on the device: nfiles, open_count, driver, ...), the device list,
 *     mappings, DMA mappings and dirty tracking (device DMA logs too),
 *     last_error. Every kernel op holds it while it runs, except the data
 *     ops (read, write, pread, pwrite), which hold it only to find their
 *     object and take a reference on it, and again to drop that reference.
 *  2. dev->lock, one per device: its regions' contents (config space,
 *     BARs through pread/pwrite, a reset), its migration engine and fault
 *     knobs, and whether a device file grants access (df->granted, only
 *     ever set under both locks). Device ioctls take it under the
 *     simulator lock; the data ops take it alone, so two devices' data
 *     move in parallel. Nothing under it alone may need the simulator
 *     lock: a data_fd that loses its session there drops its reference
 *     (refs are atomic) and is freed with nothing else to undo.
 *  3. sim->ev_lock, the event logs: a leaf, taken under either or none.
 *
 * Object references are atomic; an object's release runs under the
 * simulator lock, but for a data_fd's, which only frees it.
 */
#ifndef VFIOMIG_SIM_INTERNAL_H
#define VFIOMIG_SIM_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include <vfiomig/sim.h>

#include "../sized.h"
#include "../uapi.h"

/* ------------------------------------------------------------ helpers */

/*
 * sim.c: grow an array to hold `need` elements (new ones zeroed);
 * returns the (maybe moved) array, or NULL with the old one intact.
 */
void *sim_grow(void *arr, size_t *cap, size_t need, size_t elem);

static inline size_t sim_min(size_t a, size_t b)
{
	return a < b ? a : b;
}

/* ------------------------------------------------ fd objects (sim_fd.c) */

/* sim_obj.type */
#define SIM_OBJ_CONTAINER 1 /* /dev/vfio/vfio */
#define SIM_OBJ_GROUP     2 /* /dev/vfio/<group> */
#define SIM_OBJ_DEVICE    3 /* from GET_DEVICE_FD or /dev/vfio/devices/vfioN */
#define SIM_OBJ_IOMMUFD   4 /* /dev/iommu */
#define SIM_OBJ_DATAFD    5 /* a v2 migration data_fd */

struct sim_obj;

/*
 * What an fd can do. A NULL op answers as the kernel does for a file
 * without that operation (ioctl -ENOTTY, read/write -EINVAL, mmap -ENODEV).
 * read, write, pread and pwrite run without the simulator lock (with a
 * reference on obj); the others under it.
 */
struct sim_obj_ops {
	const char *name; /* for the event log: "container", "group", ... */
	int (*ioctl)(struct sim_obj *obj, unsigned long request, void *arg);
	ssize_t (*read)(struct sim_obj *obj, void *buf, size_t len);
	ssize_t (*write)(struct sim_obj *obj, const void *buf, size_t len);
	ssize_t (*pread)(struct sim_obj *obj, void *buf, size_t len, uint64_t off);
	ssize_t (*pwrite)(struct sim_obj *obj, const void *buf, size_t len, uint64_t off);
	int (*mmap)(struct sim_obj *obj, uint64_t off, size_t len, int prot, void **addr);
	/* One fd on the object is being closed (for the event log); may be NULL. */
	void (*fd_closed)(struct sim_obj *obj);
	/* The last reference is gone: undo the kernel side effects and free. */
	void (*release)(struct sim_obj *obj);
};

/*
 * A kernel object behind one or more fds. Every fd holds a reference;
 * objects hold references on each other where the kernel does (a device
 * file holds its group file, an attached group holds its container, a
 * bound device holds its iommufd), so fds may be closed in any order. A
 * data op in progress holds one too.
 */
struct sim_obj {
	const struct sim_obj_ops *ops;
	struct vfiomig_sim *sim;
	uint32_t type; /* SIM_OBJ_* */
	unsigned int refs; /* atomic */
};

void sim_obj_init(struct sim_obj *obj, struct vfiomig_sim *sim, uint32_t type,
		  const struct sim_obj_ops *ops);
void sim_obj_get(struct sim_obj *obj);
void sim_obj_put(struct sim_obj *obj);

/*
 * A new fd (a real, unique fd number) referring to obj; takes a reference
 * on success. Returns the fd or -errno.
 */
int sim_fd_install(struct vfiomig_sim *sim, struct sim_obj *obj);
/* The object behind a simulated fd, or NULL. */
struct sim_obj *sim_fd_lookup(const struct vfiomig_sim *sim, int fd);
/* sim_fd_install for a freshly created object (refs 0): on failure it is released. */
int sim_fd_install_new(struct vfiomig_sim *sim, struct sim_obj *obj);
/* Is fd a real open fd of this process (for -EBADFD vs -EBADF)? */
bool sim_fd_is_real(int fd);
/* Close every simulated fd and unmap every live mapping (simulator teardown). */
void sim_fd_close_all(struct vfiomig_sim *sim);

/*
 * sim_paths.c: the path ops of the kernel ops table (sim_fd.c holds the
 * table): open a /dev node, read a sysfs link, list a directory.
 */
int sim_op_open(void *user, const char *path, int flags);
ssize_t sim_op_readlink(void *user, const char *path, char *buf, size_t len);
int sim_op_readdir(void *user, const char *path, vfiomig_dirent_fn fn, void *cb_user);

/* ----------------------------------------------- regions (sim_device.c) */

struct sim_region;
struct vfiomig_sim_device;

/*
 * Region access handler: off is relative to the region start, within the
 * region; returns the bytes moved or -errno (the handler applies the
 * kernel's rules for a transfer crossing the region end).
 */
typedef ssize_t (*sim_region_rw_fn)(struct vfiomig_sim_device *dev, struct sim_region *r,
				    void *buf, size_t len, uint64_t off, bool write);

#define SIM_MAX_SPARSE_AREAS 8
#define SIM_BAR0_MAX (16ull << 30) /* largest region: regions are 64 GiB apart in the file */

struct sim_region {
	uint32_t index;
	uint32_t flags;     /* VU_REGION_INFO_FLAG_READ | WRITE | MMAP (CAPS is computed) */
	uint64_t size;
	uint64_t offset;    /* file offset on the device fd (never index << 40) */
	bool refuse_info;   /* GET_REGION_INFO answers -EINVAL (VGA of a non-VGA function) */
	bool sparse;        /* has a SPARSE_MMAP capability (nr_areas may be 0) */
	uint32_t nr_areas;
	struct vu_region_sparse_mmap_area areas[SIM_MAX_SPARSE_AREAS];
	bool has_type;      /* has a TYPE capability */
	uint32_t type, subtype;
	bool msix_mappable; /* has an MSIX_MAPPABLE capability */
	/* Backing memory: a memfd mapping for MMAP regions (so user mmaps share it), else heap. */
	int memfd;
	void *mem;
	size_t mem_len;
	bool mem_is_map;
	sim_region_rw_fn rw; /* NULL: plain memory, transfers truncated at the end (as BARs) */
	void *priv;
};

/*
 * Append a region to a device (index = the current region count). tmpl
 * gives flags, size, caps, rw and priv; offset and memory are assigned
 * here (memory of `size` bytes, zeroed; a memfd when MMAP). Returns the
 * index or -errno.
 */
int sim_device_add_region(struct vfiomig_sim_device *dev, const struct sim_region *tmpl);

/* The region holding device-file offset off, or NULL. */
struct sim_region *sim_region_at(struct vfiomig_sim_device *dev, uint64_t off);

/*
 * pread (write false) / pwrite at device-file offset off, under the
 * region's rules: it must allow the direction; its rw handler, or plain
 * memory. Returns the bytes moved or -errno. Call with dev->lock held.
 */
ssize_t sim_device_rw(struct vfiomig_sim_device *dev, void *buf, size_t len, uint64_t off,
		      bool write);

/* ------------------------------------------------------------ devices */

/*
 * VFIO_DEVICE_FEATURE handler for features the core does not answer
 * (data points after the 8-byte header; argsz is the data's size). The
 * generic checks (argsz, flags) are done. Return >= 0 or -errno.
 */
typedef int (*sim_feature_fn)(struct vfiomig_sim_device *dev, uint32_t flags, void *data,
			      size_t argsz);

/*
 * The kernel's vfio_check_feature(): 1 to go on with the GET/SET, 0 for
 * a successful PROBE, or -EINVAL.
 */
int sim_feature_check(uint32_t flags, size_t argsz, uint32_t supported, size_t minsz);

#define SIM_NAME_MAX 64

struct sim_group;
struct sim_mig;
struct sim_dmalog;
struct sim_devfile;

struct vfiomig_sim_device {
	struct vfiomig_sim *sim;
	pthread_mutex_t lock;      /* the device lock (see the top of the file) */
	uint32_t kind;  /* VFIOMIG_DEVKIND_PCI / MDEV */
	uint32_t flags; /* VFIOMIG_SIM_DEV_* */
	char name[SIM_NAME_MAX];
	char sysfs_path[128];
	char cdev_path[48];
	char driver[SIM_NAME_MAX]; /* "" when unbound */
	char mdev_type[SIM_NAME_MAX];
	int cdev_index;            /* N of vfioN */
	struct sim_group *group;
	uint16_t vendor_id, device_id, subsystem_vendor_id, subsystem_device_id;
	uint64_t bar0_size;
	struct sim_region *regions;
	uint32_t num_regions;
	uint32_t num_irqs;
	uint8_t cfg_wmask[256];    /* writable bits of config space, per byte */
	uint16_t cfg_command_init;
	unsigned int nfiles;       /* device files open (granted or not) */
	unsigned int open_count;   /* device files with access granted */
	bool cdev_opened;
	/* Hooks for behaviours added by later features; NULL: none. */
	sim_feature_fn feature;    /* VFIO_DEVICE_FEATURE; NULL: -ENOTTY */
	void (*reset_hook)(struct vfiomig_sim_device *dev); /* after VFIO_DEVICE_RESET */
	void *priv;
	void (*priv_free)(struct vfiomig_sim_device *dev);
	struct sim_mig *mig;       /* migration engine (sim_mig.c); NULL: cannot migrate */
	struct sim_dmalog *dmalog; /* device DMA logging (sim_dirty.c); NULL: none */
	struct sim_devfile *cdev_file; /* the cdev file bound to an iommufd, or NULL */
};

/* Is the device bound to the VFIO driver of its kind? (sim_group.c) */
bool sim_device_vfio_bound(const struct vfiomig_sim_device *dev);

/*
 * sim_device.c: a new device's standard vfio-pci regions (BARs, ROM,
 * config space, VGA: from dev->flags and bar0_size), its config space
 * once its IDs are set (devindex picks its fake bus addresses), the
 * VFIO_DEVICE_* ioctls, and freeing a device with all it owns.
 */
int sim_device_init_regions(struct vfiomig_sim_device *dev);
void sim_config_init(struct vfiomig_sim_device *dev, size_t devindex);
/* Called with the simulator lock; takes the device lock. */
int sim_device_ioctl(struct vfiomig_sim_device *dev, unsigned long req, void *arg);
void sim_device_free(struct vfiomig_sim_device *dev);

/*
 * sim_devfile.c: a new device file on dev (refs 0, access not granted
 * yet), and opening the device's cdev (/dev/vfio/devices/vfioN).
 */
struct sim_devfile *sim_devfile_new(struct vfiomig_sim_device *dev);
int sim_cdev_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *dev);

/* ------------------------------------------------- groups, containers */

struct sim_container;
struct sim_iommufd;

struct sim_group {
	int num;
	bool emulated;                   /* an mdev's group: no IOMMU behind it */
	struct sim_obj *file;            /* the open /dev/vfio/<num>, NULL when closed */
	struct sim_container *container; /* VFIO_GROUP_SET_CONTAINER done */
	struct sim_iommufd *iommufd;     /* SET_CONTAINER with an iommufd (compat) */
	unsigned int container_users;    /* devices opened through the group */
	unsigned int cdev_open_cnt;      /* devices bound through their cdev */
};

struct sim_type1;

struct sim_container {
	struct sim_obj obj;
	uint32_t iommu_type;             /* 0 until VFIO_SET_IOMMU */
	struct sim_group **groups;       /* attached groups (each holds a reference) */
	size_t ngroups, groups_cap;
	struct sim_type1 *t1;            /* DMA mappings, dirty tracking (sim_dirty.c) */
};

/* iommufd object ids (one id space per iommufd, from 1, as the kernel) */
#define SIM_IOMMUFD_IOAS   1
#define SIM_IOMMUFD_DEVICE 2 /* a physical (PCI) device bound to the iommufd */
#define SIM_IOMMUFD_HWPT   3 /* a paging HWPT (an IOMMU domain) on an IOAS */
#define SIM_IOMMUFD_ACCESS 4 /* an emulated (mdev) device's binding: an iommufd access */

struct sim_ioas;
struct sim_hwpt;

struct sim_iommufd_id {
	uint32_t id;
	uint32_t kind;      /* SIM_IOMMUFD_* */
	/*
	 * Who holds the object: IOAS: its HWPTs and attached accesses;
	 * HWPT: attached devices. In use, IOMMU_DESTROY says -EBUSY.
	 */
	unsigned int users;
	struct vfiomig_sim_device *dev; /* DEVICE / ACCESS */
	struct sim_ioas *ioas;          /* IOAS: its mappings (sim_dirty.c) */
	struct sim_hwpt *hwpt;          /* HWPT: its state (sim_dirty.c) */
};

struct sim_iommufd {
	struct sim_obj obj;
	struct sim_iommufd_id *ids;
	size_t nids, ids_cap;
};

struct sim_devfile {
	struct sim_obj obj;
	struct vfiomig_sim_device *dev;
	struct sim_obj *group_file; /* opened through a group (holds it); NULL for a cdev */
	bool granted;               /* opened (group) or bound (cdev): access allowed */
	struct sim_iommufd *ictx;   /* cdev: the bound iommufd (held) */
	uint32_t devid;
	uint32_t pt_id;             /* attached IOAS, 0: none */
};

/*
 * sim_group.c: a group by number, or NULL; a new group (numbered from
 * sim->next_group; NULL when out of memory); whether a device's driver
 * takes the DMA ownership a VFIO user needs; whether a group is viable
 * (no such driver on any of its devices); whether /dev/vfio/<num> exists
 * (some device bound to VFIO); opening it.
 */
struct sim_group *sim_group_find(const struct vfiomig_sim *sim, int num);
struct sim_group *sim_group_new(struct vfiomig_sim *sim, bool emulated);
bool sim_driver_claims_dma(const struct vfiomig_sim_device *dev);
bool sim_group_viable(const struct vfiomig_sim *sim, const struct sim_group *g);
bool sim_group_has_vfio(const struct vfiomig_sim *sim, const struct sim_group *g);
int sim_group_open(struct vfiomig_sim *sim, struct sim_group *g);

/*
 * sim_iommu.c: open /dev/vfio/vfio or /dev/iommu; a group leaves its
 * container (dropping its reference; the last group to leave takes the
 * IOMMU and its mappings with it).
 */
int sim_container_open(struct vfiomig_sim *sim);
int sim_iommufd_open(struct vfiomig_sim *sim);
void sim_group_detach(struct sim_group *g);

/* ---------------------------------------------------- simulator (sim.c) */

#define SIM_EVENT_LEN  160
#define SIM_EVENTS_MAX 4096

struct sim_event {
	char text[SIM_EVENT_LEN];
};

struct sim_map {
	void *addr;
	size_t len;
};

struct vfiomig_sim {
	pthread_mutex_t lock;    /* the simulator lock (see the top of the file) */
	pthread_mutex_t ev_lock; /* the event logs */
	uint32_t flags; /* VFIOMIG_SIM_* */
	size_t page_size;
	struct vfiomig_sim_device **devs;
	size_t ndevs, devs_cap;
	struct sim_group **groups;
	size_t ngroups, groups_cap;
	int next_group;
	int next_cdev;
	unsigned int next_pci_slot, next_mdev_serial;
	struct sim_obj **fds; /* indexed by fd number */
	size_t fds_cap;
	int open_fds;
	struct sim_map *maps;
	size_t nmaps, maps_cap;
	struct sim_event *events;
	size_t nevents, events_cap;
	/* The public event log (vfiomig_sim_event): migration steps, resets, refusals. */
	struct sim_event *pub_events;
	size_t npub_events, pub_events_cap;
	char last_error[256];
};

/*
 * Event log (private for now): one short line per kernel-visible step,
 * e.g. "open /dev/vfio/12", "SET_IOMMU 3", "GET_DEVICE_FD 0000:03:00.0",
 * "RESET 0000:03:00.0". Oldest entries are dropped past SIM_EVENTS_MAX.
 */
__attribute__((format(printf, 2, 3)))
void sim_event_add(struct vfiomig_sim *sim, const char *fmt, ...);
size_t sim_event_count(const struct vfiomig_sim *sim);
const char *sim_event(const struct vfiomig_sim *sim, size_t i);
/* Index of the first event equal to text at or after `from`, or -1. */
long sim_event_find(const struct vfiomig_sim *sim, size_t from, const char *text);
void sim_event_clear(struct vfiomig_sim *sim);

/*
 * A line for the public event log (vfiomig_sim_event), also appended to
 * the private log so white-box tests see it in order with the rest.
 */
__attribute__((format(printf, 2, 3)))
void sim_pub_event(struct vfiomig_sim *sim, const char *fmt, ...);

/*
 * Why the last vfiomig_sim_device_add / _add_spec failed ("" when it did
 * not): the simulator cannot reach a ctx's log function through the
 * public API, so the reason is kept here.
 */
__attribute__((format(printf, 2, 3)))
void sim_set_error(struct vfiomig_sim *sim, const char *fmt, ...);
const char *sim_last_error(const struct vfiomig_sim *sim);

/* Find a device by name, or NULL. */
struct vfiomig_sim_device *sim_device_find(const struct vfiomig_sim *sim, const char *name);

/* vfiomig_sim_device_add with the simulator lock held (sim_spec.c). */
int sim_device_add_locked(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts,
			  struct vfiomig_sim_device **out);

/*
 * The locks. pthread_mutex_lock of a valid default mutex fails only on
 * misuse (a deadlock it detects, which default mutexes do not), so the
 * result is not checked.
 */
static inline void sim_lock(struct vfiomig_sim *sim)
{
	pthread_mutex_lock(&sim->lock);
}

static inline void sim_unlock(struct vfiomig_sim *sim)
{
	pthread_mutex_unlock(&sim->lock);
}

static inline void dev_lock(struct vfiomig_sim_device *dev)
{
	pthread_mutex_lock(&dev->lock);
}

static inline void dev_unlock(struct vfiomig_sim_device *dev)
{
	pthread_mutex_unlock(&dev->lock);
}

/* ------------------------------------------------------ migration engine */

/*
 * sim_mig.c. check_opts validates the migration fields of the options
 * (reason via sim_set_error) before anything is allocated; setup then
 * gives an added device its state, its v1 region (index 9) and its
 * feature / reset hooks. free undoes setup (NULL engine is fine).
 */
int sim_mig_check_opts(struct vfiomig_sim *sim, const struct vfiomig_sim_device_opts *opts);
int sim_mig_setup(struct vfiomig_sim_device *dev, const struct vfiomig_sim_device_opts *opts);
void sim_mig_free(struct vfiomig_sim_device *dev);

/* ------------------------------------------------ iommufd object table */

/*
 * sim_iommu.c: the id table of an iommufd. alloc takes the lowest free id;
 * remove frees the id's state (sim_iommufd_id_free). Entries move when
 * ids come and go: look them up again after an alloc or a remove.
 */
struct sim_iommufd_id *sim_iommufd_find(struct sim_iommufd *ictx, uint32_t id);
int sim_iommufd_alloc(struct sim_iommufd *ictx, uint32_t kind, uint32_t *out);
void sim_iommufd_remove(struct sim_iommufd *ictx, uint32_t id);
/* The bytes of a struct past what we know must be zero (copy_struct_from_user). */
bool sim_tail_zero(const void *arg, size_t known, size_t size);

/* ------------------------------------------ DMA and dirty pages (sim_dirty.c) */

#define SIM_DMA_ENTRY_LIMIT  65535u          /* type1's dma_entry_limit default (U16_MAX) */
#define SIM_DIRTY_BITMAP_MAX (256ull << 20)  /* type1's DIRTY_BITMAP_SIZE_MAX */

/*
 * type1: VFIO_IOMMU_MAP_DMA / UNMAP_DMA / DIRTY_PAGES on a container with
 * its IOMMU set (-ENOTTY for other requests); the DMA_AVAIL count; the
 * IOVA ranges an IOMMU-backed container allows; teardown when the IOMMU
 * goes (last group detached, container released); and the check that a
 * group attaching later does not conflict with existing mappings.
 */
int sim_type1_ioctl(struct sim_container *c, unsigned long req, void *arg);
uint32_t sim_type1_dma_avail(const struct sim_container *c);
bool sim_type1_iommu_backed(const struct sim_container *c);
extern const struct vu_iova_range sim_type1_iova_ranges[2];
void sim_type1_teardown(struct sim_container *c);
int sim_type1_group_check(struct sim_container *c, const struct sim_group *g);

/*
 * iommufd: a new IOAS (IOMMU_IOAS_ALLOC); IOAS_MAP / IOAS_UNMAP / GET_HW_INFO / HWPT_ALLOC /
 * HWPT_SET_DIRTY_TRACKING / HWPT_GET_DIRTY_BITMAP (-ENOTTY for others);
 * IOMMU_DESTROY of any id; a device file attaching to an IOAS or HWPT
 * (*pt_id in: the id asked for, out: what was attached, e.g. the
 * automatic HWPT made for an IOAS) and detaching; freeing an id's state.
 */
int sim_iommufd_ioas_alloc(struct sim_iommufd *ictx, uint32_t *out);
int sim_iommufd_dma_ioctl(struct sim_iommufd *ictx, unsigned long req, void *arg);
int sim_iommufd_destroy(struct sim_iommufd *ictx, uint32_t id);
int sim_iommufd_attach(struct sim_iommufd *ictx, struct vfiomig_sim_device *dev,
		       uint32_t *pt_id);
void sim_iommufd_detach(struct sim_iommufd *ictx, uint32_t pt_id);
void sim_iommufd_id_free(struct sim_iommufd_id *id);

/*
 * Device DMA logging: setup chains VFIO_DEVICE_FEATURE DMA_LOGGING_*
 * in front of the device's feature hook (call after sim_mig_setup);
 * closed stops logging when the device's last file goes, as drivers do
 * at close_device; free undoes setup.
 */
int sim_dmalog_setup(struct vfiomig_sim_device *dev);
void sim_dmalog_closed(struct vfiomig_sim_device *dev);
void sim_dmalog_free(struct vfiomig_sim_device *dev);

/* ------------------------------------- info capability chains (sim_caps.c) */

/* A capability chain being built (offsets relative to the chain start). */
struct sim_caps {
	uint8_t *buf;
	size_t len;
	size_t last; /* offset of the last header */
	int err;     /* first allocation failure, reported by sim_caps_apply */
};

/*
 * Append one capability: cap points to the whole capability struct
 * (cap_len >= 8 bytes, header included; the header is filled in here).
 * Padded to 8 bytes, as the kernel does since 6.6.
 */
void sim_caps_add(struct sim_caps *c, uint16_t id, uint16_t version, const void *cap,
		  size_t cap_len);

/*
 * The kernel's argsz rule for an info ioctl whose header (hdr_len bytes)
 * is followed by the chain: with caps, *flags gets caps_flag; if the
 * caller's argsz is too small for header + caps, *argsz is raised to the
 * size needed and *cap_offset is 0, else the caps are copied to
 * arg + hdr_len (their `next` offsets made relative to arg) and
 * *cap_offset = hdr_len. Frees the chain. Returns 0 or -ENOMEM.
 */
int sim_caps_apply(struct sim_caps *c, void *arg, size_t hdr_len, uint32_t *argsz,
		   uint32_t *flags, uint32_t caps_flag, uint32_t *cap_offset);

#endif
