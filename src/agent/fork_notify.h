/* SPDX-License-Identifier: MIT */
/*
 * The fork notification (docs/agent-protocol.md): after a BRANCH child or a
 * restored VM starts running, its VMM tells the guest agent, through the
 * VM's own vsock socket, to take fresh entropy, the host's wall clock, and a
 * new hostname and machine-id. Until it has, the agent refuses exec, so no
 * child code ever runs with its parent's RNG state.
 */
#ifndef FORKD_AGENT_FORK_NOTIFY_H
#define FORKD_AGENT_FORK_NOTIFY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "util/err.h"

/* How long a new child keeps trying to reach an agent that is not listening (yet). */
#define FORK_NOTIFY_TIMEOUT_MS 10000

enum fork_notify_state {
	FORK_NOTIFY_NONE = 0, /* not a fork or restore, or no vsock device */
	FORK_NOTIFY_PENDING,
	FORK_NOTIFY_APPLIED,
	FORK_NOTIFY_FAILED, /* no agent answered in time, or it refused */
};

struct fork_notify {
	atomic_int state;		 /* enum fork_notify_state */
	atomic_uint_fast64_t applied_ms; /* start to the agent's answer */
	char error[256];		 /* why it failed; written before state becomes FAILED */
};

/* "none", "pending", "applied", "failed". */
const char *fork_notify_state_name(int state);

/*
 * Builds the fork_notify request for generation ID `genid`: 64 bytes of
 * host entropy, the host's CLOCK_REALTIME, hostname "forkd-<12 hex of the
 * generation>" and a random machine-id. Returns NULL on allocation failure.
 */
json_t *fork_notify_request(const uint8_t genid[16]);

/*
 * Starts a detached thread that connects to the agent through uds_path
 * (retrying while the guest is not yet listening, up to timeout_ms) and
 * sends the notification; progress lands in *fn, which must outlive the
 * process's use of it (it lives in struct vm). Returns 0 or -errno.
 */
int fork_notify_start(struct fork_notify *fn, const char *uds_path, const uint8_t genid[16],
		      int timeout_ms, struct fk_err *err);

#endif
