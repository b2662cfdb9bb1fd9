/* SPDX-License-Identifier: MIT */
/*
 * Format-aware mutators. Random byte mutations almost never get past a
 * CRC32C, so these take the input apart (header, records, trailer,
 * cancel; or return-path messages), change it the way an attacker or a
 * broken channel would (bit flips, sizes that lie, records duplicated,
 * dropped, swapped, re-split, CANCEL records inserted, truncation, header
 * fields, device data with the simulated device's own checksums redone),
 * put it back together and recompute every CRC and count that covers what
 * changed: the header CRC, the trailer's byte count, data counts, stream
 * CRC and own CRC, a CANCEL's two CRCs, each return-path message's CRC.
 * Now and then a CRC is left stale on purpose so the integrity checks stay
 * covered too; the rest is left to libFuzzer's own mutations.
 */
#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ streams */

#define MAX_RECS 4096

struct mrec {
	uint64_t marker;
	bool sized;
	uint64_t size;   /* the size field as it stands (may lie) */
	uint8_t *body;   /* owned copy of the bytes present */
	size_t blen;
};

struct mstream {
	uint8_t *hdr;
	size_t hlen;
	struct mrec *r;
	size_t n;
	uint8_t *tail; /* bytes that are not records (after the trailer, or unparseable) */
	size_t tail_len;
};

static void ms_free(struct mstream *m)
{
	free(m->hdr);
	for (size_t i = 0; i < m->n; i++)
		free(m->r[i].body);
	free(m->r);
	free(m->tail);
	memset(m, 0, sizeof(*m));
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
	uint8_t *q = malloc(n ? n : 1);

	if (q && n)
		memcpy(q, p, n);
	return q;
}

/* The family every marker of the format (and QEMU's five) shares. */
static bool marker_like(uint64_t m)
{
	return (m & 0xfffffffffff00000ull) == 0xffffffffef100000ull;
}

/* Split data into header and records; false when there is no header to hold on to. */
static bool ms_parse(struct mstream *m, const uint8_t *d, size_t size)
{
	size_t pos;
	uint32_t hlen;

	memset(m, 0, sizeof(*m));
	if (size < FZ_HDR_MIN || memcmp(d, FZ_MAGIC, 8) != 0)
		return false;
	hlen = fz_be32(d + 12);
	if (hlen < FZ_HDR_MIN || hlen > size)
		return false;
	m->r = calloc(MAX_RECS, sizeof(*m->r));
	m->hdr = dup_bytes(d, hlen);
	if (!m->r || !m->hdr)
		goto fail;
	m->hlen = hlen;
	pos = hlen;
	while (pos + 8 <= size && m->n < MAX_RECS) {
		struct mrec *r = &m->r[m->n];
		uint64_t marker = fz_be64(d + pos);
		size_t left;

		if (!marker_like(marker))
			break;
		r->marker = marker;
		r->sized = fz_marker_sized(marker);
		if (!r->sized) {
			m->n++;
			pos += 8;
			continue;
		}
		if (pos + 16 > size)
			break;
		r->size = fz_be64(d + pos + 8);
		left = size - pos - 16;
		r->blen = r->size < left ? (size_t)r->size : left;
		r->body = dup_bytes(d + pos + 16, r->blen);
		if (!r->body)
			goto fail;
		m->n++;
		pos += 16 + r->blen;
		if (marker == FZ_M_TRAILER || marker == FZ_M_CANCEL)
			break;
	}
	m->tail_len = size - pos;
	m->tail = dup_bytes(d + pos, m->tail_len);
	if (!m->tail)
		goto fail;
	return true;
fail:
	ms_free(m);
	return false;
}

/* What to leave stale on purpose. */
struct fixes {
	bool header, trailer, cancel;
	int trailer_lie; /* 1..4: that trailer field is off by one, under a correct trailer CRC */
};

struct out {
	uint8_t *p;
	size_t len, max;
	bool full;
};

static void put(struct out *o, const void *b, size_t n)
{
	if (o->len + n > o->max) {
		n = o->max - o->len;
		o->full = true;
	}
	memcpy(o->p + o->len, b, n);
	o->len += n;
}

