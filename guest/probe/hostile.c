/* SPDX-License-Identifier: MIT */
/*
 * hostile: a malicious guest against the first virtio-blk device, the MMIO
 * space and, if the VM has one, the virtio-vsock device (see
 * hostile_vsock below). Each ring case starts from a freshly reset device, breaks one
 * rule, waits briefly for the device's reaction, prints
 * `hostile.<case>=status:0x<device status>` (and `hostile.<case>.req=<status
 * byte>` when the request completed), then resets the device. The VMM must
 * survive all of it; the last step proves the device still works.
 */
#include "blk.h"
#include "vsock.h"

#define VIRTQ_DESC_F_INDIRECT 4
#define REACTION_US	      200000
#define OUTSIDE_RAM_HOLE      0xC0100000ULL /* MMIO hole, nothing mapped there */
#define UNCLAIMED_MMIO	      0xF0000000ULL

struct hostile {
	struct cpu *cpu;
	struct blk b;
	uint64_t above_ram; /* guest physical, just past the highest RAM */
	uint8_t sector0[512];
};

static volatile struct virtq_desc *desc(struct hostile *h, unsigned i)
{
	return &h->b.dev.q.desc[i];
}

static void set_desc(struct hostile *h, unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
		     uint16_t next)
{
	desc(h, i)->addr = addr;
	desc(h, i)->len = len;
	desc(h, i)->flags = flags;
	desc(h, i)->next = next;
}

static void set_header(struct hostile *h, uint32_t type, uint64_t sector)
{
	struct virtio_blk_req_header *hdr =
	    (struct virtio_blk_req_header *)(uintptr_t)(h->b.mem + BLK_OFF_HEADER);

	hdr->type = type;
	hdr->reserved = 0;
	hdr->sector = sector;
	*(volatile uint8_t *)(uintptr_t)(h->b.mem + BLK_OFF_STATUS) = 0xff;
}

/* A well-formed 1-sector read in descriptors 0..2 (cases then break one part). */
static void valid_chain(struct hostile *h, uint64_t sector)
{
	set_header(h, VIRTIO_BLK_T_IN, sector);
	set_desc(h, 0, h->b.mem + BLK_OFF_HEADER, sizeof(struct virtio_blk_req_header),
		 VIRTQ_DESC_F_NEXT, 1);
	set_desc(h, 1, h->b.data, 512, VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT, 2);
	set_desc(h, 2, h->b.mem + BLK_OFF_STATUS, 1, VIRTQ_DESC_F_WRITE, 0);
}

/* Publishes head in the avail ring, moving idx by `step`, and notifies queue 0. */
static void kick(struct hostile *h, uint16_t head, uint16_t step)
{
	struct vq *q = &h->b.dev.q;

	q->avail->ring[q->avail_idx % q->num] = head;
	barrier();
	q->avail_idx = (uint16_t)(q->avail_idx + step);
	q->avail->idx = q->avail_idx;
	barrier();
	vreg_write(&h->b.dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
}

static int fresh(struct hostile *h, bool driver_ok)
{
	return blk_open(&h->b, h->cpu->blk_dev, h->cpu->mem_base, h->cpu->mem_bytes, driver_ok);
}

/* Waits for NEEDS_RESET or a used element; prints the outcome and resets the device. */
static void outcome(struct hostile *h, const char *name, bool poll_used)
{
	struct vq *q = &h->b.dev.q;
	uint64_t deadline = rdtsc() + us_to_tsc(REACTION_US);
	uint32_t status;
	bool used = false;

	for (;;) {
		status = vreg_read(&h->b.dev, VIRTIO_MMIO_STATUS);
		if (status & (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED))
			break;
		if (poll_used && q->used->idx != q->used_idx) {
			used = true;
			break;
		}
		if (rdtsc() > deadline)
			break;
		service(h->cpu);
		delay_us(1000);
	}
	say("hostile.%s=status:0x%x", name, status);
	if (used)
		say("hostile.%s.req=%u", name,
		    *(volatile uint8_t *)(uintptr_t)(h->b.mem + BLK_OFF_STATUS));
	vreg_write(&h->b.dev, VIRTIO_MMIO_STATUS, 0);
}

static void case_head_oob(struct hostile *h)
{
	valid_chain(h, 0);
	kick(h, (uint16_t)(h->b.dev.q.num + 3), 1);
	outcome(h, "head_oob", true);
}

static void case_next_oob(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 1)->next = (uint16_t)(h->b.dev.q.num + 7);
	kick(h, 0, 1);
	outcome(h, "next_oob", true);
}

