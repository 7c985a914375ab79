/* SPDX-License-Identifier: MIT */
/* The daemon's registry: CRUD, lineage, dependents, snapshot states, tags, restart, WAL, damaged
 * and newer files, two handles on one file, process identity. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sqlite3.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/registry.h"
#include "net/netns.h"

struct fixture {
	char dir[64];
	char db[128];
	struct registry *r;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct fk_err err = {0};

	assert_non_null(f);
	strcpy(f->dir, "/tmp/forkd-registry-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->db, sizeof(f->db), "%s/registry.db", f->dir);
	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("open %s: %s", f->db, err.msg);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	registry_close(f->r);
	nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

static struct reg_vm sample_vm(const char *name)
{
	struct reg_vm vm = {.state = REG_VM_RUNNING, .exit_status = REG_NO_EXIT};

	vm.proc.pid = 4242;
	vm.proc.start_time = 987654321;
	strcpy(vm.proc.boot_id, "0c4c1b1e-8b5a-4c1e-9f5e-0123456789ab");
	snprintf(vm.control_sock, sizeof(vm.control_sock), "/run/forkd/%s/control.sock", name);
	snprintf(vm.vsock_sock, sizeof(vm.vsock_sock), "/run/forkd/%s/vsock.sock", name);
	strcpy(vm.image, "py");
	strcpy(vm.kernel, "/var/cache/forkd/vmlinux");
	snprintf(vm.tag, sizeof(vm.tag), "%s", name);
	return vm;
}

/* Adds a VM branched from parent (NULL: none) through zygote (NULL: none). */
static void add_vm(struct registry *r, const char *name, const char *parent, const char *zygote,
		   char id[REG_ID_MAX])
{
	struct reg_vm vm = sample_vm(name);
	struct fk_err err = {0};

	if (parent)
		snprintf(vm.parent_vm, sizeof(vm.parent_vm), "%s", parent);
	if (zygote)
		snprintf(vm.zygote, sizeof(vm.zygote), "%s", zygote);
	if (parent) {
		vm.branched_us = 1700000000000000;
		vm.pause_us = 1234;
	}
	if (registry_vm_add(r, &vm, &err) != 0)
		fail_msg("add VM %s: %s", name, err.msg);
	strcpy(id, vm.id);
}

static void add_zygote(struct registry *r, const char *vm, char id[REG_ID_MAX])
{
	struct reg_zygote z = {.proc = {.pid = 777, .start_time = 55}, .nr_children = 2};
	struct fk_err err = {0};

	snprintf(z.vm, sizeof(z.vm), "%s", vm);
	strcpy(z.dir, "/run/forkd/branch-1");
	z.pause_us = 900;
	if (registry_zygote_add(r, &z, &err) != 0)
		fail_msg("add zygote of %s: %s", vm, err.msg);
	strcpy(id, z.id);
}

static void add_ready_snapshot(struct registry *r, const char *tag, const char *vm)
{
	struct reg_snapshot s = {0};
	struct fk_err err = {0};

	snprintf(s.tag, sizeof(s.tag), "%s", tag);
	snprintf(s.path, sizeof(s.path), "/var/lib/forkd/snapshots/%s", tag);
	if (vm)
		snprintf(s.parent_vm, sizeof(s.parent_vm), "%s", vm);
	if (registry_snapshot_add(r, &s, &err) != 0 ||
	    registry_snapshot_mark_ready(r, tag, &err) != 0)
		fail_msg("snapshot %s: %s", tag, err.msg);
}

static bool ids_contain(const struct reg_ids *ids, const char *id)
{
	for (size_t i = 0; i < ids->n; i++)
		if (strcmp(ids->ids[i], id) == 0)
			return true;
	return false;
}

static bool vm_exists(struct registry *r, const char *id)
{
	struct reg_vm vm;
	struct fk_err err = {0};
	int ret = registry_vm_get(r, id, &vm, &err);

	assert_true(ret == 0 || ret == -ENOENT);
	return ret == 0;
}

static void assert_id_shape(const char *id, const char *prefix)
{
	size_t plen = strlen(prefix);

	assert_int_equal(strlen(id), plen + 8);
	assert_memory_equal(id, prefix, plen);
	for (size_t i = plen; i < plen + 8; i++)
		assert_non_null(strchr("0123456789abcdef", id[i]));
}

