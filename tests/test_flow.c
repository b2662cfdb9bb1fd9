/* SPDX-License-Identifier: MIT */
/*
 * The flow between two VMMs: the source resumes after a completed save,
 * the VMM's config reaches config_load only once verified, cancel travels
 * in-band (CANCEL) and failure travels back (the return path, with
 * switchover-ack and "loaded"), misuse is refused, one failing member
 * fails its whole set, and a stream read at the wrong point says so.
 * The last tests run source and destination as two processes over a
 * real socket.
 */
#include "testutil.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct simenv env;

static void setup(void)
{
	simenv_init(&env);
}

static void teardown(void)
{
	simenv_fini(&env);
}

TestSuite(flow, .init = setup, .fini = teardown);

#define SRC "0000:03:00.0"
#define DST "0000:04:00.0"
#define MIG_ALL (VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY)

struct side {
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_mig *m;
};

static void side_open(struct side *s, const char *name, uint32_t mig, uint64_t state)
{
	VFIOMIG_OPTS(sim_device_opts, so, .name = name, .migration = mig, .state_size = state);

	memset(s, 0, sizeof(*s));
	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &s->sd), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, name, NULL, &s->dev), 0, "%s", env.log.last_err);
}

static void side_mig(struct side *s, uint32_t role, const struct vfiomig_mig_opts *o)
{
	cr_assert_eq(vfiomig_mig_new(s->dev, role, o, &s->m), 0, "%s", env.log.last_err);
}

static void side_close(struct side *s)
{
	vfiomig_mig_free(s->m);
	vfiomig_device_close(s->dev);
}

/* The whole save into `out`: setup, one pre-copy round, stop, complete. */
static void save_all(struct side *s, struct vfiomig_stream *out)
{
	cr_assert_eq(vfiomig_mig_save_setup(s->m, out), 0, "%s", env.log.last_err);
	cr_assert_geq(vfiomig_mig_save_iterate(s->m, out, 0), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_vm_state(s->m, VFIOMIG_VM_STOPPED), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_save_complete(s->m, out), 0, "%s", env.log.last_err);
}

/* Load everything `in` holds; the first error, 0 when complete, 1 if more would follow. */
static int load_all(struct side *d, struct vfiomig_stream *in)
{
	int ret = vfiomig_mig_load_setup(d->m, in);

	while (ret == 0) {
		ret = vfiomig_mig_load(d->m, in);
		if (ret == 0)
			return 0;
		if (ret == 1 && vfiomig_stream_bytes_read(in) == vfiomig_stream_bytes_written(in))
			return 1;
		if (ret == 1)
			ret = 0;
	}
	return ret;
}

/* ---------------------------------------------- the source resumes */

Test(flow, source_resumes_with_its_state_after_a_completed_save)
{
	struct side s;
	struct vfiomig_stream *out;
	size_t len;
	void *before;

	side_open(&s, SRC, MIG_ALL, 256 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 64), 0);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &out), 0);
	save_all(&s, out);
	before = snapshot(s.sd, &len);
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_STOP);
	/* The destination failed after switchover: the VMM resumes the source VM. */
	cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_RUNNING), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING,
		     "resume after a completed save must resume the device");
	cr_assert(state_is(s.sd, before, len), "the resumed device kept its state");
	/* The migration is over, unsuccessfully: COMPLETED is refused. */
	cr_assert_eq(vfiomig_mig_event(s.m, VFIOMIG_EVENT_COMPLETED), -ECANCELED);
	cr_assert(strstr(env.log.last_err, "resumed"), "%s", env.log.last_err);
	free(before);
	vfiomig_stream_free(out);
	side_close(&s);
}

Test(flow, a_set_resumes_every_member_after_completed_saves)
{
	struct side s[2];
	struct vfiomig_stream *out[2];
	struct vfiomig_mig_set *set;

	side_open(&s[0], SRC, MIG_ALL, 64 << 10);
	side_open(&s[1], "0000:03:00.1", MIG_ALL, 64 << 10);
	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &set), 0);
	for (int i = 0; i < 2; i++) {
		side_mig(&s[i], VFIOMIG_ROLE_SAVE, NULL);
		cr_assert_eq(vfiomig_mig_set_add(set, s[i].m), 0);
		cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &out[i]), 0);
		cr_assert_eq(vfiomig_mig_save_setup(s[i].m, out[i]), 0);
	}
	cr_assert_eq(vfiomig_mig_set_vm_state(set, VFIOMIG_VM_STOPPED), 0, "%s", env.log.last_err);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(vfiomig_mig_save_complete(s[i].m, out[i]), 0);
	cr_assert_eq(vfiomig_mig_set_vm_state(set, VFIOMIG_VM_RUNNING), 0, "%s", env.log.last_err);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(vfiomig_sim_device_mig_state(s[i].sd), VFIOMIG_DEVICE_STATE_RUNNING,
			     "member %d", i);
		vfiomig_stream_free(out[i]);
		side_close(&s[i]);
	}
	vfiomig_mig_set_free(set);
}

/* ------------------------------------------------- verified config */

struct cfg {
	char data[48];
	char got[48];
	int calls;
	uint64_t load_bytes_at_call; /* stream bytes read when config_load ran */
	struct vfiomig_stream *in;
};

static int cfg_save(void *user, const void **data, size_t *len)
{
	struct cfg *c = user;

	*data = c->data;
	*len = sizeof(c->data);
	return 0;
}

static int cfg_load(void *user, const void *data, size_t len)
{
	struct cfg *c = user;

	c->calls++;
	if (len != sizeof(c->got))
		return -EINVAL;
	memcpy(c->got, data, len);
	c->load_bytes_at_call = c->in ? vfiomig_stream_bytes_read(c->in) : 0;
	return 0;
}

/* Save a stream with a config record; returns it (malloc'd) and its config record's offset. */
static unsigned char *stream_with_config(struct cfg *c, size_t *len, size_t *cfg_off)
{
	VFIOMIG_OPTS(mig_opts, so, .config_save = cfg_save, .config_user = c);
	struct side s;
	struct vfiomig_stream *out;
	const void *data;
	unsigned char *copy;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, &so);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &out), 0);
	save_all(&s, out);
	cr_assert_eq(vfiomig_stream_mem_data(out, &data, len), 0);
	copy = malloc(*len);
	cr_assert_not_null(copy);
	memcpy(copy, data, *len);
	/* The config record's body: our 48 bytes, which are unique in the stream. */
	*cfg_off = 0;
	for (size_t i = 0; i + sizeof(c->data) <= *len; i++)
		if (memcmp(copy + i, c->data, sizeof(c->data)) == 0)
			*cfg_off = i;
	cr_assert_gt(*cfg_off, 0);
	vfiomig_stream_free(out);
	side_close(&s);
	return copy;
}

