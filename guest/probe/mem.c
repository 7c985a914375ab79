/* SPDX-License-Identifier: MIT */
/*
 * RAM from the PVH memory map: totals, a write/read-back check of both ends
 * of every region (how tests prove RAM above 4 GiB works), a bump allocator
 * for workload memory and, with pages=4k, the 4 KiB page tables that map it.
 */
#include "probe.h"

#define MAX_RAM_REGIONS 32

struct ram_region {
	uint64_t base;
	uint64_t end;
	uint64_t next; /* bump pointer, 2 MiB aligned */
};

/*
 * pages=4k: page tables come from 2 MiB blocks of this pool (never split
 * themselves), and the stats say what splitting has cost, for mem.pages=.
 */
struct pt_pool {
	uint64_t next;
	uint64_t end;
};
struct split_stats {
	uint64_t bytes;
	uint64_t pt_pages;
	uint64_t fill_tsc;  /* writing the PTEs (native) */
	uint64_t link_tsc;  /* replacing the PDEs (page-table writes the shadow MMU traps) */
	uint64_t flush_tsc; /* the CPL0 CR3 reload */
	bool failed;
};

/* Filled by the BSP in mem_init(); the allocator, pool and stats run under alloc_lock. */
static struct ram_region ram[MAX_RAM_REGIONS];
static unsigned nr_ram;
static uint64_t ram_bytes, ram_top;
static struct spinlock alloc_lock;
static struct pt_pool pt_pool;
static struct split_stats split_stats;

/* entry.S: the top-level page tables (identity map, 2 MiB pages below 4 GiB). */
extern uint64_t pdpt[512];

#define GIB	       (1ULL << 30)
#define LOW_MAPPED_GIB 4
#define PTE_P	       0x1ULL
#define PTE_PS	       0x80ULL
#define PTE_P_RW_US    0x7ULL
#define PTE_P_RW_US_PS 0x87ULL
#define PTE_ADDR       0x000FFFFFFFFFF000ULL
#define PTES_PER_TABLE 512

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

/* Caller holds alloc_lock; bytes is a multiple of ALLOC_ALIGN. */
static uint64_t bump_alloc_locked(uint64_t bytes)
{
	for (unsigned i = 0; i < nr_ram; i++) {
		if (ram[i].next < ram[i].end && ram[i].end - ram[i].next >= bytes) {
			uint64_t got = ram[i].next;

			ram[i].next += bytes;
			return got;
		}
	}
	return 0;
}

