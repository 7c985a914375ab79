/* SPDX-License-Identifier: MIT */
/*
 * The PVH direct boot ABI (Xen's "HVM direct boot", also used by QEMU,
 * Firecracker and cloud-hypervisor): the loader finds the 32-bit entry in an
 * ELF note, enters it in 32-bit protected mode with paging off and EBX
 * holding the guest physical address of struct hvm_start_info.
 *
 * Shared by the VMM (which writes these structures into guest memory) and the
 * probe guest (which reads them), so it uses only fixed-width types and
 * compiles freestanding. Layouts follow Xen's public/arch-x86/hvm/start_info.h;
 * all fields are little-endian and naturally aligned.
 */
#ifndef FORKD_PVH_H
#define FORKD_PVH_H

#include <stdint.h>

/* ELF note carrying the entry: name "Xen", this type, desc = 32-bit paddr. */
#define PVH_ELFNOTE_NAME	 "Xen"
#define XEN_ELFNOTE_PHYS32_ENTRY 18

#define XEN_HVM_START_MAGIC_VALUE 0x336ec578u

/* Version 1 added memmap_paddr/memmap_entries. */
#define HVM_START_INFO_VERSION 1

/* hvm_start_info.flags */
#define SIF_PRIVILEGED	    (1u << 0)
#define SIF_INITDOMAIN	    (1u << 1)
#define SIF_MULTIBOOT_MOD   (1u << 2)
#define SIF_MOD_START_PFN   (1u << 3)
#define SIF_VIRT_P2M_4TOOLS (1u << 4)

/* hvm_memmap_table_entry.type, the e820 types */
#define XEN_HVM_MEMMAP_TYPE_RAM	     1
#define XEN_HVM_MEMMAP_TYPE_RESERVED 2
#define XEN_HVM_MEMMAP_TYPE_ACPI     3
#define XEN_HVM_MEMMAP_TYPE_NVS	     4
#define XEN_HVM_MEMMAP_TYPE_UNUSABLE 5
#define XEN_HVM_MEMMAP_TYPE_DISABLED 6
#define XEN_HVM_MEMMAP_TYPE_PMEM     7

struct hvm_start_info {
	uint32_t magic;		/* XEN_HVM_START_MAGIC_VALUE */
	uint32_t version;	/* 0 or 1 */
	uint32_t flags;		/* SIF_* */
	uint32_t nr_modules;	/* entries at modlist_paddr */
	uint64_t modlist_paddr; /* array of struct hvm_modlist_entry */
	uint64_t cmdline_paddr; /* NUL-terminated ASCII, 0 if none */
	uint64_t rsdp_paddr;	/* ACPI RSDP, 0 if the guest must scan for it */
	/* version >= 1 only */
	uint64_t memmap_paddr;	 /* array of struct hvm_memmap_table_entry */
	uint32_t memmap_entries; /* 0: no map given */
	uint32_t reserved;	 /* must be zero */
};

struct hvm_modlist_entry {
	uint64_t paddr;		/* module start */
	uint64_t size;		/* module bytes */
	uint64_t cmdline_paddr; /* NUL-terminated ASCII, 0 if none */
	uint64_t reserved;
};

struct hvm_memmap_table_entry {
	uint64_t addr;	   /* base address */
	uint64_t size;	   /* bytes */
	uint32_t type;	   /* XEN_HVM_MEMMAP_TYPE_* */
	uint32_t reserved; /* must be zero */
};

_Static_assert(sizeof(struct hvm_start_info) == 56, "hvm_start_info layout");
_Static_assert(sizeof(struct hvm_modlist_entry) == 32, "hvm_modlist_entry layout");
_Static_assert(sizeof(struct hvm_memmap_table_entry) == 24, "hvm_memmap_table_entry layout");

#endif
