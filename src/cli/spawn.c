/* SPDX-License-Identifier: MIT */
/*
 * `forkd spawn` and `forkd kill`: N forkd-vmm children restored from one
 * snapshot, each in its own directory OUT/child-I, and their teardown.
 *
 * Two modes (docs/branch.md, "Fan-out from a snapshot"):
 * - fanout (the default for N > 1): one forkd-vmm restores the snapshot once
 *   and its BRANCH zygote forks the N children, which only create their own
 *   KVM VM, memslots and vCPUs;
 * - exec (the default for N = 1, or --mode exec): one forkd-vmm per child,
 *   each restoring the snapshot itself.
 *
 * The children are detached (own session, no terminal, stdout to /dev/null)
 * so they outlive `forkd spawn`; their pid files are how `forkd kill` finds
 * them again. A child counts as running once its control socket answers
 * `status`, which the VMM serves only after the restore has finished.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemon/vmm_launch.h"
#include "cli/cli.h"
#include "state/snapshot_format.h"
#include "util/err.h"
#include "state/vm_state.h"
#include "control/control.h"

#define SPAWN_MAX_CHILDREN	 1000
#define SPAWN_DEFAULT_TIMEOUT_MS 30000
/* A status reply is well under this (one JSON line). */
#define STATUS_REPLY_MAX 8192
#define POLL_INTERVAL_US 2000
/* end_adopted: at most this many rounds (of POLL_INTERVAL_US) to kill and reap what is left */
#define END_ADOPTED_ROUNDS 2500

enum spawn_mode {
	SPAWN_MODE_AUTO, /* fanout for N > 1, exec for one child */
	SPAWN_MODE_FANOUT,
	SPAWN_MODE_EXEC,
};

struct spawn_args {
	const char *snapshot;
	enum spawn_mode mode;
	const char *out;
	const char *vmm;
	long count;
	int timeout_ms;
	bool has_vsock; /* the snapshot has a vsock device: each child gets its own socket */
};

struct child {
	pid_t pid;
	bool running;
	bool exited; /* reaped by us */
	int fd;	     /* a status call in flight, or -1 */
	size_t used; /* bytes of its reply so far */
	char reply[STATUS_REPLY_MAX];
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int child_path(char *buf, size_t len, const char *out, long i, const char *name,
		      struct fk_err *err)
{
	int n = name ? snprintf(buf, len, "%s/child-%ld/%s", out, i, name)
		     : snprintf(buf, len, "%s/child-%ld", out, i);

	if (n < 0 || (size_t)n >= len)
		return fk_fail(err, ENAMETOOLONG, "--out '%s': path of child %ld too long", out, i);
	return 0;
}

static int parse_spawn_args(int argc, char **argv, struct spawn_args *a)
{
	a->timeout_ms = SPAWN_DEFAULT_TIMEOUT_MS;
	a->count = -1;
	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];
		const char *value;

		if (strcmp(arg, "-n") && strcmp(arg, "--out") && strcmp(arg, "--vmm") &&
		    strcmp(arg, "--timeout") && strcmp(arg, "--mode")) {
			if (arg[0] == '-')
				return cli_usage_error("spawn: unknown option '%s'", arg);
			if (a->snapshot)
				return cli_usage_error("spawn: unexpected argument '%s'", arg);
			a->snapshot = arg;
			continue;
		}
		if (i + 1 == argc)
			return cli_usage_error("spawn: %s: expected a value after it", arg);
		value = argv[++i];
		if (strcmp(arg, "-n") == 0) {
			char *end;

			errno = 0;
			a->count = strtol(value, &end, 10);
			if (errno || end == value || *end || a->count < 1 ||
			    a->count > SPAWN_MAX_CHILDREN)
				return cli_usage_error("spawn: -n '%s': expected a number of "
						       "children, 1 to %d",
						       value, SPAWN_MAX_CHILDREN);
		} else if (strcmp(arg, "--out") == 0) {
			a->out = value;
		} else if (strcmp(arg, "--vmm") == 0) {
			a->vmm = value;
		} else if (strcmp(arg, "--mode") == 0) {
			if (strcmp(value, "fanout") == 0)
				a->mode = SPAWN_MODE_FANOUT;
			else if (strcmp(value, "exec") == 0)
				a->mode = SPAWN_MODE_EXEC;
			else
				return cli_usage_error("spawn: --mode '%s': expected fanout (one "
						       "restore, children forked from it) or exec "
						       "(one forkd-vmm per child)",
						       value);
		} else if (cli_parse_timeout(value, &a->timeout_ms) < 0) {
			return cli_usage_error("spawn: --timeout '%s': expected milliseconds, 0 to "
					       "3600000",
					       value);
		}
	}
	if (!a->snapshot)
		return cli_usage_error("%s", "spawn: expected a snapshot directory");
	if (a->count < 0)
		return cli_usage_error("%s", "spawn: expected -n N");
	if (!a->out || !a->out[0])
		return cli_usage_error("%s", "spawn: expected --out DIR");
	return 0;
}

