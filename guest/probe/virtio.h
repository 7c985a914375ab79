/* SPDX-License-Identifier: MIT */
/*
 * A minimal polling virtio-mmio (version 2, "modern") driver core: device
 * discovery, feature negotiation, split virtqueues. Registers are accessed
 * from CPL3 (each access is an MMIO exit to the VMM).
 */
#ifndef PROBE_VIRTIO_H
#define PROBE_VIRTIO_H

#include "probe.h"

#define VIRTIO_MMIO_MAGIC_VALUE	     0x000
#define VIRTIO_MMIO_VERSION	     0x004
#define VIRTIO_MMIO_DEVICE_ID	     0x008
#define VIRTIO_MMIO_VENDOR_ID	     0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES  0x010
#define VIRTIO_MMIO_DEVICE_FEAT_SEL  0x014
#define VIRTIO_MMIO_DRIVER_FEATURES  0x020
#define VIRTIO_MMIO_DRIVER_FEAT_SEL  0x024
#define VIRTIO_MMIO_QUEUE_SEL	     0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX    0x034
#define VIRTIO_MMIO_QUEUE_NUM	     0x038
#define VIRTIO_MMIO_QUEUE_READY	     0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY     0x050
#define VIRTIO_MMIO_INTERRUPT_STATUS 0x060
#define VIRTIO_MMIO_INTERRUPT_ACK    0x064
#define VIRTIO_MMIO_STATUS	     0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW   0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH  0x084
#define VIRTIO_MMIO_QUEUE_AVAIL_LOW  0x090
#define VIRTIO_MMIO_QUEUE_AVAIL_HIGH 0x094
#define VIRTIO_MMIO_QUEUE_USED_LOW   0x0a0
#define VIRTIO_MMIO_QUEUE_USED_HIGH  0x0a4
#define VIRTIO_MMIO_CONFIG_GEN	     0x0fc
#define VIRTIO_MMIO_CONFIG	     0x100

#define VIRTIO_MAGIC 0x74726976 /* "virt" */

#define VIRTIO_STATUS_ACKNOWLEDGE	 1
#define VIRTIO_STATUS_DRIVER		 2
#define VIRTIO_STATUS_DRIVER_OK		 4
#define VIRTIO_STATUS_FEATURES_OK	 8
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED		 0x80

#define VIRTIO_F_VERSION_1 32

#define VIRTQ_DESC_F_NEXT  1
#define VIRTQ_DESC_F_WRITE 2

#define VIRTIO_ID_BLK 2

struct virtq_desc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

struct virtq_avail {
	uint16_t flags;
	uint16_t idx;
	uint16_t ring[];
};

struct virtq_used_elem {
	uint32_t id;
	uint32_t len;
};

struct virtq_used {
	uint16_t flags;
	uint16_t idx;
	struct virtq_used_elem ring[];
};

/* One split virtqueue in driver memory. */
struct vq {
	unsigned num;
	volatile struct virtq_desc *desc;
	volatile struct virtq_avail *avail;
	volatile struct virtq_used *used;
	uint16_t avail_idx;
	uint16_t used_idx;
};

struct vdev {
	uint64_t base;	   /* register window */
	uint64_t offered;  /* device features */
	uint64_t accepted; /* driver features */
	struct vq q;
};

/* One buffer of a request chain. */
struct vbuf {
	uint64_t addr;
	uint32_t len;
	bool device_writes;
};

static inline uint32_t vreg_read(const struct vdev *d, uint32_t off)
{
	return mmio_read32(d->base + off);
}

static inline void vreg_write(const struct vdev *d, uint32_t off, uint32_t v)
{
	mmio_write32(d->base + off, v);
}

/* The n-th (from 0) virtio-mmio window with this device id, or 0. */
uint64_t virtio_find(uint32_t device_id, unsigned n);
/* Reset, ACKNOWLEDGE, DRIVER, feature negotiation up to FEATURES_OK; 0 or -1. */
int virtio_negotiate(struct vdev *d, uint64_t base, uint64_t wanted);
/* Lays queue q out in mem (which must hold virtq_bytes(num)) and enables it; 0 or -1. */
int virtio_queue_setup(struct vdev *d, unsigned q, unsigned num, uint64_t mem);
uint64_t virtq_bytes(unsigned num);
/* Puts a chain on the queue and notifies; returns the head descriptor index. */
unsigned vq_submit(struct vdev *d, unsigned q, const struct vbuf *bufs, unsigned n);
/* Makes the chain available without notifying the device (it stays queued until a notify). */
void vq_post(struct vdev *d, const struct vbuf *bufs, unsigned n);
/* Takes one used element if the device returned one. */
bool vq_poll(struct vdev *d, uint32_t *len);
/* Waits for one used element; 0, or -1 after timeout_us (of stopwatch time). */
int vq_wait(struct vdev *d, uint32_t *len, uint64_t timeout_us);
uint32_t virtio_config_read32(const struct vdev *d, uint32_t off);

#endif
