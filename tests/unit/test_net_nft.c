/* SPDX-License-Identifier: MIT */
/* nftables rule text and names of VM network namespaces (src/net/nft.c, src/net/netns.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "net/netns.h"
#include "net/nft.h"

static struct fk_nft_ns spec(enum fk_net_policy policy)
{
	return (struct fk_nft_ns){
	    .policy = policy,
	    .ns_if = "veth0",
	    .tap_if = "tap0",
	    .ns_addr = "10.200.0.6",
	    .host_addr = "10.200.0.5",
	    .guest_addr = "172.16.0.2",
	    .gateway_addr = "172.16.0.1",
	};
}

static void test_policy_words(void **state)
{
	struct fk_err err = {0};
	enum fk_net_policy p;

	(void)state;
	assert_int_equal(fk_net_policy_parse("none", &p, &err), 0);
	assert_int_equal(p, FK_NET_NONE);
	assert_int_equal(fk_net_policy_parse("host", &p, &err), 0);
	assert_int_equal(p, FK_NET_HOST);
	assert_int_equal(fk_net_policy_parse("nat", &p, &err), 0);
	assert_int_equal(p, FK_NET_NAT);
	assert_string_equal(fk_net_policy_name(FK_NET_NAT), "nat");
	assert_int_equal(fk_net_policy_parse("NAT", &p, &err), -EINVAL);
	assert_string_equal(err.msg, "network policy 'NAT': expected none, host or nat");
	assert_int_equal(fk_net_policy_parse(NULL, &p, &err), -EINVAL);
}

static void test_ns_rules_host(void **state)
{
	struct fk_nft_ns ns = spec(FK_NET_HOST);
	struct fk_err err = {0};
	char buf[4096];

	(void)state;
	assert_int_equal(fk_nft_ns_rules(&ns, buf, sizeof(buf), &err), 0);
	/* one table replaced whole */
	assert_true(
	    strncmp(buf, "add table ip forkd\ndelete table ip forkd\ntable ip forkd {", 56) == 0);
	assert_non_null(strstr(buf, "iifname \"veth0\" ip daddr 10.200.0.6 dnat to 172.16.0.2\n"));
	assert_non_null(strstr(buf, "iifname \"tap0\" ip daddr 172.16.0.1 dnat to 10.200.0.5\n"));
	assert_non_null(strstr(buf, "oifname \"veth0\" masquerade\n"));
	assert_non_null(strstr(buf, "type filter hook forward priority filter; policy drop;"));
	/* the reset of connections the namespace never saw comes first in forward */
	assert_true(strstr(buf,
			   "ct state new tcp flags & (fin|syn|rst|ack) != syn counter reject "
			   "with tcp reset") < strstr(buf, "ct state established,related accept"));
	assert_non_null(
	    strstr(buf, "iifname \"tap0\" oifname \"veth0\" ip daddr 10.200.0.5 accept\n"));
	/* host: the guest goes nowhere else */
	assert_null(strstr(buf, "iifname \"tap0\" oifname \"veth0\" accept\n"));
	assert_non_null(strstr(buf, "iifname \"tap0\" reject with icmp type admin-prohibited\n"));
}

static void test_ns_rules_nat(void **state)
{
	struct fk_nft_ns ns = spec(FK_NET_NAT);
	struct fk_err err = {0};
	char buf[4096];

	(void)state;
	assert_int_equal(fk_nft_ns_rules(&ns, buf, sizeof(buf), &err), 0);
	assert_non_null(strstr(buf, "iifname \"tap0\" oifname \"veth0\" accept\n"));
	assert_null(strstr(buf, "ip daddr 10.200.0.5 accept"));
}

static void test_ns_rules_bad(void **state)
{
	struct fk_nft_ns ns = spec(FK_NET_NONE);
	struct fk_err err = {0};
	char buf[4096], small[100];

	(void)state;
	assert_int_equal(fk_nft_ns_rules(&ns, buf, sizeof(buf), &err), -EINVAL);
	assert_non_null(strstr(err.msg, "policy none has no namespace rules"));

	ns = spec(FK_NET_HOST);
	ns.tap_if = "tap0\" accept; #";
	assert_int_equal(fk_nft_ns_rules(&ns, buf, sizeof(buf), &err), -EINVAL);
	assert_non_null(strstr(err.msg, "tap interface 'tap0\" accept; #'"));
	ns = spec(FK_NET_HOST);
	ns.host_addr = NULL;
	assert_int_equal(fk_nft_ns_rules(&ns, buf, sizeof(buf), &err), -EINVAL);
	assert_string_equal(err.msg, "nft rules: host address missing");

	ns = spec(FK_NET_NAT);
	assert_int_equal(fk_nft_ns_rules(&ns, small, sizeof(small), &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "100-byte buffer too small"));
}

