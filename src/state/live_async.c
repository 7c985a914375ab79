/* SPDX-License-Identifier: MIT */
/*
 * Engine "uffd-wp-async": an iterative pre-copy live snapshot.
 *
 * UFFD_FEATURE_WP_ASYNC resolves a write to a write-protected page in the
 * kernel (it only clears the page's uffd-wp bit), so no one can copy a page
 * before its first write: it cannot give the point-in-time copy of a
 * moment that has passed. What it gives is cheap dirty tracking, read and
 * re-armed in one PAGEMAP_SCAN. So:
 *
 *   1. arm: one userfaultfd, WP_ASYNC, every guest region registered and
 *      write-protected (the VM runs);
 *   2. pass 0: every populated page copied to a staging file (the VM runs);
 *   3. rounds: PAGEMAP_SCAN collects the pages written since they were last
 *      protected and protects them again, and they are copied again; until
 *      few are left, or the rounds stop converging, or LIVE_ASYNC_MAX_ROUNDS;
 *   4. the final pause, on the event-loop thread (so no device request runs
 *      meanwhile): vCPUs parked, the last scan and copy, vCPU and device
 *      state captured, resume;
 *   5. the standard writer (snap_writer_commit: temp dir, XXH3 chunk hashes,
 *      rename) writes the snapshot from the staging file, the VM running.
 *
 * Steps 1-3 and 5 run on a thread; step 4 is one event-loop handler. The
 * snapshot is the VM at step 4, not at the request.
 */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "state/live_async.h"
#include "state/snapshot_format.h"
#include "state/vm_snapshot.h"
#include "state/vm_state.h"

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

/* Stop the rounds when a round finds at most this many written pages (16 MiB). */
#define LIVE_ASYNC_CONVERGED_PAGES 4096
/* A guest that writes faster than we copy never converges: bounded rounds. */
#define LIVE_ASYNC_MAX_ROUNDS 8
/* Page ranges one PAGEMAP_SCAN returns; the walk resumes where a full vector stopped. */
#define SCAN_VEC 1024
/* Bytes one pwrite copies at most: a huge range is copied in steps, cancellable. */
#define COPY_STEP (8u << 20)
/*
 * In the final pause, written pages are copied to memory (a memcpy, not a
 * write to the staging file) and written out after the resume; past this
 * many bytes they go to the file directly, still inside the pause.
 */
#define HOLD_MAX (256ull << 20)

enum live_async_state { LA_WRITING, LA_READY, LA_FAILED };

static const char *const state_names[] = {"writing", "ready", "failed"};

/* One snapshot job per VM; the last one is kept for snapshot-status. */
struct live_async {
	pthread_mutex_t lock;
	pthread_cond_t changed;
	/* Guarded by lock: what snapshot-status reports. */
	enum live_async_state state;
	char path[PATH_MAX];
	char error[1024];
	bool thread_joinable;
	/* The final pause: requested by the thread, done on the event loop. */
	bool step_requested, step_done;
	int step_ret;
	struct fk_err step_err;

	struct vm *vm;
	pthread_t thread;
	atomic_bool cancel;
	int step_fd; /* eventfd, a device handler of the event loop (served while waiting too) */
	int done_fd; /* eventfd, written when the job ends */
	bool step_registered;

	/* The job's resources, owned by the thread once it runs. */
	int uffd;
	int pagemap_fd;
	int staging_fd;
	uint64_t file_off[GUEST_MEM_MAX_REGIONS]; /* region i in the memory file */
	/* The final pause's pages, held in memory until the resume (HOLD_MAX). */
	bool hold;
	uint8_t *held;
	uint64_t held_len, held_cap;
	struct held_range {
		uint64_t off, len;
	} * held_ranges;
	size_t nr_held, cap_held;
	pid_t owner; /* the process whose RAM this is: a fork (zygote) must not join its thread */
	struct snap_writer w;
	struct page_region *vec;

