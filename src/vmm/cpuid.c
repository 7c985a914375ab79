/* SPDX-License-Identifier: MIT */
/*
 * Per-vCPU CPUID: KVM's supported table with each vCPU's APIC id and the
 * topology (one package, nr_cpus cores, one thread each) filled in, the
 * hypervisor bit set, and the TSC frequency published in leaf 0x40000010.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/vm.h"

#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_ECX_HYPERVISOR	 (1u << 31)
#define CPUID_1_EDX_HTT		 (1u << 28)
#define KVM_CPUID_SIGNATURE	 0x40000000u
#define KVM_CPUID_TIMING	 0x40000010u
#define TOPO_LEVEL_SMT		 1
#define TOPO_LEVEL_CORE		 2

static unsigned bits_for(unsigned n)
{
	unsigned b = 0;

	while ((1u << b) < n)
		b++;
	return b;
}

static struct kvm_cpuid_entry2 *find_entry(struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn &&
		    (!(c->entries[i].flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) ||
		     c->entries[i].index == idx))
			return &c->entries[i];
	return NULL;
}

static void set_topology_leaf(struct kvm_cpuid2 *c, uint32_t fn, unsigned apic_id, unsigned nr_cpus)
{
	for (uint32_t i = 0; i < c->nent; i++) {
		struct kvm_cpuid_entry2 *e = &c->entries[i];
		if (e->function != fn)
			continue;
		switch (e->index) {
		case 0: /* SMT level: one thread per core */
			e->eax = 0;
			e->ebx = 1;
			e->ecx = (TOPO_LEVEL_SMT << 8) | 0;
			break;
		case 1: /* core level: all vCPUs in one package */
			e->eax = bits_for(nr_cpus);
			e->ebx = nr_cpus;
			e->ecx = (TOPO_LEVEL_CORE << 8) | 1;
			break;
		default:
			e->eax = e->ebx = 0;
			e->ecx = e->index;
			break;
		}
		e->edx = apic_id;
	}
}

struct kvm_cpuid2 *cpuid_for_vcpu(const struct vm *vm, int cpu, struct fk_err *err)
{
	const struct kvm_cpuid2 *sup = vm->supported_cpuid;
	unsigned nr = (unsigned)vm->nr_vcpus;
	unsigned apic_id = (unsigned)cpu;
	struct kvm_cpuid_entry2 *e;
	struct kvm_cpuid2 *c;
	size_t size;

	/* One spare entry for the timing leaf if KVM did not list it. */
	size = sizeof(*c) + (sup->nent + 1) * sizeof(c->entries[0]);
	c = calloc(1, size);
	if (!c) {
		fk_fail(err, ENOMEM, "cpuid: out of memory");
		return NULL;
	}
	memcpy(c, sup, sizeof(*c) + sup->nent * sizeof(c->entries[0]));

	e = find_entry(c, 1, 0);
	if (e) {
		e->ebx = (e->ebx & 0x0000ffffu) | ((nr & 0xffu) << 16) | (apic_id << 24);
		e->ecx |= CPUID_1_ECX_HYPERVISOR;
		if (nr > 1)
			e->edx |= CPUID_1_EDX_HTT;
	}
	set_topology_leaf(c, 0xB, apic_id, nr);
	set_topology_leaf(c, 0x1F, apic_id, nr);

	/* Intel deterministic cache leaf: cores sharing the package. */
	for (uint32_t i = 0; i < c->nent; i++) {
		e = &c->entries[i];
		if (e->function == 4 && (e->eax & 0x1f))
			e->eax = (e->eax & 0x03ffffffu) | ((nr - 1) << 26);
	}
	/* AMD: core count and APIC id size; extended APIC id. */
	e = find_entry(c, 0x80000008, 0);
	if (e)
		e->ecx = (e->ecx & ~0xf0ffu) | ((nr - 1) & 0xff) | (bits_for(nr) << 12);
	e = find_entry(c, 0x8000001E, 0);
	if (e) {
		e->eax = apic_id;
		e->ebx = (e->ebx & ~0xffu) | (apic_id & 0xff);
		e->ecx = 0;
	}

	/* Publish the TSC frequency where KVM/VMware-aware guests look for it. */
	if (vm->tsc_khz) {
		struct kvm_cpuid_entry2 *sig = find_entry(c, KVM_CPUID_SIGNATURE, 0);
		e = find_entry(c, KVM_CPUID_TIMING, 0);
		if (!e) {
			e = &c->entries[c->nent++];
			memset(e, 0, sizeof(*e));
			e->function = KVM_CPUID_TIMING;
		}
		e->eax = vm->tsc_khz;
		e->ebx = 1000000; /* LAPIC bus: 1 GHz, KVM's fixed APIC timer rate */
		if (sig && sig->eax < KVM_CPUID_TIMING)
			sig->eax = KVM_CPUID_TIMING;
	}
	return c;
}
