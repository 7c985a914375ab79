/* SPDX-License-Identifier: MIT */
/*
 * Diff snapshots without KVM (docs/diff-snapshots.md): a chain written from
 * plain buffers overlays to the newest memory; compact flattens it; the
 * PARENT and PAGE_MAP sections are validated (malformed inputs rebuilt with
 * valid checksums, so the section checks themselves are reached); the writer
 * refuses a missing parent, another layout and a chain too deep.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/guest_mem.h"
#include "daemon/daemon.h"
#include "devices/virtqueue.h"
#include "virtio_guest.h"
#include "daemon/registry.h"
#include "state/snapshot_diff.h"
#include "state/snapshot_format.h"

#define PAGES 80 /* not a multiple of 64: the page map's last word is partial */
#define MEM   ((size_t)PAGES * SNAP_PAGE_SIZE)

struct fixture {
	char dir[128];
	uint8_t *mem; /* the "guest" memory the snapshots are written from */
};

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/forkd-snapdiff-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	f->mem = calloc(1, MEM);
	if (!f->mem)
		return -1;
	for (size_t p = 0; p < PAGES; p += 3)
		memset(f->mem + p * SNAP_PAGE_SIZE, (int)(p + 1), SNAP_PAGE_SIZE);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	nftw(f->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(f->mem);
	free(f);
	return 0;
}

static void path_of(const struct fixture *f, const char *name, char *out, size_t len)
{
	snprintf(out, len, "%s/%s", f->dir, name);
}

/* Writes f->mem as `name`: full when parent is NULL, else a diff storing `pages`. */
static int write_snap(struct fixture *f, const char *name, const char *parent,
		      const unsigned *pages, int nr, struct fk_err *err)
{
	struct snap_mem_region region = {.gpa = 0, .size = MEM, .host = f->mem};
	struct snap_memory_source src = {.regions = &region, .nr_regions = 1};
	static const uint8_t vcpu[] = "registers";
	struct snap_writer w;
	char path[256];
	int rc;

	path_of(f, name, path, sizeof(path));
	snap_writer_init(&w, 1);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_VCPU, 0, vcpu, sizeof(vcpu), err), 0);
	if (parent) {
		w.diff = calloc(1, sizeof(*w.diff));
		assert_non_null(w.diff);
		w.diff->nr_pages = PAGES;
		w.diff->pages = calloc((PAGES + 63) / 64, 8);
		w.diff->parent_dir = strdup(parent);
		for (int i = 0; i < nr; i++)
			w.diff->pages[pages[i] / 64] |= 1ull << (pages[i] % 64);
	}
	rc = snap_writer_commit(&w, path, &src, err);
	snap_writer_free(&w);
	return rc;
}

static void must_write(struct fixture *f, const char *name, const char *parent,
		       const unsigned *pages, int nr)
{
	struct fk_err err = {0};

	if (write_snap(f, name, parent, pages, nr, &err) != 0)
		fail_msg("write %s: %s", name, err.msg);
}

/* Opens the chain ending at `name`, overlays it and compares with f->mem. */
static void expect_chain_equals_mem(struct fixture *f, const char *name, int links)
{
	struct snap_chain *c = NULL;
	struct fk_err err = {0};
	char path[256];
	uint8_t *map;

	path_of(f, name, path, sizeof(path));
	if (snap_chain_open(path, &c, &err) != 0)
		fail_msg("open chain %s: %s", path, err.msg);
	assert_int_equal(c->n, links);
	map = mmap(NULL, MEM, PROT_READ | PROT_WRITE, MAP_PRIVATE, snap_chain_base_fd(c), 0);
	assert_true(map != MAP_FAILED);
	assert_int_equal(snap_chain_overlay(c, map, MEM, NULL, &err), 0);
	for (size_t p = 0; p < PAGES; p++)
		if (memcmp(map + p * SNAP_PAGE_SIZE, f->mem + p * SNAP_PAGE_SIZE, SNAP_PAGE_SIZE))
			fail_msg("%s: page %zu differs after the overlay", name, p);
	munmap(map, MEM);
	snap_chain_close(c);
}

