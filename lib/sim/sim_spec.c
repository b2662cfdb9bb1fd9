/* SPDX-License-Identifier: MIT */
/*
 * Device spec strings, the syntax tools accept to describe a simulated
 * device on a command line: "sim:pci,name=0000:05:00.0,bar0=1M,sparse=0"
 * or "sim:mdev,...". dmalog=1 gives the device DMA logging
 * (VFIOMIG_SIM_DEV_DMA_LOGGING), cost=copy a data path that costs only
 * the copy (VFIOMIG_SIM_MIG_COST_COPY). Parsed strictly: unknown or repeated keys, bad
 * numbers and a missing "sim:" prefix are refused, the reason logged
 * through the caller's ctx (vfiomig_ctx_log) and kept for
 * sim_last_error().
 */
#include "sim_internal.h"

#include <stdio.h>

#define SPEC_MAX 1024

/* Decimal or 0x-hex, no sign or blanks; with `suffix`, an optional K, M or G (binary). */
static bool spec_number(const char *s, uint64_t max, bool suffix, uint64_t *out)
{
	unsigned int base = 10, shift = 0;
	uint64_t v = 0;
	bool digits = false;

	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	for (; *s; s++) {
		unsigned int d;

		if (*s >= '0' && *s <= '9')
			d = (unsigned int)(*s - '0');
		else if (base == 16 && *s >= 'a' && *s <= 'f')
			d = (unsigned int)(*s - 'a' + 10);
		else if (base == 16 && *s >= 'A' && *s <= 'F')
			d = (unsigned int)(*s - 'A' + 10);
		else
			break;
		if (__builtin_mul_overflow(v, base, &v) || __builtin_add_overflow(v, d, &v))
			return false;
		digits = true;
	}
	if (!digits)
		return false;
	if (suffix && *s) {
		switch (*s) {
		case 'K': case 'k': shift = 10; break;
		case 'M': case 'm': shift = 20; break;
		case 'G': case 'g': shift = 30; break;
		default: return false;
		}
		s++;
		if (v > (UINT64_MAX >> shift))
			return false;
		v <<= shift;
	}
	if (*s || v > max)
		return false;
	*out = v;
	return true;
}

static bool spec_bool(const char *s, bool *out)
{
	if (strcmp(s, "0") == 0 || strcmp(s, "1") == 0) {
		*out = s[0] == '1';
		return true;
	}
	return false;
}

/* mig=...: the migration flags each value stands for. */
static bool spec_mig(const char *s, uint32_t *out)
{
	static const struct {
		const char *name;
		uint32_t flags;
	} kinds[] = {
		{ "none", 0 },
		{ "v1", VFIOMIG_SIM_MIG_V1 },
		{ "v1-trapped", VFIOMIG_SIM_MIG_V1 | VFIOMIG_SIM_MIG_V1_TRAPPED },
		{ "v2", VFIOMIG_SIM_MIG_V2 },
		{ "v2-p2p", VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P },
		{ "v2-precopy", VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_PRE_COPY },
		{ "v2-p2p-precopy",
		  VFIOMIG_SIM_MIG_V2 | VFIOMIG_SIM_MIG_P2P | VFIOMIG_SIM_MIG_PRE_COPY },
	};

	for (size_t i = 0; i < VM_ARRAY_SIZE(kinds); i++) {
		if (strcmp(s, kinds[i].name) == 0) {
			*out = kinds[i].flags;
			return true;
		}
	}
	return false;
}

