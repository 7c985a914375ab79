/* SPDX-License-Identifier: MIT */
/*
 * forkd-agent's pure logic, unit-tested on the host (tests/unit/test_agent_request.c):
 * parsing and validating REQUEST and SIGNAL payloads, hex, hostnames, the
 * command environment and the EXIT payload. No system calls beyond malloc.
 */
#ifndef FORKD_AGENT_REQUEST_H
#define FORKD_AGENT_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AGENT_GENID_LEN	     16u
#define AGENT_ENTROPY_MIN    32u
#define AGENT_ENTROPY_MAX    256u
#define AGENT_HOSTNAME_MAX   64u
#define AGENT_MACHINE_ID_LEN 16u			 /* bytes; 32 hex digits on the wire */
#define AGENT_TIMEOUT_MS_MAX (366ull * 24 * 3600 * 1000) /* a year: no overflow in ns */
#define AGENT_DEFAULT_MODE   0644u
#define AGENT_SIGNAL_MAX     64 /* SIGRTMAX on Linux x86-64 */

enum agent_op {
	AGENT_OP_PING,
	AGENT_OP_EXEC,
	AGENT_OP_PUT,
	AGENT_OP_GET,
	AGENT_OP_STAT,
	AGENT_OP_LS,
	AGENT_OP_RM,
	AGENT_OP_SHUTDOWN,
	AGENT_OP_FORK_NOTIFY,
};

struct exec_request {
	const char **argv; /* NULL-terminated; the strings belong to the request's JSON */
	size_t argc;
	json_t *env;	 /* borrowed object of string values, or NULL */
	const char *cwd; /* NULL: "/" */
	bool has_uid, has_gid;
	uint32_t uid, gid;
	uint64_t timeout_ms; /* 0: none */
	bool want_stdin;
};

/* put, get, stat, ls, rm */
struct path_request {
	const char *path;
	uint32_t mode;	/* put */
	bool recursive; /* rm */
};

struct fork_notify_request {
	uint8_t generation[AGENT_GENID_LEN];
	uint8_t entropy[AGENT_ENTROPY_MAX];
	size_t entropy_len;
	int64_t realtime_ns;
	char hostname[AGENT_HOSTNAME_MAX + 1];
	char machine_id[2 * AGENT_MACHINE_ID_LEN + 1]; /* lower-case hex */
};

struct agent_request {
	enum agent_op op;
	const char *op_name;
	json_t *root;
	union {
		struct exec_request exec;
		struct path_request file;
		bool reboot; /* shutdown */
		struct fork_notify_request notify;
	};
};

/*
 * Parses a REQUEST payload. Returns 0, or -EINVAL with why naming the field
 * and what was expected; free with agent_request_free either way.
 */
int agent_request_parse(const uint8_t *payload, size_t len, struct agent_request *req, char *why,
			size_t why_len);
void agent_request_free(struct agent_request *req);

/* Parses a SIGNAL payload {"signal":N}, 1 <= N <= AGENT_SIGNAL_MAX. 0 or -EINVAL. */
int agent_signal_parse(const uint8_t *payload, size_t len, int *signal, char *why, size_t why_len);

/*
 * Decodes hex (either case) of min_len..max_len bytes into out. Returns the
 * byte count, or -EINVAL (odd length, a non-hex character) or -ERANGE.
 */
int agent_hex_decode(const char *hex, uint8_t *out, size_t min_len, size_t max_len);
/* Writes 2*len lower-case hex digits and a NUL to out. */
void agent_hex_encode(const uint8_t *in, size_t len, char *out);

/* True for 1..AGENT_HOSTNAME_MAX characters of [A-Za-z0-9.-]. */
bool agent_hostname_valid(const char *name);

/*
 * The command's environment: defaults ("K=V", NULL-terminated) with the
 * request's env added, a request key replacing a default one. Returns a
 * malloc'd NULL-terminated array of malloc'd strings (agent_env_free), or NULL.
 */
char **agent_exec_env(const char *const *defaults, json_t *env);
void agent_env_free(char **env);

/* EXIT: {"exit_code":N,"timed_out":b} or {"signal":N,"timed_out":b}, from a wait status. */
json_t *agent_exit_json(int wait_status, bool timed_out);

#endif
