/* SPDX-License-Identifier: MIT */
/*
 * Probe-guest steps shared by the integration tests: start forkd-vmm with the
 * probe, wait for console lines, check key=value reports and exit statuses
 * (each fails the current cmocka test with the console dumped), and whole
 * cases run by more than one binary.
 */
#ifndef FORKD_TESTS_PROBE_CASES_H
#define FORKD_TESTS_PROBE_CASES_H

#include <stddef.h>
#include <stdint.h>

#include "harness.h"

/* vmm NULL: the plain VMM. The variadic tail is extra VMM arguments, NULL-terminated. */
void probe_start(struct vmm_proc *p, const char *vmm, const char *mem, const char *cpus,
		 const char *append, ...);
const char *probe_need_line(struct vmm_proc *p, const char *prefix, int timeout_ms);
void probe_expect_kv(struct vmm_proc *p, const char *key, const char *want);
void probe_expect_exit(struct vmm_proc *p, int want, int timeout_ms);
/* A disk of pseudo-random bytes (fixed seed); first4k (if not NULL) receives its first 4 KiB. */
void probe_make_disk(const char *path, size_t size, uint8_t *first4k);
/*
 * The hostile guest against the ASan VMM: malformed virtio rings and stray
 * MMIO end in device errors and a reset, never a VMM crash or sanitizer report.
 */
void probe_hostile_run(const char *dir);

#endif
