/* SPDX-License-Identifier: MIT */
/*
 * The libvfiomig stream format: the writer and the reader (header,
 * records, phase grammar, trailer check) and the identity comparison.
 * The CRC32C they compute lives in crc32c.c. docs/stream-format.md is
 * the normative description; the golden streams under
 * tests/data/streams must keep parsing forever.
 */
#include "internal.h"
#include "crc32c.h"
#include "format.h"
#include "bytes.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

/* ------------------------------------------------------- shared bits */

/* Sizes of the fields a stream is built from (all big-endian). */
#define MARKER_LEN 8 /* u64 record marker */
#define SIZE_LEN   8 /* u64 body size, after the marker of a record with a body */
#define STRLEN_LEN 2 /* u16 length before each header string */
#define CRC_LEN    4 /* u32 CRC32C that closes the header and the trailer */

#define CLASS_CODE_MAX 0xffffffu /* PCI class codes are 24 bits */

/* Header field offsets (version 1). */
#define HDR_MAGIC     0
#define HDR_VERSION   8
#define HDR_LEN       12
#define HDR_PROTOCOL  16
#define HDR_FLAGS     20
#define HDR_KIND      24
#define HDR_VENDOR    26
#define HDR_DEVICE    28
#define HDR_SUBVENDOR 30
#define HDR_SUBDEVICE 32
#define HDR_RESERVED  34
#define HDR_CLASS     36
#define HDR_STRINGS   40
/* Magic, version and length: what a reader needs to know how much header follows. */
#define HDR_PREFIX    (HDR_LEN + 4)

/*
 * Trailer body field offsets (from TRL_BODY, the end of its size field).
 * Its own CRC is always the last CRC_LEN bytes of the body, however long
 * later versions make it.
 */
#define TRL_BODY    (MARKER_LEN + SIZE_LEN)
#define TRL_TOTAL   0
#define TRL_RECORDS 8
#define TRL_BYTES   16
#define TRL_CRC     24

/*
 * Cancel body field offsets (from CNC_BODY). After the reason: the
 * stream CRC, then the record's own CRC, always the last CRC_LEN bytes.
 */
#define CNC_BODY   (MARKER_LEN + SIZE_LEN)
#define CNC_ERRNO  0
#define CNC_REASON 4 /* be16 length, then the bytes */
#define ERRNO_MAX  4095 /* what a negative errno can be */

/* Every marker this format defines (mandatory or optional) shares these top bits. */
#define RECORD_MARKER_MASK 0xfffffffffff00000ull
#define RECORD_MARKER_BASE 0xffffffffef100000ull
/* The magic read as a marker: a header where a record should be. */
#define MAGIC_AS_MARKER    0x895646494f4d4947ull

/* The public sizes in format.h follow from the layout above. */
_Static_assert(VM_FMT_HDR_FIXED == HDR_STRINGS, "fixed header size");
_Static_assert(VM_FMT_HDR_MIN == HDR_STRINGS + 2 * STRLEN_LEN + CRC_LEN, "minimal header size");
_Static_assert(VM_FMT_TRAILER_LEN == TRL_CRC + 4 + CRC_LEN, "version 1 trailer size");

/* Where the writer and reader are in the grammar. */
enum fmt_state {
	ST_HEADER = 0, /* nothing yet */
	ST_SETUP,      /* header done: the setup phase must open */
	ST_PHASE,      /* inside a phase */
	ST_BETWEEN,    /* a phase ended: pre-copy or stop-copy must open */
	ST_TRAILER,    /* stop-copy ended: the trailer must follow */
	ST_DONE,
};

static const char *marker_name(uint64_t m)
{
	switch (m) {
	case VM_FMT_END_OF_STATE:
		return "END_OF_STATE";
	case VM_FMT_DEV_CONFIG_STATE:
		return "DEV_CONFIG_STATE";
	case VM_FMT_DEV_SETUP_STATE:
		return "DEV_SETUP_STATE";
	case VM_FMT_DEV_DATA_STATE:
		return "DEV_DATA_STATE";
	case VM_FMT_INIT_DATA_SENT:
		return "INIT_DATA_SENT";
	case VM_FMT_PRECOPY_STATE:
		return "PRECOPY_STATE";
	case VM_FMT_STOPCOPY_STATE:
		return "STOPCOPY_STATE";
	case VM_FMT_TRAILER:
		return "TRAILER";
	case VM_FMT_CANCEL:
		return "CANCEL";
	default:
		return VM_FMT_IS_OPTIONAL(m) ? "optional" : "unknown";
	}
}

static const char *phase_name(uint32_t phase)
{
	switch (phase) {
	case VM_FMT_PHASE_SETUP:
		return "setup";
	case VM_FMT_PHASE_PRECOPY:
		return "pre-copy";
	case VM_FMT_PHASE_STOPCOPY:
		return "stop-copy";
	default:
		return "no";
	}
}

static uint64_t phase_marker(uint32_t phase)
{
	switch (phase) {
	case VM_FMT_PHASE_SETUP:
		return VM_FMT_DEV_SETUP_STATE;
	case VM_FMT_PHASE_PRECOPY:
		return VM_FMT_PRECOPY_STATE;
	case VM_FMT_PHASE_STOPCOPY:
		return VM_FMT_STOPCOPY_STATE;
	default:
		return 0;
	}
}


__attribute__((format(printf, 4, 5)))
static int fmt_fail(struct vfiomig_stream *s, int *sticky, int err, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (sticky)
		*sticky = err;
	return vm_err(vm_stream_ctx(s), err, "%s: stream format: %s", vm_stream_desc(s), msg);
}

/* ----------------------------------------------------------- identity */

static void id_str(char *buf, size_t n, const struct vm_fmt_identity *id, bool full)
{
	int k;

	if (id->kind == VM_FMT_ID_PCI)
		k = snprintf(buf, n, "PCI %04x:%04x", id->vendor, id->device);
	else if (id->kind == VM_FMT_ID_MDEV)
		k = snprintf(buf, n, "mdev%s%s %04x:%04x", id->mdev_type[0] ? " " : "",
			     id->mdev_type, id->vendor, id->device);
	else
		k = snprintf(buf, n, "device kind %u %04x:%04x", id->kind, id->vendor, id->device);
	if (full && k >= 0 && (size_t)k < n)
		snprintf(buf + k, n - (size_t)k, " (subsystem %04x:%04x, class %06x)",
			 id->subvendor, id->subdevice, id->class_code);
}

