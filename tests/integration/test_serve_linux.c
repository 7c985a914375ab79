/* SPDX-License-Identifier: MIT */
/*
 * forkd serve end to end with a real Linux guest (image forkd-test-base,
 * `make test-rootfs`): the daemon process driven by the forkd CLI and by the
 * Python SDK, the guest reached through its agent over the daemon.
 *
 * - `forkd vm create --image forkd-test-base --mem 512`; exec through the
 *   daemon is retried (bounded) until the agent answers;
 * - CLI: `forkd exec` echo (stdout "hello\n", exit 0), `sh -c 'exit 7'`
 *   (exit 7), stdout and stderr kept apart; `forkd cp` of 1 MiB of random
 *   bytes in (sha256 inside the guest) and back out, byte-exact;
 * - SDK (sdk/python): Sandbox(vm_id).commands.run with on_stdout streaming,
 *   files.write/read byte-exact, .branch(2): each child answers exec, the
 *   children's /dev/urandom differs from each other's and the parent's,
 *   their hostnames differ;
 * - the tree shows the 2 children under the parent; `vm rm` is refused
 *   without --cascade and with it every forkd-vmm process of this state dir
 *   is gone;
 * - sdk/python/tests/e2e_daemon.py, the SDK's whole flow, passes against the
 *   same daemon and leaves no VMM behind.
 *
 * Needs a Linux guest (hardware-virtualization KVM, else the nested test host).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"
#include "serve_proc.h"
#include "where.h"

#define IMAGE	 "forkd-test-base"
#define CP_BYTES (1u << 20)
/* Native bounds; harness_deadline stretches them 4x in the nested test host. */
#define AGENT_WAIT_MS 90000
#define SDK_WAIT_MS   180000

extern char **environ;

static char dir[256], sock[320], state[300];
static pid_t daemon_pid;
/* The VM every test works on (test_cli_exec_and_cp creates it). */
static char vm_id[64];

static const char *cli(void)
{
	return serve_cli();
}

/* Appends what fd has to *buf; returns false at EOF. */
static bool drain(int fd, char **buf, size_t *len, size_t *cap)
{
	ssize_t n;

	if (*cap - *len < 4096) {
		*cap = *cap * 2 + 4096;
		*buf = realloc(*buf, *cap);
		assert_non_null(*buf);
	}
	n = read(fd, *buf + *len, *cap - *len - 1);
	if (n < 0 && errno == EINTR)
		return true;
	if (n <= 0)
		return false;
	*len += (size_t)n;
	(*buf)[*len] = '\0';
	return true;
}

/*
 * Runs argv with FORKD_SOCKET set, stdout and stderr on their own pipes;
 * returns the exit status (128+signal if killed) and both outputs
 * (malloc'd, NUL-terminated; NULL pointers to discard).
 */
static int run2(char **out, char **err, char *const argv[])
{
	int po[2], pe[2], status = -1;
	posix_spawn_file_actions_t fa;
	char *b[2] = {calloc(1, 1), calloc(1, 1)};
	size_t len[2] = {0, 0}, cap[2] = {1, 1};
	struct pollfd pfd[2];
	pid_t pid;

	assert_true(b[0] && b[1]);
	assert_int_equal(pipe2(po, O_CLOEXEC), 0);
	assert_int_equal(pipe2(pe, O_CLOEXEC), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, po[1], STDOUT_FILENO);
	posix_spawn_file_actions_adddup2(&fa, pe[1], STDERR_FILENO);
	setenv("FORKD_SOCKET", sock, 1);
	assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(po[1]);
	close(pe[1]);
	pfd[0] = (struct pollfd){.fd = po[0], .events = POLLIN};
	pfd[1] = (struct pollfd){.fd = pe[0], .events = POLLIN};
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		if (poll(pfd, 2, -1) < 0) {
			assert_int_equal(errno, EINTR);
			continue;
		}
		for (int k = 0; k < 2; k++)
			if (pfd[k].fd >= 0 && pfd[k].revents &&
			    !drain(pfd[k].fd, &b[k], &len[k], &cap[k])) {
				close(pfd[k].fd);
				pfd[k].fd = -1;
			}
	}
	waitpid(pid, &status, 0);
	if (out)
		*out = b[0];
	else
		free(b[0]);
	if (err)
		*err = b[1];
	else
		free(b[1]);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* forkd ARGS... (NULL-terminated); stdout into *out, stderr into *err (either may be NULL). */
