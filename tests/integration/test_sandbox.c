/* SPDX-License-Identifier: MIT */
/*
 * The Linux sandbox end to end: Debian's kernel, our initramfs with
 * forkd-agent (started by forkd-init with forkd.agent=1), virtio-vsock in
 * forkd-vmm, and the host client (src/agent/agent_client.h) that `forkd
 * exec` and `forkd cp` use. Checked from outside (what the client gets) and
 * from inside (what the guest's own tools say).
 *
 * - exec: echo, exit codes, signals, missing and non-executable binaries, a
 *   bad cwd, stderr kept apart, 100 MiB of stdout intact, stdin streamed
 *   while stdout streams back, a timeout, 32 at once;
 * - files: a 256 MiB put and get byte-exact, stat, ls, rm, errors;
 * - BRANCH into 4 children: each answers exec after its fork notification,
 *   with its own RNG output, hostname and a clock within 1 s of the host's,
 *   and a private root (a file written in one child is absent elsewhere);
 * - snapshot and restore with a connection open: the restored VM's agent
 *   answers on its new socket, and the source's connection is undisturbed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "agent/agent_client.h"
#include "forkd/agent_proto.h"
#include "harness.h"
#include "where.h"

/* Generous: in the nested test host every guest instruction may be emulated. */
#define BOOT_TIMEOUT_MS	 120000
#define AGENT_WAIT_MS	 60000
#define CONNECT_MS	 10000
#define BIG_STDOUT_BYTES (100ull << 20)
#define STDIN_BYTES	 (8u << 20)
#define BIG_FILE_BYTES	 (256ull << 20)
#define CONCURRENT	 32
#define KIDS		 4

static char vmlinux[600], initrd[600];

static int setup(void **state)
{
	const char *d = getenv("FORKD_IMAGES");
	struct stat st;

	(void)state;
	if (!d || !*d)
		d = ".cache/images";
	snprintf(vmlinux, sizeof(vmlinux), "%s/vmlinux", d);
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", d);
	if (stat(vmlinux, &st) < 0 || stat(initrd, &st) < 0) {
		fprintf(stderr, "Linux images missing in %s: run `make images`\n", d);
		return -1;
	}
	return 0;
}

struct sandbox {
	struct vmm_proc p;
	char dir[256], vsock[400], control[400];
};

/* Pings the agent until it answers (it starts with the guest). */
static void wait_agent(const char *uds)
{
	long long deadline = now_ms() + AGENT_WAIT_MS;
	struct fk_err err = {0};
	json_t *req = json_pack("{s:s}", "op", "ping"), *resp = NULL;
	int ret;

	do {
		ret = fk_agent_call(uds, req, &resp, CONNECT_MS, &err);
		if (ret == 0)
			break;
		usleep(50 * 1000);
	} while (now_ms() < deadline);
	json_decref(req);
	if (ret < 0)
		fail_msg("agent at %s never answered ping: %s", uds, err.msg);
	assert_string_equal(json_string_value(json_object_get(resp, "agent")), "forkd-agent");
	assert_int_equal(json_integer_value(json_object_get(resp, "version")), FK_AGENT_VERSION);
	json_decref(resp);
}

static void start_sandbox_append(struct sandbox *sb, const char *tag, const char *mem,
				 const char *append)
{
	assert_int_equal(harness_tmpdir_create(sb->dir, sizeof(sb->dir), tag), 0);
	snprintf(sb->vsock, sizeof(sb->vsock), "%s/vsock.sock", sb->dir);
	snprintf(sb->control, sizeof(sb->control), "%s/control.sock", sb->dir);
	char *argv[] = {
	    (char *)harness_vmm(), "--kernel",	  vmlinux, "--initrd", initrd,	       "--mem",
	    (char *)mem,	   "--cpus",	  "2",	   "--vsock",  sb->vsock,      "--control",
	    sb->control,	   "--serial-in", "none",  "--append", (char *)append, NULL};
	assert_int_equal(vmm_start(&sb->p, argv), 0);
	assert_non_null(vmm_need_line(&sb->p, "READY", BOOT_TIMEOUT_MS));
	wait_agent(sb->vsock);
}

