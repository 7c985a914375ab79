/* SPDX-License-Identifier: MIT */
/*
 * Where an integration-test binary runs, and whether it can: every binary
 * declares what it needs, prints one line saying where it ran (native
 * hardware KVM, native KVM-PVM, the nested test host, or native without
 * KVM), and fails with the reason when it cannot run here. `--needs` prints
 * the requirement and the number of tests for tests/run-integration.sh,
 * which sends each binary to the nested test host when this machine cannot
 * run it (docs/testing.md).
 */
#ifndef FORKD_TESTS_WHERE_H
#define FORKD_TESTS_WHERE_H

#include <stdbool.h>
#include <stddef.h>

enum test_needs {
	NEEDS_NOTHING,	/* no KVM at all (runs QEMU or scripts only) */
	NEEDS_KVM,	/* the probe guest: any KVM, PVM included */
	NEEDS_LINUX,	/* a stock Linux guest: hardware-virtualization semantics */
	NEEDS_TESTHOST, /* regressions for faults of the nested test host: always run there */
	NEEDS_CGROUP2	/* the probe guest and cgroup v2 with the memory, cpu and pids
			   controllers: natively where /sys/fs/cgroup offers them, else nested */
};

enum kvm_kind {
	KVM_NONE,	 /* no usable /dev/kvm */
	KVM_PVM,	 /* KVM-PVM: guest CPL0 emulated; no stock Linux guest */
	KVM_HARDWARE,	 /* VT-x / AMD-V */
	KVM_NESTED_TCG,	 /* inside scripts/testhost.sh under QEMU's TCG */
	KVM_NESTED_ACCEL /* inside scripts/testhost.sh under QEMU with -accel kvm */
};

/* Whether /sys/fs/cgroup is cgroup v2 offering the memory, cpu and pids controllers. */
bool where_cgroup2_controllers(void);

/* This machine's KVM, as scripts/kvm-kind.sh sees it (plus the nested host's own word). */
enum kvm_kind where_kvm_kind(void);

/*
 * Call first in main. With --needs: prints "needs=<nothing|kvm|linux|testhost|cgroup2>
 * tests=<n>" and exits 0. Otherwise prints "where: <name> runs on <place>"
 * and returns 0, or prints why it cannot run here and returns -1 (main then
 * exits non-zero: a test that can run nowhere fails, it is never skipped).
 */
int where_begin(int argc, char **argv, enum test_needs needs, size_t nr_tests);

/*
 * Call before where_begin: the nested test host this binary runs in needs
 * mib MiB of memory instead of scripts/testhost.sh's default (--needs then
 * also prints "nested_mem_mib=<mib>", which tests/run-integration.sh passes
 * on as --mem). For guests of several GiB whose snapshots go to the nested
 * host's /tmp, a tmpfs in its own RAM.
 */
void where_set_nested_mem_mib(unsigned int mib);

#endif
