/* SPDX-License-Identifier: MIT */
/*
 * The `forkd` commands served by the daemon (`forkd serve`, docs/rest-api.md):
 * vm create|ls|rm, branch, snapshot, spawn TAG, snapshots, tree, and exec and
 * cp addressed to a VM id. Human output by default (tables, the lineage as a
 * tree); --json prints the daemon's JSON. Progress of long operations goes to
 * stderr. Exit status: 0 ok, 1 the daemon refused (its message is printed), 2
 * bad usage or no daemon to ask; exec exits with the command's status.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/daemon_client.h"
#include "core/config.h"
#include "jail/cgroup.h"

#define MAX_CHILDREN 64 /* n of one branch or spawn (docs/rest-api.md) */
/* The cgroup limits' ranges (docs/rest-api.md), as the daemon checks them. */
#define MEMORY_MAX_MIB_MIN 16
#define MEMORY_MAX_MIB_MAX (1L << 20)
#define PIDS_MAX_MAX	   4194304
#define STDIN_MAX	   (64u << 20)
/* `forkd exec` when the command did not run (as the direct path: exec.c). */
#define EXEC_EXIT_ERROR	    125
#define EXEC_EXIT_TIMED_OUT 124

static int print_json(const json_t *j)
{
	json_dumpf(j, stdout, JSON_INDENT(2));
	putchar('\n');
	return fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK;
}

/* One request; on failure prints "forkd CTX: why" and returns the exit status, else 0. */
static int call(const struct dc_opts *o, const char *ctx, const char *method, const char *path,
		json_t *body, const char *progress, struct dc_response *res)
{
	struct dc_request r = {
	    .method = method, .path = path, .body = body, .upload_fd = -1, .progress = progress};
	struct fk_err err = {0};

	if (dc_request(o, &r, res, &err) < 0) {
		fprintf(stderr, "forkd %s: %s\n", ctx, err.msg);
		return dc_exit_status(res);
	}
	return 0;
}

static const char *str(const json_t *obj, const char *key)
{
	const char *s = json_string_value(json_object_get(obj, key));

	return s ? s : "";
}

