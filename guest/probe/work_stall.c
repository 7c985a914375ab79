/* SPDX-License-Identifier: MIT */
/*
 * stall: reads the TSC in a tight loop; a gap longer than stall_us between
 * two reads means this vCPU did not run (VMM pause, host preemption).
 */
#include "probe.h"

static void record(struct cpu *c, uint64_t start, uint64_t len)
{
	uint64_t n = c->stall_count;

	c->stall_last[n % STALL_LAST] = (struct stall_gap){.start_tsc = start, .len_tsc = len};
	if (len > c->stall_max_tsc)
		WRITE_ONCE(c->stall_max_tsc, len);
	if (len > READ_ONCE(c->stall_window_max_tsc))
		WRITE_ONCE(c->stall_window_max_tsc, len);
	barrier();
	WRITE_ONCE(c->stall_count, n + 1);
}

void stall_run(struct cpu *c)
{
	uint64_t threshold = us_to_tsc(cfg.stall_us), prev;

	c->stall_threshold_tsc = threshold;
	prev = rdtsc();
	for (;;) {
		uint64_t now = rdtsc();

		if (now - prev > threshold)
			record(c, prev, now - prev);
		prev = now;
		if (c->index == 0 && now >= c->next_service) {
			/* The BSP's own console work is not a stall. */
			service_slow(c);
			prev = rdtsc();
		}
	}
}

void stall_report(struct cpu *c)
{
	uint64_t count = READ_ONCE(c->stall_count);
	uint64_t first = count > STALL_LAST ? count - STALL_LAST : 0;
	char list[STALL_LAST * 21 + 1];
	size_t len = 0;

	list[0] = '\0';
	for (uint64_t k = first; k < count && len < sizeof(list) - 1; k++)
		len += (size_t)fmt(list + len, sizeof(list) - len, "%s%lu", k == first ? "" : ",",
				   tsc_to_us(c->stall_last[k % STALL_LAST].len_tsc));
	say("cpu%u.stall_count=%lu", c->index, count);
	say("cpu%u.stall_max_us=%lu", c->index, tsc_to_us(READ_ONCE(c->stall_max_tsc)));
	say("cpu%u.stall_last=%s", c->index, list);
}

/*
 * `stall-window`: the longest gap each stall CPU saw since the previous
 * `stall-window` (0 if none above the threshold), then starts a new window.
 * Benchmarks bracket one event (a BRANCH) with two of these.
 */
void stall_window_say(void)
{
	for (unsigned i = 0; i < nr_cpus; i++) {
		struct cpu *c = &cpus[i];

		if (c->work != WORK_STALL)
			continue;
		uint64_t max = __atomic_exchange_n(&c->stall_window_max_tsc, 0, __ATOMIC_SEQ_CST);
		say("cpu%u.stall_window_max_us=%lu", c->index, tsc_to_us(max));
	}
	say("stall-window.end");
}
