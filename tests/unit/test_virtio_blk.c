/* SPDX-License-Identifier: MIT */
/*
 * virtio-blk driven like a guest driver would, over a real temp file:
 * negotiation, queue setup, requests built in guest RAM, and every kind of
 * malformed request or ring the device must survive.
 */
#include "virtio_guest.h"

#include "devices/virtio_blk.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define DISK_SECTORS 64
#define DISK_SIZE    (DISK_SECTORS * 512)
#define DISK_ID	     "forkd-disk-0"
#define QNUM	     256

/* Where requests live in guest RAM. */
#define HDR_GPA		 0x10000ULL
#define DATA_GPA	 0x20000ULL
#define STATUS_GPA	 0x30000ULL
#define STATUS_UNTOUCHED 0xee

struct bfx {
	struct guest_mem mem;
	struct virtio_blk *blk;
	struct virtio_mmio t;
	struct vg_queue q;
	int irq;
	char path[64];
	uint8_t orig[DISK_SIZE];
	uint16_t used_seen;
};

/* A descriptor of a test chain. */
struct d {
	uint64_t addr;
	uint32_t len;
	bool w;
};

static void make_file(char *path, size_t path_size, const void *data, size_t len)
{
	int fd;

	snprintf(path, path_size, "/tmp/forkd-test-blk-XXXXXX");
	fd = mkstemp(path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, len), (ssize_t)len);
	close(fd);
}

static void bring_up(struct bfx *f)
{
	uint64_t offered = vg_device_features(&f->t);

	assert_true(vg_negotiate(&f->t, offered) & VIRTIO_STATUS_FEATURES_OK);
	vg_setup_queue(&f->t, &f->mem, 0, &f->q);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_READY), 1);
	vg_driver_ok(&f->t);
	f->used_seen = 0;
}

static int setup_disk(void **state, bool readonly)
{
	struct bfx *f = calloc(1, sizeof(*f));
	struct fk_err err;
	size_t i;

	assert_non_null(f);
	for (i = 0; i < DISK_SIZE; i++)
		f->orig[i] = (uint8_t)(i * 31 + (i >> 9));
	make_file(f->path, sizeof(f->path), f->orig, DISK_SIZE);
	vg_mem_init(&f->mem);
	assert_int_equal(virtio_blk_open(&f->blk, f->path, readonly, DISK_ID, &err), 0);
	f->irq = vg_irq_fd();
	assert_int_equal(virtio_mmio_init(&f->t, &virtio_blk_ops, f->blk, &f->mem,
					  vg_irq_line(f->irq), VG_MMIO_BASE, &err),
			 0);
	f->q = vg_default_queue(QNUM);
	bring_up(f);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_disk(state, false);
}

static int setup_ro(void **state)
{
	return setup_disk(state, true);
}

static int teardown(void **state)
{
	struct bfx *f = *state;

	virtio_mmio_destroy(&f->t);
	virtio_blk_close(f->blk);
	close(f->irq);
	unlink(f->path);
	guest_mem_destroy(&f->mem);
	free(f);
	return 0;
}

/* ---- building requests ---- */

static void put_hdr(struct bfx *f, uint64_t gpa, uint32_t type, uint64_t sector)
{
	uint8_t h[16] = {0};
	uint32_t t = htole32(type);
	uint64_t s = htole64(sector);

	memcpy(h, &t, 4);
	memcpy(h + 8, &s, 8);
	memcpy(vg_ptr(&f->mem, gpa, 16), h, 16);
}

/* Writes the chain at descriptors base.. and publishes it (no notify). */
static void publish_at(struct bfx *f, uint16_t base, const struct d *ds, int n)
{
	int i;

	for (i = 0; i < n; i++)
		vg_desc(&f->mem, &f->q, (uint16_t)(base + i), ds[i].addr, ds[i].len,
			(uint16_t)((ds[i].w ? VIRTQ_DESC_F_WRITE : 0) |
				   (i + 1 < n ? VIRTQ_DESC_F_NEXT : 0)),
			(uint16_t)(base + i + 1));
	vg_publish(&f->mem, &f->q, base);
}

