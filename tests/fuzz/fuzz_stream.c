/* SPDX-License-Identifier: MIT */
/*
 * Stream fuzz target: every input is a migration stream. It goes through
 * vfiomig_stream_inspect() and through a full load into a fresh simulated
 * device (a sim, a ctx on it, a device whose kind, IDs and protocol match
 * the stream's header when they can; vfiomig_mig_new(LOAD,
 * VFIOMIG_MIG_F_ALLOW_V1), load_setup, load until done), and the results
 * are held against a reference reader written from docs/stream-format.md
 * and a model of the simulated device (fuzz.h). Invariants (abort() when
 * one breaks, so libFuzzer reports it):
 *
 *  - inspect returns what the document says (same errno), reports the same
 *    records and counts, and load agrees with it: a stream inspect refuses
 *    never loads, and a load refused by the stream (not the device) fails
 *    with inspect's errno;
 *  - a load that succeeds leaves exactly the state the stream carries: the
 *    simulated device's data records (page records, then an end record
 *    with the checksum the source computed over its own state) replayed on
 *    a zeroed device give the bytes vfiomig_sim_device_state() must show;
 *    the device is in STOP, and vfiomig_mig_vm_state(RUNNING) runs it with
 *    that state;
 *  - a load that fails leaves the device untouched or reset: RUNNING with
 *    an all-zero state (never RESUMING, never running with part of a
 *    state); vfiomig_mig_vm_state(RUNNING) is refused, and the failure is
 *    reported with the right errno and origin (a CANCEL is the peer's);
 *  - the VMM's config reaches config_load only from a verified stream,
 *    once, byte for byte;
 *  - the return path says LOADED with the stream's own byte count, data
 *    counts and CRC32C, or FAILED with the load's errno;
 *  - nothing leaks: no simulated fd or mapping is left once everything is
 *    freed (and ASan/LSan watch the heap).
 */
#include "fuzz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>

const char fz_target_name[] = "stream";

#define PCI_CLASS  0x120000u /* what the simulator's PCI functions say they are */
#define MDEV_CLASS 0x070002u /* and its mdevs */
#define V1_DATA    65536u    /* the simulator's default v1 data section */
#define MAX_PAGES  64u       /* device state the target is willing to simulate */

static void quiet(void *user, int priority, const char *msg)
{
	(void)user;
	(void)priority;
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "  lib: %s\n", msg);
}

/* The destination device and VMM, chosen from the stream's header. */
struct choice {
	uint32_t kind, mig;
	bool v1;              /* the stream's protocol is v1 */
	bool dev_v1, dev_v2;  /* what the device offers */
	uint32_t flags;       /* VFIOMIG_MIG_F_* */
	uint16_t vendor, device, subvendor, subdevice;
	char mdev_type[64];
	uint64_t npages;
	bool config_load, config_refuses;
	uint64_t max_record, chunk_size;
};

/* What config_load answers when the VMM dislikes the config. */
#define CONFIG_REFUSAL (-EIO)

static void choose(const struct fz_stream *ms, const uint8_t *data, size_t size,
		   struct choice *c)
{
	const struct fz_header *h = &ms->hdr;
	/* The header CRC is as good a source of variety as any: it changes with every header. */
	uint32_t bits = ms->hdr_ok ? h->crc : 0;
	uint64_t hint = fz_dev_pages_hint(data, size, ms);
	uint32_t offer = bits >> 9 & 3;

