/* SPDX-License-Identifier: MIT */
#include "util/kvm_host.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdbool.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

const struct fk_kvm_cap fk_kvm_required_caps[] = {
    {KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP"},
    {KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
    {KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR"},
    {KVM_CAP_PIT2, "KVM_CAP_PIT2"},
    {KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID"},
    {KVM_CAP_IRQFD, "KVM_CAP_IRQFD"},
    {KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"},
};
const size_t fk_kvm_nr_required_caps =
    sizeof(fk_kvm_required_caps) / sizeof(fk_kvm_required_caps[0]);

static bool exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

void fk_kvm_host_probe(const char *path, struct fk_kvm_host *out)
{
	int fd;

	*out = (struct fk_kvm_host){.kind = FK_KVM_NONE, .api_version = -1};
	if (exists("/sys/module/kvm_pvm"))
		out->module = "kvm_pvm";
	else if (exists("/sys/module/kvm_amd"))
		out->module = "kvm_amd";
	else if (exists("/sys/module/kvm_intel"))
		out->module = "kvm_intel";
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		out->open_errno = errno;
		return;
	}
	out->api_version = ioctl(fd, KVM_GET_API_VERSION, 0);
	close(fd);
	/* A KVM device answers with its API version (12); anything else is no KVM. */
	if (out->api_version != KVM_API_VERSION || !out->module)
		return;
	out->kind = strcmp(out->module, "kvm_pvm") == 0 ? FK_KVM_PVM : FK_KVM_HARDWARE;
}

enum fk_kvm_kind fk_kvm_kind(void)
{
	struct fk_kvm_host h;

	fk_kvm_host_probe("/dev/kvm", &h);
	return h.kind;
}

const char *fk_kvm_kind_name(enum fk_kvm_kind kind)
{
	switch (kind) {
	case FK_KVM_PVM:
		return "pvm";
	case FK_KVM_HARDWARE:
		return "hardware";
	case FK_KVM_NONE:
		break;
	}
	return "none";
}
