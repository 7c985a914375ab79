/* SPDX-License-Identifier: MIT */
/*
 * The control socket server and client, over real Unix sockets and a real
 * event loop. Most tests are single-threaded: the test plays the client
 * with non-blocking sockets and pumps the loop until a condition holds.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <linux/sockios.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"

/* Only guards against a hung test; no result depends on it. */
#define PUMP_GIVE_UP_SECONDS 30
#define BIG_REPLY_BYTES	     (256 * 1024)

struct fixture {
	char dir[64];
	char path[128];
	struct event_loop loop;
	struct control_server srv;
	bool srv_up;
	int echo_calls;
	void *last_opaque;
};

struct client {
	int fd;
	char *buf;
	size_t len, cap;
	bool eof;
};

/* ---- command handlers ---- */

static int echo_handler(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct fixture *f = opaque;
	const char *value = NULL;
	int ret;

	f->echo_calls++;
	f->last_opaque = opaque;
	ret = control_arg_string(request, "value", true, &value, err);
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "value", json_string(value));
	return 0;
}

static int fail_handler(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	(void)opaque;
	(void)request;
	json_object_set_new(reply, "partial", json_true());
	return fk_fail(err, EBUSY, "fail: the VM is busy (expected it to be idle)");
}

static int silent_fail_handler(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	(void)opaque;
	(void)request;
	(void)reply;
	(void)err;
	return -EIO;
}

static int args_handler(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	int64_t count = 7;
	bool flag = false;
	int ret;

	(void)opaque;
	ret = control_arg_int(request, "count", false, &count, err);
	if (ret == 0)
		ret = control_arg_bool(request, "flag", true, &flag, err);
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "count", json_integer(count));
	json_object_set_new(reply, "flag", json_boolean(flag));
	/* The server, not the handler, decides "ok". */
	json_object_set_new(reply, "ok", json_false());
	return 0;
}

static int big_handler(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	char *s = malloc(BIG_REPLY_BYTES + 1);

	(void)opaque;
	(void)request;
	if (!s)
		return fk_fail(err, ENOMEM, "big: out of memory");
	memset(s, 'b', BIG_REPLY_BYTES);
	s[BIG_REPLY_BYTES] = '\0';
	json_object_set_new(reply, "data", json_string(s));
	free(s);
	return 0;
}

static const struct control_command commands[] = {
    {"echo", echo_handler, "reply with the \"value\" argument"},
    {"fail", fail_handler, "always fails"},
    {"fail-silent", silent_fail_handler, "fails without a message"},
    {"args", args_handler, "checks typed arguments"},
    {"big", big_handler, "a large reply"},
    {NULL, NULL, NULL},
};

/* ---- loop pumping ---- */

typedef bool (*cond_fn)(void *arg);

struct pump {
	struct event_loop *loop;
	int timer_fd;
	cond_fn cond;
	void *arg;
	bool met;
	time_t give_up;
};

static void on_tick(void *opaque, uint32_t events)
{
	struct pump *p = opaque;
	uint64_t ticks;

	(void)events;
	if (read(p->timer_fd, &ticks, sizeof(ticks)) < 0) {
	}
	if (p->cond(p->arg))
		p->met = true;
	if (p->met || time(NULL) > p->give_up)
		event_loop_stop(p->loop);
}

/* Runs the event loop until cond(arg) holds. */
static void pump_until(struct event_loop *loop, cond_fn cond, void *arg)
{
	struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
	struct pump p = {
	    .loop = loop, .cond = cond, .arg = arg, .give_up = time(NULL) + PUMP_GIVE_UP_SECONDS};
	struct fk_err err;

	if (cond(arg))
		return;
	p.timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	assert_true(p.timer_fd >= 0);
	assert_int_equal(timerfd_settime(p.timer_fd, 0, &its, NULL), 0);
	assert_int_equal(event_loop_add(loop, p.timer_fd, EPOLLIN, on_tick, &p, &err), 0);
	loop->stop = false;
	assert_int_equal(event_loop_run(loop), 0);
	loop->stop = false;
	event_loop_remove(loop, p.timer_fd);
	close(p.timer_fd);
	assert_true(p.met);
}

