/* SPDX-License-Identifier: MIT */
#include "uffd/uffd_handler.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_PENDING	 256 /* faults waiting for an EAGAIN to clear */
#define PREFETCH_RUN_MAX 512 /* pages per UFFDIO_COPY of a prefetch run (2 MiB) */
#define PREFETCH_BATCH	 1024

static uint64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

/* Marks the pages of [start, end) holding data, from SEEK_DATA/SEEK_HOLE. */
static int map_data_extents(struct uffd_handler *h, int fd, const char *path, struct fk_err *err)
{
	off_t pos = 0, end = (off_t)h->file_size;

	while (pos < end) {
		off_t data = lseek(fd, pos, SEEK_DATA), hole;

		if (data < 0) {
			if (errno == ENXIO)
				return 0; /* only holes from pos on */
			return fk_fail_errno(err, errno, "memory file %s: SEEK_DATA", path);
		}
		hole = lseek(fd, data, SEEK_HOLE);
		if (hole < 0)
			return fk_fail_errno(err, errno, "memory file %s: SEEK_HOLE", path);
		if (hole > end)
			hole = end;
		for (uint64_t p = (uint64_t)data / UFFD_PAGE; p * UFFD_PAGE < (uint64_t)hole; p++)
			h->data[p] = 1;
		pos = hole;
	}
	return 0;
}

int uffd_handler_open(struct uffd_handler *h, int uffd, const struct uffd_region *regions,
		      int nr_regions, const char *memory_path, struct fk_err *err)
{
	struct stat st;
	uint64_t pages;
	int fd, ret;

	memset(h, 0, sizeof(*h));
	h->uffd = uffd;
	if (nr_regions < 1 || nr_regions > UFFD_MAX_REGIONS)
		return fk_fail(err, EINVAL, "%d regions: expected 1 to %d", nr_regions,
			       UFFD_MAX_REGIONS);
	for (int i = 0; i < nr_regions; i++)
		if (regions[i].page_size != UFFD_PAGE)
			return fk_fail(err, EINVAL,
				       "region %d: page_size %llu: forkd-uffd serves 4096-byte "
				       "pages",
				       i, (unsigned long long)regions[i].page_size);
	memcpy(h->regions, regions, sizeof(regions[0]) * (size_t)nr_regions);
	h->nr_regions = nr_regions;
	fd = open(memory_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fk_fail_errno(err, errno, "memory file %s", memory_path);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		ret = fk_fail(err, EINVAL, "memory file %s: not a regular file", memory_path);
		goto out;
	}
	h->file_size = (uint64_t)st.st_size;
	ret = uffd_regions_match_file(regions, nr_regions, h->file_size, err);
	if (ret < 0) {
		fk_wrap(err, "memory file %s", memory_path);
		goto out;
	}
	pages = h->file_size / UFFD_PAGE;
	h->data = calloc(pages, 1);
	h->state = calloc(pages, 1);
	if (!h->data || !h->state) {
		ret = fk_fail(err, ENOMEM, "memory file %s: out of memory for %llu pages",
			      memory_path, (unsigned long long)pages);
		goto out;
	}
	ret = map_data_extents(h, fd, memory_path, err);
	if (ret < 0)
		goto out;
	h->file_map = mmap(NULL, h->file_size, PROT_READ, MAP_SHARED, fd, 0);
	if (h->file_map == MAP_FAILED) {
		h->file_map = NULL;
		ret = fk_fail_errno(err, errno, "memory file %s: mmap", memory_path);
		goto out;
	}
	/* Faults come in the guest's order, not the file's: no read-ahead. */
	madvise((void *)h->file_map, h->file_size, MADV_RANDOM);
out:
	close(fd);
	return ret;
}