static void case_desc_loop(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 2)->flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
	desc(h, 2)->next = 0;
	kick(h, 0, 1);
	outcome(h, "desc_loop", true);
}

static void case_desc_outside_ram(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 1)->addr = OUTSIDE_RAM_HOLE;
	kick(h, 0, 1);
	outcome(h, "desc_outside_ram", true);
}

static void case_desc_above_ram(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 1)->addr = h->above_ram;
	kick(h, 0, 1);
	outcome(h, "desc_above_ram", true);
}

static void case_desc_wrap(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 1)->addr = 0xFFFFFFFFFFFFFE00ULL;
	desc(h, 1)->len = 0x400;
	kick(h, 0, 1);
	outcome(h, "desc_wrap", true);
}

static void case_desc_huge_len(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 1)->len = 0xFFFFFE00;
	kick(h, 0, 1);
	outcome(h, "desc_huge_len", true);
}

static void case_indirect_unnegotiated(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 0)->flags = VIRTQ_DESC_F_INDIRECT;
	kick(h, 0, 1);
	outcome(h, "indirect_unnegotiated", true);
}

static void case_avail_idx_jump(struct hostile *h)
{
	valid_chain(h, 0);
	kick(h, 0, (uint16_t)(h->b.dev.q.num + 5));
	outcome(h, "avail_idx_jump", true);
}

static void case_header_writable(struct hostile *h)
{
	valid_chain(h, 0);
	desc(h, 0)->flags = VIRTQ_DESC_F_WRITE | VIRTQ_DESC_F_NEXT;
	kick(h, 0, 1);
	outcome(h, "header_writable", true);
}

static void case_read_beyond_capacity(struct hostile *h)
{
	valid_chain(h, h->b.capacity);
	kick(h, 0, 1);
	outcome(h, "read_beyond_capacity", true);
}

static void case_notify_before_driver_ok(struct hostile *h)
{
	valid_chain(h, 0);
	kick(h, 0, 1);
	outcome(h, "notify_before_driver_ok", true);
}

