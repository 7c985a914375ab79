/* SPDX-License-Identifier: MIT */
/*
 * The REST layer of `forkd serve`: see api.h and docs/rest-api.md.
 *
 * libmicrohttpd runs one thread per connection, so a handler may block (a
 * branch takes as long as it takes) without holding up other requests.
 * Streams (exec output, file downloads and uploads) run the agent client on
 * a worker thread of their own, connected to the HTTP side by pipes: the
 * pipes bound what is buffered, and a client that goes away closes them,
 * which cancels the agent operation (the agent kills the command or drops
 * the partial file).
 */
#include "daemon/api.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "daemon/api_internal.h"
#include "util/fdio.h"
#include "util/unix_socket.h"

#define CONN_IDLE_TIMEOUT  300 /* seconds an idle keep-alive connection is kept */
#define MAX_CONNECTIONS	   512
#define MAX_PARAM	   200
#define MAX_AUDIT_VMS	   64
#define RESPONSE_BLOCK_LEN (64u * 1024u)

struct listener {
	struct api *api;
	bool tcp;
	struct MHD_Daemon *mhd;
};

struct api {
	struct daemon *d;
	char *socket_path;
	char *token;
	size_t token_len;
	uid_t allowed_uid;
	size_t max_json_body;
	struct listener unix_l, tcp_l;
	int tcp_port;
	char *tls_cert, *tls_key;
	atomic_bool stopping;
	bool metrics_registered;

	pthread_mutex_t audit_lock; /* audit_fd: swapped by api_reopen_audit */
	char *audit_path;
	int audit_fd;

	struct api_metrics metrics;
};

/* ---- small helpers ---- */

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int read_file(const char *what, const char *path, char **out, struct fk_err *err)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t len = 0;
	int ret = 0;

	if (!f)
		return fk_fail_errno(err, errno, "%s %s", what, path);
	if (getdelim(&buf, &len, '\0', f) < 0 && ferror(f))
		ret = fk_fail_errno(err, errno, "%s %s: read", what, path);
	else if (!buf || !buf[0])
		ret = fk_fail(err, EINVAL, "%s %s: empty file", what, path);
	fclose(f);
	if (ret < 0) {
		free(buf);
		return ret;
	}
	*out = buf;
	return 0;
}

int api_errno_status(int code, const char **error_code)
{
	const char *c;
	int status;

	switch (code) {
	case EINVAL:
	case ERANGE:
		status = 400, c = "bad_request";
		break;
	case ENOENT:
		status = 404, c = "not_found";
		break;
	case EBUSY:
	case EEXIST:
		status = 409, c = "conflict";
		break;
	case E2BIG:
		status = 413, c = "payload_too_large";
		break;
	case EAGAIN:
	case ENOSPC:
		status = 429, c = "too_many_requests";
		break;
	case ENOTCONN:
		status = 503, c = "unavailable";
		break;
	case ENOTSUP: /* this machine cannot do what was asked (limits without cgroup v2) */
		status = 501, c = "not_implemented";
		break;
	default:
		status = 500, c = "internal";
		break;
	}
	if (error_code)
		*error_code = c;
	return status;
}

static const char *status_code_name(unsigned status)
{
	switch (status) {
	case 400:
		return "bad_request";
	case 401:
		return "unauthorized";
	case 403:
		return "forbidden";
	case 404:
		return "not_found";
	case 405:
		return "method_not_allowed";
	case 409:
		return "conflict";
	case 413:
		return "payload_too_large";
	case 429:
		return "too_many_requests";
	case 503:
		return "unavailable";
	default:
		return "internal";
	}
}

json_t *api_error_body(const char *code, const char *message)
{
	return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", message);
}

/* ---- responses ---- */

static void set_response(struct api_call *c, unsigned status, struct MHD_Response *r)
{
	if (c->response)
		MHD_destroy_response(c->response);
	c->response = r;
	c->status = status;
}

static void reply_text(struct api_call *c, unsigned status, const char *type, const char *text,
		       size_t len)
{
	struct MHD_Response *r =
	    MHD_create_response_from_buffer(len, (void *)text, MHD_RESPMEM_MUST_COPY);

	if (!r)
		return;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	set_response(c, status, r);
}

void api_reply_json(struct api_call *c, unsigned status, json_t *body)
{
	char *text;

	if (!body) {
		static const char oom[] =
		    "{\"error\":{\"code\":\"internal\",\"message\":\"out of memory\"}}\n";
		reply_text(c, 500, "application/json", oom, sizeof(oom) - 1);
		return;
	}
	text = json_dumps(body, JSON_COMPACT);
	if (status < 300)
		api_audit_collect(c, body);
	json_decref(body);
	if (!text)
		return;
	/* A newline makes `curl` output readable; JSON parsers ignore it. */
	size_t len = strlen(text);
	char *line = realloc(text, len + 2);
	if (line) {
		line[len] = '\n';
		line[len + 1] = '\0';
		text = line;
		len++;
	}
	reply_text(c, status, "application/json", text, len);
	free(text);
}

