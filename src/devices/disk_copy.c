/* SPDX-License-Identifier: MIT */
#include "devices/disk_copy.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "jail/seccomp.h"

struct disk_copy {
	char name[256];
	int src_fd, dst_fd;
	uint64_t size;
	uint64_t nr_chunks;
	/*
	 * pending_chunks reaches 0 when every chunk is copied or the copy
	 * failed; read without the lock on the guest's write path.
	 */
	uint64_t pending_chunks;
	pthread_mutex_t lock; /* chunk bits, buf, err */
	uint8_t *copied;      /* one bit per chunk */
	uint8_t *buf;	      /* one chunk, used under lock */
	struct fk_err err;    /* first failure; err.code 0 while none */
	bool started, joined, stop;
	unsigned delay_ms;
	int done_fd; /* eventfd, written when the thread ends */
	pthread_t thread;
	uint64_t start_us, elapsed_us;
};

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int disk_copy_create(struct disk_copy **out, const char *name, int src_fd, int dst_fd,
		     uint64_t size, struct fk_err *err)
{
	struct disk_copy *c;
	int ret;

	*out = NULL;
	if (ftruncate(dst_fd, (off_t)size) < 0) {
		ret = fk_fail_errno(err, errno, "disk copy of %s: size the copy to %llu bytes",
				    name, (unsigned long long)size);
		close(dst_fd);
		return ret;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(dst_fd);
		return fk_fail(err, ENOMEM, "disk copy of %s: out of memory", name);
	}
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->src_fd = src_fd;
	c->dst_fd = dst_fd;
	c->size = size;
	c->nr_chunks = (size + DISK_COPY_CHUNK - 1) / DISK_COPY_CHUNK;
	c->pending_chunks = c->nr_chunks;
	c->start_us = now_us();
	c->copied = calloc(c->nr_chunks / 8 + 1, 1);
	c->buf = malloc(DISK_COPY_CHUNK);
	c->done_fd = eventfd(0, EFD_CLOEXEC);
	pthread_mutex_init(&c->lock, NULL);
	if (c->done_fd < 0) {
		ret = fk_fail_errno(err, errno, "disk copy of %s: eventfd", name);
		disk_copy_free(c);
		return ret;
	}
	if (!c->copied || !c->buf) {
		disk_copy_free(c);
		return fk_fail(err, ENOMEM, "disk copy of %s: out of memory", name);
	}
	*out = c;
	return 0;
}

/* A chunk with no data in the image stays a hole of the (truncated) copy. */
static bool chunk_is_hole(const struct disk_copy *c, uint64_t off, uint64_t len)
{
	off_t data = lseek(c->src_fd, (off_t)off, SEEK_DATA);

	if (data < 0)
		return errno == ENXIO; /* other errors: no hole information, copy */
	return (uint64_t)data >= off + len;
}

/* Copies chunk i if it is still pending. Called with c->lock held. */
static void copy_chunk_locked(struct disk_copy *c, uint64_t i)
{
	uint64_t off = i * DISK_COPY_CHUNK, len, done = 0;

	if (c->err.code || (c->copied[i / 8] & (1u << (i % 8))))
		return;
	len = c->size - off < DISK_COPY_CHUNK ? c->size - off : DISK_COPY_CHUNK;
	while (!chunk_is_hole(c, off, len) && done < len) {
		ssize_t r = pread(c->src_fd, c->buf + done, len - done, (off_t)(off + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fk_fail_errno(&c->err, r < 0 ? errno : EIO,
				      "disk copy of %s: read at byte %llu", c->name,
				      (unsigned long long)(off + done));
			goto failed;
		}
		done += (uint64_t)r;
	}
	for (uint64_t put = 0; put < done;) {
		ssize_t r = pwrite(c->dst_fd, c->buf + put, done - put, (off_t)(off + put));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fk_fail_errno(&c->err, r < 0 ? errno : EIO,
				      "disk copy of %s: write at byte %llu", c->name,
				      (unsigned long long)(off + put));
			goto failed;
		}
		put += (uint64_t)r;
	}
	c->copied[i / 8] |= (uint8_t)(1u << (i % 8));
	if (__atomic_sub_fetch(&c->pending_chunks, 1, __ATOMIC_RELEASE) == 0)
		c->elapsed_us = now_us() - c->start_us;
	return;
failed:
	/* A failed copy is of no use: stop copying, let writes through. */
	__atomic_store_n(&c->pending_chunks, 0, __ATOMIC_RELEASE);
}

