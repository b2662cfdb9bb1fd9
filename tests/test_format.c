/* SPDX-License-Identifier: MIT */
/*
 * The stream format: CRC32C (every implementation), writer/reader round
 * trips, every refusal (magic, versions, lengths, strings, grammar,
 * unknown mandatory records, sizes over the limit, truncation at every
 * offset, a flipped bit anywhere, trailer mismatches, identity), and the
 * golden streams of tests/data/streams, which must parse forever.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/stream.h>

#include "format.h"

#ifndef TEST_DATA_DIR
#define TEST_DATA_DIR "tests/data"
#endif

/*
 * assert_no_leaks() at the end of a test checks heap and fds against the
 * mark leak_baseline() takes as the suite's .init (see testutil.h).
 */
#include "testutil.h"

/* ------------------------------------------------------------ fixtures */

struct logbuf {
	char last[1024];
	int count;
};

static void log_capture(void *user, int priority, const char *msg)
{
	struct logbuf *lb = user;

	if (priority > VFIOMIG_LOG_ERR)
		return;
	snprintf(lb->last, sizeof(lb->last), "%s", msg);
	lb->count++;
}

static struct vfiomig_ctx *new_ctx(struct logbuf *lb)
{
	struct vfiomig_ctx *ctx = NULL;
	VFIOMIG_OPTS(ctx_opts, o, .log_fn = log_capture, .log_user = lb,
		     .log_priority = VFIOMIG_LOG_ERR);

	memset(lb, 0, sizeof(*lb));
	cr_assert_eq(vfiomig_ctx_new(&o, &ctx), 0);
	return ctx;
}

/* Same rule as tests/gen_golden.c. */
static unsigned char golden_byte(unsigned seed, size_t i)
{
	return (unsigned char)((seed * 37u + i * 11u) & 0xff);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = golden_byte(seed, i);
}

static struct vm_fmt_header pci_header(void)
{
	return (struct vm_fmt_header){
		.protocol = VM_FMT_PROTO_V2,
		.id = {
			.kind = VM_FMT_ID_PCI,
			.vendor = 0x8086,
			.device = 0x1234,
			.subvendor = 0x8086,
			.subdevice = 0x0001,
			.class_code = 0x020000,
			.driver = "vfio-pci",
		},
	};
}

static void put64(unsigned char *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static void put32(unsigned char *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (24 - 8 * i));
}

static uint32_t get32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* What a parse saw. */
struct seen {
	enum vm_fmt_rec_type type;
	uint32_t phase;
	uint64_t marker;
	uint64_t size;
	uint64_t offset;
	unsigned char body[512];
};

struct parsed {
	struct vm_fmt_header h;
	struct seen rec[64];
	size_t n;
	uint64_t consumed; /* stream bytes read */
	int cancel_err;    /* after a CANCEL record */
	char cancel_reason[256];
};

/* Parse a whole stream held in memory; 0 only when its trailer verified. */
static int parse(struct vfiomig_ctx *ctx, const void *buf, size_t len, uint64_t max_record,
		 struct parsed *p)
{
	struct vfiomig_stream *s;
	struct vm_fmt_reader r;
	struct vm_fmt_record rec;
	int err;

	memset(p, 0, sizeof(*p));
	cr_assert_eq(
		vfiomig_stream_mem_fixed_new(ctx, (void *)buf, len, VFIOMIG_STREAM_MEM_READ, &s),
		0);
	vm_fmt_reader_init(&r, s);
	if (max_record)
		r.max_record = max_record;
	err = vm_fmt_read_header(&r, &p->h);
	while (!err) {
		err = vm_fmt_next(&r, &rec);
		if (err)
			break;
		if (p->n < 64) {
			struct seen *sn = &p->rec[p->n++];

			sn->type = rec.type;
			sn->phase = rec.phase;
			sn->marker = rec.marker;
			sn->size = rec.size;
			sn->offset = rec.offset;
			/* Optional records are left for next() to skip. */
			if (rec.type != VM_FMT_REC_OPTIONAL && rec.size <= sizeof(sn->body))
				err = vm_fmt_read_body(&r, sn->body, (size_t)rec.size);
		}
		if (rec.type == VM_FMT_REC_TRAILER)
			break;
		if (rec.type == VM_FMT_REC_CANCEL) {
			p->cancel_err = r.cancel_err;
			memcpy(p->cancel_reason, r.cancel_reason, sizeof(p->cancel_reason));
			break;
		}
	}
	p->consumed = vfiomig_stream_bytes_read(s);
	vfiomig_stream_free(s);
	return err;
}

/* A hand-built stream, for what the writer refuses to produce. */
struct raw {
	unsigned char b[8192];
	size_t len;
	size_t hlen;
	uint64_t records, bytes;
};

static void raw_header(struct raw *r, const struct vm_fmt_header *h)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;

	memset(r, 0, sizeof(*r));
	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, r->b, sizeof(r->b), 0, &s), 0);
	vm_fmt_writer_init(&w, s);
	cr_assert_eq(vm_fmt_write_header(&w, h), 0);
	r->len = r->hlen = (size_t)w.offset;
	vfiomig_stream_free(s);
}

static void raw_fix_header_crc(struct raw *r)
{
	put32(r->b + r->hlen - 4, vm_crc32c(0, r->b, r->hlen - 4));
}

static void raw_u64(struct raw *r, uint64_t v)
{
	put64(r->b + r->len, v);
	r->len += 8;
}

static void raw_sized(struct raw *r, uint64_t marker, const void *body, size_t n)
{
	raw_u64(r, marker);
	raw_u64(r, n);
	memcpy(r->b + r->len, body, n);
	r->len += n;
	if (marker == VM_FMT_DEV_DATA_STATE) {
		r->records++;
		r->bytes += n;
	}
}

static void raw_data(struct raw *r, size_t n)
{
	unsigned char body[256];

	fill(body, n, 9);
	raw_sized(r, VM_FMT_DEV_DATA_STATE, body, n);
}

/* The trailer exactly as the format says, over whatever came before. */
static void raw_trailer(struct raw *r)
{
	uint32_t crc = vm_crc32c(0, r->b, r->len);
	size_t t = r->len;

	raw_u64(r, VM_FMT_TRAILER);
	raw_u64(r, VM_FMT_TRAILER_LEN);
	raw_u64(r, t);
	raw_u64(r, r->records);
	raw_u64(r, r->bytes);
	put32(r->b + r->len, crc);
	put32(r->b + r->len + 4, vm_crc32c(0, r->b + t, r->len + 4 - t));
	r->len += 8;
}

/* header, empty setup, stop-copy with one data record, trailer */
static void raw_minimal(struct raw *r)
{
	struct vm_fmt_header h = pci_header();

	raw_header(r, &h);
	raw_u64(r, VM_FMT_DEV_SETUP_STATE);
	raw_u64(r, VM_FMT_END_OF_STATE);
	raw_u64(r, VM_FMT_STOPCOPY_STATE);
	raw_data(r, 5);
	raw_u64(r, VM_FMT_END_OF_STATE);
	raw_trailer(r);
}

/* A stream using every record kind, written by the writer. */
static void write_full(struct vm_fmt_writer *w)
{
	struct vm_fmt_header h = pci_header();
	unsigned char big[5000], small[100];

	fill(big, sizeof(big), 1);
	fill(small, sizeof(small), 2);
	cr_assert_eq(vm_fmt_write_header(w, &h), 0);
	cr_assert_eq(vm_fmt_begin_phase(w, VM_FMT_PHASE_SETUP), 0);
	cr_assert_eq(vm_fmt_write_optional(w, 0xffffffffef110007ull, "opt", 3), 0);
	cr_assert_eq(vm_fmt_end_phase(w), 0);
	cr_assert_eq(vm_fmt_begin_phase(w, VM_FMT_PHASE_PRECOPY), 0);
	cr_assert_eq(vm_fmt_write_data(w, small, sizeof(small)), 0);
	cr_assert_eq(vm_fmt_begin_data(w, sizeof(big)), 0);
	for (size_t off = 0; off < sizeof(big); off += 1000)
		cr_assert_eq(vm_fmt_write_body(w, big + off, 1000), 0);
	cr_assert_eq(vm_fmt_write_init_data_sent(w), 0);
	cr_assert_eq(vm_fmt_end_phase(w), 0);
	cr_assert_eq(vm_fmt_begin_phase(w, VM_FMT_PHASE_PRECOPY), 0);
	cr_assert_eq(vm_fmt_write_data(w, NULL, 0), 0);
	cr_assert_eq(vm_fmt_end_phase(w), 0);
	cr_assert_eq(vm_fmt_begin_phase(w, VM_FMT_PHASE_STOPCOPY), 0);
	cr_assert_eq(vm_fmt_write_data(w, small, 50), 0);
	cr_assert_eq(vm_fmt_write_config(w, "CONFIG", 6), 0);
	cr_assert_eq(vm_fmt_end_phase(w), 0);
	cr_assert_eq(vm_fmt_write_trailer(w), 0);
}

/* A short stream (one of each common record), its bytes copied to buf. */
static size_t small_stream(unsigned char *buf, size_t cap)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = pci_header();
	size_t len;

	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, buf, cap, 0, &s), 0);
	vm_fmt_writer_init(&w, s);
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), 0);
	cr_assert_eq(vm_fmt_write_data(&w, "abcdefgh", 8), 0);
	cr_assert_eq(vm_fmt_write_init_data_sent(&w), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY), 0);
	cr_assert_eq(vm_fmt_write_optional(&w, 0xffffffffef110003ull, "zz", 2), 0);
	cr_assert_eq(vm_fmt_write_data(&w, "0123", 4), 0);
	cr_assert_eq(vm_fmt_write_config(&w, "cfg", 3), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_write_trailer(&w), 0);
	len = (size_t)w.offset;
	vfiomig_stream_free(s);
	return len;
}

/* ---------------------------------------------------------------- CRC32C */

TestSuite(crc32c);

