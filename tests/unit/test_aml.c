/* SPDX-License-Identifier: MIT */
/*
 * AML encoder: every primitive against byte sequences worked out by hand
 * from the ACPI 6.x spec (chapter 20, section 6.4), plus error paths and a
 * round trip through the test decoder.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "boot/aml.h"
#include "aml_decode.h"

#define BYTES(...) ((const uint8_t[]){__VA_ARGS__}), sizeof((const uint8_t[]){__VA_ARGS__})

static void expect_bytes(const struct aml_buf *b, const uint8_t *want, size_t len)
{
	assert_int_equal(b->error, 0);
	assert_int_equal(b->len, len);
	assert_memory_equal(b->data, want, len);
}

static void test_pkglen_encode(void **state)
{
	static const struct {
		uint32_t value;
		int n;
		uint8_t bytes[4];
	} cases[] = {
	    {0, 1, {0x00}},
	    {63, 1, {0x3F}},
	    {64, 2, {0x40, 0x04}},
	    {0x123, 2, {0x43, 0x12}},
	    {4095, 2, {0x4F, 0xFF}},
	    {4096, 3, {0x80, 0x00, 0x01}},
	    {0xFFFFF, 3, {0x8F, 0xFF, 0xFF}},
	    {1u << 20, 4, {0xC0, 0x00, 0x00, 0x01}},
	    {0x0ABCDEF1, 4, {0xC1, 0xEF, 0xCD, 0xAB}},
	    {AML_PKGLEN_MAX, 4, {0xCF, 0xFF, 0xFF, 0xFF}},
	};
	uint8_t out[4];

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memset(out, 0xAA, sizeof(out));
		assert_int_equal(aml_pkglen_encode(cases[i].value, out), cases[i].n);
		assert_memory_equal(out, cases[i].bytes, (size_t)cases[i].n);
	}
	assert_int_equal(aml_pkglen_encode(AML_PKGLEN_MAX + 1, out), -E2BIG);
	assert_int_equal(aml_pkglen_encode(UINT32_MAX, out), -E2BIG);
}

/*
 * A Scope whose body (name + filler) is body_len bytes: the PkgLength must
 * take the given width, hold body_len + width, and the body must survive
 * being moved to make room for it.
 */
static void check_scope_pkglen(size_t body_len, int width)
{
	const uint8_t *body_end;
	struct amld_cursor c;
	struct aml_buf b;
	struct amld d;
	size_t mark;
	uint8_t *filler;

	aml_buf_init(&b, 0);
	assert_int_equal(aml_scope_open(&b, "ABCD", &mark), 0);
	assert_int_equal(mark, 1);
	filler = malloc(body_len - 4);
	assert_non_null(filler);
	for (size_t i = 0; i < body_len - 4; i++)
		filler[i] = (uint8_t)(i * 7 + 3);
	assert_int_equal(aml_bytes(&b, filler, body_len - 4), 0);
	assert_int_equal(aml_close(&b, mark), 0);

	assert_int_equal(b.len, 1 + (size_t)width + body_len);
	assert_int_equal(b.data[0], 0x10);
	assert_int_equal(b.data[1] >> 6, width - 1);
	c = (struct amld_cursor){b.data, b.data + 1, b.data + b.len, &d};
	assert_int_equal(amld_pkglen(&c, &body_end), 0);
	assert_ptr_equal(body_end, b.data + b.len);
	assert_memory_equal(b.data + 1 + width, "ABCD", 4);
	assert_memory_equal(b.data + 1 + width + 4, filler, body_len - 4);
	free(filler);
	aml_buf_free(&b);
}

static void test_close_picks_pkglen_width(void **state)
{
	(void)state;
	check_scope_pkglen(62, 1);	/* PkgLength 63 */
	check_scope_pkglen(63, 2);	/* 64 would not fit one byte: 65 */
	check_scope_pkglen(4093, 2);	/* 4095 */
	check_scope_pkglen(4094, 3);	/* 4097 */
	check_scope_pkglen(0xFFFFC, 3); /* 0xFFFFF */
	check_scope_pkglen(0xFFFFD, 4); /* 1 MiB + 1 */
}

static void check_name(const char *path, const uint8_t *want, size_t len)
{
	struct aml_buf b;

	aml_buf_init(&b, 0);
	assert_int_equal(aml_namestring(&b, path), 0);
	expect_bytes(&b, want, len);
	aml_buf_free(&b);
}

