/* SPDX-License-Identifier: MIT */
/*
 * forkd-vmm driven through the probe guest (guest/probe): SMP bring-up,
 * memory sizes, workloads, virtio-blk, a hostile guest, and shutdown. Every
 * check is made on what the guest reports from inside and on what the host
 * sees outside (exit status, disk contents).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <unistd.h>

#include "harness.h"

#define BOOT_TIMEOUT_MS 20000
#define RUN_TIMEOUT_MS	120000

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "probe");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

/* Starts the probe: vmm may be NULL for the default build; extra args NULL-terminated. */
static void start_probe(struct vmm_proc *p, const char *vmm, const char *mem, const char *cpus,
			const char *append, ...)
{
	char *argv[40];
	va_list ap;
	int n = 0;

	argv[n++] = (char *)(vmm ? vmm : harness_vmm());
	argv[n++] = "--kernel";
	argv[n++] = (char *)harness_probe();
	argv[n++] = "--mem";
	argv[n++] = (char *)mem;
	argv[n++] = "--cpus";
	argv[n++] = (char *)cpus;
	argv[n++] = "--append";
	argv[n++] = (char *)append;
	va_start(ap, append);
	while (n < 39 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	assert_int_equal(vmm_start(p, argv), 0);
}

static const char *need_line(struct vmm_proc *p, const char *prefix, int timeout_ms)
{
	const char *line = vmm_need_line(p, prefix, timeout_ms);

	assert_non_null(line);
	return line;
}

static void expect_kv(struct vmm_proc *p, const char *key, const char *want)
{
	char buf[256];
	const char *got = vmm_value(p, key, buf, sizeof(buf));

	if (!got || strcmp(got, want) != 0) {
		fprintf(stderr, "%s: want '%s', got '%s'\n", key, want, got ? got : "(none)");
		vmm_dump(p);
	}
	assert_non_null(got);
	assert_string_equal(got, want);
}

static void expect_exit(struct vmm_proc *p, int want, int timeout_ms)
{
	int status = vmm_wait(p, timeout_ms);

	if (status != want)
		vmm_dump(p);
	assert_int_equal(status, want);
}

static void boot_and_check_cpus(int cpus)
{
	char ncpu[8], want[64], key[32];
	struct vmm_proc p;

	snprintf(ncpu, sizeof(ncpu), "%d", cpus);
	start_probe(&p, NULL, "256M", ncpu, "work=idle", NULL);
	snprintf(want, sizeof(want), "READY cpus=%d ", cpus);
	need_line(&p, want, BOOT_TIMEOUT_MS);
	for (int i = 0; i < cpus; i++) {
		snprintf(key, sizeof(key), "cpu%d.apic_id", i);
		snprintf(want, sizeof(want), "%d", i);
		expect_kv(&p, key, want);
	}
	/* The console answers, and every vCPU reports its workload. */
	vmm_send(&p, "ping\n");
	need_line(&p, "pong", BOOT_TIMEOUT_MS);
	vmm_send(&p, "report\n");
	need_line(&p, "report.end", BOOT_TIMEOUT_MS);
	for (int i = 0; i < cpus; i++) {
		snprintf(key, sizeof(key), "cpu%d.work", i);
		expect_kv(&p, key, "idle");
	}
	vmm_send(&p, "poweroff\n");
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static void test_1_vcpu(void **state)
{
	(void)state;
	boot_and_check_cpus(1);
}

static void test_2_vcpus(void **state)
{
	(void)state;
	boot_and_check_cpus(2);
}

static void test_4_vcpus(void **state)
{
	(void)state;
	boot_and_check_cpus(4);
}

static void boot_and_check_memory(const char *mem, const char *mib, const char *top)
{
	char want[64];
	struct vmm_proc p;

	start_probe(&p, NULL, mem, "1", "work=idle then=poweroff", NULL);
	snprintf(want, sizeof(want), "READY cpus=1 mem_mib=%s ", mib);
	need_line(&p, want, BOOT_TIMEOUT_MS);
	/* The guest wrote and read back the first and last word of every RAM region. */
	expect_kv(&p, "mem.high_ok", "1");
	expect_kv(&p, "mem.top", top);
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static void test_memory_64m(void **state)
{
	(void)state;
	boot_and_check_memory("64M", "64", "0x4000000");
}

static void test_memory_1g(void **state)
{
	(void)state;
	boot_and_check_memory("1G", "1024", "0x40000000");
}

static void test_memory_5g_above_hole(void **state)
{
	(void)state;
	/* 3 GiB below the hole, 2 GiB from 4 GiB: RAM ends at 6 GiB. */
	boot_and_check_memory("5G", "5120", "0x180000000");
}

static void test_touch_1g(void **state)
{
	struct vmm_proc p;

	(void)state;
	start_probe(&p, NULL, "1280M", "2", "work=touch,idle touch_mib=1024 then=poweroff", NULL);
	need_line(&p, "READY cpus=2 ", BOOT_TIMEOUT_MS);
	need_line(&p, "DONE", RUN_TIMEOUT_MS);
	expect_kv(&p, "cpu0.touch_mib", "1024");
	expect_kv(&p, "cpu0.touch_ok", "1");
	expect_kv(&p, "cpu0.done", "touch");
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

/* The probe maps workload memory with 4 KiB pages (as Linux user memory is) on request. */
static void test_touch_with_4k_guest_pages(void **state)
{
	struct vmm_proc p;

	(void)state;
	start_probe(&p, NULL, "512M", "1", "work=touch touch_mib=256 pages=4k then=poweroff", NULL);
	need_line(&p, "DONE", RUN_TIMEOUT_MS);
	expect_kv(&p, "mem.pages", "4k");
	expect_kv(&p, "cpu0.touch_ok", "1");
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static void test_workloads_report_and_verify(void **state)
{
	char buf[64];
	struct vmm_proc p;

	(void)state;
	start_probe(&p, NULL, "512M", "3", "work=pattern,stall,pattern pattern_mib=8 stall_us=500",
		    NULL);
	need_line(&p, "READY cpus=3 ", BOOT_TIMEOUT_MS);
	usleep(300 * 1000);
	vmm_send(&p, "report\n");
	need_line(&p, "report.end", BOOT_TIMEOUT_MS);
	assert_non_null(vmm_value(&p, "cpu0.pattern_seq", buf, sizeof(buf)));
	assert_true(strtoull(buf, NULL, 10) > 0);
	assert_non_null(vmm_value(&p, "cpu2.pattern_seq", buf, sizeof(buf)));
	assert_true(strtoull(buf, NULL, 10) > 0);
	assert_non_null(vmm_value(&p, "cpu1.stall_count", buf, sizeof(buf)));
	/* The writers' memory replays exactly from their sequences, checked from inside. */
	vmm_send(&p, "verify\n");
	need_line(&p, "cpu2.verify=", BOOT_TIMEOUT_MS);
	assert_non_null(vmm_value(&p, "cpu0.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
	assert_non_null(vmm_value(&p, "cpu2.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
	vmm_send(&p, "poweroff\n");
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static uint64_t fnv1a64(const uint8_t *data, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= data[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void make_disk(const char *path, size_t size, uint8_t *first4k)
{
	uint8_t *buf = malloc(size);
	int fd;

	assert_non_null(buf);
	srand(1234);
	for (size_t i = 0; i < size; i++)
		buf[i] = (uint8_t)rand();
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, buf, size), (ssize_t)size);
	close(fd);
	memcpy(first4k, buf, 4096);
	free(buf);
}

static void test_virtio_blk_read_write(void **state)
{
	char disk[300], want[32], diskarg[320];
	uint8_t first[4096], sector[512];
	struct vmm_proc p;
	int fd;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	make_disk(disk, 4 << 20, first);
	snprintf(diskarg, sizeof(diskarg), "%s,id=probe-disk-1", disk);
	start_probe(&p, NULL, "256M", "1",
		    "work=blk blk_read_sectors=8 blk_write_sector=100 then=poweroff", "--disk",
		    diskarg, NULL);
	need_line(&p, "DONE", RUN_TIMEOUT_MS);
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	/* Inside: the guest read what the host wrote. */
	expect_kv(&p, "blk.capacity", "8192");
	expect_kv(&p, "blk.id", "probe-disk-1");
	expect_kv(&p, "blk.ro", "0");
	snprintf(want, sizeof(want), "%016" PRIx64, fnv1a64(first, sizeof(first)));
	expect_kv(&p, "blk.read_fnv", want);
	expect_kv(&p, "blk.write_status", "0");
	expect_kv(&p, "blk.write_readback", "1");
	expect_kv(&p, "blk.flush_status", "0");
	vmm_free(&p);
	/* Outside: the guest's write is in the host file. */
	fd = open(disk, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, sector, sizeof(sector), 100 * 512), 512);
	close(fd);
	const char *text = "forkd-probe-write cpu=0 seq=1";
	assert_memory_equal(sector, text, strlen(text));
	for (size_t i = 64; i < 512; i++)
		if (sector[i] != (uint8_t)(i & 0xff))
			fail_msg("sector 100 byte %zu: 0x%02x", i, sector[i]);
}

static void test_virtio_blk_read_only(void **state)
{
	char disk[300], diskarg[320], want[32];
	uint8_t first[4096], sector[512], orig[512];
	struct vmm_proc p;
	int fd;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/ro.img", dir);
	make_disk(disk, 1 << 20, first);
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, orig, sizeof(orig), 100 * 512), 512);
	close(fd);
	snprintf(diskarg, sizeof(diskarg), "%s,ro", disk);
	start_probe(&p, NULL, "256M", "1", "work=blk blk_write_sector=100 then=poweroff", "--disk",
		    diskarg, NULL);
	need_line(&p, "DONE", RUN_TIMEOUT_MS);
	expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	expect_kv(&p, "blk.ro", "1");
	snprintf(want, sizeof(want), "%016" PRIx64, fnv1a64(first, sizeof(first)));
	expect_kv(&p, "blk.read_fnv", want);
	expect_kv(&p, "blk.write_status", "1"); /* VIRTIO_BLK_S_IOERR */
	vmm_free(&p);
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, sector, sizeof(sector), 100 * 512), 512);
	close(fd);
	assert_memory_equal(sector, orig, sizeof(orig));
}

/* A hostile guest: the VMM (built with ASan+UBSan here) survives and the device recovers. */
static void test_hostile_guest(void **state)
{
	char disk[300];
	uint8_t first[4096];
	struct vmm_proc p;
	int needs_reset = 0;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/hostile.img", dir);
	make_disk(disk, 1 << 20, first);
	start_probe(&p, harness_vmm_asan(), "256M", "2", "work=hostile,idle then=poweroff",
		    "--disk", disk, NULL);
	need_line(&p, "DONE", RUN_TIMEOUT_MS);
	expect_exit(&p, 0, RUN_TIMEOUT_MS);
	expect_kv(&p, "hostile.done", "1");
	expect_kv(&p, "hostile.recovered", "1");
	/* The ring-breaking cases each left the device in DEVICE_NEEDS_RESET. */
	for (int i = 0; i < p.nr_lines; i++) {
		const char *s = strstr(p.lines[i], "=status:0x");
		if (strncmp(p.lines[i], "hostile.", 8) == 0 && s &&
		    (strtoul(s + 8, NULL, 16) & 0x40))
			needs_reset++;
	}
	if (needs_reset < 5)
		vmm_dump(&p);
	assert_true(needs_reset >= 5);
	assert_null(strstr(p.err_text, "AddressSanitizer"));
	assert_null(strstr(p.err_text, "runtime error"));
	vmm_free(&p);
}

static void test_reboot_exit_status(void **state)
{
	struct vmm_proc p;

	(void)state;
	start_probe(&p, NULL, "128M", "2", "work=idle", NULL);
	need_line(&p, "READY", BOOT_TIMEOUT_MS);
	vmm_send(&p, "reboot\n");
	expect_exit(&p, 3, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static void test_sigterm_stops_cleanly(void **state)
{
	struct vmm_proc p;

	(void)state;
	start_probe(&p, NULL, "128M", "2", "work=stall,stall", NULL);
	need_line(&p, "READY", BOOT_TIMEOUT_MS);
	kill(p.pid, SIGTERM);
	expect_exit(&p, 128 + SIGTERM, BOOT_TIMEOUT_MS);
	assert_non_null(strstr(p.err_text, "signal"));
	vmm_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_1_vcpu),
	    cmocka_unit_test(test_2_vcpus),
	    cmocka_unit_test(test_4_vcpus),
	    cmocka_unit_test(test_memory_64m),
	    cmocka_unit_test(test_memory_1g),
	    cmocka_unit_test(test_memory_5g_above_hole),
	    cmocka_unit_test(test_touch_1g),
	    cmocka_unit_test(test_touch_with_4k_guest_pages),
	    cmocka_unit_test(test_workloads_report_and_verify),
	    cmocka_unit_test(test_virtio_blk_read_write),
	    cmocka_unit_test(test_virtio_blk_read_only),
	    cmocka_unit_test(test_hostile_guest),
	    cmocka_unit_test(test_reboot_exit_status),
	    cmocka_unit_test(test_sigterm_stops_cleanly),
	};
	return cmocka_run_group_tests_name("forkd-vmm with the probe guest", tests, setup,
					   teardown);
}
