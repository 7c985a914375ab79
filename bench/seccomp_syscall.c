/* SPDX-License-Identifier: MIT */
/*
 * The seccomp filters' own cost per syscall, on the call a vCPU thread makes
 * per exit: ioctl(fd, KVM_RUN) evaluated by the process filter and the vCPU
 * filter (here on /dev/null, which the kernel answers with ENOTTY at once,
 * so what is timed is the syscall entry, the filters and the return). With
 * "off" the same loop runs unfiltered. Prints one JSON line: the best batch
 * (least disturbed by other work on the host) and the median batch.
 *
 *   seccomp-syscall on|off [BATCHES]
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "jail/seccomp.h"

#define CALLS_PER_BATCH 100000

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	enum fk_seccomp_mode mode;
	struct fk_err err = {0};
	int batches = argc > 2 ? atoi(argv[2]) : 50;
	double *ns;
	int fd;

	if (argc < 2 || fk_seccomp_parse_mode(argv[1], &mode) < 0 || mode == FK_SECCOMP_LOG ||
	    batches < 1 || batches > 100000) {
		fprintf(stderr, "usage: seccomp-syscall on|off [BATCHES (1..100000)]\n");
		return 2;
	}
	ns = calloc((size_t)batches, sizeof(*ns));
	fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (!ns || fd < 0) {
		perror("seccomp-syscall: setup");
		return 1;
	}
	if (fk_seccomp_install_process(mode, &err) < 0 ||
	    fk_seccomp_enter_role(FK_SECCOMP_ROLE_VCPU, &err) < 0) {
		fprintf(stderr, "seccomp-syscall: %s\n", err.msg);
		return 1;
	}
	for (int b = 0; b < batches; b++) {
		double t0 = now_ns();
		for (int i = 0; i < CALLS_PER_BATCH; i++)
			if (ioctl(fd, KVM_RUN, 0) != -1 || errno != ENOTTY)
				_exit(3);
		ns[b] = (now_ns() - t0) / CALLS_PER_BATCH;
	}
	qsort(ns, (size_t)batches, sizeof(*ns), cmp_double);
	printf("{\"bench\":\"seccomp-syscall\",\"seccomp\":\"%s\",\"call\":\"ioctl KVM_RUN\","
	       "\"filters\":%d,\"batches\":%d,\"calls_per_batch\":%d,\"best_ns\":%.1f,"
	       "\"median_ns\":%.1f}\n",
	       argv[1], mode == FK_SECCOMP_ON ? 2 : 0, batches, CALLS_PER_BATCH, ns[0],
	       ns[batches / 2]);
	free(ns);
	return 0;
}
