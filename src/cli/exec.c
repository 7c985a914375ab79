/* SPDX-License-Identifier: MIT */
/*
 * `forkd exec`, `forkd cp` and `forkd agent`: a VM's guest agent through its
 * hybrid-vsock socket (src/agent/agent_client.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "cli/cli.h"
#include "cli/daemon_client.h"

#define CONNECT_TIMEOUT_MS 10000
/* Exit statuses of `forkd exec` when the command did not run (docker's convention). */
#define EXEC_EXIT_ERROR	    125
#define EXEC_EXIT_NOEXEC    126
#define EXEC_EXIT_NOTFOUND  127
#define EXEC_EXIT_TIMED_OUT 124

static int parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

int cli_exec_env(json_t *env, const char *value, int *status)
{
	const char *eq = strchr(value, '=');
	char *name;

	if (!eq || eq == value) {
		*status = cli_usage_error("exec --env '%s': expected NAME=VALUE", value);
		return -EINVAL;
	}
	name = strndup(value, (size_t)(eq - value));
	json_object_set_new(env, name ? name : "", json_string(eq + 1));
	free(name);
	return 0;
}

int cli_exec_command(json_t *req, json_t *args, json_t *env, int argc, char **argv, int i,
		     int *status)
{
	if (i + 1 >= argc) {
		*status = cli_usage_error("%s", "exec: expected -- and a command after the VM");
		return -EINVAL;
	}
	for (i++; i < argc; i++)
		json_array_append_new(args, json_string(argv[i]));
	json_object_set(req, "argv", args);
	if (json_object_size(env))
		json_object_set(req, "env", env);
	return 0;
}

