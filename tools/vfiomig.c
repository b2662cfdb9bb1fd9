/* SPDX-License-Identifier: MIT */
/*
 * vfiomig: command-line front end of libvfiomig.
 *
 *   vfiomig probe DEVICE [--json]
 *   vfiomig demo [--state SIZE] [--dirty PAGES] [--downtime-ms N] [--proto v1|v2] [--no-precopy]
 *   vfiomig save DEVICE -o FILE [--no-precopy] [--allow-v1] [--rounds N]
 *   vfiomig load DEVICE -i FILE [--allow-v1]
 *   vfiomig inspect FILE [--records] [--json]
 *   vfiomig migrate DEVICE... --to ADDR | --listen ADDR DEVICE...  (tools/migrate.c)
 *   vfiomig help [COMMAND]            (= vfiomig COMMAND --help)
 *
 * DEVICE is anything vfiomig_device_open() accepts (PCI address, mdev
 * UUID, sysfs path, /dev/vfio/devices/vfioN) or a simulated device spec
 * "sim:pci[,key=value...]" / "sim:mdev[,...]" (see vfiomig_sim_device_add_spec).
 *
 * Exit status: 0 done, 1 the operation failed, 2 the command line is
 * wrong (nothing was done). Each failure is one line on stderr,
 * "vfiomig COMMAND: SUBJECT: why"; the library's own error lines are
 * caught by the tool's log callback and folded into that line, so a
 * script sees one line per error (VFIOMIG_LOG=warning or more shows
 * every library line as it comes).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>
#include <vfiomig/migration.h>
#include <vfiomig/stream.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tool.h"

const char *const prog = "vfiomig";

/* ------------------------------------------------------ messages */

__attribute__((format(printf, 2, 3)))
int usage_error(const struct command *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s%s%s: ", prog, cmd ? " " : "", cmd ? cmd->name : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '%s%s%s --help'.\n", prog, cmd ? " " : "", cmd ? cmd->name : "");
	return 2;
}

int help(const struct command *cmd)
{
	printf("usage: %s %s%s%s\n\n%s", prog, cmd->name, cmd->args[0] ? " " : "", cmd->args,
	       cmd->help);
	return 0;
}

bool is_help(const char *arg)
{
	return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

/*
 * The library's error lines. Each failure is reported once by the tool,
 * on one line that carries the first library error since the last report
 * (the cause: later ones follow from it). Errors nobody reported (logged
 * during cleanup, or on a path that went on) are printed at exit.
 */
struct tool_lib_err lib_err;

static void tool_log(void *user, int priority, const char *msg)
{
	(void)user;
	if (priority <= VFIOMIG_LOG_ERR && lib_err.count++ == 0)
		snprintf(lib_err.first, sizeof(lib_err.first), "%s", msg);
	if (priority > VFIOMIG_LOG_ERR || lib_err.verbose)
		fprintf(stderr, "libvfiomig: %s\n", msg);
}

static void lib_err_flush(void)
{
	if (lib_err.count && !lib_err.verbose)
		fprintf(stderr, "libvfiomig: %s\n", lib_err.first);
	lib_err.count = 0;
}

/* "vfiomig CMD: SUBJECT: why"; returns 1, the exit status of a failed operation. */
__attribute__((format(printf, 3, 4)))
int report(const struct command *cmd, const char *subject, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout); /* what was printed so far comes before the error */
	fprintf(stderr, "%s %s: %s: ", prog, cmd->name, subject);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	lib_err.count = 0;
	return 1;
}

/* A library call on `subject` failed with err: say why, in the library's words when it logged. */
int fail(const struct command *cmd, const char *subject, int err)
{
	size_t n = strlen(subject);

	if (!lib_err.count)
		return report(cmd, subject, "%s", vfiomig_strerror(err));
	/* Most library lines name their object first: do not say it twice. */
	if (strncmp(lib_err.first, subject, n) == 0 && lib_err.first[n] == ':') {
		fflush(stdout);
		fprintf(stderr, "%s %s: %s\n", prog, cmd->name, lib_err.first);
		lib_err.count = 0;
		return 1;
	}
	return report(cmd, subject, "%s", lib_err.first);
}

int tool_ctx_new(struct vfiomig_sim *sim, struct vfiomig_ctx **ctx)
{
	VFIOMIG_OPTS(ctx_opts, co, .log_fn = tool_log);
	int ret = sim ? vfiomig_sim_ctx_new(sim, &co, ctx) : vfiomig_ctx_new(&co, ctx);

	if (!ret)
		lib_err.verbose = vfiomig_ctx_get_log_priority(*ctx) > VFIOMIG_LOG_ERR;
	return ret;
}

/* ------------------------------------------------------ arguments */

/*
 * A byte size or a count: decimal or 0x-hex with an optional K, M or G
 * (binary) suffix; no sign, no blanks.
 */
bool parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned int shift = 0;
	char *end;

	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno)
		return false;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return false;
	*out = (uint64_t)v << shift;
	return true;
}

/*
 * Is argv[*i] the option `name` that takes a value ("--state 64M", or
 * "--state=64M" for long options)? 1: yes, *val is the value and *i moved
 * past it; 0: another argument; -1: yes but the value is missing (said).
 */
int opt_value(const struct command *cmd, int argc, char **argv, int *i, const char *name,
	      const char **val)
{
	const char *a = argv[*i];
	size_t n = strlen(name);

	if (strncmp(a, name, n) != 0)
		return 0;
	if (a[n] == '=' && name[1] == '-') {
		*val = a + n + 1;
		return 1;
	}
	if (a[n])
		return 0;
	if (*i + 1 >= argc) {
		usage_error(cmd, "%s needs a value", name);
		return -1;
	}
	*val = argv[++*i];
	return 1;
}

/* A positional argument for *slot (what: its name in the synopsis); ARGS_OK or 2. */
static int positional(const struct command *cmd, const char *arg, const char *what,
		      const char **slot)
{
	if (arg[0] == '-' && arg[1])
		return usage_error(cmd, "unknown option '%s'", arg);
	if (*slot)
		return usage_error(cmd, "unexpected argument '%s' (%s is '%s')", arg, what, *slot);
	*slot = arg;
	return ARGS_OK;
}

/* ------------------------------------------------------------ device setup */

static void target_close(struct target *t)
{
	vfiomig_device_close(t->dev);
	vfiomig_ctx_unref(t->ctx);
	vfiomig_sim_free(t->sim);
	memset(t, 0, sizeof(*t));
}

int tool_sim_add(const struct command *cmd, struct vfiomig_sim *sim, struct vfiomig_ctx *ctx,
		 const char *spec, struct vfiomig_sim_device **sd)
{
	int ret = vfiomig_sim_device_add_spec(sim, ctx, spec, sd);

	if (ret == -EINVAL) {
		/* The spec parser names the spec and the key; drop its "simulator: ". */
		const char *why = lib_err.count ? lib_err.first : "not a valid spec";

		if (strncmp(why, "simulator: ", 11) == 0)
			why += 11;
		if (strncmp(why, "device spec", 11) == 0)
			usage_error(cmd, "%s", why);
		else
			usage_error(cmd, "device spec \"%s\": %s", spec, why);
		lib_err.count = 0;
		return 2;
	}
	return ret ? fail(cmd, spec, ret) : 0;
}

/*
 * Open DEVICE (a simulated one lives in a simulator of its own, for this
 * process only). 0, or the exit status after saying why: 2 for a
 * malformed sim spec, 1 for anything else.
 */
