/* SPDX-License-Identifier: MIT */
/*
 * forkd-pattern: the point-in-time checker for Linux guests, the probe's
 * `pattern` workload as a static Linux program (it lives in the initramfs
 * as /usr/bin/forkd-pattern). One writer thread per CPU, each pinned to its
 * CPU, owns a region of anonymous memory and writes the deterministic
 * sequence of include/forkd/probe_pattern.h: check, store seq and tag at
 * offset 0 and 8 of page P(cpu, seq), publish seq.
 *
 * A branched child must be its source at one single instant. The writers
 * stop for good ("freeze") at their last published seq when
 *  - the VM generation ID changes (--freeze genid): Debian's kernel has no
 *    VMGENID driver, so the checker maps the 16-byte ID itself through
 *    /dev/mem (the VMM keeps it in reserved memory below 1 MiB, which
 *    CONFIG_STRICT_DEVMEM allows) and compares it before every store, as the
 *    probe does; a child then freezes at the branch instant;
 *  - or the command "freeze" arrives on standard input (the serial console).
 * Then "verify strict" requires every page to hold exactly the last write
 * with seq <= frozen_at, and its tag: a page from any later instant fails.
 *
 * Commands, one per line on standard input; every answer is one line that
 * starts with "pattern.":
 *   report             pattern.report cpu0=SEQ ... frozen=0|1
 *   freeze             pattern.frozen=1 cpus=N
 *   verify strict|live pattern.verify cpuI=ok|fail ... then pattern.verify.end ok=0|1
 *   tear [CPU [AHEAD]] store a seq AHEAD steps past the frozen point (a torn page)
 *   genid              pattern.genid=HEX
 *   quit               exit 0
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "forkd/probe_pattern.h"

#define DEFAULT_GENID_ADDR 0xDFF00ULL /* src/core/layout.h LAYOUT_VMGENID_ADDR */
#define MAX_WRITERS	   64
#define PAGE		   PROBE_PATTERN_PAGE_SIZE
#define TEAR_AHEAD	   1000

struct writer {
	pthread_t thread;
	unsigned index;
	uint8_t *base;
	uint64_t pages;
	_Atomic uint64_t seq;	    /* last published step */
	_Atomic uint64_t frozen_at; /* valid once frozen */
	_Atomic bool frozen;
};

/* Shared with the writer threads: set once by main before they start. */
static struct writer writers[MAX_WRITERS];
static unsigned nr_writers;
static const volatile uint64_t *genid; /* NULL: freeze on the command only */
static uint64_t genid0[2];
/* Set by the "freeze" command, read by every writer before each store. */
static _Atomic bool freeze_requested;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static volatile uint64_t *page_ptr(const struct writer *w, uint64_t page)
{
	return (volatile uint64_t *)(w->base + page * PAGE);
}

static bool must_freeze(void)
{
	if (atomic_load_explicit(&freeze_requested, memory_order_relaxed))
		return true;
	return genid && (genid[0] != genid0[0] || genid[1] != genid0[1]);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint64_t tag = PROBE_PATTERN_TAG(w->index), pages = w->pages;

	for (uint64_t epoch = 0;; epoch++) {
		struct probe_pattern_perm perm = probe_pattern_epoch_perm(w->index, epoch, pages);
		uint64_t page = perm.b, seq = epoch * pages;

		for (uint64_t i = 0; i < pages; i++) {
			volatile uint64_t *p = page_ptr(w, page);

			/* Check, store, publish: a copy finishes at most the step it is in. */
			if (must_freeze()) {
				atomic_store(&w->frozen_at, seq);
				atomic_store(&w->frozen, true);
				return NULL;
			}
			seq++;
			p[0] = seq;
			p[1] = tag;
			atomic_store_explicit(&w->seq, seq, memory_order_release);
			page += perm.a;
			if (page >= pages)
				page -= pages;
		}
	}
}

