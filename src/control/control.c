/* SPDX-License-Identifier: MIT */
/* Control socket server: connection handling, line framing and dispatch. */
#include "control/control.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "util/json_kind.h"
#include "util/unix_socket.h"

struct control_client {
	struct control_server *srv;
	int slot;
	int fd;
	uint32_t events; /* what the event loop currently waits for */
	/* No more requests are read; the connection closes once output drains. */
	bool closing;
	size_t in_len;
	size_t in_scanned; /* bytes of in[] already known to hold no '\n' */
	char *out;
	size_t out_off, out_len, out_cap;
	char in[CONTROL_MAX_REQUEST + 1];
};

static json_t *lookup_arg(json_t *request, const char *key, bool required, const char *type,
			  int *ret, struct fk_err *err)
{
	json_t *v = json_object_get(request, key);

	*ret = 0;
	if (!v && required)
		*ret = fk_fail(err, EINVAL, "argument \"%s\": missing (expected %s)", key, type);
	return v;
}

int control_arg_string(json_t *request, const char *key, bool required, const char **out,
		       struct fk_err *err)
{
	int ret;
	json_t *v = lookup_arg(request, key, required, "a string", &ret, err);

	if (!v)
		return ret;
	if (!json_is_string(v))
		return fk_fail(err, EINVAL, "argument \"%s\": expected a string, got %s", key,
			       fk_json_kind(v));
	*out = json_string_value(v);
	return 0;
}

int control_arg_int(json_t *request, const char *key, bool required, int64_t *out,
		    struct fk_err *err)
{
	int ret;
	json_t *v = lookup_arg(request, key, required, "an integer", &ret, err);

	if (!v)
		return ret;
	if (!json_is_integer(v))
		return fk_fail(err, EINVAL, "argument \"%s\": expected an integer, got %s", key,
			       fk_json_kind(v));
	*out = json_integer_value(v);
	return 0;
}

int control_arg_bool(json_t *request, const char *key, bool required, bool *out, struct fk_err *err)
{
	int ret;
	json_t *v = lookup_arg(request, key, required, "true or false", &ret, err);

	if (!v)
		return ret;
	if (!json_is_boolean(v))
		return fk_fail(err, EINVAL, "argument \"%s\": expected true or false, got %s", key,
			       fk_json_kind(v));
	*out = json_is_true(v);
	return 0;
}

static int help_command(void *opaque, json_t *request, json_t *reply, struct fk_err *err);

static const struct control_command builtin_help = {
    .name = "help",
    .handler = help_command,
    .help = "list the commands this server understands",
};

static const struct control_command *find_command(const struct control_server *srv,
						  const char *name)
{
	for (const struct control_command *c = srv->commands; c && c->name; c++)
		if (strcmp(c->name, name) == 0)
			return c;
	if (strcmp(name, builtin_help.name) == 0)
		return &builtin_help;
	return NULL;
}

static int add_command_entry(json_t *list, const struct control_command *c)
{
	json_t *entry = json_pack("{s:s, s:s}", "name", c->name, "help", c->help ? c->help : "");

	return entry && json_array_append_new(list, entry) == 0 ? 0 : -ENOMEM;
}

/* Built-in "help"; its opaque is the server itself. */
static int help_command(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct control_server *srv = opaque;
	json_t *list = json_array();
	bool table_has_help = false;

	(void)request;
	if (!list)
		return fk_fail(err, ENOMEM, "help: out of memory");
	for (const struct control_command *c = srv->commands; c && c->name; c++) {
		if (strcmp(c->name, builtin_help.name) == 0)
			table_has_help = true;
		if (add_command_entry(list, c) < 0)
			goto oom;
	}
	if (!table_has_help && add_command_entry(list, &builtin_help) < 0)
		goto oom;
	if (json_object_set_new(reply, "commands", list) < 0)
		return fk_fail(err, ENOMEM, "help: out of memory");
	return 0;
oom:
	json_decref(list);
	return fk_fail(err, ENOMEM, "help: out of memory");
}

