/* SPDX-License-Identifier: MIT */
/*
 * Private: CRC32C, the checksum that covers every byte of a stream
 * (docs/stream-format.md, "CRC32C"). Implemented in crc32c.c.
 */
#ifndef VFIOMIG_CRC32C_H
#define VFIOMIG_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * CRC32C (Castagnoli, reflected polynomial 0x82f63b78, initial value and
 * final xor 0xffffffff). `crc` is a previous result (0 to start), so
 * vm_crc32c(vm_crc32c(0, a, n), b, m) is the CRC of a followed by b.
 * All the functions below give the same result for the same input; they
 * differ only in speed. Any thread may call any of them at any time.
 *
 * vm_crc32c is the one to use: it runs the fastest version this CPU has,
 * chosen once at the first call (not per call).
 */
uint32_t vm_crc32c(uint32_t crc, const void *buf, size_t len);
/* Portable slice-by-8; the reference the others are tested against. */
uint32_t vm_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/*
 * The hardware version (what vm_crc32c runs): SSE4.2 crc32q in three
 * interleaved chains combined with PCLMULQDQ, for buffers of 192 bytes
 * and more; one chain for shorter ones, and for all on a CPU with SSE4.2
 * but no PCLMULQDQ. vm_crc32c_sw when the CPU has no SSE4.2.
 */
uint32_t vm_crc32c_hw(uint32_t crc, const void *buf, size_t len);
/*
 * The SSE4.2 single chain alone, the former hardware version (for the
 * tests and the bench); vm_crc32c_sw when the CPU has no SSE4.2.
 */
uint32_t vm_crc32c_hw_1way(uint32_t crc, const void *buf, size_t len);
/* Whether the CPU has SSE4.2 (and _hw is not the software version). */
bool vm_crc32c_hw_available(void);
/* The version vm_crc32c runs, for humans: "sse4.2 3-way, pclmulqdq combine", ... */
const char *vm_crc32c_impl_name(void);
/* The slice-by-8 tables, for the tests to check against their definition. */
extern const uint32_t vm_crc32c_table[8][256];

#endif
