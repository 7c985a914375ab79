/* SPDX-License-Identifier: MIT */
/*
 * Per-VM and per-child network namespaces with a stock Linux guest
 * (docs/networking.md): forkd-vmm --net-policy makes the namespace, the guest
 * configures eth0 itself from forkd.net= (guest/init/forkd-init.c), the
 * agent runs commands in it over vsock.
 *
 * - BRANCH into 4 children with identical guest IPs: one busybox httpd
 *   started in the source serves a CGI printing the hostname; each child
 *   (hostname reset by its fork notification) answers at its own
 *   10.200.S.2:8080 with its own hostname, the source still with its own;
 * - a TCP connection from the source's guest to a server this test runs on
 *   the source's host address is reset in each child once the child sends on
 *   it (the guest's EstabResets counter moves, the namespace's reset rule
 *   counts it, the server never sees the child's bytes), the source's
 *   connection carries on, and a new connection from each child works;
 * - forkd-vmm's forkd.net= (for host) configures the guest's eth0 and route;
 * - a VM with policy none has no eth0 and no route, and a connect fails at
 *   once with "Network is unreachable".
 *
 * The guest fetching a file over HTTP from its VM's namespace is
 * itest_net_linux. All traffic stays in the namespaces forkd makes for these
 * VMs; every wait is bounded. needs=linux: natively with hardware
 * virtualization, else in the nested test host.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "forkd/agent_proto.h"
#include "harness.h"
#include "where.h"

/* Generous: in the nested test host every guest instruction may be emulated. */
#define BOOT_TIMEOUT_MS 180000
#define AGENT_WAIT_MS	90000
#define CONNECT_MS	10000
#define NET_WAIT_MS	30000
#define KIDS		4
#define HTTP_PORT	8080
/* The test's server on the host side, reached by the guest at its gateway 172.16.0.1. */
#define HOST_PORT     7070
#define GUEST_NET_ARG "forkd.net=172.16.0.2/30,gw=172.16.0.1"

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

struct vm {
	struct vmm_proc p;
	char dir[256], vsock[400], control[400];
};

/* Pings the agent until it answers; for a child, after its fork notification. */
static void wait_agent(const char *uds)
{
	long long deadline = harness_deadline(AGENT_WAIT_MS);
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
	json_decref(resp);
}

/* extra: more kernel command line words (forkd-vmm adds forkd.net= for host and nat itself). */
static void start_vm(struct vm *vm, const char *tag, const char *policy, const char *extra)
{
	char append[300];

	snprintf(append, sizeof(append), "console=ttyS0 quiet forkd.agent=1 %s", extra);
	assert_int_equal(harness_tmpdir_create(vm->dir, sizeof(vm->dir), tag), 0);
	snprintf(vm->vsock, sizeof(vm->vsock), "%s/vsock.sock", vm->dir);
	snprintf(vm->control, sizeof(vm->control), "%s/control.sock", vm->dir);
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			vmlinux,
			"--initrd",
			initrd,
			"--mem",
			"512M",
			"--cpus",
			"1",
			"--vsock",
			vm->vsock,
			"--control",
			vm->control,
			"--serial-in",
			"none",
			"--net-policy",
			(char *)policy,
			"--append",
			append,
			NULL};
	assert_int_equal(vmm_start(&vm->p, argv), 0);
	assert_non_null(vmm_need_line(&vm->p, "READY", BOOT_TIMEOUT_MS));
	wait_agent(vm->vsock);
}

static void stop_vm(struct vm *vm)
{
	json_decref(harness_call_expect(vm->control, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&vm->p, BOOT_TIMEOUT_MS), 0);
	vmm_free(&vm->p);
	harness_tmpdir_remove(vm->dir);
}

static char *read_memfd(int fd)
{
	struct stat st;
	char *buf;

	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	buf[st.st_size] = '\0';
	return buf;
}

