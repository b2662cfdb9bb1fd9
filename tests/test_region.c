/* SPDX-License-Identifier: MIT */
/* Region helpers: info, lookup, full and register-width I/O with faults, sparse mmap. */
#include "testutil.h"

#include <sys/mman.h>

#include "uapi.h"

static struct simenv env;
static struct vfiomig_sim_device *sd;
static struct vfiomig_device *dev;

static void open_dev(const char *spec)
{
	sd = sim_add(&env, spec);
	cr_assert_eq(vfiomig_device_open(env.ctx, vfiomig_sim_device_name(sd), NULL, &dev), 0,
		     "%s", env.log.last);
}

static void setup(void)
{
	simenv_init(&env);
	dev = NULL;
}

static void teardown(void)
{
	vfiomig_device_close(dev);
	simenv_fini(&env);
}

TestSuite(region, .init = setup, .fini = teardown);

Test(region, info_uses_the_reported_offset_not_index_shift)
{
	open_dev("sim:pci,bar0=64K");
	for (uint32_t i = 0; i < 9; i++) {
		VFIOMIG_OPTS(region_info, ri);

		if (i == VFIOMIG_PCI_VGA_REGION) {
			/* vfio-pci declines the VGA index on a device without VGA. */
			cr_assert_eq(vfiomig_region_get_info(dev, i, &ri), -EINVAL);
			continue;
		}
		cr_assert_eq(vfiomig_region_get_info(dev, i, &ri), 0, "region %u", i);
		cr_assert_eq(ri.index, i);
		cr_assert_neq(ri.offset, (uint64_t)i << 40, "region %u at index<<40", i);
	}
	{
		VFIOMIG_OPTS(region_info, ri);

		cr_assert_eq(vfiomig_region_get_info(dev, 0, &ri), 0);
		cr_assert_eq(ri.size, 64 * 1024);
		cr_assert(ri.flags & VFIOMIG_REGION_FLAG_MMAP);
		cr_assert(ri.cap_flags & VFIOMIG_REGION_HAS_SPARSE);
		cr_assert_eq(ri.nr_sparse_areas, 2);
		cr_assert_eq(vfiomig_region_get_info(dev, 9, &ri), -EINVAL);
	}
}

Test(region, info_is_cached)
{
	VFIOMIG_OPTS(region_info, ri);
	uint64_t before;

	open_dev("sim:pci");
	cr_assert_eq(vfiomig_region_get_info(dev, 0, &ri), 0);
	before = vfiomig_fault_calls(env.fault, VFIOMIG_KOP_IOCTL);
	cr_assert_eq(vfiomig_region_get_info(dev, 0, &ri), 0);
	cr_assert_eq(vfiomig_fault_calls(env.fault, VFIOMIG_KOP_IOCTL), before);
}

Test(region, short_info_struct_gets_only_what_fits)
{
	struct vfiomig_region_info ri;

	open_dev("sim:pci");
	memset(&ri, 0xab, sizeof(ri));
	ri.sz = offsetof(struct vfiomig_region_info, index); /* an old caller: up to offset */
	cr_assert_eq(vfiomig_region_get_info(dev, 0, &ri), 0);
	cr_assert_eq(ri.size, 64 << 10, "BAR0 is 64 KiB");
	cr_assert_eq(ri.index, 0xababababu, "wrote past the caller's sz");
}

Test(region, config_space_registers_at_native_width)
{
	uint64_t v;

	open_dev("sim:pci,vendor=0x8086,device=0x1572,subvendor=0x1028,subdevice=0x0001");
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 0, 2, &v), 0);
	cr_assert_eq(v, 0x8086);
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 2, 2, &v), 0);
	cr_assert_eq(v, 0x1572);
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 0, 4, &v), 0);
	cr_assert_eq(v, 0x15728086);
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 0x2c, 2, &v), 0);
	cr_assert_eq(v, 0x1028);
	/* Bad width / alignment / range. */
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 0, 3, &v), -EINVAL);
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 2, 4, &v), -EINVAL);
	cr_assert_eq(vfiomig_region_read_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 256, 4, &v), -EINVAL);
	cr_assert_eq(vfiomig_region_write_reg(dev, VFIOMIG_PCI_CONFIG_REGION, 4, 2, 0x10000),
		     -ERANGE);
}

