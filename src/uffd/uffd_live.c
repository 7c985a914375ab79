/* SPDX-License-Identifier: MIT */
/*
 * The uffd-wp live snapshot engine (uffd_live.h). The handler is a thread of
 * the VMM, not a process: guest RAM (anon, THP) is readable here without a
 * memfd, a fault costs no socket round trip, and the VMM keeps the
 * userfaultfd, so a handler that stalls or ends can always be undone by
 * un-protecting everything from here (docs/design/userfaultfd.md says why).
 */
#include "uffd/uffd_live.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdarg.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "branch/fork_engine.h"
#include "core/vm.h"
#include "state/snapshot_format.h"
#include "state/vm_snapshot.h"
#include "state/vm_state.h"
#include "uffd/uffd_proto.h"
#include "uffd/uffd_vmm.h"
#include "util/unix_socket.h"

#include "util/uffd_compat.h"

/* A write fault unanswered this long (ms) fails the snapshot; a loaded host starves threads. */
#define WP_DEFAULT_STALL 10000
#define WP_PAGE		 4096ull
#define WP_BATCH_PAGES	 512 /* the bulk copier's step: 2 MiB, one THP */
#define WP_HISTORY	 16  /* finished snapshots kept for snapshot-status */

#define WP_MAX_CHILDREN 16

struct wp_job;

/* A VM restored from PATH.live whose MISSING faults this VMM serves. */
struct wp_child {
	struct wp_job *job;
	bool started;	      /* its thread runs or ran: joined before the slot is reused */
	atomic_bool finished; /* its thread is done (refused, or the child ended) */
	int conn;	      /* the handshake connection: its end is the child's */
	int uffd;
	struct uffd_region regions[UFFD_MAX_REGIONS];
	int nr_regions;
	pthread_t thread;
};

/* What snapshot-status reports, kept after the job's threads are gone. */
struct wp_record {
	bool in_use;
	uint64_t seq;
	char path[2048];
	enum persist_state state;
	char error[FK_ERR_MSG_MAX];
	uint64_t pause_us, arm_us, capture_us, complete_us, commit_us;
	uint64_t fault_copies, bulk_copies, fault_waits, faults, data_pages;
	uint64_t child_faults, child_claims;
};

struct wp_job {
	struct vm *vm;
	pid_t owner; /* a BRANCH child inherits this struct but none of its threads */
	struct wp_record *rec;
	char path[2048];
	int uffd;
	int stop_fd; /* eventfd: the fault thread's end */
	struct wp_region regions[GUEST_MEM_MAX_REGIONS];
	int nr_regions;
	uint64_t nr_pages;
	_Atomic uint8_t *pages; /* enum wp_page_state, one per page of the memory file */
	uint8_t *staging;	/* the copy, laid out as the memory file; zero pages untouched */
	uint64_t staging_size;
	struct snap_writer w;
	pthread_t fault_thread, copier_thread;
	bool fault_started, copier_started;
	bool populate_first; /* no WP_UNPOPULATED: map every untouched page before arming */
	/* FORKD_FAULT_INJECT, read once: its test hooks are checked on the fault path. */
	const char *inject;
	uint64_t start_us;
	uint64_t stall_limit_ms; /* a write fault unanswered this long fails the snapshot */
	atomic_bool handler_alive;
	atomic_bool abort; /* the VM is going: stop at once */
	atomic_uint_fast64_t faults, fault_copies, fault_waits, bulk_copies, data_pages;
	/* Bumped by the handler at every wake-up and every batch served: what the watchdog watches.
	 */
	atomic_uint_fast64_t heartbeat;
	atomic_bool handler_polling; /* blocked in its poll: idle, nothing unread it knows of */
	pthread_mutex_t err_lock;
	char fault_error[FK_ERR_MSG_MAX]; /* set by the fault thread; first one wins */
	/* Item 5: serving children restored from PATH.live (serve_*). */
	int listen_fd;
	int serve_stop_fd; /* eventfd: the accept and child threads' end */
	char serve_path[108];
	char live_dir[2100];
	pthread_t accept_thread;
	bool accept_started;
	pthread_mutex_t child_lock;
	struct wp_child children[WP_MAX_CHILDREN];
	atomic_int children_active;
	atomic_uint_fast64_t child_faults, child_claims;
};

/*
 * One VMM process runs one VM, and a live snapshot belongs to it: the job in
 * progress (at most one: a second is refused while it writes) and the last
 * WP_HISTORY results. Guarded by wp_lock; status readers copy under it.
 */
static pthread_mutex_t wp_lock = PTHREAD_MUTEX_INITIALIZER;
static struct wp_job *wp_current;
static struct wp_record wp_records[WP_HISTORY];
static uint64_t wp_next_seq;

static bool fault_injected(const struct wp_job *j, const char *what)
{
	return j->inject && strcmp(j->inject, what) == 0;
}

int64_t wp_page_index(const struct wp_region *regions, int nr_regions, uint64_t addr)
{
	for (int i = 0; i < nr_regions; i++)
		if (addr >= regions[i].hva && addr - regions[i].hva < regions[i].size)
			return (int64_t)(regions[i].first_page + (addr - regions[i].hva) / WP_PAGE);
	return -ERANGE;
}

bool wp_page_claim(_Atomic uint8_t *pages, uint64_t idx)
{
	uint8_t expect = WP_PAGE_NOT_COPIED;

	return atomic_compare_exchange_strong(&pages[idx], &expect, WP_PAGE_COPYING);
}

void wp_page_done(_Atomic uint8_t *pages, uint64_t idx)
{
	atomic_store(&pages[idx], WP_PAGE_COPIED);
}

/* A copy in progress is one 4 KiB memcpy on another thread: yield until it is done. */
void wp_page_wait(_Atomic uint8_t *pages, uint64_t idx)
{
	while (atomic_load(&pages[idx]) != WP_PAGE_COPIED)
		sched_yield();
}

