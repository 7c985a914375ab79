/* SPDX-License-Identifier: MIT */
/*
 * forkd-agent: the guest side of the forkd agent protocol
 * (include/forkd/agent_proto.h, docs/agent-protocol.md). Listens on vsock
 * port 52 in the guest (or a Unix socket, for tests on the host); every
 * connection is one operation, served by its own forked process, so
 * operations run concurrently and a handler that crashes or hangs takes
 * nothing else with it.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/vm_sockets.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEFAULT_GENID_DEV  "/dev/mem"
#define DEFAULT_GENID_ADDR 0xDFF00ull /* src/core/layout.h LAYOUT_VMGENID_ADDR */
/* More concurrent operations than this are refused, so a runaway host cannot fork-bomb the guest.
 */
#define MAX_HANDLERS   1024
#define LISTEN_BACKLOG 128

struct options {
	const char *listen; /* "vsock:PORT" or "unix:PATH" */
	const char *genid_dev;
	bool genid_dev_given;
	uint64_t genid_addr;
	bool no_identity;
};

static int usage(void)
{
	fprintf(stderr,
		"usage: forkd-agent [--listen vsock:PORT|unix:PATH] (default vsock:%u)\n"
		"                   [--genid-dev PATH] (default %s)\n"
		"                   [--genid-addr HEX|none] (default 0x%llx)\n"
		"                   [--no-identity] (a test on a host: fork_notify and shutdown "
		"only validate and answer,\n"
		"                    and the generation is unknown unless --genid-dev is given)\n",
		FK_AGENT_PORT, DEFAULT_GENID_DEV, DEFAULT_GENID_ADDR);
	return 2;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	*o = (struct options){
	    .listen = "vsock:52", .genid_dev = DEFAULT_GENID_DEV, .genid_addr = DEFAULT_GENID_ADDR};
	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];
		const char *value = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(arg, "--no-identity") == 0) {
			o->no_identity = true;
			continue;
		}
		if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
			return -1;
		if (!value) {
			fprintf(stderr, "forkd-agent: unknown option or missing value: %s\n", arg);
			return -1;
		}
		i++;
		if (strcmp(arg, "--listen") == 0) {
			o->listen = value;
		} else if (strcmp(arg, "--genid-dev") == 0) {
			o->genid_dev = value;
			o->genid_dev_given = true;
		} else if (strcmp(arg, "--genid-addr") == 0) {
			char *end;
			if (strcmp(value, "none") == 0) {
				o->genid_dev = NULL;
				o->genid_dev_given = true;
				continue;
			}
			errno = 0;
			o->genid_addr = strtoull(value, &end, 16);
			if (errno || end == value || *end) {
				fprintf(stderr,
					"forkd-agent: --genid-addr %s: expected a hex address or "
					"\"none\"\n",
					value);
				return -1;
			}
		} else {
			fprintf(stderr, "forkd-agent: unknown option %s\n", arg);
			return -1;
		}
	}
	return 0;
}

static int listen_vsock(const char *port_text)
{
	char *end;
	errno = 0;
	unsigned long port = strtoul(port_text, &end, 10);

	if (errno || end == port_text || *end || port > UINT32_MAX - 1) {
		fprintf(stderr, "forkd-agent: --listen vsock:%s: expected a port number\n",
			port_text);
		return -EINVAL;
	}
	int fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "forkd-agent: vsock socket: %s\n", strerror(errno));
		return -errno;
	}
	struct sockaddr_vm addr = {
	    .svm_family = AF_VSOCK, .svm_cid = VMADDR_CID_ANY, .svm_port = (unsigned)port};
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		int err = errno;
		fprintf(stderr, "forkd-agent: listen on vsock port %lu: %s\n", port, strerror(err));
		close(fd);
		return -err;
	}
	return fd;
}

