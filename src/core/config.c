/* SPDX-License-Identifier: MIT */
#include "core/config.h"
#include "core/guest_mem.h"
#include "net/netns.h"

#include "jail/cgroup.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	uint64_t mult = 1;
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		mult = 1ULL << 10;
		end++;
		break;
	case 'M':
		mult = 1ULL << 20;
		end++;
		break;
	case 'G':
		mult = 1ULL << 30;
		end++;
		break;
	case 'T':
		mult = 1ULL << 40;
		end++;
		break;
	default:
		return -EINVAL;
	}
	if (mult > 1 && (strcasecmp(end, "iB") == 0 || strcasecmp(end, "B") == 0))
		end += strlen(end);
	if (*end != '\0')
		return -EINVAL;
	if (v > UINT64_MAX / mult)
		return -EINVAL;
	*out = v * mult;
	return 0;
}

int parse_cpuid_hide(const char *s, unsigned *mask, struct fk_err *err)
{
	static const struct {
		const char *name;
		unsigned bit;
	} names[] = {
	    {"xsave", VMM_CPUID_HIDE_XSAVE},   {"avx", VMM_CPUID_HIDE_AVX},
	    {"avx512", VMM_CPUID_HIDE_AVX512}, {"pcid", VMM_CPUID_HIDE_PCID},
	    {"x2apic", VMM_CPUID_HIDE_X2APIC}, {"cx16", VMM_CPUID_HIDE_CX16},
	};
	const char *p = s;

	*mask = 0;
	for (;;) {
		size_t len = strcspn(p, ",");
		bool found = false;

		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
			if (strlen(names[i].name) == len && strncmp(p, names[i].name, len) == 0) {
				*mask |= names[i].bit;
				found = true;
			}
		}
		if (!found)
			return fk_fail(
			    err, EINVAL,
			    "--cpuid-hide '%s': unknown feature '%.*s' (expected a "
			    "comma-separated list of xsave, avx, avx512, pcid, x2apic, cx16)",
			    s, (int)len, p);
		if (p[len] == '\0')
			return 0;
		p += len + 1;
	}
}

