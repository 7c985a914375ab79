/* SPDX-License-Identifier: MIT */
/*
 * virtio-vsock driven like the Linux driver would drive it, with real Unix
 * sockets in a temp directory on the host side: the CONNECT handshake,
 * guest-initiated connects, data and credit both ways, half-close, every
 * malformed packet the device must survive, the memory bound against a host
 * peer that never reads, and the transport reset after a restore.
 */
#include "virtio_guest.h"

#include "devices/virtio_vsock.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>

#define QNUM		64
#define GUEST_CID	3
#define GUEST_PORT	52
#define NR_RX_BUFS	16
#define RX_PAYLOAD	4096
#define RX_BUF_GPA	0x100000ULL /* RX_BUF_STRIDE apart */
#define RX_BUF_STRIDE	0x2000ULL
#define TX_GPA		0x40000ULL /* header, then payload: up to 0x60000 */
#define TX_GPA2		0x70000ULL /* a second buffer for split chains */
#define EV_GPA		0x60000ULL
#define GUEST_BUF_ALLOC (256 * 1024)
#define ANY_PORT	UINT32_MAX /* expect_packet: the host picks this port */

struct vfx {
	struct guest_mem mem;
	struct virtio_vsock *vs;
	struct virtio_mmio *t;
	struct vg_queue rxq, txq, evq;
	int irq;
	char dir[64];
	char path[VSOCK_PATH_MAX];
	uint16_t rx_seen, tx_seen, ev_seen;
};

/* ---- fixture ---- */

static void queue_layout(struct vfx *f)
{
	f->rxq = (struct vg_queue){.num = QNUM, .desc = 0x1000, .avail = 0x1400, .used = 0x1800};
	f->txq = (struct vg_queue){.num = QNUM, .desc = 0x2000, .avail = 0x2400, .used = 0x2800};
	f->evq = (struct vg_queue){.num = QNUM, .desc = 0x3000, .avail = 0x3400, .used = 0x3800};
}

static void rx_post(struct vfx *f, uint16_t i)
{
	vg_desc(&f->mem, &f->rxq, i, RX_BUF_GPA + i * RX_BUF_STRIDE,
		VIRTIO_VSOCK_HDR_SIZE + RX_PAYLOAD, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->rxq, i);
}

static void ev_post(struct vfx *f, uint16_t i, uint32_t len)
{
	vg_desc(&f->mem, &f->evq, i, EV_GPA + 16ULL * i, len, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->evq, i);
}

static struct virtio_mmio *new_transport(struct vfx *f, struct virtio_vsock *vs)
{
	struct virtio_mmio *t = calloc(1, sizeof(*t));
	struct fk_err err;

	assert_non_null(t);
	assert_int_equal(virtio_mmio_init(t, &virtio_vsock_ops, vs, &f->mem, vg_irq_line(f->irq),
					  VG_MMIO_BASE, &err),
			 0);
	virtio_vsock_attach(vs, t);
	return t;
}

static void bring_up(struct vfx *f, int nr_rx)
{
	assert_true(vg_negotiate(f->t, vg_device_features(f->t)) & VIRTIO_STATUS_FEATURES_OK);
	vg_setup_queue(f->t, &f->mem, VIRTIO_VSOCK_QUEUE_RX, &f->rxq);
	vg_setup_queue(f->t, &f->mem, VIRTIO_VSOCK_QUEUE_TX, &f->txq);
	vg_setup_queue(f->t, &f->mem, VIRTIO_VSOCK_QUEUE_EVENT, &f->evq);
	vg_driver_ok(f->t);
	for (int i = 0; i < nr_rx; i++)
		rx_post(f, (uint16_t)i);
	f->rx_seen = f->tx_seen = f->ev_seen = 0;
}

static int setup_rx(void **state, int nr_rx)
{
	struct vfx *f = calloc(1, sizeof(*f));
	struct fk_err err;

	assert_non_null(f);
	snprintf(f->dir, sizeof(f->dir), "/tmp/forkd-test-vsock-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/v.sock", f->dir);
	vg_mem_init(&f->mem);
	f->irq = vg_irq_fd();
	assert_int_equal(virtio_vsock_open(&f->vs, f->path, GUEST_CID, &err), 0);
	f->t = new_transport(f, f->vs);
	queue_layout(f);
	bring_up(f, nr_rx);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_rx(state, NR_RX_BUFS);
}

static int setup_no_rx(void **state)
{
	return setup_rx(state, 0);
}

