/* SPDX-License-Identifier: MIT */
/* Host side of the agent protocol: see agent_client.h. */
#include "agent/agent_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "forkd/agent_proto.h"
#include "util/fdio.h"

#define CONNECT_REPLY_MAX 32

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_ms_f(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Milliseconds left before deadline for poll(2): -1 forever, 0 passed. */
static int poll_timeout(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	return left <= 0 ? 0 : (left > 60000 ? 60000 : (int)left);
}

int fk_agent_socket_path(const char *vm, char *out, size_t out_len, struct fk_err *err)
{
	struct stat st;
	int n;

	if (!vm || !vm[0])
		return fk_fail(err, EINVAL, "expected a VM: its directory or its vsock socket");
	if (stat(vm, &st) < 0)
		return fk_fail_errno(err, errno, "VM '%s'", vm);
	if (S_ISDIR(st.st_mode))
		n = snprintf(out, out_len, "%s/vsock.sock", vm);
	else if (S_ISSOCK(st.st_mode))
		n = snprintf(out, out_len, "%s", vm);
	else
		return fk_fail(err, EINVAL,
			       "VM '%s': expected a VM directory (holding vsock.sock) or a vsock "
			       "Unix socket",
			       vm);
	if (n < 0 || (size_t)n >= out_len)
		return fk_fail(err, ENAMETOOLONG, "VM '%s': path too long", vm);
	return 0;
}

int fk_vsock_connect(const char *uds_path, uint32_t port, int timeout_ms, struct fk_err *err)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	char line[CONNECT_REPLY_MAX + 1];
	size_t have = 0;
	int fd, ret, len;

	if (strlen(uds_path) >= sizeof(addr.sun_path))
		return fk_fail(err, ENAMETOOLONG, "vsock socket %s: path longer than %zu bytes",
			       uds_path, sizeof(addr.sun_path) - 1);
	memcpy(addr.sun_path, uds_path, strlen(uds_path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fk_fail_errno(err, errno, "vsock socket %s: socket", uds_path);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = fk_fail_errno(err, errno, "vsock socket %s: connect", uds_path);
		goto fail;
	}
	len = snprintf(line, sizeof(line), "CONNECT %u\n", port);
	ret = fk_write_all(fd, line, (size_t)len);
	if (ret < 0) {
		fk_fail_errno(err, -ret, "vsock socket %s: send CONNECT", uds_path);
		goto fail;
	}
	/* Byte by byte: whatever follows the OK line belongs to the guest's stream. */
	for (;;) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		int r = poll(&p, 1, poll_timeout(deadline));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = fk_fail_errno(err, errno, "vsock socket %s: poll", uds_path);
			goto fail;
		}
		if (r == 0) {
			ret =
			    fk_fail(err, ETIMEDOUT,
				    "vsock socket %s: guest port %u: no answer to CONNECT in %d ms",
				    uds_path, port, timeout_ms);
			goto fail;
		}
		ssize_t n = read(fd, line + have, 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = fk_fail_errno(err, errno, "vsock socket %s: read", uds_path);
			goto fail;
		}
		if (n == 0) {
			ret = fk_fail(err, ECONNREFUSED,
				      "vsock socket %s: guest port %u refused the connection "
				      "(nothing listens there yet, or the VM reset it)",
				      uds_path, port);
			goto fail;
		}
		if (line[have++] == '\n')
			break;
		if (have == CONNECT_REPLY_MAX) {
			ret = fk_fail(err, EPROTO,
				      "vsock socket %s: CONNECT answer longer than %d "
				      "bytes: expected \"OK <port>\"",
				      uds_path, CONNECT_REPLY_MAX);
			goto fail;
		}
	}
	line[have] = '\0';
	if (strncmp(line, "OK ", 3) != 0) {
		line[strcspn(line, "\n")] = '\0';
		ret = fk_fail(err, EPROTO,
			      "vsock socket %s: CONNECT answered '%s', expected \"OK <port>\"",
			      uds_path, line);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return ret;
}

/* ---- one operation's stream ---- */

