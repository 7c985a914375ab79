/* SPDX-License-Identifier: MIT */
/*
 * exec: runs a command in its own process group and streams its output.
 *
 * Memory stays bounded whatever the command or the host do: output is read
 * one frame at a time and the read waits until the socket took the previous
 * frame, so a flooding command blocks on its full pipe; host STDIN is taken
 * one frame at a time and the socket is not read again until the command's
 * stdin pipe took it.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* After the command exits, how long its output pipes may take to reach EOF. */
#define EXIT_DRAIN_MS 2000

enum exec_stage { STAGE_CWD = 1, STAGE_CREDENTIALS, STAGE_STDIO, STAGE_EXEC };

/* What the child writes to the CLOEXEC report pipe when it cannot run the command. */
struct exec_failure {
	int stage;
	int err;
};

struct exec_run {
	struct conn *c;
	const struct exec_request *x;
	pid_t pid;	    /* also the process group */
	int pidfd;	    /* -1: poll with a short timeout instead */
	int out_fd, err_fd; /* -1 once at EOF */
	int in_fd;	    /* -1 when the command has no stdin pipe, or it is closed */
	bool stdin_eof;	    /* STDIN_EOF received */
	uint8_t *buf;	    /* one frame of output */
	uint8_t *pending;   /* one frame of stdin not yet taken by the pipe */
	size_t pending_len, pending_off;
	bool frame_buffered; /* the reader may hold a whole frame: read it before polling */
	bool timed_out;
};

extern char **environ;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

static void __attribute__((noreturn)) child_fail(int report_fd, int stage, int err)
{
	struct exec_failure f = {.stage = stage, .err = err};

	/* Best effort: the parent reads a short report as "exec failed" anyway. */
	if (write(report_fd, &f, sizeof(f)) < 0)
		_exit(127);
	_exit(127);
}

