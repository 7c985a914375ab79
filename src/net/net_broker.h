/* SPDX-License-Identifier: MIT */
/*
 * The network broker: a small process forkd-vmm forks before it installs its
 * seccomp filters (docs/seccomp.md), which makes and removes network
 * namespaces on request. Making one runs `ip` and `nft` (fork, execve, netlink
 * sockets, mounts) — calls the VMM's filters rightly forbid — yet a BRANCH
 * child must make its own namespace long after the filters are on, and every
 * VMM removes its namespace at exit. So the filtered processes (the VMM, its
 * zygotes and BRANCH children, which inherit the broker's socket) ask; the
 * broker does only this, and only for names of the form forkd-<id>.
 *
 * One SOCK_SEQPACKET socketpair: each request carries a reply socket of its
 * own (SCM_RIGHTS), so children asking at once get their own answers. The
 * broker exits when every process holding the other end has closed it, i.e.
 * when the VMM and all its children are gone.
 */
#ifndef FORKD_NET_NET_BROKER_H
#define FORKD_NET_NET_BROKER_H

#include <sys/types.h>

#include "net/netns.h"
#include "util/err.h"

/* How forkd-vmm's main() recognises the broker, and where its socket is. */
#define NET_BROKER_ARG "--net-broker"
#define NET_BROKER_FD  3

/* Starts the broker (this binary again, see NET_BROKER_ARG); *fd gets this side's end. */
int net_broker_start(int *fd, struct fk_err *err);

/* The broker's loop, on fd; returns when every client has gone (the exit status). */
int net_broker_main(int fd);

/*
 * fk_netns_create() done by the broker for owner (a live process). With
 * tap_fd, the broker also opens the namespace's tap (as tap_open does) and
 * passes the fd (SCM_RIGHTS): for a jailed VMM, which cannot open it.
 */
int net_broker_create(int fd, const char *id, enum fk_net_policy policy, pid_t owner,
		      struct fk_netns *ns, int *tap_fd, struct fk_err *err);

/* fk_netns_destroy() done by the broker. */
int net_broker_destroy(int fd, const char *name, struct fk_err *err);

#endif
