/* SPDX-License-Identifier: MIT */
/*
 * The fuzz targets' references: CRC32C from its definition, a stream
 * reader written from docs/stream-format.md, the return-path codec from
 * the same document, and the simulated device's resume session from the
 * data format in lib/sim/sim_mig.c's top comment. The targets compare the
 * library with these; where they disagree, one of the three (library,
 * document, reference) is wrong, and the fuzzer says so.
 */
#include "fuzz.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/stream.h>

/* --------------------------------------------------------------- CRC32C */

static uint32_t crc_table[256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[i] = c;
	}
}

uint32_t fz_crc32c(uint32_t crc, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	if (!crc_table[1])
		crc_init();
	crc = ~crc;
	while (len--)
		crc = crc_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* --------------------------------------------------------------- errors */

static const struct {
	int err;
	const char *name;
} errnames[] = {
	{ 0, "ok" },
	{ EPERM, "EPERM" }, { ENOENT, "ENOENT" }, { EINTR, "EINTR" }, { EIO, "EIO" },
	{ EBADF, "EBADF" }, { EAGAIN, "EAGAIN" }, { ENOMEM, "ENOMEM" }, { EFAULT, "EFAULT" },
	{ EBUSY, "EBUSY" }, { EEXIST, "EEXIST" }, { ENODEV, "ENODEV" }, { EINVAL, "EINVAL" },
	{ ENOSPC, "ENOSPC" }, { EPIPE, "EPIPE" }, { EFBIG, "EFBIG" }, { ENOSYS, "ENOSYS" },
	{ ENODATA, "ENODATA" }, { EPROTO, "EPROTO" }, { EBADMSG, "EBADMSG" },
	{ EOVERFLOW, "EOVERFLOW" }, { EPROTONOSUPPORT, "EPROTONOSUPPORT" },
	{ EOPNOTSUPP, "EOPNOTSUPP" }, { ECANCELED, "ECANCELED" }, { ENOTTY, "ENOTTY" },
	{ ENOMSG, "ENOMSG" }, { EDEADLK, "EDEADLK" }, { ESPIPE, "ESPIPE" },
};

const char *fz_errname(int err)
{
	static char buf[16];

	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (errnames[i].err == -err)
			return errnames[i].name;
	snprintf(buf, sizeof(buf), "E%d", -err);
	return buf;
}

int fz_errnum(const char *name)
{
	for (size_t i = 0; i < sizeof(errnames) / sizeof(errnames[0]); i++)
		if (strcmp(errnames[i].name, name) == 0)
			return -errnames[i].err;
	if (name[0] == 'E' && name[1] >= '0' && name[1] <= '9')
		return -atoi(name + 1);
	return 1;
}

void fz_fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "fuzz_%s: invariant broken: ", fz_target_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

void fz_rand_seed(struct fz_rand *r, uint64_t seed)
{
	r->s = seed * 0x9e3779b97f4a7c15ull + 0x632be59bd9b4e019ull;
	if (!r->s)
		r->s = 1;
}

uint64_t fz_rand(struct fz_rand *r)
{
	uint64_t x = r->s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545f4914f6cdd1dull;
}

uint64_t fz_below(struct fz_rand *r, uint64_t n)
{
	return n ? fz_rand(r) % n : 0;
}

/* ------------------------------------------------------ the stream reader */

bool fz_marker_sized(uint64_t m)
{
	switch (m) {
	case FZ_M_END:
	case FZ_M_SETUP:
	case FZ_M_INIT:
	case FZ_M_PRECOPY:
	case FZ_M_STOPCOPY:
		return false;
	default:
		return true;
	}
}

/* Grammar states of docs/stream-format.md's "stream" production. */
enum { G_SETUP, G_PHASE, G_BETWEEN, G_TRAILER, G_DONE };

struct rd {
	const uint8_t *b;
	size_t len, pos;
	uint32_t crc; /* of every byte before the current record's marker (and its own, once known) */
	int state;
	uint32_t phase;
	bool config_seen, init_seen;
	uint64_t max_record;
	struct fz_stream *s;
};

static bool printable(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 || p[i] > 0x7e)
			return false;
	return true;
}

/* Take n bytes (false: the stream ends first, which is a truncation). */
static bool take(struct rd *r, size_t n, bool crc, const uint8_t **p)
{
	if (r->len - r->pos < n)
		return false;
	*p = r->b + r->pos;
	if (crc)
		r->crc = fz_crc32c(r->crc, *p, n);
	r->pos += n;
	return true;
}

