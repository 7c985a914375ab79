/* SPDX-License-Identifier: MIT */
#ifndef FORKD_BRANCH_FANOUT_H
#define FORKD_BRANCH_FANOUT_H

#include "core/vm.h"
#include "util/err.h"

/*
 * forkd-vmm --restore SNAP --fanout N --fanout-dir OUT: `vm` is restored
 * (vm_init) and has never run. Its state goes to the BRANCH zygote, which
 * forks N children, each a full VM in OUT/child-K (K = 0..N-1) with a pid
 * file OUT/child-K/pid (each child writes its own); one JSON line per child
 * and a summary go to stdout.
 * The zygote is released before this returns: the children run on, this
 * process has nothing left to do (docs/branch.md, "Fan-out from a
 * snapshot"). On failure no child is left running.
 */
int fanout_run(struct vm *vm, struct fk_err *err);

#endif
