/* SPDX-License-Identifier: MIT */
/*
 * The real forkd-agent binary (FORKD_AGENT, default build/guest/forkd-agent)
 * on this host, listening on a Unix socket with --no-identity (fork_notify
 * and shutdown only validate and answer: nothing touches this host's clock,
 * hostname, RNG or PID 1) and a VM generation ID read from a file the test
 * rewrites to simulate a fork. Driven through the frame codec.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "forkd/agent_proto.h"

#define FRAME_TIMEOUT_MS 30000
#define MIB		 (1024u * 1024u)

static char dir[160], sock_path[200], genid_path[200], log_path[200];
static pid_t agent_pid = -1;
static uint8_t genid[16];

struct client {
	int fd;
	struct fk_frame_reader reader;
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
};

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L}, NULL);
}

static int connect_agent(void)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (strlen(sock_path) >= sizeof(addr.sun_path)) {
		close(fd);
		return -ENAMETOOLONG;
	}
	memcpy(addr.sun_path, sock_path, strlen(sock_path) + 1);
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	return fd;
}

static struct client *client_open(void)
{
	struct client *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->fd = connect_agent();
	assert_true(c->fd >= 0);
	assert_int_equal(fk_frame_reader_init(&c->reader), 0);
	return c;
}

static void client_close(struct client *c)
{
	if (c->fd >= 0)
		close(c->fd);
	fk_frame_reader_free(&c->reader);
	free(c);
}

static void client_send(struct client *c, unsigned type, const void *payload, uint32_t len)
{
	assert_int_equal(fk_frame_write(c->fd, type, payload, len), 0);
}

static void client_send_text(struct client *c, unsigned type, const char *text)
{
	client_send(c, type, text, (uint32_t)strlen(text));
}

/* The next frame (1), or the reader's error at the end of the stream. */
static int client_next(struct client *c)
{
	int64_t deadline = now_ms() + FRAME_TIMEOUT_MS;

	for (;;) {
		int ret = fk_frame_read(&c->reader, c->fd, &c->hdr, &c->payload);
		if (ret != 0)
			return ret;
		struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
		int left = (int)(deadline - now_ms());
		if (left <= 0 || poll(&pfd, 1, left) == 0)
			fail_msg("no frame from the agent in %d ms", FRAME_TIMEOUT_MS);
	}
}

static json_t *payload_json(struct client *c)
{
	json_error_t jerr;
	json_t *obj = json_loadb((const char *)c->payload, c->hdr.len, 0, &jerr);

	if (!obj)
		fail_msg("%s payload is not JSON: %s", fk_frame_type_name(c->hdr.type), jerr.text);
	return obj;
}

static json_t *expect_json(struct client *c, unsigned type)
{
	assert_int_equal(client_next(c), 1);
	if (c->hdr.type != type)
		fail_msg("got %s %.*s, expected %s", fk_frame_type_name(c->hdr.type),
			 (int)c->hdr.len, (const char *)c->payload, fk_frame_type_name(type));
	return payload_json(c);
}

static long json_int(json_t *obj, const char *key)
{
	json_t *v = json_object_get(obj, key);

	if (!json_is_integer(v))
		fail_msg("field \"%s\" is missing or not an integer", key);
	return (long)json_integer_value(v);
}

/* Expects ERROR with errno `err` (or any when err < 0) and a message containing needle; then the
 * end. */
static void expect_error(struct client *c, int err, const char *needle)
{
	json_t *e = expect_json(c, FK_FRAME_ERROR);
	const char *message = json_string_value(json_object_get(e, "error"));

	assert_non_null(message);
	if (!strstr(message, needle))
		fail_msg("ERROR \"%s\" lacks \"%s\"", message, needle);
	if (err >= 0)
		assert_int_equal(json_int(e, "errno"), err);
	json_decref(e);
	int ret = client_next(c);
	assert_true(ret == -ENODATA || ret == -ECONNRESET);
}

