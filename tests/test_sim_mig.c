/* SPDX-License-Identifier: MIT */
/*
 * The simulator's migration support, driven directly through its kernel
 * ops (the library's migration code has its own tests): the v2 arc walk
 * against an independent copy of the kernel's table, skipped states,
 * data_fd lifetimes, the STOP_COPY -> PRE_COPY refusal, failed SETs,
 * ERROR and reset, pre-copy reads and PRECOPY_INFO, MIG_DATA_SIZE, saves
 * restored by hand in odd piece sizes, refused images, the v1 region
 * (register widths, reserved bits, chunks by pread and by mmap), spec
 * keys, self-dirtying devices and the fault knobs. Every test ends with
 * assert_no_leaks(): heap blocks and fds as at the mark the suite's .init
 * takes (see testutil.h).
 *
 * White-box: links the simulator's sources for the private event log.
 */
#include "testutil.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <vfiomig/sim.h>
#include <vfiomig/vfiomig.h>

#include "sim/sim_internal.h"
#include "mig.h" /* the library's migration object: its protocol's set_state */

#define K (vfiomig_sim_kernel_ops())

#define PG       4096u
#define REC      (16u + PG) /* a page record */
#define END      32u        /* the end record */
#define FULLMIG  (VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY)
#define MIG_V1_ERROR_BITS_TEST 6u /* v1 device_state 110 */

enum { ERR_ = 0, STOP = 1, RUN = 2, SC = 3, RES = 4, RP = 5, PC = 6, PP = 7, NSTATES = 8 };

static const char *const names[NSTATES] = { "ERROR", "STOP", "RUNNING", "STOP_COPY",
					    "RESUMING", "RUNNING_P2P", "PRE_COPY",
					    "PRE_COPY_P2P" };

/* ------------------------------------------------------------- helpers */

static struct vfiomig_sim *sim_make(void)
{
	struct vfiomig_sim *sim = NULL;

	cr_assert_eq(vfiomig_sim_new(NULL, &sim), 0);
	return sim;
}

static struct vfiomig_sim_device *mig_dev(struct vfiomig_sim *sim, const char *name,
					  uint32_t mig, uint64_t state, uint32_t autod)
{
	VFIOMIG_OPTS(sim_device_opts, o, .name = name, .migration = mig, .state_size = state,
		     .auto_dirty_pages = autod);
	struct vfiomig_sim_device *dev = NULL;

	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &dev), 0, "%s", sim_last_error(sim));
	return dev;
}

/* A device opened through the legacy container / group path. */
struct h {
	struct vfiomig_sim *sim;
	struct vfiomig_sim_device *sd;
	int c, g, d;
};

static struct h hopen(struct vfiomig_sim *sim, struct vfiomig_sim_device *sd)
{
	struct h h = { .sim = sim, .sd = sd };
	char path[32];
	int c;

	h.c = K->open(sim, "/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	snprintf(path, sizeof(path), "/dev/vfio/%d", vfiomig_sim_device_group(sd));
	h.g = K->open(sim, path, O_RDWR | O_CLOEXEC);
	cr_assert(h.c >= 0 && h.g >= 0);
	c = h.c;
	cr_assert_eq(K->ioctl(sim, h.g, VU_GROUP_SET_CONTAINER, &c), 0);
	cr_assert_eq(K->ioctl(sim, h.c, VU_SET_IOMMU, (void *)(unsigned long)VU_TYPE1v2_IOMMU), 0);
	h.d = K->ioctl(sim, h.g, VU_GROUP_GET_DEVICE_FD, (void *)vfiomig_sim_device_name(sd));
	cr_assert_geq(h.d, 0);
	return h;
}

static void hclose(struct h *h)
{
	cr_assert_eq(K->close(h->sim, h->d), 0);
	cr_assert_eq(K->close(h->sim, h->g), 0);
	cr_assert_eq(K->close(h->sim, h->c), 0);
}

static void kclose(struct vfiomig_sim *sim, int *fd)
{
	if (*fd >= 0)
		cr_assert_eq(K->close(sim, *fd), 0);
	*fd = -1;
}

static int feature(struct h *h, uint32_t flags, void *data, size_t len)
{
	struct {
		struct vu_device_feature hdr;
		uint8_t d[32];
	} b;
	int ret;

	memset(&b, 0, sizeof(b));
	b.hdr.argsz = (uint32_t)(sizeof(b.hdr) + len);
	b.hdr.flags = flags;
	memcpy(b.d, data, len);
	ret = K->ioctl(h->sim, h->d, VU_DEVICE_FEATURE, &b);
	memcpy(data, b.d, len);
	return ret;
}

/* SET MIG_DEVICE_STATE; the new data_fd goes to *fd (closed when fd is NULL). */
static int set_state(struct h *h, uint32_t s, int *fd)
{
	struct vu_feature_mig_state st = { .device_state = s, .data_fd = -7 };
	int ret = feature(h, VU_DEVICE_FEATURE_SET | VU_FEATURE_MIG_DEVICE_STATE, &st, sizeof(st));

	/* The requested state always comes back; an fd only on success. */
	cr_assert_eq(st.device_state, s);
	if (ret)
		cr_assert_eq(st.data_fd, -1);
	if (fd)
		*fd = st.data_fd;
	else if (st.data_fd >= 0)
		cr_assert_eq(K->close(h->sim, st.data_fd), 0);
	return ret;
}

static uint32_t get_state(struct h *h)
{
	struct vu_feature_mig_state st = { .device_state = 99, .data_fd = 5 };

	cr_assert_eq(feature(h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIG_DEVICE_STATE, &st,
			     sizeof(st)), 0);
	cr_assert_eq(st.data_fd, -1);
	cr_assert_eq((int)st.device_state, vfiomig_sim_device_mig_state(h->sd));
	return st.device_state;
}

static int data_size(struct h *h, uint64_t *len)
{
	return feature(h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIG_DATA_SIZE, len, sizeof(*len));
}

static int precopy_info(struct h *h, int fd, uint64_t *initial, uint64_t *dirty)
{
	struct vu_precopy_info pi = { .argsz = sizeof(pi) };
	int ret = K->ioctl(h->sim, fd, VU_MIG_GET_PRECOPY_INFO, &pi);

	*initial = pi.initial_bytes;
	*dirty = pi.dirty_bytes;
	return ret;
}

static void reset(struct h *h)
{
	cr_assert_eq(K->ioctl(h->sim, h->d, VU_DEVICE_RESET, NULL), 0);
}

/* Read until 0 (or an error), in pieces cycling through `pieces`; returns the bytes read. */
static size_t read_all(struct vfiomig_sim *sim, int fd, uint8_t *buf, size_t cap,
		       const size_t *pieces, size_t npieces, ssize_t *last)
{
	size_t got = 0;

	for (size_t i = 0;; i++) {
		size_t want = pieces[i % npieces];
		ssize_t n;

		if (want > cap - got)
			want = cap - got;
		n = K->read(sim, fd, buf + got, want);
		if (n <= 0 || want == 0) {
			*last = n;
			return got;
		}
		cr_assert_leq((size_t)n, want);
		got += (size_t)n;
	}
}

static void write_all(struct vfiomig_sim *sim, int fd, const uint8_t *buf, size_t len,
		      const size_t *pieces, size_t npieces)
{
	size_t done = 0;

	for (size_t i = 0; done < len; i++) {
		size_t want = pieces[i % npieces];
		ssize_t n;

		if (want > len - done)
			want = len - done;
		n = K->write(sim, fd, buf + done, want);
		cr_assert_eq(n, (ssize_t)want);
		done += want;
	}
}

static const size_t one_piece[] = { 1u << 20 };

/* The whole image of a stopped device (it is left in STOP). */
static size_t image_of(struct h *h, uint8_t *buf, size_t cap)
{
	ssize_t last;
	size_t n;
	int fd;

	cr_assert_eq(set_state(h, SC, &fd), 0);
	n = read_all(h->sim, fd, buf, cap, one_piece, 1, &last);
	cr_assert_eq(last, 0);
	cr_assert_eq(set_state(h, STOP, NULL), 0);
	kclose(h->sim, &fd);
	return n;
}

/* Feed an image to a device and leave RESUMING; returns the SET's result. */
static int restore(struct h *h, const uint8_t *img, size_t len, const size_t *pieces, size_t np)
{
	int fd;

	cr_assert_eq(set_state(h, RES, &fd), 0);
	cr_assert_geq(fd, 0);
	write_all(h->sim, fd, img, len, pieces, np);
	{
		int ret = set_state(h, STOP, NULL);

		kclose(h->sim, &fd);
		return ret;
	}
}

static int state_num(const char *s, size_t n)
{
	for (int i = 0; i < NSTATES; i++)
		if (strlen(names[i]) == n && strncmp(names[i], s, n) == 0)
			return i;
	return -1;
}

/* The plain arcs "<name>: X -> Y" logged since the last clear, as "X>Y>Z". */
static void arc_path(struct vfiomig_sim *sim, const char *dev, char *out, size_t len)
{
	size_t plen = strlen(dev);

	out[0] = '\0';
	for (size_t i = 0; i < vfiomig_sim_event_count(sim); i++) {
		const char *ev = vfiomig_sim_event(sim, i), *arrow, *to;
		int a, b;

		if (strncmp(ev, dev, plen) != 0 || strncmp(ev + plen, ": ", 2) != 0)
			continue;
		ev += plen + 2;
		arrow = strstr(ev, " -> ");
		if (!arrow)
			continue;
		to = arrow + 4;
		a = state_num(ev, (size_t)(arrow - ev));
		b = state_num(to, strlen(to));
		if (a < 0 || b < 0)
			continue; /* a failure or refusal line */
		if (!out[0])
			snprintf(out, len, "%s", names[a]);
		else
			cr_assert_str_eq(strrchr(out, '>') ? strrchr(out, '>') + 1 : out, names[a],
					 "arcs do not chain: %s then %s", out, ev);
		snprintf(out + strlen(out), len - strlen(out), ">%s", names[b]);
	}
}

static bool has_event(struct vfiomig_sim *sim, const char *text)
{
	for (size_t i = 0; i < vfiomig_sim_event_count(sim); i++)
		if (strcmp(vfiomig_sim_event(sim, i), text) == 0)
			return true;
	return false;
}

static bool has_event_prefix(struct vfiomig_sim *sim, const char *text)
{
	for (size_t i = 0; i < vfiomig_sim_event_count(sim); i++)
		if (strncmp(vfiomig_sim_event(sim, i), text, strlen(text)) == 0)
			return true;
	return false;
}

/* ------------------------------------------------------ the arc table */

/*
 * Written out by hand from the kernel's vfio_mig_get_next_state table
 * (docs: VFIO-FACTS.md) for a device with P2P and PRE_COPY: the full
 * path of states a SET from row to column walks through. NULL: refused.
 */
static const char *const full_paths[NSTATES][NSTATES] = {
	[STOP] = {
		[STOP] = "", [RUN] = "STOP>RUNNING_P2P>RUNNING", [SC] = "STOP>STOP_COPY",
		[RES] = "STOP>RESUMING", [RP] = "STOP>RUNNING_P2P",
		[PC] = "STOP>RUNNING_P2P>RUNNING>PRE_COPY", [PP] = "STOP>RUNNING_P2P>PRE_COPY_P2P",
	},
	[RUN] = {
		[STOP] = "RUNNING>RUNNING_P2P>STOP", [RUN] = "",
		[SC] = "RUNNING>RUNNING_P2P>STOP>STOP_COPY",
		[RES] = "RUNNING>RUNNING_P2P>STOP>RESUMING", [RP] = "RUNNING>RUNNING_P2P",
		[PC] = "RUNNING>PRE_COPY", [PP] = "RUNNING>RUNNING_P2P>PRE_COPY_P2P",
	},
	[SC] = {
		[STOP] = "STOP_COPY>STOP", [RUN] = "STOP_COPY>STOP>RUNNING_P2P>RUNNING",
		[SC] = "", [RES] = "STOP_COPY>STOP>RESUMING", [RP] = "STOP_COPY>STOP>RUNNING_P2P",
		[PC] = NULL, [PP] = NULL,
	},
	[RES] = {
		[STOP] = "RESUMING>STOP", [RUN] = "RESUMING>STOP>RUNNING_P2P>RUNNING",
		[SC] = "RESUMING>STOP>STOP_COPY", [RES] = "", [RP] = "RESUMING>STOP>RUNNING_P2P",
		[PC] = "RESUMING>STOP>RUNNING_P2P>RUNNING>PRE_COPY",
		[PP] = "RESUMING>STOP>RUNNING_P2P>PRE_COPY_P2P",
	},
	[RP] = {
		[STOP] = "RUNNING_P2P>STOP", [RUN] = "RUNNING_P2P>RUNNING",
		[SC] = "RUNNING_P2P>STOP>STOP_COPY", [RES] = "RUNNING_P2P>STOP>RESUMING",
		[RP] = "", [PC] = "RUNNING_P2P>RUNNING>PRE_COPY", [PP] = "RUNNING_P2P>PRE_COPY_P2P",
	},
	[PC] = {
		[STOP] = "PRE_COPY>RUNNING>RUNNING_P2P>STOP", [RUN] = "PRE_COPY>RUNNING",
		[SC] = "PRE_COPY>PRE_COPY_P2P>STOP_COPY",
		[RES] = "PRE_COPY>RUNNING>RUNNING_P2P>STOP>RESUMING",
		[RP] = "PRE_COPY>RUNNING>RUNNING_P2P", [PC] = "", [PP] = "PRE_COPY>PRE_COPY_P2P",
	},
	[PP] = {
		[STOP] = "PRE_COPY_P2P>RUNNING_P2P>STOP",
		[RUN] = "PRE_COPY_P2P>RUNNING_P2P>RUNNING",
		[SC] = "PRE_COPY_P2P>STOP_COPY", [RES] = "PRE_COPY_P2P>RUNNING_P2P>STOP>RESUMING",
		[RP] = "PRE_COPY_P2P>RUNNING_P2P", [PC] = "PRE_COPY_P2P>PRE_COPY", [PP] = "",
	},
};

static bool state_supported(int s, uint32_t mig)
{
	bool p2p = mig & VFIOMIG_SIM_MIG_P2P, pre = mig & VFIOMIG_SIM_MIG_PRE_COPY;

	return s == RP ? p2p : s == PC ? pre : s == PP ? p2p && pre : s != ERR_;
}

/* The kernel skips states the device lacks: drop them from the full path. */
static void filter_path(const char *full, uint32_t mig, char *out, size_t len)
{
	char tmp[256], *save = NULL;

	out[0] = '\0';
	snprintf(tmp, sizeof(tmp), "%s", full);
	for (char *tok = strtok_r(tmp, ">", &save); tok; tok = strtok_r(NULL, ">", &save)) {
		if (!state_supported(state_num(tok, strlen(tok)), mig))
			continue;
		snprintf(out + strlen(out), len - strlen(out), "%s%s", out[0] ? ">" : "", tok);
	}
}

/* Does the final arc of this path create a data_fd? */
static bool makes_fd(int to, const char *path)
{
	char tmp[256], *save = NULL, prev[32] = "", last[32] = "";

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *tok = strtok_r(tmp, ">", &save); tok; tok = strtok_r(NULL, ">", &save)) {
		snprintf(prev, sizeof(prev), "%s", last);
		snprintf(last, sizeof(last), "%s", tok);
	}
	return (to == PC && strcmp(prev, "RUNNING") == 0) ||
	       (to == PP && strcmp(prev, "RUNNING_P2P") == 0) ||
	       ((to == SC || to == RES) && strcmp(prev, "STOP") == 0);
}

TestSuite(sim_mig, .init = leak_baseline);