	memset(c, 0, sizeof(*c));
	c->kind = ms->hdr_ok && h->kind == VFIOMIG_DEVKIND_MDEV ? VFIOMIG_DEVKIND_MDEV
								: VFIOMIG_DEVKIND_PCI;
	c->v1 = ms->hdr_ok && h->protocol == 1;
	/* Mostly a device with the stream's protocol; else both, or only the other one. */
	c->dev_v1 = offer == 2 || (offer == 3) != c->v1;
	c->dev_v2 = offer == 2 || (offer == 3) == c->v1;
	if (c->dev_v1)
		c->mig |= VFIOMIG_SIM_MIG_V1 | (bits & 1 ? VFIOMIG_SIM_MIG_V1_TRAPPED : 0);
	if (c->dev_v2)
		c->mig |= VFIOMIG_SIM_MIG_V2 | (bits & 1 ? VFIOMIG_SIM_MIG_P2P : 0) |
			  (bits & 2 ? VFIOMIG_SIM_MIG_PRE_COPY : 0);
	/* A VMM that has not opted in to v1 (it can still use v2 on a device with both). */
	c->flags = VFIOMIG_MIG_F_ALLOW_V1;
	if (offer == 2 && (bits & 0x800))
		c->flags = 0;
	else if (offer == 2 && (bits & 0x4000))
		c->flags |= VFIOMIG_MIG_F_PREFER_V1;
	if (ms->hdr_ok) {
		c->vendor = h->vendor;
		c->device = h->device;
		c->subvendor = h->subvendor;
		c->subdevice = h->subdevice;
		if (c->kind == VFIOMIG_DEVKIND_MDEV && h->mdev_type[0] &&
		    strlen(h->mdev_type) < sizeof(c->mdev_type) && !strchr(h->mdev_type, '/'))
			memcpy(c->mdev_type, h->mdev_type, strlen(h->mdev_type) + 1);
	}
	c->npages = hint && hint <= MAX_PAGES ? hint : 2;
	/*
	 * A stream with a config record mostly meets a VMM that wants it (and
	 * now and then refuses it, or has no hook); some without one meet a VMM
	 * that requires one.
	 */
	c->config_load = ms->has_config ? !(bits & 0x1000) : (bits & 0xc) == 0xc;
	c->config_refuses = c->config_load && (bits & 0x2000);
	c->max_record = (bits & 0x70) == 0x70 ? 4096 : 0;
	/* The load's buffer (chunk_size, at most max_record): small ones cut bodies in pieces. */
	c->chunk_size = (bits & 0x180) == 0x180 ? 1000 : c->max_record;
}

/* Would vm_fmt_identity_check() pass, per the document's identity rules? */
static bool identity_matches(const struct fz_header *h, const struct choice *c)
{
	bool pci = c->kind == VFIOMIG_DEVKIND_PCI;
	uint16_t vendor = c->vendor ? c->vendor : pci ? 0x1af4 : 0x4348;
	uint16_t device = c->device ? c->device : pci ? 0x10f0 : 0x3253;
	const char *type = pci ? "" : c->mdev_type[0] ? c->mdev_type : "vfiomig-sim-1";
	const char *driver = pci ? "vfio-pci" : "";

	return h->kind == c->kind && h->vendor == vendor && h->device == device &&
	       h->subvendor == c->subvendor && h->subdevice == c->subdevice &&
	       h->class_code == (pci ? PCI_CLASS : MDEV_CLASS) &&
	       (!h->mdev_type[0] || !type[0] || strcmp(h->mdev_type, type) == 0) &&
	       (!h->driver[0] || !driver[0] || strcmp(h->driver, driver) == 0);
}

/*
 * What vfiomig_mig_load_setup() + vfiomig_mig_load() must return, per the
 * document and the device model; *dev ends with the state the device
 * must hold when that is 0. *config_seen: config_load must have been
 * called (the trailer verified the stream).
 */
static int expect_load(const uint8_t *data, const struct fz_stream *ms, const struct choice *c,
		       struct fz_dev *dev, bool *config_seen)
{
	*config_seen = false;
	if (!ms->hdr_ok)
		return ms->err;
	if (!identity_matches(&ms->hdr, c))
		return -ENODEV;
	/* The migration object starts on v2 when the device has it, unless v1 is preferred. */
	if (c->v1 != (c->dev_v1 && (!c->dev_v2 || (c->flags & VFIOMIG_MIG_F_PREFER_V1)))) {
		if (c->v1 && !(c->flags & VFIOMIG_MIG_F_ALLOW_V1))
			return -EOPNOTSUPP;
		if (c->v1 ? !c->dev_v1 : !c->dev_v2)
			return -EPROTO;
	}
	for (size_t i = 0; i < ms->nrecs; i++) {
		const struct fz_rec *r = &ms->recs[i];

		switch (r->type) {
		case VFIOMIG_REC_DATA:
			/* v1 checks the chunk against its data section before reading it. */
			if (c->v1 && r->size > V1_DATA)
				return -EPROTO;
			if (!r->whole)
				return -EPIPE;
			fz_dev_feed(dev, data + r->body, (size_t)r->size);
			/* A v1 device judges each chunk as data_size is written. */
			if (c->v1 && dev->bad)
				return -EINVAL;
			break;
		case VFIOMIG_REC_CANCEL:
			return -ECANCELED;
		case VFIOMIG_REC_TRAILER:
			*config_seen = c->config_load && ms->has_config;
			if (c->config_load && !ms->has_config)
				return -EBADMSG;
			if (*config_seen && c->config_refuses)
				return CONFIG_REFUSAL;
			/* Leaving RESUMING: the device accepts a whole, intact image only. */
			return fz_dev_ok(dev) ? 0 : -EINVAL;
		default:
			if (!r->whole)
				return -EPIPE;
			break;
		}
	}
	return ms->err;
}

