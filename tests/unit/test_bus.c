/* SPDX-License-Identifier: MIT */
/* The PIO/MMIO buses: registration rules, dispatch by address, and interrupt lines. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/bus.h"

/* A device that records its last access and reads back bytes derived from the offset. */
struct recorder {
	int id;
	int reads, writes;
	uint64_t offset;
	uint32_t len;
	uint8_t written[8];
};

static uint8_t read_value(int id, uint64_t offset, uint32_t i)
{
	return (uint8_t)(id * 16 + offset + i);
}

static void rec_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	struct recorder *r = opaque;

	r->reads++;
	r->offset = offset;
	r->len = len;
	for (uint32_t i = 0; i < len; i++)
		data[i] = read_value(r->id, offset, i);
}

static void rec_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct recorder *r = opaque;

	r->writes++;
	r->offset = offset;
	r->len = len;
	memcpy(r->written, data, len);
}

static const struct bus_device_ops rec_ops = {
    .name = "recorder", .read = rec_read, .write = rec_write};
static const struct bus_device_ops other_ops = {
    .name = "other", .read = rec_read, .write = rec_write};
static const struct bus_device_ops write_only_ops = {.name = "write-only", .write = rec_write};

static void register_or_fail(struct bus *bus, uint64_t base, uint64_t len,
			     const struct bus_device_ops *ops, void *opaque)
{
	struct fk_err err = {0};

	if (bus_register(bus, base, len, ops, opaque, &err) != 0)
		fail_msg("register %#llx+%#llx: %s", (unsigned long long)base,
			 (unsigned long long)len, err.msg);
}

static void assert_sorted(const struct bus *bus)
{
	for (int i = 1; i < bus->nr_ranges; i++)
		assert_true(bus->ranges[i - 1].base + bus->ranges[i - 1].len <=
			    bus->ranges[i].base);
}

static void test_register_keeps_ranges_sorted(void **state)
{
	static const uint64_t bases[] = {0x3F8, 0x60, 0x600, 0x0, 0x80, 0x602, 0xCF8};
	struct recorder devs[7] = {0};
	struct bus bus;

	(void)state;
	bus_init(&bus, "pio");
	assert_string_equal(bus.name, "pio");
	assert_int_equal(bus.nr_ranges, 0);
	for (int i = 0; i < 7; i++)
		register_or_fail(&bus, bases[i], i == 0 ? 8 : 1, &rec_ops, &devs[i]);
	assert_int_equal(bus.nr_ranges, 7);
	assert_sorted(&bus);
	/* Each range still carries its own device. */
	for (int i = 0; i < bus.nr_ranges; i++)
		for (int j = 0; j < 7; j++)
			if (bases[j] == bus.ranges[i].base)
				assert_ptr_equal(bus.ranges[i].opaque, &devs[j]);
}

static void test_overlap_refused(void **state)
{
	static const struct {
		uint64_t base, len;
		int code; /* 0: accepted */
	} cases[] = {
	    {0x100, 0x10, EEXIST}, /* exact */
	    {0xF8, 0x10, EEXIST},  /* overlaps the start */
	    {0x10F, 0x4, EEXIST},  /* overlaps the end */
	    {0x104, 0x2, EEXIST},  /* inside */
	    {0x0, 0x1000, EEXIST}, /* contains */
	    {0x10F, 0x1, EEXIST},  /* last byte */
	    {0xF0, 0x10, 0},	   /* adjacent below */
	    {0x110, 0x1, 0},	   /* adjacent above */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bus bus;
		struct fk_err err = {0};
		struct recorder dev = {0};

		bus_init(&bus, "pio");
		register_or_fail(&bus, 0x100, 0x10, &rec_ops, &dev);
		assert_int_equal(
		    bus_register(&bus, cases[i].base, cases[i].len, &other_ops, &dev, &err),
		    -cases[i].code);
		assert_int_equal(bus.nr_ranges, cases[i].code ? 1 : 2);
		assert_sorted(&bus);
		if (cases[i].code) {
			/* Both devices are named, so the user sees who collided. */
			assert_non_null(strstr(err.msg, "other"));
			assert_non_null(strstr(err.msg, "recorder"));
		}
	}
}

static void test_bad_ranges_refused(void **state)
{
	static const struct {
		uint64_t base, len;
	} cases[] = {
	    {0x100, 0},
	    {UINT64_MAX, 2},
	    {UINT64_MAX - 0xFFF, 0x2000},
	    {1, UINT64_MAX},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct bus bus;
		struct fk_err err = {0};

		bus_init(&bus, "mmio");
		assert_int_equal(
		    bus_register(&bus, cases[i].base, cases[i].len, &rec_ops, NULL, &err), -EINVAL);
		assert_int_equal(bus.nr_ranges, 0);
		assert_non_null(strstr(err.msg, "mmio"));
		assert_non_null(strstr(err.msg, "recorder"));
	}
}