static void test_chain_overlays_and_compacts(void **state)
{
	struct fixture *f = *state;
	unsigned d1[] = {1, 3, 70, 79}, d2[] = {3, 64, 0};
	char base[256], one[256], two[256], flat[256];
	struct snap_compact_stats st;
	struct snap_verify_stats vs;
	struct snap_reader *r = NULL;
	struct fk_err err = {0};
	const uint8_t *bits;
	uint64_t nr, present;

	path_of(f, "base", base, sizeof(base));
	path_of(f, "one", one, sizeof(one));
	path_of(f, "two", two, sizeof(two));
	path_of(f, "flat", flat, sizeof(flat));
	must_write(f, "base", NULL, NULL, 0);

	memset(f->mem + 1 * SNAP_PAGE_SIZE, 0xa1, SNAP_PAGE_SIZE);
	memset(f->mem + 3 * SNAP_PAGE_SIZE, 0, SNAP_PAGE_SIZE); /* a page that became zero */
	memset(f->mem + 70 * SNAP_PAGE_SIZE, 0x70, SNAP_PAGE_SIZE);
	memset(f->mem + 79 * SNAP_PAGE_SIZE, 0x79, 100);
	must_write(f, "one", base, d1, 4);
	/* The second diff: page 3 again, and two pages the first did not hold. */
	memset(f->mem + 3 * SNAP_PAGE_SIZE, 0x33, SNAP_PAGE_SIZE);
	memset(f->mem + 64 * SNAP_PAGE_SIZE, 0x64, SNAP_PAGE_SIZE);
	f->mem[0] ^= 0xff;
	must_write(f, "two", one, d2, 3);

	assert_int_equal(snap_reader_open(two, &r, &err), 0);
	assert_int_equal(snap_reader_version(r), SNAP_VERSION_DIFF);
	assert_int_equal(snap_reader_page_map(r, &bits, &nr, &present), 0);
	assert_int_equal(nr, PAGES);
	assert_int_equal(present, 3);
	assert_true(snap_page_map_test(bits, 64) && !snap_page_map_test(bits, 1));
	/* The diff's own memory file verifies against its own chunk checksums. */
	assert_int_equal(snap_verify_memory(r, &vs, &err), 0);
	snap_reader_close(r);

	expect_chain_equals_mem(f, "two", 3);
	assert_int_equal(snap_chain_compact(two, flat, &st, &err), 0);
	assert_int_equal(st.links, 3);
	expect_chain_equals_mem(f, "flat", 1);
	assert_int_equal(snap_reader_open(flat, &r, &err), 0);
	assert_int_equal(snap_reader_version(r), SNAP_VERSION);
	assert_int_equal(snap_reader_parent(r, &(struct snap_parent_info){0}), -ENOENT);
	snap_reader_close(r);
	/* Compacting onto an existing directory is refused. */
	assert_int_equal(snap_chain_compact(two, flat, &st, &err), -EEXIST);
}

static void test_writer_refuses(void **state)
{
	struct fixture *f = *state;
	unsigned one_page[] = {5};
	char base[256], prev[256], name[64], missing[256];
	struct fk_err err = {0};
	struct snap_writer w;

	path_of(f, "base", base, sizeof(base));
	path_of(f, "nope", missing, sizeof(missing));
	must_write(f, "base", NULL, NULL, 0);
	assert_int_equal(write_snap(f, "x", missing, one_page, 1, &err), -ENOENT);
	assert_non_null(strstr(err.msg, missing));
	assert_int_equal(write_snap(f, "x", "relative/parent", one_page, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "absolute"));

	/* The commit writes PARENT and PAGE_MAP; callers cannot. */
	snap_writer_init(&w, 1);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_PARENT, 0, "x", 1, &err), -EINVAL);
	assert_int_equal(snap_writer_add(&w, SNAP_SEC_PAGE_MAP, 0, "x", 1, &err), -EINVAL);
	snap_writer_free(&w);

	/* SNAP_DIFF_MAX_DEPTH diffs, then one more is refused: compact first. */
	snprintf(prev, sizeof(prev), "%s", base);
	for (int i = 1; i <= SNAP_DIFF_MAX_DEPTH; i++) {
		snprintf(name, sizeof(name), "d%d", i);
		must_write(f, name, prev, one_page, 1);
		path_of(f, name, prev, sizeof(prev));
	}
	expect_chain_equals_mem(f, name, SNAP_DIFF_MAX_DEPTH + 1);
	assert_int_equal(write_snap(f, "too-deep", prev, one_page, 1, &err), -ELOOP);
	assert_non_null(strstr(err.msg, "at most 16 deep"));
}

