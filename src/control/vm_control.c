/* SPDX-License-Identifier: MIT */
/* The VM's commands on the control socket (protocol: docs/control.md). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "branch/fork_engine.h"
#include "core/vm.h"
#include "devices/tap.h"
#include "state/vm_snapshot.h"
#include "state/diff_track.h"
#include "state/live_async.h"
#include "uffd/uffd_live.h"

/* The network device: what it is attached to and what the guest (or the host) cost it. */
static void put_net_status(struct vm *vm, json_t *reply)
{
	struct virtio_net_stats st;
	uint8_t m[6];
	char mac[18];

	virtio_net_get_stats(vm->net.dev, &st);
	virtio_net_get_mac(vm->net.dev, m);
	snprintf(mac, sizeof(mac), "%02x:%02x:%02x:%02x:%02x:%02x", m[0], m[1], m[2], m[3], m[4],
		 m[5]);
	json_object_set_new(reply, "net_mac", json_string(mac));
	pthread_mutex_lock(&vm->net.transport.lock);
	json_object_set_new(reply, "net_tap", json_string(virtio_net_tap_name(vm->net.dev)));
	json_object_set_new(reply, "net_link_up", json_boolean(virtio_net_link_up(vm->net.dev)));
	json_object_set_new(reply, "net_errors",
			    json_integer((json_int_t)vm->net.transport.errors));
	json_object_set_new(reply, "net_last_error", json_string(vm->net.transport.last_error));
	json_object_set_new(
	    reply, "net_needs_reset",
	    json_boolean(vm->net.transport.state.status & VIRTIO_STATUS_DEVICE_NEEDS_RESET));
	pthread_mutex_unlock(&vm->net.transport.lock);
	json_object_set_new(reply, "net_rx_packets", json_integer((json_int_t)st.rx_packets));
	json_object_set_new(reply, "net_rx_bytes", json_integer((json_int_t)st.rx_bytes));
	json_object_set_new(reply, "net_rx_dropped", json_integer((json_int_t)st.rx_dropped));
	json_object_set_new(reply, "net_rx_no_buffers", json_integer((json_int_t)st.rx_no_buffers));
	json_object_set_new(reply, "net_tx_packets", json_integer((json_int_t)st.tx_packets));
	json_object_set_new(reply, "net_tx_bytes", json_integer((json_int_t)st.tx_bytes));
	json_object_set_new(reply, "net_tx_dropped_link_down",
			    json_integer((json_int_t)st.tx_dropped_link_down));
	json_object_set_new(reply, "net_tx_malformed", json_integer((json_int_t)st.tx_malformed));
	json_object_set_new(reply, "net_tx_errors", json_integer((json_int_t)st.tx_errors));
	json_object_set_new(reply, "net_rx_budget_exhausted",
			    json_integer((json_int_t)st.rx_budget_exhausted));
	json_object_set_new(reply, "net_tx_budget_exhausted",
			    json_integer((json_int_t)st.tx_budget_exhausted));
	json_object_set_new(reply, "net_offloads", json_integer(st.offloads));
	/* --net-policy: the VM's own namespace, and where the host reaches the guest */
	if (vm->cfg->net_netns_owned) {
		json_object_set_new(reply, "net_netns", json_string(vm->cfg->net_netns));
		json_object_set_new(reply, "net_host_addr", json_string(vm->cfg->net_host_addr));
	}
}