static int forkd(char **out, char **err, ...)
{
	char *argv[32];
	va_list ap;
	int n = 0;

	argv[n++] = (char *)cli();
	va_start(ap, err);
	while (n < 31 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	return run2(out, err, argv);
}

static json_t *forkd_json(const char *what, ...)
{
	char *argv[32], *out = NULL, *err = NULL;
	json_error_t jerr;
	json_t *j;
	va_list ap;
	int n = 0, rc;

	argv[n++] = (char *)cli();
	va_start(ap, what);
	while (n < 30 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n++] = "--json";
	argv[n] = NULL;
	rc = run2(&out, &err, argv);
	if (rc != 0)
		fail_msg("forkd %s --json: exit %d: %s%s", what, rc, out, err);
	j = json_loads(out, 0, &jerr);
	if (!j)
		fail_msg("forkd %s --json: not JSON (%s): %s", what, jerr.text, out);
	free(out);
	free(err);
	return j;
}

static void dump_log(void)
{
	char path[400], line[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/serve.log", dir);
	f = fopen(path, "r");
	if (!f)
		return;
	fprintf(stderr, "---- %s\n", path);
	while (fgets(line, sizeof(line), f))
		fputs(line, stderr);
	fclose(f);
}

static void start_daemon(void)
{
	char log[400];

	snprintf(log, sizeof(log), "%s/serve.log", dir);
	daemon_pid = serve_start(state, sock, log, NULL);
}

/* pids of the forkd-vmm processes started for this test's state dir (argv mentions it). */
static size_t vmm_pids(pid_t *out, size_t max)
{
	assert_int_equal(access("/proc", R_OK), 0);
	return harness_vmm_pids(state, out, max);
}

static int group_setup(void **state_)
{
	(void)state_;
	if (harness_tmpdir_create(dir, sizeof(dir), "serve-linux") < 0)
		return -1;
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(sock, sizeof(sock), "%s/forkd.sock", dir);
	return 0;
}

static int group_teardown(void **state_)
{
	char *out = NULL;

	(void)state_;
	if (daemon_pid) {
		/* Whatever a failed test left: every VM goes with its tree. */
		if (forkd(&out, NULL, "vm", "ls", "--json", NULL) == 0) {
			json_t *j = json_loads(out, 0, NULL), *vm;
			size_t i;
			json_array_foreach(json_object_get(j, "vms"), i, vm)
			    forkd(NULL, NULL, "vm", "rm", "--cascade",
				  json_string_value(json_object_get(vm, "id")), NULL);
			json_decref(j);
		}
		free(out);
		serve_stop(&daemon_pid, SIGTERM);
	}
	return harness_tmpdir_remove(dir);
}

/*
 * exec through the daemon until the agent answers (bounded). POST /v1/vms of
 * an image returns once the guest agent answers a ping, so the first exec
 * must already work: more tries fail the test, after saying how long the
 * agent took.
 */
static void wait_agent(const char *id)
{
	long long t0 = now_ms(), end = harness_deadline(AGENT_WAIT_MS);
	char *out = NULL, *err = NULL, first[600] = "";
	int rc = -1, tries = 0;

	while (now_ms() < end) {
		free(out);
		free(err);
		tries++;
		rc = forkd(&out, &err, "exec", (char *)id, "--", "true", NULL);
		if (rc == 0)
			break;
		if (tries == 1)
			snprintf(first, sizeof(first), "exit %d: %s%s", rc, out, err);
		usleep(250 * 1000);
	}
	if (rc != 0) {
		dump_log();
		fail_msg(
		    "%s: the agent never answered exec through the daemon (%d tries, last exit "
		    "%d: %s%s)",
		    id, tries, rc, out, err);
	}
	printf("serve-linux: %s: the agent answered after %lld ms (%d tries)\n", id, now_ms() - t0,
	       tries);
	if (tries > 1)
		fail_msg(
		    "%s: `forkd vm create` returned before the guest agent answered (the first "
		    "exec: %s)",
		    id, first);
	free(out);
	free(err);
}

static void exec_expect(const char *id, const char *script, int want_rc, const char *want_out,
			const char *want_err)
{
	char *out = NULL, *err = NULL;
	int rc = forkd(&out, &err, "exec", (char *)id, "--", "sh", "-c", (char *)script, NULL);

	if (rc != want_rc || strcmp(out, want_out) != 0 || strcmp(err, want_err) != 0)
		fail_msg("forkd exec %s -- sh -c '%s': exit %d stdout '%s' stderr '%s'; expected "
			 "exit %d stdout '%s' stderr '%s'",
			 id, script, rc, out, err, want_rc, want_out, want_err);
	free(out);
	free(err);
}

/* The sha256 of a host file, as sha256sum prints it (64 hex digits). */
static void host_sha256(const char *path, char out[65])
{
	char cmd[600], text[256] = "";
	FILE *f;

	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	f = popen(cmd, "r");
	assert_non_null(f);
	if (!fgets(text, sizeof(text), f) || strlen(text) < 64)
		fail_msg("%s: %s", cmd, text);
	pclose(f);
	memcpy(out, text, 64);
	out[64] = '\0';
}

static void *read_file(const char *path, size_t *len)
{
	struct stat st;
	char *buf;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, &st) < 0)
		fail_msg("%s: %s", path, strerror(errno));
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static void test_cli_exec_and_cp(void **state_)
{
	char *out = NULL, *err = NULL, *nl, in_path[400], out_path[400], want[65], dest[128];
	unsigned char *data, *back;
	size_t back_len;
	long long t0;
	int rc, fd;

	(void)state_;
	start_daemon();
	t0 = now_ms();
	rc = forkd(&out, &err, "vm", "create", "--image", IMAGE, "--mem", "512", "--cpus", "2",
		   NULL);
	if (rc != 0) {
		dump_log();
		fail_msg("vm create --image " IMAGE ": exit %d: %s%s (build it with `make "
			 "test-rootfs`)",
			 rc, out, err);
	}
	nl = strchr(out, '\n');
	if (nl)
		*nl = '\0';
	if (strncmp(out, "vm-", 3) != 0)
		fail_msg("vm create printed '%s', not a VM id", out);
	snprintf(vm_id, sizeof(vm_id), "%s", out);
	printf("serve-linux: vm create --image " IMAGE " took %lld ms\n", now_ms() - t0);
	free(out);
	free(err);
	wait_agent(vm_id);

	/* exec: stdout, the exit status, stderr apart. */
	rc = forkd(&out, &err, "exec", vm_id, "--", "echo", "hello", NULL);
	if (rc != 0 || strcmp(out, "hello\n") != 0 || strcmp(err, "") != 0)
		fail_msg("forkd exec %s -- echo hello: exit %d stdout '%s' stderr '%s'", vm_id, rc,
			 out, err);
	free(out);
	free(err);
	exec_expect(vm_id, "exit 7", 7, "", "");
	exec_expect(vm_id, "echo out; echo err >&2; exit 3", 3, "out\n", "err\n");
	exec_expect(vm_id, "cat /proc/sys/kernel/ostype", 0, "Linux\n", "");

	/* cp: 1 MiB of random bytes in (checked inside the guest) and back out. */
	data = malloc(CP_BYTES);
	assert_non_null(data);
	for (size_t off = 0; off < CP_BYTES;) {
		ssize_t n = getrandom(data + off, CP_BYTES - off, 0);
		assert_true(n > 0);
		off += (size_t)n;
	}
	snprintf(in_path, sizeof(in_path), "%s/in.bin", dir);
	snprintf(out_path, sizeof(out_path), "%s/out.bin", dir);
	fd = open(in_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, CP_BYTES), CP_BYTES);
	close(fd);
	host_sha256(in_path, want);
	snprintf(dest, sizeof(dest), "%s:/tmp/cp-in.bin", vm_id);
	rc = forkd(&out, &err, "cp", in_path, dest, NULL);
	if (rc != 0)
		fail_msg("forkd cp %s %s: exit %d: %s%s", in_path, dest, rc, out, err);
	free(out);
	free(err);
	rc = forkd(&out, &err, "exec", vm_id, "--", "sha256sum", "/tmp/cp-in.bin", NULL);
	if (rc != 0 || strncmp(out, want, 64) != 0)
		fail_msg("sha256 inside the guest: exit %d '%s%s', host's %s", rc, out, err, want);
	free(out);
	free(err);
	rc = forkd(&out, &err, "cp", dest, out_path, NULL);
	if (rc != 0)
		fail_msg("forkd cp %s %s: exit %d: %s%s", dest, out_path, rc, out, err);
	free(out);
	free(err);
	back = read_file(out_path, &back_len);
	assert_int_equal(back_len, CP_BYTES);
	if (memcmp(back, data, CP_BYTES) != 0)
		fail_msg("forkd cp out: %s differs from what went in", out_path);
	free(back);
	free(data);
}

