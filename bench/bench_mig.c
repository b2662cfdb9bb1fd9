/* SPDX-License-Identifier: MIT */
/*
 * make bench: the library's data path and device sets, against what the
 * same bytes cost without it.
 *
 *   save-pipe / load-pipe     a 256 MiB stop-and-copy into a pipe (a thread
 *                             drains it) / a load from a pipe (a thread
 *                             fills it), vs a plain write() / read() loop
 *                             of the same bytes through the same kind of
 *                             pipe
 *   migrate-socketpair        source and destination in two threads over a
 *                             socketpair, vs a plain write/read loop of the
 *                             same bytes over a socketpair
 *   migrate-socketpair-vmm    the same run, vs what a VMM's own loop costs
 *                             without the library: copy out of the device,
 *                             write(); read(), copy into the device
 *   save-mem / load-mem       into / out of the caller's memory (a fixed
 *                             memory stream), vs memcpy of the same bytes
 *                             into the same memory
 *   save-mempipe /            into / out of a memory pipe, which grows into
 *   load-mempipe              fresh memory, vs memcpy into fresh memory
 *                             (malloc; both pay the page faults) / out of it
 *   parallel-stopcopy-4x256M  4 devices x 256 MiB through a set, each on a
 *   parallel-load-4x256M      memory stream of its own (the caller's memory,
 *                             touched before the runs): parallel
 *                             (vfiomig_mig_set_save_complete / _set_load,
 *                             one worker per stream) vs serial (threads = 1)
 *   parallel-memcpy-4x256M    the same bytes memcpy'd by two threads vs one:
 *                             the ceiling the machine's memory sets
 *   demo-pause-64M / -1G      the pause of a live migration as vfiomig demo
 *                             runs it, split into the time spent in the
 *                             kernel interface (here: the simulator) and
 *                             the rest (the library)
 *
 * The devices are simulated with the `copy` data path (sim.h: no checksum
 * work on the device side, a data_fd read or write is one copy of state
 * bytes), so what is timed is the library plus the one copy a real
 * device's data_fd also costs. Each library run is checked: the
 * destination's state must equal the source's, or the bench fails.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* pipe2, F_SETPIPE_SZ */
#endif
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

#include "uapi.h" /* the VFIO uAPI, for the baselines' own use of the (simulated) kernel */

#define MIB (1ull << 20)
#define DEV_STATE (256 * MIB)
#define CHUNK (1 * MIB)
#define NSET 4

#ifndef SIM_DEV_COST
/* The simulator's cheap data path (its spec key); see sim.h. */
#define SIM_DEV_COST ",cost=copy"
#endif

static void die(const char *what, int err)
{
	fprintf(stderr, "bench_mig: %s: %s\n", what, vfiomig_strerror(err));
	exit(1);
}

