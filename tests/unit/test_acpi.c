/* SPDX-License-Identifier: MIT */
/*
 * ACPI tables: every table is read back by raw spec offsets (not through the
 * builder's structs), checksums and pointers are followed, the DSDT AML is
 * decoded, and the ACPICA disassembler/compiler (iasl) must accept it all.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "boot/acpi.h"
#include "aml_decode.h"

#define BASE_GPA   0xE0000ull
#define BIG_BUF	   (64 * 1024)
#define COM1_PORT  0x3F8
#define COM1_GSI   4
#define SLEEP_CTL  0x600
#define SLEEP_STS  0x601
#define RESET_PORT 0x604
#define RESET_VAL  0x0F
#define VMGENID	   0xDFF00ull /* where the VMM puts it, just below the tables */
#define GED_GSI	   23

static struct acpi_config make_config(int nr_cpus, int nr_virtio)
{
	struct acpi_config cfg = {
	    .nr_cpus = nr_cpus,
	    .lapic_addr = 0xFEE00000,
	    .ioapic_addr = 0xFEC00000,
	    .ioapic_id = 0xFE,
	    .com1_port = COM1_PORT,
	    .com1_gsi = COM1_GSI,
	    .sleep_control_port = SLEEP_CTL,
	    .sleep_status_port = SLEEP_STS,
	    .reset_port = RESET_PORT,
	    .reset_value = RESET_VAL,
	    .nr_virtio = nr_virtio,
	};

	for (int i = 0; i < nr_virtio; i++) {
		cfg.virtio[i].base = 0xD0000000ull + 0x1000ull * (uint64_t)i;
		cfg.virtio[i].size = 0x200 + 0x10 * (uint32_t)i;
		cfg.virtio[i].gsi = 5 + (uint32_t)i;
	}
	return cfg;
}

static struct acpi_config with_vmgenid(struct acpi_config cfg, uint64_t gpa, uint32_t ged_gsi)
{
	cfg.vmgenid_gpa = gpa;
	cfg.ged_gsi = ged_gsi;
	return cfg;
}

static uint64_t rd(const uint8_t *p, int n)
{
	return amld_le(p, n);
}

static uint8_t sum8(const uint8_t *p, size_t len)
{
	uint8_t s = 0;

	for (size_t i = 0; i < len; i++)
		s = (uint8_t)(s + p[i]);
	return s;
}

/* The table at gpa, after checking it lies inside what acpi_build reported. */
static const uint8_t *table_at(const uint8_t *buf, const struct acpi_layout *l, uint64_t gpa,
			       const char *signature, uint32_t length, uint8_t revision)
{
	const uint8_t *t;

	assert_true(gpa >= BASE_GPA);
	assert_true(gpa % 16 == 0);
	assert_true(gpa - BASE_GPA + length <= l->total_len);
	t = buf + (gpa - BASE_GPA);
	assert_memory_equal(t, signature, 4);
	assert_int_equal(rd(t + 4, 4), length);
	assert_int_equal(t[8], revision);
	assert_int_equal(sum8(t, length), 0);
	assert_memory_equal(t + 10, "FORKD ", 6);
	assert_memory_equal(t + 16, "FORKDVMM", 8);
	return t;
}

static void check_gas_io8(const uint8_t *gas, uint16_t port)
{
	assert_int_equal(gas[0], 1); /* System I/O */
	assert_int_equal(gas[1], 8); /* bit width */
	assert_int_equal(gas[2], 0); /* bit offset */
	assert_int_equal(gas[3], 1); /* byte access */
	assert_int_equal(rd(gas + 4, 8), port);
}

static void check_fadt(const uint8_t *f, const struct acpi_config *cfg, const struct acpi_layout *l)
{
	uint32_t flags = (uint32_t)rd(f + 112, 4);
	uint16_t boot_arch = (uint16_t)rd(f + 109, 2);

	assert_true(flags & (1u << 20));    /* HW_REDUCED_ACPI */
	assert_int_equal(rd(f + 36, 4), 0); /* no FACS */
	assert_int_equal(rd(f + 132, 8), 0);
	assert_int_equal(rd(f + 140, 8), l->dsdt_gpa); /* X_DSDT */
	assert_true(rd(f + 40, 4) == 0 || rd(f + 40, 4) == l->dsdt_gpa);
	assert_int_equal(boot_arch & 0x3, 0);	/* no legacy ISA devices, no 8042 */
	assert_int_equal(boot_arch & 0x4, 0x4); /* no VGA */
	if (cfg->reset_port) {
		assert_true(flags & (1u << 10)); /* RESET_REG_SUP */
		check_gas_io8(f + 116, cfg->reset_port);
		assert_int_equal(f[128], cfg->reset_value);
	} else {
		assert_false(flags & (1u << 10));
	}
	check_gas_io8(f + 244, cfg->sleep_control_port);
	check_gas_io8(f + 256, cfg->sleep_status_port);
	assert_memory_equal(f + 268, "FORKDVMM", 8);
}

