/* SPDX-License-Identifier: MIT */
/*
 * The save/load state machine: protocol choice and blockers, the stream
 * phases (setup, pre-copy rounds, stop-and-copy, trailer), VM run-state
 * and migration-event hooks, recovery on failure, statistics, and sets
 * of devices quiesced together through the P2P states.
 */
#include "mig.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CHUNK (1u << 20)
#define DEFAULT_ROUND_MS 1000u
#define MAX_CHUNK     (64u << 20)

uint64_t vm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

const char *vm_dev_state_name(uint32_t state)
{
	static const char *const names[] = {
		"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY",
		"PRE_COPY_P2P",
	};

	return state < VM_ARRAY_SIZE(names) ? names[state] : "?";
}

const char *vfiomig_device_state_name(uint32_t state)
{
	return vm_dev_state_name(state);
}

static bool is_precopy(uint32_t s)
{
	return s == VFIOMIG_DEVICE_STATE_PRE_COPY || s == VFIOMIG_DEVICE_STATE_PRE_COPY_P2P;
}

static bool has_p2p(const struct vfiomig_mig *m)
{
	return m->proto == &vm_proto_v2 && (m->v2_flags & VFIOMIG_V2_P2P);
}

/* -------------------------------------------------- protocol and blockers */

static int dirty_trackable(struct vfiomig_device *dev, char *reason, size_t len);

static int choose(struct vfiomig_device *dev, uint32_t flags, const struct vm_proto **proto,
		  char *reason, size_t len)
{
	VFIOMIG_OPTS(migration_info, mi);
	bool v1, v2;
	int ret;

	ret = vfiomig_device_migration_info(dev, &mi);
	if (ret)
		return ret;
	v2 = mi.protocols & VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V2);
	v1 = mi.protocols & VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V1);
	if (v2 && !(mi.v2_flags & VFIOMIG_V2_STOP_COPY)) {
		snprintf(reason, len, "device %s reports v2 migration without STOP_COPY",
			 dev->name);
		v2 = false;
		if (!v1)
			return -EOPNOTSUPP;
	}
	if (v1 && (flags & VFIOMIG_MIG_F_ALLOW_V1) && (!v2 || (flags & VFIOMIG_MIG_F_PREFER_V1)))
		*proto = &vm_proto_v1;
	else if (v2)
		*proto = &vm_proto_v2;
	else
		*proto = NULL;
	if (*proto) {
		if (!(flags & VFIOMIG_MIG_F_NEED_DIRTY_TRACKING))
			return 0;
		ret = dirty_trackable(dev, reason, len);
		return ret < 0 ? ret : ret ? 0 : -EOPNOTSUPP;
	}
	if (v1) {
		snprintf(reason, len,
			 "device %s offers only the experimental v1 migration protocol (region %d); "
			 "the VMM must opt in with VFIOMIG_MIG_F_ALLOW_V1", dev->name, mi.v1_region);
		return -EOPNOTSUPP;
	}
	snprintf(reason, len, "%s", mi.reason);
	return -EOPNOTSUPP;
}

/*
 * Can anything track this device's DMA writes? 1 yes, 0 no (reason
 * written), -errno on a real failure.
 */
static int dirty_trackable(struct vfiomig_device *dev, char *reason, size_t len)
{
	VFIOMIG_OPTS(dirty_info, p);
	int ret = vfiomig_dirty_probe(dev, &p);

	if (ret)
		return ret;
	if (p.best)
		return 1;
	snprintf(reason, len, "device %.64s: nothing can track its DMA writes: %.100s; %.100s; %.100s",
		 dev->name,
		 p.why_not[VFIOMIG_DIRTY_MECH_DEVICE], p.why_not[VFIOMIG_DIRTY_MECH_IOMMUFD],
		 p.why_not[VFIOMIG_DIRTY_MECH_TYPE1]);
	return 0;
}

static int opts_flags(struct vfiomig_ctx *ctx, const struct vfiomig_mig_opts *opts,
		      uint32_t *flags)
{
	const uint32_t known = VFIOMIG_MIG_F_ALLOW_V1 | VFIOMIG_MIG_F_NO_PRECOPY |
			       VFIOMIG_MIG_F_PREFER_V1 | VFIOMIG_MIG_F_NEED_DIRTY_TRACKING |
			       VFIOMIG_MIG_F_DIRTY_TRACKING | VFIOMIG_MIG_F_SWITCHOVER_ACK;
	int ret = VM_OPTS_VALID(ctx, opts, struct vfiomig_mig_opts, round_ms);

	if (ret)
		return ret;
	*flags = VM_OPTS_GET(opts, struct vfiomig_mig_opts, flags, 0);
	if (*flags & ~known)
		return vm_err(ctx, -EINVAL, "vfiomig_mig_opts: unknown flags 0x%x", *flags & ~known);
	if (*flags & VFIOMIG_MIG_F_DIRTY_TRACKING)
		*flags |= VFIOMIG_MIG_F_NEED_DIRTY_TRACKING;
	return 0;
}

int vfiomig_mig_check(struct vfiomig_device *dev, const struct vfiomig_mig_opts *opts,
		      char *reason, size_t len)
{
	VM_API(dev ? dev->ctx : NULL);
	const struct vm_proto *proto;
	char buf[512] = "";
	uint32_t flags;
	int ret;

	if (!dev)
		return -EINVAL;
	if ((len && !reason))
		return vm_arg_err(dev->ctx, __func__);
	if (len)
		reason[0] = '\0';
	ret = opts_flags(dev->ctx, opts, &flags);
	if (ret)
		return ret;
	ret = choose(dev, flags, &proto, buf, sizeof(buf));
	if (ret == -EOPNOTSUPP && len)
		snprintf(reason, len, "%s", buf);
	return ret;
}

/* ----------------------------------------------------------- lifecycle */

/* Free the object's memory and drop its device (the protocol is already finished). */
static void mig_release(struct vfiomig_mig *m)
{
	if (m->dev->mig == m)
		m->dev->mig = NULL;
	free(m->cfg);
	vm_stream_put(m->w.s);
	vm_stream_put(m->r.s);
	vm_device_put(m->dev);
	free(m->scratch);
	free(m->dma_ranges);
	free(m);
}


int vfiomig_mig_new(struct vfiomig_device *dev, uint32_t role, const struct vfiomig_mig_opts *opts,
		    struct vfiomig_mig **out)
{
	VM_API(dev ? dev->ctx : NULL);
	const struct vm_proto *proto;
	struct vfiomig_mig *m;
	char reason[512] = "";
	uint32_t flags;
	uint64_t chunk, maxrec;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!out)
		return vm_arg_err(dev->ctx, __func__);
	*out = NULL;
	if (role != VFIOMIG_ROLE_SAVE && role != VFIOMIG_ROLE_LOAD)
		return vm_err(dev->ctx, -EINVAL, "device %s: migration role %u", dev->name, role);
	ret = opts_flags(dev->ctx, opts, &flags);
	if (ret)
		return ret;
	chunk = VM_OPTS_GET(opts, struct vfiomig_mig_opts, chunk_size, 0);
	maxrec = VM_OPTS_GET(opts, struct vfiomig_mig_opts, max_record, 0);
	if (!chunk)
		chunk = DEFAULT_CHUNK;
	if (!maxrec)
		maxrec = VM_FMT_RECORD_MAX;
	if (chunk > MAX_CHUNK || chunk > maxrec)
		return vm_err(dev->ctx, -EINVAL, "device %s: chunk_size %llu (at most %u and at most "
			      "max_record)", dev->name, (unsigned long long)chunk, MAX_CHUNK);

	if (dev->mig)
		return vm_err(dev->ctx, -EBUSY, "device %s: it already has a %s migration object "
			      "(free it first)", dev->name,
			      dev->mig->role == VFIOMIG_ROLE_SAVE ? "save" : "load");
	ret = choose(dev, flags, &proto, reason, sizeof(reason));
	if (ret == -EOPNOTSUPP)
		return vm_err(dev->ctx, ret, "migration blocked: %s", reason);
	if (ret)
		return ret;

	m = calloc(1, sizeof(*m));
	if (!m)
		return vm_err(dev->ctx, -ENOMEM, "device %s: migration object", dev->name);
	/* From here on every failure releases through mig_release(). */
	m->dev = vm_device_get(dev);
	m->ctx = dev->ctx;
	m->role = role;
	m->flags = flags;
	m->proto = proto;
	m->data_fd = -1;
	m->chunk_size = chunk;
	m->max_record = maxrec;
	{
		uint32_t ms = VM_OPTS_GET(opts, struct vfiomig_mig_opts, round_ms, 0);

		m->round_ns = ms == UINT32_MAX ? 0 : (uint64_t)(ms ? ms : DEFAULT_ROUND_MS) * 1000000u;
	}
	m->vm_running = role == VFIOMIG_ROLE_SAVE;
	m->config_save = VM_OPTS_GET(opts, struct vfiomig_mig_opts, config_save, NULL);
	m->config_load = VM_OPTS_GET(opts, struct vfiomig_mig_opts, config_load, NULL);
	m->config_user = VM_OPTS_GET(opts, struct vfiomig_mig_opts, config_user, NULL);
	m->dirty_mech = VM_OPTS_GET(opts, struct vfiomig_mig_opts, dirty_mechanism, 0);
	m->nr_dma_ranges = VM_OPTS_GET(opts, struct vfiomig_mig_opts, nr_dma_ranges, 0);
	if (m->nr_dma_ranges) {
		const struct vfiomig_dma_range *r =
			VM_OPTS_GET(opts, struct vfiomig_mig_opts, dma_ranges, NULL);

		m->dma_ranges = r ? calloc(m->nr_dma_ranges, sizeof(*r)) : NULL;
		if (!m->dma_ranges) {
			uint32_t n = m->nr_dma_ranges;

			mig_release(m);
			return vm_err(dev->ctx, r ? -ENOMEM : -EINVAL, "device %s: %u DMA ranges",
				      dev->name, n);
		}
		memcpy(m->dma_ranges, r, m->nr_dma_ranges * sizeof(*r));
	}
	m->stats.sz = sizeof(m->stats);
	m->stats.protocol = proto->id;
	m->scratch_len = (size_t)chunk;
	m->scratch = malloc(m->scratch_len);
	if (!m->scratch) {
		mig_release(m);
		return vm_err(dev->ctx, -ENOMEM, "device %s: %llu-byte chunk buffer", dev->name,
			      (unsigned long long)chunk);
	}
	ret = proto->init(m);
	if (ret) {
		proto->fini(m);
		mig_release(m);
		return ret;
	}
	vm_info(m->ctx, "device %s: %s migration, protocol %s, device %s", dev->name,
		role == VFIOMIG_ROLE_SAVE ? "save" : "load", proto->name, vm_dev_state_name(m->state));
	dev->mig = m;
	*out = m;
	return 0;
}

