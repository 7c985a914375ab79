/* SPDX-License-Identifier: MIT */
/*
 * virtio-net against a fake guest (virtio_guest.h) with a SOCK_SEQPACKET
 * socketpair standing in for the tap: like a tap, each read returns one
 * packet and each writev sends one, header first. (It refuses
 * TUNSETOFFLOAD, which the offload test uses as the tap's failure.)
 * --net parsing is tested here too.
 */
#include "virtio_guest.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "core/config.h"
#include "devices/virtio_net.h"

#define QNUM	      256
#define RXQ_DESC      0x1000ULL
#define TXQ_DESC      0x4000ULL
#define RX_BUF_GPA    0x10000ULL /* RX_STRIDE apart */
#define RX_STRIDE     0x800ULL
#define TX_GPA	      0x100000ULL /* TX_STRIDE apart */
#define TX_STRIDE     0x800ULL
#define BASE_FEATURES ((1ULL << VIRTIO_F_VERSION_1) | VIRTIO_NET_F_MAC | VIRTIO_NET_F_STATUS)

static const uint8_t test_mac[6] = {0x02, 0x11, 0x22, 0x33, 0x44, 0x55};

struct nfx {
	struct guest_mem mem;
	struct virtio_net *net;
	struct virtio_mmio t;
	struct vg_queue rxq, txq;
	int irq;
	int host; /* our end of the "tap" */
	uint16_t rx_seen, tx_seen;
};

static void new_device(struct nfx *f, bool with_tap)
{
	struct fk_err err;
	int sv[2] = {-1, -1};

	if (with_tap) {
		assert_int_equal(
		    socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
		f->host = sv[0];
		/* Room for every packet a test queues before the device reads any. */
		setsockopt(f->host, SOL_SOCKET, SO_SNDBUFFORCE, &(int){8 << 20}, sizeof(int));
		setsockopt(sv[1], SOL_SOCKET, SO_SNDBUFFORCE, &(int){8 << 20}, sizeof(int));
	}
	assert_int_equal(virtio_net_create(&f->net, test_mac, sv[1], with_tap ? "fake0" : "", &err),
			 0);
	assert_int_equal(virtio_mmio_init(&f->t, &virtio_net_ops, f->net, &f->mem,
					  vg_irq_line(f->irq), VG_MMIO_BASE, &err),
			 0);
	virtio_net_attach(f->net, &f->t);
	/* The tx queue re-kicks itself through its notification fd after a full batch. */
	for (uint32_t q = 0; q < VIRTIO_NET_NR_QUEUES; q++)
		assert_int_equal(virtio_net_watch_notify(
				     f->net, q, eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC), &err),
				 0);
}

static void bring_up(struct nfx *f, uint64_t features)
{
	assert_true(vg_negotiate(&f->t, features) & VIRTIO_STATUS_FEATURES_OK);
	f->rxq = (struct vg_queue){
	    .num = QNUM, .desc = RXQ_DESC, .avail = RXQ_DESC + 0x1000, .used = RXQ_DESC + 0x2000};
	f->txq = (struct vg_queue){
	    .num = QNUM, .desc = TXQ_DESC, .avail = TXQ_DESC + 0x1000, .used = TXQ_DESC + 0x2000};
	vg_setup_queue(&f->t, &f->mem, VIRTIO_NET_QUEUE_RX, &f->rxq);
	vg_setup_queue(&f->t, &f->mem, VIRTIO_NET_QUEUE_TX, &f->txq);
	vg_driver_ok(&f->t);
	f->rx_seen = f->tx_seen = 0;
}

static int setup_common(void **state, bool with_tap)
{
	struct nfx *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->host = -1;
	vg_mem_init(&f->mem);
	f->irq = vg_irq_fd();
	new_device(f, with_tap);
	bring_up(f, BASE_FEATURES);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_common(state, true);
}

