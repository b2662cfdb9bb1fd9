/* SPDX-License-Identifier: MIT */
/*
 * Device regions: cached region info (with its capability chain), lookup
 * by type/subtype, full-length and register-width access at the region's
 * reported file offset, and mmap honouring the sparse-mmap capability.
 */
#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

void vm_regions_free(struct vfiomig_device *dev)
{
	if (!dev->regions)
		return;
	for (uint32_t i = 0; i < dev->info.num_regions; i++)
		free(dev->regions[i].raw);
	free(dev->regions);
	dev->regions = NULL;
}

/*
 * Fetch, parse and cache region `index`. With `probing`, a region the
 * kernel declines with -EINVAL (vfio-pci's VGA index on a device without
 * VGA) is reported without a log line: enumerations skip it.
 */
static int region_get_ex(struct vfiomig_device *dev, uint32_t index, bool probing,
			 struct vm_region_cache **out)
{
	struct vfiomig_ctx *ctx = dev->ctx;
	const struct vu_device_info *di;
	struct vu_region_info hdr = { .index = index };
	struct vm_region_cache *rc;
	struct vu_region_info ri;
	char what[160];
	int ret;

	ret = vm_device_info(dev, &di);
	if (ret)
		return ret;
	if (index >= di->num_regions)
		return vm_err(ctx, -EINVAL, "device %s: region %u does not exist (%u regions)",
			      dev->name, index, di->num_regions);
	if (!dev->regions) {
		dev->regions = calloc(di->num_regions, sizeof(*dev->regions));
		if (!dev->regions)
			return vm_err(ctx, -ENOMEM, "device %s: region table", dev->name);
	}
	rc = &dev->regions[index];
	if (rc->valid) {
		*out = rc;
		return 0;
	}

	snprintf(what, sizeof(what), "device %s: VFIO_DEVICE_GET_REGION_INFO(%u)", dev->name,
		 index);
	ret = vk_info_ioctl(ctx, dev->fd, VU_DEVICE_GET_REGION_INFO, &hdr, sizeof(hdr), &rc->raw,
			    &rc->raw_len, what, probing ? VK_INFO_QUIET_EINVAL : 0);
	if (ret)
		return ret;
	memcpy(&ri, rc->raw, sizeof(ri));
	if (ri.index != index) {
		ret = vm_err(ctx, -EIO, "%s: the kernel answered for region %u", what, ri.index);
		goto fail;
	}
	if (ri.offset + ri.size < ri.offset) {
		ret = vm_err(ctx, -EINVAL, "%s: offset 0x%llx + size 0x%llx overflows", what,
			     (unsigned long long)ri.offset, (unsigned long long)ri.size);
		goto fail;
	}

	memset(&rc->info, 0, sizeof(rc->info));
	rc->info.sz = sizeof(rc->info);
	rc->info.index = index;
	rc->info.flags = ri.flags;
	rc->info.size = ri.size;
	rc->info.offset = ri.offset;
	if (ri.flags & VU_REGION_INFO_FLAG_CAPS) {
		uint32_t nr = 0;

		ret = vfiomig_caps_validate(ctx, VFIOMIG_INFO_REGION, rc->raw, rc->raw_len);
		if (ret < 0) {
			vm_err(ctx, ret, "%s: malformed capability chain", what);
			goto fail;
		}
		ret = vfiomig_cap_region_type(ctx, rc->raw, rc->raw_len, &rc->info.type,
					      &rc->info.subtype);
		if (ret == 0)
			rc->info.cap_flags |= VFIOMIG_REGION_HAS_TYPE;
		else if (ret != -ENOENT)
			goto fail;
		ret = vfiomig_cap_sparse_mmap(ctx, rc->raw, rc->raw_len, NULL, 0, &nr);
		if (ret == 0) {
			rc->info.cap_flags |= VFIOMIG_REGION_HAS_SPARSE;
			rc->info.nr_sparse_areas = nr;
		} else if (ret != -ENOENT) {
			goto fail;
		}
		ret = vfiomig_cap_msix_mappable(ctx, rc->raw, rc->raw_len);
		if (ret < 0)
			goto fail;
		if (ret)
			rc->info.cap_flags |= VFIOMIG_REGION_HAS_MSIX_MAPPABLE;
	}
	rc->valid = true;
	*out = rc;
	return 0;
fail:
	free(rc->raw);
	rc->raw = NULL;
	rc->raw_len = 0;
	return ret;
}

