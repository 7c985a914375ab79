/* SPDX-License-Identifier: MIT */
#include "state/vm_snapshot.h"
#include "state/diff_track.h"
#include "state/snapshot_diff.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/layout.h"
#include "devices/tap.h"
#include "state/vm_state.h"
#include "uffd/uffd_live.h"
#include "uffd/uffd_vmm.h"

#define VM_PARAMS_VERSION 1

/* SNAP_SEC_OPAQUE instance 0: what the rest of the snapshot is about. */
struct vm_params {
	uint32_t version;
	uint32_t nr_disks;
	uint32_t tsc_khz;
	uint32_t reserved;
};

/* DEVICE section payload of a virtio-blk disk. */
struct disk_state {
	struct virtio_mmio_state transport;
	uint32_t readonly;
	uint32_t has_copy; /* a copy of the image is in the snapshot as `file` */
	char id[24];
	char file[SNAP_FILE_NAME_LEN];
	char path[4096]; /* the image the VM used; read-only disks are reopened from here */
};

#define VSOCK_STATE_VERSION 2

/*
 * DEVICE section payload of the vsock device. Connections are not saved:
 * a restored device starts without any and tells the guest so. Version 2
 * added next_host_port (version 1 ends before it and restores with the
 * first host port, as before).
 */
struct vsock_state {
	uint32_t version;
	uint32_t gsi;
	uint64_t guest_cid;
	uint64_t mmio_base;
	struct virtio_mmio_state transport;
	uint32_t next_host_port;
	uint32_t reserved;
};

#define VSOCK_STATE_V1_SIZE offsetof(struct vsock_state, next_host_port)

#define NET_STATE_VERSION 1

/*
 * DEVICE section payload of the virtio-net device: where it sits, its MAC
 * and the transport (features, queues). Not the tap: a restored VM gets
 * the tap of its own --net, or none (link down); a packet the device held
 * for want of rx buffers is lost, as on a wire.
 */
struct net_state {
	uint32_t version;
	uint32_t gsi;
	uint64_t mmio_base;
	uint8_t mac[6];
	uint8_t reserved[2];
	struct virtio_mmio_state transport;
};

static uint32_t queued_requests(const struct vm *vm, const struct virtio_mmio_state *st)
{
	uint32_t n = 0;

	for (int q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
		const struct virtq *vq = &st->queues[q];
		uint16_t avail_idx;

		if (!vq->ready || guest_mem_read(&vm->mem, vq->avail_gpa + 2, &avail_idx, 2) < 0)
			continue;
		n += (uint16_t)(avail_idx - vq->last_avail_idx);
	}
	return n;
}

uint32_t vm_snapshot_inflight(const struct vm *vm)
{
	uint32_t n = 0;

	for (int i = 0; i < vm->nr_disks; i++)
		n += queued_requests(vm, &vm->disks[i].transport.state);
	return n;
}

static int save_vsock(struct vm *vm, struct snap_writer *w, struct fk_err *err)
{
	struct virtio_mmio *t = &vm->vsock.transport;
	struct vsock_state vs = {.version = VSOCK_STATE_VERSION,
				 .gsi = t->irq.gsi,
				 .guest_cid = virtio_vsock_guest_cid(vm->vsock.dev),
				 .mmio_base = t->base,
				 .next_host_port = virtio_vsock_next_host_port(vm->vsock.dev)};

	pthread_mutex_lock(&t->lock);
	vs.transport = t->state;
	pthread_mutex_unlock(&t->lock);
	return snap_writer_add_device(w, VM_DEVICE_INSTANCE_VSOCK, VM_DEVICE_VIRTIO_VSOCK, &vs,
				      sizeof(vs), err);
}

static int save_net(struct vm *vm, struct snap_writer *w, struct fk_err *err)
{
	struct virtio_mmio *t = &vm->net.transport;
	struct net_state ns = {
	    .version = NET_STATE_VERSION, .gsi = t->irq.gsi, .mmio_base = t->base};

	virtio_net_get_mac(vm->net.dev, ns.mac);
	pthread_mutex_lock(&t->lock);
	ns.transport = t->state;
	pthread_mutex_unlock(&t->lock);
	return snap_writer_add_device(w, VM_DEVICE_INSTANCE_NET, VM_DEVICE_VIRTIO_NET, &ns,
				      sizeof(ns), err);
}