/* Submits one chain, expects it completed; returns the used length. */
static uint32_t run(struct bfx *f, const struct d *ds, int n)
{
	uint32_t id, len;

	*vg_ptr(&f->mem, STATUS_GPA, 1) = STATUS_UNTOUCHED;
	publish_at(f, 0, ds, n);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), (uint16_t)(f->used_seen + 1));
	vg_used_elem(&f->mem, &f->q, f->used_seen, &id, &len);
	f->used_seen++;
	assert_int_equal(id, 0);
	assert_int_equal(vg_irqs(f->irq), 1);
	assert_false(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	return len;
}

static uint8_t status_byte(struct bfx *f)
{
	return *vg_ptr(&f->mem, STATUS_GPA, 1);
}

/* The usual 3-descriptor request: header, data of data_len bytes, status. */
static uint32_t run3(struct bfx *f, uint32_t type, uint64_t sector, uint32_t data_len, bool data_w)
{
	struct d ds[] = {{HDR_GPA, 16, false}, {DATA_GPA, data_len, data_w}, {STATUS_GPA, 1, true}};

	put_hdr(f, HDR_GPA, type, sector);
	return run(f, ds, 3);
}

static void assert_file_equals(struct bfx *f, const uint8_t *expect)
{
	uint8_t now[DISK_SIZE];
	int fd = open(f->path, O_RDONLY);
	struct stat st;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	assert_int_equal(st.st_size, DISK_SIZE);
	assert_int_equal(pread(fd, now, DISK_SIZE, 0), DISK_SIZE);
	close(fd);
	assert_memory_equal(now, expect, DISK_SIZE);
}

static void assert_file_unchanged(struct bfx *f)
{
	assert_file_equals(f, f->orig);
}

static void expect_ioerr(struct bfx *f, uint32_t used_len, const char *what)
{
	assert_int_equal(used_len, 1);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_IOERR);
	if (what && !strstr(f->t.last_error, what))
		fail_msg("last error \"%s\" does not mention \"%s\"", f->t.last_error, what);
}

/* ---- opening ---- */

static void expect_open_fails(const char *path, int code, const char *what)
{
	struct virtio_blk *blk = (struct virtio_blk *)1;
	struct fk_err err;

	assert_int_equal(virtio_blk_open(&blk, path, false, NULL, &err), -code);
	assert_null(blk);
	if (!strstr(err.msg, path) || !strstr(err.msg, what))
		fail_msg("error \"%s\" does not name %s and \"%s\"", err.msg, path, what);
}

static void test_open_errors(void **state)
{
	char path[64];
	uint8_t buf[600] = {0};
	struct virtio_blk *blk;
	struct fk_err err;

	(void)state;
	expect_open_fails("/nonexistent/forkd-disk.img", ENOENT, "No such file");
	expect_open_fails("/tmp", EINVAL, "not a regular file or block device");
	expect_open_fails("/dev/null", EINVAL, "not a regular file or block device");
	make_file(path, sizeof(path), buf, 0);
	expect_open_fails(path, EINVAL, "size 0 bytes");
	unlink(path);
	make_file(path, sizeof(path), buf, 511);
	expect_open_fails(path, EINVAL, "size 511 bytes");
	unlink(path);

	make_file(path, sizeof(path), buf, sizeof(buf));
	assert_int_equal(virtio_blk_open(&blk, path, false, "123456789012345678901", &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "longer than 20"));
	assert_int_equal(virtio_blk_open(&blk, "", false, NULL, &err), -EINVAL);
	/* 600 bytes: one whole sector; the 88-byte tail is not addressable. */
	assert_int_equal(virtio_blk_open(&blk, path, false, "12345678901234567890", &err), 0);
	assert_int_equal(virtio_blk_capacity(blk), 1);
	assert_false(virtio_blk_readonly(blk));
	virtio_blk_close(blk);
	unlink(path);
}

