/* SPDX-License-Identifier: MIT */
#include "elfgen.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define CODE_OFFSET 0x1000
#define LOAD_ADDR   0x100000

/*
 * mov esi, LOAD_ADDR+msg; mov ecx, len; mov dx, 0x3f8; rep outsb;
 * mov dx, 0x600; mov al, (5 << 2) | 0x20; out dx, al; 1: hlt; jmp 1b; msg
 */
#define HELLO_MSG_OFF 26
const uint8_t elfgen_code_hello_poweroff[] = {
    0xBE,
    (LOAD_ADDR + HELLO_MSG_OFF) & 0xff,
    ((LOAD_ADDR + HELLO_MSG_OFF) >> 8) & 0xff,
    (LOAD_ADDR + HELLO_MSG_OFF) >> 16,
    0x00,
    0xB9,
    sizeof(ELFGEN_HELLO_TEXT) - 1,
    0,
    0,
    0,
    0x66,
    0xBA,
    0xF8,
    0x03,
    0xF3,
    0x6E,
    0x66,
    0xBA,
    0x00,
    0x06,
    0xB0,
    0x34,
    0xEE,
    0xF4,
    0xEB,
    0xFD,
    'h',
    'e',
    'l',
    'l',
    'o',
    ' ',
    'f',
    'r',
    'o',
    'm',
    ' ',
    'e',
    'l',
    'f',
    'g',
    'e',
    'n',
    '\n',
};
const size_t elfgen_code_hello_poweroff_len = sizeof(elfgen_code_hello_poweroff);

/* ud2 with no IDT: #UD, then #NP/#DF on the empty IDT, then a triple fault. */
const uint8_t elfgen_code_triple_fault[] = {0x0F, 0x0B};
const size_t elfgen_code_triple_fault_len = sizeof(elfgen_code_triple_fault);

/* mov dx, 0x602; mov al, 0x0f; out dx, al; 1: hlt; jmp 1b */
const uint8_t elfgen_code_acpi_reset[] = {0x66, 0xBA, 0x02, 0x06, 0xB0,
					  0x0F, 0xEE, 0xF4, 0xEB, 0xFD};
const size_t elfgen_code_acpi_reset_len = sizeof(elfgen_code_acpi_reset);

/* mov al, 0xfe; out 0x64, al; 1: hlt; jmp 1b */
const uint8_t elfgen_code_i8042_reset[] = {0xB0, 0xFE, 0xE6, 0x64, 0xF4, 0xEB, 0xFD};
const size_t elfgen_code_i8042_reset_len = sizeof(elfgen_code_i8042_reset);

int elfgen_write(const char *path, const uint8_t *code, size_t code_len, uint64_t paddr,
		 bool with_note)
{
	struct {
		Elf64_Nhdr nh;
		char name[4];
		uint32_t entry;
	} note = {.nh = {.n_namesz = 4, .n_descsz = 4, .n_type = 18},
		  .name = "Xen",
		  .entry = (uint32_t)paddr};
	Elf64_Ehdr eh;
	Elf64_Phdr ph[2];
	uint8_t image[CODE_OFFSET + 4096];
	size_t note_off = CODE_OFFSET + ((code_len + 7) & ~(size_t)7);
	size_t total = note_off + sizeof(note);
	int fd;

	if (code_len > 4096 - sizeof(note) - 8)
		return -E2BIG;
	memset(image, 0, sizeof(image));
	memset(&eh, 0, sizeof(eh));
	memcpy(eh.e_ident, ELFMAG, SELFMAG);
	eh.e_ident[EI_CLASS] = ELFCLASS64;
	eh.e_ident[EI_DATA] = ELFDATA2LSB;
	eh.e_ident[EI_VERSION] = EV_CURRENT;
	eh.e_type = ET_EXEC;
	eh.e_machine = EM_X86_64;
	eh.e_version = EV_CURRENT;
	eh.e_entry = paddr;
	eh.e_phoff = sizeof(eh);
	eh.e_ehsize = sizeof(eh);
	eh.e_phentsize = sizeof(Elf64_Phdr);
	eh.e_phnum = with_note ? 2 : 1;
	memset(ph, 0, sizeof(ph));
	ph[0] = (Elf64_Phdr){.p_type = PT_LOAD,
			     .p_flags = PF_R | PF_X,
			     .p_offset = CODE_OFFSET,
			     .p_vaddr = paddr,
			     .p_paddr = paddr,
			     .p_filesz = code_len,
			     .p_memsz = code_len,
			     .p_align = 0x1000};
	ph[1] = (Elf64_Phdr){.p_type = PT_NOTE,
			     .p_flags = PF_R,
			     .p_offset = note_off,
			     .p_filesz = sizeof(note),
			     .p_memsz = sizeof(note),
			     .p_align = 4};
	memcpy(image, &eh, sizeof(eh));
	memcpy(image + sizeof(eh), ph, sizeof(ph));
	memcpy(image + CODE_OFFSET, code, code_len);
	memcpy(image + note_off, &note, sizeof(note));

	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -errno;
	if (write(fd, image, total) != (ssize_t)total) {
		close(fd);
		return -EIO;
	}
	return close(fd) < 0 ? -errno : 0;
}
