/* SPDX-License-Identifier: MIT */
/*
 * `forkd serve`: the daemon (daemon.h) behind its REST API (api.h,
 * docs/rest-api.md). Runs until SIGTERM or SIGINT, which stop it cleanly
 * (the VMMs keep running and a later `forkd serve` re-adopts them); SIGHUP
 * reopens the audit log.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"
#include "daemon/api.h"
#include "daemon/daemon.h"

#define DEFAULT_STATE_DIR "/var/lib/forkd"

struct serve_args {
	const char *state_dir, *socket, *listen, *token_file, *tls_cert, *tls_key, *audit_log, *vmm;
	const char *jail_uids;
	bool no_jail;
	uint32_t uid_first, uid_count;
};

/* --jail-uids FIRST[:COUNT]: FIRST 1.., COUNT 1.. (default 65536), the range below 2^32. */
static int parse_uids(const char *v, struct serve_args *a)
{
	unsigned long long first, count = DAEMON_JAIL_UID_COUNT;
	char *end;

	errno = 0;
	first = strtoull(v, &end, 10);
	if (*end == ':' && end[1] >= '0' && end[1] <= '9')
		count = strtoull(end + 1, &end, 10);
	if (v[0] < '0' || v[0] > '9' || errno || *end || first == 0 || count == 0 ||
	    first + count > UINT32_MAX)
		return cli_usage_error("serve: --jail-uids '%s': expected FIRST[:COUNT], uids from "
				       "1 with FIRST+COUNT below 2^32 (default %u:%u)",
				       v, DAEMON_JAIL_UID_FIRST, DAEMON_JAIL_UID_COUNT);
	a->uid_first = (uint32_t)first;
	a->uid_count = (uint32_t)count;
	return 0;
}

/* The token: the file's content less one trailing newline, at least API_MIN_TOKEN_LEN bytes. */
static int read_token(const char *path, char **out)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t cap = 0;
	ssize_t n;

	if (!f) {
		fprintf(stderr, "forkd serve: --token-file %s: %s\n", path, strerror(errno));
		return -1;
	}
	n = getdelim(&buf, &cap, '\0', f);
	fclose(f);
	if (n < 0) {
		free(buf);
		buf = NULL;
		n = 0;
	}
	if (n > 0 && buf[n - 1] == '\n')
		buf[--n] = '\0';
	if (n > 0 && buf[n - 1] == '\r')
		buf[--n] = '\0';
	if (n < API_MIN_TOKEN_LEN || strlen(buf) != (size_t)n) {
		fprintf(stderr,
			"forkd serve: --token-file %s: expected a token of at least %d bytes "
			"(without NUL bytes), got %zd\n",
			path, API_MIN_TOKEN_LEN, n);
		free(buf);
		return -1;
	}
	*out = buf;
	return 0;
}

static int parse_args(int argc, char **argv, struct serve_args *a)
{
	static const struct {
		const char *name;
		size_t off;
	} opts[] = {
	    {"--state-dir", offsetof(struct serve_args, state_dir)},
	    {"--socket", offsetof(struct serve_args, socket)},
	    {"--listen", offsetof(struct serve_args, listen)},
	    {"--token-file", offsetof(struct serve_args, token_file)},
	    {"--tls-cert", offsetof(struct serve_args, tls_cert)},
	    {"--tls-key", offsetof(struct serve_args, tls_key)},
	    {"--audit-log", offsetof(struct serve_args, audit_log)},
	    {"--vmm", offsetof(struct serve_args, vmm)},
	    {"--jail-uids", offsetof(struct serve_args, jail_uids)},
	};

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *value = NULL;
		size_t k, nlen;

		if (strcmp(arg, "--no-jail") == 0) {
			a->no_jail = true;
			continue;
		}
		for (k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
			nlen = strlen(opts[k].name);
			if (strncmp(arg, opts[k].name, nlen) == 0 &&
			    (arg[nlen] == '\0' || arg[nlen] == '='))
				break;
		}
		if (k == sizeof(opts) / sizeof(opts[0]))
			return cli_usage_error("serve: unknown argument '%s'", arg);
		if (arg[nlen] == '=') {
			value = arg + nlen + 1;
		} else {
			if (i + 1 == argc)
				return cli_usage_error("serve: %s: expected a value after it", arg);
			value = argv[++i];
		}
		if (!value[0])
			return cli_usage_error("serve: %s: expected a non-empty value",
					       opts[k].name);
		*(const char **)((char *)a + opts[k].off) = value;
	}
	if (!a->state_dir)
		a->state_dir = DEFAULT_STATE_DIR;
	if (a->jail_uids && a->no_jail)
		return cli_usage_error("%s", "serve: --jail-uids: not with --no-jail");
	if (a->jail_uids && parse_uids(a->jail_uids, a))
		return CLI_EXIT_USAGE;
	if (a->listen && !a->token_file)
		return cli_usage_error("serve: --listen %s: TCP needs --token-file F", a->listen);
	if (a->token_file && !a->listen)
		return cli_usage_error("%s", "serve: --token-file: only with --listen HOST:PORT");
	if (!a->tls_cert != !a->tls_key)
		return cli_usage_error("%s", "serve: TLS needs both --tls-cert and --tls-key");
	if (a->tls_cert && !a->listen)
		return cli_usage_error("%s", "serve: --tls-cert: only with --listen HOST:PORT");
	return 0;
}