static uint8_t *page_host(const struct wp_job *j, uint64_t idx)
{
	for (int i = 0; i < j->nr_regions; i++) {
		uint64_t first = j->regions[i].first_page;

		if (idx >= first && idx - first < j->regions[i].size / WP_PAGE)
			return (uint8_t *)(j->regions[i].hva + (idx - first) * WP_PAGE);
	}
	return NULL;
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *q = (const uint64_t *)p;

	for (size_t i = 0; i < WP_PAGE / 8; i += 8)
		if (q[i] | q[i + 1] | q[i + 2] | q[i + 3] | q[i + 4] | q[i + 5] | q[i + 6] |
		    q[i + 7])
			return false;
	return true;
}

/* Called by the claimer only: the page is still protected, nobody can change it. */
static void copy_page(struct wp_job *j, uint64_t idx)
{
	const uint8_t *src = page_host(j, idx);

	if (src && !page_is_zero(src)) {
		memcpy(j->staging + idx * WP_PAGE, src, WP_PAGE);
		atomic_fetch_add(&j->data_pages, 1);
	}
	wp_page_done(j->pages, idx);
}

/* Protects or un-protects [start, start+len); un-protecting wakes the writers waiting there. */
static int wp_range(int uffd, uint64_t start, uint64_t len, bool protect)
{
	struct uffdio_writeprotect wp = {.range = {.start = start, .len = len},
					 .mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0};

	while (ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
	return 0;
}

static void unprotect_all(struct wp_job *j)
{
	for (int i = 0; i < j->nr_regions; i++)
		wp_range(j->uffd, j->regions[i].hva, j->regions[i].size, false);
}

static void job_fault_error(struct wp_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void job_fault_error(struct wp_job *j, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&j->err_lock);
	if (!j->fault_error[0]) {
		va_start(ap, fmt);
		vsnprintf(j->fault_error, sizeof(j->fault_error), fmt, ap);
		va_end(ap);
	}
	pthread_mutex_unlock(&j->err_lock);
}

static bool job_failed(struct wp_job *j)
{
	bool failed;

	pthread_mutex_lock(&j->err_lock);
	failed = j->fault_error[0] != '\0';
	pthread_mutex_unlock(&j->err_lock);
	return failed;
}

/* One write fault: the page is copied (or its copy waited for), then un-protected. */
static void serve_fault(struct wp_job *j, const struct uffd_msg *m)
{
	uint64_t addr = m->arg.pagefault.address & ~(WP_PAGE - 1);
	int64_t idx = wp_page_index(j->regions, j->nr_regions, addr);
	int rc;

	atomic_fetch_add(&j->faults, 1);
	if (idx < 0) {
		job_fault_error(j, "write fault at %#llx: outside every guest region registered",
				(unsigned long long)m->arg.pagefault.address);
		return;
	}
	if (!(m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
		job_fault_error(j, "fault at %#llx is not a write-protect fault (flags %#llx)",
				(unsigned long long)addr,
				(unsigned long long)m->arg.pagefault.flags);
		return;
	}
	if (wp_page_claim(j->pages, (uint64_t)idx)) {
		copy_page(j, (uint64_t)idx);
		atomic_fetch_add(&j->fault_copies, 1);
	} else if (atomic_load(&j->pages[idx]) != WP_PAGE_COPIED) {
		atomic_fetch_add(&j->fault_waits, 1);
		wp_page_wait(j->pages, (uint64_t)idx);
	}
	rc = wp_range(j->uffd, addr, WP_PAGE, false);
	if (rc < 0)
		job_fault_error(j, "un-protect %#llx: %s", (unsigned long long)addr, strerror(-rc));
	atomic_fetch_add(&j->heartbeat, 1);
}

/* The handler: reads write faults until told to stop (stop_fd). */
static void *fault_thread_main(void *arg)
{
	struct wp_job *j = arg;
	struct uffd_msg msgs[16];

	for (;;) {
		struct pollfd pfd[2] = {{.fd = j->uffd, .events = POLLIN},
					{.fd = j->stop_fd, .events = POLLIN}};
		ssize_t n;
		int rc;

		atomic_store(&j->handler_polling, true);
		rc = poll(pfd, 2, -1);
		atomic_store(&j->handler_polling, false);
		if (rc < 0 && errno != EINTR)
			break;
		if (pfd[1].revents)
			break;
		atomic_fetch_add(&j->heartbeat, 1);
		/* Test hooks (docs/design/userfaultfd.md): a handler that ends, or never answers.
		 */
		if (fault_injected(j, "uffd-wp-handler-exit"))
			break;
		if (fault_injected(j, "uffd-wp-handler-stall")) {
			poll(&pfd[1], 1, -1);
			break;
		}
		n = read(j->uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			job_fault_error(j, "read the userfaultfd: %s", strerror(errno));
			break;
		}
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				serve_fault(j, &msgs[i]);
		atomic_fetch_add(&j->heartbeat, 1);
	}
	atomic_store(&j->handler_alive, false);
	return NULL;
}

/*
 * The watchdog, run by the bulk copier between steps: the handler thread
 * gone, or a write fault left unread longer than the limit, fails the
 * snapshot (the caller then un-protects everything, which wakes the guest).
 */
static bool handler_lost(struct wp_job *j, uint64_t *pending_since, uint64_t *beat_then)
{
	struct pollfd pfd = {.fd = j->uffd, .events = POLLIN};
	uint64_t now = monotonic_us(), beat = atomic_load(&j->heartbeat);
	bool readable = poll(&pfd, 1, 0) > 0;

	if (!atomic_load(&j->handler_alive)) {
		job_fault_error(j, "the write-fault handler ended mid-snapshot");
		return true;
	}
	/*
	 * The handler woke or served since the last look, or it waits idle with
	 * nothing queued (a fault the copier's un-protect woke leaves the queue
	 * without being read): nothing is waiting on it.
	 */
	if (beat != *beat_then || (!readable && atomic_load(&j->handler_polling))) {
		*beat_then = beat;
		*pending_since = 0;
	}
	if (readable && !*pending_since)
		*pending_since = now;
	if (*pending_since && now - *pending_since > j->stall_limit_ms * 1000) {
		job_fault_error(j,
				"a guest write waited over %llu ms for the write-fault handler, "
				"which never answered",
				(unsigned long long)j->stall_limit_ms);
		return true;
	}
	return false;
}

static void record_finish(struct wp_job *j, enum persist_state state, const char *error)
{
	pthread_mutex_lock(&wp_lock);
	j->rec->state = state;
	snprintf(j->rec->error, sizeof(j->rec->error), "%s", error ? error : "");
	j->rec->complete_us = monotonic_us() - j->start_us;
	j->rec->faults = atomic_load(&j->faults);
	j->rec->fault_copies = atomic_load(&j->fault_copies);
	j->rec->fault_waits = atomic_load(&j->fault_waits);
	j->rec->bulk_copies = atomic_load(&j->bulk_copies);
	j->rec->data_pages = atomic_load(&j->data_pages);
	j->rec->child_faults = atomic_load(&j->child_faults);
	j->rec->child_claims = atomic_load(&j->child_claims);
	pthread_mutex_unlock(&wp_lock);
}

/* Ends the handler thread and releases the userfaultfd (every range un-protected first). */
static void stop_handler(struct wp_job *j)
{
	uint64_t one = 1;

	if (j->uffd >= 0)
		unprotect_all(j);
	if (j->fault_started) {
		if (write(j->stop_fd, &one, sizeof(one)) < 0) {
			/* An eventfd write fails only on overflow: the thread is woken anyway. */
		}
		pthread_join(j->fault_thread, NULL);
		j->fault_started = false;
	}
	for (int i = 0; j->uffd >= 0 && i < j->nr_regions; i++) {
		struct uffdio_range r = {.start = j->regions[i].hva, .len = j->regions[i].size};
		ioctl(j->uffd, UFFDIO_UNREGISTER, &r);
	}
	if (j->uffd >= 0)
		close(j->uffd);
	j->uffd = -1;
}

/* The bulk copier, then the snapshot's commit: the rest of a job after the resume. */
static void *copier_thread_main(void *arg)
{
	struct wp_job *j = arg;
	struct snap_mem_region regions[GUEST_MEM_MAX_REGIONS];
	struct snap_memory_source src = {.regions = regions, .nr_regions = 0};
	uint64_t pending_since = 0, beat_then = 0, t_commit;
	struct fk_err err = {0};
	int rc;

	for (uint64_t base = 0; base < j->nr_pages; base += WP_BATCH_PAGES) {
		uint64_t end =
		    base + WP_BATCH_PAGES < j->nr_pages ? base + WP_BATCH_PAGES : j->nr_pages;

		if (atomic_load(&j->abort) || job_failed(j) ||
		    handler_lost(j, &pending_since, &beat_then))
			goto failed;
		/*
		 * Test hook: before the first step, wait (up to 60 s) for a child to
		 * fault, so that one starts before the copy however slowly it boots
		 * (the nested test host).
		 */
		for (int waited = 0;
		     base == 0 && fault_injected(j, "uffd-wp-copy-after-child") &&
		     atomic_load(&j->child_faults) == 0 && !atomic_load(&j->abort) && waited < 6000;
		     waited++)
			usleep(10 * 1000);
		for (uint64_t i = base; i < end; i++) {
			if (wp_page_claim(j->pages, i)) {
				copy_page(j, i);
				atomic_fetch_add(&j->bulk_copies, 1);
			}
		}
		/* Test hook: a copy slow enough for a child to start before it completes. */
		if (fault_injected(j, "uffd-wp-slow-copy") ||
		    fault_injected(j, "uffd-wp-copy-after-child"))
			usleep(50 * 1000);
		/* Un-protected only once every page of the step is in the copy. */
		for (uint64_t i = base; i < end; i++)
			wp_page_wait(j->pages, i);
		/* A step never spans two regions: both are 2 MiB multiples. */
		rc = wp_range(j->uffd, (uint64_t)page_host(j, base), (end - base) * WP_PAGE, false);
		if (rc < 0) {
			job_fault_error(j, "un-protect guest pages from file page %llu: %s",
					(unsigned long long)base, strerror(-rc));
			goto failed;
		}
	}
	/*
	 * Everything is copied and un-protected (so no writer waits any more),
	 * but a handler that left faults unread is broken: the snapshot is
	 * failed rather than trusted. Normally the queue is empty at once.
	 */
	for (;;) {
		struct pollfd pfd = {.fd = j->uffd, .events = POLLIN};

		if (job_failed(j) || handler_lost(j, &pending_since, &beat_then))
			goto failed;
		if (poll(&pfd, 1, 0) <= 0 && !pending_since)
			break;
		usleep(10 * 1000);
	}
	stop_handler(j);
	if (job_failed(j))
		goto failed_stopped;
	for (int i = 0; i < j->nr_regions; i++)
		regions[i] = (struct snap_mem_region){.gpa = j->vm->mem.regions[i].gpa,
						      .size = j->regions[i].size,
						      .host = j->staging +
							      j->regions[i].first_page * WP_PAGE};
	src.nr_regions = (uint32_t)j->nr_regions;
	t_commit = monotonic_us();
	rc = snap_writer_commit(&j->w, j->path, &src, &err);
	pthread_mutex_lock(&wp_lock);
	j->rec->commit_us = monotonic_us() - t_commit;
	pthread_mutex_unlock(&wp_lock);
	if (rc < 0) {
		record_finish(j, PERSIST_FAILED, err.msg);
		return NULL;
	}
	record_finish(j, PERSIST_READY, NULL);
	return NULL;
failed:
	stop_handler(j);
failed_stopped:
	pthread_mutex_lock(&j->err_lock);
	snprintf(
	    err.msg, sizeof(err.msg),
	    "uffd-wp snapshot %.200s failed: %.230s; guest memory un-protected, the VM runs on",
	    j->path, j->fault_error[0] ? j->fault_error : "the VM is exiting");
	pthread_mutex_unlock(&j->err_lock);
	record_finish(j, PERSIST_FAILED, err.msg);
	return NULL;
}

/* ---- Item 5: children restored from PATH.live, served before the copy completes ---- */

bool uffd_live_dir_is_live(const char *dir)
{
	char path[4200];

	snprintf(path, sizeof(path), "%s/%s", dir, UFFD_LIVE_MARKER);
	return access(path, F_OK) == 0;
}

/* Fills a child's page at addr from the copy, claiming (and copying) it first if need be. */
static int serve_child_fault(struct wp_job *j, struct wp_child *c, uint64_t addr,
			     struct fk_err *err)
{
	uint64_t page = addr & ~(WP_PAGE - 1), off, idx;
	int r = uffd_region_find(c->regions, c->nr_regions, page);
	const uint8_t *src;
	int rc;

	if (r < 0)
		return fk_fail(err, ERANGE, "child fault at %#llx: outside every region it sent",
			       (unsigned long long)addr);
	off = c->regions[r].offset + (page - c->regions[r].base_host_virt_addr);
	idx = off / WP_PAGE;
	if (idx >= j->nr_pages)
		return fk_fail(err, ERANGE, "child fault at %#llx: file page %llu past the guest",
			       (unsigned long long)addr, (unsigned long long)idx);
	atomic_fetch_add(&j->child_faults, 1);
	/* Not copied yet: still protected in the source, so it is the instant's bytes. */
	if (wp_page_claim(j->pages, idx)) {
		copy_page(j, idx);
		atomic_fetch_add(&j->child_claims, 1);
	} else {
		wp_page_wait(j->pages, idx);
	}
	src = j->staging + idx * WP_PAGE;
	for (;;) {
		if (page_is_zero(src)) {
			struct uffdio_zeropage z = {.range = {.start = page, .len = WP_PAGE}};
			rc = ioctl(c->uffd, UFFDIO_ZEROPAGE, &z);
		} else {
			struct uffdio_copy cp = {
			    .dst = page, .src = (uint64_t)src, .len = WP_PAGE, .mode = 0};
			rc = ioctl(c->uffd, UFFDIO_COPY, &cp);
		}
		if (rc == 0)
			return 0;
		if (errno == EAGAIN)
			continue;
		if (errno == EEXIST) {
			struct uffdio_range w = {.start = page, .len = WP_PAGE};
			ioctl(c->uffd, UFFDIO_WAKE, &w);
			return 0;
		}
		if (errno == ESRCH)
			return -ESRCH; /* the child's mm is gone */
		return fk_fail_errno(err, errno, "child page %#llx: fill",
				     (unsigned long long)page);
	}
}

static int child_handshake(struct wp_job *j, struct wp_child *c, struct fk_err *err);

/*
 * One child: its handshake here, not on the accepting thread, so that a client that sends
 * nothing (or sends slowly, up to UFFD_HANDSHAKE_WAIT) holds up only itself; then its faults.
 */
static void *child_thread_main(void *arg)
{
	struct wp_child *c = arg;
	struct wp_job *j = c->job;
	struct uffd_msg msgs[16];
	struct fk_err err = {0};

	if (child_handshake(j, c, &err) < 0) {
		fprintf(stderr, "forkd-vmm: uffd-wp serve %s: a child refused: %s\n", j->serve_path,
			err.msg);
		close(c->conn);
		atomic_store(&c->finished, true);
		return NULL;
	}
	atomic_fetch_add(&j->children_active, 1);
	for (;;) {
		struct pollfd pfd[3] = {{.fd = c->uffd, .events = POLLIN},
					{.fd = c->conn, .events = POLLIN},
					{.fd = j->serve_stop_fd, .events = POLLIN}};
		ssize_t n;

		if (poll(pfd, 3, -1) < 0 && errno != EINTR)
			break;
		if (pfd[2].revents || pfd[1].revents)
			break; /* stopping, or the child's connection ended: it exited */
		if (!pfd[0].revents)
			continue;
		n = read(c->uffd, msgs, sizeof(msgs));
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n < 0)
			break;
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++) {
			/* REMOVE and UNMAP need only be read: an unmap waits for that. */
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (serve_child_fault(j, c, msgs[i].arg.pagefault.address, &err) < 0)
				goto out;
		}
	}
out:
	if (err.msg[0])
		fprintf(stderr, "forkd-vmm: uffd-wp serve %s: %s; dropping that child\n",
			j->serve_path, err.msg);
	close(c->uffd);
	close(c->conn);
	atomic_fetch_sub(&j->children_active, 1);
	atomic_store(&c->finished, true);
	return NULL;
}

