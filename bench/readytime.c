/* SPDX-License-Identifier: MIT */
/*
 * readytime: runs a VMM command, waits for a console line starting with a
 * prefix, and prints one JSON object with the time from fork to that line
 * and the VMM's memory at that moment, excluding the guest-RAM mapping
 * (any mapping at least --mem-mib large). Then kills the VMM.
 *
 *   readytime --prefix READY|--contains STR --mem-mib 256 [--timeout-ms N] [--send STR] -- CMD...
 *
 * --send STR writes STR and a newline to the command's stdin (a pipe) right
 * after the start, e.g. `ping` to a VMM with `--serial-in stdin`, so that the
 * time to the answer is the time until the guest reads its console.
 */
#include <errno.h>
#include <stdbool.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Sums Rss and Private_* of mappings smaller than guest_bytes (kB). */
static void vmm_memory(pid_t pid, unsigned long long guest_bytes, double *rss_mib,
		       double *private_mib)
{
	char path[64], line[512];
	unsigned long long start, end, kb, rss = 0, priv = 0;
	int skip = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "r");
	if (!f) {
		*rss_mib = *private_mib = -1;
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 &&
		    strchr(line, '-') < strchr(line, ' ')) {
			skip = end - start >= guest_bytes;
			continue;
		}
		if (skip)
			continue;
		if (sscanf(line, "Rss: %llu kB", &kb) == 1)
			rss += kb;
		else if (sscanf(line, "Private_Clean: %llu kB", &kb) == 1 ||
			 sscanf(line, "Private_Dirty: %llu kB", &kb) == 1)
			priv += kb;
	}
	fclose(f);
	*rss_mib = rss / 1024.0;
	*private_mib = priv / 1024.0;
}

int main(int argc, char **argv)
{
	const char *prefix = "READY";
	bool contains = false; /* match anywhere in the line, not only at its start */
	const char *send = NULL;
	unsigned long long mem_mib = 0;
	int timeout_ms = 30000, i, out[2], in[2] = {-1, -1};
	char buf[65536];
	size_t have = 0;
	double t0, rss, priv;
	pid_t pid;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--prefix") && i + 1 < argc)
			prefix = argv[++i];
		else if (!strcmp(argv[i], "--contains") && i + 1 < argc) {
			prefix = argv[++i];
			contains = true;
		} else if (!strcmp(argv[i], "--mem-mib") && i + 1 < argc)
			mem_mib = strtoull(argv[++i], NULL, 10);
		else if (!strcmp(argv[i], "--send") && i + 1 < argc)
			send = argv[++i];
		else if (!strcmp(argv[i], "--timeout-ms") && i + 1 < argc)
			timeout_ms = atoi(argv[++i]);
		else if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else {
			fprintf(stderr, "readytime: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (i >= argc || mem_mib == 0) {
		fprintf(stderr,
			"usage: readytime --prefix P --mem-mib N [--timeout-ms N] [--send STR] -- "
			"CMD...\n");
		return 2;
	}
	if (pipe(out) < 0 || (send && pipe(in) < 0))
		return 1;
	/* A VMM that exits early must not kill us with SIGPIPE. */
	signal(SIGPIPE, SIG_IGN);
	t0 = now_ms();
	pid = fork();
	if (pid == 0) {
		dup2(out[1], 1);
		close(out[0]);
		if (send) {
			dup2(in[0], 0);
			close(in[1]);
		}
		execvp(argv[i], argv + i);
		_exit(127);
	}
	close(out[1]);
	if (send) {
		/* The pipe buffers it until the VMM reads its console. */
		close(in[0]);
		if (dprintf(in[1], "%s\n", send) < 0)
			fprintf(stderr, "readytime: cannot send '%s' to the command\n", send);
	}
	for (;;) {
		struct pollfd p = {.fd = out[0], .events = POLLIN};
		double left = timeout_ms - (now_ms() - t0);
		ssize_t n;

		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			fprintf(stderr, "readytime: no '%s' line within %d ms\n", prefix,
				timeout_ms);
			kill(pid, SIGKILL);
			waitpid(pid, NULL, 0);
			return 1;
		}
		n = read(out[0], buf + have, sizeof(buf) - 1 - have);
		if (n <= 0) {
			fprintf(stderr, "readytime: VMM exited before '%s'\n", prefix);
			waitpid(pid, NULL, 0);
			return 1;
		}
		have += (size_t)n;
		buf[have] = '\0';
		for (char *line = buf; line && *line;
		     line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
			char *eol = strchr(line, '\n');
			bool hit = false;
			if (eol) {
				*eol = '\0';
				hit = contains ? strstr(line, prefix) != NULL
					       : !strncmp(line, prefix, strlen(prefix));
				*eol = '\n';
			}
			if (hit) {
				double ready = now_ms() - t0;
				vmm_memory(pid, mem_mib << 20, &rss, &priv);
				kill(pid, SIGKILL);
				waitpid(pid, NULL, 0);
				printf("\"ready_ms\":%.2f,\"vmm_rss_mib\":%.2f,\"vmm_private_mib\":"
				       "%.2f\n",
				       ready, rss, priv);
				return 0;
			}
		}
		if (have == sizeof(buf) - 1)
			have = 0;
	}
}
