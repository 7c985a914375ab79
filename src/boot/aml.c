/* SPDX-License-Identifier: MIT */
/*
 * AML encoding after the ACPI 6.x specification, chapter 20 ("ACPI Machine
 * Language Specification") and section 6.4 (resource data types).
 */
#include "boot/aml.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum {
	AML_ZERO_OP = 0x00,
	AML_ONE_OP = 0x01,
	AML_NAME_OP = 0x08,
	AML_BYTE_PREFIX = 0x0A,
	AML_WORD_PREFIX = 0x0B,
	AML_DWORD_PREFIX = 0x0C,
	AML_STRING_PREFIX = 0x0D,
	AML_QWORD_PREFIX = 0x0E,
	AML_SCOPE_OP = 0x10,
	AML_BUFFER_OP = 0x11,
	AML_PACKAGE_OP = 0x12,
	AML_METHOD_OP = 0x14,
	AML_DUAL_NAME_PREFIX = 0x2E,
	AML_MULTI_NAME_PREFIX = 0x2F,
	AML_EXT_OP_PREFIX = 0x5B,
	AML_ROOT_CHAR = 0x5C,
	AML_PARENT_PREFIX_CHAR = 0x5E,
	AML_ARG0_OP = 0x68,
	AML_NOTIFY_OP = 0x86,
	AML_LEQUAL_OP = 0x93,
	AML_IF_OP = 0xA0,
	AML_RETURN_OP = 0xA4,
	AML_ONES_OP = 0xFF,
	AML_EXT_DEVICE_OP = 0x82,
};

/* Resource descriptor tags (ACPI 6.4.2, 6.4.3). */
enum {
	RD_IRQ_NOFLAGS = 0x22, /* small item 0x04, length 2 */
	RD_IO = 0x47,	       /* small item 0x08, length 7 */
	RD_END_TAG = 0x79,     /* small item 0x0F, length 1 */
	RD_MEMORY32_FIXED = 0x86,
	RD_EXT_INTERRUPT = 0x89,
};

static int fail(struct aml_buf *b, int error)
{
	if (!b->error)
		b->error = error;
	return b->error;
}

void aml_buf_init(struct aml_buf *b, size_t limit)
{
	memset(b, 0, sizeof(*b));
	b->limit = limit ? limit : AML_PKGLEN_MAX;
}

void aml_buf_free(struct aml_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

static int reserve(struct aml_buf *b, size_t more)
{
	size_t want, cap;
	uint8_t *data;

	if (b->error)
		return b->error;
	if (more > b->limit - b->len)
		return fail(b, -E2BIG);
	want = b->len + more;
	if (want <= b->cap)
		return 0;
	cap = b->cap ? b->cap : 256;
	while (cap < want)
		cap *= 2;
	if (cap > b->limit)
		cap = b->limit;
	data = realloc(b->data, cap);
	if (!data)
		return fail(b, -ENOMEM);
	b->data = data;
	b->cap = cap;
	return 0;
}

int aml_bytes(struct aml_buf *b, const void *bytes, size_t len)
{
	int ret = reserve(b, len);

	if (ret)
		return ret;
	if (len)
		memcpy(b->data + b->len, bytes, len);
	b->len += len;
	return 0;
}

int aml_byte(struct aml_buf *b, uint8_t byte)
{
	return aml_bytes(b, &byte, 1);
}

static int put_le(struct aml_buf *b, uint64_t value, int nbytes)
{
	uint8_t le[8];

	for (int i = 0; i < nbytes; i++)
		le[i] = (uint8_t)(value >> (8 * i));
	return aml_bytes(b, le, (size_t)nbytes);
}

int aml_pkglen_encode(uint32_t len, uint8_t out[4])
{
	int follow;

	if (len <= 0x3F) {
		out[0] = (uint8_t)len;
		return 1;
	}
	if (len > AML_PKGLEN_MAX)
		return -E2BIG;
	/* Lead byte: bits 7-6 count the bytes that follow, bits 3-0 the low nibble. */
	follow = len <= 0xFFF ? 1 : len <= 0xFFFFF ? 2 : 3;
	out[0] = (uint8_t)(follow << 6 | (len & 0x0F));
	for (int i = 1; i <= follow; i++)
		out[i] = (uint8_t)(len >> (4 + 8 * (i - 1)));
	return 1 + follow;
}

/* A NameSeg: 1-4 characters, leading [A-Z_], then [A-Z0-9_], padded with '_'. */
static int encode_seg(const char *s, size_t n, uint8_t out[4])
{
	if (n < 1 || n > 4)
		return -EINVAL;
	for (size_t i = 0; i < 4; i++) {
		char c = i < n ? s[i] : '_';
		bool lead_ok = (c >= 'A' && c <= 'Z') || c == '_';

		if (!lead_ok && (i == 0 || c < '0' || c > '9'))
			return -EINVAL;
		out[i] = (uint8_t)c;
	}
	return 0;
}

int aml_namestring(struct aml_buf *b, const char *path)
{
	const char *segs, *p;
	uint8_t seg[4];
	size_t count = 1;

	if (b->error)
		return b->error;
	segs = path;
	if (*segs == '\\')
		segs++;
	else
		while (*segs == '^')
			segs++;
	if (*segs) {
		for (p = segs;; p++) {
			size_t n = strcspn(p, ".");

			if (encode_seg(p, n, seg))
				return fail(b, -EINVAL);
			p += n;
			if (!*p)
				break;
			count++;
		}
		if (count > 255)
			return fail(b, -EINVAL);
	}
	/* Prefix characters are ASCII '\\' (0x5C) and '^' (0x5E) themselves. */
	aml_bytes(b, path, (size_t)(segs - path));
	if (!*segs)
		return aml_byte(b, AML_ZERO_OP); /* NullName */
	if (count == 2) {
		aml_byte(b, AML_DUAL_NAME_PREFIX);
	} else if (count > 2) {
		aml_byte(b, AML_MULTI_NAME_PREFIX);
		aml_byte(b, (uint8_t)count);
	}
	for (p = segs;; p++) {
		size_t n = strcspn(p, ".");

		encode_seg(p, n, seg);
		aml_bytes(b, seg, 4);
		p += n;
		if (!*p)
			break;
	}
	return b->error;
}

int aml_int(struct aml_buf *b, uint64_t value)
{
	if (value == 0)
		return aml_byte(b, AML_ZERO_OP);
	if (value == 1)
		return aml_byte(b, AML_ONE_OP);
	if (value == UINT64_MAX)
		return aml_byte(b, AML_ONES_OP);
	if (value <= UINT8_MAX) {
		aml_byte(b, AML_BYTE_PREFIX);
		return put_le(b, value, 1);
	}
	if (value <= UINT16_MAX) {
		aml_byte(b, AML_WORD_PREFIX);
		return put_le(b, value, 2);
	}
	if (value <= UINT32_MAX) {
		aml_byte(b, AML_DWORD_PREFIX);
		return put_le(b, value, 4);
	}
	aml_byte(b, AML_QWORD_PREFIX);
	return put_le(b, value, 8);
}

int aml_string(struct aml_buf *b, const char *s)
{
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] > 0x7F)
			return fail(b, -EINVAL);
	aml_byte(b, AML_STRING_PREFIX);
	return aml_bytes(b, s, n + 1);
}

