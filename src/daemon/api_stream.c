/* SPDX-License-Identifier: MIT */
/*
 * The routes that stream to and from a VM's guest agent: exec (NDJSON out),
 * file download and file upload. Each runs the agent client on a worker
 * thread; pipes between it and the HTTP thread bound the buffering, and a
 * cancel pipe (its write end closed) abandons the agent operation when the
 * client goes away or the daemon stops.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "daemon/api_internal.h"
#include "util/fdio.h"

#define AGENT_CONNECT_MS 5000
#define STREAM_CHUNK	 (48u * 1024u) /* raw bytes per NDJSON line: 64 KiB of base64 */
#define STREAM_POLL_MS	 500	       /* how often a waiting stream checks for api_stop */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* ---- base64 (RFC 4648, with padding) ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const uint8_t *in, size_t len, char *out)
{
	size_t o = 0, i;

	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64_alphabet[v >> 18];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = b64_alphabet[(v >> 6) & 63];
		out[o++] = b64_alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < len ? (uint32_t)in[i + 1] << 8 : 0);
		out[o++] = b64_alphabet[v >> 18];
		out[o++] = b64_alphabet[(v >> 12) & 63];
		out[o++] = i + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
		out[o++] = '=';
	}
	return o;
}

static int b64_value(char ch)
{
	const char *p = ch ? strchr(b64_alphabet, ch) : NULL;

	return p ? (int)(p - b64_alphabet) : -1;
}

