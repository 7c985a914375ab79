/* SPDX-License-Identifier: MIT */
/*
 * ACPI tables after the ACPI 6.x specification, chapter 5.2. The platform is
 * hardware-reduced (no PM1/GPE blocks, no SCI, no FACS): Linux then powers
 * off through the FADT sleep registers with the SLP_TYP of \_S5 and resets
 * through the FADT reset register, both plain port writes the VMM traps.
 *
 * Layout in the buffer (each table 16-byte aligned):
 *   RSDP | XSDT -> {FADT, MADT} | FADT -> DSDT | MADT | DSDT
 */
#include "boot/acpi.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "boot/aml.h"

#define OEM_ID		 "FORKD "
#define OEM_TABLE_ID	 "FORKDVMM"
#define OEM_REVISION	 1
#define CREATOR_ID	 "FKVM"
#define CREATOR_REVISION 1
#define TABLE_ALIGN	 16

#define ACPI_VMGENID_HID "FKVM0001"
/* Device-specific notification value; Linux acts on any, QEMU and Firecracker send 0x80. */
#define VMGENID_NOTIFY 0x80

/* \_S5 SLP_TYP: what the VMM's sleep control register handler powers off on. */
#define ACPI_S5_SLP_TYP 5

struct __attribute__((packed)) rsdp {
	char signature[8];
	uint8_t checksum; /* over the first 20 bytes (the ACPI 1.0 part) */
	char oem_id[6];
	uint8_t revision;
	uint32_t rsdt_address;
	uint32_t length;
	uint64_t xsdt_address;
	uint8_t extended_checksum; /* over all 36 bytes */
	uint8_t reserved[3];
};

struct __attribute__((packed)) sdt_header {
	char signature[4];
	uint32_t length;
	uint8_t revision;
	uint8_t checksum;
	char oem_id[6];
	char oem_table_id[8];
	uint32_t oem_revision;
	char creator_id[4];
	uint32_t creator_revision;
};

/* Generic Address Structure */
struct __attribute__((packed)) gas {
	uint8_t space_id;
	uint8_t bit_width;
	uint8_t bit_offset;
	uint8_t access_size;
	uint64_t address;
};

#define GAS_SYSTEM_IO	1
#define GAS_ACCESS_BYTE 1

/* FADT revision 6 (ACPI 6.0), 276 bytes. */
struct __attribute__((packed)) fadt {
	struct sdt_header h;
	uint32_t firmware_ctrl;
	uint32_t dsdt;
	uint8_t reserved0;
	uint8_t preferred_pm_profile;
	uint16_t sci_int;
	uint32_t smi_cmd;
	uint8_t acpi_enable, acpi_disable, s4bios_req, pstate_cnt;
	uint32_t pm1a_evt_blk, pm1b_evt_blk, pm1a_cnt_blk, pm1b_cnt_blk;
	uint32_t pm2_cnt_blk, pm_tmr_blk, gpe0_blk, gpe1_blk;
	uint8_t pm1_evt_len, pm1_cnt_len, pm2_cnt_len, pm_tmr_len;
	uint8_t gpe0_blk_len, gpe1_blk_len, gpe1_base, cst_cnt;
	uint16_t p_lvl2_lat, p_lvl3_lat, flush_size, flush_stride;
	uint8_t duty_offset, duty_width, day_alrm, mon_alrm, century;
	uint16_t iapc_boot_arch;
	uint8_t reserved1;
	uint32_t flags;
	struct gas reset_reg;
	uint8_t reset_value;
	uint16_t arm_boot_arch;
	uint8_t minor_version;
	uint64_t x_firmware_ctrl;
	uint64_t x_dsdt;
	struct gas x_pm1a_evt_blk, x_pm1b_evt_blk, x_pm1a_cnt_blk, x_pm1b_cnt_blk;
	struct gas x_pm2_cnt_blk, x_pm_tmr_blk, x_gpe0_blk, x_gpe1_blk;
	struct gas sleep_control_reg;
	struct gas sleep_status_reg;
	char hypervisor_vendor_id[8];
};

