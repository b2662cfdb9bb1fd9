/* SPDX-License-Identifier: MIT */
/*
 * Parallel stop-and-copy and load of device sets
 * (vfiomig_mig_set_save_complete(), vfiomig_mig_set_load()): members on
 * streams of their own move side by side on the library's worker
 * threads, members that share a stream move in turn, every destination
 * ends equal to its source, and one failing member fails the whole set
 * by the rules of migration.h (sources back with their state,
 * destinations reset, one ERR line).
 *
 * The streams here are the test's own (caller callbacks over a growing
 * buffer): each records which threads wrote it, so the tests can see
 * where the work ran without measuring time.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdlib.h>

static struct simenv env;

static void setup(void)
{
	/* No fault injector: the members are driven from several threads at once. */
	simenv_init_flags(&env, 0, false);
}

static void teardown(void)
{
	simenv_fini(&env);
}

TestSuite(parallel, .init = setup, .fini = teardown);

#define MIG_ALL (VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY)
#define NDEV 4
#define STATE (1u << 20)

/* ------------------------------------------------ a stream that says who wrote it */

struct tap {
	unsigned char *buf;
	size_t len, cap, rpos;
	pthread_t writers[8];
	int nwriters;
	bool too_many_writers;
	bool concurrent;  /* two calls overlapped: the library broke "one thread per stream" */
	int busy;
};

static ssize_t tap_write(void *user, const void *buf, size_t len)
{
	struct tap *t = user;
	pthread_t self = pthread_self();
	bool known = false;

	if (__atomic_exchange_n(&t->busy, 1, __ATOMIC_ACQ_REL))
		t->concurrent = true;
	for (int i = 0; i < t->nwriters; i++)
		known |= pthread_equal(t->writers[i], self) != 0;
	if (!known) {
		if (t->nwriters < 8)
			t->writers[t->nwriters++] = self;
		else
			t->too_many_writers = true;
	}
	if (t->len + len > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		void *p;

		while (cap < t->len + len)
			cap *= 2;
		p = realloc(t->buf, cap);
		if (!p) {
			__atomic_store_n(&t->busy, 0, __ATOMIC_RELEASE);
			return -ENOMEM;
		}
		t->buf = p;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, buf, len);
	t->len += len;
	__atomic_store_n(&t->busy, 0, __ATOMIC_RELEASE);
	return (ssize_t)len;
}

static ssize_t tap_read(void *user, void *buf, size_t len)
{
	struct tap *t = user;

	if (__atomic_exchange_n(&t->busy, 1, __ATOMIC_ACQ_REL))
		t->concurrent = true;
	if (len > t->len - t->rpos)
		len = t->len - t->rpos;
	memcpy(buf, t->buf + t->rpos, len);
	t->rpos += len;
	__atomic_store_n(&t->busy, 0, __ATOMIC_RELEASE);
	return (ssize_t)len;
}

static struct vfiomig_stream *tap_stream(struct tap *t)
{
	static const struct vfiomig_stream_ops ops = {
		.sz = sizeof(ops), .write = tap_write, .read = tap_read,
	};
	struct vfiomig_stream *s;

	cr_assert_eq(vfiomig_stream_new(env.ctx, &ops, t, &s), 0);
	return s;
}

static void tap_free(struct tap *t)
{
	free(t->buf);
	memset(t, 0, sizeof(*t));
}

/* Did a thread other than the test's own write this stream? */
static bool tap_written_elsewhere(const struct tap *t)
{
	for (int i = 0; i < t->nwriters; i++)
		if (!pthread_equal(t->writers[i], pthread_self()))
			return true;
	return false;
}

/* ------------------------------------------------------------ a VM of NDEV devices */

struct vm {
	struct vfiomig_sim_device *sd[NDEV];
	struct vfiomig_device *dev[NDEV];
	struct vfiomig_mig *m[NDEV];
	struct vfiomig_mig_set *set;
};

