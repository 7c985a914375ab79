/* SPDX-License-Identifier: MIT */
/*
 * The real forkd-agent run on this host (--listen unix:, --no-identity)
 * behind a small hybrid-vsock relay that speaks forkd-vmm's
 * "CONNECT <port>\n" / "OK <n>\n" handshake: what a VM's vsock socket is,
 * without a VM or AF_VSOCK. Header-only because every tests/unit/test_*.c
 * is its own binary; it owns agent_sock (the agent's own socket) and
 * relay_sock (the socket that stands for the VM's vsock).
 */
#ifndef FORKD_TESTS_AGENT_RELAY_H
#define FORKD_TESTS_AGENT_RELAY_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkd/agent_proto.h"

static char agent_sock[300], relay_sock[300];
static pid_t agent_pid = -1;
static int relay_fd = -1;

static int unix_listen(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(path) >= sizeof(a.sun_path))
		return -1;
	memcpy(a.sun_path, path, strlen(path) + 1);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, 64) < 0)
		return -1;
	return fd;
}

static int unix_connect(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (strlen(path) >= sizeof(a.sun_path))
		return -1;
	memcpy(a.sun_path, path, strlen(path) + 1);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* Copies one direction until EOF, then half-closes the other side. */
struct pump {
	int from, to;
};

static void *pump_main(void *arg)
{
	struct pump *p = arg;
	char buf[65536];
	ssize_t n;

	while ((n = read(p->from, buf, sizeof(buf))) > 0)
		for (ssize_t off = 0; off < n;) {
			ssize_t w = send(p->to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
			if (w <= 0)
				goto out;
			off += w;
		}
out:
	shutdown(p->to, SHUT_WR);
	return NULL;
}

/*
 * One relayed connection: the CONNECT line, then each direction on its own
 * thread, as forkd-vmm's device moves them independently (one blocked
 * direction must never stall the other).
 */
static void *relay_one(void *arg)
{
	int host = (int)(intptr_t)arg, guest = -1;
	char line[40];
	size_t have = 0;
	unsigned port;

	while (have < sizeof(line) - 1 && read(host, line + have, 1) == 1)
		if (line[have++] == '\n')
			break;
	line[have] = '\0';
	/* Only the agent's port has a listener; anything else is refused like an RST. */
	if (sscanf(line, "CONNECT %u\n", &port) != 1 || port != FK_AGENT_PORT ||
	    (guest = unix_connect(agent_sock)) < 0)
		goto out;
	if (write(host, "OK 1024\n", 8) != 8)
		goto out;
	struct pump up = {.from = host, .to = guest}, down = {.from = guest, .to = host};
	pthread_t t;
	if (pthread_create(&t, NULL, pump_main, &up) == 0) {
		pump_main(&down);
		pthread_join(t, NULL);
	}
out:
	close(host);
	if (guest >= 0)
		close(guest);
	return NULL;
}

static void *relay_main(void *arg)
{
	(void)arg;
	for (;;) {
		int c = accept4(relay_fd, NULL, NULL, SOCK_CLOEXEC);
		pthread_t t;
		if (c < 0)
			return NULL;
		pthread_create(&t, NULL, relay_one, (void *)(intptr_t)c);
		pthread_detach(t);
	}
}

static const char *agent_path(void)
{
	const char *p = getenv("FORKD_AGENT");
	return p && *p ? p : "build/guest/forkd-agent";
}

/* Starts the agent on dir/agent.sock and the relay on dir/vsock.sock; 0 or -1. */
static int agent_relay_start(const char *dir)
{
	char listen_arg[320];
	pthread_t relay_thread;
	struct stat st;

	snprintf(agent_sock, sizeof(agent_sock), "%s/agent.sock", dir);
	snprintf(relay_sock, sizeof(relay_sock), "%s/vsock.sock", dir);
	snprintf(listen_arg, sizeof(listen_arg), "unix:%s", agent_sock);
	agent_pid = fork();
	if (agent_pid == 0) {
		execl(agent_path(), "forkd-agent", "--listen", listen_arg, "--no-identity",
		      (char *)NULL);
		fprintf(stderr, "exec %s: %s\n", agent_path(), strerror(errno));
		_exit(127);
	}
	for (int i = 0; i < 500 && stat(agent_sock, &st) < 0; i++)
		usleep(10 * 1000);
	relay_fd = unix_listen(relay_sock);
	if (relay_fd < 0 || stat(agent_sock, &st) < 0)
		return -1;
	if (pthread_create(&relay_thread, NULL, relay_main, NULL))
		return -1;
	pthread_detach(relay_thread);
	return 0;
}

/* Stops the agent, and the relay from accepting (connections under way run out). */
static void agent_relay_stop(void)
{
	if (agent_pid > 0) {
		kill(agent_pid, SIGTERM);
		waitpid(agent_pid, NULL, 0);
	}
	shutdown(relay_fd, SHUT_RDWR);
	close(relay_fd);
}

#endif
