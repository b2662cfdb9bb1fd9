/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig-sim: a simulated VFIO kernel, in process, in user space.
 *
 * It implements the kernel interface (kernel.h) with the documented
 * semantics of the VFIO uAPI: sysfs lookups (iommu_group links, vfio-dev
 * directories), /dev/vfio/vfio containers, /dev/vfio/<group> groups,
 * /dev/vfio/devices/vfioN cdevs with /dev/iommu, argsz rules, capability
 * chains built in the kernel's order, and the kernel's errno values. A
 * VMM links it to test its own integration without hardware; the tools
 * and examples use it for demonstrations.
 *
 * Simulated fds are real fds (so they are unique and visible to leak
 * checks) that the simulator recognises; ops on other fds fail -EBADF.
 * Regions are backed by memory (memfd) and can really be mmapped.
 *
 * Also here: a fault injector that wraps any kernel ops table (the
 * simulator's or the real one) to fail or shorten the n-th call.
 *
 * Threads. The kernel ops may be called from several threads at once on
 * one simulator, as the kernel may; ops on different devices (their
 * device fds, data_fds, regions and mappings) run in parallel: data_fd
 * reads and writes and region preads and pwrites copy their data under
 * a lock of their device alone, never the simulator's. Everything else
 * (opening, closing, ioctls, mmap, the fd table, groups, containers,
 * iommufds, DMA mappings and dirty tracking) is serialised by one
 * simulator lock held for the op; a device's ioctls wait for a data op
 * of the same device in progress. Ops on one device from several threads
 * are safe but serialised; their order is the order they take the lock.
 * The calls below may be made from any thread too, with these limits:
 *  - vfiomig_sim_new(), vfiomig_sim_free(): while no other thread uses
 *    the simulator;
 *  - pointers returned (names, paths, region memory, device state, event
 *    lines) are the simulator's: state and region memory change under
 *    the ops of other threads (read them once those are done), and an
 *    event line is valid until the next event is logged or the log is
 *    cleared;
 *  - per device: its migration state, its fault knobs (fail_transition,
 *    fail_data, corrupt_data count that device's own data and arcs only,
 *    whatever other threads do) and fail_dma_report; the event log is
 *    the simulator's, one line at a time: the lines of one device are in
 *    its order, interleaved with other devices' as they happened;
 *  - a fault injector may be shared by several threads: its counters and
 *    armed faults are updated atomically, and "the nth matching call" is
 *    the nth to reach it, in whatever order threads get there.
 */
#ifndef VFIOMIG_SIM_H
#define VFIOMIG_SIM_H

#include <vfiomig/common.h>
#include <vfiomig/ctx.h>
#include <vfiomig/kernel.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfiomig_sim;
struct vfiomig_sim_device;

/* vfiomig_sim_opts.flags */
#define VFIOMIG_SIM_F_NO_IOMMUFD (1u << 0) /* no /dev/iommu and no vfio cdevs */
#define VFIOMIG_SIM_F_NO_TYPE1   (1u << 1) /* containers refuse VFIO_TYPE1v2_IOMMU */
#define VFIOMIG_SIM_F_IOMMUFD_DIRTY (1u << 2) /* the IOMMU behind iommufd has dirty tracking */

struct vfiomig_sim_opts {
	size_t sz;
	uint32_t flags; /* VFIOMIG_SIM_F_* */
	uint32_t reserved;
};

/*
 * Create / free a simulator. Free it only after every ctx using it has
 * gone (a ctx lives until the last object made from it is released).
 */
VFIOMIG_API int vfiomig_sim_new(const struct vfiomig_sim_opts *opts, struct vfiomig_sim **out);
VFIOMIG_API void vfiomig_sim_free(struct vfiomig_sim *sim);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_sim, vfiomig_sim_free)

/* The simulator's kernel ops; pass the simulator as kernel_user. */
VFIOMIG_API const struct vfiomig_kernel_ops *vfiomig_sim_kernel_ops(void);

