/* SPDX-License-Identifier: MIT */
/*
 * The bzImage (64-bit boot protocol) loader, on synthetic images built here:
 * header validation and its errors, the zero page a kernel reads, the
 * identity map and GDT it starts on, initrd placement and format detection
 * through boot_setup(), and the --cpuid-hide masks.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "boot/boot.h"
#include "boot/bzimage_boot.h"
#include "boot/e820.h"
#include "core/layout.h"
#include "core/vm.h"

#define MiB (1ULL << 20)
#define GiB (1ULL << 30)

struct image_spec {
	uint16_t version;
	uint16_t xloadflags;
	uint8_t setup_sects;
	uint8_t relocatable;
	uint32_t pm_size; /* multiple of 16 */
	uint64_t pref_address;
	uint32_t init_size;
	uint32_t kernel_alignment;
	uint32_t initrd_addr_max;
	uint32_t cmdline_size;
};

static struct image_spec default_spec(void)
{
	return (struct image_spec){
	    .version = 0x020f,
	    .xloadflags = BZ_XLF_KERNEL_64,
	    .setup_sects = 3,
	    .relocatable = 1,
	    .pm_size = 8192,
	    .pref_address = 16 * MiB,
	    .init_size = 4 * MiB,
	    .kernel_alignment = 2 * MiB,
	    .initrd_addr_max = 0x7fffffff,
	    .cmdline_size = 2047,
	};
}

static uint64_t setup_bytes(const struct image_spec *s)
{
	return ((uint64_t)(s->setup_sects ? s->setup_sects : 4) + 1) * 512;
}

static void put(uint8_t *img, size_t off, uint64_t v, size_t n)
{
	memcpy(img + off, &v, n); /* little-endian host */
}

/* A bzImage: setup sectors with the header, then pm_size bytes of a recognisable pattern. */
static uint8_t *make_image(const struct image_spec *s, size_t *size)
{
	uint64_t setup = setup_bytes(s);
	uint8_t *img;

	*size = setup + s->pm_size;
	img = calloc(1, *size);
	assert_non_null(img);
	img[BZ_SETUP_SECTS] = s->setup_sects;
	put(img, BZ_SYSSIZE, s->pm_size / 16, 4);
	put(img, BZ_BOOT_FLAG, 0xaa55, 2);
	img[BZ_JUMP] = 0xeb;
	img[BZ_JUMP + 1] = 0x6a; /* header ends at 0x26c, like Linux 6.x */
	memcpy(img + BZ_HEADER_MAGIC, "HdrS", 4);
	put(img, BZ_VERSION, s->version, 2);
	img[BZ_LOADFLAGS] = BZ_LOADFLAG_LOADED_HIGH;
	put(img, BZ_INITRD_ADDR_MAX, s->initrd_addr_max, 4);
	put(img, BZ_KERNEL_ALIGNMENT, s->kernel_alignment, 4);
	img[BZ_RELOCATABLE] = s->relocatable;
	put(img, BZ_XLOADFLAGS, s->xloadflags, 2);
	put(img, BZ_CMDLINE_SIZE, s->cmdline_size, 4);
	put(img, BZ_PREF_ADDRESS, s->pref_address, 8);
	put(img, BZ_INIT_SIZE, s->init_size, 4);
	put(img, 0x23c, 0x5a5a5a5a, 4); /* hardware_subarch: a field we must copy untouched */
	for (uint32_t i = 0; i < s->pm_size; i++)
		img[setup + i] = (uint8_t)(i * 7 + 3);
	return img;
}

static void init_mem(struct guest_mem *mem, uint64_t size)
{
	struct fk_err err = {0};

	if (guest_mem_init(mem, GUEST_MEM_ANON, size, &err) != 0)
		fail_msg("guest_mem_init: %s", err.msg);
}

