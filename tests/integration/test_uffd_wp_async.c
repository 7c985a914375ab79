/* SPDX-License-Identifier: MIT */
/*
 * Live snapshots of engine uffd-wp-async (src/state/live_async.c, docs/design/
 * userfaultfd.md "Variant B") with the probe guest, natively: a 2-vCPU pattern
 * guest snapshotted under write load restores (file and uffd modes) and
 * verifies strictly inside, while the source runs on and verifies live; the
 * same for a guest larger than 4 GiB whose writer lives above 4 GiB; a full
 * disk (a small tmpfs: ENOSPC) fails the snapshot, leaves no file and the VM
 * running; a second snapshot while one is written is refused; a VM that exits
 * mid-snapshot leaves nothing behind. On a kernel without WP_ASYNC or
 * PAGEMAP_SCAN every test checks the clear refusal instead, and says so.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "uffd_helpers.h"
#include "where.h"
#include "state/live_async.h"

#define TIMEOUT_MS 60000
#define PATTERN	   "work=pattern,pattern pattern_mib=64 pattern_freeze=genid"

static char dir[256], tmpfs_dir[300];
static bool supported; /* this kernel has WP_ASYNC and PAGEMAP_SCAN */
static char refusal[512];

static int setup(void **state)
{
	struct fk_err err = {0};

	(void)state;
	supported = live_async_supported(&err) == 0;
	snprintf(refusal, sizeof(refusal), "%s", err.msg);
	printf("# uffd-wp-async: %s\n",
	       supported ? "variant B runs (WP_ASYNC and PAGEMAP_SCAN present)"
			 : "the kernel refuses variant B; checking the refusal:");
	if (!supported)
		printf("# %s\n", refusal);
	return uffd_helpers_setup(dir, sizeof(dir), "uffdwpasync", TIMEOUT_MS);
}

/* The engine runs in the source: under ASan+UBSan except for the big guest (speed). */
static void start_source_sanitized(struct vmm_proc *p, const char *sock, const char *mem,
				   const char *append)
{
	bool big = strtoull(mem, NULL, 10) > 1024;

	uffd_start_source(p, big ? NULL : harness_vmm_asan(), sock, mem, append, NULL);
}

/* Starts the snapshot (wait false): the reply says "writing", the path does not exist yet. */
static void start_async(const char *sock, const char *path)
{
	char req[800];
	json_t *r;
	struct stat st;

	snprintf(
	    req, sizeof(req),
	    "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp-async\",\"wait\":false}",
	    path);
	r = uffd_call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "writing");
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	/* "ready" is the rename of a complete directory: nothing at the path before it. */
	assert_int_not_equal(stat(path, &st) == 0 && !S_ISDIR(st.st_mode), 1);
}

/* When the kernel lacks the feature: the request is refused, naming it. */
static void expect_refusal(const char *sock, const char *path)
{
	char req[800];
	json_t *r;
	const char *e;

	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp-async\"}", path);
	r = uffd_call(sock, req, false);
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	if (!strstr(e, "WP_ASYNC") && !strstr(e, "PAGEMAP_SCAN"))
		fail_msg("refusal does not name the missing feature: %s", e);
	printf("# refused as expected: %s\n", e);
	json_decref(r);
}

/*
 * On a kernel without variant B, each test checks the refusal instead: a
 * 256 MiB source on sock refuses a snapshot to path, naming the missing
 * feature. Returns true when that was checked (the test is done).
 */
static bool refusal_checked(const char *sock, const char *path)
{
	struct vmm_proc p;

	if (supported)
		return false;
	start_source_sanitized(&p, sock, "256M", PATTERN);
	expect_refusal(sock, path);
	uffd_stop_vm(&p, sock);
	return true;
}

/* Outside the source: no userfaultfd left among its descriptors once the snapshot ended. */
static void expect_no_uffd(pid_t pid)
{
	char path[64], link[400], target[128];
	struct dirent *e;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	d = opendir(path);
	assert_non_null(d);
	while ((e = readdir(d))) {
		ssize_t n;

		snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n <= 0)
			continue;
		target[n] = '\0';
		if (strstr(target, "userfaultfd")) {
			closedir(d);
			fail_msg("pid %d still holds %s (fd %s)", (int)pid, target, e->d_name);
		}
	}
	closedir(d);
}

