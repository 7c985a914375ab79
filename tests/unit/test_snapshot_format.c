/* SPDX-License-Identifier: MIT */
/* The snapshot directory format: round trip, every kind of corruption, atomic commit, CPU check. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "state/snapshot_format.h"

#define PAGE SNAP_PAGE_SIZE

struct fixture {
	char base[64];
	char snap[128];
	char state[160];
	char memory[160];
	uint8_t *ram_lo; /* region 0: 16 pages at GPA 0 */
	uint8_t *ram_hi; /* region 1: 8 pages at GPA 4 GiB */
	struct snap_mem_region regions[2];
	struct snap_memory_source mem;
};

#define LO_PAGES 16
#define HI_PAGES 8

/* Which pages hold data; the rest are zero and must become holes. */
static const int lo_nonzero[LO_PAGES] = {1, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1};
static const int hi_nonzero[HI_PAGES] = {0, 0, 1, 0, 0, 0, 0, 1};

static const uint8_t vcpu0[] = "registers of vcpu zero";
static const uint8_t vcpu1[] = "vcpu one: a different, longer payload of 57 bytes......";
static const uint8_t irqchip[3] = {0xaa, 0xbb, 0xcc};
static const uint8_t uart[] = "uart regs";

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void fill_page(uint8_t *page, unsigned seed)
{
	for (unsigned i = 0; i < PAGE; i++)
		page[i] = (uint8_t)(seed * 31 + i * 7 + 1);
	/* A page that is zero except its last byte must still count as data. */
	if (seed % 3 == 0) {
		memset(page, 0, PAGE);
		page[PAGE - 1] = (uint8_t)(seed | 1);
	}
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->base, "/tmp/forkd-snapfmt-XXXXXX");
	assert_non_null(mkdtemp(f->base));
	snprintf(f->snap, sizeof(f->snap), "%s/snap", f->base);
	snprintf(f->state, sizeof(f->state), "%s/state", f->snap);
	snprintf(f->memory, sizeof(f->memory), "%s/memory", f->snap);
	f->ram_lo =
	    mmap(NULL, LO_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	f->ram_hi =
	    mmap(NULL, HI_PAGES * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(f->ram_lo != MAP_FAILED && f->ram_hi != MAP_FAILED);
	for (unsigned i = 0; i < LO_PAGES; i++)
		if (lo_nonzero[i])
			fill_page(f->ram_lo + i * PAGE, i);
	for (unsigned i = 0; i < HI_PAGES; i++)
		if (hi_nonzero[i])
			fill_page(f->ram_hi + i * PAGE, 100 + i);
	f->regions[0] =
	    (struct snap_mem_region){.gpa = 0, .size = LO_PAGES * PAGE, .host = f->ram_lo};
	f->regions[1] =
	    (struct snap_mem_region){.gpa = 1ull << 32, .size = HI_PAGES * PAGE, .host = f->ram_hi};
	f->mem = (struct snap_memory_source){.regions = f->regions, .nr_regions = 2};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	nftw(f->base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	munmap(f->ram_lo, LO_PAGES * PAGE);
	munmap(f->ram_hi, HI_PAGES * PAGE);
	free(f);
	return 0;
}

static void sample_cpu(struct snap_cpu_identity *id, struct snap_cpuid_entry entries[3])
{
	entries[0] = (struct snap_cpuid_entry){.function = 0, .eax = 0xd};
	memcpy(&entries[0].ebx, "Genu", 4);
	memcpy(&entries[0].edx, "ineI", 4);
	memcpy(&entries[0].ecx, "ntel", 4);
	entries[1] = (struct snap_cpuid_entry){.function = 1, .ecx = 0x9e982203, .edx = 0x178bfbff};
	entries[2] = (struct snap_cpuid_entry){
	    .function = 7, .index = 0, .flags = 1, .ebx = 0x029c67af, .edx = 0xbc000400};
	memset(id, 0, sizeof(*id));
	snap_cpu_features_from_cpuid(entries, 3, &id->host);
	id->nr_entries = 3;
	id->entries = entries;
}

/* Builds the standard snapshot: every section type, two vCPUs, two memory regions. */
static void write_sample(struct fixture *f)
{
	struct snap_writer w;
	struct fk_err err = {0};
	struct snap_cpuid_entry entries[3];
	struct snap_cpu_identity id;
	uint8_t *cpu_blob;
	size_t cpu_len;

	sample_cpu(&id, entries);
	assert_int_equal(snap_cpu_identity_encode(&id, &cpu_blob, &cpu_len, &err), 0);
	snap_writer_init(&w, 2);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_CPU_IDENTITY, 0, cpu_blob, cpu_len, &err), 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 0, vcpu0, sizeof(vcpu0), &err), 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 1, vcpu1, sizeof(vcpu1), &err), 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_IRQCHIP, 0, irqchip, sizeof(irqchip), &err),
			 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_PIT, 0, NULL, 0, &err), 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_CLOCK, 0, "clk!", 4, &err), 0);
	assert_int_equal(snap_writer_add_device(&w, 0, 0x4001, uart, sizeof(uart), &err), 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_OPAQUE, 9, "x", 1, &err), 0);
	free(cpu_blob);
	if (snap_writer_commit(&w, f->snap, &f->mem, &err) != 0)
		fail_msg("commit: %s", err.msg);
	snap_writer_free(&w);
}