/* parse() must fail with `code` and a message naming the file and containing `what`. */
static void expect_parse_error(const uint8_t *img, size_t size, uint64_t low_end, int code,
			       const char *what)
{
	struct bzimage_info info;
	struct fk_err err = {0};

	assert_int_equal(bzimage_parse(img, size, "vmlinuz-test", low_end, &info, &err), -code);
	if (!strstr(err.msg, "vmlinuz-test") || !strstr(err.msg, what))
		fail_msg("error '%s' should name the file and say '%s'", err.msg, what);
}

static void test_parse_valid(void **state)
{
	struct image_spec s = default_spec();
	struct bzimage_info info;
	struct fk_err err = {0};
	size_t size;
	uint8_t *img;

	(void)state;
	img = make_image(&s, &size);
	assert_true(bzimage_detect(img, size));
	assert_int_equal(bzimage_parse(img, size, "k", 256 * MiB, &info, &err), 0);
	assert_int_equal(info.version, 0x020f);
	assert_int_equal(info.pm_offset, 4 * 512);
	assert_int_equal(info.pm_size, s.pm_size);
	assert_int_equal(info.load_addr, 16 * MiB);
	assert_int_equal(info.entry64, 16 * MiB + 0x200);
	assert_int_equal(info.init_size, 4 * MiB);
	assert_int_equal(info.cmdline_max, 2047);
	assert_int_equal(info.initrd_max, 0x7fffffff);
	free(img);

	/* setup_sects 0 means 4; a relocatable kernel moves up to its alignment. */
	s.setup_sects = 0;
	s.pref_address = 0x1100000;
	img = make_image(&s, &size);
	assert_int_equal(bzimage_parse(img, size, "k", 256 * MiB, &info, &err), 0);
	assert_int_equal(info.pm_offset, 5 * 512);
	assert_int_equal(info.load_addr, 0x1200000);
	free(img);

	/* A fixed kernel goes exactly where it asks. */
	s.relocatable = 0;
	img = make_image(&s, &size);
	assert_int_equal(bzimage_parse(img, size, "k", 256 * MiB, &info, &err), 0);
	assert_int_equal(info.load_addr, 0x1100000);
	free(img);
}

static void test_parse_errors(void **state)
{
	struct image_spec s = default_spec();
	size_t size;
	uint8_t *img;

	(void)state;
	img = make_image(&s, &size);
	img[BZ_HEADER_MAGIC] = 'X';
	assert_false(bzimage_detect(img, size));
	expect_parse_error(img, size, 256 * MiB, ENOEXEC, "no \"HdrS\" at 0x202");
	free(img);

	s.version = 0x0205;
	img = make_image(&s, &size);
	expect_parse_error(img, size, 256 * MiB, ENOEXEC,
			   "bzImage protocol 2.05 is too old: need 2.12+");
	free(img);
	s.version = 0x020b;
	img = make_image(&s, &size);
	expect_parse_error(img, size, 256 * MiB, ENOEXEC, "protocol 2.11 is too old");
	free(img);

	s = default_spec();
	s.xloadflags = 0x2;
	img = make_image(&s, &size);
	expect_parse_error(img, size, 256 * MiB, ENOEXEC, "not 64-bit capable");
	free(img);

	/* init_size past the end of RAM, and a preferred address past it. */
	s = default_spec();
	s.init_size = 40 * MiB;
	img = make_image(&s, &size);
	expect_parse_error(img, size, 32 * MiB, EFBIG, "too large for RAM");
	expect_parse_error(img, size, 56 * MiB - 1, EFBIG, "too large for RAM");
	free(img);
	s = default_spec();
	s.pref_address = 64 * MiB;
	img = make_image(&s, &size);
	expect_parse_error(img, size, 32 * MiB, EFBIG, "too large for RAM");
	free(img);

	/* Truncated: inside the kernel, inside the setup sectors, inside the header. */
	s = default_spec();
	img = make_image(&s, &size);
	expect_parse_error(img, size - 16, 256 * MiB, ENOEXEC, "truncated");
	expect_parse_error(img, setup_bytes(&s), 256 * MiB, ENOEXEC, "truncated");
	expect_parse_error(img, 0x240, 256 * MiB, ENOEXEC, "truncated");
	expect_parse_error(img, 0x207, 256 * MiB, ENOEXEC, "truncated");
	expect_parse_error(img, 0x100, 256 * MiB, ENOEXEC, "no \"HdrS\"");
	free(img);

	s = default_spec();
	s.kernel_alignment = 3 * MiB;
	img = make_image(&s, &size);
	expect_parse_error(img, size, 256 * MiB, ENOEXEC, "kernel_alignment");
	free(img);
}

