/* SPDX-License-Identifier: MIT */
/*
 * The uffd-wp live snapshot engine with the probe guest
 * (docs/design/userfaultfd.md, "Write-protect live snapshots"): a 2-vCPU
 * pattern guest snapshotted under write load verifies strictly when
 * restored (file and lazy uffd restore), its source verifies live and runs
 * on; a guest larger than 4 GiB whose writer lives above 4 GiB; a write-fault
 * handler that ends or never answers fails the snapshot, un-protects guest
 * memory, and leaves the source running; bad requests are refused by name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "uffd_helpers.h"
#include "where.h"

#define TIMEOUT_MS 30000
#define PATTERN	   "work=pattern,pattern pattern_mib=64 pattern_freeze=genid"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return uffd_helpers_setup(dir, sizeof(dir), "uffd-wp", TIMEOUT_MS);
}

/* Each test's source gets its own socket name: a failed test's VMM never blocks the next. */
static void start_source_on_new_socket(struct vmm_proc *p, char *sock, const char *mem,
				       const char *append)
{
	static int counter;

	snprintf(sock, 320, "%s/source%d.sock", dir, ++counter);
	uffd_start_source(p, NULL, sock, mem, append, NULL);
}

/*
 * 256 MiB, 2 vCPUs writing: written in the background (wait false), the
 * status says writing then ready; outside, the writers' writes were write
 * faults served by copying first; inside, both restores verify strictly.
 */
static void test_snapshot_under_write_load(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], req[800];
	json_t *r;
	const char *s;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\",\"wait\":false}",
		 snap);
	r = uffd_call(sock, req, true);
	s = json_string_value(json_object_get(r, "snapshot"));
	assert_non_null(s);
	if (strcmp(s, "writing") != 0 && strcmp(s, "ready") != 0)
		fail_msg("snapshot: %s right after the pause", s);
	assert_string_equal(json_string_value(json_object_get(r, "engine")), "uffd-wp");
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	assert_true(uffd_reply_int(r, "pause_us") > 0);
	/* Which way this kernel protects untouched pages (WP_UNPOPULATED is 6.4+). */
	s = json_string_value(json_object_get(r, "unpopulated"));
	assert_non_null(s);
	fprintf(stderr, "uffd-wp variant on this kernel: untouched pages by %s\n", s);
	json_decref(r);
	r = uffd_wait_snapshot(sock, snap, NULL);
	s = json_string_value(json_object_get(r, "snapshot"));
	if (strcmp(s, "ready") != 0)
		fail_msg("snapshot %s: %s", s, json_string_value(json_object_get(r, "error")));
	/* Outside: the writers' stores after the instant were write faults, copied first. */
	if (uffd_reply_int(r, "faults") == 0 ||
	    uffd_reply_int(r, "fault_copies") + uffd_reply_int(r, "fault_waits") == 0 ||
	    uffd_reply_int(r, "bulk_copies") == 0 ||
	    uffd_reply_int(r, "fault_copies") + uffd_reply_int(r, "bulk_copies") != 65536)
		fail_msg("faults %lld, fault copies %lld, waits %lld, bulk %lld: expected write "
			 "faults under load and every one of 65536 pages copied once",
			 uffd_reply_int(r, "faults"), uffd_reply_int(r, "fault_copies"),
			 uffd_reply_int(r, "fault_waits"), uffd_reply_int(r, "bulk_copies"));
	json_decref(r);
	/* The source ran on: it still writes, and its own verification holds. */
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap, 0, 2, "uffd-wp");
	uffd_restore_uffd_and_verify(snap, 0, 2, "uffd-wp");
}

/* Two snapshots of one source, waited for: both ready, both restore strictly. */
static void test_two_snapshots_waited(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[2][320], req[800];

	(void)state;
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	for (int i = 0; i < 2; i++) {
		json_t *r;

		snprintf(snap[i], sizeof(snap[i]), "%s/snap-w%d", dir, i);
		snprintf(req, sizeof(req),
			 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\"}", snap[i]);
		r = uffd_call(sock, req, true);
		assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
		json_decref(r);
	}
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap[1], 0, 2, "uffd-wp");
}

/*
 * A kernel without WP_UNPOPULATED (before 6.4, e.g. the nested test host's
 * 6.1), made to answer so by a test hook: the untouched pages are mapped to
 * the zero page before arming; the snapshot restores strictly both ways.
 */
static void test_kernel_without_wp_unpopulated(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], req[800];
	json_t *r;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap-populate", dir);
	setenv("FORKD_FAULT_INJECT", "no-wp-unpopulated", 1);
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	unsetenv("FORKD_FAULT_INJECT");
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\"}",
		 snap);
	r = uffd_call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
	assert_string_equal(json_string_value(json_object_get(r, "unpopulated")), "populate-read");
	json_decref(r);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap, 0, 2, "uffd-wp");
	uffd_restore_uffd_and_verify(snap, 0, 2, "uffd-wp");
}