int vm_fmt_identity_check(struct vfiomig_ctx *ctx, const char *what,
			  const struct vm_fmt_identity *stream, const struct vm_fmt_identity *dev)
{
	char a[384], b[384];

	if (!stream || !dev)
		return -EINVAL;
	what = what ? what : "stream identity";
	if (stream->kind != dev->kind || stream->vendor != dev->vendor ||
	    stream->device != dev->device) {
		id_str(a, sizeof(a), stream, false);
		id_str(b, sizeof(b), dev, false);
		return vm_err(ctx, -ENODEV, "%s: stream is for %s, device is %s", what, a, b);
	}
	if (stream->subvendor != dev->subvendor || stream->subdevice != dev->subdevice ||
	    stream->class_code != dev->class_code) {
		id_str(a, sizeof(a), stream, true);
		id_str(b, sizeof(b), dev, true);
		return vm_err(ctx, -ENODEV, "%s: stream is for %s, device is %s", what, a, b);
	}
	if (stream->mdev_type[0] && dev->mdev_type[0] &&
	    strcmp(stream->mdev_type, dev->mdev_type) != 0)
		return vm_err(ctx, -ENODEV,
			      "%s: stream is for mdev type %s, device is mdev type %s", what,
			      stream->mdev_type, dev->mdev_type);
	if (stream->driver[0] && dev->driver[0] && strcmp(stream->driver, dev->driver) != 0)
		return vm_err(ctx, -ENODEV,
			      "%s: stream was saved through driver %s, device is bound to %s", what,
			      stream->driver, dev->driver);
	return 0;
}

/* ------------------------------------------------------------- writer */

void vm_fmt_writer_init(struct vm_fmt_writer *w, struct vfiomig_stream *s)
{
	memset(w, 0, sizeof(*w));
	w->s = s;
	w->state = ST_HEADER;
}

static int w_out(struct vm_fmt_writer *w, const void *buf, size_t len, bool crc)
{
	int err = vfiomig_stream_write(w->s, buf, len);

	if (err) {
		w->err = err;
		return err;
	}
	if (crc)
		w->crc = vm_crc32c(w->crc, buf, len);
	w->offset += len;
	return 0;
}

/* Common entry checks: healthy, no data body pending. */
static int w_ready(struct vm_fmt_writer *w, const char *what)
{
	if (!w || !w->s)
		return -EINVAL;
	if (w->err)
		return fmt_fail(w->s, NULL, w->err, "writing %s: the writer failed earlier", what);
	if (w->body_left)
		return fmt_fail(w->s, NULL, -EINVAL,
				"writing %s: the open data record still needs %" PRIu64 " bytes",
				what, w->body_left);
	return 0;
}

static int w_record(struct vm_fmt_writer *w, uint64_t marker, bool sized, uint64_t size)
{
	unsigned char rec[MARKER_LEN + SIZE_LEN];

	put_be64(rec, marker);
	put_be64(rec + MARKER_LEN, size);
	return w_out(w, rec, sized ? MARKER_LEN + SIZE_LEN : MARKER_LEN, true);
}

static int w_in_phase(struct vm_fmt_writer *w, uint64_t marker, bool data_phase)
{
	if (w->state != ST_PHASE)
		return fmt_fail(w->s, NULL, -EINVAL, "%s record outside a phase",
				marker_name(marker));
	if (data_phase && w->phase == VM_FMT_PHASE_SETUP)
		return fmt_fail(w->s, NULL, -EINVAL, "%s record in the setup phase",
				marker_name(marker));
	return 0;
}

static int w_size_ok(struct vm_fmt_writer *w, uint64_t marker, uint64_t size)
{
	if (size > VM_FMT_RECORD_MAX)
		return fmt_fail(w->s, NULL, -EFBIG,
				"%s record of %" PRIu64 " bytes: records are at most %llu bytes "
				"(split the data)",
				marker_name(marker), size, VM_FMT_RECORD_MAX);
	return 0;
}

int vm_fmt_write_header(struct vm_fmt_writer *w, const struct vm_fmt_header *h)
{
	unsigned char hdr[HDR_STRINGS + 2 * (STRLEN_LEN + VM_FMT_STR_MAX) + CRC_LEN];
	size_t tlen, dlen, pos;
	uint32_t hlen;
	int err;

	err = w_ready(w, "the header");
	if (err)
		return err;
	if (!h)
		return -EINVAL;
	if (w->state != ST_HEADER)
		return fmt_fail(w->s, NULL, -EINVAL, "the header is already written");
	if (h->id.kind != VM_FMT_ID_PCI && h->id.kind != VM_FMT_ID_MDEV)
		return fmt_fail(w->s, NULL, -EINVAL, "header: unknown device kind %u", h->id.kind);
	if (h->protocol != VM_FMT_PROTO_V1 && h->protocol != VM_FMT_PROTO_V2)
		return fmt_fail(w->s, NULL, -EINVAL, "header: unknown protocol %u", h->protocol);
	if (h->flags & ~VM_FMT_FLAGS_KNOWN)
		return fmt_fail(w->s, NULL, -EINVAL, "header: unknown flags 0x%x", h->flags);
	if (h->id.class_code > CLASS_CODE_MAX)
		return fmt_fail(w->s, NULL, -EINVAL, "header: class code 0x%x is over 24 bits",
				h->id.class_code);
	tlen = strnlen(h->id.mdev_type, sizeof(h->id.mdev_type));
	dlen = strnlen(h->id.driver, sizeof(h->id.driver));
	if (tlen > VM_FMT_STR_MAX || dlen > VM_FMT_STR_MAX ||
	    !vm_printable((const unsigned char *)h->id.mdev_type, tlen) ||
	    !vm_printable((const unsigned char *)h->id.driver, dlen))
		return fmt_fail(w->s, NULL, -EINVAL,
				"header: mdev type and driver must be printable ASCII of at most "
				"%u bytes",
				VM_FMT_STR_MAX);

	hlen = (uint32_t)(HDR_STRINGS + STRLEN_LEN + tlen + STRLEN_LEN + dlen + CRC_LEN);
	memcpy(hdr + HDR_MAGIC, VM_FMT_MAGIC, VM_FMT_MAGIC_LEN);
	put_be32(hdr + HDR_VERSION, VM_FMT_VERSION);
	put_be32(hdr + HDR_LEN, hlen);
	put_be32(hdr + HDR_PROTOCOL, h->protocol);
	put_be32(hdr + HDR_FLAGS, h->flags);
	put_be16(hdr + HDR_KIND, h->id.kind);
	put_be16(hdr + HDR_VENDOR, h->id.vendor);
	put_be16(hdr + HDR_DEVICE, h->id.device);
	put_be16(hdr + HDR_SUBVENDOR, h->id.subvendor);
	put_be16(hdr + HDR_SUBDEVICE, h->id.subdevice);
	put_be16(hdr + HDR_RESERVED, 0);
	put_be32(hdr + HDR_CLASS, h->id.class_code);
	pos = HDR_STRINGS;
	put_be16(hdr + pos, (uint16_t)tlen);
	memcpy(hdr + pos + STRLEN_LEN, h->id.mdev_type, tlen);
	pos += STRLEN_LEN + tlen;
	put_be16(hdr + pos, (uint16_t)dlen);
	memcpy(hdr + pos + STRLEN_LEN, h->id.driver, dlen);
	pos += STRLEN_LEN + dlen;
	put_be32(hdr + pos, vm_crc32c(0, hdr, pos));

	err = w_out(w, hdr, hlen, true);
	if (err)
		return err;
	w->state = ST_SETUP;
	return 0;
}

