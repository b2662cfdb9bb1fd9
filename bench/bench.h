/* SPDX-License-Identifier: MIT */
/*
 * make bench: the shared shape of every figure.
 *
 * Each figure is one line
 *
 *   bench: NAME VALUE UNIT ratio R (baseline: WHAT VALUE UNIT)
 *
 * where the library's run and its baseline run in the same process,
 * interleaved (library, baseline, library, baseline, ...), and both are
 * the median of BENCH_RUNS runs (at least 5). R is always "higher is
 * better": library throughput / baseline throughput, or baseline time /
 * library time. Nothing here asserts anything about time: a benchmark
 * fails only when its result is wrong (a checksum, a count).
 */
#ifndef VFIOMIG_BENCH_H
#define VFIOMIG_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef BENCH_RUNS
#define BENCH_RUNS 7
#endif

static inline double bench_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline int bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The median of n samples (n >= 1); sorts them. */
static inline double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), bench_cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/*
 * Time a run spends on checking its result (comparing the destination
 * with the source, putting the devices back for the next run) is not the
 * library's: a run brackets it with bench_untimed_begin() / _end(), and
 * bench_pair() and bench_time() leave it out.
 */
static double bench_untimed, bench_untimed_t0;

static inline void bench_untimed_begin(void)
{
	bench_untimed_t0 = bench_now();
}

static inline void bench_untimed_end(void)
{
	bench_untimed += bench_now() - bench_untimed_t0;
}

/* Run f(user) once; its seconds, less what it spent untimed; exits 1 if it failed. */
static inline double bench_time(int (*f)(void *), void *user)
{
	double t0;

	bench_untimed = 0;
	t0 = bench_now();
	if (f(user)) {
		fprintf(stderr, "bench: a run gave a wrong result\n");
		exit(1);
	}
	return bench_now() - t0 - bench_untimed;
}

/*
 * Run lib() and base() alternately `runs` times each (BENCH_RUNS when
 * runs is 0); store the median seconds of each. A callback returns 0, or
 * non-zero when its result was wrong (the benchmark then exits 1).
 */
static inline void bench_pair(int runs, int (*lib)(void *), int (*base)(void *), void *user,
			      double *t_lib, double *t_base)
{
	double a[64], b[64];

	if (runs <= 0)
		runs = BENCH_RUNS;
	if (runs > 64)
		runs = 64;
	for (int r = 0; r < runs; r++) {
		a[r] = bench_time(lib, user);
		b[r] = base ? bench_time(base, user) : 0;
	}
	*t_lib = bench_median(a, runs);
	*t_base = base ? bench_median(b, runs) : 0;
}

/*
 * Print a throughput figure: `bytes` moved in t_lib by the library and
 * t_base by the baseline; the ratio is t_base / t_lib (throughput ratio).
 */
static inline void bench_line_rate(const char *name, double bytes, double t_lib, const char *what,
				   double t_base)
{
	printf("bench: %s %.1f MB/s ratio %.2f (baseline: %s %.1f MB/s)\n", name,
	       bytes / t_lib / 1e6, t_base / t_lib, what, bytes / t_base / 1e6);
	fflush(stdout);
}

/* Print a time figure: the ratio is t_base / t_lib (higher is better). */
static inline void bench_line_time(const char *name, double t_lib, const char *what, double t_base)
{
	printf("bench: %s %.2f ms ratio %.2f (baseline: %s %.2f ms)\n", name, t_lib * 1e3,
	       t_base / t_lib, what, t_base * 1e3);
	fflush(stdout);
}

/* A value without a baseline of its own (a split, a count). */
static inline void bench_line_value(const char *name, double value, const char *unit,
				    const char *note)
{
	printf("bench: %s %.2f %s (%s)\n", name, value, unit, note);
	fflush(stdout);
}

#endif
