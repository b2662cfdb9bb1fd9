/* SPDX-License-Identifier: MIT */
/*
 * chanproxy: a unix-socket proxy that damages a migration channel on
 * purpose, for tests/test_migrate.sh.
 *
 *   chanproxy --listen A --connect B [--flip-at N] [--cut-at N]
 *
 * Listens on the unix socket A (the path appears only once it accepts:
 * the socket is bound under a temporary name and renamed into place, so a
 * test can wait for the file), accepts one connection, connects to B and
 * forwards both ways. "Forward" is what the client (the migration source)
 * sends. --flip-at N inverts the forward byte at offset N (counting from
 * 0); --cut-at N closes both connections once N forward bytes have gone
 * through. Exit status: 0 done, 1 a socket error, 2 usage.
 */
#include "config.h"

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

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
	if (snprintf(tmp, sizeof(tmp), "%s.tmp", listen_path) >= (int)sizeof(tmp) ||
	    !set_path(&un, tmp))
		goto usage;

	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	unlink(tmp);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&un, sizeof(un)) < 0 || listen(lfd, 1) < 0)
		return die(tmp);
	if (rename(tmp, listen_path) < 0)
		return die(listen_path);
	a = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (a < 0)
		return die("accept");
	close(lfd);
	unlink(listen_path);
	if (!set_path(&un, connect_path))
		goto usage;
	b = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (b < 0 || connect(b, (struct sockaddr *)&un, sizeof(un)) < 0)
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
	fprintf(stderr, "usage: chanproxy --listen PATH --connect PATH [--flip-at N] "
		"[--cut-at N]\n");
	return 2;
}
