/* SPDX-License-Identifier: MIT */
/*
 * Live BRANCH with the fork engine, proven by the guest: each child freezes
 * its pattern writers when it sees its new generation ID and verifies from
 * inside that its memory is the source's at one single instant (strict
 * mode: every page holds exactly the last write with sequence <= S). Also:
 * sources keep running and verifying, children of children, ten branches in
 * a row under a write-heavy load, a 5 GiB guest, disk isolation, persisting
 * the branch point, and refusals that leave the source unharmed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS 30000
#define MAX_KIDS   8

static char dir[256];
static int counter;

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "branch");
}

static int teardown(void **state)
{
	(void)state;
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

static void start_source(struct source *s, const char *mem, const char *cpus, const char *append,
			 const char *disk)
{
	snprintf(s->sock, sizeof(s->sock), "%s/src-%d.sock", dir, ++counter);
	probe_start(&s->p, NULL, mem, cpus, append, "--control", s->sock, disk ? "--disk" : NULL,
		    disk, NULL);
	need_line(&s->p, "DONE");
	usleep(200 * 1000);
}

/* Branches `sock` into n children; returns how many, filling kids. */
static int branch(const char *sock, int n, struct kid *kids, json_t **reply_out)
{
	char req[700], bdir[400];
	json_t *r, *children;
	size_t i;

	snprintf(bdir, sizeof(bdir), "%s/b%d", dir, ++counter);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":%d,\"dir\":\"%s\"}", n, bdir);
	r = call(sock, req, true);
	children = json_object_get(r, "children");
	assert_int_equal(json_array_size(children), (size_t)n);
	for (i = 0; i < json_array_size(children) && i < MAX_KIDS; i++) {
		json_t *c = json_array_get(children, i);
		snprintf(kids[i].dir, sizeof(kids[i].dir), "%s",
			 json_string_value(json_object_get(c, "dir")));
		kids[i].pid = (int)json_integer_value(json_object_get(c, "pid"));
	}
	if (reply_out)
		*reply_out = r;
	else
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
		snprintf(cmd, sizeof(cmd), "cat '%s' >&2; cat '%s'/../*.err >&2", log, k->dir);
		if (system(cmd)) {
		}
	}
	assert_non_null(line);
	return line;
}

static int kid_lines(const struct kid *k)
{
	char log[1024];

	snprintf(log, sizeof(log), "%.400s/serial.log", k->dir);
	return file_count_lines(log);
}

static void kid_send(const struct kid *k, const char *text)
{
	char in[1024];

	snprintf(in, sizeof(in), "%.400s/serial.in", k->dir);
	assert_int_equal(fifo_send(in, text), 0);
}

static void kid_sock(const struct kid *k, char *out, size_t len)
{
	snprintf(out, len, "%s/control.sock", k->dir);
}

