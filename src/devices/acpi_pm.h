/* SPDX-License-Identifier: MIT */
/*
 * Power management as a hardware-reduced ACPI platform sees it: the FADT's
 * sleep control/status registers (S5 = power off) and reset register, plus
 * the legacy i8042 reset (0xFE to port 0x64) and the POST port 0x80, which
 * Linux writes as an I/O delay and which we swallow quietly.
 */
#ifndef FORKD_DEVICES_ACPI_PM_H
#define FORKD_DEVICES_ACPI_PM_H

#include <stdint.h>

#include "core/bus.h"

#define ACPI_PM_SLP_EN	    0x20
#define ACPI_PM_SLP_TYP_S5  5
#define ACPI_PM_I8042_RESET 0xFE

enum acpi_pm_event {
	ACPI_PM_POWEROFF,
	ACPI_PM_RESET,
};

struct acpi_pm {
	uint8_t reset_value;
	uint8_t sleep_status;
	void (*event)(void *opaque, enum acpi_pm_event ev);
	void *opaque;
};

void acpi_pm_init(struct acpi_pm *pm, uint8_t reset_value,
		  void (*event)(void *opaque, enum acpi_pm_event ev), void *opaque);

/* Register each at its own port: sleep control, sleep status, reset (one byte each). */
extern const struct bus_device_ops acpi_pm_sleep_control_ops;
extern const struct bus_device_ops acpi_pm_sleep_status_ops;
extern const struct bus_device_ops acpi_pm_reset_ops;
extern const struct bus_device_ops acpi_pm_i8042_ops;
extern const struct bus_device_ops acpi_pm_post_ops;

#endif
