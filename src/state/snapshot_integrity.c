/* SPDX-License-Identifier: MIT */
/* Checking a snapshot's memory file against the XXH3 per chunk recorded when it was written. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "state/snapshot_format.h"

static uint64_t le64_at(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static uint64_t verify_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Offset of the next byte of data at or after `off`, or `size` when only holes follow. */
static uint64_t next_data(int fd, uint64_t off, uint64_t size)
{
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);

	/* ENXIO: no data past off. Filesystems without SEEK_DATA say "all data". */
	if (d < 0)
		return errno == ENXIO ? size : off;
	return (uint64_t)d;
}

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			return -EIO; /* shrank under us */
		done += (size_t)n;
	}
	return 0;
}

int snap_verify_memory(const struct snap_reader *r, struct snap_verify_stats *stats,
		       struct fk_err *err)
{
	const struct snap_vm_info *info = snap_reader_vm_info(r);
	const char *path = snap_reader_memory_path(r);
	int fd = snap_reader_memory_fd(r);
	uint64_t chunk, nr, size = info->memory_file_size, data_at = 0;
	uint64_t first_want = 0, first_got = 0, t0 = verify_now_us(), zero_full;
	const uint8_t *hashes;
	uint8_t *buf;
	int rc = 0;

	memset(stats, 0, sizeof(*stats));
	if (snap_reader_mem_hashes(r, &chunk, &nr, &hashes) < 0)
		return fk_fail(err, ENOENT,
			       "memory file %s: the snapshot records no checksums (written before "
			       "forkd kept them): nothing to verify it against",
			       path);
	buf = malloc(chunk);
	if (!buf)
		return fk_fail(err, ENOMEM, "memory file %s: out of memory for a %llu-byte chunk",
			       path, (unsigned long long)chunk);
	zero_full = snap_zero_chunk_hash(chunk);
	posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
	data_at = next_data(fd, 0, size);
	for (uint64_t c = 0; c < nr; c++) {
		uint64_t off = c * chunk, len = size - off < chunk ? size - off : chunk;
		uint64_t want = le64_at(hashes + c * 8), got;

		/* data_at stays right until we pass it: nothing but holes lie before it. */
		if (data_at < off)
			data_at = next_data(fd, off, size);
		if (data_at >= off + len) {
			/* All hole: zeros, checked without reading. */
			got = len == chunk ? zero_full : snap_zero_chunk_hash(len);
			stats->hole_chunks++;
		} else {
			int e = pread_full(fd, buf, (size_t)len, off);

			if (e < 0) {
				rc = fk_fail_errno(err, -e,
						   "memory file %s: read chunk %llu at %llu", path,
						   (unsigned long long)c, (unsigned long long)off);
				goto out;
			}
			got = XXH3_64bits(buf, (size_t)len);
			stats->bytes_read += len;
		}
		stats->chunks++;
		if (got != want && stats->bad_chunks++ == 0) {
			stats->first_bad_offset = off;
			first_want = want;
			first_got = got;
		}
	}
	if (stats->bad_chunks)
		rc = fk_fail(err, EBADMSG,
			     "memory file %s: chunk %llu at offset %llu (0x%llx, %llu bytes) does "
			     "not match its checksum (recorded XXH3 %016llx, now %016llx); %llu of "
			     "%llu chunks differ: the memory file is corrupt",
			     path, (unsigned long long)(stats->first_bad_offset / chunk),
			     (unsigned long long)stats->first_bad_offset,
			     (unsigned long long)stats->first_bad_offset, (unsigned long long)chunk,
			     (unsigned long long)first_want, (unsigned long long)first_got,
			     (unsigned long long)stats->bad_chunks, (unsigned long long)nr);
out:
	stats->us = verify_now_us() - t0;
	free(buf);
	return rc;
}
