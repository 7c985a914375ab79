/* SPDX-License-Identifier: MIT */
#include "core/bus.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

void bus_init(struct bus *bus, const char *name)
{
	memset(bus, 0, sizeof(*bus));
	bus->name = name;
}

int bus_register(struct bus *bus, uint64_t base, uint64_t len, const struct bus_device_ops *ops,
		 void *opaque, struct fk_err *err)
{
	int i, pos;

	if (len == 0 || base + len < base)
		return fk_fail(err, EINVAL, "%s bus: bad range 0x%llx+0x%llx for %s", bus->name,
			       (unsigned long long)base, (unsigned long long)len, ops->name);
	if (bus->nr_ranges == BUS_MAX_RANGES)
		return fk_fail(err, ENOSPC, "%s bus: more than %d devices", bus->name,
			       BUS_MAX_RANGES);
	for (i = 0; i < bus->nr_ranges; i++) {
		const struct bus_range *r = &bus->ranges[i];
		if (base < r->base + r->len && r->base < base + len)
			return fk_fail(err, EEXIST, "%s bus: %s at 0x%llx overlaps %s", bus->name,
				       ops->name, (unsigned long long)base, r->ops->name);
	}
	for (pos = 0; pos < bus->nr_ranges && bus->ranges[pos].base < base; pos++)
		;
	memmove(&bus->ranges[pos + 1], &bus->ranges[pos],
		(size_t)(bus->nr_ranges - pos) * sizeof(bus->ranges[0]));
	bus->ranges[pos] =
	    (struct bus_range){.base = base, .len = len, .ops = ops, .opaque = opaque};
	bus->nr_ranges++;
	return 0;
}

static const struct bus_range *bus_find(const struct bus *bus, uint64_t addr, uint32_t len)
{
	int lo = 0, hi = bus->nr_ranges - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2;
		const struct bus_range *r = &bus->ranges[mid];
		if (addr < r->base) {
			hi = mid - 1;
		} else if (addr - r->base >= r->len) {
			lo = mid + 1;
		} else {
			/* The whole access must fit inside the device's range. */
			if (len > r->len - (addr - r->base))
				return NULL;
			return r;
		}
	}
	return NULL;
}

int bus_read(struct bus *bus, uint64_t addr, uint8_t *data, uint32_t len)
{
	const struct bus_range *r = bus_find(bus, addr, len);

	if (!r || !r->ops->read) {
		memset(data, 0xff, len);
		__atomic_add_fetch(&bus->unhandled, 1, __ATOMIC_RELAXED);
		return -ENOENT;
	}
	r->ops->read(r->opaque, addr - r->base, data, len);
	return 0;
}

int bus_write(struct bus *bus, uint64_t addr, const uint8_t *data, uint32_t len)
{
	const struct bus_range *r = bus_find(bus, addr, len);

	if (!r || !r->ops->write) {
		__atomic_add_fetch(&bus->unhandled, 1, __ATOMIC_RELAXED);
		return -ENOENT;
	}
	r->ops->write(r->opaque, addr - r->base, data, len);
	return 0;
}

void irq_line_pulse(const struct irq_line *irq)
{
	uint64_t one = 1;

	if (irq->eventfd >= 0) {
		/* EAGAIN means the counter is saturated: an interrupt is pending anyway. */
		if (write(irq->eventfd, &one, sizeof(one)) < 0) {
		}
	} else if (irq->set_level) {
		irq->set_level(irq->opaque, irq->gsi, 1);
		irq->set_level(irq->opaque, irq->gsi, 0);
	}
}

void irq_line_set_level(const struct irq_line *irq, int level)
{
	if (irq->set_level)
		irq->set_level(irq->opaque, irq->gsi, level);
}
