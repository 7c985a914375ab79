/* SPDX-License-Identifier: MIT */
/*
 * The VMM's control socket: a Unix stream socket speaking one JSON object
 * per line each way (see docs/control.md). The server side runs on the
 * event loop thread and knows nothing about the VM: the VM supplies a table
 * of commands whose handlers turn a request object into reply fields.
 */
#ifndef FORKD_CONTROL_CONTROL_H
#define FORKD_CONTROL_CONTROL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "util/err.h"
#include "core/event_loop.h"

/* Longest request line, not counting its '\n'. */
#define CONTROL_MAX_REQUEST (64 * 1024)
#define CONTROL_MAX_CLIENTS 16
/* Replies queued for one client beyond this stop reading its further requests. */
#define CONTROL_OUTPUT_HIGH_WATER (1024 * 1024)

/*
 * Fills `reply` (an empty object; "ok" is added by the server) and returns
 * 0, or returns -errno with err set, which the client receives as
 * {"ok":false,"error":err->msg}. Runs on the event loop thread.
 */
typedef int (*control_handler_fn)(void *opaque, json_t *request, json_t *reply, struct fk_err *err);

struct control_command {
	const char *name;
	control_handler_fn handler;
	const char *help; /* one line, shown by the built-in "help" command */
};

struct control_client;

struct control_server {
	struct event_loop *loop;
	int listen_fd;
	char path[108];
	/* The socket file we bound, so destroy never unlinks someone else's. */
	dev_t sock_dev;
	ino_t sock_ino;
	const struct control_command *commands; /* ends with a {NULL} entry */
	void *opaque;
	struct control_client *clients[CONTROL_MAX_CLIENTS];
	int nr_clients;
};

/*
 * Listens on `path` and serves `commands` (terminated by an entry whose name
 * is NULL) on `loop`; handlers get `opaque`. A socket file left behind by a
 * dead server is replaced; a path that is not a socket, or on which a server
 * answers, is refused. A "help" command is built in unless the table has one.
 */
int control_server_init(struct control_server *srv, struct event_loop *loop, const char *path,
			const struct control_command *commands, void *opaque, struct fk_err *err);
/* Closes every connection and the listening socket and unlinks the path.
 * Call it on the loop thread (or with the loop stopped), not from a handler. */
void control_server_destroy(struct control_server *srv);

/*
 * Argument accessors for handlers. A missing optional argument leaves *out
 * unchanged and returns 0; a missing required one, or one of the wrong type,
 * fails with a message naming the argument and the expected type.
 */
int control_arg_string(json_t *request, const char *key, bool required, const char **out,
		       struct fk_err *err);
int control_arg_int(json_t *request, const char *key, bool required, int64_t *out,
		    struct fk_err *err);
int control_arg_bool(json_t *request, const char *key, bool required, bool *out,
		     struct fk_err *err);

/* Client side (control_client.c). */

/*
 * Sends `request` to the server at `socket_path` and waits for its reply
 * line. *reply is the parsed reply object (the caller json_decref()s it),
 * whether its "ok" is true or false. timeout_ms < 0 waits forever.
 * Fails with -ETIMEDOUT if no reply arrived in time, or with the connect
 * or protocol error, naming the socket path.
 */
int control_call(const char *socket_path, json_t *request, json_t **reply, int timeout_ms,
		 struct fk_err *err);

#endif
