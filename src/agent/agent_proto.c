/* SPDX-License-Identifier: MIT */
/*
 * The agent protocol's frame codec (include/forkd/agent_proto.h), shared by
 * the host library and the static guest agent: libc only.
 */
#include "forkd/agent_proto.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#define FRAME_BUF_LEN (FK_AGENT_HDR_LEN + FK_AGENT_MAX_PAYLOAD)

static const char *const frame_type_names[] = {
    [FK_FRAME_REQUEST] = "REQUEST",	[FK_FRAME_RESPONSE] = "RESPONSE",
    [FK_FRAME_ERROR] = "ERROR",		[FK_FRAME_STDIN] = "STDIN",
    [FK_FRAME_STDIN_EOF] = "STDIN_EOF", [FK_FRAME_STDOUT] = "STDOUT",
    [FK_FRAME_STDERR] = "STDERR",	[FK_FRAME_EXIT] = "EXIT",
    [FK_FRAME_SIGNAL] = "SIGNAL",	[FK_FRAME_DATA] = "DATA",
    [FK_FRAME_DATA_EOF] = "DATA_EOF",
};

const char *fk_frame_type_name(unsigned type)
{
	if (type == 0 || type > FK_FRAME_TYPE_MAX)
		return "unknown";
	return frame_type_names[type];
}

int fk_frame_is_json(unsigned type)
{
	switch (type) {
	case FK_FRAME_REQUEST:
	case FK_FRAME_RESPONSE:
	case FK_FRAME_ERROR:
	case FK_FRAME_EXIT:
	case FK_FRAME_SIGNAL:
		return 1;
	default:
		return 0;
	}
}

static int frame_is_empty(unsigned type)
{
	return type == FK_FRAME_STDIN_EOF || type == FK_FRAME_DATA_EOF;
}

/* The most payload a frame of a known type may carry. */
static uint32_t frame_max_payload(unsigned type)
{
	if (frame_is_empty(type))
		return 0;
	return fk_frame_is_json(type) ? FK_AGENT_MAX_JSON : FK_AGENT_MAX_PAYLOAD;
}

void fk_frame_hdr_encode(uint8_t out[FK_AGENT_HDR_LEN], unsigned type, uint32_t len)
{
	out[0] = FK_AGENT_MAGIC & 0xff;
	out[1] = FK_AGENT_MAGIC >> 8;
	out[2] = FK_AGENT_VERSION;
	out[3] = (uint8_t)type;
	out[4] = len & 0xff;
	out[5] = (len >> 8) & 0xff;
	out[6] = (len >> 16) & 0xff;
	out[7] = len >> 24;
}