/* A query on the file through a separate SQLite connection, as the sqlite3 shell would. */
static int64_t sql_int(const char *db, const char *sql)
{
	sqlite3 *h;
	sqlite3_stmt *st;
	int64_t v;

	assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(h, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	v = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(h);
	return v;
}

static void sql_exec(const char *db, const char *sql)
{
	sqlite3 *h;

	assert_int_equal(sqlite3_open_v2(db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
}

static void assert_vm_equal(const struct reg_vm *a, const struct reg_vm *b)
{
	assert_string_equal(a->id, b->id);
	assert_int_equal(a->proc.pid, b->proc.pid);
	assert_int_equal(a->proc.start_time, b->proc.start_time);
	assert_string_equal(a->proc.boot_id, b->proc.boot_id);
	assert_string_equal(a->control_sock, b->control_sock);
	assert_string_equal(a->vsock_sock, b->vsock_sock);
	assert_int_equal(a->state, b->state);
	assert_string_equal(a->parent_vm, b->parent_vm);
	assert_string_equal(a->zygote, b->zygote);
	assert_string_equal(a->snapshot, b->snapshot);
	assert_int_equal(a->branched_us, b->branched_us);
	assert_int_equal(a->pause_us, b->pause_us);
	assert_string_equal(a->image, b->image);
	assert_string_equal(a->kernel, b->kernel);
	assert_string_equal(a->tag, b->tag);
	assert_int_equal(a->created_us, b->created_us);
	assert_int_equal(a->exit_status, b->exit_status);
}

/* ---- CRUD ---- */

static void test_vm_crud(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct reg_vm vm = sample_vm("first"), got, *list;
	size_t n;

	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);
	assert_id_shape(vm.id, "vm-");
	assert_true(vm.created_us > 0);

	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), 0);
	assert_vm_equal(&got, &vm);
	assert_int_equal(got.exit_status, REG_NO_EXIT);
	assert_string_equal(got.parent_vm, "");

	/* update: new pid after a restart of the VMM, paused, new socket */
	vm.proc.pid = 5151;
	vm.proc.start_time = 1111;
	vm.state = REG_VM_PAUSED;
	strcpy(vm.control_sock, "/run/forkd/x/c2.sock");
	vm.pause_us = 77;
	assert_int_equal(registry_vm_update(f->r, &vm, &err), 0);
	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), 0);
	assert_vm_equal(&got, &vm);

	assert_int_equal(registry_vm_set_state(f->r, vm.id, REG_VM_EXITED, 3, &err), 0);
	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), 0);
	assert_int_equal(got.state, REG_VM_EXITED);
	assert_int_equal(got.exit_status, 3);
	assert_string_equal(reg_vm_state_name(got.state), "exited");
	/* a running VM has no exit status, whatever the caller passes */
	assert_int_equal(registry_vm_set_state(f->r, vm.id, REG_VM_RUNNING, 9, &err), 0);
	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), 0);
	assert_int_equal(got.exit_status, REG_NO_EXIT);

	struct reg_vm second = sample_vm("second");
	assert_int_equal(registry_vm_add(f->r, &second, &err), 0);
	assert_string_not_equal(second.id, vm.id);
	assert_int_equal(registry_vm_list(f->r, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].id, vm.id); /* oldest first */
	assert_string_equal(list[1].id, second.id);
	free(list);

	struct reg_ids removed;
	assert_int_equal(registry_vm_delete(f->r, vm.id, false, &removed, &err), 0);
	assert_int_equal(removed.n, 1);
	assert_string_equal(removed.ids[0], vm.id);
	free(removed.ids);

	/* every path to a missing VM says which */
	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), -ENOENT);
	assert_non_null(strstr(err.msg, vm.id));
	assert_int_equal(registry_vm_update(f->r, &vm, &err), -ENOENT);
	assert_int_equal(registry_vm_set_state(f->r, vm.id, REG_VM_FAILED, 1, &err), -ENOENT);
	assert_int_equal(registry_vm_delete(f->r, vm.id, true, NULL, &err), -ENOENT);
	assert_non_null(strstr(err.msg, vm.id));

	assert_int_equal(registry_vm_list(f->r, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	free(list);
}

/*
 * Two threads reading through one handle at once: each gets its own statement (the cache
 * hands a busy one to nobody), so every read returns its own VM.
 */
struct reader_arg {
	struct registry *r;
	const struct reg_vm *vm;
	int bad;
};

static void *read_many(void *p)
{
	struct reader_arg *a = p;
	struct fk_err err = {0};
	struct reg_vm got;

	for (int i = 0; i < 2000; i++)
		if (registry_vm_get(a->r, a->vm->id, &got, &err) != 0 ||
		    strcmp(got.id, a->vm->id) != 0 ||
		    strcmp(got.control_sock, a->vm->control_sock) != 0)
			a->bad++;
	return NULL;
}

static void test_statements_shared_by_threads(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct reg_vm one = sample_vm("one"), two = sample_vm("two");
	struct reader_arg a = {.r = f->r, .vm = &one}, b = {.r = f->r, .vm = &two};
	pthread_t ta, tb;

	assert_int_equal(registry_vm_add(f->r, &one, &err), 0);
	assert_int_equal(registry_vm_add(f->r, &two, &err), 0);
	assert_int_equal(pthread_create(&ta, NULL, read_many, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, read_many, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(a.bad, 0);
	assert_int_equal(b.bad, 0);
}

static void test_vm_add_checks(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char a[REG_ID_MAX], b[REG_ID_MAX], za[REG_ID_MAX];
	struct reg_vm vm;
	struct reg_vm *list;
	size_t n;

	add_vm(f->r, "a", NULL, NULL, a);
	add_vm(f->r, "b", NULL, NULL, b);
	add_zygote(f->r, a, za);

	vm = sample_vm("x");
	strcpy(vm.parent_vm, "vm-00000000");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "vm-00000000"));
	assert_string_equal(vm.id, "");

	vm = sample_vm("x");
	strcpy(vm.parent_vm, b);
	strcpy(vm.zygote, za); /* za belongs to a, not to b */
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -EINVAL);
	assert_non_null(strstr(err.msg, za));
	assert_non_null(strstr(err.msg, a));

	vm = sample_vm("x");
	strcpy(vm.zygote, za); /* a zygote without its parent */
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -EINVAL);

	vm = sample_vm("x");
	strcpy(vm.snapshot, "nope");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "nope"));

	vm = sample_vm("x");
	memset(vm.control_sock, 'a', sizeof(vm.control_sock)); /* no NUL */
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -ENAMETOOLONG);
	assert_non_null(strstr(err.msg, "control socket"));

	vm = sample_vm("x");
	strcpy(vm.tag, "../etc");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "VM tag"));

	vm = sample_vm("x");
	vm.state = (enum reg_vm_state)42;
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -EINVAL);

	/* nothing refused was stored */
	assert_int_equal(registry_vm_list(f->r, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	free(list);
}

static void test_ids_unique_never_reused(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char ids[200][REG_ID_MAX], zid[REG_ID_MAX];
	char sql[128];

	for (int i = 0; i < 200; i++) {
		add_vm(f->r, "many", NULL, NULL, ids[i]);
		assert_id_shape(ids[i], "vm-");
		for (int j = 0; j < i; j++)
			assert_string_not_equal(ids[i], ids[j]);
	}
	add_zygote(f->r, ids[0], zid);
	assert_id_shape(zid, "zy-");

	/* a deleted VM's id stays reserved, so new_id can never hand it out again */
	assert_int_equal(registry_vm_delete(f->r, ids[7], false, NULL, &err), 0);
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM ids WHERE id = '%s'", ids[7]);
	assert_int_equal(sql_int(f->db, sql), 1);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM ids"), 201);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM vms"), 199);
}

/* A spawn's IDs: reserved first (one write), its rows added later under them. */
static void test_reserved_ids(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char ids[20][REG_ID_MAX], other[REG_ID_MAX];
	struct reg_vm vm, got;

	assert_int_equal(registry_vm_ids_reserve(f->r, 20, ids, &err), 0);
	for (int i = 0; i < 20; i++) {
		assert_id_shape(ids[i], "vm-");
		for (int j = 0; j < i; j++)
			assert_string_not_equal(ids[i], ids[j]);
	}
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM ids"), 20);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM vms"), 0);

	vm = sample_vm("reserved");
	strcpy(vm.id, ids[3]);
	assert_int_equal(registry_vm_add_reserved(f->r, &vm, &err), 0);
	assert_string_equal(vm.id, ids[3]);
	assert_int_equal(registry_vm_get(f->r, ids[3], &got, &err), 0);
	assert_string_equal(got.tag, "reserved");
	/* an ID used once is not used again, reserved or not */
	vm = sample_vm("again");
	strcpy(vm.id, ids[3]);
	assert_true(registry_vm_add_reserved(f->r, &vm, &err) < 0);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM vms"), 1);
	vm = sample_vm("bad");
	strcpy(vm.id, "zy-12345678");
	assert_int_equal(registry_vm_add_reserved(f->r, &vm, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "zy-12345678"));
	/* of the right shape but never reserved */
	vm = sample_vm("unreserved");
	strcpy(vm.id, "vm-0badc0de");
	assert_int_equal(registry_vm_add_reserved(f->r, &vm, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "vm-0badc0de"));
	/* registry_vm_add never hands out a reserved ID (they are all in ids) */
	add_vm(f->r, "fresh", NULL, NULL, other);
	for (int i = 0; i < 20; i++)
		assert_string_not_equal(other, ids[i]);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM ids"), 21);
}

/* ---- Zygotes ---- */