/* While live snapshots are being written: their memory files' bytes on disk so far. */
static void put_snapshot_progress(struct vm *vm, json_t *reply)
{
	uint64_t total = 0;
	bool writing = false;

	for (int i = 0; vm->branch && i < BRANCH_MAX_SNAPSHOT_JOBS; i++) {
		const struct snapshot_job *j = &vm->branch->snapshot_jobs[i];
		uint64_t bytes;

		if (j->in_use && j->state == PERSIST_WRITING &&
		    snap_tmp_written_bytes(j->path, &bytes) == 0) {
			total += bytes;
			writing = true;
		}
	}
	if (writing)
		json_object_set_new(reply, "snapshot_written_bytes",
				    json_integer((json_int_t)total));
}

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
	if (vm->vsock.dev) {
		struct virtio_vsock_stats st;

		virtio_vsock_get_stats(vm->vsock.dev, &st);
		json_object_set_new(reply, "vsock_path",
				    json_string(virtio_vsock_path(vm->vsock.dev)));
		json_object_set_new(
		    reply, "vsock_cid",
		    json_integer((json_int_t)virtio_vsock_guest_cid(vm->vsock.dev)));
		json_object_set_new(reply, "vsock_connections", json_integer(st.connections));
		/* What a misbehaving guest cost: hostile tests and operators read these. */
		json_object_set_new(reply, "vsock_malformed",
				    json_integer((json_int_t)st.malformed));
		json_object_set_new(reply, "vsock_refused", json_integer((json_int_t)st.refused));
		json_object_set_new(reply, "vsock_rst_sent", json_integer((json_int_t)st.rst_sent));
		json_object_set_new(reply, "vsock_rst_dropped",
				    json_integer((json_int_t)st.rst_dropped));
		json_object_set_new(reply, "vsock_buffered_bytes",
				    json_integer((json_int_t)st.buffered_bytes));
		pthread_mutex_lock(&vm->vsock.transport.lock);
		json_object_set_new(reply, "vsock_errors",
				    json_integer((json_int_t)vm->vsock.transport.errors));
		json_object_set_new(reply, "vsock_last_error",
				    json_string(vm->vsock.transport.last_error));
		pthread_mutex_unlock(&vm->vsock.transport.lock);
		int fn_state = atomic_load(&vm->fork_notify.state);
		json_object_set_new(reply, "fork_notify",
				    json_string(fork_notify_state_name(fn_state)));
		if (fn_state == FORK_NOTIFY_APPLIED)
			json_object_set_new(
			    reply, "fork_notify_ms",
			    json_integer((json_int_t)atomic_load(&vm->fork_notify.applied_ms)));
		if (fn_state == FORK_NOTIFY_FAILED)
			json_object_set_new(reply, "fork_notify_error",
					    json_string(vm->fork_notify.error));
	}
	if (vm->net.dev)
		put_net_status(vm, reply);
	put_snapshot_progress(vm, reply);
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

/*
 * Stop-and-save: the VM stays paused while the whole memory is written
 * (a stuck VM's registers can be saved this way too: it works paused).
 */
/* A diff's size, or tracking's cost, for replies and benches. */
static void put_diff(struct vm *vm, const struct diff_request *dreq, json_t *reply)
{
	if (!vm->diff)
		return;
	json_object_set_new(reply, "track_dirty", json_true());
	json_object_set_new(reply, "collect_us", json_integer((json_int_t)vm->diff->collect_us));
	if (dreq->parent) {
		json_object_set_new(reply, "parent", json_string(dreq->parent));
		json_object_set_new(reply, "dirty_pages",
				    json_integer((json_int_t)vm->diff->dirty_pages));
	}
}

static int snapshot_stop(struct vm *vm, const char *path, bool resume,
			 const struct diff_request *dreq, json_t *reply, struct fk_err *err)
{
	struct vm_snapshot_result res;
	int ret = vm_snapshot_take_diff(vm, path, resume, dreq, &res, err);

	if (ret < 0)
		return ret;
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)res.pause_us));
	json_object_set_new(reply, "capture_us", json_integer((json_int_t)res.capture_us));
	json_object_set_new(reply, "write_us", json_integer((json_int_t)res.write_us));
	json_object_set_new(reply, "hash_us", json_integer((json_int_t)res.hash_us));
	json_object_set_new(reply, "mem_bytes", json_integer((json_int_t)res.mem_bytes));
	json_object_set_new(reply, "inflight", json_integer(res.inflight));
	json_object_set_new(reply, "snapshot", json_string("ready"));
	return 0;
}

/*
 * Live: a persisted BRANCH with no children. The pause is the BRANCH pause
 * (park, capture, fork); the zygote writes the memory it holds copy-on-write
 * while the VM runs on, and goes once the snapshot is complete.
 */
