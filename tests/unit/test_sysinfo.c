/* SPDX-License-Identifier: MIT */
/* The /proc and /sys parsers behind `forkd doctor` (src/util/sysinfo.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/sysinfo.h"

static void test_sysfs_selected(void **state)
{
	char out[32], tiny[4];

	(void)state;
	assert_int_equal(fk_sysfs_selected("always [madvise] never\n", out, sizeof(out)), 0);
	assert_string_equal(out, "madvise");
	assert_int_equal(fk_sysfs_selected("[always] madvise never\n", out, sizeof(out)), 0);
	assert_string_equal(out, "always");
	assert_int_equal(fk_sysfs_selected("always madvise [never]", out, sizeof(out)), 0);
	assert_string_equal(out, "never");
	/* defrag has a choice with a '+' in it */
	assert_int_equal(
	    fk_sysfs_selected("always defer [defer+madvise] madvise never\n", out, sizeof(out)), 0);
	assert_string_equal(out, "defer+madvise");
	/* shmem_enabled's extra words */
	assert_int_equal(
	    fk_sysfs_selected("always within_size advise [never] deny force\n", out, sizeof(out)),
	    0);
	assert_string_equal(out, "never");

	assert_int_equal(fk_sysfs_selected("always madvise never\n", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("[always] [never]", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("always [] never", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("always [mad vise] never", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("always [madvise", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("[[x]", out, sizeof(out)), -EINVAL);
	assert_int_equal(fk_sysfs_selected("a [madvise] b", tiny, sizeof(tiny)), -ENAMETOOLONG);
	assert_int_equal(fk_sysfs_selected("a [abc] b", tiny, sizeof(tiny)), 0);
	assert_string_equal(tiny, "abc");
}

static void expect_words(const char *text, const char *const *want, int n)
{
	json_t *a = json_array();

	assert_int_equal(fk_split_words(text, a), n);
	assert_int_equal(json_array_size(a), (size_t)n);
	for (int i = 0; i < n; i++)
		assert_string_equal(json_string_value(json_array_get(a, (size_t)i)), want[i]);
	json_decref(a);
}

static void test_split_words(void **state)
{
	(void)state;
	expect_words("cpuset cpu io memory hugetlb pids rdma misc\n",
		     (const char *const[]){"cpuset", "cpu", "io", "memory", "hugetlb", "pids",
					   "rdma", "misc"},
		     8);
	expect_words("hugetlb\n", (const char *const[]){"hugetlb"}, 1);
	expect_words("", NULL, 0);
	expect_words("\n", NULL, 0); /* cgroup2 with no controllers enabled */
	expect_words("  a\tbb  \n c", (const char *const[]){"a", "bb", "c"}, 3);
}

static void test_uffd_feature_names(void **state)
{
	json_t *a = json_array();

	(void)state;
	assert_int_equal(fk_uffd_feature_names(0x1ffff, a), 0); /* PVM-NOTES' machines */
	assert_int_equal(json_array_size(a), 17);
	assert_string_equal(json_string_value(json_array_get(a, 0)), "PAGEFAULT_FLAG_WP");
	assert_string_equal(json_string_value(json_array_get(a, 15)), "WP_ASYNC");
	assert_string_equal(json_string_value(json_array_get(a, 16)), "MOVE");
	json_array_clear(a);
	assert_int_equal(fk_uffd_feature_names(0, a), 0);
	assert_int_equal(json_array_size(a), 0);
	assert_int_equal(fk_uffd_feature_names((1ULL << 7) | (1ULL << 40), a), 0);
	assert_int_equal(json_array_size(a), 2);
	assert_string_equal(json_string_value(json_array_get(a, 0)), "SIGBUS");
	assert_string_equal(json_string_value(json_array_get(a, 1)), "bit 40");
	json_decref(a);
}

static void test_errno_name(void **state)
{
	char buf[32];

	(void)state;
	assert_string_equal(fk_errno_name(EPERM, buf, sizeof(buf)), "EPERM");
	assert_string_equal(fk_errno_name(ENOENT, buf, sizeof(buf)), "ENOENT");
	assert_string_equal(fk_errno_name(99999, buf, sizeof(buf)), "errno 99999");
}

static void test_read_small_file(void **state)
{
	char path[256], buf[8];
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/forkd-sysinfo-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "always [madvise] never\n", 23), 23);
	close(fd);
	assert_int_equal(fk_read_small_file(path, buf, sizeof(buf)), 7); /* truncated, ends NUL */
	assert_string_equal(buf, "always ");
	unlink(path);
	assert_int_equal(fk_read_small_file(path, buf, sizeof(buf)), -ENOENT);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_sysfs_selected),     cmocka_unit_test(test_split_words),
	    cmocka_unit_test(test_uffd_feature_names), cmocka_unit_test(test_errno_name),
	    cmocka_unit_test(test_read_small_file),
	};
	return cmocka_run_group_tests_name("sysinfo parsers", tests, NULL, NULL);
}