/* ------------------------------------------------------------ inspect */

struct seen {
	struct vfiomig_record *r;
	size_t n, cap;
};

static int on_record(void *user, const struct vfiomig_record *rec)
{
	struct seen *s = user;

	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 32;
		struct vfiomig_record *n = realloc(s->r, cap * sizeof(*n));

		if (!n)
			abort();
		s->r = n;
		s->cap = cap;
	}
	s->r[s->n++] = *rec;
	return 0;
}

static int check_inspect(const uint8_t *data, size_t size, const struct fz_stream *ms,
			 uint64_t max_record, struct vfiomig_ctx *ctx)
{
	struct vfiomig_stream_info info = { .sz = sizeof(info) };
	struct vfiomig_stream *in = NULL;
	struct seen seen = { 0 };
	int ret;

	ret = vfiomig_stream_mem_fixed_new(ctx, (void *)data, size, VFIOMIG_STREAM_MEM_READ, &in);
	FZ_CHECK(ret == 0, "vfiomig_stream_mem_fixed_new: %d", ret);
	ret = vfiomig_stream_inspect(in, max_record, &info, on_record, &seen);
	vfiomig_stream_free(in);

	FZ_CHECK(ret == ms->err, "inspect returned %s, the document says %s", fz_errname(ret),
		 fz_errname(ms->err));
	FZ_CHECK(seen.n == ms->nrecs, "inspect reported %zu records, the document %zu", seen.n,
		 ms->nrecs);
	for (size_t i = 0; i < seen.n; i++) {
		const struct vfiomig_record *a = &seen.r[i];
		const struct fz_rec *b = &ms->recs[i];

		FZ_CHECK(a->type == b->type && a->phase == b->phase && a->marker == b->marker &&
				 a->size == b->size && a->offset == b->offset,
			 "record %zu: inspect says type %u phase %u marker 0x%016llx size %llu at "
			 "%llu; the document type %u phase %u marker 0x%016llx size %llu at %llu",
			 i, a->type, a->phase, (unsigned long long)a->marker,
			 (unsigned long long)a->size, (unsigned long long)a->offset, b->type,
			 b->phase, (unsigned long long)b->marker, (unsigned long long)b->size,
			 (unsigned long long)b->offset);
	}
	free(seen.r);
	if (ms->hdr_ok) {
		const struct fz_header *h = &ms->hdr;

		FZ_CHECK(info.version == h->version && info.protocol == h->protocol &&
				 info.flags == h->flags && info.kind == h->kind &&
				 info.vendor == h->vendor && info.device == h->device &&
				 info.subvendor == h->subvendor && info.subdevice == h->subdevice &&
				 info.class_code == h->class_code &&
				 strcmp(info.mdev_type, h->mdev_type) == 0 &&
				 strcmp(info.driver, h->driver) == 0,
			 "inspect's header fields differ from the stream's");
	}
	FZ_CHECK(info.data_records == ms->data_records && info.data_bytes == ms->data_bytes,
		 "inspect counted %llu data records (%llu bytes), the document %llu (%llu)",
		 (unsigned long long)info.data_records, (unsigned long long)info.data_bytes,
		 (unsigned long long)ms->data_records, (unsigned long long)ms->data_bytes);
	if (ret == 0 || ret == -ECANCELED) {
		FZ_CHECK(info.bytes == ms->bytes, "inspect read %llu bytes, the stream has %llu",
			 (unsigned long long)info.bytes, (unsigned long long)ms->bytes);
		FZ_CHECK(info.precopy_rounds == ms->precopy_rounds &&
				 info.precopy_bytes == ms->precopy_bytes &&
				 info.stopcopy_bytes == ms->stopcopy_bytes &&
				 info.has_config == ms->has_config &&
				 info.config_bytes == ms->config_bytes &&
				 info.init_data_sent == ms->init_data_sent,
			 "inspect's phase counts differ from the stream's");
		FZ_CHECK(info.cancelled == ms->cancelled &&
				 (!ms->cancelled || (info.cancel_error == ms->cancel_error &&
						     strcmp(info.cancel_reason,
							    ms->cancel_reason) == 0)),
			 "inspect's cancel (%u, %d, \"%s\") differs from the stream's (%d, %d, "
			 "\"%s\")",
			 info.cancelled, info.cancel_error, info.cancel_reason, ms->cancelled,
			 ms->cancel_error, ms->cancel_reason);
	}
	return ret;
}

