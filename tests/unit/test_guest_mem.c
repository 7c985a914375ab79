/* SPDX-License-Identifier: MIT */
/* Guest RAM layout around the 3..4 GiB MMIO hole, and the bounds checks every guest pointer goes
 * through. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/guest_mem.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

#define LOW_END	   GUEST_MMIO_HOLE_START /* 3 GiB */
#define HIGH_START GUEST_MMIO_HOLE_END	 /* 4 GiB */

static void init_or_fail(struct guest_mem *mem, uint64_t size)
{
	struct fk_err err = {0};

	if (guest_mem_init(mem, GUEST_MEM_ANON, size, &err) != 0)
		fail_msg("guest_mem_init(%llu): %s", (unsigned long long)size, err.msg);
}

/* Writes and reads back the first and last byte of a region: both must be mapped, distinct memory.
 */
static void poke_region_ends(const struct guest_mem_region *r)
{
	r->hva[0] = 0xA5;
	r->hva[r->size - 1] = 0x5A;
	assert_int_equal(r->hva[0], 0xA5);
	assert_int_equal(r->hva[r->size - 1], 0x5A);
}

static void test_layouts(void **state)
{
	static const struct {
		uint64_t size;
		int nr_regions;
		uint64_t low, high; /* bytes below 3 GiB and from 4 GiB */
	} cases[] = {
	    {64 * MiB, 1, 64 * MiB, 0},
	    {3 * GiB, 1, 3 * GiB, 0},
	    {3 * GiB + 2 * MiB, 2, 3 * GiB, 2 * MiB},
	    {5 * GiB, 2, 3 * GiB, 2 * GiB},
	    {4096, 1, 4096, 0},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct guest_mem mem;

		init_or_fail(&mem, cases[i].size);
		assert_int_equal(mem.backend, GUEST_MEM_ANON);
		assert_int_equal(mem.total_size, cases[i].size);
		assert_int_equal(mem.nr_regions, cases[i].nr_regions);
		assert_int_equal(mem.regions[0].gpa, 0);
		assert_int_equal(mem.regions[0].size, cases[i].low);
		assert_ptr_equal(mem.regions[0].hva, mem.mapping);
		assert_int_equal(guest_mem_low_end(&mem), cases[i].low);
		poke_region_ends(&mem.regions[0]);
		if (cases[i].high) {
			assert_int_equal(mem.regions[1].gpa, HIGH_START);
			assert_int_equal(mem.regions[1].size, cases[i].high);
			/* One mapping: the high region follows the low one on the host. */
			assert_ptr_equal(mem.regions[1].hva, mem.mapping + cases[i].low);
			poke_region_ends(&mem.regions[1]);
		}
		assert_true(mem.mapping_size >= cases[i].size);
		guest_mem_destroy(&mem);
		assert_null(mem.mapping);
		assert_int_equal(mem.nr_regions, 0);
	}
}

/* RAM starts on a 2 MiB host boundary so guest large pages line up with host THPs. */
static void test_mapping_is_2m_aligned(void **state)
{
	static const uint64_t sizes[] = {4096, 2 * MiB - 4096, 64 * MiB, 64 * MiB + 4096,
					 3 * GiB + 2 * MiB};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct guest_mem mem;

		init_or_fail(&mem, sizes[i]);
		assert_int_equal((uintptr_t)mem.mapping % (2 * MiB), 0);
		for (int r = 0; r < mem.nr_regions; r++)
			assert_int_equal((uintptr_t)mem.regions[r].hva % (2 * MiB), 0);
		guest_mem_destroy(&mem);
	}
}

static void test_bad_sizes(void **state)
{
	static const uint64_t sizes[] = {0, 1, 4095, 4097, 64 * MiB + 2048, 3 * GiB + 1};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct guest_mem mem;
		struct fk_err err = {0};
		char size_text[32];

		memset(&mem, 0xCC, sizeof(mem));
		assert_int_equal(guest_mem_init(&mem, GUEST_MEM_ANON, sizes[i], &err), -EINVAL);
		assert_int_equal(err.code, EINVAL);
		snprintf(size_text, sizeof(size_text), "%llu", (unsigned long long)sizes[i]);
		if (!strstr(err.msg, size_text))
			fail_msg("error \"%s\" does not name the size %s", err.msg, size_text);
		/* Left empty, so destroying it is harmless. */
		assert_null(mem.mapping);
		guest_mem_destroy(&mem);
	}
}

static void test_bad_backend(void **state)
{
	struct guest_mem mem;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(guest_mem_init(&mem, (enum guest_mem_backend)7, 64 * MiB, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "7"));
	assert_null(mem.mapping);
}

