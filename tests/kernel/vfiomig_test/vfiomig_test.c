// SPDX-License-Identifier: GPL-2.0-only
/*
 * vfiomig_test: a mediated test device for libvfiomig's real-kernel rig
 * (tests/kernel/run.sh). Not a sample of anything real: a PCI-like device
 * whose only purpose is to make every migration path of the kernel's VFIO
 * reachable from the guest tests.
 *
 * A device has a config space, a 4 KiB register BAR, and a large state
 * buffer ("device memory", vmalloc) that a delayed work item keeps
 * rewriting while the device runs, tracking the pages it touches. One
 * migration engine turns that memory into a stream of records and back;
 * two protocols drive it:
 *
 *  - v2: vfio_migration_ops with STOP_COPY | P2P | PRE_COPY, a data_fd
 *    (anon inode) per stream, VFIO_MIG_GET_PRECOPY_INFO and
 *    migration_get_data_size;
 *  - v1 (the 5.8-5.17 region protocol, on a modern kernel): a
 *    device-specific region of type 3 / subtype 1 with the v1 registers
 *    at offset 0 and a data window that is trapped or mmapped.
 *
 * Devices of the v2 and v1+v2 types also implement vfio_log_ops (device
 * DMA logging), and a sysfs knob makes the device write a guest IOVA with
 * vfio_dma_rw() and log the page. Other knobs pause the dirtying, set its
 * rate, read the state checksum and inject faults: a failed arc (once,
 * optionally into ERROR), an error, an early end or short reads from the
 * save stream, an error on the resume side, and a flipped bit in what the
 * source produces.
 *
 * The stream (little-endian) is a sequence of 32-byte record headers:
 * HEADER (magic, state size, page size, device id), PAGES (first page,
 * count; followed by count pages), TRAILER (pages sent, xxh64 of the
 * whole state, stream bytes before it). The destination checks the
 * trailer against its own memory when it leaves RESUMING.
 */
#include <linux/anon_inodes.h>
#include <linux/bitmap.h>
#include <linux/device.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/interval_tree.h>
#include <linux/iova_bitmap.h>
#include <linux/kref.h>
#include <linux/mdev.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci_regs.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/vfio.h>
#include <linux/vmalloc.h>
#include <linux/workqueue.h>
#include <linux/xarray.h>
#include <linux/xxhash.h>

#define VMT_NAME "vfiomig_test"

#define VMT_VENDOR 0x7e57 /* not a registered vendor: a test device */
#define VMT_SUBVENDOR 0x7e57
#define VMT_CLASS 0xff0000 /* unassigned class */

/* File offsets: region index in bits 40 and up, as vfio-pci does it. */
#define VMT_OFF_SHIFT 40
#define VMT_OFF_MASK ((1ULL << VMT_OFF_SHIFT) - 1)
#define VMT_V1_INDEX VFIO_PCI_NUM_REGIONS

#define VMT_CFG_SIZE 256
#define VMT_BAR0_SIZE 4096

/* BAR0 registers (read-only; 32- or 64-bit aligned reads). */
#define VMT_BAR0_ID 0x00 /* u32 'VMT1' */
#define VMT_BAR0_STATE 0x04 /* u32 v2 migration state */
#define VMT_BAR0_SIZE_REG 0x08 /* u64 state size in bytes */
#define VMT_BAR0_CSUM 0x10 /* u64 xxh64 of the device memory (computed on read) */
#define VMT_BAR0_WRITES 0x18 /* u64 pages rewritten by the device so far */
#define VMT_ID 0x31544d56 /* "VMT1" */

/* v1 region layout: registers, then the data window on the next page. */
#define VMT_V1_STATE 0
#define VMT_V1_RESV 4
#define VMT_V1_PENDING 8
#define VMT_V1_DATA_OFFSET 16
#define VMT_V1_DATA_SIZE 24
#define VMT_V1_DATA PAGE_SIZE

/* Stream records. */
#define VMT_REC_LEN 32
#define VMT_REC_HEADER 0x48544d56 /* "VMTH" */
#define VMT_REC_PAGES 0x50544d56 /* "VMTP" */
#define VMT_REC_TRAILER 0x54544d56 /* "VMTT" */
#define VMT_STREAM_MAGIC 0x314d5254534d5456ULL /* "VTMSTRM1" */
#define VMT_STREAM_VERSION 1
#define VMT_RUN_MAX 256 /* pages per PAGES record */

#define VMT_MAX_STEPS 8 /* a transition never needs more arcs than this */

struct vmt_rec {
	__le32 type;
	__le32 count;
	__le64 a;
	__le64 b;
	__le64 c;
};

static unsigned int state_mib = 64;
module_param(state_mib, uint, 0444);
MODULE_PARM_DESC(state_mib, "Device memory of new devices, in MiB (default 64)");

static unsigned int window_kib = 1024;
module_param(window_kib, uint, 0444);
MODULE_PARM_DESC(window_kib, "v1 data window, in KiB (default 1024)");

static unsigned int dirty_pages = 8;
module_param(dirty_pages, uint, 0444);
MODULE_PARM_DESC(dirty_pages, "Pages a running device rewrites per tick (default 8)");

static unsigned int dirty_ms = 4;
module_param(dirty_ms, uint, 0444);
MODULE_PARM_DESC(dirty_ms, "Milliseconds between two ticks of the device (default 4)");

#define VMT_PROTO_V1 BIT(0)
#define VMT_PROTO_V2 BIT(1)

struct vmt_type {
	struct mdev_type type;
	u32 protos;
	u16 device_id;
	const char *desc;
};

static struct vmt_type vmt_types[] = {
	{ .type.sysfs_name = "v2", .type.pretty_name = "vfiomig test device, v2 migration",
	  .protos = VMT_PROTO_V2, .device_id = 0x0002,
	  .desc = "v2 migration (STOP_COPY, P2P, PRE_COPY), device DMA logging" },
	{ .type.sysfs_name = "v1", .type.pretty_name = "vfiomig test device, v1 migration",
	  .protos = VMT_PROTO_V1, .device_id = 0x0001,
	  .desc = "v1 region migration only (no VFIO_DEVICE_FEATURE_MIGRATION)" },
	{ .type.sysfs_name = "v12", .type.pretty_name = "vfiomig test device, v1 and v2",
	  .protos = VMT_PROTO_V1 | VMT_PROTO_V2, .device_id = 0x0003,
	  .desc = "v1 region and v2 migration on one engine, device DMA logging" },
};

static struct mdev_type *vmt_mdev_types[] = {
	&vmt_types[0].type,
	&vmt_types[1].type,
	&vmt_types[2].type,
};

enum vmt_mode { VMT_IDLE, VMT_SAVE, VMT_LOAD };

/* Where the load parser is. */
enum vmt_lphase { VMT_L_REC, VMT_L_PAGES, VMT_L_DONE, VMT_L_BROKEN };

enum vmt_read_fault { VMT_RF_NONE, VMT_RF_ERROR, VMT_RF_EOF, VMT_RF_SHORT };

struct vmt_range {
	unsigned long start, last;
};

/*
 * Everything a device is. Reference counted apart from the vfio_device:
 * a data_fd may outlive the device fd (and the device), so it holds the
 * core, never the vfio_device.
 */
struct vmt_core {
	struct kref ref;
	struct mutex lock; /* everything below */
	struct vfio_device *vdev; /* valid while the device is registered */
	const struct vmt_type *type;
	bool open;
	enum vfio_device_mig_state state;
	u64 seed;

	/* device memory */
	u8 *mem;
	size_t size;
	unsigned long npages;
	u8 cfg[VMT_CFG_SIZE];
	u32 bar0_addr;

	/* the device's own activity */
	struct delayed_work dirtier;
	bool paused;
	u32 rate_pages, rate_ms;
	u64 rng;
	u64 writes;

	/* migration engine: one stream at a time */
	enum vmt_mode mode;
	u32 gen; /* bumped when a stream begins or ends: stale data_fds get -ENODEV */
	bool stopcopy;
	unsigned long *dirty; /* pages still to send */
	unsigned long *initial; /* pages of the initial image not sent yet */
	unsigned long n_dirty, n_initial;
	unsigned long scan;
	bool hdr_done, trl_done;
	u8 small[VMT_REC_LEN]; /* a record header being produced or parsed */
	u32 small_len, small_off;
	size_t run_off; /* byte offset in mem of the PAGES data in flight */
	size_t run_left;
	u64 pos; /* stream bytes produced or consumed */
	u64 pages_moved;
	enum vmt_lphase lphase;
	u64 trl_sum;
	bool forced_eof, short_reads;

	/* statistics */
	u64 streams, saved_bytes, loaded_bytes, v1_trapped;
	u64 error_sets; /* transitions asked for while in ERROR (only a reset leaves it) */

	/* v1 */
	u8 *window;
	size_t window_size;
	bool v1_mmap; /* the window is offered for mmap (sparse area) */
	u32 v1_reserved;
	u64 v1_data_size;

	/* device DMA logging */
	bool logging;
	unsigned int log_shift;
	struct vmt_range *ranges;
	u32 nranges;
	u32 log_max_ranges;
	struct xarray log; /* dirty pages (iova >> log_shift) */
	u64 dma_writes;

	/* fault injection (each fires once) */
	bool arc_armed, arc_to_error;
	enum vfio_device_mig_state arc_target;
	int arc_errno;
	enum vmt_read_fault rf_mode;
	u64 rf_at;
	int rf_errno;
	bool wf_armed;
	u64 wf_at;
	int wf_errno;
	bool cor_armed;
	u64 cor_at;
	u64 faults_fired;
};

struct vmt_dev {
	struct vfio_device vdev;
	struct vmt_core *c;
};

/* A v2 data_fd. */
struct vmt_file {
	struct vmt_core *c;
	u32 gen;
};