/* Every version of the library, each checked against the others below. */
static uint32_t (*const crc32c_impls[])(uint32_t, const void *, size_t) = {
	vm_crc32c,
	vm_crc32c_sw,
	vm_crc32c_hw,
	vm_crc32c_hw_1way,
};
static const char *const crc32c_impl_names[] = { "vm_crc32c", "_sw", "_hw", "_hw_1way" };
#define CRC32C_NIMPLS (sizeof(crc32c_impls) / sizeof(crc32c_impls[0]))

/*
 * A bit at a time, from the definition: a reference that shares neither
 * code nor tables with the library.
 */
static uint32_t crc32c_bitwise(uint32_t crc, const unsigned char *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int b = 0; b < 8; b++)
			crc = (crc >> 1) ^ (0x82f63b78u & (0u - (crc & 1u)));
	}
	return ~crc;
}

/* xorshift64: random bytes a failure can be reproduced from (its seed). */
static uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void fill_random(unsigned char *p, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(xorshift64(&seed) >> 56);
}

Test(crc32c, standard_check_value)
{
	static const char check[] = "123456789";

	for (size_t i = 0; i < CRC32C_NIMPLS; i++) {
		cr_assert_eq(crc32c_impls[i](0, check, 9), 0xe3069283u, "%s", crc32c_impl_names[i]);
		cr_assert_eq(crc32c_impls[i](0, check, 0), 0, "%s", crc32c_impl_names[i]);
	}
#if defined(__x86_64__)
	cr_assert_eq(vm_crc32c_hw_available(), __builtin_cpu_supports("sse4.2") != 0);
#endif
}

/*
 * The tests below compare the versions with each other; this one makes
 * sure the version under test is the one the CPU allows, so that on a
 * machine with SSE4.2 and PCLMULQDQ they do test the interleaved path.
 */
Test(crc32c, the_fastest_version_for_this_cpu_is_chosen)
{
	const char *want = "slice-by-8";

#if defined(__x86_64__)
	__builtin_cpu_init();
	if (__builtin_cpu_supports("sse4.2"))
		want = __builtin_cpu_supports("pclmul") ? "sse4.2 3-way, pclmulqdq combine"
							: "sse4.2 single chain";
#endif
	cr_assert_str_eq(vm_crc32c_impl_name(), want);
}

/* The iSCSI vectors (RFC 3720, B.4). */
Test(crc32c, rfc3720_vectors)
{
	unsigned char zero[32] = { 0 }, ones[32], inc[32], dec[32];

	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++) {
		inc[i] = (unsigned char)i;
		dec[i] = (unsigned char)(31 - i);
	}
	for (size_t i = 0; i < CRC32C_NIMPLS; i++) {
		uint32_t (*f)(uint32_t, const void *, size_t) = crc32c_impls[i];

		cr_assert_eq(f(0, zero, 32), 0x8a9136aau, "%s", crc32c_impl_names[i]);
		cr_assert_eq(f(0, ones, 32), 0x62a8ab43u, "%s", crc32c_impl_names[i]);
		cr_assert_eq(f(0, inc, 32), 0x46dd794eu, "%s", crc32c_impl_names[i]);
		cr_assert_eq(f(0, dec, 32), 0x113fdb5cu, "%s", crc32c_impl_names[i]);
	}
}

/*
 * Long check values, long enough for every block size of the interleaved
 * version (computed a bit at a time by a separate program, and here by
 * crc32c_bitwise).
 */
Test(crc32c, long_check_values)
{
	size_t n = 1u << 20;
	unsigned char *buf = malloc(n);

	cr_assert_not_null(buf);
	memset(buf, 0, 4096);
	cr_assert_eq(crc32c_bitwise(0, buf, 4096), 0x98f94189u);
	for (size_t i = 0; i < CRC32C_NIMPLS; i++)
		cr_assert_eq(crc32c_impls[i](0, buf, 4096), 0x98f94189u, "%s 4096 zeros",
			     crc32c_impl_names[i]);
	memset(buf, 0xff, 65537);
	cr_assert_eq(crc32c_bitwise(0, buf, 65537), 0x79b5d0dcu);
	for (size_t i = 0; i < CRC32C_NIMPLS; i++)
		cr_assert_eq(crc32c_impls[i](0, buf, 65537), 0x79b5d0dcu, "%s 65537 x 0xff",
			     crc32c_impl_names[i]);
	for (size_t i = 0; i < n; i++)
		buf[i] = (unsigned char)i;
	cr_assert_eq(crc32c_bitwise(0, buf, n), 0x7d25b26du);
	for (size_t i = 0; i < CRC32C_NIMPLS; i++)
		cr_assert_eq(crc32c_impls[i](0, buf, n), 0x7d25b26du, "%s 1 MiB of i & 0xff",
			     crc32c_impl_names[i]);
	free(buf);
}

Test(crc32c, tables_match_their_definition)
{
	for (unsigned i = 0; i < 256; i++) {
		uint32_t c = i;

		for (unsigned k = 0; k < 8; k++) {
			/* Shift one byte (8 bits) through the register per table level. */
			for (int b = 0; b < 8; b++)
				c = (c >> 1) ^ (0x82f63b78u & (0u - (c & 1u)));
			cr_assert_eq(vm_crc32c_table[k][i], c, "table %u entry %u", k, i);
		}
	}
}

/*
 * Every length from 0 to 2100 (the single chain, the smaller blocks of
 * the interleaved version alone and with every remainder) at 16
 * alignments, from a register that is not the initial one.
 */
Test(crc32c, every_length_to_2100_at_16_alignments_equals_software)
{
	static unsigned char buf[2100 + 16];

	fill_random(buf, sizeof(buf), 1);
	for (size_t align = 0; align < 16; align++) {
		for (size_t len = 0; len <= 2100; len++) {
			uint32_t start = (uint32_t)(len * 0x9e3779b9u + align);
			uint32_t want = vm_crc32c_sw(start, buf + align, len);

			for (size_t i = 0; i < CRC32C_NIMPLS; i++)
				cr_assert_eq(crc32c_impls[i](start, buf + align, len), want,
					     "%s align %zu len %zu", crc32c_impl_names[i], align,
					     len);
		}
	}
}

static void assert_crc32c_equal_software(const unsigned char *buf, size_t len, uint32_t start)
{
	uint32_t want = vm_crc32c_sw(start, buf, len);

	for (size_t i = 0; i < CRC32C_NIMPLS; i++)
		cr_assert_eq(crc32c_impls[i](start, buf, len), want, "%s align %zu len %zu",
			     crc32c_impl_names[i], (size_t)((uintptr_t)buf & 7), len);
}

/*
 * The interleaved version cuts buffers into blocks of 3 x 64 KiB, then
 * 3 x 4 KiB, 3 x 512 and 3 x 64 bytes. Lengths on each side of 1 to 4 of
 * each block size (1 byte under a block is the most blocks of the smaller
 * sizes and the longest tail), and a block of each of the two largest
 * sizes followed by a spread of remainders.
 */
Test(crc32c, lengths_around_every_block_size_equal_software)
{
	static const size_t blocks[] = { 3 * 64, 3 * 512, 3 * 4096, 3 * 65536 };
	size_t max = 4 * blocks[3] + 16;
	unsigned char *buf = malloc(max);

	cr_assert_not_null(buf);
	fill_random(buf, max, 2);
	for (size_t b = 0; b < sizeof(blocks) / sizeof(blocks[0]); b++)
		for (size_t k = 1; k <= 4; k++)
			for (size_t d = 0; d < 5; d++)
				assert_crc32c_equal_software(buf + ((k * 5 + d) & 7),
							     k * blocks[b] + d - 2,
							     (uint32_t)(b * 1000 + k * 10 + d));
	for (size_t extra = 0; extra < blocks[2]; extra += 67)
		assert_crc32c_equal_software(buf + (extra & 7), blocks[2] + extra, 0);
	for (size_t extra = 0; extra < blocks[3]; extra += 4099)
		assert_crc32c_equal_software(buf + (extra & 7), blocks[3] + extra, 0);
	free(buf);
}

Test(crc32c, random_buffers_up_to_4_mib_equal_software)
{
	size_t max = 4u << 20;
	unsigned char *buf = malloc(max + 64);
	uint64_t s = 0x9d2c5680a5d1b3f7ull;

	cr_assert_not_null(buf);
	fill_random(buf, max + 64, 3);
	for (int r = 0; r < 48; r++) {
		/* Sizes spread over every power of two up to 4 MiB. */
		size_t len = (size_t)(xorshift64(&s) % ((max >> (r % 12)) + 1));
		size_t off = (size_t)(xorshift64(&s) % 64);
		uint32_t start = (uint32_t)xorshift64(&s);
		uint32_t want = vm_crc32c_sw(start, buf + off, len);

		cr_assert_eq(vm_crc32c(start, buf + off, len), want, "round %d len %zu off %zu", r,
			     len, off);
		cr_assert_eq(vm_crc32c_hw_1way(start, buf + off, len), want,
			     "round %d len %zu off %zu", r, len, off);
	}
	/* And the whole of it against the definition. */
	cr_assert_eq(vm_crc32c(0, buf + 1, max), crc32c_bitwise(0, buf + 1, max));
	free(buf);
}