static void test_zygotes(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char src[REG_ID_MAX], other[REG_ID_MAX], z1[REG_ID_MAX], z2[REG_ID_MAX], zo[REG_ID_MAX];
	char kid[REG_ID_MAX];
	struct reg_zygote z, *list;
	struct reg_vm vm;
	size_t n;

	add_vm(f->r, "src", NULL, NULL, src);
	add_vm(f->r, "other", NULL, NULL, other);
	add_zygote(f->r, src, z1);
	add_zygote(f->r, src, z2);
	add_zygote(f->r, other, zo);

	assert_int_equal(registry_zygote_get(f->r, z1, &z, &err), 0);
	assert_string_equal(z.vm, src);
	assert_int_equal(z.proc.pid, 777);
	assert_int_equal(z.proc.start_time, 55);
	assert_string_equal(z.dir, "/run/forkd/branch-1");
	assert_int_equal(z.nr_children, 2);
	assert_int_equal(z.pause_us, 900);
	assert_true(z.created_us > 0);

	assert_int_equal(registry_zygote_set_children(f->r, z1, 10, &err), 0);
	assert_int_equal(registry_zygote_get(f->r, z1, &z, &err), 0);
	assert_int_equal(z.nr_children, 10);

	assert_int_equal(registry_zygote_list(f->r, src, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].id, z1);
	assert_string_equal(list[1].id, z2);
	free(list);
	assert_int_equal(registry_zygote_list(f->r, NULL, &list, &n, &err), 0);
	assert_int_equal(n, 3);
	free(list);

	struct reg_zygote bad = {0};
	strcpy(bad.vm, "vm-deadbeef");
	assert_int_equal(registry_zygote_add(f->r, &bad, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "vm-deadbeef"));

	/* releasing a zygote: its child runs on, keeps its parent, forgets the zygote */
	add_vm(f->r, "kid", src, z1, kid);
	assert_int_equal(registry_zygote_delete(f->r, z1, &err), 0);
	assert_int_equal(registry_zygote_get(f->r, z1, &z, &err), -ENOENT);
	assert_int_equal(registry_zygote_delete(f->r, z1, &err), -ENOENT);
	assert_int_equal(registry_vm_get(f->r, kid, &vm, &err), 0);
	assert_string_equal(vm.parent_vm, src);
	assert_string_equal(vm.zygote, "");
	assert_int_equal(vm.pause_us, 1234);

	/* deleting a VM takes its zygotes with it (they die with their source) */
	assert_int_equal(registry_vm_delete(f->r, other, false, NULL, &err), 0);
	assert_int_equal(registry_zygote_get(f->r, zo, &z, &err), -ENOENT);
	assert_int_equal(registry_zygote_get(f->r, z2, &z, &err), 0);
}

/* ---- Lineage ---- */

/*
 * root1
 * ├─ a          (through zygote za)
 * │  ├─ a1
 * │  │  └─ a1x  (three levels below root1)
 * │  └─ a2
 * └─ b
 * root2
 */
static void test_lineage_three_levels(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root1[REG_ID_MAX], root2[REG_ID_MAX], a[REG_ID_MAX], b[REG_ID_MAX];
	char a1[REG_ID_MAX], a2[REG_ID_MAX], a1x[REG_ID_MAX], za[REG_ID_MAX];
	struct reg_lineage_node *t;
	size_t n;

	/* added out of tree order, to show the order comes from the lineage */
	add_vm(f->r, "root1", NULL, NULL, root1);
	add_zygote(f->r, root1, za);
	add_vm(f->r, "a", root1, za, a);
	add_vm(f->r, "root2", NULL, NULL, root2);
	add_vm(f->r, "b", root1, NULL, b);
	add_vm(f->r, "a1", a, NULL, a1);
	add_vm(f->r, "a2", a, NULL, a2);
	add_vm(f->r, "a1x", a1, NULL, a1x);

	assert_int_equal(registry_lineage(f->r, &t, &n, &err), 0);
	const char *want_id[] = {root1, a, a1, a1x, a2, b, root2};
	const char *want_parent[] = {"", root1, a, a1, a, root1, ""};
	const unsigned want_depth[] = {0, 1, 2, 3, 2, 1, 0};
	const bool want_last[] = {false, false, false, true, true, true, true};
	assert_int_equal(n, 7);
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(t[i].vm.id, want_id[i]);
		assert_string_equal(t[i].vm.parent_vm, want_parent[i]);
		assert_int_equal(t[i].depth, want_depth[i]);
		assert_int_equal(t[i].last_sibling, want_last[i]);
	}
	assert_string_equal(t[1].vm.zygote, za);
	assert_string_equal(t[3].vm.tag, "a1x");
	free(t);
}

static void test_lineage_empty(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct reg_lineage_node *t;
	size_t n;

	assert_int_equal(registry_lineage(f->r, &t, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_null(t);
}

/* ---- Deletes with dependents ---- */

static void test_delete_refused_with_children(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root[REG_ID_MAX], c1[REG_ID_MAX], c2[REG_ID_MAX], g[REG_ID_MAX];
	struct reg_ids removed = {.n = 99};

	add_vm(f->r, "root", NULL, NULL, root);
	add_vm(f->r, "c1", root, NULL, c1);
	add_vm(f->r, "c2", root, NULL, c2);
	add_vm(f->r, "g", c1, NULL, g);

	assert_int_equal(registry_vm_delete(f->r, root, false, &removed, &err), -EBUSY);
	assert_int_equal(removed.n, 0);
	assert_null(removed.ids);
	assert_non_null(strstr(err.msg, root));
	assert_non_null(strstr(err.msg, c1));
	assert_non_null(strstr(err.msg, c2));
	assert_non_null(strstr(err.msg, g));
	assert_non_null(strstr(err.msg, "cascade"));

	assert_int_equal(registry_vm_delete(f->r, c1, false, NULL, &err), -EBUSY);
	assert_non_null(strstr(err.msg, g));
	assert_null(strstr(err.msg, c2));

	/* nothing was removed */
	assert_true(vm_exists(f->r, root) && vm_exists(f->r, c1) && vm_exists(f->r, c2) &&
		    vm_exists(f->r, g));

	/* a leaf goes without cascade */
	assert_int_equal(registry_vm_delete(f->r, g, false, NULL, &err), 0);
	assert_int_equal(registry_vm_delete(f->r, c1, false, NULL, &err), 0);
}

static void test_delete_many_dependents_message(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root[REG_ID_MAX], kid[REG_ID_MAX];

	add_vm(f->r, "root", NULL, NULL, root);
	for (int i = 0; i < 60; i++)
		add_vm(f->r, "kid", root, NULL, kid);
	assert_int_equal(registry_vm_delete(f->r, root, false, NULL, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "60 dependent VMs"));
	assert_non_null(strstr(err.msg, "more"));
	assert_non_null(strstr(err.msg, "cascade"));
}

static void test_delete_cascade(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root[REG_ID_MAX], c1[REG_ID_MAX], c2[REG_ID_MAX], g[REG_ID_MAX], gg[REG_ID_MAX];
	char other[REG_ID_MAX], spawned[REG_ID_MAX], zr[REG_ID_MAX], zc[REG_ID_MAX];
	struct reg_ids removed;
	struct reg_zygote z;
	struct reg_snapshot s;
	struct reg_vm vm;

	add_vm(f->r, "root", NULL, NULL, root);
	add_zygote(f->r, root, zr);
	add_vm(f->r, "c1", root, zr, c1);
	add_vm(f->r, "c2", root, zr, c2);
	add_zygote(f->r, c1, zc);
	add_vm(f->r, "g", c1, zc, g);
	add_vm(f->r, "gg", g, NULL, gg);
	add_vm(f->r, "other", NULL, NULL, other);
	/* a snapshot of c1, and a VM spawned from it: not c1's descendants, they stay */
	add_ready_snapshot(f->r, "c1-warm", c1);
	vm = sample_vm("spawned");
	strcpy(vm.snapshot, "c1-warm");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);
	strcpy(spawned, vm.id);

	assert_int_equal(registry_vm_delete(f->r, c1, true, &removed, &err), 0);
	assert_int_equal(removed.n, 3);
	assert_true(ids_contain(&removed, c1) && ids_contain(&removed, g) &&
		    ids_contain(&removed, gg));
	free(removed.ids);
	assert_false(vm_exists(f->r, c1) || vm_exists(f->r, g) || vm_exists(f->r, gg));
	assert_true(vm_exists(f->r, root) && vm_exists(f->r, c2) && vm_exists(f->r, other) &&
		    vm_exists(f->r, spawned));
	assert_int_equal(registry_zygote_get(f->r, zc, &z, &err), -ENOENT);
	assert_int_equal(registry_zygote_get(f->r, zr, &z, &err), 0);
	assert_int_equal(registry_snapshot_get(f->r, "c1-warm", &s, &err), 0);
	assert_string_equal(s.parent_vm, c1); /* history: the VM it came from */

	assert_int_equal(registry_vm_delete(f->r, root, true, &removed, &err), 0);
	assert_int_equal(removed.n, 2);
	assert_string_equal(removed.ids[0], root); /* parents before their children */
	assert_string_equal(removed.ids[1], c2);
	free(removed.ids);
	assert_int_equal(registry_zygote_get(f->r, zr, &z, &err), -ENOENT);
	assert_true(vm_exists(f->r, other) && vm_exists(f->r, spawned));
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM vms"), 2);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM pragma_foreign_key_check"), 0);
}