void api_reply_error(struct api_call *c, unsigned status, const char *fmt, ...)
{
	char msg[FK_ERR_MSG_MAX + 128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	api_reply_json(c, status, api_error_body(status_code_name(status), msg));
}

void api_reply_errno(struct api_call *c, int ret, const struct fk_err *err)
{
	const char *code;
	int status = api_errno_status(ret < 0 ? -ret : ret, &code);

	api_reply_json(c, (unsigned)status,
		       api_error_body(code, err && err->msg[0] ? err->msg : strerror(-ret)));
}

void api_reply_empty(struct api_call *c, unsigned status)
{
	reply_text(c, status, "text/plain", "", 0);
}

void api_reply_stream(struct api_call *c, unsigned status, const char *type,
		      MHD_ContentReaderCallback read, void *cls,
		      MHD_ContentReaderFreeCallback free_cls)
{
	struct MHD_Response *r = MHD_create_response_from_callback(
	    MHD_SIZE_UNKNOWN, RESPONSE_BLOCK_LEN, read, cls, free_cls);

	if (!r) {
		free_cls(cls);
		api_reply_error(c, 500, "out of memory for a streamed response");
		return;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	set_response(c, status, r);
}

const char *api_query(struct api_call *c, const char *key)
{
	return MHD_lookup_connection_value(c->conn, MHD_GET_ARGUMENT_KIND, key);
}

struct daemon *api_daemon(struct api_call *c)
{
	return c->api->d;
}

bool api_stopping(const struct api *a)
{
	return atomic_load(&a->stopping);
}

/* ---- audit log ---- */

static void audit_add_vm(struct api_call *c, const char *id)
{
	size_t n;

	if (!id || strncmp(id, "vm-", 3) != 0)
		return;
	if (!c->vms)
		c->vms = json_array();
	n = json_array_size(c->vms);
	if (!c->vms || n >= MAX_AUDIT_VMS)
		return;
	for (size_t i = 0; i < n; i++)
		if (strcmp(json_string_value(json_array_get(c->vms, i)), id) == 0)
			return;
	json_array_append_new(c->vms, json_string(id));
}

/* VM ids a response names: every "id" of an object, and the strings of a "removed" list. */
static void audit_walk(struct api_call *c, json_t *v, int depth)
{
	const char *key;
	json_t *child;
	size_t i;

	if (depth > 8)
		return;
	if (json_is_object(v)) {
		json_object_foreach(v, key, child)
		{
			if (strcmp(key, "id") == 0 && json_is_string(child))
				audit_add_vm(c, json_string_value(child));
			else if (strcmp(key, "removed") == 0 && json_is_array(child))
				json_array_foreach(child, i, v)
				    audit_add_vm(c, json_string_value(v));
			else
				audit_walk(c, child, depth + 1);
		}
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, child) audit_walk(c, child, depth + 1);
	}
}

void api_audit_collect(struct api_call *c, json_t *body)
{
	audit_walk(c, body, 0);
}

static int audit_open(const char *path, struct fk_err *err)
{
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

	if (fd < 0)
		return fk_fail_errno(err, errno, "audit log %s", path);
	return fd;
}

int api_reopen_audit(struct api *a, struct fk_err *err)
{
	int fd, old;

	if (!a->audit_path)
		return 0;
	fd = audit_open(a->audit_path, err);
	if (fd < 0)
		return fd;
	pthread_mutex_lock(&a->audit_lock);
	old = a->audit_fd;
	a->audit_fd = fd;
	pthread_mutex_unlock(&a->audit_lock);
	if (old >= 0)
		close(old);
	return 0;
}

static void audit_write(struct api *a, struct api_call *c)
{
	char stamp[80];
	struct timespec ts;
	struct tm tm;
	json_t *line;
	char *text;

	if (!a->audit_path)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	snprintf(stamp, sizeof(stamp), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
	if (c->param_is_vm)
		audit_add_vm(c, c->param);
	line =
	    json_pack("{s:s,s:s,s:s,s:s,s:i,s:f,s:o}", "time", stamp, "caller", c->caller, "method",
		      c->method, "path", c->path ? c->path : "", "status", (int)c->status,
		      "latency_ms", (double)(int64_t)((now_s() - c->start) * 1e4) / 10.0, "vms",
		      c->vms ? json_incref(c->vms) : json_array());
	if (!line)
		return;
	text = json_dumps(line, JSON_COMPACT);
	json_decref(line);
	if (!text)
		return;
	size_t len = strlen(text);
	char *nl = realloc(text, len + 2);
	if (nl) {
		text = nl;
		text[len++] = '\n';
		text[len] = '\0';
		/* One write(2) on an O_APPEND file: lines from concurrent requests never mix. */
		pthread_mutex_lock(&a->audit_lock);
		if (a->audit_fd >= 0 && write(a->audit_fd, text, len) != (ssize_t)len)
			fprintf(stderr, "forkd serve: audit log %s: write: %s\n", a->audit_path,
				strerror(errno));
		pthread_mutex_unlock(&a->audit_lock);
	}
	free(text);
}

/* ---- metrics ---- */

void api_metric(void *opaque, enum daemon_metric m, double seconds)
{
	struct api *a = opaque;

	api_metrics_observe(&a->metrics, m, seconds);
}

static void handle_metrics(struct api_call *c)
{
	char *text = NULL;
	size_t len = 0;

	if (api_metrics_render(&c->api->metrics, &text, &len) < 0) {
		api_reply_error(c, 500, "out of memory rendering /metrics");
		return;
	}
	reply_text(c, 200, "text/plain; version=0.0.4", text, len);
	free(text);
}

/* ---- JSON routes ---- */

/* ?cascade=true|false|1|0, or a bare ?cascade (true); absent: false. False after a 400. */
static bool query_bool(struct api_call *c, const char *key, bool *out)
{
	const char *v = NULL;

	*out = false;
	if (MHD_lookup_connection_value_n(c->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &v,
					  NULL) != MHD_YES)
		return true;
	if (!v)
		v = "";
	if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		return true;
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || !v[0]) {
		*out = true;
		return true;
	}
	api_reply_error(c, 400, "query %s=%s: expected true or false", key, v);
	return false;
}

static void finish(struct api_call *c, int ret, struct fk_err *err, unsigned status, json_t *out)
{
	if (ret < 0) {
		json_decref(out);
		api_reply_errno(c, ret, err);
	} else {
		api_reply_json(c, status, out);
	}
}

/* The daemon operations behind the JSON routes, by what they take from the call. */
typedef int (*daemon_op)(struct daemon *d, json_t **out, struct fk_err *err);
typedef int (*daemon_key_op)(struct daemon *d, const char *key, json_t **out, struct fk_err *err);
typedef int (*daemon_key_body_op)(struct daemon *d, const char *key, json_t *body, json_t **out,
				  struct fk_err *err);
typedef int (*daemon_delete_op)(struct daemon *d, const char *key, bool cascade, json_t **out,
				struct fk_err *err);

static void reply_op(struct api_call *c, unsigned status, daemon_op op)
{
	struct fk_err err = {0};
	json_t *out = NULL;
	int ret = op(c->api->d, &out, &err);

	finish(c, ret, &err, status, out);
}

/* op on the {id} or {tag} of the path. */
static void reply_key_op(struct api_call *c, unsigned status, daemon_key_op op)
{
	struct fk_err err = {0};
	json_t *out = NULL;
	int ret = op(c->api->d, c->param, &out, &err);

	finish(c, ret, &err, status, out);
}

/* op on the {id} or {tag} of the path with the request's JSON body. */
static void reply_key_body_op(struct api_call *c, unsigned status, daemon_key_body_op op)
{
	struct fk_err err = {0};
	json_t *out = NULL;
	int ret = op(c->api->d, c->param, c->body, &out, &err);

	finish(c, ret, &err, status, out);
}

/* A DELETE of the {id} or {tag} of the path, cascading with ?cascade=true. */
static void reply_delete(struct api_call *c, daemon_delete_op op)
{
	struct fk_err err = {0};
	json_t *out = NULL;
	bool cascade;
	int ret;

	if (!query_bool(c, "cascade", &cascade))
		return;
	ret = op(c->api->d, c->param, cascade, &out, &err);
	finish(c, ret, &err, 200, out);
}

static void handle_health(struct api_call *c)
{
	reply_op(c, 200, daemon_health);
}

static void handle_vm_create(struct api_call *c)
{
	struct fk_err err = {0};
	json_t *out = NULL;
	int ret = daemon_vm_create(c->api->d, c->body, &out, &err);

	finish(c, ret, &err, 201, out);
}

static void handle_vm_list(struct api_call *c)
{
	reply_op(c, 200, daemon_vm_list);
}

static void handle_vm_get(struct api_call *c)
{
	reply_key_op(c, 200, daemon_vm_get);
}

static void handle_vm_delete(struct api_call *c)
{
	reply_delete(c, daemon_vm_delete);
}

static void handle_vm_branch(struct api_call *c)
{
	reply_key_body_op(c, 201, daemon_vm_branch);
}

static void handle_vm_snapshot(struct api_call *c)
{
	reply_key_body_op(c, 201, daemon_vm_snapshot);
}

static void handle_snapshot_spawn(struct api_call *c)
{
	reply_key_body_op(c, 201, daemon_snapshot_spawn);
}

static void handle_snapshot_list(struct api_call *c)
{
	reply_op(c, 200, daemon_snapshot_list);
}

static void handle_snapshot_get(struct api_call *c)
{
	reply_key_op(c, 200, daemon_snapshot_get);
}

static void handle_snapshot_delete(struct api_call *c)
{
	reply_delete(c, daemon_snapshot_delete);
}

static void handle_tree(struct api_call *c)
{
	reply_op(c, 200, daemon_tree);
}

/*
 * An image's name becomes a directory of the cache: anything but an image
 * name (a path, "..", a NUL or '/' decoded from %XX) is refused here, before
 * the daemon sees it (which checks again).
 */
static bool image_param_ok(struct api_call *c)
{
	if (daemon_image_name_ok(c->param))
		return true;
	api_reply_error(c, 400,
			"image '%.80s': expected an image name of 1 to 63 characters: a-z 0-9 . _ "
			"- starting with a letter or digit",
			c->param);
	return false;
}

static void handle_image_list(struct api_call *c)
{
	reply_op(c, 200, daemon_image_list);
}

static void handle_image_get(struct api_call *c)
{
	if (image_param_ok(c))
		reply_key_op(c, 200, daemon_image_get);
}

static void handle_image_delete(struct api_call *c)
{
	if (image_param_ok(c))
		reply_key_op(c, 200, daemon_image_delete);
}

static const struct api_route routes[] = {
    {"GET", "/healthz", API_BODY_NONE, handle_health},
    {"GET", "/metrics", API_BODY_NONE, handle_metrics},
    {"POST", "/v1/vms", API_BODY_JSON, handle_vm_create},
    {"GET", "/v1/vms", API_BODY_NONE, handle_vm_list},
    {"GET", "/v1/vms/{id}", API_BODY_NONE, handle_vm_get},
    {"DELETE", "/v1/vms/{id}", API_BODY_NONE, handle_vm_delete},
    {"POST", "/v1/vms/{id}/branch", API_BODY_JSON, handle_vm_branch},
    {"POST", "/v1/vms/{id}/snapshot", API_BODY_JSON, handle_vm_snapshot},
    {"POST", "/v1/vms/{id}/exec", API_BODY_JSON, api_handle_exec},
    {"PUT", "/v1/vms/{id}/files", API_BODY_RAW, api_handle_file_put},
    {"GET", "/v1/vms/{id}/files", API_BODY_NONE, api_handle_file_get},
    {"POST", "/v1/snapshots/{tag}/spawn", API_BODY_JSON, handle_snapshot_spawn},
    {"GET", "/v1/snapshots", API_BODY_NONE, handle_snapshot_list},
    {"GET", "/v1/snapshots/{tag}", API_BODY_NONE, handle_snapshot_get},
    {"DELETE", "/v1/snapshots/{tag}", API_BODY_NONE, handle_snapshot_delete},
    {"GET", "/v1/tree", API_BODY_NONE, handle_tree},
    {"GET", "/v1/images", API_BODY_NONE, handle_image_list},
    {"GET", "/v1/images/{name}", API_BODY_NONE, handle_image_get},
    {"DELETE", "/v1/images/{name}", API_BODY_NONE, handle_image_delete},
};

const struct api_route *api_routes(void)
{
	return routes;
}

size_t api_nr_routes(void)
{
	return sizeof(routes) / sizeof(routes[0]);
}

/*
 * Matches url against pattern; the {id}/{tag} segment goes to param (at
 * most MAX_PARAM bytes). Returns true on a match.
 */
static bool path_match(const char *pattern, const char *url, char *param, size_t param_len,
		       bool *is_vm)
{
	const char *p = pattern, *u = url;

	while (*p && *u) {
		if (*p == '{') {
			const char *pe = strchr(p, '}');
			size_t n = strcspn(u, "/");

			if (!pe || n == 0 || n >= param_len)
				return false;
			memcpy(param, u, n);
			param[n] = '\0';
			*is_vm = strncmp(p, "{id}", 4) == 0;
			p = pe + 1;
			u += n;
			continue;
		}
		if (*p != *u)
			return false;
		p++;
		u++;
	}
	return *p == '\0' && *u == '\0';
}

/* The route for method and url, or NULL with the methods the path allows in allow ("" if none). */
static const struct api_route *route_find(struct api_call *c, const char *method, const char *url,
					  char *allow, size_t allow_len)
{
	char param[MAX_PARAM + 1];
	bool is_vm = false;

	allow[0] = '\0';
	for (size_t i = 0; i < api_nr_routes(); i++) {
		param[0] = '\0';
		is_vm = false;
		if (!path_match(routes[i].pattern, url, param, sizeof(param), &is_vm))
			continue;
		if (strcmp(routes[i].method, method) == 0) {
			snprintf(c->param, sizeof(c->param), "%s", param);
			c->param_is_vm = is_vm;
			return &routes[i];
		}
		size_t used = strlen(allow);
		snprintf(allow + used, allow_len - used, "%s%s", used ? ", " : "",
			 routes[i].method);
	}
	return NULL;
}

/* ---- the connection's caller ---- */

static int client_fd(struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *ci =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);

	return ci ? ci->connect_fd : -1;
}

