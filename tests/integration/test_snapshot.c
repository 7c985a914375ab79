/* SPDX-License-Identifier: MIT */
/*
 * Snapshots and restore with the probe guest: the restored VM continues
 * (checked inside: its pattern verifies and its sequence continues, its clock
 * moved on, its generation ID changed), a virtio-blk request queued at the
 * snapshot completes after restore, eight children from one snapshot each
 * keep their own disk, and damaged or mismatched snapshots are refused.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include "harness.h"
#include "where.h"
#include "state/snapshot_format.h"

#define TIMEOUT_MS 30000

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "snap");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

static void path_in(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", dir, name);
}

static const char *need_line(struct vmm_proc *p, const char *prefix)
{
	const char *line = vmm_need_line(p, prefix, TIMEOUT_MS);

	assert_non_null(line);
	return line;
}

static unsigned long long value_u64(struct vmm_proc *p, const char *key)
{
	char buf[128];

	if (!vmm_value(p, key, buf, sizeof(buf))) {
		fprintf(stderr, "no value for %s\n", key);
		vmm_dump(p);
		fail();
	}
	return strtoull(buf, NULL, 10);
}

/* Sends a request and returns the reply, failing the test unless "ok" is as expected. */
static json_t *call(const char *sock, const char *req, bool want_ok)
{
	json_t *reply = harness_call_expect(sock, req, want_ok);

	assert_non_null(reply);
	return reply;
}

static void take_snapshot(const char *sock, const char *snap, json_t **out)
{
	char req[600];
	json_t *r;

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	r = call(sock, req, true);
	if (out)
		*out = r;
	else
		json_decref(r);
}

static void start_restore(struct vmm_proc *p, const char *snap, const char *sock,
			  const char *overlay)
{
	char *argv[12];
	int n = 0;

	argv[n++] = (char *)harness_vmm();
	argv[n++] = "--restore";
	argv[n++] = (char *)snap;
	if (sock) {
		argv[n++] = "--control";
		argv[n++] = (char *)sock;
	}
	if (overlay) {
		argv[n++] = "--overlay-dir";
		argv[n++] = (char *)overlay;
	}
	argv[n] = NULL;
	assert_int_equal(vmm_start(p, argv), 0);
}

static void test_restore_continues_the_guest(void **state)
{
	char sock[300], snap[300], genid_before[64] = "", genid_after[64] = "";
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--cpus",
			"3",
			"--mem",
			"256M",
			"--append",
			"work=pattern,pattern,stall pattern_mib=8 stall_us=1000",
			"--control",
			sock,
			NULL};
	unsigned long long seq_before, seq_after;
	struct vmm_proc parent, child;
	long long snap_at;
	bool host_tsc = where_kvm_kind() == KVM_PVM;

	(void)state;
	path_in(sock, sizeof(sock), "parent.sock");
	path_in(snap, sizeof(snap), "snap-pattern");
	assert_int_equal(vmm_start(&parent, argv), 0);
	need_line(&parent, "DONE");
	usleep(300 * 1000);
	vmm_send(&parent, "report\n");
	need_line(&parent, "report.end");
	seq_before = value_u64(&parent, "cpu0.pattern_seq");
	vmm_value(&parent, "genid", genid_before, sizeof(genid_before));
	take_snapshot(sock, snap, NULL);
	snap_at = now_ms();
	/* The source runs on after its snapshot. */
	vmm_send(&parent, "ping\n");
	need_line(&parent, "pong");
	call(sock, "{\"cmd\":\"shutdown\"}", true);
	assert_int_equal(vmm_wait(&parent, TIMEOUT_MS), 0);
	vmm_free(&parent);

	/* Let wall-clock time pass between the snapshot and the restore. */
	while (now_ms() - snap_at < 1000)
		usleep(50 * 1000);
	start_restore(&child, snap, NULL, NULL);
	/* The restored guest is past READY: it continues, it does not boot. */
	vmm_send(&child, "report\n");
	need_line(&child, "report.end");
	assert_null(vmm_wait_line(&child, "READY", 0));
	/* It resumes at the snapshot's sequence (never before it) ... */
	seq_after = value_u64(&child, "cpu0.pattern_seq");
	assert_true(seq_after >= seq_before);
	/*
	 * ... and writes on. cpu0 also serves the console, so its first report
	 * may come before its first new write: ask again until it moved (and,
	 * where the guest reads the host's TSC, until cpu2 has run and seen the
	 * gap: three vCPUs may share two host CPUs).
	 */
	for (int reports = 1; (seq_after <= seq_before ||
			       (host_tsc && value_u64(&child, "cpu2.stall_max_us") < 900000)) &&
			      reports < 100;
	     reports++) {
		usleep(100 * 1000);
		vmm_send(&child, "report\n");
		while (vmm_count_lines(&child, "report.end") <= reports &&
		       vmm_wait_line(&child, "\x01", 100) == NULL && !child.exited)
			;
		seq_after = value_u64(&child, "cpu0.pattern_seq");
	}
	if (seq_after <= seq_before) {
		fprintf(stderr, "seq before snapshot %llu, after restore %llu\n", seq_before,
			seq_after);
		vmm_dump(&child);
	}
	assert_true(seq_after > seq_before);
	/*
	 * Time across a restore: KVM restores the guest's IA32_TSC (and we the
	 * kvmclock), so the guest's TSC continues from the snapshot instant and
	 * the stall probe does not see the 1 s the VM spent on disk. Under
	 * KVM-PVM, CPL3 `rdtsc` reads the host's TSC directly, so there it does
	 * (docs/snapshot-format.md).
	 */
	if (host_tsc != (value_u64(&child, "cpu2.stall_max_us") >= 900000)) {
		vmm_dump(&child);
		fail_msg("stall probe after restore: max gap %llu us; expected %s 0.9 s (%s)",
			 value_u64(&child, "cpu2.stall_max_us"), host_tsc ? ">=" : "<",
			 host_tsc ? "KVM-PVM: the guest reads the host's TSC"
				  : "the guest's TSC continues from the snapshot");
	}
	/* Both writers' memory replays exactly from their sequences. */
	vmm_send(&child, "verify\n");
	need_line(&child, "cpu1.verify=");
	{
		char buf[32];
		assert_non_null(vmm_value(&child, "cpu0.verify", buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
		assert_non_null(vmm_value(&child, "cpu1.verify", buf, sizeof(buf)));
		assert_string_equal(buf, "ok");
	}
	/* A new generation ID, and the guest was told (genid.changed). */
	assert_true(genid_before[0] && strcmp(genid_before, "none") != 0);
	need_line(&child, "genid.changed=");
	vmm_send(&child, "genid\n");
	need_line(&child, "genid=");
	vmm_value(&child, "genid", genid_after, sizeof(genid_after));
	assert_string_not_equal(genid_after, genid_before);
	vmm_send(&child, "poweroff\n");
	assert_int_equal(vmm_wait(&child, TIMEOUT_MS), 0);
	vmm_free(&child);
}

static void make_disk(const char *path, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, (off_t)size), 0);
	close(fd);
}

