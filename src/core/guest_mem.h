/* SPDX-License-Identifier: MIT */
/*
 * Guest physical memory: one abstraction over several backends (anon, memfd,
 * file, uffd; docs/design/userfaultfd.md). Every host access to guest memory made on
 * behalf of the guest goes through guest_mem_ptr(), which checks the whole
 * range [gpa, gpa+len) lies inside one RAM region without overflow, the way
 * Solo5's hvt tender checks every guest pointer.
 */
#ifndef FORKD_CORE_GUEST_MEM_H
#define FORKD_CORE_GUEST_MEM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* x86 layout: RAM below the MMIO hole, the hole, RAM above 4 GiB. */
#define GUEST_MMIO_HOLE_START 0xC0000000ULL  /* 3 GiB */
#define GUEST_MMIO_HOLE_END   0x100000000ULL /* 4 GiB */
#define GUEST_MEM_MAX_REGIONS 2

enum guest_mem_backend {
	GUEST_MEM_ANON = 0,
	GUEST_MEM_FILE = 1, /* MAP_PRIVATE of a snapshot's memory file: clean pages shared */
	/*
	 * MAP_PRIVATE hugetlb 2 MiB pages, reserved at map time: copy-on-write
	 * copies a whole 2 MiB page and never splits the mapping, so fork(2)
	 * copies one entry per 2 MiB however much the guest wrote (a flat BRANCH
	 * stall). Children's first writes need free huge pages too.
	 */
	GUEST_MEM_HUGETLB = 2,
	/*
	 * MAP_SHARED of a memfd (another process can map fd); the first BRANCH
	 * turns it MAP_PRIVATE of the same memfd (guest_mem_make_private).
	 */
	GUEST_MEM_MEMFD = 3,
	/* Anonymous, without THP: registered with userfaultfd, filled by a handler. */
	GUEST_MEM_UFFD = 4,
};

/* "anon" / "hugetlb" / "memfd" to a backend for a fresh VM; -EINVAL for anything else. */
int guest_mem_backend_parse(const char *name, enum guest_mem_backend *out);
const char *guest_mem_backend_name(enum guest_mem_backend backend);

struct guest_mem_region {
	uint64_t gpa;
	uint64_t size;
	uint8_t *hva;
};

struct guest_mem {
	enum guest_mem_backend backend;
	uint64_t total_size; /* bytes of RAM, sum of regions */
	uint8_t *mapping;    /* one host mapping holding all regions */
	size_t mapping_size;
	int nr_regions;
	struct guest_mem_region regions[GUEST_MEM_MAX_REGIONS];
	int memfd;	    /* GUEST_MEM_MEMFD: the memfd, else -1 */
	bool memfd_private; /* GUEST_MEM_MEMFD: mapped MAP_PRIVATE since a BRANCH */
	/*
	 * Diff snapshots (src/state/diff_track.c): while set, every page a host
	 * access resolves through guest_mem_ptr is marked here (bit = page
	 * offset in `mapping`), so device writes, which KVM's dirty log does not
	 * see, count as dirty too. NULL (the default) costs one test.
	 */
	uint64_t *host_dirty;
};

/* Allocates size bytes of guest RAM laid out around the MMIO hole. */
int guest_mem_init(struct guest_mem *mem, enum guest_mem_backend backend, uint64_t size,
		   struct fk_err *err);
/* The `file` backend: size bytes of fd (laid out like anon RAM) mapped copy-on-write. */
int guest_mem_init_file(struct guest_mem *mem, int fd, uint64_t size, struct fk_err *err);
void guest_mem_destroy(struct guest_mem *mem);

/*
 * Before a fork of the VMM with the memory paused: a MAP_SHARED memfd would
 * be one memory for source and children, so it is mapped again, MAP_PRIVATE
 * of the same memfd at the same address. The memfd then holds the branch
 * point, and the source's later writes are private copy-on-write pages, as
 * the anon backend's. No-op for other backends or once done.
 */
int guest_mem_make_private(struct guest_mem *mem, struct fk_err *err);

/*
 * Called by a BRANCH with the VM paused, right before fork(): memfd RAM is
 * made private (above); uffd RAM is refused, since a forked child does not
 * inherit the userfaultfd registration and would read the pages the handler
 * has not filled yet as zeros.
 */
int guest_mem_prepare_fork(struct guest_mem *mem, struct fk_err *err);

/*
 * Host pointer for guest range [gpa, gpa+len), or NULL if any byte of it is
 * outside RAM or the range wraps. len may be 0 (checks gpa only).
 */
void *guest_mem_ptr(const struct guest_mem *mem, uint64_t gpa, uint64_t len);

/* Bounds-checked copies; return 0 or -EFAULT. */
int guest_mem_read(const struct guest_mem *mem, uint64_t gpa, void *dst, size_t len);
int guest_mem_write(const struct guest_mem *mem, uint64_t gpa, const void *src, size_t len);

/* Highest RAM address below 4 GiB (end of region 0). */
uint64_t guest_mem_low_end(const struct guest_mem *mem);

#endif
