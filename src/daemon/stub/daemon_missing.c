/* SPDX-License-Identifier: MIT */
/*
 * Stand-ins for the daemon's operations (daemon.h) while src/daemon/daemon.c
 * is not in the tree: the Makefile builds this file only then, so that
 * `forkd serve` links and says what is missing. Delete it with daemon.c's
 * arrival (the Makefile then ignores it anyway).
 */
#include <errno.h>

#include "daemon/daemon.h"

#define MISSING(err)                                                                               \
	fk_fail(err, ENOSYS, "%s: the daemon (src/daemon/daemon.c) is not built", __func__)

int daemon_open(const struct daemon_config *cfg, struct daemon **out, int *adopted,
		struct fk_err *err)
{
	(void)cfg;
	(void)adopted;
	*out = NULL;
	return MISSING(err);
}

void daemon_close(struct daemon *d)
{
	(void)d;
}

int daemon_vm_create(struct daemon *d, json_t *body, json_t **vm, struct fk_err *err)
{
	(void)d;
	(void)body;
	(void)vm;
	return MISSING(err);
}

int daemon_vm_list(struct daemon *d, json_t **vms, struct fk_err *err)
{
	(void)d;
	(void)vms;
	return MISSING(err);
}

int daemon_vm_get(struct daemon *d, const char *id, json_t **vm, struct fk_err *err)
{
	(void)d;
	(void)id;
	(void)vm;
	return MISSING(err);
}

int daemon_vm_delete(struct daemon *d, const char *id, bool cascade, json_t **removed,
		     struct fk_err *err)
{
	(void)d;
	(void)id;
	(void)cascade;
	(void)removed;
	return MISSING(err);
}

int daemon_vm_branch(struct daemon *d, const char *id, json_t *body, json_t **result,
		     struct fk_err *err)
{
	(void)d;
	(void)id;
	(void)body;
	(void)result;
	return MISSING(err);
}

int daemon_vm_snapshot(struct daemon *d, const char *id, json_t *body, json_t **snapshot,
		       struct fk_err *err)
{
	(void)d;
	(void)id;
	(void)body;
	(void)snapshot;
	return MISSING(err);
}

int daemon_vm_agent_socket(struct daemon *d, const char *id, char *path, size_t len,
			   struct fk_err *err)
{
	(void)d;
	(void)id;
	(void)path;
	(void)len;
	return MISSING(err);
}

int daemon_snapshot_spawn(struct daemon *d, const char *tag, json_t *body, json_t **result,
			  struct fk_err *err)
{
	(void)d;
	(void)tag;
	(void)body;
	(void)result;
	return MISSING(err);
}

int daemon_snapshot_list(struct daemon *d, json_t **snapshots, struct fk_err *err)
{
	(void)d;
	(void)snapshots;
	return MISSING(err);
}

int daemon_snapshot_get(struct daemon *d, const char *tag, json_t **snapshot, struct fk_err *err)
{
	(void)d;
	(void)tag;
	(void)snapshot;
	return MISSING(err);
}

int daemon_snapshot_delete(struct daemon *d, const char *tag, bool cascade, json_t **removed,
			   struct fk_err *err)
{
	(void)d;
	(void)tag;
	(void)cascade;
	(void)removed;
	return MISSING(err);
}

int daemon_tree(struct daemon *d, json_t **tree, struct fk_err *err)
{
	(void)d;
	(void)tree;
	return MISSING(err);
}

int daemon_health(struct daemon *d, json_t **health, struct fk_err *err)
{
	(void)d;
	(void)health;
	return MISSING(err);
}

void daemon_set_metrics(struct daemon *d, daemon_metric_fn fn, void *opaque)
{
	(void)d;
	(void)fn;
	(void)opaque;
}