int vm_snapshot_save_devices(struct vm *vm, struct snap_writer *w, struct fk_err *err)
{
	struct vm_params params = {.version = VM_PARAMS_VERSION,
				   .nr_disks = (uint32_t)vm->nr_disks,
				   .tsc_khz = vm->tsc_khz};
	struct disk_state *ds;
	struct serial_state ss;
	int ret;

	ret = snap_writer_add(w, SNAP_SEC_OPAQUE, 0, &params, sizeof(params), err);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&vm->serial.lock);
	ss = vm->serial.state;
	pthread_mutex_unlock(&vm->serial.lock);
	ret = snap_writer_add_device(w, 0, VM_DEVICE_SERIAL, &ss, sizeof(ss), err);
	if (ret < 0)
		return ret;

	ds = malloc(sizeof(*ds));
	if (!ds)
		return fk_fail(err, ENOMEM, "snapshot: out of memory");
	for (int i = 0; i < vm->nr_disks; i++) {
		struct vm_disk *d = &vm->disks[i];
		const struct vmm_disk_config *dc = &vm->cfg->disks[i];

		memset(ds, 0, sizeof(*ds));
		pthread_mutex_lock(&d->transport.lock);
		ds->transport = d->transport.state;
		pthread_mutex_unlock(&d->transport.lock);
		ds->readonly = dc->readonly;
		snprintf(ds->id, sizeof(ds->id), "%s", dc->id);
		snprintf(ds->path, sizeof(ds->path), "%s", dc->path);
		/* A writable image changes after the snapshot: keep a copy of it as it is now. */
		if (!dc->readonly) {
			snprintf(ds->file, sizeof(ds->file), "disk%d.img", i);
			ds->has_copy = 1;
			ret = snap_writer_add_file(w, ds->file, virtio_blk_fd(d->blk), err);
			if (ret < 0)
				break;
		}
		ret = snap_writer_add_device(w, (uint32_t)(1 + i), VM_DEVICE_VIRTIO_BLK, ds,
					     sizeof(*ds), err);
		if (ret < 0)
			break;
	}
	free(ds);
	if (ret == 0 && vm->vsock.transport_ready)
		ret = save_vsock(vm, w, err);
	if (ret == 0 && vm->net.transport_ready)
		ret = save_net(vm, w, err);
	return ret;
}

int vm_snapshot_take(struct vm *vm, const char *dir, bool resume, struct vm_snapshot_result *res,
		     struct fk_err *err)
{
	return vm_snapshot_take_diff(vm, dir, resume, NULL, res, err);
}

int vm_snapshot_take_diff(struct vm *vm, const char *dir, bool resume,
			  const struct diff_request *dreq, struct vm_snapshot_result *res,
			  struct fk_err *err)
{
	struct snap_mem_region regions[GUEST_MEM_MAX_REGIONS];
	struct snap_memory_source src = {.regions = regions, .nr_regions = 0};
	bool was_paused = vm_is_paused(vm);
	struct snap_writer w;
	uint64_t t0, t1, t2;
	int ret;

	memset(res, 0, sizeof(*res));
	t0 = monotonic_us();
	if (!was_paused) {
		ret = vm_pause(vm, err);
		if (ret < 0)
			return ret;
	}
	t1 = monotonic_us();
	snap_writer_init(&w, (uint32_t)vm->nr_vcpus);
	ret = vm_state_save(vm, &w, err);
	if (ret == 0)
		ret = diff_track_snapshot(vm, dir, dreq, &w, err);
	if (ret < 0)
		goto out;
	res->inflight = vm_snapshot_inflight(vm);
	t2 = monotonic_us();
	for (int i = 0; i < vm->mem.nr_regions; i++)
		regions[i] = (struct snap_mem_region){.gpa = vm->mem.regions[i].gpa,
						      .size = vm->mem.regions[i].size,
						      .host = vm->mem.regions[i].hva};
	src.nr_regions = (uint32_t)vm->mem.nr_regions;
	ret = snap_writer_commit(&w, dir, &src, err);
	res->hash_us = w.stats.hash_us;
	res->data_bytes = w.stats.data_bytes;
	res->capture_us = t2 - t1;
	res->write_us = monotonic_us() - t2;
	res->mem_bytes = vm->mem.total_size;
out:
	snap_writer_free(&w);
	if (!was_paused && resume) {
		struct fk_err ignored;
		vm_resume(vm, &ignored);
	}
	res->pause_us = monotonic_us() - t0;
	if (ret < 0)
		return fk_wrap(err, "snapshot %s", dir);
	return 0;
}

