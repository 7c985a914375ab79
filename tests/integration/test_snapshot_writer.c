/* SPDX-License-Identifier: MIT */
/*
 * The snapshot writer at disk speed and prewarm, with the probe guest: live
 * and stop-and-save snapshots written by several threads restore to a guest
 * whose pattern verifies strictly (inside) and pass `forkd snapshot verify`;
 * the stop-and-save one went out with O_DIRECT and the live one (its pages
 * shared copy-on-write) through the page cache (outside: mincore); a live
 * write's progress shows in `status`; `forkd snapshot
 * prewarm` brings the memory file's data into the page cache (mincore
 * again), `forkd-vmm --restore --prewarm` restores from it, and both refuse
 * what is not a snapshot.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"

#define TIMEOUT_MS 30000

static char dir[256];
/* Where the snapshots go: a disk filesystem if there is one (O_DIRECT), else `dir`. */
static char snap_dir[300];
static bool direct_expected;
static char live_snap[400], stop_snap[400];

#define PATH_LEN 600

/* A filesystem the writer uses O_DIRECT on: it takes O_DIRECT and is not tmpfs. */
static bool dir_takes_direct(const char *d)
{
	struct statfs sfs;
	char path[400];
	int fd;

	/*
	 * FUSE (virtiofs: the checkout as the nested test host sees it) takes
	 * O_DIRECT, but its page cache is not a disk's: reads there did not stay
	 * cached (prewarm found 0 of 384 MiB resident). Not a disk filesystem.
	 */
	if (statfs(d, &sfs) < 0 || sfs.f_type == TMPFS_MAGIC || sfs.f_type == FUSE_SUPER_MAGIC)
		return false;
	snprintf(path, sizeof(path), "%s/direct-probe", d);
	fd = open(path, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	return fd >= 0;
}

static int setup(void **state)
{
	const char *build = getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build";
	const char *bases[] = {"/var/tmp", build};

	(void)state;
	if (harness_tmpdir_create(dir, sizeof(dir), "snapwr") < 0)
		return -1;
	direct_expected = dir_takes_direct(dir);
	snprintf(snap_dir, sizeof(snap_dir), "%s", dir);
	/* $TMPDIR is tmpfs on some machines (and in the nested test host): look further. */
	for (int i = 0; i < 2 && !direct_expected; i++) {
		snprintf(snap_dir, sizeof(snap_dir), "%s/forkd-snapwr-XXXXXX", bases[i]);
		if (!mkdtemp(snap_dir))
			continue;
		direct_expected = dir_takes_direct(snap_dir);
		if (!direct_expected)
			harness_tmpdir_remove(snap_dir);
	}
	if (!direct_expected)
		snprintf(snap_dir, sizeof(snap_dir), "%s", dir);
	fprintf(stderr, "snapshots in %s: %s\n", snap_dir,
		direct_expected
		    ? "a disk filesystem, written with O_DIRECT"
		    : "no disk filesystem here (tmpfs): written through the page cache");
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	if (strcmp(snap_dir, dir) != 0)
		harness_tmpdir_remove(snap_dir);
	return harness_tmpdir_remove(dir);
}

static void path_in(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static const char *need_line(struct vmm_proc *p, const char *prefix)
{
	const char *line = vmm_need_line(p, prefix, TIMEOUT_MS);

	assert_non_null(line);
	return line;
}

static json_t *call(const char *sock, const char *req, bool want_ok)
{
	json_t *reply = harness_call_expect(sock, req, want_ok);

	assert_non_null(reply);
	return reply;
}

static const char *str_of(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	if (!v)
		fail_msg("reply has no string \"%s\"", key);
	return v;
}

static bool path_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static void start_pattern_source(struct vmm_proc *p, const char *sock)
{
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--cpus",
			"2",
			"--mem",
			"512M",
			"--append",
			"work=pattern,pattern pattern_mib=192 pattern_freeze=genid",
			"--control",
			(char *)sock,
			NULL};

	char key[32], buf[32];
	unsigned long long pages;

	assert_int_equal(vmm_start(p, argv), 0);
	need_line(p, "DONE");
	/*
	 * Each writer zeroes its pages before its first pass, and only checks
	 * the generation ID inside the passes: a snapshot taken while one is
	 * still zeroing (a loaded machine starts vCPU 1 late) restores to a
	 * writer that never freezes. Wait until both finished a full pass.
	 */
	need_line(p, "cpu1.pattern_freeze=");
	assert_non_null(vmm_value(p, "pattern_pages", buf, sizeof(buf)));
	pages = strtoull(buf, NULL, 10);
	for (long long end = harness_deadline(TIMEOUT_MS);;) {
		int reports = vmm_count_lines(p, "report.end");
		bool done = true;

		vmm_send(p, "report\n");
		while (vmm_count_lines(p, "report.end") == reports && now_ms() < end)
			vmm_wait_line(p, "\x01", 50);
		for (int cpu = 0; cpu < 2; cpu++) {
			snprintf(key, sizeof(key), "cpu%d.pattern_seq", cpu);
			done = done && vmm_value(p, key, buf, sizeof(buf)) &&
			       strtoull(buf, NULL, 10) >= pages;
		}
		if (done)
			break;
		if (now_ms() > end) {
			vmm_dump(p);
			fail_msg("the pattern writers did not finish a pass of %llu pages", pages);
		}
		usleep(50 * 1000);
	}
}

static void stop_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	vmm_free(p);
}