/*
 * Convenience: a ctx whose kernel is `sim`. opts may be NULL; its
 * kernel_ops / kernel_user must be unset. Free with vfiomig_ctx_unref().
 */
VFIOMIG_API int vfiomig_sim_ctx_new(struct vfiomig_sim *sim, const struct vfiomig_ctx_opts *opts,
				    struct vfiomig_ctx **out);

/* vfiomig_sim_device_opts.flags */
#define VFIOMIG_SIM_DEV_NO_SPARSE     (1u << 0) /* BAR0 mmappable whole, no sparse cap */
#define VFIOMIG_SIM_DEV_MSIX_MAPPABLE (1u << 1)
#define VFIOMIG_SIM_DEV_NO_RESET      (1u << 2)
#define VFIOMIG_SIM_DEV_DMA_LOGGING   (1u << 3) /* VFIO_DEVICE_FEATURE_DMA_LOGGING_* */

struct vfiomig_sim_device_opts {
	size_t sz;
	/*
	 * PCI address ("0000:03:00.0") or mdev UUID; NULL: generated
	 * (0000:00:NN.0, or a UUID).
	 */
	const char *name;
	/* Put the device in the IOMMU group of this one; NULL: a new group. */
	struct vfiomig_sim_device *same_group_as;
	const char *mdev_type; /* mdev only; default "vfiomig-sim-1" */
	uint64_t bar0_size;    /* default 64 KiB; power of two, >= 4 KiB */
	/* Bytes of device state, a multiple of 4 KiB. Default 64 KiB with migration. */
	uint64_t state_size;
	/* v1: bytes of the migration region's data section (default 64 KiB, multiple of 4 KiB). */
	uint64_t v1_data_size;
	/*
	 * VFIOMIG_DEVKIND_PCI (default: a vfio-pci function with config space,
	 * BAR0 and BAR2) or VFIOMIG_DEVKIND_MDEV (a mediated device in an
	 * emulated IOMMU group).
	 */
	uint32_t kind;
	uint32_t flags; /* VFIOMIG_SIM_DEV_* */
	/* Migration support: VFIOMIG_SIM_MIG_* (0: the device cannot migrate). */
	uint32_t migration;
	/*
	 * Pages (4 KiB) the device changes by itself each time the data_fd
	 * (v2) or pending_bytes (v1) is read while it runs (RUNNING,
	 * RUNNING_P2P, PRE_COPY, PRE_COPY_P2P): a device that keeps working
	 * during pre-copy. 0: it changes only through vfiomig_sim_device_run().
	 */
	uint32_t auto_dirty_pages;
	uint16_t vendor_id;    /* default 0x1af4 (PCI) / 0x4348 (mdev) */
	uint16_t device_id;    /* default 0x10f0 / 0x3253 */
	uint16_t subsystem_vendor_id;
	uint16_t subsystem_device_id;
};

/* vfiomig_sim_device_opts.migration */
#define VFIOMIG_SIM_MIG_V2         (1u << 0) /* VFIO_DEVICE_FEATURE_MIGRATION, STOP_COPY */
#define VFIOMIG_SIM_MIG_P2P        (1u << 1) /* + the P2P states (needs V2) */
#define VFIOMIG_SIM_MIG_PRE_COPY   (1u << 2) /* + PRE_COPY, PRECOPY_INFO (needs V2) */
#define VFIOMIG_SIM_MIG_V1         (1u << 3) /* the v1 migration region (type 3/1, index 9) */
#define VFIOMIG_SIM_MIG_V1_TRAPPED (1u << 4) /* v1 data section not mmappable */
#define VFIOMIG_SIM_MIG_ENOMSG     (1u << 5) /* PRE_COPY "no data now" is -ENOMSG, not 0 */
#define VFIOMIG_SIM_MIG_NO_DATA_SIZE (1u << 6) /* no MIG_DATA_SIZE (a pre-6.2 kernel) */
/*
 * The device's data path costs the copy and nothing more, so a benchmark
 * times the library and not the simulator: it computes no checksum when
 * it saves and checks none when it loads (the records are the same, and
 * still checked for structure: a record cut short, a bad index, a page
 * count that differs). Its saves end "unchecked", which a device of the
 * default kind refuses; it takes any image. Check the destination's state
 * afterwards with vfiomig_sim_device_state_hash() (or the bytes of
 * vfiomig_sim_device_state()). Its state is resident from the start (the
 * device takes state_size bytes of memory when added), so the data path
 * takes no page faults either. With V1 or V2.
 */
