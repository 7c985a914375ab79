/* SPDX-License-Identifier: MIT */
/* Pure parsing for forkd-init, kept apart from the PID 1 code so unit tests can link it. */
#ifndef FORKD_GUEST_INIT_PARSE_H
#define FORKD_GUEST_INIT_PARSE_H

#include <stddef.h>

/*
 * The command to run, from the kernel command line (/proc/cmdline): everything
 * after the first " -- " (or a leading "-- "), verbatim; otherwise the value of
 * forkd.cmd= (in double quotes if it has spaces). Returns 1 and fills out,
 * 0 if there is no command, -ENAMETOOLONG if it does not fit.
 */
int init_cmdline_command(const char *cmdline, char *out, size_t out_size);

/*
 * Iterates the module list (/lib/modules/forkd.list): one path per line,
 * blanks and lines starting with '#' skipped, surrounding whitespace trimmed.
 * Returns 1 with the next path in out, 0 at the end, -ENAMETOOLONG for a line
 * that does not fit (the cursor moves past it).
 */
int init_modlist_next(const char **cursor, char *out, size_t out_size);

/* The first field of /proc/uptime ("12.34 5.67\n" -> "12.34"); -EINVAL if not a number. */
int init_parse_uptime(const char *text, char *out, size_t out_size);

/* Shell convention: the exit code, or 128 + the signal that ended the process. */
int init_exit_code(int wait_status);

#endif