Test(crc32c, chaining_equals_one_pass)
{
	size_t n = 2 * 3 * 65536 + 13;
	unsigned char *buf = malloc(n);
	const size_t cuts[] = {
		0, 1, 7, 8, 191, 192, 193, 1535, 1536, 1537, 12287, 12288, 12289,
		196607, 196608, 196609, n - 1, n,
	};
	uint32_t whole;

	cr_assert_not_null(buf);
	fill(buf, n, 3);
	whole = vm_crc32c_sw(0, buf, n);
	cr_assert_eq(vm_crc32c(0, buf, n), whole);
	for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]) + n / 4999; c++) {
		size_t cut = c < sizeof(cuts) / sizeof(cuts[0]) ? cuts[c] : (c * 4999) % n;
		size_t cut2 = cut + (n - cut) / 3;

		cr_assert_eq(vm_crc32c(vm_crc32c(0, buf, cut), buf + cut, n - cut), whole, "cut %zu",
			     cut);
		cr_assert_eq(vm_crc32c_sw(vm_crc32c(0, buf, cut), buf + cut, n - cut), whole,
			     "cut %zu", cut);
		cr_assert_eq(vm_crc32c(vm_crc32c_hw_1way(0, buf, cut), buf + cut, n - cut), whole,
			     "cut %zu", cut);
		/* Three pieces: a register from a chained call goes on through the blocks. */
		cr_assert_eq(vm_crc32c(vm_crc32c(vm_crc32c(0, buf, cut), buf + cut, cut2 - cut),
				       buf + cut2, n - cut2),
			     whole, "cuts %zu %zu", cut, cut2);
	}
	free(buf);
}

struct crc32c_race {
	const unsigned char *buf;
	size_t len;
	pthread_barrier_t *go;
	uint32_t got;
};

static void *crc32c_race_thread(void *arg)
{
	struct crc32c_race *r = arg;

	pthread_barrier_wait(r->go);
	r->got = vm_crc32c(0, r->buf, r->len);
	return NULL;
}

/*
 * The version is chosen at the first call; threads making their first
 * calls at once must all get the right CRC (and TSan, in its build, must
 * find no race). Criterion runs each test in a new process, so these are
 * the first calls.
 */
Test(crc32c, first_calls_from_many_threads_agree)
{
	enum { NTHREADS = 8 };
	static unsigned char buf[50000];
	struct crc32c_race r[NTHREADS];
	pthread_t t[NTHREADS];
	pthread_barrier_t go;

	fill_random(buf, sizeof(buf), 4);
	cr_assert_eq(pthread_barrier_init(&go, NULL, NTHREADS), 0);
	for (int i = 0; i < NTHREADS; i++) {
		r[i] = (struct crc32c_race){ .buf = buf, .len = sizeof(buf) - (size_t)i * 999,
					     .go = &go };
		cr_assert_eq(pthread_create(&t[i], NULL, crc32c_race_thread, &r[i]), 0);
	}
	for (int i = 0; i < NTHREADS; i++) {
		cr_assert_eq(pthread_join(t[i], NULL), 0);
		cr_assert_eq(r[i].got, crc32c_bitwise(0, buf, r[i].len), "thread %d", i);
	}
	pthread_barrier_destroy(&go);
}

/* ---------------------------------------------------------- round trips */

TestSuite(format, .init = leak_baseline);

Test(format, roundtrip_every_record_kind)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	static struct parsed p;
	struct vm_fmt_header h = pci_header();
	unsigned char big[5000], small[100];
	const void *data;
	size_t len;

	fill(big, sizeof(big), 1);
	fill(small, sizeof(small), 2);
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	vm_fmt_writer_init(&w, s);
	write_full(&w);
	cr_assert_eq(w.data_records, 4);
	cr_assert_eq(w.data_bytes, 5150);
	cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
	cr_assert_eq(len, w.offset);

	cr_assert_eq(parse(NULL, data, len, 0, &p), 0);
	cr_assert_eq(p.consumed, len, "the reader stops exactly after the trailer");
	cr_assert_eq(p.h.version, 1);
	cr_assert_eq(p.h.protocol, h.protocol);
	cr_assert_eq(p.h.flags, 0);
	/* Field by field: the padding of a compound literal is not specified. */
	cr_assert_eq(p.h.id.kind, h.id.kind);
	cr_assert_eq(p.h.id.vendor, h.id.vendor);
	cr_assert_eq(p.h.id.device, h.id.device);
	cr_assert_eq(p.h.id.subvendor, h.id.subvendor);
	cr_assert_eq(p.h.id.subdevice, h.id.subdevice);
	cr_assert_eq(p.h.id.class_code, h.id.class_code);
	cr_assert_str_eq(p.h.id.mdev_type, h.id.mdev_type);
	cr_assert_str_eq(p.h.id.driver, h.id.driver);

	static const struct {
		enum vm_fmt_rec_type type;
		uint32_t phase;
		uint64_t size;
	} want[] = {
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_SETUP, 0 },
		{ VM_FMT_REC_OPTIONAL, VM_FMT_PHASE_SETUP, 3 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_SETUP, 0 },
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_PRECOPY, 0 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_PRECOPY, 100 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_PRECOPY, 5000 },
		{ VM_FMT_REC_INIT_DATA_SENT, VM_FMT_PHASE_PRECOPY, 0 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_PRECOPY, 0 },
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_PRECOPY, 0 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_PRECOPY, 0 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_PRECOPY, 0 },
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_STOPCOPY, 0 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_STOPCOPY, 50 },
		{ VM_FMT_REC_CONFIG, VM_FMT_PHASE_STOPCOPY, 6 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_STOPCOPY, 0 },
		{ VM_FMT_REC_TRAILER, VM_FMT_PHASE_STOPCOPY, 0 },
	};
	cr_assert_eq(p.n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < p.n; i++) {
		cr_assert_eq(p.rec[i].type, want[i].type, "record %zu", i);
		cr_assert_eq(p.rec[i].phase, want[i].phase, "record %zu", i);
		cr_assert_eq(p.rec[i].size, want[i].size, "record %zu", i);
	}
	cr_assert_eq(p.rec[1].marker, 0xffffffffef110007ull);
	cr_assert(memcmp(p.rec[4].body, small, 100) == 0);
	cr_assert(memcmp(p.rec[12].body, small, 50) == 0);
	cr_assert(memcmp(p.rec[13].body, "CONFIG", 6) == 0);
	cr_assert_eq(p.rec[0].offset, 48 + 8,
		     "setup follows the header (strings \"\" and vfio-pci)");
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(format, bodies_read_in_pieces_or_skipped)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_reader r;
	struct vm_fmt_record rec;
	struct vm_fmt_header h;
	unsigned char big[5000], got[5000];

	fill(big, sizeof(big), 1);
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	vm_fmt_writer_init(&w, s);
	write_full(&w);

	vm_fmt_reader_init(&r, s);
	cr_assert_eq(vm_fmt_read_header(&r, &h), 0);
	do
		cr_assert_eq(vm_fmt_next(&r, &rec), 0);
	while (rec.type != VM_FMT_REC_DATA);
	/* The 100-byte record: read 10, leave the rest for next() to skip. */
	cr_assert_eq(vm_fmt_read_body(&r, got, 10), 0);
	cr_assert_eq(vm_fmt_read_body(&r, got, 91), -EINVAL, "past the body's end");
	cr_assert_eq(vm_fmt_next(&r, &rec), 0);
	cr_assert_eq(rec.type, VM_FMT_REC_DATA);
	cr_assert_eq(rec.size, 5000);
	/* The 5000-byte record in 7-byte pieces, as a device would take it. */
	for (size_t off = 0; off < 5000; off += 7) {
		size_t n = 5000 - off < 7 ? 5000 - off : 7;

		cr_assert_eq(vm_fmt_read_body(&r, got + off, n), 0);
	}
	cr_assert(memcmp(got, big, sizeof(big)) == 0);
	do
		cr_assert_eq(vm_fmt_next(&r, &rec), 0);
	while (rec.type != VM_FMT_REC_CONFIG);
	cr_assert_eq(rec.size, 6);
	cr_assert_eq(vm_fmt_read_body(&r, got, 6), 0);
	cr_assert(memcmp(got, "CONFIG", 6) == 0);
	cr_assert_eq(vm_fmt_read_body(&r, got, 1), -EINVAL, "nothing left of the body");
	cr_assert_eq(vm_fmt_read_body(&r, got, 0), 0, "an empty read of an empty rest");
	cr_assert_eq(vm_fmt_next(&r, &rec), 0);
	cr_assert_eq(rec.type, VM_FMT_REC_END);
	cr_assert_eq(vm_fmt_next(&r, &rec), 0);
	cr_assert_eq(rec.type, VM_FMT_REC_TRAILER, "skipped bodies still count for the trailer");
	cr_assert_eq(vm_fmt_next(&r, &rec), -EINVAL, "nothing after the trailer");
	vfiomig_stream_free(s);
	assert_no_leaks();
}

/* A writer on one thread, a reader on another, over a non-blocking pipe. */
struct pipe_writer {
	int fd;
	int ret;
};

static void *pipe_writer_thread(void *arg)
{
	struct pipe_writer *pw = arg;
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = pci_header();
	static unsigned char chunk[100000];

	fill(chunk, sizeof(chunk), 4);
	pw->ret = vfiomig_stream_fd_new(NULL, pw->fd, VFIOMIG_STREAM_FD_TAKE, &s);
	if (pw->ret)
		return NULL;
	vm_fmt_writer_init(&w, s);
	pw->ret = vm_fmt_write_header(&w, &h);
	if (!pw->ret)
		pw->ret = vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP);
	if (!pw->ret)
		pw->ret = vm_fmt_end_phase(&w);
	if (!pw->ret)
		pw->ret = vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY);
	for (int i = 0; i < 10 && !pw->ret; i++)
		pw->ret = vm_fmt_write_data(&w, chunk, sizeof(chunk));
	if (!pw->ret)
		pw->ret = vm_fmt_end_phase(&w);
	if (!pw->ret)
		pw->ret = vm_fmt_write_trailer(&w);
	vfiomig_stream_free(s);
	return NULL;
}

