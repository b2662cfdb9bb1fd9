/* SPDX-License-Identifier: MIT */
/*
 * Migration protocol v1 (Linux 5.8-5.17, what QEMU 5.2 shipped; opt-in,
 * experimental): a device-specific region of type 3 / subtype 1 whose
 * first 32 bytes are registers —
 *   device_state u32 @0 (RUNNING 1, SAVING 2, RESUMING 4; other bits
 *   reserved, so written read-modify-write), reserved u32 @4,
 *   pending_bytes u64 @8, data_offset u64 @16, data_size u64 @24 —
 * accessed only at their native width, and a data section inside the
 * same region that may be trapped, mmapped or sparse-mmapped.
 *
 * Save: read pending_bytes; while it is non-zero read data_offset (the
 * device stages a chunk), read data_size, take that many bytes at
 * data_offset. Resume: read data_offset, put the chunk there, write
 * data_size — in the order and sizes the source produced them, which is
 * why every v1 chunk travels as one data record of exactly its size.
 */
#include "mig.h"

#include <limits.h>
#include <stdlib.h>
#include <sys/mman.h>

#define V1_STATE         0
#define V1_PENDING       8
#define V1_DATA_OFFSET   16
#define V1_DATA_SIZE     24
#define V1_REGS_LEN      32
#define V1_ERROR_BITS    (VU_V1_STATE_SAVING | VU_V1_STATE_RESUMING)

/* v2 state -> v1 device_state bits (P2P states collapse onto their twins). */
static int to_bits(uint32_t s, uint32_t *bits)
{
	switch (s) {
	case VU_STATE_STOP: *bits = VU_V1_STATE_STOP; return 0;
	case VU_STATE_RUNNING:
	case VU_STATE_RUNNING_P2P: *bits = VU_V1_STATE_RUNNING; return 0;
	case VU_STATE_PRE_COPY:
	case VU_STATE_PRE_COPY_P2P: *bits = VU_V1_STATE_RUNNING | VU_V1_STATE_SAVING; return 0;
	case VU_STATE_STOP_COPY: *bits = VU_V1_STATE_SAVING; return 0;
	case VU_STATE_RESUMING: *bits = VU_V1_STATE_RESUMING; return 0;
	default: return -EINVAL;
	}
}

static uint32_t from_bits(uint32_t bits)
{
	switch (bits & VU_V1_STATE_MASK) {
	case VU_V1_STATE_STOP: return VU_STATE_STOP;
	case VU_V1_STATE_RUNNING: return VU_STATE_RUNNING;
	case VU_V1_STATE_RUNNING | VU_V1_STATE_SAVING: return VU_STATE_PRE_COPY;
	case VU_V1_STATE_SAVING: return VU_STATE_STOP_COPY;
	case VU_V1_STATE_RESUMING: return VU_STATE_RESUMING;
	default: return VU_STATE_ERROR; /* 110 error, 101/111 invalid */
	}
}

static int reg_read(struct vfiomig_mig *m, uint64_t off, unsigned int width, uint64_t *v)
{
	return vfiomig_region_read_reg(m->dev, m->v1_index, off, width, v);
}

static int read_state_bits(struct vfiomig_mig *m, uint32_t *bits)
{
	uint64_t v;
	int ret = reg_read(m, V1_STATE, 4, &v);

	if (ret)
		return ret;
	*bits = (uint32_t)v;
	return 0;
}

