/* SPDX-License-Identifier: MIT */
/* forkd-agent's request validation (guest/agent/request.c), run on the host. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "../../guest/agent/request.h"

static const char gen32[] = "00112233445566778899aabbccddeeff";
static const char entropy64[] = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

static int parse(const char *json, struct agent_request *req, char *why, size_t why_len)
{
	return agent_request_parse((const uint8_t *)json, strlen(json), req, why, why_len);
}

/* Expects json to be refused with a reason containing `needle`. */
static void expect_refused(const char *json, const char *needle)
{
	struct agent_request req;
	char why[256] = "";

	assert_int_equal(parse(json, &req, why, sizeof(why)), -EINVAL);
	if (!strstr(why, needle))
		fail_msg("%s: reason \"%s\" lacks \"%s\"", json, why, needle);
	agent_request_free(&req);
}

static void test_not_an_object(void **state)
{
	(void)state;
	expect_refused("[1,2]", "expected a JSON object");
	expect_refused("\"ping\"", "expected a JSON object");
	expect_refused("{\"op\":", "not valid JSON");
	expect_refused("", "not valid JSON");
	expect_refused("{\"op\":\"ping\",\"op\":\"exec\"}", "not valid JSON");
	expect_refused("{\"op\":\"a\\u0000b\"}", "not valid JSON");
	expect_refused("{}", "missing field \"op\"");
	expect_refused("{\"op\":3}", "\"op\" is an integer");
	expect_refused("{\"op\":\"dance\"}", "unknown op \"dance\"");
	expect_refused("{\"op\":\"ping\",\"extra\":1}", "unknown field \"extra\"");
}

static void test_exec_full(void **state)
{
	(void)state;
	struct agent_request req;
	char why[256];

	assert_int_equal(
	    parse("{\"op\":\"exec\",\"argv\":[\"/bin/echo\",\"a b\"],\"env\":{\"A\":\"1\"},"
		  "\"cwd\":\"/tmp\",\"uid\":1000,\"gid\":100,\"timeout_ms\":2500,"
		  "\"stdin\":true}",
		  &req, why, sizeof(why)),
	    0);
	assert_int_equal(req.op, AGENT_OP_EXEC);
	assert_string_equal(req.op_name, "exec");
	assert_int_equal(req.exec.argc, 2);
	assert_string_equal(req.exec.argv[0], "/bin/echo");
	assert_string_equal(req.exec.argv[1], "a b");
	assert_null(req.exec.argv[2]);
	assert_string_equal(req.exec.cwd, "/tmp");
	assert_true(req.exec.has_uid && req.exec.has_gid);
	assert_int_equal(req.exec.uid, 1000);
	assert_int_equal(req.exec.gid, 100);
	assert_int_equal(req.exec.timeout_ms, 2500);
	assert_true(req.exec.want_stdin);
	agent_request_free(&req);

	assert_int_equal(parse("{\"op\":\"exec\",\"argv\":[\"true\"]}", &req, why, sizeof(why)), 0);
	assert_null(req.exec.cwd);
	assert_false(req.exec.has_uid);
	assert_false(req.exec.want_stdin);
	assert_int_equal(req.exec.timeout_ms, 0);
	agent_request_free(&req);
}

