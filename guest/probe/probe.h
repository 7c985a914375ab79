/* SPDX-License-Identifier: MIT */
/*
 * The probe guest: shared declarations for its CPL3 C code.
 *
 * The probe is a bare-metal program: its per-CPU table, configuration and
 * device state are globals by nature (there is no process around it). Each
 * such global says who writes it and when.
 */
#ifndef PROBE_H
#define PROBE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "forkd/pvh.h"
#include "layout.h"
#include "sys.h"

#define NORETURN	 __attribute__((noreturn))
#define PRINTF(a, b)	 __attribute__((format(printf, a, b)))
#define ARRAY_SIZE(a)	 (sizeof(a) / sizeof((a)[0]))
#define READ_ONCE(x)	 (*(volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile __typeof__(x) *)&(x) = (v))
#define MIB		 (1ULL << 20)
#define PAGE_SIZE	 4096ULL

#define COM1 0x3F8

/* entry.S / probe.ld */
extern uint64_t pvh_start_info_paddr;
extern uint64_t boot_tsc0;	     /* CPL0 rdtsc at the PVH entry */
extern volatile uint64_t halt_races; /* entry.S timer_entry: halts the interrupt shadow missed */
extern uint8_t apic_to_index[256];
extern const char trampoline_start[], trampoline_end[];
extern char __image_start[], __image_end[];

/* lib.c */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
bool str_eq(const char *a, const char *b);
bool tok_eq(const char *s, size_t n, const char *word);
bool parse_u64(const char *s, size_t n, uint64_t *out);
uint64_t hash64(uint64_t x);
uint64_t fnv1a64(const void *data, size_t n);

/* fmt.c */
int vfmt(char *buf, size_t cap, const char *f, va_list ap);
int fmt(char *buf, size_t cap, const char *f, ...) PRINTF(3, 4);

/* console.c: COM1 output one whole line at a time, and the BSP's line input. */
struct spinlock {
	uint32_t locked;
};
void spin_lock(struct spinlock *l);
bool spin_trylock(struct spinlock *l);
void spin_unlock(struct spinlock *l);
void console_init(void);
void say(const char *f, ...) PRINTF(1, 2);
/* One line: prefix, then n bytes of text (non-printable bytes become '?'). */
void say_text(const char *prefix, const char *text, size_t n);
/* Writes a line even if another CPU died holding the output lock. */
void say_urgent(const char *line, size_t n);
/* Reads pending serial input; runs complete lines as commands. BSP only. */
void console_poll(void);

/* cmdline.c */
enum work {
	WORK_IDLE,
	WORK_TOUCH,
	WORK_PATTERN,
	WORK_STALL,
	WORK_BLK,
	WORK_HOSTILE,
	WORK_BLKLOOP,
	WORK_VSOCK,
	WORK_NET,
	WORK_NETHOSTILE
};
enum then { THEN_NOTHING, THEN_POWEROFF, THEN_REBOOT };
#define CMDLINE_MAX 2048
struct config {
	char cmdline[CMDLINE_MAX];
	enum work work[MAX_CPUS];
	uint64_t touch_mib;
	uint64_t pattern_mib;
	uint64_t stall_us;
	uint64_t blk_read_sectors;
	bool blk_write;
	uint64_t blk_write_sector;
	uint64_t tsc_khz;     /* 0: not given */
	uint64_t virtio_mmio; /* 0: not given */
	uint64_t vmgenid;     /* 0: not given */
	uint64_t verbose;     /* extra diagnostic lines before READY (each byte is a VM exit) */
	bool pattern_freeze; /* pattern_freeze=genid: writers stop when the generation ID changes */
	bool pages_4k;	     /* pages=4k: mem_alloc maps what it hands out with 4 KiB pages */
	uint64_t vsock_port; /* vsock: the port the echo workload listens on */
	uint64_t vsock_probe_port; /* hostile: a host port nobody listens on (liveness) */
	uint64_t vsock_flood_port; /* hostile: the host port the REQUEST flood goes to */
	uint64_t vsock_flood;	   /* hostile: how many REQUESTs the flood sends */
	uint64_t net_tx;	   /* net: frames sent at start */
	uint64_t net_len;	   /* net: their length (Ethernet header included) */
	uint64_t net_mrg;	   /* net: negotiate MRG_RXBUF */
	uint64_t net_rxbuf;	   /* net: rx buffer bytes with MRG_RXBUF (0: 2048) */
	uint64_t net_flood;	   /* nethostile: frames in the flood */
	uint64_t net_offload;	   /* net: accept GUEST_CSUM and GUEST_TSO4/6 */
	enum then then;
};
/* Written by the BSP before READY, read-only afterwards. */
extern struct config cfg;
void cmdline_parse(void);
const char *work_name(enum work w);
bool work_is_finite(enum work w);

