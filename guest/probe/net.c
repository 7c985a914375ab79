/* SPDX-License-Identifier: MIT */
/*
 * The probe's virtio-net driver and its `net` workload: sends net_tx frames
 * of net_len bytes (broadcast, ethertype 0x88b5, payload "forkd-net seq=<i>"
 * then bytes (i + k) & 0xff), then forever echoes every 0x88b5 frame whose
 * payload starts with "forkd-host" back to its sender with "forkd-echo "
 * in front, counts "forkd-count" frames, and serves `net send` and
 * `net status` from the console. guest/probe/README.md has the lines.
 */
#include "net.h"

#define LINK_POLL_US  20000
#define RX_KICK_BATCH 32
#define RX_PER_ROUND  64
#define ECHO_MARK     "forkd-echo "
#define HOST_MARK     "forkd-host"
#define COUNT_MARK    "forkd-count"
#define NET_SEND_MAX  100000000UL

static uint8_t *at(const struct net *n, uint64_t off)
{
	return (uint8_t *)(uintptr_t)(n->mem + off);
}

static void avail_push(struct vq *q, uint16_t head)
{
	q->avail->ring[q->avail_idx % q->num] = head;
	barrier();
	q->avail_idx++;
	q->avail->idx = q->avail_idx;
}

static int setup_queue(struct net *n, unsigned q, uint64_t off, struct vq *out)
{
	if (virtio_queue_setup(&n->dev, q, NET_QUEUE_SIZE, n->mem + off) < 0)
		return -1;
	*out = n->dev.q;
	out->avail->flags = 1; /* we poll: no interrupts */
	return out->num == NET_QUEUE_SIZE ? 0 : -1;
}

static void post_rx(struct net *n, unsigned i)
{
	volatile struct virtq_desc *d = &n->rxq.desc[i];

	d->addr = n->mem + NET_OFF_RXBUF + (uint64_t)i * NET_BUF_STRIDE;
	d->len = n->rxbuf_len;
	d->flags = VIRTQ_DESC_F_WRITE;
	d->next = 0;
	avail_push(&n->rxq, (uint16_t)i);
	n->rx_unkicked++;
}

