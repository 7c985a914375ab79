/* SPDX-License-Identifier: MIT */
/*
 * Live snapshots of engine uffd-wp-async (src/state/live_async.c, docs/design/
 * userfaultfd.md "Variant B") with the probe guest, natively: a 2-vCPU pattern
 * guest snapshotted under write load restores (file and uffd modes) and
 * verifies strictly inside, while the source runs on and verifies live; the
 * same for a guest larger than 4 GiB whose writer lives above 4 GiB; a full
 * disk (a small tmpfs: ENOSPC) fails the snapshot, leaves no file and the VM
 * running; a second snapshot while one is written is refused; a VM that exits
 * mid-snapshot leaves nothing behind. On a kernel without WP_ASYNC or
 * PAGEMAP_SCAN every test checks the clear refusal instead, and says so.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"
#include "state/live_async.h"

#define TIMEOUT_MS 60000
#define PATTERN	   "work=pattern,pattern pattern_mib=64 pattern_freeze=genid"

static char dir[256], tmpfs_dir[300];
static bool supported; /* this kernel has WP_ASYNC and PAGEMAP_SCAN */
static char refusal[512];

static int setup(void **state)
{
	struct fk_err err = {0};

	(void)state;
	supported = live_async_supported(&err) == 0;
	snprintf(refusal, sizeof(refusal), "%s", err.msg);
	printf("# uffd-wp-async: %s\n",
	       supported ? "variant B runs (WP_ASYNC and PAGEMAP_SCAN present)"
			 : "the kernel refuses variant B; checking the refusal:");
	if (!supported)
		printf("# %s\n", refusal);
	return harness_tmpdir_create(dir, sizeof(dir), "uffdwpasync");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

static const char *need_line(struct vmm_proc *p, const char *prefix)
{
	const char *line = vmm_need_line(p, prefix, TIMEOUT_MS);

	assert_non_null(line);
	return line;
}

static json_t *call(const char *sock, const char *req, bool want_ok)
{
	json_t *reply = harness_call_expect(sock, req, want_ok);

	assert_non_null(reply);
	return reply;
}

/* forkd-uffd next to the VMM under test. */
static const char *uffd_binary(void)
{
	static char path[4200];
	char vmm[4096];

	snprintf(vmm, sizeof(vmm), "%s", harness_vmm());
	snprintf(path, sizeof(path), "%s/forkd-uffd", dirname(vmm));
	return path;
}

struct handler {
	pid_t pid;
	int out_fd; /* its stdout: the "listening" line, then the counts */
	char err_path[320];
	char sock[300];
	char out[4096];
	size_t out_len;
	int status;
};

/* Reads the handler's stdout until it contains needle or the deadline passes. */
static bool handler_read_until(struct handler *h, const char *needle, int timeout_ms)
{
	long long end = harness_deadline(timeout_ms);

	while (!strstr(h->out, needle) && now_ms() < end) {
		struct pollfd pfd = {.fd = h->out_fd, .events = POLLIN};
		ssize_t n;

		if (poll(&pfd, 1, 100) <= 0)
			continue;
		n = read(h->out_fd, h->out + h->out_len, sizeof(h->out) - 1 - h->out_len);
		if (n <= 0)
			break;
		h->out_len += (size_t)n;
		h->out[h->out_len] = '\0';
	}
	return strstr(h->out, needle) != NULL;
}

/* Starts forkd-uffd with the given extra arguments (NULL-terminated), waits until it listens. */
static void handler_start(struct handler *h, const char *memory_opt, const char *memory, ...)
{
	static int counter;
	char *argv[16];
	int n = 0, out[2];
	va_list ap;

	memset(h, 0, sizeof(*h));
	snprintf(h->sock, sizeof(h->sock), "%s/h%d.sock", dir, ++counter);
	snprintf(h->err_path, sizeof(h->err_path), "%s/h%d.err", dir, counter);
	argv[n++] = (char *)uffd_binary();
	argv[n++] = "--socket";
	argv[n++] = h->sock;
	argv[n++] = (char *)memory_opt;
	argv[n++] = (char *)memory;
	va_start(ap, memory);
	while (n < 15 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	assert_int_equal(pipe2(out, O_CLOEXEC), 0);
	h->pid = fork();
	assert_true(h->pid >= 0);
	if (h->pid == 0) {
		int err = open(h->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		dup2(out[1], STDOUT_FILENO);
		if (err >= 0)
			dup2(err, STDERR_FILENO);
		execv(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	h->out_fd = out[0];
	if (!handler_read_until(h, "listening on", 10000))
		fail_msg("forkd-uffd did not start listening: '%s'", h->out);
}

static char *handler_stderr(const struct handler *h)
{
	static char text[4096];
	int fd = open(h->err_path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : 0;

	text[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return text;
}

/* Waits for the handler's exit; returns its status, counts in h->out. */
static int handler_wait(struct handler *h)
{
	long long end = harness_deadline(TIMEOUT_MS);
	pid_t got = 0;

	while ((got = waitpid(h->pid, &h->status, WNOHANG)) == 0 && now_ms() < end)
		usleep(20 * 1000);
	if (got != h->pid) {
		kill(h->pid, SIGKILL);
		waitpid(h->pid, &h->status, 0);
		fail_msg("forkd-uffd did not exit after its VM did");
	}
	handler_read_until(h, "{\"uffd\"", 1000);
	close(h->out_fd);
	return WIFEXITED(h->status) ? WEXITSTATUS(h->status) : 128 + WTERMSIG(h->status);
}

/* The engine runs in the source: under ASan+UBSan except for the big guest (speed). */
static void start_source(struct vmm_proc *p, const char *sock, const char *mem, const char *append)
{
	bool big = strtoull(mem, NULL, 10) > 1024;

	probe_start(p, big ? NULL : harness_vmm_asan(), mem, "2", append, "--control", sock, NULL);
	need_line(p, "DONE");
	usleep(200 * 1000);
}

static void stop_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	if (strstr(p->err_text, "AddressSanitizer") || strstr(p->err_text, "runtime error")) {
		vmm_dump(p);
		fail_msg("the VMM's sanitizers reported an error");
	}
	vmm_free(p);
}

/* Starts the snapshot (wait false): the reply says "writing", the path does not exist yet. */
static void start_async(const char *sock, const char *path)
{
	char req[800];
	json_t *r;
	struct stat st;

	snprintf(
	    req, sizeof(req),
	    "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp-async\",\"wait\":false}",
	    path);
	r = call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "writing");
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	/* "ready" is the rename of a complete directory: nothing at the path before it. */
	assert_int_not_equal(stat(path, &st) == 0 && !S_ISDIR(st.st_mode), 1);
}

/* Polls snapshot-status until it is no longer "writing"; returns the last reply. */
static json_t *wait_async(const char *sock, const char *path, int *writing_seen)
{
	long long end = harness_deadline(TIMEOUT_MS * 2);
	char req[800];

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", path);
	while (now_ms() < end) {
		json_t *r = call(sock, req, true);
		const char *s = json_string_value(json_object_get(r, "snapshot"));

		assert_non_null(s);
		if (strcmp(s, "writing") != 0)
			return r;
		(*writing_seen)++;
		json_decref(r);
		usleep(50 * 1000);
	}
	fail_msg("snapshot %s still writing after %d s", path, TIMEOUT_MS * 2 / 1000);
	return NULL;
}

/* When the kernel lacks the feature: the request is refused, naming it. */
static void expect_refusal(const char *sock, const char *path)
{
	char req[800];
	json_t *r;
	const char *e;

	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp-async\"}", path);
	r = call(sock, req, false);
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	if (!strstr(e, "WP_ASYNC") && !strstr(e, "PAGEMAP_SCAN"))
		fail_msg("refusal does not name the missing feature: %s", e);
	printf("# refused as expected: %s\n", e);
	json_decref(r);
}

/* The probe says pattern.frozen=0 when a writer froze late: ask again until each has. */
static void wait_writers_frozen(struct vmm_proc *p, int first_writer, int nr_writers)
{
	const char *line = need_line(p, "pattern.frozen=");
	long long end = harness_deadline(TIMEOUT_MS);
	char key[64], buf[32];

	if (strncmp(line, "pattern.frozen=1", 16) == 0)
		return;
	while (now_ms() < end) {
		int frozen = 0;

		vmm_send(p, "report\n");
		usleep(200 * 1000);
		for (int i = first_writer; i < first_writer + nr_writers; i++) {
			snprintf(key, sizeof(key), "cpu%d.pattern_frozen", i);
			if (vmm_value(p, key, buf, sizeof(buf)) && strcmp(buf, "1") == 0)
				frozen++;
		}
		if (frozen == nr_writers)
			return;
	}
	vmm_dump(p);
	fail_msg("the restored guest's writers never froze on the new generation ID");
}

/* Inside the restored guest: each writer's memory is the snapshot instant. */
static void verify_strict(struct vmm_proc *p, int first_writer, int nr_writers, const char *how)
{
	char want[64], buf[32];

	wait_writers_frozen(p, first_writer, nr_writers);
	vmm_send(p, "verify strict\n");
	need_line(p, "verify.end");
	for (int i = first_writer; i < first_writer + nr_writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		if (!vmm_value(p, want, buf, sizeof(buf)) || strcmp(buf, "ok") != 0) {
			vmm_dump(p);
			fail_msg("%s=%s after a %s restore of a uffd-wp-async snapshot", want, buf,
				 how);
		}
	}
	assert_non_null(vmm_wait_containing(p, "verify.end", "mode=strict", NULL, TIMEOUT_MS));
}

static void restore_file_and_verify(const char *snapshot, int first_writer, int nr_writers)
{
	struct vmm_proc p;
	char control[320];
	char *argv[] = {(char *)harness_vmm(), "--restore", (char *)snapshot,
			"--control",	       control,	    NULL};

	snprintf(control, sizeof(control), "%s/restored.sock", dir);
	assert_int_equal(vmm_start(&p, argv), 0);
	verify_strict(&p, first_writer, nr_writers, "file");
	stop_vm(&p, control);
}

static void restore_uffd_and_verify(const char *snapshot, int first_writer, int nr_writers)
{
	struct handler h;
	struct vmm_proc p;
	char control[320];
	char *argv[] = {
	    (char *)harness_vmm(), "--restore", (char *)snapshot, "--restore-mode", "uffd",
	    "--uffd-handler",	   h.sock,	"--control",	  control,	    NULL};

	snprintf(control, sizeof(control), "%s/restored-uffd.sock", dir);
	handler_start(&h, "--snapshot", snapshot, NULL);
	argv[6] = h.sock;
	assert_int_equal(vmm_start(&p, argv), 0);
	verify_strict(&p, first_writer, nr_writers, "uffd");
	stop_vm(&p, control);
	if (handler_wait(&h) != 0)
		fail_msg("forkd-uffd: exit %d, stderr: %s", WEXITSTATUS(h.status),
			 handler_stderr(&h));
}

/* Outside the source: no userfaultfd left among its descriptors once the snapshot ended. */
static void expect_no_uffd(pid_t pid)
{
	char path[64], link[400], target[128];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d))) {
		ssize_t n;

		snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strstr(target, "userfaultfd")) {
			closedir(d);
			fail_msg("pid %d still holds %s (fd %s)", (int)pid, target, e->d_name);
		}
	}
	closedir(d);
}