/* A child's handshake: its regions must tile the guest's memory file in 4 KiB pages. */
static int child_handshake(struct wp_job *j, struct wp_child *c, struct fk_err *err)
{
	int rc = uffd_handshake_recv(c->conn, UFFD_HANDSHAKE_WAIT, &c->uffd, c->regions,
				     UFFD_MAX_REGIONS, &c->nr_regions, err);

	if (rc == 0)
		rc = uffd_regions_match_file(c->regions, c->nr_regions, j->nr_pages * WP_PAGE, err);
	for (int i = 0; rc == 0 && i < c->nr_regions; i++)
		if (c->regions[i].page_size != WP_PAGE)
			rc = fk_fail(err, EINVAL, "region %d: page_size %llu, expected 4096", i,
				     (unsigned long long)c->regions[i].page_size);
	if (rc < 0 && c->uffd >= 0) {
		close(c->uffd);
		c->uffd = -1;
	}
	return rc;
}

/* A connection gets a slot (a finished one's is reused, its thread joined) and a thread. */
static int accept_child(struct wp_job *j, int conn, struct fk_err *err)
{
	struct wp_child *c = NULL;
	int rc = 0;

	pthread_mutex_lock(&j->child_lock);
	for (int i = 0; i < WP_MAX_CHILDREN && !c; i++) {
		struct wp_child *s = &j->children[i];

		if (s->started && atomic_load(&s->finished)) {
			pthread_join(s->thread, NULL);
			s->started = false;
		}
		if (!s->started)
			c = s;
	}
	if (!c)
		rc = fk_fail(err, EBUSY, "%d children are served already", WP_MAX_CHILDREN);
	if (rc == 0) {
		*c = (struct wp_child){.job = j, .conn = conn, .uffd = -1};
		if (pthread_create(&c->thread, NULL, child_thread_main, c) != 0)
			rc = fk_fail(err, EAGAIN, "cannot start a thread for the child");
		else
			c->started = true;
	}
	pthread_mutex_unlock(&j->child_lock);
	return rc;
}