void vmm_config_usage(FILE *out)
{
	fputs("usage: forkd-vmm --kernel PATH [options]\n"
	      "       forkd-vmm --image NAME [options]\n"
	      "       forkd-vmm --restore DIR [options]\n"
	      "Boots one KVM virtual machine: a PVH ELF kernel (Linux vmlinux or the\n"
	      "forkd probe guest) or a Linux bzImage, with ACPI tables, a COM1 UART and\n"
	      "virtio-mmio disks.\n"
	      "\n"
	      "  --kernel PATH        ELF kernel with a PVH entry note, or a bzImage (64-bit\n"
	      "                       boot protocol); the format is detected (required)\n"
	      "  --initrd PATH        initial ramdisk (PVH module 0, or boot_params ramdisk)\n"
	      "  --append STR         kernel command line (at most 4095 bytes)\n"
	      "  --mem SIZE           guest RAM, e.g. 512M, 4G (32M..1T, multiple of 1M;\n"
	      "                       default 256M); RAM above 3G is placed above 4G\n"
	      "  --mem-backend anon|hugetlb|memfd\n"
	      "                       guest RAM as anonymous memory with transparent huge\n"
	      "                       pages (default), as 2 MiB hugetlb pages reserved\n"
	      "                       from /proc/sys/vm/nr_hugepages at start (--mem a\n"
	      "                       multiple of 2M; BRANCH children's writes need free\n"
	      "                       huge pages too; docs/branch.md), or in a memfd mapped\n"
	      "                       shared until the first BRANCH (docs/design/userfaultfd.md)\n"
	      "  --cpus N             vCPUs, 1..254 (default 1)\n"
	      "  --disk PATH[,ro][,id=STR]\n"
	      "                       virtio-blk disk on a raw file; repeatable (max 8)\n"
	      "  --serial stdout|none|PATH\n"
	      "                       where COM1 output goes (default stdout)\n"
	      "  --serial-in stdin|none|PATH\n"
	      "                       where COM1 input comes from (default stdin)\n"
	      "  --kvm PATH           KVM device (default /dev/kvm)\n"
	      "  --cpuid-hide LIST    hide CPUID features from the guest, comma-separated:\n"
	      "                       xsave (also AVX*: Linux then uses FXSAVE), avx,\n"
	      "                       avx512, pcid, x2apic, cx16\n"
	      "  --restore DIR        start from the snapshot in DIR instead of booting (--mem\n"
	      "                       and --cpus, if given, must match it)\n"
	      "  --overlay-dir DIR    with --restore: where the VM's private copies of the\n"
	      "                       snapshot's writable disks go (default: a new directory\n"
	      "                       under $TMPDIR or /tmp)\n"
	      "  --verify             with --restore: check every chunk of the memory file\n"
	      "                       against its recorded XXH3 before running (without it,\n"
	      "                       a restore does not read the memory file up front)\n"
	      "  --prewarm            with --restore: read the memory file's data (not its\n"
	      "                       holes) into the page cache before running\n"
	      "  --restore-mode file|uffd, --uffd-handler SOCK\n"
	      "                       with --restore: map the memory file (default), or\n"
	      "                       hand a userfaultfd to the handler on SOCK (forkd-uffd)\n"
	      "                       that fills guest RAM on first touch\n"
	      "  --fanout N           with --restore: start N children of the snapshot (1..1024)\n"
	      "                       by forking the restored VM (docs/branch.md); the guest\n"
	      "                       never runs in this process, which exits once they run\n"
	      "  --fanout-dir DIR     with --fanout: an existing directory; child K lives in\n"
	      "                       DIR/child-K (pid, control.sock, serial.log, ...)\n"
	      "  --vsock PATH[,cid=N] virtio-vsock device whose host side is the Unix socket\n"
	      "                       PATH (\"CONNECT <port>\\n\" reaches guest port <port>;\n"
	      "                       guest connects to port P reach PATH_P); guest cid N,\n"
	      "                       3..4294967294 (default 3; with --restore, the\n"
	      "                       snapshot's). See docs/vsock.md\n"
	      "  --image NAME         boot root filesystem image NAME (forkd image build) as\n"
	      "                       /dev/vda read-only with an overlay and the guest agent;\n"
	      "                       kernel and initrd default to $FORKD_IMAGES or\n"
	      "                       /var/cache/forkd/images (give --vsock to reach the agent)\n"
	      "  --net tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,netns=NS]\n"
	      "                       one virtio-net device on tap NAME (attached, or created),\n"
	      "                       opened inside /run/netns/NS if given; default MAC random\n"
	      "                       (with --restore, the snapshot's). See docs/net-device.md\n"
	      "  --net-policy none|host|nat[,id=ID]\n"
	      "                       the VMM makes network namespace forkd-<ID> (default\n"
	      "                       p<pid>) with the guest at 172.16.0.2 behind its tap0, the\n"
	      "                       host reaching it at 10.200.S.2; BRANCH children get their\n"
	      "                       own. See docs/networking.md\n"
	      "  --control PATH       serve the JSON control protocol on this Unix socket\n"
	      "                       (status, pause, resume, shutdown; see docs/control.md)\n"
	      "  --ready-fd N         write \"ready\\n\" to descriptor N and close it once the VM\n"
	      "                       runs and --control serves (for launchers: no polling)\n"
	      "  --jail DIR           build a jail in DIR (new or empty) and run in it: own\n"
	      "                       mount/ipc/uts/network namespaces, pivot_root, no\n"
	      "                       capabilities, an unprivileged uid (docs/jail.md)\n"
	      "  --uid N, --gid N     the jailed VM's ids (default nobody and nogroup)\n"
	      "  --jail-bind DIR[,ro] one more host directory in the jail, at its host path\n"
	      "                       (e.g. where snapshots go); repeatable (max 8)\n"
	      "  --cgroup PARENT      run in the cgroup v2 PARENT/vm-NAME (default\n"
	      "                       " VMM_CGROUP_PARENT_DEFAULT "); any limit below implies it\n"
	      "  --cgroup-name NAME   NAME in vm-NAME (default the VMM's pid)\n"
	      "  --memory-max SIZE    memory.max of the VM's cgroup (and no swap)\n"
	      "  --cpu-max Q[/P]      cpu.max: Q microseconds of CPU per P (default 100000)\n"
	      "  --pids-max N         pids.max: tasks (threads) of the VM and its children\n"
	      "  --seccomp on|off|log per-thread seccomp allow-lists (default on: a forbidden\n"
	      "                       syscall ends the VMM with status 5; log: the kernel logs\n"
	      "                       it and it runs). See docs/seccomp.md\n"
	      "  -h, --help           this text\n"
	      "\n"
	      "Exit status: 0 guest powered off, 1 VMM error, 2 bad command line or\n"
	      "input, 3 guest reset, 4 guest crashed (triple fault or emulation failure),\n"
	      "5 forbidden syscall (seccomp).\n",
	      out);
}

