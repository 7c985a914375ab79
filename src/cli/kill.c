/* SPDX-License-Identifier: MIT */
/*
 * `forkd kill DIR`: ends the children `forkd spawn` recorded under DIR.
 *
 * A pid file can outlive its process and the pid be reused, so a pid is only
 * signalled while its command line still names that child's control socket.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/cli.h"

#define KILL_GRACE_MS 2000
#define KILL_POLL_US  10000
#define CMDLINE_MAX   8192

struct victim {
	long index;
	pid_t pid;
	bool alive;
	bool killed; /* needed SIGKILL */
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A zombie waiting for init to reap it is gone for our purposes. */
static bool process_gone(pid_t pid)
{
	char path[64], buf[256], *paren;
	FILE *f;
	bool gone = false;

	if (kill(pid, 0) < 0 && errno == ESRCH)
		return true;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	if (fgets(buf, sizeof(buf), f)) {
		paren = strrchr(buf, ')');
		gone = paren && (paren[2] == 'Z' || paren[2] == 'X');
	}
	fclose(f);
	return gone;
}

/* Whether the path argument `arg` of process pid names the same file as `want`. */
static bool same_file_arg(pid_t pid, const char *arg, const struct stat *want)
{
	char path[PATH_MAX + 64];
	struct stat have;

	if (arg[0] == '/')
		snprintf(path, sizeof(path), "%s", arg);
	else
		snprintf(path, sizeof(path), "/proc/%d/cwd/%s", (int)pid, arg);
	return stat(path, &have) == 0 && have.st_dev == want->st_dev && have.st_ino == want->st_ino;
}

/*
 * Whether pid's --control argument is the same socket as `sock`, or (a child
 * forked by `spawn --mode fanout`, whose command line is its fan-out
 * source's) its --fanout-dir is `dir`.
 */
static bool is_child_vmm(pid_t pid, const char *sock, const char *dir)
{
	struct stat dir_st;
	bool dir_ok = stat(dir, &dir_st) == 0;
	char path[64], cmdline[CMDLINE_MAX], arg_path[PATH_MAX + 64];
	struct stat want, have;
	bool want_ok, match = false;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return false;
	n = fread(cmdline, 1, sizeof(cmdline) - 1, f);
	fclose(f);
	cmdline[n] = '\0';
	want_ok = stat(sock, &want) == 0;
	for (size_t off = 0; off < n; off += strlen(cmdline + off) + 1) {
		const char *arg = cmdline + off, *next;

		if (strcmp(arg, "--fanout-dir") == 0) {
			next = arg + strlen(arg) + 1;
			if (next < cmdline + n && dir_ok && same_file_arg(pid, next, &dir_st))
				return true;
			continue;
		}
		if (strcmp(arg, "--control") != 0)
			continue;
		next = arg + strlen(arg) + 1;
		if (next >= cmdline + n)
			break;
		if (next[0] == '/')
			snprintf(arg_path, sizeof(arg_path), "%s", next);
		else
			snprintf(arg_path, sizeof(arg_path), "/proc/%d/cwd/%s", (int)pid, next);
		if (want_ok && stat(arg_path, &have) == 0)
			match = have.st_dev == want.st_dev && have.st_ino == want.st_ino;
		else /* the socket is gone: fall back to the name */
			match = strlen(next) >= strlen(sock) &&
				strcmp(next + strlen(next) - strlen(sock), sock) == 0;
		break;
	}
	return match;
}

static int read_pid(const char *path, pid_t *pid)
{
	FILE *f = fopen(path, "r");
	int v, ok;

	if (!f)
		return -errno;
	ok = fscanf(f, "%d", &v) == 1 && v > 1;
	fclose(f);
	if (!ok)
		return -EINVAL;
	*pid = v;
	return 0;
}

static int by_index(const void *a, const void *b)
{
	const struct victim *x = a, *y = b;

	return (x->index > y->index) - (x->index < y->index);
}