static int v1_init(struct vfiomig_mig *m)
{
	VFIOMIG_OPTS(region_info, ri);
	uint32_t bits;
	int ret;

	ret = vfiomig_region_find(m->dev, VFIOMIG_REGION_TYPE_MIGRATION_V1,
				  VFIOMIG_REGION_SUBTYPE_MIGRATION_V1, &ri);
	if (ret)
		return vm_err(m->ctx, ret, "device %s: no v1 migration region", m->dev->name);
	if (ri.size < V1_REGS_LEN ||
	    (ri.flags & (VFIOMIG_REGION_FLAG_READ | VFIOMIG_REGION_FLAG_WRITE)) !=
		    (VFIOMIG_REGION_FLAG_READ | VFIOMIG_REGION_FLAG_WRITE))
		return vm_err(m->ctx, -EINVAL, "device %s: v1 migration region %u: size %llu, "
			      "flags 0x%x (need >= 32 bytes, read + write)", m->dev->name,
			      ri.index, (unsigned long long)ri.size, ri.flags);
	m->v1_index = ri.index;
	m->v1_size = ri.size;
	/* The data section may be mmappable: map what the kernel allows, else stay trapped. */
	if (ri.flags & VFIOMIG_REGION_FLAG_MMAP) {
		vm_quiet_begin(m->ctx);
		ret = vfiomig_region_mmap(m->dev, ri.index, PROT_READ | PROT_WRITE, &m->v1_map);
		vm_quiet_end(m->ctx);
		if (ret) {
			vm_dbg(m->ctx, "device %s: v1 data section not mapped (%s): trapped access",
			       m->dev->name, vfiomig_strerror(ret));
			m->v1_map = NULL;
		}
	}
	ret = read_state_bits(m, &bits);
	if (ret)
		return ret;
	m->state = from_bits(bits);
	return 0;
}

static void v1_fini(struct vfiomig_mig *m)
{
	vfiomig_region_unmap(m->v1_map);
	m->v1_map = NULL;
}

static int v1_set_state(struct vfiomig_mig *m, uint32_t target)
{
	uint32_t bits, old, from = m->state;
	int ret, rret;

	if (target == m->state)
		return 0;
	if (to_bits(target, &bits))
		return vm_err(m->ctx, -EINVAL, "device %s: v1 has no state %s", m->dev->name,
			      vm_dev_state_name(target));
	ret = read_state_bits(m, &old);
	if (ret)
		return ret;
	if ((old & VU_V1_STATE_MASK) == bits) {
		m->state = target; /* a P2P twin: same bits */
		return 0;
	}
	/* Reserved bits 3..31 must survive: read-modify-write. */
	ret = vfiomig_region_write_reg(m->dev, m->v1_index, V1_STATE, 4,
				       (old & ~VU_V1_STATE_MASK) | bits);
	if (ret) {
		rret = read_state_bits(m, &old);
		m->state = rret ? VU_STATE_ERROR : from_bits(old);
		return vm_err(m->ctx, ret, "device %s: v1 device_state %s -> %s (device is now %s)",
			      m->dev->name, vm_dev_state_name(from), vm_dev_state_name(target),
			      vm_dev_state_name(m->state));
	}
	m->state = target;
	vm_dbg(m->ctx, "device %s: v1 %s -> %s", m->dev->name, vm_dev_state_name(from),
	       vm_dev_state_name(target));
	return 0;
}

static int v1_reset(struct vfiomig_mig *m)
{
	int ret = vm_device_reset(m->dev);

	m->state = ret < 0 ? VU_STATE_ERROR : VU_STATE_RUNNING;
	return ret;
}

static int v1_recover(struct vfiomig_mig *m, uint32_t target)
{
	int ret;

	/* The error state (110) is left only through a reset: no write from there. */
	if (m->state != VU_STATE_ERROR && v1_set_state(m, target) == 0)
		return 0;
	ret = v1_reset(m);
	if (ret < 0)
		return vm_err(m->ctx, ret, "device %s: VFIO_DEVICE_RESET after a failed v1 "
			      "transition", m->dev->name);
	vm_warn(m->ctx, "device %s: had to reset the device (its state is lost)",
		m->dev->name);
	ret = v1_set_state(m, target);
	return ret ? ret : 1;
}

static bool saving(const struct vfiomig_mig *m)
{
	return m->state == VU_STATE_PRE_COPY || m->state == VU_STATE_PRE_COPY_P2P ||
	       m->state == VU_STATE_STOP_COPY;
}

static int v1_precopy_info(struct vfiomig_mig *m, uint64_t *initial, uint64_t *dirty)
{
	/* v1 has no initial/dirty split: everything pending counts as dirty. */
	*initial = 0;
	*dirty = 0;
	if (!saving(m))
		return 0;
	return reg_read(m, V1_PENDING, 8, dirty);
}

static int v1_stopcopy_size(struct vfiomig_mig *m, uint64_t *bytes)
{
	*bytes = 0;
	if (!saving(m))
		return 0;
	return reg_read(m, V1_PENDING, 8, bytes);
}

