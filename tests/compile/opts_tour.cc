// SPDX-License-Identifier: MIT
//
// examples/opts-tour.c for C++: every sized struct of the public headers
// (each struct that starts with `size_t sz`) in a program that migrates a
// simulated device, built by tests/compile-modes.sh with g++ and clang++:
//
//  - C++20 and later: VFIOMIG_OPTS, fields given in declaration order
//    (C++20 designated initialisers must follow it);
//  - before C++20: vfiomig_opts<T>(), then plain assignments.
//
// Objects are owned by a small RAII holder built on the headers' per-object
// release helpers (vfiomig_device_closep() and friends), which is what
// VFIOMIG_CLEANUP uses in C.
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

#if __cplusplus >= 202002L
#define TOUR_DESIGNATED 1
#else
#define TOUR_DESIGNATED 0
#endif

namespace {

const uint32_t PG = 4096;
const uint64_t RAM_IOVA = 0x100000;

alignas(4096) unsigned char guest_ram[16 * PG];

#define CHECK(expr)                                                                          \
	do {                                                                                 \
		int ret_ = (expr);                                                           \
		if (ret_ < 0) {                                                              \
			std::fprintf(stderr, "opts_tour: %s: %s\n", #expr, vfiomig_strerror(ret_)); \
			return 1;                                                            \
		}                                                                            \
	} while (0)

#define EXPECT(cond, ...)                                                  \
	do {                                                               \
		if (!(cond)) {                                             \
			std::fprintf(stderr, "opts_tour: " __VA_ARGS__);   \
			std::fputc('\n', stderr);                          \
			return 1;                                          \
		}                                                          \
	} while (0)

// Owns one library object; released through the header's `...p` helper.
template <typename T, void (*Release)(T **)> class owned {
public:
	owned() = default;
	owned(const owned &) = delete;
	owned &operator=(const owned &) = delete;
	~owned() { Release(&p_); }
	T **out() { return &p_; }
	operator T *() const { return p_; }
	void reset()
	{
		Release(&p_);
		p_ = nullptr;
	}

private:
	T *p_ = nullptr;
};

// A buffer the library allocated: vfiomig_freep() releases it.
struct lib_buffer {
	lib_buffer() = default;
	lib_buffer(const lib_buffer &) = delete;
	lib_buffer &operator=(const lib_buffer &) = delete;
	~lib_buffer() { vfiomig_freep(&data); }
	void *data = nullptr;
	size_t len = 0;
};

struct log_state {
	uint64_t lines;
	char last[256];
};

void log_line(void *user, int priority, const char *msg)
{
	log_state *ls = static_cast<log_state *>(user);

	ls->lines++;
	std::snprintf(ls->last, sizeof(ls->last), "%s", msg);
	std::fprintf(stderr, "opts_tour: library [%d]: %s\n", priority, msg);
}

// The VMM's own kernel ops: count the calls, pass them on.
struct tracer {
	const vfiomig_kernel_ops *inner;
	void *inner_user;
	uint64_t calls;
	uint64_t ioctls;
};

tracer *count_call(void *u)
{
	tracer *t = static_cast<tracer *>(u);

	t->calls++;
	return t;
}

int t_open(void *u, const char *path, int flags)
{
	tracer *t = count_call(u);
	return t->inner->open(t->inner_user, path, flags);
}

int t_close(void *u, int fd)
{
	tracer *t = count_call(u);
	return t->inner->close(t->inner_user, fd);
}

int t_dup(void *u, int fd)
{
	tracer *t = count_call(u);
	return t->inner->dup(t->inner_user, fd);
}

int t_ioctl(void *u, int fd, unsigned long request, void *arg)
{
	tracer *t = count_call(u);
	t->ioctls++;
	return t->inner->ioctl(t->inner_user, fd, request, arg);
}

ssize_t t_read(void *u, int fd, void *buf, size_t len)
{
	tracer *t = count_call(u);
	return t->inner->read(t->inner_user, fd, buf, len);
}

ssize_t t_write(void *u, int fd, const void *buf, size_t len)
{
	tracer *t = count_call(u);
	return t->inner->write(t->inner_user, fd, buf, len);
}

ssize_t t_pread(void *u, int fd, void *buf, size_t len, uint64_t offset)
{
	tracer *t = count_call(u);
	return t->inner->pread(t->inner_user, fd, buf, len, offset);
}

ssize_t t_pwrite(void *u, int fd, const void *buf, size_t len, uint64_t offset)
{
	tracer *t = count_call(u);
	return t->inner->pwrite(t->inner_user, fd, buf, len, offset);
}

int t_mmap(void *u, int fd, uint64_t offset, size_t len, int prot, void **addr)
{
	tracer *t = count_call(u);
	return t->inner->mmap(t->inner_user, fd, offset, len, prot, addr);
}

int t_munmap(void *u, void *addr, size_t len)
{
	tracer *t = count_call(u);
	return t->inner->munmap(t->inner_user, addr, len);
}

ssize_t t_readlink(void *u, const char *path, char *buf, size_t len)
{
	tracer *t = count_call(u);
	return t->inner->readlink(t->inner_user, path, buf, len);
}

int t_readdir(void *u, const char *path, vfiomig_dirent_fn fn, void *cb_user)
{
	tracer *t = count_call(u);
	return t->inner->readdir(t->inner_user, path, fn, cb_user);
}

// The migration channel: an in-memory pipe.
struct channel {
	unsigned char *buf;
	size_t len, cap, rpos;
};

ssize_t chan_write(void *user, const void *data, size_t len)
{
	channel *c = static_cast<channel *>(user);

	if (len > c->cap - c->len) {
		size_t cap = c->cap ? c->cap : 64 * 1024;

		while (len > cap - c->len)
			cap *= 2;
		void *p = std::realloc(c->buf, cap);
		if (!p)
			return -ENOMEM;
		c->buf = static_cast<unsigned char *>(p);
		c->cap = cap;
	}
	std::memcpy(c->buf + c->len, data, len);
	c->len += len;
	return static_cast<ssize_t>(len);
}

ssize_t chan_read(void *user, void *data, size_t len)
{
	channel *c = static_cast<channel *>(user);
	size_t n = c->len - c->rpos < len ? c->len - c->rpos : len;

	std::memcpy(data, c->buf + c->rpos, n);
	c->rpos += n;
	return static_cast<ssize_t>(n);
}

void chan_release(void *user)
{
	channel *c = static_cast<channel *>(user);

	std::free(c->buf);
	*c = channel();
}

struct vmm_config {
	char saved[64];
	char restored[64];
};

int config_save(void *user, const void **data, size_t *len)
{
	vmm_config *c = static_cast<vmm_config *>(user);

	*data = c->saved;
	*len = sizeof(c->saved);
	return 0;
}

int config_load(void *user, const void *data, size_t len)
{
	vmm_config *c = static_cast<vmm_config *>(user);

	if (len != sizeof(c->restored))
		return -EINVAL;
	std::memcpy(c->restored, data, len);
	return 0;
}

struct tally {
	uint64_t by_type[8];
	vfiomig_record largest;
};

int count_record(void *user, const vfiomig_record *rec)
{
	tally *t = static_cast<tally *>(user);

	if (rec->type < 8)
		t->by_type[rec->type]++;
	if (rec->size > t->largest.size)
		t->largest = *rec;
	return 0;
}

int dump_device(vfiomig_device *dev, uint32_t backend)
{
#if TOUR_DESIGNATED
	VFIOMIG_OPTS(device_info, di);
	VFIOMIG_OPTS(region_info, ri);
#else
	auto di = vfiomig_opts<vfiomig_device_info>();
	auto ri = vfiomig_opts<vfiomig_region_info>();
#endif
	lib_buffer raw;
	int ncaps;

	CHECK(vfiomig_device_get_info(dev, &di));
	EXPECT(di.backend == backend && (di.flags & VFIOMIG_DEVICE_FLAGS_PCI), "%s: backend %u",
	       vfiomig_device_name(dev), di.backend);
	CHECK(vfiomig_region_get_info(dev, VFIOMIG_PCI_BAR0_REGION, &ri));
	EXPECT(ri.size == 64 * 1024 && (ri.flags & VFIOMIG_REGION_FLAG_MMAP), "BAR0 of %s",
	       vfiomig_device_name(dev));
	CHECK(vfiomig_region_get_info_raw(dev, VFIOMIG_PCI_BAR0_REGION, &raw.data, &raw.len));
	CHECK(ncaps = vfiomig_caps_validate(vfiomig_device_ctx(dev), VFIOMIG_INFO_REGION,
					    raw.data, raw.len));
	std::printf("opts_tour: %s: %u regions, BAR0 %llu KiB, %d capabilities\n",
		    vfiomig_device_name(dev), di.num_regions,
		    static_cast<unsigned long long>(ri.size >> 10), ncaps);
	return 0;
}

using ctx_ref = owned<vfiomig_ctx, vfiomig_ctx_unrefp>;
using device_ref = owned<vfiomig_device, vfiomig_device_closep>;
using dirty_ref = owned<vfiomig_dirty, vfiomig_dirty_freep>;
using stream_ref = owned<vfiomig_stream, vfiomig_stream_freep>;
using mig_ref = owned<vfiomig_mig, vfiomig_mig_freep>;
using sim_ref = owned<vfiomig_sim, vfiomig_sim_freep>;
using fault_ref = owned<vfiomig_fault, vfiomig_fault_freep>;

int tour(vfiomig_sim *sim, vfiomig_fault *fault)
{
	tracer trc = { vfiomig_fault_kernel_ops(), fault, 0, 0 };
	log_state log = {};
	const vfiomig_dma_range ram = { RAM_IOVA, sizeof(guest_ram) };
	channel chan = {};
	vmm_config cfg = {};
	tally tl = {};

	std::snprintf(cfg.saved, sizeof(cfg.saved), "msi-x: 8 vectors; bus master on");
#if TOUR_DESIGNATED
	VFIOMIG_OPTS(kernel_ops, kops, .open = t_open, .close = t_close, .dup = t_dup,
		     .ioctl = t_ioctl, .read = t_read, .write = t_write, .pread = t_pread,
		     .pwrite = t_pwrite, .mmap = t_mmap, .munmap = t_munmap,
		     .readlink = t_readlink, .readdir = t_readdir);
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = log_line, .log_user = &log, .kernel_ops = &kops,
		     .kernel_user = &trc, .log_priority = VFIOMIG_LOG_WARNING);
	VFIOMIG_OPTS(sim_device_opts, sdo, .name = "0000:03:00.0", .state_size = 256 * 1024,
		     .kind = VFIOMIG_DEVKIND_PCI, .flags = VFIOMIG_SIM_DEV_DMA_LOGGING,
		     .migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
				  VFIOMIG_SIM_MIG_PRE_COPY,
		     .auto_dirty_pages = 2, .vendor_id = 0x1af4, .device_id = 0x1041);
	VFIOMIG_OPTS(device_open_opts, src_oo, .name = "nic0", .flags = VFIOMIG_OPEN_NO_CDEV);
	VFIOMIG_OPTS(device_open_opts, dst_oo, .name = "nic0@dst", .flags = VFIOMIG_OPEN_CDEV);
	VFIOMIG_OPTS(fault_spec, deny_open, .op = VFIOMIG_KOP_OPEN, .times = 1,
		     .error = -EACCES);
	VFIOMIG_OPTS(migration_info, mi);
	VFIOMIG_OPTS(dirty_info, probe);
	VFIOMIG_OPTS(dirty_opts, dopts, .ranges = &ram, .page_size = PG,
		     .mechanism = VFIOMIG_DIRTY_MECH_AUTO, .nr_ranges = 1);
	VFIOMIG_OPTS(stream_ops, chan_ops, .write = chan_write, .read = chan_read,
		     .release = chan_release);
	VFIOMIG_OPTS(mig_opts, save_opts, .chunk_size = 64 * 1024, .config_save = config_save,
		     .config_user = &cfg, .dma_ranges = &ram,
		     .flags = VFIOMIG_MIG_F_DIRTY_TRACKING, .nr_dma_ranges = 1);
	VFIOMIG_OPTS(mig_opts, load_opts, .max_record = 16 << 20, .config_load = config_load,
		     .config_user = &cfg);
	VFIOMIG_OPTS(mig_pending, pend);
	VFIOMIG_OPTS(mig_stats, st);
	VFIOMIG_OPTS(stream_info, si);
#else
	auto kops = vfiomig_opts<vfiomig_kernel_ops>();
	kops.open = t_open;
	kops.close = t_close;
	kops.dup = t_dup;
	kops.ioctl = t_ioctl;
	kops.read = t_read;
	kops.write = t_write;
	kops.pread = t_pread;
	kops.pwrite = t_pwrite;
	kops.mmap = t_mmap;
	kops.munmap = t_munmap;
	kops.readlink = t_readlink;
	kops.readdir = t_readdir;
	auto co = vfiomig_opts<vfiomig_ctx_opts>();
	co.log_fn = log_line;
	co.log_user = &log;
	co.kernel_ops = &kops;
	co.kernel_user = &trc;
	co.log_priority = VFIOMIG_LOG_WARNING;
	auto sdo = vfiomig_opts<vfiomig_sim_device_opts>();
	sdo.name = "0000:03:00.0";
	sdo.state_size = 256 * 1024;
	sdo.kind = VFIOMIG_DEVKIND_PCI;
	sdo.flags = VFIOMIG_SIM_DEV_DMA_LOGGING;
	sdo.migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY;
	sdo.auto_dirty_pages = 2;
	sdo.vendor_id = 0x1af4;
	sdo.device_id = 0x1041;
	auto src_oo = vfiomig_opts<vfiomig_device_open_opts>();
	src_oo.name = "nic0";
	src_oo.flags = VFIOMIG_OPEN_NO_CDEV;
	auto dst_oo = vfiomig_opts<vfiomig_device_open_opts>();
	dst_oo.name = "nic0@dst";
	dst_oo.flags = VFIOMIG_OPEN_CDEV;
	auto deny_open = vfiomig_opts<vfiomig_fault_spec>();
	deny_open.op = VFIOMIG_KOP_OPEN;
	deny_open.times = 1;
	deny_open.error = -EACCES;
	auto mi = vfiomig_opts<vfiomig_migration_info>();
	auto probe = vfiomig_opts<vfiomig_dirty_info>();
	auto dopts = vfiomig_opts<vfiomig_dirty_opts>();
	dopts.ranges = &ram;
	dopts.page_size = PG;
	dopts.mechanism = VFIOMIG_DIRTY_MECH_AUTO;
	dopts.nr_ranges = 1;
	auto chan_ops = vfiomig_opts<vfiomig_stream_ops>();
	chan_ops.write = chan_write;
	chan_ops.read = chan_read;
	chan_ops.release = chan_release;
	auto save_opts = vfiomig_opts<vfiomig_mig_opts>();
	save_opts.chunk_size = 64 * 1024;
	save_opts.config_save = config_save;
	save_opts.config_user = &cfg;
	save_opts.dma_ranges = &ram;
	save_opts.flags = VFIOMIG_MIG_F_DIRTY_TRACKING;
	save_opts.nr_dma_ranges = 1;
	auto load_opts = vfiomig_opts<vfiomig_mig_opts>();
	load_opts.max_record = 16 << 20;
	load_opts.config_load = config_load;
	load_opts.config_user = &cfg;
	auto pend = vfiomig_opts<vfiomig_mig_pending>();
	auto st = vfiomig_opts<vfiomig_mig_stats>();
	auto si = vfiomig_opts<vfiomig_stream_info>();
#endif
	{
		// The library fills records in; a copy kept by the VMM starts with sz set too.
#if TOUR_DESIGNATED
		VFIOMIG_OPTS(record, none);
#else
		auto none = vfiomig_opts<vfiomig_record>();
#endif
		tl.largest = none;
	}
	vfiomig_sim_device *sim_src, *sim_dst;
	uint64_t bm[1] = { 0 };
	char reason[256];
	int more, rounds = 0;
	size_t la, lb;
	// Destroyed in reverse order: migrations and streams first, the context last.
	ctx_ref ctx;
	device_ref src, dst, adopted;
	dirty_ref dirty;
	stream_ref out, in, replay;
	mig_ref save, load;

	CHECK(vfiomig_ctx_new(&co, ctx.out()));
	CHECK(vfiomig_sim_device_add(sim, &sdo, &sim_src));
	sdo.name = "0000:83:00.0";
	CHECK(vfiomig_sim_device_add(sim, &sdo, &sim_dst));

	CHECK(vfiomig_fault_add(fault, &deny_open));
	EXPECT(vfiomig_device_open(ctx, "0000:03:00.0", &src_oo, src.out()) == -EACCES,
	       "a refused open must fail with -EACCES");
	EXPECT(vfiomig_fault_fired(fault) == 1 && !src, "the fault did not fire once");
	CHECK(vfiomig_device_open(ctx, "0000:03:00.0", &src_oo, src.out()));
	CHECK(vfiomig_device_open(ctx, "0000:83:00.0", &dst_oo, dst.out()));
	if (dump_device(src, VFIOMIG_BACKEND_GROUP) || dump_device(dst, VFIOMIG_BACKEND_IOMMUFD))
		return 1;
	{
#if TOUR_DESIGNATED
		VFIOMIG_OPTS(device_adopt_opts, ao, .name = "nic0 (adopted)",
			     .flags = VFIOMIG_ADOPT_DUP | VFIOMIG_ADOPT_HAS_CONTAINER |
				      VFIOMIG_ADOPT_HAS_GROUP,
			     .container_fd = vfiomig_device_container_fd(src),
			     .group_fd = vfiomig_device_group_fd(src));
#else
		auto ao = vfiomig_opts<vfiomig_device_adopt_opts>();
		ao.name = "nic0 (adopted)";
		ao.flags = VFIOMIG_ADOPT_DUP | VFIOMIG_ADOPT_HAS_CONTAINER | VFIOMIG_ADOPT_HAS_GROUP;
		ao.container_fd = vfiomig_device_container_fd(src);
		ao.group_fd = vfiomig_device_group_fd(src);
#endif
		CHECK(vfiomig_device_adopt(ctx, vfiomig_device_fd(src), &ao, adopted.out()));
		if (dump_device(adopted, VFIOMIG_BACKEND_GROUP))
			return 1;
		adopted.reset();
	}

	CHECK(vfiomig_device_migration_info(src, &mi));
	EXPECT((mi.protocols & VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V2)) &&
		       (mi.v2_flags & VFIOMIG_V2_PRE_COPY),
	       "no v2 pre-copy: %s", mi.reason);
	CHECK(vfiomig_dirty_probe(src, &probe));
	EXPECT(probe.best == VFIOMIG_DIRTY_MECH_DEVICE, "best dirty mechanism %u", probe.best);

