/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: the save/load state machine a VMM embeds.
 *
 * One `struct vfiomig_mig` migrates one device, as the source (SAVE) or
 * the destination (LOAD), through a stream (stream.h) in the format of
 * docs/stream-format.md. The same calls drive both kernel protocols: v2
 * (VFIO_DEVICE_FEATURE_MIGRATION with a data_fd, Linux 5.18+) and, when
 * the VMM opts in, the experimental v1 region protocol (5.8-5.17).
 *
 * The flow between two VMMs (docs/migration-flow.md has the diagram).
 * The forward stream carries the device state source -> destination; the
 * return path, optional, carries a few messages back over any channel
 * the VMMs have (the same socket in the other direction will do).
 *
 *   source                                destination
 *   vfiomig_mig_save_setup()     ------>  vfiomig_mig_load_setup()
 *     header + setup phase;                 reads the header AND the whole
 *     RUNNING -> PRE_COPY                   setup phase: call it when the
 *                                           source's save_setup bytes are
 *                                           there; device -> RESUMING
 *   loop:                                 loop:
 *     vfiomig_mig_save_pending()            vfiomig_mig_load()  one phase
 *     vfiomig_mig_save_iterate() ------>    vfiomig_mig_return_send()
 *     vfiomig_mig_return_recv()  <------      (SWITCHOVER_ACK once the
 *   until vfiomig_mig_switchover_ready()      initial data is loaded)
 *     and the pending bytes fit the
 *     downtime the VMM allows
 *   vfiomig_mig_vm_state(STOPPED)
 *     device -> STOP_COPY
 *   vfiomig_mig_save_complete()  ------>  vfiomig_mig_load() == 0
 *     the rest of the device state,         trailer verified; only then
 *     the VMM's config, the trailer;        config_load() sees the config;
 *     device -> STOP                        device -> STOP
 *   vfiomig_mig_return_recv()    <------  vfiomig_mig_return_send()
 *     LOADED: event(COMPLETED), free        LOADED (or FAILED + reason)
 *     FAILED: vm_state(RUNNING): the      vfiomig_mig_vm_state(RUNNING)
 *     source VM and device resume           device -> RUNNING
 *
 * Either side may give up at any step: vfiomig_mig_cancel() (or an event
 * FAILED / CANCELLED). A source that gives up writes a CANCEL record into
 * the forward stream when the stream can still carry one, so the
 * destination's load fails with -ECANCELED and the source's reason,
 * instead of meeting a truncated stream; a destination that gives up
 * sends FAILED with its errno and reason on the return path.
 *
 * Failure rules. Every function returns 0 (or a documented positive
 * value) or a negative errno with one log line. When any step of a save
 * fails, or the VMM cancels or reports FAILED, the library puts the
 * source device back at once: RUNNING if the VM runs (STOP while it is
 * stopped, RUNNING when vfiomig_mig_vm_state(RUNNING) follows), with its
 * state intact; only if the kernel refuses that does it reset the device
 * (a warning says the device state is lost). vfiomig_mig_vm_state(RUNNING)
 * after a completed save resumes the source device with its state too
 * (the destination failed after switchover). A destination whose stream
 * fails any check (format, identity, size limits, integrity, a CANCEL)
 * is never moved to RUNNING: it is reset to a clean device, the migration
 * object is failed, and vfiomig_mig_vm_state(RUNNING) refuses it.
 *
 * One migration object per device (-EBUSY for a second one).
 *
 * Several devices of one VM: group them in a `struct vfiomig_mig_set`
 * and report VM state changes to the set, which quiesces every device to
 * a P2P state before any device is stopped (and back), as the kernel
 * requires for peer-to-peer DMA between devices. When one member fails,
 * the VM's migration has failed: every other member of the set fails
 * with it (saves are put back as above, loads are reset), and the set
 * refuses to run the VM on the destination.
 *
 * Threads: a migration object is used by one thread at a time; objects of
 * different devices may be driven from different threads only if their
 * contexts differ. To move the devices of one VM at the same time (one
 * context, possibly one container), let the library do it:
 * vfiomig_mig_set_save_complete() and vfiomig_mig_set_load() below run
 * the members of a set on worker threads of their own.
 */
#ifndef VFIOMIG_MIGRATION_H
#define VFIOMIG_MIGRATION_H

