/* SPDX-License-Identifier: MIT */
/*
 * Writes the golden streams of tests/data/streams/ (run once, by hand;
 * not part of `make check`). The files it wrote are committed and must
 * never change: test_format.c loads them forever, so every later
 * libvfiomig proves it still reads what 0.1 wrote. It never overwrites
 * an existing file (it says it kept it); a new golden stream gets a new
 * name.
 *
 *   gcc -std=gnu11 -I. -Ibuild/include -include build/config.h -Iinclude -Ilib \
 *       tests/gen_golden.c lib/ctx.c lib/kops.c lib/stream.c lib/format.c \
 *       lib/crc32c.c -o /tmp/gen_golden
 *   /tmp/gen_golden tests/data/streams
 *
 * Body bytes follow golden_byte() so the test can recompute them.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <vfiomig/vfiomig.h>
#include <vfiomig/stream.h>

#include "format.h"

static unsigned char golden_byte(unsigned seed, size_t i)
{
	return (unsigned char)((seed * 37u + i * 11u) & 0xff);
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = golden_byte(seed, i);
}

static void check(int err, const char *what)
{
	if (err) {
		fprintf(stderr, "gen_golden: %s: %s\n", what, strerror(-err));
		exit(1);
	}
}

static void save(const char *dir, const char *name, const void *buf, size_t len)
{
	char path[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0 && errno == EEXIST) {
		printf("kept %s (golden files are never rewritten)\n", path);
		return;
	}
	if (fd < 0) {
		fprintf(stderr, "gen_golden: %s: %s (golden files are never rewritten)\n", path,
			strerror(errno));
		exit(1);
	}
	if (write(fd, buf, len) != (ssize_t)len || close(fd) != 0) {
		fprintf(stderr, "gen_golden: writing %s failed\n", path);
		exit(1);
	}
	printf("wrote %s (%zu bytes)\n", path, len);
}

static void data(struct vm_fmt_writer *w, unsigned seed, size_t len)
{
	unsigned char buf[256];

	fill(buf, len, seed);
	check(vm_fmt_write_data(w, buf, len), "data record");
}

/* The smallest useful stream: a v1 mdev (mtty-2), one stop-copy data record. */
static void tiny(struct vm_fmt_writer *w)
{
	struct vm_fmt_header h = {
		.protocol = VM_FMT_PROTO_V1,
		.id = {
			.kind = VM_FMT_ID_MDEV,
			.vendor = 0x4348,
			.device = 0x3253,
			.subvendor = 0x4348,
			.subdevice = 0x3253,
			.class_code = 0x070002,
			.mdev_type = "mtty-2",
			.driver = "mtty",
		},
	};

	check(vm_fmt_write_header(w, &h), "header");
	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_SETUP), "setup");
	check(vm_fmt_end_phase(w), "end");
	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_STOPCOPY), "stop-copy");
	data(w, 1, 16);
	check(vm_fmt_end_phase(w), "end");
	check(vm_fmt_write_trailer(w), "trailer");
}

/* A v2 PCI VF with two pre-copy rounds, switchover-ack and a config blob. */
static void precopy(struct vm_fmt_writer *w)
{
	struct vm_fmt_header h = {
		.protocol = VM_FMT_PROTO_V2,
		.id = {
			.kind = VM_FMT_ID_PCI,
			.vendor = 0x15b3,
			.device = 0x101e,
			.subvendor = 0x15b3,
			.subdevice = 0x0061,
			.class_code = 0x020000,
			.driver = "mlx5_vfio_pci",
		},
	};
	unsigned char buf[17];

	check(vm_fmt_write_header(w, &h), "header");
	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_SETUP), "setup");
	check(vm_fmt_end_phase(w), "end");

	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_PRECOPY), "pre-copy 1");
	data(w, 2, 40);
	fill(buf, sizeof(buf), 3);
	check(vm_fmt_begin_data(w, sizeof(buf)), "data begin");
	check(vm_fmt_write_body(w, buf, 10), "data body");
	check(vm_fmt_write_body(w, buf + 10, 7), "data body");
	check(vm_fmt_write_init_data_sent(w), "init data sent");
	check(vm_fmt_end_phase(w), "end");

	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_PRECOPY), "pre-copy 2");
	data(w, 4, 9);
	check(vm_fmt_end_phase(w), "end");

	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_STOPCOPY), "stop-copy");
	data(w, 5, 33);
	data(w, 6, 0);
	check(vm_fmt_write_config(w, "config-blob!", 12), "config");
	check(vm_fmt_end_phase(w), "end");
	check(vm_fmt_write_trailer(w), "trailer");
}

