/* SPDX-License-Identifier: MIT */
/* forkd-vmm's seccomp allow-lists per thread role: see seccomp.h and docs/seccomp.md. */
#include "jail/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <linux/filter.h>
#include <linux/fs.h>
#include <linux/kvm.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <linux/if_tun.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <unistd.h>

/* Syscall numbers the SIGSYS line can name; x86-64 has fewer than this. */
#define NAMED_SYSCALLS 512
/* glibc's fork(): a new process, not a thread. */
#define FORK_CLONE_FLAGS (CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD)
#define IOCTL_CMD_MASK	 0xffffffffULL /* the kernel takes the request as an unsigned int */

/*
 * Process-wide seccomp state. Written only by fk_seccomp_install_process,
 * on the main thread before it creates any other thread, and read-only
 * afterwards (the SIGSYS handler reads it): a BRANCH child inherits it by
 * fork, which is what tells it that its filter is already in place.
 */
static struct {
	bool active; /* this process runs under its filter */
	struct sock_fprog progs[FK_SECCOMP_NR_ROLES];
	const char *names[NAMED_SYSCALLS];
} installed;

/* The calling thread's role, for the SIGSYS line (a fork keeps the forking thread's). */
static __thread enum fk_seccomp_role thread_role = FK_SECCOMP_ROLE_MAIN;

int fk_seccomp_parse_mode(const char *s, enum fk_seccomp_mode *out)
{
	if (strcmp(s, "on") == 0)
		*out = FK_SECCOMP_ON;
	else if (strcmp(s, "off") == 0)
		*out = FK_SECCOMP_OFF;
	else if (strcmp(s, "log") == 0)
		*out = FK_SECCOMP_LOG;
	else
		return -EINVAL;
	return 0;
}

const char *fk_seccomp_mode_name(enum fk_seccomp_mode mode)
{
	switch (mode) {
	case FK_SECCOMP_ON:
		return "on";
	case FK_SECCOMP_OFF:
		return "off";
	case FK_SECCOMP_LOG:
		return "log";
	}
	return "?";
}

const char *fk_seccomp_role_name(enum fk_seccomp_role role)
{
	switch (role) {
	case FK_SECCOMP_ROLE_MAIN:
		return "main";
	case FK_SECCOMP_ROLE_VCPU:
		return "vcpu";
	case FK_SECCOMP_ROLE_HELPER:
		return "helper";
	case FK_SECCOMP_NR_ROLES:
		break;
	}
	return "?";
}

/* ---- the lists ---- */

/* Every thread: memory, locks, time, its own exit, and I/O on descriptors it was given. */
static const int common_syscalls[] = {
    SCMP_SYS(read),
    SCMP_SYS(write),
    SCMP_SYS(readv),
    SCMP_SYS(writev),
    SCMP_SYS(pread64),
    SCMP_SYS(pwrite64),
    SCMP_SYS(preadv),
    SCMP_SYS(pwritev),
    SCMP_SYS(lseek),
    SCMP_SYS(close),
    SCMP_SYS(fstat),
    SCMP_SYS(newfstatat),
    SCMP_SYS(futex),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(exit),
    SCMP_SYS(exit_group),
    SCMP_SYS(restart_syscall),
    SCMP_SYS(madvise),
    SCMP_SYS(munmap),
    SCMP_SYS(brk),
    SCMP_SYS(mremap),
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(nanosleep),
    SCMP_SYS(gettid),
    SCMP_SYS(getpid),
    SCMP_SYS(sched_yield),
    SCMP_SYS(getrandom),
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(rseq),
    SCMP_SYS(set_robust_list),
    SCMP_SYS(fdatasync),
    SCMP_SYS(fsync),
    SCMP_SYS(copy_file_range),
    SCMP_SYS(fallocate),
    SCMP_SYS(sendto),
    SCMP_SYS(recvfrom),
    SCMP_SYS(sendmsg),
    SCMP_SYS(recvmsg),
    SCMP_SYS(shutdown),
    SCMP_SYS(getsockopt),
    SCMP_SYS(sched_getaffinity),
};

