/* SPDX-License-Identifier: MIT */
/*
 * Migration protocol v2 (Linux 5.18+): VFIO_DEVICE_FEATURE
 * MIG_DEVICE_STATE transitions with a data_fd, PRECOPY_INFO on the
 * data_fd and MIG_DATA_SIZE for the stop-copy estimate.
 *
 * Kernel facts this file leans on:
 *  - the kernel walks combination transitions itself, so we request the
 *    target directly — except STOP_COPY -> PRE_COPY(_P2P), which we never
 *    request (since 6.2 that request loops forever inside the kernel on a
 *    device with PRE_COPY);
 *  - a failed SET copies back the *requested* state with data_fd -1, so
 *    the real state is always read back with a GET after a failure;
 *  - in PRE_COPY a read of 0 bytes or -ENOMSG means "no data now"; only
 *    in STOP_COPY is 0 the end of the data;
 *  - VFIO_DEVICE_RESET returns the device to RUNNING and kills the
 *    migration fds.
 */
#include "mig.h"

#include <stdio.h>
#include <stdlib.h>

static int get_state(struct vfiomig_mig *m, uint32_t *state)
{
	struct vu_feature_mig_state st = { 0 };
	int ret = vm_device_feature(m->dev, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIG_DEVICE_STATE,
				    &st, sizeof(st));

	if (ret < 0)
		return ret;
	if (st.device_state >= VU_STATE_NR)
		return -EPROTO;
	*state = st.device_state;
	return 0;
}

static void close_data_fd(struct vfiomig_mig *m)
{
	if (m->data_fd >= 0) {
		vk_close(m->ctx, m->data_fd);
		m->data_fd = -1;
	}
}

static bool state_has_data_fd(uint32_t s)
{
	return s == VU_STATE_STOP_COPY || s == VU_STATE_RESUMING || s == VU_STATE_PRE_COPY ||
	       s == VU_STATE_PRE_COPY_P2P;
}

static int v2_init(struct vfiomig_mig *m)
{
	struct vu_feature_migration mig = { 0 };
	int ret;

	m->data_fd = -1;
	ret = vm_device_feature(m->dev, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIGRATION, &mig,
				sizeof(mig));
	if (ret < 0)
		return vm_err(m->ctx, ret, "device %s: VFIO_DEVICE_FEATURE(GET MIGRATION)",
			      m->dev->name);
	m->v2_flags = mig.flags;
	ret = get_state(m, &m->state);
	if (ret < 0)
		return vm_err(m->ctx, ret, "device %s: VFIO_DEVICE_FEATURE(GET MIG_DEVICE_STATE)",
			      m->dev->name);
	return 0;
}

static void v2_fini(struct vfiomig_mig *m)
{
	close_data_fd(m);
}

static int v2_set_state(struct vfiomig_mig *m, uint32_t target)
{
	struct vu_feature_mig_state st = { .device_state = target, .data_fd = -1 };
	uint32_t from = m->state, real;
	int ret;

	if (target == m->state)
		return 0;
	if (m->state == VU_STATE_STOP_COPY &&
	    (target == VU_STATE_PRE_COPY || target == VU_STATE_PRE_COPY_P2P))
		return vm_err(m->ctx, -EINVAL,
			      "device %s: refusing to request STOP_COPY -> %s (kernels since 6.2 "
			      "can loop forever on it)", m->dev->name, vm_dev_state_name(target));

	/* A failed SET copies the payload back: the requested state, data_fd -1. */
	ret = vm_device_feature(m->dev, VU_DEVICE_FEATURE_SET | VU_FEATURE_MIG_DEVICE_STATE, &st,
				sizeof(st));
	if (ret < 0) {
		/* The copied-back state is the one we asked for: ask the device instead. */
		int gret = get_state(m, &real);

		m->state = gret < 0 ? VU_STATE_ERROR : real;
		if (!state_has_data_fd(m->state))
			close_data_fd(m);
		return vm_err(m->ctx, ret,
			      "device %s: VFIO_DEVICE_FEATURE(MIG_DEVICE_STATE %s -> %s) (device is "
			      "now %s)", m->dev->name, vm_dev_state_name(from), vm_dev_state_name(target),
			      gret < 0 ? "unreadable" : vm_dev_state_name(real));
	}
	m->state = target;
	if (st.data_fd >= 0) {
		close_data_fd(m);
		m->data_fd = st.data_fd;
	} else if (!state_has_data_fd(target)) {
		close_data_fd(m);
	}
	vm_dbg(m->ctx, "device %s: %s -> %s%s", m->dev->name, vm_dev_state_name(from),
	       vm_dev_state_name(target), st.data_fd >= 0 ? " (new data_fd)" : "");
	if (state_has_data_fd(target) && m->data_fd < 0)
		return vm_err(m->ctx, -EPROTO, "device %s: %s without a data_fd", m->dev->name,
			      vm_dev_state_name(target));
	return 0;
}

