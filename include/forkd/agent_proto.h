/* SPDX-License-Identifier: MIT */
/*
 * The forkd agent protocol, version 1: how the host talks to forkd-agent in
 * a Linux guest over one virtio-vsock stream (docs/agent-protocol.md). Shared
 * by the guest agent (guest/agent/) and the host client (src/agent/).
 *
 * A connection carries exactly one operation. The host connects to guest
 * port FK_AGENT_PORT (through the VM's hybrid-vsock Unix socket:
 * "CONNECT 52\n" -> "OK <port>\n"), sends one FK_FRAME_REQUEST, and then
 * frames flow as the operation defines; the agent closes the stream when the
 * operation is over. Many connections may be open at once; each is served
 * on its own, so one slow or stuck operation never holds up another.
 *
 * Every frame is an 8-byte header and a payload:
 *
 *   offset 0  u16  magic FK_AGENT_MAGIC (little-endian: bytes 'F' 'K')
 *   offset 2  u8   version FK_AGENT_VERSION
 *   offset 3  u8   type (enum fk_frame_type)
 *   offset 4  u32  payload length, little-endian, <= FK_AGENT_MAX_PAYLOAD
 *
 * Payloads of REQUEST, RESPONSE, ERROR, EXIT and SIGNAL are one JSON object
 * (UTF-8, no NUL, at most FK_AGENT_MAX_JSON bytes); STDIN, STDOUT, STDERR
 * and DATA carry raw bytes; STDIN_EOF and DATA_EOF are empty. A frame that
 * breaks any of this is a protocol error: the receiver answers with an
 * ERROR frame if it can, naming what was wrong, and closes the connection.
 *
 * Operations (the REQUEST's "op"):
 *
 *   ping        -> RESPONSE {"agent":"forkd-agent","version":1,"pid":N,
 *                            "boot_id":"..","fork_pending":bool,"generation":"hex32"}
 *   exec        {"argv":[..] (required, argv[0] a path or a name looked up in PATH),
 *                "env":{"K":"V",..} (added to the agent's default environment),
 *                "cwd":"/" , "uid":0, "gid":0, "timeout_ms":0 (0: none),
 *                "stdin":false (true: the host sends STDIN frames, then STDIN_EOF;
 *                false: the command's stdin is /dev/null)}
 *               -> RESPONSE {"pid":N} once the command runs, then STDOUT and
 *                  STDERR frames as output arrives, then one EXIT
 *                  {"exit_code":N} or {"signal":N} with "timed_out":bool.
 *                  The host may send SIGNAL {"signal":N} at any time.
 *                  Refused (ERROR) while a fork notification is pending.
 *   put         {"path":"/abs/path","mode":420}
 *               -> the host sends DATA frames then DATA_EOF; the agent writes a
 *                  temporary file beside path, fsyncs and renames it, and
 *                  answers RESPONSE {"size":N}.
 *   get         {"path":"/abs/path"}
 *               -> RESPONSE {"size":N,"mode":M}, DATA frames, DATA_EOF.
 *   stat        {"path":..} -> RESPONSE {"type":"file"|"dir"|"link"|"other",
 *                              "size":N,"mode":M,"uid":N,"gid":N,"mtime_ns":N}
 *   ls          {"path":..} -> RESPONSE {"entries":[{"name":..,"type":..,"size":N,
 *                              "mode":M},..],"truncated":bool}
 *   rm          {"path":..,"recursive":false} -> RESPONSE {}
 *   shutdown    {"action":"poweroff"|"reboot"} -> RESPONSE {}, then the guest goes down
 *   fork_notify {"generation":"hex32","entropy":"hex, 32..256 bytes",
 *                "realtime_ns":N,"hostname":"..","machine_id":"hex32"}
 *               -> RESPONSE {"applied":true}: the kernel RNG was fed and
 *                  reseeded, CLOCK_REALTIME stepped, hostname and
 *                  /etc/machine-id set. Sent by the VMM to every BRANCH child
 *                  and restored VM.
 *
 * Any operation may end with ERROR {"error":"message","errno":N} instead
 * ("errno" is 0 when no system error applies).
 */
