/* SPDX-License-Identifier: MIT */
/*
 * Private, shared by libvfiomig and libvfiomig-sim: reading a caller's
 * sized struct (opts, info, ops table). Header-only, because the two
 * libraries export nothing to each other but the public API.
 *
 * The rules (include/vfiomig/common.h): the struct starts with size_t sz;
 * a field is read only when it lies wholly within sz; bytes past the end
 * of the last field this library knows must be zero, up to sz. Public
 * structs put their reserved (alignment) members after their last field,
 * so this one tail check covers them too (libbpf's OPTS_VALID idea).
 */
#ifndef VFIOMIG_SIZED_H
#define VFIOMIG_SIZED_H

#include <stddef.h>
#include <stdint.h>

#define VM_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define VM_OFFSETOFEND(type, field) (offsetof(type, field) + sizeof(((type *)0)->field))

/* The caller's sz of a sized struct (0 for NULL). */
static inline size_t vm_sized_sz(const void *s)
{
	return s ? *(const size_t *)s : 0;
}

/* Does the caller's struct contain `field`? */
#define VM_OPTS_HAS(opts, type, field) (vm_sized_sz(opts) >= VM_OFFSETOFEND(type, field))
#define VM_OPTS_GET(opts, type, field, dflt) \
	(VM_OPTS_HAS(opts, type, field) ? (opts)->field : (dflt))

/* Bytes this library knows of `type`: up to the end of `last_field`. */
#define VM_KNOWN_SZ(type, last_field) VM_OFFSETOFEND(type, last_field)

/*
 * Check a sized struct against `known` bytes: returns 0 when it is fine
 * (NULL counts as fine: all defaults), -1 when sz is smaller than the sz
 * field itself, or the 1-based offset of the first non-zero byte in
 * [known, sz).
 */
static inline long vm_sized_check(const void *s, size_t known)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t sz;

	if (!s)
		return 0;
	sz = *(const size_t *)s;
	if (sz < sizeof(size_t))
		return -1;
	for (size_t i = known; i < sz; i++)
		if (p[i])
			return (long)i + 1;
	return 0;
}

#endif
