/* SPDX-License-Identifier: MIT */
/*
 * The VMM's side of a lazy (uffd) restore: create the userfaultfd, register
 * guest RAM for MISSING faults and hand it to the handler process
 * (docs/design/userfaultfd.md).
 */
#ifndef FORKD_UFFD_UFFD_VMM_H
#define FORKD_UFFD_UFFD_VMM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "core/guest_mem.h"
#include "util/err.h"

/*
 * The VMM's hold on a lazy restore: the handler connection, the VMM's own
 * copy of the userfaultfd, and a thread that notices the handler's end.
 */
struct uffd_watch {
	int conn; /* the handshake connection; the handler never writes to it again */
	int uffd; /* the VMM's copy, so the handler's death does not zero-fill the guest */
	pthread_t thread;
	bool started;
	atomic_bool stopping; /* set by uffd_watch_stop: an end that is not a loss */
	void (*on_lost)(void *opaque);
	void *opaque;
};

/*
 * A new userfaultfd (O_CLOEXEC|O_NONBLOCK), never UFFD_USER_MODE_ONLY: the
 * syscall, else /dev/userfaultfd. Also the uffd-wp live snapshot's.
 */
int uffd_open_fd(struct fk_err *err);

/*
 * Connects to the handler listening on sock_path, registers every region of
 * mem (a GUEST_MEM_UFFD mapping) and sends the userfaultfd with the regions
 * (offsets in the memory file: regions packed in order, as the snapshot
 * format stores them); fills w (conn and uffd open, no thread yet).
 */
int uffd_vmm_attach(const struct guest_mem *mem, const char *sock_path, struct uffd_watch *w,
		    struct fk_err *err);

/*
 * Starts the thread that waits for the connection's end. A handler that
 * exits leaves the guest's faults waiting (the VMM still holds the
 * userfaultfd), so nothing reads zeros in place of snapshot pages: the
 * thread calls on_lost (which stops the VM), then closes the VMM's copy,
 * which wakes every waiting fault so the vCPUs and the VMM's own threads can
 * stop. A thread rather than the event loop: the main thread itself may be
 * the one waiting on a fault (restoring device state into guest RAM).
 */
int uffd_watch_start(struct uffd_watch *w, void (*on_lost)(void *opaque), void *opaque,
		     struct fk_err *err);

/* Ends the watch without calling on_lost: the VM is exiting. Safe on a zeroed struct. */
void uffd_watch_stop(struct uffd_watch *w);

#endif
