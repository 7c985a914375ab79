/* SPDX-License-Identifier: MIT */
/*
 * Fan-out from a snapshot (`forkd spawn`, docs/branch.md "Fan-out from a
 * snapshot"): one forkd-vmm restores a snapshot of pattern-writing probe
 * guests and its BRANCH zygote forks the children. Checked inside (every
 * child's writers freeze at its new generation ID and its memory verifies
 * strictly; the IDs differ) and outside (distinct pids that are the pid files',
 * each answering its own control socket; no fan-out source or zygote left;
 * killing one child leaves the others; `forkd kill` ends them all), bad input
 * refused with the input named, and a failing child leaves nothing running.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"

#define TIMEOUT_MS 30000
#define FANOUT_N   8
#define MAX_PIDS   64

static char dir[256], snap[300], forkd[400];

static void path_in(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

/* A live snapshot of a probe guest whose two pattern writers freeze when the genid changes. */
static int make_snapshot(void)
{
	char sock[300], req[600];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--cpus",
			"2",
			"--mem",
			"256M",
			"--append",
			"work=pattern,pattern pattern_mib=16 pattern_freeze=genid",
			"--control",
			sock,
			NULL};
	struct vmm_proc p;
	json_t *r;

	path_in(sock, sizeof(sock), "source.sock");
	path_in(snap, sizeof(snap), "snap");
	if (vmm_start(&p, argv) < 0)
		return -1;
	if (!vmm_need_line(&p, "DONE", TIMEOUT_MS)) {
		vmm_free(&p);
		return -1;
	}
	usleep(200 * 1000); /* the writers are well under way */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	r = harness_call_expect(sock, req, true);
	json_decref(r);
	json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
	if (vmm_wait(&p, TIMEOUT_MS) != 0 || !r) {
		vmm_free(&p);
		return -1;
	}
	vmm_free(&p);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	snprintf(forkd, sizeof(forkd), "%s/forkd",
		 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build");
	if (harness_tmpdir_create(dir, sizeof(dir), "fanout") < 0)
		return -1;
	if (make_snapshot() < 0) {
		fprintf(stderr, "fanout: could not make the pattern snapshot\n");
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

/* Runs a shell command; its stdout and stderr (together) into out; returns its exit status. */
static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t len, const char *fmt, ...)
{
	char cmd[4096];
	size_t used = 0;
	va_list ap;
	FILE *f;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd) - 8, fmt, ap);
	va_end(ap);
	strcat(cmd, " 2>&1");
	f = popen(cmd, "r");
	assert_non_null(f);
	out[0] = '\0';
	while (used + 1 < len) {
		size_t n = fread(out + used, 1, len - 1 - used, f);
		if (n == 0)
			break;
		used += n;
	}
	out[used] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static char *child_line(const char *out, int k, const char *prefix, int skip)
{
	char log[600];
	char *line;

	snprintf(log, sizeof(log), "%s/child-%d/serial.log", out, k);
	line = file_wait_line(log, prefix, skip, TIMEOUT_MS);
	if (!line) {
		char cmd[1400];
		fprintf(stderr, "child %d: no line starting with '%s'; its console and errors:\n",
			k, prefix);
		snprintf(cmd, sizeof(cmd), "cat '%s' '%s/child-%d.err' '%s/fanout.err' >&2", log,
			 out, k, out);
		if (system(cmd)) {
		}
	}
	assert_non_null(line);
	return line;
}

