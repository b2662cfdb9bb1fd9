/* SPDX-License-Identifier: MIT */
/*
 * The README's threading rule, exercised: a context and everything made
 * from it is used by one thread at a time, distinct contexts are
 * independent, and the library has no global mutable state. Several
 * threads, each with its own simulator, context and devices, migrate at
 * once: device sets through memory streams with dirty tracking queried
 * every round, and a source and a destination in two threads joined by a
 * socketpair (forward stream one way, return path the other), while one
 * more thread hammers the context-free helpers (vfiomig_strerror, the
 * bitmap functions) and vfiomig_ctx_log on contexts of its own. Every
 * destination must end equal to its source.
 *
 * Built with --enable-tsan this is the race check: make check runs it with
 * TSAN_OPTIONS=halt_on_error=1, so a report kills the worker and fails the
 * test; a report is also counted here (__tsan_on_report) and fails the
 * test when run by hand without those options.
 *
 * Worker threads never call cr_assert (criterion's assertions belong to
 * the test's own thread): they record their first failure, and the test
 * asserts after joining them.
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/wait.h>

#define PG 4096ull
#define STATE_SIZE (128u << 10) /* per device */
#define MEM_WORKERS 2           /* threads migrating device sets through memory */
#define MEM_DEVS 2              /* devices per set */
#define MEM_ITERATIONS 6        /* whole migrations per memory worker */
#define SOCK_ITERATIONS 4       /* migrations over the socketpair */
#define HELPER_LOOPS 1000
/* memory workers, the socket source and destination, the helper thread */
#define NTHREADS (MEM_WORKERS + 3)
#define THREAD_STACK (2u << 20)

/* ------------------------------------------------------ TSan reports */

static long tsan_reports;

#if defined(TESTUTIL_TSAN)
/* Set in the child of tsan_reports_a_deliberate_race: a report ends it with this status. */
#define RACE_REPORTED 67
static bool race_child;

/* TSan calls this for every report it prints (a weak hook in its runtime). */
__attribute__((visibility("default"))) void __tsan_on_report(const void *report);
__attribute__((visibility("default"))) void __tsan_on_report(const void *report)
{
	(void)report;
	if (race_child)
		_exit(RACE_REPORTED);
	__atomic_add_fetch(&tsan_reports, 1, __ATOMIC_RELAXED);
}
#endif

/* ------------------------------------------------------- per thread */

/* What a thread reports back: its first failure, in words. */
struct result {
	bool failed;
	char why[512];
};

__attribute__((format(printf, 2, 3)))
static void fail(struct result *r, const char *fmt, ...)
{
	va_list ap;

	if (r->failed)
		return;
	r->failed = true;
	va_start(ap, fmt);
	vsnprintf(r->why, sizeof(r->why), fmt, ap);
	va_end(ap);
}

/* Record the first failed check and leave the function (to its cleanup label). */
#define CHECK(r, cond, ...)                \
	do {                               \
		if (!(cond)) {             \
			fail(r, __VA_ARGS__); \
			goto out;          \
		}                          \
	} while (0)

/* A thread's own log: the last error line, for failure messages. */
struct tlog {
	int lines;
	char last[256];
};

static void tlog_fn(void *user, int prio, const char *msg)
{
	struct tlog *l = user;

	l->lines++;
	if (prio <= VFIOMIG_LOG_WARNING)
		snprintf(l->last, sizeof(l->last), "%s", msg);
}

/* A simulator and a context on it, owned by one thread. */
struct world {
	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct tlog log;
};

static int world_new(struct world *w)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = tlog_fn, .log_user = &w->log,
		     .log_priority = VFIOMIG_LOG_WARNING);
	int ret;

	memset(w, 0, sizeof(*w));
	ret = vfiomig_sim_new(NULL, &w->sim);
	if (ret)
		return ret;
	return vfiomig_sim_ctx_new(w->sim, &co, &w->ctx);
}

/* Drop the context; the simulator must hold no fd or mapping of it afterwards. */
static void world_free(struct world *w, struct result *r)
{
	vfiomig_ctx_unref(w->ctx);
	w->ctx = NULL;
	if (!w->sim)
		return;
	if (vfiomig_sim_open_fds(w->sim) || vfiomig_sim_live_maps(w->sim))
		fail(r, "the library left %d simulated fds and %d mappings behind",
		     vfiomig_sim_open_fds(w->sim), vfiomig_sim_live_maps(w->sim));
	vfiomig_sim_free(w->sim);
	w->sim = NULL;
}

