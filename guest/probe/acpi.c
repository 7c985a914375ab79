/* SPDX-License-Identifier: MIT */
/*
 * Reads the VMM's ACPI tables: RSDP -> XSDT/RSDT -> MADT (CPUs), FADT
 * (power and reset registers) -> DSDT (\_S5_ sleep type, LNRO0005
 * virtio-mmio windows). Tables are read in place through the identity map.
 */
#include "probe.h"

#define SDT_HEADER_LEN	   36
#define MADT_ENTRIES	   44
#define MADT_LAPIC	   0
#define MADT_X2APIC	   9
#define MADT_ENABLED	   1u
#define FADT_DSDT	   40
#define FADT_PM1A_CNT_BLK  64
#define FADT_FLAGS	   112
#define FADT_RESET_REG	   116
#define FADT_RESET_VALUE   128
#define FADT_X_DSDT	   140
#define FADT_X_PM1A_CNT	   172
#define FADT_SLEEP_CONTROL 244
#define FADT_HW_REDUCED	   (1u << 20)
#define SLP_EN_HW_REDUCED  0x20
#define SLP_EN_PM1	   (1u << 13)
#define MAX_TABLE_LEN	   (16u << 20)

/* Filled by the BSP in acpi_init(). */
struct acpi_info acpi = {.s5_slp_typ = -1};
static struct gas pm1a_cnt;

static uint8_t rd8(uint64_t a)
{
	return *(const volatile uint8_t *)(uintptr_t)a;
}

static uint32_t rd32(uint64_t a)
{
	uint32_t v;

	memcpy(&v, (const void *)(uintptr_t)a, 4);
	return v;
}

static uint64_t rd64(uint64_t a)
{
	uint64_t v;

	memcpy(&v, (const void *)(uintptr_t)a, 8);
	return v;
}

static bool sum_ok(uint64_t a, uint32_t len)
{
	uint8_t sum = 0;

	for (uint32_t i = 0; i < len; i++)
		sum += rd8(a + i);
	return sum == 0;
}

static uint64_t find_rsdp(uint64_t hint)
{
	if (hint && memcmp((const void *)(uintptr_t)hint, "RSD PTR ", 8) == 0)
		return hint;
	for (uint64_t a = 0xE0000; a < 0x100000; a += 16)
		if (memcmp((const void *)(uintptr_t)a, "RSD PTR ", 8) == 0 && sum_ok(a, 20))
			return a;
	return 0;
}

/* A table header we are willing to read: right signature, sane length, in RAM or not. */
static bool table_ok(uint64_t a, const char *sig)
{
	uint32_t len;

	if (!a || memcmp((const void *)(uintptr_t)a, sig, 4) != 0)
		return false;
	len = rd32(a + 4);
	return len >= SDT_HEADER_LEN && len <= MAX_TABLE_LEN;
}

/* The n-th (from 0) table with this signature listed in the XSDT (or RSDT), or 0. */
static uint64_t find_table_nth(uint64_t rsdp, const char *sig, unsigned n)
{
	uint64_t root = 0;
	unsigned entry_size = 4;
	uint32_t len;

	if (rd8(rsdp + 15) >= 2 && rd64(rsdp + 24) && table_ok(rd64(rsdp + 24), "XSDT")) {
		root = rd64(rsdp + 24);
		entry_size = 8;
	} else if (table_ok(rd32(rsdp + 16), "RSDT")) {
		root = rd32(rsdp + 16);
	}
	if (!root)
		return 0;
	len = rd32(root + 4);
	for (uint32_t off = SDT_HEADER_LEN; off + entry_size <= len; off += entry_size) {
		uint64_t t = entry_size == 8 ? rd64(root + off) : rd32(root + off);

		if (table_ok(t, sig) && n-- == 0)
			return t;
	}
	return 0;
}

static uint64_t find_table(uint64_t rsdp, const char *sig)
{
	return find_table_nth(rsdp, sig, 0);
}

uint64_t acpi_table(const char *sig, unsigned n)
{
	return acpi.rsdp ? find_table_nth(acpi.rsdp, sig, n) : 0;
}