/*
 * The guest queues a write without notifying the device (`blkq`), so the
 * snapshot holds a request the device has not taken; the restored VM must
 * complete it (into its own disk copy) and the guest must see it complete.
 */
static void test_inflight_request_completes_after_restore(void **state)
{
	char sock[300], snap[300], disk[300], overlay[300], img[400], buf[512];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--mem",
			"128M",
			"--append",
			"work=idle",
			"--disk",
			disk,
			"--control",
			sock,
			NULL};
	const char *text = "forkd-blkq queued-at-snapshot";
	struct vmm_proc parent, child;
	json_t *r;
	int fd;

	(void)state;
	path_in(sock, sizeof(sock), "inflight.sock");
	path_in(disk, sizeof(disk), "inflight.img");
	path_in(snap, sizeof(snap), "snap-inflight");
	path_in(overlay, sizeof(overlay), "inflight-overlay");
	make_disk(disk, 1 << 20);
	assert_int_equal(vmm_start(&parent, argv), 0);
	need_line(&parent, "DONE");
	vmm_send(&parent, "blkq 200 queued-at-snapshot\n");
	need_line(&parent, "blkq.posted sector=200");
	take_snapshot(sock, snap, &r);
	assert_int_equal(json_integer_value(json_object_get(r, "inflight")), 1);
	json_decref(r);
	call(sock, "{\"cmd\":\"shutdown\"}", true);
	assert_int_equal(vmm_wait(&parent, TIMEOUT_MS), 0);
	vmm_free(&parent);

	start_restore(&child, snap, NULL, overlay);
	vmm_send(&child, "blkq-wait\n");
	need_line(&child, "blkq.done status=0");
	/* The guest reads back what the queued request wrote ... */
	vmm_send(&child, "blkr 200\n");
	{
		const char *l = need_line(&child, "blkr.sector=200 status=0");
		assert_non_null(strstr(l, text));
	}
	vmm_send(&child, "poweroff\n");
	assert_int_equal(vmm_wait(&child, TIMEOUT_MS), 0);
	vmm_free(&child);
	/* ... it landed in the child's disk copy, and never in the parent's image. */
	snprintf(img, sizeof(img), "%s/disk0.img", overlay);
	fd = open(img, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, 512, 200 * 512), 512);
	close(fd);
	assert_memory_equal(buf, text, strlen(text));
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, buf, 512, 200 * 512), 512);
	close(fd);
	assert_int_equal(buf[0], 0);
}

#define NR_CHILDREN 8

