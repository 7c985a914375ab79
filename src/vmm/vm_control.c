/* SPDX-License-Identifier: MIT */
/* The VM's commands on the control socket (protocol: docs/control.md). */
#include <errno.h>

#include "vmm/vm.h"
#include "vmm/vm_snapshot.h"

static int cmd_status(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;

	(void)request;
	(void)err;
	json_object_set_new(reply, "state", json_string(vm_is_paused(vm) ? "paused" : "running"));
	json_object_set_new(reply, "vcpus", json_integer(vm->nr_vcpus));
	json_object_set_new(reply, "mem_mib", json_integer((json_int_t)(vm->mem.total_size >> 20)));
	json_object_set_new(reply, "disks", json_integer(vm->nr_disks));
	json_object_set_new(reply, "uptime_ms",
			    json_integer((json_int_t)((monotonic_us() - vm->started_us) / 1000)));
	json_object_set_new(reply, "last_pause_us", json_integer((json_int_t)vm->last_pause_us));
	json_object_set_new(reply, "restored", json_boolean(vm->restored));
	if (vm->overlay_dir[0])
		json_object_set_new(reply, "overlay_dir", json_string(vm->overlay_dir));
	return 0;
}

static int cmd_pause(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	int ret;

	(void)request;
	ret = vm_pause(vm, err);
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "state", json_string("paused"));
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)vm->last_pause_us));
	return 0;
}

static int cmd_resume(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	int ret;

	(void)request;
	ret = vm_resume(vm, err);
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "state", json_string("running"));
	return 0;
}

static int cmd_shutdown(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;

	(void)request;
	(void)err;
	vm_request_exit(vm, VMM_EXIT_POWEROFF, "shut down over the control socket");
	json_object_set_new(reply, "state", json_string("stopping"));
	return 0;
}

static int cmd_snapshot(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	struct vm_snapshot_result res;
	const char *path;
	bool resume = true;
	int ret;

	ret = control_arg_string(request, "path", true, &path, err);
	if (ret < 0)
		return ret;
	ret = control_arg_bool(request, "resume", false, &resume, err);
	if (ret < 0)
		return ret;
	ret = vm_snapshot_take(vm, path, resume, &res, err);
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "path", json_string(path));
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)res.pause_us));
	json_object_set_new(reply, "capture_us", json_integer((json_int_t)res.capture_us));
	json_object_set_new(reply, "write_us", json_integer((json_int_t)res.write_us));
	json_object_set_new(reply, "mem_bytes", json_integer((json_int_t)res.mem_bytes));
	json_object_set_new(reply, "inflight", json_integer(res.inflight));
	json_object_set_new(reply, "state", json_string(vm_is_paused(vm) ? "paused" : "running"));
	return 0;
}

static const struct control_command vm_commands[] = {
    {"status", cmd_status, "state (running|paused), vcpus, mem_mib, disks, uptime_ms"},
    {"pause", cmd_pause, "stop all vCPUs at a safe point; replies with pause_us"},
    {"resume", cmd_resume, "run the vCPUs again"},
    {"shutdown", cmd_shutdown, "stop the VM; forkd-vmm exits with status 0"},
    {"snapshot", cmd_snapshot,
     "path: new directory; resume (default true): write a snapshot of the whole VM"},
    {NULL, NULL, NULL},
};

int vm_control_init(struct vm *vm, struct fk_err *err)
{
	int ret = control_server_init(&vm->control, &vm->loop, vm->cfg->control_path, vm_commands,
				      vm, err);

	if (ret < 0)
		return fk_wrap(err, "--control %s", vm->cfg->control_path);
	vm->control_ready = true;
	return 0;
}
