/* SPDX-License-Identifier: MIT */
/*
 * The memfd and uffd guest-memory backends (src/core/guest_mem.c): memfd RAM
 * is the memfd's pages (a write shows through the fd) in both regions of a
 * guest larger than 4 GiB; at a BRANCH it becomes MAP_PRIVATE of the same
 * memfd, so a forked child keeps the branch instant while the source writes
 * on; uffd RAM refuses to be forked.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/config.h"
#include "core/guest_mem.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

static void test_memfd_is_shared_in_both_regions(void **state)
{
	struct guest_mem mem;
	struct fk_err err = {0};
	uint64_t v = 0x1122334455667788ULL, got = 0;
	char link[64], target[128];
	ssize_t n;

	(void)state;
	/* 3 GiB + 64 MiB: the second region at 4 GiB, MAP_NORESERVE so nothing is allocated. */
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_MEMFD, 3 * GiB + 64 * MiB, &err), 0);
	assert_int_equal(mem.nr_regions, 2);
	assert_true(mem.memfd >= 0);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", mem.memfd);
	n = readlink(link, target, sizeof(target) - 1);
	assert_true(n > 0);
	target[n] = '\0';
	assert_non_null(strstr(target, "memfd:forkd-guest-ram"));
	/* A guest write in each region is in the memfd at the region's packed offset. */
	assert_int_equal(guest_mem_write(&mem, 0x1000, &v, sizeof(v)), 0);
	assert_int_equal(pread(mem.memfd, &got, sizeof(got), 0x1000), sizeof(got));
	assert_int_equal(got, v);
	assert_int_equal(guest_mem_write(&mem, GUEST_MMIO_HOLE_END + 0x2000, &v, sizeof(v)), 0);
	assert_int_equal(pread(mem.memfd, &got, sizeof(got), (off_t)(3 * GiB + 0x2000)),
			 sizeof(got));
	assert_int_equal(got, v);
	guest_mem_destroy(&mem);
	assert_int_equal(mem.memfd, -1);
}

static void test_branch_makes_memfd_private(void **state)
{
	struct guest_mem mem;
	struct fk_err err = {0};
	uint64_t before = 0xAAAA, after = 0xBBBB, got = 0;
	int pipefd[2], status;
	pid_t pid;

	(void)state;
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_MEMFD, 64 * MiB, &err), 0);
	assert_int_equal(guest_mem_write(&mem, 0x3000, &before, sizeof(before)), 0);
	assert_int_equal(guest_mem_prepare_fork(&mem, &err), 0);
	assert_true(mem.memfd_private);
	assert_int_equal(mem.memfd, -1);
	/* The content is the same bytes after the remap. */
	assert_int_equal(guest_mem_read(&mem, 0x3000, &got, sizeof(got)), 0);
	assert_int_equal(got, before);
	/* Twice is fine (a second BRANCH). */
	assert_int_equal(guest_mem_prepare_fork(&mem, &err), 0);

	assert_int_equal(pipe(pipefd), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		char go;
		uint64_t seen = 0;

		/* The child (a BRANCH child) reads after the source wrote. */
		if (read(pipefd[0], &go, 1) != 1)
			_exit(3);
		guest_mem_read(&mem, 0x3000, &seen, sizeof(seen));
		_exit(seen == 0xAAAA ? 0 : 1);
	}
	assert_int_equal(guest_mem_write(&mem, 0x3000, &after, sizeof(after)), 0);
	assert_int_equal(write(pipefd[1], "g", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	close(pipefd[0]);
	close(pipefd[1]);
	guest_mem_destroy(&mem);
}

static void test_uffd_backend_refuses_fork(void **state)
{
	struct guest_mem mem;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_UFFD, 64 * MiB, &err), 0);
	assert_int_equal(mem.memfd, -1);
	assert_int_equal(guest_mem_prepare_fork(&mem, &err), -EOPNOTSUPP);
	assert_non_null(strstr(err.msg, "--restore-mode uffd"));
	guest_mem_destroy(&mem);
	/* anon: nothing to do before a fork. */
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_ANON, 64 * MiB, &err), 0);
	assert_int_equal(guest_mem_prepare_fork(&mem, &err), 0);
	guest_mem_destroy(&mem);
}

