/* SPDX-License-Identifier: MIT */
/*
 * Host side of the agent protocol (include/forkd/agent_proto.h): connect to
 * a guest port through a VM's hybrid-vsock Unix socket, and run agent
 * operations over it. Used by `forkd exec`, `forkd cp`, `forkd agent` and by
 * forkd-vmm itself for the fork notification.
 *
 * Every operation streams: nothing here holds more than one frame in each
 * direction, and the socket is never written while a frame from the agent
 * waits to be read, so a command that reads stdin and writes stdout at once
 * cannot deadlock against us.
 */
#ifndef FORKD_AGENT_AGENT_CLIENT_H
#define FORKD_AGENT_AGENT_CLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

/*
 * Connects to `port` in the guest: opens the VM's Unix socket at uds_path,
 * sends "CONNECT <port>\n" and waits for "OK <n>\n" (Firecracker's hybrid
 * vsock). Returns the connected, blocking socket or -errno with err set
 * (-ECONNREFUSED when the guest has nothing listening on the port,
 * -ETIMEDOUT after timeout_ms; timeout_ms < 0 waits forever).
 */
int fk_vsock_connect(const char *uds_path, uint32_t port, int timeout_ms, struct fk_err *err);

/*
 * What `forkd exec VM` and friends accept as VM: a directory holding
 * vsock.sock (a BRANCH or spawn child's directory) or the socket itself.
 * Writes the socket path to out. Returns 0 or -errno.
 */
int fk_agent_socket_path(const char *vm, char *out, size_t out_len, struct fk_err *err);

/*
 * One request, one JSON answer (ping, stat, ls, rm, shutdown, fork_notify).
 * Returns 0 with *response (the caller's reference), or -errno with err: an
 * ERROR frame from the agent becomes its errno (EREMOTEIO if it gave none)
 * and its message.
 */
int fk_agent_call(const char *uds_path, json_t *request, json_t **response, int timeout_ms,
		  struct fk_err *err);

struct fk_exec_io {
	int in_fd;  /* streamed as the command's stdin, or -1 for /dev/null */
	int out_fd; /* the command's stdout goes here */
	int err_fd; /* and its stderr here */
};

struct fk_exec_result {
	long pid;	/* the command's pid in the guest */
	int exit_code;	/* valid when signal == 0 */
	int signal;	/* the signal that ended it, or 0 */
	bool timed_out; /* the agent killed it at its timeout_ms */
	uint64_t out_bytes, err_bytes;
	double first_byte_ms; /* request sent to the RESPONSE with the pid */
};

/*
 * Runs an exec request ({"op":"exec","argv":[...],...}; "stdin" is set here
 * from io->in_fd) and streams until EXIT. Returns 0 with *res filled, or
 * -errno with err (an ERROR from the agent: its errno, e.g. -ENOENT for a
 * missing binary). connect_timeout_ms bounds reaching the agent only.
 */
int fk_agent_exec(const char *uds_path, json_t *request, const struct fk_exec_io *io,
		  int connect_timeout_ms, struct fk_exec_result *res, struct fk_err *err);

/*
 * fk_agent_exec, abandoned with -ECANCELED as soon as cancel_fd becomes
 * readable (e.g. the write end of a pipe closed): the agent then kills the
 * command's process group. cancel_fd < 0: never.
 */
int fk_agent_exec_cancel(const char *uds_path, json_t *request, const struct fk_exec_io *io,
			 int cancel_fd, int connect_timeout_ms, struct fk_exec_result *res,
			 struct fk_err *err);

/* Streams src_fd to guest_path (written atomically by the agent) with mode. */
int fk_agent_put(const char *uds_path, int src_fd, const char *guest_path, unsigned mode,
		 int connect_timeout_ms, uint64_t *bytes, struct fk_err *err);

/* Streams guest_path into dst_fd; *mode gets the file's mode bits. */
int fk_agent_get(const char *uds_path, const char *guest_path, int dst_fd, int connect_timeout_ms,
		 uint64_t *bytes, unsigned *mode, struct fk_err *err);

/*
 * fk_agent_put and fk_agent_get, abandoned with -ECANCELED when cancel_fd
 * becomes readable: a cancelled put never sends its end of data, so the
 * agent discards the partial file.
 */
int fk_agent_put_cancel(const char *uds_path, int src_fd, const char *guest_path, unsigned mode,
			int cancel_fd, int connect_timeout_ms, uint64_t *bytes, struct fk_err *err);
int fk_agent_get_cancel(const char *uds_path, const char *guest_path, int dst_fd, int cancel_fd,
			int connect_timeout_ms, uint64_t *bytes, unsigned *mode,
			struct fk_err *err);

#endif