static int teardown(void **state)
{
	struct vfx *f = *state;
	char cmd[128];

	virtio_vsock_close(f->vs);
	virtio_mmio_destroy(f->t);
	free(f->t);
	close(f->irq);
	guest_mem_destroy(&f->mem);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* ---- host side ---- */

/* Runs the device's event handling until nothing is ready; fails if it never settles. */
static void pump(struct vfx *f)
{
	for (int i = 0; i < 200; i++)
		if (virtio_vsock_process_events(f->vs, i == 0 ? 20 : 5) == 0)
			return;
	fail_msg("the device's events never settled (busy loop?)");
}

static int unix_connect(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(connect(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	return fd;
}

static int unix_listen(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 8), 0);
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	assert_int_equal(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* Reads what is there (waiting up to timeout_ms for the first byte); -1 if nothing, 0 on EOF. */
static ssize_t recv_some(int fd, void *buf, size_t len, int timeout_ms)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	ssize_t n;

	if (poll(&p, 1, timeout_ms) <= 0)
		return -1;
	n = recv(fd, buf, len, MSG_DONTWAIT);
	if (n < 0 && errno == ECONNRESET)
		return 0;
	return n;
}

static void expect_eof(int fd)
{
	char buf[64];

	assert_int_equal(recv_some(fd, buf, sizeof(buf), 1000), 0);
}

static void expect_nothing(int fd)
{
	char buf[64];

	assert_int_equal(recv_some(fd, buf, sizeof(buf), 0), -1);
}

/* ---- guest side ---- */

static struct virtio_vsock_hdr ghdr(uint32_t src_port, uint32_t dst_port, uint16_t op)
{
	return (struct virtio_vsock_hdr){
	    .src_cid = GUEST_CID,
	    .dst_cid = VIRTIO_VSOCK_HOST_CID,
	    .src_port = src_port,
	    .dst_port = dst_port,
	    .type = VIRTIO_VSOCK_TYPE_STREAM,
	    .op = op,
	    .buf_alloc = GUEST_BUF_ALLOC,
	};
}

/* Submits one tx chain of the given descriptors and expects the device to take it. */
static void tx_chain(struct vfx *f, const uint64_t *addr, const uint32_t *len, int n)
{
	uint16_t base = (uint16_t)(f->tx_seen * 4 % QNUM);
	uint32_t id, used_len;

	for (int i = 0; i < n; i++)
		vg_desc(&f->mem, &f->txq, (uint16_t)(base + i), addr[i], len[i],
			i + 1 < n ? VIRTQ_DESC_F_NEXT : 0, (uint16_t)(base + i + 1));
	vg_publish(&f->mem, &f->txq, base);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_TX);
	assert_int_equal(vg_used_idx(&f->mem, &f->txq), (uint16_t)(f->tx_seen + 1));
	vg_used_elem(&f->mem, &f->txq, f->tx_seen, &id, &used_len);
	assert_int_equal(id, base);
	assert_int_equal(used_len, 0);
	f->tx_seen++;
	assert_false(vg_status(f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

/* A packet in one descriptor: header then payload (plen bytes; h->len is sent as is). */
static void guest_send(struct vfx *f, const struct virtio_vsock_hdr *h, const void *payload,
		       uint32_t plen)
{
	uint8_t *p = vg_ptr(&f->mem, TX_GPA, VIRTIO_VSOCK_HDR_SIZE + plen);
	uint64_t addr = TX_GPA;
	uint32_t len = VIRTIO_VSOCK_HDR_SIZE + plen;

	virtio_vsock_hdr_encode(h, p);
	if (plen)
		memcpy(p + VIRTIO_VSOCK_HDR_SIZE, payload, plen);
	tx_chain(f, &addr, &len, 1);
}

static void guest_op(struct vfx *f, uint32_t src_port, uint32_t dst_port, uint16_t op,
		     uint32_t flags, uint32_t fwd_cnt)
{
	struct virtio_vsock_hdr h = ghdr(src_port, dst_port, op);

	h.flags = flags;
	h.fwd_cnt = fwd_cnt;
	guest_send(f, &h, NULL, 0);
}

static void guest_data(struct vfx *f, uint32_t src_port, uint32_t dst_port, const void *data,
		       uint32_t len, uint32_t fwd_cnt)
{
	struct virtio_vsock_hdr h = ghdr(src_port, dst_port, VIRTIO_VSOCK_OP_RW);

	h.len = len;
	h.fwd_cnt = fwd_cnt;
	guest_send(f, &h, data, len);
}

/*
 * Takes the next packet the device put in the rx queue (checking the
 * fields every packet must have) and gives the buffer back. False if none.
 */
static bool guest_recv(struct vfx *f, struct virtio_vsock_hdr *h, uint8_t *payload)
{
	uint32_t id, len;
	uint8_t *buf;

	if (vg_used_idx(&f->mem, &f->rxq) == f->rx_seen)
		return false;
	vg_used_elem(&f->mem, &f->rxq, f->rx_seen, &id, &len);
	f->rx_seen++;
	assert_true(id < NR_RX_BUFS);
	buf = vg_ptr(&f->mem, RX_BUF_GPA + id * RX_BUF_STRIDE, VIRTIO_VSOCK_HDR_SIZE + RX_PAYLOAD);
	virtio_vsock_hdr_decode(buf, h);
	assert_int_equal(len, VIRTIO_VSOCK_HDR_SIZE + h->len);
	assert_true(h->len <= RX_PAYLOAD);
	assert_int_equal(h->src_cid, VIRTIO_VSOCK_HOST_CID);
	assert_int_equal(h->dst_cid, GUEST_CID);
	assert_int_equal(h->type, VIRTIO_VSOCK_TYPE_STREAM);
	if (h->op != VIRTIO_VSOCK_OP_RW)
		assert_int_equal(h->len, 0);
	if (payload)
		memcpy(payload, buf + VIRTIO_VSOCK_HDR_SIZE, h->len);
	rx_post(f, (uint16_t)id);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_RX);
	return true;
}

static void expect_packet(struct vfx *f, uint16_t op, uint32_t src_port, uint32_t dst_port,
			  struct virtio_vsock_hdr *out)
{
	struct virtio_vsock_hdr h;

	if (!guest_recv(f, &h, NULL))
		fail_msg("expected op %u %u -> %u, the rx queue is empty", op, src_port, dst_port);
	if (h.op != op || (src_port != ANY_PORT && h.src_port != src_port) ||
	    h.dst_port != dst_port)
		fail_msg("expected op %u %u -> %u, got op %u %u -> %u", op, src_port, dst_port,
			 h.op, h.src_port, h.dst_port);
	if (out)
		*out = h;
}

static void expect_no_packet(struct vfx *f)
{
	struct virtio_vsock_hdr h;

	if (guest_recv(f, &h, NULL))
		fail_msg("unexpected op %u %u -> %u", h.op, h.src_port, h.dst_port);
}

static struct virtio_vsock_stats stats(struct vfx *f)
{
	struct virtio_vsock_stats s;

	virtio_vsock_get_stats(f->vs, &s);
	return s;
}

/* Host client connects to guest port `port`, the guest accepts: returns the client fd. */
static int host_connect(struct vfx *f, uint32_t port, uint32_t *host_port)
{
	struct virtio_vsock_hdr req;
	char line[64], expect[64];
	int fd = unix_connect(f->path);

	snprintf(line, sizeof(line), "CONNECT %u\n", port);
	send_all(fd, line, strlen(line));
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, port, &req);
	assert_true(req.src_port >= VSOCK_FIRST_HOST_PORT);
	assert_int_equal(req.buf_alloc, VSOCK_CONN_BUF_ALLOC);
	expect_nothing(fd); /* no OK before the guest answered */
	guest_op(f, port, req.src_port, VIRTIO_VSOCK_OP_RESPONSE, 0, 0);
	snprintf(expect, sizeof(expect), "OK %u\n", req.src_port);
	memset(line, 0, sizeof(line));
	assert_int_equal(recv_some(fd, line, strlen(expect), 1000), (ssize_t)strlen(expect));
	assert_string_equal(line, expect);
	*host_port = req.src_port;
	return fd;
}

/* Reads exactly len bytes of host->guest data on (host_port -> guest port) from the rx queue. */
static void guest_read_exact(struct vfx *f, uint32_t host_port, uint32_t port, uint8_t *dst,
			     uint32_t len)
{
	static uint8_t pkt[RX_PAYLOAD];
	struct virtio_vsock_hdr h;
	uint32_t got = 0;

	for (int tries = 0; got < len && tries < 1000; tries++) {
		if (!guest_recv(f, &h, pkt)) {
			pump(f);
			continue;
		}
		assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
		assert_int_equal(h.src_port, host_port);
		assert_int_equal(h.dst_port, port);
		assert_true(got + h.len <= len);
		memcpy(dst + got, pkt, h.len);
		got += h.len;
	}
	assert_int_equal(got, len);
}

/* ---- tests ---- */

static void test_identity(void **state)
{
	struct vfx *f = *state;
	uint8_t cfg[8];
	uint64_t cid;

	assert_int_equal(vg_read32(f->t, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_VSOCK);
	/* VERSION_1 only: no F_STREAM bit (stream is implied), no SEQPACKET. */
	assert_int_equal(vg_device_features(f->t), 1ULL << VIRTIO_F_VERSION_1);
	virtio_mmio_bus_ops.read(f->t, VIRTIO_MMIO_CONFIG, cfg, 8);
	memcpy(&cid, cfg, 8);
	assert_int_equal(le64toh(cid), GUEST_CID);
	for (uint32_t q = 0; q < 4; q++) {
		vg_write32(f->t, VIRTIO_MMIO_QUEUE_SEL, q);
		assert_int_equal(vg_read32(f->t, VIRTIO_MMIO_QUEUE_NUM_MAX),
				 q < 3 ? VIRTIO_VSOCK_QUEUE_SIZE : 0);
	}
	assert_int_equal(virtio_vsock_guest_cid(f->vs), GUEST_CID);
	assert_string_equal(virtio_vsock_path(f->vs), f->path);
}

static void test_open_errors(void **state)
{
	struct virtio_vsock *vs = (struct virtio_vsock *)1;
	struct vfx *f = *state;
	struct fk_err err;
	char path[300];
	int fd;

	assert_int_equal(virtio_vsock_open(&vs, "/nonexistent-dir/v.sock", 3, &err), -ENOENT);
	assert_null(vs);
	assert_non_null(strstr(err.msg, "/nonexistent-dir"));
	memset(path, 'a', sizeof(path));
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(virtio_vsock_open(&vs, path, 3, &err), -ENAMETOOLONG);
	snprintf(path, sizeof(path), "%s/other.sock", f->dir);
	assert_int_equal(virtio_vsock_open(&vs, path, 2, &err), -EINVAL);
	assert_int_equal(virtio_vsock_open(&vs, path, 0xFFFFFFFFULL, &err), -EINVAL);
	/* A live server is not replaced... */
	assert_int_equal(virtio_vsock_open(&vs, f->path, 3, &err), -EADDRINUSE);
	/* ...nor a regular file... */
	snprintf(path, sizeof(path), "%s/file", f->dir);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(virtio_vsock_open(&vs, path, 3, &err), -EEXIST);
	/* ...but a stale socket is. */
	snprintf(path, sizeof(path), "%s/stale.sock", f->dir);
	close(unix_listen(path));
	assert_int_equal(virtio_vsock_open(&vs, path, 3, &err), 0);
	virtio_vsock_close(vs);
	/* Closing removes the socket file. */
	assert_int_equal(access(path, F_OK), -1);
}

static void test_host_connect_and_data(void **state)
{
	struct vfx *f = *state;
	uint8_t buf[64];
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	assert_int_equal(stats(f).connections, 1);
	send_all(fd, "hello", 5);
	pump(f);
	guest_read_exact(f, hp, GUEST_PORT, buf, 5);
	assert_memory_equal(buf, "hello", 5);

	guest_data(f, GUEST_PORT, hp, "world", 5, 5);
	assert_int_equal(recv_some(fd, buf, sizeof(buf), 1000), 5);
	assert_memory_equal(buf, "world", 5);

	/* Descriptor boundaries do not matter: header split in two, payload in a third. */
	{
		struct virtio_vsock_hdr h = ghdr(GUEST_PORT, hp, VIRTIO_VSOCK_OP_RW);
		uint8_t *p = vg_ptr(&f->mem, TX_GPA, VIRTIO_VSOCK_HDR_SIZE);
		uint64_t addr[3] = {TX_GPA, TX_GPA + 10, TX_GPA2};
		uint32_t len[3] = {10, VIRTIO_VSOCK_HDR_SIZE - 10, 3};

		h.len = 3;
		virtio_vsock_hdr_encode(&h, p);
		memcpy(vg_ptr(&f->mem, TX_GPA2, 3), "abc", 3);
		tx_chain(f, addr, len, 3);
		assert_int_equal(recv_some(fd, buf, sizeof(buf), 1000), 3);
		assert_memory_equal(buf, "abc", 3);
	}

	/* Host close: SHUTDOWN with both flags, the guest answers RST, the connection goes. */
	close(fd);
	pump(f);
	{
		struct virtio_vsock_hdr h;
		expect_packet(f, VIRTIO_VSOCK_OP_SHUTDOWN, hp, GUEST_PORT, &h);
		assert_int_equal(h.flags, VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND);
	}
	guest_op(f, GUEST_PORT, hp, VIRTIO_VSOCK_OP_RST, 0, 0);
	assert_int_equal(stats(f).connections, 0);
	expect_no_packet(f);
}

static void test_data_sent_with_connect_line(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr req;
	uint8_t buf[64];
	int fd = unix_connect(f->path);

	/* Bytes right after the newline belong to the stream, not to the handshake. */
	send_all(fd, "CONNECT 52\nearly", 16);
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, GUEST_PORT, &req);
	expect_no_packet(f);
	guest_op(f, GUEST_PORT, req.src_port, VIRTIO_VSOCK_OP_RESPONSE, 0, 0);
	pump(f);
	guest_read_exact(f, req.src_port, GUEST_PORT, buf, 5);
	assert_memory_equal(buf, "early", 5);
	close(fd);
}

static void test_host_to_guest_credit(void **state)
{
	struct vfx *f = *state;
	static uint8_t data[5000], got[5000];
	struct virtio_vsock_hdr req, h;
	uint32_t received = 0;
	int fd = unix_connect(f->path);

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
	send_all(fd, "CONNECT 52\n", 11);
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, GUEST_PORT, &req);
	/* The guest has room for 1000 bytes only. */
	h = ghdr(GUEST_PORT, req.src_port, VIRTIO_VSOCK_OP_RESPONSE);
	h.buf_alloc = 1000;
	guest_send(f, &h, NULL, 0);
	{
		char line[32];
		assert_true(recv_some(fd, line, sizeof(line), 1000) > 0);
	}
	send_all(fd, data, sizeof(data));
	pump(f);
	while (guest_recv(f, &h, got + received)) {
		assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
		received += h.len;
		pump(f);
	}
	assert_int_equal(received, 1000);
	/* The guest consumed 600: exactly 600 more may come. */
	h = ghdr(GUEST_PORT, req.src_port, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
	h.buf_alloc = 1000;
	h.fwd_cnt = 600;
	guest_send(f, &h, NULL, 0);
	pump(f);
	while (guest_recv(f, &h, got + received)) {
		assert_int_equal(h.op, VIRTIO_VSOCK_OP_RW);
		received += h.len;
		pump(f);
	}
	assert_int_equal(received, 1600);
	/* All of it consumed, and more room. */
	h = ghdr(GUEST_PORT, req.src_port, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
	h.buf_alloc = GUEST_BUF_ALLOC;
	h.fwd_cnt = 1600;
	guest_send(f, &h, NULL, 0);
	pump(f);
	guest_read_exact(f, req.src_port, GUEST_PORT, got + received, 5000 - received);
	assert_memory_equal(got, data, sizeof(data));
	close(fd);
}

static void test_credit_request(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr h;
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	guest_data(f, GUEST_PORT, hp, "12345678", 8, 0);
	guest_op(f, GUEST_PORT, hp, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_CREDIT_UPDATE, hp, GUEST_PORT, &h);
	assert_int_equal(h.buf_alloc, VSOCK_CONN_BUF_ALLOC);
	assert_int_equal(h.fwd_cnt, 8);
	close(fd);
}

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 7 + 13);
}

/*
 * A host reader that does not read: the guest may fill the Unix socket and
 * then VSOCK_CONN_BUF_ALLOC bytes of the VMM's memory, and no more; its
 * credit runs out. Once the reader reads, credit comes back and every byte
 * arrives in order.
 */
static void test_guest_to_host_bound(void **state)
{
	struct vfx *f = *state;
	static uint8_t chunk[VSOCK_MAX_PKT_PAYLOAD], rbuf[65536];
	struct virtio_vsock_hdr h;
	uint32_t hp, buf_alloc = VSOCK_CONN_BUF_ALLOC, fwd = 0;
	uint64_t sent = 0, got = 0;
	int fd = host_connect(f, GUEST_PORT, &hp), rounds;

	for (rounds = 0; rounds < 1000; rounds++) {
		uint32_t credit = buf_alloc - (uint32_t)(sent - fwd);
		uint32_t n = credit < sizeof(chunk) ? credit : sizeof(chunk);

		if (!credit)
			break;
		for (uint32_t i = 0; i < n; i++)
			chunk[i] = pattern(sent + i);
		guest_data(f, GUEST_PORT, hp, chunk, n, 0);
		sent += n;
		pump(f);
		while (guest_recv(f, &h, NULL)) {
			assert_int_equal(h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
			buf_alloc = h.buf_alloc;
			fwd = h.fwd_cnt;
		}
	}
	assert_true(rounds < 1000);
	/* The guest sent more than the VMM holds: the socket took some. */
	assert_true(sent > VSOCK_CONN_BUF_ALLOC);
	assert_true(stats(f).buffered_bytes <= VSOCK_CONN_BUF_ALLOC);
	assert_true(stats(f).buffered_bytes > 0);
	assert_int_equal(sent - fwd, VSOCK_CONN_BUF_ALLOC);
	/* Nothing more comes while the reader sleeps. */
	pump(f);
	expect_no_packet(f);

	/* The reader wakes up: everything arrives, credit flows back. */
	for (rounds = 0; got < sent && rounds < 100000; rounds++) {
		ssize_t n = recv_some(fd, rbuf, sizeof(rbuf), 0);

		for (ssize_t i = 0; i < n; i++)
			assert_int_equal(rbuf[i], pattern(got + (uint64_t)i));
		if (n > 0)
			got += (uint64_t)n;
		pump(f);
		while (guest_recv(f, &h, NULL)) {
			assert_int_equal(h.op, VIRTIO_VSOCK_OP_CREDIT_UPDATE);
			fwd = h.fwd_cnt;
		}
	}
	assert_int_equal(got, sent);
	assert_int_equal(stats(f).buffered_bytes, 0);
	/* Updates come when the guest's view of our space runs low; on request, always. */
	guest_op(f, GUEST_PORT, hp, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_CREDIT_UPDATE, hp, GUEST_PORT, &h);
	assert_int_equal(h.fwd_cnt, (uint32_t)sent);
	close(fd);
}

static void test_guest_exceeds_credit(void **state)
{
	struct vfx *f = *state;
	static uint8_t chunk[VSOCK_MAX_PKT_PAYLOAD];
	uint64_t errors;
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	/* Fill the socket and the VMM's buffer, ignoring the credit the device grants. */
	errors = f->t->errors;
	for (int i = 0; i < 100 && stats(f).connections; i++)
		guest_data(f, GUEST_PORT, hp, chunk, sizeof(chunk), 0);
	assert_int_equal(stats(f).connections, 0);
	assert_true(f->t->errors > errors);
	assert_non_null(strstr(f->t->last_error, "credit"));
	pump(f);
	{
		struct virtio_vsock_hdr h;
		bool rst = false;
		while (guest_recv(f, &h, NULL))
			rst |= h.op == VIRTIO_VSOCK_OP_RST && h.src_port == hp;
		assert_true(rst);
	}
	close(fd);
}

static void test_guest_connect(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr h;
	char lpath[VSOCK_PATH_MAX + 16];
	uint8_t buf[64];
	int lfd, fd;

	snprintf(lpath, sizeof(lpath), "%s_1234", f->path);
	lfd = unix_listen(lpath);
	guest_op(f, 5000, 1234, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RESPONSE, 1234, 5000, &h);
	assert_int_equal(h.buf_alloc, VSOCK_CONN_BUF_ALLOC);
	fd = accept(lfd, NULL, NULL);
	assert_true(fd >= 0);

	guest_data(f, 5000, 1234, "ping", 4, 0);
	assert_int_equal(recv_some(fd, buf, sizeof(buf), 1000), 4);
	assert_memory_equal(buf, "ping", 4);
	send_all(fd, "pong", 4);
	pump(f);
	guest_read_exact(f, 1234, 5000, buf, 4);
	assert_memory_equal(buf, "pong", 4);

	/* The guest is done sending: the host reader sees EOF, and can still answer. */
	guest_op(f, 5000, 1234, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_SEND, 4);
	expect_eof(fd);
	send_all(fd, "late", 4);
	pump(f);
	guest_read_exact(f, 1234, 5000, buf, 4);
	assert_memory_equal(buf, "late", 4);
	/* The host closes too: SHUTDOWN both ways, the guest finishes with RST. */
	close(fd);
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_SHUTDOWN, 1234, 5000, &h);
	guest_op(f, 5000, 1234, VIRTIO_VSOCK_OP_RST, 0, 0);
	assert_int_equal(stats(f).connections, 0);
	close(lfd);
}

static void test_guest_connect_nobody_listening(void **state)
{
	struct vfx *f = *state;

	guest_op(f, 5000, 4321, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 4321, 5000, NULL);
	assert_int_equal(stats(f).connections, 0);
	assert_int_equal(stats(f).rst_sent, 1);
}

static void test_rst_unknown(void **state)
{
	struct vfx *f = *state;

	guest_data(f, 7000, 80, "x", 1, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 80, 7000, NULL);
	guest_op(f, 7000, 80, VIRTIO_VSOCK_OP_CREDIT_REQUEST, 0, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 80, 7000, NULL);
	guest_op(f, 7000, 80, VIRTIO_VSOCK_OP_RESPONSE, 0, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 80, 7000, NULL);
	guest_op(f, 7000, 80, VIRTIO_VSOCK_OP_SHUTDOWN, 3, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 80, 7000, NULL);
	/* An RST is never answered. */
	guest_op(f, 7000, 80, VIRTIO_VSOCK_OP_RST, 0, 0);
	expect_no_packet(f);
	assert_int_equal(stats(f).malformed, 0);
}

static void test_guest_rst_closes_host(void **state)
{
	struct vfx *f = *state;
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	guest_op(f, GUEST_PORT, hp, VIRTIO_VSOCK_OP_RST, 0, 0);
	expect_eof(fd);
	assert_int_equal(stats(f).connections, 0);
	expect_no_packet(f);
	close(fd);
}

static void test_guest_refuses_connect(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr req;
	int fd = unix_connect(f->path);

	send_all(fd, "CONNECT 99\n", 11);
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, 99, &req);
	/* No listener in the guest: RST. The client sees EOF and never an OK. */
	guest_op(f, 99, req.src_port, VIRTIO_VSOCK_OP_RST, 0, 0);
	expect_eof(fd);
	close(fd);
}

