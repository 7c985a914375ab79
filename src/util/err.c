/* SPDX-License-Identifier: MIT */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void fk_err_clear(struct fk_err *err)
{
	err->code = 0;
	err->msg[0] = '\0';
}

/* dst = a + ": " + b, truncated to fit; a helper because snprintf("%s: %s") trips
 * -Wformat-truncation. */
static void join(char *dst, size_t size, const char *a, const char *b)
{
	size_t n = strnlen(a, size - 1);

	memmove(dst, a, n);
	if (n + 2 < size) {
		memcpy(dst + n, ": ", 2);
		n += 2;
	}
	size_t m = strnlen(b, size - 1 - n);
	memmove(dst + n, b, m);
	dst[n + m] = '\0';
}

static int set_code(struct fk_err *err, int code)
{
	if (code <= 0)
		code = EINVAL;
	err->code = code;
	return -code;
}

int fk_fail(struct fk_err *err, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return set_code(err, code);
}

int fk_fail_errno(struct fk_err *err, int code, const char *fmt, ...)
{
	va_list ap;
	char what[FK_ERR_MSG_MAX];

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	join(err->msg, sizeof(err->msg), what, strerror(code > 0 ? code : EINVAL));
	return set_code(err, code);
}

int fk_wrap(struct fk_err *err, const char *fmt, ...)
{
	char prefix[FK_ERR_MSG_MAX];
	char old[FK_ERR_MSG_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	join(err->msg, sizeof(err->msg), prefix, old);
	return set_code(err, err->code);
}