static const struct vfio_device_ops vmt_dev_ops;
static const struct vfio_migration_ops vmt_mig_ops;
static const struct vfio_log_ops vmt_log_ops;

static const char *const vmt_state_names[] = {
	[VFIO_DEVICE_STATE_ERROR] = "ERROR",
	[VFIO_DEVICE_STATE_STOP] = "STOP",
	[VFIO_DEVICE_STATE_RUNNING] = "RUNNING",
	[VFIO_DEVICE_STATE_STOP_COPY] = "STOP_COPY",
	[VFIO_DEVICE_STATE_RESUMING] = "RESUMING",
	[VFIO_DEVICE_STATE_RUNNING_P2P] = "RUNNING_P2P",
	[VFIO_DEVICE_STATE_PRE_COPY] = "PRE_COPY",
	[VFIO_DEVICE_STATE_PRE_COPY_P2P] = "PRE_COPY_P2P",
};

static struct vmt_core *vmt_core(struct vfio_device *vdev)
{
	return container_of(vdev, struct vmt_dev, vdev)->c;
}

static bool vmt_running(enum vfio_device_mig_state s)
{
	return s == VFIO_DEVICE_STATE_RUNNING || s == VFIO_DEVICE_STATE_RUNNING_P2P ||
	       s == VFIO_DEVICE_STATE_PRE_COPY || s == VFIO_DEVICE_STATE_PRE_COPY_P2P;
}

static bool vmt_precopy(enum vfio_device_mig_state s)
{
	return s == VFIO_DEVICE_STATE_PRE_COPY || s == VFIO_DEVICE_STATE_PRE_COPY_P2P;
}

static u64 vmt_next_rand(struct vmt_core *c)
{
	/* xorshift64: cheap, and each device gets its own sequence. */
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return c->rng;
}

/* ------------------------------------------------------ device memory */

/* Each device starts from its own pattern, so a destination differs from its source. */
static void vmt_fill(struct vmt_core *c)
{
	unsigned long pg;

	for (pg = 0; pg < c->npages; pg++) {
		u64 *w = (u64 *)(c->mem + pg * PAGE_SIZE);
		int i;

		memset(w, (int)((c->seed + pg) & 0xff), PAGE_SIZE);
		for (i = 0; i < 8; i++)
			w[i * 64] = c->seed ^ (pg * 0x9e3779b97f4a7c15ULL) ^ i;
		if ((pg & 4095) == 4095)
			cond_resched();
	}
}

static u64 vmt_checksum(struct vmt_core *c)
{
	struct xxh64_state st;
	size_t off;

	xxh64_reset(&st, 0);
	for (off = 0; off < c->size; off += SZ_1M) {
		xxh64_update(&st, c->mem + off, min_t(size_t, SZ_1M, c->size - off));
		cond_resched();
	}
	return xxh64_digest(&st);
}

static void vmt_mark(struct vmt_core *c, unsigned long pg)
{
	if (c->mode == VMT_SAVE && !c->stopcopy && !__test_and_set_bit(pg, c->dirty))
		c->n_dirty++;
}

/* The device changes a page of its memory (a few words of it). */
static void vmt_touch(struct vmt_core *c, unsigned long pg, u64 v)
{
	u64 *w = (u64 *)(c->mem + pg * PAGE_SIZE);
	int i;

	for (i = 0; i < 4; i++)
		w[(v >> (i * 9)) & (PAGE_SIZE / 8 - 1)] = v + i;
	c->writes++;
	vmt_mark(c, pg);
}

static void vmt_dirtier(struct work_struct *work)
{
	struct vmt_core *c = container_of(to_delayed_work(work), struct vmt_core, dirtier);
	unsigned long delay;
	u32 i;

	mutex_lock(&c->lock);
	if (!c->open) {
		mutex_unlock(&c->lock);
		return;
	}
	if (!c->paused && vmt_running(c->state)) {
		for (i = 0; i < c->rate_pages; i++) {
			u64 r = vmt_next_rand(c);

			vmt_touch(c, (unsigned long)(r % c->npages), r);
		}
	}
	delay = msecs_to_jiffies(c->rate_ms);
	mutex_unlock(&c->lock);
	schedule_delayed_work(&c->dirtier, delay ? delay : 1);
}

static void vmt_free_mem(struct vmt_core *c)
{
	vfree(c->mem);
	bitmap_free(c->dirty);
	bitmap_free(c->initial);
	c->mem = NULL;
	c->dirty = NULL;
	c->initial = NULL;
}

static int vmt_alloc_mem(struct vmt_core *c, size_t size)
{
	unsigned long npages = size >> PAGE_SHIFT;
	u8 *mem = vmalloc(size);
	unsigned long *dirty = bitmap_zalloc(npages, GFP_KERNEL);
	unsigned long *initial = bitmap_zalloc(npages, GFP_KERNEL);

	if (!mem || !dirty || !initial) {
		vfree(mem);
		bitmap_free(dirty);
		bitmap_free(initial);
		return -ENOMEM;
	}
	vmt_free_mem(c);
	c->mem = mem;
	c->dirty = dirty;
	c->initial = initial;
	c->size = size;
	c->npages = npages;
	vmt_fill(c);
	return 0;
}

/* ------------------------------------------------- migration engine */

static void vmt_stream_begin(struct vmt_core *c, enum vmt_mode mode)
{
	c->mode = mode;
	c->gen++;
	c->streams++;
	c->stopcopy = false;
	c->hdr_done = false;
	c->trl_done = false;
	c->small_len = 0;
	c->small_off = 0;
	c->run_left = 0;
	c->run_off = 0;
	c->scan = 0;
	c->pos = 0;
	c->pages_moved = 0;
	c->lphase = VMT_L_REC;
	c->forced_eof = false;
	c->short_reads = false;
	if (mode == VMT_SAVE) {
		bitmap_fill(c->dirty, c->npages);
		bitmap_fill(c->initial, c->npages);
		c->n_dirty = c->npages;
		c->n_initial = c->npages;
	}
}

static void vmt_stream_end(struct vmt_core *c)
{
	if (c->mode == VMT_IDLE)
		return;
	c->mode = VMT_IDLE;
	c->gen++;
	c->stopcopy = false;
	c->run_left = 0;
	c->small_len = 0;
	c->small_off = 0;
}

/* Bytes still to come: the initial image, pages dirtied since sent, the trailer. */
static void vmt_pending(struct vmt_core *c, bool trailer, u64 *initial, u64 *dirty)
{
	/* An upper bound: every page in a record of its own. */
	const u64 per_page = PAGE_SIZE + VMT_REC_LEN;
	u64 flight = (c->small_len - c->small_off) + c->run_left;

	*initial = (c->hdr_done ? 0 : VMT_REC_LEN) + c->n_initial * per_page;
	*dirty = (c->n_dirty - c->n_initial) * per_page;
	if (c->n_initial || !c->hdr_done)
		*initial += flight;
	else
		*dirty += flight;
	if (trailer && !c->trl_done)
		*dirty += VMT_REC_LEN;
}

/* Where produced bytes go / consumed bytes come from: a user buffer or the v1 window. */
struct vmt_io {
	bool user;
	union {
		void __user *u;
		void *k;
	};
	size_t done;
};

static int vmt_io_put(struct vmt_core *c, struct vmt_io *io, const void *src, size_t n)
{
	if (io->user) {
		if (copy_to_user((u8 __user *)io->u + io->done, src, n))
			return -EFAULT;
	} else {
		memcpy((u8 *)io->k + io->done, src, n);
	}
	if (c->cor_armed && c->cor_at >= c->pos && c->cor_at < c->pos + n) {
		size_t at = io->done + (size_t)(c->cor_at - c->pos);
		u8 b;

		c->cor_armed = false;
		c->faults_fired++;
		if (io->user) {
			if (get_user(b, (u8 __user *)io->u + at) ||
			    put_user(b ^ 0x01, (u8 __user *)io->u + at))
				return -EFAULT;
		} else {
			((u8 *)io->k)[at] ^= 0x01;
		}
	}
	io->done += n;
	c->pos += n;
	return 0;
}

static int vmt_io_get(struct vmt_core *c, struct vmt_io *io, void *dst, size_t n)
{
	if (io->user) {
		if (copy_from_user(dst, (const u8 __user *)io->u + io->done, n))
			return -EFAULT;
	} else {
		memcpy(dst, (const u8 *)io->k + io->done, n);
	}
	io->done += n;
	c->pos += n;
	return 0;
}

static void vmt_put_rec(struct vmt_core *c, u32 type, u32 count, u64 a, u64 b, u64 cc)
{
	struct vmt_rec r = {
		.type = cpu_to_le32(type),
		.count = cpu_to_le32(count),
		.a = cpu_to_le64(a),
		.b = cpu_to_le64(b),
		.c = cpu_to_le64(cc),
	};

	memcpy(c->small, &r, sizeof(r));
	c->small_len = sizeof(r);
	c->small_off = 0;
}

/* Start the next PAGES record, from the scan position on (wrapping). */
static bool vmt_next_run(struct vmt_core *c)
{
	unsigned long pg, end, i;

	pg = find_next_bit(c->dirty, c->npages, c->scan);
	if (pg >= c->npages) {
		pg = find_first_bit(c->dirty, c->npages);
		if (pg >= c->npages)
			return false;
	}
	end = find_next_zero_bit(c->dirty, min_t(unsigned long, c->npages, pg + VMT_RUN_MAX),
				 pg);
	for (i = pg; i < end; i++) {
		__clear_bit(i, c->dirty);
		if (__test_and_clear_bit(i, c->initial))
			c->n_initial--;
	}
	c->n_dirty -= end - pg;
	c->scan = end;
	c->pages_moved += end - pg;
	vmt_put_rec(c, VMT_REC_PAGES, (u32)(end - pg), pg, 0, 0);
	c->run_off = pg * PAGE_SIZE;
	c->run_left = (end - pg) * PAGE_SIZE;
	return true;
}

