/* SPDX-License-Identifier: MIT */
#include "virtio.h"

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

static bool is_virtio(uint64_t base, uint32_t device_id)
{
	return mmio_read32(base + VIRTIO_MMIO_MAGIC_VALUE) == VIRTIO_MAGIC &&
	       mmio_read32(base + VIRTIO_MMIO_VERSION) == 2 &&
	       mmio_read32(base + VIRTIO_MMIO_DEVICE_ID) == device_id;
}

uint64_t virtio_find(uint32_t device_id, unsigned n)
{
	for (unsigned i = 0; i < acpi.nr_virtio; i++)
		if (is_virtio(acpi.virtio[i], device_id) && n-- == 0)
			return acpi.virtio[i];
	if (acpi.nr_virtio == 0 && cfg.virtio_mmio && n == 0 &&
	    is_virtio(cfg.virtio_mmio, device_id))
		return cfg.virtio_mmio;
	return 0;
}

int virtio_negotiate(struct vdev *d, uint64_t base, uint64_t wanted)
{
	uint32_t status = VIRTIO_STATUS_ACKNOWLEDGE | VIRTIO_STATUS_DRIVER;

	memset(d, 0, sizeof(*d));
	d->base = base;
	vreg_write(d, VIRTIO_MMIO_STATUS, 0);
	vreg_write(d, VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	vreg_write(d, VIRTIO_MMIO_STATUS, status);
	vreg_write(d, VIRTIO_MMIO_DEVICE_FEAT_SEL, 0);
	d->offered = vreg_read(d, VIRTIO_MMIO_DEVICE_FEATURES);
	vreg_write(d, VIRTIO_MMIO_DEVICE_FEAT_SEL, 1);
	d->offered |= (uint64_t)vreg_read(d, VIRTIO_MMIO_DEVICE_FEATURES) << 32;
	d->accepted = d->offered & (wanted | 1ULL << VIRTIO_F_VERSION_1);
	if (!(d->accepted & (1ULL << VIRTIO_F_VERSION_1)))
		return -1;
	vreg_write(d, VIRTIO_MMIO_DRIVER_FEAT_SEL, 0);
	vreg_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)d->accepted);
	vreg_write(d, VIRTIO_MMIO_DRIVER_FEAT_SEL, 1);
	vreg_write(d, VIRTIO_MMIO_DRIVER_FEATURES, (uint32_t)(d->accepted >> 32));
	status |= VIRTIO_STATUS_FEATURES_OK;
	vreg_write(d, VIRTIO_MMIO_STATUS, status);
	if (!(vreg_read(d, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_FEATURES_OK))
		return -1;
	return 0;
}

uint64_t virtq_bytes(unsigned num)
{
	uint64_t used = align_up(16ULL * num + 6 + 2ULL * num, PAGE_SIZE);

	return used + 6 + 8ULL * num;
}

int virtio_queue_setup(struct vdev *d, unsigned q, unsigned num, uint64_t mem)
{
	uint64_t avail = mem + 16ULL * num;
	uint64_t used = mem + align_up(16ULL * num + 6 + 2ULL * num, PAGE_SIZE);
	unsigned max;

	vreg_write(d, VIRTIO_MMIO_QUEUE_SEL, q);
	if (vreg_read(d, VIRTIO_MMIO_QUEUE_READY))
		return -1;
	max = vreg_read(d, VIRTIO_MMIO_QUEUE_NUM_MAX);
	if (max == 0)
		return -1;
	if (num > max)
		num = max;
	memset((void *)(uintptr_t)mem, 0, virtq_bytes(num));
	d->q = (struct vq){
	    .num = num,
	    .desc = (volatile struct virtq_desc *)(uintptr_t)mem,
	    .avail = (volatile struct virtq_avail *)(uintptr_t)avail,
	    .used = (volatile struct virtq_used *)(uintptr_t)used,
	};
	vreg_write(d, VIRTIO_MMIO_QUEUE_NUM, num);
	vreg_write(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)mem);
	vreg_write(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(mem >> 32));
	vreg_write(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
	vreg_write(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
	vreg_write(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
	vreg_write(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
	vreg_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	return 0;
}

unsigned vq_submit(struct vdev *d, unsigned q, const struct vbuf *bufs, unsigned n)
{
	vq_post(d, bufs, n);
	vreg_write(d, VIRTIO_MMIO_QUEUE_NOTIFY, q);
	return 0;
}

void vq_post(struct vdev *d, const struct vbuf *bufs, unsigned n)
{
	struct vq *vq = &d->q;

	/* One request in flight at a time: the chain always starts at descriptor 0. */
	for (unsigned i = 0; i < n; i++) {
		vq->desc[i].addr = bufs[i].addr;
		vq->desc[i].len = bufs[i].len;
		vq->desc[i].flags = (uint16_t)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
					       (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		vq->desc[i].next = (uint16_t)(i + 1 < n ? i + 1 : 0);
	}
	vq->avail->ring[vq->avail_idx % vq->num] = 0;
	barrier();
	vq->avail_idx++;
	vq->avail->idx = vq->avail_idx;
	barrier();
}

bool vq_poll(struct vdev *d, uint32_t *len)
{
	struct vq *vq = &d->q;

	if (vq->used->idx == vq->used_idx)
		return false;
	barrier();
	if (len)
		*len = vq->used->ring[vq->used_idx % vq->num].len;
	vq->used_idx++;
	/* Polling only; acknowledge so a level-triggered line drops. */
	vreg_write(d, VIRTIO_MMIO_INTERRUPT_ACK, vreg_read(d, VIRTIO_MMIO_INTERRUPT_STATUS));
	return true;
}

int vq_wait(struct vdev *d, uint32_t *len, uint64_t timeout_us)
{
	struct stopwatch sw;

	stopwatch_start(&sw);
	while (!vq_poll(d, len)) {
		if (stopwatch_us(&sw) > timeout_us)
			return -1;
		cpu_relax();
	}
	return 0;
}

uint32_t virtio_config_read32(const struct vdev *d, uint32_t off)
{
	return vreg_read(d, VIRTIO_MMIO_CONFIG + off);
}