static struct fz_rec *deliver(struct rd *r, const struct fz_rec *rec)
{
	struct fz_stream *s = r->s;

	if (s->nrecs == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 16;
		struct fz_rec *n = realloc(s->recs, cap * sizeof(*n));

		if (!n)
			abort();
		s->recs = n;
		s->cap = cap;
	}
	s->recs[s->nrecs] = *rec;
	return &s->recs[s->nrecs++];
}

static int header(struct rd *r)
{
	struct fz_header *h = &r->s->hdr;
	const uint8_t *p, *rest;
	size_t pos, end;

	/* Magic, version and length come first, and are checked before more is read. */
	if (!take(r, 16, true, &p))
		return -EPIPE;
	if (memcmp(p, FZ_MAGIC, 8) != 0)
		return -EBADMSG;
	h->version = fz_be32(p + 8);
	h->hdr_len = fz_be32(p + 12);
	if (h->version == 0)
		return -EBADMSG;
	if (h->version > 1)
		return -EPROTONOSUPPORT;
	if (h->hdr_len < FZ_HDR_MIN || h->hdr_len > FZ_HDR_MAX)
		return -EBADMSG;
	if (!take(r, h->hdr_len - 16, true, &rest))
		return -EPIPE;
	h->crc = fz_be32(p + h->hdr_len - 4);
	if (fz_crc32c(0, p, h->hdr_len - 4) != h->crc)
		return -EBADMSG;
	h->protocol = fz_be32(p + 16);
	h->flags = fz_be32(p + 20);
	h->kind = fz_be16(p + 24);
	h->vendor = fz_be16(p + 26);
	h->device = fz_be16(p + 28);
	h->subvendor = fz_be16(p + 30);
	h->subdevice = fz_be16(p + 32);
	h->class_code = fz_be32(p + 36);
	/* The order of the document's "Checks, in order". */
	if (h->protocol != 1 && h->protocol != 2)
		return -EPROTONOSUPPORT;
	if (h->flags & 0xffffu)
		return -EPROTONOSUPPORT;
	if (h->kind != 1 && h->kind != 2)
		return -EPROTONOSUPPORT;
	if (h->class_code > 0xffffffu)
		return -EBADMSG;
	end = h->hdr_len - 4;
	pos = 40;
	for (int i = 0; i < 2; i++) {
		char *out = i ? h->driver : h->mdev_type;
		size_t n;

		if (pos + 2 > end)
			return -EBADMSG;
		n = fz_be16(p + pos);
		if (n > 255 || pos + 2 + n > end || !printable(p + pos + 2, n))
			return -EBADMSG;
		memcpy(out, p + pos + 2, n);
		out[n] = '\0';
		pos += 2 + n;
	}
	return 0;
}

static int trailer(struct rd *r, uint64_t at)
{
	struct fz_stream *s = r->s;
	const uint8_t *p, *t;
	uint64_t size;

	if (r->state != G_TRAILER)
		return -EBADMSG;
	if (!take(r, 8, false, &p))
		return -EPIPE;
	size = fz_be64(p);
	if (size < FZ_TRAILER_MIN || size > FZ_TRAILER_MAX)
		return -EBADMSG;
	if (!take(r, (size_t)size, false, &p))
		return -EPIPE;
	t = r->b + at;
	if (fz_crc32c(0, t, 16 + size - 4) != fz_be32(t + 16 + size - 4))
		return -EBADMSG;
	if (fz_be64(t + 16) != at || fz_be64(t + 24) != s->data_records ||
	    fz_be64(t + 32) != s->data_bytes || fz_be32(t + 40) != r->crc)
		return -EBADMSG;
	s->stream_crc = r->crc;
	return 0;
}

