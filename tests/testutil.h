/* SPDX-License-Identifier: MIT */
/* Shared helpers for the criterion tests: log capture, leak checks, simulator setup. */
#ifndef VFIOMIG_TESTUTIL_H
#define VFIOMIG_TESTUTIL_H

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <criterion/criterion.h>

/*
 * Which sanitizer owns malloc. gcc defines __SANITIZE_ADDRESS__ and
 * __SANITIZE_THREAD__; clang 14 defines neither, so ask __has_feature too.
 * TESTUTIL_HEAP_COUNT: this header interposes malloc to count heap blocks
 * (see the leak checks below) only when no sanitizer does.
 */
#if defined(__SANITIZE_ADDRESS__)
#define TESTUTIL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TESTUTIL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define TESTUTIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TESTUTIL_TSAN 1
#endif
#endif
#if !defined(TESTUTIL_ASAN) && !defined(TESTUTIL_TSAN)
#define TESTUTIL_HEAP_COUNT 1
#endif

#if defined(TESTUTIL_ASAN)
#include <sanitizer/lsan_interface.h>
#elif defined(TESTUTIL_HEAP_COUNT)
#include <malloc.h>
#endif
#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

struct logcap {
	int count;      /* messages at or above (numerically below) LOG_WARNING */
	int errors;     /* VFIOMIG_LOG_ERR messages */
	char last[1024];
	char last_err[1024]; /* the last VFIOMIG_LOG_ERR message */
	bool state_lost;     /* a warning said a device had to be reset, losing its state */
};

static inline void logcap_fn(void *user, int prio, const char *msg)
{
	struct logcap *lc = user;

	if (prio <= VFIOMIG_LOG_WARNING)
		lc->count++;
	if (prio == VFIOMIG_LOG_ERR) {
		lc->errors++;
		snprintf(lc->last_err, sizeof(lc->last_err), "%s", msg);
	}
	if (prio == VFIOMIG_LOG_WARNING && strstr(msg, "state is lost"))
		lc->state_lost = true;
	snprintf(lc->last, sizeof(lc->last), "%s", msg);
}

#if defined(TESTUTIL_ASAN)
/* criterion 2.4 keeps a copy of its option string for the process's life. */
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void);
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void)
{
	return "leak:criterion_handle_args\n";
}
#endif

#if defined(TESTUTIL_TSAN)
/*
 * criterion 2.4 cannot start under TSan (Criterion issue #274: "Could not
 * initialize inheritable arena"). Its runner maps the arena it shares with
 * the workers with MAP_FIXED at 0x200000000000 + (rand_r() & 0x3fffff) << 24,
 * and TSan refuses fixed mappings outside its application ranges, so it
 * aborts. This rand_r (criterion's only caller; the library has none) aims
 * that address at [0x550000000000, 0x555000000000): the bottom of TSan's
 * range for PIE programs (gcc 12 and clang 14 alike), below where the kernel
 * puts them (0x555555554000 and up), so free in the runner and in every
 * worker. The runner still checks the pages are free, and draws again if not.
 */
__attribute__((visibility("default"))) int rand_r(unsigned int *seed);
__attribute__((visibility("default"))) int rand_r(unsigned int *seed)
{
	*seed = *seed * 1103515245u + 12345u;
	return (int)(0x350000u + (*seed >> 8) % 0x5000u);
}
#endif

/*
 * Assert cond, failing the test even from a .fini fixture: criterion 2.4
 * reports a test before its teardown runs, so a failed cr_assert there (or
 * an abort) only prints a warning and the test passes. cr_expect records
 * the message (the TAP output shows it); criterion_test_die() then fails the
 * test and ends its worker.
 */
#define test_check(cond, ...)                                                             \
	do {                                                                              \
		if (!(cond)) {                                                            \
			cr_expect(0, __VA_ARGS__);                                        \
			criterion_test_die("%s:%d: check failed in %s", __FILE__, __LINE__, \
					   __func__);                                     \
		}                                                                         \
	} while (0)

