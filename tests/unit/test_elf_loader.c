/* SPDX-License-Identifier: MIT */
/* The PVH ELF loader against images built in memory, valid and broken one field at a time. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "forkd/pvh.h"
#include "boot/elf_loader.h"

#define KERNEL_NAME "vmlinux-under-test"
#define MEM_SIZE    (16ULL << 20)

/*
 * The image every test starts from, laid out like a small vmlinux:
 *   0x0000 ELF header, program headers from 0x40
 *   0x0200 PT_NOTE: a GNU build-id note, then Xen's PHYS32_ENTRY note
 *   0x1000 PT_LOAD "text": 0x300 file bytes, 0x2000 in memory (the rest is bss)
 *   0x1400 PT_LOAD "data": 0x80 bytes
 * Program headers: [0] text, [1] note, [2] data, [3] PT_GNU_STACK.
 */
#define IMG_SIZE    0x1500
#define PH_OFF	    0x40
#define PH_COUNT    4
#define NOTE_OFF    0x200
#define TEXT_OFF    0x1000
#define TEXT_PADDR  0x200000ULL
#define TEXT_VADDR  0xffffffff80200000ULL /* a kernel's virtual address: never used for loading */
#define TEXT_FILESZ 0x300
#define TEXT_MEMSZ  0x2000
#define DATA_OFF    0x1400
#define DATA_PADDR  0x400000ULL
#define DATA_SIZE   0x80
#define ENTRY	    0x200040ULL

/* Guest bytes that the loader must leave alone. */
#define UNTOUCHED 0xCC

struct image {
	size_t size;
	size_t xen_note; /* offset of the Xen note's header */
	union {
		uint8_t data[IMG_SIZE];
		Elf64_Ehdr eh; /* for alignment and convenient access */
	} u;
};

static Elf64_Phdr *phdr(struct image *im, int i)
{
	return (Elf64_Phdr *)(im->u.data + PH_OFF) + i;
}

static Elf64_Nhdr *xen_note(struct image *im)
{
	return (Elf64_Nhdr *)(im->u.data + im->xen_note);
}

static uint8_t text_byte(size_t i)
{
	return (uint8_t)(i * 7 + 1);
}

static uint8_t data_byte(size_t i)
{
	return (uint8_t)(i ^ 0x5A);
}

/* Appends one note at off (4-byte aligned fields, as in ELF64 notes); returns the next offset. */
static size_t put_note(struct image *im, size_t off, const char *name, uint32_t type,
		       const void *desc, uint32_t descsz)
{
	Elf64_Nhdr nh = {
	    .n_namesz = (uint32_t)strlen(name) + 1, .n_descsz = descsz, .n_type = type};

	memcpy(im->u.data + off, &nh, sizeof(nh));
	off += sizeof(nh);
	memcpy(im->u.data + off, name, nh.n_namesz);
	off += (nh.n_namesz + 3) & ~3u;
	memcpy(im->u.data + off, desc, descsz);
	return off + ((descsz + 3) & ~3u);
}