/* Refuses before anything starts: a bad snapshot, VMM or output directory. */
static int check_inputs(const struct spawn_args *a, struct fk_err *err)
{
	char path[PATH_MAX];
	struct stat st;
	int ret;

	if (stat(a->snapshot, &st) < 0)
		return fk_fail_errno(err, errno, "snapshot '%s': expected a snapshot directory",
				     a->snapshot);
	if (!S_ISDIR(st.st_mode))
		return fk_fail(err, ENOTDIR, "snapshot '%s': expected a snapshot directory",
			       a->snapshot);
	if (access(a->vmm, X_OK) < 0)
		return fk_fail_errno(err, errno, "--vmm '%s': expected an executable forkd-vmm",
				     a->vmm);
	if (mkdir(a->out, 0755) < 0 && errno != EEXIST)
		return fk_fail_errno(err, errno, "--out '%s': cannot create it", a->out);
	for (long i = 0; i < a->count; i++) {
		/* The longest name must fit a Unix socket address. */
		ret = child_path(path, sizeof(((struct sockaddr_un *)0)->sun_path), a->out, i,
				 "control.sock", err);
		if (ret < 0)
			return fk_wrap(err, "control socket of child %ld must fit in %zu bytes", i,
				       sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		ret = child_path(path, sizeof(path), a->out, i, NULL, err);
		if (ret < 0)
			return ret;
		if (lstat(path, &st) == 0)
			return fk_fail(err, EEXIST,
				       "%s: already exists (expected a fresh --out directory or "
				       "`forkd kill` and removal of the old children)",
				       path);
	}
	return 0;
}

static int write_pid_file(const char *out, long i, pid_t pid, struct fk_err *err)
{
	char path[PATH_MAX];
	FILE *f;
	int ret;

	ret = child_path(path, sizeof(path), out, i, "pid", err);
	if (ret < 0)
		return ret;
	f = fopen(path, "w");
	if (!f)
		return fk_fail_errno(err, errno, "%s", path);
	fprintf(f, "%d\n", (int)pid);
	if (fclose(f) != 0)
		return fk_fail_errno(err, errno, "%s", path);
	return 0;
}

/* In the forked child: never returns. forkd is single-threaded, so stdio is safe here. */
static void exec_child(const char *vmm, char *const argv[], const char *err_path)
{
	int null_fd = open("/dev/null", O_RDWR);
	int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	if (null_fd < 0 || err_fd < 0)
		_exit(127);
	setsid();
	dup2(null_fd, 0);
	dup2(null_fd, 1);
	dup2(err_fd, 2);
	if (null_fd > 2)
		close(null_fd);
	if (err_fd > 2)
		close(err_fd);
	execv(vmm, argv);
	dprintf(2, "forkd spawn: exec %s: %s\n", vmm, strerror(errno));
	_exit(127);
}

static int start_child(const struct spawn_args *a, long i, struct child *c, struct fk_err *err)
{
	char dir[PATH_MAX], overlay[PATH_MAX], sock[PATH_MAX], serial[PATH_MAX],
	    serial_in[PATH_MAX], err_path[PATH_MAX], vsock[PATH_MAX];
	int ret;

	if ((ret = child_path(dir, sizeof(dir), a->out, i, NULL, err)) < 0 ||
	    (ret = child_path(vsock, sizeof(vsock), a->out, i, "vsock.sock", err)) < 0 ||
	    (ret = child_path(overlay, sizeof(overlay), a->out, i, "overlay", err)) < 0 ||
	    (ret = child_path(sock, sizeof(sock), a->out, i, "control.sock", err)) < 0 ||
	    (ret = child_path(serial, sizeof(serial), a->out, i, "serial.log", err)) < 0 ||
	    (ret = child_path(serial_in, sizeof(serial_in), a->out, i, "serial.in", err)) < 0 ||
	    (ret = child_path(err_path, sizeof(err_path), a->out, i, "vmm.err", err)) < 0)
		return ret;
	if (mkdir(dir, 0755) < 0)
		return fk_fail_errno(err, errno, "%s", dir);
	if (mkfifo(serial_in, 0600) < 0)
		return fk_fail_errno(err, errno, "%s: mkfifo", serial_in);

	char *const argv[] = {(char *)a->vmm,
			      "--restore",
			      (char *)a->snapshot,
			      "--overlay-dir",
			      overlay,
			      "--control",
			      sock,
			      "--serial",
			      serial,
			      "--serial-in",
			      serial_in,
			      a->has_vsock ? "--vsock" : NULL,
			      vsock,
			      NULL};

	c->pid = fork();
	if (c->pid < 0)
		return fk_fail_errno(err, errno, "child %ld: fork", i);
	if (c->pid == 0)
		exec_child(a->vmm, argv, err_path);
	return write_pid_file(a->out, i, c->pid, err);
}

/* Kills and reaps every started child and removes its pid file, so nothing is left running. */
static void kill_started(const struct spawn_args *a, struct child *children, long started)
{
	char path[PATH_MAX];
	struct fk_err ignored = {0};

	for (long i = 0; i < started; i++)
		if (children[i].pid > 0 && !children[i].exited)
			kill(children[i].pid, SIGKILL);
	for (long i = 0; i < started; i++) {
		if (children[i].pid > 0 && !children[i].exited)
			waitpid(children[i].pid, NULL, 0);
		if (child_path(path, sizeof(path), a->out, i, "pid", &ignored) == 0)
			unlink(path);
	}
}

static void describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d", WTERMSIG(status));
	else
		snprintf(buf, len, "wait status %d", status);
}

