/* SPDX-License-Identifier: MIT */
/*
 * The `branch` command's arguments (branch_request_parse): defaults, the
 * pool of prebuilt children (0..16), and refusals that name the argument and
 * what was expected.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "branch/fork_engine.h"

static json_t *parse_json(const char *text)
{
	json_error_t e;
	json_t *j = json_loads(text, 0, &e);

	if (!j)
		fail_msg("bad test JSON %s: %s", text, e.text);
	return j;
}

/* Parses text; returns the result and fills req and err. */
static int parse(const char *text, struct branch_request *req, struct fk_err *err)
{
	json_t *j = parse_json(text);
	int ret;

	memset(err, 0, sizeof(*err));
	ret = branch_request_parse(j, req, err);
	json_decref(j);
	return ret;
}

static void expect_refused(const char *text, const char *needle)
{
	struct branch_request req;
	struct fk_err err;
	int ret = parse(text, &req, &err);

	assert_int_equal(ret, -EINVAL);
	if (!strstr(err.msg, needle))
		fail_msg("%s: error '%s' lacks '%s'", text, err.msg, needle);
}

static void test_defaults(void **state)
{
	struct branch_request req;
	struct fk_err err;

	(void)state;
	assert_int_equal(parse("{\"cmd\":\"branch\"}", &req, &err), 0);
	assert_int_equal(req.n, 1);
	assert_int_equal(req.pool, 0);
	assert_null(req.dir);
	assert_null(req.persist);
	assert_false(req.wait);
}

static void test_pool_values_accepted(void **state)
{
	struct branch_request req;
	struct fk_err err;

	(void)state;
	assert_int_equal(parse("{\"n\":2,\"pool\":0}", &req, &err), 0);
	assert_int_equal(req.n, 2);
	assert_int_equal(req.pool, 0);
	assert_int_equal(parse("{\"n\":1,\"pool\":16}", &req, &err), 0);
	assert_int_equal(req.pool, BRANCH_MAX_POOL);
	/* A zygote with only a pool: children come later, from spawn. */
	json_t *j = parse_json("{\"n\":0,\"pool\":3,\"dir\":\"/tmp/x\"}");
	assert_int_equal(branch_request_parse(j, &req, &err), 0);
	assert_int_equal(req.n, 0);
	assert_int_equal(req.pool, 3);
	assert_string_equal(req.dir, "/tmp/x"); /* points into the request */
	json_decref(j);
}

static void test_bad_pool_refused(void **state)
{
	(void)state;
	expect_refused("{\"pool\":-1}", "pool=-1: expected 0..16 prebuilt children");
	expect_refused("{\"pool\":17}", "pool=17: expected 0..16 prebuilt children");
	expect_refused("{\"pool\":9223372036854775807}", "pool=9223372036854775807: expected");
	expect_refused("{\"pool\":\"2\"}", "argument \"pool\": expected an integer, got");
	expect_refused("{\"pool\":2.0}", "argument \"pool\": expected an integer, got");
	expect_refused("{\"pool\":true}", "argument \"pool\": expected an integer, got");
	expect_refused("{\"pool\":null}", "\"pool\"");
}

static void test_other_arguments_refused(void **state)
{
	(void)state;
	expect_refused("{\"n\":-1}", "n=-1: expected 0..1024 children");
	expect_refused("{\"n\":1025,\"pool\":1}", "n=1025: expected 0..1024 children");
	expect_refused("{\"n\":0}", "n=0 without persist or pool");
	expect_refused("{\"n\":0,\"pool\":0}", "n=0 without persist or pool");
	expect_refused("{\"dir\":5}", "argument \"dir\"");
	expect_refused("{\"wait\":\"yes\"}", "argument \"wait\"");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_defaults),
	    cmocka_unit_test(test_pool_values_accepted),
	    cmocka_unit_test(test_bad_pool_refused),
	    cmocka_unit_test(test_other_arguments_refused),
	};
	return cmocka_run_group_tests_name("branch request parsing", tests, NULL, NULL);
}
