/* SPDX-License-Identifier: MIT */
/*
 * What this machine's /dev/kvm is: hardware virtualization (VT-x / AMD-V),
 * KVM-PVM (guest CPL0 emulated: the probe guest runs, a stock Linux kernel
 * does not) or none usable; and the KVM capabilities forkd-vmm requires.
 * One copy for the VMM, `forkd doctor` and the integration tests
 * (tests/integration/where.c); scripts/kvm-kind.sh is its shell twin.
 */
#ifndef FORKD_UTIL_KVM_HOST_H
#define FORKD_UTIL_KVM_HOST_H

#include <stddef.h>

enum fk_kvm_kind {
	FK_KVM_NONE,	/* no usable /dev/kvm */
	FK_KVM_PVM,	/* KVM-PVM (module kvm_pvm) */
	FK_KVM_HARDWARE /* kvm_amd or kvm_intel */
};

struct fk_kvm_host {
	enum fk_kvm_kind kind;
	int open_errno;	    /* 0, or why /dev/kvm did not open */
	int api_version;    /* KVM_GET_API_VERSION, -1 when not asked */
	const char *module; /* "kvm_pvm", "kvm_amd", "kvm_intel" or NULL */
};

/* Opens path (normally "/dev/kvm"), asks its API version and looks at the
 * loaded modules; never fails: the reasons are in the fields. */
void fk_kvm_host_probe(const char *path, struct fk_kvm_host *out);

/* fk_kvm_host_probe("/dev/kvm")'s kind. */
enum fk_kvm_kind fk_kvm_kind(void);

/* "none", "pvm" or "hardware" (the words of scripts/kvm-kind.sh). */
const char *fk_kvm_kind_name(enum fk_kvm_kind kind);

struct fk_kvm_cap {
	long cap;
	const char *name;
};

/* The capabilities forkd-vmm refuses to run without (KVM_CHECK_EXTENSION > 0). */
extern const struct fk_kvm_cap fk_kvm_required_caps[];
extern const size_t fk_kvm_nr_required_caps;

#endif