/* ---- test client ---- */

static void client_connect(struct client *c, const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};

	memset(c, 0, sizeof(*c));
	strcpy(addr.sun_path, path);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(c->fd >= 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->buf);
	c->buf = NULL;
}

/* Takes whatever the server sent so far. */
static void client_drain(struct client *c)
{
	for (;;) {
		ssize_t n;

		if (c->cap - c->len < 65536) {
			c->cap = c->cap ? c->cap * 2 : 131072;
			c->buf = realloc(c->buf, c->cap);
			assert_non_null(c->buf);
		}
		n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
		/* A server closing with our bytes unread resets rather than ends the stream. */
		if (n == 0 || (n < 0 && errno == ECONNRESET))
			c->eof = true;
		if (n <= 0)
			return;
		c->len += (size_t)n;
	}
}

static size_t client_lines(const struct client *c)
{
	size_t lines = 0;

	for (size_t i = 0; i < c->len; i++)
		lines += c->buf[i] == '\n';
	return lines;
}

static bool has_line(void *arg)
{
	struct client *c = arg;

	client_drain(c);
	return client_lines(c) > 0;
}

static bool has_eof(void *arg)
{
	struct client *c = arg;

	client_drain(c);
	return c->eof;
}

/* The server has read everything this client sent. */
static bool consumed(void *arg)
{
	struct client *c = arg;
	int unread = -1;

	assert_int_equal(ioctl(c->fd, SIOCOUTQ, &unread), 0);
	return unread == 0;
}

static void client_send(struct event_loop *loop, struct client *c, const char *data, size_t len)
{
	while (len) {
		ssize_t n = send(c->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0) {
			assert_true(errno == EAGAIN);
			pump_until(loop, consumed, c);
			continue;
		}
		data += n;
		len -= (size_t)n;
	}
}

static void client_send_str(struct event_loop *loop, struct client *c, const char *s)
{
	client_send(loop, c, s, strlen(s));
}

/* Pumps until a reply line arrives and returns it parsed. */
static json_t *client_reply(struct event_loop *loop, struct client *c)
{
	json_error_t jerr;
	json_t *reply;
	char *nl;
	size_t line_len;

	pump_until(loop, has_line, c);
	nl = memchr(c->buf, '\n', c->len);
	line_len = (size_t)(nl - c->buf);
	reply = json_loadb(c->buf, line_len, 0, &jerr);
	if (!reply)
		fail_msg("reply is not JSON: %s", jerr.text);
	assert_true(json_is_object(reply));
	memmove(c->buf, nl + 1, c->len - line_len - 1);
	c->len -= line_len + 1;
	return reply;
}

static bool reply_ok(json_t *reply)
{
	return json_is_true(json_object_get(reply, "ok"));
}

static const char *reply_error(json_t *reply)
{
	json_t *e = json_object_get(reply, "error");

	assert_false(reply_ok(reply));
	assert_true(json_is_string(e));
	return json_string_value(e);
}

static void assert_contains(const char *haystack, const char *needle)
{
	if (!strstr(haystack, needle))
		fail_msg("\"%s\" does not contain \"%s\"", haystack, needle);
}

/* Sends one line and checks the reply is an error containing `needle`. */
static void expect_error(struct fixture *f, struct client *c, const char *line, const char *needle)
{
	json_t *reply;

	client_send_str(&f->loop, c, line);
	reply = client_reply(&f->loop, c);
	assert_contains(reply_error(reply), needle);
	json_decref(reply);
}

static void expect_echo(struct fixture *f, struct client *c, const char *value)
{
	char line[256];
	json_t *reply;

	snprintf(line, sizeof(line), "{\"cmd\":\"echo\",\"value\":\"%s\"}\n", value);
	client_send_str(&f->loop, c, line);
	reply = client_reply(&f->loop, c);
	assert_true(reply_ok(reply));
	assert_string_equal(json_string_value(json_object_get(reply, "value")), value);
	json_decref(reply);
}