/* ---- Snapshots ---- */

static void test_snapshot_states(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char src[REG_ID_MAX];
	struct reg_snapshot s = {0}, got, *list;
	struct reg_vm vm;
	size_t n;

	add_vm(f->r, "src", NULL, NULL, src);
	strcpy(s.tag, "warm");
	strcpy(s.path, "/var/lib/forkd/snapshots/warm");
	strcpy(s.parent_vm, src);
	s.state = REG_SNAP_READY; /* ignored: a new snapshot is being written */
	assert_int_equal(registry_snapshot_add(f->r, &s, &err), 0);
	assert_int_equal(s.state, REG_SNAP_WRITING);
	assert_true(s.created_us > 0);

	assert_int_equal(registry_snapshot_get(f->r, "warm", &got, &err), 0);
	assert_string_equal(got.tag, s.tag);
	assert_string_equal(got.path, s.path);
	assert_string_equal(got.parent_vm, s.parent_vm);
	assert_int_equal(got.state, s.state);
	assert_int_equal(got.created_us, s.created_us);
	assert_string_equal(reg_snap_state_name(got.state), "writing");

	/* writing: listed among all, not among the ready ones; nothing spawns from it */
	assert_int_equal(registry_snapshot_list(f->r, true, &list, &n, &err), 0);
	assert_int_equal(n, 0);
	assert_null(list);
	assert_int_equal(registry_snapshot_list(f->r, false, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_int_equal(list[0].state, REG_SNAP_WRITING);
	free(list);
	vm = sample_vm("early");
	strcpy(vm.snapshot, "warm");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "warm"));
	assert_non_null(strstr(err.msg, "writing"));

	/* the same tag twice */
	assert_int_equal(registry_snapshot_add(f->r, &s, &err), -EEXIST);
	assert_non_null(strstr(err.msg, "warm"));

	assert_int_equal(registry_snapshot_mark_ready(f->r, "warm", &err), 0);
	assert_int_equal(registry_snapshot_list(f->r, true, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	assert_string_equal(list[0].tag, "warm");
	assert_int_equal(list[0].state, REG_SNAP_READY);
	free(list);
	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);

	/* only writing -> ready / failed */
	assert_int_equal(registry_snapshot_mark_ready(f->r, "warm", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "ready"));
	assert_int_equal(registry_snapshot_mark_failed(f->r, "warm", &err), -EINVAL);
	assert_int_equal(registry_snapshot_mark_ready(f->r, "nope", &err), -ENOENT);
	assert_non_null(strstr(err.msg, "nope"));

	struct reg_snapshot bad = {0};
	strcpy(bad.tag, "broken");
	strcpy(bad.path, "/var/lib/forkd/snapshots/broken");
	assert_int_equal(registry_snapshot_add(f->r, &bad, &err), 0);
	assert_int_equal(registry_snapshot_mark_failed(f->r, "broken", &err), 0);
	assert_int_equal(registry_snapshot_mark_ready(f->r, "broken", &err), -EINVAL);
	assert_non_null(strstr(err.msg, "failed"));
	assert_int_equal(registry_snapshot_list(f->r, true, &list, &n, &err), 0);
	assert_int_equal(n, 1);
	free(list);
	assert_int_equal(registry_snapshot_list(f->r, false, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	assert_string_equal(list[1].parent_vm, "");
	assert_int_equal(list[1].state, REG_SNAP_FAILED);
	free(list);

	/* a snapshot of a VM that does not exist, or without a path */
	struct reg_snapshot orphan = {0};
	strcpy(orphan.tag, "orphan");
	strcpy(orphan.path, "/x");
	strcpy(orphan.parent_vm, "vm-12345678");
	assert_int_equal(registry_snapshot_add(f->r, &orphan, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "vm-12345678"));
	orphan.parent_vm[0] = '\0';
	orphan.path[0] = '\0';
	assert_int_equal(registry_snapshot_add(f->r, &orphan, &err), -EINVAL);
}

static void test_snapshot_delete_dependents(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char s1[REG_ID_MAX], s2[REG_ID_MAX], kid[REG_ID_MAX], other[REG_ID_MAX];
	struct reg_ids removed;
	struct reg_snapshot got;
	struct reg_vm vm;

	add_ready_snapshot(f->r, "base", NULL);
	add_ready_snapshot(f->r, "lonely", NULL);
	vm = sample_vm("s1");
	strcpy(vm.snapshot, "base");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);
	strcpy(s1, vm.id);
	vm = sample_vm("s2");
	strcpy(vm.snapshot, "base");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);
	strcpy(s2, vm.id);
	add_vm(f->r, "kid", s1, NULL, kid); /* branched from a spawned VM */
	add_vm(f->r, "other", NULL, NULL, other);

	assert_int_equal(registry_snapshot_delete(f->r, "base", false, &removed, &err), -EBUSY);
	assert_int_equal(removed.n, 0);
	assert_non_null(strstr(err.msg, "base"));
	assert_non_null(strstr(err.msg, s1));
	assert_non_null(strstr(err.msg, s2));
	assert_non_null(strstr(err.msg, kid));
	assert_int_equal(registry_snapshot_get(f->r, "base", &got, &err), 0);

	/* no dependents: goes without cascade, and reports no VM */
	assert_int_equal(registry_snapshot_delete(f->r, "lonely", false, &removed, &err), 0);
	assert_int_equal(removed.n, 0);
	assert_null(removed.ids);
	assert_int_equal(registry_snapshot_delete(f->r, "lonely", false, NULL, &err), -ENOENT);
	assert_non_null(strstr(err.msg, "lonely"));

	assert_int_equal(registry_snapshot_delete(f->r, "base", true, &removed, &err), 0);
	assert_int_equal(removed.n, 3);
	assert_true(ids_contain(&removed, s1) && ids_contain(&removed, s2) &&
		    ids_contain(&removed, kid));
	free(removed.ids);
	assert_int_equal(registry_snapshot_get(f->r, "base", &got, &err), -ENOENT);
	assert_false(vm_exists(f->r, s1) || vm_exists(f->r, s2) || vm_exists(f->r, kid));
	assert_true(vm_exists(f->r, other));
}

/* ---- Tags ---- */

static void test_bad_tags(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char long_tag[REG_TAG_MAX + 2], max_tag[REG_TAG_MAX + 1];
	struct reg_snapshot s = {0}, *list;
	size_t n;

	memset(long_tag, 'a', REG_TAG_MAX + 1);
	long_tag[REG_TAG_MAX + 1] = '\0';
	memset(max_tag, 'b', REG_TAG_MAX);
	max_tag[REG_TAG_MAX] = '\0';

	const char *bad[] = {
	    "",		   /* empty */
	    long_tag,	   /* 65 characters */
	    ".",	   /* this directory */
	    "..",	   /* the parent directory */
	    "../escape",   /* traversal */
	    "a/../../b",   /* traversal inside */
	    "a/b",	   /* a path */
	    "/etc",	   /* absolute */
	    "warm/",	   /* trailing slash */
	    "a b",	   /* space */
	    "a\tb",	   /* control character */
	    "a\nb",	   /* newline */
	    "a\\b",	   /* backslash */
	    "caf\xc3\xa9", /* non-ASCII */
	    "a;rm",	   /* shell */
	    "$(x)",	   /* shell */
	    "a*",	   /* glob */
	    "~root",	   /* home */
	    "-rf",	   /* an option */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		fk_err_clear(&err);
		if (registry_tag_check(bad[i], &err) != -EINVAL)
			fail_msg("tag '%s' accepted", bad[i]);
		assert_non_null(strstr(err.msg, "tag"));
		memset(&s, 0, sizeof(s));
		snprintf(s.tag, sizeof(s.tag), "%s", bad[i]);
		strcpy(s.path, "/var/lib/forkd/snapshots/x");
		if (strlen(bad[i]) <= REG_TAG_MAX)
			assert_int_equal(registry_snapshot_add(f->r, &s, &err), -EINVAL);
	}
	/* the message says what is wrong */
	registry_tag_check("..", &err);
	assert_non_null(strstr(err.msg, "'..'"));
	registry_tag_check("a/b", &err);
	assert_non_null(strstr(err.msg, "'/'"));
	registry_tag_check(long_tag, &err);
	assert_non_null(strstr(err.msg, "64"));
	registry_tag_check("a b", &err);
	assert_non_null(strstr(err.msg, "0x20"));

	const char *good[] = {"warm",	"a",	"numpy-1.26_py3.11", ".hidden", "...", "x..y",
			      "A-Z_09", max_tag};
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		if (registry_tag_check(good[i], &err) != 0)
			fail_msg("tag '%s' refused: %s", good[i], err.msg);
		memset(&s, 0, sizeof(s));
		strcpy(s.tag, good[i]);
		strcpy(s.path, "/var/lib/forkd/snapshots/x");
		assert_int_equal(registry_snapshot_add(f->r, &s, &err), 0);
	}
	assert_int_equal(registry_snapshot_list(f->r, false, &list, &n, &err), 0);
	assert_int_equal(n, sizeof(good) / sizeof(good[0]));
	free(list);
}

