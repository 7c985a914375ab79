/* SPDX-License-Identifier: MIT */
/*
 * The registry of `forkd serve`: every VM, zygote and snapshot the daemon
 * owns, and their lineage, in one SQLite file (WAL mode, foreign keys on, a
 * busy timeout), so a restarted daemon can re-adopt the VMMs still running:
 * each VM and zygote keeps its pid together with the process's start time
 * (/proc/PID/stat field 22) and the kernel's boot id, which tell whether
 * that pid is still the same process (registry_proc_still_same).
 *
 * API shape:
 * - One opaque handle per connection (registry_open/registry_close); no
 *   global state, and a handle is used by one thread at a time. Two handles
 *   on one file (the daemon writing, a CLI reading) see each other's
 *   committed writes; writers wait up to REG_BUSY_TIMEOUT_MS for each other.
 * - Records are plain structs with fixed-size strings ("" = none), filled by
 *   get and copied in by add, like the rest of forkd's state structs.
 * - Lists are arrays allocated by the registry and released with free(),
 *   not callbacks: each list is read in one transaction (a consistent view),
 *   and the caller can then change the registry while walking it (the
 *   daemon's re-adoption marks dead VMs exited as it goes), which a callback
 *   running inside an open SQLite statement could not do safely.
 * - Every change of more than one row runs in one transaction (BEGIN
 *   IMMEDIATE, so two writers serialise instead of failing on upgrade).
 * - IDs are "vm-" / "zy-" + 8 lowercase hex digits from getrandom(2); every
 *   ID ever handed out is kept in the `ids` table, so none is reused even
 *   after its record is deleted.
 * - Functions return 0 or -errno and fill err with a message naming the
 *   record and what was expected. -ENOENT: no such record; -EBUSY: delete
 *   refused because of dependents; -EAGAIN: the database stayed locked by
 *   another handle beyond the busy timeout.
 *
 * Lineage: a VM has at most one parent (the VM it was branched from, with
 * the zygote that held the branch point) or was spawned from a snapshot.
 * Parent and snapshot are fixed at add time. A snapshot's parent_vm and a
 * VM's zygote are history: the snapshot outlives its VM, and a VM outlives
 * the zygote it came from (deleting the zygote clears the VM's zygote field).
 * Deleting a VM removes its zygotes (they die with their source VMM).
 */
#ifndef FORKD_DAEMON_REGISTRY_H
#define FORKD_DAEMON_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util/err.h"

#define REG_SCHEMA_VERSION  3 /* PRAGMA user_version of the files this code writes */
#define REG_BUSY_TIMEOUT_MS 5000

#define REG_ID_MAX	16  /* "vm-1a2b3c4d" + NUL, with room */
#define REG_TAG_MAX	64  /* characters of a tag, without the NUL */
#define REG_SOCK_MAX	108 /* sizeof(sun_path): a socket path, with its NUL */
#define REG_NAME_MAX	128 /* an image name, with its NUL */
#define REG_PATH_MAX	1024
#define REG_BOOT_ID_MAX 40 /* /proc/sys/kernel/random/boot_id (36 characters) + NUL */
#define REG_NO_EXIT	(-1)
#define REG_NET_MAX	8  /* a network policy: "none", "host", "nat", with its NUL */
#define REG_NETNS_MAX	48 /* "forkd-" + a namespace id of up to 32 characters + NUL */
#define REG_ADDR_MAX	16 /* a dotted IPv4 address + NUL */

struct registry;

enum reg_vm_state {
	REG_VM_STARTING = 0,
	REG_VM_RUNNING,
	REG_VM_PAUSED,
	REG_VM_EXITED,
	REG_VM_FAILED,
};

enum reg_snap_state {
	REG_SNAP_WRITING = 0, /* being written; never listed as ready, nothing can spawn from it */
	REG_SNAP_READY,	      /* complete: registry_snapshot_mark_ready was called */
	REG_SNAP_FAILED,
};

/* Who a pid is: the start time tells a live process from a later one that got its pid. */
struct reg_proc {
	pid_t pid;		       /* 0: no process */
	uint64_t start_time;	       /* clock ticks after boot, /proc/PID/stat field 22 */
	char boot_id[REG_BOOT_ID_MAX]; /* the boot the start time counts from */
};