/* Inside the child: writers frozen at the branch, memory equal to one instant. */
static void kid_verify_strict(const struct kid *k, int nr_writers)
{
	char want[64], buf[32];
	int skip;

	free(kid_line(k, "pattern.frozen=1", 0));
	skip = kid_lines(k);
	kid_send(k, "verify strict\n");
	for (int i = 0; i < nr_writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		char *l = kid_line(k, want, skip);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(line_value(l, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict"))
			fail_msg("child %s: %s", k->dir, l);
		free(l);
	}
}

static void kid_genid(const struct kid *k, char *out, size_t len)
{
	char *l = kid_line(k, "genid.changed=", 0);

	assert_non_null(line_value(l, "genid.changed", out, len));
	free(l);
}

static void kid_shutdown(const struct kid *k)
{
	char sock[600];
	json_t *r;

	kid_sock(k, sock, sizeof(sock));
	r = call(sock, "{\"cmd\":\"shutdown\"}", true);
	json_decref(r);
	for (int i = 0; i < 200 && kill(k->pid, 0) == 0; i++)
		usleep(20 * 1000);
}

static void source_live_verify(struct source *s, int nr_writers)
{
	char want[64], buf[32];

	vmm_send(&s->p, "verify\n");
	for (int i = 0; i < nr_writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		need_line(&s->p, want);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&s->p, want, buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
	}
}

static void stop_source(struct source *s)
{
	json_t *r = call(s->sock, "{\"cmd\":\"shutdown\"}", true);

	json_decref(r);
	assert_int_equal(vmm_wait(&s->p, TIMEOUT_MS), 0);
	vmm_free(&s->p);
}

static void branch_and_verify(const char *cpus, const char *append, int writers)
{
	struct source s;
	struct kid kids[MAX_KIDS];
	char g0[64], g1[64], src_genid[64] = "";
	json_t *r;

	start_source(&s, "256M", cpus, append, NULL);
	vmm_value(&s.p, "genid", src_genid, sizeof(src_genid));
	branch(s.sock, 2, kids, &r);
	assert_true(json_integer_value(json_object_get(r, "pause_us")) > 0);
	json_decref(r);
	kid_verify_strict(&kids[0], writers);
	kid_verify_strict(&kids[1], writers);
	/* Children see different generation IDs, and not the source's. */
	kid_genid(&kids[0], g0, sizeof(g0));
	kid_genid(&kids[1], g1, sizeof(g1));
	assert_string_not_equal(g0, g1);
	assert_string_not_equal(g0, src_genid);
	/* The source ran on and its own verification holds. */
	source_live_verify(&s, writers);
	kid_shutdown(&kids[0]);
	kid_shutdown(&kids[1]);
	stop_source(&s);
}

static void test_branch_1_vcpu(void **state)
{
	(void)state;
	branch_and_verify("1", "work=pattern pattern_mib=16 pattern_freeze=genid", 1);
}

static void test_branch_2_vcpus(void **state)
{
	(void)state;
	branch_and_verify("2", "work=pattern,pattern pattern_mib=16 pattern_freeze=genid", 2);
}

static void test_ten_branches_under_write_load(void **state)
{
	struct source s;
	struct kid kids[MAX_KIDS];

	(void)state;
	start_source(&s, "512M", "2", "work=pattern,pattern pattern_mib=64 pattern_freeze=genid",
		     NULL);
	for (int i = 0; i < 10; i++) {
		branch(s.sock, 1, kids, NULL);
		kid_verify_strict(&kids[0], 2);
		kid_shutdown(&kids[0]);
		/* Release the zygote so ten of them do not pile up. */
		json_t *r = call(s.sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);
		json_t *z = json_array_get(json_object_get(r, "zygotes"), 0);
		char req[128];
		snprintf(req, sizeof(req),
			 "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":%lld}",
			 (long long)json_integer_value(json_object_get(z, "zygote")));
		json_decref(r);
		json_decref(call(s.sock, req, true));
	}
	source_live_verify(&s, 2);
	stop_source(&s);
}

static void test_child_of_child(void **state)
{
	struct source s;
	struct kid kids[MAX_KIDS], grandkids[MAX_KIDS];
	char sock[600];

	(void)state;
	start_source(&s, "256M", "2", "work=pattern,pattern pattern_mib=16 pattern_freeze=genid",
		     NULL);
	branch(s.sock, 1, kids, NULL);
	kid_verify_strict(&kids[0], 2);
	/* The child's writers are frozen: its own child must match it exactly. */
	kid_sock(&kids[0], sock, sizeof(sock));
	branch(sock, 1, grandkids, NULL);
	kid_verify_strict(&grandkids[0], 2);
	kid_shutdown(&grandkids[0]);
	kid_shutdown(&kids[0]);
	stop_source(&s);
}

static void test_branch_5g_guest(void **state)
{
	struct source s;
	struct kid kids[MAX_KIDS];

	(void)state;
	start_source(&s, "5G", "2", "work=pattern,pattern pattern_mib=64 pattern_freeze=genid",
		     NULL);
	branch(s.sock, 1, kids, NULL);
	kid_verify_strict(&kids[0], 2);
	kid_shutdown(&kids[0]);
	stop_source(&s);
}

static void test_child_disks_are_private(void **state)
{
	char disk[300], line[64], want[64], buf[512];
	struct source s;
	struct kid kids[MAX_KIDS];
	int fd;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/branch-disk.img", dir);
	fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	start_source(&s, "128M", "1", "work=idle", disk);
	branch(s.sock, 2, kids, NULL);
	for (int i = 0; i < 2; i++) {
		snprintf(line, sizeof(line), "blkw %d kid%d\n", 100 + i, i);
		kid_send(&kids[i], line);
		snprintf(want, sizeof(want), "blkw.sector=%d status=0", 100 + i);
		free(kid_line(&kids[i], want, 0));
	}
	for (int i = 0; i < 2; i++) {
		for (int sct = 0; sct < 2; sct++) {
			int skip = kid_lines(&kids[i]);
			snprintf(line, sizeof(line), "blkr %d\n", 100 + sct);
			kid_send(&kids[i], line);
			snprintf(want, sizeof(want), "blkr.sector=%d ", 100 + sct);
			char *l = kid_line(&kids[i], want, skip);
			snprintf(want, sizeof(want), "forkd-blkw kid%d", sct);
			assert_int_equal(strstr(l, want) != NULL, sct == i);
			free(l);
		}
	}
	/* The source sees neither write, inside or on its image. */
	for (int sct = 0; sct < 2; sct++) {
		snprintf(line, sizeof(line), "blkr %d\n", 100 + sct);
		vmm_send(&s.p, line);
		snprintf(want, sizeof(want), "blkr.sector=%d ", 100 + sct);
		assert_null(strstr(need_line(&s.p, want), "forkd-blkw"));
	}
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, buf, 512, 100 * 512), 512);
	assert_int_equal(buf[0], 0);
	assert_int_equal(pread(fd, buf, 512, 101 * 512), 512);
	assert_int_equal(buf[0], 0);
	close(fd);
	kid_shutdown(&kids[0]);
	kid_shutdown(&kids[1]);
	stop_source(&s);
}