static void build_image(struct image *im, uint32_t entry_descsz)
{
	static const uint8_t build_id[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint64_t entry64 = ENTRY | 0xDEADBEEF00000000ULL; /* only the low 32 bits count */
	uint32_t entry32 = (uint32_t)ENTRY;
	Elf64_Ehdr *eh = &im->u.eh;
	size_t end;

	memset(im, 0, sizeof(*im));
	im->size = IMG_SIZE;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_entry = TEXT_VADDR; /* the 64-bit entry, which PVH boot ignores */
	eh->e_phoff = PH_OFF;
	eh->e_ehsize = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = PH_COUNT;

	end = put_note(im, NOTE_OFF, "GNU", NT_GNU_BUILD_ID, build_id, sizeof(build_id));
	im->xen_note = end;
	end = put_note(im, end, PVH_ELFNOTE_NAME, XEN_ELFNOTE_PHYS32_ENTRY,
		       entry_descsz == 8 ? (const void *)&entry64 : (const void *)&entry32,
		       entry_descsz);

	*phdr(im, 0) = (Elf64_Phdr){.p_type = PT_LOAD,
				    .p_flags = PF_R | PF_X,
				    .p_offset = TEXT_OFF,
				    .p_vaddr = TEXT_VADDR,
				    .p_paddr = TEXT_PADDR,
				    .p_filesz = TEXT_FILESZ,
				    .p_memsz = TEXT_MEMSZ,
				    .p_align = 0x1000};
	*phdr(im, 1) = (Elf64_Phdr){.p_type = PT_NOTE,
				    .p_flags = PF_R,
				    .p_offset = NOTE_OFF,
				    .p_filesz = end - NOTE_OFF,
				    .p_memsz = end - NOTE_OFF,
				    .p_align = 4};
	*phdr(im, 2) = (Elf64_Phdr){.p_type = PT_LOAD,
				    .p_flags = PF_R | PF_W,
				    .p_offset = DATA_OFF,
				    .p_vaddr = TEXT_VADDR + (DATA_PADDR - TEXT_PADDR),
				    .p_paddr = DATA_PADDR,
				    .p_filesz = DATA_SIZE,
				    .p_memsz = DATA_SIZE,
				    .p_align = 0x1000};
	/* Types the loader does not know are skipped, whatever their fields say. */
	*phdr(im, 3) = (Elf64_Phdr){
	    .p_type = PT_GNU_STACK, .p_offset = UINT64_MAX, .p_filesz = UINT64_MAX, .p_paddr = 0};

	for (size_t i = 0; i < TEXT_FILESZ; i++)
		im->u.data[TEXT_OFF + i] = text_byte(i);
	/* File bytes between filesz and the next segment: must not reach the bss. */
	memset(im->u.data + TEXT_OFF + TEXT_FILESZ, 0xEE, DATA_OFF - TEXT_OFF - TEXT_FILESZ);
	for (size_t i = 0; i < DATA_SIZE; i++)
		im->u.data[DATA_OFF + i] = data_byte(i);
}

struct fixture {
	struct guest_mem mem;
	struct image im;
	struct elf_kernel kernel;
	struct fk_err err;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(guest_mem_init(&f->mem, GUEST_MEM_ANON, MEM_SIZE, &f->err), 0);
	memset(f->mem.mapping + TEXT_PADDR - 0x1000, UNTOUCHED, 0x10000);
	memset(f->mem.mapping + DATA_PADDR, UNTOUCHED, 0x10000);
	build_image(&f->im, 4);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	guest_mem_destroy(&f->mem);
	free(f);
	return 0;
}

static int load(struct fixture *f)
{
	return elf_load_pvh(f->im.u.data, f->im.size, KERNEL_NAME, &f->mem, &f->kernel, &f->err);
}

static void assert_loaded(struct fixture *f)
{
	const uint8_t *text = f->mem.mapping + TEXT_PADDR;
	const uint8_t *data = f->mem.mapping + DATA_PADDR;

	for (size_t i = 0; i < TEXT_FILESZ; i++)
		assert_int_equal(text[i], text_byte(i));
	for (size_t i = TEXT_FILESZ; i < TEXT_MEMSZ; i++)
		assert_int_equal(text[i], 0);
	assert_int_equal(text[TEXT_MEMSZ], UNTOUCHED);
	assert_int_equal(f->mem.mapping[TEXT_PADDR - 1], UNTOUCHED);
	for (size_t i = 0; i < DATA_SIZE; i++)
		assert_int_equal(data[i], data_byte(i));
	assert_int_equal(data[DATA_SIZE], UNTOUCHED);
}

static void test_load_4byte_entry_note(void **state)
{
	struct fixture *f = *state;

	if (load(f) != 0)
		fail_msg("%s", f->err.msg);
	assert_int_equal(f->kernel.pvh_entry, ENTRY);
	assert_int_equal(f->kernel.load_start, TEXT_PADDR);
	assert_int_equal(f->kernel.load_end, DATA_PADDR + DATA_SIZE);
	assert_loaded(f);
}

/* Linux emits the note with an 8-byte descriptor (_ASM_PTR); the upper half is ignored. */
static void test_load_8byte_entry_note(void **state)
{
	struct fixture *f = *state;

	build_image(&f->im, 8);
	if (load(f) != 0)
		fail_msg("%s", f->err.msg);
	assert_int_equal(f->kernel.pvh_entry, ENTRY);
	assert_loaded(f);
}

static void test_load_segments_in_any_order(void **state)
{
	struct fixture *f = *state;
	Elf64_Phdr text = *phdr(&f->im, 0);

	*phdr(&f->im, 0) = *phdr(&f->im, 2);
	*phdr(&f->im, 2) = text;
	if (load(f) != 0)
		fail_msg("%s", f->err.msg);
	assert_int_equal(f->kernel.load_start, TEXT_PADDR);
	assert_int_equal(f->kernel.load_end, DATA_PADDR + DATA_SIZE);
	assert_loaded(f);
}

/* A PT_LOAD of zero bytes loads nothing and does not widen [load_start, load_end). */
static void test_load_skips_empty_segment(void **state)
{
	struct fixture *f = *state;

	*phdr(&f->im, 3) = (Elf64_Phdr){.p_type = PT_LOAD, .p_offset = 0, .p_paddr = 0x800000};
	if (load(f) != 0)
		fail_msg("%s", f->err.msg);
	assert_int_equal(f->kernel.load_start, TEXT_PADDR);
	assert_int_equal(f->kernel.load_end, DATA_PADDR + DATA_SIZE);
	assert_loaded(f);
}

/* The entry note may sit in any PT_NOTE segment. */
static void test_load_note_in_second_note_segment(void **state)
{
	struct fixture *f = *state;
	Elf64_Phdr *note = phdr(&f->im, 1);

	/* Split: the first note segment keeps only the GNU note, a second one holds Xen's. */
	*phdr(&f->im, 3) = *note;
	phdr(&f->im, 3)->p_offset = f->im.xen_note;
	phdr(&f->im, 3)->p_filesz = note->p_offset + note->p_filesz - f->im.xen_note;
	note->p_filesz = f->im.xen_note - NOTE_OFF;
	if (load(f) != 0)
		fail_msg("%s", f->err.msg);
	assert_int_equal(f->kernel.pvh_entry, ENTRY);
}

/* ---- broken images: each is refused with a message naming the kernel ---- */

static void bad_magic(struct image *im)
{
	im->u.data[EI_MAG1] = 'X';
}

static void truncated_header(struct image *im)
{
	im->size = sizeof(Elf64_Ehdr) - 1;
}

static void class_32bit(struct image *im)
{
	im->u.eh.e_ident[EI_CLASS] = ELFCLASS32;
}

static void machine_aarch64(struct image *im)
{
	im->u.eh.e_machine = EM_AARCH64;
}

static void machine_i386(struct image *im)
{
	im->u.eh.e_machine = EM_386;
}

static void big_endian(struct image *im)
{
	im->u.eh.e_ident[EI_DATA] = ELFDATA2MSB;
}

static void phoff_beyond_file(struct image *im)
{
	im->u.eh.e_phoff = IMG_SIZE + 8;
}

static void phoff_huge(struct image *im)
{
	im->u.eh.e_phoff = UINT64_MAX - 16;
}

static void phdrs_cross_end_of_file(struct image *im)
{
	im->u.eh.e_phoff = IMG_SIZE - sizeof(Elf64_Phdr);
}

static void phnum_beyond_file(struct image *im)
{
	im->u.eh.e_phnum = IMG_SIZE / sizeof(Elf64_Phdr) + 1;
}

static void phnum_max(struct image *im)
{
	im->u.eh.e_phnum = 0xFFFF;
}

static void phnum_zero(struct image *im)
{
	im->u.eh.e_phnum = 0;
}

static void phentsize_elf32(struct image *im)
{
	im->u.eh.e_phentsize = sizeof(Elf32_Phdr);
}

static void phentsize_larger(struct image *im)
{
	im->u.eh.e_phentsize = sizeof(Elf64_Phdr) + 8;
}

static void segment_offset_beyond_file(struct image *im)
{
	phdr(im, 0)->p_offset = IMG_SIZE + 1;
}

static void segment_filesz_beyond_file(struct image *im)
{
	phdr(im, 0)->p_filesz = IMG_SIZE - TEXT_OFF + 1;
	phdr(im, 0)->p_memsz = 0x10000;
}

static void segment_offset_plus_filesz_wraps(struct image *im)
{
	phdr(im, 0)->p_offset = 0x10;
	phdr(im, 0)->p_filesz = UINT64_MAX - 8;
	phdr(im, 0)->p_memsz = UINT64_MAX;
}

static void note_segment_beyond_file(struct image *im)
{
	phdr(im, 1)->p_offset = IMG_SIZE + 100;
}

static void filesz_above_memsz(struct image *im)
{
	phdr(im, 0)->p_memsz = TEXT_FILESZ - 1;
}

static void filesz_with_zero_memsz(struct image *im)
{
	phdr(im, 2)->p_memsz = 0;
}

static void segment_below_1m(struct image *im)
{
	phdr(im, 0)->p_paddr = 0xF0000;
}

static void segment_straddles_1m(struct image *im)
{
	phdr(im, 0)->p_paddr = 0x100000 - 0x10;
}

static void segment_beyond_ram(struct image *im)
{
	phdr(im, 2)->p_paddr = MEM_SIZE - DATA_SIZE / 2;
}

static void segment_outside_ram(struct image *im)
{
	phdr(im, 2)->p_paddr = 0xFEC00000;
}

static void segment_paddr_plus_memsz_wraps(struct image *im)
{
	phdr(im, 2)->p_paddr = UINT64_MAX - 0xFF;
	phdr(im, 2)->p_memsz = 0x1000;
}

static void note_namesz_overflows_segment(struct image *im)
{
	xen_note(im)->n_namesz = 0xFFFFFFFF;
}

static void note_descsz_overflows_segment(struct image *im)
{
	xen_note(im)->n_descsz = 0x1000;
}

static void note_segment_cut_short(struct image *im)
{
	/* The segment ends inside the Xen note's descriptor. */
	phdr(im, 1)->p_filesz = im->xen_note - NOTE_OFF + sizeof(Elf64_Nhdr) + 4 + 2;
}

static void no_note_segment(struct image *im)
{
	phdr(im, 1)->p_type = PT_NULL;
}

static void note_named_xex(struct image *im)
{
	memcpy(im->u.data + im->xen_note + sizeof(Elf64_Nhdr), "Xex", 4);
}

static void note_wrong_type(struct image *im)
{
	xen_note(im)->n_type = XEN_ELFNOTE_PHYS32_ENTRY + 1;
}

static void note_desc_too_short(struct image *im)
{
	xen_note(im)->n_descsz = 2;
}

static void entry_outside_ram(struct image *im)
{
	uint32_t entry = 0x7FFF0000;

	memcpy(im->u.data + im->xen_note + sizeof(Elf64_Nhdr) + 4, &entry, sizeof(entry));
}

static void entry_at_end_of_ram(struct image *im)
{
	uint32_t entry = (uint32_t)MEM_SIZE;

	memcpy(im->u.data + im->xen_note + sizeof(Elf64_Nhdr) + 4, &entry, sizeof(entry));
}

static void no_load_segment(struct image *im)
{
	phdr(im, 0)->p_type = PT_NULL;
	phdr(im, 2)->p_type = PT_DYNAMIC;
}

static void only_empty_load_segments(struct image *im)
{
	phdr(im, 0)->p_filesz = phdr(im, 0)->p_memsz = 0;
	phdr(im, 2)->p_filesz = phdr(im, 2)->p_memsz = 0;
}

static const struct bad_image {
	const char *what;
	void (*mutate)(struct image *im);
	int code;
	const char *mentions; /* besides the kernel's name */
} bad_images[] = {
    {"bad magic", bad_magic, ENOEXEC, "magic"},
    {"shorter than an ELF header", truncated_header, ENOEXEC, "magic"},
    {"32-bit class", class_32bit, ENOEXEC, "class 1"},
    {"aarch64", machine_aarch64, ENOEXEC, "machine 183"},
    {"i386", machine_i386, ENOEXEC, "machine 3"},
    {"big-endian", big_endian, ENOEXEC, "little-endian"},
    {"phoff beyond the file", phoff_beyond_file, ENOEXEC, "program headers"},
    {"phoff near UINT64_MAX", phoff_huge, ENOEXEC, "program headers"},
    {"program headers cross the end", phdrs_cross_end_of_file, ENOEXEC, "program headers"},
    {"phnum*phentsize beyond the file", phnum_beyond_file, ENOEXEC, "program headers"},
    {"phnum 0xffff", phnum_max, ENOEXEC, "program headers"},
    {"phnum 0", phnum_zero, ENOEXEC, "program headers"},
    {"phentsize of ELF32", phentsize_elf32, ENOEXEC, "program headers"},
    {"phentsize too large", phentsize_larger, ENOEXEC, "program headers"},
    {"segment offset beyond the file", segment_offset_beyond_file, ENOEXEC, "segment 0"},
    {"segment filesz beyond the file", segment_filesz_beyond_file, ENOEXEC, "segment 0"},
    {"segment offset+filesz wraps", segment_offset_plus_filesz_wraps, ENOEXEC, "segment 0"},
    {"note segment beyond the file", note_segment_beyond_file, ENOEXEC, "segment 1"},
    {"filesz > memsz", filesz_above_memsz, ENOEXEC, "segment 0"},
    {"segment below 1 MiB", segment_below_1m, ENOEXEC, "0xf0000"},
    {"segment straddling 1 MiB", segment_straddles_1m, ENOEXEC, "0xffff0"},
    {"segment past the end of RAM", segment_beyond_ram, EFBIG, "segment 2"},
    {"segment in the MMIO hole", segment_outside_ram, EFBIG, "0xfec00000"},
    {"segment paddr+memsz wraps", segment_paddr_plus_memsz_wraps, EFBIG, "segment 2"},
    {"note namesz overflows the segment", note_namesz_overflows_segment, ENOEXEC, "PVH"},
    {"note descsz overflows the segment", note_descsz_overflows_segment, ENOEXEC, "PVH"},
    {"note segment ends inside the note", note_segment_cut_short, ENOEXEC, "PVH"},
    {"no note segment", no_note_segment, ENOEXEC, "PVH"},
    {"note named Xex", note_named_xex, ENOEXEC, "PVH"},
    {"note of another type", note_wrong_type, ENOEXEC, "PVH"},
    {"note descriptor of 2 bytes", note_desc_too_short, ENOEXEC, "PVH"},
    {"entry outside RAM", entry_outside_ram, ENOEXEC, "0x7fff0000"},
    {"entry one past RAM", entry_at_end_of_ram, ENOEXEC, "0x1000000"},
    {"no PT_LOAD", no_load_segment, ENOEXEC, "loadable"},
    {"only empty PT_LOADs", only_empty_load_segments, ENOEXEC, "loadable"},
};

/* Loads one broken image; returns whether it was refused as expected (and says why not). */
static bool refused_as_expected(struct fixture *f, const struct bad_image *c)
{
	int ret;

	build_image(&f->im, 4);
	c->mutate(&f->im);
	fk_err_clear(&f->err);
	ret = load(f);
	if (ret != -c->code || f->err.code != c->code) {
		print_error("%s: returned %d, want %d (\"%s\")\n", c->what, ret, -c->code,
			    f->err.msg);
		return false;
	}
	if (!strstr(f->err.msg, KERNEL_NAME) || !strstr(f->err.msg, c->mentions)) {
		print_error("%s: error \"%s\" should name %s and mention \"%s\"\n", c->what,
			    f->err.msg, KERNEL_NAME, c->mentions);
		return false;
	}
	return true;
}

static void test_bad_images(void **state)
{
	struct fixture *f = *state;
	int failed = 0;

	for (size_t i = 0; i < sizeof(bad_images) / sizeof(bad_images[0]); i++)
		failed += !refused_as_expected(f, &bad_images[i]);
	assert_int_equal(failed, 0);
}

/* ELF requires p_filesz <= p_memsz; a zero memsz does not make file bytes legal. */
static void test_filesz_with_zero_memsz(void **state)
{
	static const struct bad_image c = {"filesz > memsz == 0", filesz_with_zero_memsz, ENOEXEC,
					   "segment 2"};

	assert_true(refused_as_expected(*state, &c));
}

/* ---- read_file ---- */

struct tmp_file {
	char path[64];
};

static void make_tmp_file(struct tmp_file *t, const void *data, size_t len)
{
	int fd;

	snprintf(t->path, sizeof(t->path), "/tmp/forkd-test-elf-XXXXXX");
	fd = mkstemp(t->path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static void test_read_file_whole(void **state)
{
	struct fixture *f = *state;
	struct tmp_file t;
	uint8_t *data = NULL;
	size_t size = 0;

	make_tmp_file(&t, f->im.u.data, IMG_SIZE);
	assert_int_equal(read_file(t.path, IMG_SIZE, &data, &size, &f->err), 0);
	assert_int_equal(size, IMG_SIZE);
	assert_memory_equal(data, f->im.u.data, IMG_SIZE);
	/* What read_file returns is what elf_load_pvh takes. */
	assert_int_equal(elf_load_pvh(data, size, t.path, &f->mem, &f->kernel, &f->err), 0);
	assert_int_equal(f->kernel.pvh_entry, ENTRY);
	free(data);
	unlink(t.path);
}

static void test_read_file_empty(void **state)
{
	struct fixture *f = *state;
	struct tmp_file t;
	uint8_t *data = NULL;
	size_t size = 1;

	make_tmp_file(&t, "", 0);
	assert_int_equal(read_file(t.path, 16, &data, &size, &f->err), 0);
	assert_int_equal(size, 0);
	assert_non_null(data);
	/* An empty kernel is then refused by the loader, naming the file. */
	assert_int_equal(elf_load_pvh(data, size, t.path, &f->mem, &f->kernel, &f->err), -ENOEXEC);
	assert_non_null(strstr(f->err.msg, t.path));
	free(data);
	unlink(t.path);
}

static void expect_read_error(struct fixture *f, const char *path, size_t max, int code)
{
	uint8_t *data = (uint8_t *)"untouched";
	size_t size = 12345;

	fk_err_clear(&f->err);
	assert_int_equal(read_file(path, max, &data, &size, &f->err), -code);
	assert_int_equal(f->err.code, code);
	if (!strstr(f->err.msg, path))
		fail_msg("error \"%s\" does not name %s", f->err.msg, path);
	assert_string_equal((char *)data, "untouched");
	assert_int_equal(size, 12345);
}

static void test_read_file_errors(void **state)
{
	struct fixture *f = *state;
	struct tmp_file t;

	expect_read_error(f, "/nonexistent/forkd/vmlinux", 1 << 20, ENOENT);
	expect_read_error(f, "/tmp", 1 << 20, EINVAL);
	expect_read_error(f, "/dev/null", 1 << 20, EINVAL);

	make_tmp_file(&t, f->im.u.data, IMG_SIZE);
	expect_read_error(f, t.path, IMG_SIZE - 1, EFBIG);
	unlink(t.path);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_load_4byte_entry_note),
	    T(test_load_8byte_entry_note),
	    T(test_load_segments_in_any_order),
	    T(test_load_skips_empty_segment),
	    T(test_load_note_in_second_note_segment),
	    T(test_bad_images),
	    T(test_filesz_with_zero_memsz),
	    T(test_read_file_whole),
	    T(test_read_file_empty),
	    T(test_read_file_errors),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