static int listen_unix(const char *path)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;

	if (strlen(path) >= sizeof(addr.sun_path)) {
		fprintf(stderr, "forkd-agent: --listen unix:%s: path longer than %zu bytes\n", path,
			sizeof(addr.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	strcpy(addr.sun_path, path);
	/* A socket left by an earlier agent would make bind fail; anything else stays. */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		unlink(path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
	    listen(fd, LISTEN_BACKLOG) < 0) {
		int err = errno;
		fprintf(stderr, "forkd-agent: listen on %s: %s\n", path, strerror(err));
		close(fd);
		return -err;
	}
	return fd;
}

static int open_listener(const char *spec)
{
	if (strncmp(spec, "vsock:", 6) == 0)
		return listen_vsock(spec + 6);
	if (strncmp(spec, "unix:", 5) == 0)
		return listen_unix(spec + 5);
	fprintf(stderr, "forkd-agent: --listen %s: expected vsock:PORT or unix:PATH\n", spec);
	return -EINVAL;
}

/* Serves one connection in a handler process; returns the process's exit status. */
static int serve_connection(int fd, const struct agent_config *cfg)
{
	struct conn c = {.fd = fd, .op = "request"};
	struct agent_request req = {0};
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	char why[512];
	int ret;

	fcntl(fd, F_SETFL, O_NONBLOCK);
	if (fk_frame_reader_init(&c.reader) < 0) {
		fprintf(stderr, "forkd-agent: out of memory for a frame reader\n");
		return 1;
	}
	ret = conn_next_frame(&c, AGENT_REQUEST_TIMEOUT_MS, &hdr, &payload);
	if (ret < 0) {
		conn_frame_failed(&c, ret);
		goto out;
	}
	clock_gettime(CLOCK_MONOTONIC, &c.request_at);
	if (hdr.type != FK_FRAME_REQUEST) {
		ret = conn_send_error(&c, EBADMSG, "expected a REQUEST frame first, got %s",
				      fk_frame_type_name(hdr.type));
		goto out;
	}
	ret = agent_request_parse(payload, hdr.len, &req, why, sizeof(why));
	c.op = req.op_name;
	if (ret < 0) {
		ret = conn_send_error(&c, -ret, "%s", why);
		goto out;
	}
	switch (req.op) {
	case AGENT_OP_PING:
		ret = handle_ping(&c, cfg);
		break;
	case AGENT_OP_EXEC:
		ret = handle_exec(&c, cfg, &req.exec);
		break;
	case AGENT_OP_PUT:
		ret = handle_put(&c, &req.file);
		break;
	case AGENT_OP_GET:
		ret = handle_get(&c, &req.file);
		break;
	case AGENT_OP_STAT:
		ret = handle_stat(&c, &req.file);
		break;
	case AGENT_OP_LS:
		ret = handle_ls(&c, &req.file);
		break;
	case AGENT_OP_RM:
		ret = handle_rm(&c, &req.file);
		break;
	case AGENT_OP_SHUTDOWN:
		ret = handle_shutdown(&c, cfg, req.reboot);
		break;
	case AGENT_OP_FORK_NOTIFY:
		ret = handle_fork_notify(&c, cfg, &req.notify);
		break;
	}
out:
	agent_request_free(&req);
	fk_frame_reader_free(&c.reader);
	close(fd);
	return ret < 0 ? 1 : 0;
}

/* Reaps finished handlers; logs the ones that crashed. Returns how many are still running. */
static int reap_handlers(int running)
{
	int status;
	pid_t pid;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		running--;
		if (WIFSIGNALED(status))
			fprintf(stderr, "forkd-agent: handler %d killed by signal %d\n", (int)pid,
				WTERMSIG(status));
	}
	return running;
}

/* Refuses a connection over MAX_HANDLERS from the accept loop itself: one small frame. */
static void refuse_busy(int fd)
{
	static const char busy[] =
	    "{\"error\":\"too many operations at once; try again\",\"errno\":11}";

	fcntl(fd, F_SETFL, O_NONBLOCK);
	(void)fk_frame_write(fd, FK_FRAME_ERROR, busy, sizeof(busy) - 1);
	fprintf(stderr, "forkd-agent: refused a connection: %d operations running\n", MAX_HANDLERS);
}

static void on_sigchld(int sig)
{
	(void)sig; /* only interrupts poll so the loop reaps */
}

/* Makes sure fds 0..2 are open, so no pipe or socket lands on them and meets a dup2. */
static void hold_standard_fds(void)
{
	for (int fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && errno == EBADF)
			open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
}

int main(int argc, char **argv)
{
	struct agent_config cfg = {.agent_pid = getpid()};
	struct options o;
	int running = 0;

	/* Descriptors inherited from whoever started the agent must not leak into commands. */
	close_range(3, ~0u, 0);
	hold_standard_fds();
	setvbuf(stderr, NULL, _IOLBF, 0);
	if (parse_options(argc, argv, &o) < 0)
		return usage();
	cfg.no_identity = o.no_identity;
	/* On a host, /dev/mem is the host's memory: never read it there unless asked to. */
	if (o.no_identity && !o.genid_dev_given)
		o.genid_dev = NULL;

	/* A vanished host must be -EPIPE from a write, not the end of the agent. */
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_sigchld, .sa_flags = SA_NOCLDSTOP};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGCHLD, &sa, NULL);

	int ret = identity_init(&cfg.identity, o.genid_dev, o.genid_addr);
	if (ret < 0) {
		fprintf(stderr, "forkd-agent: shared fork-identity page: %s\n", strerror(-ret));
		return 1;
	}
	int listen_fd = open_listener(o.listen);
	if (listen_fd < 0)
		return 1;
	fprintf(stderr, "forkd-agent: listening on %s%s\n", o.listen,
		o.no_identity ? " (--no-identity)" : "");

	for (;;) {
		running = reap_handlers(running);
		struct pollfd pfd = {.fd = listen_fd, .events = POLLIN};
		if (poll(&pfd, 1, 1000) <= 0)
			continue;
		int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EINTR && errno != EAGAIN && errno != ECONNABORTED) {
				fprintf(stderr, "forkd-agent: accept: %s\n", strerror(errno));
				/* EMFILE and friends: give handlers time to finish. */
				poll(NULL, 0, 100);
			}
			continue;
		}
		if (running >= MAX_HANDLERS) {
			refuse_busy(fd);
			close(fd);
			continue;
		}
		pid_t pid = fork();
		if (pid == 0) {
			close(listen_fd);
			signal(SIGCHLD, SIG_DFL);
			_exit(serve_connection(fd, &cfg));
		}
		if (pid < 0)
			fprintf(stderr, "forkd-agent: fork a handler: %s\n", strerror(errno));
		else
			running++;
		close(fd);
	}
}
