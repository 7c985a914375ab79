/* SPDX-License-Identifier: MIT */
/*
 * The memory file's chunk checksums (a flipped bit, data in a hole, a chunk
 * across two regions) and the temp directories of writers that died.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state/snapshot_format.h"

#define MIB (1ull << 20)
/* Region 0 ends half-way through chunk 3, so that chunk spans both regions. */
#define LO_SIZE (3 * MIB + MIB / 2)
#define HI_SIZE (2 * MIB)
#define TOTAL	(LO_SIZE + HI_SIZE) /* 5.5 MiB: 6 chunks, the last one half */

struct fixture {
	char base[64];
	char snap[128];
	char memory[160];
	uint8_t *lo, *hi;
	struct snap_mem_region regions[2];
	struct snap_memory_source mem;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void fill(uint8_t *p, size_t len, unsigned seed)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)(seed + i * 13 + (i >> 12));
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	strcpy(f->base, "/tmp/forkd-snapint-XXXXXX");
	assert_non_null(mkdtemp(f->base));
	snprintf(f->snap, sizeof(f->snap), "%s/snap", f->base);
	snprintf(f->memory, sizeof(f->memory), "%s/memory", f->snap);
	f->lo = mmap(NULL, LO_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	f->hi = mmap(NULL, HI_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(f->lo != MAP_FAILED && f->hi != MAP_FAILED);
	fill(f->lo, MIB, 1);			  /* chunk 0: all data */
	f->lo[2 * MIB + 8192] = 0x5a;		  /* chunk 2: one page of data; chunk 1 zero */
	fill(f->lo + 3 * MIB, MIB / 2, 7);	  /* chunk 3, region 0's half */
	fill(f->hi + 4096, 4096, 9);		  /* chunk 3, region 1's half: one page */
	fill(f->hi + HI_SIZE - MIB / 2, 4096, 3); /* chunk 5 (half a chunk); chunk 4 zero */
	f->regions[0] = (struct snap_mem_region){.gpa = 0, .size = LO_SIZE, .host = f->lo};
	f->regions[1] = (struct snap_mem_region){.gpa = 1ull << 32, .size = HI_SIZE, .host = f->hi};
	f->mem = (struct snap_memory_source){.regions = f->regions, .nr_regions = 2};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	nftw(f->base, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	munmap(f->lo, LO_SIZE);
	munmap(f->hi, HI_SIZE);
	free(f);
	return 0;
}

static void commit(struct fixture *f, struct snap_commit_stats *stats)
{
	struct snap_writer w;
	struct fk_err err = {0};

	snap_writer_init(&w, 1);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 0, "regs", 4, &err), 0);
	if (snap_writer_commit(&w, f->snap, &f->mem, &err) < 0)
		fail_msg("commit: %s", err.msg);
	if (stats)
		*stats = w.stats;
	snap_writer_free(&w);
}

/* Opens and verifies; returns verify's result, its stats and message. */
static int verify(struct fixture *f, struct snap_verify_stats *vs, struct fk_err *err)
{
	struct snap_reader *r;
	int ret;

	if (snap_reader_open(f->snap, &r, err) < 0)
		fail_msg("open: %s", err->msg);
	ret = snap_verify_memory(r, vs, err);
	snap_reader_close(r);
	return ret;
}

static void poke(const char *path, uint64_t off, uint8_t xor_mask)
{
	int fd = open(path, O_RDWR);
	uint8_t b;

	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, (off_t)off), 1);
	b ^= xor_mask;
	assert_int_equal(pwrite(fd, &b, 1, (off_t)off), 1);
	close(fd);
}