	/* Numbers (written by the thread or the step, read after done). */
	uint64_t start_us, arm_us, precopy_pages, round_pages[LIVE_ASYNC_MAX_ROUNDS];
	int rounds;
	uint64_t final_dirty_pages, pause_us, park_us, capture_us, final_copy_us;
	uint64_t write_us, hash_us, complete_us, copied_bytes;
	uint32_t inflight;
};

static int open_uffd(struct fk_err *err)
{
	/*
	 * WP_ASYNC never delivers a fault to user space (the kernel resolves the
	 * write itself), so a user-mode-only userfaultfd serves KVM's kernel-mode
	 * writes as well and needs no privilege.
	 */
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

	if (fd < 0)
		return fk_fail_errno(err, errno, "engine %s: userfaultfd(2)", LIVE_ASYNC_ENGINE);
	return fd;
}

/*
 * Test hook: FORKD_FAULT_INJECT=no-wp-async answers as a kernel without
 * WP_ASYNC would (the nested test host's 6.1), so the refusal is tested
 * natively too (itest_uffd_wp_async).
 */
static bool no_wp_async_injected(void)
{
	const char *v = getenv("FORKD_FAULT_INJECT");

	return v && strcmp(v, "no-wp-async") == 0;
}

int live_async_supported(struct fk_err *err)
{
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	struct pm_scan_arg arg;
	int fd, pm, ret = 0;

	fd = open_uffd(err);
	if (fd < 0)
		return fd;
	/* Asked for nothing, UFFDIO_API answers with every feature the kernel has. */
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		ret = fk_fail_errno(err, errno, "engine %s: UFFDIO_API", LIVE_ASYNC_ENGINE);
	if (ret == 0 && no_wp_async_injected())
		api.features &= ~(uint64_t)UFFD_FEATURE_WP_ASYNC;
	if (ret == 0 && !(api.features & UFFD_FEATURE_WP_ASYNC))
		ret = fk_fail(err, EOPNOTSUPP,
			      "engine %s: this kernel's userfaultfd has no UFFD_FEATURE_WP_ASYNC "
			      "(features 0x%llx; it needs Linux 6.7 or later): use engine fork",
			      LIVE_ASYNC_ENGINE, (unsigned long long)api.features);
	close(fd);
	if (ret < 0)
		return ret;
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0)
		return fk_fail_errno(err, errno, "engine %s: /proc/self/pagemap",
				     LIVE_ASYNC_ENGINE);
	/* An empty range: 0 where PAGEMAP_SCAN exists, ENOTTY where it does not. */
	memset(&arg, 0, sizeof(arg));
	arg.size = sizeof(arg);
	if (ioctl(pm, PAGEMAP_SCAN, &arg) < 0)
		ret = fk_fail(err, EOPNOTSUPP,
			      "engine %s: this kernel has no PAGEMAP_SCAN on /proc/self/pagemap "
			      "(%s; it needs Linux 6.7 or later): use engine fork",
			      LIVE_ASYNC_ENGINE, strerror(errno));
	close(pm);
	return ret;
}

static void job_fail(struct live_async *la, const struct fk_err *err)
{
	pthread_mutex_lock(&la->lock);
	la->state = LA_FAILED;
	snprintf(la->error, sizeof(la->error), "%s", err->msg);
	pthread_mutex_unlock(&la->lock);
}

static bool grow_ranges(struct live_async *la)
{
	size_t cap = la->cap_held ? 2 * la->cap_held : 1024;
	struct held_range *n = realloc(la->held_ranges, cap * sizeof(*n));

	if (!n)
		return false;
	la->held_ranges = n;
	la->cap_held = cap;
	return true;
}

/* Room for the final pause's pages: twice the last round's, at most HOLD_MAX. */
static void prepare_hold(struct live_async *la)
{
	uint64_t last = la->rounds ? la->round_pages[la->rounds - 1] : 0;
	uint64_t want = 2 * last * SNAP_PAGE_SIZE + (4ull << 20);

	want = want > HOLD_MAX ? HOLD_MAX : want;
	if (want > la->held_cap) {
		uint8_t *b = realloc(la->held, want);

		if (b) {
			la->held = b;
			la->held_cap = want;
		}
	}
	la->held_len = 0;
	la->nr_held = 0;
	la->hold = la->held != NULL;
}

