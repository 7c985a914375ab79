/* SPDX-License-Identifier: MIT */
/* Lays out everything a PVH kernel finds at its first instruction. */
#ifndef FORKD_VMM_BOOT_H
#define FORKD_VMM_BOOT_H

#include "vmm/acpi.h"
#include "vmm/vm.h"

/*
 * Loads the kernel and initrd, writes the command line, memory map, ACPI
 * tables and hvm_start_info into guest memory, and sets vm->kernel_entry.
 */
int boot_setup_pvh(struct vm *vm, struct fk_err *err);

/* The ACPI description of this VM's devices (used by boot and by tests). */
void boot_acpi_config(const struct vm *vm, struct acpi_config *acpi);

#endif