static void check_madt(const uint8_t *m, uint32_t len, const struct acpi_config *cfg)
{
	int nr_lapic = 0, nr_ioapic = 0, nr_other = 0;
	uint32_t off = 44;

	assert_int_equal(rd(m + 36, 4), cfg->lapic_addr);
	while (off < len) {
		const uint8_t *e = m + off;

		assert_true(len - off >= 2);
		assert_true(e[1] >= 2 && e[1] <= len - off);
		if (e[0] == 0) {
			assert_int_equal(e[1], 8);
			assert_int_equal(e[2], nr_lapic);      /* processor uid */
			assert_int_equal(e[3], nr_lapic);      /* APIC id */
			assert_int_equal(rd(e + 4, 4) & 1, 1); /* enabled */
			nr_lapic++;
		} else if (e[0] == 1) {
			assert_int_equal(e[1], 12);
			assert_int_equal(e[2], cfg->ioapic_id);
			assert_int_equal(rd(e + 4, 4), cfg->ioapic_addr);
			assert_int_equal(rd(e + 8, 4), 0); /* GSI base */
			nr_ioapic++;
		} else {
			nr_other++;
		}
		off += e[1];
	}
	assert_int_equal(off, len);
	assert_int_equal(nr_lapic, cfg->nr_cpus);
	assert_int_equal(nr_ioapic, 1);
	assert_int_equal(nr_other, 0);
}

static const struct amld_value *named(const struct amld *d, const char *dev, const char *name)
{
	char path[AMLD_PATH_MAX];
	const struct amld_node *n;

	snprintf(path, sizeof(path), "%s.%s", dev, name);
	n = amld_find(d, path);
	if (!n)
		fail_msg("%s missing from the DSDT", path);
	assert_int_equal(n->kind, AMLD_NAME);
	return &n->value;
}

static void crs_of(const struct amld *d, const char *dev, struct amld_res *res)
{
	const struct amld_value *v = named(d, dev, "_CRS");

	assert_int_equal(v->type, AMLD_BUF);
	assert_int_equal(amld_resources(v->buf, v->buf_len, res), 0);
	/* A zero EndTag checksum means "not checked" (iasl writes that). */
	assert_true(res->sums_to_zero || res->end_checksum == 0);
}

static void check_string(const struct amld *d, const char *dev, const char *name, const char *want)
{
	const struct amld_value *v = named(d, dev, name);

	assert_int_equal(v->type, AMLD_STR);
	assert_string_equal(v->str, want);
}

static void check_vmgenid(const struct amld *d, uint64_t gpa)
{
	const struct amld_value *v;

	assert_int_equal(amld_find(d, "\\_SB_.VGEN")->kind, AMLD_DEVICE);
	check_string(d, "\\_SB_.VGEN", "_HID", "FKVM0001");
	/* Linux matches this one, upper-cased by ACPICA, as "VM_GEN_COUNTER". */
	check_string(d, "\\_SB_.VGEN", "_CID", "VM_Gen_Counter");
	check_string(d, "\\_SB_.VGEN", "_DDN", "VM_Gen_Counter");
	/* drivers/virt/vmgenid.c: Package of two integers, low then high half. */
	v = named(d, "\\_SB_.VGEN", "ADDR");
	assert_int_equal(v->type, AMLD_PKG);
	assert_int_equal(v->pkg_count, 2);
	assert_true(v->pkg[0] <= UINT32_MAX && v->pkg[1] <= UINT32_MAX);
	assert_true((v->pkg[0] | v->pkg[1] << 32) == gpa);
}

/*
 * _EVT must be If (LEqual (Arg0, gsi)) { Notify (\_SB.VGEN, 0x80) } and
 * nothing else; the Notify target may be spelled any way that resolves to
 * \_SB.VGEN from inside the method (iasl writes plain "VGEN").
 */