static void test_eight_children_keep_their_own_disks(void **state)
{
	char sock[300], snap[300], disk[300], overlay[NR_CHILDREN][300];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--mem",
			"64M",
			"--append",
			"work=idle",
			"--disk",
			disk,
			"--control",
			sock,
			NULL};
	struct vmm_proc parent, child[NR_CHILDREN];
	char line[64], want[64], img[4096], buf[512];

	(void)state;
	path_in(sock, sizeof(sock), "fan.sock");
	path_in(snap, sizeof(snap), "snap-fan");
	path_in(disk, sizeof(disk), "fan.img");
	make_disk(disk, 1 << 20);
	assert_int_equal(vmm_start(&parent, argv), 0);
	need_line(&parent, "DONE");
	take_snapshot(sock, snap, NULL);

	for (int i = 0; i < NR_CHILDREN; i++) {
		char name[32];
		snprintf(name, sizeof(name), "overlay-%d", i);
		path_in(overlay[i], sizeof(overlay[i]), name);
		start_restore(&child[i], snap, NULL, overlay[i]);
	}
	/* Each child writes its own sector ... */
	for (int i = 0; i < NR_CHILDREN; i++) {
		snprintf(line, sizeof(line), "blkw %d child%d\n", 100 + i, i);
		vmm_send(&child[i], line);
	}
	for (int i = 0; i < NR_CHILDREN; i++) {
		snprintf(want, sizeof(want), "blkw.sector=%d status=0", 100 + i);
		need_line(&child[i], want);
	}
	/* ... and reads all eight: it sees only its own. */
	for (int i = 0; i < NR_CHILDREN; i++)
		for (int s = 0; s < NR_CHILDREN; s++) {
			snprintf(line, sizeof(line), "blkr %d\n", 100 + s);
			vmm_send(&child[i], line);
		}
	for (int i = 0; i < NR_CHILDREN; i++) {
		for (int s = 0; s < NR_CHILDREN; s++) {
			snprintf(want, sizeof(want), "blkr.sector=%d ", 100 + s);
			const char *l = need_line(&child[i], want);
			snprintf(want, sizeof(want), "text=forkd-blkw child%d", s);
			if (s == i)
				assert_non_null(strstr(l, want));
			else
				assert_null(strstr(l, "forkd-blkw"));
		}
		vmm_send(&child[i], "poweroff\n");
	}
	for (int i = 0; i < NR_CHILDREN; i++) {
		assert_int_equal(vmm_wait(&child[i], TIMEOUT_MS), 0);
		vmm_free(&child[i]);
	}
	/* Outside: each overlay holds its child's write only; the parent's image none. */
	for (int i = 0; i < NR_CHILDREN; i++) {
		snprintf(img, sizeof(img), "%s/disk0.img", overlay[i]);
		int fd = open(img, O_RDONLY);
		assert_true(fd >= 0);
		for (int s = 0; s < NR_CHILDREN; s++) {
			assert_int_equal(pread(fd, buf, 512, (100 + s) * 512), 512);
			snprintf(want, sizeof(want), "forkd-blkw child%d", s);
			assert_int_equal(memcmp(buf, want, strlen(want)) == 0, s == i);
		}
		close(fd);
	}
	{
		int fd = open(disk, O_RDONLY);
		for (int s = 0; s < NR_CHILDREN; s++) {
			assert_int_equal(pread(fd, buf, 512, (100 + s) * 512), 512);
			assert_int_equal(buf[0], 0);
		}
		close(fd);
	}
	call(sock, "{\"cmd\":\"shutdown\"}", true);
	assert_int_equal(vmm_wait(&parent, TIMEOUT_MS), 0);
	vmm_free(&parent);
}

/* ---- damaged and mismatched snapshots ---- */

static char good_snap[300], ro_disk[300];

static void copy_snapshot(const char *to)
{
	char cmd[2048];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r --sparse=always '%s' '%s'", to, good_snap,
		 to);
	assert_int_equal(system(cmd), 0);
}

static void make_good_snapshot(void)
{
	char sock[300], rw[300], rodisk[320];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--mem",
			"64M",
			"--append",
			"work=idle",
			"--disk",
			rw,
			"--disk",
			rodisk,
			"--control",
			sock,
			NULL};
	struct vmm_proc p;

	if (good_snap[0])
		return;
	path_in(sock, sizeof(sock), "good.sock");
	path_in(rw, sizeof(rw), "good-rw.img");
	path_in(ro_disk, sizeof(ro_disk), "good-ro.img");
	snprintf(rodisk, sizeof(rodisk), "%s,ro", ro_disk);
	make_disk(rw, 1 << 20);
	make_disk(ro_disk, 1 << 20);
	path_in(good_snap, sizeof(good_snap), "snap-good");
	assert_int_equal(vmm_start(&p, argv), 0);
	need_line(&p, "DONE");
	take_snapshot(sock, good_snap, NULL);
	call(sock, "{\"cmd\":\"shutdown\"}", true);
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);
}

/* Restores `snap` with extra args and expects exit 2, a message with both needles, no console. */
static void expect_refused(const char *snap, const char *needle1, const char *needle2, ...)
{
	char overlay[300];
	char *argv[16];
	struct vmm_proc p;
	struct stat st;
	va_list ap;
	int n = 0, status;

	path_in(overlay, sizeof(overlay), "refused-overlay");
	argv[n++] = (char *)harness_vmm();
	argv[n++] = "--restore";
	argv[n++] = (char *)snap;
	argv[n++] = "--overlay-dir";
	argv[n++] = overlay;
	va_start(ap, needle2);
	while (n < 15 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	status = vmm_run_to_exit(&p, argv, TIMEOUT_MS);
	if (status != 2 || !strstr(p.err_text, needle1) ||
	    (needle2 && !strstr(p.err_text, needle2)))
		vmm_dump(&p);
	assert_int_equal(status, 2);
	assert_non_null(strstr(p.err_text, needle1));
	if (needle2)
		assert_non_null(strstr(p.err_text, needle2));
	assert_int_equal(p.nr_lines, 0); /* the guest never ran */
	vmm_free(&p);
	/* Nothing partially started: no overlay left behind. */
	if (stat(overlay, &st) == 0) {
		char cmd[400];
		snprintf(cmd, sizeof(cmd), "rmdir '%s'", overlay);
		assert_int_equal(system(cmd), 0); /* fails unless it is empty */
	}
}

static void patch_file(const char *path, off_t off, const void *bytes, size_t len)
{
	int fd = open(path, O_WRONLY);

	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, bytes, len, off), (ssize_t)len);
	close(fd);
}