static void request(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void request(struct client *c, const char *fmt, ...)
{
	char text[8192];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	client_send_text(c, FK_FRAME_REQUEST, text);
}

/* One request, one JSON answer: the RESPONSE, or NULL after checking an ERROR. */
static json_t *call(const char *text)
{
	struct client *c = client_open();

	client_send_text(c, FK_FRAME_REQUEST, text);
	json_t *r = expect_json(c, FK_FRAME_RESPONSE);
	client_close(c);
	return r;
}

static void call_error(const char *text, int err, const char *needle)
{
	struct client *c = client_open();

	client_send_text(c, FK_FRAME_REQUEST, text);
	expect_error(c, err, needle);
	client_close(c);
}

static void expect_agent_serving(void)
{
	json_t *r = call("{\"op\":\"ping\"}");
	assert_string_equal(json_string_value(json_object_get(r, "agent")), "forkd-agent");
	json_decref(r);
}

struct output {
	uint8_t *data;
	size_t len, cap;
	uint64_t total;
	bool keep; /* false: count and check for zeros only */
	bool all_zero;
};

static void output_add(struct output *o, const uint8_t *p, size_t len)
{
	o->total += len;
	if (!o->keep) {
		for (size_t i = 0; i < len; i++)
			o->all_zero &= p[i] == 0;
		return;
	}
	if (o->len + len + 1 > o->cap) {
		o->cap = (o->len + len + 1) * 2;
		o->data = realloc(o->data, o->cap);
		assert_non_null(o->data);
	}
	memcpy(o->data + o->len, p, len);
	o->len += len;
	o->data[o->len] = '\0';
}

struct exec_result {
	long pid;
	struct output out, err;
	json_t *exit;
};

static void result_init(struct exec_result *r)
{
	memset(r, 0, sizeof(*r));
	r->out.keep = r->err.keep = true;
	r->out.all_zero = r->err.all_zero = true;
}

static void result_free(struct exec_result *r)
{
	free(r->out.data);
	free(r->err.data);
	json_decref(r->exit);
}

/* Reads an exec's frames after the REQUEST was sent, up to EXIT. */
static void read_exec(struct client *c, struct exec_result *r)
{
	json_t *started = expect_json(c, FK_FRAME_RESPONSE);

	r->pid = json_int(started, "pid");
	json_decref(started);
	for (;;) {
		assert_int_equal(client_next(c), 1);
		switch (c->hdr.type) {
		case FK_FRAME_STDOUT:
			output_add(&r->out, c->payload, c->hdr.len);
			break;
		case FK_FRAME_STDERR:
			output_add(&r->err, c->payload, c->hdr.len);
			break;
		case FK_FRAME_EXIT:
			r->exit = payload_json(c);
			assert_int_equal(client_next(c), -ENODATA);
			return;
		default:
			fail_msg("unexpected %s during exec: %.*s", fk_frame_type_name(c->hdr.type),
				 (int)c->hdr.len, (const char *)c->payload);
		}
	}
}

static void run_exec(struct exec_result *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void run_exec(struct exec_result *r, const char *fmt, ...)
{
	char text[8192];
	va_list ap;
	struct client *c = client_open();

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	client_send_text(c, FK_FRAME_REQUEST, text);
	read_exec(c, r);
	client_close(c);
}

static bool exit_is(json_t *exit, const char *key, long value, bool timed_out)
{
	json_t *v = json_object_get(exit, key);

	return json_is_integer(v) && json_integer_value(v) == value &&
	       json_is_true(json_object_get(exit, "timed_out")) == timed_out;
}

static void expect_exit(json_t *exit, const char *key, long value, bool timed_out)
{
	if (!exit_is(exit, key, value, timed_out)) {
		char *text = json_dumps(exit, JSON_COMPACT);
		fail_msg("EXIT %s, expected %s %ld timed_out %d", text, key, value, timed_out);
	}
}

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static uint8_t *pattern(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);
	uint64_t x = 0x9e3779b97f4a7c15ull * (seed + 1);

	assert_non_null(p);
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)x;
	}
	return p;
}

static uint64_t fnv1a(const uint8_t *p, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (size_t i = 0; i < len; i++)
		h = (h ^ p[i]) * 0x100000001b3ull;
	return h;
}

/* True while pid exists and is not a zombie. */
static bool process_alive(long pid)
{
	char path[64], stat_line[512];

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, stat_line, sizeof(stat_line) - 1);
	close(fd);
	if (n <= 0)
		return false;
	stat_line[n] = '\0';
	const char *end = strrchr(stat_line, ')');
	return end && end[1] == ' ' && end[2] != 'Z' && end[2] != 'X';
}

static bool wait_gone(long pid, int timeout_ms)
{
	for (int waited = 0; waited < timeout_ms; waited += 20) {
		if (!process_alive(pid))
			return true;
		sleep_ms(20);
	}
	return !process_alive(pid);
}

static long parent_of(long pid)
{
	char path[64], line[512];

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	ssize_t n = read(fd, line, sizeof(line) - 1);
	close(fd);
	assert_true(n > 0);
	line[n] = '\0';
	char state;
	long ppid;
	assert_int_equal(sscanf(strrchr(line, ')') + 2, "%c %ld", &state, &ppid), 2);
	return ppid;
}

static long rss_kib(long pid)
{
	char path[64], line[256];
	long kib = -1;

	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	FILE *f = fopen(path, "re");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kib) == 1)
			break;
	fclose(f);
	return kib;
}

static void set_genid(const char *hex)
{
	for (int i = 0; i < 16; i++) {
		unsigned byte;
		assert_int_equal(sscanf(hex + 2 * i, "%2x", &byte), 1);
		genid[i] = (uint8_t)byte;
	}
	/* In place: the agent maps this file, as it maps /dev/mem in a guest. */
	int fd = open(genid_path, O_WRONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, genid, sizeof(genid), 0), (ssize_t)sizeof(genid));
	close(fd);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP ? rmdir(path) : unlink(path);
}

