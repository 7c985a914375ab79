/* SPDX-License-Identifier: MIT */
/* Unix-socket paths a server is about to bind. */
#ifndef FORKD_UTIL_UNIX_SOCKET_H
#define FORKD_UTIL_UNIX_SOCKET_H

#include "util/err.h"

/*
 * Makes path free for bind(2): nothing there is fine; a socket nobody
 * listens on (left by a process that died) is removed; a live server
 * (-EADDRINUSE) or anything that is not a socket (-EEXIST) is refused, with
 * `what` ("control socket", "vsock socket") naming the path in the error.
 */
int unix_socket_clear_stale(const char *what, const char *path, struct fk_err *err);

#endif
