/* SPDX-License-Identifier: MIT */
/*
 * The jail of forkd-vmm (docs/jail.md), in this order: resolve the uid/gid
 * and the host paths, leave the host's mount, ipc, uts and network
 * namespaces, bind what the VM needs into DIR, pivot_root into DIR, then
 * drop every capability and switch to the unprivileged ids. Firecracker's
 * jailer was the reference; unlike it, forkd-vmm jails itself (no exec of a
 * second binary) because the VMM's pid is what the daemon supervises, and
 * it keeps host path spellings inside the jail (jail.h says why).
 */
#include "jail/jail.h"
#include "state/vm_snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define JAIL_HOSTNAME "forkd-jail"

int jail_path(const char *dir, const char *host_path, char *out, size_t len)
{
	int n = snprintf(out, len, "%s%s", dir, host_path);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* An absolute spelling of path (relative to the current directory), without "." or "..". */
static int absolute(const char *option, const char *path, char *out, size_t len, struct fk_err *err)
{
	char cwd[JAIL_PATH_MAX];
	const char *p;
	int n;

	if (!*path)
		return fk_fail(err, EINVAL, "%s: empty path", option);
	if (path[0] == '/') {
		n = snprintf(out, len, "%s", path);
	} else {
		if (!getcwd(cwd, sizeof(cwd)))
			return fk_fail_errno(err, errno, "%s %s: current directory", option, path);
		n = snprintf(out, len, "%s/%s", strcmp(cwd, "/") ? cwd : "", path);
	}
	if (n < 0 || (size_t)n >= len)
		return fk_fail(err, ENAMETOOLONG, "%s %s: path too long for the jail", option,
			       path);
	/* ".." could climb out of the jail directory while it is being built. */
	for (p = out; (p = strstr(p, "..")); p += 2)
		if (p[-1] == '/' && (p[2] == '/' || p[2] == '\0'))
			return fk_fail(err, EINVAL,
				       "%s %s: a path with '..' cannot be put in the jail (give it "
				       "without '..')",
				       option, path);
	/* Trailing slashes would make two spellings of one directory. */
	for (n = (int)strlen(out); n > 1 && out[n - 1] == '/'; n--)
		out[n - 1] = '\0';
	return 0;
}

static int plan_add(struct jail_plan *plan, const char *option, const char *path,
		    enum jail_entry_kind kind, bool writable, struct fk_err *err)
{
	struct jail_entry *e;
	int ret;

	if (plan->nr_entries == JAIL_MAX_ENTRIES)
		return fk_fail(err, E2BIG, "%s %s: the jail holds at most %d paths", option, path,
			       JAIL_MAX_ENTRIES);
	e = &plan->entries[plan->nr_entries];
	memset(e, 0, sizeof(*e));
	ret = absolute(option, path, e->path, sizeof(e->path), err);
	if (ret < 0)
		return ret;
	if (kind == JAIL_CHAR_DEV && strncmp(e->path, "/dev/", 5) != 0)
		return fk_fail(err, EINVAL,
			       "%s %s: a device node in the jail must be under /dev (the jail's "
			       "/dev is where device nodes work)",
			       option, path);
	e->kind = kind;
	e->writable = writable;
	e->option = option;
	plan->nr_entries++;
	return 0;
}

/* The directory holding path, which the VMM creates files in (sockets, the console log). */
static int plan_add_parent(struct jail_plan *plan, const char *option, const char *path,
			   struct fk_err *err)
{
	char abs[JAIL_PATH_MAX], *slash;
	int ret = absolute(option, path, abs, sizeof(abs), err);

	if (ret < 0)
		return ret;
	slash = strrchr(abs, '/');
	if (slash == abs)
		return fk_fail(err, EINVAL,
			       "%s %s: a file directly in / cannot be created in the jail (the "
			       "jail binds its directory, and / is the jail itself)",
			       option, path);
	*slash = '\0';
	return plan_add(plan, option, abs, JAIL_DIR, true, err);
}

static bool is_inside(const char *dir, const char *path)
{
	size_t n = strlen(dir);

	return strncmp(dir, path, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static int by_length(const void *a, const void *b)
{
	const struct jail_entry *x = a, *y = b;
	size_t lx = strlen(x->path), ly = strlen(y->path);

	if (lx != ly)
		return lx < ly ? -1 : 1;
	return strcmp(x->path, y->path);
}

/*
 * Shorter paths first: a directory is bound before anything inside it. A
 * path inside a bound directory is dropped (it is visible through it),
 * unless it must be writable inside a read-only one: then it is bound over.
 */
static void plan_normalize(struct jail_plan *plan)
{
	int kept = 0;

	qsort(plan->entries, (size_t)plan->nr_entries, sizeof(plan->entries[0]), by_length);
	for (int j = 0; j < plan->nr_entries; j++) {
		struct jail_entry *e = &plan->entries[j];
		bool drop = false;

		for (int i = 0; i < kept && !drop; i++) {
			struct jail_entry *d = &plan->entries[i];

			if (e->kind == JAIL_CHAR_DEV || d->kind == JAIL_CHAR_DEV)
				continue;
			if (strcmp(d->path, e->path) == 0) {
				d->writable |= e->writable;
				drop = true;
			} else if (d->kind == JAIL_DIR && is_inside(d->path, e->path) &&
				   (d->writable || !e->writable)) {
				drop = true;
			}
		}
		if (!drop)
			plan->entries[kept++] = *e;
	}
	plan->nr_entries = kept;
}

struct plan_ctx {
	struct jail_plan *plan;
	struct fk_err *err;
	int ret; /* plan_add refused an image: its error, also in err */
};

static int plan_add_image(const char *path, void *opaque)
{
	struct plan_ctx *ctx = opaque;

	ctx->ret =
	    plan_add(ctx->plan, "--restore (read-only image)", path, JAIL_FILE, false, ctx->err);
	return ctx->ret;
}

int jail_plan_build(const struct vmm_config *cfg, struct jail_plan *plan, struct fk_err *err)
{
	struct stat st;
	int ret = 0;

	memset(plan, 0, sizeof(*plan));
	/* A real KVM device gets its own node in the jail's /dev; a test may pass a file. */
	if (stat(cfg->kvm_path, &st) == 0 && S_ISCHR(st.st_mode))
		ret = plan_add(plan, "--kvm", cfg->kvm_path, JAIL_CHAR_DEV, true, err);
	else
		ret = plan_add(plan, "--kvm", cfg->kvm_path, JAIL_FILE, true, err);
	/* A network device opens its tap through /dev/net/tun: a node of its own, like KVM's. */
	if (!ret && cfg->net_tap[0] && cfg->net_tap_fd < 0)
		ret = plan_add(plan, "--net", "/dev/net/tun", JAIL_CHAR_DEV, true, err);
	if (!ret && cfg->kernel)
		ret = plan_add(plan, "--kernel", cfg->kernel, JAIL_FILE, false, err);
	if (!ret && cfg->initrd)
		ret = plan_add(plan, "--initrd", cfg->initrd, JAIL_FILE, false, err);
	for (int i = 0; !ret && i < cfg->nr_disks; i++)
		ret = plan_add(plan, "--disk", cfg->disks[i].path, JAIL_FILE,
			       !cfg->disks[i].readonly, err);
	if (!ret && cfg->restore_dir)
		ret = plan_add(plan, "--restore", cfg->restore_dir, JAIL_DIR, false, err);
	/*
	 * Its read-only disks are reopened from where the snapshotted VM had them
	 * (an image's rootfs.ext4): read-only in the jail too. A snapshot that
	 * cannot be read adds nothing here; the restore says why.
	 */
	if (!ret && cfg->restore_dir) {
		struct plan_ctx ctx = {.plan = plan, .err = err};
		struct fk_err ignored = {0};

		if (vm_snapshot_readonly_images(cfg->restore_dir, plan_add_image, &ctx, &ignored) <
			0 &&
		    ctx.ret < 0)
			ret = ctx.ret;
	}
	/*
	 * A diff snapshot's restore reads its parents too (docs/diff-snapshots.md):
	 * each, read-only, at the same path. A chain that cannot be read adds
	 * nothing more; the restore says why.
	 */
	if (!ret && cfg->restore_dir) {
		char next[SNAP_PARENT_PATH_MAX + 1];

		snprintf(next, sizeof(next), "%s", cfg->restore_dir);
		for (int depth = 0; !ret && depth < SNAP_DIFF_MAX_DEPTH; depth++) {
			struct snap_parent_info parent;
			struct snap_reader *r = NULL;
			struct fk_err ignored = {0};
			bool more = snap_reader_open(next, &r, &ignored) == 0 &&
				    snap_reader_parent(r, &parent) == 0;

			snap_reader_close(r);
			if (!more)
				break;
			ret = plan_add(plan, "--restore (diff parent)", parent.path, JAIL_DIR,
				       false, err);
			snprintf(next, sizeof(next), "%s", parent.path);
		}
	}
	/* The VMM creates a missing --overlay-dir: then its parent must be there. */
	if (!ret && cfg->overlay_dir)
		ret = access(cfg->overlay_dir, F_OK) == 0
			  ? plan_add(plan, "--overlay-dir", cfg->overlay_dir, JAIL_DIR, true, err)
			  : plan_add_parent(plan, "--overlay-dir", cfg->overlay_dir, err);
	if (!ret && cfg->control_path)
		ret = plan_add_parent(plan, "--control", cfg->control_path, err);
	if (!ret && strcmp(cfg->serial_out, "stdout") && strcmp(cfg->serial_out, "none"))
		ret = plan_add_parent(plan, "--serial", cfg->serial_out, err);
	/* A FIFO is opened read-write (serial input never sees EOF); a file read-only. */
	if (!ret && strcmp(cfg->serial_in, "stdin") && strcmp(cfg->serial_in, "none"))
		ret = plan_add(plan, "--serial-in", cfg->serial_in, JAIL_FILE,
			       stat(cfg->serial_in, &st) == 0 && S_ISFIFO(st.st_mode), err);
	if (!ret && cfg->vsock_path[0])
		ret = plan_add_parent(plan, "--vsock", cfg->vsock_path, err);
	for (int i = 0; !ret && i < cfg->nr_jail_binds; i++) {
		const char *spec = cfg->jail_binds[i];
		size_t len = strcspn(spec, ",");
		char path[JAIL_PATH_MAX];
		bool ro = false;

		if (spec[len] && strcmp(spec + len, ",ro") && strcmp(spec + len, ",rw"))
			return fk_fail(err, EINVAL, "--jail-bind '%s': expected DIR[,ro|,rw]",
				       spec);
		ro = strcmp(spec + len, ",ro") == 0;
		if (len == 0 || len >= sizeof(path))
			return fk_fail(err, EINVAL, "--jail-bind '%s': expected DIR[,ro|,rw]",
				       spec);
		memcpy(path, spec, len);
		path[len] = '\0';
		ret = plan_add(plan, "--jail-bind", path, JAIL_DIR, !ro, err);
	}
	if (ret < 0)
		return ret;
	plan_normalize(plan);
	return 0;
}

int jail_resolve_ids(const struct vmm_config *cfg, uid_t *uid, gid_t *gid, struct fk_err *err)
{
	struct passwd *pw;
	struct group *gr;

	if (cfg->jail_uid_given) {
		*uid = cfg->jail_uid;
	} else {
		pw = getpwnam("nobody");
		if (!pw)
			return fk_fail(err, ENOENT,
				       "--jail: no user 'nobody' on this host to run the VM as "
				       "(give --uid N)");
		*uid = pw->pw_uid;
	}
	if (cfg->jail_gid_given) {
		*gid = cfg->jail_gid;
	} else {
		gr = getgrnam("nogroup");
		if (!gr)
			return fk_fail(err, ENOENT,
				       "--jail: no group 'nogroup' on this host to run the VM as "
				       "(give --gid N)");
		*gid = gr->gr_gid;
	}
	if (*uid == 0 || *gid == 0)
		return fk_fail(err, EINVAL,
			       "--jail: uid %u gid %u: the jail runs the VM unprivileged, expected "
			       "ids other than 0",
			       (unsigned)*uid, (unsigned)*gid);
	return 0;
}

/* mkdir -p of a path the jail builder itself made: it holds no symlinks. */
static int mkdir_p(const char *path, mode_t mode)
{
	char buf[JAIL_PATH_MAX * 2];
	size_t n = strlen(path);

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static int make_mountpoint(const char *target, bool dir, const char *host, const char *option,
			   struct fk_err *err)
{
	char parent[JAIL_PATH_MAX * 2];
	char *slash;
	int fd, ret;

	snprintf(parent, sizeof(parent), "%s", target);
	slash = strrchr(parent, '/');
	if (slash)
		*slash = '\0';
	ret = mkdir_p(dir ? target : parent, 0755);
	if (ret < 0)
		return fk_fail_errno(err, -ret, "%s %s: cannot make its place %s in the jail",
				     option, host, target);
	if (dir)
		return 0;
	fd = open(target, O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return fk_fail_errno(err, errno, "%s %s: cannot make its place %s in the jail",
				     option, host, target);
	close(fd);
	return 0;
}

static int bind_entry(const char *dir, const struct jail_entry *e, struct fk_err *err)
{
	char target[JAIL_PATH_MAX * 2];
	struct stat st;
	unsigned long flags = MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV;
	int ret;

	if (stat(e->path, &st) < 0)
		return fk_fail_errno(err, errno, "%s %s: cannot put it in the jail", e->option,
				     e->path);
	if (e->kind == JAIL_DIR && !S_ISDIR(st.st_mode))
		return fk_fail(err, ENOTDIR, "%s %s: expected a directory", e->option, e->path);
	if (e->kind == JAIL_FILE && S_ISDIR(st.st_mode))
		return fk_fail(err, EISDIR, "%s %s: expected a file, not a directory", e->option,
			       e->path);
	if (jail_path(dir, e->path, target, sizeof(target)) < 0)
		return fk_fail(err, ENAMETOOLONG, "%s %s: path too long for the jail", e->option,
			       e->path);
	ret = make_mountpoint(target, e->kind == JAIL_DIR, e->path, e->option, err);
	if (ret < 0)
		return ret;
	if (mount(e->path, target, NULL, MS_BIND | (e->kind == JAIL_DIR ? MS_REC : 0), NULL) < 0)
		return fk_fail_errno(err, errno, "%s %s: bind mount into the jail at %s", e->option,
				     e->path, target);
	if (!e->writable)
		flags |= MS_RDONLY;
	if (mount(NULL, target, NULL, flags, NULL) < 0)
		return fk_fail_errno(err, errno, "%s %s: make its jail mount %s%s", e->option,
				     e->path, e->writable ? "nosuid" : "read-only",
				     e->writable ? "" : ", nosuid");
	return 0;
}

/* The jail's /dev: a tmpfs holding the few nodes a VMM uses, KVM's owned by the VM's uid. */
static int make_dev(const char *dir, const struct jail_plan *plan, uid_t uid, gid_t gid,
		    struct fk_err *err)
{
	static const struct {
		const char *name;
		unsigned major, minor;
	} basic[] = {{"null", 1, 3}, {"zero", 1, 5}, {"random", 1, 8}, {"urandom", 1, 9}};
	char path[JAIL_PATH_MAX * 2];
	int ret;

	snprintf(path, sizeof(path), "%s/dev", dir);
	ret = mkdir_p(path, 0755);
	if (ret < 0)
		return fk_fail_errno(err, -ret, "--jail: create %s", path);
	if (mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=0755,size=64k") < 0)
		return fk_fail_errno(err, errno, "--jail: mount a tmpfs on %s", path);
	for (size_t i = 0; i < sizeof(basic) / sizeof(basic[0]); i++) {
		snprintf(path, sizeof(path), "%s/dev/%s", dir, basic[i].name);
		if (mknod(path, S_IFCHR | 0666, makedev(basic[i].major, basic[i].minor)) < 0 ||
		    chmod(path, 0666) < 0)
			return fk_fail_errno(err, errno, "--jail: create %s", path);
	}
	for (int i = 0; i < plan->nr_entries; i++) {
		const struct jail_entry *e = &plan->entries[i];
		struct stat st;

		if (e->kind != JAIL_CHAR_DEV)
			continue;
		if (stat(e->path, &st) < 0 || !S_ISCHR(st.st_mode))
			return fk_fail(err, ENODEV, "%s %s: not a character device", e->option,
				       e->path);
		if (jail_path(dir, e->path, path, sizeof(path)) < 0)
			return fk_fail(err, ENAMETOOLONG, "%s %s: path too long", e->option,
				       e->path);
		ret = make_mountpoint(path, false, e->path, e->option, err);
		if (ret < 0)
			return ret;
		unlink(path);
		/* The VM's uid alone may open it: BRANCH children reopen it after the drop. */
		if (mknod(path, S_IFCHR | 0600, st.st_rdev) < 0 || chown(path, uid, gid) < 0)
			return fk_fail_errno(err, errno, "%s %s: create its node %s in the jail",
					     e->option, e->path, path);
	}
	return 0;
}

/* DIR must be new or empty: a jail is one VM's, and leftovers would be visible to it. */
static int make_jail_dir(const char *dir, struct fk_err *err)
{
	struct stat st;
	char probe[JAIL_PATH_MAX];
	int ret;

	if (dir[0] != '/')
		return fk_fail(err, EINVAL, "--jail %s: expected an absolute path", dir);
	ret = mkdir_p(dir, 0755);
	if (ret < 0)
		return fk_fail_errno(err, -ret, "--jail %s: cannot create", dir);
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
		return fk_fail(err, ENOTDIR, "--jail %s: expected a directory", dir);
	snprintf(probe, sizeof(probe), "%s", dir);
	if (rmdir(probe) == 0) {
		/* It was empty: make it again, ours. */
		if (mkdir(dir, 0755) < 0)
			return fk_fail_errno(err, errno, "--jail %s: cannot create", dir);
		return 0;
	}
	if (errno == ENOTEMPTY || errno == EEXIST)
		return fk_fail(err, EEXIST,
			       "--jail %s: exists and is not empty (a jail directory belongs to "
			       "one VM; remove it or pick a new one)",
			       dir);
	return fk_fail_errno(err, errno, "--jail %s: cannot use it", dir);
}

static int capset_zero(void)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];

	memset(data, 0, sizeof(data));
	return syscall(SYS_capset, &hdr, data) < 0 ? -errno : 0;
}

int jail_drop_privileges(uid_t uid, gid_t gid, struct fk_err *err)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	int cap, ret;

	/* Root gets no capabilities back by exec or setuid, and that cannot be undone. */
	if (prctl(PR_SET_SECUREBITS,
		  SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP_LOCKED |
		      SECBIT_KEEP_CAPS_LOCKED,
		  0, 0, 0) < 0)
		return fk_fail_errno(err, errno, "--jail: set the securebits");
	for (cap = 0; cap < 64; cap++) {
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0) {
			if (errno == EINVAL)
				break; /* past the kernel's last capability */
			return fk_fail_errno(err, errno,
					     "--jail: drop capability %d from the "
					     "bounding set",
					     cap);
		}
	}
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return fk_fail_errno(err, errno, "--jail: clear the ambient capabilities");
	if (setgroups(0, NULL) < 0)
		return fk_fail_errno(err, errno, "--jail: drop the supplementary groups");
	if (setresgid(gid, gid, gid) < 0)
		return fk_fail_errno(err, errno, "--jail: switch to gid %u", (unsigned)gid);
	if (setresuid(uid, uid, uid) < 0)
		return fk_fail_errno(err, errno, "--jail: switch to uid %u", (unsigned)uid);
	/* setuid cleared effective and permitted; inheritable stays unless cleared. */
	ret = capset_zero();
	if (ret < 0)
		return fk_fail_errno(err, -ret, "--jail: clear the capability sets");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return fk_fail_errno(err, errno, "--jail: set no_new_privs");

	/* Trust, but check: the kernel's view must be all zero. */
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return fk_fail_errno(err, errno, "--jail: read the capability sets back");
	for (int i = 0; i < 2; i++)
		if (data[i].effective || data[i].permitted || data[i].inheritable)
			return fk_fail(err, EPERM, "--jail: capabilities remain after the drop");
	for (int c = 0; c < cap; c++)
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) != 0)
			return fk_fail(err, EPERM,
				       "--jail: capability %d remains in the bounding set", c);
	if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid)
		return fk_fail(err, EPERM, "--jail: still not uid %u gid %u after the switch",
			       (unsigned)uid, (unsigned)gid);
	return 0;
}

