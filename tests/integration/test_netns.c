/* SPDX-License-Identifier: MIT */
/*
 * VM network namespaces (src/net/, docs/networking.md), natively, without a
 * VM: behind each namespace's tap0 sits a stand-in guest, a namespace of
 * this test with a tap eth0 at 172.16.0.2 and a relay process copying
 * frames between the two taps (what forkd-vmm's virtio-net does with the
 * guest's rings). The guest's TCP server answers with its tag, its own
 * address and its peer's, so the host sees which guest it reached and what
 * the guest saw. Checked: host -> 10.200.S.2:8080 reaches each namespace's
 * guest separately at the same 172.16.0.2; policies none/host/nat; a
 * BRANCH-style move of a guest to a fresh namespace resets its inherited
 * TCP connection while a new one works; errors (collision, no nft, no tun);
 * destroy and the sweep of a killed owner leave nothing behind.
 *
 * Network use: only namespaces and veths this test makes, 198.18.255.0/30
 * (benchmarking range, checked unused here) on its "outside" link; every wait is bounded;
 * everything is removed in teardown, also after a failure.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/netns.h"
#include "net/slots.h"
#include "where.h"

#define GUEST_PORT 8080
#define EXT_PORT   9090
#define HOST_PORT  7070
/* RFC 2544's benchmarking range: ext_start() checks that this machine uses none of it */
#define EXT_NET	 "198.18.0.0/15"
#define EXT_ROOT "198.18.255.1"
#define EXT_ADDR "198.18.255.2"
#define WAIT_MS	 3000

/* A stand-in guest: its namespace, its tap, the relay to a VM namespace's tap, its server. */
struct guest {
	char ns[32];
	int tap;
	int vm_tap;
	pid_t relay, server;
};

/* Test-made names (not forkd-*: the sweep must never see them) and what to kill in teardown. */
static char ext_ns[32], ext_if[16];
static pid_t ext_server;
static struct guest guests[2];
static char vm_ids[4][24];

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	status = system(cmd);
	if (status != 0)
		fail_msg("'%s' failed (status %d)", cmd, status);
}

