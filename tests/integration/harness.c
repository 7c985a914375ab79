/* SPDX-License-Identifier: MIT */
#include "harness.h"

#include "control/control.h"

#include <errno.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

bool harness_in_nested_host(void)
{
	return getenv("FORKD_TESTHOST_KIND") != NULL;
}

long long harness_deadline(int timeout_ms)
{
	/* Guests in the nested test host run emulated, and a second one may share its cores. */
	int factor = getenv("FORKD_TESTHOST_KIND") ? HARNESS_NESTED_SLOWDOWN : 1;

	return now_ms() + (long long)timeout_ms * factor;
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *v = getenv(name);
	return v && *v ? v : fallback;
}

const char *harness_vmm(void)
{
	return env_or("FORKD_VMM", "build/forkd-vmm");
}

const char *harness_vmm_asan(void)
{
	return env_or("FORKD_VMM_ASAN", "build/asan/forkd-vmm");
}

const char *harness_probe(void)
{
	return env_or("FORKD_PROBE", "build/guest/probe.elf");
}

const char *harness_tmpdir(void)
{
	return env_or("TMPDIR", "/tmp");
}

/*
 * Every VMM this test process started and has not yet reaped. A failing
 * cmocka assertion leaves its test without running vmm_free, so these are
 * killed at exit (and by PR_SET_PDEATHSIG if the test process dies).
 */
#define MAX_LIVE 64
static pid_t live_pids[MAX_LIVE];

static void kill_live_vmms(void)
{
	for (int i = 0; i < MAX_LIVE; i++) {
		if (live_pids[i] > 0) {
			kill(live_pids[i], SIGKILL);
			waitpid(live_pids[i], NULL, 0);
			live_pids[i] = 0;
		}
	}
}

static void track(pid_t pid, bool add)
{
	static bool registered;

	if (!registered) {
		atexit(kill_live_vmms);
		registered = true;
	}
	for (int i = 0; i < MAX_LIVE; i++) {
		if (add && live_pids[i] == 0) {
			live_pids[i] = pid;
			return;
		}
		if (!add && live_pids[i] == pid) {
			live_pids[i] = 0;
			return;
		}
	}
}

static int spawn(struct vmm_proc *p, char *const argv[], bool drop, uid_t uid, gid_t gid)
{
	int in[2], out[2], errp[2];

	memset(p, 0, sizeof(*p));
	p->pid = -1;
	p->in_fd = p->out_fd = p->err_fd = -1;
	if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0)
		return -errno;
	p->pid = fork();
	if (p->pid < 0)
		return -errno;
	if (p->pid == 0) {
		dup2(in[0], 0);
		dup2(out[1], 1);
		dup2(errp[1], 2);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (drop && (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 ||
			     setresuid(uid, uid, uid) < 0))
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	track(p->pid, true);
	close(in[0]);
	close(out[1]);
	close(errp[1]);
	p->in_fd = in[1];
	p->out_fd = out[0];
	p->err_fd = errp[0];
	fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
	fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
	return 0;
}

int vmm_start(struct vmm_proc *p, char *const argv[])
{
	return spawn(p, argv, false, 0, 0);
}

int vmm_start_as(struct vmm_proc *p, char *const argv[], uid_t uid, gid_t gid)
{
	return spawn(p, argv, true, uid, gid);
}

static void add_line(struct vmm_proc *p, const char *s, size_t n)
{
	if (n && s[n - 1] == '\r')
		n--;
	if (p->nr_lines < HARNESS_MAX_LINES)
		p->lines[p->nr_lines++] = strndup(s, n);
}

/* Reads whatever is available; returns false at EOF on both pipes. */
static bool pump(struct vmm_proc *p, int timeout_ms)
{
	struct pollfd fds[2] = {{.fd = p->out_fd, .events = POLLIN},
				{.fd = p->err_fd, .events = POLLIN}};
	char buf[4096];
	ssize_t n;

	if (p->out_fd < 0 && p->err_fd < 0)
		return false;
	if (poll(fds, 2, timeout_ms) <= 0)
		return true;
	if (p->out_fd >= 0 && (fds[0].revents & (POLLIN | POLLHUP))) {
		n = read(p->out_fd, buf, sizeof(buf));
		if (n == 0) {
			close(p->out_fd);
			p->out_fd = -1;
		}
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n') {
				add_line(p, p->partial, p->partial_len);
				p->partial_len = 0;
			} else if (p->partial_len < sizeof(p->partial) - 1) {
				p->partial[p->partial_len++] = buf[i];
			}
		}
	}
	if (p->err_fd >= 0 && (fds[1].revents & (POLLIN | POLLHUP))) {
		n = read(p->err_fd, buf, sizeof(buf));
		if (n == 0) {
			close(p->err_fd);
			p->err_fd = -1;
		}
		if (n > 0) {
			size_t room = sizeof(p->err_text) - 1 - p->err_len;
			size_t take = (size_t)n < room ? (size_t)n : room;
			memcpy(p->err_text + p->err_len, buf, take);
			p->err_len += take;
			p->err_text[p->err_len] = '\0';
		}
	}
	return true;
}