static pthread_barrier_t start_line;

/*
 * Every thread starts its work at once, so the migrations overlap. A
 * thread that fails before its start line still passes it (on its way
 * out), or the others would wait for it forever.
 */
static void wait_start(bool *started)
{
	if (*started)
		return;
	*started = true;
	pthread_barrier_wait(&start_line);
}

/* ---------------------------------- device sets through memory streams */

struct mem_worker {
	int id;
	struct result res;
	int migrations;      /* completed, each destination checked */
	uint64_t dirty_seen; /* dirty pages the queries reported */
};

/*
 * One VM's MEM_DEVS devices, saved as a set while they change and write
 * guest memory by DMA, loaded into a destination set, MEM_ITERATIONS
 * times. Dirty tracking (device DMA logging) is queried each round and
 * must report exactly the pages the devices wrote.
 */
static void *mem_worker_main(void *arg)
{
	struct mem_worker *mw = arg;
	struct result *r = &mw->res;
	struct world w;
	struct vfiomig_sim_device *ssd[MEM_DEVS] = { NULL }, *dsd[MEM_DEVS] = { NULL };
	struct vfiomig_device *src[MEM_DEVS] = { NULL }, *dst[MEM_DEVS] = { NULL };
	struct vfiomig_mig *ms[MEM_DEVS] = { NULL }, *md[MEM_DEVS] = { NULL };
	struct vfiomig_stream *wire[MEM_DEVS] = { NULL };
	struct vfiomig_mig_set *sset = NULL, *dset = NULL;
	struct vfiomig_dma_range ranges[MEM_DEVS];
	void *guest = NULL;
	bool started = false;
	int ret;

	ret = world_new(&w);
	CHECK(r, ret == 0, "world: %s", vfiomig_strerror(ret));
	/* Guest memory the devices DMA into: 64 pages, 32 per device. */
	guest = aligned_alloc(PG, 64 * PG);
	CHECK(r, guest, "aligned_alloc");
	for (int i = 0; i < MEM_DEVS; i++) {
		char spec[128], name[16];

		snprintf(name, sizeof(name), "0000:%02x:00.0", 0x10 + i);
		snprintf(spec, sizeof(spec), "sim:pci,name=%s,mig=v2-p2p-precopy,dmalog=1,state=%u",
			 name, STATE_SIZE);
		ret = vfiomig_sim_device_add_spec(w.sim, w.ctx, spec, &ssd[i]);
		CHECK(r, ret == 0, "add %s: %s", spec, w.log.last);
		ret = vfiomig_device_open(w.ctx, name, NULL, &src[i]);
		CHECK(r, ret == 0, "open %s: %s", name, w.log.last);
		ranges[i].iova = 0x100000 + (uint64_t)i * 32 * PG;
		ranges[i].length = 32 * PG;
		ret = vfiomig_dma_map(src[i], (char *)guest + i * 32 * PG, ranges[i].iova,
				      ranges[i].length, VFIOMIG_DMA_READ | VFIOMIG_DMA_WRITE);
		CHECK(r, ret == 0, "dma_map %s: %s", name, w.log.last);
		snprintf(name, sizeof(name), "0000:%02x:00.0", 0x20 + i);
		snprintf(spec, sizeof(spec), "sim:pci,name=%s,mig=v2-p2p-precopy,dmalog=1,state=%u",
			 name, STATE_SIZE);
		ret = vfiomig_sim_device_add_spec(w.sim, w.ctx, spec, &dsd[i]);
		CHECK(r, ret == 0, "add %s: %s", spec, w.log.last);
		ret = vfiomig_device_open(w.ctx, name, NULL, &dst[i]);
		CHECK(r, ret == 0, "open %s: %s", name, w.log.last);
	}
	wait_start(&started);
	for (int it = 0; it < MEM_ITERATIONS; it++) {
		ret = vfiomig_mig_set_new(w.ctx, &sset);
		CHECK(r, ret == 0, "set_new: %s", w.log.last);
		ret = vfiomig_mig_set_new(w.ctx, &dset);
		CHECK(r, ret == 0, "set_new: %s", w.log.last);
		for (int i = 0; i < MEM_DEVS; i++) {
			VFIOMIG_OPTS(mig_opts, so, .flags = VFIOMIG_MIG_F_DIRTY_TRACKING,
				     .dma_ranges = &ranges[i], .nr_dma_ranges = 1,
				     .chunk_size = 16 * 1024);

			/* The guest used the device since the last migration. */
			ret = vfiomig_sim_device_run(ssd[i], 8 + (uint64_t)mw->id);
			CHECK(r, ret == 0, "run: %d", ret);
			ret = vfiomig_mig_new(src[i], VFIOMIG_ROLE_SAVE, &so, &ms[i]);
			CHECK(r, ret == 0, "mig_new save: %s", w.log.last);
			ret = vfiomig_mig_new(dst[i], VFIOMIG_ROLE_LOAD, NULL, &md[i]);
			CHECK(r, ret == 0, "mig_new load: %s", w.log.last);
			CHECK(r, vfiomig_mig_set_add(sset, ms[i]) == 0, "set_add: %s", w.log.last);
			CHECK(r, vfiomig_mig_set_add(dset, md[i]) == 0, "set_add: %s", w.log.last);
			ret = vfiomig_stream_mem_new(w.ctx, &wire[i]);
			CHECK(r, ret == 0, "stream_mem_new: %d", ret);
			ret = vfiomig_mig_save_setup(ms[i], wire[i]);
			CHECK(r, ret == 0, "save_setup: %s", w.log.last);
			ret = vfiomig_mig_load_setup(md[i], wire[i]);
			CHECK(r, ret == 0, "load_setup: %s", w.log.last);
		}
		CHECK(r, vfiomig_mig_set_check(sset, NULL, 0) == 0, "set_check: %s", w.log.last);
		for (int round = 0; round < 3; round++) {
			for (int i = 0; i < MEM_DEVS; i++) {
				struct vfiomig_dirty *d = vfiomig_mig_dirty(ms[i]);
				uint64_t page = (uint64_t)(round * 5 + mw->id + it) % 32;
				uint64_t bm[1] = { 0 };

				CHECK(r, d, "no dirty-tracking session after save_setup");
				/* The device keeps running, and writes one guest page by DMA. */
				CHECK(r, vfiomig_sim_device_run(ssd[i], 4) == 0, "run");
				ret = vfiomig_sim_device_dma_write(ssd[i], ranges[i].iova + page * PG,
								   PG);
				CHECK(r, ret == 0, "dma_write: %d", ret);
				ret = vfiomig_mig_save_iterate(ms[i], wire[i], 0);
				CHECK(r, ret >= 0, "save_iterate: %s", w.log.last);
				ret = vfiomig_mig_load(md[i], wire[i]);
				CHECK(r, ret == 1, "load of a round: %d: %s", ret, w.log.last);
				ret = vfiomig_dirty_query(d, ranges[i].iova, ranges[i].length, PG, bm,
							  sizeof(bm));
				CHECK(r, ret == VFIOMIG_DIRTY_RESULT_EXACT, "dirty_query: %d: %s", ret,
				      w.log.last);
				CHECK(r, bm[0] == 1ull << page,
				      "dirty bitmap %#llx, expected only page %llu",
				      (unsigned long long)bm[0], (unsigned long long)page);
				mw->dirty_seen += vfiomig_bitmap_count(bm, 32);
			}
		}
		/* Pages changed right up to the stop must arrive too. */
		for (int i = 0; i < MEM_DEVS; i++)
			CHECK(r, vfiomig_sim_device_run(ssd[i], 3) == 0, "run");
		ret = vfiomig_mig_set_vm_state(sset, VFIOMIG_VM_STOPPED);
		CHECK(r, ret == 0, "set_vm_state(STOPPED): %s", w.log.last);
		for (int i = 0; i < MEM_DEVS; i++) {
			ret = vfiomig_mig_save_complete(ms[i], wire[i]);
			CHECK(r, ret == 0, "save_complete: %s", w.log.last);
			ret = vfiomig_mig_load(md[i], wire[i]);
			CHECK(r, ret == 0, "final load: %d: %s", ret, w.log.last);
		}
		ret = vfiomig_mig_set_vm_state(dset, VFIOMIG_VM_RUNNING);
		CHECK(r, ret == 0, "destination set_vm_state(RUNNING): %s", w.log.last);
		for (int i = 0; i < MEM_DEVS; i++) {
			CHECK(r, same_state(ssd[i], dsd[i]),
			      "iteration %d: destination %d differs from its source", it, i);
			CHECK(r, vfiomig_sim_device_mig_state(dsd[i]) == VFIOMIG_DEVICE_STATE_RUNNING,
			      "destination not RUNNING");
			CHECK(r, vfiomig_sim_device_mig_state(ssd[i]) == VFIOMIG_DEVICE_STATE_STOP,
			      "source not STOP");
		}
		/* Tear down; the source resumes, as after a migration back. */
		vfiomig_mig_set_free(sset);
		vfiomig_mig_set_free(dset);
		sset = dset = NULL;
		for (int i = 0; i < MEM_DEVS; i++) {
			ret = vfiomig_mig_vm_state(ms[i], VFIOMIG_VM_RUNNING);
			CHECK(r, ret == 0, "source vm_state(RUNNING): %s", w.log.last);
			vfiomig_mig_free(ms[i]);
			vfiomig_mig_free(md[i]);
			vfiomig_stream_free(wire[i]);
			ms[i] = md[i] = NULL;
			wire[i] = NULL;
		}
		mw->migrations++;
	}
out:
	wait_start(&started);
	vfiomig_mig_set_free(sset);
	vfiomig_mig_set_free(dset);
	for (int i = 0; i < MEM_DEVS; i++) {
		vfiomig_mig_free(ms[i]);
		vfiomig_mig_free(md[i]);
		vfiomig_stream_free(wire[i]);
		if (src[i])
			vfiomig_dma_unmap(src[i], ranges[i].iova, ranges[i].length, 0, NULL, 0);
		vfiomig_device_close(src[i]);
		vfiomig_device_close(dst[i]);
	}
	world_free(&w, r);
	free(guest);
	return NULL;
}

