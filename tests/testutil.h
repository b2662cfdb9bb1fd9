/* SPDX-License-Identifier: MIT */
/* Shared helpers for the criterion tests: log capture and simulator setup. */
#ifndef VFIOMIG_TESTUTIL_H
#define VFIOMIG_TESTUTIL_H

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif
#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

struct logcap {
	int count;      /* messages at or above (numerically below) LOG_WARNING */
	int errors;     /* VFIOMIG_LOG_ERR messages */
	char last[1024];
};

static inline void logcap_fn(void *user, int prio, const char *msg)
{
	struct logcap *lc = user;

	if (prio <= VFIOMIG_LOG_WARNING)
		lc->count++;
	if (prio == VFIOMIG_LOG_ERR)
		lc->errors++;
	snprintf(lc->last, sizeof(lc->last), "%s", msg);
}

#if defined(__SANITIZE_ADDRESS__)
/* criterion 2.4 keeps a copy of its option string for the process's life. */
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void);
__attribute__((visibility("default"))) const char *__lsan_default_suppressions(void)
{
	return "leak:criterion_handle_args\n";
}
#endif

/*
 * Under ASan, leak reports at a criterion worker's exit do not fail the
 * test: check explicitly at the end of each test that frees everything.
 */
static inline void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
	cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the LSan report)");
#endif
}

/* A simulator, a ctx on it (optionally through a fault injector), and captured logs. */
struct simenv {
	struct vfiomig_sim *sim;
	struct vfiomig_fault *fault;
	struct vfiomig_ctx *ctx;
	struct logcap log;
};

static inline void simenv_init_flags(struct simenv *e, uint32_t sim_flags, bool with_faults)
{
	VFIOMIG_OPTS(sim_opts, so, .flags = sim_flags);
	int ret;

	memset(e, 0, sizeof(*e));
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

/* Tear down and assert the library left no simulated fd or mapping behind. */
static inline void simenv_fini(struct simenv *e)
{
	vfiomig_ctx_unref(e->ctx);
	cr_assert_eq(vfiomig_sim_open_fds(e->sim), 0, "leaked %d simulated fds",
		     vfiomig_sim_open_fds(e->sim));
	cr_assert_eq(vfiomig_sim_live_maps(e->sim), 0, "leaked %d simulated mappings",
		     vfiomig_sim_live_maps(e->sim));
	vfiomig_fault_free(e->fault);
	vfiomig_sim_free(e->sim);
	assert_no_leaks();
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

#endif