struct reg_vm {
	char id[REG_ID_MAX]; /* filled by registry_vm_add */
	struct reg_proc proc;
	char control_sock[REG_SOCK_MAX];
	char vsock_sock[REG_SOCK_MAX];
	enum reg_vm_state state;
	char parent_vm[REG_ID_MAX];	/* branched from this VM, or "" */
	char zygote[REG_ID_MAX];	/* through this zygote of parent_vm, or "" */
	char snapshot[REG_TAG_MAX + 1]; /* spawned from this (ready) snapshot, or "" */
	int64_t branched_us;		/* wall-clock time of the branch point (µs), or 0 */
	uint64_t pause_us;		/* pause the source saw at that branch */
	char image[REG_NAME_MAX];	/* root image it booted, or "" */
	char kernel[REG_PATH_MAX];	/* kernel it booted, or "" */
	char tag[REG_TAG_MAX + 1];	/* the user's label (a valid tag), or "" */
	int64_t created_us;		/* filled by registry_vm_add: wall clock, µs */
	int exit_status;		/* REG_NO_EXIT until the VMM exited */
	/* Network (docs/networking.md); version 3. The policy is fixed at add time, a BRANCH
	 * child and a restored VM take their source's; the namespace and the host address are
	 * the VMM's own (status), "" until known and for "none". */
	char net[REG_NET_MAX]; /* "none", "host" or "nat"; "" reads as "none" */
	char net_netns[REG_NETNS_MAX];
	char net_host_addr[REG_ADDR_MAX];
};

struct reg_zygote {
	char id[REG_ID_MAX];  /* filled by registry_zygote_add */
	char vm[REG_ID_MAX];  /* the source VM that owns it */
	struct reg_proc proc; /* the zygote process */
	char dir[REG_PATH_MAX];
	uint32_t nr_children;
	int64_t created_us; /* filled by registry_zygote_add */
	uint64_t pause_us;  /* pause of the branch that made it */
};

struct reg_snapshot {
	char tag[REG_TAG_MAX + 1];
	char path[REG_PATH_MAX];
	enum reg_snap_state state;  /* registry_snapshot_add always records REG_SNAP_WRITING */
	char parent_vm[REG_ID_MAX]; /* the VM it was taken from, or "" (kept after that VM goes) */
	int64_t created_us;	    /* filled by registry_snapshot_add */
	char image[REG_NAME_MAX];   /* the image that VM booted, or "" (also kept) */
	char net[REG_NET_MAX];	    /* that VM's network policy (version 3), "" reads as "none" */
};

/* One row of the lineage: registry_lineage returns them in depth-first order, children after
 * their parent, siblings oldest first, so a CLI prints them top to bottom indented by depth. */
struct reg_lineage_node {
	struct reg_vm vm;
	unsigned depth;	   /* 0 for a VM without parent */
	bool last_sibling; /* no later sibling follows: draw "└─" rather than "├─" */
};

/* The IDs of the VMs a delete removed (the caller kills their VMMs); release with free(ids). */
struct reg_ids {
	size_t n;
	char (*ids)[REG_ID_MAX];
};

/* ---- Handle ---- */

/* Opens or creates the registry at path. Fails with -EINVAL if the file is not an SQLite
 * database or is another program's database, -ENOTSUP if its schema is newer than
 * REG_SCHEMA_VERSION, -EIO if WAL mode cannot be turned on. */
int registry_open(const char *path, struct registry **out, struct fk_err *err);
void registry_close(struct registry *r);

/*
 * Batch: every change until registry_batch_end commits as one transaction
 * (one WAL commit instead of one per change: a branch records its zygote and
 * children together). Inside it, an operation that fails undoes only its own
 * changes. A daemon killed before the end leaves none of them in the file.
 * Not nested; registry_batch_end commits (and on failure rolls back) the lot.
 */
int registry_batch_begin(struct registry *r, struct fk_err *err);
int registry_batch_end(struct registry *r, struct fk_err *err);

/* ---- VMs ---- */

/* Adds vm (state, pid, sockets, lineage, ...), filling vm->id and vm->created_us. A parent must
 * exist; a zygote must belong to the parent; a snapshot must exist and be ready. */
int registry_vm_add(struct registry *r, struct reg_vm *vm, struct fk_err *err);
/*
 * Reserves n new VM IDs (out[0..n-1]) in one write: never given by registry_vm_add, never
 * reused even if not used. For a VM whose VMM starts before its row is written.
 */
int registry_vm_ids_reserve(struct registry *r, size_t n, char (*out)[REG_ID_MAX],
			    struct fk_err *err);