static void vm_open(struct vm *vm, int bus, uint32_t role)
{
	memset(vm, 0, sizeof(*vm));
	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &vm->set), 0);
	for (int i = 0; i < NDEV; i++) {
		char name[32];

		snprintf(name, sizeof(name), "0000:%02x:00.%d", bus, i);
		VFIOMIG_OPTS(sim_device_opts, so, .name = name, .migration = MIG_ALL,
			     .state_size = STATE);
		cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &vm->sd[i]), 0);
		cr_assert_eq(vfiomig_device_open(env.ctx, name, NULL, &vm->dev[i]), 0, "%s",
			     env.log.last_err);
		cr_assert_eq(vfiomig_mig_new(vm->dev[i], role, NULL, &vm->m[i]), 0, "%s",
			     env.log.last_err);
		cr_assert_eq(vfiomig_mig_set_add(vm->set, vm->m[i]), 0);
	}
}

static void vm_close(struct vm *vm)
{
	vfiomig_mig_set_free(vm->set);
	for (int i = 0; i < NDEV; i++) {
		vfiomig_mig_free(vm->m[i]);
		vfiomig_device_close(vm->dev[i]);
	}
}

/* Setup and one pre-copy round of every member, member i on stream s[i]; the devices keep running. */
static void vm_precopy(struct vm *src, struct vfiomig_stream **s)
{
	for (int i = 0; i < NDEV; i++) {
		cr_assert_eq(vfiomig_mig_save_setup(src->m[i], s[i]), 0, "%s", env.log.last_err);
		cr_assert_eq(vfiomig_sim_device_run(src->sd[i], 16), 0);
		cr_assert_geq(vfiomig_mig_save_iterate(src->m[i], s[i], 0), 0, "%s",
			      env.log.last_err);
		cr_assert_eq(vfiomig_sim_device_run(src->sd[i], 8), 0); /* dirtied again */
	}
}

static void vm_load_setup(struct vm *dst, struct vfiomig_stream **s)
{
	for (int i = 0; i < NDEV; i++)
		cr_assert_eq(vfiomig_mig_load_setup(dst->m[i], s[i]), 0, "%s", env.log.last_err);
}

/* ---------------------------------------------------------------- tests */

Test(parallel, a_set_saves_and_loads_its_members_side_by_side)
{
	VFIOMIG_OPTS(mig_set_run_opts, ro, .threads = 0);
	struct tap tap[NDEV] = { 0 };
	struct vfiomig_stream *s[NDEV];
	struct vm src, dst;
	struct vfiomig_mig_stats st = { .sz = sizeof(st) };
	int elsewhere = 0;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	vm_open(&dst, 0x20, VFIOMIG_ROLE_LOAD);
	for (int i = 0; i < NDEV; i++)
		s[i] = tap_stream(&tap[i]);
	vm_precopy(&src, s);
	cr_assert_eq(vfiomig_mig_set_vm_state(src.set, VFIOMIG_VM_STOPPED), 0, "%s",
		     env.log.last_err);
	for (int i = 0; i < NDEV; i++)
		tap[i].nwriters = 0; /* from here on: who writes the stop-copy phase */
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, &ro), 0, "%s", env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_eq(vfiomig_sim_device_mig_state(src.sd[i]), VFIOMIG_DEVICE_STATE_STOP);
		cr_assert_not(tap[i].concurrent, "stream %d was used by two threads at once", i);
		cr_assert_eq(tap[i].nwriters, 1, "stream %d: one worker writes a stream", i);
		elsewhere += tap_written_elsewhere(&tap[i]);
	}
	/* One worker per stream: the caller's thread writes the first, library threads the others. */
	cr_assert_not(tap_written_elsewhere(&tap[0]), "stream 0 is the caller's thread's");
	cr_assert_eq(elsewhere, NDEV - 1, "%d of %d streams written by library threads", elsewhere,
		     NDEV);
	for (int i = 0; i < NDEV; i++)
		for (int k = 0; k < i; k++)
			cr_assert_not(pthread_equal(tap[i].writers[0], tap[k].writers[0]),
				      "streams %d and %d written by one thread", k, i);
	cr_assert_eq(vfiomig_mig_set_get_stats(src.set, &st), 0);
	cr_assert_gt(st.stopcopy_bytes, 0);

	vm_load_setup(&dst, s);
	cr_assert_eq(vfiomig_mig_set_load(dst.set, &ro), 0, "%s", env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_eq(tap[i].rpos, tap[i].len, "stream %d read to its end", i);
		cr_assert_not(tap[i].concurrent);
		cr_assert_eq(vfiomig_sim_device_mig_state(dst.sd[i]), VFIOMIG_DEVICE_STATE_STOP);
		cr_assert(same_state(src.sd[i], dst.sd[i]), "device %d differs after the load", i);
	}
	cr_assert_eq(env.log.errors, 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_set_vm_state(dst.set, VFIOMIG_VM_RUNNING), 0, "%s",
		     env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_eq(vfiomig_sim_device_mig_state(dst.sd[i]), VFIOMIG_DEVICE_STATE_RUNNING);
		vfiomig_stream_free(s[i]);
		tap_free(&tap[i]);
	}
	vm_close(&src);
	vm_close(&dst);
}

