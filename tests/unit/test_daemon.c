/* SPDX-License-Identifier: MIT */
/*
 * The daemon's operations without KVM: request validation (unknown fields,
 * ranges, tags, files), what daemon_open refuses, a VMM that dies before
 * answering (nothing recorded), re-adoption marking dead VMs exited and
 * settling snapshots left "writing", and the JSON shapes of empty lists.
 * The VM-running side is tests/integration/test_daemon.c.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/daemon.h"
#include "daemon/registry.h"
#include "jail/cgroup.h"

struct fixture {
	char dir[64];
	char kernel[96];
	struct daemon *d;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static struct daemon *open_with(const char *dir, const char *vmm, int *adopted)
{
	struct daemon_config cfg = {.state_dir = dir, .vmm_path = vmm};
	struct fk_err err = {0};
	struct daemon *d = NULL;

	if (daemon_open(&cfg, &d, adopted, &err) != 0)
		fail_msg("daemon_open %s: %s", dir, err.msg);
	return d;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	FILE *k;

	assert_non_null(f);
	strcpy(f->dir, "/tmp/forkd-daemon-u-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->kernel, sizeof(f->kernel), "%s/kernel.elf", f->dir);
	k = fopen(f->kernel, "w");
	assert_non_null(k);
	fputs("not really a kernel\n", k);
	fclose(k);
	/* /bin/false as the VMM: it exits at once, like a VMM refusing its options. */
	f->d = open_with(f->dir, "/bin/false", NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	daemon_close(f->d);
	nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static void expect_einval(int ret, const struct fk_err *err, const char *needle)
{
	assert_int_equal(ret, -EINVAL);
	if (!strstr(err->msg, needle))
		fail_msg("error '%s' does not name '%s'", err->msg, needle);
}

static void create_refused(struct fixture *f, const char *json, const char *needle)
{
	struct fk_err err = {0};
	json_t *body = json_loads(json, 0, NULL), *vm = NULL;

	assert_non_null(body);
	/* The kernel path of the fixture replaces KERNEL. */
	if (json_object_get(body, "kernel") &&
	    strcmp(json_string_value(json_object_get(body, "kernel")) ?: "", "KERNEL") == 0)
		json_object_set_new(body, "kernel", json_string(f->kernel));
	expect_einval(daemon_vm_create(f->d, body, &vm, &err), &err, needle);
	assert_null(vm);
	json_decref(body);
}

static void test_create_bodies_refused(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	json_t *vm = NULL;

	expect_einval(daemon_vm_create(f->d, NULL, &vm, &err), &err, "image");
	create_refused(f, "[1]", "JSON object");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"memory\":512}", "memory");
	create_refused(f, "{}", "exactly one");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"image\":\"py\"}", "exactly one");
	create_refused(f, "{\"image\":\"py\",\"append\":\"x\"}", "append");
	create_refused(f, "{\"image\":\"Py/../x\"}", "Py/../x");
	create_refused(f, "{\"image\":5}", "\"image\": expected a string, got an integer");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"mem_mib\":16}", "mem_mib");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"mem_mib\":\"1G\"}", "mem_mib");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"cpus\":0}", "cpus");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"cpus\":255}", "cpus");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"tag\":\"-x\"}", "-x");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"vsock\":1}", "vsock");
	create_refused(f, "{\"kernel\":\"vmlinux\"}", "absolute");
	create_refused(f, "{\"kernel\":\"/nonexistent/vmlinux\"}", "/nonexistent/vmlinux");
	create_refused(f, "{\"kernel\":\"/tmp\"}", "readable file");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"initrd\":\"/nonexistent/initrd\"}",
		       "/nonexistent/initrd");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"memory_max_mib\":15}", "memory_max_mib");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"memory_max_mib\":\"1G\"}", "memory_max_mib");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"pids_max\":0}", "pids_max");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"pids_max\":4194305}", "4194305");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"cpu_max\":50000}", "cpu_max");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"cpu_max\":\"half\"}", "half");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"cpu_max\":\"500\"}", "cpu_max");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"cpu_max\":\"50000/2000000\"}", "cpu_max");
	create_refused(f, "{\"kernel\":\"KERNEL\",\"memory\":\"1G\"}", "memory");
}

/*
 * Valid limits: on a machine with cgroup v2 the VMM is started with them
 * (here /bin/false, which exits: ECHILD); without, 501's ENOTSUP naming what
 * is mounted. Either way nothing is left.
 */
