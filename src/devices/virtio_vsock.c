/* SPDX-License-Identifier: MIT */
/*
 * Connections are keyed by (host port, guest port). A host-initiated one
 * starts AWAIT_CONNECT (reading the client's CONNECT line), then CONNECTING
 * (REQUEST queued or sent, waiting for RESPONSE), then ESTABLISHED; a
 * guest-initiated one is ESTABLISHED as soon as the Unix connect succeeds.
 *
 * Nothing is ever written to the rx queue from anywhere but process_rx():
 * handlers only record what a connection owes the guest (`pending` bits,
 * readable host data) and put it on the work list, or queue an RST for a
 * connection that no longer exists. process_rx() then fills the guest's rx
 * buffers round-robin. That keeps the order on each connection right
 * (REQUEST/RESPONSE, data, SHUTDOWN) and means a guest that posts no rx
 * buffers costs us a bounded amount of bookkeeping, never a growing queue.
 *
 * Host data is read from a Unix socket only into an rx buffer just taken
 * from the guest, and only as much as the guest has credit for; guest data
 * is written straight to the Unix socket, and what the socket does not take
 * waits in a per-connection buffer that the credit we advertise bounds.
 */
#include "devices/virtio_vsock.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "util/unix_socket.h"

#define VSOCK_HASH_SIZE	     1024
#define VSOCK_EPOLL_BATCH    64
#define VSOCK_ACCEPT_BATCH   64
#define VSOCK_LISTEN_BACKLOG 128
/* The output buffer also holds the "OK <port>\n" line ahead of guest data. */
#define VSOCK_OUTBUF_MAX (VSOCK_CONN_BUF_ALLOC + VSOCK_CONNECT_LINE_MAX)
/* Descriptors the VMM needs besides its vsock sockets (disks, KVM, vCPUs, control). */
#define VSOCK_FD_HEADROOM 512

/* What an epoll event in the private set is about: low 8 bits of its tag. */
enum vsock_tag_kind {
	TAG_LISTENER = 1,
	TAG_TIMER = 2,
	TAG_NOTIFY = 3, /* bits 8..15: queue index */
	TAG_CONN = 4,	/* bits 8..23: slot, bits 32..63: generation */
};

enum conn_state {
	CONN_AWAIT_CONNECT, /* host client accepted, its CONNECT line not complete */
	CONN_CONNECTING,    /* REQUEST owed or sent to the guest, no RESPONSE yet */
	CONN_ESTABLISHED,
};

/* Control packets a connection owes the guest. */
enum conn_pending {
	PEND_REQUEST = 1 << 0,
	PEND_RESPONSE = 1 << 1,
	PEND_SHUTDOWN = 1 << 2,
	PEND_CREDIT_UPDATE = 1 << 3,
};

/* A ring of bytes that grows on demand up to VSOCK_OUTBUF_MAX and is freed when empty. */
struct outbuf {
	uint8_t *data;
	uint32_t cap;
	uint32_t head;
	uint32_t len;
};

struct vsock_conn {
	int fd;
	int slot;
	uint32_t gen; /* matches the epoll tag: stale events for a freed slot are ignored */
	enum conn_state state;
	uint32_t local_port; /* host side */
	uint32_t peer_port;  /* guest side */
	bool in_epoll;
	uint32_t epoll_events;
	uint64_t deadline_ms; /* handshake deadline while not ESTABLISHED */
	char line[VSOCK_CONNECT_LINE_MAX];
	uint32_t line_len;

	unsigned pending;	   /* enum conn_pending */
	uint32_t shutdown_to_send; /* flags of the owed SHUTDOWN */
	bool guest_knows;	   /* the guest has seen this connection: an RST means something */
	bool host_readable;	   /* the Unix socket has data or EOF we have not read */
	bool host_eof;		   /* read returned 0 */
	bool host_hup;		   /* the Unix peer closed both directions */
	uint32_t guest_shutdown;   /* SHUTDOWN flags the guest sent */
	bool wr_shut;		   /* shutdown(SHUT_WR) done on the Unix socket */

	/* Guest -> host. */
	uint32_t rx_cnt;	    /* payload bytes taken from the guest */
	uint32_t fwd_cnt;	    /* of which the Unix socket accepted */
	uint32_t last_fwd_cnt_sent; /* fwd_cnt the guest last heard */
	struct outbuf out;
	uint32_t out_prefix; /* leading bytes of out that are our OK line, not guest data */

	/* Host -> guest. */
	uint32_t tx_cnt; /* payload bytes given to the guest */
	uint32_t peer_buf_alloc;
	uint32_t peer_fwd_cnt;

	struct vsock_conn *hash_next;
	struct vsock_conn *work_next, *work_prev;
	bool on_work_list;
};

struct rst_entry {
	uint32_t local_port;
	uint32_t peer_port;
};

struct virtio_vsock {
	struct virtio_mmio *t;
	uint64_t guest_cid;
	uint8_t config[VIRTIO_VSOCK_CONFIG_SIZE];
	char path[VSOCK_PATH_MAX];
	dev_t sock_dev;
	ino_t sock_ino;
	int listen_fd;
	bool listen_paused; /* accept ran out of descriptors: retried on the next tick */
	int epoll_fd;
	int timer_fd;
	bool timer_armed;
	int notify_fds[VIRTIO_VSOCK_NR_QUEUES];
	uint32_t handshake_timeout_ms;

	struct vsock_conn *slots[VSOCK_MAX_CONNS];
	uint32_t next_gen;
	uint32_t nr_conns;
	uint32_t nr_handshaking;
	struct vsock_conn *hash[VSOCK_HASH_SIZE];
	struct vsock_conn *work_head, *work_tail;
	struct rst_entry rst_queue[VSOCK_RST_QUEUE_LEN];
	uint32_t rst_head, rst_len;
	uint32_t next_host_port;
	bool reset_event_pending;
	struct virtio_vsock_stats stats;

	/* Scratch for the chain being served and its I/O vectors. */
	struct virtq_chain chain;
	struct iovec iov[VIRTQ_MAX_SIZE];
};