/* NAME as `forkd image build` accepts it: [a-z0-9][a-z0-9._-]{0,62}. */
static bool image_name_ok(const char *name)
{
	size_t n = strlen(name);

	if (n == 0 || n > 63 ||
	    !((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9')))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
		      name[i] == '.' || name[i] == '_' || name[i] == '-'))
			return false;
	return true;
}

/*
 * --image NAME: the image's rootfs.ext4 becomes the first disk (/dev/vda,
 * read-only), the kernel and initrd default to the cached Linux images,
 * and the command line gets the agent and the root before --append.
 */
static int apply_image(struct vmm_config *cfg, struct fk_err *err)
{
	const char *cache = getenv("FORKD_IMAGE_CACHE");
	const char *kimages = getenv("FORKD_IMAGES");
	struct vmm_disk_config root = {.readonly = true};
	int n;

	if (!image_name_ok(cfg->image))
		return fk_fail(err, EINVAL,
			       "--image '%s': expected an image name ([a-z0-9][a-z0-9._-]{0,62})",
			       cfg->image);
	if (!cache || !*cache)
		cache = VMM_IMAGE_CACHE_DEFAULT;
	if (!kimages || !*kimages)
		kimages = VMM_KERNEL_IMAGES_DEFAULT;
	n = snprintf(root.path, sizeof(root.path), "%s/%s/rootfs.ext4", cache, cfg->image);
	if (n < 0 || (size_t)n >= sizeof(root.path))
		return fk_fail(err, ENAMETOOLONG, "--image %s: path too long", cfg->image);
	if (access(root.path, R_OK) < 0)
		return fk_fail(err, ENOENT,
			       "--image %s: no %s (build it with `forkd image build %s`; "
			       "FORKD_IMAGE_CACHE says where images are)",
			       cfg->image, root.path, cfg->image);
	snprintf(root.id, sizeof(root.id), "forkd-root");
	if (cfg->nr_disks == VMM_MAX_DISKS)
		return fk_fail(err, EINVAL, "--image %s: the image takes a disk, and %d are given",
			       cfg->image, VMM_MAX_DISKS);
	memmove(&cfg->disks[1], &cfg->disks[0], (size_t)cfg->nr_disks * sizeof(cfg->disks[0]));
	cfg->disks[0] = root;
	cfg->nr_disks++;
	if (!cfg->kernel) {
		snprintf(cfg->image_kernel, sizeof(cfg->image_kernel), "%.4000s/vmlinux", kimages);
		cfg->kernel = cfg->image_kernel;
	}
	if (!cfg->initrd) {
		snprintf(cfg->image_initrd, sizeof(cfg->image_initrd), "%.4000s/initramfs.cpio",
			 kimages);
		cfg->initrd = cfg->image_initrd;
	}
	n = snprintf(cfg->image_cmdline, sizeof(cfg->image_cmdline), "%s%s%s", VMM_IMAGE_CMDLINE,
		     *cfg->cmdline ? " " : "", cfg->cmdline);
	if (n < 0 || (size_t)n >= sizeof(cfg->image_cmdline))
		return fk_fail(err, EINVAL,
			       "--image: the command line with --append is %d bytes, at most %d", n,
			       VMM_MAX_CMDLINE);
	cfg->cmdline = cfg->image_cmdline;
	return 0;
}

/* 1 if a word of the command line before " -- " starts with prefix. */
static int cmdline_has_word(const char *cmdline, const char *prefix)
{
	size_t len = strlen(prefix);

	for (const char *p = cmdline; *p;) {
		while (*p == ' ')
			p++;
		if (!strncmp(p, "--", 2) && (p[2] == ' ' || !p[2]))
			return 0;
		if (!strncmp(p, prefix, len))
			return 1;
		while (*p && *p != ' ')
			p++;
	}
	return 0;
}

/*
 * A guest with --net-policy host|nat is always at FK_NET_GUEST_ADDR behind
 * FK_NET_GATEWAY_ADDR: tell it so (forkd.net=, read by forkd-init), unless
 * the command line already says. Other guests ignore the word.
 */
static int add_net_cmdline(struct vmm_config *cfg, struct fk_err *err)
{
	int n;

	if (cfg->net_policy == FK_NET_NONE || cmdline_has_word(cfg->cmdline, "forkd.net="))
		return 0;
	n = snprintf(cfg->net_cmdline, sizeof(cfg->net_cmdline), "%s%s%s", VMM_NET_CMDLINE,
		     *cfg->cmdline ? " " : "", cfg->cmdline);
	if (n < 0 || (size_t)n >= sizeof(cfg->net_cmdline))
		return fk_fail(err, EINVAL,
			       "--net-policy: the command line with its %s is %d bytes, at most %d",
			       VMM_NET_CMDLINE, n, VMM_MAX_CMDLINE);
	cfg->cmdline = cfg->net_cmdline;
	return 0;
}

static int parse_disk(struct vmm_config *cfg, const char *arg, struct fk_err *err)
{
	struct vmm_disk_config *d;
	char *copy, *tok, *save = NULL;
	int ret = 0;

	if (cfg->nr_disks == VMM_MAX_DISKS)
		return fk_fail(err, EINVAL, "--disk %s: at most %d disks are supported", arg,
			       VMM_MAX_DISKS);
	d = &cfg->disks[cfg->nr_disks];
	memset(d, 0, sizeof(*d));
	copy = strdup(arg);
	if (!copy)
		return fk_fail(err, ENOMEM, "--disk: out of memory");
	tok = strtok_r(copy, ",", &save);
	if (!tok || !*tok || arg[0] == ',') {
		ret = fk_fail(err, EINVAL, "--disk '%s': expected PATH[,ro][,id=STR]", arg);
		goto out;
	}
	if (strlen(tok) >= sizeof(d->path)) {
		ret = fk_fail(err, ENAMETOOLONG, "--disk: path is longer than %zu bytes",
			      sizeof(d->path) - 1);
		goto out;
	}
	memcpy(d->path, tok, strlen(tok) + 1);
	snprintf(d->id, sizeof(d->id), "forkd-disk%d", cfg->nr_disks);
	while ((tok = strtok_r(NULL, ",", &save))) {
		if (strcmp(tok, "ro") == 0) {
			d->readonly = true;
		} else if (strcmp(tok, "rw") == 0) {
			d->readonly = false;
		} else if (strncmp(tok, "id=", 3) == 0 && strlen(tok + 3) <= 20 && tok[3]) {
			snprintf(d->id, sizeof(d->id), "%s", tok + 3);
		} else {
			ret = fk_fail(err, EINVAL,
				      "--disk '%s': unknown option '%s' (expected ro, rw or "
				      "id=STR of 1..20 bytes)",
				      arg, tok);
			goto out;
		}
	}
	cfg->nr_disks++;
out:
	free(copy);
	return ret;
}

static int parse_vsock(struct vmm_config *cfg, const char *arg, struct fk_err *err)
{
	size_t path_len = strcspn(arg, ",");
	const char *opt = arg + path_len;
	unsigned long long cid;
	char *end;

	if (cfg->vsock_path[0])
		return fk_fail(err, EINVAL, "--vsock '%s': given twice (one vsock device per VM)",
			       arg);
	if (path_len == 0)
		return fk_fail(err, EINVAL, "--vsock '%s': expected PATH[,cid=N]", arg);
	if (path_len >= sizeof(cfg->vsock_path))
		return fk_fail(err, ENAMETOOLONG,
			       "--vsock '%s': the socket path is %zu bytes, a Unix socket address "
			       "holds at most %zu",
			       arg, path_len, sizeof(cfg->vsock_path) - 1);
	cfg->vsock_cid = VMM_VSOCK_DEFAULT_CID;
	while (*opt == ',') {
		size_t len;

		opt++;
		len = strcspn(opt, ",");
		if (strncmp(opt, "cid=", 4) != 0 || len == 4)
			return fk_fail(err, EINVAL,
				       "--vsock '%s': unknown option '%.*s' (expected cid=N)", arg,
				       (int)len, opt);
		errno = 0;
		cid = strtoull(opt + 4, &end, 10);
		if (errno || end != opt + len || !isdigit((unsigned char)opt[4]) ||
		    cid < VMM_VSOCK_MIN_CID || cid > VMM_VSOCK_MAX_CID)
			return fk_fail(
			    err, EINVAL, "--vsock '%s': cid '%.*s' is not a number from %d to %llu",
			    arg, (int)(len - 4), opt + 4, VMM_VSOCK_MIN_CID, VMM_VSOCK_MAX_CID);
		cfg->vsock_cid = cid;
		cfg->vsock_cid_given = true;
		opt += len;
	}
	memcpy(cfg->vsock_path, arg, path_len);
	cfg->vsock_path[path_len] = '\0';
	return 0;
}

/* An id for --uid/--gid: 1..4294967294 (0 is root, -1 means "no change" to the kernel). */
static int parse_id(const char *option, const char *s, unsigned *out, struct fk_err *err)
{
	unsigned long long v;
	char *end;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (!isdigit((unsigned char)s[0]) || errno || *end || v == 0 || v >= 0xFFFFFFFFULL)
		return fk_fail(err, EINVAL, "%s '%s': expected a numeric id from 1 to 4294967294",
			       option, s);
	*out = (unsigned)v;
	return 0;
}

/* The jail and cgroup options, in the order of their OPT_ values from OPT_JAIL. */
static int parse_jail_option(struct vmm_config *cfg, int which, const char *arg, struct fk_err *err)
{
	unsigned long long v;
	char *end;

	switch (which) {
	case 0: /* --jail */
		if (arg[0] != '/')
			return fk_fail(err, EINVAL, "--jail '%s': expected an absolute directory",
				       arg);
		cfg->jail_dir = arg;
		return 0;
	case 1: /* --uid */
		cfg->jail_uid_given = true;
		return parse_id("--uid", arg, &cfg->jail_uid, err);
	case 2: /* --gid */
		cfg->jail_gid_given = true;
		return parse_id("--gid", arg, &cfg->jail_gid, err);
	case 3: /* --jail-bind */
		if (cfg->nr_jail_binds == VMM_MAX_JAIL_BINDS)
			return fk_fail(err, EINVAL, "--jail-bind %s: at most %d are supported", arg,
				       VMM_MAX_JAIL_BINDS);
		if (!*arg || arg[0] == ',')
			return fk_fail(err, EINVAL, "--jail-bind '%s': expected DIR[,ro|,rw]", arg);
		cfg->jail_binds[cfg->nr_jail_binds++] = arg;
		return 0;
	case 4: /* --cgroup */
		if (arg[0] != '/')
			return fk_fail(
			    err, EINVAL,
			    "--cgroup '%s': expected an absolute directory in the cgroup "
			    "v2 mount",
			    arg);
		cfg->cgroup_parent = arg;
		break;
	case 5: /* --cgroup-name */
		if (!cgroup_name_ok(arg))
			return fk_fail(err, EINVAL,
				       "--cgroup-name '%s': expected 1 to 64 of [A-Za-z0-9._-]",
				       arg);
		cfg->cgroup_name = arg;
		return 0;
	case 6: /* --memory-max */
		if (parse_size(arg, &cfg->memory_max) < 0 || cfg->memory_max < (1ULL << 20))
			return fk_fail(err, EINVAL,
				       "--memory-max '%s': expected a size such as 512M or 4G, at "
				       "least 1M",
				       arg);
		break;
	case 7: /* --cpu-max */
		if (cgroup_parse_cpu_max(arg, &cfg->cpu_quota_us, &cfg->cpu_period_us, err) < 0)
			return -EINVAL;
		break;
	case 8: /* --pids-max */
		errno = 0;
		v = strtoull(arg, &end, 10);
		if (!isdigit((unsigned char)arg[0]) || errno || *end || v == 0 || v > 4194304)
			return fk_fail(err, EINVAL,
				       "--pids-max '%s': expected a number of tasks from 1 to "
				       "4194304",
				       arg);
		cfg->pids_max = v;
		break;
	}
	cfg->cgroup_wanted = true;
	return 0;
}

/* "52:54:00:12:34:56": six two-digit hex bytes; a multicast MAC cannot be a NIC's. */
static int parse_mac(const char *s, size_t len, uint8_t mac[6])
{
	unsigned v[6];
	int used = 0;

	if (len != 17 ||
	    sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%n", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &used) != 6 ||
	    used != 17)
		return -EINVAL;
	for (int i = 0; i < 17; i++)
		if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char)s[i]))
			return -EINVAL;
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
	return (mac[0] & 1) ? -EINVAL : 0;
}