static int start_agent(void **state)
{
	(void)state;
	const char *agent = getenv("FORKD_AGENT");
	const char *tmp = getenv("TMPDIR");
	char listen_arg[256];

	if (!agent || !*agent)
		agent = "build/guest/forkd-agent";
	snprintf(dir, sizeof(dir), "%s/forkd-agent-host-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/agent.sock", dir);
	snprintf(genid_path, sizeof(genid_path), "%s/genid", dir);
	snprintf(log_path, sizeof(log_path), "%s/agent.log", dir);
	snprintf(listen_arg, sizeof(listen_arg), "unix:%s", sock_path);
	memcpy(genid, "\x01\x23\x45\x67\x89\xab\xcd\xef\x10\x32\x54\x76\x98\xba\xdc\xfe", 16);
	write_file(genid_path, genid, sizeof(genid), 0644);

	agent_pid = fork();
	if (agent_pid == 0) {
		int log = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (log >= 0)
			dup2(log, STDERR_FILENO);
		execl(agent, "forkd-agent", "--listen", listen_arg, "--no-identity", "--genid-dev",
		      genid_path, "--genid-addr", "0", (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", agent, strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 250; i++) {
		int fd = connect_agent();
		if (fd >= 0) {
			close(fd);
			return 0;
		}
		if (waitpid(agent_pid, NULL, WNOHANG) == agent_pid) {
			fprintf(stderr, "forkd-agent (%s) exited at start; see %s\n", agent,
				log_path);
			agent_pid = -1;
			return -1;
		}
		sleep_ms(20);
	}
	fprintf(stderr, "forkd-agent did not listen on %s in 5 s\n", sock_path);
	return -1;
}

static int stop_agent(void **state)
{
	(void)state;
	char line[512];

	if (agent_pid > 0) {
		kill(agent_pid, SIGTERM);
		waitpid(agent_pid, NULL, 0);
	}
	/* The agent's log helps when a test failed; it is short. */
	FILE *log = fopen(log_path, "re");
	if (log && getenv("FORKD_AGENT_LOG")) {
		while (fgets(line, sizeof(line), log))
			fprintf(stderr, "  agent: %s", line);
	}
	if (log)
		fclose(log);
	nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static void test_ping(void **state)
{
	(void)state;
	json_t *r = call("{\"op\":\"ping\"}");

	assert_string_equal(json_string_value(json_object_get(r, "agent")), "forkd-agent");
	assert_int_equal(json_int(r, "version"), 1);
	assert_int_equal(json_int(r, "pid"), agent_pid);
	assert_true(json_is_false(json_object_get(r, "fork_pending")));
	assert_string_equal(json_string_value(json_object_get(r, "generation")),
			    "0123456789abcdef1032547698badcfe");
	assert_true(json_is_string(json_object_get(r, "boot_id")));
	json_decref(r);
}

static void test_exec_echo(void **state)
{
	(void)state;
	struct exec_result r;

	result_init(&r);
	run_exec(&r, "{\"op\":\"exec\",\"argv\":[\"echo\",\"hello\",\"world\"]}");
	assert_true(r.pid > 0);
	assert_string_equal((char *)r.out.data, "hello world\n");
	assert_int_equal(r.err.total, 0);
	expect_exit(r.exit, "exit_code", 0, false);
	result_free(&r);
}

static void test_exec_exit_codes_env_cwd(void **state)
{
	(void)state;
	struct exec_result r;

	result_init(&r);
	run_exec(&r, "{\"op\":\"exec\",\"argv\":[\"/bin/sh\",\"-c\",\"exit 7\"]}");
	expect_exit(r.exit, "exit_code", 7, false);
	result_free(&r);

	result_init(&r);
	run_exec(&r,
		 "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo $GREETING; pwd; exit 255\"],"
		 "\"env\":{\"GREETING\":\"hi there\"},\"cwd\":\"%s\"}",
		 dir);
	char expected[PATH_MAX + 32];
	snprintf(expected, sizeof(expected), "hi there\n%s\n", dir);
	assert_string_equal((char *)r.out.data, expected);
	expect_exit(r.exit, "exit_code", 255, false);
	result_free(&r);

	/* The default environment: a PATH, and nothing of the agent's own environment. */
	result_init(&r);
	run_exec(&r,
		 "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo $PATH; echo x$TMPDIR$USER\"]}");
	assert_non_null(strstr((char *)r.out.data, "/usr/bin"));
	assert_non_null(strstr((char *)r.out.data, "\nx\n"));
	result_free(&r);
}

static void test_exec_signal_exit(void **state)
{
	(void)state;
	struct exec_result r;

	result_init(&r);
	run_exec(&r, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"kill -TERM $$\"]}");
	expect_exit(r.exit, "signal", SIGTERM, false);
	result_free(&r);

	/* A SIGNAL frame reaches the whole process group. */
	struct client *c = client_open();
	result_init(&r);
	request(c, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"sleep 30 & wait\"]}");
	client_send_text(c, FK_FRAME_SIGNAL, "{\"signal\":2}");
	read_exec(c, &r);
	expect_exit(r.exit, "signal", SIGINT, false);
	result_free(&r);
	client_close(c);
}

static void test_exec_16mib_stdout_and_stderr(void **state)
{
	(void)state;
	size_t len = 16 * MIB;
	uint8_t *data = pattern(len, 1);
	char path[PATH_MAX + 16];
	struct exec_result r;

	snprintf(path, sizeof(path), "%s/big", dir);
	write_file(path, data, len, 0644);
	result_init(&r);
	run_exec(&r,
		 "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"head -c 8388608 \\\"$0\\\"; echo "
		 "middle >&2; tail -c +8388609 \\\"$0\\\"; echo end >&2\",\"%s\"]}",
		 path);
	assert_int_equal(r.out.len, len);
	assert_true(fnv1a(r.out.data, r.out.len) == fnv1a(data, len));
	assert_string_equal((char *)r.err.data, "middle\nend\n");
	expect_exit(r.exit, "exit_code", 0, false);
	result_free(&r);
	unlink(path);
	free(data);
}

/*
 * 100 MiB through a host that starts reading late: the command blocks on its
 * pipe and the agent's handler holds about one frame, not the backlog.
 */
static void test_exec_100mib_bounded(void **state)
{
	(void)state;
	struct client *c = client_open();
	struct exec_result r;

	result_init(&r);
	r.out.keep = false;
	request(c, "{\"op\":\"exec\",\"argv\":[\"head\",\"-c\",\"104857600\",\"/dev/zero\"]}");
	json_t *started = expect_json(c, FK_FRAME_RESPONSE);
	long pid = json_int(started, "pid");
	json_decref(started);
	sleep_ms(500);
	long handler = parent_of(pid);
	long handler_kib = rss_kib(handler);
	assert_true(handler_kib > 0);
	if (handler_kib > 16 * 1024)
		fail_msg("the exec handler holds %ld KiB while the host does not read",
			 handler_kib);
	for (;;) {
		assert_int_equal(client_next(c), 1);
		if (c->hdr.type == FK_FRAME_EXIT)
			break;
		assert_int_equal(c->hdr.type, FK_FRAME_STDOUT);
		output_add(&r.out, c->payload, c->hdr.len);
	}
	r.exit = payload_json(c);
	assert_true(r.out.total == 100ull * MIB);
	assert_true(r.out.all_zero);
	expect_exit(r.exit, "exit_code", 0, false);
	result_free(&r);
	client_close(c);
}

struct stdin_job {
	int fd;
	const uint8_t *data;
	size_t len;
};

static void *send_stdin(void *arg)
{
	struct stdin_job *job = arg;

	for (size_t off = 0; off < job->len;) {
		size_t n = job->len - off < 100000 ? job->len - off : 100000;
		if (fk_frame_write(job->fd, FK_FRAME_STDIN, job->data + off, (uint32_t)n) < 0)
			return NULL;
		off += n;
	}
	fk_frame_write(job->fd, FK_FRAME_STDIN_EOF, NULL, 0);
	return NULL;
}

static void test_exec_stdin_cat(void **state)
{
	(void)state;
	size_t len = 8 * MIB + 123;
	uint8_t *data = pattern(len, 2);
	struct client *c = client_open();
	struct stdin_job job = {.fd = c->fd, .data = data, .len = len};
	struct exec_result r;
	pthread_t writer;

	result_init(&r);
	request(c, "{\"op\":\"exec\",\"argv\":[\"cat\"],\"stdin\":true}");
	/* Stdin and stdout flow at once: the writer runs beside the reader. */
	assert_int_equal(pthread_create(&writer, NULL, send_stdin, &job), 0);
	read_exec(c, &r);
	pthread_join(writer, NULL);
	assert_int_equal(r.out.len, len);
	assert_memory_equal(r.out.data, data, len);
	expect_exit(r.exit, "exit_code", 0, false);
	result_free(&r);
	client_close(c);
	free(data);

	/* Without stdin the command reads /dev/null. */
	result_init(&r);
	run_exec(&r, "{\"op\":\"exec\",\"argv\":[\"wc\",\"-c\"]}");
	assert_string_equal((char *)r.out.data, "0\n");
	result_free(&r);
}

static void test_exec_timeout(void **state)
{
	(void)state;
	struct exec_result r;
	int64_t start = now_ms();

	result_init(&r);
	run_exec(&r, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"echo started; sleep 30\"],"
		     "\"timeout_ms\":300}");
	assert_true(now_ms() - start < 5000);
	assert_string_equal((char *)r.out.data, "started\n");
	expect_exit(r.exit, "signal", SIGKILL, true);
	result_free(&r);
}

static void test_exec_32_concurrent(void **state)
{
	(void)state;
	enum { N = 40 };
	struct client *clients[N];
	int64_t start = now_ms();

	for (int i = 0; i < N; i++) {
		clients[i] = client_open();
		request(clients[i],
			"{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"sleep 1; echo $0\",\"%d\"]}",
			i);
	}
	for (int i = 0; i < N; i++) {
		struct exec_result r;
		char expected[16];
		result_init(&r);
		read_exec(clients[i], &r);
		snprintf(expected, sizeof(expected), "%d\n", i);
		assert_string_equal((char *)r.out.data, expected);
		expect_exit(r.exit, "exit_code", 0, false);
		result_free(&r);
		client_close(clients[i]);
	}
	/* Served one after another this would take N seconds. */
	assert_true(now_ms() - start < 10000);
}

static void put_file(const char *path, const uint8_t *data, size_t len, unsigned mode)
{
	struct client *c = client_open();

	request(c, "{\"op\":\"put\",\"path\":\"%s\",\"mode\":%u}", path, mode);
	for (size_t off = 0; off < len;) {
		size_t n = len - off < FK_AGENT_MAX_PAYLOAD ? len - off : FK_AGENT_MAX_PAYLOAD;
		client_send(c, FK_FRAME_DATA, data + off, (uint32_t)n);
		off += n;
	}
	client_send(c, FK_FRAME_DATA_EOF, NULL, 0);
	json_t *r = expect_json(c, FK_FRAME_RESPONSE);
	assert_int_equal(json_int(r, "size"), (long)len);
	json_decref(r);
	client_close(c);
}

static size_t count_entries_with(const char *directory, const char *needle)
{
	size_t n = 0;
	struct dirent *de;
	DIR *d = opendir(directory);

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strstr(de->d_name, needle) != NULL;
	closedir(d);
	return n;
}

static void test_put_get_32mib(void **state)
{
	(void)state;
	size_t len = 32 * MIB + 7;
	uint8_t *data = pattern(len, 3);
	char path[PATH_MAX + 16];
	struct stat st;

	snprintf(path, sizeof(path), "%s/uploaded", dir);
	put_file(path, data, len, 0600);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, (off_t)len);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(count_entries_with(dir, "forkd-put"), 0);

	/* Replacing keeps it atomic and applies the new mode. */
	put_file(path, data, 1000, 0755);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 1000);
	assert_int_equal(st.st_mode & 07777, 0755);
	put_file(path, data, len, 0640);

	struct client *c = client_open();
	request(c, "{\"op\":\"get\",\"path\":\"%s\"}", path);
	json_t *r = expect_json(c, FK_FRAME_RESPONSE);
	assert_int_equal(json_int(r, "size"), (long)len);
	assert_int_equal(json_int(r, "mode"), 0640);
	json_decref(r);
	struct output got = {.keep = true};
	for (;;) {
		assert_int_equal(client_next(c), 1);
		if (c->hdr.type == FK_FRAME_DATA_EOF)
			break;
		assert_int_equal(c->hdr.type, FK_FRAME_DATA);
		output_add(&got, c->payload, c->hdr.len);
	}
	assert_int_equal(client_next(c), -ENODATA);
	assert_int_equal(got.len, len);
	assert_memory_equal(got.data, data, len);
	free(got.data);
	client_close(c);

	/* An empty file. */
	snprintf(path, sizeof(path), "%s/empty", dir);
	put_file(path, NULL, 0, 0644);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, 0);
	free(data);
}