static void *accept_thread_main(void *arg)
{
	struct wp_job *j = arg;

	for (;;) {
		struct pollfd pfd[2] = {{.fd = j->listen_fd, .events = POLLIN},
					{.fd = j->serve_stop_fd, .events = POLLIN}};
		struct fk_err err = {0};
		int conn;

		if (poll(pfd, 2, -1) < 0 && errno != EINTR)
			break;
		if (pfd[1].revents)
			break;
		conn = accept4(j->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (conn < 0)
			continue;
		if (accept_child(j, conn, &err) < 0) {
			fprintf(stderr, "forkd-vmm: uffd-wp serve %s: a child refused: %s\n",
				j->serve_path, err.msg);
			close(conn);
		}
	}
	return NULL;
}

/*
 * PATH.live: the captured state with an all-hole memory file (a zero
 * mapping as its source: nothing is allocated) and the marker, committed
 * atomically like any snapshot, so a restore sees all of it or nothing.
 */
static int write_live_dir(struct wp_job *j, struct fk_err *err)
{
	struct snap_mem_region regions[GUEST_MEM_MAX_REGIONS];
	struct snap_memory_source src = {.regions = regions, .nr_regions = 0};
	struct snap_writer live = j->w; /* shares the sections; only files[] is its own */
	char parent[2048];
	uint8_t *zeros;
	int fd, rc;

	zeros = mmap(NULL, j->staging_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		     -1, 0);
	if (zeros == MAP_FAILED)
		return fk_fail_errno(err, errno, "serve: map zeros");
	/* An unnamed file beside the snapshot: the writer copies it in as the marker. */
	snprintf(parent, sizeof(parent), "%s", j->path);
	fd = open(dirname(parent), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, j->serve_path, strlen(j->serve_path)) < 0) {
		rc = fk_fail_errno(err, errno, "serve: marker");
		goto out;
	}
	rc = snap_writer_add_file(&live, UFFD_LIVE_MARKER, fd, err);
	for (int i = 0; rc == 0 && i < j->nr_regions; i++)
		regions[i] =
		    (struct snap_mem_region){.gpa = j->vm->mem.regions[i].gpa,
					     .size = j->regions[i].size,
					     .host = zeros + j->regions[i].first_page * WP_PAGE};
	src.nr_regions = (uint32_t)j->nr_regions;
	if (rc == 0)
		rc = snap_writer_commit(&live, j->live_dir, &src, err);
out:
	if (fd >= 0)
		close(fd);
	munmap(zeros, j->staging_size);
	return rc;
}

