/* SPDX-License-Identifier: MIT */
/*
 * Root file system images (images/rootfs.sh, `forkd image`, docs/images.md)
 * and forkd-init booting into one (forkd.root=).
 *
 * - `forkd image build forkd-test-base --packages python3` builds the image
 *   (or finds it up to date: in the nested test host / is read-only, so it
 *   must have been built on this machine first), and a second build reuses
 *   the cache within seconds, saying so; `forkd image ls` lists it.
 * - Booted read-only under forkd-init's RAM overlay: / is overlayfs, python3
 *   from the image runs, a file written to / lands in the tmpfs upper layer
 *   and not in the image, and the image file on the host is byte-identical
 *   (sha256) after the run.
 * - `forkd image rm` of a missing image and `forkd image build` of a bad name
 *   fail with a message naming them.
 *
 * Needs a Linux guest (hardware-virtualization KVM, else the nested test host).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"

#define IMAGE_NAME     "forkd-test-base"
#define IMAGE_PACKAGES "python3"
/* Generous: in the nested test host every guest instruction may be emulated. */
#define BOOT_TIMEOUT_MS 180000

static char vmlinux[600], initrd[600], forkd[600];
/* The image's path, from `forkd image ls` (test_build_and_cache). */
static char image_path[1024];

static const char *images_dir(void)
{
	const char *d = getenv("FORKD_IMAGES");

	return d && *d ? d : ".cache/images";
}

static int setup(void **state)
{
	const char *build = getenv("FORKD_BUILD");
	struct stat st;

	(void)state;
	snprintf(vmlinux, sizeof(vmlinux), "%s/vmlinux", images_dir());
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", images_dir());
	snprintf(forkd, sizeof(forkd), "%s/forkd", build && *build ? build : "build");
	if (stat(vmlinux, &st) < 0 || stat(initrd, &st) < 0) {
		fprintf(stderr, "Linux images missing in %s: run `make images`\n", images_dir());
		return -1;
	}
	if (access(forkd, X_OK) < 0) {
		fprintf(stderr, "%s missing: run `make`\n", forkd);
		return -1;
	}
	return 0;
}

/* Runs a shell command with stdout and stderr into out; returns its exit status (-1 if odd). */
static int run_capture(const char *cmd, char *out, size_t out_size)
{
	char full[2048];
	size_t len = 0, n;
	FILE *f;
	int status;

	snprintf(full, sizeof(full), "%s 2>&1", cmd);
	f = popen(full, "r");
	assert_non_null(f);
	while (len < out_size - 1 && (n = fread(out + len, 1, out_size - 1 - len, f)) > 0)
		len += n;
	out[len] = '\0';
	/* Drain the rest so the command is not killed by SIGPIPE. */
	char sink[4096];
	while (fread(sink, 1, sizeof(sink), f) > 0)
		;
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The sha256 of a file, as sha256sum prints it (64 hex digits). */
static void file_sha256(const char *path, char out[65])
{
	char cmd[1200], text[256];

	snprintf(cmd, sizeof(cmd), "sha256sum '%s'", path);
	if (run_capture(cmd, text, sizeof(text)) != 0)
		fail_msg("%s: %s", cmd, text);
	memcpy(out, text, 64);
	out[64] = '\0';
}

/* Finds the image in `forkd image ls` and checks what it says; fills image_path. */
static void find_listed_image(void)
{
	char cmd[700], out[16384];
	bool found = false;

	/* stdout only: without a daemon, stderr says the local cache is read. */
	snprintf(cmd, sizeof(cmd), "( '%s' image ls 2>/dev/null )", forkd);
	assert_int_equal(run_capture(cmd, out, sizeof(out)), 0);
	for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
		json_error_t jerr;
		json_t *m = json_loads(line, 0, &jerr);

		if (!m)
			fail_msg("`forkd image ls` printed a line that is not JSON (%s): %s",
				 jerr.text, line);
		if (!strcmp(json_string_value(json_object_get(m, "name")) ?: "", IMAGE_NAME)) {
			json_t *pkgs = json_object_get(m, "packages");

			found = true;
			assert_true(json_is_array(pkgs));
			assert_int_equal(json_array_size(pkgs), 1);
			assert_string_equal(json_string_value(json_array_get(pkgs, 0)),
					    IMAGE_PACKAGES);
			assert_string_equal(json_string_value(json_object_get(m, "suite")),
					    "bookworm");
			assert_true(json_integer_value(json_object_get(m, "size")) > 0);
			assert_int_equal(
			    strlen(json_string_value(json_object_get(m, "input_hash")) ?: ""), 64);
			snprintf(image_path, sizeof(image_path), "%s",
				 json_string_value(json_object_get(m, "path")) ?: "");
		}
		json_decref(m);
	}
	if (!found)
		fail_msg("`forkd image ls` does not list %s", IMAGE_NAME);
	struct stat st;
	if (stat(image_path, &st) < 0 || st.st_size == 0)
		fail_msg("`forkd image ls` gives %s as the path of %s, which is missing or empty",
			 image_path, IMAGE_NAME);
}

