/* SPDX-License-Identifier: MIT */
/*
 * virtio-vsock (virtio 1.x, section 5.10), stream sockets only, with a
 * Firecracker-style "hybrid" host side: the host end of every guest stream
 * is a Unix stream socket (docs/vsock.md).
 *
 *  - Host-initiated: a host process connects to the listening socket at
 *    `path`, writes "CONNECT <port>\n"; the device sends the guest an
 *    OP_REQUEST from a host port of its choosing and, on the guest's
 *    OP_RESPONSE, writes "OK <host port>\n" back. Then bytes flow.
 *  - Guest-initiated: a guest connect to CID 2 port P is forwarded to the
 *    Unix socket `<path>_<P>`; nothing listening there means OP_RST.
 *
 * Everything runs on the VMM's event-loop thread under the transport lock.
 * The device's Unix sockets, its timer and its queue-notify eventfds live
 * in a private epoll set whose single fd the VM registers in its event loop
 * (a VM loop has 64 handler slots; a vsock device may have 1024 sockets).
 *
 * The guest is hostile and host peers may be slow, so every buffer is
 * bounded: per connection at most VSOCK_CONN_BUF_ALLOC bytes of guest data
 * wait for a Unix socket that does not drain (the guest gets no credit
 * beyond that), host data is read only straight into a guest rx buffer the
 * guest has credit for, and at most VSOCK_MAX_CONNS connections exist.
 * Connections never survive a snapshot or a BRANCH: a restored device
 * starts with none and tells the guest with a TRANSPORT_RESET event.
 */
#ifndef FORKD_DEVICES_VIRTIO_VSOCK_H
#define FORKD_DEVICES_VIRTIO_VSOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "devices/virtio_mmio.h"
#include "util/err.h"

#define VIRTIO_ID_VSOCK 19

#define VIRTIO_VSOCK_QUEUE_RX	 0 /* device -> driver packets */
#define VIRTIO_VSOCK_QUEUE_TX	 1 /* driver -> device packets */
#define VIRTIO_VSOCK_QUEUE_EVENT 2
#define VIRTIO_VSOCK_NR_QUEUES	 3
#define VIRTIO_VSOCK_QUEUE_SIZE	 256

#define VIRTIO_VSOCK_CONFIG_SIZE 8 /* le64 guest_cid */

#define VIRTIO_VSOCK_HOST_CID 2
#define VIRTIO_VSOCK_MIN_CID  3
#define VIRTIO_VSOCK_MAX_CID  0xFFFFFFFEULL

/* struct virtio_vsock_hdr: 44 bytes, little-endian, packed. */
#define VIRTIO_VSOCK_HDR_SIZE	   44
#define VIRTIO_VSOCK_HDR_SRC_CID   0
#define VIRTIO_VSOCK_HDR_DST_CID   8
#define VIRTIO_VSOCK_HDR_SRC_PORT  16
#define VIRTIO_VSOCK_HDR_DST_PORT  20
#define VIRTIO_VSOCK_HDR_LEN	   24
#define VIRTIO_VSOCK_HDR_TYPE	   28
#define VIRTIO_VSOCK_HDR_OP	   30
#define VIRTIO_VSOCK_HDR_FLAGS	   32
#define VIRTIO_VSOCK_HDR_BUF_ALLOC 36
#define VIRTIO_VSOCK_HDR_FWD_CNT   40

#define VIRTIO_VSOCK_TYPE_STREAM 1

enum virtio_vsock_op {
	VIRTIO_VSOCK_OP_INVALID = 0,
	VIRTIO_VSOCK_OP_REQUEST = 1,
	VIRTIO_VSOCK_OP_RESPONSE = 2,
	VIRTIO_VSOCK_OP_RST = 3,
	VIRTIO_VSOCK_OP_SHUTDOWN = 4,
	VIRTIO_VSOCK_OP_RW = 5,
	VIRTIO_VSOCK_OP_CREDIT_UPDATE = 6,
	VIRTIO_VSOCK_OP_CREDIT_REQUEST = 7,
};

#define VIRTIO_VSOCK_SHUTDOWN_RCV  1
#define VIRTIO_VSOCK_SHUTDOWN_SEND 2

#define VIRTIO_VSOCK_EVENT_TRANSPORT_RESET 0
#define VIRTIO_VSOCK_EVENT_SIZE		   4 /* le32 id */

/* Limits (docs/vsock.md). */
#define VSOCK_MAX_PKT_PAYLOAD	   (64 * 1024)	/* larger guest packets are malformed */
#define VSOCK_CONN_BUF_ALLOC	   (256 * 1024) /* buf_alloc we advertise per connection */
#define VSOCK_CREDIT_UPDATE_LOW	   (64 * 1024)	/* credit the guest sees below this: update */
#define VSOCK_MAX_CONNS		   1024
#define VSOCK_CONNECT_LINE_MAX	   32 /* "CONNECT 4294967295\n" is 19 */
#define VSOCK_HANDSHAKE_TIMEOUT_MS 5000
#define VSOCK_FIRST_HOST_PORT	   (1U << 30) /* host ports of host-initiated connections */
#define VSOCK_RST_QUEUE_LEN	   256	      /* RSTs for unknown connections waiting for rx */
#define VSOCK_PATH_MAX		   108	      /* sizeof(sun_path), NUL included */

