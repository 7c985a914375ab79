/* SPDX-License-Identifier: MIT */
/*
 * The daemon's REST client for the CLI (docs/rest-api.md), on libcurl's easy
 * interface: one blocking request at a time, the body streamed to a sink or
 * collected and parsed as JSON, the daemon's error object turned into a
 * message. The transfer runs on curl's multi interface, whose poll wakes the
 * progress spinner, so it needs no thread of its own.
 */
#include <curl/curl.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/daemon_client.h"

#define CONNECT_TIMEOUT_S 10
#define ERROR_BODY_MAX	  (1u << 20)  /* an error body is small; more is not read */
#define JSON_BODY_MAX	  (64u << 20) /* a listing of many VMs */
#define TOKEN_MAX	  4096
#define SPINNER_EVERY_MS  100

/* ---- options ---- */

static int take_value(int *i, int argc, char **argv, const char *name, const char **out)
{
	size_t n = strlen(name);
	const char *arg = argv[*i];

	if (strncmp(arg, name, n) == 0 && arg[n] == '=') {
		*out = arg + n + 1;
		return 1;
	}
	if (strcmp(arg, name) != 0)
		return 0;
	if (*i + 1 >= argc)
		return -1;
	*out = argv[++*i];
	return 1;
}

int dc_take_options(int *argc, char **argv, struct dc_opts *o)
{
	static const char *const names[] = {"--daemon", "--url", "--token-file"};
	int out = 0, i;

	for (i = 0; i < *argc; i++) {
		const char *arg = argv[i];
		int taken = 0;

		if (strcmp(arg, "--") == 0)
			break;
		if (strcmp(arg, "--json") == 0) {
			o->json = true;
			continue;
		}
		for (size_t k = 0; k < sizeof(names) / sizeof(names[0]) && !taken; k++) {
			const char **dst = k == 0 ? &o->socket : k == 1 ? &o->url : &o->token_file;

			taken = take_value(&i, *argc, argv, names[k], dst);
			if (taken < 0)
				return cli_usage_error("%s: expected a value after it", names[k]);
			if (taken && !**dst)
				return cli_usage_error("%s: expected a non-empty value", names[k]);
		}
		if (!taken)
			argv[out++] = argv[i];
	}
	for (; i < *argc; i++)
		argv[out++] = argv[i];
	argv[out] = NULL;
	*argc = out;
	if (o->url && strncmp(o->url, "http://", 7) != 0 && strncmp(o->url, "https://", 8) != 0)
		return cli_usage_error("--url '%s': expected http://HOST:PORT or https://HOST:PORT",
				       o->url);
	if (o->url && !o->token_file)
		return cli_usage_error("--url %s: expected --token-file F too (the daemon accepts "
				       "TCP requests only with its bearer token)",
				       o->url);
	return 0;
}

/* ---- small helpers ---- */