/*
 * Leak checks that can fail in every build. leak_mark() records what the
 * process holds (live heap blocks, open fds); assert_no_leaks_since() asserts
 * it holds exactly that again and says what differs. simenv_init*() takes a
 * mark and simenv_fini() checks it; other tests make leak_baseline() their
 * suite's .init and end with assert_no_leaks().
 *
 * Heap, without ASan: this header defines the test program's malloc, calloc,
 * realloc, free and aligned allocators (so include it from one file per
 * program). They call glibc's own (__libc_malloc, ...) and count the blocks
 * alive; the library, criterion and glibc's internal calls (strdup, fopen,
 * ...) all go through them. The check is on that count, which only a block
 * left unfreed moves. Bytes are not checkable: glibc hands out a whole free
 * chunk when it is at most 16 bytes larger than asked, so bytes in use
 * (mallinfo2's uordblks) move with the heap's layout, and mallinfo2 counts
 * the blocks freed into glibc's per-thread cache as in use. Bytes (usable
 * sizes) are reported, not checked.
 *
 * Between the mark (taken in the fixture, in the criterion worker that runs
 * only this test, with no other thread alive) and the check, besides the
 * test:
 *  - criterion messages the runner; nanomsg frees its last request when it
 *    sends the next, one block for one block. A passing cr_assert sends
 *    nothing.
 *  - a process's first thread leaves its stack's TLS vector (a calloc) in
 *    glibc's stack cache for the next thread: leak_mark() starts and joins
 *    two threads once per process, so the tests' threads reuse those.
 *
 * Heap, under ASan: ASan owns malloc and LSan checks (its report at the
 * worker's exit would not fail the test, so ask here). LSan scans stacks
 * conservatively: a stale copy of a pointer there hides that block.
 * Heap, under TSan: not checked. TSan owns malloc too (its allocator keeps
 * per-block race metadata), and a malloc of ours calling glibc's would hide
 * the blocks from it and hand glibc blocks TSan allocated; it has no leak
 * checker to ask instead. The ASan and plain builds check the heap.
 * fds: the set in /proc/self/fd is compared, in every build.
 */
#define LEAK_MAX_FD 1024

struct leak_mark {
	bool set;
	int nfds;
	unsigned char fds[LEAK_MAX_FD / 8]; /* which fds below LEAK_MAX_FD were open */
	long blocks;                        /* live heap blocks; unused under ASan, TSan */
	long bytes;                         /* and their usable bytes */
};

#if defined(TESTUTIL_HEAP_COUNT)
void *__libc_malloc(size_t size);
void *__libc_calloc(size_t nmemb, size_t size);
void *__libc_realloc(void *ptr, size_t size);
void *__libc_memalign(size_t alignment, size_t size);
void *__libc_valloc(size_t size);
void *__libc_pvalloc(size_t size);
void __libc_free(void *ptr);

static long leak_blocks, leak_bytes, leak_peak;