static bool clients_is_zero(void *arg)
{
	return ((struct control_server *)arg)->nr_clients == 0;
}

/* ---- fixture ---- */

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct fk_err err = {0};

	assert_non_null(f);
	strcpy(f->dir, "/tmp/forkd-control-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/ctl.sock", f->dir);
	assert_int_equal(event_loop_init(&f->loop, &err), 0);
	if (control_server_init(&f->srv, &f->loop, f->path, commands, f, &err) < 0)
		fail_msg("control_server_init: %s", err.msg);
	f->srv_up = true;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (f->srv_up)
		control_server_destroy(&f->srv);
	event_loop_destroy(&f->loop);
	unlink(f->path);
	rmdir(f->dir);
	free(f);
	return 0;
}

/* ---- tests ---- */

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	struct client c;

	client_connect(&c, f->path);
	expect_echo(f, &c, "hello");
	assert_int_equal(f->echo_calls, 1);
	assert_ptr_equal(f->last_opaque, f);
	/* Several requests in one write are answered in order. */
	client_send_str(&f->loop, &c,
			"{\"cmd\":\"echo\",\"value\":\"a\"}\n{\"cmd\":\"echo\",\"value\":\"b\"}\n");
	for (int i = 0; i < 2; i++) {
		json_t *reply = client_reply(&f->loop, &c);

		assert_string_equal(json_string_value(json_object_get(reply, "value")),
				    i ? "b" : "a");
		json_decref(reply);
	}
	assert_int_equal(f->echo_calls, 3);
	client_close(&c);
}

static void test_help_lists_commands(void **state)
{
	struct fixture *f = *state;
	struct client c;
	json_t *reply, *list, *entry;
	size_t i;
	bool saw_echo = false, saw_help = false;

	client_connect(&c, f->path);
	client_send_str(&f->loop, &c, "{\"cmd\":\"help\"}\n");
	reply = client_reply(&f->loop, &c);
	assert_true(reply_ok(reply));
	list = json_object_get(reply, "commands");
	assert_true(json_is_array(list));
	assert_int_equal(json_array_size(list), 6);
	json_array_foreach(list, i, entry)
	{
		const char *name = json_string_value(json_object_get(entry, "name"));
		const char *help = json_string_value(json_object_get(entry, "help"));

		assert_non_null(name);
		assert_non_null(help);
		if (strcmp(name, "echo") == 0) {
			saw_echo = true;
			assert_string_equal(help, "reply with the \"value\" argument");
		}
		saw_help |= strcmp(name, "help") == 0;
	}
	assert_true(saw_echo && saw_help);
	json_decref(reply);
	client_close(&c);
}

static void test_request_errors_keep_connection(void **state)
{
	struct fixture *f = *state;
	struct client c;

	client_connect(&c, f->path);
	expect_error(f, &c, "{\"cmd\":\"reboot\"}\n", "unknown command \"reboot\"");
	expect_error(f, &c, "{\"cmd\":\"reboot\"}\n", "echo, fail, fail-silent, args, big, help");
	expect_error(f, &c, "{\"cmd\":\"echo\",\n", "invalid JSON");
	expect_error(f, &c, "{\"cmd\":\"echo\"} trailing\n", "invalid JSON");
	expect_error(f, &c, "[1,2]\n", "expected a JSON object");
	expect_error(f, &c, "42\n", "got an integer");
	expect_error(f, &c, "\"status\"\n", "got a string");
	expect_error(f, &c, "{\"value\":\"x\"}\n", "missing \"cmd\"");
	expect_error(f, &c, "{\"cmd\":5}\n",
		     "\"cmd\": expected a string naming a command, got an integer");
	expect_error(f, &c, "{\"cmd\":null}\n", "got null");
	expect_error(f, &c, "{\"cmd\":\"echo\",\"cmd\":\"help\"}\n", "invalid JSON");
	/* Blank lines are skipped rather than answered. */
	client_send_str(&f->loop, &c, "\n  \r\n");
	expect_echo(f, &c, "still-usable");
	assert_int_equal(f->echo_calls, 1);
	client_close(&c);
}

