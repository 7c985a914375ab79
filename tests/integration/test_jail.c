/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm --jail with the probe guest: the VMM runs as nobody with every
 * capability set empty, in its own mount/ipc/uts/network namespaces rooted
 * at the jail (checked from outside, in /proc/PID), and the guest still
 * works (pattern verified and touch from inside); snapshot and restore
 * inside jails; BRANCH children inherit the jail and still make their
 * files; bad jails and unusable paths fail with errors naming them.
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
#include <sys/statfs.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS 30000
#define NOBODY	   65534

static char dir[256];
static int counter;

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "jail");
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

/* A fresh jail path and a run directory the VM's uid owns (sockets, logs, branches). */
static void fresh(char *jail, size_t jlen, char *run, size_t rlen)
{
	int k = ++counter;

	snprintf(jail, jlen, "%s/jail-%d", dir, k);
	snprintf(run, rlen, "%s/run-%d", dir, k);
	assert_int_equal(mkdir(run, 0755), 0);
	assert_int_equal(chown(run, NOBODY, NOBODY), 0);
}

/* The value of "Key:" in /proc/pid/status, whitespace squeezed to one space. */
static void proc_status(pid_t pid, const char *key, char *out, size_t len)
{
	char path[64], line[256];
	size_t klen = strlen(key);
	FILE *f;

	out[0] = '\0';
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
			char *v = line + klen + 1;
			size_t o = 0;
			while (*v == ' ' || *v == '\t')
				v++;
			for (; *v && *v != '\n' && o + 1 < len; v++)
				if (!(o && (*v == '\t' || *v == ' ') && out[o - 1] == ' '))
					out[o++] = *v == '\t' ? ' ' : *v;
			out[o] = '\0';
		}
	}
	fclose(f);
}

static bool same_ns(pid_t pid, const char *ns)
{
	char a[64], b[64], la[128] = "", lb[128] = "";

	snprintf(a, sizeof(a), "/proc/%d/ns/%s", (int)pid, ns);
	snprintf(b, sizeof(b), "/proc/self/ns/%s", ns);
	assert_true(readlink(a, la, sizeof(la) - 1) > 0);
	assert_true(readlink(b, lb, sizeof(lb) - 1) > 0);
	return strcmp(la, lb) == 0;
}

/*
 * What the kernel says of a jailed VMM: uid/gid nobody, no capability in
 * any set, no_new_privs, its own mount/ipc/uts/net namespaces, and a root
 * that is the jail (the first mount of its namespace is the jail directory).
 */
static void expect_jailed(pid_t pid, const char *jail)
{
	static const char *const caps[] = {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"};
	char v[256], path[128], line[1024];
	FILE *f;
	bool root_ro = false;
	struct stat st, jst;

	proc_status(pid, "Uid", v, sizeof(v));
	assert_string_equal(v, "65534 65534 65534 65534");
	proc_status(pid, "Gid", v, sizeof(v));
	assert_string_equal(v, "65534 65534 65534 65534");
	proc_status(pid, "Groups", v, sizeof(v));
	assert_string_equal(v, "");
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++) {
		proc_status(pid, caps[i], v, sizeof(v));
		if (strcmp(v, "0000000000000000") != 0)
			fail_msg("pid %d %s: %s", (int)pid, caps[i], v);
	}
	proc_status(pid, "NoNewPrivs", v, sizeof(v));
	assert_string_equal(v, "1");
	assert_false(same_ns(pid, "mnt"));
	assert_false(same_ns(pid, "ipc"));
	assert_false(same_ns(pid, "uts"));
	assert_false(same_ns(pid, "net"));
	/* No pid namespace, by design: BRANCH children outlive their source (docs/jail.md). */
	assert_true(same_ns(pid, "pid"));
	/* Its root directory is the jail (same inode; mountinfo spells it per filesystem). */
	snprintf(path, sizeof(path), "/proc/%d/root/", (int)pid);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(stat(jail, &jst), 0);
	if (st.st_dev != jst.st_dev || st.st_ino != jst.st_ino)
		fail_msg("pid %d: its root is not %s", (int)pid, jail);
	/* ... and read-only: the jail's skeleton cannot be changed from inside. */
	snprintf(path, sizeof(path), "/proc/%d/mountinfo", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		char root[512], mnt[512], opts[256];
		if (sscanf(line, "%*d %*d %*s %511s %511s %255s", root, mnt, opts) == 3 &&
		    strcmp(mnt, "/") == 0)
			root_ro = strncmp(opts, "ro,", 3) == 0 || strcmp(opts, "ro") == 0;
	}
	fclose(f);
	if (!root_ro)
		fail_msg("pid %d: its / is not mounted read-only", (int)pid);
	/* Non-dumpable after the uid switch: its /proc files are root's, so no other uid's
	 * process can ptrace it or read its memory. */
	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 0);
	/* Through its root, the host's /etc and /usr are not there. */
	snprintf(path, sizeof(path), "/proc/%d/root/etc", (int)pid);
	assert_int_equal(stat(path, &st), -1);
	snprintf(path, sizeof(path), "/proc/%d/root/usr", (int)pid);
	assert_int_equal(stat(path, &st), -1);
}

