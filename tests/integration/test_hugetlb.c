/* SPDX-License-Identifier: MIT */
/*
 * Guest RAM on 2 MiB hugetlb pages (`--mem-backend hugetlb`): the mapping
 * BRANCH forks never splits, so the fork stays flat with memory size. Checked
 * from inside (BRANCH children's pattern writers freeze on their new
 * generation ID and `verify strict` proves each child's memory is the one
 * branch instant) and from outside (the pool's reservation counters move by
 * the guest's RAM, the source's guest mapping is hugetlb and shared with its
 * zygote after the fork, and every page is back in the pool at the end). Bad
 * input: no free huge pages, a size that is not a multiple of 2 MiB,
 * --restore with the backend. A live snapshot of such a VM restores strictly.
 *
 * The test raises /proc/sys/vm/nr_hugepages by what it needs and puts the
 * value back afterwards, also when a test fails (teardown).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS   30000
#define WRITERS	     2
#define GUEST_MIB    64
#define CHILDREN     2
#define HUGETLB_PATH "/sys/kernel/mm/hugepages/hugepages-2048kB/"
/* The source's RAM, plus the 2 MiB copies its writers and the children make while shared. */
#define POOL_EXTRA (GUEST_MIB / 2 + 64)

static char dir[256];
static int counter;
/* The machine's pool size before this test, restored by teardown whatever happened. */
static long pool_before = -1;

static long hugetlb_read(const char *name)
{
	char path[200];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), HUGETLB_PATH "%s", name);
	f = fopen(path, "r");
	if (!f)
		return -1;
	if (fscanf(f, "%ld", &v) != 1)
		v = -1;
	fclose(f);
	return v;
}

static int hugetlb_set_pool(long pages)
{
	FILE *f = fopen(HUGETLB_PATH "nr_hugepages", "w");
	int ret;

	if (!f)
		return -1;
	ret = fprintf(f, "%ld\n", pages) > 0 ? 0 : -1;
	if (fclose(f) != 0)
		ret = -1;
	return ret;
}

/* Pages of the pool neither in use nor promised to a mapping. */
static long hugetlb_available(void)
{
	return hugetlb_read("free_hugepages") - hugetlb_read("resv_hugepages");
}

static int setup(void **state)
{
	(void)state;
	pool_before = hugetlb_read("nr_hugepages");
	if (pool_before < 0) {
		fprintf(stderr, "cannot read " HUGETLB_PATH "nr_hugepages: this kernel has no "
				"2 MiB hugetlb pages\n");
		return -1;
	}
	return harness_tmpdir_create(dir, sizeof(dir), "hugetlb");
}

static int teardown(void **state)
{
	pid_t pids[64];
	size_t n = harness_vmm_pids(dir, pids, 64);

	(void)state;
	for (size_t i = 0; i < n; i++)
		kill(pids[i], SIGKILL);
	/* Let the kernel free the killed VMMs' pages before the pool shrinks back. */
	for (int i = 0; i < 100 && harness_vmm_pids(dir, pids, 64) > 0; i++)
		usleep(20 * 1000);
	if (pool_before >= 0)
		hugetlb_set_pool(pool_before);
	return harness_tmpdir_remove(dir);
}

/* Raises the pool so that `pages` more are available; fails the test if the kernel cannot. */
static void pool_make_available(long pages)
{
	long want = hugetlb_read("nr_hugepages") + pages - hugetlb_available();

	if (hugetlb_available() >= pages)
		return;
	assert_int_equal(hugetlb_set_pool(want), 0);
	if (hugetlb_available() < pages)
		fail_msg("raised nr_hugepages to %ld, but only %ld 2 MiB pages are available, %ld "
			 "needed (host memory fragmented or in use)",
			 want, hugetlb_available(), pages);
}

/* Sum of one smaps field over the mappings of pid, in KiB. */
static long smaps_sum(pid_t pid, const char *field)
{
	char path[64], line[256];
	size_t len = strlen(field);
	long sum = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, field, len) == 0 && line[len] == ':')
			sum += atol(line + len + 1);
	fclose(f);
	return sum;
}

static json_t *call(const char *sock, const char *req, bool want_ok)
{
	json_t *reply = harness_call_expect(sock, req, want_ok);

	assert_non_null(reply);
	return reply;
}

static char *kid_line(const char *kid, const char *prefix, int skip)
{
	char log[600];
	char *line;

	snprintf(log, sizeof(log), "%.400s/serial.log", kid);
	line = file_wait_line(log, prefix, skip, TIMEOUT_MS);
	if (!line) {
		char cmd[1400];
		fprintf(stderr, "child %s: no line starting with '%s'; its console:\n", kid,
			prefix);
		snprintf(cmd, sizeof(cmd), "cat '%s' >&2", log);
		if (system(cmd)) {
		}
	}
	assert_non_null(line);
	return line;
}