Test(format, streams_over_a_pipe_between_threads)
{
	struct pipe_writer pw;
	struct vfiomig_stream *s;
	struct vm_fmt_reader r;
	struct vm_fmt_record rec;
	struct vm_fmt_header h;
	unsigned char *got = malloc(100000), *want = malloc(100000);
	pthread_t th;
	int fds[2], n = 0;

	fill(want, 100000, 4);
	cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
	pw.fd = fds[1];
	cr_assert_eq(pthread_create(&th, NULL, pipe_writer_thread, &pw), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fds[0], VFIOMIG_STREAM_FD_TAKE, &s), 0);
	vm_fmt_reader_init(&r, s);
	cr_assert_eq(vm_fmt_read_header(&r, &h), 0);
	for (;;) {
		cr_assert_eq(vm_fmt_next(&r, &rec), 0);
		if (rec.type == VM_FMT_REC_TRAILER)
			break;
		if (rec.type == VM_FMT_REC_DATA) {
			cr_assert_eq(rec.size, 100000);
			cr_assert_eq(vm_fmt_read_body(&r, got, 100000), 0);
			cr_assert(memcmp(got, want, 100000) == 0);
			n++;
		}
	}
	cr_assert_eq(n, 10);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(pw.ret, 0);
	vfiomig_stream_free(s);
	free(got);
	free(want);
	assert_no_leaks();
}

/* ----------------------------------------------------------- the writer */

Test(format, writer_enforces_the_grammar)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = pci_header();
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	cr_assert_eq(vfiomig_stream_mem_new(ctx, &s), 0);
	vm_fmt_writer_init(&w, s);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), -EINVAL, "no header yet");
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL, "header twice");
	cr_assert_eq(vm_fmt_write_data(&w, "x", 1), -EINVAL, "data outside a phase");
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), -EINVAL, "setup comes first");
	cr_assert_eq(vm_fmt_end_phase(&w), -EINVAL, "no phase to end");
	cr_assert_eq(vm_fmt_begin_phase(&w, 7), -EINVAL, "unknown phase");
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
	cr_assert_eq(vm_fmt_write_data(&w, "x", 1), -EINVAL, "no data in setup");
	cr_assert_eq(vm_fmt_write_init_data_sent(&w), -EINVAL, "only in pre-copy");
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY), -EINVAL, "a phase is open");
	cr_assert_eq(vm_fmt_write_optional(&w, VM_FMT_DEV_DATA_STATE, "x", 1), -EINVAL,
		     "not an optional marker");
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), -EINVAL, "setup once");
	cr_assert_eq(vm_fmt_write_trailer(&w), -EINVAL, "trailer before stop-copy");
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), 0);
	cr_assert_eq(vm_fmt_write_init_data_sent(&w), 0);
	cr_assert_eq(vm_fmt_write_init_data_sent(&w), -EINVAL, "once");
	cr_assert_eq(vm_fmt_begin_data(&w, 10), 0);
	cr_assert_eq(vm_fmt_write_body(&w, "12345", 5), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), -EINVAL, "body incomplete");
	cr_assert(strstr(lb.last, "still needs 5 bytes") != NULL, "%s", lb.last);
	cr_assert_eq(vm_fmt_write_body(&w, "1234567", 7), -EINVAL, "body overrun");
	cr_assert_eq(vm_fmt_write_body(&w, "67890", 5), 0);
	cr_assert_eq(vm_fmt_write_body(&w, "x", 1), -EINVAL, "nothing left");
	cr_assert_eq(vm_fmt_write_config(&w, "c", 1), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY), 0);
	cr_assert_eq(vm_fmt_write_init_data_sent(&w), -EINVAL, "not in stop-copy");
	cr_assert_eq(vm_fmt_write_config(&w, "c", 1), -EINVAL, "config once");
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), -EINVAL, "stop-copy was last");
	cr_assert_eq(vm_fmt_write_trailer(&w), 0);
	cr_assert_eq(vm_fmt_write_trailer(&w), -EINVAL, "trailer once");
	cr_assert_eq(w.err, 0, "misuse writes nothing and does not fail the writer");
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format, writer_refuses_bad_headers)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h;

	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	vm_fmt_writer_init(&w, s);
	h = pci_header();
	h.id.kind = 3;
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL);
	h = pci_header();
	h.protocol = 3;
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL);
	h = pci_header();
	h.flags = 1;
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL);
	h = pci_header();
	h.id.class_code = 0x1000000;
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL);
	h = pci_header();
	strcpy(h.id.driver, "bad\nname");
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL);
	h = pci_header();
	memset(h.id.mdev_type, 'a', sizeof(h.id.mdev_type)); /* no NUL: 256 bytes */
	cr_assert_eq(vm_fmt_write_header(&w, &h), -EINVAL);
	cr_assert_eq(w.offset, 0);
	cr_assert_eq(vfiomig_stream_bytes_written(s), 0, "nothing written");
	/* The longest strings fit. */
	h = pci_header();
	memset(h.id.mdev_type, 'a', VM_FMT_STR_MAX);
	h.id.mdev_type[VM_FMT_STR_MAX] = '\0';
	memset(h.id.driver, 'b', VM_FMT_STR_MAX);
	h.id.driver[VM_FMT_STR_MAX] = '\0';
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(w.offset, 48 + 2 * VM_FMT_STR_MAX);
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(format, writer_refuses_records_over_the_limit)
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = pci_header();

	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	vm_fmt_writer_init(&w, s);
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY), 0);
	cr_assert_eq(vm_fmt_begin_data(&w, VM_FMT_RECORD_MAX + 1), -EFBIG);
	cr_assert_eq(w.data_records, 0);
	cr_assert_eq(vm_fmt_write_optional(&w, 0xffffffffef110000ull, NULL, SIZE_MAX), -EFBIG);
	cr_assert_eq(vm_fmt_write_data(&w, "ok", 2), 0, "the writer is still usable");
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(format, writer_stream_failure_is_sticky)
{
	unsigned char buf[60];
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = pci_header();

	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, buf, sizeof(buf), 0, &s), 0);
	vm_fmt_writer_init(&w, s);
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), -ENOSPC);
	cr_assert_eq(w.err, -ENOSPC);
	cr_assert_eq(vm_fmt_end_phase(&w), -ENOSPC);
	cr_assert_eq(vm_fmt_write_trailer(&w), -ENOSPC);
	cr_assert_eq(vm_fmt_write_body(&w, "x", 1), -ENOSPC);
	vfiomig_stream_free(s);
	assert_no_leaks();
}

/* ------------------------------------------------------ reader refusals */

TestSuite(format_refuses, .init = leak_baseline);

Test(format_refuses, bad_magic)
{
	struct raw r;
	static struct parsed p;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	raw_minimal(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), 0);
	r.b[1] = 'W';
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "not a libvfiomig stream (magic 89 57 46") != NULL, "%s",
		  lb.last);
	cr_assert_eq(p.consumed, 16, "nothing read past the fixed start");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, future_and_zero_versions)
{
	struct raw r;
	static struct parsed p;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	raw_minimal(&r);
	put32(r.b + 8, 2);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EPROTONOSUPPORT);
	cr_assert_str_eq(lb.last,
			 "memory stream (read-only): stream format: format version 2, this "
			 "library reads up to 1: written by a newer libvfiomig?: Protocol "
			 "not supported");
	put32(r.b + 8, 0);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, absurd_header_lengths_before_reading_them)
{
	static const uint32_t bad[] = {
		0, 16, VM_FMT_HDR_MIN - 1, VM_FMT_HDR_MAX + 1, 0xffffffffu,
	};
	struct raw r;
	static struct parsed p;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		raw_minimal(&r);
		put32(r.b + 12, bad[i]);
		cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG, "length %u", bad[i]);
		cr_assert(strstr(lb.last, "out of range") != NULL, "%s", lb.last);
		cr_assert_eq(p.consumed, 16);
	}
	/* A plausible but wrong length fails the header CRC. */
	raw_minimal(&r);
	put32(r.b + 12, (uint32_t)r.hlen + 8);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "header CRC32C") != NULL, "%s", lb.last);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, corrupt_header_fields)
{
	struct raw r;
	static struct parsed p;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	/* Each case has a correct header CRC: the field check itself must refuse. */
	raw_minimal(&r);
	r.b[35] = 1; /* the reserved field is covered by the CRC, not interpreted */
	raw_fix_header_crc(&r);
	r.len = r.hlen;
	r.records = r.bytes = 0;
	raw_u64(&r, VM_FMT_DEV_SETUP_STATE);
	raw_u64(&r, VM_FMT_END_OF_STATE);
	raw_u64(&r, VM_FMT_STOPCOPY_STATE);
	raw_u64(&r, VM_FMT_END_OF_STATE);
	raw_trailer(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), 0, "reserved bits are ignored");

	raw_minimal(&r);
	put32(r.b + 16, 3);
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EPROTONOSUPPORT);
	cr_assert(strstr(lb.last, "migration protocol 3 unknown") != NULL, "%s", lb.last);

	raw_minimal(&r);
	put32(r.b + 20, 0x00000004); /* an incompatible feature */
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EPROTONOSUPPORT);
	cr_assert(strstr(lb.last, "required feature flags 0x0004") != NULL, "%s", lb.last);

	raw_minimal(&r);
	r.b[25] = 9; /* kind */
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EPROTONOSUPPORT);

	raw_minimal(&r);
	r.b[36] = 1; /* class code over 24 bits */
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);

	/* mdev type "" then driver "vfio-pci": make the driver length 256, 9 (too long), 0x7f. */
	raw_minimal(&r);
	r.b[42] = 0x01;
	r.b[43] = 0x00;
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "driver name of 256 bytes") != NULL, "%s", lb.last);
	raw_minimal(&r);
	r.b[43] = 9;
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "runs past the header") != NULL, "%s", lb.last);
	raw_minimal(&r);
	r.b[44] = 0x7f;
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "not printable") != NULL, "%s", lb.last);
	raw_minimal(&r);
	r.b[40] = 0x00;
	r.b[41] = 0x20; /* an mdev type of 32 bytes runs past the header */
	raw_fix_header_crc(&r);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, unknown_mandatory_record)
{
	struct raw r;
	static struct parsed p;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	struct vm_fmt_header h = pci_header();
	char want[200];

	raw_header(&r, &h);
	raw_u64(&r, VM_FMT_DEV_SETUP_STATE);
	raw_u64(&r, 0xffffffffef100042ull);
	raw_u64(&r, 0);
	raw_u64(&r, VM_FMT_END_OF_STATE);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EPROTONOSUPPORT);
	snprintf(want, sizeof(want),
		 "unknown mandatory record 0xffffffffef100042 at stream offset %zu: written by a "
		 "newer libvfiomig?",
		 r.hlen + 8);
	cr_assert(strstr(lb.last, want) != NULL, "%s", lb.last);
	/* Anything outside our ranges is mandatory too (QEMU's next value included). */
	raw_header(&r, &h);
	raw_u64(&r, VM_FMT_DEV_SETUP_STATE);
	raw_u64(&r, 0xffffffffef100006ull);
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EPROTONOSUPPORT);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, nothing_about_optional_records_it_does_not_know)
{
	struct raw r;
	static struct parsed p;
	struct vm_fmt_header h = pci_header();
	unsigned char body[300];

	fill(body, sizeof(body), 5);
	raw_header(&r, &h);
	raw_u64(&r, VM_FMT_DEV_SETUP_STATE);
	raw_sized(&r, 0xffffffffef11ffffull, body, sizeof(body));
	raw_u64(&r, VM_FMT_END_OF_STATE);
	raw_u64(&r, VM_FMT_STOPCOPY_STATE);
	raw_sized(&r, 0xffffffffef110000ull, body, 0);
	raw_data(&r, 7);
	raw_u64(&r, VM_FMT_END_OF_STATE);
	raw_trailer(&r);
	cr_assert_eq(parse(NULL, r.b, r.len, 0, &p), 0);
	cr_assert_eq(p.rec[1].type, VM_FMT_REC_OPTIONAL);
	cr_assert_eq(p.rec[1].marker, 0xffffffffef11ffffull);
	cr_assert_eq(p.rec[1].size, 300);
	cr_assert_eq(p.rec[2].type, VM_FMT_REC_END, "next() skipped the body");
	cr_assert_eq(p.rec[4].type, VM_FMT_REC_OPTIONAL);
	cr_assert_eq(p.rec[5].type, VM_FMT_REC_DATA);
	cr_assert_eq(p.rec[5].size, 7);
	assert_no_leaks();
}

