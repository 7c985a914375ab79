/* SPDX-License-Identifier: MIT */
/*
 * Prewarm: a snapshot's memory file into the page cache before a fan-out, so
 * that N restored children fault their pages from memory instead of each
 * waiting on the same cold reads. Holes (zero pages) are skipped: a restore
 * never reads them from the device.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/snapshot_format.h"

#define PREWARM_READ_BYTES (1u << 20)

static uint64_t prewarm_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The next data extent at or after `from`: [*start, *end); 0, or 1 when there is none. */
static int next_extent(int fd, uint64_t from, uint64_t size, uint64_t *start, uint64_t *end,
		       const char *path, struct fk_err *err)
{
	off_t d, h;

	if (from >= size)
		return 1;
	d = lseek(fd, (off_t)from, SEEK_DATA);
	if (d < 0 && errno == ENXIO)
		return 1;
	if (d < 0)
		return fk_fail_errno(err, errno, "memory file %s: SEEK_DATA at %llu", path,
				     (unsigned long long)from);
	h = lseek(fd, d, SEEK_HOLE);
	if (h < 0)
		return fk_fail_errno(err, errno, "memory file %s: SEEK_HOLE at %lld", path,
				     (long long)d);
	*start = (uint64_t)d;
	*end = (uint64_t)h < size ? (uint64_t)h : size;
	return 0;
}

/* Pages of the file in the page cache now (mincore over a read-only mapping). */
static int count_resident(int fd, uint64_t size, uint64_t *resident, const char *path,
			  struct fk_err *err)
{
	long page = sysconf(_SC_PAGESIZE);
	uint64_t pages = (size + (uint64_t)page - 1) / (uint64_t)page;
	unsigned char *vec;
	void *map;
	int rc = 0;

	*resident = 0;
	if (size == 0)
		return 0;
	map = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		return fk_fail_errno(err, errno, "memory file %s: map to count cached pages", path);
	vec = malloc(pages);
	if (!vec) {
		rc = fk_fail(err, ENOMEM, "memory file %s: out of memory", path);
		goto out;
	}
	if (mincore(map, size, vec) < 0) {
		rc = fk_fail_errno(err, errno, "memory file %s: mincore", path);
		goto out;
	}
	for (uint64_t i = 0; i < pages; i++)
		if (vec[i] & 1)
			*resident += (uint64_t)page;
out:
	free(vec);
	munmap(map, size);
	return rc;
}

int snap_prewarm_fd(int fd, const char *path, struct snap_prewarm_stats *st, struct fk_err *err)
{
	uint64_t t0 = prewarm_now_us(), pos, start, end;
	uint8_t *buf = NULL;
	struct stat sb;
	int rc;

	*st = (struct snap_prewarm_stats){0};
	if (fstat(fd, &sb) < 0)
		return fk_fail_errno(err, errno, "memory file %s: stat", path);
	if (!S_ISREG(sb.st_mode))
		return fk_fail(err, EINVAL, "memory file %s: not a regular file", path);
	st->file_bytes = (uint64_t)sb.st_size;
	/* First ask for every extent at once: the device sees the whole read, not 1 MiB at a time.
	 */
	for (pos = 0; (rc = next_extent(fd, pos, st->file_bytes, &start, &end, path, err)) == 0;
	     pos = end) {
		int e = posix_fadvise(fd, (off_t)start, (off_t)(end - start), POSIX_FADV_WILLNEED);

		if (e)
			return fk_fail_errno(err, e, "memory file %s: posix_fadvise WILLNEED",
					     path);
		st->extents++;
		st->data_bytes += end - start;
	}
	if (rc < 0)
		return rc;
	/* Then read it through: WILLNEED only starts the reads; this waits for them. */
	buf = malloc(PREWARM_READ_BYTES);
	if (!buf)
		return fk_fail(err, ENOMEM, "memory file %s: out of memory", path);
	for (pos = 0; (rc = next_extent(fd, pos, st->file_bytes, &start, &end, path, err)) == 0;
	     pos = end) {
		for (uint64_t off = start; off < end;) {
			size_t want = end - off < PREWARM_READ_BYTES ? (size_t)(end - off)
								     : PREWARM_READ_BYTES;
			ssize_t n = pread(fd, buf, want, (off_t)off);

			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0) {
				rc = fk_fail_errno(err, errno, "memory file %s: read at %llu", path,
						   (unsigned long long)off);
				goto out;
			}
			if (n == 0) {
				rc =
				    fk_fail(err, EIO,
					    "memory file %s: ends at %llu, inside data it "
					    "reported up to %llu (changed while read?)",
					    path, (unsigned long long)off, (unsigned long long)end);
				goto out;
			}
			off += (uint64_t)n;
		}
	}
	if (rc < 0)
		goto out;
	st->us = prewarm_now_us() - t0;
	rc = count_resident(fd, st->file_bytes, &st->resident_bytes, path, err);
out:
	free(buf);
	return rc < 0 ? rc : 0;
}

int snap_prewarm(const char *dir, struct snap_prewarm_stats *st, struct fk_err *err)
{
	struct snap_reader *r = NULL;
	int rc = snap_reader_open(dir, &r, err);

	*st = (struct snap_prewarm_stats){0};
	if (rc < 0)
		return rc;
	rc = snap_prewarm_fd(snap_reader_memory_fd(r), snap_reader_memory_path(r), st, err);
	snap_reader_close(r);
	return rc;
}