static int load_into(struct side *d, struct cfg *c, unsigned char *buf, size_t len)
{
	VFIOMIG_OPTS(mig_opts, lo, .config_load = cfg_load, .config_user = c);
	struct vfiomig_stream *in;
	int ret;

	vfiomig_mig_free(d->m);
	d->m = NULL;
	side_mig(d, VFIOMIG_ROLE_LOAD, &lo);
	cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, buf, len, VFIOMIG_STREAM_MEM_READ, &in),
		     0);
	c->in = in;
	ret = load_all(d, in);
	c->in = NULL;
	vfiomig_stream_free(in);
	return ret;
}

Test(flow, config_load_sees_only_verified_bytes)
{
	struct cfg c = { .data = "PCI config shadow + MSI-X routing, 48 bytes...." };
	struct side d;
	size_t len, off;
	unsigned char *buf = stream_with_config(&c, &len, &off);

	side_open(&d, DST, MIG_ALL, 64 << 10);
	/* A flipped bit in the config record: the VMM never sees those bytes. */
	buf[off + 5] ^= 0x01;
	cr_assert_lt(load_into(&d, &c, buf, len), 0);
	cr_assert_eq(c.calls, 0, "config_load saw bytes of a stream that failed its CRC");
	cr_assert(strstr(env.log.last_err, "CRC32C") || strstr(env.log.last_err, "corrupt"), "%s",
		  env.log.last_err);
	/* The intact stream: config_load once, with the bytes, after the whole stream was read. */
	buf[off + 5] ^= 0x01;
	cr_assert_eq(load_into(&d, &c, buf, len), 0, "%s", env.log.last_err);
	cr_assert_eq(c.calls, 1);
	cr_assert_eq(memcmp(c.got, c.data, sizeof(c.data)), 0);
	cr_assert_eq(c.load_bytes_at_call, len, "config_load ran before the trailer was read");
	free(buf);
	side_close(&d);
}

Test(flow, a_destination_that_expects_config_refuses_a_stream_without_it)
{
	struct cfg c = { .data = "x" };
	struct side s, d;
	struct vfiomig_stream *out;
	const void *data;
	size_t len;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL); /* no config_save: no config record */
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &out), 0);
	save_all(&s, out);
	cr_assert_eq(vfiomig_stream_mem_data(out, &data, &len), 0);
	cr_assert_eq(load_into(&d, &c, (void *)data, len), -EBADMSG);
	cr_assert(strstr(env.log.last_err, "no VMM config"), "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), -ECANCELED);
	vfiomig_stream_free(out);
	side_close(&s);
	side_close(&d);
}

/* ------------------------------------------------------ cancel in-band */

enum phase { AFTER_SETUP, MID_PRECOPY, AT_STOPCOPY };

static void cancel_in(enum phase ph)
{
	struct side s, d;
	struct vfiomig_stream *wire;
	VFIOMIG_OPTS(stream_info, info);
	const void *data;
	size_t len, slen;
	void *before;
	int ret;

	side_open(&s, SRC, MIG_ALL, 128 << 10);
	side_open(&d, DST, MIG_ALL, 128 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 32), 0);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	if (ph >= MID_PRECOPY)
		cr_assert_geq(vfiomig_mig_save_iterate(s.m, wire, 32 << 10), 0);
	if (ph == AT_STOPCOPY)
		cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_STOPPED), 0);
	before = snapshot(s.sd, &slen);
	cr_assert_eq(vfiomig_mig_cancel(s.m, -EINTR, "the operator pressed ^C"), 0);
	/* The source is back: RUNNING (or STOP with the VM, then RUNNING), state intact. */
	if (ph == AT_STOPCOPY) {
		cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_STOP);
		cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_RUNNING), 0, "%s", env.log.last_err);
	}
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING);
	cr_assert(state_is(s.sd, before, slen));

	/* The destination learns why, instead of meeting a truncated stream. */
	env.log.errors = 0;
	ret = load_all(&d, wire);
	cr_assert_eq(ret, -ECANCELED, "phase %d: %d: %s", ph, ret, env.log.last_err);
	cr_assert_eq(env.log.errors, 1);
	cr_assert(strstr(env.log.last_err, "source cancelled") &&
			  strstr(env.log.last_err, "the operator pressed ^C"),
		  "%s", env.log.last_err);
	cr_assert_eq(vfiomig_sim_device_mig_state(d.sd), VFIOMIG_DEVICE_STATE_RUNNING,
		     "the destination was reset");
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), -ECANCELED);
	{
		char why[256];
		uint32_t origin;

		/* Whose failure, and the source's own words, without reading the log. */
		cr_assert_eq(vfiomig_mig_failure(d.m, &origin, why, sizeof(why)), -EINTR);
		cr_assert_eq(origin, VFIOMIG_FAILURE_PEER);
		cr_assert_str_eq(why, "the operator pressed ^C");
		cr_assert_eq(vfiomig_mig_failure(s.m, &origin, why, sizeof(why)), -EINTR);
		cr_assert_eq(origin, VFIOMIG_FAILURE_LOCAL);
		cr_assert_str_eq(why, "the operator pressed ^C");
	}
	/* inspect says the same. */
	cr_assert_eq(vfiomig_stream_mem_data(wire, &data, &len), 0);
	{
		struct vfiomig_stream *in;

		cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, (void *)data, len,
							  VFIOMIG_STREAM_MEM_READ, &in), 0);
		cr_assert_eq(vfiomig_stream_inspect(in, 0, &info, NULL, NULL), -ECANCELED);
		cr_assert_eq(info.cancelled, 1);
		cr_assert_eq(info.cancel_error, -EINTR);
		cr_assert_str_eq(info.cancel_reason, "the operator pressed ^C");
		vfiomig_stream_free(in);
	}
	free(before);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&d);
}

Test(flow, cancel_after_setup_reaches_the_destination) { cancel_in(AFTER_SETUP); }
Test(flow, cancel_mid_precopy_reaches_the_destination) { cancel_in(MID_PRECOPY); }
Test(flow, cancel_at_stopcopy_reaches_the_destination) { cancel_in(AT_STOPCOPY); }

Test(flow, a_source_device_failure_is_sent_to_the_destination)
{
	struct side s, d;
	struct vfiomig_stream *wire;

	side_open(&s, SRC, MIG_ALL, 256 << 10);
	side_open(&d, DST, MIG_ALL, 256 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_sim_device_fail_data(s.sd, 64 << 10, -EIO), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	cr_assert_eq(vfiomig_mig_save_iterate(s.m, wire, 0), -EIO);
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING);
	{
		char why[256];
		uint32_t origin;

		cr_assert_eq(vfiomig_mig_failure(s.m, &origin, why, sizeof(why)), -EIO);
		cr_assert_eq(origin, VFIOMIG_FAILURE_LOCAL);
		cr_assert(strstr(why, "data_fd"), "the ERR line: %s", why);
		cr_assert_eq(vfiomig_mig_failure(d.m, &origin, why, sizeof(why)), 0,
			     "the load has not failed yet");
	}
	cr_assert_eq(load_all(&d, wire), -ECANCELED, "%s", env.log.last_err);
	cr_assert(strstr(env.log.last_err, "data_fd"), "the source's own error line travelled: %s",
		  env.log.last_err);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&d);
}