/*
 * The last byte of a region is inside it, one more is not: an access that
 * ends one byte past the end is refused before the kernel is asked (on
 * real vfio-pci the file offset past a BAR is the next region's).
 */
Test(region, access_ending_one_byte_past_the_end_never_reaches_the_kernel)
{
	const uint64_t size = 64 * 1024;
	unsigned char buf[2] = { 0x5a, 0xa5 };
	uint64_t reads, writes;

	open_dev("sim:pci,bar0=64K");
	cr_assert_eq(vfiomig_region_write(dev, 0, size - 2, buf, 2), 0, "%s", env.log.last);
	memset(buf, 0, sizeof(buf));
	cr_assert_eq(vfiomig_region_read(dev, 0, size - 2, buf, 2), 0, "%s", env.log.last);
	cr_assert(buf[0] == 0x5a && buf[1] == 0xa5);
	reads = vfiomig_fault_calls(env.fault, VFIOMIG_KOP_PREAD);
	writes = vfiomig_fault_calls(env.fault, VFIOMIG_KOP_PWRITE);
	env.log.errors = 0;
	cr_assert_eq(vfiomig_region_read(dev, 0, size - 1, buf, 2), -EINVAL);
	cr_assert(strstr(env.log.last_err, "outside the region"), "%s", env.log.last_err);
	cr_assert_eq(vfiomig_region_write(dev, 0, size - 1, buf, 2), -EINVAL);
	cr_assert(strstr(env.log.last_err, "outside the region"), "%s", env.log.last_err);
	cr_assert_eq(vfiomig_region_read(dev, 0, size, buf, 1), -EINVAL);
	cr_assert_eq(env.log.errors, 3);
	cr_assert_eq(vfiomig_fault_calls(env.fault, VFIOMIG_KOP_PREAD), reads,
		     "the kernel was asked to read past the region");
	cr_assert_eq(vfiomig_fault_calls(env.fault, VFIOMIG_KOP_PWRITE), writes,
		     "the kernel was asked to write past the region");
}

/* EINTR is retried by full writes too (and the bytes land once, where they belong). */
Test(region, full_write_retries_eintr)
{
	unsigned char in[256], out[256];
	size_t len;
	unsigned char *mem;

	open_dev("sim:pci");
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i ^ 0x5a);
	{
		VFIOMIG_OPTS(fault_spec, fs, .op = VFIOMIG_KOP_PWRITE, .times = 2, .error = -EINTR);
		cr_assert_eq(vfiomig_fault_add(env.fault, &fs), 0);
	}
	cr_assert_eq(vfiomig_region_write(dev, 0, 0x2000, in, sizeof(in)), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_fault_fired(env.fault), 2);
	mem = vfiomig_sim_device_region_mem(sd, 0, &len);
	cr_assert_not_null(mem);
	cr_assert_eq(memcmp(mem + 0x2000, in, sizeof(in)), 0);
	cr_assert_eq(vfiomig_region_read(dev, 0, 0x2000, out, sizeof(out)), 0);
	cr_assert_eq(memcmp(out, in, sizeof(in)), 0);
}

Test(region, register_access_is_one_exact_call)
{
	uint64_t v = 0;

	open_dev("sim:pci");
	cr_assert_eq(vfiomig_region_write_reg(dev, 0, 0x100, 8, 0x1122334455667788ull), 0);
	/* A short register read is an error, never split into two accesses. */
	fault(&env, VFIOMIG_KOP_PREAD, 1, 0, 4, 0);
	cr_assert_eq(vfiomig_region_read_reg(dev, 0, 0x100, 8, &v), -EIO);
	cr_assert(strstr(env.log.last, "short"), "message: %s", env.log.last);
	/* EINTR is retried. */
	fault(&env, VFIOMIG_KOP_PREAD, 1, -EINTR, 0, 0);
	cr_assert_eq(vfiomig_region_read_reg(dev, 0, 0x100, 8, &v), 0);
	cr_assert_eq(v, 0x1122334455667788ull);
	cr_assert_eq(vfiomig_region_read_reg(dev, 0, 0x104, 4, &v), 0);
	cr_assert_eq(v, 0x11223344);
}

