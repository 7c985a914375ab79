/* SPDX-License-Identifier: MIT */
/*
 * The probe's polling virtio-vsock driver (virtio 1.x section 5.10, stream
 * sockets only), shared by the `vsock` echo workload and the `hostile`
 * workload. Three queues: rx (device -> driver packets), tx, event.
 *
 * All state is in ordinary memory (the struct and the driver memory the
 * caller hands in) so a snapshot or BRANCH copy continues with it; the
 * device then announces the loss of every connection with a
 * TRANSPORT_RESET event.
 */
#ifndef PROBE_VSOCK_H
#define PROBE_VSOCK_H

#include "virtio.h"

#define VIRTIO_ID_VSOCK		    19
#define VSOCK_HOST_CID		    2
#define VSOCK_HDR_SIZE		    44
#define VSOCK_TYPE_STREAM	    1
#define VSOCK_SHUTDOWN_RCV	    1
#define VSOCK_SHUTDOWN_SEND	    2
#define VSOCK_EVENT_TRANSPORT_RESET 0

enum vsock_op {
	VSOCK_OP_REQUEST = 1,
	VSOCK_OP_RESPONSE = 2,
	VSOCK_OP_RST = 3,
	VSOCK_OP_SHUTDOWN = 4,
	VSOCK_OP_RW = 5,
	VSOCK_OP_CREDIT_UPDATE = 6,
	VSOCK_OP_CREDIT_REQUEST = 7,
};

/* struct virtio_vsock_hdr: little-endian like the probe, packed to 44 bytes. */
struct vsock_hdr {
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
} __attribute__((packed));
_Static_assert(sizeof(struct vsock_hdr) == VSOCK_HDR_SIZE, "virtio_vsock_hdr is 44 bytes");

/*
 * Limits. The VMM allows 64 KiB per packet; rx buffers of 32 KiB keep the
 * driver memory small while still moving big packets. Each connection's
 * echo ring is its receive buffer: we advertise a little less than the ring
 * (buf_alloc) because a guest-initiated connection seeds its greeting into
 * the same ring.
 */
#define VSOCK_MAX_CONNS	    64
#define VSOCK_RING_BYTES    (128 * 1024)
#define VSOCK_BUF_ALLOC	    (VSOCK_RING_BYTES - 256)
#define VSOCK_MAX_PAYLOAD   (64 * 1024)
#define VSOCK_QUEUE_SIZE    256
#define VSOCK_RX_BUFS	    64
#define VSOCK_RX_PAYLOAD    (32 * 1024)
#define VSOCK_RX_STRIDE	    0x9000 /* 36 KiB: header + 32 KiB payload, page aligned */
#define VSOCK_TX_SLOTS	    64	   /* three descriptors each: header + up to two pieces */
#define VSOCK_EVENT_BUFS    4
#define VSOCK_RST_QUEUE	    128
#define VSOCK_MEM_BYTES	    (16 * MIB)
#define VSOCK_SCRATCH_OFF   (12 * MIB) /* the last 4 MiB: free for the hostile cases */
#define VSOCK_SCRATCH_BYTES (4 * MIB)

enum vconn_state {
	VC_FREE,
	VC_CONNECTING, /* our REQUEST is queued or sent, no answer yet */
	VC_OPEN,
	VC_DRAIN, /* closed, but tx chains still point into its ring */
};

/* Control packets a connection owes the peer. */
enum vconn_pending {
	VP_REQUEST = 1 << 0,
	VP_RESPONSE = 1 << 1,
	VP_CREDIT_UPDATE = 1 << 2,
	VP_RST = 1 << 3,
};