static void start_jailed(struct vmm_proc *p, const char *jail, const char *sock, const char *mem,
			 const char *cpus, const char *append)
{
	probe_start(p, NULL, mem, cpus, append, "--jail", (char *)jail, "--control", (char *)sock,
		    NULL);
}

static void verify_ok(struct vmm_proc *p, int writers)
{
	char want[64], buf[32];

	vmm_send(p, "verify\n");
	for (int i = 0; i < writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		need_line(p, want);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(p, want, buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
	}
}

static void shutdown_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	vmm_free(p);
}

static void test_jailed_vm_runs_unprivileged(void **state)
{
	char jail[300], run[300], sock[400];
	struct vmm_proc p;
	json_t *r;

	(void)state;
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	start_jailed(&p, jail, sock, "256M", "2", "work=pattern,touch pattern_mib=16 touch_mib=64");
	need_line(&p, "DONE");
	expect_jailed(p.pid, jail);
	/* The guest works: touch finished, the pattern verifies from inside. */
	probe_expect_kv(&p, "cpu1.touch_ok", "1");
	verify_ok(&p, 1);
	r = call(sock, "{\"cmd\":\"status\"}", true);
	json_decref(r);
	/* The jail's /dev holds KVM's node, the VM's uid owns it; the host's /dev is not there. */
	{
		char path[128];
		struct stat st;
		snprintf(path, sizeof(path), "/proc/%d/root/dev/kvm", (int)p.pid);
		assert_int_equal(stat(path, &st), 0);
		assert_true(S_ISCHR(st.st_mode));
		assert_int_equal(st.st_uid, NOBODY);
		assert_int_equal(st.st_mode & 0777, 0600);
		snprintf(path, sizeof(path), "/proc/%d/root/dev/sda", (int)p.pid);
		assert_int_equal(stat(path, &st), -1);
		snprintf(path, sizeof(path), "/proc/%d/root/dev/mem", (int)p.pid);
		assert_int_equal(stat(path, &st), -1);
	}
	shutdown_vm(&p, sock);
}

static void test_snapshot_and_restore_in_jails(void **state)
{
	char jail[300], run[300], sock[400], snap[400], req[600], overlay[400];
	char jail2[300], run2[300], sock2[400];
	unsigned long long before, after;
	char buf[64];
	struct vmm_proc p, q;

	(void)state;
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	start_jailed(&p, jail, sock, "128M", "1", "work=pattern pattern_mib=8");
	need_line(&p, "DONE");
	usleep(200 * 1000);
	vmm_send(&p, "report\n");
	need_line(&p, "report.end");
	assert_non_null(vmm_value(&p, "cpu0.pattern_seq", buf, sizeof(buf)));
	before = strtoull(buf, NULL, 10);
	/* The jailed VM writes its snapshot into its own (bound, writable) directory. */
	snprintf(snap, sizeof(snap), "%s/snap", run);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	json_decref(call(sock, req, true));
	shutdown_vm(&p, sock);

	/* Restored in a second jail, as nobody: it continues the same guest. */
	fresh(jail2, sizeof(jail2), run2, sizeof(run2));
	snprintf(sock2, sizeof(sock2), "%s/c.sock", run2);
	snprintf(overlay, sizeof(overlay), "%s/overlay", run2);
	{
		char *argv[] = {
		    (char *)harness_vmm(), "--restore", snap,	  "--overlay-dir", overlay,
		    "--control",	   sock2,	"--jail", jail2,	   NULL};
		assert_int_equal(vmm_start(&q, argv), 0);
	}
	vmm_send(&q, "report\n");
	need_line(&q, "report.end");
	assert_null(vmm_wait_line(&q, "READY", 0));
	expect_jailed(q.pid, jail2);
	assert_non_null(vmm_value(&q, "cpu0.pattern_seq", buf, sizeof(buf)));
	after = strtoull(buf, NULL, 10);
	assert_true(after >= before);
	verify_ok(&q, 1);
	shutdown_vm(&q, sock2);
}