/* A channel that breaks after k bytes: the source comes back, the destination never runs. */
struct breaking {
	struct vfiomig_stream *mem;
	size_t left;
};

static ssize_t brk_write(void *user, const void *buf, size_t len)
{
	struct breaking *b = user;

	if (!b->left)
		return -ECONNRESET;
	if (len > b->left)
		len = b->left;
	if (vfiomig_stream_write(b->mem, buf, len))
		return -EIO;
	b->left -= len;
	return (ssize_t)len;
}

Test(flow, a_channel_breaking_at_any_byte_keeps_both_rules)
{
	static const struct vfiomig_stream_ops ops = { .sz = sizeof(ops), .write = brk_write };
	struct side s, d;
	size_t complete_at = 0, k;
	unsigned runs = 0;

	side_open(&s, SRC, MIG_ALL, 32 << 10);
	side_open(&d, DST, MIG_ALL, 32 << 10);
	for (k = 0; !complete_at; k += 997, runs++) {
		struct breaking b = { .left = k };
		struct vfiomig_stream *out;
		size_t slen;
		void *before;
		int ret;

		cr_assert_eq(vfiomig_sim_device_run(s.sd, 8), 0);
		side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
		side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
		cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &b.mem), 0);
		cr_assert_eq(vfiomig_stream_new(env.ctx, &ops, &b, &out), 0);
		before = snapshot(s.sd, &slen);
		ret = vfiomig_mig_save_setup(s.m, out);
		if (!ret)
			ret = vfiomig_mig_save_iterate(s.m, out, 0) < 0 ? -1 : 0;
		if (!ret)
			ret = vfiomig_mig_vm_state(s.m, VFIOMIG_VM_STOPPED);
		if (!ret)
			ret = vfiomig_mig_save_complete(s.m, out);
		if (ret) {
			/* The VMM resumes its VM; the device follows, with its state. */
			cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_RUNNING), 0);
			cr_assert_eq(vfiomig_sim_device_mig_state(s.sd),
				     VFIOMIG_DEVICE_STATE_RUNNING, "k=%zu", k);
			cr_assert(state_is(s.sd, before, slen), "k=%zu: source state changed", k);
			/* What got through never makes a destination that may run. */
			cr_assert_lt(load_all(&d, b.mem), 0, "k=%zu", k);
			cr_assert_neq(vfiomig_sim_device_mig_state(d.sd),
				      VFIOMIG_DEVICE_STATE_RESUMING, "k=%zu", k);
			cr_assert_lt(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), 0, "k=%zu", k);
		} else {
			complete_at = k;
			cr_assert_eq(load_all(&d, b.mem), 0, "k=%zu: %s", k, env.log.last_err);
			cr_assert(same_state(s.sd, d.sd));
		}
		free(before);
		vfiomig_stream_free(out);
		vfiomig_stream_free(b.mem);
		vfiomig_mig_free(s.m);
		vfiomig_mig_free(d.m);
		s.m = d.m = NULL;
	}
	cr_assert_gt(complete_at, 32 << 10);
	cr_assert_gt(runs, 30);
	side_close(&s);
	side_close(&d);
}

/* ------------------------------------------------------ the return path */

/* CRC32C from its definition, one bit at a time (to build messages by hand). */
static uint32_t crc32c_bitwise(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint32_t crc = 0xffffffffu;

	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = crc & 1 ? (crc >> 1) ^ 0x82f63b78u : crc >> 1;
	}
	return crc ^ 0xffffffffu;
}

Test(flow, return_path_ack_then_loaded)
{
	VFIOMIG_OPTS(mig_opts, so, .flags = VFIOMIG_MIG_F_SWITCHOVER_ACK);
	VFIOMIG_OPTS(return_msg, msg);
	struct side s, d;
	struct vfiomig_stream *wire, *rp;
	int ret, rounds = 0;

	side_open(&s, SRC, MIG_ALL, 256 << 10);
	side_open(&d, DST, MIG_ALL, 256 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 64), 0);
	side_mig(&s, VFIOMIG_ROLE_SAVE, &so);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &rp), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, wire), 0);
	cr_assert_eq(vfiomig_mig_return_send(d.m, rp), 0, "nothing is due yet");
	cr_assert_eq(vfiomig_mig_switchover_ready(s.m), 0);
	do {
		ret = vfiomig_mig_save_iterate(s.m, wire, 64 << 10);
		cr_assert_geq(ret, 0);
		cr_assert_eq(vfiomig_mig_load(d.m, wire), 1);
		rounds++;
		/* Sent all initial data, but not acknowledged: not ready yet. */
		if (vfiomig_mig_initial_data_sent(s.m))
			cr_assert_eq(vfiomig_mig_switchover_ready(s.m), 0);
	} while (vfiomig_mig_return_send(d.m, rp) == 0);
	cr_assert(vfiomig_mig_initial_data_sent(s.m), "the ACK follows INIT_DATA_SENT");
	cr_assert_eq(vfiomig_mig_return_recv(s.m, rp, &msg), 0, "%s", env.log.last_err);
	cr_assert_eq(msg.type, VFIOMIG_RETURN_SWITCHOVER_ACK);
	cr_assert_eq(msg.bytes, vfiomig_stream_bytes_read(wire), "acked what it had loaded");
	cr_assert_eq(vfiomig_mig_switchover_ready(s.m), 1);
	cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_STOPPED), 0);
	cr_assert_eq(vfiomig_mig_save_complete(s.m, wire), 0);
	cr_assert_eq(vfiomig_mig_load(d.m, wire), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_return_send(d.m, rp), 1);
	cr_assert_eq(vfiomig_mig_return_send(d.m, rp), 0, "each message once");
	cr_assert_eq(vfiomig_mig_return_recv(s.m, rp, &msg), 0, "%s", env.log.last_err);
	cr_assert_eq(msg.type, VFIOMIG_RETURN_LOADED);
	cr_assert_eq(msg.bytes, vfiomig_stream_bytes_written(wire));
	cr_assert_eq(vfiomig_mig_return_recv(s.m, rp, &msg), -ENODATA);
	cr_assert_eq(vfiomig_mig_event(s.m, VFIOMIG_EVENT_COMPLETED), 0);
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), 0);
	cr_assert(same_state(s.sd, d.sd));
	vfiomig_stream_free(wire);
	vfiomig_stream_free(rp);
	side_close(&s);
	side_close(&d);
}