/* Constant time in the token's length whatever the candidate. */
static bool token_equal(const char *want, size_t want_len, const char *got)
{
	size_t got_len = strlen(got);
	unsigned char diff = got_len != want_len;

	for (size_t i = 0; i < want_len; i++)
		diff |= (unsigned char)want[i] ^ (unsigned char)(i < got_len ? got[i] : 0);
	return diff == 0;
}

/* Sets c->caller; false after replying 401/403. */
static bool check_caller(struct api_call *c, struct listener *l)
{
	if (!l->tcp) {
		struct ucred cred;
		socklen_t len = sizeof(cred);

		if (c->fd < 0 || getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
			snprintf(c->caller, sizeof(c->caller), "unknown");
			api_reply_error(c, 403, "cannot identify the caller: SO_PEERCRED: %s",
					strerror(errno));
			return false;
		}
		snprintf(c->caller, sizeof(c->caller), "uid:%u", (unsigned)cred.uid);
		if (cred.uid != 0 && cred.uid != c->api->allowed_uid) {
			api_reply_error(c, 403,
					"uid %u may not use this socket (root or uid %u only)",
					(unsigned)cred.uid, (unsigned)c->api->allowed_uid);
			return false;
		}
		return true;
	}
	const char *auth =
	    MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
	snprintf(c->caller, sizeof(c->caller), "token");
	if (!auth || strncmp(auth, "Bearer ", 7) != 0) {
		snprintf(c->caller, sizeof(c->caller), "anonymous");
		api_reply_error(c, 401, "expected an Authorization: Bearer TOKEN header");
		return false;
	}
	if (!token_equal(c->api->token, c->api->token_len, auth + 7)) {
		snprintf(c->caller, sizeof(c->caller), "bad-token");
		api_reply_error(c, 401, "the bearer token is not this daemon's");
		return false;
	}
	return true;
}

