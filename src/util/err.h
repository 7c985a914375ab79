/* SPDX-License-Identifier: MIT */
/*
 * Context-rich errors, after crun's libcrun_error_t: a function that fails
 * fills a struct fk_err with a message naming the input and the reason and
 * returns -errno; callers on the way up prepend their own context with
 * fk_wrap(), so the user sees "restore snapshot X: state file: bad magic".
 */
#ifndef FORKD_UTIL_ERR_H
#define FORKD_UTIL_ERR_H

#include <stddef.h>

#define FK_ERR_MSG_MAX 512

struct fk_err {
	int code; /* positive errno */
	char msg[FK_ERR_MSG_MAX];
};

/* Sets the error (code is a positive errno) and returns -code. */
int fk_fail(struct fk_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Like fk_fail, appending ": strerror(code)". */
int fk_fail_errno(struct fk_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "context: " to the message already in err; returns -err->code. */
int fk_wrap(struct fk_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void fk_err_clear(struct fk_err *err);

#endif
