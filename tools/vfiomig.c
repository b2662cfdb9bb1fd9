/* SPDX-License-Identifier: MIT */
/*
 * vfiomig: command-line front end of libvfiomig.
 *
 *   vfiomig probe DEVICE [--json]
 *   vfiomig demo [--state SIZE] [--dirty PAGES] [--proto v1|v2] [--no-precopy]
 *   vfiomig save DEVICE -o FILE [--no-precopy] [--allow-v1] [--rounds N]
 *   vfiomig load DEVICE -i FILE [--allow-v1]
 *   vfiomig inspect FILE [--records] [--json]
 *
 * DEVICE is anything vfiomig_device_open() accepts (PCI address, mdev
 * UUID, sysfs path, /dev/vfio/devices/vfioN) or a simulated device spec
 * "sim:pci[,key=value...]" / "sim:mdev[,...]" (see vfiomig_sim_device_add_spec).
 */
#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/sim.h>
#include <vfiomig/migration.h>
#include <vfiomig/stream.h>

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static const char *prog = "vfiomig";

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s probe DEVICE [--json]\n"
		"       %s demo [--state SIZE] [--dirty PAGES] [--proto v1|v2] [--no-precopy]\n"
		"       %s save DEVICE -o FILE [--no-precopy] [--allow-v1] [--rounds N]\n"
		"       %s load DEVICE -i FILE [--allow-v1]\n"
		"       %s inspect FILE [--records] [--json]\n"
		"       %s --version | --help\n"
		"\n"
		"DEVICE: a PCI address (0000:03:00.0), an mdev UUID, a sysfs device path,\n"
		"        /dev/vfio/devices/vfioN, or a simulated device:\n"
		"        sim:pci[,name=ADDR,vendor=0xVVVV,device=0xDDDD,bar0=64K,sparse=0|1,...]\n"
		"        sim:mdev[,name=UUID,...]\n"
		"Log detail: VFIOMIG_LOG=debug|info|warning|err\n",
		prog, prog, prog, prog, prog, prog);
}

/* ------------------------------------------------------------ device setup */

struct target {
	struct vfiomig_sim *sim;
	struct vfiomig_ctx *ctx;
	struct vfiomig_device *dev;
};

static void target_close(struct target *t)
{
	vfiomig_device_close(t->dev);
	vfiomig_ctx_unref(t->ctx);
	vfiomig_sim_free(t->sim);
	memset(t, 0, sizeof(*t));
}

static int target_open(const char *spec, struct target *t)
{
	const char *name = spec;
	int ret;

	memset(t, 0, sizeof(*t));
	if (strncmp(spec, "sim:", 4) == 0) {
		struct vfiomig_sim_device *sd;

		ret = vfiomig_sim_new(NULL, &t->sim);
		if (ret)
			goto fail;
		ret = vfiomig_sim_ctx_new(t->sim, NULL, &t->ctx);
		if (ret)
			goto fail;
		ret = vfiomig_sim_device_add_spec(t->sim, t->ctx, spec, &sd);
		if (ret) {
			fprintf(stderr, "%s: bad simulated device spec '%s'\n", prog, spec);
			goto fail;
		}
		name = vfiomig_sim_device_name(sd);
	} else {
		ret = vfiomig_ctx_new(NULL, &t->ctx);
		if (ret)
			goto fail;
	}
	ret = vfiomig_device_open(t->ctx, name, NULL, &t->dev);
	if (ret)
		goto fail;
	return 0;
fail:
	fprintf(stderr, "%s: cannot open %s: %s\n", prog, spec, vfiomig_strerror(ret));
	target_close(t);
	return ret;
}

/* -------------------------------------------------------------- output */

/* A tiny printer that emits either indented text or JSON. */
struct out {
	int log_prio;
	bool json;
	int depth;
	bool first[16];
};

static void json_str(const char *s)
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
	VFIOMIG_OPTS(dirty_probe, p);
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

static int cmd_probe(int argc, char **argv)
{
	VFIOMIG_OPTS(device_info, di);
	struct out o = { .first = { true } };
	const char *spec = NULL;
	struct target t;
	int ret;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			o.json = true;
		else if (!spec && argv[i][0] != '-')
			spec = argv[i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!spec) {
		usage(stderr);
		return 2;
	}
	ret = target_open(spec, &t);
	if (ret)
		return 1;
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
	if (ret)
		fprintf(stderr, "%s: probe %s: %s\n", prog, spec, vfiomig_strerror(ret));
	target_close(&t);
	return ret ? 1 : 0;
}

