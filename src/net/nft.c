/* SPDX-License-Identifier: MIT */
/* nftables rule text for VM network namespaces (nft.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "net/nft.h"

static const char *const policy_names[] = {
    [FK_NET_NONE] = "none",
    [FK_NET_HOST] = "host",
    [FK_NET_NAT] = "nat",
};

int fk_net_policy_parse(const char *word, enum fk_net_policy *policy, struct fk_err *err)
{
	for (size_t i = 0; i < sizeof(policy_names) / sizeof(policy_names[0]); i++) {
		if (word && strcmp(word, policy_names[i]) == 0) {
			*policy = (enum fk_net_policy)i;
			return 0;
		}
	}
	return fk_fail(err, EINVAL, "network policy '%s': expected none, host or nat",
		       word ? word : "");
}

const char *fk_net_policy_name(enum fk_net_policy policy)
{
	if ((size_t)policy < sizeof(policy_names) / sizeof(policy_names[0]))
		return policy_names[policy];
	return "?";
}

/* Appends to buf at *used; -ENOSPC once it no longer fits. */
static int append(char *buf, size_t size, size_t *used, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int append(char *buf, size_t size, size_t *used, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*used >= size)
		return -ENOSPC;
	va_start(ap, fmt);
	n = vsnprintf(buf + *used, size - *used, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= size - *used)
		return -ENOSPC;
	*used += (size_t)n;
	return 0;
}