static bool save_active(const struct vfiomig_mig *m)
{
	return m->role == VFIOMIG_ROLE_SAVE && m->setup_done && !m->complete && !m->failed;
}

static bool load_active(const struct vfiomig_mig *m)
{
	return m->role == VFIOMIG_ROLE_LOAD && m->setup_done && !m->complete && !m->failed;
}

/* A complete load whose VM has not run yet: cancelling it still resets the device. */
static bool load_unstarted(const struct vfiomig_mig *m)
{
	return m->role == VFIOMIG_ROLE_LOAD && m->complete && !m->failed && !m->vm_running;
}

/* Remember why the migration failed: the return path tells the source. */
static void note_failure(struct vfiomig_mig *m, int err, const char *why)
{
	if (m->failed)
		return; /* the first failure is the reason */
	m->failed = true;
	m->fail_err = err < 0 ? err : -ECANCELED;
	if (!m->fail_origin)
		m->fail_origin = VFIOMIG_FAILURE_LOCAL;
	if (!why && err < 0 && vm_last_err()[0])
		why = vm_last_err();
	if (why) {
		size_t len = strnlen(why, sizeof(m->fail_reason) - 1); /* cut, on purpose */

		memcpy(m->fail_reason, why, len);
		m->fail_reason[len] = '\0';
	} else {
		snprintf(m->fail_reason, sizeof(m->fail_reason), "device %.64s: migration cancelled",
			 m->dev->name);
	}
}

static void fail_siblings(struct vfiomig_mig *m);

/*
 * A save step failed, or the VMM gave up: tell the destination in-band
 * (a CANCEL record, when the stream can still carry one), put the source
 * device back (RUNNING, or STOP while the VM is stopped) and fail the
 * migration, and the other members of its set with it.
 */
static int fail_save(struct vfiomig_mig *m, int err, const char *why)
{
	uint32_t target = m->vm_running ? VFIOMIG_DEVICE_STATE_RUNNING : VFIOMIG_DEVICE_STATE_STOP;
	int ret;

	if (m->failed)
		return err;
	note_failure(m, err, why);
	if (vm_fmt_can_cancel(&m->w)) {
		/* Best effort: a channel that already broke cannot carry it, and that is fine. */
		vm_quiet_begin(m->ctx);
		if (vm_fmt_write_cancel(&m->w, m->fail_err, m->fail_reason) == 0)
			vfiomig_stream_flush(m->w.s);
		vm_quiet_end(m->ctx);
	}
	ret = m->proto->recover(m, target);
	if (ret < 0)
		vm_warn(m->ctx, "device %s: could not put the source device back to %s: %s (the "
			"device is in %s)", m->dev->name, vm_dev_state_name(target),
			vfiomig_strerror(ret), vm_dev_state_name(m->state));
	else
		vm_info(m->ctx, "device %s: save failed; source device back to %s", m->dev->name,
			vm_dev_state_name(m->state));
	fail_siblings(m);
	return err;
}

/*
 * A load failed: the destination must never run with partial state.
 * Reset it, and the other members of its set (the VM cannot run without
 * this device's state, whatever the others hold).
 */
static int fail_load(struct vfiomig_mig *m, int err, const char *why)
{
	int ret;

	if (m->failed)
		return err;
	note_failure(m, err, why);
	ret = m->proto->reset(m);
	if (ret < 0)
		vm_warn(m->ctx, "device %s: VFIO_DEVICE_RESET of the destination after a failed "
			"load: %s (the device is in %s)", m->dev->name, vfiomig_strerror(ret),
			vm_dev_state_name(m->state));
	else
		vm_info(m->ctx, "device %s: load refused; destination device reset", m->dev->name);
	m->complete = false;
	fail_siblings(m);
	return err;
}

int vm_mig_fail(struct vfiomig_mig *m, int err, const char *why)
{
	return m->role == VFIOMIG_ROLE_SAVE ? fail_save(m, err, why) : fail_load(m, err, why);
}

void vm_mig_note_failure(struct vfiomig_mig *m, int err, const char *why)
{
	note_failure(m, err, why);
}

void vm_mig_peer_failed(struct vfiomig_mig *m, int err, const char *reason)
{
	if (m->failed)
		return;
	m->fail_origin = VFIOMIG_FAILURE_PEER;
	m->peer_err = err;
	snprintf(m->peer_reason, sizeof(m->peer_reason), "%s", reason);
}

int vfiomig_mig_failure(const struct vfiomig_mig *m, uint32_t *origin, char *reason, size_t len)
{
	const char *why;
	int err;

	if (origin)
		*origin = 0;
	if (len && reason)
		reason[0] = '\0';
	if (!m || (len && !reason))
		return -EINVAL;
	if (!m->failed)
		return 0;
	err = m->fail_origin == VFIOMIG_FAILURE_PEER ? m->peer_err : m->fail_err;
	why = m->fail_origin == VFIOMIG_FAILURE_PEER ? m->peer_reason : m->fail_reason;
	if (origin)
		*origin = m->fail_origin;
	if (len)
		snprintf(reason, len, "%s", why);
	return err;
}

/* One member of a set failed: so does the VM's migration, and every other member. */
static void fail_siblings(struct vfiomig_mig *m)
{
	struct vfiomig_mig_set *set = m->set;
	char why[300]; /* cut to the 255 bytes of a reason by note_failure() */

	if (!set)
		return;
	if (set->running) {
		/* Other threads drive the siblings: they stop, the caller's thread fails them. */
		__atomic_store_n(&set->abort, 1, __ATOMIC_RELAXED);
		return;
	}
	snprintf(why, sizeof(why), "device %.48s of the same VM failed: %.180s", m->dev->name,
		 m->fail_reason);
	for (size_t i = 0; i < set->n; i++) {
		struct vfiomig_mig *o = set->members[i];

		if (o == m || o->failed)
			continue;
		vm_warn(o->ctx, "device %s: migration failed with the rest of its set (device %s "
			"failed)", o->dev->name, m->dev->name);
		if (o->role == VFIOMIG_ROLE_LOAD)
			fail_load(o, -ECANCELED, why);
		else if (o->setup_done && !o->complete)
			fail_save(o, -ECANCELED, why);
		else
			note_failure(o, -ECANCELED, why); /* complete or not begun: follows the VM */
	}
}

void vfiomig_mig_free(struct vfiomig_mig *m)
{
	if (!m)
		return;
	VM_API(m->ctx);
	if (m->set)
		vfiomig_mig_set_remove(m->set, m);
	if (save_active(m))
		fail_save(m, -ECANCELED, "the source freed its migration before it completed");
	else if (load_active(m))
		fail_load(m, -ECANCELED, "the destination freed its migration before it completed");
	vfiomig_dirty_free(m->dirty);
	m->proto->fini(m);
	mig_release(m);
}

struct vfiomig_dirty *vfiomig_mig_dirty(const struct vfiomig_mig *m)
{
	return m ? m->dirty : NULL;
}

/* ----------------------------------------------------------- identity */

/* What kind of device this is, for the stream header and the destination's check. */
static int device_identity(struct vfiomig_mig *m, struct vm_fmt_identity *id)
{
	struct vfiomig_device *dev = m->dev;
	const struct vu_device_info *di;
	uint8_t cfg[0x30];
	int ret;

	memset(id, 0, sizeof(*id));
	ret = vm_device_info(dev, &di);
	if (ret)
		return ret;
	id->kind = vm_device_is_mdev(dev) ? VM_FMT_ID_MDEV : VM_FMT_ID_PCI;
	if (di->flags & VU_DEVICE_FLAGS_PCI) {
		ret = vfiomig_region_read(dev, VU_PCI_CONFIG_REGION_INDEX, 0, cfg, sizeof(cfg));
		if (ret)
			return ret;
		/* PCI config space is little-endian. */
		id->vendor = (uint16_t)(cfg[0] | cfg[1] << 8);
		id->device = (uint16_t)(cfg[2] | cfg[3] << 8);
		id->class_code = (uint32_t)cfg[9] | (uint32_t)cfg[10] << 8 | (uint32_t)cfg[11] << 16;
		id->subvendor = (uint16_t)(cfg[0x2c] | cfg[0x2d] << 8);
		id->subdevice = (uint16_t)(cfg[0x2e] | cfg[0x2f] << 8);
	}
	if (id->kind == VM_FMT_ID_MDEV)
		vm_device_link_name(dev, "mdev_type", id->mdev_type, sizeof(id->mdev_type));
	else
		vm_device_link_name(dev, "driver", id->driver, sizeof(id->driver));
	return 0;
}

