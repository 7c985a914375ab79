/* SPDX-License-Identifier: MIT */
/* touch: one 8-byte store into every 4 KiB page of touch_mib MiB, timed, then checked. */
#include "probe.h"

static uint64_t touch_value(unsigned cpu, uint64_t addr)
{
	return addr ^ ((uint64_t)cpu << 56) ^ 0x746f756368ULL;
}

void touch_run(struct cpu *c)
{
	uint64_t pages = cfg.touch_mib * MIB / PAGE_SIZE;
	uint64_t t0, t1;
	bool ok = true;

	t0 = rdtsc();
	for (uint64_t i = 0; i < pages; i++) {
		uint64_t addr = c->mem_base + i * PAGE_SIZE;

		*(volatile uint64_t *)(uintptr_t)addr = touch_value(c->index, addr);
		if ((i & 255) == 0)
			service(c);
	}
	t1 = rdtsc();
	for (uint64_t i = 0; i < pages; i++) {
		uint64_t addr = c->mem_base + i * PAGE_SIZE;

		if (*(volatile uint64_t *)(uintptr_t)addr != touch_value(c->index, addr))
			ok = false;
		if ((i & 255) == 0)
			service(c);
	}
	c->touch_us = tsc_to_us(t1 - t0);
	c->touch_ok = ok;
	say("cpu%u.touch_mib=%lu", c->index, cfg.touch_mib);
	say("cpu%u.touch_us=%lu", c->index, c->touch_us);
	say("cpu%u.touch_ok=%u", c->index, ok ? 1 : 0);
}