const char *vmm_wait_line(struct vmm_proc *p, const char *prefix, int timeout_ms)
{
	long long deadline = harness_deadline(timeout_ms);
	int seen = 0;

	for (;;) {
		for (; seen < p->nr_lines; seen++)
			if (strncmp(p->lines[seen], prefix, strlen(prefix)) == 0)
				return p->lines[seen];
		long long left = deadline - now_ms();
		if (left <= 0)
			return NULL;
		if (!pump(p, (int)(left < 100 ? left : 100)))
			return NULL;
	}
}

const char *vmm_value(struct vmm_proc *p, const char *key, char *buf, size_t len)
{
	size_t klen = strlen(key);
	const char *found = NULL;

	while (p->out_fd >= 0 && pump(p, 0) && p->out_fd >= 0) {
		struct pollfd fd = {.fd = p->out_fd, .events = POLLIN};
		if (poll(&fd, 1, 0) <= 0)
			break;
	}
	for (int i = 0; i < p->nr_lines; i++) {
		/* key=value may stand at the start of a line or after a space. */
		const char *s = p->lines[i];
		while ((s = strstr(s, key))) {
			if ((s == p->lines[i] || s[-1] == ' ') && s[klen] == '=') {
				found = s + klen + 1;
				break;
			}
			s += klen;
		}
	}
	if (!found)
		return NULL;
	size_t n = strcspn(found, " ");
	if (n >= len)
		n = len - 1;
	memcpy(buf, found, n);
	buf[n] = '\0';
	return buf;
}

int vmm_send(struct vmm_proc *p, const char *text)
{
	size_t len = strlen(text);

	return write(p->in_fd, text, len) == (ssize_t)len ? 0 : -EIO;
}

int vmm_wait(struct vmm_proc *p, int timeout_ms)
{
	long long deadline = harness_deadline(timeout_ms);
	int status;

	if (p->exited)
		return p->exit_status;
	for (;;) {
		pid_t r = waitpid(p->pid, &status, WNOHANG);
		if (r == p->pid) {
			track(p->pid, false);
			/* Drain what the VMM wrote before exiting. */
			while (pump(p, 50) && (p->out_fd >= 0 || p->err_fd >= 0))
				;
			p->exited = true;
			p->exit_status =
			    WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
			return p->exit_status;
		}
		if (now_ms() >= deadline)
			return -ETIMEDOUT;
		pump(p, 20);
	}
}

void vmm_kill(struct vmm_proc *p)
{
	if (p->pid > 0 && !p->exited) {
		kill(p->pid, SIGKILL);
		vmm_wait(p, 5000);
	}
}

void vmm_free(struct vmm_proc *p)
{
	vmm_kill(p);
	for (int i = 0; i < p->nr_lines; i++)
		free(p->lines[i]);
	p->nr_lines = 0;
	if (p->in_fd >= 0)
		close(p->in_fd);
	if (p->out_fd >= 0)
		close(p->out_fd);
	if (p->err_fd >= 0)
		close(p->err_fd);
	p->in_fd = p->out_fd = p->err_fd = -1;
}

void vmm_dump(const struct vmm_proc *p)
{
	fprintf(stderr, "---- guest console (%d lines) ----\n", p->nr_lines);
	for (int i = 0; i < p->nr_lines; i++)
		fprintf(stderr, "| %s\n", p->lines[i]);
	fprintf(stderr, "---- vmm stderr ----\n%s\n----\n", p->err_text);
}

int vmm_run_to_exit(struct vmm_proc *p, char *const argv[], int timeout_ms)
{
	int r = vmm_start(p, argv);

	if (r < 0)
		return r;
	close(p->in_fd);
	p->in_fd = -1;
	r = vmm_wait(p, timeout_ms);
	if (r < 0)
		vmm_kill(p);
	return r;
}

json_t *harness_call(const char *socket_path, const char *request_json, char *err_buf,
		     size_t err_len)
{
	struct fk_err err = {0};
	json_error_t jerr;
	json_t *req = json_loads(request_json, 0, &jerr), *reply = NULL;

	if (!req) {
		snprintf(err_buf, err_len, "bad request JSON: %s", jerr.text);
		return NULL;
	}
	if (control_call(socket_path, req, &reply, 60000, &err) < 0) {
		snprintf(err_buf, err_len, "%s", err.msg);
		reply = NULL;
	}
	json_decref(req);
	return reply;
}

static char *read_whole(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf = NULL;
	size_t len = 0;

	if (!f)
		return NULL;
	if (getdelim(&buf, &len, '\0', f) < 0) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	return buf;
}

int file_count_lines(const char *path)
{
	char *text = read_whole(path);
	int n = 0;

	for (char *p = text; p && *p; p++)
		n += *p == '\n';
	free(text);
	return n;
}

