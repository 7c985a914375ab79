/* SPDX-License-Identifier: MIT */
/* forkd-vmm's --net-policy option (src/core/config.c; docs/networking.md). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "core/config.h"
#include "net/nft.h"

static int parse(struct vmm_config *cfg, struct fk_err *err, const char *policy, const char *extra)
{
	char *argv[8] = {"forkd-vmm", "--kernel", "k.elf", "--net-policy", (char *)policy, NULL};
	int argc = 5;

	if (extra) {
		argv[argc++] = "--net";
		argv[argc++] = (char *)extra;
	}
	return vmm_config_parse(cfg, argc, argv, err);
}

static void test_policies(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(parse(&cfg, &err, "host", NULL), 0);
	assert_int_equal(cfg.net_policy, FK_NET_HOST);
	assert_string_equal(cfg.net_id, "");
	assert_string_equal(cfg.net_tap, "");
	assert_int_equal(parse(&cfg, &err, "nat,id=web-1", NULL), 0);
	assert_int_equal(cfg.net_policy, FK_NET_NAT);
	assert_string_equal(cfg.net_id, "web-1");
	assert_int_equal(parse(&cfg, &err, "none", NULL), 0);
	assert_int_equal(cfg.net_policy, FK_NET_NONE);
	/* none makes nothing, so --net stays the user's */
	assert_int_equal(parse(&cfg, &err, "none", "tap=tap9"), 0);
}

static void test_bad(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(parse(&cfg, &err, "open", NULL), -EINVAL);
	assert_string_equal(err.msg,
			    "--net-policy: network policy 'open': expected none, host or nat");
	assert_int_equal(parse(&cfg, &err, "host,name=x", NULL), -EINVAL);
	assert_non_null(strstr(err.msg, "unknown option 'name=x' (expected id=ID)"));
	assert_int_equal(parse(&cfg, &err, "host,id=../x", NULL), -EINVAL);
	assert_non_null(strstr(err.msg, "network namespace id '../x'"));
	assert_int_equal(parse(&cfg, &err, "host,id=", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, &err, "hostilehostile", NULL), -EINVAL);
	assert_int_equal(parse(&cfg, &err, "nat", "tap=tap0"), -EINVAL);
	assert_non_null(strstr(err.msg, "the policy makes the namespace and its tap itself"));
}

/* host and nat tell the guest its address (forkd.net=, forkd-init), in front of " -- ". */
static void test_guest_cmdline(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};
	char *with_append[] = {"forkd-vmm", "--kernel", "k.elf", "--net-policy",
			       "nat",	    "--append", "",	 NULL};

	(void)state;
	assert_int_equal(parse(&cfg, &err, "host", NULL), 0);
	assert_string_equal(cfg.cmdline, "forkd.net=172.16.0.2/30,gw=172.16.0.1");
	assert_int_equal(parse(&cfg, &err, "none", NULL), 0);
	assert_string_equal(cfg.cmdline, "");
	with_append[6] = "console=ttyS0 -- echo forkd.net=x";
	assert_int_equal(vmm_config_parse(&cfg, 7, with_append, &err), 0);
	assert_string_equal(
	    cfg.cmdline, "forkd.net=172.16.0.2/30,gw=172.16.0.1 console=ttyS0 -- echo forkd.net=x");
	/* The user's own forkd.net= wins. */
	with_append[6] = "quiet forkd.net=10.1.0.2/24";
	assert_int_equal(vmm_config_parse(&cfg, 7, with_append, &err), 0);
	assert_string_equal(cfg.cmdline, "quiet forkd.net=10.1.0.2/24");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_policies),
	    cmocka_unit_test(test_bad),
	    cmocka_unit_test(test_guest_cmdline),
	};
	return cmocka_run_group_tests_name("--net-policy", tests, NULL, NULL);
}