/* ---- little helpers ---- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static void put_le16(uint8_t *p, uint16_t v)
{
	v = htole16(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static uint16_t get_le16(const uint8_t *p)
{
	uint16_t v;

	memcpy(&v, p, sizeof(v));
	return le16toh(v);
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return le32toh(v);
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return le64toh(v);
}

void virtio_vsock_hdr_decode(const uint8_t raw[VIRTIO_VSOCK_HDR_SIZE], struct virtio_vsock_hdr *h)
{
	h->src_cid = get_le64(raw + VIRTIO_VSOCK_HDR_SRC_CID);
	h->dst_cid = get_le64(raw + VIRTIO_VSOCK_HDR_DST_CID);
	h->src_port = get_le32(raw + VIRTIO_VSOCK_HDR_SRC_PORT);
	h->dst_port = get_le32(raw + VIRTIO_VSOCK_HDR_DST_PORT);
	h->len = get_le32(raw + VIRTIO_VSOCK_HDR_LEN);
	h->type = get_le16(raw + VIRTIO_VSOCK_HDR_TYPE);
	h->op = get_le16(raw + VIRTIO_VSOCK_HDR_OP);
	h->flags = get_le32(raw + VIRTIO_VSOCK_HDR_FLAGS);
	h->buf_alloc = get_le32(raw + VIRTIO_VSOCK_HDR_BUF_ALLOC);
	h->fwd_cnt = get_le32(raw + VIRTIO_VSOCK_HDR_FWD_CNT);
}

void virtio_vsock_hdr_encode(const struct virtio_vsock_hdr *h, uint8_t raw[VIRTIO_VSOCK_HDR_SIZE])
{
	put_le64(raw + VIRTIO_VSOCK_HDR_SRC_CID, h->src_cid);
	put_le64(raw + VIRTIO_VSOCK_HDR_DST_CID, h->dst_cid);
	put_le32(raw + VIRTIO_VSOCK_HDR_SRC_PORT, h->src_port);
	put_le32(raw + VIRTIO_VSOCK_HDR_DST_PORT, h->dst_port);
	put_le32(raw + VIRTIO_VSOCK_HDR_LEN, h->len);
	put_le16(raw + VIRTIO_VSOCK_HDR_TYPE, h->type);
	put_le16(raw + VIRTIO_VSOCK_HDR_OP, h->op);
	put_le32(raw + VIRTIO_VSOCK_HDR_FLAGS, h->flags);
	put_le32(raw + VIRTIO_VSOCK_HDR_BUF_ALLOC, h->buf_alloc);
	put_le32(raw + VIRTIO_VSOCK_HDR_FWD_CNT, h->fwd_cnt);
}

/*
 * I/O vectors for bytes [off, off+len) of the chain's readable
 * (writable=false) or writable stream. Returns how many, or -1 if the
 * stream is shorter (callers check lengths first).
 */
static int chain_iov(const struct virtq_chain *c, bool writable, uint64_t off, uint64_t len,
		     struct iovec *iov)
{
	int n = 0;

	for (int i = 0; i < c->nr_segs && len; i++) {
		const struct virtq_seg *s = &c->segs[i];
		uint64_t take;

		if (s->device_writable != writable)
			continue;
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		take = s->len - off < len ? s->len - off : len;
		iov[n++] = (struct iovec){.iov_base = s->hva + off, .iov_len = (size_t)take};
		off = 0;
		len -= take;
	}
	return len ? -1 : n;
}

/* Copies between a local buffer and the chain's stream; the range has been checked. */
static void chain_copy(struct virtio_vsock *vs, const struct virtq_chain *c, bool writable,
		       uint64_t off, void *buf, uint32_t len)
{
	int n = chain_iov(c, writable, off, len, vs->iov);
	uint8_t *p = buf;

	for (int i = 0; i < n; i++) {
		if (writable)
			memcpy(vs->iov[i].iov_base, p, vs->iov[i].iov_len);
		else
			memcpy(p, vs->iov[i].iov_base, vs->iov[i].iov_len);
		p += vs->iov[i].iov_len;
	}
}

static bool queue_live(const struct virtio_mmio *t, uint32_t q)
{
	uint32_t status = t->state.status;

	return (status & VIRTIO_STATUS_DRIVER_OK) &&
	       !(status & (VIRTIO_STATUS_DEVICE_NEEDS_RESET | VIRTIO_STATUS_FAILED)) &&
	       t->state.queues[q].ready;
}

/* ---- output buffer ---- */

static int outbuf_reserve(struct outbuf *b, uint32_t extra)
{
	uint32_t need = b->len + extra, cap = b->cap ? b->cap : 4096;
	uint8_t *data;
	uint32_t first;

	if (need <= b->cap)
		return 0;
	if (need > VSOCK_OUTBUF_MAX)
		return -ENOBUFS;
	while (cap < need)
		cap *= 2;
	if (cap > VSOCK_OUTBUF_MAX)
		cap = VSOCK_OUTBUF_MAX;
	data = malloc(cap);
	if (!data)
		return -ENOMEM;
	first = min_u32(b->len, b->cap - b->head);
	if (b->len) {
		memcpy(data, b->data + b->head, first);
		memcpy(data + first, b->data, b->len - first);
	}
	free(b->data);
	b->data = data;
	b->cap = cap;
	b->head = 0;
	return 0;
}

static void outbuf_put(struct outbuf *b, const void *src, uint32_t n)
{
	uint32_t tail = (b->head + b->len) % b->cap;
	uint32_t first = min_u32(n, b->cap - tail);

	memcpy(b->data + tail, src, first);
	memcpy(b->data, (const uint8_t *)src + first, n - first);
	b->len += n;
}

static int outbuf_iov(const struct outbuf *b, struct iovec iov[2])
{
	uint32_t first = min_u32(b->len, b->cap - b->head);

	iov[0] = (struct iovec){.iov_base = b->data + b->head, .iov_len = first};
	if (first == b->len)
		return 1;
	iov[1] = (struct iovec){.iov_base = b->data, .iov_len = b->len - first};
	return 2;
}

static void outbuf_consume(struct outbuf *b, uint32_t n)
{
	b->head = (b->head + n) % b->cap;
	b->len -= n;
	if (!b->len) {
		/* An idle connection keeps no buffer. */
		free(b->data);
		*b = (struct outbuf){0};
	}
}

/* ---- connection table ---- */

static uint32_t hash_key(uint32_t local_port, uint32_t peer_port)
{
	return ((local_port * 2654435761u) ^ (peer_port * 40503u)) % VSOCK_HASH_SIZE;
}

static struct vsock_conn *conn_lookup(struct virtio_vsock *vs, uint32_t local_port,
				      uint32_t peer_port)
{
	struct vsock_conn *c = vs->hash[hash_key(local_port, peer_port)];

	while (c && (c->local_port != local_port || c->peer_port != peer_port))
		c = c->hash_next;
	return c;
}

static void hash_insert(struct virtio_vsock *vs, struct vsock_conn *c)
{
	uint32_t b = hash_key(c->local_port, c->peer_port);

	c->hash_next = vs->hash[b];
	vs->hash[b] = c;
}

static void hash_remove(struct virtio_vsock *vs, struct vsock_conn *c)
{
	struct vsock_conn **p = &vs->hash[hash_key(c->local_port, c->peer_port)];

	while (*p && *p != c)
		p = &(*p)->hash_next;
	if (*p)
		*p = c->hash_next;
}

static void work_add(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (c->on_work_list)
		return;
	c->work_next = NULL;
	c->work_prev = vs->work_tail;
	if (vs->work_tail)
		vs->work_tail->work_next = c;
	else
		vs->work_head = c;
	vs->work_tail = c;
	c->on_work_list = true;
}

static void work_remove(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (!c->on_work_list)
		return;
	if (c->work_prev)
		c->work_prev->work_next = c->work_next;
	else
		vs->work_head = c->work_next;
	if (c->work_next)
		c->work_next->work_prev = c->work_prev;
	else
		vs->work_tail = c->work_prev;
	c->on_work_list = false;
}

static uint64_t conn_tag(const struct vsock_conn *c)
{
	return TAG_CONN | ((uint64_t)c->slot << 8) | ((uint64_t)c->gen << 32);
}

static void timer_update(struct virtio_vsock *vs)
{
	bool want = vs->nr_handshaking > 0 || vs->listen_paused;
	uint32_t tick = vs->handshake_timeout_ms / 5;
	struct itimerspec its = {0};

	if (want == vs->timer_armed)
		return;
	if (tick < 10)
		tick = 10;
	if (want) {
		its.it_interval.tv_sec = tick / 1000;
		its.it_interval.tv_nsec = (long)(tick % 1000) * 1000000L;
		its.it_value = its.it_interval;
	}
	if (timerfd_settime(vs->timer_fd, 0, &its, NULL) == 0)
		vs->timer_armed = want;
}

