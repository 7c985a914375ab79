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

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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
		assert_non_null(vmm_wait_containing(&p, want, NULL, NULL, SMOKE_TIMEOUT_MS));
	}

	/* Our ACPI tables, listed by the kernel, from the RSDP we passed. */
	static const char *tables[] = {"ACPI: RSDP 0x00000000000E0000", "ACPI: XSDT ",
				       "ACPI: FACP ", "ACPI: DSDT ", "ACPI: APIC "};
	for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++)
		assert_non_null(
		    vmm_wait_containing(&p, tables[t], "FORKD", NULL, SMOKE_TIMEOUT_MS));
	for (int i = 0; i < p.nr_lines; i++)
		if (strstr(p.lines[i], "checksum") && !strstr(p.lines[i], "verification disabled"))
			fail_msg("kernel complained: %s", p.lines[i]);
	vmm_kill(&p);
	vmm_free(&p);
}

/* Runs images/build.sh on a given .deb into a scratch cache; returns its exit status. */
static int build_images_from(const char *deb, char *err, size_t err_len)
{
	char cmd[2048], out[600];
	FILE *f;
	size_t n;
	int status;

	snprintf(out, sizeof(out), "%s/forkd-images-err-%d", harness_tmpdir(), getpid());
	snprintf(cmd, sizeof(cmd),
		 "FORKD_BUILD='%s' FORKD_KERNEL_DEB='%s' FORKD_IMAGES_DIR='%s' images/build.sh "
		 "2>&1 >/dev/null",
		 getenv("FORKD_BUILD") ? getenv("FORKD_BUILD") : "build", deb, out);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(err, 1, err_len - 1, f);
	err[n] = '\0';
	status = pclose(f);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", out);
	if (system(cmd)) {
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_bad_kernel_packages(void **state)
{
	char deb[600], bad[700], cmd[4096], err[8192];

	(void)state;
	/* A truncated copy of the real package. */
	snprintf(cmd, sizeof(cmd), "ls %s/*.deb 2>/dev/null | head -n1", images_dir());
	FILE *f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(deb, sizeof(deb), f));
	pclose(f);
	deb[strcspn(deb, "\n")] = '\0';
	snprintf(bad, sizeof(bad), "%s/forkd-truncated-%d.deb", harness_tmpdir(), getpid());
	snprintf(cmd, sizeof(cmd), "head -c 2000000 '%s' > '%s'", deb, bad);
	assert_int_equal(system(cmd), 0);
	assert_int_not_equal(build_images_from(bad, err, sizeof(err)), 0);
	if (!strstr(err, bad) || !strstr(err, "truncated or corrupt"))
		fail_msg("unclear error: %s", err);
	unlink(bad);

	/* A well-formed package without the kernel files. */
	char root[600];
	snprintf(root, sizeof(root), "%s/forkd-emptypkg-%d", harness_tmpdir(), getpid());
	snprintf(bad, sizeof(bad), "%s.deb", root);
	snprintf(cmd, sizeof(cmd),
		 "mkdir -p '%s/DEBIAN' '%s/boot' && printf 'Package: linux-image-empty\\nVersion: "
		 "1\\nArchitecture: amd64\\nMaintainer: t <t@t>\\nDescription: t\\n' > "
		 "'%s/DEBIAN/control' && dpkg-deb -b '%s' '%s' >/dev/null 2>&1",
		 root, root, root, root, bad);
	assert_int_equal(system(cmd), 0);
	assert_int_not_equal(build_images_from(bad, err, sizeof(err)), 0);
	if (!strstr(err, bad) || !strstr(err, "vmlinuz"))
		fail_msg("unclear error: %s", err);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' '%s'", root, bad);
	assert_int_equal(system(cmd), 0);
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

/* Waits for a console line containing text (a shell echoes input before its output). */
static bool wait_output(struct vmm_proc *p, const char *text, int timeout_ms)
{
	/* Lines with "echo " are the shell echoing the command itself. */
	return vmm_wait_containing(p, text, NULL, "echo ", timeout_ms) != NULL;
}

/* Devices, snapshot/restore and BRANCH of a Linux guest: needs hardware virtualization. */
static void test_linux_disk_snapshot_branch(void **state)
{
	char dir[256], disk[400], sock[400], snap[400], bdir[400], req[600], buf[512];
	struct vmm_proc p, r;
	json_t *reply;
	int fd;

	(void)state;
	if (!have_hw_virt()) {
		printf("skipped: no hardware virtualization (no vmx/svm in /proc/cpuinfo): Linux "
		       "virtio-blk, snapshot/restore and BRANCH\n");
		skip();
	}
	assert_int_equal(harness_tmpdir_create(dir, sizeof(dir), "linux"), 0);
	snprintf(disk, sizeof(disk), "%s/disk.img", dir);
	snprintf(sock, sizeof(sock), "%s/vm.sock", dir);
	snprintf(snap, sizeof(snap), "%s/snap", dir);
	snprintf(bdir, sizeof(bdir), "%s/branch", dir);
	fd = open(disk, O_RDWR | O_CREAT | O_TRUNC, 0644);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1 << 20), 0);
	assert_int_equal(pwrite(fd, "forkd-host-data\n", 16, 0), 16);
	close(fd);

	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			vmlinux,
			"--initrd",
			initrd,
			"--mem",
			"1G",
			"--cpus",
			"2",
			"--disk",
			disk,
			"--control",
			sock,
			"--append",
			"console=ttyS0 quiet",
			NULL};
	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(vmm_need_line(&p, "READY", 60000));
	/* Inside: the guest reads the host's bytes and writes its own. */
	vmm_send(&p, "head -c 15 /dev/vda; echo\n");
	assert_true(wait_output(&p, "forkd-host-data", 30000));
	vmm_send(&p, "echo forkd-guest-write | dd of=/dev/vda bs=512 seek=10 conv=fsync "
		     "2>/dev/null; echo wrote-$((20+1))\n");
	assert_true(wait_output(&p, "wrote-21", 30000));
	fd = open(disk, O_RDONLY);
	assert_int_equal(pread(fd, buf, 512, 10 * 512), 512);
	close(fd);
	assert_memory_equal(buf, "forkd-guest-write", 17);

	/* Snapshot, restore: the restored shell answers. */
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	reply = harness_call_expect(sock, req, true);
	assert_non_null(reply);
	json_decref(reply);
	char *rargv[] = {(char *)harness_vmm(), "--restore", snap, NULL};
	assert_int_equal(vmm_start(&r, rargv), 0);
	vmm_send(&r, "echo restored-$((40+2))\n");
	assert_true(wait_output(&r, "restored-42", 30000));
	vmm_kill(&r);
	vmm_free(&r);

	/* BRANCH: the child's shell answers on its own console. */
	snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":1,\"dir\":\"%s\"}", bdir);
	reply = harness_call_expect(sock, req, true);
	assert_non_null(reply);
	json_decref(reply);
	char in[500], log[500];
	snprintf(in, sizeof(in), "%s/child-0/serial.in", bdir);
	snprintf(log, sizeof(log), "%s/child-0/serial.log", bdir);
	assert_int_equal(fifo_send(in, "echo branched-$((40+2))\n"), 0);
	char *l = file_wait_line(log, "branched-42", 0, 30000);
	assert_non_null(l);
	free(l);
	snprintf(req, sizeof(req), "%s/child-0/control.sock", bdir);
	json_decref(harness_call_expect(req, "{\"cmd\":\"shutdown\"}", true));
	json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&p, 30000), 0);
	vmm_free(&p);
	harness_tmpdir_remove(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_early_boot_smoke),
	    cmocka_unit_test(test_bad_kernel_packages),
	    cmocka_unit_test(test_full_boot),
	    cmocka_unit_test(test_linux_disk_snapshot_branch),
	};
	return cmocka_run_group_tests_name("Linux guest (Debian cloud kernel)", tests, setup, NULL);
}