static int region_get(struct vfiomig_device *dev, uint32_t index, struct vm_region_cache **out)
{
	return region_get_ex(dev, index, false, out);
}

int vfiomig_region_get_info(struct vfiomig_device *dev, uint32_t index,
			    struct vfiomig_region_info *info)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vm_region_cache *rc;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!info)
		return vm_arg_err(dev->ctx, __func__);
	if (info->sz < sizeof(size_t))
		return vm_err(dev->ctx, -EINVAL, "device %s: vfiomig_region_info.sz not set",
			      dev->name);
	ret = region_get(dev, index, &rc);
	if (ret)
		return ret;
	vm_out_copy(info, &rc->info, sizeof(rc->info));
	return 0;
}

int vfiomig_region_get_info_raw(struct vfiomig_device *dev, uint32_t index, void **buf,
				size_t *len)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vm_region_cache *rc;
	void *copy;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!buf || !len)
		return vm_arg_err(dev->ctx, __func__);
	ret = region_get(dev, index, &rc);
	if (ret)
		return ret;
	copy = malloc(rc->raw_len);
	if (!copy)
		return vm_err(dev->ctx, -ENOMEM, "device %s: region %u info copy", dev->name,
			      index);
	memcpy(copy, rc->raw, rc->raw_len);
	*buf = copy;
	*len = rc->raw_len;
	return 0;
}

int vfiomig_region_get_sparse_areas(struct vfiomig_device *dev, uint32_t index,
				    struct vfiomig_sparse_area *areas, uint32_t max, uint32_t *nr)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vm_region_cache *rc;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!nr || (max && !areas))
		return vm_arg_err(dev->ctx, __func__);
	ret = region_get(dev, index, &rc);
	if (ret)
		return ret;
	if (!(rc->info.cap_flags & VFIOMIG_REGION_HAS_SPARSE))
		return -ENOENT;
	return vfiomig_cap_sparse_mmap(dev->ctx, rc->raw, rc->raw_len, areas, max, nr);
}

int vfiomig_region_find(struct vfiomig_device *dev, uint32_t type, uint32_t subtype,
			struct vfiomig_region_info *info)
{
	VM_API(dev ? dev->ctx : NULL);
	const struct vu_device_info *di;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!info)
		return vm_arg_err(dev->ctx, __func__);
	if (info->sz < sizeof(size_t))
		return vm_err(dev->ctx, -EINVAL, "device %s: vfiomig_region_info.sz not set",
			      dev->name);
	ret = vm_device_info(dev, &di);
	if (ret)
		return ret;
	for (uint32_t i = 0; i < di->num_regions; i++) {
		struct vm_region_cache *rc;

		ret = region_get_ex(dev, i, true, &rc);
		if (ret == -EINVAL)
			continue; /* a region index the kernel declines (e.g. VGA) */
		if (ret)
			return ret;
		if ((rc->info.cap_flags & VFIOMIG_REGION_HAS_TYPE) && rc->info.type == type &&
		    rc->info.subtype == subtype) {
			vm_out_copy(info, &rc->info, sizeof(rc->info));
			return 0;
		}
	}
	return -ENOENT;
}

