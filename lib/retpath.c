/* SPDX-License-Identifier: MIT */
/*
 * The return path: the few messages a destination sends back to its
 * source over a channel the VMMs carry (switchover-ack, "loaded and
 * verified", "failed, and why"), their byte layout (docs/stream-format.md,
 * "Return path") and what each one does to the source's migration.
 */
#include "mig.h"
#include "bytes.h"
#include "crc32c.h"

#include <inttypes.h>
#include <stdio.h>

static int rp_send(struct vfiomig_mig *m, struct vfiomig_stream *rp, const struct vm_rp_msg *msg)
{
	unsigned char buf[VM_RP_MAX];
	int ret = vfiomig_stream_write(rp, buf, vm_rp_encode(msg, buf));

	if (ret)
		return vm_err(m->ctx, ret, "device %s: writing a return-path message",
			      m->dev->name);
	return 0;
}

static int send_ack(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	struct vm_rp_msg msg = { .type = VFIOMIG_RETURN_SWITCHOVER_ACK, .bytes = m->r.offset };

	return rp_send(m, rp, &msg);
}

static int send_loaded(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	struct vm_rp_msg msg = {
		.type = VFIOMIG_RETURN_LOADED, .bytes = m->r.offset, .records = m->r.data_records,
		.data_bytes = m->r.data_bytes, .crc = m->r.crc,
	};

	return rp_send(m, rp, &msg);
}

static int send_failed(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	struct vm_rp_msg msg = {
		.type = VFIOMIG_RETURN_FAILED, .bytes = m->r.offset, .error = m->fail_err,
	};

	memcpy(msg.reason, m->fail_reason, sizeof(msg.reason));
	return rp_send(m, rp, &msg);
}

int vfiomig_mig_return_send(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	VM_API(m ? m->ctx : NULL);
	int sent = 0, ret;

	if (!m)
		return -EINVAL;
	if (!rp)
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_LOAD)
		return vm_err(m->ctx, -EINVAL, "device %s: the return path is written by the "
			      "destination, this is a save", m->dev->name);
	if (m->failed) {
		if (m->result_sent)
			return 0;
		ret = send_failed(m, rp);
		if (ret)
			return ret;
		m->result_sent = true;
		sent++;
	} else {
		if (m->init_sent && !m->ack_sent) {
			ret = send_ack(m, rp);
			if (ret)
				return ret;
			m->ack_sent = true;
			sent++;
		}
		if (m->complete && !m->result_sent) {
			ret = send_loaded(m, rp);
			if (ret)
				return ret;
			m->result_sent = true;
			sent++;
		}
	}
	if (sent) {
		ret = vfiomig_stream_flush(rp);
		if (ret)
			return ret;
	}
	return sent;
}

/* Read one message (header and body into hdr, b); 0, -ENODATA at a clean end, or -errno. */
static int rp_read(struct vfiomig_mig *m, struct vfiomig_stream *rp, unsigned char *hdr,
		   unsigned char *b, uint32_t *len)
{
	unsigned char crcb[VM_RP_CRC];
	uint64_t marker;
	uint32_t crc;
	int ret;

	ret = vfiomig_stream_read(rp, hdr, VM_RP_HDR);
	if (ret == -ENODATA)
		return ret;
	if (ret)
		return vm_err(m->ctx, ret, "device %s: reading the return path", m->dev->name);
	marker = get_be64(hdr);
	*len = get_be32(hdr + 8);
	if ((marker & VM_RP_MARKER_MASK) != VM_RP_MARKER_BASE)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: 0x%016" PRIx64 " is not a "
			      "return-path message (the channel is out of step)", m->dev->name,
			      marker);
	if (*len > VM_RP_BODY_MAX)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: a message of %u bytes (at "
			      "most %u)", m->dev->name, *len, VM_RP_BODY_MAX);
	ret = vfiomig_stream_read(rp, b, *len);
	if (!ret)
		ret = vfiomig_stream_read(rp, crcb, sizeof(crcb));
	if (ret)
		return vm_err(m->ctx, ret == -ENODATA ? -EPIPE : ret,
			      "device %s: return path: a truncated message", m->dev->name);
	crc = vm_crc32c(vm_crc32c(0, hdr, VM_RP_HDR), b, *len);
	if (crc != get_be32(crcb))
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: message CRC32C is 0x%08x, "
			      "computed 0x%08x: corrupt message", m->dev->name, get_be32(crcb), crc);
	return 0;
}