static void test_put_disconnect_leaves_nothing(void **state)
{
	(void)state;
	char path[PATH_MAX + 16];
	uint8_t chunk[4096] = {0};
	struct client *c = client_open();

	snprintf(path, sizeof(path), "%s/partial", dir);
	request(c, "{\"op\":\"put\",\"path\":\"%s\"}", path);
	client_send(c, FK_FRAME_DATA, chunk, sizeof(chunk));
	sleep_ms(100);
	assert_int_equal(count_entries_with(dir, "forkd-put"), 1);
	client_close(c);
	for (int i = 0; i < 100 && count_entries_with(dir, "forkd-put"); i++)
		sleep_ms(20);
	assert_int_equal(count_entries_with(dir, "forkd-put"), 0);
	assert_int_equal(access(path, F_OK), -1);

	/* A wrong frame in the upload: ERROR, and no file either. */
	c = client_open();
	request(c, "{\"op\":\"put\",\"path\":\"%s\"}", path);
	client_send(c, FK_FRAME_DATA, chunk, sizeof(chunk));
	client_send(c, FK_FRAME_STDIN, chunk, 1);
	expect_error(c, EBADMSG, "unexpected STDIN frame");
	client_close(c);
	assert_int_equal(count_entries_with(dir, "forkd-put"), 0);
	assert_int_equal(access(path, F_OK), -1);

	call_error("{\"op\":\"put\",\"path\":\"/nonexistent-forkd/x\"}", ENOENT,
		   "put /nonexistent-forkd/x: create a temporary file in /nonexistent-forkd");
}