Test(sim_mig, arcs_follow_the_kernel_table_from_every_state)
{
	static const uint32_t variants[] = {
		FULLMIG,
		VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_PRE_COPY,
		VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P,
		VFIOMIG_SIM_MIG_V2,
	};
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:01:00.0", VFIOMIG_SIM_MIG_V2, PG, 0);
	struct h hs = hopen(sim, src);
	uint8_t img[REC + END];
	size_t imglen = image_of(&hs, img, sizeof(img));
	int checked = 0;

	cr_assert_eq(imglen, REC + END);
	for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
		char name[16];
		struct vfiomig_sim_device *sd;
		struct h h;

		snprintf(name, sizeof(name), "0000:02:%02zx.0", v);
		sd = mig_dev(sim, name, variants[v], PG, 0);
		h = hopen(sim, sd);
		for (int from = STOP; from < NSTATES; from++) {
			if (!state_supported(from, variants[v]))
				continue;
			for (int to = ERR_; to < NSTATES; to++) {
				char got[256], want[256];
				int fd = -1, dfd = -1, ret;

				reset(&h);
				if (from != RUN) {
					cr_assert_eq(set_state(&h, (uint32_t)from, &fd), 0);
					if (from == RES)
						write_all(sim, fd, img, imglen, one_piece, 1);
				}
				cr_assert_eq(get_state(&h), (uint32_t)from);
				vfiomig_sim_events_clear(sim);
				ret = set_state(&h, (uint32_t)to, &dfd);
				arc_path(sim, name, got, sizeof(got));
				if (to == ERR_ || !state_supported(to, variants[v])) {
					cr_assert_eq(ret, -EINVAL, "%s: %s -> %s", name,
						     names[from], names[to]);
					cr_assert_str_eq(got, "");
					cr_assert_eq(get_state(&h), (uint32_t)from);
				} else if (!full_paths[from][to]) {
					cr_assert_eq(ret, -EDEADLK);
					cr_assert_str_eq(got, "");
					cr_assert_eq(get_state(&h), (uint32_t)from);
				} else {
					filter_path(full_paths[from][to], variants[v], want,
						    sizeof(want));
					cr_assert_eq(ret, 0, "%s: %s -> %s: %d", name, names[from],
						     names[to], ret);
					cr_assert_str_eq(got, want, "%s: %s -> %s", name,
							 names[from], names[to]);
					cr_assert_eq(get_state(&h), (uint32_t)to);
					cr_assert_eq(dfd >= 0, makes_fd(to, want),
						     "%s: %s -> %s: data_fd %d", name, names[from],
						     names[to], dfd);
				}
				kclose(sim, &dfd);
				kclose(sim, &fd);
				checked++;
			}
		}
		hclose(&h);
	}
	cr_assert_eq(checked, (7 + 5 + 5 + 4) * NSTATES);
	hclose(&hs);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, skipped_states_log_direct_arcs)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd =
		mig_dev(sim, "0000:03:00.0", VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_PRE_COPY, PG, 0);
	struct h h = hopen(sim, sd);
	char got[256];

	/* No P2P: RUNNING -> STOP_COPY is RUNNING -> STOP -> STOP_COPY. */
	vfiomig_sim_events_clear(sim);
	cr_assert_eq(set_state(&h, SC, NULL), 0);
	arc_path(sim, "0000:03:00.0", got, sizeof(got));
	cr_assert_str_eq(got, "RUNNING>STOP>STOP_COPY");
	cr_assert(has_event(sim, "0000:03:00.0: RUNNING -> STOP"));
	cr_assert(has_event(sim, "0000:03:00.0: STOP -> STOP_COPY"));
	/* The P2P targets are not states of this device. */
	cr_assert_eq(set_state(&h, RP, NULL), -EINVAL);
	cr_assert_eq(set_state(&h, PP, NULL), -EINVAL);
	cr_assert(has_event_prefix(sim, "0000:03:00.0: STOP_COPY -> RUNNING_P2P refused"));
	/* GET MIGRATION says so. */
	{
		uint64_t flags = 0;

		cr_assert_eq(feature(&h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &flags,
				     sizeof(flags)), 0);
		cr_assert_eq(flags, VU_MIGRATION_STOP_COPY | VU_MIGRATION_PRE_COPY);
	}
	hclose(&h);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------- data_fd */

Test(sim_mig, data_fd_created_kept_and_invalidated)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, 2 * PG, 0);
	struct h h = hopen(sim, sd);
	uint8_t buf[64];
	int a, b, c, base = vfiomig_sim_open_fds(sim);

	cr_assert_eq(set_state(&h, PC, &a), 0);
	cr_assert_geq(a, 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), base + 1);
	cr_assert_eq(fcntl(a, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC, "a real, close-on-exec fd");
	cr_assert_eq(K->read(sim, a, buf, 10), 10);
	cr_assert_eq(K->pread(sim, a, buf, 10, 0), -ESPIPE);
	cr_assert_eq(K->write(sim, a, buf, 10), -EINVAL); /* a save fd has no write */
	/* PRE_COPY <-> PRE_COPY_P2P and on to STOP_COPY keep the same fd. */
	cr_assert_eq(set_state(&h, PP, &b), 0);
	cr_assert_eq(b, -1);
	cr_assert_eq(K->read(sim, a, buf, 10), 10);
	cr_assert_eq(set_state(&h, SC, &b), 0);
	cr_assert_eq(b, -1);
	cr_assert_eq(K->read(sim, a, buf, 10), 10);
	/* Back to STOP: the fd is dead but stays open until closed. */
	cr_assert_eq(set_state(&h, STOP, &b), 0);
	cr_assert_eq(b, -1);
	cr_assert_eq(K->read(sim, a, buf, 10), -ENODEV);
	cr_assert_eq(vfiomig_sim_open_fds(sim), base + 1);
	/* STOP -> RESUMING: a new, write-only fd. */
	cr_assert_eq(set_state(&h, RES, &b), 0);
	cr_assert_geq(b, 0);
	cr_assert_neq(b, a);
	cr_assert_eq(K->read(sim, b, buf, 10), -EINVAL);
	cr_assert_eq(K->write(sim, b, buf, 0), 0);
	cr_assert_eq(K->ioctl(sim, b, VU_MIG_GET_PRECOPY_INFO, &(struct vu_precopy_info){
				      .argsz = 24 }), -ENOTTY);
	/* A reset ends the resume session too. */
	reset(&h);
	cr_assert_eq(get_state(&h), RUN);
	cr_assert_eq(K->write(sim, b, buf, 16), -ENODEV);
	cr_assert(has_event(sim, "0000:03:00.0: RESET"));
	/* RUNNING -> STOP_COPY walks through STOP: one fd, from the last arc. */
	cr_assert_eq(set_state(&h, SC, &c), 0);
	cr_assert_geq(c, 0);
	cr_assert_eq(vfiomig_sim_open_fds(sim), base + 3);
	/* STOP_COPY -> RUNNING invalidates; PRE_COPY -> RUNNING too. */
	cr_assert_eq(set_state(&h, RUN, NULL), 0);
	cr_assert_eq(K->read(sim, c, buf, 1), -ENODEV);
	kclose(sim, &c);
	cr_assert_eq(set_state(&h, PC, &c), 0);
	cr_assert_eq(set_state(&h, RUN, NULL), 0);
	cr_assert_eq(K->read(sim, c, buf, 1), -ENODEV);
	/* A dup refers to the same session. */
	kclose(sim, &c);
	cr_assert_eq(set_state(&h, PC, &c), 0);
	{
		int d2 = K->dup(sim, c);

		cr_assert_geq(d2, 0);
		cr_assert_eq(K->read(sim, d2, buf, 5), 5);
		kclose(sim, &c);
		cr_assert_eq(K->read(sim, d2, buf, 5), 5, "the session outlives one closed fd");
		kclose(sim, &d2);
	}
	/* The device keeps its session when the host closed every fd: on to STOP_COPY. */
	cr_assert_eq(set_state(&h, SC, &c), 0);
	cr_assert_eq(c, -1);
	kclose(sim, &a);
	kclose(sim, &b);
	hclose(&h);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, stop_copy_to_pre_copy_is_refused_with_an_event)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, PG, 0);
	struct vfiomig_sim_device *np = mig_dev(sim, "0000:04:00.0", VFIOMIG_SIM_MIG_V2, PG, 0);
	struct h h = hopen(sim, sd), hn = hopen(sim, np);
	int fd;

	cr_assert_eq(set_state(&h, SC, &fd), 0);
	vfiomig_sim_events_clear(sim);
	cr_assert_eq(set_state(&h, PC, NULL), -EDEADLK);
	cr_assert_eq(vfiomig_sim_event_count(sim), 1);
	cr_assert_str_eq(vfiomig_sim_event(sim, 0),
			 "0000:03:00.0: STOP_COPY -> PRE_COPY requested (real kernels hang here)");
	cr_assert_eq(set_state(&h, PP, NULL), -EDEADLK);
	cr_assert_str_eq(vfiomig_sim_event(sim, 1),
			 "0000:03:00.0: STOP_COPY -> PRE_COPY_P2P requested (real kernels hang "
			 "here)");
	cr_assert_null(vfiomig_sim_event(sim, 2));
	/* Nothing moved: still STOP_COPY, the data_fd still works. */
	cr_assert_eq(get_state(&h), SC);
	cr_assert_eq(K->read(sim, fd, (uint8_t[8]){ 0 }, 8), 8);
	kclose(sim, &fd);
	/* Without PRE_COPY the target is simply not a state of the device. */
	cr_assert_eq(set_state(&hn, SC, NULL), 0);
	cr_assert_eq(set_state(&hn, PC, NULL), -EINVAL);
	cr_assert(!has_event_prefix(sim, "0000:04:00.0: STOP_COPY -> PRE_COPY requested"));
	hclose(&h);
	hclose(&hn);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, failed_set_copies_back_and_get_reports_the_real_state)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, PG, 0);
	struct h h = hopen(sim, sd);
	int fd;

	/* The walk RUNNING -> RUNNING_P2P -> STOP fails on its second arc. */
	cr_assert_eq(vfiomig_sim_device_fail_transition(sd, STOP, -EIO, false), 0);
	vfiomig_sim_events_clear(sim);
	cr_assert_eq(set_state(&h, STOP, &fd), -EIO);
	cr_assert_eq(fd, -1);
	cr_assert_eq(get_state(&h), RP);
	cr_assert_str_eq(vfiomig_sim_event(sim, 0), "0000:03:00.0: RUNNING -> RUNNING_P2P");
	cr_assert(has_event_prefix(sim, "0000:03:00.0: RUNNING_P2P -> STOP failed"));
	/* Armed once. */
	cr_assert_eq(set_state(&h, STOP, NULL), 0);
	cr_assert_eq(get_state(&h), STOP);

	/* to_error: the device lands in ERROR, its data_fd dies, only a reset helps. */
	cr_assert_eq(set_state(&h, PC, &fd), 0);
	cr_assert_eq(vfiomig_sim_device_fail_transition(sd, SC, -EIO, true), 0);
	cr_assert_eq(set_state(&h, SC, NULL), -EIO);
	cr_assert_eq(get_state(&h), ERR_);
	cr_assert_eq(K->read(sim, fd, (uint8_t[4]){ 0 }, 4), -ENODEV);
	kclose(sim, &fd);
	vfiomig_sim_events_clear(sim);
	for (int s = ERR_; s < NSTATES; s++) {
		cr_assert_eq(set_state(&h, (uint32_t)s, NULL), -EINVAL);
		cr_assert_eq(get_state(&h), ERR_);
	}
	cr_assert(has_event_prefix(sim, "0000:03:00.0: ERROR -> RUNNING refused"));
	cr_assert_eq(vfiomig_sim_device_run(sd, 1), -EBUSY);
	reset(&h);
	cr_assert_eq(get_state(&h), RUN);
	cr_assert(has_event(sim, "0000:03:00.0: RESET"));
	cr_assert_eq(set_state(&h, STOP, NULL), 0);

	/* Knob arguments are checked. */
	cr_assert_eq(vfiomig_sim_device_fail_transition(sd, ERR_, -EIO, false), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_fail_transition(sd, 8, -EIO, false), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_fail_transition(sd, STOP, EIO, false), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_fail_transition(NULL, STOP, -EIO, false), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_fail_data(sd, 0, 1), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_corrupt_data(NULL, 0), -EINVAL);
	hclose(&h);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, reset_zeroes_the_state_and_resets_are_logged_for_every_device)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, 4 * PG, 0);
	struct vfiomig_sim_device *plain = mig_dev(sim, "0000:04:00.0", 0, 0, 0);
	struct h h = hopen(sim, sd), hp = hopen(sim, plain);
	static const uint8_t zero[4 * PG];
	const uint8_t *st;
	size_t len;

	st = vfiomig_sim_device_state(sd, &len);
	cr_assert_eq(len, 4 * PG);
	cr_assert_eq(memcmp(st, zero, len), 0, "a new device's state is zero");
	cr_assert_eq(vfiomig_sim_device_run(sd, 4), 0);
	for (int p = 0; p < 4; p++)
		cr_assert_neq(memcmp(st + p * PG, zero, PG), 0, "run(4) changes all 4 pages");
	reset(&h);
	cr_assert_eq(memcmp(vfiomig_sim_device_state(sd, &len), zero, len), 0);
	reset(&hp);
	cr_assert(has_event(sim, "0000:04:00.0: RESET"));
	/* No migration: no state, no knobs, the features answer -ENOTTY. */
	cr_assert_null(vfiomig_sim_device_state(plain, &len));
	cr_assert_eq(len, 0);
	cr_assert_eq(vfiomig_sim_device_run(plain, 1), -EOPNOTSUPP);
	cr_assert_eq(vfiomig_sim_device_mig_state(plain), -EOPNOTSUPP);
	cr_assert_eq(vfiomig_sim_device_fail_data(plain, 0, -EIO), -EINVAL);
	{
		uint64_t v = 0;
		struct vu_feature_mig_state st2 = { .device_state = STOP };

		cr_assert_eq(feature(&hp, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &v,
				     sizeof(v)), -ENOTTY);
		cr_assert_eq(feature(&hp, VU_DEVICE_FEATURE_SET | VU_FEATURE_MIG_DEVICE_STATE,
				     &st2, sizeof(st2)), -ENOTTY);
		cr_assert_eq(data_size(&hp, &v), -ENOTTY);
	}
	/* The public log has only migration lines; clearing empties it. */
	cr_assert_geq(vfiomig_sim_event_count(sim), 2);
	cr_assert(!has_event_prefix(sim, "open "));
	vfiomig_sim_events_clear(sim);
	cr_assert_eq(vfiomig_sim_event_count(sim), 0);
	cr_assert_null(vfiomig_sim_event(sim, 0));
	cr_assert_geq(sim_event_find(sim, 0, "RESET 0000:04:00.0"), 0, "private log kept");
	hclose(&h);
	hclose(&hp);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, feature_probe_and_argsz_rules)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, PG, 0);
	struct vfiomig_sim_device *old =
		mig_dev(sim, "0000:04:00.0", VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_NO_DATA_SIZE, PG,
			0);
	struct h h = hopen(sim, sd), ho = hopen(sim, old);
	struct {
		struct vu_device_feature hdr;
		uint64_t d;
	} f;
	uint64_t v;

