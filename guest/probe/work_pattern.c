/* SPDX-License-Identifier: MIT */
/*
 * pattern: a deterministic writer whose memory image can be checked against
 * its own sequence number. Step seq (1, 2, 3, ...) stores seq and a CPU tag
 * at the start of page P(cpu, seq), then publishes seq in cpus[i].pattern_seq.
 * So for a published S, every page holds the last seq <= S that hit it, or
 * (while the writer runs on) a larger seq that also maps to that page; in a
 * frozen image also the one in-flight step S+1 may already be stored.
 *
 * The page order is in include/forkd/probe_pattern.h (shared with host
 * tools): a pseudo-random permutation of the pages per epoch. The writer
 * runs at memory speed (~10^8 steps/s), so replaying 1..S step by step would
 * make `verify` as slow as the run was long; with permutations the last
 * writer of each page has a closed form and verify costs O(pages).
 */
#include "probe.h"

#include "forkd/probe_pattern.h"

static inline volatile uint64_t *page_ptr(const struct cpu *c, uint64_t page)
{
	return (volatile uint64_t *)(uintptr_t)(c->mem_base + page * PAGE_SIZE);
}

void pattern_run(struct cpu *c)
{
	uint64_t pages = c->pattern_pages, tag = PROBE_PATTERN_TAG(c->index);

	for (uint64_t p = 0; p < pages; p++) {
		page_ptr(c, p)[0] = 0;
		page_ptr(c, p)[1] = 0;
	}
	/* Where host tools find the pages and the published seq in a memory image. */
	say("cpu%u.pattern_base=0x%lx pattern_pages=%lu pattern_seq_addr=0x%lx", c->index,
	    c->mem_base, pages, (uint64_t)(uintptr_t)&c->pattern_seq);
	for (uint64_t epoch = 0;; epoch++) {
		struct probe_pattern_perm perm = probe_pattern_epoch_perm(c->index, epoch, pages);
		uint64_t page = perm.b, seq = epoch * pages;

		for (uint64_t i = 0; i < pages; i++) {
			volatile uint64_t *p = page_ptr(c, page);

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

static void verify_cpu(struct cpu *c, bool strict)
{
	uint64_t s = READ_ONCE(c->pattern_seq), tag = PROBE_PATTERN_TAG(c->index);
	uint64_t pages = c->pattern_pages, epoch = s ? (s - 1) / pages : 0;
	uint64_t inflight = probe_pattern_page(c->index, s + 1, pages);
	struct probe_pattern_perm cur = probe_pattern_epoch_perm(c->index, epoch, pages);
	struct probe_pattern_perm prev =
	    probe_pattern_epoch_perm(c->index, epoch ? epoch - 1 : 0, pages);

	for (uint64_t p = 0; p < pages; p++) {
		volatile uint64_t *mem = page_ptr(c, p);
		uint64_t want = probe_pattern_expected(p, s, pages, &cur, &prev), got = mem[0],
			 got_tag = mem[1];
		bool ok;

		if (got == want)
			ok = true;
		else if (strict)
			ok = got == s + 1 && p == inflight;
		else
			ok = got > s && probe_pattern_page(c->index, got, pages) == p;
		/* A completed store also wrote the tag; an in-flight one may not have yet. */
		if (ok && got != 0 && got <= s && got_tag != tag)
			ok = false;
		if (!ok) {
			say("cpu%u.verify=fail page=%lu want=%lu got=%lu seq=%lu tag=0x%lx",
			    c->index, p, want, got, s, got_tag);
			return;
		}
	}
	say("cpu%u.verify=ok seq=%lu pages=%lu", c->index, s, pages);
}

void pattern_verify(bool strict)
{
	unsigned checked = 0;

	for (unsigned i = 0; i < nr_cpus; i++) {
		struct cpu *c = &cpus[i];

		if (c->work != WORK_PATTERN || !READ_ONCE(c->online) || c->oom)
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
}
