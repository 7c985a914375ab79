/* SPDX-License-Identifier: MIT */
/*
 * Lazy restore through userfaultfd, and memfd guest RAM, with the probe
 * guest (docs/design/userfaultfd.md): a snapshot restored with
 * --restore-mode uffd and forkd-uffd verifies strictly inside (its pattern
 * writers' memory is the snapshot instant), served lazily (outside: the
 * handler's counts); again with the first run's record prefetched, and with
 * fault-around; a guest
 * larger than 4 GiB whose writer lives above 4 GiB; a handler killed under
 * the VM and a memory file shorter than the guest (the VMM fails with a
 * clear error, never hangs); a memfd-backed VM branches strictly, twice.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS   30000
#define PATTERN	     "work=pattern,pattern pattern_mib=64 pattern_freeze=genid"
#define WRITER_PAGES (64 * 256) /* pattern_mib=64 in 4 KiB pages */

static char dir[256], snap[300], record[300];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "uffd");
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

/* A count from the handler's closing JSON line. */
static long long handler_count(const struct handler *h, const char *key)
{
	const char *line = strstr(h->out, "{\"uffd\"");
	json_t *o, *v;
	long long n;

	if (!line)
		fail_msg("forkd-uffd printed no counts: '%s' (stderr: %s)", h->out,
			 handler_stderr(h));
	o = json_loads(line, JSON_DISABLE_EOF_CHECK, NULL);
	assert_non_null(o);
	v = json_object_get(o, key);
	assert_true(json_is_integer(v));
	n = json_integer_value(v);
	json_decref(o);
	return n;
}

static void start_source(struct vmm_proc *p, const char *sock, const char *mem, const char *append,
			 const char *backend)
{
	probe_start(p, NULL, mem, "2", append, "--control", sock, "--mem-backend", backend, NULL);
	need_line(p, "DONE");
	usleep(200 * 1000);
}

static void stop_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	vmm_free(p);
}

/* Boots a pattern guest and writes its live snapshot to path. */
static void make_snapshot(const char *path, const char *mem, const char *append)
{
	struct vmm_proc p;
	char sock[320], req[700];

	snprintf(sock, sizeof(sock), "%s/source.sock", dir);
	start_source(&p, sock, mem, append, "anon");
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", path);
	json_decref(call(sock, req, true));
	stop_vm(&p, sock);
}

static void start_lazy_restore(struct vmm_proc *p, const char *snapshot, const char *handler_sock,
			       const char *control)
{
	char *argv[] = {
	    (char *)harness_vmm(), "--restore",		 (char *)snapshot, "--restore-mode", "uffd",
	    "--uffd-handler",	   (char *)handler_sock, "--control",	   (char *)control,  NULL};

	assert_int_equal(vmm_start(p, argv), 0);
}

/*
 * The probe says "pattern.frozen=0 running=N" when a writer has not frozen
 * within 100 ms of the new generation ID, as a lazy restore on a loaded host
 * can be slower (each first touch of a page is a round trip to the handler),
 * and "pattern.frozen=1" once they all have (guest/probe/work_pattern.c; an
 * older probe said the 0 once and nothing more). So on 0, ask for reports
 * until each one has.
 */
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
static void verify_strict(struct vmm_proc *p, int first_writer, int nr_writers)
{
	char want[64], buf[32];

	wait_writers_frozen(p, first_writer, nr_writers);
	vmm_send(p, "verify strict\n");
	need_line(p, "verify.end");
	for (int i = first_writer; i < first_writer + nr_writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		if (!vmm_value(p, want, buf, sizeof(buf)) || strcmp(buf, "ok") != 0) {
			vmm_dump(p);
			fail_msg("%s=%s after a lazy restore", want, buf);
		}
	}
	assert_non_null(vmm_wait_containing(p, "verify.end", "mode=strict", NULL, TIMEOUT_MS));
}

/* One lazy restore of snap served by a handler started with the given options. */
static void lazy_restore_and_verify(struct handler *h, const char *snapshot, int first_writer,
				    int nr_writers)
{
	struct vmm_proc p;
	char control[320];

	snprintf(control, sizeof(control), "%s/restored.sock", dir);
	start_lazy_restore(&p, snapshot, h->sock, control);
	verify_strict(&p, first_writer, nr_writers);
	stop_vm(&p, control);
	if (handler_wait(h) != 0)
		fail_msg("forkd-uffd: exit %d, stderr: %s", WEXITSTATUS(h->status),
			 handler_stderr(h));
}

