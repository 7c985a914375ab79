/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm's virtio-net device (docs/net-device.md) with the probe guest's
 * polling driver (guest/probe/net.c). Every test makes its own network
 * namespace and tap; the host side of the tap is an AF_PACKET socket in
 * that namespace, so the test sees exactly the frames the VMM writes and
 * writes frames the VMM must read. Frames the guest sends are checked byte
 * for byte (seq and pattern), echoes likewise. Namespaces are removed in
 * the group teardown even when a test fails.
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
#include <linux/if_tun.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define BOOT_TIMEOUT_MS	 20000
#define FRAME_TIMEOUT_MS 10000
#define ETHERTYPE_TEST	 0x88b5
#define MAX_NETNS	 16

static char dir[256];
static int counter;
static char netns_made[MAX_NETNS][32];
static int nr_netns;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st != 0)
		fprintf(stderr, "command failed (%d): %s\n", st, cmd);
	return st;
}

/* A namespace of our own, "fkn<pid>x<n>", removed by the teardown. */
static const char *netns_new(void)
{
	char *name;

	assert_true(nr_netns < MAX_NETNS);
	name = netns_made[nr_netns];
	snprintf(name, sizeof(netns_made[0]), "fkn%dx%d", (int)getpid(), nr_netns);
	assert_int_equal(sh("ip netns add %s", name), 0);
	nr_netns++;
	assert_int_equal(sh("ip -n %s link set lo up", name), 0);
	return name;
}

/* A tap in ns, up, without IPv6 (whose router solicitations would be noise). */
static void tap_new(const char *ns, const char *tap)
{
	assert_int_equal(sh("ip -n %s tuntap add dev %s mode tap && "
			    "ip netns exec %s sysctl -qw net.ipv6.conf.%s.disable_ipv6=1 && "
			    "ip -n %s link set %s up",
			    ns, tap, ns, tap, ns, tap),
			 0);
}

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "net");
}

static int teardown(void **state)
{
	pid_t pids[64];
	size_t n;

	(void)state;
	/* A failed test may leave its VMMs: they hold taps in our namespaces. */
	n = harness_vmm_pids(dir, pids, 64);
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	for (int i = 0; i < nr_netns; i++)
		sh("ip netns del %s", netns_made[i]);
	nr_netns = 0;
	return harness_tmpdir_remove(dir);
}

struct packet_open {
	const char *ns, *ifname;
	int fd, err;
};

/* Only this short thread enters the namespace; the socket stays bound to it. */
static void *packet_open_thread(void *arg)
{
	struct packet_open *o = arg;
	char path[128];
	struct sockaddr_ll a = {.sll_family = AF_PACKET, .sll_protocol = htons(ETHERTYPE_TEST)};
	int nsfd;

	snprintf(path, sizeof(path), "/run/netns/%s", o->ns);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		o->err = errno;
		return NULL;
	}
	close(nsfd);
	o->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(ETHERTYPE_TEST));
	a.sll_ifindex = (int)if_nametoindex(o->ifname);
	if (o->fd < 0 || a.sll_ifindex == 0 || bind(o->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		o->err = errno;
	return NULL;
}

/* The host end of tap ifname in ns: frames of ethertype 0x88b5 only. */
static int packet_socket(const char *ns, const char *ifname)
{
	struct packet_open o = {.ns = ns, .ifname = ifname, .fd = -1};
	pthread_t t;
	int rcvbuf = 8 << 20;

	assert_int_equal(pthread_create(&t, NULL, packet_open_thread, &o), 0);
	pthread_join(t, NULL);
	if (o.err)
		fprintf(stderr, "packet socket on %s in %s: %s\n", ifname, ns, strerror(o.err));
	assert_int_equal(o.err, 0);
	setsockopt(o.fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(rcvbuf));
	return o.fd;
}

/* The next frame the VMM wrote into the tap (not one we sent): its length, or -1. */
static int recv_frame(int fd, uint8_t *buf, size_t cap, int timeout_ms)
{
	long long deadline = harness_deadline(timeout_ms);

	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		struct sockaddr_ll from;
		socklen_t flen = sizeof(from);
		long long left = deadline - now_ms();
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			return -1;
		n = recvfrom(fd, buf, cap, 0, (struct sockaddr *)&from, &flen);
		if (n < 0)
			return -1;
		if (from.sll_pkttype != PACKET_OUTGOING)
			return (int)n;
	}
}

