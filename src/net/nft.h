/* SPDX-License-Identifier: MIT */
/*
 * The nftables rule sets of a VM network namespace (docs/networking.md),
 * generated as text for Debian's `nft -f -` (fed on stdin, run inside the
 * namespace). Text rather than libnftnl/netlink: nft checks and applies a
 * whole table atomically, the generated text is unit-testable and readable
 * in `nft list ruleset`, and the cost (one nft process per namespace, a few
 * ms) is paid once per VM.
 */
#ifndef FORKD_NET_NFT_H
#define FORKD_NET_NFT_H

#include <stddef.h>

#include "util/err.h"

enum fk_net_policy {
	FK_NET_NONE, /* no tap, no veth, no route: the namespace holds only lo */
	FK_NET_HOST, /* host <-> guest only; forwarding anywhere else dropped */
	FK_NET_NAT   /* also out through the root namespace, masqueraded */
};

/* "none", "host", "nat" -> policy; anything else: -EINVAL naming the word and the choices. */
int fk_net_policy_parse(const char *word, enum fk_net_policy *policy, struct fk_err *err);
const char *fk_net_policy_name(enum fk_net_policy policy);

/* What the rules of one namespace need to know (addresses as dotted quads). */
struct fk_nft_ns {
	enum fk_net_policy policy;
	const char *ns_if;     /* the namespace's veth end */
	const char *tap_if;    /* the guest's tap */
	const char *ns_addr;   /* 10.200.S.2: the host reaches the guest here */
	const char *host_addr; /* 10.200.S.1: the root end; the guest reaches it at its gateway */
	const char *guest_addr;
	const char *gateway_addr;
};

/*
 * The table `ip forkd` inside the namespace: DNAT ns_addr -> guest, the
 * guest's gateway -> host_addr, masquerade out of ns_if, forwarding per
 * policy, and TCP segments of connections the namespace never saw (a
 * BRANCH child's inherited sockets) answered with a reset. -EINVAL for
 * policy none (it has no rules) or a missing field; -ENOSPC if buf is short.
 */
int fk_nft_ns_rules(const struct fk_nft_ns *ns, char *buf, size_t size, struct fk_err *err);

/*
 * The table `ip forkd_<slot>` of the root namespace for policy nat:
 * masquerade what comes from ns_addr out of any interface but host_if.
 */
int fk_nft_root_rules(unsigned slot, const char *host_if, const char *ns_addr, char *buf,
		      size_t size, struct fk_err *err);

/*
 * The root namespace's table `ip forkd_uplink` while forkd has switched
 * forwarding on for uplinks (nat replies come back through them): what
 * arrives on an uplink is forwarded only to our veths (fkv*), and only
 * for connections made from inside, as with forwarding off before.
 */
#define FK_NFT_UPLINK_TABLE "forkd_uplink"
int fk_nft_uplink_rules(const char *const *uplinks, int nr, char *buf, size_t size,
			struct fk_err *err);

/* The root table's name for a slot ("forkd_<slot>") into buf. */
void fk_nft_root_table(unsigned slot, char *buf, size_t size);

#endif
