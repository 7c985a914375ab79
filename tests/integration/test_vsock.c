/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm's virtio-vsock device (docs/vsock.md) proven with the probe
 * guest's own polling driver (guest/probe/vsock.c): the `vsock` workload
 * echoes every byte of every host connection back, so each test checks
 * byte-exact data on the host side. Bulk echo on 32 connections at once,
 * a slow reader against the VMM's per-connection buffer bound (RSS),
 * refused and malformed CONNECTs, guest-initiated connections, snapshot
 * and restore, BRANCH, and a hostile guest against the ASan VMM.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define BOOT_TIMEOUT_MS	   20000
#define ECHO_TIMEOUT_MS	   300000
#define ECHO_PORT	   1024
#define MAX_CONNS	   32
#define CHUNK		   (256 * 1024)
#define BULK_BYTES	   (64ULL << 20)
#define SLOW_ATTEMPT_BYTES (16ULL << 20)
/*
 * Slow reader bound on the VMM's RSS growth: the VMM may hold 256 KiB of
 * guest data per connection (VSOCK_CONN_BUF_ALLOC), 8 MiB for 32; on top
 * we allow 24 MiB for the allocator (each buffer is its own page-rounded
 * block, arenas of the event-loop thread) and unrelated noise. A VMM that
 * buffered without bound would hold most of the 512 MiB the host tries to
 * write.
 */
#define SLOW_RSS_BOUND_KIB ((MAX_CONNS * 256 + 24 * 1024))

static char dir[256];
static int counter;

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "vsock");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

struct vm {
	struct vmm_proc p;
	char vsock[300];
	char control[300];
};

/* Boots the probe with a vsock device and a control socket; extra VMM args NULL-terminated. */
static void vm_start(struct vm *vm, const char *vmm, const char *append, const char *extra1,
		     const char *extra2)
{
	snprintf(vm->vsock, sizeof(vm->vsock), "%s/v%d.sock", dir, ++counter);
	snprintf(vm->control, sizeof(vm->control), "%s/c%d.sock", dir, counter);
	probe_start(&vm->p, vmm, "256M", "2", append, "--vsock", vm->vsock, "--control",
		    vm->control, extra1, extra2, NULL);
	probe_need_line(&vm->p, "READY", BOOT_TIMEOUT_MS);
}

static int unix_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		fprintf(stderr, "connect %s: %s\n", path, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int unix_listen(const char *path, int backlog)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	unlink(path);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	return fd;
}

/* Reads one line (up to '\n') within timeout_ms; its length, 0 on EOF, -1 on timeout. */
static int read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
	size_t n = 0;
	long long deadline = now_ms() + timeout_ms;

	while (n + 1 < cap) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		long long left = deadline - now_ms();
		ssize_t r;

		if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
			return -1;
		r = read(fd, buf + n, 1);
		if (r <= 0) {
			buf[n] = '\0';
			return 0;
		}
		if (buf[n++] == '\n')
			break;
	}
	buf[n] = '\0';
	return (int)n;
}

/* CONNECT <port>: the socket once the guest said OK, or -1 (the reply is in why). */
/* Connects to guest `port`; *host_port (if given) gets the host port the VMM chose. */
static int vsock_dial(const char *path, unsigned port, unsigned *host_port, char *why,
		      size_t why_len)
{
	char line[64];
	int fd = unix_connect(path), n;

	if (fd < 0)
		return -1;
	snprintf(line, sizeof(line), "CONNECT %u\n", port);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	n = read_line(fd, line, sizeof(line), 10000);
	snprintf(why, why_len, "%s", n < 0 ? "(timeout)" : n == 0 ? "(EOF)" : line);
	if (n <= 0 || strncmp(line, "OK ", 3) != 0) {
		close(fd);
		return -1;
	}
	if (host_port && sscanf(line + 3, "%u", host_port) != 1) {
		snprintf(why, why_len, "no port in \"%s\"", line);
		close(fd);
		return -1;
	}
	return fd;
}

