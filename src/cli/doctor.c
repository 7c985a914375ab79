/* SPDX-License-Identifier: MIT */
/*
 * `forkd doctor [--json]`: can this machine run forkd, and how? Looks at
 * /dev/kvm (hardware, KVM-PVM or none: src/util/kvm_host.c), the KVM API
 * version and the capabilities forkd-vmm needs, userfaultfd (the syscall and
 * /dev/userfaultfd, UFFDIO_API feature bits), transparent huge pages, cgroup
 * v2 and whether forkd can delegate in it, seccomp filters, what VM
 * networking needs (/dev/net/tun, nft, ip; 10.200.0.0/16 free), free disk
 * space where images and scratch files go, and ends with a
 * verdict. Every probe fills one part of a JSON report, or says why it could
 * not; the human form is printed from the same report. A machine without KVM
 * is a finding: the exit status is 0 whenever the report was printed.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "cli/cli.h"
#include "state/live_async.h"
#include "util/kvm_host.h"
#include "util/sysinfo.h"

#ifndef CGROUP2_SUPER_MAGIC
#define CGROUP2_SUPER_MAGIC 0x63677270
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define GIB		   (1024.0 * 1024.0 * 1024.0)
#define LOW_DISK_BYTES	   (2ULL << 30) /* a root image plus its build is about 1 GiB */
#define THP_DIR		   "/sys/kernel/mm/transparent_hugepage"
#define CGROUP_DIR	   "/sys/fs/cgroup"
#define UNPRIV_UFFD_SYSCTL "/proc/sys/vm/unprivileged_userfaultfd"

/* The same defaults as src/core/config.h and images/images.mk. */
#define IMAGE_CACHE_DEFAULT   "/var/cache/forkd/rootfs"
#define KERNEL_IMAGES_DEFAULT "/var/cache/forkd/images"

static const char *errname(int e)
{
	static char buf[32];

	return fk_errno_name(e, buf, sizeof(buf));
}

/* obj[key] = "NAME: what" (a probe that could not answer). */
static void set_error(json_t *obj, const char *key, int e, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void set_error(json_t *obj, const char *key, int e, const char *fmt, ...)
{
	char what[512], msg[600];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (e)
		snprintf(msg, sizeof(msg), "%s (%s)", errname(e), what);
	else
		snprintf(msg, sizeof(msg), "%s", what);
	json_object_set_new(obj, key, json_string(msg));
}

/* ---- KVM ---- */

static json_t *probe_kvm(enum fk_kvm_kind *kind, bool *caps_ok)
{
	json_t *o = json_object(), *caps = json_object(), *missing = json_array();
	struct fk_kvm_host h;
	int fd, n;

	fk_kvm_host_probe("/dev/kvm", &h);
	*kind = h.kind;
	*caps_ok = false;
	json_object_set_new(o, "device", json_string("/dev/kvm"));
	json_object_set_new(o, "present", json_boolean(h.open_errno == 0));
	json_object_set_new(o, "kind", json_string(fk_kvm_kind_name(h.kind)));
	json_object_set_new(o, "module", h.module ? json_string(h.module) : json_null());
	if (h.open_errno) {
		if (h.open_errno == ENOENT)
			set_error(o, "error", h.open_errno, "no /dev/kvm: %s",
				  h.module ? "the KVM module created no device (a KVM-PVM "
					     "kernel that is itself a PVM guest does this)"
					   : "no kvm_amd, kvm_intel or kvm_pvm module loaded");
		else if (h.open_errno == EACCES || h.open_errno == EPERM)
			set_error(o, "error", h.open_errno,
				  "/dev/kvm: expected read/write access: run as root or join "
				  "the device's group");
		else
			set_error(o, "error", h.open_errno, "/dev/kvm: cannot open");
		goto out;
	}
	json_object_set_new(o, "api_version", json_integer(h.api_version));
	if (h.api_version != KVM_API_VERSION) {
		set_error(o, "error", 0, "/dev/kvm answered API version %d, expected %d",
			  h.api_version, KVM_API_VERSION);
		goto out;
	}
	if (!h.module)
		set_error(o, "error", 0,
			  "/dev/kvm works but neither kvm_amd, kvm_intel nor kvm_pvm is loaded: "
			  "unknown kind, treated as none");
	fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		set_error(o, "caps_error", errno, "/dev/kvm: cannot open again");
		goto out;
	}
	for (size_t i = 0; i < fk_kvm_nr_required_caps; i++) {
		n = ioctl(fd, KVM_CHECK_EXTENSION, fk_kvm_required_caps[i].cap);
		json_object_set_new(caps, fk_kvm_required_caps[i].name, json_boolean(n > 0));
		if (n <= 0)
			json_array_append_new(missing, json_string(fk_kvm_required_caps[i].name));
	}
	*caps_ok = json_array_size(missing) == 0;
	n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);
	if (n <= 0)
		n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	json_object_set_new(o, "max_vcpus", n > 0 ? json_integer(n) : json_null());
	/* Used when present: vCPU XSAVE state larger than 4 KiB (snapshots). */
	n = ioctl(fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	json_object_set_new(o, "xsave2", json_boolean(n > 0));
	close(fd);
out:
	json_object_set_new(o, "required_caps", caps);
	json_object_set_new(o, "missing_caps", missing);
	return o;
}

