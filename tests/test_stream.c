/* SPDX-License-Identifier: MIT */
/*
 * Stream objects: fd streams over pipes (blocking and non-blocking),
 * files and socketpairs; callback streams with short transfers, EINTR,
 * sticky failures and the sz rule; growable and fixed memory streams.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/stream.h>

#include "format.h"

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

static void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)((i * 131u + seed * 7u + (i >> 9)) & 0xff);
}

static bool fd_is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* A thread that reads `len` bytes from an fd through its own fd stream. */
struct pump {
	int fd;
	size_t len;
	unsigned char *buf;
	int ret;
	int end_ret; /* what a further read returned */
};

static void *reader_thread(void *arg)
{
	struct pump *p = arg;
	struct vfiomig_stream *s;

	p->ret = vfiomig_stream_fd_new(NULL, p->fd, 0, &s);
	if (p->ret)
		return NULL;
	p->ret = vfiomig_stream_read(s, p->buf, p->len);
	if (!p->ret) {
		unsigned char extra;

		p->end_ret = vfiomig_stream_read(s, &extra, 1);
	}
	vfiomig_stream_free(s);
	close(p->fd);
	return NULL;
}

static void *writer_thread(void *arg)
{
	struct pump *p = arg;
	struct vfiomig_stream *s;

	p->ret = vfiomig_stream_fd_new(NULL, p->fd, VFIOMIG_STREAM_FD_TAKE, &s);
	if (p->ret)
		return NULL;
	/* In uneven pieces, so the reader sees partial reads. */
	for (size_t off = 0, k = 1; off < p->len && !p->ret; k = k * 3 + 1) {
		size_t n = k % 70000 + 1;

		if (n > p->len - off)
			n = p->len - off;
		p->ret = vfiomig_stream_write(s, p->buf + off, n);
		off += n;
	}
	vfiomig_stream_free(s); /* closes the fd: the reader sees the end */
	return NULL;
}

/* ------------------------------------------------------------ fd streams */

TestSuite(stream_fd, .init = leak_baseline);

Test(stream_fd, pipe_write_read_with_writer_thread)
{
	const size_t len = 1 << 20;
	unsigned char *src = malloc(len), *dst = malloc(len);
	struct pump w = { .len = len, .buf = src };
	struct vfiomig_stream *s;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	pthread_t th;
	int fds[2];

	fill_pattern(src, len, 1);
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	w.fd = fds[1];
	cr_assert_eq(pthread_create(&th, NULL, writer_thread, &w), 0);

	cr_assert_eq(vfiomig_stream_fd_new(ctx, fds[0], VFIOMIG_STREAM_FD_TAKE, &s), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, len), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, 1), -ENODATA, "clean end after all bytes");
	cr_assert_eq(vfiomig_stream_bytes_read(s), len);
	cr_assert_eq(vfiomig_stream_bytes_written(s), 0);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(w.ret, 0);
	cr_assert(memcmp(src, dst, len) == 0);
	cr_assert_eq(lb.count, 0, "a clean end is not an error: %s", lb.last);

	vfiomig_stream_free(s);
	cr_assert_not(fd_is_open(fds[0]), "FD_TAKE closes the fd");
	vfiomig_ctx_unref(ctx);
	free(src);
	free(dst);
	assert_no_leaks();
}