/* vCPU threads: the exits they dispatch reach the devices (a queue notify, a UART line). */
static const unsigned long vcpu_ioctls[] = {
    KVM_RUN,
    KVM_GET_REGS,
    KVM_IRQ_LINE,
    KVM_IRQ_LINE_STATUS,
    KVM_SIGNAL_MSI,
    /* virtio-net: the guest's feature and status writes are MMIO exits that set the tap's offloads
     */
    TUNSETOFFLOAD,
};

/* Helpers: connecting to the guest agent's socket (fork notification). */
static const int helper_syscalls[] = {
    SCMP_SYS(connect),
    SCMP_SYS(setsockopt),
    SCMP_SYS(fcntl),
};

/*
 * The main thread, the zygote and BRANCH children: the event loop, the
 * control socket, snapshots, branching, and building a child VM (opening
 * /dev/kvm, its KVM VM, vCPUs, devices, control and vsock sockets).
 */
static const int main_syscalls[] = {
    SCMP_SYS(openat),
    SCMP_SYS(open),
    SCMP_SYS(access),
    SCMP_SYS(faccessat),
    SCMP_SYS(faccessat2),
    SCMP_SYS(readlink),
    SCMP_SYS(readlinkat),
    SCMP_SYS(statfs),
    SCMP_SYS(fstatfs),
    SCMP_SYS(statx),
    SCMP_SYS(getdents64),
    SCMP_SYS(mkdir),
    SCMP_SYS(mkdirat),
    SCMP_SYS(mknodat),
    SCMP_SYS(mknod),
    SCMP_SYS(unlink),
    SCMP_SYS(unlinkat),
    SCMP_SYS(rmdir),
    SCMP_SYS(rename),
    SCMP_SYS(renameat),
    SCMP_SYS(renameat2),
    SCMP_SYS(ftruncate),
    SCMP_SYS(fchmod),
    SCMP_SYS(sync_file_range),
    SCMP_SYS(fcntl),
    SCMP_SYS(dup),
    SCMP_SYS(dup2),
    SCMP_SYS(dup3),
    SCMP_SYS(pipe2),
    SCMP_SYS(eventfd2),
    SCMP_SYS(signalfd4),
    SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(accept4),
    SCMP_SYS(bind),
    SCMP_SYS(listen),
    SCMP_SYS(connect),
    SCMP_SYS(setsockopt),
    SCMP_SYS(getsockname),
    SCMP_SYS(getpeername),
    SCMP_SYS(wait4),
    SCMP_SYS(waitid),
    SCMP_SYS(kill),
    SCMP_SYS(tgkill),
    SCMP_SYS(pidfd_open),
    SCMP_SYS(getppid),
    SCMP_SYS(getuid),
    SCMP_SYS(geteuid),
    SCMP_SYS(getgid),
    SCMP_SYS(getegid),
    SCMP_SYS(uname),
    SCMP_SYS(sysinfo),
    SCMP_SYS(prlimit64),
    SCMP_SYS(getrlimit),
    SCMP_SYS(sigaltstack),
    SCMP_SYS(set_tid_address),
    /* Only adds filters: a thread's own role, at its start. */
    SCMP_SYS(seccomp),
    /*
     * the uffd-wp live snapshot's userfaultfd (src/uffd/uffd_live.c): KVM's
     * accesses are kernel-mode faults, so not only UFFD_USER_MODE_ONLY ones
     */
    SCMP_SYS(userfaultfd),
};

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
/* PAGEMAP_SCAN (Linux 6.7), newer than these headers: _IOWR('f', 16, struct pm_scan_arg). */
#define LIVE_ASYNC_PAGEMAP_SCAN _IOC(_IOC_READ | _IOC_WRITE, 'f', 16, 12 * sizeof(uint64_t))