/* `sh -c script` in the guest behind uds; its stdout (caller frees), *status its exit code. */
static char *guest_sh_status(const char *uds, const char *script, int *status, char **errout)
{
	struct fk_exec_io io = {.in_fd = -1};
	struct fk_exec_result res = {0};
	struct fk_err err = {0};
	json_t *req = json_pack("{s:[s,s,s]}", "argv", "/bin/sh", "-c", script);
	char *out;
	int ret;

	io.out_fd = memfd_create("out", MFD_CLOEXEC);
	io.err_fd = memfd_create("err", MFD_CLOEXEC);
	assert_true(io.out_fd >= 0 && io.err_fd >= 0);
	ret = fk_agent_exec(uds, req, &io, CONNECT_MS, &res, &err);
	json_decref(req);
	if (ret < 0)
		fail_msg("exec sh -c '%s' at %s: %s", script, uds, err.msg);
	out = read_memfd(io.out_fd);
	char *e = read_memfd(io.err_fd);
	close(io.out_fd);
	close(io.err_fd);
	*status = res.signal ? 128 + res.signal : res.exit_code;
	if (errout)
		*errout = e;
	else
		free(e);
	return out;
}

/* What the guest's network looks like, on stderr: for a failure's report. */
static void guest_dump(const char *uds)
{
	int status;
	char *out = guest_sh_status(uds, "netstat -tln; ps; ip addr; ip route 2>&1", &status, NULL);

	fprintf(stderr, "guest at %s:\n%s\n", uds, out);
	free(out);
}

/* Like guest_sh_status, but exit 0 is required; the output's first line into out. */
static void guest_ask(const char *uds, const char *script, char *out, size_t len)
{
	char *e = NULL;
	int status;
	char *o = guest_sh_status(uds, script, &status, &e);

	if (status != 0)
		fail_msg("guest: sh -c '%s': status %d, stderr: %s", script, status, e);
	snprintf(out, len, "%s", o);
	out[strcspn(out, "\n")] = '\0';
	free(o);
	free(e);
}

static void guest_run(const char *uds, const char *script)
{
	char ignored[8];

	guest_ask(uds, script, ignored, sizeof(ignored));
}

/*
 * Starts cmd in the guest in a session of its own, so it outlives the exec
 * (the agent kills the exec's process group when it ends). Returns once the
 * setsid is done (the process's session id, field 6 of its stat, is its pid):
 * before that, the end of the exec could still kill it.
 */
static void guest_detach(const char *uds, const char *cmd)
{
	char script[1024];

	snprintf(script, sizeof(script),
		 "setsid %s </dev/null >/dev/null 2>&1 & p=$!; i=0; "
		 "while [ $i -lt 200 ] && [ \"$(cut -d' ' -f6 /proc/$p/stat)\" != $p ]; do "
		 "sleep 0.05; i=$((i+1)); done; [ \"$(cut -d' ' -f6 /proc/$p/stat)\" = $p ]",
		 cmd);
	guest_run(uds, script);
}

static void net_status(const char *sock, char *ns, size_t ns_size, char *addr, size_t addr_size)
{
	json_t *st = harness_call_expect(sock, "{\"cmd\":\"status\"}", true);
	const char *n, *a;

	assert_non_null(st);
	n = json_string_value(json_object_get(st, "net_netns"));
	a = json_string_value(json_object_get(st, "net_host_addr"));
	if (!n || !a)
		fail_msg("status at %s has no net_netns / net_host_addr", sock);
	snprintf(ns, ns_size, "%s", n);
	snprintf(addr, addr_size, "%s", a);
	json_decref(st);
}

/* The guest's host-side address (the slot's .2 in its /30) -> the root namespace's end (.1). */
static void root_end(const char *host_addr, char *out, size_t len)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, host_addr, &a), 1);
	assert_int_equal(ntohl(a.s_addr) & 3, 2);
	a.s_addr = htonl(ntohl(a.s_addr) - 1);
	assert_non_null(inet_ntop(AF_INET, &a, out, (socklen_t)len));
}

/* A connect to addr:port, bounded by timeout_ms; the socket or -errno. */
static int connect_to(const char *addr, int port, int timeout_ms)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd, err = 0;
	socklen_t err_len = sizeof(err);

	if (inet_pton(AF_INET, addr, &sin.sin_addr) != 1)
		return -EINVAL;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS) {
		err = errno;
		goto fail;
	}
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};
	if (poll(&pfd, 1, timeout_ms) != 1) {
		err = ETIMEDOUT;
		goto fail;
	}
	getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len);
	if (err)
		goto fail;
	return fd;
