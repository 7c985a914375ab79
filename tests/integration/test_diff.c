/* SPDX-License-Identifier: MIT */
/*
 * Diff snapshots with the probe guest (docs/diff-snapshots.md): a chain of
 * diffs taken live, stopped and by a persisted BRANCH restores to a guest
 * whose memory is exactly one instant (strict verify, inside); an idle 4 GiB
 * guest's diff is a few MiB on disk; broken chains (missing parent, parent
 * replaced, a cycle, too deep, a parent that is not the VM's last snapshot)
 * are refused naming the file; compact flattens a chain, and a compaction
 * killed with -9 leaves nothing marked complete and its temp directory goes
 * with the next one.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"
#include "state/snapshot_format.h"

#define TIMEOUT_MS 30000
/* The chain depth the writer takes before refusing one more. */
#define SNAP_DEPTH_TEST SNAP_DIFF_MAX_DEPTH

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "diff");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

static void path_in(char *out, size_t len, const char *name)
{
	if ((size_t)snprintf(out, len, "%s/%.64s", dir, name) >= len)
		fail_msg("path %s/%s is too long", dir, name);
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

static long long int_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		fail_msg("reply has no integer \"%s\"", key);
	return json_integer_value(v);
}

static bool path_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Bytes a snapshot directory takes on disk (st_blocks, as du counts). */
static unsigned long long disk_bytes(const char *snap)
{
	DIR *d = opendir(snap);
	struct dirent *e;
	unsigned long long sum = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		char p[1200];
		struct stat st;

		snprintf(p, sizeof(p), "%s/%s", snap, e->d_name);
		if (e->d_name[0] != '.' && stat(p, &st) == 0)
			sum += (unsigned long long)st.st_blocks * 512;
	}
	closedir(d);
	return sum;
}

/* Runs a shell command line, its output (stdout and stderr) into out; its exit status. */
static int run(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int run(char *out, size_t len, const char *fmt, ...)
{
	char cmd[2400];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int status;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (n + 1 < len && fgets(out + n, (int)(len - n), f))
		n += strlen(out + n);
	out[n] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static const char *forkd(void)
{
	static char path[600];

	snprintf(path, sizeof(path), "%s/forkd",
		 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build");
	return path;
}

static void start_source_cpus(struct vmm_proc *p, const char *sock, const char *mem,
			      const char *cpus, const char *append)
{
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--cpus",
			(char *)cpus,
			"--mem",
			(char *)mem,
			"--append",
			(char *)append,
			"--control",
			(char *)sock,
			NULL};

	assert_int_equal(vmm_start(p, argv), 0);
	need_line(p, "DONE");
	usleep(200 * 1000);
}

static void start_source(struct vmm_proc *p, const char *sock, const char *mem, const char *append)
{
	start_source_cpus(p, sock, mem, "2", append);
}

static void stop_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	vmm_free(p);
}

/* A snapshot request's reply; `extra` is more JSON members (or ""). */
static json_t *snapshot(const char *sock, const char *snap, const char *extra, bool want_ok)
{
	char req[8192];

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"%s}", snap, extra);
	return call(sock, req, want_ok);
}

static json_t *diff_snapshot(const char *sock, const char *snap, const char *parent,
			     const char *mode)
{
	char extra[800];

	snprintf(extra, sizeof(extra), ",\"parent\":\"%s\",\"mode\":\"%s\"", parent, mode);
	return snapshot(sock, snap, extra, true);
}

/* Restores snap (in a jail of its own when `jail` names one) and verifies it strictly. */
static void restore_verify_strict_in(const char *snap, int writers, const char *jail)
{
	char sock[300], want[64], buf[32];
	char *argv[] = {(char *)harness_vmm(), "--restore", (char *)snap,
			"--control",	       sock,	    "--jail",
			(char *)jail,	       NULL};
	struct vmm_proc p;

	path_in(sock, sizeof(sock), "strict.sock");
	if (!jail)
		argv[5] = NULL;
	else /* the jailed VMM runs as nobody: its socket in a directory of its own */
		path_in(sock, sizeof(sock), "jrun/strict.sock");
	assert_int_equal(vmm_start(&p, argv), 0);
	need_line(&p, "pattern.frozen=1");
	vmm_send(&p, "verify strict\n");
	for (int i = 0; i < writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		const char *l = need_line(&p, want);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&p, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict")) {
			vmm_dump(&p);
			fail_msg("restored %s: %s", snap, l);
		}
	}
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);
}