/* With the simulator lock held. */
static int spec_add(struct vfiomig_sim *sim, const char *spec, struct vfiomig_sim_device **out)
{
	static const char *const keys[] = { "name", "vendor", "device", "subvendor", "subdevice",
					     "bar0", "sparse", "msix_mappable", "mig", "state",
					     "dirty", "v1data", "dmalog", "cost" };
	VFIOMIG_OPTS(sim_device_opts, o);
	char buf[SPEC_MAX];
	unsigned int seen = 0;
	bool copy_cost = false;
	char *kind, *p;

	if (!spec) {
		sim_set_error(sim, "device spec: NULL");
		return -EINVAL;
	}
	if (strnlen(spec, SPEC_MAX) == SPEC_MAX) {
		sim_set_error(sim, "device spec: longer than %d characters", SPEC_MAX - 1);
		return -EINVAL;
	}
	if (strncmp(spec, "sim:", 4) != 0) {
		sim_set_error(sim, "device spec \"%.200s\": does not start with \"sim:\"", spec);
		return -EINVAL;
	}
	snprintf(buf, sizeof(buf), "%s", spec + 4);

	kind = buf;
	p = strchr(buf, ',');
	if (p)
		*p++ = '\0';
	if (strcmp(kind, "pci") == 0) {
		o.kind = VFIOMIG_DEVKIND_PCI;
	} else if (strcmp(kind, "mdev") == 0) {
		o.kind = VFIOMIG_DEVKIND_MDEV;
	} else {
		sim_set_error(sim, "device spec \"%.200s\": kind \"%.32s\" is not pci or mdev",
			      spec, kind);
		return -EINVAL;
	}

	while (p) {
		char *key = p, *val, *next = strchr(p, ',');
		unsigned int k;
		uint64_t v = 0;
		bool b = false, ok;

		if (next)
			*next++ = '\0';
		p = next;
		val = strchr(key, '=');
		if (!val || val == key || !val[1]) {
			sim_set_error(sim, "device spec \"%.200s\": \"%.64s\" is not key=value",
				      spec, key);
			return -EINVAL;
		}
		*val++ = '\0';
		for (k = 0; k < VM_ARRAY_SIZE(keys); k++)
			if (strcmp(key, keys[k]) == 0)
				break;
		if (k == VM_ARRAY_SIZE(keys)) {
			sim_set_error(sim, "device spec \"%.200s\": unknown key \"%.64s\"", spec,
				      key);
			return -EINVAL;
		}
		if (seen & (1u << k)) {
			sim_set_error(sim, "device spec \"%.200s\": key \"%s\" given twice", spec,
				      key);
			return -EINVAL;
		}
		seen |= 1u << k;

		switch (k) {
		case 0:
			o.name = val;
			ok = true;
			break;
		case 1: case 2: case 3: case 4:
			ok = spec_number(val, 0xffff, false, &v);
			if (k == 1)
				o.vendor_id = (uint16_t)v;
			else if (k == 2)
				o.device_id = (uint16_t)v;
			else if (k == 3)
				o.subsystem_vendor_id = (uint16_t)v;
			else
				o.subsystem_device_id = (uint16_t)v;
			break;
		case 5:
			ok = spec_number(val, UINT64_MAX, true, &o.bar0_size);
			break;
		case 6:
			ok = spec_bool(val, &b);
			if (!b)
				o.flags |= VFIOMIG_SIM_DEV_NO_SPARSE;
			break;
		case 7:
			ok = spec_bool(val, &b);
			if (b)
				o.flags |= VFIOMIG_SIM_DEV_MSIX_MAPPABLE;
			break;
		case 8:
			ok = spec_mig(val, &o.migration);
			break;
		case 9:
			ok = spec_number(val, UINT64_MAX, true, &o.state_size);
			break;
		case 10:
			ok = spec_number(val, UINT32_MAX, false, &v);
			o.auto_dirty_pages = (uint32_t)v;
			break;
		case 11:
			ok = spec_number(val, UINT64_MAX, true, &o.v1_data_size);
			break;
		case 12:
			ok = spec_bool(val, &b);
			if (b)
				o.flags |= VFIOMIG_SIM_DEV_DMA_LOGGING;
			break;
		default:
			ok = strcmp(val, "check") == 0 || strcmp(val, "copy") == 0;
			copy_cost = strcmp(val, "copy") == 0;
			break;
		}
		if (!ok) {
			sim_set_error(sim, "device spec \"%.200s\": bad value \"%.64s\" for %s",
				      spec, val, key);
			return -EINVAL;
		}
	}
	/* After the loop: mig= sets the migration flags whole, in any order. */
	if (copy_cost)
		o.migration |= VFIOMIG_SIM_MIG_COST_COPY;
	return sim_device_add_locked(sim, &o, out);
}

int vfiomig_sim_device_add_spec(struct vfiomig_sim *sim, struct vfiomig_ctx *ctx,
				const char *spec, struct vfiomig_sim_device **out)
{
	char msg[sizeof(sim->last_error) + 64];
	int ret;

	if (!sim || !out)
		return -EINVAL;
	*out = NULL;
	sim_lock(sim);
	sim->last_error[0] = '\0';
	ret = spec_add(sim, spec, out);
	if (ret && sim->last_error[0])
		snprintf(msg, sizeof(msg), "simulator: %s", sim->last_error);
	else if (ret)
		snprintf(msg, sizeof(msg), "simulator: device spec: %s", strerror(-ret));
	sim_unlock(sim);
	/* The caller's log function runs outside the simulator lock. */
	if (ret && ctx)
		vfiomig_ctx_log(ctx, VFIOMIG_LOG_ERR, msg);
	return ret;
}
