/* SPDX-License-Identifier: MIT */
/*
 * What userfaultfd write-protect costs on this kernel, for the WP engine of
 * issue 13 (docs/design/userfaultfd.md): for private anonymous and shared
 * memfd (shmem) memory of SIZE MiB, all pages present,
 *   - arming WP over the range (UFFDIO_WRITEPROTECT), ms per GiB;
 *   - a synchronous WP fault's round trip, seen by the writer: a handler
 *     thread copies the 4 KiB page out, then un-protects it (the live
 *     snapshot's per-page work), p50/p99 in microseconds;
 *   - with UFFD_FEATURE_WP_ASYNC, the same first writes (the kernel resolves
 *     them), and one PAGEMAP_SCAN that collects the written pages and
 *     protects them again.
 * One JSON line per memory kind on stdout.
 *
 *   build/bench/uffd_wp [SIZE_MIB] [WRITES]     (default 1024, 20000)
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "util/uffd_compat.h"

#define PG 4096UL

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
	fprintf(stderr, "uffd_wp: %s: %s\n", what, strerror(errno));
	exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static uint8_t *map_memory(int shmem, size_t size)
{
	uint8_t *m;

	if (shmem) {
		int fd = memfd_create("uffd-wp-bench", MFD_CLOEXEC);

		if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
			die("memfd");
		m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		close(fd);
	} else {
		m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	}
	if (m == MAP_FAILED)
		die("mmap");
	for (size_t off = 0; off < size; off += PG)
		m[off] = 1;
	return m;
}

static int new_uffd(uint64_t features, uint8_t *m, size_t size)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	struct uffdio_api api = {.api = UFFD_API, .features = features};
	struct uffdio_register reg = {.range = {.start = (uintptr_t)m, .len = size},
				      .mode = UFFDIO_REGISTER_MODE_WP};

	if (fd < 0)
		die("userfaultfd");
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	if (ioctl(fd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER(WP)");
	return fd;
}

static double arm(int fd, uint8_t *m, size_t size)
{
	struct uffdio_writeprotect wp = {.range = {.start = (uintptr_t)m, .len = size},
					 .mode = UFFDIO_WRITEPROTECT_MODE_WP};
	uint64_t t0 = now_ns();

	if (ioctl(fd, UFFDIO_WRITEPROTECT, &wp) < 0)
		die("UFFDIO_WRITEPROTECT");
	return (double)(now_ns() - t0) / 1e6;
}

struct handler {
	int uffd;
	volatile int stop;
	uint8_t copy[PG];
};

/* The live snapshot's per-page work: copy the page out, then let the writer go on. */
static void *wp_handler(void *arg)
{
	struct handler *h = arg;

	while (!h->stop) {
		struct pollfd pfd = {.fd = h->uffd, .events = POLLIN};
		struct uffd_msg msg;

		if (poll(&pfd, 1, 10) <= 0)
			continue;
		if (read(h->uffd, &msg, sizeof(msg)) != sizeof(msg))
			continue;
		if (msg.event == UFFD_EVENT_PAGEFAULT &&
		    (msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)) {
			uint64_t page = msg.arg.pagefault.address & ~(PG - 1);
			struct uffdio_writeprotect un = {.range = {.start = page, .len = PG},
							 .mode = 0};

			memcpy(h->copy, (void *)(uintptr_t)page, PG);
			if (ioctl(h->uffd, UFFDIO_WRITEPROTECT, &un) < 0)
				die("un-protect");
		}
	}
	return NULL;
}

