/* SPDX-License-Identifier: MIT */
/*
 * Stream objects: the generic layer (full-length loops, EINTR, sticky
 * failure, byte counters, log lines) over a callback table, and the
 * built-in fd and memory streams, which are themselves callback tables.
 *
 * Stream fds are the VMM's migration channel (sockets, pipes, files), not
 * VFIO objects, so they use the system calls directly rather than the
 * context's kernel ops.
 */
#include "internal.h"
#include "format.h"

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum stream_kind { STREAM_CUSTOM, STREAM_FD, STREAM_MEM };

struct fd_stream {
	int fd;
	bool own;
	bool is_sock;  /* send(MSG_NOSIGNAL) */
	bool is_fifo;  /* SIGPIPE blocked around write() */
};

struct mem_stream {
	unsigned char *buf;
	size_t len;    /* bytes written (or given, for a read-only stream) */
	size_t cap;
	size_t rpos;   /* bytes read back */
	bool fixed;    /* caller's buffer: never grown or freed */
	bool pipe;     /* bytes read are released: [rpos, len) is what is kept */
};

struct vfiomig_stream {
	unsigned int refs;             /* the caller's, plus one per migration set up on it */
	struct vfiomig_ctx *ctx;
	struct vfiomig_stream_ops ops; /* full-size copy; missing ops are NULL */
	void *user;
	enum stream_kind kind;
	int err;                       /* sticky failure, 0 while healthy */
	uint64_t written;
	uint64_t nread;
	char desc[128];                /* the name in log lines */
	union {
		struct fd_stream fd;
		struct mem_stream mem;
	} u;
};

/* Smallest allocation of a growable memory stream. */
#define MEM_MIN_CAP 4096u

/* ------------------------------------------------------- generic layer */

/* A callback's negative return as an errno value we can hand on. */
static int cb_errno(ssize_t n)
{
	return n < -4095 ? -EIO : (int)n;
}

static int stream_fail(struct vfiomig_stream *s, int err, const char *op)
{
	s->err = err;
	return vm_err(s->ctx, err, "%s: %s", s->desc, op);
}

static int stream_failed_before(struct vfiomig_stream *s, const char *op)
{
	return vm_err(s->ctx, s->err, "%s: %s: the stream failed earlier", s->desc, op);
}

int vfiomig_stream_write(struct vfiomig_stream *s, const void *buf, size_t len)
{
	VM_API(s ? s->ctx : NULL);
	const unsigned char *p = buf;
	size_t done = 0;

	if (!s)
		return -EINVAL;
	if (s->err)
		return stream_failed_before(s, "write");
	if (!s->ops.write)
		return vm_err(s->ctx, -EBADF, "%s: write: the stream is read-only", s->desc);
	if (!buf && len)
		return vm_err(s->ctx, -EINVAL, "%s: write: NULL buffer", s->desc);

	while (done < len) {
		ssize_t n = s->ops.write(s->user, p + done, len - done);

		if (n == -EINTR)
			continue;
		if (n < 0)
			return stream_fail(s, cb_errno(n), "write");
		if (n == 0) {
			s->err = -EIO;
			return vm_err(s->ctx, -EIO, "%s: write: no progress after %zu of %zu bytes",
				      s->desc, done, len);
		}
		if ((size_t)n > len - done) {
			s->err = -EIO;
			return vm_err(s->ctx, -EIO,
				      "%s: write: callback claims %zd bytes of %zu asked",
				      s->desc, n, len - done);
		}
		done += (size_t)n;
		s->written += (uint64_t)n;
	}
	return 0;
}