static void test_load_copies_kernel(void **state)
{
	struct image_spec s = default_spec();
	struct bzimage_info info;
	struct guest_mem mem;
	struct fk_err err = {0};
	size_t size;
	uint8_t *img;

	(void)state;
	init_mem(&mem, 64 * MiB);
	img = make_image(&s, &size);
	assert_int_equal(bzimage_parse(img, size, "k", guest_mem_low_end(&mem), &info, &err), 0);
	assert_int_equal(bzimage_load(img, &info, &mem, &err), 0);
	assert_memory_equal(guest_mem_ptr(&mem, info.load_addr, s.pm_size), img + setup_bytes(&s),
			    s.pm_size);
	free(img);
	guest_mem_destroy(&mem);
}

static uint32_t bp32(const uint8_t *bp, size_t off)
{
	uint32_t v;

	memcpy(&v, bp + off, 4);
	return v;
}

static uint64_t bp64(const uint8_t *bp, size_t off)
{
	uint64_t v;

	memcpy(&v, bp + off, 8);
	return v;
}

static void check_boot_params(uint64_t mem_size, uint16_t version, uint64_t initrd_gpa,
			      uint64_t initrd_size)
{
	struct hvm_memmap_table_entry map[E820_MAX_ENTRIES];
	struct image_spec s = default_spec();
	struct bzimage_boot_args args = {
	    .cmdline_gpa = LAYOUT_CMDLINE,
	    .initrd_gpa = initrd_gpa,
	    .initrd_size = initrd_size,
	    .rsdp_gpa = LAYOUT_ACPI_START,
	};
	struct bzimage_info info;
	struct guest_mem mem;
	struct fk_err err = {0};
	const char *cmdline = "console=ttyS0 root=/dev/vda";
	uint8_t *img, *bp;
	size_t size;
	int n;

	s.version = version;
	init_mem(&mem, mem_size);
	img = make_image(&s, &size);
	assert_int_equal(bzimage_parse(img, size, "k", guest_mem_low_end(&mem), &info, &err), 0);
	guest_mem_write(&mem, LAYOUT_CMDLINE, cmdline, strlen(cmdline) + 1);
	bp = guest_mem_ptr(&mem, LAYOUT_BZ_BOOT_PARAMS, BP_SIZE);
	memset(bp, 0xEE, BP_SIZE); /* stale bytes must not survive */
	assert_int_equal(
	    bzimage_write_boot_params(&mem, LAYOUT_BZ_BOOT_PARAMS, img, &info, &args, &err), 0);

	/* The header is the image's, with the loader's fields filled in. */
	assert_memory_equal(bp + BZ_HEADER_MAGIC, "HdrS", 4);
	assert_int_equal(bp32(bp, 0x23c), 0x5a5a5a5a);
	assert_int_equal(bp[BZ_SETUP_SECTS], s.setup_sects);
	assert_int_equal(bp32(bp, BZ_INIT_SIZE), s.init_size);
	assert_int_equal(bp[BZ_TYPE_OF_LOADER], 0xff);
	assert_int_equal(bp[BZ_LOADFLAGS], BZ_LOADFLAG_LOADED_HIGH | BZ_LOADFLAG_CAN_USE_HEAP);
	assert_int_equal(bp[BZ_HEAP_END_PTR] | bp[BZ_HEAP_END_PTR + 1] << 8, 0xde00);
	assert_int_equal(bp32(bp, BZ_CMD_LINE_PTR), LAYOUT_CMDLINE);
	assert_int_equal(bp32(bp, BP_EXT_CMD_LINE_PTR), 0);
	assert_string_equal(guest_mem_ptr(&mem, bp32(bp, BZ_CMD_LINE_PTR), 1), cmdline);
	assert_int_equal(bp32(bp, BZ_RAMDISK_IMAGE), (uint32_t)initrd_gpa);
	assert_int_equal(bp32(bp, BZ_RAMDISK_SIZE), (uint32_t)initrd_size);
	assert_int_equal(bp32(bp, BP_EXT_RAMDISK_IMAGE), (uint32_t)(initrd_gpa >> 32));
	assert_int_equal(bp32(bp, BP_EXT_RAMDISK_SIZE), (uint32_t)(initrd_size >> 32));
	assert_int_equal(bp64(bp, BP_ACPI_RSDP_ADDR), version >= 0x020e ? LAYOUT_ACPI_START : 0);
	/* Fields the loader does not own stay zero. */
	assert_int_equal(bp64(bp, 0), 0);
	assert_int_equal(bp64(bp, 0x250), 0); /* setup_data */

	/* The memory map is e820_build's, entry for entry, as packed 20-byte records. */
	n = e820_build(&mem, map);
	assert_int_equal(bp[BP_E820_ENTRIES], n);
	for (int i = 0; i < n; i++) {
		const uint8_t *e = bp + BP_E820_TABLE + i * BP_E820_ENTRY_SIZE;
		assert_int_equal(bp64(e, 0), map[i].addr);
		assert_int_equal(bp64(e, 8), map[i].size);
		assert_int_equal(bp32(e, 16), map[i].type);
	}
	assert_int_equal(bp64(bp + BP_E820_TABLE + n * BP_E820_ENTRY_SIZE, 0), 0);
	free(img);
	guest_mem_destroy(&mem);
}

