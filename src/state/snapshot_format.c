/* SPDX-License-Identifier: MIT */
#include "state/snapshot_format.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <linux/magic.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

/* Fixed part of the VM_INFO payload; regions (SNAP_VMI_REGION_LEN each) follow. */
#define SNAP_VMI_OFF_MEM_SIZE  0
#define SNAP_VMI_OFF_FILE_SIZE 8
#define SNAP_VMI_OFF_NR_VCPUS  16
#define SNAP_VMI_OFF_NR_REGION 20
#define SNAP_VMI_OFF_NAME      24
#define SNAP_VMI_FIXED_LEN     (SNAP_VMI_OFF_NAME + SNAP_MEM_NAME_LEN)
#define SNAP_VMI_REGION_LEN    24

/* DEVICE payload prefix: le32 device type, le32 reserved. */
#define SNAP_DEV_PREFIX_LEN 8

/* CPU_IDENTITY payload: vendor[12], le32 nr_entries, SNAP_CPU_NR_WORDS le32 words, entries. */
#define SNAP_CPU_NR_WORDS  10
#define SNAP_CPU_FIXED_LEN (12 + 4 + 4 * SNAP_CPU_NR_WORDS)
#define SNAP_CPU_ENTRY_LEN 32

/* pwrite at most this much per call, so a single huge run never hits the kernel's 2 GiB cap. */
#define SNAP_MAX_IO (1ull << 30)

struct snap_writer_section {
	uint32_t type;
	uint32_t instance;
	uint8_t *data;
	size_t len;
};

struct snap_reader_section {
	uint32_t type;
	uint32_t instance;
	uint64_t offset;
	uint64_t length;
	uint64_t checksum;
};

struct snap_reader {
	char *state_path;
	char *mem_path;
	uint8_t *buf;
	size_t len;
	uint32_t nr_sections;
	struct snap_reader_section *sections;
	struct snap_vm_info vm;
	int mem_fd;
};

/* ---- little-endian helpers ---- */

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	uint32_t v = 0;

	for (int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint64_t align_up8(uint64_t v)
{
	return (v + SNAP_ALIGN - 1) & ~(uint64_t)(SNAP_ALIGN - 1);
}

static uint64_t checksum(const void *data, size_t len)
{
	return XXH3_64bits(data, len);
}

const char *snap_section_type_name(uint32_t type)
{
	static const char *const names[] = {
	    [SNAP_SEC_VM_INFO] = "VM_INFO",
	    [SNAP_SEC_CPU_IDENTITY] = "CPU_IDENTITY",
	    [SNAP_SEC_VCPU] = "VCPU",
	    [SNAP_SEC_IRQCHIP] = "IRQCHIP",
	    [SNAP_SEC_PIT] = "PIT",
	    [SNAP_SEC_CLOCK] = "CLOCK",
	    [SNAP_SEC_DEVICE] = "DEVICE",
	    [SNAP_SEC_OPAQUE] = "OPAQUE",
	    [SNAP_SEC_MEM_HASHES] = "MEM_HASHES",
	    [SNAP_SEC_PARENT] = "PARENT",
	    [SNAP_SEC_PAGE_MAP] = "PAGE_MAP",
	};

	if (type == 0 || type > SNAP_SEC_MAX)
		return "UNKNOWN";
	return names[type];
}

/* ---- writer ---- */

void snap_writer_init(struct snap_writer *w, uint32_t nr_vcpus)
{
	memset(w, 0, sizeof(*w));
	w->nr_vcpus = nr_vcpus;
}

void snap_writer_free(struct snap_writer *w)
{
	if (w->diff) {
		free(w->diff->parent_dir);
		free(w->diff->pages);
		free(w->diff);
	}
	for (size_t i = 0; i < w->nr_sections; i++)
		free(w->sections[i].data);
	free(w->sections);
	memset(w, 0, sizeof(*w));
}

int snap_writer_add_file(struct snap_writer *w, const char *name, int src_fd, struct fk_err *err)
{
	size_t len = strlen(name);

	if (len == 0 || len >= SNAP_FILE_NAME_LEN ||
	    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "abcdefghijklmnopqrstuvwxyz"
			 "0123456789._-") != len ||
	    name[0] == '.' || !strcmp(name, SNAP_STATE_FILE) || !strcmp(name, SNAP_MEMORY_FILE))
		return fk_fail(err, EINVAL,
			       "snapshot file name '%s': expected 1..%d of [A-Za-z0-9._-], "
			       "not starting with '.', not state or memory",
			       name, SNAP_FILE_NAME_LEN - 1);
	if (w->nr_files == SNAP_MAX_FILES)
		return fk_fail(err, ENOSPC, "snapshot: more than %d extra files", SNAP_MAX_FILES);
	for (int i = 0; i < w->nr_files; i++)
		if (!strcmp(w->files[i].name, name))
			return fk_fail(err, EEXIST, "snapshot file '%s' added twice", name);
	memcpy(w->files[w->nr_files].name, name, len + 1);
	w->files[w->nr_files].src_fd = src_fd;
	w->nr_files++;
	return 0;
}