/* Output of a shell command into buf. */
static void capture(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void capture(char *buf, size_t size, const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	size_t n;
	FILE *p;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	assert_non_null(p);
	n = fread(buf, 1, size - 1, p);
	buf[n] = '\0';
	pclose(p);
}

static int enter_ns(const char *ns)
{
	char path[64];
	int fd, ret;

	snprintf(path, sizeof(path), "/run/netns/%s", ns);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

struct ns_socket {
	const char *ns;
	int fd;
};

static void *ns_socket_thread(void *arg)
{
	struct ns_socket *s = arg;

	s->fd = enter_ns(s->ns);
	if (s->fd == 0)
		s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	return NULL;
}

/* A TCP socket living in namespace ns (NULL: this one); made on a thread that enters it. */
static int socket_in(const char *ns)
{
	struct ns_socket s = {.ns = ns, .fd = -1};
	pthread_t t;

	if (!ns)
		return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_int_equal(pthread_create(&t, NULL, ns_socket_thread, &s), 0);
	pthread_join(t, NULL);
	return s.fd;
}

/* Helper processes die with the test, even when it is killed. */
static void prctl_parent_death(void)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
}

static struct sockaddr_in inet_addr_of(const char *addr, int port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

	inet_pton(AF_INET, addr, &sa.sin_addr);
	return sa;
}

/* Connects fd with a bounded wait: 0 or -errno (ETIMEDOUT, ECONNREFUSED, EHOSTUNREACH...). */
static int connect_bounded(int fd, const char *addr, int port, int timeout_ms)
{
	struct sockaddr_in sa = inet_addr_of(addr, port);
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	int flags = fcntl(fd, F_GETFL), soerr = 0;
	socklen_t len = sizeof(soerr);

	fcntl(fd, F_SETFL, flags | O_NONBLOCK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
		return -errno;
	if (poll(&pfd, 1, timeout_ms) <= 0)
		return -ETIMEDOUT;
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
	fcntl(fd, F_SETFL, flags);
	return -soerr;
}

/* Reads what arrives within timeout_ms (until EOF or a newline): its length, or -errno. */
static int read_bounded(int fd, char *buf, size_t size, int timeout_ms)
{
	size_t used = 0;
	long long end_ms;
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	end_ms = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 + timeout_ms;
	while (used < size - 1) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		long long now;
		ssize_t n;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		now = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000;
		if (now >= end_ms || poll(&pfd, 1, (int)(end_ms - now)) <= 0)
			return -ETIMEDOUT;
		n = read(fd, buf + used, size - 1 - used);
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		used += (size_t)n;
		if (memchr(buf, '\n', used))
			break;
	}
	buf[used] = '\0';
	return (int)used;
}

/*
 * A server in namespace ns (NULL: here) on addr:port: for each connection,
 * each line it reads is answered "<tag> <its address> <peer address> <line>",
 * each connection by a process of its own (they die with the server).
 */
static pid_t start_server(const char *ns, const char *addr, int port, const char *tag)
{
	int ready[2];
	char c = 0;
	pid_t pid;

	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sockaddr_in sa = inet_addr_of(addr, port);
		int one = 1, lfd;

		prctl_parent_death();
		if (ns && enter_ns(ns) < 0)
			_exit(1);
		signal(SIGCHLD, SIG_IGN); /* connection handlers reap themselves */
		lfd = socket(AF_INET, SOCK_STREAM, 0);
		setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 8) < 0)
			_exit(2);
		if (write(ready[1], "r", 1) != 1)
			_exit(3);
		for (;;) {
			struct sockaddr_in peer, self;
			socklen_t plen = sizeof(peer), slen = sizeof(self);
			char line[128], out[256], pa[16], sa_s[16];
			int cfd = accept(lfd, (struct sockaddr *)&peer, &plen);
			ssize_t n;

			if (cfd < 0)
				continue;
			/* one process per connection: a half-open old one must not block new ones
			 */
			if (fork() != 0) {
				close(cfd);
				continue;
			}
			prctl_parent_death();
			close(lfd);
			getsockname(cfd, (struct sockaddr *)&self, &slen);
			inet_ntop(AF_INET, &peer.sin_addr, pa, sizeof(pa));
			inet_ntop(AF_INET, &self.sin_addr, sa_s, sizeof(sa_s));
			while ((n = read(cfd, line, sizeof(line) - 1)) > 0) {
				int len;

				line[n] = '\0';
				line[strcspn(line, "\n")] = '\0';
				len = snprintf(out, sizeof(out), "%s %s %s %s\n", tag, sa_s, pa,
					       line);
				if (write(cfd, out, (size_t)len) != len)
					break;
			}
			_exit(0);
		}
	}
	close(ready[1]);
	if (read(ready[0], &c, 1) != 1)
		fail_msg("server %s in %s did not start", tag, ns ? ns : "the root namespace");
	close(ready[0]);
	return pid;
}

static void stop(pid_t *pid)
{
	if (*pid > 0) {
		kill(*pid, SIGKILL);
		waitpid(*pid, NULL, 0);
	}
	*pid = 0;
}

/* Copies frames both ways between two taps until killed: a VMM's virtio-net, minus the rings. */
static pid_t start_relay(int a, int b)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (pid == 0) {
		struct pollfd pfd[2] = {{.fd = a, .events = POLLIN}, {.fd = b, .events = POLLIN}};
		char frame[65536];

		prctl_parent_death();
		for (;;) {
			if (poll(pfd, 2, -1) < 0)
				continue;
			for (int i = 0; i < 2; i++) {
				ssize_t n;

				if (!(pfd[i].revents & POLLIN))
					continue;
				while ((n = read(pfd[i].fd, frame, sizeof(frame))) > 0) {
					/* a full tap queue drops the frame, as a link would */
					if (write(pfd[1 - i].fd, frame, (size_t)n) < 0 &&
					    errno != EAGAIN)
						_exit(1);
				}
			}
		}
	}
	return pid;
}

/* Attaches guest g to a VM namespace's tap0 (a fresh relay; the old one is stopped). */
static void guest_attach(struct guest *g, const struct fk_netns *vm)
{
	struct fk_err err = {0};

	stop(&g->relay);
	if (g->vm_tap >= 0)
		close(g->vm_tap);
	g->vm_tap = fk_netns_open_tap(vm->name, FK_NET_TAP, 0, &err);
	if (g->vm_tap < 0)
		fail_msg("%s", err.msg);
	g->relay = start_relay(g->tap, g->vm_tap);
}

