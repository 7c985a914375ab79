/* SPDX-License-Identifier: MIT */
/*
 * The CLI's client of the daemon's REST API (`forkd serve`, docs/rest-api.md),
 * over libcurl: a Unix socket (--daemon PATH, else $FORKD_SOCKET, else
 * /var/lib/forkd/forkd.sock) or TCP (--url http(s)://HOST:PORT with
 * --token-file F, sent as "Authorization: Bearer TOKEN").
 */
#ifndef FORKD_CLI_DAEMON_CLIENT_H
#define FORKD_CLI_DAEMON_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/err.h"

#define DC_DEFAULT_SOCKET "/var/lib/forkd/forkd.sock"

/* Where the daemon is, and the flags every daemon command shares. */
struct dc_opts {
	const char *socket;	/* --daemon PATH (else $FORKD_SOCKET, else the default) */
	const char *url;	/* --url http(s)://HOST:PORT: TCP instead of the socket */
	const char *token_file; /* --token-file F: needed with --url */
	bool json;		/* --json: print the daemon's JSON as is */
};

/*
 * Takes --daemon, --url, --token-file and --json (also as --opt=value) out
 * of argv[0..*argc), stopping at "--", and shifts the rest down. Returns 0,
 * or CLI_EXIT_USAGE after printing the problem.
 */
int dc_take_options(int *argc, char **argv, struct dc_opts *o);

/* Receives a successful response's body as it arrives; returns 0 or -errno to abort. */
typedef int (*dc_sink_fn)(void *opaque, const char *data, size_t len);

struct dc_request {
	const char *method; /* GET, POST, PUT, DELETE */
	const char *path;   /* "/v1/vms/..." with its query, already escaped */
	json_t *body;	    /* a JSON body, or NULL */
	int upload_fd;	    /* a raw body read from this regular file (not with body), or -1 */
	dc_sink_fn sink;    /* a 2xx body goes here instead of being parsed as JSON */
	void *sink_opaque;
	/* Non-NULL: progress on stderr while waiting ("creating VM"): a spinner with the
	 * elapsed time when stderr is a terminal. */
	const char *progress;
};

struct dc_response {
	long status;  /* HTTP status; 0 when the daemon did not answer */
	json_t *json; /* the parsed 2xx body (no sink), NULL for an empty one; caller decrefs */
	double seconds;
};

/*
 * Sends one request and waits for its answer. Returns 0 for a 2xx status.
 * Otherwise -errno with err naming the problem: the daemon's
 * {"error":{"code","message"}} as "CODE: MESSAGE (HTTP N)" when it answered
 * (res->status > 0), or why it could not be reached.
 */
int dc_request(const struct dc_opts *o, const struct dc_request *r, struct dc_response *res,
	       struct fk_err *err);

/* The exit status for a failed dc_request: 1 the daemon refused, 2 it could not be asked. */
int dc_exit_status(const struct dc_response *res);

/* "vm-" and 8 lowercase hex digits: the daemon's VM ids. */
bool dc_is_vm_id(const char *s);

/* Tags: [A-Za-z0-9._-], 1..64 characters, not starting with '.' or '-'. */
bool dc_valid_tag(const char *s);

/* URL-escapes s into a malloc'd string; NULL when out of memory. */
char *dc_escape(const char *s);

/* Base64 (RFC 4648, padded). encode: malloc'd NUL-terminated; decode: -EINVAL if malformed. */
char *dc_base64_encode(const void *data, size_t len);
int dc_base64_decode(const char *in, size_t in_len, unsigned char **out, size_t *out_len);

/* Progress of a long operation on stderr: a spinner while waiting on a terminal, and one final
 * line ("created vm-1 in 1.2 s") in any case. */
void dc_progress_done(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