static const unsigned long main_ioctls[] = {
    /* the VM and its vCPUs, created and restored (BRANCH children, --restore) */
    KVM_GET_API_VERSION,
    KVM_CREATE_VM,
    KVM_CHECK_EXTENSION,
    KVM_GET_VCPU_MMAP_SIZE,
    KVM_GET_SUPPORTED_CPUID,
    KVM_GET_MSR_INDEX_LIST,
    KVM_CREATE_VCPU,
    KVM_SET_USER_MEMORY_REGION,
    /* diff snapshots: the dirty log, read and reset in the pause (src/state/diff_track.c) */
    KVM_GET_DIRTY_LOG,
    KVM_SET_TSS_ADDR,
    KVM_SET_IDENTITY_MAP_ADDR,
    KVM_CREATE_IRQCHIP,
    KVM_CREATE_PIT2,
    KVM_IRQFD,
    KVM_IOEVENTFD,
    KVM_IRQ_LINE,
    KVM_IRQ_LINE_STATUS,
    KVM_SIGNAL_MSI,
    KVM_GET_TSC_KHZ,
    KVM_SET_TSC_KHZ,
    KVM_RUN,
    /* state: snapshot, BRANCH capture, restore */
    KVM_GET_REGS,
    KVM_SET_REGS,
    KVM_GET_SREGS,
    KVM_SET_SREGS,
    KVM_GET_MSRS,
    KVM_SET_MSRS,
    KVM_SET_CPUID2,
    KVM_GET_LAPIC,
    KVM_SET_LAPIC,
    KVM_GET_MP_STATE,
    KVM_SET_MP_STATE,
    KVM_GET_VCPU_EVENTS,
    KVM_SET_VCPU_EVENTS,
    KVM_GET_DEBUGREGS,
    KVM_SET_DEBUGREGS,
    KVM_GET_XSAVE,
    KVM_GET_XSAVE2,
    KVM_SET_XSAVE,
    KVM_GET_XCRS,
    KVM_SET_XCRS,
    KVM_GET_IRQCHIP,
    KVM_SET_IRQCHIP,
    KVM_GET_PIT2,
    KVM_SET_PIT2,
    KVM_GET_CLOCK,
    KVM_SET_CLOCK,
    KVM_KVMCLOCK_CTRL,
    /* disks: reflinked copies, block-device sizes; stdio asks whether stdout is a tty */
    FICLONE,
    BLKGETSIZE64,
    TCGETS,
    FIONBIO,
    FIONREAD,
    /*
     * virtio-net's tap (src/devices/tap.c): opened by name (a BRANCH child's
     * net-attach, a restore) and its offloads set when the guest negotiates
     * them, both after the filters are on.
     */
    TUNSETIFF,
    TUNSETVNETHDRSZ,
    TUNSETOFFLOAD,
    /*
     * Live snapshots: engine uffd-wp (src/uffd/uffd_live.c: arm, copy,
     * un-protect; a kernel-mode userfaultfd, allowed above) and engine
     * uffd-wp-async (src/state/live_async.c): a user-mode-only userfaultfd
     * with WP_ASYNC, and PAGEMAP_SCAN on /proc/self/pagemap, set up when the
     * snapshot is asked for.
     */
    UFFDIO_API,
    UFFDIO_REGISTER,
    UFFDIO_UNREGISTER,
    UFFDIO_WRITEPROTECT,
    /* uffd-wp's children served before the copy completes: fill their pages */
    UFFDIO_COPY,
    UFFDIO_ZEROPAGE,
    UFFDIO_WAKE,
    LIVE_ASYNC_PAGEMAP_SCAN,
};

static const int main_prctls[] = {
    PR_SET_NAME, PR_GET_NAME, PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS,
};

static int add_rule(scmp_filter_ctx ctx, int nr, unsigned nargs, const struct scmp_arg_cmp *args,
		    struct fk_err *err)
{
	int r = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, nargs, args);
	char *name;

	/* -EEXIST: the same unconditional rule twice (e.g. a sanitizer extra). */
	if (r == 0 || r == -EEXIST)
		return 0;
	name = seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	r = fk_fail(err, -r, "seccomp: cannot allow syscall %s (nr %d): %s", name ? name : "?", nr,
		    strerror(-r));
	free(name);
	return r;
}

static int allow_all(scmp_filter_ctx ctx, const int *nrs, size_t n, struct fk_err *err)
{
	for (size_t i = 0; i < n; i++) {
		int r = add_rule(ctx, nrs[i], 0, NULL, err);
		if (r < 0)
			return r;
	}
	return 0;
}