#define FEAT(fl, sz) (f = (typeof(f)){ .hdr = { .argsz = (sz), .flags = (fl) } }, \
		      K->ioctl(sim, h.d, VU_DEVICE_FEATURE, &f))
	cr_assert_eq(FEAT(VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_PROBE | VU_DEVICE_FEATURE_GET,
			  8), 0);
	cr_assert_eq(FEAT(VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_PROBE | VU_DEVICE_FEATURE_SET,
			  8), -EINVAL);
	cr_assert_eq(FEAT(VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_GET, 12), -EINVAL);
	cr_assert_eq(FEAT(VU_FEATURE_MIGRATION | VU_DEVICE_FEATURE_GET, 16), 0);
	cr_assert_eq(f.d, 7);
	cr_assert_eq(FEAT(VU_FEATURE_MIG_DEVICE_STATE | VU_DEVICE_FEATURE_PROBE |
			  VU_DEVICE_FEATURE_GET | VU_DEVICE_FEATURE_SET, 8), 0);
	cr_assert_eq(FEAT(VU_FEATURE_MIG_DEVICE_STATE | VU_DEVICE_FEATURE_SET, 12), -EINVAL);
	cr_assert_eq(get_state(&h), RUN, "a refused SET changed nothing");
	cr_assert_eq(FEAT(VU_FEATURE_MIG_DATA_SIZE | VU_DEVICE_FEATURE_SET, 16), -EINVAL);
	cr_assert_eq(FEAT(VU_FEATURE_MIG_DATA_SIZE | VU_DEVICE_FEATURE_PROBE |
			  VU_DEVICE_FEATURE_GET, 8), 0);
	cr_assert_eq(FEAT(VU_FEATURE_DMA_LOGGING_START | VU_DEVICE_FEATURE_PROBE |
			  VU_DEVICE_FEATURE_SET, 8), -ENOTTY);
#undef FEAT
	/* A pre-6.2 kernel has no MIG_DATA_SIZE. */
	cr_assert_eq(data_size(&ho, &v), -ENOTTY);
	cr_assert_eq(data_size(&h, &v), 0);
	cr_assert_eq(v, REC + END);
	hclose(&h);
	hclose(&ho);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------- pre-copy */

static void check_page_record(const uint8_t *rec, uint64_t index, const uint8_t *state)
{
	uint32_t magic, flags;
	uint64_t idx;

	memcpy(&magic, rec, 4);
	memcpy(&flags, rec + 4, 4);
	memcpy(&idx, rec + 8, 8);
	cr_assert_eq(magic, 0x50474d56u);
	cr_assert_eq(flags, 0);
	cr_assert_eq(idx, index);
	cr_assert_eq(memcmp(rec + 16, state + index * PG, PG), 0, "page %llu content",
		     (unsigned long long)index);
}

static void precopy_reads(uint32_t extra, ssize_t nothing)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG | extra, 4 * PG, 0);
	struct h h = hopen(sim, sd);
	const uint8_t *state = vfiomig_sim_device_state(sd, NULL);
	uint8_t buf[8 * REC];
	uint64_t ini, dirty, ds;
	bool seen[4] = { false };
	int fd;

	cr_assert_eq(vfiomig_sim_device_run(sd, 2), 0);
	cr_assert_eq(set_state(&h, PC, &fd), 0);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), 0);
	cr_assert_eq(ini, 4 * REC);
	cr_assert_eq(dirty, 0);
	cr_assert_eq(data_size(&h, &ds), 0);
	cr_assert_eq(ds, 4 * REC + END);
	/* The initial image, in order; a partial read counts against initial_bytes. */
	cr_assert_eq(K->read(sim, fd, buf, 100), 100);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), 0);
	cr_assert_eq(ini, 4 * REC - 100);
	cr_assert_eq(K->read(sim, fd, buf + 100, 4 * REC), 4 * REC - 100);
	for (int p = 0; p < 4; p++)
		check_page_record(buf + p * REC, (uint64_t)p, state);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), 0);
	cr_assert_eq(ini, 0);
	cr_assert_eq(dirty, 0);
	cr_assert_eq(K->read(sim, fd, buf, sizeof(buf)), nothing);
	/* Pages changed since: dirty, then sent once each. */
	cr_assert_eq(vfiomig_sim_device_run(sd, 2), 0);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), 0);
	cr_assert_eq(ini, 0);
	cr_assert_eq(dirty, 2 * REC);
	cr_assert_eq(data_size(&h, &ds), 0);
	cr_assert_eq(ds, 2 * REC + END);
	cr_assert_eq(K->read(sim, fd, buf, sizeof(buf)), 2 * REC);
	for (int r = 0; r < 2; r++) {
		uint64_t idx;

		memcpy(&idx, buf + r * REC + 8, 8);
		cr_assert_lt(idx, 4);
		cr_assert(!seen[idx], "page %llu sent twice", (unsigned long long)idx);
		seen[idx] = true;
		check_page_record(buf + r * REC, idx, state);
	}
	cr_assert_eq(K->read(sim, fd, buf, sizeof(buf)), nothing);
	/* PRECOPY_INFO rules. */
	{
		struct vu_precopy_info pi = { .argsz = 16 };

		cr_assert_eq(K->ioctl(sim, fd, VU_MIG_GET_PRECOPY_INFO, &pi), -EINVAL);
		cr_assert_eq(K->ioctl(sim, fd, VU_MIG_GET_PRECOPY_INFO, NULL), -EFAULT);
		cr_assert_eq(K->ioctl(sim, fd, VU_DEVICE_GET_INFO, &pi), -ENOTTY);
	}
	cr_assert_eq(set_state(&h, SC, NULL), 0);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), -EINVAL, "STOP_COPY is not PRE_COPY");
	kclose(sim, &fd);
	hclose(&h);
	vfiomig_sim_free(sim);
}

Test(sim_mig, precopy_reads_initial_then_dirty_and_returns_0_when_idle)
{
	precopy_reads(0, 0);
	assert_no_leaks();
}

Test(sim_mig, precopy_reads_answer_enomsg_when_asked_to)
{
	precopy_reads(VFIOMIG_SIM_MIG_ENOMSG, -ENOMSG);
	assert_no_leaks();
}

Test(sim_mig, stop_copy_sends_the_rest_then_the_end)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, 4 * PG, 0);
	struct h h = hopen(sim, sd);
	uint8_t buf[8 * REC];
	uint64_t ds, idx;
	ssize_t last;
	size_t n;
	uint32_t magic;
	int fd;

	cr_assert_eq(set_state(&h, PC, &fd), 0);
	cr_assert_eq(K->read(sim, fd, buf, 2 * REC), 2 * REC);
	cr_assert_eq(vfiomig_sim_device_run(sd, 4), 0); /* pages 0, 1 dirty; 2, 3 still ahead */
	cr_assert_eq(set_state(&h, SC, NULL), 0);
	cr_assert_eq(vfiomig_sim_device_run(sd, 1), -EBUSY);
	cr_assert_eq(data_size(&h, &ds), 0);
	cr_assert_eq(ds, 4 * REC + END);
	n = read_all(sim, fd, buf, sizeof(buf), (const size_t[]){ 7 }, 1, &last);
	cr_assert_eq(last, 0);
	cr_assert_eq(n, 4 * REC + END);
	memcpy(&idx, buf + 8, 8);
	cr_assert_eq(idx, 2, "the initial image's remainder first");
	memcpy(&idx, buf + REC + 8, 8);
	cr_assert_eq(idx, 3);
	memcpy(&magic, buf + 4 * REC, 4);
	cr_assert_eq(magic, 0x444e4556u, "the end record last");
	cr_assert_eq(K->read(sim, fd, buf, sizeof(buf)), 0);
	cr_assert_eq(data_size(&h, &ds), 0);
	cr_assert_eq(ds, 0);
	kclose(sim, &fd);
	hclose(&h);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* -------------------------------------------------------- save, restore */

Test(sim_mig, save_restore_by_hand_in_odd_pieces)
{
	static const size_t rd[] = { 1, 7, 4095, 65536 + 3, 13 };
	static const size_t wr[] = { 65536 + 3, 1, 4095, 7 };
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", FULLMIG, 64 << 10, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", FULLMIG, 64 << 10, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	size_t cap = 64 * REC, len = 0, n;
	uint8_t *buf = malloc(cap);
	ssize_t last;
	int sfd, dfd;

	cr_assert_not_null(buf);
	cr_assert_eq(vfiomig_sim_device_run(src, 10), 0);
	cr_assert_eq(vfiomig_sim_device_run(dst, 3), 0); /* the destination's old state goes */
	cr_assert_eq(set_state(&hs, PC, &sfd), 0);
	cr_assert_eq(set_state(&hd, RES, &dfd), 0);
	/* Three pre-copy rounds with the device running in between. */
	for (int round = 0; round < 3; round++) {
		n = read_all(sim, sfd, buf, cap, rd, 5, &last);
		cr_assert_eq(last, 0);
		write_all(sim, dfd, buf, n, wr, 4);
		len += n;
		cr_assert_eq(vfiomig_sim_device_run(src, 5), 0);
	}
	cr_assert_geq(len, 16 * REC);
	cr_assert_eq(set_state(&hs, PP, NULL), 0);
	cr_assert_eq(set_state(&hs, SC, NULL), 0);
	n = read_all(sim, sfd, buf, cap, rd, 5, &last);
	cr_assert_eq(last, 0);
	write_all(sim, dfd, buf, n, wr, 4);
	cr_assert_eq(set_state(&hd, STOP, NULL), 0);
	cr_assert(same_state(src, dst), "the destination has the source's state");
	cr_assert_eq(K->write(sim, dfd, buf, 1), -ENODEV);
	cr_assert_eq(set_state(&hd, RUN, NULL), 0);
	cr_assert_eq(set_state(&hs, STOP, NULL), 0);
	kclose(sim, &sfd);
	kclose(sim, &dfd);
	free(buf);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, a_new_save_session_starts_clean)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", FULLMIG, 8 * PG, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", FULLMIG, 8 * PG, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	uint8_t buf[16 * REC];
	uint64_t ini, dirty;
	ssize_t last;
	size_t n;
	int sfd, dfd;

	/* A cancelled pre-copy with every page dirty. */
	cr_assert_eq(set_state(&hs, PC, &sfd), 0);
	cr_assert_eq(K->read(sim, sfd, buf, sizeof(buf)), 8 * REC);
	cr_assert_eq(vfiomig_sim_device_run(src, 8), 0);
	cr_assert_eq(precopy_info(&hs, sfd, &ini, &dirty), 0);
	cr_assert_eq(dirty, 8 * REC);
	cr_assert_eq(set_state(&hs, RUN, NULL), 0);
	kclose(sim, &sfd);
	/* The next one owes nothing from the last. */
	cr_assert_eq(set_state(&hs, PC, &sfd), 0);
	cr_assert_eq(precopy_info(&hs, sfd, &ini, &dirty), 0);
	cr_assert_eq(ini, 8 * REC);
	cr_assert_eq(dirty, 0);
	cr_assert_eq(set_state(&hd, RES, &dfd), 0);
	n = read_all(sim, sfd, buf, sizeof(buf), one_piece, 1, &last);
	cr_assert_eq(n, 8 * REC);
	write_all(sim, dfd, buf, n, one_piece, 1);
	cr_assert_eq(vfiomig_sim_device_run(src, 1), 0);
	cr_assert_eq(precopy_info(&hs, sfd, &ini, &dirty), 0);
	cr_assert_eq(dirty, REC);
	cr_assert_eq(set_state(&hs, SC, NULL), 0);
	n = read_all(sim, sfd, buf, sizeof(buf), one_piece, 1, &last);
	cr_assert_eq(n, REC + END);
	write_all(sim, dfd, buf, n, one_piece, 1);
	cr_assert_eq(set_state(&hd, STOP, NULL), 0);
	cr_assert(same_state(src, dst));
	kclose(sim, &sfd);
	kclose(sim, &dfd);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, a_64mib_state_moves_whole)
{
	const uint64_t size = 64ull << 20;
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", VFIOMIG_SIM_MIG_V2, size, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", VFIOMIG_SIM_MIG_V2, size, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	size_t piece = (1u << 20) + 3, total = 0;
	uint8_t *buf = malloc(piece);
	uint64_t ds;
	int sfd, dfd;

	cr_assert_not_null(buf);
	/* Half the pages changed, half left zero; the destination's own pages must go. */
	cr_assert_eq(vfiomig_sim_device_run(src, size / PG / 2), 0);
	cr_assert_eq(vfiomig_sim_device_run(dst, 1000), 0);
	cr_assert_eq(set_state(&hs, SC, &sfd), 0);
	cr_assert_eq(data_size(&hs, &ds), 0);
	cr_assert_eq(ds, size / PG * REC + END);
	cr_assert_eq(set_state(&hd, RES, &dfd), 0);
	for (;;) {
		ssize_t n = K->read(sim, sfd, buf, piece);

		cr_assert_geq(n, 0);
		if (!n)
			break;
		cr_assert_eq(K->write(sim, dfd, buf, (size_t)n), n);
		total += (size_t)n;
	}
	cr_assert_eq(total, ds);
	cr_assert_eq(set_state(&hd, STOP, NULL), 0);
	cr_assert(same_state(src, dst));
	kclose(sim, &sfd);
	kclose(sim, &dfd);
	free(buf);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* An image of a 2-page device with changed content, for the refusal tests. */
struct pair {
	struct vfiomig_sim *sim;
	struct vfiomig_sim_device *src, *dst;
	struct h hs, hd;
	uint8_t img[2 * REC + END + 64];
	size_t len;
};

static void pair_init(struct pair *p)
{
	p->sim = sim_make();
	p->src = mig_dev(p->sim, "0000:03:00.0", FULLMIG, 2 * PG, 0);
	p->dst = mig_dev(p->sim, "0000:04:00.0", FULLMIG, 2 * PG, 0);
	p->hs = hopen(p->sim, p->src);
	p->hd = hopen(p->sim, p->dst);
	cr_assert_eq(vfiomig_sim_device_run(p->src, 1), 0);
	p->len = image_of(&p->hs, p->img, sizeof(p->img));
	cr_assert_eq(p->len, 2 * REC + END);
}

static void pair_fini(struct pair *p)
{
	hclose(&p->hs);
	hclose(&p->hd);
	cr_assert_eq(vfiomig_sim_open_fds(p->sim), 0);
	vfiomig_sim_free(p->sim);
}

/* The destination refuses the image: -EINVAL leaving RESUMING, then ERROR until a reset. */
static void expect_refused(struct pair *p, const uint8_t *img, size_t len, const char *why)
{
	char prefix[96];

	reset(&p->hd);
	vfiomig_sim_events_clear(p->sim);
	cr_assert_eq(restore(&p->hd, img, len, one_piece, 1), -EINVAL, "%s", why);
	cr_assert_eq(get_state(&p->hd), ERR_, "%s", why);
	snprintf(prefix, sizeof(prefix), "0000:04:00.0: RESUMING -> STOP failed (device data "
		 "refused: %s", why);
	cr_assert(has_event_prefix(p->sim, prefix), "%s: %s", why,
		  vfiomig_sim_event(p->sim, 0) ? vfiomig_sim_event(p->sim, 0) : "(none)");
	reset(&p->hd);
}

Test(sim_mig, bad_images_are_refused_leaving_resuming)
{
	struct pair p;
	uint8_t bad[sizeof(p.img) + REC];
	int fd;

	pair_init(&p);
	/* The good image is taken, more than once. */
	cr_assert_eq(restore(&p.hd, p.img, p.len, one_piece, 1), 0);
	cr_assert(same_state(p.src, p.dst));
	cr_assert_eq(restore(&p.hd, p.img, p.len, (const size_t[]){ 3 }, 1), 0);

	expect_refused(&p, p.img, 0, "no end record");
	expect_refused(&p, p.img, REC, "no end record");
	expect_refused(&p, p.img, p.len - 1, "a record cut short");
	memcpy(bad, p.img, p.len);
	memcpy(bad + p.len, p.img, REC);
	expect_refused(&p, bad, p.len + REC, "data after the end record");
	memcpy(bad, p.img, p.len);
	bad[0] ^= 0x80;
	expect_refused(&p, bad, p.len, "bad record magic");
	memcpy(bad, p.img, p.len);
	bad[5] = 1;
	expect_refused(&p, bad, p.len, "unknown record flags");
	memcpy(bad, p.img, p.len);
	bad[8] = 2;
	expect_refused(&p, bad, p.len, "page index out of range");
	memcpy(bad, p.img, p.len);
	bad[REC + 8] = 0; /* page 1's record says page 0 */
	expect_refused(&p, bad, p.len, "stream checksum mismatch");
	memcpy(bad, p.img, p.len);
	bad[2 * REC + 8] = 3;
	expect_refused(&p, bad, p.len, "state size differs");
	memcpy(bad, p.img, p.len);
	bad[2 * REC + 16] ^= 0x10;
	expect_refused(&p, bad, p.len, "state checksum mismatch");
	/* One flipped bit anywhere is caught. */
	for (size_t i = 0; i < p.len; i += (i < 24 || i > p.len - 40) ? 1 : 61) {
		memcpy(bad, p.img, p.len);
		bad[i] ^= (uint8_t)(1u << (i % 8));
		reset(&p.hd);
		cr_assert_eq(restore(&p.hd, bad, p.len, one_piece, 1), -EINVAL, "bit flip at %zu",
			     i);
	}
	/* Garbage. */
	for (size_t i = 0; i < sizeof(bad); i++)
		bad[i] = (uint8_t)(i * 7 + 3);
	expect_refused(&p, bad, sizeof(bad), "bad record magic");
	/* An image of another size. */
	{
		struct vfiomig_sim_device *big = mig_dev(p.sim, "0000:05:00.0", FULLMIG, 3 * PG, 0);
		struct h hb = hopen(p.sim, big);

		reset(&hb);
		cr_assert_eq(restore(&hb, p.img, p.len, one_piece, 1), -EINVAL);
		cr_assert_eq(get_state(&hb), ERR_);
		hclose(&hb);
	}
	/* Leaving RESUMING another way (a reset) needs no valid image. */
	cr_assert_eq(set_state(&p.hd, RES, &fd), 0);
	reset(&p.hd);
	cr_assert_eq(get_state(&p.hd), RUN);
	kclose(p.sim, &fd);
	pair_fini(&p);
	assert_no_leaks();
}

Test(sim_mig, corrupt_data_knob_is_caught_by_the_destination)
{
	const size_t where[] = { 0, 9, 16 + 100, REC + 4000, 2 * REC + 20, 2 * REC + END - 1 };
	struct pair p;

	pair_init(&p);
	for (size_t i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		uint8_t img[sizeof(p.img)];
		ssize_t last;
		size_t n;
		int fd;

		cr_assert_eq(vfiomig_sim_device_corrupt_data(p.src, where[i]), 0);
		cr_assert_eq(set_state(&p.hs, SC, &fd), 0);
		n = read_all(p.sim, fd, img, sizeof(img), (const size_t[]){ 1000 }, 1, &last);
		cr_assert_eq(n, p.len);
		cr_assert_eq(last, 0);
		cr_assert_eq(set_state(&p.hs, STOP, NULL), 0);
		kclose(p.sim, &fd);
		cr_assert_neq(memcmp(img, p.img, n), 0);
		cr_assert_eq(img[where[i]] ^ p.img[where[i]], 0x01, "one bit at byte %zu",
			     where[i]);
		reset(&p.hd);
		cr_assert_eq(restore(&p.hd, img, n, one_piece, 1), -EINVAL, "corrupt at %zu",
			     where[i]);
		cr_assert_eq(get_state(&p.hd), ERR_);
	}
	/* Disarmed after firing: the next image is clean. */
	{
		uint8_t img[sizeof(p.img)];
		size_t n = image_of(&p.hs, img, sizeof(img));

		cr_assert_eq(n, p.len);
		cr_assert_eq(memcmp(img, p.img, n), 0);
	}
	pair_fini(&p);
	assert_no_leaks();
}

Test(sim_mig, fail_data_knob_errors_or_truncates_reads)
{
	struct pair p;
	uint8_t img[sizeof(p.img)];
	ssize_t last;
	size_t n;
	int fd;

	pair_init(&p);
	/* An error after 5000 bytes: reads stop there, fail once, then go on. */
	cr_assert_eq(vfiomig_sim_device_fail_data(p.src, 5000, -EIO), 0);
	cr_assert_eq(set_state(&p.hs, SC, &fd), 0);
	cr_assert_eq(K->read(p.sim, fd, img, 8192), 5000);
	cr_assert_eq(K->read(p.sim, fd, img + 5000, 8192), -EIO);
	n = read_all(p.sim, fd, img + 5000, sizeof(img) - 5000, one_piece, 1, &last);
	cr_assert_eq(5000 + n, p.len);
	cr_assert_eq(memcmp(img, p.img, p.len), 0, "nothing lost around the error");
	cr_assert_eq(set_state(&p.hs, STOP, NULL), 0);
	kclose(p.sim, &fd);
	/* err 0: a 0-byte read early, i.e. a truncated save the destination refuses. */
	cr_assert_eq(vfiomig_sim_device_fail_data(p.src, REC + 10, 0), 0);
	cr_assert_eq(set_state(&p.hs, SC, &fd), 0);
	n = read_all(p.sim, fd, img, sizeof(img), (const size_t[]){ 4096 }, 1, &last);
	cr_assert_eq(last, 0);
	cr_assert_eq(n, REC + 10);
	cr_assert_eq(set_state(&p.hs, STOP, NULL), 0);
	kclose(p.sim, &fd);
	expect_refused(&p, img, n, "a record cut short");
	pair_fini(&p);
	assert_no_leaks();
}

/* ------------------------------------------------------------- the page sum */

#define FNV_INIT  0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull
#define BIG_PAGES 80u /* past the 64 pages whose end record carries the state hash */

/* The chain of both 0.1 checksums: h = (h ^ w) * prime over 64-bit words. */
static uint64_t fnv_words(uint64_t h, const uint8_t *p, size_t len)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w;

		memcpy(&w, p + i, sizeof(w));
		h = (h ^ w) * FNV_PRIME;
	}
	return h;
}

