/* SPDX-License-Identifier: MIT */
/*
 * The Linux guest path with Debian's stock cloud kernel (images/build.sh).
 *
 * These need KVM with hardware-virtualization semantics: natively on a host
 * with VT-x/AMD-V, elsewhere in the nested test host (tests/run-integration.sh).
 *
 * - Early boot: the kernel's own log shows its version, our command line,
 *   e820 map, initrd range and ACPI tables without a checksum complaint.
 * - Full boots to forkd-init on 1, 2 and 4 vCPUs, through PVH (vmlinux) and
 *   the 64-bit boot protocol (bzImage).
 * - virtio-blk read/write, checked inside the guest and in the host file.
 * - Snapshot -> restore -> the restored guest keeps working.
 * - BRANCH under write load, checked from inside Linux by forkd-pattern
 *   (guest/pattern/), strictly, in every child.
 * - images/build.sh refuses broken kernel packages.
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
#include "where.h"
#include "boot/e820.h"

#define SMOKE_TIMEOUT_MS 240000
/* Generous: in the nested test host every guest instruction may be emulated. */
#define BOOT_TIMEOUT_MS 120000
#define CMD_TIMEOUT_MS	60000
#define SMOKE_MEM	"512M"
#define SMOKE_MEM_BYTES (512ULL << 20)

static char vmlinux[600], initrd[600];

static const char *images_dir(void)
{
	const char *d = getenv("FORKD_IMAGES");

	return d && *d ? d : ".cache/images";
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

/* Boots kernel (vmlinux: PVH; bzImage: the 64-bit boot protocol) to forkd-init and runs a command.
 */
static void full_boot(const char *kernel_name, const char *cpus)
{
	char kernel[700], want[64];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			kernel,
			"--initrd",
			initrd,
			"--mem",
			"512M",
			"--cpus",
			(char *)cpus,
			"--append",
			"console=ttyS0 quiet -- echo cpus=$(nproc); grep MemTotal /proc/meminfo",
			NULL};
	struct vmm_proc p;

	snprintf(kernel, sizeof(kernel), "%s/%s", images_dir(), kernel_name);
	snprintf(want, sizeof(want), "cpus=%s", cpus);
	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(vmm_need_line(&p, "READY uptime=", BOOT_TIMEOUT_MS));
	assert_non_null(vmm_need_line(&p, want, BOOT_TIMEOUT_MS));
	/* 512 MiB less what the kernel keeps: between 400 and 512 MiB. */
	const char *mem = vmm_need_line(&p, "MemTotal:", BOOT_TIMEOUT_MS);
	assert_non_null(mem);
	long kib = strtol(mem + strlen("MemTotal:"), NULL, 10);
	if (kib < 400 * 1024 || kib > 512 * 1024)
		fail_msg("MemTotal %ld kB for --mem 512M", kib);
	assert_non_null(vmm_need_line(&p, "EXIT status=0", BOOT_TIMEOUT_MS));
	assert_int_equal(vmm_wait(&p, BOOT_TIMEOUT_MS), 0);
	vmm_free(&p);
}

static void test_full_boot_pvh(void **state)
{
	(void)state;
	full_boot("vmlinux", "1");
	full_boot("vmlinux", "2");
	full_boot("vmlinux", "4");
}

static void test_full_boot_bzimage(void **state)
{
	(void)state;
	full_boot("bzImage", "1");
	full_boot("bzImage", "2");
	full_boot("bzImage", "4");
}

/* Waits for a console line containing text (a shell echoes input before its output). */
static bool wait_output(struct vmm_proc *p, const char *text, int timeout_ms)
{
	/* Lines with "echo " are the shell echoing the command itself. */
	return vmm_wait_containing(p, text, NULL, "echo ", timeout_ms) != NULL;
}

/* A Linux guest with an interactive shell on its console, a disk and a control socket. */
struct linux_vm {
	struct vmm_proc p;
	char dir[256], disk[400], sock[400];
};