/* The most heap in use since heap_peak_reset(): what a test may bound. */
static inline void leak_note_peak(long now)
{
	long peak = __atomic_load_n(&leak_peak, __ATOMIC_RELAXED);

	while (now > peak &&
	       !__atomic_compare_exchange_n(&leak_peak, &peak, now, false, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

static inline void *leak_count(void *p)
{
	if (p) {
		__atomic_add_fetch(&leak_blocks, 1, __ATOMIC_RELAXED);
		leak_note_peak(__atomic_add_fetch(&leak_bytes, (long)malloc_usable_size(p),
						  __ATOMIC_RELAXED));
	}
	return p;
}

static inline void heap_peak_reset(void)
{
	__atomic_store_n(&leak_peak, __atomic_load_n(&leak_bytes, __ATOMIC_RELAXED),
			 __ATOMIC_RELAXED);
}

/* Bytes of heap in use at the peak since heap_peak_reset(), above what was in use then. */
static inline long heap_peak_since(long base)
{
	return __atomic_load_n(&leak_peak, __ATOMIC_RELAXED) - base;
}

static inline long heap_in_use(void)
{
	return __atomic_load_n(&leak_bytes, __ATOMIC_RELAXED);
}

static inline void leak_uncount(void *p)
{
	if (p) {
		__atomic_sub_fetch(&leak_blocks, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&leak_bytes, (long)malloc_usable_size(p), __ATOMIC_RELAXED);
	}
}

#define LEAK_EXPORT __attribute__((visibility("default")))

LEAK_EXPORT void *malloc(size_t size)
{
	return leak_count(__libc_malloc(size));
}

LEAK_EXPORT void *calloc(size_t nmemb, size_t size)
{
	return leak_count(__libc_calloc(nmemb, size));
}

LEAK_EXPORT void free(void *ptr)
{
	leak_uncount(ptr);
	__libc_free(ptr);
}

LEAK_EXPORT void *realloc(void *ptr, size_t size)
{
	long old = ptr ? (long)malloc_usable_size(ptr) : 0;
	void *p = __libc_realloc(ptr, size);

	if (!ptr)
		return leak_count(p);
	if (p)
		leak_note_peak(__atomic_add_fetch(&leak_bytes, (long)malloc_usable_size(p) - old,
						  __ATOMIC_RELAXED));
	else if (size == 0) { /* glibc freed ptr */
		__atomic_sub_fetch(&leak_blocks, 1, __ATOMIC_RELAXED);
		__atomic_sub_fetch(&leak_bytes, old, __ATOMIC_RELAXED);
	}
	return p;
}

LEAK_EXPORT void *memalign(size_t alignment, size_t size)
{
	return leak_count(__libc_memalign(alignment, size));
}

LEAK_EXPORT void *aligned_alloc(size_t alignment, size_t size)
{
	return leak_count(__libc_memalign(alignment, size));
}

LEAK_EXPORT int posix_memalign(void **memptr, size_t alignment, size_t size)
{
	void *p;

	if (!alignment || alignment % sizeof(void *) || (alignment & (alignment - 1)))
		return EINVAL;
	p = __libc_memalign(alignment, size);
	if (!p)
		return ENOMEM;
	*memptr = leak_count(p);
	return 0;
}

LEAK_EXPORT void *valloc(size_t size)
{
	return leak_count(__libc_valloc(size));
}

LEAK_EXPORT void *pvalloc(size_t size)
{
	return leak_count(__libc_pvalloc(size));
}

static inline void *leak_thread_warm_up(void *arg)
{
	return arg;
}

static inline void leak_heap_prepare(void)
{
	static bool warm;
	/*
	 * glibc keeps the stacks of ended threads (with an allocation each)
	 * for later threads of a similar stack size. Fill that cache before
	 * the first mark with as many threads as the tests start at once:
	 * 3 library workers of a parallel set run (default stacks) and the 5
	 * threads of test_threads (2 MiB stacks), 34 MiB in all, under the
	 * cache's 40 MiB.
	 */
	pthread_t th[8];
	pthread_attr_t small;
	long before, during;
	char *s = NULL;

	if (!warm) {
		warm = true;
		pthread_attr_init(&small);
		pthread_attr_setstacksize(&small, 2u << 20);
		for (int i = 0; i < 8; i++)
			test_check(pthread_create(&th[i], i < 3 ? NULL : &small, leak_thread_warm_up,
						  NULL) == 0, "leak check: pthread_create");
		for (int i = 0; i < 8; i++)
			pthread_join(th[i], NULL);
		pthread_attr_destroy(&small);
	}
	/* A check that counts nothing is no check: libc's own malloc calls must count. */
	before = __atomic_load_n(&leak_blocks, __ATOMIC_RELAXED);
	test_check(asprintf(&s, "%d", 42) > 0, "leak check: asprintf");
	during = __atomic_load_n(&leak_blocks, __ATOMIC_RELAXED);
	free(s);
	test_check(during > before && __atomic_load_n(&leak_blocks, __ATOMIC_RELAXED) == before,
		   "leak check: libc's allocations are not counted (malloc not interposed?)");
}
#endif

/* Open fds, the one reading /proc/self/fd excluded; which ones into map. */
static inline int leak_fds(unsigned char map[LEAK_MAX_FD / 8])
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	test_check(d, "leak check: /proc/self/fd: %s", strerror(errno));
	if (!d)
		return -1;
	memset(map, 0, LEAK_MAX_FD / 8);
	while ((de = readdir(d))) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);

		if (de->d_name[0] < '0' || de->d_name[0] > '9' || *end || fd == dirfd(d))
			continue;
		n++;
		if (fd < LEAK_MAX_FD)
			map[fd / 8] |= 1u << (fd % 8);
	}
	closedir(d);
	return n;
}

static inline void leak_mark(struct leak_mark *m)
{
	memset(m, 0, sizeof(*m));
#if defined(TESTUTIL_HEAP_COUNT)
	leak_heap_prepare();
#endif
	m->nfds = leak_fds(m->fds);
#if defined(TESTUTIL_HEAP_COUNT)
	m->blocks = __atomic_load_n(&leak_blocks, __ATOMIC_RELAXED);
	m->bytes = __atomic_load_n(&leak_bytes, __ATOMIC_RELAXED);
#endif
	m->set = true;
}