static int allow_ioctls(scmp_filter_ctx ctx, const unsigned long *reqs, size_t n,
			struct fk_err *err)
{
	for (size_t i = 0; i < n; i++) {
		struct scmp_arg_cmp a = SCMP_A1(SCMP_CMP_MASKED_EQ, IOCTL_CMD_MASK, reqs[i]);
		int r = add_rule(ctx, SCMP_SYS(ioctl), 1, &a, err);
		if (r < 0)
			return r;
	}
	return 0;
}

/* mmap and mprotect without PROT_EXEC: no new code in this process. */
static int allow_memory(scmp_filter_ctx ctx, struct fk_err *err)
{
	struct scmp_arg_cmp no_exec = SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0);
	int r = add_rule(ctx, SCMP_SYS(mmap), 1, &no_exec, err);

	return r < 0 ? r : add_rule(ctx, SCMP_SYS(mprotect), 1, &no_exec, err);
}

/*
 * Under AddressSanitizer (the sanitized VMM the tests also run) the leak
 * check at exit stops the world: a tracer task cloned without CLONE_THREAD
 * ptrace-attaches every thread. Only sanitized builds allow this.
 */
#ifdef __SANITIZE_ADDRESS__
#define LSAN_TRACER_CLONE_FLAGS (CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_UNTRACED)
#ifndef PR_SET_PTRACER
#define PR_SET_PTRACER 0x59616d61
#endif
static const int sanitizer_syscalls[] = {
    SCMP_SYS(ptrace),	  SCMP_SYS(sigaltstack), SCMP_SYS(getdents),
    SCMP_SYS(getdents64), SCMP_SYS(wait4),	 SCMP_SYS(waitid),
    SCMP_SYS(readlink),	  SCMP_SYS(getppid),	 SCMP_SYS(prlimit64),
};
static const int sanitizer_prctls[] = {
    PR_GET_DUMPABLE,
    PR_SET_DUMPABLE,
    PR_SET_PTRACER,
    PR_SET_PDEATHSIG,
};

static int add_sanitizer_rules(scmp_filter_ctx ctx, struct fk_err *err)
{
	struct scmp_arg_cmp a = SCMP_A0(SCMP_CMP_EQ, LSAN_TRACER_CLONE_FLAGS);
	int r = allow_all(ctx, sanitizer_syscalls,
			  sizeof(sanitizer_syscalls) / sizeof(sanitizer_syscalls[0]), err);

	if (!r)
		r = add_rule(ctx, SCMP_SYS(clone), 1, &a, err);
	for (size_t i = 0; !r && i < sizeof(sanitizer_prctls) / sizeof(sanitizer_prctls[0]); i++) {
		a = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)sanitizer_prctls[i]);
		r = add_rule(ctx, SCMP_SYS(prctl), 1, &a, err);
	}
	return r;
}
#endif

/*
 * abort() (an assert, a sanitizer's report, glibc's heap checks) on any
 * thread: SIGABRT to itself, and its default action back. A crash stays a
 * crash with its own report, not a seccomp exit.
 */
static int allow_abort(scmp_filter_ctx ctx, struct fk_err *err)
{
	struct scmp_arg_cmp to_self = SCMP_A2(SCMP_CMP_EQ, SIGABRT);
	struct scmp_arg_cmp dfl = SCMP_A0(SCMP_CMP_EQ, SIGABRT);
	int r = add_rule(ctx, SCMP_SYS(tgkill), 1, &to_self, err);

	return r < 0 ? r : add_rule(ctx, SCMP_SYS(rt_sigaction), 1, &dfl, err);
}

