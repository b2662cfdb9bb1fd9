/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: byte streams.
 *
 * A stream is where migration data goes to (on the source) or comes from
 * (on the destination): a file, a pipe, a socket, a memory buffer, or
 * anything the VMM puts behind a small table of callbacks (its own
 * multiplexed channel, TLS, a compression layer...). The library writes
 * and reads its versioned stream format (docs/stream-format.md) through
 * this interface only.
 *
 * Errors: every function returns 0 or a negative errno value and logs
 * one line naming the stream ("fd stream 7: write: Broken pipe"). Once a
 * callback has failed (or a read hit a truncated stream), the stream
 * stays failed: every later read, write or flush returns that same error
 * without calling the callbacks again, so a migration stops cleanly at
 * the first broken link.
 *
 * Threads: a stream may be used from one thread at a time (the caller
 * serialises). A stream made with a context holds a reference on it.
 */
#ifndef VFIOMIG_STREAM_H
#define VFIOMIG_STREAM_H

#include <vfiomig/common.h>
#include <vfiomig/ctx.h>

#ifdef __cplusplus
extern "C" {
#endif

struct vfiomig_stream;

/*
 * Callbacks of a caller-defined stream. `user` is the pointer given to
 * vfiomig_stream_new(), always first.
 *
 * write / read: may transfer fewer bytes than asked (the library loops);
 * return the number of bytes transferred (>= 0) or a negative errno
 * value (errno need not be set). -EINTR is retried; any other negative
 * value fails the stream. read returning 0 means the end of the stream;
 * write returning 0 is treated as -EIO. A read-only stream has write
 * NULL, a write-only stream read NULL (at least one must be set).
 *
 * flush (optional): push buffered bytes out; 0 or -errno.
 *
 * fd (optional): an fd the stream's bytes can be moved to or from
 * without a user-space copy (splice, copy_file_range), or -ENOTSUP. The
 * fd stays the stream's. Reserved for a zero-copy fast path; the library
 * may ignore it.
 *
 * release (optional): called once when the stream is gone, to let go of
 * `user` (never called when vfiomig_stream_new() fails). That is at
 * vfiomig_stream_free(), or later if a migration still holds the stream
 * (see vfiomig_stream_free()): keep `user` valid until release.
 */
struct vfiomig_stream_ops {
	size_t sz;
	ssize_t (*write)(void *user, const void *buf, size_t len);
	ssize_t (*read)(void *user, void *buf, size_t len);
	int (*flush)(void *user);
	int (*fd)(void *user);
	void (*release)(void *user);
};

/*
 * A stream over caller callbacks. The ops table is copied (callbacks past
 * ops->sz are treated as NULL; non-zero bytes past what this library
 * knows are refused with -EINVAL). `user` stays the caller's until
 * vfiomig_stream_free() calls ops->release. ctx is used for log lines
 * and may be NULL (silent). Log lines name it "stream" until
 * vfiomig_stream_set_name() gives it a name. Returns 0 and *out, or
 * -EINVAL / -ENOMEM.
 */
VFIOMIG_API int vfiomig_stream_new(struct vfiomig_ctx *ctx, const struct vfiomig_stream_ops *ops,
				   void *user, struct vfiomig_stream **out);

/* vfiomig_stream_fd_new() flags */
#define VFIOMIG_STREAM_FD_TAKE (1u << 0) /* the stream owns fd and closes it on free */

/*
 * A stream over an fd: a regular file (at its current offset), a pipe,
 * a socket or a character device. Short transfers are continued, EINTR
 * is retried, and on a non-blocking fd EAGAIN waits in poll() for the fd
 * to become ready (so the call returns only when done or failed).
 * Writing to a pipe or socket whose reader has gone returns -EPIPE; the
 * process gets no SIGPIPE from the library. An fd opened read-only (such
 * as a pipe's read end) makes a read-only stream, and write-only a
 * write-only one.
 *
 * Ownership: with VFIOMIG_STREAM_FD_TAKE the fd belongs to the stream
 * from this call on, even when it fails (it is closed then); with 0 it is
 * borrowed and the caller closes it after vfiomig_stream_free(). Returns
 * 0 and *out, or -EBADF (not an open fd), -EINVAL (unknown flags),
 * -ENOMEM.
 */
VFIOMIG_API int vfiomig_stream_fd_new(struct vfiomig_ctx *ctx, int fd, uint32_t flags,
				      struct vfiomig_stream **out);

/*
 * A growable in-memory stream: writes append to a buffer owned by the
 * stream; reads consume what was written, in order (so a stream can be
 * written, then read back). Returns 0 and *out, or -ENOMEM.
 */
VFIOMIG_API int vfiomig_stream_mem_new(struct vfiomig_ctx *ctx, struct vfiomig_stream **out);

/*
 * A memory pipe: a growable in-memory stream whose reads release what
 * they consume, so it holds only the bytes written and not yet read (its
 * buffer is as large as the most that was ever unread at once, and is
 * reused). For a source and a destination in one process: write a
 * pre-copy round, read it, write the next. Returns 0 and *out, or
 * -ENOMEM.
 */
VFIOMIG_API int vfiomig_stream_mem_pipe_new(struct vfiomig_ctx *ctx, struct vfiomig_stream **out);

/* vfiomig_stream_mem_fixed_new() flags */
#define VFIOMIG_STREAM_MEM_READ (1u << 0) /* read buf's len existing bytes (read-only stream) */

/*
 * An in-memory stream over a caller's buffer, which must outlive the
 * stream (the stream never frees it). With VFIOMIG_STREAM_MEM_READ the
 * stream is read-only and yields buf's len bytes, then the end of the
 * stream. Without it the stream writes into buf from its start; writing
 * past len fails with -ENOSPC; reads consume what was written. buf may
 * be NULL only when len is 0. Returns 0 and *out, or -EINVAL / -ENOMEM.
 *
 * The built-in memory streams cost a migration no copy: a save reads the
 * device's data straight into the buffer and a load writes the device
 * straight from it. A save may therefore leave device bytes in the
 * unwritten part of a writable buffer (never past len), beyond
 * vfiomig_stream_bytes_written(): only the bytes written are the stream.
 */
VFIOMIG_API int vfiomig_stream_mem_fixed_new(struct vfiomig_ctx *ctx, void *buf, size_t len,
					     uint32_t flags, struct vfiomig_stream **out);

/*
 * The bytes written so far to a memory stream (all of them, including
 * any already read back; for a memory pipe, the bytes not read yet):
 * *data points into memory owned by the stream (or the caller's buffer
 * for a fixed stream) and stays valid until the next write or read of a
 * pipe, the next write of the others, or vfiomig_stream_free(); *len is
 * their count. -EINVAL for a stream that is not a memory stream.
 */
VFIOMIG_API int vfiomig_stream_mem_data(const struct vfiomig_stream *s, const void **data,
					size_t *len);

/*
 * Name the stream in log lines ("migration channel to host-b: write:
 * Broken pipe"); the name is copied. Default: "fd stream N", "memory
 * stream", "stream". 0, -EINVAL (NULL or longer than 127 bytes) or -ENOMEM.
 */
VFIOMIG_API int vfiomig_stream_set_name(struct vfiomig_stream *s, const char *name);

/*
 * Write all len bytes (looping over short writes). Returns 0 or -errno
 * (-EBADF on a read-only stream; the stream's earlier error if it has
 * failed).
 */
VFIOMIG_API int vfiomig_stream_write(struct vfiomig_stream *s, const void *buf, size_t len);

/*
 * Read exactly len bytes. Returns 0; -ENODATA when the stream ended
 * cleanly before the first byte of this call (not a failure: nothing is
 * logged above debug level and the stream stays usable); -EPIPE when it
 * ended part way through (a truncated stream: the stream fails); -EBADF
 * on a write-only stream; or the callback's -errno.
 */
VFIOMIG_API int vfiomig_stream_read(struct vfiomig_stream *s, void *buf, size_t len);

/* Flush buffered bytes (0 when the stream has no flush callback) or -errno. */
VFIOMIG_API int vfiomig_stream_flush(struct vfiomig_stream *s);

/* Bytes successfully written to / read from the stream since it was created. */
VFIOMIG_API uint64_t vfiomig_stream_bytes_written(const struct vfiomig_stream *s);
VFIOMIG_API uint64_t vfiomig_stream_bytes_read(const struct vfiomig_stream *s);

/*
 * Free a stream: drops the caller's handle. A migration set up on the
 * stream (vfiomig_mig_save_setup / _load_setup) holds it until
 * vfiomig_mig_free(), and may still write a CANCEL record into it when it
 * fails; the stream really goes with the last holder: then ops->release
 * is called for a callback stream, the fd of an fd stream made with
 * VFIOMIG_STREAM_FD_TAKE is closed, a growable memory stream's buffer is
 * freed. Does not flush. NULL is accepted.
 */
VFIOMIG_API void vfiomig_stream_free(struct vfiomig_stream *s);
VFIOMIG_DEFINE_CLEANUP_(struct vfiomig_stream, vfiomig_stream_free)

/* ------------------------------------------------------------ inspection */

/* Record types reported by vfiomig_stream_inspect(). */
#define VFIOMIG_REC_PHASE          1 /* a phase begins */
#define VFIOMIG_REC_END            2 /* END_OF_STATE: the phase ends */
#define VFIOMIG_REC_DATA           3 /* DEV_DATA_STATE: device data */
#define VFIOMIG_REC_CONFIG         4 /* DEV_CONFIG_STATE: the VMM's config */
#define VFIOMIG_REC_INIT_DATA_SENT 5 /* switchover-ack: initial pre-copy data all sent */
#define VFIOMIG_REC_OPTIONAL       6 /* a skippable record (known or from a newer writer) */
#define VFIOMIG_REC_TRAILER        7 /* counts and CRC32C verified */
#define VFIOMIG_REC_CANCEL         8 /* the source cancelled: nothing follows (CRCs verified) */

/* Phases */
#define VFIOMIG_PHASE_SETUP    1
#define VFIOMIG_PHASE_PRECOPY  2
#define VFIOMIG_PHASE_STOPCOPY 3

struct vfiomig_record {
	size_t sz;
	uint32_t type;   /* VFIOMIG_REC_* */
	uint32_t phase;  /* VFIOMIG_PHASE_* it belongs to */
	uint64_t marker; /* the raw 64-bit marker */
	uint64_t size;   /* body bytes (0 for records without a body) */
	uint64_t offset; /* stream offset of the marker */
};

/* Called once per record, in order; a non-zero return stops the walk and is returned. */
typedef int (*vfiomig_record_fn)(void *user, const struct vfiomig_record *rec);

/* The stream format version this library writes (vfiomig_stream_info.version). */
#define VFIOMIG_STREAM_VERSION 1

/* What vfiomig_stream_inspect() found; set sz first. */
struct vfiomig_stream_info {
	size_t sz;
	uint32_t version;    /* format version (VFIOMIG_STREAM_VERSION or older) */
	uint32_t protocol;   /* VFIOMIG_PROTO_* */
	uint32_t flags;      /* header flags; version 1 defines none */
	uint32_t kind;       /* device identity: VFIOMIG_DEVKIND_* */
	uint16_t vendor, device, subvendor, subdevice;
	uint32_t class_code;
	uint32_t has_config;     /* 1: a VMM config record was found */
	uint32_t init_data_sent; /* 1: a switchover-ack INIT_DATA_SENT record was found */
	uint32_t cancelled;      /* 1: the stream ends in a CANCEL record (see cancel_*) */
	int32_t cancel_error;    /* the source's negative errno when cancelled */
	uint32_t reserved;
	uint64_t bytes;          /* the whole stream, trailer included */
	uint64_t data_records;
	uint64_t data_bytes;
	uint64_t precopy_rounds;
	uint64_t precopy_bytes;  /* data bytes in pre-copy rounds */
	uint64_t stopcopy_bytes; /* data bytes in stop-and-copy */
	uint64_t config_bytes;   /* size of the VMM config record (0: none) */
	char mdev_type[256];
	char driver[256];
	char cancel_reason[256]; /* the source's reason when cancelled ("" if none) */
};

/*
 * Read a whole stream and validate it as a destination would (header,
 * grammar, size limit `max_record` — 0 for the default 64 MiB — and the
 * trailer's counts and CRC32C) without touching any device. Fills *info
 * (may be NULL; what was learnt so far is filled even on failure) and
 * calls fn (may be NULL) per record. Returns 0 for an intact stream, or
 * the first error: -EBADMSG, -EPROTONOSUPPORT, -EFBIG, -EPIPE, the
 * stream's -errno, -ECANCELED for an intact stream the source cancelled
 * (info->cancelled and cancel_* say why), or fn's non-zero value.
 */
VFIOMIG_API int vfiomig_stream_inspect(struct vfiomig_stream *in, uint64_t max_record,
				       struct vfiomig_stream_info *info, vfiomig_record_fn fn,
				       void *user);

#ifdef __cplusplus
}
#endif
#endif
