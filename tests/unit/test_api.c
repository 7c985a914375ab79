/* SPDX-License-Identifier: MIT */
/*
 * The REST layer of forkd serve (src/daemon/api*.c) over real HTTP/1.1 on a
 * temporary Unix socket (and TCP on 127.0.0.1), against a fake daemon
 * defined in this file (so libforkd.a's daemon.o is never linked) and, for
 * exec and files, the real forkd-agent on this host behind a small
 * hybrid-vsock relay (as in test_agent_client.c). Also checks docs/api.yaml
 * against the route table.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/daemon.h"
#include "forkd/agent_proto.h"

#include "agent_relay.h"

#define CONNECT_MS	5000
#define STREAM_LINE_MAX (96u * 1024u) /* an NDJSON line's base64 is at most 64 KiB */

/* ---- the fake daemon: records each call, answers what the test set ---- */

/* Test-global: the fake daemon is called from the server's threads. */
static pthread_mutex_t fake_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char op[40];
	char arg[256]; /* id or tag */
	char body[1024];
	int cascade; /* -1: not a delete */
	int calls;
	int fail; /* -errno to return from the next operations, 0 for success */
	char fail_msg[128];
	char agent_sock[300];
	daemon_metric_fn metric_fn;
	void *metric_opaque;
	bool hold_branch; /* daemon_vm_branch waits until the test clears it */
	bool branch_waiting;
} fake;
static pthread_cond_t fake_cond = PTHREAD_COND_INITIALIZER;

static struct daemon *fake_daemon = (struct daemon *)&fake; /* any non-NULL pointer */

static int fake_record(const char *op, const char *arg, json_t *body, int cascade,
		       struct fk_err *err)
{
	int ret;

	pthread_mutex_lock(&fake_lock);
	snprintf(fake.op, sizeof(fake.op), "%s", op);
	snprintf(fake.arg, sizeof(fake.arg), "%s", arg ? arg : "");
	fake.body[0] = '\0';
	if (body) {
		char *t = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
		snprintf(fake.body, sizeof(fake.body), "%s", t ? t : "");
		free(t);
	}
	fake.cascade = cascade;
	fake.calls++;
	ret = fake.fail;
	if (ret)
		fk_fail(err, -ret, "%s %s: %s", op, arg ? arg : "", fake.fail_msg);
	pthread_mutex_unlock(&fake_lock);
	return ret;
}

static json_t *fake_vm(const char *id)
{
	return json_pack("{s:s,s:s,s:i}", "id", id, "state", "running", "pid", 1234);
}

int daemon_open(const struct daemon_config *cfg, struct daemon **out, int *adopted,
		struct fk_err *err)
{
	(void)cfg;
	(void)adopted;
	(void)err;
	*out = fake_daemon;
	return 0;
}

void daemon_close(struct daemon *d)
{
	(void)d;
}

int daemon_vm_create(struct daemon *d, json_t *body, json_t **vm, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("vm_create", NULL, body, -1, err);
	if (ret == 0)
		*vm = fake_vm("vm-00000001");
	return ret;
}

int daemon_vm_list(struct daemon *d, json_t **vms, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("vm_list", NULL, NULL, -1, err);
	if (ret == 0)
		*vms =
		    json_pack("{s:[o,o]}", "vms", fake_vm("vm-00000001"), fake_vm("vm-00000002"));
	return ret;
}

int daemon_vm_get(struct daemon *d, const char *id, json_t **vm, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("vm_get", id, NULL, -1, err);
	if (ret == 0)
		*vm = fake_vm(id);
	return ret;
}

int daemon_vm_delete(struct daemon *d, const char *id, bool cascade, json_t **removed,
		     struct fk_err *err)
{
	(void)d;
	int ret = fake_record("vm_delete", id, NULL, cascade, err);
	if (ret == 0)
		*removed = json_pack("{s:[s,s]}", "removed", id, "vm-0000000c");
	return ret;
}

int daemon_vm_branch(struct daemon *d, const char *id, json_t *body, json_t **result,
		     struct fk_err *err)
{
	(void)d;
	pthread_mutex_lock(&fake_lock);
	fake.branch_waiting = fake.hold_branch;
	pthread_cond_broadcast(&fake_cond);
	while (fake.hold_branch)
		pthread_cond_wait(&fake_cond, &fake_lock);
	fake.branch_waiting = false;
	pthread_mutex_unlock(&fake_lock);
	int ret = fake_record("vm_branch", id, body, -1, err);
	if (ret == 0)
		*result = json_pack("{s:s,s:i,s:[o]}", "zygote", "zy-1", "pause_us", 812,
				    "children", fake_vm("vm-0000000c"));
	return ret;
}

int daemon_vm_snapshot(struct daemon *d, const char *id, json_t *body, json_t **snapshot,
		       struct fk_err *err)
{
	(void)d;
	int ret = fake_record("vm_snapshot", id, body, -1, err);
	if (ret == 0)
		*snapshot =
		    json_pack("{s:s,s:s,s:s}", "tag", "t1", "state", "ready", "parent_vm", id);
	return ret;
}

int daemon_vm_agent_socket(struct daemon *d, const char *id, char *path, size_t len,
			   struct fk_err *err)
{
	(void)d;
	int ret = fake_record("vm_agent_socket", id, NULL, -1, err);
	if (ret == 0)
		snprintf(path, len, "%s", fake.agent_sock);
	return ret;
}

int daemon_snapshot_spawn(struct daemon *d, const char *tag, json_t *body, json_t **result,
			  struct fk_err *err)
{
	(void)d;
	int ret = fake_record("snapshot_spawn", tag, body, -1, err);
	if (ret == 0)
		*result = json_pack("{s:[o]}", "vms", fake_vm("vm-000000aa"));
	return ret;
}

int daemon_snapshot_list(struct daemon *d, json_t **snapshots, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("snapshot_list", NULL, NULL, -1, err);
	if (ret == 0)
		*snapshots = json_pack("{s:[]}", "snapshots");
	return ret;
}

int daemon_snapshot_get(struct daemon *d, const char *tag, json_t **snapshot, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("snapshot_get", tag, NULL, -1, err);
	if (ret == 0)
		*snapshot = json_pack("{s:s,s:s}", "tag", tag, "state", "ready");
	return ret;
}

int daemon_snapshot_delete(struct daemon *d, const char *tag, bool cascade, json_t **removed,
			   struct fk_err *err)
{
	(void)d;
	int ret = fake_record("snapshot_delete", tag, NULL, cascade, err);
	if (ret == 0)
		*removed = json_pack("{s:[s]}", "removed", tag);
	return ret;
}

int daemon_tree(struct daemon *d, json_t **tree, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("tree", NULL, NULL, -1, err);
	if (ret == 0)
		*tree = json_pack("{s:[{s:o,s:i,s:b}]}", "tree", "vm", fake_vm("vm-00000001"),
				  "depth", 0, "last_sibling", 1);
	return ret;
}

int daemon_image_list(struct daemon *d, json_t **images, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("image_list", NULL, NULL, -1, err);
	if (ret == 0)
		*images = json_pack("{s:[{s:s,s:i}]}", "images", "name", "py", "size", 4096);
	return ret;
}

int daemon_image_get(struct daemon *d, const char *name, json_t **image, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("image_get", name, NULL, -1, err);
	if (ret == 0)
		*image = json_pack("{s:s,s:i}", "name", name, "size", 4096);
	return ret;
}

int daemon_image_delete(struct daemon *d, const char *name, json_t **removed, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("image_delete", name, NULL, -1, err);
	if (ret == 0)
		*removed = json_pack("{s:[s]}", "removed", name);
	return ret;
}

int daemon_health(struct daemon *d, json_t **health, struct fk_err *err)
{
	(void)d;
	int ret = fake_record("health", NULL, NULL, -1, err);
	if (ret == 0)
		*health = json_pack("{s:b,s:i}", "ok", 1, "vms", 2);
	return ret;
}

/*
 * The API brackets each request with these (the daemon's deferred work waits for the answer):
 * counted, so that a test can see every begin has its end.
 */
static atomic_int defer_begins, defer_ends;

void daemon_defer_begin(void)
{
	atomic_fetch_add(&defer_begins, 1);
}

void daemon_defer_end(void)
{
	atomic_fetch_add(&defer_ends, 1);
}

