/* SPDX-License-Identifier: MIT */
/*
 * The built `forkd doctor` (FORKD_CLI, default build/forkd) on this machine,
 * its answers checked against the machine by other means: /dev/kvm opened
 * here, the sysfs files read and parsed here, userfaultfd(2) called here.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[200];

static const char *forkd_path(void)
{
	const char *p = getenv("FORKD_CLI");
	return p && *p ? p : "build/forkd";
}

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* Runs forkd with args (and extra "K=V" environment); returns its exit status,
 * stdout into out and stderr into err. */
static int run(char *const args[], const char *const env[], char *out, size_t out_len, char *err,
	       size_t err_len)
{
	char errpath[260];
	int p[2], status, efd;
	size_t have = 0;
	ssize_t n;
	pid_t pid;

	snprintf(errpath, sizeof(errpath), "%s/stderr", dir);
	assert_int_equal(pipe(p), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		efd = open(errpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(p[1], STDOUT_FILENO);
		dup2(efd, STDERR_FILENO);
		close(p[0]);
		for (; env && *env; env++)
			putenv((char *)*env);
		execv(forkd_path(), args);
		_exit(99);
	}
	close(p[1]);
	while (have + 1 < out_len && (n = read(p[0], out + have, out_len - 1 - have)) > 0)
		have += (size_t)n;
	out[have] = '\0';
	close(p[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	efd = open(errpath, O_RDONLY);
	assert_true(efd >= 0);
	n = read(efd, err, err_len - 1);
	err[n > 0 ? n : 0] = '\0';
	close(efd);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static json_t *doctor_json(const char *const env[])
{
	static char out[65536], err[4096];
	char *args[] = {"forkd", "doctor", "--json", NULL};
	json_error_t jerr;
	json_t *r;

	assert_int_equal(run(args, env, out, sizeof(out), err, sizeof(err)), 0);
	/* One JSON object on one line. */
	assert_non_null(strchr(out, '\n'));
	assert_int_equal(strchr(out, '\n') - out, (long)strlen(out) - 1);
	r = json_loads(out, 0, &jerr);
	if (!r)
		fail_msg("forkd doctor --json: not JSON at column %d: %s\n%s", jerr.column,
			 jerr.text, out);
	assert_true(json_is_object(r));
	return r;
}

static const char *get_str(json_t *o, const char *path)
{
	char key[64];
	const char *dot;

	while ((dot = strchr(path, '.'))) {
		snprintf(key, sizeof(key), "%.*s", (int)(dot - path), path);
		o = json_object_get(o, key);
		path = dot + 1;
	}
	return json_string_value(json_object_get(o, path));
}

/* The selected value of a sysfs choice file, parsed here independently. */
static bool sysfs_choice(const char *path, char *out, size_t size)
{
	char buf[256] = "";
	char *a, *b;
	FILE *f = fopen(path, "r");

	if (!f)
		return false;
	if (!fgets(buf, sizeof(buf), f))
		buf[0] = '\0';
	fclose(f);
	a = strchr(buf, '[');
	b = a ? strchr(a, ']') : NULL;
	if (!b)
		return false;
	snprintf(out, size, "%.*s", (int)(b - a - 1), a + 1);
	return true;
}

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "%s/forkd-doctor-XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char path[260];

	(void)state;
	snprintf(path, sizeof(path), "%s/stderr", dir);
	unlink(path);
	return rmdir(dir);
}

static void test_kvm(void **state)
{
	json_t *r = doctor_json(NULL), *kvm = json_object_get(r, "kvm");
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	const char *kind = get_str(kvm, "kind");

	(void)state;
	assert_non_null(kind);
	assert_int_equal(json_is_true(json_object_get(kvm, "present")), fd >= 0);
	if (fd < 0) {
		assert_string_equal(kind, "none");
		assert_non_null(get_str(kvm, "error")); /* says why */
	} else {
		int version = ioctl(fd, KVM_GET_API_VERSION, 0);
		assert_int_equal(json_integer_value(json_object_get(kvm, "api_version")), version);
		if (version != KVM_API_VERSION) {
			/* Opens but is no KVM (e.g. a file bound over /dev/kvm to hide it). */
			assert_string_equal(kind, "none");
			assert_non_null(get_str(kvm, "error"));
		} else {
			if (exists("/sys/module/kvm_pvm"))
				assert_string_equal(kind, "pvm");
			else if (exists("/sys/module/kvm_amd") || exists("/sys/module/kvm_intel"))
				assert_string_equal(kind, "hardware");
			else
				assert_string_equal(kind, "none");
			assert_true(json_is_integer(json_object_get(kvm, "max_vcpus")));
		}
		assert_true(json_is_array(json_object_get(kvm, "missing_caps")));
		close(fd);
	}
	/* The verdict follows the kind. */
	assert_string_equal(get_str(r, "verdict.kvm"), kind);
	assert_string_equal(get_str(r, "verdict.linux_guests"),
			    strcmp(kind, "hardware") == 0 &&
				    !json_array_size(json_object_get(kvm, "missing_caps"))
				? "native"
				: "nested");
	assert_non_null(get_str(r, "verdict.text"));
	json_decref(r);
}

static void test_thp(void **state)
{
	static const char *const files[] = {"enabled", "defrag", "shmem_enabled"};
	json_t *r = doctor_json(NULL), *thp = json_object_get(r, "thp");
	char path[128], want[64];

	(void)state;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(path, sizeof(path), "/sys/kernel/mm/transparent_hugepage/%s", files[i]);
		if (sysfs_choice(path, want, sizeof(want))) {
			assert_string_equal(get_str(thp, files[i]), want);
		} else {
			char key[64];
			assert_true(json_is_null(json_object_get(thp, files[i])));
			snprintf(key, sizeof(key), "%s_error", files[i]);
			assert_non_null(get_str(thp, key));
		}
	}
	json_decref(r);
}

static void test_cgroup(void **state)
{
	json_t *r = doctor_json(NULL), *cg = json_object_get(r, "cgroup");
	bool v2 = exists("/sys/fs/cgroup/cgroup.controllers");
	const char *where = get_str(cg, "cgroup2_path");

	(void)state;
	assert_int_equal(json_is_true(json_object_get(cg, "cgroup2")), v2);
	if (v2) {
		assert_string_equal(get_str(cg, "mode"), "unified");
		assert_string_equal(where, "/sys/fs/cgroup");
	}
	if (where) {
		/* The controllers are the words of that cgroup.controllers, in order. */
		char path[256], word[64];
		json_t *ctl = json_object_get(cg, "controllers");
		size_t n = 0;
		FILE *f;

		snprintf(path, sizeof(path), "%s/cgroup.controllers", where);
		f = fopen(path, "r");
		assert_non_null(f);
		while (fscanf(f, "%63s", word) == 1) {
			assert_string_equal(json_string_value(json_array_get(ctl, n)), word);
			n++;
		}
		fclose(f);
		assert_int_equal(json_array_size(ctl), n);
	} else {
		assert_false(v2);
	}
	json_decref(r);
}

static void test_userfaultfd(void **state)
{
	json_t *r = doctor_json(NULL), *u = json_object_get(r, "userfaultfd");
	json_t *sys = json_object_get(u, "syscall");
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int e = errno;
	FILE *f = fopen("/proc/sys/vm/unprivileged_userfaultfd", "r");
	int unpriv = -1;

	(void)state;
	if (f) {
		if (fscanf(f, "%d", &unpriv) != 1)
			unpriv = -1;
		fclose(f);
	}
	if (unpriv >= 0)
		assert_int_equal(json_integer_value(json_object_get(u, "unprivileged_userfaultfd")),
				 unpriv);
	assert_int_equal(json_is_true(json_object_get(sys, "ok")), fd >= 0);
	/* The uffd-wp-async engine's check: yes exactly when the kernel lists WP_ASYNC (6.7+). */
	{
		json_t *wa = json_object_get(u, "wp_async");
		const char *feat = fd >= 0 ? get_str(sys, "features") : NULL;
		bool has = feat && (strtoull(feat, NULL, 16) & (1ull << 15));

		assert_true(json_is_boolean(json_object_get(wa, "ok")));
		if (feat)
			assert_int_equal(json_is_true(json_object_get(wa, "ok")), has);
		if (!json_is_true(json_object_get(wa, "ok")))
			assert_non_null(get_str(wa, "error"));
	}
	if (fd >= 0) {
		assert_non_null(get_str(sys, "features"));
		assert_true(strncmp(get_str(sys, "features"), "0x", 2) == 0);
		close(fd);
	} else {
		/* "EPERM (vm.unprivileged_userfaultfd=0, ...)" */
		const char *why = get_str(sys, "error");
		assert_non_null(why);
		assert_true(strncmp(why, strerrorname_np(e), strlen(strerrorname_np(e))) == 0);
	}
	assert_int_equal(json_is_true(json_object_get(json_object_get(u, "dev"), "present")),
			 exists("/dev/userfaultfd"));
	json_decref(r);
}

static void test_disk(void **state)
{
	char cache[300], missing[300];
	char tmpdir_env[320], cache_env[320];
	json_t *r, *d;
	struct statvfs v;

	(void)state;
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	assert_int_equal(mkdir(cache, 0700), 0);
	snprintf(missing, sizeof(missing), "%s/not/yet", dir);
	snprintf(tmpdir_env, sizeof(tmpdir_env), "TMPDIR=%s", missing);
	snprintf(cache_env, sizeof(cache_env), "FORKD_IMAGE_CACHE=%s", cache);
	r = doctor_json((const char *const[]){tmpdir_env, cache_env, NULL});
	d = json_object_get(r, "disk");
	assert_int_equal(json_array_size(d), 3);

	json_t *c = json_array_get(d, 0), *t = json_array_get(d, 2);
	assert_string_equal(get_str(c, "path"), cache);
	assert_string_equal(get_str(c, "from"), "FORKD_IMAGE_CACHE");
	assert_true(json_is_true(json_object_get(c, "exists")));
	assert_int_equal(statvfs(cache, &v), 0);
	/* Free space moves while we look: within 1 GiB. */
	long long want = (long long)v.f_bavail * (long long)v.f_frsize;
	long long got = json_integer_value(json_object_get(c, "free_bytes"));
	assert_true(llabs(got - want) < (1LL << 30));

	assert_string_equal(get_str(t, "path"), missing);
	assert_false(json_is_true(json_object_get(t, "exists")));
	assert_string_equal(get_str(t, "measured_at"), dir);
	json_decref(r);
	assert_int_equal(rmdir(cache), 0);
}

static void test_human_and_bad_flags(void **state)
{
	static char out[65536], err[8192];
	char *plain[] = {"forkd", "doctor", NULL};
	char *bad[] = {"forkd", "doctor", "--jsno", NULL};
	char *extra[] = {"forkd", "doctor", "now", NULL};

	(void)state;
	assert_int_equal(run(plain, NULL, out, sizeof(out), err, sizeof(err)), 0);
	assert_non_null(strstr(out, "\nkvm "));
	assert_non_null(strstr(out, "\nthp "));
	assert_non_null(strstr(out, "\nverdict: "));
	assert_string_equal(err, "");

	assert_int_equal(run(bad, NULL, out, sizeof(out), err, sizeof(err)), 2);
	assert_string_equal(out, "");
	assert_non_null(strstr(err, "forkd: doctor: unknown option '--jsno' (expected --json)"));
	assert_int_equal(run(extra, NULL, out, sizeof(out), err, sizeof(err)), 2);
	assert_non_null(strstr(err, "doctor: unexpected argument 'now'"));
}

/* VM networking, seccomp and cgroup delegation, each against what this test finds itself. */
static void test_net_seccomp_delegation(void **state)
{
	json_t *r = doctor_json(NULL), *net = json_object_get(r, "net");
	json_t *sc = json_object_get(r, "seccomp"), *cg = json_object_get(r, "cgroup");
	int tun = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
	const char *nft = get_str(net, "nft");
	bool nft_here = exists("/usr/sbin/nft") || exists("/sbin/nft") || exists("/usr/bin/nft");

	(void)state;
	assert_int_equal(json_is_true(json_object_get(net, "tun")), tun >= 0);
	if (tun >= 0)
		close(tun);
	assert_int_equal(nft != NULL, nft_here);
	if (nft)
		assert_true(exists(nft));
	assert_true(json_is_array(json_object_get(net, "slot_net_clash")));
	/* seccomp: the kernel's own list of actions when it has filters */
	assert_int_equal(json_is_true(json_object_get(sc, "filters")),
			 exists("/proc/sys/kernel/seccomp/actions_avail"));
	if (get_str(cg, "cgroup2_path") && get_str(cg, "own_cgroup")) {
		const char *own = get_str(cg, "own_cgroup");

		assert_int_equal(
		    strncmp(own, get_str(cg, "cgroup2_path"), strlen(get_str(cg, "cgroup2_path"))),
		    0);
		assert_int_equal(json_is_true(json_object_get(cg, "own_cgroup_writable")),
				 access(own, W_OK) == 0);
	}
	json_decref(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_kvm),
	    cmocka_unit_test(test_thp),
	    cmocka_unit_test(test_cgroup),
	    cmocka_unit_test(test_userfaultfd),
	    cmocka_unit_test(test_disk),
	    cmocka_unit_test(test_human_and_bad_flags),
	    cmocka_unit_test(test_net_seccomp_delegation),
	};
	return cmocka_run_group_tests_name("forkd doctor against this machine", tests, setup,
					   teardown);
}
