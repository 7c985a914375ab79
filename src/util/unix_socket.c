/* SPDX-License-Identifier: MIT */
#include "util/unix_socket.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int unix_socket_clear_stale(const char *what, const char *path, struct fk_err *err)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	struct stat st;
	int fd, ret;

	if (strlen(path) >= sizeof(addr.sun_path))
		return fk_fail(err, ENAMETOOLONG, "%s %s: longer than %zu bytes", what, path,
			       sizeof(addr.sun_path) - 1);
	if (lstat(path, &st) < 0) {
		if (errno == ENOENT)
			return 0;
		return fk_fail_errno(err, errno, "%s %s: cannot stat", what, path);
	}
	if (!S_ISSOCK(st.st_mode))
		return fk_fail(err, EEXIST,
			       "%s %s: exists and is not a socket (expected a free path or a stale "
			       "socket; refusing to replace it)",
			       what, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fk_fail_errno(err, errno, "%s %s: socket", what, path);
	memcpy(addr.sun_path, path, strlen(path) + 1);
	ret = connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ? errno : 0;
	close(fd);
	/* EAGAIN: a live server whose backlog is full. */
	if (ret == 0 || ret == EAGAIN)
		return fk_fail(err, EADDRINUSE,
			       "%s %s: a server is already listening there (expected a free path "
			       "or a stale socket)",
			       what, path);
	if (ret != ECONNREFUSED)
		return fk_fail_errno(err, ret, "%s %s: probing the existing socket", what, path);
	if (unlink(path) < 0 && errno != ENOENT)
		return fk_fail_errno(err, errno, "%s %s: removing the stale socket", what, path);
	return 0;
}