static void test_boot_params(void **state)
{
	(void)state;
	check_boot_params(256 * MiB, 0x020f, 0x0f000000, 12345);
	check_boot_params(4 * GiB, 0x020f, 0, 0);			 /* RAM above 4 GiB */
	check_boot_params(64 * MiB, 0x020c, 0x123456789000ULL, 5 * GiB); /* >4G: ext_* */
}

static uint64_t walk(const struct guest_mem *mem, uint64_t table, unsigned index)
{
	uint64_t entry;

	assert_int_equal(guest_mem_read(mem, (table & ~0xfffULL) + index * 8, &entry, 8), 0);
	return entry;
}

/* Translates va through the tables at cr3 like the MMU; fails the test on a non-present entry. */
static uint64_t translate(const struct guest_mem *mem, uint64_t cr3, uint64_t va)
{
	uint64_t pml4e = walk(mem, cr3, (va >> 39) & 511);
	uint64_t pdpte, pde;

	assert_true(pml4e & PTE_PRESENT);
	assert_true(pml4e & PTE_WRITABLE);
	pdpte = walk(mem, pml4e & 0x000ffffffffff000ULL, (va >> 30) & 511);
	assert_true(pdpte & PTE_PRESENT);
	assert_false(pdpte & PTE_HUGE); /* PVM refuses 1 GiB pages */
	pde = walk(mem, pdpte & 0x000ffffffffff000ULL, (va >> 21) & 511);
	assert_true(pde & PTE_PRESENT);
	assert_true(pde & PTE_WRITABLE);
	assert_true(pde & PTE_HUGE);
	return (pde & 0x000fffffffe00000ULL) | (va & (2 * MiB - 1));
}