Test(stream_fd, nonblocking_pipe_waits_on_eagain_both_ways)
{
	const size_t len = 512 * 1024;
	unsigned char *src = malloc(len), *dst = malloc(len);
	struct pump r = { .len = len, .buf = dst };
	struct vfiomig_stream *s;
	pthread_t th;
	int fds[2];

	fill_pattern(src, len, 2);
	cr_assert_eq(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
	/* A one-page pipe: a 512 KiB non-blocking write must meet EAGAIN. */
	cr_assert_geq(fcntl(fds[1], F_SETPIPE_SZ, 4096), 4096);
	r.fd = fds[0];
	cr_assert_eq(pthread_create(&th, NULL, reader_thread, &r), 0);

	cr_assert_eq(vfiomig_stream_fd_new(NULL, fds[1], 0, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, src, len), 0);
	cr_assert_eq(vfiomig_stream_bytes_written(s), len);
	vfiomig_stream_free(s);
	cr_assert(fd_is_open(fds[1]), "a borrowed fd stays open");
	close(fds[1]);

	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(r.ret, 0);
	cr_assert_eq(r.end_ret, -ENODATA);
	cr_assert(memcmp(src, dst, len) == 0);
	free(src);
	free(dst);
	assert_no_leaks();
}

Test(stream_fd, socketpair_both_directions)
{
	const size_t len = 300000;
	unsigned char *src = malloc(len), *dst = malloc(len);
	struct pump w = { .len = len, .buf = src };
	unsigned char reply[5];
	struct vfiomig_stream *s;
	pthread_t th;
	int sv[2];

	fill_pattern(src, len, 3);
	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, sv[0], VFIOMIG_STREAM_FD_TAKE, &s), 0);
	/* One stream both writes and reads on a socket. */
	cr_assert_eq(vfiomig_stream_write(s, "hello", 5), 0);
	cr_assert_eq(read(sv[1], reply, 5), 5);
	cr_assert(memcmp(reply, "hello", 5) == 0);

	w.fd = sv[1];
	cr_assert_eq(pthread_create(&th, NULL, writer_thread, &w), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, len), 0);
	cr_assert_eq(vfiomig_stream_read(s, reply, 1), -ENODATA);
	cr_assert_eq(pthread_join(th, NULL), 0);
	cr_assert_eq(w.ret, 0);
	cr_assert(memcmp(src, dst, len) == 0);
	vfiomig_stream_free(s);
	free(src);
	free(dst);
	assert_no_leaks();
}

Test(stream_fd, file_write_then_read_back)
{
	unsigned char src[10000], dst[10000];
	struct vfiomig_stream *w, *r;
	FILE *f = tmpfile();
	int fd;

	cr_assert_not_null(f);
	fd = fileno(f);
	fill_pattern(src, sizeof(src), 4);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fd, 0, &w), 0);
	cr_assert_eq(vfiomig_stream_write(w, src, sizeof(src)), 0);
	cr_assert_eq(vfiomig_stream_flush(w), 0, "no flush callback: nothing to do");
	vfiomig_stream_free(w);

	cr_assert_eq(lseek(fd, 0, SEEK_SET), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fd, 0, &r), 0);
	cr_assert_eq(vfiomig_stream_read(r, dst, 4000), 0);
	cr_assert_eq(vfiomig_stream_read(r, dst + 4000, 6000), 0);
	cr_assert(memcmp(src, dst, sizeof(src)) == 0);
	cr_assert_eq(vfiomig_stream_read(r, dst, 1), -ENODATA);
	cr_assert_eq(vfiomig_stream_read(r, dst, 1), -ENODATA, "the end is not sticky");
	/* A read crossing the end of the file is a truncation. */
	cr_assert_eq(lseek(fd, -3, SEEK_END), (off_t)sizeof(src) - 3);
	cr_assert_eq(vfiomig_stream_read(r, dst, 8), -EPIPE);
	cr_assert_eq(vfiomig_stream_read(r, dst, 1), -EPIPE, "a truncation is sticky");
	vfiomig_stream_free(r);
	fclose(f);
	assert_no_leaks();
}

