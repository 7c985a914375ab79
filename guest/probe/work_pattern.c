/* SPDX-License-Identifier: MIT */
/*
 * pattern: a deterministic writer whose memory image can be checked against
 * its own sequence number. Step seq (1, 2, 3, ...) stores seq and a CPU tag
 * at the start of page P(cpu, seq), then publishes seq in cpus[i].pattern_seq.
 * So for a published S, every page holds the last seq <= S that hit it, or
 * (while the writer runs on) a larger seq that also maps to that page; in a
 * memory image taken while it ran (a snapshot file) also the one in-flight
 * step S+1 may already be stored.
 *
 * The page order is in include/forkd/probe_pattern.h (shared with host
 * tools): a pseudo-random permutation of the pages per epoch. The writer
 * runs at memory speed (~10^8 steps/s), so replaying 1..S step by step would
 * make `verify` as slow as the run was long; with permutations the last
 * writer of each page has a closed form and verify costs O(pages).
 *
 * pattern_freeze=genid: a branched or restored copy of the VM must be checked
 * from inside for being one single instant of its source. Each step first
 * compares the generation ID with the one the writer started with, then
 * stores, then publishes; on a new ID the writer stops for good at its last
 * published seq. A copy resumes the writer from the copied registers: if
 * they were past the check, it finishes that one step (store and publish)
 * and stops at the next check. So a frozen writer's memory must be exactly
 * its image at frozen_at, with no step in flight; a copy whose memory is
 * from a later instant than its registers holds some seq > frozen_at.
 */
#include "probe.h"

#include "forkd/probe_pattern.h"

/*
 * After a generation ID change, how long the BSP waits for every writer to freeze before it
 * says some still run; it goes on waiting, and says pattern.frozen=1 when they do, up to
 * FREEZE_GIVE_UP_US. A vCPU of a loaded host can go unscheduled for longer than the first
 * (seen: a child whose writer froze after 100 ms was never reported frozen).
 */
#define FREEZE_WAIT_US	  100000
#define FREEZE_GIVE_UP_US 30000000
/* pattern-tear's default: it stores a seq this far past S, a page from a later instant. */
#define TEAR_AHEAD 1000

/*
 * BSP only: a generation ID change is waiting for the writers to freeze,
 * since freeze_wait started. Set and read by service_slow() between polls.
 */
static bool freeze_waiting;
static bool freeze_late_said; /* "pattern.frozen=0" said once for this wait */
static struct stopwatch freeze_wait;

static inline volatile uint64_t *page_ptr(const struct cpu *c, uint64_t page)
{
	return (volatile uint64_t *)(uintptr_t)(c->mem_base + page * PAGE_SIZE);
}

static NORETURN void freeze(struct cpu *c, uint64_t seq)
{
	WRITE_ONCE(c->pattern_frozen_at, seq);
	barrier();
	WRITE_ONCE(c->pattern_frozen, 1);
	idle_forever(c);
}

void pattern_run(struct cpu *c)
{
	uint64_t pages = c->pattern_pages, tag = PROBE_PATTERN_TAG(c->index);
	const volatile genid_word *gen = cfg.pattern_freeze ? genid_words() : NULL;
	uint64_t gen0 = 0, gen1 = 0;

	if (gen)
		genid_boot_words(&gen0, &gen1);

	/*
	 * A copy made while this still zeroes (a vCPU that started late) freezes
	 * here at seq 0, at once: its pages are all zero, as fresh guest RAM is.
	 */
	for (uint64_t p = 0; p < pages; p++) {
		if (gen && (gen[0] != gen0 || gen[1] != gen1))
			freeze(c, 0);
		page_ptr(c, p)[0] = 0;
		page_ptr(c, p)[1] = 0;
	}
	/* Where host tools find the pages and the published seq in a memory image. */
	say("cpu%u.pattern_base=0x%lx pattern_pages=%lu pattern_seq_addr=0x%lx", c->index,
	    c->mem_base, pages, (uint64_t)(uintptr_t)&c->pattern_seq);
	if (cfg.pattern_freeze)
		say("cpu%u.pattern_freeze=%s", c->index, gen ? "genid" : "unavailable");
	for (uint64_t epoch = 0;; epoch++) {
		struct probe_pattern_perm perm = probe_pattern_epoch_perm(c->index, epoch, pages);
		uint64_t page = perm.b, seq = epoch * pages;

		for (uint64_t i = 0; i < pages; i++) {
			volatile uint64_t *p = page_ptr(c, page);

			/* Check, store, publish: a copy finishes at most the step it is in. */
			if (gen && (gen[0] != gen0 || gen[1] != gen1))
				freeze(c, seq);
			seq++;
			p[0] = seq;
			p[1] = tag;
			/* x86 keeps stores in order; keep the compiler from reordering too. */
			barrier();
			WRITE_ONCE(c->pattern_seq, seq);
			page += perm.a;
			if (page >= pages)
				page -= pages;
			if ((seq & 1023) == 0)
				service(c);
		}
	}
}

/*
 * live: values > S on their own page are fine (the writer runs on). strict:
 * exact, except the one step S+1 that a running writer may have stored but
 * not yet published. A frozen writer stopped before its next store, so
 * strict is exact for it: every page holds the last seq <= frozen_at that
 * hit it (and its tag), and nothing else.
 */
