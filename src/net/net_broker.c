/* SPDX-License-Identifier: MIT */
/* The network broker (net_broker.h). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "devices/tap.h"
#include "net/net_broker.h"

enum broker_op { BROKER_CREATE = 1, BROKER_DESTROY = 2 };

struct broker_request {
	int op;
	int policy;
	int open_tap; /* BROKER_CREATE: also open the namespace's tap and send its fd back */
	pid_t owner;
	char id[FK_NETNS_ID_MAX + 1];
	char name[sizeof(((struct fk_netns *)0)->name)];
};

struct broker_reply {
	int ret; /* 0 or -errno */
	char msg[512];
	struct fk_netns ns;
};

/*
 * One request with its reply socket attached and its sender's credentials
 * (the kernel's, SO_PASSCRED: a process cannot claim another's pid);
 * -errno, or 0 at EOF (every client gone).
 */
static ssize_t recv_request(int fd, struct broker_request *req, int *reply_fd, pid_t *sender)
{
	char cbuf[CMSG_SPACE(sizeof(int)) + CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = {req, sizeof(*req)};
	struct msghdr msg = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c;
	ssize_t n;

	*reply_fd = -1;
	*sender = 0;
	do
		n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return n < 0 ? -errno : 0;
	for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			/*
			 * The first fd is the reply socket; any more (a hostile
			 * asker's) are closed, or each request would leak them here.
			 */
			size_t nfds = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (size_t i = 0; i < nfds; i++) {
				int got;

				memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
				if (*reply_fd < 0)
					*reply_fd = got;
				else
					close(got);
			}
		} else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
			   c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
			struct ucred cred;

			memcpy(&cred, CMSG_DATA(c), sizeof(cred));
			*sender = cred.pid;
		}
	}
	return n;
}

/*
 * Only for the asker itself: a process asks for a namespace it will own,
 * and removes only one it made. The askers are filtered, possibly jailed
 * VMMs running a hostile guest: one taken over must not remove, or make
 * namespaces in the name of, another VM.
 */
static int check_asker(const struct broker_request *req, pid_t sender, struct fk_err *err)
{
	pid_t owner;

	if (sender <= 0)
		return fk_fail(err, EPERM, "network broker: a request without its sender's pid");
	if (req->op == BROKER_CREATE && req->owner != sender)
		return fk_fail(err, EPERM,
			       "network broker: pid %d asked for a namespace owned by pid %d (a "
			       "process may ask only for its own)",
			       (int)sender, (int)req->owner);
	if (req->op == BROKER_DESTROY && fk_netns_owner(req->name, &owner) == 0 && owner != sender)
		return fk_fail(err, EPERM,
			       "network broker: pid %d asked to remove %s, which pid %d made (a "
			       "process may remove only its own)",
			       (int)sender, req->name, (int)owner);
	return 0;
}

/*
 * fk_netns_create(), and with req->open_tap the tap inside it, opened as
 * tap.c opens one (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR, the header size set,
 * offloads off): a jailed VMM can neither enter the namespace nor open
 * /dev/net/tun, but once attached the fd is usable by whoever holds it.
 */
static int create(const struct broker_request *req, struct broker_reply *rep, int *tap_fd,
		  struct fk_err *err)
{
	int ret =
	    fk_netns_create(req->id, (enum fk_net_policy)req->policy, req->owner, &rep->ns, err);

	if (ret < 0 || !req->open_tap)
		return ret;
	ret = tap_open(FK_NET_TAP, rep->ns.name, err);
	if (ret < 0) {
		struct fk_err ignored = {0};

		fk_netns_destroy(rep->ns.name, &ignored);
		return ret;
	}
	*tap_fd = ret;
	return 0;
}