/* -------------------------- a source and a destination over a socketpair */

#define SOCK_DEV "0000:30:00.0"
#define SOCK_SPEC "sim:pci,name=" SOCK_DEV ",mig=v2-p2p-precopy,state=131072"

struct sock_side {
	int fd;              /* its end of the socketpair; the stream takes it */
	struct result res;
	int migrations;
	uint64_t state_hash[SOCK_ITERATIONS]; /* the device state each migration moved */
	uint64_t bytes;      /* forward-stream bytes written (source) or read (destination) */
	struct world w;      /* kept until the test compared the states */
	struct vfiomig_sim_device *sd;
};

/* FNV-1a of a simulated device's state. */
static uint64_t state_hash(const struct vfiomig_sim_device *sd)
{
	size_t len;
	const unsigned char *p = vfiomig_sim_device_state(sd, &len);
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; p && i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* On failure, cut the channel so the other side fails too instead of waiting. */
static void sock_abandon(struct sock_side *s)
{
	if (s->res.failed && s->fd >= 0)
		shutdown(s->fd, SHUT_RDWR);
}

static void *sock_source_main(void *arg)
{
	struct sock_side *s = arg;
	struct result *r = &s->res;
	struct vfiomig_device *dev = NULL;
	struct vfiomig_stream *chan = NULL;
	struct vfiomig_mig *m = NULL;
	bool started = false;
	int ret;

	ret = world_new(&s->w);
	CHECK(r, ret == 0, "world: %s", vfiomig_strerror(ret));
	ret = vfiomig_sim_device_add_spec(s->w.sim, s->w.ctx, SOCK_SPEC, &s->sd);
	CHECK(r, ret == 0, "add: %s", s->w.log.last);
	ret = vfiomig_device_open(s->w.ctx, SOCK_DEV, NULL, &dev);
	CHECK(r, ret == 0, "open: %s", s->w.log.last);
	ret = vfiomig_stream_fd_new(s->w.ctx, dup(s->fd), VFIOMIG_STREAM_FD_TAKE, &chan);
	CHECK(r, ret == 0, "stream_fd_new: %s", s->w.log.last);
	wait_start(&started);
	for (int it = 0; it < SOCK_ITERATIONS; it++) {
		VFIOMIG_OPTS(mig_opts, o, .flags = VFIOMIG_MIG_F_SWITCHOVER_ACK, .chunk_size = 16384);
		VFIOMIG_OPTS(return_msg, msg);
		int rounds = 0;

		CHECK(r, vfiomig_sim_device_run(s->sd, 32) == 0, "run");
		ret = vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, &o, &m);
		CHECK(r, ret == 0, "mig_new: %s", s->w.log.last);
		ret = vfiomig_mig_save_setup(m, chan);
		CHECK(r, ret == 0, "save_setup: %s", s->w.log.last);
		/* Pre-copy while the device runs, until all initial data went. */
		do {
			CHECK(r, vfiomig_sim_device_run(s->sd, 2) == 0, "run");
			ret = vfiomig_mig_save_iterate(m, chan, 32 * 1024);
			CHECK(r, ret >= 0, "save_iterate: %s", s->w.log.last);
			CHECK(r, ++rounds < 64, "pre-copy does not converge");
		} while (!vfiomig_mig_initial_data_sent(m));
		/* The destination acknowledges, from its thread, over the same socket. */
		ret = vfiomig_mig_return_recv(m, chan, &msg);
		CHECK(r, ret == 0, "return_recv: %s", s->w.log.last);
		CHECK(r, msg.type == VFIOMIG_RETURN_SWITCHOVER_ACK, "expected SWITCHOVER_ACK, got %u",
		      msg.type);
		CHECK(r, vfiomig_mig_switchover_ready(m) == 1, "not ready after the ACK");
		CHECK(r, vfiomig_sim_device_run(s->sd, 5) == 0, "run");
		ret = vfiomig_mig_vm_state(m, VFIOMIG_VM_STOPPED);
		CHECK(r, ret == 0, "vm_state(STOPPED): %s", s->w.log.last);
		ret = vfiomig_mig_save_complete(m, chan);
		CHECK(r, ret == 0, "save_complete: %s", s->w.log.last);
		s->state_hash[it] = state_hash(s->sd); /* stopped: what went */
		ret = vfiomig_mig_return_recv(m, chan, &msg);
		CHECK(r, ret == 0, "return_recv: %s", s->w.log.last);
		CHECK(r, msg.type == VFIOMIG_RETURN_LOADED, "expected LOADED, got %u (%s)", msg.type,
		      msg.reason);
		ret = vfiomig_mig_event(m, VFIOMIG_EVENT_COMPLETED);
		CHECK(r, ret == 0, "event(COMPLETED): %s", s->w.log.last);
		s->bytes += msg.bytes;
		vfiomig_mig_free(m);
		m = NULL;
		s->migrations++;
		if (it + 1 < SOCK_ITERATIONS) {
			/*
			 * Wait until the destination compared the states (it
			 * says so with one byte), then the VM runs here again.
			 */
			char go;

			CHECK(r, vfiomig_stream_read(chan, &go, 1) == 0 && go == 'G',
			      "no go-ahead from the destination: %s", s->w.log.last);
			/* Resume: a new device state (RUNNING) for the next round. */
			ret = vfiomig_device_reset(dev);
			CHECK(r, ret == 0, "reset: %s", s->w.log.last);
		}
	}
out:
	wait_start(&started);
	sock_abandon(s);
	vfiomig_mig_free(m);
	vfiomig_stream_free(chan);
	vfiomig_device_close(dev);
	return NULL;
}