Test(region, full_io_loops_over_short_transfers_and_eintr)
{
	unsigned char in[4096], out[4096];
	uint64_t calls;

	open_dev("sim:pci");
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 7 + 3);
	/* Every write shortened to 100 bytes: 41 calls for 4096 bytes. */
	{
		VFIOMIG_OPTS(fault_spec, fs, .op = VFIOMIG_KOP_PWRITE, .times = 1000,
			     .short_len = 100);
		cr_assert_eq(vfiomig_fault_add(env.fault, &fs), 0);
	}
	calls = vfiomig_fault_calls(env.fault, VFIOMIG_KOP_PWRITE);
	cr_assert_eq(vfiomig_region_write(dev, 0, 0x1000, in, sizeof(in)), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_fault_calls(env.fault, VFIOMIG_KOP_PWRITE) - calls, 41);
	vfiomig_fault_clear(env.fault);

	fault(&env, VFIOMIG_KOP_PREAD, 2, -EINTR, 0, 0);
	{
		VFIOMIG_OPTS(fault_spec, fs, .op = VFIOMIG_KOP_PREAD, .times = 3, .short_len = 7);
		cr_assert_eq(vfiomig_fault_add(env.fault, &fs), 0);
	}
	memset(out, 0, sizeof(out));
	cr_assert_eq(vfiomig_region_read(dev, 0, 0x1000, out, sizeof(out)), 0, "%s", env.log.last);
	cr_assert_eq(memcmp(in, out, sizeof(in)), 0);
	/* The bytes really are in the device's memory, at the region's offset. */
	{
		size_t len;
		unsigned char *mem = vfiomig_sim_device_region_mem(sd, 0, &len);

		cr_assert_not_null(mem);
		cr_assert_eq(memcmp(mem + 0x1000, in, sizeof(in)), 0);
	}
}

Test(region, io_errors)
{
	unsigned char b[16];

	open_dev("sim:pci");
	/* Crossing the end of the region. */
	cr_assert_eq(vfiomig_region_read(dev, 0, 64 * 1024 - 8, b, 16), -EINVAL);
	cr_assert_eq(vfiomig_region_read(dev, 0, UINT64_MAX - 4, b, 16), -EINVAL);
	/* A region of size 0 (BAR1) has no bytes. */
	cr_assert_eq(vfiomig_region_read(dev, 1, 0, b, 1), -EINVAL);
	/* The device returning 0 mid-transfer is -EIO, not a silent short read. */
	fault(&env, VFIOMIG_KOP_PREAD, 1, 0, 0, 0);
	cr_assert_eq(vfiomig_region_read(dev, 0, 0, b, 16), -EIO);
	/* A kernel error passes through with a message. */
	fault(&env, VFIOMIG_KOP_PWRITE, 1, -EFAULT, 0, 0);
	cr_assert_eq(vfiomig_region_write(dev, 0, 0, b, 16), -EFAULT);
	cr_assert(strstr(env.log.last, "region 0"), "message: %s", env.log.last);
}

