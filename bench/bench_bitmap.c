/* SPDX-License-Identifier: MIT */
/*
 * make bench: the dirty-bitmap helpers on the bitmap of a 1 TiB guest
 * (4 KiB pages: 2^28 bits, 32 MiB) at 0.1%, 10%, 50% and 100% dirty, each
 * against a plain read of the same 32 MiB (the machine's memory speed), and
 * the run walk and page-size conversion the library had before (kept below,
 * bit at a time, as they were) against the ones it has now. Every figure is
 * a bench/bench.h line; MB/s count the 32 MiB of the 4 KiB-page bitmap.
 *
 * A walk calls back once per run (millions at 10% and 50%), so it cannot be
 * faster than that many calls: the "-calls-only" line times a loop of the
 * same number of calls to the same callback through a function pointer.
 *
 * Every result is checked (counts, the runs' sum and XOR of starts, the
 * converted bitmaps against a conversion done one bit at a time): a wrong
 * one exits 1.
 */
#include "bench.h"

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/dirty.h>

#define NBITS (1ull << 28)
#define WORDS (NBITS / 64)
#define BYTES (WORDS * 8)

/* ----------------------------------- the previous implementations, kept */

static inline uint64_t old_tail_mask(uint64_t nbits)
{
	unsigned int r = (unsigned int)(nbits & 63);

	return r ? (1ull << r) - 1 : ~0ull;
}

/* First set bit at or after `from`, or nbits. */
static uint64_t old_next_set(const uint64_t *bm, uint64_t nbits, uint64_t from)
{
	uint64_t w = from / 64, words = (nbits + 63) / 64, v;

	if (from >= nbits)
		return nbits;
	v = bm[w] & (~0ull << (from & 63));
	for (;;) {
		if (w == words - 1)
			v &= old_tail_mask(nbits);
		if (v)
			return w * 64 + (uint64_t)__builtin_ctzll(v);
		if (++w >= words)
			return nbits;
		v = bm[w];
	}
}

/* First clear bit at or after `from`, or nbits. */
static uint64_t old_next_clear(const uint64_t *bm, uint64_t nbits, uint64_t from)
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

static int old_for_each_run(const uint64_t *bm, uint64_t nbits, vfiomig_bitmap_run_fn fn,
			    void *user)
{
	uint64_t pos = 0;

	if (!bm || !fn)
		return -EINVAL;
	while (pos < nbits) {
		uint64_t start = old_next_set(bm, nbits, pos), end;
		int ret;

		if (start >= nbits)
			break;
		end = old_next_clear(bm, nbits, start);
		ret = fn(user, start, end - start);
		if (ret)
			return ret;
		pos = end;
	}
	return 0;
}

struct old_convert_ctx {
	uint64_t *dst;
	uint64_t src_pgsize, dst_pgsize;
};

static int old_convert_run(void *user, uint64_t first, uint64_t count)
{
	struct old_convert_ctx *c = user;
	uint64_t start = first * c->src_pgsize, end = (first + count) * c->src_pgsize;
	uint64_t dfirst = start / c->dst_pgsize;
	uint64_t dlast = (end + c->dst_pgsize - 1) / c->dst_pgsize;

	vfiomig_bitmap_set_range(c->dst, dfirst, dlast - dfirst);
	return 0;
}

static bool old_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static int old_convert(const uint64_t *src, uint64_t src_bits, uint64_t src_pgsize, uint64_t *dst,
		       uint64_t dst_pgsize)
{
	struct old_convert_ctx c = { dst, src_pgsize, dst_pgsize };
	uint64_t bytes;

	if (!src || !dst || !old_pow2(src_pgsize) || !old_pow2(dst_pgsize) ||
	    __builtin_mul_overflow(src_bits, src_pgsize, &bytes))
		return -EINVAL;
	if (src_pgsize == dst_pgsize) {
		vfiomig_bitmap_or(dst, src, src_bits);
		return 0;
	}
	/* Runs, not bits: a dense 1 TiB bitmap converts at a few runs per word. */
	return old_for_each_run(src, src_bits, old_convert_run, &c);
}

/* ------------------------------------------------------------- the runs */

struct bench {
	uint64_t *bm;           /* 4 KiB pages, NBITS */
	uint64_t *bm16;         /* 16 KiB pages, NBITS / 4 */
	uint64_t *up, *up_old;  /* bm converted to 16 KiB pages */
	uint64_t *down, *down_old; /* bm16 converted to 4 KiB pages */
	uint64_t *want_up, *want_down;
	uint64_t *or_dst;
	uint64_t want_count, want_runs, want_xor;
	uint64_t runs, bits, xor_first; /* what a walk saw */
	volatile uint64_t sink;
};

