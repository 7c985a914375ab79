/* SPDX-License-Identifier: MIT */
/*
 * entry.S sends every unexpected exception or interrupt here, at CPL3 on a
 * fresh stack: report it in one line and stop this CPU for good.
 */
#include "probe.h"

/* Per CPU: a fault while reporting a fault stops the CPU silently. */
static uint8_t in_fault[MAX_CPUS];

void fault_report(unsigned cpu, uint64_t vec, uint64_t err, uint64_t rip, uint64_t cr2)
{
	char line[128];
	int n;

	if (cpu < MAX_CPUS) {
		if (in_fault[cpu])
			sys_stop();
		in_fault[cpu] = 1;
	}
	n = fmt(line, sizeof(line) - 1, "FAULT cpu=%u vec=%lu err=%lu rip=0x%lx cr2=0x%lx", cpu,
		vec, err, rip, cr2);
	line[n++] = '\n';
	say_urgent(line, (size_t)n);
	sys_stop();
}