char *file_wait_line(const char *path, const char *prefix, int skip, int timeout_ms)
{
	long long deadline = harness_deadline(timeout_ms);

	for (;;) {
		char *text = read_whole(path), *line = text, *found = NULL;
		int n = 0;

		while (line && *line) {
			char *nl = strchr(line, '\n');
			if (!nl)
				break; /* an incomplete last line */
			if (n++ >= skip && strncmp(line, prefix, strlen(prefix)) == 0) {
				found = strndup(line, (size_t)(nl - line));
				break;
			}
			line = nl + 1;
		}
		free(text);
		if (found || now_ms() >= deadline)
			return found;
		usleep(20 * 1000);
	}
}

int fifo_send(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -EIO;
}

const char *line_value(const char *line, const char *key, char *buf, size_t len)
{
	size_t klen = strlen(key);
	const char *s = line;

	while ((s = strstr(s, key))) {
		if ((s == line || s[-1] == ' ') && s[klen] == '=') {
			size_t n = strcspn(s + klen + 1, " ");
			if (n >= len)
				n = len - 1;
			memcpy(buf, s + klen + 1, n);
			buf[n] = '\0';
			return buf;
		}
		s += klen;
	}
	return NULL;
}

int harness_tmpdir_create(char *out, size_t len, const char *tag)
{
	snprintf(out, len, "%s/forkd-%s-XXXXXX", harness_tmpdir(), tag);
	return mkdtemp(out) ? 0 : -1;
}

int harness_tmpdir_remove(const char *dir)
{
	char cmd[1024];
	pid_t pids[256];
	size_t n, killed = 0;

	/*
	 * A failed test may leave VMMs running (a source, its children): they
	 * name this directory, and would otherwise spin on for the rest of the
	 * run (seen: two probe VMMs eating a core each for two hours). Children
	 * appear as their zygote dies, hence a few rounds.
	 */
	for (int round = 0; round < 5 && (n = harness_vmm_pids(dir, pids, 256)) > 0; round++) {
		for (size_t i = 0; i < n; i++)
			if (kill(pids[i], SIGKILL) == 0)
				killed++;
		usleep(50 * 1000);
	}
	if (killed)
		fprintf(stderr, "harness: killed %zu VMM(s) still running in %s\n", killed, dir);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

const char *vmm_need_line(struct vmm_proc *p, const char *prefix, int timeout_ms)
{
	const char *line = vmm_wait_line(p, prefix, timeout_ms);

	if (!line) {
		fprintf(stderr, "no console line starting with '%s'\n", prefix);
		vmm_dump(p);
	}
	return line;
}

json_t *harness_call_expect(const char *socket_path, const char *request_json, bool want_ok)
{
	char err[512];
	json_t *reply = harness_call(socket_path, request_json, err, sizeof(err));

	if (!reply) {
		fprintf(stderr, "%s: %s\n", request_json, err);
		return NULL;
	}
	if (json_is_true(json_object_get(reply, "ok")) != want_ok) {
		char *text = json_dumps(reply, 0);
		fprintf(stderr, "%s -> %s\n", request_json, text);
		free(text);
		json_decref(reply);
		return NULL;
	}
	return reply;
}

const char *vmm_wait_containing(struct vmm_proc *p, const char *text, const char *also,
				const char *unless, int timeout_ms)
{
	long long deadline = harness_deadline(timeout_ms);

	for (;;) {
		for (int i = 0; i < p->nr_lines; i++) {
			const char *l = p->lines[i];
			if (strstr(l, text) && (!also || strstr(l, also)) &&
			    (!unless || !strstr(l, unless)))
				return l;
		}
		if (p->exited || now_ms() >= deadline)
			break;
		/* Pumps the pipes for up to 100 ms. */
		vmm_wait_line(p, "\x01", 100);
	}
	fprintf(stderr, "no console line containing '%s'\n", text);
	vmm_dump(p);
	return NULL;
}

int vmm_count_lines(const struct vmm_proc *p, const char *prefix)
{
	int n = 0;

	for (int i = 0; i < p->nr_lines; i++)
		n += strncmp(p->lines[i], prefix, strlen(prefix)) == 0;
	return n;
}

void harness_set_vmm_start_timeout(void)
{
	char ms[24];

	snprintf(ms, sizeof(ms), "%lld", harness_deadline(30000) - now_ms());
	setenv("FORKD_VMM_START_TIMEOUT_MS", ms, 1);
}

size_t harness_vmm_pids(const char *needle, pid_t *out, size_t max)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	size_t n = 0;

	while (d && (e = readdir(d)) && n < max) {
		char path[64], cmd[4096];
		pid_t pid = (pid_t)atoi(e->d_name);
		ssize_t len;
		int fd;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, cmd, sizeof(cmd) - 1);
		close(fd);
		if (len <= 0)
			continue; /* a zombie has an empty cmdline */
		cmd[len] = '\0';
		/* argv[0] is forkd-vmm (a daemon's own argv names it after --vmm). */
		if (strlen(cmd) < 9 || strcmp(cmd + strlen(cmd) - 9, "forkd-vmm") != 0)
			continue;
		for (ssize_t i = 0; i < len; i++)
			if (!cmd[i])
				cmd[i] = ' ';
		if (strstr(cmd, needle))
			out[n++] = pid;
	}
	if (d)
		closedir(d);
	return n;
}