/* -errno (and why) when child i has exited before it ran; else 0. */
static int check_exited(const struct spawn_args *a, long i, struct child *c, struct fk_err *err)
{
	char err_path[PATH_MAX], line[256], how[64];
	int status;

	if (waitpid(c->pid, &status, WNOHANG) != c->pid)
		return 0;
	c->exited = true;
	describe_exit(status, how, sizeof(how));
	/* A forked child's stderr is the BRANCH one: OUT/child-K.err (docs/branch.md). */
	if (a->mode == SPAWN_MODE_FANOUT)
		snprintf(err_path, sizeof(err_path), "%s/child-%ld.err", a->out, i);
	else if (child_path(err_path, sizeof(err_path), a->out, i, "vmm.err", err) < 0)
		return -err->code;
	vmm_first_line(err_path, line, sizeof(line));
	return fk_fail(err, ECHILD, "child %ld (pid %d) exited with %s before running: %s", i,
		       (int)c->pid, how, line[0] ? line : "(its error file is empty)");
}

/*
 * Starts a `status` call to child i without waiting for it: a non-blocking
 * connection with the request sent, or none yet (not listening yet; tried
 * again next round). Calls to every child are in flight at once, so a child
 * slow to be scheduled does not hold up the others' answers.
 */
static void status_call_start(const struct spawn_args *a, long i, struct child *c)
{
	static const char req[] = "{\"cmd\":\"status\"}\n";
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct fk_err ignored = {0};
	int fd;

	if (child_path(addr.sun_path, sizeof(addr.sun_path), a->out, i, "control.sock", &ignored) <
	    0)
		return;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return;
	/* A Unix connect completes at once (the backlog holds it) or fails: no EINPROGRESS. */
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    write(fd, req, sizeof(req) - 1) != (ssize_t)(sizeof(req) - 1)) {
		close(fd);
		return;
	}
	c->fd = fd;
	c->used = 0;
}

static void status_call_end(struct child *c)
{
	close(c->fd);
	c->fd = -1;
	c->used = 0;
}