/* ------------------------------------------------------------ migration */

static int parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);
	int shift = 0;

	if (end == s)
		return -EINVAL;
	switch (*end) {
	case 'k': case 'K': shift = 10; end++; break;
	case 'm': case 'M': shift = 20; end++; break;
	case 'g': case 'G': shift = 30; end++; break;
	default: break;
	}
	if (*end || (shift && v > (UINT64_MAX >> shift)))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

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

static int cmd_demo(int argc, char **argv)
{
	uint64_t state = 64ull << 20, dirty = 16, max_rounds = 10;
	bool v1 = false, precopy = true;
	struct vfiomig_sim *sim = NULL;
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_sim_device *sa, *sb;
	struct vfiomig_device *da = NULL, *db = NULL;
	struct vfiomig_mig *src = NULL, *dst = NULL;
	struct vfiomig_stream *wire = NULL;
	struct timespec t0;
	int config_ok = 0, ret, rc = 1;
	const void *a, *b;
	size_t alen, blen;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--state") == 0 && i + 1 < argc) {
			if (parse_size(argv[++i], &state) || state < 4096 || state % 4096) {
				fprintf(stderr, "%s: --state wants a multiple of 4K\n", prog);
				return 2;
			}
		} else if (strcmp(argv[i], "--dirty") == 0 && i + 1 < argc) {
			if (parse_size(argv[++i], &dirty)) {
				usage(stderr);
				return 2;
			}
		} else if (strcmp(argv[i], "--proto") == 0 && i + 1 < argc) {
			i++;
			if (strcmp(argv[i], "v1") == 0)
				v1 = true;
			else if (strcmp(argv[i], "v2") != 0) {
				usage(stderr);
				return 2;
			}
		} else if (strcmp(argv[i], "--no-precopy") == 0) {
			precopy = false;
		} else {
			usage(stderr);
			return 2;
		}
	}

	VFIOMIG_OPTS(sim_device_opts, so, .name = "0000:03:00.0", .vendor_id = 0x8086,
		     .device_id = 0x1572, .state_size = state, .auto_dirty_pages = (uint32_t)dirty,
		     .migration = v1 ? VFIOMIG_SIM_MIG_V1 :
				       VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P |
					       VFIOMIG_SIM_MIG_PRE_COPY);
	VFIOMIG_OPTS(mig_opts, so_save, .flags = (v1 ? VFIOMIG_MIG_F_ALLOW_V1 : 0) |
						  (precopy ? 0 : VFIOMIG_MIG_F_NO_PRECOPY),
		     .config_save = demo_config_save);
	VFIOMIG_OPTS(mig_opts, so_load, .flags = v1 ? VFIOMIG_MIG_F_ALLOW_V1 : 0,
		     .config_load = demo_config_load, .config_user = &config_ok);
	VFIOMIG_OPTS(mig_pending, pend);
	VFIOMIG_OPTS(mig_stats, st);

	ret = vfiomig_sim_new(NULL, &sim);
	if (!ret)
		ret = vfiomig_sim_ctx_new(sim, NULL, &ctx);
	if (!ret)
		ret = vfiomig_sim_device_add(sim, &so, &sa);
	so.name = "0000:04:00.0";
	if (!ret)
		ret = vfiomig_sim_device_add(sim, &so, &sb);
	if (!ret)
		ret = vfiomig_device_open(ctx, "0000:03:00.0", NULL, &da);
	if (!ret)
		ret = vfiomig_device_open(ctx, "0000:04:00.0", NULL, &db);
	if (ret)
		goto out;

	printf("vfiomig demo: live migration of a simulated %s device with %.1f MiB of state\n",
	       v1 ? "v1 (region protocol)" : "v2 (data_fd protocol, PRE_COPY + P2P)",
	       (double)state / (1024.0 * 1024.0));
	printf("  source 0000:03:00.0 -> destination 0000:04:00.0, in-memory stream\n");
	/* The guest has been using the device: fill its state. */
	ret = vfiomig_sim_device_run(sa, state / 4096);
	if (!ret)
		ret = vfiomig_mig_new(da, VFIOMIG_ROLE_SAVE, &so_save, &src);
	if (!ret)
		ret = vfiomig_mig_new(db, VFIOMIG_ROLE_LOAD, &so_load, &dst);
	if (!ret)
		ret = vfiomig_stream_mem_new(ctx, &wire);
	if (!ret)
		ret = vfiomig_mig_save_setup(src, wire);
	if (!ret)
		ret = vfiomig_mig_load_setup(dst, wire);
	if (ret)
		goto out;

	for (uint64_t round = 1; precopy && round <= max_rounds; round++) {
		uint64_t before = vfiomig_stream_bytes_written(wire);

		/* The guest keeps running between rounds. */
		ret = vfiomig_sim_device_run(sa, dirty * 4);
		if (!ret)
			ret = vfiomig_mig_save_iterate(src, wire, 0);
		if (ret >= 0) {
			ret = vfiomig_mig_load(dst, wire);
			ret = ret == 1 ? 0 : (ret == 0 ? -EPROTO : ret);
		}
		if (!ret)
			ret = vfiomig_mig_save_pending(src, &pend);
		if (ret)
			goto out;
		printf("  pre-copy round %2llu: %10llu stream bytes; still dirty %8llu bytes, "
		       "initial data %s\n", (unsigned long long)round,
		       (unsigned long long)(vfiomig_stream_bytes_written(wire) - before),
		       (unsigned long long)pend.precopy_dirty,
		       vfiomig_mig_initial_data_sent(src) ? "sent" : "pending");
		if (vfiomig_mig_initial_data_sent(src) && pend.precopy_dirty <= 256 * 1024)
			break;
	}

	/* The guest writes right up to the moment it is paused: those pages go in stop-copy. */
	ret = vfiomig_sim_device_run(sa, dirty);
	if (ret)
		goto out;
	/* Stop the VM: the device goes to STOP_COPY, then the rest moves. */
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = vfiomig_mig_vm_state(src, VFIOMIG_VM_STOPPED);
	if (!ret)
		ret = vfiomig_mig_save_complete(src, wire);
	if (!ret) {
		ret = vfiomig_mig_load(dst, wire);
		ret = ret == 0 ? 0 : (ret > 0 ? -EPROTO : ret);
	}
	if (!ret)
		ret = vfiomig_mig_vm_state(dst, VFIOMIG_VM_RUNNING);
	if (ret)
		goto out;
	printf("  VM paused for %.2f ms (stop-and-copy, load, resume)\n", ms_since(&t0));

	a = vfiomig_sim_device_state(sa, &alen);
	b = vfiomig_sim_device_state(sb, &blen);
	if (alen != blen || memcmp(a, b, alen) != 0) {
		fprintf(stderr, "%s: demo: destination state differs from the source!\n", prog);
		goto out;
	}
	if (!config_ok) {
		fprintf(stderr, "%s: demo: the VMM config record did not arrive\n", prog);
		goto out;
	}
	ret = vfiomig_mig_get_stats(src, &st);
	if (ret)
		goto out;
	printf("result: destination state is bit-identical to the source (%zu bytes); "
	       "destination %s\n", alen,
	       vfiomig_device_state_name((uint32_t)vfiomig_sim_device_mig_state(sb)));
	printf("  %-26s %12llu\n", "pre-copy rounds", (unsigned long long)st.precopy_rounds);
	print_mib("pre-copy device bytes", st.precopy_bytes);
	print_mib("stop-copy device bytes", st.stopcopy_bytes);
	printf("  %-26s %12.3f ms\n", "stop-copy time (source)", (double)st.stopcopy_ns / 1e6);
	print_mib("stream bytes", st.bytes);
	rc = 0;