/* --------------------------------------------------------------- save */

static int check_save(struct vfiomig_mig *m, struct vfiomig_stream *s, const char *what)
{
	if (!m)
		return -EINVAL;
	if (!s)
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_SAVE)
		return vm_err(m->ctx, -EINVAL, "device %s: %s on a load", m->dev->name, what);
	if (m->failed)
		return vm_err(m->ctx, -ECANCELED, "device %s: %s after the migration failed",
			      m->dev->name, what);
	if (m->complete)
		return vm_err(m->ctx, -EINVAL, "device %s: %s after the save completed",
			      m->dev->name, what);
	if (!m->setup_done)
		return vm_err(m->ctx, -EINVAL, "device %s: %s before vfiomig_mig_save_setup()",
			      m->dev->name, what);
	if (m->w.s != s)
		return vm_err(m->ctx, -EINVAL, "device %s: %s on another stream than the setup's",
			      m->dev->name, what);
	return 0;
}

int vfiomig_mig_save_setup(struct vfiomig_mig *m, struct vfiomig_stream *out)
{
	VM_API(m ? m->ctx : NULL);
	struct vm_fmt_header h = { .version = VM_FMT_VERSION };
	int ret;

	if (!m)
		return -EINVAL;
	if (!out)
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_SAVE || m->setup_done || m->failed)
		return vm_err(m->ctx, -EINVAL, "device %s: save setup twice, on a load or after a "
			      "failure", m->dev->name);
	if (m->state != VFIOMIG_DEVICE_STATE_RUNNING && m->state != VFIOMIG_DEVICE_STATE_STOP &&
	    m->state != VFIOMIG_DEVICE_STATE_RUNNING_P2P)
		return vm_err(m->ctx, -EBUSY, "device %s: save setup with the device in %s",
			      m->dev->name, vm_dev_state_name(m->state));
	h.protocol = m->proto->id == VFIOMIG_PROTO_V1 ? VM_FMT_PROTO_V1 : VM_FMT_PROTO_V2;
	ret = device_identity(m, &h.id);
	if (ret)
		return ret;

	vm_fmt_writer_init(&m->w, vm_stream_get(out)); /* held until vfiomig_mig_free() */
	ret = vm_fmt_write_header(&m->w, &h);
	if (!ret)
		ret = vm_fmt_begin_phase(&m->w, VM_FMT_PHASE_SETUP);
	if (!ret)
		ret = vm_fmt_end_phase(&m->w);
	if (ret)
		return vm_err(m->ctx, ret, "device %s: writing the stream header", m->dev->name);
	m->setup_done = true;

	if (m->flags & VFIOMIG_MIG_F_DIRTY_TRACKING) {
		VFIOMIG_OPTS(dirty_opts, dopts, .mechanism = m->dirty_mech,
			     .ranges = m->dma_ranges, .nr_ranges = m->nr_dma_ranges);

		/* Before PRE_COPY: no DMA write of the pre-copy phase may go untracked. */
		ret = vfiomig_dirty_start(m->dev, &dopts, &m->dirty);
		if (ret)
			return fail_save(m, ret, NULL);
	}
	m->precopy = !(m->flags & VFIOMIG_MIG_F_NO_PRECOPY) && m->vm_running &&
		     (m->proto == &vm_proto_v1 || (m->v2_flags & VFIOMIG_V2_PRE_COPY));
	if (m->precopy) {
		ret = m->proto->set_state(m, VFIOMIG_DEVICE_STATE_PRE_COPY);
		if (ret)
			return fail_save(m, ret, NULL);
	} else {
		m->init_sent = true; /* nothing to wait for before switching over */
	}
	m->stats.bytes = m->w.offset;
	return 0;
}

/* The device's estimates and the library's rate; a failed query fails the save. */
static int pending(struct vfiomig_mig *m, struct vfiomig_mig_pending *out)
{
	uint64_t left;
	int ret;

	ret = m->proto->precopy_info(m, &out->precopy_initial, &out->precopy_dirty);
	if (!ret)
		ret = m->proto->stopcopy_size(m, &out->stopcopy);
	if (ret)
		return fail_save(m, ret, NULL);
	if (m->bw_ns && m->bw_bytes) {
		long double bw = (long double)m->bw_bytes * 1e9L / (long double)m->bw_ns;

		left = out->stopcopy ? out->stopcopy : out->precopy_initial + out->precopy_dirty;
		out->bandwidth = bw >= 1 ? (uint64_t)bw : 1;
		out->downtime_ns = (uint64_t)((long double)left * 1e9L / bw);
	}
	return 0;
}

int vfiomig_mig_save_pending(struct vfiomig_mig *m, struct vfiomig_mig_pending *p)
{
	VM_API(m ? m->ctx : NULL);
	struct vfiomig_mig_pending out = { .sz = sizeof(out) };
	int ret;

	if (!m)
		return -EINVAL;
	if (!p || p->sz < sizeof(size_t))
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_SAVE || m->failed)
		return vm_err(m->ctx, -EINVAL, "device %s: pending on a load or failed save",
			      m->dev->name);
	ret = pending(m, &out);
	if (ret)
		return ret;
	vm_out_copy(p, &out, sizeof(out));
	return 0;
}

/*
 * The advice is STALLED after STALL_ROUNDS rounds in which the rest did
 * not go below the smallest seen by more than 1/STALL_SHRINK of it (a rest
 * that only wobbles, or creeps down by a percent a round, is not
 * converging in any useful time).
 */
#define STALL_ROUNDS 3
#define STALL_SHRINK 16

/* One member's advice (and its expected downtime); the caller checked it is an active save. */
static int advice(struct vfiomig_mig *m, uint32_t limit_ms, uint64_t *downtime_ns)
{
	struct vfiomig_mig_pending p = { .sz = sizeof(p) };
	uint64_t left;
	int ret;

	*downtime_ns = 0;
	if (!m->precopy)
		return VFIOMIG_ADVICE_NO_PRECOPY;
	ret = pending(m, &p);
	if (ret)
		return ret;
	*downtime_ns = p.downtime_ns;
	left = p.stopcopy ? p.stopcopy : p.precopy_initial + p.precopy_dirty;
	if (m->init_sent && m->stats.precopy_rounds != m->adv_rounds) {
		/* A new round since the last look: did it get the rest smaller? */
		m->adv_rounds = m->stats.precopy_rounds;
		if (!m->adv_best || left < m->adv_best - m->adv_best / STALL_SHRINK) {
			m->adv_best = left ? left : 1;
			m->adv_stagnant = 0;
		} else {
			m->adv_stagnant++;
		}
	}
	if (m->init_sent && (m->flags & VFIOMIG_MIG_F_SWITCHOVER_ACK) && !m->acked)
		return VFIOMIG_ADVICE_WAIT_ACK;
	if (m->init_sent && p.bandwidth && p.downtime_ns <= (uint64_t)limit_ms * 1000000u)
		return VFIOMIG_ADVICE_FITS;
	if (m->init_sent && m->adv_stagnant >= STALL_ROUNDS)
		return VFIOMIG_ADVICE_STALLED;
	return VFIOMIG_ADVICE_CONTINUE;
}

int vfiomig_mig_stop_advice(struct vfiomig_mig *m, uint32_t downtime_limit_ms,
			    uint64_t *downtime_ns)
{
	VM_API(m ? m->ctx : NULL);
	uint64_t ns;
	int ret;

	if (downtime_ns)
		*downtime_ns = 0;
	if (!m)
		return -EINVAL;
	if (!save_active(m))
		return vm_err(m->ctx, m->failed ? -ECANCELED : -EINVAL, "device %s: stop advice "
			      "for a save that is not running (not set up, complete, failed, or a "
			      "load)", m->dev->name);
	ret = advice(m, downtime_limit_ms, &ns);
	if (downtime_ns)
		*downtime_ns = ns;
	return ret;
}

/* Another member of a parallel run failed: this one stops too (quietly: that one said why). */
static int set_aborted(struct vfiomig_mig *m)
{
	vm_quiet_begin(m->ctx);
	vm_err(m->ctx, -ECANCELED, "device %s: stopped: another device of its set failed",
	       m->dev->name);
	vm_quiet_end(m->ctx);
	/* The reason this migration's failure carries (a quiet line is not kept as one). */
	snprintf(vm_tls.err_msg, sizeof(vm_tls.err_msg), "device %.64s: stopped: another device "
		 "of its set failed", m->dev->name);
	m->set_aborted = true;
	return -ECANCELED;
}

/*
 * One chunk read by the device straight into a memory stream (v2: the
 * data_fd is read into the stream's buffer, then closed as a record in
 * place). Returns 1 when the stream lends no window (the caller copies),
 * else 0 with *n the bytes moved (0: the device had no more) or -errno.
 */
static int save_chunk_direct(struct vfiomig_mig *m, ssize_t *n)
{
	void *win = NULL, *body = NULL, *own = m->scratch;
	const void *p = NULL;
	int ret;

	if (m->proto != &vm_proto_v2)
		return 1; /* v1 grows and reuses its own buffer */
	ret = vm_fmt_data_window(&m->w, m->scratch_len, &win, &body);
	if (ret == 0)
		return 1;
	if (ret < 0) {
		*n = ret;
		return 0;
	}
	m->scratch = body;
	*n = m->proto->save_chunk(m, &p);
	m->scratch = own;
	if (*n <= 0)
		return 0;
	if (p != body)
		memcpy(body, p, (size_t)*n);
	ret = vm_fmt_commit_data(&m->w, win, (size_t)*n);
	if (ret)
		*n = ret;
	return 0;
}

