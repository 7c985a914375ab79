/* SPDX-License-Identifier: MIT */
/*
 * ACPI tables for the guest: RSDP, XSDT, FADT (hardware-reduced), MADT and a
 * DSDT describing COM1, one LNRO0005 node per virtio-mmio device and,
 * optionally, the VM generation ID device with a Generic Event Device that
 * tells the guest the ID changed. Built
 * into a host buffer that the caller copies to guest physical base_gpa; the
 * tables point at each other by guest physical address.
 */
#ifndef FORKD_BOOT_ACPI_H
#define FORKD_BOOT_ACPI_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define ACPI_MAX_VIRTIO 32
#define ACPI_MAX_CPUS	254
/* One IOAPIC at GSI base 0 with 24 pins: the GED's GSI must be below this. */
#define ACPI_IOAPIC_PINS 24
/* Bytes of the 128-bit generation ID the guest reads at vmgenid_gpa. */
#define ACPI_VMGENID_LEN 16

struct acpi_virtio_dev {
	uint64_t base; /* MMIO base (guest physical) */
	uint32_t size; /* bytes of MMIO window */
	uint32_t gsi;  /* IOAPIC input, edge-triggered, active high */
};

struct acpi_config {
	int nr_cpus; /* APIC id of cpu i is i */
	uint64_t lapic_addr;
	uint64_t ioapic_addr;
	uint8_t ioapic_id;
	uint16_t com1_port; /* 0 = no COM1 node */
	uint32_t com1_gsi;  /* < 16: ISA IRQNoFlags; else Interrupt(Edge, ActiveHigh) */
	/*
	 * Hardware-reduced ACPI power management, all in I/O port space:
	 * the guest writes (SLP_TYP << 2) | SLP_EN (bit 5) to the sleep control
	 * register to enter \_S5 (SLP_TYP 5), and reset_value to reset_port
	 * to reset. A port of 0 leaves that register out of the FADT.
	 */
	uint16_t sleep_control_port;
	uint16_t sleep_status_port;
	uint16_t reset_port;
	uint8_t reset_value;
	int nr_virtio; /* GSIs of the virtio devices and COM1 must all differ */
	struct acpi_virtio_dev virtio[ACPI_MAX_VIRTIO];
	/*
	 * VM generation ID (\_SB.VGEN): guest physical address of the 16-byte
	 * ID, 8-byte aligned, outside the tables; 0 = no device. The guest
	 * (Linux drivers/virt/vmgenid.c) maps it and rereads it on Notify 0x80.
	 */
	uint64_t vmgenid_gpa;
	/*
	 * Generic Event Device (\_SB.GED, ACPI0013) on this GSI, edge-triggered,
	 * active high: an interrupt makes the guest run _EVT, which notifies
	 * \_SB.VGEN. 0 = no GED. Needs vmgenid_gpa; 1..ACPI_IOAPIC_PINS-1 and
	 * distinct from the COM1 and virtio GSIs.
	 */
	uint32_t ged_gsi;
};

/* Where each table landed (guest physical addresses and lengths). */
struct acpi_layout {
	uint64_t rsdp_gpa;
	uint64_t xsdt_gpa, fadt_gpa, madt_gpa, dsdt_gpa;
	uint32_t xsdt_len, fadt_len, madt_len, dsdt_len;
	size_t total_len; /* bytes of buf used, from buf[0] */
};

/*
 * Writes all tables into buf (buf[0] is guest physical base_gpa, buf_len
 * bytes available). The RSDP comes first at base_gpa, so put base_gpa
 * where a legacy scan finds it (0xE0000..0xFFFFF, 16-byte aligned).
 * Returns 0, or -ENOSPC / -EINVAL with err set.
 */
int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t buf_len, uint64_t base_gpa,
	       struct acpi_layout *layout, struct fk_err *err);

#endif
