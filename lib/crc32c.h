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
 * vm_crc32c picks the SSE4.2 instruction when the CPU has it.
 */
uint32_t vm_crc32c(uint32_t crc, const void *buf, size_t len);
uint32_t vm_crc32c_sw(uint32_t crc, const void *buf, size_t len);
/* Only valid when vm_crc32c_hw_available(); else it falls back to _sw. */
uint32_t vm_crc32c_hw(uint32_t crc, const void *buf, size_t len);
bool vm_crc32c_hw_available(void);
/* The slice-by-8 tables, for the tests to check against their definition. */
extern const uint32_t vm_crc32c_table[8][256];

#endif
