/* SPDX-License-Identifier: MIT */
#include "branch/fork_engine.h"
#include "net/vm_netns.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "devices/disk_copy.h"
#include "state/diff_track.h"
#include "state/snapshot_format.h"
#include "core/vm.h"
#include "state/vm_snapshot.h"
#include "state/vm_state.h"

#define MSG_MAX			4096
#define CHILD_READY_TIMEOUT_MS	30000
#define ZYGOTE_REPLY_TIMEOUT_MS 60000
/* A zygote with a pool ends its parked children before it exits (POOL_DRAIN_WAIT_MS). */
#define ZYGOTE_RELEASE_TIMEOUT_MS 3000
/* A rough host-memory cost of one idle child (KVM VM, page tables, VMM). */
#define CHILD_OVERHEAD_BYTES (16ULL << 20)

const char *persist_state_name(enum persist_state s)
{
	switch (s) {
	case PERSIST_WRITING:
		return "writing";
	case PERSIST_READY:
		return "ready";
	case PERSIST_FAILED:
		return "failed";
	default:
		return "none";
	}
}

/* Test hook: FORKD_FAULT_INJECT=fork|child-vm|child-slow (docs/branch.md). */
static bool fault_injected(const char *what)
{
	const char *v = getenv("FORKD_FAULT_INJECT");

	return v && strcmp(v, what) == 0;
}

static int send_msg(int sock, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int send_msg(int sock, const char *fmt, ...)
{
	char buf[MSG_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(buf))
		return -EMSGSIZE;
	return send(sock, buf, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -errno;
}

/* Receives one message (NUL-terminated); 0 on EOF, -ETIMEDOUT, or length. */
/*
 * With a loop (the source waiting for its zygote), the guest's devices are
 * served while waiting, so that the source's I/O goes on.
 */
static ssize_t recv_msg(struct event_loop *loop, int sock, char *buf, size_t len, int timeout_ms)
{
	struct pollfd p = {.fd = sock, .events = POLLIN};
	ssize_t n;
	int r;

	if (loop)
		r = event_loop_serve_until(loop, sock, timeout_ms);
	else
		do
			r = poll(&p, 1, timeout_ms);
		while (r < 0 && errno == EINTR);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	n = recv(sock, buf, len - 1, 0);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return n;
}

/* EAGAIN from fork is a task limit: a jailed VM's is its cgroup's pids.max (docs/jail.md). */
static const char *fork_hint(int e)
{
	return e == EAGAIN ? " (task limit reached: the VM cgroup's pids.max, or RLIMIT_NPROC)"
			   : "";
}

static void close_fds_except(const int *keep, int nkeep)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d))) {
		int fd = atoi(e->d_name);
		bool kept = fd <= STDERR_FILENO || fd == dirfd(d);
		for (int i = 0; i < nkeep; i++)
			kept |= fd == keep[i];
		if (!kept && e->d_name[0] != '.')
			close(fd);
	}
	closedir(d);
}

static void redirect(int target, const char *path, int flags)
{
	int fd = open(path, flags | O_CLOEXEC, 0600);

	if (fd >= 0) {
		dup2(fd, target);
		close(fd);
	}
}

/* ---- child: a new VM on the inherited memory ---- */

static int build_child(const struct vm *source, const struct snap_writer *w, const char *dir,
		       int index, struct vm **out, struct fk_err *err)
{
	char cdir[2300], path[2400];
	struct state_source src = {.writer = w, .disk_dir = dir};
	struct vm *c;
	int ret;

	snprintf(cdir, sizeof(cdir), "%s/child-%d", dir, index);
	if (mkdir(cdir, 0700) < 0)
		return fk_fail_errno(err, errno, "child %d: create %s", index, cdir);
	c = calloc(1, sizeof(*c));
	if (!c)
		return fk_fail(err, ENOMEM, "child %d: out of memory", index);
	*out = c;
	c->restored_cfg = *source->cfg;
	c->restored_cfg.restore_dir = NULL;
	c->restored_cfg.nr_disks = 0;
	/* A fan-out's child is an ordinary VM: its own branches are not fan-outs. */
	c->restored_cfg.fanout = 0;
	c->restored_cfg.fanout_dir = NULL;
	c->restored_cfg.serial_out =
	    strdup((snprintf(path, sizeof(path), "%s/serial.log", cdir), path));
	snprintf(path, sizeof(path), "%s/serial.in", cdir);
	if (mkfifo(path, 0600) < 0)
		return fk_fail_errno(err, errno, "child %d: mkfifo %s", index, path);
	c->restored_cfg.serial_in = strdup(path);
	c->restored_cfg.control_path =
	    strdup((snprintf(path, sizeof(path), "%s/control.sock", cdir), path));
	c->restored_cfg.overlay_dir =
	    strdup((snprintf(path, sizeof(path), "%s/overlay", cdir), path));
	if (!c->restored_cfg.serial_out || !c->restored_cfg.serial_in ||
	    !c->restored_cfg.control_path || !c->restored_cfg.overlay_dir)
		return fk_fail(err, ENOMEM, "child %d: out of memory", index);
	/* The source keeps its vsock socket (and connections); the child gets its own. */
	if (source->cfg->vsock_path[0]) {
		int n = snprintf(c->restored_cfg.vsock_path, sizeof(c->restored_cfg.vsock_path),
				 "%s/vsock.sock", cdir);
		if (n < 0 || (size_t)n >= sizeof(c->restored_cfg.vsock_path))
			return fk_fail(
			    err, ENAMETOOLONG,
			    "child %d: vsock socket %s/vsock.sock is longer than the %zu "
			    "bytes a Unix socket address holds",
			    index, cdir, sizeof(c->restored_cfg.vsock_path) - 1);
	}

	/*
	 * The child must not share its source's tap (both would read each
	 * other's packets): its network device starts link-down and gets a tap
	 * of its own through the control socket's net-attach. The inherited
	 * tap fd itself went with close_fds_except.
	 */
	c->restored_cfg.net_tap[0] = '\0';
	c->restored_cfg.net_netns[0] = '\0';
	c->restored_cfg.net_tap_fd = -1; /* the source's, closed with the rest */
	c->restored_cfg.ready_fd = -1;	 /* the source's launcher's, long closed */
	c->restored_cfg.net_mac_given = false;
	/* --net-policy: this child makes its own namespace and tap (src/net/vm_netns.h) */
	ret = vm_netns_setup(&c->restored_cfg, true, err);
	if (ret < 0)
		return fk_wrap(err, "child %d", index);

	ret = vm_prepare(c, &c->restored_cfg, err);
	if (ret < 0)
		return ret;
	c->nr_vcpus = source->nr_vcpus;
	ret = vm_setup_host(c, err);
	if (ret < 0)
		return ret;
	/* The guest RAM this process inherited is the branch instant, copy-on-write. */
	c->mem = source->mem;
	/* The source's diff tracking is not the child's: a child starts untracked. */
	c->mem.host_dirty = NULL;
	ret = kvm_add_memslots(c, err);
	if (ret < 0)
		return ret;
	if (fault_injected("child-vm"))
		return fk_fail(err, EIO, "child %d: injected failure creating the VM", index);
	return vm_rebuild(c, &src, err);
}

