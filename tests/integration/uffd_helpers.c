/* SPDX-License-Identifier: MIT */
/* Scaffolding shared by the userfaultfd integration tests (see uffd_helpers.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "probe_cases.h"
#include "uffd_helpers.h"

/* 120 s: a 3.25-4.5 GiB guest's snapshot in the nested test host (stretched there too). */
#define SNAPSHOT_WAIT_MS 120000

/*
 * Set once by uffd_helpers_setup from the test group's setup: every helper
 * works in the one scratch directory of the test binary and waits its one
 * timeout, so passing them to each call would only repeat them.
 */
static char scratch_dir[256];
static int timeout_ms = 30000;

int uffd_helpers_setup(char *dir, size_t len, const char *tag, int timeout)
{
	if (harness_tmpdir_create(dir, len, tag) < 0)
		return -1;
	snprintf(scratch_dir, sizeof(scratch_dir), "%s", dir);
	timeout_ms = timeout;
	return 0;
}

int uffd_helpers_teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(scratch_dir);
}

const char *uffd_need_line(struct vmm_proc *p, const char *prefix)
{
	const char *line = vmm_need_line(p, prefix, timeout_ms);

	assert_non_null(line);
	return line;
}

json_t *uffd_call(const char *sock, const char *req, bool want_ok)
{
	json_t *reply = harness_call_expect(sock, req, want_ok);

	assert_non_null(reply);
	return reply;
}

long long uffd_reply_int(json_t *reply, const char *key)
{
	json_t *v = json_object_get(reply, key);

	if (!json_is_integer(v))
		fail_msg("reply has no integer %s", key);
	return json_integer_value(v);
}

const char *uffd_binary(void)
{
	static char path[4200]; /* returned: lives past the call */
	char vmm[4096];

	snprintf(vmm, sizeof(vmm), "%s", harness_vmm());
	snprintf(path, sizeof(path), "%s/forkd-uffd", dirname(vmm));
	return path;
}

