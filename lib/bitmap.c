/* SPDX-License-Identifier: MIT */
/*
 * Dirty-bitmap helpers: counting, OR-ing, clearing, run iteration and
 * page-size conversion over uint64_t words (the kernel's layout: bit i of
 * word w is page w * 64 + i). Everything works a word at a time so a
 * 1 TiB guest's 4 KiB-page bitmap (32 MiB) scans at memory speed; the
 * last word is masked so bits past nbits are never read as set nor written.
 */
#include "internal.h"

static inline uint64_t tail_mask(uint64_t nbits)
{
	unsigned int r = (unsigned int)(nbits & 63);

	return r ? (1ull << r) - 1 : ~0ull;
}

static uint64_t count_words_generic(const uint64_t *bm, uint64_t words)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < words; i++)
		n += (uint64_t)__builtin_popcountll(bm[i]);
	return n;
}

#if defined(__x86_64__)
/* The POPCNT instruction is ~4x the portable bit trick; pick it at run time. */
__attribute__((target("popcnt")))
static uint64_t count_words_popcnt(const uint64_t *bm, uint64_t words)
{
	uint64_t n0 = 0, n1 = 0, i;

	for (i = 0; i + 1 < words; i += 2) {
		n0 += (uint64_t)__builtin_popcountll(bm[i]);
		n1 += (uint64_t)__builtin_popcountll(bm[i + 1]);
	}
	if (i < words)
		n0 += (uint64_t)__builtin_popcountll(bm[i]);
	return n0 + n1;
}
#endif

uint64_t vfiomig_bitmap_count(const uint64_t *bm, uint64_t nbits)
{
	uint64_t words = nbits / 64, n;

	if (!bm)
		return 0;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("popcnt"))
		n = count_words_popcnt(bm, words);
	else
#endif
		n = count_words_generic(bm, words);
	if (nbits & 63)
		n += (uint64_t)__builtin_popcountll(bm[words] & tail_mask(nbits));
	return n;
}

void vfiomig_bitmap_or(uint64_t *dst, const uint64_t *src, uint64_t nbits)
{
	uint64_t words = nbits / 64, i;

	if (!dst || !src)
		return;
	for (i = 0; i < words; i++)
		dst[i] |= src[i];
	if (nbits & 63)
		dst[words] |= src[words] & tail_mask(nbits);
}

void vfiomig_bitmap_clear(uint64_t *bm, uint64_t nbits)
{
	uint64_t words = nbits / 64;

	if (!bm)
		return;
	memset(bm, 0, words * sizeof(*bm));
	if (nbits & 63)
		bm[words] &= ~tail_mask(nbits);
}

void vfiomig_bitmap_set_range(uint64_t *bm, uint64_t first, uint64_t count)
{
	uint64_t end = first + count, w, lastw;

	if (!bm || !count || end < first)
		return;
	w = first / 64;
	lastw = (end - 1) / 64;
	if (w == lastw) {
		uint64_t m = (count == 64 ? ~0ull : ((1ull << count) - 1)) << (first & 63);

		bm[w] |= m;
		return;
	}
	bm[w++] |= ~0ull << (first & 63);
	while (w < lastw)
		bm[w++] = ~0ull;
	bm[lastw] |= tail_mask(end);
}

/* First set bit at or after `from`, or nbits. */
static uint64_t next_set(const uint64_t *bm, uint64_t nbits, uint64_t from)
{
	uint64_t w = from / 64, words = (nbits + 63) / 64, v;

	if (from >= nbits)
		return nbits;
	v = bm[w] & (~0ull << (from & 63));
	for (;;) {
		if (w == words - 1)
			v &= tail_mask(nbits);
		if (v)
			return w * 64 + (uint64_t)__builtin_ctzll(v);
		if (++w >= words)
			return nbits;
		v = bm[w];
	}
}

/* First clear bit at or after `from`, or nbits. */
static uint64_t next_clear(const uint64_t *bm, uint64_t nbits, uint64_t from)
{
	uint64_t w = from / 64, words = (nbits + 63) / 64, v;

	if (from >= nbits)
		return nbits;
	v = ~bm[w] & (~0ull << (from & 63));
	for (;;) {
		if (v) {
			uint64_t bit = w * 64 + (uint64_t)__builtin_ctzll(v);

			return bit < nbits ? bit : nbits;
		}
		if (++w >= words)
			return nbits;
		v = ~bm[w];
	}
}

int vfiomig_bitmap_for_each_run(const uint64_t *bm, uint64_t nbits, vfiomig_bitmap_run_fn fn,
				void *user)
{
	uint64_t pos = 0;

	if (!bm || !fn)
		return -EINVAL;
	while (pos < nbits) {
		uint64_t start = next_set(bm, nbits, pos), end;
		int ret;

		if (start >= nbits)
			break;
		end = next_clear(bm, nbits, start);
		ret = fn(user, start, end - start);
		if (ret)
			return ret;
		pos = end;
	}
	return 0;
}

static bool pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

struct convert_ctx {
	uint64_t *dst;
	uint64_t src_pgsize, dst_pgsize;
};

static int convert_run(void *user, uint64_t first, uint64_t count)
{
	struct convert_ctx *c = user;
	uint64_t start = first * c->src_pgsize, end = (first + count) * c->src_pgsize;
	uint64_t dfirst = start / c->dst_pgsize;
	uint64_t dlast = (end + c->dst_pgsize - 1) / c->dst_pgsize;

	vfiomig_bitmap_set_range(c->dst, dfirst, dlast - dfirst);
	return 0;
}

int vfiomig_bitmap_convert(const uint64_t *src, uint64_t src_bits, uint64_t src_pgsize,
			   uint64_t *dst, uint64_t dst_pgsize)
{
	struct convert_ctx c = { dst, src_pgsize, dst_pgsize };
	uint64_t bytes;

	if (!src || !dst || !pow2(src_pgsize) || !pow2(dst_pgsize) ||
	    __builtin_mul_overflow(src_bits, src_pgsize, &bytes))
		return -EINVAL;
	if (src_pgsize == dst_pgsize) {
		vfiomig_bitmap_or(dst, src, src_bits);
		return 0;
	}
	/* Runs, not bits: a dense 1 TiB bitmap converts at a few runs per word. */
	return vfiomig_bitmap_for_each_run(src, src_bits, convert_run, &c);
}