/*
 * A CANCEL record by hand, after an empty setup phase: errno, reason, the
 * CRC of everything before it, its own CRC; `size` other than 0 replaces
 * the size field (the body stays as it is). Returns the record's offset.
 */
static size_t raw_cancel(struct raw *r, uint32_t err, const char *reason, uint64_t size)
{
	struct vm_fmt_header h = pci_header();
	size_t rlen = strlen(reason), at, body;
	uint32_t prior;

	raw_header(r, &h);
	raw_u64(r, VM_FMT_DEV_SETUP_STATE);
	raw_u64(r, VM_FMT_END_OF_STATE);
	prior = vm_crc32c(0, r->b, r->len);
	at = r->len;
	raw_u64(r, VM_FMT_CANCEL);
	body = 4 + 2 + rlen + 4 + 4;
	raw_u64(r, size ? size : body);
	put32(r->b + r->len, err);
	r->b[r->len + 4] = (unsigned char)(rlen >> 8);
	r->b[r->len + 5] = (unsigned char)rlen;
	memcpy(r->b + r->len + 6, reason, rlen);
	put32(r->b + r->len + 6 + rlen, prior);
	put32(r->b + r->len + 10 + rlen, vm_crc32c(0, r->b + at, 16 + 10 + rlen));
	r->len += body;
	return at;
}

/*
 * A CANCEL is believed only when every field is: its CRCs can be right
 * and still carry an errno of 0 or beyond 4095, and a size below the
 * smallest CANCEL is refused before its body is read from the channel.
 */
Test(format_refuses, cancel_records_with_impossible_fields)
{
	static struct parsed p;
	struct raw r;
	size_t at;

	raw_cancel(&r, 4, "why", 0);
	cr_assert_eq(parse(NULL, r.b, r.len, 0, &p), 0);
	cr_assert_eq(p.rec[p.n - 1].type, VM_FMT_REC_CANCEL);
	cr_assert_eq(p.cancel_err, -4);
	cr_assert_str_eq(p.cancel_reason, "why");
	raw_cancel(&r, 4095, "", 0);
	cr_assert_eq(parse(NULL, r.b, r.len, 0, &p), 0);
	cr_assert_eq(p.cancel_err, -4095);

	raw_cancel(&r, 0, "why", 0);
	cr_assert_eq(parse(NULL, r.b, r.len, 0, &p), -EBADMSG, "errno 0 believed");
	raw_cancel(&r, 4096, "why", 0);
	cr_assert_eq(parse(NULL, r.b, r.len, 0, &p), -EBADMSG, "errno 4096 believed");

	/* 14 bytes is the smallest CANCEL (errno, empty reason, two CRCs): 13 is refused at once. */
	at = raw_cancel(&r, 4, "", VM_FMT_CANCEL_MIN - 1);
	r.len += 16; /* bytes after it, that must not be read */
	cr_assert_eq(parse(NULL, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert_eq(p.consumed, at + 16, "read %llu bytes of a CANCEL of impossible size",
		     (unsigned long long)(p.consumed - at - 16));
	assert_no_leaks();
}

/* The writer never puts an impossible errno into a CANCEL either. */
Test(format, writer_cancels_only_with_an_errno)
{
	static const int bad[] = { 0, 1, -4096, -100000 };
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = pci_header();

	for (size_t i = 0; i <= sizeof(bad) / sizeof(bad[0]); i++) {
		int err = i < sizeof(bad) / sizeof(bad[0]) ? bad[i] : -4095;

		cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
		vm_fmt_writer_init(&w, s);
		cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
		cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
		cr_assert_eq(vm_fmt_write_cancel(&w, err, "x"), err == -4095 ? 0 : -EINVAL,
			     "CANCEL with error %d", err);
		vfiomig_stream_free(s);
	}
	assert_no_leaks();
}

/* Return-path messages: a body shorter than its type needs, errno 0, a reason past the body. */
Test(format_refuses, return_path_messages_with_impossible_fields)
{
	unsigned char buf[VM_RP_MAX];
	struct vm_rp_msg m = { .type = VFIOMIG_RETURN_LOADED, .bytes = 1, .records = 2,
			       .data_bytes = 3, .crc = 4 }, out;
	uint32_t len;

	len = (uint32_t)vm_rp_encode(&m, buf) - VM_RP_HDR - VM_RP_CRC;
	cr_assert_eq(len, 28);
	cr_assert_eq(vm_rp_decode(buf, buf + VM_RP_HDR, len, &out), 0);
	cr_assert_eq(out.crc, 4);
	cr_assert_eq(vm_rp_decode(buf, buf + VM_RP_HDR, len - 1, &out), -EBADMSG,
		     "a LOADED one byte short was decoded");

	memset(&m, 0, sizeof(m));
	m.type = VFIOMIG_RETURN_FAILED;
	m.error = -EIO;
	snprintf(m.reason, sizeof(m.reason), "because");
	len = (uint32_t)vm_rp_encode(&m, buf) - VM_RP_HDR - VM_RP_CRC;
	cr_assert_eq(len, 14 + 7);
	cr_assert_eq(vm_rp_decode(buf, buf + VM_RP_HDR, len, &out), 0);
	cr_assert_eq(out.error, -EIO);
	cr_assert_str_eq(out.reason, "because");
	cr_assert_eq(vm_rp_decode(buf, buf + VM_RP_HDR, len - 1, &out), -EBADMSG,
		     "a reason running one byte past the body was decoded");
	put32(buf + VM_RP_HDR + 8, 0);
	cr_assert_eq(vm_rp_decode(buf, buf + VM_RP_HDR, len, &out), -EBADMSG,
		     "a FAILED with errno 0 was decoded");
	assert_no_leaks();
}

Test(format_refuses, records_out_of_grammar)
{
	struct raw r;
	static struct parsed p;
	struct vm_fmt_header h = pci_header();
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	static const struct {
		const char *why;
		uint64_t seq[8];
		const char *msg;
	} cases[] = {
		{ "data in setup",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_DEV_DATA_STATE },
		  "outside a pre-copy or stop-copy phase" },
		{ "data before any phase", { VM_FMT_DEV_DATA_STATE }, "outside" },
		{ "pre-copy before setup", { VM_FMT_PRECOPY_STATE }, "out of order" },
		{ "setup twice",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_DEV_SETUP_STATE },
		  "out of order" },
		{ "phase inside a phase",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_STOPCOPY_STATE },
		  "out of order" },
		{ "END_OF_STATE outside a phase",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_END_OF_STATE },
		  "outside a phase" },
		{ "INIT_DATA_SENT in stop-copy",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_STOPCOPY_STATE,
		    VM_FMT_INIT_DATA_SENT },
		  "outside a pre-copy round" },
		{ "INIT_DATA_SENT twice",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_PRECOPY_STATE,
		    VM_FMT_INIT_DATA_SENT, VM_FMT_END_OF_STATE, VM_FMT_PRECOPY_STATE,
		    VM_FMT_INIT_DATA_SENT },
		  "repeated" },
		{ "config twice",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_DEV_CONFIG_STATE, VM_FMT_END_OF_STATE,
		    VM_FMT_STOPCOPY_STATE, VM_FMT_DEV_CONFIG_STATE },
		  "repeated" },
		{ "optional outside a phase",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, 0xffffffffef110001ull },
		  "outside a phase" },
		{ "trailer inside a phase",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_STOPCOPY_STATE,
		    VM_FMT_TRAILER },
		  "inside an open phase" },
		{ "trailer without stop-copy",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_TRAILER },
		  "before the stop-copy phase" },
		{ "records after stop-copy",
		  { VM_FMT_DEV_SETUP_STATE, VM_FMT_END_OF_STATE, VM_FMT_STOPCOPY_STATE,
		    VM_FMT_END_OF_STATE, VM_FMT_PRECOPY_STATE },
		  "out of order" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		raw_header(&r, &h);
		for (size_t k = 0; k < 8 && cases[i].seq[k]; k++) {
			uint64_t m = cases[i].seq[k];

			if (m == VM_FMT_DEV_DATA_STATE || m == VM_FMT_DEV_CONFIG_STATE ||
			    VM_FMT_IS_OPTIONAL(m))
				raw_sized(&r, m, "ab", 2);
			else
				raw_u64(&r, m);
		}
		/* Enough zeros that a reader that does not refuse would go on reading. */
		memset(r.b + r.len, 0, 64);
		r.len += 64;
		cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG, "%s", cases[i].why);
		cr_assert(strstr(lb.last, cases[i].msg) != NULL, "%s: %s", cases[i].why, lb.last);
	}
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

