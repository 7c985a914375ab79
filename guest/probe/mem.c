/* SPDX-License-Identifier: MIT */
/*
 * RAM from the PVH memory map: totals, a write/read-back check of both ends
 * of every region (how tests prove RAM above 4 GiB works), and a bump
 * allocator for workload memory.
 */
#include "probe.h"

#define MAX_RAM_REGIONS 32

struct ram_region {
	uint64_t base;
	uint64_t end;
	uint64_t next; /* bump pointer, 2 MiB aligned */
};

/* Filled by the BSP in mem_init(); the allocator runs under alloc_lock. */
static struct ram_region ram[MAX_RAM_REGIONS];
static unsigned nr_ram;
static uint64_t ram_bytes, ram_top;
static struct spinlock alloc_lock;

/* entry.S: the top-level page tables (identity map, 2 MiB pages below 4 GiB). */
extern uint64_t pdpt[512];

#define GIB	       (1ULL << 30)
#define LOW_MAPPED_GIB 4
#define PTE_P_RW_US    0x7ULL
#define PTE_P_RW_US_PS 0x87ULL

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) & ~(a - 1);
}

/* Writes a distinct value at addr, reads it back, restores the old contents. */
static bool check_word(uint64_t addr)
{
	volatile uint64_t *p = (volatile uint64_t *)(uintptr_t)addr;
	uint64_t want = 0x70726f6265000000ULL ^ hash64(addr);
	uint64_t old = *p, got;

	*p = want;
	got = *p;
	*p = old;
	return got == want;
}

/*
 * entry.S maps only the low 4 GiB (KVM-PVM offers no 1 GiB pages, and CPL0
 * is too slow to fill tables). Map RAM above that here, at native speed:
 * fill fresh page directories first, then link each into the PDPT (the
 * only writes the shadow MMU has to trap).
 */
static bool map_high(void)
{
	/* One GiB more than RAM, so probes of "just above RAM" hit the VMM, not a #PF. */
	uint64_t top_gib = (ram_top + GIB - 1) / GIB + 1, nr_pd, pds;

	if (top_gib > 512) {
		say("mem.error=RAM above 512 GiB is not mapped");
		top_gib = 512;
	}
	if (ram_top <= LOW_MAPPED_GIB * GIB)
		return true;
	nr_pd = top_gib - LOW_MAPPED_GIB;
	pds = mem_alloc(nr_pd * PAGE_SIZE);
	if (!pds || pds + nr_pd * PAGE_SIZE > LOW_MAPPED_GIB * GIB) {
		say("mem.error=no low memory for the page tables mapping RAM above 4 GiB");
		return false;
	}
	for (uint64_t g = 0; g < nr_pd; g++) {
		uint64_t *pd = (uint64_t *)(uintptr_t)(pds + g * PAGE_SIZE);

		for (uint64_t j = 0; j < 512; j++)
			pd[j] = (LOW_MAPPED_GIB + g) * GIB + j * ALLOC_ALIGN + PTE_P_RW_US_PS;
	}
	barrier();
	for (uint64_t g = 0; g < nr_pd; g++)
		WRITE_ONCE(pdpt[LOW_MAPPED_GIB + g], (pds + g * PAGE_SIZE) | PTE_P_RW_US);
	return true;
}

void mem_init(const struct hvm_start_info *si)
{
	const struct hvm_memmap_table_entry *e;
	uint64_t bad = 0;
	bool ok;

	if (si->version < 1 || si->memmap_entries == 0 || si->memmap_paddr == 0) {
		say("mem.error=no PVH memory map (version %u, %u entries)", si->version,
		    si->memmap_entries);
		return;
	}
	e = (const struct hvm_memmap_table_entry *)(uintptr_t)si->memmap_paddr;
	for (uint32_t i = 0; i < si->memmap_entries; i++) {
		uint64_t end = e[i].addr + e[i].size;

		if (e[i].type != XEN_HVM_MEMMAP_TYPE_RAM || e[i].size == 0 || end < e[i].addr)
			continue;
		if (nr_ram == MAX_RAM_REGIONS) {
			say("mem.error=more than %u RAM regions, ignoring the rest",
			    MAX_RAM_REGIONS);
			break;
		}
		ram[nr_ram].base = e[i].addr;
		ram[nr_ram].end = end;
		ram[nr_ram].next =
		    align_up(e[i].addr > ALLOC_START ? e[i].addr : ALLOC_START, ALLOC_ALIGN);
		nr_ram++;
		ram_bytes += e[i].size;
		if (end > ram_top)
			ram_top = end;
	}
	ok = map_high();
	for (unsigned i = 0; i < nr_ram && ok; i++) {
		uint64_t first = ram[i].base, last = ram[i].end - 8;

		if (ram[i].end - ram[i].base < 8)
			continue;
		if (!check_word(first)) {
			ok = false;
			bad = first;
		} else if (last > first && !check_word(last)) {
			ok = false;
			bad = last;
		}
	}
	say("mem.regions=%u", nr_ram);
	for (unsigned i = 0; i < nr_ram && cfg.verbose; i++)
		say("mem.region%u=0x%lx-0x%lx", i, ram[i].base, ram[i].end);
	say("mem.top=0x%lx", ram_top);
	if (ok)
		say("mem.high_ok=1");
	else
		say("mem.high_ok=0 addr=0x%lx", bad);
}

uint64_t mem_mib(void)
{
	return (ram_bytes + MIB - 1) / MIB;
}

uint64_t mem_top(void)
{
	return ram_top;
}

bool mem_is_ram(uint64_t addr, uint64_t len)
{
	for (unsigned i = 0; i < nr_ram; i++)
		if (addr >= ram[i].base && addr <= ram[i].end && len <= ram[i].end - addr)
			return true;
	return false;
}

uint64_t mem_alloc(uint64_t bytes)
{
	uint64_t got = 0;

	bytes = align_up(bytes ? bytes : 1, ALLOC_ALIGN);
	spin_lock(&alloc_lock);
	for (unsigned i = 0; i < nr_ram; i++) {
		if (ram[i].next < ram[i].end && ram[i].end - ram[i].next >= bytes) {
			got = ram[i].next;
			ram[i].next += bytes;
			break;
		}
	}
	spin_unlock(&alloc_lock);
	return got;
}
