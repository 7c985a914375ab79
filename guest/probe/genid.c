/* SPDX-License-Identifier: MIT */
/*
 * The ACPI VM generation ID: 16 bytes in guest memory that the hypervisor
 * changes whenever the VM may be a copy (snapshot restored, forked). Its
 * address comes from the VGEN device's ADDR object, Package(){low32,
 * high32}, found by a byte scan of the DSDT (and SSDTs, where QEMU puts
 * it) rather than by an AML interpreter; `vmgenid=` is the fallback.
 */
#include "probe.h"

#define GENID_BYTES   16
#define AML_ZERO      0x00
#define AML_ONE	      0x01
#define AML_NAME      0x08
#define AML_BYTE      0x0A
#define AML_WORD      0x0B
#define AML_DWORD     0x0C
#define AML_QWORD     0x0E
#define AML_PACKAGE   0x12
#define AML_METHOD    0x14
#define AML_RETURN    0xA4
#define GENID_CID     "VM_Gen_Counter"
#define MAX_SSDTS     16
#define GENID_HEX_LEN (2 * GENID_BYTES)

/* Set by the BSP in genid_init() before READY; 0: no generation ID. */
static uint64_t genid_addr;
/* BSP only: the ID last seen by genid_poll(), to report each change once. */
static uint8_t genid_seen[GENID_BYTES];
/* The ID this guest booted with, before any workload started: written once by the BSP. */
static uint64_t genid_at_boot[GENID_BYTES / 8];

/* One integer term at p: ZeroOp, OneOp or a Byte/Word/DWord/QWord constant. */
static const uint8_t *aml_integer(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
	unsigned n;

	if (p >= end)
		return NULL;
	switch (*p) {
	case AML_ZERO:
	case AML_ONE:
		*v = *p;
		return p + 1;
	case AML_BYTE:
		n = 1;
		break;
	case AML_WORD:
		n = 2;
		break;
	case AML_DWORD:
		n = 4;
		break;
	case AML_QWORD:
		n = 8;
		break;
	default:
		return NULL;
	}
	if ((size_t)(end - p) < 1 + n)
		return NULL;
	*v = 0;
	for (unsigned i = 0; i < n; i++)
		*v |= (uint64_t)p[1 + i] << (8 * i);
	return p + 1 + n;
}

/* A PackageOp with two integer elements at p: low32 | high32 << 32. */
static bool aml_addr_package(const uint8_t *p, const uint8_t *end, uint64_t *addr)
{
	uint64_t lo, hi;

	if (end - p < 3 || p[0] != AML_PACKAGE)
		return false;
	p += 2 + (p[1] >> 6); /* PackageOp, PkgLength */
	if (p >= end || *p != 2)
		return false;
	p = aml_integer(p + 1, end, &lo);
	if (!p || !aml_integer(p, end, &hi))
		return false;
	*addr = (lo & 0xffffffffULL) | hi << 32;
	return true;
}

/*
 * If the NameSeg at name is a method's (MethodOp PkgLength NameSeg), the
 * end of its body, else NULL.
 */
static const uint8_t *aml_method_end(const uint8_t *table, const uint8_t *name)
{
	for (unsigned k = 1; k <= 4; k++) {
		const uint8_t *len;
		size_t value;

		if ((size_t)(name - table) < k + 1)
			break;
		len = name - k;
		if (len[-1] != AML_METHOD || (unsigned)(len[0] >> 6) + 1 != k)
			continue;
		value = k == 1 ? len[0] & 0x3f : len[0] & 0x0f;
		for (unsigned i = 1; i < k; i++)
			value |= (size_t)len[i] << (4 + 8 * (i - 1));
		return len + value;
	}
	return NULL;
}