int cli_serve(int argc, char **argv)
{
	struct serve_args a = {0};
	struct fk_err err = {0};
	struct daemon *d = NULL;
	struct api *api = NULL;
	char socket_buf[PATH_MAX], *token = NULL;
	int ret, adopted = 0, sig, status = CLI_EXIT_NOT_OK;
	sigset_t set;

	ret = parse_args(argc, argv, &a);
	if (ret)
		return ret;
	if (!a.socket) {
		if (snprintf(socket_buf, sizeof(socket_buf), "%s/forkd.sock", a.state_dir) >=
		    (int)sizeof(socket_buf))
			return cli_usage_error("serve: --state-dir %s: too long", a.state_dir);
		a.socket = socket_buf;
	}
	if (a.token_file && read_token(a.token_file, &token) < 0)
		return CLI_EXIT_USAGE;
	if (mkdir(a.state_dir, 0755) < 0 && errno != EEXIST) {
		fprintf(stderr, "forkd serve: --state-dir %s: %s\n", a.state_dir, strerror(errno));
		goto out;
	}
	/* Blocked before any thread starts, so only sigwait below sees them. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &set, NULL);

	/* A jail needs root (forkd-vmm refuses --jail otherwise): say so rather than fail every VM.
	 */
	if (!a.no_jail && geteuid() != 0) {
		if (a.jail_uids) {
			status =
			    cli_usage_error("serve: --jail-uids: jailing VMs needs root (uid %u)",
					    (unsigned)geteuid());
			goto out;
		}
		fprintf(stderr, "forkd serve: not root: VMs are not jailed (as with --no-jail)\n");
		a.no_jail = true;
	}
	struct daemon_config dcfg = {.state_dir = a.state_dir,
				     .vmm_path = a.vmm,
				     .jail = !a.no_jail,
				     .jail_uid_first = a.uid_first,
				     .jail_uid_count = a.uid_count};
	struct timespec t0, t1;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	ret = daemon_open(&dcfg, &d, &adopted, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	if (ret < 0) {
		fprintf(stderr, "forkd serve: %s\n", err.msg);
		goto out;
	}
	struct api_config acfg = {
	    .socket_path = a.socket,
	    .listen = a.listen,
	    .token = token,
	    .tls_cert_path = a.tls_cert,
	    .tls_key_path = a.tls_key,
	    .audit_log_path = a.audit_log,
	};
	ret = api_start(d, &acfg, &api, &err);
	if (ret < 0) {
		fprintf(stderr, "forkd serve: %s\n", err.msg);
		goto out;
	}
	/* open_ms: the registry, re-adoption and the sweeps, before the API listens */
	json_t *ready = json_pack(
	    "{s:b,s:s,s:i,s:b,s:i,s:I}", "ready", 1, "socket", a.socket, "tcp_port",
	    api_tcp_port(api), "tls", a.tls_cert != NULL, "adopted", adopted, "open_ms",
	    (json_int_t)((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000));
	char *line = ready ? json_dumps(ready, JSON_COMPACT) : NULL;
	printf("%s\n", line ? line : "{\"ready\":true}");
	fflush(stdout);
	free(line);
	json_decref(ready);
	for (;;) {
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			if (api_reopen_audit(api, &err) < 0)
				fprintf(stderr, "forkd serve: SIGHUP: %s\n", err.msg);
			continue;
		}
		fprintf(stderr, "forkd serve: %s: stopping (the VMs keep running)\n",
			strsignal(sig));
		break;
	}
	status = 0;
out:
	api_stop(api);
	if (d)
		daemon_close(d);
	if (token) {
		explicit_bzero(token, strlen(token));
		free(token);
	}
	return status;
}
