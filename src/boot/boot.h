/* SPDX-License-Identifier: MIT */
/*
 * Lays out everything a kernel finds at its first instruction: an ELF with a
 * PVH note (hvm_start_info) or a bzImage (64-bit boot protocol, boot_params).
 */
#ifndef FORKD_BOOT_BOOT_H
#define FORKD_BOOT_BOOT_H

#include "boot/acpi.h"
#include "core/vm.h"

/*
 * Loads vm->cfg->kernel (its format detected: ELF -> PVH, "HdrS" -> bzImage)
 * and the initrd, writes the command line, memory map, ACPI tables and the
 * protocol's boot structures into guest memory, and sets vm->kernel_entry and
 * vm->boot_protocol.
 */
int boot_setup(struct vm *vm, struct fk_err *err);

/* Puts vCPU 0 in the entry state of the protocol boot_setup() chose. */
int boot_setup_bsp(struct vm *vm, struct fk_err *err);

/*
 * Reads the initrd and places it page-aligned as high as possible below
 * min(end of low RAM, limit) and above kernel_end.
 */
int boot_load_initrd(struct vm *vm, uint64_t kernel_end, uint64_t limit, uint64_t *gpa,
		     uint64_t *size, struct fk_err *err);

/* The ACPI description of this VM's devices (used by boot and by tests). */
void boot_acpi_config(const struct vm *vm, struct acpi_config *acpi);

#endif