#ifndef FORKD_AGENT_PROTO_H
#define FORKD_AGENT_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define FK_AGENT_PORT	     52u
#define FK_AGENT_MAGIC	     0x4b46u /* "FK" */
#define FK_AGENT_VERSION     1u
#define FK_AGENT_HDR_LEN     8u
#define FK_AGENT_MAX_PAYLOAD (256u * 1024u)
#define FK_AGENT_MAX_JSON    (64u * 1024u)
/* Most entries an ls answer lists (the rest are cut, "truncated":true). */
#define FK_AGENT_LS_MAX 1000u

enum fk_frame_type {
	FK_FRAME_REQUEST = 1,	/* host -> agent, JSON, first frame only */
	FK_FRAME_RESPONSE = 2,	/* agent -> host, JSON */
	FK_FRAME_ERROR = 3,	/* either way, JSON; ends the operation */
	FK_FRAME_STDIN = 4,	/* host -> agent, bytes */
	FK_FRAME_STDIN_EOF = 5, /* host -> agent, empty */
	FK_FRAME_STDOUT = 6,	/* agent -> host, bytes */
	FK_FRAME_STDERR = 7,	/* agent -> host, bytes */
	FK_FRAME_EXIT = 8,	/* agent -> host, JSON; ends exec */
	FK_FRAME_SIGNAL = 9,	/* host -> agent, JSON */
	FK_FRAME_DATA = 10,	/* file bytes, either way */
	FK_FRAME_DATA_EOF = 11, /* end of file bytes, empty */
	FK_FRAME_TYPE_MAX = 11,
};

struct fk_frame_hdr {
	uint8_t version;
	uint8_t type;
	uint32_t len;
};

/* "REQUEST", "STDOUT", ...; "unknown" for anything else. */
const char *fk_frame_type_name(unsigned type);

/* True for the types whose payload is a JSON object. */
int fk_frame_is_json(unsigned type);

/* Writes the 8-byte header of a frame of `type` carrying `len` payload bytes. */
void fk_frame_hdr_encode(uint8_t out[FK_AGENT_HDR_LEN], unsigned type, uint32_t len);

/*
 * Checks and decodes a header. Returns 0, or a negative errno with a
 * one-line reason in why: -EPROTO bad magic, -EPROTONOSUPPORT another
 * version, -EBADMSG unknown type, or an empty frame type (EOF frames)
 * carrying bytes, -EMSGSIZE payload over FK_AGENT_MAX_PAYLOAD (or over
 * FK_AGENT_MAX_JSON for a JSON type).
 */
int fk_frame_hdr_decode(const uint8_t in[FK_AGENT_HDR_LEN], struct fk_frame_hdr *hdr, char *why,
			size_t why_len);

/*
 * Incremental frame reader for a non-blocking stream. Feed it what read(2)
 * returned; it holds at most one frame (FK_AGENT_HDR_LEN +
 * FK_AGENT_MAX_PAYLOAD bytes), so a peer cannot make it buffer more.
 */
struct fk_frame_reader {
	uint8_t *buf; /* FK_AGENT_HDR_LEN + FK_AGENT_MAX_PAYLOAD bytes */
	size_t have;
	size_t consumed; /* bytes of the frame last returned, dropped on the next call */
	char why[160];	 /* reason of the last error */
};

int fk_frame_reader_init(struct fk_frame_reader *r);
void fk_frame_reader_free(struct fk_frame_reader *r);

/*
 * Reads once from fd and looks for a whole frame. Returns 1 with *hdr and
 * *payload set (payload valid until the next call), 0 if more bytes are
 * needed (or read would block), -ENODATA if the peer closed the stream at a
 * frame boundary, -EPIPE if it closed mid-frame, a header error from
 * fk_frame_hdr_decode, or -errno of read; r->why then says what was wrong.
 * Call again after a 1 before polling: a frame already buffered is returned
 * without reading. After an error the stream is out of step: close it.
 */
int fk_frame_read(struct fk_frame_reader *r, int fd, struct fk_frame_hdr *hdr,
		  const uint8_t **payload);

/*
 * Writes one whole frame (retrying short writes and EINTR; on a non-blocking
 * fd it polls until the fd takes more). Returns 0 or -errno: -EINVAL for an
 * unknown type, -EMSGSIZE if len is too large for the type, -EPIPE if the
 * peer is gone. Sockets are written with MSG_NOSIGNAL; for a pipe the caller
 * must ignore SIGPIPE to get -EPIPE instead of the signal.
 */
int fk_frame_write(int fd, unsigned type, const void *payload, uint32_t len);

#endif
