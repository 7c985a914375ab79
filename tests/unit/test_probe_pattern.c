/* SPDX-License-Identifier: MIT */
/* The probe's pattern order (include/forkd/probe_pattern.h), checked against a brute-force replay.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "forkd/probe_pattern.h"

/* Every epoch visits every page exactly once, and a_inv inverts a. */
static void test_epoch_is_permutation(void **state)
{
	static const uint64_t sizes[] = {1, 2, 256, 768, 4096, 3 * 256 * 5};
	(void)state;

	for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		uint64_t pages = sizes[s];
		uint8_t *seen = calloc(pages, 1);

		assert_non_null(seen);
		for (uint64_t epoch = 0; epoch < 5; epoch++) {
			struct probe_pattern_perm p = probe_pattern_epoch_perm(3, epoch, pages);

			memset(seen, 0, pages);
			for (uint64_t i = 0; i < pages; i++) {
				uint64_t page = probe_pattern_page(3, epoch * pages + i + 1, pages);

				assert_true(page < pages);
				assert_int_equal(seen[page], 0);
				seen[page] = 1;
				assert_int_equal(probe_pattern_index(&p, page, pages), i);
			}
		}
		free(seen);
	}
}

/* The closed form equals "last step <= S that wrote the page" for every S. */
static void test_expected_matches_replay(void **state)
{
	const uint64_t pages = 768;
	uint64_t *last = calloc(pages, sizeof(*last));
	(void)state;

	assert_non_null(last);
	for (uint64_t s = 0; s <= 4 * pages + 17; s++) {
		uint64_t epoch = s ? (s - 1) / pages : 0;
		struct probe_pattern_perm cur = probe_pattern_epoch_perm(1, epoch, pages);
		struct probe_pattern_perm prev =
		    probe_pattern_epoch_perm(1, epoch ? epoch - 1 : 0, pages);

		if (s)
			last[probe_pattern_page(1, s, pages)] = s;
		for (uint64_t p = 0; p < pages; p++)
			assert_int_equal(probe_pattern_expected(p, s, pages, &cur, &prev), last[p]);
	}
	free(last);
}

/* Different CPUs write in different orders (so a mixed-up image is caught). */
static void test_cpus_differ(void **state)
{
	unsigned same = 0;
	(void)state;

	for (uint64_t seq = 1; seq <= 1000; seq++)
		same += probe_pattern_page(0, seq, 4096) == probe_pattern_page(1, seq, 4096);
	assert_true(same < 50);
}

/* The page check both verifiers use: exact when strict and frozen, one in-flight step otherwise. */
static void test_page_ok(void **state)
{
	const uint64_t pages = 64, s = 100;
	const unsigned cpu = 1;
	const uint64_t tag = PROBE_PATTERN_TAG(cpu);
	uint64_t epoch = (s - 1) / pages;
	struct probe_pattern_perm cur = probe_pattern_epoch_perm(cpu, epoch, pages);
	struct probe_pattern_perm prev = probe_pattern_epoch_perm(cpu, epoch - 1, pages);
	uint64_t inflight = probe_pattern_page(cpu, s + 1, pages);
	uint64_t later = s + 5, later_page = probe_pattern_page(cpu, later, pages);
	(void)state;

	for (uint64_t p = 0; p < pages; p++) {
		uint64_t want = probe_pattern_expected(p, s, pages, &cur, &prev);

		/* The exact image passes in every mode. */
		for (int strict = 0; strict <= 1; strict++)
			for (int frozen = 0; frozen <= 1; frozen++)
				assert_true(probe_pattern_page_ok(cpu, p, pages, s, want, inflight,
								  want, want ? tag : 0, strict,
								  frozen));
		/* A completed store without its tag is torn. */
		if (want)
			assert_false(
			    probe_pattern_page_ok(cpu, p, pages, s, want, inflight, want, 0, 1, 1));
		/* A stale value (an older write) is wrong in every mode. */
		if (want > 1)
			assert_false(probe_pattern_page_ok(cpu, p, pages, s, want, inflight,
							   want - 1, tag, 0, 0));
	}
	/* Step s + 1 stored but not yet published: fine while running, wrong when frozen. */
	uint64_t w = probe_pattern_expected(inflight, s, pages, &cur, &prev);
	assert_true(probe_pattern_page_ok(cpu, inflight, pages, s, w, inflight, s + 1, 0, 1, 0));
	assert_false(probe_pattern_page_ok(cpu, inflight, pages, s, w, inflight, s + 1, tag, 1, 1));
	/* A page from a later instant: fine for a live check only. */
	w = probe_pattern_expected(later_page, s, pages, &cur, &prev);
	assert_true(
	    probe_pattern_page_ok(cpu, later_page, pages, s, w, inflight, later, tag, 0, 0));
	assert_false(
	    probe_pattern_page_ok(cpu, later_page, pages, s, w, inflight, later, tag, 1, 0));
	assert_false(
	    probe_pattern_page_ok(cpu, later_page, pages, s, w, inflight, later, tag, 1, 1));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_epoch_is_permutation),
	    cmocka_unit_test(test_expected_matches_replay),
	    cmocka_unit_test(test_cpus_differ),
	    cmocka_unit_test(test_page_ok),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
