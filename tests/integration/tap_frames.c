/* SPDX-License-Identifier: MIT */
/* Frames through a VM's tap from the host side (tap_frames.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netpacket/packet.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"
#include "net/netns.h"
#include "tap_frames.h"

static const uint8_t guest_mac[6] = {0x02, 0x66, 0x6b, 0x00, 0x00, 0x02};
static const uint8_t host_mac[6] = {0x02, 0x66, 0x6b, 0x00, 0x00, 0x7e};

struct packet_open {
	const char *ns;
	int fd, err;
};

/* Only this short thread enters the namespace; the socket stays bound to it. */
static void *packet_open_thread(void *arg)
{
	struct packet_open *o = arg;
	struct sockaddr_ll a = {.sll_family = AF_PACKET,
				.sll_protocol = htons(TAP_FRAMES_ETHERTYPE)};
	char path[128];
	int nsfd;

	snprintf(path, sizeof(path), "/run/netns/%s", o->ns);
	nsfd = open(path, O_RDONLY | O_CLOEXEC);
	if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0) {
		o->err = errno;
		if (nsfd >= 0)
			close(nsfd);
		return NULL;
	}
	close(nsfd);
	o->fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, htons(TAP_FRAMES_ETHERTYPE));
	a.sll_ifindex = (int)if_nametoindex(FK_NET_TAP);
	if (o->fd < 0 || a.sll_ifindex == 0 || bind(o->fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		o->err = errno ? errno : ENODEV;
	return NULL;
}

int tap_frames_socket(const char *ns)
{
	struct packet_open o = {.ns = ns, .fd = -1};
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, packet_open_thread, &o), 0);
	pthread_join(t, NULL);
	if (o.err)
		fail_msg("packet socket on %s in %s: %s", FK_NET_TAP, ns, strerror(o.err));
	return o.fd;
}

int tap_frames_recv(int fd, uint8_t *buf, size_t cap, int timeout_ms)
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

int tap_frames_host_frame(uint8_t *f, size_t cap, const char *tag)
{
	int len;

	memset(f, 0, cap);
	memcpy(f, guest_mac, 6);
	memcpy(f + 6, host_mac, 6);
	f[12] = TAP_FRAMES_ETHERTYPE >> 8;
	f[13] = TAP_FRAMES_ETHERTYPE & 0xff;
	len = 14 + snprintf((char *)f + 14, cap - 14, "forkd-host %s", tag);
	return len < 60 ? 60 : len;
}

void tap_frames_echo_check(int fd, const char *tag, int timeout_ms)
{
	uint8_t f[128], e[2048];
	const size_t mark = strlen("forkd-echo ");
	int len = tap_frames_host_frame(f, sizeof(f), tag), got;

	assert_int_equal(send(fd, f, (size_t)len, 0), len);
	got = tap_frames_recv(fd, e, sizeof(e), timeout_ms);
	if (got < 0)
		fail_msg("no echo of 'forkd-host %s'", tag);
	assert_true(got >= (int)(14 + mark + strlen("forkd-host ") + strlen(tag)));
	assert_memory_equal(e, host_mac, 6);
	assert_memory_equal(e + 6, guest_mac, 6);
	assert_memory_equal(e + 14, "forkd-echo ", mark);
	assert_memory_equal(e + 14 + mark, f + 14, strlen("forkd-host ") + strlen(tag));
}