static int pwrite_all(int fd, const uint8_t *p, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			return -1;
		}
		p += n;
		off += (uint64_t)n;
		len -= (uint64_t)n;
	}
	return 0;
}

/* After the resume: the held pages to the staging file. */
static int flush_held(struct live_async *la, struct fk_err *err)
{
	uint64_t pos = 0;

	la->hold = false;
	for (size_t i = 0; i < la->nr_held; i++) {
		const struct held_range *h = &la->held_ranges[i];

		if (pwrite_all(la->staging_fd, la->held + pos, h->len, h->off) < 0)
			return fk_fail_errno(err, errno,
					     "staging copy of guest memory: write of %llu bytes at "
					     "offset %llu",
					     (unsigned long long)h->len,
					     (unsigned long long)h->off);
		pos += h->len;
	}
	la->nr_held = 0;
	la->held_len = 0;
	return 0;
}

/* Copies [hva, hva + len) of region r to the staging file (or to memory: hold). */
static int copy_range(struct live_async *la, int r, uint64_t hva, uint64_t len, struct fk_err *err)
{
	const struct guest_mem_region *reg = &la->vm->mem.regions[r];
	uint64_t off = la->file_off[r] + (hva - (uint64_t)(uintptr_t)reg->hva);

	if (la->hold && la->held_len + len <= la->held_cap &&
	    (la->nr_held < la->cap_held || grow_ranges(la))) {
		memcpy(la->held + la->held_len, (const void *)(uintptr_t)hva, len);
		la->held_ranges[la->nr_held++] = (struct held_range){.off = off, .len = len};
		la->held_len += len;
		la->copied_bytes += len;
		return 0;
	}
	while (len) {
		uint64_t n = len > COPY_STEP ? COPY_STEP : len;

		if (pwrite_all(la->staging_fd, (const uint8_t *)(uintptr_t)hva, n, off) < 0)
			return fk_fail_errno(err, errno,
					     "staging copy of guest memory: write of %llu bytes at "
					     "offset %llu",
					     (unsigned long long)n, (unsigned long long)off);
		hva += n;
		off += n;
		len -= n;
		la->copied_bytes += n;
		if (atomic_load(&la->cancel))
			return fk_fail(err, ECANCELED,
				       "the VM exited before the snapshot was "
				       "complete");
	}
	return 0;
}

/*
 * One walk over every region: PAGEMAP_SCAN with these flags and categories,
 * each range it returns copied. *pages: pages copied.
 */
static int scan_copy(struct live_async *la, uint64_t flags, uint64_t mask, uint64_t anyof,
		     uint64_t *pages, struct fk_err *err)
{
	*pages = 0;
	for (int r = 0; r < la->vm->mem.nr_regions; r++) {
		const struct guest_mem_region *reg = &la->vm->mem.regions[r];
		uint64_t start = (uint64_t)(uintptr_t)reg->hva, end = start + reg->size;

		while (start < end) {
			struct pm_scan_arg arg = {.size = sizeof(arg),
						  .flags = flags,
						  .start = start,
						  .end = end,
						  .vec = (uint64_t)(uintptr_t)la->vec,
						  .vec_len = SCAN_VEC,
						  .category_mask = mask,
						  .category_anyof_mask = anyof,
						  .return_mask = mask | anyof};
			int n = ioctl(la->pagemap_fd, PAGEMAP_SCAN, &arg);

			if (n < 0)
				return fk_fail_errno(
				    err, errno,
				    "PAGEMAP_SCAN of region %d (guest 0x%llx, %llu "
				    "MiB)%s",
				    r, (unsigned long long)reg->gpa,
				    (unsigned long long)(reg->size >> 20),
				    errno == EPERM ? ": the region is no longer "
						     "registered (remapped?)"
						   : "");
			for (int i = 0; i < n; i++) {
				uint64_t len = la->vec[i].end - la->vec[i].start;
				int ret = copy_range(la, r, la->vec[i].start, len, err);

				if (ret < 0)
					return ret;
				*pages += len / SNAP_PAGE_SIZE;
			}
			if (arg.walk_end <= start)
				return fk_fail(err, EIO,
					       "PAGEMAP_SCAN of region %d did not advance", r);
			start = arg.walk_end;
		}
	}
	return 0;
}