static int snapshot_live(struct vm *vm, const char *path, bool wait,
			 const struct diff_request *dreq, json_t *reply, struct fk_err *err)
{
	struct branch_request req = {.n = 0,
				     .persist = path,
				     .wait = wait,
				     .snapshot = true,
				     .parent = dreq->parent,
				     .track_dirty = dreq->track};
	struct branch_result *res = malloc(sizeof(*res));
	int ret;

	if (!res)
		return fk_fail(err, ENOMEM, "snapshot: out of memory");
	ret = branch_vm(vm, &req, res, err);
	if (ret < 0)
		goto out;
	if (res->persist == PERSIST_FAILED) {
		ret = fk_fail(err, EIO, "%s", res->persist_error);
		goto out;
	}
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)res->pause_us));
	json_object_set_new(reply, "park_us", json_integer((json_int_t)res->park_us));
	json_object_set_new(reply, "capture_us", json_integer((json_int_t)res->capture_us));
	json_object_set_new(reply, "fork_us", json_integer((json_int_t)res->fork_us));
	/* The writer, while it writes (e.g. to watch or stop it); gone once written. */
	json_object_set_new(reply, "zygote_pid", json_integer(res->zygote_pid));
	json_object_set_new(reply, "disk_copy_us", json_integer((json_int_t)res->disk_copy_us));
	json_object_set_new(reply, "write_us", json_integer((json_int_t)res->write_us));
	json_object_set_new(reply, "hash_us", json_integer((json_int_t)res->hash_us));
	json_object_set_new(reply, "mem_bytes", json_integer((json_int_t)vm->mem.total_size));
	json_object_set_new(reply, "inflight", json_integer(res->inflight));
	json_object_set_new(reply, "snapshot", json_string(persist_state_name(res->persist)));
out:
	free(res);
	return ret;
}

/* engine uffd-wp-async (src/state/live_async.c): live only, full snapshots only. */
static int snapshot_live_async(struct vm *vm, const char *path, const char *mode, bool wait,
			       const struct diff_request *dreq, json_t *reply, struct fk_err *err)
{
	int ret;

	if (mode && strcmp(mode, "live") != 0)
		return fk_fail(err, EINVAL, "mode '%s' with engine %s: expected live", mode,
			       LIVE_ASYNC_ENGINE);
	if (dreq->parent || dreq->track)
		return fk_fail(err, EINVAL,
			       "engine %s writes full snapshots: expected no parent or track_dirty",
			       LIVE_ASYNC_ENGINE);
	ret = live_async_snapshot(vm, path, wait, reply, err);
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "path", json_string(path));
	json_object_set_new(reply, "mode", json_string("live"));
	json_object_set_new(reply, "state", json_string(vm_is_paused(vm) ? "paused" : "running"));
	return 0;
}

