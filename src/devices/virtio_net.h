/* SPDX-License-Identifier: MIT */
/*
 * virtio-net (virtio 1.x, section 5.1) on a Linux tap: one rx/tx queue pair,
 * no control queue. docs/net-device.md.
 *
 * Offered: MAC, STATUS (link up only while a tap is attached), CSUM and
 * GUEST_CSUM, HOST_TSO4/6 and GUEST_TSO4/6, MRG_RXBUF. The tap's offloads
 * (TUNSETOFFLOAD) follow what the driver accepted, so the tap never hands
 * us a packet the guest did not agree to take.
 *
 * All I/O runs on the VMM's event-loop thread under the transport lock, in
 * bounded batches: at most VIRTIO_NET_RX_BUDGET packets from the tap and
 * VIRTIO_NET_TX_BUDGET chains from the guest per wakeup; what is left waits
 * for the next wakeup (the tap stays readable; the tx queue re-kicks itself)
 * so neither side can starve the other devices or the control socket. When
 * the guest posts no rx buffers the tap is not read at all (the kernel's
 * tap queue fills and drops) until the guest notifies the rx queue.
 *
 * The device's fds (tap, queue notifications) sit in a private epoll set
 * whose single fd the VM registers in its event loop, like virtio-vsock.
 */
#ifndef FORKD_DEVICES_VIRTIO_NET_H
#define FORKD_DEVICES_VIRTIO_NET_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"
#include "util/err.h"

#define VIRTIO_ID_NET 1

#define VIRTIO_NET_F_CSUM	(1ULL << 0)
#define VIRTIO_NET_F_GUEST_CSUM (1ULL << 1)
#define VIRTIO_NET_F_MAC	(1ULL << 5)
#define VIRTIO_NET_F_GUEST_TSO4 (1ULL << 7)
#define VIRTIO_NET_F_GUEST_TSO6 (1ULL << 8)
#define VIRTIO_NET_F_HOST_TSO4	(1ULL << 11)
#define VIRTIO_NET_F_HOST_TSO6	(1ULL << 12)
#define VIRTIO_NET_F_MRG_RXBUF	(1ULL << 15)
#define VIRTIO_NET_F_STATUS	(1ULL << 16)

#define VIRTIO_NET_S_LINK_UP 1

#define VIRTIO_NET_QUEUE_RX   0
#define VIRTIO_NET_QUEUE_TX   1
#define VIRTIO_NET_NR_QUEUES  2
#define VIRTIO_NET_QUEUE_SIZE 256

/* struct virtio_net_hdr_v1: 12 bytes, little-endian. */
#define VIRTIO_NET_HDR_SIZE	    12
#define VIRTIO_NET_HDR_FLAGS	    0
#define VIRTIO_NET_HDR_GSO_TYPE	    1
#define VIRTIO_NET_HDR_NUM_BUFFERS  10
#define VIRTIO_NET_HDR_F_NEEDS_CSUM 1
#define VIRTIO_NET_HDR_F_DATA_VALID 2
#define VIRTIO_NET_HDR_GSO_NONE	    0
#define VIRTIO_NET_HDR_GSO_TCPV4    1
#define VIRTIO_NET_HDR_GSO_TCPV6    4
#define VIRTIO_NET_HDR_GSO_ECN	    0x80

/* Config space: mac[6], le16 status. */
#define VIRTIO_NET_CFG_MAC     0
#define VIRTIO_NET_CFG_STATUS  6
#define VIRTIO_NET_CONFIG_SIZE 8

#define VIRTIO_NET_ETH_HLEN 14
/* Largest frame either way: a 64 KiB GSO packet plus its Ethernet header. */
#define VIRTIO_NET_MAX_FRAME (65536 + VIRTIO_NET_ETH_HLEN)
/* Work per event-loop wakeup (docs/net-device.md, "Bounded work"). */
#define VIRTIO_NET_RX_BUDGET 64
#define VIRTIO_NET_TX_BUDGET 64
/* Guest mistakes logged to stderr before the rest are only counted. */
#define VIRTIO_NET_LOG_LIMIT 16

struct virtio_net;

/*
 * A device with MAC mac. tap_fd (from tap_open; owned from now on) may be
 * -1: the link is down, tx is dropped and counted, until virtio_net_attach_tap.
 * name is what logs and status call the tap ("" without one).
 */
int virtio_net_create(struct virtio_net **out, const uint8_t mac[6], int tap_fd, const char *name,
		      struct fk_err *err);
void virtio_net_close(struct virtio_net *net);

/* The transport serving this device; call once, right after virtio_mmio_init. */
void virtio_net_attach(struct virtio_net *net, struct virtio_mmio *t);

/* Pass the struct virtio_net * as the transport's dev. */
extern const struct virtio_dev_ops virtio_net_ops;

/* The private epoll set: register it (EPOLLIN) in the VM's loop, then call process_events. */
int virtio_net_epoll_fd(const struct virtio_net *net);
/* Serves what is ready (bounded); takes the transport lock. Returns events handled. */
int virtio_net_process_events(struct virtio_net *net);
/* An eventfd that KVM signals for QueueNotify == q (or just an eventfd). Owned afterwards. */
int virtio_net_watch_notify(struct virtio_net *net, uint32_t q, int fd, struct fk_err *err);

/*
 * Gives the device a (new) tap: the old one, if any, is closed; the link
 * goes up and the guest gets a configuration-change interrupt. fd -1 takes
 * the link down. For a BRANCH child, which must not share its source's tap.
 */
int virtio_net_attach_tap(struct virtio_net *net, int tap_fd, const char *name, struct fk_err *err);
void virtio_net_get_mac(const struct virtio_net *net, uint8_t mac[6]);
const char *virtio_net_tap_name(const struct virtio_net *net);
bool virtio_net_link_up(const struct virtio_net *net);
/* After a restore: the transport state is in place; re-derive offloads and serve queued work. */
void virtio_net_restored(struct virtio_net *net);

struct virtio_net_stats {
	uint64_t rx_packets, rx_bytes; /* delivered to the guest */
	uint64_t rx_dropped;	/* read from the tap and dropped (bad buffers, broken ring) */
	uint64_t rx_no_buffers; /* times the tap was paused for lack of rx buffers */
	uint64_t tx_packets, tx_bytes; /* written to the tap */
	uint64_t tx_dropped_link_down; /* taken from the guest with no tap attached */
	uint64_t tx_malformed;	       /* refused: bad header, lengths, descriptor direction */
	uint64_t tx_errors;	       /* the tap refused the write */
	uint64_t rx_budget_exhausted;  /* wakeups that stopped at VIRTIO_NET_RX_BUDGET */
	uint64_t tx_budget_exhausted;  /* wakeups that stopped at VIRTIO_NET_TX_BUDGET */
	uint32_t offloads;	       /* TUN_F_* now set on the tap */
};
void virtio_net_get_stats(struct virtio_net *net, struct virtio_net_stats *stats);

#endif
