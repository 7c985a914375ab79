/* SPDX-License-Identifier: MIT */
#include "state/vm_state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "state/vm_snapshot.h"

#define VCPU_STATE_VERSION 1
#define XSAVE_LEGACY_SIZE  4096

/* A VCPU section: this header, the fixed structs, xsave bytes, MSR entries. */
struct vcpu_state_hdr {
	uint32_t version;
	uint32_t xsave_len;
	uint32_t nr_msrs;
	uint32_t reserved;
};

struct vcpu_state_fixed {
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_xcrs xcrs;
	struct kvm_lapic_state lapic;
	struct kvm_mp_state mp_state;
	struct kvm_vcpu_events events;
	struct kvm_debugregs debugregs;
};

struct vm_chip_state {
	struct kvm_irqchip pic_master;
	struct kvm_irqchip pic_slave;
	struct kvm_irqchip ioapic;
};

int vm_state_init_msr_list(struct vm *vm, struct fk_err *err)
{
	struct kvm_msr_list probe = {.nmsrs = 0}, *list = NULL;
	struct {
		struct kvm_msrs hdr;
		struct kvm_msr_entry e;
	} one;
	uint32_t n = 0;

	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG)
		return fk_fail_errno(err, errno, "KVM_GET_MSR_INDEX_LIST");
	list = calloc(1, sizeof(*list) + probe.nmsrs * sizeof(list->indices[0]));
	vm->msr_indices = calloc(probe.nmsrs ? probe.nmsrs : 1, sizeof(uint32_t));
	if (!list || !vm->msr_indices) {
		free(list);
		return fk_fail(err, ENOMEM, "MSR list: out of memory");
	}
	list->nmsrs = probe.nmsrs;
	if (ioctl(vm->kvm_fd, KVM_GET_MSR_INDEX_LIST, list) < 0) {
		int e = errno;
		free(list);
		return fk_fail_errno(err, e, "KVM_GET_MSR_INDEX_LIST");
	}
	/* Keep only the MSRs this vCPU can read back; KVM lists a few it cannot. */
	for (uint32_t i = 0; i < list->nmsrs; i++) {
		memset(&one, 0, sizeof(one));
		one.hdr.nmsrs = 1;
		one.e.index = list->indices[i];
		if (ioctl(vm->vcpus[0].fd, KVM_GET_MSRS, &one) == 1)
			vm->msr_indices[n++] = list->indices[i];
	}
	vm->nr_msrs = n;
	free(list);
	/* Asked once here rather than per vCPU inside the pause window. */
	n = (uint32_t)ioctl(vm->kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	vm->xsave_size = (int)n > XSAVE_LEGACY_SIZE ? n : XSAVE_LEGACY_SIZE;
	return 0;
}