/* ---- userfaultfd ---- */

/* UFFDIO_API on a fresh userfaultfd: the kernel answers with every feature it supports. */
static void uffd_api(int fd, json_t *o)
{
	struct uffdio_api api = {.api = UFFD_API, .features = 0};
	json_t *names = json_array();
	char hex[24];

	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		set_error(o, "error", errno, "UFFDIO_API failed");
		json_decref(names);
		return;
	}
	snprintf(hex, sizeof(hex), "0x%llx", (unsigned long long)api.features);
	json_object_set_new(o, "ok", json_true());
	json_object_set_new(o, "features", json_string(hex));
	fk_uffd_feature_names(api.features, names);
	json_object_set_new(o, "feature_names", names);
}

/* The live snapshot engine uffd-wp-async needs UFFD_FEATURE_WP_ASYNC and PAGEMAP_SCAN (6.7+). */
static json_t *probe_wp_async(void)
{
	json_t *o = json_object();
	struct fk_err err = {0};
	int r = live_async_supported(&err);

	json_object_set_new(o, "ok", json_boolean(r == 0));
	if (r < 0)
		json_object_set_new(o, "error", json_string(err.msg));
	return o;
}

static json_t *probe_uffd(int *unpriv, bool *usable)
{
	json_t *o = json_object(), *sys = json_object(), *dev = json_object();
	char buf[32], *end;
	int fd, e, r;

	*unpriv = -1;
	*usable = false;
	r = fk_read_small_file(UNPRIV_UFFD_SYSCTL, buf, sizeof(buf));
	if (r >= 0) {
		long v = strtol(buf, &end, 10);
		if (end != buf)
			*unpriv = (int)v;
	}
	json_object_set_new(o, "unprivileged_userfaultfd",
			    *unpriv >= 0 ? json_integer(*unpriv) : json_null());

	json_object_set_new(sys, "ok", json_false());
	fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		uffd_api(fd, sys);
		close(fd);
	} else {
		e = errno;
		if (e == EPERM) {
			char why[160];
			snprintf(why, sizeof(why), "vm.unprivileged_userfaultfd=%s%s",
				 *unpriv >= 0 ? (*unpriv ? "1" : "0") : "?",
				 *unpriv == 0 ? ", and this process lacks CAP_SYS_PTRACE" : "");
			set_error(sys, "error", e, "%s", why);
			/* Allowed even then, but only for faults from user mode: KVM's
			 * accesses to guest memory are not, so it would not serve forkd. */
			fd = (int)syscall(SYS_userfaultfd,
					  O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
			json_object_set_new(sys, "user_mode_only_ok", json_boolean(fd >= 0));
			if (fd >= 0)
				close(fd);
		} else if (e == ENOSYS) {
			set_error(sys, "error", e, "kernel built without CONFIG_USERFAULTFD");
		} else {
			set_error(sys, "error", e, "userfaultfd(2) failed");
		}
	}
	*usable = json_is_true(json_object_get(sys, "ok"));
	json_object_set_new(o, "syscall", sys);

	json_object_set_new(dev, "path", json_string("/dev/userfaultfd"));
	json_object_set_new(dev, "ok", json_false());
	fd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		json_object_set_new(dev, "present", json_boolean(e != ENOENT));
		if (e == ENOENT)
			set_error(dev, "error", e, "no /dev/userfaultfd (Linux 6.1+ creates it)");
		else if (e == EACCES || e == EPERM)
			set_error(dev, "error", e,
				  "expected read/write access: root, or a group given the device");
		else
			set_error(dev, "error", e, "cannot open it");
	} else {
		json_object_set_new(dev, "present", json_true());
		int ufd = ioctl(fd, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		if (ufd < 0) {
			set_error(dev, "error", errno, "USERFAULTFD_IOC_NEW failed");
		} else {
			uffd_api(ufd, dev);
			close(ufd);
		}
		close(fd);
	}
	*usable = *usable || json_is_true(json_object_get(dev, "ok"));
	json_object_set_new(o, "dev", dev);
	json_object_set_new(o, "wp_async", probe_wp_async());
	return o;
}