static int dial_port(const char *path, unsigned *host_port)
{
	char why[64];
	int fd = vsock_dial(path, ECHO_PORT, host_port, why, sizeof(why));

	if (fd < 0)
		fprintf(stderr, "CONNECT %d to %s: %s\n", ECHO_PORT, path, why);
	assert_true(fd >= 0);
	return fd;
}

static int dial(const char *path)
{
	return dial_port(path, NULL);
}

/*
 * Opens and closes n connections; returns the host port of the last. More
 * than a restored VMM's fork notifier tries in its 10 s, so a restored VMM
 * that started its ports afresh would reach this one only later.
 */
#define PORT_BURNERS 100
static unsigned burn_ports(const char *path, int n)
{
	unsigned port = 0;

	for (int i = 0; i < n; i++)
		close(dial_port(path, &port));
	return port;
}

/* ---- deterministic data and the echo engine ---- */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Byte o of stream `seed` is byte o%8 of mix(seed ^ o/8). */
static void fill(uint64_t seed, uint64_t off, uint8_t *buf, size_t len)
{
	size_t i = 0;

	while (i < len) {
		uint64_t o = off + i, w = mix((seed << 40) ^ (o >> 3));

		if ((o & 7) == 0 && len - i >= 8) {
			memcpy(buf + i, &w, 8);
			i += 8;
		} else {
			buf[i++] = (uint8_t)(w >> ((o & 7) * 8));
		}
	}
}

struct econn {
	int fd;
	uint64_t seed;
	uint64_t total, wr, rd;
	bool bad;
};

static uint8_t wbuf[CHUNK], rbuf[CHUNK], xbuf[CHUNK];