/* The access mode the device's fd for path was opened with, from /proc. */
static int open_mode_of(const char *path)
{
	char link[64], target[256], info[64], line[128];
	int fd, mode = -1;
	FILE *fi;
	ssize_t n;

	for (fd = 3; fd < 1024 && mode < 0; fd++) {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (strcmp(target, path))
			continue;
		snprintf(info, sizeof(info), "/proc/self/fdinfo/%d", fd);
		fi = fopen(info, "r");
		assert_non_null(fi);
		while (fgets(line, sizeof(line), fi))
			if (!strncmp(line, "flags:", 6))
				mode = (int)(strtol(line + 6, NULL, 8) & O_ACCMODE);
		fclose(fi);
	}
	return mode;
}

static void test_features_and_config(void **state)
{
	struct bfx *f = *state;
	uint64_t feat = vg_device_features(&f->t);
	uint64_t cap;
	uint32_t v;

	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_DEVICE_ID), VIRTIO_ID_BLOCK);
	assert_true(feat & (1ULL << VIRTIO_F_VERSION_1));
	assert_true(feat & (1ULL << VIRTIO_BLK_F_FLUSH));
	assert_true(feat & (1ULL << VIRTIO_BLK_F_SEG_MAX));
	assert_true(feat & (1ULL << VIRTIO_BLK_F_SIZE_MAX));
	assert_true(feat & (1ULL << VIRTIO_BLK_F_BLK_SIZE));
	assert_false(feat & (1ULL << VIRTIO_BLK_F_RO));
	assert_false(feat & (1ULL << 28)); /* INDIRECT_DESC */
	assert_false(feat & (1ULL << 29)); /* EVENT_IDX */
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_QUEUE_NUM_MAX), QNUM);

	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_CAPACITY,
				 (uint8_t *)&cap, 8);
	assert_int_equal(le64toh(cap), DISK_SECTORS);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_SEG_MAX),
			 VIRTIO_BLK_SEG_MAX);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_SIZE_MAX),
			 VIRTIO_BLK_SIZE_MAX);
	assert_int_equal(vg_read32(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_BLK_SIZE), 512);
	assert_int_equal(f->t.errors, 0);
	/* Past the config space, and writes to it: refused and counted. */
	v = vg_read32(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CONFIG_SIZE);
	assert_int_equal(v, 0);
	vg_write32(&f->t, VIRTIO_MMIO_CONFIG, 0);
	assert_int_equal(f->t.errors, 2);
	virtio_mmio_bus_ops.read(&f->t, VIRTIO_MMIO_CONFIG + VIRTIO_BLK_CFG_CAPACITY,
				 (uint8_t *)&cap, 8);
	assert_int_equal(le64toh(cap), DISK_SECTORS);
	assert_int_equal(open_mode_of(f->path), O_RDWR);
}

/* ---- requests that must work ---- */

static void test_read(void **state)
{
	struct bfx *f = *state;

	memset(vg_ptr(&f->mem, DATA_GPA, 1024), 0, 1024);
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, 3, 1024, true), 1025);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 1024), f->orig + 3 * 512, 1024);
	/* The last sector is readable. */
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, DISK_SECTORS - 1, 512, true), 513);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 512), f->orig + DISK_SIZE - 512, 512);
	assert_int_equal(f->t.errors, 0);
}