/* "image py", "snapshot base", "kernel /boot/vmlinux" or "". */
static void vm_origin(const json_t *vm, char *buf, size_t len)
{
	if (*str(vm, "snapshot"))
		snprintf(buf, len, "snapshot %s", str(vm, "snapshot"));
	else if (*str(vm, "image"))
		snprintf(buf, len, "image %s", str(vm, "image"));
	else if (*str(vm, "kernel"))
		snprintf(buf, len, "kernel %s", str(vm, "kernel"));
	else
		buf[0] = '\0';
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

/* The value after a flag, or NULL after a usage message (*status set). */
static const char *flag_value(int argc, char **argv, int *i, const char *ctx, int *status)
{
	if (*i + 1 >= argc) {
		*status = cli_usage_error("%s %s: expected a value after it", ctx, argv[*i]);
		return NULL;
	}
	return argv[++*i];
}

/* An id or tag as a path segment. */
static char *path_of(const char *fmt, const char *name)
{
	char *esc = dc_escape(name), *path = NULL;

	if (esc && asprintf(&path, fmt, esc) < 0)
		path = NULL;
	free(esc);
	if (!path)
		fputs("forkd: out of memory\n", stderr);
	return path;
}

/* POSTs body to fmt with key as its path segment; body is freed here (NULL: json_pack ran out
 * of memory). */
static int post_keyed(const struct dc_opts *o, const char *ctx, const char *fmt, const char *key,
		      json_t *body, const char *progress, struct dc_response *res)
{
	char *path = path_of(fmt, key);
	int status = CLI_EXIT_NOT_OK;

	if (body && path)
		status = call(o, ctx, "POST", path, body, progress, res);
	json_decref(body);
	free(path);
	return status;
}

/* Frees the response; the exit status is the first failure, printing or flushing stdout. */
static int print_done(struct dc_response *res, int status)
{
	json_decref(res->json);
	return status ? status : (fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK);
}

/* ---- cgroup limits of vm create and spawn TAG ---- */

/* What --memory-max, --cpu-max and --pids-max asked for; 0 and NULL: not asked. */
struct vm_limits {
	long memory_max_mib;
	const char *cpu_max;
	long pids_max;
};

#define LIMIT_FLAGS "--memory-max SIZE, --cpu-max QUOTA[/PERIOD], --pids-max N"

static bool is_limit_flag(const char *arg)
{
	return strcmp(arg, "--memory-max") == 0 || strcmp(arg, "--cpu-max") == 0 ||
	       strcmp(arg, "--pids-max") == 0;
}

/* Checks the value of the limit flag argv[*i] (taken from argv[*i + 1]) into lim; 0, or a usage
 * error's exit status naming ctx, the flag, the value and what was expected. */
static int take_limit(int argc, char **argv, int *i, const char *ctx, struct vm_limits *lim)
{
	const char *flag = argv[*i], *v;
	struct fk_err err = {0};
	uint64_t bytes, quota, period;
	int status = 0;

	v = flag_value(argc, argv, i, ctx, &status);
	if (!v)
		return status;
	if (strcmp(flag, "--memory-max") == 0) {
		/* forkd-vmm's sizes (256M, 1G); the API counts whole MiB. */
		if (parse_size(v, &bytes) < 0 || bytes % (1u << 20) ||
		    bytes >> 20 < MEMORY_MAX_MIB_MIN || bytes >> 20 > MEMORY_MAX_MIB_MAX)
			return cli_usage_error("%s --memory-max '%s': expected a whole number of "
					       "MiB from 16M to 1T, such as 256M or 1G",
					       ctx, v);
		lim->memory_max_mib = (long)(bytes >> 20);
	} else if (strcmp(flag, "--cpu-max") == 0) {
		if (cgroup_parse_cpu_max(v, &quota, &period, &err) < 0)
			return cli_usage_error("%s %s", ctx, err.msg);
		lim->cpu_max = v;
	} else if (parse_long(v, 1, PIDS_MAX_MAX, &lim->pids_max) < 0) {
		return cli_usage_error("%s --pids-max '%s': expected a number of tasks (threads of "
				       "the VM and its BRANCH children), 1 to %d",
				       ctx, v, PIDS_MAX_MAX);
	}
	return 0;
}

/* Adds the asked limits to a create or spawn body. */
static void set_limits(json_t *body, const struct vm_limits *lim)
{
	if (lim->memory_max_mib)
		json_object_set_new(body, "memory_max_mib", json_integer(lim->memory_max_mib));
	if (lim->cpu_max)
		json_object_set_new(body, "cpu_max", json_string(lim->cpu_max));
	if (lim->pids_max)
		json_object_set_new(body, "pids_max", json_integer(lim->pids_max));
}

/* A VM's "limits" as "mem 256M, cpu 50000/100000, pids 64" (what is set of it); "" when the VM
 * has no cgroup (limits null or missing). */
static void vm_limits_text(const json_t *vm, char *buf, size_t len)
{
	const json_t *lim = json_object_get(vm, "limits");
	const json_t *mem = json_object_get(lim, "memory_max_mib");
	const json_t *pids = json_object_get(lim, "pids_max");
	const char *cpu = json_string_value(json_object_get(lim, "cpu_max"));
	size_t n = 0;

	buf[0] = '\0';
	if (!json_is_object(lim))
		return;
	if (json_is_integer(mem)) {
		json_int_t mib = json_integer_value(mem);

		/* 1024M reads better as 1G */
		n += (size_t)snprintf(buf + n, len - n, "mem %lld%s",
				      (long long)(mib % 1024 == 0 ? mib / 1024 : mib),
				      mib % 1024 == 0 ? "G" : "M");
	}
	if (cpu && n < len)
		n += (size_t)snprintf(buf + n, len - n, "%scpu %s", n ? ", " : "", cpu);
	if (json_is_integer(pids) && n < len)
		n += (size_t)snprintf(buf + n, len - n, "%spids %lld", n ? ", " : "",
				      (long long)json_integer_value(pids));
	if (n == 0) /* a cgroup without limits of its own: say where it is */
		snprintf(buf, len, "cgroup %s", str(lim, "cgroup"));
}

/* "; limits: mem 256M, ..." for a progress line, or "" (into buf). */
static const char *limits_suffix(const json_t *vm, char *buf, size_t len)
{
	char text[PATH_MAX + 64];

	vm_limits_text(vm, text, sizeof(text));
	if (text[0])
		snprintf(buf, len, "; limits: %s", text);
	else
		buf[0] = '\0';
	return buf;
}

/* ---- vm create | ls | rm ---- */

static int vm_create(const struct dc_opts *o, int argc, char **argv)
{
	const char *image = NULL, *kernel = NULL, *initrd = NULL, *append = NULL, *tag = NULL,
		   *net = NULL;
	long mem = -1, cpus = -1;
	struct vm_limits limits = {0};
	struct dc_response res;
	json_t *body = NULL;
	bool no_vsock = false;
	char suffix[PATH_MAX + 80];
	int status = 0;

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *v;

		/* An image VM without the vsock device: no guest agent is waited for (and
		 * none answers exec or files). */
		if (strcmp(arg, "--no-vsock") == 0) {
			no_vsock = true;
			continue;
		}
		if (is_limit_flag(arg)) {
			status = take_limit(argc, argv, &i, "vm create", &limits);
			if (status)
				return status;
			continue;
		}
		if (strcmp(arg, "--image") && strcmp(arg, "--kernel") && strcmp(arg, "--initrd") &&
		    strcmp(arg, "--append") && strcmp(arg, "--mem") && strcmp(arg, "--cpus") &&
		    strcmp(arg, "--tag") && strcmp(arg, "--net"))
			return cli_usage_error(
			    "vm create: %s '%s' (expected --image NAME or "
			    "--kernel PATH, and --initrd, --append, --mem, "
			    "--cpus, --tag, --net, --no-vsock, " LIMIT_FLAGS ")",
			    arg[0] == '-' ? "unknown option" : "unexpected argument", arg);
		v = flag_value(argc, argv, &i, "vm create", &status);
		if (!v)
			return status;
		if (strcmp(arg, "--image") == 0)
			image = v;
		else if (strcmp(arg, "--kernel") == 0)
			kernel = v;
		else if (strcmp(arg, "--initrd") == 0)
			initrd = v;
		else if (strcmp(arg, "--append") == 0)
			append = v;
		else if (strcmp(arg, "--tag") == 0)
			tag = v;
		else if (strcmp(arg, "--net") == 0)
			net = v;
		else if (strcmp(arg, "--mem") == 0 && parse_long(v, 16, 1 << 20, &mem) < 0)
			return cli_usage_error("vm create --mem '%s': expected MiB, 16 to 1048576",
					       v);
		else if (strcmp(arg, "--cpus") == 0 && parse_long(v, 1, 255, &cpus) < 0)
			return cli_usage_error("vm create --cpus '%s': expected 1 to 255", v);
	}
	if (!image == !kernel)
		return cli_usage_error("%s", "vm create: expected exactly one of --image NAME and "
					     "--kernel PATH");
	if (image && (initrd || append))
		return cli_usage_error("%s", "vm create: --initrd and --append go with --kernel, "
					     "not --image");
	if (tag && !dc_valid_tag(tag))
		return cli_usage_error("vm create --tag '%s': expected 1 to 64 of A-Z a-z 0-9 . _ "
				       "-, not starting with . or -",
				       tag);
	if (net && strcmp(net, "none") && strcmp(net, "host") && strcmp(net, "nat"))
		return cli_usage_error("vm create --net '%s': expected none, host or nat", net);
	body = json_object();
	if (!body)
		return CLI_EXIT_NOT_OK;
	if (image)
		json_object_set_new(body, "image", json_string(image));
	if (kernel) {
		/* The daemon runs the VMM elsewhere: it needs an absolute path. */
		char *abs = realpath(kernel, NULL);

		json_object_set_new(body, "kernel", json_string(abs ? abs : kernel));
		free(abs);
	}
	if (initrd) {
		char *abs = realpath(initrd, NULL);

		json_object_set_new(body, "initrd", json_string(abs ? abs : initrd));
		free(abs);
	}
	if (append)
		json_object_set_new(body, "append", json_string(append));
	if (no_vsock)
		json_object_set_new(body, "vsock", json_false());
	if (mem > 0)
		json_object_set_new(body, "mem_mib", json_integer(mem));
	if (cpus > 0)
		json_object_set_new(body, "cpus", json_integer(cpus));
	if (tag)
		json_object_set_new(body, "tag", json_string(tag));
	if (net)
		json_object_set_new(body, "net", json_string(net));
	set_limits(body, &limits);
	status = call(o, "vm create", "POST", "/v1/vms", body, "creating VM", &res);
	json_decref(body);
	if (status)
		return status;
	dc_progress_done("created %s (%s, pid %lld) in %.2f s%s", str(res.json, "id"),
			 str(res.json, "state"),
			 (long long)json_integer_value(json_object_get(res.json, "pid")),
			 res.seconds, limits_suffix(res.json, suffix, sizeof(suffix)));
	if (o->json)
		status = print_json(res.json);
	else
		printf("%s\n", str(res.json, "id"));
	return print_done(&res, status);
}