/* After an edit of an image's page records: its end record (last) gets their checksum again. */
static void fix_stream_checksum(uint8_t *img, size_t len)
{
	uint64_t h = fnv_words(FNV_INIT, img, len - END);

	memcpy(img + len - END + 24, &h, sizeof(h));
}

static uint32_t end_flags(const uint8_t *img, size_t len)
{
	uint32_t f;

	memcpy(&f, img + len - END + 4, sizeof(f));
	return f;
}

static uint64_t end_state_checksum(const uint8_t *img, size_t len)
{
	uint64_t v;

	memcpy(&v, img + len - END + 16, sizeof(v));
	return v;
}

/* Restore an image into a reset device: refused for `why`, leaving it in ERROR. */
static void refused_for(struct h *h, const uint8_t *img, size_t len, const char *why)
{
	char prefix[128];

	reset(h);
	vfiomig_sim_events_clear(h->sim);
	cr_assert_eq(restore(h, img, len, one_piece, 1), -EINVAL, "%s", why);
	cr_assert_eq(get_state(h), ERR_, "%s", why);
	snprintf(prefix, sizeof(prefix), "%s: RESUMING -> STOP failed (device data refused: %s",
		 vfiomig_sim_device_name(h->sd), why);
	cr_assert(has_event_prefix(h->sim, prefix), "%s: %s", why,
		  vfiomig_sim_event(h->sim, 0) ? vfiomig_sim_event(h->sim, 0) : "(none)");
	reset(h);
}

Test(sim_mig, small_states_end_with_the_state_hash_bigger_ones_with_the_page_sum)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *small = mig_dev(sim, "0000:03:00.0", FULLMIG, 64 * PG, 0);
	struct vfiomig_sim_device *big = mig_dev(sim, "0000:04:00.0", FULLMIG, 65 * PG, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:05:00.0", FULLMIG, 65 * PG, 0);
	struct h hs = hopen(sim, small), hb = hopen(sim, big), hd = hopen(sim, dst);
	size_t cap = 65 * REC + END, n, len;
	uint8_t *img = malloc(cap);
	const uint8_t *state;

	cr_assert_not_null(img);
	/* Up to 64 pages: flags 0 and the hash of the whole state, as 0.1 wrote. */
	cr_assert_eq(vfiomig_sim_device_run(small, 10), 0);
	n = image_of(&hs, img, cap);
	cr_assert_eq(n, 64 * REC + END);
	state = vfiomig_sim_device_state(small, &len);
	cr_assert_eq(end_flags(img, n), 0);
	cr_assert_eq(end_state_checksum(img, n), fnv_words(FNV_INIT, state, len));
	/* One page more: flags 1, the page sum, and the image loads. */
	cr_assert_eq(vfiomig_sim_device_run(big, 10), 0);
	n = image_of(&hb, img, cap);
	cr_assert_eq(n, 65 * REC + END);
	cr_assert_eq(end_flags(img, n), 1);
	cr_assert_eq(restore(&hd, img, n, (const size_t[]){ 5000 }, 1), 0);
	cr_assert(same_state(big, dst));
	free(img);
	hclose(&hs);
	hclose(&hb);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, the_page_sum_catches_a_flipped_byte_a_swapped_page_and_a_missing_page)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", FULLMIG, BIG_PAGES * PG, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", FULLMIG, BIG_PAGES * PG, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	size_t cap = BIG_PAGES * REC + END, n;
	uint8_t *img = malloc(cap), *bad = malloc(cap + REC);
	uint64_t a, b;

	cr_assert(img && bad);
	cr_assert_eq(vfiomig_sim_device_run(src, BIG_PAGES), 0); /* every page, each different */
	n = image_of(&hs, img, cap);
	cr_assert_eq(n, cap);
	cr_assert_eq(end_flags(img, n), 1);
	cr_assert_eq(restore(&hd, img, n, one_piece, 1), 0);
	cr_assert(same_state(src, dst));

	/*
	 * Each edit below keeps the stream checksum right: only the state
	 * checksum can see it. A flipped bit or byte, in any page, anywhere.
	 */
	for (size_t p = 0; p < BIG_PAGES; p += 13) {
		size_t at = p * REC + 16 + (p * 577) % PG;

		memcpy(bad, img, n);
		bad[at] ^= (uint8_t)(1u << (p % 8));
		fix_stream_checksum(bad, n);
		refused_for(&hd, bad, n, "state checksum mismatch");
		memcpy(bad, img, n);
		bad[at] = (uint8_t)~bad[at];
		fix_stream_checksum(bad, n);
		refused_for(&hd, bad, n, "state checksum mismatch");
	}
	/* Two pages swapped: each record names the other's index. */
	memcpy(bad, img, n);
	a = 5;
	b = 61;
	memcpy(bad + 5 * REC + 8, &b, 8);
	memcpy(bad + 61 * REC + 8, &a, 8);
	fix_stream_checksum(bad, n);
	refused_for(&hd, bad, n, "state checksum mismatch");
	/* Two neighbours swapped. */
	memcpy(bad, img, n);
	a = 0;
	b = 1;
	memcpy(bad + 8, &b, 8);
	memcpy(bad + REC + 8, &a, 8);
	fix_stream_checksum(bad, n);
	refused_for(&hd, bad, n, "state checksum mismatch");
	/* A page missing (the reset destination keeps zeros there). */
	memcpy(bad, img, 7 * REC);
	memcpy(bad + 7 * REC, img + 8 * REC, n - 8 * REC);
	fix_stream_checksum(bad, n - REC);
	refused_for(&hd, bad, n - REC, "state checksum mismatch");
	/* A page sent twice, the second time at the wrong index. */
	memcpy(bad, img, n - END);
	memcpy(bad + n - END, img + 9 * REC, REC);
	a = 10;
	memcpy(bad + n - END + 8, &a, 8);
	memcpy(bad + n - END + REC, img + n - END, END);
	fix_stream_checksum(bad, n + REC);
	refused_for(&hd, bad, n + REC, "state checksum mismatch");
	/* The checksum is about the state: a page the destination already holds may stay away. */
	cr_assert_eq(restore(&hd, img, n, one_piece, 1), 0);
	memcpy(bad, img, 7 * REC);
	memcpy(bad + 7 * REC, img + 8 * REC, n - 8 * REC);
	fix_stream_checksum(bad, n - REC);
	cr_assert_eq(restore(&hd, bad, n - REC, one_piece, 1), 0);
	cr_assert(same_state(src, dst));
	free(img);
	free(bad);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, a_big_image_with_the_state_hash_of_0_1_still_loads)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", FULLMIG, BIG_PAGES * PG, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", FULLMIG, BIG_PAGES * PG, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	size_t cap = BIG_PAGES * REC + END, n, len;
	uint8_t *img = malloc(cap);
	const uint8_t *state;
	uint64_t h;
	uint32_t zero = 0;

	cr_assert_not_null(img);
	cr_assert_eq(vfiomig_sim_device_run(src, 30), 0);
	n = image_of(&hs, img, cap);
	/* What 0.1 wrote for this state: flags 0, the hash of the whole state. */
	state = vfiomig_sim_device_state(src, &len);
	h = fnv_words(FNV_INIT, state, len);
	memcpy(img + n - END + 4, &zero, 4);
	memcpy(img + n - END + 16, &h, 8);
	cr_assert_eq(restore(&hd, img, n, one_piece, 1), 0);
	cr_assert(same_state(src, dst));
	h ^= 1;
	memcpy(img + n - END + 16, &h, 8);
	refused_for(&hd, img, n, "state checksum mismatch");
	/* Unknown end flags are refused. */
	h ^= 1;
	memcpy(img + n - END + 16, &h, 8);
	img[n - END + 6] = 1;
	refused_for(&hd, img, n, "unknown record flags");
	free(img);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/*
 * The page sum follows every way the state changes: the device running
 * between rounds and by itself (dirty=), a reset, pages received over a
 * destination's own older state, and pages sent again unchanged.
 */
Test(sim_mig, the_page_sum_follows_runs_resets_and_rounds)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", FULLMIG, BIG_PAGES * PG, 3);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", FULLMIG, BIG_PAGES * PG, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	size_t cap = 4 * BIG_PAGES * REC, n;
	uint8_t *buf = malloc(cap);
	ssize_t last;
	int sfd, dfd;

	cr_assert_not_null(buf);
	for (int pass = 0; pass < 3; pass++) {
		cr_assert_eq(vfiomig_sim_device_run(src, 20 + 10 * (uint64_t)pass), 0);
		cr_assert_eq(vfiomig_sim_device_run(dst, 7), 0); /* its own older state */
		if (pass == 2)
			reset(&hs); /* all zero again: the sum starts over */
		cr_assert_eq(set_state(&hs, PC, &sfd), 0);
		cr_assert_eq(set_state(&hd, RES, &dfd), 0);
		for (int round = 0; round < 4; round++) {
			n = read_all(sim, sfd, buf, cap, (const size_t[]){ 3 * REC + 5 }, 1, &last);
			write_all(sim, dfd, buf, n, (const size_t[]){ 999 }, 1);
			cr_assert_eq(vfiomig_sim_device_run(src, 4), 0);
		}
		cr_assert_eq(set_state(&hs, SC, NULL), 0);
		n = read_all(sim, sfd, buf, cap, one_piece, 1, &last);
		cr_assert_eq(last, 0);
		cr_assert_eq(end_flags(buf, n), 1);
		write_all(sim, dfd, buf, n, (const size_t[]){ 4111 }, 1);
		cr_assert_eq(set_state(&hd, STOP, NULL), 0, "pass %d", pass);
		cr_assert(same_state(src, dst), "pass %d", pass);
		cr_assert_eq(set_state(&hs, RUN, NULL), 0);
		cr_assert_eq(set_state(&hd, RUN, NULL), 0);
		kclose(sim, &sfd);
		kclose(sim, &dfd);
	}
	free(buf);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ copy cost */