/* A decoded packet header, host byte order. */
struct virtio_vsock_hdr {
	uint64_t src_cid;
	uint64_t dst_cid;
	uint32_t src_port;
	uint32_t dst_port;
	uint32_t len;
	uint16_t type;
	uint16_t op;
	uint32_t flags;
	uint32_t buf_alloc;
	uint32_t fwd_cnt;
};

void virtio_vsock_hdr_decode(const uint8_t raw[VIRTIO_VSOCK_HDR_SIZE], struct virtio_vsock_hdr *h);
void virtio_vsock_hdr_encode(const struct virtio_vsock_hdr *h, uint8_t raw[VIRTIO_VSOCK_HDR_SIZE]);

struct virtio_vsock;

/*
 * Listens on the Unix socket `path` (the directory must exist; a stale
 * socket there is replaced, a live one or a non-socket refused) for a guest
 * with context id `guest_cid` (3 .. 0xFFFFFFFE). Errors name the path.
 */
int virtio_vsock_open(struct virtio_vsock **out, const char *path, uint64_t guest_cid,
		      struct fk_err *err);
/* Closes every connection and the listener, and removes the socket file if it is still ours. */
void virtio_vsock_close(struct virtio_vsock *vs);

/* The transport serving this device; call once, right after virtio_mmio_init. */
void virtio_vsock_attach(struct virtio_vsock *vs, struct virtio_mmio *t);

/* Pass the struct virtio_vsock * as the transport's dev. */
extern const struct virtio_dev_ops virtio_vsock_ops;

/*
 * The device's private epoll set: register it (EPOLLIN) in the VM's event
 * loop and call virtio_vsock_process_events when it is readable.
 */
int virtio_vsock_epoll_fd(const struct virtio_vsock *vs);
/*
 * Handles what is ready in the private set, waiting at most timeout_ms
 * (0: do not wait). Takes the transport lock itself. Returns the number of
 * events handled.
 */
int virtio_vsock_process_events(struct virtio_vsock *vs, int timeout_ms);
/* Watches an ioeventfd that KVM signals for QueueNotify == q. The device owns fd afterwards. */
int virtio_vsock_watch_notify(struct virtio_vsock *vs, uint32_t q, int fd, struct fk_err *err);

/* How long a host client may take to send its CONNECT line, and the guest to answer it. */
void virtio_vsock_set_handshake_timeout(struct virtio_vsock *vs, uint32_t ms);

uint64_t virtio_vsock_guest_cid(const struct virtio_vsock *vs);
const char *virtio_vsock_path(const struct virtio_vsock *vs);
/*
 * The host port the next host-initiated connection takes. Saved with the
 * device: the guest may still hold sockets of ports below it (their
 * connections reset, not yet closed by the guest program), and a new
 * connection from such a port would reach that socket, not the listener.
 */
uint32_t virtio_vsock_next_host_port(struct virtio_vsock *vs);

/*
 * The transport state was just restored from a snapshot or BRANCH capture:
 * the guest's connections no longer exist on this side. Queues a
 * TRANSPORT_RESET event for the first event buffer the guest offers.
 */
void virtio_vsock_restored(struct virtio_vsock *vs, uint32_t next_host_port);
/* Serves what the guest queued while nobody was looking (after restore). */
void virtio_vsock_kick(struct virtio_vsock *vs);

struct virtio_vsock_stats {
	uint32_t connections;	     /* open now, including ones still handshaking */
	uint64_t buffered_bytes;     /* guest data waiting for Unix sockets, all connections */
	uint64_t tx_packets;	     /* packets taken from the tx queue */
	uint64_t rx_packets;	     /* packets given to the guest */
	uint64_t malformed;	     /* tx packets refused as malformed */
	uint64_t rst_sent;	     /* RSTs given to the guest */
	uint64_t rst_dropped;	     /* RSTs dropped because VSOCK_RST_QUEUE_LEN were waiting */
	uint64_t refused;	     /* host clients closed because VSOCK_MAX_CONNS were open */
	uint64_t handshake_timeouts; /* connections closed by the handshake timeout */
	uint64_t bad_connect_lines;  /* host clients closed for a malformed CONNECT line */
	uint64_t transport_resets;   /* TRANSPORT_RESET events delivered */
};
void virtio_vsock_get_stats(struct virtio_vsock *vs, struct virtio_vsock_stats *stats);

#endif