/* Written pages since the last protection: collected, protected again, copied. */
static int collect_written(struct live_async *la, uint64_t *pages, struct fk_err *err)
{
	return scan_copy(la, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, PAGE_IS_WRITTEN, 0, pages,
			 err);
}

/* Registers and write-protects every region (not only the first: RAM above 4 GiB too). */
static int arm(struct live_async *la, struct fk_err *err)
{
	struct uffdio_api api = {
	    .api = UFFD_API, .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC};
	const struct guest_mem *mem = &la->vm->mem;

	la->uffd = open_uffd(err);
	if (la->uffd < 0)
		return la->uffd;
	if (ioctl(la->uffd, UFFDIO_API, &api) < 0)
		return fk_fail_errno(err, errno, "UFFDIO_API with WP_ASYNC");
	for (int r = 0; r < mem->nr_regions; r++) {
		struct uffdio_register reg = {
		    .range = {.start = (uint64_t)(uintptr_t)mem->regions[r].hva,
			      .len = mem->regions[r].size},
		    .mode = UFFDIO_REGISTER_MODE_WP};
		struct uffdio_writeprotect wp = {.range = reg.range,
						 .mode = UFFDIO_WRITEPROTECT_MODE_WP};

		if (ioctl(la->uffd, UFFDIO_REGISTER, &reg) < 0)
			return fk_fail_errno(err, errno,
					     "UFFDIO_REGISTER (write-protect) of region %d (guest "
					     "0x%llx, %llu MiB)%s",
					     r, (unsigned long long)mem->regions[r].gpa,
					     (unsigned long long)(mem->regions[r].size >> 20),
					     errno == EBUSY ? ": already registered (a lazily "
							      "restored VM's RAM?)"
							    : "");
		if (ioctl(la->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
			return fk_fail_errno(err, errno, "UFFDIO_WRITEPROTECT of region %d", r);
	}
	return 0;
}

/* Step 4, on the event-loop thread: the final pause. */
static int final_step(struct live_async *la, struct fk_err *err)
{
	struct vm *vm = la->vm;
	bool paused_here = false;
	uint64_t t0 = monotonic_us(), t1, t2, pages = 0;
	int ret;

	/* A VM someone else paused is at an instant already: capture it as it is. */
	if (!vm_is_paused(vm)) {
		ret = vm_pause(vm, err);
		if (ret < 0)
			return ret;
		paused_here = true;
		la->park_us = vm->last_pause_us;
	}
	t1 = monotonic_us();
	ret = collect_written(la, &pages, err);
	if (ret < 0)
		fk_wrap(err, "final copy");
	t2 = monotonic_us();
	if (!ret)
		ret = vm_state_save(vm, &la->w, err);
	if (!ret)
		la->inflight = vm_snapshot_inflight(vm);
	if (paused_here) {
		struct fk_err ignored;

		vm_resume(vm, &ignored);
	}
	la->final_dirty_pages = pages;
	la->final_copy_us = t2 - t1;
	la->capture_us = monotonic_us() - t2;
	la->pause_us = monotonic_us() - t0;
	return ret;
}

static void on_step(void *opaque, uint32_t events)
{
	struct live_async *la = opaque;
	uint64_t v;
	int ret;

	(void)events;
	if (read(la->step_fd, &v, sizeof(v)) != sizeof(v))
		return;
	pthread_mutex_lock(&la->lock);
	if (!la->step_requested || la->step_done) {
		pthread_mutex_unlock(&la->lock);
		return;
	}
	pthread_mutex_unlock(&la->lock);
	fk_err_clear(&la->step_err);
	ret = final_step(la, &la->step_err);
	pthread_mutex_lock(&la->lock);
	la->step_ret = ret;
	la->step_done = true;
	pthread_cond_broadcast(&la->changed);
	pthread_mutex_unlock(&la->lock);
}

/* Asks the event loop for the final pause and waits for it (or for the VM's end). */
static int request_final_step(struct live_async *la, struct fk_err *err)
{
	uint64_t one = 1;
	bool done;
	int ret;

	pthread_mutex_lock(&la->lock);
	la->step_requested = true;
	pthread_mutex_unlock(&la->lock);
	if (write(la->step_fd, &one, sizeof(one)) != sizeof(one))
		return fk_fail_errno(err, errno, "final pause: eventfd");
	pthread_mutex_lock(&la->lock);
	while (!la->step_done && !atomic_load(&la->cancel))
		pthread_cond_wait(&la->changed, &la->lock);
	done = la->step_done;
	ret = la->step_ret;
	pthread_mutex_unlock(&la->lock);
	if (!done)
		return fk_fail(err, ECANCELED, "the VM exited before the snapshot was complete");
	if (ret < 0) {
		*err = la->step_err;
		return fk_wrap(err, "final pause");
	}
	return 0;
}

/* Step 5: the standard writer, reading the staging file. */
static int commit(struct live_async *la, struct fk_err *err)
{
	struct snap_mem_region regions[GUEST_MEM_MAX_REGIONS];
	struct snap_memory_source src = {.regions = regions,
					 .nr_regions = (uint32_t)la->vm->mem.nr_regions};
	uint64_t total = la->vm->mem.total_size, t0 = monotonic_us();
	void *map;
	int ret;

	map = mmap(NULL, total, PROT_READ, MAP_SHARED, la->staging_fd, 0);
	if (map == MAP_FAILED)
		return fk_fail_errno(err, errno, "map the staging copy");
	for (int r = 0; r < la->vm->mem.nr_regions; r++)
		regions[r] = (struct snap_mem_region){.gpa = la->vm->mem.regions[r].gpa,
						      .size = la->vm->mem.regions[r].size,
						      .host = (uint8_t *)map + la->file_off[r]};
	ret = snap_writer_commit(&la->w, la->path, &src, err);
	munmap(map, total);
	la->hash_us = la->w.stats.hash_us;
	la->write_us = monotonic_us() - t0;
	return ret;
}

static int run_job(struct live_async *la, struct fk_err *err)
{
	uint64_t pages;
	int ret;

	/* Pass 0: what is populated (a page never touched stays a hole, and is tracked). */
	ret = scan_copy(la, 0, 0, PAGE_IS_PRESENT | PAGE_IS_SWAPPED, &la->precopy_pages, err);
	if (ret < 0)
		return fk_wrap(err, "pre-copy");
	while (la->rounds < LIVE_ASYNC_MAX_ROUNDS) {
		ret = collect_written(la, &pages, err);
		if (ret < 0)
			return fk_wrap(err, "pre-copy round %d", la->rounds + 1);
		la->round_pages[la->rounds++] = pages;
		if (pages <= LIVE_ASYNC_CONVERGED_PAGES)
			break;
		/* Not shrinking: the guest writes as fast as we copy; more rounds cost more. */
		if (la->rounds > 1 && pages >= la->round_pages[la->rounds - 2])
			break;
	}
	prepare_hold(la);
	ret = request_final_step(la, err);
	/* Closing the userfaultfd unregisters every region and drops the protection. */
	close(la->uffd);
	la->uffd = -1;
	if (ret == 0)
		ret = flush_held(la, err);
	if (ret < 0)
		return ret;
	return commit(la, err);
}

static void *job_thread(void *arg)
{
	struct live_async *la = arg;
	struct fk_err err = {0};
	uint64_t one = 1;
	int ret = run_job(la, &err);

	if (la->uffd >= 0) {
		close(la->uffd);
		la->uffd = -1;
	}
	close(la->pagemap_fd);
	la->pagemap_fd = -1;
	/* O_TMPFILE: the staging copy has no name, closing it frees it, even on failure. */
	close(la->staging_fd);
	la->staging_fd = -1;
	snap_writer_free(&la->w);
	/* Up to HOLD_MAX: not kept between snapshots. */
	free(la->held);
	la->held = NULL;
	la->held_cap = la->held_len = 0;
	la->hold = false;
	la->complete_us = monotonic_us() - la->start_us;
	if (ret < 0) {
		fk_wrap(&err, "snapshot %s (engine %s)", la->path, LIVE_ASYNC_ENGINE);
		job_fail(la, &err);
	} else {
		pthread_mutex_lock(&la->lock);
		la->state = LA_READY;
		pthread_mutex_unlock(&la->lock);
	}
	if (write(la->done_fd, &one, sizeof(one)) != sizeof(one))
		fprintf(stderr, "forkd-vmm: snapshot %s: done eventfd: %s\n", la->path,
			strerror(errno));
	return NULL;
}

static struct live_async *get_or_create(struct vm *vm, struct fk_err *err)
{
	struct live_async *la = vm->live_async;

	if (la)
		return la;
	la = calloc(1, sizeof(*la));
	if (!la) {
		fk_fail(err, ENOMEM, "engine %s: out of memory", LIVE_ASYNC_ENGINE);
		return NULL;
	}
	pthread_mutex_init(&la->lock, NULL);
	pthread_cond_init(&la->changed, NULL);
	la->vm = vm;
	la->owner = getpid();
	la->uffd = la->pagemap_fd = la->staging_fd = -1;
	la->step_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	la->done_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (la->step_fd < 0 || la->done_fd < 0) {
		fk_fail_errno(err, errno, "engine %s: eventfd", LIVE_ASYNC_ENGINE);
		goto fail;
	}
	/* A device handler: it also runs while a control request waits (wait true). */
	if (event_loop_add_device(&vm->loop, la->step_fd, EPOLLIN, on_step, la, err) < 0)
		goto fail;
	la->step_registered = true;
	vm->live_async = la;
	return la;
fail:
	if (la->step_fd >= 0)
		close(la->step_fd);
	if (la->done_fd >= 0)
		close(la->done_fd);
	free(la);
	return NULL;
}

/* The staging copy: a nameless file next to the snapshot, so ENOSPC shows while copying. */
static int open_staging(struct live_async *la, struct fk_err *err)
{
	char buf[PATH_MAX], parent[PATH_MAX];
	struct stat st;

	snprintf(buf, sizeof(buf), "%s", la->path);
	snprintf(parent, sizeof(parent), "%s", dirname(buf));
	if (lstat(la->path, &st) == 0)
		return fk_fail(err, EEXIST, "%s exists: expected a new snapshot path", la->path);
	la->staging_fd = open(parent, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (la->staging_fd < 0)
		return fk_fail_errno(err, errno,
				     "staging copy in %s (a directory on a filesystem with "
				     "O_TMPFILE expected)",
				     parent);
	if (ftruncate(la->staging_fd, (off_t)la->vm->mem.total_size) < 0)
		return fk_fail_errno(err, errno, "staging copy in %s: size it", parent);
	return 0;
}

static int check_vm(struct vm *vm, struct fk_err *err)
{
	if (vm_is_paused(vm))
		return fk_fail(err, EINVAL,
			       "engine %s: the VM is paused; a live snapshot is of a running VM "
			       "(expected mode stop)",
			       LIVE_ASYNC_ENGINE);
	for (int i = 0; i < vm->nr_disks; i++)
		if (!vm->cfg->disks[i].readonly)
			return fk_fail(err, EOPNOTSUPP,
				       "engine %s: disk %d (%s) is writable, and its image would "
				       "be copied after the VM resumed, not at the snapshot's "
				       "instant: use engine fork",
				       LIVE_ASYNC_ENGINE, i, vm->cfg->disks[i].path);
	if (vm->uffd)
		return fk_fail(err, EOPNOTSUPP,
			       "engine %s: this VM's RAM is served by a userfaultfd handler "
			       "(--restore-mode uffd)",
			       LIVE_ASYNC_ENGINE);
	return 0;
}

static void put_numbers(struct live_async *la, json_t *reply)
{
	json_t *rounds = json_array();

	for (int i = 0; i < la->rounds; i++)
		json_array_append_new(rounds, json_integer((json_int_t)la->round_pages[i]));
	json_object_set_new(reply, "engine", json_string(LIVE_ASYNC_ENGINE));
	json_object_set_new(reply, "arm_us", json_integer((json_int_t)la->arm_us));
	json_object_set_new(reply, "precopy_pages", json_integer((json_int_t)la->precopy_pages));
	json_object_set_new(reply, "rounds", json_integer(la->rounds));
	json_object_set_new(reply, "round_pages", rounds);
	json_object_set_new(reply, "final_dirty_pages",
			    json_integer((json_int_t)la->final_dirty_pages));
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)la->pause_us));
	json_object_set_new(reply, "park_us", json_integer((json_int_t)la->park_us));
	json_object_set_new(reply, "final_copy_us", json_integer((json_int_t)la->final_copy_us));
	json_object_set_new(reply, "capture_us", json_integer((json_int_t)la->capture_us));
	json_object_set_new(reply, "write_us", json_integer((json_int_t)la->write_us));
	json_object_set_new(reply, "hash_us", json_integer((json_int_t)la->hash_us));
	json_object_set_new(reply, "complete_us", json_integer((json_int_t)la->complete_us));
	json_object_set_new(reply, "copied_bytes", json_integer((json_int_t)la->copied_bytes));
	json_object_set_new(reply, "mem_bytes", json_integer((json_int_t)la->vm->mem.total_size));
	json_object_set_new(reply, "inflight", json_integer(la->inflight));
}

