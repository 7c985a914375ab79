/* SPDX-License-Identifier: MIT */
/*
 * Split virtqueues (virtio 1.x, section 2.7) as seen from the device.
 *
 * struct virtq is plain data (indices and guest physical addresses, no host
 * pointers) so a snapshot can copy it; every access to the rings goes back
 * through guest_mem_ptr(). The guest owns the rings and may write anything
 * into them at any time, so every index read from guest memory is checked
 * before use and every descriptor is read exactly once into a local copy.
 *
 * Not offered, hence refused: indirect descriptors (VIRTIO_RING_F_INDIRECT_DESC)
 * and VIRTIO_RING_F_EVENT_IDX. The rings are therefore exactly
 * 16*num (descriptors), 6+2*num (avail) and 6+8*num (used) bytes; the
 * trailing used_event/avail_event words are included in the bounds check
 * as the spec sizes them, even though they are never touched.
 */
#ifndef FORKD_DEVICES_VIRTQUEUE_H
#define FORKD_DEVICES_VIRTQUEUE_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"
#include "core/guest_mem.h"

/* Largest queue this implementation accepts; also bounds a chain. */
#define VIRTQ_MAX_SIZE 256

#define VIRTQ_DESC_F_NEXT     1
#define VIRTQ_DESC_F_WRITE    2
#define VIRTQ_DESC_F_INDIRECT 4

#define VIRTQ_AVAIL_F_NO_INTERRUPT 1

#define VIRTQ_DESC_SIZE	     16
#define VIRTQ_DESC_ALIGN     16
#define VIRTQ_AVAIL_ALIGN    2
#define VIRTQ_USED_ALIGN     4
#define VIRTQ_AVAIL_SIZE(n)  (6ULL + 2ULL * (n))
#define VIRTQ_USED_SIZE(n)   (6ULL + 8ULL * (n))
#define VIRTQ_USED_ELEM_SIZE 8

struct virtq {
	uint16_t num; /* queue size chosen by the driver (QueueNum) */
	bool ready;
	uint64_t desc_gpa;
	uint64_t avail_gpa;	 /* "driver area" */
	uint64_t used_gpa;	 /* "device area" */
	uint16_t last_avail_idx; /* next avail ring entry the device will take */
	uint16_t used_idx;	 /* next used ring entry the device will fill */
};

/* One descriptor of a chain, already checked to lie inside guest RAM. */
struct virtq_seg {
	uint64_t gpa;
	uint32_t len;
	bool device_writable;
	uint8_t *hva; /* host address of [gpa, gpa+len); not state, valid while mem is */
};

struct virtq_chain {
	uint16_t head; /* descriptor index to hand back in the used ring */
	uint16_t nr_segs;
	uint64_t readable_len; /* sum of device-readable segment lengths */
	uint64_t writable_len; /* sum of device-writable segment lengths */
	struct virtq_seg segs[VIRTQ_MAX_SIZE];
};

/* Back to the state after a device reset: not ready, indices and addresses 0. */
void virtq_reset(struct virtq *vq, uint16_t num);

/*
 * Checks the ring layout before the queue goes live: num a power of two in
 * [1, max_size], alignment of the three areas, and each area wholly inside
 * guest RAM. Returns 0 or -EINVAL with the reason in err.
 */
int virtq_check_rings(const struct guest_mem *mem, const struct virtq *vq, uint16_t max_size,
		      struct fk_err *err);

/*
 * Takes the next available chain. Returns 1 with *chain filled, 0 if the
 * driver has made nothing new available, -EINVAL (reason in err) if the
 * ring is broken: avail idx more than num ahead, head or next index >= num,
 * a chain longer than num (which is how a loop shows), an INDIRECT
 * descriptor, or a buffer not wholly inside guest RAM. On error
 * last_avail_idx is left where it was.
 */
int virtq_pop(const struct guest_mem *mem, struct virtq *vq, struct virtq_chain *chain,
	      struct fk_err *err);

/*
 * Returns chain head to the driver with len bytes written into its
 * device-writable buffers. The element is written before used->idx is
 * published (release). Returns 0 or -EINVAL.
 */
int virtq_push(const struct guest_mem *mem, struct virtq *vq, uint16_t head, uint32_t len,
	       struct fk_err *err);

/* True unless the driver set VIRTQ_AVAIL_F_NO_INTERRUPT. Call after virtq_push. */
bool virtq_should_interrupt(const struct guest_mem *mem, const struct virtq *vq);

/* True if the driver has made chains available that the device has not taken. */
bool virtq_has_avail(const struct guest_mem *mem, const struct virtq *vq);

#endif
