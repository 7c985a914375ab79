/* SPDX-License-Identifier: MIT */
/*
 * The `costs` command: what the probe's own mechanisms cost on this
 * hypervisor (a CPL0 call, port I/O, an MMIO exit, a serial line, a timer
 * wake-up), so benchmarks can subtract them and PVM surprises show up.
 */
#include "probe.h"

#define REPS 100

static uint64_t avg_ns(uint64_t ticks, unsigned reps)
{
	return ticks * 1000000 / tsc_khz_eff / reps;
}

void costs_run(void)
{
	static const char line10[] = "costs.pad\n";
	static const char line80[] =
	    "costs.pad=0123456789012345678901234567890123456789012345678901234567"
	    "8901234567\n";
	uint64_t t0, t_call, t_vmm_mmio = 0, t_inb, t_outb, t_mmio, t_line10, t_line80, t_halt,
			     skew;

	t0 = rdtsc();
	for (int i = 0; i < REPS; i++)
		sys_rdtsc0();
	t_call = rdtsc() - t0;
	skew = sys_rdtsc0() - rdtsc();
	t0 = rdtsc();
	for (int i = 0; i < REPS; i++)
		sys_inb(COM1 + 5);
	t_inb = rdtsc() - t0;
	t0 = rdtsc();
	for (int i = 0; i < REPS; i++)
		sys_outb(0x80, 0);
	t_outb = rdtsc() - t0;
	t0 = rdtsc();
	for (int i = 0; i < REPS; i++)
		mmio_read32(0xFEE00030); /* xAPIC window: KVM's in-kernel LAPIC answers */
	t_mmio = rdtsc() - t0;
	if (acpi.nr_virtio) {
		t0 = rdtsc();
		for (int i = 0; i < REPS; i++)
			mmio_read32(acpi.virtio[0]); /* handled by the VMM process */
		t_vmm_mmio = rdtsc() - t0;
	}
	t0 = rdtsc();
	for (int i = 0; i < 10; i++)
		say_urgent(line10, sizeof(line10) - 1);
	t_line10 = rdtsc() - t0;
	t0 = rdtsc();
	for (int i = 0; i < 10; i++)
		say_urgent(line80, sizeof(line80) - 1);
	t_line80 = rdtsc() - t0;
	t0 = rdtsc();
	for (int i = 0; i < 10; i++)
		sys_halt(LAPIC_COUNT_MS);
	t_halt = rdtsc() - t0;
	say("costs.call_ns=%lu costs.inb_ns=%lu costs.outb_ns=%lu costs.mmio_kernel_ns=%lu "
	    "costs.mmio_vmm_ns=%lu",
	    avg_ns(t_call, REPS), avg_ns(t_inb, REPS), avg_ns(t_outb, REPS), avg_ns(t_mmio, REPS),
	    avg_ns(t_vmm_mmio, REPS));
	say("costs.line10_ns=%lu costs.line80_ns=%lu costs.halt_1ms_ns=%lu costs.cpl0_tsc_skew=%ld",
	    avg_ns(t_line10, 10), avg_ns(t_line80, 10), avg_ns(t_halt, 10), (long)skew);
}
