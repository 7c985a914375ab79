/* SPDX-License-Identifier: MIT */
#include "boot/boot.h"

#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "forkd/pvh.h"
#include "boot/acpi.h"
#include "boot/bzimage_boot.h"
#include "boot/e820.h"
#include "boot/elf_loader.h"
#include "core/layout.h"

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
	if (vm->vsock.transport_ready) {
		struct acpi_virtio_dev *d = &acpi->virtio[acpi->nr_virtio++];
		d->base = vm->vsock.transport.base;
		d->size = VIRTIO_MMIO_SIZE;
		d->gsi = vm->vsock.transport.irq.gsi;
	}
	if (vm->net.transport_ready) {
		struct acpi_virtio_dev *d = &acpi->virtio[acpi->nr_virtio++];
		d->base = vm->net.transport.base;
		d->size = VIRTIO_MMIO_SIZE;
		d->gsi = vm->net.transport.irq.gsi;
	}
}

int boot_load_initrd(struct vm *vm, uint64_t kernel_end, uint64_t limit, uint64_t *gpa,
		     uint64_t *size_out, struct fk_err *err)
{
	const char *path = vm->cfg->initrd;
	uint64_t top = guest_mem_low_end(&vm->mem), start;
	uint8_t *data = NULL;
	size_t size = 0;
	int ret;

	if (limit < top)
		top = limit;
	ret = read_file(path, INITRD_MAX_SIZE, &data, &size, err);
	if (ret < 0)
		return fk_wrap(err, "initrd");
	/* Highest page-aligned spot below the MMIO hole (or the kernel's limit), as boot loaders
	 * do. */
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
	*gpa = start;
	*size_out = size;
	ret = 0;
out:
	free(data);
	return ret;
}

static int write_cmdline(struct vm *vm, size_t max_len, struct fk_err *err)
{
	size_t len = strlen(vm->cfg->cmdline);

	if (max_len > LAYOUT_CMDLINE_MAX - 1)
		max_len = LAYOUT_CMDLINE_MAX - 1;
	if (len > max_len)
		return fk_fail(err, E2BIG, "--append: %zu bytes, at most %zu for this kernel", len,
			       max_len);
	return guest_mem_write(&vm->mem, LAYOUT_CMDLINE, vm->cfg->cmdline, len + 1) < 0
		   ? fk_fail(err, EFAULT, "--append: no guest RAM at 0x%llx", LAYOUT_CMDLINE)
		   : 0;
}

static int write_acpi(struct vm *vm, struct fk_err *err)
{
	struct acpi_config acpi;
	struct acpi_layout acpi_layout;
	uint8_t *acpi_buf;
	int ret;

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
	return 0;
}

static int setup_pvh(struct vm *vm, const uint8_t *image, size_t image_size, struct fk_err *err)
{
	struct hvm_memmap_table_entry memmap[E820_MAX_ENTRIES];
	struct hvm_start_info info = {0};
	struct hvm_modlist_entry mod = {0};
	struct elf_kernel kernel;
	int ret, nr_memmap;

	ret = elf_load_pvh(image, image_size, vm->cfg->kernel, &vm->mem, &kernel, err);
	if (ret < 0)
		return ret;
	vm->kernel_entry = kernel.pvh_entry;

	if (vm->cfg->initrd) {
		ret = boot_load_initrd(vm, kernel.load_end, UINT64_MAX, &mod.paddr, &mod.size, err);
		if (ret < 0)
			return ret;
		info.nr_modules = 1;
		info.modlist_paddr = LAYOUT_PVH_MODLIST;
		guest_mem_write(&vm->mem, LAYOUT_PVH_MODLIST, &mod, sizeof(mod));
	}

	ret = write_cmdline(vm, LAYOUT_CMDLINE_MAX - 1, err);
	if (ret < 0)
		return ret;
	ret = write_acpi(vm, err);
	if (ret < 0)
		return ret;

	nr_memmap = e820_build(&vm->mem, memmap);
	guest_mem_write(&vm->mem, LAYOUT_PVH_MEMMAP, memmap, nr_memmap * sizeof(memmap[0]));

	info.magic = XEN_HVM_START_MAGIC_VALUE;
	info.version = 1;
	info.cmdline_paddr = LAYOUT_CMDLINE;
	info.rsdp_paddr = vm->rsdp_gpa;
	info.memmap_paddr = LAYOUT_PVH_MEMMAP;
	info.memmap_entries = (uint32_t)nr_memmap;
	guest_mem_write(&vm->mem, LAYOUT_PVH_START_INFO, &info, sizeof(info));
	vm->boot_protocol = BOOT_PROTOCOL_PVH;
	return 0;
}