static void test_full_table(void **state)
{
	struct bus bus;
	struct fk_err err = {0};

	(void)state;
	bus_init(&bus, "mmio");
	/* Registered from the top down, so every insert shifts the whole table. */
	for (int i = BUS_MAX_RANGES - 1; i >= 0; i--)
		register_or_fail(&bus, 0x1000 * (uint64_t)i, 0x100, &rec_ops, NULL);
	assert_int_equal(bus.nr_ranges, BUS_MAX_RANGES);
	assert_sorted(&bus);
	assert_int_equal(
	    bus_register(&bus, 0x1000 * (uint64_t)BUS_MAX_RANGES, 0x100, &rec_ops, NULL, &err),
	    -ENOSPC);
	assert_int_equal(bus.nr_ranges, BUS_MAX_RANGES);
	assert_non_null(strstr(err.msg, "mmio"));
}

static void test_dispatch_with_offsets(void **state)
{
	struct recorder a = {.id = 1}, b = {.id = 2};
	const uint8_t payload[4] = {0xDE, 0xAD, 0xBE, 0xEF};
	uint8_t data[8];
	struct bus bus;

	(void)state;
	bus_init(&bus, "mmio");
	register_or_fail(&bus, 0xD0000000, 0x200, &rec_ops, &a);
	register_or_fail(&bus, 0xD0000200, 0x200, &rec_ops, &b);

	assert_int_equal(bus_write(&bus, 0xD0000010, payload, 4), 0);
	assert_int_equal(a.writes, 1);
	assert_int_equal(a.offset, 0x10);
	assert_int_equal(a.len, 4);
	assert_memory_equal(a.written, payload, 4);
	assert_int_equal(b.writes, 0);

	/* First and last byte of b; the last 8-byte slot of a. */
	const struct {
		uint64_t addr;
		uint32_t len;
		struct recorder *dev;
		uint64_t offset;
	} reads[] = {
	    {0xD0000200, 1, &b, 0},
	    {0xD00003FF, 1, &b, 0x1FF},
	    {0xD00001F8, 8, &a, 0x1F8},
	    {0xD0000000, 2, &a, 0},
	};
	for (size_t i = 0; i < sizeof(reads) / sizeof(reads[0]); i++) {
		int before = reads[i].dev->reads;

		memset(data, 0, sizeof(data));
		assert_int_equal(bus_read(&bus, reads[i].addr, data, reads[i].len), 0);
		assert_int_equal(reads[i].dev->reads, before + 1);
		assert_int_equal(reads[i].dev->offset, reads[i].offset);
		assert_int_equal(reads[i].dev->len, reads[i].len);
		for (uint32_t j = 0; j < reads[i].len; j++)
			assert_int_equal(data[j], read_value(reads[i].dev->id, reads[i].offset, j));
	}
	assert_int_equal(bus.unhandled, 0);
}

/* Many devices: the lookup finds each one at its first, middle and last byte, and none in gaps. */
static void test_dispatch_many_ranges(void **state)
{
	struct recorder devs[BUS_MAX_RANGES];
	uint8_t data[1];
	struct bus bus;

	(void)state;
	bus_init(&bus, "pio");
	/* Interleaved insertion order: evens first, then odds. */
	for (int pass = 0; pass < 2; pass++)
		for (int i = pass; i < BUS_MAX_RANGES; i += 2) {
			devs[i] = (struct recorder){.id = i};
			register_or_fail(&bus, 0x100 + 0x20 * (uint64_t)i, 0x10, &rec_ops,
					 &devs[i]);
		}
	for (int i = 0; i < BUS_MAX_RANGES; i++) {
		const uint64_t base = 0x100 + 0x20 * (uint64_t)i;
		const uint64_t offsets[] = {0, 7, 0xF};

		for (int k = 0; k < 3; k++) {
			assert_int_equal(bus_read(&bus, base + offsets[k], data, 1), 0);
			assert_int_equal(devs[i].offset, offsets[k]);
			assert_int_equal(data[0], read_value(i, offsets[k], 0));
		}
		assert_int_equal(devs[i].reads, 3);
		assert_int_equal(bus_read(&bus, base + 0x10, data, 1), -ENOENT);
		assert_int_equal(bus_read(&bus, base - 1, data, 1), -ENOENT);
	}
	assert_int_equal(bus.unhandled, 2 * BUS_MAX_RANGES);
}