int vm_fmt_begin_phase(struct vm_fmt_writer *w, uint32_t phase)
{
	uint64_t marker = phase_marker(phase);
	bool ok;
	int err;

	err = w_ready(w, "a phase start");
	if (err)
		return err;
	if (!marker)
		return fmt_fail(w->s, NULL, -EINVAL, "unknown phase %u", phase);
	if (phase == VM_FMT_PHASE_SETUP)
		ok = w->state == ST_SETUP;
	else
		ok = w->state == ST_BETWEEN;
	if (!ok) {
		const char *why = "stop-copy has ended";

		if (w->state == ST_PHASE)
			why = "a phase is open";
		else if (w->state == ST_SETUP)
			why = "the setup phase comes first";
		else if (w->state == ST_HEADER)
			why = "no header yet";
		else if (w->state == ST_BETWEEN)
			why = "setup happens once";
		return fmt_fail(w->s, NULL, -EINVAL, "a %s phase cannot start here: %s",
				phase_name(phase), why);
	}
	err = w_record(w, marker, false, 0);
	if (err)
		return err;
	w->state = ST_PHASE;
	w->phase = phase;
	return 0;
}

int vm_fmt_end_phase(struct vm_fmt_writer *w)
{
	int err = w_ready(w, "END_OF_STATE");

	if (err)
		return err;
	if (w->state != ST_PHASE)
		return fmt_fail(w->s, NULL, -EINVAL, "END_OF_STATE without an open phase");
	err = w_record(w, VM_FMT_END_OF_STATE, false, 0);
	if (err)
		return err;
	w->state = w->phase == VM_FMT_PHASE_STOPCOPY ? ST_TRAILER : ST_BETWEEN;
	return 0;
}

int vm_fmt_begin_data(struct vm_fmt_writer *w, uint64_t size)
{
	int err = w_ready(w, "DEV_DATA_STATE");

	if (err)
		return err;
	err = w_in_phase(w, VM_FMT_DEV_DATA_STATE, true);
	if (err)
		return err;
	err = w_size_ok(w, VM_FMT_DEV_DATA_STATE, size);
	if (err)
		return err;
	err = w_record(w, VM_FMT_DEV_DATA_STATE, true, size);
	if (err)
		return err;
	w->data_records++;
	w->data_bytes += size;
	w->body_left = size;
	return 0;
}

int vm_fmt_write_body(struct vm_fmt_writer *w, const void *buf, size_t len)
{
	int err;

	if (!w || !w->s)
		return -EINVAL;
	if (w->err)
		return fmt_fail(w->s, NULL, w->err,
				"writing a record body: the writer failed earlier");
	if (len > w->body_left)
		return fmt_fail(w->s, NULL, -EINVAL,
				"%zu body bytes given where the data record has %" PRIu64
				" left",
				len, w->body_left);
	if (!len)
		return 0;
	err = w_out(w, buf, len, true);
	if (err)
		return err;
	w->body_left -= len;
	return 0;
}

int vm_fmt_data_window(struct vm_fmt_writer *w, size_t max, void **win, void **body)
{
	int err = w_ready(w, "DEV_DATA_STATE");
	unsigned char *p;

	if (!err)
		err = w_in_phase(w, VM_FMT_DEV_DATA_STATE, true);
	if (!err)
		err = w_size_ok(w, VM_FMT_DEV_DATA_STATE, max);
	if (err)
		return err;
	p = vm_stream_write_window(w->s, MARKER_LEN + SIZE_LEN + max);
	if (!p)
		return 0;
	*win = p;
	*body = p + MARKER_LEN + SIZE_LEN;
	return 1;
}

int vm_fmt_commit_data(struct vm_fmt_writer *w, void *win, size_t len)
{
	unsigned char *p = win;
	int err = w_ready(w, "DEV_DATA_STATE");

	if (!err)
		err = w_in_phase(w, VM_FMT_DEV_DATA_STATE, true);
	if (!err)
		err = w_size_ok(w, VM_FMT_DEV_DATA_STATE, len);
	if (err)
		return err;
	put_be64(p, VM_FMT_DEV_DATA_STATE);
	put_be64(p + MARKER_LEN, len);
	w->crc = vm_crc32c(w->crc, p, MARKER_LEN + SIZE_LEN + len);
	vm_stream_write_commit(w->s, MARKER_LEN + SIZE_LEN + len);
	w->offset += MARKER_LEN + SIZE_LEN + len;
	w->data_records++;
	w->data_bytes += len;
	return 0;
}

int vm_fmt_write_data(struct vm_fmt_writer *w, const void *buf, size_t len)
{
	int err = vm_fmt_begin_data(w, len);

	return err ? err : vm_fmt_write_body(w, buf, len);
}

static int w_sized(struct vm_fmt_writer *w, uint64_t marker, const void *buf, size_t len)
{
	int err = w_size_ok(w, marker, len);

	if (err)
		return err;
	err = w_record(w, marker, true, len);
	if (err || !len)
		return err;
	return w_out(w, buf, len, true);
}

int vm_fmt_write_config(struct vm_fmt_writer *w, const void *buf, size_t len)
{
	int err = w_ready(w, "DEV_CONFIG_STATE");

	if (err)
		return err;
	err = w_in_phase(w, VM_FMT_DEV_CONFIG_STATE, false);
	if (err)
		return err;
	if (w->config_sent)
		return fmt_fail(w->s, NULL, -EINVAL, "DEV_CONFIG_STATE may appear once per stream");
	err = w_sized(w, VM_FMT_DEV_CONFIG_STATE, buf, len);
	if (err)
		return err;
	w->config_sent = true;
	return 0;
}

