/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd handshake between a VMM and its page-fault handler
 * (docs/design/userfaultfd.md): one message on a connected Unix stream
 * socket, the userfaultfd as SCM_RIGHTS and a JSON array of
 *   {"base_host_virt_addr":N,"size":N,"offset":N,"page_size":N}
 * one object per registered guest region, Firecracker's shape, so its
 * example handlers can serve forkd-vmm and forkd-uffd can serve Firecracker.
 * Both sides use this file; the receiver is strict: every malformed message
 * is refused with an error naming what was wrong.
 */
#ifndef FORKD_UFFD_UFFD_PROTO_H
#define FORKD_UFFD_UFFD_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define UFFD_MAX_REGIONS    16
#define UFFD_MAX_MSG	    65536
#define UFFD_MIN_PAGE_SIZE  4096ULL
#define UFFD_MAX_PAGE_SIZE  (1ULL << 30)
#define UFFD_HANDSHAKE_WAIT 5000 /* ms for the rest of a message split over reads */

struct uffd_region {
	uint64_t base_host_virt_addr; /* where the region is mapped in the VMM */
	uint64_t size;		      /* bytes */
	uint64_t offset;	      /* where its bytes start in the memory file */
	uint64_t page_size;	      /* the granule faults are served in */
};

/* JSON text of the array (malloc'd, caller frees), after checking the regions as the parser does.
 */
int uffd_regions_format(const struct uffd_region *regions, int n, char **out, struct fk_err *err);

/*
 * Parses and checks a message's JSON text: an array of 1..max objects with
 * exactly the four keys, non-negative integers; page_size a power of two
 * from 4 KiB to 1 GiB; address, size and offset multiples of it; size > 0;
 * no range wrapping; no two regions overlapping in the VMM or in the file.
 */
int uffd_regions_parse(const char *text, size_t len, struct uffd_region *regions, int max,
		       int *n_out, struct fk_err *err);

/*
 * The regions against a memory file of file_size bytes: they must tile it
 * exactly (together they cover [0, file_size), no region past its end).
 */
int uffd_regions_match_file(const struct uffd_region *regions, int n, uint64_t file_size,
			    struct fk_err *err);

/* Sends uffd and the regions' JSON in one sendmsg. */
int uffd_handshake_send(int sock, int uffd, const struct uffd_region *regions, int n,
			struct fk_err *err);

/*
 * Receives one handshake: exactly one descriptor, which must be a
 * userfaultfd, and a JSON text that parses (more reads are waited for up to
 * timeout_ms when it is cut short). On success *uffd_out is the descriptor
 * (the caller closes it); on failure every descriptor received is closed.
 */
int uffd_handshake_recv(int sock, int timeout_ms, int *uffd_out, struct uffd_region *regions,
			int max, int *n_out, struct fk_err *err);

/* The region holding host address addr (whole page of page_size), or -1. */
int uffd_region_find(const struct uffd_region *regions, int n, uint64_t addr);

#endif