/*
 * The SDK: a Sandbox attached to the VM. Prints one JSON line at the end with
 * the children's ids, read by the C side. Each step says what went wrong.
 */
static const char sdk_script[] =
    "import hashlib, json, os, sys, time\n"
    "import forkd\n"
    "from forkd import Controller, Sandbox\n"
    "c = Controller(timeout=float(os.environ['FORKD_TEST_TIMEOUT']))\n"
    "sb = Sandbox(os.environ['FORKD_TEST_VM'], c)\n"
    "def check(cond, why):\n"
    "    if not cond:\n"
    "        raise SystemExit('SDK: ' + why)\n"
    "# on_stdout streams: the first chunk comes well before the command ends.\n"
    "chunks, times = [], []\n"
    "def on_out(text):\n"
    "    times.append(time.monotonic())\n"
    "    chunks.append(text)\n"
    "t0 = time.monotonic()\n"
    "r = sb.commands.run('for i in 1 2 3 4; do echo $i; sleep 1; done; echo e >&2',\n"
    "                    on_stdout=on_out, timeout=0)\n"
    "end = time.monotonic()\n"
    "check((r.exit_code, r.stdout, r.stderr) == (0, '1\\n2\\n3\\n4\\n', 'e\\n'), repr(r))\n"
    "check(''.join(chunks) == r.stdout, f'callbacks got {chunks!r}')\n"
    "check(times and times[0] - t0 < end - t0 - 2.0,\n"
    "      f'first chunk at {times[0] - t0:.2f} s, end at {end - t0:.2f} s: not streamed')\n"
    "# files: bytes in and out, the same inside the guest.\n"
    "data = os.urandom(300 << 10)\n"
    "sb.files.write('/tmp/sdk.bin', data)\n"
    "check(sb.files.read('/tmp/sdk.bin') == data, 'files.read differs from files.write')\n"
    "r = sb.commands.run(['sha256sum', '/tmp/sdk.bin'])\n"
    "check(r.exit_code == 0 and r.stdout.split()[0] == hashlib.sha256(data).hexdigest(),\n"
    "      f'sha256 inside the guest: {r!r}')\n"
    "# BRANCH into 2: each child answers, with its own RNG and hostname.\n"
    "rnd = 'head -c 16 /dev/urandom | od -An -tx1'\n"
    "kids = sb.branch(2)\n"
    "check(len(kids) == 2, f'{len(kids)} children')\n"
    "def run(sbx, cmd):\n"
    "    # A child's agent refuses exec until its fork notification is applied: bounded retry.\n"
    "    deadline = time.monotonic() + float(os.environ['FORKD_TEST_TIMEOUT'])\n"
    "    tries = 0\n"
    "    while True:\n"
    "        tries += 1\n"
    "        try:\n"
    "            r = sbx.commands.run(cmd)\n"
    "            if tries > 1:\n"
    "                print(f'{sbx.id}: exec answered after {tries} tries', file=sys.stderr)\n"
    "            return r\n"
    "        except forkd.ForkdError as e:\n"
    "            if time.monotonic() > deadline:\n"
    "                raise SystemExit(f'SDK: {sbx.id}: exec {cmd!r}: {e!r} ({tries} tries)')\n"
    "            print(f'{sbx.id}: exec {cmd!r}: {e!r}; again', file=sys.stderr)\n"
    "            time.sleep(0.5)\n"
    "outs, hosts = {}, {}\n"
    "for s in [sb] + kids:\n"
    "    r = run(s, rnd)\n"
    "    check(r.exit_code == 0 and len(r.stdout.split()) == 16, f'{s.id}: {r!r}')\n"
    "    outs[s.id] = r.stdout.strip()\n"
    "    r = run(s, 'hostname')\n"
    "    check(r.exit_code == 0 and r.stdout.strip(), f'{s.id}: hostname: {r!r}')\n"
    "    hosts[s.id] = r.stdout.strip()\n"
    "    r = run(s, ['cat', '/tmp/sdk.bin'])\n"
    "check(len(set(outs.values())) == 3, f'/dev/urandom shared: {outs}')\n"
    "check(len(set(hosts.values())) == 3, f'hostnames shared: {hosts}')\n"
    "for k in kids:\n"
    "    check(k.info().parent == sb.id, f'{k.id}: parent {k.vm.parent}')\n"
    "    check(k.files.read('/tmp/sdk.bin') == data, f'{k.id} lost the parent\\'s file')\n"
    "print(json.dumps({'children': [k.id for k in kids], 'rnd': outs, 'hosts': hosts}))\n";

