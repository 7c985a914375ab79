/* SPDX-License-Identifier: MIT */
/*
 * vCPUs: creation, initial state, and the run loop. Each vCPU thread runs
 * KVM_RUN and dispatches I/O and MMIO exits to the buses. A vCPU is kicked
 * out of the guest by setting immediate_exit and sending SIGUSR1 (whose
 * handler does nothing): setting the flag first closes the race with a
 * signal that lands just before KVM_RUN.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "boot/bzimage_boot.h"
#include "core/layout.h"
#include "core/vm.h"
#include "jail/seccomp.h"

#define VCPU_KICK_SIGNAL SIGUSR1

#define MSR_IA32_SYSENTER_CS  0x174
#define MSR_IA32_SYSENTER_ESP 0x175
#define MSR_IA32_SYSENTER_EIP 0x176
#define MSR_IA32_MISC_ENABLE  0x1a0
#define MSR_MTRR_DEF_TYPE     0x2ff
#define MSR_STAR	      0xc0000081
#define MSR_LSTAR	      0xc0000082
#define MSR_CSTAR	      0xc0000083
#define MSR_SYSCALL_MASK      0xc0000084
#define MSR_KERNEL_GS_BASE    0xc0000102

#define CR0_PE	 0x1ULL
#define CR0_ET	 0x10ULL
#define CR0_PG	 0x80000000ULL
#define CR4_PAE	 0x20ULL
#define EFER_LME 0x100ULL
#define EFER_LMA 0x400ULL

#define MISC_ENABLE_FAST_STRING 1ULL
#define MTRR_DEF_ENABLE_WB	0x806ULL /* MTRRs on, default type write-back */

static void kick_handler(int sig)
{
	(void)sig;
}

void vcpu_install_kick_handler(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = kick_handler;
	sigemptyset(&sa.sa_mask);
	/* No SA_RESTART: KVM_RUN must return EINTR. */
	sigaction(VCPU_KICK_SIGNAL, &sa, NULL);
}