static void test_stat_ls_rm(void **state)
{
	(void)state;
	char tree[256], path[PATH_MAX + 64], req[PATH_MAX + 128];

	snprintf(tree, sizeof(tree), "%s/tree", dir);
	assert_int_equal(mkdir(tree, 0755), 0);
	snprintf(path, sizeof(path), "%s/b-file", tree);
	write_file(path, "12345", 5, 0640);
	snprintf(path, sizeof(path), "%s/a-dir", tree);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a-dir/inner", tree);
	write_file(path, "x", 1, 0644);
	snprintf(path, sizeof(path), "%s/c-link", tree);
	assert_int_equal(symlink("b-file", path), 0);

	snprintf(req, sizeof(req), "{\"op\":\"stat\",\"path\":\"%s/b-file\"}", tree);
	json_t *r = call(req);
	assert_string_equal(json_string_value(json_object_get(r, "type")), "file");
	assert_int_equal(json_int(r, "size"), 5);
	assert_int_equal(json_int(r, "mode"), 0640);
	assert_int_equal(json_int(r, "uid"), (long)getuid());
	assert_true(json_int(r, "mtime_ns") > 1000000000000000000l);
	json_decref(r);
	snprintf(req, sizeof(req), "{\"op\":\"stat\",\"path\":\"%s/c-link\"}", tree);
	r = call(req);
	assert_string_equal(json_string_value(json_object_get(r, "type")), "link");
	json_decref(r);

	snprintf(req, sizeof(req), "{\"op\":\"ls\",\"path\":\"%s\"}", tree);
	r = call(req);
	json_t *entries = json_object_get(r, "entries");
	assert_int_equal(json_array_size(entries), 3);
	const char *names[] = {"a-dir", "b-file", "c-link"}, *types[] = {"dir", "file", "link"};
	for (size_t i = 0; i < 3; i++) {
		json_t *e = json_array_get(entries, i);
		assert_string_equal(json_string_value(json_object_get(e, "name")), names[i]);
		assert_string_equal(json_string_value(json_object_get(e, "type")), types[i]);
	}
	assert_int_equal(json_int(json_array_get(entries, 0), "mode"), 0700);
	assert_int_equal(json_int(json_array_get(entries, 1), "size"), 5);
	assert_true(json_is_false(json_object_get(r, "truncated")));
	json_decref(r);

	snprintf(req, sizeof(req), "{\"op\":\"rm\",\"path\":\"%s/a-dir\"}", tree);
	call_error(req, ENOTEMPTY, "a-dir");
	snprintf(req, sizeof(req), "{\"op\":\"rm\",\"path\":\"%s/c-link\"}", tree);
	json_decref(call(req));
	snprintf(path, sizeof(path), "%s/b-file", tree);
	assert_int_equal(access(path, F_OK), 0); /* the link went, not its target */
	snprintf(req, sizeof(req), "{\"op\":\"rm\",\"path\":\"%s\",\"recursive\":true}", tree);
	json_decref(call(req));
	assert_int_equal(access(tree, F_OK), -1);
	snprintf(req, sizeof(req), "{\"op\":\"stat\",\"path\":\"%s\"}", tree);
	call_error(req, ENOENT, tree);
	snprintf(req, sizeof(req), "{\"op\":\"ls\",\"path\":\"%s\"}", tree);
	call_error(req, ENOENT, tree);
	call_error("{\"op\":\"rm\",\"path\":\"/\",\"recursive\":true}", EPERM, "refusing");
	call_error("{\"op\":\"get\",\"path\":\"/\"}", EISDIR, "get /");
}

