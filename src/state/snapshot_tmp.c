/* SPDX-License-Identifier: MIT */
/*
 * A snapshot is written into `NAME.tmp-XXXXXX` and renamed into place when
 * complete. A writer killed with -9 cannot remove its temp dir, so the dir
 * records who writes it (pid, that process's start time, the boot id): a
 * later writer into the same directory, or the writer's parent when it sees
 * it die, removes the temp dirs whose writer is gone, and never a live
 * writer's (a reused pid has another start time).
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state/snapshot_format.h"

#define TMP_INFIX      ".tmp-"
#define TMP_RANDOM_LEN 6 /* mkdtemp's XXXXXX */
#define BOOT_ID_LEN    36

static void boot_id(char out[BOOT_ID_LEN + 1])
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	out[0] = '\0';
	if (f) {
		if (!fgets(out, BOOT_ID_LEN + 1, f))
			out[0] = '\0';
		fclose(f);
	}
	out[strcspn(out, "\n")] = '\0';
}

unsigned long long snap_proc_start_time(pid_t pid)
{
	char path[64], buf[1024], *p;
	unsigned long long start = 0;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name (field 2) may hold spaces and ')': count fields after the last ')'. */
	p = strrchr(buf, ')');
	if (!p)
		return 0;
	/* Field 3 (state) follows ") "; starttime is field 22, 19 fields further on. */
	if (sscanf(p + 2,
		   "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
		   "%*d %*d %llu",
		   &start) != 1)
		return 0;
	return start;
}

int snap_tmp_mark_writer(int dirfd, const char *dir, struct fk_err *err)
{
	char line[160], boot[BOOT_ID_LEN + 1];
	pid_t self = getpid();
	int fd, n, rc = 0;

	boot_id(boot);
	n = snprintf(line, sizeof(line), "pid=%d start=%llu boot=%s\n", (int)self,
		     snap_proc_start_time(self), boot);
	fd = openat(dirfd, SNAP_WRITER_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return fk_fail_errno(err, errno, "snapshot temp directory %s: create %s", dir,
				     SNAP_WRITER_FILE);
	if (write(fd, line, (size_t)n) != n)
		rc = fk_fail_errno(err, errno ? errno : EIO, "snapshot temp directory %s: write %s",
				   dir, SNAP_WRITER_FILE);
	close(fd);
	return rc;
}

/* 1: the recorded writer still runs; 0: it is gone; -1: no (readable) record. */
static int writer_alive(int tmpfd)
{
	char buf[160], boot[BOOT_ID_LEN + 1], rec_boot[BOOT_ID_LEN + 1];
	unsigned long long start;
	ssize_t n;
	int pid, fd = openat(tmpfd, SNAP_WRITER_FILE, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	if (sscanf(buf, "pid=%d start=%llu boot=%36s", &pid, &start, rec_boot) != 3 || pid <= 0)
		return -1;
	boot_id(boot);
	if (strcmp(boot, rec_boot) != 0)
		return 0; /* written before this boot */
	return snap_proc_start_time(pid) == start && start != 0 ? 1 : 0;
}

static bool is_tmp_name(const char *name, const char *base)
{
	size_t len = strlen(name), infix = strlen(TMP_INFIX);
	const char *tail;

	if (len < infix + TMP_RANDOM_LEN + 1)
		return false;
	tail = name + len - TMP_RANDOM_LEN - infix;
	if (strncmp(tail, TMP_INFIX, infix) != 0)
		return false;
	for (const char *p = tail + infix; *p; p++)
		if (!isalnum((unsigned char)*p))
			return false;
	if (base && ((size_t)(tail - name) != strlen(base) || strncmp(name, base, strlen(base))))
		return false;
	return true;
}

/* A writer's temp dir holds only files; anything else means it is not ours to delete. */
static int remove_tmp_dir(int parentfd, const char *name)
{
	int fd = openat(parentfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	DIR *d;
	struct dirent *e;
	int rc = 0;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((e = readdir(d))) {
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		if (unlinkat(dirfd(d), e->d_name, 0) < 0 && !rc)
			rc = -errno;
	}
	closedir(d);
	if (!rc && unlinkat(parentfd, name, AT_REMOVEDIR) < 0)
		rc = -errno;
	return rc;
}

int snap_tmp_clean_stale(const char *parent, const char *base, struct fk_err *err)
{
	DIR *d = opendir(parent);
	struct dirent *e;
	int removed = 0;

	if (!d) {
		/* Nothing there to clean; the write itself reports a missing parent. */
		if (errno == ENOENT)
			return 0;
		return fk_fail_errno(err, errno, "snapshot directory %s: list for stale temp dirs",
				     parent);
	}
	while ((e = readdir(d))) {
		int fd, alive;

		if (!is_tmp_name(e->d_name, base))
			continue;
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		alive = writer_alive(fd);
		close(fd);
		/* No record: being created right now, or not a forkd writer's. Leave it. */
		if (alive != 0)
			continue;
		if (remove_tmp_dir(dirfd(d), e->d_name) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

int snap_tmp_written_bytes(const char *target, uint64_t *bytes)
{
	char *copy = strdup(target), *parent_copy = NULL, *base;
	const char *parent;
	struct dirent *e;
	DIR *d = NULL;
	int found = -ENOENT;

	*bytes = 0;
	if (!copy)
		return -ENOMEM;
	for (size_t n = strlen(copy); n > 1 && copy[n - 1] == '/'; n--)
		copy[n - 1] = '\0';
	parent_copy = strdup(copy);
	if (!parent_copy) {
		found = -ENOMEM;
		goto out;
	}
	base = basename(copy);
	parent = dirname(parent_copy);
	d = opendir(parent);
	if (!d) {
		found = -errno;
		goto out;
	}
	while ((e = readdir(d))) {
		struct stat st;
		int fd;

		if (!is_tmp_name(e->d_name, base))
			continue;
		fd = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			continue;
		/* Only a running writer's: a dead one's leftovers are not progress. */
		if (writer_alive(fd) == 1) {
			found = 0; /* no memory file yet: nothing written so far */
			/* Allocated blocks, not the size: the file is sized in full first. */
			if (fstatat(fd, SNAP_MEMORY_FILE, &st, 0) == 0)
				*bytes += (uint64_t)st.st_blocks * 512;
		}
		close(fd);
	}
out:
	if (d)
		closedir(d);
	free(parent_copy);
	free(copy);
	return found;
}
