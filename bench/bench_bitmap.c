/* SPDX-License-Identifier: MIT */
/*
 * make bench: how fast the dirty-bitmap helpers scan the bitmap of a
 * 1 TiB guest (4 KiB pages: 2^28 bits, 32 MiB), against the machine's
 * own memory bandwidth (a plain read of the same 32 MiB). Prints figures
 * and ratios; asserts nothing about time.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <vfiomig/dirty.h>

#define NBITS (1ull << 28)
#define WORDS (NBITS / 64)
#define REPS 5

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count_run(void *user, uint64_t first, uint64_t count)
{
	(void)first;
	*(uint64_t *)user += count;
	return 0;
}

/* The best of REPS runs, in seconds. */
#define BEST(expr)                                            \
	({                                                    \
		double _best = 1e9;                           \
		for (int _r = 0; _r < REPS; _r++) {           \
			double _t0 = now();                   \
			expr;                                 \
			double _t = now() - _t0;              \
			if (_t < _best)                       \
				_best = _t;                   \
		}                                             \
		_best;                                        \
	})

int main(void)
{
	static const struct { const char *name; unsigned int permille; } dens[] = {
		{ "0.1% dirty", 1 }, { "10% dirty", 100 }, { "100% dirty", 1000 },
	};
	uint64_t *bm = malloc(WORDS * 8), *dst = malloc(WORDS * 8);
	volatile uint64_t sink = 0;
	double mb = (double)(WORDS * 8) / (1 << 20), t_read;
	uint64_t x = 88172645463325252ull;

	if (!bm || !dst)
		return 1;
	memset(dst, 0, WORDS * 8);
	/* Memory bandwidth baseline: sum every word once. */
	for (uint64_t i = 0; i < WORDS; i++)
		bm[i] = i;
	t_read = BEST({
		uint64_t s = 0;
		for (uint64_t i = 0; i < WORDS; i++)
			s += bm[i];
		sink += s;
	});
	printf("bitmap of a 1 TiB guest at 4 KiB pages: %.0f MiB, %llu bits\n", mb,
	       (unsigned long long)NBITS);
	printf("%-34s %8.2f ms  %7.2f GiB/s  (baseline)\n", "plain read of every word",
	       t_read * 1e3, mb / 1024 / t_read);

	for (size_t d = 0; d < sizeof(dens) / sizeof(dens[0]); d++) {
		double t_count, t_runs, t_or, t_conv;
		uint64_t total = 0;

		/* Dirty pages come in runs of 1..16 pages, as guest writes do. */
		memset(bm, 0, WORDS * 8);
		for (uint64_t p = 0; p < NBITS;) {
			x ^= x << 13; x ^= x >> 7; x ^= x << 17;
			uint64_t len = 1 + (x % 16);
			if ((x >> 20) % 1000 < dens[d].permille)
				vfiomig_bitmap_set_range(bm, p, len < NBITS - p ? len : NBITS - p);
			p += len;
		}
		t_count = BEST(sink += vfiomig_bitmap_count(bm, NBITS));
		t_runs = BEST({ total = 0; vfiomig_bitmap_for_each_run(bm, NBITS, count_run, &total); });
		t_or = BEST(vfiomig_bitmap_or(dst, bm, NBITS));
		t_conv = BEST({
			memset(dst, 0, WORDS * 8 / 4);
			vfiomig_bitmap_convert(bm, NBITS, 4096, dst, 16384);
		});
		printf("-- %s (%llu dirty pages) --\n", dens[d].name,
		       (unsigned long long)vfiomig_bitmap_count(bm, NBITS));
		printf("%-34s %8.2f ms  %7.2f GiB/s  ratio to baseline %.2f\n", "vfiomig_bitmap_count",
		       t_count * 1e3, mb / 1024 / t_count, t_read / t_count);
		printf("%-34s %8.2f ms  %7.2f GiB/s  ratio to baseline %.2f\n",
		       "vfiomig_bitmap_for_each_run", t_runs * 1e3, mb / 1024 / t_runs,
		       t_read / t_runs);
		printf("%-34s %8.2f ms  %7.2f GiB/s  ratio to baseline %.2f\n", "vfiomig_bitmap_or",
		       t_or * 1e3, mb / 1024 / t_or, t_read / t_or);
		printf("%-34s %8.2f ms  %7.2f GiB/s  ratio to baseline %.2f\n",
		       "vfiomig_bitmap_convert 4K->16K", t_conv * 1e3, mb / 1024 / t_conv,
		       t_read / t_conv);
		if (total != vfiomig_bitmap_count(bm, NBITS)) {
			fprintf(stderr, "bench: runs cover %llu bits, count says %llu\n",
				(unsigned long long)total,
				(unsigned long long)vfiomig_bitmap_count(bm, NBITS));
			return 1;
		}
	}
	free(bm);
	free(dst);
	(void)sink;
	return 0;
}
