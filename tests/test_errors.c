/* SPDX-License-Identifier: MIT */
/*
 * The error promise of the API: a call that fails returns a negative
 * errno and logs exactly one line at VFIOMIG_LOG_ERR; a call that
 * succeeds logs none. Checked by a fault sweep: for every kernel op and
 * every k, the k-th call of that op fails (-EIO, -EINTR, or a transfer
 * cut to 0 or 1 bytes) during a whole device open + save, and during a
 * whole device open + load of a good stream, for the v2 (pre-copy, P2P,
 * DMA logging) and v1 (mmapped and trapped) protocols. After each run
 * the failure rules of migration.h hold: a failed save leaves the source
 * RUNNING with its state intact (unless a warning said a reset lost it);
 * a failed load leaves the destination out of RESUMING and refusing to
 * run; a load that succeeds holds exactly the saved state; and nothing
 * is left open or allocated (simenv_fini).
 */
#include "testutil.h"

#include <stdlib.h>

#define SRC "0000:03:00.0"
#define DST "0000:04:00.0"

struct kind {
	const char *spec;  /* sim device keys after the name */
	uint32_t flags;    /* VFIOMIG_MIG_F_* */
};

static const struct kind kinds[] = {
	{ "mig=v2-p2p-precopy,state=64K", 0 },
	{ "mig=v2,state=64K,dmalog=1", VFIOMIG_MIG_F_DIRTY_TRACKING },
	{ "mig=v1,state=64K,v1data=16K", VFIOMIG_MIG_F_ALLOW_V1 },
	{ "mig=v1-trapped,state=64K,v1data=16K", VFIOMIG_MIG_F_ALLOW_V1 },
};

static const struct vfiomig_dma_range dma = { .iova = 0x100000, .length = 0x100000 };

/* The state the clean stream carries (the source's after the save): what a load must end with. */
static unsigned char saved_state[1 << 20];
static size_t saved_len;

/* The fault of the current run, for assertion messages. */
static char cur_fault[160];

struct run {
	struct simenv env;
	void *snap;       /* save: the source's state before the save */
	size_t snap_len;
	int calls;        /* public calls made */
	int failed_calls; /* of which failed */
};

