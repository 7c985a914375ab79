/* SPDX-License-Identifier: MIT */
/*
 * A polling virtio-vsock driver and the `vsock` echo workload.
 *
 * Driver memory (VSOCK_MEM_BYTES from the caller):
 *   0x000000 rx queue, 0x004000 tx queue, 0x008000 event queue
 *   0x00c000 event buffers, 0x00d000 tx headers (64 bytes per slot)
 *   0x010000 rx buffers (VSOCK_RX_STRIDE apart)
 *   4 MiB    one echo ring per connection (VSOCK_RING_BYTES each)
 *   12 MiB   scratch for the hostile cases
 *
 * rx: descriptor i is rx buffer i, always; a used buffer is handled and
 * posted again at once, so the device never waits for us to copy.
 * tx: slot i owns descriptors 3i..3i+2 (header, then at most two pieces of
 * a connection's ring: data is sent from the ring without a copy, and
 * leaves the ring, advancing fwd_cnt, when the device hands the chain
 * back). The device completes tx chains in order.
 *
 * Echo: bytes received on an accepted connection go into its ring and are
 * sent back from there as the host's credit allows. The ring is the
 * receive buffer whose size we advertise, so a host that respects our
 * credit can never overflow it; one that does not is reset (counted as a
 * violation).
 */
#include "vsock.h"

#define OFF_RXQ	     0x000000
#define OFF_TXQ	     0x004000
#define OFF_EVQ	     0x008000
#define OFF_EVBUF    0x00c000
#define OFF_TXHDR    0x00d000
#define OFF_RXBUF    0x010000
#define OFF_RINGS    (4 * MIB)
#define TXHDR_STRIDE 64

#define FIRST_LOCAL_PORT   50000
#define CONNECT_TIMEOUT_US 3000000
#define STATUS_CHECK_US	   50000
#define GREETING	   "forkd-probe-vsock hello"

_Static_assert(OFF_RXBUF + VSOCK_RX_BUFS * VSOCK_RX_STRIDE <= OFF_RINGS, "rx buffers fit");
_Static_assert(OFF_RINGS + (uint64_t)VSOCK_MAX_CONNS * VSOCK_RING_BYTES <= VSOCK_SCRATCH_OFF,
	       "rings fit");
_Static_assert(3 * VSOCK_TX_SLOTS <= VSOCK_QUEUE_SIZE, "tx slots fit the tx queue");

static uint32_t min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static uint64_t rxbuf(const struct vsock *v, unsigned i)
{
	return v->mem + OFF_RXBUF + (uint64_t)i * VSOCK_RX_STRIDE;
}

static struct vsock_hdr *txhdr(const struct vsock *v, unsigned slot)
{
	return (struct vsock_hdr *)(uintptr_t)(v->mem + OFF_TXHDR + slot * TXHDR_STRIDE);
}

uint32_t vsock_status(struct vsock *v)
{
	return vreg_read(&v->dev, VIRTIO_MMIO_STATUS);
}

/* Makes entry `head` available (without notifying). */
static void avail_push(struct vq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->num] = head;
	barrier();
	q->avail_idx++;
	q->avail->idx = q->avail_idx;
}

static void post_rx(struct vsock *v, unsigned i)
{
	volatile struct virtq_desc *d = &v->rxq.desc[i];

	d->addr = rxbuf(v, i);
	d->len = VSOCK_HDR_SIZE + VSOCK_RX_PAYLOAD;
	d->flags = VIRTQ_DESC_F_WRITE;
	d->next = 0;
	avail_push(&v->rxq, (uint16_t)i);
	v->rx_kick = true;
}

static void post_event(struct vsock *v, unsigned i)
{
	volatile struct virtq_desc *d = &v->evq.desc[i];

	d->addr = v->mem + OFF_EVBUF + i * 8ULL;
	d->len = 4;
	d->flags = VIRTQ_DESC_F_WRITE;
	d->next = 0;
	avail_push(&v->evq, (uint16_t)i);
}