/* RAM that stays mapped with 2 MiB pages whatever pages= says (page tables). */
static uint64_t bump_alloc(uint64_t bytes)
{
	uint64_t got;

	spin_lock(&alloc_lock);
	got = bump_alloc_locked(align_up(bytes ? bytes : 1, ALLOC_ALIGN));
	spin_unlock(&alloc_lock);
	return got;
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
	pds = bump_alloc(nr_pd * PAGE_SIZE);
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

/*
 * n contiguous page-table pages from the pool; a pool block too small for
 * them is dropped (at most 2 MiB lost, and only when a big range follows
 * small ones). Caller holds alloc_lock.
 */
static uint64_t pt_pages_locked(uint64_t n)
{
	uint64_t bytes = n * PAGE_SIZE, got;

	if (pt_pool.end - pt_pool.next < bytes) {
		uint64_t block = align_up(bytes, ALLOC_ALIGN), base = bump_alloc_locked(block);

		if (!base)
			return 0;
		pt_pool.next = base;
		pt_pool.end = base + block;
	}
	got = pt_pool.next;
	pt_pool.next += bytes;
	return got;
}

/* The PDE that maps addr (the identity map lets us follow physical addresses); NULL if none. */
static uint64_t *pde_of(uint64_t addr)
{
	uint64_t pdpte;

	if (addr >> 39) /* pml4 has only entry 0 */
		return NULL;
	pdpte = READ_ONCE(pdpt[addr >> 30]);
	if (!(pdpte & PTE_P) || (pdpte & PTE_PS))
		return NULL;
	return (uint64_t *)(uintptr_t)(pdpte & PTE_ADDR) + ((addr >> 21) & (PTES_PER_TABLE - 1));
}

/*
 * Maps [base, base + bytes) (2 MiB aligned) with 4 KiB pages: each 2 MiB
 * PDE is replaced by a page table mapping the same physical range, so the
 * translation never changes and no CPU can see wrong memory at any point.
 * The PTEs are written first, at native speed into pages the shadow MMU
 * does not yet track; only the PDE writes are page-table writes it traps.
 * Caller holds alloc_lock.
 */
static bool split_locked(uint64_t base, uint64_t bytes)
{
	uint64_t n = bytes / ALLOC_ALIGN, pts = pt_pages_locked(n), t0, t1;

	if (!pts)
		return false;
	for (uint64_t k = 0; k < n; k++)
		if (!pde_of(base + k * ALLOC_ALIGN))
			return false;
	t0 = rdtsc();
	for (uint64_t k = 0; k < n; k++) {
		uint64_t *pt = (uint64_t *)(uintptr_t)(pts + k * PAGE_SIZE);
		uint64_t pa = base + k * ALLOC_ALIGN;

		for (uint64_t j = 0; j < PTES_PER_TABLE; j++)
			pt[j] = (pa + j * PAGE_SIZE) | PTE_P_RW_US;
	}
	barrier();
	t1 = rdtsc();
	for (uint64_t k = 0; k < n; k++)
		WRITE_ONCE(*pde_of(base + k * ALLOC_ALIGN), (pts + k * PAGE_SIZE) | PTE_P_RW_US);
	barrier();
	split_stats.fill_tsc += t1 - t0;
	split_stats.link_tsc += rdtsc() - t1;
	split_stats.bytes += bytes;
	split_stats.pt_pages += n;
	return true;
}

uint64_t mem_alloc(uint64_t bytes)
{
	uint64_t got, t0;
	bool split_failed = false;

	bytes = align_up(bytes ? bytes : 1, ALLOC_ALIGN);
	spin_lock(&alloc_lock);
	got = bump_alloc_locked(bytes);
	if (got && cfg.pages_4k && !split_locked(got, bytes)) {
		/* The range stays lost: a half-split range still maps right, but say oom. */
		split_failed = true;
		split_stats.failed = true;
		got = 0;
	}
	spin_unlock(&alloc_lock);
	if (split_failed)
		say("mem.error=no memory or no mapping for the 4 KiB page tables of %lu MiB",
		    (uint64_t)(bytes / MIB));
	if (got && cfg.pages_4k) {
		t0 = rdtsc();
		sys_flush_tlb();
		spin_lock(&alloc_lock);
		split_stats.flush_tsc += rdtsc() - t0;
		spin_unlock(&alloc_lock);
	}
	return got;
}

void mem_say_pages(void)
{
	struct split_stats st;

	if (!cfg.pages_4k) {
		say("mem.pages=2m");
		return;
	}
	spin_lock(&alloc_lock);
	st = split_stats;
	spin_unlock(&alloc_lock);
	say("mem.pages=4k mem.pages4k_mib=%lu mem.pt_kib=%lu mem.pt_us=%lu mem.pt_fill_us=%lu "
	    "mem.pt_link_us=%lu mem.pt_flush_us=%lu%s",
	    (uint64_t)(st.bytes / MIB), (uint64_t)(st.pt_pages * PAGE_SIZE / 1024),
	    tsc_to_us(st.fill_tsc + st.link_tsc + st.flush_tsc), tsc_to_us(st.fill_tsc),
	    tsc_to_us(st.link_tsc), tsc_to_us(st.flush_tsc), st.failed ? " mem.pt_failed=1" : "");
}