static void test_argument_errors(void **state)
{
	struct fixture *f = *state;
	struct client c;
	json_t *reply;

	client_connect(&c, f->path);
	expect_error(f, &c, "{\"cmd\":\"echo\"}\n",
		     "argument \"value\": missing (expected a string)");
	expect_error(f, &c, "{\"cmd\":\"echo\",\"value\":3}\n",
		     "argument \"value\": expected a string, got an integer");
	expect_error(f, &c, "{\"cmd\":\"args\",\"flag\":\"yes\"}\n",
		     "argument \"flag\": expected true or false, got a string");
	expect_error(f, &c, "{\"cmd\":\"args\",\"flag\":true,\"count\":1.5}\n",
		     "argument \"count\": expected an integer, got a number");

	client_send_str(&f->loop, &c, "{\"cmd\":\"args\",\"flag\":true}\n");
	reply = client_reply(&f->loop, &c);
	assert_true(reply_ok(reply)); /* the handler's "ok":false was overridden */
	assert_int_equal(json_integer_value(json_object_get(reply, "count")), 7);
	assert_true(json_is_true(json_object_get(reply, "flag")));
	json_decref(reply);
	client_close(&c);
}

static void test_handler_error(void **state)
{
	struct fixture *f = *state;
	struct client c;
	json_t *reply;

	client_connect(&c, f->path);
	client_send_str(&f->loop, &c, "{\"cmd\":\"fail\"}\n");
	reply = client_reply(&f->loop, &c);
	assert_string_equal(reply_error(reply), "fail: the VM is busy (expected it to be idle)");
	/* Fields the handler set before failing are not leaked into the error reply. */
	assert_null(json_object_get(reply, "partial"));
	assert_int_equal(json_object_size(reply), 2);
	json_decref(reply);

	client_send_str(&f->loop, &c, "{\"cmd\":\"fail-silent\"}\n");
	reply = client_reply(&f->loop, &c);
	assert_contains(reply_error(reply), "fail-silent");
	assert_contains(reply_error(reply), strerror(EIO));
	json_decref(reply);
	client_close(&c);
}

static void test_two_clients_interleaved(void **state)
{
	struct fixture *f = *state;
	struct client a, b;
	json_t *reply;

	client_connect(&a, f->path);
	client_connect(&b, f->path);
	client_send_str(&f->loop, &a, "{\"cmd\":\"echo\",");
	pump_until(&f->loop, consumed, &a);
	expect_echo(f, &b, "from-b");
	client_drain(&a);
	assert_int_equal(a.len, 0);
	client_send_str(&f->loop, &a, "\"value\":\"from-a\"}\n");
	reply = client_reply(&f->loop, &a);
	assert_string_equal(json_string_value(json_object_get(reply, "value")), "from-a");
	json_decref(reply);
	client_drain(&b);
	assert_int_equal(b.len, 0);
	assert_int_equal(f->srv.nr_clients, 2);
	client_close(&a);
	client_close(&b);
	pump_until(&f->loop, clients_is_zero, &f->srv);
}

static void test_request_split_across_writes(void **state)
{
	struct fixture *f = *state;
	const char *req =
	    "{\"cmd\":\"echo\",\"value\":\"split\"}\n{\"cmd\":\"echo\",\"value\":\"two\"}\n";
	size_t first_nl = strchr(req, '\n') - req;
	struct client c;
	json_t *reply;

	client_connect(&c, f->path);
	for (size_t i = 0; req[i]; i++) {
		client_send(&f->loop, &c, req + i, 1);
		pump_until(&f->loop, consumed, &c);
		client_drain(&c);
		/* A reply appears exactly when its line is complete. */
		assert_int_equal(client_lines(&c), req[i] == '\n');
		if (i == first_nl) {
			reply = client_reply(&f->loop, &c);
			assert_string_equal(json_string_value(json_object_get(reply, "value")),
					    "split");
			json_decref(reply);
		}
	}
	reply = client_reply(&f->loop, &c);
	assert_string_equal(json_string_value(json_object_get(reply, "value")), "two");
	json_decref(reply);
	assert_int_equal(f->echo_calls, 2);
	client_close(&c);
}