/* Re-programs queue 0 (after reset + negotiation) with the given geometry and addresses. */
static void raw_queue(struct hostile *h, uint32_t num, uint64_t descs, uint64_t avail,
		      uint64_t used)
{
	struct vdev *d = &h->b.dev;

	vreg_write(d, VIRTIO_MMIO_QUEUE_SEL, 0);
	vreg_write(d, VIRTIO_MMIO_QUEUE_NUM, num);
	vreg_write(d, VIRTIO_MMIO_QUEUE_DESC_LOW, (uint32_t)descs);
	vreg_write(d, VIRTIO_MMIO_QUEUE_DESC_HIGH, (uint32_t)(descs >> 32));
	vreg_write(d, VIRTIO_MMIO_QUEUE_AVAIL_LOW, (uint32_t)avail);
	vreg_write(d, VIRTIO_MMIO_QUEUE_AVAIL_HIGH, (uint32_t)(avail >> 32));
	vreg_write(d, VIRTIO_MMIO_QUEUE_USED_LOW, (uint32_t)used);
	vreg_write(d, VIRTIO_MMIO_QUEUE_USED_HIGH, (uint32_t)(used >> 32));
	vreg_write(d, VIRTIO_MMIO_QUEUE_READY, 1);
	vreg_write(d, VIRTIO_MMIO_STATUS,
		   vreg_read(d, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
}

/* Cases that need a device whose queue 0 is not set up yet. */
static int negotiated(struct hostile *h)
{
	uint64_t base = h->b.dev.base;

	return virtio_negotiate(&h->b.dev, base, 0);
}

static void case_ring_outside_ram(struct hostile *h, const char *name, int which)
{
	struct vq *q = &h->b.dev.q;
	uint64_t mem = h->b.mem + BLK_OFF_QUEUE;
	uint64_t descs = mem, avail = mem + 0x1000, used = mem + 0x2000;

	if (negotiated(h) < 0) {
		say("hostile.%s=skipped (negotiation failed)", name);
		return;
	}
	memset((void *)(uintptr_t)mem, 0, 0x3000);
	if (which == 0)
		avail = OUTSIDE_RAM_HOLE;
	else if (which == 1)
		used = h->above_ram;
	else
		descs = UNCLAIMED_MMIO;
	*q = (struct vq){
	    .num = BLK_QUEUE_SIZE,
	    .desc = (volatile struct virtq_desc *)(uintptr_t)mem,
	    .avail = (volatile struct virtq_avail *)(uintptr_t)(mem + 0x1000),
	    .used = (volatile struct virtq_used *)(uintptr_t)(mem + 0x2000),
	};
	raw_queue(h, BLK_QUEUE_SIZE, descs, avail, used);
	valid_chain(h, 0);
	kick(h, 0, 1); /* in our copy of the avail ring: the device looks elsewhere */
	outcome(h, name, which != 1);
}

static void case_queue_num_not_pow2(struct hostile *h)
{
	struct vq *q = &h->b.dev.q;
	uint64_t mem = h->b.mem + BLK_OFF_QUEUE;

	if (negotiated(h) < 0) {
		say("hostile.queue_num_not_pow2=skipped (negotiation failed)");
		return;
	}
	memset((void *)(uintptr_t)mem, 0, 0x3000);
	*q = (struct vq){
	    .num = 3,
	    .desc = (volatile struct virtq_desc *)(uintptr_t)mem,
	    .avail = (volatile struct virtq_avail *)(uintptr_t)(mem + 0x1000),
	    .used = (volatile struct virtq_used *)(uintptr_t)(mem + 0x2000),
	};
	raw_queue(h, 3, mem, mem + 0x1000, mem + 0x2000);
	valid_chain(h, 0);
	kick(h, 0, 1);
	outcome(h, "queue_num_not_pow2", true);
}

static void mmio_probe(const char *name, uint64_t addr)
{
	uint32_t before = mmio_read32(addr);

	mmio_write32(addr, 0xdeadbeef);
	say("hostile.mmio.%s=0x%x,0x%x", name, before, mmio_read32(addr));
}

static void mmio_cases(struct hostile *h)
{
	uint64_t base = h->b.dev.base;

	mmio_probe("hole", OUTSIDE_RAM_HOLE);
	mmio_probe("unclaimed", UNCLAIMED_MMIO);
	mmio_probe("above_ram", h->above_ram);
	/* Odd widths and alignments on the virtio registers, device reset first. */
	mmio_write32(base + VIRTIO_MMIO_STATUS, 0);
	say("hostile.mmio.magic_u8_at1=0x%x", mmio_read8(base + 1));
	say("hostile.mmio.magic_u16_at2=0x%x", mmio_read16(base + 2));
	say("hostile.mmio.unaligned_u32_at3=0x%x", mmio_read32(base + 3));
	say("hostile.mmio.u64_at0=0x%lx", mmio_read64(base));
	mmio_write8(base + VIRTIO_MMIO_STATUS, VIRTIO_STATUS_ACKNOWLEDGE);
	mmio_write16(base + VIRTIO_MMIO_QUEUE_SEL + 2, 0xffff);
	mmio_write64(base + VIRTIO_MMIO_QUEUE_DESC_LOW, 0x123456789abcdef0ULL);
	mmio_write32(base + VIRTIO_MMIO_QUEUE_NOTIFY + 1, 0);
	say("hostile.mmio.status_after_odd_writes=0x%x", mmio_read32(base + VIRTIO_MMIO_STATUS));
	say("hostile.mmio.config_past_end=0x%x,0x%x",
	    mmio_read32(base + VIRTIO_MMIO_CONFIG + 0x100), mmio_read32(base + 0xffc));
	mmio_write32(base + VIRTIO_MMIO_CONFIG + 0x100, 0xdeadbeef);
	mmio_write32(base + VIRTIO_MMIO_STATUS, 0);
	say("hostile.mmio=survived");
}

static void run_case(struct hostile *h, void (*fn)(struct hostile *), bool driver_ok)
{
	if (fresh(h, driver_ok) < 0)
		return;
	fn(h);
}

/* ---- virtio-vsock ---- */

#define VCASE_REACTION_US 300000
#define VCASE_FIRST_PORT  30000 /* our source ports for malformed packets: one per case */
#define FLOOD_FIRST_PORT  40000
#define FLOOD_BATCH	  32
#define BACKLOG_PACKETS	  600

/* The hostile CPU's driver state: too big for its 16 KiB stack. */
static struct vsock hv;
static uint64_t hv_mem;
static uint32_t vcase_port = VCASE_FIRST_PORT;

static uint64_t hv_scratch(uint64_t off)
{
	return hv_mem + VSOCK_SCRATCH_OFF + off;
}

/* Polls for up to us; true if an RST for our port `port` came. */
static bool wait_rst(struct cpu *c, uint32_t port, uint64_t us)
{
	uint64_t seen = hv.rst_rx;
	struct stopwatch sw;

	stopwatch_start(&sw);
	while (stopwatch_us(&sw) < us) {
		vsock_poll(&hv);
		if (hv.rst_rx != seen && hv.last_rst_local == port)
			return true;
		if (vsock_status(&hv) & VIRTIO_STATUS_DEVICE_NEEDS_RESET)
			return false;
		service(c);
		cpu_relax();
	}
	return false;
}

/*
 * After a case: NEEDS_RESET is answered with a device reset, as a driver
 * would; then the device must answer a REQUEST (an RST from a port nobody
 * listens on).
 */
static void vcase_outcome(struct cpu *c, const char *name, bool rst)
{
	uint32_t status = vsock_status(&hv);
	bool needs_reset = status & VIRTIO_STATUS_DEVICE_NEEDS_RESET;
	const char *what = rst ? "rst" : "none";
	bool alive;

	if (needs_reset && vsock_open(&hv, hv_mem, 0) < 0) {
		say("hostile.vsock.%s=needs_reset alive=0 reopen=failed", name);
		return;
	}
	alive = vsock_probe(&hv, (uint32_t)cfg.vsock_probe_port);
	say("hostile.vsock.%s=%s alive=%u status=0x%x", name, needs_reset ? "needs_reset" : what,
	    alive, status);
	(void)c;
}

/*
 * One malformed packet: header h (hdr_len bytes of it are sent, from
 * scratch memory; hdr_addr overrides where the descriptor points) and an
 * optional payload descriptor.
 */
static void vcase(struct cpu *c, const char *name, const struct vsock_hdr *h, uint32_t hdr_len,
		  uint64_t hdr_addr, uint64_t payload, uint32_t payload_len, bool hdr_writable,
		  bool payload_writable)
{
	struct vbuf bufs[2];
	unsigned n = 0;
	bool rst;

	memcpy((void *)(uintptr_t)hv_scratch(0), h, sizeof(*h));
	bufs[n++] = (struct vbuf){.addr = hdr_addr ? hdr_addr : hv_scratch(0),
				  .len = hdr_len,
				  .device_writes = hdr_writable};
	if (payload_len)
		bufs[n++] = (struct vbuf){
		    .addr = payload, .len = payload_len, .device_writes = payload_writable};
	if (!vsock_tx_raw(&hv, bufs, n)) {
		say("hostile.vsock.%s=skipped (no tx slot)", name);
		return;
	}
	rst = wait_rst(c, h->src_port, VCASE_REACTION_US);
	vcase_outcome(c, name, rst);
}

/* A header from a fresh source port of ours to host port `port` (nobody listens there). */
static void vhdr(struct vsock_hdr *h, uint16_t op, uint32_t len)
{
	vsock_hdr_init(&hv, h, op, vcase_port++, (uint32_t)cfg.vsock_probe_port, len);
}

/*
 * REQUESTs to one host port from more source ports than the VMM has
 * connections (1024): with a host listener there the first ones are
 * accepted (held: we answer nothing), the rest refused; then we reset them
 * all. Batches keep rx drained, so every answer is seen.
 */
static void vcase_flood(struct cpu *c)
{
	uint64_t n = cfg.vsock_flood, sent = 0;
	uint64_t rst0 = hv.rst_rx, resp0 = hv.stray_responses;
	struct stopwatch sw;

	if (n > 4096)
		n = 4096;
	hv.hold_stray_responses = true;
	while (sent < n) {
		struct vsock_hdr *h =
		    (struct vsock_hdr *)(uintptr_t)hv_scratch(0x10000 + sent * 64);
		struct vbuf b = {.addr = (uint64_t)(uintptr_t)h, .len = VSOCK_HDR_SIZE};

		vsock_hdr_init(&hv, h, VSOCK_OP_REQUEST, FLOOD_FIRST_PORT + (uint32_t)sent,
			       (uint32_t)cfg.vsock_flood_port, 0);
		h->buf_alloc = VSOCK_BUF_ALLOC;
		if (!vsock_tx_raw(&hv, &b, 1)) {
			vsock_poll(&hv);
			continue;
		}
		sent++;
		if (sent % FLOOD_BATCH == 0 || sent == n) {
			stopwatch_start(&sw);
			while (hv.rst_rx - rst0 + hv.stray_responses - resp0 < sent &&
			       stopwatch_us(&sw) < 1000000) {
				vsock_poll(&hv);
				service(c);
			}
		}
	}
	say("hostile.vsock.flood=sent:%lu accepted:%lu refused:%lu", sent,
	    hv.stray_responses - resp0, hv.rst_rx - rst0);
	hv.hold_stray_responses = false;
	/* Reset them all; an RST for a connection the VMM never made is ignored. */
	for (uint64_t i = 0; i < sent;) {
		struct vsock_hdr *h = (struct vsock_hdr *)(uintptr_t)hv_scratch(0x10000 + i * 64);
		struct vbuf b = {.addr = (uint64_t)(uintptr_t)h, .len = VSOCK_HDR_SIZE};

		vsock_hdr_init(&hv, h, VSOCK_OP_RST, FLOOD_FIRST_PORT + (uint32_t)i,
			       (uint32_t)cfg.vsock_flood_port, 0);
		if (vsock_tx_raw(&hv, &b, 1))
			i++;
		else
			vsock_poll(&hv);
	}
	stopwatch_start(&sw);
	while (stopwatch_us(&sw) < 200000)
		vsock_poll(&hv);
	vcase_outcome(c, "flood_reset", false);
}

/*
 * Packets that each owe us an RST while we take no rx buffers back: the
 * VMM may keep only a bounded number of RSTs (the rest are dropped and
 * counted), never a growing queue.
 */
static void vcase_rst_backlog(struct cpu *c)
{
	uint64_t rst0 = hv.rst_rx;
	struct stopwatch sw;
	unsigned sent = 0;

	while (sent < BACKLOG_PACKETS) {
		struct vsock_hdr *h =
		    (struct vsock_hdr *)(uintptr_t)hv_scratch(0x10000 + sent * 64);
		struct vbuf b = {.addr = (uint64_t)(uintptr_t)h, .len = VSOCK_HDR_SIZE};

		vsock_hdr_init(&hv, h, VSOCK_OP_RW, 20000 + sent, (uint32_t)cfg.vsock_probe_port,
			       0);
		if (vsock_tx_raw(&hv, &b, 1))
			sent++;
		else
			vsock_poll_tx(&hv);
	}
	stopwatch_start(&sw);
	while (stopwatch_us(&sw) < 300000)
		vsock_poll(&hv);
	say("hostile.vsock.rst_backlog=sent:%u rst:%lu", sent, hv.rst_rx - rst0);
	vcase_outcome(c, "rst_backlog_after", false);
}

static void hostile_vsock(struct cpu *c, uint64_t above_ram)
{
	uint8_t *big = (uint8_t *)(uintptr_t)hv_scratch(0x200000);
	struct vsock_hdr h;

	hv_mem = c->vsock_mem;
	if (vsock_open(&hv, hv_mem, 0) < 0)
		return;
	say("hostile.vsock.start cid=%lu alive=%u", hv.cid,
	    vsock_probe(&hv, (uint32_t)cfg.vsock_probe_port));
	memset(big, 0x5a, 0x20000);

	vhdr(&h, VSOCK_OP_RW, 0);
	vcase(c, "hdr_short", &h, 20, 0, 0, 0, false, false);
	vhdr(&h, VSOCK_OP_RW, 1000);
	vcase(c, "len_over_chain", &h, VSOCK_HDR_SIZE, 0, hv_scratch(0x1000), 100, false, false);
	vhdr(&h, VSOCK_OP_RW, VSOCK_MAX_PAYLOAD + 1);
	vcase(c, "len_over_max", &h, VSOCK_HDR_SIZE, 0, (uint64_t)(uintptr_t)big,
	      VSOCK_MAX_PAYLOAD + 1, false, false);
	vhdr(&h, VSOCK_OP_RW, 0);
	h.type = 2; /* SEQPACKET: not offered */
	vcase(c, "wrong_type", &h, VSOCK_HDR_SIZE, 0, 0, 0, false, false);
	vhdr(&h, VSOCK_OP_REQUEST, 0);
	h.src_cid = hv.cid + 1;
	vcase(c, "wrong_src_cid", &h, VSOCK_HDR_SIZE, 0, 0, 0, false, false);
	vhdr(&h, VSOCK_OP_REQUEST, 0);
	h.dst_cid = hv.cid;
	vcase(c, "dst_cid_not_host", &h, VSOCK_HDR_SIZE, 0, 0, 0, false, false);
	vhdr(&h, 42, 0);
	vcase(c, "unknown_op", &h, VSOCK_HDR_SIZE, 0, 0, 0, false, false);
	vhdr(&h, VSOCK_OP_RW, 16);
	vcase(c, "rw_no_conn", &h, VSOCK_HDR_SIZE, 0, hv_scratch(0x1000), 16, false, false);
	vhdr(&h, VSOCK_OP_RW, 0);
	vcase(c, "tx_all_writable", &h, VSOCK_HDR_SIZE, 0, 0, 0, true, false);
	vhdr(&h, VSOCK_OP_RW, 64);
	vcase(c, "tx_payload_writable", &h, VSOCK_HDR_SIZE, 0, hv_scratch(0x1000), 64, false, true);
	vhdr(&h, VSOCK_OP_RW, 0);
	vcase(c, "desc_outside_ram", &h, VSOCK_HDR_SIZE, OUTSIDE_RAM_HOLE, 0, 0, false, false);
	vhdr(&h, VSOCK_OP_RW, 64);
	vcase(c, "payload_above_ram", &h, VSOCK_HDR_SIZE, 0, above_ram, 64, false, false);
	vcase_rst_backlog(c);
	vcase_flood(c);
	vsock_open(&hv, hv_mem, 0);
	say("hostile.vsock.recovered=%u", vsock_probe(&hv, (uint32_t)cfg.vsock_probe_port));
	vreg_write(&hv.dev, VIRTIO_MMIO_STATUS, 0);
}

/* The virtio-blk and MMIO cases; false if the device could not even be used. */
static bool hostile_blk(struct hostile *h)
{
	int st;

	if (fresh(h, true) < 0)
		return false;
	st = blk_request(&h->b, VIRTIO_BLK_T_IN, 0, 512);
	if (st != VIRTIO_BLK_S_OK) {
		say("hostile.error=initial read failed (%d)", st);
		return false;
	}
	memcpy(h->sector0, (const void *)(uintptr_t)h->b.data, 512);
	vreg_write(&h->b.dev, VIRTIO_MMIO_STATUS, 0);

	run_case(h, case_head_oob, true);
	run_case(h, case_next_oob, true);
	run_case(h, case_desc_loop, true);
	run_case(h, case_desc_outside_ram, true);
	run_case(h, case_desc_above_ram, true);
	run_case(h, case_desc_wrap, true);
	run_case(h, case_desc_huge_len, true);
	run_case(h, case_indirect_unnegotiated, true);
	run_case(h, case_avail_idx_jump, true);
	run_case(h, case_header_writable, true);
	run_case(h, case_read_beyond_capacity, true);
	run_case(h, case_notify_before_driver_ok, false);
	case_ring_outside_ram(h, "avail_outside_ram", 0);
	case_ring_outside_ram(h, "used_outside_ram", 1);
	case_ring_outside_ram(h, "desc_table_outside_ram", 2);
	case_queue_num_not_pow2(h);
	mmio_cases(h);

	if (fresh(h, true) < 0)
		return false;
	memset((void *)(uintptr_t)h->b.data, 0, 512);
	st = blk_request(&h->b, VIRTIO_BLK_T_IN, 0, 512);
	say("hostile.recovered=%u",
	    st == VIRTIO_BLK_S_OK &&
		memcmp((const void *)(uintptr_t)h->b.data, h->sector0, 512) == 0);
	vreg_write(&h->b.dev, VIRTIO_MMIO_STATUS, 0);
	return true;
}

void hostile_run(struct cpu *c)
{
	struct hostile hostile = {.cpu = c}, *h = &hostile;

	h->above_ram = (mem_top() + ALLOC_ALIGN - 1) / ALLOC_ALIGN * ALLOC_ALIGN + ALLOC_ALIGN;
	/* A VM with only a vsock device is attacked there alone. */
	if (virtio_find(VIRTIO_ID_BLK, c->blk_dev) || !c->vsock_mem) {
		if (!hostile_blk(h))
			return;
	} else {
		say("hostile.blk=skipped (no virtio-blk device)");
	}
	if (c->vsock_mem)
		hostile_vsock(c, h->above_ram);
	else
		say("hostile.vsock=skipped (no virtio-vsock device)");
	say("hostile.done=1");
}
