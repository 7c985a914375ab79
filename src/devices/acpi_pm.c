/* SPDX-License-Identifier: MIT */
#include "devices/acpi_pm.h"

#include <string.h>

void acpi_pm_init(struct acpi_pm *pm, uint8_t reset_value,
		  void (*event)(void *opaque, enum acpi_pm_event ev), void *opaque)
{
	memset(pm, 0, sizeof(*pm));
	pm->reset_value = reset_value;
	pm->event = event;
	pm->opaque = opaque;
}

static void read_zero(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0, len);
}

static void read_all_ones(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	(void)opaque;
	(void)offset;
	memset(data, 0xff, len);
}

static void ignore_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	(void)opaque;
	(void)offset;
	(void)data;
	(void)len;
}

static void sleep_control_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;
	uint8_t v = data[0];

	(void)offset;
	(void)len;
	/* Only S5 is offered in the DSDT; other sleep types are ignored. */
	if ((v & ACPI_PM_SLP_EN) && ((v >> 2) & 7) == ACPI_PM_SLP_TYP_S5)
		pm->event(pm->opaque, ACPI_PM_POWEROFF);
}

static void sleep_status_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;

	(void)offset;
	memset(data, 0, len);
	data[0] = pm->sleep_status;
}

static void sleep_status_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;

	(void)offset;
	(void)len;
	/* Write-1-to-clear, as the spec defines WAK_STS. */
	pm->sleep_status &= (uint8_t)~data[0];
}

static void reset_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;

	(void)offset;
	(void)len;
	if (data[0] == pm->reset_value)
		pm->event(pm->opaque, ACPI_PM_RESET);
}

static void i8042_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct acpi_pm *pm = opaque;

	(void)offset;
	(void)len;
	if (data[0] == ACPI_PM_I8042_RESET)
		pm->event(pm->opaque, ACPI_PM_RESET);
}

const struct bus_device_ops acpi_pm_sleep_control_ops = {
    .name = "acpi-sleep-control", .read = read_zero, .write = sleep_control_write};
const struct bus_device_ops acpi_pm_sleep_status_ops = {
    .name = "acpi-sleep-status", .read = sleep_status_read, .write = sleep_status_write};
const struct bus_device_ops acpi_pm_reset_ops = {
    .name = "acpi-reset", .read = read_zero, .write = reset_write};
/* No keyboard controller: status reads all-ones, which Linux takes as "absent". */
const struct bus_device_ops acpi_pm_i8042_ops = {
    .name = "i8042", .read = read_all_ones, .write = i8042_write};
const struct bus_device_ops acpi_pm_post_ops = {
    .name = "post", .read = read_all_ones, .write = ignore_write};
