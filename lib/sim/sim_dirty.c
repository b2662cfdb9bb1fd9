/* SPDX-License-Identifier: MIT */
/*
 * DMA mappings and dirty-page tracking in the simulated kernel:
 *
 *  - the type1 container's mappings (VFIO_IOMMU_MAP_DMA / UNMAP_DMA, the
 *    DMA_AVAIL count, the IOVA ranges of an IOMMU-backed container) and
 *    its dirty tracking (VFIO_IOMMU_DIRTY_PAGES, UNMAP_DMA with
 *    GET_DIRTY_BITMAP), coarse for IOMMU-backed groups and precise for
 *    emulated (mdev) ones, as vfio_iommu_type1.c behaves;
 *  - a device's own DMA logging (VFIO_DEVICE_FEATURE DMA_LOGGING_START /
 *    STOP / REPORT) with vfio_main.c's validation and the drivers' (mlx5,
 *    pds) answers, chained in front of the migration feature hook;
 *  - iommufd's IOAS mappings (IOMMU_IOAS_MAP / UNMAP), GET_HW_INFO,
 *    HWPT_ALLOC (automatic HWPTs for devices attached to an IOAS),
 *    HWPT_SET_DIRTY_TRACKING / HWPT_GET_DIRTY_BITMAP and IOMMU_DESTROY;
 *  - the device's side: vfiomig_sim_device_dma_write / _pin and the
 *    fail_dma_report knob.
 *
 * Dirty state is kept as sets of 4 KiB page runs, so a 1 TiB mapping or
 * a query over it costs the number of runs, not of pages. Bitmaps the
 * caller hands in are user memory of this process: bits are only ever
 * OR-ed in (the kernel's type1 copy overwrites whole words of the
 * caller's zeroed bitmap; for a caller that zeroed it, as the uAPI
 * requires, the two cannot be told apart).
 *
 * All of it is the simulator lock's: the ioctls hold it, and so do the
 * public calls here (a device's DMA log is reached from both sides).
 */
#include "sim_internal.h"

#include <stdio.h>
#include <stdlib.h>

#define PG       4096ull
#define PG_SHIFT 12

/* x86: the MSI window 0xfee00000..0xfeefffff is reserved; 48-bit aperture. */
const struct vu_iova_range sim_type1_iova_ranges[2] = {
	{ .start = 0, .end = 0xfedfffffull },
	{ .start = 0xfef00000ull, .end = 0xffffffffffffull },
};

/* VFIO_DMA_MAP_FLAG_VADDR / VFIO_DMA_UNMAP_FLAG_VADDR: known to the kernel, not simulated. */
#define SIM_DMA_FLAG_VADDR (1u << 2)

static uint64_t min64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t max64(uint64_t a, uint64_t b)
{
	return a > b ? a : b;
}

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

/* Grow *arr to hold `need` elements of `elem` bytes. */
static int grow(void **arr, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 8;
	void *n;

	if (need <= *cap)
		return 0;
	while (ncap < need) {
		if (ncap > SIZE_MAX / 2 / elem)
			return -ENOMEM;
		ncap *= 2;
	}
	n = realloc(*arr, ncap * elem);
	if (!n)
		return -ENOMEM;
	*arr = n;
	*cap = ncap;
	return 0;
}

/* ------------------------------------------------------------ page sets */

/* A run of 4 KiB pages, both ends included. */
struct sim_span {
	uint64_t first, last;
};

/* Disjoint, non-adjacent runs in ascending order. */
struct sim_pageset {
	struct sim_span *s;
	size_t n, cap;
};

/* The first run ending at or after page. */
static size_t ps_lower(const struct sim_pageset *ps, uint64_t page)
{
	size_t lo = 0, hi = ps->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ps->s[mid].last < page)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int ps_add(struct sim_pageset *ps, uint64_t first, uint64_t last)
{
	size_t i = ps_lower(ps, first ? first - 1 : 0), j = i;
	int err;

	/* Swallow every run that overlaps or touches [first, last]. */
	while (j < ps->n && (last == UINT64_MAX || ps->s[j].first <= last + 1)) {
		first = min64(first, ps->s[j].first);
		last = max64(last, ps->s[j].last);
		j++;
	}
	if (i == j) {
		err = grow((void **)&ps->s, &ps->cap, ps->n + 1, sizeof(ps->s[0]));
		if (err)
			return err;
		memmove(&ps->s[i + 1], &ps->s[i], (ps->n - i) * sizeof(ps->s[0]));
		ps->n++;
	} else {
		memmove(&ps->s[i + 1], &ps->s[j], (ps->n - j) * sizeof(ps->s[0]));
		ps->n -= j - i - 1;
	}
	ps->s[i] = (struct sim_span){ .first = first, .last = last };
	return 0;
}

static int ps_remove(struct sim_pageset *ps, uint64_t first, uint64_t last)
{
	size_t i = ps_lower(ps, first), j;

	if (i == ps->n)
		return 0;
	if (ps->s[i].first < first && ps->s[i].last > last) {
		/* A hole in the middle of one run splits it. */
		int err = grow((void **)&ps->s, &ps->cap, ps->n + 1, sizeof(ps->s[0]));

		if (err)
			return err;
		memmove(&ps->s[i + 2], &ps->s[i + 1], (ps->n - i - 1) * sizeof(ps->s[0]));
		ps->s[i + 1] = (struct sim_span){ .first = last + 1, .last = ps->s[i].last };
		ps->s[i].last = first - 1;
		ps->n++;
		return 0;
	}
	if (i < ps->n && ps->s[i].first < first) {
		ps->s[i].last = first - 1;
		i++;
	}
	for (j = i; j < ps->n && ps->s[j].last <= last; j++)
		;
	if (j < ps->n && ps->s[j].first <= last)
		ps->s[j].first = last + 1;
	memmove(&ps->s[i], &ps->s[j], (ps->n - j) * sizeof(ps->s[0]));
	ps->n -= j - i;
	return 0;
}

static void ps_free(struct sim_pageset *ps)
{
	free(ps->s);
	memset(ps, 0, sizeof(*ps));
}

/* ---------------------------------------------------------------- bitmaps */

/* OR count bits from bit `bit` into a caller's bitmap of u64 words. */
static void bm_set(uint64_t *bm, uint64_t bit, uint64_t count)
{
	while (count) {
		uint64_t off = bit % 64, n = min64(64 - off, count);
		uint64_t mask = n == 64 ? ~0ull : ((1ull << n) - 1) << off;

		bm[bit / 64] |= mask;
		bit += n;
		count -= n;
	}
}

/*
 * OR in the bits of a bitmap of `pgsize` pages starting at byte `base`
 * for the bytes [first, last] (first >= base).
 */
static void bm_set_bytes(uint64_t *bm, uint64_t base, uint64_t pgsize, uint64_t first,
			 uint64_t last)
{
	uint64_t b0 = (first - base) / pgsize, b1 = (last - base) / pgsize;

	bm_set(bm, b0, b1 - b0 + 1);
}

/*
 * Report a page set's runs within the window [wfirst, wlast] into bm (a
 * bitmap of `pgsize` pages from byte `base` <= wfirst), each run first
 * widened to whole tracking pages of `track` bytes (a power of two >= 4
 * KiB): a device tracking 64 KiB pages reports all of a written 64 KiB.
 */
static void ps_report(const struct sim_pageset *ps, uint64_t *bm, uint64_t base, uint64_t pgsize,
		      uint64_t wfirst, uint64_t wlast, uint64_t track)
{
	for (size_t i = ps_lower(ps, (wfirst & ~(track - 1)) >> PG_SHIFT);
	     i < ps->n && ps->s[i].first <= (wlast | (track - 1)) >> PG_SHIFT; i++) {
		uint64_t first = (ps->s[i].first << PG_SHIFT) & ~(track - 1);
		uint64_t last = (ps->s[i].last << PG_SHIFT) | (PG - 1) | (track - 1);

		if (last < wfirst || first > wlast)
			continue;
		bm_set_bytes(bm, base, pgsize, max64(first, wfirst), min64(last, wlast));
	}
}

