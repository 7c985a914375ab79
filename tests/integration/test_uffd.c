/* SPDX-License-Identifier: MIT */
/*
 * Lazy restore through userfaultfd, and memfd guest RAM, with the probe
 * guest (docs/design/userfaultfd.md): a snapshot restored with
 * --restore-mode uffd and forkd-uffd verifies strictly inside (its pattern
 * writers' memory is the snapshot instant), served lazily (outside: the
 * handler's counts); again with the first run's record prefetched, and with
 * fault-around; a guest
 * larger than 4 GiB whose writer lives above 4 GiB; a handler killed under
 * the VM and a memory file shorter than the guest (the VMM fails with a
 * clear error, never hangs); a memfd-backed VM branches strictly, twice.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "uffd_helpers.h"
#include "where.h"

#define TIMEOUT_MS   30000
#define PATTERN	     "work=pattern,pattern pattern_mib=64 pattern_freeze=genid"
#define WRITER_PAGES (64 * 256) /* pattern_mib=64 in 4 KiB pages */

static char dir[256], snap[300], record[300];

static int setup(void **state)
{
	(void)state;
	return uffd_helpers_setup(dir, sizeof(dir), "uffd", TIMEOUT_MS);
}

/* Boots a pattern guest and writes its live snapshot to path. */
static void make_snapshot(const char *path, const char *mem, const char *append)
{
	struct vmm_proc p;
	char sock[320], req[700];

	snprintf(sock, sizeof(sock), "%s/source.sock", dir);
	uffd_start_source(&p, NULL, sock, mem, append, "anon");
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", path);
	json_decref(uffd_call(sock, req, true));
	uffd_stop_vm(&p, sock);
}

static void test_lazy_restore_verifies_strictly(void **state)
{
	struct handler h;
	struct stat st;
	long long copied, zeroed;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(record, sizeof(record), "%s/first-touch", dir);
	make_snapshot(snap, "256M", PATTERN);
	handler_start(&h, "--snapshot", snap, "--record", record, NULL);
	uffd_lazy_restore_and_verify(&h, snap, 0, 2, "a lazy restore");
	copied = handler_count(&h, "copied");
	zeroed = handler_count(&h, "zeroed");
	/* Outside: both writers' pages came from the file, and only touched pages did. */
	/* (A writer's pages it had not written yet at the snapshot are holes: zeros.) */
	if (copied + zeroed < 2 * WRITER_PAGES || copied + zeroed >= 65536 || copied == 0)
		fail_msg("copied %lld, zeroed %lld of 65536 pages: expected every pattern page "
			 "(%d) and not all of RAM",
			 copied, zeroed, 2 * WRITER_PAGES);
	/* Two threads faulting on one page are two faults: the second finds it filled. */
	assert_int_equal(handler_count(&h, "faults"),
			 copied + zeroed + handler_count(&h, "already"));
	assert_int_equal(stat(record, &st), 0);
	assert_int_equal(st.st_size, 8 * handler_count(&h, "recorded"));
	assert_int_equal(handler_count(&h, "recorded"), copied + zeroed);
}

static void test_lazy_restore_with_prefetch(void **state)
{
	struct handler h;
	long long prefetched;

	(void)state;
	handler_start(&h, "--snapshot", snap, "--prefetch", record, NULL);
	uffd_lazy_restore_and_verify(&h, snap, 0, 2, "a lazy restore");
	prefetched = handler_count(&h, "prefetched");
	/* The recorded working set went in bulk; faults only for what prefetch had not reached. */
	if (prefetched == 0 || handler_count(&h, "faults") >= 2 * WRITER_PAGES)
		fail_msg("prefetched %lld pages, %lld faults: the record was not replayed",
			 prefetched, handler_count(&h, "faults"));
}

static void test_lazy_restore_with_fault_around(void **state)
{
	struct handler h;
	long long faults, served;

	(void)state;
	handler_start(&h, "--snapshot", snap, "--fault-around", "64", NULL);
	uffd_lazy_restore_and_verify(&h, snap, 0, 2, "a lazy restore");
	faults = handler_count(&h, "faults");
	served =
	    handler_count(&h, "copied") + handler_count(&h, "zeroed") + handler_count(&h, "around");
	/* Each fault filled its neighbours too: far fewer faults than pages served. */
	if (handler_count(&h, "around") == 0 || served < 2 * WRITER_PAGES || faults * 4 > served)
		fail_msg("%lld faults for %lld pages served: fault-around did not fill blocks",
			 faults, served);
}

/*
 * 3 GiB + 256 MiB: RAM above 4 GiB is the second region. cpu0 fills the
 * low region (touch), so cpu1's pattern lands above 4 GiB.
 */
static void test_guest_above_4g(void **state)
{
	struct handler h;
	struct vmm_proc p;
	char snap4g[300], control[320], base[64], req[700];
	json_t *r;

	(void)state;
	snprintf(snap4g, sizeof(snap4g), "%s/snap-4g", dir);
	snprintf(control, sizeof(control), "%s/source.sock", dir);
	uffd_start_source(&p, NULL, control, "3328M",
			  "work=touch,pattern touch_mib=3030 pattern_mib=32 pattern_freeze=genid",
			  "anon");
	uffd_expect_writer_above_4g(&p, base, sizeof(base));
	/*
	 * Written in the background and followed with snapshot-status: in the
	 * nested test host, writing 3.25 GiB takes longer than one control
	 * call may wait.
	 */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"wait\":false}", snap4g);
	json_decref(uffd_call(control, req, true));
	r = uffd_wait_snapshot(control, snap4g, NULL);
	assert_string_equal(json_string_value(json_object_get(r, "snapshot")), "ready");
	json_decref(r);
	uffd_stop_vm(&p, control);
	handler_start(&h, "--snapshot", snap4g, NULL);
	uffd_lazy_restore_and_verify(&h, snap4g, 1, 1, "a lazy restore");
	/* The writer's pages, all in the second region, came from the file. */
	assert_true(handler_count(&h, "copied") >= 32 * 256);
}