static void send_frame(int fd, const uint8_t *f, size_t len)
{
	assert_int_equal(send(fd, f, len, 0), (ssize_t)len);
}

static void parse_mac(const char *s, uint8_t mac[6])
{
	unsigned v[6];

	assert_int_equal(sscanf(s, "%x:%x:%x:%x:%x:%x", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]),
			 6);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
}

/* A frame the probe sent: "forkd-net seq=<seq> " then bytes (seq + k), from src. */
static void expect_probe_frame(const uint8_t *f, int len, int want_len, const uint8_t *src,
			       uint64_t seq)
{
	char prefix[64];
	int k = snprintf(prefix, sizeof(prefix), "forkd-net seq=%llu ", (unsigned long long)seq);

	assert_int_equal(len, want_len);
	assert_memory_equal(f + 6, src, 6);
	assert_int_equal(f[12] << 8 | f[13], ETHERTYPE_TEST);
	assert_memory_equal(f + 14, prefix, (size_t)k);
	for (int i = 14 + k; i < len; i++)
		if (f[i] != (uint8_t)(seq + (uint64_t)i)) {
			fprintf(stderr, "frame seq %llu byte %d: 0x%02x, expected 0x%02x\n",
				(unsigned long long)seq, i, f[i], (uint8_t)(seq + (uint64_t)i));
			fail();
		}
}

/* A "forkd-host" frame of len bytes to the guest, with a payload unique to seq. */
static size_t host_frame(uint8_t *f, size_t len, const uint8_t *dst, unsigned seq)
{
	static const uint8_t src[6] = {0x02, 0x66, 0x6b, 0x00, 0x00, 0x01};
	int k;

	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = ETHERTYPE_TEST >> 8;
	f[13] = ETHERTYPE_TEST & 0xff;
	k = snprintf((char *)f + 14, len - 14, "forkd-host %u ", seq);
	for (size_t i = 14 + (size_t)k; i < len; i++)
		f[i] = (uint8_t)(seq * 7 + i);
	return len;
}

/* The control socket whose status a failed echo prints. */
static const char *echo_status_sock;

/* Sends n host frames of the given lengths and checks each echo byte for byte. */
static void echo_check(int fd, const uint8_t *guest_mac, const size_t *lens, int n)
{
	static uint8_t f[1514], e[2048];
	const size_t mark = strlen("forkd-echo ");

	for (int i = 0; i < n; i++) {
		size_t len = host_frame(f, lens[i], guest_mac, (unsigned)i);
		size_t want = len + mark > 1514 ? 1514 : len + mark;
		int got;

		send_frame(fd, f, len);
		got = recv_frame(fd, e, sizeof(e), FRAME_TIMEOUT_MS);
		if (got != (int)want) {
			fprintf(stderr, "echo %d of a %zu-byte frame: %d bytes, expected %zu\n", i,
				len, got, want);
			if (echo_status_sock) {
				json_t *st =
				    harness_call(echo_status_sock, "{\"cmd\":\"status\"}", NULL, 0);
				char *text = st ? json_dumps(st, 0) : NULL;

				fprintf(stderr, "VMM status: %s\n", text ? text : "(none)");
				free(text);
				json_decref(st);
			}
		}
		assert_int_equal(got, (int)want);
		assert_memory_equal(e, f + 6, 6); /* back to the sender */
		assert_memory_equal(e + 6, guest_mac, 6);
		assert_memory_equal(e + 14, "forkd-echo ", mark);
		assert_memory_equal(e + 14 + mark, f + 14, want - 14 - mark);
	}
}

struct vm {
	struct vmm_proc p;
	char control[300];
	uint8_t mac[6];
};

