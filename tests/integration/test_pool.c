/* SPDX-License-Identifier: MIT */
/*
 * The zygote's pool of prebuilt children (`"pool":K` on branch): children
 * forked, their KVM VM built and state restored, parked until a spawn hands
 * them out. Checked from inside (each pooled child's pattern writers freeze
 * on its new generation ID and `verify strict` proves its memory is the one
 * branch instant) and from outside (the handed-out pids are the parked ones,
 * a parked guest has not run, the pool refills, release leaves no process
 * and no directory, disks stay private, bad values are refused).
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
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS 30000
#define MAX_KIDS   8
#define WRITERS	   2

static char dir[256];
static int counter;

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "pool");
}

/* A failed test leaves no VMM behind: sources and their children all name dir. */
static int teardown(void **state)
{
	pid_t pids[64];
	size_t n = harness_vmm_pids(dir, pids, 64);

	(void)state;
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	return harness_tmpdir_remove(dir);
}

struct kid {
	char dir[400];
	int pid;
};

struct source {
	struct vmm_proc p;
	char sock[300];
};

static json_t *call(const char *sock, const char *req, bool want_ok)
{
	json_t *reply = harness_call_expect(sock, req, want_ok);

	assert_non_null(reply);
	return reply;
}

static void start_source_disk(struct source *s, const char *disk)
{
	snprintf(s->sock, sizeof(s->sock), "%s/src-%d.sock", dir, ++counter);
	probe_start(&s->p, NULL, "256M", "2",
		    "work=pattern,pattern pattern_mib=16 pattern_freeze=genid", "--control",
		    s->sock, disk ? "--disk" : NULL, disk, NULL);
	assert_non_null(vmm_need_line(&s->p, "DONE", TIMEOUT_MS));
	usleep(200 * 1000);
}

static void start_source(struct source *s)
{
	start_source_disk(s, NULL);
}

static void stop_source(struct source *s)
{
	json_decref(call(s->sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&s->p, TIMEOUT_MS), 0);
	vmm_free(&s->p);
}

/* Branches with no children now and a pool of k; returns the zygote's id and pid. */
static int branch_pool(const struct source *s, int k, int *zpid)
{
	char req[600];
	json_t *r;
	int id;

	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":0,\"pool\":%d,\"dir\":\"%s/b%d\"}", k,
		 dir, ++counter);
	r = call(s->sock, req, true);
	assert_int_equal(json_integer_value(json_object_get(r, "pool")), k);
	assert_int_equal(json_array_size(json_object_get(r, "children")), 0);
	id = (int)json_integer_value(json_object_get(r, "zygote"));
	*zpid = (int)json_integer_value(json_object_get(r, "zygote_pid"));
	json_decref(r);
	return id;
}

/* The zygote's entry in `zygote list`: pool size and how many are ready. */
static void pool_status(const struct source *s, int id, int *pool, int *ready, char *error,
			size_t len)
{
	json_t *r = call(s->sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);
	json_t *list = json_object_get(r, "zygotes"), *z;
	size_t i;

	*pool = *ready = -1;
	json_array_foreach(list, i, z)
	{
		if (json_integer_value(json_object_get(z, "zygote")) != id)
			continue;
		*pool = (int)json_integer_value(json_object_get(z, "pool"));
		*ready = (int)json_integer_value(json_object_get(z, "pool_ready"));
		if (error)
			snprintf(error, len, "%s",
				 json_string_value(json_object_get(z, "pool_error"))
				     ? json_string_value(json_object_get(z, "pool_error"))
				     : "");
	}
	json_decref(r);
}

static void wait_pool_ready(const struct source *s, int id, int want)
{
	int pool = -1, ready = -1;
	long long end = harness_deadline(TIMEOUT_MS);

	while (now_ms() < end) {
		pool_status(s, id, &pool, &ready, NULL, 0);
		if (ready == want)
			return;
		usleep(20 * 1000);
	}
	fail_msg("zygote %d: pool %d, %d ready after %d ms; expected %d ready", id, pool, ready,
		 TIMEOUT_MS, want);
}

/* The zygote's live child processes (parked pooled ones and handed-out ones). */
static int zygote_children(int zpid, pid_t *out, int max)
{
	char path[64], buf[4096];
	FILE *f;
	int n = 0;
	size_t got;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", zpid, zpid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	got = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[got] = '\0';
	for (char *t = strtok(buf, " \n"); t && n < max; t = strtok(NULL, " \n"))
		out[n++] = atoi(t);
	return n;
}