/* Child i's socket is readable: 1 when its reply line says ok, 0 not complete (or retry). */
static int status_call_read(struct child *c)
{
	ssize_t n = read(c->fd, c->reply + c->used, sizeof(c->reply) - 1 - c->used);
	json_t *reply;
	int ok;

	if (n <= 0) {
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return 0;
		status_call_end(c); /* closed before answering: ask again next round */
		return 0;
	}
	c->used += (size_t)n;
	c->reply[c->used] = '\0';
	if (!strchr(c->reply, '\n')) {
		if (c->used == sizeof(c->reply) - 1)
			status_call_end(c); /* no reply of ours is this long */
		return 0;
	}
	reply = json_loads(c->reply, JSON_DISABLE_EOF_CHECK, NULL);
	ok = json_is_true(json_object_get(reply, "ok"));
	json_decref(reply);
	status_call_end(c);
	return ok;
}

static int wait_running(const struct spawn_args *a, struct child *children, double t0,
			struct fk_err *err)
{
	struct pollfd *p = calloc((size_t)a->count, sizeof(*p));
	long *who = calloc((size_t)a->count, sizeof(*who));
	long running = 0;
	int ret = 0;

	if (!p || !who) {
		ret = fk_fail(err, ENOMEM, "out of memory for %ld children", a->count);
		goto out;
	}
	for (long i = 0; i < a->count; i++)
		children[i].fd = -1;
	while (running < a->count) {
		int np = 0, r;

		for (long i = 0; i < a->count; i++) {
			struct child *c = &children[i];

			if (c->running)
				continue;
			ret = check_exited(a, i, c, err);
			if (ret < 0)
				goto out;
			if (c->fd < 0)
				status_call_start(a, i, c);
			if (c->fd >= 0) {
				p[np] = (struct pollfd){.fd = c->fd, .events = POLLIN};
				who[np++] = i;
			}
		}
		if (now_ms() - t0 > a->timeout_ms) {
			ret = fk_fail(err, ETIMEDOUT,
				      "%ld of %ld children not running within %d ms (see "
				      "%s/child-*)",
				      a->count - running, a->count, a->timeout_ms, a->out);
			goto out;
		}
		r = poll(p, (nfds_t)np, POLL_INTERVAL_US / 1000);
		for (int k = 0; r > 0 && k < np; k++) {
			struct child *c = &children[who[k]];

			if (!p[k].revents || !status_call_read(c))
				continue;
			c->running = true;
			running++;
			printf("{\"child\":%ld,\"pid\":%d,\"running_ms\":%.1f}\n", who[k],
			       (int)c->pid, now_ms() - t0);
			fflush(stdout);
		}
	}
out:
	for (long i = 0; p && i < a->count; i++)
		if (children[i].fd >= 0)
			status_call_end(&children[i]);
	free(p);
	free(who);
	return ret;
}

/*
 * Fan-out mode: one forkd-vmm restores the snapshot and forks the children
 * (`--fanout`), writes their pid files and prints {"child":K,"pid":P} lines,
 * and exits once they all run. We are the children's subreaper, so that they
 * come to us when it exits: wait_running and kill_started then treat them as
 * our own children, as in exec mode.
 */
