/* SPDX-License-Identifier: MIT */
/*
 * forkd-agent internals: the connection a handler process serves, the
 * per-op handlers, and the fork identity shared by all handler processes.
 */
#ifndef FORKD_AGENT_AGENT_H
#define FORKD_AGENT_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <time.h>
#include <stdint.h>
#include <sys/types.h>

#include "forkd/agent_proto.h"
#include "request.h"

/* How long a connection may stay silent where the agent waits for the host. */
#define AGENT_REQUEST_TIMEOUT_MS 30000
#define AGENT_DATA_TIMEOUT_MS	 600000
/* How long an exec waits for a fork notification once it sees a new generation. */
#define AGENT_FORK_NOTIFY_WAIT_MS 2000

struct identity;

struct agent_config {
	bool no_identity; /* --no-identity: fork_notify and shutdown only validate (host tests) */
	pid_t agent_pid;
	struct identity *identity;
};

/* One connection, served by one handler process. */
struct conn {
	int fd; /* non-blocking; fk_frame_write polls */
	struct fk_frame_reader reader;
	const char *op; /* names the operation in log lines and errors */
	/* CLOCK_MONOTONIC when the REQUEST arrived: fork_notify adds what passed since. */
	struct timespec request_at;
};

/* Sends a JSON frame (obj is not consumed). 0 or -errno. */
int conn_send_json(struct conn *c, unsigned type, json_t *obj);

/*
 * Logs "forkd-agent: <op>: <message>" and sends ERROR {"error":message,
 * "errno":err}. Returns -err (-EPROTO when err is 0), for `return conn_send_error(..)`.
 */
int conn_send_error(struct conn *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Waits up to timeout_ms for the next whole frame. Returns 1, -ETIMEDOUT, or
 * an fk_frame_read error (pass it to conn_frame_failed).
 */
int conn_next_frame(struct conn *c, int timeout_ms, struct fk_frame_hdr *hdr,
		    const uint8_t **payload);

/* True for the errors that mean the host went away (nobody to answer). */
bool conn_peer_gone(int err);

/*
 * Reports an error from conn_next_frame: logs a vanished host, answers
 * anything else with ERROR. Returns err.
 */
int conn_frame_failed(struct conn *c, int err);

/* Answers a frame the operation does not expect at this point. */
int conn_unexpected_frame(struct conn *c, unsigned type, const char *expected);

int handle_exec(struct conn *c, const struct agent_config *cfg, const struct exec_request *x);
int handle_put(struct conn *c, const struct path_request *f);
int handle_get(struct conn *c, const struct path_request *f);
int handle_stat(struct conn *c, const struct path_request *f);
int handle_ls(struct conn *c, const struct path_request *f);
int handle_rm(struct conn *c, const struct path_request *f);
int handle_ping(struct conn *c, const struct agent_config *cfg);
int handle_shutdown(struct conn *c, const struct agent_config *cfg, bool reboot);
int handle_fork_notify(struct conn *c, const struct agent_config *cfg,
		       const struct fork_notify_request *n);

/*
 * Fork identity. Maps the VM generation ID (16 bytes at genid_addr in
 * genid_dev, normally /dev/mem) and the shared record of the generation the
 * last fork_notify applied; call before forking handlers. genid_dev NULL:
 * the generation is unknown and the VM is treated as never forked.
 */
int identity_init(struct identity **out, const char *genid_dev, uint64_t genid_addr);
/* The current generation; all zeros when unknown. */
void identity_current(const struct identity *id, uint8_t out[AGENT_GENID_LEN]);
bool identity_fork_pending(struct identity *id);
/* 0 once no fork notification is pending, -EAGAIN if still pending after timeout_ms. */
int identity_wait_notified(struct identity *id, int timeout_ms);
void identity_set_applied(struct identity *id, const uint8_t generation[AGENT_GENID_LEN]);

#endif
