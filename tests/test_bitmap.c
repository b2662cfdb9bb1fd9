/* SPDX-License-Identifier: MIT */
/*
 * Bitmap helpers, checked against a bit-at-a-time reference on random
 * bitmaps. Every test ends with assert_no_leaks(): heap blocks and fds
 * as at the mark the suite's .init takes (see testutil.h).
 */
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/dirty.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static bool bit(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

static uint64_t *random_bitmap(uint64_t nbits, int density)
{
	uint64_t words = (nbits + 63) / 64 + 1;
	uint64_t *bm = calloc(words, 8);

	cr_assert_not_null(bm);
	for (uint64_t i = 0; i < words; i++) {
		uint64_t v = next();

		/* density 0: sparse, 1: half, 2: dense runs */
		bm[i] = density == 0 ? (v & next() & next()) : density == 1 ? v : (v | next() | next());
	}
	return bm;
}

TestSuite(bitmap, .init = leak_baseline);

Test(bitmap, count_matches_reference_and_ignores_bits_past_the_end)
{
	static const uint64_t sizes[] = { 0, 1, 63, 64, 65, 127, 128, 1000, 4097 };

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (int d = 0; d < 3; d++) {
			uint64_t n = sizes[s], ref = 0;
			uint64_t *bm = random_bitmap(n, d);

			for (uint64_t i = 0; i < n; i++)
				ref += bit(bm, i);
			cr_assert_eq(vfiomig_bitmap_count(bm, n), ref, "n=%llu d=%d",
				     (unsigned long long)n, d);
			free(bm);
		}
	}
	cr_assert_eq(vfiomig_bitmap_count(NULL, 10), 0);
	assert_no_leaks();
}

struct runs {
	uint64_t *copy;
	uint64_t calls;
	uint64_t last_end;
	bool disjoint_sorted;
};

static int collect(void *user, uint64_t first, uint64_t count)
{
	struct runs *r = user;

	if (count == 0 || (r->calls && first <= r->last_end))
		r->disjoint_sorted = false; /* runs must be maximal, increasing, non-touching */
	vfiomig_bitmap_set_range(r->copy, first, count);
	r->last_end = first + count;
	r->calls++;
	return 0;
}

Test(bitmap, runs_rebuild_the_bitmap_exactly)
{
	static const uint64_t sizes[] = { 1, 64, 65, 200, 4096 + 13 };

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (int d = 0; d < 3; d++) {
			uint64_t n = sizes[s];
			uint64_t *bm = random_bitmap(n, d);
			struct runs r = { .copy = calloc((n + 63) / 64 + 1, 8), .disjoint_sorted = true };

			cr_assert_eq(vfiomig_bitmap_for_each_run(bm, n, collect, &r), 0);
			cr_assert(r.disjoint_sorted);
			for (uint64_t i = 0; i < n; i++)
				cr_assert_eq(bit(r.copy, i), bit(bm, i), "bit %llu", (unsigned long long)i);
			cr_assert_eq(bit(r.copy, n), 0, "a run went past nbits");
			free(r.copy);
			free(bm);
		}
	}
	assert_no_leaks();
}

static int stop_at_two(void *user, uint64_t first, uint64_t count)
{
	(void)first;
	(void)count;
	return ++*(int *)user == 2 ? 42 : 0;
}

Test(bitmap, run_callback_can_stop_the_walk)
{
	uint64_t bm[2] = { 0x5, 0x1 }; /* runs at 0, 2, 64 */
	int calls = 0;

	cr_assert_eq(vfiomig_bitmap_for_each_run(bm, 128, stop_at_two, &calls), 42);
	cr_assert_eq(calls, 2);
	cr_assert_eq(vfiomig_bitmap_for_each_run(NULL, 1, stop_at_two, &calls), -EINVAL);
	assert_no_leaks();
}