#include <vfiomig/common.h>
#include <vfiomig/device.h>
#include <vfiomig/stream.h>
#include <vfiomig/dirty.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfiomig_mig;
struct vfiomig_mig_set;

/* vfiomig_mig_new() roles */
#define VFIOMIG_ROLE_SAVE 1 /* source */
#define VFIOMIG_ROLE_LOAD 2 /* destination */

/* vfiomig_mig_opts.flags */
#define VFIOMIG_MIG_F_ALLOW_V1   (1u << 0) /* opt in to the experimental v1 region protocol */
#define VFIOMIG_MIG_F_NO_PRECOPY (1u << 1) /* never enter PRE_COPY: stop-and-copy only */
#define VFIOMIG_MIG_F_PREFER_V1  (1u << 2) /* use v1 when both are offered (needs ALLOW_V1) */
/*
 * The VM has DMA-capable devices whose writes to guest memory must be
 * tracked during pre-copy: block the migration unless something can track
 * this device's DMA (the type1 IOMMU's migration capability, or the
 * device's own DMA logging).
 */
#define VFIOMIG_MIG_F_NEED_DIRTY_TRACKING (1u << 3)
/*
 * Track the device's DMA writes for this save (dirty.h): tracking starts
 * in vfiomig_mig_save_setup(), before the device enters PRE_COPY, and
 * stops in vfiomig_mig_free() (after the VMM's last query, which follows
 * stop-and-copy). The VMM queries each round through vfiomig_mig_dirty().
 * Implies VFIOMIG_MIG_F_NEED_DIRTY_TRACKING.
 */
#define VFIOMIG_MIG_F_DIRTY_TRACKING (1u << 4)
/*
 * Save: the destination acknowledges switchover (QEMU's switchover-ack)
 * over the return path: vfiomig_mig_switchover_ready() is 1 only once its
 * SWITCHOVER_ACK has arrived through vfiomig_mig_return_recv(), so the VM
 * is stopped only when the destination has loaded the initial data.
 */
#define VFIOMIG_MIG_F_SWITCHOVER_ACK (1u << 5)

/*
 * The VMM's own device configuration (PCI config space, interrupt setup):
 * the vendor data never carries it, so the source puts it in the stream as
 * a DEV_CONFIG_STATE record at stop-and-copy and the destination hands it
 * back before the device leaves RESUMING.
 *
 * save: store a pointer to the bytes and their count; they must stay valid
 * until vfiomig_mig_save_complete() returns (the VMM owns them). Return 0
 * or -errno (fails the save). len 0 writes an empty record.
 * load: receives the bytes (valid during the call only) only after the
 * whole stream has been verified (trailer counts and CRC32C): the library
 * stages the config record until then, so the VMM never applies bytes a
 * corrupt stream delivered. It is called from the vfiomig_mig_load() that
 * reads the trailer, before the device leaves RESUMING. 0 or -errno (fails
 * the load). A destination that sets config_load requires the record: a
 * stream without one is refused (-EBADMSG).
 */
typedef int (*vfiomig_config_save_fn)(void *user, const void **data, size_t *len);
typedef int (*vfiomig_config_load_fn)(void *user, const void *data, size_t len);

struct vfiomig_mig_opts {
	size_t sz;
	/* Save: device bytes per DEV_DATA_STATE record (v2). Default 1 MiB. */
	uint64_t chunk_size;
	/* Load: the largest record accepted; larger claims are refused before allocating. Default 64 MiB. */
	uint64_t max_record;
	vfiomig_config_save_fn config_save;
	vfiomig_config_load_fn config_load;
	void *config_user;
	/*
	 * With VFIOMIG_MIG_F_DIRTY_TRACKING: the VMM's DMA-mapped ranges
	 * (needed by device DMA logging; copied), nr_dma_ranges of them.
	 */
	const struct vfiomig_dma_range *dma_ranges;
	uint32_t flags;           /* VFIOMIG_MIG_F_* */
	uint32_t dirty_mechanism; /* VFIOMIG_DIRTY_MECH_* (default AUTO) */
	uint32_t nr_dma_ranges;
	/*
	 * Save: a pre-copy round (vfiomig_mig_save_iterate) ends after this
	 * many milliseconds even when its byte budget is not spent, so a VMM's
	 * event loop gets control back from a device that never runs out of
	 * data. 0: the default, 1000 ms; UINT32_MAX: no time bound.
	 */
	uint32_t round_ms;
};