/* --------------------------------------------------------------- load */

struct config_seen {
	int calls;
	bool refuse;
	size_t len;
	uint8_t *data;
};

static int on_config(void *user, const void *data, size_t len)
{
	struct config_seen *c = user;

	c->calls++;
	free(c->data);
	c->data = malloc(len ? len : 1);
	if (!c->data)
		abort();
	if (len)
		memcpy(c->data, data, len);
	c->len = len;
	return c->refuse ? CONFIG_REFUSAL : 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* The config record's body as the stream carries it. */
static const struct fz_rec *config_record(const struct fz_stream *ms)
{
	for (size_t i = 0; i < ms->nrecs; i++)
		if (ms->recs[i].type == VFIOMIG_REC_CONFIG)
			return &ms->recs[i];
	return NULL;
}

static void check_return(struct vfiomig_mig *mig, struct vfiomig_ctx *ctx,
			 const struct fz_stream *ms, int ret)
{
	struct vfiomig_stream *rp = NULL;
	struct fz_rp_msg msg;
	const void *p;
	size_t len, pos = 0;
	int n, k;

	k = vfiomig_stream_mem_new(ctx, &rp);
	FZ_CHECK(k == 0, "vfiomig_stream_mem_new: %d", k);
	n = vfiomig_mig_return_send(mig, rp);
	vfiomig_stream_mem_data(rp, &p, &len);
	if (ret == 0) {
		FZ_CHECK(n == 1 + ms->init_data_sent, "return path: %d messages after a load", n);
		if (ms->init_data_sent) {
			k = fz_rp_next(p, len, &pos, &msg);
			FZ_CHECK(k == 0 && msg.type == FZ_RP_ACK && msg.bytes == ms->bytes,
				 "return path: no SWITCHOVER_ACK after INIT_DATA_SENT (%s)",
				 fz_errname(k));
		}
		k = fz_rp_next(p, len, &pos, &msg);
		FZ_CHECK(k == 0 && msg.type == FZ_RP_LOADED && msg.bytes == ms->bytes &&
				 msg.records == ms->data_records &&
				 msg.data_bytes == ms->data_bytes && msg.crc == ms->stream_crc,
			 "return path: LOADED does not describe the stream (%s, type %u, %llu "
			 "bytes, %llu records, %llu data bytes, crc 0x%08x)",
			 fz_errname(k), msg.type, (unsigned long long)msg.bytes,
			 (unsigned long long)msg.records, (unsigned long long)msg.data_bytes,
			 msg.crc);
	} else {
		FZ_CHECK(n == 1, "return path: %d messages after a failed load", n);
		k = fz_rp_next(p, len, &pos, &msg);
		FZ_CHECK(k == 0 && msg.type == FZ_RP_FAILED && msg.error == ret,
			 "return path: FAILED should carry %s (%s, type %u, error %s)",
			 fz_errname(ret), fz_errname(k), msg.type, fz_errname(msg.error));
	}
	FZ_CHECK(fz_rp_next(p, len, &pos, &msg) == -ENODATA, "return path: more than said");
	FZ_CHECK(vfiomig_mig_return_send(mig, rp) == 0, "return path: a message sent twice");
	vfiomig_stream_free(rp);
}

static int check_load(const uint8_t *data, size_t size, const struct fz_stream *ms,
		      const struct choice *c, char *state_note, size_t note_len)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = quiet);
	struct config_seen cfg = { .refuse = c->config_refuses };
	VFIOMIG_OPTS(mig_opts, mo, .flags = c->flags, .max_record = c->max_record,
		     .chunk_size = c->chunk_size,
		     .config_load = c->config_load ? on_config : NULL, .config_user = &cfg);
	VFIOMIG_OPTS(sim_device_opts, so, .kind = c->kind,
		     .mdev_type = c->mdev_type[0] ? c->mdev_type : NULL,
		     .state_size = c->npages * FZ_PAGE, .migration = c->mig,
		     .vendor_id = c->vendor, .device_id = c->device,
		     .subsystem_vendor_id = c->subvendor, .subsystem_device_id = c->subdevice);
	struct vfiomig_sim *sim = NULL;
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_sim_device *sd = NULL;
	struct vfiomig_device *dev = NULL;
	struct vfiomig_mig *mig = NULL;
	struct vfiomig_stream *in = NULL;
	struct fz_dev model;
	const uint8_t *state;
	bool config_due;
	char reason[256];
	uint32_t origin;
	size_t slen;
	int ret, want, k;

	FZ_CHECK(fz_dev_init(&model, c->npages) == 0, "out of memory");
	want = expect_load(data, ms, c, &model, &config_due);

	FZ_CHECK(vfiomig_sim_new(NULL, &sim) == 0, "vfiomig_sim_new");
	FZ_CHECK(vfiomig_sim_ctx_new(sim, &co, &ctx) == 0, "vfiomig_sim_ctx_new");
	k = vfiomig_sim_device_add(sim, &so, &sd);
	FZ_CHECK(k == 0, "vfiomig_sim_device_add: %s", fz_errname(k));
	k = vfiomig_device_open(ctx, vfiomig_sim_device_name(sd), NULL, &dev);
	FZ_CHECK(k == 0, "vfiomig_device_open: %s", fz_errname(k));
	k = vfiomig_mig_new(dev, VFIOMIG_ROLE_LOAD, &mo, &mig);
	FZ_CHECK(k == 0, "vfiomig_mig_new: %s", fz_errname(k));
	k = vfiomig_stream_mem_fixed_new(ctx, (void *)data, size, VFIOMIG_STREAM_MEM_READ, &in);
	FZ_CHECK(k == 0, "vfiomig_stream_mem_fixed_new: %s", fz_errname(k));

	ret = vfiomig_mig_load_setup(mig, in);
	while (ret == 0) {
		ret = vfiomig_mig_load(mig, in);
		if (ret == 0)
			break;
		if (ret == 1)
			ret = 0;
	}
	FZ_CHECK(ret <= 0, "vfiomig_mig_load: %d", ret);
	FZ_CHECK(ret == want, "load returned %s, expected %s (inspect: %s)", fz_errname(ret),
		 fz_errname(want), fz_errname(ms->err));
	/* Inspect and load agree: what inspect refuses never loads. */
	FZ_CHECK(ms->err == 0 || ret != 0, "a stream inspect refuses (%s) loaded",
		 fz_errname(ms->err));
	FZ_CHECK(vfiomig_mig_load(mig, in) < 0, "a finished load took another phase");

	state = vfiomig_sim_device_state(sd, &slen);
	FZ_CHECK(state && slen == c->npages * FZ_PAGE, "device state of %zu bytes", slen);
	k = vfiomig_mig_failure(mig, &origin, reason, sizeof(reason));
	if (ret == 0) {
		FZ_CHECK(vfiomig_sim_device_mig_state(sd) == VFIOMIG_DEVICE_STATE_STOP,
			 "a loaded device is in %s, not STOP",
			 vfiomig_device_state_name((uint32_t)vfiomig_sim_device_mig_state(sd)));
		FZ_CHECK(memcmp(state, model.mem, slen) == 0,
			 "the loaded device state differs from the state the stream carries");
		FZ_CHECK(k == 0, "vfiomig_mig_failure after a load: %s", fz_errname(k));
	} else {
		FZ_CHECK(vfiomig_sim_device_mig_state(sd) == VFIOMIG_DEVICE_STATE_RUNNING,
			 "after a failed load (%s) the device is in %s, not RUNNING (reset)",
			 fz_errname(ret),
			 vfiomig_device_state_name((uint32_t)vfiomig_sim_device_mig_state(sd)));
		FZ_CHECK(all_zero(state, slen),
			 "after a failed load (%s) the device holds state (not reset)",
			 fz_errname(ret));
		if (ret == -ECANCELED && ms->cancelled && want == -ECANCELED)
			FZ_CHECK(k == ms->cancel_error && origin == VFIOMIG_FAILURE_PEER &&
					 strcmp(reason, ms->cancel_reason) == 0,
				 "a cancelled stream's failure is %s from %u (\"%s\"), not the "
				 "source's %s (\"%s\")",
				 fz_errname(k), origin, reason, fz_errname(ms->cancel_error),
				 ms->cancel_reason);
		else
			FZ_CHECK(k == ret && origin == VFIOMIG_FAILURE_LOCAL,
				 "the failure is %s from %u, the load returned %s", fz_errname(k),
				 origin, fz_errname(ret));
	}
	/* The VMM's config: only from a verified stream, once, as it was. */
	if (config_due) {
		const struct fz_rec *r = config_record(ms);

		FZ_CHECK(cfg.calls == 1 && r && cfg.len == r->size &&
				 (!cfg.len || memcmp(cfg.data, data + r->body, cfg.len) == 0),
			 "config_load: %d calls, %zu bytes; the stream's record has %llu",
			 cfg.calls, cfg.len, r ? (unsigned long long)r->size : 0ull);
	} else {
		FZ_CHECK(cfg.calls == 0, "config_load called for an unverified stream");
	}
	free(cfg.data);

	check_return(mig, ctx, ms, ret);

	k = vfiomig_mig_vm_state(mig, VFIOMIG_VM_RUNNING);
	if (ret == 0) {
		FZ_CHECK(k == 0, "the VM cannot run after a load: %s", fz_errname(k));
		FZ_CHECK(vfiomig_sim_device_mig_state(sd) == VFIOMIG_DEVICE_STATE_RUNNING &&
				 memcmp(state, model.mem, slen) == 0,
			 "the device does not run with its loaded state");
		snprintf(state_note, note_len, " state=crc32c:%08x/%zu", fz_crc32c(0, state, slen),
			 slen);
	} else {
		FZ_CHECK(k < 0, "the VM was allowed to run after a failed load (%s)",
			 fz_errname(ret));
		FZ_CHECK(vfiomig_sim_device_mig_state(sd) == VFIOMIG_DEVICE_STATE_RUNNING &&
				 all_zero(state, slen),
			 "a refused vm_state(RUNNING) changed the device");
		state_note[0] = '\0';
	}

	vfiomig_stream_free(in);
	vfiomig_mig_free(mig);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
	FZ_CHECK(vfiomig_sim_open_fds(sim) == 0 && vfiomig_sim_live_maps(sim) == 0,
		 "leak: %d simulated fds and %d mappings left", vfiomig_sim_open_fds(sim),
		 vfiomig_sim_live_maps(sim));
	vfiomig_sim_free(sim);
	fz_dev_fini(&model);
	return ret;
}

