/* SPDX-License-Identifier: MIT */
/*
 * CPL3 life of every CPU: the BSP boots (command line, TSC, memory, ACPI,
 * APs), prints READY, then each CPU runs its workload while the BSP also
 * serves console commands.
 */
#include "probe.h"
#include "net.h"
#include "vsock.h"

#define SERVICE_INTERVAL_US 5000
#define BSP_IDLE_COUNT	    (5 * LAPIC_COUNT_MS)
#define AP_IDLE_COUNT	    (20 * LAPIC_COUNT_MS)
#define AP_WAIT_COUNT	    (LAPIC_COUNT_MS / 2)

/* See probe.h: cpus[i] belongs to CPU i once it runs. */
struct cpu cpus[MAX_CPUS];
unsigned nr_cpus;
/* Set by the BSP right after READY: APs start their workloads. */
uint32_t workloads_go;
/* BSP only. */
static bool done_printed;

static bool all_finite_done(void)
{
	for (unsigned i = 0; i < nr_cpus; i++)
		if (READ_ONCE(cpus[i].online) && work_is_finite(cpus[i].work) &&
		    !READ_ONCE(cpus[i].done))
			return false;
	return true;
}

void service_slow(struct cpu *c)
{
	if (genid_poll() && cfg.pattern_freeze)
		pattern_freeze_start();
	pattern_freeze_poll();
	console_poll();
	if (!done_printed && all_finite_done()) {
		done_printed = true;
		say("DONE");
		if (cfg.then == THEN_POWEROFF)
			acpi_poweroff();
		if (cfg.then == THEN_REBOOT)
			acpi_reset();
	}
	c->next_service = rdtsc() + us_to_tsc(SERVICE_INTERVAL_US);
}

static void report_cpu(struct cpu *c)
{
	unsigned i = c->index;

	if (!READ_ONCE(c->online)) {
		say("cpu%u.state=offline", i);
		return;
	}
	say("cpu%u.work=%s", i, work_name(c->work));
	if (work_is_finite(c->work))
		say("cpu%u.state=%s", i, READ_ONCE(c->done) ? "done" : "running");
	if (c->oom)
		say("cpu%u.error=oom", i);
	switch (c->work) {
	case WORK_TOUCH:
		if (READ_ONCE(c->done) && !c->oom) {
			say("cpu%u.touch_mib=%lu", i, cfg.touch_mib);
			say("cpu%u.touch_us=%lu", i, c->touch_us);
			say("cpu%u.touch_ok=%u", i, c->touch_ok ? 1 : 0);
		}
		break;
	case WORK_PATTERN:
		pattern_report(c);
		break;
	case WORK_STALL:
		stall_report(c);
		break;
	case WORK_BLKLOOP:
		blkloop_report(c);
		break;
	default:
		break;
	}
}

void run_command(char *line)
{
	char *cmd = line, *arg;

	while (*cmd == ' ')
		cmd++;
	arg = cmd;
	while (*arg && *arg != ' ')
		arg++;
	if (*arg)
		*arg++ = '\0';
	while (*arg == ' ')
		arg++;
	if (str_eq(cmd, "ping")) {
		say("pong");
	} else if (str_eq(cmd, "report")) {
		for (unsigned i = 0; i < nr_cpus; i++)
			report_cpu(&cpus[i]);
		genid_say();
		say("halt.races=%lu", READ_ONCE(halt_races));
		say("report.end");
	} else if (str_eq(cmd, "verify") && (*arg == '\0' || str_eq(arg, "strict"))) {
		pattern_verify(*arg != '\0');
	} else if (str_eq(cmd, "pattern-tear")) {
		pattern_tear(arg);
	} else if (str_eq(cmd, "fault")) {
		/* Tests the FAULT path: 512 GiB and up is never mapped. */
		(void)*(volatile uint64_t *)(uintptr_t)0x8000000000ULL;
	} else if (str_eq(cmd, "stall-window")) {
		stall_window_say();
	} else if (str_eq(cmd, "genid")) {
		genid_say();
	} else if (str_eq(cmd, "blkw")) {
		blk_cmd_write(arg);
	} else if (str_eq(cmd, "blkq")) {
		blk_cmd_queue(arg);
	} else if (str_eq(cmd, "blkq-wait")) {
		blk_cmd_queue_wait(arg);
	} else if (str_eq(cmd, "blkr")) {
		blk_cmd_read(arg);
	} else if (str_eq(cmd, "vsock")) {
		vsock_cmd(arg);
	} else if (str_eq(cmd, "net")) {
		net_cmd(arg);
	} else if (str_eq(cmd, "costs")) {
		costs_run();
	} else if (str_eq(cmd, "poweroff")) {
		acpi_poweroff();
	} else if (str_eq(cmd, "reboot")) {
		acpi_reset();
	} else if (*cmd) {
		say_text("error unknown command ", line, strlen(line));
	}
}

NORETURN void idle_forever(struct cpu *c)
{
	for (;;) {
		if (c->index == 0) {
			service_slow(c);
			sys_halt(BSP_IDLE_COUNT);
		} else {
			sys_halt(AP_IDLE_COUNT);
		}
	}
}