static int vm_ls(const struct dc_opts *o, int argc, char **argv)
{
	struct dc_response res;
	size_t i;
	json_t *vm;
	int status;

	if (argc > 0)
		return cli_usage_error("vm ls: unexpected argument '%s'", argv[0]);
	status = call(o, "vm ls", "GET", "/v1/vms", NULL, NULL, &res);
	if (status)
		return status;
	if (o->json)
		return print_done(&res, print_json(res.json));
	printf("%-11s  %-8s  %7s  %6s  %4s  %-11s  %-16s  %-15s  %-24s  %s\n", "ID", "STATE", "PID",
	       "MEM", "CPUS", "PARENT", "TAG", "NET", "FROM", "LIMITS");
	json_array_foreach(json_object_get(res.json, "vms"), i, vm)
	{
		char origin[PATH_MAX + 16], pid[24] = "-", mem[24] = "-", limits[PATH_MAX + 64];

		vm_origin(vm, origin, sizeof(origin));
		vm_limits_text(vm, limits, sizeof(limits));
		if (json_is_integer(json_object_get(vm, "pid")))
			snprintf(pid, sizeof(pid), "%lld",
				 (long long)json_integer_value(json_object_get(vm, "pid")));
		if (json_is_integer(json_object_get(vm, "mem_mib")))
			snprintf(mem, sizeof(mem), "%lldM",
				 (long long)json_integer_value(json_object_get(vm, "mem_mib")));
		/* the host's address of the VM, which is what one connects to; else the policy */
		printf("%-11s  %-8s  %7s  %6s  %4lld  %-11s  %-16s  %-15s  %-24s  %s\n",
		       str(vm, "id"), str(vm, "state"), pid, mem,
		       (long long)json_integer_value(json_object_get(vm, "cpus")),
		       *str(vm, "parent") ? str(vm, "parent") : "-",
		       *str(vm, "tag") ? str(vm, "tag") : "-",
		       *str(vm, "net_host_addr") ? str(vm, "net_host_addr")
		       : *str(vm, "net")	 ? str(vm, "net")
						 : "-",
		       origin[0] ? origin : "-", limits[0] ? limits : "-");
	}
	return print_done(&res, 0);
}

