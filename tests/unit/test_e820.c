/* SPDX-License-Identifier: MIT */
/* The memory map handed to the guest: it must describe exactly the RAM guest_mem allocated. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "boot/e820.h"
#include "core/layout.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

/* The EBDA/BIOS area the map keeps reserved; our ACPI tables live there. */
#define LEGACY_HOLE_START LAYOUT_EBDA_START
#define LEGACY_HOLE_END	  LAYOUT_HIGH_MEM_START

static bool gpa_is_ram(const struct guest_mem *mem, uint64_t gpa)
{
	return guest_mem_ptr(mem, gpa, 1) != NULL;
}

/* Builds the map for a memory size and checks every property a guest relies on. */
static void check_map(uint64_t size)
{
	struct hvm_memmap_table_entry map[E820_MAX_ENTRIES + 1];
	struct guest_mem mem;
	struct fk_err err = {0};
	uint64_t ram = 0;
	bool have_reserved = false, have_above_4g = false;
	int n;

	if (guest_mem_init(&mem, GUEST_MEM_ANON, size, &err) != 0)
		fail_msg("guest_mem_init(%llu): %s", (unsigned long long)size, err.msg);
	/* A canary entry past the maximum: e820_build must not write there. */
	memset(map, 0xAB, sizeof(map));
	n = e820_build(&mem, map);
	assert_in_range(n, 1, E820_MAX_ENTRIES);
	assert_int_equal(map[E820_MAX_ENTRIES].type, 0xABABABABu);

	for (int i = 0; i < n; i++) {
		const struct hvm_memmap_table_entry *e = &map[i];

		assert_true(e->size > 0);
		assert_true(e->addr + e->size > e->addr);
		assert_int_equal(e->reserved, 0);
		if (i > 0 && map[i - 1].addr + map[i - 1].size > e->addr)
			fail_msg("%lluM: entry %d [%#llx, +%#llx) overlaps or is out of order",
				 (unsigned long long)(size >> 20), i, (unsigned long long)e->addr,
				 (unsigned long long)e->size);
		switch (e->type) {
		case XEN_HVM_MEMMAP_TYPE_RAM:
			/* Every byte called RAM is backed; checking the ends covers the run. */
			assert_non_null(guest_mem_ptr(&mem, e->addr, e->size));
			/* RAM never covers the legacy hole. */
			assert_true(e->addr + e->size <= LEGACY_HOLE_START ||
				    e->addr >= LEGACY_HOLE_END);
			ram += e->size;
			if (e->addr >= GUEST_MMIO_HOLE_END)
				have_above_4g = true;
			break;
		case XEN_HVM_MEMMAP_TYPE_RESERVED:
			if (e->addr == LEGACY_HOLE_START && e->addr + e->size == LEGACY_HOLE_END)
				have_reserved = true;
			break;
		default:
			fail_msg("entry %d has unexpected type %u", i, e->type);
		}
	}
	assert_true(have_reserved);
	assert_int_equal(ram, size - (LEGACY_HOLE_END - LEGACY_HOLE_START));
	assert_int_equal(have_above_4g, size > GUEST_MMIO_HOLE_START);

	/* Conversely, every RAM region boundary guest_mem knows is RAM in the map. */
	for (int r = 0; r < mem.nr_regions; r++) {
		uint64_t first = mem.regions[r].gpa, last = first + mem.regions[r].size - 1;
		const uint64_t probes[] = {first, last};

		for (int p = 0; p < 2; p++) {
			bool in_map = false;

			if (probes[p] >= LEGACY_HOLE_START && probes[p] < LEGACY_HOLE_END)
				continue;
			for (int i = 0; i < n; i++)
				if (map[i].type == XEN_HVM_MEMMAP_TYPE_RAM &&
				    probes[p] >= map[i].addr &&
				    probes[p] - map[i].addr < map[i].size)
					in_map = true;
			assert_true(in_map);
			assert_true(gpa_is_ram(&mem, probes[p]));
		}
	}
	guest_mem_destroy(&mem);
}

static void test_map_64m(void **state)
{
	(void)state;
	check_map(64 * MiB);
}

static void test_map_1g(void **state)
{
	(void)state;
	check_map(1 * GiB);
}

static void test_map_3g(void **state)
{
	(void)state;
	check_map(3 * GiB);
}

static void test_map_3g_plus_2m(void **state)
{
	(void)state;
	check_map(3 * GiB + 2 * MiB);
}

static void test_map_5g(void **state)
{
	(void)state;
	check_map(5 * GiB);
}

/* The exact shape for 5 GiB, spelled out: low RAM, legacy hole, RAM to 3 GiB, RAM from 4 GiB. */
static void test_map_5g_entries(void **state)
{
	const struct hvm_memmap_table_entry want[] = {
	    {0, LEGACY_HOLE_START, XEN_HVM_MEMMAP_TYPE_RAM, 0},
	    {LEGACY_HOLE_START, LEGACY_HOLE_END - LEGACY_HOLE_START, XEN_HVM_MEMMAP_TYPE_RESERVED,
	     0},
	    {LEGACY_HOLE_END, GUEST_MMIO_HOLE_START - LEGACY_HOLE_END, XEN_HVM_MEMMAP_TYPE_RAM, 0},
	    {GUEST_MMIO_HOLE_END, 2 * GiB, XEN_HVM_MEMMAP_TYPE_RAM, 0},
	};
	struct hvm_memmap_table_entry map[E820_MAX_ENTRIES];
	struct guest_mem mem;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_ANON, 5 * GiB, &err), 0);
	assert_int_equal(e820_build(&mem, map), 4);
	for (int i = 0; i < 4; i++) {
		assert_int_equal(map[i].addr, want[i].addr);
		assert_int_equal(map[i].size, want[i].size);
		assert_int_equal(map[i].type, want[i].type);
	}
	guest_mem_destroy(&mem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_map_64m), cmocka_unit_test(test_map_1g),
	    cmocka_unit_test(test_map_3g),  cmocka_unit_test(test_map_3g_plus_2m),
	    cmocka_unit_test(test_map_5g),  cmocka_unit_test(test_map_5g_entries),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