/* A stand-in guest named fkt<pid>g<k>: 172.16.0.2 behind its eth0, server tag "guest<k>". */
static void guest_start(struct guest *g, int k, const struct fk_netns *vm)
{
	struct fk_err err = {0};
	char tag[16];

	snprintf(g->ns, sizeof(g->ns), "fkt%dg%d", (int)getpid(), k);
	g->vm_tap = -1;
	run("ip netns add %s && ip -n %s link set lo up", g->ns, g->ns);
	g->tap = fk_netns_open_tap(g->ns, "eth0", 0, &err);
	if (g->tap < 0)
		fail_msg("%s", err.msg);
	run("ip -n %s link set eth0 address %s && ip -n %s addr add %s/30 dev eth0 && "
	    "ip -n %s link set eth0 up && ip -n %s route add default via %s",
	    g->ns, FK_NET_GUEST_MAC, g->ns, FK_NET_GUEST_ADDR, g->ns, g->ns, FK_NET_GATEWAY_ADDR);
	snprintf(tag, sizeof(tag), "guest%d", k);
	g->server = start_server(g->ns, "0.0.0.0", GUEST_PORT, tag);
	guest_attach(g, vm);
}

static void guest_stop(struct guest *g)
{
	char cmd[96];

	stop(&g->relay);
	stop(&g->server);
	if (g->vm_tap >= 0)
		close(g->vm_tap);
	if (g->tap > 0)
		close(g->tap);
	g->vm_tap = g->tap = -1;
	if (g->ns[0]) {
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", g->ns);
		if (system(cmd) != 0) {
			/* already gone */
		}
	}
	g->ns[0] = '\0';
}

/*
 * Connects from namespace `from` (NULL: the host) to addr:port, sends a
 * line, returns the answer in buf: 0, or -errno of the connect or read.
 */
static int ask(const char *from, const char *addr, int port, char *buf, size_t size)
{
	int fd = socket_in(from), ret;

	assert_true(fd >= 0);
	ret = connect_bounded(fd, addr, port, WAIT_MS);
	if (ret == 0 && write(fd, "hello\n", 6) != 6)
		ret = -EIO;
	if (ret == 0) {
		ret = read_bounded(fd, buf, size, WAIT_MS);
		ret = ret > 0 ? 0 : ret == 0 ? -ECONNRESET : ret;
	}
	close(fd);
	return ret;
}

/* Everything a namespace had is gone: namespace, veth, slot, record, root table. */
static void assert_gone(const struct fk_netns *vm)
{
	char path[512], out[256];

	snprintf(path, sizeof(path), "/run/netns/%s", vm->name);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/ns-%s", fk_net_dir(), vm->name);
	assert_int_equal(access(path, F_OK), -1);
	if (vm->slot >= 0) {
		assert_int_equal(if_nametoindex(vm->host_if), 0);
		snprintf(path, sizeof(path), "%s/slot-%d", fk_net_dir(), vm->slot);
		assert_int_equal(access(path, F_OK), -1);
		capture(out, sizeof(out), "nft list table ip forkd_%d 2>&1 >/dev/null; echo rc=$?",
			vm->slot);
		assert_non_null(strstr(out, "rc=1"));
	}
}

static void vm_create(int k, enum fk_net_policy policy, struct fk_netns *vm)
{
	struct fk_err err = {0};

	snprintf(vm_ids[k], sizeof(vm_ids[k]), "t%d-%d", (int)getpid(), k);
	if (fk_netns_create(vm_ids[k], policy, 0, vm, &err) < 0)
		fail_msg("fk_netns_create %s: %s", vm_ids[k], err.msg);
}

static void vm_destroy(int k, struct fk_netns *vm)
{
	struct fk_err err = {0};

	if (fk_netns_destroy(vm->name, &err) < 0)
		fail_msg("%s", err.msg);
	vm_ids[k][0] = '\0';
	assert_gone(vm);
}

