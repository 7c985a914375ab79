/* SPDX-License-Identifier: MIT */
/*
 * blk: exercises the first virtio-blk device with polled requests: capacity,
 * GET_ID, a read of blk_read_sectors from sector 0 (FNV-1a of the bytes),
 * and with blk_write_sector=N a write + flush + read-back of sector N.
 */
#include "blk.h"

#define VIRTIO_BLK_F_RO	   5
#define VIRTIO_BLK_F_FLUSH 9

int blk_open(struct blk *b, unsigned dev, uint64_t mem, uint64_t mem_bytes, bool driver_ok)
{
	uint64_t base = virtio_find(VIRTIO_ID_BLK, dev);
	uint32_t gen;

	memset(b, 0, sizeof(*b));
	b->mem = mem;
	b->data = mem + BLK_OFF_DATA;
	b->data_bytes = mem_bytes - BLK_OFF_DATA;
	if (!base) {
		say("blk.error=no virtio-blk device #%u (%u virtio-mmio windows in the DSDT)", dev,
		    acpi.nr_virtio);
		return -1;
	}
	if (virtio_negotiate(&b->dev, base, 1ULL << VIRTIO_BLK_F_RO | 1ULL << VIRTIO_BLK_F_FLUSH) <
	    0) {
		say("blk.error=feature negotiation failed at 0x%lx (offered 0x%lx)", base,
		    b->dev.offered);
		return -1;
	}
	if (virtio_queue_setup(&b->dev, 0, BLK_QUEUE_SIZE, mem + BLK_OFF_QUEUE) < 0) {
		say("blk.error=queue 0 setup failed at 0x%lx", base);
		return -1;
	}
	if (driver_ok)
		vreg_write(&b->dev, VIRTIO_MMIO_STATUS,
			   vreg_read(&b->dev, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	do {
		gen = vreg_read(&b->dev, VIRTIO_MMIO_CONFIG_GEN);
		b->capacity = virtio_config_read32(&b->dev, 0) |
			      (uint64_t)virtio_config_read32(&b->dev, 4) << 32;
	} while (gen != vreg_read(&b->dev, VIRTIO_MMIO_CONFIG_GEN));
	b->ro = (b->dev.offered >> VIRTIO_BLK_F_RO) & 1;
	return 0;
}

static void blk_build(struct blk *b, uint32_t type, uint64_t sector, uint32_t len, bool notify)
{
	struct virtio_blk_req_header *h =
	    (struct virtio_blk_req_header *)(uintptr_t)(b->mem + BLK_OFF_HEADER);
	volatile uint8_t *status = (volatile uint8_t *)(uintptr_t)(b->mem + BLK_OFF_STATUS);
	struct vbuf bufs[3];
	unsigned n = 0;

	h->type = type;
	h->reserved = 0;
	h->sector = sector;
	*status = 0xff;
	bufs[n++] = (struct vbuf){.addr = b->mem + BLK_OFF_HEADER, .len = sizeof(*h)};
	if (len)
		bufs[n++] = (struct vbuf){
		    .addr = b->data, .len = len, .device_writes = type != VIRTIO_BLK_T_OUT};
	bufs[n++] = (struct vbuf){.addr = b->mem + BLK_OFF_STATUS, .len = 1, .device_writes = true};
	if (notify)
		vq_submit(&b->dev, 0, bufs, n);
	else
		vq_post(&b->dev, bufs, n);
}

void blk_start(struct blk *b, uint32_t type, uint64_t sector, uint32_t len)
{
	blk_build(b, type, sector, len, true);
}

void blk_post_quiet(struct blk *b, uint32_t type, uint64_t sector, uint32_t len)
{
	blk_build(b, type, sector, len, false);
}

int blk_status(const struct blk *b)
{
	return *(volatile uint8_t *)(uintptr_t)(b->mem + BLK_OFF_STATUS);
}

int blk_request(struct blk *b, uint32_t type, uint64_t sector, uint32_t len)
{
	blk_start(b, type, sector, len);
	if (vq_wait(&b->dev, NULL, BLK_TIMEOUT_US) < 0)
		return -1;
	return blk_status(b);
}

static void blk_id(struct blk *b)
{
	char id[VIRTIO_BLK_ID_BYTES + 1];
	int st = blk_request(b, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES);

	if (st != VIRTIO_BLK_S_OK) {
		say("blk.id_status=%d", st);
		return;
	}
	memcpy(id, (const void *)(uintptr_t)b->data, VIRTIO_BLK_ID_BYTES);
	id[VIRTIO_BLK_ID_BYTES] = '\0';
	say_text("blk.id=", id, strlen(id));
}

static void blk_write_test(struct blk *b, unsigned cpu)
{
	uint8_t *data = (uint8_t *)(uintptr_t)b->data;
	uint8_t expect[512];
	int len, st;

	len = fmt((char *)expect, sizeof(expect), "forkd-probe-write cpu=%u seq=1", cpu);
	for (unsigned i = (unsigned)len; i < sizeof(expect); i++)
		expect[i] = (uint8_t)(i & 0xff);
	memcpy(data, expect, sizeof(expect));
	st = blk_request(b, VIRTIO_BLK_T_OUT, cfg.blk_write_sector, sizeof(expect));
	say("blk.write_status=%d", st);
	st = blk_request(b, VIRTIO_BLK_T_FLUSH, 0, 0);
	say("blk.flush_status=%d", st);
	memset(data, 0, sizeof(expect));
	st = blk_request(b, VIRTIO_BLK_T_IN, cfg.blk_write_sector, sizeof(expect));
	say("blk.write_readback=%u", st == VIRTIO_BLK_S_OK && memcmp(data, expect, 512) == 0);
}

void blk_run(struct cpu *c)
{
	struct blk b;
	uint64_t bytes = cfg.blk_read_sectors * 512;
	int st;

	if (blk_open(&b, c->blk_dev, c->mem_base, c->mem_bytes, true) < 0)
		return;
	say("blk.capacity=%lu", b.capacity);
	blk_id(&b);
	say("blk.ro=%u", b.ro);
	if (bytes > b.data_bytes) {
		say("blk.error=blk_read_sectors=%lu is more than %lu", cfg.blk_read_sectors,
		    b.data_bytes / 512);
		bytes = b.data_bytes & ~511ULL;
	}
	memset((void *)(uintptr_t)b.data, 0, bytes);
	st = blk_request(&b, VIRTIO_BLK_T_IN, 0, (uint32_t)bytes);
	if (st != VIRTIO_BLK_S_OK)
		say("blk.read_status=%d", st);
	else
		say("blk.read_fnv=%016lx", fnv1a64((const void *)(uintptr_t)b.data, bytes));
	if (cfg.blk_write)
		blk_write_test(&b, c->index);
}