/*
 * Write device chunks into the open phase until the device has none, the
 * budget is spent or the deadline (monotonic ns, 0: none) has passed.
 */
static int move_chunks(struct vfiomig_mig *m, uint64_t budget, uint64_t deadline,
		       uint64_t *moved)
{
	*moved = 0;
	for (;;) {
		const void *p = NULL;
		ssize_t n;
		int ret;

		if (budget && *moved >= budget)
			return 1;
		if (vm_mig_set_aborted(m))
			return set_aborted(m);
		if (deadline && *moved && vm_now_ns() >= deadline)
			return 1; /* at least one chunk per round: progress is guaranteed */
		ret = 0;
		if (save_chunk_direct(m, &n)) {
			n = m->proto->save_chunk(m, &p);
			if (n > 0)
				ret = vm_fmt_write_data(&m->w, p, (size_t)n);
		}
		if (n < 0)
			return (int)n;
		if (n == 0)
			return 0;
		if (ret)
			return ret;
		*moved += (uint64_t)n;
	}
}

/*
 * A pipelined stop-copy (v2, in a parallel set run with threads to spare):
 * a reader thread reads the data_fd into a ring of chunk buffers while
 * this thread writes them into the stream, so the device's copy-out and
 * the stream's CRC and write overlap. The bytes, records and failure
 * rules are those of move_chunks().
 */
#define PIPE_SLOTS 4

struct chunk_pipe {
	struct vfiomig_mig *m;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct {
		void *buf;
		ssize_t len;  /* > 0 bytes, 0 the end, < 0 the reader's error */
		bool full;
	} slot[PIPE_SLOTS];
	bool stop;            /* the writer gave up: the reader ends */
	int *err_flag;
	char why[256];        /* the reader's ERR line, the failure's reason */
};

static void *pipe_reader(void *arg)
{
	struct chunk_pipe *cp = arg;
	struct vfiomig_mig *m = cp->m;
	VM_API(m->ctx);

	vm_tls_share_err_flag(cp->err_flag);
	for (unsigned int i = 0;; i = (i + 1) % PIPE_SLOTS) {
		const void *p = NULL;
		ssize_t n;

		pthread_mutex_lock(&cp->lock);
		while (cp->slot[i].full && !cp->stop)
			pthread_cond_wait(&cp->cond, &cp->lock);
		if (cp->stop) {
			pthread_mutex_unlock(&cp->lock);
			return NULL;
		}
		pthread_mutex_unlock(&cp->lock);
		m->scratch = cp->slot[i].buf; /* only this thread reads the device now */
		n = m->proto->save_chunk(m, &p);
		if (n > 0 && p != cp->slot[i].buf)
			memcpy(cp->slot[i].buf, p, (size_t)n);
		if (n < 0)
			snprintf(cp->why, sizeof(cp->why), "%s", vm_last_err());
		pthread_mutex_lock(&cp->lock);
		cp->slot[i].len = n;
		cp->slot[i].full = true;
		pthread_cond_broadcast(&cp->cond);
		pthread_mutex_unlock(&cp->lock);
		if (n <= 0)
			return NULL;
	}
}

/*
 * Returns 0 when the device had no more, -errno (with the reason in this
 * thread's last line), or 1 when no reader could be started (no thread,
 * no memory for the ring): the caller then moves the chunks itself.
 */
static int move_chunks_pipelined(struct vfiomig_mig *m, uint64_t *moved)
{
	struct chunk_pipe cp = { .m = m, .err_flag = vm_tls_err_flag() };
	void *own = m->scratch;
	sigset_t all, old;
	pthread_t th;
	int ret = 0, err;
	unsigned int i;

	*moved = 0;
	for (i = 0; i < PIPE_SLOTS; i++) {
		cp.slot[i].buf = malloc(m->scratch_len);
		if (!cp.slot[i].buf) {
			while (i--)
				free(cp.slot[i].buf);
			return 1; /* no memory for the ring: the caller moves the chunks itself */
		}
	}
	pthread_mutex_init(&cp.lock, NULL);
	pthread_cond_init(&cp.cond, NULL);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	err = pthread_create(&th, NULL, pipe_reader, &cp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err)
		goto out;
	vm_dbg(m->ctx, "device %s: stop-copy pipelined: a reader thread for the data_fd",
	       m->dev->name);
	for (i = 0;; i = (i + 1) % PIPE_SLOTS) {
		ssize_t n;

		pthread_mutex_lock(&cp.lock);
		while (!cp.slot[i].full)
			pthread_cond_wait(&cp.cond, &cp.lock);
		n = cp.slot[i].len;
		pthread_mutex_unlock(&cp.lock);
		if (n < 0) {
			/* The reader's line was the ERR line; its text is the failure's reason. */
			snprintf(vm_tls.err_msg, sizeof(vm_tls.err_msg), "%s", cp.why);
			ret = (int)n;
			break;
		}
		if (n == 0)
			break;
		if (vm_mig_set_aborted(m)) {
			ret = set_aborted(m);
			break;
		}
		ret = vm_fmt_write_data(&m->w, cp.slot[i].buf, (size_t)n);
		if (ret)
			break;
		*moved += (uint64_t)n;
		pthread_mutex_lock(&cp.lock);
		cp.slot[i].full = false;
		pthread_cond_broadcast(&cp.cond);
		pthread_mutex_unlock(&cp.lock);
	}
	pthread_mutex_lock(&cp.lock);
	cp.stop = true;
	pthread_cond_broadcast(&cp.cond);
	pthread_mutex_unlock(&cp.lock);
	pthread_join(th, NULL);
out:
	m->scratch = own;
	pthread_cond_destroy(&cp.cond);
	pthread_mutex_destroy(&cp.lock);
	for (i = 0; i < PIPE_SLOTS; i++)
		free(cp.slot[i].buf);
	if (err)
		return 1; /* no thread: the caller moves the chunks itself */
	return ret;
}

int vfiomig_mig_save_iterate(struct vfiomig_mig *m, struct vfiomig_stream *out, uint64_t budget)
{
	VM_API(m ? m->ctx : NULL);
	uint64_t moved = 0, initial, dirty, t0;
	int more = 0, ret;

	ret = check_save(m, out, "save_iterate");
	if (ret)
		return ret;
	ret = vm_fmt_begin_phase(&m->w, VM_FMT_PHASE_PRECOPY);
	if (ret)
		return fail_save(m, ret, NULL);
	if (m->precopy && is_precopy(m->state)) {
		uint64_t limit = budget;

		/*
		 * Without a budget a round takes what the device reports pending
		 * when it starts: a device that keeps dirtying would otherwise
		 * keep one round going forever.
		 */
		if (!limit) {
			ret = m->proto->precopy_info(m, &initial, &dirty);
			if (ret)
				return fail_save(m, ret, NULL);
			limit = initial + dirty;
			if (limit < initial || !limit)
				limit = initial ? UINT64_MAX : m->chunk_size;
		}
		t0 = vm_now_ns();
		more = move_chunks(m, limit, m->round_ns ? t0 + m->round_ns : 0, &moved);
		if (more < 0)
			return fail_save(m, more, NULL);
		if (moved) {
			m->bw_bytes += moved;
			m->bw_ns += vm_now_ns() - t0;
		}
		if (more == 1) {
			/* The limit was reached: ask whether anything really remains. */
			ret = m->proto->precopy_info(m, &initial, &dirty);
			if (ret)
				return fail_save(m, ret, NULL);
			more = initial || dirty;
		}
		if (!m->init_sent) {
			ret = m->proto->precopy_info(m, &initial, &dirty);
			if (ret)
				return fail_save(m, ret, NULL);
			if (initial == 0) {
				ret = vm_fmt_write_init_data_sent(&m->w);
				if (ret)
					return fail_save(m, ret, NULL);
				m->init_sent = true;
			}
		}
	}
	ret = vm_fmt_end_phase(&m->w);
	if (!ret)
		ret = vfiomig_stream_flush(out);
	if (ret)
		return fail_save(m, ret, NULL);
	m->stats.precopy_rounds++;
	m->stats.precopy_bytes += moved;
	m->stats.device_bytes += moved;
	m->stats.bytes = m->w.offset;
	return more;
}

int vfiomig_mig_initial_data_sent(const struct vfiomig_mig *m)
{
	return m ? m->init_sent : -EINVAL;
}

static int enter_stopcopy(struct vfiomig_mig *m)
{
	int ret;

	if (m->state == VFIOMIG_DEVICE_STATE_STOP_COPY)
		return 0;
	ret = m->proto->set_state(m, VFIOMIG_DEVICE_STATE_STOP_COPY);
	if (ret)
		return ret;
	m->stopcopy_start_ns = vm_now_ns();
	return 0;
}

static int save_complete(struct vfiomig_mig *m, struct vfiomig_stream *out);

int vfiomig_mig_save_complete(struct vfiomig_mig *m, struct vfiomig_stream *out)
{
	VM_API(m ? m->ctx : NULL);
	int ret;

	ret = check_save(m, out, "save_complete");
	if (ret)
		return ret;
	return save_complete(m, out);
}

