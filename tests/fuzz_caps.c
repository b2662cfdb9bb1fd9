/* SPDX-License-Identifier: MIT */
/*
 * Fuzzing entry point for the capability-chain parser. The first input
 * byte picks the info kind (1: IOMMU type1, 2: region, 3: device; other
 * values are folded onto those so no input is wasted), the rest is the
 * info buffer. Every public caps function runs on it, and the results
 * are checked against what caps.h promises, so a fuzzer finds wrong
 * answers as well as crashes.
 *
 * With -DVFIOMIG_LIBFUZZER (clang -fsanitize=fuzzer) libFuzzer provides
 * main(); otherwise main() replays the files named on the command line,
 * or stdin, e.g. the seeds in tests/data/caps.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok, const char *what, int rc)
{
	if (!ok) {
		fprintf(stderr, "fuzz_caps: %s broke its contract (returned %d)\n", what, rc);
		abort();
	}
}

static int known_err(int rc)
{
	return rc == -ENOENT || rc == -EINVAL || rc == -ENOSPC;
}

static void run(uint32_t kind, const uint8_t *buf, size_t len)
{
	struct vfiomig_iova_range ranges[4];
	struct vfiomig_sparse_area areas[4];
	struct vfiomig_iommu_migration mig;
	struct vfiomig_cap cap;
	uint32_t nr, a, b;
	int rc, n, steps = 0;

	n = vfiomig_caps_validate(NULL, kind, buf, len);
	check(n >= 0 || n == -EINVAL || n == -ENOSPC, "vfiomig_caps_validate", n);

	for (rc = vfiomig_caps_first(NULL, kind, buf, len, &cap); rc == 0;
	     rc = vfiomig_caps_next(NULL, kind, buf, len, &cap)) {
		check(cap.len >= 8 && (uint64_t)cap.offset + cap.len <= len, "capability bounds",
		      (int)cap.offset);
		steps++;
		check((size_t)steps <= len / 8, "walk length", steps);
	}
	check(known_err(rc), "vfiomig_caps_first/next", rc);
	if (n >= 0)
		check(rc == -ENOENT && steps == n, "validate count against the walk", n);

	for (uint16_t id = 0; id < 5; id++) {
		rc = vfiomig_caps_find(NULL, kind, buf, len, id, &cap);
		check(rc == 0 || known_err(rc), "vfiomig_caps_find", rc);
		check(rc != 0 || (cap.id == id && (uint64_t)cap.offset + cap.len <= len),
		      "vfiomig_caps_find result", rc);
	}

	rc = vfiomig_cap_iova_ranges(NULL, buf, len, ranges, 4, &nr);
	check(rc == 0 || known_err(rc), "vfiomig_cap_iova_ranges", rc);
	for (uint32_t i = 0; rc == 0 && i < nr && i < 4; i++)
		check(ranges[i].start <= ranges[i].end, "IOVA range order", (int)i);
	rc = vfiomig_cap_iova_ranges(NULL, buf, len, NULL, 0, &nr);
	check(rc == 0 || known_err(rc), "vfiomig_cap_iova_ranges (count)", rc);
	rc = vfiomig_cap_iommu_migration(NULL, buf, len, &mig);
	check(rc == 0 || known_err(rc), "vfiomig_cap_iommu_migration", rc);
	rc = vfiomig_cap_dma_avail(NULL, buf, len, &a);
	check(rc == 0 || known_err(rc), "vfiomig_cap_dma_avail", rc);
	rc = vfiomig_cap_sparse_mmap(NULL, buf, len, areas, 4, &nr);
	check(rc == 0 || known_err(rc), "vfiomig_cap_sparse_mmap", rc);
	rc = vfiomig_cap_region_type(NULL, buf, len, &a, &b);
	check(rc == 0 || known_err(rc), "vfiomig_cap_region_type", rc);
	rc = vfiomig_cap_msix_mappable(NULL, buf, len);
	check(rc == 0 || rc == 1 || rc == -EINVAL || rc == -ENOSPC, "vfiomig_cap_msix_mappable",
	      rc);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint32_t kind;
	uint8_t *copy;

	if (size == 0)
		return 0;
	kind = data[0];
	if (kind < VFIOMIG_INFO_IOMMU_TYPE1 || kind > VFIOMIG_INFO_DEVICE)
		kind = kind % 3 + 1;
	/*
	 * An exact-size heap copy, so a sanitizer sees a read one byte past
	 * the end (data + 1 is inside the caller's larger allocation).
	 */
	copy = malloc(size - 1 ? size - 1 : 1);
	if (!copy)
		return 0;
	memcpy(copy, data + 1, size - 1);
	run(kind, copy, size - 1);
	free(copy);
	return 0;
}

#ifndef VFIOMIG_LIBFUZZER
/* Inputs larger than this are not interesting: VFIO info buffers are small. */
#define MAX_INPUT (1u << 20)

static int replay(FILE *f, const char *name)
{
	uint8_t *buf = malloc(MAX_INPUT);
	size_t n;

	if (!buf) {
		fprintf(stderr, "fuzz_caps: out of memory\n");
		return -1;
	}
	n = fread(buf, 1, MAX_INPUT, f);
	if (ferror(f)) {
		fprintf(stderr, "fuzz_caps: %s: read error\n", name);
		free(buf);
		return -1;
	}
	LLVMFuzzerTestOneInput(buf, n);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	int st = 0;

	if (argc < 2)
		return replay(stdin, "<stdin>") ? 1 : 0;
	for (int i = 1; i < argc; i++) {
		FILE *f = fopen(argv[i], "rb");

		if (!f) {
			perror(argv[i]);
			st = 1;
			continue;
		}
		if (replay(f, argv[i]))
			st = 1;
		fclose(f);
	}
	return st;
}
#endif