/* Serves a header, then a data record claiming 1 TiB, then endless zeros. */
struct huge_src {
	unsigned char head[256];
	size_t head_len;
	uint64_t served;
};

static ssize_t huge_read(void *user, void *buf, size_t len)
{
	struct huge_src *h = user;

	if (h->served < h->head_len) {
		size_t n = h->head_len - (size_t)h->served;

		if (n > len)
			n = len;
		memcpy(buf, h->head + h->served, n);
		h->served += n;
		return (ssize_t)n;
	}
	memset(buf, 0, len);
	h->served += len;
	return (ssize_t)len;
}

Test(format_refuses, a_record_over_the_limit_before_reading_or_allocating_it)
{
	static const struct vfiomig_stream_ops ops = {
		.sz = sizeof(ops),
		.read = huge_read,
	};
	struct huge_src src = { 0 };
	struct vfiomig_stream *s;
	struct vm_fmt_reader r;
	struct vm_fmt_record rec;
	struct vm_fmt_header h = pci_header();
	struct raw raw;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	raw_header(&raw, &h);
	raw_u64(&raw, VM_FMT_DEV_SETUP_STATE);
	raw_u64(&raw, VM_FMT_END_OF_STATE);
	raw_u64(&raw, VM_FMT_STOPCOPY_STATE);
	raw_u64(&raw, VM_FMT_DEV_DATA_STATE);
	raw_u64(&raw, 1ull << 40);
	memcpy(src.head, raw.b, raw.len);
	src.head_len = raw.len;

	cr_assert_eq(vfiomig_stream_new(ctx, &ops, &src, &s), 0);
	vm_fmt_reader_init(&r, s);
	cr_assert_eq(vm_fmt_read_header(&r, &h), 0);
	for (int i = 0; i < 3; i++)
		cr_assert_eq(vm_fmt_next(&r, &rec), 0);
	cr_assert_eq(vm_fmt_next(&r, &rec), -EFBIG);
	cr_assert_eq(src.served, raw.len, "not one byte of the body was read");
	cr_assert(strstr(lb.last, "DEV_DATA_STATE record at stream offset") != NULL, "%s", lb.last);
	cr_assert(strstr(lb.last, "claims 1099511627776 bytes") != NULL, "%s", lb.last);
	cr_assert_eq(vm_fmt_next(&r, &rec), -EFBIG, "the reader stays failed");
	cr_assert_eq(src.served, raw.len);
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, records_over_a_lowered_limit)
{
	struct raw r;
	static struct parsed p;
	struct vm_fmt_header h = pci_header();
	unsigned char body[200] = { 0 };

	raw_header(&r, &h);
	raw_u64(&r, VM_FMT_DEV_SETUP_STATE);
	raw_u64(&r, VM_FMT_END_OF_STATE);
	raw_u64(&r, VM_FMT_STOPCOPY_STATE);
	raw_sized(&r, VM_FMT_DEV_DATA_STATE, body, 100);
	raw_sized(&r, VM_FMT_DEV_CONFIG_STATE, body, 101);
	raw_sized(&r, 0xffffffffef110009ull, body, 150);
	raw_u64(&r, VM_FMT_END_OF_STATE);
	raw_trailer(&r);
	cr_assert_eq(parse(NULL, r.b, r.len, 150, &p), 0);
	cr_assert_eq(parse(NULL, r.b, r.len, 149, &p), -EFBIG, "optional records are bounded too");
	cr_assert_eq(parse(NULL, r.b, r.len, 100, &p), -EFBIG, "config over the limit");
	cr_assert_eq(parse(NULL, r.b, r.len, 99, &p), -EFBIG);
	assert_no_leaks();
}

Test(format_refuses, trailer_mismatches)
{
	struct raw r;
	static struct parsed p;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	size_t t;
	static const struct {
		size_t field;   /* offset in the trailer body */
		const char *msg;
	} cases[] = {
		{ 7, "bytes precede it" },
		{ 15, "data records" },
		{ 23, "data bytes" },
		{ 27, "CRC32C of the" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		raw_minimal(&r);
		t = r.len - 48;
		r.b[t + 16 + cases[i].field] ^= 1;
		/* Keep the trailer's own CRC right, so the field check is what fires. */
		put32(r.b + r.len - 4, vm_crc32c(0, r.b + t, 44));
		cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
		cr_assert(strstr(lb.last, cases[i].msg) != NULL, "%s", lb.last);
	}
	raw_minimal(&r);
	r.b[r.len - 1] ^= 0x80;
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "corrupt trailer") != NULL, "%s", lb.last);
	/* A corrupt body byte: the stream CRC. */
	raw_minimal(&r);
	r.b[r.len - 48 - 8 - 1] ^= 0x10;
	cr_assert_eq(parse(ctx, r.b, r.len, 0, &p), -EBADMSG);
	cr_assert(strstr(lb.last, "corrupt stream") != NULL, "%s", lb.last);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(format_refuses, truncation_at_every_offset)
{
	unsigned char buf[1024];
	static struct parsed p;
	size_t len = small_stream(buf, sizeof(buf));
	int epipe = 0;

	cr_assert_eq(parse(NULL, buf, len, 0, &p), 0);
	for (size_t cut = 0; cut < len; cut++) {
		int err = parse(NULL, buf, cut, 0, &p);

		cr_assert(err == -EPIPE || err == -EBADMSG, "cut at %zu: %d", cut, err);
		epipe += err == -EPIPE;
	}
	cr_assert_eq(epipe, (int)len, "a shortened stream reads as truncated");
	assert_no_leaks();
}

Test(format_refuses, a_flipped_bit_anywhere)
{
	unsigned char buf[1024];
	static struct parsed p;
	size_t len = small_stream(buf, sizeof(buf));

	for (size_t i = 0; i < len; i++) {
		for (int bit = 0; bit < 8; bit++) {
			int err;

			buf[i] ^= (unsigned char)(1u << bit);
			err = parse(NULL, buf, len, 0, &p);
			buf[i] ^= (unsigned char)(1u << bit);
			cr_assert_lt(err, 0, "bit %d of byte %zu flipped, yet accepted", bit, i);
		}
	}
	cr_assert_eq(parse(NULL, buf, len, 0, &p), 0);
	assert_no_leaks();
}

Test(format_refuses, calls_out_of_order_and_stays_failed)
{
	struct raw r;
	struct vfiomig_stream *s;
	struct vm_fmt_reader rd;
	struct vm_fmt_record rec;
	struct vm_fmt_header h;

	raw_minimal(&r);
	r.b[0] = 0;
	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, r.b, r.len, VFIOMIG_STREAM_MEM_READ, &s),
		     0);
	vm_fmt_reader_init(&rd, s);
	cr_assert_eq(vm_fmt_next(&rd, &rec), -EINVAL, "header first");
	cr_assert_eq(vm_fmt_read_header(&rd, &h), -EBADMSG);
	cr_assert_eq(vm_fmt_read_header(&rd, &h), -EBADMSG, "sticky");
	cr_assert_eq(vm_fmt_next(&rd, &rec), -EBADMSG, "sticky");
	cr_assert_eq(vm_fmt_read_body(&rd, &h, 1), -EBADMSG, "sticky");
	vfiomig_stream_free(s);
	assert_no_leaks();
}

/* ------------------------------------------------------------- identity */

