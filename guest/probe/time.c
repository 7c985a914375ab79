/* SPDX-License-Identifier: MIT */
/*
 * TSC frequency, in order: the hypervisor's CPUID leaf 0x40000010 (QEMU and
 * VMware style), the command line's tsc_khz=, KVM's pvclock parameters
 * (kvmclock), else unknown.
 */
#include "probe.h"

#define CPUID_HV_BASE		0x40000000u
#define CPUID_HV_TIMING		0x40000010u
#define CPUID_KVM_FEATURES	0x40000001u
#define KVM_FEATURE_CLOCKSRC2	(1u << 3)
#define MSR_KVM_SYSTEM_TIME_NEW 0x4b564d01u
#define GUESS_KHZ		2000000u

/* Set once by the BSP in time_init(), before any AP runs. */
uint64_t tsc_khz;
uint64_t tsc_khz_eff = GUESS_KHZ;
const char *tsc_source = "none";

struct pvclock_vcpu_time_info {
	uint32_t version;
	uint32_t pad0;
	uint64_t tsc_timestamp;
	uint64_t system_time;
	uint32_t tsc_to_system_mul;
	int8_t tsc_shift;
	uint8_t flags;
	uint8_t pad[2];
} __attribute__((packed));

/* Host writes it while kvmclock is enabled on the BSP, only inside time_init(). */
static struct pvclock_vcpu_time_info pvclock __attribute__((aligned(64)));

static bool is_kvm(void)
{
	uint32_t r[4];

	sys_cpuid(CPUID_HV_BASE, 0, r);
	return r[1] == 0x4b4d564b && r[2] == 0x564b4d56 && r[3] == 0x4d;
}

static uint64_t kvmclock_khz(void)
{
	uint32_t r[4];
	uint64_t khz;

	if (!is_kvm())
		return 0;
	sys_cpuid(CPUID_KVM_FEATURES, 0, r);
	if (!(r[0] & KVM_FEATURE_CLOCKSRC2))
		return 0;
	sys_wrmsr(MSR_KVM_SYSTEM_TIME_NEW, (uint64_t)(uintptr_t)&pvclock | 1);
	barrier();
	khz = 0;
	if (READ_ONCE(pvclock.tsc_to_system_mul)) {
		/* ns = (ticks << shift) * mul >> 32, so ticks per ms = 1e6 << 32 / mul >> shift. */
		khz = (1000000ULL << 32) / pvclock.tsc_to_system_mul;
		if (pvclock.tsc_shift < 0)
			khz <<= -pvclock.tsc_shift;
		else
			khz >>= pvclock.tsc_shift;
	}
	sys_wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0);
	return khz;
}

void time_init(void)
{
	uint32_t r[4];

	sys_cpuid(CPUID_HV_BASE, 0, r);
	if (r[0] >= CPUID_HV_TIMING && r[0] < CPUID_HV_BASE + 0x100) {
		sys_cpuid(CPUID_HV_TIMING, 0, r);
		if (r[0]) {
			tsc_khz = r[0];
			tsc_source = "cpuid";
		}
	}
	if (!tsc_khz && cfg.tsc_khz) {
		tsc_khz = cfg.tsc_khz;
		tsc_source = "cmdline";
	}
	if (!tsc_khz) {
		tsc_khz = kvmclock_khz();
		if (tsc_khz)
			tsc_source = "kvmclock";
	}
	if (tsc_khz)
		tsc_khz_eff = tsc_khz;
}

uint64_t tsc_to_us(uint64_t ticks)
{
	/* No overflow for 70 days of ticks at 3 GHz. */
	return ticks * 1000 / tsc_khz_eff;
}

uint64_t us_to_tsc(uint64_t us)
{
	return us * tsc_khz_eff / 1000;
}

void delay_us(uint64_t us)
{
	uint64_t end = rdtsc() + us_to_tsc(us);

	while (rdtsc() < end)
		cpu_relax();
}

void stopwatch_start(struct stopwatch *sw)
{
	sw->last_tsc = rdtsc();
	sw->elapsed_tsc = 0;
}

uint64_t stopwatch_us(struct stopwatch *sw)
{
	uint64_t now = rdtsc();

	if (now > sw->last_tsc) {
		uint64_t step = now - sw->last_tsc, max = us_to_tsc(STOPWATCH_STEP_MAX_US);

		sw->elapsed_tsc += step < max ? step : max;
	}
	sw->last_tsc = now;
	return tsc_to_us(sw->elapsed_tsc);
}
