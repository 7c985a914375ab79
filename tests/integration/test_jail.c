/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm --jail with the probe guest: the VMM runs as nobody with every
 * capability set empty, in its own mount/ipc/uts/network namespaces rooted
 * at the jail (checked from outside, in /proc/PID), and the guest still
 * works (pattern verified and touch from inside); snapshot and restore
 * inside jails; BRANCH children inherit the jail and still make their
 * files; a jailed VM with --net-policy gets its tap from the network
 * broker (the VM in an empty namespace of its own, its guest echoing frames
 * on its forkd-<id>'s tap0, and each BRANCH child likewise in a namespace
 * of its own), and the broker serves each asker only its own namespace, with
 * a tap fd usable as nobody; bad jails and unusable paths fail with errors naming them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/if_packet.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "net/net_broker.h"
#include "net/netns.h"
#include "probe_cases.h"
#include "tap_frames.h"
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

/* After a failed net test: its VMMs (they hold namespaces) killed, their namespaces swept. */
static int kill_vmms_and_sweep(void **state)
{
	struct fk_err err = {0};
	pid_t pids[64];
	size_t n;

	(void)state;
	n = harness_vmm_pids(dir, pids, 64);
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 100 && kill(pids[i], 0) == 0; k++)
			usleep(10000);
	if (fk_netns_sweep(&err) < 0)
		fprintf(stderr, "teardown: %s\n", err.msg);
	return 0;
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

/* ---- --net-policy in a jail: the tap from the network broker ---- */

static bool netns_exists(const char *ns)
{
	char path[128];

	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	return access(path, F_OK) == 0;
}

static void expect_netns_gone(const char *ns)
{
	long long deadline = harness_deadline(5000);

	while (netns_exists(ns) && now_ms() < deadline)
		usleep(20000);
	if (netns_exists(ns))
		fail_msg("namespace %s still exists", ns);
}

/*
 * A jailed VM with --net-policy, seen from outside: status names its
 * namespace forkd-p<pid>; the VMM itself is in another one (empty, its
 * own: the tap fd needs none), has no /dev/net/tun in its jail, and holds
 * exactly one tun fd (the tap the broker passed); the guest negotiated
 * offloads, i.e. TUNSETOFFLOAD worked on that fd as nobody.
 */
static void expect_jailed_net(pid_t pid, const char *sock, char *ns, size_t ns_len, char *addr,
			      size_t addr_len)
{
	char want[64], path[300], link[300];
	struct stat st, nst;
	json_t *r = call(sock, "{\"cmd\":\"status\"}", true);
	int tun_fds = 0;
	DIR *d;
	struct dirent *de;

	snprintf(want, sizeof(want), FK_NETNS_PREFIX "p%d", (int)pid);
	assert_string_equal(json_string_value(json_object_get(r, "net_netns")), want);
	assert_string_equal(json_string_value(json_object_get(r, "net_tap")), FK_NET_TAP);
	assert_true(json_is_true(json_object_get(r, "net_link_up")));
	assert_int_equal(json_integer_value(json_object_get(r, "net_errors")), 0);
	if (json_integer_value(json_object_get(r, "net_offloads")) == 0)
		fail_msg("pid %d: no tap offloads set (TUNSETOFFLOAD as nobody failed?): %s",
			 (int)pid, json_string_value(json_object_get(r, "net_last_error")));
	snprintf(ns, ns_len, "%s", want);
	snprintf(addr, addr_len, "%s", json_string_value(json_object_get(r, "net_host_addr")));
	json_decref(r);

	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	assert_int_equal(stat(path, &st), 0);
	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	assert_int_equal(stat(path, &nst), 0);
	if (st.st_ino == nst.st_ino)
		fail_msg("pid %d runs in %s itself; expected a namespace of its own", (int)pid, ns);
	snprintf(path, sizeof(path), "/proc/%d/root/dev/net/tun", (int)pid);
	assert_int_equal(stat(path, &st), -1);
	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((de = readdir(d))) {
		char fdpath[600];
		ssize_t n;

		snprintf(fdpath, sizeof(fdpath), "%s/%s", path, de->d_name);
		n = readlink(fdpath, link, sizeof(link) - 1);
		if (n > 0) {
			link[n] = '\0';
			tun_fds += strcmp(link, "/dev/net/tun") == 0;
		}
	}
	closedir(d);
	assert_int_equal(tun_fds, 1);
}