/* Recomputes the state file's checksum so a deliberate field change is what gets checked. */
static void reseal_state(const char *state_path)
{
	int fd = open(state_path, O_RDWR);
	struct stat st;
	uint8_t *buf;
	uint64_t sum;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size);
	assert_int_equal(pread(fd, buf, (size_t)st.st_size, 0), st.st_size);
	sum = XXH3_64bits(buf + SNAP_HDR_OFF_VERSION, (size_t)st.st_size - SNAP_HDR_OFF_VERSION);
	assert_int_equal(pwrite(fd, &sum, 8, SNAP_HDR_OFF_CHECKSUM), 8);
	free(buf);
	close(fd);
}

static void test_damaged_snapshots_are_refused(void **state)
{
	char snap[300], file[400];
	uint32_t v;

	(void)state;
	make_good_snapshot();
	path_in(snap, sizeof(snap), "snap-bad");

	copy_snapshot(snap);
	snprintf(file, sizeof(file), "%s/state", snap);
	patch_file(file, 0, "XXXXXXXX", 8);
	expect_refused(snap, file, "magic", NULL);

	copy_snapshot(snap);
	v = 99;
	patch_file(file, SNAP_HDR_OFF_VERSION, &v, 4);
	reseal_state(file);
	expect_refused(snap, file, "version 99", NULL);

	copy_snapshot(snap);
	{
		struct stat st;
		stat(file, &st);
		patch_file(file, st.st_size - 100, "\xff\xfe\xfd", 3);
	}
	expect_refused(snap, file, "checksum", NULL);

	copy_snapshot(snap);
	assert_int_equal(truncate(file, 1000), 0);
	expect_refused(snap, file, NULL, NULL);

	copy_snapshot(snap);
	snprintf(file, sizeof(file), "%s/memory", snap);
	assert_int_equal(truncate(file, (64 << 20) - 4096), 0);
	expect_refused(snap, file, NULL, NULL);

	copy_snapshot(snap);
	expect_refused(snap, "--mem 128 MiB does not match the snapshot's 64 MiB", NULL, "--mem",
		       "128M", NULL);
	expect_refused(snap, "--cpus 2 does not match", NULL, "--cpus", "2", NULL);

	/* The writable disk's copy inside the snapshot is gone. */
	copy_snapshot(snap);
	snprintf(file, sizeof(file), "%s/disk0.img", snap);
	assert_int_equal(unlink(file), 0);
	expect_refused(snap, file, "No such file", NULL);

	/* The read-only disk the snapshot refers to is gone. */
	copy_snapshot(snap);
	snprintf(file, sizeof(file), "%s.moved", ro_disk);
	assert_int_equal(rename(ro_disk, file), 0);
	expect_refused(snap, ro_disk, "No such file", NULL);
	assert_int_equal(rename(file, ro_disk), 0);

	expect_refused("/nonexistent/snapshot", "/nonexistent/snapshot", NULL, NULL);
}

/* Rewrites the snapshot with a CPU identity claiming a feature this host lacks. */
static void test_snapshot_from_another_cpu_is_refused(void **state)
{
	char snap[300];
	struct snap_reader *r;
	struct snap_writer w;
	struct fk_err err = {0};
	const struct snap_vm_info *info;
	struct snap_mem_region regions[2];
	struct snap_memory_source src;
	uint8_t *mem;

	(void)state;
	make_good_snapshot();
	path_in(snap, sizeof(snap), "snap-othercpu");
	assert_int_equal(snap_reader_open(good_snap, &r, &err), 0);
	info = snap_reader_vm_info(r);
	snap_writer_init(&w, info->nr_vcpus);
	for (uint32_t i = 0; i < snap_reader_nr_sections(r); i++) {
		uint32_t type, instance;
		const void *data;
		size_t len;
		snap_reader_section(r, i, &type, &instance, &data, &len);
		if (type == SNAP_SEC_VM_INFO || type == SNAP_SEC_MEM_HASHES)
			continue; /* commit writes these */
		if (type == SNAP_SEC_CPU_IDENTITY) {
			struct snap_cpu_identity id;
			uint8_t *buf;
			size_t blen;
			assert_int_equal(snap_cpu_identity_decode(data, len, &id, &err), 0);
			id.host.leaf7_edx = 0xffffffff; /* every leaf-7 EDX feature */
			id.host.leaf7_ecx = 0xffffffff;
			assert_int_equal(snap_cpu_identity_encode(&id, &buf, &blen, &err), 0);
			assert_int_equal(snap_writer_add(&w, type, instance, buf, blen, &err), 0);
			free(buf);
			snap_cpu_identity_free(&id);
		} else if (type == SNAP_SEC_DEVICE) {
			/* Raw re-add: the payload already carries the device type prefix. */
			assert_int_equal(snap_writer_add(&w, type, instance, data, len, &err), 0);
		} else {
			assert_int_equal(snap_writer_add(&w, type, instance, data, len, &err), 0);
		}
	}
	mem = mmap(NULL, info->mem_size, PROT_READ, MAP_PRIVATE, snap_reader_memory_fd(r), 0);
	assert_true(mem != MAP_FAILED);
	for (uint32_t i = 0; i < info->nr_regions; i++)
		regions[i] = (struct snap_mem_region){.gpa = info->regions[i].gpa,
						      .size = info->regions[i].size,
						      .host = mem + info->regions[i].file_offset};
	src = (struct snap_memory_source){.regions = regions, .nr_regions = info->nr_regions};
	{
		char disk_copy[400];
		snprintf(disk_copy, sizeof(disk_copy), "%s/disk0.img", good_snap);
		int dfd = open(disk_copy, O_RDONLY);
		assert_true(dfd >= 0);
		assert_int_equal(snap_writer_add_file(&w, "disk0.img", dfd, &err), 0);
		if (snap_writer_commit(&w, snap, &src, &err) < 0)
			fail_msg("%s", err.msg);
		close(dfd);
	}
	snap_writer_free(&w);
	munmap(mem, info->mem_size);
	snap_reader_close(r);
	expect_refused(snap, snap, "CPU", NULL);
}

