/* SPDX-License-Identifier: MIT */
/* The probe's polling virtio-blk client, shared by the blk and hostile workloads. */
#ifndef PROBE_BLK_H
#define PROBE_BLK_H

#include "virtio.h"

#define VIRTIO_BLK_T_IN	    0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8
#define VIRTIO_BLK_S_OK	    0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2
#define VIRTIO_BLK_ID_BYTES 20

/* Driver memory layout inside the workload's 2 MiB: queue, header, status, data. */
#define BLK_QUEUE_SIZE 16
#define BLK_OFF_QUEUE  0
#define BLK_OFF_HEADER 0x10000
#define BLK_OFF_STATUS 0x10100
#define BLK_OFF_DATA   0x11000
#define BLK_TIMEOUT_US 5000000

struct virtio_blk_req_header {
	uint32_t type;
	uint32_t reserved;
	uint64_t sector;
};

struct blk {
	struct vdev dev;
	uint64_t mem;  /* driver memory: queue, header, status, data */
	uint64_t data; /* data buffer */
	uint64_t data_bytes;
	uint64_t capacity; /* 512-byte sectors */
	unsigned ro;
};

/*
 * Finds and starts virtio-blk device number dev (0: the first) using mem
 * (2 MiB), up to DRIVER_OK if driver_ok; 0 or -1 (reported).
 */
int blk_open(struct blk *b, unsigned dev, uint64_t mem, uint64_t mem_bytes, bool driver_ok);
/* Puts one request with len bytes of b->data on the queue; vq_poll() sees it complete. */
void blk_start(struct blk *b, uint32_t type, uint64_t sector, uint32_t len);
/* Queues the request without notifying the device: it is "in flight" until a notify. */
void blk_post_quiet(struct blk *b, uint32_t type, uint64_t sector, uint32_t len);
/* The status byte of the last completed request. */
int blk_status(const struct blk *b);
/* One request with len bytes of b->data; the status byte, or -1 on timeout. */
int blk_request(struct blk *b, uint32_t type, uint64_t sector, uint32_t len);

#endif
