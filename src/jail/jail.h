/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm --jail DIR: before the VM is built, the VMM (started as root)
 * makes DIR the root of its own mount namespace holding only what the VM
 * needs, leaves the host's ipc, uts and network namespaces, and drops to an
 * unprivileged uid/gid with no capabilities at all (docs/jail.md).
 *
 * Paths keep their host spelling: each file or directory the VM needs is
 * bind-mounted at DIR/<its absolute host path>, so after pivot_root the
 * VMM opens the very path the user gave, every error names that path, and
 * paths that arrive later on the control socket (a branch's "dir", a
 * snapshot's "path") work when they lie in a directory the jail holds.
 */
#ifndef FORKD_JAIL_JAIL_H
#define FORKD_JAIL_JAIL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "core/config.h"
#include "util/err.h"

#define JAIL_MAX_ENTRIES 32
#define JAIL_PATH_MAX	 4096

enum jail_entry_kind {
	JAIL_FILE,     /* bind-mount one file (kernel, a disk, a FIFO) */
	JAIL_DIR,      /* bind-mount a directory (snapshot, socket directory) */
	JAIL_CHAR_DEV, /* a device node created in the jail's /dev, owned by the VM's uid */
};

struct jail_entry {
	char path[JAIL_PATH_MAX]; /* absolute, as the host and the jailed VMM see it */
	enum jail_entry_kind kind;
	bool writable;
	const char *option; /* the option that asked for it, for errors */
};

struct jail_plan {
	struct jail_entry entries[JAIL_MAX_ENTRIES];
	int nr_entries;
};

/*
 * What the jail must hold for cfg, sorted so that a directory comes before
 * the paths inside it; a path inside a directory already bound is not bound
 * again (it is visible through that directory). Relative paths are made
 * absolute against the current directory. Errors name the option and path.
 */
int jail_plan_build(const struct vmm_config *cfg, struct jail_plan *plan, struct fk_err *err);

/* out = dir + host_path ("/srv/jail" + "/images/k.elf"); -ENAMETOOLONG if it does not fit. */
int jail_path(const char *dir, const char *host_path, char *out, size_t len);

/*
 * Resolves --uid/--gid (defaults: the users "nobody" and group "nogroup"),
 * read from the host's passwd/group before the jail hides them.
 */
int jail_resolve_ids(const struct vmm_config *cfg, uid_t *uid, gid_t *gid, struct fk_err *err);

/*
 * Builds the jail at cfg->jail_dir and enters it: namespaces, mounts,
 * pivot_root, then drops every capability and switches to uid/gid. On return
 * the process is unprivileged and sees only the jail. Call after the cgroup
 * is joined (the cgroup files are outside the jail) and before vm_init.
 */
int jail_enter(const struct vmm_config *cfg, struct fk_err *err);

/*
 * Drops every capability (bounding, ambient, effective, permitted,
 * inheritable), sets no_new_privs and switches to uid/gid; then checks the
 * kernel agrees. Exposed for the unit test, which runs it in a child.
 */
int jail_drop_privileges(uid_t uid, gid_t gid, struct fk_err *err);

#endif
