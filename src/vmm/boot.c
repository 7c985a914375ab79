/* SPDX-License-Identifier: MIT */
#include "vmm/boot.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "forkd/pvh.h"
#include "vmm/acpi.h"
#include "vmm/e820.h"
#include "vmm/elf_loader.h"
#include "vmm/layout.h"

#define INITRD_MAX_SIZE (2ULL << 30)
#define PAGE_SIZE_4K	4096ULL

void boot_acpi_config(const struct vm *vm, struct acpi_config *acpi)
{
	memset(acpi, 0, sizeof(*acpi));
	acpi->nr_cpus = vm->nr_vcpus;
	acpi->lapic_addr = LAYOUT_LAPIC_ADDR;
	acpi->ioapic_addr = LAYOUT_IOAPIC_ADDR;
	acpi->ioapic_id = 0;
	acpi->com1_port = LAYOUT_COM1_PORT;
	acpi->com1_gsi = LAYOUT_COM1_GSI;
	acpi->sleep_control_port = LAYOUT_PM_SLEEP_CONTROL;
	acpi->sleep_status_port = LAYOUT_PM_SLEEP_STATUS;
	acpi->reset_port = LAYOUT_PM_RESET;
	acpi->reset_value = LAYOUT_PM_RESET_VALUE;
	acpi->vmgenid_gpa = LAYOUT_VMGENID_ADDR;
	acpi->ged_gsi = LAYOUT_GED_GSI;
	acpi->nr_virtio = vm->nr_disks;
	for (int i = 0; i < vm->nr_disks; i++) {
		acpi->virtio[i].base = vm->disks[i].transport.base;
		acpi->virtio[i].size = VIRTIO_MMIO_SIZE;
		acpi->virtio[i].gsi = vm->disks[i].transport.irq.gsi;
	}
}

static int load_initrd(struct vm *vm, uint64_t kernel_end, struct hvm_modlist_entry *mod,
		       struct fk_err *err)
{
	const char *path = vm->cfg->initrd;
	uint64_t top = guest_mem_low_end(&vm->mem), start;
	uint8_t *data = NULL;
	size_t size = 0;
	int ret;

	ret = read_file(path, INITRD_MAX_SIZE, &data, &size, err);
	if (ret < 0)
		return fk_wrap(err, "initrd");
	/* Highest page-aligned spot below the MMIO hole, as boot loaders do. */
	if (size > top) {
		ret =
		    fk_fail(err, EFBIG, "initrd %s: %zu bytes do not fit in guest RAM", path, size);
		goto out;
	}
	start = (top - size) & ~(PAGE_SIZE_4K - 1);
	if (start < kernel_end) {
		ret = fk_fail(err, EFBIG,
			      "initrd %s: %zu MiB do not fit between the kernel (ends at 0x%llx) "
			      "and the end of low RAM (0x%llx); expected a smaller initrd or "
			      "more --mem",
			      path, size >> 20, (unsigned long long)kernel_end,
			      (unsigned long long)top);
		goto out;
	}
	if (guest_mem_write(&vm->mem, start, data, size) < 0) {
		ret = fk_fail(err, EFAULT, "initrd %s: cannot place at 0x%llx", path,
			      (unsigned long long)start);
		goto out;
	}
	mod->paddr = start;
	mod->size = size;
	ret = 0;
out:
	free(data);
	return ret;
}

int boot_setup_pvh(struct vm *vm, struct fk_err *err)
{
	struct hvm_memmap_table_entry memmap[E820_MAX_ENTRIES];
	struct hvm_start_info info = {0};
	struct hvm_modlist_entry mod = {0};
	struct elf_kernel kernel;
	struct acpi_config acpi;
	struct acpi_layout acpi_layout;
	uint8_t *image = NULL, *acpi_buf;
	size_t image_size = 0, cmdline_len;
	int ret, nr_memmap;

	ret = read_file(vm->cfg->kernel, ELF_MAX_KERNEL_SIZE, &image, &image_size, err);
	if (ret < 0)
		return fk_wrap(err, "kernel");
	ret = elf_load_pvh(image, image_size, vm->cfg->kernel, &vm->mem, &kernel, err);
	free(image);
	if (ret < 0)
		return ret;
	vm->kernel_entry = kernel.pvh_entry;

	if (vm->cfg->initrd) {
		ret = load_initrd(vm, kernel.load_end, &mod, err);
		if (ret < 0)
			return ret;
		info.nr_modules = 1;
		info.modlist_paddr = LAYOUT_PVH_MODLIST;
		guest_mem_write(&vm->mem, LAYOUT_PVH_MODLIST, &mod, sizeof(mod));
	}

	cmdline_len = strlen(vm->cfg->cmdline) + 1;
	if (cmdline_len > LAYOUT_CMDLINE_MAX)
		return fk_fail(err, E2BIG, "--append: %zu bytes, at most %llu", cmdline_len - 1,
			       LAYOUT_CMDLINE_MAX - 1);
	guest_mem_write(&vm->mem, LAYOUT_CMDLINE, vm->cfg->cmdline, cmdline_len);

	boot_acpi_config(vm, &acpi);
	acpi_buf = guest_mem_ptr(&vm->mem, LAYOUT_ACPI_START, LAYOUT_ACPI_END - LAYOUT_ACPI_START);
	if (!acpi_buf)
		return fk_fail(err, EFAULT, "ACPI tables: no guest RAM at 0x%llx",
			       LAYOUT_ACPI_START);
	ret = acpi_build(&acpi, acpi_buf, LAYOUT_ACPI_END - LAYOUT_ACPI_START, LAYOUT_ACPI_START,
			 &acpi_layout, err);
	if (ret < 0)
		return fk_wrap(err, "ACPI tables");
	vm->rsdp_gpa = acpi_layout.rsdp_gpa;

	nr_memmap = e820_build(&vm->mem, memmap);
	guest_mem_write(&vm->mem, LAYOUT_PVH_MEMMAP, memmap, nr_memmap * sizeof(memmap[0]));

	info.magic = XEN_HVM_START_MAGIC_VALUE;
	info.version = 1;
	info.cmdline_paddr = LAYOUT_CMDLINE;
	info.rsdp_paddr = acpi_layout.rsdp_gpa;
	info.memmap_paddr = LAYOUT_PVH_MEMMAP;
	info.memmap_entries = (uint32_t)nr_memmap;
	guest_mem_write(&vm->mem, LAYOUT_PVH_START_INFO, &info, sizeof(info));
	return 0;
}