/* ---- request life cycle ---- */

static enum MHD_Result queue(struct api_call *c)
{
	enum MHD_Result r;

	if (!c->response) {
		api_reply_error(c, 500, "the handler gave no response");
		if (!c->response)
			return MHD_NO;
	}
	r = MHD_queue_response(c->conn, c->status, c->response);
	MHD_destroy_response(c->response);
	c->response = NULL;
	c->queued = true;
	return r;
}

/* First call for a request: caller, route, size; false when a response is already set. */
static bool request_begin(struct api_call *c, struct listener *l, const char *url,
			  const char *method)
{
	char allow[64];
	const char *len;

	if (!check_caller(c, l))
		return false;
	c->route = route_find(c, method, url, allow, sizeof(allow));
	if (!c->route) {
		if (allow[0]) {
			api_reply_error(c, 405, "%s %s: method not allowed (allowed: %s)", method,
					url, allow);
			if (c->response)
				MHD_add_response_header(c->response, MHD_HTTP_HEADER_ALLOW, allow);
		} else {
			api_reply_error(c, 404, "%s: no such route (see docs/rest-api.md)", url);
		}
		return false;
	}
	len = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
	if (c->route->body == API_BODY_JSON && len &&
	    strtoull(len, NULL, 10) > c->api->max_json_body) {
		api_reply_error(c, 413, "request body of %s bytes: at most %zu", len,
				c->api->max_json_body);
		return false;
	}
	if (c->route->body == API_BODY_RAW) {
		c->upload_phase = API_UPLOAD_BEGIN;
		c->route->handler(c);
		return !c->response;
	}
	return true;
}