int vm_fmt_write_optional(struct vm_fmt_writer *w, uint64_t marker, const void *buf, size_t len)
{
	int err = w_ready(w, "an optional record");

	if (err)
		return err;
	if (!VM_FMT_IS_OPTIONAL(marker))
		return fmt_fail(w->s, NULL, -EINVAL,
				"marker 0x%016" PRIx64 " is outside the optional range", marker);
	err = w_in_phase(w, marker, false);
	return err ? err : w_sized(w, marker, buf, len);
}

int vm_fmt_write_init_data_sent(struct vm_fmt_writer *w)
{
	int err = w_ready(w, "INIT_DATA_SENT");

	if (err)
		return err;
	if (w->state != ST_PHASE || w->phase != VM_FMT_PHASE_PRECOPY)
		return fmt_fail(w->s, NULL, -EINVAL, "INIT_DATA_SENT outside a pre-copy round");
	if (w->init_sent)
		return fmt_fail(w->s, NULL, -EINVAL, "INIT_DATA_SENT may appear once per stream");
	err = w_record(w, VM_FMT_INIT_DATA_SENT, false, 0);
	if (err)
		return err;
	w->init_sent = true;
	return 0;
}

int vm_fmt_write_trailer(struct vm_fmt_writer *w)
{
	unsigned char t[TRL_BODY + VM_FMT_TRAILER_LEN];
	int err = w_ready(w, "the trailer");

	if (err)
		return err;
	if (w->state != ST_TRAILER)
		return fmt_fail(w->s, NULL, -EINVAL, "the trailer must follow the stop-copy phase");
	put_be64(t, VM_FMT_TRAILER);
	put_be64(t + MARKER_LEN, VM_FMT_TRAILER_LEN);
	put_be64(t + TRL_BODY + TRL_TOTAL, w->offset);
	put_be64(t + TRL_BODY + TRL_RECORDS, w->data_records);
	put_be64(t + TRL_BODY + TRL_BYTES, w->data_bytes);
	put_be32(t + TRL_BODY + TRL_CRC, w->crc);
	put_be32(t + sizeof(t) - CRC_LEN, vm_crc32c(0, t, sizeof(t) - CRC_LEN));
	/* The trailer is outside the stream CRC it carries (it has its own). */
	err = w_out(w, t, sizeof(t), false);
	if (err)
		return err;
	w->state = ST_DONE;
	return 0;
}

bool vm_fmt_can_cancel(const struct vm_fmt_writer *w)
{
	return w && w->s && !w->err && !w->body_left && w->state != ST_HEADER &&
	       w->state != ST_DONE;
}

int vm_fmt_write_cancel(struct vm_fmt_writer *w, int error, const char *reason)
{
	unsigned char t[CNC_BODY + CNC_REASON + STRLEN_LEN + VM_FMT_STR_MAX + 2 * CRC_LEN];
	size_t rlen = 0, pos;
	int err = w_ready(w, "a CANCEL record");

	if (err)
		return err;
	if (w->state == ST_HEADER || w->state == ST_DONE)
		return fmt_fail(w->s, NULL, -EINVAL, "CANCEL %s",
				w->state == ST_HEADER ? "before the header" : "after the trailer");
	if (error >= 0 || error < -ERRNO_MAX)
		return fmt_fail(w->s, NULL, -EINVAL, "CANCEL with error %d (a negative errno)",
				error);
	/* The reason is cut at the first byte the format does not carry, and at 255 bytes. */
	while (reason && rlen < VM_FMT_STR_MAX && reason[rlen] &&
	       vm_printable((const unsigned char *)reason + rlen, 1))
		rlen++;
	put_be64(t, VM_FMT_CANCEL);
	pos = CNC_BODY;
	put_be32(t + pos + CNC_ERRNO, (uint32_t)-error);
	put_be16(t + pos + CNC_REASON, (uint16_t)rlen);
	memcpy(t + pos + CNC_REASON + STRLEN_LEN, reason, rlen);
	pos += CNC_REASON + STRLEN_LEN + rlen;
	put_be32(t + pos, w->crc); /* what came before: the destination checks it too */
	pos += CRC_LEN;
	put_be64(t + MARKER_LEN, pos + CRC_LEN - CNC_BODY);
	put_be32(t + pos, vm_crc32c(0, t, pos));
	pos += CRC_LEN;
	/* Like the trailer, outside the stream CRC it carries. */
	err = w_out(w, t, pos, false);
	if (err)
		return err;
	w->state = ST_DONE;
	return 0;
}

/* ------------------------------------------------------------- reader */

void vm_fmt_reader_init(struct vm_fmt_reader *r, struct vfiomig_stream *s)
{
	memset(r, 0, sizeof(*r));
	r->s = s;
	r->max_record = VM_FMT_RECORD_MAX;
	r->state = ST_HEADER;
}

#define r_fail(rd, e, ...) fmt_fail((rd)->s, &(rd)->err, e, __VA_ARGS__)

/*
 * Read exactly len bytes, folding them into the running CRC when `crc`.
 * The end of the stream anywhere before the trailer is a truncation.
 */
static int r_in(struct vm_fmt_reader *r, void *buf, size_t len, bool crc, const char *what)
{
	int err = vfiomig_stream_read(r->s, buf, len);

	if (err == -ENODATA || err == -EPIPE)
		return r_fail(r, -EPIPE,
			      "the stream ends at offset %" PRIu64 " inside %s: truncated stream",
			      r->offset, what);
	if (err) {
		r->err = err;
		return err;
	}
	if (crc)
		r->crc = vm_crc32c(r->crc, buf, len);
	r->offset += len;
	return 0;
}

/* Read and drop n bytes. */
static int r_skip(struct vm_fmt_reader *r, uint64_t n, bool crc, const char *what)
{
	unsigned char buf[4096];

	while (n) {
		size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
		int err = r_in(r, buf, k, crc, what);

		if (err)
			return err;
		n -= k;
	}
	return 0;
}

static int r_ready(struct vm_fmt_reader *r, const char *what)
{
	if (!r || !r->s)
		return -EINVAL;
	if (r->err)
		return fmt_fail(r->s, NULL, r->err, "%s: the reader failed earlier", what);
	return 0;
}

