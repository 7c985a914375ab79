/* SPDX-License-Identifier: MIT */
/* forkd-vmm's command line: parsed and validated before any KVM work. */
#ifndef FORKD_CORE_CONFIG_H
#define FORKD_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <stdio.h>

#include "jail/seccomp.h"
#include "util/err.h"

#define VMM_MAX_DISKS	8
#define VMM_MAX_CPUS	254 /* xAPIC ids in the MADT are 8-bit; 255 is broadcast */
#define VMM_MIN_MEM	(32ULL << 20)
#define VMM_MAX_MEM	(1ULL << 40)
#define VMM_DEFAULT_MEM (256ULL << 20)
#define VMM_MAX_CMDLINE 4095
#define VMM_MAX_FANOUT	1024 /* BRANCH_MAX_CHILDREN: one branch request */
/* --vsock: the socket path must fit sun_path (108 bytes with its NUL). */
#define VMM_VSOCK_PATH_MAX    108
#define VMM_VSOCK_DEFAULT_CID 3
#define VMM_VSOCK_MIN_CID     3
#define VMM_VSOCK_MAX_CID     0xFFFFFFFEULL
/* --jail-bind: extra host directories a jailed VM may use. */
#define VMM_MAX_JAIL_BINDS 8
/* --cgroup: where per-VM cgroups are made. */
#define VMM_CGROUP_PARENT_DEFAULT "/sys/fs/cgroup/forkd"
/* --net: an interface name fits IFNAMSIZ (16 with its NUL); a netns name is a file in /run/netns.
 */
#define VMM_NET_IFNAME_MAX 16
#define VMM_NET_NETNS_MAX  64

/* Exit statuses of forkd-vmm, documented in docs/vmm.md. */
enum vmm_exit_status {
	VMM_EXIT_POWEROFF = 0,	  /* guest powered off (ACPI S5) */
	VMM_EXIT_ERROR = 1,	  /* the VMM failed at run time */
	VMM_EXIT_USAGE = 2,	  /* bad command line or input file */
	VMM_EXIT_RESET = 3,	  /* guest asked for a reset/reboot */
	VMM_EXIT_GUEST_CRASH = 4, /* triple fault, emulation failure, bad guest state */
};

/*
 * CPUID features --cpuid-hide can take away from the guest. `xsave` exists
 * because the KVM-PVM emulator fails on XRSTOR: without XSAVE Linux falls
 * back to FXSAVE/FXRSTOR (and, XSAVE being their base, loses AVX too), though
 * PVM itself puts the XSAVE bits back (docs/vmm.md); `cx16` because it fails
 * on LOCK CMPXCHG16B, which SLUB uses when CPUID has it.
 */
enum vmm_cpuid_hide {
	VMM_CPUID_HIDE_XSAVE = 1u << 0,	 /* XSAVE, OSXSAVE, leaf 0xD and all that needs them */
	VMM_CPUID_HIDE_AVX = 1u << 1,	 /* AVX, AVX2, FMA, F16C, AVX-512, AMX, XOP, FMA4 */
	VMM_CPUID_HIDE_AVX512 = 1u << 2, /* the AVX-512 family only */
	VMM_CPUID_HIDE_PCID = 1u << 3,	 /* PCID and INVPCID */
	VMM_CPUID_HIDE_X2APIC = 1u << 4, /* x2APIC: the guest uses the xAPIC MMIO page */
	VMM_CPUID_HIDE_CX16 = 1u << 5,	 /* CMPXCHG16B: KVM-PVM's emulator fails on it too */
};

/* Parses a comma-separated list of the names above ("xsave,pcid") into a mask. */
int parse_cpuid_hide(const char *s, unsigned *mask, struct fk_err *err);

struct vmm_disk_config {
	char path[4096];
	bool readonly;
	char id[21]; /* virtio-blk GET_ID string (20 bytes max) */
};

