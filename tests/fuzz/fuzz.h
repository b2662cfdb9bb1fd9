/* SPDX-License-Identifier: MIT */
/*
 * What the stream and return-path fuzz targets share: an independent
 * reading of docs/stream-format.md (a reference reader written from the
 * document, not from lib/format.c, so the library is checked against the
 * document and not against itself), a model of the simulated device's
 * data format (lib/sim/sim_mig.c, top comment) that tells what state a
 * device must end with, the format-aware mutators, and the replay driver
 * that `make check` runs without libFuzzer.
 *
 * Everything here uses the public API only; CRC32C is our own, from its
 * definition, so the integrity checks are checked too.
 */
#ifndef VFIOMIG_TESTS_FUZZ_H
#define VFIOMIG_TESTS_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* -------------------------------------------------------------- helpers */

uint32_t fz_crc32c(uint32_t crc, const void *buf, size_t len);

static inline uint64_t fz_be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static inline uint32_t fz_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint16_t fz_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static inline void fz_put_be64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static inline void fz_put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void fz_put_be16(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/* "ok", "EBADMSG", ... ("E123" for a number without a name); err is 0 or negative. */
const char *fz_errname(int err);
/* The reverse: 0 for "ok", -EBADMSG for "EBADMSG"; 1 for a name it does not know. */
int fz_errnum(const char *name);

/* Stop the process the way libFuzzer reports: print why, then abort(). */
__attribute__((noreturn, format(printf, 1, 2)))
void fz_fail(const char *fmt, ...);
#define FZ_CHECK(cond, ...)                \
	do {                               \
		if (!(cond))               \
			fz_fail(__VA_ARGS__); \
	} while (0)

/* A tiny deterministic generator for the mutators (xorshift64*). */
struct fz_rand {
	uint64_t s;
};
void fz_rand_seed(struct fz_rand *r, uint64_t seed);
uint64_t fz_rand(struct fz_rand *r);
/* 0 .. n-1 (0 when n is 0). */
uint64_t fz_below(struct fz_rand *r, uint64_t n);

/* ------------------------------------------------- the stream format */

#define FZ_MAGIC            "\x89VFIOMIG"
#define FZ_HDR_MIN          48u
#define FZ_HDR_MAX          65536u
#define FZ_M_END            0xffffffffef100001ull
#define FZ_M_CONFIG         0xffffffffef100002ull
#define FZ_M_SETUP          0xffffffffef100003ull
#define FZ_M_DATA           0xffffffffef100004ull
#define FZ_M_INIT           0xffffffffef100005ull
#define FZ_M_PRECOPY        0xffffffffef100010ull
#define FZ_M_STOPCOPY       0xffffffffef100011ull
#define FZ_M_CANCEL         0xffffffffef100020ull
#define FZ_M_TRAILER        0xffffffffef1000ffull
#define FZ_M_OPTIONAL(m)    (((m) & 0xffffffffffff0000ull) == 0xffffffffef110000ull)
#define FZ_RECORD_MAX       (64ull << 20)
#define FZ_TRAILER_MIN      32u
#define FZ_TRAILER_MAX      4096u
#define FZ_CANCEL_MIN       14u
#define FZ_CANCEL_MAX       4096u

/* Does a record with this marker carry {be64 size, body}? (Unknown mandatory ones: no one knows.) */
bool fz_marker_sized(uint64_t m);

struct fz_header {
	uint32_t version, hdr_len, protocol, flags;
	uint16_t kind, vendor, device, subvendor, subdevice;
	uint32_t class_code;
	char mdev_type[256];
	char driver[256];
	uint32_t crc; /* the header CRC field as stored */
};

/* A record the reader delivered (as vfiomig_stream_inspect() reports it). */
struct fz_rec {
	uint32_t type;   /* VFIOMIG_REC_* */
	uint32_t phase;  /* VFIOMIG_PHASE_* */
	uint64_t marker;
	uint64_t size;
	uint64_t offset;
	uint64_t body;   /* stream offset of the body */
	bool whole;      /* the body is all there */
};

/*
 * What a reader following docs/stream-format.md makes of a stream: the
 * result (0: intact, -ECANCELED: intact and cancelled, else the refusal),
 * the header, and the records delivered before the result, in order.
 */
struct fz_stream {
	int err;
	bool hdr_ok;
	struct fz_header hdr;
	struct fz_rec *recs;
	size_t nrecs, cap;
	/* Counts as the reader has them when it stops. */
	uint64_t bytes; /* only meaningful when err is 0 or -ECANCELED */
	uint64_t data_records, data_bytes, precopy_rounds, precopy_bytes, stopcopy_bytes;
	uint64_t config_bytes;
	bool has_config, init_data_sent, cancelled;
	int cancel_error; /* negative */
	char cancel_reason[256];
	uint32_t stream_crc; /* the trailer's (the CRC32C of every byte before it) */
};

/* Parse buf as a destination would; max_record 0 means 64 MiB. Returns s->err. */
int fz_stream_parse(const uint8_t *buf, size_t len, uint64_t max_record, struct fz_stream *s);
void fz_stream_free(struct fz_stream *s);

/* --------------------------------- the simulated device's data format */

#define FZ_PAGE        4096u
#define FZ_DREC_HDR    16u
#define FZ_DREC_PAGE   (FZ_DREC_HDR + FZ_PAGE)
#define FZ_DREC_END    32u
#define FZ_DMAGIC_PAGE 0x50474d56u
#define FZ_DMAGIC_END  0x444e4556u
#define FZ_HASH_INIT   0xcbf29ce484222325ull
#define FZ_HASH_PRIME  0x100000001b3ull

uint64_t fz_dev_hash(uint64_t h, const uint8_t *p, size_t len);

/*
 * A destination sim device's resume session: bytes in (split anywhere),
 * the state it builds, and its verdict when RESUMING is left.
 */
struct fz_dev {
	uint8_t *mem;
	uint64_t npages;
	uint8_t in[FZ_DREC_PAGE];
	size_t have;
	bool bad, end;
	uint64_t rx_hash, state_hash;
};
int fz_dev_init(struct fz_dev *d, uint64_t npages); /* -ENOMEM */
void fz_dev_fini(struct fz_dev *d);
void fz_dev_feed(struct fz_dev *d, const uint8_t *buf, size_t len);
/* Whole and intact: what leaving RESUMING accepts. */
bool fz_dev_ok(const struct fz_dev *d);

/*
 * The page count a stream's device data speaks of: the end record's, or
 * the highest page index + 1; 0 when it says nothing usable.
 */
uint64_t fz_dev_pages_hint(const uint8_t *buf, size_t len, const struct fz_stream *s);

/* ------------------------------------------------------- return path */

#define FZ_RP_BASE   0xffffffffef120000ull
#define FZ_RP_MASK   0xffffffffffff0000ull
#define FZ_RP_ACK    1u
#define FZ_RP_LOADED 2u
#define FZ_RP_FAILED 3u
#define FZ_RP_BODY_MAX 4096u

struct fz_rp_msg {
	uint32_t type;
	int32_t error;
	uint64_t bytes, records, data_bytes;
	uint32_t crc;
	char reason[256];
};

/*
 * The next message a source reads at *pos: 0 with *m (unknown types are
 * skipped, as the document says), -ENODATA at a clean end, -EPIPE cut
 * short, -EBADMSG corrupt or malformed. *pos moves past what was read.
 */
int fz_rp_next(const uint8_t *buf, size_t len, size_t *pos, struct fz_rp_msg *m);
/* Encode one message (at most 12 + 4096 + 4 bytes); returns its length. */
size_t fz_rp_encode(const struct fz_rp_msg *m, uint8_t *out);

/* ------------------------------------------------------------ mutators */

/*
 * Format-aware mutations of a stream or a return-path byte sequence, in
 * place: the result (at most max bytes) is returned, with its CRCs and
 * the trailer's counts recomputed so most mutations reach the grammar and
 * the device. `fallback` is LLVMFuzzerMutate (or a stand-in).
 */
typedef size_t (*fz_mutate_fn)(uint8_t *data, size_t size, size_t max);
size_t fz_stream_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback);
/* loaded: a LOADED message that matches the target's save (may be NULL). */
size_t fz_return_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback, const struct fz_rp_msg *loaded);

/* --------------------------------------------------------- the targets */

/*
 * What one input did, for the replay driver: a line such as
 * "inspect=ok load=ok state=crc32c:1234abcd/8192" that the manifest
 * (tests/data/fuzz/<target>/EXPECTED) records per seed.
 */
struct fz_outcome {
	char text[512];
};
/* Run one input through the target with all its invariants; fills *o when o is set. */
void fz_target_run(const uint8_t *data, size_t size, struct fz_outcome *o);
/* The target's name ("stream", "return") and its mutator. */
extern const char fz_target_name[];
size_t fz_target_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback);
/*
 * Seeds only the library itself can make (scripts/fuzz-corpus.sh): written
 * into dir by a real source or destination. 0 or -errno.
 */
int fz_target_make_seeds(const char *dir);
/* Write dir/name; 0 or -errno (said on stderr). */
int fz_write_file(const char *dir, const char *name, const void *p, size_t len);

#endif