static void test_ls_bounded(void **state)
{
	(void)state;
	char tree[256], path[PATH_MAX + 64], req[PATH_MAX + 128];

	snprintf(tree, sizeof(tree), "%s/many", dir);
	assert_int_equal(mkdir(tree, 0755), 0);
	for (unsigned i = 0; i < FK_AGENT_LS_MAX + 5; i++) {
		snprintf(path, sizeof(path), "%s/f%04u", tree, i);
		write_file(path, "", 0, 0644);
	}
	snprintf(req, sizeof(req), "{\"op\":\"ls\",\"path\":\"%s\"}", tree);
	json_t *r = call(req);
	assert_int_equal(json_array_size(json_object_get(r, "entries")), FK_AGENT_LS_MAX);
	assert_true(json_is_true(json_object_get(r, "truncated")));
	json_decref(r);

	/* Long names: the answer is cut to fit one JSON frame instead. */
	char name[250];
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	for (unsigned i = 0; i < 300; i++) {
		snprintf(path, sizeof(path), "%s/%03u%s", tree, i, name);
		write_file(path, "", 0, 0644);
	}
	r = call(req);
	size_t n = json_array_size(json_object_get(r, "entries"));
	assert_true(n > 100 && n < FK_AGENT_LS_MAX);
	assert_true(json_is_true(json_object_get(r, "truncated")));
	json_decref(r);
	snprintf(req, sizeof(req), "{\"op\":\"rm\",\"path\":\"%s\",\"recursive\":true}", tree);
	json_decref(call(req));
}

static void test_exec_failures(void **state)
{
	(void)state;
	char path[PATH_MAX + 16], req[PATH_MAX + 128];

	call_error("{\"op\":\"exec\",\"argv\":[\"/nonexistent-forkd/bin\"]}", ENOENT,
		   "exec /nonexistent-forkd/bin: No such file or directory");
	call_error("{\"op\":\"exec\",\"argv\":[\"no-such-command-forkd\"]}", ENOENT,
		   "no-such-command-forkd: No such file or directory (looked up in PATH)");
	snprintf(path, sizeof(path), "%s/not-executable", dir);
	write_file(path, "#!/bin/sh\necho no\n", 18, 0644);
	snprintf(req, sizeof(req), "{\"op\":\"exec\",\"argv\":[\"%s\"]}", path);
	call_error(req, EACCES, path);
	call_error("{\"op\":\"exec\",\"argv\":[\"true\"],\"cwd\":\"/nonexistent-forkd-dir\"}",
		   ENOENT, "cwd /nonexistent-forkd-dir: No such file or directory");
	call_error("{\"op\":\"exec\",\"argv\":[\"true\"],\"cwd\":\"/etc/passwd\"}", ENOTDIR,
		   "cwd /etc/passwd");
	unlink(path);
	expect_agent_serving();
}

/* Sends raw bytes as the first thing on a connection; expects ERROR naming the problem. */
static void expect_raw_refused(const void *raw, size_t len, bool half_close, int err,
			       const char *needle)
{
	struct client *c = client_open();

	assert_int_equal(write(c->fd, raw, len), (ssize_t)len);
	if (half_close)
		shutdown(c->fd, SHUT_WR);
	expect_error(c, err, needle);
	client_close(c);
	expect_agent_serving();
}

static void raw_hdr(uint8_t out[FK_AGENT_HDR_LEN], unsigned magic, unsigned version, unsigned type,
		    uint32_t len)
{
	fk_frame_hdr_encode(out, type, len);
	out[0] = magic & 0xff;
	out[1] = magic >> 8;
	out[2] = (uint8_t)version;
}