/* The previous job's thread, if it ended: joined, so a new one may start. */
static void reap(struct live_async *la)
{
	pthread_mutex_lock(&la->lock);
	if (la->thread_joinable && la->state != LA_WRITING) {
		pthread_mutex_unlock(&la->lock);
		pthread_join(la->thread, NULL);
		pthread_mutex_lock(&la->lock);
		la->thread_joinable = false;
	}
	pthread_mutex_unlock(&la->lock);
}

int live_async_snapshot(struct vm *vm, const char *path, bool wait, json_t *reply,
			struct fk_err *err)
{
	struct live_async *la;
	uint64_t v, t0;
	int ret;

	ret = check_vm(vm, err);
	if (ret < 0)
		return ret;
	ret = live_async_supported(err);
	if (ret < 0)
		return ret;
	if (strlen(path) >= PATH_MAX - 32)
		return fk_fail(err, ENAMETOOLONG, "path %.64s...: too long", path);
	la = get_or_create(vm, err);
	if (!la)
		return -err->code;
	reap(la);
	pthread_mutex_lock(&la->lock);
	if (la->thread_joinable) {
		ret = fk_fail(err, EBUSY,
			      "engine %s: a snapshot of this VM is being written to %s (status "
			      "writing); one at a time: wait for it (snapshot-status)",
			      LIVE_ASYNC_ENGINE, la->path);
		pthread_mutex_unlock(&la->lock);
		return ret;
	}
	/* A new job: the last one's record goes. */
	la->state = LA_WRITING;
	la->error[0] = '\0';
	snprintf(la->path, sizeof(la->path), "%s", path);
	la->step_requested = la->step_done = false;
	pthread_mutex_unlock(&la->lock);
	memset(la->round_pages, 0, sizeof(la->round_pages));
	la->rounds = 0;
	la->precopy_pages = la->final_dirty_pages = la->copied_bytes = 0;
	la->pause_us = la->park_us = la->capture_us = la->final_copy_us = 0;
	la->write_us = la->hash_us = la->complete_us = la->inflight = 0;
	atomic_store(&la->cancel, false);
	while (read(la->done_fd, &v, sizeof(v)) == sizeof(v))
		;

