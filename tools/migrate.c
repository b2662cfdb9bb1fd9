/* SPDX-License-Identifier: MIT */
/*
 * vfiomig migrate: live migration of one or more devices between two
 * vfiomig processes over one TCP or unix socket; also the reference
 * embedding of the flow between two VMMs that include/vfiomig/migration.h
 * describes (pre-copy with switchover-ack, stop-and-copy, the return path,
 * in-band cancel, device sets).
 *
 *   destination: vfiomig migrate --listen ADDR DEVICE...
 *   source:      vfiomig migrate DEVICE... --to ADDR
 *
 * The wire protocol (also in docs/migration-flow.md, "The vfiomig migrate
 * wire protocol"). All integers are big-endian.
 *
 *   HELLO, once each way, source first: be32 magic 0x56464d57 ("VFMW"),
 *   be16 version (1), be16 role (1 source, 2 destination), be32 device
 *   count, be32 status (0, or a positive errno: the destination refuses),
 *   be16 reason length L (at most 255), be16 0, then L bytes of reason.
 *   The destination answers with status 0 only when magic, version, role
 *   and the device count match its own; otherwise it says why and closes.
 *
 *   Then frames, both ways: be32 index, be32 length (at most 1 MiB),
 *   `length` bytes. Index i < device count: bytes of device i's stream
 *   (source -> destination: its forward stream, the library's stream
 *   format; destination -> source: its return-path messages). Each
 *   device's streams are callback streams (vfiomig_stream_new) that wrap
 *   whatever the library writes into frames of their device's index, so
 *   everything the library writes on its own (a CANCEL record when a set
 *   member fails, FAILED on the return path) is self-describing. Readers
 *   demultiplex: a device's read callback pulls frames off the socket and
 *   queues those of other devices. Index 0xffffffff: a control frame,
 *   be32 type: COMMIT (1, source -> destination: every device LOADED, the
 *   destination may run the VM) and RUNNING (2, destination -> source: it
 *   does). Unknown control types are ignored.
 *
 *   The source writes every device's setup first, then rounds (one
 *   pre-copy phase per device each), then every stop-and-copy phase. It
 *   reads the return path between rounds with poll() (never blocking the
 *   pre-copy loop) and blocks, with the timeout, for LOADED or FAILED
 *   after stop-and-copy.
 *
 *   The commit: the destination runs the VM only after COMMIT, so a
 *   LOADED lost with the connection never leaves the VM running on both
 *   sides: a destination without COMMIT resets its devices, and a source
 *   that did not send COMMIT resumes. After sending COMMIT the source
 *   waits for RUNNING; if the connection dies before it arrives the
 *   outcome is unknown and the source keeps its devices stopped (exit 1,
 *   said so) rather than risk running the VM twice.
 *
 * Errors are one line, naming the side that failed; exit status 0 / 1 / 2
 * as for every vfiomig command.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>
#include <vfiomig/migration.h>
#include <vfiomig/stream.h>

#include "tool.h"

#define WIRE_MAGIC    0x56464d57u /* "VFMW" */
#define WIRE_VERSION  1u
#define ROLE_SOURCE   1u
#define ROLE_DEST     2u
#define HELLO_FIXED   20u
#define REASON_MAX    255u
#define FRAME_HDR     8u
#define FRAME_MAX     (1u << 20)
#define CTL_INDEX     0xffffffffu
#define CTL_COMMIT    1u
#define CTL_RUNNING   2u
#define CTL_MAX       64u         /* control frame bodies we take */
#define MAX_DEVICES   64u
#define RX_SIZE       (256u << 10)
#define TX_SIZE       (256u << 10)
#define QUEUE_MAX     (1ull << 30) /* bytes queued for one device before we call it abuse */
#define SIM_FILL_MAX  (64ull << 20) /* state a simulated source device starts with */
#define SIGNAL_GRACE_MS 1000      /* after ^C, how long a stalled transfer may still take */
#define STAGNANT_ROUNDS 3

/* ------------------------------------------------------------ helpers */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void put_be16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static uint32_t get_be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint16_t get_be16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* "12.3 MiB" */
static void human(char *buf, size_t len, double v)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	unsigned int u = 0;

	while (v >= 1024.0 && u < 4) {
		v /= 1024.0;
		u++;
	}
	snprintf(buf, len, u ? "%.1f %s" : "%.0f %s", v, unit[u]);
}

/*
 * CRC32C (Castagnoli), slicing by 8, for the state checksums of simulated
 * devices in the JSON summary (a test compares both sides).
 */
static uint32_t crc_tab[8][256];

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_tab[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_tab[t][i] = (crc_tab[t - 1][i] >> 8) ^ crc_tab[0][crc_tab[t - 1][i] & 0xff];
}

#if defined(__x86_64__)
/* The SSE4.2 crc32 instruction computes the same CRC32C, ten times faster (GiB states). */
__attribute__((target("sse4.2")))
static uint32_t crc32c_sse42(const unsigned char *p, size_t len)
{
	uint64_t c = 0xffffffffu;
	uint32_t crc;

	for (; len >= 8; p += 8, len -= 8) {
		uint64_t w;

		memcpy(&w, p, sizeof(w));
		c = __builtin_ia32_crc32di(c, w);
	}
	crc = (uint32_t)c;
	while (len--)
		crc = __builtin_ia32_crc32qi(crc, *p++);
	return crc ^ 0xffffffffu;
}
#endif

static uint32_t crc32c(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t crc = 0xffffffffu;

#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return crc32c_sse42(p, len);
#endif
	if (!crc_tab[0][1])
		crc_init();
	for (; len >= 8; p += 8, len -= 8) {
		uint32_t a = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
				    (uint32_t)p[3] << 24);
		uint32_t b = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
			     (uint32_t)p[7] << 24;

		crc = crc_tab[7][a & 0xff] ^ crc_tab[6][(a >> 8) & 0xff] ^
		      crc_tab[5][(a >> 16) & 0xff] ^ crc_tab[4][a >> 24] ^ crc_tab[3][b & 0xff] ^
		      crc_tab[2][(b >> 8) & 0xff] ^ crc_tab[1][(b >> 16) & 0xff] ^ crc_tab[0][b >> 24];
	}
	while (len--)
		crc = (crc >> 8) ^ crc_tab[0][(crc ^ *p++) & 0xff];
	return crc ^ 0xffffffffu;
}

/* ------------------------------------------------------------ signals */

/*
 * SIGINT / SIGTERM: the first one ends the migration at the next step
 * boundary (the source cancels in-band, the destination sends FAILED);
 * a transfer stalled for SIGNAL_GRACE_MS after it, or a second signal,
 * gives up at once.
 */
static volatile sig_atomic_t sig_count, sig_num;
static struct timespec sig_ts;

static void on_signal(int sig)
{
	if (sig_count == 0) {
		sig_num = sig;
		clock_gettime(CLOCK_MONOTONIC, &sig_ts);
	}
	if (sig_count < 100)
		sig_count++;
}

static void signals_install(struct sigaction *old_int, struct sigaction *old_term)
{
	struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: poll() returns */

	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, old_int);
	sigaction(SIGTERM, &sa, old_term);
}

static const char *sig_name(void)
{
	return sig_num == SIGTERM ? "SIGTERM" : "SIGINT";
}

static uint64_t sig_at_ns(void)
{
	return (uint64_t)sig_ts.tv_sec * 1000000000u + (uint64_t)sig_ts.tv_nsec;
}

/* ------------------------------------------------------------ addresses */

struct wire_addr {
	bool is_unix;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char host[256];
	char port[8];
};

/* ADDR: "unix:PATH" or "HOST:PORT" ("[V6]:PORT"). 0, or -1 with why. */
static int addr_parse(const char *s, bool listening, struct wire_addr *a, char *why, size_t len)
{
	const char *colon, *host = s;
	size_t hlen;
	unsigned long port;
	char *end;

	memset(a, 0, sizeof(*a));
	if (strncmp(s, "unix:", 5) == 0) {
		if (!s[5]) {
			snprintf(why, len, "'%s': no socket path after unix:", s);
			return -1;
		}
		if (strlen(s + 5) >= sizeof(a->path)) {
			snprintf(why, len, "'%s': the socket path is longer than %zu bytes", s,
				 sizeof(a->path) - 1);
			return -1;
		}
		a->is_unix = true;
		snprintf(a->path, sizeof(a->path), "%s", s + 5);
		return 0;
	}
	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close || close[1] != ':') {
			snprintf(why, len, "'%s' is not [IPV6]:PORT", s);
			return -1;
		}
		host = s + 1;
		hlen = (size_t)(close - host);
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon) {
			snprintf(why, len, "'%s' is not HOST:PORT or unix:PATH", s);
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s))) {
			snprintf(why, len, "'%s': put an IPv6 address in brackets, [::1]:PORT", s);
			return -1;
		}
		hlen = (size_t)(colon - s);
	}
	if (hlen >= sizeof(a->host)) {
		snprintf(why, len, "'%s': the host name is too long", s);
		return -1;
	}
	if (!hlen && !listening) {
		snprintf(why, len, "'%s': no host to connect to", s);
		return -1;
	}
	memcpy(a->host, host, hlen);
	a->host[hlen] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end || errno || port > 65535 ||
	    (port == 0 && !listening)) {
		snprintf(why, len, "'%s': '%s' is not a port number (1-65535%s)", s, colon + 1,
			 listening ? ", or 0: any free port" : "");
		return -1;
	}
	snprintf(a->port, sizeof(a->port), "%lu", port);
	return 0;
}

/* A socket address as "1.2.3.4:5", "[::1]:5". */
static void sockaddr_text(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned int port = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		port = ntohs(in->sin_port);
		snprintf(buf, len, "%s:%u", host, port);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		port = ntohs(in6->sin6_port);
		snprintf(buf, len, "[%s]:%u", host, port);
	} else {
		snprintf(buf, len, "?");
	}
}

/* ------------------------------------------------------------ the channel */

/* Bytes queued for one device: [head, tail) of buf. */
struct queue {
	unsigned char *buf;
	size_t head, tail, cap;
};

static size_t q_len(const struct queue *q)
{
	return q->tail - q->head;
}