static void test_malformed_frames(void **state)
{
	(void)state;
	uint8_t h[FK_AGENT_HDR_LEN + 16];

	raw_hdr(h, 0x5858, FK_AGENT_VERSION, FK_FRAME_REQUEST, 2);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EPROTO, "bad frame magic");
	raw_hdr(h, FK_AGENT_MAGIC, 2, FK_FRAME_REQUEST, 2);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EPROTONOSUPPORT, "protocol version 2");
	raw_hdr(h, FK_AGENT_MAGIC, FK_AGENT_VERSION, 0, 0);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EBADMSG, "unknown frame type 0");
	raw_hdr(h, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_TYPE_MAX + 1, 0);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EBADMSG, "unknown frame type 12");
	raw_hdr(h, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA_EOF, 3);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EBADMSG, "must be empty");
	raw_hdr(h, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_DATA, FK_AGENT_MAX_PAYLOAD + 1);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EMSGSIZE, "DATA frame of 262145");
	raw_hdr(h, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_REQUEST, FK_AGENT_MAX_JSON + 1);
	expect_raw_refused(h, FK_AGENT_HDR_LEN, false, EMSGSIZE, "REQUEST frame of 65537");
	/* Truncated: half a header, or a payload cut short, then the host stops sending. */
	raw_hdr(h, FK_AGENT_MAGIC, FK_AGENT_VERSION, FK_FRAME_REQUEST, 13);
	expect_raw_refused(h, 5, true, EPIPE, "inside a frame");
	memcpy(h + FK_AGENT_HDR_LEN, "{\"op\":", 6);
	expect_raw_refused(h, FK_AGENT_HDR_LEN + 6, true, EPIPE, "inside a frame");
	expect_raw_refused(h, 0, true, EPIPE, "closed the connection");
	/* A first frame that is not a REQUEST. */
	fk_frame_hdr_encode(h, FK_FRAME_STDIN, 1);
	h[FK_AGENT_HDR_LEN] = 'x';
	expect_raw_refused(h, FK_AGENT_HDR_LEN + 1, false, EBADMSG,
			   "expected a REQUEST frame first, got STDIN");
}

static void test_bad_requests(void **state)
{
	(void)state;
	call_error("[\"op\",\"ping\"]", EINVAL, "REQUEST is an array (expected a JSON object)");
	call_error("{\"op\":\"ping\"", EINVAL, "not valid JSON");
	call_error("{\"argv\":[\"true\"]}", EINVAL, "missing field \"op\"");
	call_error("{\"op\":\"launch\"}", EINVAL, "unknown op \"launch\"");
	call_error("{\"op\":\"exec\",\"argv\":\"true\"}", EINVAL, "\"argv\" is a string");
	call_error("{\"op\":\"exec\",\"argv\":[\"true\"],\"timeout_ms\":-5}", EINVAL,
		   "\"timeout_ms\" is -5");
	call_error("{\"op\":\"get\",\"path\":\"relative\"}", EINVAL, "not absolute");
	call_error("{\"op\":\"shutdown\",\"action\":\"explode\"}", EINVAL, "action \"explode\"");

	/* Mid-exec: STDIN nobody asked for, a second REQUEST, a bad SIGNAL. All kill the command.
	 */
	struct client *c = client_open();
	request(c, "{\"op\":\"exec\",\"argv\":[\"sleep\",\"30\"]}");
	json_t *r = expect_json(c, FK_FRAME_RESPONSE);
	long pid = json_int(r, "pid");
	json_decref(r);
	client_send(c, FK_FRAME_STDIN, "x", 1);
	expect_error(c, EBADMSG, "did not ask for stdin");
	client_close(c);
	assert_true(wait_gone(pid, 3000));

	c = client_open();
	request(c, "{\"op\":\"exec\",\"argv\":[\"sleep\",\"30\"],\"stdin\":true}");
	json_decref(expect_json(c, FK_FRAME_RESPONSE));
	client_send(c, FK_FRAME_STDIN_EOF, NULL, 0);
	client_send(c, FK_FRAME_STDIN, "x", 1);
	expect_error(c, EBADMSG, "STDIN frame after STDIN_EOF");
	client_close(c);

	c = client_open();
	request(c, "{\"op\":\"exec\",\"argv\":[\"sleep\",\"30\"]}");
	json_decref(expect_json(c, FK_FRAME_RESPONSE));
	request(c, "{\"op\":\"ping\"}");
	expect_error(c, EBADMSG, "unexpected REQUEST frame");
	client_close(c);

	c = client_open();
	request(c, "{\"op\":\"exec\",\"argv\":[\"sleep\",\"30\"]}");
	json_decref(expect_json(c, FK_FRAME_RESPONSE));
	client_send_text(c, FK_FRAME_SIGNAL, "{\"signal\":\"KILL\"}");
	expect_error(c, EINVAL, "\"signal\" is a string");
	client_close(c);

	/* A bad header in the middle of an exec. */
	c = client_open();
	request(c, "{\"op\":\"exec\",\"argv\":[\"sleep\",\"30\"]}");
	json_decref(expect_json(c, FK_FRAME_RESPONSE));
	uint8_t h[FK_AGENT_HDR_LEN];
	raw_hdr(h, FK_AGENT_MAGIC, 7, FK_FRAME_SIGNAL, 0);
	assert_int_equal(write(c->fd, h, sizeof(h)), (ssize_t)sizeof(h));
	expect_error(c, EPROTONOSUPPORT, "version 7");
	client_close(c);
	expect_agent_serving();
}

