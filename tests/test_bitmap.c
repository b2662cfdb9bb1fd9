/* SPDX-License-Identifier: MIT */
/*
 * Bitmap helpers, checked against bit-at-a-time references written here:
 * random bitmaps with 0.1%, 10%, 50% and 100% of their bits set and runs of
 * random length, sizes on and around word boundaries, every page-size ratio
 * in both directions. Sizes of 256 whole words and more take the library's
 * AVX2 kernels (on machines that have AVX2), smaller ones its portable
 * loops, so both are compared with the same reference. Bits past the end
 * are set in every source (reading them as set shows) and left set or
 * clear in every destination (writing them shows). Every test ends with
 * assert_no_leaks(): heap blocks and fds as at the mark the suite's .init
 * takes (see testutil.h).
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

static void set_bit(uint64_t *bm, uint64_t i)
{
	bm[i / 64] |= 1ull << (i % 64);
}

static uint64_t words_of(uint64_t nbits)
{
	return (nbits + 63) / 64;
}

/* Bit patterns: per-bit densities in permille, then two kinds of runs. */
enum { PAT_0_1PCT, PAT_10PCT, PAT_50PCT, PAT_100PCT, PAT_RUNS, PAT_SHORT_RUNS, PAT_NR };
static const char *const pat_name[PAT_NR] = { "0.1%", "10%", "50%", "100%", "runs", "short runs" };

/*
 * A bitmap of nbits in its exact number of words (at least one), filled by
 * `pat`; the bits past nbits in the last word are all set.
 */
static uint64_t *pattern_bitmap(uint64_t nbits, int pat)
{
	static const unsigned int permille[] = { 1, 100, 500, 1000 };
	uint64_t words = words_of(nbits) ? words_of(nbits) : 1;
	uint64_t *bm = calloc(words, 8);

	cr_assert_not_null(bm);
	if (pat <= PAT_100PCT) {
		for (uint64_t i = 0; i < nbits; i++)
			if (next() % 1000 < permille[pat])
				set_bit(bm, i);
	} else {
		uint64_t most = pat == PAT_RUNS ? 200 : 4;

		for (uint64_t i = next() % most; i < nbits;) {
			uint64_t len = 1 + next() % most;

			for (uint64_t e = i + len; i < e && i < nbits; i++)
				set_bit(bm, i);
			i += 1 + next() % most;
		}
	}
	for (uint64_t i = nbits; i < words * 64; i++)
		set_bit(bm, i);
	return bm;
}

TestSuite(bitmap, .init = leak_baseline);

/* ------------------------------------------------------------ count, OR */

Test(bitmap, count_matches_reference_and_ignores_bits_past_the_end)
{
	static const uint64_t sizes[] = { 0, 1, 63, 64, 65, 127, 128, 1000, 4097 };

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		for (int p = 0; p < PAT_NR; p++) {
			uint64_t n = sizes[s], ref = 0;
			uint64_t *bm = pattern_bitmap(n, p);

			for (uint64_t i = 0; i < n; i++)
				ref += bit(bm, i);
			cr_assert_eq(vfiomig_bitmap_count(bm, n), ref, "n=%llu %s",
				     (unsigned long long)n, pat_name[p]);
			free(bm);
		}
	}
	cr_assert_eq(vfiomig_bitmap_count(NULL, 10), 0);
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

/* ------------------------------------------------------------------ runs */

struct run {
	uint64_t first, count;
};

struct runs {
	struct run *v;
	uint64_t n, cap;
	uint64_t stop_at; /* return 42 from call number stop_at (1-based); 0: never */
};

static int collect(void *user, uint64_t first, uint64_t count)
{
	struct runs *r = user;

	cr_assert_lt(r->n, r->cap, "more runs than the bitmap has");
	r->v[r->n].first = first;
	r->v[r->n].count = count;
	return ++r->n == r->stop_at ? 42 : 0;
}

/* The maximal runs of set bits below nbits, one bit at a time. */
static uint64_t reference_runs(const uint64_t *bm, uint64_t nbits, struct run *out)
{
	uint64_t n = 0;

	for (uint64_t i = 0; i < nbits; i++) {
		if (!bit(bm, i))
			continue;
		if (i == 0 || !bit(bm, i - 1))
			out[n++] = (struct run){ i, 0 };
		out[n - 1].count++;
	}
	return n;
}