/* Room for n more bytes at tail. 0 or -ENOMEM / -EMSGSIZE. */
static int q_reserve(struct queue *q, size_t n)
{
	size_t used = q_len(q), cap;
	unsigned char *p;

	if (q->cap - q->tail >= n)
		return 0;
	if (used + n > QUEUE_MAX)
		return -EMSGSIZE;
	if (q->head && q->cap - used >= n) {
		memmove(q->buf, q->buf + q->head, used);
		q->head = 0;
		q->tail = used;
		return 0;
	}
	for (cap = q->cap ? q->cap : 64 << 10; cap < used + n; cap *= 2)
		;
	p = malloc(cap);
	if (!p)
		return -ENOMEM;
	if (used)
		memcpy(p, q->buf + q->head, used);
	free(q->buf);
	q->buf = p;
	q->cap = cap;
	q->head = 0;
	q->tail = used;
	return 0;
}

/*
 * One connection, both directions, with the frame layer: frames to send
 * are gathered in tx; what arrives is read into rx and sorted into one
 * queue per device (control frames are taken at once).
 */
struct chan {
	int fd;
	int timeout_ms;
	uint32_t ndev;
	char peer[128];    /* "unix:/tmp/x", "127.0.0.1:4444": for messages and stream names */
	int err;           /* the first failure (-errno), either way */
	char why[256];     /* what it was, in words */
	int recv_err;      /* sticky: receiving failed (sending may still work) */
	int send_err;      /* sticky: sending failed */
	bool eof;          /* the peer closed its side */
	bool framing;      /* HELLO is done: rx holds frames */
	/* receive */
	unsigned char *rx;
	size_t rx_len;
	bool in_frame;
	uint32_t cur, left;
	unsigned char ctl[CTL_MAX];
	uint32_t ctl_len;
	uint32_t ctl_seen; /* bit per control type received */
	struct queue *q;
	/* send */
	unsigned char *tx;
	size_t tx_len;
	uint64_t sent, received;
};

/* Receiving (or sending, with `send`) failed with err: remember the first failure and why. */
__attribute__((format(printf, 4, 5)))
static int chan_fail(struct chan *ch, bool send, int err, const char *fmt, ...)
{
	va_list ap;

	if (send && !ch->send_err)
		ch->send_err = err;
	if (!send && !ch->recv_err)
		ch->recv_err = err;
	if (ch->err)
		return err;
	ch->err = err;
	va_start(ap, fmt);
	vsnprintf(ch->why, sizeof(ch->why), fmt, ap);
	va_end(ap);
	return err;
}

/*
 * Wait until fd is ready for `events` (POLLIN / POLLOUT). 1 ready, 0 after
 * timeout_ms (-1: the channel's timeout), -ECANCELED on a signal: at once
 * unless `grace`, in which case a first signal still allows
 * SIGNAL_GRACE_MS of waiting (a round in progress finishes), a second
 * one none.
 */
static int chan_wait(struct chan *ch, short events, int timeout_ms, bool grace)
{
	uint64_t deadline = now_ns() + (uint64_t)(timeout_ms < 0 ? ch->timeout_ms : timeout_ms) *
						  1000000u;

	for (;;) {
		struct pollfd pfd = { .fd = ch->fd, .events = events };
		uint64_t now = now_ns(), end = deadline;
		int n;

		if (sig_count && (!grace || sig_count > 1))
			return -ECANCELED;
		if (sig_count) {
			uint64_t limit = sig_at_ns() + (uint64_t)SIGNAL_GRACE_MS * 1000000u;

			if (limit < end)
				end = limit;
			if (now >= limit)
				return -ECANCELED;
		}
		if (now >= end)
			return 0;
		n = poll(&pfd, 1, (int)((end - now + 999999) / 1000000));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n > 0)
			return 1; /* ready, or POLLERR / POLLHUP: the next transfer says what */
	}
}

static int chan_init(struct chan *ch, int fd, uint32_t ndev, int timeout_ms, const char *peer)
{
	memset(ch, 0, sizeof(*ch));
	ch->fd = fd;
	ch->ndev = ndev;
	ch->timeout_ms = timeout_ms;
	snprintf(ch->peer, sizeof(ch->peer), "%s", peer);
	ch->rx = malloc(RX_SIZE);
	ch->tx = malloc(TX_SIZE);
	ch->q = calloc(ndev ? ndev : 1, sizeof(*ch->q));
	if (!ch->rx || !ch->tx || !ch->q)
		return -ENOMEM;
	return 0;
}

static void chan_fini(struct chan *ch)
{
	if (ch->q)
		for (uint32_t i = 0; i < ch->ndev; i++)
			free(ch->q[i].buf);
	free(ch->q);
	free(ch->rx);
	free(ch->tx);
	if (ch->fd >= 0)
		close(ch->fd);
	ch->fd = -1;
	ch->q = NULL;
	ch->rx = ch->tx = NULL;
}