static void test_lazy_restore_verifies_strictly(void **state)
{
	struct handler h;
	struct stat st;
	long long copied, zeroed;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(record, sizeof(record), "%s/first-touch", dir);
	make_snapshot(snap, "256M", PATTERN);
	handler_start(&h, "--snapshot", snap, "--record", record, NULL);
	lazy_restore_and_verify(&h, snap, 0, 2);
	copied = handler_count(&h, "copied");
	zeroed = handler_count(&h, "zeroed");
	/* Outside: both writers' pages came from the file, and only touched pages did. */
	/* (A writer's pages it had not written yet at the snapshot are holes: zeros.) */
	if (copied + zeroed < 2 * WRITER_PAGES || copied + zeroed >= 65536 || copied == 0)
		fail_msg("copied %lld, zeroed %lld of 65536 pages: expected every pattern page "
			 "(%d) and not all of RAM",
			 copied, zeroed, 2 * WRITER_PAGES);
	/* Two threads faulting on one page are two faults: the second finds it filled. */
	assert_int_equal(handler_count(&h, "faults"),
			 copied + zeroed + handler_count(&h, "already"));
	assert_int_equal(stat(record, &st), 0);
	assert_int_equal(st.st_size, 8 * handler_count(&h, "recorded"));
	assert_int_equal(handler_count(&h, "recorded"), copied + zeroed);
}

static void test_lazy_restore_with_prefetch(void **state)
{
	struct handler h;
	long long prefetched;

	(void)state;
	handler_start(&h, "--snapshot", snap, "--prefetch", record, NULL);
	lazy_restore_and_verify(&h, snap, 0, 2);
	prefetched = handler_count(&h, "prefetched");
	/* The recorded working set went in bulk; faults only for what prefetch had not reached. */
	if (prefetched == 0 || handler_count(&h, "faults") >= 2 * WRITER_PAGES)
		fail_msg("prefetched %lld pages, %lld faults: the record was not replayed",
			 prefetched, handler_count(&h, "faults"));
}

static void test_lazy_restore_with_fault_around(void **state)
{
	struct handler h;
	long long faults, served;

	(void)state;
	handler_start(&h, "--snapshot", snap, "--fault-around", "64", NULL);
	lazy_restore_and_verify(&h, snap, 0, 2);
	faults = handler_count(&h, "faults");
	served =
	    handler_count(&h, "copied") + handler_count(&h, "zeroed") + handler_count(&h, "around");
	/* Each fault filled its neighbours too: far fewer faults than pages served. */
	if (handler_count(&h, "around") == 0 || served < 2 * WRITER_PAGES || faults * 4 > served)
		fail_msg("%lld faults for %lld pages served: fault-around did not fill blocks",
			 faults, served);
}

/*
 * 3 GiB + 256 MiB: RAM above 4 GiB is the second region. cpu0 fills the
 * low region (touch), so cpu1's pattern lands above 4 GiB.
 */
static void test_guest_above_4g(void **state)
{
	struct handler h;
	struct vmm_proc p;
	char snap4g[300], control[320], base[64];

	(void)state;
	snprintf(snap4g, sizeof(snap4g), "%s/snap-4g", dir);
	snprintf(control, sizeof(control), "%s/source.sock", dir);
	start_source(&p, control, "3328M",
		     "work=touch,pattern touch_mib=3030 pattern_mib=32 pattern_freeze=genid",
		     "anon");
	assert_non_null(vmm_value(&p, "cpu1.pattern_base", base, sizeof(base)));
	if (strtoull(base, NULL, 16) < 0x100000000ULL)
		fail_msg("cpu1.pattern_base=%s: the test needs the writer above 4 GiB", base);
	{
		/*
		 * Written in the background and followed with snapshot-status: in the
		 * nested test host, writing 3.25 GiB takes longer than one control
		 * call may wait.
		 */
		char req[700];
		json_t *r;

		snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"wait\":false}",
			 snap4g);
		json_decref(call(control, req, true));
		snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap4g);
		for (long long end = harness_deadline(2 * TIMEOUT_MS);;) {
			r = call(control, req, true);
			if (strcmp(json_string_value(json_object_get(r, "snapshot")), "writing") !=
				0 ||
			    now_ms() > end)
				break;
			json_decref(r);
			usleep(100 * 1000);
		}
		assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
		json_decref(r);
	}
	stop_vm(&p, control);
	handler_start(&h, "--snapshot", snap4g, NULL);
	lazy_restore_and_verify(&h, snap4g, 1, 1);
	/* The writer's pages, all in the second region, came from the file. */
	assert_true(handler_count(&h, "copied") >= 32 * 256);
}

/* status: 1 when the VM failed running, 2 when it failed to start. */
static void expect_vmm_fails(struct vmm_proc *p, int want, const char *needle)
{
	int status = vmm_wait(p, TIMEOUT_MS);

	if (status == -ETIMEDOUT) {
		vmm_kill(p);
		vmm_dump(p);
		fail_msg("the VMM hung instead of failing with '%s'", needle);
	}
	if (status != want || !strstr(p->err_text, needle)) {
		vmm_dump(p);
		fail_msg("VMM exit %d, expected %d and '%s'", status, want, needle);
	}
	vmm_free(p);
}