/* Child directories named child-<digits>, with their pid files. */
static int collect_victims(const char *dir, struct victim **out, size_t *count)
{
	struct victim *list = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d = opendir(dir);

	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char pid_path[PATH_MAX], sock[PATH_MAX], *end;
		const char *digits;
		struct victim v = {0};
		int ret;

		if (strncmp(de->d_name, "child-", 6) != 0)
			continue;
		digits = de->d_name + 6;
		if (!isdigit((unsigned char)digits[0]))
			continue;
		v.index = strtol(digits, &end, 10);
		if (*end)
			continue;
		snprintf(pid_path, sizeof(pid_path), "%s/%s/pid", dir, de->d_name);
		snprintf(sock, sizeof(sock), "%s/%s/control.sock", dir, de->d_name);
		ret = read_pid(pid_path, &v.pid);
		if (ret == -ENOENT)
			continue;
		if (ret < 0) {
			fprintf(stderr, "forkd: kill: %s: expected a process id\n", pid_path);
			continue;
		}
		v.alive = !process_gone(v.pid) && is_child_vmm(v.pid, sock, dir);
		if (n == cap) {
			struct victim *grown;

			cap = cap ? cap * 2 : 64;
			grown = realloc(list, cap * sizeof(*list));
			if (!grown) {
				free(list);
				closedir(d);
				return -ENOMEM;
			}
			list = grown;
		}
		list[n++] = v;
	}
	closedir(d);
	if (n)
		qsort(list, n, sizeof(*list), by_index);
	*out = list;
	*count = n;
	return 0;
}

static void signal_alive(struct victim *list, size_t n, int sig)
{
	for (size_t i = 0; i < n; i++)
		if (list[i].alive && kill(list[i].pid, sig) < 0 && errno == ESRCH)
			list[i].alive = false;
}

/* Returns how many are still alive after waiting up to ms. */
static size_t wait_gone(struct victim *list, size_t n, double ms)
{
	double deadline = now_ms() + ms;
	size_t alive;

	for (;;) {
		alive = 0;
		for (size_t i = 0; i < n; i++) {
			if (list[i].alive && process_gone(list[i].pid))
				list[i].alive = false;
			alive += list[i].alive;
		}
		if (alive == 0 || now_ms() >= deadline)
			return alive;
		usleep(KILL_POLL_US);
	}
}

int cli_kill(int argc, char **argv)
{
	struct victim *list = NULL;
	size_t n = 0, left, terminated = 0, killed = 0, not_running = 0;
	bool *was_alive;
	int ret;

	if (argc != 1 || argv[0][0] == '-')
		return cli_usage_error("%s", "kill: expected one directory given to spawn --out");
	ret = collect_victims(argv[0], &list, &n);
	if (ret < 0) {
		fprintf(stderr,
			"forkd: kill: '%s': %s (expected a directory given to spawn --out)\n",
			argv[0], strerror(-ret));
		return CLI_EXIT_USAGE;
	}
	if (n == 0) {
		fprintf(stderr, "forkd: kill: '%s': no children recorded (no child-*/pid files)\n",
			argv[0]);
		free(list);
		return CLI_EXIT_NOT_OK;
	}
	was_alive = calloc(n, sizeof(*was_alive));
	if (!was_alive) {
		free(list);
		return CLI_EXIT_NOT_OK;
	}
	for (size_t i = 0; i < n; i++)
		was_alive[i] = list[i].alive;
	signal_alive(list, n, SIGTERM);
	left = wait_gone(list, n, KILL_GRACE_MS);
	if (left) {
		for (size_t i = 0; i < n; i++)
			list[i].killed = list[i].alive;
		signal_alive(list, n, SIGKILL);
		left = wait_gone(list, n, KILL_GRACE_MS);
	}
	for (size_t i = 0; i < n; i++) {
		const char *result = !was_alive[i]    ? "not running"
				     : list[i].alive  ? "still running"
				     : list[i].killed ? "killed"
						      : "terminated";
		char pid_path[PATH_MAX];

		printf("{\"child\":%ld,\"pid\":%d,\"result\":\"%s\"}\n", list[i].index,
		       (int)list[i].pid, result);
		not_running += !was_alive[i];
		killed += was_alive[i] && !list[i].alive && list[i].killed;
		terminated += was_alive[i] && !list[i].alive && !list[i].killed;
		if (!list[i].alive) {
			snprintf(pid_path, sizeof(pid_path), "%s/child-%ld/pid", argv[0],
				 list[i].index);
			unlink(pid_path);
		}
	}
	printf("{\"terminated\":%zu,\"killed\":%zu,\"not_running\":%zu,\"still_running\":%zu}\n",
	       terminated, killed, not_running, left);
	free(was_alive);
	free(list);
	if (left)
		fprintf(stderr, "forkd: kill: %zu children of '%s' survived SIGKILL\n", left,
			argv[0]);
	return fflush(stdout) == 0 && left == 0 ? 0 : CLI_EXIT_NOT_OK;
}