static int save_complete(struct vfiomig_mig *m, struct vfiomig_stream *out)
{
	uint64_t moved = 0;
	int ret;

	m->vm_running = false; /* stop-and-copy means the VM is stopped */
	ret = enter_stopcopy(m);
	if (!ret)
		ret = vm_fmt_begin_phase(&m->w, VM_FMT_PHASE_STOPCOPY);
	/* A memory stream takes the device's bytes in place: nothing to overlap. */
	if (!ret && m->pipeline && m->proto == &vm_proto_v2 && !vm_stream_lends(out)) {
		ret = move_chunks_pipelined(m, &moved);
		if (ret == 1) /* no reader thread: done here */
			ret = move_chunks(m, 0, 0, &moved);
	} else if (!ret) {
		ret = move_chunks(m, 0, 0, &moved);
	}
	if (!ret && m->config_save) {
		const void *cfg = NULL;
		size_t len = 0;

		ret = m->config_save(m->config_user, &cfg, &len);
		if (ret)
			vm_err(m->ctx, ret, "device %s: the VMM's config_save callback",
			       m->dev->name);
		else if (len && !cfg)
			ret = vm_err(m->ctx, -EINVAL, "device %s: config_save gave %zu bytes at NULL",
				     m->dev->name, len);
		else
			ret = vm_fmt_write_config(&m->w, cfg, len);
	}
	if (!ret)
		ret = vm_fmt_end_phase(&m->w);
	if (!ret)
		ret = vm_fmt_write_trailer(&m->w);
	if (!ret)
		ret = vfiomig_stream_flush(out);
	if (ret)
		return fail_save(m, ret, NULL);
	ret = m->proto->set_state(m, VFIOMIG_DEVICE_STATE_STOP);
	if (ret)
		return fail_save(m, ret, NULL);
	m->complete = true;
	m->stats.stopcopy_bytes += moved;
	m->stats.device_bytes += moved;
	m->stats.bytes = m->w.offset;
	m->stats.stopcopy_ns = vm_now_ns() - m->stopcopy_start_ns;
	vm_info(m->ctx, "device %s: save complete: %llu stream bytes, %llu pre-copy rounds, "
		"%llu stop-copy bytes in %llu us", m->dev->name,
		(unsigned long long)m->stats.bytes, (unsigned long long)m->stats.precopy_rounds,
		(unsigned long long)m->stats.stopcopy_bytes,
		(unsigned long long)(m->stats.stopcopy_ns / 1000));
	return 0;
}

/* --------------------------------------------------------------- load */

static int load_phase(struct vfiomig_mig *m);

/*
 * The stream was refused before the device was touched: nothing to reset,
 * but the load has failed (the return path says so, the VM may not run).
 */
static int refuse_setup(struct vfiomig_mig *m, int err)
{
	m->setup_done = true;
	note_failure(m, err, NULL);
	return err;
}

int vfiomig_mig_load_setup(struct vfiomig_mig *m, struct vfiomig_stream *in)
{
	VM_API(m ? m->ctx : NULL);
	struct vm_fmt_identity mine;
	struct vm_fmt_header h;
	const struct vm_proto *want;
	char what[160];
	int ret;

	if (!m)
		return -EINVAL;
	if (!in)
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_LOAD || m->setup_done || m->failed)
		return vm_err(m->ctx, -EINVAL, "device %s: load setup twice, on a save or after a "
			      "failure", m->dev->name);
	vm_fmt_reader_init(&m->r, vm_stream_get(in)); /* held until vfiomig_mig_free() */
	m->r.max_record = m->max_record;
	ret = vm_fmt_read_header(&m->r, &h);
	if (ret)
		return refuse_setup(m, vm_err(m->ctx, ret, "device %s: the stream header was "
					      "refused", m->dev->name));
	ret = device_identity(m, &mine);
	if (ret)
		return refuse_setup(m, ret);
	snprintf(what, sizeof(what), "device %s", m->dev->name);
	ret = vm_fmt_identity_check(m->ctx, what, &h.id, &mine);
	if (ret)
		return refuse_setup(m, ret);

	want = h.protocol == VM_FMT_PROTO_V1 ? &vm_proto_v1 : &vm_proto_v2;
	if (want != m->proto) {
		const struct vm_proto *old = m->proto;

		if (want == &vm_proto_v1 && !(m->flags & VFIOMIG_MIG_F_ALLOW_V1))
			return refuse_setup(m, vm_err(m->ctx, -EOPNOTSUPP, "device %s: the stream "
						      "uses the experimental v1 protocol; the VMM "
						      "must opt in with VFIOMIG_MIG_F_ALLOW_V1",
						      m->dev->name));
		old->fini(m);
		m->proto = want;
		ret = want->init(m);
		if (ret) {
			want->fini(m);
			m->proto = old;
			if (old->init(m) == 0)
				return refuse_setup(m, vm_err(m->ctx, -EPROTO, "device %s: the "
							      "stream uses protocol %s, which the "
							      "device does not offer",
							      m->dev->name, want->name));
			return refuse_setup(m, ret);
		}
		m->stats.protocol = want->id;
	}
	if (m->state != VFIOMIG_DEVICE_STATE_RUNNING && m->state != VFIOMIG_DEVICE_STATE_STOP &&
	    m->state != VFIOMIG_DEVICE_STATE_RUNNING_P2P)
		return refuse_setup(m, vm_err(m->ctx, -EBUSY, "device %s: load setup with the "
					      "device in %s", m->dev->name,
					      vm_dev_state_name(m->state)));
	ret = m->proto->set_state(m, VFIOMIG_DEVICE_STATE_RESUMING);
	m->setup_done = true;
	if (ret)
		return fail_load(m, ret, NULL);
	m->vm_running = false;
	/* The setup phase travels with the header: take it now. */
	ret = load_phase(m);
	if (ret < 0)
		return ret;
	if (ret == 0 || m->r.phase != VM_FMT_PHASE_SETUP)
		return fail_load(m, vm_err(m->ctx, -EBADMSG, "device %s: the stream does not "
					   "start with a setup phase", m->dev->name), NULL);
	return 0;
}

/*
 * The VMM's config record, staged (not handed over) until the trailer has
 * verified the whole stream. The buffer grows as the bytes arrive, so a
 * record that claims more than the stream holds costs no more memory than
 * the bytes actually sent.
 */
#define CONFIG_PIECE (64u << 10)

static int stage_config(struct vfiomig_mig *m, uint64_t size)
{
	while (size) {
		size_t piece = size < CONFIG_PIECE ? (size_t)size : CONFIG_PIECE;
		unsigned char *p = realloc(m->cfg, m->cfg_len + piece);
		int ret;

		if (!p)
			return vm_enomem(m->ctx, "the VMM config record");
		m->cfg = p;
		ret = vm_fmt_read_body(&m->r, m->cfg + m->cfg_len, piece);
		if (ret)
			return ret;
		m->cfg_len += piece;
		size -= piece;
	}
	m->cfg_seen = true;
	return 0;
}

/* The trailer verified the stream: hand the VMM its config, then leave RESUMING. */
static int finish_load(struct vfiomig_mig *m)
{
	int ret;

	if (m->config_load && !m->cfg_seen)
		return vm_err(m->ctx, -EBADMSG, "device %s: the stream carries no VMM config record, "
			      "but this destination expects one (config_load is set)",
			      m->dev->name);
	if (m->cfg_seen && m->config_load) {
		ret = m->config_load(m->config_user, m->cfg, m->cfg_len);
		if (ret)
			return vm_err(m->ctx, ret < 0 ? ret : -EINVAL,
				      "device %s: the VMM's config_load callback refused the config "
				      "(%zu bytes)", m->dev->name, m->cfg_len);
	} else if (m->cfg_seen) {
		vm_warn(m->ctx, "device %s: the stream carries %zu bytes of VMM config but no "
			"config_load hook is set", m->dev->name, m->cfg_len);
	}
	free(m->cfg);
	m->cfg = NULL;
	ret = m->proto->set_state(m, VFIOMIG_DEVICE_STATE_STOP);
	if (ret)
		return ret;
	m->complete = true;
	m->stats.bytes = m->r.offset;
	vm_info(m->ctx, "device %s: load complete and verified: %llu stream bytes", m->dev->name,
		(unsigned long long)m->stats.bytes);
	return 0;
}

/* Records up to the end of one phase: 1 after a phase that is not the last, 0 at the trailer. */
static int load_phase(struct vfiomig_mig *m)
{
	struct vm_fmt_record rec;
	int ret;

	for (;;) {
		if (vm_mig_set_aborted(m))
			return fail_load(m, set_aborted(m), NULL);
		ret = vm_fmt_next(&m->r, &rec);
		if (ret)
			return fail_load(m, vm_err(m->ctx, ret, "device %s: loading the stream",
						   m->dev->name), NULL);
		switch (rec.type) {
		case VM_FMT_REC_PHASE:
		case VM_FMT_REC_OPTIONAL: /* skipped by the next vm_fmt_next() */
			break;
		case VM_FMT_REC_DATA:
			ret = m->proto->load_chunk(m, rec.size);
			if (ret)
				return fail_load(m, ret, NULL);
			m->stats.device_bytes += rec.size;
			if (rec.phase == VM_FMT_PHASE_STOPCOPY)
				m->stats.stopcopy_bytes += rec.size;
			else
				m->stats.precopy_bytes += rec.size;
			break;
		case VM_FMT_REC_CONFIG:
			ret = stage_config(m, rec.size);
			if (ret)
				return fail_load(m, ret, NULL);
			break;
		case VM_FMT_REC_INIT_DATA_SENT:
			m->init_sent = true; /* everything before it is loaded: switchover-ack due */
			break;
		case VM_FMT_REC_END:
			if (rec.phase == VM_FMT_PHASE_PRECOPY)
				m->stats.precopy_rounds++;
			m->stats.bytes = m->r.offset;
			/* After stop-and-copy only the trailer remains: read it in this call. */
			if (rec.phase != VM_FMT_PHASE_STOPCOPY)
				return 1;
			break;
		case VM_FMT_REC_CANCEL:
			m->stats.bytes = m->r.offset;
			vm_mig_peer_failed(m, m->r.cancel_err, m->r.cancel_reason);
			ret = vm_err(m->ctx, -ECANCELED, "device %s: the source cancelled the migration "
				     "(%s)%s%s", m->dev->name, vfiomig_strerror(m->r.cancel_err),
				     m->r.cancel_reason[0] ? ": " : "", m->r.cancel_reason);
			return fail_load(m, ret, NULL);
		case VM_FMT_REC_TRAILER:
			ret = finish_load(m);
			return ret ? fail_load(m, ret, NULL) : 0;
		}
	}
}