/* Interface names and addresses go into rule text: only [A-Za-z0-9._-], so nothing can inject. */
static int check_word(const char *what, const char *word, struct fk_err *err)
{
	if (!word || !word[0])
		return fk_fail(err, EINVAL, "nft rules: %s missing", what);
	if (strspn(word, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
	    strlen(word))
		return fk_fail(err, EINVAL,
			       "nft rules: %s '%s': expected letters, digits, '.', '_', '-'", what,
			       word);
	return 0;
}

int fk_nft_ns_rules(const struct fk_nft_ns *ns, char *buf, size_t size, struct fk_err *err)
{
	size_t used = 0;
	int ret;

	if (ns->policy != FK_NET_HOST && ns->policy != FK_NET_NAT)
		return fk_fail(err, EINVAL, "nft rules: policy %s has no namespace rules",
			       fk_net_policy_name(ns->policy));
	if ((ret = check_word("namespace interface", ns->ns_if, err)) < 0 ||
	    (ret = check_word("tap interface", ns->tap_if, err)) < 0 ||
	    (ret = check_word("namespace address", ns->ns_addr, err)) < 0 ||
	    (ret = check_word("host address", ns->host_addr, err)) < 0 ||
	    (ret = check_word("guest address", ns->guest_addr, err)) < 0 ||
	    (ret = check_word("gateway address", ns->gateway_addr, err)) < 0)
		return ret;

	/*
	 * One table, replaced whole: `add table` + `delete table` makes a re-run
	 * start from nothing, and nft applies the file as one transaction.
	 */
	ret = append(buf, size, &used,
		     "add table ip forkd\n"
		     "delete table ip forkd\n"
		     "table ip forkd {\n"
		     "\tchain prerouting {\n"
		     "\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
		     "\t\tiifname \"%s\" ip daddr %s dnat to %s\n"
		     "\t\tiifname \"%s\" ip daddr %s dnat to %s\n"
		     "\t}\n"
		     "\tchain postrouting {\n"
		     "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
		     "\t\toifname \"%s\" masquerade\n"
		     "\t}\n",
		     ns->ns_if, ns->ns_addr, ns->guest_addr, ns->tap_if, ns->gateway_addr,
		     ns->host_addr, ns->ns_if);
	/*
	 * forward: a TCP segment that opens no connection (no lone SYN) yet is
	 * new to this namespace's conntrack belongs to a connection made before
	 * a BRANCH, in the source's namespace: reset it rather than let the
	 * child share it (its counter shows how many were reset). Then replies, host -> guest
	 * (DNATed), and guest -> out as the policy allows.
	 */
	if (ret == 0)
		ret =
		    append(buf, size, &used,
			   "\tchain forward {\n"
			   "\t\ttype filter hook forward priority filter; policy drop;\n"
			   "\t\tmeta l4proto tcp ct state new tcp flags & (fin|syn|rst|ack) != syn "
			   "counter reject with tcp reset\n"
			   "\t\tct state invalid drop\n"
			   "\t\tct state established,related accept\n"
			   "\t\tiifname \"%s\" oifname \"%s\" ct status dnat accept\n",
			   ns->ns_if, ns->tap_if);
	if (ret == 0 && ns->policy == FK_NET_HOST)
		ret = append(buf, size, &used,
			     "\t\tiifname \"%s\" oifname \"%s\" ip daddr %s accept\n", ns->tap_if,
			     ns->ns_if, ns->host_addr);
	if (ret == 0 && ns->policy == FK_NET_NAT)
		ret = append(buf, size, &used, "\t\tiifname \"%s\" oifname \"%s\" accept\n",
			     ns->tap_if, ns->ns_if);
	if (ret == 0)
		ret = append(buf, size, &used,
			     "\t\tiifname \"%s\" reject with icmp type admin-prohibited\n"
			     "\t}\n",
			     ns->tap_if);
	/* input: the namespace itself serves nothing (ARP is not ip: unaffected) */
	if (ret == 0)
		ret =
		    append(buf, size, &used,
			   "\tchain input {\n"
			   "\t\ttype filter hook input priority filter; policy drop;\n"
			   "\t\tiifname \"lo\" accept\n"
			   "\t\tct state established,related accept\n"
			   "\t\tmeta l4proto tcp tcp flags & (fin|syn|rst|ack) != syn reject with "
			   "tcp reset\n"
			   "\t}\n"
			   "}\n");
	if (ret < 0)
		return fk_fail(err, ENOSPC, "nft rules: %zu-byte buffer too small", size);
	return 0;
}

void fk_nft_root_table(unsigned slot, char *buf, size_t size)
{
	snprintf(buf, size, "forkd_%u", slot);
}

int fk_nft_root_rules(unsigned slot, const char *host_if, const char *ns_addr, char *buf,
		      size_t size, struct fk_err *err)
{
	char table[32];
	size_t used = 0;
	int ret;

	if ((ret = check_word("host interface", host_if, err)) < 0 ||
	    (ret = check_word("namespace address", ns_addr, err)) < 0)
		return ret;
	fk_nft_root_table(slot, table, sizeof(table));
	ret = append(buf, size, &used,
		     "add table ip %s\n"
		     "delete table ip %s\n"
		     "table ip %s {\n"
		     "\tchain postrouting {\n"
		     "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
		     "\t\tip saddr %s oifname != \"%s\" masquerade\n"
		     "\t}\n"
		     "}\n",
		     table, table, table, ns_addr, host_if);
	if (ret < 0)
		return fk_fail(err, ENOSPC, "nft rules: %zu-byte buffer too small", size);
	return 0;
}

int fk_nft_uplink_rules(const char *const *uplinks, int nr, char *buf, size_t size,
			struct fk_err *err)
{
	size_t used = 0;
	int ret;

	if (nr <= 0)
		return fk_fail(err, EINVAL, "nft rules: no uplink");
	for (int i = 0; i < nr; i++) {
		ret = check_word("uplink", uplinks[i], err);
		if (ret < 0)
			return ret;
	}
	ret = append(buf, size, &used,
		     "add table ip " FK_NFT_UPLINK_TABLE "\n"
		     "delete table ip " FK_NFT_UPLINK_TABLE "\n"
		     "table ip " FK_NFT_UPLINK_TABLE " {\n"
		     "\tchain forward {\n"
		     "\t\ttype filter hook forward priority filter; policy accept;\n");
	for (int i = 0; i < nr && ret == 0; i++)
		ret = append(buf, size, &used,
			     "\t\tiifname \"%s\" oifname != \"fkv*\" drop\n"
			     "\t\tiifname \"%s\" ct state established,related accept\n"
			     "\t\tiifname \"%s\" drop\n",
			     uplinks[i], uplinks[i], uplinks[i]);
	if (ret == 0)
		ret = append(buf, size, &used, "\t}\n}\n");
	if (ret < 0)
		return fk_fail(err, ENOSPC, "nft rules: %zu-byte buffer too small", size);
	return 0;
}
