/* SPDX-License-Identifier: MIT */
/* One virtual machine: its KVM handles, memory, buses, devices and vCPUs. */
#ifndef FORKD_CORE_VM_H
#define FORKD_CORE_VM_H

#include <linux/kvm.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "agent/fork_notify.h"
#include "devices/acpi_pm.h"
#include "devices/serial.h"
#include "devices/virtio_blk.h"
#include "devices/virtio_mmio.h"
#include "devices/virtio_net.h"
#include "devices/virtio_vsock.h"
#include "core/bus.h"
#include "core/config.h"
#include "control/control.h"
#include "core/event_loop.h"
#include "core/guest_mem.h"

struct vm;
struct branch_state; /* src/branch/fork_engine.h */
struct live_async;   /* src/state/live_async.h */

/*
 * An engine that extends a VM (BRANCH) hooks in here: the core calls these
 * and never includes the engine; the engine sets them on its first use.
 */
struct vm_engine_ops {
	/* The VM is being destroyed: end what the engine holds for it. */
	void (*teardown)(struct vm *vm);
};

struct vcpu {
	struct vm *vm;
	int index;
	int fd;
	struct kvm_run *run;
	pthread_t thread;
	bool thread_started;
};

struct vm_disk {
	struct virtio_blk *blk;
	struct virtio_mmio transport;
	bool transport_ready;
	int notify_fd; /* ioeventfd on QueueNotify, -1 if KVM refused it */
	int irq_fd;    /* irqfd for the device's GSI */
};

/* The virtio-vsock device (--vsock), in the virtio-mmio window after the disks. */
struct vm_vsock {
	bool present; /* setup started: the fds below are valid (or -1) */
	struct virtio_vsock *dev;
	struct virtio_mmio transport;
	bool transport_ready;
	int irq_fd; /* irqfd for the device's GSI; its notify fds belong to dev */
	bool loop_watched;
};

/* The virtio-net device (--net), in the virtio-mmio window after the vsock device's. */
struct vm_net {
	bool present; /* setup started: the fds below are valid (or -1) */
	struct virtio_net *dev;
	struct virtio_mmio transport;
	bool transport_ready;
	int irq_fd; /* irqfd for the device's GSI; its notify fds belong to dev */
	bool loop_watched;
};

enum boot_protocol {
	BOOT_PROTOCOL_PVH = 0,	   /* ELF: 32-bit entry, hvm_start_info in EBX */
	BOOT_PROTOCOL_LINUX64 = 1, /* bzImage: 64-bit entry, boot_params in RSI */
};

struct vm {
	const struct vmm_config *cfg;
	int kvm_fd;
	int vm_fd;
	size_t vcpu_mmap_size;
	uint32_t tsc_khz;
	struct kvm_cpuid2 *supported_cpuid;

	struct guest_mem mem;
	struct bus pio;
	struct bus mmio;
	struct event_loop loop;

	struct serial serial;
	struct acpi_pm pm;
	int nr_disks;
	struct vm_disk disks[VMM_MAX_DISKS];
	struct vm_vsock vsock;
	struct vm_net net;
	/* A restored VM's or BRANCH child's notification to its guest agent (src/agent/). */
	struct fork_notify fork_notify;

	int nr_vcpus;
	struct vcpu *vcpus;

	/* Set once by whoever ends the VM first; read by the main thread. */
	atomic_bool stopping;
	atomic_int exit_status;
	int exit_eventfd;
	int signal_fd;	    /* SIGINT/SIGTERM/SIGHUP, read by the loop */
	int flush_timer_fd; /* serial flush and child reaping tick */
	char exit_reason[256];
	pthread_mutex_t exit_lock;

	uint64_t kernel_entry;
	enum boot_protocol boot_protocol;
	uint64_t rsdp_gpa;

	/*
	 * Pausing: vCPU threads park at a safe point (KVM_RUN returned EINTR,
	 * so any pending I/O instruction has completed) until resumed.
	 */
	pthread_mutex_t pause_lock;
	pthread_cond_t pause_changed;
	bool pause_requested;
	int nr_parked;
	uint64_t last_pause_us; /* request to all vCPUs parked, of the latest pause */

	uint64_t started_us;
	int ready_fd; /* --ready-fd until written, then -1 */
	struct control_server control;
	bool control_ready;

	/* MSRs saved in snapshots: KVM's index list, less those it cannot read back. */
	uint32_t *msr_indices;
	uint32_t nr_msrs;
	uint32_t msrs_skipped; /* MSRs this host refused at restore */
	size_t xsave_size;     /* bytes of a vCPU's XSAVE area (KVM_CAP_XSAVE2) */

