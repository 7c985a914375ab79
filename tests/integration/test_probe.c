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
#include "where.h"
#include "probe_cases.h"

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

static void boot_and_check_cpus(int cpus)
{
	char ncpu[8], want[64], key[32];
	struct vmm_proc p;

	snprintf(ncpu, sizeof(ncpu), "%d", cpus);
	probe_start(&p, NULL, "256M", ncpu, "work=idle", NULL);
	snprintf(want, sizeof(want), "READY cpus=%d ", cpus);
	probe_need_line(&p, want, BOOT_TIMEOUT_MS);
	for (int i = 0; i < cpus; i++) {
		snprintf(key, sizeof(key), "cpu%d.apic_id", i);
		snprintf(want, sizeof(want), "%d", i);
		probe_expect_kv(&p, key, want);
	}
	/* The console answers, and every vCPU reports its workload. */
	vmm_send(&p, "ping\n");
	probe_need_line(&p, "pong", BOOT_TIMEOUT_MS);
	vmm_send(&p, "report\n");
	probe_need_line(&p, "report.end", BOOT_TIMEOUT_MS);
	for (int i = 0; i < cpus; i++) {
		snprintf(key, sizeof(key), "cpu%d.work", i);
		probe_expect_kv(&p, key, "idle");
	}
	vmm_send(&p, "poweroff\n");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
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

	probe_start(&p, NULL, mem, "1", "work=idle then=poweroff", NULL);
	snprintf(want, sizeof(want), "READY cpus=1 mem_mib=%s ", mib);
	probe_need_line(&p, want, BOOT_TIMEOUT_MS);
	/* The guest wrote and read back the first and last word of every RAM region. */
	probe_expect_kv(&p, "mem.high_ok", "1");
	probe_expect_kv(&p, "mem.top", top);
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
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
	probe_start(&p, NULL, "1280M", "2", "work=touch,idle touch_mib=1024 then=poweroff", NULL);
	probe_need_line(&p, "READY cpus=2 ", BOOT_TIMEOUT_MS);
	probe_need_line(&p, "DONE", RUN_TIMEOUT_MS);
	probe_expect_kv(&p, "cpu0.touch_mib", "1024");
	probe_expect_kv(&p, "cpu0.touch_ok", "1");
	probe_expect_kv(&p, "cpu0.done", "touch");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

/* The probe maps workload memory with 4 KiB pages (as Linux user memory is) on request. */
static void test_touch_with_4k_guest_pages(void **state)
{
	struct vmm_proc p;

	(void)state;
	probe_start(&p, NULL, "512M", "1", "work=touch touch_mib=256 pages=4k then=poweroff", NULL);
	probe_need_line(&p, "DONE", RUN_TIMEOUT_MS);
	probe_expect_kv(&p, "mem.pages", "4k");
	probe_expect_kv(&p, "cpu0.touch_ok", "1");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static void test_workloads_report_and_verify(void **state)
{
	char buf[64];
	struct vmm_proc p;

	(void)state;
	probe_start(&p, NULL, "512M", "3", "work=pattern,stall,pattern pattern_mib=8 stall_us=500",
		    NULL);
	probe_need_line(&p, "READY cpus=3 ", BOOT_TIMEOUT_MS);
	usleep(300 * 1000);
	vmm_send(&p, "report\n");
	probe_need_line(&p, "report.end", BOOT_TIMEOUT_MS);
	assert_non_null(vmm_value(&p, "cpu0.pattern_seq", buf, sizeof(buf)));
	assert_true(strtoull(buf, NULL, 10) > 0);
	assert_non_null(vmm_value(&p, "cpu2.pattern_seq", buf, sizeof(buf)));
	assert_true(strtoull(buf, NULL, 10) > 0);
	assert_non_null(vmm_value(&p, "cpu1.stall_count", buf, sizeof(buf)));
	/* The writers' memory replays exactly from their sequences, checked from inside. */
	vmm_send(&p, "verify\n");
	probe_need_line(&p, "cpu2.verify=", BOOT_TIMEOUT_MS);
	assert_non_null(vmm_value(&p, "cpu0.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
	assert_non_null(vmm_value(&p, "cpu2.verify", buf, sizeof(buf)));
	assert_string_equal(buf, "ok");
	vmm_send(&p, "poweroff\n");
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
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

static void test_virtio_blk_read_write(void **state)
{
	char disk[300], want[32], diskarg[320];
	uint8_t first[4096], sector[512];
	struct vmm_proc p;
	int fd;

	(void)state;
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	probe_make_disk(disk, 4 << 20, first);
	snprintf(diskarg, sizeof(diskarg), "%s,id=probe-disk-1", disk);
	probe_start(&p, NULL, "256M", "1",
		    "work=blk blk_read_sectors=8 blk_write_sector=100 then=poweroff", "--disk",
		    diskarg, NULL);
	probe_need_line(&p, "DONE", RUN_TIMEOUT_MS);
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	/* Inside: the guest read what the host wrote. */
	probe_expect_kv(&p, "blk.capacity", "8192");
	probe_expect_kv(&p, "blk.id", "probe-disk-1");
	probe_expect_kv(&p, "blk.ro", "0");
	snprintf(want, sizeof(want), "%016" PRIx64, fnv1a64(first, sizeof(first)));
	probe_expect_kv(&p, "blk.read_fnv", want);
	probe_expect_kv(&p, "blk.write_status", "0");
	probe_expect_kv(&p, "blk.write_readback", "1");
	probe_expect_kv(&p, "blk.flush_status", "0");
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
	probe_make_disk(disk, 1 << 20, first);
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, orig, sizeof(orig), 100 * 512), 512);
	close(fd);
	snprintf(diskarg, sizeof(diskarg), "%s,ro", disk);
	probe_start(&p, NULL, "256M", "1", "work=blk blk_write_sector=100 then=poweroff", "--disk",
		    diskarg, NULL);
	probe_need_line(&p, "DONE", RUN_TIMEOUT_MS);
	probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
	probe_expect_kv(&p, "blk.ro", "1");
	snprintf(want, sizeof(want), "%016" PRIx64, fnv1a64(first, sizeof(first)));
	probe_expect_kv(&p, "blk.read_fnv", want);
	probe_expect_kv(&p, "blk.write_status", "1"); /* VIRTIO_BLK_S_IOERR */
	vmm_free(&p);
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, sector, sizeof(sector), 100 * 512), 512);
	close(fd);
	assert_memory_equal(sector, orig, sizeof(orig));
}

/* A hostile guest: the VMM (built with ASan+UBSan here) survives and the device recovers. */

static void test_hostile_guest(void **state)
{
	(void)state;
	probe_hostile_run(dir);
}

static void test_reboot_exit_status(void **state)
{
	struct vmm_proc p;

	(void)state;
	probe_start(&p, NULL, "128M", "2", "work=idle", NULL);
	probe_need_line(&p, "READY", BOOT_TIMEOUT_MS);
	vmm_send(&p, "reboot\n");
	probe_expect_exit(&p, 3, BOOT_TIMEOUT_MS);
	vmm_free(&p);
}

static void test_sigterm_stops_cleanly(void **state)
{
	struct vmm_proc p;

	(void)state;
	probe_start(&p, NULL, "128M", "2", "work=stall,stall", NULL);
	probe_need_line(&p, "READY", BOOT_TIMEOUT_MS);
	kill(p.pid, SIGTERM);
	probe_expect_exit(&p, 128 + SIGTERM, BOOT_TIMEOUT_MS);
	assert_non_null(strstr(p.err_text, "signal"));
	vmm_free(&p);
}

int main(int argc, char **argv)
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
	if (where_begin(argc, argv, NEEDS_KVM, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("forkd-vmm with the probe guest", tests, setup,
					   teardown);
}