/* Restores `snap` (with extra options) and checks the pattern strictly, from inside the guest. */
static void restore_verify_strict(const char *snap, const char *extra)
{
	char sock[300], want[64], buf[32];
	char *argv[] = {(char *)harness_vmm(), "--restore", (char *)snap, "--control", sock,
			(char *)extra,	       NULL};
	struct vmm_proc p;

	path_in(sock, sizeof(sock), "strict.sock");
	assert_int_equal(vmm_start(&p, argv), 0);
	need_line(&p, "pattern.frozen=1");
	vmm_send(&p, "verify strict\n");
	for (int i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		const char *l = need_line(&p, want);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&p, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict")) {
			vmm_dump(&p);
			fail_msg("restored %s: %s", snap, l);
		}
	}
	stop_vm(&p, sock);
}

static int run_forkd(char *out, size_t len, const char *args)
{
	char cmd[1200];
	FILE *f;
	size_t n = 0;
	int status;

	snprintf(cmd, sizeof(cmd), "'%s/forkd' %s 2>&1",
		 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build", args);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (n + 1 < len && fgets(out + n, (int)(len - n), f))
		n += strlen(out + n);
	out[n] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Bytes of the file outside holes, and of those, how many are in the page cache. */
static void data_and_cached(const char *path, uint64_t *data, uint64_t *cached)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	off_t at = 0, end, size;
	unsigned char *vec;
	uint8_t *map;

	assert_true(fd >= 0);
	size = lseek(fd, 0, SEEK_END);
	*data = *cached = 0;
	map = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	assert_true(map != MAP_FAILED);
	vec = malloc((size_t)size / 4096);
	assert_non_null(vec);
	assert_int_equal(mincore(map, (size_t)size, vec), 0);
	while (at < size && (at = lseek(fd, at, SEEK_DATA)) >= 0) {
		end = lseek(fd, at, SEEK_HOLE);
		*data += (uint64_t)(end - at);
		for (off_t o = at; o < end; o += 4096)
			if (vec[o / 4096] & 1)
				*cached += 4096;
		at = end;
	}
	free(vec);
	munmap(map, (size_t)size);
	close(fd);
}

/*
 * A stop-and-save snapshot's pages are the VMM's alone: O_DIRECT, nothing
 * left in the page cache. A live one's zygote shares them copy-on-write with
 * the running VM: those go through the page cache (O_DIRECT would copy each
 * first).
 */
static void expect_written_directly_if_disk(const char *snap, bool shared)
{
	char mem[PATH_LEN];
	uint64_t data, cached;

	snprintf(mem, sizeof(mem), "%s/memory", snap);
	data_and_cached(mem, &data, &cached);
	fprintf(stderr, "%s: %llu MiB of data, %llu MiB of it in the page cache after the write\n",
		snap, (unsigned long long)(data >> 20), (unsigned long long)(cached >> 20));
	assert_true(data >= (192ull << 20));
	if (!direct_expected)
		return; /* tmpfs: its pages are the page cache */
	/*
	 * Live: the pages the running guest rewrote since the fork are the
	 * zygote's alone again (O_DIRECT), the rest shared (page cache); how many
	 * depends on the guest. test_snapshot_writer (unit) checks the rule.
	 */
	if (shared)
		return;
	/* O_DIRECT: the guest's pages went to the device, not through the page cache. */
	if (cached > data / 10)
		fail_msg("%s: %llu of %llu bytes in the page cache right after the write: not "
			 "written with O_DIRECT",
			 mem, (unsigned long long)cached, (unsigned long long)data);
}

/*
 * A live snapshot (slowed by FORKD_FAULT_INJECT=snapshot-slow so the write
 * can be watched) reports snapshot_written_bytes in status while written,
 * never more than the data and never going back; then a stop-and-save one
 * (with O_DIRECT on a disk filesystem). Both verify and restore strictly.
 */
static void test_direct_snapshots_restore_strictly(void **state)
{
	char sock[300], req[PATH_LEN + 100], out[2048], args[PATH_LEN + 100];
	long long prev = -1, max_seen = 0;
	int writing_polls = 0;
	struct vmm_proc p;
	json_t *r;

	(void)state;
	path_in(sock, sizeof(sock), "src.sock");
	snprintf(live_snap, sizeof(live_snap), "%s/live", snap_dir);
	snprintf(stop_snap, sizeof(stop_snap), "%s/stop", snap_dir);
	setenv("FORKD_FAULT_INJECT", "snapshot-slow", 1);
	start_pattern_source(&p, sock);
	unsetenv("FORKD_FAULT_INJECT");

	/*
	 * Stop-and-save first, while the VM's pages are its own: once a zygote
	 * shared them, the kernel may count its large folios as shared for good.
	 */
	snprintf(req, sizeof(req),
		 "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"mode\":\"stop\",\"resume\":true}",
		 stop_snap);
	json_decref(call(sock, req, true)); /* slowed by 3 s as well */

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"wait\":false}",
		 live_snap);
	r = call(sock, req, true);
	assert_string_equal(str_of(r, "snapshot"), "writing");
	json_decref(r);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", live_snap);
	for (long long end = harness_deadline(TIMEOUT_MS);; usleep(5 * 1000)) {
		json_t *st, *w;
		bool writing;

		/* The state first: once it says done, a status asked after it has no progress. */
		r = call(sock, req, true);
		writing = strcmp(str_of(r, "snapshot"), "writing") == 0;
		st = call(sock, "{\"cmd\":\"status\"}", true);
		w = json_object_get(st, "snapshot_written_bytes");
		if (writing && json_is_integer(w)) {
			long long v = json_integer_value(w);

			/*
			 * Allocated blocks: a buffered write's delayed allocation can
			 * step back a block or two as reservations become extents.
			 */
			if (v < prev - (1 << 20) || v > (512ll << 20))
				fail_msg("snapshot_written_bytes %lld after %lld (of at most 512 "
					 "MiB)",
					 v, prev);
			prev = v;
			max_seen = v > max_seen ? v : max_seen;
			writing_polls++;
		}
		if (!writing) {
			/* Done: the field goes with the writer. */
			assert_null(json_object_get(st, "snapshot_written_bytes"));
		}
		json_decref(st);
		if (!writing || now_ms() > end)
			break;
		json_decref(r);
	}
	assert_string_equal(str_of(r, "snapshot"), "ready");
	json_decref(r);
	fprintf(stderr, "live write watched in %d status polls, largest progress %lld bytes\n",
		writing_polls, max_seen);
	/* The slowed writer sleeps 3 s before the memory file: status said so (0 written). */
	assert_true(writing_polls > 10);

	stop_vm(&p, sock);

	for (int i = 0; i < 2; i++) {
		const char *snap = i ? stop_snap : live_snap;

		assert_true(path_exists(snap));
		expect_written_directly_if_disk(snap, i == 0);
		snprintf(args, sizeof(args), "snapshot verify '%s'", snap);
		if (run_forkd(out, sizeof(out), args) != 0 || !strstr(out, ": ok:"))
			fail_msg("%s does not verify: %s", snap, out);
		restore_verify_strict(snap, NULL);
	}
}