static char kids[2][64];

static void test_sdk_sandbox_and_branch(void **state_)
{
	char pypath[600], timeout[32], *out = NULL, *err = NULL, *last;
	char *argv[] = {"/usr/bin/env", "python3", "-c", (char *)sdk_script, NULL};
	const char *src = getenv("FORKD_SRC");
	long long t0 = now_ms();
	json_t *j, *ch;
	int rc;

	(void)state_;
	if (!vm_id[0])
		fail_msg("no VM: test_cli_exec_and_cp did not create it");
	/* Integration tests run from the checkout's top (harness.c's defaults are relative). */
	snprintf(pypath, sizeof(pypath), "%s/sdk/python", src && *src ? src : ".");
	setenv("PYTHONPATH", pypath, 1);
	setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
	setenv("FORKD_TEST_VM", vm_id, 1);
	/* Per call, and the children's retry bound: the native bound, stretched when nested. */
	snprintf(timeout, sizeof(timeout), "%lld",
		 (harness_deadline(SDK_WAIT_MS) - now_ms()) / 1000);
	setenv("FORKD_TEST_TIMEOUT", timeout, 1);
	rc = run2(&out, &err, argv);
	if (err[0])
		fprintf(stderr, "SDK script stderr:\n%s", err);
	if (rc != 0) {
		dump_log();
		fail_msg("python SDK script: exit %d: %s%s", rc, out, err);
	}
	printf("serve-linux: SDK script took %lld ms: %s", now_ms() - t0, out);
	/* The last line is the script's JSON. */
	while (*out && out[strlen(out) - 1] == '\n')
		out[strlen(out) - 1] = '\0';
	last = strrchr(out, '\n');
	last = last ? last + 1 : out;
	j = json_loads(last, 0, NULL);
	if (!j)
		fail_msg("the SDK script's last line is not JSON: %s", last);
	ch = json_object_get(j, "children");
	assert_int_equal(json_array_size(ch), 2);
	for (int k = 0; k < 2; k++)
		snprintf(kids[k], sizeof(kids[k]), "%s", json_string_value(json_array_get(ch, k)));
	json_decref(j);
	free(out);
	free(err);
}

