/* SPDX-License-Identifier: MIT */
#include "branch/recollapse.h"

#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

#include "core/guest_mem.h"
#include "jail/seccomp.h"

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; older headers lack it */
#endif

#define HUGE_2M		(2ULL << 20)
#define CHUNKS_PER_REST 16
#define REST_NS		(200 * 1000)

static void *recollapse_thread(void *arg)
{
	struct recollapse *rc = arg;
	const struct timespec rest = {.tv_nsec = REST_NS};
	uint64_t n = 0;
	struct fk_err err;

	/* Refused: it still runs, under the process filter it inherited. */
	if (fk_seccomp_enter_role(FK_SECCOMP_ROLE_HELPER, &err) < 0)
		fprintf(stderr, "forkd-vmm: THP re-collapse: %s\n", err.msg);

	for (int r = 0; r < rc->mem->nr_regions; r++) {
		const struct guest_mem_region *reg = &rc->mem->regions[r];
		for (uint64_t off = 0; off + HUGE_2M <= reg->size; off += HUGE_2M) {
			if (atomic_load(&rc->stop))
				goto out;
			/* Fails harmlessly where a range is already huge or cannot be. */
			if (madvise(reg->hva + off, HUGE_2M, MADV_COLLAPSE) == 0)
				rc->collapsed++;
			/* Small steps: the guest keeps most of the host CPU. */
			if (++n % CHUNKS_PER_REST == 0)
				nanosleep(&rest, NULL);
		}
	}
out:
	return NULL;
}

void recollapse_start(struct recollapse *rc, const struct guest_mem *mem)
{
	sigset_t all, old;

	recollapse_stop(rc);
	rc->mem = mem;
	rc->collapsed = 0;
	atomic_store(&rc->stop, false);
	/* No signals on this thread: the VMM's signals belong to the loop and vCPUs. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc->running = pthread_create(&rc->thread, NULL, recollapse_thread, rc) == 0;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void recollapse_stop(struct recollapse *rc)
{
	if (!rc->running)
		return;
	atomic_store(&rc->stop, true);
	pthread_join(rc->thread, NULL);
	rc->running = false;
}