/* "fd 7 -> pipe:[123]" for each fd (below LEAK_MAX_FD) open in a but not in b. */
static inline void leak_fd_list(char *buf, size_t sz, const unsigned char *a,
				 const unsigned char *b)
{
	size_t len = 0;

	buf[0] = 0;
	for (int fd = 0; fd < LEAK_MAX_FD && len < sz; fd++) {
		char path[64], target[128];
		ssize_t r;

		if (!(a[fd / 8] & (1u << (fd % 8))) || (b[fd / 8] & (1u << (fd % 8))))
			continue;
		snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
		r = readlink(path, target, sizeof(target) - 1);
		target[r < 0 ? 0 : r] = 0;
		len += snprintf(buf + len, sz - len, "%sfd %d -> %s", len ? ", " : "", fd, target);
	}
}

/* Append to a message, "; "-separated, truncating quietly. */
__attribute__((format(printf, 3, 4)))
static inline void leak_say(char *buf, size_t sz, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len && len + 2 < sz)
		len += (size_t)snprintf(buf + len, sz - len, "; ");
	if (len + 1 >= sz)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, sz - len, fmt, ap);
	va_end(ap);
}

/*
 * Assert the process holds what it held at the mark: as many heap blocks
 * (under ASan: nothing LSan calls leaked), the same fds. Works in .fini.
 */
static inline void assert_no_leaks_since(const struct leak_mark *m)
{
	unsigned char now[LEAK_MAX_FD / 8];
	char msg[1024] = "", list[512];
	int nfds;

	test_check(m->set, "leak check: no mark to compare with (leak_mark() or leak_baseline() "
		   "at the start of the test)");
	nfds = leak_fds(now);
#if defined(TESTUTIL_ASAN)
	if (__lsan_do_recoverable_leak_check())
		leak_say(msg, sizeof(msg), "memory leaked (see the LSan report)");
#elif defined(TESTUTIL_HEAP_COUNT)
	{
		long blocks = __atomic_load_n(&leak_blocks, __ATOMIC_RELAXED) - m->blocks;
		long bytes = __atomic_load_n(&leak_bytes, __ATOMIC_RELAXED) - m->bytes;

		if (blocks > 0)
			leak_say(msg, sizeof(msg), "%ld heap blocks (%ld bytes) leaked", blocks, bytes);
		else if (blocks < 0)
			leak_say(msg, sizeof(msg),
				 "%ld heap blocks (%ld bytes) allocated before the start were freed",
				 -blocks, -bytes);
	}
#endif
	if (memcmp(now, m->fds, sizeof(now)) || nfds != m->nfds) {
		leak_fd_list(list, sizeof(list), now, m->fds);
		if (list[0] || nfds > m->nfds)
			leak_say(msg, sizeof(msg), "fds leaked (%d open at the start, %d now): %s",
				 m->nfds, nfds, list);
		leak_fd_list(list, sizeof(list), m->fds, now);
		if (list[0] || nfds < m->nfds)
			leak_say(msg, sizeof(msg),
				 "fds open at the start were closed (%d then, %d now): %s", m->nfds,
				 nfds, list);
	}
	test_check(!msg[0], "%s", msg);
}

/* The mark of leak_baseline() (a suite's .init) that assert_no_leaks() checks. */
static struct leak_mark leak_baseline_mark;

static inline void leak_baseline(void)
{
	leak_mark(&leak_baseline_mark);
}

static inline void assert_no_leaks(void)
{
	assert_no_leaks_since(&leak_baseline_mark);
}

/* A simulator, a ctx on it (optionally through a fault injector), and captured logs. */
struct simenv {
	struct vfiomig_sim *sim;
	struct vfiomig_fault *fault;
	struct vfiomig_ctx *ctx;
	struct logcap log;
	struct leak_mark leaks; /* taken by simenv_init*(), checked by simenv_fini() */
};

static inline void simenv_init_flags(struct simenv *e, uint32_t sim_flags, bool with_faults)
{
	VFIOMIG_OPTS(sim_opts, so, .flags = sim_flags);
	int ret;

	memset(e, 0, sizeof(*e));
	leak_mark(&e->leaks);
	cr_assert_eq(vfiomig_sim_new(&so, &e->sim), 0);
	if (with_faults) {
		cr_assert_eq(vfiomig_fault_new(vfiomig_sim_kernel_ops(), e->sim, &e->fault), 0);
		VFIOMIG_OPTS(ctx_opts, co, .log_fn = logcap_fn, .log_user = &e->log,
			     .log_priority = VFIOMIG_LOG_INFO,
			     .kernel_ops = vfiomig_fault_kernel_ops(), .kernel_user = e->fault);
		ret = vfiomig_ctx_new(&co, &e->ctx);
	} else {
		VFIOMIG_OPTS(ctx_opts, co, .log_fn = logcap_fn, .log_user = &e->log,
			     .log_priority = VFIOMIG_LOG_INFO);
		ret = vfiomig_sim_ctx_new(e->sim, &co, &e->ctx);
	}
	cr_assert_eq(ret, 0, "ctx: %d", ret);
}