static void check_runs(const uint64_t *bm, uint64_t nbits, const char *what)
{
	uint64_t cap = nbits / 2 + 2;
	struct run *want = calloc(cap, sizeof(*want));
	struct runs got = { .v = calloc(cap, sizeof(struct run)), .cap = cap };
	uint64_t n;

	cr_assert(want && got.v);
	n = reference_runs(bm, nbits, want);
	cr_assert_eq(vfiomig_bitmap_for_each_run(bm, nbits, collect, &got), 0, "%s", what);
	cr_assert_eq(got.n, n, "%s: %llu runs, the reference finds %llu", what,
		     (unsigned long long)got.n, (unsigned long long)n);
	for (uint64_t i = 0; i < n; i++)
		cr_assert(got.v[i].first == want[i].first && got.v[i].count == want[i].count,
			  "%s: run %llu is [%llu, +%llu), the reference says [%llu, +%llu)", what,
			  (unsigned long long)i, (unsigned long long)got.v[i].first,
			  (unsigned long long)got.v[i].count, (unsigned long long)want[i].first,
			  (unsigned long long)want[i].count);
	/* Stopping: the value comes back and no call follows it. */
	if (n) {
		struct runs stop = { .v = got.v, .cap = cap, .stop_at = 1 + next() % n };

		cr_assert_eq(vfiomig_bitmap_for_each_run(bm, nbits, collect, &stop), 42, "%s", what);
		cr_assert_eq(stop.n, stop.stop_at, "%s: calls after a non-zero return", what);
	}
	free(want);
	free(got.v);
}

static const uint64_t run_sizes[] = { 0, 1, 2, 63, 64, 65, 127, 128, 129, 255, 256, 257,
				      1000, 4096 + 37, 64 * 300 + 5 };

Test(bitmap, runs_match_a_bit_by_bit_reference)
{
	char what[96];

	for (size_t s = 0; s < sizeof(run_sizes) / sizeof(run_sizes[0]); s++) {
		for (int p = 0; p < PAT_NR; p++) {
			uint64_t n = run_sizes[s];
			uint64_t *bm = pattern_bitmap(n, p);

			snprintf(what, sizeof(what), "%llu bits, %s", (unsigned long long)n,
				 pat_name[p]);
			check_runs(bm, n, what);
			free(bm);
		}
	}
	assert_no_leaks();
}

/* Runs that start, end or cross exactly at word boundaries. */
Test(bitmap, runs_across_word_boundaries_are_one_run)
{
	static const struct { uint64_t first, count, nbits; } cases[] = {
		{ 0, 64, 64 },    { 0, 64, 128 },    { 64, 64, 128 },  { 63, 2, 128 },
		{ 63, 1, 64 },    { 64, 1, 65 },     { 0, 320, 320 },  { 60, 200, 320 },
		{ 1, 318, 320 },  { 128, 192, 320 }, { 0, 65, 65 },    { 5, 60, 65 },
		{ 0, 256, 257 },  { 64, 193, 257 },  { 200, 1, 257 },  { 0, 1, 1 },
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t bm[6] = { 0 }, n = cases[c].nbits;
		char what[96];

		vfiomig_bitmap_set_range(bm, cases[c].first, cases[c].count);
		/* Set bits past the end: they must neither extend a run nor make one. */
		for (uint64_t i = n; i < 6 * 64; i++)
			set_bit(bm, i);
		snprintf(what, sizeof(what), "[%llu, +%llu) of %llu bits",
			 (unsigned long long)cases[c].first, (unsigned long long)cases[c].count,
			 (unsigned long long)n);
		check_runs(bm, n, what);
	}
	assert_no_leaks();
}

static int stop_at_two(void *user, uint64_t first, uint64_t count)
{
	(void)first;
	(void)count;
	return ++*(int *)user == 2 ? 42 : 0;
}

static int never(void *user, uint64_t first, uint64_t count)
{
	(void)first;
	(void)count;
	++*(int *)user;
	return 0;
}

