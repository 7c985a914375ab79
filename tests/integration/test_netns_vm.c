/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm with --net-policy (src/net/vm_netns.c, docs/networking.md),
 * through the probe guest's virtio-net driver: the VMM makes its own
 * namespace forkd-p<pid> with the guest's device on its tap0; a BRANCH
 * makes every child a namespace of its own (distinct host address, the
 * guest's MAC unchanged) before the child runs; each child's guest echoes
 * frames sent on its own namespace's tap0 and nothing of it reaches the
 * source's; namespaces go when their VMM exits, and the namespace of a
 * SIGKILLed VMM is removed by the next --net-policy VMM's sweep.
 *
 * The host end of each tap is an AF_PACKET socket inside that namespace
 * (ethertype 0x88b5 only): this machine's own network is never touched.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "net/netns.h"
#include "probe_cases.h"
#include "tap_frames.h"
#include "where.h"

#define BOOT_TIMEOUT_MS	 20000
#define FRAME_TIMEOUT_MS 5000
#define CHILDREN	 2

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "netns-vm");
}

static int teardown(void **state)
{
	struct fk_err err = {0};
	pid_t pids[64];
	size_t n;

	(void)state;
	/* a failed test may leave VMMs (and with them namespaces) behind */
	n = harness_vmm_pids(dir, pids, 64);
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (size_t i = 0; i < n; i++)
		for (int k = 0; k < 100 && kill(pids[i], 0) == 0; k++)
			usleep(10000);
	if (fk_netns_sweep(&err) < 0)
		fprintf(stderr, "teardown: %s\n", err.msg);
	return harness_tmpdir_remove(dir);
}

static json_t *control(const char *sock, const char *req)
{
	json_t *r = harness_call_expect(sock, req, true);

	assert_non_null(r);
	return r;
}

/* status's net_netns and net_host_addr into ns/addr. */
static void net_status(const char *sock, char *ns, size_t ns_size, char *addr, size_t addr_size)
{
	json_t *st = control(sock, "{\"cmd\":\"status\"}");
	const char *n = json_string_value(json_object_get(st, "net_netns"));
	const char *a = json_string_value(json_object_get(st, "net_host_addr"));

	assert_non_null(n);
	assert_non_null(a);
	assert_true(json_is_true(json_object_get(st, "net_link_up")));
	assert_string_equal(json_string_value(json_object_get(st, "net_mac")), FK_NET_GUEST_MAC);
	assert_string_equal(json_string_value(json_object_get(st, "net_tap")), FK_NET_TAP);
	snprintf(ns, ns_size, "%s", n);
	snprintf(addr, addr_size, "%s", a);
	json_decref(st);
}

static bool netns_exists(const char *ns)
{
	char path[128];

	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	return access(path, F_OK) == 0;
}

/* Waits (bounded) until namespace ns is gone. */
static void expect_netns_gone(const char *ns)
{
	long long deadline = harness_deadline(5000);

	while (netns_exists(ns) && now_ms() < deadline)
		usleep(20000);
	if (netns_exists(ns))
		fail_msg("namespace %s still exists", ns);
}

static void vm_start(struct vmm_proc *p, const char *sock, const char *policy)
{
	probe_start(p, NULL, "128M", "1", "work=net net_tx=0", "--net-policy", policy, "--control",
		    sock, NULL);
	probe_need_line(p, "READY", BOOT_TIMEOUT_MS);
	probe_need_line(p, "net.ready", BOOT_TIMEOUT_MS);
}

/* Every BRANCH child gets a namespace, tap and address of its own; the guest's MAC stays. */
static void test_branch_children_get_own_namespaces(void **state)
{
	char sock[300], req[600], ns[CHILDREN + 1][64], addr[CHILDREN + 1][16], want[64];
	char csock[CHILDREN][700], out[512];
	int fd[CHILDREN + 1];
	uint8_t f[2048];
	struct vmm_proc p;
	json_t *reply, *children;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/c.sock", dir);
	/* host: a nat namespace would switch on forwarding for this machine's uplink */
	vm_start(&p, sock, "host");
	net_status(sock, ns[CHILDREN], sizeof(ns[0]), addr[CHILDREN], sizeof(addr[0]));
	snprintf(want, sizeof(want), FK_NETNS_PREFIX "p%d", (int)p.pid);
	assert_string_equal(ns[CHILDREN], want);
	fd[CHILDREN] = tap_frames_socket(ns[CHILDREN]);
	tap_frames_echo_check(fd[CHILDREN], "source", FRAME_TIMEOUT_MS);

	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":%d,\"dir\":\"%s/b\"}", CHILDREN, dir);
	reply = control(sock, req);
	children = json_object_get(reply, "children");
	assert_int_equal(json_array_size(children), CHILDREN);
	for (int i = 0; i < CHILDREN; i++) {
		json_t *c = json_array_get(children, (size_t)i);
		char tag[16];

		snprintf(csock[i], sizeof(csock[i]), "%s/control.sock",
			 json_string_value(json_object_get(c, "dir")));
		net_status(csock[i], ns[i], sizeof(ns[i]), addr[i], sizeof(addr[i]));
		snprintf(want, sizeof(want), FK_NETNS_PREFIX "p%d",
			 (int)json_integer_value(json_object_get(c, "pid")));
		assert_string_equal(ns[i], want);
		for (int j = 0; j < i; j++)
			assert_string_not_equal(addr[i], addr[j]);
		assert_string_not_equal(addr[i], addr[CHILDREN]);
		/* the child's namespace has its rules (the reset of inherited connections) */
		snprintf(req, sizeof(req),
			 "ip netns exec %s nft list chain ip forkd forward 2>&1 | grep -c 'reject "
			 "with tcp reset'",
			 ns[i]);
		FILE *pipe = popen(req, "r");
		assert_non_null(pipe);
		assert_non_null(fgets(out, sizeof(out), pipe));
		pclose(pipe);
		assert_string_equal(out, "1\n");
		fd[i] = tap_frames_socket(ns[i]);
		snprintf(tag, sizeof(tag), "child%d", i);
		tap_frames_echo_check(fd[i], tag, FRAME_TIMEOUT_MS);
	}
	/* nothing of the children's reached the source's tap, and the source still answers */
	assert_int_equal(tap_frames_recv(fd[CHILDREN], f, sizeof(f), 300), -1);
	tap_frames_echo_check(fd[CHILDREN], "source-after", FRAME_TIMEOUT_MS);
	json_decref(reply);

	/* a child that exits takes its namespace with it; the others stay */
	json_decref(control(csock[0], "{\"cmd\":\"shutdown\"}"));
	expect_netns_gone(ns[0]);
	assert_true(netns_exists(ns[1]));
	assert_true(netns_exists(ns[CHILDREN]));
	json_decref(control(csock[1], "{\"cmd\":\"shutdown\"}"));
	expect_netns_gone(ns[1]);
	vmm_send(&p, "poweroff\n");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
	expect_netns_gone(ns[CHILDREN]);
	for (int i = 0; i <= CHILDREN; i++)
		close(fd[i]);
}

