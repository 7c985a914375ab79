/* SPDX-License-Identifier: MIT */
/* A handler's side of one connection: sending JSON and errors, waiting for frames. */
#include "agent.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int conn_send_json(struct conn *c, unsigned type, json_t *obj)
{
	char *text = json_dumps(obj, JSON_COMPACT);

	if (!text)
		return -ENOMEM;
	int ret = fk_frame_write(c->fd, type, text, (uint32_t)strlen(text));
	free(text);
	return ret;
}

int conn_send_error(struct conn *c, int err, const char *fmt, ...)
{
	char message[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	/* Messages that already start with the op ("put /x: ...") are not prefixed twice. */
	size_t op_len = strlen(c->op);
	bool names_op = strncmp(message, c->op, op_len) == 0 &&
			(message[op_len] == ' ' || message[op_len] == ':');
	fprintf(stderr, "forkd-agent: %s%s%s\n", names_op ? "" : c->op, names_op ? "" : ": ",
		message);

	json_t *obj = json_pack("{s:s,s:i}", "error", message, "errno", err);
	if (obj) {
		/* The host may be gone already; the log line above is all that is left to do. */
		(void)conn_send_json(c, FK_FRAME_ERROR, obj);
		json_decref(obj);
	}
	return err ? -err : -EPROTO;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int conn_next_frame(struct conn *c, int timeout_ms, struct fk_frame_hdr *hdr,
		    const uint8_t **payload)
{
	int64_t deadline = now_ms() + timeout_ms;

	for (;;) {
		int ret = fk_frame_read(&c->reader, c->fd, hdr, payload);
		if (ret != 0)
			return ret;
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
			return -errno;
	}
}

bool conn_peer_gone(int err)
{
	return err == -ENODATA || err == -EPIPE || err == -ECONNRESET;
}

int conn_frame_failed(struct conn *c, int err)
{
	/* A host that only half-closed its side can still read why; if it is gone, the log says it.
	 */
	if (err == -ENODATA)
		conn_send_error(c, EPIPE, "the host closed the connection before the %s ended",
				c->op);
	else if (err == -ETIMEDOUT)
		conn_send_error(c, ETIMEDOUT, "the host sent nothing for too long");
	else
		conn_send_error(c, -err, "%s", c->reader.why);
	return err;
}

int conn_unexpected_frame(struct conn *c, unsigned type, const char *expected)
{
	return conn_send_error(c, EBADMSG, "unexpected %s frame (expected %s)",
			       fk_frame_type_name(type), expected);
}
