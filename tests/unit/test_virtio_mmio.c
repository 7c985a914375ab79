/* SPDX-License-Identifier: MIT */
/* The virtio-mmio transport driven through its register window, with a stub device. */
#include "virtio_guest.h"

#include <stdlib.h>

#define STUB_QUEUES    2
#define STUB_QMAX      16
#define STUB_CFG_SIZE  12
#define STUB_DEVICE_ID 42
#define STUB_FEATURES  ((1ULL << 0) | (1ULL << 40))
#define STUB_FILL      0xab

/* Answers every chain by filling its writable buffers with STUB_FILL. */
struct stub_dev {
	int notifies[STUB_QUEUES];
	int resets;
	int chains;
	uint8_t config[STUB_CFG_SIZE];
	struct virtq_chain chain;
};

static uint64_t stub_features(void *dev)
{
	(void)dev;
	return STUB_FEATURES;
}

static void stub_config_read(void *dev, uint32_t off, uint8_t *data, uint32_t len)
{
	struct stub_dev *s = dev;

	memcpy(data, s->config + off, len);
}

static void stub_config_write(void *dev, uint32_t off, const uint8_t *data, uint32_t len)
{
	struct stub_dev *s = dev;

	memcpy(s->config + off, data, len);
}

static void stub_queue_notify(struct virtio_mmio *t, void *dev, uint32_t q)
{
	struct stub_dev *s = dev;
	struct virtq *vq = &t->state.queues[q];
	struct fk_err err;
	bool done = false;
	int i, ret;

	s->notifies[q]++;
	while ((ret = virtq_pop(t->mem, vq, &s->chain, &err)) == 1) {
		for (i = 0; i < s->chain.nr_segs; i++)
			if (s->chain.segs[i].device_writable)
				memset(s->chain.segs[i].hva, STUB_FILL, s->chain.segs[i].len);
		assert_int_equal(
		    virtq_push(t->mem, vq, s->chain.head, (uint32_t)s->chain.writable_len, &err),
		    0);
		s->chains++;
		done = true;
	}
	if (ret < 0)
		virtio_mmio_set_needs_reset(t, err.msg);
	if (done)
		virtio_mmio_signal_used(t, q);
}

static void stub_reset(void *dev)
{
	((struct stub_dev *)dev)->resets++;
}

static const struct virtio_dev_ops stub_ops = {
    .name = "stub",
    .device_id = STUB_DEVICE_ID,
    .num_queues = STUB_QUEUES,
    .queue_max_size = STUB_QMAX,
    .features = stub_features,
    .config_size = STUB_CFG_SIZE,
    .config_read = stub_config_read,
    .config_write = stub_config_write,
    .queue_notify = stub_queue_notify,
    .reset = stub_reset,
};

struct fx {
	struct guest_mem mem;
	struct stub_dev dev;
	struct virtio_mmio t;
	struct vg_queue q;
	int irq;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct fk_err err;
	int i;

	assert_non_null(f);
	vg_mem_init(&f->mem);
	for (i = 0; i < STUB_CFG_SIZE; i++)
		f->dev.config[i] = (uint8_t)(0x10 + i);
	f->irq = vg_irq_fd();
	assert_int_equal(virtio_mmio_init(&f->t, &stub_ops, &f->dev, &f->mem, vg_irq_line(f->irq),
					  VG_MMIO_BASE, &err),
			 0);
	f->q = vg_default_queue(8);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	virtio_mmio_destroy(&f->t);
	close(f->irq);
	guest_mem_destroy(&f->mem);
	free(f);
	return 0;
}

static const uint64_t ALL_FEATURES = STUB_FEATURES | (1ULL << VIRTIO_F_VERSION_1);

/* Negotiation, queue 0 live, DRIVER_OK. */
static void bring_up(struct fx *f)
{
	assert_int_equal(vg_negotiate(&f->t, ALL_FEATURES), VIRTIO_STATUS_ACKNOWLEDGE |
								VIRTIO_STATUS_DRIVER |
								VIRTIO_STATUS_FEATURES_OK);
	vg_setup_queue(&f->t, &f->mem, 0, &f->q);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 1);
	vg_driver_ok(&f->t);
	assert_true(vg_status(&f->t) & VIRTIO_STATUS_DRIVER_OK);
}

/* Publishes a 2-descriptor chain (8 readable, 8 writable bytes) at head. */
static void publish_simple(struct fx *f, uint16_t head)
{
	uint16_t second = (uint16_t)((head + 1) % f->q.num);

	vg_desc(&f->mem, &f->q, head, 0x10000, 8, VIRTQ_DESC_F_NEXT, second);
	vg_desc(&f->mem, &f->q, second, 0x10100, 8, VIRTQ_DESC_F_WRITE, 0);
	memset(vg_ptr(&f->mem, 0x10100, 8), 0, 8);
	vg_publish(&f->mem, &f->q, head);
}