static uint64_t read_cid(struct vsock *v)
{
	uint32_t gen, lo, hi;

	do {
		gen = vreg_read(&v->dev, VIRTIO_MMIO_CONFIG_GEN);
		lo = virtio_config_read32(&v->dev, 0);
		hi = virtio_config_read32(&v->dev, 4);
	} while (gen != vreg_read(&v->dev, VIRTIO_MMIO_CONFIG_GEN));
	return (uint64_t)hi << 32 | lo;
}

/* virtio_queue_setup() lays out d->q; each of our three queues keeps its own copy. */
static int setup_queue(struct vsock *v, unsigned q, uint64_t off, struct vq *out)
{
	if (virtio_queue_setup(&v->dev, q, VSOCK_QUEUE_SIZE, v->mem + off) < 0)
		return -1;
	*out = v->dev.q;
	/* We poll: the device need not interrupt us (fewer irqfd writes in the VMM). */
	out->avail->flags = 1;
	return 0;
}

int vsock_open(struct vsock *v, uint64_t mem, uint32_t listen_port)
{
	uint64_t base = virtio_find(VIRTIO_ID_VSOCK, 0);
	uint32_t next_port = v->next_port ? v->next_port : FIRST_LOCAL_PORT;
	uint32_t gen = v->gen;

	memset(v, 0, sizeof(*v));
	v->mem = mem;
	v->listen_port = listen_port;
	v->next_port = next_port; /* a reopened device must not see old ports reused at once */
	v->gen = gen;
	if (!base) {
		say("vsock.error=no virtio-vsock device (%u virtio-mmio windows in the DSDT)",
		    acpi.nr_virtio);
		return -1;
	}
	if (virtio_negotiate(&v->dev, base, 0) < 0) {
		say("vsock.error=feature negotiation failed at 0x%lx (offered 0x%lx)", base,
		    v->dev.offered);
		return -1;
	}
	if (setup_queue(v, 0, OFF_RXQ, &v->rxq) < 0 || setup_queue(v, 1, OFF_TXQ, &v->txq) < 0 ||
	    setup_queue(v, 2, OFF_EVQ, &v->evq) < 0) {
		say("vsock.error=queue setup failed at 0x%lx", base);
		return -1;
	}
	if (v->rxq.num < VSOCK_RX_BUFS || v->txq.num < 3 * VSOCK_TX_SLOTS ||
	    v->evq.num < VSOCK_EVENT_BUFS) {
		say("vsock.error=queues too small (%u %u %u)", v->rxq.num, v->txq.num, v->evq.num);
		return -1;
	}
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		v->conns[i].ring =
		    (uint8_t *)(uintptr_t)(mem + OFF_RINGS + (uint64_t)i * VSOCK_RING_BYTES);
	for (unsigned i = 0; i < VSOCK_TX_SLOTS; i++)
		v->slots[i].conn = -1;
	for (unsigned i = 0; i < VSOCK_RX_BUFS; i++)
		post_rx(v, i);
	for (unsigned i = 0; i < VSOCK_EVENT_BUFS; i++)
		post_event(v, i);
	vreg_write(&v->dev, VIRTIO_MMIO_STATUS,
		   vreg_read(&v->dev, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	v->cid = read_cid(v);
	vsock_notify(v);
	return 0;
}

void vsock_notify(struct vsock *v)
{
	barrier();
	if (v->rx_kick)
		vreg_write(&v->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	if (v->tx_kick)
		vreg_write(&v->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
	v->rx_kick = v->tx_kick = false;
}

void vsock_hdr_init(struct vsock *v, struct vsock_hdr *h, uint16_t op, uint32_t src_port,
		    uint32_t dst_port, uint32_t len)
{
	*h = (struct vsock_hdr){
	    .src_cid = v->cid,
	    .dst_cid = VSOCK_HOST_CID,
	    .src_port = src_port,
	    .dst_port = dst_port,
	    .len = len,
	    .type = VSOCK_TYPE_STREAM,
	    .op = op,
	};
}

static int free_slot(struct vsock *v)
{
	for (unsigned i = 0; i < VSOCK_TX_SLOTS; i++)
		if (!v->slots[i].busy)
			return (int)i;
	return -1;
}

/* Writes slot s's chain (header + n pieces) and makes it available. */
static void slot_submit(struct vsock *v, unsigned s, const struct vbuf *bufs, unsigned n)
{
	volatile struct virtq_desc *d = v->txq.desc;

	for (unsigned i = 0; i < n; i++) {
		unsigned k = 3 * s + i;

		d[k].addr = bufs[i].addr;
		d[k].len = bufs[i].len;
		d[k].flags = (uint16_t)((bufs[i].device_writes ? VIRTQ_DESC_F_WRITE : 0) |
					(i + 1 < n ? VIRTQ_DESC_F_NEXT : 0));
		d[k].next = (uint16_t)(i + 1 < n ? k + 1 : 0);
	}
	v->slots[s].busy = true;
	v->slots_busy++;
	avail_push(&v->txq, (uint16_t)(3 * s));
	v->tx_kick = true;
	v->tx_packets++;
}

bool vsock_tx_raw(struct vsock *v, const struct vbuf *bufs, unsigned n)
{
	int s = free_slot(v);

	if (s < 0 || n == 0 || n > 3)
		return false;
	v->slots[s].conn = -1;
	v->slots[s].data_len = 0;
	slot_submit(v, (unsigned)s, bufs, n);
	vsock_notify(v);
	return true;
}

static uint32_t peer_credit(const struct vconn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

/*
 * Sends one packet of connection ci: op with `len` bytes from its ring
 * (unsent part) when op is RW. Every packet carries our credit. False if
 * no tx slot is free.
 */
static bool conn_send(struct vsock *v, unsigned ci, uint16_t op, uint32_t flags, uint32_t len)
{
	struct vconn *c = &v->conns[ci];
	int s = free_slot(v);
	struct vsock_hdr *h;
	struct vbuf bufs[3];
	unsigned n = 0;

	if (s < 0)
		return false;
	h = txhdr(v, (unsigned)s);
	vsock_hdr_init(v, h, op, c->local_port, c->peer_port, len);
	h->dst_cid = c->peer_cid;
	h->flags = flags;
	h->buf_alloc = VSOCK_BUF_ALLOC;
	h->fwd_cnt = c->fwd_cnt;
	c->fwd_sent = c->fwd_cnt;
	c->pending &= ~(unsigned)VP_CREDIT_UPDATE;
	bufs[n++] = (struct vbuf){.addr = (uint64_t)(uintptr_t)h, .len = VSOCK_HDR_SIZE};
	if (len) {
		uint32_t start = (c->r_tail + c->r_sent) % VSOCK_RING_BYTES;
		uint32_t first = min32(len, VSOCK_RING_BYTES - start);

		bufs[n++] =
		    (struct vbuf){.addr = (uint64_t)(uintptr_t)(c->ring + start), .len = first};
		if (first < len)
			bufs[n++] =
			    (struct vbuf){.addr = (uint64_t)(uintptr_t)c->ring, .len = len - first};
		c->r_sent += len;
		c->tx_cnt += len;
	}
	v->slots[s] = (struct vsock_txslot){.conn = (int)ci, .gen = c->gen, .data_len = len};
	c->tx_inflight++;
	slot_submit(v, (unsigned)s, bufs, n);
	if (op == VSOCK_OP_RST)
		v->rst_tx++;
	return true;
}

/* Forgets connection ci (no packet sent). Its ring stays owned while tx chains point there. */
static void conn_drop(struct vsock *v, unsigned ci)
{
	struct vconn *c = &v->conns[ci];

	if (c->state == VC_OPEN && c->accepted)
		v->closed++;
	c->state = c->tx_inflight ? VC_DRAIN : VC_FREE;
	c->pending = 0;
}

static void rst_queue(struct vsock *v, uint32_t local_port, uint32_t peer_port, uint64_t peer_cid)
{
	if (v->rst_len == VSOCK_RST_QUEUE)
		return; /* the peer resends or times out; we must not grow */
	v->rstq[(v->rst_head + v->rst_len) % VSOCK_RST_QUEUE] = (struct vsock_rst){
	    .local_port = local_port, .peer_port = peer_port, .peer_cid = peer_cid};
	v->rst_len++;
}

static int conn_find(struct vsock *v, uint32_t local_port, uint32_t peer_port, uint64_t peer_cid)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &v->conns[i];

		if ((c->state == VC_CONNECTING || c->state == VC_OPEN) &&
		    c->local_port == local_port && c->peer_port == peer_port &&
		    c->peer_cid == peer_cid)
			return (int)i;
	}
	return -1;
}

static int conn_alloc(struct vsock *v)
{
	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &v->conns[i];

		if (c->state == VC_FREE) {
			uint8_t *ring = c->ring;

			*c = (struct vconn){.ring = ring, .gen = ++v->gen};
			return (int)i;
		}
	}
	return -1;
}

/* The host's credit may have changed; a connection that waited for it may send again. */
static void take_credit(struct vconn *c, const struct vsock_hdr *h)
{
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	if (peer_credit(c))
		c->credit_requested = false;
}

static void on_request(struct vsock *v, const struct vsock_hdr *h)
{
	int ci;

	if (conn_find(v, h->dst_port, h->src_port, h->src_cid) >= 0)
		return; /* a duplicate: the first one is being answered */
	ci = h->dst_port == v->listen_port && v->listen_port ? conn_alloc(v) : -1;
	if (ci < 0) {
		v->refused++;
		rst_queue(v, h->dst_port, h->src_port, h->src_cid);
		return;
	}
	v->conns[ci].state = VC_OPEN;
	v->conns[ci].accepted = true;
	v->conns[ci].local_port = h->dst_port;
	v->conns[ci].peer_port = h->src_port;
	v->conns[ci].peer_cid = h->src_cid;
	v->conns[ci].pending = VP_RESPONSE;
	take_credit(&v->conns[ci], h);
	v->accepted++;
}

static void put_greeting(struct vconn *c)
{
	char text[64];
	int n = fmt(text, sizeof(text), GREETING " port=%u\n", c->peer_port);

	memcpy(c->ring, text, (size_t)n);
	c->r_len = c->r_seed = (uint32_t)n;
}

static void on_data(struct vsock *v, unsigned ci, const uint8_t *data, uint32_t len)
{
	struct vconn *c = &v->conns[ci];
	uint32_t at, first;

	if (c->state != VC_OPEN || (c->peer_shutdown & VSOCK_SHUTDOWN_SEND)) {
		c->pending |= VP_RST;
		return;
	}
	if (len > VSOCK_RING_BYTES - c->r_len) {
		/* More than the credit we gave: the host broke the protocol. */
		v->violations++;
		c->pending |= VP_RST;
		return;
	}
	at = (c->r_tail + c->r_len) % VSOCK_RING_BYTES;
	first = min32(len, VSOCK_RING_BYTES - at);
	memcpy(c->ring + at, data, first);
	memcpy(c->ring, data + first, len - first);
	c->r_len += len;
	c->rx_cnt += len;
	c->bytes_in += len;
	v->bytes_in += len;
}

static void on_packet(struct vsock *v, const uint8_t *buf, uint32_t used_len)
{
	struct vsock_hdr h;
	int ci;

	if (used_len < VSOCK_HDR_SIZE) {
		v->bad_rx++;
		return;
	}
	memcpy(&h, buf, sizeof(h));
	if (h.len > used_len - VSOCK_HDR_SIZE || h.type != VSOCK_TYPE_STREAM ||
	    h.dst_cid != v->cid) {
		v->bad_rx++;
		return;
	}
	v->rx_packets++;
	if (h.op == VSOCK_OP_RST) {
		v->rst_rx++;
		v->last_rst_local = h.dst_port;
		v->last_rst_peer = h.src_port;
		v->last_rst_seq = v->rst_rx;
	}
	if (h.op == VSOCK_OP_REQUEST) {
		on_request(v, &h);
		return;
	}
	ci = conn_find(v, h.dst_port, h.src_port, h.src_cid);
	if (ci < 0) {
		if (h.op == VSOCK_OP_RESPONSE) {
			v->stray_responses++;
			if (v->hold_stray_responses)
				return;
		}
		if (h.op != VSOCK_OP_RST)
			rst_queue(v, h.dst_port, h.src_port, h.src_cid);
		return;
	}
	struct vconn *c = &v->conns[ci];

	take_credit(c, &h);
	switch (h.op) {
	case VSOCK_OP_RESPONSE:
		if (c->state != VC_CONNECTING) {
			c->pending |= VP_RST;
			break;
		}
		c->state = VC_OPEN;
		put_greeting(c);
		say("vsock.connect.ok port=%u local=%u", c->peer_port, c->local_port);
		break;
	case VSOCK_OP_RST:
		if (c->state == VC_CONNECTING)
			say("vsock.connect.refused port=%u", c->peer_port);
		else if (!c->accepted)
			say("vsock.connect.closed port=%u in=%lu out=%lu", c->peer_port,
			    c->bytes_in, c->bytes_out);
		conn_drop(v, (unsigned)ci);
		break;
	case VSOCK_OP_SHUTDOWN:
		c->peer_shutdown |= h.flags & (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND);
		/* The host closed its socket: nothing more will be read or written there. */
		if (c->peer_shutdown == (VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND))
			c->pending |= VP_RST;
		break;
	case VSOCK_OP_RW:
		on_data(v, (unsigned)ci, buf + VSOCK_HDR_SIZE, h.len);
		break;
	case VSOCK_OP_CREDIT_REQUEST:
		c->pending |= VP_CREDIT_UPDATE;
		break;
	default: /* CREDIT_UPDATE: take_credit did it */
		break;
	}
}

static void on_tx_done(struct vsock *v, unsigned head)
{
	unsigned s = head / 3;
	struct vsock_txslot *sl;
	struct vconn *c;

	if (head % 3 || s >= VSOCK_TX_SLOTS || !v->slots[s].busy)
		return; /* not ours: a device bug, ignore rather than corrupt */
	sl = &v->slots[s];
	sl->busy = false;
	v->slots_busy--;
	if (sl->conn < 0)
		return;
	c = &v->conns[sl->conn];
	if (c->gen != sl->gen)
		return;
	c->tx_inflight--;
	if (sl->data_len) {
		uint32_t n = sl->data_len, seed = min32(n, c->r_seed);

		c->r_tail = (c->r_tail + n) % VSOCK_RING_BYTES;
		c->r_len -= n;
		c->r_sent -= n;
		c->r_seed -= seed;
		c->fwd_cnt += n - seed; /* our own greeting was never the peer's to count */
		c->bytes_out += n;
		v->bytes_out += n;
	}
	if (c->state == VC_DRAIN && !c->tx_inflight)
		c->state = VC_FREE;
}

/* Drops every connection: after a transport reset or a device reset they no longer exist. */
static unsigned drop_all(struct vsock *v)
{
	unsigned n = 0;

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &v->conns[i];

		if (c->state == VC_CONNECTING)
			say("vsock.connect.reset port=%u", c->peer_port);
		if (c->state == VC_CONNECTING || c->state == VC_OPEN)
			n++;
		if (c->state != VC_FREE)
			conn_drop(v, i);
	}
	v->rst_len = 0;
	return n;
}

static void on_event(struct vsock *v, unsigned i, uint32_t len)
{
	uint32_t id = *(volatile uint32_t *)(uintptr_t)(v->mem + OFF_EVBUF + i * 8ULL);

	if (len >= 4 && id == VSOCK_EVENT_TRANSPORT_RESET) {
		unsigned dropped = drop_all(v);

		/* A restored VM may have been given another cid. */
		v->cid = read_cid(v);
		v->resets++;
		say("vsock.reset=%lu cid=%lu dropped=%u", v->resets, v->cid, dropped);
	}
	post_event(v, i);
	vreg_write(&v->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 2);
}

/* What connection ci owes the host, as far as tx slots go; true if it sent anything. */
static bool conn_work(struct vsock *v, unsigned ci)
{
	struct vconn *c = &v->conns[ci];
	bool sent = false;

	if (c->state != VC_CONNECTING && c->state != VC_OPEN)
		return false;
	if (c->pending & VP_RST) {
		if (!conn_send(v, ci, VSOCK_OP_RST, 0, 0))
			return false;
		if (!c->accepted && c->state == VC_OPEN)
			say("vsock.connect.closed port=%u in=%lu out=%lu", c->peer_port,
			    c->bytes_in, c->bytes_out);
		conn_drop(v, ci);
		return true;
	}
	if (c->pending & VP_REQUEST) {
		if (!conn_send(v, ci, VSOCK_OP_REQUEST, 0, 0))
			return false;
		c->pending &= ~(unsigned)VP_REQUEST;
		sent = true;
	}
	if (c->pending & VP_RESPONSE) {
		if (!conn_send(v, ci, VSOCK_OP_RESPONSE, 0, 0))
			return sent;
		c->pending &= ~(unsigned)VP_RESPONSE;
		sent = true;
	}
	if (c->state != VC_OPEN)
		return sent;
	/* Echo as much as the host's credit allows, in packets of at most 64 KiB. */
	while (!(c->peer_shutdown & VSOCK_SHUTDOWN_RCV) && c->r_len > c->r_sent) {
		uint32_t n = min32(min32(c->r_len - c->r_sent, peer_credit(c)), VSOCK_MAX_PAYLOAD);

		if (n == 0) {
			/* Stalled on the host's credit: ask once, in case its update got lost. */
			if (!c->credit_requested &&
			    conn_send(v, ci, VSOCK_OP_CREDIT_REQUEST, 0, 0)) {
				c->credit_requested = true;
				v->credit_requests++;
				sent = true;
			}
			break;
		}
		if (!conn_send(v, ci, VSOCK_OP_RW, 0, n))
			return sent;
		sent = true;
	}
	/* The host shut down its sending side and everything is echoed: close ours too. */
	if ((c->peer_shutdown & VSOCK_SHUTDOWN_SEND) && c->r_len == c->r_sent &&
	    !c->shutdown_sent) {
		if (!conn_send(v, ci, VSOCK_OP_SHUTDOWN, VSOCK_SHUTDOWN_RCV | VSOCK_SHUTDOWN_SEND,
			       0))
			return sent;
		c->shutdown_sent = true;
		sent = true;
	}
	/*
	 * The host learns our fwd_cnt from every packet. When we have nothing to
	 * send but freed buffer space, tell it once its view of our free space
	 * falls below half, or it would stop sending for good.
	 */
	if (!(c->pending & VP_CREDIT_UPDATE) && c->fwd_cnt != c->fwd_sent &&
	    VSOCK_BUF_ALLOC - (c->rx_cnt - c->fwd_sent) < VSOCK_BUF_ALLOC / 2)
		c->pending |= VP_CREDIT_UPDATE;
	if (c->pending & VP_CREDIT_UPDATE) {
		if (!conn_send(v, ci, VSOCK_OP_CREDIT_UPDATE, 0, 0))
			return sent;
		v->credit_updates++;
		sent = true;
	}
	return sent;
}

static bool send_rsts(struct vsock *v)
{
	bool sent = false;

	while (v->rst_len) {
		struct vsock_rst *r = &v->rstq[v->rst_head];
		int s = free_slot(v);
		struct vsock_hdr *h;
		struct vbuf b;

		if (s < 0)
			break;
		h = txhdr(v, (unsigned)s);
		vsock_hdr_init(v, h, VSOCK_OP_RST, r->local_port, r->peer_port, 0);
		h->dst_cid = r->peer_cid;
		b = (struct vbuf){.addr = (uint64_t)(uintptr_t)h, .len = VSOCK_HDR_SIZE};
		v->slots[s] = (struct vsock_txslot){.conn = -1};
		slot_submit(v, (unsigned)s, &b, 1);
		v->rst_tx++;
		v->rst_head = (v->rst_head + 1) % VSOCK_RST_QUEUE;
		v->rst_len--;
		sent = true;
	}
	return sent;
}

bool vsock_poll_tx(struct vsock *v)
{
	bool busy = false;

	while (v->txq.used->idx != v->txq.used_idx) {
		barrier();
		on_tx_done(v, v->txq.used->ring[v->txq.used_idx % v->txq.num].id);
		v->txq.used_idx++;
		busy = true;
	}
	return busy;
}

bool vsock_poll(struct vsock *v)
{
	bool busy = false;
	uint32_t len;

	/* Packets in: handle each and give its buffer straight back. */
	while (v->rxq.used->idx != v->rxq.used_idx) {
		volatile struct virtq_used_elem *e;
		unsigned id;

		barrier();
		e = &v->rxq.used->ring[v->rxq.used_idx % v->rxq.num];
		id = e->id;
		len = e->len;
		v->rxq.used_idx++;
		if (id < VSOCK_RX_BUFS) {
			on_packet(v, (const uint8_t *)(uintptr_t)rxbuf(v, id), len);
			post_rx(v, id);
		}
		busy = true;
	}
	busy |= vsock_poll_tx(v);
	while (v->evq.used->idx != v->evq.used_idx) {
		volatile struct virtq_used_elem *e;

		barrier();
		e = &v->evq.used->ring[v->evq.used_idx % v->evq.num];
		v->evq.used_idx++;
		if (e->id < VSOCK_EVENT_BUFS)
			on_event(v, e->id, e->len);
		busy = true;
	}
	/* Packets out: RSTs first (they are owed for packets already seen), then round robin. */
	busy |= send_rsts(v);
	for (unsigned k = 0; k < VSOCK_MAX_CONNS && v->slots_busy < VSOCK_TX_SLOTS; k++) {
		unsigned ci = (v->rr + k) % VSOCK_MAX_CONNS;

		busy |= conn_work(v, ci);
	}
	v->rr = (v->rr + 1) % VSOCK_MAX_CONNS;
	vsock_notify(v);
	return busy;
}

int vsock_connect(struct vsock *v, uint32_t port)
{
	int ci = conn_alloc(v);
	struct vconn *c;

	if (ci < 0)
		return -1;
	c = &v->conns[ci];
	c->state = VC_CONNECTING;
	c->local_port = v->next_port++;
	if (v->next_port < FIRST_LOCAL_PORT)
		v->next_port = FIRST_LOCAL_PORT;
	c->peer_port = port;
	c->peer_cid = VSOCK_HOST_CID;
	c->pending = VP_REQUEST;
	c->deadline_tsc = rdtsc() + us_to_tsc(CONNECT_TIMEOUT_US);
	return ci;
}

/* Connections whose REQUEST got no answer in time are given up (and reset on the host). */
static void expire_connects(struct vsock *v)
{
	uint64_t now = rdtsc();

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++) {
		struct vconn *c = &v->conns[i];

		if (c->state == VC_CONNECTING && now > c->deadline_tsc) {
			say("vsock.connect.timeout port=%u", c->peer_port);
			c->pending = VP_RST;
			conn_work(v, i);
		}
	}
}