/*
 * May this device migrate with these opts? 0 if yes; otherwise
 * -EOPNOTSUPP and the reason (NUL-terminated, truncated to len) in
 * `reason`: no migration support, v1 only without VFIOMIG_MIG_F_ALLOW_V1,
 * v2 without STOP_COPY, or (with VFIOMIG_MIG_F_NEED_DIRTY_TRACKING) no way
 * to track the device's DMA writes. reason may be NULL when len is 0.
 */
VFIOMIG_API int vfiomig_mig_check(struct vfiomig_device *dev, const struct vfiomig_mig_opts *opts,
				  char *reason, size_t len);

/*
 * A migration of `dev` in `role` (VFIOMIG_ROLE_*). The migration holds a
 * reference on the device (and so on its context) until
 * vfiomig_mig_free(). Fails with -EOPNOTSUPP (and the blocker's reason
 * in the log) when vfiomig_mig_check() would refuse. Returns 0 and *out.
 */
VFIOMIG_API int vfiomig_mig_new(struct vfiomig_device *dev, uint32_t role,
				const struct vfiomig_mig_opts *opts, struct vfiomig_mig **out);

/*
 * Free. A save that did not complete puts the source device back (see
 * the failure rules); a load that did not complete resets the
 * destination device. Closes the data_fd, leaves the device set the
 * migration is in, drops its reference on the device. NULL is accepted.
 */
VFIOMIG_API void vfiomig_mig_free(struct vfiomig_mig *mig);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_mig, vfiomig_mig_free)

/* ------------------------------------------------------------- source */

/*
 * The save's dirty-tracking session (VFIOMIG_MIG_F_DIRTY_TRACKING), for
 * vfiomig_dirty_query() each round; NULL before setup or without the
 * flag. Owned by the migration object.
 */
VFIOMIG_API struct vfiomig_dirty *vfiomig_mig_dirty(const struct vfiomig_mig *mig);

/* Write the stream header and the setup phase; enter PRE_COPY if allowed. */
VFIOMIG_API int vfiomig_mig_save_setup(struct vfiomig_mig *mig, struct vfiomig_stream *out);

struct vfiomig_mig_pending {
	size_t sz;
	uint64_t precopy_initial; /* PRE_COPY: initial bytes still to send (0 = switchover OK) */
	uint64_t precopy_dirty;   /* PRE_COPY: bytes re-dirtied since sent */
	/*
	 * Estimated bytes of the stop-and-copy phase if the VM stopped now (0 if
	 * the kernel cannot say: before 6.2). It already includes what
	 * precopy_initial and precopy_dirty count (the kernel's MIG_DATA_SIZE
	 * is everything still to move): a downtime estimate uses stopcopy when
	 * it is known, else precopy_initial + precopy_dirty — never the sum.
	 */
	uint64_t stopcopy;
	/*
	 * Measured by the library over this save's pre-copy rounds: the rate
	 * at which device data went from the device into the stream, in
	 * bytes/s (0 until a round has moved some), and the stop-and-copy
	 * time expected at that rate for what is still to move (stopcopy when
	 * known, else precopy_initial + precopy_dirty), in ns (0: no rate yet).
	 */
	uint64_t bandwidth;
	uint64_t downtime_ns;
};

/* Estimates (VFIO_MIG_GET_PRECOPY_INFO, VFIO_DEVICE_FEATURE_MIG_DATA_SIZE; v1: pending_bytes). */
VFIOMIG_API int vfiomig_mig_save_pending(struct vfiomig_mig *mig, struct vfiomig_mig_pending *p);

/* vfiomig_mig_stop_advice() results */
#define VFIOMIG_ADVICE_CONTINUE   0 /* run another pre-copy round */
#define VFIOMIG_ADVICE_FITS       1 /* stop: the expected downtime fits the limit */
#define VFIOMIG_ADVICE_STALLED    2 /* stop: the data still to move stopped shrinking */
#define VFIOMIG_ADVICE_NO_PRECOPY 3 /* stop: no pre-copy (nothing to gain by waiting) */
#define VFIOMIG_ADVICE_WAIT_ACK   4 /* do not stop yet: the destination has not acknowledged
				       the initial data (VFIOMIG_MIG_F_SWITCHOVER_ACK) */

