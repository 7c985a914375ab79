/* SPDX-License-Identifier: MIT */
/*
 * forkd-init: PID 1 of the forkd initramfs. Mounts /proc, /sys and /dev,
 * loads the modules listed in /lib/modules/forkd.list (dependency order),
 * prints "READY uptime=<s>", runs the command from the kernel command line
 * (after " -- ", or forkd.cmd=) with /bin/sh -c, or an interactive shell if
 * there is none, reaps every orphan meanwhile, prints "EXIT status=<n>" and
 * powers the VM off. Static, so the initramfs needs no libc.
 *
 * With forkd.root=/dev/vda (a disk holding an ext4 image from images/rootfs.sh)
 * it first makes that image the root, read-only under a tmpfs overlay (sized
 * by forkd.upper_size=, default 50% of RAM), so the agent and the command come
 * from the image; if that fails it says why and stays on the initramfs.
 *
 * With forkd.net=ADDR/PREFIX[,gw=GATEWAY] it brings up lo and eth0 with that
 * address and the default route through GATEWAY (docs/networking.md), with
 * ioctls, so an image needs no network tools; lo comes up in every case.
 *
 * With forkd.agent=1 on the command line it also starts the guest agent
 * (/usr/sbin/forkd-agent, docs/agent-protocol.md) before READY and starts
 * it again whenever it dies; without a command it then serves until the
 * agent or a signal asks for power-off or reboot.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init_parse.h"

#define MODULE_LIST	  "/lib/modules/forkd.list"
#define CMDLINE_MAX	  4096
#define MODLIST_MAX	  (64 * 1024)
#define SHUTDOWN_GRACE_MS 1000
#define AGENT_PATH	  "/usr/sbin/forkd-agent"
/* An agent that dies sooner than this after its start waits this long before the next. */
#define AGENT_RESTART_MS 1000

/* Booting into a root image (forkd.root=, docs/images.md): the image read-only
 * at LOWER_DIR, the writable layer in a tmpfs at UPPER_TMP, the overlay of both
 * at NEW_ROOT, which becomes /. LOWER_DIR and UPPER_TMP stay visible there. */
#define LOWER_DIR	   "/run/forkd/lower"
#define UPPER_TMP	   "/run/forkd/upper-tmp"
#define NEW_ROOT	   "/run/forkd/root"
#define UPPER_SIZE_DEFAULT "size=50%"
/* virtio-blk's device node may trail the module load by a moment. */
#define ROOT_WAIT_MS 3000

/* forkd.net= configures this interface (virtio-net's first device). */
#define NET_DEV "eth0"
/* The interface appears when virtio_net probes; that may trail the module load. */
#define NET_DEV_WAIT_MS 3000

/* Set by the signal handler, read by the main loop: the only way busybox
 * poweroff/reboot/halt (which signal PID 1) can reach us. */
static volatile sig_atomic_t shutdown_signal;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	/* One write per line, so lines from the init and its children do not interleave. */
	if (write(STDOUT_FILENO, line, (size_t)n) < 0)
		return;
}

static int mount_one(const char *source, const char *target, const char *type, unsigned long flags,
		     const char *data)
{
	if (mkdir(target, 0755) < 0 && errno != EEXIST)
		return -errno;
	if (mount(source, target, type, flags, data) < 0 && errno != EBUSY)
		return -errno;
	return 0;
}