static void vm_start(struct vm *vm, const char *vmm, const char *ns, const char *tap,
		     const char *append)
{
	char net[200];
	char macbuf[32];

	snprintf(vm->control, sizeof(vm->control), "%s/c%d.sock", dir, ++counter);
	snprintf(net, sizeof(net), "tap=%s,netns=%s", tap, ns);
	probe_start(&vm->p, vmm, "128M", "1", append, "--net", net, "--control", vm->control, NULL);
	probe_need_line(&vm->p, "READY", BOOT_TIMEOUT_MS);
	probe_need_line(&vm->p, "net.ready", BOOT_TIMEOUT_MS);
	echo_status_sock = vm->control;
	assert_non_null(vmm_value(&vm->p, "mac", macbuf, sizeof(macbuf)));
	parse_mac(macbuf, vm->mac);
}

static void vm_stop(struct vm *vm)
{
	vmm_send(&vm->p, "poweroff\n");
	probe_expect_exit(&vm->p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&vm->p);
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

/* ---- tests ---- */

static void test_frames_both_ways(void **state)
{
	static const size_t lens[] = {60, 64, 100, 128, 500, 999, 1400, 1500, 1514, 61, 1024};
	const char *ns = netns_new();
	uint8_t f[2048];
	struct vm vm;
	int fd;

	(void)state;
	tap_new(ns, "fktap0");
	fd = packet_socket(ns, "fktap0");
	vm_start(&vm, NULL, ns, "fktap0", "work=net net_tx=16 net_len=300");
	for (uint64_t i = 0; i < 16; i++)
		expect_probe_frame(f, recv_frame(fd, f, sizeof(f), FRAME_TIMEOUT_MS), 300, vm.mac,
				   i);
	probe_need_line(&vm.p, "net.send.done seq=0 total=16", FRAME_TIMEOUT_MS);
	echo_check(fd, vm.mac, lens, (int)(sizeof(lens) / sizeof(lens[0])));
	/* The VMM counted the same. */
	assert_int_equal(status_int(vm.control, "net_tx_packets"),
			 16 + (long long)(sizeof(lens) / sizeof(lens[0])));
	assert_int_equal(status_int(vm.control, "net_rx_packets"),
			 (long long)(sizeof(lens) / sizeof(lens[0])));
	assert_int_equal(status_int(vm.control, "net_tx_malformed"), 0);
	assert_int_equal(status_int(vm.control, "net_offloads"), 0);
	vm_stop(&vm);
	close(fd);
}

/*
 * MRG_RXBUF with 256-byte buffers: a 1514-byte frame spans seven of them.
 * The guest also accepts the receive offloads: the tap is told so.
 */
static void test_mergeable_rx_buffers(void **state)
{
	static const size_t lens[] = {1514, 60, 245, 256, 257, 1000, 1514, 1514};
	const char *ns = netns_new();
	struct vm vm;
	int fd;

	(void)state;
	tap_new(ns, "fktap0");
	fd = packet_socket(ns, "fktap0");
	vm_start(&vm, NULL, ns, "fktap0",
		 "work=net net_tx=0 net_mrg=1 net_rxbuf=256 net_offload=1");
	probe_expect_kv(&vm.p, "mrg", "1");
	probe_expect_kv(&vm.p, "rxbuf", "256");
	echo_check(fd, vm.mac, lens, (int)(sizeof(lens) / sizeof(lens[0])));
	/* TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 */
	assert_int_equal(status_int(vm.control, "net_offloads"), 7);
	assert_int_equal(status_int(vm.control, "net_errors"), 0);
	vmm_send(&vm.p, "net status m\n");
	probe_need_line(&vm.p, "net.status tag=m ", FRAME_TIMEOUT_MS);
	probe_expect_kv(&vm.p, "net.rx_bad", "0");
	vm_stop(&vm);
	close(fd);
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

/* Longest gap between two status replies while something else floods. */
static long long status_max_ms(const char *sock, int rounds)
{
	long long worst = 0;

	for (int i = 0; i < rounds; i++) {
		long long t0 = now_ms(), dt;
		json_t *r = control(sock, "{\"cmd\":\"status\"}");

		dt = now_ms() - t0;
		json_decref(r);
		if (dt > worst)
			worst = dt;
		usleep(20000);
	}
	return worst;
}

struct flooder {
	int fd;
	const uint8_t *dst;
	volatile int stop;
	long long sent;
};

static void *flood_thread(void *arg)
{
	struct flooder *fl = arg;
	uint8_t f[128];

	memcpy(f, fl->dst, 6);
	memset(f + 6, 0x02, 6);
	f[12] = ETHERTYPE_TEST >> 8;
	f[13] = ETHERTYPE_TEST & 0xff;
	memset(f + 14, 0, sizeof(f) - 14);
	memcpy(f + 14, "forkd-count", 11);
	while (!fl->stop) {
		if (send(fl->fd, f, sizeof(f), MSG_DONTWAIT) == (ssize_t)sizeof(f))
			fl->sent++;
	}
	return NULL;
}

/*
 * The host floods the guest with frames: the VMM reads at most a batch per
 * wakeup and the control socket keeps answering, its memory does not grow
 * (what the guest cannot take stays in, and is dropped by, the kernel's tap
 * queue); then the guest's echo works.
 */
static void test_host_flood_keeps_control_responsive(void **state)
{
	static const size_t lens[] = {100};
	const char *ns = netns_new();
	struct flooder fl = {0};
	long long worst, counted_status;
	long rss_before, rss_after;
	char buf[64];
	pthread_t t;
	struct vm vm;
	int fd;

	(void)state;
	tap_new(ns, "fktap0");
	fd = packet_socket(ns, "fktap0");
	vm_start(&vm, NULL, ns, "fktap0", "work=net net_tx=0");
	fl.fd = packet_socket(ns, "fktap0");
	fl.dst = vm.mac;
	rss_before = vmm_rss_kib(vm.p.pid);
	assert_int_equal(pthread_create(&t, NULL, flood_thread, &fl), 0);
	worst = status_max_ms(vm.control, 50);
	rss_after = vmm_rss_kib(vm.p.pid);
	fl.stop = 1;
	pthread_join(t, NULL);
	fprintf(stderr,
		"host flood: %lld frames sent, slowest status %lld ms, VMM RSS %ld -> %ld KiB\n",
		fl.sent, worst, rss_before, rss_after);
	/* The device holds one packet at most: 4 MiB covers allocator noise. */
	assert_true(rss_after - rss_before < 4096);
	assert_true(fl.sent > 10000);
	assert_true(worst < 500);
	/* The tap's queue is full of the flood (the kernel dropped the rest): let it drain. */
	counted_status = -1;
	for (long long end = harness_deadline(FRAME_TIMEOUT_MS), prev = -2; now_ms() < end;) {
		prev = counted_status;
		usleep(200000);
		counted_status = status_int(vm.control, "net_rx_packets");
		if (counted_status == prev)
			break;
	}
	assert_true(counted_status > 1000);
	echo_check(fd, vm.mac, lens, 1);
	vmm_send(&vm.p, "net status f\n");
	probe_need_line(&vm.p, "net.status tag=f ", FRAME_TIMEOUT_MS);
	assert_non_null(vmm_value(&vm.p, "net.counted", buf, sizeof(buf)));
	fprintf(stderr, "guest counted %s, VMM delivered %lld\n", buf, counted_status);
	assert_true(atoll(buf) > 1000);
	vm_stop(&vm);
	close(fl.fd);
	close(fd);
}

/* The hostile guest against the ASan VMM: errors are counted, the VMM lives and answers. */
static void test_hostile_guest(void **state)
{
	static const char *const used[] = {"short_header",	  "short_frame",
					   "writable_desc",	  "gso_not_negotiated",
					   "csum_not_negotiated", "oversized_frame"};
	static const char *const reset[] = {"desc_outside_ram", "looping_chain",
					    "next_out_of_range", "avail_idx_jump", "indirect"};
	const char *ns = netns_new();
	char net[128], control_path[300], key[64];
	uint8_t f[2048];
	struct vmm_proc p;
	long long worst = 0;
	bool alive = false;
	json_t *st;
	int fd;

	(void)state;
	tap_new(ns, "fktap0");
	fd = packet_socket(ns, "fktap0");
	snprintf(control_path, sizeof(control_path), "%s/h%d.sock", dir, ++counter);
	snprintf(net, sizeof(net), "tap=fktap0,netns=%s", ns);
	probe_start(&p, harness_vmm_asan(), "128M", "1", "work=nethostile net_flood=200000",
		    "--net", net, "--control", control_path, NULL);
	probe_need_line(&p, "READY", BOOT_TIMEOUT_MS);
	/*
	 * While the guest floods, the control socket answers; the tap is
	 * drained all along (a full socket buffer would drop the last frame).
	 */
	for (long long end = harness_deadline(120000); now_ms() < end;) {
		long long t0 = now_ms(), dt;
		json_t *r = harness_call(control_path, "{\"cmd\":\"status\"}", NULL, 0);
		ssize_t n;

		dt = now_ms() - t0;
		if (r)
			json_decref(r);
		if (dt > worst)
			worst = dt;
		while ((n = recv(fd, f, sizeof(f), MSG_DONTWAIT)) > 0)
			alive |= n > 30 && memcmp(f + 14, "forkd-net alive", 15) == 0;
		if (vmm_wait_line(&p, "nethostile.done", 20))
			break;
	}
	probe_need_line(&p, "nethostile.done", 1000);
	for (size_t i = 0; i < sizeof(used) / sizeof(used[0]); i++) {
		snprintf(key, sizeof(key), "nethostile.%s", used[i]);
		probe_expect_kv(&p, key, "used");
	}
	for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++) {
		snprintf(key, sizeof(key), "nethostile.%s", reset[i]);
		probe_expect_kv(&p, key, "needs_reset");
	}
	fprintf(stderr, "guest flood: %s; slowest status %lld ms\n",
		vmm_wait_line(&p, "nethostile.flood=", 1000), worst);
	assert_true(worst < 500);
	/* The last frame after the flood arrives on the tap (the flood's may be dropped). */
	for (long long end = harness_deadline(FRAME_TIMEOUT_MS); !alive && now_ms() < end;) {
		int n = recv_frame(fd, f, sizeof(f), 1000);

		alive = n > 30 && memcmp(f + 14, "forkd-net alive", 15) == 0;
	}
	st = control(control_path, "{\"cmd\":\"status\"}");
	fprintf(stderr,
		"status: net_tx_packets %lld net_tx_errors %lld net_tx_malformed %lld net_errors "
		"%lld last_error %s\n",
		json_integer_value(json_object_get(st, "net_tx_packets")),
		json_integer_value(json_object_get(st, "net_tx_errors")),
		json_integer_value(json_object_get(st, "net_tx_malformed")),
		json_integer_value(json_object_get(st, "net_errors")),
		json_string_value(json_object_get(st, "net_last_error")));
	assert_true(alive);
	assert_int_equal(json_integer_value(json_object_get(st, "net_tx_malformed")), 6);
	assert_true(json_integer_value(json_object_get(st, "net_tx_packets")) >= 1000);
	assert_true(json_integer_value(json_object_get(st, "net_tx_budget_exhausted")) >= 1);
	json_decref(st);
	/* Logged, but only the first VIRTIO_NET_LOG_LIMIT lines. */
	assert_non_null(strstr(p.err_text, "virtio-net fktap0: tx chain at head 0 dropped"));
	assert_non_null(strstr(p.err_text, "loop"));
	vmm_send(&p, "poweroff\n");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	assert_null(strstr(p.err_text, "AddressSanitizer"));
	assert_null(strstr(p.err_text, "runtime error"));
	vmm_free(&p);
	close(fd);
}

/*
 * BRANCH: the children must not share the source's tap. A child starts
 * link-down (its tx is dropped and counted), gets its own tap in its own
 * namespace with net-attach, and then its frames arrive there and only
 * there; the source goes on echoing on its own tap.
 */
static void test_branch_child_gets_own_tap(void **state)
{
	static const size_t lens[] = {200};
	const char *ns = netns_new(), *child_ns = netns_new();
	char bdir[400], req[600], log[700], in[700], csock[700];
	uint8_t f[2048];
	const char *cdir;
	json_t *reply, *st;
	struct vm vm;
	char *line;
	int fd, cfd, n;

	(void)state;
	tap_new(ns, "fktap0");
	tap_new(child_ns, "fktapc");
	fd = packet_socket(ns, "fktap0");
	cfd = packet_socket(child_ns, "fktapc");
	vm_start(&vm, NULL, ns, "fktap0", "work=net net_tx=0");
	snprintf(bdir, sizeof(bdir), "%s/b%d", dir, ++counter);
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s\"}", bdir);
	reply = control(vm.control, req);
	cdir = json_string_value(
	    json_object_get(json_array_get(json_object_get(reply, "children"), 0), "dir"));
	assert_non_null(cdir);
	snprintf(log, sizeof(log), "%s/serial.log", cdir);
	snprintf(in, sizeof(in), "%s/serial.in", cdir);
	snprintf(csock, sizeof(csock), "%s/control.sock", cdir);

	/* Link down: the guest sees it, its frames are counted as dropped. */
	line = file_wait_line(log, "net.link=down", 0, BOOT_TIMEOUT_MS);
	assert_non_null(line);
	free(line);
	st = control(csock, "{\"cmd\":\"status\"}");
	assert_false(json_is_true(json_object_get(st, "net_link_up")));
	assert_string_equal(json_string_value(json_object_get(st, "net_tap")), "");
	json_decref(st);
	assert_int_equal(fifo_send(in, "net send 3 100\n"), 0);
	line = file_wait_line(log, "net.send.done seq=1", 0, FRAME_TIMEOUT_MS);
	assert_non_null(line);
	free(line);
	assert_int_equal(status_int(csock, "net_tx_dropped_link_down"), 3);
	/* Nothing of the child's reached the source's tap. */
	assert_int_equal(recv_frame(fd, f, sizeof(f), 300), -1);

	snprintf(req, sizeof(req), "{\"cmd\":\"net-attach\",\"tap\":\"fktapc\",\"netns\":\"%s\"}",
		 child_ns);
	json_decref(control(csock, req));
	line = file_wait_line(log, "net.link=up", 0, BOOT_TIMEOUT_MS);
	assert_non_null(line);
	free(line);
	assert_int_equal(fifo_send(in, "net send 2 150\n"), 0);
	for (uint64_t i = 3; i < 5; i++) {
		n = recv_frame(cfd, f, sizeof(f), FRAME_TIMEOUT_MS);
		expect_probe_frame(f, n, 150, vm.mac, i);
	}
	assert_int_equal(recv_frame(fd, f, sizeof(f), 300), -1);
	echo_check(cfd, vm.mac, lens, 1); /* the child echoes on its tap */
	echo_check(fd, vm.mac, lens, 1);  /* the source on its own */
	/* A tap that does not exist: a clear error, the device keeps its tap. */
	json_decref(harness_call_expect(
	    csock, "{\"cmd\":\"net-attach\",\"tap\":\"fknope\",\"netns\":\"nope\"}", false));
	assert_true(json_is_true(
	    json_object_get(st = control(csock, "{\"cmd\":\"status\"}"), "net_link_up")));
	json_decref(st);
	json_decref(control(csock, "{\"cmd\":\"shutdown\"}"));
	json_decref(reply);
	vm_stop(&vm);
	close(fd);
	close(cfd);
}