/* forkd spawn: N restored children, each reported running and answering its console. */
static void test_forkd_spawn_and_kill(void **state)
{
	char out[300], forkd[400], cmd[2048], path[600], line[600];
	FILE *f;
	int running = 0;

	(void)state;
	make_good_snapshot();
	path_in(out, sizeof(out), "spawned");
	snprintf(forkd, sizeof(forkd), "%s/forkd",
		 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build");
	snprintf(cmd, sizeof(cmd), "'%s' spawn '%s' -n 3 --out '%s' --vmm '%s'", forkd, good_snap,
		 out, harness_vmm());
	f = popen(cmd, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		if (strstr(line, "\"running_ms\""))
			running++;
	}
	assert_int_equal(pclose(f), 0);
	assert_int_equal(running, 3);
	for (int i = 0; i < 3; i++) {
		snprintf(path, sizeof(path), "%s/child-%d/serial.in", out, i);
		assert_int_equal(fifo_send(path, "ping\n"), 0);
		snprintf(path, sizeof(path), "%s/child-%d/serial.log", out, i);
		char *l = file_wait_line(path, "pong", 0, TIMEOUT_MS);
		assert_non_null(l);
		free(l);
	}
	/* Spawning into the same directory again is refused. */
	assert_int_equal(WEXITSTATUS(system(cmd)), 2);
	snprintf(cmd, sizeof(cmd), "'%s' kill '%s' >/dev/null", forkd, out);
	assert_int_equal(system(cmd), 0);
}

/* ---- live snapshots, integrity, and what a failed or killed writer leaves ---- */

static const char *str_of(json_t *o, const char *key)
{
	const char *v = json_string_value(json_object_get(o, key));

	if (!v)
		fail_msg("reply has no string \"%s\"", key);
	return v;
}

static long long int_of(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	if (!json_is_integer(v))
		fail_msg("reply has no integer \"%s\"", key);
	return json_integer_value(v);
}

/* Entries of `in` named `name.tmp-*` (a writer's temp dirs). */
static int count_tmp_dirs(const char *in, const char *name)
{
	char prefix[300];
	DIR *d = opendir(in);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	snprintf(prefix, sizeof(prefix), "%s.tmp-", name);
	while ((e = readdir(d)))
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0)
			n++;
	closedir(d);
	return n;
}

static bool path_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

/* How many of name's temp dirs in `in` hold their writer's record (SNAP_WRITER_FILE). */
static int count_marked_tmp_dirs(const char *in, const char *name)
{
	char prefix[300], path[1200];
	DIR *d = opendir(in);
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	snprintf(prefix, sizeof(prefix), "%s.tmp-", name);
	while ((e = readdir(d))) {
		snprintf(path, sizeof(path), "%s/%s/writer", in, e->d_name);
		if (strncmp(e->d_name, prefix, strlen(prefix)) == 0 && path_exists(path))
			n++;
	}
	closedir(d);
	return n;
}

/* A live snapshot's zygote and its branch directory go once the snapshot is written. */
static void expect_no_writer_left(const char *sock, pid_t source)
{
	char path[300];
	json_t *r = call(sock, "{\"cmd\":\"zygote\",\"action\":\"list\"}", true);

	assert_int_equal(json_array_size(json_object_get(r, "zygotes")), 0);
	json_decref(r);
	snprintf(path, sizeof(path), "%s/forkd-branch-%d-1",
		 getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)source);
	assert_false(path_exists(path));
}