static void test_good_snapshot_verifies(void **state)
{
	struct fixture *f = *state;
	struct snap_commit_stats cs;
	struct snap_verify_stats vs;
	struct snap_reader *r;
	struct fk_err err = {0};
	uint64_t chunk, nr;
	const uint8_t *hashes;

	commit(f, &cs);
	/* Chunks 0, 2, 3 and 5 hold data and were hashed; 1 and 4 cost nothing. */
	assert_int_equal(cs.hashed_bytes, 3 * MIB + MIB / 2);
	assert_int_equal(cs.data_bytes, MIB + 4096 + MIB / 2 + 4096 + 4096);
	assert_int_equal(snap_reader_open(f->snap, &r, &err), 0);
	assert_int_equal(snap_reader_mem_hashes(r, &chunk, &nr, &hashes), 0);
	assert_int_equal(chunk, SNAP_HASH_CHUNK);
	assert_int_equal(nr, 6);
	snap_reader_close(r);
	if (verify(f, &vs, &err) != 0)
		fail_msg("verify: %s", err.msg);
	assert_int_equal(vs.chunks, 6);
	assert_int_equal(vs.bad_chunks, 0);
	/* The all-zero chunks are holes and are not read (SEEK_DATA on /tmp's filesystem). */
	assert_int_equal(vs.hole_chunks, 2);
	assert_int_equal(vs.bytes_read, 4 * MIB - MIB / 2);
}

static void expect_bad_chunk(struct fixture *f, uint64_t chunk_index)
{
	struct snap_verify_stats vs;
	struct fk_err err = {0};
	char want[96];

	assert_int_equal(verify(f, &vs, &err), -EBADMSG);
	snprintf(want, sizeof(want), "chunk %llu at offset %llu", (unsigned long long)chunk_index,
		 (unsigned long long)(chunk_index * SNAP_HASH_CHUNK));
	if (!strstr(err.msg, want) || !strstr(err.msg, f->memory) ||
	    !strstr(err.msg, "1 of 6 chunks"))
		fail_msg("expected '%s', '1 of 6 chunks' and the file in: %s", want, err.msg);
	assert_int_equal(vs.bad_chunks, 1);
	assert_int_equal(vs.first_bad_offset, chunk_index * SNAP_HASH_CHUNK);
}

static void test_flipped_bit_names_its_chunk(void **state)
{
	struct fixture *f = *state;

	commit(f, NULL);
	poke(f->memory, 2 * MIB + 8192 + 17, 0x10); /* one bit, inside chunk 2's page */
	expect_bad_chunk(f, 2);
}

static void test_chunk_across_two_regions(void **state)
{
	struct fixture *f = *state;

	commit(f, NULL);
	/* Chunk 3's second half is region 1's first half-MiB. */
	poke(f->memory, LO_SIZE + 4096 + 5, 0x01);
	expect_bad_chunk(f, 3);
}

static void test_data_in_a_hole_is_caught(void **state)
{
	struct fixture *f = *state;

	commit(f, NULL);
	poke(f->memory, 4 * MIB + 12345, 0x80); /* chunk 4 was all zero, a hole */
	expect_bad_chunk(f, 4);
}

static void test_short_last_chunk(void **state)
{
	struct fixture *f = *state;

	commit(f, NULL);
	poke(f->memory, TOTAL - MIB / 2 + 1, 0x04);
	expect_bad_chunk(f, 5);
}

static void test_checksums_are_commits_own(void **state)
{
	struct snap_writer w;
	struct fk_err err = {0};

	(void)state;
	snap_writer_init(&w, 1);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_MEM_HASHES, 0, "x", 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "MEM_HASHES"));
	snap_writer_free(&w);
}

/* ---- temp directories of dead writers ---- */

static void make_tmp(const char *base, const char *name, const char *record)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", base, name);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/%s/memory", base, name);
	fd = open(path, O_WRONLY | O_CREAT, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "data", 4), 4);
	close(fd);
	if (record) {
		snprintf(path, sizeof(path), "%s/%s/%s", base, name, SNAP_WRITER_FILE);
		fd = open(path, O_WRONLY | O_CREAT, 0600);
		assert_true(fd >= 0);
		assert_int_equal(write(fd, record, strlen(record)), (ssize_t)strlen(record));
		close(fd);
	}
}

static bool exists(const char *base, const char *name)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", base, name);
	return stat(path, &st) == 0;
}