/*
 * The destination: loads each phase as it arrives and answers on the
 * return path. Its device is compared with the source's by the test
 * thread after both threads are joined (each side's simulator belongs to
 * its thread until then).
 */
static void *sock_dest_main(void *arg)
{
	struct sock_side *s = arg;
	struct result *r = &s->res;
	struct vfiomig_device *dev = NULL;
	struct vfiomig_stream *chan = NULL;
	struct vfiomig_mig *m = NULL;
	bool started = false;
	int ret;

	ret = world_new(&s->w);
	CHECK(r, ret == 0, "world: %s", vfiomig_strerror(ret));
	ret = vfiomig_sim_device_add_spec(s->w.sim, s->w.ctx, SOCK_SPEC, &s->sd);
	CHECK(r, ret == 0, "add: %s", s->w.log.last);
	ret = vfiomig_device_open(s->w.ctx, SOCK_DEV, NULL, &dev);
	CHECK(r, ret == 0, "open: %s", s->w.log.last);
	ret = vfiomig_stream_fd_new(s->w.ctx, dup(s->fd), VFIOMIG_STREAM_FD_TAKE, &chan);
	CHECK(r, ret == 0, "stream_fd_new: %s", s->w.log.last);
	wait_start(&started);
	for (int it = 0; it < SOCK_ITERATIONS; it++) {
		int phases = 0;

		ret = vfiomig_mig_new(dev, VFIOMIG_ROLE_LOAD, NULL, &m);
		CHECK(r, ret == 0, "mig_new: %s", s->w.log.last);
		ret = vfiomig_mig_load_setup(m, chan);
		CHECK(r, ret == 0, "load_setup: %s", s->w.log.last);
		do {
			ret = vfiomig_mig_load(m, chan);
			CHECK(r, ret >= 0, "load: %s", s->w.log.last);
			CHECK(r, vfiomig_mig_return_send(m, chan) >= 0, "return_send: %s",
			      s->w.log.last);
			CHECK(r, ++phases < 128, "the stream does not end");
		} while (ret == 1);
		ret = vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING);
		CHECK(r, ret == 0, "vm_state(RUNNING): %s", s->w.log.last);
		CHECK(r, vfiomig_sim_device_mig_state(s->sd) == VFIOMIG_DEVICE_STATE_RUNNING,
		      "destination not RUNNING after the load");
		s->state_hash[it] = state_hash(s->sd);
		{
			VFIOMIG_OPTS(mig_stats, st);

			CHECK(r, vfiomig_mig_get_stats(m, &st) == 0, "stats");
			s->bytes += st.bytes;
		}
		vfiomig_mig_free(m);
		m = NULL;
		s->migrations++;
		if (it + 1 < SOCK_ITERATIONS) {
			CHECK(r, vfiomig_stream_write(chan, "G", 1) == 0, "go-ahead: %s",
			      s->w.log.last);
			/* A fresh destination device for the next migration. */
			ret = vfiomig_device_reset(dev);
			CHECK(r, ret == 0, "reset: %s", s->w.log.last);
		}
	}
