/* SPDX-License-Identifier: MIT */
/* Small blocking-I/O helpers shared by host code and the static guest agent. */
#ifndef FORKD_UTIL_FDIO_H
#define FORKD_UTIL_FDIO_H

#include <stddef.h>

/* Writes all len bytes to a blocking fd, retrying short writes and EINTR. Returns 0 or -errno. */
int fk_write_all(int fd, const void *buf, size_t len);

#endif