static void rx_kick(struct net *n)
{
	if (!n->rx_unkicked)
		return;
	barrier();
	vreg_write(&n->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
	n->rx_unkicked = 0;
}

int net_open(struct net *n, uint64_t mem, bool mrg, uint32_t rxbuf_len, bool offload)
{
	uint64_t base = virtio_find(VIRTIO_ID_NET, 0);
	uint64_t want =
	    1ULL << VIRTIO_NET_F_MAC | 1ULL << VIRTIO_NET_F_STATUS |
	    (mrg || offload ? 1ULL << VIRTIO_NET_F_MRG_RXBUF : 0) |
	    (offload ? 1ULL << VIRTIO_NET_F_GUEST_CSUM | 1ULL << VIRTIO_NET_F_GUEST_TSO4 |
			   1ULL << VIRTIO_NET_F_GUEST_TSO6
		     : 0);
	uint32_t lo, hi;

	memset(n, 0, sizeof(*n));
	n->mem = mem;
	if (!base) {
		say("net.error=no virtio-net device (%u virtio-mmio windows)", acpi.nr_virtio);
		return -1;
	}
	if (virtio_negotiate(&n->dev, base, want) < 0) {
		say("net.error=feature negotiation failed at 0x%lx (offered 0x%lx)", base,
		    n->dev.offered);
		return -1;
	}
	if (setup_queue(n, 0, NET_OFF_RXQ, &n->rxq) < 0 ||
	    setup_queue(n, 1, NET_OFF_TXQ, &n->txq) < 0) {
		say("net.error=queue setup failed at 0x%lx", base);
		return -1;
	}
	n->mrg = n->dev.accepted & (1ULL << VIRTIO_NET_F_MRG_RXBUF);
	/* Without MRG_RXBUF one buffer takes a whole frame; with it the first needs the header. */
	n->rxbuf_len = NET_BUF_STRIDE;
	if (n->mrg && rxbuf_len)
		n->rxbuf_len = rxbuf_len < 64		    ? 64
			       : rxbuf_len > NET_BUF_STRIDE ? NET_BUF_STRIDE
							    : rxbuf_len;
	lo = virtio_config_read32(&n->dev, 0);
	hi = virtio_config_read32(&n->dev, 4);
	for (int i = 0; i < 4; i++)
		n->mac[i] = (uint8_t)(lo >> (8 * i));
	n->mac[4] = (uint8_t)hi;
	n->mac[5] = (uint8_t)(hi >> 8);
	for (unsigned i = 0; i < NET_QUEUE_SIZE; i++)
		post_rx(n, i);
	vreg_write(&n->dev, VIRTIO_MMIO_STATUS,
		   vreg_read(&n->dev, VIRTIO_MMIO_STATUS) | VIRTIO_STATUS_DRIVER_OK);
	rx_kick(n);
	return 0;
}

bool net_needs_reset(const struct net *n)
{
	return vreg_read(&n->dev, VIRTIO_MMIO_STATUS) & VIRTIO_STATUS_DEVICE_NEEDS_RESET;
}

int net_link(const struct net *n)
{
	/* status is the le16 at config offset 6: the high half of the second word. */
	return (virtio_config_read32(&n->dev, 4) >> 16) & 1;
}

unsigned net_tx_reap(struct net *n)
{
	while (n->txq.used->idx != n->txq.used_idx)
		n->txq.used_idx++;
	return (uint16_t)(n->txq.avail_idx - n->txq.used_idx);
}

bool net_tx_frame(struct net *n, const uint8_t *frame, uint32_t len)
{
	struct vq *q = &n->txq;
	unsigned slot;
	uint8_t *buf;

	if ((uint16_t)(q->avail_idx - q->used_idx) >= q->num || len > NET_MAX_FRAME)
		return false;
	/* The device completes in order, so the oldest slot is the one free now. */
	slot = q->avail_idx % q->num;
	buf = at(n, NET_OFF_TXBUF + (uint64_t)slot * NET_BUF_STRIDE);
	memset(buf, 0, NET_HDR_SIZE);
	memcpy(buf + NET_HDR_SIZE, frame, len);
	q->desc[slot].addr = n->mem + NET_OFF_TXBUF + (uint64_t)slot * NET_BUF_STRIDE;
	q->desc[slot].len = NET_HDR_SIZE + len;
	q->desc[slot].flags = 0;
	q->desc[slot].next = 0;
	avail_push(q, (uint16_t)slot);
	return true;
}

void net_tx_kick(struct net *n)
{
	barrier();
	vreg_write(&n->dev, VIRTIO_MMIO_QUEUE_NOTIFY, 1);
}

int net_rx_frame(struct net *n, const uint8_t **frame)
{
	struct vq *q = &n->rxq;
	uint8_t *out = at(n, NET_OFF_FRAME);

	*frame = out;
	while (q->used->idx != q->used_idx) {
		uint32_t id, len, take;
		const uint8_t *buf;

		barrier();
		id = q->used->ring[q->used_idx % q->num].id;
		len = q->used->ring[q->used_idx % q->num].len;
		q->used_idx++;
		if (id >= q->num) {
			n->gather_left = 0;
			return -1; /* nothing we can re-post */
		}
		buf = at(n, NET_OFF_RXBUF + (uint64_t)id * NET_BUF_STRIDE);
		if (len > n->rxbuf_len)
			len = 0, n->gather_bad = true;
		if (n->gather_left == 0) {
			uint16_t nb = 1;

			n->gather_bad = len < NET_HDR_SIZE;
			if (n->mrg && !n->gather_bad)
				nb = (uint16_t)(buf[10] | buf[11] << 8);
			if (nb == 0 || nb > q->num)
				n->gather_bad = true, nb = 1;
			n->gather_left = nb;
			n->gather_len = 0;
			if (len >= NET_HDR_SIZE)
				buf += NET_HDR_SIZE, len -= NET_HDR_SIZE;
			else
				len = 0;
		}
		take = len;
		if (n->gather_len + take > NET_BUF_STRIDE) {
			n->gather_bad = true;
			take = NET_BUF_STRIDE - n->gather_len;
		}
		memcpy(out + n->gather_len, buf, take);
		n->gather_len += take;
		n->gather_left--;
		post_rx(n, id);
		if (n->rx_unkicked >= RX_KICK_BATCH)
			rx_kick(n);
		if (n->gather_left == 0)
			return n->gather_bad ? -1 : (int)n->gather_len;
	}
	rx_kick(n);
	return 0;
}

/* ---- the `net` workload ---- */

/*
 * The one `net` workload's state: written by its CPU, except the send
 * request, which the BSP's console writes (send_seq bumps last, the
 * workload takes a request when it sees a new seq).
 */
static struct {
	struct net n;
	bool running;
	uint64_t rx_frames, rx_bytes, rx_bad, rx_other, echoed, counted, echo_dropped;
	uint64_t tx_frames, tx_bytes, resets;
	int link;
	/* console -> workload */
	uint64_t req_count, req_len, req_seq;
	/* workload: the request being served */
	uint64_t send_left, send_len, send_serving_seq, send_seq_no;
	bool send_reported;
} nw;

static uint32_t build_frame(uint8_t *f, const uint8_t *dst, const uint8_t *src, uint64_t seq,
			    uint32_t len)
{
	int k;

	if (len < NET_ETH_HLEN + 32)
		len = NET_ETH_HLEN + 32;
	if (len > NET_MAX_FRAME)
		len = NET_MAX_FRAME;
	memcpy(f, dst, 6);
	memcpy(f + 6, src, 6);
	f[12] = NET_ETHERTYPE >> 8;
	f[13] = NET_ETHERTYPE & 0xff;
	k = fmt((char *)f + NET_ETH_HLEN, len - NET_ETH_HLEN, "forkd-net seq=%lu ", seq);
	if ((uint32_t)k >= len - NET_ETH_HLEN)
		k = (int)(len - NET_ETH_HLEN - 1);
	for (uint32_t i = NET_ETH_HLEN + (uint32_t)k; i < len; i++)
		f[i] = (uint8_t)(seq + i);
	return len;
}

static bool starts_with(const uint8_t *p, uint32_t n, const char *s)
{
	size_t l = strlen(s);

	return n >= l && memcmp(p, s, l) == 0;
}

static void handle_frame(const uint8_t *f, uint32_t len)
{
	static uint8_t echo[NET_MAX_FRAME];
	const uint8_t *payload = f + NET_ETH_HLEN;
	uint32_t plen = len - NET_ETH_HLEN, elen;

	nw.rx_frames++;
	nw.rx_bytes += len;
	if (len < NET_ETH_HLEN || (f[12] << 8 | f[13]) != NET_ETHERTYPE) {
		nw.rx_other++;
		return;
	}
	if (starts_with(payload, plen, COUNT_MARK)) {
		nw.counted++;
		return;
	}
	if (!starts_with(payload, plen, HOST_MARK)) {
		nw.rx_other++;
		return;
	}
	memcpy(echo, f + 6, 6);
	memcpy(echo + 6, nw.n.mac, 6);
	echo[12] = f[12];
	echo[13] = f[13];
	elen = NET_ETH_HLEN + (uint32_t)strlen(ECHO_MARK);
	memcpy(echo + NET_ETH_HLEN, ECHO_MARK, strlen(ECHO_MARK));
	if (plen > NET_MAX_FRAME - elen)
		plen = NET_MAX_FRAME - elen;
	memcpy(echo + elen, payload, plen);
	elen += plen;
	net_tx_reap(&nw.n);
	if (net_tx_frame(&nw.n, echo, elen)) {
		nw.echoed++;
		nw.tx_frames++;
		nw.tx_bytes += elen;
	} else {
		nw.echo_dropped++;
	}
}

static void say_ready(void)
{
	const uint8_t *m = nw.n.mac;

	say("net.ready mac=%02x:%02x:%02x:%02x:%02x:%02x link=%d mrg=%d rxbuf=%u features=0x%lx",
	    m[0], m[1], m[2], m[3], m[4], m[5], nw.link, nw.n.mrg ? 1 : 0, nw.n.rxbuf_len,
	    nw.n.dev.accepted);
}

static bool net_start(struct cpu *c)
{
	if (net_open(&nw.n, c->mem_base, cfg.net_mrg != 0, (uint32_t)cfg.net_rxbuf,
		     cfg.net_offload != 0) < 0)
		return false;
	nw.link = net_link(&nw.n);
	return true;
}

/* Serves the current send request as far as tx slots allow. */
static void send_some(void)
{
	static const uint8_t bcast[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
	static uint8_t f[NET_MAX_FRAME];
	bool queued = false;

	net_tx_reap(&nw.n);
	while (nw.send_left) {
		uint32_t len =
		    build_frame(f, bcast, nw.n.mac, nw.send_seq_no, (uint32_t)nw.send_len);

		if (!net_tx_frame(&nw.n, f, len))
			break;
		queued = true;
		nw.send_seq_no++;
		nw.send_left--;
		nw.tx_frames++;
		nw.tx_bytes += len;
	}
	if (queued)
		net_tx_kick(&nw.n);
	if (!nw.send_left && !nw.send_reported && net_tx_reap(&nw.n) == 0) {
		nw.send_reported = true;
		say("net.send.done seq=%lu total=%lu", nw.send_serving_seq, nw.send_seq_no);
	}
}

void net_run(struct cpu *c)
{
	uint64_t next_link = 0, seen_seq = 0;

	if (!net_start(c)) {
		WRITE_ONCE(c->done, 1);
		idle_forever(c);
	}
	say_ready();
	/* The first batch: net_tx frames of net_len, as if the console had asked. */
	nw.send_left = cfg.net_tx;
	nw.send_len = cfg.net_len;
	WRITE_ONCE(nw.running, true);
	for (;;) {
		const uint8_t *f;
		int len, rounds = RX_PER_ROUND;
		bool echo_queued = false;

		service(c);
		if (READ_ONCE(nw.req_seq) != seen_seq) {
			seen_seq = READ_ONCE(nw.req_seq);
			nw.send_left = READ_ONCE(nw.req_count);
			nw.send_len = READ_ONCE(nw.req_len);
			nw.send_serving_seq = seen_seq;
			nw.send_reported = false;
		}
		send_some();
		while (rounds-- && (len = net_rx_frame(&nw.n, &f)) != 0) {
			if (len < 0) {
				nw.rx_bad++;
				continue;
			}
			uint64_t before = nw.echoed;
			handle_frame(f, (uint32_t)len);
			echo_queued |= nw.echoed != before;
		}
		if (echo_queued)
			net_tx_kick(&nw.n);
		if (rdtsc() >= next_link) {
			int link = net_link(&nw.n);

			if (link != nw.link) {
				nw.link = link;
				say("net.link=%s", link ? "up" : "down");
			}
			if (net_needs_reset(&nw.n)) {
				nw.resets++;
				say("net.needs_reset=1 resets=%lu", nw.resets);
				if (!net_start(c))
					idle_forever(c);
				say_ready();
			}
			next_link = rdtsc() + us_to_tsc(LINK_POLL_US);
		}
		cpu_relax();
	}
}

/* `net status [tag]`, `net send <count> [len]`. */
void net_cmd(char *arg)
{
	char *word = arg, *rest = arg;
	uint64_t count, len = 128;

	while (*rest && *rest != ' ')
		rest++;
	if (*rest)
		*rest++ = '\0';
	if (!READ_ONCE(nw.running)) {
		say("error net not running");
		return;
	}
	if (str_eq(word, "status")) {
		say("net.status tag=%s net.rx=%lu net.rx_bytes=%lu net.rx_bad=%lu net.rx_other=%lu "
		    "net.echoed=%lu net.echo_dropped=%lu net.counted=%lu net.tx=%lu "
		    "net.tx_bytes=%lu "
		    "net.link=%d net.resets=%lu net.sending=%lu",
		    *rest ? rest : "-", nw.rx_frames, nw.rx_bytes, nw.rx_bad, nw.rx_other,
		    nw.echoed, nw.echo_dropped, nw.counted, nw.tx_frames, nw.tx_bytes, nw.link,
		    nw.resets, nw.send_left);
		return;
	}
	if (str_eq(word, "send")) {
		char *num = rest, *l = rest;

		while (*l && *l != ' ')
			l++;
		if (*l)
			*l++ = '\0';
		if (!parse_u64(num, strlen(num), &count) || count == 0 || count > NET_SEND_MAX ||
		    (*l && (!parse_u64(l, strlen(l), &len) || len > NET_MAX_FRAME))) {
			say("error usage: net send <count 1..%lu> [len ..%d]", NET_SEND_MAX,
			    NET_MAX_FRAME);
			return;
		}
		WRITE_ONCE(nw.req_count, count);
		WRITE_ONCE(nw.req_len, len);
		barrier();
		WRITE_ONCE(nw.req_seq, nw.req_seq + 1);
		say("net.send.queued seq=%lu count=%lu len=%lu", nw.req_seq, count, len);
		return;
	}
	say("error usage: net status [tag] | net send <count> [len]");
}