static void start_sandbox(struct sandbox *sb, const char *tag, const char *mem)
{
	start_sandbox_append(sb, tag, mem, "console=ttyS0 quiet forkd.agent=1");
}

static void stop_sandbox(struct sandbox *sb)
{
	json_decref(harness_call_expect(sb->control, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&sb->p, BOOT_TIMEOUT_MS), 0);
	vmm_free(&sb->p);
	harness_tmpdir_remove(sb->dir);
}

/* What one exec returned, its output in memory. */
struct run {
	int ret;
	struct fk_err err;
	struct fk_exec_result res;
	char *out, *errout;
	size_t out_len, err_len;
};

static char *read_memfd(int fd, size_t *len)
{
	struct stat st;
	char *buf;

	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	buf[st.st_size] = '\0';
	*len = (size_t)st.st_size;
	return buf;
}

/* Runs argv (NULL-terminated) with optional stdin bytes and extra request fields. */
static void run_exec(const char *uds, const char *const *argv, const void *in, size_t in_len,
		     json_t *fields, struct run *r)
{
	struct fk_exec_io io = {.in_fd = -1};
	json_t *req = fields ? fields : json_object();
	json_t *args = json_array();

	memset(r, 0, sizeof(*r));
	for (int i = 0; argv[i]; i++)
		json_array_append_new(args, json_string(argv[i]));
	json_object_set_new(req, "argv", args);
	io.out_fd = memfd_create("out", MFD_CLOEXEC);
	io.err_fd = memfd_create("err", MFD_CLOEXEC);
	assert_true(io.out_fd >= 0 && io.err_fd >= 0);
	if (in) {
		io.in_fd = memfd_create("in", MFD_CLOEXEC);
		assert_true(io.in_fd >= 0);
		assert_int_equal(write(io.in_fd, in, in_len), (ssize_t)in_len);
		assert_int_equal(lseek(io.in_fd, 0, SEEK_SET), 0);
	}
	r->ret = fk_agent_exec(uds, req, &io, CONNECT_MS, &r->res, &r->err);
	r->out = read_memfd(io.out_fd, &r->out_len);
	r->errout = read_memfd(io.err_fd, &r->err_len);
	close(io.out_fd);
	close(io.err_fd);
	if (io.in_fd >= 0)
		close(io.in_fd);
	json_decref(req);
}

static void run_free(struct run *r)
{
	free(r->out);
	free(r->errout);
}

/* Runs `sh -c script` and expects exit 0; returns stdout (caller frees). */
static char *sh(const char *uds, const char *script)
{
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	struct run r;

	run_exec(uds, argv, NULL, 0, NULL, &r);
	if (r.ret < 0)
		fail_msg("exec sh -c '%s': %s", script, r.err.msg);
	if (r.res.signal || r.res.exit_code)
		fail_msg("sh -c '%s': exit %d signal %d, stderr: %s", script, r.res.exit_code,
			 r.res.signal, r.errout);
	free(r.errout);
	return r.out;
}

