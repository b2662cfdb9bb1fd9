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

/* Message markers: the top bits are the stream format's, in a range of their own. */
#define RP_MARKER_BASE  0xffffffffef120000ull
#define RP_MARKER_MASK  0xffffffffffff0000ull
#define RP_ACK          (RP_MARKER_BASE | VFIOMIG_RETURN_SWITCHOVER_ACK)
#define RP_LOADED       (RP_MARKER_BASE | VFIOMIG_RETURN_LOADED)
#define RP_FAILED       (RP_MARKER_BASE | VFIOMIG_RETURN_FAILED)

/* {be64 marker, be32 body length, body, be32 CRC32C of everything before it}. */
#define RP_HDR          12u
#define RP_CRC          4u
#define RP_BODY_MAX     4096u
#define RP_ERRNO_MAX    4095u
#define RP_REASON_MAX   255u

/* Bodies (version 1); readers accept longer ones and ignore what follows. */
#define RP_ACK_LEN      8u                 /* be64 stream bytes loaded */
#define RP_LOADED_LEN   (8u + 8u + 8u + 4u) /* bytes, data records, data bytes, stream CRC */
#define RP_FAILED_MIN   (8u + 4u + 2u)     /* bytes, errno, reason length (+ reason) */

static int rp_write(struct vfiomig_mig *m, struct vfiomig_stream *rp, uint64_t marker,
		    const unsigned char *body, size_t len)
{
	unsigned char msg[RP_HDR + RP_BODY_MAX + RP_CRC];
	int ret;

	put_be64(msg, marker);
	put_be32(msg + 8, (uint32_t)len);
	memcpy(msg + RP_HDR, body, len);
	put_be32(msg + RP_HDR + len, vm_crc32c(0, msg, RP_HDR + len));
	ret = vfiomig_stream_write(rp, msg, RP_HDR + len + RP_CRC);
	if (ret)
		return vm_err(m->ctx, ret, "device %s: writing a return-path message",
			      m->dev->name);
	return 0;
}

static int send_ack(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	unsigned char b[RP_ACK_LEN];

	put_be64(b, m->r.offset);
	return rp_write(m, rp, RP_ACK, b, sizeof(b));
}

static int send_loaded(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	unsigned char b[RP_LOADED_LEN];

	put_be64(b, m->r.offset);
	put_be64(b + 8, m->r.data_records);
	put_be64(b + 16, m->r.data_bytes);
	put_be32(b + 24, m->r.crc);
	return rp_write(m, rp, RP_LOADED, b, sizeof(b));
}

static int send_failed(struct vfiomig_mig *m, struct vfiomig_stream *rp)
{
	unsigned char b[RP_FAILED_MIN + RP_REASON_MAX];
	size_t rlen = 0;

	while (rlen < RP_REASON_MAX && m->fail_reason[rlen] &&
	       vm_printable((const unsigned char *)m->fail_reason + rlen, 1))
		rlen++;
	put_be64(b, m->r.offset);
	put_be32(b + 8, (uint32_t)-m->fail_err);
	put_be16(b + 12, (uint16_t)rlen);
	memcpy(b + RP_FAILED_MIN, m->fail_reason, rlen);
	return rp_write(m, rp, RP_FAILED, b, RP_FAILED_MIN + rlen);
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

/* Read one message (body into b, at most RP_BODY_MAX); 0, -ENODATA at a clean end, or -errno. */
static int rp_read(struct vfiomig_mig *m, struct vfiomig_stream *rp, uint64_t *marker,
		   unsigned char *b, uint32_t *len)
{
	unsigned char hdr[RP_HDR], crcb[RP_CRC];
	uint32_t crc;
	int ret;

	ret = vfiomig_stream_read(rp, hdr, sizeof(hdr));
	if (ret == -ENODATA)
		return ret;
	if (ret)
		return vm_err(m->ctx, ret, "device %s: reading the return path", m->dev->name);
	*marker = get_be64(hdr);
	*len = get_be32(hdr + 8);
	if ((*marker & RP_MARKER_MASK) != RP_MARKER_BASE)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: 0x%016" PRIx64 " is not a "
			      "return-path message (the channel is out of step)", m->dev->name,
			      *marker);
	if (*len > RP_BODY_MAX)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: a message of %u bytes (at "
			      "most %u)", m->dev->name, *len, RP_BODY_MAX);
	ret = vfiomig_stream_read(rp, b, *len);
	if (!ret)
		ret = vfiomig_stream_read(rp, crcb, sizeof(crcb));
	if (ret)
		return vm_err(m->ctx, ret == -ENODATA ? -EPIPE : ret,
			      "device %s: return path: a truncated message", m->dev->name);
	crc = vm_crc32c(vm_crc32c(0, hdr, sizeof(hdr)), b, *len);
	if (crc != get_be32(crcb))
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: message CRC32C is 0x%08x, "
			      "computed 0x%08x: corrupt message", m->dev->name, get_be32(crcb), crc);
	return 0;
}