int vfiomig_mig_load(struct vfiomig_mig *m, struct vfiomig_stream *in)
{
	VM_API(m ? m->ctx : NULL);
	if (!m)
		return -EINVAL;
	if (!in)
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_LOAD || !m->setup_done || m->complete || m->failed ||
	    m->r.s != in)
		return vm_err(m->ctx, -EINVAL, "device %s: load without a successful setup on this "
			      "stream, or after completion/failure", m->dev->name);
	return load_phase(m);
}

/* ------------------------------------------------------------ hooks */

static int follow_vm(struct vfiomig_mig *m)
{
	return m->proto->set_state(m, m->vm_running ? VFIOMIG_DEVICE_STATE_RUNNING : VFIOMIG_DEVICE_STATE_STOP);
}

int vfiomig_mig_vm_state(struct vfiomig_mig *m, uint32_t state)
{
	VM_API(m ? m->ctx : NULL);
	int ret;

	if (!m)
		return -EINVAL;
	if (state != VFIOMIG_VM_RUNNING && state != VFIOMIG_VM_STOPPED)
		return vm_err(m->ctx, -EINVAL, "device %s: VM state %u", m->dev->name, state);
	if (m->role == VFIOMIG_ROLE_LOAD && state == VFIOMIG_VM_RUNNING) {
		if (load_active(m))
			return vm_err(m->ctx, -EBUSY, "device %s: the VM cannot run while the device "
				      "is still loading its state", m->dev->name);
		if (m->failed)
			return vm_err(m->ctx, -ECANCELED, "device %s: the load failed: the device "
				      "holds no migrated state and must not run in this VM "
				      "(vfiomig_mig_failure() says why)", m->dev->name);
		if (!m->complete)
			return vm_err(m->ctx, -EINVAL, "device %s: the VM cannot run: nothing has "
				      "been loaded yet", m->dev->name);
	}
	if (load_active(m))
		return 0; /* STOPPED while loading: the device is not running anyway */
	if (m->failed && m->state == VFIOMIG_DEVICE_STATE_ERROR)
		return vm_err(m->ctx, -EIO, "device %s: device is in ERROR", m->dev->name);
	m->vm_running = state == VFIOMIG_VM_RUNNING;
	if (save_active(m)) {
		if (m->vm_running) {
			/* The VM resumed mid-save: this migration cannot go on. */
			vm_warn(m->ctx, "device %s: the VM resumed during the save: migration "
				"cancelled", m->dev->name);
			fail_save(m, -ECANCELED, "the source VM resumed during the save");
			if (m->state != VFIOMIG_DEVICE_STATE_RUNNING)
				return vm_err(m->ctx, -EIO, "device %s: could not resume the source "
					      "device (it is in %s)", m->dev->name,
					      vm_dev_state_name(m->state));
			return 0;
		}
		ret = enter_stopcopy(m);
		return ret ? fail_save(m, ret, NULL) : 0;
	}
	if (m->role == VFIOMIG_ROLE_SAVE && m->complete && m->vm_running) {
		/*
		 * The source VM resumes after its device state left (the destination
		 * failed after switchover): the device still holds that state and
		 * resumes with it. The migration is over, unsuccessfully.
		 */
		m->complete = false;
		m->resumed = true;
		note_failure(m, -ECANCELED, "the source VM resumed after the save completed");
		vm_info(m->ctx, "device %s: the source VM resumed after the save completed: device "
			"back to RUNNING", m->dev->name);
	}
	return follow_vm(m);
}

int vfiomig_mig_cancel(struct vfiomig_mig *m, int error, const char *reason)
{
	VM_API(m ? m->ctx : NULL);
	char why[256];

	if (!m)
		return -EINVAL;
	if (error >= 0 || error < -4095)
		return vm_err(m->ctx, -EINVAL, "device %s: cancel with error %d (a negative errno)",
			      m->dev->name, error);
	snprintf(why, sizeof(why), "%s", reason && reason[0] ? reason : "cancelled by the VMM");
	if (save_active(m))
		fail_save(m, error, why);
	else if (load_active(m) || load_unstarted(m))
		fail_load(m, error, why);
	else if (!m->failed && !m->complete)
		note_failure(m, error, why); /* not begun: nothing to put back */
	return 0;
}

int vfiomig_mig_switchover_ready(const struct vfiomig_mig *m)
{
	if (!m || m->role != VFIOMIG_ROLE_SAVE)
		return -EINVAL;
	if (m->failed)
		return -ECANCELED;
	/* Without pre-copy there is no initial data for the destination to acknowledge. */
	return m->init_sent && (!(m->flags & VFIOMIG_MIG_F_SWITCHOVER_ACK) || m->acked ||
				!m->precopy);
}

int vfiomig_mig_event(struct vfiomig_mig *m, uint32_t event)
{
	VM_API(m ? m->ctx : NULL);
	if (!m)
		return -EINVAL;
	switch (event) {
	case VFIOMIG_EVENT_SETUP:
	case VFIOMIG_EVENT_ACTIVE:
		vm_dbg(m->ctx, "device %s: migration event %u", m->dev->name, event);
		return 0;
	case VFIOMIG_EVENT_COMPLETED:
		if (m->failed)
			return vm_err(m->ctx, -ECANCELED, "device %s: COMPLETED, but the migration "
				      "failed: %s", m->dev->name, m->fail_reason);
		if (!m->complete)
			return vm_err(m->ctx, -EINVAL, "device %s: COMPLETED before the %s completed",
				      m->dev->name, m->role == VFIOMIG_ROLE_SAVE ? "save" : "load");
		if (m->role == VFIOMIG_ROLE_SAVE && m->dest_failed)
			return vm_err(m->ctx, -ECANCELED, "device %s: COMPLETED, but the destination "
				      "reported a failure", m->dev->name);
		return 0;
	case VFIOMIG_EVENT_FAILED:
	case VFIOMIG_EVENT_CANCELLED: {
		const char *why = event == VFIOMIG_EVENT_FAILED ? "the VMM reported the migration "
								  "failed" :
								  "cancelled by the VMM";

		if (save_active(m))
			fail_save(m, -ECANCELED, why);
		else if (load_active(m) || load_unstarted(m))
			fail_load(m, -ECANCELED, why);
		else if (m->role == VFIOMIG_ROLE_SAVE && m->complete) {
			/* After our stop-copy: the device follows the VM (vm_state RUNNING resumes it). */
			m->complete = false;
			note_failure(m, -ECANCELED, why);
			return follow_vm(m);
		}
		return 0;
	}
	default:
		return vm_err(m->ctx, -EINVAL, "device %s: migration event %u", m->dev->name, event);
	}
}

int vfiomig_mig_get_stats(const struct vfiomig_mig *m, struct vfiomig_mig_stats *st)
{
	VM_API(m ? m->ctx : NULL);
	struct vfiomig_mig_stats out;

	if (!m)
		return -EINVAL;
	if (!st || st->sz < sizeof(size_t))
		return vm_arg_err(m->ctx, __func__);
	out = m->stats;
	out.device_state = m->state;
	vm_out_copy(st, &out, sizeof(out));
	return 0;
}

/* ----------------------------------------------------------- sets */

int vfiomig_mig_set_new(struct vfiomig_ctx *ctx, struct vfiomig_mig_set **out)
{
	struct vfiomig_mig_set *set;

	if (!out)
		return vm_err(ctx, -EINVAL, "vfiomig_mig_set_new: out is NULL");
	*out = NULL;
	if (!ctx)
		return -EINVAL;
	VM_API(ctx);
	set = calloc(1, sizeof(*set));
	if (!set)
		return vm_enomem(ctx, "device set");
	set->ctx = vfiomig_ctx_ref(ctx);
	*out = set;
	return 0;
}

void vfiomig_mig_set_free(struct vfiomig_mig_set *set)
{
	if (!set)
		return;
	for (size_t i = 0; i < set->n; i++)
		set->members[i]->set = NULL;
	vfiomig_ctx_unref(set->ctx);
	free(set->members);
	free(set);
}