/* Parses the JSON body; false after replying 400/413. */
static bool parse_body(struct api_call *c)
{
	json_error_t jerr;

	if (c->too_large) {
		api_reply_error(c, 413, "request body: more than %zu bytes", c->api->max_json_body);
		return false;
	}
	if (c->body_len == 0) {
		api_reply_error(c, 400, "request body: expected a JSON object, got nothing");
		return false;
	}
	c->body =
	    json_loadb(c->body_buf, c->body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &jerr);
	if (!c->body) {
		api_reply_error(c, 400,
				"request body: invalid JSON at line %d, column %d (byte %d): %s",
				jerr.line, jerr.column, jerr.position, jerr.text);
		return false;
	}
	if (!json_is_object(c->body)) {
		api_reply_error(c, 400, "request body: expected a JSON object, got %s",
				json_is_array(c->body)	   ? "an array"
				: json_is_string(c->body)  ? "a string"
				: json_is_number(c->body)  ? "a number"
				: json_is_boolean(c->body) ? "a boolean"
							   : "null");
		return false;
	}
	return true;
}

static bool has_body(struct MHD_Connection *conn)
{
	const char *len =
	    MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);

	return (len && strcmp(len, "0") != 0) ||
	       MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
					   MHD_HTTP_HEADER_TRANSFER_ENCODING);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct listener *l = cls;
	struct api_call *c = *con_cls;

	(void)version;
	if (!c) {
		daemon_defer_begin();
		c = calloc(1, sizeof(*c));
		if (!c)
			return MHD_NO;
		*con_cls = c;
		c->api = l->api;
		c->conn = conn;
		c->start = now_s();
		c->fd = client_fd(conn);
		c->path = strdup(url);
		snprintf(c->method, sizeof(c->method), "%s", method);
		if (request_begin(c, l, url, method))
			return MHD_YES;
		/*
		 * Refused at its headers. Without a body, the answer waits for the end of the
		 * request, so that the connection stays open for the next one (libmicrohttpd
		 * closes a connection answered before its request was complete); with a body,
		 * it goes now rather than after reading what nobody wants.
		 */
		if (!has_body(conn))
			c->deferred = true;
		return c->deferred ? MHD_YES : queue(c);
	}
	if (c->deferred && !*upload_data_size)
		return queue(c);
	if (c->queued || c->deferred) {
		*upload_data_size = 0; /* the rest of a refused body */
		return MHD_YES;
	}
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		if (c->route->body == API_BODY_RAW) {
			c->upload_phase = API_UPLOAD_DATA;
			c->upload_data = upload_data;
			c->upload_len = n;
			c->route->handler(c);
			return MHD_YES;
		}
		if (c->route->body != API_BODY_JSON || c->too_large)
			return MHD_YES;
		if (c->body_len + n > c->api->max_json_body) {
			c->too_large = true;
			free(c->body_buf);
			c->body_buf = NULL;
			c->body_len = 0;
			return MHD_YES;
		}
		char *grown = realloc(c->body_buf, c->body_len + n);
		if (!grown)
			return MHD_NO;
		memcpy(grown + c->body_len, upload_data, n);
		c->body_buf = grown;
		c->body_len += n;
		return MHD_YES;
	}
	if (c->route->body == API_BODY_JSON && !parse_body(c))
		return queue(c);
	if (c->route->body == API_BODY_RAW)
		c->upload_phase = API_UPLOAD_END;
	c->route->handler(c);
	return queue(c);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct listener *l = cls;
	struct api_call *c = *con_cls;

	(void)conn;
	/* the answer is out (or the client gone): what the handler left for now starts */
	daemon_defer_end();
	if (!c)
		return;
	if (c->upload_cancel)
		c->upload_cancel(c, toe != MHD_REQUEST_TERMINATED_COMPLETED_OK || !c->queued);
	if (c->status) /* 0: the client left before any response */
		api_metrics_count(&l->api->metrics, c->method, c->status);
	audit_write(l->api, c);
	if (c->response)
		MHD_destroy_response(c->response);
	json_decref(c->body);
	json_decref(c->vms);
	free(c->body_buf);
	free(c->path);
	free(c);
	*con_cls = NULL;
}