static void start_linux_shell(struct linux_vm *vm, const char *tag)
{
	int fd;

	assert_int_equal(harness_tmpdir_create(vm->dir, sizeof(vm->dir), tag), 0);
	snprintf(vm->disk, sizeof(vm->disk), "%s/disk.img", vm->dir);
	snprintf(vm->sock, sizeof(vm->sock), "%s/vm.sock", vm->dir);
	fd = open(vm->disk, O_RDWR | O_CREAT | O_TRUNC, 0644);
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
			vm->disk,
			"--control",
			vm->sock,
			"--append",
			"console=ttyS0 quiet",
			NULL};
	assert_int_equal(vmm_start(&vm->p, argv), 0);
	assert_non_null(vmm_need_line(&vm->p, "READY", BOOT_TIMEOUT_MS));
}

static void stop_linux(struct linux_vm *vm)
{
	json_decref(harness_call_expect(vm->sock, "{\"cmd\":\"shutdown\"}", true));
	assert_int_equal(vmm_wait(&vm->p, BOOT_TIMEOUT_MS), 0);
	vmm_free(&vm->p);
	harness_tmpdir_remove(vm->dir);
}

/* virtio-blk: the guest reads the host's bytes, and its write lands in the host file. */
static void test_linux_disk(void **state)
{
	struct linux_vm vm;
	char buf[512];
	int fd;

	(void)state;
	start_linux_shell(&vm, "linux-disk");
	vmm_send(&vm.p, "head -c 15 /dev/vda; echo\n");
	assert_true(wait_output(&vm.p, "forkd-host-data", CMD_TIMEOUT_MS));
	vmm_send(&vm.p, "echo forkd-guest-write | dd of=/dev/vda bs=512 seek=10 conv=fsync "
			"2>/dev/null; echo wrote-$((20+1))\n");
	assert_true(wait_output(&vm.p, "wrote-21", CMD_TIMEOUT_MS));
	fd = open(vm.disk, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, buf, 512, 10 * 512), 512);
	close(fd);
	assert_memory_equal(buf, "forkd-guest-write", 17);
	/* And back: the host changes a sector the guest has not cached, the guest reads it. */
	fd = open(vm.disk, O_WRONLY);
	assert_int_equal(pwrite(fd, "host-second-write", 17, 30 * 512), 17);
	close(fd);
	vmm_send(&vm.p, "dd if=/dev/vda bs=512 skip=30 count=1 iflag=direct 2>/dev/null | "
			"head -c 17; echo\n");
	assert_true(wait_output(&vm.p, "host-second-write", CMD_TIMEOUT_MS));
	stop_linux(&vm);
}

/*
 * The checker's verdicts from a console: "pattern.verify cpuN=ok seq=S ..."
 * for each writer, then "pattern.verify.end ok=1". seqs[] gets each S.
 */
static void expect_verify_lines(const char *const *lines, int n, bool want_ok, uint64_t *seqs,
				int nr_writers)
{
	int ok_lines = 0;

	for (int i = 0; i < n; i++) {
		const char *l = lines[i], *eq = strstr(l, "=ok seq=");
		if (strncmp(l, "pattern.verify cpu", 18) != 0)
			continue;
		if (!eq) {
			if (want_ok)
				fail_msg("checker: %s", l);
			continue;
		}
		int cpu = atoi(l + 18);
		assert_in_range(cpu, 0, nr_writers - 1);
		if (seqs)
			seqs[cpu] = strtoull(eq + strlen("=ok seq="), NULL, 10);
		ok_lines++;
	}
	if (want_ok)
		assert_int_equal(ok_lines, nr_writers);
}

/* The checker in a VM whose console is on pipes: freeze, then a strict verify. */
static void freeze_and_verify(struct vmm_proc *p, uint64_t *seqs)
{
	int from;

	vmm_send(p, "freeze\n");
	assert_non_null(vmm_need_line(p, "pattern.frozen=1", CMD_TIMEOUT_MS));
	from = p->nr_lines;
	vmm_send(p, "verify strict\n");
	assert_non_null(vmm_need_line(p, "pattern.verify.end ok=1", CMD_TIMEOUT_MS));
	expect_verify_lines((const char *const *)p->lines + from, p->nr_lines - from, true, seqs,
			    2);
}