_Static_assert(sizeof(struct fadt) == 276, "FADT rev 6 is 276 bytes");
_Static_assert(offsetof(struct fadt, flags) == 112, "FADT flags offset");
_Static_assert(offsetof(struct fadt, x_dsdt) == 140, "FADT X_DSDT offset");
_Static_assert(offsetof(struct fadt, sleep_control_reg) == 244, "FADT SLEEP_CONTROL_REG offset");

#define FADT_F_PWR_BUTTON	  (1u << 4) /* set: no fixed power button */
#define FADT_F_SLP_BUTTON	  (1u << 5) /* set: no fixed sleep button */
#define FADT_F_RESET_REG_SUP	  (1u << 10)
#define FADT_F_HW_REDUCED_ACPI	  (1u << 20)
#define IAPC_VGA_NOT_PRESENT	  (1u << 2)
#define IAPC_MSI_NOT_SUPPORTED	  (1u << 3)
#define IAPC_PCIE_ASPM_CONTROLS	  (1u << 4)
#define IAPC_CMOS_RTC_NOT_PRESENT (1u << 5)

struct __attribute__((packed)) madt {
	struct sdt_header h;
	uint32_t lapic_addr;
	uint32_t flags;
};

#define MADT_PCAT_COMPAT 1u

struct __attribute__((packed)) madt_lapic {
	uint8_t type, length, processor_uid, apic_id;
	uint32_t flags;
};

struct __attribute__((packed)) madt_ioapic {
	uint8_t type, length, ioapic_id, reserved;
	uint32_t address;
	uint32_t gsi_base;
};

#define MADT_TYPE_LAPIC	   0
#define MADT_TYPE_IOAPIC   1
#define MADT_LAPIC_ENABLED 1u

static size_t align_up(size_t v)
{
	return (v + TABLE_ALIGN - 1) & ~(size_t)(TABLE_ALIGN - 1);
}

static uint8_t checksum(const uint8_t *p, size_t len)
{
	uint8_t sum = 0;

	for (size_t i = 0; i < len; i++)
		sum = (uint8_t)(sum + p[i]);
	return (uint8_t)-sum;
}

static void fill_header(struct sdt_header *h, const char *signature, uint32_t length,
			uint8_t revision)
{
	memset(h, 0, sizeof(*h));
	memcpy(h->signature, signature, 4);
	h->length = length;
	h->revision = revision;
	memcpy(h->oem_id, OEM_ID, 6);
	memcpy(h->oem_table_id, OEM_TABLE_ID, 8);
	h->oem_revision = OEM_REVISION;
	memcpy(h->creator_id, CREATOR_ID, 4);
	h->creator_revision = CREATOR_REVISION;
}

/* The table's header is already in place and its length covers the body. */
static void finish_table(uint8_t *table)
{
	uint32_t length;

	memcpy(&length, table + offsetof(struct sdt_header, length), sizeof(length));
	table[offsetof(struct sdt_header, checksum)] = 0;
	table[offsetof(struct sdt_header, checksum)] = checksum(table, length);
}

/* An 8-bit register in I/O port space; port 0 means "not implemented". */
static struct gas io_port_reg(uint16_t port)
{
	struct gas g = {0};

	if (port) {
		g.space_id = GAS_SYSTEM_IO;
		g.bit_width = 8;
		g.access_size = GAS_ACCESS_BYTE;
		g.address = port;
	}
	return g;
}

/* Overlap with the tables themselves is checked once their size is known. */
static int check_vmgenid(const struct acpi_config *cfg, struct fk_err *err)
{
	if (cfg->vmgenid_gpa % 8 || cfg->vmgenid_gpa > UINT64_MAX - ACPI_VMGENID_LEN)
		return fk_fail(err, EINVAL,
			       "ACPI: VM generation ID address 0x%llx: expected 8-byte aligned "
			       "with room for %d bytes",
			       (unsigned long long)cfg->vmgenid_gpa, ACPI_VMGENID_LEN);
	if (!cfg->ged_gsi)
		return 0;
	/* The GED exists only to notify \_SB.VGEN, which _EVT names. */
	if (!cfg->vmgenid_gpa)
		return fk_fail(
		    err, EINVAL,
		    "ACPI: GED on GSI %u needs the VM generation ID device (vmgenid_gpa)",
		    cfg->ged_gsi);
	if (cfg->ged_gsi >= ACPI_IOAPIC_PINS)
		return fk_fail(err, EINVAL, "ACPI: GED GSI %u: expected 1..%d (IOAPIC pins)",
			       cfg->ged_gsi, ACPI_IOAPIC_PINS - 1);
	if (cfg->com1_port && cfg->ged_gsi == cfg->com1_gsi)
		return fk_fail(err, EINVAL, "ACPI: GED uses GSI %u of COM1", cfg->ged_gsi);
	for (int i = 0; i < cfg->nr_virtio; i++)
		if (cfg->virtio[i].gsi == cfg->ged_gsi)
			return fk_fail(err, EINVAL, "ACPI: GED uses GSI %u of virtio device %d",
				       cfg->ged_gsi, i);
	return 0;
}

