/* SPDX-License-Identifier: MIT */
/*
 * Private: the libvfiomig stream format (docs/stream-format.md is the
 * normative description; keep the two in step), its writer and reader.
 * Also the few stream-object internals the format layer needs
 * (implemented in stream.c).
 *
 * The writer and the reader enforce the same grammar; both are sticky:
 * after the first error every call returns that error.
 */
#ifndef VFIOMIG_FORMAT_H
#define VFIOMIG_FORMAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <vfiomig/stream.h>

/* The format is defined over CRC32C: whoever builds or checks a stream needs it too. */
#include "crc32c.h"

/* ------------------------------------------------------ stream internals */

struct vfiomig_ctx *vm_stream_ctx(const struct vfiomig_stream *s);
/* Streams are reference counted: a migration set up on one holds it. */
struct vfiomig_stream *vm_stream_get(struct vfiomig_stream *s);
void vm_stream_put(struct vfiomig_stream *s);
/* "fd stream 7", "memory stream", ... for log lines. */
const char *vm_stream_desc(const struct vfiomig_stream *s);
/* The ops->fd fast-path fd, or -ENOTSUP. */
int vm_stream_fd(struct vfiomig_stream *s);

/*
 * No-copy access to a built-in memory stream (NULL for any other stream,
 * a failed one, or when the bytes are not there: then use the plain
 * read and write, which report why). A write window is len bytes at the
 * stream's end, made part of the stream by vm_stream_write_commit(s, n),
 * n <= len, before any other call on the stream. A read window consumes
 * len bytes at once; it stays valid until the stream's next write.
 */
bool vm_stream_lends(struct vfiomig_stream *s); /* a built-in memory stream */
void *vm_stream_write_window(struct vfiomig_stream *s, size_t len);
void vm_stream_write_commit(struct vfiomig_stream *s, size_t n);
const void *vm_stream_read_window(struct vfiomig_stream *s, size_t len);

/* ------------------------------------------------------------- constants */

#define VM_FMT_MAGIC     "\x89VFIOMIG" /* 8 bytes, no NUL in the stream */
#define VM_FMT_MAGIC_LEN 8
#define VM_FMT_VERSION   1u

/* Header layout (version 1); all integers big-endian. */
#define VM_FMT_HDR_FIXED      40u    /* magic .. class code */
#define VM_FMT_HDR_MIN        48u    /* fixed + two empty strings + header CRC */
#define VM_FMT_HDR_MAX        65536u /* readers refuse longer headers */
#define VM_FMT_STR_MAX        255u   /* longest mdev type / driver name */

/* Header: protocol */
#define VM_FMT_PROTO_V1 1u /* v1 migration region protocol (kernel 5.8-5.17) */
#define VM_FMT_PROTO_V2 2u /* v2 data_fd protocol (kernel 5.18+) */

/* Header: flags. Unknown bits in the low half are refused, in the high half ignored. */
#define VM_FMT_FLAGS_INCOMPAT 0x0000ffffu
#define VM_FMT_FLAGS_KNOWN    0u

/* Header: identity kind */
#define VM_FMT_ID_PCI  1u
#define VM_FMT_ID_MDEV 2u

/* Record markers (big-endian u64). The first five are QEMU's values. */
#define VM_FMT_END_OF_STATE     0xffffffffef100001ull
#define VM_FMT_DEV_CONFIG_STATE 0xffffffffef100002ull
#define VM_FMT_DEV_SETUP_STATE  0xffffffffef100003ull
#define VM_FMT_DEV_DATA_STATE   0xffffffffef100004ull
#define VM_FMT_INIT_DATA_SENT   0xffffffffef100005ull
#define VM_FMT_PRECOPY_STATE    0xffffffffef100010ull
#define VM_FMT_STOPCOPY_STATE   0xffffffffef100011ull
#define VM_FMT_TRAILER          0xffffffffef1000ffull
/* The source gave up: nothing follows (see docs/stream-format.md, "Cancel"). */
#define VM_FMT_CANCEL           0xffffffffef100020ull
/* Optional records: {marker, be64 size, body}; readers skip unknown ones. */
#define VM_FMT_OPTIONAL_MASK    0xffffffffffff0000ull
#define VM_FMT_OPTIONAL_BASE    0xffffffffef110000ull
#define VM_FMT_IS_OPTIONAL(m)   (((m) & VM_FMT_OPTIONAL_MASK) == VM_FMT_OPTIONAL_BASE)

