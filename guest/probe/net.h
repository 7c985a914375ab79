/* SPDX-License-Identifier: MIT */
/*
 * The probe's polling virtio-net driver (virtio 1.x section 5.1): queues rx
 * and tx of 128 each, the 12-byte v1 header, avail NO_INTERRUPT. Negotiates
 * MAC and STATUS, GUEST_CSUM/TSO4/TSO6 with net_offload=1, MRG_RXBUF with net_mrg=1 (then its rx
 * buffers are net_rxbuf bytes, so a full frame spans several). No offloads: frames are at most 1514
 * bytes each way. Shared by the `net` and `nethostile` workloads.
 */
#ifndef PROBE_NET_H
#define PROBE_NET_H

#include "virtio.h"

#define VIRTIO_ID_NET		1
#define VIRTIO_NET_F_GUEST_CSUM 1
#define VIRTIO_NET_F_GUEST_TSO4 7
#define VIRTIO_NET_F_GUEST_TSO6 8
#define VIRTIO_NET_F_MAC	5
#define VIRTIO_NET_F_MRG_RXBUF	15
#define VIRTIO_NET_F_STATUS	16
#define NET_HDR_SIZE		12
#define NET_ETH_HLEN		14
#define NET_MAX_FRAME		1514
#define NET_ETHERTYPE		0x88b5 /* IEEE local experimental */

#define NET_QUEUE_SIZE 128
#define NET_BUF_STRIDE 2048
#define NET_MEM_BYTES  (2 * MIB)
/* Driver memory: the two rings, rx buffers, tx buffers, a reassembly buffer. */
#define NET_OFF_RXQ	0
#define NET_OFF_TXQ	0x4000
#define NET_OFF_RXBUF	0x10000
#define NET_OFF_TXBUF	(NET_OFF_RXBUF + NET_QUEUE_SIZE * NET_BUF_STRIDE)
#define NET_OFF_FRAME	(NET_OFF_TXBUF + NET_QUEUE_SIZE * NET_BUF_STRIDE)
#define NET_OFF_SCRATCH (NET_OFF_FRAME + 0x1000) /* free for the hostile cases */

struct net {
	struct vdev dev;
	struct vq rxq, txq;
	uint64_t mem;
	uint8_t mac[6];
	bool mrg;
	uint32_t rxbuf_len;   /* bytes each rx buffer offers the device */
	unsigned rx_unkicked; /* rx buffers posted since the last notify */
	/* A frame being gathered from several rx buffers (MRG_RXBUF). */
	uint32_t gather_left; /* buffers still to come */
	uint32_t gather_len;
	bool gather_bad;
};

/*
 * Finds the first virtio-net device and starts it (rx buffers posted); 0 or
 * -1 (said). offload also accepts GUEST_CSUM and GUEST_TSO4/6 (the frames
 * we send carry no offload), which needs mrg: a 64 KiB packet then spans
 * 33 of our buffers.
 */
int net_open(struct net *n, uint64_t mem, bool mrg, uint32_t rxbuf_len, bool offload);
/* The device said DEVICE_NEEDS_RESET. */
bool net_needs_reset(const struct net *n);
/* 1 if the device reports the link up, 0 down. */
int net_link(const struct net *n);
/* Frees the tx slots the device is done with; how many are in flight now. */
unsigned net_tx_reap(struct net *n);
/* Queues one frame (copied into a tx slot); false when all slots are in flight. */
bool net_tx_frame(struct net *n, const uint8_t *frame, uint32_t len);
/* Notifies the tx queue (after one or more net_tx_frame). */
void net_tx_kick(struct net *n);
/*
 * The next whole received frame, copied to the reassembly buffer: its
 * length, 0 if none is complete yet, or -1 for a malformed one (counted by
 * the caller). *frame points into driver memory until the next call.
 */
int net_rx_frame(struct net *n, const uint8_t **frame);

/* Workload `net` and its console command; workload `nethostile`. */
void net_run(struct cpu *c);
void net_cmd(char *arg);
void nethostile_run(struct cpu *c);

#endif
