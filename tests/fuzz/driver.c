/* SPDX-License-Identifier: MIT */
/*
 * The entry points around a target (fuzz_stream.c, fuzz_return.c).
 *
 * With -DVFIOMIG_LIBFUZZER (clang -fsanitize=fuzzer, `make fuzz`)
 * libFuzzer provides main() and calls LLVMFuzzerTestOneInput and the
 * format-aware LLVMFuzzerCustomMutator. Otherwise (gcc, `make check`)
 * main() replays files through the same target code:
 *
 *   fuzz_X FILE...                 run each file, print its outcome
 *   fuzz_X --describe FILE...      "NAME OUTCOME" lines, for the manifest
 *   fuzz_X --expect OUTCOME FILE   exit 1 unless FILE's outcome is OUTCOME
 *   fuzz_X --mutate N FILE...      N format-aware mutations of each file,
 *                                  every one run with all the invariants
 *                                  (a short fuzzing run without libFuzzer;
 *                                  deterministic: the seed is the index)
 *   fuzz_X --make-seeds DIR        write the seeds only the library can
 *                                  make (scripts/fuzz-corpus.sh)
 *
 * An invariant that breaks aborts the process either way; in --mutate
 * mode the input that broke it is written first to
 * $FUZZ_CRASH_DIR/crash-TARGET-NAME-I (default: the current directory).
 */
#include "fuzz.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_target_run(data, size, NULL);
	return 0;
}

#ifdef VFIOMIG_LIBFUZZER
size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned int seed);

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max, unsigned int seed)
{
	return fz_target_mutate(data, size, max, seed, LLVMFuzzerMutate);
}
#else

/* A stand-in for LLVMFuzzerMutate: a few byte flips, insertions and erasures. */
static struct fz_rand plain_rnd = { 0x5eed };

static size_t plain_mutate(uint8_t *data, size_t size, size_t max)
{
	int n = 1 + (int)fz_below(&plain_rnd, 4);

	for (int k = 0; k < n; k++) {
		size_t at = fz_below(&plain_rnd, size + 1);

		switch (fz_below(&plain_rnd, 3)) {
		case 0:
			if (size)
				data[fz_below(&plain_rnd, size)] ^= (uint8_t)(1 + fz_below(&plain_rnd, 255));
			break;
		case 1:
			if (size < max) {
				memmove(data + at + 1, data + at, size - at);
				data[at] = (uint8_t)fz_rand(&plain_rnd);
				size++;
			}
			break;
		default:
			if (at < size) {
				memmove(data + at, data + at + 1, size - at - 1);
				size--;
			}
			break;
		}
	}
	return size;
}

static uint8_t *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f) {
		perror(path);
		return NULL;
	}
	for (;;) {
		if (n == cap) {
			uint8_t *nb = realloc(buf, cap = cap ? 2 * cap : 65536);

			if (!nb) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = nb;
		}
		size_t k = fread(buf + n, 1, cap - n, f);

		n += k;
		if (k == 0)
			break;
	}
	if (ferror(f)) {
		perror(path);
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = n;
	return buf;
}

static const char *base(const char *path)
{
	const char *s = strrchr(path, '/');

	return s ? s + 1 : path;
}

/* --mutate: the input being run, written out if an invariant aborts. */
static const uint8_t *cur_data;
static size_t cur_len;
static char cur_name[PATH_MAX];

static void dump_current(int sig)
{
	const char *dir = getenv("FUZZ_CRASH_DIR");
	char path[PATH_MAX + 64];
	FILE *f;

	snprintf(path, sizeof(path), "%s/crash-%s-%s", dir ? dir : ".", fz_target_name, cur_name);
	f = fopen(path, "wb");
	if (f) {
		fwrite(cur_data, 1, cur_len, f);
		fclose(f);
		fprintf(stderr, "fuzz_%s: the input is in %s\n", fz_target_name, path);
	}
	signal(sig, SIG_DFL);
	raise(sig);
}

