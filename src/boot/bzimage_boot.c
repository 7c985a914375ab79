/* SPDX-License-Identifier: MIT */
#include "boot/bzimage_boot.h"

#include <errno.h>
#include <string.h>

#include "boot/e820.h"
#include "core/layout.h"

#define SECTOR_SIZE	   512ULL
#define DEFAULT_SETUP_SECT 4 /* setup_sects 0 means 4, for ancient images */
#define PAGE_4K		   4096ULL
#define PAGE_2M		   (2ULL << 20)
#define GDT_CODE64	   0x00af9a000000ffffULL /* present, DPL0, exec/read, L=1, G=1 */
#define GDT_DATA	   0x00cf92000000ffffULL /* present, DPL0, read/write, 4 GiB flat */

static uint16_t get16(const uint8_t *p, size_t off)
{
	uint16_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

static uint32_t get32(const uint8_t *p, size_t off)
{
	uint32_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

static uint64_t get64(const uint8_t *p, size_t off)
{
	uint64_t v;

	memcpy(&v, p + off, sizeof(v));
	return v;
}

static void put32(uint8_t *p, size_t off, uint32_t v)
{
	memcpy(p + off, &v, sizeof(v));
}

static void put64(uint8_t *p, size_t off, uint64_t v)
{
	memcpy(p + off, &v, sizeof(v));
}

bool bzimage_detect(const uint8_t *image, size_t size)
{
	return size >= BZ_HEADER_MAGIC + 4 && memcmp(image + BZ_HEADER_MAGIC, "HdrS", 4) == 0;
}

/* Where the kernel goes: its preferred address, moved up to its alignment if it may move. */
static int choose_load_addr(const uint8_t *image, const char *name, bool relocatable,
			    uint64_t *addr, struct fk_err *err)
{
	uint64_t pref = get64(image, BZ_PREF_ADDRESS);
	uint32_t align = get32(image, BZ_KERNEL_ALIGNMENT);

	if (pref == 0)
		pref = LAYOUT_HIGH_MEM_START;
	if (!relocatable) {
		if (pref < LAYOUT_HIGH_MEM_START)
			return fk_fail(err, ENOEXEC,
				       "kernel %s: not relocatable and wants address 0x%llx, "
				       "below 1 MiB; expected pref_address >= 0x100000",
				       name, (unsigned long long)pref);
		*addr = pref;
		return 0;
	}
	if (align == 0 || (align & (align - 1)) != 0)
		return fk_fail(err, ENOEXEC,
			       "kernel %s: kernel_alignment 0x%x is not a power of two", name,
			       align);
	if (pref < LAYOUT_HIGH_MEM_START)
		pref = LAYOUT_HIGH_MEM_START;
	*addr = (pref + align - 1) & ~((uint64_t)align - 1);
	return 0;
}

int bzimage_parse(const uint8_t *image, size_t size, const char *name, uint64_t low_end,
		  struct bzimage_info *out, struct fk_err *err)
{
	uint64_t setup_sects, syssize, load = 0, init_size, hdr_end;
	uint16_t version, xloadflags;
	bool relocatable;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!bzimage_detect(image, size))
		return fk_fail(err, ENOEXEC, "kernel %s: not a bzImage (no \"HdrS\" at 0x202)",
			       name);
	if (size < BZ_VERSION + 2)
		return fk_fail(err, ENOEXEC, "kernel %s: truncated bzImage: %zu bytes, no version",
			       name, size);
	version = get16(image, BZ_VERSION);
	if (version < BZ_MIN_VERSION)
		return fk_fail(err, ENOEXEC,
			       "kernel %s: bzImage protocol %u.%02u is too old: need 2.12+ (64-bit "
			       "entry with xloadflags)",
			       name, version >> 8, version & 0xff);
	hdr_end = BZ_JUMP + 2 + (uint64_t)image[BZ_JUMP + 1];
	if (hdr_end < BZ_HDR_MIN_END)
		hdr_end = BZ_HDR_MIN_END;
	if (size < hdr_end)
		return fk_fail(err, ENOEXEC,
			       "kernel %s: truncated bzImage: %zu bytes, the setup header ends at "
			       "0x%llx",
			       name, size, (unsigned long long)hdr_end);

	setup_sects = image[BZ_SETUP_SECTS] ? image[BZ_SETUP_SECTS] : DEFAULT_SETUP_SECT;
	out->pm_offset = (setup_sects + 1) * SECTOR_SIZE;
	syssize = (uint64_t)get32(image, BZ_SYSSIZE) * 16;
	if (out->pm_offset >= size || syssize > size - out->pm_offset)
		return fk_fail(err, ENOEXEC,
			       "kernel %s: truncated bzImage: %zu bytes, expected %llu (%llu setup "
			       "sectors and %llu bytes of kernel)",
			       name, size, (unsigned long long)(out->pm_offset + syssize),
			       (unsigned long long)setup_sects + 1, (unsigned long long)syssize);
	out->pm_size = size - out->pm_offset;

	if (!(image[BZ_LOADFLAGS] & BZ_LOADFLAG_LOADED_HIGH))
		return fk_fail(err, ENOEXEC,
			       "kernel %s: a zImage (loads below 1 MiB), expected a bzImage", name);
	xloadflags = get16(image, BZ_XLOADFLAGS);
	if (!(xloadflags & BZ_XLF_KERNEL_64))
		return fk_fail(err, ENOEXEC,
			       "kernel %s: not 64-bit capable: xloadflags 0x%x lacks XLF_KERNEL_64 "
			       "(expected an x86-64 kernel)",
			       name, xloadflags);

	relocatable = image[BZ_RELOCATABLE] != 0;
	ret = choose_load_addr(image, name, relocatable, &load, err);
	if (ret < 0)
		return ret;
	init_size = get32(image, BZ_INIT_SIZE);
	if (init_size < out->pm_size)
		init_size = out->pm_size;
	if (load >= low_end || init_size > low_end - load)
		return fk_fail(err, EFBIG,
			       "kernel %s: too large for RAM: needs 0x%llx..0x%llx (%llu MiB "
			       "while decompressing) but RAM below the MMIO hole ends at 0x%llx; "
			       "expected more --mem",
			       name, (unsigned long long)load,
			       (unsigned long long)(load + init_size),
			       (unsigned long long)(init_size >> 20), (unsigned long long)low_end);

	out->version = version;
	out->load_addr = load;
	out->init_size = init_size;
	out->entry64 = load + BZ_ENTRY64_OFFSET;
	out->initrd_max = get32(image, BZ_INITRD_ADDR_MAX);
	out->cmdline_max = get32(image, BZ_CMDLINE_SIZE);
	return 0;
}

int bzimage_load(const uint8_t *image, const struct bzimage_info *info, struct guest_mem *mem,
		 struct fk_err *err)
{
	if (guest_mem_write(mem, info->load_addr, image + info->pm_offset, info->pm_size) < 0)
		return fk_fail(err, EFAULT, "bzImage: no guest RAM for 0x%llx bytes at 0x%llx",
			       (unsigned long long)info->pm_size,
			       (unsigned long long)info->load_addr);
	return 0;
}

int bzimage_write_boot_params(struct guest_mem *mem, uint64_t gpa, const uint8_t *image,
			      const struct bzimage_info *info, const struct bzimage_boot_args *args,
			      struct fk_err *err)
{
	struct hvm_memmap_table_entry map[E820_MAX_ENTRIES];
	uint8_t *bp = guest_mem_ptr(mem, gpa, BP_SIZE);
	uint64_t hdr_end = BZ_JUMP + 2 + (uint64_t)image[BZ_JUMP + 1];
	int n;

	if (!bp)
		return fk_fail(err, EFAULT, "bzImage: no guest RAM for boot_params at 0x%llx",
			       (unsigned long long)gpa);
	if (args->cmdline_gpa > UINT32_MAX)
		return fk_fail(err, EINVAL, "bzImage: command line at 0x%llx is above 4 GiB",
			       (unsigned long long)args->cmdline_gpa);
	memset(bp, 0, BP_SIZE);

	/* The header as the image has it; parse() saw at least BZ_HDR_MIN_END bytes. */
	if (hdr_end < BZ_HDR_MIN_END)
		hdr_end = BZ_HDR_MIN_END;
	if (hdr_end > BZ_HDR_MAX_END)
		hdr_end = BZ_HDR_MAX_END;
	memcpy(bp + BZ_SETUP_SECTS, image + BZ_SETUP_SECTS, hdr_end - BZ_SETUP_SECTS);

	bp[BZ_TYPE_OF_LOADER] = BZ_LOADER_TYPE_UNKNOWN;
	bp[BZ_LOADFLAGS] |= BZ_LOADFLAG_CAN_USE_HEAP;
	memcpy(bp + BZ_HEAP_END_PTR, &(uint16_t){BZ_HEAP_END_PTR_VALUE}, 2);
	put32(bp, BZ_CMD_LINE_PTR, (uint32_t)args->cmdline_gpa);
	put32(bp, BP_EXT_CMD_LINE_PTR, 0);
	put32(bp, BZ_RAMDISK_IMAGE, (uint32_t)args->initrd_gpa);
	put32(bp, BZ_RAMDISK_SIZE, (uint32_t)args->initrd_size);
	put32(bp, BP_EXT_RAMDISK_IMAGE, (uint32_t)(args->initrd_gpa >> 32));
	put32(bp, BP_EXT_RAMDISK_SIZE, (uint32_t)(args->initrd_size >> 32));
	if (info->version >= BZ_RSDP_VERSION)
		put64(bp, BP_ACPI_RSDP_ADDR, args->rsdp_gpa);

	/* Xen's memmap types are e820's (1 RAM, 2 reserved); e820 entries are packed 20 bytes. */
	n = e820_build(mem, map);
	for (int i = 0; i < n && i < BP_E820_MAX; i++) {
		uint8_t *e = bp + BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;
		put64(e, 0, map[i].addr);
		put64(e, 8, map[i].size);
		put32(e, 16, map[i].type);
	}
	bp[BP_E820_ENTRIES] = (uint8_t)n;
	return 0;
}

int bzimage_write_page_tables(struct guest_mem *mem, uint64_t pml4_gpa, struct fk_err *err)
{
	enum { NR_PDS = BZ_IDENTITY_MAP_END / (1ULL << 30) };
	uint64_t pdpt_gpa = pml4_gpa + PAGE_4K, pd_gpa = pdpt_gpa + PAGE_4K;
	uint64_t *pt = guest_mem_ptr(mem, pml4_gpa, BZ_PAGE_TABLE_PAGES * PAGE_4K);
	uint64_t *pml4, *pdpt, *pd;

	_Static_assert(2 + NR_PDS == BZ_PAGE_TABLE_PAGES, "page-table page count");
	if (!pt || (pml4_gpa & (PAGE_4K - 1)))
		return fk_fail(err, EFAULT,
			       "bzImage: no page-aligned guest RAM for page tables at 0x%llx",
			       (unsigned long long)pml4_gpa);
	memset(pt, 0, BZ_PAGE_TABLE_PAGES * PAGE_4K);
	pml4 = pt;
	pdpt = pt + 512;
	pd = pt + 1024;
	pml4[0] = pdpt_gpa | PTE_PRESENT | PTE_WRITABLE;
	for (uint64_t i = 0; i < NR_PDS; i++)
		pdpt[i] = (pd_gpa + i * PAGE_4K) | PTE_PRESENT | PTE_WRITABLE;
	for (uint64_t i = 0; i < NR_PDS * 512; i++)
		pd[i] = (i * PAGE_2M) | PTE_PRESENT | PTE_WRITABLE | PTE_HUGE;
	return 0;
}

int bzimage_write_gdt(struct guest_mem *mem, uint64_t gpa, struct fk_err *err)
{
	const uint64_t gdt[BZ_GDT_ENTRIES] = {
	    [BZ_BOOT_CS / 8] = GDT_CODE64,
	    [BZ_BOOT_DS / 8] = GDT_DATA,
	};

	if (guest_mem_write(mem, gpa, gdt, sizeof(gdt)) < 0)
		return fk_fail(err, EFAULT, "bzImage: no guest RAM for the GDT at 0x%llx",
			       (unsigned long long)gpa);
	return 0;
}