void daemon_set_metrics(struct daemon *d, daemon_metric_fn fn, void *opaque)
{
	(void)d;
	pthread_mutex_lock(&fake_lock);
	fake.metric_fn = fn;
	fake.metric_opaque = opaque;
	pthread_mutex_unlock(&fake_lock);
}

static void fake_reset(int fail, const char *msg)
{
	pthread_mutex_lock(&fake_lock);
	fake.op[0] = fake.arg[0] = fake.body[0] = '\0';
	fake.cascade = -1;
	fake.fail = fail;
	snprintf(fake.fail_msg, sizeof(fake.fail_msg), "%s", msg ? msg : "");
	pthread_mutex_unlock(&fake_lock);
}

/* ---- setup: the API on the fake daemon, the agent behind its relay (agent_relay.h) ---- */

static char dir[256], sock_path[300], audit_path[300];
static struct api *api;

static int setup(void **state)
{
	struct fk_err err = {0};

	(void)state;
	signal(SIGPIPE, SIG_IGN);
	snprintf(dir, sizeof(dir), "%s/forkd-api-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(dir))
		return -1;
	snprintf(sock_path, sizeof(sock_path), "%s/forkd.sock", dir);
	snprintf(audit_path, sizeof(audit_path), "%s/audit.log", dir);
	if (agent_relay_start(dir) < 0)
		return -1;
	snprintf(fake.agent_sock, sizeof(fake.agent_sock), "%s", relay_sock);

	struct api_config cfg = {.socket_path = sock_path, .audit_log_path = audit_path};
	if (api_start(fake_daemon, &cfg, &api, &err) < 0) {
		fprintf(stderr, "api_start: %s\n", err.msg);
		return -1;
	}
	return 0;
}

static int teardown(void **state)
{
	char cmd[300];

	(void)state;
	api_stop(api);
	agent_relay_stop();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- a small HTTP/1.1 client ---- */

struct resp {
	int status;
	char head[8192];
	char *body;
	size_t len;
	json_t *json;
};

static void resp_free(struct resp *r)
{
	free(r->body);
	json_decref(r->json);
	memset(r, 0, sizeof(*r));
}

static int tcp_connect(int port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static void send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n <= 0)
			return; /* the server may refuse early: read its answer */
		p += n;
		len -= (size_t)n;
	}
}

static void send_request(int fd, const char *method, const char *path, const char *headers,
			 const void *body, size_t len)
{
	char head[2048];
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: forkd\r\nConnection: close\r\n"
			 "Content-Length: %zu\r\n%s\r\n",
			 method, path, len, headers ? headers : "");

	send_all(fd, head, (size_t)n);
	if (len)
		send_all(fd, body, len);
}

/* Decodes a chunked body in place; false if it is malformed or cut short. */
static bool dechunk(char *buf, size_t *len)
{
	size_t in = 0, out = 0;

	for (;;) {
		char *end;
		unsigned long n = strtoul(buf + in, &end, 16);
		char *crlf = memmem(buf + in, *len - in, "\r\n", 2);
		if (!crlf || end == buf + in)
			return false;
		in = (size_t)(crlf - buf) + 2;
		if (n == 0)
			break;
		if (in + n + 2 > *len)
			return false;
		memmove(buf + out, buf + in, n);
		out += n;
		in += n + 2;
	}
	*len = out;
	return true;
}