static void restore_verify_strict(const char *snap, int writers)
{
	char sock[300], want[64], buf[32];
	char *argv[] = {(char *)harness_vmm(), "--restore", (char *)snap, "--control", sock, NULL};
	struct vmm_proc p;

	path_in(sock, sizeof(sock), "strict.sock");
	assert_int_equal(vmm_start(&p, argv), 0);
	need_line(&p, "pattern.frozen=1");
	vmm_send(&p, "verify strict\n");
	for (int i = 0; i < writers; i++) {
		snprintf(want, sizeof(want), "cpu%d.verify=", i);
		const char *l = need_line(&p, want);
		snprintf(want, sizeof(want), "cpu%d.verify", i);
		assert_non_null(vmm_value(&p, want, buf, sizeof(buf)));
		if (strcmp(buf, "ok") != 0 || !strstr(l, "mode=strict")) {
			vmm_dump(&p);
			fail_msg("restored %s: %s", snap, l);
		}
	}
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&p, TIMEOUT_MS), 0);
	vmm_free(&p);
}

static void start_pattern_source(struct vmm_proc *p, const char *sock, const char *mem,
				 const char *append)
{
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			(char *)harness_probe(),
			"--cpus",
			"2",
			"--mem",
			(char *)mem,
			"--append",
			(char *)append,
			"--control",
			(char *)sock,
			NULL};

	assert_int_equal(vmm_start(p, argv), 0);
	need_line(p, "DONE");
	usleep(200 * 1000);
}

static void stop_vm(struct vmm_proc *p, const char *sock)
{
	json_decref(call(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(p, TIMEOUT_MS), 0);
	vmm_free(p);
}

static char live_snap[300];

/*
 * Under a write-heavy pattern, a live snapshot pauses the VM only for the
 * BRANCH pause, is written while the guest writes on, and restores to a
 * guest whose memory is exactly one instant (strict verify, inside).
 */
static void test_live_snapshot_under_write_load(void **state)
{
	char sock[300], snap2[300], req[700];
	struct vmm_proc p;
	unsigned long long seq0, seq1;
	json_t *r;

	(void)state;
	path_in(sock, sizeof(sock), "live.sock");
	path_in(live_snap, sizeof(live_snap), "snap-live");
	path_in(snap2, sizeof(snap2), "snap-live-nowait");
	start_pattern_source(&p, sock, "256M",
			     "work=pattern,pattern pattern_mib=64 pattern_freeze=genid");
	vmm_send(&p, "report\n");
	need_line(&p, "report.end");
	seq0 = value_u64(&p, "cpu0.pattern_seq");

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", live_snap);
	r = call(sock, req, true);
	assert_string_equal(str_of(r, "mode"), "live");
	assert_string_equal(str_of(r, "snapshot"), "ready");
	assert_string_equal(str_of(r, "state"), "running");
	/* The VM's pause is reported, and it is the BRANCH pause: not the write. */
	assert_true(int_of(r, "pause_us") > 0);
	assert_true(int_of(r, "park_us") > 0 && int_of(r, "fork_us") > 0);
	assert_true(int_of(r, "write_us") > int_of(r, "pause_us"));
	assert_true(int_of(r, "hash_us") > 0);
	fprintf(
	    stderr,
	    "live snapshot of 256 MiB under write load: pause %lld us (park %lld, capture %lld, "
	    "fork %lld), written in %lld us (hashing %lld us)\n",
	    int_of(r, "pause_us"), int_of(r, "park_us"), int_of(r, "capture_us"),
	    int_of(r, "fork_us"), int_of(r, "write_us"), int_of(r, "hash_us"));
	json_decref(r);
	expect_no_writer_left(sock, p.pid);

	/* wait:false answers at once with "writing"; snapshot-status follows it to ready. */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"wait\":false}", snap2);
	r = call(sock, req, true);
	assert_string_equal(str_of(r, "snapshot"), "writing");
	assert_false(path_exists(snap2)); /* only under its temporary name while written */
	json_decref(r);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap2);
	for (long long end = harness_deadline(TIMEOUT_MS);;) {
		r = call(sock, req, true);
		if (strcmp(str_of(r, "snapshot"), "writing") != 0 || now_ms() > end)
			break;
		json_decref(r);
		usleep(50 * 1000);
	}
	assert_string_equal(str_of(r, "snapshot"), "ready");
	assert_true(int_of(r, "write_us") > 0);
	json_decref(r);
	assert_true(path_exists(snap2));

	/* The source wrote on throughout, and its own memory is intact. */
	vmm_send(&p, "report\n");
	while (vmm_count_lines(&p, "report.end") < 2 && vmm_wait_line(&p, "\x01", 100) == NULL &&
	       !p.exited)
		;
	seq1 = value_u64(&p, "cpu0.pattern_seq");
	assert_true(seq1 > seq0);
	vmm_send(&p, "verify\n");
	need_line(&p, "cpu1.verify=");
	stop_vm(&p, sock);

	restore_verify_strict(live_snap, 2);
	restore_verify_strict(snap2, 2);
}