/* Resolve [offset, offset + len) of region index to a file offset on the device fd. */
static int region_span(struct vfiomig_device *dev, uint32_t index, uint64_t offset, uint64_t len,
		       uint32_t need, const char *op, uint64_t *file_off)
{
	struct vm_region_cache *rc;
	uint64_t end;
	int ret;

	ret = region_get(dev, index, &rc);
	if (ret)
		return ret;
	if (!(rc->info.flags & need))
		return vm_err(dev->ctx, -EINVAL, "device %s: region %u: %s: region is not %s",
			      dev->name, index, op,
			      need == VFIOMIG_REGION_FLAG_READ ? "readable" : "writable");
	if (__builtin_add_overflow(offset, len, &end) || end > rc->info.size)
		return vm_err(dev->ctx, -EINVAL,
			      "device %s: region %u: %s of %llu bytes at 0x%llx is outside the "
			      "region (size 0x%llx)",
			      dev->name, index, op, (unsigned long long)len,
			      (unsigned long long)offset, (unsigned long long)rc->info.size);
	*file_off = rc->info.offset + offset;
	return 0;
}

int vfiomig_region_read(struct vfiomig_device *dev, uint32_t index, uint64_t offset, void *buf,
			size_t len)
{
	VM_API(dev ? dev->ctx : NULL);
	uint64_t foff;
	int ret;

	if (!dev)
		return -EINVAL;
	if ((len && !buf))
		return vm_arg_err(dev->ctx, __func__);
	ret = region_span(dev, index, offset, len, VFIOMIG_REGION_FLAG_READ, "read", &foff);
	if (ret)
		return ret;
	ret = vk_pread_full(dev->ctx, dev->fd, buf, len, foff);
	if (ret)
		return vm_err(dev->ctx, ret, "device %s: region %u: read of %zu bytes at 0x%llx",
			      dev->name, index, len, (unsigned long long)offset);
	return 0;
}

int vfiomig_region_write(struct vfiomig_device *dev, uint32_t index, uint64_t offset,
			 const void *buf, size_t len)
{
	VM_API(dev ? dev->ctx : NULL);
	uint64_t foff;
	int ret;

	if (!dev)
		return -EINVAL;
	if ((len && !buf))
		return vm_arg_err(dev->ctx, __func__);
	ret = region_span(dev, index, offset, len, VFIOMIG_REGION_FLAG_WRITE, "write", &foff);
	if (ret)
		return ret;
	ret = vk_pwrite_full(dev->ctx, dev->fd, buf, len, foff);
	if (ret)
		return vm_err(dev->ctx, ret, "device %s: region %u: write of %zu bytes at 0x%llx",
			      dev->name, index, len, (unsigned long long)offset);
	return 0;
}

static int check_width(struct vfiomig_device *dev, uint32_t index, uint64_t offset,
		       unsigned int width, const char *op)
{
	if (width != 1 && width != 2 && width != 4 && width != 8)
		return vm_err(dev->ctx, -EINVAL, "device %s: region %u: %s: width %u (1, 2, 4 or 8)",
			      dev->name, index, op, width);
	if (offset % width)
		return vm_err(dev->ctx, -EINVAL,
			      "device %s: region %u: %s: offset 0x%llx not aligned to width %u",
			      dev->name, index, op, (unsigned long long)offset, width);
	return 0;
}

int vfiomig_region_read_reg(struct vfiomig_device *dev, uint32_t index, uint64_t offset,
			    unsigned int width, uint64_t *value)
{
	VM_API(dev ? dev->ctx : NULL);
	union {
		uint8_t u8;
		uint16_t u16;
		uint32_t u32;
		uint64_t u64;
	} v = { 0 };
	uint64_t foff;
	ssize_t n;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!value)
		return vm_arg_err(dev->ctx, __func__);
	ret = check_width(dev, index, offset, width, "register read");
	if (ret)
		return ret;
	ret = region_span(dev, index, offset, width, VFIOMIG_REGION_FLAG_READ, "register read", &foff);
	if (ret)
		return ret;
	/* One access of exactly `width` bytes: a register read must never be split. */
	do
		n = vk_pread(dev->ctx, dev->fd, &v, width, foff);
	while (n == -EINTR);
	if (n != (ssize_t)width)
		return vm_err(dev->ctx, n < 0 ? (int)n : -EIO,
			      "device %s: region %u: %u-byte register read at 0x%llx%s", dev->name,
			      index, width, (unsigned long long)offset,
			      n >= 0 ? " came back short" : "");
	switch (width) {
	case 1: *value = v.u8; break;
	case 2: *value = v.u16; break;
	case 4: *value = v.u32; break;
	default: *value = v.u64; break;
	}
	return 0;
}