/* Inside the child: writers frozen at the branch, memory equal to one instant. */
static void kid_verify_strict(const char *kid)
{
	char want[64], buf[32], in[600], log[600], *l;
	int skip;

	free(kid_line(kid, "genid.changed=", 0));
	free(kid_line(kid, "pattern.frozen=1", 0));
	snprintf(log, sizeof(log), "%.400s/serial.log", kid);
	skip = file_count_lines(log);
	snprintf(in, sizeof(in), "%.400s/serial.in", kid);
	assert_int_equal(fifo_send(in, "verify strict\n"), 0);
	for (int i = 0; i < WRITERS; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		l = kid_line(kid, want, skip);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(line_value(l, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict"))
			fail_msg("child %s: %s", kid, l);
		free(l);
	}
}

static void kid_shutdown(const char *kid, pid_t pid)
{
	char sock[600];

	snprintf(sock, sizeof(sock), "%.400s/control.sock", kid);
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	for (int i = 0; i < 250 && kill(pid, 0) == 0; i++)
		usleep(20 * 1000);
}

static void test_branch_children_verify_strictly(void **state)
{
	char sock[300], req[600], mem[16], kids[CHILDREN][400];
	pid_t kid_pids[CHILDREN];
	struct vmm_proc p;
	long avail_before, resv_src, shared_kib;
	json_t *r, *children;

	(void)state;
	pool_make_available(GUEST_MIB / 2 + POOL_EXTRA);
	avail_before = hugetlb_available();
	snprintf(sock, sizeof(sock), "%s/src-%d.sock", dir, ++counter);
	snprintf(mem, sizeof(mem), "%dM", GUEST_MIB);
	probe_start(&p, NULL, mem, "2", "work=pattern,pattern pattern_mib=8 pattern_freeze=genid",
		    "--mem-backend", "hugetlb", "--control", sock, NULL);
	assert_non_null(vmm_need_line(&p, "DONE", TIMEOUT_MS));
	/* Outside: the whole RAM was taken from the pool at start (reserved or in use). */
	resv_src = avail_before - hugetlb_available();
	if (resv_src != GUEST_MIB / 2)
		fail_msg("the source took %ld 2 MiB pages from the pool; expected %d for %d MiB",
			 resv_src, GUEST_MIB / 2, GUEST_MIB);
	assert_true(smaps_sum(p.pid, "Private_Hugetlb") > 0);
	assert_int_equal(smaps_sum(p.pid, "Shared_Hugetlb"), 0);

	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":%d,\"dir\":\"%s/b%d\"}", CHILDREN,
		 dir, ++counter);
	r = call(sock, req, true);
	children = json_object_get(r, "children");
	assert_int_equal(json_array_size(children), CHILDREN);
	for (int i = 0; i < CHILDREN; i++) {
		json_t *c = json_array_get(children, i);
		snprintf(kids[i], sizeof(kids[i]), "%s",
			 json_string_value(json_object_get(c, "dir")));
		kid_pids[i] = (pid_t)json_integer_value(json_object_get(c, "pid"));
	}
	json_decref(r);
	/* Outside: after the fork the source shares huge pages with its zygote and children. */
	shared_kib = smaps_sum(p.pid, "Shared_Hugetlb");
	if (shared_kib <= 0)
		fail_msg("source: Shared_Hugetlb %ld KiB after BRANCH; expected its RAM shared",
			 shared_kib);
	for (int i = 0; i < CHILDREN; i++)
		kid_verify_strict(kids[i]);
	/* The source ran on: its writers still verify live. */
	vmm_send(&p, "verify\n");
	for (int i = 0; i < WRITERS; i++) {
		char want[32], buf[32];
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		assert_non_null(vmm_need_line(&p, want, TIMEOUT_MS));
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&p, want, buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
	}
	for (int i = 0; i < CHILDREN; i++)
		kid_shutdown(kids[i], kid_pids[i]);
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);
	/* Every huge page went back to the pool with the last process that mapped it. */
	for (int i = 0; i < 100 && hugetlb_available() != avail_before; i++)
		usleep(20 * 1000);
	assert_int_equal(hugetlb_available(), avail_before);
}

/*
 * A live snapshot of a hugetlb VM under write load (its zygote writes the
 * shared hugetlb RAM while the source runs on) restores, on ordinary memory,
 * to a guest whose memory is exactly the snapshot instant (strict, inside).
 */