static void restore_verify_strict(const char *snap, int writers)
{
	restore_verify_strict_in(snap, writers, NULL);
}

/* A restore of `snap` must fail, its error naming `want` (and `also`, if not NULL). */
static void restore_fails(const char *snap, const char *want, const char *also)
{
	char *argv[] = {(char *)harness_vmm(), "--restore", (char *)snap, NULL};
	struct vmm_proc p;

	int status = vmm_run_to_exit(&p, argv, TIMEOUT_MS);

	if (status <= 0 || !strstr(p.err_text, want) || (also && !strstr(p.err_text, also)))
		fail_msg("restore %s: status %d, expected an error with '%s' and '%s': %s", snap,
			 status, want, also ? also : "", p.err_text);
	fprintf(stderr, "refused as expected: %s", p.err_text);
	vmm_free(&p);
}

static char chain[4][300]; /* the chain of the first test: full, then three diffs */

/*
 * Under two pattern writers: a full snapshot arms tracking, then a live
 * diff, a stop-and-save diff and a persisted BRANCH diff. The last restores
 * (base mapped, three diffs overlaid) to a guest whose memory is one instant.
 */
static void test_three_link_chain_restores_strictly(void **state)
{
	char sock[300], req[1400], out[4096];
	struct vmm_proc p;
	json_t *r;

	(void)state;
	path_in(sock, sizeof(sock), "chain.sock");
	for (int i = 0; i < 4; i++) {
		char name[32];
		snprintf(name, sizeof(name), "link%d", i);
		path_in(chain[i], sizeof(chain[i]), name);
	}
	/* cpu2 touches 64 MiB once at boot: in the base, in no diff. */
	start_source_cpus(&p, sock, "256M", "3",
			  "work=pattern,pattern,touch pattern_mib=32 touch_mib=64 "
			  "pattern_freeze=genid");
	need_line(&p, "cpu2.touch_ok=1");

	r = snapshot(sock, chain[0], ",\"track_dirty\":true", true);
	assert_string_equal(str_of(r, "snapshot"), "ready");
	assert_true(json_is_true(json_object_get(r, "track_dirty")));
	json_decref(r);
	usleep(300 * 1000);

	r = diff_snapshot(sock, chain[1], chain[0], "live");
	assert_string_equal(str_of(r, "snapshot"), "ready");
	fprintf(stderr, "diff 1 (live): %lld dirty pages, collected in %lld us\n",
		int_of(r, "dirty_pages"), int_of(r, "collect_us"));
	assert_true(int_of(r, "dirty_pages") > 0);
	json_decref(r);
	usleep(300 * 1000);

	r = diff_snapshot(sock, chain[2], chain[1], "stop");
	fprintf(stderr, "diff 2 (stop): %lld dirty pages\n", int_of(r, "dirty_pages"));
	assert_true(int_of(r, "dirty_pages") > 0);
	json_decref(r);
	usleep(300 * 1000);

	snprintf(req, sizeof(req),
		 "{\"cmd\":\"branch\",\"n\":0,\"persist\":\"%s\",\"parent\":\"%s\",\"wait\":true}",
		 chain[3], chain[2]);
	r = call(sock, req, true);
	assert_string_equal(str_of(r, "persist"), "ready");
	fprintf(stderr, "diff 3 (persisted BRANCH): %lld dirty pages\n", int_of(r, "dirty_pages"));
	json_decref(r);
	r = call(sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);
	for (size_t i = 0; i < json_array_size(json_object_get(r, "zygotes")); i++) {
		json_t *z = json_array_get(json_object_get(r, "zygotes"), i);
		snprintf(req, sizeof(req),
			 "{\"cmd\":\"zygote\",\"action\":\"release\",\"id\":%lld}",
			 (long long)json_integer_value(json_object_get(z, "zygote")));
		json_decref(call(sock, req, true));
	}
	json_decref(r);
	stop_vm(&p, sock);

	for (int i = 0; i < 4; i++)
		fprintf(stderr, "%s: %llu KiB on disk\n", chain[i], disk_bytes(chain[i]) >> 10);
	/* Each diff holds what the writers dirtied (64 MiB), not the 64 MiB touched before. */
	for (int i = 1; i < 4; i++)
		assert_true(disk_bytes(chain[i]) + (48ull << 20) < disk_bytes(chain[0]));
	/* A diff's own memory file checks against its own chunk checksums. */
	assert_int_equal(run(out, sizeof(out), "'%s' snapshot verify '%s'", forkd(), chain[3]), 0);

	restore_verify_strict(chain[3], 2);
	restore_verify_strict(chain[1], 2);
	/*
	 * Jailed (as nobody, who must be able to read the files), the restore sees the chain's
	 * parents too: bound read-only at their paths.
	 */
	assert_int_equal(run(out, sizeof(out),
			     "mkdir '%s/jrun' && chown -R 65534:65534 '%s/jrun' "
			     "'%s' '%s' '%s' '%s'",
			     dir, dir, chain[0], chain[1], chain[2], chain[3]),
			 0);
	path_in(out, sizeof(out), "jail");
	restore_verify_strict_in(chain[3], 2, out);
}

