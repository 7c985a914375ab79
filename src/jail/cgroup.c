/* SPDX-License-Identifier: MIT */
#include "jail/cgroup.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define CGROUP_PATH_MAX 4096

int cgroup_parse_cpu_max(const char *s, uint64_t *quota_us, uint64_t *period_us, struct fk_err *err)
{
	unsigned long long q, p = CGROUP_DEFAULT_CPU_PERIOD_US;
	char *end;

	errno = 0;
	if (!isdigit((unsigned char)s[0]))
		goto bad;
	q = strtoull(s, &end, 10);
	if (errno)
		goto bad;
	if (*end == '/') {
		if (!isdigit((unsigned char)end[1]))
			goto bad;
		p = strtoull(end + 1, &end, 10);
		if (errno)
			goto bad;
	}
	if (*end || q < 1000 || p < 1000 || p > 1000000)
		goto bad;
	*quota_us = q;
	*period_us = p;
	return 0;
bad:
	return fk_fail(err, EINVAL,
		       "--cpu-max '%s': expected QUOTA[/PERIOD] in microseconds, e.g. 50000/100000 "
		       "for half a CPU (quota at least 1000, period 1000 to 1000000, default "
		       "%d)",
		       s, CGROUP_DEFAULT_CPU_PERIOD_US);
}

bool cgroup_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 64 || !strcmp(name, ".") || !strcmp(name, ".."))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)name[i]) && !strchr("._-", name[i]))
			return false;
	return true;
}

bool cgroup_has_word(const char *text, const char *word)
{
	size_t n = strlen(word);

	for (const char *p = text; (p = strstr(p, word)); p += n) {
		bool starts = p == text || isspace((unsigned char)p[-1]);
		bool ends = p[n] == '\0' || isspace((unsigned char)p[n]);
		if (starts && ends)
			return true;
	}
	return false;
}

/* given: the --cgroup the user gave; path: the directory looked at (it or its parent). */
static int check_v2(const char *given, const char *path, struct fk_err *err)
{
	struct statfs fs;
	char where[CGROUP_PATH_MAX + 16] = "";

	if (strcmp(given, path) != 0)
		snprintf(where, sizeof(where), " (its parent %s)", path);
	if (statfs(path, &fs) < 0)
		return fk_fail_errno(err, errno, "--cgroup %s%s: cannot look at it", given, where);
	if (fs.f_type == CGROUP2_SUPER_MAGIC)
		return 0;
	return fk_fail(err, ENOTSUP,
		       "--cgroup %s%s: not on a cgroup v2 filesystem (%s): cgroup v2 is not "
		       "mounted there; mount it (mount -t cgroup2 none /sys/fs/cgroup) or give "
		       "--cgroup a directory of the cgroup2 mount",
		       given, where,
		       fs.f_type == TMPFS_MAGIC		 ? "a tmpfs: this host mounts cgroup v1 "
							   "hierarchies under it"
		       : fs.f_type == CGROUP_SUPER_MAGIC ? "cgroup v1"
							 : "another filesystem");
}

int cgroup_check_v2(const char *path, struct fk_err *err)
{
	return check_v2(path, path, err);
}

static int read_text(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

/* One write(2) of text: cgroup files take each value in a single write. */
static int write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int e;

	if (fd < 0)
		return -errno;
	n = write(fd, text, strlen(text));
	e = errno;
	close(fd);
	if (n < 0)
		return -e;
	return (size_t)n == strlen(text) ? 0 : -EIO;
}

/* What a refused cgroup write means, in words. */
static const char *refusal(int e)
{
	switch (e) {
	case EACCES:
	case EPERM:
		return "permission denied (forkd-vmm must run as root, or the cgroup must be "
		       "delegated to its user)";
	case EBUSY:
		return "busy: this cgroup has processes of its own, and cgroup v2 lets only a "
		       "cgroup without processes hand controllers to its children";
	case EINVAL:
		return "the kernel refused the value";
	case ENOENT:
		return "no such file: the controller is not enabled for this cgroup";
	case ENOTSUP:
		return "not supported by this kernel";
	default:
		return strerror(e);
	}
}

static int write_cg(const char *dir, const char *file, const char *value, const char *option,
		    struct fk_err *err)
{
	char path[CGROUP_PATH_MAX];
	int ret;