static void test_handler_that_dies(void **state)
{
	struct handler h;
	struct vmm_proc p;
	char control[320], missing[320];

	(void)state;
	snprintf(control, sizeof(control), "%s/restored.sock", dir);
	handler_start(&h, "--snapshot", snap, NULL);
	start_lazy_restore(&p, snap, h.sock, control);
	wait_writers_frozen(&p, 0, 2);
	kill(h.pid, SIGKILL);
	expect_vmm_fails(&p, 1, "uffd handler");
	assert_non_null(strstr(p.err_text, "exited before the VM"));
	assert_int_equal(handler_wait(&h), 128 + SIGKILL);

	/* No handler at all: refused at start, naming the socket. */
	snprintf(missing, sizeof(missing), "%s/nobody.sock", dir);
	start_lazy_restore(&p, snap, missing, control);
	expect_vmm_fails(&p, 2, "cannot connect");
	assert_non_null(strstr(p.err_text, missing));
}

static void test_memory_file_shorter_than_the_guest(void **state)
{
	struct handler h;
	struct vmm_proc p;
	char control[320], short_mem[320], cmd[1400];

	(void)state;
	snprintf(short_mem, sizeof(short_mem), "%s/short-memory", dir);
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s/memory' '%s' && truncate -s 128M '%s'",
		 snap, short_mem, short_mem);
	assert_int_equal(system(cmd), 0);
	snprintf(control, sizeof(control), "%s/restored.sock", dir);
	handler_start(&h, "--memory", short_mem, NULL);
	start_lazy_restore(&p, snap, h.sock, control);
	expect_vmm_fails(&p, 1, "exited before the VM");
	assert_int_equal(handler_wait(&h), 1);
	if (!strstr(handler_stderr(&h), "ends past the memory file's 134217728 bytes"))
		fail_msg("forkd-uffd said: %s", handler_stderr(&h));
}

/* Branches sock into one child and checks it strictly inside; returns nothing left running. */
static void branch_one_strict(const char *sock, int round)
{
	char req[700], bdir[400], kid_sock[600], log[600], in[600];
	json_t *r, *kid;
	char *line, buf[32];
	int skip, pid;

	snprintf(bdir, sizeof(bdir), "%s/memfd-b%d", dir, round);
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
			fail_msg("memfd child (round %d): %s", round, line);
		free(line);
	}
	json_decref(call(kid_sock, "{\"cmd\":\"shutdown\"}", true));
	for (int i = 0; i < 250 && kill(pid, 0) == 0; i++)
		usleep(20 * 1000);
}

static void test_memfd_vm_branches_strictly(void **state)
{
	struct vmm_proc p;
	char sock[320], path[64], target[128], buf[32];
	bool found = false;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/memfd.sock", dir);
	start_source(&p, sock, "256M", PATTERN, "memfd");
	/* Outside: the VMM's guest RAM is a memfd. */
	for (int fd = 3; fd < 64 && !found; fd++) {
		char link[64];
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/%d/fd/%d", (int)p.pid, fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			found = strstr(target, "memfd:forkd-guest-ram") != NULL;
		}
	}
	snprintf(path, sizeof(path), "pid %d", (int)p.pid);
	if (!found)
		fail_msg("%s: no memfd:forkd-guest-ram among its descriptors", path);
	/* The first branch turns it private; the second branches private memfd pages. */
	branch_one_strict(sock, 1);
	branch_one_strict(sock, 2);
	/* The source ran on, its own (live) verification holds. */
	vmm_send(&p, "verify\n");
	need_line(&p, "cpu1.verify=");
	assert_non_null(vmm_value(&p, "cpu0.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
	assert_non_null(vmm_value(&p, "cpu1.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
	stop_vm(&p, sock);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    /* First: the snapshot and record the next ones use. */
	    cmocka_unit_test(test_lazy_restore_verifies_strictly),
	    cmocka_unit_test(test_lazy_restore_with_prefetch),
	    cmocka_unit_test(test_lazy_restore_with_fault_around),
	    cmocka_unit_test(test_handler_that_dies),
	    cmocka_unit_test(test_memory_file_shorter_than_the_guest),
	    cmocka_unit_test(test_memfd_vm_branches_strictly),
	    cmocka_unit_test(test_guest_above_4g),
	};
	/* test_guest_above_4g: a 3.25 GiB guest, its snapshot in /tmp, and its lazy restore. */
	where_set_nested_mem_mib(10240);
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("uffd lazy restore and memfd RAM", tests, setup,
					   teardown);
}