Test(stream_fd, pipe_without_reader_is_epipe_not_sigpipe)
{
	struct vfiomig_stream *s;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	char expect[64];
	sigset_t pending;
	int fds[2];

	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	close(fds[0]);
	cr_assert_eq(vfiomig_stream_fd_new(ctx, fds[1], VFIOMIG_STREAM_FD_TAKE, &s), 0);
	/* The default SIGPIPE action would kill this worker. */
	cr_assert_eq(vfiomig_stream_write(s, "x", 1), -EPIPE);
	snprintf(expect, sizeof(expect), "fd stream %d: write: %s", fds[1], strerror(EPIPE));
	cr_assert_str_eq(lb.last, expect);
	cr_assert_eq(sigpending(&pending), 0);
	cr_assert_not(sigismember(&pending, SIGPIPE), "no SIGPIPE left pending");
	cr_assert_eq(vfiomig_stream_write(s, "y", 1), -EPIPE, "sticky");
	cr_assert_eq(lb.count, 2, "one line per failing call");
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(stream_fd, socket_without_peer_is_epipe_and_sticky)
{
	struct vfiomig_stream *s;
	unsigned char b;
	int sv[2];

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	close(sv[1]);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, sv[0], VFIOMIG_STREAM_FD_TAKE, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, "x", 1), -EPIPE);
	cr_assert_eq(vfiomig_stream_read(s, &b, 1), -EPIPE, "the failure covers reads too");
	cr_assert_eq(vfiomig_stream_flush(s), -EPIPE);
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(stream_fd, rejects_bad_fd_and_flags)
{
	struct vfiomig_stream *s = (void *)1;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	int fds[2];

	cr_assert_eq(vfiomig_stream_fd_new(ctx, -1, 0, &s), -EBADF);
	cr_assert_null(s);
	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	close(fds[1]);
	cr_assert_eq(vfiomig_stream_fd_new(ctx, fds[1], 0, &s), -EBADF);
	cr_assert(strstr(lb.last, "not an open fd") != NULL, "%s", lb.last);
	/* Ownership is taken even when the call fails. */
	cr_assert_eq(vfiomig_stream_fd_new(ctx, fds[0], VFIOMIG_STREAM_FD_TAKE | 0x80, &s),
		     -EINVAL);
	cr_assert_not(fd_is_open(fds[0]));
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(stream_fd, direction_follows_the_access_mode)
{
	struct vfiomig_stream *r, *w;
	unsigned char b;
	int fds[2];

	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fds[0], VFIOMIG_STREAM_FD_TAKE, &r), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fds[1], VFIOMIG_STREAM_FD_TAKE, &w), 0);
	cr_assert_eq(vfiomig_stream_write(r, "x", 1), -EBADF);
	cr_assert_eq(vfiomig_stream_read(w, &b, 1), -EBADF);
	/* Neither misuse failed its stream. */
	cr_assert_eq(vfiomig_stream_write(w, "y", 1), 0);
	cr_assert_eq(vfiomig_stream_read(r, &b, 1), 0);
	cr_assert_eq(b, 'y');
	vfiomig_stream_free(r);
	vfiomig_stream_free(w);
	assert_no_leaks();
}

Test(stream_fd, exposes_its_fd_for_a_fast_path)
{
	struct vfiomig_stream *s, *m;
	int fds[2];

	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fds[0], VFIOMIG_STREAM_FD_TAKE, &s), 0);
	cr_assert_eq(vm_stream_fd(s), fds[0]);
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &m), 0);
	cr_assert_eq(vm_stream_fd(m), -ENOTSUP);
	cr_assert_str_eq(vm_stream_desc(m), "memory stream");
	vfiomig_stream_free(s);
	vfiomig_stream_free(m);
	close(fds[1]);
	assert_no_leaks();
}

/* ------------------------------------------------------ callback streams */

/* A scripted endpoint: moves 1..3 bytes per call, can fail or say EINTR. */
struct fake {
	unsigned char buf[4096];
	size_t len, rpos;
	unsigned calls;
	unsigned eintr_every;  /* every n-th call returns -EINTR (0: never) */
	unsigned fail_at;      /* call number that fails (0: never) */
	int fail_err;
	bool zero_write;       /* write returns 0 */
	bool overclaim;        /* claim more than asked */
	int flush_ret;
	unsigned flushes;
	unsigned releases;
};

static ssize_t fake_step(struct fake *f, size_t len, ssize_t *n)
{
	f->calls++;
	if (f->eintr_every && f->calls % f->eintr_every == 0)
		return -EINTR;
	if (f->fail_at && f->calls == f->fail_at)
		return f->fail_err;
	*n = (ssize_t)(f->calls % 3 + 1);
	if ((size_t)*n > len)
		*n = (ssize_t)len;
	return 0;
}

static ssize_t fake_write(void *user, const void *buf, size_t len)
{
	struct fake *f = user;
	ssize_t n = 0, ret = fake_step(f, len, &n);

	if (ret)
		return ret;
	if (f->zero_write)
		return 0;
	if (f->overclaim)
		return (ssize_t)len + 1;
	if (f->len + (size_t)n > sizeof(f->buf))
		return -ENOSPC;
	memcpy(f->buf + f->len, buf, (size_t)n);
	f->len += (size_t)n;
	return n;
}