void uffd_handler_close(struct uffd_handler *h)
{
	if (h->file_map)
		munmap((void *)h->file_map, h->file_size);
	if (h->uffd >= 0)
		close(h->uffd);
	free(h->data);
	free(h->state);
	free(h->prefetch);
	memset(h, 0, sizeof(*h));
	h->uffd = -1;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int uffd_handler_load_prefetch(struct uffd_handler *h, const char *path, struct fk_err *err)
{
	FILE *f = fopen(path, "rbe");
	struct stat st;
	size_t n = 0, count;
	int ret = 0;

	if (!f)
		return fk_fail_errno(err, errno, "prefetch record %s", path);
	if (fstat(fileno(f), &st) < 0 || st.st_size % 8) {
		ret = fk_fail(err, EINVAL,
			      "prefetch record %s: %lld bytes, not a whole number of 8-byte page "
			      "offsets",
			      path, (long long)st.st_size);
		goto out;
	}
	count = (size_t)st.st_size / 8;
	free(h->prefetch);
	h->prefetch = calloc(count ? count : 1, sizeof(uint64_t));
	if (!h->prefetch) {
		ret = fk_fail(err, ENOMEM, "prefetch record %s: out of memory", path);
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		uint8_t b[8];
		uint64_t off = 0;

		if (fread(b, 1, 8, f) != 8) {
			ret = fk_fail(err, EIO, "prefetch record %s: short read", path);
			goto out;
		}
		for (int k = 7; k >= 0; k--)
			off = off << 8 | b[k];
		if (off % UFFD_PAGE || off >= h->file_size) {
			ret = fk_fail(err, EINVAL,
				      "prefetch record %s: entry %zu, offset %llu: expected a "
				      "page-aligned offset below the memory file's %llu bytes",
				      path, i, (unsigned long long)off,
				      (unsigned long long)h->file_size);
			goto out;
		}
		h->prefetch[n++] = off;
	}
	/* Bulk replay: file order, duplicates dropped, so runs become one copy each. */
	qsort(h->prefetch, n, sizeof(uint64_t), cmp_u64);
	count = n;
	n = 0;
	for (size_t i = 0; i < count; i++)
		if (!n || h->prefetch[n - 1] != h->prefetch[i])
			h->prefetch[n++] = h->prefetch[i];
	h->nr_prefetch = n;
	h->prefetch_next = 0;
out:
	fclose(f);
	return ret;
}

/* The region whose file range holds offset off, or -1. */
static int region_of_offset(const struct uffd_handler *h, uint64_t off)
{
	for (int i = 0; i < h->nr_regions; i++)
		if (off >= h->regions[i].offset && off - h->regions[i].offset < h->regions[i].size)
			return i;
	return -1;
}

static void record_page(struct uffd_handler *h, uint64_t off)
{
	uint8_t b[8];

	if (!h->record)
		return;
	for (int k = 0; k < 8; k++)
		b[k] = (uint8_t)(off >> (8 * k));
	if (fwrite(b, 1, 8, h->record) == 8)
		h->stats.recorded++;
}

/*
 * Fills len bytes at host address dst with file bytes at off (or zeros).
 * Returns 0, or -errno of the ioctl; *done receives the bytes filled.
 */
static int fill(struct uffd_handler *h, uint64_t dst, uint64_t off, uint64_t len, bool zero,
		uint64_t *done)
{
	int ret;

	*done = 0;
	if (zero) {
		struct uffdio_zeropage z = {.range = {.start = dst, .len = len}};

		ret = ioctl(h->uffd, UFFDIO_ZEROPAGE, &z);
		if (z.zeropage > 0)
			*done = (uint64_t)z.zeropage;
	} else {
		struct uffdio_copy c = {
		    .dst = dst, .src = (uintptr_t)(h->file_map + off), .len = len};

		ret = ioctl(h->uffd, UFFDIO_COPY, &c);
		if (c.copy > 0)
			*done = (uint64_t)c.copy;
	}
	return ret < 0 ? -errno : 0;
}

/*
 * Fault-around: the faulting page and its untouched neighbours of the same
 * kind (data or hole) inside its aligned block of fault_around pages, in one
 * ioctl (the waiter wakes when it is done). Returns 0 when the faulting page
 * was filled; otherwise the caller serves that page alone.
 */
static int serve_around(struct uffd_handler *h, int r, uint64_t idx, bool zero)
{
	const struct uffd_region *reg = &h->regions[r];
	uint64_t first = reg->offset / UFFD_PAGE, end = (reg->offset + reg->size) / UFFD_PAGE;
	uint64_t bstart = idx - idx % h->fault_around, bend, lo = idx, hi = idx + 1, done;

	if (bstart < first)
		bstart = first;
	bend = bstart + h->fault_around < end ? bstart + h->fault_around : end;
	while (lo > bstart && h->state[lo - 1] == UFFD_PAGE_UNTOUCHED && !h->data[lo - 1] == zero)
		lo--;
	while (hi < bend && h->state[hi] == UFFD_PAGE_UNTOUCHED && !h->data[hi] == zero)
		hi++;
	if (hi - lo == 1)
		return -1;
	fill(h, reg->base_host_virt_addr + lo * UFFD_PAGE - reg->offset, lo * UFFD_PAGE,
	     (hi - lo) * UFFD_PAGE, zero, &done);
	for (uint64_t p = lo; p < lo + done / UFFD_PAGE; p++)
		h->state[p] = UFFD_PAGE_PRESENT;
	if (idx >= lo + done / UFFD_PAGE)
		return -1; /* cut short before the faulting page: serve it alone */
	record_page(h, idx * UFFD_PAGE);
	if (zero)
		h->stats.zeroed++;
	else
		h->stats.copied++;
	h->stats.around += done / UFFD_PAGE - 1;
	return 0;
}

int uffd_handler_serve(struct uffd_handler *h, uint64_t addr, struct fk_err *err)
{
	int i = uffd_region_find(h->regions, h->nr_regions, addr);
	uint64_t page, off, idx, done;
	bool zero;
	int ret;

	if (i < 0)
		return fk_fail(err, EFAULT,
			       "fault at 0x%llx: outside every region the VMM registered",
			       (unsigned long long)addr);
	page = addr & ~(UFFD_PAGE - 1);
	off = h->regions[i].offset + (page - h->regions[i].base_host_virt_addr);
	idx = off / UFFD_PAGE;
	zero = h->state[idx] == UFFD_PAGE_REMOVED || !h->data[idx];
	if (h->fault_around > 1 && h->state[idx] == UFFD_PAGE_UNTOUCHED &&
	    serve_around(h, i, idx, zero) == 0)
		return 0;
	ret = fill(h, page, off, UFFD_PAGE, zero, &done);
	if (ret == -EEXIST) {
		/* A prefetch (or an earlier fault) filled it first: just wake the waiter. */
		struct uffdio_range wake = {.start = page, .len = UFFD_PAGE};

		h->stats.already++;
		h->state[idx] = UFFD_PAGE_PRESENT;
		ioctl(h->uffd, UFFDIO_WAKE, &wake);
		return 0;
	}
	if (ret == -EAGAIN || ret == -ESRCH || ret == -ENOENT)
		return ret == -EAGAIN ? -EAGAIN : -ESRCH;
	if (ret < 0)
		return fk_fail(err, -ret, "fault at 0x%llx (file offset %llu): %s: %s",
			       (unsigned long long)addr, (unsigned long long)off,
			       zero ? "UFFDIO_ZEROPAGE" : "UFFDIO_COPY", strerror(-ret));
	if (h->state[idx] == UFFD_PAGE_UNTOUCHED)
		record_page(h, off);
	h->state[idx] = UFFD_PAGE_PRESENT;
	if (zero)
		h->stats.zeroed++;
	else
		h->stats.copied++;
	return 0;
}

/* Fills one run of untouched pages of one kind (data or hole) from the prefetch list. */
static size_t prefetch_run(struct uffd_handler *h, size_t first)
{
	uint64_t off = h->prefetch[first], idx = off / UFFD_PAGE, done;
	int r = region_of_offset(h, off);
	bool zero = !h->data[idx];
	size_t n = 1;
	uint64_t dst;

	if (r < 0 || h->state[idx] != UFFD_PAGE_UNTOUCHED)
		return 1;
	while (first + n < h->nr_prefetch && n < PREFETCH_RUN_MAX) {
		uint64_t next = h->prefetch[first + n], nidx = next / UFFD_PAGE;

		if (next != off + n * UFFD_PAGE || region_of_offset(h, next) != r ||
		    h->state[nidx] != UFFD_PAGE_UNTOUCHED || !h->data[nidx] != zero)
			break;
		n++;
	}
	dst = h->regions[r].base_host_virt_addr + (off - h->regions[r].offset);
	/* A page of the run may be filled meanwhile (EEXIST): what was done counts, the rest
	 * retried one by one. */
	fill(h, dst, off, n * UFFD_PAGE, zero, &done);
	for (uint64_t p = 0; p < done / UFFD_PAGE; p++)
		h->state[idx + p] = UFFD_PAGE_PRESENT;
	h->stats.prefetched += done / UFFD_PAGE;
	if (done == n * UFFD_PAGE)
		return n;
	return done / UFFD_PAGE ? done / UFFD_PAGE : 1;
}

size_t uffd_handler_prefetch_step(struct uffd_handler *h, size_t max_pages)
{
	size_t budget = max_pages;

	while (h->prefetch_next < h->nr_prefetch && budget > 0) {
		size_t used = prefetch_run(h, h->prefetch_next);

		h->prefetch_next += used;
		budget = used >= budget ? 0 : budget - used;
	}
	return h->nr_prefetch - h->prefetch_next;
}

/* Applies f to the state of every page of [start, end) that lies in a region. */
static uint64_t mark_range(struct uffd_handler *h, uint64_t start, uint64_t end, uint8_t to)
{
	uint64_t n = 0;

	for (int i = 0; i < h->nr_regions; i++) {
		const struct uffd_region *r = &h->regions[i];
		uint64_t lo = start > r->base_host_virt_addr ? start : r->base_host_virt_addr;
		uint64_t hi =
		    end < r->base_host_virt_addr + r->size ? end : r->base_host_virt_addr + r->size;

		for (uint64_t a = lo & ~(UFFD_PAGE - 1); a < hi; a += UFFD_PAGE, n++)
			h->state[(r->offset + a - r->base_host_virt_addr) / UFFD_PAGE] = to;
	}
	return n;
}

/* Reads and handles every queued message; faults that got EAGAIN go to pending. */
static int drain_events(struct uffd_handler *h, uint64_t *pending, size_t *nr_pending,
			struct fk_err *err)
{
	struct uffd_msg msgs[64];

	for (;;) {
		ssize_t got = read(h->uffd, msgs, sizeof(msgs));

		if (got < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			return fk_fail_errno(err, errno, "read the userfaultfd");
		}
		if (got == 0 || got % (ssize_t)sizeof(msgs[0]))
			return fk_fail(err, EIO, "read the userfaultfd: %zd bytes", got);
		for (ssize_t i = 0; i < got / (ssize_t)sizeof(msgs[0]); i++) {
			struct uffd_msg *m = &msgs[i];
			int ret;

			switch (m->event) {
			case UFFD_EVENT_PAGEFAULT:
				h->stats.faults++;
				ret = uffd_handler_serve(h, m->arg.pagefault.address, err);
				if (ret == -EAGAIN && *nr_pending < MAX_PENDING)
					pending[(*nr_pending)++] = m->arg.pagefault.address;
				else if (ret == -EAGAIN)
					return fk_fail(err, EAGAIN, "too many faults deferred");
				else if (ret == -ESRCH)
					return 0; /* the VM is gone; conn's end follows */
				else if (ret < 0)
					return ret;
				break;
			case UFFD_EVENT_REMOVE:
				h->stats.removed += mark_range(
				    h, m->arg.remove.start, m->arg.remove.end, UFFD_PAGE_REMOVED);
				break;
			case UFFD_EVENT_UNMAP:
				h->stats.unmapped += mark_range(
				    h, m->arg.remove.start, m->arg.remove.end, UFFD_PAGE_UNMAPPED);
				break;
			default:
				/* FORK and REMAP are not requested by forkd-vmm. */
				return fk_fail(err, EPROTO, "userfaultfd event %u not expected",
					       (unsigned)m->event);
			}
		}
	}
}

int uffd_handler_run(struct uffd_handler *h, int conn, struct fk_err *err)
{
	uint64_t pending[MAX_PENDING];
	size_t nr_pending = 0;
	uint64_t t0 = mono_us();
	bool prefetch_done = h->nr_prefetch == 0;

	for (;;) {
		struct pollfd pfd[2] = {{.fd = h->uffd, .events = POLLIN},
					{.fd = conn, .events = POLLIN | POLLRDHUP}};
		int ret, timeout = (!prefetch_done || nr_pending) ? 0 : -1;

		if (poll(pfd, 2, timeout) < 0 && errno != EINTR)
			return fk_fail_errno(err, errno, "poll");
		if (pfd[0].revents & POLLIN) {
			ret = drain_events(h, pending, &nr_pending, err);
			if (ret < 0)
				return ret;
		}
		/* Faults that met a changing map: their events are read now, retry. */
		for (size_t i = 0, n = nr_pending; i < n; i++) {
			uint64_t addr = pending[0];

			memmove(pending, pending + 1, (--nr_pending) * sizeof(pending[0]));
			ret = uffd_handler_serve(h, addr, err);
			if (ret == -EAGAIN)
				pending[nr_pending++] = addr;
			else if (ret < 0 && ret != -ESRCH)
				return ret;
		}
		if (pfd[1].revents & (POLLHUP | POLLRDHUP | POLLERR | POLLIN)) {
			char byte;

			if (recv(conn, &byte, 1, MSG_DONTWAIT) <= 0)
				return 0; /* the VMM exited */
		}
		if (!prefetch_done && uffd_handler_prefetch_step(h, PREFETCH_BATCH) == 0) {
			prefetch_done = true;
			h->stats.prefetch_us = mono_us() - t0;
		}
		if (nr_pending && timeout == 0 && prefetch_done)
			usleep(100); /* EAGAIN persists only while an event is queued */
	}
}