/* The compacted chain is a full snapshot that restores strictly, and a killed compaction. */
static void test_compact(void **state)
{
	char out[4096], flat[300], killed_in[300], killed[400];
	pid_t pid;

	(void)state;
	path_in(flat, sizeof(flat), "flat");
	assert_int_equal(run(out, sizeof(out), "'%s' snapshot compact '%s' '%s' --json", forkd(),
			     chain[3], flat),
			 0);
	assert_non_null(strstr(out, "\"links\":4"));
	fprintf(stderr, "compact: %s", out);
	assert_int_equal(run(out, sizeof(out), "'%s' snapshot verify '%s'", forkd(), flat), 0);
	/* Full, independent of the chain: the chain's base goes, the flat one still restores. */
	assert_int_equal(run(out, sizeof(out), "mv '%s' '%s.away'", chain[0], chain[0]), 0);
	restore_verify_strict(flat, 2);
	restore_fails(chain[3], chain[0], "missing");
	assert_int_equal(run(out, sizeof(out), "mv '%s.away' '%s'", chain[0], chain[0]), 0);

	/* Killed with -9 mid-write: no OUT, a temp dir the next compaction removes. */
	path_in(killed_in, sizeof(killed_in), "compact-killed");
	assert_int_equal(mkdir(killed_in, 0700), 0);
	snprintf(killed, sizeof(killed), "%s/out", killed_in);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		setenv("FORKD_FAULT_INJECT", "snapshot-slow", 1);
		execl(forkd(), forkd(), "snapshot", "compact", chain[3], killed, (char *)NULL);
		_exit(127);
	}
	/* Killed while it waits (the fault hook's 3 s) with its writer record written. */
	for (long long end = harness_deadline(10000); now_ms() < end; usleep(10 * 1000))
		if (run(out, sizeof(out), "ls '%s'/out.tmp-*/writer", killed_in) == 0)
			break;
	assert_int_equal(kill(pid, SIGKILL), 0);
	waitpid(pid, NULL, 0);
	assert_false(path_exists(killed));
	assert_int_equal(run(out, sizeof(out), "ls -d '%s'/out.tmp-*", killed_in), 0);
	assert_int_equal(
	    run(out, sizeof(out), "'%s' snapshot compact '%s' '%s'", forkd(), chain[3], killed), 0);
	assert_true(path_exists(killed));
	assert_int_not_equal(run(out, sizeof(out), "ls -d '%s'/out.tmp-*", killed_in), 0);
	/* Compacting onto an existing snapshot is refused. */
	assert_int_equal(
	    run(out, sizeof(out), "'%s' snapshot compact '%s' '%s'", forkd(), chain[3], killed), 1);
	assert_non_null(strstr(out, "already exists"));
}

/* An idle 4 GiB guest: its diff holds the few pages the probe, KVM and devices touched. */
static void test_idle_4g_diff_is_small(void **state)
{
	char sock[300], base[300], d1[300];
	unsigned long long bytes;
	struct vmm_proc p;
	json_t *r;

	(void)state;
	path_in(sock, sizeof(sock), "idle.sock");
	path_in(base, sizeof(base), "idle-base");
	path_in(d1, sizeof(d1), "idle-diff");
	/* 256 MiB touched at boot (non-zero, so in the base), then nothing writes. */
	start_source(&p, sock, "4G", "work=touch,idle touch_mib=256");
	need_line(&p, "cpu0.touch_ok=1");
	json_decref(snapshot(sock, base, ",\"track_dirty\":true", true));
	usleep(500 * 1000);
	r = diff_snapshot(sock, d1, base, "live");
	fprintf(stderr, "idle 4 GiB diff: %lld dirty pages, collected in %lld us\n",
		int_of(r, "dirty_pages"), int_of(r, "collect_us"));
	json_decref(r);
	stop_vm(&p, sock);
	bytes = disk_bytes(d1);
	fprintf(stderr, "idle 4 GiB: diff %llu KiB on disk (base %llu KiB)\n", bytes >> 10,
		disk_bytes(base) >> 10);
	assert_true(disk_bytes(base) >= 256ull << 20);
	assert_true(bytes <= 16ull << 20);
}