static void test_jailed_vm_with_net_policy(void **state)
{
	char jail[300], run[300], sock[400], bdir[400], req[600], csock[2][700];
	char ns[3][64], addr[3][16], tag[16];
	int fd[3];
	struct vmm_proc p;
	json_t *r, *kids;
	pid_t pids[2];

	(void)state;
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	/* host: a nat namespace would switch on forwarding for this machine's uplink */
	probe_start(&p, NULL, "128M", "1", "work=net net_tx=0 net_offload=1", "--net-policy",
		    "host", "--jail", jail, "--control", sock, NULL);
	need_line(&p, "READY");
	need_line(&p, "net.ready");
	expect_jailed(p.pid, jail);
	expect_jailed_net(p.pid, sock, ns[2], sizeof(ns[2]), addr[2], sizeof(addr[2]));
	fd[2] = tap_frames_socket(ns[2]);
	tap_frames_echo_check(fd[2], "source", 5000);

	snprintf(bdir, sizeof(bdir), "%s/b", run);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":2,\"dir\":\"%s\"}", bdir);
	r = call(sock, req, true);
	kids = json_object_get(r, "children");
	assert_int_equal(json_array_size(kids), 2);
	for (int i = 0; i < 2; i++) {
		json_t *c = json_array_get(kids, (size_t)i);

		pids[i] = (pid_t)json_integer_value(json_object_get(c, "pid"));
		snprintf(csock[i], sizeof(csock[i]), "%s/control.sock",
			 json_string_value(json_object_get(c, "dir")));
	}
	json_decref(r);
	for (int i = 0; i < 2; i++) {
		expect_jailed(pids[i], jail);
		expect_jailed_net(pids[i], csock[i], ns[i], sizeof(ns[i]), addr[i],
				  sizeof(addr[i]));
		for (int j = 0; j <= 2; j++)
			if (j != i && (j == 2 || j < i))
				assert_string_not_equal(addr[i], addr[j]);
		fd[i] = tap_frames_socket(ns[i]);
		snprintf(tag, sizeof(tag), "child%d", i);
		tap_frames_echo_check(fd[i], tag, 5000);
	}
	tap_frames_echo_check(fd[2], "source-after", 5000);

	/* each VMM takes its namespace with it, through the broker */
	for (int i = 0; i < 2; i++) {
		json_decref(call(csock[i], "{\"cmd\":\"shutdown\"}", true));
		expect_netns_gone(ns[i]);
	}
	assert_true(netns_exists(ns[2]));
	shutdown_vm(&p, sock);
	expect_netns_gone(ns[2]);
	for (int i = 0; i < 3; i++)
		close(fd[i]);
}

/* A jailed VM restored with --net-policy: a namespace of its own, the tap from before the jail. */
static void test_jailed_restore_with_net_policy(void **state)
{
	char jail[300], run[300], sock[400], snap[400], req[600], overlay[400];
	char jail2[300], run2[300], sock2[400], ns[2][64], addr[2][16];
	struct vmm_proc p, q;
	int fd;

	(void)state;
	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(sock, sizeof(sock), "%s/c.sock", run);
	probe_start(&p, NULL, "128M", "1", "work=net net_tx=0 net_offload=1", "--net-policy",
		    "host", "--jail", jail, "--control", sock, NULL);
	need_line(&p, "net.ready");
	expect_jailed_net(p.pid, sock, ns[0], sizeof(ns[0]), addr[0], sizeof(addr[0]));
	snprintf(snap, sizeof(snap), "%s/snap", run);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	json_decref(call(sock, req, true));
	shutdown_vm(&p, sock);
	expect_netns_gone(ns[0]);

	fresh(jail2, sizeof(jail2), run2, sizeof(run2));
	snprintf(sock2, sizeof(sock2), "%s/c.sock", run2);
	snprintf(overlay, sizeof(overlay), "%s/overlay", run2);
	{
		char *argv[] = {(char *)harness_vmm(),
				"--restore",
				snap,
				"--overlay-dir",
				overlay,
				"--net-policy",
				"host",
				"--control",
				sock2,
				"--jail",
				jail2,
				NULL};
		assert_int_equal(vmm_start(&q, argv), 0);
	}
	for (long long deadline = harness_deadline(TIMEOUT_MS);
	     access(sock2, F_OK) != 0 && now_ms() < deadline;)
		usleep(20000);
	expect_jailed(q.pid, jail2);
	expect_jailed_net(q.pid, sock2, ns[1], sizeof(ns[1]), addr[1], sizeof(addr[1]));
	fd = tap_frames_socket(ns[1]);
	tap_frames_echo_check(fd, "restored", 5000);
	close(fd);
	shutdown_vm(&q, sock2);
	expect_netns_gone(ns[1]);
}