/* Check [off, off + len) lies in the region's data area (past the registers). */
static int check_data_span(struct vfiomig_mig *m, uint64_t off, uint64_t len)
{
	uint64_t end;

	if (off < V1_REGS_LEN || __builtin_add_overflow(off, len, &end) || end > m->v1_size)
		return vm_err(m->ctx, -EPROTO, "device %s: v1 data_offset 0x%llx + data_size %llu "
			      "outside the migration region (size %llu)", m->dev->name,
			      (unsigned long long)off, (unsigned long long)len,
			      (unsigned long long)m->v1_size);
	return 0;
}

static int grow_scratch(struct vfiomig_mig *m, size_t len)
{
	void *p;

	if (len <= m->scratch_len)
		return 0;
	p = realloc(m->scratch, len);
	if (!p)
		return vm_err(m->ctx, -ENOMEM, "device %s: %zu-byte v1 chunk buffer", m->dev->name,
			      len);
	m->scratch = p;
	m->scratch_len = len;
	return 0;
}

static ssize_t v1_save_chunk(struct vfiomig_mig *m, const void **ptr)
{
	uint64_t pending, off, size;
	void *direct;
	int ret;

	if (!saving(m))
		return vm_err(m->ctx, -EPROTO, "device %s: v1 save in %s", m->dev->name,
			      vm_dev_state_name(m->state));
	ret = reg_read(m, V1_PENDING, 8, &pending);
	if (ret)
		return ret;
	if (pending == 0)
		return 0;
	/* Reading data_offset asks the device to stage the next chunk. */
	ret = reg_read(m, V1_DATA_OFFSET, 8, &off);
	if (!ret)
		ret = reg_read(m, V1_DATA_SIZE, 8, &size);
	if (ret)
		return ret;
	if (size == 0)
		return 0;
	ret = check_data_span(m, off, size);
	if (ret)
		return ret;
	if (size > SSIZE_MAX)
		return -EOVERFLOW;
	direct = vfiomig_region_map_ptr(m->v1_map, off, (size_t)size);
	if (direct) {
		*ptr = direct; /* handed to the writer without a copy */
		return (ssize_t)size;
	}
	ret = grow_scratch(m, (size_t)size);
	if (!ret)
		ret = vfiomig_region_read(m->dev, m->v1_index, off, m->scratch, (size_t)size);
	if (ret)
		return ret;
	*ptr = m->scratch;
	return (ssize_t)size;
}

static int v1_load_chunk(struct vfiomig_mig *m, uint64_t size)
{
	uint64_t off, done = 0;
	void *direct;
	int ret;

	if (m->state != VU_STATE_RESUMING)
		return vm_err(m->ctx, -EPROTO, "device %s: data record while %s", m->dev->name,
			      vm_dev_state_name(m->state));
	ret = reg_read(m, V1_DATA_OFFSET, 8, &off);
	if (ret)
		return ret;
	ret = check_data_span(m, off, size);
	if (ret)
		return ret;
	direct = size <= SIZE_MAX ? vfiomig_region_map_ptr(m->v1_map, off, (size_t)size) : NULL;
	if (direct) {
		ret = vm_fmt_read_body(&m->r, direct, (size_t)size);
		if (ret)
			return ret;
	} else {
		while (done < size) {
			size_t piece = size - done < m->scratch_len ? (size_t)(size - done) :
								       m->scratch_len;

			ret = vm_fmt_read_body(&m->r, m->scratch, piece);
			if (!ret)
				ret = vfiomig_region_write(m->dev, m->v1_index, off + done,
							   m->scratch, piece);
			if (ret)
				return ret;
			done += piece;
		}
	}
	return vfiomig_region_write_reg(m->dev, m->v1_index, V1_DATA_SIZE, 8, size);
}

const struct vm_proto vm_proto_v1 = {
	.name = "v1",
	.id = VFIOMIG_PROTO_V1,
	.init = v1_init,
	.fini = v1_fini,
	.set_state = v1_set_state,
	.recover = v1_recover,
	.reset = v1_reset,
	.precopy_info = v1_precopy_info,
	.stopcopy_size = v1_stopcopy_size,
	.save_chunk = v1_save_chunk,
	.load_chunk = v1_load_chunk,
};