static int cancel(struct rd *r, uint64_t at)
{
	struct fz_stream *s = r->s;
	const uint8_t *p, *t;
	uint64_t size;
	uint32_t error;
	size_t n;

	if (!take(r, 8, false, &p))
		return -EPIPE;
	size = fz_be64(p);
	if (size < FZ_CANCEL_MIN || size > FZ_CANCEL_MAX)
		return -EBADMSG;
	if (!take(r, (size_t)size, false, &p))
		return -EPIPE;
	t = r->b + at;
	/* Its own CRC first: a corrupt record is a corrupt stream, never a cancel. */
	if (fz_crc32c(0, t, 16 + size - 4) != fz_be32(t + 16 + size - 4))
		return -EBADMSG;
	error = fz_be32(t + 16);
	n = fz_be16(t + 20);
	if (error == 0 || error > 4095 || n > 255 || 4 + 2 + n + 4 + 4 > size ||
	    !printable(t + 22, n))
		return -EBADMSG;
	if (fz_be32(t + 22 + n) != r->crc)
		return -EBADMSG;
	s->cancelled = true;
	s->cancel_error = -(int)error;
	memcpy(s->cancel_reason, t + 22, n);
	s->cancel_reason[n] = '\0';
	return -ECANCELED;
}

/* One record; 1 to go on, 0 at the trailer, or the refusal. */
static int record(struct rd *r)
{
	struct fz_stream *s = r->s;
	struct fz_rec rec = { .offset = r->pos, .phase = r->phase };
	const uint8_t *p;
	uint64_t marker;
	int err;

	if (r->len - r->pos < 8)
		return -EPIPE;
	marker = fz_be64(r->b + r->pos);
	/* The trailer and a cancel stand outside the stream CRC they carry. */
	take(r, 8, marker != FZ_M_TRAILER && marker != FZ_M_CANCEL, &p);
	rec.marker = marker;
	switch (marker) {
	case FZ_M_TRAILER:
		err = trailer(r, rec.offset);
		if (err)
			return err;
		rec.type = VFIOMIG_REC_TRAILER;
		rec.whole = true;
		deliver(r, &rec);
		r->state = G_DONE;
		return 0;
	case FZ_M_CANCEL:
		err = cancel(r, rec.offset);
		if (err != -ECANCELED)
			return err;
		rec.type = VFIOMIG_REC_CANCEL;
		rec.whole = true;
		deliver(r, &rec);
		r->state = G_DONE;
		return err;
	case FZ_M_SETUP:
	case FZ_M_PRECOPY:
	case FZ_M_STOPCOPY:
		if (r->state != (marker == FZ_M_SETUP ? G_SETUP : G_BETWEEN))
			return -EBADMSG;
		r->state = G_PHASE;
		r->phase = marker == FZ_M_SETUP     ? VFIOMIG_PHASE_SETUP
			   : marker == FZ_M_PRECOPY ? VFIOMIG_PHASE_PRECOPY
						    : VFIOMIG_PHASE_STOPCOPY;
		rec.type = VFIOMIG_REC_PHASE;
		rec.phase = r->phase;
		break;
	case FZ_M_END:
		if (r->state != G_PHASE)
			return -EBADMSG;
		if (r->phase == VFIOMIG_PHASE_PRECOPY)
			s->precopy_rounds++;
		r->state = r->phase == VFIOMIG_PHASE_STOPCOPY ? G_TRAILER : G_BETWEEN;
		rec.type = VFIOMIG_REC_END;
		break;
	case FZ_M_INIT:
		if (r->state != G_PHASE || r->phase != VFIOMIG_PHASE_PRECOPY || r->init_seen)
			return -EBADMSG;
		r->init_seen = true;
		s->init_data_sent = true;
		rec.type = VFIOMIG_REC_INIT_DATA_SENT;
		break;
	default:
		if (marker != FZ_M_DATA && marker != FZ_M_CONFIG && !FZ_M_OPTIONAL(marker)) {
			/*
			 * New markers only ever come in the format's space: eight bytes
			 * outside it are no marker (corrupt, or read at the wrong point).
			 */
			if ((marker & 0xfffffffffff00000ull) != 0xffffffffef100000ull)
				return -EBADMSG;
			return -EPROTONOSUPPORT;
		}
		if (!take(r, 8, true, &p))
			return -EPIPE;
		rec.size = fz_be64(p);
		if (r->state != G_PHASE)
			return -EBADMSG;
		if (marker == FZ_M_DATA) {
			if (r->phase == VFIOMIG_PHASE_SETUP)
				return -EBADMSG;
			rec.type = VFIOMIG_REC_DATA;
		} else if (marker == FZ_M_CONFIG) {
			if (r->config_seen)
				return -EBADMSG;
			r->config_seen = true;
			rec.type = VFIOMIG_REC_CONFIG;
		} else {
			rec.type = VFIOMIG_REC_OPTIONAL;
		}
		if (rec.size > r->max_record)
			return -EFBIG;
		if (marker == FZ_M_DATA) {
			s->data_records++;
			s->data_bytes += rec.size;
			if (r->phase == VFIOMIG_PHASE_STOPCOPY)
				s->stopcopy_bytes += rec.size;
			else
				s->precopy_bytes += rec.size;
		} else if (marker == FZ_M_CONFIG) {
			s->has_config = true;
			s->config_bytes = rec.size;
		}
		rec.body = r->pos;
		rec.whole = r->len - r->pos >= rec.size;
		deliver(r, &rec);
		if (!rec.whole)
			return -EPIPE;
		take(r, (size_t)rec.size, true, &p);
		return 1;
	}
	rec.whole = true;
	deliver(r, &rec);
	return 1;
}