/* A writer that marks its temp dir and is killed with -9 before it finishes. */
static void killed_writer(const char *base, const char *name)
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (pid == 0) {
		char path[256];
		struct fk_err err;
		int fd;

		snprintf(path, sizeof(path), "%s/%s", base, name);
		if (mkdir(path, 0700) < 0)
			_exit(1);
		fd = open(path, O_RDONLY | O_DIRECTORY);
		if (fd < 0 || snap_tmp_mark_writer(fd, path, &err) < 0)
			_exit(1);
		raise(SIGKILL);
		_exit(1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
}

static void own_record(char *out, size_t len, unsigned long long start, const char *boot)
{
	char id[64] = "";
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");

	assert_non_null(f);
	assert_non_null(fgets(id, sizeof(id), f));
	fclose(f);
	id[strcspn(id, "\n")] = '\0';
	snprintf(out, len, "pid=%d start=%llu boot=%s\n", (int)getpid(), start, boot ? boot : id);
}

static void test_stale_temp_dirs_go_live_ones_stay(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char live[160], reused[160], other_boot[160];

	killed_writer(f->base, "a.tmp-Ab12Cd");
	killed_writer(f->base, "b.tmp-Zz99Yy");
	own_record(live, sizeof(live), snap_proc_start_time(getpid()), NULL);
	make_tmp(f->base, "live.tmp-LIVE01", live);
	/* Our pid, but another start time: the pid was reused, the writer is gone. */
	own_record(reused, sizeof(reused), snap_proc_start_time(getpid()) + 1, NULL);
	make_tmp(f->base, "reused.tmp-REUSE1", reused);
	own_record(other_boot, sizeof(other_boot), snap_proc_start_time(getpid()),
		   "00000000-0000-0000-0000-000000000000");
	make_tmp(f->base, "boot.tmp-BOOT01", other_boot);
	make_tmp(f->base, "norecord.tmp-NOREC1", NULL); /* being created, or not ours */
	make_tmp(f->base, "short.tmp-12345", "pid=1 start=1 boot=x\n");
	make_tmp(f->base, "plain", "pid=1 start=1 boot=x\n");

	/* Only the temp dirs of one snapshot name. */
	assert_int_equal(snap_tmp_clean_stale(f->base, "a", &err), 1);
	assert_false(exists(f->base, "a.tmp-Ab12Cd"));
	assert_true(exists(f->base, "b.tmp-Zz99Yy"));

	assert_int_equal(snap_tmp_clean_stale(f->base, NULL, &err), 3);
	assert_false(exists(f->base, "b.tmp-Zz99Yy"));
	assert_false(exists(f->base, "reused.tmp-REUSE1"));
	assert_false(exists(f->base, "boot.tmp-BOOT01"));
	assert_true(exists(f->base, "live.tmp-LIVE01"));
	assert_true(exists(f->base, "norecord.tmp-NOREC1"));
	assert_true(exists(f->base, "short.tmp-12345"));
	assert_true(exists(f->base, "plain"));

	assert_int_equal(snap_tmp_clean_stale("/nonexistent/forkd", NULL, &err), 0);
}

/* The next commit into the directory removes what a killed writer left there. */
static void test_commit_removes_stale_temp_dirs(void **state)
{
	struct fixture *f = *state;
	struct snap_commit_stats cs;
	char path[200];
	struct stat st;

	killed_writer(f->base, "snap.tmp-KILLED");
	commit(f, &cs);
	assert_int_equal(cs.stale_removed, 1);
	assert_false(exists(f->base, "snap.tmp-KILLED"));
	/* The complete snapshot keeps the record of who wrote it. */
	snprintf(path, sizeof(path), "%s/%s", f->snap, SNAP_WRITER_FILE);
	assert_int_equal(stat(path, &st), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_good_snapshot_verifies, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_flipped_bit_names_its_chunk, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_chunk_across_two_regions, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_data_in_a_hole_is_caught, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_last_chunk, setup, teardown),
	    cmocka_unit_test(test_checksums_are_commits_own),
	    cmocka_unit_test_setup_teardown(test_stale_temp_dirs_go_live_ones_stay, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_commit_removes_stale_temp_dirs, setup, teardown),
	};
	return cmocka_run_group_tests_name("snapshot integrity and temp dirs", tests, NULL, NULL);
}