out:
	if (ret)
		fprintf(stderr, "%s: demo failed: %s\n", prog, vfiomig_strerror(ret));
	vfiomig_mig_free(src);
	vfiomig_mig_free(dst);
	vfiomig_stream_free(wire);
	vfiomig_device_close(da);
	vfiomig_device_close(db);
	vfiomig_ctx_unref(ctx);
	vfiomig_sim_free(sim);
	return rc;
}

static int cmd_save_load(bool save, int argc, char **argv)
{
	const char *spec = NULL, *file = NULL;
	uint32_t flags = 0;
	uint64_t rounds = 8;
	struct vfiomig_stream *s = NULL;
	struct vfiomig_mig *m = NULL;
	struct target t;
	int fd, ret;

	for (int i = 0; i < argc; i++) {
		if ((strcmp(argv[i], "-o") == 0 && save) || (strcmp(argv[i], "-i") == 0 && !save)) {
			if (i + 1 >= argc) {
				usage(stderr);
				return 2;
			}
			file = argv[++i];
		} else if (strcmp(argv[i], "--allow-v1") == 0) {
			flags |= VFIOMIG_MIG_F_ALLOW_V1;
		} else if (save && strcmp(argv[i], "--no-precopy") == 0) {
			flags |= VFIOMIG_MIG_F_NO_PRECOPY;
		} else if (save && strcmp(argv[i], "--rounds") == 0 && i + 1 < argc) {
			if (parse_size(argv[++i], &rounds)) {
				usage(stderr);
				return 2;
			}
		} else if (!spec && argv[i][0] != '-') {
			spec = argv[i];
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (!spec || !file) {
		usage(stderr);
		return 2;
	}
	fd = save ? open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) :
		    open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
		return 1;
	}
	if (target_open(spec, &t)) {
		close(fd);
		return 1;
	}
	VFIOMIG_OPTS(mig_opts, mo, .flags = flags);
	ret = vfiomig_stream_fd_new(t.ctx, fd, VFIOMIG_STREAM_FD_TAKE, &s);
	if (!ret)
		ret = vfiomig_mig_new(t.dev, save ? VFIOMIG_ROLE_SAVE : VFIOMIG_ROLE_LOAD, &mo, &m);
	if (ret)
		goto out;
	if (save) {
		ret = vfiomig_mig_save_setup(m, s);
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
	} else {
		ret = vfiomig_mig_load_setup(m, s);
		while (!ret) {
			ret = vfiomig_mig_load(m, s);
			if (ret == 0)
				break;
			ret = ret > 0 ? 0 : ret;
		}
		if (!ret)
			ret = vfiomig_mig_vm_state(m, VFIOMIG_VM_RUNNING);
	}
	if (!ret) {
		VFIOMIG_OPTS(mig_stats, st);

		vfiomig_mig_get_stats(m, &st);
		printf("%s %s: %s, %llu stream bytes, %llu device bytes (%llu pre-copy rounds); "
		       "device now %s\n", save ? "saved" : "loaded", vfiomig_device_name(t.dev),
		       st.protocol == VFIOMIG_PROTO_V1 ? "v1" : "v2",
		       (unsigned long long)st.bytes, (unsigned long long)st.device_bytes,
		       (unsigned long long)st.precopy_rounds, vfiomig_device_state_name(st.device_state));
	}
out:
	if (ret)
		fprintf(stderr, "%s: %s %s: %s\n", prog, save ? "save" : "load", spec,
			vfiomig_strerror(ret));
	vfiomig_mig_free(m);
	vfiomig_stream_free(s);
	target_close(&t);
	return ret ? 1 : 0;
}

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
	bool verbose;
	bool json;
	uint64_t records;
};

