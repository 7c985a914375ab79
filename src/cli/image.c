/* SPDX-License-Identifier: MIT */
/*
 * `forkd image build|ls|rm`: a thin front end to images/rootfs.sh, which does
 * the work (debootstrap, the image cache; docs/images.md). Validates the
 * arguments, then execs the script with stdio as is, so its progress reaches
 * the terminal and its exit status becomes ours.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"

#define IMAGE_NAME_MAX 63

/* [a-z0-9][a-z0-9._-]{0,62}: also a safe folder name in the cache. */
static int valid_image_name(const char *name)
{
	size_t len = strlen(name);

	if (len == 0 || len > IMAGE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		int alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');

		if (!alnum && (i == 0 || !strchr("._-", c)))
			return 0;
	}
	return 1;
}

/*
 * The directory this program lives in (from /proc/self/exe, so it does not
 * depend on the current directory or on how we were called).
 */
static int exe_dir(char *out, size_t size)
{
	ssize_t n = readlink("/proc/self/exe", out, size - 1);
	char *slash;

	if (n < 0)
		return -errno;
	if ((size_t)n >= size - 1)
		return -ENAMETOOLONG;
	out[n] = '\0';
	slash = strrchr(out, '/');
	if (!slash)
		return -EINVAL;
	*slash = '\0';
	return 0;
}

/* Execs the script with args (NULL-terminated, at most 4); returns only on failure. */
static int run_script(const char *const *args)
{
	char dir[PATH_MAX], script[PATH_MAX + 32];
	const char *env_script = getenv("FORKD_ROOTFS_SCRIPT");
	const char *argv[8];
	size_t n = 0;
	int ret;

	ret = exe_dir(dir, sizeof(dir));
	if (ret < 0) {
		fprintf(stderr,
			"forkd: image: cannot find this program's directory (/proc/self/exe): %s\n",
			strerror(-ret));
		return CLI_EXIT_USAGE;
	}
	if (env_script && *env_script)
		snprintf(script, sizeof(script), "%s", env_script);
	else
		snprintf(script, sizeof(script), "%s/../images/rootfs.sh", dir);
	if (access(script, R_OK) < 0) {
		fprintf(stderr,
			"forkd: image: %s: %s (expected images/rootfs.sh of the checkout next to "
			"the build directory, or set FORKD_ROOTFS_SCRIPT)\n",
			script, strerror(errno));
		return CLI_EXIT_USAGE;
	}
	/* The agent the script puts in the image is the one built with this forkd. */
	if (!getenv("FORKD_BUILD"))
		setenv("FORKD_BUILD", dir, 1);
	argv[n++] = "bash";
	argv[n++] = script;
	while (*args && n < sizeof(argv) / sizeof(argv[0]) - 1)
		argv[n++] = *args++;
	argv[n] = NULL;
	/* stdout/stderr buffers must not be lost or duplicated across exec. */
	fflush(NULL);
	execvp("bash", (char *const *)argv);
	fprintf(stderr, "forkd: image: exec bash %s: %s\n", script, strerror(errno));
	return CLI_EXIT_USAGE;
}

static int name_error(const char *what, const char *name)
{
	return cli_usage_error("image %s '%s': expected an image name of 1 to %d characters: "
			       "a-z 0-9 . _ - starting with a letter or digit",
			       what, name, IMAGE_NAME_MAX);
}

static int image_build(int argc, char **argv)
{
	const char *name = NULL, *packages = NULL;

	for (int i = 0; i < argc; i++) {
		const char *arg = argv[i];

		if (strcmp(arg, "--packages") == 0) {
			if (i + 1 == argc)
				return cli_usage_error(
				    "image build --packages: expected a list such as python3,curl");
			packages = argv[++i];
		} else if (strncmp(arg, "--packages=", 11) == 0) {
			packages = arg + 11;
		} else if (arg[0] == '-') {
			return cli_usage_error(
			    "image build: unknown option '%s' (expected --packages)", arg);
		} else if (!name) {
			name = arg;
		} else {
			return cli_usage_error(
			    "image build: unexpected argument '%s' (one image name)", arg);
		}
	}
	if (!name)
		return cli_usage_error("%s", "image build: expected an image name");
	if (!valid_image_name(name))
		return name_error("build", name);
	if (packages && !*packages)
		return cli_usage_error("%s", "image build --packages: expected a list such as "
					     "python3,curl, not an empty one");
	const char *args[] = {name, packages ? "--packages" : NULL, packages, NULL};
	return run_script(args);
}

int cli_image(int argc, char **argv)
{
	if (argc < 1)
		return cli_usage_error("%s", "image: expected build, ls or rm");
	if (strcmp(argv[0], "build") == 0)
		return image_build(argc - 1, argv + 1);
	if (strcmp(argv[0], "ls") == 0) {
		if (argc != 1)
			return cli_usage_error("image ls: unexpected argument '%s'", argv[1]);
		return run_script((const char *const[]){"--list", NULL});
	}
	if (strcmp(argv[0], "rm") == 0) {
		if (argc != 2)
			return cli_usage_error("%s", "image rm: expected exactly one image name");
		if (!valid_image_name(argv[1]))
			return name_error("rm", argv[1]);
		return run_script((const char *const[]){"--rm", argv[1], NULL});
	}
	return cli_usage_error("image '%s': unknown action (expected build, ls or rm)", argv[0]);
}