static int check_config(const struct acpi_config *cfg, struct fk_err *err)
{
	if (cfg->nr_cpus < 1 || cfg->nr_cpus > ACPI_MAX_CPUS)
		return fk_fail(err, EINVAL, "ACPI: %d vCPUs requested, expected 1..%d",
			       cfg->nr_cpus, ACPI_MAX_CPUS);
	if (cfg->nr_virtio < 0 || cfg->nr_virtio > ACPI_MAX_VIRTIO)
		return fk_fail(err, EINVAL, "ACPI: %d virtio devices requested, expected 0..%d",
			       cfg->nr_virtio, ACPI_MAX_VIRTIO);
	if (cfg->lapic_addr > UINT32_MAX || cfg->ioapic_addr > UINT32_MAX)
		return fk_fail(
		    err, EINVAL, "ACPI: LAPIC 0x%llx / IOAPIC 0x%llx must lie below 4 GiB",
		    (unsigned long long)cfg->lapic_addr, (unsigned long long)cfg->ioapic_addr);
	for (int i = 0; i < cfg->nr_virtio; i++) {
		const struct acpi_virtio_dev *d = &cfg->virtio[i];

		/* Memory32Fixed can only describe a window below 4 GiB. */
		if (d->size == 0 || d->base > UINT32_MAX || d->base + d->size - 1 > UINT32_MAX)
			return fk_fail(err, EINVAL,
				       "ACPI: virtio device %d at 0x%llx size 0x%x: expected a "
				       "non-empty window below 4 GiB",
				       i, (unsigned long long)d->base, d->size);
		/* Each Interrupt() is declared Exclusive, so GSIs must not repeat. */
		if (cfg->com1_port && d->gsi == cfg->com1_gsi)
			return fk_fail(err, EINVAL, "ACPI: virtio device %d uses GSI %u of COM1", i,
				       d->gsi);
		for (int j = 0; j < i; j++)
			if (cfg->virtio[j].gsi == d->gsi)
				return fk_fail(err, EINVAL,
					       "ACPI: virtio devices %d and %d share GSI %u", j, i,
					       d->gsi);
	}
	return check_vmgenid(cfg, err);
}

/*
 * COM1 gets ISA-style IRQNoFlags when its GSI is an ISA IRQ (identity-mapped:
 * the MADT has no overrides), like firmware describes a PC UART; otherwise
 * an extended Interrupt with the same edge/active-high semantics.
 */
static void emit_com1(struct aml_buf *b, const struct acpi_config *cfg)
{
	struct aml_buf rt;
	size_t dev;

	aml_buf_init(&rt, 0);
	aml_rt_io(&rt, cfg->com1_port, cfg->com1_port, 1, 8);
	if (cfg->com1_gsi < 16)
		aml_rt_irq_noflags(&rt, cfg->com1_gsi);
	else
		aml_rt_interrupt(&rt, AML_IRQ_CONSUMER | AML_IRQ_EDGE, cfg->com1_gsi);

	aml_device_open(b, "COM1", &dev);
	aml_name_eisaid(b, "_HID", "PNP0501");
	aml_name_int(b, "_UID", 1);
	aml_name(b, "_CRS");
	aml_resource_template(b, &rt);
	aml_close(b, dev);
	aml_buf_free(&rt);
}