static void test_write_round_trip(void **state)
{
	struct bfx *f = *state;
	uint8_t expect[DISK_SIZE];
	struct virtio_blk_stats st;

	memcpy(expect, f->orig, DISK_SIZE);
	memset(vg_ptr(&f->mem, DATA_GPA, 512), 0x5a, 512);
	memset(expect + 5 * 512, 0x5a, 512);
	assert_int_equal(run3(f, VIRTIO_BLK_T_OUT, 5, 512, false), 1);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_file_equals(f, expect);

	memset(vg_ptr(&f->mem, DATA_GPA, 2048), 0, 2048);
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, 4, 2048, true), 2049);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 2048), expect + 4 * 512, 2048);

	assert_int_equal(run3(f, VIRTIO_BLK_T_FLUSH, 0, 0, false), 1);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	virtio_blk_get_stats(f->blk, &st);
	assert_int_equal(st.requests, 3);
	assert_int_equal(st.bad_requests + st.io_errors + st.unsupported, 0);
}

static void test_any_layout(void **state)
{
	struct bfx *f = *state;
	uint8_t expect[DISK_SIZE];
	uint8_t *a = vg_ptr(&f->mem, 0x40000, 512), *b = vg_ptr(&f->mem, 0x50000, 1024),
		*c = vg_ptr(&f->mem, 0x60000, 512), *in;
	/* Header split 10 + 6 across descriptors, data in three scattered pieces. */
	struct d out[] = {{HDR_GPA, 10, false},	  {HDR_GPA + 10, 6, false}, {0x40000, 512, false},
			  {0x50000, 1024, false}, {0x60000, 512, false},    {STATUS_GPA, 1, true}};
	/* Data and status sharing one writable descriptor. */
	struct d rd[] = {{HDR_GPA, 16, false}, {DATA_GPA, 2048 + 1, true}};

	memcpy(expect, f->orig, DISK_SIZE);
	memset(a, 1, 512);
	memset(b, 2, 1024);
	memset(c, 3, 512);
	memcpy(expect + 10 * 512, a, 512);
	memcpy(expect + 11 * 512, b, 1024);
	memcpy(expect + 13 * 512, c, 512);
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_OUT, 10);
	assert_int_equal(run(f, out, 6), 1);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_file_equals(f, expect);

	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_IN, 10);
	in = vg_ptr(&f->mem, DATA_GPA, 2049);
	memset(in, 0, 2049);
	assert_int_equal(run(f, rd, 2), 2049);
	assert_memory_equal(in, expect + 10 * 512, 2048);
	assert_int_equal(in[2048], VIRTIO_BLK_S_OK);
}

static void test_zero_length_descriptors(void **state)
{
	struct bfx *f = *state;
	struct d ds[] = {{HDR_GPA, 16, false}, {0x40000, 0, false},   {DATA_GPA, 512, true},
			 {0x40000, 0, true},   {STATUS_GPA, 1, true}, {0x40000, 0, true}};

	/* Empty descriptors carry nothing; the status is the last byte of the chain. */
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_IN, 7);
	assert_int_equal(run(f, ds, 6), 513);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 512), f->orig + 7 * 512, 512);
}

static void test_get_id(void **state)
{
	struct bfx *f = *state;
	uint8_t expect[VIRTIO_BLK_ID_BYTES] = DISK_ID;

	memset(vg_ptr(&f->mem, DATA_GPA, 64), 0xff, 64);
	assert_int_equal(run3(f, VIRTIO_BLK_T_GET_ID, 0, VIRTIO_BLK_ID_BYTES, true),
			 VIRTIO_BLK_ID_BYTES + 1);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, VIRTIO_BLK_ID_BYTES), expect,
			    VIRTIO_BLK_ID_BYTES);
	assert_int_equal(*vg_ptr(&f->mem, DATA_GPA + VIRTIO_BLK_ID_BYTES, 1), 0xff);
	/* A short buffer gets what fits, never more. */
	memset(vg_ptr(&f->mem, DATA_GPA, 64), 0xff, 64);
	assert_int_equal(run3(f, VIRTIO_BLK_T_GET_ID, 0, 4, true), 5);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 4), "fork", 4);
	assert_int_equal(*vg_ptr(&f->mem, DATA_GPA + 4, 1), 0xff);
}

