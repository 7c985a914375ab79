/* SPDX-License-Identifier: MIT */
/* Snapshots of a running VM and restoring a VM from one (docs/snapshot-format.md). */
#ifndef FORKD_STATE_VM_SNAPSHOT_H
#define FORKD_STATE_VM_SNAPSHOT_H

#include "state/snapshot_format.h"
#include "core/vm.h"

struct vm_snapshot_result {
	uint64_t pause_us;   /* vCPUs stopped: pause request to resume */
	uint64_t capture_us; /* vCPU, chip and device state */
	uint64_t write_us;   /* writing and fsyncing the directory */
	uint64_t mem_bytes;
	uint64_t hash_us;    /* XXH3 of the memory chunks, inside write_us */
	uint64_t data_bytes; /* non-zero bytes in the memory file */
	uint32_t inflight;   /* virtio requests the guest had queued but the device not yet taken */
};

/*
 * Pauses the VM (unless it already is), captures everything, writes the
 * snapshot directory `dir` atomically, and resumes it if it was running
 * and `resume` is set.
 */
int vm_snapshot_take(struct vm *vm, const char *dir, bool resume, struct vm_snapshot_result *res,
		     struct fk_err *err);

struct diff_request;
/* The same, as a diff against a parent and/or arming dirty tracking (state/diff_track.h). */
int vm_snapshot_take_diff(struct vm *vm, const char *dir, bool resume,
			  const struct diff_request *dreq, struct vm_snapshot_result *res,
			  struct fk_err *err);

/* Virtio requests the guest queued that its devices have not taken yet (call paused). */
uint32_t vm_snapshot_inflight(const struct vm *vm);

/* Adds the device sections (serial, each disk with a copy of its image if writable). */
int vm_snapshot_save_devices(struct vm *vm, struct snap_writer *w, struct fk_err *err);

/*
 * vm_init for --restore: builds the VM from the snapshot in cfg->restore_dir
 * (memory mapped copy-on-write from its memory file, devices, vCPUs).
 */
int vm_restore_init(struct vm *vm, struct fk_err *err);

struct state_source;
/*
 * The common tail of restore and BRANCH: devices with their state, disk
 * overlays, a new generation ID, vCPUs with their state. Memory and the KVM
 * VM must already exist.
 */
int vm_rebuild(struct vm *vm, const struct state_source *src, struct fk_err *err);

/*
 * The read-only images a restore of the snapshot in dir reopens from their
 * original paths (disks without a copy in the snapshot): calls fn for each.
 * A jailed restore must see them (jail_plan_build). 0, or an error when the
 * snapshot cannot be read.
 */
int vm_snapshot_readonly_images(const char *dir, int (*fn)(const char *path, void *opaque),
				void *opaque, struct fk_err *err);

/* After the vCPUs of a restored VM started: new generation ID, queued requests served. */
void vm_restore_started(struct vm *vm);

#endif