/* ---- listening sockets ---- */

/*
 * Connections waiting for libmicrohttpd's one accepting thread: with 128, a
 * burst of 200 clients at once (bench/api.sh, concurrent) saw connect(2) fail
 * with EAGAIN on the Unix socket. The kernel caps it at net.core.somaxconn.
 */
#define LISTEN_BACKLOG 1024

static int unix_listen(const char *path, struct fk_err *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	int fd, ret;

	if (strlen(path) >= sizeof(addr.sun_path))
		return fk_fail(err, ENAMETOOLONG, "API socket %s: longer than %zu bytes", path,
			       sizeof(addr.sun_path) - 1);
	ret = unix_socket_clear_stale("API socket", path, err);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fk_fail_errno(err, errno, "API socket %s: socket", path);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		ret = fk_fail_errno(err, errno, "API socket %s: bind", path);
		goto fail;
	}
	/* Nobody can connect before listen(2), so the mode is right before the first caller. */
	if (chmod(path, 0660) < 0) {
		ret = fk_fail_errno(err, errno, "API socket %s: chmod 0660", path);
		goto fail_unlink;
	}
	if (listen(fd, LISTEN_BACKLOG) < 0) {
		ret = fk_fail_errno(err, errno, "API socket %s: listen", path);
		goto fail_unlink;
	}
	return fd;