/* After the drop: everything the VM needs must be usable by the VM's ids. */
static int check_access(const struct jail_plan *plan, uid_t uid, struct fk_err *err)
{
	for (int i = 0; i < plan->nr_entries; i++) {
		const struct jail_entry *e = &plan->entries[i];
		int mode = e->kind == JAIL_DIR ? X_OK | (e->writable ? W_OK : R_OK)
					       : R_OK | (e->writable ? W_OK : 0);

		if (access(e->path, mode) == 0)
			continue;
		return fk_fail(err, EACCES,
			       "%s %s: not %s by uid %u in the jail (%s; give the VM's uid "
			       "access, e.g. chown it%s)",
			       e->option, e->path,
			       e->kind == JAIL_DIR
				   ? (e->writable ? "writable" : "readable")
				   : (e->writable ? "readable and writable" : "readable"),
			       (unsigned)uid, strerror(errno),
			       e->kind == JAIL_FILE && e->writable && !strcmp(e->option, "--disk")
				   ? ", or give the disk ,ro"
				   : "");
	}
	return 0;
}

int jail_enter(const struct vmm_config *cfg, struct fk_err *err)
{
	const char *dir = cfg->jail_dir;
	bool opens_tap_by_name = cfg->net_tap[0] && cfg->net_tap_fd < 0;
	char path[JAIL_PATH_MAX * 2], cwd[JAIL_PATH_MAX];
	struct jail_plan *plan;
	uid_t uid;
	gid_t gid;
	int ret;

	plan = malloc(sizeof(*plan)); /* 130 KiB: not for the stack */
	if (!plan)
		return fk_fail(err, ENOMEM, "--jail: out of memory");
	ret = jail_resolve_ids(cfg, &uid, &gid, err);
	if (!ret)
		ret = jail_plan_build(cfg, plan, err);
	if (ret < 0)
		goto out;
	if (geteuid() != 0) {
		ret = fk_fail(err, EPERM,
			      "--jail %s: forkd-vmm must start as root to build its jail (it then "
			      "runs as uid %u)",
			      dir, (unsigned)uid);
		goto out;
	}
	if (!getcwd(cwd, sizeof(cwd)))
		snprintf(cwd, sizeof(cwd), "/");
	ret = make_jail_dir(dir, err);
	if (ret < 0)
		goto out;
	/*
	 * No pid namespace: its init's death kills every process in it, and
	 * BRANCH children must outlive their source (docs/jail.md). A network
	 * namespace of its own (empty) unless the VM opens a tap by name
	 * (--net tap=), which lives in the namespace forkd-vmm was started in.
	 * A tap that came open (--net-policy: the broker's fd) works from any
	 * namespace, so that VMM gets an empty one too. vsock's host side is a
	 * Unix socket path, which crosses namespaces.
	 */
	if (unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS |
		    (opens_tap_by_name ? 0 : CLONE_NEWNET)) < 0) {
		ret =
		    fk_fail_errno(err, errno, "--jail %s: unshare the mount, ipc, uts%s namespaces",
				  dir, opens_tap_by_name ? "" : " and network");
		goto out;
	}
	/* Nothing we mount propagates back to the host, nor the host's to us. */
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount(dir, dir, NULL, MS_BIND, NULL) < 0) {
		ret = fk_fail_errno(err, errno, "--jail %s: make it a private mount", dir);
		goto out;
	}
	/*
	 * /tmp: where default branch and overlay directories go; on the host,
	 * DIR/tmp. First, so that host paths under /tmp are bound on top of it.
	 */
	snprintf(path, sizeof(path), "%s/tmp", dir);
	if (mkdir_p(path, 01777) < 0 || chmod(path, 01777) < 0 ||
	    mount(path, path, NULL, MS_BIND, NULL) < 0 ||
	    mount(NULL, path, NULL, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, NULL) < 0) {
		ret = fk_fail_errno(err, errno, "--jail: make %s", path);
		goto out;
	}
	for (int i = 0; i < plan->nr_entries; i++) {
		if (plan->entries[i].kind == JAIL_CHAR_DEV)
			continue;
		ret = bind_entry(dir, &plan->entries[i], err);
		if (ret < 0)
			goto out;
	}
	ret = make_dev(dir, plan, uid, gid, err);
	if (ret < 0)
		goto out;
	/* /proc for /proc/self/fd and meminfo; hidepid: the VM sees only its own uid's tasks. */
	snprintf(path, sizeof(path), "%s/proc", dir);
	if (mkdir_p(path, 0555) < 0 ||
	    mount("proc", path, "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2") < 0) {
		ret = fk_fail_errno(err, errno, "--jail: mount /proc at %s", path);
		goto out;
	}
	/* Relative paths in the command line resolve from the same directory inside. */
	if (jail_path(dir, cwd, path, sizeof(path)) == 0 && mkdir_p(path, 0755) < 0) {
		ret = fk_fail_errno(err, errno, "--jail: make the working directory %s", path);
		goto out;
	}
	if (chdir(dir) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
	    umount2(".", MNT_DETACH) < 0) {
		ret = fk_fail_errno(err, errno, "--jail %s: pivot_root into it", dir);
		goto out;
	}
	if (chdir(cwd) < 0 && chdir("/") < 0) {
		ret = fk_fail_errno(err, errno, "--jail: chdir inside the jail");
		goto out;
	}
	/* The jail's skeleton is read-only; only the bound writable paths and /tmp are not. */
	if (mount(NULL, "/", NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) <
	    0) {
		ret = fk_fail_errno(err, errno, "--jail: make the jail's root read-only");
		goto out;
	}
	if (sethostname(JAIL_HOSTNAME, strlen(JAIL_HOSTNAME)) < 0) {
		ret = fk_fail_errno(err, errno, "--jail: set the hostname");
		goto out;
	}
	setenv("TMPDIR", "/tmp", 1);
	ret = jail_drop_privileges(uid, gid, err);
	if (!ret)
		ret = check_access(plan, uid, err);
out:
	free(plan);
	return ret;
}
