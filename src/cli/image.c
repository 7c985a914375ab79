/* SPDX-License-Identifier: MIT */
/*
 * `forkd image build|ls|rm`: a thin front end to images/rootfs.sh, which does
 * the work (debootstrap, the image cache; docs/images.md). Validates the
 * arguments, then execs the script with stdio as is, so its progress reaches
 * the terminal and its exit status becomes ours.
 *
 * ls and rm go through the daemon (GET/DELETE /v1/images, docs/rest-api.md)
 * when one answers, so that rm is refused while its VMs or snapshots use the
 * image; with no daemon at the default socket they work on the local cache.
 * A daemon named with --daemon, --url or $FORKD_SOCKET must answer. With
 * $FORKD_IMAGE_CACHE set and no daemon named, the local cache is meant (the
 * daemon has its own environment, maybe another cache). Which of the two
 * was used is said on stderr. build is always local (minutes of debootstrap
 * are not a request).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "cli/daemon_client.h"

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

/* Where the daemon is asked, for the message saying so. */
static const char *daemon_where(const struct dc_opts *o)
{
	const char *env = getenv("FORKD_SOCKET");

	if (o->url)
		return o->url;
	if (o->socket)
		return o->socket;
	return env && *env ? env : DC_DEFAULT_SOCKET;
}

/*
 * Sends the request to the daemon. Returns 0 when it answered 2xx, the exit
 * status when it answered otherwise or a named daemon could not be reached
 * (the message printed), or -1 when the default daemon is not there: the
 * caller then uses the local cache.
 */
static int ask_daemon(const struct dc_opts *o, const char *ctx, const char *method,
		      const char *path, struct dc_response *res)
{
	const char *env = getenv("FORKD_SOCKET"), *cache = getenv("FORKD_IMAGE_CACHE");
	bool named = o->url || o->socket || (env && *env);
	struct dc_request r = {.method = method, .path = path, .upload_fd = -1};
	struct fk_err err = {0};

	if (!named && cache && *cache) {
		fprintf(stderr,
			"forkd %s: FORKD_IMAGE_CACHE is set: using the local image cache %s\n", ctx,
			cache);
		return -1;
	}
	if (dc_request(o, &r, res, &err) == 0)
		return 0;
	if (res->status == 0 && !named) {
		fprintf(stderr, "forkd %s: no daemon at %s: using the local image cache\n", ctx,
			daemon_where(o));
		return -1;
	}
	fprintf(stderr, "forkd %s: %s\n", ctx, err.msg);
	return dc_exit_status(res);
}

static int image_ls(const struct dc_opts *o)
{
	struct dc_response res = {0};
	json_t *img;
	size_t i;
	int status = ask_daemon(o, "image ls", "GET", "/v1/images", &res);

	if (status < 0)
		return run_script((const char *const[]){"--list", NULL});
	if (status)
		return status;
	fprintf(stderr, "forkd image ls: through the daemon at %s\n", daemon_where(o));
	if (o->json) {
		json_dumpf(res.json, stdout, JSON_INDENT(2));
		putchar('\n');
	} else {
		/* One JSON line per image, as the local listing prints them. */
		json_array_foreach(json_object_get(res.json, "images"), i, img)
		{
			json_dumpf(img, stdout, JSON_COMPACT);
			putchar('\n');
		}
	}
	json_decref(res.json);
	return fflush(stdout) == 0 ? 0 : CLI_EXIT_NOT_OK;
}

static int image_rm(const struct dc_opts *o, const char *name)
{
	struct dc_response res = {0};
	char path[128];
	int status;

	snprintf(path, sizeof(path), "/v1/images/%s", name); /* a valid name needs no escaping */
	status = ask_daemon(o, "image rm", "DELETE", path, &res);
	if (status < 0)
		return run_script((const char *const[]){"--rm", name, NULL});
	if (status)
		return status;
	json_decref(res.json);
	fprintf(stderr, "forkd image rm: removed %s (through the daemon at %s)\n", name,
		daemon_where(o));
	return 0;
}

int cli_image(int argc, char **argv)
{
	struct dc_opts o = {0};
	const char *action;
	int status;

	if (argc < 1)
		return cli_usage_error("%s", "image: expected build, ls or rm");
	if (strcmp(argv[0], "build") == 0)
		return image_build(argc - 1, argv + 1);
	if (strcmp(argv[0], "ls") != 0 && strcmp(argv[0], "rm") != 0)
		return cli_usage_error("image '%s': unknown action (expected build, ls or rm)",
				       argv[0]);
	action = argv[0];
	argc--;
	argv++;
	status = dc_take_options(&argc, argv, &o);
	if (status)
		return status;
	if (strcmp(action, "ls") == 0) {
		if (argc != 0)
			return cli_usage_error("image ls: unexpected argument '%s'", argv[0]);
		return image_ls(&o);
	}
	if (argc != 1)
		return cli_usage_error("%s", "image rm: expected exactly one image name");
	if (!valid_image_name(argv[0]))
		return name_error("rm", argv[0]);
	return image_rm(&o, argv[0]);
}
