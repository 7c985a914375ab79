/* SPDX-License-Identifier: MIT */
/*
 * Integration-test harness: runs forkd-vmm as a child process with the
 * guest's serial console on pipes, and reads the console line by line.
 */
#ifndef FORKD_TESTS_HARNESS_H
#define FORKD_TESTS_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define HARNESS_MAX_LINES 4096

struct vmm_proc {
	pid_t pid;
	int in_fd;  /* guest serial input */
	int out_fd; /* guest serial output */
	int err_fd; /* VMM's stderr */
	char *lines[HARNESS_MAX_LINES];
	int nr_lines;
	char partial[8192];
	size_t partial_len;
	char err_text[8192];
	size_t err_len;
	int exit_status; /* valid after vmm_wait */
	bool exited;
};

/* Paths from the environment the Makefile sets (FORKD_VMM, FORKD_PROBE, ...). */
const char *harness_vmm(void);
const char *harness_vmm_asan(void);
const char *harness_probe(void);
const char *harness_tmpdir(void);

/* argv[0] is the VMM path; NULL-terminated. Returns 0 or -errno. */
int vmm_start(struct vmm_proc *p, char *const argv[]);
/* Starts with argv after switching to uid/gid (for permission tests). */
int vmm_start_as(struct vmm_proc *p, char *const argv[], uid_t uid, gid_t gid);
/* Waits up to timeout_ms for a console line starting with prefix; returns it or NULL. */
const char *vmm_wait_line(struct vmm_proc *p, const char *prefix, int timeout_ms);
/* The value of key=value from any console line seen so far (last one wins), or NULL. */
const char *vmm_value(struct vmm_proc *p, const char *key, char *buf, size_t len);
int vmm_send(struct vmm_proc *p, const char *text);
/* Waits for exit; returns the exit status (128+sig if killed) or -ETIMEDOUT. */
int vmm_wait(struct vmm_proc *p, int timeout_ms);
void vmm_kill(struct vmm_proc *p);
void vmm_free(struct vmm_proc *p);
/* How many console lines seen so far start with prefix. */
int vmm_count_lines(const struct vmm_proc *p, const char *prefix);
/* Prints the console and stderr captured so far, for failing tests. */
void vmm_dump(const struct vmm_proc *p);

/* Runs the VMM to completion with no console input; returns exit status, stderr in p. */
int vmm_run_to_exit(struct vmm_proc *p, char *const argv[], int timeout_ms);

long long now_ms(void);

/*
 * now_ms() + timeout_ms, stretched HARNESS_NESTED_SLOWDOWN times in the
 * nested test host (FORKD_TESTHOST_KIND set): every wait of the harness
 * uses it, so a test's timeouts are its native ones.
 */
#define HARNESS_NESTED_SLOWDOWN 4
long long harness_deadline(int timeout_ms);
/* true inside the nested test host (QEMU TCG, one emulated CPU). */
bool harness_in_nested_host(void);

/*
 * Sets FORKD_VMM_START_TIMEOUT_MS for a forkd serve this process starts (or
 * the daemon code it runs): 30 s, stretched like harness_deadline where VMs
 * start slowly (the nested test host).
 */
void harness_set_vmm_start_timeout(void);

/*
 * pids (at most max) of live forkd-vmm processes (argv[0] ends in forkd-vmm)
 * whose argv mentions needle, e.g. a daemon's state dir.
 */
size_t harness_vmm_pids(const char *needle, pid_t *out, size_t max);

#include <jansson.h>

/* Sends one JSON request (text) to a control socket; returns the reply (caller decrefs) or NULL. */
json_t *harness_call(const char *socket_path, const char *request_json, char *err_buf,
		     size_t err_len);

/*
 * Consoles kept in files (a BRANCH child's serial.log / serial.in FIFO):
 * waits for a line starting with prefix that appears after the first
 * `skip` lines; returns a malloc'd copy (caller frees) or NULL on timeout.
 */
char *file_wait_line(const char *path, const char *prefix, int skip, int timeout_ms);
/* Number of complete lines in the file now. */
int file_count_lines(const char *path);
/* Writes text to a FIFO (the child's serial.in). */
int fifo_send(const char *path, const char *text);
/* The value of key=value on a line (as vmm_value) or NULL; buf receives it. */
const char *line_value(const char *line, const char *key, char *buf, size_t len);

/* Creates $TMPDIR/forkd-TAG-XXXXXX into out; removes such a tree. Return 0 or -1. */
int harness_tmpdir_create(char *out, size_t len, const char *tag);
int harness_tmpdir_remove(const char *dir);

/*
 * Waits for a console line that contains `text` (and `also`, if not NULL)
 * but not `unless` (if not NULL); prints the console if none came.
 */
const char *vmm_wait_containing(struct vmm_proc *p, const char *text, const char *also,
				const char *unless, int timeout_ms);

/* Like vmm_wait_line, but prints the console and stderr when the line never came. */
const char *vmm_need_line(struct vmm_proc *p, const char *prefix, int timeout_ms);

/*
 * Sends a request to a control socket; returns the reply if its "ok" is
 * want_ok, else prints what happened and returns NULL (caller decrefs).
 */
json_t *harness_call_expect(const char *socket_path, const char *request_json, bool want_ok);

#endif