static uint8_t *slurp(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *buf;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	*len = (size_t)st.st_size;
	buf = malloc(*len + 1);
	assert_non_null(buf);
	assert_int_equal(pread(fd, buf, *len, 0), (ssize_t)*len);
	close(fd);
	return buf;
}

static void spit(const char *path, const uint8_t *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_TRUNC);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the file checksum so a structural corruption gets past the checksum check. */
static void reseal(uint8_t *buf, size_t len)
{
	put64(buf + SNAP_HDR_OFF_CHECKSUM,
	      XXH3_64bits(buf + SNAP_HDR_OFF_VERSION, len - SNAP_HDR_OFF_VERSION));
}

/* The table entry of (type, instance) in a raw state file. */
static uint8_t *entry_of(uint8_t *buf, uint32_t type, uint32_t instance)
{
	uint32_t n = le32(buf + SNAP_HDR_OFF_NR_SECTIONS);

	for (uint32_t i = 0; i < n; i++) {
		uint8_t *e = buf + SNAP_HDR_LEN + i * SNAP_ENT_LEN;

		if (le32(e + SNAP_ENT_OFF_TYPE) == type &&
		    le32(e + SNAP_ENT_OFF_INSTANCE) == instance)
			return e;
	}
	fail_msg("no section %u %u", type, instance);
	return NULL;
}

/* Opening must fail with `code`, and the message must name `path` and contain `reason`. */
static void expect_open_fails(struct fixture *f, int code, const char *path, const char *reason)
{
	struct snap_reader *r = (void *)1;
	struct fk_err err = {0};
	int rc = snap_reader_open(f->snap, &r, &err);

	if (rc == 0)
		fail_msg("open succeeded; expected \"%s\"", reason);
	assert_null(r);
	assert_int_equal(rc, -code);
	if (!strstr(err.msg, path) || !strstr(err.msg, reason))
		fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err.msg, path, reason);
}

static void expect_section(struct snap_reader *r, uint32_t type, uint32_t instance,
			   const void *want, size_t want_len)
{
	const void *data;
	size_t len;

	assert_int_equal(snap_reader_find(r, type, instance, &data, &len), 0);
	assert_int_equal(len, want_len);
	if (want_len)
		assert_memory_equal(data, want, want_len);
}