/* The source's own live verification: its writers' pages are consistent as it runs. */
static void source_verifies_live(struct vmm_proc *p, int first_writer, int nr_writers)
{
	char buf[32], key[32];
	int skip = vmm_count_lines(p, "cpu1.verify=");

	vmm_send(p, "verify\n");
	for (long long end = harness_deadline(TIMEOUT_MS);
	     vmm_count_lines(p, "cpu1.verify=") <= skip && now_ms() < end;)
		vmm_wait_line(p, "cpu1.verify=", 200);
	for (int i = first_writer; i < first_writer + nr_writers; i++) {
		snprintf(key, sizeof(key), "cpu%d.verify", i);
		if (!vmm_value(p, key, buf, sizeof(buf)) || strcmp(buf, "ok") != 0) {
			vmm_dump(p);
			fail_msg("the source's live %s=%s", key, buf);
		}
	}
}

static long long num(json_t *r, const char *key)
{
	json_t *v = json_object_get(r, key);

	if (!json_is_integer(v))
		fail_msg("reply has no integer %s", key);
	return json_integer_value(v);
}

static void test_snapshot_under_write_load(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320];
	int writing = 0;
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/source.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	start_source(&p, sock, "256M", PATTERN);
	if (!supported) {
		expect_refusal(sock, snap);
		stop_vm(&p, sock);
		return;
	}
	start_async(sock, snap);
	r = wait_async(sock, snap, &writing);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	printf("# 256 MiB under write load: rounds %lld, final dirty pages %lld, pause %lld us, "
	       "complete %lld ms (status 'writing' seen %d times)\n",
	       num(r, "rounds"), num(r, "final_dirty_pages"), num(r, "pause_us"),
	       num(r, "complete_us") / 1000, writing);
	/* The pattern writers dirty pages all the time: the pre-copy saw them, and copied all. */
	assert_true(num(r, "precopy_pages") > 2 * 64 * 256);
	assert_true(num(r, "rounds") >= 1);
	assert_true(num(r, "final_dirty_pages") > 0);
	json_decref(r);
	/* Outside: the VM ran on, its protection dropped with the userfaultfd. */
	r = call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	expect_no_uffd(p.pid);
	source_verifies_live(&p, 0, 2);
	restore_file_and_verify(snap, 0, 2);
	restore_uffd_and_verify(snap, 0, 2);
	/* A second one after the first completed is fine (one at a time, not one ever). */
	{
		char snap2[340];

		snprintf(snap2, sizeof(snap2), "%s/snap-again", dir);
		start_async(sock, snap2);
		r = wait_async(sock, snap2, &writing);
		assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
		json_decref(r);
		restore_file_and_verify(snap2, 0, 2);
	}
	source_verifies_live(&p, 0, 2);
	stop_vm(&p, sock);
}