/*
 * Trailer: be64 size, then `size` bytes: version 1 writes 32 (be64 bytes
 * before the trailer, be64 data records, be64 data bytes, be32 stream
 * CRC32C, be32 trailer CRC32C); readers accept up to VM_FMT_TRAILER_MAX,
 * the trailer's own CRC always last.
 */
#define VM_FMT_TRAILER_LEN     32u
#define VM_FMT_TRAILER_MAX     4096u

/*
 * Cancel: be64 size, then `size` bytes: be32 errno (positive), be16
 * reason length, the reason (printable ASCII, at most VM_FMT_STR_MAX),
 * be32 CRC32C of every stream byte before the CANCEL marker, be32 CRC32C
 * of the record from its marker up to here. Readers accept sizes up to
 * VM_FMT_CANCEL_MAX, the record's own CRC always last.
 */
#define VM_FMT_CANCEL_MIN      14u
#define VM_FMT_CANCEL_MAX      4096u

/*
 * Largest record body the writer emits and the reader accepts by default.
 * Callers split larger device chunks into several data records.
 */
#define VM_FMT_RECORD_MAX (64ull << 20)

/* Phases */
#define VM_FMT_PHASE_SETUP    1u
#define VM_FMT_PHASE_PRECOPY  2u
#define VM_FMT_PHASE_STOPCOPY 3u

/* ------------------------------------------------------------- the header */

struct vm_fmt_identity {
	uint16_t kind;       /* VM_FMT_ID_* */
	uint16_t vendor;
	uint16_t device;
	uint16_t subvendor;
	uint16_t subdevice;
	uint32_t class_code; /* 24-bit PCI class code: base << 16 | sub << 8 | prog-if */
	/* NUL-terminated, printable ASCII, may be empty. */
	char mdev_type[VM_FMT_STR_MAX + 1];
	char driver[VM_FMT_STR_MAX + 1]; /* the parent / vfio variant driver */
};

struct vm_fmt_header {
	uint32_t version;    /* read: the stream's; the writer always writes VM_FMT_VERSION */
	uint32_t protocol;   /* VM_FMT_PROTO_* */
	uint32_t flags;
	uint32_t hdr_len;    /* read: the stream's header length; ignored by the writer */
	struct vm_fmt_identity id;
};

/*
 * Compare a stream's identity with a device's. IDs, class code and kind
 * must be equal; the mdev type and driver are compared when both sides
 * have one. Returns 0 or -ENODEV with a line such as "stream is for PCI
 * 8086:1234, device is PCI 1af4:10f0". `what` prefixes the line.
 */
int vm_fmt_identity_check(struct vfiomig_ctx *ctx, const char *what,
			  const struct vm_fmt_identity *stream, const struct vm_fmt_identity *dev);

/* ------------------------------------------------------------- the writer */

struct vm_fmt_writer {
	struct vfiomig_stream *s;
	uint64_t offset;       /* bytes written so far */
	uint32_t crc;          /* CRC32C of those bytes */
	uint64_t data_records;
	uint64_t data_bytes;
	uint64_t body_left;    /* of a data record opened with vm_fmt_begin_data */
	int state;             /* private */
	uint32_t phase;        /* VM_FMT_PHASE_* being written, or 0 */
	bool config_sent;
	bool init_sent;
	int err;               /* sticky */
};

/* The stream stays the caller's; the writer holds no allocation. */
void vm_fmt_writer_init(struct vm_fmt_writer *w, struct vfiomig_stream *s);