static int start_serving(struct wp_job *j, const char *serve, struct fk_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int rc;

	if (strlen(serve) >= sizeof(sa.sun_path))
		return fk_fail(err, ENAMETOOLONG, "serve %s: longer than %zu bytes", serve,
			       sizeof(sa.sun_path) - 1);
	snprintf(j->serve_path, sizeof(j->serve_path), "%s", serve);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", serve);
	snprintf(j->live_dir, sizeof(j->live_dir), "%s.live", j->path);
	j->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (j->listen_fd < 0)
		return fk_fail_errno(err, errno, "serve %s: socket", serve);
	if (bind(j->listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(j->listen_fd, 16) < 0)
		return fk_fail_errno(err, errno, "serve %s: bind and listen (expected a free path)",
				     serve);
	rc = write_live_dir(j, err);
	if (rc < 0)
		return fk_wrap(err, "serve: %s", j->live_dir);
	if (pthread_create(&j->accept_thread, NULL, accept_thread_main, j) != 0)
		return fk_fail(err, EAGAIN, "serve %s: cannot start the accept thread", serve);
	j->accept_started = true;
	return 0;
}

/* Ends serving: children still running lose their handler (their VMMs stop, saying so). */
static void stop_serving(struct wp_job *j)
{
	uint64_t one = 1;
	char path[2300];

	if (j->serve_stop_fd >= 0 && write(j->serve_stop_fd, &one, sizeof(one)) < 0) {
		/* Only on overflow: the threads are woken anyway. */
	}
	if (j->accept_started)
		pthread_join(j->accept_thread, NULL);
	j->accept_started = false;
	for (int i = 0; i < WP_MAX_CHILDREN; i++)
		if (j->children[i].started) {
			pthread_join(j->children[i].thread, NULL);
			j->children[i].started = false;
		}
	if (j->listen_fd >= 0) {
		close(j->listen_fd);
		unlink(j->serve_path);
	}
	j->listen_fd = -1;
	if (j->live_dir[0]) {
		const char *names[] = {SNAP_MEMORY_FILE, SNAP_STATE_FILE, SNAP_WRITER_FILE,
				       UFFD_LIVE_MARKER};
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			snprintf(path, sizeof(path), "%s/%s", j->live_dir, names[i]);
			unlink(path);
		}
		rmdir(j->live_dir);
		j->live_dir[0] = '\0';
	}
}