	CHECK(vfiomig_dma_map(src, guest_ram, RAM_IOVA, sizeof(guest_ram),
			      VFIOMIG_DMA_READ | VFIOMIG_DMA_WRITE));
	CHECK(vfiomig_dirty_start(src, &dopts, dirty.out()));
	CHECK(vfiomig_sim_device_dma_write(sim_src, RAM_IOVA + 3 * PG, 2 * PG));
	CHECK(vfiomig_dirty_query(dirty, RAM_IOVA, sizeof(guest_ram), PG, bm, sizeof(bm)));
	EXPECT(bm[0] == 3u << 3, "dirty bitmap 0x%llx", static_cast<unsigned long long>(bm[0]));
	dirty.reset();

	CHECK(vfiomig_stream_new(ctx, &chan_ops, &chan, out.out()));
	chan_ops.release = nullptr;
	CHECK(vfiomig_stream_new(ctx, &chan_ops, &chan, in.out()));
	if (vfiomig_mig_check(src, &save_opts, reason, sizeof(reason)) < 0) {
		std::fprintf(stderr, "opts_tour: nic0 cannot migrate: %s\n", reason);
		return 1;
	}
	CHECK(vfiomig_mig_new(src, VFIOMIG_ROLE_SAVE, &save_opts, save.out()));
	CHECK(vfiomig_mig_new(dst, VFIOMIG_ROLE_LOAD, &load_opts, load.out()));
	CHECK(vfiomig_mig_event(save, VFIOMIG_EVENT_SETUP));
	CHECK(vfiomig_mig_save_setup(save, out));
	CHECK(vfiomig_mig_load_setup(load, in));
	for (;;) {
		CHECK(vfiomig_sim_device_run(sim_src, 4));
		CHECK(vfiomig_sim_device_dma_write(sim_src, RAM_IOVA + (rounds % 16) * uint64_t(PG),
						   PG));
		CHECK(vfiomig_mig_save_iterate(save, out, 64 * 1024));
		CHECK(vfiomig_mig_load(load, in));
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
	CHECK(vfiomig_mig_vm_state(save, VFIOMIG_VM_STOPPED));
	CHECK(vfiomig_mig_save_complete(save, out));
	do
		CHECK(more = vfiomig_mig_load(load, in));
	while (more == 1);
	CHECK(vfiomig_mig_event(save, VFIOMIG_EVENT_COMPLETED));
	CHECK(vfiomig_mig_vm_state(load, VFIOMIG_VM_RUNNING));

	const void *a = vfiomig_sim_device_state(sim_src, &la);
	const void *b = vfiomig_sim_device_state(sim_dst, &lb);
	EXPECT(la == lb && !std::memcmp(a, b, la), "the destination's state differs");
	EXPECT(!std::strcmp(cfg.saved, cfg.restored), "the VMM config did not arrive");
	CHECK(vfiomig_mig_get_stats(save, &st));

	CHECK(vfiomig_stream_mem_fixed_new(ctx, chan.buf, chan.len, VFIOMIG_STREAM_MEM_READ,
					   replay.out()));
	CHECK(vfiomig_stream_inspect(replay, 0, &si, count_record, &tl));
	EXPECT(si.protocol == VFIOMIG_PROTO_V2 && si.vendor == 0x1af4 && si.device == 0x1041 &&
		       si.data_records == tl.by_type[VFIOMIG_REC_DATA] && si.has_config == 1 &&
		       si.bytes == st.bytes,
	       "inspection disagrees with the migration");
	std::printf("opts_tour: C++%ld: %d pre-copy rounds, %llu stream bytes, %llu data records, "
		    "%llu kernel calls\n",
		    static_cast<long>(__cplusplus / 100 % 100), rounds,
		    static_cast<unsigned long long>(st.bytes),
		    static_cast<unsigned long long>(si.data_records),
		    static_cast<unsigned long long>(trc.calls));
	return 0;
}

} // namespace

int main()
{
#if TOUR_DESIGNATED
	VFIOMIG_OPTS(sim_opts, so, .flags = 0);
#else
	auto so = vfiomig_opts<vfiomig_sim_opts>();
#endif
	sim_ref sim;
	fault_ref fault;

	CHECK(vfiomig_sim_new(&so, sim.out()));
	CHECK(vfiomig_fault_new(vfiomig_sim_kernel_ops(), sim, fault.out()));
	if (tour(sim, fault))
		return 1;
	EXPECT(vfiomig_sim_open_fds(sim) == 0 && vfiomig_sim_live_maps(sim) == 0,
	       "%d simulated fds and %d mappings leaked", vfiomig_sim_open_fds(sim),
	       vfiomig_sim_live_maps(sim));
	std::printf("opts_tour: done, nothing leaked\n");
	return 0;
}