/* Reassemble, recomputing what covers the bytes (as a writer would have). */
static size_t ms_write(struct mstream *m, uint8_t *dst, size_t max, struct fixes fx)
{
	struct out o = { .p = dst, .max = max };
	uint64_t records = 0, bytes = 0;
	uint32_t crc;

	if (fx.header && m->hlen >= 8)
		fz_put_be32(m->hdr + m->hlen - 4, fz_crc32c(0, m->hdr, m->hlen - 4));
	put(&o, m->hdr, m->hlen);
	crc = fz_crc32c(0, m->hdr, m->hlen);
	for (size_t i = 0; i < m->n && !o.full; i++) {
		struct mrec *r = &m->r[i];
		uint8_t head[16];
		uint64_t at = o.len;

		fz_put_be64(head, r->marker);
		fz_put_be64(head + 8, r->size);
		if (r->marker == FZ_M_TRAILER && fx.trailer && r->size >= FZ_TRAILER_MIN &&
		    r->size <= FZ_TRAILER_MAX && r->blen == r->size) {
			fz_put_be64(r->body, at);
			fz_put_be64(r->body + 8, records);
			fz_put_be64(r->body + 16, bytes);
			fz_put_be32(r->body + 24, crc);
			if (fx.trailer_lie)
				r->body[(fx.trailer_lie - 1) * 8 + 7 - (fx.trailer_lie == 4) * 4] ^= 1;
			fz_put_be32(r->body + r->blen - 4,
				    fz_crc32c(fz_crc32c(0, head, 16), r->body, r->blen - 4));
		} else if (r->marker == FZ_M_CANCEL && fx.cancel && r->size >= FZ_CANCEL_MIN &&
			   r->size <= FZ_CANCEL_MAX && r->blen == r->size) {
			size_t l = fz_be16(r->body + 4);

			if (6 + l + 8 <= r->blen)
				fz_put_be32(r->body + 6 + l, crc);
			fz_put_be32(r->body + r->blen - 4,
				    fz_crc32c(fz_crc32c(0, head, 16), r->body, r->blen - 4));
		}
		put(&o, head, r->sized ? 16 : 8);
		if (r->sized)
			put(&o, r->body, r->blen);
		if (r->marker != FZ_M_TRAILER && r->marker != FZ_M_CANCEL) {
			crc = fz_crc32c(crc, head, r->sized ? 16 : 8);
			if (r->sized)
				crc = fz_crc32c(crc, r->body, r->blen);
		}
		if (r->marker == FZ_M_DATA) {
			records++;
			bytes += r->size;
		}
	}
	if (!o.full)
		put(&o, m->tail, m->tail_len);
	return o.len;
}

static bool ms_insert(struct mstream *m, size_t at, const struct mrec *r)
{
	if (m->n >= MAX_RECS || at > m->n)
		return false;
	memmove(&m->r[at + 1], &m->r[at], (m->n - at) * sizeof(*m->r));
	m->r[at] = *r;
	m->n++;
	return true;
}

static void ms_remove(struct mstream *m, size_t at)
{
	free(m->r[at].body);
	memmove(&m->r[at], &m->r[at + 1], (m->n - at - 1) * sizeof(*m->r));
	m->n--;
}

/* A body of n bytes (random), owned by the record. */
static bool set_body(struct mrec *r, size_t n, struct fz_rand *rnd)
{
	uint8_t *b = malloc(n ? n : 1);

	if (!b)
		return false;
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)fz_rand(rnd);
	if (r->body)
		memcpy(b, r->body, n < r->blen ? n : r->blen);
	free(r->body);
	r->body = b;
	r->blen = n;
	r->size = n;
	r->sized = true;
	return true;
}

static void rand_printable(struct fz_rand *rnd, char *s, size_t n)
{
	static const char a[] = "abcdefghijklmnopqrstuvwxyz0123456789 :-_./()";

	for (size_t i = 0; i < n; i++)
		s[i] = a[fz_below(rnd, sizeof(a) - 1)];
}