static void append_name(char *buf, size_t size, size_t *len, const char *name)
{
	size_t need = strlen(name) + (*len ? 2 : 0);

	if (*len + need + 4 >= size) {
		/* Truncated lists end in "..." once, not in half a name. */
		if (*len + 4 < size && (*len < 3 || strcmp(buf + *len - 3, "...") != 0)) {
			memcpy(buf + *len, "...", 4);
			*len += 3;
		}
		return;
	}
	*len += (size_t)snprintf(buf + *len, size - *len, "%s%s", *len ? ", " : "", name);
}

static void list_command_names(const struct control_server *srv, char *buf, size_t size)
{
	size_t len = 0;
	bool has_help = false;

	buf[0] = '\0';
	for (const struct control_command *c = srv->commands; c && c->name; c++) {
		has_help |= strcmp(c->name, builtin_help.name) == 0;
		append_name(buf, size, &len, c->name);
	}
	if (!has_help)
		append_name(buf, size, &len, builtin_help.name);
}

/* Runs one request line; returns the reply object (never NULL unless out of memory). */
static json_t *dispatch(struct control_server *srv, const char *line, size_t len)
{
	struct fk_err err = {0};
	json_error_t jerr;
	json_t *request, *reply = NULL, *cmd_value;
	const struct control_command *cmd;
	const char *name;
	int ret;

	request = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!request) {
		fk_fail(
		    &err, EINVAL,
		    "request: invalid JSON at column %d: %s (expected one JSON object per line)",
		    jerr.column, jerr.text);
		goto fail;
	}
	if (!json_is_object(request)) {
		fk_fail(&err, EINVAL,
			"request: expected a JSON object such as {\"cmd\":\"help\"}, got %s",
			fk_json_kind(request));
		goto fail;
	}
	cmd_value = json_object_get(request, "cmd");
	if (!cmd_value) {
		fk_fail(&err, EINVAL,
			"request: missing \"cmd\" (expected a string naming a command, e.g. "
			"{\"cmd\":\"help\"})");
		goto fail;
	}
	if (!json_is_string(cmd_value)) {
		fk_fail(&err, EINVAL,
			"request: \"cmd\": expected a string naming a command, got %s",
			fk_json_kind(cmd_value));
		goto fail;
	}
	name = json_string_value(cmd_value);
	cmd = find_command(srv, name);
	if (!cmd) {
		char names[512];

		list_command_names(srv, names, sizeof(names));
		fk_fail(&err, EINVAL, "request: unknown command \"%.64s\" (expected one of: %s)",
			name, names);
		goto fail;
	}
	reply = json_object();
	if (!reply || json_object_set_new(reply, "ok", json_true()) < 0) {
		fk_fail(&err, ENOMEM, "%s: out of memory", cmd->name);
		goto fail;
	}
	ret = cmd->handler(cmd == &builtin_help ? (void *)srv : srv->opaque, request, reply, &err);
	if (ret < 0) {
		if (!err.msg[0])
			fk_fail_errno(&err, -ret, "%s", cmd->name);
		goto fail;
	}
	/* Handlers may have replaced or dropped it; the server owns "ok". */
	if (json_object_set_new(reply, "ok", json_true()) < 0) {
		fk_fail(&err, ENOMEM, "%s: out of memory", cmd->name);
		goto fail;
	}
	json_decref(request);
	return reply;
fail:
	json_decref(request);
	json_decref(reply);
	return json_pack("{s:b, s:s}", "ok", 0, "error", err.msg);
}

static int queue_output(struct control_client *c, const char *data, size_t len)
{
	size_t pending = c->out_len - c->out_off;

	if (c->out_off && pending + len > c->out_cap - c->out_off) {
		memmove(c->out, c->out + c->out_off, pending);
		c->out_off = 0;
		c->out_len = pending;
	}
	if (c->out_len + len > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *p;

		while (cap < c->out_len + len)
			cap *= 2;
		p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
		c->out = p;
		c->out_cap = cap;
	}
	memcpy(c->out + c->out_len, data, len);
	c->out_len += len;
	return 0;
}

