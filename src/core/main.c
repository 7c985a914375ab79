/* SPDX-License-Identifier: MIT */
/* forkd-vmm: one KVM virtual machine per process. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branch/fanout.h"
#include "core/config.h"
#include "core/vm.h"
#include "jail/cgroup.h"
#include "jail/jail.h"
#include "net/net_broker.h"
#include "net/vm_netns.h"

/* Failures caused by what the user gave us are usage errors (exit 2). */
static int init_failure_status(int code)
{
	switch (code) {
	case ENOENT:
	case EACCES:
	case EPERM:
	case ENOEXEC:
	case EFBIG:
	case EINVAL:
	case ENOTDIR:
	case EISDIR:
	case ENAMETOOLONG:
	case E2BIG:
	case ENODEV:
	case EEXIST:
	case EADDRINUSE:
	case ENOTSUP:
	case EBADMSG:
	case EOVERFLOW:
		return VMM_EXIT_USAGE;
	default:
		return VMM_EXIT_ERROR;
	}
}

int main(int argc, char **argv)
{
	struct vmm_config cfg;
	struct fk_err err = {0};
	struct vm *vm;
	int status;

	/* the network broker: this binary run again by a --net-policy VMM (src/net/net_broker.h) */
	if (argc == 2 && !strcmp(argv[1], NET_BROKER_ARG))
		return net_broker_main(NET_BROKER_FD);
	if (vmm_config_parse(&cfg, argc, argv, &err) < 0) {
		fprintf(stderr, "forkd-vmm: %s\n", err.msg);
		return VMM_EXIT_USAGE;
	}
	if (cfg.help) {
		vmm_config_usage(stdout);
		return 0;
	}
	/* --net-policy: the namespace and its tap exist before the VM opens the tap */
	if (vm_netns_setup(&cfg, false, &err) < 0) {
		fprintf(stderr, "forkd-vmm: %s\n", err.msg);
		return init_failure_status(err.code);
	}
	/*
	 * Isolation before the VM is built: the cgroup first (its files are
	 * outside the jail; guest RAM is then charged to it), then the jail,
	 * which ends unprivileged (docs/jail.md).
	 */
	if (cfg.cgroup_wanted) {
		struct cgroup_limits lim = {.memory_max = cfg.memory_max,
					    .cpu_quota_us = cfg.cpu_quota_us,
					    .cpu_period_us = cfg.cpu_period_us,
					    .pids_max = cfg.pids_max};
		char cg[4200];

		if (cgroup_vm_join(cfg.cgroup_parent, cfg.cgroup_name, &lim, cg, sizeof(cg), &err) <
		    0) {
			fprintf(stderr, "forkd-vmm: %s\n", err.msg);
			return init_failure_status(err.code);
		}
	}
	if (cfg.jail_dir && jail_enter(&cfg, &err) < 0) {
		fprintf(stderr, "forkd-vmm: %s\n", err.msg);
		return init_failure_status(err.code);
	}
	vm = malloc(sizeof(*vm));
	if (!vm) {
		fprintf(stderr, "forkd-vmm: out of memory\n");
		vm_netns_release(&cfg);
		return VMM_EXIT_ERROR;
	}
	if (vm_init(vm, &cfg, &err) < 0) {
		fprintf(stderr, "forkd-vmm: %s\n", err.msg);
		status = init_failure_status(err.code);
		vm_destroy(vm);
		free(vm);
		vm_netns_release(&cfg);
		return status;
	}
	/* --fanout: the restored VM is the BRANCH source of N children and never runs here. */
	if (cfg.fanout) {
		status = 0;
		if (fanout_run(vm, &err) < 0) {
			fprintf(stderr, "forkd-vmm: %s\n", err.msg);
			status = init_failure_status(err.code);
		}
		vm_destroy(vm);
		free(vm);
		vm_netns_release(&cfg);
		return status;
	}
	status = vm_run(vm);
	if (status != VMM_EXIT_POWEROFF)
		fprintf(stderr, "forkd-vmm: %s (exit status %d)\n", vm->exit_reason, status);
	vm_destroy(vm);
	free(vm);
	vm_netns_release(&cfg);
	return status;
}