/* ---- Restart, WAL, damaged and newer files ---- */

static void test_reopen_keeps_everything(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root[REG_ID_MAX], kid[REG_ID_MAX], z[REG_ID_MAX];
	struct reg_vm *before, *after;
	struct reg_zygote *zb, *za;
	struct reg_snapshot *sb, *sa;
	struct reg_lineage_node *tb, *ta;
	size_t nvb, nva, nzb, nza, nsb, nsa, ntb, nta;

	add_vm(f->r, "root", NULL, NULL, root);
	add_zygote(f->r, root, z);
	add_vm(f->r, "kid", root, z, kid);
	assert_int_equal(registry_vm_set_state(f->r, kid, REG_VM_FAILED, 137, &err), 0);
	add_ready_snapshot(f->r, "warm", root);
	struct reg_snapshot w = {.tag = "half", .path = "/s/half"};
	assert_int_equal(registry_snapshot_add(f->r, &w, &err), 0);

	assert_int_equal(registry_vm_list(f->r, &before, &nvb, &err), 0);
	assert_int_equal(registry_zygote_list(f->r, NULL, &zb, &nzb, &err), 0);
	assert_int_equal(registry_snapshot_list(f->r, false, &sb, &nsb, &err), 0);
	assert_int_equal(registry_lineage(f->r, &tb, &ntb, &err), 0);

	/* the daemon restarts */
	registry_close(f->r);
	f->r = NULL;
	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("reopen: %s", err.msg);

	assert_int_equal(registry_vm_list(f->r, &after, &nva, &err), 0);
	assert_int_equal(registry_zygote_list(f->r, NULL, &za, &nza, &err), 0);
	assert_int_equal(registry_snapshot_list(f->r, false, &sa, &nsa, &err), 0);
	assert_int_equal(registry_lineage(f->r, &ta, &nta, &err), 0);
	assert_int_equal(nva, 2);
	assert_int_equal(nvb, nva);
	assert_memory_equal(before, after, nva * sizeof(*after));
	assert_int_equal(nza, 1);
	assert_int_equal(nzb, nza);
	assert_memory_equal(zb, za, nza * sizeof(*za));
	assert_int_equal(nsa, 2);
	assert_int_equal(nsb, nsa);
	assert_memory_equal(sb, sa, nsa * sizeof(*sa));
	assert_int_equal(nta, 2);
	assert_int_equal(ntb, nta);
	assert_memory_equal(tb, ta, nta * sizeof(*ta));
	assert_int_equal(after[1].exit_status, 137);
	assert_string_equal(sa[1].tag, "half");
	assert_int_equal(sa[1].state, REG_SNAP_WRITING);
	free(before), free(after), free(zb), free(za), free(sb), free(sa), free(tb), free(ta);

	/* and carries on: new IDs do not collide with the old ones */
	char more[REG_ID_MAX];
	add_vm(f->r, "more", kid, NULL, more);
	assert_string_not_equal(more, root);
	assert_string_not_equal(more, kid);
}

