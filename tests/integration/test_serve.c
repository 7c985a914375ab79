/* SPDX-License-Identifier: MIT */
/*
 * forkd serve end to end, with probe guests: the real daemon process driven
 * through its REST API by the forkd CLI and by the Python SDK. A VM branched
 * three levels deep, 50 VMs spawned from one snapshot, the tree, the daemon
 * killed with SIGKILL and restarted with every VM re-adopted, deletes
 * refused and cascaded, with the VMM processes checked from outside.
 */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"
#include "serve_proc.h"
#include "tap_frames.h"
#include "where.h"

/*
 * VMs spawned from one snapshot: 50 (the number); 10 in the nested test host, whose one
 * emulated CPU spent all its time on 54 idle probe guests' timer exits there, so that a daemon
 * restarted beside them could not re-adopt them within minutes (measured, eighth session).
 */
#define SPAWN_MAX 50
#define SPAWN_N	  (harness_in_nested_host() ? 10 : SPAWN_MAX)

extern char **environ;

static char dir[256], sock[320], state[300];
static pid_t daemon_pid;

static const char *cli(void)
{
	return serve_cli();
}

/* Runs argv with FORKD_SOCKET set; returns its exit status and (malloc'd) stdout. */
static int run(char **out, char *const argv[])
{
	int pipefd[2], status = -1;
	posix_spawn_file_actions_t fa;
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	pid_t pid;
	ssize_t n;

	assert_non_null(buf);
	assert_int_equal(pipe(pipefd), 0);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pipefd[1], STDOUT_FILENO);
	posix_spawn_file_actions_addclose(&fa, pipefd[0]);
	setenv("FORKD_SOCKET", sock, 1);
	assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	close(pipefd[1]);
	while ((n = read(pipefd[0], buf + len, cap - len - 1)) > 0) {
		len += (size_t)n;
		if (cap - len < 2) {
			buf = realloc(buf, cap *= 2);
			assert_non_null(buf);
		}
	}
	buf[len] = '\0';
	close(pipefd[0]);
	waitpid(pid, &status, 0);
	if (out)
		*out = buf;
	else
		free(buf);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static int forkd(char **out, ...)
{
	char *argv[32];
	va_list ap;
	int n = 0;

	argv[n++] = (char *)cli();
	va_start(ap, out);
	while (n < 31 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	return run(out, argv);
}

static json_t *forkd_json(const char *what, ...)
{
	char *argv[32], *out = NULL;
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
	rc = run(&out, argv);
	if (rc != 0)
		fail_msg("forkd %s --json: exit %d: %s", what, rc, out);
	j = json_loads(out, 0, &jerr);
	if (!j)
		fail_msg("forkd %s --json: not JSON (%s): %s", what, jerr.text, out);
	free(out);
	return j;
}

/* forkd serve on this test's state dir and socket, with `extra` options (NULL-ended). */
static void start_daemon_with(char *const extra[])
{
	char log[400];

	snprintf(log, sizeof(log), "%s/serve.log", dir);
	daemon_pid = serve_start(state, sock, log, extra);
}

static void start_daemon(void)
{
	start_daemon_with(NULL);
}

static void kill_daemon(int sig)
{
	serve_stop(&daemon_pid, sig);
}

static int setup(void **state_)
{
	static int counter;

	(void)state_;
	/* Only test_images sets these, for its own daemon. */
	unsetenv("FORKD_IMAGE_CACHE");
	unsetenv("FORKD_IMAGES");
	unsetenv("FORKD_NET_UPLINK"); /* only test_net_nat sets it */
	if (harness_tmpdir_create(dir, sizeof(dir), "serve") < 0)
		return -1;
	counter++;
	snprintf(state, sizeof(state), "%s/state%d", dir, counter);
	snprintf(sock, sizeof(sock), "%s/forkd%d.sock", dir, counter);
	return 0;
}

static int teardown(void **state_)
{
	char *out = NULL;

	(void)state_;
	if (daemon_pid) {
		/* Whatever a failed test left: every VM goes with its tree. */
		if (forkd(&out, "vm", "ls", "--json", NULL) == 0) {
			json_t *j = json_loads(out, 0, NULL), *vm;
			size_t i;
			json_array_foreach(json_object_get(j, "vms"), i, vm)
			    forkd(NULL, "vm", "rm", "--cascade",
				  json_string_value(json_object_get(vm, "id")), NULL);
			json_decref(j);
		}
		free(out);
		kill_daemon(SIGTERM);
	}
	return harness_tmpdir_remove(dir);
}

static char *create_probe(void)
{
	char *out = NULL, *nl;
	int rc = forkd(&out, "vm", "create", "--kernel", (char *)harness_probe(), "--mem", "64",
		       "--append", "work=idle", NULL);

	if (rc != 0)
		fail_msg("vm create: exit %d: %s", rc, out);
	nl = strchr(out, '\n');
	if (nl)
		*nl = '\0';
	assert_true(strncmp(out, "vm-", 3) == 0);
	return out;
}

static char *branch_one(const char *id)
{
	char *out = NULL, *nl;
	int rc = forkd(&out, "branch", (char *)id, "-n", "1", NULL);

	if (rc != 0)
		fail_msg("branch %s: exit %d: %s", id, rc, out);
	nl = strchr(out, '\n');
	if (nl)
		*nl = '\0';
	assert_true(strncmp(out, "vm-", 3) == 0);
	return out;
}

static pid_t vm_pid(const char *id)
{
	json_t *j = forkd_json("vm ls", "vm", "ls", NULL), *vm;
	pid_t pid = 0;
	size_t i;

	json_array_foreach(json_object_get(j, "vms"), i,
			   vm) if (strcmp(json_string_value(json_object_get(vm, "id")), id) == 0)
	    pid = (pid_t)json_integer_value(json_object_get(vm, "pid"));
	json_decref(j);
	return pid;
}

static bool process_gone(pid_t pid)
{
	for (long long end = harness_deadline(10000); now_ms() < end; usleep(20 * 1000)) {
		char path[64], st = 0;
		FILE *f;

		snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
		f = fopen(path, "r");
		if (!f)
			return true;
		/* A zombie is gone as a VMM: only its exit status is left to reap. */
		if (fscanf(f, "%*d %*s %c", &st) == 1 && st == 'Z') {
			fclose(f);
			return true;
		}
		fclose(f);
	}
	return false;
}

/* The daemon's VM list, as an array the caller owns. */
static json_t *list_vms(void)
{
	json_t *j = forkd_json("vm ls", "vm", "ls", NULL);
	json_t *vms = json_incref(json_object_get(j, "vms"));

	json_decref(j);
	assert_true(json_is_array(vms));
	return vms;
}

static size_t count_state(json_t *vms, const char *want)
{
	json_t *vm;
	size_t i, n = 0;

	json_array_foreach(vms, i, vm) n +=
	    strcmp(json_string_value(json_object_get(vm, "state")), want) == 0;
	return n;
}

static void run_sdk(const char *script)
{
	char pypath[600], *out = NULL;
	char *argv[] = {"/usr/bin/env", "python3", "-c", (char *)script, NULL};
	const char *src = getenv("FORKD_SRC");
	int rc;

	/* Integration tests run from the checkout's top (harness.c's defaults are relative). */
	snprintf(pypath, sizeof(pypath), "%s/sdk/python", src && *src ? src : ".");
	setenv("PYTHONPATH", pypath, 1);
	rc = run(&out, argv);
	if (rc != 0)
		fail_msg("python SDK script: exit %d: %s", rc, out);
	free(out);
}

static void test_lifecycle_through_cli_and_sdk(void **state_)
{
	char *a, *b, *c, *d, *out = NULL;
	json_t *tree, *node, *vms;
	pid_t pa, pd;
	size_t i, depth3 = 0, from_snap = 0;
	char n[8];

	(void)state_;
	start_daemon();
	a = create_probe();
	b = branch_one(a);
	c = branch_one(b);
	d = branch_one(c);
	assert_int_equal(forkd(NULL, "snapshot", a, "--tag", "base", NULL), 0);
	snprintf(n, sizeof(n), "%d", SPAWN_N);
	assert_int_equal(forkd(&out, "spawn", "base", "-n", n, NULL), 0);
	free(out);

	tree = forkd_json("tree", "tree", NULL);
	json_array_foreach(json_object_get(tree, "tree"), i, node)
	{
		json_t *vm = json_object_get(node, "vm");
		if (json_integer_value(json_object_get(node, "depth")) == 3)
			depth3 += strcmp(json_string_value(json_object_get(vm, "id")), d) == 0;
		if (json_is_string(json_object_get(vm, "snapshot")))
			from_snap++;
	}
	json_decref(tree);
	assert_int_equal(depth3, 1);
	assert_int_equal(from_snap, SPAWN_N);
	assert_int_equal(forkd(&out, "tree", NULL), 0);
	assert_non_null(strstr(out, d));
	free(out);

	/* The daemon dies hard; its VMMs run on and the next daemon adopts them all. */
	kill_daemon(SIGKILL);
	start_daemon();
	vms = list_vms();
	assert_int_equal(json_array_size(vms), 4 + SPAWN_N);
	assert_int_equal(count_state(vms, "running"), 4 + SPAWN_N);
	json_decref(vms);

	/* The SDK against the same daemon: list, branch one more level, see it in the tree. */
	{
		char script[1500];
		snprintf(script, sizeof(script),
			 "import forkd\n"
			 "c = forkd.Controller()\n"
			 "ids = {v.id for v in c.vms()}\n"
			 "assert '%s' in ids and len(ids) == %d, ids\n"
			 "r = c.branch('%s', 2)\n"
			 "assert len(r.children) == 2, r\n"
			 "deep = [t for t in c.tree() if t.depth == 4]\n"
			 "assert len(deep) == 2, deep\n"
			 "try:\n"
			 "    c.delete_vm('%s')\n"
			 "    raise SystemExit('delete of a VM with children was not refused')\n"
			 "except forkd.Conflict:\n"
			 "    pass\n",
			 d, 4 + SPAWN_N, d, a);
		run_sdk(script);
	}

	/* Deleting the root: refused without --cascade, then the whole tree goes. */
	pa = vm_pid(a);
	pd = vm_pid(d);
	assert_true(pa > 0 && pd > 0);
	assert_int_equal(forkd(NULL, "vm", "rm", a, NULL), 1);
	assert_int_equal(kill(pa, 0), 0);
	assert_int_equal(forkd(NULL, "vm", "rm", a, "--cascade", NULL), 0);
	assert_true(process_gone(pa));
	assert_true(process_gone(pd));
	vms = list_vms();
	assert_int_equal(json_array_size(vms), SPAWN_N);
	json_decref(vms);

	/* The snapshot has dependents: refused, then cascaded. */
	assert_int_equal(forkd(NULL, "snapshots", "rm", "base", NULL), 1);
	assert_int_equal(forkd(NULL, "snapshots", "rm", "base", "--cascade", NULL), 0);
	vms = list_vms();
	assert_int_equal(json_array_size(vms), 0);
	json_decref(vms);
	free(a);
	free(b);
	free(c);
	free(d);
}

/* pids of the forkd-vmm processes started for this test's state dir (argv mentions it). */
static size_t vmm_pids(pid_t *out, size_t max)
{
	assert_int_equal(access("/proc", R_OK), 0);
	return harness_vmm_pids(state, out, max);
}

/*
 * No orphans: every VMM process of this state dir is a VM the daemon lists
 * as running, and every VM it lists as running has its process. Polled: a
 * VMM being stopped takes a moment to go.
 */
static void assert_registry_matches_processes(void)
{
	static pid_t pids[512];
	char why[256] = "";

	for (long long end = harness_deadline(15000); now_ms() < end; usleep(100 * 1000)) {
		json_t *vms = list_vms(), *vm;
		size_t n = vmm_pids(pids, 512), i, running = 0;
		bool ok = true;

		json_array_foreach(vms, i, vm)
		{
			pid_t pid = (pid_t)json_integer_value(json_object_get(vm, "pid"));
			bool live =
			    strcmp(json_string_value(json_object_get(vm, "state")), "running") == 0;
			if (!live)
				continue;
			running++;
			if (kill(pid, 0) < 0) {
				snprintf(why, sizeof(why),
					 "%s is listed running; its pid %d is gone",
					 json_string_value(json_object_get(vm, "id")), (int)pid);
				ok = false;
			}
		}
		for (size_t k = 0; k < n && ok; k++) {
			bool listed = false;
			json_array_foreach(vms, i, vm) listed |=
			    (pid_t)json_integer_value(json_object_get(vm, "pid")) == pids[k] &&
			    strcmp(json_string_value(json_object_get(vm, "state")), "running") == 0;
			if (!listed) {
				char comm_path[64], comm[32] = "?";
				FILE *f;

				snprintf(comm_path, sizeof(comm_path), "/proc/%d/comm",
					 (int)pids[k]);
				f = fopen(comm_path, "r");
				if (f && fgets(comm, sizeof(comm), f))
					comm[strcspn(comm, "\n")] = '\0';
				if (f)
					fclose(f);
				snprintf(why, sizeof(why),
					 "VMM pid %d (%s) runs but no running VM has it",
					 (int)pids[k], comm);
				ok = false;
			}
		}
		json_decref(vms);
		if (ok && n == running)
			return;
	}
	fail_msg("registry and processes disagree: %s", why);
}

/*
 * Every VM directory of the state dir is a VM the registry lists, or empty (an ID the daemon
 * reserved for a coming spawn): none is left of VMs the registry never recorded.
 */
static void assert_no_unrecorded_dirs(void)
{
	char path[700];
	json_t *vms = list_vms(), *vm;
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "%s/vms", state);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d))) {
		bool listed = false;
		size_t i;
		DIR *sub;
		int entries = 0;

		if (strncmp(e->d_name, "vm-", 3) != 0)
			continue;
		json_array_foreach(vms, i, vm) listed |=
		    strcmp(json_string_value(json_object_get(vm, "id")), e->d_name) == 0;
		if (listed)
			continue;
		snprintf(path, sizeof(path), "%s/vms/%s", state, e->d_name);
		sub = opendir(path);
		for (struct dirent *f; sub && (f = readdir(sub));)
			entries += strcmp(f->d_name, ".") != 0 && strcmp(f->d_name, "..") != 0;
		if (sub)
			closedir(sub);
		if (entries)
			fail_msg("%s: a VM directory with %d entries, and no VM %s is listed", path,
				 entries, e->d_name);
	}
	closedir(d);
	json_decref(vms);
}