/*
 * Produce up to `len` stream bytes. Returns the count (0: nothing now in
 * pre-copy, the end in stop-copy) or -errno.
 */
static ssize_t vmt_produce(struct vmt_core *c, struct vmt_io *io, size_t len)
{
	size_t limit = len;
	int ret;

	if (c->rf_mode != VMT_RF_NONE) {
		if (c->pos >= c->rf_at) {
			enum vmt_read_fault m = c->rf_mode;

			c->rf_mode = VMT_RF_NONE;
			c->faults_fired++;
			if (m == VMT_RF_ERROR)
				return -c->rf_errno;
			if (m == VMT_RF_EOF)
				c->forced_eof = true;
			else
				c->short_reads = true;
		} else {
			limit = min_t(u64, limit, c->rf_at - c->pos);
		}
	}
	if (c->forced_eof)
		return 0;
	if (c->short_reads)
		limit = min_t(size_t, limit, 1000);

	while (io->done < limit) {
		size_t room = limit - io->done, n;

		if (c->small_off < c->small_len) {
			n = min_t(size_t, room, c->small_len - c->small_off);
			ret = vmt_io_put(c, io, c->small + c->small_off, n);
			if (ret)
				return ret;
			c->small_off += n;
			continue;
		}
		if (c->run_left) {
			n = min(room, c->run_left);
			ret = vmt_io_put(c, io, c->mem + c->run_off, n);
			if (ret)
				return ret;
			c->run_off += n;
			c->run_left -= n;
			continue;
		}
		if (!c->hdr_done) {
			vmt_put_rec(c, VMT_REC_HEADER, VMT_STREAM_VERSION, VMT_STREAM_MAGIC,
				    c->size, PAGE_SIZE | (u64)c->type->device_id << 32);
			c->hdr_done = true;
			continue;
		}
		if (vmt_next_run(c))
			continue;
		if (c->stopcopy && !c->trl_done) {
			/* The device is stopped: its memory is final. */
			vmt_put_rec(c, VMT_REC_TRAILER, 0, c->pages_moved, vmt_checksum(c), c->pos);
			c->trl_done = true;
			continue;
		}
		break;
	}
	c->saved_bytes += io->done;
	return io->done;
}

static int vmt_parse_rec(struct vmt_core *c)
{
	struct vmt_rec r;
	u32 type, count;
	u64 a;

	memcpy(&r, c->small, sizeof(r));
	c->small_len = 0;
	type = le32_to_cpu(r.type);
	count = le32_to_cpu(r.count);
	a = le64_to_cpu(r.a);
	if (!c->hdr_done) {
		if (type != VMT_REC_HEADER || count != VMT_STREAM_VERSION ||
		    a != VMT_STREAM_MAGIC || le64_to_cpu(r.b) != c->size ||
		    le64_to_cpu(r.c) != (PAGE_SIZE | (u64)c->type->device_id << 32))
			return -EINVAL;
		c->hdr_done = true;
		return 0;
	}
	switch (type) {
	case VMT_REC_PAGES:
		if (!count || count > VMT_RUN_MAX || a >= c->npages || count > c->npages - a)
			return -EINVAL;
		c->run_off = a * PAGE_SIZE;
		c->run_left = (size_t)count * PAGE_SIZE;
		c->pages_moved += count;
		c->lphase = VMT_L_PAGES;
		return 0;
	case VMT_REC_TRAILER:
		/* The source counted the bytes before the trailer: nothing lost on the way. */
		if (le64_to_cpu(r.c) != c->pos - VMT_REC_LEN || a != c->pages_moved)
			return -EINVAL;
		c->trl_sum = le64_to_cpu(r.b);
		c->lphase = VMT_L_DONE;
		return 0;
	default:
		return -EINVAL;
	}
}

/* Consume `len` stream bytes into the device. Returns the count or -errno. */
static ssize_t vmt_consume(struct vmt_core *c, struct vmt_io *io, size_t len)
{
	size_t limit = len;
	int ret;

	if (c->wf_armed) {
		if (c->pos >= c->wf_at) {
			c->wf_armed = false;
			c->faults_fired++;
			c->lphase = VMT_L_BROKEN;
			return -c->wf_errno;
		}
		limit = min_t(u64, limit, c->wf_at - c->pos);
	}
	while (io->done < limit) {
		size_t room = limit - io->done, n;

		switch (c->lphase) {
		case VMT_L_REC:
			n = min_t(size_t, room, VMT_REC_LEN - c->small_len);
			ret = vmt_io_get(c, io, c->small + c->small_len, n);
			if (ret)
				return ret;
			c->small_len += n;
			if (c->small_len == VMT_REC_LEN && vmt_parse_rec(c)) {
				c->lphase = VMT_L_BROKEN;
				return -EINVAL;
			}
			break;
		case VMT_L_PAGES:
			n = min(room, c->run_left);
			ret = vmt_io_get(c, io, c->mem + c->run_off, n);
			if (ret)
				return ret;
			c->run_off += n;
			c->run_left -= n;
			if (!c->run_left)
				c->lphase = VMT_L_REC;
			break;
		case VMT_L_DONE: /* bytes after the trailer */
		case VMT_L_BROKEN:
			c->lphase = VMT_L_BROKEN;
			return -EINVAL;
		}
	}
	c->loaded_bytes += io->done;
	return io->done;
}

/* Leaving RESUMING: the stream must be whole and the memory must match its trailer. */
static int vmt_load_finish(struct vmt_core *c)
{
	if (c->pos == 0)
		return 0; /* nothing was loaded: the device keeps its own state */
	if (c->lphase != VMT_L_DONE)
		return -EINVAL;
	if (vmt_checksum(c) != c->trl_sum)
		return -EIO;
	return 0;
}

/*
 * One arc of the state machine. Returns 0, 1 when the arc began a stream
 * (the v2 caller then hands out a data_fd), or -errno with the state
 * unchanged (or ERROR, when a fault says so).
 */
static int vmt_step(struct vmt_core *c, enum vfio_device_mig_state next)
{
	enum vfio_device_mig_state cur = c->state;
	int ret;

	if (c->arc_armed && c->arc_target == next) {
		c->arc_armed = false;
		c->faults_fired++;
		if (c->arc_to_error) {
			vmt_stream_end(c);
			c->state = VFIO_DEVICE_STATE_ERROR;
		}
		return -c->arc_errno;
	}
	if (next == VFIO_DEVICE_STATE_RESUMING) {
		vmt_stream_begin(c, VMT_LOAD);
		c->state = next;
		return 1;
	}
	if (cur == VFIO_DEVICE_STATE_RESUMING) {
		ret = vmt_load_finish(c);
		if (ret)
			return ret;
		vmt_stream_end(c);
		c->state = next;
		return 0;
	}
	if (next == VFIO_DEVICE_STATE_STOP_COPY) {
		ret = 0;
		if (c->mode != VMT_SAVE) {
			vmt_stream_begin(c, VMT_SAVE);
			ret = 1;
		}
		c->stopcopy = true;
		c->state = next;
		return ret;
	}
	if (cur == VFIO_DEVICE_STATE_STOP_COPY) {
		vmt_stream_end(c);
		c->state = next;
		return 0;
	}
	if (vmt_precopy(next) && !vmt_precopy(cur)) {
		vmt_stream_begin(c, VMT_SAVE);
		c->state = next;
		return 1;
	}
	if (vmt_precopy(cur) && !vmt_precopy(next))
		vmt_stream_end(c);
	c->state = next;
	return 0;
}

/* Back to a clean RUNNING device (VFIO_DEVICE_RESET, or a resume abandoned at close). */
static void vmt_reset_locked(struct vmt_core *c)
{
	vmt_stream_end(c);
	c->state = VFIO_DEVICE_STATE_RUNNING;
	vmt_fill(c);
	c->v1_data_size = 0;
}

/* ------------------------------------------------------------ data_fd */

static int vmt_file_release(struct inode *inode, struct file *filp);

static void vmt_core_release(struct kref *ref)
{
	struct vmt_core *c = container_of(ref, struct vmt_core, ref);

	vmt_free_mem(c);
	vfree(c->window);
	xa_destroy(&c->log);
	kfree(c->ranges);
	kfree(c);
}

/* Locks the core; -ENODEV if this fd's stream is over. */
static int vmt_file_lock(struct vmt_file *f, enum vmt_mode mode)
{
	mutex_lock(&f->c->lock);
	if (f->c->gen != f->gen || f->c->mode != mode) {
		mutex_unlock(&f->c->lock);
		return -ENODEV;
	}
	return 0;
}

static ssize_t vmt_save_read(struct file *filp, char __user *buf, size_t len, loff_t *pos)
{
	struct vmt_file *f = filp->private_data;
	struct vmt_core *c = f->c;
	struct vmt_io io = { .user = true, .u = buf };
	ssize_t ret;

	if (pos)
		return -ESPIPE;
	ret = vmt_file_lock(f, VMT_SAVE);
	if (ret)
		return ret;
	ret = vmt_produce(c, &io, len);
	/* A partial copy still moved bytes: report them, the error comes next time. */
	if (ret < 0 && io.done)
		ret = io.done;
	if (ret == 0 && len && vmt_precopy(c->state))
		ret = -ENOMSG;
	mutex_unlock(&c->lock);
	return ret;
}

static ssize_t vmt_resume_write(struct file *filp, const char __user *buf, size_t len,
				loff_t *pos)
{
	struct vmt_file *f = filp->private_data;
	struct vmt_core *c = f->c;
	struct vmt_io io = { .user = true, .u = (void __user *)buf };
	ssize_t ret;

	if (pos)
		return -ESPIPE;
	ret = vmt_file_lock(f, VMT_LOAD);
	if (ret)
		return ret;
	ret = vmt_consume(c, &io, len);
	if (ret < 0 && io.done)
		ret = io.done;
	mutex_unlock(&c->lock);
	return ret;
}