#define COPYMIG (FULLMIG | VFIOMIG_SIM_MIG_COST_COPY)

Test(sim_mig, a_copy_cost_device_moves_the_state_without_checksums)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", COPYMIG, BIG_PAGES * PG, 2);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", COPYMIG, BIG_PAGES * PG, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst);
	size_t cap = 4 * BIG_PAGES * REC, n, got;
	uint8_t *buf = malloc(cap);
	const uint8_t *state = vfiomig_sim_device_state(src, NULL);
	uint64_t hsrc, hdst, zero;
	ssize_t last;
	int sfd, dfd;

	cr_assert_not_null(buf);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &zero), 0);
	cr_assert_eq(zero, 0, "a zero state sums to 0");
	cr_assert_eq(vfiomig_sim_device_run(src, BIG_PAGES), 0);
	cr_assert_eq(vfiomig_sim_device_run(dst, 9), 0); /* its own older state */
	cr_assert_eq(set_state(&hs, PC, &sfd), 0);
	cr_assert_eq(set_state(&hd, RES, &dfd), 0);
	/* The same records as any device: header, then the page straight from the state. */
	cr_assert_eq(K->read(sim, sfd, buf, REC), REC);
	check_page_record(buf, 0, state);
	write_all(sim, dfd, buf, REC, one_piece, 1);
	/* A page changing while half read goes again whole. */
	got = (size_t)K->read(sim, sfd, buf, 100); /* page 1, part of it */
	cr_assert_eq(got, 100);
	cr_assert_eq(vfiomig_sim_device_run(src, BIG_PAGES), 0);
	n = read_all(sim, sfd, buf + got, cap - got, (const size_t[]){ 3 * REC + 5 }, 1, &last);
	write_all(sim, dfd, buf, got + n, (const size_t[]){ 999 }, 1);
	for (int round = 0; round < 3; round++) {
		cr_assert_eq(vfiomig_sim_device_run(src, 5), 0);
		n = read_all(sim, sfd, buf, cap, (const size_t[]){ 7 * REC + 3 }, 1, &last);
		write_all(sim, dfd, buf, n, (const size_t[]){ 4111 }, 1);
	}
	cr_assert_eq(set_state(&hs, SC, NULL), 0);
	n = read_all(sim, sfd, buf, cap, one_piece, 1, &last);
	cr_assert_eq(last, 0);
	cr_assert_geq(n, END);
	cr_assert_eq(end_flags(buf, n), 2, "an unchecked end record");
	cr_assert_eq(end_state_checksum(buf, n), 0);
	write_all(sim, dfd, buf, n, (const size_t[]){ 5 }, 1);
	cr_assert_eq(set_state(&hd, STOP, NULL), 0);
	cr_assert(same_state(src, dst));
	/* The caller's check, after the fact. */
	cr_assert_eq(vfiomig_sim_device_state_hash(src, &hsrc), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &hdst), 0);
	cr_assert_eq(hsrc, hdst);
	cr_assert_neq(hsrc, 0);
	kclose(sim, &sfd);
	kclose(sim, &dfd);
	free(buf);
	hclose(&hs);
	hclose(&hd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, a_copy_cost_device_checks_structure_only_and_the_hash_tells)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", COPYMIG, BIG_PAGES * PG, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", COPYMIG, BIG_PAGES * PG, 0);
	struct vfiomig_sim_device *chk = mig_dev(sim, "0000:05:00.0", FULLMIG, BIG_PAGES * PG, 0);
	struct h hs = hopen(sim, src), hd = hopen(sim, dst), hc = hopen(sim, chk);
	size_t cap = BIG_PAGES * REC + END, n;
	uint8_t *img = malloc(cap), *bad = malloc(cap);
	uint64_t hsrc, hdst;

	cr_assert(img && bad);
	cr_assert_eq(vfiomig_sim_device_run(src, BIG_PAGES), 0);
	n = image_of(&hs, img, cap);
	cr_assert_eq(n, cap);
	cr_assert_eq(vfiomig_sim_device_state_hash(src, &hsrc), 0);
	/* A checking device wants checksums. */
	refused_for(&hc, img, n, "no checksums");
	/* The structure is still checked. */
	refused_for(&hd, img, n - 1, "a record cut short");
	refused_for(&hd, img, n - END, "no end record");
	memcpy(bad, img, n);
	bad[3 * REC + 8] = BIG_PAGES;
	refused_for(&hd, bad, n, "page index out of range");
	memcpy(bad, img, n);
	bad[n - END + 8] = BIG_PAGES + 1;
	refused_for(&hd, bad, n, "state size differs");
	memcpy(bad, img, n);
	bad[n - END + 4] = 3;
	refused_for(&hd, bad, n, "unknown record flags");
	/* A flipped bit in a page goes in; the state hash shows it. */
	memcpy(bad, img, n);
	bad[40 * REC + 16 + 1234] ^= 0x20;
	cr_assert_eq(restore(&hd, bad, n, one_piece, 1), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &hdst), 0);
	cr_assert_neq(hdst, hsrc);
	cr_assert(!same_state(src, dst));
	cr_assert_eq(restore(&hd, img, n, one_piece, 1), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &hdst), 0);
	cr_assert_eq(hdst, hsrc);
	/* It takes a checked image too, and a checking device's hash is the same sum. */
	n = image_of(&hc, img, cap); /* chk's state: zero */
	cr_assert_eq(end_flags(img, n), 1);
	cr_assert_eq(restore(&hd, img, n, one_piece, 1), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &hdst), 0);
	cr_assert_eq(hdst, 0);
	cr_assert_eq(set_state(&hc, RUN, NULL), 0);
	cr_assert_eq(vfiomig_sim_device_run(chk, BIG_PAGES), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(chk, &hsrc), 0);
	n = image_of(&hc, img, cap);
	cr_assert_eq(end_state_checksum(img, n), hsrc, "the end record's page sum");
	cr_assert_eq(restore(&hd, img, n, (const size_t[]){ 333 }, 1), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &hdst), 0);
	cr_assert_eq(hdst, hsrc);
	cr_assert(same_state(chk, dst));
	/* corrupt_data: the destination cannot tell, the hash can. */
	cr_assert_eq(vfiomig_sim_device_corrupt_data(src, 17 * REC + 100), 0);
	n = image_of(&hs, img, cap);
	cr_assert_eq(restore(&hd, img, n, one_piece, 1), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(src, &hsrc), 0);
	cr_assert_eq(vfiomig_sim_device_state_hash(dst, &hdst), 0);
	cr_assert_neq(hsrc, hdst);
	/* Bad arguments. */
	cr_assert_eq(vfiomig_sim_device_state_hash(NULL, &hsrc), -EINVAL);
	cr_assert_eq(vfiomig_sim_device_state_hash(src, NULL), -EINVAL);
	{
		VFIOMIG_OPTS(sim_device_opts, o, .name = "0000:06:00.0");
		struct vfiomig_sim_device *plain = NULL;

		cr_assert_eq(vfiomig_sim_device_add(sim, &o, &plain), 0);
		cr_assert_eq(vfiomig_sim_device_state_hash(plain, &hsrc), -EOPNOTSUPP);
	}
	free(img);
	free(bad);
	hclose(&hs);
	hclose(&hd);
	hclose(&hc);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, cost_copy_in_a_spec_makes_a_copy_cost_device_whatever_the_key_order)
{
	static const char *const specs[] = { "sim:pci,mig=v2,state=8K,cost=copy",
					     "sim:pci,cost=copy,mig=v2-precopy,state=8K",
					     "sim:pci,mig=v2,state=8K,cost=check" };
	struct vfiomig_sim *sim = sim_make();
	uint8_t img[2 * REC + END];

	for (size_t i = 0; i < sizeof(specs) / sizeof(specs[0]); i++) {
		struct vfiomig_sim_device *d = NULL;
		struct h h;
		size_t n;

		cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, specs[i], &d), 0, "%s: %s",
			     specs[i], sim_last_error(sim));
		h = hopen(sim, d);
		n = image_of(&h, img, sizeof(img));
		cr_assert_eq(n, sizeof(img));
		cr_assert_eq(end_flags(img, n), i < 2 ? 2 : 0, "%s", specs[i]);
		hclose(&h);
	}
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* --------------------------------------------------------------------- v1 */

struct v1 {
	struct h h;
	uint64_t off;  /* region file offset */
	uint64_t size;
	void *map;     /* the data section, or NULL */
};

static uint64_t v1_reg(struct v1 *v, uint64_t reg, unsigned int width)
{
	uint64_t val = 0;

	cr_assert_eq(K->pread(v->h.sim, v->h.d, &val, width, v->off + reg), (ssize_t)width,
		     "register 0x%llx", (unsigned long long)reg);
	return val;
}

static int v1_write(struct v1 *v, uint64_t reg, unsigned int width, uint64_t val)
{
	ssize_t n = K->pwrite(v->h.sim, v->h.d, &val, width, v->off + reg);

	return n == (ssize_t)width ? 0 : (int)n;
}

static struct v1 v1_open(struct vfiomig_sim *sim, struct vfiomig_sim_device *sd, bool map)
{
	struct v1 v = { .h = hopen(sim, sd) };
	struct vu_region_info ri = { .argsz = sizeof(ri), .index = 9 };

	cr_assert_eq(K->ioctl(sim, v.h.d, VU_DEVICE_GET_REGION_INFO, &ri), 0);
	v.off = ri.offset;
	v.size = ri.size;
	if (map)
		cr_assert_eq(K->mmap(sim, v.h.d, v.off + PG, (size_t)(v.size - PG),
				     PROT_READ | PROT_WRITE, &v.map), 0);
	return v;
}

static void v1_close(struct v1 *v)
{
	if (v->map)
		cr_assert_eq(K->munmap(v->h.sim, v->map, (size_t)(v->size - PG)), 0);
	hclose(&v->h);
}

/* The v1 save loop: chunks appended to buf; returns the bytes. */
static size_t v1_save(struct v1 *v, uint8_t *buf, size_t cap)
{
	size_t got = 0;

	while (v1_reg(v, 8, 8)) {
		uint64_t off = v1_reg(v, 16, 8), n = v1_reg(v, 24, 8);

		cr_assert_eq(off, PG);
		cr_assert_leq(n, v->size - PG);
		cr_assert_leq(n, cap - got);
		if (v->map)
			memcpy(buf + got, v->map, (size_t)n);
		else
			cr_assert_eq(K->pread(v->h.sim, v->h.d, buf + got, (size_t)n, v->off + off),
				     (ssize_t)n);
		got += (size_t)n;
	}
	return got;
}

/* The v1 resume loop, in chunks of at most `chunk` bytes; returns the first error. */
static int v1_load(struct v1 *v, const uint8_t *buf, size_t len, size_t chunk)
{
	for (size_t done = 0; done < len;) {
		size_t n = len - done < chunk ? len - done : chunk;
		int ret;

		cr_assert_eq(v1_reg(v, 16, 8), PG);
		if (v->map)
			memcpy(v->map, buf + done, n);
		else
			cr_assert_eq(K->pwrite(v->h.sim, v->h.d, buf + done, n, v->off + PG),
				     (ssize_t)n);
		ret = v1_write(v, 24, 8, n);
		if (ret)
			return ret;
		done += n;
	}
	return 0;
}

Test(sim_mig, v1_region_layout_and_register_widths)
{
	struct vfiomig_sim *sim = sim_make();
	VFIOMIG_OPTS(sim_device_opts, o, .name = "0000:03:00.0", .migration = VFIOMIG_SIM_MIG_V1,
		     .v1_data_size = 8 * PG);
	struct vfiomig_sim_device *sd = NULL, *tr;
	struct vu_device_info di = { .argsz = sizeof(di) };
	uint8_t buf[256];
	struct vu_region_info ri;
	struct vu_region_info_cap_sparse_mmap sp;
	struct vu_region_sparse_mmap_area area;
	struct vu_region_info_cap_type ct;
	struct v1 v;
	uint64_t val = 0;

	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &sd), 0, "%s", sim_last_error(sim));
	v = v1_open(sim, sd, false);
	cr_assert_eq(K->ioctl(sim, v.h.d, VU_DEVICE_GET_INFO, &di), 0);
	cr_assert_eq(di.num_regions, 10);
	memset(buf, 0, sizeof(buf));
	ri = (struct vu_region_info){ .argsz = sizeof(buf), .index = 9 };
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(K->ioctl(sim, v.h.d, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	cr_assert_eq(ri.flags, VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE |
			       VU_REGION_INFO_FLAG_MMAP | VU_REGION_INFO_FLAG_CAPS);
	cr_assert_eq(ri.size, PG + 8 * PG);
	memcpy(&sp, buf + ri.cap_offset, sizeof(sp));
	cr_assert_eq(sp.header.id, VU_REGION_INFO_CAP_SPARSE_MMAP);
	cr_assert_eq(sp.nr_areas, 1);
	memcpy(&area, buf + ri.cap_offset + sizeof(sp), sizeof(area));
	cr_assert_eq(area.offset, PG);
	cr_assert_eq(area.size, 8 * PG);
	memcpy(&ct, buf + sp.header.next, sizeof(ct));
	cr_assert_eq(ct.header.id, VU_REGION_INFO_CAP_TYPE);
	cr_assert_eq(ct.type, 3);
	cr_assert_eq(ct.subtype, 1);
	/* The registers are not mappable; the data section is. */
	{
		void *p;

		cr_assert_eq(K->mmap(sim, v.h.d, v.off, PG, PROT_READ, &p), -EINVAL);
	}
	/* Native width, aligned, nothing else. */
	cr_assert_eq(v1_reg(&v, 0, 4), VU_V1_STATE_RUNNING);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 8, v.off), -EINVAL);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 2, v.off), -EINVAL);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 4, v.off + 2), -EINVAL);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 4, v.off + 8), -EINVAL);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 8, v.off + 12), -EINVAL);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 8, v.off + 32), -EINVAL);
	cr_assert_eq(K->pread(sim, v.h.d, &val, 8, v.off + PG - 4), -EINVAL);
	cr_assert_eq(v1_reg(&v, 4, 4), 0);
	cr_assert_eq(v1_reg(&v, 8, 8), 0);
	cr_assert_eq(v1_reg(&v, 16, 8), PG, "data_offset is never 0");
	cr_assert_eq(v1_write(&v, 8, 8, 1), -EINVAL, "pending_bytes is read-only");
	cr_assert_eq(v1_write(&v, 16, 8, 1), -EINVAL, "data_offset is read-only");
	cr_assert_eq(v1_write(&v, 24, 8, 1), -EINVAL, "data_size is written only when resuming");
	cr_assert_eq(v1_write(&v, 0, 8, 1), -EINVAL);
	/* The data section is plain memory, shortened at the region's end. */
	cr_assert_eq(K->pwrite(sim, v.h.d, "abc", 3, v.off + PG), 3);
	cr_assert_eq(K->pread(sim, v.h.d, buf, 16, v.off + v.size - 8), 8);
	/* No VFIO_DEVICE_FEATURE on a v1 device (a pre-5.18 kernel). */
	{
		uint64_t f = 0;

		cr_assert_eq(feature(&v.h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &f,
				     sizeof(f)), -ENOTTY);
	}
	v1_close(&v);

	/* Trapped: no MMAP, no sparse cap; only the TYPE cap. */
	o.name = "0000:04:00.0";
	o.migration = VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V1_TRAPPED;
	o.v1_data_size = 0;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &tr), 0);
	v = v1_open(sim, tr, false);
	memset(buf, 0, sizeof(buf));
	ri = (struct vu_region_info){ .argsz = sizeof(buf), .index = 9 };
	memcpy(buf, &ri, sizeof(ri));
	cr_assert_eq(K->ioctl(sim, v.h.d, VU_DEVICE_GET_REGION_INFO, buf), 0);
	memcpy(&ri, buf, sizeof(ri));
	cr_assert_eq(ri.flags, VU_REGION_INFO_FLAG_READ | VU_REGION_INFO_FLAG_WRITE |
			       VU_REGION_INFO_FLAG_CAPS);
	cr_assert_eq(ri.size, PG + (64 << 10));
	memcpy(&ct, buf + ri.cap_offset, sizeof(ct));
	cr_assert_eq(ct.header.id, VU_REGION_INFO_CAP_TYPE);
	cr_assert_eq(ct.header.next, 0);
	{
		void *p;

		cr_assert_eq(K->mmap(sim, v.h.d, v.off + PG, PG, PROT_READ, &p), -EINVAL);
	}
	v1_close(&v);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, v1_reserved_bits_survive_and_bad_states_are_refused)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", VFIOMIG_SIM_MIG_V1, PG, 0);
	struct v1 v = v1_open(sim, sd, false);

	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | VU_V1_STATE_RUNNING), 0);
	cr_assert_eq(v1_reg(&v, 0, 4), 0x21);
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 3), 0);
	cr_assert_eq(v1_reg(&v, 0, 4), 0x23);
	cr_assert_eq(vfiomig_sim_device_mig_state(sd), PC);
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 7), -EINVAL);
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 5), -EINVAL);
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 6), -EINVAL, "the host cannot ask for 110");
	cr_assert_eq(v1_reg(&v, 0, 4), 0x23);
	/* Stop-and-copy cannot go back to pre-copy or to resuming. */
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 2), 0);
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 3), -EINVAL);
	cr_assert_eq(v1_write(&v, 0, 4, 0x20 | 4), -EINVAL);
	cr_assert_eq(v1_reg(&v, 0, 4), 0x22);
	/* Reserved bits a write sets are kept as written (here cleared). */
	cr_assert_eq(v1_write(&v, 0, 4, 0), 0);
	cr_assert_eq(v1_reg(&v, 0, 4), 0);
	cr_assert_eq(v1_write(&v, 0, 4, 0x80000000u | 1), 0);
	cr_assert_eq(v1_reg(&v, 0, 4), 0x80000001u);
	/* A reset is power-on: running, no reserved bits. */
	reset(&v.h);
	cr_assert_eq(v1_reg(&v, 0, 4), 1);
	v1_close(&v);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* extra: more migration flags for both devices. */