fail:
	close(fd);
	return -err;
}

/* Reads until EOF or the deadline; what came, NUL-terminated. */
static ssize_t read_all(int fd, char *buf, size_t size, long long deadline)
{
	size_t used = 0;

	while (used + 1 < size) {
		int left = (int)(deadline - now_ms());
		struct pollfd pfd = {.fd = fd, .events = POLLIN};

		if (left <= 0 || poll(&pfd, 1, left) != 1)
			break;
		ssize_t n = read(fd, buf + used, size - 1 - used);
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
	return (ssize_t)used;
}

/* GET path from addr:port; the body's first line into out. Retries until NET_WAIT_MS. */
static void http_get_line(const char *addr, int port, const char *path, char *out, size_t len)
{
	long long deadline = harness_deadline(NET_WAIT_MS);
	char req[256], resp[2048];
	int last = 0;

	snprintf(req, sizeof(req), "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", path, addr);
	while (now_ms() < deadline) {
		int fd = connect_to(addr, port, 5000);
		if (fd < 0) {
			last = -fd;
			usleep(200 * 1000);
			continue;
		}
		if (write(fd, req, strlen(req)) == (ssize_t)strlen(req))
			read_all(fd, resp, sizeof(resp), harness_deadline(10000));
		else
			resp[0] = '\0';
		close(fd);
		/* busybox httpd passes a CGI's own header lines on: "\n", not "\r\n". */
		char *crlf = strstr(resp, "\r\n\r\n"), *lf = strstr(resp, "\n\n");
		char *body = crlf && (!lf || crlf < lf) ? crlf + 4 : lf ? lf + 2 : NULL;
		if (strncmp(resp, "HTTP/1.", 7) == 0 && strstr(resp, " 200 ") && body) {
			snprintf(out, len, "%s", body);
			out[strcspn(out, "\r\n")] = '\0';
			return;
		}
		fail_msg("GET http://%s:%d%s: not a 200 with a body: '%.200s'", addr, port, path,
			 resp);
	}
	fail_msg("GET http://%s:%d%s: no connection within %d ms: %s", addr, port, path,
		 NET_WAIT_MS, strerror(last));
}

/* A listener on addr:port (an address of a namespace forkd made for the test's VM). */
static int listen_on(const char *addr, int port)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(fd >= 0);
	assert_int_equal(inet_pton(AF_INET, addr, &sin.sin_addr), 1);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(fd, 8) < 0)
		fail_msg("listen on %s:%d: %s", addr, port, strerror(errno));
	return fd;
}

static int accept_within(int listener, int timeout_ms, const char *what)
{
	struct pollfd pfd = {.fd = listener, .events = POLLIN};

	if (poll(&pfd, 1, timeout_ms) != 1)
		fail_msg("%s: no connection within %d ms", what, timeout_ms);
	int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
	assert_true(fd >= 0);
	return fd;
}

/* Reads one line from fd within timeout_ms into out (without the newline). */
static void read_line_within(int fd, int timeout_ms, char *out, size_t len, const char *what)
{
	long long deadline = harness_deadline(timeout_ms);
	size_t used = 0;

	while (used + 1 < len) {
		int left = (int)(deadline - now_ms());
		struct pollfd pfd = {.fd = fd, .events = POLLIN};

		if (left <= 0 || poll(&pfd, 1, left) != 1)
			fail_msg("%s: no line within %d ms (have '%.*s')", what, timeout_ms,
				 (int)used, out);
		ssize_t n = read(fd, out + used, 1);
		if (n <= 0)
			fail_msg("%s: connection ended (%s) after '%.*s'", what,
				 n < 0 ? strerror(errno) : "EOF", (int)used, out);
		if (out[used] == '\n')
			break;
		used++;
	}
	out[used] = '\0';
}