/* 3 GiB + 256 MiB: cpu0 fills the low region, so cpu1's writer lives above 4 GiB. */
static void test_guest_above_4g(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], req[800], base[64];
	json_t *r;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap-4g", dir);
	start_source_on_new_socket(
	    &p, sock, "3328M",
	    "work=touch,pattern touch_mib=3030 pattern_mib=32 pattern_freeze=genid");
	uffd_expect_writer_above_4g(&p, base, sizeof(base));
	/* In the background: in the nested host 3.25 GiB outlasts one control call's 60 s. */
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\",\"wait\":false}",
		 snap);
	json_decref(uffd_call(sock, req, true));
	r = uffd_wait_snapshot(sock, snap, NULL);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
	if (uffd_reply_int(r, "fault_copies") + uffd_reply_int(r, "bulk_copies") != 3328LL * 256)
		fail_msg("%lld pages copied, expected all %lld",
			 uffd_reply_int(r, "fault_copies") + uffd_reply_int(r, "bulk_copies"),
			 3328LL * 256);
	json_decref(r);
	uffd_source_verifies_live(&p, 1, 1, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap, 1, 1, "uffd-wp");
}

/*
 * The write-fault handler injected to end (or to stop answering): the
 * snapshot fails naming why, nothing is left at the path, the guest is not
 * stuck on a protected page: it runs on and verifies.
 */
static void handler_fault_case(const char *inject, const char *needle)
{
	struct vmm_proc p;
	char sock[320], snap[320], req[800], before[32], after[32];
	struct stat st;
	json_t *r;
	const char *e;

	snprintf(snap, sizeof(snap), "%s/snap-%s", dir, inject);
	setenv("FORKD_FAULT_INJECT", inject, 1);
	setenv("FORKD_UFFD_WP_STALL_MS", "300", 1);
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	unsetenv("FORKD_FAULT_INJECT");
	unsetenv("FORKD_UFFD_WP_STALL_MS");
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\"}",
		 snap);
	r = uffd_call(sock, req, false);
	e = json_string_value(json_object_get(r, "error"));
	if (!e || !strstr(e, needle) || !strstr(e, "un-protected"))
		fail_msg("%s: error '%s', expected '%s'", inject, e ? e : "(none)", needle);
	json_decref(r);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap);
	r = uffd_call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "failed");
	json_decref(r);
	assert_int_equal(stat(snap, &st), -1);
	/* The writers still make progress: its sequence advances, and verify holds. */
	vmm_send(&p, "report\n");
	assert_non_null(vmm_wait_containing(&p, "cpu0.pattern_seq", NULL, NULL, TIMEOUT_MS));
	assert_non_null(vmm_value(&p, "cpu0.pattern_seq", before, sizeof(before)));
	usleep(300 * 1000);
	vmm_send(&p, "report\n");
	for (int i = 0; i < 50; i++) {
		usleep(100 * 1000);
		if (vmm_value(&p, "cpu0.pattern_seq", after, sizeof(after)) &&
		    strcmp(after, before) != 0)
			break;
	}
	if (strcmp(after, before) == 0) {
		vmm_dump(&p);
		fail_msg("%s: the source's writer stopped (sequence %s)", inject, before);
	}
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
}

static void test_handler_that_ends(void **state)
{
	(void)state;
	handler_fault_case("uffd-wp-handler-exit", "the write-fault handler ended mid-snapshot");
}

static void test_handler_that_never_answers(void **state)
{
	(void)state;
	handler_fault_case("uffd-wp-handler-stall", "never answered");
}

/* Bad requests: refused naming the argument and what was expected; the VM runs on. */
static void test_bad_requests(void **state)
{
	struct vmm_proc p;
	char sock[320], req[800];
	json_t *r;
	const char *e;

	(void)state;
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s/x\",\"engine\":\"bogus\"}",
		 dir);
	r = uffd_call(sock, req, false);
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	assert_non_null(strstr(e, "engine 'bogus': expected fork, uffd-wp or uffd-wp-async"));
	json_decref(r);
	snprintf(
	    req, sizeof(req),
	    "{\"cmd\":\"snapshot\",\"path\":\"%s/x\",\"engine\":\"uffd-wp\",\"mode\":\"stop\"}",
	    dir);
	r = uffd_call(sock, req, false);
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "mode live"));
	json_decref(r);
	/* An existing target is refused before the pause. */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\"}",
		 dir);
	r = uffd_call(sock, req, false);
	assert_non_null(strstr(json_string_value(json_object_get(r, "error")), "already exists"));
	json_decref(r);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
}

/*
 * Item 5: a child restored lazily from PATH.live while the snapshot is still
 * writing (the copy slowed by a test hook), its pages served by the source's
 * live handler, claimed first when not copied yet: it verifies strictly.
 * PATH.live without that handler is refused. Then the snapshot completes.
 */