int fz_stream_parse(const uint8_t *buf, size_t len, uint64_t max_record, struct fz_stream *s)
{
	struct rd r = { .b = buf, .len = len, .s = s, .state = G_SETUP };
	int err;

	memset(s, 0, sizeof(*s));
	r.max_record = max_record ? max_record : FZ_RECORD_MAX;
	err = header(&r);
	if (!err) {
		s->hdr_ok = true;
		do
			err = record(&r);
		while (err == 1);
	}
	s->bytes = r.pos;
	s->err = err;
	return err;
}

void fz_stream_free(struct fz_stream *s)
{
	free(s->recs);
	s->recs = NULL;
	s->nrecs = s->cap = 0;
}

/* ------------------------------------------------- the simulated device */

uint64_t fz_dev_hash(uint64_t h, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, sizeof(w));
		h = (h ^ w) * FZ_HASH_PRIME;
	}
	return h;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

int fz_dev_init(struct fz_dev *d, uint64_t npages)
{
	memset(d, 0, sizeof(*d));
	d->npages = npages;
	d->mem = calloc(npages ? npages : 1, FZ_PAGE);
	d->rx_hash = FZ_HASH_INIT;
	return d->mem ? 0 : -ENOMEM;
}

void fz_dev_fini(struct fz_dev *d)
{
	free(d->mem);
	d->mem = NULL;
}

static void dev_header(struct fz_dev *d)
{
	uint32_t magic = le32(d->in), flags = le32(d->in + 4);
	uint64_t idx = le64(d->in + 8);

	if (d->end || (magic != FZ_DMAGIC_PAGE && magic != FZ_DMAGIC_END) || flags ||
	    (magic == FZ_DMAGIC_PAGE && idx >= d->npages) ||
	    (magic == FZ_DMAGIC_END && idx != d->npages))
		d->bad = true;
}

static void dev_apply(struct fz_dev *d)
{
	if (le32(d->in) == FZ_DMAGIC_PAGE) {
		d->rx_hash = fz_dev_hash(d->rx_hash, d->in, FZ_DREC_PAGE);
		memcpy(d->mem + le64(d->in + 8) * FZ_PAGE, d->in + FZ_DREC_HDR, FZ_PAGE);
		return;
	}
	if (le64(d->in + 24) != d->rx_hash)
		d->bad = true;
	d->state_hash = le64(d->in + 16);
	d->end = true;
}

void fz_dev_feed(struct fz_dev *d, const uint8_t *buf, size_t len)
{
	while (len && !d->bad) {
		size_t need = FZ_DREC_HDR, n;

		if (d->have >= FZ_DREC_HDR)
			need = le32(d->in) == FZ_DMAGIC_PAGE ? FZ_DREC_PAGE : FZ_DREC_END;
		n = len < need - d->have ? len : need - d->have;
		memcpy(d->in + d->have, buf, n);
		d->have += n;
		buf += n;
		len -= n;
		if (d->have == FZ_DREC_HDR) {
			dev_header(d);
			continue;
		}
		if (d->have == need) {
			dev_apply(d);
			d->have = 0;
		}
	}
}

bool fz_dev_ok(const struct fz_dev *d)
{
	return !d->bad && !d->have && d->end &&
	       fz_dev_hash(FZ_HASH_INIT, d->mem, d->npages * FZ_PAGE) == d->state_hash;
}

