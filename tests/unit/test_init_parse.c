/* SPDX-License-Identifier: MIT */
/* forkd-init's parsing (guest/init/init_parse.c): command line, module list, uptime, exit codes,
 * the root image's options. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <string.h>

#include "../../guest/init/init_parse.h"

static void expect_command(const char *cmdline, int ret, const char *command)
{
	char out[64];

	memset(out, 'X', sizeof(out));
	assert_int_equal(init_cmdline_command(cmdline, out, sizeof(out)), ret);
	if (ret == 1)
		assert_string_equal(out, command);
}

static void test_command_after_double_dash(void **state)
{
	(void)state;
	expect_command("console=ttyS0 quiet -- echo hi; exit 3\n", 1, "echo hi; exit 3");
	expect_command("-- ls -l /", 1, "ls -l /");
	/* Only the first separator counts; later ones belong to the command. */
	expect_command("a=b -- sh -c 'x -- y'", 1, "sh -c 'x -- y'");
	/* "--" inside a word is not a separator. */
	expect_command("opt--x=1 a--", 0, NULL);
	expect_command("console=ttyS0 --", 0, NULL);
	expect_command("console=ttyS0 --   \n", 0, NULL);
	expect_command("", 0, NULL);
}

static void test_command_from_param(void **state)
{
	(void)state;
	expect_command("console=ttyS0 forkd.cmd=uptime quiet", 1, "uptime");
	expect_command("forkd.cmd=\"echo a b\" quiet", 1, "echo a b");
	expect_command("xforkd.cmd=nope", 0, NULL);
	/* The separator wins over the parameter. */
	expect_command("forkd.cmd=one -- two", 1, "two");
}

static void test_command_too_long(void **state)
{
	(void)state;
	char out[8];

	assert_int_equal(init_cmdline_command("-- 0123456789", out, sizeof(out)), -ENAMETOOLONG);
	assert_int_equal(init_cmdline_command("-- 0123456", out, sizeof(out)), 1);
	assert_string_equal(out, "0123456");
}

static void test_module_list(void **state)
{
	(void)state;
	const char *list =
	    "# forkd modules\n/lib/a.ko\n\n  /lib/b.ko  \r\n#/lib/skip.ko\n/lib/c.ko";
	const char *cursor = list;
	char out[32];

	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 1);
	assert_string_equal(out, "/lib/a.ko");
	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 1);
	assert_string_equal(out, "/lib/b.ko");
	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 1);
	assert_string_equal(out, "/lib/c.ko");
	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 0);
	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 0);
}

static void test_module_list_long_line_skipped(void **state)
{
	(void)state;
	const char *cursor = "/a/very/long/path/name.ko\n/x.ko\n";
	char out[8];

	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), -ENAMETOOLONG);
	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 1);
	assert_string_equal(out, "/x.ko");
	assert_int_equal(init_modlist_next(&cursor, out, sizeof(out)), 0);
}