static void test_namestrings(void **state)
{
	(void)state;
	check_name("_SB", BYTES('_', 'S', 'B', '_'));
	check_name("COM1", BYTES('C', 'O', 'M', '1'));
	check_name("\\", BYTES(0x5C, 0x00));
	check_name("", BYTES(0x00));
	check_name("\\_S5", BYTES(0x5C, '_', 'S', '5', '_'));
	check_name("\\_SB.COM1", BYTES(0x5C, 0x2E, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'));
	check_name("^^FOO", BYTES(0x5E, 0x5E, 'F', 'O', 'O', '_'));
	check_name("\\_SB.PCI0.S08", BYTES(0x5C, 0x2F, 0x03, '_', 'S', 'B', '_', 'P', 'C', 'I', '0',
					   'S', '0', '8', '_'));
	check_name("A.B.C.D", BYTES(0x2F, 0x04, 'A', '_', '_', '_', 'B', '_', '_', '_', 'C', '_',
				    '_', '_', 'D', '_', '_', '_'));
}

static void test_bad_names(void **state)
{
	static const char *const bad[] = {
	    "1ABC", "ABCDE", "abc", "A..B", "A.", ".A", "\\^A", "A B", "_SB.COM1.", "A-B",
	};
	struct aml_buf b;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		aml_buf_init(&b, 0);
		assert_int_equal(aml_namestring(&b, bad[i]), -EINVAL);
		assert_int_equal(b.error, -EINVAL);
		assert_int_equal(b.len, 0);
		aml_buf_free(&b);
	}
}

static void check_int(uint64_t v, const uint8_t *want, size_t len)
{
	struct aml_buf b;

	aml_buf_init(&b, 0);
	assert_int_equal(aml_int(&b, v), 0);
	expect_bytes(&b, want, len);
	aml_buf_free(&b);
}

static void test_integers_choose_shortest(void **state)
{
	(void)state;
	check_int(0, BYTES(0x00));
	check_int(1, BYTES(0x01));
	check_int(2, BYTES(0x0A, 0x02));
	check_int(0xFF, BYTES(0x0A, 0xFF));
	check_int(0x100, BYTES(0x0B, 0x00, 0x01));
	check_int(0xFFFF, BYTES(0x0B, 0xFF, 0xFF));
	check_int(0x10000, BYTES(0x0C, 0x00, 0x00, 0x01, 0x00));
	check_int(0xFFFFFFFF, BYTES(0x0C, 0xFF, 0xFF, 0xFF, 0xFF));
	check_int(0x100000000, BYTES(0x0E, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00));
	check_int(0x0123456789ABCDEF, BYTES(0x0E, 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01));
	check_int(UINT64_MAX - 1, BYTES(0x0E, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF));
	check_int(UINT64_MAX, BYTES(0xFF));
}

static void test_strings_and_buffers(void **state)
{
	struct aml_buf b;

	(void)state;
	aml_buf_init(&b, 0);
	aml_string(&b, "LNRO0005");
	expect_bytes(&b, BYTES(0x0D, 'L', 'N', 'R', 'O', '0', '0', '0', '5', 0x00));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_string(&b, "");
	expect_bytes(&b, BYTES(0x0D, 0x00));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	assert_int_equal(aml_string(&b, "caf\xc3\xa9"), -EINVAL);
	assert_int_equal(b.len, 0);
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_buffer(&b, (const uint8_t[]){1, 2, 3}, 3);
	expect_bytes(&b, BYTES(0x11, 0x06, 0x0A, 0x03, 0x01, 0x02, 0x03));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_buffer(&b, NULL, 0);
	expect_bytes(&b, BYTES(0x11, 0x02, 0x00));
	aml_buf_free(&b);
}

static void test_eisaid(void **state)
{
	static const char *const bad[] = {"pnp0501", "PNP050",	"PNP05011", "PNP050G",
					  "1NP0501", "PNP05a1", ""};
	struct aml_buf b;
	uint32_t v;

	(void)state;
	assert_int_equal(aml_eisaid_encode("PNP0501", &v), 0);
	assert_int_equal(v, 0x0105D041);
	assert_int_equal(aml_eisaid_encode("PNP0A03", &v), 0);
	assert_int_equal(v, 0x030AD041);
	assert_int_equal(aml_eisaid_encode("ZZZFFFF", &v), 0);
	assert_int_equal(v, 0xFFFF5A6B); /* 26,26,26 -> 0x6B5A, then FF FF */
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(aml_eisaid_encode(bad[i], &v), -EINVAL);

	aml_buf_init(&b, 0);
	aml_name_eisaid(&b, "_HID", "PNP0501");
	expect_bytes(&b, BYTES(0x08, '_', 'H', 'I', 'D', 0x0C, 0x41, 0xD0, 0x05, 0x01));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	assert_int_equal(aml_eisaid(&b, "PNP05011"), -EINVAL);
	aml_buf_free(&b);
}

static void test_names_scopes_devices(void **state)
{
	struct aml_buf b;
	size_t sb, dev;

	(void)state;
	aml_buf_init(&b, 0);
	aml_name_int(&b, "_UID", 1);
	aml_name_str(&b, "_HID", "AB");
	expect_bytes(&b, BYTES(0x08, '_', 'U', 'I', 'D', 0x01, 0x08, '_', 'H', 'I', 'D', 0x0D, 'A',
			       'B', 0x00));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_scope_open(&b, "\\_SB", &sb);
	aml_close(&b, sb);
	expect_bytes(&b, BYTES(0x10, 0x06, 0x5C, '_', 'S', 'B', '_'));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_scope_open(&b, "\\_SB", &sb);
	aml_device_open(&b, "COM1", &dev);
	aml_name_int(&b, "_UID", 1);
	aml_close(&b, dev);
	aml_close(&b, sb);
	expect_bytes(&b, BYTES(0x10, 0x13, 0x5C, '_', 'S', 'B', '_', 0x5B, 0x82, 0x0B, 'C', 'O',
			       'M', '1', 0x08, '_', 'U', 'I', 'D', 0x01));
	aml_buf_free(&b);
}

static void test_methods_and_packages(void **state)
{
	struct aml_buf b;
	size_t m, pkg;

	(void)state;
	aml_buf_init(&b, 0);
	aml_method_open(&b, "_STA", 0, false, &m);
	aml_return(&b);
	aml_int(&b, 0x0F);
	aml_close(&b, m);
	expect_bytes(&b, BYTES(0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xA4, 0x0A, 0x0F));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_method_open(&b, "FOO", 2, true, &m);
	aml_return(&b);
	aml_int(&b, 0);
	aml_close(&b, m);
	expect_bytes(&b, BYTES(0x14, 0x08, 'F', 'O', 'O', '_', 0x0A, 0xA4, 0x00));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_name(&b, "_S5");
	aml_package_open(&b, 4, &pkg);
	aml_int(&b, 5);
	aml_int(&b, 5);
	aml_int(&b, 0);
	aml_int(&b, 0);
	aml_close(&b, pkg);
	expect_bytes(&b, BYTES(0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05,
			       0x00, 0x00));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_package_open(&b, 0, &pkg);
	aml_close(&b, pkg);
	expect_bytes(&b, BYTES(0x12, 0x02, 0x00));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	assert_int_equal(aml_method_open(&b, "BAD", 8, false, &m), -EINVAL);
	aml_buf_free(&b);
	aml_buf_init(&b, 0);
	assert_int_equal(aml_package_open(&b, 256, &pkg), -E2BIG);
	aml_buf_free(&b);
	aml_buf_init(&b, 0);
	assert_int_equal(aml_package_open(&b, -1, &pkg), -EINVAL);
	aml_buf_free(&b);
}

static void test_control_flow(void **state)
{
	struct aml_buf b;
	size_t m, cond;

	(void)state;
	aml_buf_init(&b, 0);
	aml_arg(&b, 0);
	aml_arg(&b, 6);
	aml_lequal(&b);
	expect_bytes(&b, BYTES(0x68, 0x6E, 0x93));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_notify(&b, "\\_SB.VGEN", 0x80);
	expect_bytes(&b,
		     BYTES(0x86, 0x5C, 0x2E, '_', 'S', 'B', '_', 'V', 'G', 'E', 'N', 0x0A, 0x80));
	aml_buf_free(&b);

	/*
	 * Method(_EVT, 1, Serialized) { If (LEqual(Arg0, 23)) { Notify(\_SB.VGEN, 0x80) } }
	 * If: 4 (LEqual) + 11 (Notify + name) + 2 (value) = 17, PkgLength 18.
	 * Method: 4 (name) + 1 (flags) + 19 (If) = 24, PkgLength 25.
	 */
	aml_buf_init(&b, 0);
	aml_method_open(&b, "_EVT", 1, true, &m);
	aml_if_open(&b, &cond);
	aml_lequal(&b);
	aml_arg(&b, 0);
	aml_int(&b, 23);
	aml_notify(&b, "\\_SB.VGEN", 0x80);
	aml_close(&b, cond);
	aml_close(&b, m);
	expect_bytes(&b,
		     BYTES(0x14, 0x19, '_', 'E', 'V', 'T', 0x09, 0xA0, 0x12, 0x93, 0x68, 0x0A, 0x17,
			   0x86, 0x5C, 0x2E, '_', 'S', 'B', '_', 'V', 'G', 'E', 'N', 0x0A, 0x80));
	aml_buf_free(&b);

	/* An empty If still carries its PkgLength. */
	aml_buf_init(&b, 0);
	aml_if_open(&b, &cond);
	aml_int(&b, 1);
	aml_close(&b, cond);
	expect_bytes(&b, BYTES(0xA0, 0x02, 0x01));
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	assert_int_equal(aml_arg(&b, 7), -EINVAL);
	assert_int_equal(b.len, 0);
	aml_buf_free(&b);
	aml_buf_init(&b, 0);
	assert_int_equal(aml_arg(&b, -1), -EINVAL);
	aml_buf_free(&b);
	aml_buf_init(&b, 0);
	assert_int_equal(aml_notify(&b, "\\_SB.vgen", 0x80), -EINVAL);
	aml_buf_free(&b);
}

static void test_resource_descriptors(void **state)
{
	struct aml_buf rt;

	(void)state;
	aml_buf_init(&rt, 0);
	aml_rt_io(&rt, 0x3F8, 0x3F8, 1, 8);
	expect_bytes(&rt, BYTES(0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08));
	aml_buf_free(&rt);

	aml_buf_init(&rt, 0);
	aml_rt_irq_noflags(&rt, 4);
	aml_rt_irq_noflags(&rt, 15);
	aml_rt_irq_noflags(&rt, 0);
	expect_bytes(&rt, BYTES(0x22, 0x10, 0x00, 0x22, 0x00, 0x80, 0x22, 0x01, 0x00));
	aml_buf_free(&rt);

	aml_buf_init(&rt, 0);
	aml_rt_memory32_fixed(&rt, true, 0xD0000000, 0x1000);
	aml_rt_memory32_fixed(&rt, false, 0x12345678, 0x9ABCDEF0);
	expect_bytes(&rt,
		     BYTES(0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00,
			   0x86, 0x09, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12, 0xF0, 0xDE, 0xBC, 0x9A));
	aml_buf_free(&rt);

	aml_buf_init(&rt, 0);
	aml_rt_interrupt(&rt, AML_IRQ_CONSUMER | AML_IRQ_EDGE, 5);
	aml_rt_interrupt(&rt, AML_IRQ_ACTIVE_LOW | AML_IRQ_SHARED, 0x01020304);
	expect_bytes(&rt, BYTES(0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00, 0x89, 0x06,
				0x00, 0x0C, 0x01, 0x04, 0x03, 0x02, 0x01));
	aml_buf_free(&rt);

	aml_buf_init(&rt, 0);
	assert_int_equal(aml_rt_irq_noflags(&rt, 16), -EINVAL);
	aml_buf_free(&rt);
	aml_buf_init(&rt, 0);
	assert_int_equal(aml_rt_interrupt(&rt, 0x20, 5), -EINVAL);
	aml_buf_free(&rt);
	aml_buf_init(&rt, 0);
	assert_int_equal(aml_rt_io(&rt, 0x3F8, 0x2F8, 1, 8), -EINVAL);
	aml_buf_free(&rt);
}

static void test_resource_template_checksum(void **state)
{
	struct aml_buf rt, b;
	uint8_t sum = 0;

	(void)state;
	/* IO bytes sum to 0x247, IRQ to 0x32, EndTag 0x79: 0x2F2, so 0x0E balances it. */
	aml_buf_init(&rt, 0);
	aml_rt_io(&rt, 0x3F8, 0x3F8, 1, 8);
	aml_rt_irq_noflags(&rt, 4);
	aml_buf_init(&b, 0);
	aml_name(&b, "_CRS");
	assert_int_equal(aml_resource_template(&b, &rt), 0);
	expect_bytes(&b, BYTES(0x08, '_', 'C', 'R', 'S', 0x11, 0x10, 0x0A, 0x0D, 0x47, 0x01, 0xF8,
			       0x03, 0xF8, 0x03, 0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x0E));
	for (size_t i = 0; i < rt.len; i++)
		sum = (uint8_t)(sum + rt.data[i]);
	assert_int_equal(sum, 0);
	aml_buf_free(&rt);
	aml_buf_free(&b);

	/* An empty template is just the EndTag: 0x79 + 0x87 = 0x100. */
	aml_buf_init(&rt, 0);
	aml_rt_end(&rt);
	expect_bytes(&rt, BYTES(0x79, 0x87));
	aml_buf_free(&rt);

	/* A failure inside the template reaches the table it goes into. */
	aml_buf_init(&rt, 0);
	aml_buf_init(&b, 0);
	aml_rt_irq_noflags(&rt, 99);
	assert_int_equal(aml_resource_template(&b, &rt), -EINVAL);
	assert_int_equal(b.error, -EINVAL);
	assert_int_equal(b.len, 0);
	aml_buf_free(&rt);
	aml_buf_free(&b);
}

static void test_errors_are_sticky(void **state)
{
	struct aml_buf b;
	size_t mark;

	(void)state;
	aml_buf_init(&b, 0);
	aml_int(&b, 7);
	assert_int_equal(aml_namestring(&b, "bad"), -EINVAL);
	assert_int_equal(aml_int(&b, 1), -EINVAL);
	assert_int_equal(aml_scope_open(&b, "_SB", &mark), -EINVAL);
	assert_int_equal(aml_close(&b, mark), -EINVAL);
	assert_int_equal(b.len, 2); /* only the first integer */
	aml_buf_free(&b);

	aml_buf_init(&b, 0);
	aml_int(&b, 7);
	assert_int_equal(aml_close(&b, 3), -EINVAL); /* mark past the end */
	aml_buf_free(&b);
}

static void test_limit_gives_e2big(void **state)
{
	struct aml_buf b;
	size_t mark;

	(void)state;
	aml_buf_init(&b, 8);
	assert_int_equal(aml_bytes(&b, "12345678", 8), 0);
	assert_int_equal(aml_byte(&b, 9), -E2BIG);
	assert_int_equal(b.len, 8);
	aml_buf_free(&b);

	/* The PkgLength inserted by aml_close() counts against the limit too. */
	aml_buf_init(&b, 6);
	aml_scope_open(&b, "ABCD", &mark);
	assert_int_equal(b.len, 5);
	assert_int_equal(aml_close(&b, mark), 0);
	assert_int_equal(b.len, 6);
	aml_buf_free(&b);
	aml_buf_init(&b, 5);
	aml_scope_open(&b, "ABCD", &mark);
	assert_int_equal(aml_close(&b, mark), -E2BIG);
	aml_buf_free(&b);
}

/* The decoder the ACPI tests rely on reads back what the encoder wrote. */
static void test_decoder_round_trip(void **state)
{
	const struct amld_node *n;
	struct aml_buf b, rt;
	size_t sb, dev, m, pkg, cond;
	struct amld_cursor c;
	struct amld_res res;
	struct amld *d;
	char path[AMLD_PATH_MAX];

	(void)state;
	d = calloc(1, sizeof(*d));
	assert_non_null(d);
	aml_buf_init(&b, 0);
	aml_scope_open(&b, "\\_SB", &sb);
	aml_device_open(&b, "DEV0", &dev);
	aml_name_eisaid(&b, "_HID", "PNP0A03");
	aml_name_int(&b, "^VAL", 0x123456789);
	aml_method_open(&b, "_STA", 0, false, &m);
	aml_return(&b);
	aml_int(&b, 0x0F);
	aml_close(&b, m);
	aml_buf_init(&rt, 0);
	aml_rt_memory32_fixed(&rt, true, 0xFEB00000, 0x200);
	aml_rt_interrupt(&rt, AML_IRQ_CONSUMER, 9);
	aml_name(&b, "_CRS");
	aml_resource_template(&b, &rt);
	aml_close(&b, dev);
	aml_method_open(&b, "_EVT", 1, true, &m);
	aml_if_open(&b, &cond);
	aml_lequal(&b);
	aml_arg(&b, 0);
	aml_int(&b, 5);
	aml_notify(&b, "DEV0", 0x80);
	aml_close(&b, cond);
	aml_close(&b, m);
	aml_close(&b, sb);
	aml_name(&b, "\\_SB.PKG");
	aml_package_open(&b, 3, &pkg);
	aml_int(&b, 1);
	aml_int(&b, 300);
	aml_int(&b, UINT64_MAX);
	aml_close(&b, pkg);
	assert_int_equal(b.error, 0);

	assert_int_equal(amld_decode(b.data, b.len, d), 0);
	assert_int_equal(d->nr_nodes, 8);
	n = amld_find(d, "\\_SB_.DEV0");
	assert_non_null(n);
	assert_int_equal(n->kind, AMLD_DEVICE);
	n = amld_find(d, "\\_SB_.DEV0._HID");
	assert_non_null(n);
	assert_int_equal(n->value.opcode, 0x0C);
	assert_int_equal(n->value.integer, 0x030AD041);
	n = amld_find(d, "\\_SB_.VAL_");
	assert_non_null(n);
	assert_int_equal(n->value.integer, 0x123456789);
	n = amld_find(d, "\\_SB_.DEV0._STA");
	assert_non_null(n);
	assert_int_equal(n->kind, AMLD_METHOD);
	assert_true(n->method_returns);
	assert_int_equal(n->value.integer, 0x0F);
	n = amld_find(d, "\\_SB_._EVT");
	assert_non_null(n);
	assert_int_equal(n->kind, AMLD_METHOD);
	assert_false(n->method_returns);
	assert_int_equal(n->method_flags, 0x09);
	assert_int_equal(n->method_body_len, 13);
	assert_memory_equal(n->method_body,
			    ((const uint8_t[]){0xA0, 0x0C, 0x93, 0x68, 0x0A, 0x05, 0x86, 'D', 'E',
					       'V', '0', 0x0A, 0x80}),
			    13);
	/* "DEV0" from inside \_SB._EVT is found one level up, by the search rules. */
	c = (struct amld_cursor){n->method_body, n->method_body + 7,
				 n->method_body + n->method_body_len, d};
	assert_int_equal(amld_reference(&c, d, "\\_SB_._EVT", path), 0);
	assert_string_equal(path, "\\_SB_.DEV0");
	c.p = n->method_body + 7;
	assert_int_equal(amld_reference(&c, d, "\\", path), 0);
	assert_string_equal(path, "\\DEV0"); /* the search never goes down: unresolved */
	n = amld_find(d, "\\_SB_.PKG_");
	assert_non_null(n);
	assert_int_equal(n->value.type, AMLD_PKG);
	assert_int_equal(n->value.pkg_count, 3);
	assert_int_equal(n->value.pkg[1], 300);
	assert_true(n->value.pkg[2] == UINT64_MAX);
	n = amld_find(d, "\\_SB_.DEV0._CRS");
	assert_non_null(n);
	assert_int_equal(n->value.type, AMLD_BUF);
	assert_int_equal(amld_resources(n->value.buf, n->value.buf_len, &res), 0);
	assert_true(res.sums_to_zero);
	assert_int_equal(res.nr_mem32, 1);
	assert_int_equal(res.mem32_base, 0xFEB00000);
	assert_int_equal(res.mem32_size, 0x200);
	assert_int_equal(res.nr_ext_irq, 1);
	assert_int_equal(res.ext_irq_flags, AML_IRQ_CONSUMER);
	assert_int_equal(res.ext_irq[0], 9);

	/* Negative controls: the decoder notices a PkgLength that is off by one. */
	b.data[1]++;
	assert_int_equal(amld_decode(b.data, b.len, d), -EINVAL);
	b.data[1] -= 2;
	assert_int_equal(amld_decode(b.data, b.len, d), -EINVAL);
	b.data[1]++;
	assert_int_equal(amld_decode(b.data, b.len - 1, d), -EINVAL);
	assert_int_equal(amld_decode(b.data, b.len, d), 0);

	aml_buf_free(&rt);
	aml_buf_free(&b);
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pkglen_encode),
	    cmocka_unit_test(test_close_picks_pkglen_width),
	    cmocka_unit_test(test_namestrings),
	    cmocka_unit_test(test_bad_names),
	    cmocka_unit_test(test_integers_choose_shortest),
	    cmocka_unit_test(test_strings_and_buffers),
	    cmocka_unit_test(test_eisaid),
	    cmocka_unit_test(test_names_scopes_devices),
	    cmocka_unit_test(test_methods_and_packages),
	    cmocka_unit_test(test_control_flow),
	    cmocka_unit_test(test_resource_descriptors),
	    cmocka_unit_test(test_resource_template_checksum),
	    cmocka_unit_test(test_errors_are_sticky),
	    cmocka_unit_test(test_limit_gives_e2big),
	    cmocka_unit_test(test_decoder_round_trip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
