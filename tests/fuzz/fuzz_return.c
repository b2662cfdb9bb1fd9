/* SPDX-License-Identifier: MIT */
/*
 * Return-path fuzz target: every input is what a destination sent back.
 * It is fed to vfiomig_mig_return_recv() of a source migration (a
 * simulated device with pre-copy and P2P, saved with
 * VFIOMIG_MIG_F_SWITCHOVER_ACK into a memory stream) until the messages
 * end or one fails to be read, at three points of the save: during
 * pre-copy, with the VM stopped (STOP_COPY), and after save_complete().
 * Each message is held against a decoder written from
 * docs/stream-format.md ("Return path"). Invariants (abort() when one
 * breaks):
 *
 *  - every call returns what the document says: a message whose CRC,
 *    marker, length or fields are wrong is refused (-EBADMSG), a cut one
 *    is -EPIPE, unknown types are skipped, the end is -ENODATA; a
 *    message accepted is reported field for field as it was sent;
 *  - LOADED is accepted only after the save completed and only when its
 *    byte count, data counts and CRC32C are the stream's that was
 *    written (-EPROTO before completion, -EBADMSG for another stream);
 *  - FAILED during the save fails it with the destination's errno and
 *    reason (vfiomig_mig_failure says PEER), writes a CANCEL record
 *    carrying that errno into the forward stream and puts the device back
 *    with its state: RUNNING while the VM runs, STOP while it is stopped;
 *    after completion it makes COMPLETED refused, and
 *    vfiomig_mig_vm_state(RUNNING) resumes the device with its state;
 *  - nothing else on the return path hurts the save: it completes, and
 *    its stream is intact; switchover is ready only once acknowledged;
 *  - nothing leaks (simulated fds and mappings back to 0).
 */
#include "fuzz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

const char fz_target_name[] = "return";

#define STATE_PAGES 2u

enum stage { PRECOPY, STOPPED, COMPLETE, NSTAGES };
static const char *const stage_name[] = { "precopy", "stopped", "complete" };

/* The LOADED that matches the save (the same every time), for the mutator. */
static struct fz_rp_msg good_loaded;
static bool have_good_loaded;

static void quiet(void *user, int priority, const char *msg)
{
	(void)user;
	(void)priority;
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "  lib: %s\n", msg);
}

struct src {
	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_mig *mig;
	struct vfiomig_stream *out;
	uint8_t state[STATE_PAGES * FZ_PAGE];
};

static void src_setup(struct src *s, enum stage stage)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = quiet);
	VFIOMIG_OPTS(sim_device_opts, so, .state_size = STATE_PAGES * FZ_PAGE,
		     .migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
				  VFIOMIG_SIM_MIG_PRE_COPY);
	VFIOMIG_OPTS(mig_opts, mo, .flags = VFIOMIG_MIG_F_SWITCHOVER_ACK);
	const void *st;
	size_t len;
	int k;

	memset(s, 0, sizeof(*s));
	FZ_CHECK(vfiomig_sim_new(NULL, &s->sim) == 0, "vfiomig_sim_new");
	FZ_CHECK(vfiomig_sim_ctx_new(s->sim, &co, &s->ctx) == 0, "vfiomig_sim_ctx_new");
	FZ_CHECK(vfiomig_sim_device_add(s->sim, &so, &s->sd) == 0, "vfiomig_sim_device_add");
	FZ_CHECK(vfiomig_sim_device_run(s->sd, STATE_PAGES) == 0, "vfiomig_sim_device_run");
	st = vfiomig_sim_device_state(s->sd, &len);
	FZ_CHECK(st && len == sizeof(s->state), "device state of %zu bytes", len);
	memcpy(s->state, st, len);
	FZ_CHECK(vfiomig_device_open(s->ctx, vfiomig_sim_device_name(s->sd), NULL, &s->dev) == 0,
		 "vfiomig_device_open");
	FZ_CHECK(vfiomig_mig_new(s->dev, VFIOMIG_ROLE_SAVE, &mo, &s->mig) == 0, "vfiomig_mig_new");
	FZ_CHECK(vfiomig_stream_mem_new(s->ctx, &s->out) == 0, "vfiomig_stream_mem_new");
	k = vfiomig_mig_save_setup(s->mig, s->out);
	FZ_CHECK(k == 0, "save_setup: %s", fz_errname(k));
	for (int r = 0; r < 8 && !vfiomig_mig_initial_data_sent(s->mig); r++) {
		k = vfiomig_mig_save_iterate(s->mig, s->out, 0);
		FZ_CHECK(k >= 0, "save_iterate: %s", fz_errname(k));
	}
	FZ_CHECK(vfiomig_mig_initial_data_sent(s->mig) == 1, "the initial data was never sent");
	if (stage >= STOPPED) {
		k = vfiomig_mig_vm_state(s->mig, VFIOMIG_VM_STOPPED);
		FZ_CHECK(k == 0, "vm_state(STOPPED): %s", fz_errname(k));
	}
	if (stage == COMPLETE) {
		k = vfiomig_mig_save_complete(s->mig, s->out);
		FZ_CHECK(k == 0, "save_complete: %s", fz_errname(k));
	}
}