static void test_unsupported_type(void **state)
{
	struct bfx *f = *state;
	uint32_t types[] = {2, 11, 13, 99, 0xffffffff};
	struct virtio_blk_stats st;
	size_t i;

	for (i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		assert_int_equal(run3(f, types[i], 0, 512, false), 1);
		assert_int_equal(status_byte(f), VIRTIO_BLK_S_UNSUPP);
	}
	assert_file_unchanged(f);
	virtio_blk_get_stats(f->blk, &st);
	assert_int_equal(st.unsupported, i);
}

static void test_several_chains_one_notify(void **state)
{
	struct bfx *f = *state;
	struct d r0[] = {{HDR_GPA, 16, false}, {DATA_GPA, 512, true}, {STATUS_GPA, 1, true}};
	struct d r1[] = {
	    {HDR_GPA + 16, 16, false}, {DATA_GPA + 512, 512, true}, {STATUS_GPA + 1, 1, true}};
	struct d r2[] = {{HDR_GPA + 32, 16, false}, {STATUS_GPA + 2, 1, true}};
	uint32_t id, len;

	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_IN, 1);
	put_hdr(f, HDR_GPA + 16, VIRTIO_BLK_T_IN, 2);
	put_hdr(f, HDR_GPA + 32, VIRTIO_BLK_T_FLUSH, 0);
	memset(vg_ptr(&f->mem, STATUS_GPA, 3), STATUS_UNTOUCHED, 3);
	publish_at(f, 10, r0, 3);
	publish_at(f, 20, r1, 3);
	publish_at(f, 30, r2, 2);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 3);
	vg_used_elem(&f->mem, &f->q, 0, &id, &len);
	assert_int_equal(id, 10);
	assert_int_equal(len, 513);
	vg_used_elem(&f->mem, &f->q, 1, &id, &len);
	assert_int_equal(id, 20);
	vg_used_elem(&f->mem, &f->q, 2, &id, &len);
	assert_int_equal(id, 30);
	assert_int_equal(len, 1);
	assert_memory_equal(vg_ptr(&f->mem, STATUS_GPA, 3), "\0\0\0", 3);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 1024), f->orig + 512, 1024);
	/* One interrupt for the batch. */
	assert_int_equal(vg_irqs(f->irq), 1);
}

static void test_readonly_disk(void **state)
{
	struct bfx *f = *state;
	uint64_t feat = vg_device_features(&f->t);

	assert_true(feat & (1ULL << VIRTIO_BLK_F_RO));
	assert_true(virtio_blk_readonly(f->blk));
	assert_int_equal(open_mode_of(f->path), O_RDONLY);
	memset(vg_ptr(&f->mem, DATA_GPA, 512), 0x77, 512);
	expect_ioerr(f, run3(f, VIRTIO_BLK_T_OUT, 0, 512, false), "read-only");
	assert_file_unchanged(f);
	/* Reads still work, and so does the queue. */
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, 1, 512, true), 513);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 512), f->orig + 512, 512);
}

/* ---- malformed requests: IOERR, the device carries on ---- */

static void test_sector_out_of_range(void **state)
{
	struct bfx *f = *state;
	/* Each wraps (sector * 512) or (sector + count) if computed naively. */
	uint64_t sectors[] = {DISK_SECTORS,
			      DISK_SECTORS - 1,
			      UINT64_MAX / 512 + 1,
			      UINT64_MAX / 512 + 2,
			      UINT64_MAX,
			      UINT64_MAX - 1,
			      1ULL << 63};
	size_t i;

	memset(vg_ptr(&f->mem, DATA_GPA, 1024), 0x33, 1024);
	for (i = 0; i < sizeof(sectors) / sizeof(sectors[0]); i++) {
		expect_ioerr(f, run3(f, VIRTIO_BLK_T_OUT, sectors[i], 1024, false), "capacity");
		expect_ioerr(f, run3(f, VIRTIO_BLK_T_IN, sectors[i], 1024, true), "capacity");
		/* A failed read leaves the guest buffer alone. */
		assert_int_equal(*vg_ptr(&f->mem, DATA_GPA, 1), 0x33);
	}
	assert_file_unchanged(f);
	/* Still serving. */
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, DISK_SECTORS - 2, 1024, true), 1025);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
}