uint64_t fz_dev_pages_hint(const uint8_t *buf, size_t len, const struct fz_stream *s)
{
	uint8_t h[FZ_DREC_HDR];
	uint64_t skip = 0, max = 0;
	size_t have = 0;

	/* Walk the device records across data-record boundaries; stop at the first oddity. */
	for (size_t i = 0; i < s->nrecs; i++) {
		const struct fz_rec *rec = &s->recs[i];
		uint64_t avail, off = 0;

		if (rec->type != VFIOMIG_REC_DATA)
			continue;
		avail = rec->whole ? rec->size : len - rec->body;
		while (off < avail) {
			if (skip) {
				uint64_t n = skip < avail - off ? skip : avail - off;

				skip -= n;
				off += n;
				continue;
			}
			h[have++] = buf[rec->body + off++];
			if (have < FZ_DREC_HDR)
				continue;
			have = 0;
			if (le32(h) == FZ_DMAGIC_END)
				return le64(h + 8);
			if (le32(h) != FZ_DMAGIC_PAGE)
				return max;
			if (le64(h + 8) >= max)
				max = le64(h + 8) + 1;
			skip = FZ_PAGE;
		}
	}
	return max;
}

int fz_write_file(const char *dir, const char *name, const void *p, size_t len)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, len, f) != len || fclose(f) != 0) {
		int err = errno ? errno : EIO;

		perror(path);
		return -err;
	}
	return 0;
}

/* ---------------------------------------------------------- return path */

int fz_rp_next(const uint8_t *buf, size_t len, size_t *pos, struct fz_rp_msg *m)
{
	for (;;) {
		const uint8_t *p = buf + *pos, *b;
		size_t left = len - *pos, n;
		uint64_t marker;

		memset(m, 0, sizeof(*m));
		if (left == 0)
			return -ENODATA;
		if (left < 12) {
			*pos = len;
			return -EPIPE;
		}
		marker = fz_be64(p);
		n = fz_be32(p + 8);
		*pos += 12;
		if ((marker & FZ_RP_MASK) != FZ_RP_BASE || n > FZ_RP_BODY_MAX)
			return -EBADMSG;
		if (left < 12 + n + 4) {
			*pos = len;
			return -EPIPE;
		}
		*pos += n + 4;
		if (fz_crc32c(0, p, 12 + n) != fz_be32(p + 12 + n))
			return -EBADMSG;
		b = p + 12;
		m->type = (uint32_t)(marker & ~FZ_RP_MASK);
		switch (m->type) {
		case FZ_RP_ACK:
			if (n < 8)
				return -EBADMSG;
			m->bytes = fz_be64(b);
			return 0;
		case FZ_RP_LOADED:
			if (n < 28)
				return -EBADMSG;
			m->bytes = fz_be64(b);
			m->records = fz_be64(b + 8);
			m->data_bytes = fz_be64(b + 16);
			m->crc = fz_be32(b + 24);
			return 0;
		case FZ_RP_FAILED: {
			uint32_t e;
			size_t rl;

			if (n < 14)
				return -EBADMSG;
			m->bytes = fz_be64(b);
			e = fz_be32(b + 8);
			rl = fz_be16(b + 12);
			if (e == 0 || e > 4095 || rl > 255 || 14 + rl > n || !printable(b + 14, rl))
				return -EBADMSG;
			m->error = -(int32_t)e;
			memcpy(m->reason, b + 14, rl);
			m->reason[rl] = '\0';
			return 0;
		}
		default:
			continue; /* from a newer destination: skipped whole */
		}
	}
}

size_t fz_rp_encode(const struct fz_rp_msg *m, uint8_t *out)
{
	uint8_t *b = out + 12;
	size_t n = 0, rl;

	switch (m->type) {
	case FZ_RP_ACK:
		fz_put_be64(b, m->bytes);
		n = 8;
		break;
	case FZ_RP_LOADED:
		fz_put_be64(b, m->bytes);
		fz_put_be64(b + 8, m->records);
		fz_put_be64(b + 16, m->data_bytes);
		fz_put_be32(b + 24, m->crc);
		n = 28;
		break;
	default:
		rl = strnlen(m->reason, 255);
		fz_put_be64(b, m->bytes);
		fz_put_be32(b + 8, (uint32_t)-m->error);
		fz_put_be16(b + 12, (uint16_t)rl);
		memcpy(b + 14, m->reason, rl);
		n = 14 + rl;
		break;
	}
	fz_put_be64(out, FZ_RP_BASE | m->type);
	fz_put_be32(out + 8, (uint32_t)n);
	fz_put_be32(out + 12 + n, fz_crc32c(0, out, 12 + n));
	return 12 + n + 4;
}
