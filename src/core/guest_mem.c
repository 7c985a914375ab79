/* SPDX-License-Identifier: MIT */
#include "core/guest_mem.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MAP_HUGE_2MB
#define MAP_HUGE_2MB (21 << 26) /* MAP_HUGE_SHIFT 26: log2(2 MiB) */
#endif

#define HUGE_2M	      (2ULL << 20)
#define HUGETLB_SYSFS "/sys/kernel/mm/hugepages/hugepages-2048kB/"

int guest_mem_backend_parse(const char *name, enum guest_mem_backend *out)
{
	if (strcmp(name, "anon") == 0)
		*out = GUEST_MEM_ANON;
	else if (strcmp(name, "hugetlb") == 0)
		*out = GUEST_MEM_HUGETLB;
	else if (strcmp(name, "memfd") == 0)
		*out = GUEST_MEM_MEMFD;
	else
		return -EINVAL;
	return 0;
}

const char *guest_mem_backend_name(enum guest_mem_backend backend)
{
	switch (backend) {
	case GUEST_MEM_ANON:
		return "anon";
	case GUEST_MEM_FILE:
		return "file";
	case GUEST_MEM_HUGETLB:
		return "hugetlb";
	case GUEST_MEM_MEMFD:
		return "memfd";
	case GUEST_MEM_UFFD:
		return "uffd";
	}
	return "unknown";
}

/* A counter from the 2 MiB hugetlb pool in sysfs, or -1 if it cannot be read. */
static long hugetlb_counter(const char *name)
{
	char path[128];
	long value = -1;
	FILE *f;

	snprintf(path, sizeof(path), HUGETLB_SYSFS "%s", name);
	f = fopen(path, "re");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &value) != 1)
		value = -1;
	fclose(f);
	return value;
}

/*
 * Reserved at map time (no MAP_NORESERVE): a pool too small fails here with a
 * clear error instead of a SIGBUS at the guest's first touch of a page the
 * pool cannot back. mmap of hugetlb is 2 MiB aligned by itself.
 */
static int map_hugetlb(uint64_t size, uint8_t **out, struct fk_err *err)
{
	uint64_t pages = size / HUGE_2M;
	long free_pages, resv_pages;
	void *p;

	if (size % HUGE_2M)
		return fk_fail(err, EINVAL,
			       "guest memory: --mem-backend hugetlb needs a size that is a "
			       "multiple of 2 MiB, not %llu KiB",
			       (unsigned long long)(size >> 10));
	p = mmap(NULL, size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | MAP_HUGE_2MB, -1, 0);
	if (p == MAP_FAILED) {
		int e = errno;

		free_pages = hugetlb_counter("free_hugepages");
		resv_pages = hugetlb_counter("resv_hugepages");
		if (e == ENOMEM && free_pages >= 0 && resv_pages >= 0)
			return fk_fail(err, ENOMEM,
				       "guest memory: --mem-backend hugetlb needs %llu free 2 MiB "
				       "huge pages for %llu MiB of RAM, but only %ld are free and "
				       "unreserved (raise /proc/sys/vm/nr_hugepages)",
				       (unsigned long long)pages, (unsigned long long)(size >> 20),
				       free_pages - resv_pages);
		return fk_fail_errno(err, e,
				     "guest memory: cannot map %llu MiB of 2 MiB hugetlb pages "
				     "(--mem-backend hugetlb)",
				     (unsigned long long)(size >> 20));
	}
	*out = p;
	return 0;
}

/* RAM below the MMIO hole, then the rest from 4 GiB, both inside one host mapping. */
static void set_layout(struct guest_mem *mem, enum guest_mem_backend backend, uint8_t *hva,
		       uint64_t size)
{
	uint64_t low = size < GUEST_MMIO_HOLE_START ? size : GUEST_MMIO_HOLE_START;

	mem->backend = backend;
	mem->memfd = -1;
	mem->total_size = size;
	mem->mapping = hva;
	mem->mapping_size = size;
	mem->regions[0] = (struct guest_mem_region){.gpa = 0, .size = low, .hva = hva};
	mem->nr_regions = 1;
	if (size > low) {
		mem->regions[1] = (struct guest_mem_region){
		    .gpa = GUEST_MMIO_HOLE_END, .size = size - low, .hva = hva + low};
		mem->nr_regions = 2;
	}
}