static int run_forkd(char *out, size_t len, const char *args)
{
	char cmd[1200];
	FILE *f;
	size_t n = 0;
	int status;

	snprintf(cmd, sizeof(cmd), "'%s/forkd' %s 2>&1",
		 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build", args);
	f = popen(cmd, "r");
	assert_non_null(f);
	while (n + 1 < len && fgets(out + n, (int)(len - n), f))
		n += strlen(out + n);
	out[n] = '\0';
	status = pclose(f);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Start and length of the longest run of data in `path` (the pattern writers' memory). */
static void longest_data_extent(const char *path, off_t *start, off_t *len)
{
	int fd = open(path, O_RDONLY);
	off_t at = 0, end, size;

	assert_true(fd >= 0);
	size = lseek(fd, 0, SEEK_END);
	*start = *len = 0;
	while (at < size && (at = lseek(fd, at, SEEK_DATA)) >= 0) {
		end = lseek(fd, at, SEEK_HOLE);
		if (end - at > *len) {
			*start = at;
			*len = end - at;
		}
		at = end;
	}
	close(fd);
	assert_true(*len >= (off_t)(4 << 20));
}

/*
 * One flipped bit in the memory file: `forkd snapshot verify` and
 * `--restore --verify` name its chunk; a restore without --verify does not
 * read the memory file up front and starts (docs/snapshot-format.md).
 */
static void test_corrupt_chunk_is_named(void **state)
{
	char snap[300], mem[400], out[2048], args[1200], want[120], sock[300];
	char *plain[] = {(char *)harness_vmm(), "--restore", snap, "--control", sock, NULL};
	off_t start, len, flip;
	struct vmm_proc p;
	uint8_t b;
	int fd;

	(void)state;
	assert_true(live_snap[0]); /* from test_live_snapshot_under_write_load */
	path_in(snap, sizeof(snap), "snap-corrupt");
	path_in(sock, sizeof(sock), "corrupt.sock");
	snprintf(args, sizeof(args), "rm -rf '%s' && cp -r --sparse=always '%s' '%s'", snap,
		 live_snap, snap);
	assert_int_equal(system(args), 0);

	snprintf(args, sizeof(args), "snapshot verify '%s'", snap);
	if (run_forkd(out, sizeof(out), args) != 0)
		fail_msg("a good snapshot does not verify: %s", out);
	assert_non_null(strstr(out, ": ok:"));

	snprintf(mem, sizeof(mem), "%s/memory", snap);
	longest_data_extent(mem, &start, &len);
	/* Mid-page of a pattern page: the writers only use each page's first 16 bytes. */
	flip = (start + len / 2) / 4096 * 4096 + 2048;
	fd = open(mem, O_RDWR);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &b, 1, flip), 1);
	b ^= 0x08;
	assert_int_equal(pwrite(fd, &b, 1, flip), 1);
	close(fd);
	snprintf(want, sizeof(want), "chunk %lld at offset %lld", (long long)(flip >> 20),
		 (long long)(flip >> 20 << 20));

	assert_int_equal(run_forkd(out, sizeof(out), args), 1);
	if (!strstr(out, want) || !strstr(out, mem) || !strstr(out, "1 of 256 chunks"))
		fail_msg("forkd snapshot verify: expected '%s' and %s in: %s", want, mem, out);
	snprintf(args, sizeof(args), "snapshot verify --json '%s'", snap);
	assert_int_equal(run_forkd(out, sizeof(out), args), 1);
	{
		json_t *j = json_loads(out, 0, NULL);
		assert_non_null(j);
		assert_false(json_is_true(json_object_get(j, "ok")));
		assert_int_equal(int_of(j, "first_bad_offset"), flip >> 20 << 20);
		assert_int_equal(int_of(j, "bad_chunks"), 1);
		json_decref(j);
	}

	expect_refused(snap, want, "--verify", "--verify", NULL);

	/* Without --verify nothing reads the memory file first: the VM starts (on bad data). */
	assert_int_equal(vmm_start(&p, plain), 0);
	need_line(&p, "pattern.frozen=1");
	vmm_send(&p, "ping\n");
	need_line(&p, "pong");
	stop_vm(&p, sock);
}

/* A private mount namespace with a 64 MiB tmpfs at `at`: ENOSPC on demand. */
static void mount_small_tmpfs(const char *at)
{
	assert_int_equal(unshare(CLONE_NEWNS), 0);
	assert_int_equal(mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), 0);
	assert_int_equal(mkdir(at, 0700), 0);
	if (mount("forkd-enospc", at, "tmpfs", 0, "size=64m") < 0)
		fail_msg("mount tmpfs at %s: %s", at, strerror(errno));
}

static uint64_t used_bytes(const char *at)
{
	struct statvfs v;

	assert_int_equal(statvfs(at, &v), 0);
	return (uint64_t)(v.f_blocks - v.f_bfree) * v.f_frsize;
}

/*
 * 96 MiB of non-zero guest memory into a 64 MiB filesystem, live and
 * stop-and-save: a clear error naming the file and the size needed, nothing
 * renamed into place, no temp dir and no space left behind.
 */
