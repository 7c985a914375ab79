/* SPDX-License-Identifier: MIT */
/* Shared pieces of the `forkd` command-line client. */
#ifndef FORKD_CLI_CLI_H
#define FORKD_CLI_CLI_H

#include <stdbool.h>
#include <stddef.h>

#define CLI_EXIT_NOT_OK 1
#define CLI_EXIT_USAGE	2

/* Prints "forkd: <message>" and the usage text on stderr; returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Milliseconds, 0 to 3600000; returns 0 or -EINVAL. */
int cli_parse_timeout(const char *s, int *out);

/* `forkd spawn SNAPSHOT_DIR -n N --out DIR [--vmm PATH] [--timeout MS]`; returns an exit status. */
int cli_spawn(int argc, char **argv);

/* `forkd kill DIR`; returns an exit status. */
int cli_kill(int argc, char **argv);

/* `forkd exec VM [-i] [--env K=V] [--cwd DIR] [--uid N] [--gid N] [--timeout MS] -- CMD...`:
 * the command's exit status, 124 timed out, 125 not run, 126 not executable, 127 not found. */
int cli_exec(int argc, char **argv);

/* The parts of an exec request that `forkd exec` builds alike for a local VM and through the
 * daemon; each returns 0, or -EINVAL after printing a usage error whose exit status goes to
 * *status (left alone on success: it holds the caller's status for later failures). */
struct json_t;
/* `--env NAME=VALUE` into the object env. */
int cli_exec_env(struct json_t *env, const char *value, int *status);
/* The command after the `--` at argv[i] into the array args, set as req's "argv"; env, unless it
 * is empty, as req's "env". */
int cli_exec_command(struct json_t *req, struct json_t *args, struct json_t *env, int argc,
		     char **argv, int i, int *status);

/* `forkd cp SRC DST`, one of them VM:/path; returns an exit status. */
int cli_cp(int argc, char **argv);
struct stat;
/* Opens SRC of an upload, which must be a regular file (its mode goes along); -1 after printing
 * why not. Shared by the local and the daemon cp. */
int cli_cp_open_source(const char *src, struct stat *st);
/* Creates the temporary file beside DST that a download goes into (renamed to DST once whole),
 * its name in tmp; -1 after printing why not. */
int cli_cp_open_temp(const char *dst, char *tmp, size_t size);

/* `forkd agent VM ping|stat|ls|rm|shutdown ...`; returns an exit status. */
int cli_agent(int argc, char **argv);

/* `forkd image build NAME [--packages P,...] | ls | rm NAME` (runs images/rootfs.sh);
 * returns the script's exit status, or CLI_EXIT_USAGE. */
int cli_image(int argc, char **argv);

/* `forkd doctor [--json]`: what this machine offers forkd (KVM kind, userfaultfd, THP, cgroup
 * v2, disk space) and a verdict; 0 when the report was printed, CLI_EXIT_USAGE for bad flags. */
int cli_doctor(int argc, char **argv);

/*
 * The commands served by the daemon (daemon_cmds.c, docs/rest-api.md), each taking --daemon
 * PATH, --url URL --token-file F and --json; they return an exit status: 0 ok, 1 the daemon
 * refused, 2 bad usage or no daemon. argv[0] of cli_vm_daemon is create, ls or rm.
 */
int cli_vm_daemon(int argc, char **argv);
int cli_branch(int argc, char **argv);
int cli_snapshot(int argc, char **argv);
/* `forkd snapshot verify DIR [--json]` (snapshot_cmds.c): 0 intact, 1 corrupt or unreadable. */
int cli_snapshot_verify(int argc, char **argv);
int cli_snapshot_prewarm(int argc, char **argv);
int cli_snapshot_compact(int argc, char **argv);
int cli_snapshots(int argc, char **argv);
int cli_tree(int argc, char **argv);
/* `forkd spawn TAG -n N` (cli_spawn decides between it and a local snapshot directory). */
int cli_spawn_daemon(int argc, char **argv);
/* `forkd exec ID -- CMD...`: streams the output; the command's exit status (128+N for signal N),
 * 125 when it did not run. */
int cli_exec_daemon(int argc, char **argv);

struct dc_opts;
/* `forkd cp` with one side ID:/path. */
int cli_cp_daemon(const struct dc_opts *o, const char *src, const char *dst, const char *id,
		  const char *guest_path, bool upload);
/* `forkd serve --state-dir DIR [--socket PATH] [--listen HOST:PORT --token-file F [--tls-cert F
 * --tls-key F]] [--audit-log F] [--vmm PATH]`: the daemon and its REST API (docs/rest-api.md)
 * until SIGTERM/SIGINT; 0 after a clean stop, 1 if it could not start, 2 for bad flags. */
int cli_serve(int argc, char **argv);

#endif