static void test_root_rules(void **state)
{
	struct fk_err err = {0};
	char buf[1024], table[32];

	(void)state;
	assert_int_equal(fk_nft_root_rules(7, "fkv7", "10.200.0.30", buf, sizeof(buf), &err), 0);
	assert_string_equal(buf, "add table ip forkd_7\n"
				 "delete table ip forkd_7\n"
				 "table ip forkd_7 {\n"
				 "\tchain postrouting {\n"
				 "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
				 "\t\tip saddr 10.200.0.30 oifname != \"fkv7\" masquerade\n"
				 "\t}\n"
				 "}\n");
	fk_nft_root_table(16383, table, sizeof(table));
	assert_string_equal(table, "forkd_16383");
	assert_int_equal(fk_nft_root_rules(7, "fk v7", "10.200.0.30", buf, sizeof(buf), &err),
			 -EINVAL);
}

static void test_uplink_rules(void **state)
{
	const char *const two[] = {"eth0", "ens3"}, *const bad[] = {"eth0 accept"};
	struct fk_err err = {0};
	char buf[1024];

	(void)state;
	assert_int_equal(fk_nft_uplink_rules(two, 2, buf, sizeof(buf), &err), 0);
	assert_string_equal(buf, "add table ip forkd_uplink\n"
				 "delete table ip forkd_uplink\n"
				 "table ip forkd_uplink {\n"
				 "\tchain forward {\n"
				 "\t\ttype filter hook forward priority filter; policy accept;\n"
				 "\t\tiifname \"eth0\" oifname != \"fkv*\" drop\n"
				 "\t\tiifname \"eth0\" ct state established,related accept\n"
				 "\t\tiifname \"eth0\" drop\n"
				 "\t\tiifname \"ens3\" oifname != \"fkv*\" drop\n"
				 "\t\tiifname \"ens3\" ct state established,related accept\n"
				 "\t\tiifname \"ens3\" drop\n"
				 "\t}\n"
				 "}\n");
	assert_int_equal(fk_nft_uplink_rules(two, 0, buf, sizeof(buf), &err), -EINVAL);
	assert_int_equal(fk_nft_uplink_rules(bad, 1, buf, sizeof(buf), &err), -EINVAL);
	assert_non_null(strstr(err.msg, "uplink 'eth0 accept'"));
	assert_int_equal(fk_nft_uplink_rules(two, 2, buf, 64, &err), -ENOSPC);
}

static void test_namespace_ids(void **state)
{
	struct fk_err err = {0};
	char longest[FK_NETNS_ID_MAX + 2];

	(void)state;
	assert_int_equal(fk_netns_id_valid("vm-1", &err), 0);
	assert_int_equal(fk_netns_id_valid("0abc", &err), 0);
	memset(longest, 'a', FK_NETNS_ID_MAX);
	longest[FK_NETNS_ID_MAX] = '\0';
	assert_int_equal(fk_netns_id_valid(longest, &err), 0);
	longest[FK_NETNS_ID_MAX] = 'a';
	longest[FK_NETNS_ID_MAX + 1] = '\0';
	assert_int_equal(fk_netns_id_valid(longest, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "expected 1 to 32 characters"));
	assert_int_equal(fk_netns_id_valid("", &err), -EINVAL);
	assert_int_equal(fk_netns_id_valid(NULL, &err), -EINVAL);
	assert_int_equal(fk_netns_id_valid("-vm", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not starting with '-'"));
	assert_int_equal(fk_netns_id_valid("../x", &err), -EINVAL);
	assert_int_equal(fk_netns_id_valid("a b", &err), -EINVAL);
	assert_int_equal(fk_netns_id_valid("VM", &err), -EINVAL);
	assert_string_equal(err.msg, "network namespace id 'VM': expected lower-case letters, "
				     "digits and '-', not starting with '-'");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_policy_words),  cmocka_unit_test(test_ns_rules_host),
	    cmocka_unit_test(test_ns_rules_nat),  cmocka_unit_test(test_ns_rules_bad),
	    cmocka_unit_test(test_root_rules),	  cmocka_unit_test(test_uplink_rules),
	    cmocka_unit_test(test_namespace_ids),
	};
	return cmocka_run_group_tests_name("net nft rules and names", tests, NULL, NULL);
}
