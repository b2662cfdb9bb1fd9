/* SPDX-License-Identifier: MIT */
/*
 * chanproxy: a proxy that damages a migration channel on purpose, for
 * tests/test_migrate.sh and the real-kernel rig (tests/kernel/guest_tests.c).
 *
 *   chanproxy --listen A --connect B [--flip-at N] [--cut-at N]
 *
 * A and B are unix socket paths, or tcp:HOST:PORT (numeric IPv4, or IPv6
 * in brackets: tcp:[::1]:4444). Listens on A, accepts one connection,
 * connects to B and forwards both ways. A unix path appears only once the
 * proxy accepts (the socket is bound under a temporary name and renamed
 * into place, so a test can wait for the file); on TCP, `tcp:HOST:0` takes
 * any free port, and "chanproxy: listening on HOST:PORT" on stderr says
 * which, once connections are accepted. "Forward" is what the client (the
 * migration source) sends. --flip-at N inverts the forward byte at offset N
 * (counting from 0); --cut-at N closes both connections once N forward
 * bytes have gone through. Exit status: 0 done, 1 a socket error, 2 usage.
 */
#include "config.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define TCP_PREFIX "tcp:"

static int die(const char *what)
{
	fprintf(stderr, "chanproxy: %s: %s\n", what, strerror(errno));
	return 1;
}

static bool set_path(struct sockaddr_un *un, const char *path)
{
	memset(un, 0, sizeof(*un));
	un->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof(un->sun_path))
		return false;
	memcpy(un->sun_path, path, strlen(path));
	return true;
}

static bool is_tcp(const char *addr)
{
	return strncmp(addr, TCP_PREFIX, strlen(TCP_PREFIX)) == 0;
}

/* tcp:HOST:PORT (numeric; [IPv6]) into a socket address; false if malformed. */
static bool tcp_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *len)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char host[64];
	const char *h = addr + strlen(TCP_PREFIX), *colon = strrchr(h, ':');
	size_t hl;

	if (!colon || !colon[1] || strspn(colon + 1, "0123456789") != strlen(colon + 1))
		return false;
	hl = (size_t)(colon - h);
	if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
		h++;
		hl -= 2;
	}
	if (!hl || hl >= sizeof(host))
		return false;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) || !res)
		return false;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return true;
}

/* "HOST:PORT" ("[HOST]:PORT" for IPv6) of a bound TCP socket. */
static void tcp_name(int fd, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[64] = "?", port[16] = "?";

	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		getnameinfo((struct sockaddr *)&ss, sl, host, sizeof(host), port, sizeof(port),
			    NI_NUMERICHOST | NI_NUMERICSERV);
	snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
}

/* Connect to ADDR (a unix path or tcp:HOST:PORT): the fd, -1 with errno, -2 if malformed. */
static int connect_to(const char *addr)
{
	struct sockaddr_storage ss;
	struct sockaddr_un un;
	socklen_t sl;
	int fd;

	if (is_tcp(addr)) {
		if (!tcp_addr(addr, &ss, &sl))
			return -2;
	} else {
		if (!set_path(&un, addr))
			return -2;
		memcpy(&ss, &un, sizeof(un));
		sl = sizeof(un);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&ss, sl) < 0) {
		int err = errno;

		close(fd);
		errno = err;
		fd = -1;
	}
	return fd;
}

/* One direction: up to len bytes from `from` to `to`. Bytes moved, 0 at EOF, -1 on error. */
static ssize_t pass(int from, int to, unsigned char *buf, size_t len, uint64_t at, int64_t flip)
{
	ssize_t n = read(from, buf, len);
	size_t done = 0;

	if (n <= 0)
		return n < 0 && (errno == ECONNRESET) ? 0 : n;
	if (flip >= 0 && (uint64_t)flip >= at && (uint64_t)flip < at + (uint64_t)n)
		buf[(uint64_t)flip - at] ^= 0xff;
	while (done < (size_t)n) {
		ssize_t w = send(to, buf + done, (size_t)n - done, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		done += (size_t)w;
	}
	return n;
}

int main(int argc, char **argv)
{
	const char *listen_path = NULL, *connect_path = NULL;
	int64_t flip = -1, cut = -1;
	struct sockaddr_un un;
	char tmp[sizeof(un.sun_path) + 8];
	unsigned char buf[64 << 10];
	uint64_t fwd = 0;
	bool up_open = true, down_open = true;
	int lfd, a, b;

	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			goto usage;
		if (strcmp(argv[i], "--listen") == 0)
			listen_path = argv[++i];
		else if (strcmp(argv[i], "--connect") == 0)
			connect_path = argv[++i];
		else if (strcmp(argv[i], "--flip-at") == 0)
			flip = strtoll(argv[++i], NULL, 0);
		else if (strcmp(argv[i], "--cut-at") == 0)
			cut = strtoll(argv[++i], NULL, 0);
		else
			goto usage;
	}
	if (!listen_path || !connect_path)
		goto usage;
	if (is_tcp(listen_path)) {
		struct sockaddr_storage ss;
		socklen_t sl;
		char name[96];
		int one = 1;

		if (!tcp_addr(listen_path, &ss, &sl))
			goto usage;
		lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (lfd >= 0)
			setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, 1) < 0)
			return die(listen_path);
		tcp_name(lfd, name, sizeof(name));
		fprintf(stderr, "chanproxy: listening on %s\n", name);
		a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (a < 0)
			return die("accept");
		close(lfd);
	} else {
		if (snprintf(tmp, sizeof(tmp), "%s.tmp", listen_path) >= (int)sizeof(tmp) ||
		    !set_path(&un, tmp))
			goto usage;
		lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		unlink(tmp);
		if (lfd < 0 || bind(lfd, (struct sockaddr *)&un, sizeof(un)) < 0 ||
		    listen(lfd, 1) < 0)
			return die(tmp);
		if (rename(tmp, listen_path) < 0)
			return die(listen_path);
		a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (a < 0)
			return die("accept");
		close(lfd);
		unlink(listen_path);
	}
	b = connect_to(connect_path);
	if (b == -2)
		goto usage;
	if (b < 0)
		return die(connect_path);

	while (up_open || down_open) {
		struct pollfd p[2] = { { .fd = up_open ? a : -1, .events = POLLIN },
				       { .fd = down_open ? b : -1, .events = POLLIN } };
		ssize_t n;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return die("poll");
		}
		if (p[0].revents) {
			size_t len = sizeof(buf);

			if (cut >= 0 && (uint64_t)cut - fwd < len)
				len = (size_t)((uint64_t)cut - fwd);
			n = len ? pass(a, b, buf, len, fwd, flip) : 0;
			if (n < 0)
				return die("forward");
			fwd += (uint64_t)n;
			if (cut >= 0 && fwd >= (uint64_t)cut)
				break; /* cut: both sides lose the connection */
			if (n == 0) {
				shutdown(b, SHUT_WR);
				up_open = false;
			}
		}
		if (p[1].revents) {
			n = pass(b, a, buf, sizeof(buf), 0, -1);
			if (n < 0)
				return die("backward");
			if (n == 0) {
				shutdown(a, SHUT_WR);
				down_open = false;
			}
		}
	}
	close(a);
	close(b);
	return 0;
usage:
	fprintf(stderr, "usage: chanproxy --listen ADDR --connect ADDR [--flip-at N] "
		"[--cut-at N]\n"
		"ADDR: a unix socket path, or tcp:HOST:PORT (numeric; [IPv6])\n");
	return 2;
}
