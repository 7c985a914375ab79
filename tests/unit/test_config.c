/* SPDX-License-Identifier: MIT */
/* forkd-vmm's command line: sizes, every option, and the error messages users see. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"
#include "core/guest_mem.h"

#define KiB (1ULL << 10)
#define MiB (1ULL << 20)
#define GiB (1ULL << 30)
#define TiB (1ULL << 40)

/* argv as getopt wants it: mutable (GNU getopt permutes it) and NULL-terminated. */
#define ARGV(...)  ((char *[]){"forkd-vmm", __VA_ARGS__, NULL})
#define ARGC(argv) ((int)(sizeof(argv) / sizeof((argv)[0])) - 1)

#define PARSE(cfg, err, ...)                                                                       \
	vmm_config_parse((cfg), ARGC(ARGV(__VA_ARGS__)), ARGV(__VA_ARGS__), (err))

/*
 * glibc keeps getopt's position inside a cluster of short options in hidden
 * state; start every test from a fully reinitialised getopt (optind = 0) so
 * a failing test cannot leak into the next one.
 */
static int reset_getopt(void **state)
{
	char *argv[] = {"reset", NULL};

	(void)state;
	optind = 0;
	while (getopt(1, argv, "") != -1)
		;
	return 0;
}

static void assert_msg_mentions(const struct fk_err *err, const char *what)
{
	if (!strstr(err->msg, what))
		fail_msg("error \"%s\" does not mention \"%s\"", err->msg, what);
}

/* Parses one bad command line; the message must name each of the given words. */
static void expect_parse_error(int argc, char **argv, int code, const char *what1,
			       const char *what2)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	assert_int_equal(vmm_config_parse(&cfg, argc, argv, &err), -code);
	assert_int_equal(err.code, code);
	assert_msg_mentions(&err, what1);
	if (what2)
		assert_msg_mentions(&err, what2);
}

#define EXPECT_PARSE_ERROR(code, what1, what2, ...)                                                \
	expect_parse_error(ARGC(ARGV(__VA_ARGS__)), ARGV(__VA_ARGS__), (code), (what1), (what2))

/* ---- parse_size ---- */

static void test_parse_size_accepts_suffixes(void **state)
{
	static const struct {
		const char *in;
		uint64_t want;
	} cases[] = {
	    {"0", 0},
	    {"1048576", MiB},
	    {"18446744073709551615", UINT64_MAX},
	    {"1K", KiB},
	    {"3k", 3 * KiB},
	    {"2M", 2 * MiB},
	    {"512m", 512 * MiB},
	    {"4G", 4 * GiB},
	    {"4g", 4 * GiB},
	    {"1T", TiB},
	    {"1t", TiB},
	    {"8KiB", 8 * KiB},
	    {"64MiB", 64 * MiB},
	    {"64mib", 64 * MiB},
	    {"64MIB", 64 * MiB},
	    {"2GiB", 2 * GiB},
	    {"1TiB", TiB},
	    {"1KB", KiB},
	    {"16MB", 16 * MiB},
	    {"2gb", 2 * GiB},
	    {"007M", 7 * MiB},
	    /* The largest values each multiplier still fits in 64 bits. */
	    {"16777215T", (UINT64_MAX >> 40) << 40},
	    {"17179869183G", (UINT64_MAX >> 30) << 30},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = 12345;

		if (parse_size(cases[i].in, &got) != 0)
			fail_msg("parse_size(\"%s\") failed", cases[i].in);
		if (got != cases[i].want)
			fail_msg("parse_size(\"%s\") = %llu, want %llu", cases[i].in,
				 (unsigned long long)got, (unsigned long long)cases[i].want);
	}
}