static void test_half_close(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr h;
	uint8_t buf[64];
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	/* Host stops sending: the guest gets SHUTDOWN(SEND) and may still send. */
	send_all(fd, "last", 4);
	shutdown(fd, SHUT_WR);
	pump(f);
	guest_read_exact(f, hp, GUEST_PORT, buf, 4);
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_SHUTDOWN, hp, GUEST_PORT, &h);
	assert_int_equal(h.flags, VIRTIO_VSOCK_SHUTDOWN_SEND);
	guest_data(f, GUEST_PORT, hp, "still", 5, 4);
	assert_int_equal(recv_some(fd, buf, sizeof(buf), 1000), 5);
	assert_memory_equal(buf, "still", 5);

	/* Guest stops sending: EOF on the Unix side; data after that is a violation. */
	guest_op(f, GUEST_PORT, hp, VIRTIO_VSOCK_OP_SHUTDOWN, VIRTIO_VSOCK_SHUTDOWN_SEND, 4);
	expect_eof(fd);
	assert_int_equal(stats(f).connections, 1);
	guest_data(f, GUEST_PORT, hp, "x", 1, 4);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, hp, GUEST_PORT, NULL);
	assert_int_equal(stats(f).connections, 0);
	close(fd);
}

static void test_guest_close_both(void **state)
{
	struct vfx *f = *state;
	uint8_t buf[64];
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	/* The guest closes its socket: data first, then SHUTDOWN both; we finish with RST. */
	guest_data(f, GUEST_PORT, hp, "bye", 3, 0);
	guest_op(f, GUEST_PORT, hp, VIRTIO_VSOCK_OP_SHUTDOWN,
		 VIRTIO_VSOCK_SHUTDOWN_RCV | VIRTIO_VSOCK_SHUTDOWN_SEND, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, hp, GUEST_PORT, NULL);
	assert_int_equal(recv_some(fd, buf, sizeof(buf), 1000), 3);
	assert_memory_equal(buf, "bye", 3);
	expect_eof(fd);
	assert_int_equal(stats(f).connections, 0);
	close(fd);
}