/* A destination that refuses: FAILED with its reason; the source resumes. */
static void refused(bool during_precopy)
{
	VFIOMIG_OPTS(return_msg, msg);
	VFIOMIG_OPTS(sim_device_opts, so, .name = DST, .migration = MIG_ALL,
		     .state_size = 64 << 10, .vendor_id = 0x8086);
	struct side s, d;
	struct vfiomig_stream *wire, *rp;
	size_t slen;
	void *before;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	/* Another kind of device: the destination refuses the header. */
	memset(&d, 0, sizeof(d));
	cr_assert_eq(vfiomig_sim_device_add(env.sim, &so, &d.sd), 0);
	cr_assert_eq(vfiomig_device_open(env.ctx, DST, NULL, &d.dev), 0);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &rp), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	if (!during_precopy) {
		cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_STOPPED), 0);
		cr_assert_eq(vfiomig_mig_save_complete(s.m, wire), 0);
	}
	before = snapshot(s.sd, &slen);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, wire), -ENODEV);
	cr_assert_eq(vfiomig_mig_return_send(d.m, rp), 1);
	cr_assert_eq(vfiomig_mig_return_send(d.m, rp), 0);

	cr_assert_eq(vfiomig_mig_return_recv(s.m, rp, &msg), 0, "%s", env.log.last_err);
	cr_assert_eq(msg.type, VFIOMIG_RETURN_FAILED);
	cr_assert_eq(msg.error, -ENODEV);
	{
		char why[256];
		uint32_t origin;

		cr_assert_eq(vfiomig_mig_failure(s.m, &origin, why, sizeof(why)), -ENODEV);
		cr_assert_eq(origin, VFIOMIG_FAILURE_PEER);
		cr_assert_str_eq(why, msg.reason);
	}
	cr_assert(strstr(msg.reason, "8086"), "the destination's reason travelled: %s",
		  msg.reason);
	if (during_precopy) {
		/* The save failed at once: device back, running. */
		cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING);
		cr_assert_eq(vfiomig_mig_save_iterate(s.m, wire, 0), -ECANCELED);
	} else {
		cr_assert_eq(vfiomig_mig_event(s.m, VFIOMIG_EVENT_COMPLETED), -ECANCELED);
		cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_RUNNING), 0);
		cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING);
	}
	cr_assert(state_is(s.sd, before, slen));
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), -ECANCELED);
	free(before);
	vfiomig_stream_free(wire);
	vfiomig_stream_free(rp);
	side_close(&s);
	side_close(&d);
}

Test(flow, destination_refusal_travels_back_during_precopy) { refused(true); }
Test(flow, destination_refusal_travels_back_after_stopcopy) { refused(false); }

/* Return messages are checked like the stream: corrupt, foreign, unknown. */
Test(flow, return_path_messages_are_checked)
{
	VFIOMIG_OPTS(return_msg, msg);
	struct side s, d, d2;
	struct vfiomig_stream *wire, *wire2, *rp;
	const void *data;
	unsigned char *copy;
	size_t len;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	side_open(&d2, "0000:05:00.0", MIG_ALL, 64 << 10);
	{
		/* No pre-copy: the destination's only message is LOADED. */
		VFIOMIG_OPTS(mig_opts, so, .flags = VFIOMIG_MIG_F_NO_PRECOPY);

		side_mig(&s, VFIOMIG_ROLE_SAVE, &so);
	}
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &rp), 0);
	save_all(&s, wire);
	cr_assert_eq(load_all(&d, wire), 0);
	cr_assert_eq(vfiomig_mig_return_send(d.m, rp), 1);
	cr_assert_eq(vfiomig_stream_mem_data(rp, &data, &len), 0);
	copy = malloc(len);
	cr_assert_not_null(copy);
	memcpy(copy, data, len);

	/* A flipped bit anywhere in the message. */
	for (size_t i = 0; i < len; i++) {
		struct vfiomig_stream *in;

		copy[i] ^= 0x04;
		cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, copy, len,
							  VFIOMIG_STREAM_MEM_READ, &in), 0);
		cr_assert_lt(vfiomig_mig_return_recv(s.m, in, &msg), 0, "bit flip at %zu", i);
		vfiomig_stream_free(in);
		copy[i] ^= 0x04;
	}
	/* Truncated. */
	{
		struct vfiomig_stream *in;

		cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, copy, len - 3,
							  VFIOMIG_STREAM_MEM_READ, &in), 0);
		cr_assert_eq(vfiomig_mig_return_recv(s.m, in, &msg), -EPIPE);
		vfiomig_stream_free(in);
	}
	/* LOADED of another stream (a second, different save). */
	{
		struct side s2;
		struct vfiomig_stream *rp2;

		side_open(&s2, "0000:06:00.0", MIG_ALL, 64 << 10);
		cr_assert_eq(vfiomig_sim_device_run(s2.sd, 3), 0);
		VFIOMIG_OPTS(mig_opts, so2, .flags = VFIOMIG_MIG_F_NO_PRECOPY);

		side_mig(&s2, VFIOMIG_ROLE_SAVE, &so2);
		side_mig(&d2, VFIOMIG_ROLE_LOAD, NULL);
		cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire2), 0);
		cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &rp2), 0);
		save_all(&s2, wire2);
		cr_assert_eq(load_all(&d2, wire2), 0);
		cr_assert_eq(vfiomig_mig_return_send(d2.m, rp2), 1);
		cr_assert_eq(vfiomig_mig_return_recv(s.m, rp2, &msg), -EBADMSG);
		cr_assert(strstr(env.log.last_err, "not this stream"), "%s", env.log.last_err);
		vfiomig_stream_free(rp2);
		vfiomig_stream_free(wire2);
		side_close(&s2);
	}
	/* The right message still works, after an unknown one from a newer destination. */
	{
		static const unsigned char unknown[] = {
			0xff, 0xff, 0xff, 0xff, 0xef, 0x12, 0x00, 0x77, 0, 0, 0, 2, 0xab, 0xcd,
			0x00, 0x00, 0x00, 0x00, /* CRC, filled below */
		};
		unsigned char both[sizeof(unknown) + 256];
		struct vfiomig_stream *in;

		cr_assert_leq(len, 256);
		memcpy(both, unknown, sizeof(unknown));
		{
			uint32_t c = crc32c_bitwise(both, sizeof(unknown) - 4);

			both[14] = (unsigned char)(c >> 24);
			both[15] = (unsigned char)(c >> 16);
			both[16] = (unsigned char)(c >> 8);
			both[17] = (unsigned char)c;
		}
		memcpy(both + sizeof(unknown), copy, len);
		cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, both, sizeof(unknown) + len,
							  VFIOMIG_STREAM_MEM_READ, &in), 0);
		cr_assert_eq(vfiomig_mig_return_recv(s.m, in, &msg), 0, "%s", env.log.last_err);
		cr_assert_eq(msg.type, VFIOMIG_RETURN_LOADED);
		vfiomig_stream_free(in);
	}
	cr_assert_eq(vfiomig_mig_return_send(s.m, rp), -EINVAL, "the source does not send");
	cr_assert_eq(vfiomig_mig_return_recv(d.m, rp, &msg), -EINVAL, "the destination does not "
		     "receive");
	free(copy);
	vfiomig_stream_free(wire);
	vfiomig_stream_free(rp);
	side_close(&s);
	side_close(&d);
	side_close(&d2);
}

/* ------------------------------------------------------------- misuse */