static void test_cmdline_flag(void **state)
{
	(void)state;
	assert_int_equal(init_cmdline_flag("console=ttyS0 forkd.agent=1 quiet", "forkd.agent"), 1);
	assert_int_equal(init_cmdline_flag("forkd.agent", "forkd.agent"), 1);
	assert_int_equal(init_cmdline_flag("forkd.agent=on", "forkd.agent"), 1);
	assert_int_equal(init_cmdline_flag("forkd.agent=yes x", "forkd.agent"), 1);
	assert_int_equal(init_cmdline_flag("forkd.agent=1 forkd.agent=0", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("forkd.agent=off", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("forkd.agent=no", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("console=ttyS0", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("", "forkd.agent"), 0);
	/* A longer name, and the same word inside the command, do not count. */
	assert_int_equal(init_cmdline_flag("forkd.agents=1", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("quiet -- forkd.agent=1", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("xforkd.agent=1", "forkd.agent"), 0);
	assert_int_equal(init_cmdline_flag("forkd.agent=2", "forkd.agent"), -EINVAL);
	assert_int_equal(init_cmdline_flag("forkd.agent=", "forkd.agent"), -EINVAL);
}

static void test_uptime(void **state)
{
	(void)state;
	char out[16];

	assert_int_equal(init_parse_uptime("12.34 5.67\n", out, sizeof(out)), 0);
	assert_string_equal(out, "12.34");
	assert_int_equal(init_parse_uptime("7", out, sizeof(out)), 0);
	assert_string_equal(out, "7");
	assert_int_equal(init_parse_uptime("", out, sizeof(out)), -EINVAL);
	assert_int_equal(init_parse_uptime(".5 1", out, sizeof(out)), -EINVAL);
	assert_int_equal(init_parse_uptime("12x 1", out, sizeof(out)), -EINVAL);
	assert_int_equal(init_parse_uptime("123456.78 1", out, 4), -ENAMETOOLONG);
}

static void test_exit_code(void **state)
{
	(void)state;
	assert_int_equal(init_exit_code(3 << 8), 3);
	assert_int_equal(init_exit_code(0), 0);
	assert_int_equal(init_exit_code(SIGKILL), 128 + SIGKILL);
}

static void expect_root_value(const char *cmdline, int ret, const char *value)
{
	char out[16];

	memset(out, 'X', sizeof(out));
	assert_int_equal(init_cmdline_value(cmdline, "forkd.root", out, sizeof(out)), ret);
	if (ret == 1)
		assert_string_equal(out, value);
}

static void test_cmdline_value(void **state)
{
	(void)state;
	expect_root_value("console=ttyS0 forkd.root=/dev/vda quiet", 1, "/dev/vda");
	expect_root_value("forkd.root=/dev/vda", 1, "/dev/vda");
	/* The last word wins; an empty value is a value. */
	expect_root_value("forkd.root=/dev/vda forkd.root=/dev/vdb", 1, "/dev/vdb");
	expect_root_value("forkd.root=", 1, "");
	/* No value, a longer name, a prefix, or the word inside the command: none. */
	expect_root_value("forkd.root", 0, NULL);
	expect_root_value("forkd.roots=/dev/vda", 0, NULL);
	expect_root_value("xforkd.root=/dev/vda", 0, NULL);
	expect_root_value("quiet -- forkd.root=/dev/vda", 0, NULL);
	expect_root_value("", 0, NULL);
	expect_root_value("forkd.root=/dev/a-name-far-too-long", -ENAMETOOLONG, NULL);
}

static void test_root_device(void **state)
{
	(void)state;
	assert_int_equal(init_root_device_valid("/dev/vda"), 0);
	assert_int_equal(init_root_device_valid("/dev/disk/by-label/forkd-root"), 0);
	assert_int_equal(init_root_device_valid("/dev/vda1"), 0);
	assert_int_equal(init_root_device_valid("vda"), -EINVAL);
	assert_int_equal(init_root_device_valid("/dev/"), -EINVAL);
	assert_int_equal(init_root_device_valid(""), -EINVAL);
	assert_int_equal(init_root_device_valid("/dev/../proc/kcore"), -EINVAL);
	assert_int_equal(init_root_device_valid("/dev/vda,x"), -EINVAL);
	assert_int_equal(init_root_device_valid("/tmp/vda"), -EINVAL);
}

static void test_hostname(void **state)
{
	(void)state;
	assert_int_equal(init_hostname_valid("forkd-0123456789ab"), 0);
	assert_int_equal(init_hostname_valid("a"), 0);
	assert_int_equal(init_hostname_valid("Sandbox-7"), 0);
	assert_int_equal(
	    init_hostname_valid("a23456789012345678901234567890123456789012345678901234567890123"),
	    0);
	assert_int_equal(
	    init_hostname_valid("a234567890123456789012345678901234567890123456789012345678901234"),
	    -EINVAL);
	assert_int_equal(init_hostname_valid(""), -EINVAL);
	assert_int_equal(init_hostname_valid("-lead"), -EINVAL);
	assert_int_equal(init_hostname_valid("trail-"), -EINVAL);
	assert_int_equal(init_hostname_valid("a.b"), -EINVAL);
	assert_int_equal(init_hostname_valid("a b"), -EINVAL);
	assert_int_equal(init_hostname_valid("a/b"), -EINVAL);
	assert_int_equal(init_hostname_valid("caf\xc3\xa9"), -EINVAL);
}

static void expect_size(const char *value, int ret, const char *option)
{
	char out[32];

	assert_int_equal(init_tmpfs_size_option(value, out, sizeof(out)), ret);
	if (ret == 0)
		assert_string_equal(out, option);
}

static void test_tmpfs_size(void **state)
{
	(void)state;
	expect_size("50%", 0, "size=50%");
	expect_size("100%", 0, "size=100%");
	expect_size("1%", 0, "size=1%");
	expect_size("256M", 0, "size=256M");
	expect_size("1g", 0, "size=1g");
	expect_size("1024k", 0, "size=1024k");
	expect_size("1048576", 0, "size=1048576");
	expect_size("0%", -EINVAL, NULL);
	expect_size("101%", -EINVAL, NULL);
	expect_size("1023k", -EINVAL, NULL); /* under a MiB */
	expect_size("0", -EINVAL, NULL);
	expect_size("", -EINVAL, NULL);
	expect_size("M", -EINVAL, NULL);
	expect_size("12MB", -EINVAL, NULL);
	expect_size("-5M", -EINVAL, NULL);
	expect_size("5M,nr_inodes=1", -EINVAL, NULL);
	expect_size("99999999999999999999G", -EINVAL, NULL);
	char small[8];
	assert_int_equal(init_tmpfs_size_option("1024M", small, sizeof(small)), -ENAMETOOLONG);
}

static void test_ext_magic(void **state)
{
	unsigned char head[2048] = {0};

	(void)state;
	assert_int_equal(init_has_ext_magic(head, sizeof(head)), 0);
	head[INIT_EXT_MAGIC_OFFSET] = 0x53;
	head[INIT_EXT_MAGIC_OFFSET + 1] = 0xEF;
	assert_int_equal(init_has_ext_magic(head, sizeof(head)), 1);
	/* A short read never matches. */
	assert_int_equal(init_has_ext_magic(head, INIT_EXT_MAGIC_OFFSET + 1), 0);
	/* Byte order matters. */
	head[INIT_EXT_MAGIC_OFFSET] = 0xEF;
	head[INIT_EXT_MAGIC_OFFSET + 1] = 0x53;
	assert_int_equal(init_has_ext_magic(head, sizeof(head)), 0);
}

static void test_overlay_options(void **state)
{
	char out[128];

	(void)state;
	assert_int_equal(init_overlay_options("/l", "/u/upper", "/u/work", out, sizeof(out)), 0);
	assert_string_equal(out, "lowerdir=/l,upperdir=/u/upper,workdir=/u/work");
	assert_int_equal(init_overlay_options("/l,x", "/u", "/w", out, sizeof(out)), -EINVAL);
	assert_int_equal(init_overlay_options("/l", "/u:x", "/w", out, sizeof(out)), -EINVAL);
	assert_int_equal(init_overlay_options("/l", "/u", "/w", out, 20), -ENAMETOOLONG);
}

static void test_net_parse(void **state)
{
	struct init_net n;
	const char *why = NULL;

	(void)state;
	assert_int_equal(init_net_parse("172.16.0.2/30,gw=172.16.0.1", &n, &why), 0);
	assert_int_equal(n.addr, 0xac100002u);
	assert_int_equal(n.prefix, 30);
	assert_true(n.has_gateway);
	assert_int_equal(n.gateway, 0xac100001u);
	assert_int_equal(init_net_parse("10.0.0.5/8", &n, &why), 0);
	assert_int_equal(n.addr, 0x0a000005u);
	assert_int_equal(n.prefix, 8);
	assert_false(n.has_gateway);
	/* /31 and /32 have no network or broadcast address. */
	assert_int_equal(init_net_parse("192.168.1.0/31,gw=192.168.1.1", &n, &why), 0);
	assert_int_equal(init_net_parse("192.168.1.7/32", &n, &why), 0);

	static const struct {
		const char *value, *why_part;
	} bad[] = {
	    {"", "dotted-quad ADDR"},
	    {"172.16.0", "dotted-quad ADDR"},
	    {"172.16.0.256/30", "dotted-quad ADDR"},
	    {"172.16.0.0002/30", "dotted-quad ADDR"},
	    {"172.16..2/30", "dotted-quad ADDR"},
	    {"172.16.0.2", "'/PREFIX'"},
	    {"172.16.0.2/", "1 to 32"},
	    {"172.16.0.2/0", "1 to 32"},
	    {"172.16.0.2/33", "1 to 32"},
	    {"172.16.0.2/3000", "1 to 32"},
	    {"172.16.0.0/30", "network or broadcast"},
	    {"172.16.0.3/30", "network or broadcast"},
	    {"172.16.0.2/30,", "',gw=GATEWAY'"},
	    {"172.16.0.2/30 gw=172.16.0.1", "',gw=GATEWAY'"},
	    {"172.16.0.2/30,gw=", "dotted-quad GATEWAY"},
	    {"172.16.0.2/30,gw=172.16.0.1,x", "dotted-quad GATEWAY"},
	    {"172.16.0.2/30,gw=172.16.0.5", "another address"},
	    {"172.16.0.2/30,gw=172.16.0.2", "another address"},
	    {"172.16.0.2/32,gw=172.16.0.1", "another address"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		why = NULL;
		if (init_net_parse(bad[i].value, &n, &why) != -EINVAL || !why ||
		    !strstr(why, bad[i].why_part))
			fail_msg("forkd.net=%s: expected -EINVAL mentioning '%s', got '%s'",
				 bad[i].value, bad[i].why_part, why ? why : "(none)");
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hostname),
	    cmocka_unit_test(test_command_after_double_dash),
	    cmocka_unit_test(test_command_from_param),
	    cmocka_unit_test(test_command_too_long),
	    cmocka_unit_test(test_module_list),
	    cmocka_unit_test(test_module_list_long_line_skipped),
	    cmocka_unit_test(test_cmdline_flag),
	    cmocka_unit_test(test_uptime),
	    cmocka_unit_test(test_exit_code),
	    cmocka_unit_test(test_cmdline_value),
	    cmocka_unit_test(test_root_device),
	    cmocka_unit_test(test_tmpfs_size),
	    cmocka_unit_test(test_ext_magic),
	    cmocka_unit_test(test_overlay_options),
	    cmocka_unit_test(test_net_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
