/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk (virtio 1.x, section 5.2) over a raw image file or block
 * device, one request queue, requests served synchronously with
 * pread/pwrite straight into guest memory under the transport lock.
 *
 * Offered: SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH, and RO for a read-only disk.
 * An image whose size is not a multiple of 512 bytes is used up to its last
 * whole sector; the tail is never read or written.
 */
#ifndef FORKD_DEVICES_VIRTIO_BLK_H
#define FORKD_DEVICES_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"
#include "util/err.h"

#define VIRTIO_ID_BLOCK 2

#define VIRTIO_BLK_F_SIZE_MAX 1
#define VIRTIO_BLK_F_SEG_MAX  2
#define VIRTIO_BLK_F_RO	      5
#define VIRTIO_BLK_F_BLK_SIZE 6
#define VIRTIO_BLK_F_FLUSH    9

#define VIRTIO_BLK_T_IN	    0
#define VIRTIO_BLK_T_OUT    1
#define VIRTIO_BLK_T_FLUSH  4
#define VIRTIO_BLK_T_GET_ID 8

#define VIRTIO_BLK_S_OK	    0
#define VIRTIO_BLK_S_IOERR  1
#define VIRTIO_BLK_S_UNSUPP 2

#define VIRTIO_BLK_SECTOR_SIZE	512
#define VIRTIO_BLK_ID_BYTES	20
#define VIRTIO_BLK_REQ_HDR_SIZE 16
#define VIRTIO_BLK_QUEUE_SIZE	256
/* Header and status take two descriptors of a chain; the rest may carry data. */
#define VIRTIO_BLK_SEG_MAX  (VIRTIO_BLK_QUEUE_SIZE - 2)
#define VIRTIO_BLK_SIZE_MAX (1U << 20)
/* What a driver keeping to SEG_MAX and SIZE_MAX can send; anything larger is refused. */
#define VIRTIO_BLK_MAX_DATA ((uint64_t)VIRTIO_BLK_SEG_MAX * VIRTIO_BLK_SIZE_MAX)

/* Config space layout (little-endian), offsets per the spec's virtio_blk_config. */
#define VIRTIO_BLK_CFG_CAPACITY 0
#define VIRTIO_BLK_CFG_SIZE_MAX 8
#define VIRTIO_BLK_CFG_SEG_MAX	12
#define VIRTIO_BLK_CFG_BLK_SIZE 20
#define VIRTIO_BLK_CONFIG_SIZE	24

struct virtio_blk;

/*
 * Opens the disk image at path (a regular file or a block device). A
 * read-only disk is opened O_RDONLY and offers VIRTIO_BLK_F_RO. id (may be
 * NULL) is what GET_ID returns, at most 20 bytes.
 */
int virtio_blk_open(struct virtio_blk **out, const char *path, bool readonly, const char *id,
		    struct fk_err *err);
void virtio_blk_close(struct virtio_blk *blk);

/* Pass the struct virtio_blk * as the transport's dev. */
extern const struct virtio_dev_ops virtio_blk_ops;

uint64_t virtio_blk_capacity(const struct virtio_blk *blk); /* in 512-byte sectors */
/* The backing file, for copying the image into a snapshot. */
int virtio_blk_fd(const struct virtio_blk *blk);
bool virtio_blk_readonly(const struct virtio_blk *blk);

/*
 * Sets up a point-in-time copy of the image into dst_fd (owned from now on;
 * devices/disk_copy.h): guest writes from now on copy the old contents of
 * the chunks they change first. Call with the guest paused; start it with
 * disk_copy_start(virtio_blk_copy(blk)). An earlier copy is stopped and freed.
 */
int virtio_blk_begin_copy(struct virtio_blk *blk, int dst_fd, const char *name, struct fk_err *err);
/* Stops and frees the copy; with the guest paused. */
void virtio_blk_end_copy(struct virtio_blk *blk);
/* The copy of the last virtio_blk_begin_copy, or NULL. */
struct disk_copy *virtio_blk_copy(const struct virtio_blk *blk);

struct virtio_blk_stats {
	uint64_t requests;     /* chains completed, any status */
	uint64_t bad_requests; /* answered IOERR because the request was malformed */
	uint64_t io_errors;    /* answered IOERR because the host I/O failed */
	uint64_t unsupported;  /* answered UNSUPP */
};
void virtio_blk_get_stats(const struct virtio_blk *blk, struct virtio_blk_stats *stats);

#endif