/* Writes a raw tx packet: header fields from h, plen payload bytes in the chain. */
static void expect_malformed(struct vfx *f, const struct virtio_vsock_hdr *h, uint32_t plen,
			     const char *what, bool rst)
{
	static uint8_t zero[VSOCK_MAX_PKT_PAYLOAD + 64];
	uint64_t before = stats(f).malformed;

	guest_send(f, h, zero, plen);
	assert_int_equal(stats(f).malformed, before + 1);
	if (!strstr(f->t->last_error, what))
		fail_msg("last error \"%s\" does not mention \"%s\"", f->t->last_error, what);
	if (rst)
		expect_packet(f, VIRTIO_VSOCK_OP_RST, h->dst_port, h->src_port, NULL);
	expect_no_packet(f);
}

static void test_malformed(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr h;
	uint64_t addr = TX_GPA;
	uint32_t len = 20;

	/* Shorter than a header: counted, nothing to answer. */
	tx_chain(f, &addr, &len, 1);
	assert_int_equal(stats(f).malformed, 1);
	assert_non_null(strstr(f->t->last_error, "header"));
	expect_no_packet(f);

	h = ghdr(6000, 90, VIRTIO_VSOCK_OP_RW);
	h.len = 100;
	expect_malformed(f, &h, 50, "chain holds 50", true);
	h.len = VSOCK_MAX_PKT_PAYLOAD + 1;
	expect_malformed(f, &h, VSOCK_MAX_PKT_PAYLOAD + 1, "maximum", true);
	h = ghdr(6000, 90, VIRTIO_VSOCK_OP_REQUEST);
	h.type = 2;
	expect_malformed(f, &h, 0, "type 2", true);
	h = ghdr(6000, 90, VIRTIO_VSOCK_OP_REQUEST);
	h.src_cid = 4;
	expect_malformed(f, &h, 0, "src_cid 4", true);
	h = ghdr(6000, 90, VIRTIO_VSOCK_OP_REQUEST);
	h.dst_cid = 5;
	expect_malformed(f, &h, 0, "dst_cid 5", true);
	h = ghdr(6000, 90, 9);
	expect_malformed(f, &h, 0, "unknown op 9", true);
	h = ghdr(6000, 90, VIRTIO_VSOCK_OP_INVALID);
	expect_malformed(f, &h, 0, "unknown op 0", true);
	/* A malformed RST is not answered. */
	h = ghdr(6000, 90, VIRTIO_VSOCK_OP_RST);
	h.type = 7;
	expect_malformed(f, &h, 0, "type 7", false);
	assert_false(vg_status(f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
}

static void test_malformed_kills_connection(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr h;
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	h = ghdr(GUEST_PORT, hp, VIRTIO_VSOCK_OP_RW);
	h.len = 1000; /* more than the chain holds */
	expect_malformed(f, &h, 10, "payload bytes", true);
	expect_eof(fd);
	assert_int_equal(stats(f).connections, 0);
	close(fd);
}

static void test_rx_buffer_too_small(void **state)
{
	struct vfx *f = *state;
	uint32_t id, len;

	/* One rx buffer shorter than a header: handed back empty, the device goes on. */
	vg_desc(&f->mem, &f->rxq, 0, RX_BUF_GPA, 10, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->rxq, 0);
	guest_op(f, 5000, 4321, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->rxq), 1);
	vg_used_elem(&f->mem, &f->rxq, 0, &id, &len);
	assert_int_equal(len, 0);
	assert_non_null(strstr(f->t->last_error, "rx buffer"));
	f->rx_seen = 1;
	rx_post(f, 1);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_RX);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 4321, 5000, NULL);
}