static int parse_string(struct vm_fmt_reader *r, const unsigned char *hdr, size_t end,
			size_t *pos, char *out, const char *what)
{
	size_t len;

	if (*pos + STRLEN_LEN > end)
		return r_fail(r, -EBADMSG, "header: the %s length lies outside the header", what);
	len = get_be16(hdr + *pos);
	if (len > VM_FMT_STR_MAX)
		return r_fail(r, -EBADMSG, "header: %s of %zu bytes (at most %u)", what, len,
			      VM_FMT_STR_MAX);
	if (*pos + STRLEN_LEN + len > end)
		return r_fail(r, -EBADMSG, "header: the %s runs past the header", what);
	if (!vm_printable(hdr + *pos + STRLEN_LEN, len))
		return r_fail(r, -EBADMSG, "header: the %s is not printable ASCII", what);
	memcpy(out, hdr + *pos + STRLEN_LEN, len);
	out[len] = '\0';
	*pos += STRLEN_LEN + len;
	return 0;
}

/*
 * Header step 1: the prefix. Magic, version and length are checked
 * before anything more is read, so a stream that is not ours (or is
 * from a newer library) costs no allocation.
 */
static int r_header_prefix(struct vm_fmt_reader *r, unsigned char *prefix, uint32_t *hlen)
{
	uint32_t version, len;
	int err;

	err = r_in(r, prefix, HDR_PREFIX, true, "the header");
	if (err)
		return err;
	if ((get_be64(prefix) & RECORD_MARKER_MASK) == RECORD_MARKER_BASE)
		return r_fail(r, -EBADMSG,
			      "a record marker (0x%016" PRIx64 ", %s) where the stream header "
			      "should be: the stream was read at the wrong point (it was read "
			      "before, or its start was lost)", get_be64(prefix),
			      marker_name(get_be64(prefix)));
	if (memcmp(prefix + HDR_MAGIC, VM_FMT_MAGIC, VM_FMT_MAGIC_LEN) != 0)
		return r_fail(r, -EBADMSG,
			      "not a libvfiomig stream (magic %02x %02x %02x %02x %02x %02x %02x "
			      "%02x, expected 89 56 46 49 4f 4d 49 47; or one read at the wrong "
			      "point)",
			      prefix[0], prefix[1], prefix[2], prefix[3], prefix[4], prefix[5],
			      prefix[6], prefix[7]);
	version = get_be32(prefix + HDR_VERSION);
	if (version == 0)
		return r_fail(r, -EBADMSG, "header: format version 0 does not exist");
	if (version > VM_FMT_VERSION)
		return r_fail(r, -EPROTONOSUPPORT,
			      "format version %u, this library reads up to %u: written by a newer "
			      "libvfiomig?",
			      version, VM_FMT_VERSION);
	len = get_be32(prefix + HDR_LEN);
	if (len < VM_FMT_HDR_MIN || len > VM_FMT_HDR_MAX)
		return r_fail(r, -EBADMSG, "header length %u is out of range (%u..%u)", len,
			      VM_FMT_HDR_MIN, VM_FMT_HDR_MAX);
	*hlen = len;
	return 0;
}

/*
 * Header step 2: the rest of the hlen bytes (hdr already holds the
 * prefix), then its CRC, before any field of it is believed.
 */
static int r_header_rest(struct vm_fmt_reader *r, unsigned char *hdr, uint32_t hlen)
{
	uint32_t stored, computed;
	int err;

	err = r_in(r, hdr + HDR_PREFIX, hlen - HDR_PREFIX, true, "the header");
	if (err)
		return err;
	stored = get_be32(hdr + hlen - CRC_LEN);
	computed = vm_crc32c(0, hdr, hlen - CRC_LEN);
	if (stored != computed)
		return r_fail(r, -EBADMSG,
			      "header CRC32C is 0x%08x, computed 0x%08x: corrupt header", stored,
			      computed);
	return 0;
}

/* Header step 3: the fixed fields, each checked against what this library knows. */
static int r_header_fields(struct vm_fmt_reader *r, const unsigned char *hdr,
			   struct vm_fmt_header *out)
{
	out->version = get_be32(hdr + HDR_VERSION);
	out->hdr_len = get_be32(hdr + HDR_LEN);
	out->protocol = get_be32(hdr + HDR_PROTOCOL);
	out->flags = get_be32(hdr + HDR_FLAGS);
	out->id.kind = get_be16(hdr + HDR_KIND);
	out->id.vendor = get_be16(hdr + HDR_VENDOR);
	out->id.device = get_be16(hdr + HDR_DEVICE);
	out->id.subvendor = get_be16(hdr + HDR_SUBVENDOR);
	out->id.subdevice = get_be16(hdr + HDR_SUBDEVICE);
	out->id.class_code = get_be32(hdr + HDR_CLASS);

	if (out->protocol != VM_FMT_PROTO_V1 && out->protocol != VM_FMT_PROTO_V2)
		return r_fail(r, -EPROTONOSUPPORT,
			      "header: migration protocol %u unknown: written by a newer "
			      "libvfiomig?",
			      out->protocol);
	if (out->flags & VM_FMT_FLAGS_INCOMPAT & ~VM_FMT_FLAGS_KNOWN)
		return r_fail(r, -EPROTONOSUPPORT,
			      "header: required feature flags 0x%04x unknown: written by a newer "
			      "libvfiomig?",
			      out->flags & VM_FMT_FLAGS_INCOMPAT & ~VM_FMT_FLAGS_KNOWN);
	if (out->id.kind != VM_FMT_ID_PCI && out->id.kind != VM_FMT_ID_MDEV)
		return r_fail(r, -EPROTONOSUPPORT,
			      "header: device kind %u unknown: written by a newer libvfiomig?",
			      out->id.kind);
	if (out->id.class_code > CLASS_CODE_MAX)
		return r_fail(r, -EBADMSG, "header: class code 0x%08x is over 24 bits",
			      out->id.class_code);
	return 0;
}

/* Header step 4: the strings, which must end before the header CRC. */
static int r_header_strings(struct vm_fmt_reader *r, const unsigned char *hdr, uint32_t hlen,
			    struct vm_fmt_header *out)
{
	size_t pos = HDR_STRINGS;
	int err;

	err = parse_string(r, hdr, hlen - CRC_LEN, &pos, out->id.mdev_type, "mdev type");
	if (!err)
		err = parse_string(r, hdr, hlen - CRC_LEN, &pos, out->id.driver, "driver name");
	/* Bytes from pos to the CRC are fields of later versions: covered by the CRC, skipped. */
	return err;
}