static long vmt_save_ioctl(struct file *filp, unsigned int cmd, unsigned long arg)
{
	struct vmt_file *f = filp->private_data;
	struct vmt_core *c = f->c;
	unsigned long minsz = offsetofend(struct vfio_precopy_info, dirty_bytes);
	struct vfio_precopy_info info;
	u64 initial, dirty;
	int ret;

	if (cmd != VFIO_MIG_GET_PRECOPY_INFO)
		return -ENOTTY;
	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	ret = vmt_file_lock(f, VMT_SAVE);
	if (ret)
		return ret;
	if (!vmt_precopy(c->state)) {
		mutex_unlock(&c->lock);
		return -EINVAL;
	}
	vmt_pending(c, false, &initial, &dirty);
	mutex_unlock(&c->lock);
	info.initial_bytes = initial;
	info.dirty_bytes = dirty;
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static const struct file_operations vmt_save_fops = {
	.owner = THIS_MODULE,
	.read = vmt_save_read,
	.unlocked_ioctl = vmt_save_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = vmt_file_release,
};

static const struct file_operations vmt_resume_fops = {
	.owner = THIS_MODULE,
	.write = vmt_resume_write,
	.release = vmt_file_release,
};

static int vmt_file_release(struct inode *inode, struct file *filp)
{
	struct vmt_file *f = filp->private_data;

	kref_put(&f->c->ref, vmt_core_release);
	kfree(f);
	return 0;
}

static struct file *vmt_file_new(struct vmt_core *c, bool resume)
{
	struct vmt_file *f = kzalloc(sizeof(*f), GFP_KERNEL_ACCOUNT);
	struct file *filp;

	if (!f)
		return ERR_PTR(-ENOMEM);
	f->c = c;
	f->gen = c->gen;
	filp = anon_inode_getfile(VMT_NAME "_mig", resume ? &vmt_resume_fops : &vmt_save_fops, f,
				  resume ? O_WRONLY : O_RDONLY);
	if (IS_ERR(filp)) {
		kfree(f);
		return filp;
	}
	kref_get(&c->ref);
	stream_open(filp->f_inode, filp);
	return filp;
}

/* ------------------------------------------------------ v2 migration */

static struct file *vmt_set_state(struct vfio_device *vdev, enum vfio_device_mig_state target)
{
	struct vmt_core *c = vmt_core(vdev);
	struct file *filp = NULL;
	int steps = 0, ret = 0;

	mutex_lock(&c->lock);
	while (c->state != target) {
		enum vfio_device_mig_state cur = c->state, next;

		/*
		 * Only VFIO_DEVICE_RESET leaves ERROR (the uAPI says so), and
		 * vfio_mig_get_next_state() warns when asked from there: refuse,
		 * and count it, so the tests can tell who asked.
		 */
		if (cur == VFIO_DEVICE_STATE_ERROR) {
			c->error_sets++;
			ret = -EINVAL;
			break;
		}
		if (++steps > VMT_MAX_STEPS) {
			ret = -EINVAL;
			break;
		}
		ret = vfio_mig_get_next_state(vdev, cur, target, &next);
		if (ret)
			break;
		ret = vmt_step(c, next);
		if (ret < 0)
			break;
		if (ret == 1 && next == target) {
			filp = vmt_file_new(c, next == VFIO_DEVICE_STATE_RESUMING);
			if (IS_ERR(filp)) {
				ret = PTR_ERR(filp);
				filp = NULL;
				vmt_stream_end(c);
				c->state = cur;
				break;
			}
		}
		ret = 0;
	}
	mutex_unlock(&c->lock);
	if (ret) {
		if (filp)
			fput(filp);
		return ERR_PTR(ret);
	}
	return filp;
}

static int vmt_get_state(struct vfio_device *vdev, enum vfio_device_mig_state *state)
{
	struct vmt_core *c = vmt_core(vdev);

	mutex_lock(&c->lock);
	*state = c->state;
	mutex_unlock(&c->lock);
	return 0;
}

static int vmt_get_data_size(struct vfio_device *vdev, unsigned long *len)
{
	struct vmt_core *c = vmt_core(vdev);
	u64 initial, dirty;

	mutex_lock(&c->lock);
	if (c->mode == VMT_SAVE) {
		vmt_pending(c, true, &initial, &dirty);
		*len = initial + dirty;
	} else {
		/* A whole image in records of VMT_RUN_MAX pages. */
		*len = 2 * VMT_REC_LEN + c->size +
		       DIV_ROUND_UP(c->npages, VMT_RUN_MAX) * VMT_REC_LEN;
	}
	mutex_unlock(&c->lock);
	return 0;
}

static const struct vfio_migration_ops vmt_mig_ops = {
	.migration_set_state = vmt_set_state,
	.migration_get_state = vmt_get_state,
	.migration_get_data_size = vmt_get_data_size,
};

/* ------------------------------------------------------ v1 migration */

/* v1 device_state bits -> the state the engine uses (P2P states do not exist in v1). */
static int vmt_v1_target(u32 bits, enum vfio_device_mig_state *s)
{
	switch (bits) {
	case 0:
		*s = VFIO_DEVICE_STATE_STOP;
		return 0;
	case VFIO_DEVICE_STATE_V1_RUNNING:
		*s = VFIO_DEVICE_STATE_RUNNING;
		return 0;
	case VFIO_DEVICE_STATE_V1_SAVING:
		*s = VFIO_DEVICE_STATE_STOP_COPY;
		return 0;
	case VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING:
		*s = VFIO_DEVICE_STATE_PRE_COPY;
		return 0;
	case VFIO_DEVICE_STATE_V1_RESUMING:
		*s = VFIO_DEVICE_STATE_RESUMING;
		return 0;
	default:
		return -EINVAL; /* 101 and 111 are invalid, 110 is the device's to report */
	}
}

static u32 vmt_v1_bits(enum vfio_device_mig_state s)
{
	switch (s) {
	case VFIO_DEVICE_STATE_STOP: return 0;
	case VFIO_DEVICE_STATE_RUNNING:
	case VFIO_DEVICE_STATE_RUNNING_P2P: return VFIO_DEVICE_STATE_V1_RUNNING;
	case VFIO_DEVICE_STATE_STOP_COPY: return VFIO_DEVICE_STATE_V1_SAVING;
	case VFIO_DEVICE_STATE_PRE_COPY:
	case VFIO_DEVICE_STATE_PRE_COPY_P2P:
		return VFIO_DEVICE_STATE_V1_RUNNING | VFIO_DEVICE_STATE_V1_SAVING;
	case VFIO_DEVICE_STATE_RESUMING: return VFIO_DEVICE_STATE_V1_RESUMING;
	default: return VFIO_DEVICE_STATE_V1_SAVING | VFIO_DEVICE_STATE_V1_RESUMING;
	}
}

/*
 * The next arc towards `target` for a v1 write. v1 allows any change
 * between its five states; the engine walks it through the same arcs v2
 * uses (plus RUNNING <-> STOP and PRE_COPY -> STOP_COPY, which v1 has).
 */
static enum vfio_device_mig_state vmt_v1_next(enum vfio_device_mig_state cur,
					      enum vfio_device_mig_state target)
{
	bool to_run = target == VFIO_DEVICE_STATE_RUNNING || target == VFIO_DEVICE_STATE_PRE_COPY;

	switch (cur) {
	case VFIO_DEVICE_STATE_STOP:
		return to_run ? VFIO_DEVICE_STATE_RUNNING : target;
	case VFIO_DEVICE_STATE_RUNNING:
		return target == VFIO_DEVICE_STATE_PRE_COPY ? target : VFIO_DEVICE_STATE_STOP;
	case VFIO_DEVICE_STATE_RUNNING_P2P:
		return to_run ? VFIO_DEVICE_STATE_RUNNING : VFIO_DEVICE_STATE_STOP;
	case VFIO_DEVICE_STATE_PRE_COPY:
		return target == VFIO_DEVICE_STATE_STOP_COPY ? target : VFIO_DEVICE_STATE_RUNNING;
	case VFIO_DEVICE_STATE_PRE_COPY_P2P:
		return target == VFIO_DEVICE_STATE_STOP_COPY ? target :
							      VFIO_DEVICE_STATE_PRE_COPY;
	case VFIO_DEVICE_STATE_STOP_COPY:
		/* Saving cannot go back to pre-copy. */
		return target == VFIO_DEVICE_STATE_PRE_COPY ? VFIO_DEVICE_STATE_ERROR :
							      VFIO_DEVICE_STATE_STOP;
	case VFIO_DEVICE_STATE_RESUMING:
		return VFIO_DEVICE_STATE_STOP;
	default:
		return VFIO_DEVICE_STATE_ERROR;
	}
}

static int vmt_v1_walk(struct vmt_core *c, enum vfio_device_mig_state target)
{
	int steps = 0, ret;

	while (c->state != target) {
		enum vfio_device_mig_state next = vmt_v1_next(c->state, target);

		if (next == VFIO_DEVICE_STATE_ERROR || ++steps > VMT_MAX_STEPS)
			return -EINVAL;
		ret = vmt_step(c, next);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int vmt_v1_set_state(struct vmt_core *c, u32 val)
{
	enum vfio_device_mig_state target, orig = c->state;
	int ret;

	/* Reserved bits must come back as the device reported them (read-modify-write). */
	if ((val & ~VFIO_DEVICE_STATE_MASK) != c->v1_reserved)
		return -EINVAL;
	ret = vmt_v1_target(val & VFIO_DEVICE_STATE_MASK, &target);
	if (ret)
		return ret;
	if (c->state == VFIO_DEVICE_STATE_ERROR) {
		c->error_sets++;
		return -EINVAL;
	}
	ret = vmt_v1_walk(c, target);
	if (ret && c->state != orig && c->state != VFIO_DEVICE_STATE_ERROR) {
		/* v1: a failed write leaves the previous state, or the error state. */
		if (vmt_v1_walk(c, orig)) {
			vmt_stream_end(c);
			c->state = VFIO_DEVICE_STATE_ERROR;
		}
	}
	return ret;
}

static int vmt_v1_reg_read(struct vmt_core *c, u64 off, size_t count, u64 *val)
{
	u64 initial, dirty;
	ssize_t n;

	switch (off) {
	case VMT_V1_STATE:
		if (count != 4)
			return -EINVAL;
		*val = c->v1_reserved | vmt_v1_bits(c->state);
		return 0;
	case VMT_V1_RESV:
		if (count != 4)
			return -EINVAL;
		*val = 0;
		return 0;
	case VMT_V1_PENDING:
		if (count != 8)
			return -EINVAL;
		*val = 0;
		if (c->mode == VMT_SAVE) {
			vmt_pending(c, c->stopcopy, &initial, &dirty);
			*val = initial + dirty;
		}
		return 0;
	case VMT_V1_DATA_OFFSET:
		if (count != 8)
			return -EINVAL;
		if (c->mode == VMT_SAVE) {
			/* Reading data_offset stages the next chunk in the window. */
			struct vmt_io io = { .user = false, .k = c->window };

			n = vmt_produce(c, &io, c->window_size);
			if (n < 0)
				return (int)n;
			c->v1_data_size = n;
		}
		*val = VMT_V1_DATA;
		return 0;
	case VMT_V1_DATA_SIZE:
		if (count != 8)
			return -EINVAL;
		*val = c->v1_data_size;
		return 0;
	default:
		return -EINVAL;
	}
}

static int vmt_v1_reg_write(struct vmt_core *c, u64 off, size_t count, u64 val)
{
	struct vmt_io io = { .user = false, .k = c->window };
	ssize_t n;

	switch (off) {
	case VMT_V1_STATE:
		if (count != 4)
			return -EINVAL;
		return vmt_v1_set_state(c, (u32)val);
	case VMT_V1_DATA_SIZE:
		if (count != 8)
			return -EINVAL;
		if (c->mode != VMT_LOAD || val > c->window_size)
			return -EINVAL;
		n = vmt_consume(c, &io, val);
		if (n < 0)
			return (int)n;
		c->v1_data_size = val;
		return 0;
	default:
		return -EINVAL; /* reserved, pending_bytes and data_offset are read-only */
	}
}

static ssize_t vmt_v1_rw(struct vmt_core *c, char __user *buf, size_t count, u64 off,
			 bool write)
{
	u64 val = 0;
	int ret;

	if (off >= VMT_V1_DATA) {
		u64 woff = off - VMT_V1_DATA;

		if (woff >= c->window_size || count > c->window_size - woff)
			return -EINVAL;
		if (write ? copy_from_user(c->window + woff, buf, count) :
			    copy_to_user(buf, c->window + woff, count))
			return -EFAULT;
		c->v1_trapped += count;
		return count;
	}
	/* Registers: exactly their native width, naturally aligned. */
	if ((count != 4 && count != 8) || (off & (count - 1)))
		return -EINVAL;
	if (write) {
		if (copy_from_user(&val, buf, count))
			return -EFAULT;
		ret = vmt_v1_reg_write(c, off, count, val);
	} else {
		ret = vmt_v1_reg_read(c, off, count, &val);
		if (!ret && copy_to_user(buf, &val, count))
			ret = -EFAULT;
	}
	return ret ? ret : count;
}

/* ------------------------------------------------------- DMA logging */

static bool vmt_logged(struct vmt_core *c, unsigned long iova)
{
	u32 i;

	for (i = 0; i < c->nranges; i++)
		if (iova >= c->ranges[i].start && iova <= c->ranges[i].last)
			return true;
	return false;
}

static int vmt_log_start(struct vfio_device *vdev, struct rb_root_cached *root, u32 nnodes,
			 u64 *page_size)
{
	struct vmt_core *c = vmt_core(vdev);
	struct interval_tree_node *node;
	struct vmt_range *r;
	u32 n = 0;
	int ret = 0;

	if (!is_power_of_2(*page_size) || *page_size < PAGE_SIZE || *page_size > SZ_1G)
		return -EINVAL;
	mutex_lock(&c->lock);
	if (c->logging) {
		ret = -EBUSY;
		goto out;
	}
	/* A device with fewer trackers than ranges merges them (as real devices do). */
	if (c->log_max_ranges && nnodes > c->log_max_ranges) {
		vfio_combine_iova_ranges(root, nnodes, c->log_max_ranges);
		nnodes = c->log_max_ranges;
	}
	r = kcalloc(nnodes, sizeof(*r), GFP_KERNEL);
	if (!r) {
		ret = -ENOMEM;
		goto out;
	}
	for (node = interval_tree_iter_first(root, 0, ULONG_MAX); node && n < nnodes;
	     node = interval_tree_iter_next(node, 0, ULONG_MAX)) {
		r[n].start = node->start;
		r[n].last = node->last;
		n++;
	}
	kfree(c->ranges);
	c->ranges = r;
	c->nranges = n;
	c->log_shift = ilog2(*page_size);
	xa_destroy(&c->log);
	c->logging = true;
out:
	mutex_unlock(&c->lock);
	return ret;
}

static void vmt_log_stop_locked(struct vmt_core *c)
{
	c->logging = false;
	xa_destroy(&c->log);
	kfree(c->ranges);
	c->ranges = NULL;
	c->nranges = 0;
}

static int vmt_log_stop(struct vfio_device *vdev)
{
	struct vmt_core *c = vmt_core(vdev);

	mutex_lock(&c->lock);
	vmt_log_stop_locked(c);
	mutex_unlock(&c->lock);
	return 0;
}

static int vmt_log_read_and_clear(struct vfio_device *vdev, unsigned long iova,
				  unsigned long length, struct iova_bitmap *dirty)
{
	struct vmt_core *c = vmt_core(vdev);
	unsigned long idx;
	void *entry;
	int ret = 0;

	if (!length)
		return 0;
	mutex_lock(&c->lock);
	if (!c->logging) {
		ret = -EINVAL;
		goto out;
	}
	xa_for_each_range(&c->log, idx, entry, iova >> c->log_shift,
			  (iova + length - 1) >> c->log_shift) {
		iova_bitmap_set(dirty, idx << c->log_shift, 1UL << c->log_shift);
		xa_erase(&c->log, idx);
	}
out:
	mutex_unlock(&c->lock);
	return ret;
}

static const struct vfio_log_ops vmt_log_ops = {
	.log_start = vmt_log_start,
	.log_stop = vmt_log_stop,
	.log_read_and_clear = vmt_log_read_and_clear,
};

/* The device writes `len` bytes at a guest IOVA, as its DMA engine would. */
static int vmt_dma_write(struct vmt_core *c, u64 iova, u64 len)
{
	unsigned long first, last, pg;
	u8 *buf;
	int ret;

	if (!len || len > SZ_1M || iova + len < iova)
		return -EINVAL;
	buf = kvmalloc(len, GFP_KERNEL);
	if (!buf)
		return -ENOMEM;
	memset(buf, 0xd0 + (int)(c->dma_writes & 0xf), len);
	mutex_lock(&c->lock);
	/* vfio_dma_rw() warns when the device is not open: refuse first. */
	if (!c->open) {
		ret = -ENODEV;
		goto out;
	}
	ret = vfio_dma_rw(c->vdev, iova, buf, len, true);
	if (ret)
		goto out;
	c->dma_writes++;
	if (c->logging) {
		first = iova >> c->log_shift;
		last = (iova + len - 1) >> c->log_shift;
		for (pg = first; pg <= last; pg++) {
			if (!vmt_logged(c, pg << c->log_shift))
				continue;
			ret = xa_err(xa_store(&c->log, pg, xa_mk_value(1), GFP_KERNEL));
			if (ret)
				break;
		}
	}
out:
	mutex_unlock(&c->lock);
	kvfree(buf);
	return ret;
}

/* ------------------------------------------------ config space, BAR0 */

static void vmt_cfg_init(struct vmt_core *c)
{
	u8 *p = c->cfg;

	memset(p, 0, sizeof(c->cfg));
	*(__le16 *)&p[PCI_VENDOR_ID] = cpu_to_le16(VMT_VENDOR);
	*(__le16 *)&p[PCI_DEVICE_ID] = cpu_to_le16(c->type->device_id);
	*(__le16 *)&p[PCI_STATUS] = cpu_to_le16(0);
	p[PCI_REVISION_ID] = 1;
	p[PCI_CLASS_PROG] = VMT_CLASS & 0xff;
	*(__le16 *)&p[PCI_CLASS_DEVICE] = cpu_to_le16(VMT_CLASS >> 8);
	p[PCI_HEADER_TYPE] = PCI_HEADER_TYPE_NORMAL;
	*(__le32 *)&p[PCI_BASE_ADDRESS_0] = cpu_to_le32(PCI_BASE_ADDRESS_MEM_TYPE_32);
	*(__le16 *)&p[PCI_SUBSYSTEM_VENDOR_ID] = cpu_to_le16(VMT_SUBVENDOR);
	*(__le16 *)&p[PCI_SUBSYSTEM_ID] = cpu_to_le16(c->type->device_id);
}

static void vmt_cfg_write(struct vmt_core *c, u64 off, const u8 *v, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++, off++) {
		if (off == PCI_COMMAND || off == PCI_COMMAND + 1) {
			c->cfg[off] = v[i];
		} else if (off >= PCI_BASE_ADDRESS_0 && off < PCI_BASE_ADDRESS_0 + 4) {
			/* BAR sizing: the low 12 bits (size 4 KiB) read back as the type bits. */
			int sh = (int)(off - PCI_BASE_ADDRESS_0) * 8;

			c->bar0_addr &= ~(0xffU << sh);
			c->bar0_addr |= (u32)v[i] << sh;
			*(__le32 *)&c->cfg[PCI_BASE_ADDRESS_0] =
				cpu_to_le32((c->bar0_addr & ~(VMT_BAR0_SIZE - 1)) |
					    PCI_BASE_ADDRESS_MEM_TYPE_32);
		}
		/* Everything else is read-only. */
	}
}

static int vmt_bar0_read(struct vmt_core *c, u64 off, size_t count, u64 *val)
{
	u64 regs[4] = { 0 };

	if ((count != 4 && count != 8) || (off & (count - 1)) || off >= VMT_BAR0_SIZE)
		return -EINVAL;
	*val = 0;
	if (off >= sizeof(regs))
		return 0; /* the rest of the BAR reads as zero */
	regs[0] = VMT_ID | (u64)c->state << 32;
	regs[1] = c->size;
	if (off == VMT_BAR0_CSUM || off == VMT_BAR0_CSUM + 4)
		regs[2] = vmt_checksum(c);
	regs[3] = c->writes;
	memcpy(val, (u8 *)regs + off, count);
	return 0;
}

static ssize_t vmt_access(struct vmt_core *c, char __user *buf, size_t count, loff_t *ppos,
			  bool write)
{
	u64 pos = *ppos, off = pos & VMT_OFF_MASK, val = 0;
	unsigned int index = pos >> VMT_OFF_SHIFT;
	u8 tmp[VMT_CFG_SIZE];
	ssize_t ret;

	mutex_lock(&c->lock);
	switch (index) {
	case VFIO_PCI_CONFIG_REGION_INDEX:
		ret = -EINVAL;
		if (off >= VMT_CFG_SIZE || count > VMT_CFG_SIZE - off)
			break;
		ret = -EFAULT;
		if (write) {
			if (copy_from_user(tmp, buf, count))
				break;
			vmt_cfg_write(c, off, tmp, count);
		} else if (copy_to_user(buf, c->cfg + off, count)) {
			break;
		}
		ret = count;
		break;
	case VFIO_PCI_BAR0_REGION_INDEX:
		ret = -EINVAL;
		if (write)
			break; /* no writable register */
		ret = vmt_bar0_read(c, off, count, &val);
		if (!ret)
			ret = copy_to_user(buf, &val, count) ? -EFAULT : count;
		break;
	case VMT_V1_INDEX:
		ret = -EINVAL;
		if (c->type->protos & VMT_PROTO_V1)
			ret = vmt_v1_rw(c, buf, count, off, write);
		break;
	default:
		ret = -EINVAL;
	}
	mutex_unlock(&c->lock);
	if (ret > 0)
		*ppos += ret;
	return ret;
}

static ssize_t vmt_read(struct vfio_device *vdev, char __user *buf, size_t count, loff_t *ppos)
{
	return vmt_access(vmt_core(vdev), buf, count, ppos, false);
}

static ssize_t vmt_write(struct vfio_device *vdev, const char __user *buf, size_t count,
			 loff_t *ppos)
{
	return vmt_access(vmt_core(vdev), (char __user *)buf, count, ppos, true);
}

/* Only the v1 data window can be mapped (its sparse-mmap area). */
static int vmt_mmap(struct vfio_device *vdev, struct vm_area_struct *vma)
{
	struct vmt_core *c = vmt_core(vdev);
	u64 pos = (u64)vma->vm_pgoff << PAGE_SHIFT, off = pos & VMT_OFF_MASK;
	unsigned long size = vma->vm_end - vma->vm_start;

	if ((pos >> VMT_OFF_SHIFT) != VMT_V1_INDEX || !(c->type->protos & VMT_PROTO_V1) ||
	    !READ_ONCE(c->v1_mmap))
		return -EINVAL;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (off < VMT_V1_DATA || off - VMT_V1_DATA > c->window_size ||
	    size > c->window_size - (off - VMT_V1_DATA))
		return -EINVAL;
	/* The window lives as long as the core: no lock needed (and none may be taken here). */
	return remap_vmalloc_range(vma, c->window, (off - VMT_V1_DATA) >> PAGE_SHIFT);
}

/* ------------------------------------------------------------ ioctls */

static long vmt_region_info(struct vmt_core *c, unsigned long arg)
{
	unsigned long minsz = offsetofend(struct vfio_region_info, offset);
	struct vfio_info_cap caps = { .buf = NULL, .size = 0 };
	struct vfio_region_info info;
	int ret = 0;

	if (copy_from_user(&info, (void __user *)arg, minsz))
		return -EFAULT;
	if (info.argsz < minsz)
		return -EINVAL;
	info.offset = (u64)info.index << VMT_OFF_SHIFT;
	info.flags = 0;
	info.size = 0;
	info.cap_offset = 0;
	switch (info.index) {
	case VFIO_PCI_CONFIG_REGION_INDEX:
		info.size = VMT_CFG_SIZE;
		info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		break;
	case VFIO_PCI_BAR0_REGION_INDEX:
		info.size = VMT_BAR0_SIZE;
		info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		break;
	case VFIO_PCI_BAR1_REGION_INDEX ... VFIO_PCI_ROM_REGION_INDEX:
	case VFIO_PCI_VGA_REGION_INDEX:
		break;
	case VMT_V1_INDEX: {
		struct vfio_region_info_cap_type type = {
			.header.id = VFIO_REGION_INFO_CAP_TYPE,
			.header.version = 1,
			.type = VFIO_REGION_TYPE_MIGRATION_DEPRECATED,
			.subtype = VFIO_REGION_SUBTYPE_MIGRATION_DEPRECATED,
		};
		struct vfio_region_info_cap_sparse_mmap *sparse;
		size_t ssz = struct_size(sparse, areas, 1);

		if (!(c->type->protos & VMT_PROTO_V1))
			return -EINVAL;
		info.size = VMT_V1_DATA + c->window_size;
		info.flags = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;
		ret = vfio_info_add_capability(&caps, &type.header, sizeof(type));
		if (ret)
			return ret;
		if (!c->v1_mmap)
			break; /* a trapped window: no MMAP flag, no sparse area */
		info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
		sparse = kzalloc(ssz, GFP_KERNEL);
		if (!sparse) {
			kfree(caps.buf);
			return -ENOMEM;
		}
		sparse->header.id = VFIO_REGION_INFO_CAP_SPARSE_MMAP;
		sparse->header.version = 1;
		sparse->nr_areas = 1;
		sparse->areas[0].offset = VMT_V1_DATA;
		sparse->areas[0].size = c->window_size;
		ret = vfio_info_add_capability(&caps, &sparse->header, ssz);
		kfree(sparse);
		if (ret) {
			kfree(caps.buf);
			return ret;
		}
		break;
	}
	default:
		return -EINVAL;
	}
	if (caps.size) {
		info.flags |= VFIO_REGION_INFO_FLAG_CAPS;
		if (info.argsz < sizeof(info) + caps.size) {
			/* Too small for the chain: say how big, as the uAPI asks. */
			info.argsz = sizeof(info) + caps.size;
			info.cap_offset = 0;
		} else {
			vfio_info_cap_shift(&caps, sizeof(info));
			if (copy_to_user((void __user *)arg + sizeof(info), caps.buf, caps.size)) {
				kfree(caps.buf);
				return -EFAULT;
			}
			info.cap_offset = sizeof(info);
		}
		kfree(caps.buf);
	}
	return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
}

static long vmt_ioctl(struct vfio_device *vdev, unsigned int cmd, unsigned long arg)
{
	struct vmt_core *c = vmt_core(vdev);
	unsigned long minsz;

	switch (cmd) {
	case VFIO_DEVICE_GET_INFO: {
		struct vfio_device_info info;

		minsz = offsetofend(struct vfio_device_info, num_irqs);
		if (copy_from_user(&info, (void __user *)arg, minsz))
			return -EFAULT;
		if (info.argsz < minsz)
			return -EINVAL;
		info.flags = VFIO_DEVICE_FLAGS_PCI | VFIO_DEVICE_FLAGS_RESET;
		info.num_regions = VFIO_PCI_NUM_REGIONS +
				   ((c->type->protos & VMT_PROTO_V1) ? 1 : 0);
		info.num_irqs = VFIO_PCI_NUM_IRQS;
		return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_GET_REGION_INFO:
		return vmt_region_info(c, arg);
	case VFIO_DEVICE_GET_IRQ_INFO: {
		struct vfio_irq_info info;

		minsz = offsetofend(struct vfio_irq_info, count);
		if (copy_from_user(&info, (void __user *)arg, minsz))
			return -EFAULT;
		if (info.argsz < minsz || info.index >= VFIO_PCI_NUM_IRQS)
			return -EINVAL;
		info.flags = 0;
		info.count = 0; /* the device raises no interrupt */
		return copy_to_user((void __user *)arg, &info, minsz) ? -EFAULT : 0;
	}
	case VFIO_DEVICE_SET_IRQS:
		return -EINVAL;
	case VFIO_DEVICE_RESET:
		mutex_lock(&c->lock);
		vmt_reset_locked(c);
		mutex_unlock(&c->lock);
		return 0;
	}
	return -ENOTTY;
}

static int vmt_open_device(struct vfio_device *vdev)
{
	struct vmt_core *c = vmt_core(vdev);

	mutex_lock(&c->lock);
	c->open = true;
	mutex_unlock(&c->lock);
	schedule_delayed_work(&c->dirtier, msecs_to_jiffies(c->rate_ms) ?: 1);
	return 0;
}

static void vmt_close_device(struct vfio_device *vdev)
{
	struct vmt_core *c = vmt_core(vdev);

	mutex_lock(&c->lock);
	c->open = false;
	/* No stream outlives the device fd; a state without its stream collapses. */
	switch (c->state) {
	case VFIO_DEVICE_STATE_PRE_COPY:
		c->state = VFIO_DEVICE_STATE_RUNNING;
		break;
	case VFIO_DEVICE_STATE_PRE_COPY_P2P:
		c->state = VFIO_DEVICE_STATE_RUNNING_P2P;
		break;
	case VFIO_DEVICE_STATE_STOP_COPY:
		c->state = VFIO_DEVICE_STATE_STOP;
		break;
	case VFIO_DEVICE_STATE_RESUMING:
		vmt_reset_locked(c); /* half-loaded memory is nobody's state */
		break;
	default:
		break;
	}
	vmt_stream_end(c);
	vmt_log_stop_locked(c);
	mutex_unlock(&c->lock);
	cancel_delayed_work_sync(&c->dirtier);
}

static int vmt_init_dev(struct vfio_device *vdev)
{
	struct vmt_dev *vd = container_of(vdev, struct vmt_dev, vdev);
	struct mdev_device *mdev = to_mdev_device(vdev->dev);
	const struct vmt_type *type = container_of(mdev->type, struct vmt_type, type);
	struct vmt_core *c;
	size_t size = (size_t)clamp(state_mib, 1U, 1024U) << 20;
	int ret;

	c = kzalloc(sizeof(*c), GFP_KERNEL);
	if (!c)
		return -ENOMEM;
	kref_init(&c->ref);
	mutex_init(&c->lock);
	xa_init(&c->log);
	INIT_DELAYED_WORK(&c->dirtier, vmt_dirtier);
	c->vdev = vdev;
	c->type = type;
	c->state = VFIO_DEVICE_STATE_RUNNING;
	c->seed = xxh64(&mdev->uuid, sizeof(mdev->uuid), 0x7e57);
	c->rng = c->seed | 1;
	c->rate_pages = dirty_pages;
	c->rate_ms = max(dirty_ms, 1U);
	vmt_cfg_init(c);
	ret = vmt_alloc_mem(c, size);
	if (ret)
		goto err;
	if (type->protos & VMT_PROTO_V1) {
		c->window_size = PAGE_ALIGN((size_t)clamp(window_kib, 4U, 65536U) << 10);
		c->v1_mmap = true;
		c->window = vmalloc_user(c->window_size);
		if (!c->window) {
			ret = -ENOMEM;
			goto err;
		}
	}
	if (type->protos & VMT_PROTO_V2) {
		vdev->migration_flags = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P |
					VFIO_MIGRATION_PRE_COPY;
		vdev->mig_ops = &vmt_mig_ops;
		vdev->log_ops = &vmt_log_ops;
	}
	vd->c = c;
	return 0;
err:
	kref_put(&c->ref, vmt_core_release);
	return ret;
}

static void vmt_release_dev(struct vfio_device *vdev)
{
	struct vmt_dev *vd = container_of(vdev, struct vmt_dev, vdev);

	mutex_lock(&vd->c->lock);
	vd->c->vdev = NULL;
	mutex_unlock(&vd->c->lock);
	kref_put(&vd->c->ref, vmt_core_release);
}

static const struct vfio_device_ops vmt_dev_ops = {
	.name = "vfio-" VMT_NAME,
	.init = vmt_init_dev,
	.release = vmt_release_dev,
	.open_device = vmt_open_device,
	.close_device = vmt_close_device,
	.read = vmt_read,
	.write = vmt_write,
	.ioctl = vmt_ioctl,
	.mmap = vmt_mmap,
	.bind_iommufd = vfio_iommufd_emulated_bind,
	.unbind_iommufd = vfio_iommufd_emulated_unbind,
	.attach_ioas = vfio_iommufd_emulated_attach_ioas,
	.detach_ioas = vfio_iommufd_emulated_detach_ioas,
};

/* --------------------------------------------------------- sysfs knobs */

static struct vmt_core *vmt_dev_core(struct device *dev)
{
	struct vmt_dev *vd = dev_get_drvdata(dev);

	return vd->c;
}

static int vmt_parse_state(const char *s, enum vfio_device_mig_state *out)
{
	unsigned int i;

	for (i = 0; i < ARRAY_SIZE(vmt_state_names); i++)
		if (!strcmp(s, vmt_state_names[i])) {
			*out = i;
			return 0;
		}
	return -EINVAL;
}

static ssize_t state_checksum_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u64 sum;

	mutex_lock(&c->lock);
	sum = vmt_checksum(c);
	mutex_unlock(&c->lock);
	return sysfs_emit(buf, "%016llx\n", sum);
}
static DEVICE_ATTR_RO(state_checksum);

static ssize_t state_size_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%zu\n", vmt_dev_core(dev)->size);
}

static ssize_t state_size_store(struct device *dev, struct device_attribute *attr,
				const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u64 size;
	int ret = kstrtou64(buf, 0, &size);

	if (ret)
		return ret;
	if (size < PAGE_SIZE || size > SZ_1G || !PAGE_ALIGNED(size))
		return -EINVAL;
	mutex_lock(&c->lock);
	/* Resizing is for a device nobody uses. */
	if (c->open || c->mode != VMT_IDLE)
		ret = -EBUSY;
	else if (size != c->size)
		ret = vmt_alloc_mem(c, size);
	mutex_unlock(&c->lock);
	return ret ? ret : count;
}
static DEVICE_ATTR_RW(state_size);

static ssize_t dirty_pause_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", vmt_dev_core(dev)->paused);
}