Test(parallel, one_thread_moves_every_member_in_the_callers_thread)
{
	VFIOMIG_OPTS(mig_set_run_opts, ro, .threads = 1);
	struct tap tap[NDEV] = { 0 };
	struct vfiomig_stream *s[NDEV];
	struct vm src, dst;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	vm_open(&dst, 0x20, VFIOMIG_ROLE_LOAD);
	for (int i = 0; i < NDEV; i++)
		s[i] = tap_stream(&tap[i]);
	vm_precopy(&src, s);
	/* Without vfiomig_mig_set_vm_state(STOPPED): the call quiesces and stops the members itself. */
	vfiomig_sim_events_clear(env.sim);
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, &ro), 0, "%s", env.log.last_err);
	/* Every member reached PRE_COPY_P2P before the first one left it (the P2P rule). */
	{
		size_t n = vfiomig_sim_event_count(env.sim), last_quiesce = 0, first_stop = SIZE_MAX;

		for (size_t e = 0; e < n; e++) {
			const char *line = vfiomig_sim_event(env.sim, e);

			if (strstr(line, "-> PRE_COPY_P2P"))
				last_quiesce = e;
			if (strstr(line, "PRE_COPY_P2P -> STOP_COPY") && first_stop == SIZE_MAX)
				first_stop = e;
		}
		cr_assert_neq(first_stop, SIZE_MAX, "no member went to STOP_COPY");
		cr_assert_lt(last_quiesce, first_stop, "a member stopped before all were quiesced");
	}
	for (int i = 0; i < NDEV; i++)
		cr_assert_not(tap_written_elsewhere(&tap[i]), "stream %d written by another thread", i);
	vm_load_setup(&dst, s);
	cr_assert_eq(vfiomig_mig_set_load(dst.set, &ro), 0, "%s", env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert(same_state(src.sd[i], dst.sd[i]), "device %d", i);
		vfiomig_stream_free(s[i]);
		tap_free(&tap[i]);
	}
	vm_close(&src);
	vm_close(&dst);
}

Test(parallel, members_that_share_a_stream_move_in_turn)
{
	struct tap one = { 0 }, two = { 0 };
	struct vfiomig_stream *a = NULL, *b = NULL, *s[NDEV];
	struct vm src, dst;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	vm_open(&dst, 0x20, VFIOMIG_ROLE_LOAD);
	a = tap_stream(&one);
	b = tap_stream(&two);
	/* Members 0, 1 and 2 on stream a (in that order), member 3 alone on b. */
	for (int i = 0; i < NDEV; i++)
		s[i] = i < 3 ? a : b;
	for (int i = 0; i < NDEV; i++)
		cr_assert_eq(vfiomig_mig_save_setup(src.m[i], s[i]), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, NULL), 0, "%s", env.log.last_err);
	cr_assert_not(one.concurrent);
	cr_assert_eq(one.nwriters, 1, "one worker moves the members of a shared stream");
	/* The destination reads in the same order: setups first, as they were written. */
	for (int i = 0; i < NDEV; i++)
		cr_assert_eq(vfiomig_mig_load_setup(dst.m[i], s[i]), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_set_load(dst.set, NULL), 0, "%s", env.log.last_err);
	for (int i = 0; i < NDEV; i++)
		cr_assert(same_state(src.sd[i], dst.sd[i]), "device %d", i);
	cr_assert_eq(one.rpos, one.len);
	cr_assert_eq(two.rpos, two.len);
	vfiomig_stream_free(a);
	vfiomig_stream_free(b);
	tap_free(&one);
	tap_free(&two);
	vm_close(&src);
	vm_close(&dst);
}

