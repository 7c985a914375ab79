/* SPDX-License-Identifier: MIT */
#include "serve_proc.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

extern char **environ;

const char *serve_cli(void)
{
	static char path[512]; /* built once per process from the environment */
	const char *b = getenv("FORKD_BUILD");

	snprintf(path, sizeof(path), "%s/forkd", b && *b ? b : "build");
	return path;
}

/*
 * 1 once a daemon answers GET /healthz on sock. A connect alone is not enough: a daemon
 * killed during a posix_spawn leaves its listening socket open in the child until that
 * child's exec, so a connect can reach a socket nobody will answer, while the next daemon
 * is still re-adopting and not yet listening.
 */
static int try_connect(const char *sock)
{
	static const char req[] = "GET /healthz HTTP/1.0\r\n\r\n";
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	struct timeval tv = {.tv_sec = 10};
	char buf[16] = "";
	int fd, ok;

	if (strlen(sock) >= sizeof(a.sun_path))
		return 0;
	memcpy(a.sun_path, sock, strlen(sock) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	     write(fd, req, sizeof(req) - 1) == (ssize_t)(sizeof(req) - 1) &&
	     read(fd, buf, sizeof(buf) - 1) >= 7 && strncmp(buf, "HTTP/1.", 7) == 0;
	close(fd);
	return ok;
}

/* The daemon log's last lines on stderr: in the nested test host the file is gone after. */
static void print_log_tail(const char *log)
{
	char buf[4096];
	ssize_t n = 0;
	off_t size;
	int fd = open(log, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	if (size > 0)
		n = pread(fd, buf, sizeof(buf) - 1,
			  size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0);
	close(fd);
	if (n > 0) {
		buf[n] = '\0';
		fprintf(stderr, "--- the end of %s:\n%s\n---\n", log, buf);
	}
}

pid_t serve_start(const char *state, const char *sock, const char *log, char *const extra[])
{
	char *argv[24] = {(char *)serve_cli(), "serve",	     "--state-dir", (char *)state,
			  "--socket",	       (char *)sock, "--vmm",	    (char *)harness_vmm()};
	posix_spawn_file_actions_t fa;
	int a = 8, status;
	pid_t pid;

	for (int i = 0; extra && extra[i] && a < 23; i++)
		argv[a++] = extra[i];
	argv[a] = NULL;
	harness_set_vmm_start_timeout();
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log, O_WRONLY | O_CREAT | O_APPEND,
					 0600);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, log, O_WRONLY | O_CREAT | O_APPEND,
					 0600);
	assert_int_equal(posix_spawn(&pid, argv[0], &fa, NULL, argv, environ), 0);
	posix_spawn_file_actions_destroy(&fa);
	/*
	 * Re-adopting tens of VMs (itest_serve restarts a daemon with 54) takes well under a
	 * second natively, and minutes in the nested test host's TCG.
	 */
	for (long long end = harness_deadline(60000); now_ms() < end; usleep(20 * 1000)) {
		if (try_connect(sock))
			return pid;
		if (waitpid(pid, &status, WNOHANG) == pid) {
			print_log_tail(log);
			fail_msg("forkd serve exited (status 0x%x) before answering on %s (see %s)",
				 status, sock, log);
		}
	}
	print_log_tail(log);
	fail_msg("forkd serve did not answer on %s (see %s)", sock, log);
	return -1;
}

void serve_stop(pid_t *pid, int sig)
{
	int status;

	if (!*pid)
		return;
	kill(*pid, sig);
	waitpid(*pid, &status, 0);
	*pid = 0;
}