Test(flow, misuse_is_refused_with_a_reason)
{
	struct side s, d;
	struct vfiomig_mig *m2;
	struct vfiomig_stream *wire;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	/* Two migrations of one device, of either role. */
	cr_assert_eq(vfiomig_mig_new(s.dev, VFIOMIG_ROLE_SAVE, NULL, &m2), -EBUSY);
	cr_assert(strstr(env.log.last_err, "already has a save migration"), "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_new(s.dev, VFIOMIG_ROLE_LOAD, NULL, &m2), -EBUSY);
	/* Once freed, a new one may come. */
	vfiomig_mig_free(s.m);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	/* A destination may not run before or after a failed load. */
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), -EINVAL);
	cr_assert(strstr(env.log.last_err, "nothing has been loaded"), "%s", env.log.last_err);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_stream_write(wire, "not a stream, not at all", 24), 0);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, wire), -EBADMSG);
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), -ECANCELED);
	cr_assert(strstr(env.log.last_err, "must not run"), "%s", env.log.last_err);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&d);
}

/* One member fails: the set fails, every member comes back, none runs on the destination. */
Test(flow, one_failing_member_fails_the_whole_set)
{
	struct side s[2], d[2];
	struct vfiomig_stream *wire[2];
	struct vfiomig_mig_set *ss, *ds;
	void *before[2];
	size_t len[2];

	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &ss), 0);
	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &ds), 0);
	for (int i = 0; i < 2; i++) {
		char sname[16], dname[16];

		snprintf(sname, sizeof(sname), "0000:03:00.%d", i);
		snprintf(dname, sizeof(dname), "0000:04:00.%d", i);
		side_open(&s[i], sname, MIG_ALL, 128 << 10);
		side_open(&d[i], dname, MIG_ALL, 128 << 10);
		cr_assert_eq(vfiomig_sim_device_run(s[i].sd, 16), 0);
		side_mig(&s[i], VFIOMIG_ROLE_SAVE, NULL);
		side_mig(&d[i], VFIOMIG_ROLE_LOAD, NULL);
		cr_assert_eq(vfiomig_mig_set_add(ss, s[i].m), 0);
		cr_assert_eq(vfiomig_mig_set_add(ds, d[i].m), 0);
		cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire[i]), 0);
		cr_assert_eq(vfiomig_mig_save_setup(s[i].m, wire[i]), 0);
		cr_assert_eq(vfiomig_mig_load_setup(d[i].m, wire[i]), 0);
		before[i] = snapshot(s[i].sd, &len[i]);
	}
	/* Member 1's device fails a read in the next round. */
	cr_assert_eq(vfiomig_sim_device_fail_data(s[1].sd, 0, -EIO), 0);
	cr_assert_geq(vfiomig_mig_save_iterate(s[0].m, wire[0], 32 << 10), 0);
	cr_assert_eq(vfiomig_mig_save_iterate(s[1].m, wire[1], 32 << 10), -EIO);
	for (int i = 0; i < 2; i++) {
		cr_assert_eq(vfiomig_sim_device_mig_state(s[i].sd), VFIOMIG_DEVICE_STATE_RUNNING,
			     "source member %d is back", i);
		cr_assert(state_is(s[i].sd, before[i], len[i]));
	}
	cr_assert_eq(vfiomig_mig_save_iterate(s[0].m, wire[0], 0), -ECANCELED,
		     "the healthy member failed with its set");
	cr_assert_eq(vfiomig_mig_set_event(ss, VFIOMIG_EVENT_COMPLETED), -ECANCELED);

	/* The destination: member 0 loads its round, member 1 meets the CANCEL. */
	cr_assert_eq(vfiomig_mig_load(d[0].m, wire[0]), 1);
	cr_assert_eq(vfiomig_mig_load(d[1].m, wire[1]), -ECANCELED);
	for (int i = 0; i < 2; i++)
		cr_assert_eq(vfiomig_sim_device_mig_state(d[i].sd), VFIOMIG_DEVICE_STATE_RUNNING,
			     "destination member %d was reset", i);
	cr_assert_eq(vfiomig_mig_set_vm_state(ds, VFIOMIG_VM_RUNNING), -ECANCELED);
	for (int i = 0; i < 2; i++) {
		free(before[i]);
		vfiomig_stream_free(wire[i]);
		side_close(&s[i]);
		side_close(&d[i]);
	}
	vfiomig_mig_set_free(ss);
	vfiomig_mig_set_free(ds);
}

/* ---------------------------------------- a stream read at the wrong point */

Test(flow, a_stream_read_at_the_wrong_point_says_so)
{
	struct side s, s2, d;
	struct vfiomig_stream *wire;
	unsigned char hdr[64];
	const void *data;
	size_t len;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&s2, "0000:03:00.1", MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&s2, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	cr_assert_eq(vfiomig_stream_mem_data(wire, &data, &len), 0);
	/* The VMM read the header itself before load_setup (its length is at offset 12). */
	cr_assert_eq(vfiomig_stream_read(wire, hdr, 16), 0);
	cr_assert_lt((size_t)hdr[15], sizeof(hdr));
	cr_assert_eq(vfiomig_stream_read(wire, hdr + 16, (size_t)hdr[15] - 16), 0);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, wire), -EBADMSG);
	cr_assert(strstr(env.log.last_err, "wrong point"), "%s", env.log.last_err);

	/* Two setups written into one channel: the second header where a record should be. */
	vfiomig_mig_free(d.m);
	d.m = NULL;
	vfiomig_stream_free(wire);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	vfiomig_mig_free(s.m);
	s.m = NULL;
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s2.m, wire), 0);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, wire), 0);
	cr_assert_eq(vfiomig_mig_load(d.m, wire), -EBADMSG);
	cr_assert(strstr(env.log.last_err, "a second stream begins here"), "%s", env.log.last_err);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&s2);
	side_close(&d);
}

/* ------------------------------------------------- two processes, one socket */

/*
 * The destination VMM, in a child process with a simulator of its own:
 * loads phase by phase from the socket, answers on the same socket, and
 * reports its device state's checksum on `report`. Exit status: 0 loaded,
 * 1 the load failed (FAILED was sent), 2 something else broke.
 */
static uint64_t fnv(const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t h = 0xcbf29ce484222325ull;

	while (len--)
		h = (h ^ *b++) * 0x100000001b3ull;
	return h;
}

struct child_cfg {
	uint16_t vendor;   /* the destination device's vendor ID */
	bool die_at_stop;  /* exit without a word once the pre-copy is loaded */
};

static int destination(int sock, int report, const struct child_cfg *cc)
{
	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct vfiomig_sim_device *sd;
	struct vfiomig_device *dev;
	struct vfiomig_mig *m;
	struct vfiomig_stream *in, *rp;
	VFIOMIG_OPTS(sim_device_opts, so, .name = DST, .migration = MIG_ALL,
		     .state_size = 256 << 10, .vendor_id = cc->vendor);
	VFIOMIG_OPTS(ctx_opts, co, .log_priority = VFIOMIG_LOG_ERR);
	uint64_t sum;
	size_t len;
	int ret;

	if (vfiomig_sim_new(NULL, &sim) || vfiomig_sim_ctx_new(sim, &co, &ctx) ||
	    vfiomig_sim_device_add(sim, &so, &sd) || vfiomig_device_open(ctx, DST, NULL, &dev) ||
	    vfiomig_mig_new(dev, VFIOMIG_ROLE_LOAD, NULL, &m) ||
	    vfiomig_stream_fd_new(ctx, sock, 0, &in) || vfiomig_stream_fd_new(ctx, sock, 0, &rp))
		return 2;
	ret = vfiomig_mig_load_setup(m, in);
	while (ret >= 0) {
		if (vfiomig_mig_return_send(m, rp) < 0)
			return 2;
		if (vfiomig_mig_initial_data_sent(m) && cc->die_at_stop)
			_exit(3); /* killed, as far as the source can tell */
		ret = vfiomig_mig_load(m, in);
		if (ret == 0)
			break;
	}
	if (vfiomig_mig_return_send(m, rp) < 0)
		return 2;
	if (ret < 0)
		return 1;
	if (vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING))
		return 2;
	{
		const void *st = vfiomig_sim_device_state(sd, &len);

		sum = fnv(st, len);
	}
	if (write(report, &sum, sizeof(sum)) != sizeof(sum))
		return 2;
	return 0;
}