static void test_branch_children_inherit_the_jail(void **state)
{
	char jail[300], run[300], sock[400], bdir[400], req[600], log[700], in[700];
	char csock[700], buf[32];
	struct vmm_proc p;
	json_t *r, *kids;
	pid_t pids[2];

	(void)state;
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	start_jailed(&p, jail, sock, "256M", "1",
		     "work=pattern pattern_mib=16 pattern_freeze=genid");
	need_line(&p, "DONE");
	usleep(200 * 1000);
	snprintf(bdir, sizeof(bdir), "%s/b1", run);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":2,\"dir\":\"%s\"}", bdir);
	r = call(sock, req, true);
	kids = json_object_get(r, "children");
	assert_int_equal(json_array_size(kids), 2);
	for (int i = 0; i < 2; i++) {
		json_t *c = json_array_get(kids, (size_t)i);
		/* The child's paths are the host's: the branch directory is in a bound one. */
		assert_true(
		    strncmp(json_string_value(json_object_get(c, "dir")), bdir, strlen(bdir)) == 0);
		pids[i] = (pid_t)json_integer_value(json_object_get(c, "pid"));
	}
	json_decref(r);
	for (int i = 0; i < 2; i++) {
		char *l;
		int skip;

		expect_jailed(pids[i], jail);
		/* Made by the child itself, unprivileged: console, FIFO, control socket. */
		snprintf(log, sizeof(log), "%s/child-%d/serial.log", bdir, i);
		snprintf(in, sizeof(in), "%s/child-%d/serial.in", bdir, i);
		snprintf(csock, sizeof(csock), "%s/child-%d/control.sock", bdir, i);
		free(file_wait_line(log, "pattern.frozen=1", 0, TIMEOUT_MS));
		skip = file_count_lines(log);
		assert_int_equal(fifo_send(in, "verify strict\n"), 0);
		l = file_wait_line(log, "cpu0.verify=", skip, TIMEOUT_MS);
		assert_non_null(l);
		assert_non_null(line_value(l, "cpu0.verify", buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict"))
			fail_msg("child %d: %s", i, l);
		free(l);
		{
			struct stat st;
			assert_int_equal(stat(log, &st), 0);
			assert_int_equal(st.st_uid, NOBODY);
		}
		json_decref(call(csock, "{\"cmd\":\"shutdown\"}", true));
		for (int k = 0; k < 200 && kill(pids[i], 0) == 0; k++)
			usleep(20 * 1000);
	}
	verify_ok(&p, 1);
	shutdown_vm(&p, sock);
}

/* Runs forkd-vmm to its exit; returns its status and stderr in p (caller frees). */
static int run_vmm(struct vmm_proc *p, char *const argv[])
{
	return vmm_run_to_exit(p, argv, TIMEOUT_MS);
}

static void expect_refusal(char *const argv[], const char *a, const char *b)
{
	struct vmm_proc p;
	int status = run_vmm(&p, argv);

	if (status != 2 || !strstr(p.err_text, a) || (b && !strstr(p.err_text, b)))
		fail_msg("status %d, stderr: %s (wanted 2 and '%s'%s%s)", status, p.err_text, a,
			 b ? " and " : "", b ? b : "");
	vmm_free(&p);
}

static void test_bad_jails_are_refused(void **state)
{
	char jail[300], run[300], sock[400], file[400], rootdir[400], rsock[500], disk[400];
	char disk_arg[420];
	int fd;

	(void)state;
	/* A jail directory that is not empty belongs to someone else. */
	fresh(jail, sizeof(jail), run, sizeof(run));
	assert_int_equal(mkdir(jail, 0755), 0);
	snprintf(file, sizeof(file), "%s/leftover", jail);
	fd = open(file, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	close(fd);
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	{
		char *argv[] = {(char *)harness_vmm(),
				"--kernel",
				(char *)harness_probe(),
				"--jail",
				jail,
				"--control",
				sock,
				NULL};
		expect_refusal(argv, "--jail", "exists and is not empty");
	}

	/* A control socket directory the VM's uid cannot write. */
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(rootdir, sizeof(rootdir), "%s/rootonly-%d", dir, counter);
	assert_int_equal(mkdir(rootdir, 0755), 0);
	snprintf(rsock, sizeof(rsock), "%s/c.sock", rootdir);
	{
		char *argv[] = {(char *)harness_vmm(),
				"--kernel",
				(char *)harness_probe(),
				"--jail",
				jail,
				"--control",
				rsock,
				NULL};
		expect_refusal(argv, rootdir, "not writable by uid 65534");
	}

	/* A writable disk the VM's uid cannot write: say so, and how to fix it. */
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(disk, sizeof(disk), "%s/disk-%d.img", dir, counter);
	fd = open(disk, O_WRONLY | O_CREAT, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	close(fd);
	snprintf(disk_arg, sizeof(disk_arg), "%s", disk);
	{
		char *argv[] = {(char *)harness_vmm(),
				"--kernel",
				(char *)harness_probe(),
				"--jail",
				jail,
				"--disk",
				disk_arg,
				NULL};
		expect_refusal(argv, "--disk", ",ro");
	}
	/* Read-only, the same disk is fine: the guest reads it as nobody. */
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(disk_arg, sizeof(disk_arg), "%s,ro", disk);
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	{
		struct vmm_proc p;
		probe_start(&p, NULL, "64M", "1", "work=blk then=poweroff", "--jail", jail,
			    "--disk", disk_arg, NULL);
		probe_expect_exit(&p, 0, TIMEOUT_MS);
		vmm_free(&p);
	}

	/* A missing kernel is named with its own path, from inside the jail as outside. */
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(file, sizeof(file), "%s/no-such-kernel", dir);
	{
		char *argv[] = {(char *)harness_vmm(), "--kernel", file, "--jail", jail, NULL};
		expect_refusal(argv, file, NULL);
	}
	/* A jail cannot be run by anyone but root: forkd-vmm says so. */
	fresh(jail, sizeof(jail), run, sizeof(run));
	{
		struct vmm_proc p;
		char *argv[] = {(char *)harness_vmm(),
				"--kernel",
				(char *)harness_probe(),
				"--jail",
				jail,
				NULL};
		assert_int_equal(vmm_start_as(&p, argv, NOBODY, NOBODY), 0);
		assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 2);
		if (!strstr(p.err_text, "must start as root"))
			fail_msg("stderr: %s", p.err_text);
		vmm_free(&p);
	}
}

/*
 * Where /sys/fs/cgroup is no cgroup v2 (this project's development machines
 * mount cgroup v1 there), a limit fails at once and says why; where it is,
 * a VM without limits still gets its cgroup, removed after it exits.
 */
static void test_cgroup_needs_cgroup2(void **state)
{
	struct statfs fs;
	struct vmm_proc p;

	(void)state;
	assert_int_equal(statfs("/sys/fs/cgroup", &fs), 0);
	if (fs.f_type != 0x63677270 /* CGROUP2_SUPER_MAGIC */) {
		char *argv[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
				"--memory-max",	       "256M",	   NULL};
		int status = run_vmm(&p, argv);
		if (status != 2 || !strstr(p.err_text, "--cgroup /sys/fs/cgroup/forkd") ||
		    !strstr(p.err_text, "not on a cgroup v2 filesystem"))
			fail_msg("status %d, stderr: %s", status, p.err_text);
		vmm_free(&p);
		return;
	}
	{
		char cg[300];
		struct stat st;
		char *argv[] = {(char *)harness_vmm(),
				"--kernel",
				(char *)harness_probe(),
				"--mem",
				"64M",
				"--append",
				"work=touch touch_mib=8 then=poweroff",
				"--cgroup",
				"/sys/fs/cgroup/forkd-itest",
				"--cgroup-name",
				"plain",
				NULL};
		assert_int_equal(run_vmm(&p, argv), 0);
		vmm_free(&p);
		snprintf(cg, sizeof(cg), "/sys/fs/cgroup/forkd-itest/vm-plain");
		for (int i = 0; i < 100 && stat(cg, &st) == 0; i++)
			usleep(50 * 1000);
		assert_int_equal(stat(cg, &st), -1);
		rmdir("/sys/fs/cgroup/forkd-itest");
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jailed_vm_runs_unprivileged),
	    cmocka_unit_test(test_snapshot_and_restore_in_jails),
	    cmocka_unit_test(test_branch_children_inherit_the_jail),
	    cmocka_unit_test(test_bad_jails_are_refused),
	    cmocka_unit_test(test_cgroup_needs_cgroup2),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	if (geteuid() != 0) {
		fprintf(stderr, "itest_jail: forkd-vmm --jail needs root; run as root\n");
		return 1;
	}
	return cmocka_run_group_tests_name("forkd-vmm --jail", tests, setup, teardown);
}