static void test_exec_refused(void **state)
{
	(void)state;
	expect_refused("{\"op\":\"exec\"}", "missing field \"argv\"");
	expect_refused("{\"op\":\"exec\",\"argv\":\"ls\"}", "\"argv\" is a string");
	expect_refused("{\"op\":\"exec\",\"argv\":[]}", "an empty array");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\",3]}", "argv[1] is an integer");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"\"]}", "argv[0] is empty");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":[]}", "\"env\" is an array");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":{\"A=B\":\"1\"}}",
		       "contains '='");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":{\"\":\"1\"}}", "is empty");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"env\":{\"A\":1}}",
		       "env \"A\" is an integer");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwd\":\"tmp\"}", "not absolute");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwd\":7}", "\"cwd\" is an integer");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"uid\":-1}", "\"uid\" is -1");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"gid\":4294967295}",
		       "\"gid\" is 4294967295");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"uid\":\"0\"}", "\"uid\" is a string");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"timeout_ms\":1.5}", "is a number");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"timeout_ms\":99999999999999}",
		       "\"timeout_ms\" is 99999999999999");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"stdin\":1}",
		       "\"stdin\" is an integer");
	expect_refused("{\"op\":\"exec\",\"argv\":[\"ls\"],\"cwdd\":\"/\"}",
		       "unknown field \"cwdd\"");
}

static void test_path_ops(void **state)
{
	(void)state;
	struct agent_request req;
	char why[256];

	assert_int_equal(parse("{\"op\":\"put\",\"path\":\"/a/b\"}", &req, why, sizeof(why)), 0);
	assert_int_equal(req.op, AGENT_OP_PUT);
	assert_int_equal(req.file.mode, 0644);
	agent_request_free(&req);
	assert_int_equal(
	    parse("{\"op\":\"put\",\"path\":\"/a\",\"mode\":493}", &req, why, sizeof(why)), 0);
	assert_int_equal(req.file.mode, 0755);
	agent_request_free(&req);
	assert_int_equal(
	    parse("{\"op\":\"rm\",\"path\":\"/a\",\"recursive\":true}", &req, why, sizeof(why)), 0);
	assert_true(req.file.recursive);
	agent_request_free(&req);

	expect_refused("{\"op\":\"get\"}", "missing field \"path\"");
	expect_refused("{\"op\":\"stat\",\"path\":\"rel\"}", "not absolute");
	expect_refused("{\"op\":\"ls\",\"path\":[]}", "\"path\" is an array");
	expect_refused("{\"op\":\"put\",\"path\":\"/a\",\"mode\":4096}", "\"mode\" is 4096");
	expect_refused("{\"op\":\"get\",\"path\":\"/a\",\"mode\":1}", "unknown field \"mode\"");
	expect_refused("{\"op\":\"rm\",\"path\":\"/a\",\"recursive\":\"yes\"}", "is a string");

	char long_path[5000] = "{\"op\":\"stat\",\"path\":\"/";
	size_t n = strlen(long_path);
	memset(long_path + n, 'a', 4200);
	strcpy(long_path + n + 4200, "\"}");
	expect_refused(long_path, "path of 4201 bytes");
}

static void test_shutdown(void **state)
{
	(void)state;
	struct agent_request req;
	char why[256];

	assert_int_equal(
	    parse("{\"op\":\"shutdown\",\"action\":\"reboot\"}", &req, why, sizeof(why)), 0);
	assert_true(req.reboot);
	agent_request_free(&req);
	assert_int_equal(
	    parse("{\"op\":\"shutdown\",\"action\":\"poweroff\"}", &req, why, sizeof(why)), 0);
	assert_false(req.reboot);
	agent_request_free(&req);
	expect_refused("{\"op\":\"shutdown\"}", "missing field \"action\"");
	expect_refused("{\"op\":\"shutdown\",\"action\":\"halt\"}", "action \"halt\"");
}

static void notify_json(char *out, size_t len, const char *gen, const char *entropy,
			const char *realtime, const char *hostname, const char *machine_id)
{
	snprintf(out, len,
		 "{\"op\":\"fork_notify\",\"generation\":\"%s\",\"entropy\":\"%s\","
		 "\"realtime_ns\":%s,\"hostname\":\"%s\",\"machine_id\":\"%s\"}",
		 gen, entropy, realtime, hostname, machine_id);
}