static void test_guest_above_4g(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], base[128];
	int writing = 0;
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/big.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap-4g", dir);
	if (!supported) { /* the refusal does not need 4.5 GiB (nor does a nested host have it) */
		start_source(&p, sock, "256M", PATTERN);
		expect_refusal(sock, snap);
		stop_vm(&p, sock);
		return;
	}
	start_source(&p, sock, "4608M",
		     "work=touch,pattern touch_mib=3030 pattern_mib=64 pattern_freeze=genid");
	assert_non_null(vmm_value(&p, "cpu1.pattern_base", base, sizeof(base)));
	if (strtoull(base, NULL, 16) < 0x100000000ULL)
		fail_msg("cpu1.pattern_base=%s: the test needs the writer above 4 GiB", base);
	start_async(sock, snap);
	r = wait_async(sock, snap, &writing);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	printf("# 4608 MiB, writer at %s: rounds %lld, final dirty pages %lld, pause %lld us, "
	       "complete %lld ms\n",
	       base, num(r, "rounds"), num(r, "final_dirty_pages"), num(r, "pause_us"),
	       num(r, "complete_us") / 1000);
	/* Pass 0 copied the low region's touched pages and the writer's above 4 GiB. */
	assert_true(num(r, "precopy_pages") >= (3030 + 64) * 256);
	json_decref(r);
	source_verifies_live(&p, 1, 1);
	stop_vm(&p, sock);
	restore_file_and_verify(snap, 1, 1);
}