static void test_parse_size_rejects_junk(void **state)
{
	static const char *const cases[] = {
	    "",
	    "-1",
	    "-1M",
	    "+1M",
	    " 1M",
	    "1M ",
	    "1 M",
	    "M",
	    "MiB",
	    "1X",
	    "1Mi",
	    "1MiBx",
	    "1MBB",
	    "1iB",
	    "1KM",
	    "1.5G",
	    "0x10",
	    "1e6",
	    "99999999999T",
	    "16777216T",
	    "17179869184G",
	    "18446744073709551616",
	    "99999999999999999999999",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		uint64_t got = 12345;

		if (parse_size(cases[i], &got) != -EINVAL)
			fail_msg("parse_size(\"%s\") accepted", cases[i]);
		if (got != 12345)
			fail_msg("parse_size(\"%s\") wrote %llu on failure", cases[i],
				 (unsigned long long)got);
	}
	assert_int_equal(parse_size(NULL, &(uint64_t){0}), -EINVAL);
}

/* ---- vmm_config_parse: accepted command lines ---- */

static void test_defaults(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "vmlinux"), 0);
	assert_string_equal(cfg.kernel, "vmlinux");
	assert_null(cfg.initrd);
	assert_string_equal(cfg.cmdline, "");
	assert_int_equal(cfg.mem_size, VMM_DEFAULT_MEM);
	assert_int_equal(cfg.nr_cpus, 1);
	assert_int_equal(cfg.nr_disks, 0);
	assert_string_equal(cfg.serial_out, "stdout");
	assert_string_equal(cfg.serial_in, "stdin");
	assert_string_equal(cfg.kvm_path, "/dev/kvm");
	assert_false(cfg.help);
}

static void test_every_option(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k.elf", "--initrd", "rd.img", "--append",
			       "console=ttyS0 quiet", "--mem", "4G", "--cpus", "4", "--disk",
			       "root.img,ro,id=root", "--disk", "data.img", "--serial", "out.log",
			       "--serial-in", "none", "--kvm", "/tmp/kvm"),
			 0);
	assert_string_equal(cfg.kernel, "k.elf");
	assert_string_equal(cfg.initrd, "rd.img");
	assert_string_equal(cfg.cmdline, "console=ttyS0 quiet");
	assert_int_equal(cfg.mem_size, 4 * GiB);
	assert_int_equal(cfg.nr_cpus, 4);
	assert_int_equal(cfg.nr_disks, 2);
	assert_string_equal(cfg.disks[0].path, "root.img");
	assert_true(cfg.disks[0].readonly);
	assert_string_equal(cfg.disks[0].id, "root");
	assert_string_equal(cfg.disks[1].path, "data.img");
	assert_false(cfg.disks[1].readonly);
	assert_string_equal(cfg.disks[1].id, "forkd-disk1");
	assert_string_equal(cfg.serial_out, "out.log");
	assert_string_equal(cfg.serial_in, "none");
	assert_string_equal(cfg.kvm_path, "/tmp/kvm");
	assert_false(cfg.help);
}

static void test_equals_form_and_last_wins(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel=a", "--mem=64M", "--cpus=2", "--kernel", "b",
			       "--mem", "128M"),
			 0);
	assert_string_equal(cfg.kernel, "b");
	assert_int_equal(cfg.mem_size, 128 * MiB);
	assert_int_equal(cfg.nr_cpus, 2);
}

