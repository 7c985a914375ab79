/* SPDX-License-Identifier: MIT */
/*
 * forkd-init: PID 1 of the forkd initramfs. Mounts /proc, /sys and /dev,
 * loads the modules listed in /lib/modules/forkd.list (dependency order),
 * prints "READY uptime=<s>", runs the command from the kernel command line
 * (after " -- ", or forkd.cmd=) with /bin/sh -c, or an interactive shell if
 * there is none, reaps every orphan meanwhile, prints "EXIT status=<n>" and
 * powers the VM off. Static, so the initramfs needs no libc.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init_parse.h"

#define MODULE_LIST	  "/lib/modules/forkd.list"
#define CMDLINE_MAX	  4096
#define MODLIST_MAX	  (64 * 1024)
#define SHUTDOWN_GRACE_MS 1000

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
	};

	for (size_t i = 0; i < sizeof(mounts) / sizeof(mounts[0]); i++) {
		int ret = mount_one(mounts[i].source, mounts[i].target, mounts[i].type,
				    mounts[i].flags, mounts[i].data);
		if (ret < 0)
			say("forkd-init: mount %s on %s: %s", mounts[i].type, mounts[i].target,
			    strerror(-ret));
	}
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
	ioctl(STDIN_FILENO, TIOCSCTTY, 0); /* job control for an interactive shell */
	if (command)
		execve("/bin/sh", (char *const[]){"sh", "-c", (char *)command, NULL}, envp);
	else
		execve("/bin/sh", (char *const[]){"sh", NULL}, envp);
	say("forkd-init: exec /bin/sh: %s", strerror(errno));
	_exit(127);
}

/* Reaps every child until `child` ends (returns its wait status) or a shutdown
 * signal arrives (returns -EINTR). */
static int wait_for(pid_t child)
{
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, 0);

		if (pid == child)
			return status;
		if (pid < 0 && errno == EINTR && shutdown_signal)
			return -EINTR;
		if (pid < 0 && errno == ECHILD)
			return -ECHILD;
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

	print_ready();
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