static int umount_tmpfs(void **state)
{
	(void)state;
	if (tmpfs_dir[0]) {
		umount2(tmpfs_dir, MNT_DETACH);
		rmdir(tmpfs_dir);
		tmpfs_dir[0] = '\0';
	}
	return 0;
}

static int dir_entries(const char *path)
{
	struct dirent *e;
	int n = 0;
	DIR *d = opendir(path);

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* A disk that fills up mid-copy: failed with ENOSPC's text, nothing left, the VM running. */
static void test_disk_full(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[340];
	int writing = 0;
	json_t *r;
	const char *e;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/full.sock", dir);
	snprintf(tmpfs_dir, sizeof(tmpfs_dir), "%s/small", dir);
	snprintf(snap, sizeof(snap), "%s/snap", tmpfs_dir);
	assert_int_equal(mkdir(tmpfs_dir, 0700), 0);
	if (mount("forkd-test", tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=48m") < 0)
		fail_msg("mount a 48 MiB tmpfs on %s: %s", tmpfs_dir, strerror(errno));
	start_source(&p, sock, "256M", PATTERN);
	if (!supported) {
		expect_refusal(sock, snap);
		stop_vm(&p, sock);
		return;
	}
	start_async(sock, snap);
	r = wait_async(sock, snap, &writing);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "failed");
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	if (!strstr(e, "No space left on device") || !strstr(e, snap))
		fail_msg("error does not name ENOSPC and the path: %s", e);
	printf("# disk full: %s\n", e);
	json_decref(r);
	/* Outside: no snapshot, no temp dir, no staging file (O_TMPFILE) on the tmpfs. */
	assert_int_equal(dir_entries(tmpfs_dir), 0);
	r = call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	expect_no_uffd(p.pid);
	source_verifies_live(&p, 0, 2);
	stop_vm(&p, sock);
}

/*
 * One at a time: a second request while the first writes is refused, naming
 * the first; then the VM exits mid-snapshot, cleanly, leaving nothing.
 */
static void test_second_request_and_exit_mid_snapshot(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[400], snap2[400], req[1000], parent[320];
	json_t *r;
	const char *e;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/busy.sock", dir);
	snprintf(parent, sizeof(parent), "%s/busy", dir);
	snprintf(snap, sizeof(snap), "%s/one", parent);
	snprintf(snap2, sizeof(snap2), "%s/two", parent);
	assert_int_equal(mkdir(parent, 0700), 0);
	if (!supported) {
		start_source(&p, sock, "256M", PATTERN);
		expect_refusal(sock, snap);
		stop_vm(&p, sock);
		return;
	}
	/* 2 GiB touched: the pre-copy takes long enough to be caught writing. */
	start_source(&p, sock, "2304M",
		     "work=touch,pattern touch_mib=2048 pattern_mib=64 pattern_freeze=genid");
	start_async(sock, snap);
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp-async\"}", snap2);
	r = call(sock, req, false);
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	if (!strstr(e, "being written to") || !strstr(e, snap))
		fail_msg("second snapshot: %s", e);
	json_decref(r);
	/* Mid-snapshot, the VM exits: it ends cleanly, and nothing stays in the directory. */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap);
	r = call(sock, req, true);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "writing") != 0)
		printf("# note: the snapshot was %s before the shutdown\n",
		       json_string_value(json_object_get(r, "snapshot")));
	json_decref(r);
	stop_vm(&p, sock);
	{
		struct dirent *de;
		DIR *d = opendir(parent);

		assert_non_null(d);
		while ((de = readdir(d)))
			if (strstr(de->d_name, ".tmp-"))
				fail_msg("%s/%s left behind by a VM that exited mid-snapshot",
					 parent, de->d_name);
		closedir(d);
	}
}