static void test_unhandled_accesses(void **state)
{
	struct recorder a = {.id = 1}, b = {.id = 2}, w = {.id = 3};
	const uint8_t payload[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	uint8_t data[8];
	struct bus bus;
	/* Accesses that must reach no device: gaps, ends, and straddles. */
	const struct {
		uint64_t addr;
		uint32_t len;
	} misses[] = {
	    {0x0, 1},		 /* below everything */
	    {0x10FE, 4},	 /* straddles a's end into the gap */
	    {0x11FE, 4},	 /* straddles b's end into nothing */
	    {0x10FC, 8},	 /* straddles a's end */
	    {0x1100 - 1, 2},	 /* a's last byte into b, adjacent */
	    {0x1500, 1},	 /* in the gap after b */
	    {0xFFF, 2},		 /* straddles a's start */
	    {UINT64_MAX, 1},	 /* the top of the address space */
	    {UINT64_MAX - 3, 8}, /* and wrapping past it */
	};

	(void)state;
	bus_init(&bus, "mmio");
	register_or_fail(&bus, 0x1000, 0x100, &rec_ops, &a);
	register_or_fail(&bus, 0x1100, 0x100, &rec_ops, &b);
	register_or_fail(&bus, 0x2000, 0x10, &write_only_ops, &w);

	for (size_t i = 0; i < sizeof(misses) / sizeof(misses[0]); i++) {
		memset(data, 0x5A, sizeof(data));
		assert_int_equal(bus_read(&bus, misses[i].addr, data, misses[i].len), -ENOENT);
		for (uint32_t j = 0; j < misses[i].len; j++)
			assert_int_equal(data[j], 0xFF);
		/* Bytes beyond the access are left alone. */
		for (uint32_t j = misses[i].len; j < sizeof(data); j++)
			assert_int_equal(data[j], 0x5A);
		assert_int_equal(bus_write(&bus, misses[i].addr, payload, misses[i].len), -ENOENT);
		assert_int_equal(bus.unhandled, 2 * (i + 1));
	}
	assert_int_equal(a.reads + a.writes + b.reads + b.writes, 0);

	/* A device without a read op reads as nothing, but takes writes. */
	memset(data, 0, sizeof(data));
	assert_int_equal(bus_read(&bus, 0x2000, data, 4), -ENOENT);
	assert_int_equal(data[0], 0xFF);
	assert_int_equal(data[3], 0xFF);
	assert_int_equal(bus_write(&bus, 0x2004, payload, 4), 0);
	assert_int_equal(w.writes, 1);
	assert_int_equal(w.offset, 4);
	assert_int_equal(bus.unhandled, 2 * (sizeof(misses) / sizeof(misses[0])) + 1);
}

/* ---- interrupt lines ---- */

struct level_log {
	int calls;
	uint32_t gsi[8];
	int level[8];
};

static void log_level(void *opaque, uint32_t gsi, int level)
{
	struct level_log *log = opaque;

	assert_true(log->calls < 8);
	log->gsi[log->calls] = gsi;
	log->level[log->calls] = level;
	log->calls++;
}

static void test_pulse_through_eventfd(void **state)
{
	struct level_log log = {0};
	int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	uint64_t count = 0;

	(void)state;
	assert_true(fd >= 0);
	/* With an irqfd, KVM injects: set_level must not also fire. */
	struct irq_line irq = {.gsi = 5, .eventfd = fd, .set_level = log_level, .opaque = &log};
	irq_line_pulse(&irq);
	irq_line_pulse(&irq);
	assert_int_equal(read(fd, &count, sizeof(count)), sizeof(count));
	assert_int_equal(count, 2);
	assert_int_equal(log.calls, 0);

	/* A saturated counter (interrupt already pending) is not an error and does not block. */
	count = UINT64_MAX - 1;
	assert_int_equal(write(fd, &count, sizeof(count)), sizeof(count));
	irq_line_pulse(&irq);
	assert_int_equal(read(fd, &count, sizeof(count)), sizeof(count));
	assert_int_equal(count, UINT64_MAX - 1);
	close(fd);
}

static void test_pulse_through_set_level(void **state)
{
	struct level_log log = {0};
	struct irq_line irq = {.gsi = 7, .eventfd = -1, .set_level = log_level, .opaque = &log};

	(void)state;
	irq_line_pulse(&irq);
	assert_int_equal(log.calls, 2);
	assert_int_equal(log.gsi[0], 7);
	assert_int_equal(log.level[0], 1);
	assert_int_equal(log.gsi[1], 7);
	assert_int_equal(log.level[1], 0);

	irq_line_set_level(&irq, 1);
	assert_int_equal(log.calls, 3);
	assert_int_equal(log.gsi[2], 7);
	assert_int_equal(log.level[2], 1);

	/* A line wired to nothing is a no-op. */
	struct irq_line none = {.gsi = 9, .eventfd = -1};
	irq_line_pulse(&none);
	irq_line_set_level(&none, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_register_keeps_ranges_sorted),
	    cmocka_unit_test(test_overlap_refused),
	    cmocka_unit_test(test_bad_ranges_refused),
	    cmocka_unit_test(test_full_table),
	    cmocka_unit_test(test_dispatch_with_offsets),
	    cmocka_unit_test(test_dispatch_many_ranges),
	    cmocka_unit_test(test_unhandled_accesses),
	    cmocka_unit_test(test_pulse_through_eventfd),
	    cmocka_unit_test(test_pulse_through_set_level),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