static void listener_set_paused(struct virtio_vsock *vs, bool paused)
{
	struct epoll_event ev = {.events = paused ? 0 : EPOLLIN, .data.u64 = TAG_LISTENER};

	if (vs->listen_paused == paused)
		return;
	if (epoll_ctl(vs->epoll_fd, EPOLL_CTL_MOD, vs->listen_fd, &ev) == 0)
		vs->listen_paused = paused;
	timer_update(vs);
}

static void conn_set_state(struct virtio_vsock *vs, struct vsock_conn *c, enum conn_state state)
{
	if (c->state != CONN_ESTABLISHED && state == CONN_ESTABLISHED)
		vs->nr_handshaking--;
	c->state = state;
	if (state != CONN_ESTABLISHED)
		c->deadline_ms = now_ms() + vs->handshake_timeout_ms;
	timer_update(vs);
}

/* A new connection on fd (which it owns from now on, also on failure). */
static struct vsock_conn *conn_new(struct virtio_vsock *vs, int fd, enum conn_state state)
{
	struct epoll_event ev;
	struct vsock_conn *c;
	int slot;

	for (slot = 0; slot < VSOCK_MAX_CONNS && vs->slots[slot]; slot++)
		;
	c = slot < VSOCK_MAX_CONNS ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		close(fd);
		return NULL;
	}
	c->fd = fd;
	c->slot = slot;
	c->gen = ++vs->next_gen;
	c->state = state;
	c->epoll_events = state == CONN_AWAIT_CONNECT ? EPOLLIN : 0;
	ev = (struct epoll_event){.events = c->epoll_events, .data.u64 = conn_tag(c)};
	if (epoll_ctl(vs->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		free(c);
		return NULL;
	}
	c->in_epoll = true;
	vs->slots[slot] = c;
	vs->nr_conns++;
	if (state != CONN_ESTABLISHED) {
		vs->nr_handshaking++;
		c->deadline_ms = now_ms() + vs->handshake_timeout_ms;
		timer_update(vs);
	}
	return c;
}

/* Forgets a connection: its Unix socket closes (the host peer sees EOF), the guest is not told. */
static void conn_free(struct virtio_vsock *vs, struct vsock_conn *c)
{
	hash_remove(vs, c);
	work_remove(vs, c);
	if (c->in_epoll)
		epoll_ctl(vs->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	if (c->state != CONN_ESTABLISHED)
		vs->nr_handshaking--;
	vs->slots[c->slot] = NULL;
	vs->nr_conns--;
	free(c->out.data);
	free(c);
	timer_update(vs);
	if (vs->listen_paused)
		listener_set_paused(vs, false);
}

static void rst_enqueue(struct virtio_vsock *vs, uint32_t local_port, uint32_t peer_port)
{
	if (vs->rst_len == VSOCK_RST_QUEUE_LEN) {
		/* Only a guest that sends junk without taking rx buffers gets here. */
		vs->stats.rst_dropped++;
		return;
	}
	vs->rst_queue[(vs->rst_head + vs->rst_len) % VSOCK_RST_QUEUE_LEN] =
	    (struct rst_entry){.local_port = local_port, .peer_port = peer_port};
	vs->rst_len++;
}

/* Closes the connection and, if the guest knows it, tells the guest with an RST. */
static void conn_reset(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (c->guest_knows)
		rst_enqueue(vs, c->local_port, c->peer_port);
	conn_free(vs, c);
}

static void close_all(struct virtio_vsock *vs)
{
	for (int i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->slots[i])
			conn_free(vs, vs->slots[i]);
	vs->rst_len = 0;
}

/* ---- credit ---- */

static uint32_t peer_credit(const struct vsock_conn *c)
{
	uint32_t in_flight = c->tx_cnt - c->peer_fwd_cnt;

	/* A guest reporting more forwarded than we sent gets nothing rather than a wrap. */
	return in_flight > c->peer_buf_alloc ? 0 : c->peer_buf_alloc - in_flight;
}

static bool conn_wants_host_data(const struct vsock_conn *c)
{
	return c->state == CONN_ESTABLISHED && !c->host_eof &&
	       !(c->guest_shutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) && peer_credit(c) > 0;
}

/* The guest learns our fwd_cnt from every packet; send one if its view of our space is low. */
static void conn_check_credit(struct vsock_conn *c)
{
	uint32_t unseen = c->rx_cnt - c->last_fwd_cnt_sent;
	uint32_t guest_view = unseen >= VSOCK_CONN_BUF_ALLOC ? 0 : VSOCK_CONN_BUF_ALLOC - unseen;

	if (c->state == CONN_ESTABLISHED && !(c->guest_shutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) &&
	    c->fwd_cnt != c->last_fwd_cnt_sent && guest_view < VSOCK_CREDIT_UPDATE_LOW)
		c->pending |= PEND_CREDIT_UPDATE;
}

/* Brings the work list membership and the epoll interest in line with the state. */
static void conn_update(struct virtio_vsock *vs, struct vsock_conn *c)
{
	bool data = conn_wants_host_data(c);
	uint32_t ev = 0;

	if (c->pending || (data && c->host_readable))
		work_add(vs, c);
	else
		work_remove(vs, c);
	if (!c->in_epoll)
		return;
	if (c->state == CONN_AWAIT_CONNECT) {
		ev = EPOLLIN;
	} else if (c->state == CONN_ESTABLISHED) {
		if (data && !c->host_readable)
			ev |= EPOLLIN;
		if (c->out.len)
			ev |= EPOLLOUT;
	}
	if (ev != c->epoll_events) {
		struct epoll_event e = {.events = ev, .data.u64 = conn_tag(c)};
		if (epoll_ctl(vs->epoll_fd, EPOLL_CTL_MOD, c->fd, &e) == 0)
			c->epoll_events = ev;
	}
}

/* ---- guest -> host data ---- */

/* After the output buffer drained: pass on the guest's SHUTDOWN. Returns -1 if c was freed. */
static int conn_after_drain(struct virtio_vsock *vs, struct vsock_conn *c)
{
	if (!c->out.len) {
		if ((c->guest_shutdown & VIRTIO_VSOCK_SHUTDOWN_SEND) && !c->wr_shut) {
			shutdown(c->fd, SHUT_WR);
			c->wr_shut = true;
		}
		/* The guest closed both ways and everything it sent is delivered: finish with RST.
		 */
		if (c->guest_shutdown == (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND)) {
			conn_reset(vs, c);
			return -1;
		}
	}
	conn_check_credit(c);
	conn_update(vs, c);
	return 0;
}

/* Writes buffered output to the Unix socket. Returns -1 if c was freed. */
static int conn_flush(struct virtio_vsock *vs, struct vsock_conn *c)
{
	struct iovec iov[2];

	while (c->out.len) {
		struct msghdr m = {.msg_iov = iov};
		ssize_t n;
		uint32_t ours;

		m.msg_iovlen = (size_t)outbuf_iov(&c->out, iov);
		n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (n <= 0) {
			conn_reset(vs, c);
			return -1;
		}
		ours = min_u32((uint32_t)n, c->out_prefix);
		c->out_prefix -= ours;
		c->fwd_cnt += (uint32_t)n - ours;
		outbuf_consume(&c->out, (uint32_t)n);
	}
	return conn_after_drain(vs, c);
}

/* An RW packet's payload [HDR, HDR+len) of the chain goes to the Unix socket. */
static void conn_take_data(struct virtio_vsock *vs, struct vsock_conn *c,
			   const struct virtq_chain *ch, uint32_t len)
{
	uint32_t sent = 0;

	c->rx_cnt += len;
	if (!c->out.len) {
		struct msghdr m = {.msg_iov = vs->iov};
		int n_iov = chain_iov(ch, false, VIRTIO_VSOCK_HDR_SIZE, len, vs->iov);
		ssize_t n;

		m.msg_iovlen = (size_t)(n_iov > 0 ? n_iov : 0);
		do
			n = sendmsg(c->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
		while (n < 0 && errno == EINTR);
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
			conn_reset(vs, c);
			return;
		}
		sent = n > 0 ? (uint32_t)n : 0;
		c->fwd_cnt += sent;
	}
	if (sent < len) {
		uint32_t rest = len - sent, off = VIRTIO_VSOCK_HDR_SIZE + sent;
		int n_iov;

		if (outbuf_reserve(&c->out, rest) < 0) {
			conn_reset(vs, c);
			return;
		}
		n_iov = chain_iov(ch, false, off, rest, vs->iov);
		for (int i = 0; i < n_iov; i++)
			outbuf_put(&c->out, vs->iov[i].iov_base, (uint32_t)vs->iov[i].iov_len);
	}
	conn_check_credit(c);
	conn_update(vs, c);
}

/* ---- guest packets (tx queue) ---- */

/* A guest mistake the device survives: counted and kept by the transport. */
#define vsock_error(vs, fmt, ...)                                                                  \
	virtio_mmio_record_error((vs)->t, "virtio-vsock: " fmt, ##__VA_ARGS__)

/*
 * A malformed tx packet: counted, and if its header names a connection
 * (its ports), that connection is reset and the guest gets an RST.
 */
static void malformed(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h, const char *fmt,
		      ...) __attribute__((format(printf, 3, 4)));

static void malformed(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h, const char *fmt,
		      ...)
{
	char why[128];
	struct vsock_conn *c;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	vs->stats.malformed++;
	virtio_mmio_record_error(vs->t, "virtio-vsock: tx packet at head %u: %s", vs->chain.head,
				 why);
	if (!h || h->op == VIRTIO_VSOCK_OP_RST)
		return;
	c = conn_lookup(vs, h->dst_port, h->src_port);
	if (c && c->guest_knows)
		conn_reset(vs, c);
	else
		rst_enqueue(vs, h->dst_port, h->src_port);
}

/* A guest connect to host port h->dst_port: forwarded to the Unix socket "<path>_<port>". */
static void guest_connect(struct virtio_vsock *vs, const struct virtio_vsock_hdr *h)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct vsock_conn *c = conn_lookup(vs, h->dst_port, h->src_port);
	int n, fd;

	if (c) {
		/* The guest reuses a live port pair: neither side can trust the old stream. */
		vsock_error(vs, "REQUEST for the existing connection %u -> %u", h->src_port,
			    h->dst_port);
		conn_free(vs, c);
		goto refuse;
	}
	if (vs->nr_conns >= VSOCK_MAX_CONNS) {
		vs->stats.refused++;
		goto refuse;
	}
	n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s_%u", vs->path, h->dst_port);
	if (n < 0 || (size_t)n >= sizeof(addr.sun_path))
		goto refuse;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto refuse;
	/* A Unix connect completes at once or fails (EAGAIN: the listener's backlog is full). */
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		goto refuse;
	}
	c = conn_new(vs, fd, CONN_ESTABLISHED);
	if (!c)
		goto refuse;
	c->local_port = h->dst_port;
	c->peer_port = h->src_port;
	c->guest_knows = true;
	c->peer_buf_alloc = h->buf_alloc;
	c->peer_fwd_cnt = h->fwd_cnt;
	c->pending |= PEND_RESPONSE;
	hash_insert(vs, c);
	conn_update(vs, c);
	return;
refuse:
	rst_enqueue(vs, h->dst_port, h->src_port);
}

