/* SPDX-License-Identifier: MIT */
/* forkd-vmm's own network namespace (vm_netns.h). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "devices/tap.h"
#include "net/net_broker.h"
#include "net/netns.h"
#include "net/vm_netns.h"

/*
 * This process's end of the network broker's socket (net_broker.h), -1 when
 * there is none. Process-wide on purpose: one broker serves a VMM and every
 * zygote and BRANCH child forked from it, which inherit this value with the
 * socket; it is set once, before any thread starts.
 */
static int broker_fd = -1;

int vm_netns_broker_fd(void)
{
	return broker_fd;
}

static int parse_mac(const char *text, uint8_t mac[6])
{
	unsigned b[6];

	if (sscanf(text, "%x:%x:%x:%x:%x:%x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
		return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)b[i];
	return 0;
}

int vm_netns_setup(struct vmm_config *cfg, bool child, struct fk_err *err)
{
	struct fk_netns ns;
	char id[FK_NETNS_ID_MAX + 1];
	int ret;

	if (cfg->net_policy != FK_NET_HOST && cfg->net_policy != FK_NET_NAT)
		return 0;
	if (child)
		cfg->net_id[0] = '\0';
	cfg->net_tap[0] = cfg->net_netns[0] = '\0';
	cfg->net_tap_fd = -1;
	cfg->net_netns_owned = false;
	/* the source swept when it started; N children sweeping at once would only race */
	ret = child ? 0 : fk_netns_sweep(err);
	if (ret < 0)
		return fk_wrap(err, "--net-policy: removing namespaces of VMs that are gone");
	/*
	 * Started before the seccomp filters go on: a BRANCH child makes its
	 * namespace through it, and every VMM removes its own through it.
	 */
	if (!child && broker_fd < 0 && (ret = net_broker_start(&broker_fd, err)) < 0)
		return fk_wrap(err, "--net-policy");
	if (cfg->net_id[0])
		snprintf(id, sizeof(id), "%s", cfg->net_id);
	else
		snprintf(id, sizeof(id), "p%d", (int)getpid());
	/*
	 * A jailed VMM (and so each of its children) can neither enter the
	 * namespace nor open /dev/net/tun: its tap is opened here, still as
	 * root, or by the broker, and the device uses the fd (net_tap_fd).
	 */
	if (child)
		ret =
		    net_broker_create(broker_fd, id, (enum fk_net_policy)cfg->net_policy, getpid(),
				      &ns, cfg->jail_dir ? &cfg->net_tap_fd : NULL, err);
	else
		ret = fk_netns_create(id, (enum fk_net_policy)cfg->net_policy, 0, &ns, err);
	if (ret == 0 && !child && cfg->jail_dir) {
		ret = tap_open(FK_NET_TAP, ns.name, err);
		if (ret >= 0) {
			cfg->net_tap_fd = ret;
			ret = 0;
		} else {
			struct fk_err ignored = {0};

			fk_netns_destroy(ns.name, &ignored);
		}
	}
	if (ret < 0)
		return fk_wrap(err, "--net-policy %s",
			       fk_net_policy_name((enum fk_net_policy)cfg->net_policy));
	snprintf(cfg->net_tap, sizeof(cfg->net_tap), "%s", FK_NET_TAP);
	snprintf(cfg->net_netns, sizeof(cfg->net_netns), "%s", ns.name);
	snprintf(cfg->net_host_addr, sizeof(cfg->net_host_addr), "%s", ns.ns_addr);
	cfg->net_netns_owned = true;
	cfg->net_netns_owner = getpid();
	/* a restored guest (and a BRANCH child) keeps the MAC it has */
	if (!child && !cfg->restore_dir) {
		parse_mac(FK_NET_GUEST_MAC, cfg->net_mac);
		cfg->net_mac_given = true;
	}
	return 0;
}

void vm_netns_release(const struct vmm_config *cfg)
{
	struct fk_err err = {0};

	/* a zygote or child inherits its source's config: only the maker removes it */
	if (!cfg->net_netns_owned || cfg->net_netns_owner != getpid())
		return;
	if ((broker_fd >= 0 ? net_broker_destroy(broker_fd, cfg->net_netns, &err)
			    : fk_netns_destroy(cfg->net_netns, &err)) < 0)
		fprintf(stderr, "forkd-vmm: %s\n", err.msg);
}