/*
 * When to stop the VM, from the library's own measurements: call it after
 * each pre-copy round. It is FITS once the device is switchover-ready
 * (vfiomig_mig_switchover_ready()) and the expected downtime (see
 * vfiomig_mig_pending.downtime_ns) is at most `downtime_limit_ms`; it is
 * STALLED once all the initial data has been sent and for 3 rounds the
 * data still to move has not gone below its smallest value by more than
 * a sixteenth (a device
 * dirtying as fast as it is copied: more rounds would not help, so stop
 * and take the longer downtime, or cancel); NO_PRECOPY without pre-copy;
 * WAIT_ACK while the acknowledgement is outstanding; else CONTINUE. The
 * VMM keeps the last word (a round limit, its own timer, cancel).
 * *downtime_ns (optional) gets the expected downtime (0: no rate yet).
 * Returns one of VFIOMIG_ADVICE_*, or -errno (a failed or finished save).
 */
VFIOMIG_API int vfiomig_mig_stop_advice(struct vfiomig_mig *mig, uint32_t downtime_limit_ms,
					uint64_t *downtime_ns);

/*
 * One pre-copy round: move up to `budget` bytes of device data into the
 * stream as one phase closed by END_OF_STATE. Budget 0 means "what the
 * device reports pending as the round starts" (PRECOPY_INFO initial +
 * dirty; v1 pending_bytes), so a round always ends even on a device that
 * dirties as fast as it is read. Returns 1 if the device still had data
 * when the round's limit was reached, 0 if it had none left for now, or
 * -errno (the device is put back). A round also ends once it has run for
 * vfiomig_mig_opts.round_ms (default 1 s), returning 1. Without PRE_COPY
 * it writes an empty phase and returns 0.
 */
VFIOMIG_API int vfiomig_mig_save_iterate(struct vfiomig_mig *mig, struct vfiomig_stream *out,
					 uint64_t budget);

/*
 * 1 once all of the initial pre-copy data has been sent (the kernel
 * recommends switching over only then; QEMU calls this switchover-ack),
 * or when the device has no pre-copy; 0 if not yet. The round that gets
 * there also writes an INIT_DATA_SENT record, so the destination knows.
 */
VFIOMIG_API int vfiomig_mig_initial_data_sent(const struct vfiomig_mig *mig);

/*
 * Stop-and-copy: the VM must be stopped (the device is moved to
 * STOP_COPY now if vfiomig_mig_vm_state(STOPPED) has not done it), all
 * remaining device data, the config record and the trailer are written,
 * the stream is flushed and the device goes to STOP.
 */
VFIOMIG_API int vfiomig_mig_save_complete(struct vfiomig_mig *mig, struct vfiomig_stream *out);

/* -------------------------------------------------------- destination */

/*
 * Read and check the stream header (identity, protocol, version), move the
 * device to RESUMING, and read the whole setup phase that follows the
 * header (both are what the source's vfiomig_mig_save_setup() wrote): call
 * it when those bytes can be read, and on a stream nothing has read from.
 */
VFIOMIG_API int vfiomig_mig_load_setup(struct vfiomig_mig *mig, struct vfiomig_stream *in);

/*
 * Load the next phase (records up to END_OF_STATE): one pre-copy round,
 * or the stop-and-copy phase and the trailer. Returns 1 when more phases
 * follow, 0 when the stream is complete, its trailer verified, the config
 * handed to config_load and the device moved to STOP, or -errno (the
 * device is reset): -ECANCELED when the source cancelled (the log line
 * gives its reason).
 */
VFIOMIG_API int vfiomig_mig_load(struct vfiomig_mig *mig, struct vfiomig_stream *in);

/* ------------------------------------------------------ VMM hooks */

/* vfiomig_mig_vm_state() */
#define VFIOMIG_VM_RUNNING 1
#define VFIOMIG_VM_STOPPED 2

/*
 * The VM's run state changed. Source during a save: STOPPED moves the
 * device to STOP_COPY; RUNNING cancels the save and resumes the device.
 * Source after a completed save: RUNNING resumes the device with its
 * state (the migration failed after switchover); the migration is over
 * and COMPLETED is refused. Destination: RUNNING is refused while the
 * load runs (-EBUSY) and after it failed (-ECANCELED); after a complete
 * load it moves the device to RUNNING. Otherwise the device follows the
 * VM (RUNNING / STOP).
 */
VFIOMIG_API int vfiomig_mig_vm_state(struct vfiomig_mig *mig, uint32_t state);