static void test_wal_mode(void **state)
{
	struct fixture *f = *state;
	sqlite3 *h;
	sqlite3_stmt *st;
	char wal[160];

	assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA journal_mode", -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	assert_string_equal((const char *)sqlite3_column_text(st, 0), "wal");
	sqlite3_finalize(st);
	sqlite3_close(h);

	/* WAL mode is recorded in the file: the header's read/write versions are 2 */
	int fd = open(f->db, O_RDONLY);
	unsigned char hdr[20];
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
	close(fd);
	assert_int_equal(hdr[18], 2);
	assert_int_equal(hdr[19], 2);

	/* while the registry is open and has written, the write-ahead log exists */
	char id[REG_ID_MAX];
	add_vm(f->r, "w", NULL, NULL, id);
	snprintf(wal, sizeof(wal), "%s-wal", f->db);
	assert_int_equal(access(wal, F_OK), 0);
	assert_int_equal(sql_int(f->db, "PRAGMA user_version"), REG_SCHEMA_VERSION);
}

static void test_foreign_keys_on(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root[REG_ID_MAX], kid[REG_ID_MAX];
	struct reg_vm vm;

	add_vm(f->r, "root", NULL, NULL, root);
	add_vm(f->r, "kid", root, NULL, kid);
	/* Even past our own checks, the file refuses a dangling parent: a second connection that
	 * turns foreign keys on gets a constraint error deleting the parent alone. */
	sqlite3 *h;
	char sql[128];
	assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "PRAGMA foreign_keys = ON", NULL, NULL, NULL), SQLITE_OK);
	snprintf(sql, sizeof(sql), "DELETE FROM vms WHERE id = '%s'", root);
	assert_int_not_equal(sqlite3_exec(h, sql, NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	assert_int_equal(registry_vm_get(f->r, root, &vm, &err), 0);
}

static void write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void test_not_a_database(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct registry *r = (struct registry *)0x1;
	char path[160], text[4096], hdr[4096];

	/* a text file */
	snprintf(path, sizeof(path), "%s/notes.txt", f->dir);
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "registry is not a database\n"[i % 27];
	write_file(path, text, sizeof(text));
	assert_int_equal(registry_open(path, &r, &err), -EINVAL);
	assert_null(r);
	assert_non_null(strstr(err.msg, path));
	assert_non_null(strstr(err.msg, "not an SQLite database"));

	/* SQLite's magic, then garbage */
	snprintf(path, sizeof(path), "%s/damaged.db", f->dir);
	memset(hdr, 0xa5, sizeof(hdr));
	memcpy(hdr, "SQLite format 3", 16);
	write_file(path, hdr, sizeof(hdr));
	r = (struct registry *)0x1;
	assert_true(registry_open(path, &r, &err) < 0);
	assert_null(r);
	assert_non_null(strstr(err.msg, path));

	/* another program's database */
	snprintf(path, sizeof(path), "%s/other.db", f->dir);
	sqlite3 *h;
	assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
	assert_int_equal(sqlite3_exec(h, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
	sqlite3_close(h);
	assert_int_equal(registry_open(path, &r, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "not a forkd registry"));
	assert_int_equal(sql_int(path, "SELECT count(*) FROM sqlite_schema"), 1);

	/* a directory that does not exist */
	snprintf(path, sizeof(path), "%s/missing/registry.db", f->dir);
	assert_true(registry_open(path, &r, &err) < 0);
	assert_non_null(strstr(err.msg, path));
	assert_int_equal(registry_open("", &r, &err), -EINVAL);
}

static void test_damaged_registry(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char id[REG_ID_MAX];
	struct reg_vm vm;
	struct reg_lineage_node *t;
	size_t n;

	add_vm(f->r, "v", NULL, NULL, id);
	/* someone edits the file by hand: the registry reports the row, never misreads it */
	sql_exec(f->db, "UPDATE vms SET control_sock = printf('%0200d', 1)");
	assert_int_equal(registry_vm_get(f->r, id, &vm, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "control socket"));
	sql_exec(f->db, "PRAGMA ignore_check_constraints = 1; UPDATE vms SET control_sock = 'c',"
			" state = 'dancing'");
	assert_int_equal(registry_vm_get(f->r, id, &vm, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "dancing"));
	/* a parent cycle (impossible through the API) makes the lineage fail, not loop */
	char a[REG_ID_MAX], b[REG_ID_MAX], sql[160];
	sql_exec(f->db, "UPDATE vms SET state = 'running'");
	add_vm(f->r, "a", NULL, NULL, a);
	add_vm(f->r, "b", a, NULL, b);
	snprintf(sql, sizeof(sql), "UPDATE vms SET parent_vm = '%s' WHERE id = '%s'", b, a);
	sql_exec(f->db, sql);
	assert_int_equal(registry_lineage(f->r, &t, &n, &err), -EBADMSG);
	assert_non_null(strstr(err.msg, "cycle"));
}

static void test_newer_schema(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct registry *r = (struct registry *)0x1;
	char id[REG_ID_MAX];

	add_vm(f->r, "v", NULL, NULL, id);
	registry_close(f->r);
	f->r = NULL;
	sql_exec(f->db, "PRAGMA user_version = 7");

	assert_int_equal(registry_open(f->db, &r, &err), -ENOTSUP);
	assert_null(r);
	assert_non_null(strstr(err.msg, f->db));
	assert_non_null(strstr(err.msg, "version 7"));
	assert_non_null(strstr(err.msg, "newer"));
	/* the file is left as it was */
	assert_int_equal(sql_int(f->db, "PRAGMA user_version"), 7);
	assert_int_equal(sql_int(f->db, "SELECT count(*) FROM vms"), 1);

	sql_exec(f->db, "PRAGMA user_version = 3");
	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("reopen: %s", err.msg);
	assert_true(vm_exists(f->r, id));
}

/* The daemon names a VM's network namespace forkd-<vm id>: every id must be a namespace id. */
static void test_vm_ids_are_netns_ids(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char id[REG_ID_MAX], name[16];

	for (int i = 0; i < 50; i++) {
		snprintf(name, sizeof(name), "n%d", i);
		add_vm(f->r, name, NULL, NULL, id);
		if (fk_netns_id_valid(id, &err) < 0)
			fail_msg("VM id %s is no namespace id: %s", id, err.msg);
		assert_true(strlen(FK_NETNS_PREFIX) + strlen(id) < REG_NETNS_MAX);
	}
}

/* What version 2 wrote: the same tables without the network columns of version 3. */
static void drop_v3_columns(const char *db)
{
	sql_exec(db, "ALTER TABLE vms DROP COLUMN net");
	sql_exec(db, "ALTER TABLE vms DROP COLUMN net_netns");
	sql_exec(db, "ALTER TABLE vms DROP COLUMN net_host_addr");
	sql_exec(db, "ALTER TABLE snapshots DROP COLUMN net");
}

/*
 * A version 2 file is upgraded in place: its VMs and snapshots read as net "none" with
 * no namespace; new ones keep their policy, namespace and address; an update records the
 * namespace; a policy that is not one is refused before it reaches the file.
 */
static void test_upgrade_from_v2(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct reg_vm vm = sample_vm("n"), got;
	struct reg_snapshot s = {.tag = "netsnap", .path = "/s/n", .net = "nat"}, snap;
	char id[REG_ID_MAX];

	add_vm(f->r, "v", NULL, NULL, id);
	add_ready_snapshot(f->r, "old", id);
	registry_close(f->r);
	f->r = NULL;
	drop_v3_columns(f->db);
	sql_exec(f->db, "PRAGMA user_version = 2");

	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("open a version 2 file: %s", err.msg);
	assert_int_equal(sql_int(f->db, "PRAGMA user_version"), REG_SCHEMA_VERSION);
	assert_int_equal(registry_vm_get(f->r, id, &got, &err), 0);
	assert_string_equal(got.net, "none");
	assert_string_equal(got.net_netns, "");
	assert_string_equal(got.net_host_addr, "");
	assert_int_equal(registry_snapshot_get(f->r, "old", &snap, &err), 0);
	assert_string_equal(snap.net, "none");

	strcpy(vm.net, "host");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);
	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), 0);
	assert_string_equal(got.net, "host");
	assert_string_equal(got.net_host_addr, "");
	strcpy(got.net_netns, "forkd-p4242");
	strcpy(got.net_host_addr, "10.200.0.6");
	assert_int_equal(registry_vm_update(f->r, &got, &err), 0);
	assert_int_equal(registry_vm_get(f->r, vm.id, &got, &err), 0);
	assert_string_equal(got.net, "host");
	assert_string_equal(got.net_netns, "forkd-p4242");
	assert_string_equal(got.net_host_addr, "10.200.0.6");
	snprintf(s.parent_vm, sizeof(s.parent_vm), "%s", vm.id);
	assert_int_equal(registry_snapshot_add(f->r, &s, &err), 0);
	assert_int_equal(registry_snapshot_get(f->r, "netsnap", &snap, &err), 0);
	assert_string_equal(snap.net, "nat");

	/* a policy that is not one never reaches the file */
	vm = sample_vm("bad");
	strcpy(vm.net, "open");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "'open'"));
	assert_non_null(strstr(err.msg, "none, host or nat"));

	/* Opening it again changes nothing more. */
	registry_close(f->r);
	f->r = NULL;
	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("reopen: %s", err.msg);
	assert_int_equal(registry_vm_get(f->r, got.id, &got, &err), 0);
	assert_string_equal(got.net_host_addr, "10.200.0.6");
}