static int inspect_record(void *user, const struct vfiomig_record *rec)
{
	struct inspect_ctx *ic = user;

	ic->records++;
	if (ic->verbose && !ic->json)
		printf("  @%-10llu %-16s %-9s marker 0x%016llx size %llu\n",
		       (unsigned long long)rec->offset, rec_name(rec->type), phase_name(rec->phase),
		       (unsigned long long)rec->marker, (unsigned long long)rec->size);
	return 0;
}

static int cmd_inspect(int argc, char **argv)
{
	VFIOMIG_OPTS(stream_info, si);
	struct inspect_ctx ic = { 0 };
	struct vfiomig_ctx *ctx = NULL;
	struct vfiomig_stream *s = NULL;
	const char *file = NULL;
	int fd, ret;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			ic.json = true;
		else if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--records") == 0)
			ic.verbose = true;
		else if (!file && argv[i][0] != '-')
			file = argv[i];
		else {
			usage(stderr);
			return 2;
		}
	}
	if (!file) {
		usage(stderr);
		return 2;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "%s: %s: %s\n", prog, file, strerror(errno));
		return 1;
	}
	ret = vfiomig_ctx_new(NULL, &ctx);
	if (!ret)
		ret = vfiomig_stream_fd_new(ctx, fd, VFIOMIG_STREAM_FD_TAKE, &s);
	else
		close(fd);
	if (ret)
		goto out;
	if (ic.verbose && !ic.json)
		printf("records of %s:\n", file);
	ret = vfiomig_stream_inspect(s, 0, &si, inspect_record, &ic);
	if (ic.json) {
		printf("{\n  \"file\": ");
		json_str(file);
		printf(",\n  \"valid\": %s,\n  \"error\": ", ret ? "false" : "true");
		json_str(ret ? vfiomig_strerror(ret) : "");
		printf(",\n  \"format_version\": %u,\n  \"protocol\": %u,\n  \"flags\": %u,\n"
		       "  \"kind\": \"%s\",\n  \"vendor\": %u,\n  \"device\": %u,\n"
		       "  \"subvendor\": %u,\n  \"subdevice\": %u,\n  \"class_code\": %u,\n"
		       "  \"mdev_type\": ", si.version, si.protocol, si.flags,
		       si.kind == 2 ? "mdev" : "pci", si.vendor, si.device, si.subvendor,
		       si.subdevice, si.class_code);
		json_str(si.mdev_type);
		printf(",\n  \"driver\": ");
		json_str(si.driver);
		printf(",\n  \"bytes\": %llu,\n  \"records\": %llu,\n  \"data_records\": %llu,\n"
		       "  \"data_bytes\": %llu,\n  \"precopy_rounds\": %llu,\n"
		       "  \"precopy_bytes\": %llu,\n  \"stopcopy_bytes\": %llu,\n"
		       "  \"config_bytes\": %llu,\n  \"init_data_sent\": %s\n}\n",
		       (unsigned long long)si.bytes, (unsigned long long)ic.records,
		       (unsigned long long)si.data_records, (unsigned long long)si.data_bytes,
		       (unsigned long long)si.precopy_rounds, (unsigned long long)si.precopy_bytes,
		       (unsigned long long)si.stopcopy_bytes, (unsigned long long)si.config_bytes,
		       si.init_data_sent ? "true" : "false");
	} else {
		printf("%s: libvfiomig stream, format version %u, protocol v%u\n", file, si.version,
		       si.protocol);
		printf("  device      %s %04x:%04x subsystem %04x:%04x class %06x%s%s%s%s\n",
		       si.kind == 2 ? "mdev" : "PCI", si.vendor, si.device, si.subvendor,
		       si.subdevice, si.class_code, si.mdev_type[0] ? " type " : "", si.mdev_type,
		       si.driver[0] ? " driver " : "", si.driver);
		printf("  records     %llu (%llu data records, %llu data bytes)\n",
		       (unsigned long long)ic.records, (unsigned long long)si.data_records,
		       (unsigned long long)si.data_bytes);
		printf("  pre-copy    %llu rounds, %llu bytes; initial data %s\n",
		       (unsigned long long)si.precopy_rounds, (unsigned long long)si.precopy_bytes,
		       si.init_data_sent ? "marked sent" : "not marked");
		printf("  stop-copy   %llu bytes; VMM config %s (%llu bytes)\n",
		       (unsigned long long)si.stopcopy_bytes, si.has_config ? "present" : "absent",
		       (unsigned long long)si.config_bytes);
		printf("  integrity   %s (%llu bytes read)\n",
		       ret ? "FAILED" : "trailer counts and CRC32C verified",
		       (unsigned long long)si.bytes);
	}
out:
	if (ret)
		fprintf(stderr, "%s: inspect %s: %s\n", prog, file, vfiomig_strerror(ret));
	vfiomig_stream_free(s);
	vfiomig_ctx_unref(ctx);
	return ret ? 1 : 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(stdout);
		return 0;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("vfiomig %s\n", vfiomig_version());
		return 0;
	}
	if (strcmp(argv[1], "probe") == 0)
		return cmd_probe(argc - 2, argv + 2);
	if (strcmp(argv[1], "inspect") == 0)
		return cmd_inspect(argc - 2, argv + 2);
	if (strcmp(argv[1], "demo") == 0)
		return cmd_demo(argc - 2, argv + 2);
	if (strcmp(argv[1], "save") == 0)
		return cmd_save_load(true, argc - 2, argv + 2);
	if (strcmp(argv[1], "load") == 0)
		return cmd_save_load(false, argc - 2, argv + 2);
	fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
	usage(stderr);
	return 2;
}