	t0 = la->start_us = monotonic_us();
	snap_writer_init(&la->w, (uint32_t)vm->nr_vcpus);
	la->vec = la->vec ? la->vec : calloc(SCAN_VEC, sizeof(*la->vec));
	if (!la->vec) {
		ret = fk_fail(err, ENOMEM, "engine %s: out of memory", LIVE_ASYNC_ENGINE);
		goto fail;
	}
	/* The memory file packs the regions in order (docs/snapshot-format.md). */
	for (uint64_t r = 0, off = 0; r < (uint64_t)vm->mem.nr_regions; r++) {
		la->file_off[r] = off;
		off += vm->mem.regions[r].size;
	}
	ret = open_staging(la, err);
	if (ret == 0) {
		la->pagemap_fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (la->pagemap_fd < 0)
			ret = fk_fail_errno(err, errno, "/proc/self/pagemap");
	}
	if (ret == 0)
		ret = arm(la, err);
	la->arm_us = monotonic_us() - t0;
	if (ret == 0) {
		ret = -pthread_create(&la->thread, NULL, job_thread, la);
		if (ret < 0)
			fk_fail(err, -ret, "engine %s: cannot start the copier thread: %s",
				LIVE_ASYNC_ENGINE, strerror(-ret));
	}
	if (ret < 0)
		goto fail;
	pthread_mutex_lock(&la->lock);
	la->thread_joinable = true;
	pthread_mutex_unlock(&la->lock);