/* Decodes text into a new buffer; -EINVAL with *bad_at the offending offset. */
static int b64_decode(const char *text, uint8_t **out, size_t *out_len, size_t *bad_at)
{
	size_t len = strlen(text), o = 0;
	uint8_t *buf;

	if (len % 4) {
		*bad_at = len;
		return -EINVAL;
	}
	buf = malloc(len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < len; i += 4) {
		int v[4];
		int pad = 0;

		for (int k = 0; k < 4; k++) {
			v[k] = b64_value(text[i + k]);
			if (text[i + k] == '=' && i + 4 == len && k >= 2 &&
			    (k == 3 || text[i + 3] == '=')) {
				v[k] = 0;
				pad++;
			} else if (v[k] < 0) {
				*bad_at = i + (size_t)k;
				free(buf);
				return -EINVAL;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 |
			     (uint32_t)v[3];
		buf[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			buf[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			buf[o++] = (uint8_t)w;
	}
	*out = buf;
	*out_len = o;
	return 0;
}

/* Waits for fd to be readable (or at its end): 1, or 0 when the client left or the api stops. */
static int wait_readable(struct api *api, int fd1, int fd2, int client_fd)
{
	for (;;) {
		struct pollfd p[3] = {{.fd = fd1, .events = POLLIN},
				      {.fd = fd2, .events = POLLIN},
				      {.fd = client_fd, .events = POLLRDHUP}};
		int r = poll(p, 3, STREAM_POLL_MS);

		if (api_stopping(api))
			return 0;
		if (r < 0 && errno != EINTR)
			return 0;
		if (r <= 0)
			continue;
		if (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR))
			return 0;
		if (p[0].revents || p[1].revents)
			return 1;
	}
}

/* ---- exec ---- */

struct exec_stream {
	struct api *api;
	char sock[PATH_MAX];
	json_t *req;
	int in_fd, out[2], errp[2], cancel[2], client_fd;
	pthread_t worker;
	bool started, joined;
	/* Written by the worker before it closes its pipe ends; read after the join. */
	int ret;
	struct fk_err err;
	struct fk_exec_result res;

	bool out_eof, err_eof, done;
	double start;
	char *line; /* the NDJSON line being sent */
	size_t line_len, line_off;
	uint8_t raw[STREAM_CHUNK];
};

static void *exec_worker(void *arg)
{
	struct exec_stream *s = arg;
	struct fk_exec_io io = {.in_fd = s->in_fd, .out_fd = s->out[1], .err_fd = s->errp[1]};

	s->ret = fk_agent_exec_cancel(s->sock, s->req, &io, s->cancel[0], AGENT_CONNECT_MS, &s->res,
				      &s->err);
	close_fd(&s->out[1]);
	close_fd(&s->errp[1]);
	return NULL;
}

static void exec_join(struct exec_stream *s)
{
	if (s->started && !s->joined) {
		pthread_join(s->worker, NULL);
		s->joined = true;
	}
}

static void exec_free(void *cls)
{
	struct exec_stream *s = cls;

	if (s->started && !s->joined) {
		/* The client left (or the api stops): abandon the command, unblock the worker. */
		close_fd(&s->cancel[1]);
		close_fd(&s->out[0]);
		close_fd(&s->errp[0]);
		exec_join(s);
	}
	close_fd(&s->in_fd);
	close_fd(&s->out[0]);
	close_fd(&s->out[1]);
	close_fd(&s->errp[0]);
	close_fd(&s->errp[1]);
	close_fd(&s->cancel[0]);
	close_fd(&s->cancel[1]);
	json_decref(s->req);
	free(s->line);
	free(s);
}

static int set_line(struct exec_stream *s, json_t *obj)
{
	char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	size_t len;

	json_decref(obj);
	if (!text)
		return -ENOMEM;
	len = strlen(text);
	free(s->line);
	s->line = realloc(text, len + 1);
	if (!s->line) {
		free(text);
		return -ENOMEM;
	}
	s->line[len] = '\n';
	s->line_len = len + 1;
	s->line_off = 0;
	return 0;
}

static json_t *exec_last_line(struct exec_stream *s)
{
	const char *code;

	if (s->ret < 0) {
		api_errno_status(-s->ret, &code);
		/* The agent could not be reached (or went away) before the command started. */
		if (!s->res.pid && (s->ret == -ECONNREFUSED || s->ret == -ETIMEDOUT ||
				    s->ret == -ECONNRESET || s->ret == -EPIPE))
			code = "unavailable";
		return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", s->err.msg);
	}
	if (s->res.signal) {
		if (s->res.timed_out)
			return json_pack("{s:i,s:b}", "signal", s->res.signal, "timed_out", 1);
		return json_pack("{s:i}", "signal", s->res.signal);
	}
	return json_pack("{s:i}", "exit", s->res.exit_code);
}

/* The next output line from whichever pipe is readable; 0, or <0 to end the response. */
static int exec_next_line(struct exec_stream *s)
{
	int fds[2] = {s->out_eof ? -1 : s->out[0], s->err_eof ? -1 : s->errp[0]};

	if (!wait_readable(s->api, fds[0], fds[1], s->client_fd))
		return -EPIPE;
	for (int k = 0; k < 2; k++) {
		struct pollfd p = {.fd = fds[k], .events = POLLIN};
		ssize_t n;

		if (fds[k] < 0 || poll(&p, 1, 0) <= 0)
			continue;
		n = read(fds[k], s->raw, sizeof(s->raw));
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			return 0;
		if (n <= 0) {
			*(k == 0 ? &s->out_eof : &s->err_eof) = true;
			return 0;
		}
		char *b64 = malloc(((size_t)n + 2) / 3 * 4 + 1);
		if (!b64)
			return -ENOMEM;
		b64[b64_encode(s->raw, (size_t)n, b64)] = '\0';
		int ret = set_line(s, json_pack("{s:s}", k == 0 ? "stdout" : "stderr", b64));
		free(b64);
		return ret;
	}
	return 0;
}

static ssize_t exec_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct exec_stream *s = cls;

	(void)pos;
	for (;;) {
		if (s->line_off < s->line_len) {
			size_t n = s->line_len - s->line_off;
			if (n > max)
				n = max;
			memcpy(buf, s->line + s->line_off, n);
			s->line_off += n;
			return (ssize_t)n;
		}
		if (s->done)
			return MHD_CONTENT_READER_END_OF_STREAM;
		if (s->out_eof && s->err_eof) {
			exec_join(s);
			api_metric(s->api, DAEMON_METRIC_EXEC, now_s() - s->start);
			if (set_line(s, exec_last_line(s)) < 0)
				return MHD_CONTENT_READER_END_WITH_ERROR;
			s->done = true;
			continue;
		}
		if (exec_next_line(s) < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
	}
}

static const char *const exec_fields[] = {"argv", "env",   "cwd",	"uid",
					  "gid",  "stdin", "timeout_ms"};

/* The body's checks the agent cannot make before the response starts; false after a 400. */
static bool exec_check(struct api_call *c, json_t *body)
{
	const char *key;
	json_t *v;
	size_t i;

	json_object_foreach(body, key, v)
	{
		bool known = false;
		for (i = 0; i < sizeof(exec_fields) / sizeof(exec_fields[0]); i++)
			known |= strcmp(key, exec_fields[i]) == 0;
		if (!known) {
			api_reply_error(c, 400,
					"exec: unknown field \"%s\" (expected argv, env, cwd, uid, "
					"gid, stdin, timeout_ms)",
					key);
			return false;
		}
	}
	v = json_object_get(body, "argv");
	if (!json_is_array(v) || json_array_size(v) == 0) {
		api_reply_error(c, 400, "exec: \"argv\": expected a non-empty array of strings");
		return false;
	}
	json_t *arg;
	json_array_foreach(v, i, arg) if (!json_is_string(arg))
	{
		api_reply_error(c, 400, "exec: \"argv\"[%zu]: expected a string", i);
		return false;
	}
	if ((v = json_object_get(body, "env")) && !json_is_object(v)) {
		api_reply_error(c, 400, "exec: \"env\": expected an object of strings");
		return false;
	}
	if ((v = json_object_get(body, "cwd")) && !json_is_string(v)) {
		api_reply_error(c, 400, "exec: \"cwd\": expected an absolute path");
		return false;
	}
	static const char *const ints[] = {"uid", "gid", "timeout_ms"};
	for (i = 0; i < 3; i++)
		if ((v = json_object_get(body, ints[i])) && !json_is_integer(v)) {
			api_reply_error(c, 400, "exec: \"%s\": expected an integer", ints[i]);
			return false;
		}
	if ((v = json_object_get(body, "stdin")) && !json_is_string(v)) {
		api_reply_error(c, 400, "exec: \"stdin\": expected base64 text");
		return false;
	}
	return true;
}

/* stdin's base64 decoded into a memfd at offset 0; -1 without stdin; -2 after a 400. */
static int exec_stdin(struct api_call *c, json_t *body)
{
	const char *text = json_string_value(json_object_get(body, "stdin"));
	uint8_t *data = NULL;
	size_t len = 0, bad = 0;
	int fd, ret;

	if (!text)
		return -1;
	ret = b64_decode(text, &data, &len, &bad);
	if (ret < 0) {
		api_reply_error(c, 400, "exec: \"stdin\": invalid base64 at character %zu", bad);
		return -2;
	}
	fd = memfd_create("forkd-exec-stdin", MFD_CLOEXEC);
	if (fd < 0 || fk_write_all(fd, data, len) < 0 || lseek(fd, 0, SEEK_SET) < 0) {
		api_reply_error(c, 500, "exec: stdin: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -2;
	}
	free(data);
	return fd;
}

void api_handle_exec(struct api_call *c)
{
	struct fk_err err = {0};
	struct exec_stream *s;
	int ret;

	if (!exec_check(c, c->body))
		return;
	s = calloc(1, sizeof(*s));
	if (!s) {
		api_reply_error(c, 500, "exec: out of memory");
		return;
	}
	s->api = c->api;
	s->start = now_s();
	s->client_fd = c->fd;
	s->in_fd = s->out[0] = s->out[1] = s->errp[0] = s->errp[1] = s->cancel[0] = s->cancel[1] =
	    -1;
	ret = daemon_vm_agent_socket(api_daemon(c), c->param, s->sock, sizeof(s->sock), &err);
	if (ret < 0) {
		api_reply_errno(c, ret, &err);
		exec_free(s);
		return;
	}
	s->in_fd = exec_stdin(c, c->body);
	if (s->in_fd == -2) {
		s->in_fd = -1;
		exec_free(s);
		return;
	}
	s->req = json_deep_copy(c->body);
	if (s->req)
		json_object_del(s->req, "stdin");
	if (!s->req || pipe2(s->out, O_CLOEXEC) < 0 || pipe2(s->errp, O_CLOEXEC) < 0 ||
	    pipe2(s->cancel, O_CLOEXEC) < 0) {
		api_reply_error(c, 500, "exec: %s", strerror(errno ? errno : ENOMEM));
		exec_free(s);
		return;
	}
	ret = pthread_create(&s->worker, NULL, exec_worker, s);
	if (ret) {
		api_reply_error(c, 500, "exec: start a thread: %s", strerror(ret));
		exec_free(s);
		return;
	}
	s->started = true;
	api_reply_stream(c, 200, "application/x-ndjson", exec_read, s, exec_free);
}

/* ---- files ---- */

struct file_stream {
	struct api *api;
	char sock[PATH_MAX];
	char *path;
	unsigned mode;
	int data[2], cancel[2], client_fd;
	pthread_t worker;
	bool put, started, joined, failed;
	int ret; /* the worker's, read after the join */
	struct fk_err err;
	uint64_t bytes;
};

static void file_join(struct file_stream *s)
{
	if (s->started && !s->joined) {
		pthread_join(s->worker, NULL);
		s->joined = true;
	}
}

static void file_free(void *cls)
{
	struct file_stream *s = cls;

	if (s->started && !s->joined) {
		close_fd(&s->cancel[1]);	    /* first: an upload must not end with its EOF */
		close_fd(&s->data[s->put ? 1 : 0]); /* our end; the worker closes its own */
		file_join(s);
	}
	close_fd(&s->data[0]);
	close_fd(&s->data[1]);
	close_fd(&s->cancel[0]);
	close_fd(&s->cancel[1]);
	free(s->path);
	free(s);
}

static void *get_worker(void *arg)
{
	struct file_stream *s = arg;

	s->ret = fk_agent_get_cancel(s->sock, s->path, s->data[1], s->cancel[0], AGENT_CONNECT_MS,
				     &s->bytes, &s->mode, &s->err);
	close_fd(&s->data[1]);
	return NULL;
}

static void *put_worker(void *arg)
{
	struct file_stream *s = arg;

	s->ret = fk_agent_put_cancel(s->sock, s->data[0], s->path, s->mode, s->cancel[0],
				     AGENT_CONNECT_MS, &s->bytes, &s->err);
	close_fd(&s->data[0]); /* the HTTP thread's next write fails: it stops sending */
	return NULL;
}

/* ?path= (absolute) and, for put, ?mode= (octal); the stream with the agent socket, or NULL. */
static struct file_stream *file_open(struct api_call *c, bool put)
{
	const char *path = api_query(c, "path"), *mode = api_query(c, "mode");
	struct fk_err err = {0};
	struct file_stream *s;
	int ret;

	if (!path || path[0] != '/') {
		api_reply_error(c, 400, "files: ?path=%s: expected an absolute path in the guest",
				path ? path : "");
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s || !(s->path = strdup(path))) {
		free(s);
		api_reply_error(c, 500, "files: out of memory");
		return NULL;
	}
	s->api = c->api;
	s->client_fd = c->fd;
	s->put = put;
	s->mode = 0644;
	s->data[0] = s->data[1] = s->cancel[0] = s->cancel[1] = -1;
	if (put && mode) {
		char *end;
		unsigned long m = strtoul(mode, &end, 8);
		if (!mode[0] || *end || m > 07777) {
			api_reply_error(c, 400, "files: ?mode=%s: expected octal 0 to 7777", mode);
			file_free(s);
			return NULL;
		}
		s->mode = (unsigned)m;
	}
	ret = daemon_vm_agent_socket(api_daemon(c), c->param, s->sock, sizeof(s->sock), &err);
	if (ret < 0) {
		api_reply_errno(c, ret, &err);
		file_free(s);
		return NULL;
	}
	if (pipe2(s->data, O_CLOEXEC) < 0 || pipe2(s->cancel, O_CLOEXEC) < 0) {
		api_reply_error(c, 500, "files: pipe: %s", strerror(errno));
		file_free(s);
		return NULL;
	}
	ret = pthread_create(&s->worker, NULL, put ? put_worker : get_worker, s);
	if (ret) {
		api_reply_error(c, 500, "files: start a thread: %s", strerror(ret));
		file_free(s);
		return NULL;
	}
	s->started = true;
	return s;
}

static ssize_t get_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct file_stream *s = cls;
	ssize_t n;

	(void)pos;
	for (;;) {
		if (!wait_readable(s->api, s->data[0], -1, s->client_fd))
			return MHD_CONTENT_READER_END_WITH_ERROR;
		n = read(s->data[0], buf, max);
		if (n < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (n > 0)
			return n;
		if (n < 0)
			return MHD_CONTENT_READER_END_WITH_ERROR;
		file_join(s);
		/* A download that failed half-way ends without its last chunk: the client sees it.
		 */
		return s->ret < 0 ? MHD_CONTENT_READER_END_WITH_ERROR
				  : MHD_CONTENT_READER_END_OF_STREAM;
	}
}

void api_handle_file_get(struct api_call *c)
{
	struct file_stream *s = file_open(c, false);
	struct pollfd p;

	if (!s)
		return;
	/* Until the first byte or the end: an error before any data is a plain error status. */
	if (!wait_readable(c->api, s->data[0], -1, c->fd)) {
		api_reply_error(c, 503, "files: the client left or the daemon is stopping");
		file_free(s);
		return;
	}
	p = (struct pollfd){.fd = s->data[0], .events = POLLIN};
	if (poll(&p, 1, 0) == 1 && !(p.revents & POLLIN)) {
		file_join(s);
		if (s->ret < 0)
			api_reply_errno(c, s->ret, &s->err);
		else
			api_reply_stream(c, 200, "application/octet-stream", get_read, s,
					 file_free);
		if (s->ret < 0)
			file_free(s);
		return;
	}
	api_reply_stream(c, 200, "application/octet-stream", get_read, s, file_free);
}

static void put_done(struct api_call *c, bool aborted)
{
	(void)aborted;
	if (c->upload)
		file_free(c->upload);
	c->upload = NULL;
}

void api_handle_file_put(struct api_call *c)
{
	struct file_stream *s = c->upload;

	switch (c->upload_phase) {
	case API_UPLOAD_BEGIN:
		s = file_open(c, true);
		c->upload = s;
		c->upload_cancel = put_done;
		return;
	case API_UPLOAD_DATA:
		if (!s->failed && fk_write_all(s->data[1], c->upload_data, c->upload_len) < 0)
			s->failed = true; /* the worker ended: its error is the answer */
		return;
	case API_UPLOAD_END:
		close_fd(&s->data[1]);
		file_join(s);
		if (s->ret < 0)
			api_reply_errno(c, s->ret, &s->err);
		else
			api_reply_empty(c, 204);
		return;
	}
}