/* Reserves size bytes of address space starting 2 MiB aligned (raw..raw+map_size is returned). */
static int reserve_aligned(uint64_t size, int prot, uint8_t **raw_out, uint8_t **aligned_out,
			   struct fk_err *err)
{
	size_t map_size = size + HUGE_2M;
	uint8_t *raw;

	raw = mmap(NULL, map_size, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return fk_fail_errno(err, errno, "guest memory: cannot map %llu MiB",
				     (unsigned long long)(size >> 20));
	*raw_out = raw;
	*aligned_out = (uint8_t *)(((uintptr_t)raw + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
	return 0;
}

/* Unmaps the reservation's slack on both sides of [aligned, aligned+size). */
static void trim_reservation(uint8_t *raw, uint8_t *aligned, uint64_t size)
{
	size_t map_size = size + HUGE_2M;

	if (aligned > raw)
		munmap(raw, (size_t)(aligned - raw));
	if (raw + map_size > aligned + size)
		munmap(aligned + size, (size_t)(raw + map_size - (aligned + size)));
}

/* A memfd of size bytes mapped MAP_SHARED over the aligned reservation. */
static int map_memfd(uint8_t *aligned, uint64_t size, int *fd_out, struct fk_err *err)
{
	int fd = memfd_create("forkd-guest-ram", MFD_CLOEXEC);

	if (fd < 0)
		return fk_fail_errno(err, errno, "guest memory: memfd_create");
	if (ftruncate(fd, (off_t)size) < 0) {
		int e = errno;
		close(fd);
		return fk_fail_errno(err, e, "guest memory: cannot size the memfd to %llu MiB",
				     (unsigned long long)(size >> 20));
	}
	if (mmap(aligned, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_NORESERVE, fd,
		 0) == MAP_FAILED) {
		int e = errno;
		close(fd);
		return fk_fail_errno(err, e, "guest memory: cannot map the memfd");
	}
	*fd_out = fd;
	return 0;
}

int guest_mem_init(struct guest_mem *mem, enum guest_mem_backend backend, uint64_t size,
		   struct fk_err *err)
{
	uint8_t *raw = NULL, *aligned = NULL;
	int ret, memfd = -1;

	memset(mem, 0, sizeof(*mem));
	mem->memfd = -1;
	if (backend != GUEST_MEM_ANON && backend != GUEST_MEM_HUGETLB &&
	    backend != GUEST_MEM_MEMFD && backend != GUEST_MEM_UFFD)
		return fk_fail(err, EINVAL, "guest memory: unknown backend %d", (int)backend);
	if (size == 0 || size % 4096)
		return fk_fail(err, EINVAL,
			       "guest memory: size %llu is not a positive multiple of 4 KiB",
			       (unsigned long long)size);
	if (backend == GUEST_MEM_HUGETLB) {
		ret = map_hugetlb(size, &aligned, err);

		if (ret < 0)
			return ret;
		set_layout(mem, backend, aligned, size);
		return 0;
	}

	if (size > SIZE_MAX - HUGE_2M)
		return fk_fail(err, ENOMEM, "guest memory: size %llu is too large to map",
			       (unsigned long long)size);

	/*
	 * Over-allocate by 2 MiB so the RAM starts 2 MiB aligned: guest 2 MiB
	 * frames then line up with host transparent huge pages, which fork()
	 * copies one entry at a time (brief §7).
	 */
	ret = reserve_aligned(size, PROT_READ | PROT_WRITE, &raw, &aligned, err);
	if (ret < 0)
		return ret;
	if (backend == GUEST_MEM_MEMFD) {
		ret = map_memfd(aligned, size, &memfd, err);
		if (ret < 0) {
			munmap(raw, size + HUGE_2M);
			return ret;
		}
	}
	trim_reservation(raw, aligned, size);
	/*
	 * Best effort: without THP the guest still runs, only slower to fork.
	 * Not for uffd: its handler fills 4 KiB pages, a huge page would only
	 * be split again.
	 */
	if (backend != GUEST_MEM_UFFD)
		madvise(aligned, size, MADV_HUGEPAGE);

	set_layout(mem, backend, aligned, size);
	mem->memfd = memfd;
	return 0;
}

int guest_mem_init_file(struct guest_mem *mem, int fd, uint64_t size, struct fk_err *err)
{
	uint8_t *raw, *aligned, *file_map;
	size_t map_size;

	memset(mem, 0, sizeof(*mem));
	if (size == 0 || size % 4096 || size > SIZE_MAX - HUGE_2M)
		return fk_fail(err, EINVAL, "guest memory: bad size %llu",
			       (unsigned long long)size);
	/* Reserve an aligned range, then map the file over it. */
	map_size = size + HUGE_2M;
	raw = mmap(NULL, map_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return fk_fail_errno(err, errno, "guest memory: cannot reserve %llu MiB",
				     (unsigned long long)(size >> 20));
	aligned = (uint8_t *)(((uintptr_t)raw + HUGE_2M - 1) & ~(uintptr_t)(HUGE_2M - 1));
	file_map = mmap(aligned, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0);
	if (file_map == MAP_FAILED) {
		int e = errno;
		munmap(raw, map_size);
		return fk_fail_errno(err, e, "guest memory: cannot map the memory file");
	}
	if (aligned > raw)
		munmap(raw, (size_t)(aligned - raw));
	if (raw + map_size > aligned + size)
		munmap(aligned + size, (size_t)(raw + map_size - (aligned + size)));
	set_layout(mem, GUEST_MEM_FILE, aligned, size);
	return 0;
}

void guest_mem_destroy(struct guest_mem *mem)
{
	if (mem->mapping)
		munmap(mem->mapping, mem->mapping_size);
	if (mem->backend == GUEST_MEM_MEMFD && mem->memfd >= 0)
		close(mem->memfd);
	memset(mem, 0, sizeof(*mem));
	mem->memfd = -1;
}

int guest_mem_make_private(struct guest_mem *mem, struct fk_err *err)
{
	if (mem->backend != GUEST_MEM_MEMFD || mem->memfd_private)
		return 0;
	/*
	 * MAP_FIXED replaces the shared mapping in one step under the mmap
	 * lock, so a device thread touching guest memory meanwhile sees the old
	 * mapping or the new one, never a hole; both show the same bytes.
	 */
	if (mmap(mem->mapping, mem->mapping_size, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_FIXED | MAP_NORESERVE, mem->memfd, 0) == MAP_FAILED)
		return fk_fail_errno(err, errno,
				     "guest memory: cannot map the memfd privately for a branch");
	madvise(mem->mapping, mem->mapping_size, MADV_HUGEPAGE);
	/*
	 * The mapping keeps the memfd's pages; the fd itself is closed so that
	 * children, which copy struct guest_mem, never hold a stale number.
	 */
	close(mem->memfd);
	mem->memfd = -1;
	mem->memfd_private = true;
	return 0;
}

int guest_mem_prepare_fork(struct guest_mem *mem, struct fk_err *err)
{
	if (mem->backend == GUEST_MEM_UFFD)
		return fk_fail(err, EOPNOTSUPP,
			       "guest memory is filled lazily by a userfaultfd handler "
			       "(--restore-mode uffd): a forked copy would see its missing pages "
			       "as zeros; branch it once restored with --restore-mode file");
	return guest_mem_make_private(mem, err);
}

/* Conservative: reads mark too (a pointer may be written through later). */
static void guest_mem_mark_dirty(const struct guest_mem *mem, uint64_t map_off, uint64_t len)
{
	uint64_t first = map_off / 4096, last = (map_off + (len ? len - 1 : 0)) / 4096;

	/* Device threads mark concurrently with each other and with the collector. */
	for (uint64_t p = first; p <= last; p++)
		__atomic_fetch_or(&mem->host_dirty[p / 64], 1ull << (p % 64), __ATOMIC_RELAXED);
}

void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len)
{
	int i;

	for (i = 0; i < mem->nr_regions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		uint64_t off;

		if (gpa < r->gpa)
			continue;
		off = gpa - r->gpa;
		/* Written so that no addition can wrap. */
		if (off >= r->size || len > r->size - off)
			continue;
		if (mem->host_dirty)
			guest_mem_mark_dirty(mem, (uint64_t)(r->hva - mem->mapping) + off, len);
		return r->hva + off;
	}
	return NULL;
}

int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *dst, size_t len)
{
	const void *src = guest_mem_ptr(mem, gpa, len);

	if (!src)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *src, size_t len)
{
	void *dst = guest_mem_ptr(mem, gpa, len);

	if (!dst)
		return -EFAULT;
	memcpy(dst, src, len);
	return 0;
}

uint64_t guest_mem_low_end(const struct guest_mem *mem)
{
	return mem->regions[0].gpa + mem->regions[0].size;
}