/* LOADED: the destination verified the stream we wrote, and nothing else. */
static int apply_loaded(struct vfiomig_mig *m, const unsigned char *b, uint32_t len,
			struct vfiomig_return_msg *out)
{
	uint64_t bytes, records, data;
	uint32_t crc;

	if (len < RP_LOADED_LEN)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: LOADED of %u bytes",
			      m->dev->name, len);
	bytes = get_be64(b);
	records = get_be64(b + 8);
	data = get_be64(b + 16);
	crc = get_be32(b + 24);
	out->bytes = bytes;
	if (!m->complete && !m->resumed)
		return vm_err(m->ctx, -EPROTO, "device %s: return path: the destination says it "
			      "loaded the stream before this save completed", m->dev->name);
	if (bytes != m->w.offset || records != m->w.data_records || data != m->w.data_bytes ||
	    crc != m->w.crc)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: the destination loaded "
			      "%" PRIu64 " bytes (%" PRIu64 " data records, CRC32C 0x%08x); this "
			      "save wrote %" PRIu64 " (%" PRIu64 ", 0x%08x): not this stream",
			      m->dev->name, bytes, records, crc, m->w.offset, m->w.data_records,
			      m->w.crc);
	m->dest_loaded = true;
	vm_info(m->ctx, "device %s: the destination loaded and verified the stream", m->dev->name);
	return 0;
}

/* FAILED: the destination gave up; the source goes on (its device is put back now or later). */
static int apply_failed(struct vfiomig_mig *m, const unsigned char *b, uint32_t len,
			struct vfiomig_return_msg *out)
{
	uint32_t error;
	size_t rlen;
	char why[300];

	if (len < RP_FAILED_MIN)
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: FAILED of %u bytes",
			      m->dev->name, len);
	error = get_be32(b + 8);
	rlen = get_be16(b + 12);
	if (error == 0 || error > RP_ERRNO_MAX || rlen > RP_REASON_MAX ||
	    RP_FAILED_MIN + rlen > len || !vm_printable(b + RP_FAILED_MIN, rlen))
		return vm_err(m->ctx, -EBADMSG, "device %s: return path: a malformed FAILED "
			      "message", m->dev->name);
	out->bytes = get_be64(b);
	out->error = -(int32_t)error;
	memcpy(out->reason, b + RP_FAILED_MIN, rlen);
	out->reason[rlen] = '\0';
	m->dest_failed = true;
	vm_warn(m->ctx, "device %s: the destination failed (%s)%s%s", m->dev->name,
		vfiomig_strerror(out->error), rlen ? ": " : "", out->reason);
	snprintf(why, sizeof(why), "the destination failed: %s", out->reason);
	if (m->setup_done && !m->complete && !m->failed)
		vm_mig_fail(m, out->error, why);
	else if (!m->failed)
		vm_mig_note_failure(m, out->error, why);
	return 0;
}

int vfiomig_mig_return_recv(struct vfiomig_mig *m, struct vfiomig_stream *rp,
			    struct vfiomig_return_msg *msg)
{
	VM_API(m ? m->ctx : NULL);
	struct vfiomig_return_msg out = { .sz = sizeof(out) };
	unsigned char b[RP_BODY_MAX];
	uint64_t marker = 0;
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
		ret = rp_read(m, rp, &marker, b, &len);
		if (ret)
			return ret;
		out.type = (uint32_t)(marker & ~RP_MARKER_MASK);
		switch (marker) {
		case RP_ACK:
			if (len < RP_ACK_LEN)
				return vm_err(m->ctx, -EBADMSG, "device %s: return path: "
					      "SWITCHOVER_ACK of %u bytes", m->dev->name, len);
			out.bytes = get_be64(b);
			m->acked = true;
			vm_dbg(m->ctx, "device %s: switchover acknowledged", m->dev->name);
			break;
		case RP_LOADED:
			ret = apply_loaded(m, b, len, &out);
			break;
		case RP_FAILED:
			ret = apply_failed(m, b, len, &out);
			break;
		default:
			/* From a newer destination: its sender knows we may skip it. */
			vm_dbg(m->ctx, "device %s: return path: message type %u skipped",
			       m->dev->name, out.type);
			continue;
		}
		if (ret)
			return ret;
		vm_out_copy(msg, &out, sizeof(out));
		return 0;
	}
}