static void guest_response(struct virtio_vsock *vs, struct vsock_conn *c)
{
	char line[VSOCK_CONNECT_LINE_MAX];
	int n;

	if (c->state != CONN_CONNECTING || !c->guest_knows) {
		vsock_error(vs, "RESPONSE on connection %u -> %u, which is not connecting",
			    c->peer_port, c->local_port);
		conn_reset(vs, c);
		return;
	}
	conn_set_state(vs, c, CONN_ESTABLISHED);
	n = snprintf(line, sizeof(line), "OK %u\n", c->local_port);
	if (outbuf_reserve(&c->out, (uint32_t)n) < 0) {
		conn_reset(vs, c);
		return;
	}
	outbuf_put(&c->out, line, (uint32_t)n);
	c->out_prefix = (uint32_t)n;
	conn_flush(vs, c);
}

static void guest_rw(struct virtio_vsock *vs, struct vsock_conn *c,
		     const struct virtio_vsock_hdr *h)
{
	uint32_t in_flight = c->rx_cnt - c->fwd_cnt;

	if (c->state != CONN_ESTABLISHED || (c->guest_shutdown & VIRTIO_VSOCK_SHUTDOWN_SEND)) {
		vsock_error(
		    vs, "data on connection %u -> %u, which is %s", c->peer_port, c->local_port,
		    c->state != CONN_ESTABLISHED ? "not established" : "shut down for sending");
		conn_reset(vs, c);
		return;
	}
	if (c->host_hup) {
		/* The host peer is gone; the guest learns it the way TCP would. */
		conn_reset(vs, c);
		return;
	}
	if (h->len > VSOCK_CONN_BUF_ALLOC - in_flight) {
		vsock_error(vs, "connection %u -> %u: %u bytes sent with %u bytes of credit",
			    c->peer_port, c->local_port, h->len, VSOCK_CONN_BUF_ALLOC - in_flight);
		conn_reset(vs, c);
		return;
	}
	if (h->len)
		conn_take_data(vs, c, &vs->chain, h->len);
}