static int save_vcpu(struct vm *vm, struct vcpu *vcpu, struct snap_writer *w, struct fk_err *err)
{
	size_t xlen = vm->xsave_size;
	size_t msr_bytes = vm->nr_msrs * sizeof(struct kvm_msr_entry);
	size_t total =
	    sizeof(struct vcpu_state_hdr) + sizeof(struct vcpu_state_fixed) + xlen + msr_bytes;
	struct vcpu_state_hdr *hdr;
	struct vcpu_state_fixed *f;
	struct kvm_msrs *msrs = NULL;
	uint8_t *buf, *xsave;
	int ret, fd = vcpu->fd;

	buf = calloc(1, total);
	msrs = calloc(1, sizeof(*msrs) + msr_bytes);
	if (!buf || !msrs) {
		ret = fk_fail(err, ENOMEM, "vcpu %d state: out of memory", vcpu->index);
		goto out;
	}
	hdr = (struct vcpu_state_hdr *)buf;
	f = (struct vcpu_state_fixed *)(hdr + 1);
	xsave = (uint8_t *)(f + 1);
	hdr->version = VCPU_STATE_VERSION;
	hdr->xsave_len = (uint32_t)xlen;
	hdr->nr_msrs = vm->nr_msrs;

#define GET(req, arg)                                                                              \
	do {                                                                                       \
		if (ioctl(fd, req, arg) < 0) {                                                     \
			ret = fk_fail_errno(err, errno, "vcpu %d: " #req, vcpu->index);            \
			goto out;                                                                  \
		}                                                                                  \
	} while (0)
	GET(KVM_GET_REGS, &f->regs);
	GET(KVM_GET_SREGS, &f->sregs);
	GET(KVM_GET_XCRS, &f->xcrs);
	GET(KVM_GET_LAPIC, &f->lapic);
	GET(KVM_GET_MP_STATE, &f->mp_state);
	GET(KVM_GET_VCPU_EVENTS, &f->events);
	GET(KVM_GET_DEBUGREGS, &f->debugregs);
	if (xlen > XSAVE_LEGACY_SIZE)
		GET(KVM_GET_XSAVE2, xsave);
	else
		GET(KVM_GET_XSAVE, xsave);
#undef GET
	msrs->nmsrs = vm->nr_msrs;
	for (uint32_t i = 0; i < vm->nr_msrs; i++)
		msrs->entries[i].index = vm->msr_indices[i];
	ret = ioctl(fd, KVM_GET_MSRS, msrs);
	if (ret != (int)vm->nr_msrs) {
		ret = fk_fail(err, EIO, "vcpu %d: KVM_GET_MSRS read %d of %u MSRs", vcpu->index,
			      ret, vm->nr_msrs);
		goto out;
	}
	memcpy(xsave + xlen, msrs->entries, msr_bytes);
	ret = snap_writer_add(w, SNAP_SEC_VCPU, (uint32_t)vcpu->index, buf, total, err);
out:
	free(msrs);
	free(buf);
	return ret;
}

static int save_vm_chips(struct vm *vm, struct snap_writer *w, struct fk_err *err)
{
	struct vm_chip_state chips;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	int ret;

	memset(&chips, 0, sizeof(chips));
	chips.pic_master.chip_id = KVM_IRQCHIP_PIC_MASTER;
	chips.pic_slave.chip_id = KVM_IRQCHIP_PIC_SLAVE;
	chips.ioapic.chip_id = KVM_IRQCHIP_IOAPIC;
	if (ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chips.pic_master) < 0 ||
	    ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chips.pic_slave) < 0 ||
	    ioctl(vm->vm_fd, KVM_GET_IRQCHIP, &chips.ioapic) < 0)
		return fk_fail_errno(err, errno, "KVM_GET_IRQCHIP");
	memset(&pit, 0, sizeof(pit));
	if (ioctl(vm->vm_fd, KVM_GET_PIT2, &pit) < 0)
		return fk_fail_errno(err, errno, "KVM_GET_PIT2");
	memset(&clock, 0, sizeof(clock));
	if (ioctl(vm->vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return fk_fail_errno(err, errno, "KVM_GET_CLOCK");
	ret = snap_writer_add(w, SNAP_SEC_IRQCHIP, 0, &chips, sizeof(chips), err);
	if (!ret)
		ret = snap_writer_add(w, SNAP_SEC_PIT, 0, &pit, sizeof(pit), err);
	if (!ret)
		ret = snap_writer_add(w, SNAP_SEC_CLOCK, 0, &clock, sizeof(clock), err);
	return ret;
}

int vm_state_cpu_identity(struct vm *vm, struct snap_cpu_identity *id, struct fk_err *err)
{
	const struct kvm_cpuid2 *c = vm->supported_cpuid;

	memset(id, 0, sizeof(*id));
	id->entries = calloc(c->nent ? c->nent : 1, sizeof(id->entries[0]));
	if (!id->entries)
		return fk_fail(err, ENOMEM, "cpu identity: out of memory");
	for (uint32_t i = 0; i < c->nent; i++) {
		const struct kvm_cpuid_entry2 *e = &c->entries[i];
		id->entries[i] = (struct snap_cpuid_entry){.function = e->function,
							   .index = e->index,
							   .flags = e->flags,
							   .eax = e->eax,
							   .ebx = e->ebx,
							   .ecx = e->ecx,
							   .edx = e->edx};
	}
	id->nr_entries = c->nent;
	snap_cpu_features_from_cpuid(id->entries, id->nr_entries, &id->host);
	return 0;
}

int vm_state_save(struct vm *vm, struct snap_writer *w, struct fk_err *err)
{
	struct snap_cpu_identity id;
	uint8_t *idbuf = NULL;
	size_t idlen = 0;
	int ret;

	for (int i = 0; i < vm->nr_vcpus; i++) {
		ret = save_vcpu(vm, &vm->vcpus[i], w, err);
		if (ret < 0)
			return ret;
	}
	ret = save_vm_chips(vm, w, err);
	if (ret < 0)
		return ret;
	ret = vm_state_cpu_identity(vm, &id, err);
	if (ret < 0)
		return ret;
	ret = snap_cpu_identity_encode(&id, &idbuf, &idlen, err);
	snap_cpu_identity_free(&id);
	if (ret < 0)
		return ret;
	ret = snap_writer_add(w, SNAP_SEC_CPU_IDENTITY, 0, idbuf, idlen, err);
	free(idbuf);
	if (ret < 0)
		return ret;
	return vm_snapshot_save_devices(vm, w, err);
}

/* Restores MSRs, skipping (and counting) any this host refuses, as KVM stops at the first. */
static int restore_msrs(struct vcpu *vcpu, const struct kvm_msr_entry *entries, uint32_t n,
			struct fk_err *err)
{
	struct kvm_msrs *msrs = calloc(1, sizeof(*msrs) + n * sizeof(*entries));
	uint32_t done = 0;

	if (!msrs)
		return fk_fail(err, ENOMEM, "vcpu %d: out of memory", vcpu->index);
	while (done < n) {
		int r;
		msrs->nmsrs = n - done;
		memcpy(msrs->entries, entries + done, (n - done) * sizeof(*entries));
		r = ioctl(vcpu->fd, KVM_SET_MSRS, msrs);
		if (r < 0) {
			int e = errno;
			free(msrs);
			return fk_fail_errno(err, e, "vcpu %d: KVM_SET_MSRS", vcpu->index);
		}
		done += (uint32_t)r;
		if (done < n) {
			vcpu->vm->msrs_skipped++;
			done++; /* entries[done] was refused: skip it */
		}
	}
	free(msrs);
	return 0;
}

static int restore_vcpu(struct vm *vm, struct vcpu *vcpu, const uint8_t *data, size_t len,
			struct fk_err *err)
{
	const struct vcpu_state_hdr *hdr = (const void *)data;
	const struct vcpu_state_fixed *f;
	const uint8_t *xsave;
	size_t xlen = vm->xsave_size;
	int fd = vcpu->fd;
	struct vcpu_state_fixed fixed;

	if (len < sizeof(*hdr) + sizeof(*f) || hdr->version != VCPU_STATE_VERSION)
		return fk_fail(err, EINVAL, "vcpu %d state: unknown version or too short",
			       vcpu->index);
	if (hdr->xsave_len != xlen)
		return fk_fail(
		    err, ENOTSUP,
		    "vcpu %d state: XSAVE area is %u bytes, this host's is %zu (different "
		    "CPU features)",
		    vcpu->index, hdr->xsave_len, xlen);
	if (len != sizeof(*hdr) + sizeof(*f) + hdr->xsave_len +
		       (uint64_t)hdr->nr_msrs * sizeof(struct kvm_msr_entry))
		return fk_fail(err, EINVAL, "vcpu %d state: length %zu does not match its header",
			       vcpu->index, len);
	/* The section is only 8-byte aligned; copy the fixed part out. */
	memcpy(&fixed, data + sizeof(*hdr), sizeof(fixed));
	f = &fixed;
	xsave = data + sizeof(*hdr) + sizeof(*f);

#define SET(req, arg)                                                                              \
	do {                                                                                       \
		if (ioctl(fd, req, arg) < 0)                                                       \
			return fk_fail_errno(err, errno, "vcpu %d: " #req, vcpu->index);           \
	} while (0)
	/* Order as KVM needs it: sregs before the LAPIC (APIC base), MSRs after it (TSC deadline).
	 */
	SET(KVM_SET_MP_STATE, &f->mp_state);
	SET(KVM_SET_SREGS, &f->sregs);
	SET(KVM_SET_REGS, &f->regs);
	{
		void *x = malloc(xlen);
		if (!x)
			return fk_fail(err, ENOMEM, "vcpu %d: out of memory", vcpu->index);
		memcpy(x, xsave, xlen);
		int r = ioctl(fd, KVM_SET_XSAVE, x);
		int e = errno;
		free(x);
		if (r < 0)
			return fk_fail_errno(err, e, "vcpu %d: KVM_SET_XSAVE", vcpu->index);
	}
	SET(KVM_SET_XCRS, &f->xcrs);
	SET(KVM_SET_DEBUGREGS, &f->debugregs);
	SET(KVM_SET_LAPIC, &f->lapic);
#undef SET
	{
		uint32_t n = hdr->nr_msrs;
		struct kvm_msr_entry *m = malloc(n ? n * sizeof(*m) : 1);
		int ret;
		if (!m)
			return fk_fail(err, ENOMEM, "vcpu %d: out of memory", vcpu->index);
		memcpy(m, xsave + xlen, n * sizeof(*m));
		ret = restore_msrs(vcpu, m, n, err);
		free(m);
		if (ret < 0)
			return ret;
	}
	if (ioctl(fd, KVM_SET_VCPU_EVENTS, &f->events) < 0)
		return fk_fail_errno(err, errno, "vcpu %d: KVM_SET_VCPU_EVENTS", vcpu->index);
	return 0;
}

int vm_state_restore_cpus(struct vm *vm, const struct state_source *src, struct fk_err *err)
{
	struct vm_chip_state chips;
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	const void *data;
	size_t len;
	int ret;

	for (int i = 0; i < vm->nr_vcpus; i++) {
		if (state_find(src, SNAP_SEC_VCPU, (uint32_t)i, &data, &len) < 0)
			return fk_fail(err, EINVAL, "no state for vcpu %d", i);
		ret = restore_vcpu(vm, &vm->vcpus[i], data, len, err);
		if (ret < 0)
			return ret;
	}
	if (state_find(src, SNAP_SEC_IRQCHIP, 0, &data, &len) < 0 || len != sizeof(chips))
		return fk_fail(err, EINVAL, "irqchip state missing or of the wrong size");
	memcpy(&chips, data, sizeof(chips));
	if (ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chips.pic_master) < 0 ||
	    ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chips.pic_slave) < 0 ||
	    ioctl(vm->vm_fd, KVM_SET_IRQCHIP, &chips.ioapic) < 0)
		return fk_fail_errno(err, errno, "KVM_SET_IRQCHIP");
	if (state_find(src, SNAP_SEC_PIT, 0, &data, &len) < 0 || len != sizeof(pit))
		return fk_fail(err, EINVAL, "PIT state missing or of the wrong size");
	memcpy(&pit, data, sizeof(pit));
	if (ioctl(vm->vm_fd, KVM_SET_PIT2, &pit) < 0)
		return fk_fail_errno(err, errno, "KVM_SET_PIT2");
	if (state_find(src, SNAP_SEC_CLOCK, 0, &data, &len) < 0 || len != sizeof(clock))
		return fk_fail(err, EINVAL, "clock state missing or of the wrong size");
	memcpy(&clock, data, sizeof(clock));
	/* Only the clock value: the flags and host-time fields belong to the old host moment. */
	clock = (struct kvm_clock_data){.clock = clock.clock};
	if (ioctl(vm->vm_fd, KVM_SET_CLOCK, &clock) < 0)
		return fk_fail_errno(err, errno, "KVM_SET_CLOCK");
	return 0;
}