void fz_target_run(const uint8_t *data, size_t size, struct fz_outcome *o)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = quiet);
	struct vfiomig_ctx *ctx = NULL;
	struct fz_stream ms;
	struct choice c;
	char note[128] = "";
	int ins, load;

	fz_stream_parse(data, size, 0, &ms);
	choose(&ms, data, size, &c);
	if (c.max_record) {
		fz_stream_free(&ms);
		fz_stream_parse(data, size, c.max_record, &ms);
	}

	FZ_CHECK(vfiomig_ctx_new(&co, &ctx) == 0, "vfiomig_ctx_new");
	ins = check_inspect(data, size, &ms, c.max_record, ctx);
	vfiomig_ctx_unref(ctx);
	load = check_load(data, size, &ms, &c, note, sizeof(note));
	if (o)
		snprintf(o->text, sizeof(o->text), "inspect=%s load=%s%s", fz_errname(ins),
			 fz_errname(load), note);
	fz_stream_free(&ms);
}

size_t fz_target_mutate(uint8_t *data, size_t size, size_t max, unsigned int seed,
			fz_mutate_fn fallback)
{
	return fz_stream_mutate(data, size, max, seed, fallback);
}

/* --------------------------------------------------- library-made seeds */

static const char config_blob[] = "fuzz corpus: the VMM's own device config (a PCI config shadow)";