Test(parallel, one_failing_source_fails_the_set_and_every_source_keeps_its_state)
{
	struct tap tap[NDEV] = { 0 };
	struct vfiomig_stream *s[NDEV];
	void *before[NDEV];
	size_t len[NDEV];
	struct vm src;
	uint32_t origin;
	char why[256];
	int ret;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	for (int i = 0; i < NDEV; i++)
		s[i] = tap_stream(&tap[i]);
	vm_precopy(&src, s);
	cr_assert_eq(vfiomig_mig_set_vm_state(src.set, VFIOMIG_VM_STOPPED), 0);
	for (int i = 0; i < NDEV; i++)
		before[i] = snapshot(src.sd[i], &len[i]);
	/* Device 2's data_fd fails in the middle of its stop-copy. */
	cr_assert_eq(vfiomig_sim_device_fail_data(src.sd[2], 16 << 10, -EIO), 0);
	env.log.errors = 0;
	ret = vfiomig_mig_set_save_complete(src.set, NULL);
	cr_assert_eq(ret, -EIO, "%d: %s", ret, env.log.last_err);
	cr_assert_eq(env.log.errors, 1, "one ERR line for the failed call, got %d (last: %s)",
		     env.log.errors, env.log.last_err);
	cr_assert(strstr(env.log.last_err, "0000:10:00.2"), "%s", env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_lt(vfiomig_mig_failure(src.m[i], &origin, why, sizeof(why)), 0,
			     "member %d not failed", i);
		/* The VM is stopped: every source waits in STOP with its state. */
		cr_assert_eq(vfiomig_sim_device_mig_state(src.sd[i]), VFIOMIG_DEVICE_STATE_STOP,
			     "member %d", i);
		cr_assert(state_is(src.sd[i], before[i], len[i]), "member %d lost its state", i);
	}
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, NULL), -ECANCELED,
		     "a failed set is refused");
	/* The VMM resumes the VM: every device runs again. */
	cr_assert_eq(vfiomig_mig_set_vm_state(src.set, VFIOMIG_VM_RUNNING), 0, "%s",
		     env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_eq(vfiomig_sim_device_mig_state(src.sd[i]), VFIOMIG_DEVICE_STATE_RUNNING,
			     "member %d", i);
		free(before[i]);
		vfiomig_stream_free(s[i]);
		tap_free(&tap[i]);
	}
	vm_close(&src);
}

Test(parallel, one_bad_stream_fails_the_destination_set_and_resets_every_member)
{
	struct tap tap[NDEV] = { 0 };
	struct vfiomig_stream *s[NDEV];
	struct vm src, dst;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	vm_open(&dst, 0x20, VFIOMIG_ROLE_LOAD);
	for (int i = 0; i < NDEV; i++)
		s[i] = tap_stream(&tap[i]);
	vm_precopy(&src, s);
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, NULL), 0, "%s", env.log.last_err);
	vm_load_setup(&dst, s);
	/* One bit of device 1's stop-copy data flips on the way. */
	tap[1].buf[tap[1].len - 4096] ^= 0x10;
	env.log.errors = 0;
	cr_assert_eq(vfiomig_mig_set_load(dst.set, NULL), -EBADMSG, "%s", env.log.last_err);
	cr_assert_eq(env.log.errors, 1, "one ERR line, got %d (last: %s)", env.log.errors,
		     env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_lt(vfiomig_mig_failure(dst.m[i], NULL, NULL, 0), 0, "member %d", i);
		cr_assert_eq(vfiomig_sim_device_mig_state(dst.sd[i]), VFIOMIG_DEVICE_STATE_RUNNING,
			     "member %d: reset, not left loaded", i);
	}
	cr_assert_eq(vfiomig_mig_set_vm_state(dst.set, VFIOMIG_VM_RUNNING), -ECANCELED);
	for (int i = 0; i < NDEV; i++) {
		vfiomig_stream_free(s[i]);
		tap_free(&tap[i]);
	}
	vm_close(&src);
	vm_close(&dst);
}