static ssize_t fake_read(void *user, void *buf, size_t len)
{
	struct fake *f = user;
	ssize_t n = 0, ret = fake_step(f, len, &n);

	if (ret)
		return ret;
	if (f->overclaim)
		return (ssize_t)len + 1;
	if ((size_t)n > f->len - f->rpos)
		n = (ssize_t)(f->len - f->rpos);
	memcpy(buf, f->buf + f->rpos, (size_t)n);
	f->rpos += (size_t)n;
	return n;
}

static int fake_flush(void *user)
{
	struct fake *f = user;

	f->flushes++;
	return f->flush_ret;
}

static void fake_release(void *user)
{
	((struct fake *)user)->releases++;
}

static const struct vfiomig_stream_ops fake_ops = {
	.sz = sizeof(struct vfiomig_stream_ops),
	.write = fake_write,
	.read = fake_read,
	.flush = fake_flush,
	.release = fake_release,
};

TestSuite(stream_ops, .init = leak_baseline);

Test(stream_ops, partial_writes_of_one_to_three_bytes_are_continued)
{
	struct fake f = { 0 };
	unsigned char src[1000], dst[1000];
	struct vfiomig_stream *s;

	fill_pattern(src, sizeof(src), 5);
	cr_assert_eq(vfiomig_stream_new(NULL, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, src, sizeof(src)), 0);
	cr_assert_eq(f.len, sizeof(src));
	cr_assert(memcmp(f.buf, src, sizeof(src)) == 0);
	cr_assert_geq(f.calls, sizeof(src) / 3, "the callback moved at most 3 bytes a call");
	cr_assert_eq(vfiomig_stream_bytes_written(s), sizeof(src));

	f.calls = 0;
	cr_assert_eq(vfiomig_stream_read(s, dst, sizeof(dst)), 0);
	cr_assert(memcmp(dst, src, sizeof(src)) == 0);
	cr_assert_geq(f.calls, sizeof(src) / 3);
	cr_assert_eq(vfiomig_stream_bytes_read(s), sizeof(src));
	cr_assert_eq(vfiomig_stream_read(s, dst, 1), -ENODATA);
	vfiomig_stream_free(s);
	cr_assert_eq(f.releases, 1, "release is called by free");
	assert_no_leaks();
}