struct vmm_config {
	const char *kernel;
	const char *initrd;
	const char *cmdline;
	uint64_t mem_size;
	int mem_backend; /* enum guest_mem_backend: --mem-backend anon|hugetlb */
	int nr_cpus;
	int nr_disks;
	struct vmm_disk_config disks[VMM_MAX_DISKS];
	const char *serial_out;	  /* "stdout", "none" or a file path */
	const char *serial_in;	  /* "stdin", "none" or a file/fifo path */
	const char *kvm_path;	  /* normally /dev/kvm */
	const char *control_path; /* Unix socket for the control protocol, or NULL */
	/*
	 * --ready-fd N: "ready\n" is written to N and N closed once the vCPUs run and the
	 * control socket serves, so a launcher waits on one descriptor instead of polling
	 * the socket (-1: none).
	 */
	int ready_fd;
	const char *restore_dir; /* --restore: start from this snapshot instead of booting */
	const char *overlay_dir; /* --overlay-dir: where a restored VM's private disk copies go */
	bool restore_verify;	 /* --verify: check the memory file's chunk checksums first */
	bool restore_prewarm;	 /* --prewarm: the memory file into the page cache first */
	bool mem_memfd;		 /* --mem-backend memfd: guest RAM in a memfd (else anon) */
	/*
	 * --restore-mode uffd --uffd-handler SOCK: guest RAM is filled lazily by
	 * the handler listening on SOCK (forkd-uffd; docs/design/userfaultfd.md).
	 */
	const char *uffd_handler;
	unsigned cpuid_hide; /* enum vmm_cpuid_hide bits */
	/* --fanout N --fanout-dir OUT: N BRANCH children of the restore, none run here (0: off) */
	int fanout;
	const char *fanout_dir;
	/* --vsock PATH[,cid=N]: hybrid-vsock Unix socket, "" for no vsock device. */
	char vsock_path[VMM_VSOCK_PATH_MAX];
	uint64_t vsock_cid;
	bool vsock_cid_given; /* with --restore: override the snapshot's cid */
	/*
	 * --net tap=NAME[,mac=..][,netns=NS]: one virtio-net device on a tap
	 * (docs/net-device.md); net_tap "" for none.
	 */
	char net_tap[VMM_NET_IFNAME_MAX];
	char net_netns[VMM_NET_NETNS_MAX]; /* "" : the VMM's own namespace */
	uint8_t net_mac[6];
	bool net_mac_given; /* else a random locally administered MAC (a snapshot keeps its own) */
	/*
	 * --net-policy none|host|nat[,id=ID] (enum fk_net_policy, src/net/,
	 * docs/networking.md): the VMM makes its own namespace forkd-<ID> and
	 * sets net_tap/net_netns to its tap; net_host_addr is where the host
	 * reaches the guest. The owner pid keeps a zygote or child (which copy
	 * this config) from removing its source's namespace.
	 */
	int net_policy;
	char net_id[33];
	bool net_netns_owned;
	pid_t net_netns_owner;
	char net_host_addr[16];
	/*
	 * The tap already open (>= 0), else -1 and the device opens net_tap by
	 * name: a jailed VMM cannot open a tap, so the network broker opens it
	 * in the namespace and passes the fd (docs/jail.md). The VM's network
	 * device takes it over.
	 */
	int net_tap_fd;
	bool mem_given, cpus_given;
	bool help;
	/*
	 * --image NAME: a root filesystem image from `forkd image build`, booted
	 * read-only as /dev/vda with the agent on (docs/images.md); kernel,
	 * initrd and command line default to the cached Linux images. The
	 * strings live here so the config needs no allocations.
	 */
	const char *image;
	char image_kernel[4096], image_initrd[4096], image_cmdline[VMM_MAX_CMDLINE + 1];
	/*
	 * --jail DIR [--uid N --gid N] [--jail-bind DIR[,ro]]...: run in a
	 * mount namespace rooted at DIR, unprivileged (docs/jail.md).
	 */
	const char *jail_dir;
	unsigned jail_uid, jail_gid;
	bool jail_uid_given, jail_gid_given;
	const char *jail_binds[VMM_MAX_JAIL_BINDS]; /* "DIR" or "DIR,ro", as given */
	int nr_jail_binds;
	/*
	 * cgroup v2 limits (docs/jail.md): the VM and its BRANCH children share
	 * PARENT/vm-NAME. Any limit, or --cgroup, turns it on.
	 */
	bool cgroup_wanted;
	const char *cgroup_parent;	      /* --cgroup, default VMM_CGROUP_PARENT_DEFAULT */
	const char *cgroup_name;	      /* --cgroup-name, default the VMM's pid */
	uint64_t memory_max;		      /* bytes, 0: none */
	uint64_t cpu_quota_us, cpu_period_us; /* --cpu-max; quota 0: none */
	uint64_t pids_max;		      /* 0: none */
	enum fk_seccomp_mode seccomp; /* --seccomp=on|off|log (docs/seccomp.md); default on */
	/* --net-policy host|nat: the command line with the guest's forkd.net= in front. */
	char net_cmdline[VMM_MAX_CMDLINE + 1];
};

/* What --net-policy host|nat puts in front of a fresh boot's command line
 * (forkd-init configures eth0 from it; docs/networking.md). */
#define VMM_NET_CMDLINE "forkd.net=" FK_NET_GUEST_ADDR "/30,gw=" FK_NET_GATEWAY_ADDR

/* Where --image looks: $FORKD_IMAGE_CACHE or /var/cache/forkd/rootfs. */
#define VMM_IMAGE_CACHE_DEFAULT "/var/cache/forkd/rootfs"
/* Where --image takes vmlinux and initramfs.cpio: $FORKD_IMAGES or this. */
#define VMM_KERNEL_IMAGES_DEFAULT "/var/cache/forkd/images"
/* What --image puts in front of --append. */
#define VMM_IMAGE_CMDLINE "console=ttyS0 quiet forkd.agent=1 forkd.root=/dev/vda"

/* Parses "512M", "4G", "1T", "1048576", "64MiB". Returns 0 or -EINVAL. */
int parse_size(const char *s, uint64_t *out);

/* Fills cfg from argv; on error returns -errno with a one-line message in err. */
int vmm_config_parse(struct vmm_config *cfg, int argc, char **argv, struct fk_err *err);

void vmm_config_usage(FILE *out);

#endif