/* ---- transparent huge pages ---- */

static json_t *probe_thp(bool *never)
{
	static const char *const files[] = {"enabled", "defrag", "shmem_enabled"};
	json_t *o = json_object();
	char path[128], buf[256], sel[64];
	int r;

	*never = false;
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		char key[64];

		snprintf(path, sizeof(path), THP_DIR "/%s", files[i]);
		snprintf(key, sizeof(key), "%s_error", files[i]);
		r = fk_read_small_file(path, buf, sizeof(buf));
		if (r < 0) {
			json_object_set_new(o, files[i], json_null());
			set_error(o, key, -r, "cannot read %s", path);
			continue;
		}
		r = fk_sysfs_selected(buf, sel, sizeof(sel));
		if (r < 0) {
			buf[strcspn(buf, "\n")] = '\0';
			json_object_set_new(o, files[i], json_null());
			set_error(o, key, 0, "%s: '%s': expected one [selected] value", path, buf);
			continue;
		}
		json_object_set_new(o, files[i], json_string(sel));
		if (i == 0 && strcmp(sel, "never") == 0)
			*never = true;
	}
	return o;
}

/* ---- cgroup ---- */

static bool is_cgroup2(const char *path)
{
	struct statfs s;

	return statfs(path, &s) == 0 && (unsigned long)s.f_type == CGROUP2_SUPER_MAGIC;
}

static json_t *probe_cgroup(void)
{
	json_t *o = json_object(), *ctl;
	const char *v2 = NULL, *mode;
	char path[128], buf[1024];
	struct statfs s;
	int r;

	if (is_cgroup2(CGROUP_DIR)) {
		v2 = CGROUP_DIR;
		mode = "unified";
	} else if (statfs(CGROUP_DIR, &s) < 0) {
		mode = "none";
		set_error(o, "error", errno, "%s", CGROUP_DIR);
	} else if (is_cgroup2(CGROUP_DIR "/unified")) {
		v2 = CGROUP_DIR "/unified";
		mode = "hybrid";
	} else {
		struct stat st;
		snprintf(path, sizeof(path), "%s/cgroup.procs", CGROUP_DIR);
		mode = "legacy";
		if (stat(CGROUP_DIR "/memory", &st) < 0 && stat(path, &st) < 0)
			mode = "none";
	}
	json_object_set_new(o, "mode", json_string(mode));
	json_object_set_new(o, "cgroup2", json_boolean(v2 && strcmp(v2, CGROUP_DIR) == 0));
	json_object_set_new(o, "cgroup2_path", v2 ? json_string(v2) : json_null());
	if (!v2)
		return o;
	snprintf(path, sizeof(path), "%s/cgroup.controllers", v2);
	r = fk_read_small_file(path, buf, sizeof(buf));
	if (r < 0) {
		set_error(o, "error", -r, "cannot read %s", path);
		return o;
	}
	ctl = json_array();
	fk_split_words(buf, ctl);
	json_object_set_new(o, "controllers", ctl);
	return o;
}