static void test_disconnect_mid_request(void **state)
{
	struct fixture *f = *state;
	struct client c;

	client_connect(&c, f->path);
	client_send_str(&f->loop, &c, "{\"cmd\":\"echo\",\"val");
	pump_until(&f->loop, consumed, &c);
	assert_int_equal(f->srv.nr_clients, 1);
	client_close(&c);
	pump_until(&f->loop, clients_is_zero, &f->srv);
	assert_int_equal(f->echo_calls, 0);

	/* A client that sends a request and leaves before the reply. */
	client_connect(&c, f->path);
	client_send_str(&f->loop, &c, "{\"cmd\":\"big\"}\n{\"cmd\":\"big\"}\n");
	client_close(&c);
	pump_until(&f->loop, clients_is_zero, &f->srv);

	client_connect(&c, f->path);
	expect_echo(f, &c, "after");
	client_close(&c);
}

static void test_half_close_still_answered(void **state)
{
	struct fixture *f = *state;
	struct client c;
	json_t *reply;

	client_connect(&c, f->path);
	client_send_str(&f->loop, &c, "{\"cmd\":\"echo\",\"value\":\"last\"}\n{\"cmd\":\"ec");
	assert_int_equal(shutdown(c.fd, SHUT_WR), 0);
	reply = client_reply(&f->loop, &c);
	assert_string_equal(json_string_value(json_object_get(reply, "value")), "last");
	json_decref(reply);
	pump_until(&f->loop, has_eof, &c);
	assert_int_equal(c.len, 0); /* the unfinished line got no answer */
	pump_until(&f->loop, clients_is_zero, &f->srv);
	client_close(&c);
}

static void test_oversize_request(void **state)
{
	struct fixture *f = *state;
	const char *head = "{\"cmd\":\"echo\",\"value\":\"";
	size_t size = CONTROL_MAX_REQUEST + 2;
	char *line = malloc(size);
	struct client c;
	json_t *reply;

	assert_non_null(line);
	/* Exactly the limit (plus its newline) is still accepted. */
	memset(line, 'v', CONTROL_MAX_REQUEST);
	memcpy(line, head, strlen(head));
	memcpy(line + CONTROL_MAX_REQUEST - 2, "\"}\n", 3);
	client_connect(&c, f->path);
	client_send(&f->loop, &c, line, CONTROL_MAX_REQUEST + 1);
	reply = client_reply(&f->loop, &c);
	assert_true(reply_ok(reply));
	assert_int_equal(strlen(json_string_value(json_object_get(reply, "value"))),
			 CONTROL_MAX_REQUEST - strlen(head) - 2);
	json_decref(reply);

	/* One byte more has no newline within the limit. */
	memset(line, 'v', size);
	memcpy(line, head, strlen(head));
	memcpy(line + CONTROL_MAX_REQUEST - 1, "\"}\n", 3);
	client_send(&f->loop, &c, line, size);
	reply = client_reply(&f->loop, &c);
	assert_contains(reply_error(reply), "longer than 65536 bytes");
	json_decref(reply);
	pump_until(&f->loop, has_eof, &c);
	pump_until(&f->loop, clients_is_zero, &f->srv);
	assert_int_equal(f->echo_calls, 1);
	client_close(&c);
	free(line);
}