static int on_run(void *user, uint64_t first, uint64_t count)
{
	struct bench *b = user;

	b->runs++;
	b->bits += count;
	b->xor_first ^= first;
	return 0;
}

/* The same callback called by a loop, through a pointer the compiler cannot see through. */
static vfiomig_bitmap_run_fn volatile on_run_ptr = on_run;

static __attribute__((noinline)) uint64_t plain_read(const uint64_t *bm)
{
	uint64_t s = 0;

	for (uint64_t i = 0; i < WORDS; i++)
		s += bm[i];
	return s;
}

static int run_read(void *user)
{
	struct bench *b = user;

	b->sink = plain_read(b->bm);
	return 0;
}

static int run_count(void *user)
{
	struct bench *b = user;

	return vfiomig_bitmap_count(b->bm, NBITS) != b->want_count;
}

static int walk_checked(struct bench *b, int ret)
{
	return ret || b->runs != b->want_runs || b->bits != b->want_count ||
	       b->xor_first != b->want_xor;
}

static int run_walk(void *user)
{
	struct bench *b = user;

	b->runs = b->bits = b->xor_first = 0;
	return walk_checked(b, vfiomig_bitmap_for_each_run(b->bm, NBITS, on_run, b));
}

static int run_walk_old(void *user)
{
	struct bench *b = user;

	b->runs = b->bits = b->xor_first = 0;
	return walk_checked(b, old_for_each_run(b->bm, NBITS, on_run, b));
}

static int run_calls_only(void *user)
{
	struct bench *b = user;
	vfiomig_bitmap_run_fn fn = on_run_ptr;

	b->runs = b->bits = b->xor_first = 0;
	for (uint64_t i = 0; i < b->want_runs; i++)
		fn(b, i, 1);
	return b->runs != b->want_runs;
}

static int run_or(void *user)
{
	struct bench *b = user;

	vfiomig_bitmap_or(b->or_dst, b->bm, NBITS);
	return 0;
}

static int run_up(void *user)
{
	struct bench *b = user;

	return vfiomig_bitmap_convert(b->bm, NBITS, 4096, b->up, 16384);
}

static int run_up_old(void *user)
{
	struct bench *b = user;

	return old_convert(b->bm, NBITS, 4096, b->up_old, 16384);
}

static int run_down(void *user)
{
	struct bench *b = user;

	return vfiomig_bitmap_convert(b->bm16, NBITS / 4, 16384, b->down, 4096);
}

static int run_down_old(void *user)
{
	struct bench *b = user;

	return old_convert(b->bm16, NBITS / 4, 16384, b->down_old, 4096);
}

/* ----------------------------------------------------------- set-up, checks */

static uint64_t xs = 88172645463325252ull;

/* Dirty pages come in runs of 1..16 pages, as guest writes do; `permille` of them dirty. */
static void fill(uint64_t *bm, uint64_t nbits, unsigned int permille)
{
	memset(bm, 0, nbits / 8);
	for (uint64_t p = 0; p < nbits;) {
		uint64_t len;

		xs ^= xs << 13;
		xs ^= xs >> 7;
		xs ^= xs << 17;
		len = 1 + xs % 16;
		if ((xs >> 20) % 1000 < permille)
			vfiomig_bitmap_set_range(bm, p, len < nbits - p ? len : nbits - p);
		p += len;
	}
}

static bool bit(const uint64_t *bm, uint64_t i)
{
	return (bm[i / 64] >> (i % 64)) & 1;
}

/* The references, one bit at a time. */
static void reference(struct bench *b)
{
	bool prev = false;

	b->want_count = b->want_runs = b->want_xor = 0;
	memset(b->want_up, 0, BYTES / 4);
	memset(b->want_down, 0, BYTES);
	for (uint64_t i = 0; i < NBITS; i++) {
		bool on = bit(b->bm, i);

		b->want_count += on;
		if (on && !prev) {
			b->want_runs++;
			b->want_xor ^= i;
		}
		prev = on;
		if (on)
			b->want_up[i / 4 / 64] |= 1ull << (i / 4 % 64);
		if (bit(b->bm16, i / 4))
			b->want_down[i / 64] |= 1ull << (i % 64);
	}
}

/* A conversion's destination, cleared, converted once and compared; then left for the timed runs. */
static void check_once(const char *what, int (*run)(void *), struct bench *b, uint64_t *dst,
		       const uint64_t *want, size_t bytes)
{
	memset(dst, 0, bytes);
	if (run(b) || memcmp(dst, want, bytes)) {
		fprintf(stderr, "bench: %s gives a wrong bitmap\n", what);
		exit(1);
	}
}

static void check_after(const char *what, const uint64_t *dst, const uint64_t *want, size_t bytes)
{
	if (memcmp(dst, want, bytes)) {
		fprintf(stderr, "bench: %s gives a wrong bitmap after its timed runs\n", what);
		exit(1);
	}
}

