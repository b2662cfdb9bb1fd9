/* SPDX-License-Identifier: MIT */
/*
 * Migration support discovery: which kernel protocols a device offers
 * (the v2 MIGRATION feature, the v1 migration region) and why not, for
 * vfiomig_device_migration_info(). It sits above the device and region
 * layers, which it uses, and below the state machine, which uses it.
 */
#include "internal.h"

#include <stdio.h>

int vfiomig_device_migration_info(struct vfiomig_device *dev, struct vfiomig_migration_info *info)
{
	VM_API(dev ? dev->ctx : NULL);
	struct vfiomig_migration_info out = { .sz = sizeof(out), .v1_region = -1 };
	struct vu_feature_migration mig = { 0 };
	struct vfiomig_region_info ri = { .sz = sizeof(ri) };
	const struct vu_device_info *di;
	int ret, v2err;

	if (!dev)
		return -EINVAL;
	if (!info)
		return vm_arg_err(dev->ctx, __func__);
	if (info->sz < sizeof(size_t))
		return vm_err(dev->ctx, -EINVAL, "device %s: vfiomig_migration_info.sz not set",
			      dev->name);
	ret = vm_device_info(dev, &di);
	if (ret)
		return ret;

	v2err = vm_device_feature(dev, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &mig,
				  sizeof(mig));
	if (v2err >= 0) {
		out.protocols |= VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V2);
		out.v2_flags = mig.flags;
	} else if (v2err != -ENOTTY && v2err != -EINVAL && v2err != -EOPNOTSUPP) {
		return vm_err(dev->ctx, v2err, "device %s: VFIO_DEVICE_FEATURE(GET MIGRATION)",
			      dev->name);
	}

	ret = vfiomig_region_find(dev, VFIOMIG_REGION_TYPE_MIGRATION_V1,
				  VFIOMIG_REGION_SUBTYPE_MIGRATION_V1, &ri);
	if (ret == 0) {
		out.protocols |= VFIOMIG_PROTO_BIT(VFIOMIG_PROTO_V1);
		out.v1_region = (int32_t)ri.index;
	} else if (ret != -ENOENT) {
		return ret;
	}

	if (!out.protocols)
		snprintf(out.reason, sizeof(out.reason),
			 "device %s does not support migration (VFIO_DEVICE_FEATURE_MIGRATION: %s; "
			 "no v1 migration region)", dev->name, vfiomig_strerror(v2err));
	vm_out_copy(info, &out, sizeof(out));
	return 0;
}