/* A version 1 file (no snapshot image) is upgraded in place: its rows stay, with image "". */
static void test_upgrade_from_v1(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct reg_snapshot s = {.tag = "new", .path = "/s/new", .image = "py"}, got;
	char id[REG_ID_MAX];

	add_vm(f->r, "v", NULL, NULL, id);
	add_ready_snapshot(f->r, "old", id);
	registry_close(f->r);
	f->r = NULL;
	/* What version 1 wrote: the same tables without snapshots.image. */
	drop_v3_columns(f->db);
	sql_exec(f->db, "ALTER TABLE snapshots DROP COLUMN image");
	sql_exec(f->db, "PRAGMA user_version = 1");

	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("open a version 1 file: %s", err.msg);
	assert_int_equal(sql_int(f->db, "PRAGMA user_version"), REG_SCHEMA_VERSION);
	assert_true(vm_exists(f->r, id));
	assert_int_equal(registry_snapshot_get(f->r, "old", &got, &err), 0);
	assert_int_equal(got.state, REG_SNAP_READY);
	assert_string_equal(got.parent_vm, id);
	assert_string_equal(got.image, "");
	assert_int_equal(registry_snapshot_add(f->r, &s, &err), 0);
	assert_int_equal(registry_snapshot_get(f->r, "new", &got, &err), 0);
	assert_string_equal(got.image, "py");

	/* Opening it again changes nothing more. */
	registry_close(f->r);
	f->r = NULL;
	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("reopen: %s", err.msg);
	assert_int_equal(registry_snapshot_get(f->r, "new", &got, &err), 0);
	assert_string_equal(got.image, "py");
}

/* ---- Two handles ---- */

static void test_two_handles(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct registry *cli = NULL;
	char id[REG_ID_MAX];
	struct reg_vm vm, *list;
	struct reg_snapshot s;
	size_t n;

	if (registry_open(f->db, &cli, &err) != 0)
		fail_msg("second handle: %s", err.msg);

	/* the CLI reads what the daemon committed */
	add_vm(f->r, "d", NULL, NULL, id);
	assert_int_equal(registry_vm_get(cli, id, &vm, &err), 0);
	assert_int_equal(vm.state, REG_VM_RUNNING);
	add_ready_snapshot(f->r, "shared", id);
	assert_int_equal(registry_snapshot_get(cli, "shared", &s, &err), 0);
	assert_int_equal(s.state, REG_SNAP_READY);

	/* and the other way round */
	assert_int_equal(registry_vm_set_state(cli, id, REG_VM_PAUSED, REG_NO_EXIT, &err), 0);
	assert_int_equal(registry_vm_get(f->r, id, &vm, &err), 0);
	assert_int_equal(vm.state, REG_VM_PAUSED);
	char kid[REG_ID_MAX];
	add_vm(cli, "kid", id, NULL, kid);
	assert_int_equal(registry_vm_list(f->r, &list, &n, &err), 0);
	assert_int_equal(n, 2);
	free(list);

	/* a reader inside a transaction does not stop a writer (WAL) */
	assert_int_equal(registry_vm_delete(f->r, id, true, NULL, &err), 0);
	assert_int_equal(registry_vm_list(cli, &list, &n, &err), 0);
	assert_int_equal(n, 0);
	registry_close(cli);
}

/* Two processes adding at once: writers wait for each other (busy timeout, BEGIN IMMEDIATE)
 * rather than failing, and every ID stays unique. */
static void test_concurrent_writers(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct reg_vm *list;
	size_t n;
	int status;
	pid_t pid;

	/* SQLite state must not cross fork(2): the child starts with no connection to the file. */
	registry_close(f->r);
	f->r = NULL;
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct registry *r = NULL;
		struct fk_err cerr = {0};
		struct reg_vm vm;

		if (registry_open(f->db, &r, &cerr) != 0)
			_exit(2);
		for (int i = 0; i < 100; i++) {
			vm = sample_vm("child");
			if (registry_vm_add(r, &vm, &cerr) != 0) {
				fprintf(stderr, "child: %s\n", cerr.msg);
				_exit(3);
			}
		}
		registry_close(r);
		_exit(0);
	}
	char id[REG_ID_MAX];
	if (registry_open(f->db, &f->r, &err) != 0)
		fail_msg("reopen: %s", err.msg);
	for (int i = 0; i < 100; i++)
		add_vm(f->r, "parent", NULL, NULL, id);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);

	assert_int_equal(registry_vm_list(f->r, &list, &n, &err), 0);
	assert_int_equal(n, 200);
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < i; j++)
			assert_string_not_equal(list[i].id, list[j].id);
	free(list);
}