int vfiomig_stream_read(struct vfiomig_stream *s, void *buf, size_t len)
{
	VM_API(s ? s->ctx : NULL);
	unsigned char *p = buf;
	size_t done = 0;

	if (!s)
		return -EINVAL;
	if (s->err)
		return stream_failed_before(s, "read");
	if (!s->ops.read)
		return vm_err(s->ctx, -EBADF, "%s: read: the stream is write-only", s->desc);
	if (!buf && len)
		return vm_err(s->ctx, -EINVAL, "%s: read: NULL buffer", s->desc);

	while (done < len) {
		ssize_t n = s->ops.read(s->user, p + done, len - done);

		if (n == -EINTR)
			continue;
		if (n < 0)
			return stream_fail(s, cb_errno(n), "read");
		if (n == 0) {
			if (done == 0) {
				/* A clean end between reads is the caller's to judge. */
				vm_dbg(s->ctx, "%s: read: end of stream after %" PRIu64 " bytes",
				       s->desc, s->nread);
				return -ENODATA;
			}
			s->err = -EPIPE;
			return vm_err(s->ctx, -EPIPE,
				      "%s: read: the stream ended after %zu of %zu bytes "
				      "(truncated)",
				      s->desc, done, len);
		}
		if ((size_t)n > len - done) {
			s->err = -EIO;
			return vm_err(s->ctx, -EIO,
				      "%s: read: callback claims %zd bytes of %zu asked",
				      s->desc, n, len - done);
		}
		done += (size_t)n;
		s->nread += (uint64_t)n;
	}
	return 0;
}

int vfiomig_stream_flush(struct vfiomig_stream *s)
{
	VM_API(s ? s->ctx : NULL);
	int ret;

	if (!s)
		return -EINVAL;
	if (s->err)
		return stream_failed_before(s, "flush");
	if (!s->ops.flush)
		return 0;
	do
		ret = s->ops.flush(s->user);
	while (ret == -EINTR);
	if (ret < 0)
		return stream_fail(s, cb_errno(ret), "flush");
	return 0;
}

uint64_t vfiomig_stream_bytes_written(const struct vfiomig_stream *s)
{
	return s ? s->written : 0;
}

uint64_t vfiomig_stream_bytes_read(const struct vfiomig_stream *s)
{
	return s ? s->nread : 0;
}

struct vfiomig_ctx *vm_stream_ctx(const struct vfiomig_stream *s)
{
	return s ? s->ctx : NULL;
}

const char *vm_stream_desc(const struct vfiomig_stream *s)
{
	return s ? s->desc : "(no stream)";
}

int vm_stream_fd(struct vfiomig_stream *s)
{
	if (!s || !s->ops.fd)
		return -ENOTSUP;
	return s->ops.fd(s->user);
}

static struct vfiomig_stream *stream_alloc(struct vfiomig_ctx *ctx, enum stream_kind kind)
{
	struct vfiomig_stream *s = calloc(1, sizeof(*s));

	if (!s) {
		vm_enomem(ctx, "stream");
		return NULL;
	}
	s->refs = 1;
	s->ctx = vfiomig_ctx_ref(ctx);
	s->kind = kind;
	return s;
}

struct vfiomig_stream *vm_stream_get(struct vfiomig_stream *s)
{
	s->refs++;
	return s;
}

static void stream_release(struct vfiomig_stream *s)
{
	vfiomig_ctx_unref(s->ctx);
	free(s);
}

int vfiomig_stream_new(struct vfiomig_ctx *ctx, const struct vfiomig_stream_ops *ops, void *user,
		       struct vfiomig_stream **out)
{
	VM_API(ctx);
	struct vfiomig_stream *s;
	int err;

	if (!out)
		return vm_err(ctx, -EINVAL, "vfiomig_stream_new: NULL out");
	*out = NULL;
	if (!ops)
		return vm_err(ctx, -EINVAL, "vfiomig_stream_new: NULL ops");
	err = VM_OPTS_VALID(ctx, ops, struct vfiomig_stream_ops, release);
	if (err)
		return err;

	s = stream_alloc(ctx, STREAM_CUSTOM);
	if (!s)
		return -ENOMEM;
	/* Callbacks past the caller's sz stay NULL. */
	memcpy(&s->ops, ops, ops->sz < sizeof(s->ops) ? ops->sz : sizeof(s->ops));
	s->ops.sz = sizeof(s->ops);
	if (!s->ops.read && !s->ops.write) {
		stream_release(s);
		return vm_err(ctx, -EINVAL, "vfiomig_stream_new: neither read nor write callback");
	}
	s->user = user;
	snprintf(s->desc, sizeof(s->desc), "stream");
	*out = s;
	return 0;
}

