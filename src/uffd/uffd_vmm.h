/* SPDX-License-Identifier: MIT */
/*
 * The VMM's side of a lazy (uffd) restore: create the userfaultfd, register
 * guest RAM for MISSING faults and hand it to the handler process
 * (docs/design/userfaultfd.md).
 */
#ifndef FORKD_UFFD_UFFD_VMM_H
#define FORKD_UFFD_UFFD_VMM_H

#include "core/guest_mem.h"
#include "util/err.h"

/*
 * Connects to the handler listening on sock_path, registers every region of
 * mem (a GUEST_MEM_UFFD mapping) and sends the userfaultfd with the regions
 * (offsets in the memory file: regions packed in order, as the snapshot
 * format stores them). The VMM keeps no copy of the userfaultfd: if the
 * handler dies, the kernel drops the registration and wakes every thread
 * waiting on a fault, so nothing hangs. *conn_out is the connected socket,
 * which the VMM watches: its end means the handler is gone.
 */
int uffd_vmm_attach(const struct guest_mem *mem, const char *sock_path, int *conn_out,
		    struct fk_err *err);

#endif
