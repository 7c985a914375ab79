/* SPDX-License-Identifier: MIT */
/*
 * forkd-uffd's engine: serves a VM's MISSING faults from a snapshot memory
 * file (UFFDIO_COPY; UFFDIO_ZEROPAGE for the file's holes and for pages the
 * VM discarded), follows UFFD_EVENT_REMOVE/UNMAP, records the order pages
 * were first touched and replays such a record in bulk (prefetch).
 * docs/design/userfaultfd.md.
 */
#ifndef FORKD_UFFD_UFFD_HANDLER_H
#define FORKD_UFFD_UFFD_HANDLER_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "uffd/uffd_proto.h"
#include "util/err.h"

#define UFFD_PAGE	      4096ULL
#define UFFD_MAX_FAULT_AROUND 512 /* pages: 2 MiB */

enum uffd_page_state {
	UFFD_PAGE_UNTOUCHED = 0, /* never served: the file's bytes on first touch */
	UFFD_PAGE_PRESENT = 1,	 /* served (or prefetched) */
	UFFD_PAGE_REMOVED = 2,	 /* the VM discarded it (MADV_DONTNEED): zeros on next touch */
	UFFD_PAGE_UNMAPPED = 3,	 /* the VM unmapped it: no fault can come */
};

struct uffd_handler_stats {
	uint64_t faults;      /* MISSING faults read */
	uint64_t copied;      /* pages served from the file on a fault */
	uint64_t zeroed;      /* pages served as zeros on a fault */
	uint64_t already;     /* faults on a page already present (raced a prefetch): woken */
	uint64_t around;      /* pages filled with a faulting neighbour (fault-around) */
	uint64_t prefetched;  /* pages filled by prefetch before any fault asked */
	uint64_t removed;     /* pages the VM discarded */
	uint64_t unmapped;    /* pages the VM unmapped */
	uint64_t recorded;    /* page offsets written to the record */
	uint64_t prefetch_us; /* time the prefetch pass took */
};

struct uffd_handler {
	int uffd;
	struct uffd_region regions[UFFD_MAX_REGIONS];
	int nr_regions;
	const uint8_t *file_map; /* the memory file, read-only */
	uint64_t file_size;
	uint8_t *data;	    /* per file page: 1 if the file has data there (not a hole) */
	uint8_t *state;	    /* per file page: enum uffd_page_state */
	FILE *record;	    /* first-touch order, 8-byte little-endian file offsets, or NULL */
	uint64_t *prefetch; /* sorted unique file offsets to fill in bulk */
	size_t nr_prefetch, prefetch_next;
	/*
	 * Pages per aligned block a fault fills (1: only the faulting page).
	 * Fewer round trips for a guest that touches memory in order, at the
	 * cost of filling pages it may never touch.
	 */
	uint64_t fault_around;
	struct uffd_handler_stats stats;
};

/*
 * Maps memory_path and checks the regions tile it; takes ownership of uffd
 * (closed by uffd_handler_close).
 */
int uffd_handler_open(struct uffd_handler *h, int uffd, const struct uffd_region *regions,
		      int nr_regions, const char *memory_path, struct fk_err *err);
void uffd_handler_close(struct uffd_handler *h);

/* Loads a record written by a previous run (see record) as the pages to prefetch. */
int uffd_handler_load_prefetch(struct uffd_handler *h, const char *path, struct fk_err *err);

/*
 * Serves the page holding host address addr, as for a fault. Returns 0,
 * -EAGAIN (the VM's memory map is changing: read events, then retry), -ESRCH
 * (the VM is gone) or another -errno with err set (an address outside every
 * region: a handshake that lied, or a kernel bug; the handler stops).
 */
int uffd_handler_serve(struct uffd_handler *h, uint64_t addr, struct fk_err *err);

/* Fills up to max_pages prefetch pages; returns how many remain. */
size_t uffd_handler_prefetch_step(struct uffd_handler *h, size_t max_pages);

/*
 * Serves until the VM is gone: conn (the handshake connection) ends when the
 * VMM exits. Returns 0 then, or -errno with err set on a fault it cannot
 * serve.
 */
int uffd_handler_run(struct uffd_handler *h, int conn, struct fk_err *err);

#endif
