/* SPDX-License-Identifier: MIT */
/* Where forkd-vmm puts things in guest physical memory and I/O space. */
#ifndef FORKD_CORE_LAYOUT_H
#define FORKD_CORE_LAYOUT_H

/* Low memory: boot structures the guest reads once. */
#define LAYOUT_PVH_START_INFO 0x6000ULL
#define LAYOUT_PVH_MODLIST    0x6040ULL
#define LAYOUT_PVH_MEMMAP     0x7000ULL /* up to 0x8000: 170 entries */
/*
 * bzImage (64-bit boot protocol) only, clear of the PVH pages above and of
 * the decompressor's trampoline just below the EBDA: GDT, identity-map page
 * tables (PML4, PDPT, 4 PDs), a boot stack page, then the zero page.
 */
#define LAYOUT_BZ_GDT	      0x8000ULL
#define LAYOUT_BZ_PAGE_TABLES 0x9000ULL	 /* to 0xF000 */
#define LAYOUT_BZ_STACK_TOP   0x10000ULL /* stack page 0xF000..0xFFFF */
#define LAYOUT_BZ_BOOT_PARAMS 0x10000ULL /* struct boot_params, one page */
#define LAYOUT_CMDLINE	      0x20000ULL
#define LAYOUT_CMDLINE_MAX    0x1000ULL
#define LAYOUT_EBDA_START     0x9FC00ULL /* reserved from here to 1 MiB */
#define LAYOUT_VMGENID_ADDR   0xDFF00ULL /* 16-byte VM generation ID (reserved memory) */
#define LAYOUT_ACPI_START     0xE0000ULL /* where a legacy RSDP scan looks */
#define LAYOUT_ACPI_END	      0x100000ULL
#define LAYOUT_HIGH_MEM_START 0x100000ULL /* kernels load at or above 1 MiB */

/* MMIO hole (3..4 GiB): virtio-mmio windows, then the chipset. */
#define LAYOUT_VIRTIO_MMIO_BASE 0xD0000000ULL
#define LAYOUT_IOAPIC_ADDR	0xFEC00000ULL
#define LAYOUT_LAPIC_ADDR	0xFEE00000ULL
/* KVM needs three pages for the real-mode TSS and one for the identity map. */
#define LAYOUT_KVM_IDENTITY_MAP 0xFEFFC000ULL
#define LAYOUT_KVM_TSS		0xFEFFD000ULL

/* Interrupts (IOAPIC inputs). */
#define LAYOUT_COM1_GSI	       4
#define LAYOUT_VIRTIO_GSI_BASE 5
#define LAYOUT_IOAPIC_PINS     24
#define LAYOUT_GED_GSI	       23 /* ACPI generic event device: VM generation ID changed */

/* I/O ports. */
#define LAYOUT_COM1_PORT	0x3F8
#define LAYOUT_PM_SLEEP_CONTROL 0x600
#define LAYOUT_PM_SLEEP_STATUS	0x601
#define LAYOUT_PM_RESET		0x602
#define LAYOUT_PM_RESET_VALUE	0x0F
#define LAYOUT_I8042_PORT	0x64
#define LAYOUT_POST_PORT	0x80

#endif