/*
 * Snapshot while the checker's writers run, restore: the restored guest
 * learns its new generation ID (the checker reads it through /dev/mem), its
 * writers freeze at the snapshot instant and verify strictly; then its shell
 * and disk keep working. The source runs on and verifies too.
 */
static void test_linux_snapshot_restore(void **state)
{
	char snap[400], req[600];
	struct linux_vm vm;
	struct vmm_proc r;
	json_t *reply;

	(void)state;
	start_linux_shell(&vm, "linux-snap");
	snprintf(snap, sizeof(snap), "%s/snap", vm.dir);
	vmm_send(&vm.p, "forkd-pattern --threads 2 --mib 16 --freeze genid\n");
	assert_non_null(vmm_need_line(&vm.p, "pattern.ready threads=2", CMD_TIMEOUT_MS));
	usleep(500 * 1000);
	snprintf(req, sizeof(req), "{\"cmd\":\"snapshot\",\"path\":\"%s\"}", snap);
	reply = harness_call_expect(vm.sock, req, true);
	assert_non_null(reply);
	json_decref(reply);

	char *rargv[] = {(char *)harness_vmm(), "--restore", snap, NULL};
	assert_int_equal(vmm_start(&r, rargv), 0);
	freeze_and_verify(&r, NULL);
	vmm_send(&r, "quit\n");
	vmm_send(&r, "echo restored-$((40+2))\n");
	assert_true(wait_output(&r, "restored-42", CMD_TIMEOUT_MS));
	vmm_send(&r, "head -c 15 /dev/vda; echo\n");
	assert_true(wait_output(&r, "forkd-host-data", CMD_TIMEOUT_MS));
	vmm_send(&r, "echo after-restore | dd of=/dev/vda bs=512 seek=40 conv=fsync 2>/dev/null; "
		     "dd if=/dev/vda bs=512 skip=40 count=1 iflag=direct 2>/dev/null | head -c 13; "
		     "echo\n");
	assert_true(wait_output(&r, "after-restore", CMD_TIMEOUT_MS));
	vmm_kill(&r);
	vmm_free(&r);

	/* The source ran on through the snapshot: its own strict check (frozen by command). */
	freeze_and_verify(&vm.p, NULL);
	vmm_send(&vm.p, "quit\n");
	stop_linux(&vm);
}

/* A child's console (files): sends a line, waits for a reply line after what is there now. */
static char *child_ask(const char *child_dir, const char *text, const char *prefix, int *skip)
{
	char in[500], log[500];
	char *line;

	snprintf(in, sizeof(in), "%s/serial.in", child_dir);
	snprintf(log, sizeof(log), "%s/serial.log", child_dir);
	*skip = file_count_lines(log);
	assert_int_equal(fifo_send(in, text), 0);
	line = file_wait_line(log, prefix, *skip, CMD_TIMEOUT_MS);
	if (!line) {
		char cmd[600];
		snprintf(cmd, sizeof(cmd), "tail -n 30 '%s' >&2", log);
		if (system(cmd)) {
		}
		fail_msg("child %s: no '%s' after '%s'", child_dir, prefix, text);
	}
	return line;
}

/* Lines [skip, ...) of a console file, each malloc'd (caller frees); returns how many. */
static int file_lines(const char *path, int skip, char **lines, int max)
{
	FILE *f = fopen(path, "r");
	char buf[4096];
	int i = 0, n = 0;

	assert_non_null(f);
	while (n < max && fgets(buf, sizeof(buf), f))
		if (i++ >= skip)
			lines[n++] = strdup(buf);
	fclose(f);
	return n;
}

/* In a child (console in files): freeze, verify strictly, and collect each writer's frozen seq. */
static void child_freeze_and_verify(const char *child_dir, bool want_ok, uint64_t *seqs)
{
	char log[500], *lines[64];
	int skip, n;

	snprintf(log, sizeof(log), "%s/serial.log", child_dir);
	free(child_ask(child_dir, "freeze\n", "pattern.frozen=1", &skip));
	free(child_ask(child_dir, "verify strict\n", "pattern.verify.end", &skip));
	n = file_lines(log, skip, lines, 64);
	bool ended_ok = false;
	for (int i = 0; i < n; i++)
		if (!strncmp(lines[i], "pattern.verify.end ok=1", 23))
			ended_ok = true;
	expect_verify_lines((const char *const *)lines, n, want_ok, seqs, 2);
	for (int i = 0; i < n; i++)
		free(lines[i]);
	if (ended_ok != want_ok)
		fail_msg("child %s: strict verify %s, expected %s", child_dir,
			 ended_ok ? "passed" : "failed", want_ok ? "a pass" : "a failure");
}