Test(stream_ops, eintr_is_retried)
{
	struct fake f = { .eintr_every = 2 };
	unsigned char src[100], dst[100];
	struct vfiomig_stream *s;

	fill_pattern(src, sizeof(src), 6);
	cr_assert_eq(vfiomig_stream_new(NULL, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, src, sizeof(src)), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, sizeof(dst)), 0);
	cr_assert(memcmp(dst, src, sizeof(src)) == 0);
	cr_assert_eq(vfiomig_stream_bytes_written(s), sizeof(src));
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(stream_ops, a_failed_callback_makes_the_stream_fail_for_good)
{
	struct fake f = { .fail_at = 5, .fail_err = -ECONNRESET };
	unsigned char src[100], b;
	struct vfiomig_stream *s;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);
	unsigned calls;

	fill_pattern(src, sizeof(src), 7);
	cr_assert_eq(vfiomig_stream_new(ctx, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, src, sizeof(src)), -ECONNRESET);
	cr_assert_str_eq(lb.last, "stream: write: Connection reset by peer");
	calls = f.calls;
	cr_assert_eq(vfiomig_stream_write(s, src, 1), -ECONNRESET);
	cr_assert_eq(vfiomig_stream_read(s, &b, 1), -ECONNRESET);
	cr_assert_eq(vfiomig_stream_flush(s), -ECONNRESET);
	cr_assert_eq(f.calls, calls, "no callback after the failure");
	cr_assert_eq(f.flushes, 0);
	cr_assert(strstr(lb.last, "failed earlier") != NULL, "%s", lb.last);
	cr_assert_eq(vfiomig_stream_bytes_written(s), f.len, "bytes before the failure count");
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(stream_ops, write_without_progress_is_eio)
{
	struct fake f = { .zero_write = true };
	struct vfiomig_stream *s;

	cr_assert_eq(vfiomig_stream_new(NULL, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, "abc", 3), -EIO);
	cr_assert_eq(vfiomig_stream_write(s, "abc", 3), -EIO);
	cr_assert_eq(f.calls, 1);
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(stream_ops, callback_claiming_more_than_asked_is_eio)
{
	struct fake f = { .overclaim = true };
	unsigned char b[4];
	struct vfiomig_stream *s, *r;

	cr_assert_eq(vfiomig_stream_new(NULL, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, "abc", 3), -EIO);
	cr_assert_eq(vfiomig_stream_new(NULL, &fake_ops, &f, &r), 0);
	cr_assert_eq(vfiomig_stream_read(r, b, sizeof(b)), -EIO);
	cr_assert_eq(vfiomig_stream_bytes_read(r), 0);
	vfiomig_stream_free(s);
	vfiomig_stream_free(r);
	assert_no_leaks();
}

Test(stream_ops, clean_end_is_enodata_mid_read_end_is_epipe)
{
	struct fake f = { 0 };
	unsigned char b[8];
	struct vfiomig_stream *s;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	cr_assert_eq(vfiomig_stream_new(ctx, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_read(s, b, 4), -ENODATA);
	cr_assert_eq(lb.count, 0, "a clean end logs no error");
	cr_assert_eq(vfiomig_stream_write(s, "abcde", 5), 0, "-ENODATA does not fail the stream");
	cr_assert_eq(vfiomig_stream_read(s, b, 4), 0);
	cr_assert_eq(vfiomig_stream_read(s, b, 4), -EPIPE, "1 of 4 bytes, then the end");
	cr_assert(strstr(lb.last, "stream: read: the stream ended after 1 of 4 bytes") ==
			  lb.last,
		  "%s", lb.last);
	cr_assert_eq(vfiomig_stream_write(s, "x", 1), -EPIPE, "a truncation fails the stream");
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(stream_ops, flush_reaches_the_callback_and_its_failure_sticks)
{
	struct fake f = { 0 };
	struct vfiomig_stream *s;

	cr_assert_eq(vfiomig_stream_new(NULL, &fake_ops, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_flush(s), 0);
	cr_assert_eq(f.flushes, 1);
	f.flush_ret = -EDQUOT;
	cr_assert_eq(vfiomig_stream_flush(s), -EDQUOT);
	cr_assert_eq(vfiomig_stream_write(s, "a", 1), -EDQUOT);
	cr_assert_eq(f.flushes, 2);
	vfiomig_stream_free(s);
	assert_no_leaks();
}

/* The ops as a caller built against an older header sees them: write only. */
struct ops_v0 {
	size_t sz;
	ssize_t (*write)(void *user, const void *buf, size_t len);
};

Test(stream_ops, table_size_rule)
{
	struct fake f = { 0 };
	struct ops_v0 old = { .sz = sizeof(old), .write = fake_write };
	struct {
		struct vfiomig_stream_ops ops;
		uint64_t future;
	} big = { .ops = fake_ops };
	struct vfiomig_stream *s = (void *)1;
	unsigned char b;

	/* Ops past the caller's sz are NULL: this stream is write-only. */
	cr_assert_eq(vfiomig_stream_new(NULL, (const void *)&old, &f, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, "ab", 2), 0);
	cr_assert_eq(vfiomig_stream_read(s, &b, 1), -EBADF);
	cr_assert_eq(vfiomig_stream_write(s, "c", 1), 0, "a misuse does not fail the stream");
	vfiomig_stream_free(s);
	cr_assert_eq(f.releases, 0, "no release callback in the old table");

	/* A newer caller's table: zero tail accepted, non-zero refused. */
	big.ops.sz = sizeof(big);
	cr_assert_eq(vfiomig_stream_new(NULL, &big.ops, &f, &s), 0);
	vfiomig_stream_free(s);
	big.future = 1;
	cr_assert_eq(vfiomig_stream_new(NULL, &big.ops, &f, &s), -EINVAL);
	cr_assert_null(s);

	old.sz = 4;
	cr_assert_eq(vfiomig_stream_new(NULL, (const void *)&old, &f, &s), -EINVAL);
	old.sz = sizeof(size_t);
	cr_assert_eq(vfiomig_stream_new(NULL, (const void *)&old, &f, &s), -EINVAL,
		     "neither read nor write");
	cr_assert_eq(vfiomig_stream_new(NULL, NULL, &f, &s), -EINVAL);
	cr_assert_eq(f.releases, 1, "release never runs for a failed new");
	assert_no_leaks();
}

/* ------------------------------------------------------- memory streams */

TestSuite(stream_mem, .init = leak_baseline);

Test(stream_mem, growable_write_then_read_back)
{
	unsigned char src[20000], dst[20000];
	struct vfiomig_stream *s;
	const void *data;
	size_t len;

	fill_pattern(src, sizeof(src), 8);
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &s), 0);
	cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
	cr_assert_eq(len, 0);
	cr_assert_eq(vfiomig_stream_write(s, src, 3000), 0);
	cr_assert_eq(vfiomig_stream_write(s, src + 3000, 17000), 0);
	cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
	cr_assert_eq(len, sizeof(src));
	cr_assert(memcmp(data, src, sizeof(src)) == 0);

	cr_assert_eq(vfiomig_stream_read(s, dst, 12345), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst + 12345, sizeof(src) - 12345), 0);
	cr_assert(memcmp(dst, src, sizeof(src)) == 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, 1), -ENODATA);
	/* Writing after reading appends; the data view still holds everything. */
	cr_assert_eq(vfiomig_stream_write(s, "tail", 4), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, 4), 0);
	cr_assert(memcmp(dst, "tail", 4) == 0);
	cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
	cr_assert_eq(len, sizeof(src) + 4);
	cr_assert_eq(vfiomig_stream_bytes_written(s), sizeof(src) + 4);
	cr_assert_eq(vfiomig_stream_bytes_read(s), sizeof(src) + 4);
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(stream_mem, a_pipe_yields_every_byte_once_in_order)
{
	unsigned char src[50000], dst[50000];
	struct vfiomig_stream *s;
	const void *data;
	size_t len, w = 0, r = 0;
	unsigned int x = 1;

	fill_pattern(src, sizeof(src), 3);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(NULL, &s), 0);
	/* Writes and reads of uneven sizes, the reader sometimes behind, sometimes caught up. */
	while (r < sizeof(src)) {
		x = x * 1103515245u + 12345u;
		size_t wn = (x >> 8) % 3000, rn = (x >> 20) % 3500;

		if (wn > sizeof(src) - w)
			wn = sizeof(src) - w;
		cr_assert_eq(vfiomig_stream_write(s, src + w, wn), 0);
		w += wn;
		if (rn > w - r)
			rn = w - r;
		cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
		cr_assert_eq(len, w - r, "the data view is the unread bytes");
		cr_assert(len == 0 || memcmp(data, src + r, len) == 0);
		cr_assert_eq(vfiomig_stream_read(s, dst + r, rn), 0);
		r += rn;
	}
	cr_assert(memcmp(dst, src, sizeof(src)) == 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, 1), -ENODATA);
	cr_assert_eq(vfiomig_stream_bytes_written(s), sizeof(src));
	cr_assert_eq(vfiomig_stream_bytes_read(s), sizeof(src));
	vfiomig_stream_free(s);
	assert_no_leaks();
}