static void econn_init(struct econn *c, int fd, uint64_t seed, uint64_t total)
{
	*c = (struct econn){.fd = fd, .seed = seed, .total = total};
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

/*
 * Drives writes (and reads, if reading) on all connections until every
 * byte came back (true), or, when not reading, until writes made no
 * progress for stall_ms, or the timeout.
 */
static bool echo_run(struct econn *cs, int n, bool reading, int stall_ms, int timeout_ms)
{
	struct pollfd pfd[MAX_CONNS];
	long long deadline = now_ms() + timeout_ms, last_progress = now_ms();

	for (;;) {
		int active = 0, r;

		for (int i = 0; i < n; i++) {
			struct econn *c = &cs[i];

			pfd[i] = (struct pollfd){.fd = c->fd};
			if (c->wr < c->total)
				pfd[i].events |= POLLOUT;
			if (reading && c->rd < c->total)
				pfd[i].events |= POLLIN;
			active += pfd[i].events != 0;
		}
		if (!active)
			return true;
		if (now_ms() > deadline)
			return false;
		if (!reading && now_ms() - last_progress > stall_ms)
			return false;
		r = poll(pfd, (nfds_t)n, 100);
		assert_true(r >= 0 || errno == EINTR);
		for (int i = 0; i < n; i++) {
			struct econn *c = &cs[i];

			if (pfd[i].revents & POLLOUT) {
				size_t len = c->total - c->wr < CHUNK ? c->total - c->wr : CHUNK;
				ssize_t w;

				fill(c->seed, c->wr, wbuf, len);
				w = write(c->fd, wbuf, len);
				if (w > 0) {
					c->wr += (uint64_t)w;
					last_progress = now_ms();
				}
			}
			if (pfd[i].revents & (POLLIN | POLLHUP)) {
				ssize_t got = read(c->fd, rbuf, sizeof(rbuf));

				if (got == 0) {
					fprintf(stderr, "conn %d: EOF after %llu of %llu bytes\n",
						i, (unsigned long long)c->rd,
						(unsigned long long)c->total);
					return false;
				}
				if (got > 0) {
					fill(c->seed, c->rd, xbuf, (size_t)got);
					if (memcmp(rbuf, xbuf, (size_t)got) != 0 && !c->bad) {
						c->bad = true;
						fprintf(stderr, "conn %d: wrong bytes at %llu\n", i,
							(unsigned long long)c->rd);
						return false;
					}
					c->rd += (uint64_t)got;
				}
			}
		}
	}
}

/* Our SHUT_WR reaches the guest, which closes after echoing everything: EOF follows. */
static void expect_close_after_shutdown(int fd)
{
	char b;
	struct pollfd pfd = {.fd = fd, .events = POLLIN};

	shutdown(fd, SHUT_WR);
	assert_int_equal(poll(&pfd, 1, 10000), 1);
	assert_int_equal(read(fd, &b, 1), 0);
}

/* n connections, `bytes` each, echoed and checked; returns MiB/s. */
static double echo_conns(const char *path, int n, uint64_t bytes, uint64_t seed0)
{
	struct econn cs[MAX_CONNS];
	long long t0;
	double secs;

	for (int i = 0; i < n; i++)
		econn_init(&cs[i], dial(path), seed0 + (uint64_t)i, bytes);
	t0 = now_ms();
	assert_true(echo_run(cs, n, true, 0, ECHO_TIMEOUT_MS));
	secs = (double)(now_ms() - t0) / 1000.0;
	for (int i = 0; i < n; i++) {
		assert_int_equal(cs[i].rd, bytes);
		fcntl(cs[i].fd, F_SETFL, fcntl(cs[i].fd, F_GETFL) & ~O_NONBLOCK);
		expect_close_after_shutdown(cs[i].fd);
		close(cs[i].fd);
	}
	return (double)n * (double)bytes / (1 << 20) / (secs > 0 ? secs : 0.001);
}

/* A short echo on an open connection (blocking), checked. */
static void echo_once(int fd, const char *text)
{
	char buf[256];
	size_t len = strlen(text), got = 0;

	assert_int_equal(write(fd, text, len), (ssize_t)len);
	while (got < len) {
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		ssize_t r;

		assert_int_equal(poll(&pfd, 1, 10000), 1);
		r = read(fd, buf + got, len - got);
		assert_true(r > 0);
		got += (size_t)r;
	}
	assert_memory_equal(buf, text, len);
}

static long vmm_rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

/* The guest's `vsock status` line (a unique tag tells it from earlier ones). */
static const char *status_line(struct vmm_proc *p, const char *tag)
{
	char cmd[64], want[64];

	snprintf(cmd, sizeof(cmd), "vsock status %s\n", tag);
	snprintf(want, sizeof(want), "vsock.status tag=%s ", tag);
	vmm_send(p, cmd);
	return probe_need_line(p, want, BOOT_TIMEOUT_MS);
}

/*
 * Asks for `vsock status` until key has the value want (10 s). The guest
 * learns of a close (the VMM's RST) a moment after the host sees EOF.
 */
static void wait_status(struct vmm_proc *p, const char *key, const char *want)
{
	static int seq;
	long long deadline = now_ms() + 10000;
	char tag[32], buf[64] = "";

	do {
		snprintf(tag, sizeof(tag), "w%d", ++seq);
		if (line_value(status_line(p, tag), key, buf, sizeof(buf)) && !strcmp(buf, want))
			return;
		usleep(20000);
	} while (now_ms() < deadline);
	fprintf(stderr, "vsock status: %s is %s, expected %s\n", key, buf, want);
	fail();
}

static json_t *control(const char *sock, const char *req)
{
	json_t *r = harness_call_expect(sock, req, true);

	assert_non_null(r);
	return r;
}

static long long status_int(const char *sock, const char *key)
{
	json_t *r = control(sock, "{\"cmd\":\"status\"}");
	json_t *v = json_object_get(r, key);
	long long n;

	if (!json_is_integer(v))
		fprintf(stderr, "status has no integer %s\n", key);
	assert_true(json_is_integer(v));
	n = json_integer_value(v);
	json_decref(r);
	return n;
}

static bool wait_no_connections(const char *sock)
{
	long long deadline = now_ms() + 15000;

	while (now_ms() < deadline) {
		if (status_int(sock, "vsock_connections") == 0)
			return true;
		usleep(10000);
	}
	return false;
}

static void vm_stop(struct vm *vm)
{
	vmm_send(&vm->p, "poweroff\n");
	probe_expect_exit(&vm->p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&vm->p);
}

/* ---- tests ---- */

static void test_echo_32_connections_64mib_each(void **state)
{
	struct vm vm;
	double one, all;
	char buf[64];

	(void)state;
	vm_start(&vm, NULL, "work=vsock,idle", NULL, NULL);
	probe_need_line(&vm.p, "vsock.ready port=1024 ", BOOT_TIMEOUT_MS);
	one = echo_conns(vm.vsock, 1, BULK_BYTES, 100);
	all = echo_conns(vm.vsock, MAX_CONNS, BULK_BYTES, 200);
	fprintf(stderr, "vsock echo: 1 x 64 MiB %.1f MiB/s, 32 x 64 MiB %.1f MiB/s\n", one, all);
	/* The guest counted every byte, closed every connection, and saw no credit violation. */
	snprintf(buf, sizeof(buf), "%llu", 33 * BULK_BYTES);
	wait_status(&vm.p, "vsock.bytes", buf);
	wait_status(&vm.p, "vsock.conns", "0");
	wait_status(&vm.p, "vsock.closed", "33");
	wait_status(&vm.p, "vsock.violations", "0");
	vm_stop(&vm);
}

static void test_slow_reader_keeps_vmm_memory_bounded(void **state)
{
	struct econn cs[MAX_CONNS];
	uint64_t written = 0;
	long base, peak;
	struct vm vm;

	(void)state;
	vm_start(&vm, NULL, "work=vsock,idle", NULL, NULL);
	probe_need_line(&vm.p, "vsock.ready", BOOT_TIMEOUT_MS);
	/* Warm up: every connection's path (guest ring, VMM buffers) touched once. */
	echo_conns(vm.vsock, MAX_CONNS, 1 << 20, 300);
	base = vmm_rss_kib(vm.p.pid);
	for (int i = 0; i < MAX_CONNS; i++)
		econn_init(&cs[i], dial(vm.vsock), 400 + (uint64_t)i, SLOW_ATTEMPT_BYTES);
	/* Write, read nothing, until every writer is blocked for 2 s. */
	assert_false(echo_run(cs, MAX_CONNS, false, 2000, ECHO_TIMEOUT_MS));
	peak = vmm_rss_kib(vm.p.pid);
	for (int i = 0; i < MAX_CONNS; i++)
		written += cs[i].wr;
	fprintf(stderr,
		"slow reader: host wrote %llu MiB into 32 connections before blocking; VMM RSS "
		"%ld -> %ld KiB (+%ld, bound +%d)\n",
		(unsigned long long)(written >> 20), base, peak, peak - base, SLOW_RSS_BOUND_KIB);
	assert_true(written < (uint64_t)MAX_CONNS * SLOW_ATTEMPT_BYTES);
	assert_true(peak - base < SLOW_RSS_BOUND_KIB);
	/* Reading resumes: everything arrives, intact. */
	assert_true(echo_run(cs, MAX_CONNS, true, 0, ECHO_TIMEOUT_MS));
	for (int i = 0; i < MAX_CONNS; i++) {
		assert_int_equal(cs[i].rd, SLOW_ATTEMPT_BYTES);
		close(cs[i].fd);
	}
	vm_stop(&vm);
}

static void expect_closed_without_ok(const char *path, const char *line)
{
	char buf[64];
	int fd = unix_connect(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, line, strlen(line)), (ssize_t)strlen(line));
	/* EOF, never OK: read_line returns 0 with nothing, or a line that is not OK. */
	assert_int_equal(read_line(fd, buf, sizeof(buf), 10000), 0);
	assert_int_equal(buf[0], '\0');
	close(fd);
}