static void test_page_tables(void **state)
{
	const uint64_t probes[] = {0,
				   0x1234,
				   LAYOUT_BZ_BOOT_PARAMS,
				   LAYOUT_CMDLINE,
				   16 * MiB + 0x200,
				   0x7fffffff,
				   0xbfffffff,
				   0xfee00000,
				   0xffffffff};
	struct guest_mem mem;
	struct fk_err err = {0};
	uint64_t cr3 = LAYOUT_BZ_PAGE_TABLES;

	(void)state;
	init_mem(&mem, 64 * MiB);
	memset(guest_mem_ptr(&mem, cr3, BZ_PAGE_TABLE_PAGES * 4096), 0xAB,
	       BZ_PAGE_TABLE_PAGES * 4096);
	assert_int_equal(bzimage_write_page_tables(&mem, cr3, &err), 0);
	for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++)
		assert_int_equal(translate(&mem, cr3, probes[i]), probes[i]);
	/* Every 2 MiB page of the first 4 GiB is identity-mapped. */
	for (uint64_t va = 0; va < 4 * GiB; va += 2 * MiB)
		assert_int_equal(translate(&mem, cr3, va + 0x1f0000), va + 0x1f0000);
	/* Nothing beyond 4 GiB. */
	assert_int_equal(walk(&mem, cr3, 1), 0);
	assert_int_equal(walk(&mem, walk(&mem, cr3, 0), 4), 0);
	/* The tables sit where the layout reserves them, clear of the zero page and GDT. */
	assert_true(cr3 + BZ_PAGE_TABLE_PAGES * 4096 <= LAYOUT_BZ_STACK_TOP - 4096);
	assert_true(LAYOUT_BZ_GDT + BZ_GDT_ENTRIES * 8 <= cr3);
	assert_true(LAYOUT_BZ_BOOT_PARAMS >= LAYOUT_PVH_MEMMAP + 0x1000);
	assert_true(LAYOUT_BZ_BOOT_PARAMS + BP_SIZE <= LAYOUT_CMDLINE);

	assert_int_not_equal(bzimage_write_page_tables(&mem, 64 * MiB - 4096, &err), 0);
	guest_mem_destroy(&mem);
}

struct descriptor {
	uint32_t base, limit;
	unsigned type, s, dpl, p, l, db, g;
};

static struct descriptor decode(uint64_t d)
{
	return (struct descriptor){
	    .limit = (uint32_t)((d & 0xffff) | ((d >> 32) & 0xf0000)),
	    .base = (uint32_t)(((d >> 16) & 0xffffff) | ((d >> 32) & 0xff000000)),
	    .type = (d >> 40) & 0xf,
	    .s = (d >> 44) & 1,
	    .dpl = (d >> 45) & 3,
	    .p = (d >> 47) & 1,
	    .l = (d >> 53) & 1,
	    .db = (d >> 54) & 1,
	    .g = (d >> 55) & 1,
	};
}

static void test_gdt(void **state)
{
	uint64_t gdt[BZ_GDT_ENTRIES];
	struct descriptor cs, ds;
	struct guest_mem mem;
	struct fk_err err = {0};

	(void)state;
	init_mem(&mem, 64 * MiB);
	assert_int_equal(bzimage_write_gdt(&mem, LAYOUT_BZ_GDT, &err), 0);
	assert_int_equal(guest_mem_read(&mem, LAYOUT_BZ_GDT, gdt, sizeof(gdt)), 0);
	assert_int_equal(gdt[0], 0);
	cs = decode(gdt[BZ_BOOT_CS / 8]);
	ds = decode(gdt[BZ_BOOT_DS / 8]);
	/* __BOOT_CS: present ring-0 64-bit code, execute/read; flat 4 GiB. */
	assert_int_equal(cs.p, 1);
	assert_int_equal(cs.s, 1);
	assert_int_equal(cs.dpl, 0);
	assert_int_equal(cs.type & 0xa, 0xa);
	assert_int_equal(cs.l, 1);
	assert_int_equal(cs.db, 0);
	assert_int_equal(cs.base, 0);
	assert_int_equal(cs.limit, 0xfffff);
	assert_int_equal(cs.g, 1);
	/* __BOOT_DS: present ring-0 data, read/write; flat 4 GiB. */
	assert_int_equal(ds.p, 1);
	assert_int_equal(ds.s, 1);
	assert_int_equal(ds.dpl, 0);
	assert_int_equal(ds.type & 0xa, 0x2);
	assert_int_equal(ds.base, 0);
	assert_int_equal(ds.limit, 0xfffff);
	assert_int_equal(ds.g, 1);
	assert_int_equal(ds.db, 1);
	guest_mem_destroy(&mem);
}