/* Snapshot and restore: the device state comes back, on the tap the restore names. */
static void test_snapshot_restore(void **state)
{
	static const size_t lens[] = {77, 1514};
	const char *ns = netns_new();
	char snap[400], req[600], net[128], ctl[300];
	struct vmm_proc r;
	uint8_t f[2048];
	struct vm vm;
	int fd, fd2;

	(void)state;
	tap_new(ns, "fktap0");
	tap_new(ns, "fktap1");
	fd = packet_socket(ns, "fktap0");
	fd2 = packet_socket(ns, "fktap1");
	vm_start(&vm, NULL, ns, "fktap0", "work=net net_tx=0");
	echo_check(fd, vm.mac, lens, 2);
	snprintf(snap, sizeof(snap), "%s/snap%d", dir, ++counter);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	json_decref(control(vm.control, req));
	vm_stop(&vm);

	snprintf(net, sizeof(net), "tap=fktap1,netns=%s", ns);
	snprintf(ctl, sizeof(ctl), "%s/r%d.sock", dir, counter);
	{
		char *argv[] = {(char *)harness_vmm(), "--restore", snap,	   "--net", net,
				"--control",	       ctl,	    "--serial-in", "stdin", NULL};
		assert_int_equal(vmm_start(&r, argv), 0);
	}
	/* The restored guest runs (and the tap is attached) once it sees its new generation. */
	probe_need_line(&r, "genid.changed", BOOT_TIMEOUT_MS);
	echo_check(fd2, vm.mac, lens, 2);
	assert_int_equal(recv_frame(fd, f, sizeof(f), 300), -1);
	vmm_send(&r, "net status s\n");
	probe_need_line(&r, "net.status tag=s ", FRAME_TIMEOUT_MS);
	probe_expect_kv(&r, "net.echoed", "4"); /* 2 before the snapshot, 2 after */
	vmm_send(&r, "poweroff\n");
	probe_expect_exit(&r, 0, BOOT_TIMEOUT_MS);
	vmm_free(&r);
	close(fd);
	close(fd2);
}