static void check_ged_evt(struct amld *d, uint32_t gsi)
{
	const struct amld_node *evt = amld_find(d, "\\_SB_.GED_._EVT");
	const uint8_t *if_end;
	char target[AMLD_PATH_MAX];
	struct amld_value v;
	struct amld_cursor c;

	assert_non_null(evt);
	assert_int_equal(evt->kind, AMLD_METHOD);
	assert_int_equal(evt->method_flags, 0x09); /* one argument, Serialized */
	c = (struct amld_cursor){evt->method_body, evt->method_body,
				 evt->method_body + evt->method_body_len, d};
	assert_true(c.end - c.p >= 3);
	assert_int_equal(*c.p++, 0xA0); /* If */
	assert_int_equal(amld_pkglen(&c, &if_end), 0);
	assert_ptr_equal(if_end, c.end);
	assert_int_equal(*c.p++, 0x93); /* LEqual */
	assert_int_equal(*c.p++, 0x68); /* Arg0 */
	assert_int_equal(amld_data(&c, &v), 0);
	assert_int_equal(v.type, AMLD_INT);
	assert_int_equal(v.integer, gsi);
	assert_true(c.p < c.end);
	assert_int_equal(*c.p++, 0x86); /* Notify */
	assert_int_equal(amld_reference(&c, d, evt->path, target), 0);
	assert_string_equal(target, "\\_SB_.VGEN");
	assert_int_equal(amld_data(&c, &v), 0);
	assert_int_equal(v.type, AMLD_INT);
	assert_int_equal(v.integer, 0x80);
	assert_ptr_equal(c.p, c.end);
}

static void check_ged(struct amld *d, uint32_t gsi)
{
	struct amld_res res;

	assert_int_equal(amld_find(d, "\\_SB_.GED_")->kind, AMLD_DEVICE);
	check_string(d, "\\_SB_.GED_", "_HID", "ACPI0013");
	assert_int_equal(named(d, "\\_SB_.GED_", "_UID")->integer, 0);
	crs_of(d, "\\_SB_.GED_", &res);
	assert_int_equal(res.nr_ext_irq, 1);
	assert_int_equal(res.ext_irq_count, 1);
	assert_int_equal(res.ext_irq_flags, 0x03); /* consumer, edge, high, exclusive */
	assert_int_equal(res.ext_irq[0], gsi);
	assert_int_equal(res.nr_io + res.nr_irq + res.nr_mem32, 0);
	check_ged_evt(d, gsi);
}

/* aml is the DSDT body; iasl's recompiled DSDT goes through here as well. */
static void check_dsdt_aml(const uint8_t *aml, size_t len, const struct acpi_config *cfg)
{
	const struct amld_value *v;
	struct amld_res res;
	int nr_devices = 0;
	struct amld *d;

	d = calloc(1, sizeof(*d));
	assert_non_null(d);
	if (amld_decode(aml, len, d))
		fail_msg("DSDT AML does not decode (stopped at byte %zu)", d->error_offset);
	for (int i = 0; i < d->nr_nodes; i++)
		nr_devices += d->nodes[i].kind == AMLD_DEVICE;
	assert_int_equal(nr_devices, cfg->nr_virtio + (cfg->com1_port ? 1 : 0) +
					 (cfg->vmgenid_gpa ? 1 : 0) + (cfg->ged_gsi ? 1 : 0));

	if (cfg->com1_port) {
		v = named(d, "\\_SB_.COM1", "_HID");
		assert_int_equal(v->opcode, 0x0C); /* EisaId is a DWord */
		assert_int_equal(v->integer, 0x0105D041);
		assert_int_equal(named(d, "\\_SB_.COM1", "_UID")->integer, 1);
		crs_of(d, "\\_SB_.COM1", &res);
		assert_int_equal(res.nr_io, 1);
		assert_int_equal(res.io_info & 1, 1); /* Decode16 */
		assert_int_equal(res.io_min, cfg->com1_port);
		assert_int_equal(res.io_max, cfg->com1_port);
		assert_int_equal(res.io_len, 8);
		if (cfg->com1_gsi < 16) {
			assert_int_equal(res.nr_irq, 1);
			assert_int_equal(res.irq_mask, 1u << cfg->com1_gsi);
		} else {
			assert_int_equal(res.nr_ext_irq, 1);
			assert_int_equal(res.ext_irq[0], cfg->com1_gsi);
		}
	} else {
		assert_null(amld_find(d, "\\_SB_.COM1"));
	}

	for (int i = 0; i < cfg->nr_virtio; i++) {
		char dev[AMLD_PATH_MAX];

		snprintf(dev, sizeof(dev), "\\_SB_.VR%02d", i);
		assert_non_null(amld_find(d, dev));
		v = named(d, dev, "_HID");
		assert_int_equal(v->type, AMLD_STR);
		assert_string_equal(v->str, "LNRO0005");
		assert_int_equal(named(d, dev, "_UID")->integer, i);
		assert_int_equal(named(d, dev, "_CCA")->integer, 1);
		crs_of(d, dev, &res);
		assert_int_equal(res.nr_mem32, 1);
		assert_true(res.mem32_writable);
		assert_int_equal(res.mem32_base, cfg->virtio[i].base);
		assert_int_equal(res.mem32_size, cfg->virtio[i].size);
		assert_int_equal(res.nr_ext_irq, 1);
		assert_int_equal(res.ext_irq_count, 1);
		assert_int_equal(res.ext_irq_flags, 0x03); /* consumer, edge, high, exclusive */
		assert_int_equal(res.ext_irq[0], cfg->virtio[i].gsi);
		assert_int_equal(res.nr_io + res.nr_irq, 0);
	}

	if (cfg->vmgenid_gpa)
		check_vmgenid(d, cfg->vmgenid_gpa);
	else
		assert_null(amld_find(d, "\\_SB_.VGEN"));
	if (cfg->ged_gsi)
		check_ged(d, cfg->ged_gsi);
	else
		assert_null(amld_find(d, "\\_SB_.GED_"));

	/* The VMM powers off on SLP_TYP 5, so \_S5 must say 5. */
	assert_non_null(amld_find(d, "\\_S5_"));
	v = &amld_find(d, "\\_S5_")->value;
	assert_int_equal(v->type, AMLD_PKG);
	assert_int_equal(v->pkg_count, 4);
	assert_int_equal(v->pkg[0], 5);
	assert_int_equal(v->pkg[1], 5);
	free(d);
}