static bool pid_in(pid_t pid, const pid_t *set, int n)
{
	for (int i = 0; i < n; i++)
		if (set[i] == pid)
			return true;
	return false;
}

static int spawn(const struct source *s, int id, int n, struct kid *kids)
{
	char req[200];
	json_t *r, *children;

	snprintf(req, sizeof(req), "{\"cmd\":\"zygote\",\"action\":\"spawn\",\"id\":%d,\"n\":%d}",
		 id, n);
	r = call(s->sock, req, true);
	children = json_object_get(r, "children");
	assert_int_equal(json_array_size(children), (size_t)n);
	for (size_t i = 0; i < json_array_size(children) && i < MAX_KIDS; i++) {
		json_t *c = json_array_get(children, i);
		snprintf(kids[i].dir, sizeof(kids[i].dir), "%s",
			 json_string_value(json_object_get(c, "dir")));
		kids[i].pid = (int)json_integer_value(json_object_get(c, "pid"));
	}
	json_decref(r);
	return n;
}

static char *kid_line(const struct kid *k, const char *prefix, int skip)
{
	char log[1024];
	char *line;

	snprintf(log, sizeof(log), "%.400s/serial.log", k->dir);
	line = file_wait_line(log, prefix, skip, TIMEOUT_MS);
	if (!line) {
		char cmd[2600];
		fprintf(stderr, "child %s: no line starting with '%s'; its console:\n", k->dir,
			prefix);
		snprintf(cmd, sizeof(cmd), "cat '%s' >&2; cat '%s'/../*.err '%s'/../zygote.log >&2",
			 log, k->dir, k->dir);
		if (system(cmd)) {
		}
	}
	assert_non_null(line);
	return line;
}