/* One public call: a failure logs exactly one ERR line, a success none. */
#define CALL(r, expr)                                                                        \
	({                                                                                   \
		int before_ = (r)->env.log.errors;                                           \
		int ret_ = (expr);                                                           \
		int lines_ = (r)->env.log.errors - before_;                                  \
		(r)->calls++;                                                                \
		if (ret_ < 0) {                                                              \
			(r)->failed_calls++;                                                 \
			cr_assert_eq(lines_, 1, "[%s] %s failed (%d) with %d ERR lines; last: %s", \
				     cur_fault, #expr, ret_, lines_, (r)->env.log.last);                \
		} else {                                                                     \
			cr_assert_eq(lines_, 0, "[%s] %s succeeded with %d ERR lines; last: %s", \
				     cur_fault, #expr, lines_, (r)->env.log.last);                     \
		}                                                                            \
		ret_;                                                                        \
	})

static struct vfiomig_sim_device *add_dev(struct run *r, const char *name, const struct kind *k)
{
	char spec[160];

	snprintf(spec, sizeof(spec), "sim:pci,name=%s,%s", name, k->spec);
	return sim_add(&r->env, spec);
}

static void run_init(struct run *r)
{
	memset(r, 0, sizeof(*r));
	simenv_init(&r->env);
}

/* A whole save of `k` into `out`; returns 0 or the first failure. */
static int do_save(struct run *r, const struct kind *k, struct vfiomig_stream *out,
		   struct vfiomig_sim_device *sd)
{
	VFIOMIG_OPTS(mig_opts, o, .flags = k->flags, .chunk_size = 16 << 10, .dma_ranges = &dma,
		     .nr_dma_ranges = 1);
	VFIOMIG_OPTS(mig_pending, pend);
	struct vfiomig_device *dev = NULL;
	struct vfiomig_mig *m = NULL;
	int ret;

	ret = CALL(r, vfiomig_device_open(r->env.ctx, SRC, NULL, &dev));
	if (ret < 0)
		return ret;
	ret = CALL(r, vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, &o, &m));
	if (ret >= 0)
		ret = CALL(r, vfiomig_mig_save_setup(m, out));
	for (int i = 0; ret >= 0 && i < 3; i++) {
		ret = CALL(r, vfiomig_mig_save_pending(m, &pend));
		if (ret >= 0)
			ret = CALL(r, vfiomig_mig_save_iterate(m, out, 0));
	}
	if (ret >= 0 && vfiomig_mig_dirty(m)) {
		uint64_t bm[4] = { 0 };

		ret = CALL(r, vfiomig_dirty_query(vfiomig_mig_dirty(m), dma.iova, dma.length,
						  4096, bm, sizeof(bm)));
	}
	if (ret >= 0)
		ret = CALL(r, vfiomig_mig_vm_state(m, VFIOMIG_VM_STOPPED));
	if (ret >= 0)
		ret = CALL(r, vfiomig_mig_save_complete(m, out));
	if (ret < 0 && m) {
		/* The VMM resumes its VM: the source device must follow, whatever failed. */
		cr_assert_eq(CALL(r, vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING)), 0,
			     "[%s] resuming the source: %s", cur_fault, r->env.log.last);
	}
	vfiomig_mig_free(m);
	vfiomig_device_close(dev);
	if (ret < 0) {
		cr_assert_eq(vfiomig_sim_device_mig_state(sd), VFIOMIG_DEVICE_STATE_RUNNING,
			     "[%s] a failed save leaves the source RUNNING, not %s; last: %s",
			     cur_fault,
			     vfiomig_device_state_name((uint32_t)vfiomig_sim_device_mig_state(sd)),
			     r->env.log.last);
		cr_assert(r->env.log.state_lost || state_is(sd, r->snap, r->snap_len),
			  "[%s] a failed save changed the source's state without saying so",
			  cur_fault);
	}
	return ret < 0 ? ret : 0;
}

/* A whole load of `k` from `in`; returns 0 or the first failure. */
static int do_load(struct run *r, const struct kind *k, struct vfiomig_stream *in,
		   struct vfiomig_sim_device *sd)
{
	VFIOMIG_OPTS(mig_opts, o, .flags = k->flags & VFIOMIG_MIG_F_ALLOW_V1);
	struct vfiomig_device *dev = NULL;
	struct vfiomig_mig *m = NULL;
	bool loaded;
	int ret;

	ret = CALL(r, vfiomig_device_open(r->env.ctx, DST, NULL, &dev));
	if (ret < 0)
		return ret;
	ret = CALL(r, vfiomig_mig_new(dev, VFIOMIG_ROLE_LOAD, &o, &m));
	if (ret >= 0)
		ret = CALL(r, vfiomig_mig_load_setup(m, in));
	while (ret == 1 || ret == 0) {
		ret = CALL(r, vfiomig_mig_load(m, in));
		if (ret == 0)
			break;
	}
	loaded = ret == 0;
	if (ret >= 0)
		ret = CALL(r, vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING));
	/* A load that failed refuses to run (a failed resume of a complete load may be retried). */
	if (!loaded && m)
		cr_assert_lt(vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING), 0,
			     "[%s] a failed load let the VM run", cur_fault);
	if (ret >= 0 && saved_len)
		cr_assert(state_is(sd, saved_state, saved_len),
			  "[%s] a load that succeeded does not hold the saved state", cur_fault);
	vfiomig_mig_free(m);
	vfiomig_device_close(dev);
	if (ret < 0)
		cr_assert_neq(vfiomig_sim_device_mig_state(sd), VFIOMIG_DEVICE_STATE_RESUMING,
			      "a refused load never leaves the destination resuming");
	return ret < 0 ? ret : 0;
}

/*
 * The stream of a clean save of `k`, for the load sweep. It lives in a
 * static buffer: each run's leak check (simenv_fini) must not see it.
 */
static unsigned char stream_buf[1 << 20];