/* A v2 PCI function whose source gave up in the first pre-copy round. */
static void cancelled(struct vm_fmt_writer *w)
{
	struct vm_fmt_header h = {
		.protocol = VM_FMT_PROTO_V2,
		.id = {
			.kind = VM_FMT_ID_PCI,
			.vendor = 0x1af4,
			.device = 0x10f0,
			.subvendor = 0x1af4,
			.subdevice = 0x1100,
			.class_code = 0x020000,
			.driver = "vfio-pci",
		},
	};

	check(vm_fmt_write_header(w, &h), "header");
	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_SETUP), "setup");
	check(vm_fmt_end_phase(w), "end");
	check(vm_fmt_begin_phase(w, VM_FMT_PHASE_PRECOPY), "pre-copy");
	data(w, 8, 24);
	check(vm_fmt_write_cancel(w, -EINTR, "cancelled by the operator"), "cancel");
}

/*
 * The three return-path messages, one after the other: SWITCHOVER_ACK
 * after 4096 bytes, LOADED for proto1-mdev-tiny.bin (170 bytes, one data
 * record of 16 bytes, stream CRC32C 0x2890fbb7), FAILED with -ENODEV.
 */
static size_t return_path(unsigned char *b)
{
	struct vm_rp_msg ack = { .type = VFIOMIG_RETURN_SWITCHOVER_ACK, .bytes = 4096 };
	struct vm_rp_msg loaded = { .type = VFIOMIG_RETURN_LOADED, .bytes = 170, .records = 1,
				    .data_bytes = 16, .crc = 0x2890fbb7 };
	struct vm_rp_msg failed = {
		.type = VFIOMIG_RETURN_FAILED, .bytes = 58, .error = -ENODEV,
		.reason = "device 0000:04:00.0: stream is for PCI 1af4:10f0, device is PCI 8086:10f0",
	};
	size_t len = 0;

	len += vm_rp_encode(&ack, b + len);
	len += vm_rp_encode(&loaded, b + len);
	len += vm_rp_encode(&failed, b + len);
	return len;
}

/*
 * What a later version-1 writer may emit and this version must still read:
 * a header with 8 bytes of fields it does not know, a compatible flag it
 * does not know (bit 16), optional records, and a trailer 8 bytes longer.
 * Built by hand, since this library's writer never emits any of it.
 */