static void test_backend_names(void **state)
{
	enum guest_mem_backend b = GUEST_MEM_FILE;

	(void)state;
	assert_int_equal(guest_mem_backend_parse("hugetlb", &b), 0);
	assert_int_equal(b, GUEST_MEM_HUGETLB);
	assert_int_equal(guest_mem_backend_parse("anon", &b), 0);
	assert_int_equal(b, GUEST_MEM_ANON);
	assert_int_equal(guest_mem_backend_parse("", &b), -EINVAL);
	assert_int_equal(guest_mem_backend_parse("hugetlbfs", &b), -EINVAL);
	assert_string_equal(guest_mem_backend_name(GUEST_MEM_HUGETLB), "hugetlb");
	assert_string_equal(guest_mem_backend_name(GUEST_MEM_ANON), "anon");
	assert_string_equal(guest_mem_backend_name((enum guest_mem_backend)9), "unknown");
}

/* Not a multiple of 2 MiB: refused before any pool is asked (whatever nr_hugepages is). */
static void test_hugetlb_size_must_be_2m(void **state)
{
	struct guest_mem mem;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_HUGETLB, 33 * MiB, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "multiple of 2 MiB"));
	assert_null(mem.mapping);
}

/*
 * A size the host cannot map must fail, not wrap the over-allocation and
 * hand out regions backed by nothing. Run in a child: if it "succeeds" the
 * bad mapping must not disturb this process.
 */
static void test_absurd_sizes_fail(void **state)
{
	static const uint64_t sizes[] = {
	    1ULL << 62,
	    UINT64_MAX & ~4095ULL,
	    (uint64_t)0 - 2 * MiB,
	    (uint64_t)0 - 2 * MiB + 4096,
	};

	(void)state;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		int status;
		pid_t pid = fork();

		assert_true(pid >= 0);
		if (pid == 0) {
			struct guest_mem mem;
			struct fk_err err = {0};

			_exit(guest_mem_init(&mem, GUEST_MEM_ANON, sizes[i], &err) < 0 ? 0 : 1);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			fail_msg("guest_mem_init(%#llx) did not fail cleanly (status %#x)",
				 (unsigned long long)sizes[i], status);
	}
}

struct ptr_case {
	uint64_t gpa, len;
	int64_t want; /* offset into the mapping, or -1 for NULL */
};

static void check_ptr_cases(const struct guest_mem *mem, const struct ptr_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		uint8_t *got = guest_mem_ptr(mem, cases[i].gpa, cases[i].len);
		uint8_t *want = cases[i].want < 0 ? NULL : mem->mapping + cases[i].want;

		if (got != want)
			fail_msg("guest_mem_ptr(%#llx, %#llx) = %p, want %p (case %zu)",
				 (unsigned long long)cases[i].gpa, (unsigned long long)cases[i].len,
				 (void *)got, (void *)want, i);
	}
}

static void test_ptr_single_region(void **state)
{
	const uint64_t end = 64 * MiB;
	const struct ptr_case cases[] = {
	    {0, 0, 0},
	    {0, 1, 0},
	    {0, end, 0},
	    {0, end + 1, -1},
	    {end - 1, 1, (int64_t)end - 1},
	    {end - 1, 0, (int64_t)end - 1},
	    {end - 1, 2, -1},
	    {end, 0, -1},
	    {end, 1, -1},
	    {0x1000, end - 0x1000, 0x1000},
	    {0x1000, end - 0x1000 + 1, -1},
	    {HIGH_START, 1, -1},
	    {1, UINT64_MAX, -1},
	    {0, UINT64_MAX, -1},
	    {UINT64_MAX, 0, -1},
	    {UINT64_MAX, 1, -1},
	    {UINT64_MAX - 0xF, 0x20, -1},
	};
	struct guest_mem mem;

	(void)state;
	init_or_fail(&mem, end);
	check_ptr_cases(&mem, cases, sizeof(cases) / sizeof(cases[0]));
	guest_mem_destroy(&mem);
}