#define CHECK(expr)                          \
	do {                                 \
		int _r = (expr);             \
		if (_r < 0)                  \
			die(#expr, _r);      \
	} while (0)

/* ----------------------------------- a kernel interface that keeps time */

static const struct vfiomig_kernel_ops *inner;
static void *inner_user;
static __thread uint64_t kops_ns; /* time this thread spent in the kernel interface */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#define TIMED(call)                                  \
	({                                           \
		uint64_t _t0 = mono_ns();            \
		__typeof__(call) _r = (call);        \
		kops_ns += mono_ns() - _t0;          \
		_r;                                  \
	})

static int t_open(void *u, const char *p, int f) { (void)u; return TIMED(inner->open(inner_user, p, f)); }
static int t_close(void *u, int fd) { (void)u; return TIMED(inner->close(inner_user, fd)); }
static int t_dup(void *u, int fd) { (void)u; return TIMED(inner->dup(inner_user, fd)); }
static int t_ioctl(void *u, int fd, unsigned long r, void *a)
{
	(void)u;
	return TIMED(inner->ioctl(inner_user, fd, r, a));
}
static ssize_t t_read(void *u, int fd, void *b, size_t l)
{
	(void)u;
	return TIMED(inner->read(inner_user, fd, b, l));
}
static ssize_t t_write(void *u, int fd, const void *b, size_t l)
{
	(void)u;
	return TIMED(inner->write(inner_user, fd, b, l));
}
static ssize_t t_pread(void *u, int fd, void *b, size_t l, uint64_t o)
{
	(void)u;
	return TIMED(inner->pread(inner_user, fd, b, l, o));
}
static ssize_t t_pwrite(void *u, int fd, const void *b, size_t l, uint64_t o)
{
	(void)u;
	return TIMED(inner->pwrite(inner_user, fd, b, l, o));
}
static int t_mmap(void *u, int fd, uint64_t o, size_t l, int p, void **a)
{
	(void)u;
	return TIMED(inner->mmap(inner_user, fd, o, l, p, a));
}
static int t_munmap(void *u, void *a, size_t l) { (void)u; return TIMED(inner->munmap(inner_user, a, l)); }
static ssize_t t_readlink(void *u, const char *p, char *b, size_t l)
{
	(void)u;
	return TIMED(inner->readlink(inner_user, p, b, l));
}
static int t_readdir(void *u, const char *p, vfiomig_dirent_fn fn, void *cu)
{
	(void)u;
	return TIMED(inner->readdir(inner_user, p, fn, cu));
}

static const struct vfiomig_kernel_ops timed_ops = {
	.sz = sizeof(timed_ops), .open = t_open, .close = t_close, .dup = t_dup,
	.ioctl = t_ioctl, .read = t_read, .write = t_write, .pread = t_pread,
	.pwrite = t_pwrite, .mmap = t_mmap, .munmap = t_munmap, .readlink = t_readlink,
	.readdir = t_readdir,
};

/* --------------------------------------------------------- the devices */

static struct vfiomig_sim *sim;
static struct vfiomig_ctx *ctx;
/*
 * The destination of migrate-socketpair runs in another thread, so its
 * device belongs to a context of its own (a context is used by one
 * thread at a time); both contexts reach the same simulated kernel.
 */
static struct vfiomig_ctx *ctx2;

struct dev {
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_mig *m;
};

static void dev_add_in(struct vfiomig_ctx *c, struct dev *d, const char *name, uint64_t state,
		       uint32_t dirty, bool copy)
{
	char spec[256];

	snprintf(spec, sizeof(spec), "sim:pci,name=%s,mig=v2-p2p-precopy,state=%llu,dirty=%u%s", name,
		 (unsigned long long)state, dirty, copy ? SIM_DEV_COST : "");
	memset(d, 0, sizeof(*d));
	CHECK(vfiomig_sim_device_add_spec(sim, c, spec, &d->sd));
	CHECK(vfiomig_device_open(c, name, NULL, &d->dev));
}

static void dev_add(struct dev *d, const char *name, uint64_t state, uint32_t dirty, bool copy)
{
	dev_add_in(ctx, d, name, state, dirty, copy);
}

static void mig_new(struct dev *d, uint32_t role, bool precopy)
{
	VFIOMIG_OPTS(mig_opts, o, .flags = precopy ? 0 : VFIOMIG_MIG_F_NO_PRECOPY);

	CHECK(vfiomig_mig_new(d->dev, role, &o, &d->m));
}

/* After a run: the destination equals the source; both back to RUNNING for the next run. */
static int finish_pair(struct dev *src, struct dev *dst)
{
	size_t la, lb;
	const void *a, *b;
	int bad;

	bench_untimed_begin();
	a = vfiomig_sim_device_state(src->sd, &la);
	b = vfiomig_sim_device_state(dst->sd, &lb);
	bad = la != lb || memcmp(a, b, la) != 0;

	CHECK(vfiomig_mig_vm_state(src->m, VFIOMIG_VM_RUNNING));
	CHECK(vfiomig_mig_vm_state(dst->m, VFIOMIG_VM_RUNNING));
	vfiomig_mig_free(src->m);
	vfiomig_mig_free(dst->m);
	src->m = dst->m = NULL;
	/* The guest changes a page, so no run can pass on the previous run's state. */
	CHECK(vfiomig_sim_device_run(src->sd, 1));
	bench_untimed_end();
	return bad;
}

/* ------------------------------------- a VMM without the library (baselines) */

/*
 * A device a VMM drives itself, through the same simulated kernel: the
 * container, group and device fds, MIG_DEVICE_STATE, and its data_fd
 * read or written in CHUNK pieces. The baselines' devices are devices of
 * their own (a group opens once), with the same kind and state size.
 */
struct raw {
	struct vfiomig_sim_device *sd;
	int c, g, d, data;
};

static void raw_open(struct raw *r, const char *name, uint64_t state)
{
	char spec[256], path[32];
	int c;

	snprintf(spec, sizeof(spec), "sim:pci,name=%s,mig=v2-p2p-precopy,state=%llu%s", name,
		 (unsigned long long)state, SIM_DEV_COST);
	CHECK(vfiomig_sim_device_add_spec(sim, NULL, spec, &r->sd));
	CHECK(vfiomig_sim_device_run(r->sd, state / 4096));
	r->c = inner->open(inner_user, "/dev/vfio/vfio", O_RDWR);
	snprintf(path, sizeof(path), "/dev/vfio/%d", vfiomig_sim_device_group(r->sd));
	r->g = inner->open(inner_user, path, O_RDWR);
	if (r->c < 0 || r->g < 0)
		die("raw device: open", r->c < 0 ? r->c : r->g);
	c = r->c;
	CHECK(inner->ioctl(inner_user, r->g, VU_GROUP_SET_CONTAINER, &c));
	CHECK(inner->ioctl(inner_user, r->c, VU_SET_IOMMU, (void *)(unsigned long)VU_TYPE1v2_IOMMU));
	r->d = inner->ioctl(inner_user, r->g, VU_GROUP_GET_DEVICE_FD, (void *)name);
	CHECK(r->d);
	r->data = -1;
}

static void raw_state(struct raw *r, uint32_t state)
{
	struct {
		struct vu_device_feature hdr;
		struct vu_feature_mig_state st;
	} f = {
		.hdr = { .argsz = sizeof(f),
			 .flags = VU_DEVICE_FEATURE_SET | VU_FEATURE_MIG_DEVICE_STATE },
		.st = { .device_state = state, .data_fd = -1 },
	};

	CHECK(inner->ioctl(inner_user, r->d, VU_DEVICE_FEATURE, &f));
	if (r->data >= 0)
		inner->close(inner_user, r->data);
	r->data = f.st.data_fd;
}

static void raw_close(struct raw *r)
{
	if (r->data >= 0)
		inner->close(inner_user, r->data);
	inner->close(inner_user, r->d);
	inner->close(inner_user, r->g);
	inner->close(inner_user, r->c);
}

/* Stop-and-copy into buf (room: cap): the image's bytes. */
static uint64_t raw_save(struct raw *r, unsigned char *buf, uint64_t cap)
{
	uint64_t done = 0;
	ssize_t n;

	raw_state(r, VU_STATE_STOP_COPY);
	while ((n = inner->read(inner_user, r->data, buf + done,
				cap - done < CHUNK ? (size_t)(cap - done) : CHUNK)) > 0)
		done += (uint64_t)n;
	if (n < 0)
		die("raw device: data_fd read", (int)n);
	raw_state(r, VU_STATE_RUNNING);
	return done;
}

static void raw_load(struct raw *r, const unsigned char *buf, uint64_t len)
{
	uint64_t done = 0;

	raw_state(r, VU_STATE_RESUMING);
	while (done < len) {
		ssize_t n = inner->write(inner_user, r->data, buf + done,
					 len - done < CHUNK ? (size_t)(len - done) : CHUNK);

		if (n <= 0)
			die("raw device: data_fd write", n ? (int)n : -EIO);
		done += (uint64_t)n;
	}
	raw_state(r, VU_STATE_RUNNING); /* the device checks the image here */
}

/* ------------------------------------------------------ fd pumps (threads) */

struct pump {
	int fd;
	uint64_t bytes;      /* write: how many; read: until EOF, counted */
	unsigned char *buf;
};

static void *drain(void *arg)
{
	struct pump *p = arg;
	ssize_t n;

	p->bytes = 0;
	while ((n = read(p->fd, p->buf, CHUNK)) > 0)
		p->bytes += (uint64_t)n;
	return NULL;
}

/* Write `bytes` of buf into fd in CHUNK pieces: 0, or 1 if the fd refused. */
static int write_all(int fd, const unsigned char *buf, uint64_t bytes)
{
	uint64_t done = 0;

	while (done < bytes) {
		size_t len = bytes - done < CHUNK ? (size_t)(bytes - done) : CHUNK;
		ssize_t n = write(fd, buf + done, len);

		if (n <= 0)
			return 1;
		done += (uint64_t)n;
	}
	return 0;
}

static void *fill(void *arg)
{
	struct pump *p = arg;

	write_all(p->fd, p->buf, p->bytes); /* a short fill shows as a short read */
	close(p->fd);
	return NULL;
}

static void bigpipe(int fds[2])
{
	if (pipe2(fds, O_CLOEXEC))
		die("pipe2", -errno);
	fcntl(fds[0], F_SETPIPE_SZ, 1 << 20); /* as a VMM would, if it may */
}

/* ------------------------------------------------------------ save/load */

static struct dev A, B;
static unsigned char *scratch; /* DEV_STATE + slack: baselines' buffer, saved streams */
static unsigned char *scratch2;
static uint64_t stream_len;    /* bytes of a saved stream of A (set by the first run) */

/* Save A through a pipe a thread drains. */
static int lib_save_pipe(void *u)
{
	struct pump p = { .buf = scratch2 };
	struct vfiomig_stream *s;
	pthread_t th;
	int fds[2];

	(void)u;
	bigpipe(fds);
	p.fd = fds[0];
	pthread_create(&th, NULL, drain, &p);
	mig_new(&A, VFIOMIG_ROLE_SAVE, false);
	CHECK(vfiomig_stream_fd_new(ctx, fds[1], VFIOMIG_STREAM_FD_TAKE, &s));
	CHECK(vfiomig_mig_save_setup(A.m, s));
	CHECK(vfiomig_mig_vm_state(A.m, VFIOMIG_VM_STOPPED));
	CHECK(vfiomig_mig_save_complete(A.m, s));
	vfiomig_stream_free(s); /* the migration still holds it: closed at mig_free */
	CHECK(vfiomig_mig_vm_state(A.m, VFIOMIG_VM_RUNNING));
	vfiomig_mig_free(A.m);
	A.m = NULL;
	pthread_join(th, NULL);
	if (!stream_len)
		stream_len = p.bytes;
	return p.bytes != stream_len || p.bytes < DEV_STATE;
}

static int base_write_pipe(void *u)
{
	struct pump p = { .buf = scratch2 };
	pthread_t th;
	int fds[2];

	(void)u;
	bigpipe(fds);
	p.fd = fds[0];
	pthread_create(&th, NULL, drain, &p);
	if (write_all(fds[1], scratch, stream_len))
		return 1;
	close(fds[1]);
	pthread_join(th, NULL);
	close(fds[0]);
	return p.bytes != stream_len;
}

/* A saved stream of A, in memory (scratch), for the loads. */
static void save_to_memory(void)
{
	struct vfiomig_stream *s;

	CHECK(vfiomig_stream_mem_fixed_new(ctx, scratch, DEV_STATE + 16 * MIB, 0, &s));
	mig_new(&A, VFIOMIG_ROLE_SAVE, false);
	CHECK(vfiomig_mig_save_setup(A.m, s));
	CHECK(vfiomig_mig_save_complete(A.m, s));
	stream_len = vfiomig_stream_bytes_written(s);
	vfiomig_stream_free(s);
	CHECK(vfiomig_mig_vm_state(A.m, VFIOMIG_VM_RUNNING));
	vfiomig_mig_free(A.m);
	A.m = NULL;
}

static int check_b_equals_a(void)
{
	size_t la, lb;
	const void *a = vfiomig_sim_device_state(A.sd, &la);
	const void *b = vfiomig_sim_device_state(B.sd, &lb);

	return la != lb || memcmp(a, b, la) != 0;
}

static int lib_load_pipe(void *u)
{
	struct pump p = { .buf = scratch, .bytes = stream_len };
	struct vfiomig_stream *s;
	pthread_t th;
	int fds[2], ret;

	(void)u;
	bigpipe(fds);
	p.fd = fds[1];
	pthread_create(&th, NULL, fill, &p);
	mig_new(&B, VFIOMIG_ROLE_LOAD, false);
	CHECK(vfiomig_stream_fd_new(ctx, fds[0], VFIOMIG_STREAM_FD_TAKE, &s));
	CHECK(vfiomig_mig_load_setup(B.m, s));
	ret = vfiomig_mig_load(B.m, s);
	vfiomig_stream_free(s);
	pthread_join(th, NULL);
	if (ret)
		die("load from a pipe", ret < 0 ? ret : -EPROTO);
	CHECK(vfiomig_mig_vm_state(B.m, VFIOMIG_VM_RUNNING));
	vfiomig_mig_free(B.m);
	B.m = NULL;
	return 0;
}

static int base_read_pipe(void *u)
{
	struct pump p = { .buf = scratch, .bytes = stream_len };
	pthread_t th;
	int fds[2];
	uint64_t got = 0;
	ssize_t n;

	(void)u;
	bigpipe(fds);
	p.fd = fds[1];
	pthread_create(&th, NULL, fill, &p);
	while ((n = read(fds[0], scratch2 + got % DEV_STATE, CHUNK)) > 0)
		got += (uint64_t)n;
	pthread_join(th, NULL);
	close(fds[0]);
	return got != stream_len;
}

/* Source and destination over a socketpair, the destination in a thread. */
struct loader {
	struct dev *d;
	struct vfiomig_stream *s;
	int ret;
};

static void *load_thread(void *arg)
{
	struct loader *l = arg;

	l->ret = vfiomig_mig_load_setup(l->d->m, l->s);
	if (!l->ret)
		l->ret = vfiomig_mig_load(l->d->m, l->s);
	return NULL;
}

static int lib_socketpair(void *u)
{
	struct vfiomig_stream *out, *in;
	struct loader l = { .d = &B };
	pthread_t th;
	int sv[2];

	(void)u;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		die("socketpair", -errno);
	mig_new(&A, VFIOMIG_ROLE_SAVE, false);
	mig_new(&B, VFIOMIG_ROLE_LOAD, false);
	CHECK(vfiomig_stream_fd_new(ctx, sv[0], VFIOMIG_STREAM_FD_TAKE, &out));
	CHECK(vfiomig_stream_fd_new(ctx2, sv[1], VFIOMIG_STREAM_FD_TAKE, &in));
	l.s = in;
	pthread_create(&th, NULL, load_thread, &l);
	CHECK(vfiomig_mig_save_setup(A.m, out));
	CHECK(vfiomig_mig_vm_state(A.m, VFIOMIG_VM_STOPPED));
	CHECK(vfiomig_mig_save_complete(A.m, out));
	pthread_join(th, NULL);
	if (l.ret)
		die("load over the socketpair", l.ret < 0 ? l.ret : -EPROTO);
	vfiomig_stream_free(out);
	vfiomig_stream_free(in);
	return finish_pair(&A, &B);
}

static int base_socketpair(void *u)
{
	struct pump p = { .buf = scratch2 };
	pthread_t th;
	int sv[2];

	(void)u;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		die("socketpair", -errno);
	p.fd = sv[1];
	pthread_create(&th, NULL, drain, &p);
	if (write_all(sv[0], scratch, stream_len))
		return 1;
	shutdown(sv[0], SHUT_WR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	return p.bytes != stream_len;
}

/*
 * A VMM's loop without the library, over a socketpair: the source reads
 * its device's data_fd and writes the socket, the destination reads the
 * socket and writes its device's data_fd.
 */
static struct raw RA, RB;
static unsigned char *rawimg; /* RA's image, as the memory baselines save it */
static uint64_t rawimg_len;

static void *vmm_dest(void *arg)
{
	struct pump *p = arg;
	ssize_t n;

	raw_state(&RB, VU_STATE_RESUMING);
	p->bytes = 0;
	while ((n = read(p->fd, p->buf, CHUNK)) > 0) {
		if (inner->write(inner_user, RB.data, p->buf, (size_t)n) != n)
			die("raw device: data_fd write", -EIO);
		p->bytes += (uint64_t)n;
	}
	raw_state(&RB, VU_STATE_RUNNING);
	return NULL;
}

static int base_vmm_socketpair(void *u)
{
	struct pump p = { .buf = scratch2 };
	unsigned char *buf = scratch; /* a chunk buffer of its own */
	pthread_t th;
	uint64_t sent = 0;
	ssize_t n;
	int sv[2];

	(void)u;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		die("socketpair", -errno);
	p.fd = sv[1];
	pthread_create(&th, NULL, vmm_dest, &p);
	raw_state(&RA, VU_STATE_STOP_COPY);
	while ((n = inner->read(inner_user, RA.data, buf, CHUNK)) > 0) {
		if (write_all(sv[0], buf, (uint64_t)n))
			return 1;
		sent += (uint64_t)n;
	}
	raw_state(&RA, VU_STATE_RUNNING);
	shutdown(sv[0], SHUT_WR);
	pthread_join(th, NULL);
	close(sv[0]);
	close(sv[1]);
	return n < 0 || p.bytes != sent;
}

/* Memory: save into the caller's memory; then load from it. */
static int lib_save_fixed(void *u)
{
	struct vfiomig_stream *s;
	uint64_t n;

	(void)u;
	CHECK(vfiomig_stream_mem_fixed_new(ctx, scratch2, DEV_STATE + 16 * MIB, 0, &s));
	mig_new(&A, VFIOMIG_ROLE_SAVE, false);
	CHECK(vfiomig_mig_save_setup(A.m, s));
	CHECK(vfiomig_mig_vm_state(A.m, VFIOMIG_VM_STOPPED));
	CHECK(vfiomig_mig_save_complete(A.m, s));
	n = vfiomig_stream_bytes_written(s);
	vfiomig_stream_free(s);
	return n != stream_len;
}

static int lib_load_fixed(void *u)
{
	struct vfiomig_stream *s;
	int ret;

	(void)u;
	CHECK(vfiomig_stream_mem_fixed_new(ctx, scratch2, stream_len, VFIOMIG_STREAM_MEM_READ, &s));
	mig_new(&B, VFIOMIG_ROLE_LOAD, false);
	CHECK(vfiomig_mig_load_setup(B.m, s));
	ret = vfiomig_mig_load(B.m, s);
	if (ret)
		die("load from memory", ret < 0 ? ret : -EPROTO);
	vfiomig_stream_free(s);
	return finish_pair(&A, &B);
}

/* Memory: save into a memory pipe; then load it. */
static struct vfiomig_stream *mempipe;

static int lib_save_mem(void *u)
{
	(void)u;
	CHECK(vfiomig_stream_mem_pipe_new(ctx, &mempipe));
	mig_new(&A, VFIOMIG_ROLE_SAVE, false);
	CHECK(vfiomig_mig_save_setup(A.m, mempipe));
	CHECK(vfiomig_mig_vm_state(A.m, VFIOMIG_VM_STOPPED));
	CHECK(vfiomig_mig_save_complete(A.m, mempipe));
	return vfiomig_stream_bytes_written(mempipe) != stream_len;
}

static int lib_load_mem(void *u)
{
	int ret;

	(void)u;
	mig_new(&B, VFIOMIG_ROLE_LOAD, false);
	CHECK(vfiomig_mig_load_setup(B.m, mempipe));
	ret = vfiomig_mig_load(B.m, mempipe);
	if (ret)
		die("load from memory", ret < 0 ? ret : -EPROTO);
	vfiomig_stream_free(mempipe);
	mempipe = NULL;
	return finish_pair(&A, &B);
}

static int base_raw_save(void *u)
{
	(void)u;
	rawimg_len = raw_save(&RA, rawimg, DEV_STATE + 16 * MIB);
	return rawimg_len < DEV_STATE;
}

static int base_raw_load(void *u)
{
	(void)u;
	raw_load(&RB, rawimg, rawimg_len);
	return 0;
}

/* The same, into memory never touched before, and back out of it (then freed). */
static unsigned char *fresh;

static int base_raw_save_fresh(void *u)
{
	(void)u;
	fresh = malloc(DEV_STATE + 16 * MIB);
	if (!fresh)
		die("malloc", -ENOMEM);
	rawimg_len = raw_save(&RA, fresh, DEV_STATE + 16 * MIB);
	return rawimg_len < DEV_STATE;
}

static int base_raw_load_fresh(void *u)
{
	(void)u;
	raw_load(&RB, fresh, rawimg_len);
	free(fresh);
	return 0;
}

/* ----------------------------------------------------------- device sets */

static struct dev S[NSET], D[NSET];
static struct vfiomig_stream *pipes[NSET];
/*
 * Each member's stream is the caller's memory, touched once before the
 * runs: what is timed is the library and the devices, not the kernel
 * zeroing fresh pages for a growing stream (save-mempipe measures that).
 */
static unsigned char *member_mem[NSET];
static double t_save_serial[BENCH_RUNS], t_save_par[BENCH_RUNS];
static double t_load_serial[BENCH_RUNS], t_load_par[BENCH_RUNS];
static double t_copy_serial[BENCH_RUNS], t_copy_par[BENCH_RUNS];

/* One whole set migration through memory streams; returns the stop-copy and load times. */
static void set_run(uint32_t threads, double *t_save, double *t_load)
{
	VFIOMIG_OPTS(mig_set_run_opts, ro, .threads = threads);
	struct vfiomig_mig_set *ss, *ds;
	double t0;

	CHECK(vfiomig_mig_set_new(ctx, &ss));
	CHECK(vfiomig_mig_set_new(ctx, &ds));
	for (int i = 0; i < NSET; i++) {
		CHECK(vfiomig_stream_mem_fixed_new(ctx, member_mem[i], DEV_STATE + 16 * MIB, 0, &pipes[i]));
		mig_new(&S[i], VFIOMIG_ROLE_SAVE, false);
		mig_new(&D[i], VFIOMIG_ROLE_LOAD, false);
		CHECK(vfiomig_mig_set_add(ss, S[i].m));
		CHECK(vfiomig_mig_set_add(ds, D[i].m));
		CHECK(vfiomig_mig_save_setup(S[i].m, pipes[i]));
	}
	CHECK(vfiomig_mig_set_vm_state(ss, VFIOMIG_VM_STOPPED));
	t0 = bench_now();
	CHECK(vfiomig_mig_set_save_complete(ss, &ro));
	*t_save = bench_now() - t0;
	for (int i = 0; i < NSET; i++) {
		uint64_t len = vfiomig_stream_bytes_written(pipes[i]);

		vfiomig_stream_free(pipes[i]);
		CHECK(vfiomig_stream_mem_fixed_new(ctx, member_mem[i], len, VFIOMIG_STREAM_MEM_READ,
						   &pipes[i]));
		CHECK(vfiomig_mig_load_setup(D[i].m, pipes[i]));
	}
	t0 = bench_now();
	CHECK(vfiomig_mig_set_load(ds, &ro));
	*t_load = bench_now() - t0;
	vfiomig_mig_set_free(ss);
	vfiomig_mig_set_free(ds);
	for (int i = 0; i < NSET; i++) {
		if (finish_pair(&S[i], &D[i])) {
			fprintf(stderr, "bench_mig: set member %d differs after the load\n", i);
			exit(1);
		}
		vfiomig_stream_free(pipes[i]);
	}
}

/*
 * What the machine allows: the same bytes (4 x 256 MiB, memory to memory)
 * copied by one thread and by two. A set run that is faster in parallel
 * than this is by doing its CPU work (the CRC32C) on both cores.
 */
static void *copy_half(void *arg)
{
	long t = (long)arg;

	for (int i = (int)t; i < NSET; i += 2)
		memcpy(member_mem[i], vfiomig_sim_device_state(S[i].sd, &(size_t){ 0 }), DEV_STATE);
	return NULL;
}

static void memcpy_scaling(double *serial, double *parallel)
{
	pthread_t th;
	double t0 = bench_now();

	copy_half((void *)0L);
	copy_half((void *)1L);
	*serial = bench_now() - t0;
	t0 = bench_now();
	pthread_create(&th, NULL, copy_half, (void *)1L);
	copy_half((void *)0L);
	pthread_join(th, NULL);
	*parallel = bench_now() - t0;
}

/* ------------------------------------------------------------ demo pause */

static void demo_pause(const char *name, uint64_t state)
{
	double pause[BENCH_RUNS], lib[BENCH_RUNS], dev[BENCH_RUNS];
	struct dev src, dst;
	char sn[16], dn[16];
	static int bus = 0x40;

	snprintf(sn, sizeof(sn), "0000:%02x:00.0", bus++);
	snprintf(dn, sizeof(dn), "0000:%02x:00.0", bus++);
	/* The default kind: the simulator's checksums are part of what it costs. */
	dev_add(&src, sn, state, 16, false);
	dev_add(&dst, dn, state, 0, false);
	CHECK(vfiomig_sim_device_run(src.sd, state / 4096));
	for (int r = 0; r < BENCH_RUNS; r++) {
		struct vfiomig_stream *w;
		uint64_t k0;
		double t0;
		int a = VFIOMIG_ADVICE_CONTINUE, ret;

		CHECK(vfiomig_stream_mem_pipe_new(ctx, &w));
		mig_new(&src, VFIOMIG_ROLE_SAVE, true);
		mig_new(&dst, VFIOMIG_ROLE_LOAD, true);
		CHECK(vfiomig_mig_save_setup(src.m, w));
		CHECK(vfiomig_mig_load_setup(dst.m, w));
		for (int round = 0; round < 30 && a == VFIOMIG_ADVICE_CONTINUE; round++) {
			CHECK(vfiomig_sim_device_run(src.sd, 64));
			CHECK(vfiomig_mig_save_iterate(src.m, w, 0));
			CHECK(vfiomig_mig_load(dst.m, w));
			a = vfiomig_mig_stop_advice(src.m, 300, NULL);
			CHECK(a);
		}
		CHECK(vfiomig_sim_device_run(src.sd, 16));
		k0 = kops_ns;
		t0 = bench_now();
		CHECK(vfiomig_mig_vm_state(src.m, VFIOMIG_VM_STOPPED));
		CHECK(vfiomig_mig_save_complete(src.m, w));
		ret = vfiomig_mig_load(dst.m, w);
		if (ret)
			die("demo load", ret < 0 ? ret : -EPROTO);
		CHECK(vfiomig_mig_vm_state(dst.m, VFIOMIG_VM_RUNNING));
		pause[r] = bench_now() - t0;
		dev[r] = (double)(kops_ns - k0) / 1e9;
		lib[r] = pause[r] - dev[r];
		CHECK(vfiomig_mig_vm_state(src.m, VFIOMIG_VM_RUNNING));
		if (finish_pair(&src, &dst)) {
			fprintf(stderr, "bench_mig: %s: the destination differs\n", name);
			exit(1);
		}
		vfiomig_stream_free(w);
	}
	{
		char what[64];
		double p = bench_median(pause, BENCH_RUNS), l = bench_median(lib, BENCH_RUNS),
		       d = bench_median(dev, BENCH_RUNS);

		snprintf(what, sizeof(what), "library %.2f ms + simulator %.2f ms", l * 1e3, d * 1e3);
		bench_line_value(name, p * 1e3, "ms", what);
	}
	vfiomig_device_close(src.dev);
	vfiomig_device_close(dst.dev);
}

int main(int argc, char **argv)
{
	VFIOMIG_OPTS(ctx_opts, co, .kernel_ops = &timed_ops);
	bool quick = argc > 1 && strcmp(argv[1], "--quick") == 0;
	double tl, tb, tl2;

	CHECK(vfiomig_sim_new(NULL, &sim));
	inner = vfiomig_sim_kernel_ops();
	inner_user = sim;
	co.kernel_user = sim;
	CHECK(vfiomig_ctx_new(&co, &ctx));
	CHECK(vfiomig_ctx_new(&co, &ctx2));
	scratch = malloc(DEV_STATE + 16 * MIB);
	scratch2 = malloc(DEV_STATE + 16 * MIB);
	if (!scratch || !scratch2)
		die("malloc", -ENOMEM);
	memset(scratch, 0x5a, DEV_STATE + 16 * MIB);
	memset(scratch2, 0xa5, DEV_STATE + 16 * MIB);

	dev_add(&A, "0000:10:00.0", DEV_STATE, 0, true);
	dev_add_in(ctx2, &B, "0000:11:00.0", DEV_STATE, 0, true);
	CHECK(vfiomig_sim_device_run(A.sd, DEV_STATE / 4096)); /* every page written once */
	printf("one device of 256 MiB, stop-and-copy only; medians of %d interleaved runs\n",
	       BENCH_RUNS);

	bench_pair(0, lib_save_pipe, base_write_pipe, NULL, &tl, &tb);
	bench_line_rate("save-pipe", (double)stream_len, tl, "write() loop into a pipe", tb);

	save_to_memory();
	bench_pair(0, lib_load_pipe, base_read_pipe, NULL, &tl, &tb);
	if (check_b_equals_a()) {
		fprintf(stderr, "bench_mig: load-pipe: the destination differs\n");
		return 1;
	}
	bench_line_rate("load-pipe", (double)stream_len, tl, "read() loop from a pipe", tb);

	bench_pair(0, lib_socketpair, base_socketpair, NULL, &tl, &tb);
	bench_line_rate("migrate-socketpair", (double)stream_len, tl,
			"write()/read() loop over a socketpair", tb);
	raw_open(&RA, "0000:12:00.0", DEV_STATE);
	raw_open(&RB, "0000:13:00.0", DEV_STATE);
	bench_pair(0, lib_socketpair, base_vmm_socketpair, NULL, &tl, &tb);
	bench_line_rate("migrate-socketpair-vmm", (double)stream_len, tl,
			"a VMM's own loop: data_fd read, write(); read(), data_fd write", tb);

	{
		double sv[BENCH_RUNS], lv[BENCH_RUNS], bv[BENCH_RUNS], tb2;
		double pv[BENCH_RUNS], qv[BENCH_RUNS], fi[BENCH_RUNS], fo[BENCH_RUNS];
		double bl[BENCH_RUNS];

		rawimg = malloc(DEV_STATE + 16 * MIB);
		if (!rawimg)
			die("malloc", -ENOMEM);
		memset(rawimg, 0, DEV_STATE + 16 * MIB);

		for (int r = 0; r < BENCH_RUNS; r++) {
			sv[r] = bench_time(lib_save_fixed, NULL);
			lv[r] = bench_time(lib_load_fixed, NULL);
			bv[r] = bench_time(base_raw_save, NULL);
			bl[r] = bench_time(base_raw_load, NULL);
			pv[r] = bench_time(lib_save_mem, NULL);
			qv[r] = bench_time(lib_load_mem, NULL);
			fi[r] = bench_time(base_raw_save_fresh, NULL);
			fo[r] = bench_time(base_raw_load_fresh, NULL);
		}
		tl = bench_median(sv, BENCH_RUNS);
		tl2 = bench_median(lv, BENCH_RUNS);
		tb = bench_median(bv, BENCH_RUNS);
		tb2 = bench_median(bl, BENCH_RUNS);
		bench_line_rate("save-mem", (double)stream_len, tl,
				"a VMM's data_fd read loop into the same memory", tb);
		bench_line_rate("load-mem", (double)stream_len, tl2,
				"a VMM's data_fd write loop from the same memory", tb2);
		tl = bench_median(pv, BENCH_RUNS);
		tl2 = bench_median(qv, BENCH_RUNS);
		tb = bench_median(fi, BENCH_RUNS);
		tb2 = bench_median(fo, BENCH_RUNS);
		bench_line_rate("save-mempipe", (double)stream_len, tl,
				"the data_fd read loop into fresh memory", tb);
		bench_line_rate("load-mempipe", (double)stream_len, tl2,
				"the data_fd write loop from it, then free", tb2);
	}
	raw_close(&RA);
	raw_close(&RB);
	free(rawimg);
	vfiomig_device_close(A.dev);
	vfiomig_device_close(B.dev);

	if (!quick) {
		printf("a set of %d devices x 256 MiB, one memory stream each, stop-and-copy only\n",
		       NSET);
		for (int i = 0; i < NSET; i++) {
			char sn[16], dn[16];

			snprintf(sn, sizeof(sn), "0000:2%d:00.0", i);
			snprintf(dn, sizeof(dn), "0000:3%d:00.0", i);
			member_mem[i] = malloc(DEV_STATE + 16 * MIB);
			if (!member_mem[i])
				die("malloc", -ENOMEM);
			memset(member_mem[i], 0, DEV_STATE + 16 * MIB);
			dev_add(&S[i], sn, DEV_STATE, 0, true);
			dev_add(&D[i], dn, DEV_STATE, 0, true);
			CHECK(vfiomig_sim_device_run(S[i].sd, DEV_STATE / 4096));
		}
		for (int r = 0; r < BENCH_RUNS; r++) {
			set_run(1, &t_save_serial[r], &t_load_serial[r]);
			set_run(0, &t_save_par[r], &t_load_par[r]);
			memcpy_scaling(&t_copy_serial[r], &t_copy_par[r]);
		}
		bench_line_time("parallel-memcpy-4x256M", bench_median(t_copy_par, BENCH_RUNS),
				"one thread (what 2 cores' memory allows)",
				bench_median(t_copy_serial, BENCH_RUNS));
		bench_line_time("parallel-stopcopy-4x256M", bench_median(t_save_par, BENCH_RUNS),
				"serial (threads = 1)", bench_median(t_save_serial, BENCH_RUNS));
		bench_line_time("parallel-load-4x256M", bench_median(t_load_par, BENCH_RUNS),
				"serial (threads = 1)", bench_median(t_load_serial, BENCH_RUNS));
		for (int i = 0; i < NSET; i++) {
			vfiomig_device_close(S[i].dev);
			vfiomig_device_close(D[i].dev);
			free(member_mem[i]);
		}
	}

	printf("the pause of a live migration (vfiomig demo's flow, default device kind)\n");
	demo_pause("demo-pause-64M", 64 * MIB);
	if (!quick)
		demo_pause("demo-pause-1G", 1024 * MIB);

	free(scratch);
	free(scratch2);
	vfiomig_ctx_unref(ctx);
	vfiomig_ctx_unref(ctx2);
	vfiomig_sim_free(sim);
	return 0;
}