/* Branches sock into one child and checks it strictly inside; returns nothing left running. */
static void branch_one_strict(const char *sock, int round)
{
	char req[700], bdir[400], kid_sock[600], log[600], in[600];
	json_t *r, *kid;
	char *line, buf[32];
	int skip, pid;

	snprintf(bdir, sizeof(bdir), "%s/async-b%d", dir, round);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s\"}", bdir);
	r = call(sock, req, true);
	kid = json_array_get(json_object_get(r, "children"), 0);
	assert_non_null(kid);
	snprintf(log, sizeof(log), "%s/serial.log", json_string_value(json_object_get(kid, "dir")));
	snprintf(in, sizeof(in), "%s/serial.in", json_string_value(json_object_get(kid, "dir")));
	snprintf(kid_sock, sizeof(kid_sock), "%s/control.sock",
		 json_string_value(json_object_get(kid, "dir")));
	pid = (int)json_integer_value(json_object_get(kid, "pid"));
	json_decref(r);
	free(file_wait_line(log, "pattern.frozen=1", 0, TIMEOUT_MS));
	skip = file_count_lines(log);
	assert_int_equal(fifo_send(in, "verify strict\n"), 0);
	for (int i = 0; i < 2; i++) {
		char want[32];

		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		line = file_wait_line(log, want, skip, TIMEOUT_MS);
		assert_non_null(line);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(line_value(line, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(line, "mode=strict"))
			fail_msg("child of a BRANCH during a uffd-wp-async snapshot (round %d): %s",
				 round, line);
		free(line);
	}
	json_decref(call(kid_sock, "{\"cmd\":\"shutdown\"}", true));
	for (int i = 0; i < 250 && kill(pid, 0) == 0; i++)
		usleep(20 * 1000);
}