static size_t extended(unsigned char *b, size_t cap)
{
	static const unsigned char extra[8] = { 0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0x03 };
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	struct vm_fmt_header h = {
		.protocol = VM_FMT_PROTO_V2,
		.id = {
			.kind = VM_FMT_ID_PCI,
			.vendor = 0x1af4,
			.device = 0x1041,
			.subvendor = 0x1af4,
			.subdevice = 0x1100,
			.class_code = 0x020000,
			.driver = "virtio_vfio_pci",
		},
	};
	const void *p;
	size_t len, hlen, pos, tpos, crc_end;
	uint32_t crc;
	uint64_t records = 0, bytes = 0;
	unsigned char body[20];

	/* The writer's header, then grown by 8 bytes before its CRC. */
	check(vfiomig_stream_mem_new(NULL, &s), "mem stream");
	vm_fmt_writer_init(&w, s);
	check(vm_fmt_write_header(&w, &h), "header");
	check(vfiomig_stream_mem_data(s, &p, &len), "mem data");
	hlen = len + sizeof(extra);
	memcpy(b, p, len - 4);
	memcpy(b + len - 4, extra, sizeof(extra));
	vfiomig_stream_free(s);
	b[12] = (unsigned char)(hlen >> 24);
	b[13] = (unsigned char)(hlen >> 16);
	b[14] = (unsigned char)(hlen >> 8);
	b[15] = (unsigned char)hlen;
	b[21] |= 0x01; /* flags bit 16: compatible, unknown to version 1 readers */
	crc = vm_crc32c(0, b, hlen - 4);
	b[hlen - 4] = (unsigned char)(crc >> 24);
	b[hlen - 3] = (unsigned char)(crc >> 16);
	b[hlen - 2] = (unsigned char)(crc >> 8);
	b[hlen - 1] = (unsigned char)crc;
	pos = hlen;

#define PUT64(v)                                                   \
	do {                                                       \
		uint64_t v_ = (v);                                 \
		for (int i_ = 0; i_ < 8; i_++)                     \
			b[pos++] = (unsigned char)(v_ >> (56 - 8 * i_)); \
	} while (0)
#define PUTN(src, n)                    \
	do {                            \
		memcpy(b + pos, src, n); \
		pos += n;               \
	} while (0)

	PUT64(VM_FMT_DEV_SETUP_STATE);
	PUT64(0xffffffffef110001ull); /* optional, 5 bytes */
	PUT64(5);
	PUTN("hello", 5);
	PUT64(VM_FMT_END_OF_STATE);
	PUT64(VM_FMT_PRECOPY_STATE);
	fill(body, 20, 7);
	PUT64(VM_FMT_DEV_DATA_STATE);
	PUT64(20);
	PUTN(body, 20);
	records++;
	bytes += 20;
	PUT64(VM_FMT_END_OF_STATE);
	PUT64(VM_FMT_STOPCOPY_STATE);
	PUT64(0xffffffffef11abcdull); /* optional, empty */
	PUT64(0);
	fill(body, 3, 8);
	PUT64(VM_FMT_DEV_DATA_STATE);
	PUT64(3);
	PUTN(body, 3);
	records++;
	bytes += 3;
	PUT64(VM_FMT_DEV_CONFIG_STATE);
	PUT64(4);
	PUTN("cfg!", 4);
	PUT64(VM_FMT_END_OF_STATE);

	crc = vm_crc32c(0, b, pos);
	tpos = pos;
	PUT64(VM_FMT_TRAILER);
	PUT64(VM_FMT_TRAILER_LEN + 8);
	PUT64(tpos);
	PUT64(records);
	PUT64(bytes);
	b[pos++] = (unsigned char)(crc >> 24);
	b[pos++] = (unsigned char)(crc >> 16);
	b[pos++] = (unsigned char)(crc >> 8);
	b[pos++] = (unsigned char)crc;
	PUT64(0x0123456789abcdefull); /* a field of a later version */
	crc_end = pos;
	crc = vm_crc32c(0, b + tpos, crc_end - tpos);
	b[pos++] = (unsigned char)(crc >> 24);
	b[pos++] = (unsigned char)(crc >> 16);
	b[pos++] = (unsigned char)(crc >> 8);
	b[pos++] = (unsigned char)crc;
	if (pos > cap)
		abort();
	return pos;
}

static void written(const char *dir, const char *name, void (*fn)(struct vm_fmt_writer *))
{
	struct vfiomig_stream *s;
	struct vm_fmt_writer w;
	const void *p;
	size_t len;

	check(vfiomig_stream_mem_new(NULL, &s), "mem stream");
	vm_fmt_writer_init(&w, s);
	fn(&w);
	check(vfiomig_stream_mem_data(s, &p, &len), "mem data");
	save(dir, name, p, len);
	vfiomig_stream_free(s);
}

int main(int argc, char **argv)
{
	unsigned char buf[1024];
	size_t len;

	if (argc != 2) {
		fprintf(stderr, "usage: %s DIR\n", argv[0]);
		return 2;
	}
	written(argv[1], "proto1-mdev-tiny.bin", tiny);
	written(argv[1], "proto2-pci-precopy.bin", precopy);
	len = extended(buf, sizeof(buf));
	save(argv[1], "proto2-pci-extended.bin", buf, len);
	written(argv[1], "proto2-pci-cancelled.bin", cancelled);
	{
		unsigned char rp[3 * VM_RP_MAX];

		len = return_path(rp);
		save(argv[1], "return-path.bin", rp, len);
	}
	return 0;
}
