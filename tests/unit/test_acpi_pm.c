/* SPDX-License-Identifier: MIT */
/* ACPI sleep/reset registers, the i8042 reset and the POST port, through their bus ops. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "devices/acpi_pm.h"
#include "core/layout.h"

/* Hardware-reduced sleep control register: SLP_TYP in bits 4:2, SLP_EN in bit 5. */
#define SLP_TYP(t) ((uint8_t)((t) << 2))
#define WAK_STS	   0x80

struct events {
	int poweroffs, resets;
};

static void count_event(void *opaque, enum acpi_pm_event ev)
{
	struct events *e = opaque;

	switch (ev) {
	case ACPI_PM_POWEROFF:
		e->poweroffs++;
		break;
	case ACPI_PM_RESET:
		e->resets++;
		break;
	default:
		fail_msg("unknown event %d", (int)ev);
	}
}

static void write_byte(const struct bus_device_ops *ops, struct acpi_pm *pm, uint8_t v)
{
	ops->write(pm, 0, &v, 1);
}

static uint8_t read_byte(const struct bus_device_ops *ops, struct acpi_pm *pm)
{
	uint8_t v = 0x5A;

	ops->read(pm, 0, &v, 1);
	return v;
}

static void test_s5_with_slp_en_powers_off(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, LAYOUT_PM_RESET_VALUE, count_event, &ev);
	write_byte(&acpi_pm_sleep_control_ops, &pm, SLP_TYP(ACPI_PM_SLP_TYP_S5) | ACPI_PM_SLP_EN);
	assert_int_equal(ev.poweroffs, 1);
	assert_int_equal(ev.resets, 0);
	/* Bits outside SLP_TYP/SLP_EN do not matter. */
	write_byte(&acpi_pm_sleep_control_ops, &pm,
		   SLP_TYP(ACPI_PM_SLP_TYP_S5) | ACPI_PM_SLP_EN | 0xC3);
	assert_int_equal(ev.poweroffs, 2);
}

static void test_other_sleep_writes_do_nothing(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, LAYOUT_PM_RESET_VALUE, count_event, &ev);
	/* Every other SLP_TYP with SLP_EN, and S5 without SLP_EN. */
	for (int typ = 0; typ < 8; typ++)
		if (typ != ACPI_PM_SLP_TYP_S5)
			write_byte(&acpi_pm_sleep_control_ops, &pm, SLP_TYP(typ) | ACPI_PM_SLP_EN);
	write_byte(&acpi_pm_sleep_control_ops, &pm, SLP_TYP(ACPI_PM_SLP_TYP_S5));
	write_byte(&acpi_pm_sleep_control_ops, &pm, 0);
	write_byte(&acpi_pm_sleep_control_ops, &pm, ACPI_PM_SLP_EN);
	assert_int_equal(ev.poweroffs, 0);
	assert_int_equal(ev.resets, 0);
	assert_int_equal(read_byte(&acpi_pm_sleep_control_ops, &pm), 0);
}

static void test_reset_register(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, LAYOUT_PM_RESET_VALUE, count_event, &ev);
	for (int v = 0; v < 256; v++)
		if (v != LAYOUT_PM_RESET_VALUE)
			write_byte(&acpi_pm_reset_ops, &pm, (uint8_t)v);
	assert_int_equal(ev.resets, 0);
	write_byte(&acpi_pm_reset_ops, &pm, LAYOUT_PM_RESET_VALUE);
	assert_int_equal(ev.resets, 1);
	assert_int_equal(ev.poweroffs, 0);
	assert_int_equal(read_byte(&acpi_pm_reset_ops, &pm), 0);

	/* The value is the one the FADT advertises, not a constant. */
	acpi_pm_init(&pm, 0x42, count_event, &ev);
	write_byte(&acpi_pm_reset_ops, &pm, LAYOUT_PM_RESET_VALUE);
	assert_int_equal(ev.resets, 1);
	write_byte(&acpi_pm_reset_ops, &pm, 0x42);
	assert_int_equal(ev.resets, 2);
}

static void test_i8042_reset(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, LAYOUT_PM_RESET_VALUE, count_event, &ev);
	for (int v = 0; v < 256; v++)
		if (v != ACPI_PM_I8042_RESET)
			write_byte(&acpi_pm_i8042_ops, &pm, (uint8_t)v);
	assert_int_equal(ev.resets, 0);
	write_byte(&acpi_pm_i8042_ops, &pm, ACPI_PM_I8042_RESET);
	assert_int_equal(ev.resets, 1);
	assert_int_equal(ev.poweroffs, 0);
	/* No controller: its status port reads all-ones. */
	assert_int_equal(read_byte(&acpi_pm_i8042_ops, &pm), 0xFF);
}

static void test_sleep_status_write_one_to_clear(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, LAYOUT_PM_RESET_VALUE, count_event, &ev);
	assert_int_equal(read_byte(&acpi_pm_sleep_status_ops, &pm), 0);
	pm.sleep_status = WAK_STS | 0x01;
	assert_int_equal(read_byte(&acpi_pm_sleep_status_ops, &pm), WAK_STS | 0x01);
	/* Writing 0 clears nothing; writing 1 clears only that bit. */
	write_byte(&acpi_pm_sleep_status_ops, &pm, 0);
	assert_int_equal(read_byte(&acpi_pm_sleep_status_ops, &pm), WAK_STS | 0x01);
	write_byte(&acpi_pm_sleep_status_ops, &pm, WAK_STS);
	assert_int_equal(read_byte(&acpi_pm_sleep_status_ops, &pm), 0x01);
	write_byte(&acpi_pm_sleep_status_ops, &pm, 0xFF);
	assert_int_equal(read_byte(&acpi_pm_sleep_status_ops, &pm), 0);
	assert_int_equal(ev.poweroffs + ev.resets, 0);
}

static void test_post_port_swallowed(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	acpi_pm_init(&pm, LAYOUT_PM_RESET_VALUE, count_event, &ev);
	pm.sleep_status = WAK_STS;
	for (int v = 0; v < 256; v++)
		write_byte(&acpi_pm_post_ops, &pm, (uint8_t)v);
	assert_int_equal(ev.poweroffs + ev.resets, 0);
	assert_int_equal(pm.sleep_status, WAK_STS);
	assert_int_equal(pm.reset_value, LAYOUT_PM_RESET_VALUE);
	assert_int_equal(read_byte(&acpi_pm_post_ops, &pm), 0xFF);
}

static void test_init(void **state)
{
	struct events ev = {0};
	struct acpi_pm pm;

	(void)state;
	memset(&pm, 0xAA, sizeof(pm));
	acpi_pm_init(&pm, 0x0F, count_event, &ev);
	assert_int_equal(pm.reset_value, 0x0F);
	assert_int_equal(pm.sleep_status, 0);
	assert_ptr_equal(pm.opaque, &ev);
	assert_true(pm.event == count_event);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_init),
	    cmocka_unit_test(test_s5_with_slp_en_powers_off),
	    cmocka_unit_test(test_other_sleep_writes_do_nothing),
	    cmocka_unit_test(test_reset_register),
	    cmocka_unit_test(test_i8042_reset),
	    cmocka_unit_test(test_sleep_status_write_one_to_clear),
	    cmocka_unit_test(test_post_port_swallowed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