void vm_stream_put(struct vfiomig_stream *s)
{
	if (!s || --s->refs)
		return;
	VM_API(s->ctx);
	switch (s->kind) {
	case STREAM_CUSTOM:
		if (s->ops.release)
			s->ops.release(s->user);
		break;
	case STREAM_FD:
		/* Linux releases the fd even when close() reports EINTR: never retry. */
		if (s->u.fd.own && close(s->u.fd.fd) < 0 && errno != EINTR)
			vm_err(s->ctx, -errno, "%s: close", s->desc);
		break;
	case STREAM_MEM:
		if (!s->u.mem.fixed)
			free(s->u.mem.buf);
		break;
	}
	stream_release(s);
}

void vfiomig_stream_free(struct vfiomig_stream *s)
{
	vm_stream_put(s);
}

int vfiomig_stream_set_name(struct vfiomig_stream *s, const char *name)
{
	VM_API(s ? s->ctx : NULL);
	if (!s)
		return -EINVAL;
	if (!name || strlen(name) >= sizeof(s->desc))
		return vm_err(s->ctx, -EINVAL, "%s: a stream name is at most %zu bytes", s->desc,
			      sizeof(s->desc) - 1);
	snprintf(s->desc, sizeof(s->desc), "%s", name);
	return 0;
}

/* ----------------------------------------------------------- fd streams */

/* Block until fd is ready for `events`; 0 or -errno. */
static int fd_wait(int fd, short events)
{
	struct pollfd pfd = { .fd = fd, .events = events };

	for (;;) {
		int n = poll(&pfd, 1, -1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (pfd.revents & POLLNVAL)
			return -EBADF;
		/* Ready, or POLLERR/POLLHUP: the next transfer reports what happened. */
		return 0;
	}
}

/*
 * write() to a pipe whose reader has gone raises SIGPIPE, which by default
 * kills the whole VMM. Keep it pending-blocked on this thread for the call
 * and discard the one our write raised, so only -EPIPE comes back. A
 * SIGPIPE that was already pending before is left alone.
 */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t len)
{
	sigset_t pipe_set, old, pending;
	bool was_pending;
	ssize_t n;
	int saved;

	sigemptyset(&pipe_set);
	sigaddset(&pipe_set, SIGPIPE);
	sigemptyset(&pending);
	sigpending(&pending);
	was_pending = sigismember(&pending, SIGPIPE) == 1;
	if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0)
		return write(fd, buf, len);

	n = write(fd, buf, len);
	saved = errno;
	if (n < 0 && saved == EPIPE && !was_pending) {
		const struct timespec zero = { 0, 0 };

		while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR)
			;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = saved;
	return n;
}

static ssize_t fd_write(void *user, const void *buf, size_t len)
{
	struct fd_stream *f = user;

	for (;;) {
		ssize_t n;

		if (f->is_sock)
			n = send(f->fd, buf, len, MSG_NOSIGNAL);
		else if (f->is_fifo)
			n = write_nosigpipe(f->fd, buf, len);
		else
			n = write(f->fd, buf, len);
		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int err = fd_wait(f->fd, POLLOUT);

			if (err)
				return err;
			continue;
		}
		return -errno;
	}
}

static ssize_t fd_read(void *user, void *buf, size_t len)
{
	struct fd_stream *f = user;

	for (;;) {
		ssize_t n = read(f->fd, buf, len);

		if (n >= 0)
			return n;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			int err = fd_wait(f->fd, POLLIN);

			if (err)
				return err;
			continue;
		}
		return -errno;
	}
}

static int fd_fd(void *user)
{
	return ((struct fd_stream *)user)->fd;
}

int vfiomig_stream_fd_new(struct vfiomig_ctx *ctx, int fd, uint32_t flags,
			  struct vfiomig_stream **out)
{
	VM_API(ctx);
	struct vfiomig_stream *s;
	struct stat st;
	bool take = flags & VFIOMIG_STREAM_FD_TAKE;
	int err, fl = -1;

