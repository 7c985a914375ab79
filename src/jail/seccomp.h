/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm's seccomp allow-lists, one per thread role (docs/seccomp.md).
 *
 * The main thread installs the process filter once, at the start of vm_run,
 * after everything that cannot be opened later is open; every thread it
 * creates afterwards inherits it and adds its own role's filter at its
 * start (vCPU threads before their first KVM_RUN). A BRANCH zygote and its
 * children are forks of the main thread: they keep the process filter (a
 * filter cannot be removed), so it also allows what building a child VM
 * needs. A forbidden call raises SIGSYS (SECCOMP_RET_TRAP); the handler
 * writes one line naming the thread's role and the syscall to stderr and
 * exits the whole VMM with FK_SECCOMP_EXIT_STATUS.
 */
#ifndef FORKD_JAIL_SECCOMP_H
#define FORKD_JAIL_SECCOMP_H

#include <seccomp.h>
#include <stdbool.h>

#include "util/err.h"

/* forkd-vmm's exit status after a forbidden syscall (docs/vmm.md). */
#define FK_SECCOMP_EXIT_STATUS 5

enum fk_seccomp_mode {
	FK_SECCOMP_ON = 0, /* the default: a forbidden call kills the VMM */
	FK_SECCOMP_OFF,
	FK_SECCOMP_LOG, /* a forbidden call is logged by the kernel (audit) and runs */
};

enum fk_seccomp_role {
	FK_SECCOMP_ROLE_MAIN = 0, /* the event loop; also the zygote and BRANCH children */
	FK_SECCOMP_ROLE_VCPU,	  /* KVM_RUN and the device exits it dispatches */
	FK_SECCOMP_ROLE_HELPER,	  /* disk copy, THP re-collapse, fork notification */
	FK_SECCOMP_NR_ROLES,
};

/* "on", "off" or "log"; -EINVAL otherwise. */
int fk_seccomp_parse_mode(const char *s, enum fk_seccomp_mode *out);
const char *fk_seccomp_mode_name(enum fk_seccomp_mode mode);
const char *fk_seccomp_role_name(enum fk_seccomp_role role);

/* Builds (does not load) a role's filter; the caller seccomp_release()s it. */
int fk_seccomp_build(enum fk_seccomp_role role, enum fk_seccomp_mode mode, scmp_filter_ctx *out,
		     struct fk_err *err);

/*
 * Installs the process filter on the calling (main) thread and prepares the
 * other roles' programs. Nothing with FK_SECCOMP_OFF; nothing either when
 * this process already runs under it (a BRANCH child: inherited by fork).
 */
int fk_seccomp_install_process(enum fk_seccomp_mode mode, struct fk_err *err);

/*
 * At a thread's start: adds its role's filter (on top of the inherited
 * process filter) and names the role in the SIGSYS line. Nothing if the
 * process runs without seccomp.
 */
int fk_seccomp_enter_role(enum fk_seccomp_role role, struct fk_err *err);

/*
 * FORKD_FAULT_INJECT=seccomp-escape (tests only): what a compromised device
 * handler might try. Runs a shell that writes $FORKD_SECCOMP_ESCAPE_MARKER;
 * under the filter the execve never happens and the VMM dies. Returns only
 * if the execve failed without seccomp stopping it.
 */
void fk_seccomp_escape_attempt(void);
bool fk_seccomp_escape_injected(void);

#endif