/* How many lines of this test's daemon log contain s. */
static int serve_log_count(const char *s)
{
	char path[400], line[1024];
	int n = 0;
	FILE *f;

	snprintf(path, sizeof(path), "%s/serve.log", dir);
	f = fopen(path, "r");
	while (f && fgets(line, sizeof(line), f))
		n += strstr(line, s) != NULL;
	if (f)
		fclose(f);
	return n;
}

/*
 * SIGKILL of the daemon while it starts 50 VMs: the next daemon has no orphan and no ghost.
 * A spawn starts its VMMs before it records them (they restore meanwhile), so a kill then
 * leaves VMMs without rows: the next daemon stops them and removes their directories.
 */
static void test_daemon_killed_during_spawn(void **state_)
{
	char *argv[] = {(char *)cli(), "spawn", "base", "-n", "50", NULL};
	static pid_t pids[512];
	posix_spawn_file_actions_t fa;
	char *a, *out = NULL;
	pid_t client;
	int status;

	(void)state_;
	start_daemon();
	a = create_probe();
	assert_int_equal(forkd(NULL, "snapshot", a, "--tag", "base", NULL), 0);
	setenv("FORKD_SOCKET", sock, 1);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	assert_int_equal(posix_spawn(&client, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	/* Kill it once some of the 50 VMMs run (the source is one of the VMMs counted). */
	for (long long end = harness_deadline(30000); now_ms() < end; usleep(2 * 1000))
		if (vmm_pids(pids, 512) >= 10)
			break;
	kill_daemon(SIGKILL);
	waitpid(client, &status, 0);
	start_daemon();
	assert_registry_matches_processes();
	assert_no_unrecorded_dirs();
	print_message("  the restarted daemon stopped %d VMs never recorded\n",
		      serve_log_count("was never recorded"));
	/* The snapshot was complete before the spawn: it is still listed ready. */
	assert_int_equal(forkd(&out, "snapshots", "--json", NULL), 0);
	assert_non_null(strstr(out, "\"ready\""));
	free(out);
	assert_int_equal(forkd(NULL, "vm", "rm", a, "--cascade", NULL), 0);
	free(a);
}

/* The source VMM dies while its branch is under way: no VM is listed for a dead process. */
static void test_vmm_dies_mid_branch(void **state_)
{
	char *argv[] = {(char *)cli(), "branch", NULL, "-n", "4", NULL};
	posix_spawn_file_actions_t fa;
	pid_t client, pa;
	char *a;
	int status;

	(void)state_;
	start_daemon();
	a = create_probe();
	pa = vm_pid(a);
	argv[2] = a;
	setenv("FORKD_SOCKET", sock, 1);
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	assert_int_equal(posix_spawn(&client, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	usleep(3 * 1000);
	assert_int_equal(kill(pa, SIGKILL), 0);
	waitpid(client, &status, 0);
	assert_true(process_gone(pa));
	assert_registry_matches_processes();
	{
		json_t *vms = list_vms(), *vm;
		size_t i;
		json_array_foreach(
		    vms, i, vm) if (strcmp(json_string_value(json_object_get(vm, "id")), a) == 0)
		    assert_string_not_equal(json_string_value(json_object_get(vm, "state")),
					    "running");
		json_decref(vms);
	}
	forkd(NULL, "vm", "rm", a, "--cascade", NULL);
	free(a);
}

/* A client that goes away mid-branch: the branch completes or not, and the registry says which. */
static void test_client_disconnects_mid_branch(void **state_)
{
	char *argv[] = {(char *)cli(), "branch", NULL, "-n", "8", NULL};
	posix_spawn_file_actions_t fa;
	pid_t client;
	char *a;
	int status;

	(void)state_;
	start_daemon();
	a = create_probe();
	argv[2] = a;
	setenv("FORKD_SOCKET", sock, 1);
	for (int round = 0; round < 3; round++) {
		posix_spawn_file_actions_init(&fa);
		posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
		posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
		assert_int_equal(posix_spawn(&client, argv[0], &fa, NULL, argv, environ), 0);
		posix_spawn_file_actions_destroy(&fa);
		usleep((useconds_t)(1000 + round * 4000));
		kill(client, SIGKILL);
		waitpid(client, &status, 0);
	}
	/* The daemon still answers, and what it lists is what runs. */
	assert_registry_matches_processes();
	/* The last branch may still be running (the daemon finishes it without its client):
	 * the VM is busy (409) until then, by design. */
	int rc = 1;
	for (long long end = harness_deadline(20000); rc == 1 && now_ms() < end; usleep(50 * 1000))
		rc = forkd(NULL, "vm", "rm", a, "--cascade", NULL);
	assert_int_equal(rc, 0);
	assert_registry_matches_processes();
	free(a);
}

/* A VM paused through its own control socket: GET /v1/vms/{id} asks its VMM and says so. */
static void test_paused_through_control_socket(void **state_)
{
	char script[1200], *a, ctl[400] = "";
	json_t *vms, *vm;
	size_t i;

	(void)state_;
	start_daemon();
	a = create_probe();
	vms = list_vms();
	json_array_foreach(vms, i,
			   vm) if (strcmp(json_string_value(json_object_get(vm, "id")), a) == 0)
	    snprintf(ctl, sizeof(ctl), "%s",
		     json_string_value(json_object_get(vm, "control_socket")));
	json_decref(vms);
	assert_true(ctl[0] != '\0');
	assert_int_equal(forkd(NULL, "vm", "pause", "--socket", ctl, NULL), 0);
	/* The list (the registry) learns it from the single GET. A GET asks the VMM at most
	 * every 100 ms (docs/daemon.md), hence the few tries. */
	snprintf(script, sizeof(script),
		 "import forkd, time\n"
		 "c = forkd.Controller()\n"
		 "for _ in range(40):\n"
		 "    if c.vm('%s').state == 'paused': break\n"
		 "    time.sleep(0.05)\n"
		 "assert c.vm('%s').state == 'paused', c.vm('%s')\n"
		 "assert [v.state for v in c.vms() if v.id == '%s'] == ['paused'], c.vms()\n",
		 a, a, a, a);
	run_sdk(script);
	/* From outside: the VMM itself says paused, and resumed it is running again. */
	assert_int_equal(forkd(NULL, "vm", "resume", "--socket", ctl, NULL), 0);
	snprintf(script, sizeof(script),
		 "import forkd, time\n"
		 "c = forkd.Controller()\n"
		 "for _ in range(40):\n"
		 "    if c.vm('%s').state == 'running': break\n"
		 "    time.sleep(0.05)\n"
		 "assert c.vm('%s').state == 'running', c.vm('%s')\n",
		 a, a, a);
	run_sdk(script);
	/* Paused again, a branch is refused by the VMM (resume it first) and nothing is lost:
	 * the VM is still listed, running once resumed, and branches then. */
	assert_int_equal(forkd(NULL, "vm", "pause", "--socket", ctl, NULL), 0);
	assert_int_equal(forkd(NULL, "branch", a, "-n", "1", NULL), 1);
	assert_int_equal(forkd(NULL, "vm", "resume", "--socket", ctl, NULL), 0);
	run_sdk(script);
	free(branch_one(a));
	assert_int_equal(forkd(NULL, "vm", "rm", "--cascade", a, NULL), 0);
	free(a);
}

/* `forkd vm call --socket CTL REQ`: the VMM's reply (fails the test unless it says ok). */
static json_t *vm_call(const char *ctl, const char *req)
{
	char *out = NULL;
	json_t *j;
	int rc = forkd(&out, "vm", "call", "--socket", (char *)ctl, (char *)req, NULL);

	j = json_loads(out, 0, NULL);
	if (rc != 0 || !json_is_true(json_object_get(j, "ok")))
		fail_msg("vm call %s: exit %d: %s", req, rc, out);
	free(out);
	return j;
}

/*
 * A zygote the daemon did not release (it died between a branch's answer and the
 * release; here: a BRANCH sent around it) is released by the next daemon, and the
 * child nobody recorded is stopped.
 */
static void test_stray_zygote_released_on_restart(void **state_)
{
	char ctl[400] = "", req[800], *a;
	json_t *vms, *vm, *reply;
	pid_t zpid, cpid;
	size_t i;

	(void)state_;
	start_daemon();
	a = create_probe();
	vms = list_vms();
	json_array_foreach(vms, i,
			   vm) if (strcmp(json_string_value(json_object_get(vm, "id")), a) == 0)
	    snprintf(ctl, sizeof(ctl), "%s",
		     json_string_value(json_object_get(vm, "control_socket")));
	json_decref(vms);
	assert_true(ctl[0] != '\0');
	/* Where the daemon's own branches go (the VMM makes only the last component). */
	snprintf(req, sizeof(req), "%s/vms/%s/branches", state, a);
	assert_true(mkdir(req, 0755) == 0 || errno == EEXIST);
	{
		/* Owned by the VM's uid, as the daemon does for a jailed VM. */
		char vmdir[600];
		struct stat st;
		snprintf(vmdir, sizeof(vmdir), "%s/vms/%s", state, a);
		assert_int_equal(stat(vmdir, &st), 0);
		assert_int_equal(chown(req, st.st_uid, st.st_gid), 0);
	}
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s/vms/%s/branches/77\",\"wait\":true}",
		 state, a);
	reply = vm_call(ctl, req);
	zpid = (pid_t)json_integer_value(json_object_get(reply, "zygote_pid"));
	cpid = (pid_t)json_integer_value(
	    json_object_get(json_array_get(json_object_get(reply, "children"), 0), "pid"));
	json_decref(reply);
	assert_true(zpid > 0 && cpid > 0);
	assert_int_equal(kill(zpid, 0), 0);

	kill_daemon(SIGKILL);
	start_daemon();
	reply = vm_call(ctl, "{\"cmd\":\"zygote\",\"action\":\"list\"}");
	assert_int_equal(json_array_size(json_object_get(reply, "zygotes")), 0);
	json_decref(reply);
	assert_true(process_gone(zpid));
	assert_true(process_gone(cpid));
	assert_registry_matches_processes();
	assert_int_equal(forkd(NULL, "vm", "rm", "--cascade", a, NULL), 0);
	free(a);
}

static void write_file(const char *path, const char *text, off_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	if (text)
		assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	else
		assert_int_equal(ftruncate(fd, size), 0);
	close(fd);
}

/* One JSON object per line of `forkd image ls`, by name. */
static json_t *image_lines(const char *out)
{
	json_t *by_name = json_object();
	const char *p = out;

	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t len = nl ? (size_t)(nl - p) : strlen(p);
		json_t *img = json_loadb(p, len, 0, NULL);

		if (!img)
			fail_msg("image ls: not a JSON line: %.*s", (int)len, p);
		json_object_set_new(by_name, json_string_value(json_object_get(img, "name")), img);
		p += len + (nl ? 1 : 0);
	}
	return by_name;
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/*
 * Images through the daemon: an image directory fabricated in a temporary
 * $FORKD_IMAGE_CACHE is listed (the probe stands in for its kernel:
 * $FORKD_IMAGES/vmlinux), a VM created from it, a snapshot and a branch of
 * it say so, and `forkd image rm` is refused while any of them is in the
 * registry, allowed after; the cache is checked from outside.
 */
static void test_images(void **state_)
{
	char cache[400], kimages[400], path[600], *out = NULL, *id, *kid;
	json_t *imgs, *img, *j, *node;
	char cmdline[4096] = "";
	size_t i, n;
	int fd;

	(void)state_;
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(kimages, sizeof(kimages), "%s/kimages", dir);
	assert_int_equal(mkdir(cache, 0755), 0);
	assert_int_equal(mkdir(kimages, 0755), 0);
	snprintf(path, sizeof(path), "%s/probeimg", cache);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/probeimg/rootfs.ext4", cache);
	write_file(path, NULL, 1 << 20);
	snprintf(path, sizeof(path), "%s/probeimg/manifest.json", cache);
	write_file(path,
		   "{\"name\":\"probeimg\",\"packages\":[\"python3\"],"
		   "\"created\":\"2026-12-04T10:00:00Z\"}\n",
		   0);
	snprintf(path, sizeof(path), "%s/spare", cache);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/spare/rootfs.ext4", cache);
	write_file(path, NULL, 2 << 20);
	/* Not images: the script's tarball cache, a name no image has, a folder without one. */
	snprintf(path, sizeof(path), "%s/.debootstrap", cache);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/Upper", cache);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/Upper/rootfs.ext4", cache);
	write_file(path, NULL, 4096);
	snprintf(path, sizeof(path), "%s/empty", cache);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/vmlinux", kimages);
	char *probe = realpath(harness_probe(), NULL);
	assert_non_null(probe);
	assert_int_equal(symlink(probe, path), 0);
	free(probe);
	snprintf(path, sizeof(path), "%s/initramfs.cpio", kimages);
	write_file(path, NULL, 4096);
	setenv("FORKD_IMAGE_CACHE", cache, 1);
	setenv("FORKD_IMAGES", kimages, 1);
	start_daemon();

	assert_int_equal(forkd(&out, "image", "ls", NULL), 0);
	imgs = image_lines(out);
	free(out);
	assert_int_equal(json_object_size(imgs), 2);
	img = json_object_get(imgs, "probeimg");
	assert_int_equal(json_integer_value(json_object_get(img, "size")), 1 << 20);
	assert_string_equal(json_string_value(json_object_get(img, "created")),
			    "2026-12-04T10:00:00Z");
	assert_string_equal(json_string_value(json_array_get(json_object_get(img, "packages"), 0)),
			    "python3");
	assert_false(json_is_true(json_object_get(img, "in_use")));
	assert_true(json_is_null(json_object_get(json_object_get(imgs, "spare"), "packages")));
	json_decref(imgs);

	/* A VM from the image (no vsock: the probe runs no agent). */
	assert_int_equal(
	    forkd(&out, "vm", "create", "--image", "probeimg", "--no-vsock", "--mem", "64", NULL),
	    0);
	id = strndup(out, strcspn(out, "\n"));
	free(out);
	/* From outside: its VMM was started on the image. */
	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)vm_pid(id));
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	n = (size_t)read(fd, cmdline, sizeof(cmdline) - 1);
	close(fd);
	for (i = 0; i + 1 < n; i++)
		if (cmdline[i] == '\0')
			cmdline[i] = ' ';
	assert_non_null(strstr(cmdline, "--image probeimg"));
	assert_int_equal(forkd(&out, "snapshot", id, "--tag", "imgsnap", NULL), 0);
	free(out);
	kid = branch_one(id);
	j = forkd_json("tree", "tree", NULL);
	n = 0;
	json_array_foreach(json_object_get(j, "tree"), i, node)
	{
		json_t *vm = json_object_get(node, "vm");
		const char *vid = json_string_value(json_object_get(vm, "id"));

		if (strcmp(vid, id) == 0 || strcmp(vid, kid) == 0) {
			assert_string_equal(json_string_value(json_object_get(vm, "image")),
					    "probeimg");
			n++;
		}
	}
	assert_int_equal(n, 2);
	json_decref(j);

	assert_int_equal(forkd(&out, "image", "ls", NULL), 0);
	imgs = image_lines(out);
	free(out);
	img = json_object_get(imgs, "probeimg");
	assert_true(json_is_true(json_object_get(img, "in_use")));
	assert_int_equal(json_array_size(json_object_get(img, "vms")), 2);
	assert_string_equal(json_string_value(json_array_get(json_object_get(img, "snapshots"), 0)),
			    "imgsnap");
	json_decref(imgs);

	/* The same through the SDK. */
	run_sdk("import forkd\n"
		"c = forkd.Controller()\n"
		"i = c.image('probeimg')\n"
		"assert i.in_use and i.snapshots == ['imgsnap'] and len(i.vms) == 2, i\n"
		"assert {x.name for x in c.images()} == {'probeimg', 'spare'}, c.images()\n"
		"try:\n"
		"    c.delete_image('probeimg')\n"
		"    raise SystemExit('delete of an image in use was not refused')\n"
		"except forkd.Conflict:\n"
		"    pass\n");

	/* Refused while used; the unused one goes. */
	snprintf(path, sizeof(path), "%s/probeimg/rootfs.ext4", cache);
	assert_int_equal(forkd(NULL, "image", "rm", "probeimg", NULL), 1);
	assert_true(exists(path));
	assert_int_equal(forkd(NULL, "image", "rm", "spare", NULL), 0);
	snprintf(path, sizeof(path), "%s/spare", cache);
	assert_false(exists(path));
	assert_int_equal(forkd(NULL, "image", "rm", "spare", NULL), 1); /* now unknown: 404 */
	assert_int_equal(forkd(NULL, "image", "rm", "../spare", NULL), 2);

	/* The VMs gone, the snapshot still holds it (it outlives its VM); then it goes. */
	assert_int_equal(forkd(NULL, "vm", "rm", "--cascade", id, NULL), 0);
	snprintf(path, sizeof(path), "%s/probeimg/rootfs.ext4", cache);
	assert_int_equal(forkd(NULL, "image", "rm", "probeimg", NULL), 1);
	assert_true(exists(path));
	assert_int_equal(forkd(NULL, "snapshots", "rm", "imgsnap", NULL), 0);
	assert_int_equal(forkd(NULL, "image", "rm", "probeimg", NULL), 0);
	snprintf(path, sizeof(path), "%s/probeimg", cache);
	assert_false(exists(path));
	assert_int_equal(forkd(&out, "image", "ls", NULL), 0);
	assert_string_equal(out, "");
	free(out);
	/* Nothing of a removal is left in the cache, and what is no image is untouched. */
	DIR *dh = opendir(cache);
	struct dirent *e;

	assert_non_null(dh);
	n = 0;
	while ((e = readdir(dh)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
			if (strcmp(e->d_name, ".debootstrap") && strcmp(e->d_name, "Upper") &&
			    strcmp(e->d_name, "empty"))
				fail_msg("image cache: %s left after the removals", e->d_name);
			n++;
		}
	closedir(dh);
	assert_int_equal(n, 3);
	free(id);
	free(kid);
	unsetenv("FORKD_IMAGE_CACHE");
	unsetenv("FORKD_IMAGES");
}

/*
 * Frames through a VM's tap: the probe's `net` workload echoes a frame sent to its MAC
 * (guest/probe/README.md), so an echo on the tap0 of the namespace the daemon reported
 * shows the VM's device really is attached there.
 */
/* Sends "forkd-host <tag>" to the guest's MAC on namespace ns's tap0 until it is echoed. */
static void echo_through_tap(const char *ns, const char *tag)
{
	static const uint8_t host[6] = {0x02, 0x66, 0x6b, 0x00, 0x00, 0x7e};
	int fd = tap_frames_socket(ns);
	uint8_t f[128], e[2048];
	size_t body = strlen(tag);
	int len = tap_frames_host_frame(f, sizeof(f), tag);

	/* The guest's driver may still be coming up when the daemon answers: send again. */
	for (long long end = harness_deadline(10000); now_ms() < end;) {
		long long resend = now_ms() + 300;

		assert_int_equal(send(fd, f, (size_t)len, 0), len);
		while (now_ms() < resend) {
			struct pollfd p = {.fd = fd, .events = POLLIN};
			struct sockaddr_ll from;
			socklen_t flen = sizeof(from);
			ssize_t n;

			if (poll(&p, 1, (int)(resend - now_ms())) <= 0)
				break;
			n = recvfrom(fd, e, sizeof(e), 0, (struct sockaddr *)&from, &flen);
			if (n < (ssize_t)(14 + 22 + body) || from.sll_pkttype == PACKET_OUTGOING)
				continue;
			/* the echo: to our MAC, "forkd-echo " then the frame's own text */
			if (memcmp(e, host, 6) == 0 && memcmp(e + 14, "forkd-echo ", 11) == 0 &&
			    memcmp(e + 25, "forkd-host ", 11) == 0 &&
			    memcmp(e + 36, tag, body) == 0) {
				close(fd);
				return;
			}
		}
	}
	close(fd);
	fail_msg("no echo of 'forkd-host %s' through %s in %s within 10 s", tag, "tap0", ns);
}

/* The VM in a `vm ls --json` list with this id (borrowed), or NULL. */
static json_t *find_vm(json_t *vms, const char *id)
{
	json_t *vm;
	size_t i;

	json_array_foreach(vms, i, vm) if (strcmp(json_string_value(json_object_get(vm, "id")),
						  id) == 0) return vm;
	return NULL;
}

/* A VM's network as the daemon reports it, checked: policy, namespace, 10.200.S.2 address. */
struct vm_net {
	char id[32], netns[64], addr[32];
};

static void check_vm_net(json_t *vm, const char *policy, struct vm_net *out)
{
	const char *id = json_string_value(json_object_get(vm, "id"));
	const char *net = json_string_value(json_object_get(vm, "net"));
	const char *ns = json_string_value(json_object_get(vm, "net_netns"));
	const char *addr = json_string_value(json_object_get(vm, "net_host_addr"));
	unsigned a, b, c, d;
	char path[128], end;

	assert_non_null(id);
	if (!net || strcmp(net, policy) != 0)
		fail_msg("%s: net '%s', expected '%s'", id, net ? net : "(none)", policy);
	if (!ns || strncmp(ns, "forkd-", 6) != 0)
		fail_msg("%s: net_netns '%s', expected forkd-*", id, ns ? ns : "(null)");
	/* 10.200.S.2 of slot S: the S-th /30 of 10.200.0.0/16, host .2 of it */
	if (!addr || sscanf(addr, "%u.%u.%u.%u%c", &a, &b, &c, &d, &end) != 4 || a != 10 ||
	    b != 200 || c > 255 || d > 255 || d % 4 != 2)
		fail_msg("%s: net_host_addr '%s', expected 10.200.x.y with y %% 4 == 2", id,
			 addr ? addr : "(null)");
	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	if (!exists(path))
		fail_msg("%s: its namespace %s is not in /run/netns", id, ns);
	snprintf(out->id, sizeof(out->id), "%s", id);
	snprintf(out->netns, sizeof(out->netns), "%s", ns);
	snprintf(out->addr, sizeof(out->addr), "%s", addr);
}

/*
 * Whether the root end of a VM's veth (fkv<S>, S its slot: 10.200.0.0 + 4·S + 2 is its
 * address) forwards: 1 only for nat (docs/networking.md).
 */
static int root_end_forwarding(const struct vm_net *v)
{
	unsigned a, b, c, d;
	char path[96], val[8] = "";
	FILE *f;

	assert_int_equal(sscanf(v->addr, "%u.%u.%u.%u", &a, &b, &c, &d), 4);
	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/fkv%u/forwarding",
		 (c * 256 + d - 2) / 4);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (!fgets(val, sizeof(val), f))
		val[0] = '\0';
	fclose(f);
	return atoi(val);
}