static void test_refused_and_malformed_connects(void **state)
{
	char buf[64];
	struct vm vm;
	int fd;

	(void)state;
	vm_start(&vm, NULL, "work=vsock,idle", NULL, NULL);
	probe_need_line(&vm.p, "vsock.ready", BOOT_TIMEOUT_MS);
	expect_closed_without_ok(vm.vsock, "CONNECT 7\n");
	expect_closed_without_ok(vm.vsock, "BOGUS\n");
	expect_closed_without_ok(vm.vsock, "CONNECT abc\n");
	expect_closed_without_ok(vm.vsock, "CONNECT 1024 \n");
	expect_closed_without_ok(vm.vsock, "CONNECT 99999999999\n");
	/* The guest saw the REQUEST for port 7 and refused it. */
	line_value(status_line(&vm.p, "refused"), "vsock.refused", buf, sizeof(buf));
	assert_true(strtoul(buf, NULL, 10) >= 1);
	/* Still serving. */
	fd = dial(vm.vsock);
	echo_once(fd, "still here\n");
	close(fd);
	vm_stop(&vm);
}

static void test_guest_initiated_connections(void **state)
{
	char path[400], line[128], want[64];
	struct vm vm;
	int lfd, fd;

	(void)state;
	vm_start(&vm, NULL, "work=vsock,idle", NULL, NULL);
	probe_need_line(&vm.p, "vsock.ready", BOOT_TIMEOUT_MS);
	snprintf(path, sizeof(path), "%s_5555", vm.vsock);
	lfd = unix_listen(path, 4);
	vmm_send(&vm.p, "vsock connect 5555\n");
	probe_need_line(&vm.p, "vsock.connect.ok port=5555", BOOT_TIMEOUT_MS);
	fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);
	/* No handshake line on this side: the greeting is the stream's first byte. */
	assert_true(read_line(fd, line, sizeof(line), 10000) > 0);
	assert_string_equal(line, "forkd-probe-vsock hello port=5555\n");
	/* The guest echoes on its own connections too. */
	echo_once(fd, "and back\n");
	close(fd);
	close(lfd);
	snprintf(want, sizeof(want), "vsock.connect.closed port=5555");
	probe_need_line(&vm.p, want, BOOT_TIMEOUT_MS);
	/* Nobody listens on <path>_5556: the guest gets RST. */
	vmm_send(&vm.p, "vsock connect 5556\n");
	probe_need_line(&vm.p, "vsock.connect.refused port=5556", BOOT_TIMEOUT_MS);
	vm_stop(&vm);
}