/* Reads the whole response (the server closes after it). */
static void read_response(int fd, struct resp *r)
{
	size_t cap = 1 << 16, have = 0;
	char *buf = malloc(cap);
	ssize_t n;

	assert_non_null(buf);
	for (;;) {
		if (have + 4096 > cap) {
			cap *= 2;
			buf = realloc(buf, cap);
			assert_non_null(buf);
		}
		n = recv(fd, buf + have, cap - have - 1, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
	}
	buf[have] = '\0';
	char *sep = strstr(buf, "\r\n\r\n");
	if (!sep)
		fail_msg("no HTTP response head in %zu bytes: %.200s", have, buf);
	size_t head_len = (size_t)(sep - buf);
	snprintf(r->head, sizeof(r->head), "%.*s", (int)head_len, buf);
	assert_int_equal(sscanf(buf, "HTTP/1.%*d %d", &r->status), 1);
	r->len = have - head_len - 4;
	r->body = malloc(r->len + 1);
	assert_non_null(r->body);
	memcpy(r->body, sep + 4, r->len);
	r->body[r->len] = '\0';
	free(buf);
	if (strcasestr(r->head, "Transfer-Encoding: chunked")) {
		r->body[r->len] = '\0';
		if (!dechunk(r->body, &r->len))
			r->len = (size_t)-1; /* marks a cut stream */
		else
			r->body[r->len] = '\0';
	}
	if (r->len != (size_t)-1 && strcasestr(r->head, "Content-Type: application/json"))
		r->json = json_loadb(r->body, r->len, 0, NULL);
}

static int http_fd(int fd, const char *method, const char *path, const char *headers,
		   const void *body, size_t len, struct resp *r)
{
	memset(r, 0, sizeof(*r));
	assert_true(fd >= 0);
	send_request(fd, method, path, headers, body, len);
	read_response(fd, r);
	close(fd);
	return r->status;
}

static int http(const char *method, const char *path, const char *body, struct resp *r)
{
	return http_fd(unix_connect(sock_path), method, path, NULL, body, body ? strlen(body) : 0,
		       r);
}

static const char *error_code(struct resp *r)
{
	json_t *e = json_object_get(r->json, "error");

	assert_true(json_is_object(e));
	assert_true(json_is_string(json_object_get(e, "message")));
	assert_int_equal(json_object_size(e), 2);
	return json_string_value(json_object_get(e, "code"));
}

/* ---- routes ---- */

static void expect_op(const char *op, const char *arg, const char *body)
{
	pthread_mutex_lock(&fake_lock);
	char got_op[40], got_arg[256], got_body[1024];
	snprintf(got_op, sizeof(got_op), "%s", fake.op);
	snprintf(got_arg, sizeof(got_arg), "%s", fake.arg);
	snprintf(got_body, sizeof(got_body), "%s", fake.body);
	pthread_mutex_unlock(&fake_lock);
	assert_string_equal(got_op, op);
	assert_string_equal(got_arg, arg);
	assert_string_equal(got_body, body);
}

static void test_routes(void **state)
{
	struct resp r;

	(void)state;
	fake_reset(0, NULL);
	assert_int_equal(http("GET", "/healthz", NULL, &r), 200);
	expect_op("health", "", "");
	assert_true(json_is_true(json_object_get(r.json, "ok")));
	resp_free(&r);

	assert_int_equal(http("POST", "/v1/vms", "{\"image\":\"py\",\"mem_mib\":256}", &r), 201);
	expect_op("vm_create", "", "{\"image\":\"py\",\"mem_mib\":256}");
	assert_string_equal(json_string_value(json_object_get(r.json, "id")), "vm-00000001");
	resp_free(&r);

	assert_int_equal(http("GET", "/v1/vms", NULL, &r), 200);
	expect_op("vm_list", "", "");
	assert_int_equal(json_array_size(json_object_get(r.json, "vms")), 2);
	resp_free(&r);

	assert_int_equal(http("GET", "/v1/vms/vm-1a2b3c4d", NULL, &r), 200);
	expect_op("vm_get", "vm-1a2b3c4d", "");
	resp_free(&r);

	assert_int_equal(http("DELETE", "/v1/vms/vm-1a2b3c4d?cascade=true", NULL, &r), 200);
	expect_op("vm_delete", "vm-1a2b3c4d", "");
	assert_int_equal(fake.cascade, 1);
	assert_int_equal(json_array_size(json_object_get(r.json, "removed")), 2);
	resp_free(&r);
	assert_int_equal(http("DELETE", "/v1/vms/vm-1a2b3c4d", NULL, &r), 200);
	assert_int_equal(fake.cascade, 0);
	resp_free(&r);
	assert_int_equal(http("DELETE", "/v1/vms/vm-1a2b3c4d?cascade", NULL, &r), 200);
	assert_int_equal(fake.cascade, 1);
	resp_free(&r);
	assert_int_equal(http("DELETE", "/v1/vms/vm-1a2b3c4d?cascade=false", NULL, &r), 200);
	assert_int_equal(fake.cascade, 0);
	resp_free(&r);
	assert_int_equal(http("DELETE", "/v1/vms/vm-1a2b3c4d?cascade=maybe", NULL, &r), 400);
	assert_string_equal(error_code(&r), "bad_request");
	resp_free(&r);

	assert_int_equal(
	    http("POST", "/v1/vms/vm-1a2b3c4d/branch", "{\"n\":3,\"persist\":false}", &r), 201);
	expect_op("vm_branch", "vm-1a2b3c4d", "{\"n\":3,\"persist\":false}");
	assert_string_equal(json_string_value(json_object_get(r.json, "zygote")), "zy-1");
	resp_free(&r);

	assert_int_equal(http("POST", "/v1/vms/vm-1a2b3c4d/snapshot", "{\"tag\":\"t1\"}", &r), 201);
	expect_op("vm_snapshot", "vm-1a2b3c4d", "{\"tag\":\"t1\"}");
	resp_free(&r);

	assert_int_equal(http("POST", "/v1/snapshots/t1/spawn", "{\"n\":2}", &r), 201);
	expect_op("snapshot_spawn", "t1", "{\"n\":2}");
	resp_free(&r);

	assert_int_equal(http("GET", "/v1/snapshots", NULL, &r), 200);
	expect_op("snapshot_list", "", "");
	assert_true(json_is_array(json_object_get(r.json, "snapshots")));
	resp_free(&r);

	assert_int_equal(http("GET", "/v1/snapshots/t1", NULL, &r), 200);
	expect_op("snapshot_get", "t1", "");
	resp_free(&r);

	assert_int_equal(http("DELETE", "/v1/snapshots/t1?cascade=1", NULL, &r), 200);
	expect_op("snapshot_delete", "t1", "");
	assert_int_equal(fake.cascade, 1);
	resp_free(&r);

	assert_int_equal(http("GET", "/v1/tree", NULL, &r), 200);
	expect_op("tree", "", "");
	assert_int_equal(json_array_size(json_object_get(r.json, "tree")), 1);
	resp_free(&r);

	assert_int_equal(http("GET", "/v1/images", NULL, &r), 200);
	expect_op("image_list", "", "");
	assert_int_equal(json_array_size(json_object_get(r.json, "images")), 1);
	resp_free(&r);
	assert_int_equal(http("GET", "/v1/images/py-3.11_x", NULL, &r), 200);
	expect_op("image_get", "py-3.11_x", "");
	resp_free(&r);
	assert_int_equal(http("DELETE", "/v1/images/py", NULL, &r), 200);
	expect_op("image_delete", "py", "");
	assert_string_equal(
	    json_string_value(json_array_get(json_object_get(r.json, "removed"), 0)), "py");
	resp_free(&r);
	assert_int_equal(http("POST", "/v1/images", "{}", &r), 405);
	resp_free(&r);

	/* Each request's deferred work was started once its answer was out (the completion
	 * callback runs just after the client has the answer: waited for, briefly). */
	for (int i = 0; i < 200 && atomic_load(&defer_ends) < atomic_load(&defer_begins); i++)
		usleep(5 * 1000);
	assert_true(atomic_load(&defer_begins) >= 8);
	assert_int_equal(atomic_load(&defer_ends), atomic_load(&defer_begins));
}

/* Image names become directories of the cache: nothing but a name reaches the daemon. */
static void test_image_names(void **state)
{
	static const char *const bad[] = {
	    "/v1/images/Py",	  /* upper case */
	    "/v1/images/.hidden", /* a dot first: also "." and ".." */
	    "/v1/images/..",
	    "/v1/images/-rf",
	    "/v1/images/a%2F..%2Fb", /* a '/' decoded from %2F */
	    "/v1/images/..%2F..%2Fetc",
	    "/v1/images/a%00b", /* a NUL */
	    "/v1/images/a%20b",
	    "/v1/images/"
	    "a123456789012345678901234567890123456789012345678901234567890123", /* 64 */
	};
	struct resp r;
	int before;

	(void)state;
	fake_reset(0, NULL);
	before = fake.calls;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int st = http("GET", bad[i], NULL, &r);

		/* 400 naming what an image name is, or 404 when the path is no image route
		 * at all (a decoded '/' adds a segment): either way the daemon is not asked. */
		if (st != 400 && st != 404)
			fail_msg("GET %s: %d, expected 400 or 404", bad[i], st);
		if (st == 400)
			assert_non_null(strstr(r.body, "expected an image name"));
		resp_free(&r);
		st = http("DELETE", bad[i], NULL, &r);
		if (st != 400 && st != 404)
			fail_msg("DELETE %s: %d, expected 400 or 404", bad[i], st);
		resp_free(&r);
	}
	assert_int_equal(fake.calls, before);
	assert_int_equal(http("GET", "/v1/images/..", NULL, &r), 400);
	assert_string_equal(error_code(&r), "bad_request");
	resp_free(&r);

	/* %00 is never decoded: an id does not end early at a NUL (the daemon gets it whole). */
	assert_int_equal(http("GET", "/v1/vms/vm-1a2b3c4d%00x", NULL, &r), 200);
	expect_op("vm_get", "vm-1a2b3c4d%00x", "");
	resp_free(&r);

	/* The daemon's refusals keep their status: in use 409, unknown 404. */
	fake_reset(-EBUSY, "image py is in use");
	assert_int_equal(http("DELETE", "/v1/images/py", NULL, &r), 409);
	assert_string_equal(error_code(&r), "conflict");
	resp_free(&r);
	fake_reset(-ENOENT, "no such image");
	assert_int_equal(http("GET", "/v1/images/nope", NULL, &r), 404);
	assert_string_equal(error_code(&r), "not_found");
	resp_free(&r);
	fake_reset(0, NULL);
}

static void test_bad_requests(void **state)
{
	struct resp r;
	int before;

	(void)state;
	fake_reset(0, NULL);
	before = fake.calls;
	assert_int_equal(http("POST", "/v1/vms", "{\"image\":", &r), 400);
	assert_string_equal(error_code(&r), "bad_request");
	assert_non_null(
	    strstr(json_string_value(json_object_get(json_object_get(r.json, "error"), "message")),
		   "column"));
	resp_free(&r);
	assert_int_equal(http("POST", "/v1/vms", "[1,2]", &r), 400);
	assert_non_null(strstr(r.body, "expected a JSON object, got an array"));
	resp_free(&r);
	assert_int_equal(http("POST", "/v1/vms/vm-1/branch", "", &r), 400);
	resp_free(&r);
	assert_int_equal(http("POST", "/v1/vms", "{\"a\":1,\"a\":2}", &r), 400);
	resp_free(&r);
	assert_int_equal(fake.calls, before); /* none of them reached the daemon */

	assert_int_equal(http("GET", "/v2/nothing", NULL, &r), 404);
	assert_string_equal(error_code(&r), "not_found");
	resp_free(&r);
	assert_int_equal(http("GET", "/v1/vms/vm-1/branch/extra", NULL, &r), 404);
	resp_free(&r);
	assert_int_equal(http("PATCH", "/v1/vms/vm-1", NULL, &r), 405);
	assert_string_equal(error_code(&r), "method_not_allowed");
	assert_non_null(strcasestr(r.head, "Allow: GET, DELETE"));
	resp_free(&r);
	assert_int_equal(http("GET", "/v1/vms/vm-1/branch", NULL, &r), 405);
	resp_free(&r);

	/* Too large: refused on its Content-Length before the body is read... */
	int fd = unix_connect(sock_path);
	assert_true(fd >= 0);
	send_request(fd, "POST", "/v1/vms", NULL, NULL, 0);
	close(fd);
	fd = unix_connect(sock_path);
	const char *big_head = "POST /v1/vms HTTP/1.1\r\nHost: forkd\r\nConnection: close\r\n"
			       "Content-Length: 2097152\r\n\r\n";
	send_all(fd, big_head, strlen(big_head));
	read_response(fd, &r);
	close(fd);
	assert_int_equal(r.status, 413);
	assert_string_equal(error_code(&r), "payload_too_large");
	resp_free(&r);
	/* ...and chunked, when it passes the limit. */
	fd = unix_connect(sock_path);
	const char *chunked_head = "POST /v1/vms HTTP/1.1\r\nHost: forkd\r\nConnection: close\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n";
	send_all(fd, chunked_head, strlen(chunked_head));
	char *chunk = malloc(65536 + 16);
	assert_non_null(chunk);
	int hl = snprintf(chunk, 16, "10000\r\n");
	memset(chunk + hl, ' ', 65536);
	memcpy(chunk + hl + 65536, "\r\n", 2);
	for (int i = 0; i < 20; i++)
		send_all(fd, chunk, (size_t)hl + 65536 + 2);
	send_all(fd, "0\r\n\r\n", 5);
	free(chunk);
	read_response(fd, &r);
	close(fd);
	assert_int_equal(r.status, 413);
	resp_free(&r);
	assert_int_equal(fake.calls, before);
}