static void test_disk_flags(void **state)
{
	static const struct {
		const char *arg;
		const char *path;
		bool readonly;
		const char *id;
	} cases[] = {
	    {"a.img", "a.img", false, "forkd-disk0"},
	    {"a.img,ro", "a.img", true, "forkd-disk0"},
	    {"a.img,rw", "a.img", false, "forkd-disk0"},
	    {"a.img,ro,rw", "a.img", false, "forkd-disk0"},
	    {"a.img,rw,ro", "a.img", true, "forkd-disk0"},
	    {"/dev/disk/by-id/x,id=root", "/dev/disk/by-id/x", false, "root"},
	    {"a.img,id=x,ro", "a.img", true, "x"},
	    {"a.img,id=12345678901234567890", "a.img", false, "12345678901234567890"},
	    {"a.img,id=first,id=second", "a.img", false, "second"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmm_config cfg;
		struct fk_err err = {0};

		if (PARSE(&cfg, &err, "--kernel", "k", "--disk", (char *)cases[i].arg) != 0)
			fail_msg("--disk %s: %s", cases[i].arg, err.msg);
		assert_int_equal(cfg.nr_disks, 1);
		assert_string_equal(cfg.disks[0].path, cases[i].path);
		assert_int_equal(cfg.disks[0].readonly, cases[i].readonly);
		assert_string_equal(cfg.disks[0].id, cases[i].id);
	}
}

static void test_disk_bad_flags(void **state)
{
	static const struct {
		const char *arg;
		const char *what; /* the part the message must quote */
	} cases[] = {
	    {"", "--disk"},
	    {",ro", ",ro"},
	    {"a.img,id=", "id="},
	    {"a.img,id=123456789012345678901", "id=123456789012345678901"},
	    {"a.img,readonly", "readonly"},
	    {"a.img,RO", "RO"},
	    {"a.img,ro=1", "ro=1"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmm_config cfg;
		struct fk_err err = {0};

		if (PARSE(&cfg, &err, "--kernel", "k", "--disk", (char *)cases[i].arg) != -EINVAL)
			fail_msg("--disk '%s' accepted", cases[i].arg);
		assert_msg_mentions(&err, "--disk");
		assert_msg_mentions(&err, cases[i].what);
	}
}

static void test_disk_path_too_long(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};
	char *arg = malloc(sizeof(cfg.disks[0].path) + 1);

	(void)state;
	assert_non_null(arg);
	/* Exactly the longest path that fits... */
	memset(arg, 'p', sizeof(cfg.disks[0].path) - 1);
	arg[sizeof(cfg.disks[0].path) - 1] = '\0';
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--disk", arg), 0);
	assert_int_equal(strlen(cfg.disks[0].path), sizeof(cfg.disks[0].path) - 1);
	/* ...and one byte more. */
	memset(arg, 'p', sizeof(cfg.disks[0].path));
	arg[sizeof(cfg.disks[0].path)] = '\0';
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--disk", arg), -ENAMETOOLONG);
	assert_msg_mentions(&err, "--disk");
	free(arg);
}

static void test_disk_limit(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};
	char name[VMM_MAX_DISKS][24];

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--disk", "d0", "--disk", "d1",
			       "--disk", "d2", "--disk", "d3", "--disk", "d4", "--disk", "d5",
			       "--disk", "d6", "--disk", "d7"),
			 0);
	assert_int_equal(cfg.nr_disks, VMM_MAX_DISKS);
	for (int i = 0; i < VMM_MAX_DISKS; i++) {
		snprintf(name[i], sizeof(name[i]), "d%d", i);
		assert_string_equal(cfg.disks[i].path, name[i]);
		snprintf(name[i], sizeof(name[i]), "forkd-disk%d", i);
		assert_string_equal(cfg.disks[i].id, name[i]);
	}
	EXPECT_PARSE_ERROR(EINVAL, "--disk", "d8", "--kernel", "k", "--disk", "d0", "--disk", "d1",
			   "--disk", "d2", "--disk", "d3", "--disk", "d4", "--disk", "d5", "--disk",
			   "d6", "--disk", "d7", "--disk", "d8");
}

static void test_append_length_limit(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};
	char *line = malloc(VMM_MAX_CMDLINE + 2);
	char len_text[16];

	(void)state;
	assert_non_null(line);
	memset(line, 'a', VMM_MAX_CMDLINE);
	line[VMM_MAX_CMDLINE] = '\0';
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--append", line), 0);
	assert_ptr_equal(cfg.cmdline, line);

	memset(line, 'a', VMM_MAX_CMDLINE + 1);
	line[VMM_MAX_CMDLINE + 1] = '\0';
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--append", line), -EINVAL);
	assert_msg_mentions(&err, "--append");
	snprintf(len_text, sizeof(len_text), "%d", VMM_MAX_CMDLINE + 1);
	assert_msg_mentions(&err, len_text);
	free(line);
}