/* Prints {"removed":[...]} one per line (or as JSON). */
static int print_removed(const struct dc_opts *o, json_t *j)
{
	size_t i;
	json_t *v;

	if (o->json)
		return print_json(j);
	v = json_object_get(j, "removed");
	for (i = 0; i < json_array_size(v); i++)
		printf("removed %s\n", json_string_value(json_array_get(v, i)));
	return fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK;
}

/* `rm NAME [--cascade]` of VMs and of snapshots. */
static int remove_one(const struct dc_opts *o, int argc, char **argv, const char *ctx,
		      const char *path_fmt, bool is_vm)
{
	const char *name = NULL;
	bool cascade = false;
	struct dc_response res;
	char *path, *full = NULL;
	int status;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--cascade") == 0)
			cascade = true;
		else if (argv[i][0] == '-')
			return cli_usage_error("%s: unknown option '%s' (expected --cascade)", ctx,
					       argv[i]);
		else if (name)
			return cli_usage_error("%s: unexpected argument '%s'", ctx, argv[i]);
		else
			name = argv[i];
	}
	if (!name)
		return cli_usage_error("%s: expected %s", ctx,
				       is_vm ? "a VM id" : "a snapshot tag");
	if (is_vm ? !dc_is_vm_id(name) : !dc_valid_tag(name))
		return cli_usage_error("%s '%s': expected %s", ctx, name,
				       is_vm ? "a VM id such as vm-1a2b3c4d"
					     : "a snapshot tag (A-Z a-z 0-9 . _ -)");
	path = path_of(path_fmt, name);
	if (!path || asprintf(&full, "%s%s", path, cascade ? "?cascade=true" : "") < 0) {
		free(path);
		return CLI_EXIT_NOT_OK;
	}
	status = call(o, ctx, "DELETE", full, NULL, NULL, &res);
	free(path);
	free(full);
	if (status && res.status == 409 && !cascade)
		fprintf(stderr, "forkd %s: --cascade removes %s and what was made from it too\n",
			ctx, name);
	if (status)
		return status;
	status = print_removed(o, res.json);
	json_decref(res.json);
	return status;
}

int cli_vm_daemon(int argc, char **argv)
{
	struct dc_opts o = {0};
	int status = dc_take_options(&argc, argv, &o);

	if (status)
		return status;
	if (strcmp(argv[0], "create") == 0)
		return vm_create(&o, argc - 1, argv + 1);
	if (strcmp(argv[0], "ls") == 0)
		return vm_ls(&o, argc - 1, argv + 1);
	return remove_one(&o, argc - 1, argv + 1, "vm rm", "/v1/vms/%s", true);
}

/* ---- branch, snapshot, spawn ---- */

static void print_vm_ids(const json_t *vms)
{
	for (size_t i = 0; i < json_array_size(vms); i++)
		printf("%s\n", str(json_array_get(vms, i), "id"));
}

static double pause_ms(const json_t *obj)
{
	return (double)json_integer_value(json_object_get(obj, "pause_us")) / 1000.0;
}

int cli_branch(int argc, char **argv)
{
	struct dc_opts o = {0};
	const char *id = NULL, *tag = NULL;
	long n = -1;
	bool persist = false, wait = true;
	struct dc_response res;
	json_t *body, *snap;
	int status = dc_take_options(&argc, argv, &o);

	if (status)
		return status;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i], *v;

		if (strcmp(arg, "--persist") == 0) {
			persist = true;
		} else if (strcmp(arg, "--no-wait") == 0) {
			wait = false;
		} else if (strcmp(arg, "-n") == 0 || strcmp(arg, "--tag") == 0) {
			v = flag_value(argc, argv, &i, "branch", &status);
			if (!v)
				return status;
			if (arg[1] == '-')
				tag = v;
			else if (parse_long(v, 0, MAX_CHILDREN, &n) < 0)
				return cli_usage_error("branch -n '%s': expected a number of "
						       "children, 1 to %d (0 with --persist)",
						       v, MAX_CHILDREN);
		} else if (arg[0] == '-') {
			return cli_usage_error("branch: unknown option '%s' (expected -n, "
					       "--persist, --tag, --no-wait)",
					       arg);
		} else if (id) {
			return cli_usage_error("branch: unexpected argument '%s'", arg);
		} else {
			id = arg;
		}
	}
	if (!id || !dc_is_vm_id(id))
		return cli_usage_error("branch '%s': expected a VM id such as vm-1a2b3c4d",
				       id ? id : "");
	if (n < 0)
		n = 1;
	if (n == 0 && !persist)
		return cli_usage_error("%s", "branch -n 0: only with --persist --tag T");
	if (persist != (tag != NULL))
		return cli_usage_error("%s", "branch: --persist and --tag T go together (the "
					     "branch instant is kept as snapshot T)");
	if (tag && !dc_valid_tag(tag))
		return cli_usage_error("branch --tag '%s': expected 1 to 64 of A-Z a-z 0-9 . _ -, "
				       "not starting with . or -",
				       tag);
	body = json_pack("{s:I,s:b,s:b}", "n", (json_int_t)n, "persist", persist, "wait", wait);
	if (body && tag)
		json_object_set_new(body, "tag", json_string(tag));
	status = post_keyed(&o, "branch", "/v1/vms/%s/branch", id, body, "branching", &res);
	if (status)
		return status;
	snap = json_object_get(res.json, "snapshot");
	dc_progress_done("branched %s into %zu (zygote %s, paused %.1f ms) in %.2f s%s%s%s%s", id,
			 json_array_size(json_object_get(res.json, "children")),
			 str(res.json, "zygote"), pause_ms(res.json), res.seconds,
			 snap ? "; snapshot " : "", snap ? str(snap, "tag") : "", snap ? " " : "",
			 snap ? str(snap, "state") : "");
	if (o.json)
		status = print_json(res.json);
	else
		print_vm_ids(json_object_get(res.json, "children"));
	return print_done(&res, status);
}