#if defined(TESTUTIL_HEAP_COUNT)
Test(stream_mem, a_pipe_holds_only_what_is_unread)
{
	enum { ROUND = 1 << 20, ROUNDS = 32 };
	unsigned char *buf = malloc(ROUND);
	struct vfiomig_stream *s, *g;
	long base;

	cr_assert_not_null(buf);
	fill_pattern(buf, ROUND, 5);
	base = heap_in_use();
	heap_peak_reset();
	cr_assert_eq(vfiomig_stream_mem_pipe_new(NULL, &s), 0);
	for (int i = 0; i < ROUNDS; i++) {
		cr_assert_eq(vfiomig_stream_write(s, buf, ROUND), 0);
		cr_assert_eq(vfiomig_stream_read(s, buf, ROUND), 0);
	}
	/* 32 MiB went through; the pipe's buffer is one round's size (growth by doubling: < 2x). */
	cr_assert_lt(heap_peak_since(base), 2 * ROUND + 65536, "peak %ld bytes for 1 MiB rounds",
		     heap_peak_since(base));
	vfiomig_stream_free(s);
	/* The growable stream keeps everything: the same rounds cost all 32 MiB. */
	heap_peak_reset();
	cr_assert_eq(vfiomig_stream_mem_new(NULL, &g), 0);
	for (int i = 0; i < ROUNDS; i++) {
		cr_assert_eq(vfiomig_stream_write(g, buf, ROUND), 0);
		cr_assert_eq(vfiomig_stream_read(g, buf, ROUND), 0);
	}
	cr_assert_geq(heap_peak_since(base), (long)ROUNDS * ROUND);
	vfiomig_stream_free(g);
	free(buf);
	assert_no_leaks();
}
#endif