/* "outside": a namespace of this test at EXT_ADDR, linked to the host's EXT_ROOT. */
static void ext_start(void)
{
	char used[512];

	capture(used, sizeof(used), "ip -o -4 addr show to %s; ip -4 route show root %s", EXT_NET,
		EXT_NET);
	if (used[0])
		fail_msg("this machine already uses %s, which the test's outside link needs: %s",
			 EXT_NET, used);
	snprintf(ext_ns, sizeof(ext_ns), "fkt%dx", (int)getpid());
	snprintf(ext_if, sizeof(ext_if), "fkt%dx", (int)getpid() % 10000000);
	run("ip netns add %s && ip link add %s type veth peer name eth0 netns %s && "
	    "ip addr add %s/30 dev %s && ip link set %s up && "
	    "ip -n %s addr add %s/30 dev eth0 && ip -n %s link set eth0 up",
	    ext_ns, ext_if, ext_ns, EXT_ROOT, ext_if, ext_if, ext_ns, EXT_ADDR, ext_ns);
	/* nat namespaces take this test's link as their uplink, never the machine's */
	setenv("FORKD_NET_UPLINK", ext_if, 1);
	ext_server = start_server(ext_ns, "0.0.0.0", EXT_PORT, "outside");
}

static int setup(void **state)
{
	(void)state;
	memset(guests, 0, sizeof(guests));
	for (int i = 0; i < 2; i++)
		guests[i].tap = guests[i].vm_tap = -1;
	memset(vm_ids, 0, sizeof(vm_ids));
	return 0;
}

static int teardown(void **state)
{
	struct fk_err err = {0};
	char name[128], cmd[128];

	(void)state;
	for (int i = 0; i < 2; i++)
		guest_stop(&guests[i]);
	for (int i = 0; i < 4; i++) {
		if (!vm_ids[i][0])
			continue;
		snprintf(name, sizeof(name), FK_NETNS_PREFIX "%s", vm_ids[i]);
		if (fk_netns_destroy(name, &err) < 0)
			fprintf(stderr, "teardown: %s\n", err.msg);
		vm_ids[i][0] = '\0';
	}
	stop(&ext_server);
	setenv("FORKD_NET_UPLINK", "none", 1);
	if (ext_ns[0]) {
		snprintf(cmd, sizeof(cmd),
			 "ip link del %s 2>/dev/null; ip netns del %s 2>/dev/null", ext_if, ext_ns);
		if (system(cmd) != 0) {
			/* one of them was already gone */
		}
		ext_ns[0] = '\0';
	}
	return 0;
}

/* Two namespaces, the same guest address and MAC in both; the host reaches each separately. */
static void test_two_namespaces_same_guest_address(void **state)
{
	struct fk_netns a, b;
	char want[128], reply[256], out[1024];

	(void)state;
	vm_create(0, FK_NET_HOST, &a);
	vm_create(1, FK_NET_HOST, &b);
	assert_int_not_equal(a.slot, b.slot);
	assert_string_not_equal(a.ns_addr, b.ns_addr);
	guest_start(&guests[0], 0, &a);
	guest_start(&guests[1], 1, &b);

	/* outside view: the namespace holds tap0 at the gateway with the fixed MAC, and veth0 */
	capture(out, sizeof(out), "ip -n %s -br addr; ip -n %s -br link", a.name, a.name);
	assert_non_null(strstr(out, "172.16.0.1/30"));
	assert_non_null(strstr(out, a.ns_addr));
	assert_non_null(strstr(out, FK_NET_GATEWAY_MAC));

	/* inside view: each guest answers as itself, at 172.16.0.2, seeing the host's end */
	assert_int_equal(ask(NULL, a.ns_addr, GUEST_PORT, reply, sizeof(reply)), 0);
	snprintf(want, sizeof(want), "guest0 %s %s hello\n", FK_NET_GUEST_ADDR, a.host_addr);
	assert_string_equal(reply, want);
	assert_int_equal(ask(NULL, b.ns_addr, GUEST_PORT, reply, sizeof(reply)), 0);
	snprintf(want, sizeof(want), "guest1 %s %s hello\n", FK_NET_GUEST_ADDR, b.host_addr);
	assert_string_equal(reply, want);
	/* a port nothing listens on is refused by the guest itself, not dropped */
	assert_int_equal(ask(NULL, a.ns_addr, GUEST_PORT + 1, reply, sizeof(reply)), -ECONNREFUSED);

	guest_stop(&guests[0]);
	guest_stop(&guests[1]);
	vm_destroy(0, &a);
	vm_destroy(1, &b);
}