/*
 * Delegation: forkd puts each VM in a cgroup of its own under the one it
 * runs in, which needs that cgroup writable and its controllers enabled
 * for children (cgroup.subtree_control).
 */
static void probe_cgroup_delegation(json_t *cg)
{
	const char *v2 = json_string_value(json_object_get(cg, "cgroup2_path"));
	char self[4096], dir[PATH_MAX], path[PATH_MAX + 32], buf[1024], *line;
	json_t *sub;
	int r;

	if (!v2)
		return;
	r = fk_read_small_file("/proc/self/cgroup", self, sizeof(self));
	/* cgroup v2's line is "0::/path" (the last one on a hybrid machine) */
	line = r < 0 ? NULL : strncmp(self, "0::", 3) == 0 ? self : strstr(self, "\n0::");
	if (!line) {
		set_error(cg, "delegation_error", r < 0 ? -r : 0,
			  "no cgroup v2 line in /proc/self/cgroup");
		return;
	}
	line += line[0] == '\n' ? 4 : 3;
	line[strcspn(line, "\n")] = '\0';
	snprintf(dir, sizeof(dir), "%s%s", v2, strcmp(line, "/") == 0 ? "" : line);
	json_object_set_new(cg, "own_cgroup", json_string(dir));
	json_object_set_new(cg, "own_cgroup_writable", json_boolean(access(dir, W_OK) == 0));
	snprintf(path, sizeof(path), "%s/cgroup.subtree_control", dir);
	r = fk_read_small_file(path, buf, sizeof(buf));
	if (r < 0) {
		set_error(cg, "delegation_error", -r, "cannot read %s", path);
		return;
	}
	sub = json_array();
	fk_split_words(buf, sub);
	json_object_set_new(cg, "subtree_control", sub);
}

/* ---- seccomp ---- */

static json_t *probe_seccomp(bool *usable)
{
	json_t *o = json_object();
	uint32_t action = SECCOMP_RET_KILL_PROCESS;
	char buf[256];
	int r;

	/* asks for an action only a kernel with seccomp filters knows; installs nothing */
	*usable = syscall(SYS_seccomp, SECCOMP_GET_ACTION_AVAIL, 0, &action) == 0;
	json_object_set_new(o, "filters", json_boolean(*usable));
	if (!*usable)
		set_error(o, "error", errno, "seccomp(SECCOMP_GET_ACTION_AVAIL)");
	r = fk_read_small_file("/proc/sys/kernel/seccomp/actions_avail", buf, sizeof(buf));
	if (r >= 0) {
		json_t *actions = json_array();
		fk_split_words(buf, actions);
		json_object_set_new(o, "actions", actions);
	}
	return o;
}

/* ---- VM networking (docs/networking.md) ---- */

static bool find_tool(const char *tool, char *out, size_t size)
{
	static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};

	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(out, size, "%s/%s", dirs[i], tool);
		if (access(out, X_OK) == 0)
			return true;
	}
	return false;
}

/*
 * Routes of 10.200.0.0/16 (where VM namespaces take their /30s) through an
 * interface that is not one of ours (fkv<slot>): such a network would clash.
 */
static json_t *foreign_10_200_routes(void)
{
	json_t *clash = json_array();
	char line[256];
	FILE *f = fopen("/proc/net/route", "r");

	if (!f)
		return clash;
	while (fgets(line, sizeof(line), f)) {
		char ifname[32];
		unsigned dest, mask;

		if (sscanf(line, "%31s %x %*x %*x %*d %*d %*d %x", ifname, &dest, &mask) != 3)
			continue;
		/* /proc/net/route is in network byte order: 10.200.x.x reads 0x....c80a */
		if (mask == 0 || (dest & 0xffff & mask) != (0xc80a & mask) ||
		    strncmp(ifname, "fkv", 3) == 0)
			continue;
		json_array_append_new(clash, json_string(ifname));
	}
	fclose(f);
	return clash;
}