int vfiomig_mig_set_add(struct vfiomig_mig_set *set, struct vfiomig_mig *m)
{
	if (!set)
		return -EINVAL;
	if (!m)
		return vm_arg_err(set->ctx, __func__);
	VM_API(set->ctx);
	if (m->ctx != set->ctx)
		return vm_err(set->ctx, -EINVAL, "device %s: its migration belongs to another "
			      "context than the set", m->dev->name);
	if (set->n && set->members[0]->role != m->role)
		return vm_err(set->ctx, -EINVAL, "device %s: a set holds saves or loads, not both",
			      m->dev->name);
	if (m->set == set)
		return vm_err(set->ctx, -EEXIST, "device %s: already in the set", m->dev->name);
	if (m->set)
		return vm_err(set->ctx, -EBUSY, "device %s: its migration is in another set",
			      m->dev->name);
	for (size_t i = 0; i < set->n; i++)
		if (set->members[i]->dev == m->dev)
			return vm_err(set->ctx, -EEXIST, "device %s: the set already migrates it",
				      m->dev->name);
	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 4;
		void *p = realloc(set->members, cap * sizeof(*set->members));

		if (!p)
			return vm_enomem(set->ctx, "device set member list");
		set->members = p;
		set->cap = cap;
	}
	set->members[set->n++] = m;
	m->set = set;
	return 0;
}

int vfiomig_mig_set_remove(struct vfiomig_mig_set *set, struct vfiomig_mig *m)
{
	if (!set)
		return -EINVAL;
	if (!m)
		return vm_arg_err(set->ctx, __func__);
	VM_API(set->ctx);
	for (size_t i = 0; i < set->n; i++) {
		if (set->members[i] != m)
			continue;
		memmove(&set->members[i], &set->members[i + 1],
			(set->n - i - 1) * sizeof(*set->members));
		set->n--;
		m->set = NULL;
		return 0;
	}
	return vm_err(set->ctx, -ENOENT, "device %s: not a member of the set", m->dev->name);
}

int vfiomig_mig_set_check(struct vfiomig_mig_set *set, char *reason, size_t len)
{
	VM_API(set ? set->ctx : NULL);
	char names[256] = "";
	size_t without = 0;

	if (!set)
		return -EINVAL;
	if ((len && !reason))
		return vm_arg_err(set->ctx, __func__);
	if (len)
		reason[0] = '\0';
	for (size_t i = 0; i < set->n; i++) {
		struct vfiomig_mig *m = set->members[i];

		if (m->failed) {
			if (len)
				snprintf(reason, len, "device %s: its migration has failed",
					 m->dev->name);
			return -EOPNOTSUPP;
		}
		if (!has_p2p(m)) {
			size_t used = strlen(names);

			snprintf(names + used, sizeof(names) - used, "%s%s", without ? ", " : "",
				 m->dev->name);
			without++;
		}
	}
	if (without > 1) {
		if (len)
			snprintf(reason, len, "%zu devices lack the P2P migration states (%s): they "
				 "cannot all be quiesced before one of them is stopped", without,
				 names);
		return -EOPNOTSUPP;
	}
	return 0;
}

/* The P2P twin a member passes through on the way to `vm` (or its current state). */
static uint32_t quiesced(const struct vfiomig_mig *m)
{
	switch (m->state) {
	case VFIOMIG_DEVICE_STATE_RUNNING: return VFIOMIG_DEVICE_STATE_RUNNING_P2P;
	case VFIOMIG_DEVICE_STATE_PRE_COPY: return VFIOMIG_DEVICE_STATE_PRE_COPY_P2P;
	case VFIOMIG_DEVICE_STATE_STOP: return VFIOMIG_DEVICE_STATE_RUNNING_P2P;
	default: return m->state;
	}
}

/*
 * Step 1 of a VM state change: every P2P-capable member to its P2P state
 * before any member goes further. On a failure the members already moved
 * are put back and the error is returned.
 */
static int set_quiesce(struct vfiomig_mig_set *set, uint32_t state)
{
	size_t i, moved = 0;
	int ret = 0;

	for (i = 0; i < set->n; i++) {
		struct vfiomig_mig *m = set->members[i];
		uint32_t target;

		if (!has_p2p(m) || m->failed || (m->role == VFIOMIG_ROLE_LOAD && !m->complete &&
						  m->setup_done))
			continue;
		if (state == VFIOMIG_VM_STOPPED &&
		    m->state != VFIOMIG_DEVICE_STATE_RUNNING && m->state != VFIOMIG_DEVICE_STATE_PRE_COPY)
			continue;
		if (state == VFIOMIG_VM_RUNNING && m->state != VFIOMIG_DEVICE_STATE_STOP)
			continue;
		target = quiesced(m);
		ret = m->proto->set_state(m, target);
		if (ret)
			break;
		moved = i + 1;
	}
	if (ret) {
		/* Undo: members already quiesced go back to where they were. */
		for (size_t j = 0; j < moved; j++) {
			struct vfiomig_mig *m = set->members[j];

			if (m->state == VFIOMIG_DEVICE_STATE_RUNNING_P2P && state == VFIOMIG_VM_STOPPED)
				m->proto->set_state(m, VFIOMIG_DEVICE_STATE_RUNNING);
			else if (m->state == VFIOMIG_DEVICE_STATE_PRE_COPY_P2P)
				m->proto->set_state(m, VFIOMIG_DEVICE_STATE_PRE_COPY);
			else if (m->state == VFIOMIG_DEVICE_STATE_RUNNING_P2P)
				m->proto->set_state(m, VFIOMIG_DEVICE_STATE_STOP);
		}
	}
	return ret;
}

int vfiomig_mig_set_vm_state(struct vfiomig_mig_set *set, uint32_t state)
{
	VM_API(set ? set->ctx : NULL);
	size_t i;
	int ret = 0, first = 0;

	if (!set)
		return -EINVAL;
	if (state != VFIOMIG_VM_RUNNING && state != VFIOMIG_VM_STOPPED)
		return vm_err(set->ctx, -EINVAL, "device set: VM state %u", state);
	/* A VM whose migration failed on one device must not run on the destination at all. */
	for (i = 0; state == VFIOMIG_VM_RUNNING && i < set->n; i++) {
		struct vfiomig_mig *m = set->members[i];

		if (m->role == VFIOMIG_ROLE_LOAD && (m->failed || !m->complete))
			return vm_err(set->ctx, -ECANCELED, "device set: the VM cannot run here: "
				      "device %s %s", m->dev->name,
				      m->failed ? m->fail_reason : "has not loaded its state");
	}
	ret = set_quiesce(set, state);
	if (ret)
		return ret;
	/* Step 2: each member to where the VM state takes it. */
	for (i = 0; i < set->n; i++) {
		ret = vfiomig_mig_vm_state(set->members[i], state);
		if (ret && !first)
			first = ret;
	}
	return first;
}

int vfiomig_mig_set_event(struct vfiomig_mig_set *set, uint32_t event)
{
	VM_API(set ? set->ctx : NULL);
	int first = 0;

	if (!set)
		return -EINVAL;
	for (size_t i = 0; i < set->n; i++) {
		int ret = vfiomig_mig_event(set->members[i], event);

		if (ret && !first)
			first = ret;
	}
	return first;
}

int vfiomig_mig_set_get_stats(const struct vfiomig_mig_set *set, struct vfiomig_mig_stats *st)
{
	VM_API(set ? set->ctx : NULL);
	struct vfiomig_mig_stats sum = { .sz = sizeof(sum) };

	if (!set)
		return -EINVAL;
	if (!st || st->sz < sizeof(size_t))
		return vm_arg_err(set->ctx, __func__);
	for (size_t i = 0; i < set->n; i++) {
		const struct vfiomig_mig_stats *s = &set->members[i]->stats;

		sum.bytes += s->bytes;
		sum.device_bytes += s->device_bytes;
		sum.precopy_rounds += s->precopy_rounds;
		sum.precopy_bytes += s->precopy_bytes;
		sum.stopcopy_bytes += s->stopcopy_bytes;
		if (s->stopcopy_ns > sum.stopcopy_ns)
			sum.stopcopy_ns = s->stopcopy_ns; /* devices stop-copy in one VM pause */
	}
	vm_out_copy(st, &sum, sizeof(sum));
	return 0;
}

static struct vfiomig_stream *member_stream(const struct vfiomig_mig *m)
{
	return m->role == VFIOMIG_ROLE_SAVE ? m->w.s : m->r.s;
}

/* The first member (in set order) on the same stream as member i: i itself, or one before it. */
static size_t first_on_stream(const struct vfiomig_mig_set *set, size_t i)
{
	for (size_t k = 0; k < i; k++)
		if (member_stream(set->members[k]) == member_stream(set->members[i]))
			return k;
	return i;
}

/* ------------------------------------------------- set stop advice */