static void test_errno_mapping(void **state)
{
	static const struct {
		int err, status;
		const char *code;
	} cases[] = {
	    {EINVAL, 400, "bad_request"},	{ERANGE, 400, "bad_request"},
	    {ENOENT, 404, "not_found"},		{EBUSY, 409, "conflict"},
	    {EEXIST, 409, "conflict"},		{E2BIG, 413, "payload_too_large"},
	    {EAGAIN, 429, "too_many_requests"}, {ENOSPC, 429, "too_many_requests"},
	    {ENOTCONN, 503, "unavailable"},	{EIO, 500, "internal"},
	    {ENOTSUP, 501, "not_implemented"},	{ENOMEM, 500, "internal"},
	};
	struct resp r;

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		fake_reset(-cases[i].err, "the reason");
		assert_int_equal(http("POST", "/v1/vms/vm-77/branch", "{\"n\":1}", &r),
				 cases[i].status);
		assert_string_equal(error_code(&r), cases[i].code);
		const char *msg =
		    json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
		assert_non_null(strstr(msg, "vm-77"));
		assert_non_null(strstr(msg, "the reason"));
		resp_free(&r);
		const char *code;
		assert_int_equal(api_errno_status(cases[i].err, &code), cases[i].status);
	}
	/* Exec and files map the agent socket's errors the same way, before streaming. */
	fake_reset(-ENOTCONN, "no vsock");
	assert_int_equal(http("POST", "/v1/vms/vm-77/exec", "{\"argv\":[\"true\"]}", &r), 503);
	resp_free(&r);
	assert_int_equal(http("GET", "/v1/vms/vm-77/files?path=/etc/hostname", NULL, &r), 503);
	resp_free(&r);
	fake_reset(0, NULL);
}

/* ---- exec and files through the real agent ---- */

static char *b64(const char *s)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t n = strlen(s), o = 0;
	char *out = malloc(n / 3 * 4 + 8);
	const unsigned char *u = (const unsigned char *)s;

	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)u[i] << 16 | (i + 1 < n ? (uint32_t)u[i + 1] << 8 : 0) |
			     (i + 2 < n ? u[i + 2] : 0);
		out[o++] = a[v >> 18];
		out[o++] = a[(v >> 12) & 63];
		out[o++] = i + 1 < n ? a[(v >> 6) & 63] : '=';
		out[o++] = i + 2 < n ? a[v & 63] : '=';
	}
	out[o] = '\0';
	return out;
}

/* Decodes base64 text (no validation: the server's output) into out; returns the length. */
static size_t unb64(const char *in, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0, n = strlen(in);

	for (size_t i = 0; i + 4 <= n; i += 4) {
		uint32_t v = 0;
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			const char *q = in[i + k] == '=' ? NULL : strchr(a, in[i + k]);
			pad += !q;
			v = v << 6 | (q ? (uint32_t)(q - a) : 0);
		}
		out[o++] = (char)(v >> 16);
		if (pad < 2)
			out[o++] = (char)(v >> 8);
		if (pad < 1)
			out[o++] = (char)v;
	}
	return o;
}

/* The NDJSON lines of an exec response, each parsed. */
static json_t *ndjson(struct resp *r)
{
	json_t *lines = json_array();
	char *save = NULL;

	assert_true(r->len != (size_t)-1);
	for (char *l = strtok_r(r->body, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		json_t *o = json_loads(l, 0, NULL);
		if (!o)
			fail_msg("not a JSON line: %s", l);
		json_array_append_new(lines, o);
	}
	return lines;
}

static void test_exec(void **state)
{
	char body[512];
	struct resp r;
	json_t *lines;

	(void)state;
	fake_reset(0, NULL);
	assert_int_equal(http("POST", "/v1/vms/vm-e/exec",
			      "{\"argv\":[\"/bin/sh\",\"-c\",\"echo hi; echo oops >&2; exit 3\"]}",
			      &r),
			 200);
	expect_op("vm_agent_socket", "vm-e", "");
	assert_non_null(strcasestr(r.head, "Content-Type: application/x-ndjson"));
	lines = ndjson(&r);
	bool out = false, errs = false;
	for (size_t i = 0; i + 1 < json_array_size(lines); i++) {
		json_t *l = json_array_get(lines, i);
		out |= json_is_string(json_object_get(l, "stdout")) &&
		       strcmp(json_string_value(json_object_get(l, "stdout")), "aGkK") == 0;
		errs |= json_is_string(json_object_get(l, "stderr")) &&
			strcmp(json_string_value(json_object_get(l, "stderr")), "b29wcwo=") == 0;
	}
	assert_true(out && errs);
	assert_int_equal(json_integer_value(json_object_get(
			     json_array_get(lines, json_array_size(lines) - 1), "exit")),
			 3);
	json_decref(lines);
	resp_free(&r);

	/* stdin, env, cwd go through. */
	char *in = b64("hello stdin");
	snprintf(body, sizeof(body),
		 "{\"argv\":[\"/bin/sh\",\"-c\",\"x=$(cat); echo \\\"$x $K "
		 "$(pwd)\\\"\"],\"stdin\":\"%s\","
		 "\"env\":{\"K\":\"v\"},\"cwd\":\"/tmp\"}",
		 in);
	free(in);
	assert_int_equal(http("POST", "/v1/vms/vm-e/exec", body, &r), 200);
	lines = ndjson(&r);
	char *want = b64("hello stdin v /tmp\n");
	char got[256] = "";
	/* One write(2) by echo: one stdout line. */
	for (size_t i = 0; i < json_array_size(lines); i++) {
		const char *s =
		    json_string_value(json_object_get(json_array_get(lines, i), "stdout"));
		if (s && strlen(got) + strlen(s) < sizeof(got))
			strcat(got, s);
	}
	assert_string_equal(got, want);
	free(want);
	json_decref(lines);
	resp_free(&r);

	/* A signal, an agent error as the last line, and 400s before the stream. */
	assert_int_equal(
	    http("POST", "/v1/vms/vm-e/exec", "{\"argv\":[\"/bin/sh\",\"-c\",\"kill -9 $$\"]}", &r),
	    200);
	lines = ndjson(&r);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(lines, 0), "signal")),
			 9);
	json_decref(lines);
	resp_free(&r);
	assert_int_equal(http("POST", "/v1/vms/vm-e/exec", "{\"argv\":[\"/no/such/binary\"]}", &r),
			 200);
	lines = ndjson(&r);
	json_t *e = json_object_get(json_array_get(lines, json_array_size(lines) - 1), "error");
	assert_string_equal(json_string_value(json_object_get(e, "code")), "not_found");
	assert_non_null(
	    strstr(json_string_value(json_object_get(e, "message")), "/no/such/binary"));
	json_decref(lines);
	resp_free(&r);
	/* No agent behind the socket: the last line says the VM is unavailable. */
	char dead[280], saved[300];
	snprintf(dead, sizeof(dead), "%s/dead.sock", dir);
	int dfd = unix_listen(dead);
	assert_true(dfd >= 0);
	close(dfd);
	pthread_mutex_lock(&fake_lock);
	snprintf(saved, sizeof(saved), "%s", fake.agent_sock);
	snprintf(fake.agent_sock, sizeof(fake.agent_sock), "%s", dead);
	pthread_mutex_unlock(&fake_lock);
	assert_int_equal(http("POST", "/v1/vms/vm-e/exec", "{\"argv\":[\"true\"]}", &r), 200);
	pthread_mutex_lock(&fake_lock);
	snprintf(fake.agent_sock, sizeof(fake.agent_sock), "%s", saved);
	pthread_mutex_unlock(&fake_lock);
	lines = ndjson(&r);
	assert_int_equal(json_array_size(lines), 1);
	e = json_object_get(json_array_get(lines, 0), "error");
	assert_string_equal(json_string_value(json_object_get(e, "code")), "unavailable");
	json_decref(lines);
	resp_free(&r);

	assert_int_equal(http("POST", "/v1/vms/vm-e/exec", "{\"argv\":[]}", &r), 400);
	resp_free(&r);
	assert_int_equal(http("POST", "/v1/vms/vm-e/exec", "{\"argv\":[\"true\"],\"x\":1}", &r),
			 400);
	resp_free(&r);
	assert_int_equal(
	    http("POST", "/v1/vms/vm-e/exec", "{\"argv\":[\"true\"],\"stdin\":\"@@@\"}", &r), 400);
	resp_free(&r);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads from fd until needle appears (or 10 s pass); returns what was read. */