static json_t *probe_net(bool *usable)
{
	json_t *o = json_object(), *clash;
	char path[PATH_MAX];
	struct stat st;
	int fd;

	*usable = true;
	if (stat("/dev/net/tun", &st) < 0) {
		set_error(o, "tun_error", errno, "/dev/net/tun");
		*usable = false;
	} else if (!S_ISCHR(st.st_mode) || major(st.st_rdev) != 10 || minor(st.st_rdev) != 200) {
		set_error(o, "tun_error", 0, "/dev/net/tun is not the tun device (char 10:200)");
		*usable = false;
	} else if ((fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC)) < 0) {
		set_error(o, "tun_error", errno, "open /dev/net/tun");
		*usable = false;
	} else {
		close(fd);
	}
	json_object_set_new(o, "tun", json_boolean(!json_object_get(o, "tun_error")));
	json_object_set_new(o, "nft",
			    find_tool("nft", path, sizeof(path)) ? json_string(path) : json_null());
	json_object_set_new(o, "ip",
			    find_tool("ip", path, sizeof(path)) ? json_string(path) : json_null());
	if (json_is_null(json_object_get(o, "nft")) || json_is_null(json_object_get(o, "ip")))
		*usable = false;
	clash = foreign_10_200_routes();
	if (json_array_size(clash))
		*usable = false;
	json_object_set_new(o, "slot_net_clash", clash);
	return o;
}

/* ---- disk space ---- */

static json_t *probe_dir(const char *what, const char *env, const char *fallback, bool *low)
{
	const char *value = getenv(env);
	const char *path = value && *value ? value : fallback;
	json_t *o = json_object();
	char at[PATH_MAX];
	struct statvfs v;
	struct stat st;

	json_object_set_new(o, "what", json_string(what));
	json_object_set_new(o, "path", json_string(path));
	json_object_set_new(o, "from", json_string(value && *value ? env : "default"));
	snprintf(at, sizeof(at), "%s", path);
	/* Not made yet: measure the nearest existing parent, where it will be. */
	while (stat(at, &st) < 0 && strcmp(at, "/") != 0 && at[0]) {
		char *slash = strrchr(at, '/');
		if (!slash)
			snprintf(at, sizeof(at), ".");
		else if (slash == at)
			at[1] = '\0';
		else
			*slash = '\0';
	}
	json_object_set_new(o, "exists", json_boolean(strcmp(at, path) == 0));
	json_object_set_new(o, "measured_at", json_string(at));
	if (statvfs(at, &v) < 0) {
		set_error(o, "error", errno, "statvfs %s", at);
		return o;
	}
	uint64_t free_bytes = (uint64_t)v.f_bavail * v.f_frsize;
	json_object_set_new(o, "free_bytes", json_integer((json_int_t)free_bytes));
	json_object_set_new(o, "writable", json_boolean(access(at, W_OK) == 0));
	if (free_bytes < LOW_DISK_BYTES)
		*low = true;
	return o;
}

/* ---- verdict ---- */

static bool in_path(const char *prog, char *out, size_t size)
{
	const char *p = getenv("PATH");

	if (!p || !*p)
		p = "/usr/local/bin:/usr/bin:/bin";
	while (*p) {
		size_t len = strcspn(p, ":");
		snprintf(out, size, "%.*s/%s", (int)len, p, prog);
		if (len && access(out, X_OK) == 0)
			return true;
		p += len + (p[len] == ':');
	}
	return false;
}