/* A CANCEL record as a writer makes it (the CRCs are filled in by ms_write). */
static bool make_cancel(struct mrec *r, struct fz_rand *rnd)
{
	size_t l = fz_below(rnd, 8) ? fz_below(rnd, 48) : fz_below(rnd, 300);
	uint32_t e = fz_below(rnd, 8) ? 1 + (uint32_t)fz_below(rnd, 133) :
					 (uint32_t)fz_rand(rnd) % 8192;

	memset(r, 0, sizeof(*r));
	r->marker = FZ_M_CANCEL;
	if (!set_body(r, 4 + 2 + l + 4 + 4 + (fz_below(rnd, 8) ? 0 : fz_below(rnd, 16)), rnd))
		return false;
	fz_put_be32(r->body, e);
	fz_put_be16(r->body + 4, (uint16_t)l);
	rand_printable(rnd, (char *)r->body + 6, l);
	if (!fz_below(rnd, 16) && l)
		r->body[6 + fz_below(rnd, l)] = (uint8_t)fz_rand(rnd);
	return true;
}

static uint64_t huge_size(struct fz_rand *rnd, uint64_t size)
{
	static const uint64_t v[] = {
		UINT64_MAX, 1ull << 63, FZ_RECORD_MAX, FZ_RECORD_MAX + 1, 1ull << 32,
		(1ull << 32) + 8, 0, 4095, 4096, 4097, 65536, 65537, 13, 14, 31, 32, 33,
	};

	switch (fz_below(rnd, 4)) {
	case 0:
		return size + 1 + fz_below(rnd, 16);
	case 1:
		return size ? size - 1 - fz_below(rnd, size < 16 ? size : 16) : 0;
	default:
		return v[fz_below(rnd, sizeof(v) / sizeof(v[0]))];
	}
}

/* Indexes of the records with this marker. */
static size_t pick_marker(struct mstream *m, struct fz_rand *rnd, uint64_t marker, size_t *at)
{
	size_t cnt = 0, k;

	for (size_t i = 0; i < m->n; i++)
		cnt += m->r[i].marker == marker;
	if (!cnt)
		return 0;
	k = fz_below(rnd, cnt);
	for (size_t i = 0; i < m->n; i++)
		if (m->r[i].marker == marker && k-- == 0)
			*at = i;
	return cnt;
}

/* ----------------------------------------- the simulated device's data */

/*
 * The device data the data records carry, taken out whole, changed at the
 * level of the device's own records, its end record's checksums redone
 * (so the device accepts it, or refuses it for the intended reason), and
 * put back into the data records (the last one takes any difference).
 */
