/* SPDX-License-Identifier: MIT */
/*
 * virtio-mmio transport (virtio 1.x "modern", MMIO register layout version 2).
 * Transport and queue state live in plain structs without pointers so that
 * a snapshot can copy them; behaviour lives in the ops tables.
 */
#ifndef FORKD_DEVICES_VIRTIO_MMIO_H
#define FORKD_DEVICES_VIRTIO_MMIO_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "devices/virtqueue.h"
#include "core/bus.h"
#include "core/guest_mem.h"

#define VIRTIO_MMIO_SIZE       0x1000
#define VIRTIO_MMIO_MAX_QUEUES 8

/* Register offsets (virtio 1.x, 4.2.2). All are 32 bits wide. */
#define VIRTIO_MMIO_MAGIC_VALUE		0x000
#define VIRTIO_MMIO_VERSION		0x004
#define VIRTIO_MMIO_DEVICE_ID		0x008
#define VIRTIO_MMIO_VENDOR_ID		0x00c
#define VIRTIO_MMIO_DEVICE_FEATURES	0x010
#define VIRTIO_MMIO_DEVICE_FEATURES_SEL 0x014
#define VIRTIO_MMIO_DRIVER_FEATURES	0x020
#define VIRTIO_MMIO_DRIVER_FEATURES_SEL 0x024
#define VIRTIO_MMIO_QUEUE_SEL		0x030
#define VIRTIO_MMIO_QUEUE_NUM_MAX	0x034
#define VIRTIO_MMIO_QUEUE_NUM		0x038
#define VIRTIO_MMIO_QUEUE_READY		0x044
#define VIRTIO_MMIO_QUEUE_NOTIFY	0x050 /* ioeventfd: 4 bytes, datamatch = queue index */
#define VIRTIO_MMIO_INTERRUPT_STATUS	0x060
#define VIRTIO_MMIO_INTERRUPT_ACK	0x064
#define VIRTIO_MMIO_STATUS		0x070
#define VIRTIO_MMIO_QUEUE_DESC_LOW	0x080
#define VIRTIO_MMIO_QUEUE_DESC_HIGH	0x084
#define VIRTIO_MMIO_QUEUE_DRIVER_LOW	0x090
#define VIRTIO_MMIO_QUEUE_DRIVER_HIGH	0x094
#define VIRTIO_MMIO_QUEUE_DEVICE_LOW	0x0a0
#define VIRTIO_MMIO_QUEUE_DEVICE_HIGH	0x0a4
#define VIRTIO_MMIO_CONFIG_GENERATION	0x0fc
#define VIRTIO_MMIO_CONFIG		0x100

#define VIRTIO_MMIO_MAGIC 0x74726976 /* "virt" */
/* "FORK" read as little-endian bytes; Linux does not look at the vendor. */
#define VIRTIO_MMIO_VENDOR 0x4b524f46

/* Device status bits (2.1). */
#define VIRTIO_STATUS_ACKNOWLEDGE	 0x01
#define VIRTIO_STATUS_DRIVER		 0x02
#define VIRTIO_STATUS_DRIVER_OK		 0x04
#define VIRTIO_STATUS_FEATURES_OK	 0x08
#define VIRTIO_STATUS_DEVICE_NEEDS_RESET 0x40
#define VIRTIO_STATUS_FAILED		 0x80

/* InterruptStatus bits. */
#define VIRTIO_MMIO_INT_VRING  0x1 /* used buffer notification */
#define VIRTIO_MMIO_INT_CONFIG 0x2 /* configuration change (also: needs reset) */

#define VIRTIO_F_VERSION_1 32

struct virtio_mmio;

/* What a device type (blk, vsock, ...) plugs into the transport. */
struct virtio_dev_ops {
	const char *name;
	uint32_t device_id;
	int num_queues;
	uint16_t queue_max_size;
	/* Features offered; VIRTIO_F_VERSION_1 is added by the transport. */
	uint64_t (*features)(void *dev);
	/* Device config space; offset/len already checked against config_size. */
	uint32_t config_size;
	void (*config_read)(void *dev, uint32_t offset, uint8_t *data, uint32_t len);
	void (*config_write)(void *dev, uint32_t offset, const uint8_t *data, uint32_t len);
	/* Process available buffers of queue q; called with the transport lock held. */
	void (*queue_notify)(struct virtio_mmio *t, void *dev, uint32_t q);
	/* Driver reset the device (status written 0). */
	void (*reset)(void *dev);
};

struct virtio_mmio_state {
	uint32_t status;
	uint32_t device_features_sel;
	uint32_t driver_features_sel;
	uint64_t driver_features;
	uint32_t queue_sel;
	uint32_t interrupt_status;
	uint32_t config_generation;
	struct virtq queues[VIRTIO_MMIO_MAX_QUEUES];
};

struct virtio_mmio {
	pthread_mutex_t lock;
	const struct virtio_dev_ops *ops;
	void *dev;
	const struct guest_mem *mem;
	struct irq_line irq;
	uint64_t base; /* guest physical base of the register window */
	struct virtio_mmio_state state;
	uint64_t errors;	   /* how many times the guest broke the device */
	uint64_t ignored_notifies; /* notifications before DRIVER_OK / for a queue not ready */
	char last_error[160];
};

int virtio_mmio_init(struct virtio_mmio *t, const struct virtio_dev_ops *ops, void *dev,
		     const struct guest_mem *mem, struct irq_line irq, uint64_t base,
		     struct fk_err *err);
void virtio_mmio_destroy(struct virtio_mmio *t);

/* Register window ops: pass the struct virtio_mmio * as the bus opaque. */
extern const struct bus_device_ops virtio_mmio_bus_ops;

/* A queue notification that bypassed the register write (ioeventfd). */
void virtio_mmio_notify(struct virtio_mmio *t, uint32_t q);

/* Guest physical address to register an ioeventfd on (4 bytes, datamatch = queue index). */
uint64_t virtio_mmio_notify_addr(const struct virtio_mmio *t);

/*
 * A guest mistake the device survives (a malformed request answered with an
 * error status, a bad register access): count it and keep the message. Lock held.
 */
void virtio_mmio_record_error(struct virtio_mmio *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * The guest broke the device contract: set DEVICE_NEEDS_RESET, raise a
 * configuration-change interrupt, stop processing queues until reset.
 * Called with the lock held.
 */
void virtio_mmio_set_needs_reset(struct virtio_mmio *t, const char *why);

/* Used-buffer notification for queue q (honours VIRTQ_AVAIL_F_NO_INTERRUPT). Lock held. */
void virtio_mmio_signal_used(struct virtio_mmio *t, uint32_t q);

#endif