/* As the probe's verify (guest/probe/work_pattern.c): strict is exact for a frozen writer. */
static bool verify_writer(struct writer *w, bool strict)
{
	bool frozen = atomic_load(&w->frozen);
	uint64_t s = frozen ? atomic_load(&w->frozen_at) : atomic_load(&w->seq);
	uint64_t pages = w->pages;
	uint64_t epoch = s ? (s - 1) / pages : 0;
	uint64_t inflight = probe_pattern_page(w->index, s + 1, pages);
	struct probe_pattern_perm cur = probe_pattern_epoch_perm(w->index, epoch, pages);
	struct probe_pattern_perm prev =
	    probe_pattern_epoch_perm(w->index, epoch ? epoch - 1 : 0, pages);

	for (uint64_t p = 0; p < pages; p++) {
		volatile uint64_t *mem = page_ptr(w, p);
		uint64_t want = probe_pattern_expected(p, s, pages, &cur, &prev);
		uint64_t got = mem[0], got_tag = mem[1];
		bool ok = probe_pattern_page_ok(w->index, p, pages, s, want, inflight, got, got_tag,
						strict, frozen);

		if (!ok) {
			say("pattern.verify cpu%u=fail page=%" PRIu64 " want=%" PRIu64
			    " got=%" PRIu64 " seq=%" PRIu64 " tag=0x%" PRIx64 " frozen=%d",
			    w->index, p, want, got, s, got_tag, frozen);
			return false;
		}
	}
	say("pattern.verify cpu%u=ok seq=%" PRIu64 " pages=%" PRIu64 " frozen=%d", w->index, s,
	    pages, frozen);
	return true;
}

static bool all_frozen(void)
{
	for (unsigned i = 0; i < nr_writers; i++)
		if (!atomic_load(&writers[i].frozen))
			return false;
	return true;
}

static void wait_frozen(void)
{
	for (int i = 0; i < 5000 && !all_frozen(); i++)
		usleep(1000);
	if (all_frozen())
		say("pattern.frozen=1 cpus=%u", nr_writers);
	else
		say("pattern.frozen=0 error=a writer did not stop within 5 s");
}

/* tear [CPU [AHEAD]]: a page from a later instant, so a test can prove verify catches it. */
static void tear(const char *args)
{
	unsigned cpu = 0;
	unsigned long long ahead = TEAR_AHEAD;

	/* Empty: the defaults (EOF); anything else must parse. */
	if (sscanf(args, "%u %llu", &cpu, &ahead) == 0 || cpu >= nr_writers || ahead == 0) {
		say("pattern.error usage: tear [CPU < %u [AHEAD > 0]]", nr_writers);
		return;
	}
	struct writer *w = &writers[cpu];
	if (!atomic_load(&w->frozen)) {
		say("pattern.error tear: freeze first");
		return;
	}
	uint64_t seq = atomic_load(&w->frozen_at) + ahead;
	volatile uint64_t *p = page_ptr(w, probe_pattern_page(cpu, seq, w->pages));
	p[0] = seq;
	p[1] = PROBE_PATTERN_TAG(cpu);
	say("pattern.tear cpu%u seq=%llu", cpu, (unsigned long long)seq);
}

static int map_genid(uint64_t addr)
{
	long pagesize = sysconf(_SC_PAGESIZE);
	uint64_t base = addr & ~((uint64_t)pagesize - 1);
	int fd = open("/dev/mem", O_RDONLY | O_SYNC | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "forkd-pattern: /dev/mem: %s\n", strerror(errno));
		return -1;
	}
	void *map = mmap(NULL, (size_t)pagesize, PROT_READ, MAP_SHARED, fd, (off_t)base);
	close(fd);
	if (map == MAP_FAILED) {
		fprintf(stderr, "forkd-pattern: mmap /dev/mem at 0x%" PRIx64 ": %s\n", base,
			strerror(errno));
		return -1;
	}
	genid = (const volatile uint64_t *)((uint8_t *)map + (addr - base));
	genid0[0] = genid[0];
	genid0[1] = genid[1];
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: forkd-pattern [--threads N (1..%d, default: CPUs)] [--mib M "
		"(per thread, 1..4096, default 16)] [--freeze genid|command] "
		"[--genid-addr HEX]\n",
		MAX_WRITERS);
	return 2;
}