struct session {
	const char *what; /* "exec", "put /x": names the operation in messages */
	const char *uds;
	int sock;
	struct fk_frame_reader rd;
	uint8_t *out; /* one outgoing frame being written */
	size_t out_off, out_len;
	/* Streamed to the agent as data_type frames, then one eof_type frame. */
	int src_fd;
	unsigned data_type, eof_type;
	bool src_open;
	int64_t deadline;
	int cancel_fd; /* readable: abandon the operation (-ECANCELED); -1: never */
};

static int session_open(struct session *s, const char *uds, const char *what, int timeout_ms,
			struct fk_err *err)
{
	int ret;

	memset(s, 0, sizeof(*s));
	s->what = what;
	s->uds = uds;
	s->src_fd = -1;
	s->deadline = -1;
	s->cancel_fd = -1;
	s->out = malloc(FK_AGENT_HDR_LEN + FK_AGENT_MAX_PAYLOAD);
	if (!s->out)
		return fk_fail(err, ENOMEM, "%s: out of memory", what);
	ret = fk_frame_reader_init(&s->rd);
	if (ret < 0) {
		free(s->out);
		s->out = NULL;
		return fk_fail(err, -ret, "%s: out of memory", what);
	}
	s->sock = fk_vsock_connect(uds, FK_AGENT_PORT, timeout_ms, err);
	if (s->sock < 0) {
		ret = s->sock;
		fk_frame_reader_free(&s->rd);
		free(s->out);
		s->out = NULL;
		return fk_wrap(err, "%s: agent", what);
	}
	if (fcntl(s->sock, F_SETFL, fcntl(s->sock, F_GETFL) | O_NONBLOCK) < 0) {
		ret = fk_fail_errno(err, errno, "%s: fcntl", what);
		close(s->sock);
		fk_frame_reader_free(&s->rd);
		free(s->out);
		s->out = NULL;
		return ret;
	}
	return 0;
}

static void session_close(struct session *s)
{
	if (s->out) {
		close(s->sock);
		fk_frame_reader_free(&s->rd);
		free(s->out);
		s->out = NULL;
	}
}

/* Queues one frame; the caller has checked nothing else is queued. */
static int session_queue(struct session *s, unsigned type, const void *payload, uint32_t len,
			 struct fk_err *err)
{
	if (len > FK_AGENT_MAX_PAYLOAD || (fk_frame_is_json(type) && len > FK_AGENT_MAX_JSON))
		return fk_fail(err, EMSGSIZE, "%s: %s frame of %u bytes is too large", s->what,
			       fk_frame_type_name(type), len);
	fk_frame_hdr_encode(s->out, type, len);
	if (len && payload != s->out + FK_AGENT_HDR_LEN)
		memcpy(s->out + FK_AGENT_HDR_LEN, payload, len);
	s->out_off = 0;
	s->out_len = FK_AGENT_HDR_LEN + len;
	return 0;
}

static int session_queue_json(struct session *s, unsigned type, json_t *obj, struct fk_err *err)
{
	char *text = json_dumps(obj, JSON_COMPACT);
	int ret;

	if (!text)
		return fk_fail(err, EINVAL, "%s: request cannot be encoded as JSON", s->what);
	ret = session_queue(s, type, text, (uint32_t)strlen(text), err);
	free(text);
	return ret;
}

/* An ERROR frame's payload as an error: its errno (EREMOTEIO if none) and message. */
static int agent_error(struct session *s, const uint8_t *payload, uint32_t len, struct fk_err *err)
{
	json_error_t jerr;
	json_t *obj = json_loadb((const char *)payload, len, 0, &jerr);
	const char *msg = json_string_value(json_object_get(obj, "error"));
	json_int_t code = json_integer_value(json_object_get(obj, "errno"));
	int ret;

	if (code <= 0 || code > 4095)
		code = EREMOTEIO;
	ret = fk_fail(err, (int)code, "%s: the agent answered: %s", s->what,
		      msg ? msg : "an error it did not describe");
	json_decref(obj);
	return ret;
}