static int run_fanout(const struct spawn_args *a, struct child *children, struct fk_err *err)
{
	char count[16], err_path[PATH_MAX], vsock[PATH_MAX], line[256], how[64];
	char buf[8192];
	size_t used = 0;
	int out_pipe[2], status, ret = 0;
	long reported = 0;
	pid_t pid;
	double deadline = now_ms() + a->timeout_ms;

	snprintf(count, sizeof(count), "%ld", a->count);
	if (snprintf(err_path, sizeof(err_path), "%s/fanout.err", a->out) >=
		(int)sizeof(err_path) ||
	    snprintf(vsock, sizeof(vsock), "%s/fanout-vsock.sock", a->out) >= (int)sizeof(vsock))
		return fk_fail(err, ENAMETOOLONG, "--out '%s': path too long", a->out);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		return fk_fail_errno(err, errno, "PR_SET_CHILD_SUBREAPER");
	if (pipe2(out_pipe, O_CLOEXEC) < 0)
		return fk_fail_errno(err, errno, "pipe");

	/* The source never runs its guest: no console. Its vsock socket only exists to restore. */
	char *const argv[] = {(char *)a->vmm, "--restore", (char *)a->snapshot,
			      "--fanout",     count,	   "--fanout-dir",
			      (char *)a->out, "--serial",  "none",
			      "--serial-in",  "none",	   a->has_vsock ? "--vsock" : NULL,
			      vsock,	      NULL};

	pid = fork();
	if (pid < 0) {
		ret = fk_fail_errno(err, errno, "fork");
		close(out_pipe[0]);
		close(out_pipe[1]);
		return ret;
	}
	if (pid == 0) {
		dup2(out_pipe[1], STDOUT_FILENO);
		int null_fd = open("/dev/null", O_RDONLY);
		int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (null_fd < 0 || err_fd < 0)
			_exit(127);
		setsid();
		dup2(null_fd, 0);
		dup2(err_fd, 2);
		execv(a->vmm, argv);
		dprintf(2, "forkd spawn: exec %s: %s\n", a->vmm, strerror(errno));
		_exit(127);
	}
	close(out_pipe[1]);
	/* Its stdout: one line per child, then a summary; EOF when it exits. */
	for (;;) {
		struct pollfd p = {.fd = out_pipe[0], .events = POLLIN};
		double left = deadline - now_ms();
		ssize_t n;
		char *nl;

		if (left <= 0) {
			kill(pid, SIGKILL);
			ret = fk_fail(err, ETIMEDOUT,
				      "the fan-out forkd-vmm (pid %d) did not finish within %d ms "
				      "(see %s)",
				      (int)pid, a->timeout_ms, err_path);
			break;
		}
		if (poll(&p, 1, (int)left + 1) <= 0)
			continue;
		n = read(out_pipe[0], buf + used, sizeof(buf) - 1 - used);
		if (n <= 0)
			break;
		used += (size_t)n;
		buf[used] = '\0';
		while ((nl = strchr(buf, '\n'))) {
			long k;
			int child_pid;

			*nl = '\0';
			if (sscanf(buf, "{\"child\":%ld,\"pid\":%d}", &k, &child_pid) == 2 &&
			    k >= 0 && k < a->count && children[k].pid == 0) {
				children[k].pid = child_pid;
				reported++;
			}
			used -= (size_t)(nl + 1 - buf);
			memmove(buf, nl + 1, used + 1);
		}
		if (used == sizeof(buf) - 1)
			used = 0; /* a line this long is none of ours */
	}
	close(out_pipe[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (ret < 0)
		return ret;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		describe_exit(status, how, sizeof(how));
		vmm_first_line(err_path, line, sizeof(line));
		return fk_fail(err, ECHILD, "the fan-out forkd-vmm (pid %d) failed with %s: %s",
			       (int)pid, how, line[0] ? line : "(fanout.err is empty)");
	}
	if (reported != a->count)
		return fk_fail(err, EPROTO,
			       "the fan-out forkd-vmm reported %ld of %ld children (see %s)",
			       reported, a->count, err_path);
	return 0;
}

/*
 * A fan-out that failed midway (its source killed at the timeout, or dead)
 * can leave children it never reported, and its zygote: as their subreaper
 * we inherit them. Each is killed and reaped until none is left; a zygote
 * reaped here has handed its own children to us before it became a zombie.
 */
static void end_adopted(void)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/self/task/%d/children", (int)getpid());
	for (int round = 0; round < END_ADOPTED_ROUNDS; round++) {
		FILE *f = fopen(path, "r");
		bool any = false;
		int pid;

		while (f && fscanf(f, "%d", &pid) == 1) {
			kill(pid, SIGKILL);
			any = true;
		}
		if (f)
			fclose(f);
		while (waitpid(-1, NULL, WNOHANG) > 0)
			any = true;
		if (!any)
			return;
		usleep(POLL_INTERVAL_US);
	}
}

/*
 * A snapshot directory on this machine (the old behaviour: the argument is an existing directory
 * or a path, or --out, --vmm or --timeout is given) rather than a tag of the daemon's.
 */