static void le32p(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64p(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t le64g(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint32_t le32g(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Recompute the end record's checksums over the page records before it. */
static void dev_refresh(uint8_t *d, size_t len)
{
	uint64_t rx = FZ_HASH_INIT, npages = 0;
	uint8_t *mem = NULL;
	size_t pos = 0;

	while (pos + FZ_DREC_HDR <= len) {
		uint32_t magic = le32g(d + pos);

		if (magic == FZ_DMAGIC_PAGE && pos + FZ_DREC_PAGE <= len) {
			pos += FZ_DREC_PAGE;
			continue;
		}
		if (magic == FZ_DMAGIC_END && pos + FZ_DREC_END <= len)
			npages = le64g(d + pos + 8);
		break;
	}
	if (!npages || npages > 4096 || pos + FZ_DREC_END > len)
		return;
	mem = calloc(npages, FZ_PAGE);
	if (!mem)
		return;
	for (size_t p = 0; p < pos; p += FZ_DREC_PAGE) {
		uint64_t idx = le64g(d + p + 8);

		rx = fz_dev_hash(rx, d + p, FZ_DREC_PAGE);
		if (idx < npages)
			memcpy(mem + idx * FZ_PAGE, d + p + FZ_DREC_HDR, FZ_PAGE);
	}
	le64p(d + pos + 16, fz_dev_hash(FZ_HASH_INIT, mem, npages * FZ_PAGE));
	le64p(d + pos + 24, rx);
	free(mem);
}

static bool dev_mutate(struct mstream *m, struct fz_rand *rnd)
{
	size_t total = 0, len, npg, cap;
	uint8_t *d, *nd;
	size_t last = SIZE_MAX, pos = 0;

	for (size_t i = 0; i < m->n; i++)
		if (m->r[i].marker == FZ_M_DATA) {
			total += m->r[i].blen;
			last = i;
		}
	if (last == SIZE_MAX || total < FZ_DREC_HDR)
		return false;
	cap = total + 2 * FZ_DREC_PAGE;
	d = malloc(cap);
	if (!d)
		return false;
	for (size_t i = 0; i < m->n; i++)
		if (m->r[i].marker == FZ_M_DATA) {
			memcpy(d + pos, m->r[i].body, m->r[i].blen);
			pos += m->r[i].blen;
		}
	len = total;
	npg = 0;
	while (npg * FZ_DREC_PAGE + FZ_DREC_PAGE <= len && le32g(d + npg * FZ_DREC_PAGE) == FZ_DMAGIC_PAGE)
		npg++;
	switch (fz_below(rnd, 6)) {
	case 0: /* new content in a page: a different, valid state */
		if (!npg)
			break;
		pos = fz_below(rnd, npg) * FZ_DREC_PAGE + FZ_DREC_HDR;
		for (int k = 0, n = 1 + (int)fz_below(rnd, 64); k < n; k++)
			d[pos + fz_below(rnd, FZ_PAGE)] = (uint8_t)fz_rand(rnd);
		dev_refresh(d, len);
		break;
	case 1: /* a page sent again with other content (as a dirty page is) */
		if (!npg)
			break;
		pos = npg * FZ_DREC_PAGE;
		memmove(d + pos + FZ_DREC_PAGE, d + pos, len - pos);
		memcpy(d + pos, d + fz_below(rnd, npg) * FZ_DREC_PAGE, FZ_DREC_PAGE);
		d[pos + FZ_DREC_HDR + fz_below(rnd, FZ_PAGE)] ^= (uint8_t)(1 + fz_below(rnd, 255));
		len += FZ_DREC_PAGE;
		dev_refresh(d, len);
		break;
	case 2: /* a page record dropped */
		if (!npg)
			break;
		pos = fz_below(rnd, npg) * FZ_DREC_PAGE;
		memmove(d + pos, d + pos + FZ_DREC_PAGE, len - pos - FZ_DREC_PAGE);
		len -= FZ_DREC_PAGE;
		dev_refresh(d, len);
		break;
	case 3: /* a page index changed (maybe out of range) */
		if (!npg)
			break;
		pos = fz_below(rnd, npg) * FZ_DREC_PAGE;
		le64p(d + pos + 8, fz_below(rnd, 4) ? fz_below(rnd, npg + 2) : fz_rand(rnd));
		dev_refresh(d, len);
		break;
	case 4: /* the end record's page count, flags or magic */
		pos = npg * FZ_DREC_PAGE;
		if (pos + FZ_DREC_END > len)
			break;
		if (fz_below(rnd, 2))
			le64p(d + pos + 8, le64g(d + pos + 8) + 1 - 2 * fz_below(rnd, 2));
		else
			le32p(d + pos + fz_below(rnd, 2) * 4, (uint32_t)fz_rand(rnd));
		break;
	default: /* one bit anywhere, checksums left as they were: the device must refuse */
		d[fz_below(rnd, len)] ^= (uint8_t)(1u << fz_below(rnd, 8));
		break;
	}
	/* Back into the records: their sizes as before, the last takes the difference. */
	pos = 0;
	for (size_t i = 0; i < m->n; i++) {
		struct mrec *r = &m->r[i];
		size_t n;

		if (r->marker != FZ_M_DATA)
			continue;
		n = i == last ? len - pos : (r->blen < len - pos ? r->blen : len - pos);
		nd = malloc(n ? n : 1);
		if (!nd)
			break;
		memcpy(nd, d + pos, n);
		if (r->size == r->blen)
			r->size = n;
		free(r->body);
		r->body = nd;
		r->blen = n;
		pos += n;
	}
	free(d);
	return true;
}

/* ------------------------------------------------------- the operations */

static void header_mutate(struct mstream *m, struct fz_rand *rnd)
{
	uint8_t *h = m->hdr;
	uint8_t *nh;
	size_t k;

	switch (fz_below(rnd, 10)) {
	case 0:
		fz_put_be32(h + 8, (uint32_t)fz_below(rnd, 3));
		break;
	case 1:
		fz_put_be32(h + 16, (uint32_t)fz_below(rnd, 4));
		break;
	case 2:
		fz_put_be32(h + 20, 1u << fz_below(rnd, 32));
		break;
	case 3:
		fz_put_be16(h + 24, (uint16_t)fz_below(rnd, 4));
		break;
	case 4:
		h[26 + fz_below(rnd, 8)] = (uint8_t)fz_rand(rnd);
		break;
	case 5:
		fz_put_be32(h + 36, fz_below(rnd, 2) ? (uint32_t)fz_rand(rnd) : 0x120000u);
		break;
	case 6: /* a later writer's extra header bytes, before the CRC */
		k = 1 + fz_below(rnd, 64);
		nh = realloc(m->hdr, m->hlen + k);
		if (!nh)
			break;
		memmove(nh + m->hlen - 4 + k, nh + m->hlen - 4, 4);
		for (size_t i = 0; i < k; i++)
			nh[m->hlen - 4 + i] = (uint8_t)fz_rand(rnd);
		m->hdr = nh;
		m->hlen += k;
		fz_put_be32(nh + 12, (uint32_t)m->hlen);
		break;
	case 7: /* the header length field alone */
		fz_put_be32(h + 12, (uint32_t)huge_size(rnd, fz_be32(h + 12)));
		break;
	case 8: /* a string length */
		fz_put_be16(h + 40, (uint16_t)huge_size(rnd, fz_be16(h + 40)));
		break;
	default: /* a byte of the strings area */
		if (m->hlen > 44)
			h[40 + fz_below(rnd, m->hlen - 44)] = (uint8_t)fz_rand(rnd);
		break;
	}
}

static const uint64_t plain_markers[] = {
	FZ_M_END, FZ_M_SETUP, FZ_M_INIT, FZ_M_PRECOPY, FZ_M_STOPCOPY,
};

static bool stream_op(struct mstream *m, struct fz_rand *rnd, struct fixes *fx, size_t *trunc,
		      fz_mutate_fn fallback)
{
	struct mrec r = { 0 };
	size_t i = fz_below(rnd, m->n ? m->n : 1), j = fz_below(rnd, m->n ? m->n : 1);

	switch (fz_below(rnd, 16)) {
	case 0: /* flip bits in a body */
		if (!m->n || !m->r[i].blen)
			return false;
		for (int k = 0, n = 1 + (int)fz_below(rnd, 4); k < n; k++)
			m->r[i].body[fz_below(rnd, m->r[i].blen)] ^= (uint8_t)(1u << fz_below(rnd, 8));
		return true;
	case 1: /* a size that lies */
		if (!m->n || !m->r[i].sized)
			return false;
		m->r[i].size = huge_size(rnd, m->r[i].size);
		return true;
	case 2: /* a size that is true: the body grows or shrinks with it */
		if (!m->n || !m->r[i].sized)
			return false;
		return set_body(&m->r[i], (size_t)(huge_size(rnd, m->r[i].blen) % 8192), rnd);
	case 3: /* duplicate */
		if (!m->n)
			return false;
		r = m->r[i];
		r.body = dup_bytes(m->r[i].body, m->r[i].blen);
		if (!r.body || !ms_insert(m, j, &r)) {
			free(r.body);
			return false;
		}
		return true;
	case 4: /* drop */
		if (!m->n)
			return false;
		ms_remove(m, i);
		return true;
	case 5: /* swap */
		if (m->n < 2 || i == j)
			return false;
		r = m->r[i];
		m->r[i] = m->r[j];
		m->r[j] = r;
		return true;
	case 6: /* the source gives up here: a CANCEL, and usually nothing after it */
		if (!make_cancel(&r, rnd))
			return false;
		if (!ms_insert(m, i, &r)) {
			free(r.body);
			return false;
		}
		if (fz_below(rnd, 4)) {
			while (m->n > i + 1)
				ms_remove(m, m->n - 1);
			m->tail_len = 0;
		}
		return true;
	case 7: /* cut somewhere */
		*trunc = 1 + (size_t)fz_rand(rnd);
		return true;
	case 8:
		header_mutate(m, rnd);
		return true;
	case 9: /* an optional record, an unknown mandatory one, or a misplaced plain one */
		switch (fz_below(rnd, 3)) {
		case 0:
			r.marker = 0xffffffffef110000ull | fz_below(rnd, 0x10000);
			if (!set_body(&r, fz_below(rnd, 64), rnd))
				return false;
			break;
		case 1:
			r.marker = 0xffffffffef100000ull | fz_below(rnd, 0x100);
			r.sized = fz_marker_sized(r.marker);
			if (r.sized && !set_body(&r, fz_below(rnd, 32), rnd))
				return false;
			break;
		default:
			r.marker = plain_markers[fz_below(rnd, 5)];
			break;
		}
		if (!ms_insert(m, i, &r)) {
			free(r.body);
			return false;
		}
		return true;
	case 10: /* a longer trailer (a later version's fields) */
		if (!pick_marker(m, rnd, FZ_M_TRAILER, &i) || m->r[i].blen != m->r[i].size)
			return false;
		{
			size_t old = m->r[i].blen, k = fz_below(rnd, 64);
			uint8_t crc[4];

			if (old < 4)
				return false;
			memcpy(crc, m->r[i].body + old - 4, 4);
			if (!set_body(&m->r[i], old + k, rnd))
				return false;
			memcpy(m->r[i].body + old + k - 4, crc, 4);
		}
		return true;
	case 11:
		return dev_mutate(m, rnd);
	case 12: /* split a data record in two, or merge two neighbours */
		if (!pick_marker(m, rnd, FZ_M_DATA, &i) || m->r[i].blen != m->r[i].size)
			return false;
		if (i + 1 < m->n && m->r[i + 1].marker == FZ_M_DATA &&
		    m->r[i + 1].blen == m->r[i + 1].size && fz_below(rnd, 2)) {
			size_t a = m->r[i].blen, b = m->r[i + 1].blen;
			uint8_t *nb = malloc(a + b ? a + b : 1);

			if (!nb)
				return false;
			memcpy(nb, m->r[i].body, a);
			memcpy(nb + a, m->r[i + 1].body, b);
			free(m->r[i].body);
			m->r[i].body = nb;
			m->r[i].blen = m->r[i].size = a + b;
			ms_remove(m, i + 1);
			return true;
		} else {
			size_t cut = fz_below(rnd, m->r[i].blen + 1);

			r.marker = FZ_M_DATA;
			r.sized = true;
			r.blen = r.size = m->r[i].blen - cut;
			r.body = dup_bytes(m->r[i].body + cut, r.blen);
			if (!r.body || !ms_insert(m, i + 1, &r)) {
				free(r.body);
				return false;
			}
			m->r[i].blen = m->r[i].size = cut;
			return true;
		}
	case 13: /* libFuzzer's mutations inside one body */
		if (!m->n || !m->r[i].sized || m->r[i].blen > 65536)
			return false;
		{
			size_t cap = m->r[i].blen + 64;
			uint8_t *nb = malloc(cap);

			if (!nb)
				return false;
			memcpy(nb, m->r[i].body, m->r[i].blen);
			m->r[i].blen = fallback(nb, m->r[i].blen, cap);
			if (m->r[i].size == 0 || fz_below(rnd, 4))
				m->r[i].size = m->r[i].blen;
			free(m->r[i].body);
			m->r[i].body = nb;
		}
		return true;
	case 14: /* a CRC left stale on purpose, or a trailer field that lies under a good CRC */
		switch (fz_below(rnd, 4)) {
		case 3:
			fx->trailer_lie = 1 + (int)fz_below(rnd, 4);
			break;
		case 0:
			fx->header = false;
			m->hdr[m->hlen - 1 - fz_below(rnd, 4)] ^= (uint8_t)(1 + fz_below(rnd, 255));
			break;
		case 1:
			fx->trailer = false;
			break;
		default:
			fx->cancel = false;
			break;
		}
		return true;
	default: /* the bytes after the trailer, which the reader never reads */
		if (m->tail_len || fz_below(rnd, 2)) {
			free(m->tail);
			m->tail_len = fz_below(rnd, 32);
			m->tail = malloc(m->tail_len + 1);
			if (!m->tail) {
				m->tail_len = 0;
				return false;
			}
			for (size_t k = 0; k < m->tail_len; k++)
				m->tail[k] = (uint8_t)fz_rand(rnd);
		}
		return true;
	}
}

size_t fz_stream_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback)
{
	struct fixes fx = { true, true, true, 0 };
	struct fz_rand rnd;
	struct mstream m;
	size_t trunc = 0, len;
	int ops, done = 0;

	fz_rand_seed(&rnd, seed);
	/* Without a header to hold on to, or now and then anyway: plain byte mutations. */
	if (!fz_below(&rnd, 16) || !ms_parse(&m, data, size))
		return fallback(data, size, max);
	ops = 1 + (int)fz_below(&rnd, fz_below(&rnd, 4) ? 2 : 5);
	for (int k = 0; k < 8 * ops && done < ops; k++)
		done += stream_op(&m, &rnd, &fx, &trunc, fallback);
	len = ms_write(&m, data, max, fx);
	ms_free(&m);
	if (trunc && len)
		len = trunc % len;
	return len ? len : fallback(data, size, max);
}

/* ---------------------------------------------------------- return path */

struct rmsg {
	uint8_t *b; /* marker, length, body, CRC */
	size_t len;
};

size_t fz_return_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback, const struct fz_rp_msg *loaded)
{
	struct rmsg msg[256];
	size_t n = 0, pos = 0, out = 0, tail;
	struct fz_rand rnd;
	bool fix = true;
	int ops;

	fz_rand_seed(&rnd, seed);
	if (!fz_below(&rnd, 16))
		return fallback(data, size, max);
	while (n < 256 && size - pos >= 16) {
		size_t l = fz_be32(data + pos + 8);

		if ((fz_be64(data + pos) & FZ_RP_MASK) != FZ_RP_BASE || l > FZ_RP_BODY_MAX ||
		    size - pos < 16 + l)
			break;
		msg[n].len = 16 + l;
		msg[n].b = dup_bytes(data + pos, msg[n].len);
		if (!msg[n].b)
			break;
		n++;
		pos += 16 + l;
	}
	tail = size; /* the bytes after the last whole message stay, unless cut */
	ops = 1 + (int)fz_below(&rnd, 3);
	for (int k = 0; k < ops; k++) {
		size_t i = fz_below(&rnd, n ? n : 1), j = fz_below(&rnd, n ? n : 1);
		struct fz_rp_msg nm = { 0 };
		struct rmsg t;
		uint8_t *b;

		switch (fz_below(&rnd, 10)) {
		case 0: /* flip body bits */
			if (!n || msg[i].len <= 16)
				break;
			msg[i].b[12 + fz_below(&rnd, msg[i].len - 16)] ^= (uint8_t)(1u << fz_below(&rnd, 8));
			break;
		case 1: /* another type */
			if (!n)
				break;
			fz_put_be64(msg[i].b, FZ_RP_BASE | (fz_below(&rnd, 4) ? 1 + fz_below(&rnd, 3) :
								fz_below(&rnd, 0x10000)));
			break;
		case 2: /* a length that lies (the message stays as long as it was) */
			if (!n)
				break;
			fz_put_be32(msg[i].b + 8, (uint32_t)huge_size(&rnd, fz_be32(msg[i].b + 8)));
			break;
		case 3: /* duplicate */
			if (!n || n == 256)
				break;
			t.len = msg[i].len;
			t.b = dup_bytes(msg[i].b, t.len);
			if (!t.b)
				break;
			memmove(&msg[j + 1], &msg[j], (n - j) * sizeof(msg[0]));
			msg[j] = t;
			n++;
			break;
		case 4: /* drop */
			if (!n)
				break;
			free(msg[i].b);
			memmove(&msg[i], &msg[i + 1], (n - i - 1) * sizeof(msg[0]));
			n--;
			break;
		case 5: /* swap */
			if (n < 2)
				break;
			t = msg[i];
			msg[i] = msg[j];
			msg[j] = t;
			break;
		case 6: /* a well-formed message: the right LOADED, a near miss, an ACK, a FAILED */
			if (n == 256)
				break;
			switch (fz_below(&rnd, 4)) {
			case 0:
			case 1:
				if (loaded)
					nm = *loaded;
				nm.type = FZ_RP_LOADED;
				if (fz_below(&rnd, 2)) {
					uint64_t *f[] = { &nm.bytes, &nm.records, &nm.data_bytes };

					if (fz_below(&rnd, 4))
						*f[fz_below(&rnd, 3)] += 1 - 2 * fz_below(&rnd, 2);
					else
						nm.crc ^= 1u << fz_below(&rnd, 32);
				}
				break;
			case 2:
				nm.type = FZ_RP_ACK;
				nm.bytes = fz_rand(&rnd) % 100000;
				break;
			default:
				nm.type = FZ_RP_FAILED;
				nm.bytes = fz_rand(&rnd) % 100000;
				nm.error = -(int32_t)(1 + fz_below(&rnd, 133));
				rand_printable(&rnd, nm.reason, fz_below(&rnd, 60));
				break;
			}
			b = malloc(12 + FZ_RP_BODY_MAX + 4);
			if (!b)
				break;
			t.len = fz_rp_encode(&nm, b);
			t.b = b;
			memmove(&msg[j + 1], &msg[j], (n - j) * sizeof(msg[0]));
			msg[j] = t;
			n++;
			break;
		case 7: /* FAILED with odd fields */
			if (!n || msg[i].len < 16 + 14)
				break;
			if (fz_below(&rnd, 2))
				fz_put_be32(msg[i].b + 20, fz_below(&rnd, 2) ? 0 : (uint32_t)fz_rand(&rnd));
			else
				fz_put_be16(msg[i].b + 24, (uint16_t)huge_size(&rnd, fz_be16(msg[i].b + 24)));
			break;
		case 8: /* a stale CRC */
			fix = false;
			if (n)
				msg[i].b[msg[i].len - 1] ^= (uint8_t)(1 + fz_below(&rnd, 255));
			break;
		default: /* cut what follows the last whole message */
			tail = pos + fz_below(&rnd, size - pos + 1);
			break;
		}
	}
	for (size_t i = 0; i < n; i++) {
		size_t l = msg[i].len - 16;

		if (fix && fz_be32(msg[i].b + 8) == l)
			fz_put_be32(msg[i].b + 12 + l, fz_crc32c(0, msg[i].b, 12 + l));
	}
	/* Out: the messages, then the bytes that were not messages (up to tail). */
	{
		uint8_t *o = malloc(max ? max : 1);

		if (!o)
			goto done;
		for (size_t i = 0; i < n && out + msg[i].len <= max; i++) {
			memcpy(o + out, msg[i].b, msg[i].len);
			out += msg[i].len;
		}
		if (tail > pos && out + (tail - pos) <= max) {
			memcpy(o + out, data + pos, tail - pos);
			out += tail - pos;
		}
		memcpy(data, o, out);
		free(o);
	}
done:
	for (size_t i = 0; i < n; i++)
		free(msg[i].b);
	return out ? out : fallback(data, size, max);
}