int cli_cp_open_source(const char *src, struct stat *st)
{
	int fd = open(src, O_RDONLY | O_CLOEXEC);

	if (fd < 0 || fstat(fd, st) < 0) {
		fprintf(stderr, "forkd cp: %s: %s\n", src, strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st->st_mode)) {
		fprintf(stderr, "forkd cp: %s: expected a regular file\n", src);
		goto fail;
	}
	return fd;
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

int cli_cp_open_temp(const char *dst, char *tmp, size_t size)
{
	int fd;

	if (snprintf(tmp, size, "%s.forkd-XXXXXX", dst) >= (int)size) {
		fprintf(stderr, "forkd cp: %s: path too long\n", dst);
		return -1;
	}
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		fprintf(stderr, "forkd cp: %s: %s\n", dst, strerror(errno));
	return fd;
}

/* Through the daemon: the VM is a VM id (vm-xxxxxxxx, not a file here), or --daemon/--url. */
static bool exec_via_daemon(int argc, char **argv)
{
	static const char *const with_value[] = {"--env",    "-e",    "--cwd",
						 "--uid",    "--gid", "--timeout",
						 "--daemon", "--url", "--token-file"};

	for (int i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
		bool takes = false;

		if (strcmp(argv[i], "--daemon") == 0 || strcmp(argv[i], "--url") == 0 ||
		    strncmp(argv[i], "--daemon=", 9) == 0 || strncmp(argv[i], "--url=", 6) == 0)
			return true;
		for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
			takes |= strcmp(argv[i], with_value[k]) == 0;
		if (takes)
			i++;
		else if (argv[i][0] != '-')
			return dc_is_vm_id(argv[i]) && access(argv[i], F_OK) < 0;
	}
	return false;
}

/* `forkd exec VM [options] -- CMD [ARG...]` */
int cli_exec(int argc, char **argv)
{
	char uds[4200];
	struct fk_err err = {0};
	struct fk_exec_result res;
	struct fk_exec_io io = {.in_fd = -1, .out_fd = STDOUT_FILENO, .err_fd = STDERR_FILENO};
	const char *vm = NULL;
	json_t *req = json_object(), *env = json_object(), *args = json_array();
	int i, ret, status = EXEC_EXIT_ERROR;
	unsigned long v;

	if (exec_via_daemon(argc, argv)) {
		status = cli_exec_daemon(argc, argv);
		goto out;
	}
	if (!req || !env || !args) {
		fputs("forkd exec: out of memory\n", stderr);
		goto out;
	}
	for (i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *arg = argv[i];
		const char *value = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(arg, "-i") == 0 || strcmp(arg, "--stdin") == 0) {
			io.in_fd = STDIN_FILENO;
			continue;
		}
		if (arg[0] != '-') {
			if (vm) {
				status =
				    cli_usage_error("exec: unexpected argument '%s' (the command "
						    "goes after --)",
						    arg);
				goto out;
			}
			vm = arg;
			continue;
		}
		if (!value || strcmp(value, "--") == 0) {
			status = cli_usage_error("exec %s: expected a value after it", arg);
			goto out;
		}
		i++;
		if (strcmp(arg, "--env") == 0 || strcmp(arg, "-e") == 0) {
			if (cli_exec_env(env, value, &status) < 0)
				goto out;
		} else if (strcmp(arg, "--cwd") == 0) {
			json_object_set_new(req, "cwd", json_string(value));
		} else if (strcmp(arg, "--uid") == 0 || strcmp(arg, "--gid") == 0) {
			if (parse_uint(value, 0xFFFFFFFEul, &v) < 0) {
				status =
				    cli_usage_error("exec %s '%s': expected a number", arg, value);
				goto out;
			}
			json_object_set_new(req, arg + 2, json_integer((json_int_t)v));
		} else if (strcmp(arg, "--timeout") == 0) {
			if (parse_uint(value, 24ul * 3600 * 1000, &v) < 0) {
				status = cli_usage_error(
				    "exec --timeout '%s': expected milliseconds, 0 to 86400000",
				    value);
				goto out;
			}
			json_object_set_new(req, "timeout_ms", json_integer((json_int_t)v));
		} else {
			status = cli_usage_error("exec: unknown option '%s'", arg);
			goto out;
		}
	}
	if (!vm) {
		status =
		    cli_usage_error("%s", "exec: expected a VM (its directory or vsock socket)");
		goto out;
	}
	if (cli_exec_command(req, args, env, argc, argv, i, &status) < 0)
		goto out;
	if (fk_agent_socket_path(vm, uds, sizeof(uds), &err) < 0) {
		fprintf(stderr, "forkd exec: %s\n", err.msg);
		goto out;
	}
	ret = fk_agent_exec(uds, req, &io, CONNECT_TIMEOUT_MS, &res, &err);
	if (ret < 0) {
		fprintf(stderr, "forkd exec: %s\n", err.msg);
		status = ret == -ENOENT			     ? EXEC_EXIT_NOTFOUND
			 : ret == -EACCES || ret == -ENOEXEC ? EXEC_EXIT_NOEXEC
							     : EXEC_EXIT_ERROR;
		goto out;
	}
	if (res.timed_out) {
		fprintf(stderr, "forkd exec: the command timed out and was killed\n");
		status = EXEC_EXIT_TIMED_OUT;
	} else if (res.signal) {
		status = 128 + res.signal;
	} else {
		status = res.exit_code;
	}
out:
	json_decref(req);
	json_decref(env);
	json_decref(args);
	return status;
}

/* "VM:/path" -> vm and path; returns false for a host path. */
static bool split_guest_path(char *spec, char **vm, char **path)
{
	for (char *c = strchr(spec, ':'); c; c = strchr(c + 1, ':'))
		if (c[1] == '/' && c != spec) {
			*c = '\0';
			*vm = spec;
			*path = c + 1;
			return true;
		}
	return false;
}