static int cmd_snapshot(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	const char *path, *mode = NULL, *engine = NULL, *serve = NULL;
	bool resume = true, wait = true, live;
	struct diff_request dreq = {0};
	int ret;

	ret = control_arg_string(request, "path", true, &path, err);
	if (!ret)
		ret = control_arg_string(request, "parent", false, &dreq.parent, err);
	if (!ret)
		ret = control_arg_bool(request, "track_dirty", false, &dreq.track, err);
	if (!ret)
		ret = control_arg_bool(request, "resume", false, &resume, err);
	if (!ret)
		ret = control_arg_string(request, "mode", false, &mode, err);
	if (!ret)
		ret = control_arg_bool(request, "wait", false, &wait, err);
	if (!ret)
		ret = control_arg_string(request, "engine", false, &engine, err);
	if (!ret)
		ret = control_arg_string(request, "serve", false, &serve, err);
	if (ret < 0)
		return ret;
	if (serve && (!engine || strcmp(engine, "uffd-wp") != 0))
		return fk_fail(err, EINVAL, "serve: only with engine uffd-wp");
	if (engine && strcmp(engine, LIVE_ASYNC_ENGINE) == 0)
		return snapshot_live_async(vm, path, mode, wait, &dreq, reply, err);
	if (engine && strcmp(engine, "fork") != 0 && strcmp(engine, "uffd-wp") != 0)
		return fk_fail(err, EINVAL, "engine '%s': expected fork, uffd-wp or %s", engine,
			       LIVE_ASYNC_ENGINE);
	if (mode && strcmp(mode, "live") != 0 && strcmp(mode, "stop") != 0)
		return fk_fail(err, EINVAL, "mode '%s': expected live or stop", mode);
	/* A paused VM, or one to stay paused, has no running guest to snapshot live. */
	live = mode ? strcmp(mode, "live") == 0 : !vm_is_paused(vm) && resume;
	if (live && (vm_is_paused(vm) || !resume))
		return fk_fail(err, EINVAL,
			       "mode live: the VM %s; a live snapshot leaves it running (expected "
			       "mode stop)",
			       vm_is_paused(vm) ? "is paused" : "is to stay paused (resume false)");
	if (!live && !wait)
		return fk_fail(err, EINVAL,
			       "wait false: only a live snapshot is written in the background");
	if (engine && strcmp(engine, "fork") != 0) {
		/* A write-protect engine: docs/design/userfaultfd.md; its own file. */
		if (!live || dreq.parent || dreq.track)
			return fk_fail(err, EINVAL,
				       "engine %s: a live, full snapshot only (expected mode live, "
				       "no parent or track_dirty)",
				       engine);
		ret = uffd_live_snapshot(vm, path, wait, serve, reply, err);
	} else {
		ret = live ? snapshot_live(vm, path, wait, &dreq, reply, err)
			   : snapshot_stop(vm, path, resume, &dreq, reply, err);
	}
	if (ret < 0)
		return ret;
	json_object_set_new(reply, "engine", json_string(engine ? engine : "fork"));
	put_diff(vm, &dreq, reply);
	json_object_set_new(reply, "path", json_string(path));
	json_object_set_new(reply, "mode", json_string(live ? "live" : "stop"));
	json_object_set_new(reply, "state", json_string(vm_is_paused(vm) ? "paused" : "running"));
	return 0;
}

static int cmd_snapshot_status(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	const struct snapshot_job *j;
	const char *path;
	int ret;

	ret = control_arg_string(request, "path", true, &path, err);
	if (ret < 0)
		return ret;
	if (uffd_live_status(path, reply) == 0 || live_async_status(vm, path, reply))
		return 0;
	j = branch_snapshot_job(vm, path);
	if (!j)
		return fk_fail(err, ENOENT,
			       "path %s: no live snapshot of this VM was written there (the last "
			       "%d are kept)",
			       path, BRANCH_MAX_SNAPSHOT_JOBS);
	json_object_set_new(reply, "path", json_string(j->path));
	json_object_set_new(reply, "snapshot", json_string(persist_state_name(j->state)));
	json_object_set_new(reply, "pause_us", json_integer((json_int_t)j->pause_us));
	if (j->state == PERSIST_WRITING) {
		uint64_t bytes;

		if (snap_tmp_written_bytes(j->path, &bytes) == 0)
			json_object_set_new(reply, "written_bytes",
					    json_integer((json_int_t)bytes));
	} else {
		json_object_set_new(reply, "write_us", json_integer((json_int_t)j->write_us));
		json_object_set_new(reply, "hash_us", json_integer((json_int_t)j->hash_us));
	}
	if (j->state == PERSIST_FAILED)
		json_object_set_new(reply, "error", json_string(j->error));
	return 0;
}

static void put_children(json_t *reply, const struct branch_result *res)
{
	json_t *children = json_array();

	for (int i = 0; i < res->nr_children; i++) {
		char path[2400];
		json_t *c = json_object();
		json_object_set_new(c, "index", json_integer(res->children[i].index));
		json_object_set_new(c, "pid", json_integer(res->children[i].pid));
		snprintf(path, sizeof(path), "%s/child-%d", res->dir, res->children[i].index);
		json_object_set_new(c, "dir", json_string(path));
		json_array_append_new(children, c);
	}
	json_object_set_new(reply, "children", children);
}