/* argv as a NULL-terminated list; returns vmm_config_parse's result, err set. */
static int parse(struct vmm_config *cfg, struct fk_err *err, char **argv)
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return vmm_config_parse(cfg, argc, argv, err);
}

static void expect_option_error(char **argv, const char *want)
{
	struct vmm_config cfg;
	struct fk_err err = {0};

	if (parse(&cfg, &err, argv) != -EINVAL || !strstr(err.msg, want))
		fail_msg("'%s ...': '%s', expected '%s'", argv[1], err.msg, want);
}

static void test_options(void **state)
{
	struct vmm_config cfg;
	struct fk_err err = {0};
	char *memfd[] = {"forkd-vmm", "--kernel", "k", "--mem-backend", "memfd", NULL};
	char *uffd[] = {"forkd-vmm", "--restore",      "d",	      "--restore-mode",
			"uffd",	     "--uffd-handler", "/tmp/h.sock", NULL};
	char *bad_backend[] = {"forkd-vmm", "--kernel", "k", "--mem-backend", "shm", NULL};
	char *bad_mode[] = {"forkd-vmm", "--restore", "d", "--restore-mode", "lazy", NULL};
	char *no_sock[] = {"forkd-vmm", "--restore", "d", "--restore-mode", "uffd", NULL};
	char *no_mode[] = {"forkd-vmm", "--restore", "d", "--uffd-handler", "/tmp/h", NULL};
	char *no_restore[] = {"forkd-vmm", "--kernel",	     "k",      "--restore-mode",
			      "uffd",	   "--uffd-handler", "/tmp/h", NULL};
	char *jailed[] = {"forkd-vmm",	    "--restore",   "d",	     "--restore-mode", "uffd",
			  "--uffd-handler", "/tmp/h.sock", "--jail", "/tmp/j",	       NULL};
	char *memfd_restore[] = {"forkd-vmm", "--restore", "d", "--mem-backend", "memfd", NULL};
	char *fanout[] = {"forkd-vmm", "--restore",	 "d",		"--restore-mode",
			  "uffd",      "--uffd-handler", "/tmp/h.sock", "--fanout",
			  "2",	       "--fanout-dir",	 "/tmp",	NULL};

	(void)state;
	assert_int_equal(parse(&cfg, &err, memfd), 0);
	assert_true(cfg.mem_memfd);
	assert_int_equal(parse(&cfg, &err, uffd), 0);
	assert_string_equal(cfg.uffd_handler, "/tmp/h.sock");
	expect_option_error(bad_backend,
			    "--mem-backend 'shm': expected anon (the default), hugetlb or memfd");
	expect_option_error(bad_mode, "--restore-mode 'lazy': expected file or uffd");
	expect_option_error(no_sock, "--restore-mode uffd and --uffd-handler SOCK go together");
	expect_option_error(no_mode, "--restore-mode uffd and --uffd-handler SOCK go together");
	expect_option_error(no_restore, "only applies with --restore");
	expect_option_error(jailed, "not supported inside --jail");
	expect_option_error(memfd_restore, "--mem-backend memfd: a restore maps");
	expect_option_error(fanout, "--restore-mode uffd and --fanout");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_memfd_is_shared_in_both_regions),
	    cmocka_unit_test(test_branch_makes_memfd_private),
	    cmocka_unit_test(test_uffd_backend_refuses_fork),
	    cmocka_unit_test(test_options),
	};
	return cmocka_run_group_tests_name("memfd and uffd guest memory", tests, NULL, NULL);
}