Test(stream_mem, fixed_read_yields_the_buffer_then_the_end)
{
	unsigned char buf[10] = "0123456789", dst[10];
	struct vfiomig_stream *s;
	struct logbuf lb;
	struct vfiomig_ctx *ctx = new_ctx(&lb);

	cr_assert_eq(
		vfiomig_stream_mem_fixed_new(ctx, buf, sizeof(buf), VFIOMIG_STREAM_MEM_READ, &s),
		0);
	cr_assert_eq(vfiomig_stream_write(s, "x", 1), -EBADF);
	cr_assert(strstr(lb.last, "read-only") != NULL, "%s", lb.last);
	cr_assert_eq(vfiomig_stream_read(s, dst, 6), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst + 6, 4), 0);
	cr_assert(memcmp(dst, "0123456789", 10) == 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, 1), -ENODATA);
	vfiomig_stream_free(s);
	cr_assert(memcmp(buf, "0123456789", 10) == 0, "the caller's buffer is untouched");
	vfiomig_ctx_unref(ctx);
	assert_no_leaks();
}

Test(stream_mem, fixed_write_past_the_end_is_enospc)
{
	unsigned char buf[10], dst[10];
	struct vfiomig_stream *s;
	const void *data;
	size_t len;

	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, buf, sizeof(buf), 0, &s), 0);
	cr_assert_eq(vfiomig_stream_write(s, "abcdefgh", 8), 0);
	cr_assert_eq(vfiomig_stream_read(s, dst, 3), 0, "what was written can be read back");
	cr_assert(memcmp(dst, "abc", 3) == 0);
	cr_assert_eq(vfiomig_stream_write(s, "ijkl", 4), -ENOSPC);
	cr_assert_eq(vfiomig_stream_mem_data(s, &data, &len), 0);
	cr_assert_eq(data, buf);
	cr_assert_eq(len, 10, "the bytes that fitted were written");
	cr_assert(memcmp(buf, "abcdefghij", 10) == 0);
	cr_assert_eq(vfiomig_stream_write(s, "", 0), -ENOSPC, "sticky");
	vfiomig_stream_free(s);
	assert_no_leaks();
}

Test(stream_mem, argument_checks)
{
	struct vfiomig_stream *s = (void *)1, *fs;
	const void *data;
	size_t len;
	int fds[2];

	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, NULL, 4, 0, &s), -EINVAL);
	cr_assert_null(s);
	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, &len, sizeof(len), 0x10, &s), -EINVAL);
	cr_assert_eq(vfiomig_stream_mem_fixed_new(NULL, NULL, 0, VFIOMIG_STREAM_MEM_READ, &s), 0);
	cr_assert_eq(vfiomig_stream_read(s, &len, 1), -ENODATA);
	vfiomig_stream_free(s);

	cr_assert_eq(pipe2(fds, O_CLOEXEC), 0);
	cr_assert_eq(vfiomig_stream_fd_new(NULL, fds[0], VFIOMIG_STREAM_FD_TAKE, &fs), 0);
	cr_assert_eq(vfiomig_stream_mem_data(fs, &data, &len), -EINVAL);
	vfiomig_stream_free(fs);
	close(fds[1]);
	cr_assert_eq(vfiomig_stream_write(NULL, "a", 1), -EINVAL);
	cr_assert_eq(vfiomig_stream_read(NULL, &len, 1), -EINVAL);
	cr_assert_eq(vfiomig_stream_bytes_written(NULL), 0);
	vfiomig_stream_free(NULL);
	assert_no_leaks();
}