void vcpu_kick(struct vcpu *vcpu)
{
	__atomic_store_n(&vcpu->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (vcpu->thread_started)
		pthread_kill(vcpu->thread, VCPU_KICK_SIGNAL);
}

static int set_initial_msrs(struct vcpu *vcpu, struct fk_err *err)
{
	static const struct {
		uint32_t index;
		uint64_t value;
	} init[] = {
	    {MSR_IA32_SYSENTER_CS, 0},
	    {MSR_IA32_SYSENTER_ESP, 0},
	    {MSR_IA32_SYSENTER_EIP, 0},
	    {MSR_STAR, 0},
	    {MSR_LSTAR, 0},
	    {MSR_CSTAR, 0},
	    {MSR_SYSCALL_MASK, 0},
	    {MSR_KERNEL_GS_BASE, 0},
	    {MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING},
	    {MSR_MTRR_DEF_TYPE, MTRR_DEF_ENABLE_WB},
	};
	enum { N = sizeof(init) / sizeof(init[0]) };
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry entries[N];
	} msrs;
	int r;

	memset(&msrs, 0, sizeof(msrs));
	msrs.hdr.nmsrs = N;
	for (int i = 0; i < N; i++) {
		msrs.entries[i].index = init[i].index;
		msrs.entries[i].data = init[i].value;
	}
	r = ioctl(vcpu->fd, KVM_SET_MSRS, &msrs);
	if (r < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_MSRS", vcpu->index);
	/* KVM_SET_MSRS stops at the first MSR it refuses and returns how many it set. */
	if (r != N)
		return fk_fail(err, EINVAL, "vcpu %d: KVM refused MSR 0x%x", vcpu->index,
			       init[r].index);
	return 0;
}

int vcpu_create(struct vm *vm, int index, struct fk_err *err)
{
	struct vcpu *vcpu = &vm->vcpus[index];
	struct kvm_cpuid2 *cpuid;
	int r;

	vcpu->vm = vm;
	vcpu->index = index;
	vcpu->fd = ioctl(vm->vm_fd, KVM_CREATE_VCPU, (unsigned long)index);
	if (vcpu->fd < 0)
		return fk_fail_errno(err, errno, "KVM_CREATE_VCPU %d", index);
	vcpu->run = mmap(NULL, vm->vcpu_mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu->fd, 0);
	if (vcpu->run == MAP_FAILED) {
		vcpu->run = NULL;
		return fk_fail_errno(err, errno, "vcpu %d: mmap kvm_run", index);
	}
	cpuid = cpuid_for_vcpu(vm, index, err);
	if (!cpuid)
		return -err->code;
	r = ioctl(vcpu->fd, KVM_SET_CPUID2, cpuid);
	free(cpuid);
	if (r < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_CPUID2", index);
	return set_initial_msrs(vcpu, err);
}

static void flat_segment(struct kvm_segment *s, uint16_t selector, uint8_t type)
{
	*s = (struct kvm_segment){
	    .base = 0,
	    .limit = 0xffffffff,
	    .selector = selector,
	    .type = type,
	    .present = 1,
	    .dpl = 0,
	    .db = 1,
	    .s = 1,
	    .g = 1,
	};
}

/*
 * The PVH entry state (xen/include/public/arch-x86/hvm/start_info.h): 32-bit
 * protected mode, paging off, flat 4 GiB code and data segments, a 32-bit
 * TSS in TR, EBX holding the start info's physical address.
 */
int vcpu_setup_pvh_bsp(struct vcpu *vcpu, uint64_t entry, uint64_t start_info, struct fk_err *err)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_GET_SREGS", vcpu->index);
	flat_segment(&sregs.cs, 0x10, 0xb);
	flat_segment(&sregs.ds, 0x18, 0x3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.tr = (struct kvm_segment){
	    .base = 0, .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1};
	sregs.cr0 = 0x11; /* PE | ET */
	sregs.cr4 = 0;
	sregs.efer = 0;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_SREGS", vcpu->index);

	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rbx = start_info;
	regs.rflags = 0x2;
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_REGS", vcpu->index);
	return 0;
}

/*
 * The 64-bit boot protocol's entry state (Documentation/arch/x86/boot.rst):
 * long mode with paging on an identity map covering the kernel, boot_params
 * and command line; a GDT with flat __BOOT_CS (64-bit code) and __BOOT_DS;
 * CS = __BOOT_CS, DS/ES/SS = __BOOT_DS; interrupts off; RSI = boot_params.
 */
int vcpu_setup_linux64_bsp(struct vcpu *vcpu, uint64_t entry, uint64_t boot_params,
			   struct fk_err *err)
{
	struct kvm_sregs sregs;
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_SREGS, &sregs) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_GET_SREGS", vcpu->index);
	flat_segment(&sregs.cs, BZ_BOOT_CS, 0xb);
	sregs.cs.l = 1;
	sregs.cs.db = 0;
	flat_segment(&sregs.ds, BZ_BOOT_DS, 0x3);
	sregs.es = sregs.fs = sregs.gs = sregs.ss = sregs.ds;
	sregs.tr = (struct kvm_segment){
	    .base = 0, .limit = 0x67, .selector = 0x20, .type = 0xb, .present = 1};
	sregs.gdt.base = LAYOUT_BZ_GDT;
	sregs.gdt.limit = BZ_GDT_ENTRIES * 8 - 1;
	sregs.cr3 = LAYOUT_BZ_PAGE_TABLES;
	sregs.cr4 = CR4_PAE;
	sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
	sregs.efer = EFER_LME | EFER_LMA;
	if (ioctl(vcpu->fd, KVM_SET_SREGS, &sregs) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_SREGS (long mode)", vcpu->index);

	memset(&regs, 0, sizeof(regs));
	regs.rip = entry;
	regs.rsi = boot_params;
	regs.rsp = LAYOUT_BZ_STACK_TOP; /* the kernel sets its own; this only covers a stray push */
	regs.rflags = 0x2;		/* IF clear */
	if (ioctl(vcpu->fd, KVM_SET_REGS, &regs) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_REGS", vcpu->index);
	return 0;
}

static void handle_io(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint8_t *data = (uint8_t *)run + run->io.data_offset;
	struct bus *pio = &vcpu->vm->pio;

	/* count > 1 is a string instruction (rep outsb): one exit, many bytes. */
	for (uint32_t i = 0; i < run->io.count; i++, data += run->io.size) {
		if (run->io.direction == KVM_EXIT_IO_OUT)
			bus_write(pio, run->io.port, data, run->io.size);
		else
			bus_read(pio, run->io.port, data, run->io.size);
	}
}

static void handle_mmio(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	uint32_t len = run->mmio.len;

	if (len == 0 || len > sizeof(run->mmio.data))
		return;
	if (run->mmio.is_write) {
		/* Test hook: a guest write nobody claims tries what a compromised handler would. */
		if (bus_write(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len) < 0 &&
		    fk_seccomp_escape_injected())
			fk_seccomp_escape_attempt();
	} else
		bus_read(&vcpu->vm->mmio, run->mmio.phys_addr, run->mmio.data, len);
}

static uint64_t guest_rip(struct vcpu *vcpu)
{
	struct kvm_regs regs;

	if (ioctl(vcpu->fd, KVM_GET_REGS, &regs) < 0)
		return 0;
	return regs.rip;
}

/* Returns false when the vCPU must stop. */
static bool handle_exit(struct vcpu *vcpu)
{
	struct kvm_run *run = vcpu->run;
	struct vm *vm = vcpu->vm;

	switch (run->exit_reason) {
	case KVM_EXIT_IO:
		handle_io(vcpu);
		return true;
	case KVM_EXIT_MMIO:
		handle_mmio(vcpu);
		return true;
	case KVM_EXIT_INTR:
		return true;
	case KVM_EXIT_HLT:
		/* With the in-kernel LAPIC KVM handles HLT; seeing it means the guest stopped. */
		vm_request_exit(vm, VMM_EXIT_GUEST_CRASH, "vcpu %d halted with interrupts off",
				vcpu->index);
		return false;
	case KVM_EXIT_SHUTDOWN:
		vm_request_exit(vm, VMM_EXIT_GUEST_CRASH,
				"vcpu %d: triple fault (guest shutdown) at rip=0x%llx", vcpu->index,
				(unsigned long long)guest_rip(vcpu));
		return false;
	case KVM_EXIT_SYSTEM_EVENT:
		switch (run->system_event.type) {
		case KVM_SYSTEM_EVENT_SHUTDOWN:
			vm_request_exit(vm, VMM_EXIT_POWEROFF, "guest powered off");
			break;
		case KVM_SYSTEM_EVENT_RESET:
			vm_request_exit(vm, VMM_EXIT_RESET, "guest reset");
			break;
		default:
			vm_request_exit(vm, VMM_EXIT_GUEST_CRASH, "vcpu %d: guest crash event %u",
					vcpu->index, run->system_event.type);
			break;
		}
		return false;
	case KVM_EXIT_INTERNAL_ERROR:
		vm_request_exit(vm, VMM_EXIT_GUEST_CRASH,
				"vcpu %d: KVM internal error (suberror %u%s) at rip=0x%llx",
				vcpu->index, run->internal.suberror,
				run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION
				    ? ": instruction emulation failed"
				    : "",
				(unsigned long long)guest_rip(vcpu));
		return false;
	case KVM_EXIT_FAIL_ENTRY:
		vm_request_exit(vm, VMM_EXIT_GUEST_CRASH,
				"vcpu %d: VM entry failed (reason 0x%llx)", vcpu->index,
				(unsigned long long)run->fail_entry.hardware_entry_failure_reason);
		return false;
	default:
		vm_request_exit(vm, VMM_EXIT_ERROR, "vcpu %d: unexpected KVM exit reason %u",
				vcpu->index, run->exit_reason);
		return false;
	}
}

static void *vcpu_thread(void *arg)
{
	struct vcpu *vcpu = arg;
	struct vm *vm = vcpu->vm;
	struct fk_err err;
	char name[16];

	snprintf(name, sizeof(name), "vcpu%d", vcpu->index);
	pthread_setname_np(pthread_self(), name);
	if (fk_seccomp_enter_role(FK_SECCOMP_ROLE_VCPU, &err) < 0) {
		vm_request_exit(vm, VMM_EXIT_ERROR, "vcpu %d: %s", vcpu->index, err.msg);
		return NULL;
	}

	while (!atomic_load(&vm->stopping)) {
		if (ioctl(vcpu->fd, KVM_RUN, 0) < 0) {
			int e = errno;
			/* EINTR: kicked. EAGAIN: an AP left wait-for-SIPI (PVM-NOTES). */
			if (e == EINTR || e == EAGAIN) {
				__atomic_store_n(&vcpu->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
				vcpu_park_if_requested(vcpu);
				continue;
			}
			vm_request_exit(vm, VMM_EXIT_ERROR, "vcpu %d: KVM_RUN: %s", vcpu->index,
					strerror(e));
			break;
		}
		if (!handle_exit(vcpu))
			break;
	}
	return NULL;
}

int vcpu_start(struct vcpu *vcpu, struct fk_err *err)
{
	sigset_t all, old;
	int r;

	/* The thread inherits this mask; only the kick signal is wanted there. */
	sigfillset(&all);
	sigdelset(&all, VCPU_KICK_SIGNAL);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&vcpu->thread, NULL, vcpu_thread, vcpu);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r)
		return fk_fail(err, r, "vcpu %d: cannot start thread: %s", vcpu->index,
			       strerror(r));
	vcpu->thread_started = true;
	return 0;
}
