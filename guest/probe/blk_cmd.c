/* SPDX-License-Identifier: MIT */
/*
 * Console commands on the first virtio-blk device, for tests where several
 * VMs restored from one snapshot each write their own sector:
 *   blkw <sector> <tag>  writes "forkd-blkw <tag>" + zeros, flushes
 *   blkr <sector>        reads and prints the sector's leading text
 *   blkq <sector> <tag>  queues a write of "forkd-blkq <tag>" WITHOUT notifying the
 *                        device, so a snapshot taken now holds a request in flight
 *   blkq-wait            waits for that request's completion and prints its status
 * The device is opened on first use. A restored VM continues with the same
 * memory and the VMM restores the device, so the driver state lives in
 * ordinary memory and an open device that is still DRIVER_OK is reused.
 */
#include "blk.h"

#define TAG_MAX	     48
#define TEXT_MAX     64
#define SECTOR_BYTES 512
#define BLKW_PREFIX  "forkd-blkw "

/* BSP only (console commands run there); survive a snapshot with the rest of memory. */
static struct blk cmd_blk;
static bool cmd_blk_open;
static uint64_t cmd_blk_mem;

static bool device0_has_workload(void)
{
	for (unsigned i = 0; i < nr_cpus; i++) {
		enum work w = cpus[i].work;

		if ((w == WORK_BLK || w == WORK_HOSTILE || w == WORK_BLKLOOP) &&
		    cpus[i].blk_dev == 0)
			return true;
	}
	return false;
}

static struct blk *cmd_blk_get(void)
{
	uint32_t status;

	if (device0_has_workload()) {
		say("error blk busy");
		return NULL;
	}
	if (cmd_blk_open) {
		status = vreg_read(&cmd_blk.dev, VIRTIO_MMIO_STATUS);
		if ((status & VIRTIO_STATUS_DRIVER_OK) &&
		    !(status & (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)))
			return &cmd_blk;
		cmd_blk_open = false;
	}
	if (!cmd_blk_mem)
		cmd_blk_mem = mem_alloc(ALLOC_ALIGN);
	if (!cmd_blk_mem) {
		say("error blk out of memory");
		return NULL;
	}
	if (blk_open(&cmd_blk, 0, cmd_blk_mem, ALLOC_ALIGN, true) < 0)
		return NULL;
	cmd_blk_open = true;
	return &cmd_blk;
}

/* After a timeout the device may still complete the request later: start over next time. */
static int cmd_request(struct blk *b, uint32_t type, uint64_t sector, uint32_t len)
{
	int st = blk_request(b, type, sector, len);

	if (st < 0)
		cmd_blk_open = false;
	return st;
}

/* Splits the next space-separated token off *s. */
static char *next_token(char **s)
{
	char *tok = *s, *p;

	while (*tok == ' ')
		tok++;
	p = tok;
	while (*p && *p != ' ')
		p++;
	if (*p)
		*p++ = '\0';
	*s = p;
	return tok;
}

static bool parse_sector(char **arg, uint64_t *sector)
{
	char *tok = next_token(arg);

	return *tok && parse_u64(tok, strlen(tok), sector);
}

void blk_cmd_write(char *arg)
{
	uint64_t sector;
	char *tag;
	struct blk *b;
	uint8_t *data;
	int st;

	if (!parse_sector(&arg, &sector) || !*(tag = next_token(&arg)) || strlen(tag) > TAG_MAX) {
		say("error usage: blkw <sector> <tag of 1-%u chars>", TAG_MAX);
		return;
	}
	b = cmd_blk_get();
	if (!b)
		return;
	data = (uint8_t *)(uintptr_t)b->data;
	memset(data, 0, SECTOR_BYTES);
	fmt((char *)data, SECTOR_BYTES, BLKW_PREFIX "%s", tag);
	st = cmd_request(b, VIRTIO_BLK_T_OUT, sector, SECTOR_BYTES);
	if (st == VIRTIO_BLK_S_OK)
		st = cmd_request(b, VIRTIO_BLK_T_FLUSH, 0, 0);
	say("blkw.sector=%lu status=%d tag=%s", sector, st, tag);
}

void blk_cmd_read(char *arg)
{
	uint64_t sector;
	char text[TEXT_MAX + 1];
	const uint8_t *data;
	struct blk *b;
	size_t n = 0;
	int st;

	if (!parse_sector(&arg, &sector)) {
		say("error usage: blkr <sector>");
		return;
	}
	b = cmd_blk_get();
	if (!b)
		return;
	data = (const uint8_t *)(uintptr_t)b->data;
	memset((void *)(uintptr_t)b->data, 0, SECTOR_BYTES);
	st = cmd_request(b, VIRTIO_BLK_T_IN, sector, SECTOR_BYTES);
	while (st == VIRTIO_BLK_S_OK && n < TEXT_MAX && data[n] >= 0x20 && data[n] < 0x7f) {
		text[n] = (char)data[n];
		n++;
	}
	text[n] = '\0';
	say("blkr.sector=%lu status=%d text=%s", sector, st, text);
}

/* The request blkq left queued; completion is awaited by blkq-wait (maybe after a restore). */
static bool cmd_blkq_pending;

void blk_cmd_queue(char *arg)
{
	uint64_t sector;
	char *tag;
	struct blk *b;
	uint8_t *data;

	if (!parse_sector(&arg, &sector) || !*(tag = next_token(&arg)) || strlen(tag) > TAG_MAX) {
		say("error usage: blkq <sector> <tag of 1-%u chars>", TAG_MAX);
		return;
	}
	if (cmd_blkq_pending) {
		say("error blkq already pending");
		return;
	}
	b = cmd_blk_get();
	if (!b)
		return;
	data = (uint8_t *)(uintptr_t)b->data;
	memset(data, 0, SECTOR_BYTES);
	fmt((char *)data, SECTOR_BYTES, "forkd-blkq %s", tag);
	blk_post_quiet(b, VIRTIO_BLK_T_OUT, sector, SECTOR_BYTES);
	cmd_blkq_pending = true;
	say("blkq.posted sector=%lu tag=%s", sector, tag);
}

void blk_cmd_queue_wait(char *arg)
{
	(void)arg;
	if (!cmd_blkq_pending) {
		say("error no blkq pending");
		return;
	}
	if (vq_wait(&cmd_blk.dev, NULL, BLK_TIMEOUT_US) < 0) {
		say("blkq.timeout");
		return;
	}
	cmd_blkq_pending = false;
	say("blkq.done status=%d", blk_status(&cmd_blk));
}
