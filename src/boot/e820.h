/* SPDX-License-Identifier: MIT */
/* The guest's physical memory map, as PVH's memmap (and later e820 for bzImage). */
#ifndef FORKD_BOOT_E820_H
#define FORKD_BOOT_E820_H

#include <stdint.h>

#include "forkd/pvh.h"
#include "core/guest_mem.h"

#define E820_MAX_ENTRIES 8

/* Fills out[] (E820_MAX_ENTRIES) and returns how many entries; sorted, non-overlapping. */
int e820_build(const struct guest_mem *mem, struct hvm_memmap_table_entry *out);

#endif