int vm_fmt_read_header(struct vm_fmt_reader *r, struct vm_fmt_header *h)
{
	unsigned char prefix[HDR_PREFIX], *hdr;
	struct vm_fmt_header out;
	uint32_t hlen = 0; /* gcc cannot see that r_fail() never returns 0 */
	int err;

	err = r_ready(r, "reading the header");
	if (err)
		return err;
	if (!h)
		return -EINVAL;
	if (r->state != ST_HEADER)
		return fmt_fail(r->s, NULL, -EINVAL, "the header is already read");

	err = r_header_prefix(r, prefix, &hlen);
	if (err)
		return err;
	hdr = malloc(hlen);
	if (!hdr)
		return r_fail(r, -ENOMEM, "header of %u bytes", hlen);
	memcpy(hdr, prefix, sizeof(prefix));
	memset(&out, 0, sizeof(out));
	err = r_header_rest(r, hdr, hlen);
	if (!err)
		err = r_header_fields(r, hdr, &out);
	if (!err)
		err = r_header_strings(r, hdr, hlen, &out);
	free(hdr);
	if (err)
		return err;

	*h = out;
	r->state = ST_SETUP;
	return 0;
}

/* The trailer: its size, its own CRC, then what it says against what was read. */
static int r_trailer(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	unsigned char t[TRL_BODY + VM_FMT_TRAILER_MAX];
	uint64_t size, total, records, bytes;
	uint32_t crc, tcrc, tcrc_computed;
	size_t tlen;
	int err;

	if (r->state != ST_TRAILER)
		return r_fail(r, -EBADMSG, "TRAILER at stream offset %" PRIu64 " %s", r->rec_offset,
			      r->state == ST_PHASE ? "inside an open phase"
						   : "before the stop-copy phase");
	/* Its CRC covers its marker too, already read. */
	put_be64(t, VM_FMT_TRAILER);
	err = r_in(r, t + MARKER_LEN, SIZE_LEN, false, "the trailer");
	if (err)
		return err;
	size = get_be64(t + MARKER_LEN);
	if (size < VM_FMT_TRAILER_LEN || size > VM_FMT_TRAILER_MAX)
		return r_fail(r, -EBADMSG, "trailer size %" PRIu64 " is out of range (%u..%u)",
			      size, VM_FMT_TRAILER_LEN, VM_FMT_TRAILER_MAX);
	tlen = TRL_BODY + (size_t)size;
	err = r_in(r, t + TRL_BODY, (size_t)size, false, "the trailer");
	if (err)
		return err;

	tcrc = get_be32(t + tlen - CRC_LEN);
	tcrc_computed = vm_crc32c(0, t, tlen - CRC_LEN);
	if (tcrc != tcrc_computed)
		return r_fail(r, -EBADMSG,
			      "trailer CRC32C is 0x%08x, computed 0x%08x: corrupt trailer", tcrc,
			      tcrc_computed);
	total = get_be64(t + TRL_BODY + TRL_TOTAL);
	records = get_be64(t + TRL_BODY + TRL_RECORDS);
	bytes = get_be64(t + TRL_BODY + TRL_BYTES);
	crc = get_be32(t + TRL_BODY + TRL_CRC);
	if (total != r->rec_offset)
		return r_fail(r, -EBADMSG,
			      "trailer: %" PRIu64 " bytes precede it, it says %" PRIu64
			      ": data lost or added",
			      r->rec_offset, total);
	if (records != r->data_records)
		return r_fail(r, -EBADMSG,
			      "trailer: the stream has %" PRIu64 " data records, it says %" PRIu64,
			      r->data_records, records);
	if (bytes != r->data_bytes)
		return r_fail(r, -EBADMSG,
			      "trailer: the stream has %" PRIu64 " data bytes, it says %" PRIu64,
			      r->data_bytes, bytes);
	if (crc != r->crc)
		return r_fail(r, -EBADMSG,
			      "trailer: CRC32C of the %" PRIu64
			      " bytes before it is 0x%08x, it says 0x%08x: corrupt stream",
			      r->rec_offset, r->crc, crc);

	r->state = ST_DONE;
	rec->type = VM_FMT_REC_TRAILER;
	rec->size = 0;
	return 0;
}

/*
 * CANCEL: the source gave up. Checked like the trailer (its own CRC, and
 * the CRC of everything before it), so a corrupt stream is never taken
 * for a cancelled one; then the reader is done.
 */
static int r_cancel(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	unsigned char t[CNC_BODY + VM_FMT_CANCEL_MAX];
	uint32_t stored, computed, scrc, error;
	uint64_t size;
	size_t tlen, rlen;
	int err;

	put_be64(t, VM_FMT_CANCEL);
	err = r_in(r, t + MARKER_LEN, SIZE_LEN, false, "a CANCEL record");
	if (err)
		return err;
	size = get_be64(t + MARKER_LEN);
	if (size < VM_FMT_CANCEL_MIN || size > VM_FMT_CANCEL_MAX)
		return r_fail(r, -EBADMSG, "CANCEL size %" PRIu64 " is out of range (%u..%u)", size,
			      VM_FMT_CANCEL_MIN, VM_FMT_CANCEL_MAX);
	tlen = CNC_BODY + (size_t)size;
	err = r_in(r, t + CNC_BODY, (size_t)size, false, "a CANCEL record");
	if (err)
		return err;
	stored = get_be32(t + tlen - CRC_LEN);
	computed = vm_crc32c(0, t, tlen - CRC_LEN);
	if (stored != computed)
		return r_fail(r, -EBADMSG, "CANCEL record CRC32C is 0x%08x, computed 0x%08x: corrupt "
			      "stream", stored, computed);
	error = get_be32(t + CNC_BODY + CNC_ERRNO);
	rlen = get_be16(t + CNC_BODY + CNC_REASON);
	if (error == 0 || error > ERRNO_MAX || rlen > VM_FMT_STR_MAX ||
	    CNC_REASON + STRLEN_LEN + rlen + 2 * CRC_LEN > size ||
	    !vm_printable(t + CNC_BODY + CNC_REASON + STRLEN_LEN, rlen))
		return r_fail(r, -EBADMSG, "CANCEL record at stream offset %" PRIu64 ": error %u, "
			      "reason of %zu bytes: malformed", r->rec_offset, error, rlen);
	scrc = get_be32(t + CNC_BODY + CNC_REASON + STRLEN_LEN + rlen);
	if (scrc != r->crc)
		return r_fail(r, -EBADMSG,
			      "CANCEL: CRC32C of the %" PRIu64 " bytes before it is 0x%08x, it says "
			      "0x%08x: corrupt stream", r->rec_offset, r->crc, scrc);
	r->cancel_err = -(int)error;
	memcpy(r->cancel_reason, t + CNC_BODY + CNC_REASON + STRLEN_LEN, rlen);
	r->cancel_reason[rlen] = '\0';
	r->state = ST_DONE;
	rec->type = VM_FMT_REC_CANCEL;
	rec->size = 0;
	return 0;
}

