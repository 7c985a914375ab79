/* SPDX-License-Identifier: MIT */
/* The /30 slot allocator of VM network namespaces (src/net/slots.c). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/slots.h"

static char dir[128];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/forkd-slots-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	char cmd[256];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_addresses(void **state)
{
	char buf[16];

	(void)state;
	fk_ipv4_str(fk_slot_host_addr(0), buf);
	assert_string_equal(buf, "10.200.0.1");
	fk_ipv4_str(fk_slot_ns_addr(0), buf);
	assert_string_equal(buf, "10.200.0.2");
	fk_ipv4_str(fk_slot_ns_addr(64), buf);
	assert_string_equal(buf, "10.200.1.2");
	fk_ipv4_str(fk_slot_net(FK_SLOTS_MAX - 1), buf);
	assert_string_equal(buf, "10.200.255.252");
	fk_ipv4_str(fk_slot_ns_addr(FK_SLOTS_MAX - 1), buf);
	assert_string_equal(buf, "10.200.255.254");
}

/* Lowest free first, exhaustion named, a freed slot is reused, only its holder frees it. */
static void test_alloc_free_exhaust(void **state)
{
	struct fk_slots slots = {.dir = dir, .nr_slots = 3};
	struct fk_err err = {0};
	char owner[64];
	unsigned s;

	(void)state;
	assert_int_equal(fk_slot_alloc(&slots, "forkd-a", &s, &err), 0);
	assert_int_equal(s, 0);
	assert_int_equal(fk_slot_alloc(&slots, "forkd-b", &s, &err), 0);
	assert_int_equal(s, 1);
	assert_int_equal(fk_slot_alloc(&slots, "forkd-c", &s, &err), 0);
	assert_int_equal(s, 2);
	assert_int_equal(fk_slot_alloc(&slots, "forkd-d", &s, &err), -ENOSPC);
	assert_non_null(strstr(err.msg, "slot space exhausted"));
	assert_non_null(strstr(err.msg, "all 3 /30 networks"));

	assert_int_equal(fk_slot_owner(&slots, 1, owner, sizeof(owner)), 0);
	assert_string_equal(owner, "forkd-b");
	assert_int_equal(fk_slot_free(&slots, 1, "forkd-a", &err), -EPERM);
	assert_non_null(strstr(err.msg, "belongs to 'forkd-b'"));
	assert_int_equal(fk_slot_free(&slots, 1, "forkd-b", &err), 0);
	assert_int_equal(fk_slot_owner(&slots, 1, owner, sizeof(owner)), -ENOENT);
	assert_int_equal(fk_slot_free(&slots, 1, "forkd-b", &err), -ENOENT);
	assert_int_equal(fk_slot_free(&slots, 7, "forkd-b", &err), -EINVAL);

	assert_int_equal(fk_slot_alloc(&slots, "forkd-d", &s, &err), 0);
	assert_int_equal(s, 1);
}

static void test_bad_config(void **state)
{
	struct fk_slots none = {.dir = dir, .nr_slots = 0};
	struct fk_slots many = {.dir = dir, .nr_slots = FK_SLOTS_MAX + 1};
	struct fk_slots nodir = {.dir = "", .nr_slots = 4};
	struct fk_err err = {0};
	unsigned s;

	(void)state;
	assert_int_equal(fk_slot_alloc(&none, "x", &s, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "expected 1 to 16384"));
	assert_int_equal(fk_slot_alloc(&many, "x", &s, &err), -EINVAL);
	assert_int_equal(fk_slot_alloc(&nodir, "x", &s, &err), -EINVAL);
}

static bool only_b_alive(const char *name, void *ctx)
{
	(void)ctx;
	return strcmp(name, "forkd-b") == 0;
}

static void test_sweep(void **state)
{
	struct fk_slots slots = {.dir = dir, .nr_slots = 8};
	struct fk_err err = {0};
	char owner[64];
	unsigned s;

	(void)state;
	assert_int_equal(fk_slot_alloc(&slots, "forkd-a", &s, &err), 0);
	assert_int_equal(fk_slot_alloc(&slots, "forkd-b", &s, &err), 0);
	assert_int_equal(fk_slot_alloc(&slots, "forkd-c", &s, &err), 0);
	assert_int_equal(fk_slot_sweep(&slots, only_b_alive, NULL, &err), 2);
	assert_int_equal(fk_slot_owner(&slots, 0, owner, sizeof(owner)), -ENOENT);
	assert_int_equal(fk_slot_owner(&slots, 1, owner, sizeof(owner)), 0);
	assert_string_equal(owner, "forkd-b");
	assert_int_equal(fk_slot_owner(&slots, 2, owner, sizeof(owner)), -ENOENT);
	assert_int_equal(fk_slot_sweep(&slots, only_b_alive, NULL, &err), 0);
}

/* Processes allocating at once never get the same slot. */
static void test_concurrent_processes(void **state)
{
	enum { PROCS = 6, EACH = 10 };
	struct fk_slots slots = {.dir = dir, .nr_slots = PROCS * EACH};
	struct fk_err err = {0};
	char owner[64], seen[PROCS * EACH] = {0};
	pid_t pids[PROCS];

	(void)state;
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			for (int i = 0; i < EACH; i++) {
				char name[32];
				unsigned s;

				snprintf(name, sizeof(name), "forkd-p%d-%d", p, i);
				if (fk_slot_alloc(&slots, name, &s, &err) < 0)
					_exit(1);
			}
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int status;

		assert_int_equal(waitpid(pids[p], &status, 0), pids[p]);
		assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	/* every slot taken exactly once, each by one distinct name */
	for (unsigned s = 0; s < PROCS * EACH; s++) {
		int p, i;

		assert_int_equal(fk_slot_owner(&slots, s, owner, sizeof(owner)), 0);
		assert_int_equal(sscanf(owner, "forkd-p%d-%d", &p, &i), 2);
		assert_int_equal(seen[p * EACH + i], 0);
		seen[p * EACH + i] = 1;
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_addresses),
	    cmocka_unit_test_setup_teardown(test_alloc_free_exhaust, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_config, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_sweep, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_processes, setup, teardown),
	};
	return cmocka_run_group_tests_name("net slots", tests, NULL, NULL);
}