/* A SIGKILLed VMM cannot clean up: the next --net-policy VMM's sweep removes its namespace. */
static void test_killed_vmm_swept_by_next(void **state)
{
	char sock[300], sock2[300], ns[64], ns2[64], addr[16];
	struct vmm_proc p, q;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/k.sock", dir);
	vm_start(&p, sock, "host");
	net_status(sock, ns, sizeof(ns), addr, sizeof(addr));
	vmm_kill(&p);
	vmm_free(&p);
	assert_true(netns_exists(ns));

	snprintf(sock2, sizeof(sock2), "%s/k2.sock", dir);
	vm_start(&q, sock2, "host");
	expect_netns_gone(ns);
	net_status(sock2, ns2, sizeof(ns2), addr, sizeof(addr));
	vmm_send(&q, "poweroff\n");
	probe_expect_exit(&q, 0, BOOT_TIMEOUT_MS);
	vmm_free(&q);
	expect_netns_gone(ns2);
}

/* A VM restored from a snapshot gets a namespace of its own too, its guest's MAC unchanged. */
static void test_restore_gets_own_namespace(void **state)
{
	char sock[300], rsock[300], req[600], ns[64], rns[64], addr[16], raddr[16];
	char *argv[] = {(char *)harness_vmm(), "--restore", NULL,	"--net-policy", "host",
			"--control",	       rsock,	    "--serial", "none",		NULL};
	char snap[300];
	struct vmm_proc p, r;
	int fd;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/s.sock", dir);
	snprintf(rsock, sizeof(rsock), "%s/r.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	argv[2] = snap;
	vm_start(&p, sock, "host");
	net_status(sock, ns, sizeof(ns), addr, sizeof(addr));
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	json_decref(control(sock, req));

	assert_int_equal(vmm_start(&r, argv), 0);
	for (long long deadline = harness_deadline(BOOT_TIMEOUT_MS);
	     access(rsock, F_OK) != 0 && now_ms() < deadline;)
		usleep(20000);
	net_status(rsock, rns, sizeof(rns), raddr, sizeof(raddr));
	assert_string_not_equal(rns, ns);
	assert_string_not_equal(raddr, addr);
	fd = tap_frames_socket(rns);
	tap_frames_echo_check(fd, "restored", FRAME_TIMEOUT_MS);
	close(fd);
	json_decref(control(rsock, "{\"cmd\":\"shutdown\"}"));
	assert_true(vmm_wait(&r, BOOT_TIMEOUT_MS) >= 0);
	vmm_free(&r);
	expect_netns_gone(rns);
	vmm_send(&p, "poweroff\n");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
	expect_netns_gone(ns);
}

/* Bad input to --net-policy: a usage error naming it. */
static void test_bad_policy(void **state)
{
	char *argv1[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
			 "--net-policy",	"open",	    NULL};
	char *argv2[] = {(char *)harness_vmm(), "--kernel",	  (char *)harness_probe(),
			 "--net-policy",	"host,id=Bad_Id", NULL};
	char *argv3[] = {(char *)harness_vmm(),
			 "--kernel",
			 (char *)harness_probe(),
			 "--net-policy",
			 "host",
			 "--net",
			 "tap=x",
			 NULL};
	char *const *cases[] = {argv1, argv2, argv3};
	const char *want[] = {"network policy 'open': expected none, host or nat",
			      "network namespace id 'Bad_Id'",
			      "the policy makes the namespace and its tap itself"};

	(void)state;
	for (int i = 0; i < 3; i++) {
		struct vmm_proc p;
		int status;

		assert_int_equal(vmm_start(&p, cases[i]), 0);
		status = vmm_wait(&p, 10000);
		if (!strstr(p.err_text, want[i]))
			fail_msg("case %d: stderr '%s', expected '%s'", i, p.err_text, want[i]);
		assert_int_equal(status, 2);
		vmm_free(&p);
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_branch_children_get_own_namespaces, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_killed_vmm_swept_by_next, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restore_gets_own_namespace, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_policy, setup, teardown),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("forkd-vmm --net-policy (probe guest)", tests, NULL,
					   NULL);
}
