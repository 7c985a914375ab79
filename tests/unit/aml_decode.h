/* SPDX-License-Identifier: MIT */
/*
 * Test-only AML decoder for the subset src/boot/aml.c emits: Scope, Device,
 * Method, Name, integers, strings, buffers and packages of integers; plus a
 * resource template parser. A Method body that is a single Return is
 * decoded; any other body is kept as raw bytes for the test to inspect. It is strict:
 * any PkgLength that overruns its parent, unknown opcode, bad NameSeg or
 * trailing byte is an error, so a test that decodes a table also checks that
 * the encoder's lengths are consistent. Header-only because the Makefile
 * links every tests/unit/test_*.c on its own.
 */
#ifndef FORKD_TESTS_AML_DECODE_H
#define FORKD_TESTS_AML_DECODE_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define AMLD_MAX_NODES 512
#define AMLD_MAX_PKG   16
#define AMLD_PATH_MAX  128

enum amld_type { AMLD_INT, AMLD_STR, AMLD_BUF, AMLD_PKG };

struct amld_value {
	enum amld_type type;
	uint8_t opcode; /* first byte, e.g. 0x0C for a DWord constant */
	uint64_t integer;
	const char *str; /* into the AML, NUL-terminated there */
	const uint8_t *buf;
	size_t buf_len;
	int pkg_count;
	uint64_t pkg[AMLD_MAX_PKG];
};

enum amld_kind { AMLD_SCOPE, AMLD_DEVICE, AMLD_METHOD, AMLD_NAME };

struct amld_node {
	enum amld_kind kind;
	char path[AMLD_PATH_MAX]; /* absolute: "\\_SB_.VR00._HID" */
	struct amld_value value;  /* a Name's object, or what a Method returns */
	uint8_t method_flags;
	bool method_returns;	    /* the body is Return(value) */
	const uint8_t *method_body; /* after MethodFlags, into the AML */
	size_t method_body_len;
};

struct amld {
	int nr_nodes;
	size_t error_offset; /* where decoding stopped on failure */
	struct amld_node nodes[AMLD_MAX_NODES];
};

struct amld_cursor {
	const uint8_t *base, *p, *end;
	struct amld *out;
};

static inline uint64_t amld_le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static inline int amld_fail(struct amld_cursor *c)
{
	c->out->error_offset = (size_t)(c->p - c->base);
	return -EINVAL;
}

/* Sets *body_end to the end of the construct whose PkgLength starts at c->p. */
static inline int amld_pkglen(struct amld_cursor *c, const uint8_t **body_end)
{
	const uint8_t *start = c->p;
	uint32_t len;
	int follow;

	if (c->p >= c->end)
		return amld_fail(c);
	follow = *c->p >> 6;
	if (c->end - c->p < 1 + follow)
		return amld_fail(c);
	if (follow == 0) {
		len = *c->p & 0x3F;
	} else {
		if (*c->p & 0x30)
			return amld_fail(c);
		len = *c->p & 0x0F;
		for (int i = 1; i <= follow; i++)
			len |= (uint32_t)c->p[i] << (4 + 8 * (i - 1));
	}
	if (len < (uint32_t)(1 + follow) || len > (size_t)(c->end - start))
		return amld_fail(c);
	c->p += 1 + follow;
	*body_end = start + len;
	return 0;
}

static inline int amld_seg(struct amld_cursor *c, char *path)
{
	size_t n = strlen(path);

	if (c->end - c->p < 4 || n + 6 > AMLD_PATH_MAX)
		return amld_fail(c);
	for (int i = 0; i < 4; i++) {
		char ch = (char)c->p[i];
		bool ok =
		    (ch >= 'A' && ch <= 'Z') || ch == '_' || (i > 0 && ch >= '0' && ch <= '9');

		if (!ok)
			return amld_fail(c);
	}
	if (strcmp(path, "\\") != 0)
		path[n++] = '.';
	memcpy(path + n, c->p, 4);
	path[n + 4] = '\0';
	c->p += 4;
	return 0;
}

