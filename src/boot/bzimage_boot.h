/* SPDX-License-Identifier: MIT */
/*
 * The Linux x86 64-bit boot protocol (Documentation/arch/x86/boot.rst) for a
 * bzImage: validate its setup header, copy the protected-mode kernel, write
 * the zero page (struct boot_params), an identity map and a GDT, so that the
 * BSP can start at the 64-bit entry point in long mode.
 */
#ifndef FORKD_BOOT_BZIMAGE_BOOT_H
#define FORKD_BOOT_BZIMAGE_BOOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/guest_mem.h"

/* Offsets in the image and in struct boot_params (the zero page). */
#define BZ_SETUP_SECTS	     0x1f1
#define BZ_BOOT_FLAG	     0x1fe
#define BZ_JUMP		     0x200
#define BZ_HEADER_MAGIC	     0x202 /* "HdrS" */
#define BZ_VERSION	     0x206
#define BZ_TYPE_OF_LOADER    0x210
#define BZ_LOADFLAGS	     0x211
#define BZ_RAMDISK_IMAGE     0x218
#define BZ_RAMDISK_SIZE	     0x21c
#define BZ_HEAP_END_PTR	     0x224
#define BZ_CMD_LINE_PTR	     0x228
#define BZ_INITRD_ADDR_MAX   0x22c
#define BZ_KERNEL_ALIGNMENT  0x230
#define BZ_RELOCATABLE	     0x234
#define BZ_XLOADFLAGS	     0x236
#define BZ_CMDLINE_SIZE	     0x238
#define BZ_PREF_ADDRESS	     0x258
#define BZ_INIT_SIZE	     0x260
#define BZ_SYSSIZE	     0x1f4
#define BZ_HDR_MIN_END	     0x264 /* header through init_size: what protocol 2.12 defines */
#define BZ_HDR_MAX_END	     0x290 /* room for the header in boot_params */
#define BP_ACPI_RSDP_ADDR    0x070
#define BP_EXT_RAMDISK_IMAGE 0x0c0
#define BP_EXT_RAMDISK_SIZE  0x0c4
#define BP_EXT_CMD_LINE_PTR  0x0c8
#define BP_E820_ENTRIES	     0x1e8
#define BP_E820_TABLE	     0x2d0
#define BP_E820_MAX	     128
#define BP_E820_ENTRY_SIZE   20
#define BP_SIZE		     0x1000

#define BZ_LOADFLAG_LOADED_HIGH	 0x01
#define BZ_LOADFLAG_CAN_USE_HEAP 0x80
#define BZ_XLF_KERNEL_64	 0x01
#define BZ_MIN_VERSION		 0x020c /* 2.12: xloadflags, so XLF_KERNEL_64 is declared */
#define BZ_RSDP_VERSION		 0x020e /* 2.14: acpi_rsdp_addr */
#define BZ_LOADER_TYPE_UNKNOWN	 0xff
#define BZ_HEAP_END_PTR_VALUE	 0xde00 /* boot.rst's example: heap end 0xe000 less 0x200 */
#define BZ_ENTRY64_OFFSET	 0x200

/* Segment selectors the 64-bit protocol requires in our GDT. */
#define BZ_BOOT_CS	    0x10
#define BZ_BOOT_DS	    0x18
#define BZ_GDT_ENTRIES	    4
#define BZ_IDENTITY_MAP_END 0x100000000ULL /* 4 GiB in 2 MiB pages (PVM refuses 1 GiB pages) */

#define PTE_PRESENT  0x1ULL
#define PTE_WRITABLE 0x2ULL
#define PTE_HUGE     0x80ULL

struct bzimage_info {
	uint16_t version;     /* protocol, e.g. 0x020f */
	uint64_t pm_offset;   /* protected-mode kernel's offset in the file */
	uint64_t pm_size;     /* its size */
	uint64_t load_addr;   /* where it goes in guest memory */
	uint64_t init_size;   /* bytes the kernel needs from load_addr while decompressing */
	uint64_t entry64;     /* load_addr + 0x200 */
	uint32_t initrd_max;  /* highest address the initrd may end at, minus one */
	uint32_t cmdline_max; /* longest command line, excluding the NUL */
};

/* What the zero page points at, besides the memory map. */
struct bzimage_boot_args {
	uint64_t cmdline_gpa;
	uint64_t initrd_gpa; /* 0 with initrd_size 0: no initrd */
	uint64_t initrd_size;
	uint64_t rsdp_gpa;
};

/* True when image has the "HdrS" setup header magic, i.e. looks like a bzImage. */
bool bzimage_detect(const uint8_t *image, size_t size);

/*
 * Validates a bzImage's setup header for the 64-bit boot protocol in a guest
 * whose RAM below the MMIO hole ends at low_end. `name` is used in errors.
 */
int bzimage_parse(const uint8_t *image, size_t size, const char *name, uint64_t low_end,
		  struct bzimage_info *out, struct fk_err *err);

/* Copies the protected-mode kernel to info->load_addr. */
int bzimage_load(const uint8_t *image, const struct bzimage_info *info, struct guest_mem *mem,
		 struct fk_err *err);

/*
 * Writes boot_params at gpa: the image's setup header, filled in the way a
 * boot loader must, and mem's memory map (e820_build).
 */
int bzimage_write_boot_params(struct guest_mem *mem, uint64_t gpa, const uint8_t *image,
			      const struct bzimage_info *info, const struct bzimage_boot_args *args,
			      struct fk_err *err);

/* Identity map of [0, 4 GiB) in 2 MiB pages: PML4 at pml4_gpa, then PDPT and 4 PDs (6 pages). */
int bzimage_write_page_tables(struct guest_mem *mem, uint64_t pml4_gpa, struct fk_err *err);
#define BZ_PAGE_TABLE_PAGES 6

/* Null, null, __BOOT_CS (64-bit code) and __BOOT_DS: flat 4 GiB. */
int bzimage_write_gdt(struct guest_mem *mem, uint64_t gpa, struct fk_err *err);

#endif
