/* SPDX-License-Identifier: MIT */
/*
 * Per-vCPU CPUID: KVM's supported table with each vCPU's APIC id and the
 * topology (one package, nr_cpus cores, one thread each) filled in, the
 * hypervisor bit set, the TSC frequency published in leaf 0x40000010, and
 * the features --cpuid-hide names taken away.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/vm.h"

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

/* Bits of one register of one leaf; index ~0u: every subleaf. */
struct cpuid_bits {
	uint32_t function, index;
	int reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
	uint32_t mask;
};

#define EAX	      0
#define EBX	      1
#define ECX	      2
#define EDX	      3
#define ALL_SUBLEAVES (~0u)

/* XCR0 state components (leaf 0xD.0 EAX) that only exist for AVX/AVX-512/AMX. */
#define XCR0_YMM    (1u << 2)
#define XCR0_AVX512 (7u << 5) /* opmask, ZMM_Hi256, Hi16_ZMM */
#define XCR0_AMX    (3u << 17)

static const struct cpuid_bits hide_avx512[] = {
    /* F, DQ, IFMA, PF, ER, CD, BW, VL */
    {7, 0, EBX,
     (1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) |
	 (1u << 31)},
    /* VBMI, VBMI2, VNNI, BITALG, VPOPCNTDQ */
    {7, 0, ECX, (1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14)},
    /* 4VNNIW, 4FMAPS, VP2INTERSECT, FP16 */
    {7, 0, EDX, (1u << 2) | (1u << 3) | (1u << 8) | (1u << 23)},
    {7, 1, EAX, 1u << 5}, /* AVX512_BF16 */
    {0xD, 0, EAX, XCR0_AVX512},
};

static const struct cpuid_bits hide_avx[] = {
    {1, 0, ECX, (1u << 12) | (1u << 28) | (1u << 29)}, /* FMA, AVX, F16C */
    {7, 0, EBX, 1u << 5},			       /* AVX2 */
    {7, 0, ECX, (1u << 9) | (1u << 10)},	       /* VAES, VPCLMULQDQ (VEX forms) */
    {7, 0, EDX, (1u << 22) | (1u << 24) | (1u << 25)}, /* AMX BF16, TILE, INT8 */
    {7, 1, EAX, 1u << 4},			       /* AVX_VNNI */
    {0x80000001, 0, ECX, (1u << 11) | (1u << 16)},     /* XOP, FMA4 */
    {0xD, 0, EAX, XCR0_YMM | XCR0_AMX},
};

static const struct cpuid_bits hide_xsave[] = {
    {1, 0, ECX, (1u << 26) | (1u << 27)},	    /* XSAVE, OSXSAVE */
    {7, 0, EBX, 1u << 14},			    /* MPX: its state is XSAVE-managed */
    {7, 0, ECX, (1u << 3) | (1u << 4) | (1u << 7)}, /* PKU, OSPKE, CET shadow stack */
    {7, 0, EDX, 1u << 20},			    /* CET IBT */
    {0xD, ALL_SUBLEAVES, EAX, ~0u},
    {0xD, ALL_SUBLEAVES, EBX, ~0u},
    {0xD, ALL_SUBLEAVES, ECX, ~0u},
    {0xD, ALL_SUBLEAVES, EDX, ~0u},
};

static const struct cpuid_bits hide_pcid[] = {
    {1, 0, ECX, 1u << 17}, /* PCID */
    {7, 0, EBX, 1u << 10}, /* INVPCID */
};

static const struct cpuid_bits hide_x2apic[] = {
    {1, 0, ECX, 1u << 21},
};

static const struct cpuid_bits hide_cx16[] = {
    {1, 0, ECX, 1u << 13},
};

static void clear_bits(struct kvm_cpuid2 *c, const struct cpuid_bits *bits, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (uint32_t j = 0; j < c->nent; j++) {
			struct kvm_cpuid_entry2 *e = &c->entries[j];
			uint32_t *regs[4] = {&e->eax, &e->ebx, &e->ecx, &e->edx};

			if (e->function != bits[i].function ||
			    (bits[i].index != ALL_SUBLEAVES && e->index != bits[i].index))
				continue;
			*regs[bits[i].reg] &= ~bits[i].mask;
		}
	}
}

#define CLEAR(c, table) clear_bits(c, table, sizeof(table) / sizeof(table[0]))

void cpuid_hide(struct kvm_cpuid2 *c, unsigned hide)
{
	/* Everything AVX keeps its state in XSAVE areas: no XSAVE, no AVX. */
	if (hide & VMM_CPUID_HIDE_XSAVE)
		hide |= VMM_CPUID_HIDE_AVX;
	if (hide & VMM_CPUID_HIDE_AVX)
		hide |= VMM_CPUID_HIDE_AVX512;
	if (hide & VMM_CPUID_HIDE_AVX512)
		CLEAR(c, hide_avx512);
	if (hide & VMM_CPUID_HIDE_AVX)
		CLEAR(c, hide_avx);
	if (hide & VMM_CPUID_HIDE_XSAVE)
		CLEAR(c, hide_xsave);
	if (hide & VMM_CPUID_HIDE_PCID)
		CLEAR(c, hide_pcid);
	if (hide & VMM_CPUID_HIDE_X2APIC)
		CLEAR(c, hide_x2apic);
	if (hide & VMM_CPUID_HIDE_CX16)
		CLEAR(c, hide_cx16);
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
	cpuid_hide(c, vm->cfg->cpuid_hide);
	return c;
}