static int run_vmm_err(char *const argv[], const char *want)
{
	struct vmm_proc p;
	int st = vmm_run_to_exit(&p, argv, BOOT_TIMEOUT_MS);

	if (!strstr(p.err_text, want))
		fprintf(stderr, "expected \"%s\" in: %s\n", want, p.err_text);
	assert_non_null(strstr(p.err_text, want));
	vmm_free(&p);
	return st;
}

/* Bad --net input is refused before the guest runs, naming what was wrong. */
static void test_bad_input(void **state)
{
	const char *ns = netns_new();
	char net[128];
	struct ifreq ifr = {0};
	int busy;

	(void)state;
	{
		char *argv[] = {(char *)harness_vmm(),	       "--kernel",
				(char *)harness_probe(),       "--net",
				"tap=fkx,netns=fk-no-such-ns", NULL};
		assert_int_equal(run_vmm_err(argv, "unknown netns fk-no-such-ns"), 2);
	}
	{
		char *argv[] = {(char *)harness_vmm(),		 "--kernel",
				(char *)harness_probe(),	 "--net",
				"tap=fkx,mac=01:02:03:04:05:06", NULL};
		assert_int_equal(run_vmm_err(argv, "not a unicast MAC"), 2);
	}
	{
		char *argv[] = {(char *)harness_vmm(),	 "--kernel",
				(char *)harness_probe(), "--net",
				"mac=02:02:03:04:05:06", NULL};
		assert_int_equal(run_vmm_err(argv, "expected tap=NAME"), 2);
	}
	/* A tap someone else has open is busy. */
	tap_new(ns, "fkbusy");
	busy = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	assert_true(busy >= 0);
	{
		/* Our own namespace has no fkbusy: create one there and hold it. */
		snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "fkbusy%d", (int)getpid() % 1000);
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
		assert_int_equal(ioctl(busy, TUNSETIFF, &ifr), 0);
		snprintf(net, sizeof(net), "tap=%s", ifr.ifr_name);
		char *argv[] = {
		    (char *)harness_vmm(), "--kernel", (char *)harness_probe(), "--net", net, NULL};
		assert_int_equal(run_vmm_err(argv, "busy"), 1);
	}
	close(busy);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_frames_both_ways),
	    cmocka_unit_test(test_mergeable_rx_buffers),
	    cmocka_unit_test(test_host_flood_keeps_control_responsive),
	    cmocka_unit_test(test_hostile_guest),
	    cmocka_unit_test(test_branch_child_gets_own_tap),
	    cmocka_unit_test(test_snapshot_restore),
	    cmocka_unit_test(test_bad_input),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	/* FORKD_TEST_FILTER=test_x runs only that test (while debugging one). */
	if (getenv("FORKD_TEST_FILTER"))
		cmocka_set_test_filter(getenv("FORKD_TEST_FILTER"));
	return cmocka_run_group_tests_name("virtio-net with the probe guest", tests, setup,
					   teardown);
}
