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

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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
		if (type == SNAP_SEC_VM_INFO)
			continue;
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

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_restore_continues_the_guest),
	    cmocka_unit_test(test_inflight_request_completes_after_restore),
	    cmocka_unit_test(test_eight_children_keep_their_own_disks),
	    cmocka_unit_test(test_damaged_snapshots_are_refused),
	    cmocka_unit_test(test_snapshot_from_another_cpu_is_refused),
	    cmocka_unit_test(test_forkd_spawn_and_kill),
	};
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("snapshots and restore", tests, setup, teardown);
}
