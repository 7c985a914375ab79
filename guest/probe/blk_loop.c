/* SPDX-License-Identifier: MIT */
/*
 * blkloop: forever writes sector 1000 + k % 64 with a text naming k, reads
 * it back and compares, on this CPU's virtio-blk device. Meant for taking a
 * snapshot while a request is in flight: after the restore the request must
 * complete with the right data. The wait uses a stopwatch, so a TSC leap at
 * the restore does not pass for a timeout.
 */
#include "blk.h"

#define BLKLOOP_FIRST_SECTOR 1000
#define BLKLOOP_SECTORS	     64
#define BLKLOOP_TIMEOUT_US   2000000
#define SECTOR_BYTES	     512
#define TEXT_MAX	     64

/* The request's status byte, or -1 after the timeout. The BSP keeps serving the console. */
static int loop_request(struct cpu *c, struct blk *b, uint32_t type, uint64_t sector)
{
	struct stopwatch sw;

	blk_start(b, type, sector, SECTOR_BYTES);
	stopwatch_start(&sw);
	while (!vq_poll(&b->dev, NULL)) {
		if (stopwatch_us(&sw) > BLKLOOP_TIMEOUT_US)
			return -1;
		service(c);
		cpu_relax();
	}
	return blk_status(b);
}

/* Counts one bad round; the first one is described on the console. */
static void bad(struct cpu *c, bool *described, const char *what, const char *op, uint64_t k,
		uint64_t sector, int status, const uint8_t *got)
{
	char text[TEXT_MAX + 1];
	size_t n = 0;

	WRITE_ONCE(c->blkloop_bad, c->blkloop_bad + 1);
	if (*described)
		return;
	*described = true;
	while (got && n < TEXT_MAX && got[n] >= 0x20 && got[n] < 0x7f) {
		text[n] = (char)got[n];
		n++;
	}
	text[n] = '\0';
	say("cpu%u.blkloop_bad_detail=%s op=%s k=%lu sector=%lu status=%d got=%s", c->index, what,
	    op, k, sector, status, text);
}

void blkloop_run(struct cpu *c)
{
	struct blk b;
	bool described = false;
	char want[SECTOR_BYTES];
	uint8_t *data;

	if (blk_open(&b, c->blk_dev, c->mem_base, c->mem_bytes, true) < 0)
		return;
	data = (uint8_t *)(uintptr_t)b.data;
	for (uint64_t k = 0;; k++) {
		uint64_t sector = BLKLOOP_FIRST_SECTOR + k % BLKLOOP_SECTORS;
		const char *op = "write";
		int st;

		memset(want, 0, sizeof(want));
		fmt(want, sizeof(want), "forkd-blkloop cpu=%u k=%lu", c->index, k);
		memcpy(data, want, sizeof(want));
		st = loop_request(c, &b, VIRTIO_BLK_T_OUT, sector);
		if (st == VIRTIO_BLK_S_OK) {
			op = "read";
			memset(data, 0xa5, SECTOR_BYTES);
			st = loop_request(c, &b, VIRTIO_BLK_T_IN, sector);
		}
		if (st < 0) {
			bad(c, &described, "timeout", op, k, sector, st, NULL);
			/* The late completion would be taken for the next request's: reset. */
			if (blk_open(&b, c->blk_dev, c->mem_base, c->mem_bytes, true) < 0)
				return;
		} else if (st != VIRTIO_BLK_S_OK) {
			bad(c, &described, "status", op, k, sector, st, NULL);
		} else if (memcmp(data, want, SECTOR_BYTES) != 0) {
			bad(c, &described, "mismatch", op, k, sector, st, data);
		} else {
			WRITE_ONCE(c->blkloop_ok, c->blkloop_ok + 1);
		}
		service(c);
	}
}

void blkloop_report(struct cpu *c)
{
	say("cpu%u.blkloop_ok=%lu", c->index, READ_ONCE(c->blkloop_ok));
	say("cpu%u.blkloop_bad=%lu", c->index, READ_ONCE(c->blkloop_bad));
}
