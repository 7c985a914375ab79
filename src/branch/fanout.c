/* SPDX-License-Identifier: MIT */
/*
 * Fan-out from a snapshot: one restore, then the BRANCH zygote forks the
 * children. A child of `forkd spawn`'s exec mode is a fresh forkd-vmm that
 * maps the memory file, opens KVM and rebuilds every device (22-41 ms of CPU
 * each, bench/RESULTS.md); a forked child inherits all of that except its
 * KVM VM, memslots and vCPUs. The guest never runs here, so the branch
 * instant is the snapshot's instant: the pattern a child resumes with is the
 * one `--restore` of the same snapshot would give it.
 */
#include "branch/fanout.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "branch/fork_engine.h"

/*
 * What only the fan-out needed once every child is built: the branch's disk
 * copies in OUT (each child copied them into its own overlay; `dir` NULL when
 * the branch never got as far as making them) and this process's own overlay
 * copies of the snapshot's writable disks.
 */
static void remove_source_files(struct vm *vm, const char *dir)
{
	size_t odir_len = strlen(vm->overlay_dir);
	char path[4200];

	for (int i = 0; i < vm->nr_disks; i++) {
		const char *own = vm->restored_cfg.disks[i].path;

		/* A branch copies exactly the writable disks, as disk%d.img (vm_snapshot.c). */
		if (dir && !vm->restored_cfg.disks[i].readonly) {
			snprintf(path, sizeof(path), "%.2100s/disk%d.img", dir, i);
			unlink(path);
		}
		/* Read-only disks are the snapshot's images themselves: never removed. */
		if (odir_len && strncmp(own, vm->overlay_dir, odir_len) == 0 &&
		    own[odir_len] == '/')
			unlink(own);
	}
	if (vm->overlay_dir_created)
		rmdir(vm->overlay_dir);
	if (!dir)
		return;
	/* The zygote's log, unless it has something to say. */
	snprintf(path, sizeof(path), "%.2100s/zygote.log", dir);
	{
		struct stat st;

		if (stat(path, &st) == 0 && st.st_size == 0)
			unlink(path);
	}
}

/*
 * Each child writes its own OUT/child-K/pid once built (fork_engine.c); the
 * zygote numbers a fan-out's children 0..N-1, so these are all there can be.
 */
static void remove_pid_files(const struct vmm_config *cfg)
{
	char path[2400];

	for (int k = 0; k < cfg->fanout; k++) {
		snprintf(path, sizeof(path), "%s/child-%d/pid", cfg->fanout_dir, k);
		unlink(path);
		snprintf(path, sizeof(path), "%s/child-%d/pid.tmp", cfg->fanout_dir, k);
		unlink(path);
	}
}

int fanout_run(struct vm *vm, struct fk_err *err)
{
	const struct vmm_config *cfg = vm->cfg;
	struct branch_request req = {.n = cfg->fanout, .dir = cfg->fanout_dir, .dir_exists = true};
	struct branch_result *res = calloc(1, sizeof(*res));
	uint64_t t0 = monotonic_us();
	int ret;

	if (!res)
		return fk_fail(err, ENOMEM, "--fanout: out of memory");
	ret = branch_vm(vm, &req, res, err);
	if (ret < 0) {
		/* branch_vm killed the children that had started; their pid files go too. */
		remove_pid_files(cfg);
		/* Past the zygote's fork, the disk copies in OUT were this branch's own. */
		remove_source_files(vm, res->zygote_pid > 0 ? cfg->fanout_dir : NULL);
		fk_wrap(err, "--fanout %d", cfg->fanout);
		goto out;
	}
	if (res->nr_children != cfg->fanout) {
		ret = fk_fail(err, EIO, "--fanout %d: the zygote started %d children", cfg->fanout,
			      res->nr_children);
		goto kill_children;
	}
	for (int i = 0; i < res->nr_children; i++)
		printf("{\"child\":%d,\"pid\":%d}\n", res->children[i].index,
		       (int)res->children[i].pid);
	printf("{\"fanout\":%d,\"zygote_pid\":%d,\"branch_ms\":%.1f}\n", res->nr_children,
	       (int)res->zygote_pid, (monotonic_us() - t0) / 1e3);
	if (fflush(stdout) != 0) {
		ret = fk_fail_errno(err, errno, "--fanout: stdout");
		goto kill_children;
	}
	/*
	 * The zygote is released: its instant is the snapshot's, which any later
	 * spawn restores again; keeping it would hold this process and its
	 * copy-on-write memory for a request that may never come.
	 */
	ret = branch_release(vm, res->zygote_id, err);
	remove_source_files(vm, cfg->fanout_dir);
	goto out;

kill_children:
	/* Nothing partial: a fan-out either has all its children or none. */
	for (int i = 0; i < res->nr_children; i++)
		kill(res->children[i].pid, SIGKILL);
	remove_pid_files(cfg);
	branch_release_all(vm);
	remove_source_files(vm, cfg->fanout_dir);
out:
	free(res);
	return ret;
}