Test(region, sparse_mmap_maps_only_allowed_areas)
{
	struct vfiomig_sparse_area areas[4];
	struct vfiomig_region_map *map;
	uint32_t nr = 0;
	unsigned char buf[8];

	open_dev("sim:pci,bar0=64K");
	cr_assert_eq(vfiomig_region_get_sparse_areas(dev, 0, areas, 4, &nr), 0);
	cr_assert_eq(nr, 2);
	cr_assert_eq(vfiomig_region_mmap(dev, 0, PROT_READ | PROT_WRITE, &map), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_region_map_count(map), 2);
	cr_assert_eq(vfiomig_sim_live_maps(env.sim), 2);
	for (uint32_t i = 0; i < 2; i++) {
		uint64_t off, size;
		void *addr;

		cr_assert_eq(vfiomig_region_map_area(map, i, &off, &size, &addr), 0);
		cr_assert_eq(off, areas[i].offset);
		cr_assert_eq(size, areas[i].size);
		cr_assert_not_null(addr);
	}
	cr_assert_eq(vfiomig_region_map_area(map, 2, NULL, NULL, NULL), -EINVAL);

	/* Writes through the mapping are what pread sees, and the other way round. */
	{
		unsigned char *p = vfiomig_region_map_ptr(map, areas[1].offset + 16, 8);

		cr_assert_not_null(p);
		memcpy(p, "mappedok", 8);
		cr_assert_eq(vfiomig_region_read(dev, 0, areas[1].offset + 16, buf, 8), 0);
		cr_assert_eq(memcmp(buf, "mappedok", 8), 0);
		cr_assert_eq(vfiomig_region_write(dev, 0, areas[1].offset + 32, "written!", 8), 0);
		cr_assert_eq(memcmp(p + 16, "written!", 8), 0);
	}
	/* The hole between the areas, and spans crossing an area's end, have no pointer. */
	cr_assert_null(vfiomig_region_map_ptr(map, areas[0].offset + areas[0].size, 1));
	cr_assert_null(vfiomig_region_map_ptr(map, areas[0].offset + areas[0].size - 4, 8));
	cr_assert_null(vfiomig_region_map_ptr(map, UINT64_MAX - 2, 8));
	vfiomig_region_unmap(map);
	cr_assert_eq(vfiomig_sim_live_maps(env.sim), 0);
}

Test(region, mmap_without_sparse_cap_maps_whole_region)
{
	struct vfiomig_region_map *map;
	uint64_t off, size;

	open_dev("sim:pci,bar0=16K,sparse=0");
	cr_assert_eq(vfiomig_region_mmap(dev, 0, PROT_READ, &map), 0, "%s", env.log.last);
	cr_assert_eq(vfiomig_region_map_count(map), 1);
	cr_assert_eq(vfiomig_region_map_area(map, 0, &off, &size, NULL), 0);
	cr_assert_eq(off, 0);
	cr_assert_eq(size, 16 * 1024);
	vfiomig_region_unmap(map);
}

Test(region, mmap_refusals_leave_nothing_mapped)
{
	struct vfiomig_region_map *map = (void *)1;

	open_dev("sim:pci");
	/* BAR2 is trapped: no MMAP flag. */
	cr_assert_eq(vfiomig_region_mmap(dev, 2, PROT_READ, &map), -EINVAL);
	cr_assert_null(map);
	/* The second area's mmap fails: the first is unmapped again. */
	fault(&env, VFIOMIG_KOP_MMAP, 2, -ENOMEM, 0, 0);
	cr_assert_eq(vfiomig_region_mmap(dev, 0, PROT_READ, &map), -ENOMEM);
	cr_assert_eq(vfiomig_sim_live_maps(env.sim), 0);
}

Test(region, find_by_type_and_raw_info)
{
	VFIOMIG_OPTS(region_info, ri);
	size_t len;
	void *buf;

	open_dev("sim:pci,msix_mappable=1");
	cr_assert_eq(vfiomig_region_find(dev, VFIOMIG_REGION_TYPE_MIGRATION_V1,
					 VFIOMIG_REGION_SUBTYPE_MIGRATION_V1, &ri), -ENOENT);
	cr_assert_eq(vfiomig_region_get_info_raw(dev, 0, &buf, &len), 0);
	cr_assert_gt(len, 32);
	cr_assert_eq(vfiomig_cap_msix_mappable(env.ctx, buf, len), 1);
	cr_assert_eq(vfiomig_caps_validate(env.ctx, VFIOMIG_INFO_REGION, buf, len), 2);
	vfiomig_free(buf);
	cr_assert_eq(vfiomig_region_get_info(dev, 0, &ri), 0);
	cr_assert(ri.cap_flags & VFIOMIG_REGION_HAS_MSIX_MAPPABLE);
}