static int add_main_rules(scmp_filter_ctx ctx, struct fk_err *err)
{
	struct scmp_arg_cmp a;
	int r;

	r = allow_all(ctx, main_syscalls, sizeof(main_syscalls) / sizeof(main_syscalls[0]), err);
	if (!r)
		r = allow_ioctls(ctx, main_ioctls, sizeof(main_ioctls) / sizeof(main_ioctls[0]),
				 err);
	for (size_t i = 0; !r && i < sizeof(main_prctls) / sizeof(main_prctls[0]); i++) {
		a = SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)main_prctls[i]);
		r = add_rule(ctx, SCMP_SYS(prctl), 1, &a, err);
	}
	/* Unix sockets only: the control socket, vsock's host side, the zygote's socketpair. */
	if (!r) {
		a = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
		r = add_rule(ctx, SCMP_SYS(socket), 1, &a, err);
	}
	if (!r) {
		a = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
		r = add_rule(ctx, SCMP_SYS(socketpair), 1, &a, err);
	}
	/* Threads (pthread_create), and fork() for the zygote and BRANCH children. */
	if (!r) {
		a = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD);
		r = add_rule(ctx, SCMP_SYS(clone), 1, &a, err);
	}
	if (!r) {
		a = SCMP_A0(SCMP_CMP_EQ, FORK_CLONE_FLAGS);
		r = add_rule(ctx, SCMP_SYS(clone), 1, &a, err);
	}
	/*
	 * Opening a tap inside a VM's network namespace: a short-lived thread
	 * enters it (tap.c). Network namespaces only; making or removing one is
	 * the network broker's (src/net/net_broker.h), outside these filters.
	 */
	if (!r) {
		a = SCMP_A1(SCMP_CMP_EQ, CLONE_NEWNET);
		r = add_rule(ctx, SCMP_SYS(setns), 1, &a, err);
	}
	/* uffd-wp-async's userfaultfd: user-mode only (WP_ASYNC delivers no fault anyway). */
	if (!r) {
		a = SCMP_A0(SCMP_CMP_MASKED_EQ, UFFD_USER_MODE_ONLY, UFFD_USER_MODE_ONLY);
		r = add_rule(ctx, SCMP_SYS(userfaultfd), 1, &a, err);
	}
	/* Signal handlers may change, but never SIGSYS's: that one reports denials. */
	if (!r) {
		a = SCMP_A0(SCMP_CMP_NE, SIGSYS);
		r = add_rule(ctx, SCMP_SYS(rt_sigaction), 1, &a, err);
	}
	return r;
}

int fk_seccomp_build(enum fk_seccomp_role role, enum fk_seccomp_mode mode, scmp_filter_ctx *out,
		     struct fk_err *err)
{
	scmp_filter_ctx ctx;
	int r;

	*out = NULL;
	if (role < 0 || role >= FK_SECCOMP_NR_ROLES)
		return fk_fail(err, EINVAL, "seccomp: no thread role %d", (int)role);
	if (mode == FK_SECCOMP_OFF)
		return fk_fail(err, EINVAL, "seccomp: no filter to build with --seccomp=off");
	ctx = seccomp_init(mode == FK_SECCOMP_LOG ? SCMP_ACT_LOG : SCMP_ACT_TRAP);
	if (!ctx)
		return fk_fail(err, ENOMEM, "seccomp: cannot create a filter");
	/* A binary tree of syscall numbers: fewer comparisons on the vCPU exit path. */
	seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
	/* A call through another ABI (int 0x80, x32) ends the process, whatever it is. */
	r = -seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	if (r > 0) {
		fk_fail(err, r, "seccomp: bad-architecture action: %s", strerror(r));
		goto fail;
	}
	/* glibc falls back to clone(2) on ENOSYS, whose flags a filter can read. */
	r = -seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	if (r > 0) {
		fk_fail(err, r, "seccomp: clone3 rule: %s", strerror(r));
		goto fail;
	}
	r = allow_all(ctx, common_syscalls, sizeof(common_syscalls) / sizeof(common_syscalls[0]),
		      err);
	if (!r)
		r = allow_memory(ctx, err);
	if (!r)
		r = allow_abort(ctx, err);
	if (!r && role == FK_SECCOMP_ROLE_MAIN)
		r = add_main_rules(ctx, err);
	if (!r && role == FK_SECCOMP_ROLE_VCPU) {
		/*
		 * Where KVM refuses a queue's ioeventfd, its notifications are MMIO
		 * exits served on the vCPU thread: a vsock packet for a host port
		 * then connects to PATH_<port> from here (vm.c, virtio_vsock.c).
		 */
		struct scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
		r = allow_ioctls(ctx, vcpu_ioctls, sizeof(vcpu_ioctls) / sizeof(vcpu_ioctls[0]),
				 err);
		if (!r)
			r = add_rule(ctx, SCMP_SYS(socket), 1, &unix_only, err);
		if (!r)
			r = add_rule(ctx, SCMP_SYS(connect), 0, NULL, err);
		/*
		 * ...and vsock arms its retransmit timer from there (found in the
		 * nested host, where KVM refused the ioeventfd: a Linux guest's
		 * first vsock packets ended the VMM).
		 */
		if (!r)
			r = add_rule(ctx, SCMP_SYS(timerfd_settime), 0, NULL, err);
	}
	if (!r && role == FK_SECCOMP_ROLE_HELPER) {
		struct scmp_arg_cmp unix_only = SCMP_A0(SCMP_CMP_EQ, AF_UNIX);
		r = allow_all(ctx, helper_syscalls,
			      sizeof(helper_syscalls) / sizeof(helper_syscalls[0]), err);
		if (!r)
			r = add_rule(ctx, SCMP_SYS(socket), 1, &unix_only, err);
	}
#ifdef __SANITIZE_ADDRESS__
	if (!r)
		r = add_sanitizer_rules(ctx, err);
#endif
	if (r < 0)
		goto fail;
	*out = ctx;
	return 0;
fail:
	seccomp_release(ctx);
	return -err->code;
}