static int queue_reply(struct control_client *c, json_t *reply)
{
	/* Compact output never contains a raw newline: strings escape it. */
	char *text = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
	int ret;

	if (!text) {
		static const char fallback[] = "{\"ok\":false,\"error\":\"server out of memory\"}";

		return queue_output(c, fallback, strlen(fallback)) ?: queue_output(c, "\n", 1);
	}
	ret = queue_output(c, text, strlen(text));
	if (!ret)
		ret = queue_output(c, "\n", 1);
	free(text);
	return ret;
}

static size_t pending_output(const struct control_client *c)
{
	return c->out_len - c->out_off;
}

/* Answers every complete line in the input buffer, unless output backs up. */
static int process_lines(struct control_client *c)
{
	size_t start = 0;
	int ret = 0;

	while (pending_output(c) < CONTROL_OUTPUT_HIGH_WATER) {
		char *nl = memchr(c->in + c->in_scanned, '\n', c->in_len - c->in_scanned);
		size_t len;

		if (!nl) {
			c->in_scanned = c->in_len;
			break;
		}
		len = (size_t)(nl - (c->in + start));
		if (len && c->in[start + len - 1] == '\r')
			len--;
		/* Blank lines are ignored, which keeps interactive use (socat) forgiving. */
		if (strspn(c->in + start, " \t\r") < len) {
			json_t *reply = dispatch(c->srv, c->in + start, len);

			ret = queue_reply(c, reply);
			json_decref(reply);
			if (ret < 0)
				break;
		}
		start = (size_t)(nl - c->in) + 1;
		c->in_scanned = start;
	}
	memmove(c->in, c->in + start, c->in_len - start);
	c->in_len -= start;
	c->in_scanned -= start;
	return ret;
}

static void client_close(struct control_client *c)
{
	struct control_server *srv = c->srv;

	event_loop_remove(srv->loop, c->fd);
	close(c->fd);
	srv->clients[c->slot] = NULL;
	srv->nr_clients--;
	free(c->out);
	free(c);
}