static void check_tables(const uint8_t *buf, const struct acpi_layout *l,
			 const struct acpi_config *cfg)
{
	const uint8_t *rsdp = buf, *xsdt, *fadt, *madt, *dsdt;

	assert_int_equal(l->rsdp_gpa, BASE_GPA);
	assert_memory_equal(rsdp, "RSD PTR ", 8);
	assert_int_equal(sum8(rsdp, 20), 0);
	assert_int_equal(rsdp[15], 2); /* revision */
	assert_int_equal(rd(rsdp + 20, 4), 36);
	assert_int_equal(sum8(rsdp, 36), 0);
	assert_memory_equal(rsdp + 9, "FORKD ", 6);
	assert_int_equal(rd(rsdp + 24, 8), l->xsdt_gpa);

	xsdt = table_at(buf, l, l->xsdt_gpa, "XSDT", l->xsdt_len, 1);
	assert_int_equal(l->xsdt_len, 36 + 2 * 8);
	assert_int_equal(rd(xsdt + 36, 8), l->fadt_gpa);
	assert_int_equal(rd(xsdt + 44, 8), l->madt_gpa);
	assert_int_equal(l->fadt_len, 276);
	fadt = table_at(buf, l, l->fadt_gpa, "FACP", l->fadt_len, 6);
	assert_int_equal(l->madt_len, 44 + 8 * cfg->nr_cpus + 12);
	madt = table_at(buf, l, l->madt_gpa, "APIC", l->madt_len, 5);
	dsdt = table_at(buf, l, rd(fadt + 140, 8), "DSDT", l->dsdt_len, 2);

	/* In order, without overlap, ending where total_len says. */
	assert_true(l->rsdp_gpa + 36 <= l->xsdt_gpa);
	assert_true(l->xsdt_gpa + l->xsdt_len <= l->fadt_gpa);
	assert_true(l->fadt_gpa + l->fadt_len <= l->madt_gpa);
	assert_true(l->madt_gpa + l->madt_len <= l->dsdt_gpa);
	assert_int_equal(l->dsdt_gpa + l->dsdt_len - BASE_GPA, l->total_len);

	check_fadt(fadt, cfg, l);
	check_madt(madt, l->madt_len, cfg);
	check_dsdt_aml(dsdt + 36, l->dsdt_len - 36, cfg);
}

static void build_and_check(const struct acpi_config *cfg, uint8_t *buf)
{
	struct acpi_layout l;
	struct fk_err err;
	int ret;

	fk_err_clear(&err);
	ret = acpi_build(cfg, buf, BIG_BUF, BASE_GPA, &l, &err);
	if (ret)
		fail_msg("acpi_build: %d %s", ret, err.msg);
	check_tables(buf, &l, cfg);
}

static void test_cpu_counts(void **state)
{
	static const int counts[] = {1, 2, 4, ACPI_MAX_CPUS};
	uint8_t *buf = malloc(BIG_BUF);

	(void)state;
	assert_non_null(buf);
	for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
		struct acpi_config cfg = make_config(counts[i], 2);

		build_and_check(&cfg, buf);
		cfg = with_vmgenid(cfg, VMGENID, GED_GSI);
		build_and_check(&cfg, buf);
	}
	free(buf);
}