static void read_until(int fd, const char *needle, char *buf, size_t len)
{
	size_t have = 0;
	double deadline = now_s() + 10;

	buf[0] = '\0';
	while (!strstr(buf, needle) && have + 1 < len && now_s() < deadline) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		if (poll(&p, 1, 200) <= 0)
			continue;
		ssize_t n = recv(fd, buf + have, len - 1 - have, 0);
		if (n <= 0)
			break;
		have += (size_t)n;
		buf[have] = '\0';
	}
	if (!strstr(buf, needle))
		fail_msg("\"%s\" did not arrive; got: %s", needle, buf);
}

static void test_exec_streams_and_cancels(void **state)
{
	const char *body = "{\"argv\":[\"/bin/sh\",\"-c\",\"echo first; sleep 2; echo second\"]}";
	char buf[8192];
	double t0 = now_s();
	int fd;

	(void)state;
	fake_reset(0, NULL);
	/* The first line arrives while the command still runs. */
	fd = unix_connect(sock_path);
	send_request(fd, "POST", "/v1/vms/vm-s/exec", NULL, body, strlen(body));
	read_until(fd, "Zmlyc3QK", buf, sizeof(buf)); /* "first\n" */
	assert_true(now_s() - t0 < 1.5);
	close(fd);

	/* A client that disconnects stops the command. */
	const char *sleeper = "{\"argv\":[\"/bin/sh\",\"-c\",\"echo $$; exec sleep 30\"]}";
	fd = unix_connect(sock_path);
	send_request(fd, "POST", "/v1/vms/vm-s/exec", NULL, sleeper, strlen(sleeper));
	read_until(fd, "\"}", buf, sizeof(buf));
	char *line = strstr(buf, "{\"stdout\":\"");
	assert_non_null(line);
	/* Decode the pid: the line is base64 of "<pid>\n". */
	char enc[64];
	assert_int_equal(sscanf(line, "{\"stdout\":\"%63[^\"]", enc), 1);
	char dec[64] = "";
	pid_t pid;
	dec[unb64(enc, dec)] = '\0';
	pid = (pid_t)atoi(dec);
	assert_true(pid > 1);
	assert_int_equal(kill(pid, 0), 0);
	close(fd);
	double deadline = now_s() + 10;
	while (kill(pid, 0) == 0 && now_s() < deadline)
		usleep(20 * 1000);
	assert_int_equal(kill(pid, 0), -1);
	assert_int_equal(errno, ESRCH);
}

static void test_files(void **state)
{
	const size_t n = (3u << 20) + 777;
	char path[400], url[600];
	char *data = malloc(n);
	struct resp r;
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(data);
	for (size_t i = 0; i < n; i++)
		data[i] = (char)(i * 7 + (i >> 12));
	fake_reset(0, NULL);
	snprintf(path, sizeof(path), "%s/uploaded.bin", dir);
	snprintf(url, sizeof(url), "/v1/vms/vm-f/files?path=%s&mode=0604", path);
	fd = unix_connect(sock_path);
	assert_int_equal(
	    http_fd(fd, "PUT", url, "Content-Type: application/octet-stream\r\n", data, n, &r),
	    204);
	resp_free(&r);
	expect_op("vm_agent_socket", "vm-f", "");
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, (off_t)n);
	assert_int_equal(st.st_mode & 07777, 0604);

	snprintf(url, sizeof(url), "/v1/vms/vm-f/files?path=%s", path);
	assert_int_equal(http("GET", url, NULL, &r), 200);
	assert_non_null(strcasestr(r.head, "Content-Type: application/octet-stream"));
	assert_int_equal(r.len, n);
	assert_memory_equal(r.body, data, n);
	resp_free(&r);

	/* Empty file, missing file, bad queries. */
	snprintf(path, sizeof(path), "%s/empty", dir);
	close(open(path, O_CREAT | O_WRONLY, 0644));
	snprintf(url, sizeof(url), "/v1/vms/vm-f/files?path=%s", path);
	assert_int_equal(http("GET", url, NULL, &r), 200);
	assert_int_equal(r.len, 0);
	resp_free(&r);
	assert_int_equal(http("GET", "/v1/vms/vm-f/files?path=/no/such/file", NULL, &r), 404);
	assert_string_equal(error_code(&r), "not_found");
	resp_free(&r);
	assert_int_equal(http("GET", "/v1/vms/vm-f/files?path=relative", NULL, &r), 400);
	resp_free(&r);
	assert_int_equal(http("PUT", "/v1/vms/vm-f/files?path=/tmp/x&mode=999", "x", &r), 400);
	resp_free(&r);
	assert_int_equal(http("PUT", "/v1/vms/vm-f/files?path=/no/such/dir/file", "abc", &r), 404);
	resp_free(&r);

	/* An upload cut short is not committed. */
	snprintf(path, sizeof(path), "%s/cut.bin", dir);
	snprintf(url, sizeof(url),
		 "PUT /v1/vms/vm-f/files?path=%s HTTP/1.1\r\nHost: f\r\n"
		 "Content-Length: 1000000\r\n\r\n",
		 path);
	fd = unix_connect(sock_path);
	send_all(fd, url, strlen(url));
	send_all(fd, data, 300000);
	usleep(200 * 1000);
	close(fd);
	usleep(500 * 1000);
	assert_int_equal(stat(path, &st), -1);
	free(data);
}

/* Much more output than any buffer on the way, and a timeout. */
static void test_exec_bulk_and_timeout(void **state)
{
	const size_t n = 8u << 20;
	struct resp r;
	json_t *lines, *line;
	size_t i, total = 0;
	char *buf = malloc(STREAM_LINE_MAX);

	(void)state;
	assert_non_null(buf);
	fake_reset(0, NULL);
	assert_int_equal(http("POST", "/v1/vms/vm-b/exec",
			      "{\"argv\":[\"/bin/sh\",\"-c\",\"head -c 8388608 /dev/zero | tr "
			      "'\\\\0' x\"]}",
			      &r),
			 200);
	lines = ndjson(&r);
	json_array_foreach(lines, i, line)
	{
		const char *s = json_string_value(json_object_get(line, "stdout"));
		if (!s)
			continue;
		assert_true(strlen(s) < STREAM_LINE_MAX);
		size_t got = unb64(s, buf);
		for (size_t k = 0; k < got; k++)
			if (buf[k] != 'x')
				fail_msg("byte %zu of the output is 0x%02x", total + k,
					 (unsigned char)buf[k]);
		total += got;
	}
	assert_int_equal(total, n);
	line = json_array_get(lines, json_array_size(lines) - 1);
	assert_int_equal(json_integer_value(json_object_get(line, "exit")), 0);
	json_decref(lines);
	resp_free(&r);
	free(buf);

	assert_int_equal(http("POST", "/v1/vms/vm-b/exec",
			      "{\"argv\":[\"sleep\",\"30\"],\"timeout_ms\":200}", &r),
			 200);
	lines = ndjson(&r);
	line = json_array_get(lines, json_array_size(lines) - 1);
	assert_int_equal(json_integer_value(json_object_get(line, "signal")), 9);
	assert_true(json_is_true(json_object_get(line, "timed_out")));
	json_decref(lines);
	resp_free(&r);
}

/* A long operation (a BRANCH held by the fake) does not hold up other requests. */
struct bg_request {
	const char *method, *path, *body;
	struct resp r;
	int status;
};