/* The packets counter of the reset rule in the namespace's forward chain; -1 if absent. */
static long reset_rule_packets(const char *ns)
{
	char cmd[300], line[512];
	long packets = -1;
	FILE *f;

	snprintf(cmd, sizeof(cmd), "ip netns exec %s nft list chain ip forkd forward 2>&1", ns);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		const char *c = strstr(line, "counter packets ");
		if (c && strstr(line, "reject with tcp reset"))
			packets = strtol(c + strlen("counter packets "), NULL, 10);
	}
	pclose(f);
	return packets;
}

/* EstabResets from the guest's /proc/net/snmp (RFC 1213 tcpEstabResets). */
static long guest_estab_resets(const char *uds)
{
	char out[64];

	guest_ask(uds,
		  "awk '/^Tcp:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == \"EstabResets\") "
		  "c = i; h = 1 } else print $c }' /proc/net/snmp",
		  out, sizeof(out));
	return strtol(out, NULL, 10);
}

/*
 * The source's guest: eth0 configured by forkd-init from forkd.net=, an
 * httpd whose CGI prints the hostname, and an nc holding a connection to
 * the test's server at the gateway; then BRANCH into KIDS children.
 */
static void test_branch_children_serve_and_reset(void **state)
{
	char ns[32], host_addr[32], root_addr[32], line[256], req[600], src_name[80];
	char kid_vsock[KIDS][400], kid_control[KIDS][400], kid_ns[KIDS][32], kid_addr[KIDS][32];
	char kid_name[KIDS][80];
	struct vm vm;
	int listener, held;

	(void)state;
	start_vm(&vm, "netns-linux-branch", "host", "");
	net_status(vm.control, ns, sizeof(ns), host_addr, sizeof(host_addr));
	root_end(host_addr, root_addr, sizeof(root_addr));

	/* Inside: forkd-init configured eth0 and the default route from the forkd.net= that
	 * forkd-vmm put on the command line for the policy. */
	guest_ask(vm.vsock, "grep -o 'forkd.net=[^ ]*' /proc/cmdline", line, sizeof(line));
	assert_string_equal(line, GUEST_NET_ARG);
	guest_ask(vm.vsock, "ip -4 -o addr show dev eth0 | awk '{print $4}'", line, sizeof(line));
	assert_string_equal(line, "172.16.0.2/30");
	guest_ask(vm.vsock, "ip route show default", line, sizeof(line));
	assert_non_null(strstr(line, "default via 172.16.0.1 dev eth0"));
	guest_ask(vm.vsock, "cat /sys/class/net/eth0/address", line, sizeof(line));
	assert_string_equal(line, "02:66:6b:00:00:02");

	/* One server in the source, inherited by every child; the CGI runs per request. */
	guest_run(vm.vsock, "mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: "
			    "text/plain\\necho\\nhostname\\n' > /www/cgi-bin/id && "
			    "chmod +x /www/cgi-bin/id");
	guest_detach(vm.vsock, "httpd -f -p 8080 -h /www");
	guest_ask(vm.vsock, "hostname", src_name, sizeof(src_name));
	/* Inside first: the server answers on the guest's own loopback. */
	guest_ask(vm.vsock,
		  "i=0; while [ $i -lt 100 ] && ! wget -q -O - http://127.0.0.1:8080/cgi-bin/id; "
		  "do sleep 0.1; i=$((i+1)); done 2>/dev/null",
		  line, sizeof(line));
	if (strcmp(line, src_name) != 0) {
		guest_dump(vm.vsock);
		fail_msg("the guest's httpd answered '%s' on its loopback, not its hostname '%s'",
			 line, src_name);
	}
	http_get_line(host_addr, HTTP_PORT, "/cgi-bin/id", line, sizeof(line));
	assert_string_equal(line, src_name);

	/* A connection from the guest to the host, held open by nc across the branch. */
	listener = listen_on(root_addr, HOST_PORT);
	guest_run(vm.vsock, "mkfifo /tmp/held.in");
	snprintf(req, sizeof(req),
		 "sh -c 'sleep 100000 > /tmp/held.in & "
		 "exec nc 172.16.0.1 %d < /tmp/held.in > /tmp/held.out 2>&1'",
		 HOST_PORT);
	guest_detach(vm.vsock, req);
	held = accept_within(listener, NET_WAIT_MS, "the source's held connection");
	guest_run(vm.vsock, "echo before-branch > /tmp/held.in");
	read_line_within(held, NET_WAIT_MS, line, sizeof(line), "the held connection");
	assert_string_equal(line, "before-branch");
	long resets_before = guest_estab_resets(vm.vsock);

	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":%d,\"dir\":\"%s/branch\"}", KIDS,
		 vm.dir);
	long long t0 = now_ms();
	json_decref(harness_call_expect(vm.control, req, true));
	for (int k = 0; k < KIDS; k++) {
		snprintf(kid_vsock[k], sizeof(kid_vsock[k]), "%s/branch/child-%d/vsock.sock",
			 vm.dir, k);
		snprintf(kid_control[k], sizeof(kid_control[k]), "%s/branch/child-%d/control.sock",
			 vm.dir, k);
		wait_agent(kid_vsock[k]);
		net_status(kid_control[k], kid_ns[k], sizeof(kid_ns[k]), kid_addr[k],
			   sizeof(kid_addr[k]));
		guest_ask(kid_vsock[k], "hostname", kid_name[k], sizeof(kid_name[k]));
		assert_string_not_equal(kid_addr[k], host_addr);
		assert_string_not_equal(kid_name[k], src_name);
		for (int j = 0; j < k; j++) {
			assert_string_not_equal(kid_addr[j], kid_addr[k]);
			assert_string_not_equal(kid_ns[j], kid_ns[k]);
			assert_string_not_equal(kid_name[j], kid_name[k]);
		}
		/* Same guest address and MAC in every child. */
		guest_ask(kid_vsock[k], "ip -4 -o addr show dev eth0 | awk '{print $4}'", line,
			  sizeof(line));
		assert_string_equal(line, "172.16.0.2/30");
	}
	fprintf(stderr, "branch of %d with networking: all agents answered in %lld ms\n", KIDS,
		now_ms() - t0);

	/* Each child answers at its own address with its own name; the source at its own. */
	for (int k = 0; k < KIDS; k++) {
		http_get_line(kid_addr[k], HTTP_PORT, "/cgi-bin/id", line, sizeof(line));
		if (strcmp(line, kid_name[k]) != 0)
			fail_msg("child %d at %s:8080 answered '%s', its hostname is '%s'", k,
				 kid_addr[k], line, kid_name[k]);
		fprintf(stderr, "child %d: %s (%s) serves %s\n", k, kid_addr[k], kid_ns[k], line);
	}
	http_get_line(host_addr, HTTP_PORT, "/cgi-bin/id", line, sizeof(line));
	assert_string_equal(line, src_name);

	/* The inherited connection: the child's first segment on it is reset. */
	for (int k = 0; k < KIDS; k++) {
		long rule_before = reset_rule_packets(kid_ns[k]);
		assert_true(rule_before >= 0);
		assert_int_equal(guest_estab_resets(kid_vsock[k]), resets_before);
		snprintf(req, sizeof(req),
			 "echo from-child-%d > /tmp/held.in; i=0; "
			 "while [ $i -lt 100 ] && pidof nc >/dev/null; do sleep 0.1; i=$((i+1)); "
			 "done; pidof nc >/dev/null && echo nc-still-running || echo nc-ended",
			 k);
		guest_ask(kid_vsock[k], req, line, sizeof(line));
		assert_string_equal(line, "nc-ended");
		if (guest_estab_resets(kid_vsock[k]) != resets_before + 1)
			fail_msg("child %d: the guest's EstabResets did not move by 1 (%ld)", k,
				 resets_before);
		long rule_after = reset_rule_packets(kid_ns[k]);
		if (rule_after <= rule_before)
			fail_msg("child %d: the reset rule in %s did not count (%ld -> %ld)", k,
				 kid_ns[k], rule_before, rule_after);
	}
	/* The host's end never saw the children; the source's connection carries on. */
	struct pollfd pfd = {.fd = held, .events = POLLIN};
	if (poll(&pfd, 1, 0) != 0) {
		read_all(held, line, sizeof(line), now_ms() + 100);
		fail_msg("the held connection got something from a child: '%s'", line);
	}
	guest_run(vm.vsock, "echo after-branch > /tmp/held.in");
	read_line_within(held, NET_WAIT_MS, line, sizeof(line), "the held connection");
	assert_string_equal(line, "after-branch");
	assert_int_equal(guest_estab_resets(vm.vsock), resets_before);

	/* A new connection from each child works: to its own namespace's host address. */
	for (int k = 0; k < KIDS; k++) {
		char kid_root[32], want[64];
		int l, c;

		root_end(kid_addr[k], kid_root, sizeof(kid_root));
		l = listen_on(kid_root, HOST_PORT);
		snprintf(req, sizeof(req),
			 "sh -c 'echo new-from-child-%d | nc 172.16.0.1 %d > /tmp/new.out 2>&1'", k,
			 HOST_PORT);
		guest_detach(kid_vsock[k], req);
		c = accept_within(l, NET_WAIT_MS, "a child's new connection");
		read_line_within(c, NET_WAIT_MS, line, sizeof(line), "a child's new connection");
		snprintf(want, sizeof(want), "new-from-child-%d", k);
		assert_string_equal(line, want);
		snprintf(want, sizeof(want), "reply-to-child-%d\n", k);
		assert_int_equal(write(c, want, strlen(want)), (ssize_t)strlen(want));
		close(c);
		close(l);
		guest_ask(
		    kid_vsock[k],
		    "i=0; while [ $i -lt 100 ] && ! grep -q reply /tmp/new.out; do sleep 0.1; "
		    "i=$((i+1)); done; cat /tmp/new.out",
		    line, sizeof(line));
		want[strlen(want) - 1] = '\0';
		assert_string_equal(line, want);
	}
	close(held);
	close(listener);

	for (int k = 0; k < KIDS; k++)
		json_decref(harness_call_expect(kid_control[k], "{\"cmd\":\"shutdown\"}", true));
	stop_vm(&vm);
	/* Every namespace went with its VMM. */
	for (long long end = harness_deadline(20000); now_ms() < end; usleep(100 * 1000)) {
		int left = 0;
		char path[300];
		struct stat st;

		for (int k = 0; k < KIDS; k++) {
			snprintf(path, sizeof(path), "/run/netns/%s", kid_ns[k]);
			left += stat(path, &st) == 0;
		}
		snprintf(path, sizeof(path), "/run/netns/%s", ns);
		left += stat(path, &st) == 0;
		if (!left)
			return;
	}
	fail_msg("network namespaces of the source or its children are still there");
}