static bool spawn_is_local(int argc, char **argv)
{
	/* The daemon's limits too: a --cpu-max value holds a '/', which is not a directory. */
	static const char *const with_value[] = {
	    "-n",	    "--out",	    "--vmm",	 "--timeout",  "--daemon", "--url",
	    "--token-file", "--memory-max", "--cpu-max", "--pids-max", "--mode"};
	const char *target = NULL;
	struct stat st;

	for (int i = 0; i < argc; i++) {
		bool takes = false;

		for (size_t k = 0; k < sizeof(with_value) / sizeof(with_value[0]); k++)
			takes |= strcmp(argv[i], with_value[k]) == 0;
		if (strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "--vmm") == 0 ||
		    strcmp(argv[i], "--timeout") == 0 || strcmp(argv[i], "--mode") == 0)
			return true;
		if (takes)
			i++;
		else if (argv[i][0] != '-' && !target)
			target = argv[i];
	}
	return target && (strchr(target, '/') || (stat(target, &st) == 0 && S_ISDIR(st.st_mode)));
}

int cli_spawn(int argc, char **argv)
{
	struct spawn_args a = {0};
	struct fk_err err = {0};
	struct child *children;
	char vmm[PATH_MAX];
	long started = 0;
	double t0, fanout_ms = 0;
	int ret;

	if (!spawn_is_local(argc, argv))
		return cli_spawn_daemon(argc, argv);
	ret = parse_spawn_args(argc, argv, &a);
	if (ret)
		return ret;
	if (!a.vmm) {
		if (vmm_default_path(vmm, sizeof(vmm), &err) < 0) {
			fprintf(stderr, "forkd: spawn: %s\n", err.msg);
			return CLI_EXIT_NOT_OK;
		}
		a.vmm = vmm;
	}
	if (check_inputs(&a, &err) < 0) {
		fprintf(stderr, "forkd: spawn: %s\n", err.msg);
		return CLI_EXIT_USAGE;
	}
	{
		/* A vsock device needs a host socket per child (--vsock on restore). */
		struct snap_reader *r;
		uint32_t type;
		const void *data;
		size_t len;

		if (snap_reader_open(a.snapshot, &r, &err) < 0) {
			fprintf(stderr, "forkd: spawn: %s\n", err.msg);
			return CLI_EXIT_USAGE;
		}
		a.has_vsock =
		    snap_reader_find_device(r, VM_DEVICE_INSTANCE_VSOCK, &type, &data, &len) == 0;
		snap_reader_close(r);
	}
	children = calloc((size_t)a.count, sizeof(*children));
	if (!children) {
		fprintf(stderr, "forkd: spawn: out of memory for %ld children\n", a.count);
		return CLI_EXIT_NOT_OK;
	}
	if (a.mode == SPAWN_MODE_AUTO)
		a.mode = a.count > 1 ? SPAWN_MODE_FANOUT : SPAWN_MODE_EXEC;
	/* Children must not inherit buffered output that they would flush again. */
	fflush(NULL);
	t0 = now_ms();
	if (a.mode == SPAWN_MODE_FANOUT) {
		ret = run_fanout(&a, children, &err);
		/* Those it reported are ours now (subreaper): kill_started can end them. */
		for (long i = 0; i < a.count; i++)
			if (children[i].pid > 0)
				started = i + 1;
		if (ret < 0)
			goto fail;
		fanout_ms = now_ms() - t0;
	}
	for (; a.mode == SPAWN_MODE_EXEC && started < a.count; started++) {
		ret = start_child(&a, started, &children[started], &err);
		if (ret < 0) {
			if (children[started].pid > 0)
				started++;
			goto fail;
		}
	}
	ret = wait_running(&a, children, t0, &err);
	if (ret < 0)
		goto fail;
	if (a.mode == SPAWN_MODE_FANOUT)
		printf("{\"spawned\":%ld,\"mode\":\"fanout\",\"fanout_ms\":%.1f,"
		       "\"all_running_ms\":%.1f}\n",
		       a.count, fanout_ms, now_ms() - t0);
	else
		printf("{\"spawned\":%ld,\"mode\":\"exec\",\"all_running_ms\":%.1f}\n", a.count,
		       now_ms() - t0);
	free(children);
	return fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK;
fail:
	if (a.mode == SPAWN_MODE_FANOUT)
		fprintf(stderr, "forkd: spawn: %s; killing every child it started\n", err.msg);
	else
		fprintf(stderr, "forkd: spawn: %s; killing all %ld started children\n", err.msg,
			started);
	kill_started(&a, children, started);
	if (a.mode == SPAWN_MODE_FANOUT)
		end_adopted();
	free(children);
	return CLI_EXIT_NOT_OK;
}
