/* SPDX-License-Identifier: MIT */
/*
 * A point-in-time copy of a disk image, made in the background while the
 * guest goes on writing to the image.
 *
 * BRANCH needs the writable disks as they were at the branch instant, for the
 * zygote's children and its persisted snapshot. Copying the image inside the
 * pause made the pause grow with the disk (seconds for 256 MiB). Instead the
 * copy is set up in the pause (an empty destination and a bitmap of pending
 * chunks) and a thread copies after the guest resumes; before the guest's
 * first write to a chunk that is still pending, that chunk's old contents are
 * copied first (copy-before-write). Chunks that are holes in the image stay
 * holes in the copy.
 *
 * Thread safety: disk_copy_before_write may run on any thread concurrently
 * with the copy thread; everything else is called by one owner.
 */
#ifndef FORKD_DEVICES_DISK_COPY_H
#define FORKD_DEVICES_DISK_COPY_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define DISK_COPY_CHUNK (256u << 10)

struct disk_copy;

/*
 * Prepares a copy of the first `size` bytes of src_fd into dst_fd, which the
 * copy owns from now on (closed by disk_copy_free). dst_fd is truncated to
 * `size`. Nothing is copied until disk_copy_start. name labels errors.
 */
int disk_copy_create(struct disk_copy **out, const char *name, int src_fd, int dst_fd,
		     uint64_t size, struct fk_err *err);

/* Fault hook for tests: the thread waits delay_ms before its first chunk. */
void disk_copy_delay_start(struct disk_copy *c, unsigned delay_ms);

/* Starts the thread that copies every pending chunk. */
int disk_copy_start(struct disk_copy *c, struct fk_err *err);

/*
 * Call before writing [off, off + len) of the source image: copies the old
 * contents of each pending chunk in the range first. Cheap once the copy is
 * done. A failure is kept for disk_copy_wait; the guest's write goes on.
 */
void disk_copy_before_write(struct disk_copy *c, uint64_t off, uint64_t len);

/*
 * Waits until every chunk is copied (starting the thread if nobody did).
 * Returns the first error of the copy, naming the image. *elapsed_us, if
 * not NULL, gets the time from disk_copy_create to the last chunk.
 */
int disk_copy_wait(struct disk_copy *c, uint64_t *elapsed_us, struct fk_err *err);

bool disk_copy_finished(struct disk_copy *c);

/* Readable once the copy thread has ended (done, failed or stopped). */
int disk_copy_done_fd(const struct disk_copy *c);

/* Stops the thread if it still runs (the copy is then incomplete) and frees. */
void disk_copy_free(struct disk_copy *c);

#endif