static void guest_shutdown(struct virtio_vsock *vs, struct vsock_conn *c, uint32_t flags)
{
	if (c->state != CONN_ESTABLISHED) {
		vsock_error(vs, "SHUTDOWN on connection %u -> %u, which is not established",
			    c->peer_port, c->local_port);
		conn_reset(vs, c);
		return;
	}
	c->guest_shutdown |= flags & (VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
	if (c->host_hup) {
		/* The host side takes nothing more; what it left is still owed unless refused. */
		if (c->guest_shutdown & VIRTIO_VSOCK_SHUTDOWN_RCV)
			conn_reset(vs, c);
		else
			conn_update(vs, c);
		return;
	}
	conn_after_drain(vs, c);
}

/* Why the header is unacceptable, or NULL. */
static const char *check_hdr(const struct virtio_vsock *vs, const struct virtio_vsock_hdr *h,
			     uint64_t payload_bytes, char *why, size_t why_len)
{
	if (h->type != VIRTIO_VSOCK_TYPE_STREAM)
		snprintf(why, why_len, "type %u, expected %u (stream)", h->type,
			 VIRTIO_VSOCK_TYPE_STREAM);
	else if (h->src_cid != vs->guest_cid)
		snprintf(why, why_len, "src_cid %" PRIu64 " is not the guest's cid %" PRIu64,
			 h->src_cid, vs->guest_cid);
	else if (h->dst_cid != VIRTIO_VSOCK_HOST_CID)
		snprintf(why, why_len, "dst_cid %" PRIu64 ", expected %d (the host)", h->dst_cid,
			 VIRTIO_VSOCK_HOST_CID);
	else if (h->op < VIRTIO_VSOCK_OP_REQUEST || h->op > VIRTIO_VSOCK_OP_CREDIT_REQUEST)
		snprintf(why, why_len, "unknown op %u", h->op);
	else if (h->len > VSOCK_MAX_PKT_PAYLOAD)
		snprintf(why, why_len, "len %u exceeds the maximum packet payload %d", h->len,
			 VSOCK_MAX_PKT_PAYLOAD);
	else if (h->len > payload_bytes)
		snprintf(why, why_len, "len %u, but the chain holds %" PRIu64 " payload bytes",
			 h->len, payload_bytes);
	else
		return NULL;
	return why;
}

static void handle_tx(struct virtio_vsock *vs, const struct virtq_chain *ch)
{
	uint8_t raw[VIRTIO_VSOCK_HDR_SIZE];
	struct virtio_vsock_hdr h;
	struct vsock_conn *c;
	char why[128];

	vs->stats.tx_packets++;
	if (ch->readable_len < VIRTIO_VSOCK_HDR_SIZE) {
		malformed(vs, NULL, "%" PRIu64 " device-readable bytes, need a %d-byte header",
			  ch->readable_len, VIRTIO_VSOCK_HDR_SIZE);
		return;
	}
	/* One copy: the guest may rewrite the header while we look at it. */
	chain_copy(vs, ch, false, 0, raw, sizeof(raw));
	virtio_vsock_hdr_decode(raw, &h);
	if (check_hdr(vs, &h, ch->readable_len - VIRTIO_VSOCK_HDR_SIZE, why, sizeof(why))) {
		malformed(vs, &h, "%s", why);
		return;
	}
	if (h.op == VIRTIO_VSOCK_OP_REQUEST) {
		guest_connect(vs, &h);
		return;
	}
	c = conn_lookup(vs, h.dst_port, h.src_port);
	if (!c) {
		if (h.op != VIRTIO_VSOCK_OP_RST)
			rst_enqueue(vs, h.dst_port, h.src_port);
		return;
	}
	c->peer_buf_alloc = h.buf_alloc;
	c->peer_fwd_cnt = h.fwd_cnt;
	switch (h.op) {
	case VIRTIO_VSOCK_OP_RESPONSE:
		guest_response(vs, c);
		break;
	case VIRTIO_VSOCK_OP_RST:
		conn_free(vs, c);
		break;
	case VIRTIO_VSOCK_OP_SHUTDOWN:
		guest_shutdown(vs, c, h.flags);
		break;
	case VIRTIO_VSOCK_OP_RW:
		guest_rw(vs, c, &h);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_REQUEST:
		c->pending |= PEND_CREDIT_UPDATE;
		conn_update(vs, c);
		break;
	case VIRTIO_VSOCK_OP_CREDIT_UPDATE:
	default:
		/* The new credit may let host data flow again. */
		conn_update(vs, c);
		break;
	}
}

static void process_tx(struct virtio_vsock *vs)
{
	struct virtio_mmio *t = vs->t;
	struct virtq *vq = &t->state.queues[VIRTIO_VSOCK_QUEUE_TX];
	bool pushed = false;
	struct fk_err err;
	int ret;

	if (!queue_live(t, VIRTIO_VSOCK_QUEUE_TX))
		return;
	for (;;) {
		ret = virtq_pop(t->mem, vq, &vs->chain, &err);
		if (ret < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			break;
		}
		if (ret == 0)
			break;
		handle_tx(vs, &vs->chain);
		if (virtq_push(t->mem, vq, vs->chain.head, 0, &err)) {
			virtio_mmio_set_needs_reset(t, err.msg);
			break;
		}
		pushed = true;
	}
	if (pushed)
		virtio_mmio_signal_used(t, VIRTIO_VSOCK_QUEUE_TX);
}

/* ---- packets for the guest (rx queue) ---- */

static uint32_t put_packet(struct virtio_vsock *vs, const struct virtq_chain *ch,
			   const struct virtio_vsock_hdr *h)
{
	uint8_t raw[VIRTIO_VSOCK_HDR_SIZE];

	virtio_vsock_hdr_encode(h, raw);
	chain_copy(vs, ch, true, 0, raw, sizeof(raw));
	if (h->op == VIRTIO_VSOCK_OP_RST)
		vs->stats.rst_sent++;
	return VIRTIO_VSOCK_HDR_SIZE + h->len;
}

static uint32_t put_queued_rst(struct virtio_vsock *vs, const struct virtq_chain *ch)
{
	struct rst_entry e = vs->rst_queue[vs->rst_head];
	struct virtio_vsock_hdr h = {
	    .src_cid = VIRTIO_VSOCK_HOST_CID,
	    .dst_cid = vs->guest_cid,
	    .src_port = e.local_port,
	    .dst_port = e.peer_port,
	    .type = VIRTIO_VSOCK_TYPE_STREAM,
	    .op = VIRTIO_VSOCK_OP_RST,
	};

	vs->rst_head = (vs->rst_head + 1) % VSOCK_RST_QUEUE_LEN;
	vs->rst_len--;
	return put_packet(vs, ch, &h);
}

/* Reads host data into the chain's writable stream after the header. Returns bytes or -errno. */
static ssize_t read_host(struct virtio_vsock *vs, struct vsock_conn *c,
			 const struct virtq_chain *ch, uint32_t max)
{
	struct msghdr m = {.msg_iov = vs->iov};
	int n_iov = chain_iov(ch, true, VIRTIO_VSOCK_HDR_SIZE, max, vs->iov);
	ssize_t n;

	m.msg_iovlen = (size_t)(n_iov > 0 ? n_iov : 0);
	do
		n = recvmsg(c->fd, &m, MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n < 0 ? -errno : n;
}

/*
 * The next packet connection c owes the guest, written into ch. Returns its
 * length, 0 if c has nothing to send, -1 if c was reset (an RST is queued).
 */
static int conn_fill(struct virtio_vsock *vs, struct vsock_conn *c, const struct virtq_chain *ch)
{
	uint32_t room = (uint32_t)(ch->writable_len - VIRTIO_VSOCK_HDR_SIZE < VSOCK_MAX_PKT_PAYLOAD
				       ? ch->writable_len - VIRTIO_VSOCK_HDR_SIZE
				       : VSOCK_MAX_PKT_PAYLOAD);
	struct virtio_vsock_hdr h = {
	    .src_cid = VIRTIO_VSOCK_HOST_CID,
	    .dst_cid = vs->guest_cid,
	    .src_port = c->local_port,
	    .dst_port = c->peer_port,
	    .type = VIRTIO_VSOCK_TYPE_STREAM,
	    .buf_alloc = VSOCK_CONN_BUF_ALLOC,
	};

	if (c->pending & PEND_REQUEST) {
		h.op = VIRTIO_VSOCK_OP_REQUEST;
		c->pending &= ~PEND_REQUEST;
		c->guest_knows = true;
		/* The guest's time to answer starts now, not when the client connected. */
		c->deadline_ms = now_ms() + vs->handshake_timeout_ms;
	} else if (c->pending & PEND_RESPONSE) {
		h.op = VIRTIO_VSOCK_OP_RESPONSE;
		c->pending &= ~PEND_RESPONSE;
	} else if (c->host_readable && conn_wants_host_data(c) && room == 0) {
		/* A buffer with room for a header only: spend it on credit news, do not stall. */
		h.op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
	} else if (c->host_readable && conn_wants_host_data(c)) {
		ssize_t n = read_host(vs, c, ch, min_u32(room, peer_credit(c)));

		if (n > 0) {
			h.op = VIRTIO_VSOCK_OP_RW;
			h.len = (uint32_t)n;
			c->tx_cnt += (uint32_t)n;
		} else if (n == 0) {
			c->host_readable = false;
			c->host_eof = true;
			c->shutdown_to_send |= VIRTIO_VSOCK_SHUTDOWN_SEND;
			if (c->host_hup)
				c->shutdown_to_send |= VIRTIO_VSOCK_SHUTDOWN_RCV;
			c->pending |= PEND_SHUTDOWN;
		} else if (n == -EAGAIN || n == -EWOULDBLOCK) {
			c->host_readable = false;
		} else {
			conn_reset(vs, c);
			return -1;
		}
	}
	if (!h.op) {
		if (c->pending & PEND_SHUTDOWN) {
			h.op = VIRTIO_VSOCK_OP_SHUTDOWN;
			h.flags = c->shutdown_to_send;
			c->pending &= ~PEND_SHUTDOWN;
		} else if (c->pending & PEND_CREDIT_UPDATE) {
			h.op = VIRTIO_VSOCK_OP_CREDIT_UPDATE;
		} else {
			return 0;
		}
	}
	/* Every packet carries our credit: nothing separate is owed any more. */
	h.fwd_cnt = c->fwd_cnt;
	c->last_fwd_cnt_sent = c->fwd_cnt;
	c->pending &= ~PEND_CREDIT_UPDATE;
	return (int)put_packet(vs, ch, &h);
}

/* Fills ch with the next packet owed to the guest; 0 if nothing is owed. */
static uint32_t fill_chain(struct virtio_vsock *vs, const struct virtq_chain *ch)
{
	/* Each round either returns, frees a connection or takes one off the list. */
	for (int round = 0; round <= 2 * VSOCK_MAX_CONNS + 1; round++) {
		struct vsock_conn *c;
		int r;

		if (vs->rst_len)
			return put_queued_rst(vs, ch);
		c = vs->work_head;
		if (!c)
			return 0;
		r = conn_fill(vs, c, ch);
		if (r < 0)
			continue;
		/* Round robin: back of the list if it still owes something. */
		work_remove(vs, c);
		if (r > 0) {
			conn_update(vs, c);
			return (uint32_t)r;
		}
		conn_update(vs, c);
		if (c->on_work_list)
			work_remove(vs, c); /* nothing came of it now; the next event requeues it */
	}
	return 0;
}

static void process_rx(struct virtio_vsock *vs)
{
	struct virtio_mmio *t = vs->t;
	struct virtq *vq = &t->state.queues[VIRTIO_VSOCK_QUEUE_RX];
	bool pushed = false;
	struct fk_err err;
	uint32_t len;
	int ret;

	if (!queue_live(t, VIRTIO_VSOCK_QUEUE_RX))
		return;
	while (vs->rst_len || vs->work_head) {
		ret = virtq_pop(t->mem, vq, &vs->chain, &err);
		if (ret < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			break;
		}
		if (ret == 0)
			break;
		if (vs->chain.writable_len < VIRTIO_VSOCK_HDR_SIZE) {
			vsock_error(
			    vs, "rx buffer at head %u: %" PRIu64 " device-writable bytes, need %d",
			    vs->chain.head, vs->chain.writable_len, VIRTIO_VSOCK_HDR_SIZE);
			len = 0;
		} else {
			len = fill_chain(vs, &vs->chain);
			if (!len) {
				/* Nothing to say after all: give the buffer back untouched. */
				vq->last_avail_idx--;
				break;
			}
			vs->stats.rx_packets++;
		}
		if (virtq_push(t->mem, vq, vs->chain.head, len, &err)) {
			virtio_mmio_set_needs_reset(t, err.msg);
			break;
		}
		pushed = true;
	}
	if (pushed)
		virtio_mmio_signal_used(t, VIRTIO_VSOCK_QUEUE_RX);
}

static void deliver_event(struct virtio_vsock *vs)
{
	struct virtio_mmio *t = vs->t;
	struct virtq *vq = &t->state.queues[VIRTIO_VSOCK_QUEUE_EVENT];
	struct fk_err err;
	uint8_t id[VIRTIO_VSOCK_EVENT_SIZE];
	uint32_t len;
	int ret;

	put_le32(id, VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	while (vs->reset_event_pending && queue_live(t, VIRTIO_VSOCK_QUEUE_EVENT)) {
		ret = virtq_pop(t->mem, vq, &vs->chain, &err);
		if (ret < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			return;
		}
		if (ret == 0)
			return;
		len = 0;
		if (vs->chain.writable_len < VIRTIO_VSOCK_EVENT_SIZE) {
			vsock_error(
			    vs,
			    "event buffer at head %u: %" PRIu64 " device-writable bytes, need %d",
			    vs->chain.head, vs->chain.writable_len, VIRTIO_VSOCK_EVENT_SIZE);
		} else {
			chain_copy(vs, &vs->chain, true, 0, id, sizeof(id));
			len = sizeof(id);
			vs->reset_event_pending = false;
			vs->stats.transport_resets++;
		}
		if (virtq_push(t->mem, vq, vs->chain.head, len, &err)) {
			virtio_mmio_set_needs_reset(t, err.msg);
			return;
		}
		virtio_mmio_signal_used(t, VIRTIO_VSOCK_QUEUE_EVENT);
	}
}

/* ---- host side: Unix sockets ---- */

/* "CONNECT <port>" with a decimal port of 1..10 digits that fits 32 bits. */
static bool parse_connect_line(const char *line, uint32_t len, uint32_t *port)
{
	static const char prefix[] = "CONNECT ";
	uint64_t v = 0;
	uint32_t i = sizeof(prefix) - 1;

	if (len <= i || len > i + 10 || memcmp(line, prefix, i) != 0)
		return false;
	for (; i < len; i++) {
		if (line[i] < '0' || line[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(line[i] - '0');
	}
	if (v > UINT32_MAX)
		return false;
	*port = (uint32_t)v;
	return true;
}

static uint32_t alloc_host_port(struct virtio_vsock *vs, uint32_t peer_port)
{
	for (;;) {
		uint32_t p = vs->next_host_port++;

		if (vs->next_host_port < VSOCK_FIRST_HOST_PORT)
			vs->next_host_port = VSOCK_FIRST_HOST_PORT;
		/* At most VSOCK_MAX_CONNS ports are taken: this ends. */
		if (!conn_lookup(vs, p, peer_port))
			return p;
	}
}

/*
 * Reads the client's CONNECT line a byte at a time, so that data the client
 * sends right after it stays in the socket for the guest.
 */
static void read_connect_line(struct virtio_vsock *vs, struct vsock_conn *c)
{
	uint32_t port;

	for (;;) {
		char ch;
		ssize_t n = recv(c->fd, &ch, 1, MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_free(vs, c); /* gone before saying what it wanted */
			return;
		}
		if (ch == '\n')
			break;
		if (c->line_len == sizeof(c->line) - 1) {
			vs->stats.bad_connect_lines++;
			conn_free(vs, c);
			return;
		}
		c->line[c->line_len++] = ch;
	}
	if (!parse_connect_line(c->line, c->line_len, &port)) {
		vs->stats.bad_connect_lines++;
		conn_free(vs, c);
		return;
	}
	c->peer_port = port;
	c->local_port = alloc_host_port(vs, port);
	c->pending |= PEND_REQUEST;
	hash_insert(vs, c);
	conn_set_state(vs, c, CONN_CONNECTING);
	conn_update(vs, c);
}

static void accept_clients(struct virtio_vsock *vs)
{
	for (int i = 0; i < VSOCK_ACCEPT_BATCH; i++) {
		int fd = accept4(vs->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			/* Out of descriptors: stop listening for a tick rather than spin. */
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM)
				listener_set_paused(vs, true);
			return;
		}
		if (vs->nr_conns >= VSOCK_MAX_CONNS) {
			vs->stats.refused++;
			close(fd);
			continue;
		}
		conn_new(vs, fd, CONN_AWAIT_CONNECT);
	}
}

/* The Unix peer closed both directions: deliver what it left, then SHUTDOWN the guest side. */
static void conn_host_hup(struct virtio_vsock *vs, struct vsock_conn *c)
{
	c->host_hup = true;
	/* HUP is reported whatever we ask for: leave the set or the loop would spin. */
	if (c->in_epoll) {
		epoll_ctl(vs->epoll_fd, EPOLL_CTL_DEL, c->fd, NULL);
		c->in_epoll = false;
	}
	if (c->out.len)
		outbuf_consume(&c->out, c->out.len); /* nobody will read it */
	c->out_prefix = 0;
	if (c->guest_shutdown & VIRTIO_VSOCK_SHUTDOWN_RCV) {
		/* Neither side will take anything more. */
		conn_reset(vs, c);
		return;
	}
	if (c->host_eof) {
		c->shutdown_to_send |= VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND;
		c->pending |= PEND_SHUTDOWN;
	} else {
		c->host_readable = true; /* data, then EOF, are still to be read */
	}
	conn_update(vs, c);
}

static void on_conn_event(struct virtio_vsock *vs, struct vsock_conn *c, uint32_t events)
{
	if (events & EPOLLERR) {
		conn_reset(vs, c);
		return;
	}
	switch (c->state) {
	case CONN_AWAIT_CONNECT:
		read_connect_line(vs, c);
		return;
	case CONN_CONNECTING:
		/* Only HUP is watched here: the client left before the guest answered. */
		if (events & EPOLLHUP)
			conn_reset(vs, c);
		return;
	case CONN_ESTABLISHED:
		break;
	}
	if ((events & EPOLLOUT) && conn_flush(vs, c) < 0)
		return;
	if (events & EPOLLHUP) {
		conn_host_hup(vs, c);
		return;
	}
	if (events & EPOLLIN)
		c->host_readable = true;
	conn_update(vs, c);
}

static void on_timer(struct virtio_vsock *vs)
{
	uint64_t ticks, now = now_ms();

	if (read(vs->timer_fd, &ticks, sizeof(ticks)) < 0) {
	}
	if (vs->listen_paused)
		listener_set_paused(vs, false);
	for (int i = 0; i < VSOCK_MAX_CONNS && vs->nr_handshaking; i++) {
		struct vsock_conn *c = vs->slots[i];

		if (c && c->state != CONN_ESTABLISHED && now >= c->deadline_ms) {
			vs->stats.handshake_timeouts++;
			conn_reset(vs, c);
		}
	}
}

int virtio_vsock_process_events(struct virtio_vsock *vs, int timeout_ms)
{
	struct epoll_event evs[VSOCK_EPOLL_BATCH];
	int n;

	do
		n = epoll_wait(vs->epoll_fd, evs, VSOCK_EPOLL_BATCH, timeout_ms);
	while (n < 0 && errno == EINTR);
	for (int i = 0; i < n; i++) {
		uint64_t tag = evs[i].data.u64;
		uint32_t kind = (uint32_t)(tag & 0xff);

		if (kind == TAG_NOTIFY) {
			uint32_t q = (uint32_t)((tag >> 8) & 0xff);
			uint64_t v;
			/* Outside our lock: the transport takes it and calls back into us. */
			if (read(vs->notify_fds[q], &v, sizeof(v)) == sizeof(v))
				virtio_mmio_notify(vs->t, q);
			continue;
		}
		pthread_mutex_lock(&vs->t->lock);
		if (kind == TAG_LISTENER) {
			accept_clients(vs);
		} else if (kind == TAG_TIMER) {
			on_timer(vs);
		} else if (kind == TAG_CONN) {
			uint32_t slot = (uint32_t)((tag >> 8) & 0xffff);
			struct vsock_conn *c = slot < VSOCK_MAX_CONNS ? vs->slots[slot] : NULL;
			/* A connection freed earlier in this batch may have handed its slot on. */
			if (c && c->gen == (uint32_t)(tag >> 32))
				on_conn_event(vs, c, evs[i].events);
		}
		process_rx(vs);
		pthread_mutex_unlock(&vs->t->lock);
	}
	return n > 0 ? n : 0;
}

/* ---- transport ops ---- */

static void vsock_config_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct virtio_vsock *vs = dev;

	memcpy(data, vs->config + offset, len);
}

static void vsock_queue_notify(struct virtio_mmio *t, void *dev, uint32_t q)
{
	struct virtio_vsock *vs = dev;

	(void)t;
	if (q == VIRTIO_VSOCK_QUEUE_TX)
		process_tx(vs);
	else if (q == VIRTIO_VSOCK_QUEUE_EVENT)
		deliver_event(vs);
	/* New rx buffers, or tx packets that owe answers. */
	process_rx(vs);
}

static void vsock_reset(void *dev)
{
	struct virtio_vsock *vs = dev;

	/* The driver is starting over: its sockets are gone, it needs no reset event. */
	close_all(vs);
	vs->reset_event_pending = false;
}

const struct virtio_dev_ops virtio_vsock_ops = {
    .name = "virtio-vsock",
    .device_id = VIRTIO_ID_VSOCK,
    .num_queues = VIRTIO_VSOCK_NR_QUEUES,
    .queue_max_size = VIRTIO_VSOCK_QUEUE_SIZE,
    .features = NULL, /* VERSION_1 only: stream sockets are implied without F_STREAM */
    .config_size = VIRTIO_VSOCK_CONFIG_SIZE,
    .config_read = vsock_config_read,
    .queue_notify = vsock_queue_notify,
    .reset = vsock_reset,
};

/* ---- setup ---- */

/* Returns 0 if nothing is at `path` (any more), or -errno with err set. */
static int check_directory(const char *path, struct fk_err *err)
{
	char copy[VSOCK_PATH_MAX];
	struct stat st;
	const char *dir;

	memcpy(copy, path, strlen(path) + 1);
	dir = dirname(copy);
	if (stat(dir, &st) < 0)
		return fk_fail_errno(err, errno, "vsock socket %s: directory %s", path, dir);
	if (!S_ISDIR(st.st_mode))
		return fk_fail(err, ENOTDIR, "vsock socket %s: %s is not a directory", path, dir);
	return 0;
}

/*
 * Up to VSOCK_MAX_CONNS sockets plus the VMM's own descriptors must fit
 * the process's descriptor limit; raising the soft limit (process-wide)
 * is what a server with many clients does. Failure is not fatal: accept
 * then pauses when descriptors run out.
 */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	rlim_t want = VSOCK_MAX_CONNS + VSOCK_FD_HEADROOM;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= want)
		return;
	rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
	setrlimit(RLIMIT_NOFILE, &rl);
}

static int listen_on(struct virtio_vsock *vs, struct fk_err *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;
	int ret;

	ret = check_directory(vs->path, err);
	if (ret < 0)
		return ret;
	ret = unix_socket_clear_stale("vsock socket", vs->path, err);
	if (ret < 0)
		return ret;
	memcpy(addr.sun_path, vs->path, strlen(vs->path) + 1);
	vs->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (vs->listen_fd < 0)
		return fk_fail_errno(err, errno, "vsock socket %s: socket", vs->path);
	if (bind(vs->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0)
		return fk_fail_errno(err, errno, "vsock socket %s: bind", vs->path);
	if (stat(vs->path, &st) < 0) {
		ret = fk_fail_errno(err, errno, "vsock socket %s: stat after bind", vs->path);
		goto fail_unlink;
	}
	vs->sock_dev = st.st_dev;
	vs->sock_ino = st.st_ino;
	if (listen(vs->listen_fd, VSOCK_LISTEN_BACKLOG) < 0) {
		ret = fk_fail_errno(err, errno, "vsock socket %s: listen", vs->path);
		goto fail_unlink;
	}
	return 0;
fail_unlink:
	unlink(vs->path);
	vs->sock_ino = 0;
	return ret;
}

static int epoll_watch(struct virtio_vsock *vs, int fd, uint64_t tag, struct fk_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = tag};

	if (epoll_ctl(vs->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0)
		return fk_fail_errno(err, errno, "vsock socket %s: epoll", vs->path);
	return 0;
}

int virtio_vsock_open(struct virtio_vsock **out, const char *path, uint64_t guest_cid,
		      struct fk_err *err)
{
	struct virtio_vsock *vs;
	size_t len = path ? strlen(path) : 0;
	int ret;

	*out = NULL;
	if (len == 0 || len >= VSOCK_PATH_MAX)
		return fk_fail(err, ENAMETOOLONG,
			       "vsock socket '%s': expected a path of 1 to %d bytes",
			       path ? path : "", VSOCK_PATH_MAX - 1);
	if (guest_cid < VIRTIO_VSOCK_MIN_CID || guest_cid > VIRTIO_VSOCK_MAX_CID)
		return fk_fail(err, EINVAL, "vsock cid %" PRIu64 ": expected %d..%llu", guest_cid,
			       VIRTIO_VSOCK_MIN_CID, VIRTIO_VSOCK_MAX_CID);
	vs = calloc(1, sizeof(*vs));
	if (!vs)
		return fk_fail(err, ENOMEM, "vsock socket %s: out of memory", path);
	vs->listen_fd = vs->epoll_fd = vs->timer_fd = -1;
	for (int q = 0; q < VIRTIO_VSOCK_NR_QUEUES; q++)
		vs->notify_fds[q] = -1;
	memcpy(vs->path, path, len + 1);
	vs->guest_cid = guest_cid;
	put_le64(vs->config, guest_cid);
	vs->handshake_timeout_ms = VSOCK_HANDSHAKE_TIMEOUT_MS;
	vs->next_host_port = VSOCK_FIRST_HOST_PORT;
	raise_fd_limit();

	ret = listen_on(vs, err);
	if (ret < 0)
		goto fail;
	vs->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (vs->epoll_fd < 0) {
		ret = fk_fail_errno(err, errno, "vsock socket %s: epoll_create1", path);
		goto fail;
	}
	vs->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (vs->timer_fd < 0) {
		ret = fk_fail_errno(err, errno, "vsock socket %s: timerfd_create", path);
		goto fail;
	}
	ret = epoll_watch(vs, vs->listen_fd, TAG_LISTENER, err);
	if (!ret)
		ret = epoll_watch(vs, vs->timer_fd, TAG_TIMER, err);
	if (ret < 0)
		goto fail;
	*out = vs;
	return 0;
fail:
	virtio_vsock_close(vs);
	return ret;
}

void virtio_vsock_close(struct virtio_vsock *vs)
{
	struct stat st;

	if (!vs)
		return;
	close_all(vs);
	if (vs->listen_fd >= 0) {
		close(vs->listen_fd);
		/* Only our own socket file: someone may have replaced it since. */
		if (vs->sock_ino && lstat(vs->path, &st) == 0 && st.st_dev == vs->sock_dev &&
		    st.st_ino == vs->sock_ino)
			unlink(vs->path);
	}
	if (vs->epoll_fd >= 0)
		close(vs->epoll_fd);
	if (vs->timer_fd >= 0)
		close(vs->timer_fd);
	for (int q = 0; q < VIRTIO_VSOCK_NR_QUEUES; q++)
		if (vs->notify_fds[q] >= 0)
			close(vs->notify_fds[q]);
	free(vs);
}

void virtio_vsock_attach(struct virtio_vsock *vs, struct virtio_mmio *t)
{
	vs->t = t;
}

int virtio_vsock_epoll_fd(const struct virtio_vsock *vs)
{
	return vs->epoll_fd;
}

int virtio_vsock_watch_notify(struct virtio_vsock *vs, uint32_t q, int fd, struct fk_err *err)
{
	if (q >= VIRTIO_VSOCK_NR_QUEUES || vs->notify_fds[q] >= 0) {
		close(fd);
		return fk_fail(err, EINVAL, "vsock socket %s: notify fd for queue %u", vs->path, q);
	}
	vs->notify_fds[q] = fd;
	return epoll_watch(vs, fd, TAG_NOTIFY | ((uint64_t)q << 8), err);
}

void virtio_vsock_set_handshake_timeout(struct virtio_vsock *vs, uint32_t ms)
{
	vs->handshake_timeout_ms = ms ? ms : VSOCK_HANDSHAKE_TIMEOUT_MS;
}

uint64_t virtio_vsock_guest_cid(const struct virtio_vsock *vs)
{
	return vs->guest_cid;
}

const char *virtio_vsock_path(const struct virtio_vsock *vs)
{
	return vs->path;
}

uint32_t virtio_vsock_next_host_port(struct virtio_vsock *vs)
{
	uint32_t p;

	pthread_mutex_lock(&vs->t->lock);
	p = vs->next_host_port;
	pthread_mutex_unlock(&vs->t->lock);
	return p;
}

void virtio_vsock_restored(struct virtio_vsock *vs, uint32_t next_host_port)
{
	pthread_mutex_lock(&vs->t->lock);
	close_all(vs);
	vs->reset_event_pending = true;
	vs->next_host_port =
	    next_host_port < VSOCK_FIRST_HOST_PORT ? VSOCK_FIRST_HOST_PORT : next_host_port;
	pthread_mutex_unlock(&vs->t->lock);
}

void virtio_vsock_kick(struct virtio_vsock *vs)
{
	pthread_mutex_lock(&vs->t->lock);
	deliver_event(vs);
	process_tx(vs);
	process_rx(vs);
	pthread_mutex_unlock(&vs->t->lock);
}

void virtio_vsock_get_stats(struct virtio_vsock *vs, struct virtio_vsock_stats *stats)
{
	if (vs->t)
		pthread_mutex_lock(&vs->t->lock);
	*stats = vs->stats;
	stats->connections = vs->nr_conns;
	stats->buffered_bytes = 0;
	for (int i = 0; i < VSOCK_MAX_CONNS; i++)
		if (vs->slots[i])
			stats->buffered_bytes += vs->slots[i]->out.len;
	if (vs->t)
		pthread_mutex_unlock(&vs->t->lock);
}
