/* SPDX-License-Identifier: MIT */
/*
 * The daemon's operations (forkd serve): what the REST layer (api.c) calls,
 * implemented by the supervisor (daemon.c) over the registry (registry.h)
 * and the VMMs' control sockets. docs/rest-api.md is the contract these
 * serve; each operation maps to one route.
 *
 * Conventions:
 * - Every function returns 0 or -errno and fills err with a message naming
 *   the input. The REST layer maps errno to the status: EINVAL/ERANGE 400,
 *   ENOENT 404, EBUSY/EEXIST 409, E2BIG 413, EAGAIN/ENOSPC 429, ENOTCONN 503,
 *   anything else 500.
 * - Results are jansson objects in the shapes of docs/rest-api.md (VM,
 *   Snapshot, ...), owned by the caller (json_decref).
 * - Thread-safe: libmicrohttpd serves requests on several threads. An
 *   operation on one VM does not wait for a long operation on another.
 *   Concurrent branch and delete of one VM are serialised (one of them
 *   waits for the other, or fails with -EBUSY; never a half state).
 * - Request bodies are validated here (unknown fields, ranges, tags), so
 *   that every caller gets the same checks; the REST layer only parses
 *   JSON and routes.
 */
#ifndef FORKD_DAEMON_DAEMON_H
#define FORKD_DAEMON_DAEMON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define DAEMON_MAX_CHILDREN 64 /* n of one branch or spawn request */

struct daemon;

/*
 * The uids of jailed VMs, by default: one per VM from 0x70000000 (docs/jail.md).
 * Not 100000..: Debian gives each user's rootless containers subordinate
 * uids from there (/etc/subuid), and a container process with a VM's uid
 * could signal it; systemd's container ranges end below 0x70000000 too.
 */
#define DAEMON_JAIL_UID_FIRST 1879048192u
#define DAEMON_JAIL_UID_COUNT 65536u

struct daemon_config {
	const char *state_dir; /* registry.db, vms/<id>/, snapshots/<tag>/ live here */
	const char *vmm_path;  /* forkd-vmm to run; NULL: next to the forkd binary */
	/*
	 * Jail every VM it starts (forkd-vmm --jail): each created or spawned VM
	 * its own uid of jail_uid_first .. +jail_uid_count-1 (BRANCH children share
	 * their source's), all with the group jail_uid_first. 0: the defaults.
	 * forkd serve jails unless --no-jail.
	 */
	bool jail;
	uint32_t jail_uid_first, jail_uid_count;
};

/*
 * Opens the registry in state_dir, becomes child subreaper, and re-adopts
 * the VMMs the registry lists as running: a VMM whose pid is still the same
 * process and whose control socket answers is watched again (pidfd); any
 * other is marked exited. *adopted, if not NULL, gets how many were.
 */
int daemon_open(const struct daemon_config *cfg, struct daemon **out, int *adopted,
		struct fk_err *err);
/* Stops watching; the VMMs run on (a later daemon re-adopts them). */
void daemon_close(struct daemon *d);

/* POST /v1/vms: body as in docs/rest-api.md; *vm gets the VM once its control socket answers. */
int daemon_vm_create(struct daemon *d, json_t *body, json_t **vm, struct fk_err *err);
int daemon_vm_list(struct daemon *d, json_t **vms, struct fk_err *err); /* {"vms":[...]} */
int daemon_vm_get(struct daemon *d, const char *id, json_t **vm, struct fk_err *err);
/* Stops the VM (and with cascade its descendants); *removed: {"removed":[ids]}. */
int daemon_vm_delete(struct daemon *d, const char *id, bool cascade, json_t **removed,
		     struct fk_err *err);
/* POST /v1/vms/{id}/branch; *result as in docs/rest-api.md. */
int daemon_vm_branch(struct daemon *d, const char *id, json_t *body, json_t **result,
		     struct fk_err *err);
/* POST /v1/vms/{id}/snapshot; *snapshot once it is ready. */
int daemon_vm_snapshot(struct daemon *d, const char *id, json_t *body, json_t **snapshot,
		       struct fk_err *err);
/*
 * The VM's agent socket (its vsock Unix socket) for exec and files, which
 * the REST layer streams itself (agent/agent_client.h). -ENOTCONN when the
 * VM has no vsock device or is not running.
 */
int daemon_vm_agent_socket(struct daemon *d, const char *id, char *path, size_t len,
			   struct fk_err *err);

int daemon_snapshot_spawn(struct daemon *d, const char *tag, json_t *body, json_t **result,
			  struct fk_err *err); /* {"vms":[...]} */
int daemon_snapshot_list(struct daemon *d, json_t **snapshots, struct fk_err *err);
int daemon_snapshot_get(struct daemon *d, const char *tag, json_t **snapshot, struct fk_err *err);
int daemon_snapshot_delete(struct daemon *d, const char *tag, bool cascade, json_t **removed,
			   struct fk_err *err);

int daemon_tree(struct daemon *d, json_t **tree, struct fk_err *err); /* {"tree":[...]} */

/*
 * Root file system images in the cache ($FORKD_IMAGE_CACHE, else
 * /var/cache/forkd/rootfs: where forkd-vmm --image looks), each with the VMs
 * and snapshots of the registry made from it. Building stays with
 * `forkd image build` (images/rootfs.sh: minutes of debootstrap).
 * get and delete: -EINVAL for a name that is not an image name (so never a
 * path), -ENOENT for no such image; delete: -EBUSY naming the live VMs and
 * the snapshots (not failed) made from it.
 */
int daemon_image_list(struct daemon *d, json_t **images, struct fk_err *err); /* {"images":[]} */
int daemon_image_get(struct daemon *d, const char *name, json_t **image, struct fk_err *err);
int daemon_image_delete(struct daemon *d, const char *name, json_t **removed, struct fk_err *err);

/* [a-z0-9][a-z0-9._-]{0,62}, as `forkd image build` accepts: also a safe directory name. */
static inline bool daemon_image_name_ok(const char *s)
{
	size_t len = 0;

	if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return false;
	for (; s[len]; len++)
		if (len >= 63 ||
		    !((s[len] >= 'a' && s[len] <= 'z') || (s[len] >= '0' && s[len] <= '9') ||
		      s[len] == '.' || s[len] == '_' || s[len] == '-'))
			return false;
	return true;
}
int daemon_health(struct daemon *d, json_t **health, struct fk_err *err);

/*
 * Timings for /metrics, reported by the operations as they complete (the
 * REST layer owns the histograms and passes this sink to daemon_open's
 * caller via daemon_set_metrics).
 */
enum daemon_metric {
	DAEMON_METRIC_BRANCH_PAUSE, /* the source's pause_us of a branch */
	DAEMON_METRIC_SPAWN,	    /* a spawn request, start to every VM running */
	DAEMON_METRIC_RESTORE,	    /* one restored VM, exec to its control socket answering */
	DAEMON_METRIC_EXEC,	    /* reported by the REST layer itself */
	DAEMON_METRIC_COUNT,
};
typedef void (*daemon_metric_fn)(void *opaque, enum daemon_metric m, double seconds);
void daemon_set_metrics(struct daemon *d, daemon_metric_fn fn, void *opaque);

/*
 * Work a request leaves until its answer is sent (a BRANCH's zygote release): between
 * daemon_defer_begin and daemon_defer_end on one thread it waits for daemon_defer_end; without
 * them it starts at once. The API calls them around each request (libmicrohttpd's completion
 * callback runs on the connection's thread once the answer is out).
 */
void daemon_defer_begin(void);
void daemon_defer_end(void);

#endif