static ssize_t dirty_pause_store(struct device *dev, struct device_attribute *attr,
				 const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	bool v;
	int ret = kstrtobool(buf, &v);

	if (ret)
		return ret;
	mutex_lock(&c->lock);
	c->paused = v;
	mutex_unlock(&c->lock);
	return count;
}
static DEVICE_ATTR_RW(dirty_pause);

static ssize_t dirty_rate_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);

	return sysfs_emit(buf, "%u %u\n", c->rate_pages, c->rate_ms);
}

/* "PAGES MS": PAGES pages rewritten every MS milliseconds. */
static ssize_t dirty_rate_store(struct device *dev, struct device_attribute *attr,
				const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	unsigned int pages, ms;

	if (sscanf(buf, "%u %u", &pages, &ms) != 2 || !ms || ms > 10000 || pages > 65536)
		return -EINVAL;
	mutex_lock(&c->lock);
	c->rate_pages = pages;
	c->rate_ms = ms;
	mutex_unlock(&c->lock);
	return count;
}
static DEVICE_ATTR_RW(dirty_rate);

static ssize_t dirty_writes_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n", vmt_dev_core(dev)->writes);
}
static DEVICE_ATTR_RO(dirty_writes);

/* "PAGE": the running device changes that page now (a deterministic dirtying). */
static ssize_t poke_store(struct device *dev, struct device_attribute *attr, const char *buf,
			  size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	unsigned long pg;
	int ret = kstrtoul(buf, 0, &pg);

	if (ret)
		return ret;
	mutex_lock(&c->lock);
	if (pg >= c->npages)
		ret = -EINVAL;
	else if (!vmt_running(c->state))
		ret = -EBUSY; /* a stopped device does not change */
	else
		vmt_touch(c, pg, vmt_next_rand(c));
	mutex_unlock(&c->lock);
	return ret ? ret : count;
}
static DEVICE_ATTR_WO(poke);