static void mount_filesystems(void)
{
	static const struct {
		const char *source, *target, *type, *data;
		unsigned long flags;
	} mounts[] = {
	    {"proc", "/proc", "proc", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
	    {"sysfs", "/sys", "sysfs", NULL, MS_NOSUID | MS_NODEV | MS_NOEXEC},
	    {"devtmpfs", "/dev", "devtmpfs", "mode=0755", MS_NOSUID},
	    /* What programs in a sandbox expect of /dev: ptys, POSIX shared memory
	     * (Python's multiprocessing). They move with /dev into an image's root. */
	    {"devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620",
	     MS_NOSUID | MS_NOEXEC},
	    {"tmpfs", "/dev/shm", "tmpfs", "mode=1777", MS_NOSUID | MS_NODEV},
	};

	for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
		int ret = mount_one(mounts[i].source, mounts[i].target, mounts[i].type,
				    mounts[i].flags, mounts[i].data);
		if (ret < 0)
			say("forkd-init: mount %s on %s: %s", mounts[i].type, mounts[i].target,
			    strerror(-ret));
	}
	/* /dev/fd and friends, as udev would make them (bash process substitution needs them). */
	static const char *const links[][2] = {{"/proc/self/fd", "/dev/fd"},
					       {"/proc/self/fd/0", "/dev/stdin"},
					       {"/proc/self/fd/1", "/dev/stdout"},
					       {"/proc/self/fd/2", "/dev/stderr"}};
	for (size_t i = 0; i < sizeof(links) / sizeof(links[0]); i++)
		if (symlink(links[i][0], links[i][1]) < 0 && errno != EEXIST)
			say("forkd-init: symlink %s: %s", links[i][1], strerror(errno));
}

/* The kernel gives PID 1 /dev/console only if the initramfs has the node; ours
 * comes from devtmpfs, so open it now. */
static void open_console(void)
{
	static const char *const consoles[] = {"/dev/console", "/dev/ttyS0"};

	for (size_t i = 0; i < sizeof(consoles) / sizeof(consoles[0]); i++) {
		int fd = open(consoles[i], O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (fd < 0)
			continue;
		for (int target = 0; target <= 2; target++)
			dup2(fd, target);
		if (fd > 2)
			close(fd);
		return;
	}
}

/* Reads a small file into buf (NUL-terminated); returns its length or -errno. */
static ssize_t read_small_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t len = 0;

	if (fd < 0)
		return -errno;
	while (len < size - 1) {
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			close(fd);
			return -e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return (ssize_t)len;
}

static int load_module(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (fd < 0)
		return -errno;
	if (syscall(SYS_finit_module, fd, "", 0) < 0 && errno != EEXIST)
		ret = -errno;
	close(fd);
	return ret;
}

static void load_modules(void)
{
	static char list[MODLIST_MAX];
	char path[512];
	int loaded = 0, failed = 0, ret;

	ssize_t len = read_small_file(MODULE_LIST, list, sizeof(list));
	if (len < 0) {
		if (len != -ENOENT)
			say("forkd-init: %s: %s", MODULE_LIST, strerror((int)-len));
		return;
	}
	const char *cursor = list;
	while ((ret = init_modlist_next(&cursor, path, sizeof(path))) != 0) {
		if (ret < 0) {
			say("forkd-init: %s: a line is longer than %zu bytes", MODULE_LIST,
			    sizeof(path) - 1);
			failed++;
			continue;
		}
		ret = load_module(path);
		if (ret < 0) {
			say("forkd-init: module %s: %s", path, strerror(-ret));
			failed++;
		} else {
			loaded++;
		}
	}
	say("forkd-init: %d modules loaded, %d failed", loaded, failed);
}

/* mkdir -p: each missing component of path (absolute), mode 0755. */
static int make_dirs(const char *path)
{
	char buf[256];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, len + 1);
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = saved;
		if (!saved)
			return 0;
	}
}

static void print_ready(void)
{
	char text[128], uptime[64];

	if (read_small_file("/proc/uptime", text, sizeof(text)) < 0 ||
	    init_parse_uptime(text, uptime, sizeof(uptime)) < 0)
		snprintf(uptime, sizeof(uptime), "unknown");
	say("READY uptime=%s", uptime);
}

static void on_shutdown_signal(int sig)
{
	shutdown_signal = sig;
}

static void set_signal_handlers(void (*handler)(int))
{
	static const int signals[] = {SIGUSR1, SIGUSR2, SIGTERM};
	struct sigaction sa = {.sa_handler = handler};

	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
		sigaction(signals[i], &sa, NULL);
}

