/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: shared public definitions (export marker, sized-struct
 * helpers, cleanup helpers, log priorities, the numberings several
 * headers share). Included by every other public header.
 */
#ifndef VFIOMIG_COMMON_H
#define VFIOMIG_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Marks every exported declaration; everything else is hidden. */
#ifndef VFIOMIG_API
#define VFIOMIG_API __attribute__((visibility("default")))
#endif

/*
 * Sized structs.
 *
 * Every *_opts struct, every info struct the library fills in and every
 * ops table starts with `size_t sz`, set to sizeof the struct the caller
 * was compiled against. The library reads (or fills) only the fields that
 * fit in sz, so callers built against an older header keep working; a
 * caller built against a newer header whose extra fields are non-zero
 * gets -EINVAL from an older library rather than silent misbehaviour.
 *
 * Public structs have no implicit padding: every byte is a named member
 * (alignment slots are `reserved*` members, which must be zero), so a
 * plain initialiser zeroes all of them and the library can check them.
 *
 * C (C99 and later), and C++20:
 *
 *     VFIOMIG_OPTS(device_open_opts, o, .flags = VFIOMIG_OPEN_CDEV);
 *     VFIOMIG_OPTS(region_info, ri);
 *
 * declares `struct vfiomig_device_open_opts o`, with o.sz set and every
 * other member zero except those given (C++20: give them in declaration
 * order). It is a plain initialiser: no compiler extension is involved.
 *
 * C++ before C++20 (no designated initialisers), or anywhere a statement
 * reads better:
 *
 *     auto o = vfiomig_opts<vfiomig_device_open_opts>();
 *     o.flags = VFIOMIG_OPEN_CDEV;
 *
 * Any other language (FFI): zero the whole struct, then set sz and the
 * fields you use.
 */
#define VFIOMIG_OPTS(TYPE, ...) VFIOMIG_OPTS_DECL_(TYPE, __VA_ARGS__, )
#ifndef __cplusplus
#define VFIOMIG_OPTS_DECL_(TYPE, NAME, ...) \
	struct vfiomig_##TYPE NAME = { .sz = sizeof(struct vfiomig_##TYPE), __VA_ARGS__ }
#else
/*
 * g++ (and newer clang++) warn under -Wextra about every member a C++20
 * designated initialiser leaves out; here they are zeroed on purpose. The
 * pragmas must sit between declarations, so the caller's `;` ends a
 * static_assert.
 */
#define VFIOMIG_OPTS_DECL_(TYPE, NAME, ...)                                                \
	_Pragma("GCC diagnostic push")                                                     \
	_Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")                 \
	struct vfiomig_##TYPE NAME = { .sz = sizeof(struct vfiomig_##TYPE), __VA_ARGS__ }; \
	_Pragma("GCC diagnostic pop")                                                      \
	static_assert(true, "")
#endif

/* Log priorities: the syslog(3) values, so they can be passed straight on. */
#define VFIOMIG_LOG_ERR     3
#define VFIOMIG_LOG_WARNING 4
#define VFIOMIG_LOG_NOTICE  5
#define VFIOMIG_LOG_INFO    6
#define VFIOMIG_LOG_DEBUG   7

/*
 * Migration protocols, numbered the same everywhere (stream headers,
 * vfiomig_stream_info.protocol, vfiomig_mig_stats.protocol); sets of them
 * are masks of VFIOMIG_PROTO_BIT() (vfiomig_migration_info.protocols).
 */
#define VFIOMIG_PROTO_V1 1 /* the v1 region protocol (Linux 5.8-5.17), experimental */
#define VFIOMIG_PROTO_V2 2 /* VFIO_DEVICE_FEATURE_MIGRATION with a data_fd (5.18+) */
#define VFIOMIG_PROTO_BIT(proto) (1u << (proto))

/*
 * Kinds of device, numbered the same everywhere (stream headers,
 * vfiomig_stream_info.kind, vfiomig_sim_device_opts.kind).
 */
#define VFIOMIG_DEVKIND_PCI  1 /* a PCI function (vfio-pci or a variant driver) */
#define VFIOMIG_DEVKIND_MDEV 2 /* a mediated device */

/*
 * Free memory the library handed to the caller (documented per function).
 * NULL is accepted.
 */
VFIOMIG_API void vfiomig_free(void *ptr);

/* The library's version string at run time, e.g. "0.1.0". */
VFIOMIG_API const char *vfiomig_version(void);

/* strerror-like text for a negative errno returned by the library. */
VFIOMIG_API const char *vfiomig_strerror(int err);

/*
 * Cleanup helpers, for C code built with GCC or clang that frees with
 * __attribute__((cleanup)) (as systemd's sd-* headers allow):
 *
 *     VFIOMIG_CLEANUP(vfiomig_device_closep) struct vfiomig_device *dev = NULL;
 *
 * Each header defines `<destructor>p(T **)` for its objects: it calls the
 * destructor when *p is not NULL. The functions are plain static inline
 * C99 and compile everywhere; only VFIOMIG_CLEANUP needs the extension.
 */
#if defined(__GNUC__) && !defined(__cplusplus)
#define VFIOMIG_CLEANUP(fn) __attribute__((cleanup(fn)))
#endif
#define VFIOMIG_DEFINE_CLEANUP_(TYPE, FN) \
	static inline void FN##p(TYPE **p)  \
	{                                   \
		if (*p)                     \
			FN(*p);             \
	}

/* vfiomig_freep(&buf) frees a buffer from the library (buf: any pointer type). */
static inline void vfiomig_freep(void *p)
{
#ifdef __cplusplus
	vfiomig_free(*static_cast<void **>(p));
#else
	vfiomig_free(*(void **)p);
#endif
}

#ifdef __cplusplus
}

/* C++: a value-initialised sized struct with sz set (see VFIOMIG_OPTS). */
template <typename T> inline T vfiomig_opts()
{
	T o = T();
	o.sz = sizeof(T);
	return o;
}
#endif
#endif