int vfiomig_region_write_reg(struct vfiomig_device *dev, uint32_t index, uint64_t offset,
			     unsigned int width, uint64_t value)
{
	VM_API(dev ? dev->ctx : NULL);
	union {
		uint8_t u8;
		uint16_t u16;
		uint32_t u32;
		uint64_t u64;
	} v;
	uint64_t foff;
	ssize_t n;
	int ret;

	if (!dev)
		return -EINVAL;
	ret = check_width(dev, index, offset, width, "register write");
	if (ret)
		return ret;
	if (width < 8 && (value >> (8 * width)))
		return vm_err(dev->ctx, -ERANGE,
			      "device %s: region %u: value 0x%llx does not fit a %u-byte register",
			      dev->name, index, (unsigned long long)value, width);
	ret = region_span(dev, index, offset, width, VFIOMIG_REGION_FLAG_WRITE, "register write",
			  &foff);
	if (ret)
		return ret;
	switch (width) {
	case 1: v.u8 = (uint8_t)value; break;
	case 2: v.u16 = (uint16_t)value; break;
	case 4: v.u32 = (uint32_t)value; break;
	default: v.u64 = value; break;
	}
	do
		n = vk_pwrite(dev->ctx, dev->fd, &v, width, foff);
	while (n == -EINTR);
	if (n != (ssize_t)width)
		return vm_err(dev->ctx, n < 0 ? (int)n : -EIO,
			      "device %s: region %u: %u-byte register write at 0x%llx%s", dev->name,
			      index, width, (unsigned long long)offset,
			      n >= 0 ? " came back short" : "");
	return 0;
}

/* ----------------------------------------------------------------- mmap */

struct vm_map_area {
	uint64_t offset;
	uint64_t size;
	void *addr;
};

struct vfiomig_region_map {
	struct vfiomig_device *dev;
	uint32_t index;
	uint32_t count;
	struct vm_map_area areas[];
};

static void map_release(struct vfiomig_region_map *map)
{
	for (uint32_t i = 0; i < map->count; i++)
		vk_munmap(map->dev->ctx, map->areas[i].addr, map->areas[i].size);
	vm_device_put(map->dev);
	free(map);
}