static void assert_netns_gone(const struct vm_net *v)
{
	char path[160];

	snprintf(path, sizeof(path), "/run/netns/%s", v->netns);
	if (exists(path))
		fail_msg("%s: namespace %s left after its delete", v->id, v->netns);
	snprintf(path, sizeof(path), "/run/forkd/net/ns-%s", v->netns);
	if (exists(path))
		fail_msg("%s: namespace record %s left after its delete", v->id, path);
}

/*
 * net=host through the daemon: the VM gets forkd-<id> and a 10.200.S.2 address, each
 * BRANCH child and a VM spawned from its snapshot its own namespace and address; the SDK reads them
 * and gets a 400 for a bad policy; a SIGKILLed and restarted daemon still reports them; a cascade
 * delete leaves no namespace, also of a child whose VMM was SIGKILLed (swept).
 */
static void test_net_policy(void **state_)
{
	struct vm_net v[3];
	json_t *j, *kids, *vms;
	char *out = NULL, script[2000], *probe = realpath(harness_probe(), NULL);
	pid_t killed;
	int rc;

	(void)state_;
	assert_non_null(probe);
	start_daemon();
	rc = forkd(&out, "vm", "create", "--kernel", probe, "--mem", "64", "--append",
		   "work=net net_tx=0", "--net", "host", "--json", NULL);
	if (rc != 0)
		fail_msg("vm create --net host: exit %d: %s", rc, out);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	free(out);
	check_vm_net(j, "host", &v[0]);
	{
		char want[64];
		snprintf(want, sizeof(want), "forkd-%s", v[0].id);
		assert_string_equal(v[0].netns, want);
	}
	json_decref(j);

	j = forkd_json("branch", "branch", v[0].id, "-n", "2", NULL);
	kids = json_object_get(j, "children");
	assert_int_equal(json_array_size(kids), 2);
	check_vm_net(json_array_get(kids, 0), "host", &v[1]);
	check_vm_net(json_array_get(kids, 1), "host", &v[2]);
	json_decref(j);
	for (int x = 0; x < 3; x++)
		for (int y = x + 1; y < 3; y++) {
			assert_string_not_equal(v[x].addr, v[y].addr);
			assert_string_not_equal(v[x].netns, v[y].netns);
		}
	assert_int_equal(root_end_forwarding(&v[0]), 0); /* host: the root end does not forward */
	/* each guest answers on its own namespace's tap */
	for (int x = 0; x < 3; x++)
		echo_through_tap(v[x].netns, v[x].id);

	/* The CLI: `vm ls` shows each address; a bad --net is a usage error (exit 2). */
	assert_int_equal(forkd(&out, "vm", "ls", NULL), 0);
	for (int x = 0; x < 3; x++)
		if (!strstr(out, v[x].addr))
			fail_msg("vm ls does not show %s's address %s:\n%s", v[x].id, v[x].addr,
				 out);
	free(out);
	assert_int_equal(forkd(NULL, "vm", "create", "--kernel", probe, "--net", "open", NULL), 2);

	/* The SDK: the fields, a VM without a network, and a bad policy refused by the daemon. */
	snprintf(script, sizeof(script),
		 "import forkd\n"
		 "c = forkd.Controller()\n"
		 "vm = c.vm('%s')\n"
		 "assert vm.net == 'host' and vm.net_host_addr == '%s', vm\n"
		 "assert vm.net_netns == '%s', vm\n"
		 "plain = c.create_vm(kernel='%s', mem_mib=64, append='work=idle')\n"
		 "assert plain.net == 'none' and plain.net_host_addr is None, plain\n"
		 "c.delete_vm(plain.id)\n"
		 "try:\n"
		 "    c.create_vm(kernel='%s', mem_mib=64, net='open')\n"
		 "    raise SystemExit('net=open was not refused')\n"
		 "except forkd.BadRequest as e:\n"
		 "    assert e.status == 400 and 'net' in str(e) and 'nat' in str(e), str(e)\n",
		 v[0].id, v[0].addr, v[0].netns, probe, probe);
	run_sdk(script);
	free(probe);

	/* Re-adopted after SIGKILL of the daemon: the same namespaces and addresses. */
	kill_daemon(SIGKILL);
	start_daemon();
	vms = list_vms();
	assert_int_equal(json_array_size(vms), 3);
	for (int x = 0; x < 3; x++) {
		struct vm_net again;
		json_t *vm = find_vm(vms, v[x].id);

		assert_non_null(vm);
		assert_string_equal(json_string_value(json_object_get(vm, "state")), "running");
		check_vm_net(vm, "host", &again);
		assert_string_equal(again.addr, v[x].addr);
		assert_string_equal(again.netns, v[x].netns);
	}
	echo_through_tap(v[0].netns, "after-restart");
	json_decref(vms);

	/* A VM spawned from its snapshot: the same policy, a namespace and address of its own. */
	assert_int_equal(forkd(NULL, "snapshot", v[0].id, "--tag", "netbase", NULL), 0);
	j = forkd_json("spawn", "spawn", "netbase", "-n", "1", NULL);
	{
		struct vm_net sp;
		char want[64];

		assert_int_equal(json_array_size(json_object_get(j, "vms")), 1);
		check_vm_net(json_array_get(json_object_get(j, "vms"), 0), "host", &sp);
		snprintf(want, sizeof(want), "forkd-%s", sp.id);
		assert_string_equal(sp.netns, want);
		for (int x = 0; x < 3; x++)
			assert_string_not_equal(sp.addr, v[x].addr);
		json_decref(j);
		assert_int_equal(forkd(NULL, "snapshots", "rm", "netbase", "--cascade", NULL), 0);
		assert_netns_gone(&sp);
	}

	/* A child's VMM killed outright leaves its namespace; the delete sweeps it. */
	killed = vm_pid(v[2].id);
	assert_true(killed > 0);
	assert_int_equal(kill(killed, SIGKILL), 0);
	assert_true(process_gone(killed));
	assert_int_equal(forkd(NULL, "vm", "rm", v[0].id, NULL), 1);
	assert_int_equal(forkd(NULL, "vm", "rm", v[0].id, "--cascade", NULL), 0);
	for (int x = 0; x < 3; x++)
		assert_netns_gone(&v[x]);
	vms = list_vms();
	assert_int_equal(json_array_size(vms), 0);
	json_decref(vms);
}