static void test_snapshot_under_write_load(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320];
	int writing = 0;
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/source.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	if (refusal_checked(sock, snap))
		return;
	start_source_sanitized(&p, sock, "256M", PATTERN);
	start_async(sock, snap);
	r = uffd_wait_snapshot(sock, snap, &writing);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	printf("# 256 MiB under write load: rounds %lld, final dirty pages %lld, pause %lld us, "
	       "complete %lld ms (status 'writing' seen %d times)\n",
	       uffd_reply_int(r, "rounds"), uffd_reply_int(r, "final_dirty_pages"),
	       uffd_reply_int(r, "pause_us"), uffd_reply_int(r, "complete_us") / 1000, writing);
	/* The pattern writers dirty pages all the time: the pre-copy saw them, and copied all. */
	assert_true(uffd_reply_int(r, "precopy_pages") > 2 * 64 * 256);
	assert_true(uffd_reply_int(r, "rounds") >= 1);
	assert_true(uffd_reply_int(r, "final_dirty_pages") > 0);
	json_decref(r);
	/* Outside: the VM ran on, its protection dropped with the userfaultfd. */
	r = uffd_call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	expect_no_uffd(p.pid);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp-async snapshot");
	uffd_restore_file_and_verify(snap, 0, 2, "uffd-wp-async");
	uffd_restore_uffd_and_verify(snap, 0, 2, "uffd-wp-async");
	/* A second one after the first completed is fine (one at a time, not one ever). */
	{
		char snap2[340];

		snprintf(snap2, sizeof(snap2), "%s/snap-again", dir);
		start_async(sock, snap2);
		r = uffd_wait_snapshot(sock, snap2, &writing);
		assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
		json_decref(r);
		uffd_restore_file_and_verify(snap2, 0, 2, "uffd-wp-async");
	}
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp-async snapshot");
	uffd_stop_vm(&p, sock);
}

static void test_guest_above_4g(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], base[128];
	int writing = 0;
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/big.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap-4g", dir);
	/* The refusal does not need 4.5 GiB (nor does a nested host have it). */
	if (refusal_checked(sock, snap))
		return;
	start_source_sanitized(
	    &p, sock, "4608M",
	    "work=touch,pattern touch_mib=3030 pattern_mib=64 pattern_freeze=genid");
	uffd_expect_writer_above_4g(&p, base, sizeof(base));
	start_async(sock, snap);
	r = uffd_wait_snapshot(sock, snap, &writing);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	printf("# 4608 MiB, writer at %s: rounds %lld, final dirty pages %lld, pause %lld us, "
	       "complete %lld ms\n",
	       base, uffd_reply_int(r, "rounds"), uffd_reply_int(r, "final_dirty_pages"),
	       uffd_reply_int(r, "pause_us"), uffd_reply_int(r, "complete_us") / 1000);
	/* Pass 0 copied the low region's touched pages and the writer's above 4 GiB. */
	assert_true(uffd_reply_int(r, "precopy_pages") >= (3030 + 64) * 256);
	json_decref(r);
	uffd_source_verifies_live(&p, 1, 1, "a uffd-wp-async snapshot");
	uffd_stop_vm(&p, sock);
	uffd_restore_file_and_verify(snap, 1, 1, "uffd-wp-async");
}

static int umount_tmpfs(void **state)
{
	(void)state;
	if (tmpfs_dir[0]) {
		umount2(tmpfs_dir, MNT_DETACH);
		rmdir(tmpfs_dir);
		tmpfs_dir[0] = '\0';
	}
	return 0;
}

