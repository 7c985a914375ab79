/* SPDX-License-Identifier: MIT */
/* Control socket client: one request, one reply, bounded by a deadline. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"

/* Replies are not bounded by the protocol; this only stops a runaway server. */
#define CONTROL_MAX_REPLY (64 * 1024 * 1024)
/* How often a connect to a server whose backlog is full is retried. */
#define CONNECT_RETRY_MS 10

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before `deadline` for poll(): -1 without a deadline. */
static int remaining_ms(int64_t deadline)
{
	int64_t left;

	if (deadline < 0)
		return -1;
	left = deadline - now_ms();
	return left < 0 ? 0 : left > 1000000 ? 1000000 : (int)left;
}

/* Returns 1 when `events` are ready on fd, 0 on timeout, -errno on error. */
static int wait_for(int fd, short events, int64_t deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};

	for (;;) {
		int n = poll(&pfd, 1, remaining_ms(deadline));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		return n;
	}
}

static int connect_socket(const char *path, int64_t deadline, int *out, struct fk_err *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	int fd;

	if (len == 0 || len >= sizeof(addr.sun_path))
		return fk_fail(err, ENAMETOOLONG,
			       "control socket '%s': expected a path of 1 to %zu bytes", path,
			       sizeof(addr.sun_path) - 1);
	memcpy(addr.sun_path, path, len + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fk_fail_errno(err, errno, "control socket %s: socket", path);
	/* A Unix connect never completes in the background: EAGAIN means retry. */
	while (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int e = errno;

		if (e == EINTR)
			continue;
		if (e != EAGAIN || remaining_ms(deadline) == 0) {
			close(fd);
			if (e == EAGAIN)
				return fk_fail(err, ETIMEDOUT,
					       "control socket %s: server too busy to accept a "
					       "connection in time",
					       path);
			return fk_fail_errno(err, e, "control socket %s: cannot connect", path);
		}
		poll(NULL, 0, CONNECT_RETRY_MS);
	}
	*out = fd;
	return 0;
}

static int send_all(int fd, const char *data, size_t len, int64_t deadline, const char *path,
		    int timeout_ms, struct fk_err *err)
{
	while (len) {
		ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
		int ret;

		if (n >= 0) {
			data += n;
			len -= (size_t)n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return fk_fail_errno(err, errno, "control socket %s: sending the request",
					     path);
		ret = wait_for(fd, POLLOUT, deadline);
		if (ret < 0)
			return fk_fail_errno(err, -ret, "control socket %s: poll", path);
		if (ret == 0)
			return fk_fail(
			    err, ETIMEDOUT,
			    "control socket %s: server did not take the request within %d ms", path,
			    timeout_ms);
	}
	return 0;
}

/* Reads up to the first '\n'; *line is malloc'ed and NUL-terminated without it. */
static int recv_line(int fd, int64_t deadline, const char *path, int timeout_ms, char **line,
		     struct fk_err *err)
{
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap), *nl = NULL;
	int ret;

	if (!buf)
		return fk_fail(err, ENOMEM, "control socket %s: out of memory", path);
	for (;;) {
		ssize_t n;

		if (len + 1 == cap) {
			char *p;

			if (cap >= CONTROL_MAX_REPLY) {
				ret = fk_fail(err, EMSGSIZE,
					      "control socket %s: reply longer than %d bytes", path,
					      CONTROL_MAX_REPLY);
				goto fail;
			}
			p = realloc(buf, cap * 2);
			if (!p) {
				ret =
				    fk_fail(err, ENOMEM, "control socket %s: out of memory", path);
				goto fail;
			}
			buf = p;
			cap *= 2;
		}
		n = recv(fd, buf + len, cap - 1 - len, 0);
		if (n > 0) {
			nl = memchr(buf + len, '\n', (size_t)n);
			len += (size_t)n;
			if (nl)
				break;
			continue;
		}
		if (n == 0) {
			ret = fk_fail(err, ECONNRESET,
				      "control socket %s: server closed the connection before "
				      "replying",
				      path);
			goto fail;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			ret =
			    fk_fail_errno(err, errno, "control socket %s: reading the reply", path);
			goto fail;
		}
		ret = wait_for(fd, POLLIN, deadline);
		if (ret < 0) {
			fk_fail_errno(err, -ret, "control socket %s: poll", path);
			goto fail;
		}
		if (ret == 0) {
			ret = fk_fail(err, ETIMEDOUT, "control socket %s: no reply within %d ms",
				      path, timeout_ms);
			goto fail;
		}
	}
	*nl = '\0';
	*line = buf;
	return 0;
fail:
	free(buf);
	return ret;
}

int control_call(const char *socket_path, json_t *request, json_t **reply, int timeout_ms,
		 struct fk_err *err)
{
	int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
	char *text = NULL, *line = NULL;
	json_error_t jerr;
	size_t len;
	json_t *parsed;
	int fd = -1, ret;

	*reply = NULL;
	text = json_dumps(request, JSON_COMPACT | JSON_ENCODE_ANY);
	if (!text)
		return fk_fail(err, EINVAL, "control socket %s: request cannot be encoded as JSON",
			       socket_path);
	ret = connect_socket(socket_path, deadline, &fd, err);
	if (ret < 0)
		goto out;
	len = strlen(text);
	/* The terminating NUL becomes the protocol's '\n'; `len` says where the text ends. */
	text[len++] = '\n';
	ret = send_all(fd, text, len, deadline, socket_path, timeout_ms, err);
	if (ret < 0)
		goto out;
	ret = recv_line(fd, deadline, socket_path, timeout_ms, &line, err);
	if (ret < 0)
		goto out;
	parsed = json_loads(line, JSON_DECODE_ANY, &jerr);
	if (!parsed || !json_is_object(parsed)) {
		json_decref(parsed);
		ret = fk_fail(err, EPROTO,
			      "control socket %s: reply is not a JSON object (%s): %.200s",
			      socket_path, parsed ? "other JSON value" : jerr.text, line);
		goto out;
	}
	*reply = parsed;
	ret = 0;
out:
	free(line);
	free(text);
	if (fd >= 0)
		close(fd);
	return ret;
}