/* Name(ADDR, Package(){lo, hi}), or Method(ADDR){... Return(Package(){lo, hi})}. */
static bool find_addr_in(uint64_t table_paddr, uint64_t *addr)
{
	const uint8_t *t = (const uint8_t *)(uintptr_t)table_paddr, *end;
	uint32_t len;
	bool has_cid = false;

	memcpy(&len, t + 4, 4);
	end = t + len;
	for (const uint8_t *p = t + 36; p + sizeof(GENID_CID) - 1 <= end && !has_cid; p++)
		has_cid = memcmp(p, GENID_CID, sizeof(GENID_CID) - 1) == 0;
	if (!has_cid)
		return false;
	for (const uint8_t *p = t + 36; p + 5 <= end; p++) {
		const uint8_t *method_end;

		if (memcmp(p, "ADDR", 4) != 0)
			continue;
		if (aml_addr_package(p + 4, end, addr))
			return true;
		method_end = aml_method_end(t, p);
		if (!method_end)
			continue;
		if (method_end > end)
			method_end = end;
		for (const uint8_t *q = p + 5; q + 1 < method_end; q++)
			if (q[0] == AML_RETURN && aml_addr_package(q + 1, method_end, addr))
				return true;
	}
	return false;
}

static uint64_t find_addr_in_acpi(void)
{
	uint64_t addr;

	if (acpi.dsdt && find_addr_in(acpi.dsdt, &addr))
		return addr;
	for (unsigned i = 0; i < MAX_SSDTS; i++) {
		uint64_t ssdt = acpi_table("SSDT", i);

		if (!ssdt)
			break;
		if (find_addr_in(ssdt, &addr))
			return addr;
	}
	return 0;
}

static void genid_read(uint8_t id[GENID_BYTES])
{
	const volatile uint8_t *p = (const volatile uint8_t *)(uintptr_t)genid_addr;

	for (unsigned i = 0; i < GENID_BYTES; i++)
		id[i] = p[i];
}

static void genid_hex(const uint8_t id[GENID_BYTES], char out[GENID_HEX_LEN + 1])
{
	for (unsigned i = 0; i < GENID_BYTES; i++)
		fmt(out + 2 * i, 3, "%02x", id[i]);
}

void genid_init(void)
{
	const char *source = "acpi";
	uint64_t addr = find_addr_in_acpi();

	if (!addr && cfg.vmgenid) {
		addr = cfg.vmgenid;
		source = "cmdline";
	}
	if (!addr)
		return;
	/* The static page tables map 0-4 GiB; above that only RAM is mapped. */
	if (addr > UINT64_MAX - GENID_BYTES ||
	    (addr + GENID_BYTES > (4ULL << 30) && !mem_is_ram(addr, GENID_BYTES))) {
		say("genid.error=address 0x%lx (from %s) is not mapped", addr, source);
		return;
	}
	genid_addr = addr;
	genid_read(genid_seen);
	memcpy(genid_at_boot, genid_seen, GENID_BYTES);
	if (cfg.verbose)
		say("genid.addr=0x%lx source=%s", addr, source);
}

bool genid_present(void)
{
	return genid_addr != 0;
}

void genid_say(void)
{
	uint8_t id[GENID_BYTES];
	char hex[GENID_HEX_LEN + 1];

	if (!genid_addr) {
		say("genid=none");
		return;
	}
	genid_read(id);
	genid_hex(id, hex);
	say("genid=%s", hex);
}

void genid_boot_words(uint64_t *w0, uint64_t *w1)
{
	*w0 = genid_at_boot[0];
	*w1 = genid_at_boot[1];
}

const volatile genid_word *genid_words(void)
{
	return (const volatile genid_word *)(uintptr_t)genid_addr;
}

bool genid_poll(void)
{
	uint8_t id[GENID_BYTES];
	char now[GENID_HEX_LEN + 1], old[GENID_HEX_LEN + 1];

	if (!genid_addr)
		return false;
	genid_read(id);
	if (memcmp(id, genid_seen, GENID_BYTES) == 0)
		return false;
	genid_hex(id, now);
	genid_hex(genid_seen, old);
	memcpy(genid_seen, id, GENID_BYTES);
	say("genid.changed=%s old=%s", now, old);
	return true;
}