static void write_temp(char *path, const void *data, size_t size)
{
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
	close(fd);
}

static void rewrite_file(const char *path, const void *data, size_t size)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, size, f), size);
	fclose(f);
}

/* boot_setup() on a bzImage: format detected, initrd below initrd_addr_max, entry state. */
static void test_boot_setup_bzimage(void **state)
{
	struct image_spec s = default_spec();
	struct vmm_config cfg = {0};
	char kpath[] = "/tmp/test_bzimage_kXXXXXX", ipath[] = "/tmp/test_bzimage_iXXXXXX";
	uint8_t initrd[10000], *img, *bp;
	struct fk_err err = {0};
	struct vm *vm = calloc(1, sizeof(*vm));
	uint32_t rd_addr;
	size_t size;

	(void)state;
	assert_non_null(vm);
	s.initrd_addr_max = 48 * MiB - 1;
	img = make_image(&s, &size);
	write_temp(kpath, img, size);
	for (size_t i = 0; i < sizeof(initrd); i++)
		initrd[i] = (uint8_t)(i ^ 0x5a);
	write_temp(ipath, initrd, sizeof(initrd));
	cfg.kernel = kpath;
	cfg.initrd = ipath;
	cfg.cmdline = "quiet";
	vm->cfg = &cfg;
	vm->nr_vcpus = 1;
	init_mem(&vm->mem, 128 * MiB);

	assert_int_equal(boot_setup(vm, &err), 0);
	assert_int_equal(vm->boot_protocol, BOOT_PROTOCOL_LINUX64);
	assert_int_equal(vm->kernel_entry, 16 * MiB + 0x200);
	bp = guest_mem_ptr(&vm->mem, LAYOUT_BZ_BOOT_PARAMS, BP_SIZE);
	rd_addr = bp32(bp, BZ_RAMDISK_IMAGE);
	assert_int_equal(bp32(bp, BZ_RAMDISK_SIZE), sizeof(initrd));
	assert_int_equal(rd_addr % 4096, 0);
	assert_true(rd_addr + sizeof(initrd) <= 48 * MiB);
	assert_true(rd_addr + sizeof(initrd) > 48 * MiB - 4096); /* as high as allowed */
	assert_true(rd_addr >= 16 * MiB + s.init_size);
	assert_memory_equal(guest_mem_ptr(&vm->mem, rd_addr, sizeof(initrd)), initrd,
			    sizeof(initrd));
	assert_string_equal(guest_mem_ptr(&vm->mem, bp32(bp, BZ_CMD_LINE_PTR), 1), "quiet");
	assert_int_equal(bp64(bp, BP_ACPI_RSDP_ADDR), vm->rsdp_gpa);
	assert_int_not_equal(vm->rsdp_gpa, 0);
	assert_int_equal(translate(&vm->mem, LAYOUT_BZ_PAGE_TABLES, vm->kernel_entry),
			 vm->kernel_entry);
	guest_mem_destroy(&vm->mem);

	/* A command line longer than the kernel's cmdline_size is refused. */
	memset(vm, 0, sizeof(*vm));
	vm->cfg = &cfg;
	vm->nr_vcpus = 1;
	cfg.initrd = NULL;
	put(img, BZ_CMDLINE_SIZE, 3, 4);
	rewrite_file(kpath, img, size);
	init_mem(&vm->mem, 128 * MiB);
	assert_int_equal(boot_setup(vm, &err), -E2BIG);
	assert_non_null(strstr(err.msg, "--append"));
	guest_mem_destroy(&vm->mem);

	/* Neither ELF nor bzImage. */
	memset(vm, 0, sizeof(*vm));
	vm->cfg = &cfg;
	vm->nr_vcpus = 1;
	memset(img, 0, size);
	rewrite_file(kpath, img, size);
	init_mem(&vm->mem, 128 * MiB);
	assert_int_equal(boot_setup(vm, &err), -ENOEXEC);
	assert_non_null(strstr(err.msg, "not an ELF"));
	assert_non_null(strstr(err.msg, kpath));
	guest_mem_destroy(&vm->mem);

	unlink(kpath);
	unlink(ipath);
	free(img);
	free(vm);
}