struct vconn {
	enum vconn_state state;
	bool accepted; /* host-initiated (echo); else our own `vsock connect` */
	bool shutdown_sent;
	bool credit_requested; /* a CREDIT_REQUEST is out for the current stall */
	unsigned pending;      /* enum vconn_pending */
	uint32_t gen;	       /* tx slots remember it: a reused slot is not confused */
	uint32_t local_port, peer_port;
	uint64_t peer_cid;
	uint64_t deadline_tsc; /* CONNECTING: give up then */
	/* Receive side: the ring holds bytes received and not yet echoed (or in flight). */
	uint8_t *ring;
	uint32_t r_tail, r_len, r_sent; /* oldest byte, bytes held, of which handed to tx */
	uint32_t r_seed;		/* leading bytes we put there ourselves (greeting) */
	uint32_t rx_cnt, fwd_cnt, fwd_sent;
	/* Send side: the peer's credit. */
	uint32_t tx_cnt, peer_buf_alloc, peer_fwd_cnt;
	uint32_t peer_shutdown;
	unsigned tx_inflight;
	uint64_t bytes_in, bytes_out;
};

struct vsock_rst {
	uint32_t local_port, peer_port;
	uint64_t peer_cid;
};

struct vsock_txslot {
	int conn; /* -1: none (control packet of no connection, or raw) */
	uint32_t gen;
	uint32_t data_len;
	bool busy;
};

struct vsock {
	struct vdev dev;
	struct vq rxq, txq, evq;
	uint64_t mem;
	uint64_t cid;
	uint32_t listen_port; /* 0: accept nothing */
	uint32_t next_port;   /* local ports of our own connects */
	uint32_t gen;
	bool tx_kick, rx_kick; /* something was posted: notify once per poll */
	struct vsock_txslot slots[VSOCK_TX_SLOTS];
	unsigned slots_busy;
	struct vconn conns[VSOCK_MAX_CONNS];
	struct vsock_rst rstq[VSOCK_RST_QUEUE];
	unsigned rst_head, rst_len;
	unsigned rr; /* round-robin start for sending */
	/* Hostile helpers: RESPONSEs for no connection are held (not answered with RST). */
	bool hold_stray_responses;
	/* Counters (read by the console command on the BSP; written by the polling CPU). */
	uint64_t accepted, closed, refused, resets, violations, bad_rx;
	uint64_t rx_packets, tx_packets, rst_rx, rst_tx, stray_responses, credit_updates;
	uint64_t credit_requests, bytes_in, bytes_out;
	uint32_t last_rst_local, last_rst_peer; /* ports of the last RST received */
	uint64_t last_rst_seq;			/* rst_rx when it came */
};

/*
 * Finds the first virtio-vsock device, resets and starts it in mem
 * (VSOCK_MEM_BYTES); listen_port 0 accepts no connection. 0 or -1 (a
 * `vsock.error=` line says why).
 */
int vsock_open(struct vsock *v, uint64_t mem, uint32_t listen_port);
/* One round of work: packets in, completions, packets out. True if anything happened. */
bool vsock_poll(struct vsock *v);
/* Only takes back finished tx chains (the hostile cases starve rx on purpose). */
bool vsock_poll_tx(struct vsock *v);
/* Starts a connection to the host's port; the connection index or -1 (no room). */
int vsock_connect(struct vsock *v, uint32_t port);
/*
 * Is the device alive? A REQUEST to the host's `port` must be answered
 * (RST: nobody listens; RESPONSE: then we reset it) within a second.
 */
bool vsock_probe(struct vsock *v, uint32_t port);
/* Puts a chain of up to 3 buffers on the tx queue as is, and notifies; false: no slot. */
bool vsock_tx_raw(struct vsock *v, const struct vbuf *bufs, unsigned n);
/* Fills a header from us (our cid) to the host. */
void vsock_hdr_init(struct vsock *v, struct vsock_hdr *h, uint16_t op, uint32_t src_port,
		    uint32_t dst_port, uint32_t len);
uint32_t vsock_status(struct vsock *v);
void vsock_notify(struct vsock *v);

/* The `vsock` workload and its console command. */
NORETURN void vsock_run(struct cpu *c);
void vsock_cmd(char *arg);

#endif