/* --mutate with FUZZ_STATS set: how often each outcome came up (is the mutator reaching things?). */
struct tally {
	char what[96];
	unsigned long n;
};

static void count(struct tally *t, size_t *nt, const char *text)
{
	char what[96];
	size_t i;

	snprintf(what, sizeof(what), "%.*s", (int)strcspn(text, "/"), text);
	if (strstr(what, " state="))
		*strstr(what, " state=") = '\0';
	for (i = 0; i < *nt; i++)
		if (strcmp(t[i].what, what) == 0)
			break;
	if (i == *nt) {
		if (*nt == 256)
			return;
		memcpy(t[i].what, what, sizeof(what));
		t[i].n = 0;
		(*nt)++;
	}
	t[i].n++;
}

static int mutate_files(unsigned long n, int argc, char **argv)
{
	static struct tally tally[256];
	bool stats = getenv("FUZZ_STATS") != NULL;
	unsigned long total = 0;
	struct fz_outcome o;
	size_t nt = 0;

	signal(SIGABRT, dump_current);
	for (int i = 0; i < argc; i++) {
		size_t len, max;
		uint8_t *seed = read_file(argv[i], &len), *buf;

		if (!seed)
			return 1;
		max = len + 8192;
		buf = malloc(max);
		if (!buf)
			return 1;
		for (unsigned long k = 0; k < n; k++) {
			size_t m;

			memcpy(buf, seed, len);
			fz_rand_seed(&plain_rnd, k + 1);
			m = fz_target_mutate(buf, len, max, (unsigned int)(k * 2654435761u + (unsigned)i),
					     plain_mutate);
			/* A second round now and then: mutations stack in a real run too. */
			if (k % 3 == 2)
				m = fz_target_mutate(buf, m, max, (unsigned int)k, plain_mutate);
			cur_data = buf;
			cur_len = m;
			snprintf(cur_name, sizeof(cur_name), "%s-%lu", base(argv[i]), k);
			fz_target_run(buf, m, stats ? &o : NULL);
			if (stats)
				count(tally, &nt, o.text);
			total++;
		}
		free(buf);
		free(seed);
	}
	for (size_t i = 0; i < nt; i++)
		printf("%8lu  %s\n", tally[i].n, tally[i].what);
	printf("fuzz_%s: %lu mutated inputs ran, every invariant held\n", fz_target_name, total);
	return 0;
}

int main(int argc, char **argv)
{
	struct fz_outcome o;
	bool describe = false;
	const char *expect = NULL;
	int st = 0, i = 1;

	if (argc == 3 && strcmp(argv[1], "--make-seeds") == 0)
		return fz_target_make_seeds(argv[2]) ? 1 : 0;
	if (argc > 2 && strcmp(argv[1], "--mutate") == 0)
		return mutate_files(strtoul(argv[2], NULL, 0), argc - 3, argv + 3);
	if (argc > 1 && strcmp(argv[1], "--describe") == 0) {
		describe = true;
		i = 2;
	} else if (argc > 3 && strcmp(argv[1], "--expect") == 0) {
		expect = argv[2];
		i = 3;
	}
	if (i >= argc) {
		fprintf(stderr, "usage: %s [--describe | --expect OUTCOME | --mutate N] FILE...\n",
			argv[0]);
		return 2;
	}
	for (; i < argc; i++) {
		size_t len;
		uint8_t *buf = read_file(argv[i], &len);

		if (!buf) {
			st = 1;
			continue;
		}
		fz_target_run(buf, len, &o);
		free(buf);
		if (describe) {
			printf("%s %s\n", base(argv[i]), o.text);
		} else if (expect) {
			if (strcmp(expect, o.text) != 0) {
				fprintf(stderr, "%s: expected \"%s\", got \"%s\"\n", argv[i], expect,
					o.text);
				st = 1;
			}
		} else {
			printf("%s: %s\n", argv[i], o.text);
		}
	}
	return st;
}
#endif