/* registry_vm_add for vm->id reserved by registry_vm_ids_reserve (kept, not chosen). */
int registry_vm_add_reserved(struct registry *r, struct reg_vm *vm, struct fk_err *err);
/* Rewrites the mutable fields of vm->id: proc, sockets, state, pause_us, image, kernel, tag,
 * exit_status, net_netns, net_host_addr. Lineage (parent_vm, zygote, snapshot, branched_us),
 * net and created_us never change. */
int registry_vm_update(struct registry *r, const struct reg_vm *vm, struct fk_err *err);
/* Sets the state; exit_status is kept for REG_VM_EXITED/FAILED (REG_NO_EXIT: unknown). */
int registry_vm_set_state(struct registry *r, const char *id, enum reg_vm_state state,
			  int exit_status, struct fk_err *err);
int registry_vm_get(struct registry *r, const char *id, struct reg_vm *out, struct fk_err *err);
/* Every VM, oldest first; *out is NULL when there are none. */
int registry_vm_list(struct registry *r, struct reg_vm **out, size_t *n, struct fk_err *err);
/* Deletes VM id and its zygotes. With children VMs it fails with -EBUSY naming them, unless
 * cascade, which removes every descendant too. removed (may be NULL) gets the IDs of all VMs
 * removed: id first, every parent before its children. */
int registry_vm_delete(struct registry *r, const char *id, bool cascade, struct reg_ids *removed,
		       struct fk_err *err);

/* Every VM with its parent, in tree order (struct reg_lineage_node); free(*out). */
int registry_lineage(struct registry *r, struct reg_lineage_node **out, size_t *n,
		     struct fk_err *err);

/* ---- Zygotes ---- */

/* Adds z (vm must exist), filling z->id and z->created_us. */
int registry_zygote_add(struct registry *r, struct reg_zygote *z, struct fk_err *err);
int registry_zygote_set_children(struct registry *r, const char *id, uint32_t nr_children,
				 struct fk_err *err);
int registry_zygote_get(struct registry *r, const char *id, struct reg_zygote *out,
			struct fk_err *err);
/* The zygotes of VM vm (NULL: all), oldest first; free(*out). */
int registry_zygote_list(struct registry *r, const char *vm, struct reg_zygote **out, size_t *n,
			 struct fk_err *err);
/* Forgets zygote id (released or dead); the VMs it started run on and keep their parent. */
int registry_zygote_delete(struct registry *r, const char *id, struct fk_err *err);

/* ---- Snapshots ---- */

/* 0 if tag is 1..REG_TAG_MAX characters of [A-Za-z0-9._-], not "." or "..", and does not start
 * with '-' (it would read as an option on a command line); else -EINVAL saying why. */
int registry_tag_check(const char *tag, struct fk_err *err);

/* Records a snapshot being written (state REG_SNAP_WRITING), filling s->created_us. -EEXIST if
 * the tag is taken. */
int registry_snapshot_add(struct registry *r, struct reg_snapshot *s, struct fk_err *err);
/* writing -> ready, once the snapshot is complete on disk; any other state is refused. */
int registry_snapshot_mark_ready(struct registry *r, const char *tag, struct fk_err *err);
/* writing -> failed. */
int registry_snapshot_mark_failed(struct registry *r, const char *tag, struct fk_err *err);
int registry_snapshot_get(struct registry *r, const char *tag, struct reg_snapshot *out,
			  struct fk_err *err);
/* Snapshots oldest first: all of them, or only the ready ones; free(*out). */
int registry_snapshot_list(struct registry *r, bool ready_only, struct reg_snapshot **out,
			   size_t *n, struct fk_err *err);
/* Deletes snapshot tag. If VMs were spawned from it, fails with -EBUSY naming them, unless
 * cascade, which removes them and their descendants and lists their IDs in removed. */
int registry_snapshot_delete(struct registry *r, const char *tag, bool cascade,
			     struct reg_ids *removed, struct fk_err *err);

/* ---- Processes and names ---- */

/* Reads pid's start time and the boot id; -ESRCH if there is no such process. */
int registry_proc_probe(pid_t pid, struct reg_proc *out, struct fk_err *err);
/* 1 if p->pid is still the process recorded in p, 0 if it is gone or the pid was reused. */
int registry_proc_still_same(const struct reg_proc *p, struct fk_err *err);

const char *reg_vm_state_name(enum reg_vm_state s);
const char *reg_snap_state_name(enum reg_snap_state s);

#endif