static void *bg_main(void *arg)
{
	struct bg_request *b = arg;
	int fd = unix_connect(sock_path);

	memset(&b->r, 0, sizeof(b->r));
	send_request(fd, b->method, b->path, NULL, b->body, strlen(b->body));
	/* No cmocka asserts off the main thread: read by hand. */
	char *buf = malloc(65536);
	size_t have = 0;
	ssize_t k;
	while (buf && (k = recv(fd, buf + have, 65535 - have, 0)) > 0)
		have += (size_t)k;
	if (buf) {
		buf[have] = '\0';
		if (sscanf(buf, "HTTP/1.1 %d", &b->status) != 1)
			b->status = -1;
	}
	free(buf);
	close(fd);
	return NULL;
}

static void test_concurrency(void **state)
{
	struct bg_request b = {
	    .method = "POST", .path = "/v1/vms/vm-long/branch", .body = "{\"n\":2}"};
	struct resp r;
	pthread_t t;

	(void)state;
	fake_reset(0, NULL);
	pthread_mutex_lock(&fake_lock);
	fake.hold_branch = true;
	pthread_mutex_unlock(&fake_lock);
	assert_int_equal(pthread_create(&t, NULL, bg_main, &b), 0);
	pthread_mutex_lock(&fake_lock);
	while (!fake.branch_waiting)
		pthread_cond_wait(&fake_cond, &fake_lock);
	pthread_mutex_unlock(&fake_lock);
	/* The branch is in progress: others are served meanwhile. */
	for (int i = 0; i < 5; i++) {
		assert_int_equal(http("GET", "/v1/vms", NULL, &r), 200);
		resp_free(&r);
	}
	assert_int_equal(http("GET", "/healthz", NULL, &r), 200);
	resp_free(&r);
	pthread_mutex_lock(&fake_lock);
	fake.hold_branch = false;
	pthread_cond_broadcast(&fake_cond);
	pthread_mutex_unlock(&fake_lock);
	pthread_join(t, NULL);
	assert_int_equal(b.status, 201);
}

/*
 * Reads one response from a keep-alive connection: the head, then a Content-Length body or a
 * chunked one up to its last chunk. Returns the status; the body (decoded) in body.
 */
static int read_one(int fd, char *body, size_t body_len)
{
	char buf[65536];
	size_t have = 0;
	int status = -1;

	for (;;) {
		ssize_t n = recv(fd, buf + have, sizeof(buf) - 1 - have, 0);
		if (n <= 0)
			fail_msg("the connection closed after %zu bytes", have);
		have += (size_t)n;
		buf[have] = '\0';
		char *sep = strstr(buf, "\r\n\r\n");
		if (!sep)
			continue;
		char *b = sep + 4;
		size_t got = have - (size_t)(b - buf);
		const char *cl = strcasestr(buf, "Content-Length:");
		if (cl && cl < sep) {
			size_t want = strtoul(cl + 15, NULL, 10);
			if (got < want)
				continue;
			snprintf(body, body_len, "%.*s", (int)want, b);
		} else {
			if (!strstr(b, "\r\n0\r\n\r\n") && strncmp(b, "0\r\n\r\n", 5) != 0)
				continue;
			size_t len = got;
			assert_true(dechunk(b, &len));
			snprintf(body, body_len, "%.*s", (int)len, b);
		}
		assert_int_equal(sscanf(buf, "HTTP/1.1 %d", &status), 1);
		return status;
	}
}

/* Several requests on one connection, as HTTP clients with a connection pool send them. */
static void test_keep_alive(void **state)
{
	const char *exec = "{\"argv\":[\"echo\",\"kept\"]}";
	char req[512], body[4096];
	int fd = unix_connect(sock_path);

	(void)state;
	fake_reset(0, NULL);
	assert_true(fd >= 0);
	for (int i = 0; i < 3; i++) {
		snprintf(req, sizeof(req), "GET /v1/vms/vm-k%d HTTP/1.1\r\nHost: f\r\n\r\n", i);
		send_all(fd, req, strlen(req));
		assert_int_equal(read_one(fd, body, sizeof(body)), 200);
		char want[32];
		snprintf(want, sizeof(want), "\"vm-k%d\"", i);
		assert_non_null(strstr(body, want));
		/* A streamed (chunked) exec, then the connection goes on. */
		snprintf(
		    req, sizeof(req),
		    "POST /v1/vms/vm-k/exec HTTP/1.1\r\nHost: f\r\nContent-Length: %zu\r\n\r\n%s",
		    strlen(exec), exec);
		send_all(fd, req, strlen(req));
		assert_int_equal(read_one(fd, body, sizeof(body)), 200);
		assert_non_null(strstr(body, "{\"stdout\":\"a2VwdAo=\"}\n")); /* "kept\n" */
		assert_non_null(strstr(body, "{\"exit\":0}\n"));
		/* An error keeps the connection too. */
		const char *nope = "GET /nope HTTP/1.1\r\nHost: f\r\n\r\n";
		send_all(fd, nope, strlen(nope));
		assert_int_equal(read_one(fd, body, sizeof(body)), 404);
	}
	close(fd);
}

/* A socket left by a dead server is replaced; a live one is not. */
static void test_socket_stale_and_live(void **state)
{
	char path[400];
	struct fk_err err = {0};
	struct api *other = NULL;
	struct resp r;
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "%s/stale.sock", dir);
	fd = unix_listen(path);
	assert_true(fd >= 0);
	close(fd); /* nobody listens: stale */
	struct api_config cfg = {.socket_path = path};
	assert_int_equal(api_start(fake_daemon, &cfg, &other, &err), 0);
	assert_int_equal(http_fd(unix_connect(path), "GET", "/healthz", NULL, NULL, 0, &r), 200);
	resp_free(&r);
	/* The main api's socket answers: refused. */
	struct api *third = NULL;
	struct api_config live = {.socket_path = sock_path};
	assert_int_equal(api_start(fake_daemon, &live, &third, &err), -EADDRINUSE);
	assert_non_null(strstr(err.msg, sock_path));
	api_stop(other);
	assert_int_equal(access(path, F_OK), -1); /* removed at stop */
	daemon_set_metrics(fake_daemon, api_metric, api);
}

/* ---- audit log, metrics ---- */

/* The audit line of a request is written as it completes, maybe just after the client read the
 * response: waits up to 5 s for needle in the file at path. */
static void wait_for_text(const char *path, const char *needle)
{
	char buf[65536];

	for (int i = 0; i < 250; i++) {
		FILE *f = fopen(path, "r");
		size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
		if (f)
			fclose(f);
		buf[n] = '\0';
		if (strstr(buf, needle))
			return;
		usleep(20 * 1000);
	}
	fail_msg("%s: no \"%s\" after 5 s", path, needle);
}

static void test_audit_log(void **state)
{
	char rotated[400], line[4096];
	struct fk_err err = {0};
	struct resp r;
	FILE *f;
	bool seen = false;

	(void)state;
	fake_reset(0, NULL);
	assert_int_equal(http("POST", "/v1/vms/vm-aaaa/branch", "{\"n\":1}", &r), 201);
	resp_free(&r);
	wait_for_text(audit_path, "\"path\":\"/v1/vms/vm-aaaa/branch\"");
	f = fopen(audit_path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		json_t *o = json_loads(line, 0, NULL);
		assert_non_null(o);
		assert_non_null(json_object_get(o, "time"));
		assert_true(json_is_number(json_object_get(o, "latency_ms")));
		if (strcmp(json_string_value(json_object_get(o, "path")),
			   "/v1/vms/vm-aaaa/branch") == 0) {
			char caller[32];
			snprintf(caller, sizeof(caller), "uid:%u", (unsigned)geteuid());
			assert_string_equal(json_string_value(json_object_get(o, "caller")),
					    caller);
			assert_string_equal(json_string_value(json_object_get(o, "method")),
					    "POST");
			assert_int_equal(json_integer_value(json_object_get(o, "status")), 201);
			json_t *vms = json_object_get(o, "vms");
			char *t = json_dumps(vms, JSON_COMPACT);
			assert_string_equal(t, "[\"vm-0000000c\",\"vm-aaaa\"]");
			free(t);
			seen = true;
		}
		json_decref(o);
	}
	fclose(f);
	assert_true(seen);

	/* Rotation: after the rename, lines go on to the old file until the reopen. */
	snprintf(rotated, sizeof(rotated), "%s.1", audit_path);
	assert_int_equal(rename(audit_path, rotated), 0);
	assert_int_equal(api_reopen_audit(api, &err), 0);
	assert_int_equal(http("GET", "/v1/vms/vm-bbbb", NULL, &r), 200);
	resp_free(&r);
	wait_for_text(audit_path, "\"path\":\"/v1/vms/vm-bbbb\"");
	f = fopen(audit_path, "r");
	assert_non_null(f);
	assert_non_null(fgets(line, sizeof(line), f));
	assert_non_null(strstr(line, "\"path\":\"/v1/vms/vm-bbbb\""));
	assert_non_null(strstr(line, "\"vms\":[\"vm-bbbb\"]"));
	fclose(f);
}