static int target_open(const struct command *cmd, const char *spec, struct target *t)
{
	const char *name = spec;
	int ret;

	memset(t, 0, sizeof(*t));
	if (strncmp(spec, "sim:", 4) == 0) {
		struct vfiomig_sim_device *sd;

		ret = vfiomig_sim_new(NULL, &t->sim);
		if (!ret)
			ret = tool_ctx_new(t->sim, &t->ctx);
		if (ret)
			goto fail;
		ret = tool_sim_add(cmd, t->sim, t->ctx, spec, &sd);
		if (ret) {
			target_close(t);
			return ret;
		}
		name = vfiomig_sim_device_name(sd);
	} else {
		ret = tool_ctx_new(NULL, &t->ctx);
		if (ret)
			goto fail;
	}
	ret = vfiomig_device_open(t->ctx, name, NULL, &t->dev);
	if (ret)
		goto fail;
	return 0;
fail:
	fail(cmd, spec, ret);
	target_close(t);
	return 1;
}

/* -------------------------------------------------------------- output */

/* A tiny printer that emits either indented text or JSON. */
struct out {
	int log_prio;
	bool json;
	int depth;
	bool first[16];
};

void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

static void sep(struct out *o)
{
	if (!o->first[o->depth])
		putchar(',');
	o->first[o->depth] = false;
	printf("\n%*s", 2 * o->depth, "");
}

static void open_obj(struct out *o, const char *key, char brace)
{
	if (o->json) {
		sep(o);
		if (key) {
			json_str(key);
			printf(": ");
		}
		putchar(brace);
	} else if (key) {
		printf("%*s%s:\n", 2 * o->depth, "", key);
	}
	o->depth++;
	o->first[o->depth] = true;
}

static void close_obj(struct out *o, char brace)
{
	o->depth--;
	if (o->json)
		printf("\n%*s%c", 2 * o->depth, "", brace);
}

__attribute__((format(printf, 3, 4)))
static void kv_raw(struct out *o, const char *key, const char *fmt, ...)
{
	va_list ap;

	/* fmt produces a JSON literal (number, true/false) or plain text. */
	if (o->json) {
		sep(o);
		json_str(key);
		printf(": ");
	} else {
		printf("%*s%-22s ", 2 * o->depth, "", key);
	}
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	if (!o->json)
		putchar('\n');
}

static void kv_str(struct out *o, const char *key, const char *val)
{
	if (o->json) {
		sep(o);
		json_str(key);
		printf(": ");
		json_str(val);
	} else {
		printf("%*s%-22s %s\n", 2 * o->depth, "", key, val);
	}
}

static void kv_hex(struct out *o, const char *key, uint64_t v)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	if (o->json)
		kv_raw(o, key, "%" PRIu64, v);
	else
		kv_str(o, key, buf);
}

static const char *region_name(uint32_t flags_pci, uint32_t i)
{
	static const char *const pci[] = { "BAR0", "BAR1", "BAR2", "BAR3", "BAR4",
					   "BAR5", "ROM",  "config", "VGA" };

	if ((flags_pci & VFIOMIG_DEVICE_FLAGS_PCI) && i < 9)
		return pci[i];
	return "device-specific";
}

static void flags_text(char *buf, size_t len, uint32_t f)
{
	snprintf(buf, len, "%s%s%s%s", f & VFIOMIG_REGION_FLAG_READ ? "r" : "-",
		 f & VFIOMIG_REGION_FLAG_WRITE ? "w" : "-", f & VFIOMIG_REGION_FLAG_MMAP ? "m" : "-",
		 f & VFIOMIG_REGION_FLAG_CAPS ? "c" : "-");
}

static int probe_regions(struct out *o, struct target *t, const struct vfiomig_device_info *di)
{
	open_obj(o, "regions", '[');
	for (uint32_t i = 0; i < di->num_regions; i++) {
		VFIOMIG_OPTS(region_info, ri);
		char fl[8], title[48];
		int ret;

		/* vfio-pci declines the VGA index on devices without VGA: not an error. */
		vfiomig_ctx_set_log_priority(vfiomig_device_ctx(t->dev), -1 + VFIOMIG_LOG_ERR);
		ret = vfiomig_region_get_info(t->dev, i, &ri);
		vfiomig_ctx_set_log_priority(vfiomig_device_ctx(t->dev), o->log_prio);
		if (ret == -EINVAL)
			continue;
		if (ret)
			return ret;
		if (ri.size == 0 && !o->json)
			continue;
		flags_text(fl, sizeof(fl), ri.flags);
		if (o->json) {
			open_obj(o, NULL, '{');
			kv_raw(o, "index", "%u", i);
			kv_str(o, "name", region_name(di->flags, i));
		} else {
			snprintf(title, sizeof(title), "region %u (%s)", i, region_name(di->flags, i));
			open_obj(o, title, '{');
		}
		kv_str(o, "flags", fl);
		kv_hex(o, "size", ri.size);
		kv_hex(o, "offset", ri.offset);
		if (ri.cap_flags & VFIOMIG_REGION_HAS_TYPE) {
			kv_raw(o, "type", "%u", ri.type);
			kv_raw(o, "subtype", "%u", ri.subtype);
		}
		if (ri.cap_flags & VFIOMIG_REGION_HAS_MSIX_MAPPABLE)
			kv_raw(o, "msix_mappable", "%s", "true");
		if (ri.cap_flags & VFIOMIG_REGION_HAS_SPARSE) {
			struct vfiomig_sparse_area areas[64];
			uint32_t nr = 0;

			ret = vfiomig_region_get_sparse_areas(t->dev, i, areas, 64, &nr);
			if (ret)
				return ret;
			open_obj(o, "sparse_mmap", '[');
			for (uint32_t a = 0; a < nr && a < 64; a++) {
				if (o->json) {
					open_obj(o, NULL, '{');
					kv_raw(o, "offset", "%" PRIu64, areas[a].offset);
					kv_raw(o, "size", "%" PRIu64, areas[a].size);
					close_obj(o, '}');
				} else {
					printf("%*s[0x%" PRIx64 ", 0x%" PRIx64 ")\n", 2 * o->depth, "",
					       areas[a].offset, areas[a].offset + areas[a].size);
				}
			}
			close_obj(o, ']');
		}
		close_obj(o, '}');
	}
	close_obj(o, ']');
	return 0;
}

static int probe_iommu(struct out *o, struct target *t)
{
	struct vfiomig_iommu_migration mig;
	struct vfiomig_iova_range ranges[32];
	uint32_t nr = 0, avail;
	size_t len;
	void *buf;
	int ret;

	ret = vfiomig_device_get_iommu_info_raw(t->dev, &buf, &len);
	if (ret == -ENOTTY) {
		kv_str(o, "iommu", "none (no type1 container)");
		return 0;
	}
	if (ret)
		return ret;
	ret = vfiomig_caps_validate(vfiomig_device_ctx(t->dev), VFIOMIG_INFO_IOMMU_TYPE1, buf, len);
	if (ret < 0)
		goto out;
	open_obj(o, "iommu", '{');
	kv_str(o, "type", "type1v2");
	{
		uint64_t pgsizes;

		memcpy(&pgsizes, (char *)buf + 8, sizeof(pgsizes));
		kv_hex(o, "iova_pgsizes", pgsizes);
	}
	ret = vfiomig_cap_iommu_migration(NULL, buf, len, &mig);
	if (ret == 0) {
		open_obj(o, "migration_cap", '{');
		kv_hex(o, "pgsize_bitmap", mig.pgsize_bitmap);
		kv_hex(o, "max_dirty_bitmap_size", mig.max_dirty_bitmap_size);
		close_obj(o, '}');
	} else {
		kv_str(o, "migration_cap", "absent: no type1 dirty-page tracking");
	}
	if (vfiomig_cap_dma_avail(NULL, buf, len, &avail) == 0)
		kv_raw(o, "dma_avail", "%u", avail);
	if (vfiomig_cap_iova_ranges(NULL, buf, len, ranges, 32, &nr) == 0) {
		open_obj(o, "iova_ranges", '[');
		for (uint32_t i = 0; i < nr && i < 32; i++) {
			if (o->json) {
				open_obj(o, NULL, '{');
				kv_raw(o, "start", "%" PRIu64, ranges[i].start);
				kv_raw(o, "end", "%" PRIu64, ranges[i].end);
				close_obj(o, '}');
			} else {
				printf("%*s[0x%" PRIx64 ", 0x%" PRIx64 "]\n", 2 * o->depth, "",
				       ranges[i].start, ranges[i].end);
			}
		}
		close_obj(o, ']');
	}
	close_obj(o, '}');
	ret = 0;
out:
	vfiomig_free(buf);
	return ret;
}