int branch_request_parse(json_t *request, struct branch_request *req, struct fk_err *err)
{
	int64_t n = 1, pool = 0;
	int ret;

	memset(req, 0, sizeof(*req));
	ret = control_arg_int(request, "n", false, &n, err);
	if (!ret)
		ret = control_arg_string(request, "dir", false, &req->dir, err);
	if (!ret)
		ret = control_arg_string(request, "persist", false, &req->persist, err);
	if (!ret)
		ret = control_arg_bool(request, "wait", false, &req->wait, err);
	if (!ret)
		ret = control_arg_int(request, "pool", false, &pool, err);
	if (!ret)
		ret = control_arg_string(request, "parent", false, &req->parent, err);
	if (!ret)
		ret = control_arg_bool(request, "track_dirty", false, &req->track_dirty, err);
	if (ret < 0)
		return ret;
	if ((req->parent || req->track_dirty) && !req->persist)
		return fk_fail(err, EINVAL,
			       "%s without persist: a diff or dirty tracking is of a snapshot",
			       req->parent ? "parent" : "track_dirty");
	if (n < 0 || n > BRANCH_MAX_CHILDREN)
		return fk_fail(err, EINVAL, "n=%lld: expected 0..%d children", (long long)n,
			       BRANCH_MAX_CHILDREN);
	if (pool < 0 || pool > BRANCH_MAX_POOL)
		return fk_fail(err, EINVAL, "pool=%lld: expected 0..%d prebuilt children",
			       (long long)pool, BRANCH_MAX_POOL);
	if (n == 0 && !req->persist && pool == 0)
		return fk_fail(err, EINVAL,
			       "n=0 without persist or pool: expected children, a snapshot or a "
			       "pool");
	req->n = (int)n;
	req->pool = (int)pool;
	return 0;
}

static int cmd_branch(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	struct branch_request req;
	struct branch_result *res;
	int ret;

	ret = branch_request_parse(request, &req, err);
	if (ret < 0)
		return ret;
	res = malloc(sizeof(*res));
	if (!res)
		return fk_fail(err, ENOMEM, "branch: out of memory");
	ret = branch_vm(vm, &req, res, err);
	if (ret == 0) {
		json_object_set_new(reply, "zygote", json_integer(res->zygote_id));
		json_object_set_new(reply, "zygote_pid", json_integer(res->zygote_pid));
		json_object_set_new(reply, "dir", json_string(res->dir));
		json_object_set_new(reply, "pause_us", json_integer((json_int_t)res->pause_us));
		json_object_set_new(reply, "park_us", json_integer((json_int_t)res->park_us));
		json_object_set_new(reply, "capture_us", json_integer((json_int_t)res->capture_us));
		json_object_set_new(reply, "fork_us", json_integer((json_int_t)res->fork_us));
		json_object_set_new(reply, "disk_copy_us",
				    json_integer((json_int_t)res->disk_copy_us));
		put_children(reply, res);
		json_object_set_new(reply, "pool", json_integer(req.pool));
		if (req.persist) {
			struct diff_request dreq = {.parent = req.parent, .track = req.track_dirty};
			put_diff(vm, &dreq, reply);
			json_object_set_new(reply, "persist",
					    json_string(persist_state_name(res->persist)));
			if (res->persist == PERSIST_FAILED)
				json_object_set_new(reply, "persist_error",
						    json_string(res->persist_error));
		}
	}
	free(res);
	return ret;
}