/* The source has been used by its guest: its state is not all zeros. */
static struct vfiomig_sim_device *add_used_source(struct run *r, const struct kind *k)
{
	struct vfiomig_sim_device *sd = add_dev(r, SRC, k);

	cr_assert_eq(vfiomig_sim_device_run(sd, 8), 0);
	return sd;
}

static size_t clean_stream(const struct kind *k, uint64_t calls[VFIOMIG_KOP_COUNT])
{
	struct run r;
	struct vfiomig_stream *out;
	const void *data;
	size_t len;

	struct vfiomig_sim_device *sd;
	const void *st;

	saved_len = 0;
	run_init(&r);
	sd = add_used_source(&r, k);
	cr_assert_eq(vfiomig_stream_mem_new(r.env.ctx, &out), 0);
	cr_assert_eq(do_save(&r, k, out, sd), 0, "clean save: %s", r.env.log.last);
	st = vfiomig_sim_device_state(sd, &saved_len);
	cr_assert_leq(saved_len, sizeof(saved_state));
	memcpy(saved_state, st, saved_len);
	cr_assert_eq(r.failed_calls, 0);
	cr_assert_eq(vfiomig_stream_mem_data(out, &data, &len), 0);
	cr_assert_leq(len, sizeof(stream_buf));
	memcpy(stream_buf, data, len);
	for (uint32_t op = 0; op < VFIOMIG_KOP_COUNT; op++)
		calls[op] = vfiomig_fault_calls(r.env.fault, op);
	vfiomig_stream_free(out);
	simenv_fini(&r.env);
	return len;
}

static bool is_transfer(uint32_t op)
{
	return op == VFIOMIG_KOP_READ || op == VFIOMIG_KOP_WRITE || op == VFIOMIG_KOP_PREAD ||
	       op == VFIOMIG_KOP_PWRITE;
}

/* The faults tried at one call: -EIO, -EINTR, and for transfers a cut to 0 and to 1 byte. */
struct fault_kind {
	int error;
	uint64_t short_len;
};

static const struct fault_kind fault_kinds[] = { { -EIO, 0 }, { -EINTR, 0 }, { 0, 0 }, { 0, 1 } };

/* Errors for every op; the two short transfers only where there is a transfer. */
static size_t nfaults(uint32_t op)
{
	return is_transfer(op) ? 4 : 2;
}

struct sweep {
	unsigned runs, failed_runs, calls;
};

static void sweep_one(const struct kind *k, bool load, const void *stream, size_t len,
		      uint32_t op, uint64_t nth, const struct fault_kind *fk, struct sweep *sw)
{
	struct run r;
	struct vfiomig_stream *s;
	struct vfiomig_sim_device *sd;
	int ret;

	snprintf(cur_fault, sizeof(cur_fault), "%s %s: op %u call %llu error %d short %llu",
		 load ? "load" : "save", k->spec, op, (unsigned long long)nth, fk->error,
		 (unsigned long long)fk->short_len);
	run_init(&r);
	sd = load ? add_dev(&r, DST, k) : add_used_source(&r, k);
	if (!load)
		r.snap = snapshot(sd, &r.snap_len);
	fault(&r.env, op, nth, fk->error, fk->short_len, 0);
	if (load) {
		cr_assert_eq(vfiomig_stream_mem_fixed_new(r.env.ctx, (void *)stream, len,
							  VFIOMIG_STREAM_MEM_READ, &s), 0);
		ret = do_load(&r, k, s, sd);
	} else {
		cr_assert_eq(vfiomig_stream_mem_new(r.env.ctx, &s), 0);
		ret = do_save(&r, k, s, sd);
	}
	vfiomig_stream_free(s);
	free(r.snap);
	vfiomig_ctx_unref(r.env.ctx);
	r.env.ctx = NULL;
	cr_assert_eq(vfiomig_sim_open_fds(r.env.sim), 0,
		     "%s %s: op %u call %llu error %d short %llu: %d simulated fds left open",
		     load ? "load" : "save", k->spec, op, (unsigned long long)nth, fk->error,
		     (unsigned long long)fk->short_len, vfiomig_sim_open_fds(r.env.sim));
	sw->runs++;
	sw->calls += (unsigned)r.calls;
	if (ret < 0)
		sw->failed_runs++;
	simenv_fini(&r.env);
}

