/* SPDX-License-Identifier: MIT */
/*
 * Info capability chains (VFIO_IOMMU_GET_INFO, VFIO_DEVICE_GET_REGION_INFO,
 * IOMMU_GET_HW_INFO...): building a chain and handing it to the caller
 * under the kernel's argsz rules.
 */
#include "sim_internal.h"

#include <stdlib.h>

void sim_caps_add(struct sim_caps *c, uint16_t id, uint16_t version, const void *cap,
		  size_t cap_len)
{
	struct vu_info_cap_header h = { .id = id, .version = version, .next = 0 };
	size_t size = (cap_len + 7) & ~(size_t)7;
	size_t off = c->len;
	uint8_t *nb;

	if (c->err)
		return;
	nb = realloc(c->buf, off + size);
	if (!nb) {
		c->err = -ENOMEM;
		return;
	}
	c->buf = nb;
	memset(nb + off, 0, size);
	memcpy(nb + off, cap, cap_len);
	memcpy(nb + off, &h, sizeof(h));
	if (off) {
		uint32_t next = (uint32_t)off;

		memcpy(nb + c->last + offsetof(struct vu_info_cap_header, next), &next,
		       sizeof(next));
	}
	c->last = off;
	c->len = off + size;
}

int sim_caps_apply(struct sim_caps *c, void *arg, size_t hdr_len, uint32_t *argsz,
		   uint32_t *flags, uint32_t caps_flag, uint32_t *cap_offset)
{
	int err = c->err;

	if (!err && c->len) {
		*flags |= caps_flag;
		if (*argsz < hdr_len + c->len) {
			*argsz = (uint32_t)(hdr_len + c->len);
			*cap_offset = 0;
		} else {
			size_t off = 0;

			/* `next` is relative to the info buffer, not to the chain. */
			for (;;) {
				struct vu_info_cap_header h;
				uint32_t nxt;

				memcpy(&h, c->buf + off, sizeof(h));
				if (!h.next)
					break;
				nxt = h.next;
				h.next += (uint32_t)hdr_len;
				memcpy(c->buf + off, &h, sizeof(h));
				off = nxt;
			}
			memcpy((uint8_t *)arg + hdr_len, c->buf, c->len);
			*cap_offset = (uint32_t)hdr_len;
		}
	}
	free(c->buf);
	c->buf = NULL;
	c->len = 0;
	return err;
}

