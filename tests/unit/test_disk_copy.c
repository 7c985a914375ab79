/* SPDX-License-Identifier: MIT */
/*
 * The background point-in-time disk copy: the copy holds the image as it was
 * when the copy was created, however the writer races the copy thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "devices/disk_copy.h"

struct fx {
	char dir[64];
	char src[96], dst[96];
	int src_fd;
};

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/forkd-disk-copy-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->src, sizeof(f->src), "%s/src.img", f->dir);
	snprintf(f->dst, sizeof(f->dst), "%s/dst.img", f->dir);
	f->src_fd = open(f->src, O_RDWR | O_CREAT | O_TRUNC, 0600);
	*state = f;
	return f->src_fd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;

	close(f->src_fd);
	unlink(f->src);
	unlink(f->dst);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void fill_pattern(uint8_t *p, size_t n, uint32_t seed)
{
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		p[i] = (uint8_t)(seed >> 16);
	}
}

static void write_all(int fd, const void *p, size_t n, off_t off)
{
	assert_int_equal(pwrite(fd, p, n, off), (ssize_t)n);
}

static void assert_file_equals(const char *path, const uint8_t *want, size_t n)
{
	uint8_t *got = malloc(n + 1);
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, got, n + 1, 0), (ssize_t)n); /* and no longer */
	assert_memory_equal(got, want, n);
	close(fd);
	free(got);
}

static int open_dst(const struct fx *f)
{
	int fd = open(f->dst, O_WRONLY | O_CREAT | O_EXCL, 0600);

	assert_true(fd >= 0);
	return fd;
}

/* Writes before the thread ever ran: each touched chunk is saved first. */
static void test_writes_before_start_keep_the_old_contents(void **state)
{
	struct fx *f = *state;
	size_t size = 4 * DISK_COPY_CHUNK + 100; /* a short last chunk */
	uint8_t *orig = malloc(size), *fresh = malloc(size);
	struct disk_copy *c;
	struct fk_err err = {0};
	uint64_t us = 0;

	fill_pattern(orig, size, 1);
	fill_pattern(fresh, size, 2);
	write_all(f->src_fd, orig, size, 0);
	assert_int_equal(disk_copy_create(&c, "src.img", f->src_fd, open_dst(f), size, &err), 0);
	/* Straddling chunks 0 and 1, then the short tail. */
	disk_copy_before_write(c, DISK_COPY_CHUNK - 512, 1024);
	write_all(f->src_fd, fresh, 1024, DISK_COPY_CHUNK - 512);
	disk_copy_before_write(c, size - 50, 50);
	write_all(f->src_fd, fresh, 50, (off_t)(size - 50));
	assert_false(disk_copy_finished(c));
	assert_int_equal(disk_copy_start(c, &err), 0);
	assert_int_equal(disk_copy_wait(c, &us, &err), 0);
	assert_true(disk_copy_finished(c));
	/* Writes after the copy finished do not reach it. */
	disk_copy_before_write(c, 0, size);
	write_all(f->src_fd, fresh, size, 0);
	disk_copy_free(c);
	assert_file_equals(f->dst, orig, size);
	free(orig);
	free(fresh);
}

/* A writer racing the copy thread over the whole image. */
static void test_concurrent_writer(void **state)
{
	struct fx *f = *state;
	size_t size = 64 * DISK_COPY_CHUNK;
	uint8_t *orig = malloc(size), block[4096];
	struct disk_copy *c;
	struct fk_err err = {0};
	uint32_t seed = 7;

	fill_pattern(orig, size, 3);
	write_all(f->src_fd, orig, size, 0);
	assert_int_equal(disk_copy_create(&c, "src.img", f->src_fd, open_dst(f), size, &err), 0);
	assert_int_equal(disk_copy_start(c, &err), 0);
	for (int i = 0; i < 2000; i++) {
		uint64_t off;
		seed = seed * 1103515245u + 12345u;
		off = ((uint64_t)seed % (size - sizeof(block))) & ~511ull;
		memset(block, 0xa5, sizeof(block));
		disk_copy_before_write(c, off, sizeof(block));
		write_all(f->src_fd, block, sizeof(block), (off_t)off);
	}
	assert_int_equal(disk_copy_wait(c, NULL, &err), 0);
	disk_copy_free(c);
	assert_file_equals(f->dst, orig, size);
	free(orig);
}