static char *kid_blkr(const struct kid *k, int sector)
{
	char line[64], want[64];
	int skip = kid_lines(k);

	snprintf(line, sizeof(line), "blkr %d\n", sector);
	kid_send(k, line);
	snprintf(want, sizeof(want), "blkr.sector=%d status=0 ", sector);
	return kid_line(k, want, skip);
}

struct async_call {
	const char *sock;
	char req[700];
	json_t *reply;
	char err[256];
};

static void *async_call_thread(void *arg)
{
	struct async_call *a = arg;

	a->reply = harness_call(a->sock, a->req, a->err, sizeof(a->err));
	return NULL;
}

static void kid_from_reply(json_t *r, struct kid *k)
{
	json_t *c = json_array_get(json_object_get(r, "children"), 0);

	assert_non_null(c);
	snprintf(k->dir, sizeof(k->dir), "%s", json_string_value(json_object_get(c, "dir")));
	k->pid = (int)json_integer_value(json_object_get(c, "pid"));
}

/*
 * The writable disk is copied after the pause, while the source runs on
 * (slowed here by a fault hook so that the source's write lands while the
 * copy is pending): the child still sees the disk of the branch instant; the
 * next branch and its persisted snapshot see the source's write.
 */
static void test_disk_copy_is_the_branch_instant(void **state)
{
	enum { DISK_MIB = 64, EARLY = 10, LATE = DISK_MIB * 2048 - 8 };
	char disk[300], line[64], snap[300], copy[400], buf[512];
	static char fill[1 << 20];
	struct async_call a = {0};
	struct source s;
	struct kid first, second;
	pthread_t thread;
	json_t *r;
	int fd;
	char *l;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/copy-disk.img", dir);
	snprintf(snap, sizeof(snap), "%s/copy-persisted", dir);
	/* Dense, so the copy has work to do; the marker sectors read as text. */
	memset(fill, 0xff, sizeof(fill));
	fd = open(disk, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	for (int i = 0; i < DISK_MIB; i++)
		assert_int_equal(write(fd, fill, sizeof(fill)), (ssize_t)sizeof(fill));
	assert_int_equal(pwrite(fd, "host-orig", 10, EARLY * 512), 10);
	assert_int_equal(pwrite(fd, "host-orig", 10, (off_t)LATE * 512), 10);
	close(fd);
	setenv("FORKD_FAULT_INJECT", "disk-copy-slow", 1);
	start_source(&s, "128M", "1", "work=idle", disk);
	unsetenv("FORKD_FAULT_INJECT");

	/* Branch; once the pause has made the copy's file, the source writes. */
	a.sock = s.sock;
	snprintf(a.req, sizeof(a.req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s/copy-b1\"}", dir);
	snprintf(copy, sizeof(copy), "%s/copy-b1/disk0.img", dir);
	assert_int_equal(pthread_create(&thread, NULL, async_call_thread, &a), 0);
	for (int i = 0; i < TIMEOUT_MS / 10 && access(copy, F_OK) < 0; i++)
		usleep(10 * 1000);
	snprintf(line, sizeof(line), "blkw %d src\n", LATE);
	vmm_send(&s.p, line);
	snprintf(line, sizeof(line), "blkw.sector=%d status=0", LATE);
	need_line(&s.p, line);
	pthread_join(thread, NULL);
	if (!a.reply || !json_is_true(json_object_get(a.reply, "ok")))
		fail_msg("branch: %s", a.err);
	assert_true(json_integer_value(json_object_get(a.reply, "disk_copy_us")) > 0);
	kid_from_reply(a.reply, &first);
	json_decref(a.reply);
	for (int sector = EARLY; sector <= LATE; sector += LATE - EARLY) {
		l = kid_blkr(&first, sector);
		assert_non_null(strstr(l, "text=host-orig"));
		free(l);
	}

	/* The next branch, persisted, is of the disk with the source's write. */
	snprintf(a.req, sizeof(a.req),
		 "{\"cmd\":\"branch\",\"n\":1,\"persist\":\"%s\",\"wait\":true,\"dir\":\"%s/"
		 "copy-b2\"}",
		 snap, dir);
	r = call(s.sock, a.req, true);
	assert_string_equal(json_string_value(json_object_get(r, "persist")), "ready");
	kid_from_reply(r, &second);
	json_decref(r);
	l = kid_blkr(&second, LATE);
	assert_non_null(strstr(l, "text=forkd-blkw src"));
	free(l);
	snprintf(copy, sizeof(copy), "%s/disk0.img", snap);
	fd = open(copy, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, sizeof(buf), (off_t)LATE * 512), 512);
	assert_memory_equal(buf, "forkd-blkw src", 14);
	assert_int_equal(pread(fd, buf, sizeof(buf), EARLY * 512), 512);
	assert_memory_equal(buf, "host-orig", 9);
	close(fd);
	kid_shutdown(&first);
	kid_shutdown(&second);
	stop_source(&s);
}

static void test_persist_branch_point(void **state)
{
	char req[700], snap[300], sock[300];
	char *argv[] = {(char *)harness_vmm(), "--restore", snap, "--control", sock, NULL};
	struct source s;
	struct vmm_proc restored;
	json_t *r;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/persisted", dir);
	snprintf(sock, sizeof(sock), "%s/restored.sock", dir);
	start_source(&s, "256M", "2", "work=pattern,pattern pattern_mib=16 pattern_freeze=genid",
		     NULL);
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"branch\",\"n\":0,\"persist\":\"%s\",\"wait\":true,\"dir\":\"%s/pz\"}",
		 snap, dir);
	r = call(s.sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "persist")), "ready");
	json_decref(r);
	r = call(s.sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);
	assert_string_equal(json_string_value(json_object_get(
				json_array_get(json_object_get(r, "zygotes"), 0), "persist")),
			    "ready");
	json_decref(r);
	source_live_verify(&s, 2);
	stop_source(&s);
	/* The persisted branch point restores to an exact point-in-time copy. */
	assert_int_equal(vmm_start(&restored, argv), 0);
	need_line(&restored, "pattern.frozen=1");
	vmm_send(&restored, "verify strict\n");
	need_line(&restored, "cpu1.verify=");
	{
		char buf[32];
		assert_non_null(vmm_value(&restored, "cpu0.verify", buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
		assert_non_null(vmm_value(&restored, "cpu1.verify", buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
	}
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&restored, TIMEOUT_MS), 0);
	vmm_free(&restored);
}

static void expect_branch_error(const char *sock, const char *req, const char *needle)
{
	json_t *r = call(sock, req, false);
	const char *e = json_string_value(json_object_get(r, "error"));

	if (!e || !strstr(e, needle))
		fail_msg("%s: error '%s' lacks '%s'", req, e ? e : "(none)", needle);
	json_decref(r);
}

static void expect_no_zygotes(const char *sock)
{
	json_t *r = call(sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);

	assert_int_equal(json_array_size(json_object_get(r, "zygotes")), 0);
	json_decref(r);
}

static void test_bad_branch_requests(void **state)
{
	struct source s;

	(void)state;
	start_source(&s, "128M", "1", "work=idle", NULL);
	expect_branch_error(s.sock, "{\"cmd\":\"branch\",\"n\":0}", "n=0");
	expect_branch_error(s.sock, "{\"cmd\":\"branch\",\"n\":-1}", "n=-1");
	expect_branch_error(s.sock, "{\"cmd\":\"branch\",\"n\":5000}", "n=5000");
	expect_branch_error(s.sock, "{\"cmd\":\"branch\",\"n\":\"two\"}", "n");
	/* 1024 children do not fit in this machine's memory headroom. */
	expect_branch_error(s.sock, "{\"cmd\":\"branch\",\"n\":1024}", "host memory");
	expect_branch_error(s.sock, "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":42}",
			    "zygote 42");
	expect_branch_error(s.sock, "{\"cmd\":\"zygote\",\"action\":\"spawn\",\"id\":42}",
			    "zygote 42");
	/* A paused VM (e.g. mid-way through another operation) is not branched. */
	json_decref(call(s.sock, "{\"cmd\":\"pause\"}", true));
	expect_branch_error(s.sock, "{\"cmd\":\"branch\",\"n\":1}", "paused");
	json_decref(call(s.sock, "{\"cmd\":\"resume\"}", true));
	expect_no_zygotes(s.sock);
	/* The source runs on unharmed. */
	vmm_send(&s.p, "ping\n");
	need_line(&s.p, "pong");
	stop_source(&s);
}