/* First: the stream header. -EINVAL: unknown kind, long or unprintable strings, ... */
int vm_fmt_write_header(struct vm_fmt_writer *w, const struct vm_fmt_header *h);
/* Open a phase: SETUP first, then PRECOPY any number of times, then STOPCOPY once. */
int vm_fmt_begin_phase(struct vm_fmt_writer *w, uint32_t phase);
/* Close the open phase (END_OF_STATE). */
int vm_fmt_end_phase(struct vm_fmt_writer *w);
/* A whole data record (pre-copy or stop-copy phase). */
int vm_fmt_write_data(struct vm_fmt_writer *w, const void *buf, size_t len);
/*
 * A data record whose body arrives in pieces: announce its size, then
 * vm_fmt_write_body() until exactly `size` bytes have been given. No
 * other record may be written before the body is complete.
 */
int vm_fmt_begin_data(struct vm_fmt_writer *w, uint64_t size);
int vm_fmt_write_body(struct vm_fmt_writer *w, const void *buf, size_t len);
/*
 * A data record built in place (memory streams, no copy): *win is a window
 * of the stream with room for a record of up to max body bytes, whose body
 * starts at *body; vm_fmt_commit_data() then makes it a record of len
 * bytes. Returns 1 with the window, 0 when the stream has none (use
 * vm_fmt_write_data), or -errno when no data record may be written now.
 */
int vm_fmt_data_window(struct vm_fmt_writer *w, size_t max, void **win, void **body);
int vm_fmt_commit_data(struct vm_fmt_writer *w, void *win, size_t len);
/* The VMM's device config blob: at most once per stream, in any phase. */
int vm_fmt_write_config(struct vm_fmt_writer *w, const void *buf, size_t len);
/* An optional record (VM_FMT_IS_OPTIONAL(marker)), in any phase. */
int vm_fmt_write_optional(struct vm_fmt_writer *w, uint64_t marker, const void *buf, size_t len);
/* Switchover-ack "initial data sent": at most once, in a pre-copy round. */
int vm_fmt_write_init_data_sent(struct vm_fmt_writer *w);
/* Last: the trailer, after the stop-copy phase has ended. Does not flush the stream. */
int vm_fmt_write_trailer(struct vm_fmt_writer *w);
/*
 * Instead of the rest of the stream: a CANCEL record (err < 0, reason
 * may be NULL; cut to VM_FMT_STR_MAX printable bytes). Any time after the
 * header and before the trailer, between records. Does not flush.
 */
int vm_fmt_write_cancel(struct vm_fmt_writer *w, int err, const char *reason);
/* True when a CANCEL record may be written now (between records, nothing failed). */
bool vm_fmt_can_cancel(const struct vm_fmt_writer *w);

/* ------------------------------------------------------------- the reader */

enum vm_fmt_rec_type {
	VM_FMT_REC_PHASE = 1,    /* a phase begins: rec.phase */
	VM_FMT_REC_END,          /* END_OF_STATE: rec.phase ended */
	VM_FMT_REC_DATA,         /* device data: rec.size body bytes */
	VM_FMT_REC_CONFIG,       /* config blob: rec.size body bytes */
	VM_FMT_REC_INIT_DATA_SENT,
	VM_FMT_REC_OPTIONAL,     /* rec.marker, rec.size body bytes; next() skips it if unread */
	VM_FMT_REC_TRAILER,      /* verified: the stream is complete and intact */
	VM_FMT_REC_CANCEL,       /* verified: the source cancelled; r->cancel_* say why */
};

struct vm_fmt_record {
	enum vm_fmt_rec_type type;
	uint32_t phase;    /* the phase it belongs to */
	uint64_t marker;
	uint64_t size;     /* body size (0 for records without a body) */
	uint64_t offset;   /* stream offset of its marker */
};