/* Resolves a NameString against scope into an absolute path. */
static inline int amld_namestring(struct amld_cursor *c, const char *scope, char *path)
{
	int count = 1;

	if (c->p >= c->end)
		return amld_fail(c);
	snprintf(path, AMLD_PATH_MAX, "%s", scope);
	if (*c->p == '\\') {
		strcpy(path, "\\");
		c->p++;
	} else {
		while (c->p < c->end && *c->p == '^') {
			char *dot = strrchr(path, '.');

			if (strcmp(path, "\\") == 0)
				return amld_fail(c);
			if (dot)
				*dot = '\0';
			else
				strcpy(path, "\\");
			c->p++;
		}
	}
	if (c->p >= c->end)
		return amld_fail(c);
	if (*c->p == 0x00) {
		c->p++;
		return 0;
	}
	if (*c->p == 0x2E) {
		count = 2;
		c->p++;
	} else if (*c->p == 0x2F) {
		if (c->end - c->p < 2 || c->p[1] < 3)
			return amld_fail(c);
		count = c->p[1];
		c->p += 2;
	}
	for (int i = 0; i < count; i++)
		if (amld_seg(c, path))
			return -EINVAL;
	return 0;
}

static inline int amld_data(struct amld_cursor *c, struct amld_value *v)
{
	static const int int_width[] = {[0x0A] = 1, [0x0B] = 2, [0x0C] = 4, [0x0E] = 8};
	const uint8_t *body_end;
	uint8_t op;

	if (c->p >= c->end)
		return amld_fail(c);
	memset(v, 0, sizeof(*v));
	op = *c->p++;
	v->opcode = op;
	switch (op) {
	case 0x00:
	case 0x01:
		v->type = AMLD_INT;
		v->integer = op;
		return 0;
	case 0xFF:
		v->type = AMLD_INT;
		v->integer = UINT64_MAX;
		return 0;
	case 0x0A:
	case 0x0B:
	case 0x0C:
	case 0x0E:
		if (c->end - c->p < int_width[op])
			return amld_fail(c);
		v->type = AMLD_INT;
		v->integer = amld_le(c->p, int_width[op]);
		c->p += int_width[op];
		return 0;
	case 0x0D:
		v->type = AMLD_STR;
		v->str = (const char *)c->p;
		while (c->p < c->end && *c->p != 0) {
			if (*c->p > 0x7F)
				return amld_fail(c);
			c->p++;
		}
		if (c->p >= c->end)
			return amld_fail(c);
		c->p++;
		return 0;
	case 0x11: {
		struct amld_value size;
		struct amld_cursor sub;

		if (amld_pkglen(c, &body_end))
			return -EINVAL;
		sub = (struct amld_cursor){c->base, c->p, body_end, c->out};
		if (amld_data(&sub, &size) || size.type != AMLD_INT)
			return amld_fail(&sub);
		/* Our subset: the initializer fills the whole buffer. */
		if (size.integer != (uint64_t)(body_end - sub.p))
			return amld_fail(&sub);
		v->type = AMLD_BUF;
		v->buf = sub.p;
		v->buf_len = (size_t)size.integer;
		c->p = body_end;
		return 0;
	}
	case 0x12: {
		struct amld_cursor sub;
		int count;

		if (amld_pkglen(c, &body_end))
			return -EINVAL;
		sub = (struct amld_cursor){c->base, c->p, body_end, c->out};
		if (sub.p >= sub.end)
			return amld_fail(&sub);
		count = *sub.p++;
		if (count > AMLD_MAX_PKG)
			return amld_fail(&sub);
		v->type = AMLD_PKG;
		v->pkg_count = count;
		for (int i = 0; i < count; i++) {
			struct amld_value e;

			if (amld_data(&sub, &e))
				return -EINVAL;
			if (e.type != AMLD_INT)
				return amld_fail(&sub);
			v->pkg[i] = e.integer;
		}
		if (sub.p != body_end)
			return amld_fail(&sub);
		c->p = body_end;
		return 0;
	}
	default:
		c->p--;
		return amld_fail(c);
	}
}