static void test_tree_and_cascade(void **state_)
{
	json_t *tree, *node, *vms;
	static pid_t pids[64];
	size_t i, under = 0, n;
	long long depth0 = -1;
	char *out = NULL, *err = NULL;
	int rc;

	(void)state_;
	if (!vm_id[0] || !kids[0][0])
		fail_msg("no VM or no children: the tests before did not get that far");
	tree = forkd_json("tree", "tree", NULL);
	json_array_foreach(json_object_get(tree, "tree"), i, node)
	{
		json_t *vm = json_object_get(node, "vm");
		const char *id = json_string_value(json_object_get(vm, "id"));
		const char *parent = json_string_value(json_object_get(vm, "parent"));
		long long depth = json_integer_value(json_object_get(node, "depth"));

		if (strcmp(id, vm_id) == 0)
			depth0 = depth;
		for (int k = 0; k < 2; k++)
			if (strcmp(id, kids[k]) == 0) {
				if (!parent || strcmp(parent, vm_id) != 0 || depth0 < 0 ||
				    depth != depth0 + 1)
					fail_msg("%s: parent %s depth %lld in the tree; expected "
						 "under %s (depth %lld)",
						 id, parent ? parent : "(none)", depth, vm_id,
						 depth0);
				under++;
			}
	}
	json_decref(tree);
	assert_int_equal(under, 2);
	rc = forkd(&out, &err, "tree", NULL);
	assert_int_equal(rc, 0);
	if (!strstr(out, vm_id) || !strstr(out, kids[0]) || !strstr(out, kids[1]))
		fail_msg("forkd tree does not show %s, %s and %s:\n%s", vm_id, kids[0], kids[1],
			 out);
	free(out);
	free(err);

	/* Three VMMs run for this state dir; a plain rm is refused, with --cascade all go. */
	n = vmm_pids(pids, 64);
	assert_int_equal(n, 3);
	rc = forkd(&out, &err, "vm", "rm", vm_id, NULL);
	if (rc != 1 || !strstr(err, "conflict"))
		fail_msg("vm rm %s with children: exit %d: %s%s", vm_id, rc, out, err);
	free(out);
	free(err);
	assert_int_equal(vmm_pids(pids, 64), 3);
	rc = forkd(&out, &err, "vm", "rm", vm_id, "--cascade", NULL);
	if (rc != 0)
		fail_msg("vm rm %s --cascade: exit %d: %s%s", vm_id, rc, out, err);
	for (int k = 0; k < 2; k++)
		if (!strstr(out, kids[k]) && !strstr(err, kids[k]))
			fail_msg("vm rm --cascade does not name %s: %s%s", kids[k], out, err);
	free(out);
	free(err);
	for (long long end = harness_deadline(15000); now_ms() < end; usleep(100 * 1000))
		if ((n = vmm_pids(pids, 64)) == 0)
			break;
	if (n)
		fail_msg("%zu forkd-vmm processes of %s still run after the cascade (pid %d)", n,
			 state, (int)pids[0]);
	vms = forkd_json("vm ls", "vm", "ls", NULL);
	assert_int_equal(json_array_size(json_object_get(vms, "vms")), 0);
	json_decref(vms);
	vm_id[0] = '\0';
}