/* status: 1 when the VM failed running, 2 when it failed to start. */
static void expect_vmm_fails(struct vmm_proc *p, int want, const char *needle)
{
	int status = vmm_wait(p, TIMEOUT_MS);

	if (status == -ETIMEDOUT) {
		vmm_kill(p);
		vmm_dump(p);
		fail_msg("the VMM hung instead of failing with '%s'", needle);
	}
	if (status != want || !strstr(p->err_text, needle)) {
		vmm_dump(p);
		fail_msg("VMM exit %d, expected %d and '%s'", status, want, needle);
	}
	vmm_free(p);
}

static void test_handler_that_dies(void **state)
{
	struct handler h;
	struct vmm_proc p;
	char control[320], missing[320];

	(void)state;
	snprintf(control, sizeof(control), "%s/restored.sock", dir);
	handler_start(&h, "--snapshot", snap, NULL);
	uffd_start_lazy_restore(&p, snap, h.sock, control);
	uffd_wait_writers_frozen(&p, 0, 2);
	kill(h.pid, SIGKILL);
	expect_vmm_fails(&p, 1, "uffd handler");
	assert_non_null(strstr(p.err_text, "exited before the VM"));
	assert_int_equal(handler_wait(&h), 128 + SIGKILL);

	/* No handler at all: refused at start, naming the socket. */
	snprintf(missing, sizeof(missing), "%s/nobody.sock", dir);
	uffd_start_lazy_restore(&p, snap, missing, control);
	expect_vmm_fails(&p, 2, "cannot connect");
	assert_non_null(strstr(p.err_text, missing));
}

static void test_memory_file_shorter_than_the_guest(void **state)
{
	struct handler h;
	struct vmm_proc p;
	char control[320], short_mem[320], cmd[1400];

	(void)state;
	snprintf(short_mem, sizeof(short_mem), "%s/short-memory", dir);
	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s/memory' '%s' && truncate -s 128M '%s'",
		 snap, short_mem, short_mem);
	assert_int_equal(system(cmd), 0);
	snprintf(control, sizeof(control), "%s/restored.sock", dir);
	handler_start(&h, "--memory", short_mem, NULL);
	uffd_start_lazy_restore(&p, snap, h.sock, control);
	expect_vmm_fails(&p, 1, "exited before the VM");
	assert_int_equal(handler_wait(&h), 1);
	if (!strstr(handler_stderr(&h), "ends past the memory file's 134217728 bytes"))
		fail_msg("forkd-uffd said: %s", handler_stderr(&h));
}

static void test_memfd_vm_branches_strictly(void **state)
{
	struct vmm_proc p;
	char sock[320], path[64], target[128];
	bool found = false;

	(void)state;
	snprintf(sock, sizeof(sock), "%s/memfd.sock", dir);
	uffd_start_source(&p, NULL, sock, "256M", PATTERN, "memfd");
	/* Outside: the VMM's guest RAM is a memfd. */
	for (int fd = 3; fd < 64 && !found; fd++) {
		char link[64];
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/%d/fd/%d", (int)p.pid, fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n > 0) {
			target[n] = '\0';
			found = strstr(target, "memfd:forkd-guest-ram") != NULL;
		}
	}
	snprintf(path, sizeof(path), "pid %d", (int)p.pid);
	if (!found)
		fail_msg("%s: no memfd:forkd-guest-ram among its descriptors", path);
	/* The first branch turns it private; the second branches private memfd pages. */
	for (int round = 1; round <= 2; round++) {
		char bdir[400], child[64];

		snprintf(bdir, sizeof(bdir), "%s/memfd-b%d", dir, round);
		snprintf(child, sizeof(child), "memfd child (round %d)", round);
		uffd_branch_one_strict(sock, bdir, child);
	}
	/* The source ran on, its own (live) verification holds. */
	uffd_source_verifies_live(&p, 0, 2, "two branches");
	uffd_stop_vm(&p, sock);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    /* First: the snapshot and record the next ones use. */
	    cmocka_unit_test(test_lazy_restore_verifies_strictly),
	    cmocka_unit_test(test_lazy_restore_with_prefetch),
	    cmocka_unit_test(test_lazy_restore_with_fault_around),
	    cmocka_unit_test(test_handler_that_dies),
	    cmocka_unit_test(test_memory_file_shorter_than_the_guest),
	    cmocka_unit_test(test_memfd_vm_branches_strictly),
	    cmocka_unit_test(test_guest_above_4g),
	};
	/* test_guest_above_4g: a 3.25 GiB guest, its snapshot in /tmp, and its lazy restore. */
	where_set_nested_mem_mib(10240);
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("uffd lazy restore and memfd RAM", tests, setup,
					   uffd_helpers_teardown);
}
