/* SPDX-License-Identifier: MIT */
/*
 * Workload `nethostile`: a guest that breaks the virtio-net contract, one
 * case at a time on a freshly started device, and says what the device did:
 * `nethostile.<case>=used` (the chain came back: the packet was dropped and
 * the queue goes on), `=needs_reset` (the device stopped until reset), or
 * `=timeout`. Then a flood of net_flood valid frames as fast as the queue
 * takes them (`nethostile.flood=sent:<n>`), one last frame "forkd-net alive"
 * the host can look for, and `nethostile.done`.
 */
#include "net.h"

#define CASE_TIMEOUT_US 2000000
#define OUTSIDE_RAM	0x10000000000ULL /* 1 TiB: never guest RAM here */

struct hdesc {
	uint64_t addr;
	uint32_t len;
	uint16_t flags;
	uint16_t next;
};

static struct net hn;

/* A valid frame after a 12-byte header at driver scratch offset off; its address. */
static uint64_t scratch_frame(uint64_t off, uint32_t len, uint8_t hdr_flags, uint8_t gso)
{
	uint8_t *p = (uint8_t *)(uintptr_t)(hn.mem + NET_OFF_SCRATCH + off);

	memset(p, 0, NET_HDR_SIZE + len);
	p[0] = hdr_flags;
	p[1] = gso;
	memset(p + NET_HDR_SIZE, 0xff, 6);
	memcpy(p + NET_HDR_SIZE + 6, hn.mac, 6);
	p[NET_HDR_SIZE + 12] = NET_ETHERTYPE >> 8;
	p[NET_HDR_SIZE + 13] = NET_ETHERTYPE & 0xff;
	return hn.mem + NET_OFF_SCRATCH + off;
}

/* Puts the chain on the tx queue (head 0), notifies, and waits for the verdict. */
static const char *run_chain(const struct hdesc *d, unsigned nd, uint16_t avail_jump)
{
	struct vq *q = &hn.txq;
	struct stopwatch sw;

	for (unsigned i = 0; i < nd; i++) {
		q->desc[i].addr = d[i].addr;
		q->desc[i].len = d[i].len;
		q->desc[i].flags = d[i].flags;
		q->desc[i].next = d[i].next;
	}
	q->avail->ring[q->avail_idx % q->num] = 0;
	barrier();
	q->avail_idx = (uint16_t)(q->avail_idx + 1 + avail_jump);
	q->avail->idx = q->avail_idx;
	net_tx_kick(&hn);
	stopwatch_start(&sw);
	while (stopwatch_us(&sw) < CASE_TIMEOUT_US) {
		if (q->used->idx != q->used_idx) {
			q->used_idx = q->used->idx;
			return "used";
		}
		if (net_needs_reset(&hn))
			return "needs_reset";
		cpu_relax();
	}
	return "timeout";
}

static bool hostile_case(struct cpu *c, const char *name, const struct hdesc *d, unsigned nd,
			 uint16_t avail_jump)
{
	if (net_open(&hn, c->mem_base, false, 0, false) < 0)
		return false;
	say("nethostile.%s=%s", name, run_chain(d, nd, avail_jump));
	return true;
}

static void flood(struct cpu *c)
{
	static uint8_t f[128];
	uint64_t sent = 0;
	struct stopwatch sw;

	if (net_open(&hn, c->mem_base, false, 0, false) < 0)
		return;
	memset(f, 0xff, 6);
	memcpy(f + 6, hn.mac, 6);
	f[12] = NET_ETHERTYPE >> 8;
	f[13] = NET_ETHERTYPE & 0xff;
	memcpy(f + NET_ETH_HLEN, "forkd-flood", 11);
	stopwatch_start(&sw);
	while (sent < cfg.net_flood && stopwatch_us(&sw) < 60000000) {
		bool queued = false;

		net_tx_reap(&hn);
		while (sent < cfg.net_flood && net_tx_frame(&hn, f, sizeof(f))) {
			sent++;
			queued = true;
		}
		if (queued)
			net_tx_kick(&hn);
		service(c);
		cpu_relax();
	}
	say("nethostile.flood=sent:%lu us:%lu", sent, stopwatch_us(&sw));
	/* Let the host's receive backlog drain first: a flood's tail may be dropped there. */
	delay_us(200000);
	memcpy(f + NET_ETH_HLEN, "forkd-net alive", 15);
	while (!net_tx_frame(&hn, f, sizeof(f)))
		net_tx_reap(&hn);
	net_tx_kick(&hn);
}

void nethostile_run(struct cpu *c)
{
	const uint64_t big = 40000;
	uint64_t ok = scratch_frame(0, 64, 0, 0);

	/* Open once for the MAC the frames carry. */
	if (net_open(&hn, c->mem_base, false, 0, false) < 0)
		return;
	ok = scratch_frame(0, 64, 0, 0);
	{
		struct hdesc d[] = {{ok, 8, 0, 0}};
		hostile_case(c, "short_header", d, 1, 0);
	}
	{
		struct hdesc d[] = {{ok, NET_HDR_SIZE + 5, 0, 0}};
		hostile_case(c, "short_frame", d, 1, 0);
	}
	{
		struct hdesc d[] = {{ok, NET_HDR_SIZE + 64, VIRTQ_DESC_F_WRITE, 0}};
		hostile_case(c, "writable_desc", d, 1, 0);
	}
	{
		uint64_t f = scratch_frame(0x1000, 64, 0, 1 /* GSO TCPv4 */);
		struct hdesc d[] = {{f, NET_HDR_SIZE + 64, 0, 0}};
		hostile_case(c, "gso_not_negotiated", d, 1, 0);
	}
	{
		uint64_t f = scratch_frame(0x2000, 64, 1 /* NEEDS_CSUM */, 0);
		struct hdesc d[] = {{f, NET_HDR_SIZE + 64, 0, 0}};
		hostile_case(c, "csum_not_negotiated", d, 1, 0);
	}
	{
		/* 80000 bytes: more than any frame (64 KiB + Ethernet header). */
		uint64_t f = scratch_frame(0x10000, 64, 0, 0);
		struct hdesc d[] = {{f, (uint32_t)big, VIRTQ_DESC_F_NEXT, 1},
				    {f + big, (uint32_t)big, 0, 0}};
		hostile_case(c, "oversized_frame", d, 2, 0);
	}
	{
		struct hdesc d[] = {{OUTSIDE_RAM, 64, 0, 0}};
		hostile_case(c, "desc_outside_ram", d, 1, 0);
	}
	{
		struct hdesc d[] = {{ok, NET_HDR_SIZE, VIRTQ_DESC_F_NEXT, 1},
				    {ok + NET_HDR_SIZE, 64, VIRTQ_DESC_F_NEXT, 0}};
		hostile_case(c, "looping_chain", d, 2, 0);
	}
	{
		struct hdesc d[] = {{ok, NET_HDR_SIZE, VIRTQ_DESC_F_NEXT, 0xffff}};
		hostile_case(c, "next_out_of_range", d, 1, 0);
	}
	{
		struct hdesc d[] = {{ok, NET_HDR_SIZE + 64, 0, 0}};
		hostile_case(c, "avail_idx_jump", d, 1, 1000);
	}
	{
		struct hdesc d[] = {{ok, 16, 4 /* INDIRECT */, 0}};
		hostile_case(c, "indirect", d, 1, 0);
	}
	flood(c);
	say("nethostile.done");
}