static void test_disconnect_mid_exec(void **state)
{
	(void)state;
	struct client *c = client_open();
	char line[64] = "";
	size_t got = 0;

	request(c, "{\"op\":\"exec\",\"argv\":[\"sh\",\"-c\",\"sleep 1000 & echo $!; wait\"]}");
	json_t *r = expect_json(c, FK_FRAME_RESPONSE);
	long shell = json_int(r, "pid");
	json_decref(r);
	while (!strchr(line, '\n')) {
		assert_int_equal(client_next(c), 1);
		assert_int_equal(c->hdr.type, FK_FRAME_STDOUT);
		assert_true(got + c->hdr.len < sizeof(line));
		memcpy(line + got, c->payload, c->hdr.len);
		got += c->hdr.len;
	}
	long background = strtol(line, NULL, 10);
	assert_true(process_alive(shell));
	assert_true(process_alive(background));
	client_close(c);
	assert_true(wait_gone(shell, 3000));
	assert_true(wait_gone(background, 3000));
	expect_agent_serving();
}

static void test_crashing_handler(void **state)
{
	(void)state;
	struct client *c = client_open();

	request(c, "{\"op\":\"exec\",\"argv\":[\"sleep\",\"30\"]}");
	json_t *r = expect_json(c, FK_FRAME_RESPONSE);
	long pid = json_int(r, "pid");
	json_decref(r);
	long handler = parent_of(pid);
	assert_int_not_equal(handler, agent_pid);
	kill((pid_t)handler, SIGSEGV);
	assert_true(client_next(c) < 0);
	client_close(c);
	/* The command dies with its handler (parent-death signal). */
	assert_true(wait_gone(pid, 3000));
	expect_agent_serving();
}

static void notify_request(char *out, size_t len, const char *generation)
{
	snprintf(out, len,
		 "{\"op\":\"fork_notify\",\"generation\":\"%s\",\"entropy\":"
		 "\"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\","
		 "\"realtime_ns\":1700000000000000000,\"hostname\":\"forkd-test\","
		 "\"machine_id\":\"0123456789abcdef0123456789abcdef\"}",
		 generation);
}

static void test_fork_identity(void **state)
{
	(void)state;
	static const char forked[] = "ffeeddccbbaa99887766554433221100";
	static const char forked_again[] = "00000000000000000000000000000001";
	char notify[1024];

	set_genid(forked);
	json_t *r = call("{\"op\":\"ping\"}");
	assert_true(json_is_true(json_object_get(r, "fork_pending")));
	assert_string_equal(json_string_value(json_object_get(r, "generation")), forked);
	json_decref(r);

	int64_t start = now_ms();
	call_error("{\"op\":\"exec\",\"argv\":[\"true\"]}", EAGAIN,
		   "this VM was forked or restored and has not received its fork notification yet");
	assert_true(now_ms() - start >= 1900);

	notify_request(notify, sizeof(notify), "0123456789abcdef0123456789abcdef");
	call_error(notify, ESTALE, "this VM is at generation ffeeddccbbaa99887766554433221100");
	call_error("{\"op\":\"fork_notify\",\"generation\":\"ffeeddccbbaa99887766554433221100\"}",
		   EINVAL, "missing field \"entropy\"");

	notify_request(notify, sizeof(notify), forked);
	r = call(notify);
	assert_true(json_is_true(json_object_get(r, "applied")));
	/* --no-identity: nothing was written to this host's /etc. */
	assert_true(json_is_false(json_object_get(r, "machine_id_written")));
	json_decref(r);

	struct exec_result x;
	result_init(&x);
	run_exec(&x, "{\"op\":\"exec\",\"argv\":[\"true\"]}");
	expect_exit(x.exit, "exit_code", 0, false);
	result_free(&x);

	/* An exec that arrives first waits for the notification on another connection. */
	set_genid(forked_again);
	struct client *c = client_open();
	request(c, "{\"op\":\"exec\",\"argv\":[\"echo\",\"after notify\"]}");
	sleep_ms(300);
	notify_request(notify, sizeof(notify), forked_again);
	json_decref(call(notify));
	result_init(&x);
	read_exec(c, &x);
	assert_string_equal((char *)x.out.data, "after notify\n");
	result_free(&x);
	client_close(c);

	r = call("{\"op\":\"ping\"}");
	assert_true(json_is_false(json_object_get(r, "fork_pending")));
	json_decref(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ping),
	    cmocka_unit_test(test_exec_echo),
	    cmocka_unit_test(test_exec_exit_codes_env_cwd),
	    cmocka_unit_test(test_exec_signal_exit),
	    cmocka_unit_test(test_exec_16mib_stdout_and_stderr),
	    cmocka_unit_test(test_exec_100mib_bounded),
	    cmocka_unit_test(test_exec_stdin_cat),
	    cmocka_unit_test(test_exec_timeout),
	    cmocka_unit_test(test_exec_32_concurrent),
	    cmocka_unit_test(test_put_get_32mib),
	    cmocka_unit_test(test_put_disconnect_leaves_nothing),
	    cmocka_unit_test(test_stat_ls_rm),
	    cmocka_unit_test(test_ls_bounded),
	    cmocka_unit_test(test_exec_failures),
	    cmocka_unit_test(test_malformed_frames),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_disconnect_mid_exec),
	    cmocka_unit_test(test_crashing_handler),
	    cmocka_unit_test(test_fork_identity),
	};
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, start_agent, stop_agent);
}
