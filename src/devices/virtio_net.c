/* SPDX-License-Identifier: MIT */
/*
 * rx: a packet is read from the tap into a host buffer (virtio header
 * first, as TUNSETVNETHDRSZ asked) and then copied into the guest's rx
 * chains: one chain, or with MRG_RXBUF as many as it takes (num_buffers
 * says how many). Chains are popped before anything is published, so when
 * the guest runs out of buffers half-way the pops are undone and the packet
 * waits in the host buffer (one packet, never more) while the tap is not
 * read.
 *
 * tx: a chain's readable stream is the 12-byte header and then the frame.
 * The header is copied and checked (only offloads the driver negotiated)
 * and the copy is what the tap sees; the frame is written straight from
 * guest memory with writev. A malformed packet is dropped and counted and
 * the queue goes on; a malformed ring (virtq_pop or virtq_push failing, an
 * rx chain the device cannot write into) stops the device until reset.
 */
#include "devices/virtio_net.h"
#include "devices/tap.h"

#include <endian.h>
#include <errno.h>
#include <linux/if_tun.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/uio.h>
#include <unistd.h>

#define OFFERED_FEATURES                                                                           \
	(VIRTIO_NET_F_CSUM | VIRTIO_NET_F_GUEST_CSUM | VIRTIO_NET_F_MAC |                          \
	 VIRTIO_NET_F_GUEST_TSO4 | VIRTIO_NET_F_GUEST_TSO6 | VIRTIO_NET_F_HOST_TSO4 |              \
	 VIRTIO_NET_F_HOST_TSO6 | VIRTIO_NET_F_MRG_RXBUF | VIRTIO_NET_F_STATUS)

#define RX_BUF_SIZE (VIRTIO_NET_HDR_SIZE + VIRTIO_NET_MAX_FRAME)
#define EPOLL_BATCH 8

/* Private epoll tags: the tap, or 1 + the queue whose notification fd it is. */
#define TAG_TAP 0

struct virtio_net {
	struct virtio_mmio *t;
	int tap_fd; /* -1: link down */
	char tap_name[64];
	uint8_t config[VIRTIO_NET_CONFIG_SIZE];
	int epoll_fd;
	int notify_fds[VIRTIO_NET_NR_QUEUES];
	bool rx_armed; /* the tap is watched for EPOLLIN */

	/* Offloads set on the tap, and for which driver features. */
	uint32_t offloads;
	uint64_t offload_features;
	bool offloads_applied;

	/* The packet read from the tap and not yet delivered (0: none). */
	uint32_t rx_len;
	uint8_t *rx_buf;

	uint64_t logged; /* guest mistakes written to stderr, up to VIRTIO_NET_LOG_LIMIT */
	struct virtio_net_stats stats;

	/* Scratch: the chain being served, writev vectors, an rx packet's chains. */
	struct virtq_chain chain;
	struct iovec iov[VIRTQ_MAX_SIZE + 1];
	uint16_t rx_heads[VIRTQ_MAX_SIZE];
	uint32_t rx_lens[VIRTQ_MAX_SIZE];
	uint8_t *hdr_bytes[VIRTIO_NET_HDR_SIZE]; /* where the first chain's header bytes went */
};