Test(bitmap, run_callback_can_stop_the_walk)
{
	uint64_t bm[2] = { 0x5, 0x1 }; /* runs at 0, 2, 64 */
	uint64_t ones[2] = { ~0ull, ~0ull };
	int calls = 0;

	cr_assert_eq(vfiomig_bitmap_for_each_run(bm, 128, stop_at_two, &calls), 42);
	cr_assert_eq(calls, 2);
	/* The last run, ending at nbits, is reported after the loop: its return value too. */
	calls = 1;
	cr_assert_eq(vfiomig_bitmap_for_each_run(ones, 128, stop_at_two, &calls), 42);
	calls = 0;
	cr_assert_eq(vfiomig_bitmap_for_each_run(ones, 0, never, &calls), 0);
	cr_assert_eq(calls, 0, "a run in an empty bitmap");
	cr_assert_eq(vfiomig_bitmap_for_each_run(NULL, 1, never, &calls), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_for_each_run(bm, 1, NULL, &calls), -EINVAL);
	cr_assert_eq(calls, 0);
	assert_no_leaks();
}

/* ------------------------------------------------------------- convert */

/* Destination bits of a conversion of n source bits by 2^k, up (larger pages) or down. */
static uint64_t converted_bits(uint64_t n, unsigned int k, bool up)
{
	if (up)
		return n ? ((n - 1) >> k) + 1 : 0;
	return n << k;
}

/* The conversion one bit at a time, into want (zeroed). */
static void reference_convert(const uint64_t *src, uint64_t n, unsigned int k, bool up,
			      uint64_t *want)
{
	if (up) {
		for (uint64_t i = 0; i < n; i++)
			if (bit(src, i))
				set_bit(want, i >> k);
	} else {
		for (uint64_t i = 0; i < n << k; i++)
			if (bit(src, i >> k))
				set_bit(want, i);
	}
}

/*
 * Convert src (n bits) by 2^k twice: into a destination holding random
 * bits, its bits past the end clear (bits are only added, and none past
 * the end); and into a clear one whose bits past the end are set (none is
 * cleared). The destination has one more word than it needs.
 */
static void check_convert(const uint64_t *src, uint64_t n, unsigned int k, bool up,
			  const char *what)
{
	uint64_t dbits = converted_bits(n, k, up), words = words_of(dbits) + 1;
	uint64_t *want = calloc(words, 8), *got = calloc(words, 8), *expect = calloc(words, 8);
	uint64_t src_pg = up ? (k + 12 < 64 ? 4096 : 1) : 4096ull << k;
	uint64_t dst_pg = up ? src_pg << k : 4096;

	cr_assert(want && got && expect);
	reference_convert(src, n, k, up, want);
	for (int variant = 0; variant < 2; variant++) {
		for (uint64_t w = 0; w < words; w++) {
			uint64_t lo = w * 64;
			uint64_t inside = dbits >= lo + 64 ? ~0ull
					  : dbits > lo	   ? (1ull << (dbits - lo)) - 1
							   : 0;

			got[w] = variant ? ~inside : next() & inside;
			expect[w] = got[w] | want[w];
		}
		cr_assert_eq(vfiomig_bitmap_convert(src, n, src_pg, got, dst_pg), 0, "%s", what);
		if (memcmp(got, expect, words * 8) == 0)
			continue;
		for (uint64_t i = 0; i < words * 64; i++)
			if (bit(got, i) != bit(expect, i))
				cr_assert_fail("%s, %s destination: bit %llu of %llu is %d, want %d",
					       what, variant ? "clear" : "random",
					       (unsigned long long)i, (unsigned long long)dbits,
					       bit(got, i), bit(expect, i));
	}
	free(want);
	free(got);
	free(expect);
}

/* Around word and group boundaries; the last three take the AVX2 kernels (>= 256 whole words). */
static const uint64_t conv_sizes[] = { 0, 1, 2, 31, 63, 64, 65, 127, 128, 129, 640 + 1,
				       4096 + 37, 256 * 64, 259 * 64 + 17, 700 * 64 + 33 };