static void test_enospc_leaves_nothing(void **state)
{
	const char *modes[] = {"live", "stop"};
	char small[300], sock[300], snap[400], req[1000];
	struct vmm_proc p;

	(void)state;
	path_in(small, sizeof(small), "small");
	path_in(sock, sizeof(sock), "enospc.sock");
	mount_small_tmpfs(small);
	start_pattern_source(&p, sock, "256M", "work=pattern,pattern pattern_mib=48");
	for (int m = 0; m < 2; m++) {
		json_t *r;
		const char *e;

		snprintf(snap, sizeof(snap), "%s/full-%s", small, modes[m]);
		snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"mode\":\"%s\"}",
			 snap, modes[m]);
		r = call(sock, req, false);
		e = str_of(r, "error");
		fprintf(stderr, "%s: %s\n", modes[m], e);
		if (!strstr(e, "No space left on device") || !strstr(e, "/memory") ||
		    !strstr(e, snap) || !strstr(e, "the snapshot needs") || !strstr(e, "MiB free"))
			fail_msg("%s snapshot into a full filesystem: %s", modes[m], e);
		json_decref(r);
		assert_false(path_exists(snap));
		assert_int_equal(count_tmp_dirs(small, m ? "full-stop" : "full-live"), 0);
		assert_true(used_bytes(small) < (1 << 20));
		if (m == 0) {
			snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}",
				 snap);
			r = call(sock, req, true);
			assert_string_equal(str_of(r, "snapshot"), "failed");
			json_decref(r);
			expect_no_writer_left(sock, p.pid);
		}
	}
	/* The VM runs on unharmed. */
	vmm_send(&p, "ping\n");
	need_line(&p, "pong");
	stop_vm(&p, sock);
	assert_int_equal(umount(small), 0);
}

/*
 * A writer killed with -9 mid-write: the source sees its zygote die and
 * removes the temp dir; a stop-and-save writer (the VMM itself) killed with
 * -9 leaves one, which the next snapshot written there removes.
 */
static void test_killed_writer_leaves_no_temp_dir(void **state)
{
	char sock[300], snap[400], req[1000], in[300];
	struct vmm_proc p;
	json_t *r;
	int zpid;

	(void)state;
	path_in(in, sizeof(in), "killed");
	assert_int_equal(mkdir(in, 0700), 0);
	path_in(sock, sizeof(sock), "killed.sock");
	snprintf(snap, sizeof(snap), "%s/k", in);
	setenv("FORKD_FAULT_INJECT", "snapshot-slow", 1); /* 3 s between mkdtemp and the write */
	start_pattern_source(&p, sock, "128M", "work=pattern pattern_mib=16");
	unsetenv("FORKD_FAULT_INJECT");

	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"wait\":false}", snap);
	r = call(sock, req, true);
	zpid = (int)int_of(r, "zygote_pid");
	json_decref(r);
	/*
	 * Killed while it waits (the fault hook's 3 s) with its record written:
	 * a dir with no record yet is one being created, which nobody removes.
	 */
	for (long long end = harness_deadline(10000);
	     count_marked_tmp_dirs(in, "k") == 0 && now_ms() < end;)
		usleep(10 * 1000);
	assert_int_equal(count_tmp_dirs(in, "k"), 1);
	assert_int_equal(count_marked_tmp_dirs(in, "k"), 1);
	assert_int_equal(kill(zpid, SIGKILL), 0);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot-status\",\"path\":\"%s\"}", snap);
	for (long long end = harness_deadline(10000);;) {
		r = call(sock, req, true);
		if (strcmp(str_of(r, "snapshot"), "writing") != 0 || now_ms() > end)
			break;
		json_decref(r);
		usleep(20 * 1000);
	}
	assert_string_equal(str_of(r, "snapshot"), "failed");
	assert_non_null(strstr(str_of(r, "error"), "exited before it was complete"));
	json_decref(r);
	assert_int_equal(count_tmp_dirs(in, "k"), 0);
	assert_false(path_exists(snap));
	expect_no_writer_left(sock, p.pid);

	/* Stop-and-save: the VMM writes, and nobody is left to clean up after its kill -9. */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\",\"mode\":\"stop\"}",
		 snap);
	{
		char err_buf[256];
		pid_t caller = fork();
		assert_true(caller >= 0);
		if (caller == 0) {
			json_t *ignored = harness_call(sock, req, err_buf, sizeof(err_buf));
			(void)ignored;
			_exit(0);
		}
		for (long long end = harness_deadline(10000);
		     count_tmp_dirs(in, "k") == 0 && now_ms() < end;)
			usleep(10 * 1000);
		assert_int_equal(count_tmp_dirs(in, "k"), 1);
		vmm_kill(&p);
		waitpid(caller, NULL, 0);
	}
	vmm_free(&p);
	assert_int_equal(count_tmp_dirs(in, "k"), 1);

	/* The next writer into that directory removes it; a different name, so no clash. */
	start_pattern_source(&p, sock, "128M", "work=pattern pattern_mib=16");
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s/next\"}", in);
	json_decref(call(sock, req, true));
	assert_int_equal(count_tmp_dirs(in, "k"), 0);
	stop_vm(&p, sock);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_restore_continues_the_guest),
	    cmocka_unit_test(test_inflight_request_completes_after_restore),
	    cmocka_unit_test(test_eight_children_keep_their_own_disks),
	    cmocka_unit_test(test_damaged_snapshots_are_refused),
	    cmocka_unit_test(test_snapshot_from_another_cpu_is_refused),
	    cmocka_unit_test(test_forkd_spawn_and_kill),
	    cmocka_unit_test(test_live_snapshot_under_write_load),
	    cmocka_unit_test(test_corrupt_chunk_is_named),
	    cmocka_unit_test(test_killed_writer_leaves_no_temp_dir),
	    /* Last: it moves this process into its own mount namespace. */
	    cmocka_unit_test(test_enospc_leaves_nothing),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("snapshots and restore", tests, setup, teardown);
}