/* Inside the child: writers frozen at the branch, memory equal to one instant. */
static void kid_verify_strict(const struct kid *k, char *genid, size_t len)
{
	char want[64], buf[32], in[1024], log[1024], *l;
	int skip;

	l = kid_line(k, "genid.changed=", 0);
	assert_non_null(line_value(l, "genid.changed", genid, len));
	free(l);
	free(kid_line(k, "pattern.frozen=1", 0));
	snprintf(log, sizeof(log), "%.400s/serial.log", k->dir);
	skip = file_count_lines(log);
	snprintf(in, sizeof(in), "%.400s/serial.in", k->dir);
	assert_int_equal(fifo_send(in, "verify strict\n"), 0);
	for (int i = 0; i < WRITERS; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		l = kid_line(k, want, skip);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(line_value(l, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict"))
			fail_msg("child %s: %s", k->dir, l);
		free(l);
	}
}

/* Outside: the child answers on its own control socket, running and restored. */
static void kid_status(const struct kid *k)
{
	char sock[600];
	json_t *r;

	snprintf(sock, sizeof(sock), "%s/control.sock", k->dir);
	r = call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	assert_true(json_is_true(json_object_get(r, "restored")));
	json_decref(r);
}

static void kid_shutdown(const struct kid *k)
{
	char sock[600];

	snprintf(sock, sizeof(sock), "%s/control.sock", k->dir);
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	for (int i = 0; i < 200 && kill(k->pid, 0) == 0; i++)
		usleep(20 * 1000);
}

static void source_live_verify(struct source *s)
{
	char want[64], buf[32];

	vmm_send(&s->p, "verify\n");
	for (int i = 0; i < WRITERS; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		assert_non_null(vmm_need_line(&s->p, want, TIMEOUT_MS));
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&s->p, want, buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
	}
}

static int count_lines_with(const char *path, const char *text)
{
	char line[1024];
	int n = 0;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, text) != NULL;
	fclose(f);
	return n;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

/*
 * Pooled children are the parked ones (same pids), their guests had not run
 * while parked (empty consoles), and once handed out each is exactly the
 * branch instant with a generation ID of its own.
 */
static void test_pooled_children_verify_strictly(void **state)
{
	struct source s;
	struct kid kids[MAX_KIDS];
	pid_t parked[16];
	char g[2][64], src_genid[64] = "", log[600];
	int zpid, id, nparked;

	(void)state;
	start_source(&s);
	vmm_value(&s.p, "genid", src_genid, sizeof(src_genid));
	id = branch_pool(&s, 2, &zpid);
	wait_pool_ready(&s, id, 2);
	nparked = zygote_children(zpid, parked, 16);
	assert_int_equal(nparked, 2);
	for (int i = 0; i < 2; i++) {
		/* Built (its console file exists) but the guest never ran: not a byte written. */
		snprintf(log, sizeof(log), "%s/b%d/child-%d/serial.log", dir, counter, i);
		assert_int_equal(file_size(log), 0);
	}
	spawn(&s, id, 2, kids);
	for (int i = 0; i < 2; i++) {
		assert_true(pid_in(kids[i].pid, parked, nparked));
		kid_verify_strict(&kids[i], g[i], sizeof(g[i]));
		kid_status(&kids[i]);
	}
	assert_string_not_equal(g[0], g[1]);
	assert_string_not_equal(g[0], src_genid);
	assert_string_not_equal(g[1], src_genid);
	source_live_verify(&s);
	/* Refilled in the background, from the same instant. */
	wait_pool_ready(&s, id, 2);
	for (int i = 0; i < 2; i++)
		kid_shutdown(&kids[i]);
	stop_source(&s);
}

/* pool 2, spawn 5: two come from the pool, three are built fresh; all five verify. */
static void test_spawn_more_than_pool_refills(void **state)
{
	struct source s;
	struct kid kids[MAX_KIDS];
	pid_t parked[16], now[16];
	char g[5][64];
	int zpid, id, nparked, from_pool = 0;

	(void)state;
	start_source(&s);
	id = branch_pool(&s, 2, &zpid);
	wait_pool_ready(&s, id, 2);
	nparked = zygote_children(zpid, parked, 16);
	assert_int_equal(nparked, 2);
	spawn(&s, id, 5, kids);
	for (int i = 0; i < 5; i++) {
		from_pool += pid_in(kids[i].pid, parked, nparked);
		kid_verify_strict(&kids[i], g[i], sizeof(g[i]));
		for (int j = 0; j < i; j++)
			assert_string_not_equal(g[i], g[j]);
	}
	assert_int_equal(from_pool, 2);
	wait_pool_ready(&s, id, 2);
	/* Five handed out and two new parked ones, all the zygote's children. */
	assert_int_equal(zygote_children(zpid, now, 16), 7);
	/* The refilled pool is the same instant: another spawn verifies strictly too. */
	spawn(&s, id, 1, &kids[5]);
	assert_true(pid_in(kids[5].pid, now, 7));
	kid_verify_strict(&kids[5], g[0], sizeof(g[0]));
	for (int i = 0; i < 6; i++)
		kid_shutdown(&kids[i]);
	stop_source(&s);
}

/* Release ends the parked children before it replies: no process, no directory left. */
static void test_release_leaves_no_process(void **state)
{
	struct source s;
	struct kid kid;
	pid_t parked[16];
	char req[200], path[600];
	int zpid, id, nparked;
	struct stat st;

	(void)state;
	start_source(&s);
	id = branch_pool(&s, 3, &zpid);
	wait_pool_ready(&s, id, 3);
	spawn(&s, id, 1, &kid); /* one handed out: it outlives the release */
	wait_pool_ready(&s, id, 3);
	nparked = zygote_children(zpid, parked, 16);
	assert_int_equal(nparked, 4);
	snprintf(req, sizeof(req), "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":%d}", id);
	json_decref(call(s.sock, req, true));
	for (int i = 0; i < nparked; i++) {
		if (parked[i] == kid.pid)
			continue;
		/* Gone and reaped by the time the reply came: not even a zombie. */
		snprintf(path, sizeof(path), "/proc/%d", parked[i]);
		if (stat(path, &st) == 0)
			fail_msg("pooled child %d still exists after release", parked[i]);
	}
	snprintf(path, sizeof(path), "/proc/%d", zpid);
	assert_int_equal(stat(path, &st), -1);
	/* Only the handed-out child's directory stays (children 1..3 were parked). */
	for (int k = 1; k <= 3; k++) {
		snprintf(path, sizeof(path), "%s/b%d/child-%d", dir, counter, k);
		if (stat(path, &st) == 0)
			fail_msg("%s stayed after release", path);
	}
	kid_status(&kid);
	kid_shutdown(&kid);
	stop_source(&s);
}

/* A parked child that dies (OOM killer, kill -9) is replaced. */
static void test_dead_pooled_child_is_replaced(void **state)
{
	struct source s;
	struct kid kid;
	pid_t parked[16], now[16];
	char g[64];
	int zpid, id, n;

	(void)state;
	start_source(&s);
	id = branch_pool(&s, 1, &zpid);
	wait_pool_ready(&s, id, 1);
	assert_int_equal(zygote_children(zpid, parked, 16), 1);
	assert_int_equal(kill(parked[0], SIGKILL), 0);
	for (int i = 0; i < TIMEOUT_MS / 20; i++) {
		n = zygote_children(zpid, now, 16);
		if (n == 1 && now[0] != parked[0])
			break;
		usleep(20 * 1000);
	}
	assert_int_equal(n, 1);
	assert_int_not_equal(now[0], parked[0]);
	wait_pool_ready(&s, id, 1);
	spawn(&s, id, 1, &kid);
	assert_int_equal(kid.pid, now[0]);
	kid_verify_strict(&kid, g, sizeof(g));
	kid_shutdown(&kid);
	stop_source(&s);
}

/* Children that cannot be built: the pool says why, stops retrying, and spawn says so too. */
static void test_failing_pool_reports_and_stops(void **state)
{
	struct source s;
	pid_t kids[16];
	char error[512], req[200], log[600];
	int zpid, id, pool, ready;
	json_t *r;

	(void)state;
	setenv("FORKD_FAULT_INJECT", "child-vm", 1);
	start_source(&s);
	unsetenv("FORKD_FAULT_INJECT");
	id = branch_pool(&s, 2, &zpid);
	error[0] = '\0';
	for (int i = 0; i < TIMEOUT_MS / 20 && !error[0]; i++) {
		pool_status(&s, id, &pool, &ready, error, sizeof(error));
		usleep(20 * 1000);
	}
	if (!strstr(error, "injected failure"))
		fail_msg("pool_error '%s': expected the injected failure", error);
	assert_int_equal(ready, 0);
	/* It gives up (no fork storm): after 3 failed builds no child of the zygote is left. */
	for (int i = 0; i < TIMEOUT_MS / 20 && zygote_children(zpid, kids, 16) > 0; i++)
		usleep(20 * 1000);
	assert_int_equal(zygote_children(zpid, kids, 16), 0);
	usleep(300 * 1000);
	assert_int_equal(zygote_children(zpid, kids, 16), 0);
	snprintf(log, sizeof(log), "%s/b%d/zygote.log", dir, counter);
	assert_int_equal(count_lines_with(log, "forkd-zygote: pooled child"), 3);
	snprintf(req, sizeof(req), "{\"cmd\":\"zygote\",\"action\":\"spawn\",\"id\":%d,\"n\":1}",
		 id);
	r = call(s.sock, req, false);
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "failed to start"));
	json_decref(r);
	vmm_send(&s.p, "ping\n");
	assert_non_null(vmm_need_line(&s.p, "pong", TIMEOUT_MS));
	stop_source(&s);
}

