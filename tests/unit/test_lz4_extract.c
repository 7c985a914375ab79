/* SPDX-License-Identifier: MIT */
/*
 * vmlinux extraction from an LZ4 bzImage (src/boot/bzimage_payload.c), against
 * synthetic bzImages built here: a setup header with the fields the boot
 * protocol defines, and a payload compressed with liblz4 into the legacy
 * stream format the kernel's `lz4 -l` writes, followed by the size trailer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

#include "boot/bzimage_payload.h"

#define FAKE_ELF_SIZE	    20000
#define PAYLOAD_OFFSET	    0x40
#define DEFAULT_SETUP_SECTS 3

struct byte_buf {
	uint8_t *data;
	size_t len, cap;
};

static void buf_put(struct byte_buf *b, const void *data, size_t len)
{
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2;
		b->data = realloc(b->data, b->cap);
		assert_non_null(b->data);
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
}

static void buf_put_le32(struct byte_buf *b, uint32_t v)
{
	uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};

	buf_put(b, le, 4);
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

/* An "ELF": the magic, then a deterministic, compressible but not trivial pattern. */
static uint8_t *make_fake_elf(size_t len, int with_magic)
{
	uint8_t *p = malloc(len);
	uint32_t x = 12345;

	assert_non_null(p);
	for (size_t i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		p[i] = (i % 64 < 40) ? (uint8_t)(i / 64) : (uint8_t)(x >> 24);
	}
	if (with_magic)
		memcpy(p,
		       "\x7f"
		       "ELF\x02\x01\x01",
		       7);
	return p;
}

/* The LZ4 legacy stream of data (8 MiB blocks), optionally with the size trailer. */
static struct byte_buf lz4_legacy(const uint8_t *data, size_t len, int trailer)
{
	struct byte_buf b = {0};
	int bound = LZ4_compressBound(FK_LZ4_LEGACY_BLOCK_SIZE);
	char *tmp = malloc((size_t)bound);

	assert_non_null(tmp);
	buf_put_le32(&b, FK_LZ4_LEGACY_MAGIC);
	for (size_t off = 0; off < len; off += FK_LZ4_LEGACY_BLOCK_SIZE) {
		size_t n =
		    len - off < FK_LZ4_LEGACY_BLOCK_SIZE ? len - off : FK_LZ4_LEGACY_BLOCK_SIZE;
		int c = LZ4_compress_default((const char *)data + off, tmp, (int)n, bound);
		assert_true(c > 0);
		buf_put_le32(&b, (uint32_t)c);
		buf_put(&b, tmp, (size_t)c);
	}
	if (trailer)
		buf_put_le32(&b, (uint32_t)len);
	free(tmp);
	return b;
}

/* A bzImage: setup_sects+1 sectors of real-mode part, then payload_offset bytes, the payload. */
static struct byte_buf make_bzimage(uint8_t setup_sects, uint16_t version, const uint8_t *payload,
				    size_t payload_len)
{
	struct byte_buf b = {0};
	unsigned sects = setup_sects ? setup_sects : 4;
	size_t setup_len = (size_t)(sects + 1) * 512 + PAYLOAD_OFFSET;
	uint8_t *setup = calloc(1, setup_len);

	assert_non_null(setup);
	setup[FK_BZ_SETUP_SECTS_OFF] = setup_sects;
	setup[0x1fe] = 0x55;
	setup[0x1ff] = 0xaa;
	memcpy(setup + FK_BZ_HDRS_OFF, "HdrS", 4);
	setup[FK_BZ_VERSION_OFF] = (uint8_t)version;
	setup[FK_BZ_VERSION_OFF + 1] = (uint8_t)(version >> 8);
	put_le32(setup + FK_BZ_PAYLOAD_OFFSET_OFF, PAYLOAD_OFFSET);
	put_le32(setup + FK_BZ_PAYLOAD_LENGTH_OFF, (uint32_t)payload_len);
	buf_put(&b, setup, setup_len);
	buf_put(&b, payload, payload_len);
	free(setup);
	return b;
}

/* Image of a FAKE_ELF_SIZE ELF, with the payload starting at *payload_at. */
static struct byte_buf standard_image(uint8_t **elf_out, size_t *payload_at)
{
	uint8_t *elf = make_fake_elf(FAKE_ELF_SIZE, 1);
	struct byte_buf z = lz4_legacy(elf, FAKE_ELF_SIZE, 1);
	struct byte_buf img = make_bzimage(DEFAULT_SETUP_SECTS, 0x020f, z.data, z.len);

	free(z.data);
	if (elf_out)
		*elf_out = elf;
	else
		free(elf);
	if (payload_at)
		*payload_at = (DEFAULT_SETUP_SECTS + 1) * 512 + PAYLOAD_OFFSET;
	return img;
}

static int extract(const struct byte_buf *img, size_t max_out, uint8_t **out, size_t *out_len,
		   struct fk_err *err)
{
	*out = NULL;
	*out_len = 0;
	fk_err_clear(err);
	return fk_bzimage_extract_vmlinux("bzImage-test", img->data, img->len, max_out, out,
					  out_len, err);
}

