/* SPDX-License-Identifier: MIT */
/*
 * The cgroup v2 limits of jailed VMs, with the probe guest: memory.max
 * contains a guest touching four times its limit (the VMM is OOM-killed,
 * a sibling VM running at the same time verifies its memory on, and the
 * cgroup is removed); pids.max turns a BRANCH of more children than it
 * allows into a clear error, with no child left and the source unharmed;
 * cpu.max throttles; and what a BRANCH child costs the family's cgroup,
 * measured (docs/jail.md prints the numbers this test prints).
 *
 * needs=cgroup2: cgroup v2 with the memory, cpu and pids controllers, which
 * this project's development machines do not offer (cgroup v1 owns them
 * there); the nested test host runs its own kernel, where the test mounts
 * cgroup2 itself.
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cgroup_files.h"
#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define TIMEOUT_MS 30000
#define NOBODY	   65534
#define PARENT	   "/sys/fs/cgroup/forkd-itest"
#define MiB	   (1ULL << 20)

static char dir[256];
static int counter;

static int setup(void **state)
{
	(void)state;
	if (cg_need_v2("itest_jail_cgroup") < 0)
		return -1;
	return harness_tmpdir_create(dir, sizeof(dir), "jailcg");
}

static int teardown(void **state)
{
	(void)state;
	rmdir(PARENT);
	return harness_tmpdir_remove(dir);
}

static const char *need_line(struct vmm_proc *p, const char *prefix)
{
	const char *line = vmm_need_line(p, prefix, TIMEOUT_MS);

	assert_non_null(line);
	return line;
}

static void fresh(char *jail, size_t jlen, char *run, size_t rlen)
{
	int k = ++counter;

	snprintf(jail, jlen, "%s/jail-%d", dir, k);
	snprintf(run, rlen, "%s/run-%d", dir, k);
	assert_int_equal(mkdir(run, 0755), 0);
	assert_int_equal(chown(run, NOBODY, NOBODY), 0);
}

static void wait_gone(const char *path)
{
	struct stat st;
	long long end = harness_deadline(5000);

	while (stat(path, &st) == 0 && now_ms() < end)
		usleep(50 * 1000);
	if (stat(path, &st) == 0)
		fail_msg("%s still exists after its VMs exited", path);
}

static void start(struct vmm_proc *p, const char *name, const char *mem, const char *cpus,
		  const char *append, const char *limit_opt, const char *limit, char *sock,
		  size_t sock_len)
{
	char jail[300], run[300];

	fresh(jail, sizeof(jail), run, sizeof(run));
	snprintf(sock, sock_len, "%s/c.sock", run);
	probe_start(p, NULL, mem, cpus, append, "--jail", jail, "--control", sock, "--cgroup",
		    PARENT, "--cgroup-name", name, limit_opt, limit, NULL);
}

static void verify_ok(struct vmm_proc *p)
{
	char buf[32];

	vmm_send(p, "verify\n");
	need_line(p, "cpu0.verify=");
	assert_non_null(vmm_value(p, "cpu0.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
}

static void shutdown_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	vmm_free(p);
}

static void test_memory_max_contains_the_guest(void **state)
{
	char hog_sock[400], sib_sock[400], cg[300], file[400];
	struct vmm_proc hog, sib;
	long long ooms_before, ooms_after, peak = -1;
	int status;

	(void)state;
	/* The sibling: a VM writing and verifying its memory the whole time. */
	start(&sib, "sibling", "128M", "1", "work=pattern pattern_mib=32", "--memory-max", "512M",
	      sib_sock, sizeof(sib_sock));
	need_line(&sib, "DONE");
	snprintf(file, sizeof(file), "%s/memory.events", PARENT);
	ooms_before = cg_key(file, "oom_kill");
	assert_true(ooms_before >= 0);

	/* The hog: 1280 MiB of guest RAM, touches 1 GiB, may have 256 MiB. */
	start(&hog, "hog", "1280M", "1", "work=touch touch_mib=1024", "--memory-max", "256M",
	      hog_sock, sizeof(hog_sock));
	snprintf(cg, sizeof(cg), "%s/vm-hog", PARENT);
	/* READY comes before the touch starts, and after the VMM joined its cgroup. */
	need_line(&hog, "READY");
	snprintf(file, sizeof(file), "%s/memory.max", cg);
	assert_int_equal(cg_value(file), 256 * MiB);
	snprintf(file, sizeof(file), "%s/memory.peak", cg);
	for (long long end = harness_deadline(60000); !hog.exited && now_ms() < end;) {
		long long v = cg_value(file);
		if (v > peak)
			peak = v;
		usleep(20 * 1000);
		vmm_wait(&hog, 0);
	}
	status = vmm_wait(&hog, TIMEOUT_MS);
	/* The kernel's OOM killer stopped it: SIGKILL, before the guest finished touching. */
	if (status != 128 + SIGKILL || vmm_count_lines(&hog, "cpu0.touch_ok=1"))
		fail_msg("hog: status %d (want %d, killed), touch_ok lines %d", status,
			 128 + SIGKILL, vmm_count_lines(&hog, "cpu0.touch_ok=1"));
	snprintf(file, sizeof(file), "%s/memory.events", PARENT);
	ooms_after = cg_key(file, "oom_kill");
	assert_true(ooms_after > ooms_before);
	fprintf(stderr,
		"memory.max 256 MiB: guest touching 1 GiB killed (status %d), peak %lld MiB\n",
		status, peak / (long long)MiB);
	assert_true(peak > 0 && peak <= (long long)(256 * MiB));
	vmm_free(&hog);
	wait_gone(cg);

	/* The sibling never noticed. */
	verify_ok(&sib);
	assert_int_equal(kill(sib.pid, 0), 0);
	shutdown_vm(&sib, sib_sock);
	snprintf(cg, sizeof(cg), "%s/vm-sibling", PARENT);
	wait_gone(cg);
}

