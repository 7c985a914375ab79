/* SPDX-License-Identifier: MIT */
/*
 * virtio-net with a stock Linux guest (docs/net-device.md): the Debian
 * kernel's virtio_net driver (in our initramfs) on forkd-vmm's device, the
 * tap in a network namespace this test creates. The guest configures eth0
 * with busybox `ip` and fetches a 1 MiB file of random bytes over HTTP from
 * a server the test runs inside that namespace; its md5 must match. Linux
 * negotiates the offloads and MRG_RXBUF, so this covers what the probe
 * guest does not: TSO/checksum offload over a real TCP stream.
 * needs=linux: natively with hardware virtualization, else in the nested
 * test host (which loads tun and veth, images/build.sh).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "where.h"

#define BOOT_TIMEOUT_MS 120000
#define BLOB_BYTES	(1 << 20)

static char dir[256], ns[32], vmlinux[600], initrd[600];
static pid_t server = -1;

static const char *images_dir(void)
{
	const char *d = getenv("FORKD_IMAGES");

	return d && *d ? d : ".cache/images";
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st != 0)
		fprintf(stderr, "command failed (%d): %s\n", st, cmd);
	return st;
}

static int setup(void **state)
{
	struct stat st;

	(void)state;
	snprintf(vmlinux, sizeof(vmlinux), "%s/vmlinux", images_dir());
	snprintf(initrd, sizeof(initrd), "%s/initramfs.cpio", images_dir());
	if (stat(vmlinux, &st) < 0 || stat(initrd, &st) < 0) {
		fprintf(stderr, "Linux images missing in %s: run `make images`\n", images_dir());
		return -1;
	}
	snprintf(ns, sizeof(ns), "fknl%d", (int)getpid());
	if (sh("ip netns add %s && ip -n %s link set lo up", ns, ns) != 0)
		return -1;
	return harness_tmpdir_create(dir, sizeof(dir), "netlinux");
}

static int teardown(void **state)
{
	(void)state;
	if (server > 0) {
		kill(server, SIGKILL);
		waitpid(server, NULL, 0);
		server = -1;
	}
	sh("ip netns del %s", ns);
	return harness_tmpdir_remove(dir);
}

/* python3's http.server on 10.77.0.1:8080 in the namespace, serving dir. */
static void start_server(void)
{
	server = fork();
	assert_true(server >= 0);
	if (server == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		execlp("ip", "ip", "netns", "exec", ns, "python3", "-m", "http.server", "8080",
		       "--bind", "10.77.0.1", "--directory", dir, (char *)NULL);
		_exit(127);
	}
	/* Listening once a connection from inside the namespace succeeds. */
	for (long long end = harness_deadline(20000); now_ms() < end; usleep(100000))
		if (sh("ip netns exec %s python3 -c \"import socket; "
		       "socket.create_connection(('10.77.0.1', 8080), 1)\" 2>/dev/null",
		       ns) == 0)
			return;
	fail_msg("the HTTP server in %s never listened", ns);
}

static void test_linux_guest_fetches_over_http(void **state)
{
	char blob[400], cmd[600], want[64], net[128];
	char *argv[] = {(char *)harness_vmm(),
			"--kernel",
			vmlinux,
			"--initrd",
			initrd,
			"--mem",
			"512M",
			"--net",
			net,
			"--append",
			"console=ttyS0 quiet -- ip link set eth0 up && "
			"ip addr add 10.77.0.2/24 dev eth0 && "
			"echo mac=$(cat /sys/class/net/eth0/address) && "
			"wget -q -O /tmp/blob http://10.77.0.1:8080/blob && "
			"echo blob-md5=$(md5sum /tmp/blob) && "
			"echo features=$(cat /sys/class/net/eth0/device/features)",
			NULL};
	struct vmm_proc p;
	const char *line;
	FILE *f;

	(void)state;
	assert_int_equal(sh("ip -n %s tuntap add dev fkl0 mode tap && "
			    "ip -n %s addr add 10.77.0.1/24 dev fkl0 && ip -n %s link set fkl0 up",
			    ns, ns, ns),
			 0);
	snprintf(blob, sizeof(blob), "%s/blob", dir);
	assert_int_equal(sh("head -c %d /dev/urandom > '%s'", BLOB_BYTES, blob), 0);
	snprintf(cmd, sizeof(cmd), "md5sum < '%s'", blob);
	f = popen(cmd, "r");
	assert_non_null(f);
	assert_non_null(fgets(want, sizeof(want), f));
	pclose(f);
	want[32] = '\0';
	start_server();

	snprintf(net, sizeof(net), "tap=fkl0,netns=%s,mac=02:77:00:00:00:02", ns);
	assert_int_equal(vmm_start(&p, argv), 0);
	assert_non_null(vmm_need_line(&p, "mac=02:77:00:00:00:02", BOOT_TIMEOUT_MS));
	line = vmm_need_line(&p, "blob-md5=", BOOT_TIMEOUT_MS);
	assert_non_null(line);
	if (!strstr(line, want))
		fail_msg("the guest's md5 (%s) is not the file's (%s)", line, want);
	line = vmm_need_line(&p, "features=", BOOT_TIMEOUT_MS);
	assert_non_null(line);
	fprintf(stderr, "guest: %s\n", line);
	/* Bit 15 MRG_RXBUF and bit 1 GUEST_CSUM: Linux took them. */
	assert_true(strlen(line) > strlen("features=") + 15);
	assert_int_equal(line[strlen("features=") + 15], '1');
	assert_int_equal(line[strlen("features=") + 1], '1');
	assert_non_null(vmm_need_line(&p, "EXIT status=0", BOOT_TIMEOUT_MS));
	assert_int_equal(vmm_wait(&p, BOOT_TIMEOUT_MS), 0);
	assert_null(strstr(p.err_text, "virtio-net"));
	vmm_free(&p);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_linux_guest_fetches_over_http),
	};
	if (where_begin(argc, argv, NEEDS_LINUX, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("virtio-net with a Linux guest", tests, setup, teardown);
}