struct vm_fmt_reader {
	struct vfiomig_stream *s;
	/* Largest record body accepted (default VM_FMT_RECORD_MAX); set after init. */
	uint64_t max_record;
	uint64_t offset;       /* bytes consumed so far */
	uint32_t crc;          /* CRC32C of the bytes before the current marker */
	uint64_t data_records;
	uint64_t data_bytes;
	uint64_t body_left;    /* unread body bytes of the current record */
	uint64_t rec_offset;   /* offset of the current record's marker */
	int state;             /* private */
	uint32_t phase;
	bool config_seen;
	bool init_seen;
	int err;               /* sticky */
	int cancel_err;        /* after VM_FMT_REC_CANCEL: the source's negative errno */
	char cancel_reason[VM_FMT_STR_MAX + 1]; /* and its reason ("" if none) */
};

/* The stream stays the caller's; the reader holds no allocation. */
void vm_fmt_reader_init(struct vm_fmt_reader *r, struct vfiomig_stream *s);

/*
 * Read and validate the header (magic, version, length, header CRC,
 * strings, protocol, flags). -EBADMSG: not a libvfiomig stream or
 * corrupt; -EPROTONOSUPPORT: written by a newer library (version,
 * protocol or incompatible flag); -EPIPE: truncated.
 */
int vm_fmt_read_header(struct vm_fmt_reader *r, struct vm_fmt_header *h);

/*
 * The next record; an unread (rest of a) body is skipped first. On the
 * trailer it checks byte count, data counts and CRC32C and returns
 * VM_FMT_REC_TRAILER; a CANCEL record, checked the same way, returns
 * VM_FMT_REC_CANCEL; after either the reader is done (-EINVAL). Errors:
 * -EBADMSG (grammar, trailer mismatch), -EPROTONOSUPPORT (unknown
 * mandatory record), -EFBIG (body over max_record; nothing of it read),
 * -EPIPE (truncated), or the stream's -errno.
 */
int vm_fmt_next(struct vm_fmt_reader *r, struct vm_fmt_record *rec);

/* Read the next len bytes of the current record's body (len <= what is left). */
int vm_fmt_read_body(struct vm_fmt_reader *r, void *buf, size_t len);
/*
 * The same, without a copy when the stream can lend its bytes (memory
 * streams): *out points either into the stream (valid until its next
 * write) or at buf, which then holds the bytes.
 */
int vm_fmt_read_body_ptr(struct vm_fmt_reader *r, void *buf, size_t len, const void **out);

/* ------------------------------------------------------- the return path */

/*
 * A return-path message (docs/stream-format.md, "Return path"), as
 * retpath.c encodes and decodes it. type: VFIOMIG_RETURN_*. ACK carries
 * bytes; LOADED bytes, records, data_bytes, crc; FAILED bytes, error
 * (negative errno) and reason.
 */
struct vm_rp_msg {
	uint32_t type;
	int32_t error;
	uint64_t bytes;
	uint64_t records;
	uint64_t data_bytes;
	uint32_t crc;
	char reason[256];
};

/*
 * {be64 marker, be32 body length, body, be32 CRC32C of all before it}.
 * Markers: VM_RP_MARKER_BASE | type (the stream format's top bits, in a
 * range of their own).
 */
#define VM_RP_MARKER_BASE 0xffffffffef120000ull
#define VM_RP_MARKER_MASK 0xffffffffffff0000ull
#define VM_RP_HDR         12u
#define VM_RP_CRC         4u
#define VM_RP_BODY_MAX    4096u
/* The largest encoded message. */
#define VM_RP_MAX (VM_RP_HDR + VM_RP_BODY_MAX + VM_RP_CRC)

/* Encode into buf (VM_RP_MAX bytes); returns the message's length. */
size_t vm_rp_encode(const struct vm_rp_msg *msg, unsigned char *buf);

/*
 * Decode a message whose 12-byte header (marker, length) and CRC the
 * caller has checked: 0, 1 for a type this library does not know (skip
 * it), or -EBADMSG.
 */
int vm_rp_decode(const unsigned char *hdr, const unsigned char *body, uint32_t len,
		 struct vm_rp_msg *out);

#endif