static int check_layout(const struct snap_vm_info *info, struct fk_err *err)
{
	uint64_t low =
	    info->mem_size < GUEST_MMIO_HOLE_START ? info->mem_size : GUEST_MMIO_HOLE_START;
	uint32_t want = info->mem_size > low ? 2 : 1;

	if (info->mem_size < VMM_MIN_MEM || info->mem_size > VMM_MAX_MEM ||
	    info->mem_size % (1ULL << 20))
		return fk_fail(err, EINVAL, "memory size %llu is not one forkd-vmm supports",
			       (unsigned long long)info->mem_size);
	if (info->nr_regions != want || info->regions[0].gpa != 0 || info->regions[0].size != low ||
	    info->regions[0].file_offset != 0 ||
	    (want == 2 && (info->regions[1].gpa != GUEST_MMIO_HOLE_END ||
			   info->regions[1].size != info->mem_size - low ||
			   info->regions[1].file_offset != low)))
		return fk_fail(err, EINVAL, "memory layout does not match forkd-vmm's for %llu MiB",
			       (unsigned long long)(info->mem_size >> 20));
	return 0;
}

static int check_cpu(struct vm *vm, const struct snap_reader *r, struct fk_err *err)
{
	struct snap_cpu_identity saved, now;
	const void *data;
	size_t len;
	int ret;

	if (snap_reader_find(r, SNAP_SEC_CPU_IDENTITY, 0, &data, &len) < 0)
		return fk_fail(err, EINVAL, "no CPU identity section");
	ret = snap_cpu_identity_decode(data, len, &saved, err);
	if (ret < 0)
		return ret;
	ret = vm_state_cpu_identity(vm, &now, err);
	if (ret == 0) {
		ret = snap_cpu_check_compat(&saved.host, &now.host, err);
		snap_cpu_identity_free(&now);
	}
	snap_cpu_identity_free(&saved);
	return ret;
}

