/* SPDX-License-Identifier: MIT */
/*
 * The fork engine of BRANCH (brief §7): pause the vCPUs, capture VM and
 * device state in memory, fork(2) a frozen *zygote* that holds the guest RAM
 * copy-on-write, resume the source. The zygote forks children on request;
 * each child creates its own KVM VM on the inherited RAM, restores the
 * captured state, takes its own identity and runs. The zygote can also
 * persist the branch point as a snapshot while the source runs on.
 *
 * Process model (docs/branch.md): the source is the zygote's parent and
 * reaps it; a zygote dies with its source (PR_SET_PDEATHSIG) or on release;
 * children are independent VMMs that outlive their zygote and are reparented
 * to the nearest child subreaper (the forkd daemon) when it exits.
 */
#ifndef FORKD_BRANCH_FORK_ENGINE_H
#define FORKD_BRANCH_FORK_ENGINE_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "branch/recollapse.h"
#include "util/err.h"

struct vm;

#define BRANCH_MAX_CHILDREN 1024
#define BRANCH_MAX_ZYGOTES  16
/* Prebuilt children a zygote keeps parked (`pool`, docs/branch.md). */
#define BRANCH_MAX_POOL 16

enum persist_state {
	PERSIST_NONE = 0,
	PERSIST_WRITING,
	PERSIST_READY,
	PERSIST_FAILED,
};

/* The zygote's copies of the writable disks, made after the pause (devices/disk_copy.h). */
enum zygote_disks {
	ZYGOTE_DISKS_READY, /* copied, or no writable disk */
	ZYGOTE_DISKS_COPYING,
	ZYGOTE_DISKS_FAILED,
};

struct zygote {
	struct vm *vm;
	bool in_use;
	int id;
	pid_t pid;
	int sock;  /* SOCK_SEQPACKET to the zygote */
	int pidfd; /* readable once the zygote has exited */
	char dir[2048];
	int nr_children;
	enum persist_state persist;
	char persist_path[2048];
	char persist_error[FK_ERR_MSG_MAX];
	enum zygote_disks disks;
	uint64_t disk_copy_us; /* branch instant to the last disk copied */
	char disk_error[256];
	/* A live snapshot's zygote: released, and its dir removed, once the snapshot is written. */
	bool snapshot_only;
	uint64_t persist_start_us;
	uint64_t write_us; /* persist request to written, as the source saw it */
	uint64_t hash_us;  /* the zygote's XXH3 of the memory chunks, inside write_us */
	int pool;	   /* prebuilt children the zygote keeps parked */
	int pool_ready;	   /* of those, built and parked now (the zygote reports it) */
	char pool_error[FK_ERR_MSG_MAX]; /* the last pooled child that failed to build */
};

/* What became of a live snapshot (`snapshot-status`), kept after its zygote is gone. */
struct snapshot_job {
	bool in_use;
	uint64_t seq; /* the oldest record is reused */
	char path[2048];
	enum persist_state state;
	char error[FK_ERR_MSG_MAX];
	uint64_t pause_us;
	uint64_t write_us;
	uint64_t hash_us;
};

#define BRANCH_MAX_SNAPSHOT_JOBS 16

struct branch_child {
	int index;
	pid_t pid;
};

struct branch_request {
	int n;		     /* children to start now (0: only a zygote) */
	const char *dir;     /* where the zygote and children live; NULL: default */
	const char *persist; /* snapshot directory to write from the zygote, or NULL */
	bool wait;	     /* wait until the snapshot is written */
	bool snapshot;	     /* a live snapshot: the zygote goes once persist is written */
	int pool;	     /* prebuilt children the zygote keeps parked (0..BRANCH_MAX_POOL) */
	const char *parent;  /* persist as a diff against this snapshot (docs/diff-snapshots.md) */
	bool track_dirty;    /* arm dirty tracking at this persist */
	/* dir exists already (a fan-out's output directory): use it, never create or remove it */
	bool dir_exists;
};

struct branch_result {
	int zygote_id;
	pid_t zygote_pid;
	char dir[2048];
	uint64_t pause_us;   /* source vCPUs stopped: pause request to resume */
	uint64_t park_us;    /* pause request until every vCPU parked */
	uint64_t capture_us; /* vCPU, chip and device state; disk copies only set up */
	uint64_t fork_us;    /* fork(2) of the zygote */
	/* Branch instant to the writable disks copied, outside the pause; 0: none waited for. */
	uint64_t disk_copy_us;
	int nr_children;
	struct branch_child children[BRANCH_MAX_CHILDREN];
	enum persist_state persist;
	char persist_error[FK_ERR_MSG_MAX];
	uint32_t inflight; /* virtio requests queued by the guest, not yet taken, at the instant */
	uint64_t write_us; /* persist: request to written (0 while writing) */
	uint64_t hash_us;
};

int branch_vm(struct vm *vm, const struct branch_request *req, struct branch_result *res,
	      struct fk_err *err);

/* Starts n more children from zygote `id`; their pids go to res->children. */
int branch_spawn(struct vm *vm, int id, int n, struct branch_result *res, struct fk_err *err);

/* Ends zygote `id` (its children run on). */
int branch_release(struct vm *vm, int id, struct fk_err *err);

/* Ends every zygote; called when the source exits. */
void branch_release_all(struct vm *vm);

/* What BRANCH keeps for a VM (vm->branch), made at its first branch. */
struct branch_state {
	struct zygote zygotes[BRANCH_MAX_ZYGOTES];
	int next_zygote_id;
	bool swept_tmp; /* default branch directories of gone VMMs removed (first default one) */
	struct recollapse recollapse;
	struct snapshot_job snapshot_jobs[BRANCH_MAX_SNAPSHOT_JOBS];
	uint64_t next_snapshot_seq;
};

/* The newest live snapshot written to `path`, or NULL. */
const struct snapshot_job *branch_snapshot_job(const struct vm *vm, const char *path);

/* The VM's zygote slots; NULL when it never branched. */
const struct zygote *branch_zygotes(const struct vm *vm);

const char *persist_state_name(enum persist_state s);

/*
 * The `branch` command's arguments (n, dir, persist, wait, pool), checked:
 * bad values fail naming the argument and what was expected. Strings point
 * into `request`. Defined with the command in src/control/vm_control.c.
 */
int branch_request_parse(json_t *request, struct branch_request *req, struct fk_err *err);

#endif
