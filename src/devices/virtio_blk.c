/* SPDX-License-Identifier: MIT */
/*
 * A request is a descriptor chain read as two byte streams: what the device
 * may read (all device-readable descriptors, in chain order) and what it may
 * write (all device-writable ones). The 16-byte header is the start of the
 * readable stream, the status is the last byte of the chain and must be
 * device-writable, data is the rest of one stream. Descriptor boundaries do
 * not matter (VERSION_1 implies ANY_LAYOUT), only which side a byte is on.
 *
 * A malformed request is answered with IOERR and the queue keeps going; a
 * malformed ring (virtq_pop failing) stops the device until reset.
 */
#include "devices/virtio_blk.h"
#include "devices/disk_copy.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#define FEATURE(bit) (1ULL << (bit))

struct virtio_blk {
	int fd;
	bool readonly;
	uint64_t capacity; /* sectors */
	char *path;
	uint8_t id[VIRTIO_BLK_ID_BYTES];
	uint8_t config[VIRTIO_BLK_CONFIG_SIZE];
	struct virtio_blk_stats stats;
	/* The point-in-time copy of the last BRANCH, or NULL; replaced only while paused. */
	struct disk_copy *copy;
	/* Scratch for the chain being served; too big for a vCPU thread's stack. */
	struct virtq_chain chain;
};

static void put_le32(uint8_t *p, uint32_t v)
{
	v = htole32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, sizeof(v));
}

static int disk_size(int fd, const struct stat *st, const char *path, uint64_t *size,
		     struct fk_err *err)
{
	if (S_ISREG(st->st_mode)) {
		*size = (uint64_t)st->st_size;
		return 0;
	}
	if (ioctl(fd, BLKGETSIZE64, size) < 0)
		return fk_fail_errno(err, errno, "virtio-blk %s: cannot get block device size",
				     path);
	return 0;
}

int virtio_blk_open(struct virtio_blk **out, const char *path, bool readonly, const char *id,
		    struct fk_err *err)
{
	struct virtio_blk *blk;
	uint8_t probe[VIRTIO_BLK_SECTOR_SIZE];
	struct stat st;
	uint64_t size;
	ssize_t n;
	int ret;

	*out = NULL;
	if (!path || !*path)
		return fk_fail(err, EINVAL, "virtio-blk: empty disk image path");
	if (id && strlen(id) > VIRTIO_BLK_ID_BYTES)
		return fk_fail(err, EINVAL, "virtio-blk %s: id \"%s\" is longer than %d bytes",
			       path, id, VIRTIO_BLK_ID_BYTES);
	/* stat first: opening a FIFO we were given by mistake would block. */
	if (stat(path, &st) < 0)
		return fk_fail_errno(err, errno, "virtio-blk %s", path);
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return fk_fail(err, EINVAL, "virtio-blk %s: not a regular file or block device",
			       path);