static void test_no_rx_buffers(void **state)
{
	struct vfx *f = *state;
	int fd = unix_connect(f->path);

	/* The guest posts no rx buffers: the REQUEST waits, the loop does not spin. */
	send_all(fd, "CONNECT 52\n", 11);
	pump(f);
	expect_no_packet(f);
	for (int i = 0; i < 300; i++)
		guest_op(f, 9000, (uint32_t)i, VIRTIO_VSOCK_OP_RW, 0, 0);
	assert_int_equal(stats(f).rst_dropped, 300 - VSOCK_RST_QUEUE_LEN);
	rx_post(f, 0);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_RX);
	/* Queued RSTs go first, then the REQUEST. */
	for (uint32_t i = 0; i < VSOCK_RST_QUEUE_LEN; i++)
		expect_packet(f, VIRTIO_VSOCK_OP_RST, i, 9000, NULL);
	expect_packet(f, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, GUEST_PORT, NULL);
	close(fd);
}

static void expect_line_refused(struct vfx *f, const char *line, size_t len)
{
	uint64_t before = stats(f).bad_connect_lines;
	int fd = unix_connect(f->path);

	send_all(fd, line, len);
	pump(f);
	expect_eof(fd);
	close(fd);
	expect_no_packet(f);
	assert_int_equal(stats(f).bad_connect_lines, before + 1);
	assert_int_equal(stats(f).connections, 0);
}