/* A name we can put in a path or an ifreq: no '/', no leading '.', printable, short. */
static bool net_name_ok(const char *s, size_t len, size_t max)
{
	if (len == 0 || len >= max || s[0] == '.')
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] == '/' || !isgraph((unsigned char)s[i]) || s[i] == ':')
			return false;
	return true;
}

/* --net-policy none|host|nat[,id=ID] (docs/networking.md). */
static int parse_net_policy(struct vmm_config *cfg, const char *arg, struct fk_err *err)
{
	const char *comma = strchr(arg, ',');
	char word[16];
	enum fk_net_policy policy;
	size_t len = comma ? (size_t)(comma - arg) : strlen(arg);
	int ret;

	if (len >= sizeof(word))
		return fk_fail(err, EINVAL, "--net-policy '%s': expected none, host or nat[,id=ID]",
			       arg);
	memcpy(word, arg, len);
	word[len] = '\0';
	ret = fk_net_policy_parse(word, &policy, err);
	if (ret < 0)
		return fk_wrap(err, "--net-policy");
	cfg->net_policy = (int)policy;
	if (!comma)
		return 0;
	if (strncmp(comma + 1, "id=", 3) != 0)
		return fk_fail(err, EINVAL,
			       "--net-policy '%s': unknown option '%s' (expected id=ID)", arg,
			       comma + 1);
	ret = fk_netns_id_valid(comma + 4, err);
	if (ret < 0)
		return fk_wrap(err, "--net-policy");
	snprintf(cfg->net_id, sizeof(cfg->net_id), "%s", comma + 4);
	return 0;
}