int vfiomig_region_mmap(struct vfiomig_device *dev, uint32_t index, int prot,
			struct vfiomig_region_map **out)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vfiomig_sparse_area *areas = NULL, whole;
	struct vfiomig_region_map *map;
	struct vm_region_cache *rc;
	uint32_t nr = 0;
	uint64_t page;
	int ret;

	if (!dev)
		return -EINVAL;
	if (!out)
		return vm_arg_err(dev->ctx, __func__);
	*out = NULL;
	ret = region_get(dev, index, &rc);
	if (ret)
		return ret;
	if (!(rc->info.flags & VFIOMIG_REGION_FLAG_MMAP))
		return vm_err(dev->ctx, -EINVAL, "device %s: region %u cannot be mmapped",
			      dev->name, index);

	if (rc->info.cap_flags & VFIOMIG_REGION_HAS_SPARSE) {
		nr = rc->info.nr_sparse_areas;
		if (nr == 0)
			return vm_err(dev->ctx, -ENOENT, "device %s: region %u: the sparse-mmap "
				      "capability allows no area", dev->name, index);
		areas = calloc(nr, sizeof(*areas));
		if (!areas)
			return vm_err(dev->ctx, -ENOMEM, "device %s: region %u: %u sparse areas",
				      dev->name, index, nr);
		ret = vfiomig_cap_sparse_mmap(dev->ctx, rc->raw, rc->raw_len, areas, nr, &nr);
		if (ret) {
			free(areas);
			return ret;
		}
	} else {
		whole.offset = 0;
		whole.size = rc->info.size;
		areas = &whole;
		nr = 1;
	}

	map = calloc(1, sizeof(*map) + (size_t)nr * sizeof(map->areas[0]));
	if (!map) {
		ret = vm_err(dev->ctx, -ENOMEM, "device %s: region %u: map", dev->name, index);
		goto out;
	}
	map->dev = vm_device_get(dev);
	map->index = index;
	page = (uint64_t)sysconf(_SC_PAGESIZE);
	for (uint32_t i = 0; i < nr; i++) {
		uint64_t end;
		void *addr;

		if (areas[i].size == 0)
			continue;
		if (__builtin_add_overflow(areas[i].offset, areas[i].size, &end) ||
		    end > rc->info.size || areas[i].offset % page || areas[i].size % page ||
		    areas[i].size > SIZE_MAX) {
			ret = vm_err(dev->ctx, -EINVAL,
				     "device %s: region %u: sparse area %u [0x%llx, +0x%llx) is "
				     "outside the region or not page-aligned",
				     dev->name, index, i, (unsigned long long)areas[i].offset,
				     (unsigned long long)areas[i].size);
			goto fail;
		}
		ret = vk_mmap(dev->ctx, dev->fd, rc->info.offset + areas[i].offset,
			      (size_t)areas[i].size, prot, &addr);
		if (ret) {
			vm_err(dev->ctx, ret, "device %s: region %u: mmap of area %u (0x%llx bytes "
			       "at 0x%llx)", dev->name, index, i,
			       (unsigned long long)areas[i].size,
			       (unsigned long long)areas[i].offset);
			goto fail;
		}
		map->areas[map->count].offset = areas[i].offset;
		map->areas[map->count].size = areas[i].size;
		map->areas[map->count].addr = addr;
		map->count++;
	}
	if (map->count == 0) {
		ret = vm_err(dev->ctx, -ENOENT, "device %s: region %u: nothing to map", dev->name,
			     index);
		goto fail;
	}
	vm_dbg(dev->ctx, "device %s: region %u: mapped %u area(s)", dev->name, index, map->count);
	*out = map;
	ret = 0;
	goto out;
fail:
	map_release(map);
out:
	if (areas != &whole)
		free(areas);
	return ret;
}

uint32_t vfiomig_region_map_count(const struct vfiomig_region_map *map)
{
	return map ? map->count : 0;
}

int vfiomig_region_map_area(const struct vfiomig_region_map *map, uint32_t i, uint64_t *offset,
			    uint64_t *size, void **addr)
{
	if (!map || i >= map->count)
		return -EINVAL;
	if (offset)
		*offset = map->areas[i].offset;
	if (size)
		*size = map->areas[i].size;
	if (addr)
		*addr = map->areas[i].addr;
	return 0;
}

void *vfiomig_region_map_ptr(const struct vfiomig_region_map *map, uint64_t offset, size_t len)
{
	uint64_t end;

	if (!map || __builtin_add_overflow(offset, (uint64_t)len, &end))
		return NULL;
	for (uint32_t i = 0; i < map->count; i++) {
		const struct vm_map_area *a = &map->areas[i];

		if (offset >= a->offset && end <= a->offset + a->size)
			return (char *)a->addr + (offset - a->offset);
	}
	return NULL;
}

void vfiomig_region_unmap(struct vfiomig_region_map *map)
{
	VM_API(map ? map->dev->ctx : NULL);
	if (map)
		map_release(map);
}
