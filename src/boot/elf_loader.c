/* SPDX-License-Identifier: MIT */
#include "boot/elf_loader.h"

#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "forkd/pvh.h"
#include "core/layout.h"

int read_file(const char *path, size_t max, uint8_t **data, size_t *size, struct fk_err *err)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t done = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fk_fail_errno(err, errno, "%s: cannot open", path);
	if (fstat(fd, &st) < 0) {
		ret = fk_fail_errno(err, errno, "%s: cannot stat", path);
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = fk_fail(err, EINVAL, "%s: not a regular file", path);
		goto out;
	}
	if ((uint64_t)st.st_size > max) {
		ret = fk_fail(err, EFBIG, "%s: %lld bytes, at most %zu allowed", path,
			      (long long)st.st_size, max);
		goto out;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		ret = fk_fail(err, ENOMEM, "%s: out of memory reading %lld bytes", path,
			      (long long)st.st_size);
		goto out;
	}
	while (done < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + done, (size_t)st.st_size - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			ret = n < 0 ? fk_fail_errno(err, errno, "%s: read", path)
				    : fk_fail(err, EIO, "%s: file shrank while reading", path);
			goto out;
		}
		done += (size_t)n;
	}
	*data = buf;
	*size = done;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	close(fd);
	return ret;
}

/* Looks for Xen's PHYS32_ENTRY note in one PT_NOTE segment. */
static int find_pvh_note(const uint8_t *seg, uint64_t len, uint64_t *entry)
{
	uint64_t off = 0;

	while (len - off >= sizeof(Elf64_Nhdr)) {
		Elf64_Nhdr nh;
		uint64_t name_off, desc_off, next;

		memcpy(&nh, seg + off, sizeof(nh));
		name_off = off + sizeof(nh);
		desc_off = name_off + (((uint64_t)nh.n_namesz + 3) & ~3ULL);
		next = desc_off + (((uint64_t)nh.n_descsz + 3) & ~3ULL);
		if (desc_off > len || next > len)
			return -EINVAL;
		if (nh.n_type == XEN_ELFNOTE_PHYS32_ENTRY && nh.n_namesz == 4 &&
		    memcmp(seg + name_off, "Xen", 4) == 0 && nh.n_descsz >= 4) {
			uint32_t e32;
			uint64_t e64;
			if (nh.n_descsz >= 8) {
				memcpy(&e64, seg + desc_off, 8);
				*entry = e64 & 0xffffffffULL;
			} else {
				memcpy(&e32, seg + desc_off, 4);
				*entry = e32;
			}
			return 0;
		}
		off = next;
	}
	return -ENOENT;
}

int elf_load_pvh(const uint8_t *image, size_t size, const char *name, struct guest_mem *mem,
		 struct elf_kernel *out, struct fk_err *err)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)image;
	uint64_t entry = 0;
	bool have_entry = false;
	int loaded = 0;

	memset(out, 0, sizeof(*out));
	out->load_start = UINT64_MAX;
	if (size < sizeof(Elf64_Ehdr) || memcmp(image, ELFMAG, SELFMAG) != 0)
		return fk_fail(err, ENOEXEC, "kernel %s: not an ELF file (bad magic)", name);
	if (eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_ident[EI_DATA] != ELFDATA2LSB ||
	    eh->e_machine != EM_X86_64)
		return fk_fail(err, ENOEXEC,
			       "kernel %s: not a little-endian 64-bit x86-64 ELF (class %u, "
			       "machine %u)",
			       name, eh->e_ident[EI_CLASS], eh->e_machine);
	if (eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phoff > size ||
	    (uint64_t)eh->e_phnum * sizeof(Elf64_Phdr) > size - eh->e_phoff)
		return fk_fail(err, ENOEXEC, "kernel %s: program headers out of the file", name);

	for (unsigned i = 0; i < eh->e_phnum; i++) {
		Elf64_Phdr ph;

		memcpy(&ph, image + eh->e_phoff + i * sizeof(Elf64_Phdr), sizeof(ph));
		if (ph.p_type != PT_LOAD && ph.p_type != PT_NOTE)
			continue;
		if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset)
			return fk_fail(err, ENOEXEC,
				       "kernel %s: segment %u (offset %llu, %llu bytes) extends "
				       "past the end of the file (%zu bytes)",
				       name, i, (unsigned long long)ph.p_offset,
				       (unsigned long long)ph.p_filesz, size);
		if (ph.p_type == PT_NOTE) {
			if (!have_entry &&
			    find_pvh_note(image + ph.p_offset, ph.p_filesz, &entry) == 0)
				have_entry = true;
			continue;
		}
		if (ph.p_filesz > ph.p_memsz)
			return fk_fail(err, ENOEXEC,
				       "kernel %s: segment %u: file size > memory size", name, i);
		if (ph.p_memsz == 0)
			continue;
		if (ph.p_paddr < LAYOUT_HIGH_MEM_START)
			return fk_fail(
			    err, ENOEXEC,
			    "kernel %s: segment %u loads at 0x%llx, below 1 MiB where the "
			    "VMM keeps boot data; expected p_paddr >= 0x100000",
			    name, i, (unsigned long long)ph.p_paddr);
		uint8_t *dst = guest_mem_ptr(mem, ph.p_paddr, ph.p_memsz);
		if (!dst)
			return fk_fail(
			    err, EFBIG,
			    "kernel %s: segment %u at 0x%llx (%llu bytes) does not fit in "
			    "guest RAM (%llu MiB)",
			    name, i, (unsigned long long)ph.p_paddr, (unsigned long long)ph.p_memsz,
			    (unsigned long long)(mem->total_size >> 20));
		memcpy(dst, image + ph.p_offset, ph.p_filesz);
		memset(dst + ph.p_filesz, 0, ph.p_memsz - ph.p_filesz);
		if (ph.p_paddr < out->load_start)
			out->load_start = ph.p_paddr;
		if (ph.p_paddr + ph.p_memsz > out->load_end)
			out->load_end = ph.p_paddr + ph.p_memsz;
		loaded++;
	}
	if (!have_entry)
		return fk_fail(err, ENOEXEC,
			       "kernel %s: no PVH entry note (ELF note \"Xen\" type %d, "
			       "XEN_ELFNOTE_PHYS32_ENTRY); expected a kernel built with PVH "
			       "support",
			       name, XEN_ELFNOTE_PHYS32_ENTRY);
	if (!loaded)
		return fk_fail(err, ENOEXEC, "kernel %s: no loadable segments", name);
	if (!guest_mem_ptr(mem, entry, 1))
		return fk_fail(err, ENOEXEC, "kernel %s: PVH entry 0x%llx is outside guest RAM",
			       name, (unsigned long long)entry);
	out->pvh_entry = entry;
	return 0;
}