/* A cascade is one transaction: when one row of it cannot go (here a trigger refuses), nothing
 * goes. */
static void test_cascade_is_atomic(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char root[REG_ID_MAX], c[REG_ID_MAX], g[REG_ID_MAX], z[REG_ID_MAX], s1[REG_ID_MAX];
	struct reg_ids removed = {0};
	struct reg_zygote zy;
	struct reg_snapshot snap;
	struct reg_vm vm;
	char sql[256];

	add_vm(f->r, "root", NULL, NULL, root);
	add_zygote(f->r, root, z);
	add_vm(f->r, "c", root, z, c);
	add_vm(f->r, "g", c, NULL, g);
	snprintf(sql, sizeof(sql),
		 "CREATE TRIGGER stop BEFORE DELETE ON vms WHEN old.id = '%s'"
		 " BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
		 g);
	sql_exec(f->db, sql);

	assert_true(registry_vm_delete(f->r, root, true, &removed, &err) < 0);
	assert_non_null(strstr(err.msg, "injected failure"));
	assert_int_equal(removed.n, 0);
	assert_null(removed.ids);
	assert_true(vm_exists(f->r, root) && vm_exists(f->r, c) && vm_exists(f->r, g));
	assert_int_equal(registry_zygote_get(f->r, z, &zy, &err), 0);
	assert_int_equal(registry_vm_get(f->r, c, &vm, &err), 0);
	assert_string_equal(vm.zygote, z);

	/* the same for a snapshot: its VMs go first, then the snapshot row refuses */
	add_ready_snapshot(f->r, "keep", NULL);
	vm = sample_vm("s1");
	strcpy(vm.snapshot, "keep");
	assert_int_equal(registry_vm_add(f->r, &vm, &err), 0);
	strcpy(s1, vm.id);
	sql_exec(f->db, "CREATE TRIGGER stop_snap BEFORE DELETE ON snapshots"
			" BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
	assert_true(registry_snapshot_delete(f->r, "keep", true, &removed, &err) < 0);
	assert_int_equal(removed.n, 0);
	assert_true(vm_exists(f->r, s1));
	assert_int_equal(registry_snapshot_get(f->r, "keep", &snap, &err), 0);

	/* and the handle is usable afterwards (no transaction left open) */
	sql_exec(f->db, "DROP TRIGGER stop; DROP TRIGGER stop_snap");
	assert_int_equal(registry_vm_delete(f->r, root, true, &removed, &err), 0);
	assert_int_equal(removed.n, 3);
	free(removed.ids);
}

/* ---- Processes ---- */

static void test_proc_identity(void **state)
{
	(void)state;
	struct fk_err err = {0};
	struct reg_proc me, again, child;
	pid_t pid;
	int status;

	assert_int_equal(registry_proc_probe(getpid(), &me, &err), 0);
	assert_int_equal(me.pid, getpid());
	assert_true(me.start_time > 0);
	assert_int_equal(strlen(me.boot_id), 36);
	assert_int_equal(registry_proc_probe(getpid(), &again, &err), 0);
	assert_memory_equal(&me, &again, sizeof(me));
	assert_int_equal(registry_proc_still_same(&me, &err), 1);

	/* the same pid with another start time is another process */
	again.start_time++;
	assert_int_equal(registry_proc_still_same(&again, &err), 0);
	again = me;
	again.boot_id[0] = again.boot_id[0] == 'f' ? '0' : 'f';
	assert_int_equal(registry_proc_still_same(&again, &err), 0);

	/* a process that is gone */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		pause();
		_exit(0);
	}
	assert_int_equal(registry_proc_probe(pid, &child, &err), 0);
	assert_true(child.start_time >= me.start_time);
	assert_int_equal(registry_proc_still_same(&child, &err), 1);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_int_equal(registry_proc_still_same(&child, &err), 0);
	assert_int_equal(registry_proc_probe(pid, &child, &err), -ESRCH);
	assert_non_null(strstr(err.msg, "no such process"));

	struct reg_proc none = {0};
	assert_int_equal(registry_proc_still_same(&none, &err), 0);
	assert_int_equal(registry_proc_probe(0, &child, &err), -EINVAL);
}

/* A batch commits as one: another handle sees none of it before the end and all of it after;
 * a failing operation inside undoes only itself; a process killed mid-batch leaves nothing. */
static void test_batch(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	struct registry *other = NULL;
	char root[REG_ID_MAX], zy[REG_ID_MAX], kid[REG_ID_MAX];
	struct reg_vm orphan = sample_vm("orphan"), got;
	struct reg_vm *vms = NULL;
	size_t n = 0;
	pid_t pid;
	int status;

	add_vm(f->r, "root", NULL, NULL, root);
	assert_int_equal(registry_open(f->db, &other, &err), 0);
	assert_int_equal(registry_batch_begin(f->r, &err), 0);
	assert_int_equal(registry_batch_begin(f->r, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "already open"));
	add_zygote(f->r, root, zy);
	add_vm(f->r, "kid", root, zy, kid);
	strcpy(orphan.parent_vm, "vm-00000000");
	assert_int_equal(registry_vm_add(f->r, &orphan, &err), -ENOENT);
	/* The failed add did not end the batch: the earlier rows are still in it. */
	assert_int_equal(registry_vm_get(f->r, kid, &got, &err), 0);
	assert_int_equal(registry_vm_get(other, kid, &got, &err), -ENOENT);
	assert_int_equal(registry_batch_end(f->r, &err), 0);
	assert_int_equal(registry_batch_end(f->r, &err), -EINVAL);
	assert_int_equal(registry_vm_get(other, kid, &got, &err), 0);
	assert_string_equal(got.zygote, zy);
	assert_int_equal(registry_vm_list(other, &vms, &n, &err), 0);
	assert_int_equal(n, 2);
	free(vms);

	/* Killed between the first change and the end: none of the batch is in the file. */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct registry *r = NULL;
		char id[REG_ID_MAX];

		if (registry_open(f->db, &r, &err) != 0 || registry_batch_begin(r, &err) != 0)
			_exit(1);
		add_vm(r, "lost", root, NULL, id);
		raise(SIGKILL);
		_exit(2);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	assert_int_equal(registry_vm_list(other, &vms, &n, &err), 0);
	assert_int_equal(n, 2);
	free(vms);
	/* And the file is writable again at once (the killed writer's lock is gone). */
	add_vm(other, "after", root, NULL, kid);
	registry_close(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_vm_crud, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_statements_shared_by_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vm_add_checks, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_ids_unique_never_reused, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reserved_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_zygotes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lineage_three_levels, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_lineage_empty, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_refused_with_children, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_many_dependents_message, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_delete_cascade, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_states, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_snapshot_delete_dependents, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_tags, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reopen_keeps_everything, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wal_mode, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_foreign_keys_on, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_damaged_registry, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_newer_schema, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_from_v1, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_upgrade_from_v2, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vm_ids_are_netns_ids, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_two_handles, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cascade_is_atomic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_batch, setup, teardown),
	    cmocka_unit_test(test_proc_identity),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
