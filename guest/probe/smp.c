/* SPDX-License-Identifier: MIT */
/*
 * Local APIC (x2APIC mode, programmed through MSR calls) and AP start-up the
 * way firmware does it: INIT, SIPI, SIPI to each APIC id the MADT lists, with
 * a real-mode trampoline at TRAMPOLINE_PADDR.
 */
#include "probe.h"

#define MSR_APIC_BASE	    0x1B
#define APIC_BASE_EXTD	    (1ULL << 10)
#define APIC_BASE_EN	    (1ULL << 11)
#define X2APIC_ID	    0x802
#define X2APIC_SVR	    0x80F
#define X2APIC_ICR	    0x830
#define X2APIC_LVT_TIMER    0x832
#define X2APIC_LVT_LINT0    0x835
#define X2APIC_LVT_LINT1    0x836
#define X2APIC_TIMER_DIVIDE 0x83E
#define APIC_SVR_ENABLE	    0x100
#define APIC_LVT_MASKED	    0x10000
#define APIC_DIVIDE_BY_1    0xB
#define ICR_INIT	    0x4500 /* INIT, level assert */
#define ICR_STARTUP	    0x4600 /* Start-up, level assert */
#define CPUID_X2APIC	    (1u << 21)
#define AP_WAIT_US	    2000000

/* Read by the AP trampoline path at CPL0: APIC id -> CPU index. Written by the BSP before SIPI. */
uint8_t apic_to_index[256];
/* Written by the BSP in smp_boot(). */
uint64_t smp_start_ticks;

void lapic_init(void)
{
	uint64_t base = sys_rdmsr(MSR_APIC_BASE);

	if ((base & (APIC_BASE_EN | APIC_BASE_EXTD)) != (APIC_BASE_EN | APIC_BASE_EXTD))
		sys_wrmsr(MSR_APIC_BASE, base | APIC_BASE_EN | APIC_BASE_EXTD);
	sys_wrmsr(X2APIC_SVR, APIC_SVR_ENABLE | VEC_SPURIOUS);
	/* KVM wires the BSP's LINT0 to the PIC (ExtINT): nothing of ours uses it. */
	sys_wrmsr(X2APIC_LVT_LINT0, APIC_LVT_MASKED);
	sys_wrmsr(X2APIC_LVT_LINT1, APIC_LVT_MASKED);
	sys_wrmsr(X2APIC_TIMER_DIVIDE, APIC_DIVIDE_BY_1);
	sys_wrmsr(X2APIC_LVT_TIMER, VEC_TIMER); /* one-shot, armed by the halt call */
}

uint32_t lapic_id(void)
{
	return (uint32_t)sys_rdmsr(X2APIC_ID);
}

static bool have_x2apic(void)
{
	uint32_t r[4];

	sys_cpuid(1, 0, r);
	return r[2] & CPUID_X2APIC;
}

static unsigned count_online(void)
{
	unsigned n = 0;

	for (unsigned i = 0; i < nr_cpus; i++)
		n += READ_ONCE(cpus[i].online) ? 1 : 0;
	return n;
}

unsigned smp_boot(void)
{
	uint32_t self;
	uint64_t deadline, t_init;

	if (!have_x2apic()) {
		say("smp.error=no x2APIC in CPUID: running on the BSP only");
		cpus[0].online = 1;
		nr_cpus = 1;
		return 1;
	}
	lapic_init();
	self = lapic_id();
	cpus[0].index = 0;
	cpus[0].apic_id = self;
	cpus[0].online = 1;
	nr_cpus = 1;
	/* CPU index = MADT order, with the BSP moved to index 0. */
	for (unsigned i = 0; i < acpi.nr_apic_ids; i++) {
		uint32_t id = acpi.apic_ids[i];

		if (id == self)
			continue;
		if (id >= ARRAY_SIZE(apic_to_index)) {
			say("smp.error=apic id %u too large, CPU not started", id);
			continue;
		}
		cpus[nr_cpus].index = nr_cpus;
		cpus[nr_cpus].apic_id = id;
		apic_to_index[id] = (uint8_t)nr_cpus;
		nr_cpus++;
	}
	if (nr_cpus == 1)
		return 1;
	memcpy((void *)TRAMPOLINE_PADDR, trampoline_start,
	       (size_t)(trampoline_end - trampoline_start));
	t_init = rdtsc();
	for (unsigned i = 1; i < nr_cpus; i++)
		sys_wrmsr(X2APIC_ICR, (uint64_t)cpus[i].apic_id << 32 | ICR_INIT);
	for (int round = 0; round < 2; round++)
		for (unsigned i = 1; i < nr_cpus; i++)
			sys_wrmsr(X2APIC_ICR, (uint64_t)cpus[i].apic_id << 32 | ICR_STARTUP |
						  (TRAMPOLINE_PADDR >> 12));
	deadline = rdtsc() + us_to_tsc(AP_WAIT_US);
	while (count_online() < nr_cpus && rdtsc() < deadline)
		sys_halt(LAPIC_COUNT_MS / 10);
	for (unsigned i = 1; i < nr_cpus; i++) {
		if (!READ_ONCE(cpus[i].online))
			say("smp.error=cpu%u (apic id %u) did not come online", i, cpus[i].apic_id);
		else if (READ_ONCE(cpus[i].online_tsc) - t_init > smp_start_ticks)
			smp_start_ticks = READ_ONCE(cpus[i].online_tsc) - t_init;
	}
	return count_online();
}
