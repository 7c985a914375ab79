/* SPDX-License-Identifier: MIT */
/* forkd-init's parsing (guest/init/init_parse.c): command line, module list, uptime, exit codes. */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_command_after_double_dash),
	    cmocka_unit_test(test_command_from_param),
	    cmocka_unit_test(test_command_too_long),
	    cmocka_unit_test(test_module_list),
	    cmocka_unit_test(test_module_list_long_line_skipped),
	    cmocka_unit_test(test_uptime),
	    cmocka_unit_test(test_exit_code),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