/* Every failure names the file and says why; nothing is returned. */
static void expect_failure(const struct byte_buf *img, size_t max_out, int code, const char *why)
{
	struct fk_err err;
	uint8_t *out;
	size_t out_len;

	assert_int_equal(extract(img, max_out, &out, &out_len, &err), -code);
	assert_int_equal(err.code, code);
	assert_null(out);
	assert_non_null(strstr(err.msg, "bzImage-test"));
	if (!strstr(err.msg, why))
		fail_msg("message \"%s\" lacks \"%s\"", err.msg, why);
}

static void test_extracts_single_block(void **state)
{
	(void)state;
	uint8_t *elf, *out;
	size_t out_len;
	struct fk_err err;
	struct byte_buf img = standard_image(&elf, NULL);

	assert_int_equal(extract(&img, FK_VMLINUX_DEFAULT_MAX, &out, &out_len, &err), 0);
	assert_int_equal(out_len, FAKE_ELF_SIZE);
	assert_memory_equal(out, elf, FAKE_ELF_SIZE);
	free(out);
	free(elf);
	free(img.data);
}

/* Several 8 MiB blocks, no trailer, and a second stream magic between blocks. */
static void test_extracts_multi_block_and_concatenated(void **state)
{
	(void)state;
	size_t len = 2 * FK_LZ4_LEGACY_BLOCK_SIZE + 777;
	uint8_t *elf = make_fake_elf(len, 1), *out;
	size_t out_len;
	struct fk_err err;
	struct byte_buf first = lz4_legacy(elf, FK_LZ4_LEGACY_BLOCK_SIZE, 0);
	struct byte_buf second =
	    lz4_legacy(elf + FK_LZ4_LEGACY_BLOCK_SIZE, len - FK_LZ4_LEGACY_BLOCK_SIZE, 0);
	buf_put(&first, second.data, second.len);
	struct byte_buf img = make_bzimage(DEFAULT_SETUP_SECTS, 0x0208, first.data, first.len);

	assert_int_equal(extract(&img, FK_VMLINUX_DEFAULT_MAX, &out, &out_len, &err), 0);
	assert_int_equal(out_len, len);
	assert_memory_equal(out, elf, len);
	free(out);
	free(elf);
	free(first.data);
	free(second.data);
	free(img.data);
}

/* setup_sects 0 means 4: the payload is found 5 sectors in. */
static void test_setup_sects_zero_means_four(void **state)
{
	(void)state;
	uint8_t *elf = make_fake_elf(FAKE_ELF_SIZE, 1);
	struct byte_buf z = lz4_legacy(elf, FAKE_ELF_SIZE, 1);
	struct byte_buf img = make_bzimage(0, 0x020c, z.data, z.len);
	struct fk_bzimage_payload p;
	struct fk_err err;

	assert_int_equal(fk_bzimage_find_payload("x", img.data, img.len, &p, &err), 0);
	assert_int_equal(p.setup_sects, 4);
	assert_int_equal(p.offset, 5 * 512 + PAYLOAD_OFFSET);
	assert_int_equal(p.length, z.len);
	assert_int_equal(p.protocol_version, 0x020c);
	free(elf);
	free(z.data);
	free(img.data);
}

static void test_truncated_header(void **state)
{
	(void)state;
	struct byte_buf img = standard_image(NULL, NULL);

	img.len = FK_BZ_HEADER_END - 1;
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "too short");
	img.len = 0;
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "too short");
	free(img.data);
}

static void test_bad_magic(void **state)
{
	(void)state;
	struct byte_buf img = standard_image(NULL, NULL);

	img.data[FK_BZ_HDRS_OFF + 3] = 'T';
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "HdrS");
	free(img.data);
}

static void test_old_protocol_version(void **state)
{
	(void)state;
	struct byte_buf img = standard_image(NULL, NULL);

	img.data[FK_BZ_VERSION_OFF] = 0x07;
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, ENOTSUP, "2.07");
	free(img.data);
}

static void test_payload_out_of_bounds(void **state)
{
	(void)state;
	struct byte_buf img = standard_image(NULL, NULL);
	uint8_t *len_field = img.data + FK_BZ_PAYLOAD_LENGTH_OFF;
	uint8_t *off_field = img.data + FK_BZ_PAYLOAD_OFFSET_OFF;
	size_t payload_at = (DEFAULT_SETUP_SECTS + 1) * 512 + PAYLOAD_OFFSET;

	/* One byte too long. */
	put_le32(len_field, (uint32_t)(img.len - payload_at + 1));
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "out of bounds");
	/* Offset past the end; and an offset that would wrap 32-bit arithmetic. */
	put_le32(len_field, 16);
	put_le32(off_field, (uint32_t)img.len);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "out of bounds");
	put_le32(off_field, 0xffffffffu);
	put_le32(len_field, 0xffffffffu);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "out of bounds");
	/* setup_sects pointing past a file cut short. */
	put_le32(off_field, PAYLOAD_OFFSET);
	put_le32(len_field, 16);
	img.data[FK_BZ_SETUP_SECTS_OFF] = 200;
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "out of bounds");
	/* Zero length. */
	img.data[FK_BZ_SETUP_SECTS_OFF] = DEFAULT_SETUP_SECTS;
	put_le32(len_field, 0);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "payload_length is 0");
	free(img.data);
}