/* Linux's virtio_mmio driver binds to LNRO0005 and takes its window and IRQ from _CRS. */
static void emit_virtio(struct aml_buf *b, int index, const struct acpi_virtio_dev *d)
{
	struct aml_buf rt;
	char name[16];
	size_t dev;

	aml_buf_init(&rt, 0);
	aml_rt_memory32_fixed(&rt, true, (uint32_t)d->base, d->size);
	aml_rt_interrupt(&rt, AML_IRQ_CONSUMER | AML_IRQ_EDGE, d->gsi);

	snprintf(name, sizeof(name), "VR%02u", (unsigned)index % 100u);
	aml_device_open(b, name, &dev);
	aml_name_str(b, "_HID", "LNRO0005");
	aml_name_int(b, "_UID", (uint64_t)index);
	aml_name_int(b, "_CCA", 1); /* DMA is cache-coherent */
	aml_name(b, "_CRS");
	aml_resource_template(b, &rt);
	aml_close(b, dev);
	aml_buf_free(&rt);
}

/*
 * The VM generation ID device as Linux's drivers/virt/vmgenid.c finds it:
 * it matches the _CID (ACPICA upper-cases _HID/_CID strings, giving
 * "VM_GEN_COUNTER") and evaluates ADDR, a Package of the ID's address as
 * low and high 32-bit halves. The _HID is ours, vendor part as our creator
 * id: a well-formed "NNNN####" id, because iasl rejects a _HID whose suffix
 * is not hex (Firecracker's "FCVMGID" shape).
 */
static void emit_vmgenid(struct aml_buf *b, uint64_t gpa)
{
	size_t dev, pkg;

	aml_device_open(b, "VGEN", &dev);
	aml_name_str(b, "_HID", ACPI_VMGENID_HID);
	aml_name_str(b, "_CID", "VM_Gen_Counter");
	aml_name_str(b, "_DDN", "VM_Gen_Counter");
	aml_name(b, "ADDR");
	aml_package_open(b, 2, &pkg);
	aml_int(b, gpa & 0xFFFFFFFFu);
	aml_int(b, gpa >> 32);
	aml_close(b, pkg);
	aml_close(b, dev);
}

/*
 * Generic Event Device (ACPI 6.x, 5.6.9). Linux's evged requests the
 * interrupt in _CRS and, with no _Exx method for it, runs _EVT(gsi); the
 * VMM pulses the GSI after writing a new generation ID.
 */
static void emit_ged(struct aml_buf *b, uint32_t gsi)
{
	size_t dev, method, cond;
	struct aml_buf rt;

	aml_buf_init(&rt, 0);
	aml_rt_interrupt(&rt, AML_IRQ_CONSUMER | AML_IRQ_EDGE, gsi);

	aml_device_open(b, "GED", &dev);
	aml_name_str(b, "_HID", "ACPI0013");
	aml_name_int(b, "_UID", 0);
	aml_name(b, "_CRS");
	aml_resource_template(b, &rt);
	aml_method_open(b, "_EVT", 1, true, &method);
	aml_if_open(b, &cond);
	aml_lequal(b);
	aml_arg(b, 0);
	aml_int(b, gsi);
	aml_notify(b, "\\_SB.VGEN", VMGENID_NOTIFY);
	aml_close(b, cond);
	aml_close(b, method);
	aml_close(b, dev);
	aml_buf_free(&rt);
}

static int build_dsdt_aml(const struct acpi_config *cfg, struct aml_buf *b)
{
	size_t sb, pkg;

	aml_scope_open(b, "\\_SB", &sb);
	if (cfg->com1_port)
		emit_com1(b, cfg);
	for (int i = 0; i < cfg->nr_virtio; i++)
		emit_virtio(b, i, &cfg->virtio[i]);
	if (cfg->vmgenid_gpa)
		emit_vmgenid(b, cfg->vmgenid_gpa);
	if (cfg->ged_gsi)
		emit_ged(b, cfg->ged_gsi);
	aml_close(b, sb);

	/* \_S5: SLP_TYPa, SLP_TYPb (unused when hardware-reduced), two reserved. */
	aml_name(b, "\\_S5");
	aml_package_open(b, 4, &pkg);
	aml_int(b, ACPI_S5_SLP_TYP);
	aml_int(b, ACPI_S5_SLP_TYP);
	aml_int(b, 0);
	aml_int(b, 0);
	return aml_close(b, pkg);
}