static void read_sysctl(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");

	assert_non_null(f);
	assert_non_null(fgets(buf, (int)size, f));
	fclose(f);
}

/*
 * host: the guest reaches the host at its gateway (a listener on the
 * root end only), nothing beyond. nat: also the outside, masqueraded.
 */
static void check_policy(enum fk_net_policy policy)
{
	char reply[256], want[128], path[128], fwd[8], global_before[8], global_after[8];
	char uplink_fwd[8], out[2048];
	pid_t host_server;
	struct fk_netns vm;
	int ret;

	read_sysctl("/proc/sys/net/ipv4/ip_forward", global_before, sizeof(global_before));
	ext_start();
	vm_create(0, policy, &vm);
	guest_start(&guests[0], 0, &vm);
	host_server = start_server(NULL, vm.host_addr, HOST_PORT, "host");

	assert_int_equal(ask(guests[0].ns, FK_NET_GATEWAY_ADDR, HOST_PORT, reply, sizeof(reply)),
			 0);
	snprintf(want, sizeof(want), "host %s %s hello\n", vm.host_addr, vm.ns_addr);
	assert_string_equal(reply, want);

	ret = ask(guests[0].ns, EXT_ADDR, EXT_PORT, reply, sizeof(reply));
	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/forwarding", vm.host_if);
	read_sysctl(path, fwd, sizeof(fwd));
	snprintf(path, sizeof(path), "/proc/sys/net/ipv4/conf/%s/forwarding", ext_if);
	read_sysctl(path, uplink_fwd, sizeof(uplink_fwd));
	if (policy == FK_NET_NAT) {
		assert_int_equal(ret, 0);
		snprintf(want, sizeof(want), "outside %s %s hello\n", EXT_ADDR, EXT_ROOT);
		assert_string_equal(reply, want);
		assert_string_equal(fwd, "1\n");
		/* the uplink forwards while a nat namespace exists, guarded */
		assert_string_equal(uplink_fwd, "1\n");
		capture(out, sizeof(out), "nft list table ip forkd_uplink 2>&1");
		assert_non_null(strstr(out, ext_if));
		/* nothing from outside reaches the guest, even with a route to it */
		run("ip -n %s route add 10.200.0.0/16 via %s", ext_ns, EXT_ROOT);
		assert_int_not_equal(ask(ext_ns, vm.ns_addr, GUEST_PORT, reply, sizeof(reply)), 0);
	} else {
		assert_string_equal(uplink_fwd, "0\n");
		/* refused at the namespace's forward chain (admin-prohibited), not left to time out
		 */
		assert_int_equal(ret, -EHOSTUNREACH);
		assert_string_equal(fwd, "0\n");
	}
	/* the host still reaches the guest */
	assert_int_equal(ask(NULL, vm.ns_addr, GUEST_PORT, reply, sizeof(reply)), 0);
	read_sysctl("/proc/sys/net/ipv4/ip_forward", global_after, sizeof(global_after));
	assert_string_equal(global_before, global_after);

	stop(&host_server);
	guest_stop(&guests[0]);
	vm_destroy(0, &vm);
	/* the last nat namespace gone: the uplink is as it was, its guard gone */
	read_sysctl(path, uplink_fwd, sizeof(uplink_fwd));
	assert_string_equal(uplink_fwd, "0\n");
	capture(out, sizeof(out), "nft list table ip forkd_uplink >/dev/null 2>&1; echo rc=$?");
	assert_string_equal(out, "rc=1\n");
}

static void test_policy_host(void **state)
{
	(void)state;
	check_policy(FK_NET_HOST);
}

static void test_policy_nat(void **state)
{
	(void)state;
	check_policy(FK_NET_NAT);
}