static int probe_migration(struct out *o, struct target *t)
{
	VFIOMIG_OPTS(migration_info, mi);
	int ret = vfiomig_device_migration_info(t->dev, &mi);

	if (ret)
		return ret;
	open_obj(o, "migration", '{');
	kv_raw(o, "supported", "%s", mi.protocols ? "true" : "false");
	if (mi.protocols & VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V2)) {
		char fl[64];

		snprintf(fl, sizeof(fl), "%s%s%s", mi.v2_flags & VFIOMIG_V2_STOP_COPY ? "STOP_COPY " : "",
			 mi.v2_flags & VFIOMIG_V2_P2P ? "P2P " : "",
			 mi.v2_flags & VFIOMIG_V2_PRE_COPY ? "PRE_COPY " : "");
		if (fl[0])
			fl[strlen(fl) - 1] = '\0';
		kv_str(o, "v2", fl);
	}
	if (mi.protocols & VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V1))
		kv_raw(o, "v1_region", "%d", mi.v1_region);
	{
		int prio = vfiomig_ctx_get_log_priority(t->ctx);
		char reason[256];

		/* Blockers are answers here, not errors: keep them out of the log. */
		vfiomig_ctx_set_log_priority(t->ctx, VFIOMIG_LOG_ERR - 1);
		ret = vfiomig_mig_check(t->dev, NULL, reason, sizeof(reason));
		if (ret == 0 || ret == -EOPNOTSUPP)
			kv_str(o, "blocker", ret ? reason : "none");
		vfiomig_ctx_set_log_priority(t->ctx, prio);
		if (ret == -EOPNOTSUPP)
			ret = 0;
	}
	close_obj(o, '}');
	return ret;
}

static int probe_dirty(struct out *o, struct target *t)
{
	static const char *const names[VFIOMIG_DIRTY_MECH_NR] = { "auto", "type1", "device", "iommufd" };
	VFIOMIG_OPTS(dirty_info, p);
	int ret = vfiomig_dirty_probe(t->dev, &p);

	if (ret)
		return ret;
	open_obj(o, "dirty_tracking", '{');
	kv_str(o, "chosen", p.best ? names[p.best] : "none (a VM with DMA-capable devices is blocked)");
	for (uint32_t m = VFIOMIG_DIRTY_MECH_TYPE1; m < VFIOMIG_DIRTY_MECH_NR; m++) {
		char text[200];

		if (p.available & (1u << m))
			snprintf(text, sizeof(text), "available%s",
				 m == VFIOMIG_DIRTY_MECH_TYPE1 && p.type1_coarse ?
					 " (coarse: every mapped page reported dirty)" : "");
		else
			snprintf(text, sizeof(text), "no: %s", p.why_not[m]);
		kv_str(o, names[m], text);
	}
	if (p.available & (1u << VFIOMIG_DIRTY_MECH_TYPE1)) {
		kv_hex(o, "type1_pgsize", p.type1_pgsize);
		kv_hex(o, "type1_max_bitmap", p.type1_max_bitmap);
	}
	close_obj(o, '}');
	return 0;
}


static int cmd_probe(const struct command *cmd, int argc, char **argv)
{
	VFIOMIG_OPTS(device_info, di);
	struct out o = { .first = { true } };
	const char *spec = NULL;
	struct target t;
	int ret;

	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i]))
			return help(cmd);
		if (strcmp(argv[i], "--json") == 0)
			o.json = true;
		else if ((ret = positional(cmd, argv[i], "DEVICE", &spec)) != ARGS_OK)
			return ret;
	}
	if (!spec)
		return usage_error(cmd, "missing DEVICE");
	ret = target_open(cmd, spec, &t);
	if (ret)
		return ret;
	o.log_prio = vfiomig_ctx_get_log_priority(t.ctx);
	ret = vfiomig_device_get_info(t.dev, &di);
	if (ret)
		goto out;

	if (o.json) {
		putchar('{');
		o.depth = 1;
		o.first[1] = true;
	}
	kv_str(&o, "device", vfiomig_device_name(t.dev));
	kv_str(&o, "backend", di.backend == VFIOMIG_BACKEND_GROUP ? "group+container" :
			      di.backend == VFIOMIG_BACKEND_IOMMUFD ? "cdev+iommufd" : "fd");
	if (di.group >= 0)
		kv_raw(&o, "iommu_group", "%d", di.group);
	kv_hex(&o, "flags", di.flags);
	kv_str(&o, "bus", di.flags & VFIOMIG_DEVICE_FLAGS_PCI ? "pci" : "other");
	kv_raw(&o, "reset", "%s", di.flags & VFIOMIG_DEVICE_FLAGS_RESET ? "true" : "false");
	kv_raw(&o, "num_regions", "%u", di.num_regions);
	kv_raw(&o, "num_irqs", "%u", di.num_irqs);
	ret = probe_regions(&o, &t, &di);
	if (!ret)
		ret = probe_iommu(&o, &t);
	if (!ret)
		ret = probe_migration(&o, &t);
	if (!ret)
		ret = probe_dirty(&o, &t);
	if (o.json)
		printf("\n}\n");
out:
	if (ret) {
		fflush(stdout);
		fail(cmd, spec, ret);
	}
	target_close(&t);
	return ret ? 1 : 0;
}

/* ------------------------------------------------------------------ demo */

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

static const char demo_config[] = "demo VMM: PCI config space + MSI-X table of the guest's NIC";

static int demo_config_save(void *user, const void **data, size_t *len)
{
	(void)user;
	*data = demo_config;
	*len = sizeof(demo_config);
	return 0;
}

static int demo_config_load(void *user, const void *data, size_t len)
{
	int *ok = user;

	*ok = len == sizeof(demo_config) && memcmp(data, demo_config, len) == 0;
	return *ok ? 0 : -EINVAL;
}

static void print_mib(const char *label, uint64_t bytes)
{
	printf("  %-26s %12llu bytes (%.2f MiB)\n", label, (unsigned long long)bytes,
	       (double)bytes / (1024.0 * 1024.0));
}

#define DEMO_SRC "0000:03:00.0"
#define DEMO_DST "0000:04:00.0"

/* One demo run: its options, the two simulated devices and the migration between them. */
struct demo {
	uint64_t state, dirty, max_rounds, downtime_ms;
	bool v1, precopy;
	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct vfiomig_sim_device *sa, *sb;
	struct vfiomig_device *da, *db;
	struct vfiomig_mig *src, *dst;
	struct vfiomig_stream *wire; /* in memory: the source writes, the destination reads */
	int config_ok;               /* the VMM config record arrived intact */
};