static void test_pids_max_stops_a_branch_bomb(void **state)
{
	char sock[400], req[700], cg[300], file[400], bdir[420];
	struct vmm_proc p;
	json_t *r;
	long long tasks_before;

	(void)state;
	start(&p, "bomb", "128M", "1", "work=pattern pattern_mib=8", "--pids-max", "16", sock,
	      sizeof(sock));
	need_line(&p, "DONE");
	snprintf(cg, sizeof(cg), "%s/vm-bomb", PARENT);
	snprintf(file, sizeof(file), "%s/pids.current", cg);
	tasks_before = cg_value(file);
	assert_true(tasks_before > 0 && tasks_before < 16);
	{
		char run[400];
		snprintf(run, sizeof(run), "%s", sock);
		*strrchr(run, '/') = '\0';
		snprintf(bdir, sizeof(bdir), "%s/b1", run);
	}
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":40,\"dir\":\"%s\"}", bdir);
	{
		long long t0 = now_ms();
		char err_buf[600] = "";
		r = harness_call(sock, req, err_buf, sizeof(err_buf));
		assert_non_null(r);
		if (json_is_true(json_object_get(r, "ok")))
			fail_msg("branch of 40 under pids.max 16 succeeded");
		const char *e = json_string_value(json_object_get(r, "error"));
		fprintf(stderr, "branch n=40 under pids.max 16: %lld ms: %s\n", now_ms() - t0,
			e ? e : "(no error text)");
		if (!e || !strstr(e, "pids.max"))
			fail_msg("error does not name pids.max: %s", e ? e : "(none)");
		json_decref(r);
	}
	/* Nothing left over: the children that started were stopped again. */
	for (long long end = harness_deadline(5000);
	     cg_value(file) > tasks_before + 1 && now_ms() < end;)
		usleep(50 * 1000);
	assert_true(cg_value(file) <= tasks_before + 1); /* + the zygote, until released */
	verify_ok(&p);
	shutdown_vm(&p, sock);
	wait_gone(cg);
}

static void test_cpu_max_throttles(void **state)
{
	char sock[400], file[400];
	struct vmm_proc p;
	long long u0, u1, t0, t1;

	(void)state;
	start(&p, "cpu", "64M", "1", "work=pattern pattern_mib=8", "--cpu-max", "20000/100000",
	      sock, sizeof(sock));
	need_line(&p, "DONE");
	snprintf(file, sizeof(file), "%s/vm-cpu/cpu.max", PARENT);
	{
		char buf[64] = "";
		FILE *f = fopen(file, "r");
		assert_non_null(f);
		assert_non_null(fgets(buf, sizeof(buf), f));
		fclose(f);
		assert_string_equal(buf, "20000 100000\n");
	}
	snprintf(file, sizeof(file), "%s/vm-cpu/cpu.stat", PARENT);
	u0 = cg_key(file, "usage_usec");
	t0 = now_ms();
	sleep(3);
	u1 = cg_key(file, "usage_usec");
	t1 = now_ms();
	fprintf(stderr, "cpu.max 20%%: %.1f%% of a CPU over %lld ms, nr_throttled %lld\n",
		100.0 * (double)(u1 - u0) / (double)((t1 - t0) * 1000), t1 - t0,
		cg_key(file, "nr_throttled"));
	/* A writer spinning on its vCPU would use 100%: the quota holds it near 20%. */
	/* A second VM asking for the same name is refused, and the first keeps its cgroup. */
	{
		struct vmm_proc q;
		char *argv[] = {(char *)harness_vmm(),
				"--kernel",
				(char *)harness_probe(),
				"--cgroup",
				PARENT,
				"--cgroup-name",
				"cpu",
				"--pids-max",
				"64",
				NULL};
		int status = vmm_run_to_exit(&q, argv, TIMEOUT_MS);
		if (status != 2 || !strstr(q.err_text, "vm-cpu exists"))
			fail_msg("second vm-cpu: status %d, stderr: %s", status, q.err_text);
		vmm_free(&q);
		snprintf(file, sizeof(file), "%s/vm-cpu/cgroup.procs", PARENT);
		assert_true(cg_value(file) == p.pid);
		snprintf(file, sizeof(file), "%s/vm-cpu/cpu.stat", PARENT);
	}
	assert_true((u1 - u0) <= (t1 - t0) * 1000 * 30 / 100);
	assert_true(cg_key(file, "nr_throttled") > 0);
	shutdown_vm(&p, sock);
}