/* ---- reporting a denied call ---- */

static size_t append(char *buf, size_t at, size_t cap, const char *s)
{
	while (*s && at + 1 < cap)
		buf[at++] = *s++;
	return at;
}

/* Async-signal-safe: one write(2) of a line formatted by hand, then _exit. */
static void on_sigsys(int sig, siginfo_t *si, void *uctx)
{
	char line[200], num[24];
	int nr = si->si_syscall;
	const char *name =
	    nr >= 0 && nr < NAMED_SYSCALLS && installed.names[nr] ? installed.names[nr] : "unknown";
	size_t at = 0, n = 0;
	unsigned v = nr < 0 ? 0 : (unsigned)nr;

	(void)sig;
	(void)uctx;
	do
		num[n++] = (char)('0' + v % 10);
	while ((v /= 10) && n < sizeof(num));
	at = append(line, at, sizeof(line), "forkd-vmm: seccomp: thread ");
	at = append(line, at, sizeof(line), fk_seccomp_role_name(thread_role));
	at = append(line, at, sizeof(line), " made forbidden syscall ");
	at = append(line, at, sizeof(line), name);
	at = append(line, at, sizeof(line), " (nr ");
	while (n && at + 1 < sizeof(line))
		line[at++] = num[--n];
	at = append(line, at, sizeof(line), ")\n");
	if (write(STDERR_FILENO, line, at) < 0) {
	}
	_exit(FK_SECCOMP_EXIT_STATUS);
}

static void unblock_sigsys(void)
{
	sigset_t s;

	/* A blocked SIGSYS from the filter would be delivered as a silent kill instead. */
	sigemptyset(&s);
	sigaddset(&s, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &s, NULL);
}

/* ---- installing ---- */

/* libseccomp 2.5 exports a program only to a descriptor: read it back from a memfd. */
static int export_prog(scmp_filter_ctx ctx, struct sock_fprog *prog, struct fk_err *err)
{
	int fd = memfd_create("forkd-seccomp", MFD_CLOEXEC), r;
	off_t len;
	void *buf = NULL;

	if (fd < 0)
		return fk_fail_errno(err, errno, "seccomp: memfd_create");
	r = seccomp_export_bpf(ctx, fd);
	if (r < 0) {
		r = fk_fail(err, -r, "seccomp: export the filter: %s", strerror(-r));
		goto out;
	}
	len = lseek(fd, 0, SEEK_END);
	if (len <= 0 || len % (off_t)sizeof(struct sock_filter) ||
	    len / (off_t)sizeof(struct sock_filter) > BPF_MAXINSNS) {
		r = fk_fail(err, EINVAL, "seccomp: exported filter of %lld bytes", (long long)len);
		goto out;
	}
	buf = malloc((size_t)len);
	if (!buf) {
		r = fk_fail(err, ENOMEM, "seccomp: out of memory");
		goto out;
	}
	if (pread(fd, buf, (size_t)len, 0) != len) {
		r = fk_fail_errno(err, errno, "seccomp: read back the filter");
		free(buf);
		goto out;
	}
	prog->filter = buf;
	prog->len = (unsigned short)(len / (off_t)sizeof(struct sock_filter));
	r = 0;
out:
	close(fd);
	return r;
}