static void expect_needs_reset(struct fx *f, const char *what)
{
	assert_true(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_true(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
	assert_int_equal(vg_irqs(f->irq), 1);
	if (!strstr(f->t.last_error, what))
		fail_msg("last error \"%s\" does not mention \"%s\"", f->t.last_error, what);
}

static void test_identity_registers(void **state)
{
	struct fx *f = *state;

	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_VERSION), 2);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_DEVICE_ID), STUB_DEVICE_ID);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_VENDOR_ID), VIRTIO_MMIO_VENDOR);
	assert_int_equal(vg_status(&f->t), 0);
	assert_int_equal(f->t.errors, 0);
	assert_int_equal(virtio_mmio_notify_addr(&f->t), VG_MMIO_BASE + 0x50);
}

static void test_device_features(void **state)
{
	struct fx *f = *state;

	assert_int_equal(vg_device_features(&f->t), ALL_FEATURES);
	vg_write32(&f->t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 2);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_DEVICE_FEATURES), 0);
}

static void test_negotiation_accepts_subset(void **state)
{
	struct fx *f = *state;

	assert_true(vg_negotiate(&f->t, 1ULL << VIRTIO_F_VERSION_1) & VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(f->t.state.driver_features, 1ULL << VIRTIO_F_VERSION_1);
	assert_int_equal(f->t.errors, 0);
}

static void test_features_ok_refused_for_unoffered(void **state)
{
	struct fx *f = *state;
	uint32_t s;

	s = vg_negotiate(&f->t, ALL_FEATURES | (1ULL << 1));
	assert_false(s & VIRTIO_STATUS_FEATURES_OK);
	assert_int_equal(f->t.errors, 1);
	assert_non_null(strstr(f->t.last_error, "not offered"));
	/* Features are still open: the driver may fix them and try again. */
	vg_write32(&f->t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vg_write32(&f->t, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)ALL_FEATURES);
	vg_write32(&f->t, VIRTIO_MMIO_STATUS, s | VIRTIO_STATUS_FEATURES_OK);
	assert_true(vg_status(&f->t) & VIRTIO_STATUS_FEATURES_OK);
}

static void test_features_ok_refused_without_version_1(void **state)
{
	struct fx *f = *state;

	assert_false(vg_negotiate(&f->t, STUB_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
	assert_non_null(strstr(f->t.last_error, "VERSION_1"));
	/* Word 2 and up were not offered either. */
	vg_write32(&f->t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 2);
	vg_write32(&f->t, VIRTIO_MMIO_DRIVER_FEATURES, 1);
	assert_int_equal(f->t.errors, 2);
}

static void test_features_frozen_after_features_ok(void **state)
{
	struct fx *f = *state;

	assert_true(vg_negotiate(&f->t, ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
	vg_write32(&f->t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
	vg_write32(&f->t, VIRTIO_MMIO_DRIVER_FEATURES, 0);
	assert_int_equal(f->t.state.driver_features, ALL_FEATURES);
	assert_int_equal(f->t.errors, 1);
}

static void test_driver_ok_needs_features_ok(void **state)
{
	struct fx *f = *state;

	vg_write32(&f->t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	vg_write32(&f->t, VIRTIO_MMIO_STATUS,
		   VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER | VIRTIO_STATUS_DRIVER_OK);
	assert_int_equal(vg_status(&f->t), VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER);
	assert_int_equal(f->t.errors, 1);
}

static void test_status_bits_cannot_be_cleared_without_reset(void **state)
{
	struct fx *f = *state;
	uint32_t s;

	bring_up(f);
	s = vg_status(&f->t);
	vg_write32(&f->t, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	assert_int_equal(vg_status(&f->t), s);
	/* Nor can the driver set DEVICE_NEEDS_RESET itself. */
	vg_write32(&f->t, VIRTIO_MMIO_STATUS, s | VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_int_equal(vg_status(&f->t), s);
	assert_int_equal(f->dev.resets, 1); /* only bring_up's */
	assert_int_equal(f->t.errors, 1);
}

static void test_queue_sel_out_of_range(void **state)
{
	struct fx *f = *state;
	uint32_t sels[] = {STUB_QUEUES, VIRTIO_MMIO_MAX_QUEUES, 0xffffffff};
	uint64_t errors;
	size_t i;

	assert_true(vg_negotiate(&f->t, ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
	for (i = 0; i < sizeof(sels) / sizeof(sels[0]); i++) {
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_SEL, sels[i]);
		assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0);
		assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 0);
		errors = f->t.errors;
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_NUM, 4);
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x1000);
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, 0x2000);
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, 0x3000);
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_READY, 1);
		assert_int_equal(f->t.errors, errors + 5);
		assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 0);
	}
	/* The queues that do exist were not touched. */
	assert_int_equal(f->t.state.queues[0].desc_gpa, 0);
	assert_int_equal(f->t.state.queues[1].desc_gpa, 0);
	assert_int_equal(f->t.state.queues[STUB_QUEUES].num, 0);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_SEL, 1);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_NUM_MAX), STUB_QMAX);
	/* A notification for a queue that does not exist is ignored. */
	vg_driver_ok(&f->t);
	vg_notify(&f->t, STUB_QUEUES);
	vg_notify(&f->t, 0xffffffff);
	assert_int_equal(f->t.ignored_notifies, 2);
	assert_int_equal(f->dev.notifies[0] + f->dev.notifies[1], 0);
}

