/* SPDX-License-Identifier: MIT */
/*
 * How a VMM embeds libvfiomig: two passed-through devices of one VM are
 * live-migrated together, with
 *  - the VMM's own stream callbacks (here a toy "migration channel" that
 *    frames nothing and just counts; a real VMM would write into its own
 *    multiplexed migration socket),
 *  - the VMM's own device config carried in the stream (config hooks),
 *  - a device set, so both devices are quiesced through the P2P states
 *    before either is stopped,
 *  - pre-copy rounds driven by the VMM's own loop and budget,
 *  - the return path: the destination acknowledges switchover once it
 *    has loaded the initial data, and says "loaded" (or "failed, and
 *    why") at the end; the source stops its VM only after the ack,
 *  - the VM run-state and migration-event hooks.
 *
 * No hardware here, so the devices come from libvfiomig-sim; with real
 * devices only the ctx creation and the device names change.
 *
 * Build: cc vmm-embed.c $(pkg-config --cflags --libs vfiomig vfiomig-sim)
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/migration.h>
#include <vfiomig/sim.h>
#include <vfiomig/stream.h>

/* ---- the VMM's migration channel: an in-memory pipe it owns ---- */

struct channel {
	unsigned char *buf;
	size_t len, cap, rpos;
	unsigned long writes, reads;
};

static ssize_t chan_write(void *user, const void *data, size_t len)
{
	struct channel *c = user;

	if (c->len + len > c->cap) {
		size_t cap = (c->cap ? c->cap * 2 : 1 << 20);
		unsigned char *p;

		while (cap < c->len + len)
			cap *= 2;
		p = realloc(c->buf, cap);
		if (!p)
			return -ENOMEM;
		c->buf = p;
		c->cap = cap;
	}
	memcpy(c->buf + c->len, data, len);
	c->len += len;
	c->writes++;
	return (ssize_t)len;
}

static ssize_t chan_read(void *user, void *data, size_t len)
{
	struct channel *c = user;
	size_t n = c->len - c->rpos < len ? c->len - c->rpos : len;

	memcpy(data, c->buf + c->rpos, n);
	c->rpos += n;
	c->reads++;
	return (ssize_t)n; /* 0: nothing more right now = end of what was sent */
}

/* ---- the VMM's per-device config (what the vendor data never carries) ---- */

struct vmm_dev {
	const char *name;
	char config[64]; /* stands for PCI config space + interrupt routing */
	char restored[64];
};

static int config_save(void *user, const void **data, size_t *len)
{
	struct vmm_dev *d = user;

	*data = d->config;
	*len = sizeof(d->config);
	return 0;
}

static int config_load(void *user, const void *data, size_t len)
{
	struct vmm_dev *d = user;

	if (len != sizeof(d->restored))
		return -EINVAL;
	memcpy(d->restored, data, len);
	return 0;
}

