/* SPDX-License-Identifier: MIT */
/*
 * Starting forkd-vmm processes for the daemon: detached (own session, stdin
 * and stdout on /dev/null, stderr to a file), not killed when the daemon
 * dies, watched through a pidfd; and small process helpers around pidfds.
 * posix_spawn rather than fork: the daemon is multi-threaded, and the child
 * must do nothing between the fork and the exec that could take a lock.
 */
#ifndef FORKD_DAEMON_VMM_LAUNCH_H
#define FORKD_DAEMON_VMM_LAUNCH_H

#include <signal.h>
#include <stddef.h>
#include <sys/types.h>

#include "util/err.h"

/*
 * Starts argv[0] with argv, stderr to err_path (truncated); *pid gets the child. ready_fd,
 * unless -1, becomes the child's descriptor VMM_LAUNCH_READY_FD (for forkd-vmm --ready-fd;
 * argv must say so).
 */
#define VMM_LAUNCH_READY_FD 3
int vmm_launch(char *const argv[], const char *err_path, int ready_fd, pid_t *pid,
	       struct fk_err *err);

/* pidfd_open(2): -errno on failure. The descriptor is close-on-exec. */
int fk_pidfd_open(pid_t pid);
/* pidfd_send_signal(2): 0 or -errno. */
int fk_pidfd_kill(int pidfd, int sig);
/*
 * Reaps the process behind pidfd if it is our exited child: 1 and *status
 * (exit code, or 128 + signal; *exited_code true for a normal exit), 0 if it
 * is not our child or has not exited.
 */
int fk_pidfd_reap(int pidfd, int *status, int *exited_code);

/* The first line of a file (a VMM's stderr), "" if none; for error messages. */
void vmm_first_line(const char *path, char *buf, size_t len);

/* forkd-vmm in the directory of the running binary. */
int vmm_default_path(char *buf, size_t len, struct fk_err *err);

/* rm -rf path (no symlinks followed); 0 or -errno, a missing path is 0. */
int fk_remove_tree(const char *path);

#endif
