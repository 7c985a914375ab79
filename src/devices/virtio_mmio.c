/* SPDX-License-Identifier: MIT */
/*
 * The virtio-mmio register window. The guest may write any register in any
 * order; the rules enforced here are the ones that keep the device safe and
 * the driver honest: features are fixed once FEATURES_OK is accepted,
 * FEATURES_OK is refused for features we did not offer, a queue's layout
 * can only change while it is not live and is checked when it goes live,
 * queues run only after DRIVER_OK and never after DEVICE_NEEDS_RESET.
 */
#include "devices/virtio_mmio.h"

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define FEATURE(bit) (1ULL << (bit))
/* Ring features we implement neither of; never offered even if a device asks. */
#define VIRTIO_RING_F_INDIRECT_DESC 28
#define VIRTIO_RING_F_EVENT_IDX	    29

static uint64_t offered_features(const struct virtio_mmio *t)
{
	uint64_t f = t->ops->features ? t->ops->features(t->dev) : 0;

	f &= ~(FEATURE(VIRTIO_RING_F_INDIRECT_DESC) | FEATURE(VIRTIO_RING_F_EVENT_IDX));
	return f | FEATURE(VIRTIO_F_VERSION_1);
}

void virtio_mmio_record_error(struct virtio_mmio *t, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(t->last_error, sizeof(t->last_error), fmt, ap);
	va_end(ap);
	t->errors++;
}

static void reset_state(struct virtio_mmio *t)
{
	/* The generation survives a reset so a driver never sees it go backwards. */
	uint32_t generation = t->state.config_generation;
	int q;

	memset(&t->state, 0, sizeof(t->state));
	t->state.config_generation = generation;
	for (q = 0; q < t->ops->num_queues; q++)
		virtq_reset(&t->state.queues[q], t->ops->queue_max_size);
}

int virtio_mmio_init(struct virtio_mmio *t, const struct virtio_dev_ops *ops, void *dev,
		     const struct guest_mem *mem, struct irq_line irq, uint64_t base,
		     struct fk_err *err)
{
	uint32_t qmax = ops->queue_max_size;
	int ret;

	if (ops->num_queues < 1 || ops->num_queues > VIRTIO_MMIO_MAX_QUEUES)
		return fk_fail(err, EINVAL, "virtio-mmio %s: %d queues, expected 1..%d", ops->name,
			       ops->num_queues, VIRTIO_MMIO_MAX_QUEUES);
	if (qmax == 0 || qmax > VIRTQ_MAX_SIZE || (qmax & (qmax - 1)))
		return fk_fail(err, EINVAL,
			       "virtio-mmio %s: queue size %u is not a power of two in [1, %d]",
			       ops->name, qmax, VIRTQ_MAX_SIZE);
	if (ops->config_size > VIRTIO_MMIO_SIZE - VIRTIO_MMIO_CONFIG)
		return fk_fail(err, EINVAL, "virtio-mmio %s: config space of %u bytes too large",
			       ops->name, ops->config_size);
	if (!ops->queue_notify)
		return fk_fail(err, EINVAL, "virtio-mmio %s: no queue_notify op", ops->name);

	memset(t, 0, sizeof(*t));
	ret = pthread_mutex_init(&t->lock, NULL);
	if (ret)
		return fk_fail_errno(err, ret, "virtio-mmio %s: mutex", ops->name);
	t->ops = ops;
	t->dev = dev;
	t->mem = mem;
	t->irq = irq;
	t->base = base;
	reset_state(t);
	return 0;
}

void virtio_mmio_destroy(struct virtio_mmio *t)
{
	pthread_mutex_destroy(&t->lock);
}

uint64_t virtio_mmio_notify_addr(const struct virtio_mmio *t)
{
	return t->base + VIRTIO_MMIO_QUEUE_NOTIFY;
}

static struct virtq *selected_queue(struct virtio_mmio *t)
{
	if (t->state.queue_sel >= (uint32_t)t->ops->num_queues)
		return NULL;
	return &t->state.queues[t->state.queue_sel];
}

