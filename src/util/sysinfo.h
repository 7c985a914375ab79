/* SPDX-License-Identifier: MIT */
/* Small parsers for what the kernel reports in /proc and /sys (used by `forkd doctor`). */
#ifndef FORKD_UTIL_SYSINFO_H
#define FORKD_UTIL_SYSINFO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The selected value of a sysfs choice file such as
 * /sys/kernel/mm/transparent_hugepage/enabled ("always [madvise] never\n"):
 * copies "madvise" to out. Returns 0; -EINVAL when text has no "[value]" word
 * or more than one; -ENAMETOOLONG when it does not fit in size.
 */
int fk_sysfs_selected(const char *text, char *out, size_t size);

/* Appends each whitespace-separated word of text (cgroup.controllers:
 * "cpu io memory pids\n") to array as a string; returns how many, or -ENOMEM. */
int fk_split_words(const char *text, json_t *array);

/* Appends the names of the UFFDIO_API feature bits set in features to array
 * ("PAGEFAULT_FLAG_WP", ..., "MOVE"; a bit this code does not know as "bit N");
 * returns 0 or -ENOMEM. */
int fk_uffd_feature_names(uint64_t features, json_t *array);

/* "EPERM" for EPERM (strerrorname_np); "errno N" for one it does not know. */
const char *fk_errno_name(int e, char *buf, size_t size);

/* Reads at most size - 1 bytes of a small file into buf, NUL-terminated;
 * returns the length or -errno. */
int fk_read_small_file(const char *path, char *buf, size_t size);

#endif
