/* SPDX-License-Identifier: MIT */
/*
 * scripts/testhost.sh, the nested test host, driven as a user drives it:
 * a command's output streams out and its exit status comes back, the
 * machine's / is read-only and the checkout writable inside, /dev/kvm
 * exists there; and every failure gets one clear line: no QEMU, a kernel
 * package without KVM modules, a nested host that does not boot, a command
 * that hangs (timeout, console tail, nothing left running), not enough
 * memory, bad options. Needs no KVM of this machine: QEMU's TCG runs
 * anywhere.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "testhost");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

struct run {
	int status;
	char out[16384], err[16384];
};

static void slurp(const char *path, char *buf, size_t size)
{
	FILE *f = fopen(path, "r");
	size_t n = f ? fread(buf, 1, size - 1, f) : 0;

	buf[n] = '\0';
	if (f)
		fclose(f);
}

/* Runs `env_and_args` (a shell fragment: VAR=x scripts/testhost.sh ...) from the checkout. */
static void run_testhost(struct run *r, const char *fmt, ...)
{
	char cmd[4096], frag[3000], out[400], err[400];
	va_list ap;
	int status;

	va_start(ap, fmt);
	vsnprintf(frag, sizeof(frag), fmt, ap);
	va_end(ap);
	snprintf(out, sizeof(out), "%s/out", dir);
	snprintf(err, sizeof(err), "%s/err", dir);
	snprintf(cmd, sizeof(cmd), "%s >'%s' 2>'%s' </dev/null", frag, out, err);
	status = system(cmd);
	r->status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
	slurp(out, r->out, sizeof(r->out));
	slurp(err, r->err, sizeof(r->err));
}

static void expect_error(const struct run *r, int status, const char *needle1, const char *needle2)
{
	if (r->status != status || !strstr(r->err, "testhost: error: ") ||
	    (needle1 && !strstr(r->err, needle1)) || (needle2 && !strstr(r->err, needle2)))
		fail_msg("expected exit %d and an error naming '%s' '%s'; got exit %d, stderr:\n%s",
			 status, needle1 ? needle1 : "", needle2 ? needle2 : "", r->status, r->err);
}

/* Is any process's command line mentioning `text` still alive? */
static bool process_mentions(const char *text)
{
	DIR *d = opendir("/proc");
	struct dirent *e;
	bool found = false;

	assert_non_null(d);
	while (!found && (e = readdir(d))) {
		char path[300], buf[8192];
		ssize_t n;
		int fd;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
		fd = open(path, O_RDONLY);
		if (fd < 0)
			continue;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		for (ssize_t i = 0; i < n; i++)
			if (!buf[i])
				buf[i] = ' ';
		buf[n > 0 ? n : 0] = '\0';
		if (strstr(buf, text) && !strstr(buf, "test_testhost"))
			found = true;
	}
	closedir(d);
	return found;
}

static void test_command_runs_inside(void **state)
{
	struct run r;

	(void)state;
	/* Output streams out; / is read-only, the checkout writable; /dev/kvm exists. */
	run_testhost(&r, "scripts/testhost.sh -- bash -c 'echo inside-$((6*7)); "
			 "test -c /dev/kvm && echo kvm-ok; touch /usr/forkd-x 2>/dev/null || "
			 "echo root-ro; f=$(mktemp -p build) && echo checkout-rw && rm $f; "
			 "echo kind=$FORKD_TESTHOST_KIND; exit 7'");
	if (r.status != 7 || !strstr(r.out, "inside-42") || !strstr(r.out, "kvm-ok") ||
	    !strstr(r.out, "root-ro") || !strstr(r.out, "checkout-rw") ||
	    !strstr(r.out, "kind=nested-"))
		fail_msg("exit %d\nstdout:\n%s\nstderr:\n%s", r.status, r.out, r.err);
}

static void test_no_qemu(void **state)
{
	struct run r;

	(void)state;
	run_testhost(&r, "FORKD_QEMU=/nonexistent/qemu-system-x86_64 scripts/testhost.sh -- true");
	expect_error(&r, 125, "QEMU not found", "/nonexistent/qemu-system-x86_64");
}

static void test_bad_options(void **state)
{
	struct run r;

	(void)state;
	run_testhost(&r, "scripts/testhost.sh --mem lots -- true");
	expect_error(&r, 125, "--mem 'lots'", "expected a size");
	run_testhost(&r, "scripts/testhost.sh --cpus 0 -- true");
	expect_error(&r, 125, "--cpus '0'", "expected 1 to 64");
	run_testhost(&r, "scripts/testhost.sh --timeout -3 -- true");
	expect_error(&r, 125, "--timeout '-3'", NULL);
	run_testhost(&r, "scripts/testhost.sh --accel warp -- true");
	expect_error(&r, 125, "--accel 'warp'", NULL);
	run_testhost(&r, "scripts/testhost.sh --frobnicate -- true");
	expect_error(&r, 125, "unknown option '--frobnicate'", NULL);
	run_testhost(&r, "scripts/testhost.sh");
	expect_error(&r, 125, "no command", NULL);
}

