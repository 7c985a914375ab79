/* SPDX-License-Identifier: MIT */
/*
 * Live snapshot engine `uffd-wp` (docs/design/userfaultfd.md, "Write-protect
 * live snapshots"): pause, arm userfaultfd write protection over every guest
 * region, capture vCPU and device state, resume; a fault thread copies each
 * page the guest writes before un-protecting it, a bulk copier takes the
 * rest, both through one per-page state machine; the copy is then written
 * as a standard snapshot directory.
 */
#ifndef FORKD_UFFD_UFFD_LIVE_H
#define FORKD_UFFD_UFFD_LIVE_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

struct vm;

/* Per-page states of the copy: a page moves only forward, NOT_COPIED -> COPYING -> COPIED. */
enum wp_page_state {
	WP_PAGE_NOT_COPIED = 0,
	WP_PAGE_COPYING = 1, /* one thread (fault or bulk) copies it; it stays protected */
	WP_PAGE_COPIED = 2,  /* in the copy; may be un-protected */
};

/* Where a guest region sits in the VMM and in the memory file (page index = file offset/4K). */
struct wp_region {
	uint64_t hva;
	uint64_t size;
	uint64_t first_page;
};

/*
 * The page index in the memory file of host address addr, or -ERANGE when
 * addr is outside every region (a fault the engine never registered for).
 */
int64_t wp_page_index(const struct wp_region *regions, int nr_regions, uint64_t addr);

/*
 * Claims page idx for copying: true when this caller moved it NOT_COPIED ->
 * COPYING and must copy it, then wp_page_done. False when another thread
 * has it: wp_page_wait returns once that copy is complete.
 */
bool wp_page_claim(_Atomic uint8_t *pages, uint64_t idx);
void wp_page_done(_Atomic uint8_t *pages, uint64_t idx);
void wp_page_wait(_Atomic uint8_t *pages, uint64_t idx);

/*
 * The `snapshot` command with "engine":"uffd-wp" (mode live). Fills reply
 * (pause_us, arm_us, capture_us, snapshot: writing|ready, ...). With wait,
 * returns once the snapshot is written (or failed: an error).
 */
int uffd_live_snapshot(struct vm *vm, const char *path, bool wait, const char *serve, json_t *reply,
		       struct fk_err *err);

/*
 * With `serve` (item 5: children before the copy completes): the state is
 * also written at once to PATH.live, with an all-hole memory file and this
 * marker holding the socket path; the VMM listens there and serves the
 * MISSING faults of VMs restored from PATH.live with --restore-mode uffd
 * --uffd-handler SOCK, from the copy, claiming pages not copied yet.
 */
#define UFFD_LIVE_MARKER "live-handler"
/* True when dir is such a PATH.live (any restore but through its handler must refuse it). */
bool uffd_live_dir_is_live(const char *dir);

/* `snapshot-status` of a uffd-wp snapshot written to path: 0, or -ENOENT if none was. */
int uffd_live_status(const char *path, json_t *reply);

/* Before guest memory goes (vm_destroy): a snapshot in progress is failed and its threads end. */
void uffd_live_end(struct vm *vm);

#endif
