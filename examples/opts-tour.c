/* SPDX-License-Identifier: MIT */
/*
 * A tour of libvfiomig's sized structs: every struct of the public
 * headers that starts with `size_t sz` (options, info the library fills
 * in, ops tables) appears here, declared with VFIOMIG_OPTS, in one small
 * but complete program: a simulated device is opened through a VMM's own
 * kernel ops table, inspected, dirty-tracked and live-migrated to a
 * second device, and the stream it produced is inspected.
 *
 *   struct                      where
 *   vfiomig_sim_opts            the simulated kernel (libvfiomig-sim)
 *   vfiomig_fault_spec          a fault injected under the library
 *   vfiomig_kernel_ops          the VMM's own kernel table (a tracer)
 *   vfiomig_ctx_opts            the context: log callback, kernel table
 *   vfiomig_sim_device_opts     the two simulated devices
 *   vfiomig_device_open_opts    opening them (group and cdev paths)
 *   vfiomig_device_adopt_opts   adopting fds the VMM already holds
 *   vfiomig_device_info         what the device is
 *   vfiomig_region_info         its BAR0
 *   vfiomig_migration_info      what migration it offers
 *   vfiomig_dirty_probe         how its DMA writes can be tracked
 *   vfiomig_dirty_opts          tracking them
 *   vfiomig_stream_ops          the VMM's migration channel
 *   vfiomig_mig_opts            the save and the load
 *   vfiomig_mig_pending         when to stop the VM
 *   vfiomig_mig_stats           what the migration moved
 *   vfiomig_stream_info         what a stream holds (inspection)
 *   vfiomig_record              each record of it
 *
 * VFIOMIG_OPTS(TYPE, name, .field = value...) declares `struct
 * vfiomig_TYPE name` with name.sz set and every other byte zero: the
 * library reads only what fits in sz, so this program keeps working with
 * later versions of the library. Objects are released with
 * VFIOMIG_CLEANUP (GCC and clang), in reverse order of declaration.
 *
 * Build (plain C99 is enough):
 *   cc -std=c99 opts-tour.c $(pkg-config --cflags --libs vfiomig vfiomig-sim)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

#define PG 4096u
#define RAM_IOVA 0x100000u

/* Guest RAM the device may write by DMA (DMA-mapped memory is page-aligned). */
static unsigned char guest_ram[16 * PG] __attribute__((aligned(4096)));

#define CHECK(expr)                                                                    \
	do {                                                                           \
		int ret_ = (expr);                                                     \
		if (ret_ < 0) {                                                        \
			fprintf(stderr, "opts-tour: %s: %s\n", #expr, vfiomig_strerror(ret_)); \
			return 1;                                                      \
		}                                                                      \
	} while (0)

#define EXPECT(cond, ...)                                            \
	do {                                                         \
		if (!(cond)) {                                       \
			fprintf(stderr, "opts-tour: " __VA_ARGS__);  \
			fputc('\n', stderr);                         \
			return 1;                                    \
		}                                                    \
	} while (0)

/* ---- the context's log callback: one formatted line, no va_list ---- */

struct log_state {
	uint64_t lines;
	char last[256];
};

static void log_line(void *user, int priority, const char *msg)
{
	struct log_state *ls = user;

	ls->lines++;
	snprintf(ls->last, sizeof(ls->last), "%s", msg);
	fprintf(stderr, "opts-tour: library [%d]: %s\n", priority, msg);
}

/*
 * ---- a kernel ops table of the VMM's own ----
 * A VMM can put anything under the library (a sandbox broker that opens
 * device files for it, a vfio-user client...). This one counts the calls
 * and passes them on to another table: here the fault injector over the
 * simulator, with real hardware vfiomig_kernel_ops_default().
 */
struct tracer {
	const struct vfiomig_kernel_ops *inner;
	void *inner_user;
	uint64_t calls;
	uint64_t ioctls;
};

static int t_open(void *u, const char *path, int flags)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->open(t->inner_user, path, flags);
}