static int cmd_zygote(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	const char *action;
	int64_t id = 0, n = 1;
	int ret;

	ret = control_arg_string(request, "action", true, &action, err);
	if (ret < 0)
		return ret;
	if (strcmp(action, "list") == 0) {
		json_t *list = json_array();
		for (int i = 0; i < BRANCH_MAX_ZYGOTES; i++) {
			const struct zygote *z = branch_zygotes(vm) ? &branch_zygotes(vm)[i] : NULL;
			if (!z || !z->in_use)
				continue;
			json_t *o = json_object();
			json_object_set_new(o, "zygote", json_integer(z->id));
			json_object_set_new(o, "pid", json_integer(z->pid));
			json_object_set_new(o, "dir", json_string(z->dir));
			json_object_set_new(o, "children", json_integer(z->nr_children));
			/* Prebuilt children kept parked, and how many of them are ready now. */
			json_object_set_new(o, "pool", json_integer(z->pool));
			json_object_set_new(o, "pool_ready", json_integer(z->pool_ready));
			if (z->pool_error[0])
				json_object_set_new(o, "pool_error", json_string(z->pool_error));
			json_object_set_new(o, "persist",
					    json_string(persist_state_name(z->persist)));
			if (z->persist != PERSIST_NONE)
				json_object_set_new(o, "persist_path",
						    json_string(z->persist_path));
			if (z->persist == PERSIST_FAILED)
				json_object_set_new(o, "persist_error",
						    json_string(z->persist_error));
			json_array_append_new(list, o);
		}
		json_object_set_new(reply, "zygotes", list);
		return 0;
	}
	ret = control_arg_int(request, "id", true, &id, err);
	if (ret < 0)
		return ret;
	if (strcmp(action, "release") == 0)
		return branch_release(vm, (int)id, err);
	if (strcmp(action, "spawn") == 0) {
		struct branch_result *res;
		ret = control_arg_int(request, "n", false, &n, err);
		if (ret < 0)
			return ret;
		if (n < 1 || n > BRANCH_MAX_CHILDREN)
			return fk_fail(err, EINVAL, "n=%lld: expected 1..%d children", (long long)n,
				       BRANCH_MAX_CHILDREN);
		res = malloc(sizeof(*res));
		if (!res)
			return fk_fail(err, ENOMEM, "zygote: out of memory");
		ret = branch_spawn(vm, (int)id, (int)n, res, err);
		if (ret == 0) {
			json_object_set_new(reply, "disk_copy_us",
					    json_integer((json_int_t)res->disk_copy_us));
			put_children(reply, res);
		}
		free(res);
		return ret;
	}
	return fk_fail(err, EINVAL, "action '%s': expected list, spawn or release", action);
}

/*
 * Gives the network device a tap of its own (a BRANCH child starts without
 * one), or with tap "" takes the link down.
 */
static int cmd_net_attach(void *opaque, json_t *request, json_t *reply, struct fk_err *err)
{
	struct vm *vm = opaque;
	const char *tap = NULL, *netns = NULL;
	int ret, fd = -1;

	ret = control_arg_string(request, "tap", true, &tap, err);
	if (!ret)
		ret = control_arg_string(request, "netns", false, &netns, err);
	if (ret < 0)
		return ret;
	if (!vm->net.dev)
		return fk_fail(err, ENODEV, "net-attach: this VM has no network device (--net)");
	if (*tap) {
		fd = tap_open(tap, netns, err);
		if (fd < 0)
			return fk_wrap(err, "net-attach");
	}
	ret = virtio_net_attach_tap(vm->net.dev, fd, tap, err);
	if (ret < 0)
		return fk_wrap(err, "net-attach");
	json_object_set_new(reply, "net_link_up", json_boolean(fd >= 0));
	return 0;
}

static const struct control_command vm_commands[] = {
    {"status", cmd_status, "state (running|paused), vcpus, mem_mib, disks, uptime_ms"},
    {"pause", cmd_pause, "stop all vCPUs at a safe point; replies with pause_us"},
    {"resume", cmd_resume, "run the vCPUs again"},
    {"shutdown", cmd_shutdown, "stop the VM; forkd-vmm exits with status 0"},
    {"snapshot", cmd_snapshot,
     "path: new directory; mode live (default: a BRANCH pause, written while the VM runs) or "
     "stop; wait (default true); resume (default true); track_dirty (arm dirty tracking here); "
     "parent (a diff: only the pages dirtied since that snapshot, this VM's last)"},
    {"snapshot-status", cmd_snapshot_status,
     "path: a live snapshot's state: writing, ready or failed (with error)"},
    {"branch", cmd_branch,
     "n (default 1), dir, persist (snapshot path), wait, pool (0..16 prebuilt children kept "
     "parked), parent and track_dirty (as snapshot's, for persist): N children continue from "
     "this instant"},
    {"zygote", cmd_zygote,
     "action: list | spawn (id, n; pooled children first) | release (id; its pool too)"},
    {"net-attach", cmd_net_attach,
     "tap (\"\" takes the link down), netns: give the network device a tap of its own"},
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