static int v2_reset(struct vfiomig_mig *m)
{
	int ret;

	close_data_fd(m);
	ret = vm_device_reset(m->dev);
	m->state = ret < 0 ? VU_STATE_ERROR : VU_STATE_RUNNING;
	return ret;
}

static int v2_recover(struct vfiomig_mig *m, uint32_t target)
{
	uint32_t from;
	int ret;

	/* ERROR is left only through a reset: a SET from there can never succeed. */
	if (m->state != VU_STATE_ERROR && v2_set_state(m, target) == 0)
		return 0;
	if (m->state == target)
		return 0;
	/* The arc failed (device in ERROR, or refused): reset, losing the device's state. */
	from = m->state;
	ret = v2_reset(m);
	if (ret < 0)
		return vm_err(m->ctx, ret, "device %s: VFIO_DEVICE_RESET after a failed transition",
			      m->dev->name);
	vm_warn(m->ctx, "device %s: had to reset the device to leave %s (its state is lost)",
		m->dev->name, vm_dev_state_name(from));
	if (target != VU_STATE_RUNNING) {
		ret = v2_set_state(m, target);
		if (ret)
			return ret;
	}
	return 1;
}

static int v2_precopy_info(struct vfiomig_mig *m, uint64_t *initial, uint64_t *dirty)
{
	struct vu_precopy_info pi = { .argsz = sizeof(pi) };
	int ret;

	*initial = *dirty = 0;
	if ((m->state != VU_STATE_PRE_COPY && m->state != VU_STATE_PRE_COPY_P2P) || m->data_fd < 0)
		return 0;
	ret = vk_ioctl_retry(m->ctx, m->data_fd, VU_MIG_GET_PRECOPY_INFO, &pi);
	if (ret < 0)
		return vm_err(m->ctx, ret, "device %s: VFIO_MIG_GET_PRECOPY_INFO", m->dev->name);
	*initial = pi.initial_bytes;
	*dirty = pi.dirty_bytes;
	return 0;
}

static int v2_stopcopy_size(struct vfiomig_mig *m, uint64_t *bytes)
{
	struct vu_feature_mig_data_size ds = { 0 };
	int ret;

	*bytes = 0;
	ret = vm_device_feature(m->dev, VU_DEVICE_FEATURE_GET | VU_FEATURE_MIG_DATA_SIZE, &ds,
				sizeof(ds));
	if (ret == -ENOTTY || ret == -EINVAL || ret == -EOPNOTSUPP)
		return 0; /* a kernel before 6.2: no estimate */
	if (ret < 0)
		return vm_err(m->ctx, ret, "device %s: VFIO_DEVICE_FEATURE(GET MIG_DATA_SIZE)",
			      m->dev->name);
	*bytes = ds.stop_copy_length;
	return 0;
}

static ssize_t v2_save_chunk(struct vfiomig_mig *m, const void **ptr)
{
	bool precopy = m->state == VU_STATE_PRE_COPY || m->state == VU_STATE_PRE_COPY_P2P;
	ssize_t n;

	if (m->data_fd < 0)
		return vm_err(m->ctx, -EBADF, "device %s: no data_fd in %s", m->dev->name,
			      vm_dev_state_name(m->state));
	do
		n = vk_read(m->ctx, m->data_fd, m->scratch, m->scratch_len);
	while (n == -EINTR);
	if (n == -ENOMSG && precopy)
		return 0;
	if (n < 0)
		return vm_err(m->ctx, (int)n, "device %s: read from the data_fd in %s",
			      m->dev->name, vm_dev_state_name(m->state));
	if ((size_t)n > m->scratch_len)
		return vm_err(m->ctx, -EIO, "device %s: data_fd read returned more than asked",
			      m->dev->name);
	*ptr = m->scratch;
	return n;
}

static int v2_load_chunk(struct vfiomig_mig *m, uint64_t size)
{
	int ret;

	if (m->state != VU_STATE_RESUMING || m->data_fd < 0)
		return vm_err(m->ctx, -EPROTO, "device %s: data record while %s", m->dev->name,
			      vm_dev_state_name(m->state));
	while (size) {
		size_t piece = size < m->scratch_len ? (size_t)size : m->scratch_len;

		const void *p;

		ret = vm_fmt_read_body_ptr(&m->r, m->scratch, piece, &p);
		if (ret)
			return ret;
		ret = vk_write_full(m->ctx, m->data_fd, p, piece);
		if (ret)
			return vm_err(m->ctx, ret, "device %s: write to the data_fd in RESUMING",
				      m->dev->name);
		size -= piece;
	}
	return 0;
}

const struct vm_proto vm_proto_v2 = {
	.name = "v2",
	.id = VFIOMIG_PROTO_V2,
	.init = v2_init,
	.fini = v2_fini,
	.set_state = v2_set_state,
	.recover = v2_recover,
	.reset = v2_reset,
	.precopy_info = v2_precopy_info,
	.stopcopy_size = v2_stopcopy_size,
	.save_chunk = v2_save_chunk,
	.load_chunk = v2_load_chunk,
};