/* fork(2) failing, and a child failing to build its VM (injected). */
static void test_branch_failures_leave_nothing(void **state)
{
	const char *faults[] = {"fork", "child-vm"};

	(void)state;
	for (int f = 0; f < 2; f++) {
		struct source s;
		char req[700], bdir[400];
		struct stat st;

		setenv("FORKD_FAULT_INJECT", faults[f], 1);
		start_source(&s, "128M", "1", "work=idle", NULL);
		unsetenv("FORKD_FAULT_INJECT");
		snprintf(bdir, sizeof(bdir), "%s/fail-%s", dir, faults[f]);
		snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":2,\"dir\":\"%s\"}", bdir);
		expect_branch_error(s.sock, req, f == 0 ? "fork" : "failed to start");
		expect_no_zygotes(s.sock);
		if (f == 0)
			assert_int_equal(stat(bdir, &st), -1); /* nothing created */
		vmm_send(&s.p, "ping\n");
		need_line(&s.p, "pong");
		stop_source(&s);
	}
}

/* A zygote that dies is noticed (pidfd) and forgotten; its children run on. */
static void test_zygote_death_is_noticed(void **state)
{
	struct source s;
	struct kid kids[MAX_KIDS];
	json_t *r;
	int zpid;

	(void)state;
	start_source(&s, "128M", "1", "work=idle", NULL);
	branch(s.sock, 1, kids, &r);
	zpid = (int)json_integer_value(json_object_get(r, "zygote_pid"));
	json_decref(r);
	assert_int_equal(kill(zpid, SIGKILL), 0);
	for (int i = 0; i < 100; i++) {
		r = call(s.sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);
		size_t n = json_array_size(json_object_get(r, "zygotes"));
		json_decref(r);
		if (n == 0)
			break;
		usleep(20 * 1000);
	}
	expect_no_zygotes(s.sock);
	kid_send(&kids[0], "ping\n");
	free(kid_line(&kids[0], "pong", 0));
	kid_shutdown(&kids[0]);
	stop_source(&s);
}

