/* SPDX-License-Identifier: MIT */
/*
 * The jail's plan (which host paths go in, how, and in which order), its
 * options and their errors, and the privilege drop itself (in a forked
 * child, checked through the kernel's own view: capget, /proc/self/status).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "jail/jail.h"

#define ARGV(...)  ((char *[]){"forkd-vmm", __VA_ARGS__, NULL})
#define ARGC(argv) ((int)(sizeof(argv) / sizeof((argv)[0])) - 1)
#define PARSE(cfg, err, ...)                                                                       \
	vmm_config_parse((cfg), ARGC(ARGV(__VA_ARGS__)), ARGV(__VA_ARGS__), (err))

static char tmp[256];

static int setup(void **state)
{
	(void)state;
	snprintf(tmp, sizeof(tmp), "%s/forkd-ujail-XXXXXX",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	return mkdtemp(tmp) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[400];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	return system(cmd) == 0 ? 0 : -1;
}

static void touch_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	close(fd);
}

static const struct jail_entry *find(const struct jail_plan *plan, const char *path)
{
	for (int i = 0; i < plan->nr_entries; i++)
		if (strcmp(plan->entries[i].path, path) == 0)
			return &plan->entries[i];
	return NULL;
}

static void test_plan_holds_what_the_vm_needs(void **state)
{
	char kernel[400], disk_rw[400], disk_ro[400], run[400], sock[400], serial[400];
	char disk_arg[420], disk_ro_arg[420], kvm[400];
	struct vmm_config cfg;
	struct jail_plan plan;
	struct fk_err err = {0};
	const struct jail_entry *e;

	(void)state;
	snprintf(kernel, sizeof(kernel), "%s/k.elf", tmp);
	snprintf(disk_rw, sizeof(disk_rw), "%s/rw.img", tmp);
	snprintf(disk_ro, sizeof(disk_ro), "%s/ro.img", tmp);
	snprintf(kvm, sizeof(kvm), "%s/kvm", tmp);
	snprintf(run, sizeof(run), "%s/run", tmp);
	snprintf(sock, sizeof(sock), "%s/run/c.sock", tmp);
	snprintf(serial, sizeof(serial), "%s/run/serial.log", tmp);
	snprintf(disk_arg, sizeof(disk_arg), "%s", disk_rw);
	snprintf(disk_ro_arg, sizeof(disk_ro_arg), "%s,ro", disk_ro);
	mkdir(run, 0755);
	touch_file(kernel);
	touch_file(kvm);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", kernel, "--disk", disk_arg, "--disk",
			       disk_ro_arg, "--control", sock, "--serial", serial, "--kvm", kvm,
			       "--jail", "/srv/jail", "--uid", "1234", "--gid", "4321"),
			 0);
	assert_string_equal(cfg.jail_dir, "/srv/jail");
	assert_int_equal(cfg.jail_uid, 1234);
	assert_int_equal(cfg.jail_gid, 4321);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), 0);

	e = find(&plan, kernel);
	assert_non_null(e);
	assert_int_equal(e->kind, JAIL_FILE);
	assert_false(e->writable);
	e = find(&plan, disk_rw);
	assert_non_null(e);
	assert_true(e->writable);
	e = find(&plan, disk_ro);
	assert_non_null(e);
	assert_false(e->writable);
	/* A file standing in for /dev/kvm is bound, not made a device node. */
	e = find(&plan, kvm);
	assert_non_null(e);
	assert_int_equal(e->kind, JAIL_FILE);
	assert_true(e->writable);
	/* The control socket and the console log share one writable directory, once. */
	e = find(&plan, run);
	assert_non_null(e);
	assert_int_equal(e->kind, JAIL_DIR);
	assert_true(e->writable);
	assert_null(find(&plan, sock));
	assert_null(find(&plan, serial));
	assert_int_equal(plan.nr_entries, 5);
	/* Shorter paths first: a directory is bound before what lies inside it. */
	for (int i = 1; i < plan.nr_entries; i++)
		assert_true(strlen(plan.entries[i - 1].path) <= strlen(plan.entries[i].path));
}

static void test_plan_devices_and_relative_paths(void **state)
{
	struct vmm_config cfg;
	struct jail_plan plan;
	struct fk_err err = {0};
	char cwd[512], want[600];
	const struct jail_entry *e;

	(void)state;
	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmp), 0);
	touch_file("rel.elf");
	assert_int_equal(
	    PARSE(&cfg, &err, "--kernel", "rel.elf", "--kvm", "/dev/null", "--jail", "/srv/j"), 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), 0);
	snprintf(want, sizeof(want), "%s/rel.elf", tmp);
	assert_non_null(find(&plan, want));
	/* A character device becomes a node in the jail's /dev (here /dev/null stands in). */
	e = find(&plan, "/dev/null");
	assert_non_null(e);
	assert_int_equal(e->kind, JAIL_CHAR_DEV);
	assert_int_equal(chdir(cwd), 0);
}