static void src_teardown(struct src *s)
{
	vfiomig_stream_free(s->out);
	vfiomig_mig_free(s->mig);
	vfiomig_device_close(s->dev);
	vfiomig_ctx_unref(s->ctx);
	FZ_CHECK(vfiomig_sim_open_fds(s->sim) == 0 && vfiomig_sim_live_maps(s->sim) == 0,
		 "leak: %d simulated fds and %d mappings left", vfiomig_sim_open_fds(s->sim),
		 vfiomig_sim_live_maps(s->sim));
	vfiomig_sim_free(s->sim);
}

static void out_stream(struct src *s, struct fz_stream *ms)
{
	const void *p;
	size_t len;

	FZ_CHECK(vfiomig_stream_mem_data(s->out, &p, &len) == 0, "vfiomig_stream_mem_data");
	fz_stream_parse(p, len, 0, ms);
}

static bool device_is(struct src *s, int state)
{
	const void *st;
	size_t len;

	st = vfiomig_sim_device_state(s->sd, &len);
	return vfiomig_sim_device_mig_state(s->sd) == state && len == sizeof(s->state) &&
	       memcmp(st, s->state, len) == 0;
}

/* One result into the outcome text: "precopy=ack,EBADMSG,end". */
static void add(char *text, size_t len, const char *what)
{
	size_t n = strlen(text);

	snprintf(text + n, len - n, "%s%s", n && text[n - 1] != '=' ? "," : "", what);
}

