/* SPDX-License-Identifier: MIT */
/*
 * Host-side /30 networks for VM network namespaces: slot S of 10.200.0.0/16
 * is 10.200.0.0 + 4*S; the root namespace's veth end is .1 of it, the VM
 * namespace's end .2 (the host reaches the guest there, docs/networking.md).
 *
 * Slots are files DIR/slot-S created with O_EXCL and holding the owner's
 * namespace name, all under flock(DIR/lock), so forkd-vmm processes, BRANCH
 * children and the daemon can allocate at once without a shared server. A
 * slot is freed only by the name that holds it; a slot whose namespace no
 * longer exists (/run/netns/NAME) is stale and reclaimed by the next sweep.
 */
#ifndef FORKD_NET_SLOTS_H
#define FORKD_NET_SLOTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define FK_SLOTS_MAX 16384 /* /30 networks in 10.200.0.0/16 */

struct fk_slots {
	const char *dir;   /* created (0700) if missing */
	unsigned nr_slots; /* 1..FK_SLOTS_MAX; tests use a few to reach exhaustion */
};

/* Host-order IPv4 addresses of slot S: the network, the root end (.1) and the namespace end (.2).
 */
uint32_t fk_slot_net(unsigned slot);
uint32_t fk_slot_host_addr(unsigned slot);
uint32_t fk_slot_ns_addr(unsigned slot);
/* Dotted quad of a host-order address into buf (at least 16 bytes). */
void fk_ipv4_str(uint32_t addr, char *buf);

/* Creates the directory (0700, with its parents) if missing. */
int fk_slots_prepare(const struct fk_slots *slots, struct fk_err *err);

/* Takes DIR/lock (flock): returns the fd, whose close releases it, or -errno. */
int fk_slots_lock(const struct fk_slots *slots, struct fk_err *err);

/* Takes the lowest free slot for `name`. -ENOSPC "slot space exhausted" when none is left. */
int fk_slot_alloc(const struct fk_slots *slots, const char *name, unsigned *slot,
		  struct fk_err *err);
/* Frees slot S if `name` holds it (0), -ENOENT if free, -EPERM if another name holds it. */
int fk_slot_free(const struct fk_slots *slots, unsigned slot, const char *name, struct fk_err *err);
/* The name holding slot S into name (size bytes): 0, or -ENOENT if the slot is free. */
int fk_slot_owner(const struct fk_slots *slots, unsigned slot, char *name, size_t size);

/*
 * Frees every slot whose holder `alive(name, ctx)` says is gone; returns how
 * many were freed or -errno.
 */
int fk_slot_sweep(const struct fk_slots *slots, bool (*alive)(const char *name, void *ctx),
		  void *ctx, struct fk_err *err);

#endif