bool vsock_probe(struct vsock *v, uint32_t port)
{
	int ci = vsock_connect(v, port);
	struct stopwatch sw;
	uint32_t gen;

	if (ci < 0)
		return false;
	gen = v->conns[ci].gen;
	stopwatch_start(&sw);
	while (stopwatch_us(&sw) < 1000000) {
		struct vconn *c = &v->conns[ci];

		vsock_poll(v);
		if (c->gen != gen || c->state != VC_CONNECTING) {
			if (c->gen == gen && c->state == VC_OPEN) {
				c->pending |= VP_RST; /* accepted: we only wanted an answer */
				vsock_poll(v);
			}
			return true;
		}
		cpu_relax();
	}
	conn_drop(v, (unsigned)ci);
	return false;
}

/* ---- the `vsock` workload ---- */

/* Set once the workload's device is up; the console command reads it (BSP). */
static struct vsock *volatile running;
/* Console -> workload: a port to connect to, plus one (0: none). */
static volatile uint64_t connect_request;
static struct vsock workload;

NORETURN void vsock_run(struct cpu *c)
{
	struct vsock *v = &workload;
	uint64_t next_check;

	/* A hostile workload on another CPU attacks the same device: start after it. */
	for (unsigned i = 0; i < nr_cpus; i++)
		while (cpus[i].work == WORK_HOSTILE && cpus[i].vsock_mem &&
		       !READ_ONCE(cpus[i].done)) {
			service(c);
			cpu_relax();
		}
	if (vsock_open(v, c->mem_base, (uint32_t)cfg.vsock_port) < 0) {
		WRITE_ONCE(c->done, 1);
		idle_forever(c);
	}
	say("vsock.ready port=%lu cid=%lu buf_alloc=%u max_conns=%u", cfg.vsock_port, v->cid,
	    VSOCK_BUF_ALLOC, VSOCK_MAX_CONNS);
	running = v;
	next_check = rdtsc() + us_to_tsc(STATUS_CHECK_US);
	for (;;) {
		uint64_t port = connect_request;

		if (port) {
			connect_request = 0;
			if (vsock_connect(v, (uint32_t)(port - 1)) < 0)
				say("vsock.connect.error=no free connection port=%lu", port - 1);
		}
		if (!vsock_poll(v))
			cpu_relax();
		if (rdtsc() >= next_check) {
			expire_connects(v);
			/* A device that gave up on us (a broken ring) is started afresh. */
			if (vsock_status(v) & VIRTIO_STATUS_DEVICE_NEEDS_RESET) {
				say("vsock.needs_reset=1");
				running = NULL;
				if (vsock_open(v, c->mem_base, (uint32_t)cfg.vsock_port) == 0)
					running = v;
			}
			next_check = rdtsc() + us_to_tsc(STATUS_CHECK_US);
		}
		service(c);
	}
}