/* The reply, with the tap's fd attached when there is one. */
static int send_reply(int reply_fd, const struct broker_reply *rep, int tap_fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {(void *)rep, sizeof(*rep)};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
	struct cmsghdr *c;

	if (tap_fd >= 0) {
		memset(cbuf, 0, sizeof(cbuf));
		msg.msg_control = cbuf;
		msg.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&msg);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &tap_fd, sizeof(int));
	}
	return sendmsg(reply_fd, &msg, MSG_NOSIGNAL) == (ssize_t)sizeof(*rep) ? 0 : -1;
}

int net_broker_main(int fd)
{
	close(STDIN_FILENO);
	prctl(PR_SET_NAME, "forkd-netbroker");
	signal(SIGPIPE, SIG_IGN);
	/* a VMM stopped with ^C in a terminal must not stop its namespaces' remover */
	signal(SIGINT, SIG_IGN);
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		return 1;
	for (;;) {
		struct broker_request req;
		struct broker_reply rep;
		struct fk_err err = {0};
		int reply_fd, tap_fd = -1;
		pid_t sender;
		ssize_t n = recv_request(fd, &req, &reply_fd, &sender);

		if (n == 0 || (n < 0 && n != -EAGAIN))
			return n == 0 ? 0 : 1;
		if (reply_fd < 0)
			continue; /* nobody to answer: a malformed request */
		memset(&rep, 0, sizeof(rep));
		req.id[sizeof(req.id) - 1] = req.name[sizeof(req.name) - 1] = '\0';
		if (n != (ssize_t)sizeof(req))
			rep.ret = fk_fail(&err, EINVAL,
					  "network broker: a request of %zd bytes, "
					  "expected %zu",
					  n, sizeof(req));
		else if ((rep.ret = check_asker(&req, sender, &err)) < 0) {
			/* refused: rep.ret and err say why */
		} else if (req.op == BROKER_CREATE)
			rep.ret = create(&req, &rep, &tap_fd, &err);
		else if (req.op == BROKER_DESTROY &&
			 strncmp(req.name, FK_NETNS_PREFIX, strlen(FK_NETNS_PREFIX)) == 0 &&
			 fk_netns_id_valid(req.name + strlen(FK_NETNS_PREFIX), &err) == 0)
			rep.ret = fk_netns_destroy(req.name, &err);
		else if (req.op == BROKER_DESTROY)
			rep.ret = err.code ? -err.code
					   : fk_fail(&err, EINVAL,
						     "network broker: '%s' is not a "
						     "forkd-<id> namespace",
						     req.name);
		else
			rep.ret =
			    fk_fail(&err, EINVAL, "network broker: unknown request %d", req.op);
		if (rep.ret < 0)
			snprintf(rep.msg, sizeof(rep.msg), "%s", err.msg);
		if (send_reply(reply_fd, &rep, tap_fd) < 0 && tap_fd >= 0) {
			/* the asker is gone with its namespace unanswered: remove it */
			struct fk_err ignored = {0};

			fk_netns_destroy(rep.ns.name, &ignored);
		}
		if (tap_fd >= 0)
			close(tap_fd);
		close(reply_fd);
	}
}

int net_broker_start(int *fd, struct fk_err *err)
{
	int sv[2];
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
		return fk_fail_errno(err, errno, "network broker: socketpair");
	/*
	 * Every request then carries its sender's pid (check_asker); set here,
	 * not in the broker, so that no request can come before it is on.
	 */
	if (setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &(int){1}, sizeof(int)) < 0) {
		int e = errno;

		close(sv[0]);
		close(sv[1]);
		return fk_fail_errno(err, e, "network broker: SO_PASSCRED");
	}
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(sv[0]);
		close(sv[1]);
		return fk_fail_errno(err, e, "network broker: fork");
	}
	if (pid == 0) {
		/*
		 * A program of its own (this binary, run as `forkd-netbroker
		 * --net-broker`), so that nothing mistakes it for a VMM by its
		 * command line, and it holds only the socket (fd 3) and stderr,
		 * not the VM's files.
		 */
		char *argv[] = {"forkd-netbroker", NET_BROKER_ARG, NULL};

		if (dup2(sv[1], NET_BROKER_FD) < 0)
			_exit(127);
		syscall(SYS_close_range, NET_BROKER_FD + 1, ~0U, 0);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(sv[1]);
	*fd = sv[0];
	return 0;
}