/*
 * prewarm: data evicted from the page cache (POSIX_FADV_DONTNEED) comes
 * back, holes are not read; --restore --prewarm restores strictly.
 */
static void test_prewarm(void **state)
{
	char mem[PATH_LEN], out[2048], args[PATH_LEN + 100], empty[300];
	uint64_t data, cached;
	json_t *j;
	int fd;

	(void)state;
	assert_true(live_snap[0]); /* from test_direct_snapshots_restore_strictly */
	snprintf(mem, sizeof(mem), "%s/memory", live_snap);
	fd = open(mem, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(fdatasync(fd), 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	data_and_cached(mem, &data, &cached);
	/* Evicted (tmpfs cannot evict: its pages are the file; prewarm then finds them). */
	if (direct_expected)
		assert_true(cached < data / 10);

	snprintf(args, sizeof(args), "snapshot prewarm --json '%s'", live_snap);
	if (run_forkd(out, sizeof(out), args) != 0)
		fail_msg("forkd %s: %s", args, out);
	j = json_loads(out, 0, NULL);
	if (!j)
		fail_msg("forkd %s: not JSON: %s", args, out);
	assert_true(json_is_true(json_object_get(j, "ok")));
	assert_int_equal(json_integer_value(json_object_get(j, "data_bytes")), data);
	assert_true(json_integer_value(json_object_get(j, "resident_bytes")) >= (json_int_t)data);
	assert_true(json_integer_value(json_object_get(j, "extents")) > 0);
	assert_true(json_real_value(json_object_get(j, "mib_per_s")) > 0);
	json_decref(j);
	data_and_cached(mem, &data, &cached);
	fprintf(stderr, "after prewarm: %llu of %llu MiB of data cached\n",
		(unsigned long long)(cached >> 20), (unsigned long long)(data >> 20));
	/* All of it, give or take what another process's drop_caches took meanwhile. */
	assert_true(cached >= data - data / 20);

	snprintf(args, sizeof(args), "snapshot prewarm '%s'", live_snap);
	assert_int_equal(run_forkd(out, sizeof(out), args), 0);
	assert_non_null(strstr(out, "MiB/s"));

	/* --restore --prewarm: evicted again, then restored through it. */
	fd = open(mem, O_RDONLY | O_CLOEXEC);
	assert_true(fd >= 0);
	assert_int_equal(posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED), 0);
	close(fd);
	restore_verify_strict(live_snap, "--prewarm");

	/* Errors: a missing directory, a directory that is not a snapshot, no argument. */
	snprintf(args, sizeof(args), "snapshot prewarm '%s/missing'", dir);
	assert_int_equal(run_forkd(out, sizeof(out), args), 1);
	if (!strstr(out, "missing") || !strstr(out, "No such file"))
		fail_msg("prewarm of a missing directory: %s", out);
	path_in(empty, sizeof(empty), "not-a-snapshot");
	assert_int_equal(mkdir(empty, 0700), 0);
	snprintf(args, sizeof(args), "snapshot prewarm '%s'", empty);
	assert_int_equal(run_forkd(out, sizeof(out), args), 1);
	if (!strstr(out, "not-a-snapshot/state"))
		fail_msg("prewarm of a directory that is not a snapshot: %s", out);
	assert_int_equal(run_forkd(out, sizeof(out), "snapshot prewarm"), 2);
	assert_non_null(strstr(out, "expected a snapshot directory"));
	{
		char *argv[] = {(char *)harness_vmm(), "--restore", empty, "--prewarm", NULL};
		struct vmm_proc p;

		assert_true(vmm_run_to_exit(&p, argv, TIMEOUT_MS) != 0);
		if (!strstr(p.err_text, "not-a-snapshot/state"))
			fail_msg("forkd-vmm --restore (not a snapshot) --prewarm: %s", p.err_text);
		vmm_free(&p);
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_direct_snapshots_restore_strictly),
	    cmocka_unit_test(test_prewarm),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("snapshot writer and prewarm", tests, setup, teardown);
}
