/* SPDX-License-Identifier: MIT */
/*
 * The control socket of forkd-vmm against the probe guest: pause, resume,
 * status and shutdown, checked from outside (replies, exit status) and from
 * inside (the guest's stall probe sees the pause as a gap in time).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"
#include "control/control.h"

#define TIMEOUT_MS 20000

static char sock[300];

static json_t *call(const char *cmd, bool want_ok)
{
	json_t *req = json_pack("{s:s}", "cmd", cmd), *reply = NULL;
	struct fk_err err = {0};

	if (control_call(sock, req, &reply, TIMEOUT_MS, &err) < 0)
		fail_msg("control_call %s: %s", cmd, err.msg);
	json_decref(req);
	assert_non_null(reply);
	assert_int_equal(json_is_true(json_object_get(reply, "ok")), want_ok);
	return reply;
}

static const char *str_field(json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));
	assert_non_null(s);
	return s;
}

static void test_pause_resume_seen_inside(void **state)
{
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--cpus",
			"2",
			"--append",
			"work=idle,stall stall_us=1000",
			"--control",
			sock,
			NULL};
	struct vmm_proc p;
	char buf[64];
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/forkd-ctl-%d.sock", harness_tmpdir(), getpid());
	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(vmm_wait_line(&p, "READY", TIMEOUT_MS));
	/* DONE follows the start of the workloads; give the stall loop time to run. */
	assert_non_null(vmm_wait_line(&p, "DONE", TIMEOUT_MS));
	usleep(200 * 1000);

	r = call("status", true);
	assert_string_equal(str_field(r, "state"), "running");
	assert_int_equal(json_integer_value(json_object_get(r, "vcpus")), 2);
	json_decref(r);

	r = call("resume", false); /* not paused */
	assert_non_null(strstr(str_field(r, "error"), "not paused"));
	json_decref(r);

	r = call("pause", true);
	assert_true(json_integer_value(json_object_get(r, "pause_us")) > 0);
	json_decref(r);
	r = call("pause", false); /* already paused */
	assert_non_null(strstr(str_field(r, "error"), "already paused"));
	json_decref(r);
	r = call("status", true);
	assert_string_equal(str_field(r, "state"), "paused");
	json_decref(r);

	/* While paused the guest runs nothing: its console stays silent. */
	vmm_send(&p, "ping\n");
	assert_null(vmm_wait_line(&p, "pong", 500));

	r = call("resume", true);
	json_decref(r);
	/* The queued command is answered once the vCPUs run again. */
	assert_non_null(vmm_wait_line(&p, "pong", TIMEOUT_MS));
	/*
	 * Inside, the stall probe saw a gap of at least the ~500 ms pause. It
	 * runs on cpu1: the BSP leaves its own console work out of its stall
	 * count, so a pause that lands there (likely where console exits are
	 * slow, as in the nested test host) would not show on cpu0.
	 */
	vmm_send(&p, "report\n");
	assert_non_null(vmm_wait_line(&p, "report.end", TIMEOUT_MS));
	assert_non_null(vmm_value(&p, "cpu1.stall_max_us", buf, sizeof(buf)));
	/* cpu1 may not have run since the resume when cpu0 answers: ask again until it has. */
	for (int reports = 1; strtoull(buf, NULL, 10) < 400000 && reports < 50; reports++) {
		usleep(100 * 1000);
		vmm_send(&p, "report\n");
		for (long long end = now_ms() + TIMEOUT_MS;
		     vmm_count_lines(&p, "report.end") <= reports && now_ms() < end;)
			vmm_wait_line(&p, "\x01", 100);
		assert_non_null(vmm_value(&p, "cpu1.stall_max_us", buf, sizeof(buf)));
	}
	if (strtoull(buf, NULL, 10) < 400000)
		vmm_dump(&p);
	assert_true(strtoull(buf, NULL, 10) >= 400000);

	r = call("shutdown", true);
	json_decref(r);
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	struct stat st;
	assert_int_equal(stat(sock, &st), -1); /* the socket is removed on exit */
	vmm_free(&p);
}