static void print_snapshot_row(const json_t *s)
{
	char pause[32] = "-";

	if (json_is_integer(json_object_get(s, "pause_us")))
		snprintf(pause, sizeof(pause), "%.1f ms", pause_ms(s));
	printf("%-20s  %-7s  %-11s  %9s  %-24s  %s\n", str(s, "tag"), str(s, "state"),
	       *str(s, "parent_vm") ? str(s, "parent_vm") : "-", pause, str(s, "created"),
	       str(s, "path"));
}

static void print_snapshot_header(void)
{
	printf("%-20s  %-7s  %-11s  %9s  %-24s  %s\n", "TAG", "STATE", "PARENT", "PAUSE", "CREATED",
	       "PATH");
}

int cli_snapshot(int argc, char **argv)
{
	struct dc_opts o = {0};
	const char *id = NULL, *tag = NULL;
	struct dc_response res;
	json_t *body;
	int status = dc_take_options(&argc, argv, &o);

	if (status)
		return status;
	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--tag") == 0) {
			tag = flag_value(argc, argv, &i, "snapshot", &status);
			if (!tag)
				return status;
		} else if (argv[i][0] == '-') {
			return cli_usage_error("snapshot: unknown option '%s' (expected --tag)",
					       argv[i]);
		} else if (id) {
			return cli_usage_error("snapshot: unexpected argument '%s'", argv[i]);
		} else {
			id = argv[i];
		}
	}
	if (!id || !dc_is_vm_id(id))
		return cli_usage_error("snapshot '%s': expected a VM id such as vm-1a2b3c4d",
				       id ? id : "");
	if (!tag || !dc_valid_tag(tag))
		return cli_usage_error("snapshot --tag '%s': expected a tag: 1 to 64 of A-Z a-z "
				       "0-9 . _ -, not starting with . or -",
				       tag ? tag : "");
	body = json_pack("{s:s}", "tag", tag);
	status =
	    post_keyed(&o, "snapshot", "/v1/vms/%s/snapshot", id, body, "writing snapshot", &res);
	if (status)
		return status;
	dc_progress_done("snapshot %s of %s %s (paused %.1f ms) in %.2f s", tag, id,
			 str(res.json, "state"), pause_ms(res.json), res.seconds);
	if (o.json) {
		status = print_json(res.json);
	} else {
		print_snapshot_header();
		print_snapshot_row(res.json);
	}
	return print_done(&res, status);
}

/* `forkd spawn TAG -n N`: argv still holds the shared daemon options. */
int cli_spawn_daemon(int argc, char **argv)
{
	struct dc_opts o = {0};
	const char *tag = NULL;
	long n = -1;
	struct vm_limits limits = {0};
	struct dc_response res;
	json_t *body, *vms;
	char suffix[PATH_MAX + 80];
	int status = dc_take_options(&argc, argv, &o);

	if (status)
		return status;
	for (int i = 0; i < argc; i++) {
		const char *v;

		if (is_limit_flag(argv[i])) {
			status = take_limit(argc, argv, &i, "spawn", &limits);
			if (status)
				return status;
		} else if (strcmp(argv[i], "-n") == 0) {
			v = flag_value(argc, argv, &i, "spawn", &status);
			if (!v)
				return status;
			if (parse_long(v, 1, MAX_CHILDREN, &n) < 0)
				return cli_usage_error("spawn -n '%s': expected a number of VMs, "
						       "1 to %d",
						       v, MAX_CHILDREN);
		} else if (argv[i][0] == '-') {
			return cli_usage_error(
			    "spawn TAG: unknown option '%s' (expected -n N, " LIMIT_FLAGS
			    "; --out DIR spawns from a snapshot directory here)",
			    argv[i]);
		} else if (tag) {
			return cli_usage_error("spawn: unexpected argument '%s'", argv[i]);
		} else {
			tag = argv[i];
		}
	}
	if (!tag || !dc_valid_tag(tag))
		return cli_usage_error("spawn '%s': expected a snapshot tag of the daemon, or an "
				       "existing snapshot directory with --out DIR",
				       tag ? tag : "");
	if (n < 0)
		return cli_usage_error("%s", "spawn: expected -n N");
	body = json_pack("{s:I}", "n", (json_int_t)n);
	if (body)
		set_limits(body, &limits);
	status = post_keyed(&o, "spawn", "/v1/snapshots/%s/spawn", tag, body, "spawning", &res);
	if (status)
		return status;
	/* each VM of a spawn has the same limits (in a cgroup of its own): the first says them */
	vms = json_object_get(res.json, "vms");
	dc_progress_done("spawned %zu VMs from %s in %.2f s%s", json_array_size(vms), tag,
			 res.seconds,
			 limits_suffix(json_array_get(vms, 0), suffix, sizeof(suffix)));
	if (o.json)
		status = print_json(res.json);
	else
		print_vm_ids(json_object_get(res.json, "vms"));
	return print_done(&res, status);
}