static void test_connect_line_errors(void **state)
{
	struct vfx *f = *state;
	char longline[64];
	int fd;

	expect_line_refused(f, "BOGUS\n", 6);
	expect_line_refused(f, "CONNECT\n", 8);
	expect_line_refused(f, "CONNECT \n", 9);
	expect_line_refused(f, "CONNECT abc\n", 12);
	expect_line_refused(f, "CONNECT 52 \n", 12);
	expect_line_refused(f, "CONNECT -1\n", 11);
	expect_line_refused(f, "connect 52\n", 11);
	expect_line_refused(f, "CONNECT 4294967296\n", 19);
	/* No newline within 32 bytes. */
	memset(longline, '1', sizeof(longline));
	memcpy(longline, "CONNECT ", 8);
	expect_line_refused(f, longline, sizeof(longline));

	/* Gone before finishing the line: freed, not counted as bad. */
	fd = unix_connect(f->path);
	send_all(fd, "CONN", 4);
	pump(f);
	assert_int_equal(stats(f).connections, 1);
	close(fd);
	pump(f);
	assert_int_equal(stats(f).connections, 0);
	expect_no_packet(f);
}

static void test_handshake_timeouts(void **state)
{
	struct vfx *f = *state;
	struct virtio_vsock_hdr req;
	int silent, unanswered;

	virtio_vsock_set_handshake_timeout(f->vs, 100);
	silent = unix_connect(f->path);
	unanswered = unix_connect(f->path);
	send_all(unanswered, "CONNECT 52\n", 11);
	pump(f);
	expect_packet(f, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, GUEST_PORT, &req);
	assert_int_equal(stats(f).connections, 2);
	for (int i = 0; i < 40 && stats(f).connections; i++)
		virtio_vsock_process_events(f->vs, 20);
	assert_int_equal(stats(f).connections, 0);
	assert_int_equal(stats(f).handshake_timeouts, 2);
	expect_eof(silent);
	expect_eof(unanswered);
	/* The guest heard the REQUEST, so it hears that it is off. */
	expect_packet(f, VIRTIO_VSOCK_OP_RST, req.src_port, GUEST_PORT, NULL);
	/* A late RESPONSE is for a connection that no longer exists. */
	guest_op(f, GUEST_PORT, req.src_port, VIRTIO_VSOCK_OP_RESPONSE, 0, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, req.src_port, GUEST_PORT, NULL);
	close(silent);
	close(unanswered);
}