/* time.c */
extern uint64_t tsc_khz;     /* as reported in READY; 0 if unknown */
extern uint64_t tsc_khz_eff; /* for our own timing: a guess if unknown */
extern const char *tsc_source;
void time_init(void);
uint64_t tsc_to_us(uint64_t ticks);
uint64_t us_to_tsc(uint64_t us);
void delay_us(uint64_t us);
/*
 * Elapsed time for timeouts that must survive a snapshot restored on another
 * VM or host, where the TSC may leap forward or back: each step between two
 * reads counts at most STOPWATCH_STEP_MAX_US, so a leap cannot expire a
 * timeout at once. Read it often (poll loops).
 */
#define STOPWATCH_STEP_MAX_US 10000
struct stopwatch {
	uint64_t last_tsc;
	uint64_t elapsed_tsc;
};
void stopwatch_start(struct stopwatch *sw);
uint64_t stopwatch_us(struct stopwatch *sw);

/* mem.c */
void mem_init(const struct hvm_start_info *si);
uint64_t mem_mib(void);
/*
 * Contiguous, 2 MiB aligned RAM from 16 MiB up; 0 when none is left. With
 * pages=4k the range is mapped with 4 KiB pages on return (this CPU's TLB
 * flushed); other CPUs may still cache the equivalent 2 MiB translations.
 */
uint64_t mem_alloc(uint64_t bytes);
/* Boot line: mem.pages=4k|2m, and for 4k what splitting the allocations so far cost. */
void mem_say_pages(void);
bool mem_is_ram(uint64_t addr, uint64_t len);
uint64_t mem_top(void);

/* acpi.c */
struct gas {
	uint8_t space; /* 0 system memory, 1 system I/O */
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t addr;
};
#define ACPI_MAX_VIRTIO 32
struct acpi_info {
	uint64_t rsdp;
	uint64_t madt, fadt, dsdt;
	uint32_t dsdt_len;
	unsigned nr_apic_ids;
	uint32_t apic_ids[MAX_CPUS]; /* enabled CPUs in MADT order */
	bool hw_reduced;
	struct gas sleep_control;
	struct gas reset_reg;
	uint8_t reset_value;
	int s5_slp_typ; /* -1: no \_S5_ found */
	unsigned nr_virtio;
	uint64_t virtio[ACPI_MAX_VIRTIO]; /* LNRO0005 register windows */
};
/* Written by the BSP before READY. */
extern struct acpi_info acpi;
void acpi_init(uint64_t rsdp_hint);
/* The n-th (from 0) table with signature sig in the XSDT/RSDT, or 0. */
uint64_t acpi_table(const char *sig, unsigned n);
NORETURN void acpi_poweroff(void);
NORETURN void acpi_reset(void);

/* smp.c */
void lapic_init(void);
uint32_t lapic_id(void);
/* Starts the APs listed in the MADT and waits for them; returns CPUs online. */
unsigned smp_boot(void);
/* TSC ticks from the first INIT until the last AP came online (0: no APs). */
extern uint64_t smp_start_ticks;
/* LAPIC timer counts (KVM's APIC bus runs at 1 GHz: one count per ns). */
#define LAPIC_COUNT_MS 1000000u