Test(bitmap, set_range_or_and_clear_respect_bounds)
{
	uint64_t bm[4], src[4];

	memset(bm, 0, sizeof(bm));
	vfiomig_bitmap_set_range(bm, 60, 10);
	cr_assert_eq(bm[0], 0xf000000000000000ull);
	cr_assert_eq(bm[1], 0x3f);
	vfiomig_bitmap_set_range(bm, 128, 64);
	cr_assert_eq(bm[2], ~0ull);
	cr_assert_eq(bm[3], 0);
	vfiomig_bitmap_set_range(bm, 3, 0);
	cr_assert_eq(bm[0] & 8, 0);

	memset(src, 0xff, sizeof(src));
	memset(bm, 0, sizeof(bm));
	vfiomig_bitmap_or(bm, src, 100);
	cr_assert_eq(bm[0], ~0ull);
	cr_assert_eq(bm[1], (1ull << 36) - 1, "OR wrote past bit 100");
	cr_assert_eq(bm[2], 0);

	memset(bm, 0xff, sizeof(bm));
	vfiomig_bitmap_clear(bm, 70);
	cr_assert_eq(bm[0], 0);
	cr_assert_eq(bm[1], ~0ull << 6, "clear touched bits past 70");
	cr_assert_eq(bm[2], ~0ull);
	assert_no_leaks();
}

/* A range over more than two words: its first and last words in part, every word between whole. */
Test(bitmap, set_range_fills_every_middle_word)
{
	uint64_t bm[6];

	memset(bm, 0, sizeof(bm));
	vfiomig_bitmap_set_range(bm, 10, 4 * 64);
	cr_assert_eq(bm[0], ~0ull << 10);
	cr_assert_eq(bm[1], ~0ull);
	cr_assert_eq(bm[2], ~0ull);
	cr_assert_eq(bm[3], ~0ull);
	cr_assert_eq(bm[4], (1ull << 10) - 1);
	cr_assert_eq(bm[5], 0);
	cr_assert_eq(vfiomig_bitmap_count(bm, 6 * 64), 4 * 64);
	assert_no_leaks();
}

Test(bitmap, convert_matches_a_bit_by_bit_reference)
{
	static const uint64_t nbits[] = { 64, 100, 640, 4096 + 37 };
	static const uint64_t ratios[] = { 2, 4, 8, 16, 32, 64, 128 };

	for (size_t n = 0; n < sizeof(nbits) / sizeof(nbits[0]); n++) {
		for (size_t k = 0; k < sizeof(ratios) / sizeof(ratios[0]); k++) {
			for (int d = 0; d < 3; d++) {
				uint64_t bits = nbits[n], r = ratios[k];
				uint64_t dbits = (bits + r - 1) / r;
				uint64_t *src = random_bitmap(bits, d);
				uint64_t *got = calloc((dbits + 63) / 64 + 1, 8);
				uint64_t *want = calloc((dbits + 63) / 64 + 1, 8);

				for (uint64_t i = 0; i < bits; i++)
					if (bit(src, i))
						want[i / r / 64] |= 1ull << (i / r % 64);
				cr_assert_eq(vfiomig_bitmap_convert(src, bits, 4096, got, 4096 * r), 0);
				for (uint64_t i = 0; i < dbits + 64; i++)
					cr_assert_eq(bit(got, i), bit(want, i),
						     "bits %llu ratio %llu density %d: dst bit %llu",
						     (unsigned long long)bits, (unsigned long long)r, d,
						     (unsigned long long)i);
				free(src);
				free(got);
				free(want);
			}
		}
	}
	assert_no_leaks();
}

Test(bitmap, convert_to_coarser_and_finer_pages)
{
	uint64_t src[2] = { 0, 0 }, dst[4];

	/* 4 KiB pages 1 and 70 dirty. */
	src[0] = 1ull << 1;
	src[1] = 1ull << 6;
	/* To 64 KiB pages (16 small pages each): pages 0 and 4. */
	memset(dst, 0, sizeof(dst));
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, dst, 65536), 0);
	cr_assert_eq(dst[0], (1ull << 0) | (1ull << 4));
	/* To 2 KiB pages: each 4 KiB page sets two bits. */
	memset(dst, 0, sizeof(dst));
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, dst, 2048), 0);
	cr_assert_eq(dst[0], 3ull << 2);
	cr_assert_eq(dst[2], 3ull << 12);
	cr_assert_eq(vfiomig_bitmap_count(dst, 256), 4);
	/* Same size: a plain OR. Bad sizes refused. */
	memset(dst, 0, sizeof(dst));
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, dst, 4096), 0);
	cr_assert_eq(dst[1], src[1]);
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 3000, dst, 4096), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, dst, 0), -EINVAL);
	assert_no_leaks();
}