/* vfiomig_mig_event() */
#define VFIOMIG_EVENT_SETUP     1
#define VFIOMIG_EVENT_ACTIVE    2
#define VFIOMIG_EVENT_COMPLETED 3
#define VFIOMIG_EVENT_FAILED    4
#define VFIOMIG_EVENT_CANCELLED 5

/*
 * The migration's progress as the VMM sees it. FAILED / CANCELLED are
 * vfiomig_mig_cancel() with -ECANCELED and a generic reason; after a
 * completed save they also move the device to follow the VM.
 * COMPLETED is refused (-ECANCELED) for a migration that failed, or whose
 * destination reported FAILED on the return path.
 */
VFIOMIG_API int vfiomig_mig_event(struct vfiomig_mig *mig, uint32_t event);

/*
 * Give up this migration, with a reason for the other side. Save: a
 * CANCEL record carrying error and reason goes into the forward stream
 * (when it can still carry one: not after a stream error, not in the
 * middle of a record), and the source device is put back. Load: the
 * destination device is reset and vfiomig_mig_return_send() reports
 * FAILED with error and reason. error: a negative errno; reason: printable
 * ASCII, cut at 255 bytes (NULL: "cancelled by the VMM"). 0, or -EINVAL.
 * A load that completed but whose VM has not run yet is reset too (the
 * VM will not run there); a save that completed, a load whose VM runs
 * and a migration that already failed are left as they are.
 */
VFIOMIG_API int vfiomig_mig_cancel(struct vfiomig_mig *mig, int error, const char *reason);

/*
 * Source: 1 when the VM may be stopped for switchover: all of the initial
 * pre-copy data has been sent (at once without pre-copy) and, with
 * VFIOMIG_MIG_F_SWITCHOVER_ACK, the destination has acknowledged it; 0 if
 * not yet; -ECANCELED after a failure; -EINVAL on a load. The VMM weighs
 * it with vfiomig_mig_save_pending() against the downtime it allows.
 */
VFIOMIG_API int vfiomig_mig_switchover_ready(const struct vfiomig_mig *mig);

/* vfiomig_mig_failure() origins */
#define VFIOMIG_FAILURE_LOCAL 1 /* this side failed, or its VMM cancelled */
#define VFIOMIG_FAILURE_PEER  2 /* the other side said so: a CANCEL record (load), FAILED (save) */

/*
 * Why the migration failed: returns 0 if it has not, else the negative
 * errno of the first failure, with *origin (may be NULL) saying whose it
 * was and `reason` (may be NULL when len is 0; cut to len) its words: this
 * side's ERR line, or exactly the reason the other side sent.
 */
VFIOMIG_API int vfiomig_mig_failure(const struct vfiomig_mig *mig, uint32_t *origin,
				    char *reason, size_t len);

/* ---------------------------------------------------- the return path */

/* Return-path messages (docs/stream-format.md, "Return path"). */
#define VFIOMIG_RETURN_SWITCHOVER_ACK 1 /* the initial pre-copy data is loaded */
#define VFIOMIG_RETURN_LOADED         2 /* the whole stream is loaded and verified */
#define VFIOMIG_RETURN_FAILED         3 /* the destination failed: error, reason */

/* A message as the source received it; set sz first. */
struct vfiomig_return_msg {
	size_t sz;
	uint64_t bytes;    /* forward-stream bytes the destination had read */
	uint32_t type;     /* VFIOMIG_RETURN_* */
	int32_t error;     /* FAILED: the destination's negative errno */
	char reason[256];  /* FAILED: the destination's error line */
};

/*
 * Destination: write to `rp` what the source is owed now, and flush it:
 * SWITCHOVER_ACK once the INIT_DATA_SENT record has been loaded; LOADED
 * once the stream is loaded and verified (with its byte count, data
 * counts and CRC32C, so the source knows it was its stream); FAILED with
 * the failure's errno and its ERR line once the load failed or was
 * cancelled. Each is sent once; call it after every vfiomig_mig_load()
 * (and after a failure). Returns the number of messages written (0-2) or
 * -errno.
 */
VFIOMIG_API int vfiomig_mig_return_send(struct vfiomig_mig *mig, struct vfiomig_stream *rp);