static void test_virtio_counts(void **state)
{
	uint8_t *buf = malloc(BIG_BUF);

	(void)state;
	assert_non_null(buf);
	for (int n = 0; n <= ACPI_MAX_VIRTIO; n++) {
		struct acpi_config cfg = make_config(2, n);

		build_and_check(&cfg, buf);
	}
	free(buf);
}

/* The largest configuration still fits the legacy BIOS area E0000h-FFFFFh. */
static void test_max_config_fits_bios_area(void **state)
{
	/* The virtio GSIs are 5..36, so the GED takes 3. */
	struct acpi_config cfg =
	    with_vmgenid(make_config(ACPI_MAX_CPUS, ACPI_MAX_VIRTIO), VMGENID, 3);
	uint8_t *buf = malloc(0x20000);
	struct acpi_layout l;
	struct fk_err err;

	(void)state;
	assert_non_null(buf);
	assert_int_equal(acpi_build(&cfg, buf, 0x20000, BASE_GPA, &l, &err), 0);
	assert_true(l.total_len <= 0x20000);
	check_tables(buf, &l, &cfg);
	free(buf);
}

static void test_optional_devices(void **state)
{
	uint8_t *buf = malloc(BIG_BUF);
	struct acpi_config cfg;

	(void)state;
	assert_non_null(buf);
	cfg = make_config(1, 3);
	cfg.com1_port = 0;
	build_and_check(&cfg, buf);

	cfg = make_config(1, 3);
	cfg.com1_port = 0x2F8;
	cfg.com1_gsi = 20; /* beyond ISA: extended Interrupt() instead of IRQNoFlags */
	build_and_check(&cfg, buf);

	cfg = make_config(1, 0);
	cfg.reset_port = 0;
	build_and_check(&cfg, buf);

	/* The ID without a notifier: the guest reads it at boot only. */
	cfg = with_vmgenid(make_config(1, 2), VMGENID, 0);
	build_and_check(&cfg, buf);
	/* Both ADDR halves in use. */
	cfg = with_vmgenid(make_config(2, 2), 0x123456780ull, GED_GSI);
	build_and_check(&cfg, buf);
	/* Without COM1 its GSI is free for the GED; GSI 1 is the lowest allowed. */
	cfg = with_vmgenid(make_config(1, 2), VMGENID, COM1_GSI);
	cfg.com1_port = 0;
	build_and_check(&cfg, buf);
	cfg = with_vmgenid(make_config(1, 2), VMGENID, 1);
	build_and_check(&cfg, buf);
	/* Right next to the tables on either side. */
	cfg = with_vmgenid(make_config(1, 2), BASE_GPA - ACPI_VMGENID_LEN, GED_GSI);
	build_and_check(&cfg, buf);
	{
		struct acpi_layout l;
		struct fk_err err;

		assert_int_equal(acpi_build(&cfg, buf, BIG_BUF, BASE_GPA, &l, &err), 0);
		cfg.vmgenid_gpa = (BASE_GPA + l.total_len + 7) & ~7ull;
		build_and_check(&cfg, buf);
	}
	free(buf);
}

static void test_buffer_too_small(void **state)
{
	struct acpi_config cfg = make_config(4, 8);
	uint8_t *buf = malloc(BIG_BUF);
	struct acpi_layout l;
	struct fk_err err;
	size_t need;

	(void)state;
	assert_non_null(buf);
	assert_int_equal(acpi_build(&cfg, buf, BIG_BUF, BASE_GPA, &l, &err), 0);
	need = l.total_len;

	memset(buf, 0xA5, BIG_BUF);
	fk_err_clear(&err);
	assert_int_equal(acpi_build(&cfg, buf, need - 1, BASE_GPA, &l, &err), -ENOSPC);
	assert_int_equal(err.code, ENOSPC);
	assert_non_null(strstr(err.msg, "bytes"));
	for (size_t i = 0; i < BIG_BUF; i++)
		assert_int_equal(buf[i], 0xA5);
	assert_int_equal(acpi_build(&cfg, buf, 0, BASE_GPA, &l, &err), -ENOSPC);

	assert_int_equal(acpi_build(&cfg, buf, need, BASE_GPA, &l, &err), 0);
	assert_int_equal(l.total_len, need);
	check_tables(buf, &l, &cfg);
	free(buf);
}