static pid_t start_command(const char *command)
{
	static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root",
				     "TERM=linux", NULL};
	pid_t pid = fork();

	if (pid != 0)
		return pid;
	set_signal_handlers(SIG_DFL);
	setsid();
	/*
	 * Only an interactive shell gets the console as its controlling tty (job
	 * control): when a controlling process exits, the kernel hangs the tty up
	 * and drops output still queued in the UART, which lost a command's last
	 * lines in slow (nested) guests.
	 */
	if (!command)
		ioctl(STDIN_FILENO, TIOCSCTTY, 0);
	if (command)
		execve("/bin/sh", (char *const[]){"sh", "-c", (char *)command, NULL}, envp);
	else
		execve("/bin/sh", (char *const[]){"sh", NULL}, envp);
	say("forkd-init: exec /bin/sh: %s", strerror(errno));
	_exit(127);
}

/* The agent's pid, or 0 when no agent is wanted; PID 1's own bookkeeping. */
static pid_t agent_pid;
static struct timespec agent_started;

static void sleep_ms(long ms);

static void start_agent(void)
{
	static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", NULL};
	pid_t pid;

	clock_gettime(CLOCK_MONOTONIC, &agent_started);
	pid = fork();
	if (pid < 0) {
		say("forkd-init: fork for %s: %s", AGENT_PATH, strerror(errno));
		agent_pid = -1;
		return;
	}
	if (pid == 0) {
		set_signal_handlers(SIG_DFL);
		setsid();
		execve(AGENT_PATH, (char *const[]){AGENT_PATH, NULL}, envp);
		say("forkd-init: exec %s: %s", AGENT_PATH, strerror(errno));
		_exit(127);
	}
	agent_pid = pid;
}

/* The agent ended: say how, and start it again (not faster than once a second). */
static void restart_agent(int status)
{
	struct timespec now;
	long ran_ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ran_ms = (now.tv_sec - agent_started.tv_sec) * 1000 +
		 (now.tv_nsec - agent_started.tv_nsec) / 1000000;
	say("forkd-init: forkd-agent ended (status %d) after %ld ms; starting it again",
	    init_exit_code(status), ran_ms);
	if (ran_ms < AGENT_RESTART_MS)
		sleep_ms(AGENT_RESTART_MS - ran_ms);
	start_agent();
}

/* Reaps every child until `child` ends (returns its wait status) or a shutdown
 * signal arrives (returns -EINTR); child -1 waits for the signal only. The
 * agent is started again whenever it ends. */
static int wait_for(pid_t child)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid > 0 && pid == child)
			return status;
		if (pid > 0 && pid == agent_pid && !shutdown_signal)
			restart_agent(status);
		if (pid < 0 && errno == EINTR && shutdown_signal)
			return -EINTR;
		if (pid < 0 && errno == ECHILD) {
			if (child > 0 || agent_pid <= 0)
				return -ECHILD;
			/* The agent could not even be forked: try again later. */
			sleep_ms(AGENT_RESTART_MS);
			start_agent();
		}
	}
}