Test(format, identity_check)
{
	struct vm_fmt_identity a = pci_header().id, b = a;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	cr_assert_eq(vm_fmt_identity_check(ctx, NULL, &a, &b), 0);
	b.vendor = 0x1af4;
	b.device = 0x10f0;
	cr_assert_eq(vm_fmt_identity_check(ctx, "0000:03:00.0", &a, &b), -ENODEV);
	cr_assert_str_eq(lb.last, "0000:03:00.0: stream is for PCI 8086:1234, device is PCI "
				  "1af4:10f0: No such device");
	b = a;
	b.subdevice = 2;
	cr_assert_eq(vm_fmt_identity_check(ctx, "dev", &a, &b), -ENODEV);
	cr_assert(strstr(lb.last, "subsystem 8086:0001, class 020000), device is PCI 8086:1234 "
				  "(subsystem 8086:0002") != NULL,
		  "%s", lb.last);
	b = a;
	b.kind = VM_FMT_ID_MDEV;
	strcpy(b.mdev_type, "mtty-2");
	cr_assert_eq(vm_fmt_identity_check(ctx, "dev", &a, &b), -ENODEV);
	cr_assert(strstr(lb.last, "device is mdev mtty-2 8086:1234") != NULL, "%s", lb.last);
	a = b;
	strcpy(b.mdev_type, "mtty-1");
	cr_assert_eq(vm_fmt_identity_check(ctx, "dev", &a, &b), -ENODEV);
	cr_assert(strstr(lb.last, "mdev type mtty-2, device is mdev type mtty-1") != NULL, "%s",
		  lb.last);
	b = a;
	strcpy(b.driver, "mlx5_vfio_pci");
	cr_assert_eq(vm_fmt_identity_check(ctx, "dev", &a, &b), -ENODEV);
	cr_assert(
		strstr(lb.last, "saved through driver vfio-pci, device is bound to mlx5_vfio_pci"),
		"%s", lb.last);
	b.driver[0] = '\0';
	cr_assert_eq(vm_fmt_identity_check(ctx, "dev", &a, &b), 0, "unknown driver: not compared");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

/* --------------------------------------------------------- golden files */

TestSuite(golden, .init = leak_baseline);

static size_t load(const char *name, unsigned char *buf, size_t cap)
{
	char path[1024];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/streams/%s", TEST_DATA_DIR, name);
	f = fopen(path, "rb");
	cr_assert_not_null(f, "%s: %s", path, strerror(errno));
	n = fread(buf, 1, cap, f);
	cr_assert(feof(f), "%s is larger than expected", path);
	fclose(f);
	return n;
}

/* proto1-mdev-tiny.bin, byte for byte (also shown in docs/stream-format.md). */
static const unsigned char tiny_bytes[] = {
	0x89, 0x56, 0x46, 0x49, 0x4f, 0x4d, 0x49, 0x47, 0x00, 0x00, 0x00, 0x01,
	0x00, 0x00, 0x00, 0x3a, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x02, 0x43, 0x48, 0x32, 0x53, 0x43, 0x48, 0x32, 0x53, 0x00, 0x00,
	0x00, 0x07, 0x00, 0x02, 0x00, 0x06, 0x6d, 0x74, 0x74, 0x79, 0x2d, 0x32,
	0x00, 0x04, 0x6d, 0x74, 0x74, 0x79, 0x4d, 0x32, 0xbc, 0x05, 0xff, 0xff,
	0xff, 0xff, 0xef, 0x10, 0x00, 0x03, 0xff, 0xff, 0xff, 0xff, 0xef, 0x10,
	0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xef, 0x10, 0x00, 0x11, 0xff, 0xff,
	0xff, 0xff, 0xef, 0x10, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x10, 0x25, 0x30, 0x3b, 0x46, 0x51, 0x5c, 0x67, 0x72, 0x7d, 0x88,
	0x93, 0x9e, 0xa9, 0xb4, 0xbf, 0xca, 0xff, 0xff, 0xff, 0xff, 0xef, 0x10,
	0x00, 0x01, 0xff, 0xff, 0xff, 0xff, 0xef, 0x10, 0x00, 0xff, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x7a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x28, 0x90, 0xfb, 0xb7, 0x38, 0x8b,
	0x1b, 0xd8,
};

Test(golden, tiny_stream_is_byte_exact)
{
	unsigned char buf[4096];
	size_t len = load("proto1-mdev-tiny.bin", buf, sizeof(buf));

	cr_assert_eq(len, sizeof(tiny_bytes));
	cr_assert(memcmp(buf, tiny_bytes, len) == 0);
	/* Spot checks against the layout tables of the documentation. */
	cr_assert(memcmp(buf, "\x89VFIOMIG", 8) == 0);
	cr_assert_eq(get32(buf + 8), 1, "format version");
	cr_assert_eq(get32(buf + 12), 58, "header length");
	cr_assert_eq(get32(buf + 16), 1, "protocol v1");
	cr_assert_eq(get32(buf + 54), vm_crc32c(0, buf, 54), "header CRC");
	cr_assert_eq(get32(buf + len - 8), vm_crc32c(0, buf, len - 48), "stream CRC");
	cr_assert_eq(get32(buf + len - 4), vm_crc32c(0, buf + len - 48, 44), "trailer CRC");
}

Test(golden, tiny_stream_parses)
{
	unsigned char buf[4096];
	size_t len = load("proto1-mdev-tiny.bin", buf, sizeof(buf));
	static struct parsed p;
	unsigned char body[16];

	cr_assert_eq(parse(NULL, buf, len, 0, &p), 0);
	cr_assert_eq(p.h.version, 1);
	cr_assert_eq(p.h.protocol, VM_FMT_PROTO_V1);
	cr_assert_eq(p.h.flags, 0);
	cr_assert_eq(p.h.id.kind, VM_FMT_ID_MDEV);
	cr_assert_eq(p.h.id.vendor, 0x4348);
	cr_assert_eq(p.h.id.device, 0x3253);
	cr_assert_eq(p.h.id.subvendor, 0x4348);
	cr_assert_eq(p.h.id.subdevice, 0x3253);
	cr_assert_eq(p.h.id.class_code, 0x070002);
	cr_assert_str_eq(p.h.id.mdev_type, "mtty-2");
	cr_assert_str_eq(p.h.id.driver, "mtty");
	cr_assert_eq(p.n, 6);
	cr_assert_eq(p.rec[0].type, VM_FMT_REC_PHASE);
	cr_assert_eq(p.rec[0].phase, VM_FMT_PHASE_SETUP);
	cr_assert_eq(p.rec[1].type, VM_FMT_REC_END);
	cr_assert_eq(p.rec[2].type, VM_FMT_REC_PHASE);
	cr_assert_eq(p.rec[2].phase, VM_FMT_PHASE_STOPCOPY);
	cr_assert_eq(p.rec[3].type, VM_FMT_REC_DATA);
	cr_assert_eq(p.rec[3].size, 16);
	cr_assert_eq(p.rec[3].offset, 82);
	fill(body, 16, 1);
	cr_assert(memcmp(p.rec[3].body, body, 16) == 0);
	cr_assert_eq(p.rec[4].type, VM_FMT_REC_END);
	cr_assert_eq(p.rec[5].type, VM_FMT_REC_TRAILER);
	cr_assert_eq(p.rec[5].offset, 122);
	cr_assert_eq(p.consumed, len);
}

/* proto2-pci-cancelled.bin: a source that gave up in its first pre-copy round. */
Test(golden, cancelled_stream_parses_and_says_why)
{
	unsigned char buf[4096], body[24];
	size_t len = load("proto2-pci-cancelled.bin", buf, sizeof(buf));
	static struct parsed p;
	VFIOMIG_OPTS(stream_info, info);
	struct vfiomig_stream *in;

	cr_assert_eq(len, 175);
	cr_assert_eq(parse(NULL, buf, len, 0, &p), 0);
	cr_assert_eq(p.h.protocol, VM_FMT_PROTO_V2);
	cr_assert_str_eq(p.h.id.driver, "vfio-pci");
	cr_assert_eq(p.n, 5);
	cr_assert_eq(p.rec[2].type, VM_FMT_REC_PHASE);
	cr_assert_eq(p.rec[2].phase, VM_FMT_PHASE_PRECOPY);
	cr_assert_eq(p.rec[3].type, VM_FMT_REC_DATA);
	fill(body, 24, 8);
	cr_assert(memcmp(p.rec[3].body, body, 24) == 0);
	cr_assert_eq(p.rec[4].type, VM_FMT_REC_CANCEL);
	cr_assert_eq(p.rec[4].marker, VM_FMT_CANCEL);
	cr_assert_eq(p.rec[4].offset, 0x78);
	cr_assert_eq(p.cancel_err, -EINTR);
	cr_assert_str_eq(p.cancel_reason, "cancelled by the operator");
	cr_assert_eq(p.consumed, len, "nothing follows a CANCEL");
	/* The public inspection says the same. */
	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, buf, len, VFIOMIG_STREAM_MEM_READ, &in), 0);
	cr_assert_eq(vfiomig_stream_inspect(in, 0, &info, NULL, NULL), -ECANCELED);
	cr_assert_eq(info.cancelled, 1);
	cr_assert_eq(info.cancel_error, -EINTR);
	cr_assert_str_eq(info.cancel_reason, "cancelled by the operator");
	cr_assert_eq(info.data_records, 1);
	vfiomig_stream_free(in);
	/* This version's writer produces these bytes. */
	{
		struct vm_fmt_header h = {
			.protocol = VM_FMT_PROTO_V2,
			.id = { .kind = VM_FMT_ID_PCI, .vendor = 0x1af4, .device = 0x10f0,
				.subvendor = 0x1af4, .subdevice = 0x1100, .class_code = 0x020000,
				.driver = "vfio-pci" },
		};
		struct vfiomig_stream *s;
		struct vm_fmt_writer w;
		const void *got;
		size_t glen;

		cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
		vm_fmt_writer_init(&w, s);
		cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
		cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
		cr_assert_eq(vm_fmt_end_phase(&w), 0);
		cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), 0);
		cr_assert_eq(vm_fmt_write_data(&w, body, 24), 0);
		cr_assert(vm_fmt_can_cancel(&w));
		cr_assert_eq(vm_fmt_write_cancel(&w, -EINTR, "cancelled by the operator"), 0);
		cr_assert(!vm_fmt_can_cancel(&w), "nothing follows a CANCEL");
		cr_assert_eq(vfiomig_stream_mem_data(s, &got, &glen), 0);
		cr_assert_eq(glen, len);
		cr_assert(memcmp(got, buf, len) == 0);
		vfiomig_stream_free(s);
	}
	/* Any flipped bit is corruption, never a believable cancel. */
	for (size_t i = 0; i < len; i++)
		for (int bit = 0; bit < 8; bit++) {
			buf[i] ^= (unsigned char)(1u << bit);
			cr_assert_neq(parse(NULL, buf, len, 0, &p), 0, "flip at %zu.%d", i, bit);
			cr_assert(p.n == 0 || p.rec[p.n - 1].type != VM_FMT_REC_CANCEL ||
					  p.cancel_err == -EINTR,
				  "flip at %zu.%d made another cancel", i, bit);
			buf[i] ^= (unsigned char)(1u << bit);
		}
	assert_no_leaks();
}