	if (!out) {
		err = vm_err(ctx, -EINVAL, "fd stream %d: NULL out", fd);
		goto fail;
	}
	*out = NULL;
	if (flags & ~VFIOMIG_STREAM_FD_TAKE) {
		err = vm_err(ctx, -EINVAL, "fd stream %d: unknown flags 0x%x", fd,
			     flags & ~VFIOMIG_STREAM_FD_TAKE);
		goto fail;
	}
	if (fd >= 0)
		fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fstat(fd, &st) < 0) {
		err = vm_err(ctx, -EBADF, "fd stream %d: not an open fd", fd);
		take = false;
		goto fail;
	}

	s = stream_alloc(ctx, STREAM_FD);
	if (!s) {
		err = -ENOMEM;
		goto fail;
	}
	s->u.fd.fd = fd;
	s->u.fd.own = take;
	s->u.fd.is_sock = S_ISSOCK(st.st_mode);
	s->u.fd.is_fifo = S_ISFIFO(st.st_mode);
	/* The access mode decides the direction, so misuse is -EBADF without failing the stream. */
	s->ops = (struct vfiomig_stream_ops){
		.sz = sizeof(s->ops),
		.write = (fl & O_ACCMODE) != O_RDONLY ? fd_write : NULL,
		.read = (fl & O_ACCMODE) != O_WRONLY ? fd_read : NULL,
		.fd = fd_fd,
	};
	s->user = &s->u.fd;
	snprintf(s->desc, sizeof(s->desc), "fd stream %d", fd);
	*out = s;
	return 0;

fail:
	if (take && fd >= 0)
		close(fd);
	return err;
}

/* ------------------------------------------------------- memory streams */

/*
 * Room for len more bytes at the end of a memory stream's buffer: a pipe
 * drops what was read, a growable stream grows. Returns the room there is
 * (less than len only for a fixed buffer), or -ENOMEM.
 */
static ssize_t mem_make_room(struct mem_stream *m, size_t len)
{
	size_t room;

	if (m->pipe && m->rpos) {
		size_t unread = m->len - m->rpos;

		/*
		 * A pipe keeps only the unread bytes: slide them to the front when
		 * the write would not fit behind them (usually nothing is left:
		 * the reader has caught up, and nothing moves).
		 */
		if (unread == 0 || m->cap - m->len < len) {
			if (unread)
				memmove(m->buf, m->buf + m->rpos, unread);
			m->len = unread;
			m->rpos = 0;
		}
	}
	room = m->cap - m->len;

	if (room < len && !m->fixed) {
		size_t need, cap = m->cap ? m->cap : MEM_MIN_CAP;
		unsigned char *nbuf;

		if (__builtin_add_overflow(m->len, len, &need) || need > SIZE_MAX / 2)
			return -ENOMEM;
		while (cap < need)
			cap *= 2;
		nbuf = realloc(m->buf, cap);
		if (!nbuf)
			return -ENOMEM;
		m->buf = nbuf;
		m->cap = cap;
		room = cap - m->len;
	}
	return (ssize_t)(room > SSIZE_MAX ? SSIZE_MAX : room);
}

static ssize_t mem_write(void *user, const void *buf, size_t len)
{
	struct mem_stream *m = user;
	ssize_t room = mem_make_room(m, len);

	if (room < 0)
		return room;
	if (room == 0)
		return -ENOSPC;
	if (len > (size_t)room)
		len = (size_t)room;
	memcpy(m->buf + m->len, buf, len);
	m->len += len;
	return (ssize_t)len;
}

static ssize_t mem_read(void *user, void *buf, size_t len)
{
	struct mem_stream *m = user;
	size_t left = m->len - m->rpos;

	if (len > left)
		len = left;
	if (len)
		memcpy(buf, m->buf + m->rpos, len);
	m->rpos += len;
	if (m->pipe && m->rpos == m->len)
		m->rpos = m->len = 0; /* all read: the next write starts at the front again */
	return (ssize_t)len;
}

/*
 * The windows: the migration's data path reads a device's data_fd straight
 * into a memory stream and writes the data_fd straight from one, so memory
 * streams cost no copy of their own (docs/ARCHITECTURE.md, "The data path").
 */
static struct mem_stream *mem_of(struct vfiomig_stream *s, bool write)
{
	if (!s || s->kind != STREAM_MEM || s->err)
		return NULL;
	if (write ? !s->ops.write : !s->ops.read)
		return NULL;
	return &s->u.mem;
}

bool vm_stream_lends(struct vfiomig_stream *s)
{
	return mem_of(s, true) || mem_of(s, false);
}