/* After a failed broker test: its namespace removed (its owner, this process, is alive). */
static int remove_broker_test_netns(void **state)
{
	struct fk_err err = {0};
	char name[64];

	(void)state;
	snprintf(name, sizeof(name), FK_NETNS_PREFIX "jb%d", (int)getpid());
	if (fk_netns_destroy(name, &err) < 0)
		fprintf(stderr, "teardown: %s\n", err.msg);
	return 0;
}

/*
 * The broker itself (this binary run again, see main): a namespace is made
 * only for the process asking, with its tap open; the fd works for a
 * process that dropped to nobody with no capabilities (TUNSETOFFLOAD,
 * TUNGETIFF); another process cannot remove it; its owner can.
 */
static void test_broker_serves_only_the_asker(void **state)
{
	struct fk_netns ns;
	struct fk_err err = {0};
	int broker = -1, tap = -1, status;
	char id[32], name[64];
	pid_t kid;

	(void)state;
	snprintf(id, sizeof(id), "jb%d", (int)getpid());
	snprintf(name, sizeof(name), FK_NETNS_PREFIX "%s", id);
	assert_int_equal(net_broker_start(&broker, &err), 0);
	if (net_broker_create(broker, id, FK_NET_HOST, getppid(), &ns, &tap, &err) != -EPERM ||
	    !strstr(err.msg, "a process may ask only for its own"))
		fail_msg("a namespace for another pid: '%s', expected a refusal", err.msg);
	assert_int_equal(tap, -1);
	assert_false(netns_exists(name));

	if (net_broker_create(broker, id, FK_NET_HOST, getpid(), &ns, &tap, &err) < 0)
		fail_msg("broker create: %s", err.msg);
	assert_string_equal(ns.name, name);
	assert_true(tap >= 0);
	assert_true(netns_exists(name));
	kid = fork();
	assert_true(kid >= 0);
	if (kid == 0) {
		struct ifreq ifr = {0};
		struct fk_err e = {0};

		/* root to nobody without keepcaps: every capability is gone */
		if (setgroups(0, NULL) < 0 || setresgid(NOBODY, NOBODY, NOBODY) < 0 ||
		    setresuid(NOBODY, NOBODY, NOBODY) < 0)
			_exit(10);
		if (ioctl(tap, TUNSETOFFLOAD, (unsigned long)TUN_F_CSUM) < 0)
			_exit(11);
		if (ioctl(tap, TUNGETIFF, &ifr) < 0 || strcmp(ifr.ifr_name, FK_NET_TAP) != 0 ||
		    !(ifr.ifr_flags & IFF_VNET_HDR) || !(ifr.ifr_flags & IFF_NO_PI))
			_exit(12);
		if (net_broker_destroy(broker, name, &e) != -EPERM ||
		    !strstr(e.msg, "a process may remove only its own"))
			_exit(13);
		_exit(0);
	}
	assert_int_equal(waitpid(kid, &status, 0), kid);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		fail_msg("the unprivileged holder of the tap failed at step %d (status 0x%x: 11 "
			 "TUNSETOFFLOAD, 12 TUNGETIFF, 13 the refusal to remove another's)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1, status);
	assert_true(netns_exists(name));
	if (net_broker_destroy(broker, name, &err) < 0)
		fail_msg("broker destroy: %s", err.msg);
	assert_false(netns_exists(name));
	close(tap);
	close(broker);
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
	/* test_broker_serves_only_the_asker's broker: this binary run again */
	if (argc == 2 && strcmp(argv[1], NET_BROKER_ARG) == 0)
		return net_broker_main(NET_BROKER_FD);
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_jailed_vm_runs_unprivileged),
	    cmocka_unit_test(test_snapshot_and_restore_in_jails),
	    cmocka_unit_test(test_branch_children_inherit_the_jail),
	    cmocka_unit_test_teardown(test_jailed_vm_with_net_policy, kill_vmms_and_sweep),
	    cmocka_unit_test_teardown(test_jailed_restore_with_net_policy, kill_vmms_and_sweep),
	    cmocka_unit_test_teardown(test_broker_serves_only_the_asker, remove_broker_test_netns),
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