static void __attribute__((noreturn))
run_command(const struct exec_request *x, char **envp, int stdin_fd, int stdout_fd, int stderr_fd,
	    int report_fd, pid_t parent)
{
	sigset_t none;

	setpgid(0, 0);
	/* The agent ignores SIGPIPE and catches SIGCHLD; a command starts with defaults. */
	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (stdin_fd < 0)
		stdin_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (stdin_fd < 0 || dup2(stdin_fd, STDIN_FILENO) < 0 ||
	    dup2(stdout_fd, STDOUT_FILENO) < 0 || dup2(stderr_fd, STDERR_FILENO) < 0)
		child_fail(report_fd, STAGE_STDIO, errno);

	if (chdir(x->cwd ? x->cwd : "/") < 0)
		child_fail(report_fd, STAGE_CWD, errno);
	gid_t gid = x->has_gid ? x->gid : getgid();
	uid_t uid = x->has_uid ? x->uid : getuid();
	if (gid != getgid() || uid != getuid()) {
		if (setgroups(1, &gid) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			child_fail(report_fd, STAGE_CREDENTIALS, errno);
	}
	/* Set after the credentials change, which clears it: a dead handler takes the command. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	environ = envp;
	execvp(x->argv[0], (char *const *)x->argv);
	child_fail(report_fd, STAGE_EXEC, errno);
}

static int report_failure(struct conn *c, const struct exec_request *x,
			  const struct exec_failure *f)
{
	switch (f->stage) {
	case STAGE_CWD:
		return conn_send_error(c, f->err, "cwd %s: %s", x->cwd ? x->cwd : "/",
				       strerror(f->err));
	case STAGE_CREDENTIALS:
		return conn_send_error(c, f->err, "%s: switch to uid %u gid %u: %s", x->argv[0],
				       x->has_uid ? x->uid : getuid(),
				       x->has_gid ? x->gid : getgid(), strerror(f->err));
	case STAGE_STDIO:
		return conn_send_error(c, f->err, "%s: set up stdin/stdout/stderr: %s", x->argv[0],
				       strerror(f->err));
	default:
		return conn_send_error(c, f->err, "exec %s: %s%s", x->argv[0], strerror(f->err),
				       strchr(x->argv[0], '/') ? "" : " (looked up in PATH)");
	}
}

/* Kills whatever is left of the command and reaps it. */
static void kill_command(struct exec_run *run)
{
	if (run->pid <= 0)
		return;
	kill(-run->pid, SIGKILL);
	kill(run->pid, SIGKILL);
	while (waitpid(run->pid, NULL, 0) < 0 && errno == EINTR)
		;
	run->pid = -1;
}

/* Reads once from an output pipe and forwards it. 0, or -errno of the socket write. */
static int forward_output(struct exec_run *run, int *fd, unsigned type)
{
	ssize_t n = read(*fd, run->buf, FK_AGENT_MAX_PAYLOAD);

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return 0;
	/* A read error other than "nothing yet" ends that stream like EOF does. */
	if (n <= 0) {
		close_fd(fd);
		return 0;
	}
	int ret = fk_frame_write(run->c->fd, type, run->buf, (uint32_t)n);
	if (ret < 0)
		fprintf(stderr, "forkd-agent: exec: send %s to the host: %s; killing %s (pid %d)\n",
			fk_frame_type_name(type), strerror(-ret), run->x->argv[0], (int)run->pid);
	return ret;
}

/* Writes what it can of the pending stdin frame. */
static void feed_stdin(struct exec_run *run)
{
	while (run->pending_off < run->pending_len) {
		ssize_t n = write(run->in_fd, run->pending + run->pending_off,
				  run->pending_len - run->pending_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n < 0) {
			/* The command closed its stdin (EPIPE): the rest of the input has no
			 * reader. */
			close_fd(&run->in_fd);
			break;
		}
		run->pending_off += (size_t)n;
	}
	run->pending_len = run->pending_off = 0;
	if (run->stdin_eof)
		close_fd(&run->in_fd);
}

/* Handles one frame from the host. 0 to go on, or the error that ends the exec. */
static int handle_host_frame(struct exec_run *run, const struct fk_frame_hdr *hdr,
			     const uint8_t *payload)
{
	struct conn *c = run->c;
	char why[256];
	int sig, ret;

	switch (hdr->type) {
	case FK_FRAME_STDIN:
	case FK_FRAME_STDIN_EOF:
		if (!run->x->want_stdin)
			return conn_send_error(c, EBADMSG,
					       "%s frame, but the exec request did not ask for "
					       "stdin (\"stdin\":true)",
					       fk_frame_type_name(hdr->type));
		if (run->stdin_eof)
			return conn_send_error(c, EBADMSG, "%s frame after STDIN_EOF",
					       fk_frame_type_name(hdr->type));
		if (hdr->type == FK_FRAME_STDIN_EOF) {
			run->stdin_eof = true;
			if (run->pending_len == 0)
				close_fd(&run->in_fd);
			return 0;
		}
		if (run->in_fd < 0 || hdr->len == 0)
			return 0;
		memcpy(run->pending, payload, hdr->len);
		run->pending_len = hdr->len;
		run->pending_off = 0;
		feed_stdin(run);
		return 0;
	case FK_FRAME_SIGNAL:
		ret = agent_signal_parse(payload, hdr->len, &sig, why, sizeof(why));
		if (ret < 0)
			return conn_send_error(c, EINVAL, "%s", why);
		if (kill(-run->pid, sig) < 0 && errno != ESRCH)
			return conn_send_error(c, errno, "signal %d to process group %d: %s", sig,
					       (int)run->pid, strerror(errno));
		return 0;
	case FK_FRAME_ERROR:
		fprintf(stderr,
			"forkd-agent: exec: the host sent ERROR %.*s; killing the command\n",
			(int)(hdr->len > 200 ? 200 : hdr->len), (const char *)payload);
		return -ECANCELED;
	default:
		return conn_unexpected_frame(c, hdr->type, "STDIN, STDIN_EOF or SIGNAL");
	}
}

/* Takes frames from the host until none is buffered or stdin is backed up. */
static int read_host_frames(struct exec_run *run)
{
	struct fk_frame_hdr hdr;
	const uint8_t *payload;

	run->frame_buffered = false;
	while (run->pending_len == 0) {
		int ret = fk_frame_read(&run->c->reader, run->c->fd, &hdr, &payload);
		if (ret == 0)
			return 0;
		if (ret < 0) {
			if (conn_peer_gone(ret))
				conn_send_error(run->c, EPIPE,
						"the host closed the connection before EXIT; "
						"killing %s (pid %d)",
						run->x->argv[0], (int)run->pid);
			else
				conn_frame_failed(run->c, ret);
			return ret;
		}
		ret = handle_host_frame(run, &hdr, payload);
		if (ret < 0)
			return ret;
	}
	run->frame_buffered = true;
	return 0;
}

static bool command_exited(struct exec_run *run)
{
	siginfo_t info = {0};

	/* WNOWAIT: the zombie keeps the process group's ID from being reused until reaped. */
	return waitid(P_PID, (id_t)run->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
	       info.si_pid == run->pid;
}

/* Runs until the command exits, forwarding output, stdin and signals. */
static int pump(struct exec_run *run, int64_t deadline)
{
	for (;;) {
		struct pollfd pfds[5];
		int n = 0, sock_i = -1, out_i = -1, err_i = -1, in_i = -1, pid_i = -1;
		int ret;

		if (run->frame_buffered && run->pending_len == 0) {
			ret = read_host_frames(run);
			if (ret < 0)
				return ret;
		}
		if (command_exited(run))
			return 0;
		if (run->pending_len == 0) {
			sock_i = n;
			pfds[n++] = (struct pollfd){.fd = run->c->fd, .events = POLLIN};
		}
		if (run->out_fd >= 0) {
			out_i = n;
			pfds[n++] = (struct pollfd){.fd = run->out_fd, .events = POLLIN};
		}
		if (run->err_fd >= 0) {
			err_i = n;
			pfds[n++] = (struct pollfd){.fd = run->err_fd, .events = POLLIN};
		}
		if (run->pending_len && run->in_fd >= 0) {
			in_i = n;
			pfds[n++] = (struct pollfd){.fd = run->in_fd, .events = POLLOUT};
		}
		if (run->pidfd >= 0) {
			pid_i = n;
			pfds[n++] = (struct pollfd){.fd = run->pidfd, .events = POLLIN};
		}

		int timeout = run->pidfd >= 0 ? -1 : 50;
		if (deadline && !run->timed_out) {
			int64_t left = deadline - now_ms();
			if (left <= 0) {
				kill(-run->pid, SIGKILL);
				run->timed_out = true;
				continue;
			}
			if (timeout < 0 || left < timeout)
				timeout = (int)left;
		}
		if (poll(pfds, (nfds_t)n, timeout) < 0) {
			if (errno == EINTR)
				continue;
			return conn_send_error(run->c, errno, "poll: %s", strerror(errno));
		}
		if (out_i >= 0 && pfds[out_i].revents) {
			ret = forward_output(run, &run->out_fd, FK_FRAME_STDOUT);
			if (ret < 0)
				return ret;
		}
		if (err_i >= 0 && pfds[err_i].revents) {
			ret = forward_output(run, &run->err_fd, FK_FRAME_STDERR);
			if (ret < 0)
				return ret;
		}
		if (in_i >= 0 && pfds[in_i].revents)
			feed_stdin(run);
		if (sock_i >= 0 && pfds[sock_i].revents) {
			ret = read_host_frames(run);
			if (ret < 0)
				return ret;
		}
		(void)pid_i; /* an exited command is seen by command_exited at the top */
	}
}

/* After the command exited: kills what is left of its group and forwards the rest of its output. */
static int drain_output(struct exec_run *run)
{
	int64_t deadline = now_ms() + EXIT_DRAIN_MS;

	kill(-run->pid, SIGKILL);
	while (run->out_fd >= 0 || run->err_fd >= 0) {
		struct pollfd pfds[2] = {{.fd = run->out_fd, .events = POLLIN},
					 {.fd = run->err_fd, .events = POLLIN}};
		int64_t left = deadline - now_ms();
		if (left <= 0)
			break;
		if (poll(pfds, 2, (int)left) < 0 && errno != EINTR)
			break;
		int ret = 0;
		if (run->out_fd >= 0 && pfds[0].revents)
			ret = forward_output(run, &run->out_fd, FK_FRAME_STDOUT);
		if (ret == 0 && run->err_fd >= 0 && pfds[1].revents)
			ret = forward_output(run, &run->err_fd, FK_FRAME_STDERR);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static const char *default_env_root[] = {
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", NULL};
static const char *default_env_user[] = {"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/", NULL};

int handle_exec(struct conn *c, const struct agent_config *cfg, const struct exec_request *x)
{
	int out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1}, in_pipe[2] = {-1, -1};
	int report_pipe[2] = {-1, -1};
	struct exec_run run = {
	    .c = c, .x = x, .pid = -1, .pidfd = -1, .out_fd = -1, .err_fd = -1, .in_fd = -1};
	char **envp = NULL;
	int ret;

	if (identity_wait_notified(cfg->identity, AGENT_FORK_NOTIFY_WAIT_MS) < 0)
		return conn_send_error(c, EAGAIN,
				       "this VM was forked or restored and has not received its "
				       "fork notification yet");

	bool as_root = (x->has_uid ? x->uid : getuid()) == 0;
	envp = agent_exec_env(as_root ? default_env_root : default_env_user, x->env);
	run.buf = malloc(FK_AGENT_MAX_PAYLOAD);
	run.pending = malloc(FK_AGENT_MAX_PAYLOAD);
	if (!envp || !run.buf || !run.pending) {
		ret = conn_send_error(c, ENOMEM, "%s: out of memory", x->argv[0]);
		goto out;
	}
	if (pipe2(out_pipe, O_CLOEXEC) < 0 || pipe2(err_pipe, O_CLOEXEC) < 0 ||
	    pipe2(report_pipe, O_CLOEXEC) < 0 || (x->want_stdin && pipe2(in_pipe, O_CLOEXEC) < 0)) {
		ret = conn_send_error(c, errno, "%s: pipe: %s", x->argv[0], strerror(errno));
		goto out;
	}

	pid_t parent = getpid();
	run.pid = fork();
	if (run.pid < 0) {
		ret = conn_send_error(c, errno, "%s: fork: %s", x->argv[0], strerror(errno));
		goto out;
	}
	if (run.pid == 0)
		run_command(x, envp, in_pipe[0], out_pipe[1], err_pipe[1], report_pipe[1], parent);
	/* Both sides set the group, so signals reach it whichever runs first. */
	setpgid(run.pid, run.pid);
	close_fd(&out_pipe[1]);
	close_fd(&err_pipe[1]);
	close_fd(&in_pipe[0]);
	close_fd(&report_pipe[1]);

	struct exec_failure failure;
	ssize_t got;
	do
		got = read(report_pipe[0], &failure, sizeof(failure));
	while (got < 0 && errno == EINTR);
	if (got != 0) {
		if (got != (ssize_t)sizeof(failure))
			failure = (struct exec_failure){.stage = STAGE_EXEC, .err = EIO};
		ret = report_failure(c, x, &failure);
		goto out;
	}

	run.out_fd = out_pipe[0];
	run.err_fd = err_pipe[0];
	run.in_fd = in_pipe[1];
	out_pipe[0] = err_pipe[0] = in_pipe[1] = -1;
	fcntl(run.out_fd, F_SETFL, O_NONBLOCK);
	fcntl(run.err_fd, F_SETFL, O_NONBLOCK);
	if (run.in_fd >= 0)
		fcntl(run.in_fd, F_SETFL, O_NONBLOCK);
	run.pidfd = (int)syscall(SYS_pidfd_open, run.pid, 0);

	json_t *started = json_pack("{s:i}", "pid", (int)run.pid);
	ret = started ? conn_send_json(c, FK_FRAME_RESPONSE, started) : -ENOMEM;
	json_decref(started);
	if (ret < 0)
		goto out;

	/* A frame may have arrived with the REQUEST (STDIN, SIGNAL): take it before polling. */
	run.frame_buffered = true;
	ret = pump(&run, x->timeout_ms ? now_ms() + (int64_t)x->timeout_ms : 0);
	if (ret < 0)
		goto out;
	ret = drain_output(&run);
	if (ret < 0)
		goto out;

	int status;
	while (waitpid(run.pid, &status, 0) < 0) {
		if (errno != EINTR) {
			ret = conn_send_error(c, errno, "wait for %s: %s", x->argv[0],
					      strerror(errno));
			goto out;
		}
	}
	run.pid = -1;
	json_t *exit_json = agent_exit_json(status, run.timed_out);
	ret = exit_json ? conn_send_json(c, FK_FRAME_EXIT, exit_json) : -ENOMEM;
	json_decref(exit_json);
out:
	kill_command(&run);
	close_fd(&run.pidfd);
	close_fd(&run.out_fd);
	close_fd(&run.err_fd);
	close_fd(&run.in_fd);
	for (int i = 0; i < 2; i++) {
		close_fd(&out_pipe[i]);
		close_fd(&err_pipe[i]);
		close_fd(&in_pipe[i]);
		close_fd(&report_pipe[i]);
	}
	agent_env_free(envp);
	free(run.buf);
	free(run.pending);
	return ret;
}