fail_unlink:
	unlink(path);
fail:
	close(fd);
	return ret;
}

/* "HOST:PORT" or "[V6]:PORT"; *port_out gets the bound port. */
static int tcp_listen(const char *listen_arg, int *port_out, struct fk_err *err)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
				 .ai_socktype = SOCK_STREAM,
				 .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
	char host[256], *port;
	struct addrinfo *res = NULL;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = -1, ret, one = 1;

	if (snprintf(host, sizeof(host), "%s", listen_arg) >= (int)sizeof(host))
		return fk_fail(err, EINVAL, "--listen %s: too long", listen_arg);
	port = strrchr(host, ':');
	if (!port || !port[1])
		return fk_fail(err, EINVAL, "--listen %s: expected HOST:PORT", listen_arg);
	*port++ = '\0';
	char *h = host;
	if (h[0] == '[' && h[strlen(h) - 1] == ']') {
		h[strlen(h) - 1] = '\0';
		h++;
	}
	ret = getaddrinfo(h[0] ? h : NULL, port, &hints, &res);
	if (ret != 0)
		return fk_fail(err, EINVAL, "--listen %s: %s", listen_arg, gai_strerror(ret));
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = fk_fail_errno(err, errno, "--listen %s: socket", listen_arg);
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0 ||
	    getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
		ret = fk_fail_errno(err, errno, "--listen %s: bind", listen_arg);
		close(fd);
		fd = -1;
		goto out;
	}
	*port_out = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
						   : ((struct sockaddr_in *)&ss)->sin_port);
	ret = fd;
out:
	freeaddrinfo(res);
	return ret;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	(void)cls;
	if (!getenv("FORKD_HTTP_DEBUG"))
		return;
	fputs("forkd serve: http: ", stderr);
	vfprintf(stderr, fmt, ap);
}