static void test_queue_num_validation(void **state)
{
	struct fx *f = *state;
	uint32_t bad[] = {0, 3, 12, STUB_QMAX * 2, 0x10000 + 4};
	size_t i;

	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_SEL, 0);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_NUM, 4);
	assert_int_equal(f->t.state.queues[0].num, 4);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		vg_write32(&f->t, VIRTIO_MMIO_QUEUE_NUM, bad[i]);
		assert_int_equal(f->t.state.queues[0].num, 4);
	}
	assert_int_equal(f->t.errors, sizeof(bad) / sizeof(bad[0]));
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_NUM, STUB_QMAX);
	assert_int_equal(f->t.state.queues[0].num, STUB_QMAX);
}

static void test_ready_with_bad_rings_needs_reset(void **state)
{
	struct fx *f = *state;
	struct {
		struct vg_queue q;
		const char *what;
	} cases[] = {
	    {{.num = 8, .desc = 0x1008, .avail = 0x2000, .used = 0x3000}, "aligned"},
	    {{.num = 8, .desc = 0x1000, .avail = 0x2001, .used = 0x3000}, "aligned"},
	    {{.num = 8, .desc = 0x1000, .avail = 0x2000, .used = 0x3002}, "aligned"},
	    {{.num = 8, .desc = VG_RAM_SIZE - 64, .avail = 0x2000, .used = 0x3000},
	     "descriptor table"},
	    {{.num = 8, .desc = 0x1000, .avail = VG_RAM_SIZE, .used = 0x3000}, "avail ring"},
	    {{.num = 8, .desc = 0x1000, .avail = 0x2000, .used = 0xfffffffffffffff0ULL},
	     "used ring"},
	    {{.num = 8, .desc = 0x1000, .avail = 0x2000, .used = GUEST_MMIO_HOLE_START},
	     "used ring"},
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_true(vg_negotiate(&f->t, ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
		vg_setup_queue(&f->t, &f->mem, 0, &cases[i].q);
		assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 0);
		expect_needs_reset(f, cases[i].what);
		/* Reset brings it back: a good layout now works. */
		vg_write32(&f->t, VIRTIO_MMIO_STATUS, 0);
		assert_int_equal(vg_status(&f->t), 0);
		assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
		/* Three resets per round: vg_negotiate, this one, bring_up's vg_negotiate. */
		assert_int_equal(f->dev.resets, 3 * (int)i + 2);
		bring_up(f);
		publish_simple(f, 0);
		vg_notify(&f->t, 0);
		assert_int_equal(vg_used_idx(&f->mem, &f->q), 1);
		assert_int_equal(vg_irqs(f->irq), 1);
	}
}

static void test_queue_layout_frozen_while_ready(void **state)
{
	struct fx *f = *state;
	uint64_t errors;

	bring_up(f);
	errors = f->t.errors;
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_SEL, 0);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_NUM, 2);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DESC_LOW, 0x5000);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DESC_HIGH, 1);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DRIVER_LOW, 0x5000);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_DEVICE_LOW, 0x5000);
	assert_int_equal(f->t.errors, errors + 5);
	assert_int_equal(f->t.state.queues[0].num, 8);
	assert_int_equal(f->t.state.queues[0].desc_gpa, VG_DESC_GPA);
	assert_int_equal(f->t.state.queues[0].avail_gpa, VG_AVAIL_GPA);
	assert_int_equal(f->t.state.queues[0].used_gpa, VG_USED_GPA);
	/* QueueReady only takes 0 or 1; 0 takes the queue down. */
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_READY, 2);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 1);
	vg_write32(&f->t, VIRTIO_MMIO_QUEUE_READY, 0);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 0);
	publish_simple(f, 0);
	vg_notify(&f->t, 0);
	assert_int_equal(f->dev.notifies[0], 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
}