static int parse_ull(const char *s, unsigned long long min, unsigned long long max,
		     unsigned long long *out)
{
	char *end;

	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || end == s || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int main(int argc, char **argv)
{
	unsigned long long threads = (unsigned long long)sysconf(_SC_NPROCESSORS_ONLN), mib = 16;
	unsigned long long genid_addr = DEFAULT_GENID_ADDR;
	bool use_genid = false;
	char line[256];

	for (int i = 1; i < argc; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(argv[i], "--threads") && v && !parse_ull(v, 1, MAX_WRITERS, &threads))
			i++;
		else if (!strcmp(argv[i], "--mib") && v && !parse_ull(v, 1, 4096, &mib))
			i++;
		else if (!strcmp(argv[i], "--genid-addr") && v &&
			 !parse_ull(v, 0, UINT64_MAX - 16, &genid_addr))
			i++;
		else if (!strcmp(argv[i], "--freeze") && v && !strcmp(v, "genid"))
			use_genid = true, i++;
		else if (!strcmp(argv[i], "--freeze") && v && !strcmp(v, "command"))
			use_genid = false, i++;
		else {
			fprintf(stderr, "forkd-pattern: bad argument '%s'\n", argv[i]);
			return usage();
		}
	}
	if (use_genid && map_genid(genid_addr) < 0)
		return 1;

	nr_writers = (unsigned)threads;
	for (unsigned i = 0; i < nr_writers; i++) {
		struct writer *w = &writers[i];
		size_t len = (size_t)mib << 20;

		w->index = i;
		w->pages = len / PAGE;
		w->base = mmap(NULL, len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
		if (w->base == MAP_FAILED) {
			fprintf(stderr, "forkd-pattern: %llu MiB for writer %u: %s\n", mib, i,
				strerror(errno));
			return 1;
		}
	}
	for (unsigned i = 0; i < nr_writers; i++) {
		pthread_attr_t attr;
		cpu_set_t set;
		int ret;

		pthread_attr_init(&attr);
		CPU_ZERO(&set);
		CPU_SET(i % CPU_SETSIZE, &set);
		/* Pinned where the CPU exists; otherwise the scheduler places it. */
		if (i < (unsigned)sysconf(_SC_NPROCESSORS_ONLN))
			pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
		ret = pthread_create(&writers[i].thread, &attr, writer_main, &writers[i]);
		pthread_attr_destroy(&attr);
		if (ret) {
			fprintf(stderr, "forkd-pattern: thread %u: %s\n", i, strerror(ret));
			return 1;
		}
	}
	say("pattern.ready threads=%u pages=%" PRIu64 " freeze=%s genid=%016" PRIx64 "%016" PRIx64,
	    nr_writers, writers[0].pages, use_genid ? "genid" : "command", genid0[0], genid0[1]);

	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (!strcmp(line, "report")) {
			char text[1024];
			size_t off = 0;
			for (unsigned i = 0; i < nr_writers && off < sizeof(text); i++)
				off += (size_t)snprintf(text + off, sizeof(text) - off,
							" cpu%u=%" PRIu64, i,
							atomic_load(&writers[i].seq));
			say("pattern.report%s frozen=%d", text, all_frozen());
		} else if (!strcmp(line, "freeze")) {
			atomic_store(&freeze_requested, true);
			wait_frozen();
		} else if (!strcmp(line, "verify strict") || !strcmp(line, "verify live")) {
			bool ok = true, strict = !strcmp(line, "verify strict");
			for (unsigned i = 0; i < nr_writers; i++)
				ok = verify_writer(&writers[i], strict) && ok;
			say("pattern.verify.end ok=%d mode=%s", ok, strict ? "strict" : "live");
		} else if (!strncmp(line, "tear", 4) && (line[4] == '\0' || line[4] == ' ')) {
			tear(line + 4);
		} else if (!strcmp(line, "genid")) {
			say("pattern.genid=%016" PRIx64 "%016" PRIx64, genid ? genid[0] : 0,
			    genid ? genid[1] : 0);
		} else if (!strcmp(line, "quit")) {
			return 0;
		} else if (line[0]) {
			say("pattern.error unknown command '%.64s' (report, freeze, verify "
			    "strict|live, tear, genid, quit)",
			    line);
		}
	}
	return 0;
}