static void test_ptr_two_regions(void **state)
{
	const uint64_t high_size = 2 * GiB, high_end = HIGH_START + high_size;
	const int64_t high = (int64_t)LOW_END; /* host offset of the high region */
	const struct ptr_case cases[] = {
	    /* region 0 */
	    {0, 1, 0},
	    {LOW_END - 1, 1, high - 1},
	    {LOW_END - 4096, 4096, high - 4096},
	    {0, LOW_END, 0},
	    /* the hole, and ranges straddling its edges */
	    {LOW_END, 0, -1},
	    {LOW_END, 1, -1},
	    {LOW_END - 1, 2, -1},
	    {0, LOW_END + 1, -1},
	    {0xFEC00000ULL, 4, -1},
	    {HIGH_START - 1, 1, -1},
	    {HIGH_START - 1, 2, -1},
	    {LOW_END - 1, HIGH_START - LOW_END + 2, -1},
	    /* region 1 */
	    {HIGH_START, 0, high},
	    {HIGH_START, 1, high},
	    {HIGH_START, high_size, high},
	    {HIGH_START, high_size + 1, -1},
	    {high_end - 1, 1, high + (int64_t)high_size - 1},
	    {high_end - 1, 2, -1},
	    {high_end, 0, -1},
	    {high_end, 1, -1},
	    /* huge and wrapping lengths, addresses near the top */
	    {HIGH_START + 1, UINT64_MAX, -1},
	    {HIGH_START, UINT64_MAX - HIGH_START + 1, -1},
	    {0x100, UINT64_MAX - 0xFF, -1},
	    {UINT64_MAX, 1, -1},
	    {UINT64_MAX - 1, 4, -1},
	    {UINT64_MAX - LOW_END, LOW_END + 0x10, -1},
	};
	struct guest_mem mem;

	(void)state;
	init_or_fail(&mem, LOW_END + high_size);
	check_ptr_cases(&mem, cases, sizeof(cases) / sizeof(cases[0]));
	guest_mem_destroy(&mem);
}

static void test_read_write(void **state)
{
	static const uint8_t pattern[] = {1, 2, 3, 4, 5, 6, 7, 8};
	const uint64_t size = 3 * GiB + 2 * MiB;
	uint8_t buf[sizeof(pattern)];
	struct guest_mem mem;

	(void)state;
	init_or_fail(&mem, size);

	/* Round trips at both regions' edges. */
	const uint64_t ok_gpas[] = {0, LOW_END - sizeof(pattern), HIGH_START,
				    HIGH_START + 2 * MiB - sizeof(pattern)};
	for (size_t i = 0; i < sizeof(ok_gpas) / sizeof(ok_gpas[0]); i++) {
		memset(buf, 0, sizeof(buf));
		assert_int_equal(guest_mem_write(&mem, ok_gpas[i], pattern, sizeof(pattern)), 0);
		assert_int_equal(guest_mem_read(&mem, ok_gpas[i], buf, sizeof(buf)), 0);
		assert_memory_equal(buf, pattern, sizeof(pattern));
		assert_memory_equal(guest_mem_ptr(&mem, ok_gpas[i], sizeof(pattern)), pattern,
				    sizeof(pattern));
	}

	/* Refused ranges fail as a whole: nothing is written, the buffer is untouched. */
	const uint64_t bad_gpas[] = {LOW_END - 4, LOW_END, HIGH_START - 4, HIGH_START + 2 * MiB - 4,
				     UINT64_MAX - 3};
	memset(mem.regions[0].hva + LOW_END - 8, 0x11, 8);
	memset(mem.regions[1].hva + 2 * MiB - 8, 0x22, 8);
	for (size_t i = 0; i < sizeof(bad_gpas) / sizeof(bad_gpas[0]); i++) {
		memset(buf, 0xEE, sizeof(buf));
		assert_int_equal(guest_mem_read(&mem, bad_gpas[i], buf, sizeof(buf)), -EFAULT);
		for (size_t b = 0; b < sizeof(buf); b++)
			assert_int_equal(buf[b], 0xEE);
		assert_int_equal(guest_mem_write(&mem, bad_gpas[i], pattern, sizeof(pattern)),
				 -EFAULT);
	}
	for (int b = 0; b < 8; b++) {
		assert_int_equal(mem.regions[0].hva[LOW_END - 8 + b], 0x11);
		assert_int_equal(mem.regions[1].hva[2 * MiB - 8 + b], 0x22);
	}

	/* Zero-length copies are fine inside RAM, refused outside. */
	assert_int_equal(guest_mem_read(&mem, 0x1000, buf, 0), 0);
	assert_int_equal(guest_mem_write(&mem, LOW_END, pattern, 0), -EFAULT);
	guest_mem_destroy(&mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_layouts),
	    cmocka_unit_test(test_mapping_is_2m_aligned),
	    cmocka_unit_test(test_bad_sizes),
	    cmocka_unit_test(test_bad_backend),
	    cmocka_unit_test(test_absurd_sizes_fail),
	    cmocka_unit_test(test_ptr_single_region),
	    cmocka_unit_test(test_ptr_two_regions),
	    cmocka_unit_test(test_read_write),
	    cmocka_unit_test(test_backend_names),
	    cmocka_unit_test(test_hugetlb_size_must_be_2m),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