static void v1_round_trip(bool src_map, bool dst_map, size_t chunk, uint32_t extra)
{
	struct vfiomig_sim *sim = sim_make();
	VFIOMIG_OPTS(sim_device_opts, o, .name = "0000:03:00.0",
		     .migration = VFIOMIG_SIM_MIG_V1 | extra, .state_size = 16 * PG,
		     .v1_data_size = 3 * PG);
	struct vfiomig_sim_device *src = NULL, *dst = NULL;
	size_t cap = 64 * REC, len = 0, n;
	uint8_t *buf = malloc(cap);
	struct v1 vs, vd;
	char got[256];

	cr_assert_not_null(buf);
	if (!src_map)
		o.migration |= VFIOMIG_SIM_MIG_V1_TRAPPED;
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &src), 0);
	o.name = "0000:04:00.0";
	o.migration = VFIOMIG_SIM_MIG_V1 | extra | (dst_map ? 0 : VFIOMIG_SIM_MIG_V1_TRAPPED);
	cr_assert_eq(vfiomig_sim_device_add(sim, &o, &dst), 0);
	vs = v1_open(sim, src, src_map);
	vd = v1_open(sim, dst, dst_map);
	cr_assert_eq(vfiomig_sim_device_run(src, 16), 0);

	/* Pre-copy (011): everything once, then only what changes; 0 means "nothing now". */
	vfiomig_sim_events_clear(sim);
	cr_assert_eq(v1_write(&vs, 0, 4, 3), 0);
	arc_path(sim, "0000:03:00.0", got, sizeof(got));
	cr_assert_str_eq(got, "RUNNING>PRE_COPY", "v1 steps logged with v2 names");
	cr_assert_eq(v1_reg(&vs, 8, 8), 16 * REC);
	n = v1_save(&vs, buf, cap);
	cr_assert_eq(n, 16 * REC);
	len += n;
	cr_assert_eq(v1_reg(&vs, 8, 8), 0);
	cr_assert_eq(vfiomig_sim_device_run(src, 2), 0);
	cr_assert_eq(v1_reg(&vs, 8, 8), 2 * REC);
	len += v1_save(&vs, buf + len, cap - len);
	/* Stop-and-copy (010): the rest and the end; pending 0 is the end. */
	cr_assert_eq(v1_write(&vs, 0, 4, 2), 0);
	cr_assert_eq(v1_reg(&vs, 8, 8), END);
	len += v1_save(&vs, buf + len, cap - len);
	cr_assert_eq(len, 18 * REC + END);
	cr_assert_eq(v1_write(&vs, 0, 4, 0), 0);

	/* Resume (100): chunks of the caller's size, no bigger than the data section. */
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_reg(&vd, 8, 8), 0);
	cr_assert_eq(v1_write(&vd, 24, 8, 3 * PG + 1), -EINVAL);
	cr_assert_eq(v1_load(&vd, buf, len, chunk), 0);
	cr_assert_eq(v1_write(&vd, 0, 4, 0), 0);
	cr_assert(same_state(src, dst));
	cr_assert_eq(v1_write(&vd, 0, 4, 1), 0);
	v1_close(&vs);
	v1_close(&vd);
	free(buf);
	cr_assert_eq(vfiomig_sim_live_maps(sim), 0);
	vfiomig_sim_free(sim);
}

Test(sim_mig, v1_save_by_pread_restore_through_mmap)
{
	v1_round_trip(false, true, 3 * PG, 0);
	assert_no_leaks();
}

Test(sim_mig, v1_save_through_mmap_restore_by_pwrite_in_odd_chunks)
{
	v1_round_trip(true, false, 4095, 0);
	assert_no_leaks();
}

Test(sim_mig, v1_copy_cost_devices_round_trip)
{
	v1_round_trip(true, false, 4095, VFIOMIG_SIM_MIG_COST_COPY);
	v1_round_trip(false, true, 3 * PG, VFIOMIG_SIM_MIG_COST_COPY);
	assert_no_leaks();
}

Test(sim_mig, v1_refuses_bad_data_and_failed_writes_keep_or_break_the_state)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *src = mig_dev(sim, "0000:03:00.0", VFIOMIG_SIM_MIG_V1, PG, 0);
	struct vfiomig_sim_device *dst = mig_dev(sim, "0000:04:00.0", VFIOMIG_SIM_MIG_V1, PG, 0);
	struct v1 vs = v1_open(sim, src, false), vd = v1_open(sim, dst, false);
	uint8_t buf[2 * REC], bad[2 * REC];
	size_t len;

	cr_assert_eq(vfiomig_sim_device_run(src, 1), 0);
	cr_assert_eq(v1_write(&vs, 0, 4, 2), 0);
	len = v1_save(&vs, buf, sizeof(buf));
	cr_assert_eq(len, REC + END);
	cr_assert_eq(v1_write(&vs, 0, 4, 0), 0);

	/* Garbage in a chunk: the data_size write says so. */
	memcpy(bad, buf, len);
	bad[1] ^= 0xff;
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_load(&vd, bad, len, 64 << 10), -EINVAL);
	cr_assert_eq(v1_write(&vd, 0, 4, 0), -EINVAL);
	cr_assert_eq(v1_reg(&vd, 0, 4), MIG_V1_ERROR_BITS_TEST);
	cr_assert_eq(v1_write(&vd, 0, 4, 1), -EINVAL, "only a reset leaves the error state");
	reset(&vd.h);
	/* A changed page: the end record's stream checksum, in the same chunk, says so. */
	memcpy(bad, buf, len);
	bad[100] ^= 0x04;
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_load(&vd, bad, len, 64 << 10), -EINVAL);
	cr_assert_eq(v1_write(&vd, 0, 4, 0), -EINVAL);
	reset(&vd.h);
	/* A bad state checksum: found when leaving resuming. */
	memcpy(bad, buf, len);
	bad[REC + 16] ^= 0x04;
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_load(&vd, bad, len, 64 << 10), 0);
	cr_assert_eq(v1_write(&vd, 0, 4, 0), -EINVAL);
	cr_assert_eq(v1_reg(&vd, 0, 4), MIG_V1_ERROR_BITS_TEST);
	reset(&vd.h);
	/* Truncated. */
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_load(&vd, buf, REC, 64 << 10), 0);
	cr_assert_eq(v1_write(&vd, 0, 4, 1), -EINVAL, "100 -> 001 leaves resuming too");
	cr_assert_eq(v1_reg(&vd, 0, 4), MIG_V1_ERROR_BITS_TEST);
	reset(&vd.h);
	/* The good one. */
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_load(&vd, buf, len, 100), 0);
	cr_assert_eq(v1_write(&vd, 0, 4, 1), 0);
	cr_assert(same_state(src, dst));

	/* fail_transition: the write fails and the state is what it was... */
	cr_assert_eq(v1_write(&vs, 0, 4, 3), 0);
	cr_assert_eq(vfiomig_sim_device_fail_transition(src, SC, -EIO, false), 0);
	cr_assert_eq(v1_write(&vs, 0, 4, 2), -EIO);
	cr_assert_eq(v1_reg(&vs, 0, 4), 3);
	/* ... even when the failing arc is not the first one (001 -> 000 -> 010). */
	cr_assert_eq(v1_write(&vs, 0, 4, 1), 0);
	cr_assert_eq(vfiomig_sim_device_fail_transition(src, SC, -EIO, false), 0);
	cr_assert_eq(v1_write(&vs, 0, 4, 2), -EIO);
	cr_assert_eq(v1_reg(&vs, 0, 4), 1);
	/* ... or 110 with to_error. */
	cr_assert_eq(vfiomig_sim_device_fail_transition(src, STOP, -EIO, true), 0);
	cr_assert_eq(v1_write(&vs, 0, 4, 0), -EIO);
	cr_assert_eq(v1_reg(&vs, 0, 4), MIG_V1_ERROR_BITS_TEST);
	reset(&vs.h);

	/* fail_data and corrupt_data act on staged chunks. */
	cr_assert_eq(vfiomig_sim_device_corrupt_data(src, 50), 0);
	cr_assert_eq(v1_write(&vs, 0, 4, 2), 0);
	len = v1_save(&vs, bad, sizeof(bad));
	cr_assert_eq(len, REC + END);
	cr_assert_eq(v1_write(&vs, 0, 4, 0), 0);
	reset(&vd.h);
	cr_assert_eq(v1_write(&vd, 0, 4, 4), 0);
	cr_assert_eq(v1_load(&vd, bad, len, 64 << 10), -EINVAL);
	cr_assert_eq(v1_write(&vd, 0, 4, 0), -EINVAL);
	cr_assert_eq(v1_reg(&vd, 0, 4), MIG_V1_ERROR_BITS_TEST);
	cr_assert_eq(vfiomig_sim_device_fail_data(src, 1000, -EIO), 0);
	cr_assert_eq(v1_write(&vs, 0, 4, 2), 0);
	cr_assert_eq(v1_reg(&vs, 8, 8), REC + END);
	cr_assert_eq(v1_reg(&vs, 16, 8), PG);
	cr_assert_eq(v1_reg(&vs, 24, 8), 1000, "the chunk stops where the fault is set");
	{
		uint64_t val;

		cr_assert_eq(K->pread(sim, vs.h.d, &val, 8, vs.off + 8), -EIO);
	}
	cr_assert_eq(v1_reg(&vs, 8, 8), REC + END - 1000, "armed once");
	cr_assert_eq(vfiomig_sim_device_fail_data(src, 0, 0), 0);
	cr_assert_eq(v1_reg(&vs, 8, 8), 0, "err 0: pending_bytes says the data ended");
	v1_close(&vs);
	v1_close(&vd);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------- running devices */

Test(sim_mig, run_is_deterministic_per_name_and_needs_a_running_device)
{
	struct vfiomig_sim *s1 = sim_make(), *s2 = sim_make();
	struct vfiomig_sim_device *a = mig_dev(s1, "0000:03:00.0", FULLMIG, 8 * PG, 0);
	struct vfiomig_sim_device *b = mig_dev(s2, "0000:03:00.0", FULLMIG, 8 * PG, 0);
	struct vfiomig_sim_device *c = mig_dev(s2, "0000:04:00.0", FULLMIG, 8 * PG, 0);
	struct h h = hopen(s1, a);

	cr_assert_eq(vfiomig_sim_device_run(a, 3), 0);
	cr_assert_eq(vfiomig_sim_device_run(b, 3), 0);
	cr_assert_eq(vfiomig_sim_device_run(c, 3), 0);
	cr_assert(same_state(a, b), "same name, same changes");
	cr_assert(!same_state(b, c), "another name, other changes");
	cr_assert_eq(vfiomig_sim_device_run(a, 0), 0);
	cr_assert_eq(vfiomig_sim_device_run(a, UINT64_MAX), 0, "at most every page once");
	cr_assert_eq(vfiomig_sim_device_run(NULL, 1), -EINVAL);
	for (int s = STOP; s < NSTATES; s++) {
		int fd = -1, want = (s == RUN || s == RP || s == PC || s == PP) ? 0 : -EBUSY;

		reset(&h);
		cr_assert_eq(set_state(&h, (uint32_t)s, &fd), 0);
		cr_assert_eq(vfiomig_sim_device_run(a, 1), want, "in %s", names[s]);
		kclose(s1, &fd);
	}
	hclose(&h);
	vfiomig_sim_free(s1);
	vfiomig_sim_free(s2);
	assert_no_leaks();
}

Test(sim_mig, auto_dirty_pages_change_the_device_on_reads)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, 16 * PG, 3);
	struct vfiomig_sim_device *v1 = mig_dev(sim, "0000:04:00.0", VFIOMIG_SIM_MIG_V1,
						16 * PG, 2);
	struct h h = hopen(sim, sd);
	struct v1 v = v1_open(sim, v1, false);
	uint8_t buf[16 * REC], *before = malloc(16 * PG);
	uint64_t ini, dirty;
	size_t len;
	int fd;

	cr_assert_not_null(before);
	cr_assert_eq(set_state(&h, PC, &fd), 0);
	/* The initial image (pages ahead of it need no resending). */
	cr_assert_eq(K->read(sim, fd, buf, sizeof(buf)), 16 * REC);
	/* Each read first lets the device change 3 pages: they come back at once. */
	for (int i = 0; i < 3; i++)
		cr_assert_eq(K->read(sim, fd, buf, 3 * REC), 3 * REC);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), 0);
	cr_assert_eq(dirty, 0);
	cr_assert_eq(K->read(sim, fd, buf, 2 * REC), 2 * REC);
	cr_assert_eq(precopy_info(&h, fd, &ini, &dirty), 0);
	cr_assert_eq(dirty, REC, "three changed, two read");
	/* Stopped, it changes no more. */
	cr_assert_eq(set_state(&h, SC, NULL), 0);
	memcpy(before, vfiomig_sim_device_state(sd, &len), 16 * PG);
	cr_assert_eq(K->read(sim, fd, buf, REC), REC);
	cr_assert_eq(memcmp(before, vfiomig_sim_device_state(sd, &len), len), 0);
	kclose(sim, &fd);

	/* v1: each pending_bytes read while running. */
	memcpy(before, vfiomig_sim_device_state(v1, &len), 16 * PG);
	(void)v1_reg(&v, 8, 8);
	cr_assert_neq(memcmp(before, vfiomig_sim_device_state(v1, &len), len), 0);
	cr_assert_eq(v1_write(&v, 0, 4, 0), 0);
	memcpy(before, vfiomig_sim_device_state(v1, &len), 16 * PG);
	(void)v1_reg(&v, 8, 8);
	cr_assert_eq(memcmp(before, vfiomig_sim_device_state(v1, &len), len), 0);
	free(before);
	v1_close(&v);
	hclose(&h);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------ options, specs */