/* Sends req and waits for its reply; *passed_fd (if given) gets an fd the reply carries, or -1. */
static int ask(int fd, const struct broker_request *req, struct broker_reply *rep, int *passed_fd,
	       struct fk_err *err)
{
	char rbuf[CMSG_SPACE(sizeof(int))];
	struct iovec riov = {rep, sizeof(*rep)};
	struct msghdr rmsg = {
	    .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rbuf, .msg_controllen = sizeof(rbuf)};
	int got_fd = -1;
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = {(void *)req, sizeof(*req)};
	struct msghdr msg = {
	    .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c;
	int pair[2], ret = 0;
	ssize_t n;

	if (fd < 0)
		return fk_fail(err, EBADF, "network broker: not running");
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
		return fk_fail_errno(err, errno, "network broker: socketpair");
	memset(cbuf, 0, sizeof(cbuf));
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &pair[1], sizeof(int));
	do
		n = sendmsg(fd, &msg, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	close(pair[1]);
	if (n != (ssize_t)sizeof(*req)) {
		ret = fk_fail_errno(err, n < 0 ? errno : EIO, "network broker: sending a request");
		goto out;
	}
	do
		n = recvmsg(pair[0], &rmsg, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	for (c = n > 0 ? CMSG_FIRSTHDR(&rmsg) : NULL; c; c = CMSG_NXTHDR(&rmsg, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&got_fd, CMSG_DATA(c), sizeof(int));
	if (n != (ssize_t)sizeof(*rep) || (rmsg.msg_flags & MSG_CTRUNC)) {
		ret = fk_fail_errno(err, n < 0 ? errno : EPIPE,
				    "network broker: no answer (%zd bytes; did it die?)", n);
		goto out;
	}
	rep->msg[sizeof(rep->msg) - 1] = '\0';
	if (rep->ret < 0)
		ret = fk_fail(err, -rep->ret, "%s", rep->msg);
out:
	close(pair[0]);
	if (ret == 0 && passed_fd) {
		*passed_fd = got_fd;
		got_fd = -1;
	}
	if (got_fd >= 0)
		close(got_fd);
	return ret;
}

int net_broker_create(int fd, const char *id, enum fk_net_policy policy, pid_t owner,
		      struct fk_netns *ns, int *tap_fd, struct fk_err *err)
{
	struct broker_request req = {
	    .op = BROKER_CREATE, .policy = (int)policy, .owner = owner, .open_tap = tap_fd != NULL};
	struct broker_reply rep;
	int ret;

	if (snprintf(req.id, sizeof(req.id), "%s", id) >= (int)sizeof(req.id))
		return fk_fail(err, ENAMETOOLONG, "network namespace id '%s': at most %d bytes", id,
			       FK_NETNS_ID_MAX);
	ret = ask(fd, &req, &rep, tap_fd, err);
	if (ret == 0 && tap_fd && *tap_fd < 0) {
		struct fk_err ignored = {0};

		/* an old broker, or the fd lost on the way: the namespace is no use without it */
		net_broker_destroy(fd, rep.ns.name, &ignored);
		return fk_fail(err, EPROTO, "network broker: %s made, but no tap fd came back",
			       rep.ns.name);
	}
	if (ret == 0)
		*ns = rep.ns;
	return ret;
}

int net_broker_destroy(int fd, const char *name, struct fk_err *err)
{
	struct broker_request req = {.op = BROKER_DESTROY};
	struct broker_reply rep;

	if (snprintf(req.name, sizeof(req.name), "%s", name) >= (int)sizeof(req.name))
		return fk_fail(err, ENAMETOOLONG, "network namespace '%s': too long", name);
	return ask(fd, &req, &rep, NULL, err);
}
