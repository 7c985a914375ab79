/* SPDX-License-Identifier: MIT */
/* Reading cgroup v2 files, and making sure there is a cgroup v2 to read (the cgroup tests). */
#ifndef FORKD_ITEST_CGROUP_FILES_H
#define FORKD_ITEST_CGROUP_FILES_H

/*
 * 0 when /sys/fs/cgroup is cgroup v2. Where it is not, only the nested test
 * host's throwaway kernel is ours to mount it in: there it is mounted, and
 * anywhere else -1 with a line on stderr naming `who` (needs=cgroup2 sends
 * such tests to the nested host, docs/testing.md).
 */
int cg_need_v2(const char *who);

/* The first number in file (memory.max, pids.current, ...), or -1 ("max" is -1 too). */
long long cg_value(const char *file);

/* The value of "key value" lines (memory.events, cpu.stat): that of key, or -1. */
long long cg_key(const char *file, const char *key);

#endif