/* Private copies of the snapshot's writable disks go to the overlay directory. */
static int prepare_overlay_dir(struct vm *vm, bool *created, struct fk_err *err)
{
	const char *tmp = getenv("TMPDIR");

	*created = false;
	if (vm->cfg->overlay_dir) {
		snprintf(vm->overlay_dir, sizeof(vm->overlay_dir), "%s", vm->cfg->overlay_dir);
		if (mkdir(vm->overlay_dir, 0700) == 0)
			*created = true;
		else if (errno != EEXIST)
			return fk_fail_errno(err, errno, "--overlay-dir %s: cannot create",
					     vm->overlay_dir);
		return 0;
	}
	snprintf(vm->overlay_dir, sizeof(vm->overlay_dir), "%s/forkd-overlay-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(vm->overlay_dir))
		return fk_fail_errno(err, errno, "overlay directory %s: cannot create",
				     vm->overlay_dir);
	*created = true;
	return 0;
}

int vm_snapshot_readonly_images(const char *dir, int (*fn)(const char *path, void *opaque),
				void *opaque, struct fk_err *err)
{
	struct snap_reader *r;
	struct disk_state ds;
	const void *data;
	uint32_t type;
	size_t len;
	int ret;

	ret = snap_reader_open(dir, &r, err);
	if (ret < 0)
		return ret;
	for (uint32_t i = 0; ret == 0 && i < VMM_MAX_DISKS; i++) {
		if (snap_reader_find_device(r, 1 + i, &type, &data, &len) < 0)
			break;
		if (type != VM_DEVICE_VIRTIO_BLK || len != sizeof(ds)) {
			ret = fk_fail(err, EINVAL, "disk %u: state of the wrong type or size", i);
			break;
		}
		memcpy(&ds, data, sizeof(ds));
		ds.path[sizeof(ds.path) - 1] = '\0';
		if (!ds.has_copy && ds.path[0])
			ret = fn(ds.path, opaque);
	}
	snap_reader_close(r);
	return ret;
}

/* A restore that fails leaves nothing behind: the overlay copies it made go again. */
static void remove_overlays(struct vm *vm, int nr_disks, bool dir_created)
{
	for (int i = 0; i < nr_disks; i++) {
		char path[4200];
		snprintf(path, sizeof(path), "%.4000s/disk%d.img", vm->overlay_dir, i);
		unlink(path);
	}
	if (dir_created)
		rmdir(vm->overlay_dir);
}

static int restore_disk_config(struct vm *vm, const struct state_source *src, int i,
			       struct disk_state *ds, struct fk_err *err)
{
	struct vmm_disk_config *dc = &vm->restored_cfg.disks[i];
	char from[4200];
	uint32_t type;
	const void *data;
	size_t len;
	int in, out, ret;

	if (state_find_device(src, (uint32_t)(1 + i), &type, &data, &len) < 0 ||
	    type != VM_DEVICE_VIRTIO_BLK || len != sizeof(*ds))
		return fk_fail(err, EINVAL, "disk %d: state missing or of the wrong size", i);
	memcpy(ds, data, sizeof(*ds));
	ds->id[sizeof(ds->id) - 1] = ds->file[sizeof(ds->file) - 1] = '\0';
	ds->path[sizeof(ds->path) - 1] = '\0';
	dc->readonly = ds->readonly != 0;
	snprintf(dc->id, sizeof(dc->id), "%.20s", ds->id);
	if (!ds->has_copy) {
		if (access(ds->path, R_OK) < 0)
			return fk_fail_errno(err, errno, "disk %d: read-only image %s", i,
					     ds->path);
		snprintf(dc->path, sizeof(dc->path), "%s", ds->path);
		return 0;
	}
	if (strchr(ds->file, '/') || ds->file[0] == '.' || !ds->file[0])
		return fk_fail(err, EINVAL, "disk %d: bad image file name in the snapshot", i);
	snprintf(from, sizeof(from), "%s/%s", src->disk_dir, ds->file);
	if (strlen(vm->overlay_dir) > sizeof(dc->path) - 32)
		return fk_fail(err, ENAMETOOLONG, "overlay directory path is too long");
	snprintf(dc->path, sizeof(dc->path), "%.4000s/disk%d.img", vm->overlay_dir, i);
	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return fk_fail_errno(err, errno, "disk %d: image %s", i, from);
	out = open(dc->path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		ret = fk_fail_errno(err, errno, "disk %d: overlay %s", i, dc->path);
		close(in);
		return ret;
	}
	ret = snap_copy_fd(in, out, err);
	close(in);
	close(out);
	return ret < 0 ? fk_wrap(err, "disk %d: copy %s to %s", i, from, dc->path) : 0;
}

/* Checks a saved transport state against this VM's memory and installs it. */
static int restore_transport(struct vm *vm, struct virtio_mmio *t,
			     const struct virtio_mmio_state *st, struct fk_err *err)
{
	if (st->queue_sel >= VIRTIO_MMIO_MAX_QUEUES)
		return fk_fail(err, EINVAL, "queue_sel out of range");
	for (int q = 0; q < VIRTIO_MMIO_MAX_QUEUES; q++) {
		if (q >= t->ops->num_queues && st->queues[q].ready)
			return fk_fail(err, EINVAL, "queue %d is ready but does not exist", q);
		if (st->queues[q].ready &&
		    virtq_check_rings(&vm->mem, &st->queues[q], t->ops->queue_max_size, err) < 0)
			return fk_wrap(err, "queue %d", q);
	}
	pthread_mutex_lock(&t->lock);
	t->state = *st;
	pthread_mutex_unlock(&t->lock);
	return 0;
}

/*
 * The vsock device comes back with its transport state and cid but no
 * connections; its socket path is this VM's own (--vsock, or the BRANCH
 * child's directory), never the snapshot's.
 */
static int restore_vsock(struct vm *vm, const struct state_source *src, struct fk_err *err)
{
	const char *path = vm->restored_cfg.vsock_path;
	struct vsock_state vs;
	const void *data;
	uint32_t type;
	size_t len;
	int ret;

	if (state_find_device(src, VM_DEVICE_INSTANCE_VSOCK, &type, &data, &len) < 0) {
		if (path[0])
			return fk_fail(err, EINVAL,
				       "--vsock %s: the snapshot has no vsock device (a device "
				       "cannot be added to a saved guest)",
				       path);
		return 0;
	}
	if (type != VM_DEVICE_VIRTIO_VSOCK || (len != sizeof(vs) && len != VSOCK_STATE_V1_SIZE))
		return fk_fail(err, EINVAL,
			       "vsock state of type %u and %zu bytes: expected type %u of %zu or "
			       "%zu bytes",
			       type, len, VM_DEVICE_VIRTIO_VSOCK, sizeof(vs), VSOCK_STATE_V1_SIZE);
	memset(&vs, 0, sizeof(vs));
	memcpy(&vs, data, len);
	if (!(vs.version == VSOCK_STATE_VERSION && len == sizeof(vs)) &&
	    !(vs.version == 1 && len == VSOCK_STATE_V1_SIZE))
		return fk_fail(err, EINVAL,
			       "vsock state version %u in %zu bytes: expected version %u (%zu "
			       "bytes) or 1 (%zu bytes)",
			       vs.version, len, VSOCK_STATE_VERSION, sizeof(vs),
			       VSOCK_STATE_V1_SIZE);
	if (!path[0])
		return fk_fail(err, EINVAL,
			       "the snapshot has a vsock device (guest cid %llu): expected "
			       "--vsock PATH for its host socket",
			       (unsigned long long)vs.guest_cid);
	if (vs.guest_cid < VMM_VSOCK_MIN_CID || vs.guest_cid > VMM_VSOCK_MAX_CID)
		return fk_fail(err, EINVAL, "vsock state: guest cid %llu out of range",
			       (unsigned long long)vs.guest_cid);
	/* The guest re-reads its cid after the transport reset, so --vsock may change it. */
	if (!vm->restored_cfg.vsock_cid_given)
		vm->restored_cfg.vsock_cid = vs.guest_cid;
	ret = vm_setup_vsock(vm, err);
	if (ret < 0)
		return ret;
	if (vm->vsock.transport.base != vs.mmio_base || vm->vsock.transport.irq.gsi != vs.gsi)
		return fk_fail(err, EINVAL,
			       "vsock state: device at 0x%llx GSI %u, but this VM puts it at "
			       "0x%llx GSI %u",
			       (unsigned long long)vs.mmio_base, vs.gsi,
			       (unsigned long long)vm->vsock.transport.base,
			       vm->vsock.transport.irq.gsi);
	ret = restore_transport(vm, &vm->vsock.transport, &vs.transport, err);
	if (ret < 0)
		return fk_wrap(err, "vsock state");
	/* Version 1 (0 here) starts at the first host port, as it always did. */
	virtio_vsock_restored(vm->vsock.dev, vs.next_host_port);
	return 0;
}

/*
 * The network device comes back with its MAC and transport state on the
 * tap of this VM's own --net, or with none: link down until one is
 * attached (a BRANCH child never gets its source's tap).
 */
static int restore_net(struct vm *vm, const struct state_source *src, struct fk_err *err)
{
	const struct vmm_config *cfg = &vm->restored_cfg;
	struct net_state ns;
	const void *data;
	uint32_t type;
	size_t len;
	int ret, fd = -1;

	if (state_find_device(src, VM_DEVICE_INSTANCE_NET, &type, &data, &len) < 0) {
		if (cfg->net_tap[0])
			return fk_fail(err, EINVAL,
				       "--net tap=%s: the snapshot has no network device (a "
				       "device cannot be added to a saved guest)",
				       cfg->net_tap);
		return 0;
	}
	if (type != VM_DEVICE_VIRTIO_NET || len != sizeof(ns))
		return fk_fail(err, EINVAL, "net state of the wrong type or size");
	memcpy(&ns, data, sizeof(ns));
	if (ns.version != NET_STATE_VERSION)
		return fk_fail(err, EINVAL, "net state version %u, expected %u", ns.version,
			       NET_STATE_VERSION);
	if (ns.mac[0] & 1)
		return fk_fail(err, EINVAL, "net state: MAC is a multicast address");
	if (cfg->net_mac_given)
		return fk_fail(err, EINVAL,
			       "--net mac=: a restored guest keeps its snapshot's MAC "
			       "%02x:%02x:%02x:%02x:%02x:%02x",
			       ns.mac[0], ns.mac[1], ns.mac[2], ns.mac[3], ns.mac[4], ns.mac[5]);
	if (cfg->net_tap[0]) {
		fd = vm_net_tap_fd(cfg, err);
		if (fd < 0)
			return fk_wrap(err, "--net");
	}
	ret = vm_setup_net(vm, ns.mac, fd, cfg->net_tap, err);
	if (ret < 0)
		return ret;
	if (vm->net.transport.base != ns.mmio_base || vm->net.transport.irq.gsi != ns.gsi)
		return fk_fail(err, EINVAL,
			       "net state: device at 0x%llx GSI %u, but this VM puts it at 0x%llx "
			       "GSI %u",
			       (unsigned long long)ns.mmio_base, ns.gsi,
			       (unsigned long long)vm->net.transport.base,
			       vm->net.transport.irq.gsi);
	ret = restore_transport(vm, &vm->net.transport, &ns.transport, err);
	return ret < 0 ? fk_wrap(err, "net state") : 0;
}

static int restore_devices(struct vm *vm, const struct state_source *src, uint32_t nr_disks,
			   struct fk_err *err)
{
	struct disk_state *states = NULL;
	bool dir_created = false;
	struct serial_state ss;
	const void *data;
	uint32_t type;
	size_t len;
	int ret;

	if (state_find_device(src, 0, &type, &data, &len) < 0 || type != VM_DEVICE_SERIAL ||
	    len != sizeof(ss))
		return fk_fail(err, EINVAL, "serial state missing or of the wrong size");
	memcpy(&ss, data, sizeof(ss));
	if (ss.rx_head >= SERIAL_RX_FIFO_SIZE || ss.rx_count > SERIAL_RX_FIFO_SIZE)
		return fk_fail(err, EINVAL, "serial state: receive FIFO indices out of range");
	pthread_mutex_lock(&vm->serial.lock);
	vm->serial.state = ss;
	pthread_mutex_unlock(&vm->serial.lock);

	if (nr_disks > VMM_MAX_DISKS)
		return fk_fail(err, EINVAL, "%u disks, at most %d", nr_disks, VMM_MAX_DISKS);
	if (nr_disks) {
		states = calloc(nr_disks, sizeof(*states));
		if (!states)
			return fk_fail(err, ENOMEM, "restore: out of memory");
		ret = prepare_overlay_dir(vm, &dir_created, err);
		for (uint32_t i = 0; !ret && i < nr_disks; i++)
			ret = restore_disk_config(vm, src, (int)i, &states[i], err);
		if (ret < 0)
			goto out;
	}
	vm->restored_cfg.nr_disks = (int)nr_disks;
	ret = vm_setup_disks(vm, err);
	if (ret < 0)
		goto out;
	for (uint32_t i = 0; i < nr_disks; i++) {
		ret = restore_transport(vm, &vm->disks[i].transport, &states[i].transport, err);
		if (ret < 0) {
			fk_wrap(err, "disk %u state", i);
			goto out;
		}
	}
	ret = restore_vsock(vm, src, err);
	if (ret == 0)
		ret = restore_net(vm, src, err);
out:
	if (ret < 0 && nr_disks)
		remove_overlays(vm, (int)nr_disks, dir_created);
	vm->overlay_dir_created = dir_created;
	free(states);
	return ret;
}

static int read_params(const struct state_source *src, struct vm_params *params, struct fk_err *err)
{
	const void *data;
	size_t len;

	if (state_find(src, SNAP_SEC_OPAQUE, 0, &data, &len) < 0 || len != sizeof(*params))
		return fk_fail(err, EINVAL, "VM parameters missing or of the wrong size");
	memcpy(params, data, sizeof(*params));
	if (params->version != VM_PARAMS_VERSION)
		return fk_fail(err, EINVAL, "VM parameters version %u, expected %u",
			       params->version, VM_PARAMS_VERSION);
	return 0;
}

int vm_rebuild(struct vm *vm, const struct state_source *src, struct fk_err *err)
{
	struct vm_params params;
	int ret;

	ret = read_params(src, &params, err);
	if (ret < 0)
		return ret;
	ret = vm_setup_devices(vm, err);
	if (ret < 0)
		return ret;
	ret = restore_devices(vm, src, params.nr_disks, err);
	if (ret < 0)
		return ret;
	/* A restored or branched VM is a new VM: it must not share the generation ID (brief §7). */
	vm_new_generation_id(vm);
	ret = vm_create_vcpus(vm, err);
	if (ret < 0)
		return ret;
	ret = vm_state_restore_cpus(vm, src, err);
	if (ret < 0)
		return ret;
	vm->restored = true;
	return 0;
}

/* The handler exited under the VM: pages it had not served are lost, so the VM stops. */
static void on_uffd_handler_lost(void *opaque)
{
	struct vm *vm = opaque;

	vm_request_exit(vm, VMM_EXIT_ERROR,
			"uffd handler %s exited before the VM: guest memory it had not served "
			"yet is lost, stopping the VM",
			vm->cfg->uffd_handler);
}

/* --restore-mode uffd: anonymous RAM, registered, handed to the handler, watched. */
static int restore_uffd_memory(struct vm *vm, uint64_t mem_size, struct fk_err *err)
{
	int ret = guest_mem_init(&vm->mem, GUEST_MEM_UFFD, mem_size, err);

	if (ret < 0)
		return ret;
	vm->uffd = calloc(1, sizeof(*vm->uffd));
	if (!vm->uffd)
		return fk_fail(err, ENOMEM, "uffd: out of memory");
	ret = uffd_vmm_attach(&vm->mem, vm->cfg->uffd_handler, vm->uffd, err);
	if (ret < 0)
		return ret;
	return uffd_watch_start(vm->uffd, on_uffd_handler_lost, vm, err);
}

int vm_restore_init(struct vm *vm, struct fk_err *err)
{
	const struct vmm_config *cfg = vm->cfg;
	const char *dir = cfg->restore_dir;
	const struct snap_vm_info *info;
	struct snap_chain *chain = NULL;
	struct snap_reader *r = NULL;
	struct state_source src;
	struct vm_params params;
	int ret, fd;

	/* A uffd-wp snapshot still being copied: its memory comes only from that live handler. */
	if (!cfg->uffd_handler && uffd_live_dir_is_live(dir))
		return fk_fail(
		    err, EINVAL,
		    "restore snapshot %s: still being written by a uffd-wp live snapshot; "
		    "its memory file is not there yet (expected --restore-mode uffd "
		    "--uffd-handler with the socket in %s/%s)",
		    dir, dir, UFFD_LIVE_MARKER);
	/* A diff opens its whole chain: each parent present and unchanged. */
	ret = snap_chain_open(dir, &chain, err);
	if (ret < 0)
		return fk_wrap(err, "restore snapshot %s", dir);
	r = chain->r[0];
	/* Opt-in: reading the whole memory file up front is what a lazy restore avoids. */
	for (int i = 0; cfg->restore_verify && i < chain->n; i++) {
		struct snap_verify_stats vs;

		ret = snap_verify_memory(chain->r[i], &vs, err);
		if (ret < 0) {
			fk_wrap(err, "--verify");
			goto out;
		}
	}
	if (cfg->restore_prewarm) {
		struct snap_prewarm_stats ps;

		ret = snap_prewarm_fd(snap_chain_base_fd(chain),
				      snap_reader_memory_path(chain->r[chain->n - 1]), &ps, err);
		if (ret < 0) {
			fk_wrap(err, "--prewarm");
			goto out;
		}
	}
	info = snap_reader_vm_info(r);
	ret = check_layout(info, err);
	if (ret < 0)
		goto out;
	if (cfg->mem_given && cfg->mem_size != info->mem_size) {
		ret = fk_fail(err, EINVAL, "--mem %llu MiB does not match the snapshot's %llu MiB",
			      (unsigned long long)(cfg->mem_size >> 20),
			      (unsigned long long)(info->mem_size >> 20));
		goto out;
	}
	if (cfg->cpus_given && (uint32_t)cfg->nr_cpus != info->nr_vcpus) {
		ret = fk_fail(err, EINVAL, "--cpus %d does not match the snapshot's %u vCPUs",
			      cfg->nr_cpus, info->nr_vcpus);
		goto out;
	}
	if (info->nr_vcpus < 1 || info->nr_vcpus > VMM_MAX_CPUS) {
		ret = fk_fail(err, EINVAL, "%u vCPUs is out of range", info->nr_vcpus);
		goto out;
	}
	src = (struct state_source){.reader = r, .disk_dir = dir};
	ret = read_params(&src, &params, err);
	if (ret < 0)
		goto out;

	vm->restored_cfg = *cfg;
	vm->restored_cfg.mem_size = info->mem_size;
	vm->restored_cfg.nr_cpus = (int)info->nr_vcpus;
	vm->restored_cfg.nr_disks = 0;
	vm->cfg = &vm->restored_cfg;
	vm->nr_vcpus = (int)info->nr_vcpus;

	ret = vm_setup_host(vm, err);
	if (ret < 0)
		goto out;
	ret = check_cpu(vm, r, err);
	if (ret < 0)
		goto out;
	/* The base copy-on-write, then each diff's pages over it: no full copy. */
	fd = snap_chain_base_fd(chain);
	if (cfg->uffd_handler && chain->n > 1)
		ret =
		    fk_fail(err, EOPNOTSUPP,
			    "--restore-mode uffd: %s is a diff snapshot (%d links) and the handler "
			    "serves one full memory file; compact it (forkd snapshot compact) or "
			    "restore it with --restore-mode file",
			    dir, chain->n);
	else if (cfg->uffd_handler)
		ret = restore_uffd_memory(vm, info->mem_size, err);
	else
		ret = guest_mem_init_file(&vm->mem, fd, info->mem_size, err);
	if (ret < 0)
		goto out;
	ret = snap_chain_overlay(chain, vm->mem.mapping, info->mem_size, NULL, err);
	if (ret < 0)
		goto out;
	ret = kvm_add_memslots(vm, err);
	if (ret < 0)
		goto out;
	ret = vm_rebuild(vm, &src, err);
out:
	if (ret < 0 && vm->restored_cfg.nr_disks)
		remove_overlays(vm, vm->restored_cfg.nr_disks, vm->overlay_dir_created);
	snap_chain_close(chain);
	if (ret < 0 && !strstr(err->msg, dir))
		fk_wrap(err, "restore snapshot %s", dir);
	return ret;
}

void vm_restore_started(struct vm *vm)
{
	/* Tell the guest its generation ID changed (the GED's _EVT notifies VGEN). */
	kvm_set_irq_level(vm, LAYOUT_GED_GSI, 1);
	kvm_set_irq_level(vm, LAYOUT_GED_GSI, 0);
	/* Requests the guest queued before the snapshot lost their notification: serve them. */
	for (int i = 0; i < vm->nr_disks; i++)
		virtio_mmio_notify(&vm->disks[i].transport, 0);
	if (vm->net.dev)
		virtio_net_restored(vm->net.dev);
	/* The guest's vsock sockets are gone: TRANSPORT_RESET, and RSTs for stale packets. */
	if (vm->vsock.dev) {
		struct fk_err err = {0};

		virtio_vsock_kick(vm->vsock.dev);
		/*
		 * The guest agent, if there is one, refuses exec until it has fresh
		 * entropy, time and identity for this generation: send them.
		 */
		if (fork_notify_start(&vm->fork_notify, virtio_vsock_path(vm->vsock.dev), vm->genid,
				      FORK_NOTIFY_TIMEOUT_MS, &err) < 0)
			fprintf(stderr, "forkd-vmm: %s\n", err.msg);
	}
}