static void test_corrupt_compressed_bytes(void **state)
{
	(void)state;
	size_t at;
	struct byte_buf img = standard_image(NULL, &at);

	/* Token 0xff everywhere: literal runs longer than the block, which the decoder must refuse.
	 */
	memset(img.data + at + 8, 0xff, img.len - at - 8 - 4);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "corrupt compressed data");
	free(img.data);
}

static void test_truncated_block(void **state)
{
	(void)state;
	size_t at;
	struct byte_buf img = standard_image(NULL, &at);
	uint32_t payload_len = (uint32_t)(img.len - at);

	/* Drop the trailer and the last 10 bytes of the block. */
	put_le32(img.data + FK_BZ_PAYLOAD_LENGTH_OFF, payload_len - 14);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "truncated");
	/* Cut inside the next block-size field. */
	put_le32(img.data + FK_BZ_PAYLOAD_LENGTH_OFF, 6);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "truncated");
	/* Magic only. */
	put_le32(img.data + FK_BZ_PAYLOAD_LENGTH_OFF, 4);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "no blocks");
	free(img.data);
}

static void test_bad_block_size_and_trailer(void **state)
{
	(void)state;
	size_t at;
	struct byte_buf img = standard_image(NULL, &at);

	put_le32(img.data + img.len - 4, FAKE_ELF_SIZE + 1);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "trailing size field");
	put_le32(img.data + img.len - 4, FAKE_ELF_SIZE);

	put_le32(img.data + at + 4, 0);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "outside");
	put_le32(img.data + at + 4, 0x7fffffff);
	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, EINVAL, "outside");
	free(img.data);
}

static void test_output_too_large(void **state)
{
	(void)state;
	struct byte_buf img = standard_image(NULL, NULL);
	uint8_t *out;
	size_t out_len;
	struct fk_err err;

	expect_failure(&img, FAKE_ELF_SIZE - 1, EFBIG, "exceeds the limit");
	/* Exactly at the limit is fine. */
	assert_int_equal(extract(&img, FAKE_ELF_SIZE, &out, &out_len, &err), 0);
	assert_int_equal(out_len, FAKE_ELF_SIZE);
	free(out);
	free(img.data);
}

static void test_result_not_elf(void **state)
{
	(void)state;
	uint8_t *data = make_fake_elf(FAKE_ELF_SIZE, 0);
	struct byte_buf z = lz4_legacy(data, FAKE_ELF_SIZE, 1);
	struct byte_buf img = make_bzimage(DEFAULT_SETUP_SECTS, 0x020f, z.data, z.len);

	expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, ENOEXEC, "not an ELF");
	free(data);
	free(z.data);
	free(img.data);
}

static void test_other_compressions_named(void **state)
{
	(void)state;
	static const struct {
		uint8_t magic[8];
		const char *name;
	} cases[] = {
	    {{0x1f, 0x8b, 0x08, 0x00}, "gzip"},	     {{0xfd, '7', 'z', 'X', 'Z', 0x00}, "xz"},
	    {{0x28, 0xb5, 0x2f, 0xfd}, "zstd"},	     {{0x5d, 0x00, 0x00, 0x80}, "lzma"},
	    {{'B', 'Z', 'h', '9'}, "bzip2"},	     {{0x89, 'L', 'Z', 'O', 0x00}, "lzo"},
	    {{0x04, 0x22, 0x4d, 0x18}, "LZ4 frame"}, {{0x12, 0x34, 0x56, 0x78}, "unknown format"},
	};
	size_t at;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct byte_buf img = standard_image(NULL, &at);
		memcpy(img.data + at, cases[i].magic, sizeof(cases[i].magic));
		expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, ENOTSUP, cases[i].name);
		expect_failure(&img, FK_VMLINUX_DEFAULT_MAX, ENOTSUP, "not an LZ4 legacy");
		free(img.data);
	}
	assert_null(fk_compression_name((const uint8_t *)"\x1f", 1));
	assert_string_equal(fk_compression_name((const uint8_t *)"\x02\x21\x4c\x18", 4),
			    "LZ4 legacy");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_extracts_single_block),
	    cmocka_unit_test(test_extracts_multi_block_and_concatenated),
	    cmocka_unit_test(test_setup_sects_zero_means_four),
	    cmocka_unit_test(test_truncated_header),
	    cmocka_unit_test(test_bad_magic),
	    cmocka_unit_test(test_old_protocol_version),
	    cmocka_unit_test(test_payload_out_of_bounds),
	    cmocka_unit_test(test_corrupt_compressed_bytes),
	    cmocka_unit_test(test_truncated_block),
	    cmocka_unit_test(test_bad_block_size_and_trailer),
	    cmocka_unit_test(test_output_too_large),
	    cmocka_unit_test(test_result_not_elf),
	    cmocka_unit_test(test_other_compressions_named),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
