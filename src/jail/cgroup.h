/* SPDX-License-Identifier: MIT */
/*
 * A cgroup v2 per VM (docs/jail.md): PARENT/vm-NAME with memory.max,
 * cpu.max and pids.max, joined by forkd-vmm before it allocates guest RAM.
 * BRANCH children are forks and stay in it: a VM and its children share one
 * budget, so branching cannot escape the limits. A small helper process,
 * started before the VMM joins and left outside the cgroup, removes the
 * cgroup once nothing runs in it any more (the jailed VMM could not: it has
 * no rights on the cgroup tree, and a cgroup cannot be removed by a
 * process inside it).
 */
#ifndef FORKD_JAIL_CGROUP_H
#define FORKD_JAIL_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define CGROUP_DEFAULT_CPU_PERIOD_US 100000

struct cgroup_limits {
	uint64_t memory_max;		      /* bytes; 0: no limit */
	uint64_t cpu_quota_us, cpu_period_us; /* quota 0: no limit */
	uint64_t pids_max;		      /* 0: no limit */
};

/* "QUOTA[/PERIOD]" in microseconds: quota 1000.., period 1000..1000000 (default 100000). */
int cgroup_parse_cpu_max(const char *s, uint64_t *quota_us, uint64_t *period_us,
			 struct fk_err *err);

/* A --cgroup-name: [A-Za-z0-9._-], 1..64 bytes, not "." or "..". */
bool cgroup_name_ok(const char *name);

/* Whether word is one of the space-separated words of text (cgroup.controllers). */
bool cgroup_has_word(const char *text, const char *word);

/* 0 if path is on a cgroup v2 filesystem; else an error saying what is mounted instead. */
int cgroup_check_v2(const char *path, struct fk_err *err);

/*
 * Makes the controllers the limits need available to parent's children:
 * each must be in parent/cgroup.controllers (if not, it is enabled in the
 * grandparent's cgroup.subtree_control when that is allowed), and is then
 * enabled in parent/cgroup.subtree_control.
 */
int cgroup_enable_controllers(const char *parent, const struct cgroup_limits *lim,
			      struct fk_err *err);

/* Writes memory.max (and memory.swap.max 0), cpu.max and pids.max in cg. */
int cgroup_write_limits(const char *cg, const struct cgroup_limits *lim, struct fk_err *err);

/*
 * Creates parent/vm-NAME (name NULL: vm-<pid>), writes the limits, starts
 * the remover and moves this process in. path receives the cgroup's path.
 */
int cgroup_vm_join(const char *parent, const char *name, const struct cgroup_limits *lim,
		   char *path, size_t path_len, struct fk_err *err);

#endif