static void test_child_before_copy_completes(void **state)
{
	struct vmm_proc p, kid;
	char sock[320], snap[320], live[330], serve[320], kid_sock[320], req[1200];
	char *file_argv[] = {(char *)harness_vmm(), "--restore", live, NULL};
	json_t *r;
	int status;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap-live", dir);
	snprintf(live, sizeof(live), "%s.live", snap);
	snprintf(serve, sizeof(serve), "%s/serve.sock", dir);
	snprintf(kid_sock, sizeof(kid_sock), "%s/kid.sock", dir);
	setenv("FORKD_FAULT_INJECT", "uffd-wp-copy-after-child", 1);
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	unsetenv("FORKD_FAULT_INJECT");
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\",\"wait\":false,"
		 "\"serve\":\"%s\"}",
		 snap, serve);
	r = uffd_call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "writing");
	assert_string_equal(json_string_value(json_object_get(r, "live_dir")), live);
	json_decref(r);
	/* Without the live handler, PATH.live is refused: its memory file is not there yet. */
	assert_int_equal(vmm_start(&kid, file_argv), 0);
	status = vmm_wait(&kid, TIMEOUT_MS);
	if (status != 2 || !strstr(kid.err_text, "still being written")) {
		vmm_dump(&kid);
		fail_msg("restore of %s without its handler: exit %d", live, status);
	}
	vmm_free(&kid);
	/* A hostile client on the live handler's socket (no descriptor, bad JSON): refused alone.
	 */
	{
		struct sockaddr_un sa = {.sun_family = AF_UNIX};
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

		assert_true(fd >= 0);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%.100s", serve);
		assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
		assert_int_equal(write(fd, "{not json", 9), 9);
		close(fd);
	}
	/* The child, lazily from the live handler, while the copy is in progress. */
	uffd_start_lazy_restore(&kid, live, serve, kid_sock);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap);
	r = uffd_call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "writing");
	json_decref(r);
	uffd_verify_strict(&kid, 0, 2,
			   "a lazy (live handler, copy in progress) restore of a uffd-wp snapshot");
	uffd_stop_vm(&kid, kid_sock);
	r = uffd_wait_snapshot(sock, snap, NULL);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	/* Outside: the child's faults were served, some of them pages claimed before the copier. */
	if (uffd_reply_int(r, "child_faults") == 0 || uffd_reply_int(r, "child_claims") == 0 ||
	    uffd_reply_int(r, "fault_copies") + uffd_reply_int(r, "bulk_copies") +
		    uffd_reply_int(r, "child_claims") !=
		65536)
		fail_msg("child faults %lld, child claims %lld, fault copies %lld, bulk %lld: "
			 "expected the child served, some pages claimed for it, each page once",
			 uffd_reply_int(r, "child_faults"), uffd_reply_int(r, "child_claims"),
			 uffd_reply_int(r, "fault_copies"), uffd_reply_int(r, "bulk_copies"));
	json_decref(r);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap, 0, 2, "uffd-wp");
}

/*
 * A fork-engine BRANCH while a uffd-wp snapshot is being copied: the child
 * inherits the engine's state but none of its threads; it verifies strictly
 * and shuts down cleanly, and the snapshot still completes.
 */
static void test_branch_while_writing(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], req[800], bdir[320];
	json_t *r;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap-branch", dir);
	snprintf(bdir, sizeof(bdir), "%s/branch-while", dir);
	setenv("FORKD_FAULT_INJECT", "uffd-wp-slow-copy", 1);
	start_source_on_new_socket(&p, sock, "256M", PATTERN);
	unsetenv("FORKD_FAULT_INJECT");
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp\",\"wait\":false}",
		 snap);
	json_decref(uffd_call(sock, req, true));
	uffd_branch_one_strict(sock, bdir, "branch child during a uffd-wp copy");
	r = uffd_wait_snapshot(sock, snap, NULL);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap, 0, 2, "uffd-wp");
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_snapshot_under_write_load),
	    cmocka_unit_test(test_two_snapshots_waited),
	    cmocka_unit_test(test_handler_that_ends),
	    cmocka_unit_test(test_handler_that_never_answers),
	    cmocka_unit_test(test_bad_requests),
	    cmocka_unit_test(test_child_before_copy_completes),
	    cmocka_unit_test(test_branch_while_writing),
	    cmocka_unit_test(test_guest_above_4g),
	    cmocka_unit_test(test_kernel_without_wp_unpopulated),
	};
	/*
	 * test_guest_above_4g: a 3.25 GiB guest, the engine's copy of its RAM and
	 * the snapshot in the nested host's /tmp (its RAM): 10 GiB was too few.
	 */
	where_set_nested_mem_mib(14336);
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("uffd-wp live snapshots", tests, setup,
					   uffd_helpers_teardown);
}