static ssize_t mig_state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);

	return sysfs_emit(buf, "%s\n", vmt_state_names[c->state]);
}
static DEVICE_ATTR_RO(mig_state);

static ssize_t stats_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);
	ssize_t n;

	mutex_lock(&c->lock);
	n = sysfs_emit(buf, "streams %llu saved %llu loaded %llu ", c->streams, c->saved_bytes,
		       c->loaded_bytes);
	n += sysfs_emit_at(buf, n, "v1_trapped %llu dma_writes %llu faults_fired %llu ",
			   c->v1_trapped, c->dma_writes, c->faults_fired);
	n += sysfs_emit_at(buf, n, "error_sets %llu\n", c->error_sets);
	mutex_unlock(&c->lock);
	return n;
}
static DEVICE_ATTR_RO(stats);

static ssize_t v1_reserved_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "0x%08x\n", vmt_dev_core(dev)->v1_reserved);
}

/* Reserved device_state bits the device reports, which every write must carry back. */
static ssize_t v1_reserved_store(struct device *dev, struct device_attribute *attr,
				 const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u32 v;
	int ret = kstrtou32(buf, 0, &v);

	if (ret)
		return ret;
	if (v & VFIO_DEVICE_STATE_MASK)
		return -EINVAL;
	mutex_lock(&c->lock);
	c->v1_reserved = v;
	mutex_unlock(&c->lock);
	return count;
}
static DEVICE_ATTR_RW(v1_reserved);