/* Inside child k: its writers froze at its new genid and its memory is one instant. */
static void child_verify_strict(const char *out, int k, char *genid, size_t genid_len)
{
	char in[600], log[600], want[64], buf[32];
	char *l;
	int skip;

	free(child_line(out, k, "pattern.frozen=1", 0));
	l = child_line(out, k, "genid.changed=", 0);
	assert_non_null(line_value(l, "genid.changed", genid, genid_len));
	free(l);
	snprintf(log, sizeof(log), "%s/child-%d/serial.log", out, k);
	snprintf(in, sizeof(in), "%s/child-%d/serial.in", out, k);
	skip = file_count_lines(log);
	assert_int_equal(fifo_send(in, "verify strict\n"), 0);
	for (int cpu = 0; cpu < 2; cpu++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", cpu);
		l = child_line(out, k, want, skip);
		snprintf(want, sizeof(want), "cpu%d.verify", cpu);
		assert_non_null(line_value(l, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict"))
			fail_msg("child %d: %s", k, l);
		free(l);
	}
}

/* Outside child k: its pid file names a live VMM that answers its own control socket. */
static pid_t child_pid_checked(const char *out, int k)
{
	char path[600];
	json_t *r;
	FILE *f;
	int pid = 0;

	snprintf(path, sizeof(path), "%s/child-%d/pid", out, k);
	f = fopen(path, "r");
	assert_non_null(f);
	assert_int_equal(fscanf(f, "%d", &pid), 1);
	fclose(f);
	assert_true(pid > 1);
	assert_int_equal(kill(pid, 0), 0);
	snprintf(path, sizeof(path), "%s/child-%d/control.sock", out, k);
	r = harness_call_expect(path, "{\"cmd\":\"status\"}", true);
	assert_non_null(r);
	json_decref(r);
	return pid;
}

static int count_lines_with(const char *text, const char *needle)
{
	int n = 0;

	for (const char *p = text; (p = strstr(p, needle)); p += strlen(needle))
		n++;
	return n;
}

static void ping(const char *out, int k)
{
	char path[600];
	char *l;

	snprintf(path, sizeof(path), "%s/child-%d/serial.in", out, k);
	assert_int_equal(fifo_send(path, "ping\n"), 0);
	snprintf(path, sizeof(path), "%s/child-%d/serial.log", out, k);
	l = file_wait_line(path, "pong", 0, TIMEOUT_MS);
	assert_non_null(l);
	free(l);
}

/* VMM processes whose command line names `out` (the fan-out source, zygote, children). */
static size_t vmms_of(const char *out)
{
	pid_t pids[MAX_PIDS];

	return harness_vmm_pids(out, pids, MAX_PIDS);
}

static void test_fanout_children_are_full_vms(void **state)
{
	char out[300], text[16384], genids[FANOUT_N][64];
	pid_t pids[FANOUT_N];

	(void)state;
	path_in(out, sizeof(out), "fan");
	/* The default for N > 1: fan-out. */
	if (run(text, sizeof(text), "'%s' spawn '%s' -n %d --out '%s' --vmm '%s'", forkd, snap,
		FANOUT_N, out, harness_vmm()) != 0)
		fail_msg("forkd spawn: %s", text);
	assert_int_equal(count_lines_with(text, "\"running_ms\""), FANOUT_N);
	assert_non_null(strstr(text, "\"mode\":\"fanout\""));
	/* Only the children are left: the fan-out source and its zygote have exited. */
	assert_int_equal(vmms_of(out), FANOUT_N);
	for (int k = 0; k < FANOUT_N; k++) {
		pids[k] = child_pid_checked(out, k);
		/* Each its own session, as an exec'd child is (setsid). */
		assert_int_equal(getsid(pids[k]), pids[k]);
		child_verify_strict(out, k, genids[k], sizeof(genids[k]));
		for (int j = 0; j < k; j++) {
			assert_int_not_equal(pids[j], pids[k]);
			assert_string_not_equal(genids[j], genids[k]);
		}
	}
	/* Killing one leaves the others running. */
	assert_int_equal(kill(pids[3], SIGKILL), 0);
	for (int i = 0; i < 200 && kill(pids[3], 0) == 0; i++)
		usleep(10 * 1000);
	for (int k = 0; k < FANOUT_N; k++) {
		if (k == 3)
			continue;
		assert_int_equal(child_pid_checked(out, k), pids[k]);
		ping(out, k);
	}
	assert_int_equal(vmms_of(out), FANOUT_N - 1);
	/* A second spawn into the same directory is refused (its children exist). */
	assert_int_equal(run(text, sizeof(text), "'%s' spawn '%s' -n 2 --out '%s' --vmm '%s'",
			     forkd, snap, out, harness_vmm()),
			 2);
	assert_non_null(strstr(text, "already exists"));
	/* forkd kill ends all the others. */
	if (run(text, sizeof(text), "'%s' kill '%s'", forkd, out) != 0)
		fail_msg("forkd kill: %s", text);
	assert_non_null(strstr(text, "\"terminated\":7"));
	assert_non_null(strstr(text, "\"not_running\":1"));
	assert_int_equal(vmms_of(out), 0);
}

/* --mode exec keeps one forkd-vmm per child, each a full VM too. */
static void test_exec_mode_still_works(void **state)
{
	char out[300], text[8192], g0[64], g1[64];

	(void)state;
	path_in(out, sizeof(out), "exec");
	if (run(text, sizeof(text), "'%s' spawn '%s' -n 2 --mode exec --out '%s' --vmm '%s'", forkd,
		snap, out, harness_vmm()) != 0)
		fail_msg("forkd spawn --mode exec: %s", text);
	assert_non_null(strstr(text, "\"mode\":\"exec\""));
	assert_int_equal(vmms_of(out), 2);
	child_verify_strict(out, 0, g0, sizeof(g0));
	child_verify_strict(out, 1, g1, sizeof(g1));
	assert_string_not_equal(g0, g1);
	if (run(text, sizeof(text), "'%s' kill '%s'", forkd, out) != 0)
		fail_msg("forkd kill: %s", text);
	assert_int_equal(vmms_of(out), 0);
}

static void expect_refused(int want_status, const char *needle, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void expect_refused(int want_status, const char *needle, const char *fmt, ...)
{
	char cmd[2048], text[8192];
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	status = run(text, sizeof(text), "%s", cmd);
	if (status != want_status || !strstr(text, needle))
		fail_msg("%s: exit status %d (expected %d), output '%s' (expected '%s' in it)", cmd,
			 status, want_status, text, needle);
}

static void test_bad_input_is_refused(void **state)
{
	char out[300], missing[300], empty[300];
	const char *vmm = harness_vmm();

	(void)state;
	path_in(out, sizeof(out), "bad");
	path_in(missing, sizeof(missing), "no-such-snapshot");
	path_in(empty, sizeof(empty), "not-a-snapshot");
	assert_int_equal(mkdir(empty, 0755), 0);

	expect_refused(2, "-n '0': expected a number of children",
		       "'%s' spawn '%s' -n 0 --out '%s'", forkd, snap, out);
	expect_refused(2, "-n 'many'", "'%s' spawn '%s' -n many --out '%s'", forkd, snap, out);
	expect_refused(2, "-n '5000'", "'%s' spawn '%s' -n 5000 --out '%s'", forkd, snap, out);
	expect_refused(2, "--mode 'fork': expected fanout",
		       "'%s' spawn '%s' -n 2 --mode fork --out '%s'", forkd, snap, out);
	expect_refused(2, "no-such-snapshot", "'%s' spawn '%s' -n 4 --out '%s' --vmm '%s'", forkd,
		       missing, out, vmm);
	/* A directory that is no snapshot: named, and nothing started. */
	expect_refused(2, "not-a-snapshot", "'%s' spawn '%s' -n 4 --out '%s' --vmm '%s'", forkd,
		       empty, out, vmm);
	assert_int_equal(vmms_of(out), 0);
	/* The VMM's own options. */
	expect_refused(2, "--fanout '0': expected a number of children, 1 to 1024",
		       "'%s' --restore '%s' --fanout 0 --fanout-dir '%s'", vmm, snap, out);
	expect_refused(2, "--fanout '1025'", "'%s' --restore '%s' --fanout 1025 --fanout-dir '%s'",
		       vmm, snap, out);
	expect_refused(2, "expected --fanout-dir", "'%s' --restore '%s' --fanout 2", vmm, snap);
	expect_refused(2, "--fanout-dir only applies with --fanout",
		       "'%s' --restore '%s' --fanout-dir '%s'", vmm, snap, out);
	expect_refused(2, "--fanout only applies with --restore",
		       "'%s' --kernel '%s' --fanout 2 --fanout-dir '%s'", vmm, harness_probe(),
		       out);
	expect_refused(2, "no-such-dir",
		       "'%s' --restore '%s' --fanout 2 --fanout-dir '%s/no-such-dir'", vmm, snap,
		       out);
}

/* A child whose VM cannot be built fails the whole fan-out, and nothing is left running. */
static void test_failed_child_leaves_nothing(void **state)
{
	char out[300], path[600];
	struct stat st;

	(void)state;
	path_in(out, sizeof(out), "fault");
	expect_refused(1, "injected failure creating the VM",
		       "FORKD_FAULT_INJECT=child-vm '%s' spawn '%s' -n 4 --out '%s' --vmm '%s'",
		       forkd, snap, out, harness_vmm());
	assert_int_equal(vmms_of(out), 0);
	for (int k = 0; k < 4; k++) {
		snprintf(path, sizeof(path), "%s/child-%d/pid", out, k);
		assert_int_not_equal(stat(path, &st), 0);
	}
}

/* Blocks of a probe's disk each child writes and reads (its sector is 100 + K). */
#define DISK_KIDS 4

static void child_send(const char *out, int k, const char *text)
{
	char in[600];

	snprintf(in, sizeof(in), "%s/child-%d/serial.in", out, k);
	assert_int_equal(fifo_send(in, text), 0);
}

/*
 * A snapshot with a writable disk and a vsock device: each forked child gets
 * its own disk overlay (OUT/child-K/overlay) and vsock socket; the source's
 * image is never written, and the fan-out leaves no copy of its own behind.
 */
static void test_children_keep_their_own_disks(void **state)
{
	char sock[300], dsnap[300], disk[300], vsock[300], out[300], text[8192], req[600], tmp[300];
	char line[64], want[64], path[700], buf[512];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--mem",
			"64M",
			"--append",
			"work=idle",
			"--disk",
			disk,
			"--vsock",
			vsock,
			"--control",
			sock,
			NULL};
	struct vmm_proc p;
	struct stat st;
	int fd;

	(void)state;
	path_in(sock, sizeof(sock), "disk-source.sock");
	path_in(dsnap, sizeof(dsnap), "snap-disk");
	path_in(disk, sizeof(disk), "source.img");
	path_in(vsock, sizeof(vsock), "source.vsock");
	path_in(out, sizeof(out), "disks");
	fd = open(disk, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(vmm_need_line(&p, "DONE", TIMEOUT_MS));
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", dsnap);
	json_decref(harness_call_expect(sock, req, true));
	json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);

	/* The source's own overlay copy goes under TMPDIR: it must not stay there. */
	path_in(tmp, sizeof(tmp), "tmp");
	assert_int_equal(mkdir(tmp, 0700), 0);
	if (run(text, sizeof(text), "TMPDIR='%s' '%s' spawn '%s' -n %d --out '%s' --vmm '%s'", tmp,
		forkd, dsnap, DISK_KIDS, out, harness_vmm()) != 0)
		fail_msg("forkd spawn: %s", text);
	assert_int_equal(rmdir(tmp), 0); /* empty */
	assert_non_null(strstr(text, "\"mode\":\"fanout\""));
	for (int k = 0; k < DISK_KIDS; k++) {
		snprintf(path, sizeof(path), "%s/child-%d/vsock.sock", out, k);
		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISSOCK(st.st_mode));
		snprintf(line, sizeof(line), "blkw %d child%d\n", 100 + k, k);
		child_send(out, k, line);
	}
	for (int k = 0; k < DISK_KIDS; k++) {
		snprintf(want, sizeof(want), "blkw.sector=%d status=0", 100 + k);
		free(child_line(out, k, want, 0));
	}
	/* Each reads all the sectors: it sees only its own write. */
	for (int k = 0; k < DISK_KIDS; k++)
		for (int s = 0; s < DISK_KIDS; s++) {
			snprintf(line, sizeof(line), "blkr %d\n", 100 + s);
			child_send(out, k, line);
		}
	for (int k = 0; k < DISK_KIDS; k++)
		for (int s = 0; s < DISK_KIDS; s++) {
			snprintf(want, sizeof(want), "blkr.sector=%d ", 100 + s);
			char *l = child_line(out, k, want, 0);
			snprintf(want, sizeof(want), "text=forkd-blkw child%d", s);
			if (s == k)
				assert_non_null(strstr(l, want));
			else
				assert_null(strstr(l, "forkd-blkw"));
			free(l);
		}
	if (run(text, sizeof(text), "'%s' kill '%s'", forkd, out) != 0)
		fail_msg("forkd kill: %s", text);
	assert_int_equal(vmms_of(out), 0);
	/* Outside: each overlay holds its child's write only; the source's image none. */
	for (int k = 0; k < DISK_KIDS; k++) {
		snprintf(path, sizeof(path), "%s/child-%d/overlay/disk0.img", out, k);
		fd = open(path, O_RDONLY);
		assert_true(fd >= 0);
		for (int s = 0; s < DISK_KIDS; s++) {
			assert_int_equal(pread(fd, buf, 512, (100 + s) * 512), 512);
			snprintf(want, sizeof(want), "forkd-blkw child%d", s);
			assert_int_equal(memcmp(buf, want, strlen(want)) == 0, s == k);
		}
		close(fd);
	}
	fd = open(disk, O_RDONLY);
	assert_true(fd >= 0);
	for (int s = 0; s < DISK_KIDS; s++) {
		assert_int_equal(pread(fd, buf, 512, (100 + s) * 512), 512);
		assert_int_equal(buf[0], 0);
	}
	close(fd);
	/* The branch's copy of the disk and the source's vsock socket are gone. */
	snprintf(path, sizeof(path), "%s/disk0.img", out);
	assert_int_not_equal(stat(path, &st), 0);
	snprintf(path, sizeof(path), "%s/fanout-vsock.sock", out);
	assert_int_not_equal(stat(path, &st), 0);
}

/*
 * The fan-out source does not finish within --timeout (its children are slow
 * to report): forkd spawn kills it, and the zygote and children it started,
 * never reported, are killed too (they come to forkd spawn, their subreaper).
 */
static void test_timeout_leaves_nothing(void **state)
{
	char out[300], path[600];
	struct stat st;

	(void)state;
	path_in(out, sizeof(out), "slow");
	expect_refused(
	    1, "did not finish within 1000 ms",
	    "FORKD_FAULT_INJECT=child-slow '%s' spawn '%s' -n 4 --timeout 1000 --out '%s' "
	    "--vmm '%s'",
	    forkd, snap, out, harness_vmm());
	/* They existed (built, waiting to report) and are gone now. */
	snprintf(path, sizeof(path), "%s/child-3", out);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(vmms_of(out), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_fanout_children_are_full_vms),
	    cmocka_unit_test(test_exec_mode_still_works),
	    cmocka_unit_test(test_children_keep_their_own_disks),
	    cmocka_unit_test(test_bad_input_is_refused),
	    cmocka_unit_test(test_failed_child_leaves_nothing),
	    cmocka_unit_test(test_timeout_leaves_nothing),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("fan-out from a snapshot", tests, setup, teardown);
}