/*
 * A pooled child waits here, built and parked (its vCPU threads not started,
 * its event loop not running), for the zygote's "go". Returns true to run;
 * false when the zygote is gone or ended the pool (the child then exits and
 * the zygote removes its directory).
 */
static bool pool_child_wait(struct vm *c, const struct snap_writer *w, const char *dir, int fd)
{
	struct state_source src = {.writer = w, .disk_dir = dir};
	struct fk_err err = {0};
	char buf[16];
	ssize_t n;

	do
		n = read(fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (n != 2 || memcmp(buf, "go", 2) != 0)
		return false;
	/* Handed out: from now on this child is an independent VMM that outlives its zygote. */
	prctl(PR_SET_PDEATHSIG, 0);
	/*
	 * The vCPU and clock state again: TSC and kvmclock ran on while parked,
	 * and the guest must resume at the branch instant, as a fresh child does.
	 */
	if (vm_state_restore_cpus(c, &src, &err) < 0) {
		if (write(fd, err.msg, strlen(err.msg)) < 0) {
		}
		return false;
	}
	return write(fd, "running", 7) == 7;
}

/* DIR/child-K/pid, for `forkd kill` (docs/branch.md, "Fan-out from a snapshot"). */
static int write_pid_file(const char *dir, int index, struct fk_err *err)
{
	char path[2400], tmp[2400];
	int fd, n;

	snprintf(path, sizeof(path), "%s/child-%d/pid", dir, index);
	snprintf(tmp, sizeof(tmp), "%s/child-%d/pid.tmp", dir, index);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return fk_fail_errno(err, errno, "child %d: %s", index, tmp);
	n = dprintf(fd, "%d\n", (int)getpid());
	if (n <= 0 || close(fd) < 0)
		return fk_fail_errno(err, errno ? errno : EIO, "child %d: write %s", index, tmp);
	if (rename(tmp, path) < 0)
		return fk_fail_errno(err, errno, "child %d: %s", index, path);
	return 0;
}

static void __attribute__((noreturn))
child_main(struct vm *source, const struct snap_writer *w, const char *dir, int index, int ready_fd,
	   pid_t pool_parent)
{
	char path[2400];
	struct fk_err err = {0};
	struct vm *c = NULL;
	int status;

	prctl(PR_SET_NAME, "forkd-vmm");
	/*
	 * A fan-out's children are independent VMMs as `forkd spawn --mode exec`
	 * ones are, each in its own session: a signal to the source's session
	 * does not reach them, and with autogroup scheduling each one is weighed
	 * as its own group rather than all N sharing the source's one share.
	 */
	if (source->cfg->fanout)
		setsid();
	/* A parked pooled child is the zygote's: it goes with it until handed out. */
	if (pool_parent > 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != pool_parent)
			_exit(0);
	}
	{
		/* the network broker's socket: this child makes and removes its namespace through
		 * it */
		int keep[2] = {ready_fd, vm_netns_broker_fd()};

		close_fds_except(keep, 2);
	}
	redirect(STDIN_FILENO, "/dev/null", O_RDONLY);
	redirect(STDOUT_FILENO, "/dev/null", O_WRONLY);
	snprintf(path, sizeof(path), "%s/child-%d.err", dir, index);
	redirect(STDERR_FILENO, path, O_WRONLY | O_CREAT | O_APPEND);
	if (build_child(source, w, dir, index, &c, &err) < 0) {
		if (write(ready_fd, err.msg, strlen(err.msg)) < 0) {
		}
		if (c)
			vm_netns_release(&c->restored_cfg);
		_exit(VMM_EXIT_ERROR);
	}
	/*
	 * A fan-out's child records its pid for `forkd kill` itself (written whole,
	 * by rename): the children do it in parallel, not the source one by one.
	 */
	if (source->cfg->fanout && write_pid_file(dir, index, &err) < 0) {
		if (write(ready_fd, err.msg, strlen(err.msg)) < 0) {
		}
		vm_netns_release(&c->restored_cfg);
		_exit(VMM_EXIT_ERROR);
	}
	/* Test hook: a child slow to report (a fan-out whose caller times out meanwhile). */
	if (fault_injected("child-slow"))
		sleep(3);
	if (write(ready_fd, "ok", 2) != 2 ||
	    (pool_parent > 0 && !pool_child_wait(c, w, dir, ready_fd))) {
		/* Nobody learned of this child (its zygote is gone): running on would be an orphan.
		 */
		vm_netns_release(&c->restored_cfg);
		_exit(VMM_EXIT_ERROR);
	}
	close(ready_fd);
	status = vm_run(c);
	if (status != VMM_EXIT_POWEROFF)
		fprintf(stderr, "forkd-vmm: %s (exit status %d)\n", c->exit_reason, status);
	vm_destroy(c);
	vm_netns_release(&c->restored_cfg);
	_exit(status);
}

/* ---- zygote ---- */

/* A prebuilt child the zygote keeps parked until a spawn hands it out. */
struct pool_kid {
	pid_t pid;
	int fd; /* SOCK_SEQPACKET to the child: "ok" once built, then "go" / "running" */
	int index;
	bool ready; /* built and parked; else still building */
};

/* What a zygote keeps while it waits for requests (one per zygote process). */
struct zygote_ctx {
	struct vm *source;
	struct snap_writer *w;
	const char *dir;
	int sock;
	pid_t self;
	int next_index; /* child-K directories are numbered by the zygote, pooled ones too */
	int pool_target;
	int pool_failures; /* pooled children that failed to build in a row */
	int pool_reported; /* the ready count last sent to the source */
	int nr_pool;
	struct pool_kid pool[BRANCH_MAX_POOL];
};

/* Refilling stops after this many pooled children failed in a row (a fork storm otherwise);
 * also the most built at one time. */
