/* SPDX-License-Identifier: MIT */
/*
 * The probe guest's `pattern` workload, as pure functions, so that host
 * tools can check a memory image (a snapshot's memory file, a child's RAM)
 * against the writer's sequence number offline, exactly as the guest's own
 * `verify` command does. Freestanding: fixed-width types only.
 *
 * The writer on CPU `cpu` owns `pages` 4 KiB pages from guest physical
 * `base`. Step seq = 1, 2, 3, ... stores seq (u64) at offset 0 and
 * PROBE_PATTERN_TAG(cpu) (u64) at offset 8 of page probe_pattern_page(seq),
 * then publishes seq. Steps come in epochs of `pages` steps; epoch e visits
 * every page once, page (a_e * i + b_e) mod pages at its step i, with a_e
 * and b_e from a hash of (cpu, e) and a_e coprime to pages. Hence for a
 * published S the last step <= S that wrote page p has a closed form
 * (probe_pattern_expected), from the permutations of the last two epochs.
 */
#ifndef FORKD_PROBE_PATTERN_H
#define FORKD_PROBE_PATTERN_H

#include <stdint.h>

#define PROBE_PATTERN_TAG_MAGIC 0x7061747465726e00ULL /* "pattern\0" */
#define PROBE_PATTERN_TAG(cpu)	(PROBE_PATTERN_TAG_MAGIC | (uint64_t)(cpu))
#define PROBE_PATTERN_PAGE_SIZE 4096u

struct probe_pattern_perm {
	uint64_t a, b, a_inv;
};

/* splitmix64's finaliser. */
static inline uint64_t probe_pattern_hash(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ULL;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 31;
	return x;
}

static inline uint64_t probe_pattern_gcd(uint64_t x, uint64_t y)
{
	while (y) {
		uint64_t t = x % y;

		x = y;
		y = t;
	}
	return x;
}

/* a^-1 mod n for gcd(a, n) == 1 (extended Euclid; n < 2^63). */
static inline uint64_t probe_pattern_mod_inverse(uint64_t a, uint64_t n)
{
	int64_t t = 0, new_t = 1, r = (int64_t)n, new_r = (int64_t)a;

	while (new_r) {
		int64_t q = r / new_r, tmp;

		tmp = t - q * new_t;
		t = new_t;
		new_t = tmp;
		tmp = r - q * new_r;
		r = new_r;
		new_r = tmp;
	}
	return t < 0 ? (uint64_t)(t + (int64_t)n) : (uint64_t)t;
}

/* The permutation of epoch `epoch`; pages must be >= 1 and < 2^32. */
static inline struct probe_pattern_perm probe_pattern_epoch_perm(unsigned cpu, uint64_t epoch,
								 uint64_t pages)
{
	uint64_t key = ((uint64_t)cpu << 48) ^ (epoch << 1);
	struct probe_pattern_perm p;

	if (pages == 1)
		return (struct probe_pattern_perm){.a = 0, .b = 0, .a_inv = 0};
	p.a = (probe_pattern_hash(key) % pages) | 1;
	p.b = probe_pattern_hash(key ^ 1) % pages;
	while (p.a >= pages || probe_pattern_gcd(p.a, pages) != 1)
		p.a = p.a + 2 >= pages ? 1 : p.a + 2;
	p.a_inv = probe_pattern_mod_inverse(p.a, pages);
	return p;
}

/* Page written by step seq (>= 1). */
static inline uint64_t probe_pattern_page(unsigned cpu, uint64_t seq, uint64_t pages)
{
	struct probe_pattern_perm p = probe_pattern_epoch_perm(cpu, (seq - 1) / pages, pages);

	return (p.a * ((seq - 1) % pages) + p.b) % pages;
}

/* Step index within its epoch at which permutation p writes page. */
static inline uint64_t probe_pattern_index(const struct probe_pattern_perm *p, uint64_t page,
					   uint64_t pages)
{
	return p->a_inv * ((page + pages - p->b) % pages) % pages;
}

/*
 * The last step <= s that wrote page, or 0 if none did. cur and prev are the
 * permutations of epochs (s - 1) / pages and the one before (any value when
 * s <= pages).
 */
static inline uint64_t probe_pattern_expected(uint64_t page, uint64_t s, uint64_t pages,
					      const struct probe_pattern_perm *cur,
					      const struct probe_pattern_perm *prev)
{
	uint64_t epoch, i;

	if (s == 0)
		return 0;
	epoch = (s - 1) / pages;
	i = probe_pattern_index(cur, page, pages);
	if (i <= (s - 1) % pages)
		return epoch * pages + i + 1;
	if (epoch == 0)
		return 0;
	return (epoch - 1) * pages + probe_pattern_index(prev, page, pages) + 1;
}

/*
 * Does a page hold what a writer at published step s must leave there? got
 * and got_tag are the page's words at offsets 0 and 8, want is
 * probe_pattern_expected(page, s, ...), inflight the page of step s + 1.
 *  live (strict 0): a value > s on its own page is fine: the writer runs on.
 *  strict: exact, except the one step s + 1 that a running writer may have
 *  stored but not yet published; for a frozen writer (stopped before its
 *  next store) exact, untouched pages included (tag 0).
 * A completed store also wrote the tag; an in-flight one may not have yet.
 */
static inline int probe_pattern_page_ok(unsigned cpu, uint64_t page, uint64_t pages, uint64_t s,
					uint64_t want, uint64_t inflight, uint64_t got,
					uint64_t got_tag, int strict, int frozen)
{
	uint64_t tag = PROBE_PATTERN_TAG(cpu);
	int ok;

	if (got == want)
		ok = 1;
	else if (strict)
		ok = !frozen && got == s + 1 && page == inflight;
	else
		ok = got > s && probe_pattern_page(cpu, got, pages) == page;
	if (ok && got != 0 && got <= s && got_tag != tag)
		ok = 0;
	if (ok && strict && frozen && got_tag != (got ? tag : 0))
		ok = 0;
	return ok;
}

#endif