static void expect_einval(const struct acpi_config *cfg, uint64_t base, const char *what)
{
	uint8_t *buf = malloc(BIG_BUF);
	struct acpi_layout l;
	struct fk_err err;
	int ret;

	assert_non_null(buf);
	fk_err_clear(&err);
	ret = acpi_build(cfg, buf, BIG_BUF, base, &l, &err);
	if (ret != -EINVAL)
		fail_msg("%s: expected -EINVAL, got %d", what, ret);
	assert_int_equal(err.code, EINVAL);
	assert_true(strlen(err.msg) > 0);
	free(buf);
}

static void test_bad_configs(void **state)
{
	struct acpi_config cfg;

	(void)state;
	cfg = make_config(0, 1);
	expect_einval(&cfg, BASE_GPA, "0 cpus");
	cfg = make_config(-1, 1);
	expect_einval(&cfg, BASE_GPA, "-1 cpus");
	cfg = make_config(ACPI_MAX_CPUS + 1, 1);
	expect_einval(&cfg, BASE_GPA, "too many cpus");
	cfg = make_config(1, 1);
	cfg.nr_virtio = -1;
	expect_einval(&cfg, BASE_GPA, "-1 virtio");
	cfg = make_config(1, 1);
	cfg.nr_virtio = ACPI_MAX_VIRTIO + 1;
	expect_einval(&cfg, BASE_GPA, "too many virtio");
	cfg = make_config(1, 2);
	cfg.virtio[1].size = 0;
	expect_einval(&cfg, BASE_GPA, "empty virtio window");
	cfg = make_config(1, 2);
	cfg.virtio[1].base = 0x100000000ull;
	expect_einval(&cfg, BASE_GPA, "virtio above 4G");
	cfg = make_config(1, 2);
	cfg.virtio[1].base = 0xFFFFF000ull;
	cfg.virtio[1].size = 0x2000;
	expect_einval(&cfg, BASE_GPA, "virtio window crossing 4G");
	cfg = make_config(1, 3);
	cfg.virtio[2].gsi = cfg.virtio[0].gsi;
	expect_einval(&cfg, BASE_GPA, "shared virtio GSI");
	cfg = make_config(1, 3);
	cfg.virtio[1].gsi = COM1_GSI;
	expect_einval(&cfg, BASE_GPA, "virtio on the COM1 GSI");
	cfg = make_config(1, 1);
	cfg.lapic_addr = 0x1FEE00000ull;
	expect_einval(&cfg, BASE_GPA, "LAPIC above 4G");
	cfg = make_config(1, 1);
	cfg.ioapic_addr = 0x1FEC00000ull;
	expect_einval(&cfg, BASE_GPA, "IOAPIC above 4G");
	cfg = make_config(1, 1);
	expect_einval(&cfg, BASE_GPA + 8, "RSDP not 16-byte aligned");

	cfg = with_vmgenid(make_config(1, 2), VMGENID + 4, GED_GSI);
	expect_einval(&cfg, BASE_GPA, "vmgenid not 8-byte aligned");
	cfg = with_vmgenid(make_config(1, 2), UINT64_MAX - 7, GED_GSI);
	expect_einval(&cfg, BASE_GPA, "vmgenid wrapping around");
	cfg = with_vmgenid(make_config(1, 2), BASE_GPA - 8, GED_GSI);
	expect_einval(&cfg, BASE_GPA, "vmgenid overlapping the RSDP");
	cfg = with_vmgenid(make_config(1, 2), BASE_GPA + 0x100, GED_GSI);
	expect_einval(&cfg, BASE_GPA, "vmgenid inside the tables");
	cfg = with_vmgenid(make_config(1, 2), 0, GED_GSI);
	expect_einval(&cfg, BASE_GPA, "GED without vmgenid");
	cfg = with_vmgenid(make_config(1, 2), VMGENID, ACPI_IOAPIC_PINS);
	expect_einval(&cfg, BASE_GPA, "GED beyond the IOAPIC pins");
	cfg = with_vmgenid(make_config(1, 2), VMGENID, UINT32_MAX);
	expect_einval(&cfg, BASE_GPA, "GED GSI 2^32-1");
	cfg = with_vmgenid(make_config(1, 2), VMGENID, COM1_GSI);
	expect_einval(&cfg, BASE_GPA, "GED on the COM1 GSI");
	cfg = make_config(1, 3);
	cfg = with_vmgenid(cfg, VMGENID, cfg.virtio[2].gsi);
	expect_einval(&cfg, BASE_GPA, "GED on a virtio GSI");

	/* Without COM1 its GSI is free for virtio. */
	cfg = make_config(1, 3);
	cfg.com1_port = 0;
	cfg.virtio[1].gsi = COM1_GSI;
	{
		uint8_t *buf = malloc(BIG_BUF);

		assert_non_null(buf);
		build_and_check(&cfg, buf);
		free(buf);
	}
}