	/* A restored VM runs from a configuration rebuilt from its snapshot. */
	struct vmm_config restored_cfg;
	bool restored;
	/* --restore-mode uffd: the hold on the page-fault handler (src/uffd/uffd_vmm.h), or NULL.
	 */
	struct uffd_watch *uffd;
	/* Dirty-page tracking for diff snapshots; NULL until armed (src/state/diff_track.c). */
	struct diff_track *diff;
	uint8_t genid[16];
	char overlay_dir[4096];
	bool overlay_dir_created;

	/* BRANCH's zygotes and state, NULL until the first branch (src/branch/). */
	struct branch_state *branch;
	const struct vm_engine_ops *branch_ops;
	/* Live snapshots of engine uffd-wp-async; NULL until the first (src/state/live_async.c). */
	struct live_async *live_async;
};

/* kvm.c */
int kvm_open(struct vm *vm, const char *path, struct fk_err *err);
int kvm_create_vm(struct vm *vm, struct fk_err *err);
int kvm_add_memslots(struct vm *vm, struct fk_err *err);
int kvm_irqfd(struct vm *vm, int fd, uint32_t gsi, struct fk_err *err);
int kvm_ioeventfd_mmio(struct vm *vm, int fd, uint64_t addr, uint32_t len, uint64_t datamatch,
		       struct fk_err *err);
void kvm_set_irq_level(void *vm, uint32_t gsi, int level);

/* cpuid.c: the CPUID table of vCPU index `cpu`. Caller frees. */
struct kvm_cpuid2 *cpuid_for_vcpu(const struct vm *vm, int cpu, struct fk_err *err);
/* Clears the CPUID bits of the features in `hide` (enum vmm_cpuid_hide) in place. */
void cpuid_hide(struct kvm_cpuid2 *c, unsigned hide);

/* vcpu.c */
int vcpu_create(struct vm *vm, int index, struct fk_err *err);
int vcpu_setup_pvh_bsp(struct vcpu *vcpu, uint64_t entry, uint64_t start_info, struct fk_err *err);
/* Long mode on the identity map and GDT boot_setup() wrote, RSI = boot_params. */
int vcpu_setup_linux64_bsp(struct vcpu *vcpu, uint64_t entry, uint64_t boot_params,
			   struct fk_err *err);
int vcpu_start(struct vcpu *vcpu, struct fk_err *err);
void vcpu_kick(struct vcpu *vcpu);
void vcpu_install_kick_handler(void);

/* vm_control.c: the control socket's commands. */
int vm_control_init(struct vm *vm, struct fk_err *err);
uint64_t monotonic_us(void);

/* vm.c */
/* Initialises a zeroed struct vm for cfg (locks, buses, signal handlers); no KVM yet. */
int vm_prepare(struct vm *vm, const struct vmm_config *cfg, struct fk_err *err);
int vm_setup_host(struct vm *vm, struct fk_err *err);
int vm_setup_devices(struct vm *vm, struct fk_err *err);
int vm_setup_disks(struct vm *vm, struct fk_err *err);
/* The vsock device of vm->cfg->vsock_path with vm->cfg->vsock_cid; call after the disks. */
int vm_setup_vsock(struct vm *vm, struct fk_err *err);
/*
 * The virtio-net device with MAC mac on tap_fd (owned from now on; -1: no
 * tap, link down) called tap_name; call after the vsock device.
 */
int vm_setup_net(struct vm *vm, const uint8_t mac[6], int tap_fd, const char *tap_name,
		 struct fk_err *err);
/* --net's tap (opened in its netns) and MAC, or a random one: for vm_setup_net. */
int vm_open_net_tap(const struct vmm_config *cfg, uint8_t mac[6], struct fk_err *err);
/*
 * The tap's fd: cfg->net_tap_fd when the tap came open (the caller's device
 * takes it over), else cfg->net_tap opened in cfg->net_netns.
 */
int vm_net_tap_fd(const struct vmm_config *cfg, struct fk_err *err);
int vm_create_vcpus(struct vm *vm, struct fk_err *err);
void vm_new_generation_id(struct vm *vm);
int vm_init(struct vm *vm, const struct vmm_config *cfg, struct fk_err *err);
int vm_run(struct vm *vm);
void vm_destroy(struct vm *vm);
/*
 * Stops every vCPU at a safe point and returns once all are parked; the
 * devices and event loop keep running. Returns -EALREADY if already paused.
 */
int vm_pause(struct vm *vm, struct fk_err *err);
int vm_resume(struct vm *vm, struct fk_err *err);
bool vm_is_paused(struct vm *vm);
/* Called by a vCPU thread after KVM_RUN returned EINTR. */
void vcpu_park_if_requested(struct vcpu *vcpu);

/* Ask the VM to end with `status`; the first caller wins. Thread-safe. */
void vm_request_exit(struct vm *vm, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