static void test_notify_before_driver_ok_ignored(void **state)
{
	struct fx *f = *state;

	assert_true(vg_negotiate(&f->t, ALL_FEATURES) & VIRTIO_STATUS_FEATURES_OK);
	vg_setup_queue(&f->t, &f->mem, 0, &f->q);
	publish_simple(f, 0);
	vg_notify(&f->t, 0);
	virtio_mmio_notify(&f->t, 0);
	assert_int_equal(f->dev.notifies[0], 0);
	assert_int_equal(f->t.ignored_notifies, 2);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
	assert_int_equal(vg_irqs(f->irq), 0);
	/* Queue 1 exists but is not ready. */
	vg_driver_ok(&f->t);
	vg_notify(&f->t, 1);
	assert_int_equal(f->dev.notifies[1], 0);
	assert_int_equal(f->t.ignored_notifies, 3);
	/* Now it is processed, including what was published before. */
	vg_notify(&f->t, 0);
	assert_int_equal(f->dev.notifies[0], 1);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 1);
}

static void test_used_interrupt_and_ack(void **state)
{
	struct fx *f = *state;
	uint32_t id, len;
	uint8_t *buf;

	bring_up(f);
	assert_int_equal(vg_irqs(f->irq), 0);
	publish_simple(f, 2);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 1);
	vg_used_elem(&f->mem, &f->q, 0, &id, &len);
	assert_int_equal(id, 2);
	assert_int_equal(len, 8);
	buf = vg_ptr(&f->mem, 0x10100, 8);
	assert_int_equal(buf[0], STUB_FILL);
	assert_int_equal(buf[7], STUB_FILL);
	assert_int_equal(vg_irqs(f->irq), 1);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
	vg_write32(&f->t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

	/* The driver asked for no interrupts: none, and no status bit either. */
	vg_set_avail_flags(&f->mem, &f->q, VIRTQ_AVAIL_F_NO_INTERRUPT);
	publish_simple(f, 4);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 2);
	assert_int_equal(vg_irqs(f->irq), 0);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);

	/* A notify with nothing new completes nothing and interrupts nobody. */
	vg_set_avail_flags(&f->mem, &f->q, 0);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_irqs(f->irq), 0);
	assert_int_equal(f->dev.notifies[0], 3);
}

static void test_broken_ring_stops_device_until_reset(void **state)
{
	struct fx *f = *state;

	bring_up(f);
	vg_publish(&f->mem, &f->q, 200); /* head >= num */
	vg_notify(&f->t, 0);
	expect_needs_reset(f, "head index 200");
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
	assert_int_equal(f->t.errors, 1);

	/* Stopped: a good chain is not processed, neither by register nor ioeventfd path. */
	publish_simple(f, 0);
	vg_notify(&f->t, 0);
	virtio_mmio_notify(&f->t, 0);
	assert_int_equal(f->dev.notifies[0], 1);
	assert_int_equal(vg_irqs(f->irq), 0);
	/* A second contract break does not raise a second interrupt. */
	virtio_mmio_set_needs_reset(&f->t, "again");
	assert_int_equal(vg_irqs(f->irq), 0);
	assert_int_equal(f->t.errors, 2);

	vg_write32(&f->t, VIRTIO_MMIO_STATUS, 0);
	assert_int_equal(vg_status(&f->t), 0);
	assert_false(f->t.state.queues[0].ready);
	bring_up(f);
	publish_simple(f, 0);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 1);
	assert_int_equal(vg_irqs(f->irq), 1);
}