static inline struct amld_node *amld_add(struct amld_cursor *c, enum amld_kind kind,
					 const char *path)
{
	struct amld_node *n;

	if (c->out->nr_nodes >= AMLD_MAX_NODES)
		return NULL;
	n = &c->out->nodes[c->out->nr_nodes++];
	memset(n, 0, sizeof(*n));
	n->kind = kind;
	snprintf(n->path, sizeof(n->path), "%s", path);
	return n;
}

static inline int amld_termlist(struct amld_cursor *c, const char *scope)
{
	while (c->p < c->end) {
		char path[AMLD_PATH_MAX];
		const uint8_t *body_end;
		struct amld_cursor sub;
		struct amld_node *n;
		enum amld_kind kind;
		uint8_t op = *c->p++;

		if (op == 0x08) {
			if (amld_namestring(c, scope, path))
				return -EINVAL;
			n = amld_add(c, AMLD_NAME, path);
			if (!n || amld_data(c, &n->value))
				return amld_fail(c);
			continue;
		}
		if (op == 0x10) {
			kind = AMLD_SCOPE;
		} else if (op == 0x14) {
			kind = AMLD_METHOD;
		} else if (op == 0x5B && c->p < c->end && *c->p == 0x82) {
			kind = AMLD_DEVICE;
			c->p++;
		} else {
			c->p--;
			return amld_fail(c);
		}
		if (amld_pkglen(c, &body_end))
			return -EINVAL;
		sub = (struct amld_cursor){c->base, c->p, body_end, c->out};
		if (amld_namestring(&sub, scope, path))
			return -EINVAL;
		n = amld_add(c, kind, path);
		if (!n)
			return amld_fail(c);
		if (kind == AMLD_METHOD) {
			if (sub.p >= sub.end)
				return amld_fail(&sub);
			n->method_flags = *sub.p++;
			n->method_body = sub.p;
			n->method_body_len = (size_t)(sub.end - sub.p);
			if (sub.p < sub.end && *sub.p == 0xA4) {
				sub.p++;
				if (amld_data(&sub, &n->value) || sub.p != sub.end)
					return amld_fail(&sub);
				n->method_returns = true;
			}
		} else if (amld_termlist(&sub, path)) {
			return -EINVAL;
		}
		c->p = body_end;
	}
	return 0;
}

/* Decodes a whole AML TermList (a DSDT body without its 36-byte header). */
static inline int amld_decode(const uint8_t *aml, size_t len, struct amld *out)
{
	struct amld_cursor c = {aml, aml, aml + len, out};

	out->nr_nodes = 0;
	out->error_offset = 0;
	return amld_termlist(&c, "\\");
}

static inline const struct amld_node *amld_find(const struct amld *d, const char *path)
{
	for (int i = 0; i < d->nr_nodes; i++)
		if (strcmp(d->nodes[i].path, path) == 0)
			return &d->nodes[i];
	return NULL;
}

/*
 * Reads a NameString used as a reference from code in scope (a method's
 * path) and resolves it against the decoded nodes d. A lone NameSeg follows
 * the namespace search rules (scope, then each parent up to the root),
 * because iasl shortens "\_SB.VGEN" to "VGEN" where that finds the same
 * object. path is the resolved absolute path, or the unresolved one.
 */