Test(parallel, a_set_run_refuses_what_it_cannot_run)
{
	VFIOMIG_OPTS(mig_set_run_opts, ro);
	struct tap tap = { 0 };
	struct vfiomig_stream *s;
	struct vm src;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	s = tap_stream(&tap);
	/* Nothing set up yet. */
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, NULL), -EINVAL);
	cr_assert(strstr(env.log.last_err, "no save set up"), "%s", env.log.last_err);
	/* A load on a set of saves. */
	cr_assert_eq(vfiomig_mig_set_load(src.set, NULL), -EINVAL);
	/* Unknown bytes in the opts. */
	ro.reserved = 1;
	cr_assert_eq(vfiomig_mig_set_save_complete(src.set, &ro), -EINVAL);
	cr_assert_eq(vfiomig_mig_set_save_complete(NULL, NULL), -EINVAL);
	for (int i = 0; i < NDEV; i++)
		cr_assert_eq(vfiomig_sim_device_mig_state(src.sd[i]), VFIOMIG_DEVICE_STATE_RUNNING,
			     "a refused call touched member %d", i);
	vfiomig_stream_free(s);
	tap_free(&tap);
	vm_close(&src);
}

/* ------------------------------------------------ one device, pipelined */

struct seen {
	bool pipelined;
	struct logcap *next;
};

static void seen_log(void *user, int prio, const char *msg)
{
	struct seen *s = user;

	if (strstr(msg, "stop-copy pipelined"))
		s->pipelined = true;
	logcap_fn(s->next, prio, msg);
}

static const char *const pair_names[2] = { "0000:50:00.0", "0000:51:00.0" };

/* Open the pair's devices, a save on the first and a load on the second, each in a set of its own. */
static void pair_attach(struct vfiomig_device **dev, struct vfiomig_mig **m,
			struct vfiomig_mig_set **set)
{
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(vfiomig_device_open(env.ctx, pair_names[i], NULL, &dev[i]), 0);
		cr_assert_eq(vfiomig_mig_new(dev[i], i ? VFIOMIG_ROLE_LOAD : VFIOMIG_ROLE_SAVE, NULL,
					     &m[i]), 0);
		cr_assert_eq(vfiomig_mig_set_new(env.ctx, &set[i]), 0);
		cr_assert_eq(vfiomig_mig_set_add(set[i], m[i]), 0);
	}
}

/* One save member and one load member (the source's state all written), for one memory pipe. */
static void pair_open(struct vfiomig_sim_device **sd, struct vfiomig_device **dev,
		      struct vfiomig_mig **m, struct vfiomig_mig_set **set)
{
	for (int i = 0; i < 2; i++) {
		VFIOMIG_OPTS(sim_device_opts, so, .name = pair_names[i], .migration = MIG_ALL,
			     .state_size = 4 * STATE);
		cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &sd[i]), 0);
	}
	pair_attach(dev, m, set);
	cr_assert_eq(vfiomig_sim_device_run(sd[0], 4 * STATE / 4096), 0);
}

static void pair_close(struct vfiomig_device **dev, struct vfiomig_mig **m,
		       struct vfiomig_mig_set **set)
{
	for (int i = 0; i < 2; i++) {
		vfiomig_mig_set_free(set[i]);
		vfiomig_mig_free(m[i]);
		vfiomig_device_close(dev[i]);
	}
}

