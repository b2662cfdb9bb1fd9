/* SPDX-License-Identifier: MIT */
/*
 * libvfiomig: shared public definitions (export marker, option-struct
 * helpers, log priorities). Included by every other public header.
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
 * Extensible option structs.
 *
 * Every *_opts struct (and every ops/info struct the caller fills in)
 * starts with `size_t sz`, set to sizeof the struct the caller was
 * compiled against. The library reads only the fields that fit in sz,
 * so callers built against an older header keep working; a caller built
 * against a newer header whose extra fields are non-zero gets -EINVAL
 * from an older library rather than silent misbehaviour.
 *
 * VFIOMIG_OPTS(device_open_opts, o, .flags = X) declares
 * `struct vfiomig_device_open_opts o`, zeroes it (padding included),
 * sets o.sz and then the given fields.
 */
#define VFIOMIG_OPTS(TYPE, NAME, ...)                                        \
	struct vfiomig_##TYPE NAME = ({                                      \
		__builtin_memset(&NAME, 0, sizeof(struct vfiomig_##TYPE));   \
		(struct vfiomig_##TYPE){                                     \
			.sz = sizeof(struct vfiomig_##TYPE),                 \
			__VA_ARGS__                                          \
		};                                                           \
	})

/* Log priorities: the syslog(3) values, so they can be passed straight on. */
#define VFIOMIG_LOG_ERR     3
#define VFIOMIG_LOG_WARNING 4
#define VFIOMIG_LOG_NOTICE  5
#define VFIOMIG_LOG_INFO    6
#define VFIOMIG_LOG_DEBUG   7

/*
 * Free memory the library handed to the caller (documented per function).
 * NULL is accepted.
 */
VFIOMIG_API void vfiomig_free(void *ptr);

/* The library's version string at run time, e.g. "0.1.0". */
VFIOMIG_API const char *vfiomig_version(void);

/* strerror-like text for a negative errno returned by the library. */
VFIOMIG_API const char *vfiomig_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