static void job_free(struct wp_job *j)
{
	if (!j)
		return;
	stop_serving(j);
	stop_handler(j);
	if (j->stop_fd >= 0)
		close(j->stop_fd);
	if (j->serve_stop_fd >= 0)
		close(j->serve_stop_fd);
	pthread_mutex_destroy(&j->child_lock);
	if (j->staging)
		munmap(j->staging, j->staging_size);
	free(j->pages);
	snap_writer_free(&j->w);
	pthread_mutex_destroy(&j->err_lock);
	free(j);
}

/* The previous job's threads are joined once it is complete (or joined now when waiting). */
static int reap_previous(bool block, struct fk_err *err)
{
	struct wp_job *j;
	bool done;

	pthread_mutex_lock(&wp_lock);
	j = wp_current;
	/* In a forked BRANCH child the job's threads do not exist: forget it, never join. */
	if (j && j->owner != getpid()) {
		wp_current = NULL;
		j = NULL;
	}
	done = !j || j->rec->state != PERSIST_WRITING;
	pthread_mutex_unlock(&wp_lock);
	if (!j)
		return 0;
	if (!block && atomic_load(&j->children_active) > 0)
		return fk_fail(err, EBUSY,
			       "engine uffd-wp: %d children restored from %s are still served "
			       "from its copy; stop them first",
			       atomic_load(&j->children_active), j->live_dir);
	if (!done && !block)
		return fk_fail(err, EBUSY,
			       "engine uffd-wp: the snapshot %s is still being written; one at a "
			       "time (snapshot-status shows when it is ready)",
			       j->path);
	pthread_join(j->copier_thread, NULL);
	pthread_mutex_lock(&wp_lock);
	wp_current = NULL;
	pthread_mutex_unlock(&wp_lock);
	job_free(j);
	return 0;
}

static struct wp_record *record_new(const char *path)
{
	struct wp_record *r = &wp_records[0];

	for (int i = 0; i < WP_HISTORY; i++) {
		if (!wp_records[i].in_use) {
			r = &wp_records[i];
			break;
		}
		if (wp_records[i].seq < r->seq)
			r = &wp_records[i];
	}
	memset(r, 0, sizeof(*r));
	r->in_use = true;
	r->seq = ++wp_next_seq;
	r->state = PERSIST_WRITING;
	snprintf(r->path, sizeof(r->path), "%s", path);
	return r;
}

/* What the engine cannot snapshot, refused before anything is touched. */
static int check_vm(struct vm *vm, const char *path, struct fk_err *err)
{
	struct stat st;

	if (vm->mem.backend != GUEST_MEM_ANON && vm->mem.backend != GUEST_MEM_MEMFD)
		return fk_fail(err, ENOTSUP,
			       "engine uffd-wp: guest memory backend '%s' is not supported "
			       "(expected anon or memfd RAM; use engine fork)",
			       guest_mem_backend_name(vm->mem.backend));
	if (vm->mem.backend == GUEST_MEM_MEMFD && vm->mem.memfd_private)
		return fk_fail(err, ENOTSUP,
			       "engine uffd-wp: this memfd VM branched and its RAM is now a "
			       "private file mapping, which userfaultfd cannot write-protect "
			       "(use engine fork)");
	for (int i = 0; i < vm->nr_disks; i++)
		if (!vm->cfg->disks[i].readonly)
			return fk_fail(err, ENOTSUP,
				       "engine uffd-wp: disk %d (%s) is writable and its copy "
				       "would be taken after the instant (use engine fork)",
				       i, vm->cfg->disks[i].path);
	if (lstat(path, &st) == 0)
		return fk_fail(err, EEXIST, "snapshot %s: already exists; refusing to overwrite",
			       path);
	return 0;
}

/* The userfaultfd with WP faults, every guest region registered MODE_WP (nothing armed yet). */
static int setup_uffd(struct wp_job *j, struct fk_err *err)
{
	struct uffdio_api api = {.api = UFFD_API,
				 .features =
				     UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_UNPOPULATED};

	struct uffdio_api offered = {.api = UFFD_API};

	if (j->vm->mem.backend == GUEST_MEM_MEMFD)
		api.features |= UFFD_FEATURE_WP_HUGETLBFS_SHMEM;
	/* What the kernel offers: a userfaultfd takes one UFFDIO_API, so ask a throwaway one. */
	j->uffd = uffd_open_fd(err);
	if (j->uffd < 0)
		return fk_wrap(err, "engine uffd-wp");
	if (ioctl(j->uffd, UFFDIO_API, &offered) < 0)
		return fk_fail_errno(err, errno, "engine uffd-wp: UFFDIO_API");
	close(j->uffd);
	j->uffd = uffd_open_fd(err);
	if (j->uffd < 0)
		return fk_wrap(err, "engine uffd-wp");
	/*
	 * WP_UNPOPULATED (6.4+): a page the guest never touched has no PTE to
	 * carry the protection; without it its first write would not fault and
	 * the copy could read the post-instant bytes. Older kernels (the nested
	 * test host's 6.1) protect only present PTEs, so on anonymous RAM every
	 * untouched page is first mapped to the zero page (MADV_POPULATE_READ,
	 * before the pause: no memory is allocated), and the zero page's PTE
	 * carries the protection. Shared memory keeps the protection without a
	 * page (PTE markers, 6.0+).
	 */
	/* Test hook: FORKD_FAULT_INJECT=no-wp-unpopulated answers as a kernel before 6.4. */
	if (fault_injected(j, "no-wp-unpopulated"))
		offered.features &= ~(uint64_t)UFFD_FEATURE_WP_UNPOPULATED;
	if (!(offered.features & UFFD_FEATURE_WP_UNPOPULATED)) {
		api.features &= ~(uint64_t)UFFD_FEATURE_WP_UNPOPULATED;
		j->populate_first = j->vm->mem.backend != GUEST_MEM_MEMFD;
	}
	if (ioctl(j->uffd, UFFDIO_API, &api) < 0)
		return fk_fail_errno(err, errno,
				     "engine uffd-wp: UFFDIO_API with write-protect faults "
				     "(features 0x%llx asked, 0x%llx offered)",
				     (unsigned long long)api.features,
				     (unsigned long long)offered.features);
	for (int i = 0; i < j->nr_regions; i++) {
		struct uffdio_register reg = {
		    .range = {.start = j->regions[i].hva, .len = j->regions[i].size},
		    .mode = UFFDIO_REGISTER_MODE_WP};

		if (ioctl(j->uffd, UFFDIO_REGISTER, &reg) < 0)
			return fk_fail_errno(err, errno,
					     "engine uffd-wp: register guest region %d (%llu MiB, "
					     "%s RAM) for write protection",
					     i, (unsigned long long)(j->regions[i].size >> 20),
					     guest_mem_backend_name(j->vm->mem.backend));
		if (!(reg.ioctls & (1ull << _UFFDIO_WRITEPROTECT)))
			return fk_fail(err, ENOTSUP,
				       "engine uffd-wp: the kernel offers no UFFDIO_WRITEPROTECT "
				       "on guest region %d",
				       i);
	}
	return 0;
}