/* Record step 1: a reader that may read a record, past what is left of the last body. */
static int r_next_ready(struct vm_fmt_reader *r, const struct vm_fmt_record *rec)
{
	int err;

	err = r_ready(r, "reading a record");
	if (err)
		return err;
	if (!rec)
		return -EINVAL;
	if (r->state == ST_HEADER || r->state == ST_DONE)
		return fmt_fail(r->s, NULL, -EINVAL, "reading a record: %s",
				r->state == ST_HEADER ? "the header is not read yet"
						      : "the stream is complete");
	err = r_skip(r, r->body_left, true, "a record body");
	if (err)
		return err;
	r->body_left = 0;
	return 0;
}

/*
 * Record step 2: the marker. It joins the stream CRC only once it is
 * known not to be the trailer's (the trailer is outside the CRC it
 * carries).
 */
static int r_marker(struct vm_fmt_reader *r, uint64_t *marker)
{
	unsigned char buf[MARKER_LEN];
	int err;

	r->rec_offset = r->offset;
	err = r_in(r, buf, sizeof(buf), false, "a record marker");
	if (err)
		return err;
	*marker = get_be64(buf);
	if (*marker != VM_FMT_TRAILER && *marker != VM_FMT_CANCEL)
		r->crc = vm_crc32c(r->crc, buf, sizeof(buf));
	return 0;
}

/* DEV_SETUP_STATE, PRECOPY_STATE, STOPCOPY_STATE: a phase opens. */
static int r_phase_start(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	uint64_t marker = rec->marker;

	if (r->state != (marker == VM_FMT_DEV_SETUP_STATE ? ST_SETUP : ST_BETWEEN))
		return r_fail(r, -EBADMSG, "%s at stream offset %" PRIu64 " out of order",
			      marker_name(marker), r->rec_offset);
	r->state = ST_PHASE;
	r->phase = marker == VM_FMT_DEV_SETUP_STATE ? VM_FMT_PHASE_SETUP
		   : marker == VM_FMT_PRECOPY_STATE  ? VM_FMT_PHASE_PRECOPY
						      : VM_FMT_PHASE_STOPCOPY;
	rec->type = VM_FMT_REC_PHASE;
	rec->phase = r->phase;
	return 0;
}

/* END_OF_STATE: the open phase ends; after stop-copy only the trailer may follow. */
static int r_phase_end(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	if (r->state != ST_PHASE)
		return r_fail(r, -EBADMSG,
			      "END_OF_STATE at stream offset %" PRIu64 " outside a phase",
			      r->rec_offset);
	r->state = r->phase == VM_FMT_PHASE_STOPCOPY ? ST_TRAILER : ST_BETWEEN;
	rec->type = VM_FMT_REC_END;
	return 0;
}

/* INIT_DATA_SENT: once, in a pre-copy round. */
static int r_init_data_sent(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	if (r->state != ST_PHASE || r->phase != VM_FMT_PHASE_PRECOPY || r->init_seen)
		return r_fail(r, -EBADMSG,
			      "INIT_DATA_SENT at stream offset %" PRIu64
			      " %s",
			      r->rec_offset,
			      r->init_seen ? "repeated" : "outside a pre-copy round");
	r->init_seen = true;
	rec->type = VM_FMT_REC_INIT_DATA_SENT;
	return 0;
}

/* Where a record with a body may stand: data, config, optional. */
static int r_body_record_kind(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	switch (rec->marker) {
	case VM_FMT_DEV_DATA_STATE:
		if (r->state != ST_PHASE || r->phase == VM_FMT_PHASE_SETUP)
			return r_fail(r, -EBADMSG,
				      "DEV_DATA_STATE at stream offset %" PRIu64
				      " outside a pre-copy or stop-copy phase",
				      r->rec_offset);
		rec->type = VM_FMT_REC_DATA;
		return 0;
	case VM_FMT_DEV_CONFIG_STATE:
		if (r->state != ST_PHASE || r->config_seen)
			return r_fail(r, -EBADMSG,
				      "DEV_CONFIG_STATE at stream offset %" PRIu64 " %s",
				      r->rec_offset,
				      r->config_seen ? "repeated" : "outside a phase");
		r->config_seen = true;
		rec->type = VM_FMT_REC_CONFIG;
		return 0;
	default:
		if (r->state != ST_PHASE)
			return r_fail(r, -EBADMSG,
				      "optional record 0x%016" PRIx64 " at stream offset %" PRIu64
				      " outside a phase",
				      rec->marker, r->rec_offset);
		rec->type = VM_FMT_REC_OPTIONAL;
		return 0;
	}
}

/*
 * A record with a body: {marker, be64 size, body}. The size is read
 * before the record's place in the grammar is checked; the body is left
 * for vm_fmt_read_body() or the next vm_fmt_next().
 */
static int r_body_record(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	unsigned char buf[SIZE_LEN];
	uint64_t size;
	int err;

	err = r_in(r, buf, sizeof(buf), true, "a record size");
	if (err)
		return err;
	size = get_be64(buf);
	err = r_body_record_kind(r, rec);
	if (err)
		return err;

	/* Refused before a byte of the body is read or any memory is set aside for it. */
	if (size > r->max_record)
		return r_fail(r, -EFBIG,
			      "%s record at stream offset %" PRIu64 " claims %" PRIu64
			      " bytes, this reader accepts at most %" PRIu64,
			      marker_name(rec->marker), r->rec_offset, size, r->max_record);
	if (rec->marker == VM_FMT_DEV_DATA_STATE) {
		r->data_records++;
		/* Cannot wrap: each size is bounded, and so is their number (by the stream). */
		r->data_bytes += size;
	}
	rec->size = size;
	r->body_left = size;
	return 0;
}

