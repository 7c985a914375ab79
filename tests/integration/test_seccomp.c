/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm's seccomp filters (docs/seccomp.md) with the probe guest: every
 * thread of a booted, a restored and a BRANCHed VM runs under its role's
 * filter (seen from outside in /proc), the guest's workloads and its
 * console work under it, and a guest-driven escape attempt
 * (FORKD_FAULT_INJECT=seccomp-escape: the VMM's handler for an MMIO write
 * nobody claims runs a shell) ends that VMM with status 5 and the log line,
 * runs no shell, and leaves another VM running. Without the filter the same
 * attempt does run the shell: the test could fail.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "jail/seccomp.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS  30000
#define ESCAPE_LINE "forkd-vmm: seccomp: thread vcpu made forbidden syscall execve (nr 59)"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "seccomp");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

/* A task's "Key:\tvalue" line from /proc/PID/task/TID/status, as a number; -1 if absent. */
static long task_status(pid_t pid, const char *tid, const char *key)
{
	char path[128], line[256];
	size_t klen = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/task/%s/status", (int)pid, tid);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, key, klen) == 0 && line[klen] == ':')
			v = strtol(line + klen + 1, NULL, 10);
	if (f)
		fclose(f);
	return v;
}

struct filter_census {
	int tasks, vcpus;
	int unfiltered;	    /* tasks with Seccomp other than 2 (filter mode) */
	int main_filters;   /* Seccomp_filters of the main thread */
	int vcpu_filters;   /* Seccomp_filters of every vCPU thread (-1 if they differ) */
	long seccomp_modes; /* Seccomp of the main thread */
};

/* Looks at every thread of pid from outside. */
static void census(pid_t pid, struct filter_census *c)
{
	char path[320], comm[64];
	struct dirent *e;
	DIR *d;

	memset(c, 0, sizeof(*c));
	c->vcpu_filters = -2;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d))) {
		FILE *f;
		long mode, filters;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%s/comm", (int)pid, e->d_name);
		f = fopen(path, "r");
		comm[0] = '\0';
		if (f && !fgets(comm, sizeof(comm), f))
			comm[0] = '\0';
		if (f)
			fclose(f);
		mode = task_status(pid, e->d_name, "Seccomp");
		filters = task_status(pid, e->d_name, "Seccomp_filters");
		c->tasks++;
		if (mode != 2)
			c->unfiltered++;
		if (atoi(e->d_name) == (int)pid) {
			c->main_filters = (int)filters;
			c->seccomp_modes = mode;
		} else if (strncmp(comm, "vcpu", 4) == 0) {
			c->vcpus++;
			if (c->vcpu_filters == -2)
				c->vcpu_filters = (int)filters;
			else if (c->vcpu_filters != (int)filters)
				c->vcpu_filters = -1;
		}
	}
	closedir(d);
}

static void ping(struct vmm_proc *p)
{
	int before = vmm_count_lines(p, "pong");

	assert_int_equal(vmm_send(p, "ping\n"), 0);
	for (long long end = harness_deadline(TIMEOUT_MS); now_ms() < end;) {
		if (vmm_count_lines(p, "pong") > before)
			return;
		vmm_wait_line(p, "\x01 no such line: only reads the console", 100);
	}
	vmm_dump(p);
	fail_msg("no pong");
}

static json_t *call(const char *sock, const char *req)
{
	json_t *r = harness_call_expect(sock, req, true);

	assert_non_null(r);
	return r;
}