static void test_limits_need_cgroup_v2(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0}, why = {0};
	json_t *body = json_pack("{s:s,s:i,s:s,s:i}", "kernel", f->kernel, "memory_max_mib", 256,
				 "cpu_max", "50000", "pids_max", 64),
	       *vm = NULL, *list = NULL;
	bool v2 = cgroup_check_v2("/sys/fs/cgroup", &why) == 0;
	int ret = daemon_vm_create(f->d, body, &vm, &err);

	if (v2) {
		assert_int_equal(ret, -ECHILD);
	} else {
		assert_int_equal(ret, -ENOTSUP);
		if (!strstr(err.msg, "limits need cgroup v2") || !strstr(err.msg, why.msg))
			fail_msg("error '%s' does not say that limits need cgroup v2 (%s)", err.msg,
				 why.msg);
	}
	assert_null(vm);
	json_decref(body);
	body = json_pack("{s:i,s:s}", "n", 1, "cpu_max", "20000/50000");
	ret = daemon_snapshot_spawn(f->d, "t", body, &vm, &err);
	/* The body is checked before the snapshot is looked up. */
	assert_int_equal(ret, v2 ? -ENOENT : -ENOTSUP);
	json_decref(body);
	assert_int_equal(daemon_vm_list(f->d, &list, &err), 0);
	assert_int_equal(json_array_size(json_object_get(list, "vms")), 0);
	json_decref(list);
}

static void test_other_bodies_refused(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	json_t *out = NULL, *body;

	body = json_pack("{s:i}", "n", 65);
	expect_einval(daemon_vm_branch(f->d, "vm-00000000", body, &out, &err), &err, "65");
	json_decref(body);
	body = json_pack("{s:i}", "n", -1);
	expect_einval(daemon_vm_branch(f->d, "vm-00000000", body, &out, &err), &err, "\"n\"");
	json_decref(body);
	body = json_pack("{s:b}", "persist", 1);
	expect_einval(daemon_vm_branch(f->d, "vm-00000000", body, &out, &err), &err, "tag");
	json_decref(body);
	body = json_pack("{s:s}", "tag", "t");
	expect_einval(daemon_vm_branch(f->d, "vm-00000000", body, &out, &err), &err, "persist");
	json_decref(body);
	body = json_pack("{s:i,s:i}", "n", 1, "wait", 1);
	expect_einval(daemon_vm_branch(f->d, "vm-00000000", body, &out, &err), &err, "wait");
	json_decref(body);
	body = json_pack("{s:s,s:i}", "tag", "ok", "resume", 1);
	expect_einval(daemon_vm_snapshot(f->d, "vm-00000000", body, &out, &err), &err, "resume");
	json_decref(body);
	body = json_pack("{s:s}", "tag", "..");
	expect_einval(daemon_vm_snapshot(f->d, "vm-00000000", body, &out, &err), &err, "..");
	json_decref(body);
	body = json_pack("{s:i}", "n", DAEMON_MAX_CHILDREN + 1);
	expect_einval(daemon_snapshot_spawn(f->d, "t", body, &out, &err), &err, "\"n\"");
	json_decref(body);
	body = json_pack("{s:i}", "count", 2);
	expect_einval(daemon_snapshot_spawn(f->d, "t", body, &out, &err), &err, "count");
	json_decref(body);
	body = json_pack("{s:i,s:i}", "n", 1, "memory_max_mib", 1);
	expect_einval(daemon_snapshot_spawn(f->d, "t", body, &out, &err), &err, "memory_max_mib");
	json_decref(body);
	body = json_pack("{s:i,s:s}", "n", 1, "cpu_max", "1/2/3");
	expect_einval(daemon_snapshot_spawn(f->d, "t", body, &out, &err), &err, "cpu_max");
	json_decref(body);
	/* Valid bodies for things that do not exist. */
	body = json_pack("{s:i}", "n", 1);
	assert_int_equal(daemon_vm_branch(f->d, "vm-00000000", body, &out, &err), -ENOENT);
	assert_int_equal(daemon_snapshot_spawn(f->d, "t", body, &out, &err), -ENOENT);
	json_decref(body);
	assert_null(out);
	assert_int_equal(daemon_vm_get(f->d, "vm-00000000", &out, &err), -ENOENT);
	assert_int_equal(daemon_vm_delete(f->d, "vm-00000000", true, &out, &err), -ENOENT);
	assert_int_equal(daemon_snapshot_get(f->d, "t", &out, &err), -ENOENT);
	assert_int_equal(daemon_snapshot_delete(f->d, "t", true, &out, &err), -ENOENT);
	assert_null(out);
}

