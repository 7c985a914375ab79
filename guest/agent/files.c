/* SPDX-License-Identifier: MIT */
/* put, get, stat, ls, rm. */
#include "agent.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fdio.h"

/* Room an ls answer keeps for everything but the entries (the 64 KiB JSON limit). */
#define LS_JSON_RESERVE 64

static void close_fd(int *fd)
{
	if (*fd >= 0)
		close(*fd);
	*fd = -1;
}

/* The directory part of path, in out (PATH_MAX bytes). */
static void dir_of(const char *path, char *out)
{
	char copy[PATH_MAX];

	snprintf(copy, sizeof(copy), "%s", path);
	snprintf(out, PATH_MAX, "%s", dirname(copy));
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	/* Best effort: the file itself is synced; some filesystems refuse fsync on directories. */
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

int handle_put(struct conn *c, const struct path_request *f)
{
	char dir[PATH_MAX], base_copy[PATH_MAX], tmp[PATH_MAX + 32];
	struct fk_frame_hdr hdr;
	const uint8_t *payload;
	uint64_t size = 0;
	bool tmp_exists = false;
	int fd = -1, ret;

	dir_of(f->path, dir);
	snprintf(base_copy, sizeof(base_copy), "%s", f->path);
	const char *base = basename(base_copy);
	if (strcmp(base, "/") == 0 || strcmp(base, ".") == 0 || strcmp(base, "..") == 0)
		return conn_send_error(c, EISDIR, "put %s: not a file name", f->path);
	ret = snprintf(tmp, sizeof(tmp), "%s/.%s.forkd-put-XXXXXX", strcmp(dir, "/") ? dir : "",
		       base);
	if (ret < 0 || (size_t)ret >= sizeof(tmp) || (size_t)ret >= PATH_MAX)
		return conn_send_error(c, ENAMETOOLONG,
				       "put %s: path too long for a temporary name", f->path);
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0)
		return conn_send_error(c, errno, "put %s: create a temporary file in %s: %s",
				       f->path, dir, strerror(errno));
	tmp_exists = true;
	if (fchmod(fd, f->mode) < 0) {
		ret = conn_send_error(c, errno, "put %s: chmod %o: %s", f->path, f->mode,
				      strerror(errno));
		goto out;
	}

	for (;;) {
		ret = conn_next_frame(c, AGENT_DATA_TIMEOUT_MS, &hdr, &payload);
		if (ret < 0) {
			conn_frame_failed(c, ret);
			goto out;
		}
		if (hdr.type == FK_FRAME_DATA_EOF)
			break;
		if (hdr.type != FK_FRAME_DATA) {
			ret = conn_unexpected_frame(c, hdr.type, "DATA or DATA_EOF");
			goto out;
		}
		ret = fk_write_all(fd, payload, hdr.len);
		if (ret < 0) {
			ret = conn_send_error(c, -ret, "put %s: write %s: %s", f->path, tmp,
					      strerror(-ret));
			goto out;
		}
		size += hdr.len;
	}
	if (fsync(fd) < 0 || close(fd) < 0) {
		fd = -1;
		ret =
		    conn_send_error(c, errno, "put %s: sync %s: %s", f->path, tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, f->path) < 0) {
		ret = conn_send_error(c, errno, "put %s: rename from %s: %s", f->path, tmp,
				      strerror(errno));
		goto out;
	}
	tmp_exists = false;
	fsync_dir(dir);
	json_t *answer = json_pack("{s:I}", "size", (json_int_t)size);
	ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
	json_decref(answer);
out:
	close_fd(&fd);
	if (tmp_exists)
		unlink(tmp);
	return ret;
}

int handle_get(struct conn *c, const struct path_request *f)
{
	struct stat st;
	uint8_t *buf = NULL;
	int ret;
	int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0)
		return conn_send_error(c, errno, "get %s: %s", f->path, strerror(errno));
	if (fstat(fd, &st) < 0) {
		ret = conn_send_error(c, errno, "get %s: stat: %s", f->path, strerror(errno));
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		ret =
		    conn_send_error(c, EISDIR, "get %s: is a directory (expected a file)", f->path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = conn_send_error(c, EINVAL, "get %s: not a regular file", f->path);
		goto out;
	}
	fcntl(fd, F_SETFL, 0);
	buf = malloc(FK_AGENT_MAX_PAYLOAD);
	if (!buf) {
		ret = conn_send_error(c, ENOMEM, "get %s: out of memory", f->path);
		goto out;
	}
	json_t *answer = json_pack("{s:I,s:i}", "size", (json_int_t)st.st_size, "mode",
				   (int)(st.st_mode & 07777));
	ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
	json_decref(answer);
	if (ret < 0)
		goto out;
	for (;;) {
		ssize_t n = read(fd, buf, FK_AGENT_MAX_PAYLOAD);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret =
			    conn_send_error(c, errno, "get %s: read: %s", f->path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		ret = fk_frame_write(c->fd, FK_FRAME_DATA, buf, (uint32_t)n);
		if (ret < 0) {
			fprintf(stderr, "forkd-agent: get %s: send: %s\n", f->path, strerror(-ret));
			goto out;
		}
	}
	ret = fk_frame_write(c->fd, FK_FRAME_DATA_EOF, NULL, 0);
out:
	free(buf);
	close(fd);
	return ret;
}

static const char *type_name(mode_t mode)
{
	if (S_ISREG(mode))
		return "file";
	if (S_ISDIR(mode))
		return "dir";
	if (S_ISLNK(mode))
		return "link";
	return "other";
}

int handle_stat(struct conn *c, const struct path_request *f)
{
	struct stat st;

	if (lstat(f->path, &st) < 0)
		return conn_send_error(c, errno, "stat %s: %s", f->path, strerror(errno));
	json_t *answer =
	    json_pack("{s:s,s:I,s:i,s:I,s:I,s:I}", "type", type_name(st.st_mode), "size",
		      (json_int_t)st.st_size, "mode", (int)(st.st_mode & 07777), "uid",
		      (json_int_t)st.st_uid, "gid", (json_int_t)st.st_gid, "mtime_ns",
		      (json_int_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
	int ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
	json_decref(answer);
	return ret;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "name")),
		      json_string_value(json_object_get(*(json_t *const *)b, "name")));
}