static void sweep(const struct kind *k, bool load)
{
	uint64_t calls[VFIOMIG_KOP_COUNT];
	struct sweep sw = { 0 };
	size_t len = clean_stream(k, calls);
	void *stream = stream_buf;

	if (load) {
		/* Count the load's own calls. */
		struct run r;
		struct vfiomig_stream *s;

		struct vfiomig_sim_device *sd;

		run_init(&r);
		sd = add_dev(&r, DST, k);
		cr_assert_eq(vfiomig_stream_mem_fixed_new(r.env.ctx, stream, len,
							  VFIOMIG_STREAM_MEM_READ, &s), 0);
		cr_assert_eq(do_load(&r, k, s, sd), 0, "clean load: %s", r.env.log.last);
		for (uint32_t op = 0; op < VFIOMIG_KOP_COUNT; op++)
			calls[op] = vfiomig_fault_calls(r.env.fault, op);
		vfiomig_stream_free(s);
		simenv_fini(&r.env);
	}
	/*
	 * Not munmap: a failed munmap leaves its mapping by definition (the
	 * library has nothing else to try, and it fails no public call).
	 */
	calls[VFIOMIG_KOP_MUNMAP] = 0;
	for (uint32_t op = 0; op < VFIOMIG_KOP_COUNT; op++)
		for (uint64_t nth = 1; nth <= calls[op]; nth++)
			for (size_t f = 0; f < nfaults(op); f++)
				sweep_one(k, load, stream, len, op, nth, &fault_kinds[f], &sw);
	cr_assert_gt(sw.failed_runs, 0, "the sweep made calls fail");
	cr_log_info("%s %s: %u runs, %u failed, %u public calls checked", load ? "load" : "save",
		    k->spec, sw.runs, sw.failed_runs, sw.calls);
}

Test(errors, one_err_line_per_failing_call_v2_precopy_save) { sweep(&kinds[0], false); }
Test(errors, one_err_line_per_failing_call_v2_precopy_load) { sweep(&kinds[0], true); }
Test(errors, one_err_line_per_failing_call_v2_dma_logging_save) { sweep(&kinds[1], false); }
Test(errors, one_err_line_per_failing_call_v2_dma_logging_load) { sweep(&kinds[1], true); }
Test(errors, one_err_line_per_failing_call_v1_mmapped_save) { sweep(&kinds[2], false); }
Test(errors, one_err_line_per_failing_call_v1_mmapped_load) { sweep(&kinds[2], true); }
Test(errors, one_err_line_per_failing_call_v1_trapped_save) { sweep(&kinds[3], false); }
Test(errors, one_err_line_per_failing_call_v1_trapped_load) { sweep(&kinds[3], true); }

/* Bad arguments and unset sz get their line too. */
Test(errors, bad_arguments_and_unset_sz_are_logged)
{
	struct simenv env;
	struct vfiomig_device *dev;
	struct vfiomig_device_info di = { .sz = 0 };
	struct vfiomig_mig_opts mo = { .sz = 0 };
	struct vfiomig_mig *m;

	simenv_init(&env);
	sim_add(&env, "sim:pci,name=" SRC ",mig=v2");
	cr_assert_eq(vfiomig_device_open(env.ctx, SRC, NULL, &dev), 0);
	env.log.errors = 0;
	cr_assert_eq(vfiomig_device_get_info(dev, &di), -EINVAL);
	cr_assert_eq(env.log.errors, 1);
	cr_assert(strstr(env.log.last, "sz"), "%s", env.log.last);
	cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, &mo, &m), -EINVAL);
	cr_assert_eq(env.log.errors, 2);
	cr_assert(strstr(env.log.last, "sz 0"), "%s", env.log.last);
	cr_assert_eq(vfiomig_region_read(dev, 0, 0, NULL, 4), -EINVAL);
	cr_assert_eq(env.log.errors, 3);
	vfiomig_device_close(dev);
	simenv_fini(&env);
}