static void test_connection_limit(void **state)
{
	struct vfx *f = *state;
	int *fds = calloc(VSOCK_MAX_CONNS + 1, sizeof(int));
	int extra;

	assert_non_null(fds);
	for (int i = 0; i < VSOCK_MAX_CONNS; i++) {
		fds[i] = unix_connect(f->path);
		if (i % 64 == 63)
			pump(f);
	}
	pump(f);
	assert_int_equal(stats(f).connections, VSOCK_MAX_CONNS);
	extra = unix_connect(f->path);
	pump(f);
	expect_eof(extra);
	assert_int_equal(stats(f).refused, 1);
	/* The guest cannot open one either. */
	guest_op(f, 5000, 1234, VIRTIO_VSOCK_OP_REQUEST, ANY_PORT, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, 1234, 5000, NULL);
	close(extra);
	for (int i = 0; i < VSOCK_MAX_CONNS; i++)
		close(fds[i]);
	pump(f);
	assert_int_equal(stats(f).connections, 0);
	free(fds);
}

static void test_driver_reset_drops_connections(void **state)
{
	struct vfx *f = *state;
	uint32_t hp;
	int fd = host_connect(f, GUEST_PORT, &hp);

	vg_write32(f->t, VIRTIO_MMIO_STATUS, 0);
	expect_eof(fd);
	assert_int_equal(stats(f).connections, 0);
	close(fd);
}