/*
 * net=nat through the daemon: reported as nat, the root end of its veth forwards (host's
 * does not), its guest answers on its tap; gone with its delete. FORKD_NET_UPLINK=none in
 * the daemon's environment (its VMMs inherit it): the machine's own uplink is not touched.
 */
static void test_net_nat(void **state_)
{
	char *out = NULL, *probe = realpath(harness_probe(), NULL);
	struct vm_net v;
	json_t *j;
	int rc;

	(void)state_;
	assert_non_null(probe);
	setenv("FORKD_NET_UPLINK", "none", 1);
	start_daemon();
	rc = forkd(&out, "vm", "create", "--kernel", probe, "--mem", "64", "--append",
		   "work=net net_tx=0", "--net", "nat", "--json", NULL);
	if (rc != 0)
		fail_msg("vm create --net nat: exit %d: %s", rc, out);
	j = json_loads(out, 0, NULL);
	assert_non_null(j);
	check_vm_net(j, "nat", &v);
	json_decref(j);
	assert_int_equal(root_end_forwarding(&v), 1);
	echo_through_tap(v.netns, v.id);
	assert_int_equal(forkd(NULL, "vm", "rm", v.id, NULL), 0);
	assert_netns_gone(&v);
	assert_int_equal(root_end_forwarding(&v), -1); /* its veth went with it */
	free(out);
	free(probe);
	unsetenv("FORKD_NET_UPLINK");
}

