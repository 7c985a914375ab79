/* SPDX-License-Identifier: MIT */
/*
 * Scaffolding shared by the userfaultfd integration tests (test_uffd.c,
 * test_uffd_wp.c, test_uffd_wp_async.c): pattern-writer probe guests on a
 * control socket, forkd-uffd handlers, lazy and file restores verified
 * strictly inside, the source's live verification, BRANCH children checked
 * through their console files. Every helper fails the running cmocka test
 * with a message saying what it waited for.
 */
#ifndef FORKD_ITEST_UFFD_HELPERS_H
#define FORKD_ITEST_UFFD_HELPERS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

#include "harness.h"

/*
 * From the test group's setup: creates the test's scratch directory
 * $TMPDIR/forkd-TAG-XXXXXX into dir (sockets and handler logs go there)
 * and sets the timeout of each wait. Returns 0 or -1.
 */
int uffd_helpers_setup(char *dir, size_t len, const char *tag, int timeout_ms);
/* The group teardown: removes the scratch directory. */
int uffd_helpers_teardown(void **state);

/* The console line starting with prefix (within the timeout), or the test fails. */
const char *uffd_need_line(struct vmm_proc *p, const char *prefix);
/* The reply of a control request whose "ok" is want_ok (caller decrefs), or the test fails. */
json_t *uffd_call(const char *sock, const char *req, bool want_ok);
/* An integer member of a reply, or the test fails naming it. */
long long uffd_reply_int(json_t *reply, const char *key);

/* forkd-uffd next to the VMM under test. */
const char *uffd_binary(void);

/* A running forkd-uffd. */
struct handler {
	pid_t pid;
	int out_fd; /* its stdout: the "listening" line, then the counts */
	char err_path[320];
	char sock[300];
	char out[4096];
	size_t out_len;
	int status;
};

/*
 * Starts forkd-uffd on a socket of its own in the scratch directory with
 * memory_opt memory (--snapshot DIR or --memory FILE) and the extra
 * arguments (NULL-terminated, at most 10), and waits until it listens.
 */
void handler_start(struct handler *h, const char *memory_opt, const char *memory, ...);
/* Reads the handler's stdout until it contains needle or timeout_ms passes. */
bool handler_read_until(struct handler *h, const char *needle, int timeout_ms);
/* Its stderr so far (a static buffer, overwritten by the next call). */
const char *handler_stderr(const struct handler *h);
/* Waits for its exit; returns the exit status (128+signal if killed), counts in h->out. */
int handler_wait(struct handler *h);
/* A count from its closing JSON line. */
long long handler_count(const struct handler *h, const char *key);

/*
 * Starts a 2-vCPU probe guest with the given memory and kernel command line
 * on control socket sock, and waits for its "DONE". vmm NULL: the plain VMM;
 * mem_backend NULL: the VMM's default.
 */
void uffd_start_source(struct vmm_proc *p, const char *vmm, const char *sock, const char *mem,
		       const char *append, const char *mem_backend);
/*
 * The 4 GiB tests: cpu0 touches the low region, so cpu1's pattern writer
 * must live above 4 GiB; its base address goes to base (len bytes).
 */
void uffd_expect_writer_above_4g(struct vmm_proc *p, char *base, size_t len);
/* Shuts the VM down through its control socket: it exits 0, its sanitizers (if any) silent. */
void uffd_stop_vm(struct vmm_proc *p, const char *sock);

/* Starts a lazy restore of snapshot served by the handler on handler_sock. */
void uffd_start_lazy_restore(struct vmm_proc *p, const char *snapshot, const char *handler_sock,
			     const char *control);
/* Waits until each pattern writer in [first_writer, +nr_writers) froze on the new generation ID. */
void uffd_wait_writers_frozen(struct vmm_proc *p, int first_writer, int nr_writers);
/*
 * Inside a restored guest: each writer's memory is the snapshot instant.
 * `after` names the restore for the failure message ("a lazy restore").
 */
void uffd_verify_strict(struct vmm_proc *p, int first_writer, int nr_writers, const char *after);
/* A lazy restore of snapshot served by the started handler h, verified strictly; h exits 0. */
void uffd_lazy_restore_and_verify(struct handler *h, const char *snapshot, int first_writer,
				  int nr_writers, const char *after);
/* A restore from the files of an `engine` snapshot, verified strictly. */
void uffd_restore_file_and_verify(const char *snapshot, int first_writer, int nr_writers,
				  const char *engine);
/* A lazy restore served by forkd-uffd from the snapshot's memory file, verified strictly. */
void uffd_restore_uffd_and_verify(const char *snapshot, int first_writer, int nr_writers,
				  const char *engine);

/*
 * The source's own live verification: its writers' memory holds as it
 * runs. `after` says after what, for the failure message.
 */
void uffd_source_verifies_live(struct vmm_proc *p, int first_writer, int nr_writers,
			       const char *after);

/*
 * Polls snapshot-status for path until it is no longer "writing"; returns
 * that reply (caller decrefs). writing_seen (if not NULL) counts the
 * "writing" answers.
 */
json_t *uffd_wait_snapshot(const char *sock, const char *path, int *writing_seen);

/*
 * BRANCHes the VM on sock into one child in bdir, verifies it strictly
 * through its console files, shuts it down and waits for it to be gone.
 * `child` names it in failure messages.
 */
void uffd_branch_one_strict(const char *sock, const char *bdir, const char *child);

#endif