static void test_plan_rw_inside_ro_is_kept(void **state)
{
	char snap[400], overlay[400], bind[420];
	struct vmm_config cfg;
	struct jail_plan plan;
	struct fk_err err = {0};
	const struct jail_entry *e;

	(void)state;
	snprintf(snap, sizeof(snap), "%s/snap", tmp);
	snprintf(overlay, sizeof(overlay), "%s/snap/overlay", tmp);
	snprintf(bind, sizeof(bind), "%s,ro", tmp);
	mkdir(snap, 0755);
	mkdir(overlay, 0755);
	assert_int_equal(PARSE(&cfg, &err, "--restore", snap, "--overlay-dir", overlay, "--kvm",
			       "/dev/null", "--jail", "/srv/j", "--jail-bind", bind),
			 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), 0);
	/* The read-only --jail-bind covers the read-only snapshot, not the writable overlay. */
	e = find(&plan, tmp);
	assert_non_null(e);
	assert_false(e->writable);
	assert_null(find(&plan, snap));
	e = find(&plan, overlay);
	assert_non_null(e);
	assert_true(e->writable);
}

static void test_plan_refusals(void **state)
{
	struct vmm_config cfg;
	struct jail_plan plan;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/a/../etc/k", "--jail", "/srv/j"), 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--kernel /a/../etc/k"));
	assert_non_null(strstr(err.msg, ".."));

	assert_int_equal(
	    PARSE(&cfg, &err, "--kernel", "/k", "--control", "/c.sock", "--jail", "/srv/j"), 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--control /c.sock"));

	assert_int_equal(
	    PARSE(&cfg, &err, "--kernel", "/k", "--jail", "/srv/j", "--jail-bind", "/x,rx"), 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "--jail-bind '/x,rx'"));
}

static void test_options_and_their_errors(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--jail", "rel"), -EINVAL);
	assert_non_null(strstr(err.msg, "--jail 'rel': expected an absolute directory"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--jail", "/j", "--uid", "0"),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "--uid '0'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--jail", "/j", "--gid", "x"),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "--gid 'x'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--uid", "5"), -EINVAL);
	assert_non_null(strstr(err.msg, "only apply with --jail"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--pids-max", "0"), -EINVAL);
	assert_non_null(strstr(err.msg, "--pids-max '0'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--memory-max", "12X"), -EINVAL);
	assert_non_null(strstr(err.msg, "--memory-max '12X'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--cpu-max", "50000/5"), -EINVAL);
	assert_non_null(strstr(err.msg, "--cpu-max '50000/5'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--cgroup", "forkd"), -EINVAL);
	assert_non_null(strstr(err.msg, "--cgroup 'forkd'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--cgroup-name", "a/b"), -EINVAL);
	assert_non_null(strstr(err.msg, "--cgroup-name 'a/b'"));
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--cgroup-name", "a"), -EINVAL);
	assert_non_null(strstr(err.msg, "--cgroup-name only applies"));

	/* A limit alone turns the cgroup on, under the default parent. */
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--memory-max", "256M", "--cpu-max",
			       "50000", "--pids-max", "64", "--cgroup-name", "web1"),
			 0);
	assert_true(cfg.cgroup_wanted);
	assert_string_equal(cfg.cgroup_parent, VMM_CGROUP_PARENT_DEFAULT);
	assert_string_equal(cfg.cgroup_name, "web1");
	assert_int_equal(cfg.memory_max, 256ULL << 20);
	assert_int_equal(cfg.cpu_quota_us, 50000);
	assert_int_equal(cfg.cpu_period_us, 100000);
	assert_int_equal(cfg.pids_max, 64);
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k"), 0);
	assert_false(cfg.cgroup_wanted);
	assert_null(cfg.jail_dir);
}

/* A network device: /dev/net/tun in the jail; what a VMM without capabilities cannot do, refused.
 */
static void test_network_in_the_jail(void **state)
{
	struct vmm_config cfg;
	struct jail_plan plan;
	struct fk_err err = {0};
	const struct jail_entry *e;

	(void)state;
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--net", "tap=fk0", "--jail", "/j"),
			 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), 0);
	e = find(&plan, "/dev/net/tun");
	assert_non_null(e);
	assert_int_equal(e->kind, JAIL_CHAR_DEV);
	assert_string_equal(e->option, "--net");
	/* --net-policy: the broker passes the tap open (net_tap_fd), so no tun node */
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--net-policy", "nat", "--jail", "/j"),
			 0);
	assert_int_equal(cfg.net_tap_fd, -1);
	snprintf(cfg.net_tap, sizeof(cfg.net_tap), "tap0");
	cfg.net_tap_fd = 42;
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), 0);
	assert_null(find(&plan, "/dev/net/tun"));
	assert_int_equal(
	    PARSE(&cfg, &err, "--kernel", "/k", "--net", "tap=fk0,netns=blue", "--jail", "/j"),
	    -EINVAL);
	assert_non_null(strstr(err.msg, "netns=blue"));
	/* Without a network device there is no tun node. */
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--jail", "/j"), 0);
	assert_int_equal(jail_plan_build(&cfg, &plan, &err), 0);
	assert_null(find(&plan, "/dev/net/tun"));
}