static int parse_net(struct vmm_config *cfg, const char *arg, struct fk_err *err)
{
	const char *opt = arg;

	if (cfg->net_tap[0])
		return fk_fail(err, EINVAL, "--net '%s': given twice (one network device per VM)",
			       arg);
	while (*opt) {
		size_t len = strcspn(opt, ",");
		const char *eq = memchr(opt, '=', len);
		size_t klen = eq ? (size_t)(eq - opt) : len;
		const char *val = eq ? eq + 1 : opt + len;
		size_t vlen = eq ? len - klen - 1 : 0;

		if (eq && klen == 3 && strncmp(opt, "tap", 3) == 0) {
			if (!net_name_ok(val, vlen, sizeof(cfg->net_tap)))
				return fk_fail(err, EINVAL,
					       "--net '%s': tap '%.*s' is not an interface name (1 "
					       "to %zu printable characters, no '/' or ':')",
					       arg, (int)vlen, val, sizeof(cfg->net_tap) - 1);
			memcpy(cfg->net_tap, val, vlen);
			cfg->net_tap[vlen] = '\0';
		} else if (eq && klen == 3 && strncmp(opt, "mac", 3) == 0) {
			if (parse_mac(val, vlen, cfg->net_mac) < 0)
				return fk_fail(
				    err, EINVAL,
				    "--net '%s': mac '%.*s' is not a unicast MAC such as "
				    "52:54:00:12:34:56",
				    arg, (int)vlen, val);
			cfg->net_mac_given = true;
		} else if (eq && klen == 5 && strncmp(opt, "netns", 5) == 0) {
			if (!net_name_ok(val, vlen, sizeof(cfg->net_netns)))
				return fk_fail(
				    err, EINVAL,
				    "--net '%s': netns '%.*s' is not a name in /run/netns", arg,
				    (int)vlen, val);
			memcpy(cfg->net_netns, val, vlen);
			cfg->net_netns[vlen] = '\0';
		} else {
			return fk_fail(err, EINVAL,
				       "--net '%s': unknown option '%.*s' (expected "
				       "tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,netns=NS])",
				       arg, (int)len, opt);
		}
		opt += len;
		if (*opt == ',')
			opt++;
	}
	if (!cfg->net_tap[0])
		return fk_fail(err, EINVAL,
			       "--net '%s': expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX][,netns=NS]",
			       arg);
	return 0;
}