/*
 * A snapshot keeps the transport state, not the connections: the restored
 * device starts with none, its old clients see EOF, and the guest gets a
 * TRANSPORT_RESET as soon as it has an event buffer.
 */
static void test_transport_reset_after_restore(void **state)
{
	struct vfx *f = *state;
	struct virtio_mmio_state saved;
	struct virtio_vsock *vs2;
	struct virtio_mmio *t2;
	char path2[VSOCK_PATH_MAX];
	struct fk_err err;
	uint32_t hp, old_hp, next_port, id, len, ev;
	int fd = host_connect(f, GUEST_PORT, &hp);

	saved = f->t->state;
	next_port = virtio_vsock_next_host_port(f->vs);
	assert_true(next_port > hp);
	snprintf(path2, sizeof(path2), "%s/restored.sock", f->dir);
	assert_int_equal(virtio_vsock_open(&vs2, path2, GUEST_CID, &err), 0);
	t2 = new_transport(f, vs2);
	t2->state = saved;
	virtio_vsock_restored(vs2, next_port);
	/* The old VMM goes away: its client sees the end. */
	virtio_vsock_close(f->vs);
	virtio_mmio_destroy(f->t);
	free(f->t);
	f->vs = vs2;
	f->t = t2;
	expect_eof(fd);
	close(fd);

	/* No event buffer yet: the reset waits. */
	virtio_vsock_kick(f->vs);
	assert_int_equal(vg_used_idx(&f->mem, &f->evq), 0);
	/* A too-small event buffer is handed back empty; a proper one gets the event. */
	ev_post(f, 0, 2);
	ev_post(f, 1, 8);
	memset(vg_ptr(&f->mem, EV_GPA + 16, 8), 0xee, 8);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_EVENT);
	assert_int_equal(vg_used_idx(&f->mem, &f->evq), 2);
	vg_used_elem(&f->mem, &f->evq, 0, &id, &len);
	assert_int_equal(len, 0);
	vg_used_elem(&f->mem, &f->evq, 1, &id, &len);
	assert_int_equal(id, 1);
	assert_int_equal(len, 4);
	memcpy(&ev, vg_ptr(&f->mem, EV_GPA + 16, 4), 4);
	assert_int_equal(le32toh(ev), VIRTIO_VSOCK_EVENT_TRANSPORT_RESET);
	assert_int_equal(stats(f).transport_resets, 1);
	/* Only once. */
	ev_post(f, 2, 8);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_EVENT);
	assert_int_equal(vg_used_idx(&f->mem, &f->evq), 2);

	/*
	 * Packets on the old connection get RST; new connections work, from a
	 * port the source never used (the guest may still hold the old socket).
	 */
	guest_data(f, GUEST_PORT, hp, "old", 3, 0);
	expect_packet(f, VIRTIO_VSOCK_OP_RST, hp, GUEST_PORT, NULL);
	snprintf(f->path, sizeof(f->path), "%s", path2);
	old_hp = hp;
	fd = host_connect(f, GUEST_PORT, &hp);
	assert_true(hp > old_hp);
	assert_int_equal(hp, next_port);
	close(fd);
}

static void test_restore_delivers_reset_at_once(void **state)
{
	struct vfx *f = *state;
	uint32_t id, len;

	/* The Linux driver fills the event queue at probe: the event goes out on restore. */
	ev_post(f, 0, 8);
	vg_notify(f->t, VIRTIO_VSOCK_QUEUE_EVENT);
	assert_int_equal(vg_used_idx(&f->mem, &f->evq), 0);
	virtio_vsock_restored(f->vs, 0);
	virtio_vsock_kick(f->vs);
	assert_int_equal(vg_used_idx(&f->mem, &f->evq), 1);
	vg_used_elem(&f->mem, &f->evq, 0, &id, &len);
	assert_int_equal(len, 4);
	assert_true(vg_irqs(f->irq) > 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_identity, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_connect_and_data, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_data_sent_with_connect_line, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_host_to_guest_credit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_credit_request, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_to_host_bound, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_exceeds_credit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_connect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_connect_nobody_listening, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rst_unknown, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_rst_closes_host, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_refuses_connect, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_half_close, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_guest_close_both, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_kills_connection, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_rx_buffer_too_small, setup_no_rx, teardown),
	    cmocka_unit_test_setup_teardown(test_no_rx_buffers, setup_no_rx, teardown),
	    cmocka_unit_test_setup_teardown(test_connect_line_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshake_timeouts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_connection_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_driver_reset_drops_connections, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_transport_reset_after_restore, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_restore_delivers_reset_at_once, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