out:
	wait_start(&started);
	sock_abandon(s);
	vfiomig_mig_free(m);
	vfiomig_stream_free(chan);
	vfiomig_device_close(dev);
	return NULL;
}

/* ------------------------------------------------------------ helpers */

/*
 * Errors the library returns. (Not every number up to some bound: for an
 * unknown one glibc's strerror allocates a per-thread buffer, which the
 * heap check would see in the test thread.)
 */
static const int errs[] = {
	EPERM, ENOENT, EINTR, EIO, EBADF, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST,
	ENODEV, EINVAL, ENOSPC, ENOTTY, EFBIG, EPIPE, ERANGE, E2BIG, ENODATA, EPROTO,
	EBADMSG, EOVERFLOW, EPROTONOSUPPORT, EOPNOTSUPP, ETIMEDOUT, ECANCELED,
};
#define NERRS (sizeof(errs) / sizeof(errs[0]))

struct helper {
	struct result res;
	char errtext[NERRS][128]; /* vfiomig_strerror(-errs[i]), read by the test thread first */
	long logged;              /* lines delivered */
};

static uint64_t xorshift(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static int count_run(void *user, uint64_t first, uint64_t count)
{
	uint64_t *sum = user;

	(void)first;
	*sum += count;
	return 0;
}

static uint64_t naive_count(const uint64_t *bm, uint64_t nbits)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < nbits; i++)
		n += (bm[i / 64] >> (i % 64)) & 1;
	return n;
}