static void test_fork_notify(void **state)
{
	(void)state;
	struct agent_request req;
	char json[2048], why[256], big_entropy[600];

	notify_json(json, sizeof(json), gen32, entropy64, "1700000000123456789", "forkd-abc.local",
		    "0123456789ABCDEF0123456789abcdef");
	assert_int_equal(parse(json, &req, why, sizeof(why)), 0);
	assert_int_equal(req.op, AGENT_OP_FORK_NOTIFY);
	assert_int_equal(req.notify.generation[0], 0x00);
	assert_int_equal(req.notify.generation[15], 0xff);
	assert_int_equal(req.notify.entropy_len, 32);
	assert_int_equal(req.notify.entropy[31], 0x1f);
	assert_true(req.notify.realtime_ns == 1700000000123456789ll);
	assert_string_equal(req.notify.hostname, "forkd-abc.local");
	assert_string_equal(req.notify.machine_id, "0123456789abcdef0123456789abcdef");
	agent_request_free(&req);

	memset(big_entropy, 'a', 512);
	big_entropy[512] = '\0';
	notify_json(json, sizeof(json), gen32, big_entropy, "1", "h", gen32);
	assert_int_equal(parse(json, &req, why, sizeof(why)), 0);
	assert_int_equal(req.notify.entropy_len, 256);
	agent_request_free(&req);

	big_entropy[514] = '\0';
	big_entropy[512] = big_entropy[513] = 'a';
	notify_json(json, sizeof(json), gen32, big_entropy, "1", "h", gen32);
	expect_refused(json, "\"entropy\" is not hex of 32..256 bytes");
	notify_json(json, sizeof(json), gen32, "00ff", "1", "h", gen32);
	expect_refused(json, "\"entropy\" is not hex");
	notify_json(json, sizeof(json), gen32, entropy64 + 1, "1", "h", gen32);
	expect_refused(json, "\"entropy\" is not hex");
	notify_json(json, sizeof(json), "0011", entropy64, "1", "h", gen32);
	expect_refused(json, "\"generation\" is not 32 hex digits");
	notify_json(json, sizeof(json), "0011223344556677889900aabbccddzz", entropy64, "1", "h",
		    gen32);
	expect_refused(json, "\"generation\" is not 32 hex digits");
	notify_json(json, sizeof(json), gen32, entropy64, "-1", "h", gen32);
	expect_refused(json, "\"realtime_ns\" is -1");
	notify_json(json, sizeof(json), gen32, entropy64, "\"1\"", "h", gen32);
	expect_refused(json, "\"realtime_ns\" is a string");
	notify_json(json, sizeof(json), gen32, entropy64, "1", "bad_host", gen32);
	expect_refused(json, "hostname \"bad_host\"");
	notify_json(json, sizeof(json), gen32, entropy64, "1", "", gen32);
	expect_refused(json, "hostname \"\"");
	notify_json(json, sizeof(json), gen32, entropy64, "1",
		    "a123456789b123456789c123456789d123456789e123456789f123456789g12345", gen32);
	expect_refused(json, "1..64 characters");
	notify_json(json, sizeof(json), gen32, entropy64, "1", "h",
		    "00000000000000000000000000000000");
	expect_refused(json, "all zeros");
	notify_json(json, sizeof(json), gen32, entropy64, "1", "h", "abc");
	expect_refused(json, "\"machine_id\" is not 32 hex digits");
	expect_refused("{\"op\":\"fork_notify\"}", "missing field \"generation\"");
}

static void test_signal(void **state)
{
	(void)state;
	char why[256];
	int sig = 0;

	assert_int_equal(
	    agent_signal_parse((const uint8_t *)"{\"signal\":15}", 13, &sig, why, sizeof(why)), 0);
	assert_int_equal(sig, 15);
	assert_int_equal(
	    agent_signal_parse((const uint8_t *)"{\"signal\":0}", 12, &sig, why, sizeof(why)),
	    -EINVAL);
	assert_int_equal(
	    agent_signal_parse((const uint8_t *)"{\"signal\":65}", 13, &sig, why, sizeof(why)),
	    -EINVAL);
	assert_int_equal(
	    agent_signal_parse((const uint8_t *)"{\"sig\":9}", 9, &sig, why, sizeof(why)), -EINVAL);
	assert_non_null(strstr(why, "unknown field \"sig\""));
	assert_int_equal(agent_signal_parse((const uint8_t *)"[9]", 3, &sig, why, sizeof(why)),
			 -EINVAL);
	assert_int_equal(agent_signal_parse((const uint8_t *)"{", 1, &sig, why, sizeof(why)),
			 -EINVAL);
}

