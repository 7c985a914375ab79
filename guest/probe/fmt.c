/* SPDX-License-Identifier: MIT */
/*
 * A small vsnprintf: %s %c %d %i %u %x %X %p %%, with l/ll/z/h length
 * modifiers, field width and the '0' flag. Enough for key=value lines.
 */
#include "probe.h"

struct out {
	char *buf;
	size_t cap; /* including the terminating NUL */
	size_t len; /* would-be length, may exceed cap */
};

static void put(struct out *o, char c)
{
	if (o->len + 1 < o->cap)
		o->buf[o->len] = c;
	o->len++;
}

static void put_num(struct out *o, uint64_t v, unsigned base, bool upper, bool negative,
		    unsigned width, char pad)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	char tmp[24];
	unsigned n = 0;

	do {
		tmp[n++] = digits[v % base];
		v /= base;
	} while (v);
	if (negative && pad == '0')
		put(o, '-');
	for (unsigned i = n + (negative ? 1 : 0); i < width; i++)
		put(o, pad);
	if (negative && pad != '0')
		put(o, '-');
	while (n)
		put(o, tmp[--n]);
}

int vfmt(char *buf, size_t cap, const char *f, va_list ap)
{
	struct out o = {.buf = buf, .cap = cap, .len = 0};

	for (; *f; f++) {
		unsigned width = 0, lng = 0;
		char pad = ' ';

		if (*f != '%') {
			put(&o, *f);
			continue;
		}
		f++;
		if (*f == '0') {
			pad = '0';
			f++;
		}
		while (*f >= '0' && *f <= '9')
			width = width * 10 + (unsigned)(*f++ - '0');
		while (*f == 'l' || *f == 'z' || *f == 'h') {
			if (*f != 'h')
				lng++;
			f++;
		}
		switch (*f) {
		case 's': {
			const char *s = va_arg(ap, const char *);
			size_t n = s ? strlen(s) : 6;

			for (size_t i = n; i < width; i++)
				put(&o, ' ');
			if (!s)
				s = "(null)";
			while (*s)
				put(&o, *s++);
			break;
		}
		case 'c':
			put(&o, (char)va_arg(ap, int));
			break;
		case 'd':
		case 'i': {
			int64_t v = lng ? va_arg(ap, long) : va_arg(ap, int);
			uint64_t mag = v < 0 ? -(uint64_t)v : (uint64_t)v;

			put_num(&o, mag, 10, false, v < 0, width, pad);
			break;
		}
		case 'u':
		case 'x':
		case 'X': {
			uint64_t v = lng ? va_arg(ap, unsigned long) : va_arg(ap, unsigned int);

			put_num(&o, v, *f == 'u' ? 10 : 16, *f == 'X', false, width, pad);
			break;
		}
		case 'p':
			put(&o, '0');
			put(&o, 'x');
			put_num(&o, (uintptr_t)va_arg(ap, void *), 16, false, false, 0, ' ');
			break;
		case '%':
			put(&o, '%');
			break;
		case '\0':
			f--;
			break;
		default:
			put(&o, '%');
			put(&o, *f);
			break;
		}
	}
	if (cap)
		buf[o.len < cap ? o.len : cap - 1] = '\0';
	return (int)o.len;
}

int fmt(char *buf, size_t cap, const char *f, ...)
{
	va_list ap;
	int n;

	va_start(ap, f);
	n = vfmt(buf, cap, f, ap);
	va_end(ap);
	return n;
}
