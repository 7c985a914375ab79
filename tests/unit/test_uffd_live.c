/* SPDX-License-Identifier: MIT */
/*
 * The uffd-wp engine's pieces that need no VM (src/uffd/uffd_live.c): a
 * fault address to its page in the memory file, both regions of a guest
 * larger than 4 GiB, and every address outside them refused; the per-page
 * state machine: a page is claimed once, however many threads race for it,
 * and a waiter returns only once the claimer's copy is complete.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "uffd/uffd_live.h"

#define PAGE 4096ull

/* As forkd-vmm lays out 3 GiB + 1 GiB: low region, then the high one right after it. */
static const struct wp_region regions[2] = {
    {.hva = 0x7f0000000000ull, .size = 3ull << 30, .first_page = 0},
    {.hva = 0x7f00c0000000ull, .size = 1ull << 30, .first_page = (3ull << 30) / PAGE},
};

static void test_page_index(void **state)
{
	(void)state;
	assert_int_equal(wp_page_index(regions, 2, regions[0].hva), 0);
	assert_int_equal(wp_page_index(regions, 2, regions[0].hva + 5 * PAGE + 17), 5);
	assert_int_equal(wp_page_index(regions, 2, regions[1].hva), (3ull << 30) / PAGE);
	assert_int_equal(wp_page_index(regions, 2, regions[1].hva + regions[1].size - 1),
			 (4ull << 30) / PAGE - 1);
}

static void test_page_index_out_of_range(void **state)
{
	const struct wp_region gap[2] = {
	    {.hva = 0x10000000, .size = 16 * PAGE, .first_page = 0},
	    {.hva = 0x20000000, .size = 16 * PAGE, .first_page = 16},
	};

	(void)state;
	assert_int_equal(wp_page_index(regions, 2, regions[0].hva - 1), -ERANGE);
	assert_int_equal(wp_page_index(regions, 2, regions[1].hva + regions[1].size), -ERANGE);
	assert_int_equal(wp_page_index(regions, 2, 0), -ERANGE);
	assert_int_equal(wp_page_index(regions, 2, UINT64_MAX), -ERANGE);
	/* Between two regions that are not adjacent. */
	assert_int_equal(wp_page_index(gap, 2, 0x10000000 + 16 * PAGE), -ERANGE);
	assert_int_equal(wp_page_index(gap, 2, 0x20000000 - 1), -ERANGE);
	assert_int_equal(wp_page_index(gap, 2, 0x20000000 + 3 * PAGE), 19);
	/* No region at all: nothing is in range. */
	assert_int_equal(wp_page_index(gap, 0, 0x10000000), -ERANGE);
}

static void test_claim_once(void **state)
{
	_Atomic uint8_t pages[4] = {0};

	(void)state;
	assert_true(wp_page_claim(pages, 1));
	assert_int_equal(atomic_load(&pages[1]), WP_PAGE_COPYING);
	assert_false(wp_page_claim(pages, 1));
	wp_page_done(pages, 1);
	assert_int_equal(atomic_load(&pages[1]), WP_PAGE_COPIED);
	assert_false(wp_page_claim(pages, 1));
	wp_page_wait(pages, 1); /* copied: returns at once */
	assert_int_equal(atomic_load(&pages[0]), WP_PAGE_NOT_COPIED);
}

#define RACE_PAGES (1u << 18)

struct racer {
	_Atomic uint8_t *pages;
	uint8_t *copies; /* how many times each page was "copied" */
	unsigned claimed;
	bool backwards; /* one racer walks like the bulk copier, the other from the end */
};

static void *race(void *arg)
{
	struct racer *r = arg;

	for (unsigned k = 0; k < RACE_PAGES; k++) {
		unsigned i = r->backwards ? RACE_PAGES - 1 - k : k;

		if (wp_page_claim(r->pages, i)) {
			r->copies[i]++;
			r->claimed++;
			wp_page_done(r->pages, i);
		} else {
			wp_page_wait(r->pages, i);
			/* The claimer's copy is complete before a waiter goes on. */
			assert_int_equal(r->copies[i], 1);
		}
	}
	return NULL;
}

static void test_two_threads_never_copy_one_page_twice(void **state)
{
	_Atomic uint8_t *pages = calloc(RACE_PAGES, 1);
	uint8_t *copies = calloc(RACE_PAGES, 1);
	struct racer a = {.pages = pages, .copies = copies},
		     b = {.pages = pages, .copies = copies, .backwards = true};
	pthread_t ta, tb;

	(void)state;
	assert_non_null(pages);
	assert_non_null(copies);
	assert_int_equal(pthread_create(&ta, NULL, race, &a), 0);
	assert_int_equal(pthread_create(&tb, NULL, race, &b), 0);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	assert_int_equal(a.claimed + b.claimed, RACE_PAGES);
	for (unsigned i = 0; i < RACE_PAGES; i++) {
		assert_int_equal(copies[i], 1);
		assert_int_equal(atomic_load(&pages[i]), WP_PAGE_COPIED);
	}
	free(pages);
	free(copies);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_page_index),
	    cmocka_unit_test(test_page_index_out_of_range),
	    cmocka_unit_test(test_claim_once),
	    cmocka_unit_test(test_two_threads_never_copy_one_page_twice),
	};
	return cmocka_run_group_tests_name("uffd-wp engine: page index and state machine", tests,
					   NULL, NULL);
}