	if (snprintf(path, sizeof(path), "%s/%s", dir, file) >= (int)sizeof(path))
		return fk_fail(err, ENAMETOOLONG, "%s: %s/%s: path too long", option, dir, file);
	ret = write_text(path, value);
	if (ret < 0)
		return fk_fail(err, -ret, "%s: writing '%s' to %s: %s", option, value, path,
			       refusal(-ret));
	return 0;
}

static const char *const controller_option[][2] = {
    {"memory", "--memory-max"}, {"cpu", "--cpu-max"}, {"pids", "--pids-max"}};

static bool wants(const struct cgroup_limits *lim, int i)
{
	return i == 0 ? lim->memory_max != 0 : i == 1 ? lim->cpu_quota_us != 0 : lim->pids_max != 0;
}

int cgroup_enable_controllers(const char *parent, const struct cgroup_limits *lim,
			      struct fk_err *err)
{
	char path[CGROUP_PATH_MAX + 64], grand[CGROUP_PATH_MAX], text[1024], add[32];
	char *slash;
	int ret;

	for (int i = 0; i < 3; i++) {
		const char *ctl = controller_option[i][0], *opt = controller_option[i][1];

		if (!wants(lim, i))
			continue;
		snprintf(path, sizeof(path), "%s/cgroup.controllers", parent);
		ret = read_text(path, text, sizeof(text));
		if (ret < 0)
			return fk_fail(err, -ret, "%s: %s: cannot read: %s", opt, path,
				       strerror(-ret));
		snprintf(add, sizeof(add), "+%s", ctl);
		if (!cgroup_has_word(text, ctl)) {
			/* Not handed down to parent: ask its own parent, when that is cgroup v2. */
			snprintf(grand, sizeof(grand), "%s", parent);
			slash = strrchr(grand, '/');
			if (slash && slash != grand)
				*slash = '\0';
			snprintf(path, sizeof(path), "%s/cgroup.subtree_control", grand);
			if (!slash || slash == grand || cgroup_check_v2(grand, err) < 0 ||
			    write_text(path, add) < 0) {
				return fk_fail(
				    err, ENOTSUP,
				    "%s: the %s controller is not delegated to %s (not in its "
				    "cgroup.controllers: '%.200s'); enable it in %s",
				    opt, ctl, parent, strtok(text, "\n") ? text : "", path);
			}
		}
		snprintf(path, sizeof(path), "%s/cgroup.subtree_control", parent);
		ret = read_text(path, text, sizeof(text));
		if (ret == 0 && cgroup_has_word(text, ctl))
			continue;
		ret = write_cg(parent, "cgroup.subtree_control", add, opt, err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int cgroup_write_limits(const char *cg, const struct cgroup_limits *lim, struct fk_err *err)
{
	char value[64], path[CGROUP_PATH_MAX + 64];
	int ret;

	if (lim->memory_max) {
		snprintf(value, sizeof(value), "%" PRIu64, lim->memory_max);
		ret = write_cg(cg, "memory.max", value, "--memory-max", err);
		if (ret < 0)
			return ret;
		/* The limit is RAM: without this an over-limit guest would swap, not stop. */
		snprintf(path, sizeof(path), "%s/memory.swap.max", cg);
		if (access(path, F_OK) == 0) {
			ret = write_cg(cg, "memory.swap.max", "0", "--memory-max", err);
			if (ret < 0)
				return ret;
		}
	}
	if (lim->cpu_quota_us) {
		snprintf(value, sizeof(value), "%" PRIu64 " %" PRIu64, lim->cpu_quota_us,
			 lim->cpu_period_us ? lim->cpu_period_us : CGROUP_DEFAULT_CPU_PERIOD_US);
		ret = write_cg(cg, "cpu.max", value, "--cpu-max", err);
		if (ret < 0)
			return ret;
	}
	if (lim->pids_max) {
		snprintf(value, sizeof(value), "%" PRIu64, lim->pids_max);
		ret = write_cg(cg, "pids.max", value, "--pids-max", err);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/*
 * The remover: waits until the VMM has joined (a byte on the pipe; EOF
 * without one means it never did), then until cgroup.events says nothing is
 * populated any more, and removes the cgroup.
 */
static void __attribute__((noreturn)) remover_main(const char *cg, int pipe_fd)
{
	char events[CGROUP_PATH_MAX + 16], text[256], b;
	int null_fd, fd;

	prctl(PR_SET_NAME, "forkd-cgroup");
	setsid();
	/* Not the VMM's stdout/stderr: whoever reads them must see EOF when the VMM exits. */
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		dup2(null_fd, STDERR_FILENO);
	}
	/* Nothing of the VM's: keep the pipe alone, as fd 3. */
	if (pipe_fd != 3) {
		dup2(pipe_fd, 3);
		pipe_fd = 3;
	}
	close_range(4, ~0U, 0);
	if (read(pipe_fd, &b, 1) != 1) {
		rmdir(cg);
		_exit(0);
	}
	close(pipe_fd);
	snprintf(events, sizeof(events), "%s/cgroup.events", cg);
	fd = open(events, O_RDONLY | O_CLOEXEC);
	for (;;) {
		struct pollfd pfd = {.fd = fd, .events = POLLPRI};
		ssize_t n;

		if (fd < 0)
			_exit(1);
		n = pread(fd, text, sizeof(text) - 1, 0);
		if (n < 0)
			_exit(1);
		text[n] = '\0';
		if (strstr(text, "populated 0") && (rmdir(cg) == 0 || errno == ENOENT))
			_exit(0);
		/* cgroup.events wakes POLLPRI on change; the timeout is a safety net. */
		poll(&pfd, 1, 1000);
	}
}

static int start_remover(const char *cg, int *pipe_w, struct fk_err *err)
{
	int p[2], status;
	pid_t pid;

	if (pipe2(p, O_CLOEXEC) < 0)
		return fk_fail_errno(err, errno, "cgroup %s: pipe", cg);
	pid = fork();
	if (pid < 0) {
		close(p[0]);
		close(p[1]);
		return fk_fail_errno(err, errno, "cgroup %s: fork its remover", cg);
	}
	if (pid == 0) {
		/* Twice: the remover is nobody's child here, the VMM's waits never see it. */
		close(p[1]);
		if (fork() == 0)
			remover_main(cg, p[0]);
		_exit(0);
	}
	close(p[0]);
	waitpid(pid, &status, 0);
	*pipe_w = p[1];
	return 0;
}

int cgroup_vm_join(const char *parent, const char *name, const struct cgroup_limits *lim,
		   char *path, size_t path_len, struct fk_err *err)
{
	char leaf[80], grand[CGROUP_PATH_MAX], pid[32], *slash;
	int ret, pipe_w = -1;

	if (name && !cgroup_name_ok(name))
		return fk_fail(err, EINVAL,
			       "--cgroup-name '%s': expected 1 to 64 of [A-Za-z0-9._-]", name);
	if (parent[0] != '/')
		return fk_fail(err, EINVAL, "--cgroup %s: expected an absolute path", parent);
	if (name)
		snprintf(leaf, sizeof(leaf), "vm-%s", name);
	else
		snprintf(leaf, sizeof(leaf), "vm-%d", (int)getpid());
	if (snprintf(path, path_len, "%s/%s", parent, leaf) >= (int)path_len)
		return fk_fail(err, ENAMETOOLONG, "--cgroup %s: path too long", parent);
	/* PARENT may be new, but only inside a cgroup v2 mount. */
	if (access(parent, F_OK) < 0) {
		snprintf(grand, sizeof(grand), "%s", parent);
		slash = strrchr(grand, '/');
		if (slash && slash != grand)
			*slash = '\0';
		ret = check_v2(parent, grand, err);
		if (ret < 0)
			return ret;
		if (mkdir(parent, 0755) < 0 && errno != EEXIST)
			return fk_fail_errno(err, errno, "--cgroup %s: cannot create", parent);
	}
	ret = cgroup_check_v2(parent, err);
	if (ret < 0)
		return ret;
	ret = cgroup_enable_controllers(parent, lim, err);
	if (ret < 0)
		return ret;
	if (mkdir(path, 0755) < 0) {
		if (errno == EEXIST)
			return fk_fail(err, EEXIST,
				       "cgroup %s exists: another VM has this name (give another "
				       "--cgroup-name)",
				       path);
		return fk_fail_errno(err, errno, "cgroup %s: cannot create: %s", path,
				     refusal(errno));
	}
	ret = cgroup_write_limits(path, lim, err);
	if (ret == 0)
		ret = start_remover(path, &pipe_w, err);
	if (ret < 0) {
		rmdir(path);
		return ret;
	}
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	ret = write_cg(path, "cgroup.procs", pid, "--cgroup", err);
	if (ret == 0 && write(pipe_w, "j", 1) != 1)
		ret = fk_fail_errno(err, errno, "cgroup %s: tell its remover", path);
	/* On failure the remover reads EOF and removes the empty cgroup. */
	close(pipe_w);
	return ret;
}