/* `forkd snapshots [ls | rm TAG [--cascade]]` */
int cli_snapshots(int argc, char **argv)
{
	struct dc_opts o = {0};
	struct dc_response res;
	size_t i;
	json_t *s;
	int status = dc_take_options(&argc, argv, &o);

	if (status)
		return status;
	if (argc > 0 && strcmp(argv[0], "rm") == 0)
		return remove_one(&o, argc - 1, argv + 1, "snapshots rm", "/v1/snapshots/%s",
				  false);
	if (argc > 0 && strcmp(argv[0], "ls") != 0)
		return cli_usage_error("snapshots '%s': expected ls or rm TAG [--cascade]",
				       argv[0]);
	if (argc > 1)
		return cli_usage_error("snapshots ls: unexpected argument '%s'", argv[1]);
	status = call(&o, "snapshots", "GET", "/v1/snapshots", NULL, NULL, &res);
	if (status)
		return status;
	if (o.json)
		return print_done(&res, print_json(res.json));
	print_snapshot_header();
	s = json_object_get(res.json, "snapshots");
	for (i = 0; i < json_array_size(s); i++)
		print_snapshot_row(json_array_get(s, i));
	return print_done(&res, 0);
}

/* ---- tree ---- */

#define TREE_DEPTH_MAX 256

/* One line of the lineage: "├─ vm-2  running  tag t  paused 0.8 ms  image py". */
static void tree_line(const json_t *vm, int depth, const bool *last)
{
	char origin[PATH_MAX + 16];

	for (int d = 1; d < depth; d++)
		fputs(last[d] ? "   " : "│  ", stdout);
	if (depth > 0)
		fputs(last[depth] ? "└─ " : "├─ ", stdout);
	printf("%s  %s", str(vm, "id"), str(vm, "state"));
	if (*str(vm, "tag"))
		printf("  tag %s", str(vm, "tag"));
	if (json_is_integer(json_object_get(vm, "pause_us")))
		printf("  paused %.1f ms", pause_ms(vm));
	vm_origin(vm, origin, sizeof(origin));
	if (origin[0])
		printf("  %s", origin);
	vm_limits_text(vm, origin, sizeof(origin));
	if (origin[0])
		printf("  limits: %s", origin);
	putchar('\n');
}

int cli_tree(int argc, char **argv)
{
	struct dc_opts o = {0};
	struct dc_response res;
	bool last[TREE_DEPTH_MAX + 1] = {0};
	size_t i;
	json_t *node;
	int status = dc_take_options(&argc, argv, &o);

	if (status)
		return status;
	if (argc > 0)
		return cli_usage_error("tree: unexpected argument '%s'", argv[0]);
	status = call(&o, "tree", "GET", "/v1/tree", NULL, NULL, &res);
	if (status)
		return status;
	if (o.json)
		return print_done(&res, print_json(res.json));
	json_array_foreach(json_object_get(res.json, "tree"), i, node)
	{
		json_int_t depth = json_integer_value(json_object_get(node, "depth"));

		if (depth < 0 || depth > TREE_DEPTH_MAX) {
			fprintf(stderr, "forkd tree: entry %zu: depth %lld outside 0..%d\n", i,
				(long long)depth, TREE_DEPTH_MAX);
			json_decref(res.json);
			return CLI_EXIT_NOT_OK;
		}
		last[depth] = json_is_true(json_object_get(node, "last_sibling"));
		tree_line(json_object_get(node, "vm"), (int)depth, last);
	}
	if (json_array_size(json_object_get(res.json, "tree")) == 0)
		fputs("(no VMs)\n", stderr);
	return print_done(&res, 0);
}

/* ---- exec ---- */

struct exec_stream {
	char *line;
	size_t len, cap;
	int status; /* -1 until the last line */
	char why[512];
};