/*
 * A BRANCH (the fork engine) while a uffd-wp-async snapshot is written: the
 * fork neither loses the parent's tracking nor hands it to the zygote; the
 * child and the snapshot each verify strictly, the source live.
 */
static void test_branch_while_writing(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320];
	int writing = 0;
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/branching.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap-branching", dir);
	start_source(&p, sock, "256M", PATTERN);
	if (!supported) {
		expect_refusal(sock, snap);
		stop_vm(&p, sock);
		return;
	}
	start_async(sock, snap);
	branch_one_strict(sock, 1);
	r = wait_async(sock, snap, &writing);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	source_verifies_live(&p, 0, 2);
	restore_file_and_verify(snap, 0, 2);
	stop_vm(&p, sock);
}

/*
 * Whatever this kernel has: a VMM told to answer as a kernel without
 * WP_ASYNC would (FORKD_FAULT_INJECT=no-wp-async) refuses the engine with
 * the feature's name, the VM running on.
 */
static void test_refused_without_wp_async(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320];
	json_t *r;
	struct stat st;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/refuse.sock", dir);
	snprintf(snap, sizeof(snap), "%s/refused", dir);
	setenv("FORKD_FAULT_INJECT", "no-wp-async", 1);
	start_source(&p, sock, "256M", PATTERN);
	unsetenv("FORKD_FAULT_INJECT");
	expect_refusal(sock, snap);
	assert_int_not_equal(stat(snap, &st), 0);
	r = call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	expect_no_uffd(p.pid);
	source_verifies_live(&p, 0, 2);
	stop_vm(&p, sock);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refused_without_wp_async),
	    cmocka_unit_test(test_snapshot_under_write_load),
	    cmocka_unit_test(test_branch_while_writing),
	    cmocka_unit_test_teardown(test_disk_full, umount_tmpfs),
	    cmocka_unit_test(test_second_request_and_exit_mid_snapshot),
	    cmocka_unit_test(test_guest_above_4g),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("uffd-wp-async live snapshots", tests, setup, teardown);
}