static json_t *verdict(enum fk_kvm_kind kind, bool caps_ok, bool uffd, bool thp_never,
		       bool low_disk, json_t *nested, json_t *net, bool seccomp)
{
	json_t *o = json_object(), *notes = json_array();
	const char *probe = "native", *linux_ = "native", *text;
	char qemu[PATH_MAX];
	bool have_qemu = in_path("qemu-system-x86_64", qemu, sizeof(qemu));

	json_object_set_new(nested, "qemu", have_qemu ? json_string(qemu) : json_null());
	if (kind == FK_KVM_HARDWARE && caps_ok) {
		text = "forkd runs here natively: probe and Linux guests on hardware KVM";
	} else if (kind == FK_KVM_PVM && caps_ok) {
		linux_ = "nested";
		text = "probe guests run natively on KVM-PVM; Linux guests need the nested test "
		       "host (scripts/testhost.sh)";
	} else {
		probe = linux_ = "nested";
		text = kind != FK_KVM_NONE
			   ? "this KVM lacks capabilities forkd-vmm requires: every guest needs "
			     "the nested test host (scripts/testhost.sh, QEMU TCG, slow)"
			   : "no usable KVM: every guest needs the nested test host "
			     "(scripts/testhost.sh, QEMU TCG, slow)";
	}
	if (strcmp(linux_, "nested") == 0 && !have_qemu)
		json_array_append_new(notes, json_string("qemu-system-x86_64 not found: the "
							 "nested test host needs it "
							 "(scripts/install-deps.sh)"));
	if (!uffd)
		json_array_append_new(notes,
				      json_string("userfaultfd is not available to this user: "
						  "the coming userfaultfd engine will not run "
						  "here (BRANCH and snapshots do not need it)"));
	if (thp_never)
		json_array_append_new(notes, json_string("THP is never: BRANCH pauses are longer "
							 "with 4 KiB guest pages"));
	if (low_disk)
		json_array_append_new(notes, json_string("less than 2 GiB free where images or "
							 "scratch files go"));
	if (json_object_get(net, "tun_error"))
		json_array_append_new(notes,
				      json_string("no usable /dev/net/tun: VMs get no network "
						  "(modprobe tun)"));
	if (json_is_null(json_object_get(net, "nft")))
		json_array_append_new(notes,
				      json_string("nft not found: --net-policy host|nat needs "
						  "nftables (scripts/install-deps.sh)"));
	if (json_is_null(json_object_get(net, "ip")))
		json_array_append_new(notes,
				      json_string("ip not found: --net-policy needs iproute2"));
	if (json_array_size(json_object_get(net, "slot_net_clash")))
		json_array_append_new(notes, json_string("10.200.0.0/16 is already routed here: VM "
							 "namespaces' /30s would clash"));
	if (!seccomp)
		json_array_append_new(notes, json_string("seccomp filters unavailable: VMMs run "
							 "without a syscall filter"));
	json_object_set_new(o, "kvm", json_string(fk_kvm_kind_name(kind)));
	json_object_set_new(o, "probe_guests", json_string(probe));
	json_object_set_new(o, "linux_guests", json_string(linux_));
	json_object_set_new(o, "text", json_string(text));
	json_object_set_new(o, "notes", notes);
	return o;
}

/* ---- human output ---- */

static const char *str(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "?";
}

static void print_list(json_t *arr, const char *empty)
{
	size_t i;
	json_t *v;

	if (!json_array_size(arr)) {
		fputs(empty, stdout);
		return;
	}
	json_array_foreach(arr, i, v) printf("%s%s", i ? " " : "", json_string_value(v));
}

static void print_uffd_way(const char *label, json_t *w)
{
	printf("%-13s %s: ", "", label);
	if (json_is_true(json_object_get(w, "ok"))) {
		printf("features %s (", str(w, "features"));
		print_list(json_object_get(w, "feature_names"), "none");
		puts(")");
	} else {
		printf("%s", str(w, "error"));
		if (json_is_true(json_object_get(w, "user_mode_only_ok")))
			printf("; UFFD_USER_MODE_ONLY works, but KVM's faults are not user-mode");
		putchar('\n');
	}
}