	if (wait) {
		/* The final pause is a device handler: it runs while this waits. */
		event_loop_serve_until(&vm->loop, la->done_fd, -1);
		reap(la);
		pthread_mutex_lock(&la->lock);
		if (la->state == LA_FAILED)
			ret = fk_fail(err, EIO, "%s", la->error);
		pthread_mutex_unlock(&la->lock);
		if (ret < 0)
			return ret;
		put_numbers(la, reply);
	} else {
		json_object_set_new(reply, "engine", json_string(LIVE_ASYNC_ENGINE));
		json_object_set_new(reply, "arm_us", json_integer((json_int_t)la->arm_us));
	}
	pthread_mutex_lock(&la->lock);
	json_object_set_new(reply, "snapshot", json_string(state_names[la->state]));
	pthread_mutex_unlock(&la->lock);
	return 0;
fail:
	if (la->uffd >= 0)
		close(la->uffd);
	if (la->pagemap_fd >= 0)
		close(la->pagemap_fd);
	if (la->staging_fd >= 0)
		close(la->staging_fd);
	la->uffd = la->pagemap_fd = la->staging_fd = -1;
	snap_writer_free(&la->w);
	fk_wrap(err, "snapshot %s", path);
	job_fail(la, err);
	return ret;
}

int live_async_status(struct vm *vm, const char *path, json_t *reply)
{
	struct live_async *la = vm->live_async;
	enum live_async_state state;

	if (!la)
		return 0;
	pthread_mutex_lock(&la->lock);
	if (strcmp(la->path, path) != 0) {
		pthread_mutex_unlock(&la->lock);
		return 0;
	}
	state = la->state;
	json_object_set_new(reply, "path", json_string(la->path));
	json_object_set_new(reply, "snapshot", json_string(state_names[state]));
	if (state == LA_FAILED)
		json_object_set_new(reply, "error", json_string(la->error));
	pthread_mutex_unlock(&la->lock);
	if (state == LA_READY)
		put_numbers(la, reply);
	else
		json_object_set_new(reply, "engine", json_string(LIVE_ASYNC_ENGINE));
	return 1;
}

void live_async_destroy(struct vm *vm)
{
	struct live_async *la = vm->live_async;

	if (!la)
		return;
	/* A fork of the VMM (the BRANCH zygote) has neither the thread nor the job. */
	if (la->owner != getpid()) {
		vm->live_async = NULL;
		return;
	}
	atomic_store(&la->cancel, true);
	pthread_mutex_lock(&la->lock);
	pthread_cond_broadcast(&la->changed);
	pthread_mutex_unlock(&la->lock);
	if (la->thread_joinable)
		pthread_join(la->thread, NULL);
	if (la->step_registered)
		event_loop_remove(&vm->loop, la->step_fd);
	close(la->step_fd);
	close(la->done_fd);
	free(la->vec);
	free(la->held);
	free(la->held_ranges);
	pthread_cond_destroy(&la->changed);
	pthread_mutex_destroy(&la->lock);
	free(la);
	vm->live_async = NULL;
}