Test(sim_mig, device_add_validates_migration_opts)
{
	static const struct {
		uint32_t mig;
		uint64_t state, v1data;
		uint32_t autod;
		const char *why;
	} bad[] = {
		{ 1u << 20, 0, 0, 0, "unknown bits" },
		{ VFIOMIG_SIM_MIG_P2P, 0, 0, 0, "neither V1 nor V2" },
		{ VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_PRE_COPY, 0, 0, 0, "need V2" },
		{ VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_V1_TRAPPED, 0, 0, 0, "needs V1" },
		{ VFIOMIG_SIM_MIG_V2, 5000, 0, 0, "multiple of 4 KiB" },
		{ VFIOMIG_SIM_MIG_V2, 128ull << 30, 0, 0, "multiple of 4 KiB" },
		{ VFIOMIG_SIM_MIG_V2, 0, 8192, 0, "needs V1" },
		{ VFIOMIG_SIM_MIG_V1, 0, 100, 0, "needs V1, a multiple" },
		{ 0, 4096, 0, 0, "only with migration" },
		{ 0, 0, 0, 3, "only with migration" },
		{ VFIOMIG_SIM_MIG_COST_COPY, 0, 0, 0, "only with migration" },
	};
	struct vfiomig_sim *sim = sim_make();

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		VFIOMIG_OPTS(sim_device_opts, o, .migration = bad[i].mig,
			     .state_size = bad[i].state, .v1_data_size = bad[i].v1data,
			     .auto_dirty_pages = bad[i].autod);
		struct vfiomig_sim_device *d = (void *)1;

		cr_assert_eq(vfiomig_sim_device_add(sim, &o, &d), -EINVAL, "case %zu", i);
		cr_assert_null(d);
		cr_assert_not_null(strstr(sim_last_error(sim), bad[i].why), "case %zu: %s", i,
				   sim_last_error(sim));
	}
	/* A several-GiB state costs nothing until it is touched. */
	{
		struct vfiomig_sim_device *big = mig_dev(sim, "0000:05:00.0", VFIOMIG_SIM_MIG_V2,
							 4ull << 30, 0);
		size_t len;

		cr_assert_not_null(vfiomig_sim_device_state(big, &len));
		cr_assert_eq(len, 4ull << 30);
		cr_assert_eq(vfiomig_sim_device_run(big, 2), 0);
	}
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

struct dirlist {
	char names[256];
};

static int dir_collect(void *user, const char *name)
{
	struct dirlist *dl = user;
	size_t n = strlen(dl->names);

	snprintf(dl->names + n, sizeof(dl->names) - n, "%s%s;", n ? "" : ";", name);
	return 0;
}

struct speclog {
	int n;
	char last[512];
};

static void speclog_fn(void *user, int prio, const char *msg)
{
	struct speclog *lc = user;

	lc->n++;
	snprintf(lc->last, sizeof(lc->last), "%s", msg);
}

Test(sim_mig, spec_keys_build_migratable_devices_and_log_their_errors)
{
	struct vfiomig_sim *sim = sim_make();
	struct speclog lc = { 0 };
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = speclog_fn, .log_user = &lc);
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_sim_device *d = NULL;
	struct vu_device_info di = { .argsz = sizeof(di) };
	uint64_t v = 0;
	struct h h;
	struct v1 v1h;
	char path[160], buf[160];
	ssize_t n;

	cr_assert_eq(vfiomig_sim_ctx_new(sim, &co, &ctx), 0);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, ctx, "sim:pci,name=0000:03:00.0,"
						 "mig=v2-p2p-precopy,state=16K,dirty=3", &d), 0,
		     "%s", sim_last_error(sim));
	h = hopen(sim, d);
	cr_assert_eq(feature(&h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &v, sizeof(v)), 0);
	cr_assert_eq(v, 7);
	cr_assert_eq(data_size(&h, &v), 0);
	cr_assert_eq(v, 4 * REC + END);
	hclose(&h);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, ctx, "sim:pci,mig=v2-p2p", &d), 0);
	h = hopen(sim, d);
	cr_assert_eq(feature(&h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &v, sizeof(v)), 0);
	cr_assert_eq(v, VU_MIGRATION_STOP_COPY | VU_MIGRATION_P2P);
	cr_assert_eq(data_size(&h, &v), 0);
	cr_assert_eq(v, 16 * REC + END, "64 KiB by default");
	hclose(&h);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, ctx, "sim:pci,mig=none", &d), 0);
	h = hopen(sim, d);
	cr_assert_eq(feature(&h, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &v, sizeof(v)),
		     -ENOTTY);
	hclose(&h);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, ctx, "sim:mdev,mig=v1,v1data=8K", &d), 0);
	v1h = v1_open(sim, d, true);
	cr_assert_eq(v1h.size, PG + 8192);
	cr_assert_eq(K->ioctl(sim, v1h.h.d, VU_DEVICE_GET_INFO, &di), 0);
	cr_assert_eq(di.num_regions, 10);
	/* The mdev's type, for the stream header. */
	snprintf(path, sizeof(path), "%s/mdev_type", vfiomig_sim_device_sysfs_path(d));
	n = K->readlink(sim, path, buf, sizeof(buf) - 1);
	cr_assert_gt(n, 0);
	buf[n] = '\0';
	cr_assert_str_eq(strrchr(buf, '/'), "/vfiomig-sim-1");
	cr_assert_not_null(strstr(buf, "/mdev_supported_types/"));
	{
		struct dirlist dl = { 0 };

		cr_assert_eq(K->readdir(sim, vfiomig_sim_device_sysfs_path(d), dir_collect, &dl),
			     0);
		cr_assert_not_null(strstr(dl.names, ";mdev_type;"), "%s", dl.names);
	}
	v1_close(&v1h);
	cr_assert_eq(vfiomig_sim_device_add_spec(sim, ctx, "sim:pci,mig=v1-trapped", &d), 0);
	v1h = v1_open(sim, d, false);
	{
		void *p;

		cr_assert_eq(K->mmap(sim, v1h.h.d, v1h.off + PG, PG, PROT_READ, &p), -EINVAL);
	}
	v1_close(&v1h);
	n = K->readlink(sim, "/sys/bus/pci/devices/0000:03:00.0/mdev_type", buf, sizeof(buf));
	cr_assert_eq(n, -ENOENT, "PCI devices have no mdev_type");

	/* Refused specs: -EINVAL and one line through the ctx saying why. */
	{
		static const struct {
			const char *spec, *why;
		} bad[] = {
			{ "sim:pci,mig=v3", "bad value" },
			{ "sim:pci,mig=v2,state=5000", "multiple of 4 KiB" },
			{ "sim:pci,mig=v2,v1data=8K", "needs V1" },
			{ "sim:pci,dirty=3", "only with migration" },
			{ "sim:pci,dirty=-1", "bad value" },
			{ "sim:pci,mig=v2,mig=v1", "twice" },
			{ "sim:pci,cost=copy", "only with migration" },
			{ "sim:pci,mig=v2,cost=free", "bad value" },
			{ "sim:pci,mig=v2,cost=copy,cost=check", "twice" },
		};

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			int before = lc.n;

			cr_assert_eq(vfiomig_sim_device_add_spec(sim, ctx, bad[i].spec, &d),
				     -EINVAL, "%s", bad[i].spec);
			cr_assert_null(d);
			cr_assert_eq(lc.n, before + 1, "%s", bad[i].spec);
			cr_assert_not_null(strstr(lc.last, bad[i].why), "%s: %s", bad[i].spec,
					   lc.last);
			cr_assert_not_null(strstr(sim_last_error(sim), bad[i].why));
		}
		/* Without a ctx: silent, still refused. */
		cr_assert_eq(vfiomig_sim_device_add_spec(sim, NULL, bad[0].spec, &d), -EINVAL);
		cr_assert_eq(lc.n, (int)(sizeof(bad) / sizeof(bad[0])));
	}
	vfiomig_ctx_unref(ctx);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

Test(sim_mig, freeing_the_simulator_releases_live_sessions)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *a = mig_dev(sim, "0000:03:00.0", FULLMIG, 4 * PG, 0);
	struct vfiomig_sim_device *b = mig_dev(sim, "0000:04:00.0", FULLMIG, 4 * PG, 0);
	struct h ha = hopen(sim, a), hb = hopen(sim, b);
	int fa, fb;

	cr_assert_eq(set_state(&ha, PC, &fa), 0);
	cr_assert_eq(set_state(&hb, RES, &fb), 0);
	cr_assert_eq(K->close(sim, fb), 0); /* the device still holds its session */
	cr_assert_geq(fa, 0);
	vfiomig_sim_free(sim); /* closes fa and the device fds */
	assert_no_leaks();
}

/*
 * The library's own guard (not this simulator's refusal, tested above):
 * asked for STOP_COPY -> PRE_COPY(_P2P), the v2 protocol refuses without
 * making a single kernel call, so a real kernel never sees the request
 * that hangs it. The public API never asks for it; the protocol is
 * called directly here, through the library's private migration object.
 */
Test(sim_mig, the_library_never_asks_the_kernel_for_stop_copy_to_pre_copy)
{
	struct vfiomig_sim *sim = sim_make();
	struct vfiomig_sim_device *sd = mig_dev(sim, "0000:03:00.0", FULLMIG, 16 * PG, 0);
	struct vfiomig_fault *f;
	struct vfiomig_ctx *ctx;
	struct vfiomig_device *dev;
	struct vfiomig_stream *s;
	struct vfiomig_mig *m;
	static const uint32_t targets[] = { PC, PP };
	struct logcap log = { 0 };
	uint64_t ioctls;

	cr_assert_eq(vfiomig_fault_new(K, sim, &f), 0);
	{
		VFIOMIG_OPTS(ctx_opts, co, .kernel_ops = vfiomig_fault_kernel_ops(),
			     .kernel_user = f, .log_fn = logcap_fn, .log_user = &log);
		cr_assert_eq(vfiomig_ctx_new(&co, &ctx), 0);
	}
	cr_assert_eq(vfiomig_device_open(ctx, "0000:03:00.0", NULL, &dev), 0);
	cr_assert_eq(vfiomig_stream_mem_new(ctx, &s), 0);
	cr_assert_eq(vfiomig_mig_new(dev, VFIOMIG_ROLE_SAVE, NULL, &m), 0);
	cr_assert_eq(vfiomig_mig_save_setup(m, s), 0);
	cr_assert_eq(vfiomig_mig_vm_state(m, VFIOMIG_VM_STOPPED), 0);
	cr_assert_eq(vfiomig_sim_device_mig_state(sd), SC);
	cr_assert_eq(m->proto, &vm_proto_v2);
	cr_assert_eq(m->state, SC);
	for (size_t i = 0; i < sizeof(targets) / sizeof(targets[0]); i++) {
		vfiomig_sim_events_clear(sim);
		ioctls = vfiomig_fault_calls(f, VFIOMIG_KOP_IOCTL);
		cr_assert_eq(m->proto->set_state(m, targets[i]), -EINVAL, "STOP_COPY -> %s",
			     names[targets[i]]);
		cr_assert_eq(vfiomig_fault_calls(f, VFIOMIG_KOP_IOCTL), ioctls,
			     "the kernel was asked for STOP_COPY -> %s", names[targets[i]]);
		cr_assert_eq(vfiomig_sim_event_count(sim), 0, "%s", vfiomig_sim_event(sim, 0));
		cr_assert(strstr(log.last_err, "refusing to request STOP_COPY"), "%s", log.last_err);
		cr_assert_eq(m->state, SC);
		cr_assert_eq(vfiomig_sim_device_mig_state(sd), SC);
	}
	/* The save goes on from STOP_COPY as if nothing had been asked. */
	cr_assert_eq(vfiomig_mig_save_complete(m, s), 0);
	vfiomig_mig_free(m);
	vfiomig_stream_free(s);
	vfiomig_device_close(dev);
	vfiomig_ctx_unref(ctx);
	vfiomig_fault_free(f);
	vfiomig_sim_free(sim);
	assert_no_leaks();
}

/* ------------------------------------------------------------- threads */

/*
 * One thread per device pair, through one fault injector wrapping the
 * simulator's kernel ops: each opens its two devices, saves the source
 * while it runs and restores it into the destination piece by piece
 * (v2: data_fd reads and writes; v1: the trapped region's preads and
 * pwrites), then leaves RESUMING. Worker threads never call cr_assert:
 * they record their first failure, the test asserts after joining them.
 */
#define MV_THREADS 4
#define MV_STATE   (2u << 20) /* per device: 512 pages, the page sum */
#define MV_PIECE   (64u << 10)

struct mover {
	const struct vfiomig_kernel_ops *k;
	void *ku;
	struct vfiomig_sim_device *src, *dst;
	bool v1;
	uint8_t *buf;
	uint64_t reads, preads, pwrites; /* calls made (retries included) */
	uint64_t again;                  /* reads the injector answered -EAGAIN */
	uint64_t moved;                  /* device data bytes */
	char why[256];                   /* the first failure; "" when none */
};

#define MV_FAIL(w, ...)                                                        \
	do {                                                                   \
		if (!(w)->why[0])                                              \
			snprintf((w)->why, sizeof((w)->why), __VA_ARGS__);     \
		return -1;                                                     \
	} while (0)

struct mfd {
	int c, g, d;
	uint64_t v1off; /* v1: the migration region's file offset */
};

static int mv_open(struct mover *w, struct vfiomig_sim_device *sd, struct mfd *o)
{
	char path[32];
	int c;

	o->c = w->k->open(w->ku, "/dev/vfio/vfio", O_RDWR | O_CLOEXEC);
	snprintf(path, sizeof(path), "/dev/vfio/%d", vfiomig_sim_device_group(sd));
	o->g = w->k->open(w->ku, path, O_RDWR | O_CLOEXEC);
	o->d = -1;
	if (o->c < 0 || o->g < 0)
		MV_FAIL(w, "%s: open: %d %d", vfiomig_sim_device_name(sd), o->c, o->g);
	c = o->c;
	if (w->k->ioctl(w->ku, o->g, VU_GROUP_SET_CONTAINER, &c) ||
	    w->k->ioctl(w->ku, o->c, VU_SET_IOMMU, (void *)(unsigned long)VU_TYPE1v2_IOMMU))
		MV_FAIL(w, "%s: SET_CONTAINER / SET_IOMMU", vfiomig_sim_device_name(sd));
	o->d = w->k->ioctl(w->ku, o->g, VU_GROUP_GET_DEVICE_FD,
			   (void *)vfiomig_sim_device_name(sd));
	if (o->d < 0)
		MV_FAIL(w, "%s: GET_DEVICE_FD: %d", vfiomig_sim_device_name(sd), o->d);
	if (w->v1) {
		struct vu_region_info ri = { .argsz = sizeof(ri), .index = 9 };

		if (w->k->ioctl(w->ku, o->d, VU_DEVICE_GET_REGION_INFO, &ri))
			MV_FAIL(w, "%s: GET_REGION_INFO", vfiomig_sim_device_name(sd));
		o->v1off = ri.offset;
	}
	return 0;
}

