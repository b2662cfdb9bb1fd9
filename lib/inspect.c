/* SPDX-License-Identifier: MIT */
/*
 * Stream inspection: walk and verify a saved stream without a device, for
 * `vfiomig inspect` and for management layers that want to know what a
 * state file holds before they commit a destination to it.
 */
#include "internal.h"
#include "format.h"

#include <stdio.h>

static uint32_t rec_type(enum vm_fmt_rec_type t)
{
	switch (t) {
	case VM_FMT_REC_PHASE: return VFIOMIG_REC_PHASE;
	case VM_FMT_REC_END: return VFIOMIG_REC_END;
	case VM_FMT_REC_DATA: return VFIOMIG_REC_DATA;
	case VM_FMT_REC_CONFIG: return VFIOMIG_REC_CONFIG;
	case VM_FMT_REC_INIT_DATA_SENT: return VFIOMIG_REC_INIT_DATA_SENT;
	case VM_FMT_REC_OPTIONAL: return VFIOMIG_REC_OPTIONAL;
	case VM_FMT_REC_TRAILER: return VFIOMIG_REC_TRAILER;
	case VM_FMT_REC_CANCEL: return VFIOMIG_REC_CANCEL;
	}
	return 0;
}

int vfiomig_stream_inspect(struct vfiomig_stream *in, uint64_t max_record,
			   struct vfiomig_stream_info *info, vfiomig_record_fn fn, void *user)
{
	VM_API(vm_stream_ctx(in));
	struct vfiomig_stream_info out = { .sz = sizeof(out) };
	struct vm_fmt_reader r;
	struct vm_fmt_header h;
	struct vm_fmt_record rec;
	int ret;

	if (!in)
		return -EINVAL;
	if ((info && info->sz < sizeof(size_t)))
		return vm_arg_err(vm_stream_ctx(in), __func__);
	vm_fmt_reader_init(&r, in);
	if (max_record)
		r.max_record = max_record;
	ret = vm_fmt_read_header(&r, &h);
	if (ret)
		goto done;
	out.version = h.version;
	out.protocol = h.protocol;
	out.flags = h.flags;
	out.kind = h.id.kind;
	out.vendor = h.id.vendor;
	out.device = h.id.device;
	out.subvendor = h.id.subvendor;
	out.subdevice = h.id.subdevice;
	out.class_code = h.id.class_code;
	memcpy(out.mdev_type, h.id.mdev_type, sizeof(out.mdev_type));
	memcpy(out.driver, h.id.driver, sizeof(out.driver));

	do {
		struct vfiomig_record pub = { .sz = sizeof(pub) };

		ret = vm_fmt_next(&r, &rec);
		if (ret)
			break;
		pub.type = rec_type(rec.type);
		pub.phase = rec.phase;
		pub.marker = rec.marker;
		pub.size = rec.size;
		pub.offset = rec.offset;
		switch (rec.type) {
		case VM_FMT_REC_DATA:
			if (rec.phase == VM_FMT_PHASE_STOPCOPY)
				out.stopcopy_bytes += rec.size;
			else
				out.precopy_bytes += rec.size;
			break;
		case VM_FMT_REC_CONFIG:
			out.has_config = 1;
			out.config_bytes = rec.size;
			break;
		case VM_FMT_REC_INIT_DATA_SENT:
			out.init_data_sent = 1;
			break;
		case VM_FMT_REC_END:
			if (rec.phase == VM_FMT_PHASE_PRECOPY)
				out.precopy_rounds++;
			break;
		case VM_FMT_REC_CANCEL:
			out.cancelled = 1;
			out.cancel_error = r.cancel_err;
			snprintf(out.cancel_reason, sizeof(out.cancel_reason), "%s",
				 r.cancel_reason);
			break;
		default:
			break;
		}
		if (fn) {
			ret = fn(user, &pub);
			if (ret)
				break;
		}
	} while (rec.type != VM_FMT_REC_TRAILER && rec.type != VM_FMT_REC_CANCEL);
	if (!ret && out.cancelled)
		ret = vm_err(vm_stream_ctx(in), -ECANCELED, "%s: the source cancelled the migration "
			     "(%s)%s%s", vm_stream_desc(in), vfiomig_strerror(r.cancel_err),
			     r.cancel_reason[0] ? ": " : "", r.cancel_reason);
done:
	out.bytes = r.offset;
	out.data_records = r.data_records;
	out.data_bytes = r.data_bytes;
	if (info)
		vm_out_copy(info, &out, sizeof(out));
	return ret;
}