static ssize_t v1_mmap_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", vmt_dev_core(dev)->v1_mmap);
}

/* 0: the v1 data window is trapped only (for fds opened from now on, which read region info). */
static ssize_t v1_mmap_store(struct device *dev, struct device_attribute *attr, const char *buf,
			     size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	bool v;
	int ret = kstrtobool(buf, &v);

	if (ret)
		return ret;
	mutex_lock(&c->lock);
	WRITE_ONCE(c->v1_mmap, v);
	mutex_unlock(&c->lock);
	return count;
}
static DEVICE_ATTR_RW(v1_mmap);

static ssize_t fail_arc_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);

	if (!c->arc_armed)
		return sysfs_emit(buf, "none\n");
	return sysfs_emit(buf, "%s %d%s\n", vmt_state_names[c->arc_target], c->arc_errno,
			  c->arc_to_error ? " error" : "");
}

/* "STATE ERRNO [error]": the next arc into STATE fails with -ERRNO; "none" disarms. */
static ssize_t fail_arc_store(struct device *dev, struct device_attribute *attr,
			      const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	char name[16], mode[16] = "";
	enum vfio_device_mig_state s;
	int err, n;

	n = sscanf(buf, "%15s %d %15s", name, &err, mode);
	mutex_lock(&c->lock);
	if (n >= 1 && !strcmp(name, "none")) {
		c->arc_armed = false;
		n = 0;
	} else if (n < 2 || vmt_parse_state(name, &s) || err <= 0 || err > MAX_ERRNO ||
		   (n == 3 && strcmp(mode, "error"))) {
		n = -EINVAL;
	} else {
		c->arc_armed = true;
		c->arc_target = s;
		c->arc_errno = err;
		c->arc_to_error = n == 3;
		n = 0;
	}
	mutex_unlock(&c->lock);
	return n ? n : count;
}
static DEVICE_ATTR_RW(fail_arc);

