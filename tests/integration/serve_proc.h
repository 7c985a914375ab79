/* SPDX-License-Identifier: MIT */
/* A `forkd serve` process for the daemon's integration tests. */
#ifndef FORKD_ITEST_SERVE_PROC_H
#define FORKD_ITEST_SERVE_PROC_H

#include <sys/types.h>

/* The forkd CLI: $FORKD_BUILD/forkd, else build/forkd. */
const char *serve_cli(void);

/*
 * Starts `forkd serve --state-dir STATE --socket SOCK --vmm <harness_vmm()>`
 * plus extra (NULL-ended, may be NULL), stdout and stderr appended to log,
 * and waits (30 s, stretched in the nested host) until SOCK takes
 * connections: the API is then up. Fails the test otherwise. Returns its pid.
 */
pid_t serve_start(const char *state, const char *sock, const char *log, char *const extra[]);

/* Sends sig and reaps it; *pid becomes 0. Nothing if *pid is 0. */
void serve_stop(pid_t *pid, int sig);

#endif
