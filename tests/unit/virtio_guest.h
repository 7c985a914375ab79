/* SPDX-License-Identifier: MIT */
/*
 * A tiny virtio driver for unit tests: it pokes the transport through the
 * same bus ops a vCPU exit uses and lays out split rings in a real
 * guest_mem, the way a guest kernel would. Header-only because every
 * tests/unit/test_*.c is its own binary.
 */
#ifndef FORKD_TESTS_VIRTIO_GUEST_H
#define FORKD_TESTS_VIRTIO_GUEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "devices/virtio_mmio.h"
#include "devices/virtqueue.h"
#include "core/guest_mem.h"

#define VG_RAM_SIZE  (2ULL << 20)
#define VG_MMIO_BASE 0xd0000000ULL
#define VG_GSI	     5

/* Default ring placement: room for a 256-entry queue each. */
#define VG_DESC_GPA  0x1000ULL
#define VG_AVAIL_GPA 0x2000ULL
#define VG_USED_GPA  0x3000ULL

/* The driver's view of one split queue. */
struct vg_queue {
	uint16_t num;
	uint64_t desc, avail, used;
	uint16_t next_avail; /* avail->idx the driver will publish next */
};

static inline struct vg_queue vg_default_queue(uint16_t num)
{
	return (struct vg_queue){
	    .num = num, .desc = VG_DESC_GPA, .avail = VG_AVAIL_GPA, .used = VG_USED_GPA};
}

static inline void vg_mem_init(struct guest_mem *mem)
{
	struct fk_err err;

	assert_int_equal(guest_mem_init(mem, GUEST_MEM_ANON, VG_RAM_SIZE, &err), 0);
}

static inline uint8_t *vg_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	uint8_t *p = guest_mem_ptr(mem, gpa, len);

	assert_non_null(p);
	return p;
}

static inline int vg_irq_fd(void)
{
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

	assert_true(fd >= 0);
	return fd;
}

/* Interrupts pulsed since the last call (the eventfd counter), without blocking. */
static inline uint64_t vg_irqs(int fd)
{
	uint64_t n = 0;

	if (read(fd, &n, sizeof(n)) != sizeof(n)) {
		assert_int_equal(errno, EAGAIN);
		return 0;
	}
	return n;
}

static inline struct irq_line vg_irq_line(int fd)
{
	return (struct irq_line){.gsi = VG_GSI, .eventfd = fd};
}

/* ---- register access, exactly as a vCPU exit would deliver it ---- */

static inline uint32_t vg_read32(struct virtio_mmio *t, uint64_t off)
{
	uint32_t v;

	virtio_mmio_bus_ops.read(t, off, (uint8_t *)&v, 4);
	return le32toh(v);
}

static inline void vg_write32(struct virtio_mmio *t, uint64_t off, uint32_t val)
{
	uint32_t v = htole32(val);

	virtio_mmio_bus_ops.write(t, off, (const uint8_t *)&v, 4);
}