static int hex_value(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/*
 * libmicrohttpd's unescaping of paths and query values, except that %00 stays
 * as it is: decoded, the NUL would end the C string early and
 * /v1/images/a%00../x would reach a handler as "a". Left as "%00", it is
 * refused like any other character that has no place in an id, tag or name.
 */
static size_t unescape_keep_nul(void *cls, struct MHD_Connection *conn, char *s)
{
	size_t in = 0, out = 0;

	(void)cls;
	(void)conn;
	while (s[in]) {
		int hi, lo;

		if (s[in] == '%' && (hi = hex_value(s[in + 1])) >= 0 &&
		    (lo = hex_value(s[in + 2])) >= 0 && (hi || lo)) {
			s[out++] = (char)(hi * 16 + lo);
			in += 3;
		} else {
			s[out++] = s[in++];
		}
	}
	s[out] = '\0';
	return out;
}

static int start_mhd(struct api *a, struct listener *l, int fd, struct fk_err *err)
{
	unsigned flags = MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
			 MHD_USE_POLL | MHD_USE_ERROR_LOG;
	const char *what = l->tcp ? "TCP listener" : "API socket";

	l->api = a;
	if (l->tcp && a->tls_cert) {
		if (!MHD_is_feature_supported(MHD_FEATURE_TLS)) {
			close(fd);
			return fk_fail(err, ENOTSUP,
				       "--tls-cert: this libmicrohttpd was built without TLS");
		}
		l->mhd = MHD_start_daemon(
		    flags | MHD_USE_TLS, 0, NULL, NULL, on_request, l, MHD_OPTION_LISTEN_SOCKET, fd,
		    MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_CONNECTION_LIMIT,
		    (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
		    (unsigned)CONN_IDLE_TIMEOUT, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
		    MHD_OPTION_UNESCAPE_CALLBACK, unescape_keep_nul, NULL,
		    MHD_OPTION_HTTPS_MEM_CERT, a->tls_cert, MHD_OPTION_HTTPS_MEM_KEY, a->tls_key,
		    MHD_OPTION_END);
	} else {
		l->mhd = MHD_start_daemon(
		    flags, 0, NULL, NULL, on_request, l, MHD_OPTION_LISTEN_SOCKET, fd,
		    MHD_OPTION_NOTIFY_COMPLETED, on_completed, l, MHD_OPTION_CONNECTION_LIMIT,
		    (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
		    (unsigned)CONN_IDLE_TIMEOUT, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
		    MHD_OPTION_UNESCAPE_CALLBACK, unescape_keep_nul, NULL, MHD_OPTION_END);
	}
	if (!l->mhd) {
		close(fd);
		return fk_fail(err, EIO,
			       "%s: libmicrohttpd could not start (a bad TLS key or "
			       "certificate?)",
			       what);
	}
	return 0;
}

int api_start(struct daemon *d, const struct api_config *cfg, struct api **out, struct fk_err *err)
{
	struct api *a;
	int ret, fd;

	*out = NULL;
	if (!cfg->socket_path && !cfg->listen)
		return fk_fail(err, EINVAL, "expected a Unix socket path or --listen HOST:PORT");
	if (cfg->listen && (!cfg->token || strlen(cfg->token) < API_MIN_TOKEN_LEN))
		return fk_fail(err, EINVAL,
			       "--listen %s: expected a token (--token-file) of at least %d bytes",
			       cfg->listen, API_MIN_TOKEN_LEN);
	if (!cfg->tls_cert_path != !cfg->tls_key_path)
		return fk_fail(err, EINVAL, "TLS: expected both --tls-cert and --tls-key");
	if (cfg->tls_cert_path && !cfg->listen)
		return fk_fail(err, EINVAL, "--tls-cert: TLS needs --listen HOST:PORT");
	a = calloc(1, sizeof(*a));
	if (!a)
		return fk_fail(err, ENOMEM, "API: out of memory");
	a->d = d;
	a->audit_fd = -1;
	a->tcp_port = -1;
	a->allowed_uid = cfg->allowed_uid ? cfg->allowed_uid : geteuid();
	a->max_json_body = cfg->max_json_body ? cfg->max_json_body : API_MAX_JSON_BODY;
	a->tcp_l.tcp = true;
	pthread_mutex_init(&a->audit_lock, NULL);
	api_metrics_init(&a->metrics);
	/*
	 * A client that goes away must be an EPIPE in the thread writing to it
	 * (or to a stream's pipe), not the end of the daemon: SIGPIPE is ignored
	 * process-wide, as every server here does.
	 */
	signal(SIGPIPE, SIG_IGN);
	if (cfg->token) {
		a->token = strdup(cfg->token);
		a->token_len = strlen(cfg->token);
	}
	if (cfg->audit_log_path) {
		a->audit_path = strdup(cfg->audit_log_path);
		ret = a->audit_fd = audit_open(cfg->audit_log_path, err);
		if (ret < 0)
			goto fail;
	}
	if (cfg->tls_cert_path) {
		ret = read_file("--tls-cert", cfg->tls_cert_path, &a->tls_cert, err);
		if (ret == 0)
			ret = read_file("--tls-key", cfg->tls_key_path, &a->tls_key, err);
		if (ret < 0)
			goto fail;
	}
	if (cfg->socket_path) {
		a->socket_path = strdup(cfg->socket_path);
		fd = unix_listen(cfg->socket_path, err);
		if (fd < 0) {
			ret = fd;
			goto fail;
		}
		ret = start_mhd(a, &a->unix_l, fd, err);
		if (ret < 0) {
			unlink(cfg->socket_path);
			goto fail;
		}
	}
	if (cfg->listen) {
		fd = tcp_listen(cfg->listen, &a->tcp_port, err);
		if (fd < 0) {
			ret = fd;
			goto fail;
		}
		ret = start_mhd(a, &a->tcp_l, fd, err);
		if (ret < 0)
			goto fail;
	}
	daemon_set_metrics(d, api_metric, a);
	a->metrics_registered = true;
	*out = a;
	return 0;
fail:
	api_stop(a);
	return ret;
}

int api_tcp_port(const struct api *a)
{
	return a->tcp_l.mhd ? a->tcp_port : -1;
}

void api_stop(struct api *a)
{
	if (!a)
		return;
	atomic_store(&a->stopping, true);
	if (a->unix_l.mhd) {
		MHD_stop_daemon(a->unix_l.mhd);
		unlink(a->socket_path);
	}
	if (a->tcp_l.mhd)
		MHD_stop_daemon(a->tcp_l.mhd);
	/* After the request threads: none of them reports a metric any more. */
	if (a->metrics_registered)
		daemon_set_metrics(a->d, NULL, NULL);
	if (a->audit_fd >= 0)
		close(a->audit_fd);
	pthread_mutex_destroy(&a->audit_lock);
	api_metrics_destroy(&a->metrics);
	free(a->socket_path);
	free(a->audit_path);
	free(a->tls_cert);
	free(a->tls_key);
	if (a->token)
		explicit_bzero(a->token, a->token_len);
	free(a->token);
	free(a);
}
