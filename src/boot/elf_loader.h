/* SPDX-License-Identifier: MIT */
/* Loads an ELF kernel with a PVH entry note into guest memory. */
#ifndef FORKD_BOOT_ELF_LOADER_H
#define FORKD_BOOT_ELF_LOADER_H

#include <stddef.h>
#include <stdint.h>

#include "core/guest_mem.h"

#define ELF_MAX_KERNEL_SIZE (512ULL << 20)

struct elf_kernel {
	uint64_t pvh_entry;  /* 32-bit physical entry from XEN_ELFNOTE_PHYS32_ENTRY */
	uint64_t load_start; /* lowest physical address loaded */
	uint64_t load_end;   /* end of the highest segment (p_paddr + p_memsz) */
};

/*
 * Parses image (size bytes, the file's contents) and copies its PT_LOAD
 * segments to their physical addresses. `name` is used in error messages.
 */
int elf_load_pvh(const uint8_t *image, size_t size, const char *name, struct guest_mem *mem,
		 struct elf_kernel *out, struct fk_err *err);

/* Reads a whole file of at most max bytes into a malloc'd buffer. */
int read_file(const char *path, size_t max, uint8_t **data, size_t *size, struct fk_err *err);

#endif