static void test_metrics(void **state)
{
	struct resp r;

	(void)state;
	fake_reset(0, NULL);
	assert_non_null(fake.metric_fn);
	assert_true(fake.metric_opaque == api);
	fake.metric_fn(fake.metric_opaque, DAEMON_METRIC_BRANCH_PAUSE, 0.0008);
	fake.metric_fn(fake.metric_opaque, DAEMON_METRIC_BRANCH_PAUSE, 0.003);
	fake.metric_fn(fake.metric_opaque, DAEMON_METRIC_SPAWN, 1.5);
	fake.metric_fn(fake.metric_opaque, DAEMON_METRIC_RESTORE, 0.2);
	assert_int_equal(http("GET", "/v1/nope", NULL, &r), 404);
	resp_free(&r);
	/* The 404 is counted as its request completes: ask until it shows. */
	for (int i = 0; i < 250; i++) {
		assert_int_equal(http("GET", "/metrics", NULL, &r), 200);
		if (strstr(r.body, "forkd_http_requests_total{method=\"GET\",code=\"404\"}"))
			break;
		resp_free(&r);
		usleep(20 * 1000);
	}
	assert_non_null(strcasestr(r.head, "Content-Type: text/plain"));
	assert_non_null(strstr(r.body, "# TYPE forkd_branch_pause_seconds histogram\n"));
	assert_non_null(strstr(r.body, "forkd_branch_pause_seconds_bucket{le=\"0.001\"} 1\n"));
	assert_non_null(strstr(r.body, "forkd_branch_pause_seconds_bucket{le=\"0.005\"} 2\n"));
	assert_non_null(strstr(r.body, "forkd_branch_pause_seconds_bucket{le=\"+Inf\"} 2\n"));
	assert_non_null(strstr(r.body, "forkd_branch_pause_seconds_count 2\n"));
	assert_non_null(strstr(r.body, "forkd_spawn_seconds_count 1\n"));
	assert_non_null(strstr(r.body, "forkd_restore_seconds_sum 0.2\n"));
	assert_non_null(strstr(r.body, "# TYPE forkd_exec_seconds histogram\n"));
	/* test_exec ran before: its execs were timed. */
	assert_null(strstr(r.body, "forkd_exec_seconds_count 0\n"));
	assert_non_null(strstr(r.body, "# TYPE forkd_http_requests_total counter\n"));
	assert_non_null(strstr(r.body, "forkd_http_requests_total{method=\"GET\",code=\"404\"}"));
	assert_non_null(strstr(r.body, "forkd_http_requests_total{method=\"POST\",code=\"201\"}"));
	resp_free(&r);
}

/* ---- who may call ---- */