static void parse_madt(uint64_t madt)
{
	uint32_t len = rd32(madt + 4);

	for (uint32_t off = MADT_ENTRIES; off + 2 <= len;) {
		uint8_t type = rd8(madt + off), elen = rd8(madt + off + 1);
		uint32_t id = UINT32_MAX, flags = 0;

		if (elen < 2 || off + elen > len)
			break;
		if (type == MADT_LAPIC && elen >= 8) {
			id = rd8(madt + off + 3);
			flags = rd32(madt + off + 4);
		} else if (type == MADT_X2APIC && elen >= 16) {
			id = rd32(madt + off + 4);
			flags = rd32(madt + off + 8);
		}
		if (id != UINT32_MAX && (flags & MADT_ENABLED)) {
			if (acpi.nr_apic_ids < MAX_CPUS)
				acpi.apic_ids[acpi.nr_apic_ids++] = id;
			else
				say("acpi.error=more than %u CPUs in the MADT, ignoring apic id %u",
				    MAX_CPUS, id);
		}
		off += elen;
	}
}

static void read_gas(uint64_t a, struct gas *g)
{
	g->space = rd8(a);
	g->bit_width = rd8(a + 1);
	g->bit_offset = rd8(a + 2);
	g->access_size = rd8(a + 3);
	g->addr = rd64(a + 4);
}

/* First element of the \_S5_ package: the SLP_TYP value for soft-off. */
static int find_s5(uint64_t dsdt, uint32_t len)
{
	for (uint32_t i = SDT_HEADER_LEN; i + 8 <= len; i++) {
		uint64_t p = dsdt + i;
		unsigned pkglen_bytes;

		if (memcmp((const void *)(uintptr_t)p, "_S5_", 4) != 0 || rd8(p + 4) != 0x12)
			continue;
		pkglen_bytes = 1 + (rd8(p + 5) >> 6);
		p += 5 + pkglen_bytes + 1; /* PkgLength, NumElements */
		if (p + 2 > dsdt + len)
			return -1;
		switch (rd8(p)) {
		case 0x00: /* ZeroOp */
			return 0;
		case 0x01: /* OneOp */
			return 1;
		case 0x0A: /* BytePrefix */
		case 0x0B: /* WordPrefix */
		case 0x0C: /* DWordPrefix */
			return rd8(p + 1);
		default:
			return -1;
		}
	}
	return -1;
}

static void find_virtio(uint64_t dsdt, uint32_t len)
{
	static const uint8_t mem32fixed[3] = {0x86, 0x09, 0x00};

	for (uint32_t i = SDT_HEADER_LEN; i + 8 <= len; i++) {
		if (memcmp((const void *)(uintptr_t)(dsdt + i), "LNRO0005", 8) != 0)
			continue;
		for (uint32_t j = i + 8; j + 12 <= len && j < i + 512; j++) {
			if (memcmp((const void *)(uintptr_t)(dsdt + j), "LNRO0005", 8) == 0)
				break;
			if (memcmp((const void *)(uintptr_t)(dsdt + j), mem32fixed, 3) != 0)
				continue;
			if (acpi.nr_virtio < ACPI_MAX_VIRTIO)
				acpi.virtio[acpi.nr_virtio++] = rd32(dsdt + j + 4);
			break;
		}
	}
}