static void test_partial_sector(void **state)
{
	struct bfx *f = *state;

	expect_ioerr(f, run3(f, VIRTIO_BLK_T_OUT, 0, 100, false), "multiple of 512");
	expect_ioerr(f, run3(f, VIRTIO_BLK_T_IN, 0, 513, true), "multiple of 512");
	assert_file_unchanged(f);
}

static void test_request_too_large(void **state)
{
	struct bfx *f = *state;
	struct d ds[QNUM];
	int i, n = 0;

	/* 254 data descriptors aliasing one buffer, one of them over SIZE_MAX. */
	ds[n++] = (struct d){HDR_GPA, 16, false};
	for (i = 0; i < VIRTIO_BLK_SEG_MAX; i++)
		ds[n++] = (struct d){0x80000, VIRTIO_BLK_SIZE_MAX + (i == 0 ? 512 : 0), false};
	ds[n++] = (struct d){STATUS_GPA, 1, true};
	assert_int_equal(n, QNUM);
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_OUT, 0);
	expect_ioerr(f, run(f, ds, n), "exceeds");
	assert_file_unchanged(f);
}

static void test_header_not_readable(void **state)
{
	struct bfx *f = *state;
	/* Header in a device-writable descriptor. */
	struct d w[] = {{HDR_GPA, 16, true}, {STATUS_GPA, 1, true}};
	/* Header too short (a longer readable stream would just be a split header). */
	struct d s[] = {{HDR_GPA, 8, false}, {STATUS_GPA, 1, true}};
	/* Header of length 0. */
	struct d z[] = {{HDR_GPA, 0, false}, {STATUS_GPA, 1, true}};

	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_FLUSH, 0);
	expect_ioerr(f, run(f, w, 2), "header");
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_OUT, 0);
	memset(vg_ptr(&f->mem, DATA_GPA, 512), 0x44, 512);
	expect_ioerr(f, run(f, s, 2), "header");
	expect_ioerr(f, run(f, z, 2), "header");
	assert_file_unchanged(f);
}

static void test_status_not_writable(void **state)
{
	struct bfx *f = *state;
	struct d ro[] = {{HDR_GPA, 16, false}, {DATA_GPA, 512, false}, {STATUS_GPA, 1, false}};
	struct d none[] = {{HDR_GPA, 16, false}, {DATA_GPA, 512, false}};
	struct d empty[] = {{HDR_GPA, 16, false}, {STATUS_GPA, 0, true}};
	struct virtio_blk_stats st;

	/* Nowhere to put a status: completed with nothing written, file untouched. */
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_OUT, 0);
	memset(vg_ptr(&f->mem, DATA_GPA, 512), 0x66, 512);
	assert_int_equal(run(f, ro, 3), 0);
	assert_int_equal(status_byte(f), STATUS_UNTOUCHED);
	assert_int_equal(run(f, none, 2), 0);
	assert_int_equal(run(f, empty, 2), 0);
	assert_int_equal(status_byte(f), STATUS_UNTOUCHED);
	assert_file_unchanged(f);
	assert_non_null(strstr(f->t.last_error, "no status"));
	virtio_blk_get_stats(f->blk, &st);
	assert_int_equal(st.bad_requests, 3);
	/* The device goes on. */
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, 0, 512, true), 513);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
}