/* A CPUID table with every bit set in the leaves --cpuid-hide touches. */
static struct kvm_cpuid2 *full_cpuid(void)
{
	static const struct {
		uint32_t fn, idx;
	} leaves[] = {{1, 0}, {7, 0}, {7, 1}, {0xD, 0}, {0xD, 1}, {0xD, 2}, {0x80000001, 0}};
	enum { N = sizeof(leaves) / sizeof(leaves[0]) };
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + N * sizeof(c->entries[0]));

	assert_non_null(c);
	c->nent = N;
	for (int i = 0; i < N; i++)
		c->entries[i] = (struct kvm_cpuid_entry2){.function = leaves[i].fn,
							  .index = leaves[i].idx,
							  .eax = ~0u,
							  .ebx = ~0u,
							  .ecx = ~0u,
							  .edx = ~0u};
	return c;
}

static const struct kvm_cpuid_entry2 *leaf(const struct kvm_cpuid2 *c, uint32_t fn, uint32_t idx)
{
	for (uint32_t i = 0; i < c->nent; i++)
		if (c->entries[i].function == fn && c->entries[i].index == idx)
			return &c->entries[i];
	fail_msg("no leaf %#x.%u", fn, idx);
	return NULL;
}

#define BIT(n) (1u << (n))