static pid_t spawn_destination(int sock[2], int rep[2], const struct child_cfg *cc)
{
	pid_t pid;

	cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock), 0);
	cr_assert_eq(pipe2(rep, O_CLOEXEC), 0);
	pid = fork();
	cr_assert_geq(pid, 0);
	if (pid == 0) {
		close(sock[0]);
		close(rep[0]);
		_exit(destination(sock[1], rep[1], cc));
	}
	close(sock[1]);
	close(rep[1]);
	return pid;
}

static int child_status(pid_t pid)
{
	int st;

	cr_assert_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Is a return-path message waiting on the socket? */
static bool readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };

	return poll(&pfd, 1, 0) == 1;
}

/*
 * The source VMM: pre-copy until switchover-ack, stop, complete, wait for
 * LOADED or FAILED. It looks at the return path between rounds (a VMM's
 * event loop would poll it), and after a failure reads what the
 * destination had to say: its FAILED explains a broken channel.
 */
static int source(struct side *s, int sock, struct vfiomig_return_msg *last)
{
	VFIOMIG_OPTS(mig_opts, o, .flags = VFIOMIG_MIG_F_SWITCHOVER_ACK);
	struct vfiomig_stream *out, *rp;
	int ret, rounds = 0;

	side_mig(s, VFIOMIG_ROLE_SAVE, &o);
	cr_assert_eq(vfiomig_stream_fd_new(env.ctx, sock, 0, &out), 0);
	cr_assert_eq(vfiomig_stream_fd_new(env.ctx, sock, 0, &rp), 0);
	ret = vfiomig_mig_save_setup(s->m, out);
	while (!ret && vfiomig_mig_switchover_ready(s->m) == 0 && rounds++ < 256) {
		cr_assert_eq(vfiomig_sim_device_run(s->sd, 4), 0);
		ret = vfiomig_mig_save_iterate(s->m, out, 64 << 10);
		ret = ret < 0 ? ret : 0;
		while (!ret && (readable(sock) || vfiomig_mig_initial_data_sent(s->m))) {
			ret = vfiomig_mig_return_recv(s->m, rp, last);
			if (!ret && last->type == VFIOMIG_RETURN_FAILED)
				ret = last->error;
			if (vfiomig_mig_switchover_ready(s->m))
				break;
		}
	}
	if (!ret)
		ret = vfiomig_mig_vm_state(s->m, VFIOMIG_VM_STOPPED);
	if (!ret)
		ret = vfiomig_mig_save_complete(s->m, out);
	if (!ret) {
		ret = vfiomig_mig_return_recv(s->m, rp, last);
		if (!ret && last->type != VFIOMIG_RETURN_LOADED)
			ret = last->error ? last->error : -EPROTO;
	}
	if (ret && last->type != VFIOMIG_RETURN_FAILED) {
		/* Why did it break? The destination may have said so before it went. */
		while (vfiomig_mig_return_recv(s->m, rp, last) == 0)
			if (last->type == VFIOMIG_RETURN_FAILED) {
				ret = last->error;
				break;
			}
	}
	if (ret)
		cr_assert_eq(vfiomig_mig_vm_state(s->m, VFIOMIG_VM_RUNNING), 0, "%s",
			     env.log.last_err);
	else
		cr_assert_eq(vfiomig_mig_event(s->m, VFIOMIG_EVENT_COMPLETED), 0);
	vfiomig_stream_free(out);
	vfiomig_stream_free(rp);
	return ret;
}

Test(flow, two_processes_over_a_socket)
{
	VFIOMIG_OPTS(return_msg, last);
	struct child_cfg cc = { .vendor = 0 };
	struct side s;
	int sock[2], rep[2];
	uint64_t sum;
	size_t len;
	pid_t pid;

	side_open(&s, SRC, MIG_ALL, 256 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 64), 0);
	pid = spawn_destination(sock, rep, &cc);
	cr_assert_eq(source(&s, sock[0], &last), 0, "%s", env.log.last_err);
	cr_assert_eq(last.type, VFIOMIG_RETURN_LOADED);
	cr_assert_eq(read(rep[0], &sum, sizeof(sum)), (ssize_t)sizeof(sum));
	{
		const void *st = vfiomig_sim_device_state(s.sd, &len);

		cr_assert_eq(sum, fnv(st, len), "the destination process holds the source's state");
	}
	cr_assert_eq(child_status(pid), 0);
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_STOP);
	close(sock[0]);
	close(rep[0]);
	side_close(&s);
}

Test(flow, two_processes_destination_refuses)
{
	VFIOMIG_OPTS(return_msg, last);
	struct child_cfg cc = { .vendor = 0x8086 };
	struct side s;
	int sock[2], rep[2];
	size_t slen;
	void *before;
	pid_t pid;

	side_open(&s, SRC, MIG_ALL, 256 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 64), 0);
	before = snapshot(s.sd, &slen);
	pid = spawn_destination(sock, rep, &cc);
	cr_assert_eq(source(&s, sock[0], &last), -ENODEV, "%s", env.log.last_err);
	cr_assert_eq(last.type, VFIOMIG_RETURN_FAILED);
	cr_assert(strstr(last.reason, "8086"), "%s", last.reason);
	cr_assert_eq(child_status(pid), 1);
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING);
	free(before);
	close(sock[0]);
	close(rep[0]);
	side_close(&s);
}

Test(flow, two_processes_destination_dies)
{
	VFIOMIG_OPTS(return_msg, last);
	struct child_cfg cc = { .die_at_stop = true };
	struct side s;
	int sock[2], rep[2], ret;
	size_t slen;
	void *before;
	pid_t pid;

	side_open(&s, SRC, MIG_ALL, 256 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 64), 0);
	pid = spawn_destination(sock, rep, &cc);
	ret = source(&s, sock[0], &last);
	cr_assert_lt(ret, 0, "a dead destination cannot be a success");
	cr_assert_eq(child_status(pid), 3);
	cr_assert_eq(vfiomig_sim_device_mig_state(s.sd), VFIOMIG_DEVICE_STATE_RUNNING);
	/* Whatever the device did before the save failed is kept: compare with now. */
	before = snapshot(s.sd, &slen);
	cr_assert(state_is(s.sd, before, slen));
	free(before);
	close(sock[0]);
	close(rep[0]);
	side_close(&s);
}

