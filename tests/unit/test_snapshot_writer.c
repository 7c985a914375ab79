/* SPDX-License-Identifier: MIT */
/*
 * The memory file's writer: several threads, O_DIRECT and its fallback, short
 * writes, and the progress a live snapshot's status reports. The snapshot
 * format is the same whichever way it was written (same bytes, same hashes).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <linux/magic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "state/snapshot_format.h"

#define PAGE SNAP_PAGE_SIZE
#define MIB  (1u << 20)

/*
 * Two regions whose boundary falls inside a chunk (the file is packed), with
 * whole-zero chunks (holes), isolated zero pages and pages that are zero but
 * for one byte: 5 MiB + 12 KiB, then 3 MiB + 8 KiB.
 */
#define LO_SIZE (5 * MIB + 3 * PAGE)
#define HI_SIZE (3 * MIB + 2 * PAGE)

struct fixture {
	char base[64];
	char snap[128];
	uint8_t *lo, *hi;
	struct snap_mem_region regions[2];
	struct snap_memory_source mem;
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void fill(uint8_t *ram, uint64_t size, unsigned seed)
{
	for (uint64_t off = 0; off < size; off += PAGE) {
		uint64_t page = off / PAGE;
		uint8_t *p = ram + off;

		/* Chunk 2 of each region stays all zero: a hole, never written. */
		if (off >= 2 * MIB && off < 3 * MIB)
			continue;
		if (page % 7 == 3)
			continue; /* isolated zero pages: holes inside a chunk */
		if (page % 11 == 5) {
			p[PAGE - 1] = (uint8_t)(seed + page) | 1; /* data in the last byte only */
			continue;
		}
		for (unsigned i = 0; i < PAGE; i += 8)
			*(uint64_t *)(p + i) = (seed * 0x9e3779b97f4a7c15ull) ^ (off + i);
	}
}

static bool fs_takes_direct(const char *dir)
{
	struct statfs sfs;
	char path[200];
	int fd;

	if (statfs(dir, &sfs) == 0 && sfs.f_type == TMPFS_MAGIC)
		return false; /* takes O_DIRECT, but the writer does not use it there */

	snprintf(path, sizeof(path), "%s/probe", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
	if (fd >= 0) {
		close(fd);
		unlink(path);
	}
	return fd >= 0;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	/*
	 * A disk filesystem (O_DIRECT) for the writer under test: /var/tmp, else
	 * the build directory (a tmpfs /var/tmp takes O_DIRECT but is not one).
	 */
	strcpy(f->base, "/var/tmp/forkd-snapwr-XXXXXX");
	if (!mkdtemp(f->base) || !fs_takes_direct(f->base)) {
		rmdir(f->base);
		snprintf(f->base, sizeof(f->base), "%s/forkd-snapwr-XXXXXX",
			 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build");
		assert_non_null(mkdtemp(f->base));
	}
	snprintf(f->snap, sizeof(f->snap), "%s/snap", f->base);
	f->lo = mmap(NULL, LO_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	f->hi = mmap(NULL, HI_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(f->lo != MAP_FAILED && f->hi != MAP_FAILED);
	fill(f->lo, LO_SIZE, 1);
	fill(f->hi, HI_SIZE, 2);
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

static int commit(struct fixture *f, const char *dir, struct snap_write_opts opts,
		  struct snap_commit_stats *stats, struct fk_err *err)
{
	struct snap_writer w;
	int rc;

	snap_writer_init(&w, 1);
	w.opts = opts;
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 0, "regs", 4, err), 0);
	rc = snap_writer_commit(&w, dir, &f->mem, err);
	*stats = w.stats;
	snap_writer_free(&w);
	return rc;
}

/*
 * The memory file holds exactly the regions, zero pages are holes (where the
 * filesystem reports holes: ramfs says all is data), and verify passes.
 */
static void check_snapshot(struct fixture *f, const char *dir, bool holes)
{
	struct snap_reader *r;
	struct snap_verify_stats vs;
	struct fk_err err = {0};
	uint8_t *buf = malloc(PAGE);
	int fd;

	assert_non_null(buf);
	if (snap_reader_open(dir, &r, &err) != 0)
		fail_msg("open %s: %s", dir, err.msg);
	if (snap_verify_memory(r, &vs, &err) != 0)
		fail_msg("verify %s: %s", dir, err.msg);
	assert_int_equal(vs.bad_chunks, 0);
	assert_int_equal(vs.chunks, (LO_SIZE + HI_SIZE + MIB - 1) / MIB);
	if (holes)
		assert_true(vs.hole_chunks >= 1); /* file chunk 2: region 0's zero MiB */
	fd = snap_reader_memory_fd(r);
	for (uint64_t off = 0; off < LO_SIZE + HI_SIZE; off += PAGE) {
		const uint8_t *src = off < LO_SIZE ? f->lo + off : f->hi + (off - LO_SIZE);
		bool zero = true;

		for (unsigned i = 0; i < PAGE && zero; i++)
			zero = src[i] == 0;
		assert_int_equal(pread(fd, buf, PAGE, (off_t)off), PAGE);
		if (memcmp(buf, src, PAGE) != 0)
			fail_msg("%s: page at file offset %llu differs from guest memory", dir,
				 (unsigned long long)off);
		if (!holes)
			continue;
		if (zero && lseek(fd, (off_t)off, SEEK_HOLE) != (off_t)off)
			fail_msg("%s: zero page at %llu is not a hole", dir,
				 (unsigned long long)off);
		if (!zero && lseek(fd, (off_t)off, SEEK_DATA) != (off_t)off)
			fail_msg("%s: data page at %llu reads as a hole", dir,
				 (unsigned long long)off);
	}
	snap_reader_close(r);
	free(buf);
}

static void read_hashes(const char *dir, uint64_t *out, uint64_t n)
{
	struct snap_reader *r;
	struct fk_err err = {0};
	uint64_t chunk, nr;
	const uint8_t *hashes;

	assert_int_equal(snap_reader_open(dir, &r, &err), 0);
	assert_int_equal(snap_reader_mem_hashes(r, &chunk, &nr, &hashes), 0);
	assert_int_equal(nr, n);
	memcpy(out, hashes, n * 8);
	snap_reader_close(r);
}

/* Four threads with O_DIRECT and one buffered thread write the same snapshot. */
static void test_threads_and_direct_same_snapshot(void **state)
{
	struct fixture *f = *state;
	struct snap_commit_stats st;
	struct fk_err err = {0};
	char buffered[160];
	uint64_t nr = (LO_SIZE + HI_SIZE + MIB - 1) / MIB, a[16], b[16];

	if (!fs_takes_direct(f->base))
		fail_msg("%s does not take O_DIRECT (nor did /var/tmp): this test needs a disk "
			 "filesystem there",
			 f->base);
	if (commit(f, f->snap, (struct snap_write_opts){.threads = 4}, &st, &err) != 0)
		fail_msg("commit: %s", err.msg);
	assert_int_equal(st.threads, 4);
	/* Pages only this process maps: all of them with O_DIRECT. */
	assert_true(st.data_bytes > 0);
	assert_int_equal(st.direct_bytes, st.data_bytes);
	assert_int_equal(st.direct_fallback, 0);
	check_snapshot(f, f->snap, true);

	snprintf(buffered, sizeof(buffered), "%s/buffered", f->base);
	if (commit(f, buffered, (struct snap_write_opts){.threads = 1, .no_direct = true}, &st,
		   &err) != 0)
		fail_msg("commit: %s", err.msg);
	assert_int_equal(st.threads, 1);
	assert_int_equal(st.direct_bytes, 0);
	check_snapshot(f, buffered, true);
	read_hashes(f->snap, a, nr);
	read_hashes(buffered, b, nr);
	assert_memory_equal(a, b, nr * 8);
}

/*
 * Pages shared copy-on-write with another process (as a live snapshot's
 * zygote's are with the VM) go through the page cache: pinning them for
 * O_DIRECT would copy each one first.
 */
static void test_shared_pages_written_buffered(void **state)
{
	struct fixture *f = *state;
	struct snap_commit_stats st;
	struct fk_err err = {0};
	char again[160];
	int status, ready[2];
	pid_t pid;
	char c;

	if (!fs_takes_direct(f->base))
		fail_msg("%s does not take O_DIRECT: this test needs a disk filesystem there",
			 f->base);
	assert_int_equal(pipe(ready), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		/* Holds every page copy-on-write until killed. */
		close(ready[0]);
		assert_int_equal(write(ready[1], "r", 1), 1);
		pause();
		_exit(0);
	}
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	if (commit(f, f->snap, (struct snap_write_opts){.threads = 2}, &st, &err) != 0)
		fail_msg("commit: %s", err.msg);
	kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(st.data_bytes > 0);
	assert_int_equal(st.direct_bytes, 0);
	check_snapshot(f, f->snap, true);

	/*
	 * The other process gone, the pages may still count as shared: the
	 * kernel keeps a large folio "maybe mapped shared" once it was (6.15+
	 * without per-page mapcounts), so this may go either way; it must be
	 * the same snapshot.
	 */
	snprintf(again, sizeof(again), "%s/again", f->base);
	if (commit(f, again, (struct snap_write_opts){.threads = 2}, &st, &err) != 0)
		fail_msg("commit: %s", err.msg);
	assert_true(st.direct_bytes <= st.data_bytes);
	check_snapshot(f, again, true);
}

/*
 * ramfs refuses O_DIRECT at open (EINVAL): the writer falls back to the page
 * cache and says so. Mounted in a private mount namespace of a child.
 */
static void test_direct_refused_falls_back(void **state)
{
	struct fixture *f = *state;
	char mnt[160];
	int status;
	pid_t pid;

	if (geteuid() != 0)
		fail_msg("needs root to mount a ramfs (running as uid %d)", (int)geteuid());
	snprintf(mnt, sizeof(mnt), "%s/ramfs", f->base);
	assert_int_equal(mkdir(mnt, 0700), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct snap_commit_stats st;
		struct fk_err err = {0};
		char dir[200];

		if (unshare(CLONE_NEWNS) < 0 ||
		    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("ramfs", mnt, "ramfs", 0, NULL) < 0) {
			fprintf(stderr, "mount ramfs on %s: %s\n", mnt, strerror(errno));
			_exit(10);
		}
		if (fs_takes_direct(mnt)) {
			fprintf(stderr, "ramfs took O_DIRECT: nothing to fall back from\n");
			_exit(11);
		}
		snprintf(dir, sizeof(dir), "%s/snap", mnt);
		if (commit(f, dir, (struct snap_write_opts){0}, &st, &err) != 0) {
			fprintf(stderr, "commit: %s\n", err.msg);
			_exit(12);
		}
		if (st.direct_bytes || st.direct_fallback != 1) {
			fprintf(stderr, "direct bytes %llu fallback %d: expected 0 and 1\n",
				(unsigned long long)st.direct_bytes, st.direct_fallback);
			_exit(13);
		}
		check_snapshot(f, dir, false);
		_exit(0);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static bool page_has_data(struct fixture *f, uint64_t off)
{
	const uint8_t *src = off < LO_SIZE ? f->lo + off : f->hi + (off - LO_SIZE);

	for (unsigned i = 0; i < PAGE; i++)
		if (src[i])
			return true;
	return false;
}

/*
 * A tmpfs of `pages` pages in a child's private mount namespace: the write
 * that fills it comes back short, the next one fails with ENOSPC. Exits 0
 * when the error is the clear one, at the expected offset (one thread: the
 * first data page that did not fit) and nothing is left behind.
 */
static void enospc_child(struct fixture *f, const char *mnt, unsigned pages, int threads)
{
	struct snap_commit_stats st;
	struct fk_err err = {0};
	char dir[200], opt[64], want[64];
	uint64_t seen = 0, fail_off = 0;
	DIR *d;
	struct dirent *e;

	snprintf(opt, sizeof(opt), "size=%u", pages * PAGE);
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", mnt, "tmpfs", 0, opt) < 0) {
		fprintf(stderr, "mount tmpfs on %s: %s\n", mnt, strerror(errno));
		_exit(10);
	}
	snprintf(dir, sizeof(dir), "%s/snap", mnt);
	if (commit(f, dir, (struct snap_write_opts){.threads = threads}, &st, &err) != -ENOSPC) {
		fprintf(stderr, "commit into %u pages: expected ENOSPC, got: %s\n", pages, err.msg);
		_exit(11);
	}
	if (!strstr(err.msg, "No space left on device") || !strstr(err.msg, "the snapshot needs")) {
		fprintf(stderr, "unclear error: %s\n", err.msg);
		_exit(12);
	}
	/* The `writer` record takes one page; the data pages fill the rest in file order. */
	for (uint64_t off = 0; off < LO_SIZE + HI_SIZE; off += PAGE)
		if (page_has_data(f, off) && seen++ == pages - 1) {
			fail_off = off;
			break;
		}
	snprintf(want, sizeof(want), "at offset %llu:", (unsigned long long)fail_off);
	if (threads == 1 && !strstr(err.msg, want)) {
		fprintf(stderr, "expected the failure %s (a short write continued): %s\n", want,
			err.msg);
		_exit(13);
	}
	d = opendir(mnt);
	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.') {
			fprintf(stderr, "%s/%s left behind\n", mnt, e->d_name);
			_exit(14);
		}
	if (d)
		closedir(d);
	_exit(0);
}

static void run_enospc(struct fixture *f, unsigned pages, int threads)
{
	char mnt[160];
	int status;
	pid_t pid;

	if (geteuid() != 0)
		fail_msg("needs root to mount a small tmpfs (running as uid %d)", (int)geteuid());
	snprintf(mnt, sizeof(mnt), "%s/small-%d", f->base, threads);
	assert_int_equal(mkdir(mnt, 0700), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		enospc_child(f, mnt, pages, threads);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* One thread: the run that fills the disk is written short, then fails at the right page. */
static void test_short_write_then_enospc(void **state)
{
	run_enospc(*state, 300, 1);
}

/* Four threads: one fails, the others stop, the error is still the clear one, nothing left. */
static void test_enospc_with_threads(void **state)
{
	run_enospc(*state, 300, 4);
}

/* The progress a live snapshot's status shows: allocated bytes of a running writer's file. */
static void test_written_bytes_progress(void **state)
{
	struct fixture *f = *state;
	struct fk_err err = {0};
	char tmp[200];
	uint8_t page[PAGE];
	uint64_t bytes = 1;
	int dirfd, fd;

	assert_int_equal(snap_tmp_written_bytes(f->snap, &bytes), -ENOENT);
	assert_int_equal(bytes, 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp-Ab12Cd", f->snap);
	assert_int_equal(mkdir(tmp, 0700), 0);
	dirfd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	assert_true(dirfd >= 0);
	/* No writer record yet: not a running writer's. */
	assert_int_equal(snap_tmp_written_bytes(f->snap, &bytes), -ENOENT);
	assert_int_equal(snap_tmp_mark_writer(dirfd, tmp, &err), 0);
	/* A running writer that has not created the memory file yet: 0 written. */
	assert_int_equal(snap_tmp_written_bytes(f->snap, &bytes), 0);
	assert_int_equal(bytes, 0);
	fd = openat(dirfd, SNAP_MEMORY_FILE, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 64 * PAGE), 0);
	assert_int_equal(snap_tmp_written_bytes(f->snap, &bytes), 0);
	assert_int_equal(bytes, 0); /* sized, nothing written: all hole */
	memset(page, 0x5a, sizeof(page));
	for (int i = 0; i < 3; i++)
		assert_int_equal(pwrite(fd, page, PAGE, (off_t)(10 + 20 * i) * PAGE), PAGE);
	assert_int_equal(fsync(fd), 0);
	assert_int_equal(snap_tmp_written_bytes(f->snap, &bytes), 0);
	assert_int_equal(bytes, 3 * PAGE);
	close(fd);
	close(dirfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_threads_and_direct_same_snapshot, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_shared_pages_written_buffered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_direct_refused_falls_back, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_write_then_enospc, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_enospc_with_threads, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_written_bytes_progress, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