static int demo_args(const struct command *cmd, int argc, char **argv, struct demo *d)
{
	const char *v;
	int r;

	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i]))
			return help(cmd);
		if ((r = opt_value(cmd, argc, argv, &i, "--state", &v))) {
			if (r < 0)
				return 2;
			if (!parse_size(v, &d->state))
				return usage_error(cmd, "--state: '%s' is not a size", v);
			if (d->state < 4096 || d->state % 4096)
				return usage_error(cmd, "--state: '%s' is not a multiple of 4K", v);
		} else if ((r = opt_value(cmd, argc, argv, &i, "--dirty", &v))) {
			if (r < 0)
				return 2;
			if (!parse_size(v, &d->dirty))
				return usage_error(cmd, "--dirty: '%s' is not a number", v);
			if (d->dirty > UINT32_MAX)
				return usage_error(cmd, "--dirty: '%s' is over %" PRIu32, v,
						   UINT32_MAX);
		} else if ((r = opt_value(cmd, argc, argv, &i, "--downtime-ms", &v))) {
			if (r < 0)
				return 2;
			if (!parse_size(v, &d->downtime_ms) || d->downtime_ms > 3600000)
				return usage_error(cmd, "--downtime-ms: '%s' is not a number of ms "
						   "up to 3600000", v);
		} else if ((r = opt_value(cmd, argc, argv, &i, "--proto", &v))) {
			if (r < 0)
				return 2;
			if (strcmp(v, "v1") != 0 && strcmp(v, "v2") != 0)
				return usage_error(cmd, "--proto: '%s' is not v1 or v2", v);
			d->v1 = strcmp(v, "v1") == 0;
		} else if (strcmp(argv[i], "--no-precopy") == 0) {
			d->precopy = false;
		} else if (argv[i][0] == '-') {
			return usage_error(cmd, "unknown option '%s'", argv[i]);
		} else {
			return usage_error(cmd, "unexpected argument '%s'", argv[i]);
		}
	}
	return ARGS_OK;
}

/* Two simulated devices, migrations on both, and the stream between them; both set up. */
static int demo_setup(struct demo *d)
{
	VFIOMIG_OPTS(sim_device_opts, so, .name = DEMO_SRC, .vendor_id = 0x8086,
		     .device_id = 0x1572, .state_size = d->state,
		     .auto_dirty_pages = (uint32_t)d->dirty,
		     .migration = d->v1 ? VFIOMIG_SIM_MIG_V1 :
					  VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
						  VFIOMIG_SIM_MIG_PRE_COPY);
	VFIOMIG_OPTS(mig_opts, so_save, .flags = (d->v1 ? VFIOMIG_MIG_F_ALLOW_V1 : 0) |
						  (d->precopy ? 0 : VFIOMIG_MIG_F_NO_PRECOPY),
		     .config_save = demo_config_save);
	VFIOMIG_OPTS(mig_opts, so_load, .flags = d->v1 ? VFIOMIG_MIG_F_ALLOW_V1 : 0,
		     .config_load = demo_config_load, .config_user = &d->config_ok);
	int ret;

	ret = vfiomig_sim_new(NULL, &d->sim);
	if (!ret)
		ret = tool_ctx_new(d->sim, &d->ctx);
	if (!ret)
		ret = vfiomig_sim_device_add(d->sim, &so, &d->sa);
	so.name = DEMO_DST;
	if (!ret)
		ret = vfiomig_sim_device_add(d->sim, &so, &d->sb);
	if (!ret)
		ret = vfiomig_device_open(d->ctx, DEMO_SRC, NULL, &d->da);
	if (!ret)
		ret = vfiomig_device_open(d->ctx, DEMO_DST, NULL, &d->db);
	if (ret)
		return ret;

	printf("vfiomig demo: live migration of a simulated %s device with %.1f MiB of state\n",
	       d->v1 ? "v1 (region protocol)" : "v2 (data_fd protocol, PRE_COPY + P2P)",
	       (double)d->state / (1024.0 * 1024.0));
	printf("  source " DEMO_SRC " -> destination " DEMO_DST ", in-memory pipe; allowed "
	       "downtime %llu ms\n", (unsigned long long)d->downtime_ms);
	/* The guest has been using the device: fill its state. */
	ret = vfiomig_sim_device_run(d->sa, d->state / 4096);
	if (!ret)
		ret = vfiomig_mig_new(d->da, VFIOMIG_ROLE_SAVE, &so_save, &d->src);
	if (!ret)
		ret = vfiomig_mig_new(d->db, VFIOMIG_ROLE_LOAD, &so_load, &d->dst);
	if (!ret)
		ret = vfiomig_stream_mem_pipe_new(d->ctx, &d->wire);
	if (!ret)
		ret = vfiomig_mig_save_setup(d->src, d->wire);
	if (!ret)
		ret = vfiomig_mig_load_setup(d->dst, d->wire);
	return ret;
}

/*
 * Pre-copy rounds while the guest keeps running, until the library's stop
 * advice says the rest fits the allowed downtime, or that the rest has
 * stopped shrinking (or --max-rounds).
 */
static const char *const advice_names[] = {
	[VFIOMIG_ADVICE_CONTINUE] = "continue",
	[VFIOMIG_ADVICE_FITS] = "the expected downtime fits",
	[VFIOMIG_ADVICE_STALLED] = "the dirty data stopped shrinking (not converged)",
	[VFIOMIG_ADVICE_NO_PRECOPY] = "no pre-copy",
	[VFIOMIG_ADVICE_WAIT_ACK] = "waiting for the switchover-ack",
};

static int demo_precopy(struct demo *d)
{
	VFIOMIG_OPTS(mig_pending, pend);
	uint64_t round;
	int advice = VFIOMIG_ADVICE_CONTINUE;

	for (round = 1; d->precopy && round <= d->max_rounds; round++) {
		uint64_t before = vfiomig_stream_bytes_written(d->wire);
		int ret;

		/* The guest keeps running between rounds. */
		ret = vfiomig_sim_device_run(d->sa, d->dirty * 4);
		if (!ret)
			ret = vfiomig_mig_save_iterate(d->src, d->wire, 0);
		if (ret >= 0) {
			ret = vfiomig_mig_load(d->dst, d->wire);
			ret = ret == 1 ? 0 : (ret == 0 ? -EPROTO : ret);
		}
		if (!ret)
			ret = vfiomig_mig_save_pending(d->src, &pend);
		if (!ret) {
			advice = vfiomig_mig_stop_advice(d->src, (uint32_t)d->downtime_ms, NULL);
			ret = advice < 0 ? advice : 0;
		}
		if (ret)
			return ret;
		printf("  pre-copy round %2llu: %10llu stream bytes; still dirty %8llu bytes, "
		       "initial data %s, %.0f MB/s, expected downtime %.2f ms\n",
		       (unsigned long long)round,
		       (unsigned long long)(vfiomig_stream_bytes_written(d->wire) - before),
		       (unsigned long long)pend.precopy_dirty,
		       vfiomig_mig_initial_data_sent(d->src) ? "sent" : "pending",
		       (double)pend.bandwidth / 1e6, (double)pend.downtime_ns / 1e6);
		if (advice != VFIOMIG_ADVICE_CONTINUE && advice != VFIOMIG_ADVICE_WAIT_ACK)
			break;
	}
	if (d->precopy)
		printf("  stop: %s\n", advice == VFIOMIG_ADVICE_CONTINUE ? "--max-rounds reached" :
		       advice_names[advice]);
	return 0;
}