static void mv_close(struct mover *w, struct mfd *o)
{
	int fds[3] = { o->d, o->g, o->c };

	for (int i = 0; i < 3; i++)
		if (fds[i] >= 0 && w->k->close(w->ku, fds[i]))
			snprintf(w->why, sizeof(w->why), "close %d failed", fds[i]);
}

/* v2: SET MIG_DEVICE_STATE; the data_fd, if any, to *fd (or -1). */
static int mv_set(struct mover *w, struct mfd *o, uint32_t s, int *fd)
{
	struct {
		struct vu_device_feature hdr;
		struct vu_feature_mig_state st;
	} b = { .hdr = { .argsz = sizeof(b),
			 .flags = VU_DEVICE_FEATURE_SET | VU_FEATURE_MIG_DEVICE_STATE },
		.st = { .device_state = s, .data_fd = -1 } };
	int ret = w->k->ioctl(w->ku, o->d, VU_DEVICE_FEATURE, &b);

	if (fd)
		*fd = b.st.data_fd;
	else if (b.st.data_fd >= 0)
		w->k->close(w->ku, b.st.data_fd);
	return ret;
}

/*
 * v2: what the source's data_fd has, on into the destination's, until it
 * says 0 or `budget` bytes went (a device dirtying itself never runs dry).
 */
static int mv_pump(struct mover *w, int sfd, int dfd, uint64_t budget)
{
	for (uint64_t round = 0; round < budget;) {
		ssize_t n = w->k->read(w->ku, sfd, w->buf, MV_PIECE);

		w->reads++;
		if (n == -EAGAIN) {
			w->again++;
			continue;
		}
		if (n < 0)
			MV_FAIL(w, "data_fd read: %zd", n);
		if (n == 0)
			return 0;
		if (w->k->write(w->ku, dfd, w->buf, (size_t)n) != n)
			MV_FAIL(w, "data_fd write");
		w->moved += (uint64_t)n;
		round += (uint64_t)n;
	}
	return 0;
}

static int mv_v2(struct mover *w, struct mfd *s, struct mfd *d)
{
	int sfd = -1, dfd = -1, ret = -1;

	if (mv_set(w, s, PC, &sfd) || mv_set(w, d, RES, &dfd) || sfd < 0 || dfd < 0) {
		snprintf(w->why, sizeof(w->why), "PRE_COPY / RESUMING");
		goto out;
	}
	for (int round = 0; round < 3; round++) {
		if (mv_pump(w, sfd, dfd, MV_STATE + MV_STATE / 4))
			goto out;
		if (vfiomig_sim_device_run(w->src, 40)) {
			snprintf(w->why, sizeof(w->why), "run");
			goto out;
		}
	}
	if (mv_set(w, s, SC, NULL) || mv_pump(w, sfd, dfd, UINT64_MAX))
		goto out;
	ret = mv_set(w, d, STOP, NULL);
	if (ret)
		snprintf(w->why, sizeof(w->why), "RESUMING -> STOP: %d", ret);
	else
		ret = mv_set(w, s, STOP, NULL);
out:
	if (sfd >= 0)
		w->k->close(w->ku, sfd);
	if (dfd >= 0)
		w->k->close(w->ku, dfd);
	return ret;
}

/* v1 registers: device_state 4 bytes at 0, the others 8 bytes. */
static int mv_reg(struct mover *w, struct mfd *o, uint64_t reg, uint64_t *v, bool wr)
{
	unsigned int width = reg ? 8 : 4;
	ssize_t n;

	*v &= reg ? ~0ull : 0xffffffffull;
	if (wr) {
		n = w->k->pwrite(w->ku, o->d, v, width, o->v1off + reg);
		w->pwrites++;
	} else {
		n = w->k->pread(w->ku, o->d, v, width, o->v1off + reg);
		w->preads++;
	}
	if (n != (ssize_t)width)
		MV_FAIL(w, "v1 register 0x%llx: %zd", (unsigned long long)reg, n);
	return 0;
}

/* v1: the source's pending data, chunk by chunk, into the destination. */
static int mv_v1_pump(struct mover *w, struct mfd *s, struct mfd *d)
{
	uint64_t pending = 0, off = 0, size = 0, doff = 0;

	for (;;) {
		if (mv_reg(w, s, 8, &pending, false))
			return -1;
		if (!pending)
			return 0;
		if (mv_reg(w, s, 16, &off, false) || mv_reg(w, s, 24, &size, false))
			return -1;
		w->preads++;
		if (size > MV_PIECE ||
		    w->k->pread(w->ku, s->d, w->buf, (size_t)size, s->v1off + off) != (ssize_t)size)
			MV_FAIL(w, "v1 data read");
		if (mv_reg(w, d, 16, &doff, false))
			return -1;
		w->pwrites++;
		if (w->k->pwrite(w->ku, d->d, w->buf, (size_t)size, d->v1off + doff) !=
		    (ssize_t)size)
			MV_FAIL(w, "v1 data write");
		if (mv_reg(w, d, 24, &size, true))
			return -1;
		w->moved += size;
	}
}

static int mv_v1(struct mover *w, struct mfd *s, struct mfd *d)
{
	uint64_t v;

	v = 3; /* PRE_COPY */
	if (mv_reg(w, s, 0, &v, true))
		return -1;
	v = 4; /* RESUMING */
	if (mv_reg(w, d, 0, &v, true))
		return -1;
	for (int round = 0; round < 3; round++) {
		if (mv_v1_pump(w, s, d))
			return -1;
		if (vfiomig_sim_device_run(w->src, 40))
			MV_FAIL(w, "run");
	}
	v = 2; /* STOP_COPY */
	if (mv_reg(w, s, 0, &v, true) || mv_v1_pump(w, s, d))
		return -1;
	v = 0; /* STOP: the destination takes the image, or refuses it here */
	if (mv_reg(w, d, 0, &v, true) || mv_reg(w, s, 0, &v, true))
		return -1;
	return 0;
}

static void *idle_main(void *arg)
{
	return arg;
}

/*
 * glibc keeps the stacks of ended threads, with a heap block each, and
 * trims that cache as it likes: start and end as many threads as the test
 * will run, then mark. The test's own threads then reuse those stacks.
 */
static void warm_up_threads(int n, struct leak_mark *mark)
{
	pthread_t th[MV_THREADS];

	cr_assert_leq(n, MV_THREADS);
	for (int i = 0; i < n; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, idle_main, NULL), 0);
	for (int i = 0; i < n; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);
	leak_mark(mark);
}

static void *mover_main(void *arg)
{
	struct mover *w = arg;
	struct mfd s = { -1, -1, -1, 0 }, d = { -1, -1, -1, 0 };

	if (!mv_open(w, w->src, &s) && !mv_open(w, w->dst, &d) &&
	    !vfiomig_sim_device_run(w->src, MV_STATE / PG))
		(void)(w->v1 ? mv_v1(w, &s, &d) : mv_v2(w, &s, &d));
	mv_close(w, &s);
	mv_close(w, &d);
	return NULL;
}

Test(sim_mig, threads_move_their_own_devices_at_once_through_one_injector)
{
	static const uint32_t kinds[MV_THREADS] = {
		FULLMIG,
		FULLMIG | VFIOMIG_SIM_MIG_COST_COPY,
		VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V1_TRAPPED,
		VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V1_TRAPPED | VFIOMIG_SIM_MIG_COST_COPY,
	};
	static const char *const src_path[2] = {
		"RUNNING>PRE_COPY>PRE_COPY_P2P>STOP_COPY>STOP", /* v2 */
		"RUNNING>PRE_COPY>STOP_COPY>STOP",              /* v1 */
	};
	static const char *const dst_path[2] = {
		"RUNNING>RUNNING_P2P>STOP>RESUMING>STOP",
		"RUNNING>STOP>RESUMING>STOP",
	};
	struct vfiomig_sim *sim;
	struct mover w[MV_THREADS];
	pthread_t th[MV_THREADS];
	struct vfiomig_fault *f;
	struct leak_mark mark;
	uint64_t reads = 0, preads = 0, pwrites = 0, again = 0;
	char name[16], got[256];

	warm_up_threads(MV_THREADS, &mark);
	sim = sim_make();
	cr_assert_eq(vfiomig_fault_new(K, sim, &f), 0);
	{
		/* Three reads fail, whichever threads make them: each retries its own. */
		VFIOMIG_OPTS(fault_spec, fs, .op = VFIOMIG_KOP_READ, .nth = 20, .times = 3,
			     .error = -EAGAIN);

		cr_assert_eq(vfiomig_fault_add(f, &fs), 0);
	}
	for (int i = 0; i < MV_THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].k = vfiomig_fault_kernel_ops();
		w[i].ku = f;
		w[i].v1 = kinds[i] & VFIOMIG_SIM_MIG_V1;
		snprintf(name, sizeof(name), "0000:1%d:00.0", i);
		w[i].src = mig_dev(sim, name, kinds[i], MV_STATE, w[i].v1 ? 0 : 2);
		snprintf(name, sizeof(name), "0000:2%d:00.0", i);
		w[i].dst = mig_dev(sim, name, kinds[i], MV_STATE, 0);
		w[i].buf = malloc(MV_PIECE);
		cr_assert_not_null(w[i].buf);
	}
	for (int i = 0; i < MV_THREADS; i++)
		cr_assert_eq(pthread_create(&th[i], NULL, mover_main, &w[i]), 0);
	for (int i = 0; i < MV_THREADS; i++)
		cr_assert_eq(pthread_join(th[i], NULL), 0);

	for (int i = 0; i < MV_THREADS; i++) {
		uint64_t hs, hd;

		cr_assert_str_empty(w[i].why, "thread %d: %s", i, w[i].why);
		cr_assert_geq(w[i].moved, MV_STATE, "thread %d", i);
		cr_assert(same_state(w[i].src, w[i].dst), "thread %d", i);
		cr_assert_eq(vfiomig_sim_device_state_hash(w[i].src, &hs), 0);
		cr_assert_eq(vfiomig_sim_device_state_hash(w[i].dst, &hd), 0);
		cr_assert_eq(hs, hd, "thread %d", i);
		cr_assert_eq(vfiomig_sim_device_mig_state(w[i].dst), STOP);
		/* Each device's lines, in its own order, whatever the others logged between. */
		arc_path(sim, vfiomig_sim_device_name(w[i].src), got, sizeof(got));
		cr_assert_str_eq(got, src_path[w[i].v1], "thread %d", i);
		arc_path(sim, vfiomig_sim_device_name(w[i].dst), got, sizeof(got));
		cr_assert_str_eq(got, dst_path[w[i].v1], "thread %d", i);
		reads += w[i].reads;
		preads += w[i].preads;
		pwrites += w[i].pwrites;
		again += w[i].again;
		free(w[i].buf);
	}
	/* The injector counted every call of every thread, and fired exactly as armed. */
	cr_assert_eq(vfiomig_fault_calls(f, VFIOMIG_KOP_READ), reads);
	cr_assert_eq(vfiomig_fault_calls(f, VFIOMIG_KOP_PREAD), preads);
	cr_assert_eq(vfiomig_fault_calls(f, VFIOMIG_KOP_PWRITE), pwrites);
	cr_assert_eq(vfiomig_fault_fired(f), 3);
	cr_assert_eq(again, 3);
	cr_assert_eq(vfiomig_sim_open_fds(sim), 0);
	vfiomig_fault_free(f);
	vfiomig_sim_free(sim);
	assert_no_leaks_since(&mark);
}

struct reader {
	struct vfiomig_sim *sim;
	int fd;
	uint8_t *buf;
	ssize_t got;
	int done; /* atomic */
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->got = K->read(r->sim, r->fd, r->buf, MV_PIECE);
	__atomic_store_n(&r->done, 1, __ATOMIC_RELEASE);
	return NULL;
}

/* The full save and restore of a pair by hand, as another thread would do it. */
static void *pair_main(void *arg)
{
	struct pair *p = arg;
	ssize_t last;
	uint8_t img[sizeof(p->img)];
	size_t n;
	int sfd, dfd;

	/* Only the simulator's own calls here: no cr_assert outside the test's thread. */
	if (mv_set(&(struct mover){ .k = K, .ku = p->sim }, &(struct mfd){ .d = p->hs.d }, SC,
		   &sfd) || sfd < 0)
		return NULL;
	n = 0;
	while ((last = K->read(p->sim, sfd, img + n, sizeof(img) - n)) > 0)
		n += (size_t)last;
	mv_set(&(struct mover){ .k = K, .ku = p->sim }, &(struct mfd){ .d = p->hs.d }, STOP, NULL);
	if (mv_set(&(struct mover){ .k = K, .ku = p->sim }, &(struct mfd){ .d = p->hd.d }, RES,
		   &dfd) || dfd < 0)
		return NULL;
	K->write(p->sim, dfd, img, n);
	p->len = mv_set(&(struct mover){ .k = K, .ku = p->sim }, &(struct mfd){ .d = p->hd.d },
			STOP, NULL) == 0 && n == p->len ? 1 : 0;
	K->close(p->sim, sfd);
	K->close(p->sim, dfd);
	__atomic_store_n(&p->img[0], 0xa5, __ATOMIC_RELEASE);
	return NULL;
}

/*
 * A data op holds its own device, never the simulator: with a reader
 * stopped inside device A's data_fd read (the test holds A's device
 * lock), another thread opens nothing new but saves and restores device
 * B whole, ioctls and all. Were the read holding the simulator lock,
 * that thread would never finish.
 */
Test(sim_mig, a_data_op_holds_its_device_and_not_the_simulator)
{
	struct vfiomig_sim_device *a;
	struct h ha;
	struct pair p;
	struct reader r = { 0 };
	struct leak_mark mark;
	pthread_t tr, tp;
	int afd;

	warm_up_threads(2, &mark);
	pair_init(&p);
	a = mig_dev(p.sim, "0000:05:00.0", FULLMIG, 4 * PG, 0);
	ha = hopen(p.sim, a);
	cr_assert_eq(set_state(&ha, SC, &afd), 0);
	r.sim = p.sim;
	r.fd = afd;
	r.buf = malloc(MV_PIECE);
	cr_assert_not_null(r.buf);
	p.img[0] = 0;
	dev_lock(a);
	cr_assert_eq(pthread_create(&tr, NULL, reader_main, &r), 0);
	usleep(50 * 1000); /* the reader reaches A's lock (if not, the test proves less) */
	cr_assert_eq(pthread_create(&tp, NULL, pair_main, &p), 0);
	for (int i = 0; i < 1000 && !__atomic_load_n(&p.img[0], __ATOMIC_ACQUIRE); i++)
		usleep(10 * 1000);
	cr_assert_eq(__atomic_load_n(&p.img[0], __ATOMIC_ACQUIRE), 0xa5,
		     "device B's save and restore waited for device A's read");
	cr_assert_eq(__atomic_load_n(&r.done, __ATOMIC_ACQUIRE), 0, "A's read waits for A");
	dev_unlock(a);
	cr_assert_eq(pthread_join(tp, NULL), 0);
	cr_assert_eq(pthread_join(tr, NULL), 0);
	cr_assert_eq(p.len, 1, "B restored");
	cr_assert(same_state(p.src, p.dst));
	cr_assert_eq(r.got, MV_PIECE < 4 * REC + END ? MV_PIECE : 4 * REC + END);
	free(r.buf);
	kclose(p.sim, &afd);
	hclose(&ha);
	pair_fini(&p);
	assert_no_leaks_since(&mark);
}