/* --- iasl ---------------------------------------------------------------- */

/* Runs cmd with stderr folded into stdout; returns its exit status. */
static int run(const char *cmd, char *out, size_t cap)
{
	char full[1024];
	size_t n = 0;
	FILE *p;
	int status;

	snprintf(full, sizeof(full), "%s 2>&1", cmd);
	p = popen(full, "r");
	assert_non_null(p);
	while (n + 1 < cap) {
		size_t got = fread(out + n, 1, cap - 1 - n, p);

		if (got == 0)
			break;
		n += got;
	}
	out[n] = '\0';
	status = pclose(p);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static uint8_t *read_file(const char *dir, const char *name, size_t *len)
{
	char path[512];
	uint8_t *data;
	long size;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (!f)
		fail_msg("iasl did not produce %s", path);
	assert_int_equal(fseek(f, 0, SEEK_END), 0);
	size = ftell(f);
	assert_true(size > 0);
	rewind(f);
	data = malloc((size_t)size + 1);
	assert_non_null(data);
	assert_int_equal(fread(data, 1, (size_t)size, f), (size_t)size);
	data[size] = '\0';
	fclose(f);
	*len = (size_t)size;
	return data;
}

static const char *const iasl_complaints[] = {"Warning", "Error", "Incorrect", "AE_", "Remark"};

/* `iasl -d NAME.dat`: must exit 0 without a complaint; returns the .dsl text. */
static char *iasl_disassemble(const char *dir, const char *name, char *out, size_t cap)
{
	char cmd[600], dsl[64];
	size_t len;
	char *text;

	snprintf(cmd, sizeof(cmd), "cd '%s' && iasl -d %s.dat", dir, name);
	if (run(cmd, out, cap) != 0)
		fail_msg("iasl -d %s.dat failed:\n%s", name, out);
	for (size_t i = 0; i < sizeof(iasl_complaints) / sizeof(iasl_complaints[0]); i++)
		if (strstr(out, iasl_complaints[i]))
			fail_msg("iasl -d %s.dat complained (%s):\n%s", name, iasl_complaints[i],
				 out);
	snprintf(dsl, sizeof(dsl), "%s.dsl", name);
	text = (char *)read_file(dir, dsl, &len);
	if (strstr(text, "Incorrect"))
		fail_msg("%s.dsl notes a problem:\n%s", name, text);
	return text;
}

/* `iasl NAME.dsl`: must compile cleanly; returns the .aml it produced. */
static uint8_t *iasl_compile(const char *dir, const char *name, size_t *len, char *out, size_t cap)
{
	char cmd[600], aml[64];

	snprintf(cmd, sizeof(cmd), "cd '%s' && iasl %s.dsl", dir, name);
	if (run(cmd, out, cap) != 0 || !strstr(out, "Compilation successful. 0 Errors, 0 Warnings"))
		fail_msg("iasl %s.dsl failed:\n%s", name, out);
	snprintf(aml, sizeof(aml), "%s.aml", name);
	return read_file(dir, aml, len);
}

/* Scratch space for the iasl test, released by the teardown even when a check fails. */
struct iasl_scratch {
	char root[32];
	bool have_root;
	uint8_t *buf;
	char *out;
	size_t out_cap;
};

static int iasl_setup(void **state)
{
	struct iasl_scratch *s = calloc(1, sizeof(*s));

	if (!s)
		return -1;
	snprintf(s->root, sizeof(s->root), "/tmp/forkd-acpi-XXXXXX");
	s->out_cap = 1 << 20;
	s->buf = malloc(BIG_BUF);
	s->out = malloc(s->out_cap);
	*state = s;
	if (!s->buf || !s->out || !mkdtemp(s->root))
		return -1;
	s->have_root = true;
	return 0;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(path);
}

static int iasl_teardown(void **state)
{
	struct iasl_scratch *s = *state;
	int ret = 0;

	if (s->have_root)
		ret = nftw(s->root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	free(s->buf);
	free(s->out);
	free(s);
	return ret;
}

static void iasl_check_config(struct iasl_scratch *s, const char *subdir,
			      const struct acpi_config *cfg)
{
	uint8_t *buf = s->buf, *dsdt, *bad, *aml;
	char dir[64], *text, cmd[600];
	struct acpi_layout l;
	struct fk_err err;
	size_t aml_len;

	snprintf(dir, sizeof(dir), "%s/%s", s->root, subdir);
	assert_int_equal(mkdir(dir, 0700), 0);
	assert_int_equal(acpi_build(cfg, buf, BIG_BUF, BASE_GPA, &l, &err), 0);
	const struct {
		const char *name;
		uint64_t gpa;
	} data_tables[] = {{"XSDT", l.xsdt_gpa}, {"FACP", l.fadt_gpa}, {"APIC", l.madt_gpa}};

	/*
	 * Data tables: disassemble, recompile, and the result must equal ours
	 * except for the checksum and iasl's own creator id/revision.
	 * (iasl cannot load an RSDP from a binary file; checked above instead.)
	 */
	for (size_t i = 0; i < sizeof(data_tables) / sizeof(data_tables[0]); i++) {
		const char *name = data_tables[i].name;
		const uint8_t *t = buf + (data_tables[i].gpa - BASE_GPA);
		size_t len = (size_t)rd(t + 4, 4);
		char dat[64];

		snprintf(dat, sizeof(dat), "%s.dat", name);
		write_file(dir, dat, t, len);
		free(iasl_disassemble(dir, name, s->out, s->out_cap));
		aml = iasl_compile(dir, name, &aml_len, s->out, s->out_cap);
		assert_int_equal(aml_len, len);
		for (size_t k = 0; k < len; k++)
			if (k != 9 && (k < 28 || k >= 36) && aml[k] != t[k])
				fail_msg("%s byte %zu: ours 0x%02x, iasl round trip 0x%02x", name,
					 k, t[k], aml[k]);
		free(aml);
	}

	/* DSDT: disassemble, recompile, and iasl's AML must mean the same. */
	dsdt = buf + (l.dsdt_gpa - BASE_GPA);
	write_file(dir, "DSDT.dat", dsdt, l.dsdt_len);
	text = iasl_disassemble(dir, "DSDT", s->out, s->out_cap);
	if (cfg->nr_virtio)
		assert_non_null(strstr(text, "Device (VR00)"));
	if (cfg->vmgenid_gpa)
		assert_non_null(strstr(text, "Device (VGEN)"));
	if (cfg->ged_gsi)
		assert_non_null(strstr(text, "Method (_EVT, 1, Serialized)"));
	free(text);
	aml = iasl_compile(dir, "DSDT", &aml_len, s->out, s->out_cap);
	assert_true(aml_len > 36);
	check_dsdt_aml(aml + 36, aml_len - 36, cfg);
	free(aml);

	/* Negative control: the same check does catch a bad checksum. */
	bad = malloc(l.dsdt_len);
	assert_non_null(bad);
	memcpy(bad, dsdt, l.dsdt_len);
	bad[9] ^= 0x5A;
	write_file(dir, "BAD.dat", bad, l.dsdt_len);
	free(bad);
	snprintf(cmd, sizeof(cmd), "cd '%s' && iasl -d BAD.dat", dir);
	run(cmd, s->out, s->out_cap);
	assert_non_null(strstr(s->out, "Incorrect checksum"));
}

static void test_iasl_accepts_tables(void **state)
{
	struct iasl_scratch *s = *state;
	struct acpi_config cfg;

	if (system("command -v iasl >/dev/null 2>&1") != 0) {
		if (getenv("CI"))
			fail_msg("iasl not installed (package acpica-tools) and CI is set");
		print_message("skipped: iasl not installed\n");
		skip();
	}
	cfg = with_vmgenid(make_config(4, 3), VMGENID, GED_GSI);
	iasl_check_config(s, "typical", &cfg);
	cfg = with_vmgenid(make_config(ACPI_MAX_CPUS, ACPI_MAX_VIRTIO), 0x123456780ull, 3);
	cfg.com1_port = 0;
	iasl_check_config(s, "largest", &cfg);
	cfg = make_config(1, 0);
	cfg.com1_gsi = 20;
	cfg.reset_port = 0;
	iasl_check_config(s, "minimal", &cfg);
	cfg = with_vmgenid(make_config(1, 0), VMGENID, 0);
	iasl_check_config(s, "vmgenid-only", &cfg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cpu_counts),
	    cmocka_unit_test(test_virtio_counts),
	    cmocka_unit_test(test_max_config_fits_bios_area),
	    cmocka_unit_test(test_optional_devices),
	    cmocka_unit_test(test_buffer_too_small),
	    cmocka_unit_test(test_bad_configs),
	    cmocka_unit_test_setup_teardown(test_iasl_accepts_tables, iasl_setup, iasl_teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