void virtio_mmio_set_needs_reset(struct virtio_mmio *t, const char *why)
{
	virtio_mmio_record_error(t, "needs reset: %s", why);
	if (t->state.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
		return;
	t->state.status |= VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	t->state.interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
	irq_line_pulse(&t->irq);
}

void virtio_mmio_signal_used(struct virtio_mmio *t, uint32_t q)
{
	if (q >= (uint32_t)t->ops->num_queues)
		return;
	if (!virtq_should_interrupt(t->mem, &t->state.queues[q]))
		return;
	t->state.interrupt_status |= VIRTIO_MMIO_INT_VRING;
	irq_line_pulse(&t->irq);
}

static void notify_locked(struct virtio_mmio *t, uint32_t q)
{
	const uint32_t must = VIRTIO_STATUS_DRIVER_OK;
	const uint32_t must_not = VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED;

	if ((t->state.status & must) != must || (t->state.status & must_not) ||
	    q >= (uint32_t)t->ops->num_queues || !t->state.queues[q].ready) {
		t->ignored_notifies++;
		return;
	}
	t->ops->queue_notify(t, t->dev, q);
}

void virtio_mmio_notify(struct virtio_mmio *t, uint32_t q)
{
	pthread_mutex_lock(&t->lock);
	notify_locked(t, q);
	pthread_mutex_unlock(&t->lock);
}

static uint32_t reg_read(struct virtio_mmio *t, uint64_t off)
{
	struct virtio_mmio_state *s = &t->state;
	struct virtq *vq = selected_queue(t);

	switch (off) {
	case VIRTIO_MMIO_MAGIC_VALUE:
		return VIRTIO_MMIO_MAGIC;
	case VIRTIO_MMIO_VERSION:
		return 2;
	case VIRTIO_MMIO_DEVICE_ID:
		return t->ops->device_id;
	case VIRTIO_MMIO_VENDOR_ID:
		return VIRTIO_MMIO_VENDOR;
	case VIRTIO_MMIO_DEVICE_FEATURES:
		if (s->device_features_sel > 1)
			return 0;
		return (uint32_t)(offered_features(t) >> (32 * s->device_features_sel));
	case VIRTIO_MMIO_QUEUE_NUM_MAX:
		/* 0 tells the driver the selected queue does not exist. */
		return vq ? t->ops->queue_max_size : 0;
	case VIRTIO_MMIO_QUEUE_READY:
		return vq ? vq->ready : 0;
	case VIRTIO_MMIO_INTERRUPT_STATUS:
		return s->interrupt_status;
	case VIRTIO_MMIO_STATUS:
		return s->status;
	case VIRTIO_MMIO_CONFIG_GENERATION:
		return s->config_generation;
	/* Write-only registers read as 0; not a driver error. */
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
	case VIRTIO_MMIO_DRIVER_FEATURES:
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
	case VIRTIO_MMIO_QUEUE_SEL:
	case VIRTIO_MMIO_QUEUE_NUM:
	case VIRTIO_MMIO_QUEUE_NOTIFY:
	case VIRTIO_MMIO_INTERRUPT_ACK:
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		return 0;
	default:
		virtio_mmio_record_error(t, "read of unknown register 0x%03llx",
					 (unsigned long long)off);
		return 0;
	}
}

static void write_status(struct virtio_mmio *t, uint32_t val)
{
	struct virtio_mmio_state *s = &t->state;
	uint32_t old = s->status;
	/* DEVICE_NEEDS_RESET belongs to the device; only a reset clears it. */
	uint32_t new = val & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	uint64_t offered;

	if (val == 0) {
		reset_state(t);
		if (t->ops->reset)
			t->ops->reset(t->dev);
		return;
	}
	if ((old & ~VIRTIO_STATUS_DEVICE_NEEDS_RESET) & ~new) {
		virtio_mmio_record_error(t, "status 0x%x clears bits of 0x%x without a reset", val,
					 old);
		return;
	}
	if ((new &VIRTIO_STATUS_FEATURES_OK) && !(old & VIRTIO_STATUS_FEATURES_OK)) {
		offered = offered_features(t);
		if (s->driver_features & ~offered) {
			virtio_mmio_record_error(
			    t, "FEATURES_OK refused: driver features 0x%llx not offered",
			    (unsigned long long)(s->driver_features & ~offered));
			new &= ~VIRTIO_STATUS_FEATURES_OK;
		} else if (!(s->driver_features & FEATURE(VIRTIO_F_VERSION_1))) {
			virtio_mmio_record_error(t, "FEATURES_OK refused: VERSION_1 not accepted");
			new &= ~VIRTIO_STATUS_FEATURES_OK;
		}
	}
	if ((new &VIRTIO_STATUS_DRIVER_OK) && !(new &VIRTIO_STATUS_FEATURES_OK)) {
		virtio_mmio_record_error(t, "DRIVER_OK refused: features not negotiated");
		new &= ~VIRTIO_STATUS_DRIVER_OK;
	}
	s->status = new | (old & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

static void write_driver_features(struct virtio_mmio *t, uint32_t val)
{
	struct virtio_mmio_state *s = &t->state;
	uint32_t shift;

	if (s->status & (VIRTIO_STATUS_FEATURES_OK | VIRTIO_STATUS_DRIVER_OK)) {
		virtio_mmio_record_error(t, "driver features written after FEATURES_OK");
		return;
	}
	if (s->driver_features_sel > 1) {
		if (val)
			virtio_mmio_record_error(t, "driver features 0x%x in word %u not offered",
						 val, s->driver_features_sel);
		return;
	}
	shift = 32 * s->driver_features_sel;
	s->driver_features &= ~(0xffffffffULL << shift);
	s->driver_features |= (uint64_t)val << shift;
}

/* Queue layout registers: only the selected, existing, not-live queue. */
static struct virtq *queue_for_setup(struct virtio_mmio *t, uint64_t off)
{
	struct virtq *vq = selected_queue(t);

	if (!vq) {
		virtio_mmio_record_error(t, "register 0x%03llx: queue %u does not exist",
					 (unsigned long long)off, t->state.queue_sel);
		return NULL;
	}
	if (vq->ready) {
		virtio_mmio_record_error(t, "register 0x%03llx: queue %u changed while ready",
					 (unsigned long long)off, t->state.queue_sel);
		return NULL;
	}
	return vq;
}

static void set_half(uint64_t *gpa, bool high, uint32_t val)
{
	if (high)
		*gpa = (*gpa & 0xffffffffULL) | ((uint64_t)val << 32);
	else
		*gpa = (*gpa & ~0xffffffffULL) | val;
}

static void write_queue_ready(struct virtio_mmio *t, uint32_t val)
{
	struct virtq *vq = selected_queue(t);
	struct fk_err err;
	char why[sizeof(err.msg) + 32];

	if (!vq) {
		virtio_mmio_record_error(t, "QueueReady: queue %u does not exist",
					 t->state.queue_sel);
		return;
	}
	if (val == 0) {
		vq->ready = false;
		return;
	}
	if (val != 1) {
		virtio_mmio_record_error(t, "QueueReady: value %u is not 0 or 1", val);
		return;
	}
	if (vq->ready)
		return;
	if (virtq_check_rings(t->mem, vq, t->ops->queue_max_size, &err)) {
		snprintf(why, sizeof(why), "queue %u: %s", t->state.queue_sel, err.msg);
		virtio_mmio_set_needs_reset(t, why);
		return;
	}
	/* The driver hands over zeroed rings: both sides start at index 0. */
	vq->last_avail_idx = 0;
	vq->used_idx = 0;
	vq->ready = true;
}

static void write_queue_num(struct virtio_mmio *t, uint32_t val)
{
	struct virtq *vq = queue_for_setup(t, VIRTIO_MMIO_QUEUE_NUM);

	if (!vq)
		return;
	if (val == 0 || val > t->ops->queue_max_size || (val & (val - 1))) {
		virtio_mmio_record_error(t, "QueueNum %u is not a power of two in [1, %u]", val,
					 t->ops->queue_max_size);
		return;
	}
	vq->num = (uint16_t)val;
}

static void reg_write(struct virtio_mmio *t, uint64_t off, uint32_t val)
{
	struct virtio_mmio_state *s = &t->state;
	struct virtq *vq;

	switch (off) {
	case VIRTIO_MMIO_DEVICE_FEATURES_SEL:
		s->device_features_sel = val;
		return;
	case VIRTIO_MMIO_DRIVER_FEATURES:
		write_driver_features(t, val);
		return;
	case VIRTIO_MMIO_DRIVER_FEATURES_SEL:
		s->driver_features_sel = val;
		return;
	case VIRTIO_MMIO_QUEUE_SEL:
		/* Checked on use: the driver probes queues by selecting them. */
		s->queue_sel = val;
		return;
	case VIRTIO_MMIO_QUEUE_NUM:
		write_queue_num(t, val);
		return;
	case VIRTIO_MMIO_QUEUE_READY:
		write_queue_ready(t, val);
		return;
	case VIRTIO_MMIO_QUEUE_NOTIFY:
		notify_locked(t, val);
		return;
	case VIRTIO_MMIO_INTERRUPT_ACK:
		s->interrupt_status &= ~val;
		return;
	case VIRTIO_MMIO_STATUS:
		write_status(t, val);
		return;
	case VIRTIO_MMIO_QUEUE_DESC_LOW:
	case VIRTIO_MMIO_QUEUE_DESC_HIGH:
		vq = queue_for_setup(t, off);
		if (vq)
			set_half(&vq->desc_gpa, off == VIRTIO_MMIO_QUEUE_DESC_HIGH, val);
		return;
	case VIRTIO_MMIO_QUEUE_DRIVER_LOW:
	case VIRTIO_MMIO_QUEUE_DRIVER_HIGH:
		vq = queue_for_setup(t, off);
		if (vq)
			set_half(&vq->avail_gpa, off == VIRTIO_MMIO_QUEUE_DRIVER_HIGH, val);
		return;
	case VIRTIO_MMIO_QUEUE_DEVICE_LOW:
	case VIRTIO_MMIO_QUEUE_DEVICE_HIGH:
		vq = queue_for_setup(t, off);
		if (vq)
			set_half(&vq->used_gpa, off == VIRTIO_MMIO_QUEUE_DEVICE_HIGH, val);
		return;
	default:
		virtio_mmio_record_error(t,
					 "write of 0x%x to read-only or unknown register 0x%03llx",
					 val, (unsigned long long)off);
		return;
	}
}

static bool config_access_ok(struct virtio_mmio *t, uint64_t off, uint32_t len)
{
	if ((len != 1 && len != 2 && len != 4 && len != 8) || off >= t->ops->config_size ||
	    len > t->ops->config_size - off) {
		virtio_mmio_record_error(t, "config access of %u bytes at 0x%llx outside %u bytes",
					 len, (unsigned long long)off, t->ops->config_size);
		return false;
	}
	return true;
}

static bool reg_access_ok(struct virtio_mmio *t, uint64_t off, uint32_t len)
{
	if (len != 4 || off % 4) {
		virtio_mmio_record_error(t,
					 "register access of %u bytes at 0x%03llx: need 4, aligned",
					 len, (unsigned long long)off);
		return false;
	}
	return true;
}

static void virtio_mmio_read(void *opaque, uint64_t off, uint8_t *data, uint32_t len)
{
	struct virtio_mmio *t = opaque;
	uint32_t val;

	memset(data, 0, len);
	pthread_mutex_lock(&t->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		off -= VIRTIO_MMIO_CONFIG;
		if (config_access_ok(t, off, len) && t->ops->config_read)
			t->ops->config_read(t->dev, (uint32_t)off, data, len);
	} else if (reg_access_ok(t, off, len)) {
		val = htole32(reg_read(t, off));
		memcpy(data, &val, sizeof(val));
	}
	pthread_mutex_unlock(&t->lock);
}

static void virtio_mmio_write(void *opaque, uint64_t off, const uint8_t *data, uint32_t len)
{
	struct virtio_mmio *t = opaque;
	uint32_t val;

	pthread_mutex_lock(&t->lock);
	if (off >= VIRTIO_MMIO_CONFIG) {
		off -= VIRTIO_MMIO_CONFIG;
		if (!config_access_ok(t, off, len))
			goto out;
		if (t->ops->config_write)
			t->ops->config_write(t->dev, (uint32_t)off, data, len);
		else
			virtio_mmio_record_error(t, "write to read-only config at 0x%llx",
						 (unsigned long long)off);
	} else if (reg_access_ok(t, off, len)) {
		memcpy(&val, data, sizeof(val));
		reg_write(t, off, le32toh(val));
	}
out:
	pthread_mutex_unlock(&t->lock);
}

const struct bus_device_ops virtio_mmio_bus_ops = {
    .name = "virtio-mmio",
    .read = virtio_mmio_read,
    .write = virtio_mmio_write,
};