static void test_cpuid_hide(void **state)
{
	struct kvm_cpuid2 *c;

	(void)state;
	/* Nothing asked: nothing changes. */
	c = full_cpuid();
	cpuid_hide(c, 0);
	for (uint32_t i = 0; i < c->nent; i++)
		assert_int_equal(c->entries[i].eax & c->entries[i].ebx & c->entries[i].ecx &
				     c->entries[i].edx,
				 ~0u);
	free(c);

	/* xsave: XSAVE, OSXSAVE, leaf 0xD gone, and AVX with it; SSE and the rest stay. */
	c = full_cpuid();
	cpuid_hide(c, VMM_CPUID_HIDE_XSAVE);
	assert_int_equal(leaf(c, 1, 0)->ecx & (BIT(26) | BIT(27) | BIT(28) | BIT(12) | BIT(29)), 0);
	assert_int_equal(leaf(c, 1, 0)->ecx & (BIT(0) | BIT(19) | BIT(20)),
			 BIT(0) | BIT(19) | BIT(20));
	assert_int_equal(leaf(c, 1, 0)->edx, ~0u);
	assert_int_equal(leaf(c, 7, 0)->ebx & (BIT(5) | BIT(16) | BIT(30) | BIT(31)), 0);
	assert_int_equal(leaf(c, 7, 0)->ebx & (BIT(0) | BIT(3) | BIT(8) | BIT(9)),
			 BIT(0) | BIT(3) | BIT(8) | BIT(9)); /* fsgsbase, bmi1, bmi2, erms */
	assert_int_equal(leaf(c, 7, 0)->ecx & (BIT(3) | BIT(4)), 0); /* PKU/OSPKE need XSAVE */
	assert_int_equal(leaf(c, 7, 1)->eax & (BIT(4) | BIT(5)), 0);
	for (uint32_t idx = 0; idx <= 2; idx++) {
		const struct kvm_cpuid_entry2 *e = leaf(c, 0xD, idx);
		assert_int_equal(e->eax | e->ebx | e->ecx | e->edx, 0);
	}
	assert_int_equal(leaf(c, 0x80000001, 0)->ecx & (BIT(11) | BIT(16)), 0);
	free(c);

	/* avx512: only the AVX-512 family and its XCR0 state. */
	c = full_cpuid();
	cpuid_hide(c, VMM_CPUID_HIDE_AVX512);
	assert_int_equal(leaf(c, 7, 0)->ebx & (BIT(16) | BIT(17) | BIT(30) | BIT(31)), 0);
	assert_true(leaf(c, 7, 0)->ebx & BIT(5)); /* AVX2 stays */
	assert_true(leaf(c, 1, 0)->ecx & BIT(28));
	assert_int_equal(leaf(c, 0xD, 0)->eax & (7u << 5), 0);
	assert_true(leaf(c, 0xD, 0)->eax & BIT(2));
	free(c);

	/* avx: AVX and up, XSAVE itself stays. */
	c = full_cpuid();
	cpuid_hide(c, VMM_CPUID_HIDE_AVX);
	assert_int_equal(leaf(c, 1, 0)->ecx & (BIT(12) | BIT(28) | BIT(29)), 0);
	assert_int_equal(leaf(c, 1, 0)->ecx & (BIT(26) | BIT(27)), BIT(26) | BIT(27));
	assert_int_equal(leaf(c, 7, 0)->ebx & (BIT(5) | BIT(16)), 0);
	assert_int_equal(leaf(c, 0xD, 0)->eax & (BIT(2) | (7u << 5)), 0);
	assert_int_equal(leaf(c, 0xD, 0)->eax & 3, 3); /* x87 and SSE state */
	free(c);

	c = full_cpuid();
	cpuid_hide(c, VMM_CPUID_HIDE_PCID | VMM_CPUID_HIDE_X2APIC | VMM_CPUID_HIDE_CX16);
	assert_int_equal(leaf(c, 1, 0)->ecx, ~(BIT(17) | BIT(21) | BIT(13)));
	assert_int_equal(leaf(c, 7, 0)->ebx, ~BIT(10));
	free(c);
}

static void test_parse_cpuid_hide(void **state)
{
	struct fk_err err = {0};
	unsigned mask = 0;

	(void)state;
	assert_int_equal(parse_cpuid_hide("xsave", &mask, &err), 0);
	assert_int_equal(mask, VMM_CPUID_HIDE_XSAVE);
	assert_int_equal(parse_cpuid_hide("pcid,avx512,x2apic,avx,cx16", &mask, &err), 0);
	assert_int_equal(mask, VMM_CPUID_HIDE_PCID | VMM_CPUID_HIDE_AVX512 | VMM_CPUID_HIDE_X2APIC |
				   VMM_CPUID_HIDE_AVX | VMM_CPUID_HIDE_CX16);
	assert_int_equal(parse_cpuid_hide("xsave,sse", &mask, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "'sse'"));
	assert_int_equal(parse_cpuid_hide("", &mask, &err), -EINVAL);
	assert_int_equal(parse_cpuid_hide("xsave,", &mask, &err), -EINVAL);
	assert_int_equal(parse_cpuid_hide("xsav", &mask, &err), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_parse_valid),	       cmocka_unit_test(test_parse_errors),
	    cmocka_unit_test(test_load_copies_kernel), cmocka_unit_test(test_boot_params),
	    cmocka_unit_test(test_page_tables),	       cmocka_unit_test(test_gdt),
	    cmocka_unit_test(test_boot_setup_bzimage), cmocka_unit_test(test_cpuid_hide),
	    cmocka_unit_test(test_parse_cpuid_hide),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