/* A JSON payload as an object; -EPROTO (with err) if it is not one. */
static int parse_object(struct session *s, const char *frame, const uint8_t *payload, uint32_t len,
			json_t **out, struct fk_err *err)
{
	json_error_t jerr;

	*out = json_loadb((const char *)payload, len, 0, &jerr);
	if (*out && json_is_object(*out))
		return 0;
	json_decref(*out);
	*out = NULL;
	return fk_fail(err, EPROTO, "%s: the agent's %s frame is not a JSON object: %s", s->what,
		       frame, jerr.text);
}

/* The operation's one RESPONSE as an object in *obj; -EPROTO for a second one or a bad payload. */
static int first_response(struct session *s, bool *started, const uint8_t *payload, uint32_t len,
			  json_t **obj, struct fk_err *err)
{
	if (*started)
		return fk_fail(err, EPROTO, "%s: a second RESPONSE from the agent", s->what);
	if (parse_object(s, "RESPONSE", payload, len, obj, err) < 0)
		return -EPROTO;
	*started = true;
	return 0;
}

/*
 * Handles one frame from the agent: returns 1 when the operation is over, 0
 * to go on, or -errno with err.
 */
typedef int (*frame_fn)(struct session *s, void *ctx, const struct fk_frame_hdr *hdr,
			const uint8_t *payload, struct fk_err *err);