/* none: a namespace with lo alone: no tap, no veth, no slot, no route. */
static void test_policy_none(void **state)
{
	struct fk_netns vm;
	char out[1024];

	(void)state;
	vm_create(0, FK_NET_NONE, &vm);
	assert_int_equal(vm.slot, -1);
	capture(out, sizeof(out), "ip -n %s -o link | awk '{print $2}'; ip -n %s route", vm.name,
		vm.name);
	assert_string_equal(out, "lo:\n");
	vm_destroy(0, &vm);
}

/*
 * A BRANCH child's view: the guest (its sockets and all) moves from the
 * source's namespace to a fresh one with the same addresses. Its connection
 * made in the source's namespace is reset on its next segment; a new
 * connection works; the host reaches it at the new namespace's address.
 */
static void test_branch_child_resets_inherited_connection(void **state)
{
	struct fk_netns src, child;
	char reply[256], want[128], out[2048], *counter;
	int fd, ret;

	(void)state;
	ext_start();
	vm_create(0, FK_NET_NAT, &src);
	guest_start(&guests[0], 0, &src);
	fd = socket_in(guests[0].ns);
	assert_int_equal(connect_bounded(fd, EXT_ADDR, EXT_PORT, WAIT_MS), 0);
	assert_int_equal(write(fd, "one\n", 4), 4);
	assert_true(read_bounded(fd, reply, sizeof(reply), WAIT_MS) > 0);
	assert_string_equal(reply, "outside " EXT_ADDR " " EXT_ROOT " one\n");

	vm_create(1, FK_NET_NAT, &child);
	guest_attach(&guests[0], &child);
	assert_int_equal(write(fd, "two\n", 4), 4);
	ret = read_bounded(fd, reply, sizeof(reply), WAIT_MS);
	assert_int_equal(ret, -ECONNRESET);
	close(fd);
	/* reset by the child namespace's rule, not by whoever was at the other end */
	capture(out, sizeof(out), "ip netns exec %s nft list chain ip forkd forward", child.name);
	counter = strstr(out, "counter packets ");
	assert_non_null(counter);
	assert_non_null(strstr(counter, "reject with tcp reset"));
	assert_true(atoi(counter + strlen("counter packets ")) >= 1);

	assert_int_equal(ask(guests[0].ns, EXT_ADDR, EXT_PORT, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "outside " EXT_ADDR " " EXT_ROOT " hello\n");
	assert_int_equal(ask(NULL, child.ns_addr, GUEST_PORT, reply, sizeof(reply)), 0);
	snprintf(want, sizeof(want), "guest0 %s %s hello\n", FK_NET_GUEST_ADDR, child.host_addr);
	assert_string_equal(reply, want);
	/* the source's address no longer leads to this guest */
	assert_int_not_equal(ask(NULL, src.ns_addr, GUEST_PORT, reply, sizeof(reply)), 0);

	guest_stop(&guests[0]);
	vm_destroy(0, &src);
	vm_destroy(1, &child);
}

/* Errors name the input and what was expected, and leave nothing behind. */
static void test_errors(void **state)
{
	struct fk_netns vm, other;
	struct fk_err err = {0};
	char id[32], name[64], path[128];

	(void)state;
	vm_create(0, FK_NET_HOST, &vm);
	assert_int_equal(fk_netns_create(vm_ids[0], FK_NET_HOST, 0, &other, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "name collision"));
	assert_non_null(strstr(err.msg, "in use by pid"));
	vm_destroy(0, &vm);

	/* a namespace of that name that forkd did not make */
	snprintf(id, sizeof(id), "t%d-9", (int)getpid());
	snprintf(name, sizeof(name), FK_NETNS_PREFIX "%s", id);
	run("ip netns add %s", name);
	assert_int_equal(fk_netns_create(id, FK_NET_HOST, 0, &other, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "forkd has no record of it"));
	/* and destroy leaves what is not forkd's alone */
	assert_int_equal(fk_netns_destroy(name, &err), 0);
	snprintf(path, sizeof(path), "/run/netns/%s", name);
	assert_int_equal(access(path, F_OK), 0);
	run("ip netns del %s", name);

	assert_int_equal(fk_netns_create("Bad/Name", FK_NET_HOST, 0, &other, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "'Bad/Name'"));

	setenv("FORKD_NFT", "/nonexistent/nft", 1);
	assert_int_equal(fk_netns_create(id, FK_NET_NAT, 0, &other, &err), -ENOENT);
	unsetenv("FORKD_NFT");
	assert_non_null(strstr(err.msg, "nft not found"));
	assert_non_null(strstr(err.msg, "install nftables"));

	setenv("FORKD_NET_TUN", "/nonexistent/tun", 1);
	assert_int_equal(fk_netns_create(id, FK_NET_HOST, 0, &other, &err), -ENODEV);
	unsetenv("FORKD_NET_TUN");
	assert_non_null(strstr(err.msg, "tun device /nonexistent/tun missing"));

	/* an nft that fails mid-way: everything made before it is removed */
	setenv("FORKD_NFT", "/bin/false", 1);
	other.slot = -1;
	assert_int_equal(fk_netns_create(id, FK_NET_NAT, 0, &other, &err), -EIO);
	unsetenv("FORKD_NFT");
	assert_non_null(strstr(err.msg, "nftables in"));
	assert_gone(&other);
	snprintf(name, sizeof(name), "/run/netns/" FK_NETNS_PREFIX "%s", id);
	assert_int_equal(access(name, F_OK), -1);
}

/*
 * A namespace whose owner was SIGKILLed is removed by the next sweep, even
 * while the owner is still an unreaped zombie (kill(pid, 0) succeeds on one);
 * a live owner's is kept.
 */
static void test_sweep_after_kill(void **state)
{
	struct fk_netns dead, live;
	struct fk_err err = {0};
	pid_t owner;
	int swept;

	(void)state;
	owner = fork();
	assert_true(owner >= 0);
	if (owner == 0) {
		prctl_parent_death();
		pause();
		_exit(0);
	}
	snprintf(vm_ids[0], sizeof(vm_ids[0]), "t%d-0", (int)getpid());
	if (fk_netns_create(vm_ids[0], FK_NET_NAT, owner, &dead, &err) < 0)
		fail_msg("%s", err.msg);
	vm_create(1, FK_NET_HOST, &live);
	kill(owner, SIGKILL);
	/* Wait for it to exit but leave it a zombie (WNOWAIT): reaped only after the sweep. */
	assert_int_equal(waitid(P_PID, owner, &(siginfo_t){0}, WEXITED | WNOWAIT), 0);

	swept = fk_netns_sweep(&err);
	waitpid(owner, NULL, 0);
	if (swept < 0)
		fail_msg("%s", err.msg);
	assert_true(swept >= 1);
	assert_gone(&dead);
	vm_ids[0][0] = '\0';
	assert_int_equal(access("/run/netns/", F_OK), 0);
	assert_true(if_nametoindex(live.host_if) != 0);
	vm_destroy(1, &live);
}

/* Creation and destruction cost, measured and printed (no timing threshold: a loaded machine
 * varies). */
static void test_create_destroy_time(void **state)
{
	struct timespec t0, t1, t2;
	struct fk_netns vm;
	long create_us, destroy_us;

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	vm_create(0, FK_NET_NAT, &vm);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	vm_destroy(0, &vm);
	clock_gettime(CLOCK_MONOTONIC, &t2);
	create_us = (t1.tv_sec - t0.tv_sec) * 1000000L + (t1.tv_nsec - t0.tv_nsec) / 1000;
	destroy_us = (t2.tv_sec - t1.tv_sec) * 1000000L + (t2.tv_nsec - t1.tv_nsec) / 1000;
	printf("netns nat: create %ld us, destroy %ld us\n", create_us, destroy_us);
	assert_true(create_us > 0 && destroy_us > 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_two_namespaces_same_guest_address, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_policy_host, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_policy_nat, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_policy_none, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_branch_child_resets_inherited_connection, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep_after_kill, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_destroy_time, setup, teardown),
	};
	if (where_begin(argc, argv, NEEDS_NOTHING, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	/* no test touches this machine's uplink: ext_start() names the test's own */
	setenv("FORKD_NET_UPLINK", "none", 1);
	if (geteuid() != 0) {
		fprintf(stderr, "itest_netns: needs root (network namespaces, veths, nftables)\n");
		return 1;
	}
	return cmocka_run_group_tests_name("VM network namespaces (src/net)", tests, NULL, NULL);
}