/* Sends a console command to a child and returns its answer line (caller frees). */
static char *kid_command(const struct kid *k, const char *cmd, const char *answer)
{
	char in[1024], log[1024];
	int skip;

	snprintf(log, sizeof(log), "%.400s/serial.log", k->dir);
	skip = file_count_lines(log);
	snprintf(in, sizeof(in), "%.400s/serial.in", k->dir);
	assert_int_equal(fifo_send(in, cmd), 0);
	return kid_line(k, answer, skip);
}

/*
 * Pooled children built before any spawn get private disk overlays of the
 * branch instant's disk copy, as fresh ones do: a write in one is seen
 * neither by its sibling nor by the source's image.
 */
static void test_pooled_children_disks_are_private(void **state)
{
	char disk[300], buf[512], *l;
	struct source s;
	struct kid kids[MAX_KIDS];
	int zpid, id, fd;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/pool-disk.img", dir);
	fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	start_source_disk(&s, disk);
	id = branch_pool(&s, 2, &zpid);
	wait_pool_ready(&s, id, 2);
	spawn(&s, id, 2, kids);
	free(kid_command(&kids[0], "blkw 100 kid0\n", "blkw.sector=100 status=0"));
	l = kid_command(&kids[0], "blkr 100\n", "blkr.sector=100 ");
	assert_non_null(strstr(l, "forkd-blkw kid0"));
	free(l);
	l = kid_command(&kids[1], "blkr 100\n", "blkr.sector=100 ");
	assert_null(strstr(l, "forkd-blkw"));
	free(l);
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, buf, sizeof(buf), 100 * 512), 512);
	assert_int_equal(buf[0], 0);
	close(fd);
	for (int i = 0; i < 2; i++)
		kid_shutdown(&kids[i]);
	stop_source(&s);
}

/* CONNECT to guest port 1024 (the probe's echo) on a vsock host socket; -1 if refused. */
static int vsock_echo_dial(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct pollfd p;
	char line[64];
	size_t n = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    write(fd, "CONNECT 1024\n", 13) != 13)
		goto fail;
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	while (n + 1 < sizeof(line) && poll(&p, 1, 10000) == 1 && read(fd, line + n, 1) == 1)
		if (line[n++] == '\n')
			break;
	line[n] = '\0';
	if (strncmp(line, "OK ", 3) == 0)
		return fd;
	fprintf(stderr, "CONNECT 1024 to %s: '%s'\n", path, line);
