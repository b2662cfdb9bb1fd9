/* SPDX-License-Identifier: MIT */
/*
 * make bench: CRC32C against a plain read pass.
 *
 * For 4 KiB, 64 KiB, 1 MiB and 64 MiB buffers: the library's vm_crc32c
 * (the version chosen for this CPU, three interleaved chains where it
 * can) against a pass that only reads the buffer (the sum of its 64-bit
 * words), the former single-chain SSE4.2 version (vm_crc32c_hw_1way)
 * against the same read pass, and vm_crc32c against the single chain
 * (the speed-up). The software version is timed at 1 MiB. Every run
 * checks its result (CRC against vm_crc32c_sw, sum against a sum taken
 * beforehand): a wrong CRC fails the bench.
 */
#include "bench.h"
#include "crc32c.h"

#include <stdint.h>

struct crc_case {
	const unsigned char *buf;
	size_t len;
	size_t reps;
	uint32_t crc; /* vm_crc32c_sw of buf */
	uint64_t sum; /* of the 64-bit words of buf */
};

static int run_crc(const struct crc_case *c, uint32_t (*f)(uint32_t, const void *, size_t))
{
	int bad = 0;

	for (size_t r = 0; r < c->reps; r++)
		bad |= f(0, c->buf, c->len) != c->crc;
	return bad;
}

static int run_lib(void *user)
{
	return run_crc(user, vm_crc32c);
}

static int run_1way(void *user)
{
	return run_crc(user, vm_crc32c_hw_1way);
}

static int run_sw(void *user)
{
	return run_crc(user, vm_crc32c_sw);
}

/*
 * The read pass touches each 64-bit word once, as crc32q does, and stays
 * scalar: clang vectorizes a plain sum at -O2 and gcc 12 does not, and
 * the baseline should not depend on which compiler built the bench.
 */
static uint64_t sum_words(const unsigned char *p, size_t len)
{
	uint64_t s = 0;

	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, sizeof(v));
		s += v;
		__asm__("" : "+r"(s));
	}
	return s;
}

static int run_read(void *user)
{
	const struct crc_case *c = user;
	int bad = 0;

	for (size_t r = 0; r < c->reps; r++) {
		/* Each pass reads the memory again: nothing lets the compiler reuse a sum. */
		__asm__ volatile("" ::: "memory");
		bad |= sum_words(c->buf, c->len) != c->sum;
	}
	return bad;
}

int main(void)
{
	static const struct {
		size_t len;
		const char *name;
	} sizes[] = {
		{ 4096, "4K" },
		{ 65536, "64K" },
		{ 1u << 20, "1M" },
		{ 64u << 20, "64M" },
	};
	/* Each run moves at least this much, so that it lasts milliseconds. */
	const size_t per_run = 256u << 20;
	uint64_t seed = 0x243f6a8885a308d3ull;
	size_t max = 64u << 20;
	unsigned char *buf = malloc(max);
	char name[64];

	if (!buf) {
		fprintf(stderr, "bench_crc: out of memory\n");
		return 1;
	}
	for (size_t i = 0; i < max; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		buf[i] = (unsigned char)(seed >> 56);
	}
	printf("crc32c: vm_crc32c runs \"%s\"\n", vm_crc32c_impl_name());
	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		struct crc_case c = {
			.buf = buf,
			.len = sizes[s].len,
			.reps = per_run / sizes[s].len ? per_run / sizes[s].len : 1,
			.crc = vm_crc32c_sw(0, buf, sizes[s].len),
			.sum = sum_words(buf, sizes[s].len),
		};
		double bytes = (double)c.len * (double)c.reps, t_lib, t_base;

		bench_pair(0, run_lib, run_read, &c, &t_lib, &t_base);
		snprintf(name, sizeof(name), "crc32c-%s", sizes[s].name);
		bench_line_rate(name, bytes, t_lib, "plain read pass", t_base);

		bench_pair(0, run_1way, run_read, &c, &t_lib, &t_base);
		snprintf(name, sizeof(name), "crc32c-1chain-%s", sizes[s].name);
		bench_line_rate(name, bytes, t_lib, "plain read pass", t_base);

		bench_pair(0, run_lib, run_1way, &c, &t_lib, &t_base);
		snprintf(name, sizeof(name), "crc32c-vs-1chain-%s", sizes[s].name);
		bench_line_rate(name, bytes, t_lib, "single chain", t_base);

		if (c.len == 1u << 20) {
			/* The software version is slower: a quarter of the bytes is enough. */
			c.reps /= 4;
			bytes /= 4;
			bench_pair(0, run_sw, run_read, &c, &t_lib, &t_base);
			bench_line_rate("crc32c-sw-1M", bytes, t_lib, "plain read pass", t_base);
		}
	}
	free(buf);
	return 0;
}