/*
 * Source: read the next message from `rp` (blocking like any stream read:
 * poll the VMM's channel first if it must not wait; the destination
 * writes each message with one write, so a readable channel holds one
 * whole, up to 4112 bytes), check it and apply
 * it: SWITCHOVER_ACK makes vfiomig_mig_switchover_ready() possible;
 * LOADED is checked against what this save wrote (-EBADMSG for another
 * stream); FAILED during the save fails it (the device is put back at
 * once), after the save completed it refuses COMPLETED and the VMM
 * resumes the VM (vfiomig_mig_vm_state(RUNNING)). Unknown message types
 * from a newer destination are skipped. Returns 0 with *msg filled,
 * -ENODATA when `rp` ended cleanly (no line logged), or -errno
 * (-EBADMSG: corrupt or out-of-step messages).
 */
VFIOMIG_API int vfiomig_mig_return_recv(struct vfiomig_mig *mig, struct vfiomig_stream *rp,
					struct vfiomig_return_msg *msg);

struct vfiomig_mig_stats {
	size_t sz;
	uint32_t protocol;        /* VFIOMIG_PROTO_* */
	/* VFIOMIG_DEVICE_STATE_* (for v1 devices: the equivalent v2 state) */
	uint32_t device_state;
	uint64_t bytes;           /* stream bytes written (save) or read (load) */
	uint64_t device_bytes;    /* device data bytes moved */
	uint64_t precopy_rounds;
	uint64_t precopy_bytes;   /* device bytes sent before stop-and-copy */
	uint64_t stopcopy_bytes;  /* device bytes sent during stop-and-copy */
	uint64_t stopcopy_ns;     /* time from STOP_COPY to the end of the save */
};

/*
 * Device migration states: the kernel's v2 numbering, used for both
 * protocols (a v1 device reports the equivalent v2 state), in stats, logs
 * and the simulator.
 */
#define VFIOMIG_DEVICE_STATE_ERROR        0
#define VFIOMIG_DEVICE_STATE_STOP         1
#define VFIOMIG_DEVICE_STATE_RUNNING      2
#define VFIOMIG_DEVICE_STATE_STOP_COPY    3
#define VFIOMIG_DEVICE_STATE_RESUMING     4
#define VFIOMIG_DEVICE_STATE_RUNNING_P2P  5
#define VFIOMIG_DEVICE_STATE_PRE_COPY     6
#define VFIOMIG_DEVICE_STATE_PRE_COPY_P2P 7

VFIOMIG_API int vfiomig_mig_get_stats(const struct vfiomig_mig *mig, struct vfiomig_mig_stats *st);

/* Name of a device state ("PRE_COPY_P2P"), or "?" */
VFIOMIG_API const char *vfiomig_device_state_name(uint32_t state);

/* ------------------------------------------------------ device sets */

/*
 * A set of migrations (same role) of one VM's devices. Membership is one
 * rule, enforced: a set never owns its members, a migration is in at most
 * one set, and either may be freed first. vfiomig_mig_free() takes the
 * migration out of its set; vfiomig_mig_set_free() releases the members
 * (they stay valid, and must still be freed). The set holds a reference
 * on ctx.
 */
VFIOMIG_API int vfiomig_mig_set_new(struct vfiomig_ctx *ctx, struct vfiomig_mig_set **out);
/* Free the set; its members leave it and are not freed. NULL is accepted. */
VFIOMIG_API void vfiomig_mig_set_free(struct vfiomig_mig_set *set);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_mig_set, vfiomig_mig_set_free)
/*
 * Add a member. -EINVAL when its role differs from the other members' or
 * its device belongs to another context than the set; -EEXIST when it is
 * already in this set or its device already has a member; -EBUSY when it
 * is in another set.
 */
VFIOMIG_API int vfiomig_mig_set_add(struct vfiomig_mig_set *set, struct vfiomig_mig *mig);
/* Take a member out of the set (it is not freed). -ENOENT when it is not a member. */
VFIOMIG_API int vfiomig_mig_set_remove(struct vfiomig_mig_set *set, struct vfiomig_mig *mig);

/*
 * May the set migrate? 0, or -EOPNOTSUPP with the reason: a member is
 * blocked, or more than one device lacks P2P (they could not be quiesced
 * before any is stopped).
 */
VFIOMIG_API int vfiomig_mig_set_check(struct vfiomig_mig_set *set, char *reason, size_t len);

/*
 * The VM's run state changed: STOPPED moves every member to a P2P state
 * (PRE_COPY_P2P / RUNNING_P2P) before any member goes further (STOP_COPY
 * or STOP); RUNNING moves every member to RUNNING_P2P before any goes to
 * RUNNING. On a failure the members already moved are put back.
 */