static struct wp_job *job_new(struct vm *vm, const char *path, struct fk_err *err)
{
	struct wp_job *j = calloc(1, sizeof(*j));
	uint64_t page = 0;
	const char *limit = getenv("FORKD_UFFD_WP_STALL_MS");

	if (!j) {
		fk_fail(err, ENOMEM, "engine uffd-wp: out of memory");
		return NULL;
	}
	j->vm = vm;
	j->owner = getpid();
	j->uffd = -1;
	j->listen_fd = -1;
	j->inject = getenv("FORKD_FAULT_INJECT");
	pthread_mutex_init(&j->err_lock, NULL);
	pthread_mutex_init(&j->child_lock, NULL);
	snap_writer_init(&j->w, (uint32_t)vm->nr_vcpus);
	snprintf(j->path, sizeof(j->path), "%s", path);
	j->stall_limit_ms = limit && atoi(limit) > 0 ? (uint64_t)atoi(limit) : WP_DEFAULT_STALL;
	j->nr_regions = vm->mem.nr_regions;
	for (int i = 0; i < j->nr_regions; i++) {
		j->regions[i] = (struct wp_region){.hva = (uint64_t)vm->mem.regions[i].hva,
						   .size = vm->mem.regions[i].size,
						   .first_page = page};
		page += vm->mem.regions[i].size / WP_PAGE;
	}
	j->nr_pages = page;
	j->stop_fd = eventfd(0, EFD_CLOEXEC);
	j->serve_stop_fd = eventfd(0, EFD_CLOEXEC);
	j->pages = calloc(j->nr_pages, 1);
	j->staging_size = j->nr_pages * WP_PAGE;
	/* Untouched pages of the copy stay unallocated: zero pages cost nothing. */
	j->staging = mmap(NULL, j->staging_size, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (j->staging == MAP_FAILED)
		j->staging = NULL;
	if (j->stop_fd < 0 || j->serve_stop_fd < 0 || !j->pages || !j->staging) {
		fk_fail(err, ENOMEM,
			"engine uffd-wp: out of memory for the copy of %llu MiB of guest RAM",
			(unsigned long long)(j->staging_size >> 20));
		job_free(j);
		return NULL;
	}
	madvise(j->staging, j->staging_size, MADV_HUGEPAGE);
	return j;
}

int uffd_live_snapshot(struct vm *vm, const char *path, bool wait, const char *serve, json_t *reply,
		       struct fk_err *err)
{
	struct wp_job *j = NULL;
	uint64_t t0, t_parked, t_armed, t_captured;
	bool paused = false;
	int ret;

	ret = reap_previous(false, err);
	if (ret < 0)
		return ret;
	ret = check_vm(vm, path, err);
	if (ret < 0)
		return ret;
	j = job_new(vm, path, err);
	if (!j)
		return -ENOMEM;
	ret = setup_uffd(j, err);
	if (ret < 0)
		goto fail;
	atomic_store(&j->handler_alive, true);
	if (pthread_create(&j->fault_thread, NULL, fault_thread_main, j) != 0) {
		ret = fk_fail(err, EAGAIN, "engine uffd-wp: cannot start the fault thread");
		goto fail;
	}
	j->fault_started = true;
	for (int i = 0; j->populate_first && i < j->nr_regions; i++)
		if (madvise((void *)j->regions[i].hva, j->regions[i].size, MADV_POPULATE_READ) <
		    0) {
			ret = fk_fail_errno(err, errno,
					    "engine uffd-wp: map guest region %d's untouched pages "
					    "before arming (this kernel has no WP_UNPOPULATED)",
					    i);
			goto fail;
		}

	/* Pause first, then arm: armed before the pause, a vCPU's write would tear the instant. */
	t0 = monotonic_us();
	j->start_us = t0;
	ret = vm_pause(vm, err);
	if (ret < 0)
		goto fail;
	paused = true;
	t_parked = monotonic_us();
	for (int i = 0; i < j->nr_regions && ret == 0; i++) {
		ret = wp_range(j->uffd, j->regions[i].hva, j->regions[i].size, true);
		if (ret < 0)
			fk_fail(err, -ret, "engine uffd-wp: write-protect guest region %d: %s", i,
				strerror(-ret));
	}
	if (ret < 0)
		goto fail;
	t_armed = monotonic_us();
	ret = vm_state_save(vm, &j->w, err);
	if (ret < 0)
		goto fail;
	json_object_set_new(reply, "inflight", json_integer(vm_snapshot_inflight(vm)));
	t_captured = monotonic_us();
	vm_resume(vm, err);
	paused = false;