#define POOL_MAX_FAILURES  3
#define POOL_GO_TIMEOUT_MS 5000
#define POOL_DRAIN_WAIT_MS 2000

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* 1 if a Unix socket at path accepts a connection (or its path is too long to tell). */
static bool socket_answers(const char *path)
{
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	bool ok;
	int fd;

	if (strlen(path) >= sizeof(a.sun_path))
		return true;
	memcpy(a.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return true;
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* A branch directory some BRANCH child still serves from: a child-N/control.sock answers. */
static bool branch_dir_served(const char *path)
{
	DIR *d = opendir(path);
	char sock[PATH_MAX];
	struct dirent *e;
	bool served = !d;

	while (d && !served && (e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		if ((size_t)snprintf(sock, sizeof(sock), "%s/%s/control.sock", path, e->d_name) >=
		    sizeof(sock))
			served = true;
		else
			served = access(sock, F_OK) == 0 && socket_answers(sock);
	}
	if (d)
		closedir(d);
	return served;
}

/*
 * Default branch directories ($TMPDIR/forkd-branch-PID-N) of VMMs that are gone: one killed
 * (SIGKILL) before it released a zygote leaves its directory (the zygote's log, children's
 * files) behind, and nothing else would remove it. Swept when this VMM first makes one: only
 * this user's, only of a PID no process has, and only if no child below answers on its control
 * socket (BRANCH children outlive their source and serve from there).
 */
static void sweep_stale_branch_dirs(const char *tmp, pid_t self)
{
	DIR *d = opendir(tmp);
	char path[PATH_MAX];
	struct dirent *e;
	struct stat st;

	while (d && (e = readdir(d))) {
		int pid, n, end = 0;

		if (sscanf(e->d_name, "forkd-branch-%d-%d%n", &pid, &n, &end) != 2 ||
		    e->d_name[end] || pid <= 0 || pid == (int)self || n <= 0)
			continue;
		if (kill(pid, 0) == 0 || errno != ESRCH)
			continue;
		if ((size_t)snprintf(path, sizeof(path), "%s/%s", tmp, e->d_name) >= sizeof(path) ||
		    lstat(path, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != geteuid() ||
		    branch_dir_served(path))
			continue;
		nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	}
	if (d)
		closedir(d);
}

/* A pooled child never handed out leaves nothing: its directory and error log go. */
static void pool_kid_remove_files(const struct zygote_ctx *zc, int index)
{
	char path[2400];

	snprintf(path, sizeof(path), "%s/child-%d", zc->dir, index);
	nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	snprintf(path, sizeof(path), "%s/child-%d.err", zc->dir, index);
	unlink(path);
}

static void pool_report(struct zygote_ctx *zc)
{
	int ready = 0;

	for (int i = 0; i < zc->nr_pool; i++)
		ready += zc->pool[i].ready;
	if (ready != zc->pool_reported && send_msg(zc->sock, "pool-ready %d", ready) == 0)
		zc->pool_reported = ready;
}

/*
 * Ends pooled child i. `alive`: it still holds its end (a timeout, not an
 * EOF), so it is killed; otherwise it exited and is only reaped (it may
 * already be, by the main loop: then its pid is not touched again).
 */
static void pool_kid_end(struct zygote_ctx *zc, int i, bool alive)
{
	struct pool_kid k = zc->pool[i];

	close(k.fd);
	if (alive)
		kill(k.pid, SIGKILL);
	waitpid(k.pid, NULL, 0);
	pool_kid_remove_files(zc, k.index);
	zc->pool[i] = zc->pool[--zc->nr_pool];
}

static void pool_fork_one(struct zygote_ctx *zc)
{
	int sv[2];
	pid_t pid;
	int index = zc->next_index++;

	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		send_msg(zc->sock, "pool-error child %d: socketpair: %s", index, strerror(errno));
		zc->pool_failures++;
		return;
	}
	pid = fork();
	if (pid == 0) {
		close(sv[0]);
		child_main(zc->source, zc->w, zc->dir, index, sv[1], zc->self);
	}
	close(sv[1]);
	if (pid < 0) {
		send_msg(zc->sock, "pool-error child %d: fork: %s%s", index, strerror(errno),
			 fork_hint(errno));
		close(sv[0]);
		zc->pool_failures++;
		return;
	}
	zc->pool[zc->nr_pool++] = (struct pool_kid){.pid = pid, .fd = sv[0], .index = index};
}

/*
 * Builds at most POOL_MAX_FAILURES at a time, and none once that many failed
 * in a row: each build in flight can fail only once, so a pool that cannot
 * be built costs exactly POOL_MAX_FAILURES attempts.
 */
static void pool_refill(struct zygote_ctx *zc)
{
	for (;;) {
		int building = 0;

		for (int i = 0; i < zc->nr_pool; i++)
			building += !zc->pool[i].ready;
		if (zc->nr_pool >= zc->pool_target ||
		    zc->pool_failures + building >= POOL_MAX_FAILURES)
			break;
		pool_fork_one(zc);
	}
	pool_report(zc);
}

/* Pooled child i's socket is readable: built ("ok"), failed (its error), or gone (EOF). */
static void pool_kid_event(struct zygote_ctx *zc, int i)
{
	struct pool_kid *k = &zc->pool[i];
	char buf[FK_ERR_MSG_MAX + 8];
	ssize_t got = read(k->fd, buf, sizeof(buf) - 1);

	buf[got > 0 ? got : 0] = '\0';
	if (!k->ready && got == 2 && memcmp(buf, "ok", 2) == 0) {
		k->ready = true;
		zc->pool_failures = 0;
		return;
	}
	if (!k->ready) {
		fprintf(stderr, "forkd-zygote: pooled child %d: %s\n", k->index,
			got > 0 ? buf : "exited before its VM was ready");
		send_msg(zc->sock, "pool-error child %d: %s", k->index,
			 got > 0 ? buf : "exited before its VM was ready");
		zc->pool_failures++;
	} else if (got > 0) {
		/* A parked child says nothing until "go": this one is not parked as it should be.
		 */
		fprintf(stderr,
			"forkd-zygote: pooled child %d (pid %d) sent '%.64s' while parked\n",
			k->index, (int)k->pid, buf);
		pool_kid_end(zc, i, true);
		return;
	} else {
		fprintf(stderr, "forkd-zygote: pooled child %d (pid %d) exited while parked\n",
			k->index, (int)k->pid);
	}
	/* It wrote its error and exits, or it is gone already. */
	pool_kid_end(zc, i, false);
}

/*
 * Hands out pooled child i: it restores its vCPUs to the branch instant and
 * runs. True once it said so; a child that cannot is ended instead.
 */
static bool pool_hand_out(struct zygote_ctx *zc, int i)
{
	struct pool_kid *k = &zc->pool[i];
	struct pollfd p = {.fd = k->fd, .events = POLLIN};
	char buf[FK_ERR_MSG_MAX + 8];
	ssize_t got = 0;
	bool stuck = false;
	int r;

	if (write(k->fd, "go", 2) == 2) {
		r = poll(&p, 1, POOL_GO_TIMEOUT_MS);
		if (r > 0)
			got = read(k->fd, buf, sizeof(buf) - 1);
		stuck = r == 0; /* still holds its end: alive, and killed below */
	}
	buf[got > 0 ? got : 0] = '\0';
	if (got == 7 && memcmp(buf, "running", 7) == 0) {
		send_msg(zc->sock, "child %d %d", k->index, (int)k->pid);
		close(k->fd);
		zc->pool[i] = zc->pool[--zc->nr_pool];
		return true;
	}
	fprintf(stderr, "forkd-zygote: pooled child %d did not start: %s\n", k->index,
		got > 0 ? buf : "no answer");
	pool_kid_end(zc, i, stuck);
	return false;
}

/* Release: parked children see EOF and exit; the stuck ones are killed. Nothing stays. */
static void pool_drain(struct zygote_ctx *zc)
{
	for (int i = 0; i < zc->nr_pool; i++) {
		close(zc->pool[i].fd);
		zc->pool[i].fd = -1;
	}
	for (int waited = 0; zc->nr_pool > 0 && waited < POOL_DRAIN_WAIT_MS; waited += 5) {
		for (int i = 0; i < zc->nr_pool;) {
			pid_t r = waitpid(zc->pool[i].pid, NULL, WNOHANG);
			if (r == 0) {
				i++;
				continue;
			}
			pool_kid_remove_files(zc, zc->pool[i].index);
			zc->pool[i] = zc->pool[--zc->nr_pool];
		}
		if (zc->nr_pool)
			usleep(5000);
	}
	for (int i = 0; i < zc->nr_pool; i++) {
		kill(zc->pool[i].pid, SIGKILL);
		waitpid(zc->pool[i].pid, NULL, 0);
		pool_kid_remove_files(zc, zc->pool[i].index);
	}
	zc->nr_pool = 0;
}

/*
 * Hands out parked children first, then forks the rest fresh (all n first,
 * then collects their readiness, so that building their VMs runs on every
 * host core). The pool refills after the reply, in the background.
 */
static void zygote_spawn(struct zygote_ctx *zc, int n)
{
	struct pending {
		pid_t pid;
		int fd;
		int index;
	} *kids = calloc((size_t)n, sizeof(*kids));
	int handed = 0, sock = zc->sock, gate[2] = {-1, -1};

	if (!kids) {
		send_msg(sock, "child-error %d out of memory", zc->next_index);
		send_msg(sock, "spawn-done");
		return;
	}
	for (int i = 0; i < zc->nr_pool && handed < n;) {
		if (!zc->pool[i].ready) {
			i++;
			continue;
		}
		/* Either way slot i now holds another child (or none): look at it again. */
		handed += pool_hand_out(zc, i);
	}
	/*
	 * The children wait at a gate until all are forked: building their VMs
	 * right away took the CPU from this fork loop (100 children on 2 cores:
	 * 4.3 ms per fork, 434 ms in all, while others' guests already ran).
	 * The gate opens (EOF) when the zygote closes its end after the loop.
	 */
	if (n - handed > 1 && pipe2(gate, O_CLOEXEC) < 0)
		gate[0] = gate[1] = -1;
	for (int i = 0; i < n - handed; i++) {
		int k = zc->next_index++, pipefd[2];

		kids[i].pid = -1;
		kids[i].fd = -1;
		kids[i].index = k;
		if (pipe2(pipefd, O_CLOEXEC) < 0) {
			send_msg(sock, "child-error %d pipe: %s", k, strerror(errno));
			continue;
		}
		kids[i].pid = fork();
		if (kids[i].pid == 0) {
			close(pipefd[0]);
			if (gate[1] >= 0) {
				char c;

				close(gate[1]);
				while (read(gate[0], &c, 1) < 0 && errno == EINTR)
					;
				close(gate[0]);
			}
			child_main(zc->source, zc->w, zc->dir, k, pipefd[1], 0);
		}
		close(pipefd[1]);
		if (kids[i].pid < 0) {
			send_msg(sock, "child-error %d fork: %s%s", k, strerror(errno),
				 fork_hint(errno));
			close(pipefd[0]);
			continue;
		}
		kids[i].fd = pipefd[0];
	}
	if (gate[1] >= 0) {
		close(gate[1]);
		close(gate[0]);
	}
	for (int i = 0; i < n - handed; i++) {
		char buf[FK_ERR_MSG_MAX + 8];
		struct pollfd p = {.fd = kids[i].fd, .events = POLLIN};
		ssize_t got = 0;
		int k = kids[i].index;

		if (kids[i].fd < 0)
			continue;
		if (poll(&p, 1, CHILD_READY_TIMEOUT_MS) > 0)
			got = read(kids[i].fd, buf, sizeof(buf) - 1);
		close(kids[i].fd);
		buf[got > 0 ? got : 0] = '\0';
		if (got == 2 && memcmp(buf, "ok", 2) == 0) {
			send_msg(sock, "child %d %d", k, (int)kids[i].pid);
		} else {
			kill(kids[i].pid, SIGKILL);
			waitpid(kids[i].pid, NULL, 0);
			send_msg(sock, "child-error %d %s", k,
				 got > 0 ? buf : "the child exited before its VM was ready");
		}
	}
	free(kids);
	/* Before spawn-done: a `zygote list` after the reply must not show the ones handed out. */
	pool_report(zc);
	send_msg(sock, "spawn-done");
	pool_refill(zc);
}

static void zygote_persist(struct vm *source, struct snap_writer *w, const char *dir, int sock,
			   const char *path)
{
	struct snap_mem_region regions[GUEST_MEM_MAX_REGIONS];
	struct snap_memory_source mem = {.regions = regions,
					 .nr_regions = (uint32_t)source->mem.nr_regions};
	struct fk_err err = {0};
	int fds[SNAP_MAX_FILES];
	int ret = 0;

	/* The disk copies are of the branch instant (the source waited for them). */
	for (int i = 0; i < w->nr_files; i++) {
		char p[2300];
		snprintf(p, sizeof(p), "%s/%s", dir, w->files[i].name);
		fds[i] = open(p, O_RDONLY | O_CLOEXEC);
		if (fds[i] < 0 && !ret)
			ret = fk_fail_errno(&err, errno, "disk copy %s", p);
		w->files[i].src_fd = fds[i];
	}
	for (int i = 0; i < source->mem.nr_regions; i++)
		regions[i] = (struct snap_mem_region){.gpa = source->mem.regions[i].gpa,
						      .size = source->mem.regions[i].size,
						      .host = source->mem.regions[i].hva};
	if (!ret)
		ret = snap_writer_commit(w, path, &mem, &err);
	for (int i = 0; i < w->nr_files; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	if (ret < 0)
		send_msg(sock, "persist-done error %s", err.msg);
	else
		send_msg(sock, "persist-done ok hash_us=%llu",
			 (unsigned long long)w->stats.hash_us);
}

static void __attribute__((noreturn))
zygote_main(struct vm *source, struct snap_writer *w, const char *dir, int sock, pid_t parent)
{
	struct zygote_ctx zc = {
	    .source = source, .w = w, .dir = dir, .sock = sock, .self = getpid()};
	char msg[MSG_MAX], path[2300];
	sigset_t none;

	/* A zygote never outlives its source. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_NAME, "forkd-zygote");
	{
		int keep[2] = {sock, vm_netns_broker_fd()};

		close_fds_except(keep, 2);
	}
	redirect(STDIN_FILENO, "/dev/null", O_RDONLY);
	redirect(STDOUT_FILENO, "/dev/null", O_WRONLY);
	snprintf(path, sizeof(path), "%s/zygote.log", dir);
	redirect(STDERR_FILENO, path, O_WRONLY | O_CREAT | O_APPEND);
	/* The source's vCPU run areas belong to its KVM VM, not ours. */
	for (int i = 0; i < source->nr_vcpus; i++)
		if (source->vcpus[i].run)
			munmap(source->vcpus[i].run, source->vcpu_mmap_size);

	for (;;) {
		struct pollfd p[1 + BRANCH_MAX_POOL];
		int nfds = 0, count, r;
		ssize_t n;

		p[nfds++] = (struct pollfd){.fd = sock, .events = POLLIN};
		for (int i = 0; i < zc.nr_pool; i++)
			p[nfds++] = (struct pollfd){.fd = zc.pool[i].fd, .events = POLLIN};
		r = poll(p, (nfds_t)nfds, 200);
		/* Reap children that exited while we still are their parent. */
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		if (r <= 0)
			continue;
		/* Pool events first, from the last slot: ending one moves the last into its slot.
		 */
		for (int i = nfds - 1; i >= 1; i--)
			if (p[i].revents && i - 1 < zc.nr_pool && zc.pool[i - 1].fd == p[i].fd)
				pool_kid_event(&zc, i - 1);
		if (zc.nr_pool < zc.pool_target)
			pool_refill(&zc);
		else
			pool_report(&zc);
		if (!p[0].revents)
			continue;
		n = recv_msg(NULL, sock, msg, sizeof(msg), 0);
		if (n == -ETIMEDOUT)
			continue;
		if (n <= 0 || strcmp(msg, "exit") == 0) {
			/* The source closed its end, or released us. */
			pool_drain(&zc);
			_exit(0);
		}
		if (sscanf(msg, "spawn %d", &count) == 1) {
			zygote_spawn(&zc, count);
		} else if (sscanf(msg, "pool %d", &count) == 1 && count >= 0 &&
			   count <= BRANCH_MAX_POOL) {
			zc.pool_target = count;
			zc.pool_failures = 0;
			pool_refill(&zc);
		} else if (strncmp(msg, "persist ", 8) == 0) {
			zygote_persist(source, w, dir, sock, msg + 8);
		} else {
			send_msg(sock, "error unknown request");
		}
	}
}

/* ---- source side ---- */

static void branch_teardown(struct vm *vm)
{
	branch_release_all(vm);
	recollapse_stop(&vm->branch->recollapse);
	free(vm->branch);
	vm->branch = NULL;
}

static const struct vm_engine_ops branch_engine_ops = {.teardown = branch_teardown};

/* BRANCH's state comes with the first branch: a VM never branched carries none. */
static int branch_state_get(struct vm *vm, struct fk_err *err)
{
	if (vm->branch)
		return 0;
	vm->branch = calloc(1, sizeof(*vm->branch));
	if (!vm->branch)
		return fk_fail(err, ENOMEM, "branch: out of memory");
	vm->branch_ops = &branch_engine_ops;
	return 0;
}

const struct zygote *branch_zygotes(const struct vm *vm)
{
	return vm->branch ? vm->branch->zygotes : NULL;
}

static struct zygote *find_zygote(struct vm *vm, int id)
{
	if (!vm->branch)
		return NULL;
	for (int i = 0; i < BRANCH_MAX_ZYGOTES; i++)
		if (vm->branch->zygotes[i].in_use && vm->branch->zygotes[i].id == id)
			return &vm->branch->zygotes[i];
	return NULL;
}

const struct snapshot_job *branch_snapshot_job(const struct vm *vm, const char *path)
{
	const struct snapshot_job *best = NULL;

	if (!vm->branch)
		return NULL;
	for (int i = 0; i < BRANCH_MAX_SNAPSHOT_JOBS; i++) {
		const struct snapshot_job *j = &vm->branch->snapshot_jobs[i];
		if (j->in_use && strcmp(j->path, path) == 0 && (!best || j->seq > best->seq))
			best = j;
	}
	return best;
}

/* Records a live snapshot being written, reusing the oldest record. */
static void snapshot_job_start(struct vm *vm, const char *path, uint64_t pause_us)
{
	struct snapshot_job *j = &vm->branch->snapshot_jobs[0];

	for (int i = 0; i < BRANCH_MAX_SNAPSHOT_JOBS; i++) {
		struct snapshot_job *c = &vm->branch->snapshot_jobs[i];
		if (!c->in_use) {
			j = c;
			break;
		}
		if (c->seq < j->seq)
			j = c;
	}
	memset(j, 0, sizeof(*j));
	j->in_use = true;
	j->seq = ++vm->branch->next_snapshot_seq;
	snprintf(j->path, sizeof(j->path), "%s", path);
	j->state = PERSIST_WRITING;
	j->pause_us = pause_us;
}

static void snapshot_job_update(struct zygote *z)
{
	struct snapshot_job *j = (struct snapshot_job *)branch_snapshot_job(z->vm, z->persist_path);

	if (!z->snapshot_only || !j || j->state != PERSIST_WRITING)
		return;
	j->state = z->persist;
	j->write_us = z->write_us;
	j->hash_us = z->hash_us;
	snprintf(j->error, sizeof(j->error), "%s", z->persist_error);
}

/* Only what a branch created: the disk copies and the zygote's log, then the directory. */
static void remove_branch_dir(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;

	while (d && (e = readdir(d)))
		if (e->d_name[0] != '.')
			unlinkat(dirfd(d), e->d_name, 0);
	if (d)
		closedir(d);
	rmdir(path);
}

/*
 * A zygote killed while writing (kill -9, OOM) leaves the snapshot's
 * `NAME.tmp-XXXXXX` behind: its record names a writer that is gone now.
 */
static void remove_dead_writers_tmp(const char *snapshot_path)
{
	char a[2048], b[2048];
	struct fk_err ignored = {0};

	snprintf(a, sizeof(a), "%s", snapshot_path);
	snprintf(b, sizeof(b), "%s", snapshot_path);
	for (size_t n = strlen(b); n > 1 && b[n - 1] == '/'; n--)
		b[n - 1] = a[n - 1] = '\0';
	if (snap_tmp_clean_stale(dirname(a), basename(b), &ignored) < 0)
		fprintf(stderr, "forkd-vmm: %s\n", ignored.msg);
}

static void zygote_gone(struct vm *vm, struct zygote *z);

static void handle_zygote_msg(struct zygote *z, const char *msg)
{
	unsigned long long hash_us = 0;
	int ready;

	if (sscanf(msg, "pool-ready %d", &ready) == 1) {
		z->pool_ready = ready;
		return;
	}
	if (strncmp(msg, "pool-error ", 11) == 0) {
		snprintf(z->pool_error, sizeof(z->pool_error), "%s", msg + 11);
		return;
	}
	if (strncmp(msg, "persist-done ok", 15) == 0) {
		z->persist = PERSIST_READY;
		if (sscanf(msg + 15, " hash_us=%llu", &hash_us) == 1)
			z->hash_us = hash_us;
	} else if (strncmp(msg, "persist-done error ", 19) == 0) {
		z->persist = PERSIST_FAILED;
		snprintf(z->persist_error, sizeof(z->persist_error), "%s", msg + 19);
	} else {
		return;
	}
	z->write_us = monotonic_us() - z->persist_start_us;
	snapshot_job_update(z);
	/* A live snapshot's zygote has nothing more to give: free its copy-on-write memory. */
	if (z->snapshot_only && z->in_use) {
		send_msg(z->sock, "exit");
		zygote_gone(z->vm, z);
	}
}

static void zygote_gone(struct vm *vm, struct zygote *z)
{
	event_loop_remove(&vm->loop, z->sock);
	close(z->sock);
	if (z->pidfd >= 0) {
		event_loop_remove(&vm->loop, z->pidfd);
		close(z->pidfd);
	}
	kill(z->pid, SIGKILL);
	waitpid(z->pid, NULL, 0);
	if (z->persist == PERSIST_WRITING) {
		z->persist = PERSIST_FAILED;
		snprintf(z->persist_error, sizeof(z->persist_error),
			 "the zygote (pid %d) writing it exited before it was complete",
			 (int)z->pid);
		z->write_us = monotonic_us() - z->persist_start_us;
		/* Reaped above: its pid is gone, so its temp dir counts as stale. */
		remove_dead_writers_tmp(z->persist_path);
		snapshot_job_update(z);
	}
	if (z->snapshot_only)
		remove_branch_dir(z->dir);
	z->in_use = false;
	for (int i = 0; i < BRANCH_MAX_ZYGOTES; i++)
		if (vm->branch->zygotes[i].in_use)
			return;
	/* The RAM is no longer shared: make the next fork cheap again. */
	if (vm->mem.backend == GUEST_MEM_ANON && !getenv("FORKD_NO_RECOLLAPSE"))
		recollapse_start(&vm->branch->recollapse, &vm->mem);
}

static void on_zygote_msg(void *opaque, uint32_t events)
{
	struct zygote *z = opaque;
	struct vm *vm = z->vm;
	char msg[MSG_MAX];
	ssize_t n;

	(void)events;
	n = recv_msg(NULL, z->sock, msg, sizeof(msg), 0);
	if (n == -ETIMEDOUT)
		return;
	if (n <= 0) {
		zygote_gone(vm, z);
		return;
	}
	handle_zygote_msg(z, msg);
}

/* The zygote's pidfd became readable: it exited (crashed, or was killed). */
static void on_zygote_exit(void *opaque, uint32_t events)
{
	struct zygote *z = opaque;

	(void)events;
	if (z->in_use)
		zygote_gone(z->vm, z);
}

/* Sends a spawn request and collects the children (synchronously). */
/*
 * Sets up the copies of the writable disks as they are at the branch instant
 * (the pause covers only creating the files); disk_copies_start copies them
 * after the zygote is forked, while the source runs on.
 */
static int disk_copies_begin(struct vm *vm, const struct snap_writer *w, const char *dir, int *made,
			     struct fk_err *err)
{
	*made = 0;
	for (int i = 0; i < w->nr_files; i++) {
		char path[2300];
		struct virtio_blk *blk = NULL;
		int fd;

		for (int d = 0; d < vm->nr_disks; d++)
			if (virtio_blk_fd(vm->disks[d].blk) == w->files[i].src_fd)
				blk = vm->disks[d].blk;
		if (!blk)
			return fk_fail(err, ENOENT, "branch: no disk for snapshot file %s",
				       w->files[i].name);
		snprintf(path, sizeof(path), "%s/%s", dir, w->files[i].name);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0)
			return fk_fail_errno(err, errno, "branch: disk copy %s", path);
		(*made)++;
		if (virtio_blk_begin_copy(blk, fd, path, err) < 0)
			return fk_wrap(err, "branch");
	}
	return 0;
}

static void disk_copies_start(struct vm *vm, struct zygote *z, int nr_files)
{
	z->disks = nr_files ? ZYGOTE_DISKS_COPYING : ZYGOTE_DISKS_READY;
	for (int d = 0; d < vm->nr_disks && nr_files; d++) {
		struct disk_copy *c = virtio_blk_copy(vm->disks[d].blk);
		struct fk_err e;

		if (c && fault_injected("disk-copy-slow"))
			disk_copy_delay_start(c, 3000);
		if (c && !virtio_blk_readonly(vm->disks[d].blk) && disk_copy_start(c, &e) < 0) {
			/* disk_copy_wait starts it again, or reports why it cannot. */
		}
	}
}

/*
 * Waits for the copies zygote z's children and snapshot are made from. Only
 * the newest zygote can be copying: a new branch waits for the last one first.
 */
static int zygote_disks_ready(struct vm *vm, struct zygote *z, struct fk_err *err)
{
	if (z->disks == ZYGOTE_DISKS_COPYING) {
		z->disks = ZYGOTE_DISKS_READY;
		for (int d = 0; d < vm->nr_disks; d++) {
			struct disk_copy *c = virtio_blk_copy(vm->disks[d].blk);
			struct fk_err e = {0};
			uint64_t us = 0;

			if (!c || virtio_blk_readonly(vm->disks[d].blk))
				continue;
			/* The source's guest keeps its disk I/O meanwhile (copy-before-write). */
			if (disk_copy_start(c, &e) == 0)
				event_loop_serve_until(&vm->loop, disk_copy_done_fd(c), -1);
			if (disk_copy_wait(c, &us, &e) < 0 && z->disks == ZYGOTE_DISKS_READY) {
				z->disks = ZYGOTE_DISKS_FAILED;
				snprintf(z->disk_error, sizeof(z->disk_error), "%.250s", e.msg);
			}
			if (us > z->disk_copy_us)
				z->disk_copy_us = us;
		}
	}
	if (z->disks == ZYGOTE_DISKS_FAILED)
		return fk_fail(err, EIO, "zygote %d: its disk copy failed: %s", z->id,
			       z->disk_error);
	return 0;
}

static int spawn_children(struct vm *vm, struct zygote *z, int n, struct branch_result *res,
			  struct fk_err *err)
{
	char msg[MSG_MAX], first_error[FK_ERR_MSG_MAX] = "";
	int ret, failed = 0;

	ret = zygote_disks_ready(vm, z, err);
	if (ret < 0)
		return ret;
	res->disk_copy_us = z->disk_copy_us;
	/* The zygote numbers the children (its pooled ones take numbers when built). */
	ret = send_msg(z->sock, "spawn %d", n);
	if (ret < 0)
		return fk_fail(err, -ret, "zygote %d: cannot send: %s", z->id, strerror(-ret));
	for (;;) {
		int k, pid;
		ssize_t got =
		    recv_msg(&vm->loop, z->sock, msg, sizeof(msg), ZYGOTE_REPLY_TIMEOUT_MS);

		if (got <= 0) {
			if (got == 0)
				zygote_gone(vm, z);
			return fk_fail(err, got == 0 ? EPIPE : ETIMEDOUT,
				       "zygote %d: %s while starting children", z->id,
				       got == 0 ? "exited" : "no answer");
		}
		if (strcmp(msg, "spawn-done") == 0)
			break;
		if (sscanf(msg, "child %d %d", &k, &pid) == 2) {
			if (res->nr_children < BRANCH_MAX_CHILDREN)
				res->children[res->nr_children++] =
				    (struct branch_child){.index = k, .pid = pid};
			z->nr_children++;
		} else if (strncmp(msg, "child-error ", 12) == 0) {
			if (!failed++)
				snprintf(first_error, sizeof(first_error), "%.400s", msg + 12);
			z->nr_children++; /* the index is used; its directory stays for inspection
					   */
		} else {
			handle_zygote_msg(z, msg);
		}
	}
	if (failed) {
		/* No partial branch: the children that did start are stopped again. */
		for (int i = 0; i < res->nr_children; i++)
			kill(res->children[i].pid, SIGKILL);
		res->nr_children = 0;
		return fk_fail(err, EIO, "%d of %d children failed to start; first: child %s",
			       failed, n, first_error);
	}
	return 0;
}

static int check_children_fit(const struct vm *vm, int n, struct fk_err *err)
{
	unsigned long long avail_kb = 0;
	char line[256];
	FILE *f;

	if (n < 0 || n > BRANCH_MAX_CHILDREN)
		return fk_fail(err, EINVAL, "n=%d: expected 0..%d children", n,
			       BRANCH_MAX_CHILDREN);
	f = fopen("/proc/meminfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &avail_kb) == 1)
			break;
	if (f)
		fclose(f);
	(void)vm;
	/* Keep half of the available memory for the guests' own copy-on-write writes. */
	if (avail_kb && (unsigned long long)n * CHILD_OVERHEAD_BYTES > avail_kb * 512ULL)
		return fk_fail(err, ENOMEM,
			       "n=%d: %d children need about %llu MiB of host memory; %llu MiB "
			       "are available and half of it is kept for guest writes",
			       n, n, (unsigned long long)n * (CHILD_OVERHEAD_BYTES >> 20),
			       avail_kb >> 10);
	return 0;
}

int branch_vm(struct vm *vm, const struct branch_request *req, struct branch_result *res,
	      struct fk_err *err)
{
	struct zygote *z = NULL;
	struct snap_writer w;
	int sv[2] = {-1, -1}, ret, slot, disk_copies_made = 0;
	uint64_t t0, t1, t2, t3;
	bool paused = false;
	pid_t pid = -1, self = getpid();

	memset(res, 0, sizeof(*res));
	if (req->pool < 0 || req->pool > BRANCH_MAX_POOL)
		return fk_fail(err, EINVAL, "pool=%d: expected 0..%d prebuilt children", req->pool,
			       BRANCH_MAX_POOL);
	ret = check_children_fit(vm, req->n + req->pool, err);
	if (ret < 0)
		return ret;
	/*
	 * Children whose zygote is released are re-parented to us rather than to
	 * init, and reaped by the loop (vm.c); above us, the forkd daemon is the
	 * subreaper for VMs whose source exited.
	 */
	prctl(PR_SET_CHILD_SUBREAPER, 1);
	ret = branch_state_get(vm, err);
	if (ret < 0)
		return ret;
	recollapse_stop(&vm->branch->recollapse);
	if (vm_is_paused(vm))
		return fk_fail(err, EBUSY, "branch: the VM is paused; resume it first");
	/* The disks get new copies: the last zygote's must be complete (not in the pause). */
	for (int i = 0; i < BRANCH_MAX_ZYGOTES; i++) {
		struct fk_err kept;
		if (vm->branch->zygotes[i].in_use &&
		    zygote_disks_ready(vm, &vm->branch->zygotes[i], &kept) < 0) {
			/* Kept in that zygote: its spawns and persist report it. */
		}
	}
	for (slot = 0; slot < BRANCH_MAX_ZYGOTES && vm->branch->zygotes[slot].in_use; slot++)
		;
	if (slot == BRANCH_MAX_ZYGOTES)
		return fk_fail(err, ENOSPC, "branch: %d zygotes already exist; release one",
			       BRANCH_MAX_ZYGOTES);
	z = &vm->branch->zygotes[slot];
	memset(z, 0, sizeof(*z));
	z->id = ++vm->branch->next_zygote_id;
	z->vm = vm;
	if (req->dir) {
		snprintf(z->dir, sizeof(z->dir), "%s", req->dir);
	} else {
		const char *tmp = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";

		if (!vm->branch->swept_tmp) {
			sweep_stale_branch_dirs(tmp, self);
			vm->branch->swept_tmp = true;
		}
		snprintf(z->dir, sizeof(z->dir), "%s/forkd-branch-%d-%d", tmp, (int)self, z->id);
	}
	if (req->dir_exists) {
		struct stat st;

		if (stat(z->dir, &st) < 0)
			return fk_fail_errno(err, errno, "branch: %s: expected a directory",
					     z->dir);
		if (!S_ISDIR(st.st_mode))
			return fk_fail(err, ENOTDIR, "branch: %s: expected a directory", z->dir);
	} else if (mkdir(z->dir, 0700) < 0) {
		return fk_fail_errno(err, errno, "branch: create %s", z->dir);
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		ret = fk_fail_errno(err, errno, "branch: socketpair");
		goto fail_dir;
	}
	snap_writer_init(&w, (uint32_t)vm->nr_vcpus);

	t0 = monotonic_us();
	/*
	 * A VM whose vCPUs never ran (a restored fan-out source, which never runs
	 * its guest) is at its instant already: there is nothing to park.
	 */
	if (vm->started_us) {
		ret = vm_pause(vm, err);
		if (ret < 0)
			goto fail;
		paused = true;
	}
	t1 = monotonic_us();
	ret = guest_mem_prepare_fork(&vm->mem, err);
	if (!ret)
		ret = vm_state_save(vm, &w, err);
	if (!ret && req->persist) {
		/* Inside the pause: the diff's pages are exactly those dirtied until now. */
		struct diff_request dreq = {.parent = req->parent, .track = req->track_dirty};
		ret = diff_track_snapshot(vm, req->persist, &dreq, &w, err);
	}
	if (!ret)
		ret = disk_copies_begin(vm, &w, z->dir, &disk_copies_made, err);
	if (ret < 0)
		goto fail;
	res->inflight = vm_snapshot_inflight(vm);
	t2 = monotonic_us();
	if (fault_injected("fork")) {
		errno = ENOMEM;
		pid = -1;
	} else {
		pid = fork();
	}
	if (pid == 0) {
		close(sv[0]);
		zygote_main(vm, &w, z->dir, sv[1], self);
	}
	t3 = monotonic_us();
	if (pid < 0) {
		ret = fk_fail(err, errno, "branch: fork of the zygote failed: %s%s",
			      strerror(errno), fork_hint(errno));
		goto fail;
	}
	disk_copies_start(vm, z, w.nr_files);
	if (paused)
		vm_resume(vm, err);
	paused = false;
	res->pause_us = monotonic_us() - t0;
	res->park_us = vm->last_pause_us;
	res->capture_us = t2 - t1;
	res->fork_us = t3 - t2;
	snap_writer_free(&w);
	close(sv[1]);

	z->in_use = true;
	z->pid = pid;
	z->sock = sv[0];
	z->snapshot_only = req->snapshot && req->n == 0 && req->persist;
	/* A pidfd tells the loop when the zygote exits, without racing pid reuse. */
	z->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	res->zygote_id = z->id;
	res->zygote_pid = pid;
	snprintf(res->dir, sizeof(res->dir), "%s", z->dir);

	if (req->n > 0) {
		ret = spawn_children(vm, z, req->n, res, err);
		if (ret < 0) {
			/* The zygote goes too: a failed branch leaves nothing behind. */
			if (z->in_use) {
				send_msg(z->sock, "exit");
				zygote_gone(vm, z);
			}
			return fk_wrap(err, "branch");
		}
	}
	/* After the request's own children, so that building the pool does not slow them. */
	if (req->pool > 0) {
		struct fk_err disk_err;
		if (zygote_disks_ready(vm, z, &disk_err) < 0)
			snprintf(z->pool_error, sizeof(z->pool_error), "%.250s", disk_err.msg);
		else if (send_msg(z->sock, "pool %d", req->pool) == 0)
			z->pool = req->pool;
		else
			snprintf(z->pool_error, sizeof(z->pool_error), "cannot reach the zygote");
	}
	if (req->persist) {
		struct fk_err disk_err;
		snprintf(z->persist_path, sizeof(z->persist_path), "%s", req->persist);
		z->persist = PERSIST_WRITING;
		z->persist_start_us = monotonic_us();
		if (z->snapshot_only)
			snapshot_job_start(vm, req->persist, res->pause_us);
		if (zygote_disks_ready(vm, z, &disk_err) < 0) {
			z->persist = PERSIST_FAILED;
			snprintf(z->persist_error, sizeof(z->persist_error), "%.250s",
				 disk_err.msg);
		} else if (send_msg(z->sock, "persist %s", req->persist) < 0) {
			z->persist = PERSIST_FAILED;
			snprintf(z->persist_error, sizeof(z->persist_error),
				 "cannot reach the zygote");
		}
		while (req->wait && z->persist == PERSIST_WRITING) {
			char msg[MSG_MAX];
			ssize_t got = recv_msg(&vm->loop, z->sock, msg, sizeof(msg), -1);
			if (got <= 0) {
				zygote_gone(vm, z);
				break;
			}
			handle_zygote_msg(z, msg);
		}
		if (z->snapshot_only && z->in_use && z->persist == PERSIST_FAILED) {
			/* Never asked to write (its disk copy failed, or it was unreachable). */
			snapshot_job_update(z);
			send_msg(z->sock, "exit");
			zygote_gone(vm, z);
		}
		res->persist = z->persist;
		res->disk_copy_us = z->disk_copy_us;
		if (z->persist != PERSIST_WRITING) {
			res->write_us = z->write_us;
			res->hash_us = z->hash_us;
		}
		snprintf(res->persist_error, sizeof(res->persist_error), "%s", z->persist_error);
	}
	if (z->in_use) {
		struct fk_err soft;
		/* Without these watches the zygote still works; only async status is lost. */
		if (event_loop_add(&vm->loop, z->sock, EPOLLIN, on_zygote_msg, z, &soft) < 0) {
		}
		if (z->pidfd >= 0 &&
		    event_loop_add(&vm->loop, z->pidfd, EPOLLIN, on_zygote_exit, z, &soft) < 0) {
		}
	}
	return 0;

fail:
	/* Copies set up for this branch would only slow the guest's writes. */
	for (int d = 0; d < vm->nr_disks; d++)
		virtio_blk_end_copy(vm->disks[d].blk);
	if (paused) {
		struct fk_err ignored;
		vm_resume(vm, &ignored);
	}
	/* Only the disk copies this branch created: an existing directory holds other files. */
	for (int i = 0; req->dir_exists && i < disk_copies_made; i++) {
		char path[2300];
		snprintf(path, sizeof(path), "%s/%s", z->dir, w.files[i].name);
		unlink(path);
	}
	snap_writer_free(&w);
	close(sv[0]);
	close(sv[1]);
fail_dir:
	/* Only what this branch created: the directory and the disk copies in it. */
	if (!req->dir_exists)
		remove_branch_dir(z->dir);
	return ret;
}

int branch_spawn(struct vm *vm, int id, int n, struct branch_result *res, struct fk_err *err)
{
	struct zygote *z = find_zygote(vm, id);
	int ret;

	memset(res, 0, sizeof(*res));
	if (!z)
		return fk_fail(err, ENOENT, "zygote %d: no such zygote", id);
	if (n < 1)
		return fk_fail(err, EINVAL, "n=%d: expected at least 1 child", n);
	ret = check_children_fit(vm, n, err);
	if (ret < 0)
		return ret;
	res->zygote_id = z->id;
	res->zygote_pid = z->pid;
	snprintf(res->dir, sizeof(res->dir), "%s", z->dir);
	return spawn_children(vm, z, n, res, err);
}

int branch_release(struct vm *vm, int id, struct fk_err *err)
{
	struct zygote *z = find_zygote(vm, id);

	if (!z)
		return fk_fail(err, ENOENT, "zygote %d: no such zygote", id);
	send_msg(z->sock, "exit");
	/* Its parked children end with it: let it reap them and remove their directories. */
	if (z->pool > 0 && z->pidfd >= 0) {
		struct pollfd p = {.fd = z->pidfd, .events = POLLIN};
		while (poll(&p, 1, ZYGOTE_RELEASE_TIMEOUT_MS) < 0 && errno == EINTR)
			;
	}
	zygote_gone(vm, z);
	return 0;
}

void branch_release_all(struct vm *vm)
{
	if (!vm->branch)
		return;
	for (int i = 0; i < BRANCH_MAX_ZYGOTES; i++)
		if (vm->branch->zygotes[i].in_use)
			branch_release(vm, vm->branch->zygotes[i].id, &(struct fk_err){0});
}