static void test_hex_and_hostname(void **state)
{
	(void)state;
	uint8_t out[4];
	char text[9];

	assert_int_equal(agent_hex_decode("00Ff7a", out, 1, 4), 3);
	assert_memory_equal(out, "\x00\xff\x7a", 3);
	assert_int_equal(agent_hex_decode("0", out, 0, 4), -EINVAL);
	assert_int_equal(agent_hex_decode("0g", out, 0, 4), -EINVAL);
	assert_int_equal(agent_hex_decode("0011223344", out, 0, 4), -ERANGE);
	assert_int_equal(agent_hex_decode("", out, 1, 4), -ERANGE);
	agent_hex_encode((const uint8_t *)"\x01\xab\xff\x10", 4, text);
	assert_string_equal(text, "01abff10");

	assert_true(agent_hostname_valid("a"));
	assert_true(agent_hostname_valid("forkd-0123.example.org"));
	assert_false(agent_hostname_valid(""));
	assert_false(agent_hostname_valid("a b"));
	assert_false(agent_hostname_valid("a/b"));
	assert_false(agent_hostname_valid("h\xc3\xa9"));
	char longest[66];
	memset(longest, 'x', 65);
	longest[65] = '\0';
	assert_false(agent_hostname_valid(longest));
	longest[64] = '\0';
	assert_true(agent_hostname_valid(longest));
}

static void test_env(void **state)
{
	(void)state;
	static const char *const defaults[] = {"PATH=/bin", "HOME=/root", NULL};
	json_t *env = json_pack("{s:s,s:s}", "HOME", "/home/x", "LANG", "C.UTF-8");
	char **out = agent_exec_env(defaults, env);

	assert_non_null(out);
	assert_string_equal(out[0], "PATH=/bin");
	/* Replaced defaults are dropped; the request's values follow in its order. */
	int home = 0, lang = 0, n = 0;
	for (; out[n]; n++) {
		home += strcmp(out[n], "HOME=/home/x") == 0;
		lang += strcmp(out[n], "LANG=C.UTF-8") == 0;
		assert_string_not_equal(out[n], "HOME=/root");
	}
	assert_int_equal(n, 3);
	assert_int_equal(home, 1);
	assert_int_equal(lang, 1);
	agent_env_free(out);
	json_decref(env);

	out = agent_exec_env(defaults, NULL);
	assert_string_equal(out[1], "HOME=/root");
	assert_null(out[2]);
	agent_env_free(out);
}

static void test_exit_json(void **state)
{
	(void)state;
	json_t *j = agent_exit_json(3 << 8, false);
	char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);

	assert_string_equal(text, "{\"exit_code\":3,\"timed_out\":false}");
	free(text);
	json_decref(j);
	j = agent_exit_json(SIGKILL, true);
	text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
	assert_string_equal(text, "{\"signal\":9,\"timed_out\":true}");
	free(text);
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_not_an_object), cmocka_unit_test(test_exec_full),
	    cmocka_unit_test(test_exec_refused),  cmocka_unit_test(test_path_ops),
	    cmocka_unit_test(test_shutdown),	  cmocka_unit_test(test_fork_notify),
	    cmocka_unit_test(test_signal),	  cmocka_unit_test(test_hex_and_hostname),
	    cmocka_unit_test(test_env),		  cmocka_unit_test(test_exit_json),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
