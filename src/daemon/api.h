/* SPDX-License-Identifier: MIT */
/*
 * The REST layer of `forkd serve` (docs/rest-api.md, docs/api.yaml): HTTP
 * through libmicrohttpd on a Unix socket (peer checked with SO_PEERCRED)
 * and optionally on TCP (bearer token, optional TLS); routes each request
 * to one daemon operation (daemon.h), maps its errno to a status, streams
 * exec output and files to and from the guest agent, and keeps the audit
 * log and the /metrics counters.
 */
#ifndef FORKD_DAEMON_API_H
#define FORKD_DAEMON_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/daemon.h"
#include "util/err.h"

#define API_MAX_JSON_BODY (1u << 20) /* request bodies but file uploads (those stream) */
#define API_MIN_TOKEN_LEN 16

struct api;

struct api_config {
	/* The Unix socket to serve (mode 0660; a stale one is replaced), or NULL for none. */
	const char *socket_path;
	/* "HOST:PORT" (PORT 0: any, see api_tcp_port) for TCP, or NULL; needs token. */
	const char *listen;
	const char *token; /* the bearer token of TCP requests, >= API_MIN_TOKEN_LEN bytes */
	/* PEM files for TLS on the TCP listener (both or neither). */
	const char *tls_cert_path, *tls_key_path;
	const char *audit_log_path; /* one JSON line per request, or NULL */
	/* Caller uids allowed on the Unix socket besides root; 0 here means the process's euid. */
	uint32_t allowed_uid;
	size_t max_json_body; /* 0: API_MAX_JSON_BODY */
};

/*
 * Starts serving d (which must outlive the api); registers the metrics sink
 * with daemon_set_metrics. Returns 0 or -errno with err naming the input
 * (the socket path, the listen address, a PEM file, the audit log).
 */
int api_start(struct daemon *d, const struct api_config *cfg, struct api **out, struct fk_err *err);
/* Stops accepting, ends streaming responses and waits for every request thread. */
void api_stop(struct api *a);
/* The TCP port bound (useful with port 0), or -1 without TCP. */
int api_tcp_port(const struct api *a);
/* Reopens the audit log at its path (log rotation: SIGHUP). 0 without one. */
int api_reopen_audit(struct api *a, struct fk_err *err);
/* The /metrics sink (daemon_metric_fn); opaque is the api. */
void api_metric(void *opaque, enum daemon_metric m, double seconds);

/* ---- the route table, exported so tests can check docs/api.yaml against it ---- */

struct api_call;
typedef void (*api_handler_fn)(struct api_call *c);

enum api_body {
	API_BODY_NONE, /* the body is ignored */
	API_BODY_JSON, /* a JSON object, at most max_json_body bytes */
	API_BODY_RAW,  /* streamed to the handler (file upload) */
};

struct api_route {
	const char *method;  /* "GET", "POST", "PUT", "DELETE" */
	const char *pattern; /* "/v1/vms/{id}/branch": {id} and {tag} match one segment */
	enum api_body body;
	api_handler_fn handler;
};

const struct api_route *api_routes(void);
size_t api_nr_routes(void);

/* errno (positive) to HTTP status and error code, as daemon.h specifies. */
int api_errno_status(int code, const char **error_code);

#endif