static int say_why(char *why, size_t why_len, int ret, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int say_why(char *why, size_t why_len, int ret, const char *fmt, ...)
{
	va_list ap;

	if (why && why_len) {
		va_start(ap, fmt);
		vsnprintf(why, why_len, fmt, ap);
		va_end(ap);
	}
	return ret;
}

int fk_frame_hdr_decode(const uint8_t in[FK_AGENT_HDR_LEN], struct fk_frame_hdr *hdr, char *why,
			size_t why_len)
{
	unsigned magic = in[0] | (unsigned)in[1] << 8;
	unsigned type = in[3];
	uint32_t len = in[4] | (uint32_t)in[5] << 8 | (uint32_t)in[6] << 16 | (uint32_t)in[7] << 24;

	if (magic != FK_AGENT_MAGIC)
		return say_why(why, why_len, -EPROTO,
			       "bad frame magic 0x%04x (expected 0x%04x, \"FK\")", magic,
			       FK_AGENT_MAGIC);
	if (in[2] != FK_AGENT_VERSION)
		return say_why(why, why_len, -EPROTONOSUPPORT,
			       "frame of protocol version %u (this side speaks version %u)", in[2],
			       FK_AGENT_VERSION);
	if (type == 0 || type > FK_FRAME_TYPE_MAX)
		return say_why(why, why_len, -EBADMSG, "unknown frame type %u (expected 1..%u)",
			       type, FK_FRAME_TYPE_MAX);
	if (frame_is_empty(type) && len != 0)
		return say_why(why, why_len, -EBADMSG,
			       "%s frame carries %u payload bytes (it must be empty)",
			       fk_frame_type_name(type), len);
	if (len > frame_max_payload(type))
		return say_why(why, why_len, -EMSGSIZE,
			       "%s frame of %u payload bytes (at most %u for this type)",
			       fk_frame_type_name(type), len, frame_max_payload(type));
	hdr->version = in[2];
	hdr->type = (uint8_t)type;
	hdr->len = len;
	return 0;
}

int fk_frame_reader_init(struct fk_frame_reader *r)
{
	memset(r, 0, sizeof(*r));
	r->buf = malloc(FRAME_BUF_LEN);
	return r->buf ? 0 : -ENOMEM;
}

void fk_frame_reader_free(struct fk_frame_reader *r)
{
	free(r->buf);
	memset(r, 0, sizeof(*r));
}

/* 1 with the frame at the start of the buffer, 0 if incomplete, or a header error. */
static int buffered_frame(struct fk_frame_reader *r, struct fk_frame_hdr *hdr,
			  const uint8_t **payload)
{
	if (r->have < FK_AGENT_HDR_LEN)
		return 0;
	int ret = fk_frame_hdr_decode(r->buf, hdr, r->why, sizeof(r->why));
	if (ret < 0)
		return ret;
	if (r->have < FK_AGENT_HDR_LEN + (size_t)hdr->len)
		return 0;
	*payload = r->buf + FK_AGENT_HDR_LEN;
	r->consumed = FK_AGENT_HDR_LEN + (size_t)hdr->len;
	return 1;
}

int fk_frame_read(struct fk_frame_reader *r, int fd, struct fk_frame_hdr *hdr,
		  const uint8_t **payload)
{
	if (r->consumed) {
		memmove(r->buf, r->buf + r->consumed, r->have - r->consumed);
		r->have -= r->consumed;
		r->consumed = 0;
	}
	int ret = buffered_frame(r, hdr, payload);
	if (ret != 0)
		return ret;

	ssize_t n;
	do
		n = read(fd, r->buf + r->have, FRAME_BUF_LEN - r->have);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return 0;
		ret = -errno;
		return say_why(r->why, sizeof(r->why), ret, "read: %s", strerror(-ret));
	}
	if (n == 0) {
		if (r->have == 0)
			return say_why(r->why, sizeof(r->why), -ENODATA, "peer closed the stream");
		return say_why(r->why, sizeof(r->why), -EPIPE,
			       "peer closed the stream inside a frame (%zu bytes of it read)",
			       r->have);
	}
	r->have += (size_t)n;
	return buffered_frame(r, hdr, payload);
}

/* Waits until a non-blocking fd takes more bytes; fk_frame_write serves both kinds of fd. */
static int wait_writable(int fd)
{
	struct pollfd pfd = {.fd = fd, .events = POLLOUT};

	for (;;) {
		int n = poll(&pfd, 1, -1);
		if (n > 0)
			return 0;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

int fk_frame_write(int fd, unsigned type, const void *payload, uint32_t len)
{
	uint8_t hdr[FK_AGENT_HDR_LEN];
	struct iovec iov[2];
	int is_socket = 1;

	if (type == 0 || type > FK_FRAME_TYPE_MAX)
		return -EINVAL;
	if (len > frame_max_payload(type))
		return -EMSGSIZE;
	if (len && !payload)
		return -EINVAL;
	fk_frame_hdr_encode(hdr, type, len);
	iov[0] = (struct iovec){.iov_base = hdr, .iov_len = sizeof(hdr)};
	iov[1] = (struct iovec){.iov_base = (void *)payload, .iov_len = len};

	size_t left = sizeof(hdr) + (size_t)len;
	struct iovec *cur = iov;
	int iovcnt = len ? 2 : 1;
	while (left) {
		ssize_t n;
		/* MSG_NOSIGNAL: a vanished peer is -EPIPE, not a SIGPIPE that kills the caller. */
		if (is_socket) {
			struct msghdr msg = {.msg_iov = cur, .msg_iovlen = (size_t)iovcnt};
			n = sendmsg(fd, &msg, MSG_NOSIGNAL);
			if (n < 0 && errno == ENOTSOCK) {
				is_socket = 0;
				continue;
			}
		} else {
			n = writev(fd, cur, iovcnt);
		}
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK) {
				int ret = wait_writable(fd);
				if (ret < 0)
					return ret;
				continue;
			}
			return -errno;
		}
		left -= (size_t)n;
		while (n > 0) {
			size_t step = (size_t)n < cur->iov_len ? (size_t)n : cur->iov_len;
			cur->iov_base = (uint8_t *)cur->iov_base + step;
			cur->iov_len -= step;
			n -= (ssize_t)step;
			if (cur->iov_len == 0 && iovcnt > 1) {
				cur++;
				iovcnt--;
			}
		}
	}
	return 0;
}
