/* SPDX-License-Identifier: MIT */
/* The VM-wide KVM calls: open, create, memslots, irqchip, irqfd, ioeventfd. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "util/kvm_host.h"
#include "core/layout.h"
#include "core/vm.h"

#define KVM_CPUID_MAX_ENTRIES 256

int kvm_open(struct vm *vm, const char *path, struct fk_err *err)
{
	int version;

	vm->kvm_fd = open(path, O_RDWR | O_CLOEXEC);
	if (vm->kvm_fd < 0) {
		int e = errno;
		if (e == ENOENT)
			return fk_fail(err, e,
				       "%s: no such device: KVM is not available on this host "
				       "(expected the kvm module loaded and %s present)",
				       path, path);
		if (e == EACCES || e == EPERM)
			return fk_fail(err, e,
				       "%s: permission denied (expected read/write access: run "
				       "as root or join the device's group)",
				       path);
		return fk_fail_errno(err, e, "%s: cannot open", path);
	}
	version = ioctl(vm->kvm_fd, KVM_GET_API_VERSION, 0);
	if (version != KVM_API_VERSION)
		return fk_fail(err, ENOTSUP, "%s: KVM API version %d, expected %d", path, version,
			       KVM_API_VERSION);
	return 0;
}

static int check_extension(struct vm *vm, long cap)
{
	int r = ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, cap);
	return r < 0 ? 0 : r;
}

static int fetch_supported_cpuid(struct vm *vm, struct fk_err *err)
{
	struct kvm_cpuid2 *c;

	c = calloc(1, sizeof(*c) + KVM_CPUID_MAX_ENTRIES * sizeof(c->entries[0]));
	if (!c)
		return fk_fail(err, ENOMEM, "KVM_GET_SUPPORTED_CPUID: out of memory");
	c->nent = KVM_CPUID_MAX_ENTRIES;
	if (ioctl(vm->kvm_fd, KVM_GET_SUPPORTED_CPUID, c) < 0) {
		int e = errno;
		free(c);
		return fk_fail_errno(err, e, "KVM_GET_SUPPORTED_CPUID");
	}
	vm->supported_cpuid = c;
	return 0;
}

int kvm_create_vm(struct vm *vm, struct fk_err *err)
{
	struct kvm_pit_config pit = {.flags = KVM_PIT_SPEAKER_DUMMY};
	uint64_t identity = LAYOUT_KVM_IDENTITY_MAP;
	int max_vcpus, r;

	for (size_t i = 0; i < fk_kvm_nr_required_caps; i++)
		if (!check_extension(vm, fk_kvm_required_caps[i].cap))
			return fk_fail(err, ENOTSUP, "%s: KVM lacks %s", vm->cfg->kvm_path,
				       fk_kvm_required_caps[i].name);
	max_vcpus = check_extension(vm, KVM_CAP_MAX_VCPUS);
	if (max_vcpus <= 0)
		max_vcpus = check_extension(vm, KVM_CAP_NR_VCPUS);
	if (max_vcpus > 0 && vm->cfg->nr_cpus > max_vcpus)
		return fk_fail(err, EINVAL, "--cpus %d: this host's KVM allows at most %d vCPUs",
			       vm->cfg->nr_cpus, max_vcpus);

	r = ioctl(vm->kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);
	if (r <= 0)
		return fk_fail_errno(err, errno, "KVM_GET_VCPU_MMAP_SIZE");
	vm->vcpu_mmap_size = (size_t)r;

	r = fetch_supported_cpuid(vm, err);
	if (r < 0)
		return r;

	vm->vm_fd = ioctl(vm->kvm_fd, KVM_CREATE_VM, 0);
	if (vm->vm_fd < 0)
		return fk_fail_errno(err, errno, "KVM_CREATE_VM");
	if (ioctl(vm->vm_fd, KVM_SET_TSS_ADDR, (unsigned long)LAYOUT_KVM_TSS) < 0)
		return fk_fail_errno(err, errno, "KVM_SET_TSS_ADDR");
	if (ioctl(vm->vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0)
		return fk_fail_errno(err, errno, "KVM_SET_IDENTITY_MAP_ADDR");
	if (ioctl(vm->vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return fk_fail_errno(err, errno, "KVM_CREATE_IRQCHIP");
	if (ioctl(vm->vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return fk_fail_errno(err, errno, "KVM_CREATE_PIT2");
	r = ioctl(vm->vm_fd, KVM_GET_TSC_KHZ, 0);
	vm->tsc_khz = r > 0 ? (uint32_t)r : 0;
	return 0;
}

int kvm_add_memslots(struct vm *vm, struct fk_err *err)
{
	for (int i = 0; i < vm->mem.nr_regions; i++) {
		const struct guest_mem_region *r = &vm->mem.regions[i];
		struct kvm_userspace_memory_region slot = {
		    .slot = (uint32_t)i,
		    .guest_phys_addr = r->gpa,
		    .memory_size = r->size,
		    .userspace_addr = (uintptr_t)r->hva,
		};
		if (ioctl(vm->vm_fd, KVM_SET_USER_MEMORY_REGION, &slot) < 0)
			return fk_fail_errno(
			    err, errno, "KVM_SET_USER_MEMORY_REGION slot %d (0x%llx+%llu MiB)", i,
			    (unsigned long long)r->gpa, (unsigned long long)(r->size >> 20));
	}
	return 0;
}

int kvm_irqfd(struct vm *vm, int fd, uint32_t gsi, struct fk_err *err)
{
	struct kvm_irqfd irqfd = {.fd = (uint32_t)fd, .gsi = gsi};

	if (ioctl(vm->vm_fd, KVM_IRQFD, &irqfd) < 0)
		return fk_fail_errno(err, errno, "KVM_IRQFD gsi %u", gsi);
	return 0;
}

int kvm_ioeventfd_mmio(struct vm *vm, int fd, uint64_t addr, uint32_t len, uint64_t datamatch,
		       struct fk_err *err)
{
	struct kvm_ioeventfd ioe = {
	    .datamatch = datamatch,
	    .addr = addr,
	    .len = len,
	    .fd = fd,
	    .flags = KVM_IOEVENTFD_FLAG_DATAMATCH,
	};

	if (ioctl(vm->vm_fd, KVM_IOEVENTFD, &ioe) < 0)
		return fk_fail_errno(err, errno, "KVM_IOEVENTFD at 0x%llx",
				     (unsigned long long)addr);
	return 0;
}

void kvm_set_irq_level(void *opaque, uint32_t gsi, int level)
{
	struct vm *vm = opaque;
	struct kvm_irq_level irq = {.irq = gsi, .level = (uint32_t)level};

	/* Only fails if the irqchip is gone, i.e. while tearing down. */
	ioctl(vm->vm_fd, KVM_IRQ_LINE, &irq);
}