static void count_fn(void *user, int prio, const char *msg)
{
	long *n = user;

	(void)prio;
	(void)msg;
	(*n)++;
}

/*
 * The context-free helpers and vfiomig_ctx_log, hammered while the
 * migrations run. Contexts are created and dropped here each loop (with
 * their own log callbacks), which must not disturb the other threads'.
 */
static void *helper_main(void *arg)
{
	struct helper *h = arg;
	struct result *r = &h->res;
	uint64_t seed = 0x9e3779b97f4a7c15ull;
	uint64_t a[16], b[16], conv[4];
	struct vfiomig_ctx *ctx = NULL;
	bool started = false;

	wait_start(&started);
	for (int loop = 0; loop < HELPER_LOOPS; loop++) {
		uint64_t nbits = 1 + xorshift(&seed) % 1024, runs = 0, first, cnt;
		long delivered = 0;

		for (size_t e = 0; e < NERRS; e++)
			CHECK(r, strcmp(vfiomig_strerror(-errs[e]), h->errtext[e]) == 0,
			      "vfiomig_strerror(%d) changed to \"%s\"", -errs[e],
			      vfiomig_strerror(-errs[e]));
		for (int i = 0; i < 16; i++) {
			a[i] = xorshift(&seed);
			b[i] = 0;
		}
		/* count ignores bits past nbits; or, set_range and clear never write there. */
		CHECK(r, vfiomig_bitmap_count(a, nbits) == naive_count(a, nbits),
		      "bitmap_count(%llu bits)", (unsigned long long)nbits);
		vfiomig_bitmap_or(b, a, nbits);
		CHECK(r, vfiomig_bitmap_count(b, nbits) == naive_count(a, nbits), "bitmap_or");
		CHECK(r, vfiomig_bitmap_for_each_run(b, nbits, count_run, &runs) == 0 &&
			 runs == naive_count(a, nbits), "bitmap_for_each_run");
		vfiomig_bitmap_clear(b, nbits);
		CHECK(r, naive_count(b, nbits) == 0, "bitmap_clear");
		first = xorshift(&seed) % nbits;
		cnt = 1 + xorshift(&seed) % (nbits - first);
		vfiomig_bitmap_set_range(b, first, cnt);
		CHECK(r, vfiomig_bitmap_count(b, nbits) == cnt, "bitmap_set_range(%llu, %llu)",
		      (unsigned long long)first, (unsigned long long)cnt);
		/* 1024 pages of 4 KiB into 64 KiB pages: 64 bits, one per 16. */
		memset(conv, 0, sizeof(conv));
		vfiomig_bitmap_clear(b, 1024);
		vfiomig_bitmap_set_range(b, 16 * (loop % 64), 1);
		CHECK(r, vfiomig_bitmap_convert(b, 1024, 4096, conv, 65536) == 0 &&
			 conv[0] == 1ull << (loop % 64), "bitmap_convert");

		VFIOMIG_OPTS(ctx_opts, co, .log_fn = count_fn, .log_user = &delivered,
			     .log_priority = VFIOMIG_LOG_INFO);
		CHECK(r, vfiomig_ctx_new(&co, &ctx) == 0, "ctx_new");
		vfiomig_ctx_log(ctx, VFIOMIG_LOG_ERR, "helper: an error line");
		vfiomig_ctx_log(ctx, VFIOMIG_LOG_INFO, "helper: an info line");
		vfiomig_ctx_log(ctx, VFIOMIG_LOG_DEBUG, "helper: filtered out");
		CHECK(r, delivered == 2, "ctx_log delivered %ld lines, expected 2", delivered);
		vfiomig_ctx_set_log_priority(ctx, VFIOMIG_LOG_DEBUG);
		vfiomig_ctx_log(ctx, VFIOMIG_LOG_DEBUG, "helper: now delivered");
		CHECK(r, delivered == 3, "after set_log_priority(DEBUG): %ld lines", delivered);
		h->logged += delivered;
		ctx = vfiomig_ctx_unref(ctx);
	}
out:
	vfiomig_ctx_unref(ctx);
	return NULL;
}