/* LOADED: the destination verified the stream we wrote, and nothing else. */
static int apply_loaded(struct vfiomig_mig *m, const struct vm_rp_msg *msg)
{
	if (!m->complete && !m->resumed)
		return vm_err(m->ctx, -EPROTO, "device %s: return path: the destination says it "
			      "loaded the stream before this save completed", m->dev->name);
	if (msg->bytes != m->w.offset || msg->records != m->w.data_records ||
	    msg->data_bytes != m->w.data_bytes || msg->crc != m->w.crc)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: the destination loaded "
			      "%" PRIu64 " bytes (%" PRIu64 " data records, CRC32C 0x%08x); this "
			      "save wrote %" PRIu64 " (%" PRIu64 ", 0x%08x): not this stream",
			      m->dev->name, msg->bytes, msg->records, msg->crc, m->w.offset,
			      m->w.data_records, m->w.crc);
	m->dest_loaded = true;
	vm_info(m->ctx, "device %s: the destination loaded and verified the stream", m->dev->name);
	return 0;
}

/* FAILED: the destination gave up; the source goes on (its device is put back now or later). */
static void apply_failed(struct vfiomig_mig *m, const struct vm_rp_msg *msg)
{
	char why[300];

	m->dest_failed = true;
	vm_mig_peer_failed(m, msg->error, msg->reason);
	vm_warn(m->ctx, "device %s: the destination failed (%s)%s%s", m->dev->name,
		vfiomig_strerror(msg->error), msg->reason[0] ? ": " : "", msg->reason);
	snprintf(why, sizeof(why), "the destination failed: %s", msg->reason);
	if (m->setup_done && !m->complete && !m->failed)
		vm_mig_fail(m, msg->error, why);
	else if (!m->failed)
		vm_mig_note_failure(m, msg->error, why);
}

int vfiomig_mig_return_recv(struct vfiomig_mig *m, struct vfiomig_stream *rp,
			    struct vfiomig_return_msg *msg)
{
	VM_API(m ? m->ctx : NULL);
	struct vfiomig_return_msg out = { .sz = sizeof(out) };
	unsigned char hdr[VM_RP_HDR], b[VM_RP_BODY_MAX];
	struct vm_rp_msg in;
	uint32_t len = 0;
	int ret;

	if (!m)
		return -EINVAL;
	if (!rp || !msg || msg->sz < sizeof(size_t))
		return vm_arg_err(m->ctx, __func__);
	if (m->role != VFIOMIG_ROLE_SAVE)
		return vm_err(m->ctx, -EINVAL, "device %s: the return path is read by the source, "
			      "this is a load", m->dev->name);
	for (;;) {
		ret = rp_read(m, rp, hdr, b, &len);
		if (ret)
			return ret;
		ret = vm_rp_decode(hdr, b, len, &in);
		if (ret < 0)
			return vm_err(m->ctx, ret, "device %s: return path: a malformed message "
				      "(type %u, %u bytes)", m->dev->name, in.type, len);
		if (ret == 0)
			break;
		/* From a newer destination: its sender knows we may skip it. */
		vm_dbg(m->ctx, "device %s: return path: message type %u skipped", m->dev->name,
		       in.type);
	}
	switch (in.type) {
	case VFIOMIG_RETURN_SWITCHOVER_ACK:
		m->acked = true;
		vm_dbg(m->ctx, "device %s: switchover acknowledged", m->dev->name);
		break;
	case VFIOMIG_RETURN_LOADED:
		ret = apply_loaded(m, &in);
		if (ret)
			return ret;
		break;
	default:
		apply_failed(m, &in);
		break;
	}
	out.type = in.type;
	out.bytes = in.bytes;
	out.error = in.error;
	memcpy(out.reason, in.reason, sizeof(out.reason));
	vm_out_copy(msg, &out, sizeof(out));
	return 0;
}