static void write_rsdp(uint8_t *at, uint64_t xsdt_gpa)
{
	struct rsdp r;

	memset(&r, 0, sizeof(r));
	memcpy(r.signature, "RSD PTR ", 8);
	memcpy(r.oem_id, OEM_ID, 6);
	r.revision = 2;
	r.length = sizeof(r);
	r.xsdt_address = xsdt_gpa;
	r.checksum = checksum((const uint8_t *)&r, 20);
	r.extended_checksum = checksum((const uint8_t *)&r, sizeof(r));
	memcpy(at, &r, sizeof(r));
}

static void write_xsdt(uint8_t *at, const uint64_t *entries, int n)
{
	struct sdt_header h;

	fill_header(&h, "XSDT", (uint32_t)(sizeof(h) + 8 * (size_t)n), 1);
	memcpy(at, &h, sizeof(h));
	memcpy(at + sizeof(h), entries, 8 * (size_t)n);
	finish_table(at);
}

static void write_fadt(uint8_t *at, const struct acpi_config *cfg, uint64_t dsdt_gpa)
{
	struct fadt f;

	memset(&f, 0, sizeof(f));
	fill_header(&f.h, "FACP", sizeof(f), 6);
	f.minor_version = 0;
	/*
	 * No fixed power/sleep buttons; no VGA to probe; no PCI, so no MSI and
	 * no ASPM for the OS to manage; no CMOS RTC (a probe of ports 0x70/0x71
	 * would read all-ones). LEGACY_DEVICES and 8042 stay clear: no ISA
	 * devices besides the UART described in the DSDT, no keyboard controller.
	 */
	f.flags = FADT_F_HW_REDUCED_ACPI | FADT_F_PWR_BUTTON | FADT_F_SLP_BUTTON;
	f.iapc_boot_arch = IAPC_VGA_NOT_PRESENT | IAPC_MSI_NOT_SUPPORTED | IAPC_PCIE_ASPM_CONTROLS |
			   IAPC_CMOS_RTC_NOT_PRESENT;
	if (cfg->reset_port) {
		f.flags |= FADT_F_RESET_REG_SUP;
		f.reset_reg = io_port_reg(cfg->reset_port);
		f.reset_value = cfg->reset_value;
	}
	/* Only the 64-bit pointer: the spec says to ignore DSDT when X_DSDT is set. */
	f.x_dsdt = dsdt_gpa;
	f.sleep_control_reg = io_port_reg(cfg->sleep_control_port);
	f.sleep_status_reg = io_port_reg(cfg->sleep_status_port);
	memcpy(f.hypervisor_vendor_id, "FORKDVMM", 8);
	memcpy(at, &f, sizeof(f));
	finish_table(at);
}

static uint32_t madt_length(int nr_cpus)
{
	return (uint32_t)(sizeof(struct madt) + (size_t)nr_cpus * sizeof(struct madt_lapic) +
			  sizeof(struct madt_ioapic));
}

/*
 * No Interrupt Source Overrides: KVM's default GSI routing wires ISA IRQ n
 * (PIT = 0) to IOAPIC pin n, which is the MADT's identity default. QEMU's
 * customary IRQ0 -> GSI 2 override matches QEMU's own routing, not KVM's.
 */
static void write_madt(uint8_t *at, const struct acpi_config *cfg)
{
	struct madt m;
	struct madt_ioapic io;
	size_t off = sizeof(m);

	fill_header(&m.h, "APIC", madt_length(cfg->nr_cpus), 5);
	m.lapic_addr = (uint32_t)cfg->lapic_addr;
	/* KVM's in-kernel irqchip includes the dual 8259 pair. */
	m.flags = MADT_PCAT_COMPAT;
	memcpy(at, &m, sizeof(m));
	for (int i = 0; i < cfg->nr_cpus; i++) {
		struct madt_lapic l = {
		    .type = MADT_TYPE_LAPIC,
		    .length = sizeof(l),
		    .processor_uid = (uint8_t)i,
		    .apic_id = (uint8_t)i,
		    .flags = MADT_LAPIC_ENABLED,
		};

		memcpy(at + off, &l, sizeof(l));
		off += sizeof(l);
	}
	io = (struct madt_ioapic){
	    .type = MADT_TYPE_IOAPIC,
	    .length = sizeof(io),
	    .ioapic_id = cfg->ioapic_id,
	    .address = (uint32_t)cfg->ioapic_addr,
	    .gsi_base = 0,
	};
	memcpy(at + off, &io, sizeof(io));
	finish_table(at);
}