#define VFIOMIG_SIM_MIG_COST_COPY    (1u << 7)

/*
 * Add a device. Returns 0 and *out (owned by the simulator), or -EINVAL /
 * -EEXIST (name taken) / -ENOMEM.
 */
VFIOMIG_API int vfiomig_sim_device_add(struct vfiomig_sim *sim,
				       const struct vfiomig_sim_device_opts *opts,
				       struct vfiomig_sim_device **out);

/*
 * Add a device described by a spec string, the syntax tools accept:
 *   sim:pci[,key=value...]   or   sim:mdev[,key=value...]
 * keys: name=ADDR|UUID, vendor=0xVVVV, device=0xDDDD, subvendor=, subdevice=,
 * bar0=SIZE (suffix K, M or G), sparse=0|1, msix_mappable=0|1,
 * mig=none|v1|v1-trapped|v2|v2-p2p|v2-precopy|v2-p2p-precopy (default none),
 * state=SIZE (default 64K), dirty=PAGES (auto_dirty_pages), v1data=SIZE,
 * dmalog=0|1 (VFIOMIG_SIM_DEV_DMA_LOGGING), cost=check|copy (default check;
 * copy: VFIOMIG_SIM_MIG_COST_COPY, needs mig=).
 * Returns 0 and *out, or -EINVAL; the reason is logged through ctx
 * (which may be NULL for silence).
 */
VFIOMIG_API int vfiomig_sim_device_add_spec(struct vfiomig_sim *sim, struct vfiomig_ctx *ctx,
					    const char *spec, struct vfiomig_sim_device **out);

/* The name to pass to vfiomig_device_open() (PCI address or UUID). */
VFIOMIG_API const char *vfiomig_sim_device_name(const struct vfiomig_sim_device *dev);
/* Its sysfs path ("/sys/bus/pci/devices/..." or "/sys/bus/mdev/devices/..."). */
VFIOMIG_API const char *vfiomig_sim_device_sysfs_path(const struct vfiomig_sim_device *dev);
/* Its IOMMU group number. */
VFIOMIG_API int vfiomig_sim_device_group(const struct vfiomig_sim_device *dev);
/* Its cdev path ("/dev/vfio/devices/vfioN"), or NULL with VFIOMIG_SIM_F_NO_IOMMUFD. */
VFIOMIG_API const char *vfiomig_sim_device_cdev_path(const struct vfiomig_sim_device *dev);

/*
 * Bind the device to a driver by name. Any driver other than "vfio-pci"
 * (or "vfio_mdev" for mdevs) makes its group not viable, as in the kernel.
 */
VFIOMIG_API int vfiomig_sim_device_set_driver(struct vfiomig_sim_device *dev, const char *driver);

/*
 * Backing memory of a region (for test assertions and for simulating the
 * device's own writes). Returns the address and stores the size in *len;
 * NULL for an index without memory.
 */
VFIOMIG_API void *vfiomig_sim_device_region_mem(struct vfiomig_sim_device *dev, uint32_t index,
						size_t *len);

/* ------------------------------------------------------- migration */