int handle_ls(struct conn *c, const struct path_request *f)
{
	json_t **entries = NULL, *list = NULL, *answer = NULL;
	size_t count = 0, json_bytes = LS_JSON_RESERVE;
	bool truncated = false;
	struct dirent *de;
	int ret;
	DIR *dir = opendir(f->path);

	if (!dir)
		return conn_send_error(c, errno, "ls %s: %s", f->path, strerror(errno));
	entries = calloc(FK_AGENT_LS_MAX, sizeof(*entries));
	if (!entries) {
		ret = conn_send_error(c, ENOMEM, "ls %s: out of memory", f->path);
		goto out;
	}
	errno = 0;
	while ((de = readdir(dir))) {
		struct stat st;
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (count == FK_AGENT_LS_MAX) {
			truncated = true;
			break;
		}
		/* An entry removed since readdir is listed without size and mode. */
		if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			memset(&st, 0, sizeof(st));
		json_t *entry = json_pack("{s:s,s:s,s:I,s:i}", "name", de->d_name, "type",
					  type_name(st.st_mode), "size", (json_int_t)st.st_size,
					  "mode", (int)(st.st_mode & 07777));
		if (!entry) {
			/* jansson refuses names that are not UTF-8; they cannot be sent as JSON. */
			truncated = true;
			continue;
		}
		size_t entry_bytes = json_dumpb(entry, NULL, 0, JSON_COMPACT) + 1;
		if (json_bytes + entry_bytes > FK_AGENT_MAX_JSON) {
			json_decref(entry);
			truncated = true;
			break;
		}
		json_bytes += entry_bytes;
		entries[count++] = entry;
		errno = 0;
	}
	if (!de && errno) {
		ret = conn_send_error(c, errno, "ls %s: readdir: %s", f->path, strerror(errno));
		goto out;
	}
	qsort(entries, count, sizeof(*entries), compare_names);
	list = json_array();
	if (!list) {
		ret = conn_send_error(c, ENOMEM, "ls %s: out of memory", f->path);
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		json_array_append_new(list, entries[i]);
		entries[i] = NULL;
	}
	answer = json_pack("{s:O,s:b}", "entries", list, "truncated", truncated);
	ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
out:
	for (size_t i = 0; entries && i < count; i++)
		json_decref(entries[i]);
	free(entries);
	json_decref(list);
	json_decref(answer);
	closedir(dir);
	return ret;
}

/*
 * The first failure of a recursive rm. File-static because nftw's callback
 * takes no user pointer; a handler process runs one rm, single-threaded.
 */
static struct {
	int err;
	char path[PATH_MAX];
} rm_failure;

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	int ret = flag == FTW_DP ? rmdir(path) : unlink(path);

	if (ret < 0 && !rm_failure.err) {
		rm_failure.err = errno;
		snprintf(rm_failure.path, sizeof(rm_failure.path), "%s", path);
	}
	/* Go on: remove as much as possible, report the first failure. */
	return 0;
}

int handle_rm(struct conn *c, const struct path_request *f)
{
	struct stat st, root;

	if (lstat(f->path, &st) < 0)
		return conn_send_error(c, errno, "rm %s: %s", f->path, strerror(errno));
	if (stat("/", &root) == 0 && st.st_dev == root.st_dev && st.st_ino == root.st_ino)
		return conn_send_error(c, EPERM, "rm %s: refusing to remove the root directory",
				       f->path);
	if (S_ISDIR(st.st_mode) && f->recursive) {
		rm_failure.err = 0;
		/* FTW_PHYS: never follow links out of the tree; FTW_MOUNT: stay on its filesystem.
		 */
		if (nftw(f->path, remove_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
			return conn_send_error(c, errno, "rm %s: %s", f->path, strerror(errno));
		if (rm_failure.err)
			return conn_send_error(c, rm_failure.err, "rm %s: remove %s: %s", f->path,
					       rm_failure.path, strerror(rm_failure.err));
	} else if (S_ISDIR(st.st_mode)) {
		if (rmdir(f->path) < 0)
			return conn_send_error(c, errno, "rm %s: %s%s", f->path, strerror(errno),
					       errno == ENOTEMPTY ? " (use \"recursive\":true)"
								  : "");
	} else if (unlink(f->path) < 0) {
		return conn_send_error(c, errno, "rm %s: %s", f->path, strerror(errno));
	}
	json_t *answer = json_object();
	int ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
	json_decref(answer);
	return ret;
}