/* ----------------------------------------------------------- the tests */

static pthread_attr_t attr;

static void *idle(void *arg)
{
	return arg;
}

/*
 * glibc keeps a finished thread's stack, with its TLS vector (a calloc),
 * for the next thread: start the test's number of threads once before the
 * leak mark, so the test's own threads reuse those stacks and the heap
 * count after them is the count before.
 */
static void setup(void)
{
	pthread_t th[NTHREADS];

	cr_assert_eq(pthread_attr_init(&attr), 0);
	cr_assert_eq(pthread_attr_setstacksize(&attr, THREAD_STACK), 0);
	for (int i = 0; i < NTHREADS; i++)
		cr_assert_eq(pthread_create(&th[i], &attr, idle, NULL), 0);
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(th[i], NULL);
	leak_baseline();
}

static void teardown(void)
{
	assert_no_leaks();
	pthread_attr_destroy(&attr);
}

TestSuite(threads, .init = setup, .fini = teardown, .timeout = 300);

Test(threads, contexts_migrate_concurrently_and_independently)
{
	struct mem_worker mw[MEM_WORKERS];
	struct sock_side src = { .fd = -1 }, dst = { .fd = -1 };
	static struct helper h;
	pthread_t th[NTHREADS];
	int sv[2], n = 0;

	/* What vfiomig_strerror says before any thread runs. */
	for (size_t e = 0; e < NERRS; e++)
		snprintf(h.errtext[e], sizeof(h.errtext[e]), "%s", vfiomig_strerror(-errs[e]));
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	src.fd = sv[0];
	dst.fd = sv[1];
	cr_assert_eq(pthread_barrier_init(&start_line, NULL, NTHREADS), 0);
	for (int i = 0; i < MEM_WORKERS; i++) {
		memset(&mw[i], 0, sizeof(mw[i]));
		mw[i].id = i;
		cr_assert_eq(pthread_create(&th[n++], &attr, mem_worker_main, &mw[i]), 0);
	}
	cr_assert_eq(pthread_create(&th[n++], &attr, sock_source_main, &src), 0);
	cr_assert_eq(pthread_create(&th[n++], &attr, sock_dest_main, &dst), 0);
	cr_assert_eq(pthread_create(&th[n++], &attr, helper_main, &h), 0);
	cr_assert_eq(n, NTHREADS);
	for (int i = 0; i < n; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&start_line);
	close(sv[0]);
	close(sv[1]);

	for (int i = 0; i < MEM_WORKERS; i++) {
		cr_expect(!mw[i].res.failed, "memory worker %d: %s", i, mw[i].res.why);
		cr_expect_eq(mw[i].migrations, MEM_ITERATIONS, "memory worker %d", i);
		/* One page per device per round, each reported exactly once. */
		cr_expect_eq(mw[i].dirty_seen, (uint64_t)MEM_ITERATIONS * 3 * MEM_DEVS);
	}
	cr_expect(!src.res.failed, "socket source: %s", src.res.why);
	cr_expect(!dst.res.failed, "socket destination: %s", dst.res.why);
	cr_expect(!h.res.failed, "helper thread: %s", h.res.why);
	cr_expect_eq(src.migrations, SOCK_ITERATIONS);
	cr_expect_eq(dst.migrations, SOCK_ITERATIONS);
	cr_expect_eq(src.bytes, dst.bytes, "the destination read what the source wrote");
	for (int i = 0; i < SOCK_ITERATIONS; i++)
		cr_expect_eq(src.state_hash[i], dst.state_hash[i],
			     "socket migration %d: the destination differs from its source", i);
	cr_expect_eq(h.logged, 3L * HELPER_LOOPS);
	/* Joined: the two sides' simulators are the test thread's now. */
	if (src.sd && dst.sd)
		cr_expect(same_state(src.sd, dst.sd),
			  "the socket destination differs from its source");
	{
		struct result r = { .failed = false };

		world_free(&src.w, &r);
		world_free(&dst.w, &r);
		cr_expect(!r.failed, "%s", r.why);
	}
	cr_assert_eq(__atomic_load_n(&tsan_reports, __ATOMIC_RELAXED), 0,
		     "ThreadSanitizer reported %ld races (see above)", tsan_reports);
}