static void test_mem_bounds(void **state)
{
	static const struct {
		const char *arg;
		uint64_t want; /* 0: must be refused */
	} cases[] = {
	    {"32M", VMM_MIN_MEM},
	    {"32768K", VMM_MIN_MEM},
	    {"33554432", VMM_MIN_MEM},
	    {"1T", VMM_MAX_MEM},
	    {"1024G", VMM_MAX_MEM},
	    {"3073M", 3073 * MiB},
	    {"5GiB", 5 * GiB},
	    {"31M", 0},
	    {"32767K", 0},
	    {"1025G", 0},
	    {"1048577M", 0},
	    {"2T", 0},
	    {"32769K", 0},   /* not a whole number of MiB */
	    {"33554433", 0}, /* idem */
	    {"0", 0},
	    {"", 0},
	    {"lots", 0},
	    {"-64M", 0},
	    {"99999999999T", 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmm_config cfg;
		struct fk_err err = {0};
		int ret = PARSE(&cfg, &err, "--kernel", "k", "--mem", (char *)cases[i].arg);

		if (cases[i].want) {
			if (ret != 0)
				fail_msg("--mem %s: %s", cases[i].arg, err.msg);
			assert_int_equal(cfg.mem_size, cases[i].want);
		} else {
			if (ret != -EINVAL)
				fail_msg("--mem '%s' accepted", cases[i].arg);
			assert_msg_mentions(&err, "--mem");
			assert_msg_mentions(&err, cases[i].arg);
		}
	}
}

static void test_cpus_bounds(void **state)
{
	static const struct {
		const char *arg;
		int want; /* 0: must be refused */
	} cases[] = {
	    {"1", 1},	{"2", 2},    {"254", VMM_MAX_CPUS},
	    {"0", 0},	{"255", 0},  {"-1", 0},
	    {"", 0},	{"two", 0},  {"2x", 0},
	    {"1.5", 0}, {"0x10", 0}, {"99999999999999999999", 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct vmm_config cfg;
		struct fk_err err = {0};
		int ret = PARSE(&cfg, &err, "--kernel", "k", "--cpus", (char *)cases[i].arg);

		if (cases[i].want) {
			if (ret != 0)
				fail_msg("--cpus %s: %s", cases[i].arg, err.msg);
			assert_int_equal(cfg.nr_cpus, cases[i].want);
		} else {
			if (ret != -EINVAL)
				fail_msg("--cpus '%s' accepted", cases[i].arg);
			assert_msg_mentions(&err, "--cpus");
			assert_msg_mentions(&err, cases[i].arg);
		}
	}
}

/* ---- vmm_config_parse: refused command lines ---- */

static void test_missing_kernel(void **state)
{
	(void)state;
	EXPECT_PARSE_ERROR(EINVAL, "--kernel", NULL, "--mem", "64M");
}

static void test_unknown_option(void **state)
{
	(void)state;
	EXPECT_PARSE_ERROR(EINVAL, "--bogus", NULL, "--kernel", "k", "--bogus");
	EXPECT_PARSE_ERROR(EINVAL, "--bogus=1", NULL, "--kernel", "k", "--bogus=1");
	EXPECT_PARSE_ERROR(EINVAL, "-x", NULL, "--kernel", "k", "-x");
	/* --help takes no value. */
	EXPECT_PARSE_ERROR(EINVAL, "--help=yes", NULL, "--kernel", "k", "--help=yes");
}

/* An unknown short option inside a cluster must be named, not the argument before it. */
static void test_unknown_option_in_cluster(void **state)
{
	(void)state;
	EXPECT_PARSE_ERROR(EINVAL, "-x", NULL, "--kernel", "k", "-xh");
}

static void test_missing_value(void **state)
{
	static const char *const options[] = {"--kernel", "--initrd",	 "--append",
					      "--mem",	  "--cpus",	 "--disk",
					      "--serial", "--serial-in", "--kvm"};

	(void)state;
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
		struct vmm_config cfg;
		struct fk_err err = {0};

		if (PARSE(&cfg, &err, "--kernel", "k", (char *)options[i]) != -EINVAL)
			fail_msg("%s without a value accepted", options[i]);
		assert_msg_mentions(&err, options[i]);
		assert_msg_mentions(&err, "value");
	}
}

static void test_stray_argument(void **state)
{
	(void)state;
	EXPECT_PARSE_ERROR(EINVAL, "'extra'", NULL, "--kernel", "k", "extra");
	/* GNU getopt moves non-options to the end; the stray one is still found. */
	EXPECT_PARSE_ERROR(EINVAL, "'first'", NULL, "first", "--kernel", "k");
	/* After "--", everything is positional. */
	EXPECT_PARSE_ERROR(EINVAL, "'--mem'", NULL, "--kernel", "k", "--", "--mem");
}

static void test_empty_serial(void **state)
{
	(void)state;
	EXPECT_PARSE_ERROR(EINVAL, "--serial", NULL, "--kernel", "k", "--serial", "");
	EXPECT_PARSE_ERROR(EINVAL, "--serial-in", NULL, "--kernel", "k", "--serial-in", "");
}

static void test_help(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	/* Help wins over a missing --kernel and over later bad options. */
	assert_int_equal(PARSE(&cfg, &err, "--help"), 0);
	assert_true(cfg.help);
	assert_int_equal(PARSE(&cfg, &err, "-h"), 0);
	assert_true(cfg.help);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--help", "--mem", "1X"), 0);
	assert_true(cfg.help);
	/* A later parse without it starts from a clean configuration. */
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k"), 0);
	assert_false(cfg.help);
}

/*
 * Each call parses its own argv from scratch, even when the previous call
 * stopped in the middle of a cluster of short options ("-hh").
 */
static void test_parse_is_repeatable(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "-hh"), 0);
	assert_true(cfg.help);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k"), 0);
	assert_false(cfg.help);
	assert_non_null(cfg.kernel);
	assert_string_equal(cfg.kernel, "k");
}