static void test_snapshot_restore_resets_connections(void **state)
{
	char snap[300], newpath[300], newctl[300], req[400];
	struct vmm_proc r;
	struct vm vm;
	json_t *reply;
	unsigned a_port, b_port;
	int a, b;

	(void)state;
	vm_start(&vm, NULL, "work=vsock,idle", NULL, NULL);
	probe_need_line(&vm.p, "vsock.ready", BOOT_TIMEOUT_MS);
	a = dial_port(vm.vsock, &a_port);
	echo_once(a, "before snapshot\n");
	a_port = burn_ports(vm.vsock, PORT_BURNERS);
	wait_status(&vm.p, "vsock.conns", "1");
	snprintf(snap, sizeof(snap), "%s/snap%d", dir, ++counter);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	reply = control(vm.control, req);
	json_decref(reply);
	/* The source's connection is untouched by the snapshot. */
	echo_once(a, "source after snapshot\n");

	snprintf(newpath, sizeof(newpath), "%s/restored%d.sock", dir, counter);
	snprintf(newctl, sizeof(newctl), "%s/restored%d.ctl", dir, counter);
	{
		char *argv[] = {(char *)harness_vmm(), "--restore", snap, "--vsock", newpath,
				"--control",	       newctl,	    NULL};
		assert_int_equal(vmm_start(&r, argv), 0);
	}
	/* The restored guest learns that its connection is gone. */
	probe_need_line(&r, "vsock.reset=1 ", BOOT_TIMEOUT_MS);
	probe_expect_kv(&r, "dropped", "1");
	/*
	 * No connection of the source's came along. (The VMM's fork notifier
	 * keeps trying the guest agent's port 52 for a while, and the probe
	 * refuses each try at once: wait for a moment between two tries.)
	 */
	assert_true(wait_no_connections(newctl));
	/*
	 * From a host port the source never used: the guest may still hold the
	 * reset socket of `a` (until its program closes it), and a connection
	 * from that port would reach it instead of the listener.
	 */
	b = dial_port(newpath, &b_port);
	assert_true(b_port > a_port);
	echo_once(b, "restored echoes\n");
	wait_status(&r, "vsock.conns", "1");
	close(b);
	echo_once(a, "source still echoes\n");
	assert_int_equal(status_int(vm.control, "vsock_connections"), 1);
	close(a);
	vmm_send(&r, "poweroff\n");
	probe_expect_exit(&r, 0, BOOT_TIMEOUT_MS);
	vmm_free(&r);
	vm_stop(&vm);
}