void *vm_stream_write_window(struct vfiomig_stream *s, size_t len)
{
	struct mem_stream *m = mem_of(s, true);
	ssize_t room;

	if (!m || !len)
		return NULL;
	room = mem_make_room(m, len);
	if (room < 0 || (size_t)room < len)
		return NULL; /* the plain write reports what is wrong */
	return m->buf + m->len;
}

void vm_stream_write_commit(struct vfiomig_stream *s, size_t n)
{
	s->u.mem.len += n;
	s->written += n;
}

const void *vm_stream_read_window(struct vfiomig_stream *s, size_t len)
{
	struct mem_stream *m = mem_of(s, false);
	const void *p;

	if (!m || !len || m->len - m->rpos < len)
		return NULL; /* the plain read reports a short stream */
	p = m->buf + m->rpos;
	m->rpos += len;
	s->nread += len;
	/* Like mem_read, a drained pipe starts at the front again; p stays valid until the next write. */
	if (m->pipe && m->rpos == m->len)
		m->rpos = m->len = 0;
	return p;
}

static int mem_stream_new(struct vfiomig_ctx *ctx, struct mem_stream init, bool writable,
			  const char *desc, struct vfiomig_stream **out)
{
	struct vfiomig_stream *s = stream_alloc(ctx, STREAM_MEM);

	if (!s)
		return -ENOMEM;
	s->u.mem = init;
	s->ops = (struct vfiomig_stream_ops){
		.sz = sizeof(s->ops),
		.write = writable ? mem_write : NULL,
		.read = mem_read,
	};
	s->user = &s->u.mem;
	snprintf(s->desc, sizeof(s->desc), "%s", desc);
	*out = s;
	return 0;
}

int vfiomig_stream_mem_new(struct vfiomig_ctx *ctx, struct vfiomig_stream **out)
{
	VM_API(ctx);
	if (!out)
		return vm_err(ctx, -EINVAL, "memory stream: NULL out");
	*out = NULL;
	return mem_stream_new(ctx, (struct mem_stream){ 0 }, true, "memory stream", out);
}

int vfiomig_stream_mem_pipe_new(struct vfiomig_ctx *ctx, struct vfiomig_stream **out)
{
	VM_API(ctx);
	if (!out)
		return vm_err(ctx, -EINVAL, "memory pipe: NULL out");
	*out = NULL;
	return mem_stream_new(ctx, (struct mem_stream){ .pipe = true }, true, "memory pipe", out);
}

int vfiomig_stream_mem_fixed_new(struct vfiomig_ctx *ctx, void *buf, size_t len, uint32_t flags,
				 struct vfiomig_stream **out)
{
	VM_API(ctx);
	bool rd = flags & VFIOMIG_STREAM_MEM_READ;

	if (!out)
		return vm_err(ctx, -EINVAL, "fixed memory stream: NULL out");
	*out = NULL;
	if (flags & ~VFIOMIG_STREAM_MEM_READ)
		return vm_err(ctx, -EINVAL, "fixed memory stream: unknown flags 0x%x",
			      flags & ~VFIOMIG_STREAM_MEM_READ);
	if (!buf && len)
		return vm_err(ctx, -EINVAL, "fixed memory stream: NULL buffer of %zu bytes", len);
	return mem_stream_new(ctx,
			      (struct mem_stream){
				      .buf = buf,
				      .len = rd ? len : 0,
				      .cap = len,
				      .fixed = true,
			      },
			      !rd, rd ? "memory stream (read-only)" : "fixed memory stream", out);
}

int vfiomig_stream_mem_data(const struct vfiomig_stream *s, const void **data, size_t *len)
{
	VM_API(s ? s->ctx : NULL);
	if (!s)
		return -EINVAL;
	if (!data || !len)
		return vm_arg_err(s->ctx, __func__);
	if (s->kind != STREAM_MEM)
		return vm_err(s->ctx, -EINVAL, "%s: not a memory stream", s->desc);
	if (s->u.mem.pipe) {
		*data = s->u.mem.buf + s->u.mem.rpos;
		*len = s->u.mem.len - s->u.mem.rpos;
		return 0;
	}
	*data = s->u.mem.buf;
	*len = s->u.mem.len;
	return 0;
}