static void test_wrong_data_direction(void **state)
{
	struct bfx *f = *state;
	/* Readable descriptor after a writable one. */
	struct d mixed[] = {{HDR_GPA, 16, false},
			    {DATA_GPA, 512, true},
			    {DATA_GPA + 512, 512, false},
			    {STATUS_GPA, 1, true}};

	memset(vg_ptr(&f->mem, DATA_GPA, 1024), 0x22, 1024);
	/* A write whose data the device may write: IOERR, file untouched. */
	expect_ioerr(f, run3(f, VIRTIO_BLK_T_OUT, 0, 512, true), "device-writable");
	/* A read whose buffer the device may only read: IOERR, buffer untouched. */
	expect_ioerr(f, run3(f, VIRTIO_BLK_T_IN, 0, 512, false), "device-readable");
	assert_int_equal(*vg_ptr(&f->mem, DATA_GPA, 1), 0x22);
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_IN, 0);
	expect_ioerr(f, run(f, mixed, 4), "after a writable");
	assert_int_equal(*vg_ptr(&f->mem, DATA_GPA, 1), 0x22);
	/* Flush and get-id carry no device-readable data either. */
	expect_ioerr(f, run3(f, VIRTIO_BLK_T_FLUSH, 0, 512, false), "flush");
	expect_ioerr(f, run3(f, VIRTIO_BLK_T_GET_ID, 0, 512, false), "get-id");
	assert_file_unchanged(f);
}

/* ---- malformed rings: needs reset, nothing touched, works after reset ---- */

