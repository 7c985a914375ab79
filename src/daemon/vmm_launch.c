/* SPDX-License-Identifier: MIT */
#include "daemon/vmm_launch.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

extern char **environ;

int vmm_launch(char *const argv[], const char *err_path, int ready_fd, pid_t *pid,
	       struct fk_err *err)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, defaults;
	int ret;

	sigemptyset(&none);
	sigemptyset(&defaults);
	sigaddset(&defaults, SIGPIPE);
	sigaddset(&defaults, SIGCHLD);
	sigaddset(&defaults, SIGINT);
	sigaddset(&defaults, SIGTERM);
	sigaddset(&defaults, SIGHUP);
	ret = posix_spawn_file_actions_init(&fa);
	if (ret)
		return fk_fail_errno(err, ret, "%s: spawn file actions", argv[0]);
	ret = posix_spawnattr_init(&attr);
	if (ret) {
		posix_spawn_file_actions_destroy(&fa);
		return fk_fail_errno(err, ret, "%s: spawn attributes", argv[0]);
	}
	ret = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	/* dup2 onto another number clears close-on-exec: only the child gets it. */
	if (!ret && ready_fd >= 0 && ready_fd != VMM_LAUNCH_READY_FD)
		ret = posix_spawn_file_actions_adddup2(&fa, ready_fd, VMM_LAUNCH_READY_FD);
	else if (!ret && ready_fd >= 0)
		ret = EINVAL; /* the caller keeps it above the standard descriptors and 3 */
	if (!ret)
		ret = posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	if (!ret)
		ret = posix_spawn_file_actions_addopen(&fa, 2, err_path,
						       O_WRONLY | O_CREAT | O_TRUNC, 0644);
	/* Its own session: no terminal signals, and it outlives the daemon. */
	if (!ret)
		ret = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK |
							  POSIX_SPAWN_SETSIGDEF);
	if (!ret)
		ret = posix_spawnattr_setsigmask(&attr, &none);
	if (!ret)
		ret = posix_spawnattr_setsigdefault(&attr, &defaults);
	if (!ret)
		ret = posix_spawn(pid, argv[0], &fa, &attr, argv, environ);
	posix_spawnattr_destroy(&attr);
	posix_spawn_file_actions_destroy(&fa);
	if (ret)
		return fk_fail_errno(err, ret, "cannot start %s (stderr to %s)", argv[0], err_path);
	return 0;
}

int fk_pidfd_open(pid_t pid)
{
	long fd = syscall(SYS_pidfd_open, pid, 0);

	return fd < 0 ? -errno : (int)fd;
}

int fk_pidfd_kill(int pidfd, int sig)
{
	return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

int fk_pidfd_reap(int pidfd, int *status, int *exited_code)
{
	siginfo_t si;

	memset(&si, 0, sizeof(si));
	if (waitid((idtype_t)P_PIDFD, (id_t)pidfd, &si, WEXITED | WNOHANG) < 0 || si.si_pid == 0)
		return 0;
	*exited_code = si.si_code == CLD_EXITED;
	*status = si.si_code == CLD_EXITED ? si.si_status : 128 + si.si_status;
	return 1;
}

void vmm_first_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");

	buf[0] = '\0';
	if (!f)
		return;
	if (fgets(buf, (int)len, f))
		buf[strcspn(buf, "\n")] = '\0';
	fclose(f);
}

int vmm_default_path(char *buf, size_t len, struct fk_err *err)
{
	char exe[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n < 0)
		return fk_fail_errno(err, errno, "/proc/self/exe: cannot find forkd's directory");
	exe[n] = '\0';
	slash = strrchr(exe, '/');
	if (slash)
		*slash = '\0';
	if ((size_t)snprintf(buf, len, "%s/forkd-vmm", exe) >= len)
		return fk_fail(err, ENAMETOOLONG, "%s/forkd-vmm: path too long", exe);
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

int fk_remove_tree(const char *path)
{
	if (access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	return nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS) < 0 ? -errno : 0;
}
