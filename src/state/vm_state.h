/* SPDX-License-Identifier: MIT */
/*
 * Capturing and restoring the complete state of a paused VM: every vCPU
 * (regs, sregs, xsave, xcrs, LAPIC, all MSRs KVM lists, mp_state, events,
 * debug regs), the in-kernel PIC/IOAPIC/PIT, kvmclock, and every device.
 */
#ifndef FORKD_STATE_VM_STATE_H
#define FORKD_STATE_VM_STATE_H

#include "state/snapshot_format.h"
#include "core/vm.h"

/* Device types in SNAP_SEC_DEVICE sections. */
enum vm_device_type {
	VM_DEVICE_SERIAL = 1,
	VM_DEVICE_VIRTIO_BLK = 2,
	VM_DEVICE_VIRTIO_VSOCK = 3,
	VM_DEVICE_VIRTIO_NET = 4,
};

/*
 * DEVICE section instances: 0 the serial port, 1 + i disk i, and the vsock
 * device at a fixed instance clear of the disks, so that a snapshot without
 * one (older, or no --vsock) simply lacks the section.
 */
#define VM_DEVICE_INSTANCE_VSOCK 64
/* The virtio-net device, optional the same way (no --net, or an older snapshot). */
#define VM_DEVICE_INSTANCE_NET 65

/*
 * Where restored state comes from: a snapshot on disk (reader) or a capture
 * held in memory (writer, as a BRANCH zygote has it). disk_dir holds the
 * copies of writable disk images the state refers to.
 */
struct state_source {
	const struct snap_reader *reader;
	const struct snap_writer *writer;
	const char *disk_dir;
};

static inline int state_find(const struct state_source *src, uint32_t type, uint32_t instance,
			     const void **data, size_t *len)
{
	return src->reader ? snap_reader_find(src->reader, type, instance, data, len)
			   : snap_writer_find(src->writer, type, instance, data, len);
}

static inline int state_find_device(const struct state_source *src, uint32_t instance,
				    uint32_t *device_type, const void **data, size_t *len)
{
	return src->reader ? snap_reader_find_device(src->reader, instance, device_type, data, len)
			   : snap_writer_find_device(src->writer, instance, device_type, data, len);
}

/* Builds the list of MSRs this host lets us read back (KVM's index list, filtered). */
int vm_state_init_msr_list(struct vm *vm, struct fk_err *err);

/* Adds every state section of the paused VM to w (and its writable disks as files). */
int vm_state_save(struct vm *vm, struct snap_writer *w, struct fk_err *err);

/* Fills the host CPU identity of this VM (for the CPU_IDENTITY section and restore checks). */
int vm_state_cpu_identity(struct vm *vm, struct snap_cpu_identity *id, struct fk_err *err);

/* Restores vCPU and VM state from r into freshly created vCPUs/irqchip. */
int vm_state_restore_cpus(struct vm *vm, const struct state_source *src, struct fk_err *err);

#endif