/* Pause the VM: the rest moves in stop-and-copy, then the destination resumes. */
static int demo_stop_and_copy(struct demo *d)
{
	struct timespec t0;
	int ret;

	/* The guest writes right up to the moment it is paused: those pages go in stop-copy. */
	ret = vfiomig_sim_device_run(d->sa, d->dirty);
	if (ret)
		return ret;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = vfiomig_mig_vm_state(d->src, VFIOMIG_VM_STOPPED);
	if (!ret)
		ret = vfiomig_mig_save_complete(d->src, d->wire);
	if (!ret) {
		ret = vfiomig_mig_load(d->dst, d->wire);
		ret = ret == 0 ? 0 : (ret > 0 ? -EPROTO : ret);
	}
	if (!ret)
		ret = vfiomig_mig_vm_state(d->dst, VFIOMIG_VM_RUNNING);
	if (!ret)
		printf("  VM paused for %.2f ms (stop-and-copy, load, resume)\n", ms_since(&t0));
	return ret;
}

/* The destination must hold exactly the source's state, and the VMM's config record. */
static int demo_verify(const struct command *cmd, struct demo *d)
{
	const void *a, *b;
	size_t alen, blen;

	a = vfiomig_sim_device_state(d->sa, &alen);
	b = vfiomig_sim_device_state(d->sb, &blen);
	if (alen != blen || memcmp(a, b, alen) != 0)
		return report(cmd, "verify", "the state of " DEMO_DST " differs from " DEMO_SRC);
	if (!d->config_ok)
		return report(cmd, "verify", "the VMM config record did not arrive");
	return 0;
}

static int demo_report(struct demo *d)
{
	VFIOMIG_OPTS(mig_stats, st);
	size_t len;
	int ret;

	ret = vfiomig_mig_get_stats(d->src, &st);
	if (ret)
		return ret;
	vfiomig_sim_device_state(d->sb, &len);
	printf("result: destination state is bit-identical to the source (%zu bytes); "
	       "destination %s\n", len,
	       vfiomig_device_state_name((uint32_t)vfiomig_sim_device_mig_state(d->sb)));
	printf("  %-26s %12llu\n", "pre-copy rounds", (unsigned long long)st.precopy_rounds);
	print_mib("pre-copy device bytes", st.precopy_bytes);
	print_mib("stop-copy device bytes", st.stopcopy_bytes);
	printf("  %-26s %12.3f ms\n", "stop-copy time (source)", (double)st.stopcopy_ns / 1e6);
	print_mib("stream bytes", st.bytes);
	return 0;
}

static void demo_free(struct demo *d)
{
	vfiomig_mig_free(d->src);
	vfiomig_mig_free(d->dst);
	vfiomig_stream_free(d->wire);
	vfiomig_device_close(d->da);
	vfiomig_device_close(d->db);
	vfiomig_ctx_unref(d->ctx);
	vfiomig_sim_free(d->sim);
}

static int cmd_demo(const struct command *cmd, int argc, char **argv)
{
	struct demo d = { .state = 64ull << 20, .dirty = 16, .max_rounds = 30, .precopy = true,
			  .downtime_ms = 300 };
	int ret, rc;

	rc = demo_args(cmd, argc, argv, &d);
	if (rc != ARGS_OK)
		return rc;
	if ((ret = demo_setup(&d)))
		rc = fail(cmd, "setting up the simulated devices", ret);
	else if ((ret = demo_precopy(&d)))
		rc = fail(cmd, "pre-copy", ret);
	else if ((ret = demo_stop_and_copy(&d)))
		rc = fail(cmd, "stop-and-copy", ret);
	else if ((rc = demo_verify(cmd, &d)) == 0 && (ret = demo_report(&d)))
		rc = fail(cmd, "statistics", ret);
	fflush(stdout);
	demo_free(&d);
	return rc;
}

/* ------------------------------------------------------------- save, load */

/*
 * May t's device migrate with these opts? 0, or 1 after saying why not,
 * in terms of what the user can change.
 */
int target_check_mig(const struct command *cmd, const char *spec, struct target *t,
		     const struct vfiomig_mig_opts *mo)
{
	VFIOMIG_OPTS(migration_info, mi);
	int prio = vfiomig_ctx_get_log_priority(t->ctx);
	char reason[256];
	int ret;

	/* A blocker is an answer here, not an error: keep it out of the log. */
	vfiomig_ctx_set_log_priority(t->ctx, VFIOMIG_LOG_ERR - 1);
	ret = vfiomig_mig_check(t->dev, mo, reason, sizeof(reason));
	if (ret == -EOPNOTSUPP && vfiomig_device_migration_info(t->dev, &mi))
		mi.protocols = UINT32_MAX; /* unknown: give the library's reason */
	vfiomig_ctx_set_log_priority(t->ctx, prio);
	if (ret != -EOPNOTSUPP)
		return ret ? fail(cmd, spec, ret) : 0;
	if (t->sim && mi.protocols == 0)
		return report(cmd, spec, "the simulated device has no migration support; "
			      "add mig=v2 (or v1, v2-p2p, v2-precopy, v2-p2p-precopy) to the spec");
	if (mi.protocols == VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V1) &&
	    !(mo->flags & VFIOMIG_MIG_F_ALLOW_V1))
		return report(cmd, spec, "the device offers only the experimental v1 migration "
			      "protocol; pass --allow-v1 to use it");
	return report(cmd, spec, "cannot migrate: %s", reason);
}

static void print_mig_summary(struct vfiomig_mig *m, struct target *t, bool save)
{
	VFIOMIG_OPTS(mig_stats, st);

	vfiomig_mig_get_stats(m, &st);
	printf("%s %s: %s, %llu stream bytes, %llu device bytes (%llu pre-copy rounds); "
	       "device now %s\n", save ? "saved" : "loaded", vfiomig_device_name(t->dev),
	       st.protocol == VFIOMIG_PROTO_V1 ? "v1" : "v2",
	       (unsigned long long)st.bytes, (unsigned long long)st.device_bytes,
	       (unsigned long long)st.precopy_rounds, vfiomig_device_state_name(st.device_state));
}

/* Name a file's stream after the file, so the library's lines say which file. */
static void stream_name_file(struct vfiomig_stream *s, const char *file)
{
	if (strlen(file) < 128)
		vfiomig_stream_set_name(s, file);
}

/*
 * A save writes FILE's temporary sibling, "DIR/.BASE.XXXXXX", and renames
 * it onto FILE once the stream is complete and on disk: FILE is never
 * half-written, and a failed or interrupted save leaves an existing FILE
 * as it was. The signal handler removes the temporary on SIGINT/TERM/HUP.
 */
static char save_tmp[PATH_MAX];
static volatile sig_atomic_t save_tmp_live;

static void save_tmp_on_signal(int sig)
{
	if (save_tmp_live)
		unlink(save_tmp);
	signal(sig, SIG_DFL);
	raise(sig);
}

/* Create the temporary (0600, O_CLOEXEC): its fd, or -errno. */
static int save_tmp_create(const char *file)
{
	static const int sigs[] = { SIGINT, SIGTERM, SIGHUP };
	const char *slash = strrchr(file, '/');
	int dirlen = slash ? (int)(slash - file) + 1 : 0;
	struct sigaction sa = { .sa_handler = save_tmp_on_signal };
	sigset_t all, old;
	int fd, err, n;

	n = snprintf(save_tmp, sizeof(save_tmp), "%.*s.%s.XXXXXX", dirlen, file,
		     file + dirlen);
	if (n < 0 || (size_t)n >= sizeof(save_tmp))
		return -ENAMETOOLONG;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++)
		sigaction(sigs[i], &sa, NULL);
	/* No signal between creating the file and knowing it must go. */
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);
	fd = mkostemp(save_tmp, O_CLOEXEC);
	err = errno;
	save_tmp_live = fd >= 0;
	sigprocmask(SIG_SETMASK, &old, NULL);
	return fd >= 0 ? fd : -err;
}