static int session_run(struct session *s, frame_fn on_frame, void *ctx, struct fk_err *err)
{
	for (;;) {
		struct pollfd p[3] = {{.fd = s->sock, .events = POLLIN},
				      {.fd = -1},
				      {.fd = s->cancel_fd, .events = POLLIN}};
		int r;

		if (s->out_off < s->out_len)
			p[0].events |= POLLOUT;
		else if (s->src_open)
			p[1] = (struct pollfd){.fd = s->src_fd, .events = POLLIN};
		r = poll(p, 3, poll_timeout(s->deadline));
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return fk_fail_errno(err, errno, "%s: poll", s->what);
		/* Before the input: a cancelled upload must not end with its EOF frame. */
		if (p[2].revents)
			return fk_fail(err, ECANCELED, "%s: cancelled by the caller", s->what);
		if (r == 0)
			return fk_fail(err, ETIMEDOUT, "%s: the agent did not answer in time",
				       s->what);
		if (p[0].revents & (POLLIN | POLLHUP | POLLERR)) {
			for (;;) {
				struct fk_frame_hdr hdr;
				const uint8_t *payload;
				int got = fk_frame_read(&s->rd, s->sock, &hdr, &payload);

				if (got == 0)
					break;
				if (got == -ENODATA || got == -EPIPE || got == -ECONNRESET)
					return fk_fail(err, EPIPE,
						       "%s: the agent closed the connection before "
						       "the end of the operation (the guest went "
						       "down, or the VM was restored or branched)",
						       s->what);
				if (got < 0)
					return fk_fail(err, -got,
						       "%s: bad frame from the agent: %s", s->what,
						       s->rd.why);
				got = on_frame(s, ctx, &hdr, payload, err);
				if (got != 0)
					return got < 0 ? got : 0;
			}
		}
		if (p[0].revents & POLLOUT) {
			ssize_t n = send(s->sock, s->out + s->out_off, s->out_len - s->out_off,
					 MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EINTR) {
				/* The agent may have ended the operation: read its answer first. */
				if (errno == EPIPE || errno == ECONNRESET) {
					s->out_off = s->out_len;
					s->src_open = false;
					continue;
				}
				return fk_fail_errno(err, errno, "%s: send", s->what);
			}
			if (n > 0)
				s->out_off += (size_t)n;
		}
		if (p[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			ssize_t n =
			    read(s->src_fd, s->out + FK_AGENT_HDR_LEN, FK_AGENT_MAX_PAYLOAD);
			if (n < 0 && (errno == EINTR || errno == EAGAIN))
				continue;
			if (n < 0)
				return fk_fail_errno(err, errno, "%s: read input", s->what);
			if (n == 0) {
				s->src_open = false;
				session_queue(s, s->eof_type, NULL, 0, err);
			} else {
				session_queue(s, s->data_type, s->out + FK_AGENT_HDR_LEN,
					      (uint32_t)n, err);
			}
		}
	}
}

/* ---- one-answer operations ---- */

struct call_ctx {
	json_t *response;
};

static int on_call_frame(struct session *s, void *ctx, const struct fk_frame_hdr *hdr,
			 const uint8_t *payload, struct fk_err *err)
{
	struct call_ctx *c = ctx;

	if (hdr->type == FK_FRAME_ERROR)
		return agent_error(s, payload, hdr->len, err);
	if (hdr->type != FK_FRAME_RESPONSE)
		return fk_fail(err, EPROTO, "%s: unexpected %s frame from the agent", s->what,
			       fk_frame_type_name(hdr->type));
	if (parse_object(s, "RESPONSE", payload, hdr->len, &c->response, err) < 0)
		return -EPROTO;
	return 1;
}

int fk_agent_call(const char *uds_path, json_t *request, json_t **response, int timeout_ms,
		  struct fk_err *err)
{
	const char *op = json_string_value(json_object_get(request, "op"));
	struct call_ctx ctx = {0};
	struct session s;
	int ret;

	*response = NULL;
	ret = session_open(&s, uds_path, op ? op : "agent call", timeout_ms, err);
	if (ret < 0)
		return ret;
	s.deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	ret = session_queue_json(&s, FK_FRAME_REQUEST, request, err);
	if (ret == 0)
		ret = session_run(&s, on_call_frame, &ctx, err);
	session_close(&s);
	if (ret == 0)
		*response = ctx.response;
	return ret;
}

/* ---- exec ---- */

struct exec_ctx {
	const struct fk_exec_io *io;
	struct fk_exec_result *res;
	double sent_ms;
	bool started;
};

static int on_exec_frame(struct session *s, void *ctx, const struct fk_frame_hdr *hdr,
			 const uint8_t *payload, struct fk_err *err)
{
	struct exec_ctx *e = ctx;
	json_t *obj;
	int ret;

	switch (hdr->type) {
	case FK_FRAME_ERROR:
		return agent_error(s, payload, hdr->len, err);
	case FK_FRAME_RESPONSE:
		if (first_response(s, &e->started, payload, hdr->len, &obj, err) < 0)
			return -EPROTO;
		e->res->pid = (long)json_integer_value(json_object_get(obj, "pid"));
		json_decref(obj);
		e->res->first_byte_ms = now_ms_f() - e->sent_ms;
		return 0;
	case FK_FRAME_STDOUT:
	case FK_FRAME_STDERR: {
		int fd = hdr->type == FK_FRAME_STDOUT ? e->io->out_fd : e->io->err_fd;

		if (!e->started)
			return fk_fail(err, EPROTO, "%s: output before the agent's RESPONSE",
				       s->what);
		ret = fk_write_all(fd, payload, hdr->len);
		if (ret < 0)
			return fk_fail_errno(err, -ret, "%s: write the command's %s", s->what,
					     hdr->type == FK_FRAME_STDOUT ? "stdout" : "stderr");
		if (hdr->type == FK_FRAME_STDOUT)
			e->res->out_bytes += hdr->len;
		else
			e->res->err_bytes += hdr->len;
		return 0;
	}
	case FK_FRAME_EXIT: {
		json_t *code, *sig;

		if (parse_object(s, "EXIT", payload, hdr->len, &obj, err) < 0)
			return -EPROTO;
		code = json_object_get(obj, "exit_code");
		sig = json_object_get(obj, "signal");
		e->res->timed_out = json_is_true(json_object_get(obj, "timed_out"));
		if (json_is_integer(sig) && json_integer_value(sig) > 0 &&
		    json_integer_value(sig) < 128) {
			e->res->signal = (int)json_integer_value(sig);
		} else if (json_is_integer(code) && json_integer_value(code) >= 0 &&
			   json_integer_value(code) <= 255) {
			e->res->exit_code = (int)json_integer_value(code);
		} else {
			json_decref(obj);
			return fk_fail(err, EPROTO,
				       "%s: EXIT without a valid exit_code (0..255) or signal",
				       s->what);
		}
		json_decref(obj);
		return 1;
	}
	default:
		return fk_fail(err, EPROTO, "%s: unexpected %s frame from the agent", s->what,
			       fk_frame_type_name(hdr->type));
	}
}

int fk_agent_exec(const char *uds_path, json_t *request, const struct fk_exec_io *io,
		  int connect_timeout_ms, struct fk_exec_result *res, struct fk_err *err)
{
	return fk_agent_exec_cancel(uds_path, request, io, -1, connect_timeout_ms, res, err);
}

int fk_agent_exec_cancel(const char *uds_path, json_t *request, const struct fk_exec_io *io,
			 int cancel_fd, int connect_timeout_ms, struct fk_exec_result *res,
			 struct fk_err *err)
{
	struct exec_ctx ctx = {.io = io, .res = res};
	struct session s;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = session_open(&s, uds_path, "exec", connect_timeout_ms, err);
	if (ret < 0)
		return ret;
	s.cancel_fd = cancel_fd;
	json_object_set_new(request, "op", json_string("exec"));
	json_object_set_new(request, "stdin", json_boolean(io->in_fd >= 0));
	ret = session_queue_json(&s, FK_FRAME_REQUEST, request, err);
	if (ret == 0) {
		s.src_fd = io->in_fd;
		s.src_open = io->in_fd >= 0;
		s.data_type = FK_FRAME_STDIN;
		s.eof_type = FK_FRAME_STDIN_EOF;
		ctx.sent_ms = now_ms_f();
		ret = session_run(&s, on_exec_frame, &ctx, err);
	}
	session_close(&s);
	return ret;
}

/* ---- files ---- */

struct put_ctx {
	uint64_t size;
};

static int on_put_frame(struct session *s, void *ctx, const struct fk_frame_hdr *hdr,
			const uint8_t *payload, struct fk_err *err)
{
	struct put_ctx *p = ctx;
	json_t *obj;

	if (hdr->type == FK_FRAME_ERROR)
		return agent_error(s, payload, hdr->len, err);
	if (hdr->type != FK_FRAME_RESPONSE || s->src_open || s->out_off < s->out_len)
		return fk_fail(err, EPROTO,
			       "%s: unexpected %s frame from the agent before the "
			       "upload ended",
			       s->what, fk_frame_type_name(hdr->type));
	if (parse_object(s, "RESPONSE", payload, hdr->len, &obj, err) < 0)
		return -EPROTO;
	p->size = (uint64_t)json_integer_value(json_object_get(obj, "size"));
	json_decref(obj);
	return 1;
}

/*
 * One file operation: the request (NULL if json_pack refused the path),
 * then src_fd streamed as DATA frames if it is >= 0, frames to on_frame.
 */
static int file_op(const char *uds_path, const char *what, json_t *req, int src_fd,
		   frame_fn on_frame, void *ctx, int cancel_fd, int connect_timeout_ms,
		   struct fk_err *err)
{
	struct session s;
	int ret;

	if (!req)
		return fk_fail(err, EINVAL, "%s: path is not valid UTF-8", what);
	ret = session_open(&s, uds_path, what, connect_timeout_ms, err);
	if (ret < 0)
		return ret;
	s.cancel_fd = cancel_fd;
	ret = session_queue_json(&s, FK_FRAME_REQUEST, req, err);
	if (ret == 0) {
		s.src_fd = src_fd;
		s.src_open = src_fd >= 0;
		s.data_type = FK_FRAME_DATA;
		s.eof_type = FK_FRAME_DATA_EOF;
		ret = session_run(&s, on_frame, ctx, err);
	}
	session_close(&s);
	return ret;
}

int fk_agent_put(const char *uds_path, int src_fd, const char *guest_path, unsigned mode,
		 int connect_timeout_ms, uint64_t *bytes, struct fk_err *err)
{
	return fk_agent_put_cancel(uds_path, src_fd, guest_path, mode, -1, connect_timeout_ms,
				   bytes, err);
}

int fk_agent_put_cancel(const char *uds_path, int src_fd, const char *guest_path, unsigned mode,
			int cancel_fd, int connect_timeout_ms, uint64_t *bytes, struct fk_err *err)
{
	json_t *req =
	    json_pack("{s:s,s:s,s:i}", "op", "put", "path", guest_path, "mode", (int)mode);
	struct put_ctx ctx = {0};
	char what[300];
	int ret;

	snprintf(what, sizeof(what), "put %.280s", guest_path);
	ret = file_op(uds_path, what, req, src_fd, on_put_frame, &ctx, cancel_fd,
		      connect_timeout_ms, err);
	json_decref(req);
	if (ret == 0 && bytes)
		*bytes = ctx.size;
	return ret;
}

struct get_ctx {
	int dst_fd;
	bool started;
	uint64_t expected, got;
	unsigned mode;
};

static int on_get_frame(struct session *s, void *ctx, const struct fk_frame_hdr *hdr,
			const uint8_t *payload, struct fk_err *err)
{
	struct get_ctx *g = ctx;
	json_t *obj;
	int ret;

	switch (hdr->type) {
	case FK_FRAME_ERROR:
		return agent_error(s, payload, hdr->len, err);
	case FK_FRAME_RESPONSE:
		if (first_response(s, &g->started, payload, hdr->len, &obj, err) < 0)
			return -EPROTO;
		g->expected = (uint64_t)json_integer_value(json_object_get(obj, "size"));
		g->mode = (unsigned)json_integer_value(json_object_get(obj, "mode")) & 07777;
		json_decref(obj);
		return 0;
	case FK_FRAME_DATA:
		if (!g->started)
			return fk_fail(err, EPROTO, "%s: DATA before the agent's RESPONSE",
				       s->what);
		ret = fk_write_all(g->dst_fd, payload, hdr->len);
		if (ret < 0)
			return fk_fail_errno(err, -ret, "%s: write", s->what);
		g->got += hdr->len;
		return 0;
	case FK_FRAME_DATA_EOF:
		if (!g->started)
			return fk_fail(err, EPROTO, "%s: DATA_EOF before the agent's RESPONSE",
				       s->what);
		if (g->got != g->expected)
			return fk_fail(err, EIO,
				       "%s: the agent announced %llu bytes and sent %llu (the file "
				       "changed while it was read?)",
				       s->what, (unsigned long long)g->expected,
				       (unsigned long long)g->got);
		return 1;
	default:
		return fk_fail(err, EPROTO, "%s: unexpected %s frame from the agent", s->what,
			       fk_frame_type_name(hdr->type));
	}
}

int fk_agent_get(const char *uds_path, const char *guest_path, int dst_fd, int connect_timeout_ms,
		 uint64_t *bytes, unsigned *mode, struct fk_err *err)
{
	return fk_agent_get_cancel(uds_path, guest_path, dst_fd, -1, connect_timeout_ms, bytes,
				   mode, err);
}

int fk_agent_get_cancel(const char *uds_path, const char *guest_path, int dst_fd, int cancel_fd,
			int connect_timeout_ms, uint64_t *bytes, unsigned *mode, struct fk_err *err)
{
	json_t *req = json_pack("{s:s,s:s}", "op", "get", "path", guest_path);
	struct get_ctx ctx = {.dst_fd = dst_fd};
	char what[300];
	int ret;

	snprintf(what, sizeof(what), "get %.280s", guest_path);
	ret = file_op(uds_path, what, req, -1, on_get_frame, &ctx, cancel_fd, connect_timeout_ms,
		      err);
	json_decref(req);
	if (ret == 0) {
		if (bytes)
			*bytes = ctx.got;
		if (mode)
			*mode = ctx.mode;
	}
	return ret;
}