static NORETURN void run_workload(struct cpu *c)
{
	if (c->oom) {
		say("cpu%u.error=oom", c->index);
		WRITE_ONCE(c->done, 1);
		idle_forever(c);
	}
	switch (c->work) {
	case WORK_TOUCH:
		touch_run(c);
		break;
	case WORK_PATTERN:
		pattern_run(c);
	case WORK_STALL:
		stall_run(c);
	case WORK_BLK:
		blk_run(c);
		break;
	case WORK_HOSTILE:
		hostile_run(c);
		break;
	case WORK_BLKLOOP:
		blkloop_run(c);
		break;
	case WORK_VSOCK:
		vsock_run(c);
	case WORK_NET:
		net_run(c);
		break;
	case WORK_NETHOSTILE:
		nethostile_run(c);
		break;
	case WORK_IDLE:
		idle_forever(c);
	}
	say("cpu%u.done=%s", c->index, work_name(c->work));
	WRITE_ONCE(c->done, 1);
	idle_forever(c);
}

/*
 * Workloads and their memory are handed out by the BSP before READY, in CPU
 * order, to the CPUs online by then (a straggler AP stays idle).
 */
static void assign_workloads(void)
{
	unsigned blk_users = 0;

	for (unsigned i = 0; i < nr_cpus; i++) {
		struct cpu *c = &cpus[i];
		uint64_t bytes = 0;

		if (!READ_ONCE(c->online))
			continue;
		c->work = cfg.work[i];
		switch (c->work) {
		case WORK_TOUCH:
			bytes = cfg.touch_mib * MIB;
			break;
		case WORK_PATTERN:
			c->pattern_pages = cfg.pattern_mib * MIB / PAGE_SIZE;
			bytes = cfg.pattern_mib * MIB;
			break;
		case WORK_BLK:
		case WORK_HOSTILE:
		case WORK_BLKLOOP:
			/* Two drivers on one device would trip over each other: one device each. */
			c->blk_dev = blk_users++;
			bytes = ALLOC_ALIGN;
			/* hostile also attacks the vsock device, if the VM has one. */
			if (c->work == WORK_HOSTILE && virtio_find(VIRTIO_ID_VSOCK, 0)) {
				c->vsock_mem = mem_alloc(VSOCK_MEM_BYTES);
				c->oom = c->vsock_mem == 0;
			}
			break;
		case WORK_VSOCK:
			bytes = VSOCK_MEM_BYTES;
			break;
		case WORK_NET:
		case WORK_NETHOSTILE:
			bytes = NET_MEM_BYTES;
			break;
		default:
			break;
		}
		if (c->work == WORK_PATTERN && c->pattern_pages == 0)
			c->oom = true; /* pattern_mib=0: nothing to write into */
		if (!bytes)
			continue;
		c->mem_base = mem_alloc(bytes);
		c->mem_bytes = bytes;
		c->oom = c->oom || c->mem_base == 0;
	}
}

static NORETURN void bsp_main(void)
{
	uint64_t t_cpl3 = rdtsc();
	const struct hvm_start_info *si =
	    (const struct hvm_start_info *)(uintptr_t)pvh_start_info_paddr;
	struct cpu *bsp = &cpus[0];
	unsigned online;

	console_init();
	if (si->magic != XEN_HVM_START_MAGIC_VALUE) {
		say("FAULT hvm_start_info at 0x%lx has magic 0x%x, expected 0x%x",
		    pvh_start_info_paddr, si->magic, XEN_HVM_START_MAGIC_VALUE);
		sys_stop();
	}
	if (si->cmdline_paddr) {
		const char *cl = (const char *)(uintptr_t)si->cmdline_paddr;

		memcpy(cfg.cmdline, cl, strnlen(cl, sizeof(cfg.cmdline) - 1));
	}
	say("probe.version=%d", PROBE_VERSION);
	say_text("probe.cmdline=", cfg.cmdline, strlen(cfg.cmdline));
	cmdline_parse();
	time_init();
	mem_init(si);
	acpi_init(si->rsdp_paddr);
	online = smp_boot();
	for (unsigned i = 0; i < nr_cpus; i++)
		say("cpu%u.apic_id=%u", i, cpus[i].apic_id);
	assign_workloads();
	mem_say_pages();
	genid_init();
	say("boot.cpl3_us=%lu boot.smp_us=%lu boot.ready_us=%lu tsc.source=%s",
	    tsc_to_us(t_cpl3 - boot_tsc0), tsc_to_us(smp_start_ticks),
	    tsc_to_us(rdtsc() - boot_tsc0), tsc_source);
	if (genid_present())
		genid_say();
	say("READY cpus=%u mem_mib=%lu tsc_khz=%lu", online, mem_mib(), tsc_khz);
	WRITE_ONCE(workloads_go, 1);
	bsp->next_service = rdtsc();
	run_workload(bsp);
}

static NORETURN void ap_main(unsigned index)
{
	struct cpu *c = &cpus[index];

	lapic_init();
	c->online_tsc = rdtsc();
	barrier();
	WRITE_ONCE(c->online, 1);
	while (!READ_ONCE(workloads_go))
		sys_halt(AP_WAIT_COUNT);
	run_workload(c);
}

void cpu_main(unsigned index)
{
	if (index == 0)
		bsp_main();
	ap_main(index);
}