static void line_vs_read(const char *name, const char *dens, const char *suffix,
			 int (*run)(void *), struct bench *b)
{
	char full[96];
	double t_lib, t_read;

	bench_pair(0, run, run_read, b, &t_lib, &t_read);
	snprintf(full, sizeof(full), "%s-%s%s", name, dens, suffix);
	bench_line_rate(full, (double)BYTES, t_lib, "plain read", t_read);
}

static void line_vs_old(const char *name, const char *dens, int (*run)(void *),
			int (*old)(void *), struct bench *b)
{
	char full[96];
	double t_lib, t_old;

	bench_pair(0, run, old, b, &t_lib, &t_old);
	snprintf(full, sizeof(full), "%s-%s-vs-old", name, dens);
	bench_line_time(full, t_lib, "old bit-at-a-time code", t_old);
}

int main(void)
{
	static const struct { const char *name; unsigned int permille; } dens[] = {
		{ "0.1pct", 1 }, { "10pct", 100 }, { "50pct", 500 }, { "100pct", 1000 },
	};
	struct bench b = { 0 };
	uint64_t **bufs[] = { &b.bm, &b.up, &b.up_old, &b.want_up, &b.down, &b.down_old,
			      &b.want_down, &b.or_dst, &b.bm16 };
	static const size_t sizes[] = { BYTES, BYTES / 4, BYTES / 4, BYTES / 4, BYTES, BYTES,
					BYTES, BYTES, BYTES / 4 };

	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++) {
		*bufs[i] = calloc(1, sizes[i]);
		if (!*bufs[i]) {
			fprintf(stderr, "bench: out of memory\n");
			return 1;
		}
	}
	printf("bitmap of a 1 TiB guest at 4 KiB pages: %llu MiB, 2^28 bits; "
	       "conversions 4 KiB <-> 16 KiB; MB/s of that bitmap\n",
	       (unsigned long long)(BYTES >> 20));
	for (size_t d = 0; d < sizeof(dens) / sizeof(dens[0]); d++) {
		const char *dn = dens[d].name;
		char name[96];

		fill(b.bm, NBITS, dens[d].permille);
		fill(b.bm16, NBITS / 4, dens[d].permille);
		reference(&b);
		printf("-- %s: %llu of %llu pages dirty, %llu runs\n", dn,
		       (unsigned long long)b.want_count, (unsigned long long)NBITS,
		       (unsigned long long)b.want_runs);

		line_vs_read("bitmap-count", dn, "", run_count, &b);

		line_vs_read("bitmap-runs", dn, "", run_walk, &b);
		line_vs_read("bitmap-runs", dn, "-old", run_walk_old, &b);
		line_vs_old("bitmap-runs", dn, run_walk, run_walk_old, &b);
		line_vs_read("bitmap-runs", dn, "-calls-only", run_calls_only, &b);

		memset(b.or_dst, 0, BYTES);
		line_vs_read("bitmap-or", dn, "", run_or, &b);
		check_after("vfiomig_bitmap_or", b.or_dst, b.bm, BYTES);

		check_once("convert 4K->16K", run_up, &b, b.up, b.want_up, BYTES / 4);
		check_once("old convert 4K->16K", run_up_old, &b, b.up_old, b.want_up, BYTES / 4);
		line_vs_read("bitmap-convert-4k16k", dn, "", run_up, &b);
		line_vs_read("bitmap-convert-4k16k", dn, "-old", run_up_old, &b);
		line_vs_old("bitmap-convert-4k16k", dn, run_up, run_up_old, &b);
		check_after("convert 4K->16K", b.up, b.want_up, BYTES / 4);
		check_after("old convert 4K->16K", b.up_old, b.want_up, BYTES / 4);

		check_once("convert 16K->4K", run_down, &b, b.down, b.want_down, BYTES);
		check_once("old convert 16K->4K", run_down_old, &b, b.down_old, b.want_down, BYTES);
		line_vs_read("bitmap-convert-16k4k", dn, "", run_down, &b);
		line_vs_read("bitmap-convert-16k4k", dn, "-old", run_down_old, &b);
		line_vs_old("bitmap-convert-16k4k", dn, run_down, run_down_old, &b);
		check_after("convert 16K->4K", b.down, b.want_down, BYTES);
		check_after("old convert 16K->4K", b.down_old, b.want_down, BYTES);

		snprintf(name, sizeof(name), "bitmap-runs-%s-callbacks", dn);
		bench_line_value(name, (double)b.want_runs, "calls", "one per run, each walk");
	}
	for (size_t i = 0; i < sizeof(bufs) / sizeof(bufs[0]); i++)
		free(*bufs[i]);
	return 0;
}