static void reap_all(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

/* Waits up to ROOT_WAIT_MS for dev to appear; 0 if it is a block device, else -errno. */
static int wait_for_block_device(const char *dev)
{
	struct stat st;

	for (int waited = 0;; waited += 50) {
		if (stat(dev, &st) == 0)
			return S_ISBLK(st.st_mode) ? 0 : -ENOTBLK;
		if (errno != ENOENT || waited >= ROOT_WAIT_MS)
			return -errno;
		sleep_ms(50);
	}
}

/* 0 if dev starts with an ext2/3/4 superblock, -EINVAL if not, -errno if unreadable. */
static int check_ext_magic(const char *dev)
{
	unsigned char head[INIT_EXT_MAGIC_OFFSET + 2];
	int fd = open(dev, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	int e;

	if (fd < 0)
		return -errno;
	n = pread(fd, head, sizeof(head), 0);
	e = errno;
	close(fd);
	if (n < 0)
		return -e;
	return init_has_ext_magic(head, (size_t)n) ? 0 : -EINVAL;
}

/*
 * Empties the initramfs after the switch (as util-linux's switch_root does) so
 * its files stop holding guest RAM: everything under dir_fd on device dev,
 * never crossing into another file system. Best effort; closes dir_fd.
 */
static void delete_tree(int dir_fd, dev_t dev)
{
	DIR *dir = fdopendir(dir_fd);
	struct dirent *d;

	if (!dir) {
		close(dir_fd);
		return;
	}
	while ((d = readdir(dir)) != NULL) {
		struct stat st;

		if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
			continue;
		if (fstatat(dir_fd, d->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || st.st_dev != dev)
			continue;
		if (S_ISDIR(st.st_mode)) {
			int fd = openat(dir_fd, d->d_name,
					O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (fd >= 0)
				delete_tree(fd, dev);
			unlinkat(dir_fd, d->d_name, AT_REMOVEDIR);
		} else {
			unlinkat(dir_fd, d->d_name, 0);
		}
	}
	closedir(dir);
}

/* Mounts moved from the initramfs into the new root, in order (undone in reverse). */
static const char *const moved_mounts[][2] = {
    {"/dev", NEW_ROOT "/dev"},	     {"/proc", NEW_ROOT "/proc"},     {"/sys", NEW_ROOT "/sys"},
    {LOWER_DIR, NEW_ROOT LOWER_DIR}, {UPPER_TMP, NEW_ROOT UPPER_TMP},
};

/*
 * forkd.root=DEV: mounts DEV (ext4) read-only, a tmpfs for the writable layer
 * (forkd.upper_size=, default half the RAM), overlayfs of both, moves /dev,
 * /proc and /sys over and makes the overlay / (chdir, move to /, chroot).
 * The writable layer lives in guest RAM so that a BRANCH child gets its own
 * copy-on-write copy of it with the rest of memory (docs/design/decisions.md).
 * Returns 0 when switched, 1 when no root was asked for, -errno after one
 * "forkd-init:" line when it failed and everything was undone: the VM then
 * comes up on the initramfs.
 */
static int switch_to_image(const char *cmdline)
{
	char dev[128], size_value[64], size_opt[80] = UPPER_SIZE_DEFAULT, overlay_opts[256];
	const char *step;
	int ret, lower_mounted = 0, upper_mounted = 0, overlay_mounted = 0, old_root = -1;
	size_t nr_moved = 0;
	struct statfs sfs;
	struct stat root_st;

	ret = init_cmdline_value(cmdline, "forkd.root", dev, sizeof(dev));
	if (ret == 0)
		return 1;
	if (ret < 0 || init_root_device_valid(dev) < 0) {
		say("forkd-init: forkd.root=%s: expected a block device such as /dev/vda; staying "
		    "on "
		    "the initramfs",
		    ret < 0 ? "(too long)" : dev);
		return -EINVAL;
	}
	ret = init_cmdline_value(cmdline, "forkd.upper_size", size_value, sizeof(size_value));
	if (ret != 0 &&
	    (ret < 0 || init_tmpfs_size_option(size_value, size_opt, sizeof(size_opt)) < 0)) {
		say("forkd-init: forkd.upper_size=%s: expected 1%% to 100%% (of RAM) or a size of "
		    "at "
		    "least 1M such as 512M; using 50%%",
		    ret < 0 ? "(too long)" : size_value);
		snprintf(size_opt, sizeof(size_opt), "%s", UPPER_SIZE_DEFAULT);
	}

	ret = wait_for_block_device(dev);
	if (ret < 0) {
		say("forkd-init: forkd.root=%s: %s (attach the image with forkd-vmm --disk "
		    "PATH,ro); staying on the initramfs",
		    dev, ret == -ENOTBLK ? "not a block device" : strerror(-ret));
		return ret;
	}
	ret = check_ext_magic(dev);
	if (ret < 0) {
		say("forkd-init: forkd.root=%s: %s; staying on the initramfs", dev,
		    ret == -EINVAL ? "not an ext4 file system (no ext2/3/4 magic at byte 1080)"
				   : strerror(-ret));
		return ret;
	}

	step = "creating " LOWER_DIR ", " UPPER_TMP " and " NEW_ROOT;
	if ((ret = make_dirs(LOWER_DIR)) < 0 || (ret = make_dirs(UPPER_TMP)) < 0 ||
	    (ret = make_dirs(NEW_ROOT)) < 0)
		goto undo;
	step = "mounting it (ext4, read-only) on " LOWER_DIR;
	if (mount(dev, LOWER_DIR, "ext4", MS_RDONLY, NULL) < 0) {
		ret = -errno;
		goto undo;
	}
	lower_mounted = 1;
	/* No nosuid/nodev: the overlay passes its upper layer's mount flags on. */
	char tmpfs_opts[128];
	snprintf(tmpfs_opts, sizeof(tmpfs_opts), "%s,mode=0755", size_opt);
	step = "mounting the tmpfs for the writable layer on " UPPER_TMP;
	if (mount("tmpfs", UPPER_TMP, "tmpfs", 0, tmpfs_opts) < 0) {
		ret = -errno;
		goto undo;
	}
	upper_mounted = 1;
	step = "creating " UPPER_TMP "/upper and /work";
	if ((ret = make_dirs(UPPER_TMP "/upper")) < 0 || (ret = make_dirs(UPPER_TMP "/work")) < 0)
		goto undo;
	step = "mounting overlayfs on " NEW_ROOT;
	ret = init_overlay_options(LOWER_DIR, UPPER_TMP "/upper", UPPER_TMP "/work", overlay_opts,
				   sizeof(overlay_opts));
	if (ret < 0)
		goto undo;
	if (mount("overlay", NEW_ROOT, "overlay", 0, overlay_opts) < 0) {
		ret = -errno;
		goto undo;
	}
	overlay_mounted = 1;

	for (; nr_moved < sizeof(moved_mounts) / sizeof(moved_mounts[0]); nr_moved++) {
		step = moved_mounts[nr_moved][0];
		if ((ret = make_dirs(moved_mounts[nr_moved][1])) < 0)
			goto undo;
		if (mount(moved_mounts[nr_moved][0], moved_mounts[nr_moved][1], NULL, MS_MOVE,
			  NULL) < 0) {
			ret = -errno;
			goto undo;
		}
	}

	/* Kept to empty the initramfs once it is no longer reachable by path. */
	old_root = open("/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	step = "making the overlay the root (mount --move to /, chroot)";
	if (chdir(NEW_ROOT) < 0 || mount(".", "/", NULL, MS_MOVE, NULL) < 0) {
		ret = -errno;
		/* Back to where relative paths meant what they did (/ cannot fail). */
		(void)!chdir("/");
		goto undo;
	}
	if (chroot(".") < 0 || chdir("/") < 0) {
		/* The overlay is already over /: there is no way back, but it works as it is. */
		say("forkd-init: chroot into the overlay: %s", strerror(errno));
	}
	if (old_root >= 0 && fstatfs(old_root, &sfs) == 0 &&
	    (sfs.f_type == RAMFS_MAGIC || sfs.f_type == TMPFS_MAGIC) &&
	    fstat(old_root, &root_st) == 0)
		delete_tree(old_root, root_st.st_dev); /* closes it */
	else if (old_root >= 0)
		close(old_root);
	say("forkd-init: root is %s (ext4, read-only) under a tmpfs overlay (%s)", dev, size_opt);
	return 0;

undo:
	if (old_root >= 0)
		close(old_root);
	while (nr_moved > 0) {
		nr_moved--;
		if (mount(moved_mounts[nr_moved][1], moved_mounts[nr_moved][0], NULL, MS_MOVE,
			  NULL) < 0)
			say("forkd-init: moving %s back: %s", moved_mounts[nr_moved][0],
			    strerror(errno));
	}
	if (overlay_mounted)
		umount2(NEW_ROOT, MNT_DETACH);
	if (upper_mounted)
		umount2(UPPER_TMP, MNT_DETACH);
	if (lower_mounted)
		umount2(LOWER_DIR, MNT_DETACH);
	say("forkd-init: forkd.root=%s: %s: %s; staying on the initramfs", dev, step,
	    strerror(-ret));
	return ret;
}

static void set_sockaddr(struct sockaddr *sa, uint32_t host_order_addr)
{
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(host_order_addr)};

	memcpy(sa, &sin, sizeof(sin));
}

/* Sets IFF_UP on name; 0 or -errno. */
static int link_up(int sock, const char *name)
{
	struct ifreq ifr = {0};

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	if (ioctl(sock, SIOCGIFFLAGS, &ifr) < 0)
		return -errno;
	ifr.ifr_flags |= IFF_UP;
	return ioctl(sock, SIOCSIFFLAGS, &ifr) < 0 ? -errno : 0;
}

/* Address, netmask, up, default route: each step's failure says which. */
static int configure_interface(int sock, const struct init_net *net, const char **step)
{
	struct ifreq ifr = {0};
	struct rtentry route = {0};
	uint32_t mask = net->prefix == 32 ? 0xffffffffu : ~(0xffffffffu >> net->prefix);

	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", NET_DEV);
	*step = "set the address (SIOCSIFADDR)";
	set_sockaddr(&ifr.ifr_addr, net->addr);
	if (ioctl(sock, SIOCSIFADDR, &ifr) < 0)
		return -errno;
	*step = "set the netmask (SIOCSIFNETMASK)";
	set_sockaddr(&ifr.ifr_netmask, mask);
	if (ioctl(sock, SIOCSIFNETMASK, &ifr) < 0)
		return -errno;
	*step = "bring it up";
	int ret = link_up(sock, NET_DEV);
	if (ret < 0 || !net->has_gateway)
		return ret;
	*step = "add the default route (SIOCADDRT)";
	set_sockaddr(&route.rt_dst, 0);
	set_sockaddr(&route.rt_genmask, 0);
	set_sockaddr(&route.rt_gateway, net->gateway);
	route.rt_flags = RTF_UP | RTF_GATEWAY;
	return ioctl(sock, SIOCADDRT, &route) < 0 ? -errno : 0;
}

/*
 * lo always; eth0 from forkd.net= when given. Before the agent and the
 * command, so both start with the network up. A failure is said and the
 * boot goes on without the network (the guest can still be reached over
 * vsock to find out why).
 */
static void set_up_network(const char *cmdline)
{
	char value[128];
	struct init_net net;
	const char *why = NULL, *step = "";
	int sock, ret;

	sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (sock < 0) {
		say("forkd-init: network: socket: %s", strerror(errno));
		return;
	}
	ret = link_up(sock, "lo");
	if (ret < 0)
		say("forkd-init: network: bring up lo: %s", strerror(-ret));
	ret = init_cmdline_value(cmdline, "forkd.net", value, sizeof(value));
	if (ret == 0)
		goto out;
	if (ret < 0) {
		say("forkd-init: forkd.net=: too long (at most %zu characters); no network",
		    sizeof(value) - 1);
		goto out;
	}
	if (init_net_parse(value, &net, &why) < 0) {
		say("forkd-init: forkd.net=%s: %s; no network", value, why);
		goto out;
	}
	for (int waited = 0; !if_nametoindex(NET_DEV); waited += 50) {
		if (waited >= NET_DEV_WAIT_MS) {
			say("forkd-init: forkd.net=%s: no %s after %d ms (does the VM have a "
			    "virtio-net device: forkd-vmm --net or --net-policy host|nat?)",
			    value, NET_DEV, NET_DEV_WAIT_MS);
			goto out;
		}
		sleep_ms(50);
	}
	ret = configure_interface(sock, &net, &step);
	if (ret < 0)
		say("forkd-init: forkd.net=%s: %s: %s", value, step, strerror(-ret));
out:
	close(sock);
}

/* Everyone else gets SIGTERM and a grace period, then SIGKILL; then the VM goes down. */
static void __attribute__((noreturn)) shut_down(int how)
{
	kill(-1, SIGTERM);
	for (int waited = 0; waited < SHUTDOWN_GRACE_MS; waited += 50) {
		reap_all();
		if (waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD)
			break;
		sleep_ms(50);
	}
	kill(-1, SIGKILL);
	reap_all();
	sync();
	reboot(how);
	say("forkd-init: reboot: %s", strerror(errno));
	/* PID 1 must never exit: the kernel would panic. */
	for (;;) {
		pause();
		reap_all();
	}
}

/*
 * forkd.hostname=NAME, else "forkd-" and 12 random hex digits: a booted VM has a name of its
 * own from the start (a BRANCH child's agent renames it, docs/agent-protocol.md), not the
 * kernel's "(none)".
 */
static void set_hostname(const char *cmdline)
{
	char name[80];
	int has = init_cmdline_value(cmdline, "forkd.hostname", name, sizeof(name));

	if (has > 0 && init_hostname_valid(name) < 0) {
		say("forkd-init: forkd.hostname=%s: expected 1 to 63 letters, digits or '-' (not "
		    "first or last); using a generated name",
		    name);
		has = 0;
	} else if (has < 0) {
		say("forkd-init: forkd.hostname: longer than 63 characters; using a generated "
		    "name");
	}
	if (has <= 0) {
		/* The kernel's random boot id: getrandom could block this early in boot. */
		char id[64];
		size_t used = 0;

		strcpy(name, "forkd-");
		if (read_small_file("/proc/sys/kernel/random/boot_id", id, sizeof(id)) < 0)
			snprintf(id, sizeof(id), "%lx", (unsigned long)time(NULL));
		for (const char *p = id; *p && used < 12; p++)
			if (isxdigit((unsigned char)*p))
				name[6 + used++] = *p;
		name[6 + used] = '\0';
	}
	if (sethostname(name, strlen(name)) < 0)
		say("forkd-init: sethostname %s: %s", name, strerror(errno));
}

int main(void)
{
	static char cmdline[CMDLINE_MAX], command[CMDLINE_MAX];
	int how = RB_POWER_OFF;

	if (getpid() != 1) {
		fprintf(stderr, "forkd-init: must run as PID 1 (the initramfs /init)\n");
		return 1;
	}
	umask(022);
	mount_filesystems();
	open_console();
	set_signal_handlers(on_shutdown_signal);
	load_modules();

	int has_command = 0;
	ssize_t len = read_small_file("/proc/cmdline", cmdline, sizeof(cmdline));
	if (len < 0)
		say("forkd-init: /proc/cmdline: %s", strerror((int)-len));
	else
		has_command = init_cmdline_command(cmdline, command, sizeof(command));
	if (has_command < 0)
		say("forkd-init: the command on the kernel command line is too long");
	/* Before the agent and the command: both come from the image when there is one. */
	if (len >= 0)
		switch_to_image(cmdline);

	set_up_network(len < 0 ? "" : cmdline);
	set_hostname(len < 0 ? "" : cmdline);

	int want_agent = len < 0 ? 0 : init_cmdline_flag(cmdline, "forkd.agent");
	if (want_agent < 0)
		say("forkd-init: forkd.agent: expected 1, on, yes, 0, off or no; not starting the "
		    "agent");
	if (want_agent > 0)
		start_agent();

	print_ready();
	if (want_agent > 0 && has_command <= 0) {
		/* A sandbox: serve until asked to go down. */
		int status = wait_for(-1);
		if (status == -EINTR && shutdown_signal == SIGTERM)
			how = RB_AUTOBOOT;
		say("forkd-init: %s requested by signal %d",
		    how == RB_AUTOBOOT ? "reboot" : "power-off", (int)shutdown_signal);
		shut_down(how);
	}
	pid_t child = start_command(has_command > 0 ? command : NULL);
	if (child < 0) {
		say("forkd-init: fork: %s", strerror(errno));
		say("EXIT status=127");
		shut_down(how);
	}
	int status = wait_for(child);
	if (status >= 0) {
		say("EXIT status=%d", init_exit_code(status));
	} else if (status == -EINTR) {
		say("forkd-init: %s requested by signal %d",
		    shutdown_signal == SIGTERM ? "reboot" : "power-off", (int)shutdown_signal);
		if (shutdown_signal == SIGTERM)
			how = RB_AUTOBOOT;
	} else {
		say("EXIT status=127");
	}
	shut_down(how);
}
