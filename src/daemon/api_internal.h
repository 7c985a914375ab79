/* SPDX-License-Identifier: MIT */
/* Shared by the REST layer's files (api.c, api_stream.c, api_metrics.c); not for other callers. */
#ifndef FORKD_DAEMON_API_INTERNAL_H
#define FORKD_DAEMON_API_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "daemon/api.h"

enum api_upload_phase {
	API_UPLOAD_BEGIN, /* headers read: check the request, start the stream */
	API_UPLOAD_DATA,  /* upload_data/upload_len hold the next piece */
	API_UPLOAD_END,	  /* the body is complete: reply */
};

/* One HTTP request, from its headers to its completion. */
struct api_call {
	struct api *api;
	struct MHD_Connection *conn;
	int fd; /* the client's socket */
	const struct api_route *route;
	char method[16];
	char *path;
	char param[256]; /* the {id} or {tag} of the path */
	bool param_is_vm;
	char caller[32]; /* "uid:N" or "token" for the audit log */
	double start;	 /* CLOCK_MONOTONIC seconds */

	char *body_buf; /* API_BODY_JSON: the raw body, then the parsed object */
	size_t body_len;
	bool too_large;
	json_t *body;

	/* API_BODY_RAW: the handler is called once per phase. */
	enum api_upload_phase upload_phase;
	const char *upload_data;
	size_t upload_len;
	void *upload;
	/* Set by a streaming upload: called at completion; aborted when the client left early. */
	void (*upload_cancel)(struct api_call *c, bool aborted);

	struct MHD_Response *response; /* set by the reply functions, queued by api.c */
	unsigned status;
	bool queued;
	bool deferred; /* response set at the headers, queued when the request is complete */
	json_t *vms;   /* VM ids for the audit log */
};

void api_reply_json(struct api_call *c, unsigned status, json_t *body); /* steals body */
void api_reply_error(struct api_call *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void api_reply_errno(struct api_call *c, int ret, const struct fk_err *err);
void api_reply_empty(struct api_call *c, unsigned status);
/* A response read from read(cls, ...) until it ends; free_cls(cls) always runs once. */
void api_reply_stream(struct api_call *c, unsigned status, const char *type,
		      MHD_ContentReaderCallback read, void *cls,
		      MHD_ContentReaderFreeCallback free_cls);
json_t *api_error_body(const char *code, const char *message);
void api_audit_collect(struct api_call *c, json_t *body);
const char *api_query(struct api_call *c, const char *key);
struct daemon *api_daemon(struct api_call *c);
bool api_stopping(const struct api *a);

/* api_stream.c: the routes that stream to and from the guest agent. */
void api_handle_exec(struct api_call *c);
void api_handle_file_put(struct api_call *c);
void api_handle_file_get(struct api_call *c);

/* api_metrics.c */
#define API_METRIC_BUCKETS 16
#define API_MAX_COUNTERS   64

struct api_histogram {
	uint64_t buckets[API_METRIC_BUCKETS]; /* cumulative counts are computed when rendered */
	uint64_t count;
	double sum;
};

struct api_counter {
	char method[16];
	unsigned code;
	uint64_t n;
};

struct api_metrics {
	pthread_mutex_t lock;
	struct api_histogram hist[DAEMON_METRIC_COUNT];
	struct api_counter counters[API_MAX_COUNTERS];
	size_t nr_counters;
};

void api_metrics_init(struct api_metrics *m);
void api_metrics_destroy(struct api_metrics *m);
void api_metrics_observe(struct api_metrics *m, enum daemon_metric which, double seconds);
void api_metrics_count(struct api_metrics *m, const char *method, unsigned code);
/* The Prometheus text exposition; *text is the caller's (free). */
int api_metrics_render(struct api_metrics *m, char **text, size_t *len);

#endif