/* A corrupt marker is called corrupt, not "from a newer library". */
Test(flow, eight_bytes_outside_the_marker_space_are_corruption)
{
	struct side s, d;
	struct vfiomig_stream *wire, *in;
	const void *data;
	unsigned char *copy;
	size_t len;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	save_all(&s, wire);
	cr_assert_eq(vfiomig_stream_mem_data(wire, &data, &len), 0);
	copy = malloc(len);
	cr_assert_not_null(copy);
	memcpy(copy, data, len);
	/* The setup marker (after the header) with its top bit flipped. */
	{
		size_t hlen = (size_t)copy[12] << 24 | (size_t)copy[13] << 16 |
			      (size_t)copy[14] << 8 | copy[15];

		cr_assert_eq(copy[hlen], 0xff);
		copy[hlen] ^= 0x10;
	}
	cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, copy, len, VFIOMIG_STREAM_MEM_READ,
						  &in), 0);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, in), -EBADMSG);
	cr_assert(strstr(env.log.last_err, "is not a record marker: corrupt stream"), "%s",
		  env.log.last_err);
	vfiomig_stream_free(in);
	free(copy);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&d);
}

/* A load that completed but whose VM never ran is reset by a cancel; one that runs is not. */
Test(flow, cancel_after_a_complete_load_resets_until_the_vm_runs)
{
	struct side s, d;
	struct vfiomig_stream *wire;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 4), 0);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	save_all(&s, wire);
	cr_assert_eq(load_all(&d, wire), 0);
	cr_assert(same_state(s.sd, d.sd));
	cr_assert_eq(vfiomig_mig_cancel(d.m, -ECANCELED, "the destination VM failed to start"),
		     0);
	cr_assert_eq(vfiomig_sim_device_mig_state(d.sd), VFIOMIG_DEVICE_STATE_RUNNING);
	cr_assert(!same_state(s.sd, d.sd), "the reset dropped the migrated state");
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), -ECANCELED);
	vfiomig_stream_free(wire);
	vfiomig_mig_free(s.m);
	vfiomig_mig_free(d.m);
	s.m = d.m = NULL;

	/* Again, but the destination VM runs first: a late cancel leaves it alone. */
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	side_mig(&d, VFIOMIG_ROLE_LOAD, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_mig_vm_state(s.m, VFIOMIG_VM_RUNNING), 0);
	save_all(&s, wire);
	cr_assert_eq(load_all(&d, wire), 0);
	cr_assert_eq(vfiomig_mig_vm_state(d.m, VFIOMIG_VM_RUNNING), 0);
	cr_assert_eq(vfiomig_mig_cancel(d.m, -ECANCELED, "too late"), 0);
	cr_assert(same_state(s.sd, d.sd), "a running destination keeps its state");
	cr_assert_eq(vfiomig_mig_failure(d.m, NULL, NULL, 0), 0);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&d);
}

#if defined(TESTUTIL_HEAP_COUNT)
/*
 * A stream of a few hundred bytes whose config record claims 64 MiB: the
 * loader holds memory for the bytes that arrive, not for the claim (it
 * allocated the whole claim before reading a byte of it).
 */
Test(flow, a_config_record_claiming_more_than_the_stream_holds_costs_what_arrives)
{
	VFIOMIG_OPTS(mig_opts, lo, .config_load = cfg_load);
	struct cfg c = { .data = "x" };
	struct side s, d;
	struct vfiomig_stream *wire, *in;
	unsigned char *buf;
	const void *data;
	size_t len, setup_end, hlen;
	long base;

	side_open(&s, SRC, MIG_ALL, 64 << 10);
	side_open(&d, DST, MIG_ALL, 64 << 10);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	cr_assert_eq(vfiomig_stream_mem_new(env.ctx, &wire), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, wire), 0);
	cr_assert_eq(vfiomig_stream_mem_data(wire, &data, &len), 0);
	/* Header + setup phase, then: PRECOPY_STATE, DEV_CONFIG_STATE claiming 64 MiB, 100 bytes. */
	setup_end = len;
	buf = calloc(1, setup_end + 8 + 8 + 8 + 100);
	cr_assert_not_null(buf);
	memcpy(buf, data, setup_end);
	{
		static const unsigned char pre[8] = { 0xff, 0xff, 0xff, 0xff, 0xef, 0x10, 0x00, 0x10 };
		static const unsigned char cfgm[8] = { 0xff, 0xff, 0xff, 0xff, 0xef, 0x10, 0x00, 0x02 };
		static const unsigned char size[8] = { 0, 0, 0, 0, 0x04, 0, 0, 0 }; /* 64 MiB */

		memcpy(buf + setup_end, pre, 8);
		memcpy(buf + setup_end + 8, cfgm, 8);
		memcpy(buf + setup_end + 16, size, 8);
		memset(buf + setup_end + 24, 0x5a, 100);
	}
	len = setup_end + 24 + 100;
	hlen = (size_t)buf[15];
	cr_assert_lt(hlen, setup_end);
	lo.config_user = &c;
	side_mig(&d, VFIOMIG_ROLE_LOAD, &lo);
	cr_assert_eq(vfiomig_stream_mem_fixed_new(env.ctx, buf, len, VFIOMIG_STREAM_MEM_READ, &in),
		     0);
	cr_assert_eq(vfiomig_mig_load_setup(d.m, in), 0, "%s", env.log.last_err);
	base = heap_in_use();
	heap_peak_reset();
	cr_assert_eq(vfiomig_mig_load(d.m, in), -EPIPE, "%s", env.log.last_err);
	cr_assert_lt(heap_peak_since(base), 1 << 20,
		     "loading 100 bytes of a claimed 64 MiB record took %ld bytes of heap",
		     heap_peak_since(base));
	cr_assert_eq(c.calls, 0);
	vfiomig_stream_free(in);
	free(buf);
	vfiomig_stream_free(wire);
	side_close(&s);
	side_close(&d);
}
#endif

/* ------------------------------------------------- when to stop the VM */

Test(flow, stop_advice_says_stalled_when_the_dirty_data_stops_shrinking)
{
	struct side s;
	struct vfiomig_stream *out;
	uint64_t ns = 1;
	int a, rounds = 0;

	side_open(&s, SRC, MIG_ALL, 1 << 20);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &out), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, out), 0, "%s", env.log.last_err);
	/* Before any round: no rate yet, so no downtime can be promised. */
	cr_assert_eq(vfiomig_mig_stop_advice(s.m, 1000, &ns), VFIOMIG_ADVICE_CONTINUE);
	cr_assert_eq(ns, 0);
	/* The guest dirties 32 pages between rounds, every round: the rest never shrinks. */
	do {
		cr_assert_eq(vfiomig_sim_device_run(s.sd, 32), 0);
		cr_assert_geq(vfiomig_mig_save_iterate(s.m, out, 0), 0, "%s", env.log.last_err);
		/* A limit nothing meets: only the stall can stop it. */
		a = vfiomig_mig_stop_advice(s.m, 0, &ns);
		rounds++;
	} while (a == VFIOMIG_ADVICE_CONTINUE && rounds < 20);
	cr_assert_eq(a, VFIOMIG_ADVICE_STALLED, "advice %d after %d rounds", a, rounds);
	/* Round 1 sends the initial data and sets the smallest rest; 3 flat rounds follow. */
	cr_assert_eq(rounds, 1 + 3, "stalled after %d rounds", rounds);
	cr_assert_gt(ns, 0, "a rate was measured");
	/* A generous limit: the same state fits. */
	cr_assert_eq(vfiomig_mig_stop_advice(s.m, UINT32_MAX, NULL), VFIOMIG_ADVICE_FITS);
	vfiomig_stream_free(out);
	side_close(&s);
}