static void test_exec_basics(void **state)
{
	struct sandbox sb;
	struct run r;

	(void)state;
	/* forkd-init names the guest from forkd.hostname= (test_branch_children: the generated
	 * name) */
	start_sandbox_append(&sb, "sandbox-exec", "512M",
			     "console=ttyS0 quiet forkd.agent=1 forkd.hostname=sbx-exec-1");
	const char *hostname[] = {"hostname", NULL};
	run_exec(sb.vsock, hostname, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, 0);
	assert_string_equal(r.out, "sbx-exec-1\n");
	run_free(&r);

	const char *echo[] = {"echo", "hello", "sandbox", NULL};
	run_exec(sb.vsock, echo, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, 0);
	assert_string_equal(r.out, "hello sandbox\n");
	assert_int_equal(r.err_len, 0);
	assert_int_equal(r.res.exit_code, 0);
	assert_int_equal(r.res.signal, 0);
	assert_true(r.res.pid > 1);
	run_free(&r);

	const char *exit3[] = {"/bin/sh", "-c", "exit 3", NULL};
	run_exec(sb.vsock, exit3, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, 0);
	assert_int_equal(r.res.exit_code, 3);
	run_free(&r);

	const char *killed[] = {"/bin/sh", "-c", "kill -TERM $$; sleep 5", NULL};
	run_exec(sb.vsock, killed, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, 0);
	assert_int_equal(r.res.signal, 15);
	run_free(&r);

	/* stdout and stderr stay apart, and env and cwd arrive. */
	const char *both[] = {"/bin/sh", "-c", "echo out-$FORKD_T; pwd >&2", NULL};
	run_exec(sb.vsock, both, NULL, 0,
		 json_pack("{s:{s:s},s:s}", "env", "FORKD_T", "42", "cwd", "/proc"), &r);
	assert_int_equal(r.ret, 0);
	assert_string_equal(r.out, "out-42\n");
	assert_string_equal(r.errout, "/proc\n");
	run_free(&r);

	/* Commands that cannot run: clear errors, and the agent keeps serving. */
	const char *missing[] = {"/no/such/binary", NULL};
	run_exec(sb.vsock, missing, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, -ENOENT);
	assert_non_null(strstr(r.err.msg, "/no/such/binary"));
	run_free(&r);
	const char *notexec[] = {"/etc/passwd", NULL};
	run_exec(sb.vsock, notexec, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, -EACCES);
	run_free(&r);
	run_exec(sb.vsock, echo, NULL, 0, json_pack("{s:s}", "cwd", "/no/such/dir"), &r);
	assert_true(r.ret < 0);
	assert_non_null(strstr(r.err.msg, "/no/such/dir"));
	run_free(&r);

	/* Inside: the agent runs as the guest's root, in its own session. */
	char *id = sh(sb.vsock, "id -u; cat /proc/1/comm");
	assert_string_equal(id, "0\ninit\n");
	free(id);
	stop_sandbox(&sb);
}

/*
 * What the guest prints for the big-stdout test, hashed the same way on the
 * host: a 1 MiB block (the first MiB of `yes LINE`) repeated `blocks` times.
 * The block is made once in the guest and then cat'ed, so the guest's CPU
 * time goes to moving bytes, not to making them.
 */
static uint64_t repeated_block_hash(const char *line, unsigned blocks)
{
	XXH64_state_t *st = XXH64_createState();
	size_t ll = strlen(line), fill = 0;
	char *block = malloc(1 << 20);
	uint64_t h;

	assert_non_null(st);
	assert_non_null(block);
	while (fill < (1u << 20)) {
		size_t take = ll + 1 <= (1u << 20) - fill ? ll + 1 : (1u << 20) - fill;
		memcpy(block + fill, line, take > ll ? ll : take);
		if (take > ll)
			block[fill + ll] = '\n';
		fill += take;
	}
	XXH64_reset(st, 0);
	for (unsigned i = 0; i < blocks; i++)
		XXH64_update(st, block, 1 << 20);
	h = XXH64_digest(st);
	XXH64_freeState(st);
	free(block);
	return h;
}