static int write_all(int fd, const unsigned char *p, size_t n)
{
	while (n) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int exec_line(struct exec_stream *s, const char *line, size_t len)
{
	json_t *j = json_loadb(line, len, 0, NULL), *v;
	int ret = 0;

	if (!json_is_object(j)) {
		snprintf(s->why, sizeof(s->why),
			 "the daemon sent a line that is not a JSON "
			 "object: %.100s",
			 line);
		json_decref(j);
		return -EBADMSG;
	}
	if ((v = json_object_get(j, "stdout")) || (v = json_object_get(j, "stderr"))) {
		const char *b = json_string_value(v);
		unsigned char *data;
		size_t n;

		if (!b || dc_base64_decode(b, strlen(b), &data, &n) < 0) {
			snprintf(s->why, sizeof(s->why),
				 "the daemon sent output that is not "
				 "base64");
			ret = -EBADMSG;
		} else {
			ret = write_all(
			    json_object_get(j, "stdout") ? STDOUT_FILENO : STDERR_FILENO, data, n);
			free(data);
			if (ret < 0)
				snprintf(s->why, sizeof(s->why), "writing the output: %s",
					 strerror(-ret));
		}
	} else if ((v = json_object_get(j, "exit"))) {
		s->status = (int)(json_integer_value(v) & 255);
	} else if ((v = json_object_get(j, "signal"))) {
		s->status = 128 + (int)json_integer_value(v);
	}
	/* As the direct path: a command killed at its --timeout is 124. */
	if (s->status >= 0 && json_is_true(json_object_get(j, "timed_out"))) {
		snprintf(s->why, sizeof(s->why), "the command timed out and was killed");
		s->status = EXEC_EXIT_TIMED_OUT;
	} else if ((v = json_object_get(j, "error"))) {
		snprintf(s->why, sizeof(s->why), "%s (%s)", str(v, "message"), str(v, "code"));
		s->status = EXEC_EXIT_ERROR;
	}
	json_decref(j);
	return ret;
}

/* Lines as they arrive: each complete one is handled at once. */
static int exec_sink(void *opaque, const char *data, size_t len)
{
	struct exec_stream *s = opaque;

	for (size_t i = 0; i < len; i++) {
		int ret;

		if (data[i] != '\n') {
			if (s->len + 2 > s->cap) {
				size_t cap = s->cap ? s->cap * 2 : 4096;
				char *b = realloc(s->line, cap);

				if (!b)
					return -ENOMEM;
				s->line = b;
				s->cap = cap;
			}
			s->line[s->len++] = data[i];
			continue;
		}
		if (s->len == 0)
			continue;
		s->line[s->len] = '\0';
		ret = exec_line(s, s->line, s->len);
		s->len = 0;
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int read_stdin(char **b64)
{
	size_t len = 0, cap = 65536;
	unsigned char *buf = malloc(cap);
	ssize_t n;

	if (!buf)
		return -ENOMEM;
	while ((n = read(STDIN_FILENO, buf + len, cap - len)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || len + (size_t)n > STDIN_MAX) {
			free(buf);
			return n < 0 ? -errno : -E2BIG;
		}
		len += (size_t)n;
		if (len == cap) {
			unsigned char *b = realloc(buf, cap * 2);

			if (!b) {
				free(buf);
				return -ENOMEM;
			}
			buf = b;
			cap *= 2;
		}
	}
	*b64 = dc_base64_encode(buf, len);
	free(buf);
	return *b64 ? 0 : -ENOMEM;
}

/* `forkd exec ID [-i] [--env K=V]... [--cwd DIR] [--uid N] [--timeout MS] -- CMD...` */
int cli_exec_daemon(int argc, char **argv)
{
	struct dc_opts o = {0};
	struct exec_stream s = {.status = -1};
	struct dc_request r = {.method = "POST", .upload_fd = -1, .sink = exec_sink};
	struct dc_response res;
	struct fk_err err = {0};
	const char *id = NULL;
	json_t *body = json_object(), *env = json_object(), *args = json_array();
	char *path = NULL, *in = NULL;
	bool with_stdin = false;
	int status = dc_take_options(&argc, argv, &o), i;
	long v;

	if (status)
		goto out;
	status = EXEC_EXIT_ERROR;
	if (!body || !env || !args)
		goto out;
	for (i = 0; i < argc && strcmp(argv[i], "--") != 0; i++) {
		const char *arg = argv[i], *value;

		if (strcmp(arg, "-i") == 0 || strcmp(arg, "--stdin") == 0) {
			with_stdin = true;
			continue;
		}
		if (arg[0] != '-') {
			if (id) {
				status = cli_usage_error("exec: unexpected argument '%s' (the "
							 "command goes after --)",
							 arg);
				goto out;
			}
			id = arg;
			continue;
		}
		if (strcmp(arg, "--env") && strcmp(arg, "-e") && strcmp(arg, "--cwd") &&
		    strcmp(arg, "--uid") && strcmp(arg, "--timeout")) {
			status = cli_usage_error("exec %s: unknown option%s", arg,
						 strcmp(arg, "--gid") == 0
						     ? " through the daemon (its exec has no gid)"
						     : "");
			goto out;
		}
		value = i + 1 < argc && strcmp(argv[i + 1], "--") ? argv[++i] : NULL;
		if (!value) {
			status = cli_usage_error("exec %s: expected a value after it", arg);
			goto out;
		}
		if (arg[1] == 'e' || strcmp(arg, "--env") == 0) {
			if (cli_exec_env(env, value, &status) < 0)
				goto out;
		} else if (strcmp(arg, "--cwd") == 0) {
			json_object_set_new(body, "cwd", json_string(value));
		} else if (strcmp(arg, "--uid") == 0) {
			if (parse_long(value, 0, 0xFFFFFFFEl, &v) < 0) {
				status =
				    cli_usage_error("exec --uid '%s': expected a number", value);
				goto out;
			}
			json_object_set_new(body, "uid", json_integer(v));
		} else {
			if (parse_long(value, 0, 24l * 3600 * 1000, &v) < 0) {
				status = cli_usage_error(
				    "exec --timeout '%s': expected milliseconds, 0 to 86400000",
				    value);
				goto out;
			}
			json_object_set_new(body, "timeout_ms", json_integer(v));
		}
	}
	if (!id || !dc_is_vm_id(id)) {
		status = cli_usage_error("exec '%s': expected a VM id such as vm-1a2b3c4d",
					 id ? id : "");
		goto out;
	}
	if (cli_exec_command(body, args, env, argc, argv, i, &status) < 0)
		goto out;
	if (with_stdin) {
		int ret = read_stdin(&in);

		if (ret < 0) {
			fprintf(stderr, "forkd exec: reading stdin: %s\n",
				ret == -E2BIG ? "more than 64 MiB (use forkd cp for files)"
					      : strerror(-ret));
			goto out;
		}
		json_object_set_new(body, "stdin", json_string(in));
	}
	path = path_of("/v1/vms/%s/exec", id);
	if (!path)
		goto out;
	r.path = path;
	r.body = body;
	r.sink_opaque = &s;
	if (dc_request(&o, &r, &res, &err) < 0) {
		fprintf(stderr, "forkd exec: %s\n", s.why[0] ? s.why : err.msg);
		goto out;
	}
	if (s.len) /* a last line without its newline */
		exec_sink(&s, "\n", 1);
	if (s.why[0])
		fprintf(stderr, "forkd exec: %s\n", s.why);
	if (s.status < 0)
		fprintf(stderr,
			"forkd exec: %s: the daemon's stream ended without the "
			"command's exit status\n",
			id);
	else
		status = s.status;
out:
	json_decref(body);
	json_decref(env);
	json_decref(args);
	free(path);
	free(in);
	free(s.line);
	return status;
}

/* ---- cp ---- */

static int file_sink(void *opaque, const char *data, size_t len)
{
	return write_all(*(int *)opaque, (const unsigned char *)data, len);
}

/* `forkd cp SRC ID:/path` or `forkd cp ID:/path DST` through the daemon. */
int cli_cp_daemon(const struct dc_opts *o, const char *src, const char *dst, const char *id,
		  const char *guest_path, bool upload)
{
	struct dc_request r = {.upload_fd = -1};
	struct dc_response res;
	struct fk_err err = {0};
	char *vm = dc_escape(id), *gp = dc_escape(guest_path), *path = NULL;
	char tmp[PATH_MAX + 16];
	int fd = -1, status = CLI_EXIT_NOT_OK, ret;
	struct stat st;

	if (!vm || !gp)
		goto out;
	if (upload) {
		fd = cli_cp_open_source(src, &st);
		if (fd < 0)
			goto out;
		if (asprintf(&path, "/v1/vms/%s/files?path=%s&mode=0%o", vm, gp,
			     (unsigned)(st.st_mode & 07777)) < 0) {
			path = NULL;
			goto out;
		}
		r.method = "PUT";
		r.upload_fd = fd;
	} else {
		fd = cli_cp_open_temp(dst, tmp, sizeof(tmp));
		if (fd < 0)
			goto out;
		if (asprintf(&path, "/v1/vms/%s/files?path=%s", vm, gp) < 0) {
			path = NULL;
			unlink(tmp);
			goto out;
		}
		r.method = "GET";
		r.sink = file_sink;
		r.sink_opaque = &fd;
	}
	r.path = path;
	ret = dc_request(o, &r, &res, &err);
	if (ret == 0 && !upload) {
		mode_t mask = umask(0);

		umask(mask);
		if (fstat(fd, &st) < 0 || fchmod(fd, 0666 & ~mask) < 0 || fsync(fd) < 0 ||
		    rename(tmp, dst) < 0) {
			fprintf(stderr, "forkd cp: %s: %s\n", dst, strerror(errno));
			unlink(tmp);
			goto out;
		}
	} else if (!upload) {
		unlink(tmp);
	}
	if (ret < 0) {
		fprintf(stderr, "forkd cp: %s\n", err.msg);
		status = dc_exit_status(&res);
		goto out;
	}
	json_decref(res.json);
	printf("{\"bytes\":%llu}\n", (unsigned long long)st.st_size);
	status = fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK;
out:
	if (fd >= 0)
		close(fd);
	free(vm);
	free(gp);
	free(path);
	return status;
}