int vmm_config_parse(struct vmm_config *cfg, int argc, char **argv, struct fk_err *err)
{
	enum {
		OPT_KERNEL = 256,
		OPT_INITRD,
		OPT_APPEND,
		OPT_MEM,
		OPT_CPUS,
		OPT_DISK,
		OPT_SERIAL,
		OPT_SERIAL_IN,
		OPT_KVM,
		OPT_CONTROL,
		OPT_RESTORE,
		OPT_OVERLAY_DIR,
		OPT_CPUID_HIDE,
		OPT_VSOCK,
		OPT_IMAGE,
		OPT_JAIL,
		OPT_UID,
		OPT_GID,
		OPT_JAIL_BIND,
		OPT_CGROUP,
		OPT_CGROUP_NAME,
		OPT_MEMORY_MAX,
		OPT_CPU_MAX,
		OPT_PIDS_MAX,
		OPT_NET,
		OPT_NET_POLICY,
		OPT_VERIFY,
		OPT_PREWARM,
		OPT_SECCOMP,
		OPT_READY_FD,
		OPT_FANOUT,
		OPT_FANOUT_DIR,
		OPT_MEM_BACKEND,
		OPT_RESTORE_MODE,
		OPT_UFFD_HANDLER
	};
	bool restore_uffd = false;
	static const struct option opts[] = {
	    {"kernel", required_argument, NULL, OPT_KERNEL},
	    {"initrd", required_argument, NULL, OPT_INITRD},
	    {"append", required_argument, NULL, OPT_APPEND},
	    {"mem", required_argument, NULL, OPT_MEM},
	    {"cpus", required_argument, NULL, OPT_CPUS},
	    {"disk", required_argument, NULL, OPT_DISK},
	    {"serial", required_argument, NULL, OPT_SERIAL},
	    {"serial-in", required_argument, NULL, OPT_SERIAL_IN},
	    {"kvm", required_argument, NULL, OPT_KVM},
	    {"control", required_argument, NULL, OPT_CONTROL},
	    {"restore", required_argument, NULL, OPT_RESTORE},
	    {"overlay-dir", required_argument, NULL, OPT_OVERLAY_DIR},
	    {"cpuid-hide", required_argument, NULL, OPT_CPUID_HIDE},
	    {"vsock", required_argument, NULL, OPT_VSOCK},
	    {"image", required_argument, NULL, OPT_IMAGE},
	    {"jail", required_argument, NULL, OPT_JAIL},
	    {"uid", required_argument, NULL, OPT_UID},
	    {"gid", required_argument, NULL, OPT_GID},
	    {"jail-bind", required_argument, NULL, OPT_JAIL_BIND},
	    {"cgroup", required_argument, NULL, OPT_CGROUP},
	    {"cgroup-name", required_argument, NULL, OPT_CGROUP_NAME},
	    {"memory-max", required_argument, NULL, OPT_MEMORY_MAX},
	    {"cpu-max", required_argument, NULL, OPT_CPU_MAX},
	    {"pids-max", required_argument, NULL, OPT_PIDS_MAX},
	    {"net", required_argument, NULL, OPT_NET},
	    {"net-policy", required_argument, NULL, OPT_NET_POLICY},
	    {"verify", no_argument, NULL, OPT_VERIFY},
	    {"prewarm", no_argument, NULL, OPT_PREWARM},
	    {"seccomp", required_argument, NULL, OPT_SECCOMP},
	    {"mem-backend", required_argument, NULL, OPT_MEM_BACKEND},
	    {"restore-mode", required_argument, NULL, OPT_RESTORE_MODE},
	    {"uffd-handler", required_argument, NULL, OPT_UFFD_HANDLER},
	    {"ready-fd", required_argument, NULL, OPT_READY_FD},
	    {"fanout", required_argument, NULL, OPT_FANOUT},
	    {"fanout-dir", required_argument, NULL, OPT_FANOUT_DIR},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	char *end;
	long n;
	int c, ret;

	memset(cfg, 0, sizeof(*cfg));
	cfg->mem_size = VMM_DEFAULT_MEM;
	cfg->nr_cpus = 1;
	cfg->cmdline = "";
	cfg->serial_out = "stdout";
	cfg->serial_in = "stdin";
	cfg->kvm_path = "/dev/kvm";
	cfg->net_tap_fd = -1;
	cfg->ready_fd = -1;

	optind = 0; /* 0, not 1: glibc then also forgets a half-parsed option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case OPT_KERNEL:
			cfg->kernel = optarg;
			break;
		case OPT_INITRD:
			cfg->initrd = optarg;
			break;
		case OPT_APPEND:
			if (strlen(optarg) > VMM_MAX_CMDLINE)
				return fk_fail(err, EINVAL,
					       "--append: command line is %zu bytes, at most %d "
					       "allowed",
					       strlen(optarg), VMM_MAX_CMDLINE);
			cfg->cmdline = optarg;
			break;
		case OPT_MEM:
			if (parse_size(optarg, &cfg->mem_size) < 0 ||
			    cfg->mem_size % (1ULL << 20) || cfg->mem_size < VMM_MIN_MEM ||
			    cfg->mem_size > VMM_MAX_MEM)
				return fk_fail(err, EINVAL,
					       "--mem '%s': expected a size such as 512M or 4G, a "
					       "multiple of 1M between 32M and 1T",
					       optarg);
			cfg->mem_given = true;
			break;
		case OPT_CPUS:
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 1 || n > VMM_MAX_CPUS)
				return fk_fail(
				    err, EINVAL,
				    "--cpus '%s': expected a number of vCPUs from 1 to %d", optarg,
				    VMM_MAX_CPUS);
			cfg->nr_cpus = (int)n;
			cfg->cpus_given = true;
			break;
		case OPT_DISK:
			ret = parse_disk(cfg, optarg, err);
			if (ret < 0)
				return ret;
			break;
		case OPT_SERIAL:
			cfg->serial_out = optarg;
			break;
		case OPT_SERIAL_IN:
			cfg->serial_in = optarg;
			break;
		case OPT_KVM:
			cfg->kvm_path = optarg;
			break;
		case OPT_RESTORE:
			if (!*optarg)
				return fk_fail(err, EINVAL,
					       "--restore: expected a snapshot directory");
			cfg->restore_dir = optarg;
			break;
		case OPT_VERIFY:
			cfg->restore_verify = true;
			break;
		case OPT_MEM_BACKEND: {
			enum guest_mem_backend backend;

			if (guest_mem_backend_parse(optarg, &backend) < 0)
				return fk_fail(err, EINVAL,
					       "--mem-backend '%s': expected anon (the default), "
					       "hugetlb or memfd",
					       optarg);
			cfg->mem_backend = backend;
			cfg->mem_memfd = backend == GUEST_MEM_MEMFD;
			break;
		}
		case OPT_PREWARM:
			cfg->restore_prewarm = true;
			break;
		case OPT_RESTORE_MODE:
			if (strcmp(optarg, "file") && strcmp(optarg, "uffd"))
				return fk_fail(err, EINVAL,
					       "--restore-mode '%s': expected file or uffd",
					       optarg);
			restore_uffd = !strcmp(optarg, "uffd");
			break;
		case OPT_UFFD_HANDLER:
			if (!*optarg)
				return fk_fail(
				    err, EINVAL,
				    "--uffd-handler: expected the handler's Unix socket");
			cfg->uffd_handler = optarg;
			break;
		case OPT_READY_FD:
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 3 || n > INT_MAX)
				return fk_fail(err, EINVAL,
					       "--ready-fd '%s': expected a descriptor number >= 3",
					       optarg);
			/* Not inherited by what the VMM executes (the network broker). */
			if (fcntl((int)n, F_SETFD, FD_CLOEXEC) < 0)
				return fk_fail_errno(err, errno,
						     "--ready-fd %ld: not an open descriptor", n);
			cfg->ready_fd = (int)n;
			break;
		case OPT_OVERLAY_DIR:
			if (!*optarg)
				return fk_fail(err, EINVAL, "--overlay-dir: expected a directory");
			cfg->overlay_dir = optarg;
			break;
		case OPT_CONTROL:
			if (!*optarg)
				return fk_fail(err, EINVAL, "--control: expected a socket path");
			cfg->control_path = optarg;
			break;
		case OPT_CPUID_HIDE:
			ret = parse_cpuid_hide(optarg, &cfg->cpuid_hide, err);
			if (ret < 0)
				return ret;
			break;
		case OPT_VSOCK:
			ret = parse_vsock(cfg, optarg, err);
			if (ret < 0)
				return ret;
			break;
		case OPT_IMAGE:
			cfg->image = optarg;
			break;
		case OPT_JAIL:
		case OPT_UID:
		case OPT_GID:
		case OPT_JAIL_BIND:
		case OPT_CGROUP:
		case OPT_CGROUP_NAME:
		case OPT_MEMORY_MAX:
		case OPT_CPU_MAX:
		case OPT_PIDS_MAX:
			ret = parse_jail_option(cfg, c - OPT_JAIL, optarg, err);
			if (ret < 0)
				return ret;
			break;
		case OPT_NET:
			ret = parse_net(cfg, optarg, err);
			if (ret < 0)
				return ret;
			break;
		case OPT_NET_POLICY:
			ret = parse_net_policy(cfg, optarg, err);
			if (ret < 0)
				return ret;
			break;
		case OPT_SECCOMP:
			if (fk_seccomp_parse_mode(optarg, &cfg->seccomp) < 0)
				return fk_fail(err, EINVAL,
					       "--seccomp '%s': expected on, off or log", optarg);
			break;
		case OPT_FANOUT:
			errno = 0;
			n = strtol(optarg, &end, 10);
			if (errno || end == optarg || *end || n < 1 || n > VMM_MAX_FANOUT)
				return fk_fail(
				    err, EINVAL,
				    "--fanout '%s': expected a number of children, 1 to %d", optarg,
				    VMM_MAX_FANOUT);
			cfg->fanout = (int)n;
			break;
		case OPT_FANOUT_DIR:
			if (!*optarg)
				return fk_fail(err, EINVAL, "--fanout-dir: expected a directory");
			cfg->fanout_dir = optarg;
			break;
		case 'h':
			cfg->help = true;
			return 0;
		case ':':
			return fk_fail(err, EINVAL, "option '%s' needs a value", argv[optind - 1]);
		default:
			/* optopt names the bad letter inside a cluster such as -xh. */
			if (optopt > 0 && optopt < 256 && optopt != 'h')
				return fk_fail(err, EINVAL, "unknown option '-%c' (see --help)",
					       optopt);
			return fk_fail(err, EINVAL, "unknown option '%s' (see --help)",
				       argv[optind - 1]);
		}
	}
	if (optind < argc)
		return fk_fail(err, EINVAL, "unexpected argument '%s' (see --help)", argv[optind]);
	if (cfg->net_policy != FK_NET_NONE && cfg->net_tap[0])
		return fk_fail(
		    err, EINVAL,
		    "--net-policy %s and --net: the policy makes the namespace and its tap "
		    "itself (drop --net)",
		    fk_net_policy_name((enum fk_net_policy)cfg->net_policy));
	if (!*cfg->serial_out || !*cfg->serial_in)
		return fk_fail(err, EINVAL,
			       "--serial/--serial-in: expected a path, stdout/stdin or none");
	if ((cfg->jail_uid_given || cfg->jail_gid_given || cfg->nr_jail_binds) && !cfg->jail_dir)
		return fk_fail(err, EINVAL, "--uid, --gid and --jail-bind only apply with --jail");
	/*
	 * --jail with --net-policy works: the network broker, outside the jail,
	 * makes each namespace and opens its tap (docs/jail.md). Entering a
	 * namespace by name needs a capability the jailed VMM no longer has.
	 */
	if (cfg->jail_dir && cfg->net_netns[0])
		return fk_fail(err, EINVAL,
			       "--jail and --net ...,netns=%s: a jailed VMM cannot enter another "
			       "network namespace; start it inside that namespace instead",
			       cfg->net_netns);
	if (cfg->cgroup_name && !cfg->cgroup_wanted)
		return fk_fail(err, EINVAL,
			       "--cgroup-name only applies with --cgroup or a limit (--memory-max, "
			       "--cpu-max, --pids-max)");
	if (cfg->cgroup_wanted && !cfg->cgroup_parent)
		cfg->cgroup_parent = VMM_CGROUP_PARENT_DEFAULT;
	if (cfg->fanout && !cfg->restore_dir)
		return fk_fail(err, EINVAL, "--fanout only applies with --restore");
	if (cfg->fanout && !cfg->fanout_dir)
		return fk_fail(err, EINVAL,
			       "--fanout N: expected --fanout-dir DIR for the children");
	if (cfg->fanout_dir && !cfg->fanout)
		return fk_fail(err, EINVAL, "--fanout-dir only applies with --fanout N");
	if (cfg->fanout && (cfg->control_path || cfg->net_tap[0] || cfg->ready_fd >= 0))
		return fk_fail(err, EINVAL,
			       "--fanout: the children get their own control sockets and start "
			       "link-down, and this process never runs a VM; --control, --net and "
			       "--ready-fd do not apply");
	if (cfg->image && cfg->restore_dir)
		return fk_fail(err, EINVAL,
			       "--image and --restore: a snapshot brings its own disks");
	if (cfg->image) {
		ret = apply_image(cfg, err);
		if (ret < 0)
			return ret;
	}
	if (restore_uffd != !!cfg->uffd_handler)
		return fk_fail(err, EINVAL,
			       "--restore-mode uffd and --uffd-handler SOCK go together");
	if (cfg->uffd_handler && !cfg->restore_dir)
		return fk_fail(err, EINVAL, "--restore-mode uffd only applies with --restore");
	if (cfg->uffd_handler && cfg->jail_dir)
		return fk_fail(err, EINVAL,
			       "--restore-mode uffd: not supported inside --jail yet (the VMM "
			       "creates the userfaultfd after entering it, without the privilege "
			       "KVM's faults need)");
	if (cfg->uffd_handler && (cfg->restore_verify || cfg->restore_prewarm))
		return fk_fail(err, EINVAL,
			       "--restore-mode uffd: --verify and --prewarm read the memory file, "
			       "the handler does that");
	if (cfg->uffd_handler && cfg->fanout)
		return fk_fail(
		    err, EINVAL,
		    "--restore-mode uffd and --fanout: forked children would not inherit "
		    "the userfaultfd and would read unserved pages as zeros");
	if (cfg->mem_memfd && cfg->restore_dir)
		return fk_fail(err, EINVAL,
			       "--mem-backend memfd: a restore maps the snapshot's memory file "
			       "(--restore-mode file) or is filled by a handler (uffd)");
	if (cfg->restore_dir) {
		if (cfg->kernel || cfg->initrd || cfg->nr_disks || *cfg->cmdline)
			return fk_fail(
			    err, EINVAL,
			    "--restore: --kernel, --initrd, --append and --disk come from the "
			    "snapshot and cannot be given");
		if (cfg->mem_backend != GUEST_MEM_ANON)
			return fk_fail(err, EINVAL,
				       "--mem-backend: a restored VM maps the snapshot's memory "
				       "file; only a booted VM takes hugetlb");
		return 0;
	}
	ret = add_net_cmdline(cfg, err);
	if (ret < 0)
		return ret;
	if (cfg->overlay_dir)
		return fk_fail(err, EINVAL, "--overlay-dir only applies with --restore");
	if (cfg->restore_verify)
		return fk_fail(err, EINVAL, "--verify only applies with --restore");
	if (cfg->restore_prewarm)
		return fk_fail(err, EINVAL, "--prewarm only applies with --restore");
	if (!cfg->kernel)
		return fk_fail(err, EINVAL, "--kernel PATH is required (see --help)");
	return 0;
}