static void test_live_snapshot_restores_strictly(void **state)
{
	char sock[300], snap[300], req[700], rsock[300], mem[16];
	char *restore[] = {(char *)harness_vmm(), "--restore", snap, "--control", rsock, NULL};
	struct vmm_proc p, r;
	long avail_before;
	json_t *reply;

	(void)state;
	pool_make_available(GUEST_MIB / 2 + POOL_EXTRA);
	avail_before = hugetlb_available();
	snprintf(sock, sizeof(sock), "%s/live-%d.sock", dir, ++counter);
	snprintf(snap, sizeof(snap), "%s/snap-%d", dir, counter);
	snprintf(rsock, sizeof(rsock), "%s/restored-%d.sock", dir, counter);
	snprintf(mem, sizeof(mem), "%dM", GUEST_MIB);
	probe_start(&p, NULL, mem, "2", "work=pattern,pattern pattern_mib=8 pattern_freeze=genid",
		    "--mem-backend", "hugetlb", "--control", sock, NULL);
	assert_non_null(vmm_need_line(&p, "DONE", TIMEOUT_MS));
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	reply = call(sock, req, true);
	assert_string_equal(json_string_value(json_object_get(reply, "mode")), "live");
	assert_string_equal(json_string_value(json_object_get(reply, "snapshot")), "ready");
	json_decref(reply);
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);

	assert_int_equal(vmm_start(&r, restore), 0);
	assert_non_null(vmm_need_line(&r, "pattern.frozen=1", TIMEOUT_MS));
	vmm_send(&r, "verify strict\n");
	for (int i = 0; i < WRITERS; i++) {
		char want[32], buf[32];
		const char *l;

		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		l = vmm_need_line(&r, want, TIMEOUT_MS);
		assert_non_null(l);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&r, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict"))
			fail_msg("restored %s: %s", snap, l);
	}
	json_decref(call(rsock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&r, TIMEOUT_MS), 0);
	vmm_free(&r);
	/* The restored VM mapped the file, not the pool; the source's pages came back. */
	for (int i = 0; i < 100 && hugetlb_available() != avail_before; i++)
		usleep(20 * 1000);
	assert_int_equal(hugetlb_available(), avail_before);
}

/* Runs forkd-vmm with argv (NULL-terminated); it must exit non-zero saying needle. */
static void expect_refused_argv(char *const argv[], int want_status, const char *needle)
{
	struct vmm_proc p;
	int status = vmm_run_to_exit(&p, argv, TIMEOUT_MS);

	if (status == 0 || (want_status && status != want_status) || !strstr(p.err_text, needle)) {
		vmm_dump(&p);
		fail_msg("exit %d, expected a failure (status %d) saying '%s'", status, want_status,
			 needle);
	}
	vmm_free(&p);
}

/* A probe boot with --mem mem on hugetlb that must be refused. */
static void expect_refused(const char *mem, const char *needle)
{
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--mem",
			(char *)mem,
			"--mem-backend",
			"hugetlb",
			"--append",
			"work=idle",
			"--serial",
			"none",
			NULL};

	expect_refused_argv(argv, 0, needle);
}

static void test_no_free_huge_pages_is_a_clear_error(void **state)
{
	char mem[32], needle[160];
	long avail, want_pages;

	(void)state;
	/* One page more than the pool can give now (at least the 32 MiB minimum). */
	avail = hugetlb_available();
	assert_true(avail >= 0);
	want_pages = avail + 1 < 16 ? 16 : avail + 1;
	snprintf(mem, sizeof(mem), "%ldM", want_pages * 2);
	snprintf(needle, sizeof(needle),
		 "--mem-backend hugetlb needs %ld free 2 MiB huge pages for %ld MiB of RAM, but "
		 "only %ld are free",
		 want_pages, want_pages * 2, avail);
	expect_refused(mem, needle);
	/* Nothing was taken from the pool by the refused start. */
	assert_int_equal(hugetlb_available(), avail);
}

static void test_bad_input(void **state)
{
	char *restore[] = {(char *)harness_vmm(), "--restore", dir,
			   "--mem-backend",	  "hugetlb",   NULL};
	char *unknown[] = {(char *)harness_vmm(), "--kernel", (char *)harness_probe(),
			   "--mem-backend",	  "shm",      NULL};

	(void)state;
	expect_refused("33M", "--mem-backend hugetlb needs a size that is a multiple of 2 MiB");
	expect_refused_argv(restore, 2,
			    "--mem-backend: a restored VM maps the snapshot's memory file");
	expect_refused_argv(unknown, 2,
			    "--mem-backend 'shm': expected anon (the default), hugetlb or "
			    "memfd");
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_branch_children_verify_strictly),
	    cmocka_unit_test(test_live_snapshot_restores_strictly),
	    cmocka_unit_test(test_no_free_huge_pages_is_a_clear_error),
	    cmocka_unit_test(test_bad_input),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("guest RAM on hugetlb pages (--mem-backend hugetlb)",
					   tests, setup, teardown);
}
