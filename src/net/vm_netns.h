/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm's own network namespace (--net-policy host|nat[,id=ID],
 * docs/networking.md): before the VM is built, the VMM makes forkd-<id>
 * (id: ID, else p<pid>) and points its network device at the tap0 inside;
 * a BRANCH child does the same for itself, before it runs the guest, so
 * every child has a namespace, tap and host address of its own with the
 * guest's address and MAC unchanged. The process that made a namespace
 * removes it when it exits; namespaces of VMMs that died are removed by
 * the sweep each --net-policy VMM runs first.
 */
#ifndef FORKD_NET_VM_NETNS_H
#define FORKD_NET_VM_NETNS_H

#include "core/config.h"
#include "util/err.h"

/*
 * With cfg->net_policy host or nat: sweeps, creates the namespace and sets
 * cfg->net_tap/net_netns (and, booting, the guest MAC). Nothing otherwise.
 * `child`: a BRANCH child's (the source's id and tap are not its own).
 */
int vm_netns_setup(struct vmm_config *cfg, bool child, struct fk_err *err);

/* Removes the namespace cfg names if this process made it; other processes' are left alone. */
void vm_netns_release(const struct vmm_config *cfg);

/*
 * The network broker's socket (src/net/net_broker.h), started by the
 * source's vm_netns_setup; -1 without one. A zygote and its children must
 * keep it open.
 */
int vm_netns_broker_fd(void);

#endif