static void verify_cpu(struct cpu *c, bool strict)
{
	bool frozen = READ_ONCE(c->pattern_frozen);
	uint64_t s, pages = c->pattern_pages;
	uint64_t epoch, inflight;
	struct probe_pattern_perm cur, prev;
	const char *mode = !strict ? "" : frozen ? " mode=strict frozen=1" : " mode=strict";

	barrier();
	s = frozen ? READ_ONCE(c->pattern_frozen_at) : READ_ONCE(c->pattern_seq);
	epoch = s ? (s - 1) / pages : 0;
	inflight = probe_pattern_page(c->index, s + 1, pages);
	cur = probe_pattern_epoch_perm(c->index, epoch, pages);
	prev = probe_pattern_epoch_perm(c->index, epoch ? epoch - 1 : 0, pages);
	for (uint64_t p = 0; p < pages; p++) {
		volatile uint64_t *mem = page_ptr(c, p);
		uint64_t want = probe_pattern_expected(p, s, pages, &cur, &prev), got = mem[0],
			 got_tag = mem[1];
		bool ok = probe_pattern_page_ok(c->index, p, pages, s, want, inflight, got, got_tag,
						strict, frozen);

		if (!ok) {
			say("cpu%u.verify=fail page=%lu want=%lu got=%lu seq=%lu tag=0x%lx%s",
			    c->index, p, want, got, s, got_tag, mode);
			return;
		}
	}
	say("cpu%u.verify=ok seq=%lu pages=%lu%s", c->index, s, pages, mode);
}

static bool is_writer(const struct cpu *c)
{
	return c->work == WORK_PATTERN && READ_ONCE(c->online) && !c->oom;
}

void pattern_verify(bool strict)
{
	unsigned checked = 0;

	for (unsigned i = 0; i < nr_cpus; i++) {
		struct cpu *c = &cpus[i];

		if (!is_writer(c))
			continue;
		verify_cpu(c, strict);
		checked++;
	}
	say("verify.end cpus=%u mode=%s", checked, strict ? "strict" : "live");
}

void pattern_report(struct cpu *c)
{
	say("cpu%u.pattern_seq=%lu", c->index, READ_ONCE(c->pattern_seq));
	say("cpu%u.pattern_pages=%lu", c->index, c->pattern_pages);
	if (cfg.pattern_freeze)
		say("cpu%u.pattern_frozen=%u", c->index, READ_ONCE(c->pattern_frozen) ? 1 : 0);
}

void pattern_freeze_start(void)
{
	freeze_waiting = true;
	freeze_late_said = false;
	stopwatch_start(&freeze_wait);
}

void pattern_freeze_poll(void)
{
	unsigned running = 0;

	if (!freeze_waiting)
		return;
	for (unsigned i = 0; i < nr_cpus; i++)
		if (is_writer(&cpus[i]) && !READ_ONCE(cpus[i].pattern_frozen))
			running++;
	if (running == 0) {
		freeze_waiting = false;
		say("pattern.frozen=1");
	} else if (!freeze_late_said && stopwatch_us(&freeze_wait) >= FREEZE_WAIT_US) {
		freeze_late_said = true;
		say("pattern.frozen=0 running=%u", running);
	} else if (stopwatch_us(&freeze_wait) >= FREEZE_GIVE_UP_US) {
		freeze_waiting = false;
		say("pattern.frozen=0 running=%u gave-up", running);
	}
}

/*
 * Stores, without publishing, the value step S+ahead would store: what a
 * copy holds whose memory is from a later instant than its registers. Only
 * to show that `verify strict` catches that (ahead=1 included, for a frozen
 * writer); meant for frozen writers (a running one soon overwrites it, and
 * live verify accepts it).
 */
void pattern_tear(char *arg)
{
	struct cpu *c = NULL;
	uint64_t index, ahead = TEAR_AHEAD, s, value, page;
	char *second = arg;
	volatile uint64_t *mem;

	while (*second && *second != ' ')
		second++;
	if (*second)
		*second++ = '\0';
	if (*arg) {
		if (!parse_u64(arg, strlen(arg), &index) || index >= nr_cpus ||
		    !is_writer(&cpus[index]) ||
		    (*second && (!parse_u64(second, strlen(second), &ahead) || ahead == 0))) {
			say("error usage: pattern-tear [<cpu of a pattern writer> [<steps ahead, "
			    ">= 1>]]");
			return;
		}
		c = &cpus[index];
	}
	for (unsigned i = 0; i < nr_cpus && !c; i++)
		if (is_writer(&cpus[i]))
			c = &cpus[i];
	if (!c) {
		say("error pattern-tear: no pattern writer");
		return;
	}
	s = READ_ONCE(c->pattern_frozen) ? READ_ONCE(c->pattern_frozen_at)
					 : READ_ONCE(c->pattern_seq);
	value = s + ahead;
	page = probe_pattern_page(c->index, value, c->pattern_pages);
	mem = page_ptr(c, page);
	mem[0] = value;
	mem[1] = PROBE_PATTERN_TAG(c->index);
	say("pattern.tear=cpu%u page=%lu value=%lu seq=%lu", c->index, page, value, s);
}