static void run_stage(const uint8_t *data, size_t size, enum stage stage, char *text, size_t tlen)
{
	struct vfiomig_stream *rp = NULL;
	struct fz_stream ms;
	struct fz_rp_msg want, first_failed = { 0 };
	bool complete = stage == COMPLETE, failed = false, acked = false, loaded = false;
	uint32_t origin;
	char reason[256];
	struct src s;
	size_t pos = 0;
	int k, err;

	src_setup(&s, stage);
	if (complete) {
		out_stream(&s, &ms);
		FZ_CHECK(ms.err == 0, "the save wrote a stream its reader refuses: %s",
			 fz_errname(ms.err));
		good_loaded = (struct fz_rp_msg){ .type = FZ_RP_LOADED, .bytes = ms.bytes,
						  .records = ms.data_records,
						  .data_bytes = ms.data_bytes,
						  .crc = ms.stream_crc };
		have_good_loaded = true;
		fz_stream_free(&ms);
	}
	k = vfiomig_stream_mem_fixed_new(s.ctx, (void *)data, size, VFIOMIG_STREAM_MEM_READ, &rp);
	FZ_CHECK(k == 0, "vfiomig_stream_mem_fixed_new: %s", fz_errname(k));
	k = (int)strlen(text);
	snprintf(text + k, tlen - (size_t)k, "%s%s=", k ? " " : "", stage_name[stage]);
	for (;;) {
		struct vfiomig_return_msg got = { .sz = sizeof(got) };
		int exp;

		err = fz_rp_next(data, size, &pos, &want);
		exp = err;
		if (!err && want.type == FZ_RP_LOADED) {
			if (!complete)
				exp = -EPROTO;
			else if (want.bytes != good_loaded.bytes || want.records != good_loaded.records ||
				 want.data_bytes != good_loaded.data_bytes || want.crc != good_loaded.crc)
				exp = -EBADMSG;
		}
		k = vfiomig_mig_return_recv(s.mig, rp, &got);
		FZ_CHECK(k == exp, "%s: return_recv returned %s, the document says %s",
			 stage_name[stage], fz_errname(k), fz_errname(exp));
		if (k == -ENODATA) {
			add(text, tlen, "end");
			break;
		}
		if (k) {
			add(text, tlen, fz_errname(k));
			/* A corrupt message was read whole: the next one can be read. A cut one ends it. */
			if (k == -EBADMSG || k == -EPROTO)
				continue;
			break;
		}
		FZ_CHECK(got.type == want.type && got.bytes == want.bytes &&
				 (want.type != FZ_RP_FAILED ||
				  (got.error == want.error && strcmp(got.reason, want.reason) == 0)),
			 "%s: message %u reported as type %u, %llu bytes, error %d \"%s\"",
			 stage_name[stage], want.type, got.type, (unsigned long long)got.bytes,
			 got.error, got.reason);
		switch (want.type) {
		case FZ_RP_ACK:
			add(text, tlen, "ack");
			acked = true;
			break;
		case FZ_RP_LOADED:
			add(text, tlen, "loaded");
			loaded = true;
			break;
		default:
			add(text, tlen, "failed");
			if (!failed)
				first_failed = want;
			failed = true;
			break;
		}
	}
	vfiomig_stream_free(rp);
	(void)loaded;

	/* Whose failure, and in whose words. */
	k = vfiomig_mig_failure(s.mig, &origin, reason, sizeof(reason));
	if (failed)
		FZ_CHECK(k == first_failed.error && origin == VFIOMIG_FAILURE_PEER &&
				 strcmp(reason, first_failed.reason) == 0,
			 "%s: after FAILED(%s, \"%s\") the failure is %s from %u (\"%s\")",
			 stage_name[stage], fz_errname(first_failed.error), first_failed.reason,
			 fz_errname(k), origin, reason);
	else
		FZ_CHECK(k == 0, "%s: the return path failed the migration (%s) without a FAILED",
			 stage_name[stage], fz_errname(k));
	k = vfiomig_mig_switchover_ready(s.mig);
	FZ_CHECK(failed ? k == -ECANCELED : k == (acked ? 1 : 0),
		 "%s: switchover_ready is %d (acked %d, failed %d)", stage_name[stage], k, acked,
		 failed);

	if (!complete && failed) {
		/* The save failed: the device is back, with its state, and the stream says why. */
		FZ_CHECK(device_is(&s, stage == PRECOPY ? VFIOMIG_DEVICE_STATE_RUNNING
							: VFIOMIG_DEVICE_STATE_STOP),
			 "%s: after FAILED the device is in %s, or lost its state",
			 stage_name[stage],
			 vfiomig_device_state_name((uint32_t)vfiomig_sim_device_mig_state(s.sd)));
		out_stream(&s, &ms);
		FZ_CHECK(ms.err == -ECANCELED && ms.cancel_error == first_failed.error,
			 "%s: after FAILED the forward stream ends in %s (cancel %d), not a CANCEL "
			 "with %s",
			 stage_name[stage], fz_errname(ms.err), ms.cancel_error,
			 fz_errname(first_failed.error));
		fz_stream_free(&ms);
		FZ_CHECK(vfiomig_mig_save_complete(s.mig, s.out) < 0,
			 "%s: a failed save completed", stage_name[stage]);
		k = vfiomig_mig_vm_state(s.mig, VFIOMIG_VM_RUNNING);
		FZ_CHECK(k == 0 && device_is(&s, VFIOMIG_DEVICE_STATE_RUNNING),
			 "%s: the VM cannot run its device again (%s)", stage_name[stage],
			 fz_errname(k));
	} else if (!complete) {
		/* Nothing on the return path may break the forward migration. */
		if (stage == PRECOPY) {
			k = vfiomig_mig_vm_state(s.mig, VFIOMIG_VM_STOPPED);
			FZ_CHECK(k == 0, "%s: vm_state(STOPPED): %s", stage_name[stage],
				 fz_errname(k));
		}
		k = vfiomig_mig_save_complete(s.mig, s.out);
		FZ_CHECK(k == 0, "%s: the save cannot complete after the return path: %s",
			 stage_name[stage], fz_errname(k));
		FZ_CHECK(device_is(&s, VFIOMIG_DEVICE_STATE_STOP), "%s: a saved device not in STOP",
			 stage_name[stage]);
		out_stream(&s, &ms);
		FZ_CHECK(ms.err == 0, "%s: the completed stream is refused: %s", stage_name[stage],
			 fz_errname(ms.err));
		fz_stream_free(&ms);
	} else {
		FZ_CHECK(device_is(&s, VFIOMIG_DEVICE_STATE_STOP) || failed,
			 "%s: the device left STOP", stage_name[stage]);
		k = vfiomig_mig_event(s.mig, VFIOMIG_EVENT_COMPLETED);
		FZ_CHECK(failed ? k == -ECANCELED : k == 0,
			 "%s: COMPLETED returned %s after %s", stage_name[stage], fz_errname(k),
			 failed ? "the destination failed" : "no failure");
		if (failed) {
			k = vfiomig_mig_vm_state(s.mig, VFIOMIG_VM_RUNNING);
			FZ_CHECK(k == 0 && device_is(&s, VFIOMIG_DEVICE_STATE_RUNNING),
				 "%s: the source device does not resume with its state (%s)",
				 stage_name[stage], fz_errname(k));
		}
	}
	src_teardown(&s);
}

