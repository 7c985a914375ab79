/* SPDX-License-Identifier: MIT */
/*
 * Regressions for two faults first seen in the nested test host, where a
 * guest's CPL0 runs under L1 KVM on QEMU's emulated SVM and is slow enough
 * to expose races that KVM-PVM hides. This binary always runs in the
 * nested host (tests/run-integration.sh), each case 20 times in a row.
 *
 * 1. The probe with 2 vCPUs hung before READY (last line mem.high_ok=1):
 *    both vCPUs halted right after the HLT of the halt call, their LAPIC
 *    timers expired, nothing in IRR or ISR. The timer interrupt had been
 *    taken between STI and HLT (the interrupt shadow was lost across an
 *    exit), so the HLT waited for a timer that had already fired. The
 *    probe's timer handler now steps past that HLT (guest/probe/entry.S)
 *    and counts it in halt.races.
 * 2. test_hostile_guest froze the nested host (see docs/testing.md).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "probe_cases.h"
#include "where.h"

#define RUNS		20
#define BOOT_TIMEOUT_MS 20000

static char dir[256];

static int setup(void **state)
{
	(void)state;
	return harness_tmpdir_create(dir, sizeof(dir), "nested-faults");
}

static int teardown(void **state)
{
	(void)state;
	return harness_tmpdir_remove(dir);
}

static void test_two_vcpu_start_20_times(void **state)
{
	unsigned long races = 0;

	(void)state;
	for (int run = 0; run < RUNS; run++) {
		struct vmm_proc p;
		char buf[64];

		probe_start(&p, NULL, "256M", "2", "work=idle,idle", NULL);
		if (!vmm_wait_line(&p, "READY cpus=2 ", BOOT_TIMEOUT_MS)) {
			vmm_dump(&p);
			fail_msg("run %d of %d: no READY cpus=2 within %d ms", run + 1, RUNS,
				 BOOT_TIMEOUT_MS);
		}
		vmm_send(&p, "report\n");
		probe_need_line(&p, "report.end", BOOT_TIMEOUT_MS);
		const char *v = vmm_value(&p, "halt.races", buf, sizeof(buf));
		assert_non_null(v);
		races += strtoul(v, NULL, 10);
		vmm_send(&p, "poweroff\n");
		probe_expect_exit(&p, 0, BOOT_TIMEOUT_MS);
		vmm_free(&p);
	}
	printf("two-vCPU boots: %d of %d reached READY; timer interrupts taken between STI and "
	       "HLT and survived: %lu\n",
	       RUNS, RUNS, races);
}

static void test_hostile_guest_20_times(void **state)
{
	(void)state;
	for (int run = 0; run < RUNS; run++)
		probe_hostile_run(dir);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_two_vcpu_start_20_times),
	    cmocka_unit_test(test_hostile_guest_20_times),
	};
	if (where_begin(argc, argv, NEEDS_TESTHOST, sizeof(tests) / sizeof(tests[0])) < 0)
		return 1;
	return cmocka_run_group_tests_name("faults seen in the nested test host", tests, setup,
					   teardown);
}
