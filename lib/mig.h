/* SPDX-License-Identifier: MIT */
/*
 * Private: the migration object shared by the state machine
 * (migration.c) and the two kernel protocols (mig_v1.c, mig_v2.c).
 *
 * The state machine speaks in v2 device states for both protocols; the
 * v1 backend maps them onto its device_state bits (P2P states collapse
 * onto their non-P2P twins, since v1 has no P2P).
 */
#ifndef VFIOMIG_MIG_H
#define VFIOMIG_MIG_H

#include "internal.h"
#include "format.h"

#include <vfiomig/migration.h>

struct vm_proto;

struct vfiomig_mig {
	struct vfiomig_device *dev;  /* a reference */
	struct vfiomig_ctx *ctx;     /* the device's */
	struct vfiomig_mig_set *set; /* the set it is in, or NULL */
	uint32_t role;               /* VFIOMIG_ROLE_SAVE / _LOAD */
	uint32_t flags;              /* VFIOMIG_MIG_* */
	const struct vm_proto *proto;
	uint32_t state;              /* current device state (VFIOMIG_DEVICE_STATE_*) */
	bool vm_running;             /* as last reported by the VMM */
	bool precopy;                /* PRE_COPY in use for this save */
	bool setup_done;
	bool complete;               /* save: complete; load: trailer verified */
	bool failed;
	bool init_sent;              /* switchover-ack: initial data all sent (load: all loaded) */
	bool resumed;                /* save: the source VM resumed after a completed save */
	bool set_aborted;            /* stopped by a parallel run for another member's failure */
	bool pipeline;               /* a parallel run lets its stop-copy pipeline (v2) */
	int fail_err;                /* why the migration failed (negative errno), once failed */
	char fail_reason[256];       /* and the ERR line that said so */
	uint32_t fail_origin;        /* VFIOMIG_FAILURE_*: whose failure it was */
	int peer_err;                /* FAILURE_PEER: the errno and reason the peer sent */
	char peer_reason[256];
	/* Return path (retpath.c). Load: what is due or sent; save: what arrived. */
	bool ack_sent;
	bool result_sent;
	bool acked;                  /* save: the destination acknowledged switchover */
	bool dest_loaded;            /* save: the destination loaded and verified the stream */
	bool dest_failed;            /* save: the destination failed */
	/* Load: the VMM config, staged until the trailer has verified it. */
	unsigned char *cfg;
	size_t cfg_len;
	bool cfg_seen;
	uint64_t chunk_size;
	uint64_t max_record;
	uint64_t round_ns;           /* pre-copy round time bound, 0: none */
	vfiomig_config_save_fn config_save;
	vfiomig_config_load_fn config_load;
	void *config_user;
	struct vm_fmt_writer w;
	struct vm_fmt_reader r;
	struct vfiomig_mig_stats stats;
	struct vfiomig_dirty *dirty;       /* VFIOMIG_MIG_F_DIRTY_TRACKING session */
	uint32_t dirty_mech;
	uint32_t nr_dma_ranges;
	struct vfiomig_dma_range *dma_ranges;
	uint64_t stopcopy_start_ns;
	/* Pre-copy rate (vfiomig_mig_pending.bandwidth) and the stop advice's memory. */
	uint64_t bw_bytes, bw_ns;
	uint64_t adv_rounds;         /* precopy_rounds when the advice last looked */
	uint64_t adv_best;           /* smallest still-to-move seen after the initial data */
	uint32_t adv_stagnant;       /* rounds since adv_best went down */
	void *scratch;               /* chunk buffer (save: chunk_size; load: piece buffer) */
	size_t scratch_len;

	/* v2 */
	uint64_t v2_flags;
	int data_fd;
	/* v1 */
	uint32_t v1_index;           /* migration region index */
	uint64_t v1_size;
	uint64_t v1_data_offset;     /* data section offset reported at load time */
	struct vfiomig_region_map *v1_map; /* mmapped data section(s), or NULL */
};

struct vfiomig_mig_set {
	struct vfiomig_ctx *ctx;     /* a reference */
	struct vfiomig_mig **members;
	size_t n, cap;
	/*
	 * A parallel run (vfiomig_mig_set_save_complete(), _set_load()) is in
	 * progress: a member that fails raises `abort` (atomic) instead of
	 * failing its siblings, which other threads are driving; the others
	 * stop at their next chunk or record, and the caller's thread fails
	 * the rest of the set once every worker has returned.
	 */
	bool running;
	int abort;
};

/* A parallel run of m's set was aborted by another member's failure. */
static inline bool vm_mig_set_aborted(const struct vfiomig_mig *m)
{
	return m->set && m->set->running && __atomic_load_n(&m->set->abort, __ATOMIC_RELAXED);
}

/*
 * A kernel protocol. All return 0 / a count, or -errno having logged.
 *
 * set_state: move the device to `target` (a VFIOMIG_DEVICE_STATE_*), updating
 *   m->state; on failure m->state holds the device's real state as read
 *   back from the device (or ERROR).
 * recover: put the device in `target` (RUNNING or STOP) by any means:
 *   the transition, else a reset. Returns 0 if the device ended there
 *   with its state intact, 1 if a reset was needed, -errno if neither.
 * reset: VFIO_DEVICE_RESET, dropping the protocol's migration fds; the
 *   device is RUNNING with a clean state (m->state says so). 0 or -errno
 *   (m->state ERROR), without a log line.
 * save_chunk: the next piece of device data: > 0 bytes at *ptr (either
 *   the scratch buffer or a mapping), 0 when there is none now (PRE_COPY)
 *   or no more (STOP_COPY).
 * load_chunk: one data record of `size` bytes whose body is read from
 *   the format reader r.
 */
struct vm_proto {
	const char *name;
	uint32_t id;                 /* VFIOMIG_PROTO_* */
	int (*init)(struct vfiomig_mig *m);
	void (*fini)(struct vfiomig_mig *m);
	int (*set_state)(struct vfiomig_mig *m, uint32_t target);
	int (*recover)(struct vfiomig_mig *m, uint32_t target);
	int (*reset)(struct vfiomig_mig *m);
	int (*precopy_info)(struct vfiomig_mig *m, uint64_t *initial, uint64_t *dirty);
	int (*stopcopy_size)(struct vfiomig_mig *m, uint64_t *bytes);
	ssize_t (*save_chunk)(struct vfiomig_mig *m, const void **ptr);
	int (*load_chunk)(struct vfiomig_mig *m, uint64_t size);
};

extern const struct vm_proto vm_proto_v1;
extern const struct vm_proto vm_proto_v2;

/*
 * Fail the migration (save: tell the destination, put the source back;
 * load: reset the destination), and its set with it; `why` (or the
 * context's last ERR line) is the reason the return path carries.
 * Returns err.
 */
int vm_mig_fail(struct vfiomig_mig *m, int err, const char *why);
/* Record the first failure of a migration that has nothing left to put back. */
void vm_mig_note_failure(struct vfiomig_mig *m, int err, const char *why);
/*
 * The other side failed and said why (a CANCEL record, a FAILED message):
 * call before failing the migration, so its failure is the peer's.
 */
void vm_mig_peer_failed(struct vfiomig_mig *m, int err, const char *reason);

/* "RUNNING", "PRE_COPY_P2P", ... */
const char *vm_dev_state_name(uint32_t state);

/* Monotonic clock in ns. */
uint64_t vm_now_ns(void);

#endif