static inline int amld_reference(struct amld_cursor *c, struct amld *d, const char *scope,
				 char *path)
{
	const uint8_t *start = c->p;
	char parent[AMLD_PATH_MAX];
	bool lone_seg;

	lone_seg = c->p < c->end && *c->p != '\\' && *c->p != '^' && *c->p != 0x00 &&
		   *c->p != 0x2E && *c->p != 0x2F;
	if (amld_namestring(c, scope, path))
		return -EINVAL;
	if (!lone_seg || amld_find(d, path))
		return 0;
	snprintf(parent, sizeof(parent), "%s", scope);
	while (strcmp(parent, "\\") != 0) {
		struct amld_cursor again = {c->base, start, c->end, d};
		char *dot = strrchr(parent, '.');

		if (dot)
			*dot = '\0';
		else
			strcpy(parent, "\\");
		if (amld_namestring(&again, parent, path))
			return -EINVAL;
		if (amld_find(d, path))
			return 0;
	}
	return 0;
}

/* What a resource template holds; counts say how often each descriptor occurred. */
struct amld_res {
	int nr_io, nr_irq, nr_mem32, nr_ext_irq;
	uint16_t io_min, io_max;
	uint8_t io_info, io_align, io_len;
	uint16_t irq_mask;
	bool mem32_writable;
	uint32_t mem32_base, mem32_size;
	uint8_t ext_irq_flags;
	int ext_irq_count;
	uint32_t ext_irq[4];
	uint8_t end_checksum;
	bool sums_to_zero; /* every byte including the EndTag checksum */
};

static inline int amld_resources(const uint8_t *buf, size_t len, struct amld_res *r)
{
	size_t i = 0;
	uint8_t sum = 0;

	memset(r, 0, sizeof(*r));
	for (size_t k = 0; k < len; k++)
		sum = (uint8_t)(sum + buf[k]);
	r->sums_to_zero = sum == 0;
	while (i < len) {
		uint8_t tag = buf[i];

		if (tag & 0x80) { /* large item: tag, 16-bit length, data */
			const uint8_t *d = buf + i + 3;
			size_t dlen;

			if (len - i < 3)
				return -EINVAL;
			dlen = (size_t)amld_le(buf + i + 1, 2);
			if (len - i - 3 < dlen)
				return -EINVAL;
			if (tag == 0x86 && dlen == 9) {
				r->nr_mem32++;
				r->mem32_writable = d[0] & 1;
				r->mem32_base = (uint32_t)amld_le(d + 1, 4);
				r->mem32_size = (uint32_t)amld_le(d + 5, 4);
			} else if (tag == 0x89 && dlen >= 6 && d[1] >= 1 && d[1] <= 4 &&
				   dlen == 2 + 4 * (size_t)d[1]) {
				r->nr_ext_irq++;
				r->ext_irq_flags = d[0];
				r->ext_irq_count = d[1];
				for (int k = 0; k < d[1]; k++)
					r->ext_irq[k] = (uint32_t)amld_le(d + 2 + 4 * k, 4);
			} else {
				return -EINVAL;
			}
			i += 3 + dlen;
			continue;
		}
		/* small item: bits 6-3 type, bits 2-0 length */
		size_t dlen = tag & 7;
		const uint8_t *d = buf + i + 1;

		if (len - i - 1 < dlen)
			return -EINVAL;
		switch (tag >> 3) {
		case 0x04:
			if (dlen != 2)
				return -EINVAL;
			r->nr_irq++;
			r->irq_mask = (uint16_t)amld_le(d, 2);
			break;
		case 0x08:
			if (dlen != 7)
				return -EINVAL;
			r->nr_io++;
			r->io_info = d[0];
			r->io_min = (uint16_t)amld_le(d + 1, 2);
			r->io_max = (uint16_t)amld_le(d + 3, 2);
			r->io_align = d[5];
			r->io_len = d[6];
			break;
		case 0x0F: /* EndTag: must be the last descriptor */
			if (dlen != 1 || i + 2 != len)
				return -EINVAL;
			r->end_checksum = d[0];
			return 0;
		default:
			return -EINVAL;
		}
		i += 1 + dlen;
	}
	return -EINVAL; /* no EndTag */
}

#endif