static void test_build_and_cache(void **state)
{
	char cmd[700], out[65536];
	long long t0, ms;

	(void)state;
	snprintf(cmd, sizeof(cmd), "'%s' image build " IMAGE_NAME " --packages " IMAGE_PACKAGES,
		 forkd);
	/* Built here, or already up to date (the nested test host cannot build: / is read-only). */
	if (run_capture(cmd, out, sizeof(out)) != 0)
		fail_msg("%s failed (in the nested test host, build the image on the machine "
			 "first):\n%s",
			 cmd, out);
	if (!strstr(out, "is up to date") && !strstr(out, "done: "))
		fail_msg("%s: neither built nor up to date:\n%s", cmd, out);

	/* Again: the cache answers and says so, and the image file is the same one (no timing
	 * threshold: the inode and mtime show nothing was rebuilt). */
	find_listed_image();
	struct stat before, after;
	assert_int_equal(stat(image_path, &before), 0);
	t0 = now_ms();
	if (run_capture(cmd, out, sizeof(out)) != 0)
		fail_msg("%s (second time) failed:\n%s", cmd, out);
	ms = now_ms() - t0;
	if (!strstr(out, "rootfs: " IMAGE_NAME " is up to date (hash "))
		fail_msg("the second build did not reuse the cache:\n%s", out);
	assert_int_equal(stat(image_path, &after), 0);
	if (before.st_ino != after.st_ino || before.st_mtim.tv_sec != after.st_mtim.tv_sec ||
	    before.st_mtim.tv_nsec != after.st_mtim.tv_nsec)
		fail_msg("the second build replaced %s", image_path);
	printf("image: cached build answered in %lld ms\n", ms);
}

static void test_boot_image(void **state)
{
	char disk[1100], before[65], after[65];
	/* Inside the image: the markers below; the command runs under /bin/sh -c, from the image.
	 */
	/*
	 * The kernel hands each word after " -- " to init as an argument and
	 * panics past 32 of them ("Too many boot init vars"): hence the terse
	 * script. forkd-init runs it with /bin/sh -c, from the image.
	 */
	const char *cmdline = "console=ttyS0 quiet forkd.root=/dev/vda -- sh -c '"
			      "echo fs=$(stat -f -c %T /) py=$(python3 -c \"print(6*7)\");"
			      "echo forkd-upper-data>/f;"
			      "echo root=$(cat /f) upper=$(cat /run/forkd/upper-tmp/upper/f);"
			      "[ -e /run/forkd/lower/f ]||echo lower=clean;"
			      "[ -x /usr/sbin/forkd-agent ]&&echo agent=present'";
	struct vmm_proc p;

	(void)state;
	if (!image_path[0])
		find_listed_image();
	snprintf(disk, sizeof(disk), "%s,ro", image_path);
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			vmlinux,
			"--initrd",
			initrd,
			"--mem",
			"512M",
			"--disk",
			disk,
			"--serial-in",
			"none",
			"--append",
			(char *)cmdline,
			NULL};

	file_sha256(image_path, before);
	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(
	    vmm_need_line(&p, "forkd-init: root is /dev/vda (ext4, read-only)", BOOT_TIMEOUT_MS));
	assert_non_null(vmm_need_line(&p, "READY uptime=", BOOT_TIMEOUT_MS));
	assert_non_null(vmm_need_line(&p, "fs=overlayfs py=42", BOOT_TIMEOUT_MS));
	assert_non_null(
	    vmm_need_line(&p, "root=forkd-upper-data upper=forkd-upper-data", BOOT_TIMEOUT_MS));
	assert_non_null(vmm_need_line(&p, "lower=clean", BOOT_TIMEOUT_MS));
	assert_non_null(vmm_need_line(&p, "agent=present", BOOT_TIMEOUT_MS));
	assert_non_null(vmm_need_line(&p, "EXIT status=0", BOOT_TIMEOUT_MS));
	assert_int_equal(vmm_wait(&p, BOOT_TIMEOUT_MS), 0);
	for (int i = 0; i < p.nr_lines; i++)
		if (strstr(p.lines[i], "staying on the initramfs"))
			fail_msg("forkd-init fell back: %s", p.lines[i]);
	vmm_free(&p);

	/* The guest's write stayed in its RAM: the image is unchanged, byte for byte. */
	file_sha256(image_path, after);
	assert_string_equal(before, after);
}

static void test_image_errors(void **state)
{
	char cmd[700], out[16384];

	(void)state;
	snprintf(cmd, sizeof(cmd), "'%s' image rm forkd-test-no-such-image", forkd);
	assert_int_equal(run_capture(cmd, out, sizeof(out)), 1);
	if (!strstr(out, "rootfs: error: no image 'forkd-test-no-such-image' in "))
		fail_msg("unclear error from %s: %s", cmd, out);

	snprintf(cmd, sizeof(cmd), "'%s' image build Bad/Name", forkd);
	assert_int_equal(run_capture(cmd, out, sizeof(out)), 2);
	if (!strstr(out, "image build 'Bad/Name': expected an image name"))
		fail_msg("unclear error from %s: %s", cmd, out);

	snprintf(cmd, sizeof(cmd), "'%s' image build forkd-test-x --packages 'python3,No_Such'",
		 forkd);
	assert_int_equal(run_capture(cmd, out, sizeof(out)), 1);
	if (!strstr(out, "'No_Such' is not a Debian package name"))
		fail_msg("unclear error from %s: %s", cmd, out);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_build_and_cache),
	    cmocka_unit_test(test_boot_image),
	    cmocka_unit_test(test_image_errors),
	};

	if (where_begin(argc, argv, NEEDS_LINUX, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("root file system images", tests, setup, NULL);
}