/* Times one write to each of n distinct random pages; fills us[] sorted. */
static void timed_writes(uint8_t *m, size_t size, size_t n, uint64_t *ns)
{
	size_t pages = size / PG;
	uint64_t x = 88172645463325252ULL;

	for (size_t i = 0; i < n; i++) {
		size_t p;
		uint64_t t0;

		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		p = (size_t)(x % pages);
		t0 = now_ns();
		m[p * PG + 8] = (uint8_t)i;
		ns[i] = now_ns() - t0;
	}
	qsort(ns, n, sizeof(ns[0]), cmp_u64);
}

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 1024;
	size_t writes = argc > 2 ? strtoul(argv[2], NULL, 10) : 20000;
	size_t size = mib << 20;
	uint64_t *ns = calloc(writes, sizeof(uint64_t));

	if (!ns || !mib || !writes)
		return 2;
	for (int shmem = 0; shmem < 2; shmem++) {
		uint8_t *m = map_memory(shmem, size);
		struct handler h = {0};
		pthread_t t;
		double arm_ms, arm_async_ms, scan_ms;
		uint64_t sync_p50, sync_p99, async_p50, async_p99, plain_p50;
		struct page_region regions[4096];
		struct pm_scan_arg scan;
		long found;
		int pagemap, async_fd;

		/* Baseline: the same writes with nothing armed. */
		timed_writes(m, size, writes, ns);
		plain_p50 = ns[writes / 2];

		h.uffd = new_uffd(UFFD_FEATURE_PAGEFAULT_FLAG_WP, m, size);
		arm_ms = arm(h.uffd, m, size);
		if (pthread_create(&t, NULL, wp_handler, &h))
			die("pthread_create");
		timed_writes(m, size, writes, ns);
		sync_p50 = ns[writes / 2];
		sync_p99 = ns[writes * 99 / 100];
		h.stop = 1;
		pthread_join(t, NULL);
		close(h.uffd);

		async_fd =
		    new_uffd(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_ASYNC, m, size);
		arm_async_ms = arm(async_fd, m, size);
		timed_writes(m, size, writes, ns);
		async_p50 = ns[writes / 2];
		async_p99 = ns[writes * 99 / 100];
		pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
		if (pagemap < 0)
			die("/proc/self/pagemap");
		/* Written pages, protected again in the same walk: the next round's collection. */
		scan = (struct pm_scan_arg){.size = sizeof(scan),
					    .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
					    .start = (uintptr_t)m,
					    .end = (uintptr_t)m + size,
					    .vec = (uintptr_t)regions,
					    .vec_len = sizeof(regions) / sizeof(regions[0]),
					    .category_mask = PAGE_IS_WRITTEN,
					    .return_mask = PAGE_IS_WRITTEN};
		{
			uint64_t t0 = now_ns(), pages = 0;

			long total = 0;

			/* The walk stops when the vector is full: go on from where it ended. */
			do {
				found = ioctl(pagemap, PAGEMAP_SCAN, &scan);
				if (found < 0)
					die("PAGEMAP_SCAN");
				for (long i = 0; i < found; i++)
					pages += (regions[i].end - regions[i].start) / PG;
				total += found;
				scan.start = scan.walk_end;
			} while (scan.walk_end < scan.end);
			scan_ms = (double)(now_ns() - t0) / 1e6;
			found = total;
			printf(
			    "{\"bench\":\"uffd-wp\",\"memory\":\"%s\",\"mib\":%zu,\"writes\":%zu,"
			    "\"arm_ms_per_gib\":%.2f,\"arm_async_ms_per_gib\":%.2f,"
			    "\"write_plain_ns_p50\":%llu,"
			    "\"sync_wp_fault_us_p50\":%.2f,\"sync_wp_fault_us_p99\":%.2f,"
			    "\"async_wp_fault_us_p50\":%.2f,\"async_wp_fault_us_p99\":%.2f,"
			    "\"pagemap_scan_ms\":%.2f,\"scan_regions\":%ld,\"scan_pages\":%llu}\n",
			    shmem ? "shmem" : "anon", mib, writes, arm_ms * 1024.0 / (double)mib,
			    arm_async_ms * 1024.0 / (double)mib, (unsigned long long)plain_p50,
			    (double)sync_p50 / 1e3, (double)sync_p99 / 1e3, (double)async_p50 / 1e3,
			    (double)async_p99 / 1e3, scan_ms, found, (unsigned long long)pages);
		}
		close(pagemap);
		close(async_fd);
		munmap(m, size);
	}
	free(ns);
	return 0;
}