	pthread_mutex_lock(&wp_lock);
	j->rec = record_new(path);
	j->rec->pause_us = monotonic_us() - t0;
	j->rec->arm_us = t_armed - t_parked;
	j->rec->capture_us = t_captured - t_armed;
	wp_current = j;
	pthread_mutex_unlock(&wp_lock);
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)j->rec->pause_us));
	/* How untouched pages were protected: by the kernel, or mapped to the zero page first. */
	json_object_set_new(reply, "unpopulated",
			    json_string(j->populate_first ? "populate-read" : "wp-unpopulated"));
	json_object_set_new(reply, "park_us", json_integer((json_int_t)(t_parked - t0)));
	json_object_set_new(reply, "arm_us", json_integer((json_int_t)j->rec->arm_us));
	json_object_set_new(reply, "capture_us", json_integer((json_int_t)j->rec->capture_us));
	json_object_set_new(reply, "mem_bytes", json_integer((json_int_t)vm->mem.total_size));
	if (serve) {
		ret = start_serving(j, serve, err);
		if (ret < 0) {
			stop_serving(j);
			stop_handler(j);
			record_finish(j, PERSIST_FAILED, err->msg);
			pthread_mutex_lock(&wp_lock);
			wp_current = NULL;
			pthread_mutex_unlock(&wp_lock);
			job_free(j);
			return ret;
		}
		json_object_set_new(reply, "live_dir", json_string(j->live_dir));
		json_object_set_new(reply, "serve", json_string(j->serve_path));
	}
	if (pthread_create(&j->copier_thread, NULL, copier_thread_main, j) != 0) {
		/* Nothing copies: un-protect now so the guest never waits on a copy that won't
		 * come. */
		stop_handler(j);
		record_finish(j, PERSIST_FAILED, "engine uffd-wp: cannot start the copier thread");
		pthread_mutex_lock(&wp_lock);
		wp_current = NULL;
		pthread_mutex_unlock(&wp_lock);
		job_free(j);
		return fk_fail(err, EAGAIN, "engine uffd-wp: cannot start the copier thread");
	}
	j->copier_started = true;
	if (wait) {
		const char *state, *error;

		if (!serve) {
			reap_previous(true, err);
		} else {
			/* Complete, but the job stays: its children are served from the copy. */
			for (;;) {
				enum persist_state st;

				pthread_mutex_lock(&wp_lock);
				st = j->rec->state;
				pthread_mutex_unlock(&wp_lock);
				if (st != PERSIST_WRITING)
					break;
				usleep(5 * 1000);
			}
		}
		uffd_live_status(path, reply);
		state = json_string_value(json_object_get(reply, "snapshot"));
		error = json_string_value(json_object_get(reply, "error"));
		if (state && strcmp(state, "failed") == 0)
			return fk_fail(err, EIO, "%s", error ? error : "uffd-wp snapshot failed");
		return 0;
	}
	uffd_live_status(path, reply);
	return 0;
fail:
	if (j->uffd >= 0)
		unprotect_all(j);
	if (paused) {
		struct fk_err ignored;
		vm_resume(vm, &ignored);
	}
	job_free(j);
	return ret;
}

int uffd_live_status(const char *path, json_t *reply)
{
	struct wp_record *best = NULL, r;

	pthread_mutex_lock(&wp_lock);
	for (int i = 0; i < WP_HISTORY; i++)
		if (wp_records[i].in_use && strcmp(wp_records[i].path, path) == 0 &&
		    (!best || wp_records[i].seq > best->seq))
			best = &wp_records[i];
	if (best)
		r = *best;
	pthread_mutex_unlock(&wp_lock);
	if (!best)
		return -ENOENT;
	json_object_set_new(reply, "path", json_string(r.path));
	json_object_set_new(reply, "engine", json_string("uffd-wp"));
	json_object_set_new(reply, "snapshot", json_string(persist_state_name(r.state)));
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)r.pause_us));
	json_object_set_new(reply, "arm_us", json_integer((json_int_t)r.arm_us));
	if (r.state != PERSIST_WRITING) {
		json_object_set_new(reply, "complete_us", json_integer((json_int_t)r.complete_us));
		json_object_set_new(reply, "write_us", json_integer((json_int_t)r.commit_us));
		json_object_set_new(reply, "faults", json_integer((json_int_t)r.faults));
		json_object_set_new(reply, "fault_copies",
				    json_integer((json_int_t)r.fault_copies));
		json_object_set_new(reply, "fault_waits", json_integer((json_int_t)r.fault_waits));
		json_object_set_new(reply, "bulk_copies", json_integer((json_int_t)r.bulk_copies));
		json_object_set_new(reply, "data_pages", json_integer((json_int_t)r.data_pages));
		json_object_set_new(reply, "child_faults",
				    json_integer((json_int_t)r.child_faults));
		json_object_set_new(reply, "child_claims",
				    json_integer((json_int_t)r.child_claims));
	}
	if (r.state == PERSIST_FAILED)
		json_object_set_new(reply, "error", json_string(r.error));
	return 0;
}

void uffd_live_end(struct vm *vm)
{
	struct wp_job *j;
	struct fk_err ignored;

	pthread_mutex_lock(&wp_lock);
	j = wp_current;
	if (j && j->vm == vm && j->owner == getpid())
		atomic_store(&j->abort, true);
	pthread_mutex_unlock(&wp_lock);
	if (j && j->vm == vm)
		reap_previous(true, &ignored);
}