int acpi_build(const struct acpi_config *cfg, uint8_t *buf, size_t buf_len, uint64_t base_gpa,
	       struct acpi_layout *layout, struct fk_err *err)
{
	size_t xsdt_off, fadt_off, madt_off, dsdt_off, total;
	uint32_t xsdt_len, madt_len, dsdt_len;
	uint64_t xsdt_entries[2];
	struct sdt_header dsdt;
	struct aml_buf aml;
	int ret;

	ret = check_config(cfg, err);
	if (ret)
		return ret;
	if (base_gpa % 16)
		return fk_fail(
		    err, EINVAL,
		    "ACPI: RSDP address 0x%llx must be 16-byte aligned for the legacy scan",
		    (unsigned long long)base_gpa);

	aml_buf_init(&aml, 0);
	ret = build_dsdt_aml(cfg, &aml);
	if (ret) {
		fk_fail_errno(err, -ret, "ACPI: encoding the DSDT");
		goto out;
	}

	xsdt_len = sizeof(struct sdt_header) + sizeof(xsdt_entries);
	madt_len = madt_length(cfg->nr_cpus);
	dsdt_len = (uint32_t)(sizeof(struct sdt_header) + aml.len);
	xsdt_off = align_up(sizeof(struct rsdp));
	fadt_off = align_up(xsdt_off + xsdt_len);
	madt_off = align_up(fadt_off + sizeof(struct fadt));
	dsdt_off = align_up(madt_off + madt_len);
	total = dsdt_off + dsdt_len;
	if (cfg->vmgenid_gpa && cfg->vmgenid_gpa < base_gpa + total &&
	    base_gpa < cfg->vmgenid_gpa + ACPI_VMGENID_LEN) {
		ret = fk_fail(err, EINVAL,
			      "ACPI: VM generation ID at 0x%llx overlaps the tables at "
			      "0x%llx..0x%llx",
			      (unsigned long long)cfg->vmgenid_gpa, (unsigned long long)base_gpa,
			      (unsigned long long)(base_gpa + total - 1));
		goto out;
	}
	if (total > buf_len) {
		ret = fk_fail(err, ENOSPC,
			      "ACPI: tables for %d vCPUs and %d virtio devices need %zu bytes at "
			      "0x%llx, only %zu available",
			      cfg->nr_cpus, cfg->nr_virtio, total, (unsigned long long)base_gpa,
			      buf_len);
		goto out;
	}

	memset(buf, 0, total);
	write_rsdp(buf, base_gpa + xsdt_off);
	xsdt_entries[0] = base_gpa + fadt_off;
	xsdt_entries[1] = base_gpa + madt_off;
	write_xsdt(buf + xsdt_off, xsdt_entries, 2);
	write_fadt(buf + fadt_off, cfg, base_gpa + dsdt_off);
	write_madt(buf + madt_off, cfg);
	fill_header(&dsdt, "DSDT", dsdt_len, 2); /* revision 2: 64-bit AML integers */
	memcpy(buf + dsdt_off, &dsdt, sizeof(dsdt));
	memcpy(buf + dsdt_off + sizeof(dsdt), aml.data, aml.len);
	finish_table(buf + dsdt_off);

	*layout = (struct acpi_layout){
	    .rsdp_gpa = base_gpa,
	    .xsdt_gpa = base_gpa + xsdt_off,
	    .fadt_gpa = base_gpa + fadt_off,
	    .madt_gpa = base_gpa + madt_off,
	    .dsdt_gpa = base_gpa + dsdt_off,
	    .xsdt_len = xsdt_len,
	    .fadt_len = sizeof(struct fadt),
	    .madt_len = madt_len,
	    .dsdt_len = dsdt_len,
	    .total_len = total,
	};
out:
	aml_buf_free(&aml);
	return ret;
}