static void test_peer_cred(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	if (geteuid() != 0)
		fail_msg("the peer-credential test switches to uid 65534 and needs root (tests run "
			 "as root here and in CI)");
	/* Let uid 65534 reach the socket, so the refusal is the daemon's, not the file mode's. */
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(chmod(sock_path, 0666), 0);
	pid = fork();
	if (pid == 0) {
		struct resp r;
		if (setgid(65534) < 0 || setuid(65534) < 0)
			_exit(10);
		int fd = unix_connect(sock_path);
		if (fd < 0)
			_exit(11);
		char req[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
		send_all(fd, req, sizeof(req) - 1);
		memset(&r, 0, sizeof(r));
		char buf[4096];
		ssize_t n, have = 0;
		while ((n = recv(fd, buf + have, sizeof(buf) - 1 - (size_t)have, 0)) > 0)
			have += n;
		buf[have] = '\0';
		_exit(strncmp(buf, "HTTP/1.1 403", 12) == 0 && strstr(buf, "\"forbidden\"") ? 0
											    : 12);
	}
	assert_true(pid > 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	chmod(sock_path, 0660);
	chmod(dir, 0700);
	/* The socket's own mode. */
	struct stat st;
	assert_int_equal(stat(sock_path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
}

static void test_tcp_token(void **state)
{
	const char *token = "0123456789abcdef-secret";
	struct api_config cfg = {.listen = "127.0.0.1:0", .token = token};
	struct fk_err err = {0};
	struct api *tcp = NULL;
	struct resp r;
	int port;

	(void)state;
	fake_reset(0, NULL);
	/* A short token is refused; so is TCP without one. */
	cfg.token = "short";
	assert_int_equal(api_start(fake_daemon, &cfg, &tcp, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "16 bytes"));
	cfg.token = token;
	assert_int_equal(api_start(fake_daemon, &cfg, &tcp, &err), 0);
	port = api_tcp_port(tcp);
	assert_true(port > 0);
	assert_int_equal(http_fd(tcp_connect(port), "GET", "/healthz", NULL, NULL, 0, &r), 401);
	assert_string_equal(error_code(&r), "unauthorized");
	resp_free(&r);
	assert_int_equal(http_fd(tcp_connect(port), "GET", "/healthz",
				 "Authorization: Bearer 0123456789abcdef-secreT\r\n", NULL, 0, &r),
			 401);
	resp_free(&r);
	assert_int_equal(http_fd(tcp_connect(port), "GET", "/healthz",
				 "Authorization: Bearer 0123456789abcdef\r\n", NULL, 0, &r),
			 401);
	resp_free(&r);
	assert_int_equal(http_fd(tcp_connect(port), "GET", "/healthz",
				 "Authorization: Bearer 0123456789abcdef-secret\r\n", NULL, 0, &r),
			 200);
	assert_true(json_is_true(json_object_get(r.json, "ok")));
	resp_free(&r);
	api_stop(tcp);
	/* The metrics sink goes back to the main api. */
	daemon_set_metrics(fake_daemon, api_metric, api);
}

/* Runs a shell command; its exit status, the first line of its stdout into out. */
static int run_sh(const char *cmd, char *out, size_t len)
{
	FILE *f = popen(cmd, "r");
	int status;

	out[0] = '\0';
	if (!f)
		return -1;
	if (!fgets(out, (int)len, f))
		out[0] = '\0';
	while (fgetc(f) != EOF)
		;
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* TLS on the TCP listener, with a throw-away certificate (needs the openssl and curl tools). */
static void test_tls(void **state)
{
	const char *token = "tls-token-0123456789";
	char cmd[1400], out[256], cert[320], key[320];
	struct fk_err err = {0};
	struct api *tls = NULL;

	(void)state;
	if (run_sh("command -v openssl >/dev/null && command -v curl >/dev/null", out,
		   sizeof(out)) != 0)
		fail_msg(
		    "the TLS test needs openssl and curl (scripts/install-deps.sh installs them)");
	snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
	snprintf(key, sizeof(key), "%s/key.pem", dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -keyout '%s' -out '%s' -days 1 "
		 "-subj /CN=localhost >/dev/null 2>&1",
		 key, cert);
	assert_int_equal(run_sh(cmd, out, sizeof(out)), 0);
	struct api_config cfg = {
	    .listen = "127.0.0.1:0", .token = token, .tls_cert_path = cert, .tls_key_path = key};
	assert_int_equal(api_start(fake_daemon, &cfg, &tls, &err), 0);
	snprintf(cmd, sizeof(cmd),
		 "curl -s --max-time 10 --cacert '%s' --resolve localhost:%d:127.0.0.1 "
		 "-H 'Authorization: Bearer %s' https://localhost:%d/healthz",
		 cert, api_tcp_port(tls), token, api_tcp_port(tls));
	assert_int_equal(run_sh(cmd, out, sizeof(out)), 0);
	assert_non_null(strstr(out, "\"ok\":true"));
	/* Plain HTTP to the TLS port is not served. */
	snprintf(cmd, sizeof(cmd),
		 "curl -s --max-time 5 -o /dev/null -w '%%{http_code}' "
		 "-H 'Authorization: Bearer %s' http://127.0.0.1:%d/healthz",
		 token, api_tcp_port(tls));
	run_sh(cmd, out, sizeof(out));
	assert_string_not_equal(out, "200");
	api_stop(tls);
	daemon_set_metrics(fake_daemon, api_metric, api);

	/* A key that is not one fails at start, naming the problem. */
	cfg.tls_key_path = "/no/such/key.pem";
	assert_int_equal(api_start(fake_daemon, &cfg, &tls, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/no/such/key.pem"));
}

/* `forkd serve`'s flags (FORKD_CLI): usage errors exit 2 before anything starts. */
static void test_serve_flags(void **state)
{
	const char *cli = getenv("FORKD_CLI");
	char cmd[2048], out[256];

	(void)state;
	if (!cli || !*cli)
		cli = "build/forkd";
	if (access(cli, X_OK) != 0)
		fail_msg("forkd binary %s: not executable (make builds it; FORKD_CLI names it)",
			 cli);
	static const char *const bad[] = {
	    "--listen 127.0.0.1:0",				  /* TCP without a token */
	    "--token-file /etc/hostname",			  /* a token without --listen */
	    "--listen 127.0.0.1:0 --token-file /x --tls-cert /c", /* cert without key */
	    "--frobnicate",
	    "--socket",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(cmd, sizeof(cmd), "'%s' serve --state-dir '%s/state' %s 2>/dev/null", cli,
			 dir, bad[i]);
		if (run_sh(cmd, out, sizeof(out)) != 2)
			fail_msg("forkd serve %s: expected exit status 2", bad[i]);
	}
	/* A token file with a short token. */
	snprintf(cmd, sizeof(cmd),
		 "printf 'short\\n' > '%s/token' && '%s' serve --state-dir '%s/state' --listen "
		 "127.0.0.1:0 --token-file '%s/token' 2>/dev/null",
		 dir, cli, dir, dir);
	assert_int_equal(run_sh(cmd, out, sizeof(out)), 2);
}

/*
 * `forkd serve` for real: the ready line, a request, SIGHUP, then SIGTERM for a clean stop
 * that removes the socket. Skipped while the daemon is the ENOSYS stub (no daemon.c).
 */
static void test_serve_lifecycle(void **state)
{
	const char *cli = getenv("FORKD_CLI");
	char state_dir[320], sock[400], audit[400], line[1024] = "";
	int out[2], status;
	struct resp r;
	pid_t pid;

	(void)state;
	if (!cli || !*cli)
		cli = "build/forkd";
	if (access(cli, X_OK) != 0)
		fail_msg("forkd binary %s: not executable (make builds it; FORKD_CLI names it)",
			 cli);
	snprintf(state_dir, sizeof(state_dir), "%s/serve-state", dir);
	snprintf(sock, sizeof(sock), "%s/serve.sock", dir);
	snprintf(audit, sizeof(audit), "%s/serve-audit.log", dir);
	assert_int_equal(pipe(out), 0);
	pid = fork();
	if (pid == 0) {
		dup2(out[1], STDOUT_FILENO);
		close(out[0]);
		execl(cli, "forkd", "serve", "--state-dir", state_dir, "--socket", sock,
		      "--audit-log", audit, (char *)NULL);
		_exit(127);
	}
	close(out[1]);
	FILE *f = fdopen(out[0], "r");
	assert_non_null(f);
	if (!fgets(line, sizeof(line), f)) {
		fclose(f);
		waitpid(pid, &status, 0);
		fail_msg("forkd serve exited (status %d) without its ready line", status);
	}
	fclose(f);
	json_t *ready = json_loads(line, 0, NULL);
	assert_non_null(ready);
	assert_string_equal(json_string_value(json_object_get(ready, "socket")), sock);
	json_decref(ready);
	assert_int_equal(http_fd(unix_connect(sock), "GET", "/healthz", NULL, NULL, 0, &r), 200);
	resp_free(&r);
	assert_int_equal(kill(pid, SIGHUP), 0);
	assert_int_equal(http_fd(unix_connect(sock), "GET", "/v1/nothing", NULL, NULL, 0, &r), 404);
	resp_free(&r);
	assert_int_equal(kill(pid, SIGTERM), 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(access(sock, F_OK), -1);
	struct stat st;
	assert_int_equal(stat(audit, &st), 0);
	assert_true(st.st_size > 0);
}

/* ---- docs/api.yaml against the route table ---- */

static const char *yaml_path(void)
{
	const char *p = getenv("FORKD_API_YAML");
	return p && *p ? p : "docs/api.yaml";
}

static void test_openapi_matches_routes(void **state)
{
	char line[1024], path[256] = "", seen[64][300];
	size_t nseen = 0;
	FILE *f;
	bool in_paths = false;

	(void)state;
	f = fopen(yaml_path(), "r");
	if (!f)
		fail_msg("%s: %s (run from the repository root or set FORKD_API_YAML)", yaml_path(),
			 strerror(errno));
	/* "paths:" at column 0, each path at indent 2 ("  /v1/vms:"), methods at indent 4. */
	while (fgets(line, sizeof(line), f)) {
		if (line[0] != ' ' && line[0] != '\n' && line[0] != '#') {
			in_paths = strncmp(line, "paths:", 6) == 0;
			continue;
		}
		if (!in_paths)
			continue;
		if (strncmp(line, "  /", 3) == 0) {
			char *colon = strrchr(line, ':');
			assert_non_null(colon);
			snprintf(path, sizeof(path), "%.*s", (int)(colon - line - 2), line + 2);
			continue;
		}
		static const char *const methods[] = {"get", "post", "put", "delete", "patch"};
		for (size_t m = 0; m < 5; m++) {
			char want[32];
			snprintf(want, sizeof(want), "    %s:", methods[m]);
			if (strncmp(line, want, strlen(want)) != 0)
				continue;
			char upper[8];
			for (size_t k = 0; k <= strlen(methods[m]); k++)
				upper[k] = (char)(methods[m][k] >= 'a' && methods[m][k] <= 'z'
						      ? methods[m][k] - 32
						      : methods[m][k]);
			assert_true(nseen < 64);
			snprintf(seen[nseen++], sizeof(seen[0]), "%s %s", upper, path);
		}
	}
	fclose(f);
	for (size_t i = 0; i < api_nr_routes(); i++) {
		char want[300];
		bool found = false;
		snprintf(want, sizeof(want), "%s %s", api_routes()[i].method,
			 api_routes()[i].pattern);
		for (size_t k = 0; k < nseen; k++)
			found |= strcmp(seen[k], want) == 0;
		if (!found)
			fail_msg("route %s is not in %s", want, yaml_path());
	}
	for (size_t k = 0; k < nseen; k++) {
		bool found = false;
		for (size_t i = 0; i < api_nr_routes(); i++) {
			char want[300];
			snprintf(want, sizeof(want), "%s %s", api_routes()[i].method,
				 api_routes()[i].pattern);
			found |= strcmp(seen[k], want) == 0;
		}
		if (!found)
			fail_msg("%s documents %s, which the route table lacks", yaml_path(),
				 seen[k]);
	}
	assert_int_equal(nseen, api_nr_routes());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_openapi_matches_routes),
	    cmocka_unit_test(test_routes),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_image_names),
	    cmocka_unit_test(test_errno_mapping),
	    cmocka_unit_test(test_exec),
	    cmocka_unit_test(test_exec_streams_and_cancels),
	    cmocka_unit_test(test_exec_bulk_and_timeout),
	    cmocka_unit_test(test_concurrency),
	    cmocka_unit_test(test_keep_alive),
	    cmocka_unit_test(test_socket_stale_and_live),
	    cmocka_unit_test(test_files),
	    cmocka_unit_test(test_audit_log),
	    cmocka_unit_test(test_metrics),
	    cmocka_unit_test(test_peer_cred),
	    cmocka_unit_test(test_tcp_token),
	    cmocka_unit_test(test_tls),
	    cmocka_unit_test(test_serve_flags),
	    cmocka_unit_test(test_serve_lifecycle),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