bool dc_is_vm_id(const char *s)
{
	if (strncmp(s, "vm-", 3) != 0 || strlen(s) != 11)
		return false;
	for (int i = 3; i < 11; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

bool dc_valid_tag(const char *s)
{
	size_t n = strlen(s);

	if (n < 1 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

char *dc_escape(const char *s)
{
	char *e = curl_easy_escape(NULL, s, 0), *copy;

	if (!e)
		return NULL;
	copy = strdup(e);
	curl_free(e);
	return copy;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *dc_base64_encode(const void *data, size_t len)
{
	const unsigned char *p = data;
	char *out = malloc((len + 2) / 3 * 4 + 1), *o = out;

	if (!out)
		return NULL;
	for (size_t i = 0; i < len; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16;

		if (i + 1 < len)
			v |= (uint32_t)p[i + 1] << 8;
		if (i + 2 < len)
			v |= p[i + 2];
		*o++ = b64[v >> 18];
		*o++ = b64[(v >> 12) & 63];
		*o++ = i + 1 < len ? b64[(v >> 6) & 63] : '=';
		*o++ = i + 2 < len ? b64[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static int b64_value(char c)
{
	const char *at = c ? strchr(b64, c) : NULL;

	return at ? (int)(at - b64) : -1;
}

int dc_base64_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len)
{
	unsigned char *buf;
	size_t n = 0;

	if (in_len % 4)
		return -EINVAL;
	buf = malloc(in_len / 4 * 3 + 1);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0; i < in_len; i += 4) {
		int v[4];
		bool last = i + 4 == in_len;

		for (int k = 0; k < 4; k++) {
			v[k] = b64_value(in[i + k]);
			/* '=' only as the last one or two characters */
			if (v[k] < 0 &&
			    !(last && in[i + k] == '=' && k >= 2 && (k == 3 || in[i + 3] == '='))) {
				free(buf);
				return -EINVAL;
			}
		}
		buf[n++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		if (v[2] >= 0)
			buf[n++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
		if (v[3] >= 0)
			buf[n++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
	}
	*out = buf;
	*out_len = n;
	return 0;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- progress ---- */

struct progress {
	const char *what;
	double t0, last_draw;
	unsigned frame;
	bool tty, drawn;
};

/* Redraws the spinner line, at most every SPINNER_EVERY_MS. */
static void progress_tick(struct progress *p)
{
	static const char *const frames[] = {"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"};
	double t = now_s();

	if (!p->tty || (t - p->last_draw) * 1000 < SPINNER_EVERY_MS)
		return;
	p->last_draw = t;
	fprintf(stderr, "\r\033[K%s %s… %.1f s", frames[p->frame++ % 10], p->what, t - p->t0);
	fflush(stderr);
	p->drawn = true;
}

/*
 * curl_easy_perform, on the multi interface so that the spinner moves while the daemon works
 * (curl's progress callback fires only about once a second when nothing is transferred).
 */
static CURLcode perform(CURL *curl, struct progress *p)
{
	CURLM *m = curl_multi_init();
	CURLcode rc = CURLE_OUT_OF_MEMORY;
	CURLMsg *msg;
	int running = 1, left;

	if (!m)
		return rc;
	if (curl_multi_add_handle(m, curl) != CURLM_OK) {
		curl_multi_cleanup(m);
		return rc;
	}
	while (running) {
		if (curl_multi_perform(m, &running) != CURLM_OK)
			break;
		if (running && curl_multi_poll(m, NULL, 0, SPINNER_EVERY_MS, NULL) != CURLM_OK)
			break;
		progress_tick(p);
	}
	rc = CURLE_RECV_ERROR;
	while ((msg = curl_multi_info_read(m, &left)))
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == curl)
			rc = msg->data.result;
	curl_multi_remove_handle(m, curl);
	curl_multi_cleanup(m);
	return rc;
}

static void progress_clear(struct progress *p)
{
	if (p->drawn) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
	}
}

void dc_progress_done(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

/* ---- the request ---- */

struct transfer {
	CURL *curl;
	const struct dc_request *r;
	char *buf; /* the body when it is not for the sink */
	size_t len, cap, max;
	int sink_ret;
	bool to_sink_known, to_sink;
};

static size_t on_body(char *data, size_t size, size_t nmemb, void *opaque)
{
	struct transfer *t = opaque;
	size_t n = size * nmemb;

	if (!t->to_sink_known) {
		long status = 0;

		curl_easy_getinfo(t->curl, CURLINFO_RESPONSE_CODE, &status);
		t->to_sink = t->r->sink && status >= 200 && status < 300;
		t->max = status >= 200 && status < 300 ? JSON_BODY_MAX : ERROR_BODY_MAX;
		t->to_sink_known = true;
	}
	if (t->to_sink) {
		t->sink_ret = t->r->sink(t->r->sink_opaque, data, n);
		return t->sink_ret < 0 ? 0 : n;
	}
	if (t->len + n > t->max)
		return t->len >= t->max ? n : 0; /* keep what we have; the rest is dropped */
	if (t->len + n + 1 > t->cap) {
		size_t cap = (t->len + n + 1) * 2;
		char *b = realloc(t->buf, cap);

		if (!b)
			return 0;
		t->buf = b;
		t->cap = cap;
	}
	memcpy(t->buf + t->len, data, n);
	t->len += n;
	t->buf[t->len] = '\0';
	return n;
}

static size_t on_upload(char *buf, size_t size, size_t nmemb, void *opaque)
{
	int fd = *(int *)opaque;
	ssize_t n;

	do
		n = read(fd, buf, size * nmemb);
	while (n < 0 && errno == EINTR);
	return n < 0 ? CURL_READFUNC_ABORT : (size_t)n;
}

static int read_token(const char *path, char *out, size_t len, struct fk_err *err)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return fk_fail_errno(err, errno, "--token-file '%s'", path);
	n = fread(out, 1, len - 1, f);
	fclose(f);
	out[n] = '\0';
	while (n && (out[n - 1] == '\n' || out[n - 1] == '\r'))
		out[--n] = '\0';
	if (n == 0 || strchr(out, '\n'))
		return fk_fail(err, EINVAL, "--token-file '%s': expected one line with the token",
			       path);
	return 0;
}

static const char *socket_path(const struct dc_opts *o)
{
	const char *env = getenv("FORKD_SOCKET");

	if (o->socket)
		return o->socket;
	return env && *env ? env : DC_DEFAULT_SOCKET;
}

/* The daemon's error object, or what came instead, into err. */
static int refusal(const struct dc_request *r, long status, const char *body, size_t len,
		   struct fk_err *err)
{
	json_t *j = body ? json_loadb(body, len, 0, NULL) : NULL;
	json_t *e = json_object_get(j, "error");
	const char *code = json_string_value(json_object_get(e, "code"));
	const char *msg = json_string_value(json_object_get(e, "message"));
	int ret;

	if (msg)
		ret = fk_fail(err, EREMOTEIO, "%s (%s %ld)", msg, code ? code : "HTTP", status);
	else
		ret = fk_fail(err, EREMOTEIO,
			      "%s %s: the daemon answered HTTP %ld without an error object%s%.200s",
			      r->method, r->path, status, len ? ": " : "", len ? body : "");
	json_decref(j);
	return ret;
}

/* Why connect(2) to a Unix socket fails (curl's own message speaks of "localhost port 80"). */
static int connect_errno(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd, e = 0;

	if (strlen(path) >= sizeof(a.sun_path))
		return ENAMETOOLONG;
	memcpy(a.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return errno;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		e = errno;
	close(fd);
	return e;
}

static int transport_error(const struct dc_opts *o, const char *where, CURLcode rc,
			   const char *detail, struct fk_err *err)
{
	const char *why = detail[0] ? detail : curl_easy_strerror(rc);
	int e = o->url || rc != CURLE_COULDNT_CONNECT ? 0 : connect_errno(where);

	if (e)
		why = e == ECONNREFUSED ? "connection refused (a socket file nobody listens on)"
					: strerror(e);

	if (rc == CURLE_COULDNT_CONNECT)
		return fk_fail(err, ECONNREFUSED,
			       "cannot reach the forkd daemon at %s: %s (is `forkd serve` "
			       "running? %s)",
			       where, why,
			       o->url ? "--url selects it"
				      : "--daemon PATH or FORKD_SOCKET selects it");
	return fk_fail(err, EIO, "the forkd daemon at %s: %s", where, why);
}

int dc_request(const struct dc_opts *o, const struct dc_request *r, struct dc_response *res,
	       struct fk_err *err)
{
	static bool curl_ready;
	char token[TOKEN_MAX], auth[TOKEN_MAX + 32], curl_err[CURL_ERROR_SIZE] = "";
	struct transfer t = {.r = r};
	struct progress prog = {.what = r->progress, .t0 = now_s()};
	struct curl_slist *headers = NULL;
	const char *where = o->url ? o->url : socket_path(o);
	char *url = NULL, *body = NULL;
	const char *base;
	int base_len;
	int upload_fd = r->upload_fd;
	CURLcode rc;
	struct stat st;
	int ret;

	memset(res, 0, sizeof(*res));
	prog.tty = r->progress && isatty(STDERR_FILENO);
	if (!o->url && stat(where, &st) < 0) {
		int e = errno;

		return fk_fail(err, e,
			       "cannot reach the forkd daemon: its socket %s: %s (is `forkd serve` "
			       "running? --daemon PATH or FORKD_SOCKET selects another socket)",
			       where, strerror(e));
	}
	if (o->token_file && (ret = read_token(o->token_file, token, sizeof(token), err)) < 0)
		return ret;
	if (!curl_ready) {
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			return fk_fail(err, ENOMEM, "libcurl: global initialisation failed");
		curl_ready = true;
	}
	t.curl = curl_easy_init();
	base = o->url ? o->url : "http://localhost";
	base_len = (int)strlen(base);
	if (base[base_len - 1] == '/') /* "http://h:1/" + "/v1/..." must not become "//v1" */
		base_len--;
	if (asprintf(&url, "%.*s%s", base_len, base, r->path) < 0)
		url = NULL;
	if (!t.curl || !url) {
		ret = fk_fail(err, ENOMEM, "%s %s: out of memory", r->method, r->path);
		goto out;
	}
	curl_easy_setopt(t.curl, CURLOPT_URL, url);
	if (!o->url)
		curl_easy_setopt(t.curl, CURLOPT_UNIX_SOCKET_PATH, where);
	curl_easy_setopt(t.curl, CURLOPT_ERRORBUFFER, curl_err);
	curl_easy_setopt(t.curl, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(t.curl, CURLOPT_CONNECTTIMEOUT, (long)CONNECT_TIMEOUT_S);
	curl_easy_setopt(t.curl, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(t.curl, CURLOPT_WRITEDATA, &t);
	curl_easy_setopt(t.curl, CURLOPT_USERAGENT, "forkd-cli");
	headers = curl_slist_append(headers, "Expect:");
	if (o->token_file) {
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
		headers = curl_slist_append(headers, auth);
	}
	if (r->body) {
		body = json_dumps(r->body, JSON_COMPACT);
		if (!body) {
			ret = fk_fail(err, ENOMEM, "%s %s: cannot encode the body", r->method,
				      r->path);
			goto out;
		}
		headers = curl_slist_append(headers, "Content-Type: application/json");
		curl_easy_setopt(t.curl, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(t.curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
	} else if (upload_fd >= 0) {
		if (fstat(upload_fd, &st) < 0) {
			ret = fk_fail_errno(err, errno, "%s %s: the file to send", r->method,
					    r->path);
			goto out;
		}
		headers = curl_slist_append(headers, "Content-Type: application/octet-stream");
		curl_easy_setopt(t.curl, CURLOPT_UPLOAD, 1L);
		curl_easy_setopt(t.curl, CURLOPT_READFUNCTION, on_upload);
		curl_easy_setopt(t.curl, CURLOPT_READDATA, &upload_fd);
		curl_easy_setopt(t.curl, CURLOPT_INFILESIZE_LARGE, (curl_off_t)st.st_size);
	}
	curl_easy_setopt(t.curl, CURLOPT_CUSTOMREQUEST, r->method);
	if (strcmp(r->method, "GET") == 0)
		curl_easy_setopt(t.curl, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(t.curl, CURLOPT_HTTPHEADER, headers);
	rc = perform(t.curl, &prog);
	progress_clear(&prog);
	res->seconds = now_s() - prog.t0;
	curl_easy_getinfo(t.curl, CURLINFO_RESPONSE_CODE, &res->status);
	if (t.sink_ret < 0) {
		ret = t.sink_ret;
		if (!err->msg[0])
			fk_fail_errno(err, -ret, "%s %s: handling the answer", r->method, r->path);
		goto out;
	}
	if (rc != CURLE_OK && res->status == 0) {
		ret = transport_error(o, where, rc, curl_err, err);
		goto out;
	}
	if (res->status < 200 || res->status >= 300) {
		ret = refusal(r, res->status, t.buf, t.len, err);
		goto out;
	}
	if (rc != CURLE_OK) {
		ret = fk_fail(err, EIO, "%s %s: the answer was cut short: %s", r->method, r->path,
			      curl_err[0] ? curl_err : curl_easy_strerror(rc));
		goto out;
	}
	if (!t.to_sink && t.len) {
		json_error_t jerr;

		res->json = json_loadb(t.buf, t.len, 0, &jerr);
		if (!res->json) {
			ret = fk_fail(err, EBADMSG, "%s %s: the daemon's answer is not JSON: %s",
				      r->method, r->path, jerr.text);
			goto out;
		}
	}
	ret = 0;
out:
	curl_slist_free_all(headers);
	if (t.curl)
		curl_easy_cleanup(t.curl);
	free(url);
	free(body);
	free(t.buf);
	return ret;
}

int dc_exit_status(const struct dc_response *res)
{
	return res->status > 0 ? CLI_EXIT_NOT_OK : CLI_EXIT_USAGE;
}