#define BRANCH_ROUNDS 3
#define BRANCH_KIDS   2

/*
 * BRANCH of a Linux guest under write load, checked from inside Linux: the
 * checker's two writers (one per vCPU) run while the source is branched
 * three times into two children. Each child's writers freeze on the new
 * generation ID, i.e. at the branch instant, and verify strictly: every page
 * holds exactly the last write <= the frozen sequence. Siblings froze at the
 * same sequence (one instant), a deliberately torn page is caught, and the
 * source runs on and verifies.
 */
static void test_linux_branch_under_write_load(void **state)
{
	struct linux_vm vm;
	char req[600], bdir[300];

	(void)state;
	start_linux_shell(&vm, "linux-branch");
	vmm_send(&vm.p, "forkd-pattern --threads 2 --mib 16 --freeze genid\n");
	assert_non_null(vmm_need_line(&vm.p, "pattern.ready threads=2", CMD_TIMEOUT_MS));
	for (int round = 0; round < BRANCH_ROUNDS; round++) {
		uint64_t seqs[BRANCH_KIDS][2] = {{0}};
		char kid[BRANCH_KIDS][320];
		json_t *reply;
		int skip;

		_Static_assert(BRANCH_KIDS == 2, "siblings are compared in pairs");

		usleep(300 * 1000);
		snprintf(bdir, sizeof(bdir), "%s/branch-%d", vm.dir, round);
		snprintf(req, sizeof(req), "{\"cmd\":\"branch\",\"n\":%d,\"dir\":\"%s\"}",
			 BRANCH_KIDS, bdir);
		reply = harness_call_expect(vm.sock, req, true);
		assert_non_null(reply);
		json_decref(reply);
		for (int k = 0; k < BRANCH_KIDS; k++) {
			snprintf(kid[k], sizeof(kid[k]), "%s/child-%d", bdir, k);
			child_freeze_and_verify(kid[k], true, seqs[k]);
		}
		/* Siblings are copies of one instant: their writers froze at the same step. */
		for (int w = 0; w < 2; w++)
			if (seqs[0][w] != seqs[1][w] || seqs[0][w] == 0)
				fail_msg("round %d: writer %d froze at %llu in child 0 but %llu in "
					 "child 1",
					 round, w, (unsigned long long)seqs[0][w],
					 (unsigned long long)seqs[1][w]);
		if (round == BRANCH_ROUNDS - 1) {
			/* The control: a page from a later instant must be caught. */
			free(child_ask(kid[0], "tear 1 1000\n", "pattern.tear cpu1", &skip));
			child_freeze_and_verify(kid[0], false, NULL);
		}
		for (int k = 0; k < BRANCH_KIDS; k++) {
			char sock[700];
			snprintf(sock, sizeof(sock), "%s/control.sock", kid[k]);
			json_decref(harness_call_expect(sock, "{\"cmd\":\"shutdown\"}", true));
		}
	}
	/* The source's writers ran on through every branch. */
	freeze_and_verify(&vm.p, NULL);
	vmm_send(&vm.p, "quit\n");
	stop_linux(&vm);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_early_boot_smoke),
	    cmocka_unit_test(test_bad_kernel_packages),
	    cmocka_unit_test(test_full_boot_pvh),
	    cmocka_unit_test(test_full_boot_bzimage),
	    cmocka_unit_test(test_linux_disk),
	    cmocka_unit_test(test_linux_snapshot_restore),
	    cmocka_unit_test(test_linux_branch_under_write_load),
	};
	if (where_begin(argc, argv, NEEDS_LINUX, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("Linux guest (Debian cloud kernel)", tests, setup, NULL);
}