Test(flow, stop_advice_fits_once_the_rest_moves_within_the_limit)
{
	VFIOMIG_OPTS(mig_pending, p);
	struct side s;
	struct vfiomig_stream *out;
	uint64_t ns;
	long double expect;

	side_open(&s, SRC, MIG_ALL, 1 << 20);
	side_mig(&s, VFIOMIG_ROLE_SAVE, NULL);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &out), 0);
	cr_assert_eq(vfiomig_mig_save_setup(s.m, out), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 256), 0);
	cr_assert_geq(vfiomig_mig_save_iterate(s.m, out, 0), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_sim_device_run(s.sd, 4), 0);
	cr_assert_eq(vfiomig_mig_save_pending(s.m, &p), 0);
	cr_assert_gt(p.bandwidth, 0);
	/* The expected downtime is what is left at the measured rate. */
	expect = (long double)(p.stopcopy ? p.stopcopy : p.precopy_initial + p.precopy_dirty) *
		 1e9L / (long double)p.bandwidth;
	cr_assert_leq(p.downtime_ns, (uint64_t)expect + 1000000u, "%llu vs %.0Lf",
		      (unsigned long long)p.downtime_ns, expect);
	cr_assert_geq(p.downtime_ns + 1000000u, (uint64_t)expect);
	cr_assert_eq(vfiomig_mig_stop_advice(s.m, 60000, &ns), VFIOMIG_ADVICE_FITS);
	cr_assert_eq(ns, p.downtime_ns);
	cr_assert_eq(vfiomig_mig_stop_advice(s.m, 0, &ns), ns == 0 ? VFIOMIG_ADVICE_FITS :
			     VFIOMIG_ADVICE_CONTINUE, "one flat round is no stall yet");
	vfiomig_stream_free(out);
	side_close(&s);
}

Test(flow, stop_advice_without_precopy_and_while_the_ack_is_outstanding)
{
	VFIOMIG_OPTS(mig_opts, nopre, .flags = VFIOMIG_MIG_F_NO_PRECOPY);
	VFIOMIG_OPTS(mig_opts, ack, .flags = VFIOMIG_MIG_F_SWITCHOVER_ACK);
	struct side a, b;
	struct vfiomig_stream *oa, *ob;

	side_open(&a, SRC, MIG_ALL, 64 << 10);
	side_open(&b, DST, MIG_ALL, 64 << 10);
	side_mig(&a, VFIOMIG_ROLE_SAVE, &nopre);
	side_mig(&b, VFIOMIG_ROLE_SAVE, &ack);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &oa), 0);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &ob), 0);
	/* Not set up: refused. */
	cr_assert_eq(vfiomig_mig_stop_advice(a.m, 100, NULL), -EINVAL);
	cr_assert_eq(vfiomig_mig_save_setup(a.m, oa), 0);
	cr_assert_eq(vfiomig_mig_save_setup(b.m, ob), 0);
	cr_assert_eq(vfiomig_mig_stop_advice(a.m, 100, NULL), VFIOMIG_ADVICE_NO_PRECOPY);
	cr_assert_geq(vfiomig_mig_save_iterate(b.m, ob, 0), 0, "%s", env.log.last_err);
	cr_assert_eq(vfiomig_mig_initial_data_sent(b.m), 1);
	cr_assert_eq(vfiomig_mig_stop_advice(b.m, UINT32_MAX, NULL), VFIOMIG_ADVICE_WAIT_ACK);
	vfiomig_stream_free(oa);
	vfiomig_stream_free(ob);
	side_close(&a);
	side_close(&b);
}

Test(flow, a_sets_expected_downtime_adds_up_a_stream_and_takes_the_longest_stream)
{
	struct side s[3];
	struct vfiomig_stream *one, *two;
	struct vfiomig_mig_set *set;
	uint64_t ns[3], total;

	cr_assert_eq(vfiomig_mig_set_new(env.ctx, &set), 0);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &one), 0);
	cr_assert_eq(vfiomig_stream_mem_pipe_new(env.ctx, &two), 0);
	for (int i = 0; i < 3; i++) {
		char name[16];

		snprintf(name, sizeof(name), "0000:0%d:00.0", 5 + i);
		side_open(&s[i], name, MIG_ALL, 256 << 10);
		side_mig(&s[i], VFIOMIG_ROLE_SAVE, NULL);
		cr_assert_eq(vfiomig_mig_set_add(set, s[i].m), 0);
		/* Members 0 and 1 share stream one; member 2 has stream two. */
		cr_assert_eq(vfiomig_mig_save_setup(s[i].m, i < 2 ? one : two), 0);
		cr_assert_eq(vfiomig_sim_device_run(s[i].sd, 16), 0);
		cr_assert_geq(vfiomig_mig_save_iterate(s[i].m, i < 2 ? one : two, 0), 0);
	}
	/* Different amounts left: 1, 2 and 40 pages dirty. */
	cr_assert_eq(vfiomig_sim_device_run(s[0].sd, 1), 0);
	cr_assert_eq(vfiomig_sim_device_run(s[1].sd, 2), 0);
	cr_assert_eq(vfiomig_sim_device_run(s[2].sd, 40), 0);
	for (int i = 0; i < 3; i++) {
		VFIOMIG_OPTS(mig_pending, p);

		cr_assert_eq(vfiomig_mig_save_pending(s[i].m, &p), 0);
		cr_assert_gt(p.downtime_ns, 0, "member %d", i);
		ns[i] = p.downtime_ns;
	}
	cr_assert_eq(vfiomig_mig_set_stop_advice(set, UINT32_MAX, &total), VFIOMIG_ADVICE_FITS);
	cr_assert_eq(total, ns[0] + ns[1] > ns[2] ? ns[0] + ns[1] : ns[2], "%llu: %llu %llu %llu",
		     (unsigned long long)total, (unsigned long long)ns[0],
		     (unsigned long long)ns[1], (unsigned long long)ns[2]);
	cr_assert_eq(vfiomig_mig_set_stop_advice(set, 0, &total), VFIOMIG_ADVICE_CONTINUE);
	vfiomig_mig_set_free(set);
	for (int i = 0; i < 3; i++)
		side_close(&s[i]);
	vfiomig_stream_free(one);
	vfiomig_stream_free(two);
}