static void test_jail_path_and_ids(void **state)
{
	char out[32];
	struct vmm_config cfg;
	struct fk_err err = {0};
	uid_t uid;
	gid_t gid;

	(void)state;
	assert_int_equal(jail_path("/srv/j", "/img/k", out, sizeof(out)), 0);
	assert_string_equal(out, "/srv/j/img/k");
	assert_int_equal(jail_path("/srv/j", "/a/very/long/path/beyond/32/bytes", out, sizeof(out)),
			 -ENAMETOOLONG);
	assert_int_equal(
	    PARSE(&cfg, &err, "--kernel", "/k", "--jail", "/j", "--uid", "70000", "--gid", "70001"),
	    0);
	assert_int_equal(jail_resolve_ids(&cfg, &uid, &gid, &err), 0);
	assert_int_equal(uid, 70000);
	assert_int_equal(gid, 70001);
	/* Debian has nobody/nogroup: 65534. */
	assert_int_equal(PARSE(&cfg, &err, "--kernel", "/k", "--jail", "/j"), 0);
	assert_int_equal(jail_resolve_ids(&cfg, &uid, &gid, &err), 0);
	assert_int_equal(uid, 65534);
	assert_int_equal(gid, 65534);
}

/* In a child: drop, then report what the kernel says, as a bit mask of failures. */
static int drop_and_check(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];
	struct fk_err err = {0};
	char line[256];
	FILE *f;
	int bad = 0;

	if (jail_drop_privileges(65534, 65534, &err) < 0) {
		fprintf(stderr, "drop: %s\n", err.msg);
		return 1;
	}
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0 || data[0].effective || data[0].permitted ||
	    data[0].inheritable || data[1].effective || data[1].permitted || data[1].inheritable)
		bad |= 2;
	if (getuid() != 65534 || getgid() != 65534)
		bad |= 4;
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 1)
		bad |= 8;
	/* Root cannot be had back. */
	if (setuid(0) == 0 || setgid(0) == 0)
		bad |= 16;
	f = fopen("/proc/self/status", "r");
	if (!f)
		return bad | 32;
	while (fgets(line, sizeof(line), f))
		if ((!strncmp(line, "CapBnd:", 7) || !strncmp(line, "CapAmb:", 7) ||
		     !strncmp(line, "CapEff:", 7) || !strncmp(line, "CapPrm:", 7) ||
		     !strncmp(line, "CapInh:", 7)) &&
		    !strstr(line, "0000000000000000"))
			bad |= 64;
	fclose(f);
	return bad;
}

static void test_drop_privileges(void **state)
{
	int status;
	pid_t pid;

	(void)state;
	if (geteuid() != 0) {
		/* Unprivileged, the drop itself must fail with a clear error, not half-work. */
		struct fk_err err = {0};
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			_exit(jail_drop_privileges(65534, 65534, &err) < 0 &&
				      strstr(err.msg, "--jail")
				  ? 0
				  : 1);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
		return;
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(drop_and_check());
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_plan_holds_what_the_vm_needs),
	    cmocka_unit_test(test_plan_devices_and_relative_paths),
	    cmocka_unit_test(test_plan_rw_inside_ro_is_kept),
	    cmocka_unit_test(test_plan_refusals),
	    cmocka_unit_test(test_options_and_their_errors),
	    cmocka_unit_test(test_network_in_the_jail),
	    cmocka_unit_test(test_jail_path_and_ids),
	    cmocka_unit_test(test_drop_privileges),
	};
	return cmocka_run_group_tests_name("jail", tests, setup, teardown);
}