static int setup_no_tap(void **state)
{
	return setup_common(state, false);
}

static int teardown(void **state)
{
	struct nfx *f = *state;

	virtio_net_close(f->net);
	virtio_mmio_destroy(&f->t);
	if (f->host >= 0)
		close(f->host);
	close(f->irq);
	guest_mem_destroy(&f->mem);
	free(f);
	return 0;
}

/* Runs the device's events until nothing is ready; fails if it never settles. */
static void pump(struct nfx *f)
{
	for (int i = 0; i < 1000; i++)
		if (virtio_net_process_events(f->net) == 0)
			return;
	fail_msg("the device's events never settled (busy loop?)");
}

static struct virtio_net_stats stats(struct nfx *f)
{
	struct virtio_net_stats st;

	virtio_net_get_stats(f->net, &st);
	return st;
}

/* ---- guest side ---- */

static void rx_post(struct nfx *f, uint16_t i, uint32_t len)
{
	vg_desc(&f->mem, &f->rxq, i, RX_BUF_GPA + i * RX_STRIDE, len, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->rxq, i);
}

/* A tx chain at slot i: header (12 bytes, given flags/gso) and frame split at `split`. */
static void tx_packet(struct nfx *f, uint16_t i, const uint8_t *frame, uint32_t len, uint8_t flags,
		      uint8_t gso, uint32_t split)
{
	uint64_t gpa = TX_GPA + i * TX_STRIDE;
	uint8_t *p = vg_ptr(&f->mem, gpa, VIRTIO_NET_HDR_SIZE + len);

	memset(p, 0, VIRTIO_NET_HDR_SIZE);
	p[0] = flags;
	p[1] = gso;
	memcpy(p + VIRTIO_NET_HDR_SIZE, frame, len);
	if (split && split < VIRTIO_NET_HDR_SIZE + len) {
		/* Two descriptors, i and i + QNUM/2, splitting the stream anywhere. */
		uint16_t second = (uint16_t)(i + QNUM / 2);

		vg_desc(&f->mem, &f->txq, i, gpa, split, VIRTQ_DESC_F_NEXT, second);
		vg_desc(&f->mem, &f->txq, second, gpa + split, VIRTIO_NET_HDR_SIZE + len - split, 0,
			0);
	} else {
		vg_desc(&f->mem, &f->txq, i, gpa, VIRTIO_NET_HDR_SIZE + len, 0, 0);
	}
	vg_publish(&f->mem, &f->txq, i);
}

static void make_frame(uint8_t *fr, uint32_t len, uint8_t seed)
{
	memset(fr, 0xff, 6);
	memcpy(fr + 6, test_mac, 6);
	fr[12] = 0x88;
	fr[13] = 0xb5;
	for (uint32_t k = 14; k < len; k++)
		fr[k] = (uint8_t)(seed + k);
}

/* The next used element of q, or false. */
static bool used_next(struct nfx *f, struct vg_queue *q, uint16_t *seen, uint32_t *id,
		      uint32_t *len)
{
	if (vg_used_idx(&f->mem, q) == *seen)
		return false;
	vg_used_elem(&f->mem, q, *seen, id, len);
	(*seen)++;
	return true;
}

/* A packet as the tap gives it: zero vnet header then the frame. */
static void host_send(struct nfx *f, const uint8_t *frame, uint32_t len)
{
	uint8_t buf[VIRTIO_NET_HDR_SIZE + 70000] = {0};

	memcpy(buf + VIRTIO_NET_HDR_SIZE, frame, len);
	/* Garbage where num_buffers goes: the device must overwrite it. */
	buf[10] = 0xee;
	buf[11] = 0xee;
	assert_int_equal(send(f->host, buf, VIRTIO_NET_HDR_SIZE + len, 0),
			 (ssize_t)(VIRTIO_NET_HDR_SIZE + len));
}