/* Send all of iov (the peer's reading pace, the timeout, signals). 0 or -errno (sticky). */
static int chan_sendv(struct chan *ch, struct iovec *iov, int iovcnt, bool grace)
{
	if (ch->send_err)
		return ch->send_err;
	while (iovcnt) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)iovcnt };
		ssize_t n = sendmsg(ch->fd, &mh, MSG_NOSIGNAL);

		if (n < 0) {
			int w;

			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				return chan_fail(ch, true, -errno, "%s", strerror(errno));
			w = chan_wait(ch, POLLOUT, -1, grace);
			if (w == 0)
				return chan_fail(ch, true, -ETIMEDOUT, "the peer stopped reading for "
						 "%d s", ch->timeout_ms / 1000);
			if (w == -ECANCELED)
				return chan_fail(ch, true, w, "interrupted (%s)", sig_name());
			if (w < 0)
				return chan_fail(ch, true, w, "poll: %s", strerror(-w));
			continue;
		}
		ch->sent += (uint64_t)n;
		while (iovcnt && (size_t)n >= iov->iov_len) {
			n -= (ssize_t)iov->iov_len;
			iov++;
			iovcnt--;
		}
		if (iovcnt) {
			iov->iov_base = (char *)iov->iov_base + n;
			iov->iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int chan_flush(struct chan *ch, bool grace)
{
	struct iovec iov = { .iov_base = ch->tx, .iov_len = ch->tx_len };
	int ret;

	if (!ch->tx_len)
		return ch->send_err;
	ret = chan_sendv(ch, &iov, 1, grace);
	ch->tx_len = 0;
	return ret;
}

/* Queue one frame for sending (small ones are gathered, big ones go out at once). */
static int chan_frame(struct chan *ch, uint32_t index, const void *buf, size_t len, bool grace)
{
	unsigned char hdr[FRAME_HDR];
	int ret;

	if (ch->send_err)
		return ch->send_err;
	put_be32(hdr, index);
	put_be32(hdr + 4, (uint32_t)len);
	if (ch->tx_len + FRAME_HDR + len > TX_SIZE) {
		ret = chan_flush(ch, grace);
		if (ret)
			return ret;
	}
	if (len >= TX_SIZE / 2) {
		struct iovec iov[2] = { { hdr, FRAME_HDR }, { (void *)buf, len } };

		/* Big frames go straight out: after what is queued, or the order breaks. */
		ret = chan_flush(ch, grace);
		if (ret)
			return ret;
		return chan_sendv(ch, iov, 2, grace);
	}
	memcpy(ch->tx + ch->tx_len, hdr, FRAME_HDR);
	memcpy(ch->tx + ch->tx_len + FRAME_HDR, buf, len);
	ch->tx_len += FRAME_HDR + len;
	return 0;
}

static int chan_ctl_send(struct chan *ch, uint32_t type)
{
	unsigned char body[4];
	int ret;

	put_be32(body, type);
	ret = chan_frame(ch, CTL_INDEX, body, sizeof(body), false);
	return ret ? ret : chan_flush(ch, false);
}

/* Sort the frames in rx into the device queues. 0 or -errno (a bad frame). */
static int chan_parse(struct chan *ch)
{
	size_t off = 0;
	int ret = 0;

	while (off < ch->rx_len) {
		size_t n;

		if (!ch->in_frame) {
			uint32_t idx, len;

			if (ch->rx_len - off < FRAME_HDR)
				break;
			idx = get_be32(ch->rx + off);
			len = get_be32(ch->rx + off + 4);
			off += FRAME_HDR;
			if (idx != CTL_INDEX && idx >= ch->ndev) {
				ret = chan_fail(ch, false, -EBADMSG, "a frame for device %u, of %u (a corrupt "
						"frame header)", idx, ch->ndev);
				break;
			}
			if (len > (idx == CTL_INDEX ? CTL_MAX : FRAME_MAX)) {
				ret = chan_fail(ch, false, -EBADMSG, "a %s frame of %u bytes, over the %u-byte "
						"limit (a corrupt frame header)",
						idx == CTL_INDEX ? "control" : "data", len,
						idx == CTL_INDEX ? CTL_MAX : FRAME_MAX);
				break;
			}
			ch->cur = idx;
			ch->left = len;
			ch->ctl_len = 0;
			ch->in_frame = len > 0;
			continue;
		}
		n = ch->rx_len - off < ch->left ? ch->rx_len - off : ch->left;
		if (ch->cur == CTL_INDEX) {
			memcpy(ch->ctl + ch->ctl_len, ch->rx + off, n);
			ch->ctl_len += (uint32_t)n;
		} else {
			struct queue *q = &ch->q[ch->cur];

			ret = q_reserve(q, n);
			if (ret) {
				chan_fail(ch, false, ret, "device %u: more than %llu bytes queued", ch->cur,
					  (unsigned long long)QUEUE_MAX);
				break;
			}
			memcpy(q->buf + q->tail, ch->rx + off, n);
			q->tail += n;
		}
		off += n;
		ch->left -= (uint32_t)n;
		if (!ch->left) {
			ch->in_frame = false;
			if (ch->cur == CTL_INDEX && ch->ctl_len >= 4) {
				uint32_t type = get_be32(ch->ctl);

				if (type < 32)
					ch->ctl_seen |= 1u << type;
			}
		}
	}
	memmove(ch->rx, ch->rx + off, ch->rx_len - off);
	ch->rx_len -= off;
	return ret;
}

/*
 * Read what the peer sent, waiting up to timeout_ms (0: not at all, -1:
 * the channel's timeout) for the first byte; frames are sorted into the
 * queues. 1 when something arrived (or the peer closed), 0 when nothing
 * did in time, -errno (sticky) on failure.
 */
static int chan_pump(struct chan *ch, int timeout_ms, bool grace)
{
	unsigned char *dst;
	size_t room;
	ssize_t n;

	if (ch->recv_err)
		return ch->recv_err;
	if (ch->eof)
		return 1;
	for (;;) {
		/* A big frame body with nothing else pending goes straight into its queue. */
		if (ch->framing && ch->in_frame && ch->cur != CTL_INDEX && !ch->rx_len) {
			struct queue *q = &ch->q[ch->cur];
			int ret = q_reserve(q, ch->left);

			if (ret)
				return chan_fail(ch, false, ret, "device %u: more than %llu bytes queued",
						 ch->cur, (unsigned long long)QUEUE_MAX);
			dst = q->buf + q->tail;
			room = ch->left;
		} else {
			dst = ch->rx + ch->rx_len;
			room = RX_SIZE - ch->rx_len;
		}
		n = read(ch->fd, dst, room);
		if (n > 0)
			break;
		if (n == 0) {
			ch->eof = true;
			if (ch->in_frame || ch->rx_len)
				return chan_fail(ch, false, -EPIPE, "the connection closed in the middle of a "
						 "frame");
			return 1;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return chan_fail(ch, false, -errno, "%s", strerror(errno));
		if (timeout_ms == 0)
			return 0;
		n = chan_wait(ch, POLLIN, timeout_ms, grace);
		if (n == 0)
			return 0;
		if (n == -ECANCELED)
			return chan_fail(ch, false, -ECANCELED, "interrupted (%s)", sig_name());
		if (n < 0)
			return chan_fail(ch, false, (int)n, "poll: %s", strerror((int)-n));
	}
	ch->received += (uint64_t)n;
	if (dst != ch->rx + ch->rx_len) {
		ch->q[ch->cur].tail += (size_t)n;
		ch->left -= (uint32_t)n;
		ch->in_frame = ch->left > 0;
		return 1;
	}
	ch->rx_len += (size_t)n;
	if (ch->framing)
		return chan_parse(ch) ? ch->recv_err : 1;
	return 1;
}

/* Before framing: exactly len raw bytes (HELLO), within the timeout. 0 or -errno. */
static int chan_take(struct chan *ch, void *buf, size_t len)
{
	while (ch->rx_len < len) {
		int ret;

		if (ch->eof)
			return chan_fail(ch, false, -EPIPE, "the connection closed during the HELLO exchange");
		ret = chan_pump(ch, -1, false);
		if (ret < 0)
			return ret;
		if (ret == 0)
			return chan_fail(ch, false, -ETIMEDOUT, "no HELLO within %d s",
					 ch->timeout_ms / 1000);
	}
	memcpy(buf, ch->rx, len);
	memmove(ch->rx, ch->rx + len, ch->rx_len - len);
	ch->rx_len -= len;
	return 0;
}

/* The end of a connection: our side done, then what the peer still sends until it closes. */
static void chan_close_gently(struct chan *ch)
{
	if (ch->fd < 0)
		return;
	chan_flush(ch, true);
	shutdown(ch->fd, SHUT_WR);
	ch->framing = false; /* whatever comes now is read and dropped */
	while (!ch->eof && !ch->recv_err) {
		ch->rx_len = 0;
		ch->in_frame = false;
		if (chan_pump(ch, -1, true) <= 0)
			break;
	}
}

/* ------------------------------------------------- per-device streams */

/* A device's end of the channel: its streams' callbacks get this. */
struct devio {
	struct chan *ch;
	uint32_t index;
	bool grace; /* transfers may run on SIGNAL_GRACE_MS after a first signal */
};

static ssize_t devio_write(void *user, const void *buf, size_t len)
{
	struct devio *io = user;
	size_t n = len < FRAME_MAX ? len : FRAME_MAX;
	int ret = chan_frame(io->ch, io->index, buf, n, io->grace);

	return ret ? ret : (ssize_t)n;
}

static int devio_flush(void *user)
{
	struct devio *io = user;

	return chan_flush(io->ch, io->grace);
}

static ssize_t devio_read(void *user, void *buf, size_t len)
{
	struct devio *io = user;
	struct chan *ch = io->ch;
	struct queue *q = &ch->q[io->index];
	size_t n;

	while (!q_len(q)) {
		int ret;

		if (ch->eof)
			return 0; /* the stream ends here; the library judges where */
		ret = chan_pump(ch, -1, io->grace);
		if (ret < 0)
			return ret;
		if (ret == 0)
			return chan_fail(ch, false, -ETIMEDOUT, "the peer went silent for %d s",
					 ch->timeout_ms / 1000);
	}
	n = q_len(q) < len ? q_len(q) : len;
	memcpy(buf, q->buf + q->head, n);
	q->head += n;
	if (q->head == q->tail)
		q->head = q->tail = 0;
	return (ssize_t)n;
}

static const struct vfiomig_stream_ops devio_write_ops = {
	.sz = sizeof(devio_write_ops), .write = devio_write, .flush = devio_flush,
};
static const struct vfiomig_stream_ops devio_read_ops = {
	.sz = sizeof(devio_read_ops), .read = devio_read,
};

/* ------------------------------------------------------------ the run */

struct mdev {
	const char *spec;
	struct vfiomig_sim_device *sd; /* simulated devices */
	struct vfiomig_device *dev;
	struct vfiomig_mig *m;
	struct devio io;
	struct vfiomig_stream *fwd; /* forward stream: written (source) / read (destination) */
	struct vfiomig_stream *rp;  /* return path: read (source) / written (destination) */
	bool acked, loaded;         /* source: SWITCHOVER_ACK / LOADED arrived */
	bool done;                  /* destination: loaded and verified */
};

struct mig_run {
	const struct command *cmd;
	bool source, json, progress;
	const char *addr_arg;
	struct wire_addr addr;
	uint64_t downtime_ms, max_rounds, round_bytes, timeout_s;
	uint32_t flags;             /* VFIOMIG_MIG_F_* from the command line */
	char **specs;
	uint32_t n;

	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct vfiomig_mig_set *set;
	struct mdev *d;
	struct chan ch;
	bool have_chan;
	char unlink_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

	/* outcome */
	int rc;
	char error[768];
	const char *failed_side;    /* "source", "destination" or NULL */
	bool started;               /* a save / load was set up */
	bool dest_failed;           /* source: a FAILED message arrived */
	char dest_reason[300];
	bool stopped_for_good;      /* source: COMMIT sent, the devices must stay stopped */
	bool converged;
	const char *stop_reason;
	uint64_t rounds;
	uint64_t precopy_bytes_on_wire, precopy_ns;
	double bandwidth;           /* bytes/s measured over the pre-copy rounds */
	double est_ms;              /* the last downtime estimate */
	double stop_to_loaded_ms;   /* VM stop to every device LOADED */
	double stop_to_running_ms;  /* VM stop to the destination's RUNNING: the downtime felt */
	double total_ms;
	uint64_t t_start, t_progress;
};

__attribute__((format(printf, 3, 4)))
static void set_error(struct mig_run *r, const char *side, const char *fmt, ...)
{
	va_list ap;

	if (r->error[0])
		return; /* the first failure is the cause */
	r->failed_side = side;
	va_start(ap, fmt);
	vsnprintf(r->error, sizeof(r->error), fmt, ap);
	va_end(ap);
}

/* The library's words for a failure with err: its first ERR line since the last report. */
static const char *lib_words(int err, char *buf, size_t len)
{
	snprintf(buf, len, "%s", lib_err.count ? lib_err.first : vfiomig_strerror(err));
	lib_err.count = 0;
	return buf;
}

/* ------------------------------------------------------------ progress */

static void progress_end(struct mig_run *r)
{
	if (r->progress && r->t_progress) {
		fputs("\r\033[K", stderr);
		r->t_progress = 0;
	}
}

__attribute__((format(printf, 3, 4)))
static void progress(struct mig_run *r, bool force, const char *fmt, ...)
{
	uint64_t now = now_ns();
	va_list ap;

	if (!r->progress || (!force && r->t_progress && now - r->t_progress < 100000000u))
		return;
	r->t_progress = now;
	fprintf(stderr, "\r\033[K%s %s: ", prog, r->cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

/* A line on stderr that is not an error (where we listen, who connected). */
__attribute__((format(printf, 2, 3)))
static void status(struct mig_run *r, const char *fmt, ...)
{
	va_list ap;

	progress_end(r);
	fprintf(stderr, "%s %s: ", prog, r->cmd->name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ------------------------------------------------------------ devices */

/* Open every DEVICE in one context (a set needs one); simulated ones in one simulator. */
static int devices_open(struct mig_run *r)
{
	bool sim = strncmp(r->specs[0], "sim:", 4) == 0;
	int ret;

	for (uint32_t i = 1; i < r->n; i++)
		if ((strncmp(r->specs[i], "sim:", 4) == 0) != sim)
			return usage_error(r->cmd, "simulated (sim:) and real devices cannot be "
					   "mixed in one migration");
	r->d = calloc(r->n, sizeof(*r->d));
	if (!r->d)
		return report(r->cmd, "devices", "%s", strerror(ENOMEM));
	ret = sim ? vfiomig_sim_new(NULL, &r->sim) : 0;
	if (!ret)
		ret = tool_ctx_new(r->sim, &r->ctx);
	if (ret)
		return fail(r->cmd, sim ? "simulator" : "context", ret);
	for (uint32_t i = 0; i < r->n; i++) {
		struct mdev *d = &r->d[i];
		const char *name = r->specs[i];

		d->spec = r->specs[i];
		if (sim) {
			ret = tool_sim_add(r->cmd, r->sim, r->ctx, d->spec, &d->sd);
			if (ret)
				return ret;
			name = vfiomig_sim_device_name(d->sd);
		}
		ret = vfiomig_device_open(r->ctx, name, NULL, &d->dev);
		if (ret)
			return fail(r->cmd, d->spec, ret);
	}
	return 0;
}

/* Migration objects for every device, in one set; 0 or 1 (said). */
static int migs_new(struct mig_run *r)
{
	uint64_t chunk = r->round_bytes < (1u << 20) ? r->round_bytes : (1u << 20);
	VFIOMIG_OPTS(mig_opts, mo, .flags = r->flags, .chunk_size = r->source ? chunk : 0);
	char reason[256];
	int ret;

	ret = vfiomig_mig_set_new(r->ctx, &r->set);
	if (ret)
		return fail(r->cmd, "device set", ret);
	for (uint32_t i = 0; i < r->n; i++) {
		struct mdev *d = &r->d[i];
		struct target t = { .sim = r->sim, .ctx = r->ctx, .dev = d->dev };

		ret = target_check_mig(r->cmd, d->spec, &t, &mo);
		if (ret)
			return ret;
		ret = vfiomig_mig_new(d->dev, r->source ? VFIOMIG_ROLE_SAVE : VFIOMIG_ROLE_LOAD, &mo,
				      &d->m);
		if (!ret)
			ret = vfiomig_mig_set_add(r->set, d->m);
		if (ret)
			return fail(r->cmd, d->spec, ret);
	}
	ret = vfiomig_mig_set_check(r->set, reason, sizeof(reason));
	if (ret == -EOPNOTSUPP)
		return report(r->cmd, "device set", "these devices cannot migrate together: %s",
			      reason);
	if (ret)
		return fail(r->cmd, "device set", ret);
	return 0;
}

/* Each device's two streams over the channel, named for the library's log lines. */
static int streams_new(struct mig_run *r)
{
	for (uint32_t i = 0; i < r->n; i++) {
		struct mdev *d = &r->d[i];
		char name[128];
		int ret;

		d->io = (struct devio){ .ch = &r->ch, .index = i, .grace = true };
		ret = vfiomig_stream_new(r->ctx, r->source ? &devio_write_ops : &devio_read_ops,
					 &d->io, &d->fwd);
		if (!ret)
			ret = vfiomig_stream_new(r->ctx, r->source ? &devio_read_ops :
								     &devio_write_ops,
						 &d->io, &d->rp);
		if (ret)
			return fail(r->cmd, "streams", ret);
		snprintf(name, sizeof(name), "migration channel %s %.80s, device %u",
			 r->source ? "to" : "from", r->ch.peer, i);
		vfiomig_stream_set_name(d->fwd, name);
		snprintf(name, sizeof(name), "return path %s %.80s, device %u",
			 r->source ? "from" : "to", r->ch.peer, i);
		vfiomig_stream_set_name(d->rp, name);
	}
	return 0;
}

/* ------------------------------------------------------------ sockets */

static int sock_setup(int fd)
{
	int one = 1;
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	/* Return-path messages and COMMIT are small and time the downtime: no Nagle. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

/*
 * Connect, retrying while the destination is not listening yet (refused,
 * or no socket file) until the timeout. The fd, or -1 after set_error.
 */
static int net_connect(struct mig_run *r)
{
	uint64_t deadline = now_ns() + r->timeout_s * 1000000000u;
	char last[200] = "";

	for (;;) {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL, *ai;
		struct sockaddr_un un = { .sun_family = AF_UNIX };
		struct addrinfo unix_ai = { .ai_family = AF_UNIX, .ai_socktype = SOCK_STREAM,
					    .ai_addr = (struct sockaddr *)&un,
					    .ai_addrlen = sizeof(un) };
		bool retry = false;
		int gai;

		if (r->addr.is_unix) {
			memcpy(un.sun_path, r->addr.path, sizeof(un.sun_path));
			res = &unix_ai;
		} else {
			gai = getaddrinfo(r->addr.host, r->addr.port, &hints, &res);
			if (gai) {
				set_error(r, NULL, "%s: %s", r->addr_arg, gai_strerror(gai));
				return -1;
			}
		}
		for (ai = res; ai; ai = ai->ai_next) {
			int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			int err = 0;

			if (fd < 0) {
				snprintf(last, sizeof(last), "%s", strerror(errno));
				continue;
			}
			if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
				err = errno;
				if (err == EINPROGRESS) {
					struct pollfd pfd = { .fd = fd, .events = POLLOUT };
					socklen_t sl = sizeof(err);
					uint64_t now = now_ns();
					int ms = now < deadline ? (int)((deadline - now) / 1000000u) : 0;

					err = 0;
					if (poll(&pfd, 1, ms) <= 0)
						err = sig_count ? EINTR : ETIMEDOUT;
					else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
						err = errno;
				}
			}
			if (!err && sock_setup(fd) < 0)
				err = errno;
			if (!err) {
				if (!r->addr.is_unix)
					freeaddrinfo(res);
				return fd;
			}
			close(fd);
			snprintf(last, sizeof(last), "%s", strerror(err));
			if (err == ECONNREFUSED || err == ENOENT || err == EAGAIN)
				retry = true;
		}
		if (!r->addr.is_unix)
			freeaddrinfo(res);
		if (sig_count) {
			set_error(r, "source", "interrupted (%s) while connecting to %s", sig_name(),
				  r->addr_arg);
			return -1;
		}
		if (!retry || now_ns() >= deadline) {
			set_error(r, NULL, "cannot connect to %s: %s%s", r->addr_arg, last,
				  retry ? " (nothing listened there within the timeout)" : "");
			return -1;
		}
		progress(r, true, "waiting for %s to listen (%s)", r->addr_arg, last);
		poll(NULL, 0, 100); /* the destination may not listen yet: try again soon */
	}
}

/* A unix socket path left by a process that is gone: nothing answers there. */
static bool stale_socket(const char *path)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, ret;

	if (lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return false;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", path);
	ret = connect(fd, (struct sockaddr *)&un, sizeof(un));
	close(fd);
	return ret < 0 && errno == ECONNREFUSED;
}

/* Listen, and say where ("listening on ..."). The fd, or -1 after set_error. */
static int net_listen(struct mig_run *r)
{
	char where[160];
	int fd = -1;

	if (r->addr.is_unix) {
		struct sockaddr_un un = { .sun_family = AF_UNIX };

		memcpy(un.sun_path, r->addr.path, sizeof(un.sun_path));
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			goto fail;
		if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0) {
			int err = errno;

			/* A socket file nobody listens on is a crashed run's: take its place. */
			if (err != EADDRINUSE || !stale_socket(r->addr.path)) {
				errno = err;
				goto fail;
			}
			unlink(r->addr.path);
			if (bind(fd, (struct sockaddr *)&un, sizeof(un)) < 0)
				goto fail;
		}
		snprintf(r->unlink_path, sizeof(r->unlink_path), "%s", r->addr.path);
		if (listen(fd, 1) < 0)
			goto fail;
		snprintf(where, sizeof(where), "unix:%s", r->addr.path);
	} else {
		struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE },
				*res, *ai;
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int gai = getaddrinfo(r->addr.host[0] ? r->addr.host : NULL, r->addr.port, &hints,
				      &res);
		int err = 0;

		if (gai) {
			set_error(r, NULL, "%s: %s", r->addr_arg, gai_strerror(gai));
			return -1;
		}
		/* IPv6 first when the host is empty: a dual-stack socket takes both. */
		for (int pass = 0; pass < 2 && fd < 0; pass++) {
			for (ai = res; ai && fd < 0; ai = ai->ai_next) {
				int one = 1;

				if (!r->addr.host[0] && (pass == 0) != (ai->ai_family == AF_INET6))
					continue;
				if (r->addr.host[0] && pass)
					break;
				fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
					    0);
				if (fd < 0) {
					err = errno;
					continue;
				}
				setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
				if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1) < 0) {
					err = errno;
					close(fd);
					fd = -1;
				}
			}
		}
		freeaddrinfo(res);
		if (fd < 0) {
			errno = err ? err : EADDRNOTAVAIL;
			goto fail;
		}
		if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
			goto fail;
		sockaddr_text((struct sockaddr *)&ss, where, sizeof(where));
	}
	status(r, "listening on %s", where);
	return fd;
fail:
	set_error(r, NULL, "cannot listen on %s: %s", r->addr_arg, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Accept one source within the timeout; the listening socket goes. The fd, or -1. */
static int net_accept(struct mig_run *r, int lfd, char *peer, size_t len)
{
	struct pollfd pfd = { .fd = lfd, .events = POLLIN };
	uint64_t deadline = now_ns() + r->timeout_s * 1000000000u;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd;

	for (;;) {
		uint64_t now = now_ns();
		int n;

		if (sig_count) {
			set_error(r, "destination", "interrupted (%s) while waiting for a source",
				  sig_name());
			return -1;
		}
		if (now >= deadline) {
			set_error(r, NULL, "no source connected to %s within %llu s", r->addr_arg,
				  (unsigned long long)r->timeout_s);
			return -1;
		}
		n = poll(&pfd, 1, (int)((deadline - now + 999999) / 1000000u));
		if (n < 0 && errno != EINTR) {
			set_error(r, NULL, "poll: %s", strerror(errno));
			return -1;
		}
		if (n <= 0)
			continue;
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0)
			break;
		if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
			set_error(r, NULL, "accept on %s: %s", r->addr_arg, strerror(errno));
			return -1;
		}
	}
	if (r->addr.is_unix)
		snprintf(peer, len, "unix:%s", r->addr.path);
	else
		sockaddr_text((struct sockaddr *)&ss, peer, len);
	if (sock_setup(fd) < 0) {
		set_error(r, NULL, "%s: %s", peer, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* ------------------------------------------------------------ HELLO */

struct hello {
	uint32_t magic, devices, status;
	uint16_t version, role;
	char reason[REASON_MAX + 1];
};

static int hello_send(struct chan *ch, uint16_t role, uint32_t devices, uint32_t st,
		      const char *reason)
{
	unsigned char b[HELLO_FIXED + REASON_MAX];
	size_t rlen = reason ? strnlen(reason, REASON_MAX) : 0;
	struct iovec iov = { .iov_base = b, .iov_len = HELLO_FIXED + rlen };

	memset(b, 0, HELLO_FIXED);
	put_be32(b, WIRE_MAGIC);
	put_be16(b + 4, WIRE_VERSION);
	put_be16(b + 6, role);
	put_be32(b + 8, devices);
	put_be32(b + 12, st);
	put_be16(b + 16, (uint16_t)rlen);
	if (rlen)
		memcpy(b + HELLO_FIXED, reason, rlen);
	return chan_sendv(ch, &iov, 1, false);
}

static int hello_recv(struct chan *ch, struct hello *h)
{
	unsigned char b[HELLO_FIXED];
	size_t rlen;
	int ret;

	memset(h, 0, sizeof(*h));
	ret = chan_take(ch, b, sizeof(b));
	if (ret)
		return ret;
	h->magic = get_be32(b);
	h->version = get_be16(b + 4);
	h->role = get_be16(b + 6);
	h->devices = get_be32(b + 8);
	h->status = get_be32(b + 12);
	rlen = get_be16(b + 16);
	if (h->magic != WIRE_MAGIC)
		return chan_fail(ch, false, -EPROTO, "the peer is not vfiomig migrate (its first bytes "
				 "are 0x%08x)", h->magic);
	if (rlen > REASON_MAX)
		return chan_fail(ch, false, -EPROTO, "a HELLO with a %zu-byte reason", rlen);
	ret = chan_take(ch, h->reason, rlen);
	if (ret)
		return ret;
	for (size_t i = 0; i < rlen; i++)
		if (h->reason[i] < 0x20 || h->reason[i] > 0x7e)
			h->reason[i] = '?';
	h->reason[rlen] = '\0';
	return 0;
}

/* ------------------------------------------------------------ source */

/* What the channel's failure means, from the source. */
static void source_channel_error(struct mig_run *r)
{
	struct chan *ch = &r->ch;

	if (ch->err == -ECANCELED)
		set_error(r, "source", "interrupted (%s): migration cancelled", sig_name());
	else if (ch->err == -ETIMEDOUT)
		set_error(r, "destination", "the destination went silent: %s", ch->why);
	else if (ch->err == -EBADMSG || ch->err == -EPROTO || ch->err == -EMSGSIZE)
		set_error(r, "destination", "the destination sent a corrupt frame: %s", ch->why);
	else if (ch->err)
		set_error(r, "destination", "the destination disappeared (%s)", ch->why);
	else
		set_error(r, "destination", "the destination disappeared (it closed the connection)");
}

/* A library call failed with err: why, in the right words. */
static void source_step_failed(struct mig_run *r, int err)
{
	char words[512];

	lib_words(err, words, sizeof(words));
	if (r->dest_failed)
		set_error(r, "destination", "the destination failed: %s", r->dest_reason);
	else if (r->ch.err || r->ch.eof)
		source_channel_error(r);
	else
		set_error(r, "source", "%s", words);
}

/*
 * Take the return-path messages that have arrived for every device (a
 * message cut across frames waits for its rest). 0, or -1 after
 * set_error (the destination failed, or the return path is broken).
 */
static int source_returns(struct mig_run *r)
{
	for (uint32_t i = 0; i < r->n; i++) {
		struct mdev *d = &r->d[i];

		while (q_len(&r->ch.q[i])) {
			VFIOMIG_OPTS(return_msg, msg);
			int ret = vfiomig_mig_return_recv(d->m, d->rp, &msg);

			if (ret) {
				char words[512];

				if (r->ch.err) {
					source_channel_error(r);
				} else {
					lib_words(ret, words, sizeof(words));
					set_error(r, "destination", "the return path from the "
						  "destination is broken: %s", words);
				}
				return -1;
			}
			if (msg.type == VFIOMIG_RETURN_SWITCHOVER_ACK) {
				d->acked = true;
			} else if (msg.type == VFIOMIG_RETURN_LOADED) {
				d->loaded = true;
			} else if (msg.type == VFIOMIG_RETURN_FAILED && !r->dest_failed) {
				r->dest_failed = true;
				snprintf(r->dest_reason, sizeof(r->dest_reason), "%s",
					 msg.reason[0] ? msg.reason : vfiomig_strerror(msg.error));
			}
		}
	}
	if (r->dest_failed) {
		set_error(r, "destination", "the destination failed: %s", r->dest_reason);
		return -1;
	}
	return 0;
}

/* Read the return path without waiting: whatever the socket holds now. 0 or -1 (said). */
static int source_poll(struct mig_run *r)
{
	int ret;

	do
		ret = chan_pump(&r->ch, 0, false);
	while (ret == 1 && !r->ch.eof);
	if (source_returns(r))
		return -1;
	if (ret < 0 || r->ch.eof) {
		source_channel_error(r);
		return -1;
	}
	return 0;
}

/*
 * Wait (the timeout) until every device has its LOADED (`loaded`), or
 * its switchover-ack if it sent all its initial data but is not ready
 * yet. 0 or -1 (said).
 */
static int source_wait(struct mig_run *r, bool loaded, const char *what)
{
	for (;;) {
		bool all = true;
		int ret;

		if (source_returns(r))
			return -1;
		for (uint32_t i = 0; i < r->n; i++) {
			const struct mdev *d = &r->d[i];

			if (loaded ? !d->loaded :
				     vfiomig_mig_switchover_ready(d->m) == 0 &&
					     vfiomig_mig_initial_data_sent(d->m) == 1)
				all = false;
		}
		if (all)
			return 0;
		if (sig_count) {
			set_error(r, "source", "interrupted (%s) while waiting for %s", sig_name(),
				  what);
			return -1;
		}
		if (r->ch.eof || r->ch.recv_err) {
			source_channel_error(r);
			return -1;
		}
		ret = chan_pump(&r->ch, -1, false);
		if (ret == 0) {
			set_error(r, "destination", "the destination went silent for %llu s while "
				  "the source waited for %s", (unsigned long long)r->timeout_s, what);
			return -1;
		}
		/* A failure shows at the top, once what arrived before it was taken. */
	}
}

/* The guest has been using a simulated device: fill (up to 64 MiB of) its state. */
static void source_fill_sim(struct mig_run *r)
{
	for (uint32_t i = 0; i < r->n; i++) {
		size_t len = 0;

		if (!r->d[i].sd)
			continue;
		vfiomig_sim_device_state(r->d[i].sd, &len);
		if (len > SIM_FILL_MAX)
			len = SIM_FILL_MAX;
		vfiomig_sim_device_run(r->d[i].sd, len / 4096);
	}
}

static uint64_t source_bytes(const struct mig_run *r)
{
	uint64_t b = 0;

	for (uint32_t i = 0; i < r->n; i++)
		b += vfiomig_stream_bytes_written(r->d[i].fwd);
	return b;
}

/*
 * Pre-copy rounds until the VM may stop: every device switchover-ready
 * (initial data sent and acknowledged) and the estimated stop-and-copy
 * time within --downtime-ms (converged); or the dirty data stopped
 * shrinking, or --max-rounds (not converged). 0 or -1 (said).
 */
static int source_precopy(struct mig_run *r)
{
	uint64_t best = UINT64_MAX;
	unsigned int stagnant = 0;
	char b1[32], b2[32], b3[32];

	for (;;) {
		uint64_t est = 0, dirty = 0, t0, w0;
		bool ready = true, all_init = true, any_precopy = false;

		if (source_poll(r))
			return -1;
		if (sig_count) {
			set_error(r, "source", "interrupted (%s): migration cancelled", sig_name());
			return -1;
		}
		for (uint32_t i = 0; i < r->n; i++) {
			VFIOMIG_OPTS(mig_pending, p);
			VFIOMIG_OPTS(mig_stats, st);
			struct mdev *d = &r->d[i];
			int rd, ret = vfiomig_mig_save_pending(d->m, &p);

			if (ret) {
				source_step_failed(r, ret);
				return -1;
			}
			/*
			 * MIG_DATA_SIZE is what stop-and-copy would send now, dirty data
			 * included; without it (before Linux 6.2) what pre-copy still owes.
			 */
			est += p.stopcopy ? p.stopcopy : p.precopy_initial + p.precopy_dirty;
			dirty += p.precopy_dirty;
			rd = vfiomig_mig_switchover_ready(d->m);
			if (rd < 0) {
				source_step_failed(r, rd);
				return -1;
			}
			ready &= rd == 1;
			all_init &= vfiomig_mig_initial_data_sent(d->m) == 1;
			vfiomig_mig_get_stats(d->m, &st);
			any_precopy |= st.device_state == VFIOMIG_DEVICE_STATE_PRE_COPY ||
				       st.device_state == VFIOMIG_DEVICE_STATE_PRE_COPY_P2P;
		}
		r->est_ms = r->bandwidth > 0 ? (double)est * 1e3 / r->bandwidth : -1;
		if (!any_precopy) {
			r->converged = true;
			r->stop_reason = "no device has pre-copy";
			return 0;
		}
		if (ready && r->est_ms >= 0 && r->est_ms <= (double)r->downtime_ms) {
			r->converged = true;
			r->stop_reason = "the estimated downtime fits";
			return 0;
		}
		if (all_init && dirty) {
			if (dirty < best) {
				best = dirty;
				stagnant = 0;
			} else if (++stagnant >= STAGNANT_ROUNDS) {
				r->stop_reason = "the dirty data stopped shrinking";
				return 0;
			}
		}
		if (r->rounds >= r->max_rounds) {
			r->stop_reason = "--max-rounds was reached";
			return 0;
		}
		if (all_init && !ready && !dirty) {
			/* Nothing to send until the switchover-ack comes: wait for it, do not spin. */
			if (source_wait(r, false, "the switchover-ack"))
				return -1;
			continue;
		}
		t0 = now_ns();
		w0 = r->ch.sent;
		for (uint32_t i = 0; i < r->n; i++) {
			int ret = vfiomig_mig_save_iterate(r->d[i].m, r->d[i].fwd, r->round_bytes);

			if (ret < 0) {
				source_step_failed(r, ret);
				return -1;
			}
		}
		r->rounds++;
		r->precopy_bytes_on_wire += r->ch.sent - w0;
		r->precopy_ns += now_ns() - t0;
		if (r->precopy_ns)
			r->bandwidth = (double)r->precopy_bytes_on_wire * 1e9 / (double)r->precopy_ns;
		human(b1, sizeof(b1), (double)source_bytes(r));
		human(b2, sizeof(b2), r->bandwidth);
		human(b3, sizeof(b3), (double)dirty);
		progress(r, false, "pre-copy round %llu: %s sent, %s/s, %s dirty",
			 (unsigned long long)r->rounds, b1, b2, b3);
	}
}

/* Stop the VM, send the rest, wait for LOADED everywhere, commit. 0 or -1 (said). */
static int source_switchover(struct mig_run *r)
{
	uint64_t t_stop;
	int ret;

	/* A forced stop still waits for the ack of initial data that was sent. */
	if (!r->converged && source_wait(r, false, "the switchover-ack"))
		return -1;
	progress(r, true, "stop-and-copy");
	t_stop = now_ns();
	ret = vfiomig_mig_set_vm_state(r->set, VFIOMIG_VM_STOPPED);
	if (ret) {
		source_step_failed(r, ret);
		return -1;
	}
	for (uint32_t i = 0; i < r->n; i++) {
		ret = vfiomig_mig_save_complete(r->d[i].m, r->d[i].fwd);
		if (ret) {
			source_step_failed(r, ret);
			return -1;
		}
	}
	progress(r, true, "stop-and-copy: waiting for the destination to load");
	if (source_wait(r, true, "LOADED"))
		return -1;
	r->stop_to_loaded_ms = (double)(now_ns() - t_stop) / 1e6;
	if (sig_count) {
		set_error(r, "source", "interrupted (%s) before the switchover: migration "
			  "cancelled", sig_name());
		return -1;
	}
	/* From here the destination may run the VM: never resume it here too. */
	ret = chan_ctl_send(&r->ch, CTL_COMMIT);
	if (ret) {
		source_channel_error(r);
		return -1;
	}
	r->stopped_for_good = true;
	while (!(r->ch.ctl_seen & (1u << CTL_RUNNING))) {
		ret = chan_pump(&r->ch, -1, true);
		if (source_returns(r)) {
			/*
			 * A destination sends FAILED only once it has reset its devices
			 * instead of running them: the source may resume after all.
			 */
			if (r->dest_failed)
				r->stopped_for_good = false;
			return -1;
		}
		if (ret <= 0 || r->ch.eof) {
			set_error(r, "destination", "the destination did not confirm that it runs "
				  "the VM (%s)", ret == 0 ? "silent for the timeout" :
				  r->ch.err ? r->ch.why : "it closed the connection");
			return -1;
		}
	}
	r->stop_to_running_ms = (double)(now_ns() - t_stop) / 1e6;
	ret = vfiomig_mig_set_event(r->set, VFIOMIG_EVENT_COMPLETED);
	if (ret) {
		char words[512];

		set_error(r, "source", "%s", lib_words(ret, words, sizeof(words)));
		return -1;
	}
	return 0;
}

/*
 * The source gave up (or the destination did): cancel in-band, resume
 * the VM and its devices, and if the channel broke, read what the
 * destination said before it went.
 */
static void source_give_up(struct mig_run *r)
{
	bool channel = r->ch.err || r->ch.eof;
	char words[512], reason[256];
	int ret;

	progress_end(r);
	if (r->stopped_for_good) {
		snprintf(r->error + strlen(r->error), sizeof(r->error) - strlen(r->error),
			 "; the source devices stay stopped: the VM may be running on the "
			 "destination");
		lib_err.count = 0;
		return;
	}
	if (!r->started)
		return;
	if (sig_count)
		snprintf(reason, sizeof(reason), "interrupted by %s on the source", sig_name());
	else
		snprintf(reason, sizeof(reason), "%.255s", r->error);
	for (uint32_t i = 0; i < r->n; i++)
		vfiomig_mig_cancel(r->d[i].m, sig_count ? -EINTR : -ECANCELED, reason);
	ret = vfiomig_mig_set_vm_state(r->set, VFIOMIG_VM_RUNNING);
	if (ret)
		lib_words(ret, words, sizeof(words));
	/* The destination may have said why it went: its FAILED explains a broken channel. */
	if (channel && !r->dest_failed && r->have_chan) {
		for (;;) {
			for (uint32_t i = 0; i < r->n && !r->dest_failed; i++) {
				while (q_len(&r->ch.q[i]) && !r->dest_failed) {
					VFIOMIG_OPTS(return_msg, msg);

					if (vfiomig_mig_return_recv(r->d[i].m, r->d[i].rp, &msg)) {
						r->ch.q[i].head = r->ch.q[i].tail = 0;
						break;
					}
					if (msg.type == VFIOMIG_RETURN_FAILED) {
						r->dest_failed = true;
						snprintf(r->dest_reason, sizeof(r->dest_reason),
							 "%s", msg.reason);
					}
				}
			}
			if (r->dest_failed || r->ch.eof || r->ch.recv_err ||
			    chan_pump(&r->ch, -1, true) <= 0)
				break;
		}
		if (r->dest_failed) {
			r->error[0] = '\0';
			set_error(r, "destination", "the destination failed: %s", r->dest_reason);
		}
	}
	for (uint32_t i = 0; i < r->n; i++) {
		VFIOMIG_OPTS(mig_stats, st);

		vfiomig_mig_get_stats(r->d[i].m, &st);
		if (st.device_state != VFIOMIG_DEVICE_STATE_RUNNING) {
			size_t l = strlen(r->error);

			snprintf(r->error + l, sizeof(r->error) - l, "; device %s could not be "
				 "resumed (it is in %s)", vfiomig_device_name(r->d[i].dev),
				 vfiomig_device_state_name(st.device_state));
			lib_err.count = 0;
			return;
		}
	}
	snprintf(r->error + strlen(r->error), sizeof(r->error) - strlen(r->error),
		 "; source devices resumed");
	lib_err.count = 0;
}

static void run_source(struct mig_run *r)
{
	struct hello h;
	int fd, ret;

	source_fill_sim(r);
	fd = net_connect(r);
	if (fd < 0)
		return;
	if (chan_init(&r->ch, fd, r->n, (int)r->timeout_s * 1000, r->addr_arg)) {
		close(fd);
		set_error(r, NULL, "%s", strerror(ENOMEM));
		return;
	}
	r->have_chan = true;
	ret = hello_send(&r->ch, ROLE_SOURCE, r->n, 0, NULL);
	if (!ret)
		ret = hello_recv(&r->ch, &h);
	if (ret) {
		if (r->ch.err == -ECANCELED)
			set_error(r, "source", "interrupted (%s) before the migration began",
				  sig_name());
		else
			set_error(r, "destination", "%s: %s", r->addr_arg, r->ch.why);
		return;
	}
	if (h.role != ROLE_DEST || h.status) {
		set_error(r, "destination", "the destination refused: %s",
			  h.status ? (h.reason[0] ? h.reason : strerror((int)h.status)) :
				     "it is not a destination");
		return;
	}
	r->ch.framing = true;
	if (chan_parse(&r->ch) || streams_new(r)) {
		set_error(r, "source", "%s", r->ch.err ? r->ch.why : "streams");
		return;
	}
	r->started = true;
	r->t_start = now_ns();
	lib_err.count = 0;
	for (uint32_t i = 0; i < r->n; i++) {
		ret = vfiomig_mig_save_setup(r->d[i].m, r->d[i].fwd);
		if (ret) {
			source_step_failed(r, ret);
			return;
		}
	}
	if (source_precopy(r) || source_switchover(r))
		return;
}

/* ------------------------------------------------------------ destination */

/* What the channel's failure means, from the destination. */
static void dest_channel_error(struct mig_run *r)
{
	struct chan *ch = &r->ch;

	if (ch->err == -ECANCELED)
		set_error(r, "destination", "interrupted (%s)", sig_name());
	else if (ch->err == -ETIMEDOUT)
		set_error(r, "source", "the source went silent: %s", ch->why);
	else if (ch->err == -EBADMSG || ch->err == -EMSGSIZE)
		set_error(r, "destination", "the stream from the source is corrupt: %s", ch->why);
	else if (ch->err == -EPROTO)
		set_error(r, "source", "%s", ch->why);
	else if (ch->err)
		set_error(r, "source", "the source disappeared (%s)", ch->why);
	else
		set_error(r, "source", "the source disappeared (it closed the connection in the "
			  "middle of the migration)");
}

/* Device dev's load failed with err: why, in the right words, and whose fault. */
static void dest_step_failed(struct mig_run *r, uint32_t dev, int err)
{
	char words[512], peer[256];
	uint32_t origin = 0;
	int perr = vfiomig_mig_failure(r->d[dev].m, &origin, peer, sizeof(peer));
	const char *w = lib_words(err, words, sizeof(words));

	if (perr < 0 && origin == VFIOMIG_FAILURE_PEER)
		set_error(r, "source", "the source cancelled: %s", peer[0] ? peer :
			  vfiomig_strerror(perr));
	else if (r->ch.err || r->ch.eof)
		dest_channel_error(r);
	else
		set_error(r, "destination", "%s", w);
}

/*
 * The device whose data comes next: one with data queued, else the one
 * the next frame is for. 0 and *idx, or -1 after set_error.
 */
static int dest_pick(struct mig_run *r, uint32_t *idx)
{
	struct chan *ch = &r->ch;

	for (;;) {
		int ret;

		for (uint32_t i = 0; i < r->n; i++) {
			if (!q_len(&ch->q[i]))
				continue;
			if (r->d[i].done) {
				set_error(r, "source", "the source sent data for device %u after its "
					  "stream ended", i);
				return -1;
			}
			*idx = i;
			return 0;
		}
		if (ch->in_frame && ch->cur != CTL_INDEX) {
			*idx = ch->cur;
			if (!r->d[*idx].done)
				return 0;
		}
		if (sig_count) {
			set_error(r, "destination", "interrupted (%s)", sig_name());
			return -1;
		}
		if (ch->eof) {
			dest_channel_error(r);
			return -1;
		}
		ret = chan_pump(ch, -1, false);
		if (ret == 0)
			chan_fail(ch, false, -ETIMEDOUT, "nothing came for %llu s",
				  (unsigned long long)r->timeout_s);
		if (ret <= 0) {
			dest_channel_error(r);
			return -1;
		}
	}
}

/* What each device owes the source on the return path (FAILED, ACK, LOADED), `first` first. */
static int dest_send_returns(struct mig_run *r, uint32_t first)
{
	int err = 0;

	for (uint32_t k = 0; k < r->n; k++) {
		uint32_t i = (first + k) % r->n;
		int ret = vfiomig_mig_return_send(r->d[i].m, r->d[i].rp);

		if (ret < 0 && !err)
			err = ret;
	}
	return err;
}

/* The destination failed (or the source did): devices reset, the source told why. */
static void dest_give_up(struct mig_run *r, uint32_t first)
{
	char reason[256];

	progress_end(r);
	if (!r->started)
		return;
	if (sig_count)
		snprintf(reason, sizeof(reason), "interrupted by %s on the destination",
			 sig_name());
	else
		snprintf(reason, sizeof(reason), "%.255s", r->error);
	for (uint32_t i = 0; i < r->n; i++)
		vfiomig_mig_cancel(r->d[i].m, sig_count ? -EINTR : -ECANCELED, reason);
	/* A completed load (the VM did not run) is reset too. */
	vfiomig_mig_set_event(r->set, VFIOMIG_EVENT_FAILED);
	if (r->have_chan)
		dest_send_returns(r, first);
	snprintf(r->error + strlen(r->error), sizeof(r->error) - strlen(r->error),
		 "; destination devices reset");
	lib_err.count = 0;
}

static void run_destination(struct mig_run *r, uint32_t *failed_dev)
{
	char peer[128], why[200], b1[32], b2[32];
	struct hello h;
	uint32_t left = r->n;
	int lfd, fd, ret;

	lfd = net_listen(r);
	if (lfd < 0)
		return;
	fd = net_accept(r, lfd, peer, sizeof(peer));
	close(lfd);
	if (r->unlink_path[0]) {
		unlink(r->unlink_path); /* one source per run: nobody else may connect */
		r->unlink_path[0] = '\0';
	}
	if (fd < 0)
		return;
	if (chan_init(&r->ch, fd, r->n, (int)r->timeout_s * 1000, peer)) {
		close(fd);
		set_error(r, NULL, "%s", strerror(ENOMEM));
		return;
	}
	r->have_chan = true;
	ret = hello_recv(&r->ch, &h);
	if (ret) {
		dest_channel_error(r);
		return;
	}
	why[0] = '\0';
	if (h.version != WIRE_VERSION)
		snprintf(why, sizeof(why), "the source speaks wire protocol version %u, this "
			 "destination %u", h.version, WIRE_VERSION);
	else if (h.role != ROLE_SOURCE)
		snprintf(why, sizeof(why), "the peer is not a source");
	else if (h.devices != r->n)
		snprintf(why, sizeof(why), "the source migrates %u device%s, this destination has "
			 "%u", h.devices, h.devices == 1 ? "" : "s", r->n);
	if (why[0]) {
		hello_send(&r->ch, ROLE_DEST, r->n, h.version != WIRE_VERSION ? EPROTONOSUPPORT :
			   EINVAL, why);
		set_error(r, "destination", "%s", why);
		return;
	}
	ret = hello_send(&r->ch, ROLE_DEST, r->n, 0, NULL);
	if (ret) {
		dest_channel_error(r);
		return;
	}
	r->ch.framing = true;
	if (chan_parse(&r->ch) || streams_new(r)) {
		dest_channel_error(r);
		return;
	}
	status(r, "connection from %s: loading %u device%s", peer, r->n, r->n == 1 ? "" : "s");
	r->started = true;
	r->t_start = now_ns();
	lib_err.count = 0;
	/* The source writes every device's setup first. */
	for (uint32_t i = 0; i < r->n; i++) {
		ret = vfiomig_mig_load_setup(r->d[i].m, r->d[i].fwd);
		if (ret) {
			*failed_dev = i;
			dest_step_failed(r, i, ret);
			return;
		}
	}
	while (left) {
		uint32_t i;

		if (sig_count) {
			set_error(r, "destination", "interrupted (%s)", sig_name());
			return;
		}
		if (dest_pick(r, &i))
			return;
		ret = vfiomig_mig_load(r->d[i].m, r->d[i].fwd);
		if (ret < 0) {
			*failed_dev = i;
			dest_step_failed(r, i, ret);
			return;
		}
		if (ret == 0) {
			r->d[i].done = true;
			left--;
			continue; /* its LOADED goes once every device is loaded */
		}
		ret = vfiomig_mig_return_send(r->d[i].m, r->d[i].rp);
		if (ret < 0) {
			dest_channel_error(r);
			return;
		}
		human(b1, sizeof(b1), (double)r->ch.received);
		human(b2, sizeof(b2), (double)r->ch.received * 1e9 / (double)(now_ns() - r->t_start));
		progress(r, false, "loading: %s received, %s/s", b1, b2);
	}
	progress(r, true, "loaded: waiting for the source to commit");
	ret = dest_send_returns(r, 0);
	if (ret < 0) {
		dest_channel_error(r);
		return;
	}
	/* Run only once the source knows every device loaded and has let go of the VM. */
	while (!(r->ch.ctl_seen & (1u << CTL_COMMIT))) {
		if (sig_count) {
			set_error(r, "destination", "interrupted (%s) before the switchover",
				  sig_name());
			return;
		}
		ret = chan_pump(&r->ch, -1, false);
		if (ret <= 0 || r->ch.eof) {
			set_error(r, "source", "the source did not confirm the switchover (%s)",
				  ret == 0 ? "silent for the timeout" :
				  r->ch.err ? r->ch.why : "it closed the connection");
			return;
		}
	}
	ret = vfiomig_mig_set_vm_state(r->set, VFIOMIG_VM_RUNNING);
	if (ret) {
		char words[512];

		set_error(r, "destination", "%s", lib_words(ret, words, sizeof(words)));
		return;
	}
	chan_ctl_send(&r->ch, CTL_RUNNING);
}

/* ------------------------------------------------------------ summary */

static void json_dev(const struct mig_run *r, const struct mdev *d, bool last)
{
	VFIOMIG_OPTS(mig_stats, st);

	vfiomig_mig_get_stats(d->m, &st);
	printf("    {\n      \"spec\": ");
	json_str(d->spec);
	printf(",\n      \"name\": ");
	json_str(vfiomig_device_name(d->dev));
	printf(",\n      \"protocol\": \"%s\",\n", st.protocol == VFIOMIG_PROTO_V1 ? "v1" : "v2");
	printf("      \"stream_bytes\": %llu,\n      \"precopy_rounds\": %llu,\n"
	       "      \"precopy_bytes\": %llu,\n      \"stopcopy_bytes\": %llu,\n",
	       (unsigned long long)st.bytes, (unsigned long long)st.precopy_rounds,
	       (unsigned long long)st.precopy_bytes, (unsigned long long)st.stopcopy_bytes);
	if (r->source)
		printf("      \"stopcopy_ms\": %.3f,\n      \"switchover_acked\": %s,\n",
		       (double)st.stopcopy_ns / 1e6, d->acked ? "true" : "false");
	if (d->sd) {
		size_t len;
		const void *p = vfiomig_sim_device_state(d->sd, &len);

		printf("      \"state_bytes\": %zu,\n      \"state_crc32c\": %u,\n", len,
		       crc32c(p, len));
	}
	printf("      \"device_state\": \"%s\"\n    }%s\n",
	       vfiomig_device_state_name(st.device_state), last ? "" : ",");
}

static void print_json(const struct mig_run *r)
{
	VFIOMIG_OPTS(mig_stats, st);
	bool running = r->started;

	if (r->set)
		vfiomig_mig_set_get_stats(r->set, &st);
	for (uint32_t i = 0; i < r->n && r->d && r->d[i].m; i++) {
		VFIOMIG_OPTS(mig_stats, ds);

		vfiomig_mig_get_stats(r->d[i].m, &ds);
		running &= ds.device_state == VFIOMIG_DEVICE_STATE_RUNNING;
	}
	printf("{\n  \"role\": \"%s\",\n  \"address\": ", r->source ? "source" : "destination");
	json_str(r->have_chan ? r->ch.peer : r->addr_arg);
	printf(",\n  \"result\": \"%s\",\n  \"failed_side\": ", r->rc ? "failed" : "ok");
	if (r->failed_side)
		json_str(r->failed_side);
	else
		printf("null");
	printf(",\n  \"error\": ");
	json_str(r->error);
	printf(",\n  \"devices\": [\n");
	for (uint32_t i = 0; i < r->n && r->d && r->d[i].m; i++)
		json_dev(r, &r->d[i], i + 1 == r->n);
	printf("  ],\n  \"total_bytes\": %llu,\n  \"wire_bytes\": %llu,\n",
	       (unsigned long long)st.bytes,
	       (unsigned long long)(r->have_chan ? (r->source ? r->ch.sent : r->ch.received) : 0));
	if (r->source) {
		printf("  \"precopy_rounds\": %llu,\n  \"converged\": %s,\n  \"stop_reason\": ",
		       (unsigned long long)r->rounds, r->converged ? "true" : "false");
		json_str(r->stop_reason ? r->stop_reason : "");
		printf(",\n  \"bandwidth_bytes_per_s\": %.0f,\n  \"downtime_estimate_ms\": %.3f,\n",
		       r->bandwidth, r->est_ms > 0 ? r->est_ms : 0.0);
		if (r->rc)
			printf("  \"downtime_ms\": null,\n  \"loaded_ms\": null,\n");
		else
			printf("  \"downtime_ms\": %.3f,\n  \"loaded_ms\": %.3f,\n",
			       r->stop_to_running_ms, r->stop_to_loaded_ms);
		printf("  \"stopcopy_ms\": %.3f,\n  \"resumed\": %s,\n",
		       (double)st.stopcopy_ns / 1e6, r->rc && running ? "true" : "false");
	} else {
		printf("  \"running\": %s,\n", !r->rc && running ? "true" : "false");
	}
	printf("  \"total_ms\": %.3f\n}\n", r->total_ms);
}

static void print_text(const struct mig_run *r)
{
	VFIOMIG_OPTS(mig_stats, st);
	char b1[32], b2[32];

	vfiomig_mig_set_get_stats(r->set, &st);
	human(b1, sizeof(b1), (double)st.bytes);
	if (r->source && !r->rounds) {
		printf("migrated %u device%s to %s: %s by stop-and-copy only; downtime %.1f ms "
		       "(stop-and-copy %.1f ms); total %.1f ms\n", r->n, r->n == 1 ? "" : "s",
		       r->ch.peer, b1, r->stop_to_running_ms, (double)st.stopcopy_ns / 1e6,
		       r->total_ms);
	} else if (r->source) {
		human(b2, sizeof(b2), r->bandwidth);
		printf("migrated %u device%s to %s: %s in %llu pre-copy round%s (%s%s%s), %s/s; "
		       "downtime %.1f ms (stop-and-copy %.1f ms); total %.1f ms\n", r->n,
		       r->n == 1 ? "" : "s", r->ch.peer, b1, (unsigned long long)r->rounds,
		       r->rounds == 1 ? "" : "s", r->converged ? "converged" : "not converged",
		       r->converged ? "" : ": ", r->converged ? "" : r->stop_reason, b2,
		       r->stop_to_running_ms, (double)st.stopcopy_ns / 1e6, r->total_ms);
	} else {
		printf("loaded %u device%s from %s: %s in %.1f ms; the devices run here\n", r->n,
		       r->n == 1 ? "" : "s", r->ch.peer, b1, r->total_ms);
	}
}

/* ------------------------------------------------------------ the command */

static int migrate_args_parse(const struct command *cmd, int argc, char **argv, struct mig_run *r)
{
	const char *to = NULL, *listen_at = NULL, *v, *src_only = NULL;
	char why[256];
	int ret;

	r->specs = calloc((size_t)argc + 1, sizeof(*r->specs));
	if (!r->specs)
		return report(cmd, "arguments", "%s", strerror(ENOMEM));
	for (int i = 0; i < argc; i++) {
		uint64_t *num = NULL;
		const char *name = argv[i];

		if (is_help(argv[i]))
			return help(cmd);
		if ((ret = opt_value(cmd, argc, argv, &i, "--to", &v))) {
			if (ret < 0)
				return 2;
			if (to)
				return usage_error(cmd, "--to given twice");
			to = v;
			continue;
		}
		if ((ret = opt_value(cmd, argc, argv, &i, "--listen", &v))) {
			if (ret < 0)
				return 2;
			if (listen_at)
				return usage_error(cmd, "--listen given twice");
			listen_at = v;
			continue;
		}
		if ((ret = opt_value(cmd, argc, argv, &i, "--downtime-ms", &v)))
			num = &r->downtime_ms;
		else if ((ret = opt_value(cmd, argc, argv, &i, "--max-rounds", &v)))
			num = &r->max_rounds;
		else if ((ret = opt_value(cmd, argc, argv, &i, "--round-bytes", &v)))
			num = &r->round_bytes;
		else if ((ret = opt_value(cmd, argc, argv, &i, "--timeout-s", &v)))
			num = &r->timeout_s;
		if (ret < 0)
			return 2;
		if (num) {
			if (!parse_size(v, num))
				return usage_error(cmd, "%s: '%s' is not a number", name, v);
			if (num != &r->timeout_s)
				src_only = name;
			continue;
		}
		if (strcmp(argv[i], "--no-precopy") == 0) {
			r->flags |= VFIOMIG_MIG_F_NO_PRECOPY;
			src_only = argv[i];
		} else if (strcmp(argv[i], "--allow-v1") == 0) {
			r->flags |= VFIOMIG_MIG_F_ALLOW_V1;
		} else if (strcmp(argv[i], "--json") == 0) {
			r->json = true;
		} else if (argv[i][0] == '-' && argv[i][1]) {
			return usage_error(cmd, "unknown option '%s'", argv[i]);
		} else {
			r->specs[r->n++] = argv[i];
		}
	}
	if (to && listen_at)
		return usage_error(cmd, "--to and --listen: a run is either the source (--to) or "
				   "the destination (--listen)");
	if (!to && !listen_at)
		return usage_error(cmd, "missing --to ADDR (source) or --listen ADDR (destination)");
	if (!r->n)
		return usage_error(cmd, "missing DEVICE");
	if (r->n > MAX_DEVICES)
		return usage_error(cmd, "%u devices: at most %u per migration", r->n, MAX_DEVICES);
	r->source = to != NULL;
	r->addr_arg = to ? to : listen_at;
	if (addr_parse(r->addr_arg, !to, &r->addr, why, sizeof(why)))
		return usage_error(cmd, "%s: %s", to ? "--to" : "--listen", why);
	if (!r->source && src_only)
		return usage_error(cmd, "%s is a source option (with --to)", src_only);
	if (r->round_bytes < 4096)
		return usage_error(cmd, "--round-bytes: at least 4K");
	if (r->timeout_s < 1 || r->timeout_s > 86400)
		return usage_error(cmd, "--timeout-s: 1 to 86400");
	if (r->downtime_ms > 3600000)
		return usage_error(cmd, "--downtime-ms: at most 3600000");
	return ARGS_OK;
}

static void run_free(struct mig_run *r)
{
	/* Migrations first: they hold the streams, whose callbacks use the channel. */
	for (uint32_t i = 0; r->d && i < r->n; i++) {
		vfiomig_mig_free(r->d[i].m);
		vfiomig_stream_free(r->d[i].fwd);
		vfiomig_stream_free(r->d[i].rp);
	}
	vfiomig_mig_set_free(r->set);
	for (uint32_t i = 0; r->d && i < r->n; i++)
		vfiomig_device_close(r->d[i].dev);
	if (r->have_chan)
		chan_fini(&r->ch);
	vfiomig_ctx_unref(r->ctx);
	vfiomig_sim_free(r->sim);
	if (r->unlink_path[0])
		unlink(r->unlink_path);
	free(r->d);
	free(r->specs);
}

int cmd_migrate(const struct command *cmd, int argc, char **argv)
{
	struct mig_run r = {
		.cmd = cmd, .downtime_ms = 300, .max_rounds = 30, .round_bytes = 4u << 20,
		.timeout_s = 60, .est_ms = -1,
	};
	struct sigaction old_int, old_term;
	uint32_t failed_dev = 0;
	int rc;

	rc = migrate_args_parse(cmd, argc, argv, &r);
	if (rc != ARGS_OK) {
		free(r.specs);
		return rc;
	}
	r.progress = isatty(STDERR_FILENO);
	if (r.source)
		r.flags |= VFIOMIG_MIG_F_SWITCHOVER_ACK;
	rc = devices_open(&r);
	if (!rc)
		rc = migs_new(&r);
	if (rc) {
		run_free(&r);
		return rc;
	}
	sig_count = 0;
	signals_install(&old_int, &old_term);
	if (r.source)
		run_source(&r);
	else
		run_destination(&r, &failed_dev);
	r.rc = r.error[0] ? 1 : 0;
	if (r.t_start)
		r.total_ms = (double)(now_ns() - r.t_start) / 1e6;
	if (r.rc) {
		if (r.source)
			source_give_up(&r);
		else
			dest_give_up(&r, failed_dev);
	}
	if (r.have_chan)
		chan_close_gently(&r.ch);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	progress_end(&r);
	if (r.json)
		print_json(&r);
	else if (!r.rc)
		print_text(&r);
	fflush(stdout);
	if (r.rc)
		fprintf(stderr, "%s %s: %s\n", prog, cmd->name, r.error);
	lib_err.count = 0;
	run_free(&r);
	return r.rc;
}

/* ------------------------------------------------------------ help */

const char migrate_args[] = "DEVICE... --to ADDR | --listen ADDR DEVICE...";
const char migrate_summary[] = "live-migrate devices to another vfiomig over TCP or a unix socket";
const char migrate_help[] =
	"Live-migrate DEVICEs between two vfiomig processes, as two VMMs do: the\n"
	"destination listens (--listen), accepts one source and loads into its\n"
	"DEVICEs; the source (--to) runs pre-copy rounds while its devices keep\n"
	"running, stops them when the rest fits the allowed downtime, sends the\n"
	"rest and waits until the destination has loaded and verified everything.\n"
	"Several DEVICEs form one device set on each side, matched by position.\n"
	"\n"
	"ADDR: HOST:PORT (TCP; IPv4, [IPv6] or a host name; --listen :PORT takes every\n"
	"      address and PORT 0 any free port) or unix:PATH. The destination says\n"
	"      'listening on ADDR' on stderr, then 'connection from ...: loading'.\n"
	"\n"
	"Options:\n"
	"  --to ADDR          be the source: connect to ADDR (retried until the\n"
	"                     destination listens, within --timeout-s)\n"
	"  --listen ADDR      be the destination: listen on ADDR\n"
	"  --downtime-ms N    stop the VM once the rest is estimated to move within N ms\n"
	"                     at the bandwidth measured during pre-copy (default 300)\n"
	"  --max-rounds N     at most N pre-copy rounds (default 30)\n"
	"  --round-bytes SIZE device bytes per device per round (default 4M, at least 4K)\n"
	"  --no-precopy       no pre-copy rounds: stop-and-copy only\n"
	"  --allow-v1         allow the experimental v1 region protocol (Linux 5.8-5.17)\n"
	"  --timeout-s N      how long to wait for a connection, and for a peer that has\n"
	"                     gone silent (default 60)\n"
	"  --json             print a JSON summary on stdout at the end (also when the\n"
	"                     migration fails, once the devices are open)\n"
	"  -h, --help         show this help\n"
	"\n"
	"The source stops pre-copy when every device's initial data was sent and\n"
	"acknowledged by the destination (switchover-ack) and the estimate fits;\n"
	"it also stops, not converged, after 3 rounds in which the dirty data did not\n"
	"shrink, or after --max-rounds.\n"
	"\n"
	"Failures: the source's devices end running with their state intact (it\n"
	"cancels in-band and resumes), the destination's are reset and never run\n"
	"with partial state; the error line says which side failed and why. SIGINT\n"
	"or SIGTERM cancels the migration on either side (a second one at once).\n"
	"The destination runs the VM only once the source confirms (COMMIT) after\n"
	"every device LOADED; if the connection breaks after that confirmation, the\n"
	"source keeps its devices stopped rather than risk running the VM twice.\n"
	"\n"
	"Wire protocol (version 1; big-endian): HELLO both ways (source first):\n"
	"be32 magic 0x56464d57, be16 version, be16 role (1 source, 2 destination),\n"
	"be32 device count, be32 status (0 or an errno: refused), be16 reason length,\n"
	"be16 0, reason. Then frames both ways: be32 device index, be32 length\n"
	"(at most 1 MiB), bytes: device i's forward stream (to the destination) or\n"
	"return path (to the source). Index 0xffffffff: control, be32 type:\n"
	"1 COMMIT (to the destination), 2 RUNNING (to the source).\n"
	"\n"
	"JSON summary: role, address, result (\"ok\" / \"failed\"), failed_side\n"
	"(\"source\", \"destination\" or null), error, devices[] (spec, name,\n"
	"protocol, stream_bytes, precopy_rounds, precopy_bytes, stopcopy_bytes,\n"
	"device_state, and for sim: devices state_bytes and state_crc32c, the\n"
	"CRC32C of the device state; source: stopcopy_ms, switchover_acked),\n"
	"total_bytes, wire_bytes, total_ms; source: precopy_rounds, converged,\n"
	"stop_reason, bandwidth_bytes_per_s, downtime_estimate_ms, downtime_ms (VM\n"
	"stop to the destination running it; null on failure), loaded_ms (VM stop\n"
	"to every device LOADED), stopcopy_ms, resumed;\n"
	"destination: running.\n"
	"\n"
	"A simulated source device starts with (up to 64 MiB of) its state filled,\n"
	"as if the guest had used it; each side makes its own simulated devices from\n"
	"its own specs.\n"
	"\n"
	"Example (two shells):\n"
	"  vfiomig migrate --listen unix:/tmp/mig.sock sim:pci,mig=v2-p2p-precopy,state=64M\n"
	"  vfiomig migrate sim:pci,mig=v2-p2p-precopy,state=64M,dirty=8 --to unix:/tmp/mig.sock\n";