static void test_branch_children_get_their_own_socket(void **state)
{
	char bdir[400], req[600], path[700], log[700];
	struct vm vm;
	json_t *reply, *children;
	unsigned a_port[2], c_port;
	int a[2];

	(void)state;
	vm_start(&vm, NULL, "work=vsock,idle", NULL, NULL);
	probe_need_line(&vm.p, "vsock.ready", BOOT_TIMEOUT_MS);
	for (int i = 0; i < 2; i++) {
		a[i] = dial_port(vm.vsock, &a_port[i]);
		echo_once(a[i], "before branch\n");
	}
	a_port[1] = burn_ports(vm.vsock, PORT_BURNERS);
	wait_status(&vm.p, "vsock.conns", "2");
	snprintf(bdir, sizeof(bdir), "%s/b%d", dir, ++counter);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":2,\"dir\":\"%s\"}", bdir);
	reply = control(vm.control, req);
	children = json_object_get(reply, "children");
	assert_int_equal(json_array_size(children), 2);
	for (size_t k = 0; k < 2; k++) {
		const char *cdir =
		    json_string_value(json_object_get(json_array_get(children, k), "dir"));
		char *line;
		int fd;

		assert_non_null(cdir);
		snprintf(log, sizeof(log), "%s/serial.log", cdir);
		line = file_wait_line(log, "vsock.reset=1 ", 0, BOOT_TIMEOUT_MS);
		assert_non_null(line);
		assert_non_null(strstr(line, "dropped=2"));
		free(line);
		snprintf(path, sizeof(path), "%s/vsock.sock", cdir);
		fd = dial_port(path, &c_port);
		/* Not a port the source used: the child's guest may still hold those. */
		assert_true(c_port > a_port[1]);
		echo_once(fd, "child echoes\n");
		close(fd);
	}
	/* The source's connections continue. */
	for (int i = 0; i < 2; i++) {
		echo_once(a[i], "source after branch\n");
		close(a[i]);
	}
	for (size_t k = 0; k < 2; k++) {
		json_t *c = json_array_get(children, k);
		char sock[700];

		snprintf(sock, sizeof(sock), "%s/control.sock",
			 json_string_value(json_object_get(c, "dir")));
		json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
	}
	json_decref(reply);
	vm_stop(&vm);
}