Test(parallel, a_lone_devices_stop_copy_pipelines_when_threads_allow)
{
	VFIOMIG_OPTS(mig_set_run_opts, two, .threads = 2);
	VFIOMIG_OPTS(mig_set_run_opts, one, .threads = 1);
	struct vfiomig_sim_device *sd[2];
	struct vfiomig_device *dev[2];
	struct vfiomig_mig *m[2];
	struct vfiomig_mig_set *set[2];
	struct vfiomig_stream *s;
	struct seen seen = { .next = &env.log };

	vfiomig_ctx_set_log_fn(env.ctx, seen_log, &seen);
	vfiomig_ctx_set_log_priority(env.ctx, VFIOMIG_LOG_DEBUG);
	/* threads = 1: no thread to spare, no pipeline. */
	pair_open(sd, dev, m, set);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &s), 0);
	cr_assert_eq(vfiomig_mig_save_setup(m[0], s), 0);
	cr_assert_eq(vfiomig_mig_set_save_complete(set[0], &one), 0, "%s", env.log.last_err);
	cr_assert_not(seen.pipelined);
	cr_assert_eq(vfiomig_mig_set_vm_state(set[0], VFIOMIG_VM_RUNNING), 0);
	pair_close(dev, m, set);
	vfiomig_stream_free(s);

	/*
	 * threads = 2 for one stream: the reader thread and the worker, on a
	 * stream that copies (a memory stream takes the bytes in place and
	 * has nothing to overlap: no pipeline).
	 */
	pair_attach(dev, m, set);
	cr_assert_eq(vfiomig_sim_device_run(sd[0], 100), 0);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &s), 0);
	cr_assert_eq(vfiomig_mig_save_setup(m[0], s), 0);
	cr_assert_eq(vfiomig_mig_set_save_complete(set[0], &two), 0, "%s", env.log.last_err);
	cr_assert_not(seen.pipelined, "a memory stream was pipelined");
	cr_assert_eq(vfiomig_mig_load_setup(m[1], s), 0);
	cr_assert_eq(vfiomig_mig_set_load(set[1], &two), 0, "%s", env.log.last_err);
	cr_assert(same_state(sd[0], sd[1]));
	cr_assert_eq(vfiomig_mig_set_vm_state(set[0], VFIOMIG_VM_RUNNING), 0);
	pair_close(dev, m, set);
	vfiomig_stream_free(s);

	pair_attach(dev, m, set);
	cr_assert_eq(vfiomig_sim_device_run(sd[0], 100), 0);
	s = relay_new(env.ctx);
	cr_assert_eq(vfiomig_mig_save_setup(m[0], s), 0);
	cr_assert_eq(vfiomig_mig_set_save_complete(set[0], &two), 0, "%s", env.log.last_err);
	cr_assert(seen.pipelined, "no pipelined stop-copy with a thread to spare");
	cr_assert_eq(vfiomig_mig_load_setup(m[1], s), 0);
	cr_assert_eq(vfiomig_mig_set_load(set[1], &two), 0, "%s", env.log.last_err);
	cr_assert(same_state(sd[0], sd[1]), "the pipelined stop-copy moved the state intact");
	cr_assert_eq(env.log.errors, 0, "%s", env.log.last_err);
	pair_close(dev, m, set);
	vfiomig_stream_free(s);
	vfiomig_ctx_set_log_fn(env.ctx, logcap_fn, &env.log);
}

