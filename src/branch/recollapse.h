/* SPDX-License-Identifier: MIT */
/*
 * Re-collapsing guest RAM into huge pages after a BRANCH.
 *
 * While a zygote shares the source's RAM, every page the source writes is
 * copied, and the kernel splits the copy-on-write huge page into 4 KiB
 * mappings. Once the last zygote is gone nothing is shared any more, but the
 * mappings stay split: the next fork(2) copies up to 512 times more
 * page-table entries, and KVM zaps more shadow entries, so the BRANCH pause
 * grows with every branch. A background thread puts the huge mappings back
 * with MADV_COLLAPSE, 2 MiB at a time while the guest runs, and stops at once
 * when the next BRANCH begins.
 */
#ifndef FORKD_BRANCH_RECOLLAPSE_H
#define FORKD_BRANCH_RECOLLAPSE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct guest_mem;

struct recollapse {
	pthread_t thread;
	bool running;
	atomic_bool stop;
	const struct guest_mem *mem;
	uint64_t collapsed; /* 2 MiB ranges collapsed by the last pass */
};

void recollapse_start(struct recollapse *rc, const struct guest_mem *mem);
/* Stops a pass in progress and waits for its thread (a few ms at most). */
void recollapse_stop(struct recollapse *rc);

#endif