/* ------------------------------------------------------------ DMA spaces */

/* One mapping of a type1 container or an IOAS. */
struct sim_dma {
	uint64_t iova, size, vaddr;
	uint32_t prot; /* VU_DMA_MAP_FLAG_READ | WRITE */
};

/* Non-overlapping mappings in ascending IOVA order. */
struct sim_dmaspace {
	struct sim_dma *m;
	size_t n, cap;
};

static uint64_t dma_last(const struct sim_dma *d)
{
	return d->iova + d->size - 1;
}

/* The first mapping ending at or after addr. */
static size_t ds_lower(const struct sim_dmaspace *ds, uint64_t addr)
{
	size_t lo = 0, hi = ds->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (dma_last(&ds->m[mid]) < addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The mapping containing addr, or NULL. */
static const struct sim_dma *ds_find(const struct sim_dmaspace *ds, uint64_t addr)
{
	size_t i = ds_lower(ds, addr);

	return i < ds->n && ds->m[i].iova <= addr ? &ds->m[i] : NULL;
}

static bool ds_overlaps(const struct sim_dmaspace *ds, uint64_t first, uint64_t last)
{
	size_t i = ds_lower(ds, first);

	return i < ds->n && ds->m[i].iova <= last;
}

static int ds_insert(struct sim_dmaspace *ds, const struct sim_dma *d)
{
	size_t i = ds_lower(ds, d->iova);
	int err = grow((void **)&ds->m, &ds->cap, ds->n + 1, sizeof(ds->m[0]));

	if (err)
		return err;
	memmove(&ds->m[i + 1], &ds->m[i], (ds->n - i) * sizeof(ds->m[0]));
	ds->m[i] = *d;
	ds->n++;
	return 0;
}

static void ds_remove_at(struct sim_dmaspace *ds, size_t i)
{
	memmove(&ds->m[i], &ds->m[i + 1], (ds->n - i - 1) * sizeof(ds->m[0]));
	ds->n--;
}

/*
 * Is [first, last] mapped end to end (possibly by adjacent mappings),
 * each with the `need` permissions? A DMA anywhere else faults.
 */
static bool ds_covered(const struct sim_dmaspace *ds, uint64_t first, uint64_t last,
		       uint32_t need)
{
	uint64_t at = first;

	for (size_t i = ds_lower(ds, first); i < ds->n; i++) {
		const struct sim_dma *d = &ds->m[i];

		if (d->iova > at || (d->prot & need) != need)
			return false;
		if (dma_last(d) >= last)
			return true;
		at = dma_last(d) + 1;
	}
	return false;
}

/* Does [first, last] lie within one of the IOVA ranges an IOMMU domain allows? */
static bool iova_allowed(uint64_t first, uint64_t last)
{
	for (size_t i = 0; i < VM_ARRAY_SIZE(sim_type1_iova_ranges); i++)
		if (first >= sim_type1_iova_ranges[i].start &&
		    last <= sim_type1_iova_ranges[i].end)
			return true;
	return false;
}

static bool ds_all_allowed(const struct sim_dmaspace *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		if (!iova_allowed(ds->m[i].iova, dma_last(&ds->m[i])))
			return false;
	return true;
}

/* ---------------------------------------------------------------- type1 */

struct sim_type1 {
	struct sim_dmaspace ds;
	bool tracking;              /* VFIO_IOMMU_DIRTY_PAGES_FLAG_START done */
	struct sim_pageset written; /* written by DMA since the last report (while tracking) */
	struct sim_pageset pinned;  /* pinned by mdev vendor drivers */
};

static struct sim_type1 *t1_get(struct sim_container *c)
{
	if (!c->t1)
		c->t1 = calloc(1, sizeof(*c->t1));
	return c->t1;
}

bool sim_type1_iommu_backed(const struct sim_container *c)
{
	for (size_t i = 0; i < c->ngroups; i++)
		if (!c->groups[i]->emulated)
			return true;
	return false;
}

/*
 * The smallest IOMMU page: an IOMMU domain's 4 KiB, or PAGE_SIZE when
 * only emulated groups are attached (no domain narrows PAGE_MASK).
 */
static uint64_t t1_pgsize(const struct sim_container *c)
{
	return sim_type1_iommu_backed(c) ? PG : (uint64_t)c->obj.sim->page_size;
}

uint32_t sim_type1_dma_avail(const struct sim_container *c)
{
	size_t n = c->t1 ? c->t1->ds.n : 0;

	return n >= SIM_DMA_ENTRY_LIMIT ? 0 : SIM_DMA_ENTRY_LIMIT - (uint32_t)n;
}

void sim_type1_teardown(struct sim_container *c)
{
	if (!c->t1)
		return;
	free(c->t1->ds.m);
	ps_free(&c->t1->written);
	ps_free(&c->t1->pinned);
	free(c->t1);
	c->t1 = NULL;
}

int sim_type1_group_check(struct sim_container *c, const struct sim_group *g)
{
	/* A domain's aperture and reserved regions may not cut existing mappings. */
	if (g->emulated || !c->t1)
		return 0;
	return ds_all_allowed(&c->t1->ds) ? 0 : -EINVAL;
}

/* verify_bitmap_size(): the bitmap must exist, hold every page, and stay under the cap. */
static int t1_bitmap_size_ok(uint64_t npages, uint64_t bytes)
{
	uint64_t need = (npages + 63) / 64 * 8;

	if (!npages || !bytes || bytes > SIM_DIRTY_BITMAP_MAX || bytes < need)
		return -EINVAL;
	return 0;
}

/*
 * The dirty bits of one mapping into a caller bitmap of `pgsize` pages
 * from `base`: an IOMMU-backed group never pins pages, so the kernel
 * cannot tell and reports every mapped page (num_non_pinned_groups &&
 * iommu_mapped); emulated groups report what was written through
 * vfio_dma_rw while tracking, and what is pinned.
 */
static int t1_report(struct sim_container *c, const struct sim_dma *d, uint64_t base,
		     uint64_t pgsize, uint64_t *bm)
{
	struct sim_type1 *t1 = c->t1;
	uint64_t last = dma_last(d);

	if (!bm)
		return -EFAULT;
	if (sim_type1_iommu_backed(c)) {
		bm_set_bytes(bm, base, pgsize, d->iova, last);
		return 0;
	}
	ps_report(&t1->written, bm, base, pgsize, d->iova, last, PG);
	ps_report(&t1->pinned, bm, base, pgsize, d->iova, last, PG);
	return 0;
}

static int t1_map(struct sim_container *c, void *arg)
{
	const uint32_t known = VU_DMA_MAP_FLAG_READ | VU_DMA_MAP_FLAG_WRITE | SIM_DMA_FLAG_VADDR;
	struct vu_iommu_type1_dma_map m;
	struct sim_type1 *t1;
	uint64_t pg = t1_pgsize(c);
	struct sim_dma d;
	int err;

	memcpy(&m.argsz, arg, sizeof(m.argsz));
	if (m.argsz < sizeof(m))
		return -EINVAL;
	memcpy(&m, arg, sizeof(m));
	if (m.flags & ~known)
		return -EINVAL;
	/* VADDR updates need VFIO_UPDATE_VADDR, which the simulator does not offer. */
	if (m.flags & SIM_DMA_FLAG_VADDR)
		return -EINVAL;
	/* At least one of READ / WRITE (vfio_dma_do_map: !prot). */
	if (!(m.flags & (VU_DMA_MAP_FLAG_READ | VU_DMA_MAP_FLAG_WRITE)))
		return -EINVAL;
	/* size, iova and vaddr all aligned to the smallest IOMMU page; vaddr is never touched. */
	if (!m.size || ((m.size | m.iova | m.vaddr) & (pg - 1)))
		return -EINVAL;
	if (m.iova + m.size - 1 < m.iova || m.vaddr + m.size - 1 < m.vaddr)
		return -EINVAL;
	t1 = t1_get(c);
	if (!t1)
		return -ENOMEM;
	if (ds_overlaps(&t1->ds, m.iova, m.iova + m.size - 1))
		return -EEXIST;
	if (t1->ds.n >= SIM_DMA_ENTRY_LIMIT)
		return -ENOSPC; /* dma_entry_limit exhausted */
	/* Only an IOMMU domain narrows the IOVA space (emulated groups have no iova_list). */
	if (sim_type1_iommu_backed(c) && !iova_allowed(m.iova, m.iova + m.size - 1))
		return -EINVAL;
	d = (struct sim_dma){ .iova = m.iova, .size = m.size, .vaddr = m.vaddr,
			      .prot = m.flags & (VU_DMA_MAP_FLAG_READ | VU_DMA_MAP_FLAG_WRITE) };
	err = ds_insert(&t1->ds, &d);
	if (err)
		return err;
	sim_event_add(c->obj.sim, "MAP_DMA 0x%llx 0x%llx", (unsigned long long)m.iova,
		      (unsigned long long)m.size);
	return 0;
}

/* Forget a removed mapping's dirty and pinned pages (the kernel frees its bitmap and pfn_list). */
static void t1_forget(struct sim_type1 *t1, const struct sim_dma *d)
{
	ps_remove(&t1->written, d->iova >> PG_SHIFT, dma_last(d) >> PG_SHIFT);
	ps_remove(&t1->pinned, d->iova >> PG_SHIFT, dma_last(d) >> PG_SHIFT);
}

static int t1_unmap(struct sim_container *c, void *arg)
{
	const uint32_t known = VU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP | VU_DMA_UNMAP_FLAG_ALL |
			       SIM_DMA_FLAG_VADDR;
	struct vu_iommu_type1_dma_unmap u;
	struct vu_bitmap bm = { 0 };
	bool v2 = c->iommu_type == VU_TYPE1v2_IOMMU;
	bool all, dirty;
	uint64_t pg = t1_pgsize(c), last, unmapped = 0;
	struct sim_type1 *t1;
	int err = 0;

	memcpy(&u.argsz, arg, sizeof(u.argsz));
	if (u.argsz < sizeof(u))
		return -EINVAL;
	memcpy(&u, arg, sizeof(u));
	if (u.flags & ~known)
		return -EINVAL;
	all = u.flags & VU_DMA_UNMAP_FLAG_ALL;
	dirty = u.flags & VU_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP;
	if (dirty && (u.flags & (VU_DMA_UNMAP_FLAG_ALL | SIM_DMA_FLAG_VADDR)))
		return -EINVAL;
	if (u.flags & SIM_DMA_FLAG_VADDR)
		return -EINVAL; /* no VFIO_UPDATE_VADDR in the simulator */
	if (dirty) {
		if (u.argsz < sizeof(u) + sizeof(bm))
			return -EINVAL;
		memcpy(&bm, (uint8_t *)arg + sizeof(u), sizeof(bm));
		if (!bm.pgsize)
			return -EINVAL;
		err = t1_bitmap_size_ok(u.size >> __builtin_ctzll(bm.pgsize), bm.size);
		if (err)
			return err;
	}
	if (u.iova & (pg - 1))
		return -EINVAL;
	if (all) {
		if (u.iova || u.size)
			return -EINVAL;
		last = UINT64_MAX;
	} else {
		if (!u.size || (u.size & (pg - 1)) || u.iova + u.size - 1 < u.iova)
			return -EINVAL;
		last = u.iova + u.size - 1;
	}
	t1 = t1_get(c);
	if (!t1)
		return -ENOMEM;
	/* With GET_DIRTY_BITMAP: only while tracking, at the smallest IOMMU page. */
	if (dirty && (!t1->tracking || bm.pgsize != pg))
		return -EINVAL;
	/* type1v2: the range may not bisect a mapping at either end. */
	if (v2 && !all) {
		const struct sim_dma *d = ds_find(&t1->ds, u.iova);

		if (d && d->iova != u.iova)
			return -EINVAL;
		d = ds_find(&t1->ds, last);
		if (d && dma_last(d) != last)
			return -EINVAL;
	}
	for (size_t i = ds_lower(&t1->ds, u.iova); i < t1->ds.n && t1->ds.m[i].iova <= last;) {
		struct sim_dma d = t1->ds.m[i];

		/* type1 (v1): a range starting inside a mapping unmaps nothing more. */
		if (!v2 && u.iova > d.iova)
			break;
		if (dirty) {
			err = t1_report(c, &d, u.iova, pg, (uint64_t *)(uintptr_t)bm.data);
			if (err)
				break;
		}
		unmapped += d.size;
		t1_forget(t1, &d);
		ds_remove_at(&t1->ds, i);
		sim_event_add(c->obj.sim, "UNMAP_DMA 0x%llx 0x%llx", (unsigned long long)d.iova,
			      (unsigned long long)d.size);
	}
	if (err)
		return err;
	/* The bytes unmapped go back in size (0: nothing was mapped there). */
	u.size = unmapped;
	memcpy((uint8_t *)arg + offsetof(struct vu_iommu_type1_dma_unmap, size), &u.size,
	       sizeof(u.size));
	return 0;
}

static int t1_get_bitmap(struct sim_container *c, struct sim_type1 *t1, void *arg,
			 uint32_t argsz)
{
	struct vu_iommu_type1_dirty_bitmap_get r;
	uint64_t pg = t1_pgsize(c), last;
	uint64_t *bm;
	const struct sim_dma *d;
	int err;

	if (argsz - sizeof(struct vu_iommu_type1_dirty_bitmap) < sizeof(r))
		return -EINVAL;
	memcpy(&r, (uint8_t *)arg + sizeof(struct vu_iommu_type1_dirty_bitmap), sizeof(r));
	if (r.iova + r.size < r.iova)
		return -EINVAL;
	if (!r.bitmap.pgsize)
		return -EINVAL;
	err = t1_bitmap_size_ok(r.size >> __builtin_ctzll(r.bitmap.pgsize), r.bitmap.size);
	if (err)
		return err;
	/* Only the smallest supported page size; range aligned to it, not empty. */
	if (r.bitmap.pgsize != pg || (r.iova & (pg - 1)) || !r.size || (r.size & (pg - 1)))
		return -EINVAL;
	if (!t1->tracking)
		return -EINVAL;
	last = r.iova + r.size - 1;
	/*
	 * The range must not bisect a mapping: it starts at a mapping's
	 * start or outside every mapping, and ends at a mapping's end or
	 * outside every mapping (vfio_iova_dirty_bitmap).
	 */
	d = ds_find(&t1->ds, r.iova);
	if (d && d->iova != r.iova)
		return -EINVAL;
	d = ds_find(&t1->ds, last);
	if (d && dma_last(d) != last)
		return -EINVAL;
	bm = (uint64_t *)(uintptr_t)r.bitmap.data;
	for (size_t i = ds_lower(&t1->ds, r.iova); i < t1->ds.n && t1->ds.m[i].iova <= last;
	     i++) {
		const struct sim_dma *m = &t1->ds.m[i];

		err = t1_report(c, m, r.iova, pg, bm);
		if (err)
			return err;
		/* Read and clear: written bits go, pinned pages are reported again next time. */
		err = ps_remove(&t1->written, m->iova >> PG_SHIFT, dma_last(m) >> PG_SHIFT);
		if (err)
			return err;
	}
	return 0;
}

static int t1_dirty_pages(struct sim_container *c, void *arg)
{
	const uint32_t known = VU_IOMMU_DIRTY_PAGES_FLAG_START | VU_IOMMU_DIRTY_PAGES_FLAG_STOP |
			       VU_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP;
	struct vu_iommu_type1_dirty_bitmap db;
	struct sim_type1 *t1;

	/* Dirty tracking is a type1v2 feature. */
	if (c->iommu_type != VU_TYPE1v2_IOMMU)
		return -EACCES;
	memcpy(&db, arg, sizeof(db));
	if (db.argsz < sizeof(db) || (db.flags & ~known))
		return -EINVAL;
	/* Exactly one operation per call. */
	if (__builtin_popcount(db.flags) != 1)
		return -EINVAL;
	t1 = t1_get(c);
	if (!t1)
		return -ENOMEM;
	switch (db.flags) {
	case VU_IOMMU_DIRTY_PAGES_FLAG_START:
		/* Starting again changes nothing: the bitmaps exist already. */
		if (!t1->tracking) {
			t1->tracking = true;
			t1->written.n = 0;
			sim_event_add(c->obj.sim, "DIRTY_PAGES START");
		}
		return 0;
	case VU_IOMMU_DIRTY_PAGES_FLAG_STOP:
		if (t1->tracking) {
			t1->tracking = false;
			t1->written.n = 0;
			sim_event_add(c->obj.sim, "DIRTY_PAGES STOP");
		}
		return 0;
	default:
		return t1_get_bitmap(c, t1, arg, db.argsz);
	}
}

int sim_type1_ioctl(struct sim_container *c, unsigned long req, void *arg)
{
	if (req != VU_IOMMU_MAP_DMA && req != VU_IOMMU_UNMAP_DMA && req != VU_IOMMU_DIRTY_PAGES)
		return -ENOTTY;
	if (!arg)
		return -EFAULT;
	switch (req) {
	case VU_IOMMU_MAP_DMA:
		return t1_map(c, arg);
	case VU_IOMMU_UNMAP_DMA:
		return t1_unmap(c, arg);
	default:
		return t1_dirty_pages(c, arg);
	}
}

/* -------------------------------------------------------------- iommufd */

struct sim_ioas {
	struct sim_dmaspace ds;
};

struct sim_hwpt {
	uint32_t ioas_id;
	bool auto_domain;         /* made by attaching a device to the IOAS */
	bool dirty_cap;           /* allocated with IOMMU_HWPT_ALLOC_DIRTY_TRACKING */
	bool dirty_on;            /* IOMMU_HWPT_SET_DIRTY_TRACKING enabled */
	struct sim_pageset dirty; /* the IOPTEs' dirty bits */
};

void sim_iommufd_id_free(struct sim_iommufd_id *id)
{
	if (id->ioas) {
		free(id->ioas->ds.m);
		free(id->ioas);
		id->ioas = NULL;
	}
	if (id->hwpt) {
		ps_free(&id->hwpt->dirty);
		free(id->hwpt);
		id->hwpt = NULL;
	}
}

int sim_iommufd_ioas_alloc(struct sim_iommufd *ictx, uint32_t *out)
{
	struct sim_ioas *io = calloc(1, sizeof(*io));
	int err;

	if (!io)
		return -ENOMEM;
	err = sim_iommufd_alloc(ictx, SIM_IOMMUFD_IOAS, out);
	if (err) {
		free(io);
		return err;
	}
	sim_iommufd_find(ictx, *out)->ioas = io;
	return 0;
}

/* An object of one kind, or NULL (iommufd_get_object with a type: -ENOENT). */
static struct sim_iommufd_id *ifd_get(struct sim_iommufd *ictx, uint32_t id, uint32_t kind)
{
	struct sim_iommufd_id *o = sim_iommufd_find(ictx, id);

	return o && o->kind == kind ? o : NULL;
}

/* Does the IOAS have an IOMMU domain (a HWPT), whose aperture and reserved regions apply? */
static bool ioas_has_domain(struct sim_iommufd *ictx, uint32_t ioas_id)
{
	for (size_t i = 0; i < ictx->nids; i++)
		if (ictx->ids[i].kind == SIM_IOMMUFD_HWPT && ictx->ids[i].hwpt->ioas_id == ioas_id)
			return true;
	return false;
}

/* A new HWPT on an IOAS: its id (ids may move: look objects up again after this). */
static int hwpt_new(struct sim_iommufd *ictx, uint32_t ioas_id, bool auto_domain, bool dirty,
		    uint32_t *out)
{
	struct sim_hwpt *h = calloc(1, sizeof(*h));
	struct sim_iommufd_id *o;
	int err;

	if (!h)
		return -ENOMEM;
	err = sim_iommufd_alloc(ictx, SIM_IOMMUFD_HWPT, out);
	if (err) {
		free(h);
		return err;
	}
	h->ioas_id = ioas_id;
	h->auto_domain = auto_domain;
	h->dirty_cap = dirty;
	o = sim_iommufd_find(ictx, *out);
	o->hwpt = h;
	/* The HWPT holds its IOAS. */
	sim_iommufd_find(ictx, ioas_id)->users++;
	sim_event_add(ictx->obj.sim, "HWPT %u on IOAS %u%s%s", *out, ioas_id,
		      auto_domain ? " auto" : "", dirty ? " dirty" : "");
	return 0;
}

static void hwpt_destroy(struct sim_iommufd *ictx, struct sim_iommufd_id *o)
{
	struct sim_iommufd_id *ioas = sim_iommufd_find(ictx, o->hwpt->ioas_id);

	if (ioas && ioas->users)
		ioas->users--;
	sim_iommufd_remove(ictx, o->id);
}

int sim_iommufd_destroy(struct sim_iommufd *ictx, uint32_t id)
{
	struct sim_iommufd_id *o = sim_iommufd_find(ictx, id);

	if (!o)
		return -ENOENT;
	/* Bound devices are held by VFIO; IOASes and HWPTs by what uses them. */
	if (o->kind == SIM_IOMMUFD_DEVICE || o->kind == SIM_IOMMUFD_ACCESS || o->users)
		return -EBUSY;
	if (o->kind == SIM_IOMMUFD_HWPT)
		hwpt_destroy(ictx, o);
	else
		sim_iommufd_remove(ictx, id);
	sim_event_add(ictx->obj.sim, "IOMMU_DESTROY %u", id);
	return 0;
}

int sim_iommufd_attach(struct sim_iommufd *ictx, struct vfiomig_sim_device *dev,
		       uint32_t *pt_id)
{
	struct sim_iommufd_id *pt = sim_iommufd_find(ictx, *pt_id);
	uint32_t ioas_id;
	int err;

	/* An emulated device's access attaches to an IOAS only (iommufd_access_attach). */
	if (dev->kind == VFIOMIG_DEVKIND_MDEV) {
		if (!pt || pt->kind != SIM_IOMMUFD_IOAS)
			return -ENOENT;
		pt->users++;
		return 0;
	}
	if (!pt)
		return -ENOENT;
	if (pt->kind != SIM_IOMMUFD_HWPT && pt->kind != SIM_IOMMUFD_IOAS)
		return -EINVAL;
	ioas_id = pt->kind == SIM_IOMMUFD_HWPT ? pt->hwpt->ioas_id : pt->id;
	/* The device's reserved regions (the MSI window) may not cut existing mappings. */
	if (!ds_all_allowed(&sim_iommufd_find(ictx, ioas_id)->ioas->ds))
		return -EADDRINUSE;
	if (pt->kind == SIM_IOMMUFD_HWPT) {
		pt->users++;
		return 0;
	}
	/* An IOAS: reuse one of its automatic domains, else make one (auto_get_domain). */
	for (size_t i = 0; i < ictx->nids; i++) {
		struct sim_iommufd_id *o = &ictx->ids[i];

		if (o->kind == SIM_IOMMUFD_HWPT && o->hwpt->auto_domain &&
		    o->hwpt->ioas_id == ioas_id) {
			o->users++;
			*pt_id = o->id;
			return 0;
		}
	}
	err = hwpt_new(ictx, ioas_id, true, false, pt_id);
	if (err)
		return err;
	sim_iommufd_find(ictx, *pt_id)->users++;
	return 0;
}

void sim_iommufd_detach(struct sim_iommufd *ictx, uint32_t pt_id)
{
	struct sim_iommufd_id *pt = sim_iommufd_find(ictx, pt_id);

	if (!pt)
		return;
	if (pt->users)
		pt->users--;
	/* An automatic domain goes with its last device. */
	if (pt->kind == SIM_IOMMUFD_HWPT && pt->hwpt->auto_domain && !pt->users)
		hwpt_destroy(ictx, pt);
}

/*
 * The iommufd ucmd rules: size below the command's minimum -EINVAL,
 * non-zero bytes past what the kernel knows -E2BIG; then the known part
 * is copied (a shorter caller's missing fields read as zero).
 */
static int ucmd_in(const void *arg, void *cmd, size_t cmd_size, size_t min_size)
{
	uint32_t size;

	memcpy(&size, arg, sizeof(size));
	if (size < min_size)
		return -EINVAL;
	if (!sim_tail_zero(arg, cmd_size, size))
		return -E2BIG;
	memset(cmd, 0, cmd_size);
	memcpy(cmd, arg, size < cmd_size ? size : cmd_size);
	return 0;
}

/* iommufd_ucmd_respond: the command goes back, as much as the caller's size holds. */
static void ucmd_out(void *arg, const void *cmd, size_t cmd_size)
{
	uint32_t size;

	memcpy(&size, arg, sizeof(size));
	memcpy(arg, cmd, size < cmd_size ? size : cmd_size);
}

/* A free IOVA for a non-FIXED map: lowest first, aligned as iopt_alloc_iova does. */
static int ioas_alloc_iova(const struct sim_dmaspace *ds, bool domain, uint64_t uptr,
			   uint64_t length, uint64_t *out)
{
	static const struct vu_iova_range whole[1] = { { .start = PG, .end = UINT64_MAX - PG } };
	const struct vu_iova_range *r = domain ? sim_type1_iova_ranges : whole;
	size_t nr = domain ? VM_ARRAY_SIZE(sim_type1_iova_ranges) : 1;
	uint64_t align = 1;

	if (length >= UINT64_MAX / 2)
		return -EOVERFLOW;
	while (align < length)
		align <<= 1;
	/* Keep the alignment of the user address (THP-friendly), never below a page. */
	if (uptr && (1ull << __builtin_ctzll(uptr)) < align)
		align = 1ull << __builtin_ctzll(uptr);
	align = max64(align, PG);
	for (size_t k = 0; k < nr; k++) {
		uint64_t start = max64(r[k].start, PG);

		for (size_t i = ds_lower(ds, start);; i++) {
			uint64_t hole_end;

			if (start > UINT64_MAX - (align - 1))
				break;
			start = (start + align - 1) & ~(align - 1);
			if (start > r[k].end)
				break;
			hole_end = r[k].end;
			if (i < ds->n && ds->m[i].iova <= r[k].end) {
				if (ds->m[i].iova <= start) {
					if (dma_last(&ds->m[i]) >= r[k].end)
						break;
					start = dma_last(&ds->m[i]) + 1;
					continue;
				}
				hole_end = ds->m[i].iova - 1;
			}
			if (hole_end - start >= length - 1) {
				*out = start;
				return 0;
			}
			if (hole_end == r[k].end)
				break;
			start = dma_last(&ds->m[i]) + 1;
		}
	}
	return -ENOSPC;
}

static int ioas_map(struct sim_iommufd *ictx, void *arg)
{
	const uint32_t known = VU_IOMMU_IOAS_MAP_FIXED_IOVA | VU_IOMMU_IOAS_MAP_WRITEABLE |
			       VU_IOMMU_IOAS_MAP_READABLE;
	struct vu_iommu_ioas_map m;
	struct sim_iommufd_id *io;
	struct sim_dma d = { 0 };
	bool domain;
	uint64_t end;
	int err;

	err = ucmd_in(arg, &m, sizeof(m), sizeof(m));
	if (err)
		return err;
	if ((m.flags & ~known) || m.reserved)
		return -EOPNOTSUPP;
	if (m.iova >= UINT64_MAX || m.length >= UINT64_MAX)
		return -EOVERFLOW;
	if (!(m.flags & (VU_IOMMU_IOAS_MAP_WRITEABLE | VU_IOMMU_IOAS_MAP_READABLE)))
		return -EINVAL;
	io = ifd_get(ictx, m.ioas_id, SIM_IOMMUFD_IOAS);
	if (!io)
		return -ENOENT;
	if (!m.length)
		return -EINVAL;
	if (__builtin_add_overflow(m.user_va, m.length, &end))
		return -EOVERFLOW;
	/*
	 * Page granularity for length, user address and IOVA. (The kernel
	 * lets an IOAS with no domain and no access use bytes; every IOAS a
	 * device can reach is page-aligned, which is all we simulate.)
	 */
	if ((m.length | m.user_va) & (PG - 1))
		return -EINVAL;
	domain = ioas_has_domain(ictx, m.ioas_id);
	if (m.flags & VU_IOMMU_IOAS_MAP_FIXED_IOVA) {
		uint64_t last;

		if (m.iova & (PG - 1))
			return -EINVAL;
		if (__builtin_add_overflow(m.iova, m.length - 1, &last))
			return -EOVERFLOW;
		if (domain && !iova_allowed(m.iova, last))
			return -EINVAL; /* a reserved IOVA (aperture, MSI window) intersects */
		if (ds_overlaps(&io->ioas->ds, m.iova, last))
			return -EEXIST;
	} else {
		err = ioas_alloc_iova(&io->ioas->ds, domain, m.user_va, m.length, &m.iova);
		if (err)
			return err;
	}
	d.iova = m.iova;
	d.size = m.length;
	d.vaddr = m.user_va;
	if (m.flags & VU_IOMMU_IOAS_MAP_READABLE)
		d.prot |= VU_DMA_MAP_FLAG_READ;
	if (m.flags & VU_IOMMU_IOAS_MAP_WRITEABLE)
		d.prot |= VU_DMA_MAP_FLAG_WRITE;
	err = ds_insert(&io->ioas->ds, &d);
	if (err)
		return err;
	ucmd_out(arg, &m, sizeof(m));
	sim_event_add(ictx->obj.sim, "IOAS_MAP %u 0x%llx 0x%llx", m.ioas_id,
		      (unsigned long long)m.iova, (unsigned long long)m.length);
	return 0;
}

/* The IOPTEs of [first, last] go, and their dirty bits with them. */
static void ioas_forget(struct sim_iommufd *ictx, uint32_t ioas_id, const struct sim_dma *d)
{
	for (size_t i = 0; i < ictx->nids; i++)
		if (ictx->ids[i].kind == SIM_IOMMUFD_HWPT && ictx->ids[i].hwpt->ioas_id == ioas_id)
			ps_remove(&ictx->ids[i].hwpt->dirty, d->iova >> PG_SHIFT,
				  dma_last(d) >> PG_SHIFT);
}

static int ioas_unmap(struct sim_iommufd *ictx, void *arg)
{
	struct vu_iommu_ioas_unmap u;
	struct sim_iommufd_id *io;
	struct sim_dmaspace *ds;
	uint64_t last, unmapped = 0;
	bool all;
	int err;

	err = ucmd_in(arg, &u, sizeof(u), sizeof(u));
	if (err)
		return err;
	io = ifd_get(ictx, u.ioas_id, SIM_IOMMUFD_IOAS);
	if (!io)
		return -ENOENT;
	ds = &io->ioas->ds;
	all = u.iova == 0 && u.length == UINT64_MAX;
	if (all) {
		last = UINT64_MAX;
	} else {
		if (u.iova >= UINT64_MAX || u.length >= UINT64_MAX)
			return -EOVERFLOW;
		if (!u.length)
			return -EINVAL;
		if (__builtin_add_overflow(u.iova, u.length - 1, &last))
			return -EOVERFLOW;
	}
	/* Whole areas only; the ones before a cut area are gone already (iopt_unmap_iova_range). */
	for (size_t i = ds_lower(ds, u.iova); i < ds->n && ds->m[i].iova <= last;) {
		struct sim_dma d = ds->m[i];

		if (d.iova < u.iova || dma_last(&d) > last)
			return -ENOENT;
		ioas_forget(ictx, u.ioas_id, &d);
		ds_remove_at(ds, i);
		unmapped += d.size;
	}
	/* Nothing there: -ENOENT, except for "unmap everything". */
	if (!unmapped && !all)
		return -ENOENT;
	u.length = unmapped;
	ucmd_out(arg, &u, sizeof(u));
	sim_event_add(ictx->obj.sim, "IOAS_UNMAP %u 0x%llx 0x%llx", u.ioas_id,
		      (unsigned long long)u.iova, (unsigned long long)unmapped);
	return 0;
}

static int get_hw_info(struct sim_iommufd *ictx, void *arg)
{
	struct vu_iommu_hw_info h;
	struct sim_iommufd_id *dev;
	int err;

	/* The minimum size ends at the reserved field: out_capabilities came later. */
	err = ucmd_in(arg, &h, sizeof(h), offsetof(struct vu_iommu_hw_info, out_capabilities));
	if (err)
		return err;
	if (h.flags || h.reserved)
		return -EOPNOTSUPP;
	/* A device object only: an mdev's binding is an access, and looks like nothing here. */
	dev = ifd_get(ictx, h.dev_id, SIM_IOMMUFD_DEVICE);
	if (!dev)
		return -ENOENT;
	/* No driver-specific data (IOMMU_HW_INFO_TYPE_NONE): the caller's buffer is zeroed. */
	if (h.data_len) {
		if (!h.data_uptr)
			return -EFAULT;
		memset((void *)(uintptr_t)h.data_uptr, 0, h.data_len);
	}
	h.data_len = 0;
	h.out_data_type = 0;
	h.out_capabilities = 0;
	if (ictx->obj.sim->flags & VFIOMIG_SIM_F_IOMMUFD_DIRTY)
		h.out_capabilities |= VU_IOMMU_HW_CAP_DIRTY_TRACKING;
	ucmd_out(arg, &h, sizeof(h));
	return 0;
}

static int hwpt_alloc(struct sim_iommufd *ictx, void *arg)
{
	struct vu_iommu_hwpt_alloc a;
	struct sim_iommufd_id *pt;
	bool dirty;
	int err;

	err = ucmd_in(arg, &a, sizeof(a), offsetof(struct vu_iommu_hwpt_alloc, data_type));
	if (err)
		return err;
	if (a.reserved)
		return -EOPNOTSUPP;
	if ((!a.data_type && a.data_len) || (a.data_type && !a.data_len))
		return -EINVAL;
	if (!ifd_get(ictx, a.dev_id, SIM_IOMMUFD_DEVICE))
		return -ENOENT;
	pt = sim_iommufd_find(ictx, a.pt_id);
	if (!pt)
		return -EINVAL; /* the kernel turns a failed pt lookup into -EINVAL */
	if (pt->kind == SIM_IOMMUFD_HWPT)
		return -EOPNOTSUPP; /* a nested HWPT: our IOMMU has no nesting */
	if (pt->kind != SIM_IOMMUFD_IOAS)
		return -EINVAL;
	/* Flags other than DIRTY_TRACKING (NEST_PARENT, ...) and driver data: not ours. */
	if ((a.flags & ~VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING) || a.data_type)
		return -EOPNOTSUPP;
	dirty = a.flags & VU_IOMMU_HWPT_ALLOC_DIRTY_TRACKING;
	/* Dirty tracking needs IOMMU_CAP_DIRTY_TRACKING on the device's IOMMU. */
	if (dirty && !(ictx->obj.sim->flags & VFIOMIG_SIM_F_IOMMUFD_DIRTY))
		return -EOPNOTSUPP;
	/* The domain's aperture may not cut existing mappings. */
	if (!ds_all_allowed(&pt->ioas->ds))
		return -EADDRINUSE;
	err = hwpt_new(ictx, a.pt_id, false, dirty, &a.out_hwpt_id);
	if (err)
		return err;
	ucmd_out(arg, &a, sizeof(a));
	return 0;
}

static int hwpt_set_dirty(struct sim_iommufd *ictx, void *arg)
{
	struct vu_iommu_hwpt_set_dirty_tracking st;
	struct sim_iommufd_id *o;
	int err;

	err = ucmd_in(arg, &st, sizeof(st), sizeof(st));
	if (err)
		return err;
	if (st.flags & ~VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE)
		return -EOPNOTSUPP;
	o = ifd_get(ictx, st.hwpt_id, SIM_IOMMUFD_HWPT);
	if (!o)
		return -ENOENT;
	/* A domain allocated without DIRTY_TRACKING has no dirty ops. */
	if (!o->hwpt->dirty_cap)
		return -EOPNOTSUPP;
	if (st.flags & VU_IOMMU_HWPT_DIRTY_TRACKING_ENABLE) {
		/* Enabling starts from a clean snapshot (iopt_clear_dirty_data). */
		o->hwpt->dirty.n = 0;
		o->hwpt->dirty_on = true;
	} else {
		o->hwpt->dirty_on = false;
	}
	sim_event_add(ictx->obj.sim, "HWPT_SET_DIRTY_TRACKING %u %s", st.hwpt_id,
		      o->hwpt->dirty_on ? "on" : "off");
	return 0;
}

static int hwpt_get_dirty(struct sim_iommufd *ictx, void *arg)
{
	struct vu_iommu_hwpt_get_dirty_bitmap q;
	struct sim_iommufd_id *o;
	uint64_t last, ps;
	int err;

	err = ucmd_in(arg, &q, sizeof(q), sizeof(q));
	if (err)
		return err;
	if ((q.flags & ~VU_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR) || q.reserved)
		return -EOPNOTSUPP;
	o = ifd_get(ictx, q.hwpt_id, SIM_IOMMUFD_HWPT);
	if (!o)
		return -ENOENT;
	/* iommufd_check_iova_range */
	if (__builtin_add_overflow(q.iova, q.length - 1, &last))
		return -EOVERFLOW;
	if (!q.length)
		return -EINVAL; /* the kernel lets iova 0 length 0 through; nothing to read */
	if ((q.iova & (PG - 1)) || ((last + 1) & (PG - 1)))
		return -EINVAL;
	/* A non-power-of-two page size makes the kernel's alignment masks meaningless: refused. */
	ps = q.page_size;
	if (!pow2(ps))
		return -EINVAL;
	if ((q.iova & (ps - 1)) || ((last + 1) & (ps - 1)))
		return -EINVAL;
	if (!o->hwpt->dirty_cap)
		return -EOPNOTSUPP;
	if (!q.data)
		return -EFAULT;
	ps_report(&o->hwpt->dirty, (uint64_t *)(uintptr_t)q.data, q.iova, ps, q.iova, last, PG);
	if (!(q.flags & VU_IOMMU_HWPT_GET_DIRTY_BITMAP_NO_CLEAR))
		return ps_remove(&o->hwpt->dirty, q.iova >> PG_SHIFT, last >> PG_SHIFT);
	return 0;
}

int sim_iommufd_dma_ioctl(struct sim_iommufd *ictx, unsigned long req, void *arg)
{
	int (*fn)(struct sim_iommufd *, void *);

	switch (req) {
	case VU_IOMMU_IOAS_MAP:
		fn = ioas_map;
		break;
	case VU_IOMMU_IOAS_UNMAP:
		fn = ioas_unmap;
		break;
	case VU_IOMMU_GET_HW_INFO:
		fn = get_hw_info;
		break;
	case VU_IOMMU_HWPT_ALLOC:
		fn = hwpt_alloc;
		break;
	case VU_IOMMU_HWPT_SET_DIRTY_TRACKING:
		fn = hwpt_set_dirty;
		break;
	case VU_IOMMU_HWPT_GET_DIRTY_BITMAP:
		fn = hwpt_get_dirty;
		break;
	default:
		return -ENOTTY;
	}
	return arg ? fn(ictx, arg) : -EFAULT;
}

/* --------------------------------------------------- device DMA logging */

struct sim_dmalog {
	sim_feature_fn next;        /* the hook we are chained in front of */
	bool active;
	uint64_t page_size;         /* the granularity the device tracks at */
	struct sim_span *ranges;    /* tracked IOVA ranges, in bytes */
	uint32_t nranges;
	struct sim_pageset dirty;   /* 4 KiB pages written by DMA inside the ranges */
	bool fail_armed;
	int fail_err;
};

static void dmalog_stop(struct sim_dmalog *lg)
{
	lg->active = false;
	free(lg->ranges);
	lg->ranges = NULL;
	lg->nranges = 0;
	ps_free(&lg->dirty);
}

static int dmalog_start(struct vfiomig_sim_device *dev, uint32_t flags, void *data,
			size_t argsz)
{
	struct sim_dmalog *lg = dev->dmalog;
	struct vu_feature_dma_logging_control ctl;
	const struct vu_feature_dma_logging_range *user;
	struct sim_span *r;
	int ret;

	ret = sim_feature_check(flags, argsz, VU_DEVICE_FEATURE_SET, sizeof(ctl));
	if (ret != 1)
		return ret;
	memcpy(&ctl, data, sizeof(ctl));
	if (!ctl.num_ranges)
		return -EINVAL;
	if (ctl.num_ranges > VU_DMA_LOGGING_MAX_RANGES)
		return -E2BIG; /* the ranges must fit in one kernel page */
	user = (const void *)(uintptr_t)ctl.ranges;
	if (!user)
		return -EFAULT;
	r = calloc(ctl.num_ranges, sizeof(*r));
	if (!r)
		return -ENOMEM;
	/* The core's checks, range by range in the caller's order. */
	for (uint32_t i = 0; i < ctl.num_ranges; i++) {
		struct vu_feature_dma_logging_range u;
		uint64_t end;

		memcpy(&u, &user[i], sizeof(u));
		/* IS_ALIGNED with the page size as given (0 or not a power of two included). */
		if ((u.iova & (ctl.page_size - 1)) || (u.length & (ctl.page_size - 1))) {
			ret = -EINVAL;
			goto fail;
		}
		if (__builtin_add_overflow(u.iova, u.length, &end)) {
			ret = -EOVERFLOW;
			goto fail;
		}
		/*
		 * The core lets an empty range through to the driver, which
		 * cannot track it; we refuse it as the driver.
		 */
		if (!u.length) {
			ret = -EINVAL;
			goto fail;
		}
		r[i] = (struct sim_span){ .first = u.iova, .last = end - 1 };
		for (uint32_t j = 0; j < i; j++) {
			if (r[j].first <= r[i].last && r[i].first <= r[j].last) {
				ret = -EINVAL; /* overlapping ranges */
				goto fail;
			}
		}
	}
	/* mlx5 and pds both answer -EINVAL when logging is already on. */
	if (lg->active) {
		ret = -EINVAL;
		goto fail;
	}
	/* The driver's granularity: a power of two, at least the 4 KiB it tracks (mlx5 clamps). */
	if (!pow2(ctl.page_size)) {
		ret = -EINVAL;
		goto fail;
	}
	if (ctl.page_size < PG)
		ctl.page_size = PG;
	/* Sorted, so a report can check its range against their union. */
	for (uint32_t i = 1; i < ctl.num_ranges; i++) {
		struct sim_span t = r[i];
		uint32_t j = i;

		for (; j > 0 && r[j - 1].first > t.first; j--)
			r[j] = r[j - 1];
		r[j] = t;
	}
	lg->ranges = r;
	lg->nranges = ctl.num_ranges;
	lg->page_size = ctl.page_size;
	lg->active = true;
	lg->dirty.n = 0;
	memcpy(data, &ctl, sizeof(ctl)); /* page_size is in/out */
	sim_event_add(dev->sim, "DMA_LOGGING_START %s %u 0x%llx", dev->name, ctl.num_ranges,
		      (unsigned long long)ctl.page_size);
	return 0;
fail:
	free(r);
	return ret;
}

/* Is [first, last] covered by the union of the tracked ranges? */
static bool dmalog_covers(const struct sim_dmalog *lg, uint64_t first, uint64_t last)
{
	uint64_t at = first;

	for (uint32_t i = 0; i < lg->nranges; i++) {
		if (lg->ranges[i].last < at)
			continue;
		if (lg->ranges[i].first > at)
			return false;
		if (lg->ranges[i].last >= last)
			return true;
		at = lg->ranges[i].last + 1;
	}
	return false;
}

static int dmalog_report(struct vfiomig_sim_device *dev, uint32_t flags, void *data,
			 size_t argsz)
{
	struct sim_dmalog *lg = dev->dmalog;
	struct vu_feature_dma_logging_report rep;
	uint64_t end, last, t;
	int ret;

	ret = sim_feature_check(flags, argsz, VU_DEVICE_FEATURE_GET, sizeof(rep));
	if (ret != 1)
		return ret;
	memcpy(&rep, data, sizeof(rep));
	if (rep.page_size < PG || !pow2(rep.page_size))
		return -EINVAL;
	if (__builtin_add_overflow(rep.iova, rep.length, &end))
		return -EOVERFLOW;
	/* The driver: not logging, an empty range, or one outside what is tracked. */
	if (!lg->active || !rep.length)
		return -EINVAL;
	last = end - 1;
	if (!dmalog_covers(lg, rep.iova, last))
		return -EINVAL;
	if (lg->fail_armed) {
		/* The device failed to report: whatever it had logged is gone. */
		lg->fail_armed = false;
		lg->dirty.n = 0;
		sim_event_add(dev->sim, "DMA_LOGGING_REPORT %s failed %d", dev->name, lg->fail_err);
		return lg->fail_err;
	}
	if (!rep.bitmap)
		return -EFAULT;
	t = lg->page_size;
	ps_report(&lg->dirty, (uint64_t *)(uintptr_t)rep.bitmap, rep.iova, rep.page_size,
		  rep.iova, last, t);
	/* Read and clear, a whole tracking page at a time. */
	return ps_remove(&lg->dirty, (rep.iova & ~(t - 1)) >> PG_SHIFT,
			 (last | (t - 1)) >> PG_SHIFT);
}

static int dmalog_feature(struct vfiomig_sim_device *dev, uint32_t flags, void *data,
			  size_t argsz)
{
	struct sim_dmalog *lg = dev->dmalog;
	int ret;

	switch (flags & VU_DEVICE_FEATURE_MASK) {
	case VU_FEATURE_DMA_LOGGING_START:
		return dmalog_start(dev, flags, data, argsz);
	case VU_FEATURE_DMA_LOGGING_STOP:
		ret = sim_feature_check(flags, argsz, VU_DEVICE_FEATURE_SET, 0);
		if (ret != 1)
			return ret;
		/* Stopping what is not running succeeds (mlx5, pds). */
		if (lg->active) {
			dmalog_stop(lg);
			sim_event_add(dev->sim, "DMA_LOGGING_STOP %s", dev->name);
		}
		return 0;
	case VU_FEATURE_DMA_LOGGING_REPORT:
		return dmalog_report(dev, flags, data, argsz);
	default:
		return lg->next ? lg->next(dev, flags, data, argsz) : -ENOTTY;
	}
}

int sim_dmalog_setup(struct vfiomig_sim_device *dev)
{
	struct sim_dmalog *lg;

	if (!(dev->flags & VFIOMIG_SIM_DEV_DMA_LOGGING))
		return 0;
	lg = calloc(1, sizeof(*lg));
	if (!lg)
		return -ENOMEM;
	lg->next = dev->feature;
	dev->dmalog = lg;
	dev->feature = dmalog_feature;
	return 0;
}

void sim_dmalog_closed(struct vfiomig_sim_device *dev)
{
	/* Drivers tear their tracker down in close_device. */
	if (dev->dmalog && dev->dmalog->active)
		dmalog_stop(dev->dmalog);
}

void sim_dmalog_free(struct vfiomig_sim_device *dev)
{
	if (!dev->dmalog)
		return;
	dmalog_stop(dev->dmalog);
	free(dev->dmalog);
	dev->dmalog = NULL;
}

/* Record a DMA write in the device's log: only what falls in a tracked range. */
static int dmalog_record(struct sim_dmalog *lg, uint64_t first, uint64_t last)
{
	for (uint32_t i = 0; i < lg->nranges; i++) {
		uint64_t a = max64(first, lg->ranges[i].first), b = min64(last, lg->ranges[i].last);
		int err;

		if (a > b)
			continue;
		err = ps_add(&lg->dirty, a >> PG_SHIFT, b >> PG_SHIFT);
		if (err)
			return err;
	}
	return 0;
}

int vfiomig_sim_device_fail_dma_report(struct vfiomig_sim_device *dev, int err)
{
	if (!dev || !dev->dmalog || err >= 0 || err < -4095)
		return -EINVAL;
	sim_lock(dev->sim);
	dev->dmalog->fail_armed = true;
	dev->dmalog->fail_err = err;
	sim_unlock(dev->sim);
	return 0;
}

/* ------------------------------------------------------- the device's DMA */

/*
 * Where the device's DMA goes: its cdev's attachment (a HWPT, or an IOAS
 * for an mdev's access), or its group's container. *hwpt is set when
 * the DMA goes through a HWPT. -ENODEV when attached to nothing.
 */
static int dev_space(struct vfiomig_sim_device *dev, struct sim_dmaspace **ds,
		     struct sim_container **c, struct sim_hwpt **hwpt)
{
	struct sim_group *g = dev->group;

	*ds = NULL;
	*c = NULL;
	*hwpt = NULL;
	if (dev->cdev_file) {
		struct sim_iommufd *ictx = dev->cdev_file->ictx;
		struct sim_iommufd_id *pt;

		if (!dev->cdev_file->pt_id)
			return -ENODEV;
		pt = sim_iommufd_find(ictx, dev->cdev_file->pt_id);
		if (!pt)
			return -ENODEV;
		if (pt->kind == SIM_IOMMUFD_HWPT) {
			*hwpt = pt->hwpt;
			pt = sim_iommufd_find(ictx, pt->hwpt->ioas_id);
		}
		*ds = &pt->ioas->ds;
		return 0;
	}
	if (g->container && g->container->iommu_type) {
		*c = g->container;
		if (!t1_get(*c))
			return -ENOMEM;
		*ds = &(*c)->t1->ds;
		return 0;
	}
	/* iommufd's compatibility container: nothing can be mapped through it here. */
	if (g->iommufd)
		return -EFAULT;
	return -ENODEV;
}

static int dma_range(uint64_t iova, uint64_t len, uint64_t *last)
{
	if (!len || __builtin_add_overflow(iova, len - 1, last))
		return -EINVAL;
	return 0;
}

static int dma_write_locked(struct vfiomig_sim_device *dev, uint64_t iova, uint64_t len,
			    uint64_t last)
{
	struct sim_container *c;
	struct sim_dmaspace *ds;
	struct sim_hwpt *hwpt;
	int err;

	err = dev_space(dev, &ds, &c, &hwpt);
	if (err)
		return err;
	/* A write where nothing writable is mapped is an IOMMU fault. */
	if (!ds_covered(ds, iova, last, VU_DMA_MAP_FLAG_WRITE))
		return -EFAULT;
	if (c && c->t1->tracking) {
		err = ps_add(&c->t1->written, iova >> PG_SHIFT, last >> PG_SHIFT);
		if (err)
			return err;
	}
	if (hwpt && hwpt->dirty_on) {
		err = ps_add(&hwpt->dirty, iova >> PG_SHIFT, last >> PG_SHIFT);
		if (err)
			return err;
	}
	if (dev->dmalog && dev->dmalog->active) {
		err = dmalog_record(dev->dmalog, iova, last);
		if (err)
			return err;
	}
	sim_event_add(dev->sim, "DMA_WRITE %s 0x%llx 0x%llx", dev->name,
		      (unsigned long long)iova, (unsigned long long)len);
	return 0;
}

int vfiomig_sim_device_dma_write(struct vfiomig_sim_device *dev, uint64_t iova, uint64_t len)
{
	uint64_t last;
	int err;

	if (!dev || dma_range(iova, len, &last))
		return -EINVAL;
	sim_lock(dev->sim);
	err = dma_write_locked(dev, iova, len, last);
	sim_unlock(dev->sim);
	return err;
}

static int pin_locked(struct vfiomig_sim_device *dev, uint64_t iova, uint64_t len, uint64_t last)
{
	struct sim_container *c;
	struct sim_dmaspace *ds;
	struct sim_hwpt *hwpt;
	int err;

	err = dev_space(dev, &ds, &c, &hwpt);
	if (err)
		return err;
	if (!ds_covered(ds, iova, last, 0))
		return -EFAULT;
	/* Pinned pages are dirty at every type1 report while they stay pinned. */
	if (c) {
		err = ps_add(&c->t1->pinned, iova >> PG_SHIFT, last >> PG_SHIFT);
		if (err)
			return err;
	}
	sim_event_add(dev->sim, "PIN %s 0x%llx 0x%llx", dev->name, (unsigned long long)iova,
		      (unsigned long long)len);
	return 0;
}

int vfiomig_sim_device_pin(struct vfiomig_sim_device *dev, uint64_t iova, uint64_t len)
{
	uint64_t last;
	int err;

	/* Only emulated devices pin through VFIO (vfio_pin_pages needs an emulated IOMMU). */
	if (!dev || dev->kind != VFIOMIG_DEVKIND_MDEV || dma_range(iova, len, &last))
		return -EINVAL;
	sim_lock(dev->sim);
	err = pin_locked(dev, iova, len, last);
	sim_unlock(dev->sim);
	return err;
}
