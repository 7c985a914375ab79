/* SPDX-License-Identifier: MIT */
/* The /30 slot allocator (slots.h): O_EXCL files under one flock. */
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "net/slots.h"
#include "util/fdio.h"

#define SLOT_BASE 0x0ac80000u /* 10.200.0.0 */

uint32_t fk_slot_net(unsigned slot)
{
	return SLOT_BASE + 4u * slot;
}

uint32_t fk_slot_host_addr(unsigned slot)
{
	return fk_slot_net(slot) + 1;
}

uint32_t fk_slot_ns_addr(unsigned slot)
{
	return fk_slot_net(slot) + 2;
}

void fk_ipv4_str(uint32_t addr, char *buf)
{
	snprintf(buf, 16, "%u.%u.%u.%u", addr >> 24, (addr >> 16) & 0xff, (addr >> 8) & 0xff,
		 addr & 0xff);
}

static int check_slots(const struct fk_slots *slots, struct fk_err *err)
{
	if (!slots->dir || !slots->dir[0])
		return fk_fail(err, EINVAL, "net slots: no state directory");
	if (slots->nr_slots == 0 || slots->nr_slots > FK_SLOTS_MAX)
		return fk_fail(err, EINVAL, "net slots: %u slots: expected 1 to %u",
			       slots->nr_slots, FK_SLOTS_MAX);
	return 0;
}

/* mkdir -p of dir (0700: the slot files say which VMs exist). */
static int make_dir(const char *dir, struct fk_err *err)
{
	char path[512];
	size_t len = strlen(dir);

	if (len >= sizeof(path))
		return fk_fail(err, ENAMETOOLONG, "net slots: directory '%s' too long", dir);
	memcpy(path, dir, len + 1);
	for (char *p = path + 1;; p++) {
		bool last = *p == '\0';

		if (*p != '/' && !last)
			continue;
		*p = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST)
			return fk_fail_errno(err, errno, "net slots: mkdir %s", path);
		if (last)
			break;
		*p = '/';
	}
	return 0;
}

int fk_slots_prepare(const struct fk_slots *slots, struct fk_err *err)
{
	int ret = check_slots(slots, err);

	return ret < 0 ? ret : make_dir(slots->dir, err);
}

/* Opens and flocks DIR/lock; returns the fd (closing it unlocks) or -errno. */
static int lock_dir(const struct fk_slots *slots, struct fk_err *err)
{
	char path[600];
	int fd, ret;

	ret = make_dir(slots->dir, err);
	if (ret < 0)
		return ret;
	snprintf(path, sizeof(path), "%s/lock", slots->dir);
	fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return fk_fail_errno(err, errno, "net slots: open %s", path);
	while (flock(fd, LOCK_EX) < 0) {
		if (errno != EINTR) {
			ret = fk_fail_errno(err, errno, "net slots: flock %s", path);
			close(fd);
			return ret;
		}
	}
	return fd;
}

int fk_slots_lock(const struct fk_slots *slots, struct fk_err *err)
{
	int ret = check_slots(slots, err);

	return ret < 0 ? ret : lock_dir(slots, err);
}

static void slot_path(const struct fk_slots *slots, unsigned slot, char *path, size_t size)
{
	snprintf(path, size, "%s/slot-%u", slots->dir, slot);
}

static int read_owner(const char *path, char *name, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, name, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	name[n] = '\0';
	name[strcspn(name, "\n")] = '\0';
	return 0;
}

int fk_slot_alloc(const struct fk_slots *slots, const char *name, unsigned *slot,
		  struct fk_err *err)
{
	char path[600];
	int lock, fd, ret = 0;
	unsigned s;

	ret = check_slots(slots, err);
	if (ret < 0)
		return ret;
	lock = lock_dir(slots, err);
	if (lock < 0)
		return lock;
	for (s = 0; s < slots->nr_slots; s++) {
		slot_path(slots, s, path, sizeof(path));
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 && errno == EEXIST)
			continue;
		if (fd < 0) {
			ret = fk_fail_errno(err, errno, "net slots: create %s", path);
			goto out;
		}
		ret = fk_write_all(fd, name, strlen(name));
		if (ret == 0)
			ret = fk_write_all(fd, "\n", 1);
		close(fd);
		if (ret < 0) {
			unlink(path);
			ret = fk_fail_errno(err, -ret, "net slots: write %s", path);
			goto out;
		}
		*slot = s;
		goto out;
	}
	ret =
	    fk_fail(err, ENOSPC,
		    "net slots: slot space exhausted: all %u /30 networks of 10.200.0.0/16 in use "
		    "(%s; stale ones are reclaimed when their namespace is gone)",
		    slots->nr_slots, slots->dir);
out:
	close(lock);
	return ret;
}

int fk_slot_owner(const struct fk_slots *slots, unsigned slot, char *name, size_t size)
{
	char path[600];

	slot_path(slots, slot, path, sizeof(path));
	return read_owner(path, name, size);
}

int fk_slot_free(const struct fk_slots *slots, unsigned slot, const char *name, struct fk_err *err)
{
	char path[600], owner[256];
	int lock, ret;

	ret = check_slots(slots, err);
	if (ret < 0)
		return ret;
	if (slot >= slots->nr_slots)
		return fk_fail(err, EINVAL, "net slots: slot %u: expected below %u", slot,
			       slots->nr_slots);
	lock = lock_dir(slots, err);
	if (lock < 0)
		return lock;
	slot_path(slots, slot, path, sizeof(path));
	ret = read_owner(path, owner, sizeof(owner));
	if (ret == -ENOENT) {
		ret = fk_fail(err, ENOENT, "net slots: slot %u is not allocated", slot);
	} else if (ret < 0) {
		ret = fk_fail_errno(err, -ret, "net slots: read %s", path);
	} else if (strcmp(owner, name) != 0) {
		/* freed by a sweep and taken again: the new holder's, not ours */
		ret = fk_fail(err, EPERM, "net slots: slot %u belongs to '%s', not '%s'", slot,
			      owner, name);
	} else if (unlink(path) < 0) {
		ret = fk_fail_errno(err, errno, "net slots: unlink %s", path);
	}
	close(lock);
	return ret;
}

int fk_slot_sweep(const struct fk_slots *slots, bool (*alive)(const char *name, void *ctx),
		  void *ctx, struct fk_err *err)
{
	char path[600], owner[256];
	struct dirent *de;
	int lock, ret, freed = 0;
	DIR *d;

	ret = check_slots(slots, err);
	if (ret < 0)
		return ret;
	lock = lock_dir(slots, err);
	if (lock < 0)
		return lock;
	d = opendir(slots->dir);
	if (!d) {
		ret = fk_fail_errno(err, errno, "net slots: opendir %s", slots->dir);
		goto out;
	}
	while ((de = readdir(d))) {
		unsigned s;
		char tail;

		if (sscanf(de->d_name, "slot-%u%c", &s, &tail) != 1)
			continue;
		snprintf(path, sizeof(path), "%s/%s", slots->dir, de->d_name);
		if (read_owner(path, owner, sizeof(owner)) < 0)
			continue;
		if (alive(owner, ctx))
			continue;
		if (unlink(path) == 0)
			freed++;
	}
	closedir(d);
	ret = freed;
out:
	close(lock);
	return ret;
}