/* Per CPU. Each CPU writes its own entry; the BSP reads them for reports. */
#define STALL_LAST 16
struct stall_gap {
	uint64_t start_tsc;
	uint64_t len_tsc;
};
struct cpu {
	unsigned index;
	uint32_t apic_id;
	uint32_t online;
	uint64_t online_tsc; /* when it set online */
	uint32_t done;	     /* its finite workload finished (or gave up) */
	enum work work;
	bool oom;
	uint64_t next_service; /* BSP: tsc of the next console poll */
	uint64_t mem_base;     /* workload RAM from mem_alloc */
	uint64_t mem_bytes;
	unsigned blk_dev;   /* blk/hostile/blkloop: which virtio-blk device (n-th such workload) */
	uint64_t vsock_mem; /* hostile: driver memory for the vsock cases (0: no device) */
	/* touch */
	uint64_t touch_us;
	bool touch_ok;
	/* pattern */
	uint64_t pattern_seq; /* last seq whose page store completed */
	uint64_t pattern_pages;
	uint64_t pattern_frozen_at; /* pattern_freeze: the seq it stopped at (valid once frozen) */
	uint32_t pattern_frozen;    /* pattern_freeze: set after pattern_frozen_at, never cleared */
	/* stall */
	uint64_t stall_threshold_tsc;
	uint64_t stall_count;
	uint64_t stall_max_tsc;
	uint64_t stall_window_max_tsc; /* since the last `stall-window` command */
	uint64_t stall_total;
	struct stall_gap stall_last[STALL_LAST];
	/* blkloop */
	uint64_t blkloop_ok;
	uint64_t blkloop_bad;
} __attribute__((aligned(64)));
/* cpus[0..nr_cpus) from the MADT; entry i written by CPU i (and the BSP before READY). */
extern struct cpu cpus[MAX_CPUS];
extern unsigned nr_cpus;
extern uint32_t workloads_go;

/* main.c */
void service_slow(struct cpu *c);
/* Called from workload loops: lets the BSP poll the console every few ms. */
static inline void service(struct cpu *c)
{
	if (c->index == 0 && rdtsc() >= c->next_service)
		service_slow(c);
}
NORETURN void cpu_main(unsigned index);
void run_command(char *line);
/* Parks the CPU for good; the BSP goes on serving the console. */
NORETURN void idle_forever(struct cpu *c);

/* work_*.c */
void touch_run(struct cpu *c);
NORETURN void pattern_run(struct cpu *c);
void pattern_verify(bool strict);
void pattern_report(struct cpu *c);
/* BSP, from the console loop: the generation ID changed (pattern_freeze). */
void pattern_freeze_start(void);
/* BSP, from the console loop: prints pattern.frozen= once per change. */
void pattern_freeze_poll(void);
/* Console command `pattern-tear [cpu [ahead]]`: breaks a writer's image (verifier self-test). */
void pattern_tear(char *arg);
NORETURN void stall_run(struct cpu *c);
void stall_report(struct cpu *c);
void stall_window_say(void);

/* blk.c, hostile.c, blk_loop.c, blk_cmd.c */
void blk_run(struct cpu *c);
void hostile_run(struct cpu *c);
void blkloop_run(struct cpu *c);
void blkloop_report(struct cpu *c);
/* Console commands `blkw <sector> <tag>` and `blkr <sector>`; arg is the rest of the line. */
void blk_cmd_write(char *arg);
void blk_cmd_read(char *arg);
void blk_cmd_queue(char *arg);
void blk_cmd_queue_wait(char *arg);

/* vsock.c (declared in vsock.h): vsock_run, vsock_cmd. */

/* genid.c: the ACPI VM generation ID (VMGENID). */
void genid_init(void);
bool genid_present(void);
/* Prints genid=<32 hex> (or genid=none). */
void genid_say(void);
/* BSP, from the console loop: prints genid.changed=... once per change; true then. */
bool genid_poll(void);
/*
 * The ID as two words, for workloads that compare it at every step (a
 * cached read, no call), or NULL without an ID. A read torn by a concurrent
 * rewrite still differs from the old ID, so it is a change either way.
 */
typedef uint64_t __attribute__((aligned(1))) genid_word;
const volatile genid_word *genid_words(void);
/*
 * The two words of the ID at boot (genid_init, before the workloads start): what a writer
 * compares against, so one that starts only after a snapshot or BRANCH (a late vCPU) still
 * sees the change and freezes, instead of taking the new ID as its own.
 */
void genid_boot_words(uint64_t *w0, uint64_t *w1);

/* costs.c */
void costs_run(void);

/* fault.c */
NORETURN void fault_report(unsigned cpu, uint64_t vec, uint64_t err, uint64_t rip, uint64_t cr2);

#endif
