/* SPDX-License-Identifier: MIT */
/*
 * The Linux guest path with Debian's stock cloud kernel (images/build.sh).
 *
 * Early-boot smoke test (runs everywhere, including KVM-PVM where guest
 * kernel code is emulated): forkd-vmm boots the kernel through PVH with
 * earlyprintk on COM1, and the kernel's own log must show its version, the
 * command line, the e820 map and the initrd range we passed, and our ACPI
 * tables (RSDP, XSDT, FACP, DSDT, APIC) without a checksum complaint. Then
 * the VM is stopped: on KVM-PVM the kernel cannot get much further.
 *
 * Full-boot tests need hardware virtualization (vmx/svm); elsewhere they say
 * "skipped: no hardware virtualization".
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "vmm/e820.h"

#define SMOKE_TIMEOUT_MS 240000
#define SMOKE_MEM	 "512M"
#define SMOKE_MEM_BYTES	 (512ULL << 20)

static char vmlinux[600], initrd[600];

static const char *images_dir(void)
{
	const char *d = getenv("FORKD_IMAGES");

	return d && *d ? d : ".cache/images";
}

static bool have_hw_virt(void)
{
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[4096];
	bool found = false;

	while (f && !found && fgets(line, sizeof(line), f))
		if (strncmp(line, "flags", 5) == 0 &&
		    (strstr(line, " vmx") || strstr(line, " svm")))
			found = true;
	if (f)
		fclose(f);
	return found;
}

static int setup(void **state)
{
	struct stat st;

	(void)state;
	snprintf(vmlinux, sizeof(vmlinux), "%s/vmlinux", images_dir());
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", images_dir());
	if (stat(vmlinux, &st) < 0 || stat(initrd, &st) < 0) {
		fprintf(stderr, "Linux images missing in %s: run `make images`\n", images_dir());
		/* CI builds them first; a developer without them gets a clear failure too. */
		return -1;
	}
	return 0;
}

static off_t file_size(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 ? st.st_size : -1;
}

static void test_early_boot_smoke(void **state)
{
	const char *cmdline = "console=ttyS0 earlyprintk=serial,ttyS0,115200 loglevel=8 "
			      "forkd.smoke=1";
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			vmlinux,
			"--initrd",
			initrd,
			"--mem",
			SMOKE_MEM,
			"--append",
			(char *)cmdline,
			"--serial-in",
			"none",
			NULL};
	struct hvm_memmap_table_entry map[E820_MAX_ENTRIES];
	struct guest_mem mem = {0};
	char want[256];
	struct vmm_proc p;
	const char *line;
	int n;

	(void)state;
	assert_int_equal(vmm_start(&p, argv), 0);
	line = vmm_need_line(&p, "[", SMOKE_TIMEOUT_MS);
	assert_non_null(line);
	assert_non_null(vmm_wait_line(&p, "[    0.000000] Linux version ", SMOKE_TIMEOUT_MS));
	snprintf(want, sizeof(want), "[    0.000000] Command line: %s", cmdline);
	assert_non_null(vmm_need_line(&p, want, SMOKE_TIMEOUT_MS));

	/* The e820 map the kernel prints is the one we passed (same layout as e820_build). */
	mem.total_size = SMOKE_MEM_BYTES;
	mem.nr_regions = 1;
	mem.regions[0] = (struct guest_mem_region){.gpa = 0, .size = SMOKE_MEM_BYTES};
	n = e820_build(&mem, map);
	for (int i = 0; i < n; i++) {
		snprintf(want, sizeof(want),
			 "[    0.000000] BIOS-e820: [mem 0x%016" PRIx64 "-0x%016" PRIx64 "] %s",
			 map[i].addr, map[i].addr + map[i].size - 1,
			 map[i].type == XEN_HVM_MEMMAP_TYPE_RAM ? "usable" : "reserved");
		assert_non_null(vmm_need_line(&p, want, SMOKE_TIMEOUT_MS));
	}

	/* The initrd range: page-aligned at the top of RAM below the MMIO hole. */
	{
		uint64_t size = (uint64_t)file_size(initrd);
		uint64_t start = (SMOKE_MEM_BYTES - size) & ~4095ULL;
		/* Linux prints the page-aligned end, less one. */
		uint64_t end = (start + size + 4095) & ~4095ULL;
		snprintf(want, sizeof(want), "RAMDISK: [mem 0x%08" PRIx64 "-0x%08" PRIx64 "]",
			 start, end - 1);
		bool found = false;
		long long deadline = now_ms() + SMOKE_TIMEOUT_MS;
		while (!found && now_ms() < deadline) {
			vmm_wait_line(&p, "no-such-line", 100);
			for (int i = 0; i < p.nr_lines && !found; i++)
				found = strstr(p.lines[i], want) != NULL;
			if (p.exited)
				break;
		}
		if (!found) {
			fprintf(stderr, "no '%s'\n", want);
			vmm_dump(&p);
		}
		assert_true(found);
	}

	/* Our ACPI tables, listed by the kernel, from the RSDP we passed. */
	static const char *tables[] = {"ACPI: RSDP 0x00000000000E0000", "ACPI: XSDT ",
				       "ACPI: FACP ", "ACPI: DSDT ", "ACPI: APIC "};
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
		bool found = false;
		long long deadline = now_ms() + SMOKE_TIMEOUT_MS;
		while (!found && now_ms() < deadline && !p.exited) {
			for (int i = 0; i < p.nr_lines && !found; i++)
				found = strstr(p.lines[i], tables[t]) != NULL &&
					strstr(p.lines[i], "FORKD") != NULL;
			if (!found)
				vmm_wait_line(&p, "no-such-line", 100);
		}
		if (!found) {
			fprintf(stderr, "no '%s' line from our tables\n", tables[t]);
			vmm_dump(&p);
		}
		assert_true(found);
	}
	for (int i = 0; i < p.nr_lines; i++)
		if (strstr(p.lines[i], "checksum") && !strstr(p.lines[i], "verification disabled"))
			fail_msg("kernel complained: %s", p.lines[i]);
	vmm_kill(&p);
	vmm_free(&p);
}

static void test_full_boot(void **state)
{
	(void)state;
	if (!have_hw_virt()) {
		printf(
		    "skipped: no hardware virtualization (no vmx/svm in /proc/cpuinfo): full Linux "
		    "boot, nproc, memory, virtio-blk, snapshot and BRANCH of a Linux guest\n");
		skip();
	}
	/* With hardware virtualization the stock kernel runs natively: boot to forkd-init. */
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			vmlinux,
			"--initrd",
			initrd,
			"--mem",
			"1G",
			"--cpus",
			"2",
			"--append",
			"console=ttyS0 quiet -- nproc; grep MemTotal /proc/meminfo",
			NULL};
	struct vmm_proc p;

	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(vmm_need_line(&p, "READY", 60000));
	assert_non_null(vmm_need_line(&p, "2", 60000));
	assert_non_null(vmm_need_line(&p, "MemTotal:", 60000));
	assert_non_null(vmm_need_line(&p, "EXIT status=0", 60000));
	assert_int_equal(vmm_wait(&p, 60000), 0);
	vmm_free(&p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_early_boot_smoke),
	    cmocka_unit_test(test_full_boot),
	};
	return cmocka_run_group_tests_name("Linux guest (Debian cloud kernel)", tests, setup, NULL);
}