static void test_usage_names_every_option(void **state)
{
	static const char *const options[] = {
	    "--kernel", "--initrd",	"--append",	 "--mem", "--cpus",
	    "--disk",	"--serial",	"--serial-in",	 "--kvm", "--vsock",
	    "--fanout", "--fanout-dir", "--mem-backend", "--help"};
	char *text = NULL;
	size_t size = 0;
	FILE *out = open_memstream(&text, &size);

	(void)state;
	assert_non_null(out);
	vmm_config_usage(out);
	assert_int_equal(fclose(out), 0);
	for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++)
		if (!strstr(text, options[i]))
			fail_msg("usage does not mention %s", options[i]);
	free(text);
}

/* --image NAME against a cache made here: FORKD_IMAGE_CACHE and FORKD_IMAGES point at it. */
static void test_image(void **state)
{
	char dir[] = "/tmp/forkd-test-image-XXXXXX", path[200];
	struct vmm_config cfg;
	struct fk_err err = {0};
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/base", dir);
	assert_int_equal(mkdir(path, 0755), 0);
	snprintf(path, sizeof(path), "%s/base/rootfs.ext4", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fclose(f);
	setenv("FORKD_IMAGE_CACHE", dir, 1);
	setenv("FORKD_IMAGES", "/k", 1);

	assert_int_equal(
	    PARSE(&cfg, &err, "--image", "base", "--disk", "data.img", "--append", "-- python3"),
	    0);
	/* The image is /dev/vda, read-only, before the user's disks. */
	assert_int_equal(cfg.nr_disks, 2);
	assert_string_equal(cfg.disks[0].path, path);
	assert_true(cfg.disks[0].readonly);
	assert_string_equal(cfg.disks[1].path, "data.img");
	assert_string_equal(cfg.kernel, "/k/vmlinux");
	assert_string_equal(cfg.initrd, "/k/initramfs.cpio");
	assert_string_equal(cfg.cmdline, VMM_IMAGE_CMDLINE " -- python3");
	/* An explicit kernel wins. */
	assert_int_equal(PARSE(&cfg, &err, "--image", "base", "--kernel", "my-vmlinux"), 0);
	assert_string_equal(cfg.kernel, "my-vmlinux");
	assert_string_equal(cfg.cmdline, VMM_IMAGE_CMDLINE);

	expect_parse_error(ARGC(ARGV("--image", "Base")), ARGV("--image", "Base"), EINVAL,
			   "--image 'Base'", "[a-z0-9]");
	expect_parse_error(ARGC(ARGV("--image", "../x")), ARGV("--image", "../x"), EINVAL,
			   "--image '../x'", "image name");
	expect_parse_error(ARGC(ARGV("--image", "missing")), ARGV("--image", "missing"), ENOENT,
			   "forkd image build missing", "rootfs.ext4");
	expect_parse_error(ARGC(ARGV("--image", "base", "--restore", "s")),
			   ARGV("--image", "base", "--restore", "s"), EINVAL, "--image",
			   "--restore");
	unsetenv("FORKD_IMAGE_CACHE");
	unsetenv("FORKD_IMAGES");
	unlink(path);
	snprintf(path, sizeof(path), "%s/base", dir);
	rmdir(path);
	rmdir(dir);
}

/* --fanout N --fanout-dir DIR: only with --restore, both together, N in 1..1024. */
static void test_fanout(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(
	    PARSE(&cfg, &err, "--restore", "s", "--fanout", "100", "--fanout-dir", "o"), 0);
	assert_int_equal(cfg.fanout, 100);
	assert_string_equal(cfg.fanout_dir, "o");
	assert_int_equal(PARSE(&cfg, &err, "--restore", "s"), 0);
	assert_int_equal(cfg.fanout, 0);
	assert_null(cfg.fanout_dir);
	EXPECT_PARSE_ERROR(EINVAL, "--fanout '0'", "1 to 1024", "--restore", "s", "--fanout", "0",
			   "--fanout-dir", "o");
	EXPECT_PARSE_ERROR(EINVAL, "--fanout '1025'", NULL, "--restore", "s", "--fanout", "1025",
			   "--fanout-dir", "o");
	EXPECT_PARSE_ERROR(EINVAL, "--fanout '3x'", NULL, "--restore", "s", "--fanout", "3x",
			   "--fanout-dir", "o");
	EXPECT_PARSE_ERROR(EINVAL, "--fanout-dir", NULL, "--restore", "s", "--fanout", "2");
	EXPECT_PARSE_ERROR(EINVAL, "--fanout-dir only applies", NULL, "--restore", "s",
			   "--fanout-dir", "o");
	EXPECT_PARSE_ERROR(EINVAL, "--fanout only applies with --restore", NULL, "--kernel", "k",
			   "--fanout", "2", "--fanout-dir", "o");
	EXPECT_PARSE_ERROR(EINVAL, "--control", NULL, "--restore", "s", "--fanout", "2",
			   "--fanout-dir", "o", "--control", "c.sock");
	{
		/* --ready-fd must name an open descriptor to get as far as the --fanout check. */
		int fd = dup(STDERR_FILENO);
		char num[16];

		assert_true(fd >= 3);
		snprintf(num, sizeof(num), "%d", fd);
		EXPECT_PARSE_ERROR(EINVAL, "--ready-fd", NULL, "--restore", "s", "--fanout", "2",
				   "--fanout-dir", "o", "--ready-fd", num);
		close(fd);
	}
}

static void test_vsock(void **state)
{
	char long_path[200];
	char arg[260];
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k"), 0);
	assert_string_equal(cfg.vsock_path, "");
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--vsock", "/run/vm/v.sock"), 0);
	assert_string_equal(cfg.vsock_path, "/run/vm/v.sock");
	assert_int_equal(cfg.vsock_cid, VMM_VSOCK_DEFAULT_CID);
	assert_false(cfg.vsock_cid_given);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--vsock", "v.sock,cid=4294967294"), 0);
	assert_string_equal(cfg.vsock_path, "v.sock");
	assert_int_equal(cfg.vsock_cid, 4294967294ULL);
	assert_true(cfg.vsock_cid_given);
	/* With --restore: the path is this VM's own, the cid may override the snapshot's. */
	assert_int_equal(PARSE(&cfg, &err, "--restore", "snap", "--vsock", "r.sock,cid=7"), 0);
	assert_string_equal(cfg.vsock_path, "r.sock");
	assert_int_equal(cfg.vsock_cid, 7);

	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "")),
			   ARGV("--kernel", "k", "--vsock", ""), EINVAL, "--vsock", "PATH[,cid=N]");
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", ",cid=3")),
			   ARGV("--kernel", "k", "--vsock", ",cid=3"), EINVAL, "--vsock",
			   "PATH[,cid=N]");
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "v,cid=2")),
			   ARGV("--kernel", "k", "--vsock", "v,cid=2"), EINVAL, "cid '2'",
			   "3 to 4294967294");
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "v,cid=4294967295")),
			   ARGV("--kernel", "k", "--vsock", "v,cid=4294967295"), EINVAL,
			   "cid '4294967295'", NULL);
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "v,cid=3x")),
			   ARGV("--kernel", "k", "--vsock", "v,cid=3x"), EINVAL, "cid '3x'", NULL);
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "v,cid=")),
			   ARGV("--kernel", "k", "--vsock", "v,cid="), EINVAL, "unknown option",
			   "cid=N");
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "v,port=3")),
			   ARGV("--kernel", "k", "--vsock", "v,port=3"), EINVAL, "'port=3'", NULL);
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", "a", "--vsock", "b")),
			   ARGV("--kernel", "k", "--vsock", "a", "--vsock", "b"), EINVAL,
			   "given twice", NULL);
	memset(long_path, 'p', sizeof(long_path) - 1);
	long_path[sizeof(long_path) - 1] = '\0';
	snprintf(arg, sizeof(arg), "%s,cid=5", long_path);
	expect_parse_error(ARGC(ARGV("--kernel", "k", "--vsock", arg)),
			   ARGV("--kernel", "k", "--vsock", arg), ENAMETOOLONG, "199 bytes",
			   "at most 107");
}