static void test_too_many_clients(void **state)
{
	struct fixture *f = *state;
	struct client c[CONTROL_MAX_CLIENTS + 1];
	json_t *reply;

	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		client_connect(&c[i], f->path);
	for (int i = 0; i < CONTROL_MAX_CLIENTS; i++)
		expect_echo(f, &c[i], "one-of-many");
	client_connect(&c[CONTROL_MAX_CLIENTS], f->path);
	reply = client_reply(&f->loop, &c[CONTROL_MAX_CLIENTS]);
	assert_contains(reply_error(reply), "too many clients");
	json_decref(reply);
	pump_until(&f->loop, has_eof, &c[CONTROL_MAX_CLIENTS]);
	assert_int_equal(f->srv.nr_clients, CONTROL_MAX_CLIENTS);
	for (int i = 0; i <= CONTROL_MAX_CLIENTS; i++)
		client_close(&c[i]);
	pump_until(&f->loop, clients_is_zero, &f->srv);
}

static bool has_eight_lines(void *arg)
{
	struct client *c = arg;

	client_drain(c);
	return client_lines(c) >= 8;
}

static void test_large_replies_to_slow_reader(void **state)
{
	struct fixture *f = *state;
	struct client c;

	client_connect(&c, f->path);
	for (int i = 0; i < 8; i++)
		client_send_str(&f->loop, &c, "{\"cmd\":\"big\"}\n");
	/* 2 MiB of replies: far more than the socket holds, so sends are partial. */
	pump_until(&f->loop, consumed, &c);
	pump_until(&f->loop, has_eight_lines, &c);
	for (int i = 0; i < 8; i++) {
		json_t *reply = client_reply(&f->loop, &c);

		assert_true(reply_ok(reply));
		assert_int_equal(json_string_length(json_object_get(reply, "data")),
				 BIG_REPLY_BYTES);
		json_decref(reply);
	}
	assert_int_equal(c.len, 0);
	expect_echo(f, &c, "after-big");
	client_close(&c);
}

static void make_stale_socket(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(addr.sun_path, path);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	close(fd);
}

static void test_stale_socket_replaced(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct client c;
	struct stat st;

	control_server_destroy(&f->srv);
	f->srv_up = false;
	make_stale_socket(f->path);
	assert_int_equal(lstat(f->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	if (control_server_init(&f->srv, &f->loop, f->path, commands, f, &err) < 0)
		fail_msg("control_server_init over a stale socket: %s", err.msg);
	f->srv_up = true;
	client_connect(&c, f->path);
	expect_echo(f, &c, "new-server");
	client_close(&c);
}

static void test_live_server_refused(void **state)
{
	struct fixture *f = *state;
	struct control_server second;
	struct fk_err err = {0};
	struct client c;

	assert_int_equal(control_server_init(&second, &f->loop, f->path, commands, f, &err),
			 -EADDRINUSE);
	assert_contains(err.msg, f->path);
	assert_contains(err.msg, "already listening");
	/* The first server keeps its socket. */
	client_connect(&c, f->path);
	expect_echo(f, &c, "first-still-here");
	client_close(&c);
}

static void test_regular_file_refused(void **state)
{
	struct fixture *f = *state;
	struct control_server srv;
	struct fk_err err = {0};
	char path[192], buf[8] = {0};
	int fd;

	snprintf(path, sizeof(path), "%s/not-a-socket", f->dir);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "data", 4), 4);
	close(fd);
	assert_int_equal(control_server_init(&srv, &f->loop, path, commands, f, &err), -EEXIST);
	assert_contains(err.msg, path);
	assert_contains(err.msg, "not a socket");
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, buf, sizeof(buf)), 4);
	assert_string_equal(buf, "data");
	close(fd);
	unlink(path);

	assert_int_equal(control_server_init(&srv, &f->loop, "", commands, f, &err), -ENAMETOOLONG);
}

static void test_destroy_unlinks_and_closes(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct client c;

	client_connect(&c, f->path);
	expect_echo(f, &c, "before-destroy");
	control_server_destroy(&f->srv);
	f->srv_up = false;
	assert_int_equal(access(f->path, F_OK), -1);
	assert_int_equal(errno, ENOENT);
	client_drain(&c);
	assert_true(c.eof);
	client_close(&c);

	/* A path someone else re-created after us is left alone. */
	assert_int_equal(control_server_init(&f->srv, &f->loop, f->path, commands, f, &err), 0);
	assert_int_equal(unlink(f->path), 0);
	make_stale_socket(f->path);
	control_server_destroy(&f->srv);
	assert_int_equal(access(f->path, F_OK), 0);
}