/* return-path.bin: SWITCHOVER_ACK, LOADED, FAILED, each decoded and re-encoded byte for byte. */
Test(golden, return_path_messages_are_byte_exact)
{
	unsigned char buf[4096], enc[VM_RP_MAX];
	size_t len = load("return-path.bin", buf, sizeof(buf)), pos = 0;
	struct vm_rp_msg m[3];

	cr_assert_eq(len, 171);
	for (int i = 0; i < 3; i++) {
		uint32_t blen = (uint32_t)buf[pos + 8] << 24 | (uint32_t)buf[pos + 9] << 16 |
				(uint32_t)buf[pos + 10] << 8 | buf[pos + 11];
		size_t mlen = VM_RP_HDR + blen + VM_RP_CRC;

		cr_assert_leq(pos + mlen, len);
		cr_assert_eq(vm_crc32c(0, buf + pos, mlen - VM_RP_CRC),
			     (uint32_t)buf[pos + mlen - 4] << 24 | (uint32_t)buf[pos + mlen - 3] << 16 |
				     (uint32_t)buf[pos + mlen - 2] << 8 | buf[pos + mlen - 1]);
		cr_assert_eq(vm_rp_decode(buf + pos, buf + pos + VM_RP_HDR, blen, &m[i]), 0);
		cr_assert_eq(vm_rp_encode(&m[i], enc), mlen);
		cr_assert(memcmp(enc, buf + pos, mlen) == 0, "message %d re-encodes", i);
		pos += mlen;
	}
	cr_assert_eq(pos, len);
	cr_assert_eq(m[0].type, VFIOMIG_RETURN_SWITCHOVER_ACK);
	cr_assert_eq(m[0].bytes, 4096);
	cr_assert_eq(m[1].type, VFIOMIG_RETURN_LOADED);
	cr_assert_eq(m[1].bytes, 170);
	cr_assert_eq(m[1].records, 1);
	cr_assert_eq(m[1].data_bytes, 16);
	cr_assert_eq(m[1].crc, 0x2890fbb7, "the stream CRC of proto1-mdev-tiny.bin");
	cr_assert_eq(m[2].type, VFIOMIG_RETURN_FAILED);
	cr_assert_eq(m[2].error, -ENODEV);
	cr_assert_str_eq(m[2].reason,
			 "device 0000:04:00.0: stream is for PCI 1af4:10f0, device is PCI 8086:10f0");
	assert_no_leaks();
}

Test(golden, precopy_stream_parses)
{
	unsigned char buf[4096];
	size_t len = load("proto2-pci-precopy.bin", buf, sizeof(buf));
	static struct parsed p;
	static const struct {
		enum vm_fmt_rec_type type;
		uint32_t phase;
		uint64_t size;
		unsigned seed; /* body: golden_byte(seed, i); 0: see below */
	} want[] = {
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_SETUP, 0, 0 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_SETUP, 0, 0 },
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_PRECOPY, 0, 0 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_PRECOPY, 40, 2 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_PRECOPY, 17, 3 },
		{ VM_FMT_REC_INIT_DATA_SENT, VM_FMT_PHASE_PRECOPY, 0, 0 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_PRECOPY, 0, 0 },
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_PRECOPY, 0, 0 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_PRECOPY, 9, 4 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_PRECOPY, 0, 0 },
		{ VM_FMT_REC_PHASE, VM_FMT_PHASE_STOPCOPY, 0, 0 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_STOPCOPY, 33, 5 },
		{ VM_FMT_REC_DATA, VM_FMT_PHASE_STOPCOPY, 0, 6 },
		{ VM_FMT_REC_CONFIG, VM_FMT_PHASE_STOPCOPY, 12, 0 },
		{ VM_FMT_REC_END, VM_FMT_PHASE_STOPCOPY, 0, 0 },
		{ VM_FMT_REC_TRAILER, VM_FMT_PHASE_STOPCOPY, 0, 0 },
	};

	cr_assert_eq(len, 388);
	cr_assert_eq(parse(NULL, buf, len, 0, &p), 0);
	cr_assert_eq(p.h.protocol, VM_FMT_PROTO_V2);
	cr_assert_eq(p.h.id.kind, VM_FMT_ID_PCI);
	cr_assert_eq(p.h.id.vendor, 0x15b3);
	cr_assert_eq(p.h.id.device, 0x101e);
	cr_assert_eq(p.h.id.subvendor, 0x15b3);
	cr_assert_eq(p.h.id.subdevice, 0x0061);
	cr_assert_eq(p.h.id.class_code, 0x020000);
	cr_assert_str_eq(p.h.id.mdev_type, "");
	cr_assert_str_eq(p.h.id.driver, "mlx5_vfio_pci");
	cr_assert_eq(p.n, sizeof(want) / sizeof(want[0]));
	for (size_t i = 0; i < p.n; i++) {
		cr_assert_eq(p.rec[i].type, want[i].type, "record %zu", i);
		cr_assert_eq(p.rec[i].phase, want[i].phase, "record %zu", i);
		cr_assert_eq(p.rec[i].size, want[i].size, "record %zu", i);
		for (size_t k = 0; want[i].seed && k < want[i].size; k++)
			cr_assert_eq(p.rec[i].body[k], golden_byte(want[i].seed, k), "record %zu",
				     i);
	}
	cr_assert(memcmp(p.rec[13].body, "config-blob!", 12) == 0);
}

Test(golden, extended_stream_from_a_later_writer_parses)
{
	unsigned char buf[4096];
	size_t len = load("proto2-pci-extended.bin", buf, sizeof(buf));
	static struct parsed p;

	cr_assert_eq(parse(NULL, buf, len, 0, &p), 0);
	cr_assert_eq(p.h.hdr_len, 71, "8 bytes longer than this version writes");
	cr_assert_eq(p.h.flags, 0x00010000, "an unknown compatible flag");
	cr_assert_eq(p.h.id.vendor, 0x1af4);
	cr_assert_eq(p.h.id.device, 0x1041);
	cr_assert_str_eq(p.h.id.driver, "virtio_vfio_pci");
	cr_assert_eq(p.n, 12);
	cr_assert_eq(p.rec[1].type, VM_FMT_REC_OPTIONAL);
	cr_assert_eq(p.rec[1].marker, 0xffffffffef110001ull);
	cr_assert_eq(p.rec[1].size, 5);
	cr_assert_eq(p.rec[4].type, VM_FMT_REC_DATA);
	cr_assert_eq(p.rec[4].size, 20);
	for (size_t k = 0; k < 20; k++)
		cr_assert_eq(p.rec[4].body[k], golden_byte(7, k));
	cr_assert_eq(p.rec[7].type, VM_FMT_REC_OPTIONAL);
	cr_assert_eq(p.rec[7].marker, 0xffffffffef11abcdull);
	cr_assert_eq(p.rec[7].size, 0);
	cr_assert_eq(p.rec[8].type, VM_FMT_REC_DATA);
	cr_assert_eq(p.rec[8].size, 3);
	cr_assert_eq(p.rec[9].type, VM_FMT_REC_CONFIG);
	cr_assert(memcmp(p.rec[9].body, "cfg!", 4) == 0);
	cr_assert_eq(p.rec[11].type, VM_FMT_REC_TRAILER);
	cr_assert_eq(p.consumed, len, "the longer trailer is consumed whole");
}

/*
 * This version's writer still produces the golden bytes. (Should a later
 * version legitimately write something else, it gets new golden files
 * and this test moves to them; the old files keep being read above.)
 */
Test(golden, writer_reproduces_the_golden_streams)
{
	unsigned char want[4096], d1[40], d3[17], d4[9], d5[33];
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	const void *got;
	size_t len, glen;
	struct vm_fmt_header h = {
		.protocol = VM_FMT_PROTO_V1,
		.id = { .kind = VM_FMT_ID_MDEV, .vendor = 0x4348, .device = 0x3253,
			.subvendor = 0x4348, .subdevice = 0x3253, .class_code = 0x070002,
			.mdev_type = "mtty-2", .driver = "mtty" },
	};

	glen = load("proto1-mdev-tiny.bin", want, sizeof(want));
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	vm_fmt_writer_init(&w, s);
	fill(d1, 16, 1);
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY), 0);
	cr_assert_eq(vm_fmt_write_data(&w, d1, 16), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_write_trailer(&w), 0);
	cr_assert_eq(vfiomig_stream_mem_data(s, &got, &len), 0);
	cr_assert_eq(len, glen);
	cr_assert(memcmp(got, want, len) == 0);
	vfiomig_stream_free(s);

	h = (struct vm_fmt_header){
		.protocol = VM_FMT_PROTO_V2,
		.id = { .kind = VM_FMT_ID_PCI, .vendor = 0x15b3, .device = 0x101e,
			.subvendor = 0x15b3, .subdevice = 0x0061, .class_code = 0x020000,
			.driver = "mlx5_vfio_pci" },
	};
	glen = load("proto2-pci-precopy.bin", want, sizeof(want));
	fill(d1, 40, 2);
	fill(d3, 17, 3);
	fill(d4, 9, 4);
	fill(d5, 33, 5);
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	vm_fmt_writer_init(&w, s);
	cr_assert_eq(vm_fmt_write_header(&w, &h), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_SETUP), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), 0);
	cr_assert_eq(vm_fmt_write_data(&w, d1, 40), 0);
	cr_assert_eq(vm_fmt_write_data(&w, d3, 17), 0, "one piece or several: same bytes");
	cr_assert_eq(vm_fmt_write_init_data_sent(&w), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_PRECOPY), 0);
	cr_assert_eq(vm_fmt_write_data(&w, d4, 9), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_begin_phase(&w, VM_FMT_PHASE_STOPCOPY), 0);
	cr_assert_eq(vm_fmt_write_data(&w, d5, 33), 0);
	cr_assert_eq(vm_fmt_write_data(&w, NULL, 0), 0);
	cr_assert_eq(vm_fmt_write_config(&w, "config-blob!", 12), 0);
	cr_assert_eq(vm_fmt_end_phase(&w), 0);
	cr_assert_eq(vm_fmt_write_trailer(&w), 0);
	cr_assert_eq(vfiomig_stream_mem_data(s, &got, &len), 0);
	cr_assert_eq(len, glen);
	cr_assert(memcmp(got, want, len) == 0);
	vfiomig_stream_free(s);
	assert_no_leaks();
}
