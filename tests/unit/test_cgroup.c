/* SPDX-License-Identifier: MIT */
/*
 * The cgroup v2 helpers against a directory of plain files standing in for
 * a cgroup (what is written where, in which words), and the errors for a
 * filesystem that is no cgroup v2, a controller not delegated, a file the
 * kernel would not have.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jail/cgroup.h"

static char tmp[256];

static int setup(void **state)
{
	(void)state;
	snprintf(tmp, sizeof(tmp), "%s/forkd-ucg-XXXXXX",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[400];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

static void put(const char *dir, const char *file, const char *text)
{
	char path[600];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *get(const char *dir, const char *file)
{
	static char buf[256];
	char path[600];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void test_cpu_max(void **state)
{
	uint64_t q, p;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(cgroup_parse_cpu_max("50000", &q, &p, &err), 0);
	assert_int_equal(q, 50000);
	assert_int_equal(p, 100000);
	assert_int_equal(cgroup_parse_cpu_max("20000/50000", &q, &p, &err), 0);
	assert_int_equal(q, 20000);
	assert_int_equal(p, 50000);
	assert_int_equal(cgroup_parse_cpu_max("200000/1000000", &q, &p, &err), 0);
	static const char *const bad[] = {"",
					  "max",
					  "999",
					  "5000/",
					  "5000/999",
					  "5000/2000000",
					  "5000x",
					  "-5000",
					  "5000/50000/1",
					  "99999999999999999999"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(cgroup_parse_cpu_max(bad[i], &q, &p, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "--cpu-max"));
		assert_non_null(strstr(err.msg, "QUOTA[/PERIOD]"));
	}
}

static void test_names_and_words(void **state)
{
	(void)state;
	assert_true(cgroup_name_ok("web-1.a_b"));
	assert_false(cgroup_name_ok(""));
	assert_false(cgroup_name_ok("."));
	assert_false(cgroup_name_ok(".."));
	assert_false(cgroup_name_ok("a/b"));
	assert_false(cgroup_name_ok("a b"));
	assert_false(
	    cgroup_name_ok("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));
	assert_true(cgroup_has_word("cpuset cpu io memory pids\n", "cpu"));
	assert_true(cgroup_has_word("cpuset cpu io memory pids\n", "pids"));
	assert_true(cgroup_has_word("memory", "memory"));
	assert_false(cgroup_has_word("cpuset io memory", "cpu"));
	assert_false(cgroup_has_word("hugetlb misc", "memory"));
	assert_false(cgroup_has_word("", "pids"));
}

static void test_write_limits(void **state)
{
	char cg[400];
	struct cgroup_limits lim = {.memory_max = 256ULL << 20,
				    .cpu_quota_us = 50000,
				    .cpu_period_us = 100000,
				    .pids_max = 32};
	struct fk_err err = {0};

	(void)state;
	snprintf(cg, sizeof(cg), "%s/vm-a", tmp);
	assert_int_equal(mkdir(cg, 0755), 0);
	/* Empty: a plain file keeps what a longer old value had past the new one's end. */
	put(cg, "memory.max", "");
	put(cg, "memory.swap.max", "");
	put(cg, "cpu.max", "");
	put(cg, "pids.max", "");
	assert_int_equal(cgroup_write_limits(cg, &lim, &err), 0);
	assert_string_equal(get(cg, "memory.max"), "268435456");
	/* The limit is RAM: no swap. */
	assert_string_equal(get(cg, "memory.swap.max"), "0");
	assert_string_equal(get(cg, "cpu.max"), "50000 100000");
	assert_string_equal(get(cg, "pids.max"), "32");

	/* A kernel without swap accounting has no memory.swap.max: not an error. */
	snprintf(cg, sizeof(cg), "%s/vm-b", tmp);
	assert_int_equal(mkdir(cg, 0755), 0);
	put(cg, "memory.max", "");
	lim = (struct cgroup_limits){.memory_max = 64ULL << 20};
	assert_int_equal(cgroup_write_limits(cg, &lim, &err), 0);
	assert_string_equal(get(cg, "memory.max"), "67108864");

	/* No pids.max: the controller is not enabled there, and the error says so. */
	lim = (struct cgroup_limits){.pids_max = 8};
	assert_int_equal(cgroup_write_limits(cg, &lim, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "--pids-max"));
	assert_non_null(strstr(err.msg, "pids.max"));
	assert_non_null(strstr(err.msg, "controller is not enabled"));
}

static void test_enable_controllers(void **state)
{
	char parent[400];
	struct cgroup_limits lim = {.memory_max = 1 << 20, .pids_max = 4};
	struct fk_err err = {0};

	(void)state;
	snprintf(parent, sizeof(parent), "%s/forkd", tmp);
	assert_int_equal(mkdir(parent, 0755), 0);
	put(parent, "cgroup.controllers", "cpuset cpu io memory pids\n");
	put(parent, "cgroup.subtree_control", "\n");
	assert_int_equal(cgroup_enable_controllers(parent, &lim, &err), 0);
	/* One controller per write, as the kernel takes them; pids came last. */
	assert_non_null(strstr(get(parent, "cgroup.subtree_control"), "+pids"));

	/* Already enabled: nothing written. */
	put(parent, "cgroup.subtree_control", "memory pids\n");
	assert_int_equal(cgroup_enable_controllers(parent, &lim, &err), 0);
	assert_string_equal(get(parent, "cgroup.subtree_control"), "memory pids\n");

	/* Not delegated, and the grandparent (a tmpdir) is no cgroup v2 to ask. */
	put(parent, "cgroup.controllers", "cpu io\n");
	assert_int_equal(cgroup_enable_controllers(parent, &lim, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "--memory-max"));
	assert_non_null(strstr(err.msg, "memory controller is not delegated"));
	assert_non_null(strstr(err.msg, parent));
}

static void test_not_cgroup2(void **state)
{
	struct fk_err err = {0};
	struct cgroup_limits lim = {.pids_max = 4};
	char path[600], out[700];

	(void)state;
	assert_int_equal(cgroup_check_v2(tmp, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, tmp));
	assert_non_null(strstr(err.msg, "not on a cgroup v2 filesystem"));
	/* Joining under it fails before anything is created. */
	snprintf(path, sizeof(path), "%s/new", tmp);
	assert_int_equal(cgroup_vm_join(path, "x", &lim, out, sizeof(out), &err), -ENOTSUP);
	snprintf(path, sizeof(path), "%s/new", tmp);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(cgroup_vm_join("rel", NULL, &lim, out, sizeof(out), &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--cgroup rel: expected an absolute path"));
	assert_int_equal(cgroup_vm_join("/sys/fs/cgroup", "../x", &lim, out, sizeof(out), &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "--cgroup-name '../x'"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cpu_max),	 cmocka_unit_test(test_names_and_words),
	    cmocka_unit_test(test_write_limits), cmocka_unit_test(test_enable_controllers),
	    cmocka_unit_test(test_not_cgroup2),
	};
	return cmocka_run_group_tests_name("cgroup", tests, setup, teardown);
}