int vfiomig_mig_set_stop_advice(struct vfiomig_mig_set *set, uint32_t downtime_limit_ms,
				uint64_t *downtime_ns)
{
	VM_API(set ? set->ctx : NULL);
	uint64_t *ns = NULL, *per_stream = NULL, worst = 0;
	bool wait = false, unknown = false, all_may_stop = true, any_stalled = false,
	     all_no_precopy = true;
	int ret = 0;

	if (downtime_ns)
		*downtime_ns = 0;
	if (!set)
		return -EINVAL;
	for (size_t i = 0; i < set->n; i++)
		if (!save_active(set->members[i]))
			return vm_err(set->ctx, set->members[i]->failed ? -ECANCELED : -EINVAL,
				      "device set: stop advice: device %s has no save running",
				      set->members[i]->dev->name);
	ns = calloc(set->n + 1, sizeof(*ns));
	per_stream = calloc(set->n + 1, sizeof(*per_stream));
	if (!ns || !per_stream) {
		ret = vm_enomem(set->ctx, "device set: stop advice");
		goto out;
	}
	for (size_t i = 0; i < set->n; i++) {
		struct vfiomig_mig *m = set->members[i];
		int a = advice(m, downtime_limit_ms, &ns[i]);

		if (a < 0) {
			ret = a;
			goto out;
		}
		wait |= a == VFIOMIG_ADVICE_WAIT_ACK;
		any_stalled |= a == VFIOMIG_ADVICE_STALLED;
		all_no_precopy &= a == VFIOMIG_ADVICE_NO_PRECOPY;
		all_may_stop &= a != VFIOMIG_ADVICE_CONTINUE && a != VFIOMIG_ADVICE_WAIT_ACK;
		unknown |= m->precopy && (!ns[i] || !m->init_sent);
	}
	/* Members of one stream add up; streams run side by side: the longest is the downtime. */
	for (size_t i = 0; i < set->n; i++) {
		size_t first = first_on_stream(set, i);

		per_stream[first] += ns[i];
		if (per_stream[first] > worst)
			worst = per_stream[first];
	}
	if (downtime_ns)
		*downtime_ns = worst;
	if (wait)
		ret = VFIOMIG_ADVICE_WAIT_ACK;
	else if (all_no_precopy)
		ret = VFIOMIG_ADVICE_NO_PRECOPY;
	else if (!unknown && worst <= (uint64_t)downtime_limit_ms * 1000000u)
		ret = VFIOMIG_ADVICE_FITS;
	else if (all_may_stop && any_stalled)
		ret = VFIOMIG_ADVICE_STALLED;
	else
		ret = VFIOMIG_ADVICE_CONTINUE;
out:
	free(ns);
	free(per_stream);
	return ret;
}

/* ------------------------------------------------- parallel set runs */

/* The members of a set that share one stream: one worker moves them in turn. */
struct set_job {
	size_t first, n;         /* a range of set_run.order */
};

struct set_run {
	struct vfiomig_mig_set *set;
	bool load;
	size_t *order;           /* member indexes, grouped by stream, set order within */
	struct set_job *jobs;
	size_t njobs;
	size_t next;             /* atomic: the next job to take */
	int *err_flag;           /* the caller's "ERR line went out" */
	int *ret;                /* per member: its result */
};

static int run_member(struct set_run *run, struct vfiomig_mig *m)
{
	int ret;

	if (vm_mig_set_aborted(m))
		return run->load ? fail_load(m, set_aborted(m), NULL)
				 : fail_save(m, set_aborted(m), NULL);
	if (!run->load)
		return save_complete(m, m->w.s);
	do
		ret = load_phase(m);
	while (ret == 1);
	return ret;
}

static void run_job(struct set_run *run, size_t j)
{
	for (size_t k = 0; k < run->jobs[j].n; k++) {
		size_t i = run->order[run->jobs[j].first + k];

		run->ret[i] = run_member(run, run->set->members[i]);
	}
}

/*
 * Worker `t` (0: the caller's thread) first runs job t, so that with one
 * worker per stream each stream has a thread of its own whatever the
 * timing; then every worker takes the jobs left, in order.
 */
static void run_jobs(struct set_run *run, size_t t)
{
	if (t < run->njobs)
		run_job(run, t);
	for (;;) {
		size_t j = __atomic_fetch_add(&run->next, 1, __ATOMIC_RELAXED);

		if (j >= run->njobs)
			return;
		run_job(run, j);
	}
}

struct set_worker {
	struct set_run *run;
	size_t t;
};

static void *set_worker(void *arg)
{
	struct set_worker *w = arg;
	VM_API(w->run->set->ctx);

	vm_tls_share_err_flag(w->run->err_flag);
	run_jobs(w->run, w->t);
	return NULL;
}

/*
 * Check the members, group them by stream, run the jobs on `threads`
 * threads (the caller's included), then fail the whole set if a member
 * failed. Called inside the public function's scope.
 */
static int set_run(struct vfiomig_mig_set *set, bool load, const struct vfiomig_mig_set_run_opts *opts,
		   const char *what)
{
	struct set_run run = { .set = set, .load = load };
	uint32_t threads;
	uint64_t budget; /* threads asked for (0: the CPUs online): decides the pipelining */
	pthread_t *tids = NULL;
	struct set_worker *ws = NULL;
	size_t started = 0, n = set->n;
	int ret = 0, first = 0;
	struct vfiomig_mig *culprit = NULL;

	ret = VM_OPTS_VALID(set->ctx, opts, struct vfiomig_mig_set_run_opts, threads);
	if (ret)
		return ret;
	threads = budget = VM_OPTS_GET(opts, struct vfiomig_mig_set_run_opts, threads, 0);
	if (set->running)
		return vm_err(set->ctx, -EBUSY, "device set: %s while a parallel run is in progress",
			      what);
	for (size_t i = 0; i < n; i++) {
		struct vfiomig_mig *m = set->members[i];

		if (m->failed)
			return vm_err(set->ctx, -ECANCELED, "device set: %s: device %s has failed: %s",
				      what, m->dev->name, m->fail_reason);
		if (m->role != (load ? VFIOMIG_ROLE_LOAD : VFIOMIG_ROLE_SAVE) || !m->setup_done ||
		    m->complete)
			return vm_err(set->ctx, -EINVAL, "device set: %s: device %s has no %s set up, "
				      "or it has completed", what, m->dev->name,
				      load ? "load" : "save");
	}
	if (!n)
		return 0;

	run.order = calloc(n, sizeof(*run.order));
	run.jobs = calloc(n, sizeof(*run.jobs));
	run.ret = calloc(n, sizeof(*run.ret));
	if (!run.order || !run.jobs || !run.ret) {
		ret = vm_enomem(set->ctx, "device set: the parallel run");
		goto out;
	}
	/* Group by stream, keeping the set's order within a stream: O(n^2), n is small. */
	for (size_t i = 0, placed = 0; i < n; i++) {
		if (first_on_stream(set, i) != i)
			continue;
		run.jobs[run.njobs].first = placed;
		for (size_t k = i; k < n; k++)
			if (first_on_stream(set, k) == i)
				run.order[placed++] = k;
		run.jobs[run.njobs].n = placed - run.jobs[run.njobs].first;
		run.njobs++;
	}
	if (threads == 0 || threads > run.njobs)
		threads = (uint32_t)run.njobs;

	/* The source's VM is stopped: quiesce every P2P member before any is stopped. */
	if (!load) {
		for (size_t i = 0; i < n; i++)
			set->members[i]->vm_running = false;
		ret = set_quiesce(set, VFIOMIG_VM_STOPPED);
		if (ret) {
			/* Nothing was stopped: the members are put back by the failure rules. */
			fail_save(set->members[0], ret, NULL);
			goto out;
		}
	}

	/*
	 * Threads to spare (at least two per stream): each v2 member's
	 * stop-copy pipelines, a reader thread on its data_fd.
	 */
	if (!budget) {
		long cpus = sysconf(_SC_NPROCESSORS_ONLN);

		budget = cpus > 0 ? (uint64_t)cpus : 1;
	}
	for (size_t i = 0; i < n; i++)
		set->members[i]->pipeline = !load && budget >= 2 * run.njobs;
	for (size_t i = 0; i < n; i++)
		set->members[i]->set_aborted = false;
	set->running = true;
	set->abort = 0;
	run.err_flag = vm_tls_err_flag();
	run.next = threads; /* jobs below: one for each worker, taken first */
	if (threads > 1) {
		sigset_t all, old;

		tids = calloc(threads - 1, sizeof(*tids));
		ws = calloc(threads - 1, sizeof(*ws));
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		for (uint32_t t = 1; tids && ws && t < threads; t++) {
			int err;

			ws[t - 1] = (struct set_worker){ .run = &run, .t = t };
			err = pthread_create(&tids[t - 1], NULL, set_worker, &ws[t - 1]);
			if (err) {
				vm_dbg(set->ctx, "device set: %s: worker thread %u of %u: %s; the "
				       "caller's thread takes its share", what, t + 1, threads,
				       vfiomig_strerror(-err));
				break;
			}
			started++;
		}
		pthread_sigmask(SIG_SETMASK, &old, NULL);
	}
	/* The caller's thread works too, and takes the first job of a worker that did not start. */
	for (size_t t = started + 1; t < threads; t++)
		run_job(&run, t);
	run_jobs(&run, 0);
	for (size_t t = 0; t < started; t++)
		pthread_join(tids[t], NULL);
	set->running = false;
	set->abort = 0;
	for (size_t i = 0; i < n; i++)
		set->members[i]->pipeline = false;

	/* The first failure that was not an abort is the set's; then the rest fail with it. */
	for (size_t i = 0; i < n; i++) {
		if (run.ret[i] && !set->members[i]->set_aborted) {
			first = run.ret[i];
			culprit = set->members[i];
			break;
		}
	}
	for (size_t i = 0; !culprit && i < n; i++) {
		if (run.ret[i]) {
			first = run.ret[i];
			culprit = set->members[i];
		}
	}
	if (culprit)
		fail_siblings(culprit);
	ret = first;
out:
	free(tids);
	free(ws);
	free(run.order);
	free(run.jobs);
	free(run.ret);
	return ret;
}

int vfiomig_mig_set_save_complete(struct vfiomig_mig_set *set,
				  const struct vfiomig_mig_set_run_opts *opts)
{
	VM_API(set ? set->ctx : NULL);

	if (!set)
		return -EINVAL;
	return set_run(set, false, opts, "save_complete");
}

int vfiomig_mig_set_load(struct vfiomig_mig_set *set, const struct vfiomig_mig_set_run_opts *opts)
{
	VM_API(set ? set->ctx : NULL);

	if (!set)
		return -EINVAL;
	return set_run(set, true, opts, "load");
}
