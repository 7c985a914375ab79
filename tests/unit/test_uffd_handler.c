/* SPDX-License-Identifier: MIT */
/*
 * forkd-uffd's engine (src/uffd/uffd_handler.c) against a real userfaultfd
 * in this process: two registered regions filled on first touch from a
 * memory file with data and a hole, a discarded page served as zeros
 * (UFFD_EVENT_REMOVE), an unmap seen (UFFD_EVENT_UNMAP), the first-touch
 * record replayed as a prefetch, and the bad inputs: an address outside
 * every region, a memory file shorter than the regions, malformed records.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "uffd/uffd_handler.h"

#define PG	   4096
#define FILE_PAGES 16
#define R0_PAGES   10 /* region 0: file pages 0..9, region 1: 10..15 */
#define R1_PAGES   (FILE_PAGES - R0_PAGES)

static char tmpdir[] = "/tmp/forkd-uffd-unit-XXXXXX";
static char mem_path[128], rec_path[128];

/* Page i of the file: bytes i+1, except pages 8..11, a hole. */
static bool is_hole(int page)
{
	return page >= 8 && page < 12;
}

static int setup(void **state)
{
	uint8_t page[PG];
	int fd;

	(void)state;
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(mem_path, sizeof(mem_path), "%s/memory", tmpdir);
	snprintf(rec_path, sizeof(rec_path), "%s/record", tmpdir);
	fd = open(mem_path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	if (fd < 0 || ftruncate(fd, FILE_PAGES * PG) < 0)
		return -1;
	for (int i = 0; i < FILE_PAGES; i++) {
		if (is_hole(i))
			continue;
		memset(page, i + 1, sizeof(page));
		if (pwrite(fd, page, PG, (off_t)i * PG) != PG)
			return -1;
	}
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	char path[160];

	(void)state;
	unlink(mem_path);
	unlink(rec_path);
	snprintf(path, sizeof(path), "%s/short", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/bad-record", tmpdir);
	unlink(path);
	return rmdir(tmpdir);
}

/* The "VMM": two anonymous mappings registered MISSING, as forkd-vmm does for guest RAM. */
struct vmm_side {
	uint8_t *r0, *r1;
	int uffd;
	struct uffd_region regions[2];
};

static void vmm_side_init(struct vmm_side *v)
{
	struct uffdio_api api = {.api = UFFD_API,
				 .features = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP};

	v->uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (v->uffd < 0)
		fail_msg("userfaultfd(UFFD_USER_MODE_ONLY): %s", strerror(errno));
	assert_int_equal(ioctl(v->uffd, UFFDIO_API, &api), 0);
	v->r0 =
	    mmap(NULL, R0_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	v->r1 =
	    mmap(NULL, R1_PAGES * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(v->r0 != MAP_FAILED && v->r1 != MAP_FAILED);
	for (int i = 0; i < 2; i++) {
		uint8_t *base = i ? v->r1 : v->r0;
		uint64_t size = (uint64_t)(i ? R1_PAGES : R0_PAGES) * PG;
		struct uffdio_register reg = {.range = {.start = (uintptr_t)base, .len = size},
					      .mode = UFFDIO_REGISTER_MODE_MISSING};

		assert_int_equal(ioctl(v->uffd, UFFDIO_REGISTER, &reg), 0);
		v->regions[i] = (struct uffd_region){.base_host_virt_addr = (uintptr_t)base,
						     .size = size,
						     .offset = i ? R0_PAGES * PG : 0,
						     .page_size = PG};
	}
}

static uint8_t *page_addr(struct vmm_side *v, int file_page)
{
	return file_page < R0_PAGES ? v->r0 + file_page * PG : v->r1 + (file_page - R0_PAGES) * PG;
}

static void expect_page(struct vmm_side *v, int file_page, int byte)
{
	const uint8_t *p = page_addr(v, file_page);

	for (int k = 0; k < PG; k += 512)
		if (p[k] != byte)
			fail_msg("file page %d byte %d: 0x%x, expected 0x%x", file_page, k, p[k],
				 byte);
}

struct run_args {
	struct uffd_handler *h;
	int conn;
	int ret;
	struct fk_err err;
};

static void *run_thread(void *arg)
{
	struct run_args *a = arg;

	a->ret = uffd_handler_run(a->h, a->conn, &a->err);
	return NULL;
}

static void test_serve_remove_unmap_record(void **state)
{
	struct vmm_side v;
	struct uffd_handler h;
	struct fk_err err = {0};
	struct run_args a = {0};
	pthread_t t;
	int sv[2];
	uint8_t rec[8 * FILE_PAGES];
	FILE *f;

	(void)state;
	vmm_side_init(&v);
	assert_int_equal(uffd_handler_open(&h, v.uffd, v.regions, 2, mem_path, &err), 0);
	h.record = fopen(rec_path, "wb");
	assert_non_null(h.record);
	/* An address no region holds: a clear error, not a hang or a stray copy. */
	assert_int_equal(uffd_handler_serve(&h, 0x1000, &err), -EFAULT);
	assert_non_null(strstr(err.msg, "fault at 0x1000: outside every region"));

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	a = (struct run_args){.h = &h, .conn = sv[1]};
	assert_int_equal(pthread_create(&t, NULL, run_thread, &a), 0);
	/* Touch in reverse file order: the record keeps that order. */
	for (int i = FILE_PAGES - 1; i >= 0; i--)
		expect_page(&v, i, is_hole(i) ? 0 : i + 1);
	/* Discarded by the "guest": served again as zeros, not the file's bytes. */
	assert_int_equal(madvise(page_addr(&v, 2), PG, MADV_DONTNEED), 0);
	expect_page(&v, 2, 0);
	/* Unmapped: the handler is told (munmap waits until it has read the event). */
	assert_int_equal(munmap(v.r1, R1_PAGES * PG), 0);
	close(sv[0]); /* the "VMM" exits */
	pthread_join(t, NULL);
	if (a.ret != 0)
		fail_msg("handler: %s", a.err.msg);
	assert_int_equal(h.stats.faults, FILE_PAGES + 1);
	assert_int_equal(h.stats.copied, FILE_PAGES - 4);
	assert_int_equal(h.stats.zeroed, 4 + 1);
	assert_int_equal(h.stats.removed, 1);
	assert_int_equal(h.stats.unmapped, R1_PAGES);
	assert_int_equal(h.stats.recorded, FILE_PAGES);
	assert_int_equal(fclose(h.record), 0);
	h.record = NULL;
	f = fopen(rec_path, "rb");
	assert_non_null(f);
	assert_int_equal(fread(rec, 1, sizeof(rec), f), sizeof(rec));
	fclose(f);
	/* First entry: file page 15's offset, little-endian. */
	assert_int_equal(rec[0] | rec[1] << 8 | rec[2] << 16, 15 * PG);
	assert_int_equal(rec[8 * 15] | rec[8 * 15 + 1] << 8, 0);
	uffd_handler_close(&h);
	munmap(v.r0, R0_PAGES * PG);
	close(sv[1]);
}

static void test_prefetch_replays_the_record(void **state)
{
	struct vmm_side v;
	struct uffd_handler h;
	struct fk_err err = {0};
	struct run_args a;
	pthread_t t;
	int sv[2];

	(void)state;
	vmm_side_init(&v);
	assert_int_equal(uffd_handler_open(&h, v.uffd, v.regions, 2, mem_path, &err), 0);
	assert_int_equal(uffd_handler_load_prefetch(&h, rec_path, &err), 0);
	assert_int_equal(h.nr_prefetch, FILE_PAGES);
	/* All at once before the "guest" runs: then it never faults. */
	assert_int_equal(uffd_handler_prefetch_step(&h, 1000), 0);
	assert_int_equal(h.stats.prefetched, FILE_PAGES);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	a = (struct run_args){.h = &h, .conn = sv[1]};
	assert_int_equal(pthread_create(&t, NULL, run_thread, &a), 0);
	for (int i = 0; i < FILE_PAGES; i++)
		expect_page(&v, i, is_hole(i) ? 0 : i + 1);
	munmap(v.r0, R0_PAGES * PG);
	munmap(v.r1, R1_PAGES * PG);
	close(sv[0]);
	pthread_join(t, NULL);
	assert_int_equal(a.ret, 0);
	assert_int_equal(h.stats.faults, 0);
	uffd_handler_close(&h);
	close(sv[1]);
}

/* Fault-around: one fault fills its aligned block's untouched pages of the same kind. */
static void test_fault_around(void **state)
{
	struct vmm_side v;
	struct uffd_handler h;
	struct fk_err err = {0};
	struct run_args a;
	pthread_t t;
	int sv[2];

	(void)state;
	vmm_side_init(&v);
	assert_int_equal(uffd_handler_open(&h, v.uffd, v.regions, 2, mem_path, &err), 0);
	h.fault_around = 4;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	a = (struct run_args){.h = &h, .conn = sv[1]};
	assert_int_equal(pthread_create(&t, NULL, run_thread, &a), 0);
	expect_page(&v, 1, 2); /* fills file pages 0..3 */
	expect_page(&v, 0, 1);
	expect_page(&v, 3, 4);
	expect_page(&v, 9, 0); /* a hole: block 8..11, cut at region 0's end (page 10) */
	expect_page(&v, 8, 0);
	expect_page(&v, 10, 0); /* region 1 starts its own block: 10..11, holes */
	expect_page(&v, 11, 0);
	expect_page(&v, 12, 13); /* data: 12..15 */
	expect_page(&v, 15, 16);
	munmap(v.r0, R0_PAGES * PG);
	munmap(v.r1, R1_PAGES * PG);
	close(sv[0]);
	pthread_join(t, NULL);
	assert_int_equal(a.ret, 0);
	assert_int_equal(h.stats.faults, 4);
	assert_int_equal(h.stats.copied, 2);
	assert_int_equal(h.stats.zeroed, 2);
	/* 0,2,3 around page 1; 8 around 9; 11 around 10; 13..15 around 12. */
	assert_int_equal(h.stats.around, 8);
	uffd_handler_close(&h);
	close(sv[1]);
}

static void write_file(const char *path, const void *bytes, size_t len)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(bytes, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static void test_bad_inputs(void **state)
{
	struct vmm_side v;
	struct uffd_handler h;
	struct fk_err err = {0};
	char short_path[160], bad_rec[160];
	uint8_t page[PG] = {1};
	uint8_t past_end[8] = {0, 0, 0x10, 0, 0, 0, 0, 0}; /* 1 MiB: past the 64 KiB file */
	uint8_t unaligned[8] = {1, 0, 0, 0, 0, 0, 0, 0};

	(void)state;
	vmm_side_init(&v);
	/* A memory file shorter than the regions the VMM registered. */
	snprintf(short_path, sizeof(short_path), "%s/short", tmpdir);
	write_file(short_path, page, sizeof(page));
	assert_int_equal(uffd_handler_open(&h, dup(v.uffd), v.regions, 2, short_path, &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "ends past the memory file's 4096 bytes"));
	assert_non_null(strstr(err.msg, short_path));
	uffd_handler_close(&h);
	/* Pages larger than 4 KiB are not what forkd-uffd serves. */
	v.regions[0].page_size = 2 << 20;
	assert_int_equal(uffd_handler_open(&h, dup(v.uffd), v.regions, 2, mem_path, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "serves 4096-byte pages"));
	uffd_handler_close(&h);
	v.regions[0].page_size = PG;

	assert_int_equal(uffd_handler_open(&h, v.uffd, v.regions, 2, mem_path, &err), 0);
	snprintf(bad_rec, sizeof(bad_rec), "%s/bad-record", tmpdir);
	write_file(bad_rec, page, 7);
	assert_int_equal(uffd_handler_load_prefetch(&h, bad_rec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "7 bytes, not a whole number of 8-byte page offsets"));
	write_file(bad_rec, past_end, sizeof(past_end));
	assert_int_equal(uffd_handler_load_prefetch(&h, bad_rec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "entry 0, offset 1048576"));
	write_file(bad_rec, unaligned, sizeof(unaligned));
	assert_int_equal(uffd_handler_load_prefetch(&h, bad_rec, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "page-aligned"));
	assert_int_equal(uffd_handler_load_prefetch(&h, "/nonexistent/record", &err), -ENOENT);
	assert_non_null(strstr(err.msg, "/nonexistent/record"));
	uffd_handler_close(&h);
	munmap(v.r0, R0_PAGES * PG);
	munmap(v.r1, R1_PAGES * PG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_serve_remove_unmap_record),
	    cmocka_unit_test(test_prefetch_replays_the_record),
	    cmocka_unit_test(test_fault_around),
	    cmocka_unit_test(test_bad_inputs),
	};
	return cmocka_run_group_tests_name("uffd handler", tests, setup, teardown);
}