fail:
	close(fd);
	return -1;
}

/*
 * A pooled child has its own vsock socket, as a fresh child: its guest sees
 * the transport reset when it resumes, echoes through the child's socket,
 * and its VMM started the fork notify when it resumed.
 */
static void test_pooled_child_vsock_and_fork_notify(void **state)
{
	char vsock[300], path[700], buf[16] = "";
	struct source s;
	struct kid kid;
	struct pollfd p;
	json_t *r;
	int zpid, id, fd;

	(void)state;
	snprintf(s.sock, sizeof(s.sock), "%s/src-%d.sock", dir, ++counter);
	snprintf(vsock, sizeof(vsock), "%s/v%d.sock", dir, counter);
	probe_start(&s.p, NULL, "256M", "2", "work=vsock,idle", "--control", s.sock, "--vsock",
		    vsock, NULL);
	assert_non_null(vmm_need_line(&s.p, "vsock.ready", TIMEOUT_MS));
	id = branch_pool(&s, 1, &zpid);
	wait_pool_ready(&s, id, 1);
	spawn(&s, id, 1, &kid);
	free(kid_line(&kid, "vsock.reset=1 ", 0));
	snprintf(path, sizeof(path), "%s/vsock.sock", kid.dir);
	fd = vsock_echo_dial(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "pooled\n", 7), 7);
	p = (struct pollfd){.fd = fd, .events = POLLIN};
	assert_int_equal(poll(&p, 1, 10000), 1);
	assert_int_equal(read(fd, buf, 7), 7);
	assert_memory_equal(buf, "pooled\n", 7);
	close(fd);
	snprintf(path, sizeof(path), "%s/control.sock", kid.dir);
	r = call(path, "{\"cmd\":\"status\"}", true);
	snprintf(path, sizeof(path), "%s/vsock.sock", kid.dir);
	assert_string_equal(json_string_value(json_object_get(r, "vsock_path")), path);
	/* The probe has no agent: pending or failed, but started (not "none"). */
	assert_string_not_equal(json_string_value(json_object_get(r, "fork_notify")), "none");
	json_decref(r);
	/* The source's own socket still reaches its guest. */
	fd = vsock_echo_dial(vsock);
	assert_true(fd >= 0);
	close(fd);
	kid_shutdown(&kid);
	stop_source(&s);
}

static void expect_error(const char *sock, const char *req, const char *needle)
{
	json_t *r = call(sock, req, false);
	const char *e = json_string_value(json_object_get(r, "error"));

	if (!e || !strstr(e, needle))
		fail_msg("%s: error '%s' lacks '%s'", req, e ? e : "(none)", needle);
	json_decref(r);
}

static void test_bad_pool_values(void **state)
{
	struct source s;
	json_t *r;

	(void)state;
	start_source(&s);
	expect_error(s.sock, "{\"cmd\":\"branch\",\"n\":0,\"pool\":-1}", "pool=-1: expected 0..16");
	expect_error(s.sock, "{\"cmd\":\"branch\",\"n\":1,\"pool\":17}", "pool=17: expected 0..16");
	expect_error(s.sock, "{\"cmd\":\"branch\",\"pool\":\"two\"}",
		     "\"pool\": expected an integer");
	expect_error(s.sock, "{\"cmd\":\"branch\",\"pool\":1.5}", "\"pool\": expected an integer");
	expect_error(s.sock, "{\"cmd\":\"branch\",\"n\":0,\"pool\":0}",
		     "n=0 without persist or pool");
	r = call(s.sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);
	assert_int_equal(json_array_size(json_object_get(r, "zygotes")), 0);
	json_decref(r);
	vmm_send(&s.p, "ping\n");
	assert_non_null(vmm_need_line(&s.p, "pong", TIMEOUT_MS));
	stop_source(&s);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_pooled_children_verify_strictly),
	    cmocka_unit_test(test_spawn_more_than_pool_refills),
	    cmocka_unit_test(test_release_leaves_no_process),
	    cmocka_unit_test(test_dead_pooled_child_is_replaced),
	    cmocka_unit_test(test_pooled_children_disks_are_private),
	    cmocka_unit_test(test_pooled_child_vsock_and_fork_notify),
	    cmocka_unit_test(test_failing_pool_reports_and_stops),
	    cmocka_unit_test(test_bad_pool_values),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("BRANCH: the zygote's pool of prebuilt children", tests,
					   setup, teardown);
}