static void print_human(json_t *r)
{
	json_t *kvm = json_object_get(r, "kvm"), *uffd = json_object_get(r, "userfaultfd");
	json_t *thp = json_object_get(r, "thp"), *cg = json_object_get(r, "cgroup");
	json_t *v = json_object_get(r, "verdict"), *d;
	size_t i;

	printf("%-13s %s\n", "kernel", str(r, "kernel"));
	if (json_is_true(json_object_get(kvm, "present"))) {
		printf("%-13s /dev/kvm: %s", "kvm", str(kvm, "kind"));
		if (json_is_string(json_object_get(kvm, "module")))
			printf(" (module %s)", str(kvm, "module"));
		printf(", API version %lld\n",
		       (long long)json_integer_value(json_object_get(kvm, "api_version")));
		if (json_object_get(kvm, "error"))
			printf("%-13s %s\n", "", str(kvm, "error"));
		if (json_object_get(kvm, "max_vcpus")) {
			json_t *missing = json_object_get(kvm, "missing_caps");
			printf("%-13s ", "kvm caps");
			if (json_array_size(missing)) {
				printf("MISSING ");
				print_list(missing, "");
			} else {
				printf("all %zu that forkd-vmm requires",
				       json_object_size(json_object_get(kvm, "required_caps")));
			}
			printf("; max vCPUs %lld; XSAVE2 %s\n",
			       (long long)json_integer_value(json_object_get(kvm, "max_vcpus")),
			       json_is_true(json_object_get(kvm, "xsave2")) ? "yes" : "no");
		}
		if (json_object_get(kvm, "caps_error"))
			printf("%-13s %s\n", "kvm caps", str(kvm, "caps_error"));
	} else {
		printf("%-13s none: %s", "kvm", str(kvm, "error"));
		if (json_is_string(json_object_get(kvm, "module")))
			printf("; module %s is loaded", str(kvm, "module"));
		putchar('\n');
	}

	printf("%-13s vm.unprivileged_userfaultfd=", "userfaultfd");
	if (json_is_integer(json_object_get(uffd, "unprivileged_userfaultfd")))
		printf("%lld\n", (long long)json_integer_value(
				     json_object_get(uffd, "unprivileged_userfaultfd")));
	else
		puts("? (" UNPRIV_UFFD_SYSCTL " unreadable)");
	print_uffd_way("syscall", json_object_get(uffd, "syscall"));
	print_uffd_way("/dev/userfaultfd", json_object_get(uffd, "dev"));
	d = json_object_get(uffd, "wp_async");
	if (json_is_true(json_object_get(d, "ok")))
		printf("%-13s WP_ASYNC and PAGEMAP_SCAN: yes (snapshot engine uffd-wp-async "
		       "available)\n",
		       "");
	else
		printf("%-13s WP_ASYNC and PAGEMAP_SCAN: no: %s\n", "", str(d, "error"));

	printf("%-13s", "thp");
	for (const char *const *f =
		 (const char *const[]){"enabled", "defrag", "shmem_enabled", NULL};
	     *f; f++) {
		char key[64];
		snprintf(key, sizeof(key), "%s_error", *f);
		if (json_is_string(json_object_get(thp, *f)))
			printf(" %s=[%s]", *f, str(thp, *f));
		else
			printf(" %s: %s;", *f, str(thp, key));
	}
	putchar('\n');

	printf("%-13s %s", "cgroup", str(cg, "mode"));
	if (json_is_string(json_object_get(cg, "cgroup2_path"))) {
		printf(", cgroup2 at %s, controllers: ", str(cg, "cgroup2_path"));
		if (json_object_get(cg, "controllers"))
			print_list(json_object_get(cg, "controllers"), "none enabled");
		else
			printf("%s", str(cg, "error"));
	} else {
		printf(": %s",
		       json_object_get(cg, "error") ? str(cg, "error") : "no cgroup2 mounted");
	}
	putchar('\n');
	if (json_is_string(json_object_get(cg, "own_cgroup"))) {
		printf("%-13s own cgroup %s (%s), subtree_control: ", "", str(cg, "own_cgroup"),
		       json_is_true(json_object_get(cg, "own_cgroup_writable")) ? "writable"
										: "not writable");
		if (json_object_get(cg, "subtree_control"))
			print_list(json_object_get(cg, "subtree_control"), "none");
		else
			printf("%s", str(cg, "delegation_error"));
		putchar('\n');
	}

	{
		json_t *sc = json_object_get(r, "seccomp");
		printf("%-13s %s", "seccomp",
		       json_is_true(json_object_get(sc, "filters")) ? "filters available"
								    : str(sc, "error"));
		if (json_object_get(sc, "actions")) {
			printf(", actions: ");
			print_list(json_object_get(sc, "actions"), "none");
		}
		putchar('\n');
	}

	{
		json_t *net = json_object_get(r, "net");
		printf("%-13s tun %s, nft %s, ip %s", "net",
		       json_is_true(json_object_get(net, "tun")) ? "ok" : str(net, "tun_error"),
		       json_is_string(json_object_get(net, "nft")) ? str(net, "nft") : "not found",
		       json_is_string(json_object_get(net, "ip")) ? str(net, "ip") : "not found");
		if (json_array_size(json_object_get(net, "slot_net_clash"))) {
			printf("; 10.200.0.0/16 already routed via ");
			print_list(json_object_get(net, "slot_net_clash"), "");
		}
		putchar('\n');
	}

	json_array_foreach(json_object_get(r, "disk"), i, d)
	{
		printf("%-13s %s %s", i ? "" : "disk", str(d, "what"), str(d, "path"));
		if (!json_is_true(json_object_get(d, "exists")))
			printf(" (not created yet; measured at %s)", str(d, "measured_at"));
		if (json_object_get(d, "error"))
			printf(": %s\n", str(d, "error"));
		else
			printf(": %.1f GiB free%s\n",
			       (double)json_integer_value(json_object_get(d, "free_bytes")) / GIB,
			       json_is_true(json_object_get(d, "writable")) ? ""
									    : ", not writable");
	}
	printf("%-13s %s\n", "nested host",
	       json_is_string(json_object_get(json_object_get(r, "nested_host"), "qemu"))
		   ? str(json_object_get(r, "nested_host"), "qemu")
		   : "qemu-system-x86_64 not found");

	printf("verdict: %s\n", str(v, "text"));
	json_array_foreach(json_object_get(v, "notes"), i, d)
	    printf("  note: %s\n", json_string_value(d));
}