/* "OFFSET ERRNO|eof|short": at save-stream byte OFFSET, fail once / end / read short. */
static ssize_t fail_read_store(struct device *dev, struct device_attribute *attr,
			       const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	char what[16];
	u64 at;
	int err = 0;
	enum vmt_read_fault m;

	if (sysfs_streq(buf, "none")) {
		m = VMT_RF_NONE;
		at = 0;
	} else if (sscanf(buf, "%llu %15s", &at, what) != 2) {
		return -EINVAL;
	} else if (!strcmp(what, "eof")) {
		m = VMT_RF_EOF;
	} else if (!strcmp(what, "short")) {
		m = VMT_RF_SHORT;
	} else if (!kstrtoint(what, 0, &err) && err > 0 && err <= MAX_ERRNO) {
		m = VMT_RF_ERROR;
	} else {
		return -EINVAL;
	}
	mutex_lock(&c->lock);
	c->rf_mode = m;
	c->rf_at = at;
	c->rf_errno = err;
	mutex_unlock(&c->lock);
	return count;
}

static ssize_t fail_read_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);

	switch (c->rf_mode) {
	case VMT_RF_ERROR: return sysfs_emit(buf, "%llu %d\n", c->rf_at, c->rf_errno);
	case VMT_RF_EOF: return sysfs_emit(buf, "%llu eof\n", c->rf_at);
	case VMT_RF_SHORT: return sysfs_emit(buf, "%llu short\n", c->rf_at);
	default: return sysfs_emit(buf, "none\n");
	}
}
static DEVICE_ATTR_RW(fail_read);

/* "OFFSET ERRNO": at resume-stream byte OFFSET, the write fails once with -ERRNO. */
static ssize_t fail_write_store(struct device *dev, struct device_attribute *attr,
				const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u64 at = 0;
	int err = 0;
	bool arm = !sysfs_streq(buf, "none");

	if (arm && (sscanf(buf, "%llu %d", &at, &err) != 2 || err <= 0 || err > MAX_ERRNO))
		return -EINVAL;
	mutex_lock(&c->lock);
	c->wf_armed = arm;
	c->wf_at = at;
	c->wf_errno = err;
	mutex_unlock(&c->lock);
	return count;
}

static ssize_t fail_write_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);

	if (!c->wf_armed)
		return sysfs_emit(buf, "none\n");
	return sysfs_emit(buf, "%llu %d\n", c->wf_at, c->wf_errno);
}
static DEVICE_ATTR_RW(fail_write);

/* "OFFSET": the save stream's byte at OFFSET leaves the device with bit 0 flipped. */
static ssize_t corrupt_store(struct device *dev, struct device_attribute *attr, const char *buf,
			     size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u64 at = 0;
	bool arm = !sysfs_streq(buf, "none");

	if (arm && kstrtou64(buf, 0, &at))
		return -EINVAL;
	mutex_lock(&c->lock);
	c->cor_armed = arm;
	c->cor_at = at;
	mutex_unlock(&c->lock);
	return count;
}

static ssize_t corrupt_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);

	if (!c->cor_armed)
		return sysfs_emit(buf, "none\n");
	return sysfs_emit(buf, "%llu\n", c->cor_at);
}
static DEVICE_ATTR_RW(corrupt);

/* "IOVA LEN": the device DMA-writes LEN bytes (a 0xdN pattern) at IOVA and logs the pages. */
static ssize_t dma_write_store(struct device *dev, struct device_attribute *attr,
			       const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u64 iova, len;
	int ret;

	if (sscanf(buf, "%llx %llx", &iova, &len) != 2)
		return -EINVAL;
	ret = vmt_dma_write(c, iova, len);
	return ret ? ret : count;
}
static DEVICE_ATTR_WO(dma_write);

/*
 * The device's DMA log, read without clearing it: a summary line, then
 * one line per dirty page ("0x<iova>"), as many as fit.
 */
static ssize_t dma_log_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	struct vmt_core *c = vmt_dev_core(dev);
	unsigned long idx, n = 0;
	void *entry;
	ssize_t len;

	mutex_lock(&c->lock);
	xa_for_each(&c->log, idx, entry)
		n++;
	len = sysfs_emit(buf, "logging %d page_size %lu ranges %u dirty %lu\n", c->logging,
			 c->logging ? 1UL << c->log_shift : 0, c->nranges, n);
	xa_for_each(&c->log, idx, entry) {
		if (len > PAGE_SIZE - 32)
			break;
		len += sysfs_emit_at(buf, len, "0x%lx\n", idx << c->log_shift);
	}
	mutex_unlock(&c->lock);
	return len;
}
static DEVICE_ATTR_RO(dma_log);

/* At most this many tracked ranges (0: no limit of the device's own). */
static ssize_t log_max_ranges_store(struct device *dev, struct device_attribute *attr,
				    const char *buf, size_t count)
{
	struct vmt_core *c = vmt_dev_core(dev);
	u32 v;
	int ret = kstrtou32(buf, 0, &v);

	if (ret)
		return ret;
	mutex_lock(&c->lock);
	c->log_max_ranges = v;
	mutex_unlock(&c->lock);
	return count;
}

static ssize_t log_max_ranges_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", vmt_dev_core(dev)->log_max_ranges);
}
static DEVICE_ATTR_RW(log_max_ranges);

static struct attribute *vmt_attrs[] = {
	&dev_attr_state_checksum.attr,
	&dev_attr_state_size.attr,
	&dev_attr_dirty_pause.attr,
	&dev_attr_dirty_rate.attr,
	&dev_attr_dirty_writes.attr,
	&dev_attr_poke.attr,
	&dev_attr_mig_state.attr,
	&dev_attr_stats.attr,
	&dev_attr_v1_reserved.attr,
	&dev_attr_v1_mmap.attr,
	&dev_attr_fail_arc.attr,
	&dev_attr_fail_read.attr,
	&dev_attr_fail_write.attr,
	&dev_attr_corrupt.attr,
	&dev_attr_dma_write.attr,
	&dev_attr_dma_log.attr,
	&dev_attr_log_max_ranges.attr,
	NULL,
};

static const struct attribute_group vmt_attr_group = {
	.name = "vmt",
	.attrs = vmt_attrs,
};

static const struct attribute_group *vmt_attr_groups[] = {
	&vmt_attr_group,
	NULL,
};

/* ------------------------------------------------------- mdev driver */

static int vmt_probe(struct mdev_device *mdev)
{
	struct vmt_dev *vd;
	int ret;

	vd = vfio_alloc_device(vmt_dev, vdev, &mdev->dev, &vmt_dev_ops);
	if (IS_ERR(vd))
		return PTR_ERR(vd);
	ret = vfio_register_emulated_iommu_dev(&vd->vdev);
	if (ret) {
		vfio_put_device(&vd->vdev);
		return ret;
	}
	dev_set_drvdata(&mdev->dev, vd);
	return 0;
}

static void vmt_remove(struct mdev_device *mdev)
{
	struct vmt_dev *vd = dev_get_drvdata(&mdev->dev);

	vfio_unregister_group_dev(&vd->vdev);
	vfio_put_device(&vd->vdev);
}

static ssize_t vmt_show_description(struct mdev_type *mtype, char *buf)
{
	const struct vmt_type *t = container_of(mtype, struct vmt_type, type);

	return sysfs_emit(buf, "%s\n", t->desc);
}

static struct mdev_driver vmt_driver = {
	.device_api = VFIO_DEVICE_API_PCI_STRING,
	.max_instances = 32,
	.driver = {
		.name = VMT_NAME,
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
		.dev_groups = vmt_attr_groups,
	},
	.probe = vmt_probe,
	.remove = vmt_remove,
	.show_description = vmt_show_description,
};

static struct class *vmt_class;
static struct device *vmt_parent_dev;
static struct mdev_parent vmt_parent;

static int __init vmt_init(void)
{
	int ret;

	ret = mdev_register_driver(&vmt_driver);
	if (ret)
		return ret;
	/* The class names the type directories: <class>-<type>, e.g. vfiomig_test-v2. */
	vmt_class = class_create(VMT_NAME);
	if (IS_ERR(vmt_class)) {
		ret = PTR_ERR(vmt_class);
		goto err_driver;
	}
	vmt_parent_dev = device_create(vmt_class, NULL, MKDEV(0, 0), NULL, VMT_NAME);
	if (IS_ERR(vmt_parent_dev)) {
		ret = PTR_ERR(vmt_parent_dev);
		goto err_class;
	}
	ret = mdev_register_parent(&vmt_parent, vmt_parent_dev, &vmt_driver, vmt_mdev_types,
				   ARRAY_SIZE(vmt_mdev_types));
	if (ret)
		goto err_dev;
	return 0;
err_dev:
	device_unregister(vmt_parent_dev);
err_class:
	class_destroy(vmt_class);
err_driver:
	mdev_unregister_driver(&vmt_driver);
	return ret;
}

static void __exit vmt_exit(void)
{
	mdev_unregister_parent(&vmt_parent);
	device_unregister(vmt_parent_dev);
	class_destroy(vmt_class);
	mdev_unregister_driver(&vmt_driver);
}

module_init(vmt_init);
module_exit(vmt_exit);

#if IS_ENABLED(CONFIG_IOMMUFD_DRIVER)
MODULE_IMPORT_NS(IOMMUFD);
#endif
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("libvfiomig test mdev: v1/v2 migration, DMA logging, fault injection");
