/* SPDX-License-Identifier: MIT */
/*
 * Live snapshot, engine "uffd-wp-async" (docs/design/userfaultfd.md, "Variant B"):
 * an iterative pre-copy of guest RAM tracked with UFFD_FEATURE_WP_ASYNC and
 * PAGEMAP_SCAN, then one short pause for the last dirty pages and the vCPU
 * and device state. The snapshot is the VM at that final pause.
 */
#ifndef FORKD_STATE_LIVE_ASYNC_H
#define FORKD_STATE_LIVE_ASYNC_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/vm.h"

#define LIVE_ASYNC_ENGINE "uffd-wp-async"

#include "util/uffd_compat.h"

/*
 * Whether this kernel offers what the engine needs: 0, or -EOPNOTSUPP with
 * a message naming the missing feature (UFFD_FEATURE_WP_ASYNC or
 * PAGEMAP_SCAN), or another -errno when userfaultfd itself is refused.
 */
int live_async_supported(struct fk_err *err);

/*
 * Starts a live snapshot of the running VM into `path` (which must not
 * exist): arms WP_ASYNC over every guest region and starts the copier
 * thread. With `wait`, serves the VM's devices until it is complete and
 * fills `reply` with its numbers; else returns at once ("writing").
 * Call on the event-loop thread (the control command).
 */
int live_async_snapshot(struct vm *vm, const char *path, bool wait, json_t *reply,
			struct fk_err *err);

/* snapshot-status of a path this engine wrote: 1 (reply filled), 0 (not ours). */
int live_async_status(struct vm *vm, const char *path, json_t *reply);

/* At VM exit: stops a snapshot in progress (marked failed, its files removed), frees it all. */
void live_async_destroy(struct vm *vm);

#endif