static ssize_t host_recv(struct nfx *f, uint8_t *buf, size_t cap)
{
	return recv(f->host, buf, cap, MSG_DONTWAIT);
}

/* ---- tests ---- */

static void test_identity_and_config(void **state)
{
	struct nfx *f = *state;
	uint64_t feats = vg_device_features(&f->t);
	uint8_t cfg[8];

	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_NET);
	assert_true(feats & (1ULL << VIRTIO_F_VERSION_1));
	assert_true(feats & VIRTIO_NET_F_MAC);
	assert_true(feats & VIRTIO_NET_F_STATUS);
	assert_true(feats & VIRTIO_NET_F_MRG_RXBUF);
	assert_true(feats & VIRTIO_NET_F_CSUM);
	assert_true(feats & VIRTIO_NET_F_GUEST_TSO4);
	assert_true(feats & VIRTIO_NET_F_HOST_TSO6);
	for (int i = 0; i < 8; i++)
		virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + (uint64_t)i, &cfg[i], 1);
	assert_memory_equal(cfg, test_mac, 6);
	assert_int_equal(cfg[6] | cfg[7] << 8, VIRTIO_NET_S_LINK_UP);
	assert_true(virtio_net_link_up(f->net));
	assert_string_equal(virtio_net_tap_name(f->net), "fake0");
}

static void test_tx_reaches_tap(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[1514], got[2048];
	uint32_t id, len;

	for (uint16_t i = 0; i < 3; i++) {
		uint32_t flen = i == 0 ? 60 : i == 1 ? 1514 : 333;

		make_frame(fr, flen, (uint8_t)i);
		/* Split inside the header, at its end, and inside the frame. */
		tx_packet(f, i, fr, flen, 0, 0, i == 0 ? 5 : i == 1 ? 12 : 100);
		vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
		assert_int_equal(host_recv(f, got, sizeof(got)), VIRTIO_NET_HDR_SIZE + flen);
		assert_memory_equal(got + VIRTIO_NET_HDR_SIZE, fr, flen);
		assert_true(used_next(f, &f->txq, &f->tx_seen, &id, &len));
		assert_int_equal(id, i);
		assert_int_equal(len, 0);
	}
	assert_int_equal(stats(f).tx_packets, 3);
	assert_int_equal(stats(f).tx_bytes, 60 + 1514 + 333);
	assert_true(vg_irqs(f->irq) >= 1);
}