/* "Key:\tv1\tv2..." of /proc/PID/status: the first number. */
static long long status_field(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t n = strlen(key);
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, n) == 0 && line[n] == ':')
			v = strtoll(line + n + 1, NULL, 16 * (strcmp(key, "CapEff") == 0) ?: 10);
	fclose(f);
	return v;
}

#define JAIL_UID0 200000

/* A jailed VM, seen from outside: its uid, no capabilities, its own root without /etc. */
static void assert_jailed(pid_t pid, long long uid)
{
	char path[64];
	struct stat st;

	assert_true(pid > 0);
	if (status_field(pid, "Uid") != uid || status_field(pid, "Gid") != JAIL_UID0 ||
	    status_field(pid, "CapEff") != 0 || status_field(pid, "NoNewPrivs") != 1)
		fail_msg("pid %d: Uid %lld (want %lld) Gid %lld CapEff %llx NoNewPrivs %lld",
			 (int)pid, status_field(pid, "Uid"), uid, status_field(pid, "Gid"),
			 status_field(pid, "CapEff"), status_field(pid, "NoNewPrivs"));
	snprintf(path, sizeof(path), "/proc/%d/root/etc", (int)pid);
	assert_int_equal(stat(path, &st), -1);
	snprintf(path, sizeof(path), "/proc/%d/root/dev/kvm", (int)pid);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, uid);
}