/* Returns 0, or -errno if the connection is broken. */
static int flush_output(struct control_client *c)
{
	while (pending_output(c)) {
		ssize_t n = send(c->fd, c->out + c->out_off, pending_output(c),
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		c->out_off += (size_t)n;
	}
	c->out_off = c->out_len = 0;
	return 0;
}

/* Returns 0, or -errno if the connection is broken. */
static int read_input(struct control_client *c)
{
	static const char oversize[] =
	    "{\"ok\":false,\"error\":\"request: longer than 65536 bytes without a newline "
	    "(expected one JSON object per line, at most 65536 bytes); closing the "
	    "connection\"}\n";
	ssize_t n;

	_Static_assert(CONTROL_MAX_REQUEST == 65536, "update the oversize message");
	if (c->in_len == sizeof(c->in))
		return 0; /* full of lines waiting for output to drain */
	n = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	if (n == 0) {
		/* Peer is done sending: an unfinished line is dropped, answers still go out. */
		c->closing = true;
		return 0;
	}
	c->in_len += (size_t)n;
	if (process_lines(c) < 0)
		return -ENOMEM;
	if (c->in_len == sizeof(c->in) && c->in_scanned == c->in_len) {
		/* No way to find where the oversize request ends, so stop reading. */
		c->closing = true;
		c->in_len = c->in_scanned = 0;
		if (queue_output(c, oversize, strlen(oversize)) < 0)
			return -ENOMEM;
	}
	return 0;
}

static void on_client_event(void *opaque, uint32_t events)
{
	struct control_client *c = opaque;
	uint32_t want = 0;

	/*
	 * `events` is only a hint: act on what recv/send report, so a stale
	 * event (delivered after this slot was reused) does no harm.
	 */
	(void)events;
	if (!c->closing && pending_output(c) < CONTROL_OUTPUT_HIGH_WATER && read_input(c) < 0)
		goto close;
	if (flush_output(c) < 0)
		goto close;
	if (!c->closing && c->in_len && pending_output(c) < CONTROL_OUTPUT_HIGH_WATER &&
	    c->in_scanned < c->in_len) {
		/* Lines held back while output was backed up. */
		if (process_lines(c) < 0 || flush_output(c) < 0)
			goto close;
	}
	if (c->closing && !pending_output(c))
		goto close;
	if (!c->closing && pending_output(c) < CONTROL_OUTPUT_HIGH_WATER)
		want |= EPOLLIN;
	if (pending_output(c))
		want |= EPOLLOUT;
	if (want != c->events) {
		if (event_loop_modify(c->srv->loop, c->fd, want) < 0)
			goto close;
		c->events = want;
	}
	return;
close:
	client_close(c);
}

static void reject_client(int fd)
{
	static const char busy[] = "{\"ok\":false,\"error\":\"control socket: too many clients "
				   "(at most 16 at a time); try again later\"}\n";

	_Static_assert(CONTROL_MAX_CLIENTS == 16, "update the busy message");
	if (send(fd, busy, strlen(busy), MSG_NOSIGNAL | MSG_DONTWAIT) < 0) {
		/* Best effort: the client sees the connection close either way. */
	}
	close(fd);
}

static void on_listen_event(void *opaque, uint32_t events)
{
	struct control_server *srv = opaque;
	struct control_client *c;
	struct fk_err err;
	int fd, slot;

	(void)events;
	fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return; /* EAGAIN, or the client already gave up */
	for (slot = 0; slot < CONTROL_MAX_CLIENTS && srv->clients[slot]; slot++)
		;
	if (slot == CONTROL_MAX_CLIENTS) {
		reject_client(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = srv;
	c->slot = slot;
	c->fd = fd;
	c->events = EPOLLIN;
	if (event_loop_add(srv->loop, fd, EPOLLIN, on_client_event, c, &err) < 0) {
		free(c);
		close(fd);
		return;
	}
	srv->clients[slot] = c;
	srv->nr_clients++;
}

/* Returns 0 if nothing is at `path` (any more), or -errno with err set. */
int control_server_init(struct control_server *srv, struct event_loop *loop, const char *path,
			const struct control_command *commands, void *opaque, struct fk_err *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	size_t len = strlen(path);
	struct stat st;
	int ret;

	memset(srv, 0, sizeof(*srv));
	srv->listen_fd = -1;
	if (len == 0 || len >= sizeof(addr.sun_path))
		return fk_fail(err, ENAMETOOLONG,
			       "control socket '%s': expected a path of 1 to %zu bytes", path,
			       sizeof(addr.sun_path) - 1);
	_Static_assert(sizeof(srv->path) == sizeof(addr.sun_path), "path sizes differ");
	memcpy(srv->path, path, len + 1);
	memcpy(addr.sun_path, path, len + 1);
	srv->loop = loop;
	srv->commands = commands;
	srv->opaque = opaque;

	ret = unix_socket_clear_stale("control socket", path, err);
	if (ret < 0)
		return ret;
	srv->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->listen_fd < 0)
		return fk_fail_errno(err, errno, "control socket %s: socket", path);
	if (bind(srv->listen_fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = fk_fail_errno(err, errno, "control socket %s: bind", path);
		goto fail_close;
	}
	if (stat(path, &st) < 0) {
		ret = fk_fail_errno(err, errno, "control socket %s: stat after bind", path);
		goto fail_unlink;
	}
	srv->sock_dev = st.st_dev;
	srv->sock_ino = st.st_ino;
	if (listen(srv->listen_fd, CONTROL_MAX_CLIENTS) < 0) {
		ret = fk_fail_errno(err, errno, "control socket %s: listen", path);
		goto fail_unlink;
	}
	ret = event_loop_add(loop, srv->listen_fd, EPOLLIN, on_listen_event, srv, err);
	if (ret < 0) {
		fk_wrap(err, "control socket %s", path);
		goto fail_unlink;
	}
	return 0;
fail_unlink:
	unlink(path);
fail_close:
	close(srv->listen_fd);
	srv->listen_fd = -1;
	return ret;
}

void control_server_destroy(struct control_server *srv)
{
	struct stat st;

	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		if (srv->clients[i])
			client_close(srv->clients[i]);
	if (srv->listen_fd < 0)
		return;
	event_loop_remove(srv->loop, srv->listen_fd);
	close(srv->listen_fd);
	srv->listen_fd = -1;
	if (lstat(srv->path, &st) == 0 && st.st_dev == srv->sock_dev && st.st_ino == srv->sock_ino)
		unlink(srv->path);
}