	blk = calloc(1, sizeof(*blk));
	if (!blk)
		return fk_fail_errno(err, ENOMEM, "virtio-blk %s", path);
	blk->fd = -1;
	blk->path = strdup(path);
	if (!blk->path) {
		ret = fk_fail_errno(err, ENOMEM, "virtio-blk %s", path);
		goto fail;
	}
	blk->fd = open(path, (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_NOCTTY);
	if (blk->fd < 0) {
		ret = fk_fail_errno(err, errno, "virtio-blk %s: cannot open for %s", path,
				    readonly ? "reading" : "reading and writing");
		goto fail;
	}
	/* The path may have been replaced between stat and open: trust only the fd. */
	if (fstat(blk->fd, &st) < 0) {
		ret = fk_fail_errno(err, errno, "virtio-blk %s: fstat", path);
		goto fail;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		ret =
		    fk_fail(err, EINVAL, "virtio-blk %s: not a regular file or block device", path);
		goto fail;
	}
	ret = disk_size(blk->fd, &st, path, &size, err);
	if (ret)
		goto fail;
	if (size < VIRTIO_BLK_SECTOR_SIZE) {
		ret = fk_fail(err, EINVAL,
			      "virtio-blk %s: size %llu bytes, need at least one %d-byte sector",
			      path, (unsigned long long)size, VIRTIO_BLK_SECTOR_SIZE);
		goto fail;
	}
	n = pread(blk->fd, probe, sizeof(probe), 0);
	if (n < 0) {
		ret =
		    fk_fail_errno(err, errno, "virtio-blk %s: cannot read the first sector", path);
		goto fail;
	}

	blk->readonly = readonly;
	/* A partial last sector cannot be addressed by the guest: round down. */
	blk->capacity = size / VIRTIO_BLK_SECTOR_SIZE;
	if (id)
		memcpy(blk->id, id, strlen(id));
	put_le64(blk->config + VIRTIO_BLK_CFG_CAPACITY, blk->capacity);
	put_le32(blk->config + VIRTIO_BLK_CFG_SIZE_MAX, VIRTIO_BLK_SIZE_MAX);
	put_le32(blk->config + VIRTIO_BLK_CFG_SEG_MAX, VIRTIO_BLK_SEG_MAX);
	put_le32(blk->config + VIRTIO_BLK_CFG_BLK_SIZE, VIRTIO_BLK_SECTOR_SIZE);
	*out = blk;
	return 0;
fail:
	virtio_blk_close(blk);
	return ret;
}

void virtio_blk_close(struct virtio_blk *blk)
{
	if (!blk)
		return;
	disk_copy_free(blk->copy); /* before its source fd goes */
	if (blk->fd >= 0)
		close(blk->fd);
	free(blk->path);
	free(blk);
}

int virtio_blk_begin_copy(struct virtio_blk *blk, int dst_fd, const char *name, struct fk_err *err)
{
	struct disk_copy *c;
	struct stat st;
	uint64_t size = blk->capacity * VIRTIO_BLK_SECTOR_SIZE;
	int ret;

	/* A regular file is copied whole, with a tail shorter than a sector. */
	if (fstat(blk->fd, &st) == 0 && S_ISREG(st.st_mode))
		size = (uint64_t)st.st_size;
	ret = disk_copy_create(&c, name, blk->fd, dst_fd, size, err);
	if (ret < 0)
		return ret;
	disk_copy_free(blk->copy);
	blk->copy = c;
	return 0;
}

void virtio_blk_end_copy(struct virtio_blk *blk)
{
	disk_copy_free(blk->copy);
	blk->copy = NULL;
}

struct disk_copy *virtio_blk_copy(const struct virtio_blk *blk)
{
	return blk->copy;
}

int virtio_blk_fd(const struct virtio_blk *blk)
{
	return blk->fd;
}

uint64_t virtio_blk_capacity(const struct virtio_blk *blk)
{
	return blk->capacity;
}

bool virtio_blk_readonly(const struct virtio_blk *blk)
{
	return blk->readonly;
}

void virtio_blk_get_stats(const struct virtio_blk *blk, struct virtio_blk_stats *stats)
{
	*stats = blk->stats;
}

static uint64_t blk_features(void *dev)
{
	struct virtio_blk *blk = dev;
	uint64_t f = FEATURE(VIRTIO_BLK_F_SIZE_MAX) | FEATURE(VIRTIO_BLK_F_SEG_MAX) |
		     FEATURE(VIRTIO_BLK_F_BLK_SIZE) | FEATURE(VIRTIO_BLK_F_FLUSH);

	if (blk->readonly)
		f |= FEATURE(VIRTIO_BLK_F_RO);
	return f;
}

static void blk_config_read(void *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct virtio_blk *blk = dev;

	memcpy(data, blk->config + offset, len);
}

static void blk_reset(void *dev)
{
	/* Requests are served synchronously: nothing is in flight to cancel. */
	(void)dev;
}

/*
 * Calls fn on each host piece of bytes [off, off+len) of the chain's
 * readable (writable=false) or writable stream. The caller has checked the
 * range against the stream's total length.
 */
static int walk_stream(const struct virtq_chain *c, bool writable, uint64_t off, uint64_t len,
		       int (*fn)(void *ctx, uint8_t *p, size_t n), void *ctx)
{
	int i, ret;

	for (i = 0; i < c->nr_segs && len; i++) {
		const struct virtq_seg *s = &c->segs[i];
		uint64_t n;

		if (s->device_writable != writable)
			continue;
		if (off >= s->len) {
			off -= s->len;
			continue;
		}
		n = s->len - off < len ? s->len - off : len;
		ret = fn(ctx, s->hva + off, (size_t)n);
		if (ret)
			return ret;
		off = 0;
		len -= n;
	}
	return len ? -EINVAL : 0;
}

static int copy_out_piece(void *ctx, uint8_t *p, size_t n)
{
	uint8_t **dst = ctx;

	memcpy(*dst, p, n);
	*dst += n;
	return 0;
}

static int copy_in_piece(void *ctx, uint8_t *p, size_t n)
{
	const uint8_t **src = ctx;

	memcpy(p, *src, n);
	*src += n;
	return 0;
}

struct file_io {
	int fd;
	bool to_guest; /* pread into guest memory, else pwrite from it */
	uint64_t file_off;
	uint64_t done;
	int error; /* errno of a failed host I/O, or EIO for a short read */
};

static int file_io_piece(void *ctx, uint8_t *p, size_t n)
{
	struct file_io *io = ctx;

	while (n) {
		ssize_t r = io->to_guest ? pread(io->fd, p, n, (off_t)io->file_off)
					 : pwrite(io->fd, p, n, (off_t)io->file_off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			/* 0: the image shrank under us since open. */
			io->error = r < 0 ? errno : EIO;
			return -io->error;
		}
		p += r;
		n -= (size_t)r;
		io->file_off += (uint64_t)r;
		io->done += (uint64_t)r;
	}
	return 0;
}

struct blk_req {
	struct virtio_mmio *t;
	struct virtio_blk *blk;
	const struct virtq_chain *c;
	uint32_t type;
	uint64_t sector;
	uint64_t written; /* data bytes stored into the writable stream */
};

static uint8_t bad_request(struct blk_req *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static uint8_t bad_request(struct blk_req *r, const char *fmt, ...)
{
	char why[128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	r->blk->stats.bad_requests++;
	virtio_mmio_record_error(r->t, "virtio-blk %s: request at head %u: %s", r->blk->path,
				 r->c->head, why);
	return VIRTIO_BLK_S_IOERR;
}

static uint8_t do_rw(struct blk_req *r, bool to_guest, uint64_t data_len)
{
	struct virtio_blk *blk = r->blk;
	struct file_io io = {.fd = blk->fd, .to_guest = to_guest};
	uint64_t nsectors = data_len / VIRTIO_BLK_SECTOR_SIZE;

	if (data_len % VIRTIO_BLK_SECTOR_SIZE)
		return bad_request(r, "data length %llu is not a multiple of %d",
				   (unsigned long long)data_len, VIRTIO_BLK_SECTOR_SIZE);
	if (data_len > VIRTIO_BLK_MAX_DATA)
		return bad_request(r, "data length %llu exceeds the maximum %llu",
				   (unsigned long long)data_len,
				   (unsigned long long)VIRTIO_BLK_MAX_DATA);
	/* Compared in sectors: sector * 512 could wrap before this check. */
	if (r->sector > blk->capacity || nsectors > blk->capacity - r->sector)
		return bad_request(r, "sectors [%llu, +%llu) beyond capacity %llu",
				   (unsigned long long)r->sector, (unsigned long long)nsectors,
				   (unsigned long long)blk->capacity);
	if (!to_guest && blk->readonly)
		return bad_request(r, "write to a read-only disk");

	io.file_off = r->sector * VIRTIO_BLK_SECTOR_SIZE;
	if (!to_guest)
		disk_copy_before_write(blk->copy, io.file_off, data_len);
	/* Data follows the header in the readable stream, precedes the status in the writable. */
	walk_stream(r->c, to_guest, to_guest ? 0 : VIRTIO_BLK_REQ_HDR_SIZE, data_len, file_io_piece,
		    &io);
	if (to_guest)
		r->written = io.done;
	if (io.error) {
		blk->stats.io_errors++;
		virtio_mmio_record_error(r->t, "virtio-blk %s: %s at sector %llu: %s", blk->path,
					 to_guest ? "read" : "write", (unsigned long long)r->sector,
					 strerror(io.error));
		return VIRTIO_BLK_S_IOERR;
	}
	return VIRTIO_BLK_S_OK;
}

static uint8_t serve(struct blk_req *r)
{
	const struct virtq_chain *c = r->c;
	uint8_t hdr[VIRTIO_BLK_REQ_HDR_SIZE], *dst = hdr;
	const uint8_t *src;
	uint64_t readable_data, writable_data, n;
	bool seen_writable = false;
	uint32_t type_le;
	uint64_t sector_le;
	int i;

	for (i = 0; i < c->nr_segs; i++) {
		if (c->segs[i].len == 0)
			continue;
		if (c->segs[i].device_writable)
			seen_writable = true;
		else if (seen_writable)
			return bad_request(r, "device-readable descriptor after a writable one");
	}
	if (c->readable_len < VIRTIO_BLK_REQ_HDR_SIZE)
		return bad_request(r, "header: %llu device-readable bytes, need %d",
				   (unsigned long long)c->readable_len, VIRTIO_BLK_REQ_HDR_SIZE);
	/* One copy: the guest may rewrite the header while we look at it. */
	walk_stream(c, false, 0, sizeof(hdr), copy_out_piece, &dst);
	memcpy(&type_le, hdr, sizeof(type_le));
	memcpy(&sector_le, hdr + 8, sizeof(sector_le));
	r->type = le32toh(type_le);
	r->sector = le64toh(sector_le);
	readable_data = c->readable_len - VIRTIO_BLK_REQ_HDR_SIZE;
	writable_data = c->writable_len - 1; /* the caller found the status byte */

	switch (r->type) {
	case VIRTIO_BLK_T_IN:
		if (readable_data)
			return bad_request(r, "read with %llu device-readable data bytes",
					   (unsigned long long)readable_data);
		return do_rw(r, true, writable_data);
	case VIRTIO_BLK_T_OUT:
		if (writable_data)
			return bad_request(r, "write with %llu device-writable data bytes",
					   (unsigned long long)writable_data);
		return do_rw(r, false, readable_data);
	case VIRTIO_BLK_T_FLUSH:
		if (readable_data || writable_data)
			return bad_request(r, "flush with data");
		if (fdatasync(r->blk->fd) < 0) {
			r->blk->stats.io_errors++;
			virtio_mmio_record_error(r->t, "virtio-blk %s: flush: %s", r->blk->path,
						 strerror(errno));
			return VIRTIO_BLK_S_IOERR;
		}
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID:
		if (readable_data)
			return bad_request(r, "get-id with device-readable data");
		n = writable_data < VIRTIO_BLK_ID_BYTES ? writable_data : VIRTIO_BLK_ID_BYTES;
		src = r->blk->id;
		walk_stream(c, true, 0, n, copy_in_piece, &src);
		r->written = n;
		return VIRTIO_BLK_S_OK;
	default:
		r->blk->stats.unsupported++;
		return VIRTIO_BLK_S_UNSUPP;
	}
}

/* Serves one chain; returns the used length (bytes written into the chain). */
static uint32_t handle_chain(struct virtio_mmio *t, struct virtio_blk *blk,
			     const struct virtq_chain *c)
{
	struct blk_req r = {.t = t, .blk = blk, .c = c};
	const struct virtq_seg *last = NULL;
	uint8_t status;
	int i;

	blk->stats.requests++;
	for (i = c->nr_segs - 1; i >= 0 && !last; i--)
		if (c->segs[i].len)
			last = &c->segs[i];
	if (!last || !last->device_writable) {
		bad_request(&r, "last byte is not device-writable: no status can be returned");
		return 0;
	}
	status = serve(&r);
	__atomic_store_n(&last->hva[last->len - 1], status, __ATOMIC_RELAXED);
	return (uint32_t)(r.written + 1);
}

static void blk_queue_notify(struct virtio_mmio *t, void *dev, uint32_t q)
{
	struct virtio_blk *blk = dev;
	struct virtq *vq = &t->state.queues[q];
	bool completed = false;
	struct fk_err err;
	uint32_t used_len;
	int ret;

	for (;;) {
		ret = virtq_pop(t->mem, vq, &blk->chain, &err);
		if (ret < 0) {
			virtio_mmio_set_needs_reset(t, err.msg);
			break;
		}
		if (ret == 0)
			break;
		used_len = handle_chain(t, blk, &blk->chain);
		if (virtq_push(t->mem, vq, blk->chain.head, used_len, &err)) {
			virtio_mmio_set_needs_reset(t, err.msg);
			break;
		}
		completed = true;
	}
	if (completed)
		virtio_mmio_signal_used(t, q);
}

const struct virtio_dev_ops virtio_blk_ops = {
    .name = "virtio-blk",
    .device_id = VIRTIO_ID_BLOCK,
    .num_queues = 1,
    .queue_max_size = VIRTIO_BLK_QUEUE_SIZE,
    .features = blk_features,
    .config_size = VIRTIO_BLK_CONFIG_SIZE,
    .config_read = blk_config_read,
    .queue_notify = blk_queue_notify,
    .reset = blk_reset,
};