bool handler_read_until(struct handler *h, const char *needle, int timeout)
{
	long long end = harness_deadline(timeout);

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

void handler_start(struct handler *h, const char *memory_opt, const char *memory, ...)
{
	static int counter; /* each handler of the run gets its own socket and log */
	char *argv[16];
	int n = 0, out[2];
	va_list ap;

	memset(h, 0, sizeof(*h));
	snprintf(h->sock, sizeof(h->sock), "%s/h%d.sock", scratch_dir, ++counter);
	snprintf(h->err_path, sizeof(h->err_path), "%s/h%d.err", scratch_dir, counter);
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

const char *handler_stderr(const struct handler *h)
{
	static char text[4096]; /* returned: lives past the call */
	int fd = open(h->err_path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, text, sizeof(text) - 1) : 0;

	text[n > 0 ? n : 0] = '\0';
	if (fd >= 0)
		close(fd);
	return text;
}

int handler_wait(struct handler *h)
{
	long long end = harness_deadline(timeout_ms);
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

long long handler_count(const struct handler *h, const char *key)
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

void uffd_start_source(struct vmm_proc *p, const char *vmm, const char *sock, const char *mem,
		       const char *append, const char *mem_backend)
{
	if (mem_backend)
		probe_start(p, vmm, mem, "2", append, "--control", sock, "--mem-backend",
			    mem_backend, NULL);
	else
		probe_start(p, vmm, mem, "2", append, "--control", sock, NULL);
	uffd_need_line(p, "DONE");
	usleep(200 * 1000);
}

void uffd_expect_writer_above_4g(struct vmm_proc *p, char *base, size_t len)
{
	assert_non_null(vmm_value(p, "cpu1.pattern_base", base, len));
	if (strtoull(base, NULL, 16) < 0x100000000ULL)
		fail_msg("cpu1.pattern_base=%s: the test needs the writer above 4 GiB", base);
}

void uffd_stop_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(uffd_call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, timeout_ms), 0);
	if (strstr(p->err_text, "AddressSanitizer") || strstr(p->err_text, "runtime error")) {
		vmm_dump(p);
		fail_msg("the VMM's sanitizers reported an error");
	}
	vmm_free(p);
}

void uffd_start_lazy_restore(struct vmm_proc *p, const char *snapshot, const char *handler_sock,
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
void uffd_wait_writers_frozen(struct vmm_proc *p, int first_writer, int nr_writers)
{
	const char *line = uffd_need_line(p, "pattern.frozen=");
	long long end = harness_deadline(timeout_ms);
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

void uffd_verify_strict(struct vmm_proc *p, int first_writer, int nr_writers, const char *after)
{
	char want[64], buf[32];

	uffd_wait_writers_frozen(p, first_writer, nr_writers);
	vmm_send(p, "verify strict\n");
	uffd_need_line(p, "verify.end");
	for (int i = first_writer; i < first_writer + nr_writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		if (!vmm_value(p, want, buf, sizeof(buf)) || strcmp(buf, "ok") != 0) {
			vmm_dump(p);
			fail_msg("%s=%s after %s", want, buf, after);
		}
	}
	assert_non_null(vmm_wait_containing(p, "verify.end", "mode=strict", NULL, timeout_ms));
}

void uffd_lazy_restore_and_verify(struct handler *h, const char *snapshot, int first_writer,
				  int nr_writers, const char *after)
{
	struct vmm_proc p;
	char control[320];

	snprintf(control, sizeof(control), "%s/restored-uffd.sock", scratch_dir);
	uffd_start_lazy_restore(&p, snapshot, h->sock, control);
	uffd_verify_strict(&p, first_writer, nr_writers, after);
	uffd_stop_vm(&p, control);
	if (handler_wait(h) != 0)
		fail_msg("forkd-uffd: exit %d, stderr: %s", WEXITSTATUS(h->status),
			 handler_stderr(h));
}

void uffd_restore_file_and_verify(const char *snapshot, int first_writer, int nr_writers,
				  const char *engine)
{
	struct vmm_proc p;
	char control[320], after[128];
	char *argv[] = {(char *)harness_vmm(), "--restore", (char *)snapshot,
			"--control",	       control,	    NULL};

	snprintf(control, sizeof(control), "%s/restored.sock", scratch_dir);
	snprintf(after, sizeof(after), "a file restore of a %s snapshot", engine);
	assert_int_equal(vmm_start(&p, argv), 0);
	uffd_verify_strict(&p, first_writer, nr_writers, after);
	uffd_stop_vm(&p, control);
}

void uffd_restore_uffd_and_verify(const char *snapshot, int first_writer, int nr_writers,
				  const char *engine)
{
	struct handler h;
	char after[128];

	snprintf(after, sizeof(after), "a lazy (uffd) restore of a %s snapshot", engine);
	handler_start(&h, "--snapshot", snapshot, NULL);
	uffd_lazy_restore_and_verify(&h, snapshot, first_writer, nr_writers, after);
}

/*
 * Waits for a verify.end newer than the ones already seen: the values read
 * then are this verification's, not an earlier one's.
 */
void uffd_source_verifies_live(struct vmm_proc *p, int first_writer, int nr_writers,
			       const char *after)
{
	char key[32], buf[32];
	int seen = vmm_count_lines(p, "verify.end");

	vmm_send(p, "verify\n");
	/* A prefix no line has: vmm_wait_line only reads the console, for up to 100 ms. */
	for (long long end = harness_deadline(timeout_ms);
	     vmm_count_lines(p, "verify.end") <= seen && now_ms() < end;)
		vmm_wait_line(p, "\x01", 100);
	if (vmm_count_lines(p, "verify.end") <= seen) {
		vmm_dump(p);
		fail_msg("the source did not finish its live verification");
	}
	for (int i = first_writer; i < first_writer + nr_writers; i++) {
		snprintf(key, sizeof(key), "cpu%d.verify", i);
		if (!vmm_value(p, key, buf, sizeof(buf)) || strcmp(buf, "ok") != 0) {
			vmm_dump(p);
			fail_msg("source %s=%s after %s", key, buf, after);
		}
	}
}

json_t *uffd_wait_snapshot(const char *sock, const char *path, int *writing_seen)
{
	long long end = harness_deadline(SNAPSHOT_WAIT_MS);
	char req[800];

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", path);
	while (now_ms() < end) {
		json_t *r = uffd_call(sock, req, true);
		const char *s = json_string_value(json_object_get(r, "snapshot"));

		assert_non_null(s);
		if (strcmp(s, "writing") != 0)
			return r;
		if (writing_seen)
			(*writing_seen)++;
		json_decref(r);
		usleep(50 * 1000);
	}
	fail_msg("snapshot %s still writing after %d s", path, SNAPSHOT_WAIT_MS / 1000);
	return NULL;
}

void uffd_branch_one_strict(const char *sock, const char *bdir, const char *child)
{
	char req[700], kid_sock[600], log[600], in[600];
	json_t *r, *kid;
	char *line, buf[32];
	int skip, pid;

	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s\"}", bdir);
	r = uffd_call(sock, req, true);
	kid = json_array_get(json_object_get(r, "children"), 0);
	assert_non_null(kid);
	snprintf(log, sizeof(log), "%s/serial.log", json_string_value(json_object_get(kid, "dir")));
	snprintf(in, sizeof(in), "%s/serial.in", json_string_value(json_object_get(kid, "dir")));
	snprintf(kid_sock, sizeof(kid_sock), "%s/control.sock",
		 json_string_value(json_object_get(kid, "dir")));
	pid = (int)json_integer_value(json_object_get(kid, "pid"));
	json_decref(r);
	free(file_wait_line(log, "pattern.frozen=1", 0, timeout_ms));
	skip = file_count_lines(log);
	assert_int_equal(fifo_send(in, "verify strict\n"), 0);
	for (int i = 0; i < 2; i++) {
		char want[32];

		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		line = file_wait_line(log, want, skip, timeout_ms);
		assert_non_null(line);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(line_value(line, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(line, "mode=strict"))
			fail_msg("%s: %s", child, line);
		free(line);
	}
	json_decref(uffd_call(kid_sock, "{\"cmd\":\"shutdown\"}", true));
	for (int i = 0; i < 250 && kill(pid, 0) == 0; i++)
		usleep(20 * 1000);
	if (kill(pid, 0) == 0)
		fail_msg("%s (pid %d) did not exit after shutdown", child, pid);
}