/* Policy none: no network device, so forkd.net= has nothing to configure and nothing routes. */
static void test_policy_none_has_no_route(void **state)
{
	char line[256];
	char *out, *err = NULL;
	int status;
	struct vm vm;

	(void)state;
	start_vm(&vm, "netns-linux-none", "none", GUEST_NET_ARG);
	/* forkd-init said why it configured nothing. */
	assert_non_null(vmm_wait_containing(&vm.p, "forkd.net=", "no eth0", NULL, 1000));
	guest_ask(vm.vsock, "ls /sys/class/net | tr '\\n' ' '", line, sizeof(line));
	assert_string_equal(line, "lo ");
	out = guest_sh_status(vm.vsock, "ip -4 route show; tail -n +2 /proc/net/route", &status,
			      NULL);
	assert_int_equal(status, 0);
	assert_string_equal(out, "");
	free(out);
	long long t0 = now_ms();
	out = guest_sh_status(vm.vsock, "nc -w 5 172.16.0.1 7070 </dev/null", &status, &err);
	long long took = now_ms() - t0;
	fprintf(stderr, "none: connect: status %d in %lld ms: %s", status, took, err);
	assert_int_not_equal(status, 0);
	assert_non_null(strstr(err, "unreachable"));
	/* At once: not the 5 s connect timeout (the agent round trip is most of it). */
	assert_true(took < 4000);
	free(out);
	free(err);
	stop_vm(&vm);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_branch_children_serve_and_reset),
	    cmocka_unit_test(test_policy_none_has_no_route),
	};
	if (where_begin(argc, argv, NEEDS_LINUX, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("network namespaces with a Linux guest", tests, setup,
					   NULL);
}