Test(bitmap, convert_to_larger_pages_matches_a_bit_by_bit_reference)
{
	/* Every ratio up to 2^13, and 2^20, 2^40, 2^63. */
	static const unsigned int ks[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 20, 40, 63 };
	char what[128];

	for (size_t s = 0; s < sizeof(conv_sizes) / sizeof(conv_sizes[0]); s++) {
		for (int p = 0; p < PAT_NR; p++) {
			uint64_t n = conv_sizes[s];
			uint64_t *src = pattern_bitmap(n, p);

			for (size_t k = 0; k < sizeof(ks) / sizeof(ks[0]); k++) {
				snprintf(what, sizeof(what), "%llu bits, %s, to pages 2^%u larger",
					 (unsigned long long)n, pat_name[p], ks[k]);
				check_convert(src, n, ks[k], true, what);
			}
			free(src);
		}
	}
	assert_no_leaks();
}

Test(bitmap, convert_to_smaller_pages_matches_a_bit_by_bit_reference)
{
	static const unsigned int ks[] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 20 };
	char what[128];

	for (size_t s = 0; s < sizeof(conv_sizes) / sizeof(conv_sizes[0]); s++) {
		for (int p = 0; p < PAT_NR; p++) {
			uint64_t n = conv_sizes[s];
			uint64_t *src = pattern_bitmap(n, p);

			for (size_t k = 0; k < sizeof(ks) / sizeof(ks[0]); k++) {
				if (n << ks[k] > (1ull << 21))
					continue; /* 256 KiB of destination is enough */
				snprintf(what, sizeof(what), "%llu bits, %s, to pages 2^%u smaller",
					 (unsigned long long)n, pat_name[p], ks[k]);
				check_convert(src, n, ks[k], false, what);
			}
			free(src);
		}
	}
	assert_no_leaks();
}

/* Every one-bit source at every position of three words: each group boundary on its own. */
Test(bitmap, convert_moves_every_single_bit_to_its_group)
{
	char what[128];

	for (unsigned int k = 1; k <= 7; k++) {
		for (uint64_t b = 0; b < 3 * 64; b++) {
			uint64_t src[3] = { 0 };

			set_bit(src, b);
			snprintf(what, sizeof(what), "bit %llu, ratio 2^%u", (unsigned long long)b, k);
			check_convert(src, 3 * 64, k, true, what);
			check_convert(src, 3 * 64, k, false, what);
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
	/* Same size: a plain OR, bits past the end left alone. */
	memset(dst, 0, sizeof(dst));
	src[1] |= 1ull << 63;
	cr_assert_eq(vfiomig_bitmap_convert(src, 127, 4096, dst, 4096), 0);
	cr_assert_eq(dst[0], src[0]);
	cr_assert_eq(dst[1], 1ull << 6);
	assert_no_leaks();
}

Test(bitmap, convert_refuses_bad_arguments_and_touches_nothing)
{
	uint64_t src[2] = { ~0ull, ~0ull }, dst[2] = { 0, 0 };

	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 3000, dst, 4096), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, dst, 0), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 0, dst, 4096), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, dst, 4096 + 1), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(NULL, 128, 4096, dst, 4096), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 128, 4096, NULL, 4096), -EINVAL);
	/* src_bits pages of src_pgsize must fit in 64 bits of bytes: 2^52 pages of 4 KiB do not. */
	cr_assert_eq(vfiomig_bitmap_convert(src, 1ull << 52, 4096, dst, 1ull << 40), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 1ull << 52, 4096, dst, 1024), -EINVAL);
	cr_assert_eq(vfiomig_bitmap_convert(src, 3, 1ull << 63, dst, 1ull << 62), -EINVAL);
	/* No source bits: nothing read, nothing written, in either direction. */
	cr_assert_eq(vfiomig_bitmap_convert(src, 0, 4096, dst, 16384), 0);
	cr_assert_eq(vfiomig_bitmap_convert(src, 0, 16384, dst, 4096), 0);
	cr_assert_eq(vfiomig_bitmap_convert(src, 0, 4096, dst, 1ull << 30), 0);
	cr_assert_eq(vfiomig_bitmap_convert(src, 0, 1ull << 30, dst, 4096), 0);
	cr_assert(dst[0] == 0 && dst[1] == 0);
	assert_no_leaks();
}