static void test_control_path_errors(void **state)
{
	char path[300];
	struct vmm_proc p;
	FILE *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/forkd-ctl-file-%d", harness_tmpdir(), getpid());
	f = fopen(path, "w");
	fclose(f);
	char *argv[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
			"--control",	       path,	   NULL};
	int status = vmm_run_to_exit(&p, argv, TIMEOUT_MS);
	if (status != 2)
		vmm_dump(&p);
	assert_int_equal(status, 2);
	assert_non_null(strstr(p.err_text, path));
	vmm_free(&p);
	unlink(path);
}

/* Reads the ready pipe until EOF (bounded): what the VMM wrote to it. */
static void read_all(int fd, char *buf, size_t len, int timeout_ms)
{
	size_t used = 0;
	long long end = now_ms() + timeout_ms;

	buf[0] = '\0';
	while (used < len - 1 && now_ms() < end) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(fd, buf + used, len - 1 - used);
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
}

/*
 * --ready-fd: "ready\n" then EOF once the control socket serves, so status answers on the
 * first try without polling; a VMM that fails before running closes it without a word; a bad
 * descriptor is a usage error naming the option.
 */
static void test_ready_fd(void **state)
{
	char fdnum[16], got[64];
	struct vmm_proc p;
	int pfd[2];
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/forkd-ready-%d.sock", harness_tmpdir(), getpid());
	assert_int_equal(pipe(pfd), 0); /* the write end inherited by the VMM */
	snprintf(fdnum, sizeof(fdnum), "%d", pfd[1]);
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--append",
			"work=idle",
			"--control",
			sock,
			"--ready-fd",
			fdnum,
			NULL};
	assert_int_equal(vmm_start(&p, argv), 0);
	close(pfd[1]);
	fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
	read_all(pfd[0], got, sizeof(got), TIMEOUT_MS);
	close(pfd[0]);
	if (strcmp(got, "ready\n") != 0)
		vmm_dump(&p);
	assert_string_equal(got, "ready\n");
	r = call("status", true); /* once: no retry */
	assert_string_equal(str_field(r, "state"), "running");
	json_decref(r);
	r = call("shutdown", true);
	json_decref(r);
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);

	/* A kernel that cannot load: the VMM exits, and the pipe closes with nothing in it. */
	assert_int_equal(pipe(pfd), 0);
	snprintf(fdnum, sizeof(fdnum), "%d", pfd[1]);
	char *bad[] = {(char *)harness_vmm(),
		       "--kernel",
		       "/nonexistent/forkd-kernel",
		       "--control",
		       sock,
		       "--ready-fd",
		       fdnum,
		       NULL};
	assert_int_equal(vmm_start(&p, bad), 0);
	close(pfd[1]);
	fcntl(pfd[0], F_SETFD, FD_CLOEXEC);
	read_all(pfd[0], got, sizeof(got), TIMEOUT_MS);
	close(pfd[0]);
	assert_string_equal(got, "");
	assert_true(vmm_wait(&p, TIMEOUT_MS) != 0);
	vmm_free(&p);

	/* Not a descriptor the VMM has: a usage error (2) naming the option. */
	char *closed[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
			  "--ready-fd",		 "999",	     NULL};
	assert_int_equal(vmm_run_to_exit(&p, closed, TIMEOUT_MS), 2);
	assert_non_null(strstr(p.err_text, "--ready-fd 999"));
	vmm_free(&p);
	char *low[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
		       "--ready-fd",	      "1",	  NULL};
	assert_int_equal(vmm_run_to_exit(&p, low, TIMEOUT_MS), 2);
	assert_non_null(strstr(p.err_text, "expected a descriptor number >= 3"));
	vmm_free(&p);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pause_resume_seen_inside),
	    cmocka_unit_test(test_control_path_errors),
	    cmocka_unit_test(test_ready_fd),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("forkd-vmm control socket", tests, NULL, NULL);
}
