/* SPDX-License-Identifier: MIT */
/*
 * Private to the vfiomig tool: what its commands share. tools/vfiomig.c
 * defines all of this (messages, argument parsing, device specs, the
 * command table); tools/migrate.c is the migrate command.
 */
#ifndef VFIOMIG_TOOL_H
#define VFIOMIG_TOOL_H

#include <stdbool.h>
#include <stdint.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>
#include <vfiomig/migration.h>

/* Returned by argument parsers when the command should go on. */
#define ARGS_OK (-1)

extern const char *const prog; /* "vfiomig" */

struct command {
	const char *name;
	int (*run)(const struct command *cmd, int argc, char **argv);
	const char *args;    /* the synopsis after "vfiomig NAME" */
	const char *summary; /* one line, for the global usage */
	const char *help;    /* the rest of "vfiomig NAME --help" */
};

/* "vfiomig CMD: message" and "Try 'vfiomig CMD --help'." on stderr; returns 2. */
__attribute__((format(printf, 2, 3)))
int usage_error(const struct command *cmd, const char *fmt, ...);
/* "vfiomig CMD --help" on stdout; returns 0. */
int help(const struct command *cmd);
bool is_help(const char *arg);

/*
 * The library's error lines, caught by the tool's log callback: `first` is
 * the first ERR line since the last report (the cause), `count` how many
 * came. A command that reports a failure itself resets count; what is left
 * unreported is printed at exit.
 */
struct tool_lib_err {
	bool verbose;       /* VFIOMIG_LOG asked for more than errors: print all as they come */
	unsigned int count; /* errors since the last report */
	char first[512];
};
extern struct tool_lib_err lib_err;

/* "vfiomig CMD: SUBJECT: why" on stderr; returns 1. */
__attribute__((format(printf, 3, 4)))
int report(const struct command *cmd, const char *subject, const char *fmt, ...);
/* A library call on `subject` failed with err: report it in the library's words; returns 1. */
int fail(const struct command *cmd, const char *subject, int err);

/* A context (on `sim`, or the real kernel when NULL) logging through the tool. */
int tool_ctx_new(struct vfiomig_sim *sim, struct vfiomig_ctx **ctx);

/* A size or count: decimal or 0x-hex, optional K/M/G suffix. */
bool parse_size(const char *s, uint64_t *out);
/*
 * Is argv[*i] the option `name` with a value? 1: yes (*val set, *i moved
 * past it); 0: another argument; -1: the value is missing (said).
 */
int opt_value(const struct command *cmd, int argc, char **argv, int *i, const char *name,
	      const char **val);

/* One opened device and what it needs (a simulated one has its own simulator). */
struct target {
	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct vfiomig_device *dev;
};

/*
 * Add the simulated device `spec` ("sim:...") to sim, logging through ctx.
 * 0, or the exit status after saying why: 2 for a malformed spec, 1 otherwise.
 */
int tool_sim_add(const struct command *cmd, struct vfiomig_sim *sim, struct vfiomig_ctx *ctx,
		 const char *spec, struct vfiomig_sim_device **sd);
/* May t's device migrate with these opts? 0, or 1 after saying why not. */
int target_check_mig(const struct command *cmd, const char *spec, struct target *t,
		     const struct vfiomig_mig_opts *mo);

/* s as a JSON string, quotes included, on stdout. */
void json_str(const char *s);

/* tools/migrate.c: the migrate command and its entry in the command table. */
int cmd_migrate(const struct command *cmd, int argc, char **argv);
extern const char migrate_args[];
extern const char migrate_summary[];
extern const char migrate_help[];

#endif