static inline uint64_t vg_device_features(struct virtio_mmio *t)
{
	uint64_t f;

	vg_write32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
	f = vg_read32(t, VIRTIO_MMIO_DEVICE_FEATURES);
	vg_write32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
	f |= (uint64_t)vg_read32(t, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	return f;
}

static inline uint32_t vg_status(struct virtio_mmio *t)
{
	return vg_read32(t, VIRTIO_MMIO_STATUS);
}

/* Reset, ACKNOWLEDGE, DRIVER, write features, FEATURES_OK; returns the status read back. */
static inline uint32_t vg_negotiate(struct virtio_mmio *t, uint64_t features)
{
	uint32_t s = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	vg_write32(t, VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(vg_status(t), 0);
	vg_write32(t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	vg_write32(t, VIRTIO_MMIO_STATUS, s);
	vg_write32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vg_write32(t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)features);
	vg_write32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
	vg_write32(t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(features >> 32));
	vg_write32(t, VIRTIO_MMIO_STATUS, s | VIRTIO_STATUS_FEATURES_OK);
	return vg_status(t);
}

/* Zeroes the rings, programs queue qi with q's layout and makes it ready. */
static inline void vg_setup_queue(struct virtio_mmio *t, const struct guest_mem *mem, uint32_t qi,
				  struct vg_queue *q)
{
	uint8_t *p;

	if ((p = guest_mem_ptr(mem, q->desc, 16ULL * q->num)))
		memset(p, 0, 16ULL * q->num);
	if ((p = guest_mem_ptr(mem, q->avail, VIRTQ_AVAIL_SIZE(q->num))))
		memset(p, 0, VIRTQ_AVAIL_SIZE(q->num));
	if ((p = guest_mem_ptr(mem, q->used, VIRTQ_USED_SIZE(q->num))))
		memset(p, 0, VIRTQ_USED_SIZE(q->num));
	q->next_avail = 0;
	vg_write32(t, VIRTIO_MMIO_QUEUE_SEL, qi);
	vg_write32(t, VIRTIO_MMIO_QUEUE_NUM, q->num);
	vg_write32(t, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)q->desc);
	vg_write32(t, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(q->desc >> 32));
	vg_write32(t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, (uint32_t)q->avail);
	vg_write32(t, VIRTIO_MMIO_QUEUE_DRIVER_HIGH, (uint32_t)(q->avail >> 32));
	vg_write32(t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, (uint32_t)q->used);
	vg_write32(t, VIRTIO_MMIO_QUEUE_DEVICE_HIGH, (uint32_t)(q->used >> 32));
	vg_write32(t, VIRTIO_MMIO_QUEUE_READY, 1);
}

static inline void vg_driver_ok(struct virtio_mmio *t)
{
	vg_write32(t, VIRTIO_MMIO_STATUS, vg_status(t) | VIRTIO_STATUS_DRIVER_OK);
}

static inline void vg_notify(struct virtio_mmio *t, uint32_t qi)
{
	vg_write32(t, VIRTIO_MMIO_QUEUE_NOTIFY, qi);
}

/* ---- ring contents ---- */

static inline void vg_desc(const struct guest_mem *mem, const struct vg_queue *q, uint16_t i,
			   uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
	/* Deliberately no bounds check on i: tests write corrupt rings on purpose. */
	uint8_t *d = vg_ptr(mem, q->desc + 16ULL * i, 16);
	uint64_t a = htole64(addr);
	uint32_t l = htole32(len);
	uint16_t f = htole16(flags), n = htole16(next);

	memcpy(d, &a, 8);
	memcpy(d + 8, &l, 4);
	memcpy(d + 12, &f, 2);
	memcpy(d + 14, &n, 2);
}

static inline void vg_set_avail_idx(const struct guest_mem *mem, const struct vg_queue *q,
				    uint16_t idx)
{
	__atomic_store_n((uint16_t *)vg_ptr(mem, q->avail + 2, 2), htole16(idx), __ATOMIC_RELEASE);
}

static inline void vg_set_avail_flags(const struct guest_mem *mem, const struct vg_queue *q,
				      uint16_t flags)
{
	uint16_t f = htole16(flags);

	memcpy(vg_ptr(mem, q->avail, 2), &f, 2);
}

/* Puts head in the next avail slot and publishes it. */
static inline void vg_publish(const struct guest_mem *mem, struct vg_queue *q, uint16_t head)
{
	uint16_t h = htole16(head);

	memcpy(vg_ptr(mem, q->avail + 4 + 2ULL * (q->next_avail % q->num), 2), &h, 2);
	q->next_avail++;
	vg_set_avail_idx(mem, q, q->next_avail);
}

static inline uint16_t vg_used_idx(const struct guest_mem *mem, const struct vg_queue *q)
{
	return le16toh(__atomic_load_n((uint16_t *)vg_ptr(mem, q->used + 2, 2), __ATOMIC_ACQUIRE));
}

/* Element i (a free-running index, taken modulo num) of the used ring. */
static inline void vg_used_elem(const struct guest_mem *mem, const struct vg_queue *q, uint16_t i,
				uint32_t *id, uint32_t *len)
{
	uint8_t *e = vg_ptr(mem, q->used + 4 + 8ULL * (i % q->num), 8);

	memcpy(id, e, 4);
	memcpy(len, e + 4, 4);
	*id = le32toh(*id);
	*len = le32toh(*len);
}

#endif