/*
 * Let the device run: it changes `pages` pages of its state (chosen by a
 * per-device deterministic generator). -EBUSY unless the device is in a
 * running state (RUNNING, RUNNING_P2P, PRE_COPY, PRE_COPY_P2P).
 */
VFIOMIG_API int vfiomig_sim_device_run(struct vfiomig_sim_device *dev, uint64_t pages);

/* The device's state bytes (owned by the simulator; valid until the device's sim is freed). */
VFIOMIG_API const void *vfiomig_sim_device_state(const struct vfiomig_sim_device *dev,
						 size_t *len);

/*
 * A 64-bit checksum of the device's state: the page sum its end records
 * carry (lib/sim/sim_mig.c says how it is made and what it catches). Two
 * devices with the same state_size have the same hash when their states
 * are equal, and a different one (but for a chance of about 2^-64) when
 * they are not; one differing bit always shows. It costs a hash of the
 * pages changed since it last knew them: a device of the default kind
 * knows every page it sent or received, a VFIOMIG_SIM_MIG_COST_COPY
 * device learns the pages it moved here (outside a benchmark's timing).
 * Returns 0 and *hash, -EINVAL, or -EOPNOTSUPP (no migration).
 */
VFIOMIG_API int vfiomig_sim_device_state_hash(struct vfiomig_sim_device *dev, uint64_t *hash);

/* The device's migration state as a v2 state number (v1 devices: the equivalent state). */
VFIOMIG_API int vfiomig_sim_device_mig_state(const struct vfiomig_sim_device *dev);

/*
 * Fault knobs, each armed once (fires on the first match, then disarms):
 *  - fail_transition: the next arc *into* state `to` (a v2 state number;
 *    for v1 devices the equivalent) fails with `err`; with `to_error` the
 *    device is left in ERROR (only a reset leaves it), else it stays put;
 *  - fail_data: after `after_bytes` more bytes of data_fd reads (v2) or
 *    staged chunks (v1), reads fail with `err` (0: report a short 0-byte
 *    end instead, i.e. truncate the device's data);
 *  - corrupt_data: flip one bit in the device data produced after
 *    `after_bytes` more bytes, so the destination device refuses it.
 */
VFIOMIG_API int vfiomig_sim_device_fail_transition(struct vfiomig_sim_device *dev, uint32_t to,
						   int err, bool to_error);
VFIOMIG_API int vfiomig_sim_device_fail_data(struct vfiomig_sim_device *dev, uint64_t after_bytes,
					     int err);
VFIOMIG_API int vfiomig_sim_device_corrupt_data(struct vfiomig_sim_device *dev,
						uint64_t after_bytes);

/*
 * The simulator's event log: one line per migration-state step the
 * kernel takes (the v2 arc walk, each arc), per reset, and per refused
 * request, e.g. "0000:03:00.0: PRE_COPY -> PRE_COPY_P2P",
 * "0000:03:00.0: RESET". Lines are owned by the simulator.
 */
VFIOMIG_API size_t vfiomig_sim_event_count(const struct vfiomig_sim *sim);
VFIOMIG_API const char *vfiomig_sim_event(const struct vfiomig_sim *sim, size_t i);
VFIOMIG_API void vfiomig_sim_events_clear(struct vfiomig_sim *sim);

/* ---------------------------------------------------- DMA and dirty pages */

/*
 * The device writes guest memory by DMA at [iova, iova + len): the pages
 * become dirty for every tracking mechanism that is on (the type1
 * container's tracking, the device's DMA log, the iommufd HWPT's dirty
 * bits). -EFAULT if the range is not entirely DMA-mapped for writing
 * (type1 container or IOAS), -ENODEV if the device is attached to
 * nothing, -EINVAL for a NULL device, zero length or a wrapping range.
 */
VFIOMIG_API int vfiomig_sim_device_dma_write(struct vfiomig_sim_device *dev, uint64_t iova,
					     uint64_t len);