/* Holes of the image are not written into the copy. */
static void test_holes_stay_holes(void **state)
{
	struct fx *f = *state;
	size_t size = 32 * DISK_COPY_CHUNK;
	uint8_t *want = calloc(1, size);
	struct disk_copy *c;
	struct fk_err err = {0};
	struct stat st;

	fill_pattern(want + 5 * DISK_COPY_CHUNK, 4096, 4);
	assert_int_equal(ftruncate(f->src_fd, (off_t)size), 0);
	write_all(f->src_fd, want + 5 * DISK_COPY_CHUNK, 4096, 5 * DISK_COPY_CHUNK);
	assert_int_equal(disk_copy_create(&c, "src.img", f->src_fd, open_dst(f), size, &err), 0);
	assert_int_equal(disk_copy_wait(c, NULL, &err), 0); /* starts it too */
	disk_copy_free(c);
	assert_file_equals(f->dst, want, size);
	assert_int_equal(stat(f->dst, &st), 0);
	assert_true((uint64_t)st.st_blocks * 512 <= 2 * DISK_COPY_CHUNK);
	free(want);
}

static void test_empty_image(void **state)
{
	struct fx *f = *state;
	struct disk_copy *c;
	struct fk_err err = {0};

	assert_int_equal(disk_copy_create(&c, "src.img", f->src_fd, open_dst(f), 0, &err), 0);
	assert_true(disk_copy_finished(c));
	assert_int_equal(disk_copy_wait(c, NULL, &err), 0);
	disk_copy_free(c);
	assert_file_equals(f->dst, (const uint8_t *)"", 0);
}

/* A copy that cannot be written fails with the image's name; writes go on. */
static void test_write_error_is_reported(void **state)
{
	struct fx *f = *state;
	uint8_t buf[8192];
	struct disk_copy *c;
	struct fk_err err = {0};
	int ro;

	fill_pattern(buf, sizeof(buf), 5);
	write_all(f->src_fd, buf, sizeof(buf), 0);
	close(open_dst(f));
	ro = open(f->dst, O_RDONLY);
	assert_true(ro >= 0);
	/* ftruncate of an O_RDONLY descriptor fails first: the create reports it. */
	assert_int_equal(disk_copy_create(&c, "disk0.img", f->src_fd, ro, sizeof(buf), &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "disk0.img"));
}

static void test_read_error_is_reported(void **state)
{
	struct fx *f = *state;
	uint8_t buf[8192];
	struct disk_copy *c;
	struct fk_err err = {0};
	int wo = open(f->src, O_WRONLY);

	fill_pattern(buf, sizeof(buf), 6);
	write_all(f->src_fd, buf, sizeof(buf), 0);
	assert_int_equal(disk_copy_create(&c, "disk1.img", wo, open_dst(f), sizeof(buf), &err), 0);
	disk_copy_before_write(c, 0, 512); /* fails, and lets the write through */
	assert_true(disk_copy_finished(c));
	assert_int_equal(disk_copy_wait(c, NULL, &err), -EBADF);
	assert_non_null(strstr(err.msg, "disk copy of disk1.img: read at byte 0"));
	disk_copy_free(c);
	close(wo);
}

/* Freeing a running copy stops its thread (the source VM exits mid-copy). */
static void test_free_while_copying(void **state)
{
	struct fx *f = *state;
	size_t size = 256 * DISK_COPY_CHUNK;
	struct disk_copy *c;
	struct fk_err err = {0};
	uint8_t *orig = malloc(size);

	fill_pattern(orig, size, 8);
	write_all(f->src_fd, orig, size, 0);
	assert_int_equal(disk_copy_create(&c, "src.img", f->src_fd, open_dst(f), size, &err), 0);
	assert_int_equal(disk_copy_start(c, &err), 0);
	disk_copy_free(c);
	free(orig);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_writes_before_start_keep_the_old_contents, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_concurrent_writer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_holes_stay_holes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_empty_image, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_write_error_is_reported, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_read_error_is_reported, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_free_while_copying, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