#define CHECK(expr)                                                                   \
	do {                                                                          \
		int _r = (expr);                                                      \
		if (_r < 0) {                                                         \
			fprintf(stderr, "vmm-embed: %s: %s\n", #expr, vfiomig_strerror(_r)); \
			goto out;                                                     \
		}                                                                     \
	} while (0)

int main(void)
{
	static const char *const src_names[2] = { "0000:03:00.0", "0000:03:00.1" };
	static const char *const dst_names[2] = { "0000:83:00.0", "0000:83:00.1" };
	struct vmm_dev vsrc[2] = { { .name = "nic" }, { .name = "gpu" } };
	struct vmm_dev vdst[2] = { { .name = "nic" }, { .name = "gpu" } };
	struct channel chan[2] = { { 0 } }, back[2] = { { 0 } };
	struct vfiomig_sim *sim = NULL;
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_sim_device *ssrc[2], *sdst[2];
	struct vfiomig_device *src[2] = { 0 }, *dst[2] = { 0 };
	struct vfiomig_mig *ms[2] = { 0 }, *md[2] = { 0 };
	struct vfiomig_stream *out[2] = { 0 }, *in[2] = { 0 };
	struct vfiomig_stream *rp_out[2] = { 0 }, *rp_in[2] = { 0 }; /* the return path */
	struct vfiomig_mig_set *save_set = NULL, *load_set = NULL;
	char reason[256];
	int rc = 1, more;

	CHECK(vfiomig_sim_new(NULL, &sim));
	CHECK(vfiomig_sim_ctx_new(sim, NULL, &ctx));
	for (int i = 0; i < 2; i++) {
		VFIOMIG_OPTS(sim_device_opts, so, .name = src_names[i], .state_size = 1 << 20,
			     .auto_dirty_pages = 4,
			     .migration = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
					  VFIOMIG_SIM_MIG_PRE_COPY);
		VFIOMIG_OPTS(stream_ops, ops, .write = chan_write, .read = chan_read);

		CHECK(vfiomig_sim_device_add(sim, &so, &ssrc[i]));
		so.name = dst_names[i];
		CHECK(vfiomig_sim_device_add(sim, &so, &sdst[i]));
		CHECK(vfiomig_device_open(ctx, src_names[i], NULL, &src[i]));
		CHECK(vfiomig_device_open(ctx, dst_names[i], NULL, &dst[i]));
		CHECK(vfiomig_sim_device_run(ssrc[i], 256)); /* the guest used the device */
		snprintf(vsrc[i].config, sizeof(vsrc[i].config), "%s: BARs, MSI-X vectors 0-7",
			 vsrc[i].name);
		/* One channel per device: the VMM multiplexes them as it likes. */
		CHECK(vfiomig_stream_new(ctx, &ops, &chan[i], &out[i]));
		CHECK(vfiomig_stream_new(ctx, &ops, &chan[i], &in[i]));
		/* And one channel back, for the destination's answers. */
		CHECK(vfiomig_stream_new(ctx, &ops, &back[i], &rp_out[i]));
		CHECK(vfiomig_stream_new(ctx, &ops, &back[i], &rp_in[i]));
	}

	/* Source side: one migration per device, grouped so P2P quiescing works. */
	CHECK(vfiomig_mig_set_new(ctx, &save_set));
	CHECK(vfiomig_mig_set_new(ctx, &load_set));
	for (int i = 0; i < 2; i++) {
		VFIOMIG_OPTS(mig_opts, so, .config_save = config_save, .config_user = &vsrc[i],
			     .flags = VFIOMIG_MIG_F_SWITCHOVER_ACK);
		VFIOMIG_OPTS(mig_opts, lo, .config_load = config_load, .config_user = &vdst[i]);

		CHECK(vfiomig_mig_new(src[i], VFIOMIG_ROLE_SAVE, &so, &ms[i]));
		CHECK(vfiomig_mig_new(dst[i], VFIOMIG_ROLE_LOAD, &lo, &md[i]));
		CHECK(vfiomig_mig_set_add(save_set, ms[i]));
		CHECK(vfiomig_mig_set_add(load_set, md[i]));
	}
	if (vfiomig_mig_set_check(save_set, reason, sizeof(reason)) < 0) {
		fprintf(stderr, "vmm-embed: this VM cannot migrate: %s\n", reason);
		goto out;
	}
	CHECK(vfiomig_mig_set_event(save_set, VFIOMIG_EVENT_SETUP));
	for (int i = 0; i < 2; i++) {
		CHECK(vfiomig_mig_save_setup(ms[i], out[i]));
		CHECK(vfiomig_mig_load_setup(md[i], in[i]));
	}

	/*
	 * Pre-copy: the VMM's loop, 256 KiB per device per round, guest still
	 * running; the destination answers after every phase it loads, and the
	 * source stops the VM once every device's switchover is acknowledged.
	 */
	for (int round = 0; round < 20; round++) {
		int ready = 1;

		for (int i = 0; i < 2; i++) {
			VFIOMIG_OPTS(return_msg, msg);

			CHECK(vfiomig_sim_device_run(ssrc[i], 8));
			CHECK(vfiomig_mig_save_iterate(ms[i], out[i], 256 * 1024));
			CHECK(vfiomig_mig_load(md[i], in[i]));
			CHECK(more = vfiomig_mig_return_send(md[i], rp_out[i]));
			while (more-- > 0)
				CHECK(vfiomig_mig_return_recv(ms[i], rp_in[i], &msg));
			ready &= vfiomig_mig_switchover_ready(ms[i]) == 1;
		}
		if (ready)
			break;
	}

	/* Switch over: stop the VM (both devices quiesced to P2P first), copy the rest. */
	CHECK(vfiomig_mig_set_vm_state(save_set, VFIOMIG_VM_STOPPED));
	for (int i = 0; i < 2; i++) {
		VFIOMIG_OPTS(return_msg, msg);

		CHECK(vfiomig_mig_save_complete(ms[i], out[i]));
		do
			CHECK(more = vfiomig_mig_load(md[i], in[i]));
		while (more == 1);
		/* "Loaded and verified", with the stream's CRC the source checks against its own. */
		CHECK(vfiomig_mig_return_send(md[i], rp_out[i]));
		CHECK(vfiomig_mig_return_recv(ms[i], rp_in[i], &msg));
		if (msg.type != VFIOMIG_RETURN_LOADED) {
			fprintf(stderr, "vmm-embed: the destination failed: %s\n", msg.reason);
			CHECK(vfiomig_mig_set_vm_state(save_set, VFIOMIG_VM_RUNNING));
			goto out;
		}
	}
	CHECK(vfiomig_mig_set_event(save_set, VFIOMIG_EVENT_COMPLETED));
	CHECK(vfiomig_mig_set_vm_state(load_set, VFIOMIG_VM_RUNNING));

	for (int i = 0; i < 2; i++) {
		size_t la, lb;
		const void *a = vfiomig_sim_device_state(ssrc[i], &la);
		const void *b = vfiomig_sim_device_state(sdst[i], &lb);

		if (la != lb || memcmp(a, b, la) || strcmp(vsrc[i].config, vdst[i].restored)) {
			fprintf(stderr, "vmm-embed: device %s arrived different\n", vsrc[i].name);
			goto out;
		}
	}
	{
		VFIOMIG_OPTS(mig_stats, st);

		CHECK(vfiomig_mig_set_get_stats(save_set, &st));
		printf("vmm-embed: migrated 2 devices: %llu stream bytes, %llu pre-copy rounds, "
		       "%llu stop-copy bytes; both destinations match their sources\n",
		       (unsigned long long)st.bytes, (unsigned long long)st.precopy_rounds,
		       (unsigned long long)st.stopcopy_bytes);
	}
	rc = 0;
out:
	for (int i = 0; i < 2; i++) {
		vfiomig_mig_free(ms[i]);
		vfiomig_mig_free(md[i]);
		vfiomig_stream_free(out[i]);
		vfiomig_stream_free(in[i]);
		vfiomig_stream_free(rp_out[i]);
		vfiomig_stream_free(rp_in[i]);
		free(back[i].buf);
		vfiomig_device_close(src[i]);
		vfiomig_device_close(dst[i]);
		free(chan[i].buf);
	}
	vfiomig_mig_set_free(save_set);
	vfiomig_mig_set_free(load_set);
	vfiomig_ctx_unref(ctx);
	vfiomig_sim_free(sim);
	return rc;
}