int aml_close(struct aml_buf *b, size_t mark)
{
	static const size_t pkglen_max[5] = {0, 0x3F, 0xFFF, 0xFFFFF, AML_PKGLEN_MAX};
	uint8_t enc[4];
	size_t body;
	int n;

	if (b->error)
		return b->error;
	if (mark > b->len)
		return fail(b, -EINVAL);
	body = b->len - mark;
	/* The PkgLength counts its own bytes, so try each width in turn. */
	for (n = 1; n <= 4; n++)
		if (body + (size_t)n <= pkglen_max[n])
			break;
	if (n > 4)
		return fail(b, -E2BIG);
	if (reserve(b, (size_t)n))
		return b->error;
	aml_pkglen_encode((uint32_t)(body + (size_t)n), enc);
	memmove(b->data + mark + n, b->data + mark, body);
	memcpy(b->data + mark, enc, (size_t)n);
	b->len += (size_t)n;
	return 0;
}

int aml_buffer(struct aml_buf *b, const void *bytes, size_t len)
{
	size_t mark;

	aml_byte(b, AML_BUFFER_OP);
	mark = b->len;
	aml_int(b, len);
	aml_bytes(b, bytes, len);
	return aml_close(b, mark);
}

int aml_eisaid_encode(const char *id, uint32_t *out)
{
	uint32_t v = 0;

	if (strlen(id) != 7)
		return -EINVAL;
	/* Three letters in 5 bits each ('A' = 1), then four hex digits. */
	for (int i = 0; i < 3; i++) {
		if (id[i] < 'A' || id[i] > 'Z')
			return -EINVAL;
		v = v << 5 | (uint32_t)(id[i] - '@');
	}
	for (int i = 3; i < 7; i++) {
		char c = id[i];
		uint32_t d;

		if (c >= '0' && c <= '9')
			d = (uint32_t)(c - '0');
		else if (c >= 'A' && c <= 'F')
			d = (uint32_t)(c - 'A' + 10);
		else
			return -EINVAL;
		v = v << 4 | d;
	}
	/* The 32-bit id is stored big-endian: swap to the integer ACPI reads. */
	*out = __builtin_bswap32(v);
	return 0;
}

int aml_eisaid(struct aml_buf *b, const char *id)
{
	uint32_t v;

	if (aml_eisaid_encode(id, &v))
		return fail(b, -EINVAL);
	aml_byte(b, AML_DWORD_PREFIX);
	return put_le(b, v, 4);
}