/* Booted, snapshotted, restored and branched: every thread filtered, one filter per role. */
static void test_every_thread_runs_under_its_filter(void **state)
{
	char sock[300], snap[300], req[800], bdir[300], rsock[300], kid_log[400], kid_in[400];
	struct filter_census c;
	struct vmm_proc p, r;
	json_t *reply, *kid;
	char *line;
	int kid_pid;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/src.sock", dir);
	probe_start(&p, NULL, "256M", "2", "work=touch,pattern pattern_mib=8", "--control", sock,
		    NULL);
	probe_need_line(&p, "DONE", TIMEOUT_MS);
	census(p.pid, &c);
	assert_int_equal(c.vcpus, 2);
	assert_int_equal(c.unfiltered, 0);
	assert_int_equal(c.main_filters, 1);
	assert_int_equal(c.vcpu_filters, 2); /* the process filter and the vCPU one */
	ping(&p);
	assert_int_equal(vmm_send(&p, "verify\n"), 0);
	probe_need_line(&p, "cpu1.verify=ok", TIMEOUT_MS);

	/* Snapshot (main thread, under its filter), then a restored VM. */
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	json_decref(call(sock, req));
	snprintf(rsock, sizeof(rsock), "%s/restored.sock", dir);
	{
		char *argv[] = {(char *)harness_vmm(), "--restore", snap, "--control", rsock, NULL};
		assert_int_equal(vmm_start(&r, argv), 0);
	}
	ping(&r);
	census(r.pid, &c);
	assert_int_equal(c.unfiltered, 0);
	assert_int_equal(c.main_filters, 1);
	assert_int_equal(c.vcpu_filters, 2);
	assert_int_equal(vmm_send(&r, "poweroff\n"), 0);
	probe_expect_exit(&r, 0, TIMEOUT_MS);
	vmm_free(&r);

	/* BRANCH: the child inherits the process filter (not one more) and adds its vCPUs'. */
	snprintf(bdir, sizeof(bdir), "%s/branch", dir);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s\"}", bdir);
	reply = call(sock, req);
	kid = json_array_get(json_object_get(reply, "children"), 0);
	assert_non_null(kid);
	kid_pid = (int)json_integer_value(json_object_get(kid, "pid"));
	snprintf(kid_log, sizeof(kid_log), "%s/serial.log",
		 json_string_value(json_object_get(kid, "dir")));
	snprintf(kid_in, sizeof(kid_in), "%s/serial.in",
		 json_string_value(json_object_get(kid, "dir")));
	json_decref(reply);
	assert_int_equal(fifo_send(kid_in, "ping\n"), 0);
	line = file_wait_line(kid_log, "pong", 0, TIMEOUT_MS);
	assert_non_null(line);
	free(line);
	census(kid_pid, &c);
	assert_int_equal(c.vcpus, 2);
	assert_int_equal(c.unfiltered, 0);
	assert_int_equal(c.main_filters, 1);
	assert_int_equal(c.vcpu_filters, 2);
	assert_int_equal(fifo_send(kid_in, "verify\n"), 0);
	line = file_wait_line(kid_log, "cpu1.verify=ok", 0, TIMEOUT_MS);
	assert_non_null(line);
	free(line);
	assert_int_equal(fifo_send(kid_in, "poweroff\n"), 0);

	/* The source runs on. */
	ping(&p);
	assert_int_equal(vmm_send(&p, "poweroff\n"), 0);
	probe_expect_exit(&p, 0, TIMEOUT_MS);
	vmm_free(&p);
}

/* --seccomp=off: no filter at all (what the measurement compares against). */
static void test_off_means_no_filter(void **state)
{
	struct filter_census c;
	struct vmm_proc p;

	(void)state;
	probe_start(&p, NULL, "128M", "1", "work=idle", "--seccomp=off", NULL);
	probe_need_line(&p, "READY", TIMEOUT_MS);
	census(p.pid, &c);
	assert_int_equal(c.seccomp_modes, 0);
	assert_int_equal(c.unfiltered, c.tasks);
	assert_int_equal(vmm_send(&p, "poweroff\n"), 0);
	probe_expect_exit(&p, 0, TIMEOUT_MS);
	vmm_free(&p);
}

static void start_escape(struct vmm_proc *p, const char *disk, const char *marker, const char *mode)
{
	uint8_t first4k[4096];

	probe_make_disk(disk, 1 << 20, first4k);
	setenv("FORKD_FAULT_INJECT", "seccomp-escape", 1);
	setenv("FORKD_SECCOMP_ESCAPE_MARKER", marker, 1);
	probe_start(p, NULL, "128M", "1", "work=hostile then=poweroff", "--disk", disk, mode, NULL);
	unsetenv("FORKD_FAULT_INJECT");
	unsetenv("FORKD_SECCOMP_ESCAPE_MARKER");
}