/* Rewrites one byte range of section `type`'s payload, then its and the file's checksums. */
static void patch_section(const char *snap, uint32_t type, size_t at, const void *bytes, size_t len,
			  uint32_t version)
{
	char path[300];
	uint8_t *buf;
	struct stat st;
	uint32_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/state", snap);
	fd = open(path, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	memcpy(&n, buf + SNAP_HDR_OFF_NR_SECTIONS, 4);
	for (uint32_t i = 0; i < n && bytes; i++) {
		uint8_t *e = buf + SNAP_HDR_LEN + (size_t)i * SNAP_ENT_LEN;
		uint32_t t;
		uint64_t off, slen, sum;

		memcpy(&t, e + SNAP_ENT_OFF_TYPE, 4);
		if (t != type)
			continue;
		memcpy(&off, e + SNAP_ENT_OFF_OFFSET, 8);
		memcpy(&slen, e + SNAP_ENT_OFF_LENGTH, 8);
		assert_true(at + len <= slen);
		memcpy(buf + off + at, bytes, len);
		sum = XXH3_64bits(buf + off, slen);
		memcpy(e + SNAP_ENT_OFF_CHECKSUM, &sum, 8);
	}
	if (version)
		memcpy(buf + SNAP_HDR_OFF_VERSION, &version, 4);
	uint64_t sum =
	    XXH3_64bits(buf + SNAP_HDR_OFF_VERSION, (size_t)st.st_size - SNAP_HDR_OFF_VERSION);
	memcpy(buf + SNAP_HDR_OFF_CHECKSUM, &sum, 8);
	assert_int_equal(pwrite(fd, buf, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	free(buf);
}

static void expect_open_fails(const char *snap, int code, const char *reason)
{
	struct snap_reader *r = NULL;
	struct fk_err err = {0};
	int rc = snap_reader_open(snap, &r, &err);

	if (rc == 0)
		fail_msg("%s opened; expected \"%s\"", snap, reason);
	assert_int_equal(rc, -code);
	if (!strstr(err.msg, snap) || !strstr(err.msg, reason))
		fail_msg("error \"%s\" lacks \"%s\" or \"%s\"", err.msg, snap, reason);
}

/* A fresh diff named `name` (a child of `base`), for one malformation each. */
static void fresh_diff(struct fixture *f, const char *name, char *out, size_t len)
{
	unsigned pages[] = {2, 66};
	char base[256];
	char rm[600];

	path_of(f, "base", base, sizeof(base));
	path_of(f, name, out, len);
	snprintf(rm, sizeof(rm), "rm -rf '%s'", out);
	assert_int_equal(system(rm), 0);
	must_write(f, name, base, pages, 2);
}

static void test_malformed_diff_sections(void **state)
{
	struct fixture *f = *state;
	char d[256], full[256];
	uint32_t u32;
	uint64_t u64;
	uint8_t byte;

	must_write(f, "base", NULL, NULL, 0);
	path_of(f, "base", full, sizeof(full));

	/* PAGE_MAP: a bit past the last page (80: word 1, bit 16). */
	fresh_diff(f, "m", d, sizeof(d));
	byte = 0x01; /* byte 10, bit 0: page 80, one past the last */
	patch_section(d, SNAP_SEC_PAGE_MAP, 24 + 10, &byte, 1, 0);
	expect_open_fails(d, EINVAL, "bits set past page 80");
	/* PAGE_MAP: its count disagrees with its bits. */
	fresh_diff(f, "m", d, sizeof(d));
	u64 = 7;
	patch_section(d, SNAP_SEC_PAGE_MAP, 16, &u64, 8, 0);
	expect_open_fails(d, EINVAL, "says 7 pages present, its bitmap has 2");
	/* PAGE_MAP: the wrong number of pages for the memory file. */
	fresh_diff(f, "m", d, sizeof(d));
	u64 = PAGES - 1;
	patch_section(d, SNAP_SEC_PAGE_MAP, 8, &u64, 8, 0);
	expect_open_fails(d, EINVAL, "PAGE_MAP of 79 pages");
	/* PAGE_MAP: an unknown version. */
	fresh_diff(f, "m", d, sizeof(d));
	u32 = 9;
	patch_section(d, SNAP_SEC_PAGE_MAP, 0, &u32, 4, 0);
	expect_open_fails(d, ENOTSUP, "PAGE_MAP version 9");
	/* PARENT: depth 0 and beyond the bound. */
	fresh_diff(f, "m", d, sizeof(d));
	u32 = 0;
	patch_section(d, SNAP_SEC_PARENT, 4, &u32, 4, 0);
	expect_open_fails(d, ELOOP, "PARENT depth 0");
	fresh_diff(f, "m", d, sizeof(d));
	u32 = 999;
	patch_section(d, SNAP_SEC_PARENT, 4, &u32, 4, 0);
	expect_open_fails(d, ELOOP, "chain too deep");
	/* PARENT: a path length that does not fill the section. */
	fresh_diff(f, "m", d, sizeof(d));
	u32 = 3;
	patch_section(d, SNAP_SEC_PARENT, 24, &u32, 4, 0);
	expect_open_fails(d, EINVAL, "PARENT path of 3 bytes");
	/* PARENT: a relative path, and one with a NUL in it. */
	fresh_diff(f, "m", d, sizeof(d));
	byte = 'x';
	patch_section(d, SNAP_SEC_PARENT, 32, &byte, 1, 0);
	expect_open_fails(d, EINVAL, "not an absolute path");
	fresh_diff(f, "m", d, sizeof(d));
	byte = 0;
	patch_section(d, SNAP_SEC_PARENT, 34, &byte, 1, 0);
	expect_open_fails(d, EINVAL, "not an absolute path");
	/* PARENT: another memory size than the child's. */
	fresh_diff(f, "m", d, sizeof(d));
	u64 = MEM * 2;
	patch_section(d, SNAP_SEC_PARENT, 16, &u64, 8, 0);
	expect_open_fails(d, EINVAL, "PARENT memory size");
	/* Version 1 with the diff sections, and version 2 without them. */
	fresh_diff(f, "m", d, sizeof(d));
	patch_section(d, 0, 0, NULL, 0, 1);
	expect_open_fails(d, EINVAL, "version 1 (a full snapshot) with a PARENT");
	patch_section(full, 0, 0, NULL, 0, 2);
	expect_open_fails(full, EINVAL, "version 2 (a diff snapshot) without its PARENT");
}

/* Broken chains, at the format level (itest_diff does the same through restore). */
static void test_broken_chain_errors(void **state)
{
	struct fixture *f = *state;
	unsigned pages[] = {4};
	char base[256], child[256], other[256], cmd[1200];
	struct snap_chain *c = NULL;
	struct fk_err err = {0};

	path_of(f, "base", base, sizeof(base));
	path_of(f, "child", child, sizeof(child));
	path_of(f, "other", other, sizeof(other));
	must_write(f, "base", NULL, NULL, 0);
	must_write(f, "child", base, pages, 1);
	f->mem[5] ^= 1;
	must_write(f, "other", NULL, NULL, 0);

	snprintf(cmd, sizeof(cmd), "mv '%s' '%s.away'", base, base);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(snap_chain_open(child, &c, &err), -ENOENT);
	assert_non_null(strstr(err.msg, base));
	assert_non_null(strstr(err.msg, "missing"));

	snprintf(cmd, sizeof(cmd), "cp -a '%s' '%s'", other, base);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(snap_chain_open(child, &c, &err), -ESTALE);
	assert_non_null(strstr(err.msg, "changed after"));

	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mv '%s' '%s'", base, child, base);
	assert_int_equal(system(cmd), 0);
	assert_int_equal(snap_chain_open(base, &c, &err), -ELOOP);
	assert_non_null(strstr(err.msg, "cycle"));
	assert_null(c);
}

/*
 * The daemon's DELETE /v1/snapshots/{tag}: a registered snapshot that is the
 * parent of a registered diff is refused, naming the diff, unless cascaded,
 * which deletes the diffs (and theirs) first.
 */
static void test_daemon_refuses_deleting_a_diff_parent(void **state)
{
	struct fixture *f = *state;
	static const char *const tags[] = {"base", "d1", "d2", "lone"};
	struct daemon_config cfg = {.state_dir = f->dir, .vmm_path = "/bin/false"};
	unsigned pages[] = {1};
	char db[256], snaps[256], path[300], parent[300];
	struct registry *r;
	struct daemon *d = NULL;
	struct fk_err err = {0};
	json_t *o = NULL;
	int adopted;

	snprintf(snaps, sizeof(snaps), "%s/snapshots", f->dir);
	assert_int_equal(mkdir(snaps, 0700), 0);
	must_write(f, "snapshots/base", NULL, NULL, 0);
	path_of(f, "snapshots/base", parent, sizeof(parent));
	must_write(f, "snapshots/d1", parent, pages, 1);
	path_of(f, "snapshots/d1", parent, sizeof(parent));
	must_write(f, "snapshots/d2", parent, pages, 1);
	must_write(f, "snapshots/lone", NULL, NULL, 0);
	snprintf(db, sizeof(db), "%s/registry.db", f->dir);
	assert_int_equal(registry_open(db, &r, &err), 0);
	for (size_t i = 0; i < sizeof(tags) / sizeof(tags[0]); i++) {
		struct reg_snapshot s = {0};
		snprintf(s.tag, sizeof(s.tag), "%s", tags[i]);
		snprintf(s.path, sizeof(s.path), "%s/%s", snaps, tags[i]);
		assert_int_equal(registry_snapshot_add(r, &s, &err), 0);
		assert_int_equal(registry_snapshot_mark_ready(r, tags[i], &err), 0);
	}
	registry_close(r);
	if (daemon_open(&cfg, &d, &adopted, &err) != 0)
		fail_msg("daemon_open: %s", err.msg);

	assert_int_equal(daemon_snapshot_delete(d, "base", false, &o, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "parent of diff snapshot d1"));
	assert_int_equal(daemon_snapshot_delete(d, "d1", false, &o, &err), -EBUSY);
	assert_non_null(strstr(err.msg, "d2"));
	snprintf(path, sizeof(path), "%s/base/state", snaps);
	assert_int_equal(access(path, F_OK), 0);
	/* Unrelated snapshots delete as before. */
	assert_int_equal(daemon_snapshot_delete(d, "lone", false, &o, &err), 0);
	json_decref(o);
	/* Cascade: the diffs go first, then the parent; all three are reported. */
	assert_int_equal(daemon_snapshot_delete(d, "base", true, &o, &err), 0);
	assert_int_equal(json_array_size(json_object_get(o, "removed")), 3);
	json_decref(o);
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/%s", snaps, tags[i]);
		assert_int_not_equal(access(path, F_OK), 0);
	}
	daemon_close(d);
}

/*
 * Device accesses mark their pages while tracking is on (guest_mem.h): every
 * page of the range, in memory-file order (RAM above 4 GiB follows the low
 * part), and nothing when the range is refused or tracking is off.
 */
static void test_guest_mem_marks_device_pages(void **state)
{
	uint64_t size = GUEST_MMIO_HOLE_START + (8ull << 20), pages = size / 4096;
	uint64_t *bits = calloc((pages + 63) / 64, 8), low_pages = GUEST_MMIO_HOLE_START / 4096;
	struct guest_mem mem;
	struct fk_err err = {0};
	uint64_t n = 0;

	(void)state;
	assert_non_null(bits);
	assert_int_equal(guest_mem_init(&mem, GUEST_MEM_ANON, size, &err), 0);
	assert_non_null(guest_mem_ptr(&mem, 0x1000, 8)); /* not tracking: nothing to mark */
	mem.host_dirty = bits;
	assert_non_null(guest_mem_ptr(&mem, 0x1ff8, 16));		       /* pages 1 and 2 */
	assert_non_null(guest_mem_ptr(&mem, GUEST_MMIO_HOLE_END + 0x5000, 1)); /* high page 5 */
	assert_null(guest_mem_ptr(&mem, GUEST_MMIO_HOLE_START, 1));	       /* the hole */
	assert_int_equal(guest_mem_write(&mem, 0x10000, "x", 1), 0);	       /* page 16 */
	for (uint64_t w = 0; w < (pages + 63) / 64; w++)
		n += (uint64_t)__builtin_popcountll(bits[w]);
	assert_int_equal(n, 4);
	assert_true(bits[0] == ((1ull << 1) | (1ull << 2) | (1ull << 16)));
	assert_true((bits[(low_pages + 5) / 64] >> ((low_pages + 5) % 64)) & 1);
	mem.host_dirty = NULL;
	guest_mem_destroy(&mem);
	free(bits);
}

static bool bit(const uint64_t *bits, uint64_t page)
{
	return (bits[page / 64] >> (page % 64)) & 1;
}

/*
 * A device pops a chain, a snapshot collects (the bitmap is cleared), then the
 * device writes the buffer and pushes: the push marks the chain's writable
 * buffers and the used ring again, for the next diff; not the readable ones.
 */
static void test_virtq_push_marks_the_chain_again(void **state)
{
	uint64_t bits[(VG_RAM_SIZE / 4096 + 63) / 64] = {0};
	struct vg_queue q = vg_default_queue(8);
	struct virtq_chain *chain = calloc(1, sizeof(*chain));
	struct fk_err err = {0};
	struct guest_mem mem;
	struct virtq vq;

	(void)state;
	assert_non_null(chain);
	vg_mem_init(&mem);
	virtq_reset(&vq, 8);
	vq.desc_gpa = q.desc;
	vq.avail_gpa = q.avail;
	vq.used_gpa = q.used;
	vq.ready = true;
	vg_desc(&mem, &q, 0, 0x10000, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&mem, &q, 1, 0x11000, 8192, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 2);
	vg_desc(&mem, &q, 2, 0x14000, 1, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&mem, &q, 0);
	mem.host_dirty = bits;
	assert_int_equal(virtq_pop(&mem, &vq, chain, &err), 1);
	assert_true(bit(bits, 0x11) && bit(bits, 0x12) && bit(bits, 0x14));
	memset(bits, 0, sizeof(bits)); /* the snapshot's collect */
	assert_int_equal(virtq_push(&mem, &vq, chain->head, 8193, &err), 0);
	assert_true(bit(bits, 0x11) && bit(bits, 0x12) && bit(bits, 0x14));
	assert_true(bit(bits, VG_USED_GPA / 4096));
	assert_false(bit(bits, 0x10)); /* device-readable: the device did not write it */
	mem.host_dirty = NULL;
	guest_mem_destroy(&mem);
	free(chain);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_chain_overlays_and_compacts, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_writer_refuses, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_malformed_diff_sections, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_broken_chain_errors, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_daemon_refuses_deleting_a_diff_parent, setup,
					    teardown),
	    cmocka_unit_test(test_guest_mem_marks_device_pages),
	    cmocka_unit_test(test_virtq_push_marks_the_chain_again),
	};
	return cmocka_run_group_tests_name("diff snapshots (format)", tests, NULL, NULL);
}