int aml_name(struct aml_buf *b, const char *name)
{
	aml_byte(b, AML_NAME_OP);
	return aml_namestring(b, name);
}

int aml_name_int(struct aml_buf *b, const char *name, uint64_t value)
{
	aml_name(b, name);
	return aml_int(b, value);
}

int aml_name_str(struct aml_buf *b, const char *name, const char *s)
{
	aml_name(b, name);
	return aml_string(b, s);
}

int aml_name_eisaid(struct aml_buf *b, const char *name, const char *id)
{
	aml_name(b, name);
	return aml_eisaid(b, id);
}

int aml_scope_open(struct aml_buf *b, const char *name, size_t *mark)
{
	aml_byte(b, AML_SCOPE_OP);
	*mark = b->len;
	return aml_namestring(b, name);
}

int aml_device_open(struct aml_buf *b, const char *name, size_t *mark)
{
	aml_byte(b, AML_EXT_OP_PREFIX);
	aml_byte(b, AML_EXT_DEVICE_OP);
	*mark = b->len;
	return aml_namestring(b, name);
}

int aml_method_open(struct aml_buf *b, const char *name, int nargs, bool serialized, size_t *mark)
{
	*mark = b->len;
	if (nargs < 0 || nargs > 7)
		return fail(b, -EINVAL);
	aml_byte(b, AML_METHOD_OP);
	*mark = b->len;
	aml_namestring(b, name);
	/* MethodFlags: bits 2-0 ArgCount, bit 3 SerializeFlag, bits 7-4 SyncLevel. */
	return aml_byte(b, (uint8_t)(nargs | (serialized ? 0x08 : 0)));
}

int aml_package_open(struct aml_buf *b, int count, size_t *mark)
{
	*mark = b->len;
	if (count < 0)
		return fail(b, -EINVAL);
	if (count > 255) /* would need VarPackageOp */
		return fail(b, -E2BIG);
	aml_byte(b, AML_PACKAGE_OP);
	*mark = b->len;
	return aml_byte(b, (uint8_t)count);
}

int aml_return(struct aml_buf *b)
{
	return aml_byte(b, AML_RETURN_OP);
}

int aml_if_open(struct aml_buf *b, size_t *mark)
{
	aml_byte(b, AML_IF_OP);
	*mark = b->len;
	return b->error;
}

int aml_lequal(struct aml_buf *b)
{
	return aml_byte(b, AML_LEQUAL_OP);
}

int aml_arg(struct aml_buf *b, int index)
{
	if (index < 0 || index > 6)
		return fail(b, -EINVAL);
	return aml_byte(b, (uint8_t)(AML_ARG0_OP + index));
}

int aml_notify(struct aml_buf *b, const char *path, uint64_t value)
{
	aml_byte(b, AML_NOTIFY_OP);
	aml_namestring(b, path);
	return aml_int(b, value);
}

int aml_rt_io(struct aml_buf *rt, uint16_t min, uint16_t max, uint8_t align, uint8_t len)
{
	if (min > max)
		return fail(rt, -EINVAL);
	aml_byte(rt, RD_IO);
	aml_byte(rt, 0x01); /* Decode16 */
	put_le(rt, min, 2);
	put_le(rt, max, 2);
	aml_byte(rt, align);
	return aml_byte(rt, len);
}

int aml_rt_irq_noflags(struct aml_buf *rt, unsigned int irq)
{
	if (irq > 15)
		return fail(rt, -EINVAL);
	aml_byte(rt, RD_IRQ_NOFLAGS);
	return put_le(rt, 1u << irq, 2);
}

int aml_rt_memory32_fixed(struct aml_buf *rt, bool writable, uint32_t base, uint32_t size)
{
	aml_byte(rt, RD_MEMORY32_FIXED);
	put_le(rt, 9, 2); /* length of the data that follows */
	aml_byte(rt, writable ? 0x01 : 0x00);
	put_le(rt, base, 4);
	return put_le(rt, size, 4);
}

int aml_rt_interrupt(struct aml_buf *rt, unsigned int flags, uint32_t gsi)
{
	if (flags & ~0x1Fu)
		return fail(rt, -EINVAL);
	aml_byte(rt, RD_EXT_INTERRUPT);
	put_le(rt, 6, 2); /* flags, table length, one 32-bit interrupt number */
	aml_byte(rt, (uint8_t)flags);
	aml_byte(rt, 1);
	return put_le(rt, gsi, 4);
}

int aml_rt_end(struct aml_buf *rt)
{
	uint8_t sum = RD_END_TAG;

	if (rt->error)
		return rt->error;
	for (size_t i = 0; i < rt->len; i++)
		sum = (uint8_t)(sum + rt->data[i]);
	aml_byte(rt, RD_END_TAG);
	return aml_byte(rt, (uint8_t)-sum);
}

int aml_resource_template(struct aml_buf *b, struct aml_buf *rt)
{
	if (aml_rt_end(rt))
		return fail(b, rt->error);
	return aml_buffer(b, rt->data, rt->len);
}