static void net_log(struct virtio_net *net, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * A guest mistake or a host I/O error: kept as the transport's last error
 * and written to stderr, the first VIRTIO_NET_LOG_LIMIT times only, so a
 * guest repeating it cannot fill the VMM's log.
 */
static void net_log(struct virtio_net *net, const char *fmt, ...)
{
	char msg[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	virtio_mmio_record_error(net->t, "virtio-net: %s", msg);
	if (net->logged < VIRTIO_NET_LOG_LIMIT)
		fprintf(stderr, "forkd-vmm: virtio-net %s: %s%s\n",
			net->tap_name[0] ? net->tap_name : "(no tap)", msg,
			net->logged + 1 == VIRTIO_NET_LOG_LIMIT
			    ? " (further errors are counted in status, not logged)"
			    : "");
	net->logged++;
}

static void set_link_status(struct virtio_net *net)
{
	uint16_t st = htole16(net->tap_fd >= 0 ? VIRTIO_NET_S_LINK_UP : 0);

	memcpy(net->config + VIRTIO_NET_CFG_STATUS, &st, sizeof(st));
}

int virtio_net_create(struct virtio_net **out, const uint8_t mac[6], int tap_fd, const char *name,
		      struct fk_err *err)
{
	struct epoll_event ev = {.events = 0, .data.u64 = TAG_TAP};
	struct virtio_net *net;
	int ret;

	*out = NULL;
	net = calloc(1, sizeof(*net));
	if (!net) {
		if (tap_fd >= 0)
			close(tap_fd);
		return fk_fail(err, ENOMEM, "virtio-net: out of memory");
	}
	net->tap_fd = tap_fd;
	net->epoll_fd = -1;
	for (int q = 0; q < VIRTIO_NET_NR_QUEUES; q++)
		net->notify_fds[q] = -1;
	snprintf(net->tap_name, sizeof(net->tap_name), "%s", name ? name : "");
	memcpy(net->config + VIRTIO_NET_CFG_MAC, mac, 6);
	set_link_status(net);
	net->rx_buf = malloc(RX_BUF_SIZE);
	if (!net->rx_buf) {
		ret = fk_fail(err, ENOMEM, "virtio-net: out of memory");
		goto fail;
	}
	net->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (net->epoll_fd < 0) {
		ret = fk_fail_errno(err, errno, "virtio-net: epoll_create1");
		goto fail;
	}
	/* Watched from the start but with no events: armed when the guest posts rx buffers. */
	if (tap_fd >= 0 && epoll_ctl(net->epoll_fd, EPOLL_CTL_ADD, tap_fd, &ev) < 0) {
		ret = fk_fail_errno(err, errno, "virtio-net %s: watch the tap", net->tap_name);
		goto fail;
	}
	*out = net;
	return 0;
fail:
	virtio_net_close(net);
	return ret;
}

void virtio_net_close(struct virtio_net *net)
{
	if (!net)
		return;
	if (net->tap_fd >= 0)
		close(net->tap_fd);
	for (int q = 0; q < VIRTIO_NET_NR_QUEUES; q++)
		if (net->notify_fds[q] >= 0)
			close(net->notify_fds[q]);
	if (net->epoll_fd >= 0)
		close(net->epoll_fd);
	free(net->rx_buf);
	free(net);
}

void virtio_net_attach(struct virtio_net *net, struct virtio_mmio *t)
{
	net->t = t;
}

int virtio_net_epoll_fd(const struct virtio_net *net)
{
	return net->epoll_fd;
}

int virtio_net_watch_notify(struct virtio_net *net, uint32_t q, int fd, struct fk_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1 + (uint64_t)q};

	if (q >= VIRTIO_NET_NR_QUEUES || net->notify_fds[q] >= 0) {
		close(fd);
		return fk_fail(err, EINVAL, "virtio-net: queue %u has no notification slot", q);
	}
	if (epoll_ctl(net->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int ret = fk_fail_errno(err, errno, "virtio-net: watch queue %u", q);
		close(fd);
		return ret;
	}
	net->notify_fds[q] = fd;
	return 0;
}

void virtio_net_get_mac(const struct virtio_net *net, uint8_t mac[6])
{
	memcpy(mac, net->config + VIRTIO_NET_CFG_MAC, 6);
}

const char *virtio_net_tap_name(const struct virtio_net *net)
{
	return net->tap_name;
}

bool virtio_net_link_up(const struct virtio_net *net)
{
	return net->tap_fd >= 0;
}

void virtio_net_get_stats(struct virtio_net *net, struct virtio_net_stats *stats)
{
	pthread_mutex_lock(&net->t->lock);
	*stats = net->stats;
	stats->offloads = net->offloads;
	pthread_mutex_unlock(&net->t->lock);
}

/* ---- helpers (transport lock held) ---- */

static bool queue_running(const struct virtio_net *net, uint32_t q)
{
	uint32_t status = net->t->state.status;

	return (status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(status & (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)) &&
	       net->t->state.queues[q].ready;
}

static uint64_t negotiated(const struct virtio_net *net)
{
	return net->t->state.driver_features;
}

static void set_rx_armed(struct virtio_net *net, bool armed)
{
	struct epoll_event ev = {.events = armed ? EPOLLIN : 0, .data.u64 = TAG_TAP};

	if (net->tap_fd < 0 || net->rx_armed == armed)
		return;
	if (epoll_ctl(net->epoll_fd, EPOLL_CTL_MOD, net->tap_fd, &ev) == 0)
		net->rx_armed = armed;
}

/* What the tap may hand us: only what the driver said it can take. */
static uint32_t offloads_for(uint64_t features)
{
	uint32_t f = 0;

	if (!(features & VIRTIO_NET_F_GUEST_CSUM))
		return 0;
	f |= TUN_F_CSUM;
	if (features & VIRTIO_NET_F_GUEST_TSO4)
		f |= TUN_F_TSO4;
	if (features & VIRTIO_NET_F_GUEST_TSO6)
		f |= TUN_F_TSO6;
	return f;
}

/*
 * TUNSETOFFLOAD only when the wanted set differs from the tap's: a tap from
 * tap_open starts with none. If the tap refuses, it keeps what it had;
 * fewer offloads than the driver accepted is always safe (the kernel
 * checksums and segments for us).
 */
static void apply_offloads(struct virtio_net *net)
{
	struct fk_err err;
	uint64_t features = negotiated(net);
	uint32_t want;

	if (!(net->t->state.status & VIRTIO_STATUS_FEATURES_OK))
		features = 0;
	if (net->offloads_applied && features == net->offload_features)
		return;
	want = offloads_for(features);
	if (net->tap_fd >= 0 && want != net->offloads) {
		if (tap_set_offload(net->tap_fd, want, &err) < 0)
			net_log(net, "tap offloads: %s", err.msg);
		else
			net->offloads = want;
	}
	net->offload_features = features;
	net->offloads_applied = true;
}

/* ---- rx ---- */

/*
 * Copies len bytes of src into the chain's writable stream from its start;
 * returns how many fit. With hdr, records where each header byte landed.
 */
static uint32_t copy_to_chain(const struct virtq_chain *c, const uint8_t *src, uint32_t len,
			      uint8_t **hdr)
{
	uint32_t done = 0;

	for (int i = 0; i < c->nr_segs && done < len; i++) {
		const struct virtq_seg *s = &c->segs[i];
		uint32_t n;

		if (!s->device_writable)
			continue;
		n = s->len < len - done ? s->len : len - done;
		memcpy(s->hva, src + done, n);
		for (uint32_t k = 0; hdr && k < n && done + k < VIRTIO_NET_HDR_SIZE; k++)
			hdr[done + k] = s->hva + k;
		done += n;
	}
	return done;
}

/*
 * Delivers the pending packet: 1 delivered (or dropped for good), 0 no
 * buffers (the packet stays pending), -1 the ring is broken.
 */
static int rx_deliver(struct virtio_net *net)
{
	struct virtio_mmio *t = net->t;
	struct virtq *vq = &t->state.queues[VIRTIO_NET_QUEUE_RX];
	uint16_t saved = vq->last_avail_idx;
	bool mrg = negotiated(net) & VIRTIO_NET_F_MRG_RXBUF;
	uint32_t len = net->rx_len, off = 0;
	unsigned n = 0;
	uint16_t nbufs;
	struct fk_err err;
	int ret;

	/* Without GUEST_CSUM the guest never agreed to checksum flags. */
	if (!(negotiated(net) & VIRTIO_NET_F_GUEST_CSUM))
		net->rx_buf[VIRTIO_NET_HDR_FLAGS] = 0;
	memset(net->hdr_bytes, 0, sizeof(net->hdr_bytes));
	while (off < len && n < (mrg ? VIRTQ_MAX_SIZE : 1u)) {
		ret = virtq_pop(t->mem, vq, &net->chain, &err);
		if (ret < 0) {
			vq->last_avail_idx = saved;
			virtio_mmio_set_needs_reset(t, err.msg);
			net_log(net, "rx queue: %s", err.msg);
			return -1;
		}
		if (ret == 0) {
			vq->last_avail_idx = saved;
			return 0;
		}
		if (net->chain.readable_len ||
		    net->chain.writable_len < (n ? 1 : VIRTIO_NET_HDR_SIZE)) {
			char why[128];

			snprintf(
			    why, sizeof(why),
			    "rx chain at head %u: %llu device-readable and %llu writable bytes, "
			    "need none and at least %u",
			    net->chain.head, (unsigned long long)net->chain.readable_len,
			    (unsigned long long)net->chain.writable_len,
			    n ? 1 : VIRTIO_NET_HDR_SIZE);
			vq->last_avail_idx = saved;
			virtio_mmio_set_needs_reset(t, why);
			net_log(net, "%s", why);
			return -1;
		}
		net->rx_heads[n] = net->chain.head;
		net->rx_lens[n] = copy_to_chain(&net->chain, net->rx_buf + off, len - off,
						n ? NULL : net->hdr_bytes);
		off += net->rx_lens[n];
		n++;
	}
	if (off < len) {
		/* The buffers taken hand back empty: the guest sees a short packet and drops it. */
		net->stats.rx_dropped++;
		net_log(net, "rx: a %u-byte frame does not fit the guest's buffers%s",
			len - VIRTIO_NET_HDR_SIZE, mrg ? "" : " (MRG_RXBUF not negotiated)");
		for (unsigned i = 0; i < n; i++)
			net->rx_lens[i] = 0;
	} else {
		nbufs = htole16((uint16_t)n);
		/* num_buffers sits in the first chain; its bytes may straddle descriptors. */
		*net->hdr_bytes[VIRTIO_NET_HDR_NUM_BUFFERS] = (uint8_t)nbufs;
		*net->hdr_bytes[VIRTIO_NET_HDR_NUM_BUFFERS + 1] = (uint8_t)(nbufs >> 8);
		net->stats.rx_packets++;
		net->stats.rx_bytes += len - VIRTIO_NET_HDR_SIZE;
	}
	for (unsigned i = 0; i < n; i++) {
		if (virtq_push(t->mem, vq, net->rx_heads[i], net->rx_lens[i], &err) < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			net_log(net, "rx queue: %s", err.msg);
			return -1;
		}
	}
	net->rx_len = 0;
	return 1;
}

static void rx_process(struct virtio_net *net)
{
	struct virtio_mmio *t = net->t;
	bool delivered = false;
	int budget = VIRTIO_NET_RX_BUDGET;
	ssize_t n;
	int ret;

	if (net->tap_fd < 0)
		return;
	if (!queue_running(net, VIRTIO_NET_QUEUE_RX)) {
		set_rx_armed(net, false);
		return;
	}
	apply_offloads(net);
	while (budget > 0) {
		if (!net->rx_len) {
			n = read(net->tap_fd, net->rx_buf, RX_BUF_SIZE);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				break;
			if (n < 0) {
				/* Not EAGAIN: the tap is gone or broken; stop watching it. */
				net_log(net, "tap read: %s", strerror(errno));
				set_rx_armed(net, false);
				break;
			}
			budget--;
			if (n < VIRTIO_NET_HDR_SIZE + VIRTIO_NET_ETH_HLEN) {
				net->stats.rx_dropped++;
				continue;
			}
			net->rx_len = (uint32_t)n;
		}
		ret = rx_deliver(net);
		if (ret == 0) {
			/* No buffers: leave the rest in the tap's queue until the guest posts some.
			 */
			net->stats.rx_no_buffers++;
			set_rx_armed(net, false);
			break;
		}
		if (ret < 0) {
			net->stats.rx_dropped++;
			net->rx_len = 0;
			set_rx_armed(net, false);
			break;
		}
		delivered = true;
	}
	if (budget == 0)
		net->stats.rx_budget_exhausted++;
	if (delivered)
		virtio_mmio_signal_used(t, VIRTIO_NET_QUEUE_RX);
}

/* ---- tx ---- */

static bool tx_malformed(struct virtio_net *net, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static bool tx_malformed(struct virtio_net *net, const char *fmt, ...)
{
	char why[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	net->stats.tx_malformed++;
	net_log(net, "tx chain at head %u dropped: %s", net->chain.head, why);
	return false;
}

/* Checks the copied header against what was negotiated. */
static bool tx_header_ok(struct virtio_net *net, const uint8_t *hdr)
{
	uint64_t f = negotiated(net);
	uint8_t flags = hdr[VIRTIO_NET_HDR_FLAGS];
	uint8_t gso = hdr[VIRTIO_NET_HDR_GSO_TYPE];

	if (flags & ~VIRTIO_NET_HDR_F_NEEDS_CSUM)
		return tx_malformed(net, "header flags 0x%x (only NEEDS_CSUM is a driver's)",
				    flags);
	if ((flags & VIRTIO_NET_HDR_F_NEEDS_CSUM) && !(f & VIRTIO_NET_F_CSUM))
		return tx_malformed(net, "NEEDS_CSUM without the CSUM feature");
	switch (gso) {
	case VIRTIO_NET_HDR_GSO_NONE:
		return true;
	case VIRTIO_NET_HDR_GSO_TCPV4:
		if (f & VIRTIO_NET_F_HOST_TSO4)
			return true;
		return tx_malformed(net, "GSO TCPv4 without HOST_TSO4");
	case VIRTIO_NET_HDR_GSO_TCPV6:
		if (f & VIRTIO_NET_F_HOST_TSO6)
			return true;
		return tx_malformed(net, "GSO TCPv6 without HOST_TSO6");
	default:
		return tx_malformed(net, "GSO type 0x%x not offered", gso);
	}
}

static void tx_one(struct virtio_net *net)
{
	const struct virtq_chain *c = &net->chain;
	uint8_t hdr[VIRTIO_NET_HDR_SIZE];
	uint64_t frame, got = 0, skip = VIRTIO_NET_HDR_SIZE;
	int niov = 1;
	ssize_t n;

	if (c->writable_len) {
		tx_malformed(net, "%llu device-writable bytes in a tx chain",
			     (unsigned long long)c->writable_len);
		return;
	}
	if (c->readable_len < VIRTIO_NET_HDR_SIZE) {
		tx_malformed(net, "header: %llu bytes, need %d",
			     (unsigned long long)c->readable_len, VIRTIO_NET_HDR_SIZE);
		return;
	}
	frame = c->readable_len - VIRTIO_NET_HDR_SIZE;
	if (frame < VIRTIO_NET_ETH_HLEN || frame > VIRTIO_NET_MAX_FRAME) {
		tx_malformed(net, "frame of %llu bytes, expected %d to %d",
			     (unsigned long long)frame, VIRTIO_NET_ETH_HLEN, VIRTIO_NET_MAX_FRAME);
		return;
	}
	/* One copy of the header: the guest may rewrite it while the tap reads it. */
	for (int i = 0; i < c->nr_segs && got < VIRTIO_NET_HDR_SIZE; i++) {
		uint64_t k = c->segs[i].len < VIRTIO_NET_HDR_SIZE - got ? c->segs[i].len
									: VIRTIO_NET_HDR_SIZE - got;
		memcpy(hdr + got, c->segs[i].hva, k);
		got += k;
	}
	if (!tx_header_ok(net, hdr))
		return;
	if (net->tap_fd < 0) {
		net->stats.tx_dropped_link_down++;
		return;
	}
	net->iov[0] = (struct iovec){.iov_base = hdr, .iov_len = sizeof(hdr)};
	for (int i = 0; i < c->nr_segs; i++) {
		const struct virtq_seg *s = &c->segs[i];

		if (skip >= s->len) {
			skip -= s->len;
			continue;
		}
		net->iov[niov++] =
		    (struct iovec){.iov_base = s->hva + skip, .iov_len = s->len - skip};
		skip = 0;
	}
	do
		n = writev(net->tap_fd, net->iov, niov);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		net->stats.tx_errors++;
		/* A full or down tap drops, as a wire would; anything else is worth a line. */
		if (errno != EAGAIN && errno != ENOBUFS && errno != EIO)
			net_log(net, "tap write of a %llu-byte frame: %s",
				(unsigned long long)frame, strerror(errno));
		return;
	}
	net->stats.tx_packets++;
	net->stats.tx_bytes += frame;
}

static void tx_process(struct virtio_net *net)
{
	struct virtio_mmio *t = net->t;
	struct virtq *vq = &t->state.queues[VIRTIO_NET_QUEUE_TX];
	int budget = VIRTIO_NET_TX_BUDGET;
	bool completed = false;
	struct fk_err err;
	uint64_t one = 1;
	int ret;

	apply_offloads(net);
	while (budget > 0) {
		ret = virtq_pop(t->mem, vq, &net->chain, &err);
		if (ret < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			net_log(net, "tx queue: %s", err.msg);
			break;
		}
		if (ret == 0)
			break;
		budget--;
		tx_one(net);
		if (virtq_push(t->mem, vq, net->chain.head, 0, &err) < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			net_log(net, "tx queue: %s", err.msg);
			break;
		}
		completed = true;
	}
	if (budget == 0 && virtq_has_avail(t->mem, vq)) {
		/* More is queued: come back after the loop has served everyone else. */
		net->stats.tx_budget_exhausted++;
		if (net->notify_fds[VIRTIO_NET_QUEUE_TX] >= 0 &&
		    write(net->notify_fds[VIRTIO_NET_QUEUE_TX], &one, sizeof(one)) < 0) {
		}
	}
	if (completed)
		virtio_mmio_signal_used(t, VIRTIO_NET_QUEUE_TX);
}

/* ---- transport ops ---- */

static uint64_t net_features(void *dev)
{
	(void)dev;
	return OFFERED_FEATURES;
}

static void net_config_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct virtio_net *net = dev;

	memcpy(data, net->config + offset, len);
}

static void net_queue_notify(struct virtio_mmio *t, void *dev, uint32_t q)
{
	struct virtio_net *net = dev;

	(void)t;
	if (q == VIRTIO_NET_QUEUE_RX) {
		/* New rx buffers: deliver what waits, then listen to the tap again. */
		set_rx_armed(net, true);
		rx_process(net);
	} else if (q == VIRTIO_NET_QUEUE_TX) {
		tx_process(net);
	}
}

static void net_reset(void *dev)
{
	struct virtio_net *net = dev;

	net->rx_len = 0;
	set_rx_armed(net, false);
	/* The next driver may take fewer offloads: the tap must not hand it GSO packets. */
	net->offloads_applied = false;
	apply_offloads(net);
}

const struct virtio_dev_ops virtio_net_ops = {
    .name = "virtio-net",
    .device_id = VIRTIO_ID_NET,
    .num_queues = VIRTIO_NET_NR_QUEUES,
    .queue_max_size = VIRTIO_NET_QUEUE_SIZE,
    .features = net_features,
    .config_size = VIRTIO_NET_CONFIG_SIZE,
    .config_read = net_config_read,
    .queue_notify = net_queue_notify,
    .reset = net_reset,
};

int virtio_net_process_events(struct virtio_net *net)
{
	struct epoll_event ev[EPOLL_BATCH];
	uint64_t v;
	int n;

	n = epoll_wait(net->epoll_fd, ev, EPOLL_BATCH, 0);
	for (int i = 0; i < n; i++) {
		uint64_t tag = ev[i].data.u64;

		if (tag == TAG_TAP) {
			pthread_mutex_lock(&net->t->lock);
			rx_process(net);
			pthread_mutex_unlock(&net->t->lock);
		} else if (tag - 1 < VIRTIO_NET_NR_QUEUES) {
			if (read(net->notify_fds[tag - 1], &v, sizeof(v)) == sizeof(v))
				virtio_mmio_notify(net->t, (uint32_t)(tag - 1));
		}
	}
	return n < 0 ? 0 : n;
}

int virtio_net_attach_tap(struct virtio_net *net, int tap_fd, const char *name, struct fk_err *err)
{
	struct epoll_event ev = {.events = 0, .data.u64 = TAG_TAP};
	struct virtio_mmio *t = net->t;
	int ret = 0;

	pthread_mutex_lock(&t->lock);
	if (tap_fd >= 0 && epoll_ctl(net->epoll_fd, EPOLL_CTL_ADD, tap_fd, &ev) < 0) {
		ret = fk_fail_errno(err, errno, "virtio-net: watch tap %s", name);
		close(tap_fd);
		goto out;
	}
	if (net->tap_fd >= 0) {
		epoll_ctl(net->epoll_fd, EPOLL_CTL_DEL, net->tap_fd, NULL);
		close(net->tap_fd);
	}
	net->tap_fd = tap_fd;
	net->rx_armed = false;
	net->rx_len = 0;
	net->offloads = 0; /* a new tap starts without (tap_open) */
	snprintf(net->tap_name, sizeof(net->tap_name), "%s", tap_fd >= 0 && name ? name : "");
	net->offloads_applied = false;
	apply_offloads(net);
	set_link_status(net);
	t->state.config_generation++;
	if (t->state.status & VIRTIO_STATUS_DRIVER_OK) {
		t->state.interrupt_status |= VIRTIO_MMIO_INT_CONFIG;
		irq_line_pulse(&t->irq);
	}
	if (queue_running(net, VIRTIO_NET_QUEUE_RX)) {
		set_rx_armed(net, true);
		rx_process(net);
	}
out:
	pthread_mutex_unlock(&t->lock);
	return ret;
}

void virtio_net_restored(struct virtio_net *net)
{
	struct virtio_mmio *t = net->t;

	pthread_mutex_lock(&t->lock);
	net->offloads_applied = false;
	apply_offloads(net);
	pthread_mutex_unlock(&t->lock);
	/* Buffers and packets the guest queued before the capture lost their notification. */
	virtio_mmio_notify(t, VIRTIO_NET_QUEUE_RX);
	virtio_mmio_notify(t, VIRTIO_NET_QUEUE_TX);
}