static void test_exec_streams(void **state)
{
	static const char line[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTU";
	char script[256];
	struct sandbox sb;
	struct run r;
	uint8_t *in;

	(void)state;
	start_sandbox(&sb, "sandbox-streams", "512M");

	/* 100 MiB of stdout, byte-exact, and nothing on stderr. */
	snprintf(
	    script, sizeof(script),
	    "yes %s | head -c 1048576 > /tmp/block && for i in $(seq %llu); do cat /tmp/block; "
	    "done",
	    line, BIG_STDOUT_BYTES >> 20);
	const char *big[] = {"/bin/sh", "-c", script, NULL};
	long long t0 = now_ms();
	run_exec(sb.vsock, big, NULL, 0, NULL, &r);
	assert_int_equal(r.ret, 0);
	assert_int_equal(r.res.exit_code, 0);
	assert_int_equal(r.out_len, BIG_STDOUT_BYTES);
	assert_true(XXH64(r.out, r.out_len, 0) ==
		    repeated_block_hash(line, (unsigned)(BIG_STDOUT_BYTES >> 20)));
	assert_int_equal(r.err_len, 0);
	printf("sandbox: 100 MiB of stdout in %lld ms\n", now_ms() - t0);
	run_free(&r);

	/* stdin streamed in while stdout streams back (cat), 8 MiB each way. */
	in = malloc(STDIN_BYTES);
	assert_non_null(in);
	uint64_t x = 0x9E3779B97F4A7C15ull;
	for (size_t i = 0; i < STDIN_BYTES; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		in[i] = (uint8_t)x;
	}
	const char *cat[] = {"cat", NULL};
	t0 = now_ms();
	run_exec(sb.vsock, cat, in, STDIN_BYTES, NULL, &r);
	printf("sandbox: 8 MiB through cat (stdin and stdout at once) in %lld ms\n", now_ms() - t0);
	assert_int_equal(r.ret, 0);
	assert_int_equal(r.out_len, STDIN_BYTES);
	assert_memory_equal(r.out, in, STDIN_BYTES);
	run_free(&r);
	/* Inside: the guest counted what it got. */
	const char *wc[] = {"wc", "-c", NULL};
	run_exec(sb.vsock, wc, in, STDIN_BYTES, NULL, &r);
	assert_int_equal(r.ret, 0);
	assert_int_equal(strtoull(r.out, NULL, 10), STDIN_BYTES);
	run_free(&r);
	free(in);
	stop_sandbox(&sb);
}

struct concurrent_job {
	const char *uds;
	int index;
	struct run r;
};

static void *concurrent_exec(void *arg)
{
	struct concurrent_job *j = arg;
	char script[64];

	snprintf(script, sizeof(script), "sleep 0.2; echo job-%d", j->index);
	const char *argv[] = {"/bin/sh", "-c", script, NULL};
	run_exec(j->uds, argv, NULL, 0, NULL, &j->r);
	return NULL;
}

static void test_exec_timeout_and_concurrency(void **state)
{
	struct concurrent_job jobs[CONCURRENT];
	pthread_t threads[CONCURRENT];
	struct sandbox sb;
	struct run r;

	(void)state;
	start_sandbox(&sb, "sandbox-many", "512M");

	/* The agent kills a command at its timeout, process group and all. */
	const char *slow[] = {"/bin/sh", "-c", "sleep 60 & sleep 60", NULL};
	long long t0 = now_ms();
	run_exec(sb.vsock, slow, NULL, 0, json_pack("{s:i}", "timeout_ms", 1000), &r);
	assert_int_equal(r.ret, 0);
	assert_true(r.res.timed_out);
	assert_int_equal(r.res.signal, 9);
	assert_true(now_ms() - t0 < 30000);
	run_free(&r);
	char *left = sh(sb.vsock, "ps -o comm | grep -c '^sleep$' || true");
	assert_string_equal(left, "0\n");
	free(left);

	for (int i = 0; i < CONCURRENT; i++) {
		jobs[i] = (struct concurrent_job){.uds = sb.vsock, .index = i};
		assert_int_equal(pthread_create(&threads[i], NULL, concurrent_exec, &jobs[i]), 0);
	}
	for (int i = 0; i < CONCURRENT; i++) {
		char want[32];
		assert_int_equal(pthread_join(threads[i], NULL), 0);
		snprintf(want, sizeof(want), "job-%d\n", i);
		if (jobs[i].r.ret < 0)
			fail_msg("concurrent exec %d: %s", i, jobs[i].r.err.msg);
		assert_string_equal(jobs[i].r.out, want);
		run_free(&jobs[i].r);
	}
	stop_sandbox(&sb);
}

static void test_files(void **state)
{
	struct fk_err err = {0};
	struct sandbox sb;
	uint64_t bytes = 0;
	unsigned mode = 0;
	json_t *resp;
	int src, dst;

	(void)state;
	start_sandbox(&sb, "sandbox-files", "1G");

	/* 256 MiB of non-repeating bytes up and back down. */
	src = memfd_create("big", MFD_CLOEXEC);
	assert_true(src >= 0);
	assert_int_equal(ftruncate(src, (off_t)BIG_FILE_BYTES), 0);
	uint64_t *w = mmap(NULL, BIG_FILE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, src, 0);
	assert_true(w != MAP_FAILED);
	uint64_t x = 88172645463325252ull;
	for (size_t i = 0; i < BIG_FILE_BYTES / 8; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		w[i] = x;
	}
	uint64_t want = XXH64(w, BIG_FILE_BYTES, 0);
	long long t0 = now_ms();
	assert_int_equal(
	    fk_agent_put(sb.vsock, src, "/tmp/big.bin", 0640, CONNECT_MS, &bytes, &err), 0);
	printf("sandbox: put 256 MiB in %lld ms\n", now_ms() - t0);
	assert_int_equal(bytes, BIG_FILE_BYTES);
	/* Inside: the size and mode the guest sees. */
	char *st = sh(sb.vsock, "stat -c '%s %a' /tmp/big.bin");
	assert_string_equal(st, "268435456 640\n");
	free(st);
	dst = memfd_create("back", MFD_CLOEXEC);
	assert_true(dst >= 0);
	t0 = now_ms();
	assert_int_equal(
	    fk_agent_get(sb.vsock, "/tmp/big.bin", dst, CONNECT_MS, &bytes, &mode, &err), 0);
	printf("sandbox: get 256 MiB in %lld ms\n", now_ms() - t0);
	assert_int_equal(bytes, BIG_FILE_BYTES);
	assert_int_equal(mode, 0640);
	void *back = mmap(NULL, BIG_FILE_BYTES, PROT_READ, MAP_SHARED, dst, 0);
	assert_true(back != MAP_FAILED);
	assert_true(XXH64(back, BIG_FILE_BYTES, 0) == want);
	munmap(back, BIG_FILE_BYTES);
	munmap(w, BIG_FILE_BYTES);
	close(src);
	close(dst);

	/* stat, ls, rm. */
	json_t *req = json_pack("{s:s,s:s}", "op", "stat", "path", "/tmp/big.bin");
	assert_int_equal(fk_agent_call(sb.vsock, req, &resp, CONNECT_MS, &err), 0);
	json_decref(req);
	assert_string_equal(json_string_value(json_object_get(resp, "type")), "file");
	assert_int_equal(json_integer_value(json_object_get(resp, "size")), BIG_FILE_BYTES);
	json_decref(resp);
	req = json_pack("{s:s,s:s}", "op", "ls", "path", "/tmp");
	assert_int_equal(fk_agent_call(sb.vsock, req, &resp, CONNECT_MS, &err), 0);
	json_decref(req);
	json_t *entries = json_object_get(resp, "entries");
	bool found = false;
	for (size_t i = 0; i < json_array_size(entries); i++)
		found |=
		    !strcmp(json_string_value(json_object_get(json_array_get(entries, i), "name")),
			    "big.bin");
	assert_true(found);
	json_decref(resp);
	req = json_pack("{s:s,s:s}", "op", "rm", "path", "/tmp/big.bin");
	assert_int_equal(fk_agent_call(sb.vsock, req, &resp, CONNECT_MS, &err), 0);
	json_decref(req);
	json_decref(resp);
	char *gone = sh(sb.vsock, "test -e /tmp/big.bin && echo there || echo gone");
	assert_string_equal(gone, "gone\n");
	free(gone);

	/* Errors name the path. */
	dst = memfd_create("none", MFD_CLOEXEC);
	assert_int_equal(fk_agent_get(sb.vsock, "/no/such/file", dst, CONNECT_MS, NULL, NULL, &err),
			 -ENOENT);
	assert_non_null(strstr(err.msg, "/no/such/file"));
	close(dst);
	req = json_pack("{s:s,s:s}", "op", "stat", "path", "relative/path");
	assert_true(fk_agent_call(sb.vsock, req, &resp, CONNECT_MS, &err) < 0);
	json_decref(req);
	stop_sandbox(&sb);
}

/* `sh -c script` in the VM behind uds, for its stdout (trailing newline cut). */
static void ask(const char *uds, const char *script, char *out, size_t len)
{
	char *o = sh(uds, script);

	snprintf(out, len, "%s", o);
	out[strcspn(out, "\n")] = '\0';
	free(o);
}

static void test_branch_children(void **state)
{
	char kid[KIDS][400], rng[KIDS][80], host[KIDS][80], req[600], out[80];
	struct sandbox sb;
	json_t *reply;

	(void)state;
	start_sandbox(&sb, "sandbox-branch", "512M");
	char *before = sh(sb.vsock, "hostname");
	/* Booted without forkd.hostname=: forkd-init's "forkd-" and 12 hex digits, not "(none)". */
	before[strcspn(before, "\n")] = '\0';
	if (strlen(before) != 18 || strncmp(before, "forkd-", 6) != 0 ||
	    strspn(before + 6, "0123456789abcdef") != 12)
		fail_msg("the booted source's hostname is '%s', expected forkd-<12 hex digits>",
			 before);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":%d,\"dir\":\"%s/branch\"}", KIDS,
		 sb.dir);
	reply = harness_call_expect(sb.control, req, true);
	assert_non_null(reply);
	json_decref(reply);
	for (int k = 0; k < KIDS; k++) {
		snprintf(kid[k], sizeof(kid[k]), "%s/branch/child-%d/vsock.sock", sb.dir, k);
		wait_agent(kid[k]);
		/* The child's agent took its fork notification before running anything. */
		ask(kid[k], "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'", rng[k],
		    sizeof(rng[k]));
		ask(kid[k], "hostname", host[k], sizeof(host[k]));
		assert_int_equal(strlen(rng[k]), 32);
		assert_true(strncmp(host[k], "forkd-", 6) == 0);
		for (int j = 0; j < k; j++) {
			if (!strcmp(rng[j], rng[k]))
				fail_msg("children %d and %d read the same random bytes %s", j, k,
					 rng[k]);
			if (!strcmp(host[j], host[k]))
				fail_msg("children %d and %d share hostname %s", j, k, host[k]);
		}
		/* The guest's wall clock is the host's, within a second. */
		time_t lo = time(NULL);
		ask(kid[k], "date +%s", out, sizeof(out));
		time_t hi = time(NULL), g = (time_t)strtoll(out, NULL, 10);
		if (g < lo - 1 || g > hi + 1)
			fail_msg("child %d: guest clock %lld, host %lld..%lld", k, (long long)g,
				 (long long)lo, (long long)hi);
	}
	/* Private roots: a file written in child 0 is nowhere else. */
	free(sh(kid[0], "echo mine > /root/private && sync"));
	for (int k = 1; k < KIDS; k++) {
		ask(kid[k], "test -e /root/private && echo there || echo absent", out, sizeof(out));
		assert_string_equal(out, "absent");
	}
	ask(sb.vsock, "test -e /root/private && echo there || echo absent", out, sizeof(out));
	assert_string_equal(out, "absent");
	ask(kid[0], "cat /root/private", out, sizeof(out));
	assert_string_equal(out, "mine");
	/* The source kept its identity and runs on. */
	char *after = sh(sb.vsock, "hostname");
	after[strcspn(after, "\n")] = '\0';
	assert_string_equal(after, before);
	free(before);
	free(after);
	for (int k = 0; k < KIDS; k++) {
		char sock[500];
		snprintf(sock, sizeof(sock), "%s/branch/child-%d/control.sock", sb.dir, k);
		json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
	}
	stop_sandbox(&sb);
}