static void save_tmp_remove(void)
{
	if (save_tmp_live) {
		unlink(save_tmp);
		save_tmp_live = 0;
	}
}

/* The directory of FILE, for its error messages and its fsync. */
static void dir_of(const char *file, char *buf, size_t len)
{
	const char *slash = strrchr(file, '/');

	if (!slash)
		snprintf(buf, len, ".");
	else if (slash == file)
		snprintf(buf, len, "/");
	else
		snprintf(buf, len, "%.*s", (int)(slash - file), file);
}

/* Data on disk, then the name: fsync, close, rename, fsync the directory. 0 or 1 (said). */
static int save_commit(const struct command *cmd, const char *file, int fd)
{
	char dir[PATH_MAX];
	int dfd;

	if (fsync(fd)) {
		int err = errno;

		close(fd);
		return report(cmd, file, "fsync of %s: %s", save_tmp, strerror(err));
	}
	if (close(fd))
		return report(cmd, file, "close of %s: %s", save_tmp, strerror(errno));
	if (rename(save_tmp, file))
		return report(cmd, file, "rename from %s: %s", save_tmp, strerror(errno));
	save_tmp_live = 0;
	/* The rename itself survives a crash only once the directory is synced. */
	dir_of(file, dir, sizeof(dir));
	dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd))
		fprintf(stderr, "%s %s: %s: warning: saved, but fsync of directory %s: %s\n", prog,
			cmd->name, file, dir, strerror(errno));
	if (dfd >= 0)
		close(dfd);
	return 0;
}

/* Setup, up to `rounds` pre-copy rounds, stop, the rest: the device ends in STOP. */
static int save_stream(struct vfiomig_mig *m, struct vfiomig_stream *s, uint64_t rounds)
{
	int ret = vfiomig_mig_save_setup(m, s);

	for (uint64_t r = 0; !ret && r < rounds; r++) {
		ret = vfiomig_mig_save_iterate(m, s, 0);
		if (ret == 0 && vfiomig_mig_initial_data_sent(m))
			break;
		ret = ret > 0 ? 0 : ret;
	}
	if (ret >= 0)
		ret = vfiomig_mig_vm_state(m, VFIOMIG_VM_STOPPED);
	if (!ret)
		ret = vfiomig_mig_save_complete(m, s);
	if (!ret)
		ret = vfiomig_stream_flush(s);
	return ret;
}

static int cmd_save(const struct command *cmd, int argc, char **argv)
{
	const char *spec = NULL, *file = NULL, *v;
	uint64_t rounds = 8;
	uint32_t flags = 0;
	struct vfiomig_stream *s = NULL;
	struct vfiomig_mig *m = NULL;
	struct stat stt;
	struct target t;
	int fd, ret, rc;

	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i]))
			return help(cmd);
		if ((ret = opt_value(cmd, argc, argv, &i, "-o", &v))) {
			if (ret < 0)
				return 2;
			file = v;
		} else if ((ret = opt_value(cmd, argc, argv, &i, "--rounds", &v))) {
			if (ret < 0)
				return 2;
			if (!parse_size(v, &rounds))
				return usage_error(cmd, "--rounds: '%s' is not a number", v);
		} else if (strcmp(argv[i], "--allow-v1") == 0) {
			flags |= VFIOMIG_MIG_F_ALLOW_V1;
		} else if (strcmp(argv[i], "--no-precopy") == 0) {
			flags |= VFIOMIG_MIG_F_NO_PRECOPY;
		} else if ((ret = positional(cmd, argv[i], "DEVICE", &spec)) != ARGS_OK) {
			return ret;
		}
	}
	if (!spec)
		return usage_error(cmd, "missing DEVICE");
	if (!file)
		return usage_error(cmd, "missing -o FILE");
	if (!file[0])
		return usage_error(cmd, "-o: empty file name");
	if (stat(file, &stt) == 0 && S_ISDIR(stt.st_mode))
		return report(cmd, file, "is a directory; -o wants the file to write");

	VFIOMIG_OPTS(mig_opts, mo, .flags = flags);
	rc = target_open(cmd, spec, &t);
	if (rc)
		return rc;
	rc = target_check_mig(cmd, spec, &t, &mo);
	if (rc)
		goto out;
	fd = save_tmp_create(file);
	if (fd < 0) {
		char dir[PATH_MAX];

		dir_of(file, dir, sizeof(dir));
		rc = report(cmd, file, "cannot create a temporary file in %s: %s", dir,
			    strerror(-fd));
		goto out;
	}
	ret = vfiomig_stream_fd_new(t.ctx, fd, 0, &s);
	if (!ret) {
		stream_name_file(s, file);
		ret = vfiomig_mig_new(t.dev, VFIOMIG_ROLE_SAVE, &mo, &m);
	}
	if (!ret)
		ret = save_stream(m, s, rounds);
	vfiomig_stream_free(s);
	if (ret) {
		close(fd);
		rc = fail(cmd, spec, ret);
	} else {
		rc = save_commit(cmd, file, fd);
	}
	if (!rc)
		print_mig_summary(m, &t, true);
out:
	save_tmp_remove();
	/* A migration freed before it completed puts the device back in RUNNING. */
	vfiomig_mig_free(m);
	target_close(&t);
	return rc;
}

static int cmd_load(const struct command *cmd, int argc, char **argv)
{
	const char *spec = NULL, *file = NULL, *v;
	uint32_t flags = 0;
	struct vfiomig_stream *s = NULL;
	struct vfiomig_mig *m = NULL;
	struct target t;
	int fd, ret, rc;

	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i]))
			return help(cmd);
		if ((ret = opt_value(cmd, argc, argv, &i, "-i", &v))) {
			if (ret < 0)
				return 2;
			file = v;
		} else if (strcmp(argv[i], "--allow-v1") == 0) {
			flags |= VFIOMIG_MIG_F_ALLOW_V1;
		} else if ((ret = positional(cmd, argv[i], "DEVICE", &spec)) != ARGS_OK) {
			return ret;
		}
	}
	if (!spec)
		return usage_error(cmd, "missing DEVICE");
	if (!file)
		return usage_error(cmd, "missing -i FILE");
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return report(cmd, file, "%s", strerror(errno));

	VFIOMIG_OPTS(mig_opts, mo, .flags = flags);
	rc = target_open(cmd, spec, &t);
	if (rc) {
		close(fd);
		return rc;
	}
	rc = target_check_mig(cmd, spec, &t, &mo);
	if (rc) {
		close(fd);
		goto out;
	}
	ret = vfiomig_stream_fd_new(t.ctx, fd, VFIOMIG_STREAM_FD_TAKE, &s);
	if (!ret) {
		stream_name_file(s, file);
		ret = vfiomig_mig_new(t.dev, VFIOMIG_ROLE_LOAD, &mo, &m);
	}
	if (!ret)
		ret = vfiomig_mig_load_setup(m, s);
	while (!ret) {
		ret = vfiomig_mig_load(m, s);
		if (ret == 0)
			break;
		ret = ret > 0 ? 0 : ret;
	}
	if (!ret)
		ret = vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING);
	if (ret)
		rc = fail(cmd, spec, ret);
	else
		print_mig_summary(m, &t, false);
out:
	vfiomig_mig_free(m);
	vfiomig_stream_free(s);
	target_close(&t);
	return rc;
}

/* ---------------------------------------------------------------- inspect */