static void test_hostile_guest(void **state)
{
	char flood[400];
	struct vm vm;
	json_t *st;
	int lfd, fd;
	long long malformed, errors;

	(void)state;
	/* The flood's target listens (without accepting) so the VMM reaches its 1024. */
	snprintf(flood, sizeof(flood), "%s/v%d.sock_1000", dir, counter + 1);
	lfd = unix_listen(flood, 2048);
	vm_start(&vm, harness_vmm_asan(),
		 "work=hostile,vsock vsock_flood=1100 vsock_flood_port=1000", NULL, NULL);
	probe_need_line(&vm.p, "hostile.done=1", ECHO_TIMEOUT_MS);
	probe_need_line(&vm.p, "vsock.ready", BOOT_TIMEOUT_MS);
	probe_expect_kv(&vm.p, "hostile.vsock.recovered", "1");
	probe_expect_kv(&vm.p, "hostile.blk", "skipped");
	/* Every case: the device answered afterwards. */
	for (int i = 0; i < vm.p.nr_lines; i++) {
		const char *l = vm.p.lines[i];

		if (strncmp(l, "hostile.vsock.", 14) == 0 && strstr(l, "alive=")) {
			if (!strstr(l, "alive=1"))
				vmm_dump(&vm.p);
			assert_non_null(strstr(l, "alive=1"));
		}
	}
	/* Malformed packets that name ports are answered with RST. */
	const char *rst_cases[] = {"len_over_chain", "len_over_max",	   "wrong_type",
				   "wrong_src_cid",  "dst_cid_not_host",   "unknown_op",
				   "rw_no_conn",     "tx_payload_writable"};
	for (size_t i = 0; i < sizeof(rst_cases) / sizeof(rst_cases[0]); i++) {
		char key[64];

		snprintf(key, sizeof(key), "hostile.vsock.%s", rst_cases[i]);
		probe_expect_kv(&vm.p, key, "rst");
	}
	probe_expect_kv(&vm.p, "hostile.vsock.desc_outside_ram", "needs_reset");
	/* The flood: at most 1024 accepted, the rest refused, none lost. */
	{
		const char *l = probe_need_line(&vm.p, "hostile.vsock.flood=", 1000);
		unsigned sent, acc, ref;

		assert_int_equal(sscanf(l, "hostile.vsock.flood=sent:%u accepted:%u refused:%u",
					&sent, &acc, &ref),
				 3);
		fprintf(stderr, "flood: sent %u accepted %u refused %u\n", sent, acc, ref);
		assert_int_equal(acc + ref, sent);
		assert_true(acc <= 1024);
		assert_true(ref >= sent - 1024);
	}
	/* The VMM counted what the guest did wrong. */
	st = control(vm.control, "{\"cmd\":\"status\"}");
	malformed = json_integer_value(json_object_get(st, "vsock_malformed"));
	errors = json_integer_value(json_object_get(st, "vsock_errors"));
	fprintf(stderr,
		"status: vsock_malformed %lld vsock_errors %lld vsock_refused %lld "
		"vsock_rst_dropped %lld last_error %s\n",
		malformed, errors, json_integer_value(json_object_get(st, "vsock_refused")),
		json_integer_value(json_object_get(st, "vsock_rst_dropped")),
		json_string_value(json_object_get(st, "vsock_last_error")));
	assert_true(malformed >= 9);
	assert_true(errors >= malformed);
	assert_true(json_integer_value(json_object_get(st, "vsock_refused")) >= 1);
	json_decref(st);
	/* Alive and serving: a normal echo. */
	fd = dial(vm.vsock);
	echo_once(fd, "after the hostile guest\n");
	close(fd);
	wait_status(&vm.p, "vsock.conns", "0");
	vmm_send(&vm.p, "poweroff\n");
	probe_expect_exit(&vm.p, 0, BOOT_TIMEOUT_MS);
	assert_null(strstr(vm.p.err_text, "AddressSanitizer"));
	assert_null(strstr(vm.p.err_text, "runtime error"));
	vmm_free(&vm.p);
	close(lfd);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_echo_32_connections_64mib_each),
	    cmocka_unit_test(test_slow_reader_keeps_vmm_memory_bounded),
	    cmocka_unit_test(test_refused_and_malformed_connects),
	    cmocka_unit_test(test_guest_initiated_connections),
	    cmocka_unit_test(test_snapshot_restore_resets_connections),
	    cmocka_unit_test(test_branch_children_get_their_own_socket),
	    cmocka_unit_test(test_hostile_guest),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("virtio-vsock with the probe guest", tests, setup,
					   teardown);
}