static void expect_ring_break(struct bfx *f, const char *what)
{
	struct d good[] = {{HDR_GPA, 16, false}, {DATA_GPA, 512, false}, {STATUS_GPA, 1, true}};

	vg_notify(&f->t, 0);
	assert_true(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET);
	assert_true(vg_read32(&f->t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG);
	assert_int_equal(vg_irqs(f->irq), 1);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
	assert_int_equal(status_byte(f), STATUS_UNTOUCHED);
	if (!strstr(f->t.last_error, what))
		fail_msg("last error \"%s\" does not mention \"%s\"", f->t.last_error, what);
	assert_file_unchanged(f);

	/* Stopped: even a good write is not served. */
	put_hdr(f, HDR_GPA + 64, VIRTIO_BLK_T_OUT, 0);
	good[0].addr = HDR_GPA + 64;
	memset(vg_ptr(&f->mem, DATA_GPA, 512), 0x11, 512);
	publish_at(f, 40, good, 3);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
	assert_int_equal(vg_irqs(f->irq), 0);
	assert_file_unchanged(f);

	/* After a reset the device works again. */
	bring_up(f);
	assert_int_equal(vg_status(&f->t) & VIRTIO_STATUS_DEVICE_NEEDS_RESET, 0);
	assert_int_equal(run3(f, VIRTIO_BLK_T_IN, 2, 512, true), 513);
	assert_int_equal(status_byte(f), VIRTIO_BLK_S_OK);
	assert_memory_equal(vg_ptr(&f->mem, DATA_GPA, 512), f->orig + 1024, 512);
}

static void prepare_write(struct bfx *f)
{
	put_hdr(f, HDR_GPA, VIRTIO_BLK_T_OUT, 0);
	memset(vg_ptr(&f->mem, DATA_GPA, 512), 0x99, 512);
	*vg_ptr(&f->mem, STATUS_GPA, 1) = STATUS_UNTOUCHED;
}

static void test_ring_head_out_of_range(void **state)
{
	struct bfx *f = *state;

	prepare_write(f);
	vg_publish(&f->mem, &f->q, QNUM);
	expect_ring_break(f, "head index 256");
}

static void test_ring_next_out_of_range(void **state)
{
	struct bfx *f = *state;

	prepare_write(f);
	vg_desc(&f->mem, &f->q, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, DATA_GPA, 512, VIRTQ_DESC_F_NEXT, QNUM + 5);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_break(f, "next index 261");
}

static void test_ring_loop(void **state)
{
	struct bfx *f = *state;

	prepare_write(f);
	vg_desc(&f->mem, &f->q, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, DATA_GPA, 512, VIRTQ_DESC_F_NEXT, 2);
	vg_desc(&f->mem, &f->q, 2, STATUS_GPA, 1, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, 1);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_break(f, "loop");
}

static void test_ring_buffer_outside_ram(void **state)
{
	struct bfx *f = *state;

	prepare_write(f);
	vg_desc(&f->mem, &f->q, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, VG_RAM_SIZE - 256, 512, VIRTQ_DESC_F_NEXT, 2);
	vg_desc(&f->mem, &f->q, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_break(f, "outside guest RAM");
}

static void test_ring_buffer_overflow(void **state)
{
	struct bfx *f = *state;

	prepare_write(f);
	vg_desc(&f->mem, &f->q, 0, HDR_GPA, 16, VIRTQ_DESC_F_NEXT, 1);
	vg_desc(&f->mem, &f->q, 1, 0xffffffffffffff00ULL, 0x1000, VIRTQ_DESC_F_NEXT, 2);
	vg_desc(&f->mem, &f->q, 2, STATUS_GPA, 1, VIRTQ_DESC_F_WRITE, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_break(f, "outside guest RAM");
}

static void test_ring_indirect(void **state)
{
	struct bfx *f = *state;

	prepare_write(f);
	vg_desc(&f->mem, &f->q, 0, HDR_GPA, 16, VIRTQ_DESC_F_INDIRECT, 0);
	vg_publish(&f->mem, &f->q, 0);
	expect_ring_break(f, "INDIRECT");
}

static void test_ring_avail_jump(void **state)
{
	struct bfx *f = *state;
	struct d ds[] = {{HDR_GPA, 16, false}, {DATA_GPA, 512, false}, {STATUS_GPA, 1, true}};

	prepare_write(f);
	publish_at(f, 0, ds, 3);
	vg_set_avail_idx(&f->mem, &f->q, QNUM + 1);
	expect_ring_break(f, "ahead");
}

static void test_notify_before_driver_ok(void **state)
{
	struct bfx *f = *state;
	struct d ds[] = {{HDR_GPA, 16, false}, {DATA_GPA, 512, false}, {STATUS_GPA, 1, true}};

	assert_true(vg_negotiate(&f->t, vg_device_features(&f->t)) & VIRTIO_STATUS_FEATURES_OK);
	vg_setup_queue(&f->t, &f->mem, 0, &f->q);
	prepare_write(f);
	publish_at(f, 0, ds, 3);
	vg_notify(&f->t, 0);
	assert_int_equal(vg_used_idx(&f->mem, &f->q), 0);
	assert_int_equal(status_byte(f), STATUS_UNTOUCHED);
	assert_int_equal(vg_irqs(f->irq), 0);
	assert_file_unchanged(f);
	assert_int_equal(f->t.ignored_notifies, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn)	 cmocka_unit_test_setup_teardown(fn, setup, teardown)
#define T_RO(fn) cmocka_unit_test_setup_teardown(fn, setup_ro, teardown)
	    cmocka_unit_test(test_open_errors),
	    T(test_features_and_config),
	    T(test_read),
	    T(test_write_round_trip),
	    T(test_any_layout),
	    T(test_zero_length_descriptors),
	    T(test_get_id),
	    T(test_unsupported_type),
	    T(test_several_chains_one_notify),
	    T_RO(test_readonly_disk),
	    T(test_sector_out_of_range),
	    T(test_partial_sector),
	    T(test_request_too_large),
	    T(test_header_not_readable),
	    T(test_status_not_writable),
	    T(test_wrong_data_direction),
	    T(test_ring_head_out_of_range),
	    T(test_ring_next_out_of_range),
	    T(test_ring_loop),
	    T(test_ring_buffer_outside_ram),
	    T(test_ring_buffer_overflow),
	    T(test_ring_indirect),
	    T(test_ring_avail_jump),
	    T(test_notify_before_driver_ok),
#undef T
#undef T_RO
	};

	return cmocka_run_group_tests_name("virtio_blk", tests, NULL, NULL);
}