static void assert_owner(const char *path, long long uid, long long gid, unsigned mode)
{
	struct stat st;

	if (lstat(path, &st) < 0)
		fail_msg("%s: %s", path, strerror(errno));
	if (st.st_uid != uid || st.st_gid != gid || (st.st_mode & 07777) != mode)
		fail_msg("%s: owner %u:%u mode 0%o, expected %lld:%lld 0%o", path, st.st_uid,
			 st.st_gid, st.st_mode & 07777, uid, gid, mode);
}

static json_t *vm_by_id(const char *id)
{
	json_t *vms = list_vms(), *vm = json_incref(find_vm(vms, id));

	json_decref(vms);
	assert_non_null(vm);
	return vm;
}

/*
 * forkd serve --jail: every VM it starts is jailed with a uid of its own
 * (BRANCH children share their source's), snapshots move out of the source's
 * reach into snapshots/ readable by the VMs' group, VMs spawned from them run
 * jailed under new uids, and a deleted VM's jail and uid are freed.
 */
static void test_jailed_vms(void **state_)
{
	char *extra[] = {"--jail-uids", "200000:4", NULL}, *no_jail[] = {"--no-jail", NULL};
	char path[600], name[256], *a, *b, *c, *out = NULL;
	json_t *j, *vm;
	size_t i;
	pid_t pa, pb, pc;
	DIR *dir;
	struct dirent *e;

	(void)state_;
	start_daemon_with(extra);
	a = create_probe();
	b = create_probe();
	pa = vm_pid(a);
	pb = vm_pid(b);
	assert_jailed(pa, JAIL_UID0);
	assert_jailed(pb, JAIL_UID0 + 1);
	snprintf(path, sizeof(path), "%s/vms/%s", state, a);
	assert_owner(path, JAIL_UID0, JAIL_UID0, 0700);
	snprintf(path, sizeof(path), "%s/jails/%s", state, a);
	assert_true(exists(path));

	/* A child shares its source's uid and jail. */
	c = branch_one(a);
	pc = vm_pid(c);
	assert_jailed(pc, JAIL_UID0);
	{
		char r1[PATH_MAX], r2[PATH_MAX], l1[64], l2[64];
		ssize_t n1, n2;
		snprintf(l1, sizeof(l1), "/proc/%d/ns/mnt", (int)pa);
		snprintf(l2, sizeof(l2), "/proc/%d/ns/mnt", (int)pc);
		n1 = readlink(l1, r1, sizeof(r1) - 1);
		n2 = readlink(l2, r2, sizeof(r2) - 1);
		assert_true(n1 > 0 && n2 > 0);
		r1[n1] = r2[n2] = '\0';
		assert_string_equal(r1, r2);
	}

	/* A snapshot ends up out of the VM's directory, root's and the VMs' group's. */
	assert_int_equal(forkd(NULL, "snapshot", a, "--tag", "js", NULL), 0);
	snprintf(path, sizeof(path), "%s/vms/%s/.snapshot-js", state, a);
	assert_false(exists(path));
	snprintf(path, sizeof(path), "%s/snapshots/js", state);
	assert_owner(path, 0, JAIL_UID0, 0750);
	dir = opendir(path);
	assert_non_null(dir);
	while ((e = readdir(dir))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(name, sizeof(name), "%s", e->d_name);
		snprintf(path, sizeof(path), "%s/snapshots/js/%.200s", state, name);
		assert_owner(path, 0, JAIL_UID0, 0640);
	}
	closedir(dir);

	/* Spawned VMs: jailed, each its own uid; the range (4) is then used up. */
	j = forkd_json("spawn", "spawn", "js", "-n", "2", NULL);
	json_array_foreach(json_object_get(j, "vms"), i, vm)
	{
		pid_t p = (pid_t)json_integer_value(json_object_get(vm, "pid"));
		assert_jailed(p, JAIL_UID0 + 2 + (long long)i);
	}
	json_decref(j);
	assert_int_not_equal(forkd(&out, "vm", "create", "--kernel", (char *)harness_probe(),
				   "--mem", "64", "--append", "work=idle", NULL),
			     0);
	free(out);

	/* A persisted branch: published the same way. */
	assert_int_equal(forkd(&out, "branch", b, "-n", "1", "--persist", "--tag", "jp", NULL), 0);
	free(out);
	for (long long end = harness_deadline(30000); now_ms() < end; usleep(100 * 1000)) {
		j = forkd_json("snapshots", "snapshots", "ls", NULL);
		json_array_foreach(json_object_get(j, "snapshots"), i, vm)
		{
			if (strcmp(json_string_value(json_object_get(vm, "tag")), "jp") == 0 &&
			    strcmp(json_string_value(json_object_get(vm, "state")), "ready") == 0)
				end = 0;
		}
		json_decref(j);
	}
	snprintf(path, sizeof(path), "%s/snapshots/jp", state);
	assert_owner(path, 0, JAIL_UID0, 0750);
	snprintf(path, sizeof(path), "%s/vms/%s/.snapshot-jp", state, b);
	assert_false(exists(path));

	/* Every VM still runs (the guests work jailed). */
	j = list_vms();
	assert_int_equal(count_state(j, "running"), json_array_size(j));
	json_decref(j);
	vm = vm_by_id(a);
	assert_string_equal(json_string_value(json_object_get(vm, "state")), "running");
	json_decref(vm);

	/* Deleting A (and its child) frees its jail and its uid: the next VM gets it. */
	assert_int_equal(forkd(NULL, "vm", "rm", "--cascade", a, NULL), 0);
	assert_true(process_gone(pa) && process_gone(pc));
	snprintf(path, sizeof(path), "%s/jails/%s", state, a);
	assert_false(exists(path));
	free(a);
	a = create_probe();
	pa = vm_pid(a);
	assert_jailed(pa, JAIL_UID0);

	/*
	 * --no-jail: new VMs run as root; the jailed ones, re-adopted, stay as they are. A BRANCH
	 * child has no vm.json: re-adopted, it takes its source's uid and home along the lineage,
	 * so its snapshot still goes through the outbox its jail can write (its source's).
	 */
	free(c);
	c = branch_one(b);
	snprintf(path, sizeof(path), "%s/vms/%s/vm.json", state, c);
	assert_false(exists(path));
	kill_daemon(SIGTERM);
	start_daemon_with(no_jail);
	assert_jailed(vm_pid(c), JAIL_UID0 + 1);
	assert_int_equal(forkd(NULL, "snapshot", c, "--tag", "jc", NULL), 0);
	/* out of the VM's reach as ever: root's, and the group of this daemon's (default) range */
	snprintf(path, sizeof(path), "%s/snapshots/jc", state);
	assert_owner(path, 0, 1879048192LL, 0750);
	snprintf(path, sizeof(path), "%s/vms/%s/.snapshot-jc", state, b);
	assert_false(exists(path));
	free(c);
	c = create_probe();
	assert_int_equal(status_field(vm_pid(c), "Uid"), 0);
	assert_jailed(pa, JAIL_UID0);
	assert_jailed(pb, JAIL_UID0 + 1);
	free(a);
	free(b);
	free(c);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_lifecycle_through_cli_and_sdk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_daemon_killed_during_spawn, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vmm_dies_mid_branch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_disconnects_mid_branch, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_images, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_paused_through_control_socket, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stray_zygote_released_on_restart, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_net_policy, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_jailed_vms, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_net_nat, setup, teardown),
	};

	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("forkd serve end to end", tests, NULL, NULL);
}