static void test_round_trip(void **state)
{
	struct fixture *f = *state;
	struct snap_reader *r;
	struct fk_err err = {0};
	const struct snap_vm_info *vm;
	const void *data;
	size_t len;
	uint32_t dev_type;
	struct snap_cpu_identity id;
	struct snap_cpuid_entry entries[3];
	struct snap_cpu_identity want;
	int fd;

	write_sample(f);
	if (snap_reader_open(f->snap, &r, &err) != 0)
		fail_msg("open: %s", err.msg);

	expect_section(r, SNAP_SEC_VCPU, 0, vcpu0, sizeof(vcpu0));
	expect_section(r, SNAP_SEC_VCPU, 1, vcpu1, sizeof(vcpu1));
	expect_section(r, SNAP_SEC_IRQCHIP, 0, irqchip, sizeof(irqchip));
	expect_section(r, SNAP_SEC_PIT, 0, NULL, 0);
	expect_section(r, SNAP_SEC_CLOCK, 0, "clk!", 4);
	expect_section(r, SNAP_SEC_OPAQUE, 9, "x", 1);
	assert_int_equal(snap_reader_find(r, SNAP_SEC_VCPU, 2, &data, &len), -ENOENT);
	assert_int_equal(snap_reader_find(r, SNAP_SEC_OPAQUE, 0, &data, &len), -ENOENT);
	assert_int_equal(snap_reader_find_device(r, 0, &dev_type, &data, &len), 0);
	assert_int_equal(dev_type, 0x4001);
	assert_int_equal(len, sizeof(uart));
	assert_memory_equal(data, uart, sizeof(uart));
	assert_int_equal(snap_reader_nr_sections(r), 10); /* 8 added + VM_INFO + MEM_HASHES */
	for (uint32_t i = 0; i < snap_reader_nr_sections(r); i++) {
		uint32_t type, instance;

		snap_reader_section(r, i, &type, &instance, &data, &len);
		assert_int_equal((uintptr_t)data % SNAP_ALIGN, 0);
	}

	assert_int_equal(snap_reader_find(r, SNAP_SEC_CPU_IDENTITY, 0, &data, &len), 0);
	assert_int_equal(snap_cpu_identity_decode(data, len, &id, &err), 0);
	sample_cpu(&want, entries);
	assert_string_equal(id.host.vendor, "GenuineIntel");
	assert_memory_equal(&id.host, &want.host, sizeof(want.host));
	assert_int_equal(id.nr_entries, 3);
	assert_memory_equal(id.entries, entries, sizeof(entries));
	snap_cpu_identity_free(&id);

	vm = snap_reader_vm_info(r);
	assert_int_equal(vm->nr_vcpus, 2);
	assert_int_equal(vm->nr_regions, 2);
	assert_int_equal(vm->mem_size, (LO_PAGES + HI_PAGES) * PAGE);
	assert_int_equal(vm->memory_file_size, vm->mem_size);
	assert_string_equal(vm->memory_file_name, "memory");
	assert_int_equal(vm->regions[0].gpa, 0);
	assert_int_equal(vm->regions[0].size, LO_PAGES * PAGE);
	assert_int_equal(vm->regions[0].file_offset, 0);
	assert_int_equal(vm->regions[1].gpa, 1ull << 32);
	assert_int_equal(vm->regions[1].file_offset, LO_PAGES * PAGE);

	/* Content, page by page, and zero pages are holes. */
	fd = snap_reader_memory_fd(r);
	for (unsigned i = 0; i < LO_PAGES + HI_PAGES; i++) {
		const uint8_t *src =
		    i < LO_PAGES ? f->ram_lo + i * PAGE : f->ram_hi + (i - LO_PAGES) * PAGE;
		int nonzero = i < LO_PAGES ? lo_nonzero[i] : hi_nonzero[i - LO_PAGES];
		uint8_t page[PAGE];
		off_t off = (off_t)i * PAGE;

		assert_int_equal(pread(fd, page, PAGE, off), PAGE);
		assert_memory_equal(page, src, PAGE);
		if (nonzero)
			assert_int_equal(lseek(fd, off, SEEK_DATA), off);
		else
			assert_int_equal(lseek(fd, off, SEEK_HOLE), off);
	}
	snap_reader_close(r);
}

static void test_wrong_magic(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf;

	write_sample(f);
	buf = slurp(f->state, &len);
	buf[3] ^= 0x20;
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "bad magic");
	free(buf);
}

static void test_unknown_version(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf;

	write_sample(f);
	buf = slurp(f->state, &len);
	buf[SNAP_HDR_OFF_VERSION] = 7;
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, ENOTSUP, f->state, "format version 7 is not supported");
	expect_open_fails(f, ENOTSUP, f->state, "reads versions 1 and 2");
	free(buf);
}

/* One flipped bit anywhere the checksum covers, outside section payloads. */
static void test_flipped_header_and_table_bytes(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *orig;
	const size_t offsets[] = {
	    SNAP_HDR_OFF_CHECKSUM + 2,
	    SNAP_HDR_OFF_FLAGS,
	    SNAP_HDR_OFF_NR_SECTIONS,
	    SNAP_HDR_OFF_RESERVED + 5,
	    SNAP_HDR_LEN + SNAP_ENT_OFF_TYPE,
	    SNAP_HDR_LEN + SNAP_ENT_LEN + SNAP_ENT_OFF_OFFSET,
	    SNAP_HDR_LEN + 2 * SNAP_ENT_LEN + SNAP_ENT_OFF_LENGTH + 1,
	};

	write_sample(f);
	orig = slurp(f->state, &len);
	for (size_t i = 0; i < sizeof(offsets) / sizeof(offsets[0]); i++) {
		uint8_t *buf = malloc(len);

		memcpy(buf, orig, len);
		buf[offsets[i]] ^= 0x01;
		spit(f->state, buf, len);
		expect_open_fails(f, EBADMSG, f->state, "checksum mismatch");
		free(buf);
	}
	free(orig);
}