int cli_doctor(int argc, char **argv)
{
	json_t *r = NULL, *disk, *nested, *cgroup, *net;
	bool as_json = false, caps_ok, uffd_ok, thp_never, low = false, seccomp_ok, net_ok;
	enum fk_kvm_kind kind;
	struct utsname u;
	int unpriv, ret = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0)
			as_json = true;
		else if (argv[i][0] == '-')
			return cli_usage_error("doctor: unknown option '%s' (expected --json)",
					       argv[i]);
		else
			return cli_usage_error("doctor: unexpected argument '%s' (expected "
					       "only --json)",
					       argv[i]);
	}

	r = json_object();
	disk = json_array();
	nested = json_object();
	if (!r || !disk || !nested) {
		fputs("forkd: doctor: out of memory\n", stderr);
		json_decref(disk);
		json_decref(nested);
		ret = CLI_EXIT_NOT_OK;
		goto cleanup;
	}
	json_object_set_new(r, "kernel", json_string(uname(&u) == 0 ? u.release : "?"));
	json_object_set_new(r, "kvm", probe_kvm(&kind, &caps_ok));
	json_object_set_new(r, "userfaultfd", probe_uffd(&unpriv, &uffd_ok));
	json_object_set_new(r, "thp", probe_thp(&thp_never));
	cgroup = probe_cgroup();
	probe_cgroup_delegation(cgroup);
	json_object_set_new(r, "cgroup", cgroup);
	json_object_set_new(r, "seccomp", probe_seccomp(&seccomp_ok));
	net = probe_net(&net_ok);
	json_object_set_new(r, "net", net);
	json_array_append_new(
	    disk, probe_dir("image cache", "FORKD_IMAGE_CACHE", IMAGE_CACHE_DEFAULT, &low));
	json_array_append_new(
	    disk, probe_dir("kernel images", "FORKD_IMAGES", KERNEL_IMAGES_DEFAULT, &low));
	json_array_append_new(disk, probe_dir("scratch", "TMPDIR", "/tmp", &low));
	json_object_set_new(r, "disk", disk);
	json_object_set_new(
	    r, "verdict", verdict(kind, caps_ok, uffd_ok, thp_never, low, nested, net, seccomp_ok));
	json_object_set_new(r, "nested_host", nested);

	if (as_json) {
		if (json_dumpf(r, stdout, JSON_COMPACT) < 0)
			ret = CLI_EXIT_NOT_OK;
		putchar('\n');
	} else {
		print_human(r);
	}
	if (fflush(stdout) != 0) {
		fprintf(stderr, "forkd: doctor: writing the report: %s\n", strerror(errno));
		ret = CLI_EXIT_NOT_OK;
	}
cleanup:
	json_decref(r);
	return ret;
}