static int t_close(void *u, int fd)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->close(t->inner_user, fd);
}

static int t_dup(void *u, int fd)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->dup(t->inner_user, fd);
}

static int t_ioctl(void *u, int fd, unsigned long request, void *arg)
{
	struct tracer *t = u;

	t->calls++;
	t->ioctls++;
	return t->inner->ioctl(t->inner_user, fd, request, arg);
}

static ssize_t t_read(void *u, int fd, void *buf, size_t len)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->read(t->inner_user, fd, buf, len);
}

static ssize_t t_write(void *u, int fd, const void *buf, size_t len)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->write(t->inner_user, fd, buf, len);
}

static ssize_t t_pread(void *u, int fd, void *buf, size_t len, uint64_t offset)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->pread(t->inner_user, fd, buf, len, offset);
}

static ssize_t t_pwrite(void *u, int fd, const void *buf, size_t len, uint64_t offset)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->pwrite(t->inner_user, fd, buf, len, offset);
}

static int t_mmap(void *u, int fd, uint64_t offset, size_t len, int prot, void **addr)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->mmap(t->inner_user, fd, offset, len, prot, addr);
}

static int t_munmap(void *u, void *addr, size_t len)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->munmap(t->inner_user, addr, len);
}

static ssize_t t_readlink(void *u, const char *path, char *buf, size_t len)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->readlink(t->inner_user, path, buf, len);
}

static int t_readdir(void *u, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	struct tracer *t = u;

	t->calls++;
	return t->inner->readdir(t->inner_user, path, fn, cb_user);
}

/* ---- the VMM's migration channel: an in-memory pipe ---- */

struct channel {
	unsigned char *buf;
	size_t len, cap, rpos;
};