/* A flipped payload byte names the section, even though the file checksum fails too. */
static void test_flipped_payload_names_section(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf;
	uint8_t *e;

	write_sample(f);
	buf = slurp(f->state, &len);
	e = entry_of(buf, SNAP_SEC_VCPU, 1);
	buf[le64(e + SNAP_ENT_OFF_OFFSET) + 10] ^= 0x80;
	spit(f->state, buf, len);
	expect_open_fails(f, EBADMSG, f->state, "checksum mismatch in section VCPU 1");

	/* Same with the file checksum made valid: the section checksum still catches it. */
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EBADMSG, f->state, "checksum mismatch in section VCPU 1");

	/* A damaged stored section checksum is caught the same way. */
	buf[le64(e + SNAP_ENT_OFF_OFFSET) + 10] ^= 0x80;
	e = entry_of(buf, SNAP_SEC_DEVICE, 0);
	e[SNAP_ENT_OFF_CHECKSUM] ^= 0x04;
	spit(f->state, buf, len);
	expect_open_fails(f, EBADMSG, f->state, "checksum mismatch in section DEVICE 0");
	free(buf);
}

static void test_truncated_state(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf;

	write_sample(f);
	buf = slurp(f->state, &len);
	const size_t cuts[] = {
	    0,	     4,	      8,      40, SNAP_HDR_LEN - 1, SNAP_HDR_LEN, SNAP_HDR_LEN + 40,
	    len / 2, len - 8, len - 1};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
		spit(f->state, buf, cuts[i]);
		expect_open_fails(f, EINVAL, f->state, "truncated");
	}
	/* Appending is caught as well. */
	buf = realloc(buf, len + 8);
	memset(buf + len, 0, 8);
	spit(f->state, buf, len + 8);
	expect_open_fails(f, EINVAL, f->state, "trailing data");
	free(buf);
}

static void test_memory_file_size(void **state)
{
	struct fixture *f = *state;

	write_sample(f);
	assert_int_equal(truncate(f->memory, (LO_PAGES + HI_PAGES - 1) * PAGE), 0);
	expect_open_fails(f, EINVAL, f->memory, "truncated");
	assert_int_equal(truncate(f->memory, 0), 0);
	expect_open_fails(f, EINVAL, f->memory, "truncated");
	assert_int_equal(truncate(f->memory, (LO_PAGES + HI_PAGES) * PAGE + 1), 0);
	expect_open_fails(f, EINVAL, f->memory, "too long");
	assert_int_equal(unlink(f->memory), 0);
	expect_open_fails(f, ENOENT, f->memory, "open");
}

static void test_section_out_of_bounds(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf, *e;

	write_sample(f);
	buf = slurp(f->state, &len);
	e = entry_of(buf, SNAP_SEC_CLOCK, 0);
	put64(e + SNAP_ENT_OFF_LENGTH, len); /* runs past the end */
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "section CLOCK 0");
	expect_open_fails(f, EINVAL, f->state, "outside the payload area");

	put64(e + SNAP_ENT_OFF_LENGTH, 4);
	put64(e + SNAP_ENT_OFF_OFFSET, UINT64_MAX - 7); /* offset + length wraps */
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "outside the payload area");

	put64(e + SNAP_ENT_OFF_OFFSET, SNAP_HDR_LEN); /* inside the table */
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "outside the payload area");
	free(buf);
}

static void test_misaligned_section(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf, *e;

	write_sample(f);
	buf = slurp(f->state, &len);
	e = entry_of(buf, SNAP_SEC_OPAQUE, 9);
	put64(e + SNAP_ENT_OFF_OFFSET, le64(e + SNAP_ENT_OFF_OFFSET) + 1);
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "misaligned");
	free(buf);
}

static void test_overlapping_sections(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf, *v0, *v1;

	write_sample(f);
	buf = slurp(f->state, &len);
	v0 = entry_of(buf, SNAP_SEC_VCPU, 0);
	v1 = entry_of(buf, SNAP_SEC_VCPU, 1);
	/* VCPU 1 now starts 8 bytes into VCPU 0; its checksum is fixed to match. */
	put64(v1 + SNAP_ENT_OFF_OFFSET, le64(v0 + SNAP_ENT_OFF_OFFSET) + 8);
	put64(v1 + SNAP_ENT_OFF_CHECKSUM,
	      XXH3_64bits(buf + le64(v1 + SNAP_ENT_OFF_OFFSET), le64(v1 + SNAP_ENT_OFF_LENGTH)));
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "overlap");
	free(buf);
}