/* ---- client side ---- */

static void on_stop(void *opaque, uint32_t events)
{
	(void)events;
	event_loop_stop(opaque);
}

static void *run_loop(void *arg)
{
	return (void *)(intptr_t)event_loop_run(arg);
}

static void test_control_call_round_trip(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	json_t *req, *reply = NULL;
	pthread_t thread;
	void *loop_ret;
	uint64_t one = 1;
	int stop_fd = eventfd(0, EFD_CLOEXEC);

	assert_true(stop_fd >= 0);
	assert_int_equal(event_loop_add(&f->loop, stop_fd, EPOLLIN, on_stop, &f->loop, &err), 0);
	assert_int_equal(pthread_create(&thread, NULL, run_loop, &f->loop), 0);

	req = json_pack("{s:s, s:s}", "cmd", "echo", "value", "via control_call");
	if (control_call(f->path, req, &reply, -1, &err) < 0)
		fail_msg("control_call: %s", err.msg);
	assert_true(reply_ok(reply));
	assert_string_equal(json_string_value(json_object_get(reply, "value")), "via control_call");
	json_decref(reply);
	json_decref(req);

	req = json_pack("{s:s}", "cmd", "fail");
	assert_int_equal(control_call(f->path, req, &reply, -1, &err), 0);
	assert_string_equal(reply_error(reply), "fail: the VM is busy (expected it to be idle)");
	json_decref(reply);
	json_decref(req);

	assert_int_equal(write(stop_fd, &one, sizeof(one)), sizeof(one));
	assert_int_equal(pthread_join(thread, &loop_ret), 0);
	assert_null(loop_ret);
	event_loop_remove(&f->loop, stop_fd);
	close(stop_fd);
	assert_int_equal(f->echo_calls, 1);
}

static void test_control_call_no_server(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	json_t *req = json_pack("{s:s}", "cmd", "status"), *reply = (json_t *)1;
	char path[192];

	snprintf(path, sizeof(path), "%s/nobody-here", f->dir);
	assert_int_equal(control_call(path, req, &reply, 1000, &err), -ENOENT);
	assert_null(reply);
	assert_contains(err.msg, path);
	assert_contains(err.msg, "cannot connect");

	/* A socket file nobody listens on. */
	make_stale_socket(path);
	assert_int_equal(control_call(path, req, &reply, 1000, &err), -ECONNREFUSED);
	assert_contains(err.msg, path);
	unlink(path);
	json_decref(req);
}

static void test_control_call_timeout(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct fk_err err = {0};
	json_t *req = json_pack("{s:s}", "cmd", "status"), *reply;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	/* Listens but never accepts or answers. */
	snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/silent.sock", f->dir);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof(addr)), 0);
	assert_int_equal(listen(fd, 4), 0);
	assert_int_equal(control_call(addr.sun_path, req, &reply, 50, &err), -ETIMEDOUT);
	assert_null(reply);
	assert_contains(err.msg, addr.sun_path);
	assert_contains(err.msg, "no reply within 50 ms");
	close(fd);
	unlink(addr.sun_path);
	json_decref(req);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	    T(test_round_trip),
	    T(test_help_lists_commands),
	    T(test_request_errors_keep_connection),
	    T(test_argument_errors),
	    T(test_handler_error),
	    T(test_two_clients_interleaved),
	    T(test_request_split_across_writes),
	    T(test_disconnect_mid_request),
	    T(test_half_close_still_answered),
	    T(test_oversize_request),
	    T(test_too_many_clients),
	    T(test_large_replies_to_slow_reader),
	    T(test_stale_socket_replaced),
	    T(test_live_server_refused),
	    T(test_regular_file_refused),
	    T(test_destroy_unlinks_and_closes),
	    T(test_control_call_round_trip),
	    T(test_control_call_no_server),
	    T(test_control_call_timeout),
#undef T
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