static ssize_t chan_write(void *user, const void *data, size_t len)
{
	struct channel *c = user;

	if (len > c->cap - c->len) {
		size_t cap = c->cap ? c->cap : 64 * 1024;
		unsigned char *p;

		while (len > cap - c->len)
			cap *= 2;
		p = realloc(c->buf, cap);
		if (!p)
			return -ENOMEM;
		c->buf = p;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	return (ssize_t)len;
}

static ssize_t chan_read(void *user, void *data, size_t len)
{
	struct channel *c = user;
	size_t n = c->len - c->rpos < len ? c->len - c->rpos : len;

	memcpy(data, c->buf + c->rpos, n);
	c->rpos += n;
	return (ssize_t)n;
}

static void chan_release(void *user)
{
	struct channel *c = user;

	free(c->buf);
	memset(c, 0, sizeof(*c));
}

/* ---- the VMM's own device config, carried in the stream ---- */

struct vmm_config {
	char saved[64];
	char restored[64];
};

static int config_save(void *user, const void **data, size_t *len)
{
	struct vmm_config *c = user;

	*data = c->saved;
	*len = sizeof(c->saved);
	return 0;
}

static int config_load(void *user, const void *data, size_t len)
{
	struct vmm_config *c = user;

	if (len != sizeof(c->restored))
		return -EINVAL;
	memcpy(c->restored, data, len);
	return 0;
}

/* ---- stream inspection: one call per record ---- */

struct tally {
	uint64_t by_type[8];
	struct vfiomig_record largest; /* a copy of the largest record seen */
};

static int count_record(void *user, const struct vfiomig_record *rec)
{
	struct tally *t = user;

	if (rec->type < 8)
		t->by_type[rec->type]++;
	if (rec->size > t->largest.size)
		t->largest = *rec;
	return 0;
}

static int dump_device(struct vfiomig_device *dev)
{
	VFIOMIG_OPTS(device_info, di);
	VFIOMIG_OPTS(region_info, ri);
	VFIOMIG_CLEANUP(vfiomig_freep) void *raw = NULL;
	size_t raw_len = 0;
	int ncaps;

	CHECK(vfiomig_device_get_info(dev, &di));
	printf("opts-tour: %s: %u regions, %u irqs, backend %s, %s\n", vfiomig_device_name(dev),
	       di.num_regions, di.num_irqs,
	       di.backend == VFIOMIG_BACKEND_GROUP     ? "group + container"
	       : di.backend == VFIOMIG_BACKEND_IOMMUFD ? "cdev + iommufd"
						       : "device fd only",
	       (di.flags & VFIOMIG_DEVICE_FLAGS_RESET) ? "resettable" : "no reset");
	EXPECT(di.flags & VFIOMIG_DEVICE_FLAGS_PCI, "%s is not PCI", vfiomig_device_name(dev));

	CHECK(vfiomig_region_get_info(dev, VFIOMIG_PCI_BAR0_REGION, &ri));
	CHECK(vfiomig_region_get_info_raw(dev, VFIOMIG_PCI_BAR0_REGION, &raw, &raw_len));
	CHECK(ncaps = vfiomig_caps_validate(vfiomig_device_ctx(dev), VFIOMIG_INFO_REGION, raw,
					    raw_len));
	printf("opts-tour: %s: BAR0 %llu KiB at offset 0x%llx,%s%s %d capabilities\n",
	       vfiomig_device_name(dev), (unsigned long long)(ri.size >> 10),
	       (unsigned long long)ri.offset, (ri.flags & VFIOMIG_REGION_FLAG_MMAP) ? " mmap" : "",
	       (ri.cap_flags & VFIOMIG_REGION_HAS_SPARSE) ? " sparse," : "", ncaps);
	EXPECT(ri.size == 64 * 1024, "BAR0 is %llu bytes", (unsigned long long)ri.size);
	return 0;
}

static int tour(struct vfiomig_sim *sim, struct vfiomig_fault *fault)
{
	/* The VMM's kernel table, over the fault injector, over the simulator. */
	struct tracer tracer = { .inner = vfiomig_fault_kernel_ops(), .inner_user = fault };
	VFIOMIG_OPTS(kernel_ops, kops, .open = t_open, .close = t_close, .dup = t_dup,
		     .ioctl = t_ioctl, .read = t_read, .write = t_write, .pread = t_pread,
		     .pwrite = t_pwrite, .mmap = t_mmap, .munmap = t_munmap,
		     .readlink = t_readlink, .readdir = t_readdir);
	struct log_state log = { .lines = 0 };
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = log_line, .log_user = &log, .kernel_ops = &kops,
		     .kernel_user = &tracer, .log_priority = VFIOMIG_LOG_WARNING);
	/* Both ends: the same model of device, one on each "host". */
	VFIOMIG_OPTS(sim_device_opts, sdo, .name = "0000:03:00.0", .kind = VFIOMIG_DEVKIND_PCI,
		     .flags = VFIOMIG_SIM_DEV_DMA_LOGGING, .state_size = 256 * 1024,
		     .auto_dirty_pages = 2, .vendor_id = 0x1af4, .device_id = 0x1041,
		     .migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
				  VFIOMIG_SIM_MIG_PRE_COPY);
	VFIOMIG_OPTS(device_open_opts, src_oo, .name = "nic0", .flags = VFIOMIG_OPEN_NO_CDEV);
	VFIOMIG_OPTS(device_open_opts, dst_oo, .name = "nic0@dst", .flags = VFIOMIG_OPEN_CDEV);
	VFIOMIG_OPTS(fault_spec, deny_open, .op = VFIOMIG_KOP_OPEN, .error = -EACCES, .times = 1);
	VFIOMIG_OPTS(migration_info, mi);
	VFIOMIG_OPTS(dirty_info, probe);
	const struct vfiomig_dma_range ram = { .iova = RAM_IOVA, .length = sizeof(guest_ram) };
	VFIOMIG_OPTS(dirty_opts, dopts, .ranges = &ram, .nr_ranges = 1, .page_size = PG,
		     .mechanism = VFIOMIG_DIRTY_MECH_AUTO);
	struct channel chan = { .buf = NULL };
	VFIOMIG_OPTS(stream_ops, chan_ops, .write = chan_write, .read = chan_read,
		     .release = chan_release);
	struct vmm_config cfg = { .saved = "msi-x: 8 vectors; bus master on" };
	VFIOMIG_OPTS(mig_opts, save_opts, .chunk_size = 64 * 1024, .config_save = config_save,
		     .config_user = &cfg, .flags = VFIOMIG_MIG_F_DIRTY_TRACKING,
		     .dma_ranges = &ram, .nr_dma_ranges = 1);
	VFIOMIG_OPTS(mig_opts, load_opts, .max_record = 16 << 20, .config_load = config_load,
		     .config_user = &cfg);
	VFIOMIG_OPTS(mig_pending, pend);
	VFIOMIG_OPTS(mig_stats, st);
	VFIOMIG_OPTS(stream_info, si);
	struct tally tally = { .by_type = { 0 } };
	uint64_t bm[1] = { 0 };
	struct vfiomig_sim_device *sim_src, *sim_dst;
	char reason[256];
	int more, rounds = 0;
	size_t la, lb;
	const void *a, *b;
	/* Released in reverse order by VFIOMIG_CLEANUP: streams and migrations first. */
	VFIOMIG_CLEANUP(vfiomig_ctx_unrefp) struct vfiomig_ctx *ctx = NULL;
	VFIOMIG_CLEANUP(vfiomig_device_closep) struct vfiomig_device *src = NULL;
	VFIOMIG_CLEANUP(vfiomig_device_closep) struct vfiomig_device *dst = NULL;
	VFIOMIG_CLEANUP(vfiomig_device_closep) struct vfiomig_device *adopted = NULL;
	VFIOMIG_CLEANUP(vfiomig_dirty_freep) struct vfiomig_dirty *dirty = NULL;
	VFIOMIG_CLEANUP(vfiomig_stream_freep) struct vfiomig_stream *out = NULL;
	VFIOMIG_CLEANUP(vfiomig_stream_freep) struct vfiomig_stream *in = NULL;
	VFIOMIG_CLEANUP(vfiomig_stream_freep) struct vfiomig_stream *replay = NULL;
	VFIOMIG_CLEANUP(vfiomig_mig_freep) struct vfiomig_mig *save = NULL;
	VFIOMIG_CLEANUP(vfiomig_mig_freep) struct vfiomig_mig *load = NULL;

	CHECK(vfiomig_ctx_new(&co, &ctx));
	CHECK(vfiomig_sim_device_add(sim, &sdo, &sim_src));
	sdo.name = "0000:83:00.0";
	CHECK(vfiomig_sim_device_add(sim, &sdo, &sim_dst));

	/* The sandbox refuses the first open: the library reports it and leaves nothing open. */
	CHECK(vfiomig_fault_add(fault, &deny_open));
	EXPECT(vfiomig_device_open(ctx, "0000:03:00.0", &src_oo, &src) == -EACCES,
	       "a refused open must fail with -EACCES");
	EXPECT(vfiomig_fault_fired(fault) == 1 && src == NULL, "the fault did not fire once");
	printf("opts-tour: refused open reported as: %s\n", log.last);
	CHECK(vfiomig_device_open(ctx, "0000:03:00.0", &src_oo, &src));
	CHECK(vfiomig_device_open(ctx, "0000:83:00.0", &dst_oo, &dst));
	if (dump_device(src) || dump_device(dst))
		return 1;

	/* A VMM that already holds the fds (say, from a privileged helper) adopts them. */
	{
		VFIOMIG_OPTS(device_adopt_opts, ao, .name = "nic0 (adopted)",
			     .flags = VFIOMIG_ADOPT_DUP | VFIOMIG_ADOPT_HAS_CONTAINER |
				      VFIOMIG_ADOPT_HAS_GROUP,
			     .container_fd = vfiomig_device_container_fd(src),
			     .group_fd = vfiomig_device_group_fd(src));

		CHECK(vfiomig_device_adopt(ctx, vfiomig_device_fd(src), &ao, &adopted));
		if (dump_device(adopted))
			return 1;
		vfiomig_device_close(adopted);
		adopted = NULL;
	}

	CHECK(vfiomig_device_migration_info(src, &mi));
	EXPECT(mi.protocols & VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V2), "no v2 migration: %s",
	       mi.reason);
	printf("opts-tour: nic0 migrates with v2%s%s\n",
	       (mi.v2_flags & VFIOMIG_V2_PRE_COPY) ? ", pre-copy" : "",
	       (mi.v2_flags & VFIOMIG_V2_P2P) ? ", P2P states" : "");

	/* How can the device's DMA into guest RAM be tracked? */
	CHECK(vfiomig_dirty_probe(src, &probe));
	for (uint32_t m = 1; m < VFIOMIG_DIRTY_MECH_NR; m++)
		if (!(probe.available & VFIOMIG_DIRTY_MECH_BIT(m)))
			printf("opts-tour: dirty mechanism %u unavailable: %s\n", m,
			       probe.why_not[m]);
	EXPECT(probe.best == VFIOMIG_DIRTY_MECH_DEVICE, "best dirty mechanism %u", probe.best);

	/* Track it for a moment: the device writes two pages of guest RAM. */
	CHECK(vfiomig_dma_map(src, guest_ram, RAM_IOVA, sizeof(guest_ram),
			      VFIOMIG_DMA_READ | VFIOMIG_DMA_WRITE));
	CHECK(vfiomig_dirty_start(src, &dopts, &dirty));
	CHECK(vfiomig_sim_device_dma_write(sim_src, RAM_IOVA + 3 * PG, 2 * PG));
	CHECK(vfiomig_dirty_query(dirty, RAM_IOVA, sizeof(guest_ram), PG, bm, sizeof(bm)));
	EXPECT(bm[0] == 3u << 3, "dirty bitmap 0x%llx", (unsigned long long)bm[0]);
	vfiomig_dirty_free(dirty);
	dirty = NULL;

	/* The migration channel, written by the source, read by the destination. */
	CHECK(vfiomig_stream_new(ctx, &chan_ops, &chan, &out));
	CHECK(vfiomig_stream_set_name(out, "channel to dst"));
	chan_ops.release = NULL; /* one release of the channel is enough */
	CHECK(vfiomig_stream_new(ctx, &chan_ops, &chan, &in));
	CHECK(vfiomig_stream_set_name(in, "channel from src"));

	if (vfiomig_mig_check(src, &save_opts, reason, sizeof(reason)) < 0) {
		fprintf(stderr, "opts-tour: nic0 cannot migrate: %s\n", reason);
		return 1;
	}
	CHECK(vfiomig_mig_new(src, VFIOMIG_ROLE_SAVE, &save_opts, &save));
	CHECK(vfiomig_mig_new(dst, VFIOMIG_ROLE_LOAD, &load_opts, &load));
	CHECK(vfiomig_mig_event(save, VFIOMIG_EVENT_SETUP));
	CHECK(vfiomig_mig_save_setup(save, out));
	CHECK(vfiomig_mig_load_setup(load, in));

	/*
	 * Pre-copy while the guest runs, until the initial data is over and
	 * what is left fits the downtime the VMM allows (here 64 KiB).
	 */
	for (;;) {
		CHECK(vfiomig_sim_device_run(sim_src, 4));
		CHECK(vfiomig_sim_device_dma_write(sim_src, RAM_IOVA + (uint64_t)(rounds % 16) * PG,
						   PG));
		CHECK(vfiomig_mig_save_iterate(save, out, 64 * 1024));
		CHECK(vfiomig_mig_load(load, in));
		/* The VMM re-sends the guest pages the device wrote. */
		bm[0] = 0;
		CHECK(vfiomig_dirty_query(vfiomig_mig_dirty(save), RAM_IOVA, sizeof(guest_ram), PG,
					  bm, sizeof(bm)));
		EXPECT(bm[0] & (1ull << (rounds % 16)), "a DMA write was not reported");
		CHECK(vfiomig_mig_save_pending(save, &pend));
		rounds++;
		if (vfiomig_mig_initial_data_sent(save) &&
		    pend.precopy_initial + pend.precopy_dirty <= 64 * 1024)
			break;
		EXPECT(rounds < 64, "pre-copy does not converge");
	}
	printf("opts-tour: %d pre-copy rounds; about %llu bytes left for stop-and-copy\n", rounds,
	       (unsigned long long)pend.stopcopy);

	/* Switch over. */
	CHECK(vfiomig_mig_vm_state(save, VFIOMIG_VM_STOPPED));
	CHECK(vfiomig_mig_save_complete(save, out));
	do
		CHECK(more = vfiomig_mig_load(load, in));
	while (more == 1);
	CHECK(vfiomig_mig_event(save, VFIOMIG_EVENT_COMPLETED));
	CHECK(vfiomig_mig_vm_state(load, VFIOMIG_VM_RUNNING));

	a = vfiomig_sim_device_state(sim_src, &la);
	b = vfiomig_sim_device_state(sim_dst, &lb);
	EXPECT(la == lb && !memcmp(a, b, la), "the destination's state differs");
	EXPECT(!strcmp(cfg.saved, cfg.restored), "the VMM config did not arrive");
	CHECK(vfiomig_mig_get_stats(save, &st));
	printf("opts-tour: migrated, source device now %s: %llu stream bytes, %llu device bytes "
	       "in pre-copy, %llu in stop-and-copy\n",
	       vfiomig_device_state_name(st.device_state), (unsigned long long)st.bytes,
	       (unsigned long long)st.precopy_bytes, (unsigned long long)st.stopcopy_bytes);

	/* What did the channel carry? Read it again, as a destination would, touching no device. */
	CHECK(vfiomig_stream_mem_fixed_new(ctx, chan.buf, chan.len, VFIOMIG_STREAM_MEM_READ,
					   &replay));
	CHECK(vfiomig_stream_inspect(replay, 0, &si, count_record, &tally));
	EXPECT(si.protocol == VFIOMIG_PROTO_V2 && si.kind == VFIOMIG_DEVKIND_PCI &&
		       si.vendor == 0x1af4 && si.device == 0x1041,
	       "stream identity %u/%u %04x:%04x", si.protocol, si.kind, si.vendor, si.device);
	EXPECT(si.data_records == tally.by_type[VFIOMIG_REC_DATA] && si.has_config == 1 &&
		       si.bytes == st.bytes,
	       "inspection disagrees with the records");
	printf("opts-tour: stream v%u: %llu data records, largest %llu bytes at offset %llu\n",
	       si.version, (unsigned long long)si.data_records,
	       (unsigned long long)tally.largest.size, (unsigned long long)tally.largest.offset);
	printf("opts-tour: the library made %llu kernel calls (%llu ioctls) through the tracer\n",
	       (unsigned long long)tracer.calls, (unsigned long long)tracer.ioctls);
	return 0;
}

int main(void)
{
	VFIOMIG_OPTS(sim_opts, so);
	/* Declared first, so released last: after every context using them. */
	VFIOMIG_CLEANUP(vfiomig_sim_freep) struct vfiomig_sim *sim = NULL;
	VFIOMIG_CLEANUP(vfiomig_fault_freep) struct vfiomig_fault *fault = NULL;

	CHECK(vfiomig_sim_new(&so, &sim));
	CHECK(vfiomig_fault_new(vfiomig_sim_kernel_ops(), sim, &fault));
	if (tour(sim, fault))
		return 1;
	/* Everything the tour made is released: no simulated fd or mapping may remain. */
	EXPECT(vfiomig_sim_open_fds(sim) == 0 && vfiomig_sim_live_maps(sim) == 0,
	       "%d simulated fds and %d mappings leaked", vfiomig_sim_open_fds(sim),
	       vfiomig_sim_live_maps(sim));
	printf("opts-tour: done, nothing leaked\n");
	return 0;
}