static void test_duplicate_section(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf;

	write_sample(f);
	buf = slurp(f->state, &len);
	entry_of(buf, SNAP_SEC_VCPU, 1)[SNAP_ENT_OFF_INSTANCE] = 0;
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "section VCPU 0 appears twice");
	free(buf);
}

static void test_vcpu_instance_beyond_vm(void **state)
{
	struct fixture *f = *state;
	size_t len;
	uint8_t *buf;

	write_sample(f);
	buf = slurp(f->state, &len);
	entry_of(buf, SNAP_SEC_VCPU, 1)[SNAP_ENT_OFF_INSTANCE] = 5;
	reseal(buf, len);
	spit(f->state, buf, len);
	expect_open_fails(f, EINVAL, f->state, "section VCPU 5 but VM has 2");
	free(buf);
}

static void test_missing_dir_and_state(void **state)
{
	struct fixture *f = *state;

	expect_open_fails(f, ENOENT, f->snap, "No such file");
	write_sample(f);
	assert_int_equal(unlink(f->state), 0);
	expect_open_fails(f, ENOENT, f->state, "open");
}

static int count_entries(const char *dir, const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

static void test_commit_refuses_existing(void **state)
{
	struct fixture *f = *state;
	struct snap_writer w;
	struct fk_err err = {0};
	char slash[200];

	/* An existing empty directory: a plain rename(2) would replace it silently. */
	assert_int_equal(mkdir(f->snap, 0700), 0);
	snap_writer_init(&w, 1);
	assert_int_equal(snap_writer_commit(&w, f->snap, &f->mem, &err), -EEXIST);
	assert_non_null(strstr(err.msg, f->snap));
	assert_non_null(strstr(err.msg, "already exists"));
	assert_int_equal(count_entries(f->snap, "state"), 0);
	assert_int_equal(rmdir(f->snap), 0);

	/* An existing snapshot, also named with a trailing slash. */
	write_sample(f);
	snprintf(slash, sizeof(slash), "%s/", f->snap);
	assert_int_equal(snap_writer_commit(&w, slash, &f->mem, &err), -EEXIST);
	assert_int_equal(count_entries(f->base, "snap.tmp-"), 0);
	snap_writer_free(&w);
}

/* A write that fails midway (file size limit) must leave neither the target nor a temp dir. */
static void test_commit_failure_cleans_up(void **state)
{
	struct fixture *f = *state;
	struct snap_writer w;
	struct fk_err err = {0};
	struct rlimit old, small;
	void (*old_handler)(int);

	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = old;
	small.rlim_cur = 2 * PAGE;
	old_handler = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	snap_writer_init(&w, 1);
	int rc = snap_writer_commit(&w, f->snap, &f->mem, &err);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, old_handler);

	assert_int_equal(rc, -EFBIG);
	assert_non_null(strstr(err.msg, "memory file"));
	assert_int_equal(access(f->snap, F_OK), -1);
	assert_int_equal(count_entries(f->base, "snap"), 0);
	snap_writer_free(&w);
}

static void test_writer_rejects_bad_input(void **state)
{
	struct fixture *f = *state;
	struct snap_writer w;
	struct fk_err err = {0};
	struct snap_mem_region bad = {.gpa = 0x800, .size = PAGE, .host = f->ram_lo};
	struct snap_mem_region overlap[2] = {
	    {.gpa = 0, .size = 2 * PAGE, .host = f->ram_lo},
	    {.gpa = PAGE, .size = PAGE, .host = f->ram_hi},
	};
	struct snap_memory_source mem = {.regions = &bad, .nr_regions = 1};

	snap_writer_init(&w, 2);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VM_INFO, 0, "x", 1, &err), -EINVAL);
	assert_int_equal(snap_writer_add(&w, 0, 0, "x", 1, &err), -EINVAL);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_MAX + 1, 0, "x", 1, &err), -EINVAL);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 2, "x", 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "VCPU 2"));
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 1, "x", 1, &err), 0);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 1, "y", 1, &err), -EEXIST);
	assert_int_equal(snap_writer_commit(&w, f->snap, &mem, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "aligned"));
	mem.regions = overlap;
	mem.nr_regions = 2;
	assert_int_equal(snap_writer_commit(&w, f->snap, &mem, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "overlap"));
	assert_int_equal(access(f->snap, F_OK), -1);
	snap_writer_free(&w);
}