int snap_copy_fd(int src_fd, int dst_fd, struct fk_err *err)
{
	struct stat st;
	off_t in = 0, out = 0;

	if (ioctl(dst_fd, FICLONE, src_fd) == 0)
		return 0;
	if (fstat(src_fd, &st) < 0)
		return fk_fail_errno(err, errno, "copy: stat source");
	if (ftruncate(dst_fd, 0) < 0)
		return fk_fail_errno(err, errno, "copy: truncate destination");
	while (in < st.st_size) {
		ssize_t n =
		    copy_file_range(src_fd, &in, dst_fd, &out, (size_t)(st.st_size - in), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return fk_fail_errno(err, errno, "copy: copy_file_range");
		if (n == 0)
			return fk_fail(err, EIO, "copy: source shrank while copying");
	}
	return 0;
}

static int write_extra_files(int dirfd, const char *tmp, const struct snap_writer *w,
			     struct fk_err *err)
{
	for (int i = 0; i < w->nr_files; i++) {
		const char *name = w->files[i].name;
		int fd = openat(dirfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		int rc;

		if (fd < 0)
			return fk_fail_errno(err, errno, "snapshot %s/%s: create", tmp, name);
		rc = snap_copy_fd(w->files[i].src_fd, fd, err);
		if (!rc && fsync(fd) < 0)
			rc = fk_fail_errno(err, errno, "snapshot %s/%s: fsync", tmp, name);
		close(fd);
		if (rc)
			return fk_wrap(err, "snapshot %s/%s", tmp, name);
	}
	return 0;
}

static int writer_append(struct snap_writer *w, uint32_t type, uint32_t instance,
			 const void *prefix, size_t prefix_len, const void *data, size_t len,
			 struct fk_err *err)
{
	const char *name = snap_section_type_name(type);
	struct snap_writer_section *s;

	if (type == 0 || type > SNAP_SEC_MAX)
		return fk_fail(err, EINVAL, "snapshot section type %u: unknown", type);
	if (type == SNAP_SEC_VM_INFO || type == SNAP_SEC_MEM_HASHES || type == SNAP_SEC_PARENT ||
	    type == SNAP_SEC_PAGE_MAP)
		return fk_fail(err, EINVAL,
			       "snapshot section %s: written by commit, not by callers", name);
	if (type == SNAP_SEC_VCPU && instance >= w->nr_vcpus)
		return fk_fail(err, EINVAL, "snapshot section VCPU %u: the VM has %u vCPUs",
			       instance, w->nr_vcpus);
	if (len > SNAP_STATE_MAX_BYTES - prefix_len)
		return fk_fail(err, EFBIG,
			       "snapshot section %s %u: %zu bytes exceeds the %llu limit", name,
			       instance, len, (unsigned long long)SNAP_STATE_MAX_BYTES);
	for (size_t i = 0; i < w->nr_sections; i++)
		if (w->sections[i].type == type && w->sections[i].instance == instance)
			return fk_fail(err, EEXIST, "snapshot section %s %u: added twice", name,
				       instance);
	if (w->nr_sections == w->cap_sections) {
		size_t cap = w->cap_sections ? 2 * w->cap_sections : 16;
		void *p = realloc(w->sections, cap * sizeof(*w->sections));

		if (!p)
			return fk_fail(err, ENOMEM, "snapshot section %s %u: out of memory", name,
				       instance);
		w->sections = p;
		w->cap_sections = cap;
	}
	s = &w->sections[w->nr_sections];
	s->data = malloc(prefix_len + len ? prefix_len + len : 1);
	if (!s->data)
		return fk_fail(err, ENOMEM, "snapshot section %s %u: out of memory", name,
			       instance);
	if (prefix_len)
		memcpy(s->data, prefix, prefix_len);
	if (len)
		memcpy(s->data + prefix_len, data, len);
	s->type = type;
	s->instance = instance;
	s->len = prefix_len + len;
	w->nr_sections++;
	return 0;
}

int snap_writer_add(struct snap_writer *w, uint32_t type, uint32_t instance, const void *data,
		    size_t len, struct fk_err *err)
{
	return writer_append(w, type, instance, NULL, 0, data, len, err);
}

int snap_writer_add_device(struct snap_writer *w, uint32_t instance, uint32_t device_type,
			   const void *data, size_t len, struct fk_err *err)
{
	uint8_t prefix[SNAP_DEV_PREFIX_LEN] = {0};

	put_le32(prefix, device_type);
	return writer_append(w, SNAP_SEC_DEVICE, instance, prefix, sizeof(prefix), data, len, err);
}

static int check_memory_source(const struct snap_memory_source *mem, const char *dir,
			       uint64_t *total, struct fk_err *err)
{
	uint64_t sum = 0;

	*total = 0;
	for (uint32_t i = 0; i < mem->nr_regions; i++) {
		const struct snap_mem_region *r = &mem->regions[i];

		if (r->size == 0 || r->gpa % SNAP_PAGE_SIZE || r->size % SNAP_PAGE_SIZE ||
		    r->gpa + r->size < r->gpa || !r->host)
			return fk_fail(
			    err, EINVAL,
			    "snapshot %s: memory region %u [%#llx, +%#llx): needs a host "
			    "pointer and non-empty, 4 KiB-aligned bounds",
			    dir, i, (unsigned long long)r->gpa, (unsigned long long)r->size);
		for (uint32_t j = 0; j < i; j++) {
			const struct snap_mem_region *o = &mem->regions[j];

			if (r->gpa < o->gpa + o->size && o->gpa < r->gpa + r->size)
				return fk_fail(err, EINVAL,
					       "snapshot %s: memory regions %u and %u overlap", dir,
					       j, i);
		}
		if (sum + r->size < sum)
			return fk_fail(err, EOVERFLOW, "snapshot %s: memory size overflows", dir);
		sum += r->size;
	}
	*total = sum;
	return 0;
}

/* Word-wise OR with an early exit per cache line: memory-bound, no syscalls. */
static bool page_is_zero(const uint8_t *page)
{
	const uint64_t *q = (const uint64_t *)page;

	for (size_t i = 0; i < SNAP_PAGE_SIZE / 8; i += 8) {
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] |
		    q[i + 7])
			return false;
	}
	return true;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* What one commit of the memory file needs besides the regions themselves. */
struct mem_write {
	const struct snap_memory_source *mem;
	const struct snap_diff *diff; /* a diff snapshot: only its pages are stored */
	uint64_t parent_identity;     /* a diff snapshot's parent, read at commit */
	uint32_t parent_depth;	      /* the child's depth: the parent's + 1 */
	uint64_t total;
	uint64_t nr_chunks;
	uint64_t *hashes;	/* per chunk, filled by write_memory */
	uint64_t hashed_bytes;	/* bytes of the chunks that had data */
	uint64_t hash_us;	/* time spent hashing, inside the write */
	uint64_t free_at_start; /* bytes free on the target's filesystem, for ENOSPC errors */
	uint64_t data_bytes;	/* non-zero bytes written */
};

/* Non-zero pages the memory file gets: all of them, or a diff's stored ones only. */
static uint64_t count_nonzero_bytes(const struct snap_memory_source *mem,
				    const struct snap_diff *diff)
{
	uint64_t n = 0, page = 0;

	for (uint32_t r = 0; r < mem->nr_regions; r++) {
		const uint8_t *host = mem->regions[r].host;

		for (uint64_t off = 0; off < mem->regions[r].size; off += SNAP_PAGE_SIZE, page++)
			if ((!diff || ((diff->pages[page / 64] >> (page % 64)) & 1)) &&
			    !page_is_zero(host + off))
				n += SNAP_PAGE_SIZE;
	}
	return n;
}

/*
 * A full disk is a user's problem to solve: say which file, how much it
 * needed and how much there was, rather than only "No space left on device".
 */
static int write_failed(struct fk_err *err, int code, const char *path, uint64_t off,
			const struct mem_write *mw)
{
	if (code == ENOSPC || code == EDQUOT) {
		uint64_t need = count_nonzero_bytes(mw->mem, mw->diff);

		return fk_fail(err, code,
			       "memory file %s: %s at offset %llu: the snapshot needs %llu bytes "
			       "(%llu MiB) for the non-zero pages of %llu MiB of guest RAM; the "
			       "filesystem had %llu MiB free when the write started",
			       path, strerror(code), (unsigned long long)off,
			       (unsigned long long)need,
			       (unsigned long long)(need + (1 << 20) - 1) >> 20,
			       (unsigned long long)(mw->total >> 20),
			       (unsigned long long)(mw->free_at_start >> 20));
	}
	return fk_fail_errno(err, code, "memory file %s: write at %llu", path,
			     (unsigned long long)off);
}

static int pwrite_all(int fd, const uint8_t *p, uint64_t len, uint64_t off, const char *path,
		      const struct mem_write *mw, struct fk_err *err)
{
	while (len) {
		size_t chunk = len > SNAP_MAX_IO ? SNAP_MAX_IO : (size_t)len;
		ssize_t n = pwrite(fd, p, chunk, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (mw)
				return write_failed(err, errno, path, off, mw);
			return fk_fail_errno(err, errno, "%s: write at %llu", path,
					     (unsigned long long)off);
		}
		if (n == 0)
			return fk_fail(err, EIO, "%s: write at %llu made no progress", path,
				       (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* The pieces of file range [off, off + len): a chunk may span the end of one region. */
struct mem_piece {
	const uint8_t *host;
	uint64_t len;
	uint64_t file_off;
};

static int chunk_pieces(const struct snap_memory_source *mem, uint64_t off, uint64_t len,
			struct mem_piece *out, int max)
{
	uint64_t region_start = 0;
	int n = 0;

	for (uint32_t r = 0; r < mem->nr_regions && len; r++) {
		uint64_t size = mem->regions[r].size;

		if (off < region_start + size) {
			uint64_t in = off - region_start;
			uint64_t piece = size - in < len ? size - in : len;

			if (n == max)
				break;
			out[n++] =
			    (struct mem_piece){.host = (const uint8_t *)mem->regions[r].host + in,
					       .len = piece,
					       .file_off = off};
			off += piece;
			len -= piece;
		}
		region_start += size;
	}
	return n;
}

uint64_t snap_zero_chunk_hash(uint64_t len)
{
	static const uint8_t zeros[4096];
	XXH3_state_t *st = XXH3_createState();
	uint64_t h;

	if (!st)
		return 0;
	XXH3_64bits_reset(st);
	for (uint64_t done = 0; done < len; done += sizeof(zeros))
		XXH3_64bits_update(
		    st, zeros, len - done < sizeof(zeros) ? (size_t)(len - done) : sizeof(zeros));
	h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

/* Threads writing one memory file; the only state they share. */
#define SNAP_WRITE_THREADS_MAX 4
#define SNAP_CHUNK_PAGES       (SNAP_HASH_CHUNK / SNAP_PAGE_SIZE)

/* /proc/PID/pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst). */
#define PAGEMAP_PRESENT	  (1ull << 63)
#define PAGEMAP_EXCLUSIVE (1ull << 56)

struct mem_writer {
	struct mem_write *mw;
	const char *path;
	int direct_fd;		      /* the memory file with O_DIRECT, or -1 */
	int buffered_fd;	      /* the same file through the page cache */
	int pagemap_fd;		      /* /proc/self/pagemap, or -1: then no O_DIRECT */
	uint64_t zero_full;	      /* XXH3 of a full all-zero chunk */
	atomic_uint_fast64_t next;    /* next chunk to claim */
	atomic_bool stop;	      /* a thread failed: the others stop claiming */
	atomic_bool direct;	      /* O_DIRECT still in use (not refused by a write) */
	atomic_bool fell_back;	      /* O_DIRECT was dropped after a refused write */
	atomic_uint_fast64_t written; /* non-zero bytes written so far */
	atomic_uint_fast64_t direct_bytes;
	atomic_uint_fast64_t hashed;
	atomic_uint_fast64_t hash_us;
	pthread_mutex_t lock; /* guards rc and err: the first failure wins */
	int rc;
	struct fk_err err;
};

static void mem_writer_fail(struct mem_writer *m, int rc, const struct fk_err *err)
{
	pthread_mutex_lock(&m->lock);
	if (!m->rc) {
		m->rc = rc;
		m->err = *err;
	}
	pthread_mutex_unlock(&m->lock);
	atomic_store(&m->stop, true);
}

/*
 * Whether O_DIRECT may take this chunk's pages: only if every present page
 * is mapped by this process alone. O_DIRECT pins the pages it sends, and
 * pinning a page shared copy-on-write with another process (a live
 * snapshot's zygote shares all of them with the running VM) makes the kernel
 * copy it for us first: a copy of every page written, slower than the page
 * cache's (1 GiB live to disk: 2.2-3.0 s against 1.7-2.0 s buffered). Those
 * chunks go through the page cache instead.
 */
static bool chunk_exclusive(const struct mem_writer *m, const struct mem_piece *pieces, int np)
{
	uint64_t entries[SNAP_CHUNK_PAGES];

	for (int k = 0; k < np; k++) {
		uint64_t pages = pieces[k].len / SNAP_PAGE_SIZE;
		off_t at = (off_t)((uintptr_t)pieces[k].host / SNAP_PAGE_SIZE * 8);
		ssize_t n = pread(m->pagemap_fd, entries, pages * 8, at);

		if (n != (ssize_t)(pages * 8))
			return false;
		for (uint64_t i = 0; i < pages; i++)
			if ((entries[i] & PAGEMAP_PRESENT) && !(entries[i] & PAGEMAP_EXCLUSIVE))
				return false;
	}
	return true;
}

/*
 * pwrite until done: a short write (a full filesystem, a signal) continues
 * where it stopped. Some filesystems take O_DIRECT but refuse a write they
 * cannot do directly (EINVAL: an alignment 4 KiB pages do not give): O_DIRECT
 * is then dropped for the rest of the commit and the write retried buffered.
 */
static int mem_pwrite(struct mem_writer *m, int fd, const uint8_t *p, uint64_t len, uint64_t off,
		      struct fk_err *err)
{
	while (len) {
		ssize_t n = pwrite(fd, p, (size_t)len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EINVAL && fd == m->direct_fd) {
			atomic_store(&m->direct, false);
			atomic_store(&m->fell_back, true);
			fd = m->buffered_fd;
			continue;
		}
		if (n < 0)
			return write_failed(err, errno, m->path, off, m->mw);
		if (n == 0)
			return fk_fail(err, EIO, "memory file %s: write at %llu made no progress",
				       m->path, (unsigned long long)off);
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
		atomic_fetch_add(&m->written, (uint64_t)n);
		if (fd == m->direct_fd)
			atomic_fetch_add(&m->direct_bytes, (uint64_t)n);
	}
	return 0;
}

static const uint8_t zero_page[SNAP_PAGE_SIZE];

static bool page_stored(const uint64_t *stored, uint64_t page)
{
	return !stored || ((stored[page / 64] >> (page % 64)) & 1);
}

/*
 * One chunk: its runs of non-zero pages go out in one pwrite each, zero pages
 * stay holes, and a chunk that had data is hashed right after (while its
 * bytes are still in the CPU cache) for MEM_HASHES. A chunk with no data is
 * a hole; its checksum is that of zeros.
 */
static int write_chunk(struct mem_writer *m, XXH3_state_t *st, uint64_t c, struct fk_err *err)
{
	struct mem_write *mw = m->mw;
	uint64_t off = c << SNAP_HASH_CHUNK_SHIFT, t0;
	uint64_t len = mw->total - off < SNAP_HASH_CHUNK ? mw->total - off : SNAP_HASH_CHUNK;
	struct mem_piece pieces[4];
	int np = chunk_pieces(mw->mem, off, len, pieces, 4);
	const uint64_t *stored = mw->diff ? mw->diff->pages : NULL;
	bool has_data = false;
	int rc, fd = m->buffered_fd;

	if (atomic_load(&m->direct) && chunk_exclusive(m, pieces, np))
		fd = m->direct_fd;
	for (int k = 0; k < np; k++) {
		const uint8_t *host = pieces[k].host;
		uint64_t pages = pieces[k].len / SNAP_PAGE_SIZE, i = 0;
		uint64_t first = pieces[k].file_off / SNAP_PAGE_SIZE;

		while (i < pages) {
			uint64_t start;

			/* A diff stores only its own pages: the others are holes here. */
			while (i < pages && (!page_stored(stored, first + i) ||
					     page_is_zero(host + i * SNAP_PAGE_SIZE)))
				i++;
			start = i;
			while (i < pages && page_stored(stored, first + i) &&
			       !page_is_zero(host + i * SNAP_PAGE_SIZE))
				i++;
			if (i > start) {
				rc = mem_pwrite(m, fd, host + start * SNAP_PAGE_SIZE,
						(i - start) * SNAP_PAGE_SIZE,
						pieces[k].file_off + start * SNAP_PAGE_SIZE, err);
				if (rc)
					return rc;
				has_data = true;
			}
		}
	}
	if (!has_data) {
		mw->hashes[c] = len == SNAP_HASH_CHUNK ? m->zero_full : snap_zero_chunk_hash(len);
		return 0;
	}
	t0 = now_us();
	XXH3_64bits_reset(st);
	for (int k = 0; k < np; k++) {
		uint64_t first = pieces[k].file_off / SNAP_PAGE_SIZE;

		if (!stored) {
			XXH3_64bits_update(st, pieces[k].host, (size_t)pieces[k].len);
			continue;
		}
		/* What the file holds: the pages not stored read as zeros. */
		for (uint64_t i = 0; i < pieces[k].len / SNAP_PAGE_SIZE; i++)
			XXH3_64bits_update(st,
					   page_stored(stored, first + i)
					       ? pieces[k].host + i * SNAP_PAGE_SIZE
					       : zero_page,
					   SNAP_PAGE_SIZE);
	}
	mw->hashes[c] = XXH3_64bits_digest(st);
	atomic_fetch_add(&m->hashed, len);
	atomic_fetch_add(&m->hash_us, now_us() - t0);
	return 0;
}

/* Each thread claims the next chunk until none is left or one of them failed. */
static void *mem_writer_thread(void *arg)
{
	struct mem_writer *m = arg;
	XXH3_state_t *st = XXH3_createState();
	struct fk_err err = {0};

	if (!st) {
		fk_fail(&err, ENOMEM, "memory file %s: out of memory", m->path);
		mem_writer_fail(m, -ENOMEM, &err);
		return NULL;
	}
	while (!atomic_load(&m->stop)) {
		uint64_t c = atomic_fetch_add(&m->next, 1);
		int rc;

		if (c >= m->mw->nr_chunks)
			break;
		rc = write_chunk(m, st, c, &err);
		if (rc) {
			mem_writer_fail(m, rc, &err);
			break;
		}
	}
	XXH3_freeState(st);
	return NULL;
}

static bool on_tmpfs(int fd)
{
	struct statfs sfs;

	return fstatfs(fd, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC;
}

static int default_threads(bool direct)
{
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	/* O_DIRECT threads mostly wait for the device: more of them keep it busy. */
	if (direct)
		return SNAP_WRITE_THREADS_MAX;
	if (cpus < 1)
		return 1;
	return cpus > SNAP_WRITE_THREADS_MAX ? SNAP_WRITE_THREADS_MAX : (int)cpus;
}

/*
 * A second descriptor of the memory file with O_DIRECT, where the filesystem
 * takes it and the writer can tell which pages are its own (pagemap): -1
 * otherwise. Set by fcntl, not at open: a filesystem without it (ramfs)
 * creates the file and only then refuses O_DIRECT in open.
 */
static int open_direct(int dirfd, struct mem_writer *m, const struct snap_write_opts *opts,
		       struct snap_commit_stats *stats)
{
	const char *mode = getenv("FORKD_SNAPSHOT_WRITE");
	int fd;

	/* Benches compare the two ways on the same target (docs/snapshot-format.md). */
	if (opts->no_direct || (mode && strcmp(mode, "buffered") == 0))
		return -1;
	/*
	 * tmpfs takes O_DIRECT but only copies into its pages as a buffered
	 * write would, under the inode's lock: threads there only contend
	 * (1 GiB: 2149 MiB/s with one, 1095 with four, same run).
	 */
	if (on_tmpfs(m->buffered_fd))
		return -1;
	m->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (m->pagemap_fd < 0)
		return -1; /* no /proc (a jail): which pages are shared is unknown */
	fd = openat(dirfd, SNAP_MEMORY_FILE, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT) < 0) {
		stats->direct_fallback = 1;
		close(fd);
		return -1;
	}
	return fd;
}

/*
 * The memory file, written by several threads, each taking 1 MiB chunks in
 * turn. O_DIRECT where the filesystem takes it and the chunk's pages are
 * this process's alone: guest pages go to the device without a copy into
 * the page cache (which would double the memory traffic and leave the
 * writeback for fsync). Other chunks, and filesystems without O_DIRECT, go
 * through the page cache. The file's bytes are the same either way.
 */
static int write_memory(int dirfd, const char *tmp, struct mem_write *mw,
			const struct snap_write_opts *opts, struct snap_commit_stats *stats,
			struct fk_err *err)
{
	struct mem_writer *m = calloc(1, sizeof(*m));
	pthread_t threads[SNAP_WRITE_THREADS_MAX];
	char path[4096];
	int nthreads, started = 0, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", tmp, SNAP_MEMORY_FILE);
	if (!m)
		return fk_fail(err, ENOMEM, "memory file %s: out of memory", path);
	m->direct_fd = m->pagemap_fd = -1;
	m->buffered_fd =
	    openat(dirfd, SNAP_MEMORY_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (m->buffered_fd < 0) {
		rc = fk_fail_errno(err, errno, "memory file %s: create", path);
		goto out;
	}
	if (ftruncate(m->buffered_fd, (off_t)mw->total) < 0) {
		rc = write_failed(err, errno, path, 0, mw);
		goto out;
	}
	m->direct_fd = open_direct(dirfd, m, opts, stats);
	m->mw = mw;
	m->path = path;
	m->zero_full = snap_zero_chunk_hash(SNAP_HASH_CHUNK);
	atomic_init(&m->direct, m->direct_fd >= 0);
	pthread_mutex_init(&m->lock, NULL);
	nthreads = opts->threads > 0	      ? opts->threads
		   : on_tmpfs(m->buffered_fd) ? 1
					      : default_threads(m->direct_fd >= 0);
	if (nthreads > SNAP_WRITE_THREADS_MAX)
		nthreads = SNAP_WRITE_THREADS_MAX;
	if ((uint64_t)nthreads > mw->nr_chunks)
		nthreads = mw->nr_chunks ? (int)mw->nr_chunks : 1;
	/* The calling thread is one of them; the rest are started (none if that fails). */
	for (; started < nthreads - 1; started++)
		if (pthread_create(&threads[started], NULL, mem_writer_thread, m) != 0)
			break;
	mem_writer_thread(m);
	for (int i = 0; i < started; i++)
		pthread_join(threads[i], NULL);
	stats->threads = started + 1;
	mw->data_bytes = atomic_load(&m->written);
	mw->hashed_bytes = atomic_load(&m->hashed);
	/* Thread time spent hashing over the threads: its share of the wall time. */
	mw->hash_us = atomic_load(&m->hash_us) / (uint64_t)(started + 1);
	if (atomic_load(&m->fell_back))
		stats->direct_fallback = 1;
	stats->direct_bytes = atomic_load(&m->direct_bytes);
	pthread_mutex_destroy(&m->lock);
	if (m->rc) {
		*err = m->err;
		rc = m->rc;
		goto out;
	}
	if (fsync(m->buffered_fd) < 0)
		rc = write_failed(err, errno, path, mw->total, mw);
out:
	if (m->direct_fd >= 0)
		close(m->direct_fd);
	if (m->pagemap_fd >= 0)
		close(m->pagemap_fd);
	if (m->buffered_fd >= 0)
		close(m->buffered_fd);
	free(m);
	return rc;
}

static void encode_vm_info(uint8_t *p, const struct snap_writer *w,
			   const struct snap_memory_source *mem, uint64_t total)
{
	uint64_t file_off = 0;

	put_le64(p + SNAP_VMI_OFF_MEM_SIZE, total);
	put_le64(p + SNAP_VMI_OFF_FILE_SIZE, total);
	put_le32(p + SNAP_VMI_OFF_NR_VCPUS, w->nr_vcpus);
	put_le32(p + SNAP_VMI_OFF_NR_REGION, mem->nr_regions);
	memcpy(p + SNAP_VMI_OFF_NAME, SNAP_MEMORY_FILE, sizeof(SNAP_MEMORY_FILE));
	for (uint32_t i = 0; i < mem->nr_regions; i++) {
		uint8_t *e = p + SNAP_VMI_FIXED_LEN + (size_t)i * SNAP_VMI_REGION_LEN;

		put_le64(e, mem->regions[i].gpa);
		put_le64(e + 8, mem->regions[i].size);
		put_le64(e + 16, file_off);
		file_off += mem->regions[i].size;
	}
}

/* MEM_HASHES payload: le32 version, le32 chunk shift, le64 nr_chunks, then le64 per chunk. */
#define SNAP_MH_VERSION	  1u
#define SNAP_MH_FIXED_LEN 16
#define SNAP_MH_OFF_SHIFT 4
#define SNAP_MH_OFF_NR	  8

static void encode_mem_hashes(uint8_t *p, const struct mem_write *mw)
{
	put_le32(p, SNAP_MH_VERSION);
	put_le32(p + SNAP_MH_OFF_SHIFT, SNAP_HASH_CHUNK_SHIFT);
	put_le64(p + SNAP_MH_OFF_NR, mw->nr_chunks);
	for (uint64_t c = 0; c < mw->nr_chunks; c++)
		put_le64(p + SNAP_MH_FIXED_LEN + c * 8, mw->hashes[c]);
}

/* PARENT payload: le32 version, le32 depth, le64 identity, le64 mem_size, le32 path_len, le32 0,
 * then the path (no NUL). */
#define SNAP_PARENT_VERSION	 1u
#define SNAP_PARENT_OFF_DEPTH	 4
#define SNAP_PARENT_OFF_IDENTITY 8
#define SNAP_PARENT_OFF_MEM_SIZE 16
#define SNAP_PARENT_OFF_PATH_LEN 24
#define SNAP_PARENT_FIXED_LEN	 32
/* PAGE_MAP payload: le32 version, le32 page shift (12), le64 nr_pages, le64 present, bitmap. */
#define SNAP_PM_VERSION	    1u
#define SNAP_PM_OFF_SHIFT   4
#define SNAP_PM_OFF_NR	    8
#define SNAP_PM_OFF_PRESENT 16
#define SNAP_PM_FIXED_LEN   24

static size_t page_map_len(uint64_t nr_pages)
{
	return SNAP_PM_FIXED_LEN + (size_t)((nr_pages + 63) / 64) * 8;
}

static void encode_parent(uint8_t *p, const struct mem_write *mw)
{
	size_t n = strlen(mw->diff->parent_dir);

	put_le32(p, SNAP_PARENT_VERSION);
	put_le32(p + SNAP_PARENT_OFF_DEPTH, mw->parent_depth);
	put_le64(p + SNAP_PARENT_OFF_IDENTITY, mw->parent_identity);
	put_le64(p + SNAP_PARENT_OFF_MEM_SIZE, mw->total);
	put_le32(p + SNAP_PARENT_OFF_PATH_LEN, (uint32_t)n);
	memcpy(p + SNAP_PARENT_FIXED_LEN, mw->diff->parent_dir, n);
}

static void encode_page_map(uint8_t *p, const struct snap_diff *d)
{
	uint64_t words = (d->nr_pages + 63) / 64, present = 0;

	for (uint64_t i = 0; i < words; i++) {
		uint64_t word = d->pages[i];

		/* Bits past the last page mean nothing; a reader refuses them. */
		if (i == words - 1 && d->nr_pages % 64)
			word &= (1ull << (d->nr_pages % 64)) - 1;
		put_le64(p + SNAP_PM_FIXED_LEN + i * 8, word);
		present += (uint64_t)__builtin_popcountll(word);
	}
	put_le32(p, SNAP_PM_VERSION);
	put_le32(p + SNAP_PM_OFF_SHIFT, 12);
	put_le64(p + SNAP_PM_OFF_NR, d->nr_pages);
	put_le64(p + SNAP_PM_OFF_PRESENT, present);
}

/*
 * Lays out header, table (VM_INFO first, then sections in add order, then
 * MEM_HASHES, which commit computes while writing the memory) and payloads.
 */
static int build_state(const struct snap_writer *w, const struct mem_write *mw, const char *dir,
		       uint8_t **out, size_t *out_len, struct fk_err *err)
{
	const struct snap_memory_source *mem = mw->mem;
	uint32_t n = (uint32_t)w->nr_sections + (mw->diff ? 4 : 2);
	size_t vmi_len = SNAP_VMI_FIXED_LEN + (size_t)mem->nr_regions * SNAP_VMI_REGION_LEN;
	size_t mh_len = SNAP_MH_FIXED_LEN + (size_t)mw->nr_chunks * 8;
	size_t parent_len = mw->diff ? SNAP_PARENT_FIXED_LEN + strlen(mw->diff->parent_dir) : 0;
	size_t pm_len = mw->diff ? page_map_len(mw->diff->nr_pages) : 0;
	/* A diff's two sections go last, after MEM_HASHES. */
	uint32_t n_base = (uint32_t)w->nr_sections + 2;
	uint64_t table_end = SNAP_HDR_LEN + (uint64_t)n * SNAP_ENT_LEN;
	uint64_t off = align_up8(table_end);
	uint8_t *buf;

	off = align_up8(off + vmi_len);
	for (size_t i = 0; i < w->nr_sections; i++)
		off = align_up8(off + w->sections[i].len);
	off = align_up8(off + mh_len);
	if (mw->diff)
		off = align_up8(align_up8(off + parent_len) + pm_len);
	if (off > SNAP_STATE_MAX_BYTES)
		return fk_fail(err, EFBIG, "snapshot %s: state exceeds %llu bytes", dir,
			       (unsigned long long)SNAP_STATE_MAX_BYTES);
	buf = calloc(1, off);
	if (!buf)
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory for %llu-byte state", dir,
			       (unsigned long long)off);

	memcpy(buf + SNAP_HDR_OFF_MAGIC, SNAP_MAGIC, 8);
	put_le32(buf + SNAP_HDR_OFF_VERSION, mw->diff ? SNAP_VERSION_DIFF : SNAP_VERSION);
	put_le32(buf + SNAP_HDR_OFF_FLAGS, 0);
	put_le32(buf + SNAP_HDR_OFF_HEADER_LEN, SNAP_HDR_LEN);
	put_le32(buf + SNAP_HDR_OFF_NR_SECTIONS, n);
	put_le64(buf + SNAP_HDR_OFF_TOTAL_LEN, off);

	uint64_t pos = align_up8(table_end);
	for (uint32_t i = 0; i < n; i++) {
		uint8_t *ent = buf + SNAP_HDR_LEN + (size_t)i * SNAP_ENT_LEN;
		uint32_t type = SNAP_SEC_VM_INFO, instance = 0;
		size_t len = vmi_len;

		if (i == 0) {
			encode_vm_info(buf + pos, w, mem, mw->total);
		} else if (i == n_base) {
			type = SNAP_SEC_PARENT;
			len = parent_len;
			encode_parent(buf + pos, mw);
		} else if (i == n_base + 1) {
			type = SNAP_SEC_PAGE_MAP;
			len = pm_len;
			encode_page_map(buf + pos, mw->diff);
		} else if (i == n_base - 1) {
			type = SNAP_SEC_MEM_HASHES;
			len = mh_len;
			encode_mem_hashes(buf + pos, mw);
		} else {
			const struct snap_writer_section *s = &w->sections[i - 1];

			type = s->type;
			instance = s->instance;
			len = s->len;
			memcpy(buf + pos, s->data, len);
		}
		put_le32(ent + SNAP_ENT_OFF_TYPE, type);
		put_le32(ent + SNAP_ENT_OFF_INSTANCE, instance);
		put_le64(ent + SNAP_ENT_OFF_OFFSET, pos);
		put_le64(ent + SNAP_ENT_OFF_LENGTH, len);
		put_le64(ent + SNAP_ENT_OFF_CHECKSUM, checksum(buf + pos, len));
		pos = align_up8(pos + len);
	}
	put_le64(buf + SNAP_HDR_OFF_CHECKSUM,
		 checksum(buf + SNAP_HDR_OFF_VERSION, off - SNAP_HDR_OFF_VERSION));
	*out = buf;
	*out_len = off;
	return 0;
}

static int write_state(int dirfd, const char *tmp, const uint8_t *buf, size_t len,
		       struct fk_err *err)
{
	char path[4096];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/%s", tmp, SNAP_STATE_FILE);
	fd = openat(dirfd, SNAP_STATE_FILE, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return fk_fail_errno(err, errno, "state file %s: create", path);
	rc = pwrite_all(fd, buf, len, 0, path, NULL, err);
	if (rc == 0 && fsync(fd) < 0)
		rc = fk_fail_errno(err, errno, "state file %s: fsync", path);
	close(fd);
	return rc;
}

static int fsync_dir(const char *path, struct fk_err *err)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = 0;

	if (fd < 0)
		return fk_fail_errno(err, errno, "snapshot directory %s: open for fsync", path);
	if (fsync(fd) < 0)
		rc = fk_fail_errno(err, errno, "snapshot directory %s: fsync", path);
	close(fd);
	return rc;
}

/*
 * A diff's parent must be a complete snapshot of the same memory layout, not
 * at the chain's depth limit: its identity and depth go into PARENT.
 */
static int diff_parent_check(const struct snap_diff *d, const char *target, struct mem_write *mw,
			     struct fk_err *err)
{
	const struct snap_memory_source *mem = mw->mem;
	const struct snap_vm_info *info;
	struct snap_parent_info pinfo;
	struct snap_reader *pr = NULL;
	int rc;

	mw->diff = d;
	if (!d->parent_dir || d->parent_dir[0] != '/' ||
	    strlen(d->parent_dir) > SNAP_PARENT_PATH_MAX)
		return fk_fail(err, EINVAL,
			       "snapshot %s: parent '%s': expected an absolute path of at most %d "
			       "bytes",
			       target, d->parent_dir ? d->parent_dir : "", SNAP_PARENT_PATH_MAX);
	if (d->nr_pages != mw->total / SNAP_PAGE_SIZE || !d->pages)
		return fk_fail(
		    err, EINVAL, "snapshot %s: page map of %llu pages for %llu bytes of memory",
		    target, (unsigned long long)d->nr_pages, (unsigned long long)mw->total);
	rc = snap_reader_open(d->parent_dir, &pr, err);
	if (rc)
		return fk_wrap(err, "snapshot %s: parent", target);
	info = snap_reader_vm_info(pr);
	rc = info->mem_size == mw->total && info->nr_regions == mem->nr_regions ? 0 : -EINVAL;
	for (uint32_t i = 0; !rc && i < mem->nr_regions; i++)
		if (info->regions[i].gpa != mem->regions[i].gpa ||
		    info->regions[i].size != mem->regions[i].size)
			rc = -EINVAL;
	if (rc) {
		fk_fail(err, EINVAL,
			"snapshot %s: parent %s has another memory layout (%llu MiB in %u regions; "
			"this VM has %llu MiB in %u)",
			target, d->parent_dir, (unsigned long long)(info->mem_size >> 20),
			info->nr_regions, (unsigned long long)(mw->total >> 20), mem->nr_regions);
		goto out;
	}
	mw->parent_identity = snap_reader_identity(pr);
	mw->parent_depth = snap_reader_parent(pr, &pinfo) == 0 ? pinfo.depth + 1 : 1;
	if (mw->parent_depth > SNAP_DIFF_MAX_DEPTH)
		rc = fk_fail(err, ELOOP,
			     "snapshot %s: parent %s is already %u diffs from its full base; a "
			     "chain is at most %d deep (compact it: forkd snapshot compact)",
			     target, d->parent_dir, pinfo.depth, SNAP_DIFF_MAX_DEPTH);
out:
	snap_reader_close(pr);
	return rc;
}

int snap_writer_commit(struct snap_writer *w, const char *dir, const struct snap_memory_source *mem,
		       struct fk_err *err)
{
	char *target = NULL, *tmp = NULL, *parent = NULL;
	const char *parent_dir = ".";
	struct mem_write mw = {.mem = mem};
	uint8_t *state = NULL;
	size_t state_len = 0;
	struct statvfs vfs;
	struct stat st;
	int dirfd = -1, rc;
	bool made_tmp = false;
	uint64_t t0;

	target = strdup(dir);
	if (!target)
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory", dir);
	/* "snap/" would otherwise put the temp dir inside the target's parent as "snap/.tmp-*". */
	for (size_t n = strlen(target); n > 1 && target[n - 1] == '/'; n--)
		target[n - 1] = '\0';

	memset(&w->stats, 0, sizeof(w->stats));
	rc = check_memory_source(mem, target, &mw.total, err);
	if (rc)
		goto out;
	parent = strdup(target);
	if (!parent) {
		rc = fk_fail(err, ENOMEM, "snapshot %s: out of memory", target);
		goto out;
	}
	parent_dir = dirname(parent);
	/* Writers killed before they finished (kill -9, a crash) left their temp dirs here. */
	rc = snap_tmp_clean_stale(parent_dir, NULL, err);
	if (rc < 0)
		goto out;
	w->stats.stale_removed = rc;
	rc = 0;
	mw.free_at_start =
	    statvfs(parent_dir, &vfs) == 0 ? (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize : 0;
	mw.nr_chunks = (mw.total + SNAP_HASH_CHUNK - 1) >> SNAP_HASH_CHUNK_SHIFT;
	mw.hashes = calloc(mw.nr_chunks ? mw.nr_chunks : 1, sizeof(*mw.hashes));
	if (!mw.hashes) {
		rc = fk_fail(err, ENOMEM, "snapshot %s: out of memory for %llu chunk checksums",
			     target, (unsigned long long)mw.nr_chunks);
		goto out;
	}
	if (w->diff) {
		rc = diff_parent_check(w->diff, target, &mw, err);
		if (rc)
			goto out;
	}
	if (lstat(target, &st) == 0) {
		rc = fk_fail(err, EEXIST, "snapshot %s: already exists; refusing to overwrite",
			     target);
		goto out;
	} else if (errno != ENOENT) {
		rc = fk_fail_errno(err, errno, "snapshot %s: stat", target);
		goto out;
	}
	if (asprintf(&tmp, "%s.tmp-XXXXXX", target) < 0) {
		tmp = NULL;
		rc = fk_fail(err, ENOMEM, "snapshot %s: out of memory", target);
		goto out;
	}
	if (!mkdtemp(tmp)) {
		rc =
		    fk_fail_errno(err, errno, "snapshot %s: create temp directory %s", target, tmp);
		goto out;
	}
	made_tmp = true;
	dirfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		rc = fk_fail_errno(err, errno, "snapshot %s: open temp directory %s", target, tmp);
		goto out;
	}
	rc = snap_tmp_mark_writer(dirfd, tmp, err);
	if (rc)
		goto out;
	/* Test hook (docs/snapshot-format.md): a writer slow enough to be killed mid-write. */
	if (getenv("FORKD_FAULT_INJECT") && !strcmp(getenv("FORKD_FAULT_INJECT"), "snapshot-slow"))
		sleep(3);
	t0 = now_us();
	rc = write_memory(dirfd, tmp, &mw, &w->opts, &w->stats, err);
	if (rc)
		goto out;
	w->stats.memory_us = now_us() - t0;
	w->stats.data_bytes = mw.data_bytes;
	w->stats.hash_us = mw.hash_us;
	w->stats.hashed_bytes = mw.hashed_bytes;
	rc = build_state(w, &mw, target, &state, &state_len, err);
	if (rc)
		goto out;
	rc = write_state(dirfd, tmp, state, state_len, err);
	if (rc)
		goto out;
	rc = write_extra_files(dirfd, tmp, w, err);
	if (rc)
		goto out;
	if (fsync(dirfd) < 0) {
		rc = fk_fail_errno(err, errno, "snapshot %s: fsync temp directory %s", target, tmp);
		goto out;
	}
	/* NOREPLACE: a plain rename would silently replace an empty directory created meanwhile. */
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, target, RENAME_NOREPLACE) < 0) {
		rc = errno == EEXIST
			 ? fk_fail(err, EEXIST,
				   "snapshot %s: already exists; refusing to overwrite", target)
			 : fk_fail_errno(err, errno, "snapshot %s: rename from %s", target, tmp);
		goto out;
	}
	made_tmp = false;
	/* The rename is only durable once the parent's entry is on disk. */
	rc = fsync_dir(parent_dir, err);
	if (rc)
		fk_wrap(err, "snapshot %s written but not durable", target);
out:
	if (made_tmp) {
		if (dirfd >= 0) {
			unlinkat(dirfd, SNAP_MEMORY_FILE, 0);
			unlinkat(dirfd, SNAP_STATE_FILE, 0);
			unlinkat(dirfd, SNAP_WRITER_FILE, 0);
			for (int i = 0; i < w->nr_files; i++)
				unlinkat(dirfd, w->files[i].name, 0);
		}
		rmdir(tmp);
	}
	if (dirfd >= 0)
		close(dirfd);
	free(state);
	free(mw.hashes);
	free(parent);
	free(tmp);
	free(target);
	return rc;
}

/* ---- reader ---- */

static int read_state_file(struct snap_reader *r, struct fk_err *err)
{
	const char *path = r->state_path;
	struct stat st;
	size_t done = 0;
	int fd, rc = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fk_fail_errno(err, errno, "state file %s: open", path);
	if (fstat(fd, &st) < 0) {
		rc = fk_fail_errno(err, errno, "state file %s: stat", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > SNAP_STATE_MAX_BYTES) {
		rc = fk_fail(err, EINVAL, "state file %s: not a regular file of at most %llu bytes",
			     path, (unsigned long long)SNAP_STATE_MAX_BYTES);
		goto out;
	}
	r->len = (size_t)st.st_size;
	r->buf = malloc(r->len ? r->len : 1);
	if (!r->buf) {
		rc = fk_fail(err, ENOMEM, "state file %s: out of memory", path);
		goto out;
	}
	while (done < r->len) {
		ssize_t n = pread(fd, r->buf + done, r->len - done, (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = fk_fail_errno(err, errno, "state file %s: read", path);
			goto out;
		}
		if (n == 0) {
			rc = fk_fail(err, EIO, "state file %s: shrank while reading", path);
			goto out;
		}
		done += (size_t)n;
	}
out:
	close(fd);
	return rc;
}

/* The checks that must pass before the checksum can even be computed over the right range. */
static int check_header(const struct snap_reader *r, struct fk_err *err)
{
	const char *path = r->state_path;
	const uint8_t *b = r->buf;
	uint64_t total;
	uint32_t version, header_len;

	if (r->len < 8 || memcmp(b + SNAP_HDR_OFF_MAGIC, SNAP_MAGIC, 8) != 0) {
		if (r->len < 8)
			return fk_fail(err, EINVAL,
				       "state file %s: truncated (%zu bytes, header needs %u)",
				       path, r->len, SNAP_HDR_LEN);
		return fk_fail(err, EINVAL, "state file %s: bad magic (expected \"%s\")", path,
			       SNAP_MAGIC);
	}
	if (r->len < SNAP_HDR_LEN)
		return fk_fail(err, EINVAL, "state file %s: truncated (%zu bytes, header needs %u)",
			       path, r->len, SNAP_HDR_LEN);
	version = get_le32(b + SNAP_HDR_OFF_VERSION);
	if (version != SNAP_VERSION && version != SNAP_VERSION_DIFF)
		return fk_fail(err, ENOTSUP,
			       "state file %s: format version %u is not supported (this build "
			       "reads versions %u and %u)",
			       path, version, SNAP_VERSION, SNAP_VERSION_DIFF);
	header_len = get_le32(b + SNAP_HDR_OFF_HEADER_LEN);
	if (header_len != SNAP_HDR_LEN)
		return fk_fail(err, EINVAL, "state file %s: header length %u, version %u has %u",
			       path, header_len, version, SNAP_HDR_LEN);
	total = get_le64(b + SNAP_HDR_OFF_TOTAL_LEN);
	if (total > r->len)
		return fk_fail(err, EINVAL,
			       "state file %s: truncated (header says %llu bytes, file has %zu)",
			       path, (unsigned long long)total, r->len);
	if (total < r->len)
		return fk_fail(err, EINVAL,
			       "state file %s: %zu bytes but header says %llu (trailing data)",
			       path, r->len, (unsigned long long)total);
	return 0;
}

static int cmp_by_offset(const void *a, const void *b)
{
	const struct snap_reader_section *x = a, *y = b;

	return x->offset < y->offset ? -1 : x->offset > y->offset;
}

static int cmp_by_key(const void *a, const void *b)
{
	const struct snap_reader_section *x = a, *y = b;

	if (x->type != y->type)
		return x->type < y->type ? -1 : 1;
	return x->instance < y->instance ? -1 : x->instance > y->instance;
}

/* Decodes and bounds-checks the table into r->sections. */
static int parse_table(struct snap_reader *r, struct fk_err *err)
{
	const char *path = r->state_path;
	uint32_t n = get_le32(r->buf + SNAP_HDR_OFF_NR_SECTIONS);
	uint64_t table_end = SNAP_HDR_LEN + (uint64_t)n * SNAP_ENT_LEN;
	struct snap_reader_section *s, *sorted = NULL;
	int rc = 0;

	if (table_end > r->len)
		return fk_fail(err, EINVAL,
			       "state file %s: section table of %u entries ends at %llu, past the "
			       "end (%zu)",
			       path, n, (unsigned long long)table_end, r->len);
	s = calloc(n ? n : 1, sizeof(*s));
	sorted = calloc(n ? n : 1, sizeof(*s));
	if (!s || !sorted) {
		rc = fk_fail(err, ENOMEM, "state file %s: out of memory for %u sections", path, n);
		goto out;
	}
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *e = r->buf + SNAP_HDR_LEN + (size_t)i * SNAP_ENT_LEN;

		s[i].type = get_le32(e + SNAP_ENT_OFF_TYPE);
		s[i].instance = get_le32(e + SNAP_ENT_OFF_INSTANCE);
		s[i].offset = get_le64(e + SNAP_ENT_OFF_OFFSET);
		s[i].length = get_le64(e + SNAP_ENT_OFF_LENGTH);
		s[i].checksum = get_le64(e + SNAP_ENT_OFF_CHECKSUM);
		if (s[i].type == 0 || s[i].type > SNAP_SEC_MAX) {
			rc = fk_fail(err, EINVAL, "state file %s: section %u has unknown type %u",
				     path, i, s[i].type);
			goto out;
		}
		if (s[i].offset % SNAP_ALIGN || s[i].offset < table_end || s[i].offset > r->len ||
		    s[i].length > r->len - s[i].offset) {
			rc = fk_fail(err, EINVAL,
				     "state file %s: section %s %u at [%llu, +%llu) is misaligned "
				     "or outside the payload area [%llu, %zu)",
				     path, snap_section_type_name(s[i].type), s[i].instance,
				     (unsigned long long)s[i].offset,
				     (unsigned long long)s[i].length, (unsigned long long)table_end,
				     r->len);
			goto out;
		}
	}
	memcpy(sorted, s, n * sizeof(*s));
	qsort(sorted, n, sizeof(*s), cmp_by_offset);
	for (uint32_t i = 1; i < n; i++) {
		if (sorted[i - 1].offset + sorted[i - 1].length > sorted[i].offset) {
			rc = fk_fail(err, EINVAL, "state file %s: sections %s %u and %s %u overlap",
				     path, snap_section_type_name(sorted[i - 1].type),
				     sorted[i - 1].instance, snap_section_type_name(sorted[i].type),
				     sorted[i].instance);
			goto out;
		}
	}
	qsort(sorted, n, sizeof(*s), cmp_by_key);
	for (uint32_t i = 1; i < n; i++) {
		if (cmp_by_key(&sorted[i - 1], &sorted[i]) == 0) {
			rc =
			    fk_fail(err, EINVAL, "state file %s: section %s %u appears twice", path,
				    snap_section_type_name(sorted[i].type), sorted[i].instance);
			goto out;
		}
	}
	r->sections = s;
	r->nr_sections = n;
	s = NULL;
out:
	free(s);
	free(sorted);
	return rc;
}

static int check_section_checksums(const struct snap_reader *r, struct fk_err *err)
{
	for (uint32_t i = 0; i < r->nr_sections; i++) {
		const struct snap_reader_section *s = &r->sections[i];

		if (checksum(r->buf + s->offset, s->length) != s->checksum)
			return fk_fail(err, EBADMSG,
				       "state file %s: checksum mismatch in section %s %u",
				       r->state_path, snap_section_type_name(s->type), s->instance);
	}
	return 0;
}

/*
 * On a file checksum mismatch, name the damaged section when the table is
 * still intact: "checksum mismatch in section VCPU 1" says what to look at.
 */
static int check_checksums(struct snap_reader *r, struct fk_err *err)
{
	uint64_t want = get_le64(r->buf + SNAP_HDR_OFF_CHECKSUM);
	uint64_t got = checksum(r->buf + SNAP_HDR_OFF_VERSION, r->len - SNAP_HDR_OFF_VERSION);
	struct fk_err quiet = {0};
	int rc;

	if (want == got) {
		rc = parse_table(r, err);
		return rc ? rc : check_section_checksums(r, err);
	}
	if (parse_table(r, &quiet) == 0 && check_section_checksums(r, err) != 0)
		return -EBADMSG;
	return fk_fail(err, EBADMSG,
		       "state file %s: checksum mismatch outside the sections (header, table or "
		       "padding; stored %016llx, computed %016llx)",
		       r->state_path, (unsigned long long)want, (unsigned long long)got);
}

static int check_flags(const struct snap_reader *r, struct fk_err *err)
{
	uint32_t flags = get_le32(r->buf + SNAP_HDR_OFF_FLAGS);

	if (flags != 0)
		return fk_fail(err, ENOTSUP, "state file %s: unknown header flags %#x",
			       r->state_path, flags);
	for (size_t i = SNAP_HDR_OFF_RESERVED; i < SNAP_HDR_LEN; i++)
		if (r->buf[i])
			return fk_fail(err, EINVAL,
				       "state file %s: reserved header byte %zu is not zero",
				       r->state_path, i);
	return 0;
}

static const struct snap_reader_section *lookup(const struct snap_reader *r, uint32_t type,
						uint32_t instance)
{
	for (uint32_t i = 0; i < r->nr_sections; i++)
		if (r->sections[i].type == type && r->sections[i].instance == instance)
			return &r->sections[i];
	return NULL;
}

static int parse_vm_info(struct snap_reader *r, struct fk_err *err)
{
	const struct snap_reader_section *s = lookup(r, SNAP_SEC_VM_INFO, 0);
	struct snap_vm_info *vm = &r->vm;
	const char *path = r->state_path;
	const uint8_t *p;
	uint64_t sum = 0;

	for (uint32_t i = 0; i < r->nr_sections; i++)
		if (r->sections[i].type == SNAP_SEC_VM_INFO && r->sections[i].instance != 0)
			return fk_fail(err, EINVAL, "state file %s: VM_INFO with instance %u", path,
				       r->sections[i].instance);
	if (!s)
		return fk_fail(err, EINVAL, "state file %s: no VM_INFO section", path);
	p = r->buf + s->offset;
	if (s->length < SNAP_VMI_FIXED_LEN)
		return fk_fail(err, EINVAL, "state file %s: VM_INFO is %llu bytes, needs %u", path,
			       (unsigned long long)s->length, SNAP_VMI_FIXED_LEN);
	vm->mem_size = get_le64(p + SNAP_VMI_OFF_MEM_SIZE);
	vm->memory_file_size = get_le64(p + SNAP_VMI_OFF_FILE_SIZE);
	vm->nr_vcpus = get_le32(p + SNAP_VMI_OFF_NR_VCPUS);
	vm->nr_regions = get_le32(p + SNAP_VMI_OFF_NR_REGION);
	memcpy(vm->memory_file_name, p + SNAP_VMI_OFF_NAME, SNAP_MEM_NAME_LEN);
	if (s->length != SNAP_VMI_FIXED_LEN + (uint64_t)vm->nr_regions * SNAP_VMI_REGION_LEN)
		return fk_fail(err, EINVAL, "state file %s: VM_INFO is %llu bytes for %u regions",
			       path, (unsigned long long)s->length, vm->nr_regions);
	if (memchr(vm->memory_file_name, '\0', SNAP_MEM_NAME_LEN) == NULL ||
	    vm->memory_file_name[0] == '\0' || strchr(vm->memory_file_name, '/') ||
	    strcmp(vm->memory_file_name, ".") == 0 || strcmp(vm->memory_file_name, "..") == 0) {
		vm->memory_file_name[0] = '\0';
		return fk_fail(err, EINVAL,
			       "state file %s: VM_INFO memory file name is not a plain file name",
			       path);
	}
	vm->regions = calloc(vm->nr_regions ? vm->nr_regions : 1, sizeof(*vm->regions));
	if (!vm->regions)
		return fk_fail(err, ENOMEM, "state file %s: out of memory", path);
	for (uint32_t i = 0; i < vm->nr_regions; i++) {
		const uint8_t *e = p + SNAP_VMI_FIXED_LEN + (size_t)i * SNAP_VMI_REGION_LEN;
		struct snap_mem_region *m = &vm->regions[i];

		m->gpa = get_le64(e);
		m->size = get_le64(e + 8);
		m->file_offset = get_le64(e + 16);
		/* Version 1 packs regions in order: each starts where the previous ended. */
		if (m->size == 0 || m->gpa % SNAP_PAGE_SIZE || m->size % SNAP_PAGE_SIZE ||
		    m->gpa + m->size < m->gpa || m->file_offset != sum || sum + m->size < sum)
			return fk_fail(err, EINVAL,
				       "state file %s: VM_INFO region %u [%#llx, +%#llx) at file "
				       "offset %llu is malformed",
				       path, i, (unsigned long long)m->gpa,
				       (unsigned long long)m->size,
				       (unsigned long long)m->file_offset);
		for (uint32_t j = 0; j < i; j++)
			if (m->gpa < vm->regions[j].gpa + vm->regions[j].size &&
			    vm->regions[j].gpa < m->gpa + m->size)
				return fk_fail(err, EINVAL,
					       "state file %s: VM_INFO regions %u and %u overlap",
					       path, j, i);
		sum += m->size;
	}
	if (sum != vm->mem_size || vm->memory_file_size != vm->mem_size)
		return fk_fail(err, EINVAL,
			       "state file %s: VM_INFO sizes disagree (regions %llu, memory %llu, "
			       "file %llu)",
			       path, (unsigned long long)sum, (unsigned long long)vm->mem_size,
			       (unsigned long long)vm->memory_file_size);
	return 0;
}

/* Only the layout is checked here; the chunks themselves only by snap_verify_memory. */
static int check_mem_hashes(const struct snap_reader *r, const struct snap_reader_section *s,
			    struct fk_err *err)
{
	const uint8_t *p = r->buf + s->offset;
	uint32_t version, shift;
	uint64_t nr, want;

	if (s->instance != 0 || s->length < SNAP_MH_FIXED_LEN)
		return fk_fail(err, EINVAL, "state file %s: section MEM_HASHES %u is malformed",
			       r->state_path, s->instance);
	version = get_le32(p);
	shift = get_le32(p + SNAP_MH_OFF_SHIFT);
	nr = get_le64(p + SNAP_MH_OFF_NR);
	if (version != SNAP_MH_VERSION)
		return fk_fail(err, ENOTSUP,
			       "state file %s: MEM_HASHES version %u (this build reads %u)",
			       r->state_path, version, SNAP_MH_VERSION);
	if (shift < 12 || shift > 30)
		return fk_fail(err, EINVAL,
			       "state file %s: MEM_HASHES chunk size 2^%u, expected 2^12..2^30",
			       r->state_path, shift);
	want = (r->vm.memory_file_size + (1ull << shift) - 1) >> shift;
	if (nr != want || s->length != SNAP_MH_FIXED_LEN + nr * 8)
		return fk_fail(err, EINVAL,
			       "state file %s: MEM_HASHES has %llu checksums in %llu bytes; a "
			       "%llu-byte memory file in 2^%u-byte chunks needs %llu",
			       r->state_path, (unsigned long long)nr, (unsigned long long)s->length,
			       (unsigned long long)r->vm.memory_file_size, shift,
			       (unsigned long long)want);
	return 0;
}

static int check_parent(const struct snap_reader *r, const struct snap_reader_section *s,
			struct fk_err *err)
{
	const uint8_t *p = r->buf + s->offset;
	uint32_t depth, path_len;

	if (s->instance != 0 || s->length < SNAP_PARENT_FIXED_LEN)
		return fk_fail(err, EINVAL, "state file %s: section PARENT %u is malformed",
			       r->state_path, s->instance);
	if (get_le32(p) != SNAP_PARENT_VERSION)
		return fk_fail(err, ENOTSUP,
			       "state file %s: PARENT version %u (this build reads %u)",
			       r->state_path, get_le32(p), SNAP_PARENT_VERSION);
	depth = get_le32(p + SNAP_PARENT_OFF_DEPTH);
	path_len = get_le32(p + SNAP_PARENT_OFF_PATH_LEN);
	if (depth < 1 || depth > SNAP_DIFF_MAX_DEPTH)
		return fk_fail(err, ELOOP,
			       "state file %s: PARENT depth %u, expected 1..%d (chain too deep)",
			       r->state_path, depth, SNAP_DIFF_MAX_DEPTH);
	if (path_len < 1 || path_len > SNAP_PARENT_PATH_MAX ||
	    s->length != SNAP_PARENT_FIXED_LEN + (uint64_t)path_len ||
	    get_le32(p + SNAP_PARENT_OFF_PATH_LEN + 4) != 0)
		return fk_fail(err, EINVAL,
			       "state file %s: PARENT path of %u bytes in a %llu-byte section, "
			       "expected 1..%d bytes filling it",
			       r->state_path, path_len, (unsigned long long)s->length,
			       SNAP_PARENT_PATH_MAX);
	if (p[SNAP_PARENT_FIXED_LEN] != '/' || memchr(p + SNAP_PARENT_FIXED_LEN, 0, path_len))
		return fk_fail(err, EINVAL,
			       "state file %s: PARENT path is not an absolute path without NUL",
			       r->state_path);
	if (get_le64(p + SNAP_PARENT_OFF_MEM_SIZE) != r->vm.mem_size)
		return fk_fail(err, EINVAL,
			       "state file %s: PARENT memory size %llu differs from this "
			       "snapshot's %llu",
			       r->state_path,
			       (unsigned long long)get_le64(p + SNAP_PARENT_OFF_MEM_SIZE),
			       (unsigned long long)r->vm.mem_size);
	return 0;
}

static int check_page_map(const struct snap_reader *r, const struct snap_reader_section *s,
			  struct fk_err *err)
{
	const uint8_t *p = r->buf + s->offset;
	uint64_t nr, want = r->vm.memory_file_size / SNAP_PAGE_SIZE, present = 0, words;

	if (s->instance != 0 || s->length < SNAP_PM_FIXED_LEN)
		return fk_fail(err, EINVAL, "state file %s: section PAGE_MAP %u is malformed",
			       r->state_path, s->instance);
	if (get_le32(p) != SNAP_PM_VERSION || get_le32(p + SNAP_PM_OFF_SHIFT) != 12)
		return fk_fail(err, ENOTSUP,
			       "state file %s: PAGE_MAP version %u, page shift %u (this build "
			       "reads version %u of 4 KiB pages)",
			       r->state_path, get_le32(p), get_le32(p + SNAP_PM_OFF_SHIFT),
			       SNAP_PM_VERSION);
	nr = get_le64(p + SNAP_PM_OFF_NR);
	if (nr != want || s->length != page_map_len(want))
		return fk_fail(err, EINVAL,
			       "state file %s: PAGE_MAP of %llu pages in %llu bytes; a %llu-byte "
			       "memory file needs %llu pages in %zu bytes",
			       r->state_path, (unsigned long long)nr, (unsigned long long)s->length,
			       (unsigned long long)r->vm.memory_file_size, (unsigned long long)want,
			       page_map_len(want));
	words = (nr + 63) / 64;
	for (uint64_t i = 0; i < words; i++) {
		uint64_t word = get_le64(p + SNAP_PM_FIXED_LEN + i * 8);

		if (i == words - 1 && nr % 64 && (word >> (nr % 64)))
			return fk_fail(err, EINVAL,
				       "state file %s: PAGE_MAP has bits set past page %llu",
				       r->state_path, (unsigned long long)nr);
		present += (uint64_t)__builtin_popcountll(word);
	}
	if (present != get_le64(p + SNAP_PM_OFF_PRESENT))
		return fk_fail(
		    err, EINVAL,
		    "state file %s: PAGE_MAP says %llu pages present, its bitmap has %llu",
		    r->state_path, (unsigned long long)get_le64(p + SNAP_PM_OFF_PRESENT),
		    (unsigned long long)present);
	return 0;
}

/* Version 2 is a diff: PARENT and PAGE_MAP both, and only there. */
static int check_diff_sections(const struct snap_reader *r, struct fk_err *err)
{
	const struct snap_reader_section *parent = lookup(r, SNAP_SEC_PARENT, 0);
	const struct snap_reader_section *map = lookup(r, SNAP_SEC_PAGE_MAP, 0);
	uint32_t version = get_le32(r->buf + SNAP_HDR_OFF_VERSION);
	int rc;

	for (uint32_t i = 0; i < r->nr_sections; i++)
		if ((r->sections[i].type == SNAP_SEC_PARENT ||
		     r->sections[i].type == SNAP_SEC_PAGE_MAP) &&
		    r->sections[i].instance != 0)
			return fk_fail(err, EINVAL, "state file %s: section %s %u is malformed",
				       r->state_path, snap_section_type_name(r->sections[i].type),
				       r->sections[i].instance);
	if (version == SNAP_VERSION) {
		if (parent || map)
			return fk_fail(err, EINVAL,
				       "state file %s: version 1 (a full snapshot) with a %s "
				       "section",
				       r->state_path, parent ? "PARENT" : "PAGE_MAP");
		return 0;
	}
	if (!parent || !map)
		return fk_fail(err, EINVAL,
			       "state file %s: version 2 (a diff snapshot) without its %s section",
			       r->state_path, !parent ? "PARENT" : "PAGE_MAP");
	rc = check_parent(r, parent, err);
	return rc ? rc : check_page_map(r, map, err);
}

static int check_section_contents(const struct snap_reader *r, struct fk_err *err)
{
	for (uint32_t i = 0; i < r->nr_sections; i++) {
		const struct snap_reader_section *s = &r->sections[i];

		if (s->type == SNAP_SEC_VCPU && s->instance >= r->vm.nr_vcpus)
			return fk_fail(err, EINVAL, "state file %s: section VCPU %u but VM has %u",
				       r->state_path, s->instance, r->vm.nr_vcpus);
		if (s->type == SNAP_SEC_DEVICE && s->length < SNAP_DEV_PREFIX_LEN)
			return fk_fail(err, EINVAL,
				       "state file %s: section DEVICE %u is %llu bytes, needs %u",
				       r->state_path, s->instance, (unsigned long long)s->length,
				       SNAP_DEV_PREFIX_LEN);
		if (s->type == SNAP_SEC_MEM_HASHES && check_mem_hashes(r, s, err) < 0)
			return -err->code;
	}
	return check_diff_sections(r, err);
}

static int open_memory(struct snap_reader *r, const char *dir, struct fk_err *err)
{
	struct stat st;

	if (asprintf(&r->mem_path, "%s/%s", dir, r->vm.memory_file_name) < 0) {
		r->mem_path = NULL;
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory", dir);
	}
	r->mem_fd = open(r->mem_path, O_RDONLY | O_CLOEXEC);
	if (r->mem_fd < 0)
		return fk_fail_errno(err, errno, "memory file %s: open", r->mem_path);
	if (fstat(r->mem_fd, &st) < 0)
		return fk_fail_errno(err, errno, "memory file %s: stat", r->mem_path);
	if (!S_ISREG(st.st_mode))
		return fk_fail(err, EINVAL, "memory file %s: not a regular file", r->mem_path);
	if ((uint64_t)st.st_size != r->vm.memory_file_size)
		return fk_fail(
		    err, EINVAL, "memory file %s: %s (%llu bytes, VM_INFO says %llu)", r->mem_path,
		    (uint64_t)st.st_size < r->vm.memory_file_size ? "truncated" : "too long",
		    (unsigned long long)st.st_size, (unsigned long long)r->vm.memory_file_size);
	return 0;
}

int snap_reader_open(const char *dir, struct snap_reader **out, struct fk_err *err)
{
	struct snap_reader *r;
	struct stat st;
	int rc;

	*out = NULL;
	if (stat(dir, &st) < 0)
		return fk_fail_errno(err, errno, "snapshot %s", dir);
	if (!S_ISDIR(st.st_mode))
		return fk_fail(err, ENOTDIR, "snapshot %s: not a directory", dir);
	r = calloc(1, sizeof(*r));
	if (!r)
		return fk_fail(err, ENOMEM, "snapshot %s: out of memory", dir);
	r->mem_fd = -1;
	if (asprintf(&r->state_path, "%s/%s", dir, SNAP_STATE_FILE) < 0) {
		r->state_path = NULL;
		rc = fk_fail(err, ENOMEM, "snapshot %s: out of memory", dir);
		goto fail;
	}
	rc = read_state_file(r, err);
	if (!rc)
		rc = check_header(r, err);
	if (!rc)
		rc = check_checksums(r, err);
	if (!rc)
		rc = check_flags(r, err);
	if (!rc)
		rc = parse_vm_info(r, err);
	if (!rc)
		rc = check_section_contents(r, err);
	if (!rc)
		rc = open_memory(r, dir, err);
	if (rc)
		goto fail;
	*out = r;
	return 0;
fail:
	snap_reader_close(r);
	return rc;
}

void snap_reader_close(struct snap_reader *r)
{
	if (!r)
		return;
	if (r->mem_fd >= 0)
		close(r->mem_fd);
	free(r->vm.regions);
	free(r->sections);
	free(r->buf);
	free(r->mem_path);
	free(r->state_path);
	free(r);
}

int snap_reader_find(const struct snap_reader *r, uint32_t type, uint32_t instance,
		     const void **data, size_t *len)
{
	const struct snap_reader_section *s = lookup(r, type, instance);

	if (!s)
		return -ENOENT;
	*data = r->buf + s->offset;
	*len = (size_t)s->length;
	return 0;
}

int snap_reader_find_device(const struct snap_reader *r, uint32_t instance, uint32_t *device_type,
			    const void **data, size_t *len)
{
	const struct snap_reader_section *s = lookup(r, SNAP_SEC_DEVICE, instance);

	if (!s)
		return -ENOENT;
	/* Open guaranteed length >= SNAP_DEV_PREFIX_LEN. */
	*device_type = get_le32(r->buf + s->offset);
	*data = r->buf + s->offset + SNAP_DEV_PREFIX_LEN;
	*len = (size_t)s->length - SNAP_DEV_PREFIX_LEN;
	return 0;
}

int snap_writer_find(const struct snap_writer *w, uint32_t type, uint32_t instance,
		     const void **data, size_t *len)
{
	for (size_t i = 0; i < w->nr_sections; i++) {
		const struct snap_writer_section *s = &w->sections[i];
		if (s->type == type && s->instance == instance) {
			*data = s->data;
			*len = s->len;
			return 0;
		}
	}
	return -ENOENT;
}

int snap_writer_find_device(const struct snap_writer *w, uint32_t instance, uint32_t *device_type,
			    const void **data, size_t *len)
{
	const uint8_t *raw;
	size_t raw_len;

	if (snap_writer_find(w, SNAP_SEC_DEVICE, instance, (const void **)&raw, &raw_len) < 0 ||
	    raw_len < SNAP_DEV_PREFIX_LEN)
		return -ENOENT;
	*device_type = get_le32(raw);
	*data = raw + SNAP_DEV_PREFIX_LEN;
	*len = raw_len - SNAP_DEV_PREFIX_LEN;
	return 0;
}

uint32_t snap_reader_nr_sections(const struct snap_reader *r)
{
	return r->nr_sections;
}

void snap_reader_section(const struct snap_reader *r, uint32_t index, uint32_t *type,
			 uint32_t *instance, const void **data, size_t *len)
{
	const struct snap_reader_section *s = &r->sections[index];

	*type = s->type;
	*instance = s->instance;
	*data = r->buf + s->offset;
	*len = (size_t)s->length;
}

uint64_t snap_reader_identity(const struct snap_reader *r)
{
	return get_le64(r->buf + SNAP_HDR_OFF_CHECKSUM);
}

uint32_t snap_reader_version(const struct snap_reader *r)
{
	return get_le32(r->buf + SNAP_HDR_OFF_VERSION);
}

int snap_reader_parent(const struct snap_reader *r, struct snap_parent_info *out)
{
	const struct snap_reader_section *s = lookup(r, SNAP_SEC_PARENT, 0);
	const uint8_t *p;
	uint32_t n;

	memset(out, 0, sizeof(*out));
	if (!s)
		return -ENOENT;
	/* Validated at open (check_parent). */
	p = r->buf + s->offset;
	n = get_le32(p + SNAP_PARENT_OFF_PATH_LEN);
	memcpy(out->path, p + SNAP_PARENT_FIXED_LEN, n);
	out->path[n] = '\0';
	out->depth = get_le32(p + SNAP_PARENT_OFF_DEPTH);
	out->identity = get_le64(p + SNAP_PARENT_OFF_IDENTITY);
	out->mem_size = get_le64(p + SNAP_PARENT_OFF_MEM_SIZE);
	return 0;
}

int snap_reader_page_map(const struct snap_reader *r, const uint8_t **bits, uint64_t *nr_pages,
			 uint64_t *present)
{
	const struct snap_reader_section *s = lookup(r, SNAP_SEC_PAGE_MAP, 0);
	const uint8_t *p;

	if (!s)
		return -ENOENT;
	p = r->buf + s->offset;
	*bits = p + SNAP_PM_FIXED_LEN;
	*nr_pages = get_le64(p + SNAP_PM_OFF_NR);
	*present = get_le64(p + SNAP_PM_OFF_PRESENT);
	return 0;
}

const struct snap_vm_info *snap_reader_vm_info(const struct snap_reader *r)
{
	return &r->vm;
}

int snap_reader_memory_fd(const struct snap_reader *r)
{
	return r->mem_fd;
}

const char *snap_reader_memory_path(const struct snap_reader *r)
{
	return r->mem_path;
}

int snap_reader_mem_hashes(const struct snap_reader *r, uint64_t *chunk_size, uint64_t *nr_chunks,
			   const uint8_t **hashes_le64)
{
	const struct snap_reader_section *s = lookup(r, SNAP_SEC_MEM_HASHES, 0);
	const uint8_t *p;

	if (!s)
		return -ENOENT;
	/* Open checked the layout (check_mem_hashes). */
	p = r->buf + s->offset;
	*chunk_size = 1ull << get_le32(p + SNAP_MH_OFF_SHIFT);
	*nr_chunks = get_le64(p + SNAP_MH_OFF_NR);
	*hashes_le64 = p + SNAP_MH_FIXED_LEN;
	return 0;
}

/* ---- CPU identity ---- */

enum cpu_word {
	W_LEAF1_ECX,
	W_LEAF1_EDX,
	W_LEAF7_EBX,
	W_LEAF7_ECX,
	W_LEAF7_EDX,
	W_XCR0_LO,
	W_XCR0_HI,
	W_XSAVE_MAX,
	W_EXT1_ECX,
	W_EXT1_EDX,
};

static uint32_t *feature_word(struct snap_cpu_features *f, enum cpu_word w)
{
	uint32_t *words[SNAP_CPU_NR_WORDS] = {
	    &f->leaf1_ecx, &f->leaf1_edx, &f->leaf7_ebx,      &f->leaf7_ecx, &f->leaf7_edx,
	    &f->xcr0_lo,   &f->xcr0_hi,	  &f->xsave_max_size, &f->ext1_ecx,  &f->ext1_edx,
	};
	return words[w];
}

static uint32_t feature_word_c(const struct snap_cpu_features *f, enum cpu_word w)
{
	return *feature_word((struct snap_cpu_features *)f, w);
}

static const struct snap_cpuid_entry *find_leaf(const struct snap_cpuid_entry *e, size_t n,
						uint32_t function, uint32_t index)
{
	for (size_t i = 0; i < n; i++)
		if (e[i].function == function && e[i].index == index)
			return &e[i];
	return NULL;
}

void snap_cpu_features_from_cpuid(const struct snap_cpuid_entry *entries, size_t n,
				  struct snap_cpu_features *out)
{
	const struct snap_cpuid_entry *e;

	memset(out, 0, sizeof(*out));
	if ((e = find_leaf(entries, n, 0, 0))) {
		memcpy(out->vendor, &e->ebx, 4);
		memcpy(out->vendor + 4, &e->edx, 4);
		memcpy(out->vendor + 8, &e->ecx, 4);
	}
	if ((e = find_leaf(entries, n, 1, 0))) {
		out->leaf1_ecx = e->ecx;
		out->leaf1_edx = e->edx;
	}
	if ((e = find_leaf(entries, n, 7, 0))) {
		out->leaf7_ebx = e->ebx;
		out->leaf7_ecx = e->ecx;
		out->leaf7_edx = e->edx;
	}
	if ((e = find_leaf(entries, n, 0xd, 0))) {
		out->xcr0_lo = e->eax;
		out->xcr0_hi = e->edx;
		out->xsave_max_size = e->ecx;
	}
	if ((e = find_leaf(entries, n, 0x80000001, 0))) {
		out->ext1_ecx = e->ecx;
		out->ext1_edx = e->edx;
	}
}

int snap_cpu_identity_encode(const struct snap_cpu_identity *id, uint8_t **out, size_t *len,
			     struct fk_err *err)
{
	size_t n = SNAP_CPU_FIXED_LEN + (size_t)id->nr_entries * SNAP_CPU_ENTRY_LEN;
	uint8_t *p = calloc(1, n);

	if (!p)
		return fk_fail(err, ENOMEM, "CPU identity: out of memory for %u CPUID entries",
			       id->nr_entries);
	memcpy(p, id->host.vendor, 12);
	put_le32(p + 12, id->nr_entries);
	for (int w = 0; w < SNAP_CPU_NR_WORDS; w++)
		put_le32(p + 16 + 4 * w, feature_word_c(&id->host, w));
	for (uint32_t i = 0; i < id->nr_entries; i++) {
		const struct snap_cpuid_entry *e = &id->entries[i];
		uint8_t *q = p + SNAP_CPU_FIXED_LEN + (size_t)i * SNAP_CPU_ENTRY_LEN;
		const uint32_t v[7] = {e->function, e->index, e->flags, e->eax,
				       e->ebx,	    e->ecx,   e->edx};

		for (int k = 0; k < 7; k++)
			put_le32(q + 4 * k, v[k]);
	}
	*out = p;
	*len = n;
	return 0;
}

int snap_cpu_identity_decode(const void *data, size_t len, struct snap_cpu_identity *out,
			     struct fk_err *err)
{
	const uint8_t *p = data;
	uint32_t n;

	memset(out, 0, sizeof(*out));
	if (len < SNAP_CPU_FIXED_LEN)
		return fk_fail(err, EINVAL, "CPU_IDENTITY section: %zu bytes, needs at least %u",
			       len, SNAP_CPU_FIXED_LEN);
	n = get_le32(p + 12);
	if ((len - SNAP_CPU_FIXED_LEN) / SNAP_CPU_ENTRY_LEN != n ||
	    (len - SNAP_CPU_FIXED_LEN) % SNAP_CPU_ENTRY_LEN)
		return fk_fail(err, EINVAL, "CPU_IDENTITY section: %zu bytes for %u CPUID entries",
			       len, n);
	memcpy(out->host.vendor, p, 12);
	out->host.vendor[12] = '\0';
	for (int w = 0; w < SNAP_CPU_NR_WORDS; w++)
		*feature_word(&out->host, w) = get_le32(p + 16 + 4 * w);
	out->entries = calloc(n ? n : 1, sizeof(*out->entries));
	if (!out->entries)
		return fk_fail(err, ENOMEM, "CPU_IDENTITY section: out of memory");
	for (uint32_t i = 0; i < n; i++) {
		const uint8_t *q = p + SNAP_CPU_FIXED_LEN + (size_t)i * SNAP_CPU_ENTRY_LEN;
		struct snap_cpuid_entry *e = &out->entries[i];

		e->function = get_le32(q);
		e->index = get_le32(q + 4);
		e->flags = get_le32(q + 8);
		e->eax = get_le32(q + 12);
		e->ebx = get_le32(q + 16);
		e->ecx = get_le32(q + 20);
		e->edx = get_le32(q + 24);
	}
	out->nr_entries = n;
	return 0;
}

void snap_cpu_identity_free(struct snap_cpu_identity *id)
{
	free(id->entries);
	id->entries = NULL;
	id->nr_entries = 0;
}

struct feature_name {
	uint8_t word;
	uint8_t bit;
	const char *name;
};

/* Names for the bits a user is likely to recognise; others print as their CPUID location. */
static const struct feature_name feature_names[] = {
    {W_LEAF1_ECX, 0, "sse3"},
    {W_LEAF1_ECX, 1, "pclmulqdq"},
    {W_LEAF1_ECX, 9, "ssse3"},
    {W_LEAF1_ECX, 12, "fma"},
    {W_LEAF1_ECX, 13, "cx16"},
    {W_LEAF1_ECX, 17, "pcid"},
    {W_LEAF1_ECX, 19, "sse4_1"},
    {W_LEAF1_ECX, 20, "sse4_2"},
    {W_LEAF1_ECX, 21, "x2apic"},
    {W_LEAF1_ECX, 22, "movbe"},
    {W_LEAF1_ECX, 23, "popcnt"},
    {W_LEAF1_ECX, 24, "tsc_deadline_timer"},
    {W_LEAF1_ECX, 25, "aes"},
    {W_LEAF1_ECX, 26, "xsave"},
    {W_LEAF1_ECX, 28, "avx"},
    {W_LEAF1_ECX, 29, "f16c"},
    {W_LEAF1_ECX, 30, "rdrand"},
    {W_LEAF1_ECX, 31, "hypervisor"},
    {W_LEAF1_EDX, 0, "fpu"},
    {W_LEAF1_EDX, 4, "tsc"},
    {W_LEAF1_EDX, 5, "msr"},
    {W_LEAF1_EDX, 6, "pae"},
    {W_LEAF1_EDX, 8, "cx8"},
    {W_LEAF1_EDX, 9, "apic"},
    {W_LEAF1_EDX, 11, "sep"},
    {W_LEAF1_EDX, 13, "pge"},
    {W_LEAF1_EDX, 15, "cmov"},
    {W_LEAF1_EDX, 16, "pat"},
    {W_LEAF1_EDX, 19, "clflush"},
    {W_LEAF1_EDX, 23, "mmx"},
    {W_LEAF1_EDX, 24, "fxsr"},
    {W_LEAF1_EDX, 25, "sse"},
    {W_LEAF1_EDX, 26, "sse2"},
    {W_LEAF7_EBX, 0, "fsgsbase"},
    {W_LEAF7_EBX, 3, "bmi1"},
    {W_LEAF7_EBX, 5, "avx2"},
    {W_LEAF7_EBX, 7, "smep"},
    {W_LEAF7_EBX, 8, "bmi2"},
    {W_LEAF7_EBX, 9, "erms"},
    {W_LEAF7_EBX, 10, "invpcid"},
    {W_LEAF7_EBX, 16, "avx512f"},
    {W_LEAF7_EBX, 17, "avx512dq"},
    {W_LEAF7_EBX, 18, "rdseed"},
    {W_LEAF7_EBX, 19, "adx"},
    {W_LEAF7_EBX, 20, "smap"},
    {W_LEAF7_EBX, 23, "clflushopt"},
    {W_LEAF7_EBX, 24, "clwb"},
    {W_LEAF7_EBX, 28, "avx512cd"},
    {W_LEAF7_EBX, 29, "sha_ni"},
    {W_LEAF7_EBX, 30, "avx512bw"},
    {W_LEAF7_EBX, 31, "avx512vl"},
    {W_LEAF7_ECX, 1, "avx512vbmi"},
    {W_LEAF7_ECX, 2, "umip"},
    {W_LEAF7_ECX, 3, "pku"},
    {W_LEAF7_ECX, 8, "gfni"},
    {W_LEAF7_ECX, 9, "vaes"},
    {W_LEAF7_ECX, 10, "vpclmulqdq"},
    {W_LEAF7_ECX, 11, "avx512_vnni"},
    {W_LEAF7_ECX, 14, "avx512_vpopcntdq"},
    {W_LEAF7_ECX, 22, "rdpid"},
    {W_LEAF7_EDX, 4, "fsrm"},
    {W_LEAF7_EDX, 10, "md_clear"},
    {W_LEAF7_EDX, 26, "spec_ctrl"},
    {W_LEAF7_EDX, 27, "intel_stibp"},
    {W_LEAF7_EDX, 29, "arch_capabilities"},
    {W_LEAF7_EDX, 31, "spec_ctrl_ssbd"},
    {W_EXT1_ECX, 0, "lahf_lm"},
    {W_EXT1_ECX, 5, "abm"},
    {W_EXT1_ECX, 6, "sse4a"},
    {W_EXT1_EDX, 11, "syscall"},
    {W_EXT1_EDX, 20, "nx"},
    {W_EXT1_EDX, 26, "pdpe1gb"},
    {W_EXT1_EDX, 27, "rdtscp"},
    {W_EXT1_EDX, 29, "lm"},
};

static const char *const word_location[SNAP_CPU_NR_WORDS] = {
    [W_LEAF1_ECX] = "CPUID.01H:ECX",	      [W_LEAF1_EDX] = "CPUID.01H:EDX",
    [W_LEAF7_EBX] = "CPUID.(07H,0):EBX",      [W_LEAF7_ECX] = "CPUID.(07H,0):ECX",
    [W_LEAF7_EDX] = "CPUID.(07H,0):EDX",      [W_XCR0_LO] = "CPUID.(0DH,0):EAX (XCR0)",
    [W_XCR0_HI] = "CPUID.(0DH,0):EDX (XCR0)", [W_EXT1_ECX] = "CPUID.80000001H:ECX",
    [W_EXT1_EDX] = "CPUID.80000001H:EDX",
};

/* Bits that reflect the host OS's CR4 (OSXSAVE, OSPKE), not what the CPU can do. */
static uint32_t ignored_bits(enum cpu_word w)
{
	if (w == W_LEAF1_ECX)
		return 1u << 27;
	if (w == W_LEAF7_ECX)
		return 1u << 4;
	return 0;
}

static const char *feature_bit_name(enum cpu_word w, unsigned bit)
{
	for (size_t i = 0; i < sizeof(feature_names) / sizeof(feature_names[0]); i++)
		if (feature_names[i].word == w && feature_names[i].bit == bit)
			return feature_names[i].name;
	return NULL;
}

int snap_cpu_check_compat(const struct snap_cpu_features *saved,
			  const struct snap_cpu_features *now, struct fk_err *err)
{
	if (strncmp(saved->vendor, now->vendor, 12) != 0)
		return fk_fail(err, ENOTSUP,
			       "CPU mismatch: snapshot taken on a \"%.12s\" CPU, this host is "
			       "\"%.12s\"",
			       saved->vendor, now->vendor);
	for (int w = 0; w < SNAP_CPU_NR_WORDS; w++) {
		uint32_t missing;
		unsigned bit;
		const char *name;

		if (w == W_XSAVE_MAX)
			continue;
		missing = feature_word_c(saved, w) & ~feature_word_c(now, w) & ~ignored_bits(w);
		if (!missing)
			continue;
		bit = (unsigned)__builtin_ctz(missing);
		name = feature_bit_name(w, bit);
		return fk_fail(
		    err, ENOTSUP,
		    "CPU mismatch: this host lacks %s%s(%s bit %u), which the snapshot's "
		    "host had",
		    name ? name : "feature", " ", word_location[w], bit);
	}
	if (saved->xsave_max_size > now->xsave_max_size)
		return fk_fail(
		    err, ENOTSUP,
		    "CPU mismatch: this host's XSAVE area is %u bytes (CPUID.(0DH,0):ECX), "
		    "the snapshot needs %u",
		    now->xsave_max_size, saved->xsave_max_size);
	return 0;
}