int vm_fmt_next(struct vm_fmt_reader *r, struct vm_fmt_record *rec)
{
	uint64_t marker;
	int err;

	err = r_next_ready(r, rec);
	if (!err)
		err = r_marker(r, &marker);
	if (err)
		return err;
	memset(rec, 0, sizeof(*rec));
	rec->marker = marker;
	rec->offset = r->rec_offset;
	rec->phase = r->phase;

	/* Record step 3: the grammar (docs/stream-format.md), by kind of record. */
	switch (marker) {
	case VM_FMT_TRAILER:
		return r_trailer(r, rec);
	case VM_FMT_CANCEL:
		return r_cancel(r, rec);
	case VM_FMT_DEV_SETUP_STATE:
	case VM_FMT_PRECOPY_STATE:
	case VM_FMT_STOPCOPY_STATE:
		return r_phase_start(r, rec);
	case VM_FMT_END_OF_STATE:
		return r_phase_end(r, rec);
	case VM_FMT_INIT_DATA_SENT:
		return r_init_data_sent(r, rec);
	case VM_FMT_DEV_DATA_STATE:
	case VM_FMT_DEV_CONFIG_STATE:
		return r_body_record(r, rec);
	default:
		if (marker == MAGIC_AS_MARKER)
			return r_fail(r, -EBADMSG,
				      "a stream header (magic \\x89VFIOMIG) at stream offset %" PRIu64
				      " where a record should be: the stream was read at the wrong "
				      "point (a second stream begins here: was it set up twice, or "
				      "are two streams written into one channel?)", r->rec_offset);
		/* Not even in the format's marker space: damage, or a stream out of step. */
		if ((marker & RECORD_MARKER_MASK) != RECORD_MARKER_BASE)
			return r_fail(r, -EBADMSG,
				      "0x%016" PRIx64 " at stream offset %" PRIu64 " is not a record "
				      "marker: corrupt stream (or one read at the wrong point)",
				      marker, r->rec_offset);
		/* Unknown records are skipped only when they say they may be. */
		if (!VM_FMT_IS_OPTIONAL(marker))
			return r_fail(r, -EPROTONOSUPPORT,
				      "unknown mandatory record 0x%016" PRIx64
				      " at stream offset %" PRIu64
				      ": written by a newer libvfiomig? (or a corrupt stream)",
				      marker, r->rec_offset);
		return r_body_record(r, rec);
	}
}

int vm_fmt_read_body(struct vm_fmt_reader *r, void *buf, size_t len)
{
	int err = r_ready(r, "reading a record body");

	if (err)
		return err;
	if (len > r->body_left)
		return fmt_fail(r->s, NULL, -EINVAL,
				"reading %zu body bytes where the record has %" PRIu64 " left", len,
				r->body_left);
	if (!len)
		return 0;
	err = r_in(r, buf, len, true, "a record body");
	if (err)
		return err;
	r->body_left -= len;
	return 0;
}

int vm_fmt_read_body_ptr(struct vm_fmt_reader *r, void *buf, size_t len, const void **out)
{
	const void *p;
	int err = r_ready(r, "reading a record body");

	if (err)
		return err;
	if (len > r->body_left)
		return fmt_fail(r->s, NULL, -EINVAL,
				"reading %zu body bytes where the record has %" PRIu64 " left", len,
				r->body_left);
	p = vm_stream_read_window(r->s, len);
	if (!p) {
		*out = buf;
		return vm_fmt_read_body(r, buf, len);
	}
	r->crc = vm_crc32c(r->crc, p, len);
	r->offset += len;
	r->body_left -= len;
	*out = p;
	return 0;
}

/* ------------------------------------------------------- the return path */

/* Message markers: the top bits are the stream format's, in a range of their own. */
#define RP_ACK          (VM_RP_MARKER_BASE | VFIOMIG_RETURN_SWITCHOVER_ACK)
#define RP_LOADED       (VM_RP_MARKER_BASE | VFIOMIG_RETURN_LOADED)
#define RP_FAILED       (VM_RP_MARKER_BASE | VFIOMIG_RETURN_FAILED)


/* Bodies (version 1); readers accept longer ones and ignore what follows. */
#define RP_ACK_LEN      8u                 /* be64 stream bytes loaded */
#define RP_LOADED_LEN   (8u + 8u + 8u + 4u) /* bytes, data records, data bytes, stream CRC */
#define RP_FAILED_MIN   (8u + 4u + 2u)     /* bytes, errno, reason length (+ reason) */

size_t vm_rp_encode(const struct vm_rp_msg *msg, unsigned char *buf)
{
	unsigned char *b = buf + VM_RP_HDR;
	size_t len = 0, rlen = 0;

	switch (msg->type) {
	case VFIOMIG_RETURN_SWITCHOVER_ACK:
		put_be64(b, msg->bytes);
		len = RP_ACK_LEN;
		break;
	case VFIOMIG_RETURN_LOADED:
		put_be64(b, msg->bytes);
		put_be64(b + 8, msg->records);
		put_be64(b + 16, msg->data_bytes);
		put_be32(b + 24, msg->crc);
		len = RP_LOADED_LEN;
		break;
	default: /* FAILED */
		while (rlen < VM_FMT_STR_MAX && msg->reason[rlen] &&
		       vm_printable((const unsigned char *)msg->reason + rlen, 1))
			rlen++;
		put_be64(b, msg->bytes);
		put_be32(b + 8, (uint32_t)-msg->error);
		put_be16(b + 12, (uint16_t)rlen);
		memcpy(b + RP_FAILED_MIN, msg->reason, rlen);
		len = RP_FAILED_MIN + rlen;
		break;
	}
	put_be64(buf, VM_RP_MARKER_BASE | msg->type);
	put_be32(buf + 8, (uint32_t)len);
	put_be32(buf + VM_RP_HDR + len, vm_crc32c(0, buf, VM_RP_HDR + len));
	return VM_RP_HDR + len + VM_RP_CRC;
}

int vm_rp_decode(const unsigned char *hdr, const unsigned char *body, uint32_t len,
		 struct vm_rp_msg *out)
{
	uint64_t marker = get_be64(hdr);
	size_t rlen;

	memset(out, 0, sizeof(*out));
	out->type = (uint32_t)(marker & ~VM_RP_MARKER_MASK);
	switch (marker) {
	case RP_ACK:
		if (len < RP_ACK_LEN)
			return -EBADMSG;
		out->bytes = get_be64(body);
		return 0;
	case RP_LOADED:
		if (len < RP_LOADED_LEN)
			return -EBADMSG;
		out->bytes = get_be64(body);
		out->records = get_be64(body + 8);
		out->data_bytes = get_be64(body + 16);
		out->crc = get_be32(body + 24);
		return 0;
	case RP_FAILED: {
		uint32_t error;

		if (len < RP_FAILED_MIN)
			return -EBADMSG;
		out->bytes = get_be64(body);
		/* Checked as the unsigned field it is, before it becomes a negative errno. */
		error = get_be32(body + 8);
		rlen = get_be16(body + 12);
		if (error == 0 || error > ERRNO_MAX || rlen > VM_FMT_STR_MAX ||
		    RP_FAILED_MIN + rlen > len || !vm_printable(body + RP_FAILED_MIN, rlen))
			return -EBADMSG;
		out->error = -(int32_t)error;
		memcpy(out->reason, body + RP_FAILED_MIN, rlen);
		out->reason[rlen] = '\0';
		return 0;
	}
	default:
		return 1; /* a type from a newer writer: skip it */
	}
}