static void free_progs(void)
{
	for (int i = 0; i < FK_SECCOMP_NR_ROLES; i++) {
		free(installed.progs[i].filter);
		installed.progs[i] = (struct sock_fprog){0};
	}
}

static int load_prog(const struct sock_fprog *prog)
{
	/* no_new_privs is set by the process filter's load and inherited by every thread. */
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog) < 0 ? -errno : 0;
}

int fk_seccomp_install_process(enum fk_seccomp_mode mode, struct fk_err *err)
{
	struct sigaction sa;
	int r = 0;

	if (mode == FK_SECCOMP_OFF || installed.active)
		return 0;
	for (int role = 0; role < FK_SECCOMP_NR_ROLES; role++) {
		scmp_filter_ctx ctx;

		r = fk_seccomp_build((enum fk_seccomp_role)role, mode, &ctx, err);
		if (r < 0)
			goto fail;
		r = export_prog(ctx, &installed.progs[role], err);
		seccomp_release(ctx);
		if (r < 0)
			goto fail;
	}
	/*
	 * jansson seeds its hash function from /dev/urandom on its first object;
	 * done now, so that a helper thread (the fork notification of a VM
	 * restored without a control socket) is not the first and need not open.
	 */
	json_object_seed(0);
	/* Names resolved now: the SIGSYS handler cannot allocate. */
	for (int nr = 0; nr < NAMED_SYSCALLS; nr++)
		if (!installed.names[nr])
			installed.names[nr] =
			    seccomp_syscall_resolve_num_arch(SCMP_ARCH_NATIVE, nr);
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigfillset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0) {
		r = fk_fail_errno(err, errno, "seccomp: SIGSYS handler");
		goto fail;
	}
	unblock_sigsys();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
		r = fk_fail_errno(err, errno, "seccomp: PR_SET_NO_NEW_PRIVS");
		goto fail;
	}
	r = load_prog(&installed.progs[FK_SECCOMP_ROLE_MAIN]);
	if (r < 0) {
		fk_fail(err, -r, "seccomp: load the %s filter: %s",
			fk_seccomp_role_name(FK_SECCOMP_ROLE_MAIN), strerror(-r));
		goto fail;
	}
	thread_role = FK_SECCOMP_ROLE_MAIN;
	installed.active = true;
	return 0;
fail:
	free_progs();
	return r;
}

int fk_seccomp_enter_role(enum fk_seccomp_role role, struct fk_err *err)
{
	int r;

	if (!installed.active)
		return 0;
	if (role <= FK_SECCOMP_ROLE_MAIN || role >= FK_SECCOMP_NR_ROLES)
		return fk_fail(err, EINVAL, "seccomp: no thread role %d", (int)role);
	unblock_sigsys();
	r = load_prog(&installed.progs[role]);
	if (r < 0)
		return fk_fail(err, -r, "seccomp: load the %s filter: %s",
			       fk_seccomp_role_name(role), strerror(-r));
	thread_role = role;
	return 0;
}

bool fk_seccomp_escape_injected(void)
{
	const char *v = getenv("FORKD_FAULT_INJECT");

	return v && strcmp(v, "seccomp-escape") == 0;
}

void fk_seccomp_escape_attempt(void)
{
	char *const argv[] = {"sh", "-c", "echo escaped > \"$FORKD_SECCOMP_ESCAPE_MARKER\"", NULL};
	extern char **environ;

	fprintf(stderr, "forkd-vmm: injected fault seccomp-escape: execve /bin/sh\n");
	execve("/bin/sh", argv, environ);
}