#if defined(TESTUTIL_TSAN)
/*
 * The race check can fail: a child process with a deliberate race gets a
 * TSan report, which __tsan_on_report turns into exit status 67 (neither
 * 0 nor TSan's own 66, which it also uses when it gives up for another
 * reason). So a clean run above means something. The child is this
 * program executed again (a constructor runs the race before criterion
 * starts): a forked criterion worker may not start threads under TSan
 * ("starting new threads after multi-threaded fork is not supported").
 */
#define RACE_ENV "VFIOMIG_TEST_THREADS_RACE=1"

static int racy;

static void *race_once(void *arg)
{
	racy++;
	return arg;
}

__attribute__((constructor)) static void race_child_main(void)
{
	const char *v = getenv("VFIOMIG_TEST_THREADS_RACE");
	pthread_t t;
	int devnull;

	if (!v || strcmp(v, "1"))
		return;
	devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
	if (devnull >= 0)
		dup2(devnull, 2); /* the report is expected: keep it out of the log */
	race_child = true;
	if (pthread_create(&t, NULL, race_once, NULL))
		_exit(1);
	racy++;
	pthread_join(t, NULL);
	_exit(0);
}

Test(threads, tsan_reports_a_deliberate_race)
{
	extern char **environ;
	char *argv[] = { (char *)"test_threads", NULL };
	char **envp;
	size_t n = 0;
	pid_t pid;
	int st;

	while (environ[n])
		n++;
	envp = calloc(n + 2, sizeof(*envp));
	cr_assert_not_null(envp);
	memcpy(envp, environ, n * sizeof(*envp));
	envp[n] = (char *)RACE_ENV;
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		execve("/proc/self/exe", argv, envp);
		_exit(127);
	}
	free(envp);
	cr_assert_eq(waitpid(pid, &st, 0), pid);
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == RACE_REPORTED,
		  "a racing child was not reported (status %#x)", st);
}
#endif