/*
 * Pin [iova, iova + len) as an mdev vendor driver does (vfio_pin_pages):
 * an emulated (mdev) group's type1 dirty reports then include these pages
 * at every query while they stay pinned. -EINVAL for a non-mdev device or
 * zero length, -EFAULT when the range is not mapped, -ENODEV when the
 * device is attached to nothing.
 */
VFIOMIG_API int vfiomig_sim_device_pin(struct vfiomig_sim_device *dev, uint64_t iova, uint64_t len);

/* The next DMA_LOGGING_REPORT fails with err (armed once): the log is lost. */
VFIOMIG_API int vfiomig_sim_device_fail_dma_report(struct vfiomig_sim_device *dev, int err);

/* How many simulated fds are open right now (leak checks). */
VFIOMIG_API int vfiomig_sim_open_fds(const struct vfiomig_sim *sim);
/* How many simulated mappings are live right now. */
VFIOMIG_API int vfiomig_sim_live_maps(const struct vfiomig_sim *sim);

/* ---------------------------- fault injection ---------------------------- */

struct vfiomig_fault;

/* Op numbers for fault specs and call counts. */
#define VFIOMIG_KOP_OPEN     0
#define VFIOMIG_KOP_CLOSE    1
#define VFIOMIG_KOP_DUP      2
#define VFIOMIG_KOP_IOCTL    3
#define VFIOMIG_KOP_READ     4
#define VFIOMIG_KOP_WRITE    5
#define VFIOMIG_KOP_PREAD    6
#define VFIOMIG_KOP_PWRITE   7
#define VFIOMIG_KOP_MMAP     8
#define VFIOMIG_KOP_MUNMAP   9
#define VFIOMIG_KOP_READLINK 10
#define VFIOMIG_KOP_READDIR  11
#define VFIOMIG_KOP_COUNT    12

struct vfiomig_fault_spec {
	size_t sz;
	uint64_t nth;      /* hit from the nth matching call on (1 = the next one); 0 means 1 */
	uint64_t short_len;
	/* With VFIOMIG_KOP_IOCTL: only calls with this request match (0: any). */
	uint64_t ioctl_request;
	uint32_t op;       /* VFIOMIG_KOP_* */
	uint32_t times;    /* how many matching calls to hit; 0 means 1 */
	/*
	 * Negative errno to return without calling the inner op (close is
	 * the exception: the inner close runs and its fd is gone, as on Linux
	 * when close() reports an error); 0 to call
	 * it with the transfer shortened to short_len bytes (read, write,
	 * pread, pwrite only; short_len 0 makes the call return 0).
	 */
	int32_t error;
	uint32_t reserved;
};

/*
 * Wrap `inner` (called with inner_user). Returns 0 and *out. Calls pass
 * through unchanged until a spec matches. Free after every ctx using it.
 */
VFIOMIG_API int vfiomig_fault_new(const struct vfiomig_kernel_ops *inner, void *inner_user,
				  struct vfiomig_fault **out);
VFIOMIG_API void vfiomig_fault_free(struct vfiomig_fault *f);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_fault, vfiomig_fault_free)

/* The injector's kernel ops; pass the injector as kernel_user. */
VFIOMIG_API const struct vfiomig_kernel_ops *vfiomig_fault_kernel_ops(void);

/* Arm a fault (several may be armed; the first matching one applies). */
VFIOMIG_API int vfiomig_fault_add(struct vfiomig_fault *f, const struct vfiomig_fault_spec *spec);
/* Disarm all faults (counters keep running). */
VFIOMIG_API void vfiomig_fault_clear(struct vfiomig_fault *f);
/* Calls of op seen so far, and how many faults fired in total. */
VFIOMIG_API uint64_t vfiomig_fault_calls(const struct vfiomig_fault *f, uint32_t op);
VFIOMIG_API uint64_t vfiomig_fault_fired(const struct vfiomig_fault *f);

#ifdef __cplusplus
}
#endif
#endif
