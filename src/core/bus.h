/* SPDX-License-Identifier: MIT */
/*
 * The I/O-port and MMIO buses: each device registers a range with a small
 * ops table; a vCPU exit is dispatched to the device whose range holds the
 * address. Offsets passed to the ops are relative to the range base.
 * Accesses that hit no device read as all-ones and are otherwise ignored.
 */
#ifndef FORKD_CORE_BUS_H
#define FORKD_CORE_BUS_H

#include <pthread.h>
#include <stdint.h>

#include "util/err.h"

struct bus_device_ops {
	const char *name;
	/* len is 1, 2, 4 or 8; data is little-endian guest order. */
	void (*read)(void *opaque, uint64_t offset, uint8_t *data, uint32_t len);
	void (*write)(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len);
};

struct bus_range {
	uint64_t base;
	uint64_t len;
	const struct bus_device_ops *ops;
	void *opaque;
};

#define BUS_MAX_RANGES 64

struct bus {
	const char *name; /* "pio" or "mmio" */
	int nr_ranges;
	struct bus_range ranges[BUS_MAX_RANGES]; /* sorted by base, non-overlapping */
	uint64_t unhandled;			 /* count of accesses that hit nothing */
};

void bus_init(struct bus *bus, const char *name);
int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_device_ops *ops,
		 void *opaque, struct fk_err *err);
/* Return 0 if a device handled the access, -ENOENT otherwise (data set to ~0 on reads). */
int bus_read(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len);
int bus_write(struct bus *bus, uint64_t addr, const uint8_t *data, uint32_t len);

/*
 * How a device raises an interrupt. Edge interrupts (virtio-mmio) are an
 * eventfd registered as a KVM irqfd: writing 1 to it injects the GSI without
 * a trip through the VMM. Level lines (the UART) go through set_level.
 */
struct irq_line {
	uint32_t gsi;
	int eventfd; /* -1 if none */
	void (*set_level)(void *opaque, uint32_t gsi, int level);
	void *opaque;
};

void irq_line_pulse(const struct irq_line *irq);
void irq_line_set_level(const struct irq_line *irq, int level);

#endif