void acpi_init(uint64_t rsdp_hint)
{
	uint32_t fadt_len;

	acpi.rsdp = find_rsdp(rsdp_hint);
	if (!acpi.rsdp) {
		say("acpi.error=no RSDP (hint 0x%lx, none in 0xE0000-0xFFFFF)", rsdp_hint);
		return;
	}
	acpi.madt = find_table(acpi.rsdp, "APIC");
	acpi.fadt = find_table(acpi.rsdp, "FACP");
	if (acpi.madt)
		parse_madt(acpi.madt);
	if (acpi.fadt) {
		uint64_t dsdt = 0;

		fadt_len = rd32(acpi.fadt + 4);
		if (fadt_len >= FADT_X_DSDT + 8)
			dsdt = rd64(acpi.fadt + FADT_X_DSDT);
		if (!dsdt)
			dsdt = rd32(acpi.fadt + FADT_DSDT);
		if (table_ok(dsdt, "DSDT")) {
			acpi.dsdt = dsdt;
			acpi.dsdt_len = rd32(dsdt + 4);
		}
		if (fadt_len >= FADT_FLAGS + 4)
			acpi.hw_reduced = rd32(acpi.fadt + FADT_FLAGS) & FADT_HW_REDUCED;
		if (fadt_len >= FADT_RESET_VALUE + 1) {
			read_gas(acpi.fadt + FADT_RESET_REG, &acpi.reset_reg);
			acpi.reset_value = rd8(acpi.fadt + FADT_RESET_VALUE);
		}
		if (fadt_len >= FADT_SLEEP_CONTROL + 12)
			read_gas(acpi.fadt + FADT_SLEEP_CONTROL, &acpi.sleep_control);
		if (fadt_len >= FADT_X_PM1A_CNT + 12)
			read_gas(acpi.fadt + FADT_X_PM1A_CNT, &pm1a_cnt);
		if (!pm1a_cnt.addr && fadt_len >= FADT_PM1A_CNT_BLK + 4) {
			pm1a_cnt.space = 1;
			pm1a_cnt.bit_width = 16;
			pm1a_cnt.addr = rd32(acpi.fadt + FADT_PM1A_CNT_BLK);
		}
	}
	if (acpi.dsdt) {
		acpi.s5_slp_typ = find_s5(acpi.dsdt, acpi.dsdt_len);
		find_virtio(acpi.dsdt, acpi.dsdt_len);
	}
	if (cfg.verbose)
		say("acpi.rsdp=0x%lx madt=0x%lx fadt=0x%lx dsdt=0x%lx cpus=%u virtio_mmio=%u "
		    "hw_reduced=%u s5=%d",
		    acpi.rsdp, acpi.madt, acpi.fadt, acpi.dsdt, acpi.nr_apic_ids, acpi.nr_virtio,
		    acpi.hw_reduced ? 1 : 0, acpi.s5_slp_typ);
	for (unsigned i = 0; i < acpi.nr_virtio && cfg.verbose; i++)
		say("acpi.virtio%u=0x%lx", i, acpi.virtio[i]);
}

static unsigned gas_bytes(const struct gas *g)
{
	if (g->access_size >= 1 && g->access_size <= 3)
		return 1u << (g->access_size - 1);
	if (g->bit_width == 16 || g->bit_width == 32)
		return g->bit_width / 8;
	return 1;
}

static bool gas_write(const struct gas *g, uint32_t v)
{
	unsigned bytes = gas_bytes(g);

	if (!g->addr)
		return false;
	v <<= g->bit_offset;
	if (g->space == 1) {
		if (g->addr > 0xFFFF)
			return false;
		if (bytes == 1)
			sys_outb((uint16_t)g->addr, (uint8_t)v);
		else if (bytes == 2)
			sys_outw((uint16_t)g->addr, (uint16_t)v);
		else
			sys_outl((uint16_t)g->addr, v);
		return true;
	}
	if (g->space == 0) {
		if (bytes == 1)
			mmio_write8(g->addr, (uint8_t)v);
		else if (bytes == 2)
			mmio_write16(g->addr, (uint16_t)v);
		else
			mmio_write32(g->addr, v);
		return true;
	}
	return false;
}

void acpi_poweroff(void)
{
	bool tried = false;

	if (acpi.s5_slp_typ >= 0) {
		uint32_t typ = (uint32_t)acpi.s5_slp_typ & 7;

		if (acpi.hw_reduced && acpi.sleep_control.addr)
			tried = gas_write(&acpi.sleep_control, (typ << 2) | SLP_EN_HW_REDUCED);
		else if (pm1a_cnt.addr)
			tried = gas_write(&pm1a_cnt, (typ << 10) | SLP_EN_PM1);
	}
	if (tried)
		delay_us(500000);
	say("FAULT poweroff unsupported");
	sys_stop();
}

void acpi_reset(void)
{
	if (gas_write(&acpi.reset_reg, acpi.reset_value))
		delay_us(500000);
	sys_outb(0x64, 0xFE); /* i8042 pulse reset line */
	delay_us(500000);
	say("FAULT reset unsupported");
	sys_stop();
}
