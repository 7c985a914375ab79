/* SPDX-License-Identifier: MIT */
#include "where.h"

#include "util/kvm_host.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/utsname.h>

enum kvm_kind where_kvm_kind(void)
{
	const char *nested = getenv("FORKD_TESTHOST_KIND");

	/* Set by scripts/testhost.sh inside the nested host. */
	if (nested && !strcmp(nested, "nested-tcg"))
		return KVM_NESTED_TCG;
	if (nested && !strcmp(nested, "nested-kvm"))
		return KVM_NESTED_ACCEL;
	switch (fk_kvm_kind()) {
	case FK_KVM_PVM:
		return KVM_PVM;
	case FK_KVM_HARDWARE:
		return KVM_HARDWARE;
	case FK_KVM_NONE:
		break;
	}
	return KVM_NONE;
}

bool where_cgroup2_controllers(void)
{
	char text[512] = "";
	struct statfs fs;
	FILE *f;
	bool all = true;

	if (statfs("/sys/fs/cgroup", &fs) < 0 || fs.f_type != CGROUP2_SUPER_MAGIC)
		return false;
	f = fopen("/sys/fs/cgroup/cgroup.controllers", "r");
	if (!f)
		return false;
	if (!fgets(text, sizeof(text), f))
		text[0] = '\0';
	fclose(f);
	for (const char *const *c = (const char *const[]){"memory", "cpu", "pids", NULL}; *c; c++) {
		size_t n = strlen(*c);
		bool found = false;
		for (const char *p = text; (p = strstr(p, *c)); p += n)
			found |= (p == text || p[-1] == ' ') &&
				 (p[n] == ' ' || p[n] == '\n' || p[n] == '\0');
		all &= found;
	}
	return all;
}

static const char *place(enum kvm_kind kind)
{
	switch (kind) {
	case KVM_NONE:
		return "native, no /dev/kvm";
	case KVM_PVM:
		return "native KVM-PVM (/dev/kvm from kvm_pvm)";
	case KVM_HARDWARE:
		return "native hardware virtualization (kvm_amd/kvm_intel)";
	case KVM_NESTED_TCG:
		return "nested TCG (scripts/testhost.sh: KVM inside QEMU's TCG)";
	case KVM_NESTED_ACCEL:
		return "nested KVM (scripts/testhost.sh: KVM inside QEMU -accel kvm)";
	}
	return "?";
}

static const char *needs_name(enum test_needs needs)
{
	switch (needs) {
	case NEEDS_NOTHING:
		return "nothing";
	case NEEDS_KVM:
		return "kvm";
	case NEEDS_LINUX:
		return "linux";
	case NEEDS_TESTHOST:
		return "testhost";
	case NEEDS_CGROUP2:
		return "cgroup2";
	}
	return "?";
}

/* Set once by main before where_begin, read by it: one value per test binary. */
static unsigned int nested_mem_mib;

void where_set_nested_mem_mib(unsigned int mib)
{
	nested_mem_mib = mib;
}

int where_begin(int argc, char **argv, enum test_needs needs, size_t nr_tests)
{
	const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
	enum kvm_kind kind;
	struct utsname u;

	if (argc > 1 && !strcmp(argv[1], "--needs")) {
		printf("needs=%s tests=%zu", needs_name(needs), nr_tests);
		if (nested_mem_mib)
			printf(" nested_mem_mib=%u", nested_mem_mib);
		printf("\n");
		exit(0);
	}
	if (argc > 1) {
		fprintf(stderr, "%s: unknown argument '%s' (only --needs)\n", name, argv[1]);
		return -1;
	}
	kind = where_kvm_kind();
	uname(&u);
	if (needs == NEEDS_NOTHING) {
		printf("where: %s runs on %s; needs no KVM (kernel %s)\n", name, "this machine",
		       u.release);
		fflush(stdout);
		return 0;
	}
	if (kind == KVM_NONE) {
		printf("where: %s cannot run here: it needs /dev/kvm and this machine has none "
		       "usable; run it in the nested test host (make integration-test does: "
		       "scripts/testhost.sh -- %s)\n",
		       name, argv[0]);
		return -1;
	}
	if (needs == NEEDS_TESTHOST && kind != KVM_NESTED_TCG && kind != KVM_NESTED_ACCEL) {
		printf("where: %s cannot run here: it reproduces faults of the nested test host "
		       "and runs only there (make integration-test does: scripts/testhost.sh -- "
		       "%s)\n",
		       name, argv[0]);
		return -1;
	}
	if (needs == NEEDS_CGROUP2 && kind != KVM_NESTED_TCG && kind != KVM_NESTED_ACCEL &&
	    !where_cgroup2_controllers()) {
		printf("where: %s cannot run here: it needs cgroup v2 at /sys/fs/cgroup with the "
		       "memory, cpu and pids controllers, and this machine has not; run it in the "
		       "nested test host (make integration-test does: scripts/testhost.sh -- %s)\n",
		       name, argv[0]);
		return -1;
	}
	if (needs == NEEDS_LINUX && kind == KVM_PVM) {
		printf("where: %s cannot run here: it boots a stock Linux guest, which KVM-PVM "
		       "cannot run (guest CPL0 is emulated); run it in the nested test host "
		       "(make integration-test does: scripts/testhost.sh -- %s)\n",
		       name, argv[0]);
		return -1;
	}
	printf("where: %s runs on %s (kernel %s)\n", name, place(kind), u.release);
	fflush(stdout);
	return 0;
}