static const char *rec_name(uint32_t t)
{
	static const char *const n[] = { "?", "PHASE", "END_OF_STATE", "DEV_DATA_STATE",
					 "DEV_CONFIG_STATE", "INIT_DATA_SENT", "OPTIONAL", "TRAILER" };

	return t < sizeof(n) / sizeof(n[0]) ? n[t] : "?";
}

static const char *phase_name(uint32_t p)
{
	return p == VFIOMIG_PHASE_SETUP ? "setup" : p == VFIOMIG_PHASE_PRECOPY ? "pre-copy" :
	       p == VFIOMIG_PHASE_STOPCOPY ? "stop-copy" : "-";
}

struct inspect_ctx {
	const char *file;
	bool verbose;
	bool json;
	uint64_t records;
};

static int inspect_record(void *user, const struct vfiomig_record *rec)
{
	struct inspect_ctx *ic = user;

	/* The title waits for the first record: a file that is no stream gets no output. */
	if (ic->verbose && !ic->json && ic->records == 0)
		printf("records of %s:\n", ic->file);
	ic->records++;
	if (ic->verbose && !ic->json)
		printf("  @%-10llu %-16s %-9s marker 0x%016llx size %llu\n",
		       (unsigned long long)rec->offset, rec_name(rec->type), phase_name(rec->phase),
		       (unsigned long long)rec->marker, (unsigned long long)rec->size);
	return 0;
}

static void inspect_print_json(const struct inspect_ctx *ic, const struct vfiomig_stream_info *si,
			       int ret)
{
	printf("{\n  \"file\": ");
	json_str(ic->file);
	printf(",\n  \"valid\": %s,\n  \"error\": ", ret ? "false" : "true");
	json_str(!ret ? "" : lib_err.count ? lib_err.first : vfiomig_strerror(ret));
	printf(",\n  \"format_version\": %u,\n  \"protocol\": %u,\n  \"flags\": %u,\n"
	       "  \"kind\": \"%s\",\n  \"vendor\": %u,\n  \"device\": %u,\n"
	       "  \"subvendor\": %u,\n  \"subdevice\": %u,\n  \"class_code\": %u,\n"
	       "  \"mdev_type\": ", si->version, si->protocol, si->flags,
	       si->kind == VFIOMIG_DEVKIND_MDEV ? "mdev" : "pci", si->vendor, si->device,
	       si->subvendor, si->subdevice, si->class_code);
	json_str(si->mdev_type);
	printf(",\n  \"driver\": ");
	json_str(si->driver);
	printf(",\n  \"bytes\": %llu,\n  \"records\": %llu,\n  \"data_records\": %llu,\n"
	       "  \"data_bytes\": %llu,\n  \"precopy_rounds\": %llu,\n"
	       "  \"precopy_bytes\": %llu,\n  \"stopcopy_bytes\": %llu,\n"
	       "  \"config_bytes\": %llu,\n  \"init_data_sent\": %s\n}\n",
	       (unsigned long long)si->bytes, (unsigned long long)ic->records,
	       (unsigned long long)si->data_records, (unsigned long long)si->data_bytes,
	       (unsigned long long)si->precopy_rounds, (unsigned long long)si->precopy_bytes,
	       (unsigned long long)si->stopcopy_bytes, (unsigned long long)si->config_bytes,
	       si->init_data_sent ? "true" : "false");
}

static void inspect_print_text(const struct inspect_ctx *ic, const struct vfiomig_stream_info *si,
			       int ret)
{
	printf("%s: libvfiomig stream, format version %u, protocol v%u\n", ic->file, si->version,
	       si->protocol);
	printf("  device      %s %04x:%04x subsystem %04x:%04x class %06x%s%s%s%s\n",
	       si->kind == VFIOMIG_DEVKIND_MDEV ? "mdev" : "PCI", si->vendor, si->device,
	       si->subvendor, si->subdevice, si->class_code, si->mdev_type[0] ? " type " : "",
	       si->mdev_type, si->driver[0] ? " driver " : "", si->driver);
	printf("  records     %llu (%llu data records, %llu data bytes)\n",
	       (unsigned long long)ic->records, (unsigned long long)si->data_records,
	       (unsigned long long)si->data_bytes);
	printf("  pre-copy    %llu rounds, %llu bytes; initial data %s\n",
	       (unsigned long long)si->precopy_rounds, (unsigned long long)si->precopy_bytes,
	       si->init_data_sent ? "marked sent" : "not marked");
	printf("  stop-copy   %llu bytes; VMM config %s (%llu bytes)\n",
	       (unsigned long long)si->stopcopy_bytes, si->has_config ? "present" : "absent",
	       (unsigned long long)si->config_bytes);
	printf("  integrity   %s (%llu bytes read)\n",
	       ret ? "FAILED" : "trailer counts and CRC32C verified",
	       (unsigned long long)si->bytes);
}