static bool exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/*
 * A VMM SIGKILLed before it released a zygote leaves $TMPDIR/forkd-branch-PID-N behind: the next
 * VMM's first default branch directory sweeps those of gone PIDs, and only those (not one a
 * child still serves from, not one of a live PID, not other names).
 */
static void test_stale_branch_dirs_swept(void **state)
{
	char tmp[300], stale[400], served[400], live[400], other[400], path[600], mine[400];
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct source s;
	struct kid kid;
	json_t *r, *c;
	pid_t dead;
	int lfd, fd;

	(void)state;
	snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
	assert_int_equal(mkdir(tmp, 0700), 0);
	dead = fork();
	assert_true(dead >= 0);
	if (dead == 0)
		_exit(0);
	assert_int_equal(waitpid(dead, NULL, 0), dead);
	/* gone: a zygote's log and a dead child's files */
	snprintf(stale, sizeof(stale), "%s/forkd-branch-%d-1", tmp, (int)dead);
	assert_int_equal(mkdir(stale, 0700), 0);
	snprintf(path, sizeof(path), "%s/zygote.log", stale);
	fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/child-0", stale);
	assert_int_equal(mkdir(path, 0700), 0);
	/* its source gone, a child still serving from it (this test listens for it) */
	snprintf(served, sizeof(served), "%s/forkd-branch-%d-2", tmp, (int)dead);
	assert_int_equal(mkdir(served, 0700), 0);
	snprintf(path, sizeof(path), "%s/child-0", served);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/child-0/control.sock", served);
	assert_true(strlen(path) < sizeof(a.sun_path));
	memcpy(a.sun_path, path, strlen(path) + 1);
	lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	snprintf(live, sizeof(live), "%s/forkd-branch-%d-3", tmp, (int)getpid());
	assert_int_equal(mkdir(live, 0700), 0);
	snprintf(other, sizeof(other), "%s/forkd-branch-x", tmp);
	assert_int_equal(mkdir(other, 0700), 0);

	setenv("TMPDIR", tmp, 1);
	start_source(&s, "128M", "1", "work=idle", NULL);
	unsetenv("TMPDIR");
	r = call(s.sock, "{\"cmd\":\"branch\",\"n\":1}", true);
	c = json_array_get(json_object_get(r, "children"), 0);
	assert_non_null(c);
	snprintf(kid.dir, sizeof(kid.dir), "%s", json_string_value(json_object_get(c, "dir")));
	kid.pid = (int)json_integer_value(json_object_get(c, "pid"));
	json_decref(r);
	snprintf(mine, sizeof(mine), "%s/forkd-branch-%d-1", tmp, (int)s.p.pid);
	assert_true(exists(mine));
	assert_false(exists(stale));
	assert_true(exists(served));
	assert_true(exists(live));
	assert_true(exists(other));
	kid_shutdown(&kid);
	stop_source(&s);
	close(lfd);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_branch_1_vcpu),
	    cmocka_unit_test(test_branch_2_vcpus),
	    cmocka_unit_test(test_ten_branches_under_write_load),
	    cmocka_unit_test(test_child_of_child),
	    cmocka_unit_test(test_branch_5g_guest),
	    cmocka_unit_test(test_child_disks_are_private),
	    cmocka_unit_test(test_disk_copy_is_the_branch_instant),
	    cmocka_unit_test(test_persist_branch_point),
	    cmocka_unit_test(test_bad_branch_requests),
	    cmocka_unit_test(test_branch_failures_leave_nothing),
	    cmocka_unit_test(test_zygote_death_is_noticed),
	    cmocka_unit_test(test_stale_branch_dirs_swept),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("BRANCH with the fork engine", tests, setup, teardown);
}