static inline void simenv_init(struct simenv *e)
{
	simenv_init_flags(e, 0, true);
}

/*
 * Tear down and assert the library left no simulated fd or mapping behind,
 * and that the process holds what it held at simenv_init*(). Fails the test
 * also when called from a .fini fixture (see test_check).
 */
static inline void simenv_fini(struct simenv *e)
{
	vfiomig_ctx_unref(e->ctx);
	test_check(vfiomig_sim_open_fds(e->sim) == 0, "leaked %d simulated fds",
		   vfiomig_sim_open_fds(e->sim));
	test_check(vfiomig_sim_live_maps(e->sim) == 0, "leaked %d simulated mappings",
		   vfiomig_sim_live_maps(e->sim));
	vfiomig_fault_free(e->fault);
	vfiomig_sim_free(e->sim);
	assert_no_leaks_since(&e->leaks);
}

static inline struct vfiomig_sim_device *sim_add(struct simenv *e, const char *spec)
{
	struct vfiomig_sim_device *d = NULL;
	int ret = vfiomig_sim_device_add_spec(e->sim, NULL, spec, &d);

	cr_assert_eq(ret, 0, "add %s: %d", spec, ret);
	return d;
}

static inline void fault(struct simenv *e, uint32_t op, uint64_t nth, int err, uint64_t short_len,
			 unsigned long req)
{
	VFIOMIG_OPTS(fault_spec, fs, .op = op, .nth = nth, .error = err, .short_len = short_len,
		     .ioctl_request = req);
	cr_assert_eq(vfiomig_fault_add(e->fault, &fs), 0);
}


/*
 * A caller's stream over a memory pipe: the same bytes as the pipe, but
 * through callbacks, so the library cannot lend the pipe's buffer and its
 * data path copies (and may pipeline). vfiomig_stream_free() frees both.
 */
static inline ssize_t relay_write(void *user, const void *buf, size_t len)
{
	int ret = vfiomig_stream_write(user, buf, len);

	return ret ? ret : (ssize_t)len;
}

static inline ssize_t relay_read(void *user, void *buf, size_t len)
{
	const void *data;
	size_t have;
	int ret = vfiomig_stream_mem_data(user, &data, &have);

	if (ret)
		return ret;
	if (len > have)
		len = have;
	ret = len ? vfiomig_stream_read(user, buf, len) : 0;
	return ret ? ret : (ssize_t)len;
}

static inline void relay_release(void *user)
{
	vfiomig_stream_free(user);
}

static inline struct vfiomig_stream *relay_new(struct vfiomig_ctx *ctx)
{
	static const struct vfiomig_stream_ops ops = {
		.sz = sizeof(ops), .write = relay_write, .read = relay_read,
		.release = relay_release,
	};
	struct vfiomig_stream *pipe = NULL, *s = NULL;

	cr_assert_eq(vfiomig_stream_mem_pipe_new(ctx, &pipe), 0);
	cr_assert_eq(vfiomig_stream_new(ctx, &ops, pipe, &s), 0);
	return s;
}

/* Simulated device state: equal between two devices, a copy (free it), equal to a copy. */
static inline bool same_state(struct vfiomig_sim_device *a, struct vfiomig_sim_device *b)
{
	size_t la, lb;
	const void *pa = vfiomig_sim_device_state(a, &la);
	const void *pb = vfiomig_sim_device_state(b, &lb);

	return pa && pb && la == lb && memcmp(pa, pb, la) == 0;
}

static inline void *snapshot(struct vfiomig_sim_device *d, size_t *len)
{
	const void *p = vfiomig_sim_device_state(d, len);
	void *copy = malloc(*len);

	cr_assert_not_null(copy);
	memcpy(copy, p, *len);
	return copy;
}

static inline bool state_is(struct vfiomig_sim_device *d, const void *snap, size_t len)
{
	size_t l;
	const void *p = vfiomig_sim_device_state(d, &l);

	return l == len && memcmp(p, snap, len) == 0;
}

#endif