static void test_unaligned_register_access(void **state)
{
	struct fx *f = *state;
	uint8_t data[8];
	uint32_t lens[] = {1, 2, 8};
	uint64_t errors;
	size_t i;

	for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
		memset(data, 0x55, sizeof(data));
		virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_MAGIC_VALUE, data, lens[i]);
		assert_int_equal(data[0], 0);
		assert_int_equal(data[lens[i] - 1], 0);
		assert_int_equal(f->t.errors, i + 1);
	}
	memset(data, 0x55, sizeof(data));
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_MAGIC_VALUE + 2, data, 4);
	assert_int_equal(data[0] | data[1] | data[2] | data[3], 0);
	errors = f->t.errors;
	assert_int_equal(errors, 4);

	/* Writes of the wrong size or alignment change nothing. */
	data[0] = VIRTIO_STATUS_ACKNOWLEDGE;
	virtio_mmio_bus_ops.write(&f->t, VIRTIO_MMIO_STATUS, data, 1);
	virtio_mmio_bus_ops.write(&f->t, VIRTIO_MMIO_STATUS, data, 2);
	virtio_mmio_bus_ops.write(&f->t, VIRTIO_MMIO_STATUS + 1, data, 4);
	assert_int_equal(vg_status(&f->t), 0);
	assert_int_equal(f->t.errors, errors + 3);
	/* Read-only and unknown registers. */
	vg_write32(&f->t, VIRTIO_MMIO_MAGIC_VALUE, 0);
	vg_write32(&f->t, 0x0f0, 1);
	assert_int_equal(vg_read32(&f->t, 0x0f0), 0);
	assert_int_equal(f->t.errors, errors + 6);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_MAGIC_VALUE), 0x74726976);
}

static void test_config_space_access(void **state)
{
	struct fx *f = *state;
	uint8_t data[8];
	uint64_t v64;
	uint32_t v32;
	uint16_t v16;

	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + 3, data, 1);
	assert_int_equal(data[0], 0x13);
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + 1, (uint8_t *)&v16, 2);
	assert_int_equal(le16toh(v16), 0x1211);
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + 8, (uint8_t *)&v32, 4);
	assert_int_equal(le32toh(v32), 0x1b1a1918);
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + 4, (uint8_t *)&v64, 8);
	assert_int_equal(le64toh(v64), 0x1b1a191817161514ULL);
	assert_int_equal(f->t.errors, 0);

	/* Past the end, straddling it, or of an odd size: reads as 0, counted. */
	memset(data, 0x55, sizeof(data));
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + STUB_CFG_SIZE, data, 1);
	assert_int_equal(data[0], 0);
	memset(data, 0x55, sizeof(data));
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + STUB_CFG_SIZE - 1, data, 2);
	assert_int_equal(data[0] | data[1], 0);
	memset(data, 0x55, sizeof(data));
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + 8, data, 8);
	assert_int_equal(data[0] | data[7], 0);
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG, data, 3);
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_SIZE - 4, data, 4);
	assert_int_equal(f->t.errors, 5);

	/* Writes inside go to the device, outside are dropped. */
	data[0] = 0xee;
	data[1] = 0xdd;
	virtio_mmio_bus_ops.write(&f->t, VIRTIO_MMIO_CONFIG + 10, data, 2);
	assert_int_equal(f->dev.config[10], 0xee);
	assert_int_equal(f->dev.config[11], 0xdd);
	virtio_mmio_bus_ops.write(&f->t, VIRTIO_MMIO_CONFIG + 11, data, 2);
	assert_int_equal(f->dev.config[11], 0xdd);
	assert_int_equal(f->t.errors, 6);
}

static void test_through_the_bus(void **state)
{
	struct fx *f = *state;
	struct bus bus;
	struct fk_err err;
	uint32_t v;

	bus_init(&bus, "mmio");
	assert_int_equal(
	    bus_register(&bus, VG_MMIO_BASE, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, &f->t, &err),
	    0);
	assert_int_equal(bus_read(&bus, VG_MMIO_BASE + VIRTIO_MMIO_MAGIC_VALUE, (uint8_t *)&v, 4),
			 0);
	assert_int_equal(le32toh(v), 0x74726976);
	bring_up(f);
	publish_simple(f, 0);
	v = htole32(0);
	assert_int_equal(bus_write(&bus, virtio_mmio_notify_addr(&f->t), (uint8_t *)&v, 4), 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 1);
	assert_int_equal(vg_irqs(f->irq), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	    T(test_identity_registers),
	    T(test_device_features),
	    T(test_negotiation_accepts_subset),
	    T(test_features_ok_refused_for_unoffered),
	    T(test_features_ok_refused_without_version_1),
	    T(test_features_frozen_after_features_ok),
	    T(test_driver_ok_needs_features_ok),
	    T(test_status_bits_cannot_be_cleared_without_reset),
	    T(test_queue_sel_out_of_range),
	    T(test_queue_num_validation),
	    T(test_ready_with_bad_rings_needs_reset),
	    T(test_queue_layout_frozen_while_ready),
	    T(test_notify_before_driver_ok_ignored),
	    T(test_used_interrupt_and_ack),
	    T(test_broken_ring_stops_device_until_reset),
	    T(test_unaligned_register_access),
	    T(test_config_space_access),
	    T(test_through_the_bus),
#undef T
	};

	return cmocka_run_group_tests_name("virtio_mmio", tests, NULL, NULL);
}