/* Malformed packets are dropped and counted; the chain comes back; the device goes on. */
static void test_tx_malformed_packets(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[200], got[2048];
	uint32_t id, len;
	uint16_t i = 0;

	make_frame(fr, sizeof(fr), 1);
	/* Header too short: 8 bytes in all. */
	vg_desc(&f->mem, &f->txq, i, TX_GPA, 8, 0, 0);
	vg_publish(&f->mem, &f->txq, i++);
	/* Frame shorter than an Ethernet header. */
	tx_packet(f, i++, fr, 10, 0, 0, 0);
	/* NEEDS_CSUM, GSO TCPv4 and a GSO type nobody offered, none negotiated. */
	tx_packet(f, i++, fr, sizeof(fr), VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0);
	tx_packet(f, i++, fr, sizeof(fr), 0, VIRTIO_NET_HDR_GSO_TCPV4, 0);
	tx_packet(f, i++, fr, sizeof(fr), 0, 3 /* UDP */, 0);
	/* A device-writable descriptor in a tx chain. */
	vg_desc(&f->mem, &f->txq, i, TX_GPA, 100, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->txq, i++);
	/* A frame larger than 64 KiB + 14. */
	vg_desc(&f->mem, &f->txq, i, TX_GPA, 70000, 0, 0);
	vg_publish(&f->mem, &f->txq, i++);
	/* Then a good one. */
	tx_packet(f, i++, fr, sizeof(fr), 0, 0, 0);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
	for (uint16_t k = 0; k < i; k++) {
		assert_true(used_next(f, &f->txq, &f->tx_seen, &id, &len));
		assert_int_equal(id, k);
	}
	assert_int_equal(stats(f).tx_malformed, 7);
	assert_int_equal(stats(f).tx_packets, 1);
	assert_int_equal(host_recv(f, got, sizeof(got)), VIRTIO_NET_HDR_SIZE + sizeof(fr));
	assert_int_equal(host_recv(f, got, sizeof(got)), -1);
	assert_false(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_non_null(strstr(f->t.last_error, "virtio-net"));
}

/* With the offloads negotiated, the same headers pass. */
static void test_tx_offload_headers_when_negotiated(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[200], got[2048];

	bring_up(f, BASE_FEATURES | VIRTIO_NET_F_CSUM | VIRTIO_NET_F_HOST_TSO4);
	make_frame(fr, sizeof(fr), 2);
	tx_packet(f, 0, fr, sizeof(fr), VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
	assert_int_equal(host_recv(f, got, sizeof(got)), VIRTIO_NET_HDR_SIZE + sizeof(fr));
	assert_int_equal(got[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
	assert_int_equal(stats(f).tx_malformed, 0);
}

/* Broken rings stop the device until reset, with a configuration interrupt. */
static void test_tx_broken_rings(void **state)
{
	struct nfx *f = *state;
	static const struct {
		uint64_t addr;
		uint32_t len;
		uint16_t flags, next;
		uint16_t jump;
	} cases[] = {
	    {1ULL << 40, 100, 0, 0, 0},		    /* outside guest RAM */
	    {TX_GPA, 100, VIRTQ_DESC_F_NEXT, 0, 0}, /* a chain looping on itself */
	    {TX_GPA, 100, VIRTQ_DESC_F_NEXT, 999, 0},
	    {TX_GPA, 100, VIRTQ_DESC_F_INDIRECT, 0, 0},
	    {TX_GPA, 100, 0, 0, 500}, /* avail idx far ahead */
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		bring_up(f, BASE_FEATURES);
		vg_irqs(f->irq);
		vg_desc(&f->mem, &f->txq, 0, cases[c].addr, cases[c].len, cases[c].flags,
			cases[c].next);
		vg_publish(&f->mem, &f->txq, 0);
		if (cases[c].jump)
			vg_set_avail_idx(&f->mem, &f->txq, cases[c].jump);
		vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
		assert_true(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
		assert_true(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS) &
			    VIRTIO_MMIO_INT_CONFIG);
		assert_true(vg_irqs(f->irq) >= 1);
		/* Further notifications are ignored until reset. */
		vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
	}
	/* After a reset it works again. */
	bring_up(f, BASE_FEATURES);
	{
		uint8_t fr[100], got[256];

		make_frame(fr, sizeof(fr), 3);
		tx_packet(f, 0, fr, sizeof(fr), 0, 0, 0);
		vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
		assert_int_equal(host_recv(f, got, sizeof(got)), VIRTIO_NET_HDR_SIZE + sizeof(fr));
	}
}

static void test_rx_one_buffer(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[1514];
	uint32_t id, len;
	const uint8_t *buf;

	for (uint16_t i = 0; i < 4; i++)
		rx_post(f, i, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 4);
	host_send(f, fr, sizeof(fr));
	host_send(f, fr, 60);
	pump(f);
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(id, 0);
	assert_int_equal(len, VIRTIO_NET_HDR_SIZE + sizeof(fr));
	buf = vg_ptr(&f->mem, RX_BUF_GPA, len);
	assert_int_equal(buf[10] | buf[11] << 8, 1); /* num_buffers */
	assert_memory_equal(buf + VIRTIO_NET_HDR_SIZE, fr, sizeof(fr));
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(len, VIRTIO_NET_HDR_SIZE + 60);
	assert_false(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(stats(f).rx_packets, 2);
	assert_int_equal(stats(f).rx_bytes, 1514 + 60);
}

/* No rx buffers: the tap is not read (nothing spins); a notify with buffers delivers. */
static void test_rx_waits_for_buffers(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[100];
	uint32_t id, len;

	rx_post(f, 0, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 5);
	host_send(f, fr, sizeof(fr));
	host_send(f, fr, sizeof(fr));
	host_send(f, fr, sizeof(fr));
	pump(f); /* settles although the "tap" stays readable */
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_false(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_true(stats(f).rx_no_buffers >= 1);
	assert_int_equal(virtio_net_process_events(f->net), 0);
	rx_post(f, 1, 2048);
	rx_post(f, 2, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	pump(f);
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(id, 1);
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(id, 2);
	assert_int_equal(stats(f).rx_packets, 3);
	assert_int_equal(stats(f).rx_dropped, 0);
}

/* MRG_RXBUF: a frame spread over buffers of 100 bytes, num_buffers in the first. */
static void test_rx_mergeable(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[300], out[400];
	uint32_t id, len, off = 0;
	const uint8_t *first;

	bring_up(f, BASE_FEATURES | VIRTIO_NET_F_MRG_RXBUF);
	for (uint16_t i = 0; i < 8; i++)
		rx_post(f, i, 100);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 6);
	host_send(f, fr, sizeof(fr));
	pump(f);
	/* 12 + 300 = 312 bytes: 100, 100, 100, 12. */
	for (uint16_t i = 0; i < 4; i++) {
		assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
		assert_int_equal(id, i);
		assert_int_equal(len, i < 3 ? 100 : 12);
		memcpy(out + off, vg_ptr(&f->mem, RX_BUF_GPA + id * RX_STRIDE, len), len);
		off += len;
	}
	first = vg_ptr(&f->mem, RX_BUF_GPA, 12);
	assert_int_equal(first[10] | first[11] << 8, 4);
	assert_memory_equal(out + VIRTIO_NET_HDR_SIZE, fr, sizeof(fr));
	/* Not enough buffers left for the next (4 more needed, 4 left, then 0): it waits. */
	host_send(f, fr, sizeof(fr));
	host_send(f, fr, sizeof(fr));
	pump(f);
	for (uint16_t i = 0; i < 4; i++)
		assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_false(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_true(stats(f).rx_no_buffers >= 1);
	for (uint16_t i = 8; i < 12; i++)
		rx_post(f, i, 100);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	pump(f);
	for (uint16_t i = 8; i < 12; i++) {
		assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
		assert_int_equal(id, i);
	}
	assert_int_equal(stats(f).rx_packets, 3);
}

/* Without MRG_RXBUF a buffer too small for the packet: dropped, the buffer returned empty. */
static void test_rx_buffer_too_small(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[200];
	uint32_t id, len;

	rx_post(f, 0, 100);
	rx_post(f, 1, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 7);
	host_send(f, fr, sizeof(fr));
	host_send(f, fr, sizeof(fr));
	pump(f);
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(len, 0);
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(len, VIRTIO_NET_HDR_SIZE + sizeof(fr));
	assert_int_equal(stats(f).rx_dropped, 1);
	assert_int_equal(stats(f).rx_packets, 1);
}

/* An rx buffer the device may not write: the ring is broken. */
static void test_rx_readable_buffer_breaks_ring(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[100];

	vg_desc(&f->mem, &f->rxq, 0, RX_BUF_GPA, 2048, 0, 0);
	vg_publish(&f->mem, &f->rxq, 0);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 8);
	host_send(f, fr, sizeof(fr));
	pump(f);
	assert_true(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_int_equal(stats(f).rx_dropped, 1);
}

/* At most VIRTIO_NET_RX_BUDGET packets per wakeup, the rest on later ones. */
static void test_rx_budget(void **state)
{
	struct nfx *f = *state;
	const int n = 3 * VIRTIO_NET_RX_BUDGET;
	uint8_t fr[64];
	int rounds = 0;

	for (uint16_t i = 0; i < QNUM; i++)
		rx_post(f, i, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 9);
	for (int i = 0; i < n; i++)
		host_send(f, fr, sizeof(fr));
	assert_int_equal(virtio_net_process_events(f->net), 1);
	assert_int_equal(stats(f).rx_packets, VIRTIO_NET_RX_BUDGET);
	while (stats(f).rx_packets < (uint64_t)n && rounds++ < 100)
		virtio_net_process_events(f->net);
	assert_int_equal(stats(f).rx_packets, n);
	assert_true(stats(f).rx_budget_exhausted >= 2);
}

/* At most VIRTIO_NET_TX_BUDGET chains per wakeup; the queue re-kicks itself for the rest. */
static void test_tx_budget(void **state)
{
	struct nfx *f = *state;
	const int n = 2 * VIRTIO_NET_TX_BUDGET + 10;
	uint8_t fr[64], got[256];
	int count = 0;

	make_frame(fr, sizeof(fr), 10);
	for (int i = 0; i < n; i++)
		tx_packet(f, (uint16_t)i, fr, sizeof(fr), 0, 0, 0);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
	assert_int_equal(stats(f).tx_packets, VIRTIO_NET_TX_BUDGET);
	pump(f);
	assert_int_equal(stats(f).tx_packets, n);
	assert_int_equal(stats(f).tx_budget_exhausted, 2);
	while (host_recv(f, got, sizeof(got)) > 0)
		count++;
	assert_int_equal(count, n);
}

/* No tap: link down, tx dropped and counted; attaching one brings the link up. */
static void test_link_down_then_attach(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[100], got[256], cfg[2];
	uint32_t id, len, gen;
	int sv[2];
	struct fk_err err;

	assert_false(virtio_net_link_up(f->net));
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_NET_CFG_STATUS, cfg, 2);
	assert_int_equal(cfg[0], 0);
	make_frame(fr, sizeof(fr), 11);
	tx_packet(f, 0, fr, sizeof(fr), 0, 0, 0);
	tx_packet(f, 1, fr, sizeof(fr), 0, 0, 0);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
	assert_true(used_next(f, &f->txq, &f->tx_seen, &id, &len));
	assert_true(used_next(f, &f->txq, &f->tx_seen, &id, &len));
	assert_int_equal(stats(f).tx_dropped_link_down, 2);

	gen = vg_read32(&f->t, VIRTIO_MMIO_CONFIG_GENERATION);
	vg_irqs(f->irq);
	assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
			 0);
	f->host = sv[0];
	assert_int_equal(virtio_net_attach_tap(f->net, sv[1], "late0", &err), 0);
	assert_true(virtio_net_link_up(f->net));
	assert_string_equal(virtio_net_tap_name(f->net), "late0");
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_NET_CFG_STATUS, cfg, 2);
	assert_int_equal(cfg[0], VIRTIO_NET_S_LINK_UP);
	assert_int_not_equal(vg_read32(&f->t, VIRTIO_MMIO_CONFIG_GENERATION), gen);
	assert_true(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
	assert_true(vg_irqs(f->irq) >= 1);
	tx_packet(f, 2, fr, sizeof(fr), 0, 0, 0);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_TX);
	assert_int_equal(host_recv(f, got, sizeof(got)), VIRTIO_NET_HDR_SIZE + sizeof(fr));
	/* And rx through the new tap. */
	rx_post(f, 0, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	host_send(f, fr, sizeof(fr));
	pump(f);
	assert_true(used_next(f, &f->rxq, &f->rx_seen, &id, &len));
	assert_int_equal(len, VIRTIO_NET_HDR_SIZE + sizeof(fr));
	/* fd -1 takes the link down again. */
	assert_int_equal(virtio_net_attach_tap(f->net, -1, NULL, &err), 0);
	assert_false(virtio_net_link_up(f->net));
}

/* The tap refuses the offloads the driver accepted: logged, the tap keeps none. */
static void test_offload_refused_is_logged(void **state)
{
	struct nfx *f = *state;
	uint8_t fr[100];

	bring_up(f, BASE_FEATURES | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_GUEST_TSO4);
	rx_post(f, 0, 2048);
	vg_notify(&f->t, VIRTIO_NET_QUEUE_RX);
	make_frame(fr, sizeof(fr), 12);
	host_send(f, fr, sizeof(fr));
	pump(f);
	assert_int_equal(stats(f).rx_packets, 1);
	assert_int_equal(stats(f).offloads, 0);
	assert_non_null(strstr(f->t.last_error, "tap offloads"));
}

/* ---- --net ---- */

static int parse(struct vmm_config *cfg, struct fk_err *err, const char *net)
{
	char *argv[] = {"forkd-vmm", "--kernel", "k", "--net", (char *)net, NULL};

	return vmm_config_parse(cfg, 5, argv, err);
}

static void test_config_net(void **state)
{
	struct vmm_config cfg;
	struct fk_err err;
	static const struct {
		const char *arg, *msg;
	} bad[] = {
	    {"tap=", "not an interface name"},
	    {"tap=a/b", "not an interface name"},
	    {"tap=waytoolonginterfacename", "not an interface name"},
	    {"tap=t0,mac=01:00:00:00:00:00", "not a unicast MAC"},
	    {"tap=t0,mac=02:00:00:00:00", "not a unicast MAC"},
	    {"tap=t0,mac=02:00:00:00:00:0g", "not a unicast MAC"},
	    {"tap=t0,netns=../x", "not a name in /run/netns"},
	    {"tap=t0,speed=10", "unknown option 'speed=10'"},
	    {"mac=02:00:00:00:00:01", "expected tap=NAME"},
	    {"", "expected tap=NAME"},
	};

	(void)state;
	assert_int_equal(parse(&cfg, &err, "tap=t0"), 0);
	assert_string_equal(cfg.net_tap, "t0");
	assert_string_equal(cfg.net_netns, "");
	assert_false(cfg.net_mac_given);
	assert_int_equal(parse(&cfg, &err, "tap=fk1,mac=52:54:00:Ab:cD:ef,netns=ns-1"), 0);
	assert_string_equal(cfg.net_tap, "fk1");
	assert_string_equal(cfg.net_netns, "ns-1");
	assert_true(cfg.net_mac_given);
	assert_memory_equal(cfg.net_mac, ((uint8_t[]){0x52, 0x54, 0x00, 0xab, 0xcd, 0xef}), 6);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(&cfg, &err, bad[i].arg), -EINVAL);
		if (!strstr(err.msg, bad[i].msg))
			fail_msg("--net '%s': \"%s\" lacks \"%s\"", bad[i].arg, err.msg,
				 bad[i].msg);
	}
	{
		char *argv[] = {"forkd-vmm", "--kernel", "k",	  "--net",
				"tap=a",     "--net",	 "tap=b", NULL};
		assert_int_equal(vmm_config_parse(&cfg, 7, argv, &err), -EINVAL);
		assert_non_null(strstr(err.msg, "given twice"));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_identity_and_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tx_reaches_tap, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tx_malformed_packets, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tx_offload_headers_when_negotiated, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_tx_broken_rings, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_one_buffer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_waits_for_buffers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_mergeable, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_buffer_too_small, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_readable_buffer_breaks_ring, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_budget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tx_budget, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_link_down_then_attach, setup_no_tap, teardown),
	    cmocka_unit_test_setup_teardown(test_offload_refused_is_logged, setup, teardown),
	    cmocka_unit_test(test_config_net),
	};
	return cmocka_run_group_tests_name("virtio-net", tests, NULL, NULL);
}