static int setup_bzimage(struct vm *vm, const uint8_t *image, size_t image_size, struct fk_err *err)
{
	struct bzimage_boot_args args = {.cmdline_gpa = LAYOUT_CMDLINE};
	struct bzimage_info info;
	int ret;

	ret = bzimage_parse(image, image_size, vm->cfg->kernel, guest_mem_low_end(&vm->mem), &info,
			    err);
	if (ret < 0)
		return ret;
	ret = bzimage_load(image, &info, &vm->mem, err);
	if (ret < 0)
		return ret;
	if (vm->cfg->initrd) {
		/* initrd_addr_max is the last byte the initrd may occupy. */
		ret = boot_load_initrd(vm, info.load_addr + info.init_size,
				       (uint64_t)info.initrd_max + 1, &args.initrd_gpa,
				       &args.initrd_size, err);
		if (ret < 0)
			return ret;
	}
	ret = write_cmdline(vm, info.cmdline_max, err);
	if (ret < 0)
		return ret;
	ret = write_acpi(vm, err);
	if (ret < 0)
		return ret;
	args.rsdp_gpa = vm->rsdp_gpa;
	ret = bzimage_write_boot_params(&vm->mem, LAYOUT_BZ_BOOT_PARAMS, image, &info, &args, err);
	if (ret < 0)
		return ret;
	ret = bzimage_write_page_tables(&vm->mem, LAYOUT_BZ_PAGE_TABLES, err);
	if (ret < 0)
		return ret;
	ret = bzimage_write_gdt(&vm->mem, LAYOUT_BZ_GDT, err);
	if (ret < 0)
		return ret;
	vm->kernel_entry = info.entry64;
	vm->boot_protocol = BOOT_PROTOCOL_LINUX64;
	return 0;
}

int boot_setup(struct vm *vm, struct fk_err *err)
{
	uint8_t *image = NULL;
	size_t image_size = 0;
	int ret;

	ret = read_file(vm->cfg->kernel, ELF_MAX_KERNEL_SIZE, &image, &image_size, err);
	if (ret < 0)
		return fk_wrap(err, "kernel");
	if (image_size >= SELFMAG && memcmp(image, ELFMAG, SELFMAG) == 0)
		ret = setup_pvh(vm, image, image_size, err);
	else if (bzimage_detect(image, image_size))
		ret = setup_bzimage(vm, image, image_size, err);
	else
		ret = fk_fail(err, ENOEXEC,
			      "kernel %s: not an ELF file (bad magic) nor a bzImage (no \"HdrS\" "
			      "at 0x202)",
			      vm->cfg->kernel);
	free(image);
	return ret;
}

int boot_setup_bsp(struct vm *vm, struct fk_err *err)
{
	if (vm->boot_protocol == BOOT_PROTOCOL_LINUX64)
		return vcpu_setup_linux64_bsp(&vm->vcpus[0], vm->kernel_entry,
					      LAYOUT_BZ_BOOT_PARAMS, err);
	return vcpu_setup_pvh_bsp(&vm->vcpus[0], vm->kernel_entry, LAYOUT_PVH_START_INFO, err);
}
