/* SPDX-License-Identifier: MIT */
/* Writes tiny PVH ELF kernels for tests that need a specific guest behaviour. */
#ifndef FORKD_TESTS_ELFGEN_H
#define FORKD_TESTS_ELFGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Writes an ELF64 whose one PT_LOAD segment holds `code` at physical
 * address paddr (the PVH entry), plus a Xen PHYS32_ENTRY note if with_note.
 */
int elfgen_write(const char *path, const uint8_t *code, size_t code_len, uint64_t paddr,
		 bool with_note);

/* 32-bit guest code snippets (run at the PVH entry, CPL0, paging off). */
extern const uint8_t elfgen_code_hello_poweroff[];
extern const size_t elfgen_code_hello_poweroff_len;
extern const uint8_t elfgen_code_triple_fault[];
extern const size_t elfgen_code_triple_fault_len;
extern const uint8_t elfgen_code_acpi_reset[];
extern const size_t elfgen_code_acpi_reset_len;
extern const uint8_t elfgen_code_i8042_reset[];
extern const size_t elfgen_code_i8042_reset_len;

#define ELFGEN_HELLO_TEXT "hello from elfgen\n"

#endif