Test(parallel, a_device_failing_under_the_pipeline_is_put_back_with_one_err_line)
{
	VFIOMIG_OPTS(mig_set_run_opts, two, .threads = 2);
	struct vfiomig_sim_device *sd[2];
	struct vfiomig_device *dev[2];
	struct vfiomig_mig *m[2];
	struct vfiomig_mig_set *set[2];
	struct vfiomig_stream *s;
	struct seen seen = { .next = &env.log };
	char why[256];
	void *before;
	size_t len;
	int ret;

	pair_open(sd, dev, m, set);
	vfiomig_ctx_set_log_fn(env.ctx, seen_log, &seen);
	vfiomig_ctx_set_log_priority(env.ctx, VFIOMIG_LOG_DEBUG);
	s = relay_new(env.ctx);
	cr_assert_eq(vfiomig_mig_save_setup(m[0], s), 0);
	cr_assert_eq(vfiomig_mig_set_vm_state(set[0], VFIOMIG_VM_STOPPED), 0);
	before = snapshot(sd[0], &len);
	/* The data_fd fails after a megabyte, while the writer is busy with earlier chunks. */
	cr_assert_eq(vfiomig_sim_device_fail_data(sd[0], 1 << 20, -EIO), 0);
	env.log.errors = 0;
	ret = vfiomig_mig_set_save_complete(set[0], &two);
	cr_assert_eq(ret, -EIO, "%d: %s", ret, env.log.last_err);
	cr_assert(seen.pipelined);
	cr_assert_eq(env.log.errors, 1, "%d ERR lines (last: %s)", env.log.errors,
		     env.log.last_err);
	cr_assert_eq(vfiomig_mig_failure(m[0], NULL, why, sizeof(why)), -EIO);
	cr_assert(strstr(why, "data_fd"), "the reader's line is the reason: %s", why);
	cr_assert_eq(vfiomig_sim_device_mig_state(sd[0]), VFIOMIG_DEVICE_STATE_STOP);
	cr_assert(state_is(sd[0], before, len), "the source kept its state");
	/* The destination sees the CANCEL the source wrote. */
	cr_assert_eq(vfiomig_mig_load_setup(m[1], s), 0);
	cr_assert_eq(vfiomig_mig_set_load(set[1], NULL), -ECANCELED, "%s", env.log.last_err);
	free(before);
	vfiomig_ctx_set_log_fn(env.ctx, logcap_fn, &env.log);
	pair_close(dev, m, set);
	vfiomig_stream_free(s);
}

Test(parallel, a_member_that_cannot_be_quiesced_fails_the_set_before_any_is_stopped)
{
	struct tap tap[NDEV] = { 0 };
	struct vfiomig_stream *s[NDEV];
	void *before[NDEV];
	size_t len[NDEV];
	struct vm src;
	int ret;

	vm_open(&src, 0x10, VFIOMIG_ROLE_SAVE);
	for (int i = 0; i < NDEV; i++)
		s[i] = tap_stream(&tap[i]);
	vm_precopy(&src, s);
	for (int i = 0; i < NDEV; i++)
		before[i] = snapshot(src.sd[i], &len[i]);
	/* Member 2 refuses PRE_COPY -> PRE_COPY_P2P: the set cannot be quiesced. */
	cr_assert_eq(vfiomig_sim_device_fail_transition(src.sd[2],
							VFIOMIG_DEVICE_STATE_PRE_COPY_P2P, -EIO,
							false), 0);
	env.log.errors = 0;
	ret = vfiomig_mig_set_save_complete(src.set, NULL);
	cr_assert_eq(ret, -EIO, "%d: %s", ret, env.log.last_err);
	cr_assert_eq(env.log.errors, 1, "%d ERR lines (last: %s)", env.log.errors,
		     env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_lt(vfiomig_mig_failure(src.m[i], NULL, NULL, 0), 0, "member %d", i);
		/* The VM is stopped: every source waits in STOP, none reached STOP_COPY's data. */
		cr_assert_eq(vfiomig_sim_device_mig_state(src.sd[i]), VFIOMIG_DEVICE_STATE_STOP,
			     "member %d", i);
		cr_assert(state_is(src.sd[i], before[i], len[i]), "member %d lost its state", i);
		free(before[i]);
	}
	cr_assert_eq(vfiomig_mig_set_vm_state(src.set, VFIOMIG_VM_RUNNING), 0, "%s",
		     env.log.last_err);
	for (int i = 0; i < NDEV; i++) {
		cr_assert_eq(vfiomig_sim_device_mig_state(src.sd[i]), VFIOMIG_DEVICE_STATE_RUNNING);
		vfiomig_stream_free(s[i]);
		tap_free(&tap[i]);
	}
	vm_close(&src);
}