static long long smaps_kb(pid_t pid, const char *key)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)pid);
	{
		char line[256];
		size_t n = strlen(key);
		long long v = -1;
		FILE *f = fopen(path, "r");
		if (!f)
			return -1;
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, key, n) == 0 && line[n] == ':')
				v = strtoll(line + n + 1, NULL, 10);
		fclose(f);
		return v;
	}
}

/*
 * What a BRANCH child costs its family's cgroup: right after it started
 * (its RAM is the source's pages, copy-on-write, already charged once), and
 * after the guest's pattern writers, running on in source and child alike,
 * rewrote their 64 MiB (each side's write copies a page the zygote still
 * holds at the branch instant).
 */
static void test_branch_child_charge(void **state)
{
	char sock[400], req[600], file[400], run[400], csock[700];
	struct vmm_proc p;
	long long before, at_start, after, src_rss, dirty = -1;
	pid_t child;
	json_t *r;

	(void)state;
	start(&p, "family", "512M", "2", "work=pattern,touch pattern_mib=64 touch_mib=256",
	      "--memory-max", "2G", sock, sizeof(sock));
	need_line(&p, "cpu1.touch_ok=1");
	snprintf(file, sizeof(file), "%s/vm-family/memory.current", PARENT);
	before = cg_value(file);
	src_rss = smaps_kb(p.pid, "Rss");
	snprintf(run, sizeof(run), "%s", sock);
	*strrchr(run, '/') = '\0';
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s/b\"}", run);
	r = harness_call_expect(sock, req, true);
	assert_non_null(r);
	child = (pid_t)json_integer_value(
	    json_object_get(json_array_get(json_object_get(r, "children"), 0), "pid"));
	json_decref(r);
	at_start = cg_value(file);
	/* The child's writers rewrite their region: its private copies grow to 64 MiB. */
	for (long long end = harness_deadline(20000); now_ms() < end;) {
		dirty = smaps_kb(child, "Private_Dirty");
		if (dirty >= 60 * 1024)
			break;
		usleep(100 * 1000);
	}
	after = cg_value(file);
	fprintf(stderr,
		"BRANCH child charge: family cgroup %lld MiB before (source Rss %lld MiB), "
		"%lld MiB right after the child started (+%lld KiB), %lld MiB once the child "
		"rewrote 64 MiB (+%lld MiB; child Private_Dirty %lld KiB, Rss %lld MiB)\n",
		before / (long long)MiB, src_rss / 1024, at_start / (long long)MiB,
		(at_start - before) / 1024, after / (long long)MiB,
		(after - before) / (long long)MiB, dirty, smaps_kb(child, "Rss") / 1024);
	/* Copy-on-write: starting the child copies none of the source's ~320 MiB. */
	assert_true(at_start - before < (long long)(32 * MiB));
	/* Its writes are charged to the family: at least what the child dirtied. */
	assert_true(dirty >= 60 * 1024);
	assert_true(after - before >= dirty * 1024 * 9 / 10);
	snprintf(csock, sizeof(csock), "%s/b/child-0/control.sock", run);
	json_decref(harness_call_expect(csock, "{\"cmd\":\"shutdown\"}", true));
	shutdown_vm(&p, sock);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_memory_max_contains_the_guest),
	    cmocka_unit_test(test_pids_max_stops_a_branch_bomb),
	    cmocka_unit_test(test_cpu_max_throttles),
	    cmocka_unit_test(test_branch_child_charge),
	};
	if (where_begin(argc, argv, NEEDS_CGROUP2, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("cgroup v2 limits of jailed VMs", tests, setup,
					   teardown);
}