/* `forkd cp SRC DST`, exactly one of them VM:/path. */
int cli_cp(int argc, char **argv)
{
	char uds[4200], tmp[PATH_MAX + 16];
	char *src = NULL, *dst = NULL, *vm, *guest_path;
	struct fk_err err = {0};
	uint64_t bytes = 0;
	unsigned mode = 0644;
	bool upload;
	int fd = -1, status = CLI_EXIT_NOT_OK, ret;
	struct stat st;

	struct dc_opts o = {0};

	status = dc_take_options(&argc, argv, &o);
	if (status)
		return status;
	status = CLI_EXIT_NOT_OK;
	if (argc != 2)
		return cli_usage_error("%s", "cp: expected SRC and DST, one of them VM:/path");
	src = strdup(argv[0]);
	dst = strdup(argv[1]);
	if (!src || !dst) {
		fputs("forkd cp: out of memory\n", stderr);
		goto out;
	}
	upload = split_guest_path(dst, &vm, &guest_path);
	if (upload == split_guest_path(src, &vm, &guest_path)) {
		status =
		    cli_usage_error("%s", "cp: expected exactly one of SRC and DST as VM:/path "
					  "(an absolute path in the guest)");
		goto out;
	}
	if (upload)
		split_guest_path(dst, &vm, &guest_path);
	if (o.socket || o.url || (dc_is_vm_id(vm) && access(vm, F_OK) < 0)) {
		status = cli_cp_daemon(&o, argv[0], argv[1], vm, guest_path, upload);
		goto out;
	}
	if (fk_agent_socket_path(vm, uds, sizeof(uds), &err) < 0) {
		fprintf(stderr, "forkd cp: %s\n", err.msg);
		goto out;
	}
	if (upload) {
		fd = cli_cp_open_source(src, &st);
		if (fd < 0)
			goto out;
		ret = fk_agent_put(uds, fd, guest_path, st.st_mode & 07777, CONNECT_TIMEOUT_MS,
				   &bytes, &err);
	} else {
		/* Into a temporary file beside DST, renamed once whole. */
		fd = cli_cp_open_temp(dst, tmp, sizeof(tmp));
		if (fd < 0)
			goto out;
		ret = fk_agent_get(uds, guest_path, fd, CONNECT_TIMEOUT_MS, &bytes, &mode, &err);
		if (ret == 0 && (fchmod(fd, mode) < 0 || fsync(fd) < 0 || rename(tmp, dst) < 0))
			ret = fk_fail_errno(&err, errno, "%s", dst);
		if (ret < 0)
			unlink(tmp);
	}
	if (ret < 0) {
		fprintf(stderr, "forkd cp: %s\n", err.msg);
		goto out;
	}
	printf("{\"bytes\":%llu}\n", (unsigned long long)bytes);
	status = 0;
out:
	if (fd >= 0)
		close(fd);
	free(src);
	free(dst);
	return status;
}

/* `forkd agent VM ping|stat PATH|ls PATH|rm [-r] PATH|shutdown [poweroff|reboot]` */
int cli_agent(int argc, char **argv)
{
	char uds[4200];
	struct fk_err err = {0};
	json_t *req = NULL, *resp = NULL;
	const char *op;
	int status = CLI_EXIT_NOT_OK;

	if (argc < 2)
		return cli_usage_error("%s", "agent: expected a VM and an operation (ping, stat, "
					     "ls, rm, shutdown)");
	op = argv[1];
	if (strcmp(op, "ping") == 0 && argc == 2) {
		req = json_pack("{s:s}", "op", "ping");
	} else if ((strcmp(op, "stat") == 0 || strcmp(op, "ls") == 0) && argc == 3) {
		req = json_pack("{s:s,s:s}", "op", op, "path", argv[2]);
	} else if (strcmp(op, "rm") == 0 && (argc == 3 || (argc == 4 && !strcmp(argv[2], "-r")))) {
		req = json_pack("{s:s,s:s,s:b}", "op", "rm", "path", argv[argc - 1], "recursive",
				argc == 4);
	} else if (strcmp(op, "shutdown") == 0 && argc <= 3) {
		req = json_pack("{s:s,s:s}", "op", "shutdown", "action",
				argc == 3 ? argv[2] : "poweroff");
	} else {
		return cli_usage_error("agent '%s' with %d argument(s): expected ping, stat PATH, "
				       "ls PATH, rm [-r] PATH or shutdown [poweroff|reboot]",
				       op, argc - 2);
	}
	if (!req) {
		fputs("forkd agent: arguments are not valid UTF-8\n", stderr);
		return CLI_EXIT_USAGE;
	}
	if (fk_agent_socket_path(argv[0], uds, sizeof(uds), &err) < 0 ||
	    fk_agent_call(uds, req, &resp, CONNECT_TIMEOUT_MS, &err) < 0) {
		fprintf(stderr, "forkd agent %s: %s\n", op, err.msg);
		goto out;
	}
	json_dumpf(resp, stdout, JSON_INDENT(2));
	putchar('\n');
	status = fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK;
out:
	json_decref(req);
	json_decref(resp);
	return status;
}