/* ---- CPU compatibility ---- */

static struct snap_cpu_features base_features(void)
{
	struct snap_cpuid_entry entries[3];
	struct snap_cpu_identity id;

	sample_cpu(&id, entries);
	id.host.xcr0_lo = 0x7;
	id.host.xsave_max_size = 832;
	id.host.ext1_edx = 1u << 29;
	return id.host;
}

static void test_cpu_superset_ok(void **state)
{
	struct snap_cpu_features saved = base_features(), now = saved;
	struct fk_err err = {0};

	(void)state;
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), 0);
	now.leaf7_ebx |= 1u << 16; /* avx512f, new */
	now.xcr0_lo |= 0xe0;
	now.xsave_max_size = 2696;
	now.ext1_ecx |= 1;
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), 0);
	/* OSXSAVE reflects the host kernel's CR4, not the CPU: not a feature to compare. */
	saved.leaf1_ecx |= 1u << 27;
	now.leaf1_ecx &= ~(1u << 27);
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), 0);
}

static void test_cpu_missing_feature_refused(void **state)
{
	struct snap_cpu_features saved = base_features(), now;
	struct fk_err err = {0};

	(void)state;
	assert_true(saved.leaf7_ebx & (1u << 5));
	now = saved;
	now.leaf7_ebx &= ~(1u << 5);
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "avx2"));
	assert_non_null(strstr(err.msg, "CPUID.(07H,0):EBX bit 5"));

	/* An unnamed bit is reported by location; the first missing one (lowest word, bit) wins. */
	now = saved;
	now.leaf1_edx &= ~(1u << 26);
	now.leaf7_edx &= ~(1u << 10);
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "sse2"));
	now = saved;
	saved.ext1_ecx |= 1u << 2;
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "CPUID.80000001H:ECX bit 2"));

	now = saved = base_features();
	now.xcr0_lo &= ~0x4u; /* no AVX state */
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "XCR0"));
	now = saved;
	now.xsave_max_size = 576;
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "XSAVE area is 576 bytes"));
}

static void test_cpu_vendor_mismatch_refused(void **state)
{
	struct snap_cpu_features saved = base_features(), now = saved;
	struct fk_err err = {0};

	(void)state;
	memcpy(now.vendor, "AuthenticAMD", 13);
	now.leaf7_ebx = ~0u; /* more features do not help */
	assert_int_equal(snap_cpu_check_compat(&saved, &now, &err), -ENOTSUP);
	assert_non_null(strstr(err.msg, "GenuineIntel"));
	assert_non_null(strstr(err.msg, "AuthenticAMD"));
}

static void test_cpu_identity_decode_rejects_bad_length(void **state)
{
	struct snap_cpuid_entry entries[3];
	struct snap_cpu_identity id, out;
	struct fk_err err = {0};
	uint8_t *blob;
	size_t len;

	(void)state;
	sample_cpu(&id, entries);
	assert_int_equal(snap_cpu_identity_encode(&id, &blob, &len, &err), 0);
	assert_int_equal(snap_cpu_identity_decode(blob, len - 1, &out, &err), -EINVAL);
	assert_int_equal(snap_cpu_identity_decode(blob, len + 0, &out, &err), 0);
	snap_cpu_identity_free(&out);
	assert_int_equal(snap_cpu_identity_decode(blob, 10, &out, &err), -EINVAL);
	blob[12] = 200; /* claims more entries than present */
	assert_int_equal(snap_cpu_identity_decode(blob, len, &out, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "200 CPUID entries"));
	free(blob);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_wrong_magic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_unknown_version, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_header_and_table_bytes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_payload_names_section, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_memory_file_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_section_out_of_bounds, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_misaligned_section, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_overlapping_sections, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_duplicate_section, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_vcpu_instance_beyond_vm, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_missing_dir_and_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_refuses_existing, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_commit_failure_cleans_up, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writer_rejects_bad_input, setup, teardown),
	    cmocka_unit_test(test_cpu_superset_ok),
	    cmocka_unit_test(test_cpu_missing_feature_refused),
	    cmocka_unit_test(test_cpu_vendor_mismatch_refused),
	    cmocka_unit_test(test_cpu_identity_decode_rejects_bad_length),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