static int dir_entries(const char *path)
{
	struct dirent *e;
	int n = 0;
	DIR *d = opendir(path);

	assert_non_null(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

/* A disk that fills up mid-copy: failed with ENOSPC's text, nothing left, the VM running. */
static void test_disk_full(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[340];
	int writing = 0;
	json_t *r;
	const char *e;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/full.sock", dir);
	snprintf(tmpfs_dir, sizeof(tmpfs_dir), "%s/small", dir);
	snprintf(snap, sizeof(snap), "%s/snap", tmpfs_dir);
	assert_int_equal(mkdir(tmpfs_dir, 0700), 0);
	if (mount("forkd-test", tmpfs_dir, "tmpfs", MS_NOSUID | MS_NODEV, "size=48m") < 0)
		fail_msg("mount a 48 MiB tmpfs on %s: %s", tmpfs_dir, strerror(errno));
	if (refusal_checked(sock, snap))
		return;
	start_source_sanitized(&p, sock, "256M", PATTERN);
	start_async(sock, snap);
	r = uffd_wait_snapshot(sock, snap, &writing);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "failed");
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	if (!strstr(e, "No space left on device") || !strstr(e, snap))
		fail_msg("error does not name ENOSPC and the path: %s", e);
	printf("# disk full: %s\n", e);
	json_decref(r);
	/* Outside: no snapshot, no temp dir, no staging file (O_TMPFILE) on the tmpfs. */
	assert_int_equal(dir_entries(tmpfs_dir), 0);
	r = uffd_call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	expect_no_uffd(p.pid);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp-async snapshot");
	uffd_stop_vm(&p, sock);
}

/*
 * One at a time: a second request while the first writes is refused, naming
 * the first; then the VM exits mid-snapshot, cleanly, leaving nothing.
 */
static void test_second_request_and_exit_mid_snapshot(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[400], snap2[400], req[1000], parent[320];
	json_t *r;
	const char *e;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/busy.sock", dir);
	snprintf(parent, sizeof(parent), "%s/busy", dir);
	snprintf(snap, sizeof(snap), "%s/one", parent);
	snprintf(snap2, sizeof(snap2), "%s/two", parent);
	assert_int_equal(mkdir(parent, 0700), 0);
	if (refusal_checked(sock, snap))
		return;
	/* 2 GiB touched: the pre-copy takes long enough to be caught writing. */
	start_source_sanitized(
	    &p, sock, "2304M",
	    "work=touch,pattern touch_mib=2048 pattern_mib=64 pattern_freeze=genid");
	start_async(sock, snap);
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"engine\":\"uffd-wp-async\"}", snap2);
	r = uffd_call(sock, req, false);
	e = json_string_value(json_object_get(r, "error"));
	assert_non_null(e);
	if (!strstr(e, "being written to") || !strstr(e, snap))
		fail_msg("second snapshot: %s", e);
	json_decref(r);
	/* Mid-snapshot, the VM exits: it ends cleanly, and nothing stays in the directory. */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap);
	r = uffd_call(sock, req, true);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "writing") != 0)
		printf("# note: the snapshot was %s before the shutdown\n",
		       json_string_value(json_object_get(r, "snapshot")));
	json_decref(r);
	uffd_stop_vm(&p, sock);
	{
		struct dirent *de;
		DIR *d = opendir(parent);

		assert_non_null(d);
		while ((de = readdir(d)))
			if (strstr(de->d_name, ".tmp-"))
				fail_msg("%s/%s left behind by a VM that exited mid-snapshot",
					 parent, de->d_name);
		closedir(d);
	}
}

/*
 * A BRANCH (the fork engine) while a uffd-wp-async snapshot is written: the
 * fork neither loses the parent's tracking nor hands it to the zygote; the
 * child and the snapshot each verify strictly, the source live.
 */
static void test_branch_while_writing(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320], bdir[340];
	int writing = 0;
	json_t *r;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/branching.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap-branching", dir);
	if (refusal_checked(sock, snap))
		return;
	start_source_sanitized(&p, sock, "256M", PATTERN);
	start_async(sock, snap);
	snprintf(bdir, sizeof(bdir), "%s/async-b1", dir);
	uffd_branch_one_strict(sock, bdir,
			       "child of a BRANCH during a uffd-wp-async snapshot (round 1)");
	r = uffd_wait_snapshot(sock, snap, &writing);
	if (strcmp(json_string_value(json_object_get(r, "snapshot")), "ready") != 0)
		fail_msg("snapshot: %s", json_string_value(json_object_get(r, "error")));
	json_decref(r);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp-async snapshot");
	uffd_restore_file_and_verify(snap, 0, 2, "uffd-wp-async");
	uffd_stop_vm(&p, sock);
}

/*
 * Whatever this kernel has: a VMM told to answer as a kernel without
 * WP_ASYNC would (FORKD_FAULT_INJECT=no-wp-async) refuses the engine with
 * the feature's name, the VM running on.
 */
static void test_refused_without_wp_async(void **state)
{
	struct vmm_proc p;
	char sock[320], snap[320];
	json_t *r;
	struct stat st;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/refuse.sock", dir);
	snprintf(snap, sizeof(snap), "%s/refused", dir);
	setenv("FORKD_FAULT_INJECT", "no-wp-async", 1);
	start_source_sanitized(&p, sock, "256M", PATTERN);
	unsetenv("FORKD_FAULT_INJECT");
	expect_refusal(sock, snap);
	assert_int_not_equal(stat(snap, &st), 0);
	r = uffd_call(sock, "{\"cmd\":\"status\"}", true);
	assert_string_equal(json_string_value(json_object_get(r, "state")), "running");
	json_decref(r);
	expect_no_uffd(p.pid);
	uffd_source_verifies_live(&p, 0, 2, "a uffd-wp-async snapshot");
	uffd_stop_vm(&p, sock);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_refused_without_wp_async),
	    cmocka_unit_test(test_snapshot_under_write_load),
	    cmocka_unit_test(test_branch_while_writing),
	    cmocka_unit_test_teardown(test_disk_full, umount_tmpfs),
	    cmocka_unit_test(test_second_request_and_exit_mid_snapshot),
	    cmocka_unit_test(test_guest_above_4g),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("uffd-wp-async live snapshots", tests, setup,
					   uffd_helpers_teardown);
}