static void test_not_enough_memory(void **state)
{
	struct run r;

	(void)state;
	run_testhost(&r, "scripts/testhost.sh --mem 900000G -- true");
	expect_error(&r, 125, "--mem 900000G", "MiB available");
}

static void test_nested_host_does_not_boot(void **state)
{
	char junk[400];
	struct run r;
	FILE *f;

	(void)state;
	/* Not a kernel at all: QEMU refuses it. */
	snprintf(junk, sizeof(junk), "%s/junk-kernel", dir);
	f = fopen(junk, "w");
	assert_non_null(f);
	fputs("this is not a kernel\n", f);
	fclose(f);
	run_testhost(&r, "FORKD_TESTHOST_KERNEL='%s' scripts/testhost.sh -- true", junk);
	expect_error(&r, 125, "did not boot", NULL);
	/* A kernel that panics before its init runs: the console tail shows why. */
	run_testhost(&r, "FORKD_TESTHOST_APPEND=rdinit=/nonexistent scripts/testhost.sh -- true");
	expect_error(&r, 125, "did not boot", "console");
	if (!strstr(r.err, "panic"))
		fail_msg("the console tail should show the panic:\n%s", r.err);
}

static void test_hang_times_out_and_leaves_nothing(void **state)
{
	char run_dir[300] = "";
	const char *p;
	struct run r;

	(void)state;
	run_testhost(&r, "scripts/testhost.sh --timeout 25 -- sleep 100000");
	expect_error(&r, 124, "timed out after 25 s", "killed the nested host");
	/* The console tail names the run directory; nothing of it may remain. */
	p = strstr(r.err, "nested host's console (");
	assert_non_null(p);
	p += strlen("nested host's console (");
	snprintf(run_dir, sizeof(run_dir), "%.*s", (int)(strstr(p, "/console.log") - p), p);
	assert_true(strlen(run_dir) > 10);
	struct stat st;
	assert_int_equal(stat(run_dir, &st), -1);
	/* QEMU and virtiofsd are gone (SIGKILLed, and reaped by the script). */
	for (int i = 0; i < 50 && process_mentions(run_dir); i++)
		usleep(100 * 1000);
	assert_false(process_mentions(run_dir));
}

/* A kernel package whose modules lack KVM: images/build.sh names what is missing. */
static void test_kernel_package_without_kvm(void **state)
{
	char pkg[400], deb[400], cmd[4096];
	struct run r;
	const char *images = getenv("FORKD_IMAGES") ? getenv("FORKD_IMAGES") : ".cache/images";

	(void)state;
	snprintf(pkg, sizeof(pkg), "%s/nokvm", dir);
	snprintf(deb, sizeof(deb), "%s/nokvm.deb", dir);
	snprintf(cmd, sizeof(cmd),
		 "set -e; src=$(ls '%s'/linux-image-*.deb | head -n1); dpkg-deb -R \"$src\" '%s'; "
		 "find '%s' -path '*/kernel/arch/x86/kvm' -prune -exec rm -rf {} +; "
		 "dpkg-deb -Znone -b '%s' '%s' >/dev/null",
		 images, pkg, pkg, pkg, deb);
	assert_int_equal(system(cmd), 0);
	run_testhost(&r,
		     "FORKD_BUILD='%s' FORKD_KERNEL_DEB='%s' FORKD_IMAGES_DIR='%s/img' "
		     "images/build.sh",
		     getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build", deb, dir);
	if (r.status == 0 || !strstr(r.err, "nested test host (KVM, virtiofs) modules not found") ||
	    !strstr(r.err, "kvm_amd") || !strstr(r.err, deb))
		fail_msg("exit %d, stderr:\n%s", r.status, r.err);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_command_runs_inside),
	    cmocka_unit_test(test_no_qemu),
	    cmocka_unit_test(test_bad_options),
	    cmocka_unit_test(test_not_enough_memory),
	    cmocka_unit_test(test_nested_host_does_not_boot),
	    cmocka_unit_test(test_hang_times_out_and_leaves_nothing),
	    cmocka_unit_test(test_kernel_package_without_kvm),
	};
	if (where_begin(argc, argv, NEEDS_NOTHING, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("the nested test host (scripts/testhost.sh)", tests,
					   setup, teardown);
}