/* An exec left running on its own connection (the host side of it, raw). */
static int open_sleeper(const char *uds)
{
	struct fk_err err = {0};
	int fd = fk_vsock_connect(uds, FK_AGENT_PORT, CONNECT_MS, &err);
	const char *req = "{\"op\":\"exec\",\"argv\":[\"sleep\",\"600\"],\"stdin\":true}";

	if (fd < 0)
		fail_msg("connect: %s", err.msg);
	assert_int_equal(fk_frame_write(fd, FK_FRAME_REQUEST, req, (uint32_t)strlen(req)), 0);
	return fd;
}

/* Reads frames from a blocking fd until one of `type`; returns 0 or a negative error. */
static int wait_frame(int fd, unsigned type)
{
	struct fk_frame_reader rd;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	int ret;

	assert_int_equal(fk_frame_reader_init(&rd), 0);
	for (;;) {
		ret = fk_frame_read(&rd, fd, &hdr, &payload);
		if (ret < 0 || (ret == 1 && hdr.type == type))
			break;
	}
	fk_frame_reader_free(&rd);
	return ret < 0 ? ret : 0;
}

static void test_snapshot_restore_with_open_connection(void **state)
{
	char snap[400], req[600], rsock[400], out[80];
	struct sandbox sb;
	struct vmm_proc r;
	int fd;

	(void)state;
	start_sandbox(&sb, "sandbox-snap", "512M");
	fd = open_sleeper(sb.vsock);
	assert_int_equal(wait_frame(fd, FK_FRAME_RESPONSE), 0);
	snprintf(snap, sizeof(snap), "%s/snap", sb.dir);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	json_decref(harness_call_expect(sb.control, req, true));

	snprintf(rsock, sizeof(rsock), "%s/restored.sock", sb.dir);
	char *rargv[] = {(char *)harness_vmm(), "--restore", snap, "--vsock", rsock,
			 "--serial-in",		"none",	     NULL};
	assert_int_equal(vmm_start(&r, rargv), 0);
	wait_agent(rsock);
	{
		const char *argv[] = {"/bin/sh", "-c", "echo restored-$((40+2))", NULL};
		struct run x;

		run_exec(rsock, argv, NULL, 0, NULL, &x);
		if (x.ret < 0) {
			/* Whether the restored VMM still runs, and what it and its guest said. */
			int st = vmm_wait(&r, 500);

			vmm_dump(&r);
			fail_msg("restored VM: exec: %s (VMM %s, status %d)", x.err.msg,
				 st == -ETIMEDOUT ? "running" : "exited", st);
		}
		snprintf(out, sizeof(out), "%s", x.out);
		out[strcspn(out, "\n")] = '\0';
		run_free(&x);
	}
	assert_string_equal(out, "restored-42");
	/* Inside the restored guest, the sleeper's connection was reset: its handler is gone. */
	for (int i = 0; i < 100; i++) {
		ask(rsock, "pgrep -x sleep | wc -l", out, sizeof(out));
		if (!strcmp(out, "0"))
			break;
		usleep(100 * 1000);
	}
	assert_string_equal(out, "0");
	vmm_kill(&r);
	vmm_free(&r);

	/* The source's connection is still live: end the sleeper through it. */
	const char *sig = "{\"signal\":9}";
	assert_int_equal(fk_frame_write(fd, FK_FRAME_SIGNAL, sig, (uint32_t)strlen(sig)), 0);
	assert_int_equal(wait_frame(fd, FK_FRAME_EXIT), 0);
	close(fd);
	stop_sandbox(&sb);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_exec_basics),
	    cmocka_unit_test(test_exec_streams),
	    cmocka_unit_test(test_exec_timeout_and_concurrency),
	    cmocka_unit_test(test_files),
	    cmocka_unit_test(test_branch_children),
	    cmocka_unit_test(test_snapshot_restore_with_open_connection),
	};
	if (where_begin(argc, argv, NEEDS_LINUX, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("Linux sandbox: agent over vsock", tests, setup, NULL);
}
