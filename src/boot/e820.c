/* SPDX-License-Identifier: MIT */
#include "boot/e820.h"

#include "core/layout.h"

static int add(struct hvm_memmap_table_entry *out, int n, uint64_t addr, uint64_t size,
	       uint32_t type)
{
	if (size == 0 || n >= E820_MAX_ENTRIES)
		return n;
	out[n] = (struct hvm_memmap_table_entry){.addr = addr, .size = size, .type = type};
	return n + 1;
}

int e820_build(const struct guest_mem *mem, struct hvm_memmap_table_entry *out)
{
	uint64_t low_end = guest_mem_low_end(mem);
	int n = 0;

	/*
	 * The conventional PC low-memory map: RAM up to the EBDA, the EBDA and
	 * BIOS area reserved (our ACPI tables live there), RAM from 1 MiB.
	 */
	n = add(out, n, 0, low_end < LAYOUT_EBDA_START ? low_end : LAYOUT_EBDA_START,
		XEN_HVM_MEMMAP_TYPE_RAM);
	n = add(out, n, LAYOUT_EBDA_START, LAYOUT_HIGH_MEM_START - LAYOUT_EBDA_START,
		XEN_HVM_MEMMAP_TYPE_RESERVED);
	if (low_end > LAYOUT_HIGH_MEM_START)
		n = add(out, n, LAYOUT_HIGH_MEM_START, low_end - LAYOUT_HIGH_MEM_START,
			XEN_HVM_MEMMAP_TYPE_RAM);
	for (int i = 1; i < mem->nr_regions; i++)
		n = add(out, n, mem->regions[i].gpa, mem->regions[i].size, XEN_HVM_MEMMAP_TYPE_RAM);
	return n;
}