static void signal_done(struct disk_copy *c)
{
	uint64_t one = 1;

	if (write(c->done_fd, &one, sizeof(one)) < 0) {
		/* An eventfd below its maximum count takes the write. */
	}
}

static void *copy_thread(void *arg)
{
	struct disk_copy *c = arg;
	struct fk_err err;

	/* Refused: the copy still runs, under the process filter it inherited. */
	if (fk_seccomp_enter_role(FK_SECCOMP_ROLE_HELPER, &err) < 0)
		fprintf(stderr, "forkd-vmm: disk copy of %s: %s\n", c->name, err.msg);

	for (unsigned t = 0; t < c->delay_ms && !__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE);
	     t += 10)
		usleep(10 * 1000);
	for (uint64_t i = 0; i < c->nr_chunks; i++) {
		if (__atomic_load_n(&c->stop, __ATOMIC_ACQUIRE) ||
		    !__atomic_load_n(&c->pending_chunks, __ATOMIC_ACQUIRE))
			break;
		pthread_mutex_lock(&c->lock);
		copy_chunk_locked(c, i);
		pthread_mutex_unlock(&c->lock);
	}
	/*
	 * Done with the copy's file: closed here, not in disk_copy_free, which
	 * runs in a later pause, where dropping the last reference to an
	 * unlinked copy would free its pages inside the pause.
	 */
	if (!__atomic_load_n(&c->pending_chunks, __ATOMIC_ACQUIRE)) {
		pthread_mutex_lock(&c->lock);
		close(c->dst_fd);
		c->dst_fd = -1;
		pthread_mutex_unlock(&c->lock);
	}
	signal_done(c);
	return NULL;
}

void disk_copy_delay_start(struct disk_copy *c, unsigned delay_ms)
{
	c->delay_ms = delay_ms;
}

int disk_copy_start(struct disk_copy *c, struct fk_err *err)
{
	int rc;

	if (c->started)
		return 0;
	if (c->nr_chunks == 0) {
		c->started = c->joined = true;
		signal_done(c);
		return 0;
	}
	rc = pthread_create(&c->thread, NULL, copy_thread, c);
	if (rc)
		return fk_fail(err, rc, "disk copy of %s: start the copy thread: %s", c->name,
			       strerror(rc));
	c->started = true;
	return 0;
}

void disk_copy_before_write(struct disk_copy *c, uint64_t off, uint64_t len)
{
	uint64_t first, last;

	if (!c || !len || !__atomic_load_n(&c->pending_chunks, __ATOMIC_ACQUIRE))
		return;
	if (off >= c->size)
		return;
	first = off / DISK_COPY_CHUNK;
	last = (len > c->size - off ? c->size - 1 : off + len - 1) / DISK_COPY_CHUNK;
	pthread_mutex_lock(&c->lock);
	for (uint64_t i = first; i <= last; i++)
		copy_chunk_locked(c, i);
	pthread_mutex_unlock(&c->lock);
}

int disk_copy_wait(struct disk_copy *c, uint64_t *elapsed_us, struct fk_err *err)
{
	int ret = disk_copy_start(c, err);

	if (ret < 0)
		return ret;
	if (!c->joined) {
		pthread_join(c->thread, NULL);
		c->joined = true;
	}
	if (elapsed_us)
		*elapsed_us = c->elapsed_us;
	if (c->err.code) {
		*err = c->err;
		return -c->err.code;
	}
	if (__atomic_load_n(&c->pending_chunks, __ATOMIC_ACQUIRE))
		return fk_fail(err, ECANCELED, "disk copy of %s: stopped before it finished",
			       c->name);
	return 0;
}

int disk_copy_done_fd(const struct disk_copy *c)
{
	return c->done_fd;
}

bool disk_copy_finished(struct disk_copy *c)
{
	return !__atomic_load_n(&c->pending_chunks, __ATOMIC_ACQUIRE);
}

void disk_copy_free(struct disk_copy *c)
{
	if (!c)
		return;
	if (c->started && !c->joined) {
		__atomic_store_n(&c->stop, true, __ATOMIC_RELEASE);
		pthread_join(c->thread, NULL);
	}
	pthread_mutex_destroy(&c->lock);
	if (c->dst_fd >= 0)
		close(c->dst_fd);
	if (c->done_fd >= 0)
		close(c->done_fd);
	free(c->copied);
	free(c->buf);
	free(c);
}