static void test_mem_backend(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k"), 0);
	assert_int_equal(cfg.mem_backend, GUEST_MEM_ANON);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--mem-backend", "hugetlb"), 0);
	assert_int_equal(cfg.mem_backend, GUEST_MEM_HUGETLB);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "k", "--mem-backend", "anon"), 0);
	assert_int_equal(cfg.mem_backend, GUEST_MEM_ANON);
	EXPECT_PARSE_ERROR(EINVAL, "--mem-backend 'file'", "anon (the default), hugetlb or memfd",
			   "--kernel", "k", "--mem-backend", "file");
	EXPECT_PARSE_ERROR(EINVAL, "--mem-backend 'HUGETLB'", "hugetlb", "--kernel", "k",
			   "--mem-backend", "HUGETLB");
	EXPECT_PARSE_ERROR(EINVAL, "--mem-backend", "snapshot's memory file", "--restore", "/x",
			   "--mem-backend", "hugetlb");
}

#define T(fn) cmocka_unit_test_setup(fn, reset_getopt)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(test_parse_size_accepts_suffixes),
	    T(test_parse_size_rejects_junk),
	    T(test_defaults),
	    T(test_every_option),
	    T(test_equals_form_and_last_wins),
	    T(test_disk_flags),
	    T(test_disk_bad_flags),
	    T(test_disk_path_too_long),
	    T(test_disk_limit),
	    T(test_append_length_limit),
	    T(test_mem_bounds),
	    T(test_cpus_bounds),
	    T(test_missing_kernel),
	    T(test_unknown_option),
	    T(test_unknown_option_in_cluster),
	    T(test_missing_value),
	    T(test_stray_argument),
	    T(test_empty_serial),
	    T(test_help),
	    T(test_parse_is_repeatable),
	    T(test_usage_names_every_option),
	    T(test_fanout),
	    T(test_vsock),
	    T(test_image),
	    T(test_mem_backend),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