Test(region, info_ioctl_failure_is_reported_and_not_cached)
{
	VFIOMIG_OPTS(region_info, ri);

	open_dev("sim:pci");
	fault(&env, VFIOMIG_KOP_IOCTL, 1, -EIO, 0, VU_DEVICE_GET_REGION_INFO);
	cr_assert_eq(vfiomig_region_get_info(dev, 3, &ri), -EIO);
	cr_assert(strstr(env.log.last, "GET_REGION_INFO"), "message: %s", env.log.last);
	cr_assert_eq(vfiomig_region_get_info(dev, 3, &ri), 0);
}

/*
 * A kernel whose sparse-mmap capability moves BAR0's first area off a page
 * boundary: the simulator's ops, its answer rewritten, its mmaps counted.
 */
static struct {
	uint64_t area0_shift; /* added to the first sparse area's offset of region 0 */
	int mmaps;
} lie;

static int lie_ioctl(void *user, int fd, unsigned long req, void *arg)
{
	int ret = vfiomig_sim_kernel_ops()->ioctl(user, fd, req, arg);
	struct vu_region_info *ri = arg;
	unsigned char *b = arg;
	uint32_t at;

	if (ret < 0 || req != VU_DEVICE_GET_REGION_INFO || ri->index != 0 || !lie.area0_shift ||
	    !(ri->flags & VU_REGION_INFO_FLAG_CAPS) || ri->argsz > 4096)
		return ret;
	for (at = ri->cap_offset; at; ) {
		struct vu_info_cap_header h;
		uint64_t off;

		memcpy(&h, b + at, sizeof(h));
		if (h.id == VU_REGION_INFO_CAP_SPARSE_MMAP) {
			/* {hdr; u32 nr_areas; u32 rsvd; {u64 offset, size}[]} */
			memcpy(&off, b + at + 16, 8);
			off += lie.area0_shift;
			memcpy(b + at + 16, &off, 8);
		}
		at = h.next;
	}
	return ret;
}

static int lie_mmap(void *user, int fd, uint64_t offset, size_t len, int prot, void **addr)
{
	lie.mmaps++;
	return vfiomig_sim_kernel_ops()->mmap(user, fd, offset, len, prot, addr);
}

Test(region, sparse_area_off_a_page_boundary_is_never_mmapped)
{
	static struct vfiomig_kernel_ops ops;
	struct vfiomig_region_map *map = NULL;
	struct vfiomig_sparse_area a[2];
	struct vfiomig_device *d;
	struct vfiomig_ctx *ctx;
	uint32_t nr = 0;

	ops = *vfiomig_sim_kernel_ops();
	ops.ioctl = lie_ioctl;
	ops.mmap = lie_mmap;
	{
		VFIOMIG_OPTS(ctx_opts, co, .log_fn = logcap_fn, .log_user = &env.log,
			     .kernel_ops = &ops, .kernel_user = env.sim);
		cr_assert_eq(vfiomig_ctx_new(&co, &ctx), 0);
	}
	sd = sim_add(&env, "sim:pci,bar0=64K");
	lie.area0_shift = 0x800;
	cr_assert_eq(vfiomig_device_open(ctx, vfiomig_sim_device_name(sd), NULL, &d), 0, "%s",
		     env.log.last);
	cr_assert_eq(vfiomig_region_get_sparse_areas(d, 0, a, 2, &nr), 0, "%s", env.log.last);
	cr_assert_eq(nr, 2);
	cr_assert_eq(a[0].offset % 4096, 0x800, "the lie did not reach the capability");
	cr_assert_eq(vfiomig_region_mmap(d, 0, PROT_READ | PROT_WRITE, &map), -EINVAL);
	cr_assert_null(map);
	cr_assert(strstr(env.log.last_err, "not page-aligned"), "%s", env.log.last_err);
	cr_assert_eq(lie.mmaps, 0, "the kernel was asked to mmap an unaligned offset");
	cr_assert_eq(vfiomig_sim_live_maps(env.sim), 0);
	vfiomig_device_close(d);
	vfiomig_ctx_unref(ctx);
}