VFIOMIG_API int vfiomig_mig_set_vm_state(struct vfiomig_mig_set *set, uint32_t state);

/* Forward an event to every member (the first error is returned). */
VFIOMIG_API int vfiomig_mig_set_event(struct vfiomig_mig_set *set, uint32_t event);

/*
 * vfiomig_mig_stop_advice() for a VM's devices: STALLED, NO_PRECOPY or
 * FITS only when every member says it may stop, with the set's expected
 * downtime (the members of one stream move one after another, streams
 * side by side, as vfiomig_mig_set_save_complete() moves them) against
 * the limit; WAIT_ACK while any member waits for its acknowledgement.
 */
VFIOMIG_API int vfiomig_mig_set_stop_advice(struct vfiomig_mig_set *set,
					    uint32_t downtime_limit_ms, uint64_t *downtime_ns);

/* Sum of the members' statistics (protocol and device_state are 0). */
VFIOMIG_API int vfiomig_mig_set_get_stats(const struct vfiomig_mig_set *set,
					  struct vfiomig_mig_stats *st);

/*
 * Parallel stop-and-copy and load of a set's members.
 *
 * Each member moves its state over the stream its save_setup() or
 * load_setup() was given, and the library moves the members at the same
 * time, one worker thread per stream: members that share a stream are
 * moved one after another in the order they were added (their records
 * must not interleave), members with a stream of their own run side by
 * side. The library owns these threads: it starts them in the call and
 * joins them before it returns, with every signal blocked in them.
 *
 * What runs in a worker thread, for the caller to know: the member's
 * stream callbacks (one thread at a time per stream), its config_save /
 * config_load callbacks, and the context's log callback (the library
 * calls the log callback from one thread at a time). Devices that share
 * a container or a context are safe to move this way: the library does
 * not touch what they share from the workers. The caller's rule for its
 * own threads is unchanged (one thread at a time per context), and the
 * caller must not use the set or its members until the call returns.
 *
 * When a member fails, the others stop at their next chunk or record
 * (a load waiting for bytes stops when its stream yields them, or the
 * CANCEL record the source writes when its set fails), and the whole set
 * fails as the failure rules above say; the call returns the first
 * member's error, with one ERR line.
 */
struct vfiomig_mig_set_run_opts {
	size_t sz;
	/*
	 * Worker threads, the caller's included: 0 = one per stream; 1 =
	 * none but the caller's, which moves the members in turn; N = at
	 * most N. When the budget (N, or for 0 the CPUs online) is at least
	 * twice the number of streams, each v2 member's stop-and-copy also
	 * pipelines: a thread of its own reads the device's data_fd while
	 * the worker writes the stream. A thread that cannot be started is
	 * not an error: its work runs on the threads that did start (or the
	 * caller's), with a debug line.
	 */
	uint32_t threads;
	uint32_t reserved;
};

/*
 * Source: the stop-and-copy of every member at once (the VM must be
 * stopped). Members not yet stopped are quiesced first, as
 * vfiomig_mig_set_vm_state(STOPPED) does (every P2P member to its P2P
 * state before any is stopped); then each member does what
 * vfiomig_mig_save_complete() does, on its own stream. 0 when every
 * member completed; -EINVAL when a member has no save set up or has
 * already completed; -ECANCELED when the set had failed; else the first
 * failure (every member is failed and put back).
 */
VFIOMIG_API int vfiomig_mig_set_save_complete(struct vfiomig_mig_set *set,
					      const struct vfiomig_mig_set_run_opts *opts);

/*
 * Destination: load every member's remaining phases (vfiomig_mig_load()
 * until it returns 0), all members at once, each from its own stream:
 * the worker reads as fast as the stream delivers. 0 when every stream
 * is complete and verified (every device in STOP, ready for
 * vfiomig_mig_set_vm_state(RUNNING)); else the first failure (every
 * member is failed and reset). With VFIOMIG_MIG_F_SWITCHOVER_ACK the
 * VMM loads the pre-copy phases itself (vfiomig_mig_load()) until it
 * has sent the acknowledgement, and calls this for the rest.
 */
VFIOMIG_API int vfiomig_mig_set_load(struct vfiomig_mig_set *set,
				     const struct vfiomig_mig_set_run_opts *opts);

#ifdef __cplusplus
}
#endif
#endif