static int cmd_inspect(const struct command *cmd, int argc, char **argv)
{
	VFIOMIG_OPTS(stream_info, si);
	struct inspect_ctx ic = { 0 };
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_stream *s = NULL;
	int fd, ret;

	for (int i = 0; i < argc; i++) {
		if (is_help(argv[i]))
			return help(cmd);
		if (strcmp(argv[i], "--json") == 0)
			ic.json = true;
		else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--records") == 0)
			ic.verbose = true;
		else if ((ret = positional(cmd, argv[i], "FILE", &ic.file)) != ARGS_OK)
			return ret;
	}
	if (!ic.file)
		return usage_error(cmd, "missing FILE");
	fd = open(ic.file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return report(cmd, ic.file, "%s", strerror(errno));
	ret = tool_ctx_new(NULL, &ctx);
	if (!ret)
		ret = vfiomig_stream_fd_new(ctx, fd, VFIOMIG_STREAM_FD_TAKE, &s);
	else
		close(fd);
	if (ret)
		goto out;
	stream_name_file(s, ic.file);
	ret = vfiomig_stream_inspect(s, 0, &si, inspect_record, &ic);
	/*
	 * A stream whose header was read gets its summary even when a later
	 * part is broken (what was found, and where it failed); a file that is
	 * not a stream at all gets only the error.
	 */
	if (!ret || si.version) {
		if (ic.json)
			inspect_print_json(&ic, &si, ret);
		else
			inspect_print_text(&ic, &si, ret);
	}
out:
	if (ret)
		fail(cmd, ic.file, ret);
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	return ret ? 1 : 0;
}

/* ---------------------------------------------------------------- commands */

static int cmd_help(const struct command *cmd, int argc, char **argv);

static const struct command commands[] = {
	{ "probe", cmd_probe, "DEVICE [--json]",
	  "show a device's regions, IOMMU capabilities and migration support",
	  "Open DEVICE and show what a VMM needs to know before it migrates it: the\n"
	  "device info, its regions (flags, size, sparse-mmap areas), the type1 IOMMU's\n"
	  "capabilities, the migration protocols it offers (or what blocks migration)\n"
	  "and which dirty-page tracking mechanisms work. Nothing is changed.\n"
	  "\n"
	  "Options:\n"
	  "  --json         print JSON instead of text\n"
	  "  -h, --help     show this help\n"
	  "\n"
	  "DEVICE: see 'vfiomig --help'.\n"
	  "\n"
	  "Example:\n"
	  "  vfiomig probe sim:pci,mig=v2-p2p-precopy\n" },
	{ "demo", cmd_demo, "[--state SIZE] [--dirty PAGES] [--downtime-ms N] [--proto v1|v2] "
	  "[--no-precopy]",
	  "live-migrate a simulated device into another and check the result",
	  "Live-migrate a simulated device (" DEMO_SRC ", SIZE bytes of state that the\n"
	  "guest keeps changing) into a second one (" DEMO_DST ") over an in-memory\n"
	  "pipe: pre-copy rounds until the library's stop advice says the rest fits the\n"
	  "allowed downtime, or that it stopped shrinking (at most 30 rounds), then\n"
	  "stop-and-copy, and the destination resumes. Checks that the destination's state is bit-identical\n"
	  "and that the VMM's config record arrived, then prints the rounds, the bytes\n"
	  "and how long the VM was paused. Needs no hardware.\n"
	  "\n"
	  "Options:\n"
	  "  --state SIZE   device state, a multiple of 4K; suffix K, M or G (default 64M)\n"
	  "  --dirty PAGES  4 KiB pages the guest changes per device read while it runs,\n"
	  "                 4x that between pre-copy rounds (default 16)\n"
	  "  --downtime-ms N  the pause the VM may take (default 300)\n"
	  "  --proto v1|v2  kernel migration protocol (default v2, with PRE_COPY and P2P)\n"
	  "  --no-precopy   no pre-copy rounds: stop-and-copy only\n"
	  "  -h, --help     show this help\n"
	  "\n"
	  "Example:\n"
	  "  vfiomig demo --state 256M --dirty 64\n" },
	{ "save", cmd_save, "DEVICE -o FILE [--no-precopy] [--allow-v1] [--rounds N]",
	  "save a device's migration state into a file",
	  "Save DEVICE's migration state into FILE as a migration source does: set up,\n"
	  "pre-copy rounds while the device runs (until its initial data is sent, at\n"
	  "most N), then stop it (STOP_COPY) and write the rest. The device is left\n"
	  "stopped (STOP); if the save fails it is running again. FILE is written under\n"
	  "a temporary name in the same directory and renamed into place once complete\n"
	  "and synced: a failed save leaves no FILE, and an existing FILE untouched.\n"
	  "\n"
	  "Options:\n"
	  "  -o FILE        the stream file to write (required)\n"
	  "  --rounds N     at most N pre-copy rounds (default 8)\n"
	  "  --no-precopy   no pre-copy rounds: stop-and-copy only\n"
	  "  --allow-v1     allow the experimental v1 region protocol (Linux 5.8-5.17)\n"
	  "  -h, --help     show this help\n"
	  "\n"
	  "DEVICE must support migration; a simulated device needs mig= in its spec\n"
	  "(see 'vfiomig --help').\n"
	  "\n"
	  "Example:\n"
	  "  vfiomig save sim:pci,mig=v2 -o dev.vfm\n" },
	{ "load", cmd_load, "DEVICE -i FILE [--allow-v1]",
	  "load a saved migration state into a device",
	  "Load a stream written by 'vfiomig save' (or any libvfiomig source) into\n"
	  "DEVICE as a migration destination does: the device takes the data in\n"
	  "RESUMING and is left RUNNING. The stream must be for a device of the same\n"
	  "kind (PCI IDs or mdev type) and pass its trailer's counts and CRC32C check.\n"
	  "\n"
	  "Options:\n"
	  "  -i FILE        the stream file to read (required)\n"
	  "  --allow-v1     allow the experimental v1 region protocol (Linux 5.8-5.17)\n"
	  "  -h, --help     show this help\n"
	  "\n"
	  "A simulated device lives only as long as one vfiomig process: to load what\n"
	  "was saved from one, give the same spec (a fresh device of the same kind).\n"
	  "\n"
	  "Example:\n"
	  "  vfiomig load sim:pci,mig=v2 -i dev.vfm\n" },
	{ "inspect", cmd_inspect, "FILE [--records] [--json]",
	  "decode and verify a migration stream file",
	  "Decode and verify a libvfiomig migration stream without touching a device:\n"
	  "the header (format version, protocol, device identity), the records, the\n"
	  "pre-copy and stop-copy sizes, and the trailer's counts and CRC32C. Exits 1\n"
	  "when FILE is not a stream (nothing on stdout then) or fails verification.\n"
	  "\n"
	  "Options:\n"
	  "  --records, -v  list every record: offset, type, phase, marker, size\n"
	  "  --json         print the summary as JSON\n"
	  "  -h, --help     show this help\n"
	  "\n"
	  "Example:\n"
	  "  vfiomig inspect dev.vfm --records\n" },
	{ "migrate", cmd_migrate, migrate_args, migrate_summary, migrate_help },
	{ "help", cmd_help, "[COMMAND]", "show this help, or a command's ('vfiomig help save')",
	  "Show the list of commands, or COMMAND's help (the same as\n"
	  "'vfiomig COMMAND --help').\n"
	  "\n"
	  "Example:\n"
	  "  vfiomig help save\n" },
};

#define NR_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < NR_COMMANDS; i++)
		if (strcmp(commands[i].name, name) == 0)
			return &commands[i];
	return NULL;
}

static void usage(FILE *f)
{
	for (size_t i = 0; i < NR_COMMANDS; i++)
		fprintf(f, "%s %s %s%s%s\n", i ? "      " : "usage:", prog, commands[i].name,
			commands[i].args[0] ? " " : "", commands[i].args);
	fprintf(f, "       %s --version | --help\n\nCommands:\n", prog);
	for (size_t i = 0; i < NR_COMMANDS; i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].summary);
	fprintf(f,
		"\n"
		"'%s COMMAND --help' (or '%s help COMMAND') shows a command's options.\n"
		"\n"
		"DEVICE: a PCI address (0000:03:00.0), an mdev UUID, a sysfs device path,\n"
		"        /dev/vfio/devices/vfioN, or a simulated device (it exists only\n"
		"        inside this one vfiomig process):\n"
		"        sim:pci[,name=ADDR,vendor=0xVVVV,device=0xDDDD,subvendor=0xVVVV,\n"
		"                subdevice=0xDDDD,bar0=64K,sparse=0|1,msix_mappable=0|1,\n"
		"                mig=none|v1|v1-trapped|v2|v2-p2p|v2-precopy|v2-p2p-precopy,\n"
		"                state=64K,dirty=PAGES,v1data=64K,dmalog=0|1,cost=check|copy]\n"
		"        sim:mdev[,name=UUID,...]       (save, load, migrate need mig=)\n"
		"\n"
		"Environment:\n"
		"  VFIOMIG_LOG=err|warning|info|debug   library log detail (default err)\n"
		"\n"
		"Exit status: 0  success\n"
		"             1  the operation failed (the reason is on stderr)\n"
		"             2  usage error: the command line is wrong, nothing was done\n",
		prog, prog);
}

static int cmd_help(const struct command *cmd, int argc, char **argv)
{
	const struct command *c;

	if (argc == 0) {
		usage(stdout);
		return 0;
	}
	if (is_help(argv[0]))
		return help(cmd);
	if (argv[0][0] == '-')
		return usage_error(cmd, "unknown option '%s'", argv[0]);
	if (argc > 1)
		return usage_error(cmd, "unexpected argument '%s' (COMMAND is '%s')", argv[1],
				   argv[0]);
	c = find_command(argv[0]);
	if (!c)
		return usage_error(NULL, "unknown command '%s'", argv[0]);
	return help(c);
}

int main(int argc, char **argv)
{
	const struct command *c;
	int rc;

	if (argc < 2)
		return usage_error(NULL, "missing command");
	if (is_help(argv[1])) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("vfiomig %s\n", vfiomig_version());
		return 0;
	}
	if (argv[1][0] == '-')
		return usage_error(NULL, "unknown option '%s'", argv[1]);
	c = find_command(argv[1]);
	if (!c)
		return usage_error(NULL, "unknown command '%s'", argv[1]);
	rc = c->run(c, argc - 2, argv + 2);
	lib_err_flush();
	return rc;
}
