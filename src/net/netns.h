/* SPDX-License-Identifier: MIT */
/*
 * A VM's network namespace `forkd-<id>` (docs/networking.md): inside it the
 * persistent tap `tap0` (gateway 172.16.0.1/30, fixed MAC; the guest is
 * always 172.16.0.2) and `veth0`, whose peer `fkv<slot>` sits in the root
 * namespace; the slot's /30 of 10.200.0.0/16 (slots.h) addresses the pair,
 * and nftables inside (nft.h) DNATs 10.200.S.2 to the guest. Links and
 * addresses are made with iproute2's `ip`, rules with `nft -f -`: the
 * kernel's own tools, whose error text we pass on (docs/networking.md says
 * why not raw netlink).
 *
 * Each namespace has a record DIR/ns-<name> (owner pid and its start time,
 * slot, policy): created O_EXCL, it reserves the name; fk_netns_sweep()
 * destroys the namespaces whose owner is gone.
 */
#ifndef FORKD_NET_NETNS_H
#define FORKD_NET_NETNS_H

#include <stdbool.h>
#include <sys/types.h>

#include "net/nft.h"
#include "util/err.h"

#define FK_NETNS_PREFIX	    "forkd-"
#define FK_NETNS_ID_MAX	    32
#define FK_NET_TAP	    "tap0"
#define FK_NET_NS_VETH	    "veth0"
#define FK_NET_GUEST_ADDR   "172.16.0.2"
#define FK_NET_GATEWAY_ADDR "172.16.0.1"
/* Locally administered, the same in every namespace: a BRANCH child's guest keeps its ARP entry. */
#define FK_NET_GATEWAY_MAC "02:66:6b:00:00:01"
#define FK_NET_GUEST_MAC   "02:66:6b:00:00:02"
#define FK_NET_DEFAULT_DIR "/run/forkd/net"

struct fk_netns {
	char name[sizeof(FK_NETNS_PREFIX) + FK_NETNS_ID_MAX]; /* forkd-<id> */
	enum fk_net_policy policy;
	int slot;	  /* -1 for policy none */
	char host_if[16]; /* fkv<slot>, in the root namespace */
	char host_addr[16];
	char ns_addr[16]; /* the host reaches the guest at ns_addr:PORT */
	pid_t owner;
};

/* Where records and slots live: $FORKD_NET_DIR or /run/forkd/net. */
const char *fk_net_dir(void);

/* An id is 1..32 of [a-z0-9-], not starting with '-'. -EINVAL naming it otherwise. */
int fk_netns_id_valid(const char *id, struct fk_err *err);

/*
 * Creates forkd-<id> with `policy`, owned by `owner` (0: this process).
 * Errors: -EINVAL bad id; -EEXIST the name is taken (by a live VM, or a
 * namespace forkd did not make); -ENODEV no tun device; -ENOENT `ip` or
 * `nft` missing; -ENOSPC no slot left. On failure nothing is left behind.
 */
int fk_netns_create(const char *id, enum fk_net_policy policy, pid_t owner, struct fk_netns *ns,
		    struct fk_err *err);

/* Removes the namespace, its veth, root table, slot and record; 0 also if already gone. */
int fk_netns_destroy(const char *name, struct fk_err *err);

/* The pid recorded as namespace name's owner (its maker), or -errno (-ENOENT: no record). */
int fk_netns_owner(const char *name, pid_t *owner);

/* Destroys every forkd namespace whose owner has exited; returns how many, or -errno. */
int fk_netns_sweep(struct fk_err *err);

/*
 * Opens the tap `ifname` inside namespace `name` (IFF_TAP|IFF_NO_PI|flags)
 * on a short-lived thread that enters the namespace, so the caller's own
 * threads never change namespace. Returns the fd or -errno.
 */
int fk_netns_open_tap(const char *name, const char *ifname, int extra_flags, struct fk_err *err);

#endif