/*
 * Runs an SDK's end-to-end script (argv, whose name is `what`) against this
 * daemon: it must exit 0 with a closing line saying "0 failed", and no VMM of
 * this state dir may be left once it cleaned up after itself.
 */
static void run_e2e_script(const char *what, char **argv)
{
	char *out = NULL, *err = NULL;
	static pid_t pids[64];
	long long t0 = now_ms();
	size_t n = 0;
	int rc;

	if (!daemon_pid)
		fail_msg("no daemon: test_cli_exec_and_cp did not start it");
	setenv("PYTHONDONTWRITEBYTECODE", "1", 1);
	rc = run2(&out, &err, argv);
	printf("serve-linux: %s took %lld ms, exit %d:\n%s", what, now_ms() - t0, rc, out);
	if (rc != 0) {
		dump_log();
		fail_msg("%s: exit %d%s:\n%s%s", what, rc,
			 rc == 124 ? " (killed at its time limit)" : "", out, err);
	}
	if (!strstr(out, " 0 failed"))
		fail_msg("%s exited 0 without '0 failed':\n%s", what, out);
	free(out);
	free(err);
	for (long long end = harness_deadline(15000); now_ms() < end; usleep(100 * 1000))
		if ((n = vmm_pids(pids, 64)) == 0)
			break;
	if (n)
		fail_msg("%zu forkd-vmm processes of %s still run after %s's cleanup", n, state,
			 what);
}