/* Broken chains are refused, naming the file; so are diffs tracking cannot vouch for. */
static void test_broken_chains(void **state)
{
	char sock[300], a[300], b[300], c[300], other[300], out[4096], name[400];
	char deep[SNAP_DEPTH_TEST + 2][300];
	struct vmm_proc p;
	json_t *r;

	(void)state;
	path_in(sock, sizeof(sock), "broken.sock");
	path_in(a, sizeof(a), "b-a");
	path_in(b, sizeof(b), "b-b");
	path_in(c, sizeof(c), "b-c");
	path_in(other, sizeof(other), "b-other");
	start_source(&p, sock, "128M", "work=pattern pattern_mib=8");

	/* No tracking armed: a diff has nothing to count from. */
	r = snapshot(sock, b, ",\"parent\":\"/nonexistent\"", false);
	assert_non_null(strstr(str_of(r, "error"), "does not track dirty pages"));
	json_decref(r);

	json_decref(snapshot(sock, a, ",\"track_dirty\":true,\"mode\":\"stop\"", true));
	json_decref(diff_snapshot(sock, b, a, "stop"));
	/* Only the VM's last snapshot can be a parent: a is no longer it. */
	r = snapshot(sock, c, ",\"parent\":\"/nonexistent\",\"mode\":\"stop\"", false);
	assert_non_null(strstr(str_of(r, "error"), "count from"));
	json_decref(r);
	snprintf(name, sizeof(name), ",\"parent\":\"%s\",\"mode\":\"stop\"", a);
	r = snapshot(sock, c, name, false);
	assert_non_null(strstr(str_of(r, "error"), b));
	json_decref(r);
	json_decref(diff_snapshot(sock, c, b, "stop"));
	/* Another full snapshot of the same VM, to stand in for a replaced parent. */
	json_decref(snapshot(sock, other, ",\"mode\":\"stop\"", true));

	/* Too deep: SNAP_DEPTH_TEST diffs, then one more is refused at write. */
	for (int i = 0; i <= SNAP_DEPTH_TEST; i++) {
		snprintf(name, sizeof(name), "deep%d", i);
		path_in(deep[i], sizeof(deep[i]), name);
		if (i == 0)
			json_decref(snapshot(sock, deep[0], ",\"mode\":\"stop\"", true));
		else
			json_decref(diff_snapshot(sock, deep[i], deep[i - 1], "stop"));
	}
	path_in(deep[SNAP_DEPTH_TEST + 1], sizeof(deep[0]), "deep-too-far");
	snprintf(out, sizeof(out), ",\"parent\":\"%s\",\"mode\":\"stop\"", deep[SNAP_DEPTH_TEST]);
	r = snapshot(sock, deep[SNAP_DEPTH_TEST + 1], out, false);
	assert_non_null(strstr(str_of(r, "error"), "at most 16 deep"));
	json_decref(r);
	stop_vm(&p, sock);
	assert_false(path_exists(deep[SNAP_DEPTH_TEST + 1]));

	/* Missing parent. */
	assert_int_equal(run(out, sizeof(out), "mv '%s' '%s.away'", a, a), 0);
	restore_fails(c, a, "missing");
	assert_int_equal(
	    run(out, sizeof(out), "'%s' snapshot compact '%s' '%s.flat'", forkd(), c, c), 1);
	assert_non_null(strstr(out, "missing"));
	/* Parent replaced after the child was written (same path, another snapshot). */
	assert_int_equal(run(out, sizeof(out), "cp -a '%s' '%s'", other, a), 0);
	restore_fails(c, a, "changed after");
	/* A cycle: b renamed to its own parent's name names itself. */
	assert_int_equal(run(out, sizeof(out), "rm -rf '%s' && mv '%s' '%s'", a, b, a), 0);
	restore_fails(a, "cycle", NULL);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_three_link_chain_restores_strictly),
	    cmocka_unit_test(test_compact),
	    cmocka_unit_test(test_idle_4g_diff_is_small),
	    cmocka_unit_test(test_broken_chains),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("diff snapshots", tests, setup, teardown);
}