void fz_target_run(const uint8_t *data, size_t size, struct fz_outcome *o)
{
	char text[sizeof(o->text)] = "";

	/* The complete stage first: it knows the LOADED that matches. */
	for (int st = NSTAGES - 1; st >= 0; st--)
		run_stage(data, size, (enum stage)st, text, sizeof(text));
	if (o)
		memcpy(o->text, text, sizeof(text));
}

size_t fz_target_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback)
{
	return fz_return_mutate(data, size, max, seed, fallback,
				have_good_loaded ? &good_loaded : NULL);
}

/* --------------------------------------------------- library-made seeds */

/*
 * What a real destination sends back after loading `stream` into a fresh
 * simulated device (vendor 0: the same IDs as the source's; else another
 * device, which refuses it), calling vfiomig_mig_return_send() after
 * every step as a VMM does; `phases` limits the loads (0: all).
 */
static int dest_replies(const char *dir, const char *name, const void *stream, size_t len,
			uint16_t vendor, int phases)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = quiet);
	VFIOMIG_OPTS(sim_device_opts, so, .state_size = STATE_PAGES * FZ_PAGE,
		     .migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
				  VFIOMIG_SIM_MIG_PRE_COPY,
		     .vendor_id = vendor);
	VFIOMIG_OPTS(mig_opts, mo);
	struct vfiomig_sim *sim = NULL;
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_sim_device *sd = NULL;
	struct vfiomig_device *dev = NULL;
	struct vfiomig_mig *m = NULL;
	struct vfiomig_stream *in = NULL, *rp = NULL;
	const void *p;
	size_t n;
	int ret;

	ret = vfiomig_sim_new(NULL, &sim);
	if (!ret)
		ret = vfiomig_sim_ctx_new(sim, &co, &ctx);
	if (!ret)
		ret = vfiomig_sim_device_add(sim, &so, &sd);
	if (!ret)
		ret = vfiomig_device_open(ctx, vfiomig_sim_device_name(sd), NULL, &dev);
	if (!ret)
		ret = vfiomig_mig_new(dev, VFIOMIG_ROLE_LOAD, &mo, &m);
	if (!ret)
		ret = vfiomig_stream_mem_fixed_new(ctx, (void *)stream, len,
						   VFIOMIG_STREAM_MEM_READ, &in);
	if (!ret)
		ret = vfiomig_stream_mem_new(ctx, &rp);
	if (ret)
		goto out;
	/* The load's own failures are what the seed is about: they go on the return path. */
	if (vfiomig_mig_load_setup(m, in) == 0)
		for (int ph = 0; !phases || ph < phases; ph++) {
			int k = vfiomig_mig_load(m, in);

			vfiomig_mig_return_send(m, rp);
			if (k <= 0)
				break;
		}
	vfiomig_mig_return_send(m, rp);
	ret = vfiomig_stream_mem_data(rp, &p, &n);
	if (!ret)
		ret = fz_write_file(dir, name, p, n);
out:
	if (ret)
		fprintf(stderr, "fuzz_return: %s: %d\n", name, ret);
	vfiomig_stream_free(rp);
	vfiomig_stream_free(in);
	vfiomig_mig_free(m);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
	vfiomig_sim_free(sim);
	return ret;
}

int fz_target_make_seeds(const char *dir)
{
	struct src s;
	const void *p;
	uint8_t *copy;
	size_t len;
	int ret;

	/* The very save the target's last stage makes, so LOADED matches it. */
	src_setup(&s, COMPLETE);
	FZ_CHECK(vfiomig_stream_mem_data(s.out, &p, &len) == 0, "vfiomig_stream_mem_data");
	copy = malloc(len);
	FZ_CHECK(copy != NULL, "out of memory");
	memcpy(copy, p, len);
	vfiomig_mig_cancel(s.mig, -ECANCELED, "making seeds"); /* completed: left as it is */
	src_teardown(&s);

	ret = dest_replies(dir, "dest-loaded.bin", copy, len, 0, 0) ||
	      dest_replies(dir, "dest-ack-only.bin", copy, len, 0, 1) ||
	      dest_replies(dir, "dest-failed-enodev.bin", copy, len, 0x8086, 0) ||
	      /* A stream cut short: the destination fails with -EPIPE after its ACK. */
	      dest_replies(dir, "dest-failed-epipe.bin", copy, len - 10, 0, 0);
	free(copy);
	return ret;
}