/* The guest reaches a handler that tries a shell: the VMM dies, nothing ran, others run on. */
static void test_guest_driven_escape_is_stopped(void **state)
{
	char disk[300], marker[300];
	struct vmm_proc bystander, p;
	struct stat st;

	(void)state;
	probe_start(&bystander, NULL, "128M", "1", "work=touch", NULL);
	probe_need_line(&bystander, "DONE", TIMEOUT_MS);
	snprintf(disk, sizeof(disk), "%s/escape.img", dir);
	snprintf(marker, sizeof(marker), "%s/escaped", dir);
	start_escape(&p, disk, marker, "--seccomp=on");
	probe_expect_exit(&p, FK_SECCOMP_EXIT_STATUS, 120000);
	if (!strstr(p.err_text, ESCAPE_LINE)) {
		vmm_dump(&p);
		fail_msg("no '%s' on the VMM's stderr", ESCAPE_LINE);
	}
	/* The guest got as far as the stray MMIO write, and no further. */
	assert_non_null(vmm_wait_line(&p, "hostile.queue_num_not_pow2", 0));
	assert_int_equal(vmm_count_lines(&p, "hostile.done"), 0);
	assert_int_equal(stat(marker, &st), -1);
	vmm_free(&p);

	ping(&bystander);
	probe_expect_kv(&bystander, "cpu0.done", "touch");
	assert_int_equal(vmm_send(&bystander, "poweroff\n"), 0);
	probe_expect_exit(&bystander, 0, TIMEOUT_MS);
	vmm_free(&bystander);
}

/* Whether the kernel log holds a seccomp audit record of pid's syscall nr. */
static bool kernel_logged(pid_t pid, int nr)
{
	char line[1024], want_pid[32], want_nr[32];
	bool found = false;
	FILE *f = popen("dmesg 2>&1", "r");

	assert_non_null(f);
	snprintf(want_pid, sizeof(want_pid), " pid=%d ", (int)pid);
	snprintf(want_nr, sizeof(want_nr), " syscall=%d ", nr);
	while (fgets(line, sizeof(line), f))
		found |=
		    strstr(line, "type=1326") && strstr(line, want_pid) && strstr(line, want_nr);
	pclose(f);
	return found;
}

/*
 * The same attempt without the filter, and with --seccomp=log: the shell
 * does run; with log, the kernel's audit record names the call (dmesg).
 */
static void test_escape_runs_without_the_filter(void **state)
{
	static const char *modes[] = {"--seccomp=off", "--seccomp=log"};
	char disk[300], marker[300];

	(void)state;
	for (size_t i = 0; i < 2; i++) {
		struct vmm_proc p;
		char *line;

		snprintf(disk, sizeof(disk), "%s/escape-%zu.img", dir, i);
		snprintf(marker, sizeof(marker), "%s/escaped-%zu", dir, i);
		start_escape(&p, disk, marker, modes[i]);
		/* The shell replaced the VMM and exited 0 after writing the marker. */
		probe_expect_exit(&p, 0, 120000);
		assert_null(strstr(p.err_text, "forbidden syscall"));
		line = file_wait_line(marker, "escaped", 0, 1000);
		if (!line)
			fail_msg("%s: the shell did not run", modes[i]);
		free(line);
		if (i == 1 && !kernel_logged(p.pid, 59))
			fail_msg(
			    "--seccomp=log: no 'type=1326 ... pid=%d ... syscall=59' (execve) in "
			    "dmesg; /proc/sys/kernel/seccomp/actions_logged must list log",
			    (int)p.pid);
		vmm_free(&p);
	}
}

static void test_bad_option(void **state)
{
	char *argv[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
			"--seccomp=maybe", NULL};
	struct vmm_proc p;

	(void)state;
	assert_int_equal(vmm_run_to_exit(&p, argv, TIMEOUT_MS), 2);
	assert_non_null(strstr(p.err_text, "--seccomp 'maybe': expected on, off or log"));
	vmm_free(&p);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_every_thread_runs_under_its_filter, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_off_means_no_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_driven_escape_is_stopped, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_escape_runs_without_the_filter, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_option, setup, teardown),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("forkd-vmm seccomp", tests, NULL, NULL);
}