/*
 * sdk/python/tests/e2e_daemon.py, the SDK's own end-to-end flows (create,
 * run, streaming, timeout, files, branch 4, tree, snapshot and spawn, a
 * persisted branch, errors, metrics, the MCP server, cleanup) against this
 * daemon.
 */
static void test_sdk_e2e_script(void **state_)
{
	char script[600], per_call[32], total[32];
	char *argv[] = {"/usr/bin/timeout", "-k",  "10",	total,	  "python3", script,
			"--image",	    IMAGE, "--timeout", per_call, NULL};
	const char *src = getenv("FORKD_SRC");

	(void)state_;
	snprintf(script, sizeof(script), "%s/sdk/python/tests/e2e_daemon.py",
		 src && *src ? src : ".");
	snprintf(per_call, sizeof(per_call), "%lld", (harness_deadline(60000) - now_ms()) / 1000);
	snprintf(total, sizeof(total), "%lld", (harness_deadline(300000) - now_ms()) / 1000);
	run_e2e_script("sdk/python/tests/e2e_daemon.py", argv);
}

/*
 * The TypeScript SDK's end-to-end flows (sdk/typescript/test/e2e_daemon.ts,
 * compiled by `make ts-sdk`) against this daemon: probe-guest lineage (create,
 * branch three levels, snapshot, spawn, cascades, errors) and the Linux
 * image's sandbox (exec streamed, signals, time limits, files, branch with
 * fresh entropy). It also checks its VMMs gone by pid.
 */
static void test_ts_sdk_e2e_script(void **state_)
{
	char script[600], total[32];
	char *argv[] = {"/usr/bin/timeout", "-k", "10", total, "node", script, NULL};
	const char *b = getenv("FORKD_BUILD");

	(void)state_;
	snprintf(script, sizeof(script), "%s/sdk/typescript/test/e2e_daemon.js",
		 b && *b ? b : "build");
	if (access(script, R_OK) != 0)
		fail_msg("%s: %s (make ts-sdk compiles it)", script, strerror(errno));
	snprintf(total, sizeof(total), "%lld", (harness_deadline(300000) - now_ms()) / 1000);
	setenv("FORKD_E2E_IMAGE", IMAGE, 1);
	setenv("FORKD_PROBE", harness_probe(), 1);
	run_e2e_script("sdk/typescript/test/e2e_daemon.js", argv);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cli_exec_and_cp),   cmocka_unit_test(test_sdk_sandbox_and_branch),
	    cmocka_unit_test(test_tree_and_cascade),  cmocka_unit_test(test_sdk_e2e_script),
	    cmocka_unit_test(test_ts_sdk_e2e_script),
	};

	if (where_begin(argc, argv, NEEDS_LINUX, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("forkd serve with a Linux guest", tests, group_setup,
					   group_teardown);
}