/* A VMM that exits before its control socket answers: an error quoting it, nothing kept. */
static void test_vmm_dying_at_start_leaves_nothing(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	json_t *body = json_pack("{s:s}", "kernel", f->kernel), *vm = NULL, *list = NULL;
	char path[128];
	struct stat st;

	assert_int_equal(daemon_vm_create(f->d, body, &vm, &err), -ECHILD);
	assert_non_null(strstr(err.msg, "exited (status 1) before its control socket answered"));
	assert_null(vm);
	json_decref(body);
	assert_int_equal(daemon_vm_list(f->d, &list, &err), 0);
	assert_int_equal(json_array_size(json_object_get(list, "vms")), 0);
	json_decref(list);
	snprintf(path, sizeof(path), "%s/vms", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(rmdir(path), 0); /* empty: the VM's directory was removed */
	assert_int_equal(mkdir(path, 0755), 0);
}

static void test_empty_lists(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	json_t *o = NULL;

	assert_int_equal(daemon_vm_list(f->d, &o, &err), 0);
	assert_true(json_is_array(json_object_get(o, "vms")));
	json_decref(o);
	assert_int_equal(daemon_snapshot_list(f->d, &o, &err), 0);
	assert_true(json_is_array(json_object_get(o, "snapshots")));
	json_decref(o);
	assert_int_equal(daemon_tree(f->d, &o, &err), 0);
	assert_int_equal(json_array_size(json_object_get(o, "tree")), 0);
	json_decref(o);
	assert_int_equal(daemon_health(f->d, &o, &err), 0);
	assert_true(json_is_true(json_object_get(o, "ok")));
	assert_int_equal(json_integer_value(json_object_get(o, "vms")), 0);
	json_decref(o);
}

static void test_open_refusals(void **state)
{
	struct daemon_config cfg = {.state_dir = NULL, .vmm_path = "/bin/false"};
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct daemon *d = NULL;
	char longdir[200];

	(void)f;
	assert_int_equal(daemon_open(&cfg, &d, NULL, &err), -EINVAL);
	memset(longdir, 'a', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	cfg.state_dir = longdir;
	assert_int_equal(daemon_open(&cfg, &d, NULL, &err), -ENAMETOOLONG);
	assert_non_null(strstr(err.msg, "too long"));
	cfg.state_dir = f->dir;
	/* One daemon per state dir. */
	assert_int_equal(daemon_open(&cfg, &d, NULL, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "another forkd serve"));
	cfg.vmm_path = "/nonexistent/forkd-vmm";
	assert_int_equal(daemon_open(&cfg, &d, NULL, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent/forkd-vmm"));
	assert_null(d);
}

/* A restarted daemon: a VM whose process is gone is marked exited; snapshots left writing are
 * ready if they were renamed into place, else failed. */
static void test_reopen_settles_the_dead(void **state)
{
	struct fixture *f = *state;
	struct reg_snapshot done = {0}, partial = {0}, s;
	struct reg_vm vm = {.state = REG_VM_RUNNING, .exit_status = REG_NO_EXIT}, got;
	struct fk_err err = {0};
	struct registry *r;
	char db[128];
	int adopted = -1;
	pid_t pid;

	daemon_close(f->d);
	f->d = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(0);
	assert_int_equal(registry_proc_probe(pid, &vm.proc, &err), 0);
	assert_int_equal(waitpid(pid, NULL, 0), pid);
	snprintf(db, sizeof(db), "%s/registry.db", f->dir);
	assert_int_equal(registry_open(db, &r, &err), 0);
	snprintf(vm.control_sock, sizeof(vm.control_sock), "%s/nothing.sock", f->dir);
	assert_int_equal(registry_vm_add(r, &vm, &err), 0);
	strcpy(done.tag, "done");
	snprintf(done.path, sizeof(done.path), "%s/snapshots/done", f->dir);
	strcpy(partial.tag, "partial");
	snprintf(partial.path, sizeof(partial.path), "%s/snapshots/partial", f->dir);
	assert_int_equal(registry_snapshot_add(r, &done, &err), 0);
	assert_int_equal(registry_snapshot_add(r, &partial, &err), 0);
	registry_close(r);
	assert_int_equal(mkdir(done.path, 0755), 0);

	f->d = open_with(f->dir, "/bin/false", &adopted);
	assert_int_equal(adopted, 0);
	assert_int_equal(registry_open(db, &r, &err), 0);
	assert_int_equal(registry_vm_get(r, vm.id, &got, &err), 0);
	assert_int_equal(got.state, REG_VM_EXITED);
	assert_int_equal(registry_snapshot_get(r, "done", &s, &err), 0);
	assert_int_equal(s.state, REG_SNAP_READY);
	assert_int_equal(registry_snapshot_get(r, "partial", &s, &err), 0);
	assert_int_equal(s.state, REG_SNAP_FAILED);
	registry_close(r);
	{
		json_t *o = NULL, *v;
		assert_int_equal(daemon_vm_get(f->d, vm.id, &o, &err), 0);
		assert_string_equal(json_string_value(json_object_get(o, "state")), "exited");
		assert_true(json_is_null(json_object_get(o, "exit_status")));
		assert_true(json_is_null(json_object_get(o, "parent")));
		v = json_object_get(o, "created");
		assert_true(json_is_string(v) && strlen(json_string_value(v)) == 24 &&
			    json_string_value(v)[23] == 'Z');
		json_decref(o);
		/* A dead VM is deleted without signalling anything. */
		assert_int_equal(daemon_vm_delete(f->d, vm.id, false, &o, &err), 0);
		json_decref(o);
		assert_int_equal(daemon_snapshot_delete(f->d, "done", false, &o, &err), 0);
		assert_int_equal(json_array_size(json_object_get(o, "removed")), 1);
		json_decref(o);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_limits_need_cgroup_v2, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_create_bodies_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_other_bodies_refused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vmm_dying_at_start_leaves_nothing, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_empty_lists, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_open_refusals, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_settles_the_dead, setup, teardown),
	};
	return cmocka_run_group_tests_name("daemon (no KVM)", tests, NULL, NULL);
}