static int config_save(void *user, const void **data, size_t *len)
{
	(void)user;
	*data = config_blob;
	*len = sizeof(config_blob) - 1;
	return 0;
}

/*
 * A stream as the library's own source writes it, for what `vfiomig save`
 * cannot make: a VMM config record, a save cancelled after its first
 * pre-copy round (CANCEL record).
 */
static int lib_save(const char *dir, const char *name, uint32_t kind, uint32_t mig, bool config,
		    bool cancel)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = quiet);
	VFIOMIG_OPTS(sim_device_opts, so, .kind = kind, .state_size = 2 * FZ_PAGE,
		     .migration = mig);
	VFIOMIG_OPTS(mig_opts, mo, .flags = VFIOMIG_MIG_F_ALLOW_V1,
		     .config_save = config ? config_save : NULL);
	struct vfiomig_sim *sim = NULL;
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_sim_device *sd = NULL;
	struct vfiomig_device *dev = NULL;
	struct vfiomig_mig *m = NULL;
	struct vfiomig_stream *out = NULL;
	const void *p;
	size_t len;
	int ret;

	ret = vfiomig_sim_new(NULL, &sim);
	if (!ret)
		ret = vfiomig_sim_ctx_new(sim, &co, &ctx);
	if (!ret)
		ret = vfiomig_sim_device_add(sim, &so, &sd);
	if (!ret)
		ret = vfiomig_sim_device_run(sd, 2);
	if (!ret)
		ret = vfiomig_device_open(ctx, vfiomig_sim_device_name(sd), NULL, &dev);
	if (!ret)
		ret = vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, &mo, &m);
	if (!ret)
		ret = vfiomig_stream_mem_new(ctx, &out);
	if (!ret)
		ret = vfiomig_mig_save_setup(m, out);
	if (!ret)
		ret = vfiomig_mig_save_iterate(m, out, 0) < 0;
	if (!ret && cancel)
		ret = vfiomig_mig_cancel(m, -EINTR, "cancelled by scripts/fuzz-corpus.sh");
	for (int r = 0; !ret && !cancel && r < 8 && !vfiomig_mig_initial_data_sent(m); r++)
		ret = vfiomig_mig_save_iterate(m, out, 0) < 0;
	if (!ret && !cancel)
		ret = vfiomig_mig_vm_state(m, VFIOMIG_VM_STOPPED);
	if (!ret && !cancel)
		ret = vfiomig_mig_save_complete(m, out);
	if (!ret)
		ret = vfiomig_stream_mem_data(out, &p, &len);
	if (!ret)
		ret = fz_write_file(dir, name, p, len);
	else
		fprintf(stderr, "fuzz_stream: %s: the save failed (%d)\n", name, ret);
	vfiomig_stream_free(out);
	vfiomig_mig_free(m);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
	vfiomig_sim_free(sim);
	return ret;
}

int fz_target_make_seeds(const char *dir)
{
	const uint32_t v2pp = VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY;

	return lib_save(dir, "lib-pci-v2-p2p-precopy-config.bin", VFIOMIG_DEVKIND_PCI, v2pp, true,
			false) ||
	       lib_save(dir, "lib-mdev-v1-config.bin", VFIOMIG_DEVKIND_MDEV, VFIOMIG_SIM_MIG_V1,
			true, false) ||
	       lib_save(dir, "lib-pci-v2-precopy-cancelled.bin", VFIOMIG_DEVKIND_PCI,
			VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_PRE_COPY, false, true) ||
	       lib_save(dir, "lib-mdev-v1-trapped-cancelled.bin", VFIOMIG_DEVKIND_MDEV,
			VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V1_TRAPPED, true, true);
}
