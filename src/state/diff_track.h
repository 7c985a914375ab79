/* SPDX-License-Identifier: MIT */
/*
 * Dirty-page tracking for diff snapshots (docs/diff-snapshots.md): KVM's
 * dirty log for the guest's own writes, guest_mem's host bitmap for our
 * devices'. Armed per VM by its first snapshot with track_dirty; a VM that
 * never asks pays nothing.
 */
#ifndef FORKD_STATE_DIFF_TRACK_H
#define FORKD_STATE_DIFF_TRACK_H

#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"
#include "state/snapshot_format.h"

struct diff_track {
	char base[4096];      /* the snapshot the dirty pages count from: absolute */
	uint64_t nr_pages;    /* of guest RAM, in memory-file order */
	uint64_t *host_dirty; /* vm->mem.host_dirty while armed */
	uint64_t *slot_bits;  /* KVM_GET_DIRTY_LOG's bitmap, one slot at a time */
	uint64_t collect_us;  /* the last collect's time, inside the pause */
	uint64_t dirty_pages; /* pages the last collect found dirty */
};

/* What one snapshot asks of tracking; zero: nothing. */
struct diff_request {
	const char *parent; /* store only the pages dirtied since this snapshot (its path) */
	bool track;	    /* arm tracking at this snapshot (a no-op when armed) */
};

/*
 * Called inside the pause, after the state was captured, for a snapshot to
 * be written to `target`. With req->parent: the parent must be the VM's
 * tracked base (its last snapshot while armed), else -EINVAL naming both;
 * the dirty pages since it go to w->diff. With tracking armed, or
 * req->track: the dirty log is read and reset (or armed), and `target`
 * becomes the base, so the next diff holds exactly the pages dirtied after
 * this instant.
 */
int diff_track_snapshot(struct vm *vm, const char *target, const struct diff_request *req,
			struct snap_writer *w, struct fk_err *err);

/* The absolute form of a snapshot path (which may not exist yet): realpath of its parent dir. */
int diff_abs_path(const char *path, char *out, size_t size, struct fk_err *err);

void diff_track_free(struct vm *vm);

#endif