static unsigned open_conns(const struct vsock *v)
{
	unsigned n = 0;

	for (unsigned i = 0; i < VSOCK_MAX_CONNS; i++)
		n += v->conns[i].state == VC_OPEN || v->conns[i].state == VC_CONNECTING;
	return n;
}

/* `vsock status [tag]` and `vsock connect PORT` (console, BSP). */
void vsock_cmd(char *arg)
{
	struct vsock *v = running;
	char *word = arg, *rest = arg;
	uint64_t port;

	while (*rest && *rest != ' ')
		rest++;
	if (*rest)
		*rest++ = '\0';
	while (*rest == ' ')
		rest++;
	if (!v) {
		say("error vsock not running");
		return;
	}
	if (str_eq(word, "status")) {
		/* Counters written by the polling CPU: a report, not a snapshot. */
		say("vsock.status tag=%s vsock.conns=%u vsock.accepted=%lu vsock.closed=%lu "
		    "vsock.bytes=%lu vsock.bytes_in=%lu vsock.refused=%lu vsock.resets=%lu "
		    "vsock.violations=%lu vsock.rst_rx=%lu vsock.rst_tx=%lu "
		    "vsock.credit_updates=%lu "
		    "vsock.credit_requests=%lu vsock.bad_rx=%lu vsock.cid=%lu",
		    *rest ? rest : "-", open_conns(v), v->accepted, v->closed, v->bytes_out,
		    v->bytes_in, v->refused, v->resets, v->violations, v->rst_rx, v->rst_tx,
		    v->credit_updates, v->credit_requests, v->bad_rx, v->cid);
	} else if (str_eq(word, "connect") && *rest && parse_u64(rest, strlen(rest), &port) &&
		   port <= 0xffffffffULL) {
		connect_request = port + 1;
	} else {
		say("error usage: vsock status [tag] | vsock connect <port>");
	}
}
