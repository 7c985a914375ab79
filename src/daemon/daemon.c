/* SPDX-License-Identifier: MIT */
/*
 * The supervisor of `forkd serve` (daemon.h): starts forkd-vmm processes,
 * branches, snapshots and spawns through their control sockets, and keeps
 * the registry (registry.h) in step with what the processes do.
 *
 * Concurrency: one mutex (d->lock) guards the registry handle and the list
 * of tracked processes. It is never held while waiting for a VMM: an
 * operation marks the VMs it works on busy under the lock, does its slow
 * part unlocked, and takes the lock again to record the outcome. A busy VM
 * is refused (-EBUSY) by any other operation that would change it.
 *
 * Processes: the daemon is the child subreaper, so BRANCH children whose
 * zygote and source are gone become its children. Every live VMM (and
 * zygote) is watched by a pidfd in one epoll set, served by the monitor
 * thread, which reaps our own children (their exit status is then known)
 * and marks dead VMs exited (exit 0, unknown, or a signal) or failed (a
 * non-zero exit code).
 */
#include "daemon/daemon.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/agent_client.h"
#include "control/control.h"
#include "core/config.h"
#include "daemon/registry.h"
#include "daemon/vmm_launch.h"
#include "jail/cgroup.h"
#include "net/netns.h"
#include "state/snapshot_format.h"
#include "state/vm_snapshot.h"
#include "state/vm_state.h"
#include "util/json_kind.h"

#define STATUS_CALL_MS	    1000  /* one `status` call while waiting for a VMM */
#define START_TIMEOUT_MS    30000 /* launch to the control socket answering; see start_timeout_ms */
#define AGENT_BOOT_MS	    120000 /* an image VM's control socket to its agent answering ping */
#define AGENT_PING_MS	    1000   /* one ping while waiting for the agent */
#define SHUTDOWN_WAIT_MS    3000   /* `shutdown` to exit, before SIGKILL */
#define KILL_WAIT_MS	    5000   /* SIGKILL to exit */
#define BRANCH_TIMEOUT_MS   120000 /* a branch call (children started, persist waited for) */
#define SNAPSHOT_TIMEOUT_MS 300000
#define ZOMBIE_SWEEP_MS	    20
#define LOCK_WAIT_MS	    3000 /* daemon.lock still held by a killed daemon's spawn child */
#define PERSIST_POLL_MS	    50
#define MEM_MIB_MIN	    32
#define MEM_MIB_MAX	    (1024 * 1024)
#define CPUS_MAX	    254
/* The longest socket below the state dir: vms/<id>/branches/<k>/child-<i>/control.sock. */
#define LONGEST_SOCK_TAIL (sizeof("/vms/vm-01234567/branches/999999/child-1023/control.sock") - 1)

/*
 * Where a VM with limits gets its cgroup: forkd-vmm's default parent, given
 * explicitly so that the path the API shows is the one the VMM used.
 */
#define DAEMON_CGROUP_ROOT   "/sys/fs/cgroup"
#define DAEMON_CGROUP_PARENT DAEMON_CGROUP_ROOT "/forkd"
#define LIMIT_MEM_MIB_MIN    16
#define LIMIT_PIDS_MAX	     4194304

/*
 * The cgroup limits of a VM's family (docs/jail.md): a created or spawned VM
 * with any limit has its own cgroup, vm-<hex of its id>; its BRANCH children
 * are in the same one, and show the same limits.
 */
struct vm_limits {
	long long memory_max_mib; /* 0: none */
	long long pids_max;	  /* 0: none */
	char cpu_max[32];	  /* "QUOTA/PERIOD" in µs; "": none */
	char cgroup[72];	  /* the cgroup's name under DAEMON_CGROUP_PARENT; "": none */
};

/* What the registry has no column for: kept in DIR/vms/<id>/vm.json. */
struct vm_meta {
	int mem_mib; /* 0 when unknown */
	int cpus;
	struct vm_limits limits;
	uint32_t uid; /* jailed: the VM's uid (its BRANCH children's too); 0: not jailed */
	/*
	 * Jailed: the VM whose directory and jail this one's jail is (its own for
	 * a created or spawned VM, the first source's for BRANCH children, which
	 * live in their source's jail): its branches and snapshot outbox are made
	 * there, the only directory of the daemon's the jail can write.
	 */
	char home[REG_ID_MAX];
};

/* A VM or zygote the daemon knows: its process watch and what the registry lacks. */
struct tracked {
	struct tracked *next;
	uint64_t key; /* epoll data: looked up under the lock, never a pointer */
	bool is_zygote;
	char id[REG_ID_MAX];
	char vm[REG_ID_MAX]; /* zygotes: their source VM */
	pid_t pid;
	int pidfd; /* -1: not watched */
	bool dead;
	int exit_status;
	bool busy;	     /* VMs: an operation is changing it */
	bool asking;	     /* VMs: a GET is asking its VMM's status (refresh_paused) */
	double asked_at;     /* VMs: when a GET last asked (mono_s) */
	struct vm_meta meta; /* VMs */
	/*
	 * VMs: the number from which its branches/ directory's next free <k> is looked for (a
	 * scan from 0 took one lstat per earlier branch of the VM, on every branch's answer).
	 */
	int next_branch;
	/* VMs starting: their namespace and host address as `status` first said (wait_answering) */
	char net_netns[REG_NETNS_MAX];
	char net_host_addr[REG_ADDR_MAX];
};

/* pause_us of snapshots taken by this daemon (the registry does not keep it). */
struct snap_meta {
	struct snap_meta *next;
	char tag[REG_TAG_MAX + 1];
	uint64_t pause_us;
};

/*
 * What a spawn learns of a snapshot before starting VMMs from it: its read-only disks are
 * allowed, whether it has a vsock device, its size. Kept per snapshot while its state file is
 * the same file unchanged (device, inode, size, mtime, ctime), because reading and parsing
 * that file twice was ≈ 0.1 ms of every spawn's answer (bench/api.sh) and a ready snapshot is
 * never rewritten; dropped with the snapshot. Only checks that passed are kept.
 */
struct spawn_facts {
	bool vsock;
	int mem_mib, cpus; /* 0: unknown */
};

struct spawn_check {
	struct spawn_check *next;
	char tag[REG_TAG_MAX + 1];
	char path[PATH_MAX];
	char allowed[PATH_MAX]; /* the read-only image it was checked against */
	struct stat state;
	struct spawn_facts facts;
};

/*
 * A process that died while it was not our child (a BRANCH child of a live source): its
 * parent may die before reaping it, and then it is reparented to us, the subreaper, as a
 * zombie. Kept until we reaped it or it is gone (reaped by its parent).
 */
struct zombie {
	struct zombie *next;
	int pidfd;
};

/*
 * A read-only use of the registry file on a connection of its own, so that
 * listing queries (GET /v1/tree, GET /v1/vms) run without d->lock: WAL lets
 * readers run beside the one writer, each seeing the last commit. A handle
 * is one thread's at a time (registry.h): each has its own mutex.
 */
#define NR_READERS 4
struct reader {
	pthread_mutex_t lock;
	struct registry *reg; /* NULL: not opened, the queries use d->reg under d->lock */
};

struct daemon {
	char state_dir[PATH_MAX];
	char vmm[PATH_MAX];
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a tracked process died, or a persist thread ended */
	struct registry *reg;
	struct tracked *tracked;
	struct snap_meta *snaps;
	struct spawn_check *spawn_checks; /* under lock */
	struct zombie *zombies;
	uint64_t next_key;
	int lockfd; /* DIR/daemon.lock, flock'ed: one daemon per state dir */
	int epfd;
	int wakefd;
	pthread_t monitor;
	bool monitor_started;
	bool stopping;
	int nr_persist_threads; /* background threads (persists, zygote releases): close waits */
	daemon_metric_fn metric;
	void *metric_opaque;
	bool timing; /* FORKD_SERVE_TIMING=1: each branch and spawn logs its spans (op_timer) */
	struct reader readers[NR_READERS];
	unsigned next_reader; /* round robin when all readers are busy; atomic */
	bool jail;	      /* daemon_config.jail: VMs started from now on are jailed */
	uint32_t uid_first, uid_count;
	/*
	 * VM IDs reserved in the registry for VMs whose VMM starts before their row is written
	 * (take_vm_id: a spawn); under lock.
	 */
	char (*vm_ids)[REG_ID_MAX];
	size_t nr_vm_ids;
};

/* Seconds as milliseconds rounded to the microsecond, for an answer's *_ms field. */
static json_t *json_ms(double seconds)
{
	return json_real((double)(long long)(seconds * 1e6 + 0.5) / 1e3);
}

static double mono_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int64_t wall_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void report(struct daemon *d, enum daemon_metric m, double seconds)
{
	daemon_metric_fn fn;
	void *opaque;

	pthread_mutex_lock(&d->lock);
	fn = d->metric;
	opaque = d->metric_opaque;
	pthread_mutex_unlock(&d->lock);
	if (fn)
		fn(opaque, m, seconds);
}

void daemon_set_metrics(struct daemon *d, daemon_metric_fn fn, void *opaque)
{
	pthread_mutex_lock(&d->lock);
	d->metric = fn;
	d->metric_opaque = opaque;
	pthread_mutex_unlock(&d->lock);
}

/*
 * Where an operation's time goes, for bench/api.sh's overhead: with
 * FORKD_SERVE_TIMING=1 in the daemon's environment, each branch and spawn
 * prints one line on stderr, `forkd serve: timing OP: SPAN MS ... total MS`,
 * each span the wall time since the previous mark. Off, a mark is one
 * clock_gettime.
 */
struct op_timer {
	double t0, last;
	char line[512];
	size_t len;
};

static void timer_start(struct op_timer *tm)
{
	tm->t0 = tm->last = mono_s();
	tm->len = 0;
	tm->line[0] = '\0';
}

static void timer_mark(struct op_timer *tm, const char *span)
{
	double now = mono_s();
	int n;

	if (tm->len < sizeof(tm->line)) {
		n = snprintf(tm->line + tm->len, sizeof(tm->line) - tm->len, " %s %.3f", span,
			     (now - tm->last) * 1e3);
		if (n > 0)
			tm->len += (size_t)n;
	}
	tm->last = now;
}

static void timer_end(const struct daemon *d, const struct op_timer *tm, const char *op)
{
	if (d->timing)
		fprintf(stderr, "forkd serve: timing %s:%s total %.3f\n", op, tm->line,
			(mono_s() - tm->t0) * 1e3);
}

/* ---- Paths ---- */

static int path_fmt(char *buf, size_t len, struct fk_err *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int path_fmt(char *buf, size_t len, struct fk_err *err, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len)
		return fk_fail(err, ENAMETOOLONG, "path %s...: longer than %zu bytes", buf,
			       len - 1);
	return 0;
}

static int vm_dir(struct daemon *d, const char *id, const char *name, char *buf, size_t len,
		  struct fk_err *err)
{
	if (name)
		return path_fmt(buf, len, err, "%s/vms/%s/%s", d->state_dir, id, name);
	return path_fmt(buf, len, err, "%s/vms/%s", d->state_dir, id);
}

static int snap_dir(struct daemon *d, const char *tag, char *buf, size_t len, struct fk_err *err)
{
	return path_fmt(buf, len, err, "%s/snapshots/%s", d->state_dir, tag);
}

/*
 * Where a VM writes a snapshot: in its own directory (".snapshot-<tag>"; tags
 * never start with '.'), which a jailed VM can write, and which holds nothing
 * of other VMs. The daemon then moves it to snapshots/<tag> (publish_snapshot),
 * out of the VM's reach: a VM cannot change a snapshot after it is ready.
 */
static int snap_outbox(struct daemon *d, const char *vm_id, const char *tag, char *buf, size_t len,
		       struct fk_err *err)
{
	return path_fmt(buf, len, err, "%s/vms/%s/.snapshot-%s", d->state_dir, vm_id, tag);
}

/* The jail directory of a VM the daemon started jailed (forkd-vmm --jail). */
static int jail_dir(struct daemon *d, const char *id, char *buf, size_t len, struct fk_err *err)
{
	return path_fmt(buf, len, err, "%s/jails/%s", d->state_dir, id);
}

/*
 * A snapshot of jailed VMs is read by VMs of other uids (spawn): owned by
 * root and the VMs' group, readable by the group only (the writer made it
 * 0700/0600 as the source VM's uid). Only regular files are expected in it;
 * anything else (a hostile VMM's symlink) is refused, never followed.
 */
static int share_snapshot(struct daemon *d, const char *path, struct fk_err *err)
{
	int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *e;
	DIR *dir;
	int ret = 0;

	if (dfd < 0)
		return fk_fail_errno(err, errno, "snapshot %s", path);
	if (fchown(dfd, 0, (gid_t)d->uid_first) < 0 || fchmod(dfd, 0750) < 0) {
		ret = fk_fail_errno(err, errno, "snapshot %s: share with the VMs' group", path);
		close(dfd);
		return ret;
	}
	dir = fdopendir(dfd);
	if (!dir) {
		ret = fk_fail_errno(err, errno, "snapshot %s", path);
		close(dfd);
		return ret;
	}
	while (ret == 0 && (e = readdir(dir))) {
		struct stat st;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			ret = fk_fail_errno(err, errno, "snapshot %s/%s", path, e->d_name);
		else if (!S_ISREG(st.st_mode))
			ret = fk_fail(err, EINVAL,
				      "snapshot %s/%s: not a regular file (mode 0%o): refused",
				      path, e->d_name, (unsigned)st.st_mode);
		else if (fchownat(dfd, e->d_name, 0, (gid_t)d->uid_first, AT_SYMLINK_NOFOLLOW) <
			     0 ||
			 fchmodat(dfd, e->d_name, 0640, 0) < 0)
			ret = fk_fail_errno(err, errno, "snapshot %s/%s: share with the VMs' group",
					    path, e->d_name);
	}
	closedir(dir);
	return ret;
}

/*
 * Moves a snapshot a VM wrote into its outbox to its place (snapshots/<tag>),
 * shared with the VMs' group when VMs are jailed. A snapshot already in place
 * (a daemon killed after the move) is only shared again.
 */
static int publish_snapshot(struct daemon *d, const char *outbox, const char *path,
			    struct fk_err *err)
{
	struct stat st;

	if (rename(outbox, path) < 0 && !(errno == ENOENT && access(path, F_OK) == 0))
		return fk_fail_errno(err, errno, "snapshot: move %s to %s", outbox, path);
	/* Written by a jailed VMM (its uid's), also one re-adopted by a daemon run --no-jail. */
	if (d->jail || (lstat(path, &st) == 0 && st.st_uid != 0))
		return share_snapshot(d, path, err);
	return 0;
}

/*
 * A uid for a new jailed VM: the first of the daemon's range no tracked VM
 * has (a VM keeps its uid until deleted; its BRANCH children share it). Lock held.
 */
static int jail_uid_alloc(struct daemon *d, uint32_t *uid, struct fk_err *err);

/* Jailed VMs: forkd-vmm's --jail, --uid and --gid, alive as long as the argv using them. */
struct jail_args {
	char jail[PATH_MAX];
	char uid[16], gid[16];
};

/*
 * Gives the new VM's directory to its uid (mode 0700: its sockets, console
 * log and overlays are made there by the jailed VMM) and names its jail; a
 * jail left from an earlier VM of the same id is removed. uid 0: not jailed.
 */
static int jail_prepare(struct daemon *d, const char *id, uint32_t uid, const char *vmdir,
			struct jail_args *j, struct fk_err *err)
{
	int ret;

	if (!uid)
		return 0;
	if (chown(vmdir, uid, d->uid_first) < 0 || chmod(vmdir, 0700) < 0)
		return fk_fail_errno(err, errno, "%s: give %s to uid %u", id, vmdir, uid);
	if ((ret = jail_dir(d, id, j->jail, sizeof(j->jail), err)) < 0)
		return ret;
	fk_remove_tree(j->jail);
	snprintf(j->uid, sizeof(j->uid), "%u", uid);
	snprintf(j->gid, sizeof(j->gid), "%u", d->uid_first);
	return 0;
}

static void add_jail_args(uint32_t uid, const struct jail_args *j, char **argv, int *a)
{
	if (!uid)
		return;
	argv[(*a)++] = "--jail";
	argv[(*a)++] = (char *)j->jail;
	argv[(*a)++] = "--uid";
	argv[(*a)++] = (char *)j->uid;
	argv[(*a)++] = "--gid";
	argv[(*a)++] = (char *)j->gid;
}

/* DIR/vms/<id>/vm.json keeps what the registry has no column for (mem_mib, cpus). */
/*
 * Writes a small JSON file atomically (temp file, rename): a daemon killed
 * mid-write leaves the old file or the new one, never half of one. No fsync,
 * like the registry's synchronous=NORMAL: after a power loss the VMs these
 * files describe are gone too.
 */
static void json_write_atomic(json_t *o, const char *path)
{
	char tmp[PATH_MAX + 8], *text;
	size_t len;
	bool ok;
	int fd;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return;
	/* One write(2): json_dumpfd writes each token with its own (14 for a vm.json). */
	text = json_dumps(o, 0);
	if (!text)
		return;
	len = strlen(text);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		free(text);
		return;
	}
	ok = write(fd, text, len) == (ssize_t)len;
	free(text);
	if (close(fd) < 0)
		ok = false;
	if (!ok || rename(tmp, path) < 0)
		unlink(tmp);
}

static json_t *limits_json(const struct vm_limits *l)
{
	char path[sizeof(DAEMON_CGROUP_PARENT) + sizeof(l->cgroup) + 1];

	if (!l->cgroup[0])
		return json_null();
	snprintf(path, sizeof(path), "%s/%s", DAEMON_CGROUP_PARENT, l->cgroup);
	return json_pack("{s:o,s:o,s:o,s:s}", "memory_max_mib",
			 l->memory_max_mib ? json_integer(l->memory_max_mib) : json_null(),
			 "cpu_max", l->cpu_max[0] ? json_string(l->cpu_max) : json_null(),
			 "pids_max", l->pids_max ? json_integer(l->pids_max) : json_null(),
			 "cgroup", path);
}

static void meta_save(struct daemon *d, const char *id, const struct vm_meta *m)
{
	struct fk_err ignored = {0};
	char path[PATH_MAX];
	json_t *o;

	if (vm_dir(d, id, "vm.json", path, sizeof(path), &ignored) < 0)
		return;
	o = json_pack("{s:i,s:i}", "mem_mib", m->mem_mib, "cpus", m->cpus);
	if (o && m->uid)
		json_object_set_new(o, "uid", json_integer(m->uid));
	if (o && m->home[0])
		json_object_set_new(o, "home", json_string(m->home));
	if (o && m->limits.cgroup[0])
		json_object_set_new(o, "limits",
				    json_pack("{s:I,s:s,s:I,s:s}", "memory_max_mib",
					      (json_int_t)m->limits.memory_max_mib, "cpu_max",
					      m->limits.cpu_max, "pids_max",
					      (json_int_t)m->limits.pids_max, "cgroup",
					      m->limits.cgroup));
	if (o)
		json_write_atomic(o, path);
	json_decref(o);
}

/* false: t has no vm.json (a BRANCH child: readopt derives its meta from its source's). */
static bool meta_load(struct daemon *d, struct tracked *t)
{
	struct fk_err ignored = {0};
	char path[PATH_MAX];
	json_t *o;

	if (vm_dir(d, t->id, "vm.json", path, sizeof(path), &ignored) < 0)
		return false;
	o = json_load_file(path, 0, NULL);
	if (!o)
		return false;
	t->meta.mem_mib = (int)json_integer_value(json_object_get(o, "mem_mib"));
	t->meta.cpus = (int)json_integer_value(json_object_get(o, "cpus"));
	json_int_t uid = json_integer_value(json_object_get(o, "uid"));
	const char *home = json_string_value(json_object_get(o, "home"));
	if (uid > 0 && uid <= UINT32_MAX)
		t->meta.uid = (uint32_t)uid;
	if (home && strlen(home) < sizeof(t->meta.home) && strncmp(home, "vm-", 3) == 0 &&
	    !strchr(home, '/'))
		snprintf(t->meta.home, sizeof(t->meta.home), "%s", home);
	/* Written by this daemon, but checked as any file: a bad one means no limits shown. */
	json_t *l = json_object_get(o, "limits");
	const char *cpu = json_string_value(json_object_get(l, "cpu_max"));
	const char *cg = json_string_value(json_object_get(l, "cgroup"));
	if (cg && cgroup_name_ok(cg) && strlen(cg) < sizeof(t->meta.limits.cgroup) &&
	    (!cpu || strlen(cpu) < sizeof(t->meta.limits.cpu_max))) {
		t->meta.limits.memory_max_mib =
		    json_integer_value(json_object_get(l, "memory_max_mib"));
		t->meta.limits.pids_max = json_integer_value(json_object_get(l, "pids_max"));
		snprintf(t->meta.limits.cpu_max, sizeof(t->meta.limits.cpu_max), "%s",
			 cpu ? cpu : "");
		snprintf(t->meta.limits.cgroup, sizeof(t->meta.limits.cgroup), "%s", cg);
	}
	json_decref(o);
	return true;
}

/* ---- Tracked processes (callers hold d->lock) ---- */

static struct tracked *find_tracked(struct daemon *d, const char *id)
{
	for (struct tracked *t = d->tracked; t; t = t->next)
		if (strcmp(t->id, id) == 0)
			return t;
	return NULL;
}

static struct tracked *find_key(struct daemon *d, uint64_t key)
{
	for (struct tracked *t = d->tracked; t; t = t->next)
		if (t->key == key)
			return t;
	return NULL;
}

static struct tracked *track(struct daemon *d, const char *id, bool is_zygote)
{
	struct tracked *t = find_tracked(d, id);

	if (t)
		return t;
	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->key = ++d->next_key;
	t->is_zygote = is_zygote;
	snprintf(t->id, sizeof(t->id), "%s", id);
	t->pidfd = -1;
	t->exit_status = REG_NO_EXIT;
	t->next = d->tracked;
	d->tracked = t;
	return t;
}

static void unwatch(struct daemon *d, struct tracked *t)
{
	if (t->pidfd < 0)
		return;
	epoll_ctl(d->epfd, EPOLL_CTL_DEL, t->pidfd, NULL);
	close(t->pidfd);
	t->pidfd = -1;
}

static void untrack(struct daemon *d, const char *id)
{
	for (struct tracked **pp = &d->tracked; *pp; pp = &(*pp)->next) {
		struct tracked *t = *pp;

		if (strcmp(t->id, id) != 0)
			continue;
		unwatch(d, t);
		*pp = t->next;
		free(t);
		return;
	}
}

/* Watches pid (already known to be the process meant) through a pidfd. */
static int watch(struct daemon *d, struct tracked *t, pid_t pid, struct fk_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
	int fd = fk_pidfd_open(pid);

	if (fd < 0)
		return fk_fail_errno(err, -fd, "%s: pidfd_open(%d)", t->id, (int)pid);
	ev.data.u64 = t->key;
	if (epoll_ctl(d->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;
		close(fd);
		return fk_fail_errno(err, e, "%s: epoll_ctl", t->id);
	}
	unwatch(d, t);
	t->pid = pid;
	t->pidfd = fd;
	t->dead = false;
	t->exit_status = REG_NO_EXIT;
	return 0;
}

/* The VM whose directory holds id's branches and snapshot outbox (vm_meta.home). Lock held. */
static const char *home_of(struct daemon *d, const char *id)
{
	struct tracked *t = find_tracked(d, id);

	return t && t->meta.home[0] ? t->meta.home : id;
}

static int vm_dir(struct daemon *d, const char *id, const char *name, char *buf, size_t len,
		  struct fk_err *err);

/*
 * Reserves VM IDs until at least want are kept (one registry write), each with its directory
 * made (vms/<id>, empty: a daemon that stops before using it removes it at its next start,
 * stop_unrecorded_vms). Lock held.
 */
#define VM_ID_RESERVE 16
static int reserve_vm_ids(struct daemon *d, size_t want, struct fk_err *err)
{
	size_t more = want > d->nr_vm_ids ? want - d->nr_vm_ids : 0;
	char(*ids)[REG_ID_MAX], dir[PATH_MAX];
	int ret;

	if (!more)
		return 0;
	ids = realloc(d->vm_ids, (d->nr_vm_ids + more) * sizeof(*ids));
	if (!ids)
		return fk_fail(err, ENOMEM, "out of memory for %zu VM IDs", more);
	d->vm_ids = ids;
	ret = registry_vm_ids_reserve(d->reg, more, ids + d->nr_vm_ids, err);
	for (size_t i = 0; ret == 0 && i < more; i++) {
		ret = vm_dir(d, ids[d->nr_vm_ids + i], NULL, dir, sizeof(dir), err);
		if (ret == 0 && mkdir(dir, 0755) < 0 && errno != EEXIST)
			ret =
			    fk_fail_errno(err, errno, "%s: create %s", ids[d->nr_vm_ids + i], dir);
	}
	if (ret == 0)
		d->nr_vm_ids += more;
	return ret;
}

/*
 * A reserved VM ID into id, whose directory exists: a spawn neither writes the registry nor
 * makes a directory before it starts its VMMs (they restore meanwhile: record_started). Lock
 * held.
 */
static int take_vm_id(struct daemon *d, size_t want, char id[REG_ID_MAX], struct fk_err *err)
{
	int ret = reserve_vm_ids(d, want, err);

	if (ret < 0)
		return ret;
	memcpy(id, d->vm_ids[--d->nr_vm_ids], REG_ID_MAX);
	return 0;
}

static int jail_uid_alloc(struct daemon *d, uint32_t *uid, struct fk_err *err)
{
	for (uint32_t k = 0; k < d->uid_count; k++) {
		uint32_t u = d->uid_first + k;
		bool taken = false;

		for (struct tracked *t = d->tracked; t && !taken; t = t->next)
			taken = !t->is_zygote && t->meta.uid == u;
		if (!taken) {
			*uid = u;
			return 0;
		}
	}
	return fk_fail(err, EAGAIN, "all %u uids of jailed VMs (%u..%u) are in use: delete VMs",
		       d->uid_count, d->uid_first, d->uid_first + d->uid_count - 1);
}

static bool live_state(enum reg_vm_state s)
{
	return s == REG_VM_STARTING || s == REG_VM_RUNNING || s == REG_VM_PAUSED;
}

/* The process behind t ended: reap it if it is ours, record it. */
static void on_death(struct daemon *d, struct tracked *t)
{
	struct fk_err err = {0};
	struct reg_vm vm;
	int status = REG_NO_EXIT, exited_code = 0;

	if (!fk_pidfd_reap(t->pidfd, &status, &exited_code)) {
		struct zombie *z = calloc(1, sizeof(*z));

		if (z) {
			epoll_ctl(d->epfd, EPOLL_CTL_DEL, t->pidfd, NULL);
			z->pidfd = t->pidfd;
			t->pidfd = -1;
			z->next = d->zombies;
			d->zombies = z;
		}
	}
	unwatch(d, t);
	t->dead = true;
	t->exit_status = status;
	if (!t->is_zygote && registry_vm_get(d->reg, t->id, &vm, &err) == 0 &&
	    live_state(vm.state)) {
		enum reg_vm_state s = exited_code && status != 0 ? REG_VM_FAILED : REG_VM_EXITED;

		if (registry_vm_set_state(d->reg, t->id, s, status, &err) < 0)
			fprintf(stderr, "forkd serve: %s exited: %s\n", t->id, err.msg);
	}
	pthread_cond_broadcast(&d->cond);
}

/* Reaps the zombies that became ours; forgets those reaped by their own parent. Lock held. */
static void sweep_zombies(struct daemon *d)
{
	for (struct zombie **pp = &d->zombies; *pp;) {
		struct zombie *z = *pp;
		int status, exited_code;

		if (fk_pidfd_reap(z->pidfd, &status, &exited_code) ||
		    fk_pidfd_kill(z->pidfd, 0) == -ESRCH) {
			close(z->pidfd);
			*pp = z->next;
			free(z);
			continue;
		}
		pp = &z->next;
	}
}

static void *monitor_main(void *arg)
{
	struct daemon *d = arg;
	struct epoll_event evs[32];

	for (;;) {
		int n;

		pthread_mutex_lock(&d->lock);
		sweep_zombies(d);
		n = d->zombies ? ZOMBIE_SWEEP_MS : -1;
		pthread_mutex_unlock(&d->lock);
		n = epoll_wait(d->epfd, evs, 32, n);

		if (n < 0 && errno != EINTR)
			break;
		pthread_mutex_lock(&d->lock);
		if (d->stopping) {
			pthread_mutex_unlock(&d->lock);
			break;
		}
		for (int i = 0; i < n; i++) {
			struct tracked *t;

			if (evs[i].data.u64 == 0) {
				uint64_t v;
				if (read(d->wakefd, &v, sizeof(v)) < 0) {
				}
				continue;
			}
			t = find_key(d, evs[i].data.u64);
			if (t && t->pidfd >= 0)
				on_death(d, t);
		}
		pthread_mutex_unlock(&d->lock);
	}
	return NULL;
}

/* Waits (lock held) until t's process died or timeout_ms passed; true if it died. */
static bool wait_dead(struct daemon *d, const char *id, int timeout_ms)
{
	struct timespec until;
	struct tracked *t;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	for (;;) {
		t = find_tracked(d, id);
		if (!t || t->pidfd < 0)
			return true;
		if (pthread_cond_timedwait(&d->cond, &d->lock, &until) == ETIMEDOUT) {
			t = find_tracked(d, id);
			return !t || t->pidfd < 0;
		}
	}
}

/* ---- JSON ---- */

static json_t *str_or_null(const char *s)
{
	return s && s[0] ? json_string(s) : json_null();
}

static json_t *iso_time(int64_t us)
{
	char buf[64], out[80];
	time_t secs = (time_t)(us / 1000000);
	struct tm tm;

	if (us <= 0 || !gmtime_r(&secs, &tm))
		return json_null();
	strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, sizeof(out), "%s.%03dZ", buf, (int)((us / 1000) % 1000));
	return json_string(out);
}

/* m: what the registry has no column for (mem_mib and cpus 0: unknown). */
static json_t *vm_json_sized(const struct reg_vm *vm, const struct vm_meta *m)
{
	int mem_mib = m->mem_mib, cpus = m->cpus;
	bool branched = vm->parent_vm[0] != '\0';
	json_t *o = json_object();

	json_object_set_new(o, "id", json_string(vm->id));
	json_object_set_new(o, "state", json_string(reg_vm_state_name(vm->state)));
	json_object_set_new(o, "pid", vm->proc.pid ? json_integer(vm->proc.pid) : json_null());
	json_object_set_new(o, "parent", str_or_null(vm->parent_vm));
	json_object_set_new(o, "zygote", str_or_null(vm->zygote));
	json_object_set_new(o, "snapshot", str_or_null(vm->snapshot));
	json_object_set_new(o, "tag", str_or_null(vm->tag));
	json_object_set_new(o, "image", str_or_null(vm->image));
	json_object_set_new(o, "kernel", str_or_null(vm->kernel));
	json_object_set_new(o, "mem_mib", mem_mib ? json_integer(mem_mib) : json_null());
	json_object_set_new(o, "cpus", cpus ? json_integer(cpus) : json_null());
	json_object_set_new(o, "created", iso_time(vm->created_us));
	json_object_set_new(o, "branched_at", branched ? iso_time(vm->branched_us) : json_null());
	json_object_set_new(o, "pause_us",
			    branched ? json_integer((json_int_t)vm->pause_us) : json_null());
	json_object_set_new(o, "control_socket", str_or_null(vm->control_sock));
	json_object_set_new(o, "vsock_socket", str_or_null(vm->vsock_sock));
	json_object_set_new(o, "exit_status",
			    vm->exit_status == REG_NO_EXIT ? json_null()
							   : json_integer(vm->exit_status));
	json_object_set_new(o, "net", json_string(vm->net[0] ? vm->net : "none"));
	json_object_set_new(o, "net_netns", str_or_null(vm->net_netns));
	json_object_set_new(o, "net_host_addr", str_or_null(vm->net_host_addr));
	json_object_set_new(o, "limits", limits_json(&m->limits));
	return o;
}

/* Lock held (the tracked list). */
static json_t *vm_json(struct daemon *d, const struct reg_vm *vm)
{
	static const struct vm_meta unknown;
	struct tracked *t = find_tracked(d, vm->id);

	return vm_json_sized(vm, t ? &t->meta : &unknown);
}

/* ---- Readers ---- */

/* A free reader, or (all busy) the next one in turn, waited for; NULL if none was opened. */
static struct reader *reader_get(struct daemon *d)
{
	unsigned k;

	if (!d->readers[0].reg)
		return NULL;
	for (unsigned i = 0; i < NR_READERS; i++)
		if (d->readers[i].reg && pthread_mutex_trylock(&d->readers[i].lock) == 0)
			return &d->readers[i];
	k = __atomic_fetch_add(&d->next_reader, 1, __ATOMIC_RELAXED) % NR_READERS;
	while (!d->readers[k].reg)
		k = (k + 1) % NR_READERS;
	pthread_mutex_lock(&d->readers[k].lock);
	return &d->readers[k];
}

static void reader_put(struct reader *r)
{
	if (r)
		pthread_mutex_unlock(&r->lock);
}

/* The meta of n VMs (sizes, limits) from the tracked list, under the lock only for the copy. */
static int sizes_of(struct daemon *d, const struct reg_vm *const *vms, size_t n,
		    struct vm_meta **out, struct fk_err *err)
{
	struct vm_meta *sz = calloc(n ? n : 1, sizeof(*sz));

	*out = NULL;
	if (!sz)
		return fk_fail(err, ENOMEM, "out of memory for %zu VMs", n);
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = find_tracked(d, vms[i]->id);

		if (t)
			sz[i] = t->meta;
	}
	pthread_mutex_unlock(&d->lock);
	*out = sz;
	return 0;
}

/* DIR/snapshots/.<tag>.json keeps a snapshot's pause_us across restarts (tags never start
 * with '.', so it cannot be a snapshot itself). */
static int snap_meta_path(struct daemon *d, const char *tag, char *buf, size_t len)
{
	struct fk_err ignored = {0};

	return path_fmt(buf, len, &ignored, "%s/snapshots/.%s.json", d->state_dir, tag);
}

static struct snap_meta *snap_meta_find(struct daemon *d, const char *tag)
{
	char path[PATH_MAX];
	struct snap_meta *m;
	json_t *o, *v;

	for (m = d->snaps; m; m = m->next)
		if (strcmp(m->tag, tag) == 0)
			return m;
	if (snap_meta_path(d, tag, path, sizeof(path)) < 0)
		return NULL;
	o = json_load_file(path, 0, NULL);
	v = json_object_get(o, "pause_us");
	if (json_is_integer(v) && (m = calloc(1, sizeof(*m)))) {
		snprintf(m->tag, sizeof(m->tag), "%s", tag);
		m->pause_us = (uint64_t)json_integer_value(v);
		m->next = d->snaps;
		d->snaps = m;
	}
	json_decref(o);
	return m;
}

static json_t *snap_json(struct daemon *d, const struct reg_snapshot *s)
{
	json_t *o = json_object();
	struct snap_meta *m = snap_meta_find(d, s->tag);

	json_object_set_new(o, "tag", json_string(s->tag));
	json_object_set_new(o, "state", json_string(reg_snap_state_name(s->state)));
	json_object_set_new(o, "path", json_string(s->path));
	json_object_set_new(o, "parent_vm", str_or_null(s->parent_vm));
	json_object_set_new(o, "image", str_or_null(s->image));
	json_object_set_new(o, "net", json_string(s->net[0] ? s->net : "none"));
	json_object_set_new(o, "created", iso_time(s->created_us));
	json_object_set_new(o, "pause_us", m ? json_integer((json_int_t)m->pause_us) : json_null());
	return o;
}

static void snap_meta_set(struct daemon *d, const char *tag, uint64_t pause_us)
{
	struct snap_meta *m = calloc(1, sizeof(*m));
	char path[PATH_MAX];
	json_t *o;

	if (!m)
		return;
	if (snap_meta_path(d, tag, path, sizeof(path)) == 0 &&
	    (o = json_pack("{s:I}", "pause_us", (json_int_t)pause_us))) {
		json_write_atomic(o, path);
		json_decref(o);
	}
	snprintf(m->tag, sizeof(m->tag), "%s", tag);
	m->pause_us = pause_us;
	m->next = d->snaps;
	d->snaps = m;
}

static void snap_meta_drop(struct daemon *d, const char *tag)
{
	char path[PATH_MAX];

	for (struct spawn_check **pp = &d->spawn_checks; *pp;) {
		struct spawn_check *c = *pp;

		if (strcmp(c->tag, tag) == 0) {
			*pp = c->next;
			free(c);
		} else {
			pp = &c->next;
		}
	}
	if (snap_meta_path(d, tag, path, sizeof(path)) == 0)
		unlink(path);
	for (struct snap_meta **pp = &d->snaps; *pp; pp = &(*pp)->next) {
		if (strcmp((*pp)->tag, tag) == 0) {
			struct snap_meta *m = *pp;
			*pp = m->next;
			free(m);
			return;
		}
	}
}

/* ---- Request bodies ---- */

/* body must be an object (NULL: empty) whose keys are all in allowed (NULL-terminated). */
static int check_fields(json_t *body, const char *what, const char *const allowed[],
			struct fk_err *err)
{
	const char *key;
	json_t *v;

	if (!body)
		return 0;
	if (!json_is_object(body))
		return fk_fail(err, EINVAL, "%s: expected a JSON object, got %s", what,
			       fk_json_kind(body));
	json_object_foreach(body, key, v)
	{
		bool ok = false;
		char list[256] = "";

		for (int i = 0; allowed[i]; i++) {
			if (strcmp(key, allowed[i]) == 0)
				ok = true;
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 i ? ", " : "", allowed[i]);
		}
		if (!ok)
			return fk_fail(err, EINVAL, "%s: unknown field \"%s\" (expected %s)", what,
				       key, list);
	}
	return 0;
}

static int get_int(json_t *body, const char *what, const char *key, long long lo, long long hi,
		   long long *out, struct fk_err *err)
{
	json_t *v = body ? json_object_get(body, key) : NULL;

	if (!v)
		return 0;
	if (!json_is_integer(v))
		return fk_fail(err, EINVAL, "%s: \"%s\": expected an integer %lld..%lld, got %s",
			       what, key, lo, hi, fk_json_kind(v));
	if (json_integer_value(v) < lo || json_integer_value(v) > hi)
		return fk_fail(err, EINVAL,
			       "%s: \"%s\": %lld is out of range (expected %lld..%lld)", what, key,
			       (long long)json_integer_value(v), lo, hi);
	*out = json_integer_value(v);
	return 0;
}

static int get_bool(json_t *body, const char *what, const char *key, bool *out, struct fk_err *err)
{
	json_t *v = body ? json_object_get(body, key) : NULL;

	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return fk_fail(err, EINVAL, "%s: \"%s\": expected true or false, got %s", what, key,
			       fk_json_kind(v));
	*out = json_is_true(v);
	return 0;
}

static int get_str(json_t *body, const char *what, const char *key, const char **out,
		   struct fk_err *err)
{
	json_t *v = body ? json_object_get(body, key) : NULL;

	if (!v)
		return 0;
	if (!json_is_string(v))
		return fk_fail(err, EINVAL, "%s: \"%s\": expected a string, got %s", what, key,
			       fk_json_kind(v));
	*out = json_string_value(v);
	return 0;
}

static int get_tag(json_t *body, const char *what, const char **out, struct fk_err *err)
{
	int ret = get_str(body, what, "tag", out, err);

	if (ret == 0 && *out && (ret = registry_tag_check(*out, err)) < 0)
		return fk_wrap(err, "%s: \"tag\"", what);
	/* docs/rest-api.md: no hidden names either (DIR/snapshots/<tag> stays visible). */
	if (ret == 0 && *out && (*out)[0] == '.')
		return fk_fail(err, EINVAL,
			       "%s: \"tag\": tag '%s' starts with '.' (expected [A-Za-z0-9._-], "
			       "not starting with '.' or '-')",
			       what, *out);
	return ret;
}

/* ---- Starting VMMs ---- */

struct starting {
	char id[REG_ID_MAX];
	char sock[REG_SOCK_MAX];
	char err_path[PATH_MAX];
	/*
	 * t0: just before its VMM is started; start_s: from then to its control socket
	 * answering (the answer's "start_ms": what a client starting forkd-vmm itself waits).
	 */
	double t0, start_s;
	bool up;
	/* The read end of the VMM's --ready-fd pipe, while has_ready (zeroed: none). */
	bool has_ready;
	int ready_rd;
	pid_t pid;
	/* Done while it starts (prepare_started), not after it answers: */
	bool probed; /* proc: its /proc identity */
	struct reg_proc proc;
	bool meta_saved; /* vm.json written with these sizes */
	int saved_mem_mib, saved_cpus;
};

static void starting_close_ready(struct starting *s)
{
	if (s->has_ready)
		close(s->ready_rd);
	s->has_ready = false;
}

/*
 * Starts argv for tracked VM s->id and watches it. Lock held. The VMM gets --ready-fd: a
 * pipe it writes once it serves (wait_answering waits on it rather than polling the socket).
 */
static int launch_locked(struct daemon *d, struct starting *s, char *const argv[],
			 struct fk_err *err)
{
	struct tracked *t = find_tracked(d, s->id);
	char *args[64], fdnum[16];
	int p[2], wr, a = 0, ret;
	pid_t pid;

	if (!t)
		return fk_fail(err, ENOENT, "%s: no longer tracked", s->id);
	while (argv[a] && a < (int)(sizeof(args) / sizeof(args[0])) - 3) {
		args[a] = argv[a];
		a++;
	}
	if (argv[a])
		return fk_fail(err, E2BIG, "%s: too many forkd-vmm arguments", s->id);
	snprintf(fdnum, sizeof(fdnum), "%d", VMM_LAUNCH_READY_FD);
	args[a++] = "--ready-fd";
	args[a++] = fdnum;
	args[a] = NULL;
	/* Close-on-exec: VMMs other threads start at the same time must not hold it. */
	if (pipe2(p, O_CLOEXEC) < 0)
		return fk_fail_errno(err, errno, "%s: ready pipe", s->id);
	/* Above the standard descriptors and VMM_LAUNCH_READY_FD, which the child's dup2 takes. */
	wr = fcntl(p[1], F_DUPFD_CLOEXEC, VMM_LAUNCH_READY_FD + 1);
	close(p[1]);
	if (wr < 0) {
		ret = fk_fail_errno(err, errno, "%s: ready pipe", s->id);
		close(p[0]);
		return ret;
	}
	s->t0 = mono_s();
	ret = vmm_launch(args, s->err_path, wr, &pid, err);
	close(wr);
	if (ret < 0) {
		close(p[0]);
		return ret;
	}
	s->ready_rd = p[0];
	s->has_ready = true;
	s->pid = pid;
	ret = watch(d, t, pid, err);
	if (ret < 0) {
		kill(pid, SIGKILL);
		return ret;
	}
	return 0;
}

/*
 * Waits until every VMM in s answers `status` on its control socket (the VMM serves it once
 * booted or restored); fills mem_mib and cpus from the reply. Lock not held.
 */

/*
 * How long VMMs may take from launch to answering: START_TIMEOUT_MS, or
 * FORKD_VMM_START_TIMEOUT_MS (1000..3600000) where VMs start slowly, e.g.
 * 50 at once inside the nested test host under TCG.
 */
static int start_timeout_ms(void)
{
	const char *v = getenv("FORKD_VMM_START_TIMEOUT_MS");
	char *end;
	long ms;

	if (!v || !*v)
		return START_TIMEOUT_MS;
	errno = 0;
	ms = strtol(v, &end, 10);
	if (errno || *end || ms < 1000 || ms > 3600000) {
		fprintf(stderr,
			"forkd serve: FORKD_VMM_START_TIMEOUT_MS='%s': expected 1000..3600000 ms; "
			"using %d\n",
			v, START_TIMEOUT_MS);
		return START_TIMEOUT_MS;
	}
	return (int)ms;
}

/*
 * What a VMM's `status` says of its namespace (forkd-vmm --net-policy): copied
 * into netns and addr when both are there and fit, else left as they are (a
 * VMM without a network reports neither).
 */
static void net_from_status(json_t *reply, char netns[REG_NETNS_MAX], char addr[REG_ADDR_MAX])
{
	const char *ns = json_string_value(json_object_get(reply, "net_netns"));
	const char *a = json_string_value(json_object_get(reply, "net_host_addr"));

	if (!ns || !a || strlen(ns) >= REG_NETNS_MAX || strlen(a) >= REG_ADDR_MAX)
		return;
	snprintf(netns, REG_NETNS_MAX, "%s", ns);
	snprintf(addr, REG_ADDR_MAX, "%s", a);
}

/*
 * One look at s: fails when its VMM has exited; once its ready pipe has spoken (and been
 * closed: "ready", or nothing from a VMM on its way out), asks `status` if its socket exists.
 * The VMM says ready once its socket listens, so the request waits there and is answered as
 * soon as the VM runs (up to STATUS_CALL_MS, then asked again). Sets s->up, with the sizes and
 * network of the reply. Lock not held.
 */
static int try_answering(struct daemon *d, struct starting *s, bool restore_metric,
			 struct fk_err *err)
{
	struct fk_err call_err = {0};
	json_t *req, *reply = NULL;
	struct tracked *t;
	bool dead;
	int status = REG_NO_EXIT;

	pthread_mutex_lock(&d->lock);
	t = find_tracked(d, s->id);
	dead = !t || t->dead;
	if (t)
		status = t->exit_status;
	pthread_mutex_unlock(&d->lock);
	if (dead) {
		char line[256];

		vmm_first_line(s->err_path, line, sizeof(line));
		return fk_fail(err, ECHILD,
			       "%s: forkd-vmm exited (status %d) before its control "
			       "socket answered: %s",
			       s->id, status, line[0] ? line : "(no message)");
	}
	if (s->has_ready || access(s->sock, F_OK) < 0)
		return 0;
	req = json_pack("{s:s}", "cmd", "status");
	if (!req)
		return fk_fail(err, ENOMEM, "status request");
	if (control_call(s->sock, req, &reply, STATUS_CALL_MS, &call_err) == 0 &&
	    json_is_true(json_object_get(reply, "ok"))) {
		s->up = true;
		s->start_s = mono_s() - s->t0;
		starting_close_ready(s);
		pthread_mutex_lock(&d->lock);
		t = find_tracked(d, s->id);
		if (t) {
			t->meta.mem_mib =
			    (int)json_integer_value(json_object_get(reply, "mem_mib"));
			t->meta.cpus = (int)json_integer_value(json_object_get(reply, "vcpus"));
			net_from_status(reply, t->net_netns, t->net_host_addr);
		}
		pthread_mutex_unlock(&d->lock);
		if (restore_metric)
			report(d, DAEMON_METRIC_RESTORE, s->start_s);
	}
	json_decref(req);
	json_decref(reply);
	return 0;
}

/* s's pipe spoke ("ready", or closed without it): from now on s is asked on its socket. */
static void read_ready(struct starting *s)
{
	char buf[16];

	if (read(s->ready_rd, buf, sizeof(buf)) < 0) {
		/* EOF or an error: the socket check and the exit status tell the rest */
	}
	starting_close_ready(s);
}

/*
 * Waits until every VMM in s answers `status` on its control socket (the VMM serves it once
 * booted or restored); fills mem_mib and cpus from the reply. Lock not held. A VMM launched
 * with a ready pipe is asked once the pipe says so: no polling (bench/api.sh measured the
 * earlier 1 ms socket poll at ~0.5 ms of each spawn; inotify on the socket was slower).
 * The poll wakes every READY_RECHECK_MS to see VMMs that died and the deadline.
 */
#define READY_RECHECK_MS 100
static int wait_answering(struct daemon *d, struct starting *s, size_t n, bool restore_metric,
			  struct fk_err *err)
{
	double deadline = mono_s() + start_timeout_ms() / 1000.0;
	struct pollfd *pfd = calloc(n ? n : 1, sizeof(*pfd));
	size_t *idx = calloc(n ? n : 1, sizeof(*idx));
	size_t up = 0;
	int ret = 0;

	if (!pfd || !idx) {
		ret = fk_fail(err, ENOMEM, "waiting for %zu VMs: out of memory", n);
		goto out;
	}
	for (;;) {
		size_t np = 0;
		bool polling_sockets = false;

		up = 0;
		for (size_t i = 0; i < n && ret == 0; i++) {
			if (!s[i].up)
				ret = try_answering(d, &s[i], restore_metric, err);
			if (s[i].up)
				up++;
		}
		if (ret < 0 || up == n)
			break;
		if (mono_s() > deadline) {
			ret =
			    fk_fail(err, ETIMEDOUT,
				    "%zu of %zu VMs did not answer on their control socket within "
				    "%d ms (see %s)",
				    n - up, n, start_timeout_ms(), s[0].err_path);
			break;
		}
		for (size_t i = 0; i < n; i++) {
			if (s[i].up)
				continue;
			if (!s[i].has_ready) {
				polling_sockets = true;
				continue;
			}
			pfd[np] = (struct pollfd){.fd = s[i].ready_rd, .events = POLLIN};
			idx[np++] = i;
		}
		if (poll(pfd, np, polling_sockets ? 1 : READY_RECHECK_MS) < 0 && errno != EINTR) {
			ret = fk_fail_errno(err, errno, "waiting for %zu VMs to start", n);
			break;
		}
		for (size_t k = 0; k < np; k++)
			if (pfd[k].revents)
				read_ready(&s[idx[k]]);
	}
out:
	free(pfd);
	free(idx);
	return ret;
}

/* The last non-empty line of a (console) file, for a message: the VM's directory goes with it. */
static void last_line(const char *path, char *buf, size_t len)
{
	char tail[4096];
	ssize_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	char *end, *start;

	buf[0] = '\0';
	if (fd >= 0) {
		off_t size = lseek(fd, 0, SEEK_END);

		n = pread(fd, tail, sizeof(tail) - 1,
			  size > (off_t)sizeof(tail) - 1 ? size - (off_t)sizeof(tail) + 1 : 0);
		close(fd);
	}
	if (n <= 0)
		return;
	tail[n] = '\0';
	end = tail + n;
	while (end > tail && (end[-1] == '\n' || end[-1] == '\r'))
		*--end = '\0';
	start = strrchr(tail, '\n');
	start = start ? start + 1 : tail;
	if (strlen(start) >= len)
		start[len - 1] = '\0';
	memcpy(buf, start, strlen(start) + 1);
}

/*
 * An image VM is usable once its guest agent answers, which is seconds after
 * its VMM's control socket (the guest boots Linux first): pings it until it
 * does, so that exec and files work on the VM POST /v1/vms returns. Fails
 * when the VMM exits or AGENT_BOOT_MS pass. Lock not held.
 */
static int wait_agent(struct daemon *d, const struct starting *s, const char *vsock_sock,
		      const char *serial, struct fk_err *err)
{
	double deadline = mono_s() + AGENT_BOOT_MS / 1000.0;
	struct fk_err call_err = {0};
	char line[256];

	for (;;) {
		json_t *req = json_pack("{s:s}", "op", "ping"), *reply = NULL;
		struct tracked *t;
		bool dead;
		int ret;

		if (!req)
			return fk_fail(err, ENOMEM, "ping request");
		ret = fk_agent_call(vsock_sock, req, &reply, AGENT_PING_MS, &call_err);
		json_decref(req);
		json_decref(reply);
		if (ret == 0)
			return 0;
		pthread_mutex_lock(&d->lock);
		t = find_tracked(d, s->id);
		dead = !t || t->dead;
		pthread_mutex_unlock(&d->lock);
		if (dead) {
			vmm_first_line(s->err_path, line, sizeof(line));
			return fk_fail(err, ECHILD,
				       "%s: forkd-vmm exited before the guest agent answered: %s",
				       s->id, line[0] ? line : "(no message)");
		}
		if (mono_s() > deadline) {
			last_line(serial, line, sizeof(line));
			return fk_fail(err, ETIMEDOUT,
				       "%s: the guest agent did not answer within %d ms (%s); the "
				       "console's last line: %s",
				       s->id, AGENT_BOOT_MS, call_err.msg,
				       line[0] ? line : "(none)");
		}
		usleep(100 * 1000);
	}
}

/* Kills and forgets VMs whose start failed: nothing partial is left. Lock not held. */
static void abort_started(struct daemon *d, struct starting *s, size_t n)
{
	struct fk_err ignored = {0};
	char dir[PATH_MAX];

	for (size_t i = 0; i < n; i++)
		starting_close_ready(&s[i]);
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = find_tracked(d, s[i].id);

		if (!s[i].id[0])
			continue;
		if (t && t->pidfd >= 0) {
			fk_pidfd_kill(t->pidfd, SIGKILL);
			wait_dead(d, s[i].id, KILL_WAIT_MS);
		}
		registry_vm_delete(d->reg, s[i].id, true, NULL, &ignored);
		untrack(d, s[i].id);
	}
	pthread_mutex_unlock(&d->lock);
	for (size_t i = 0; i < n; i++)
		if (s[i].id[0] && vm_dir(d, s[i].id, NULL, dir, sizeof(dir), &ignored) == 0)
			fk_remove_tree(dir);
}

/* Marks started VMs running with their process identity; appends their JSON to out. */
static int finish_started(struct daemon *d, struct starting *s, size_t n, json_t *out,
			  struct fk_err *err)
{
	int ret = 0;

	for (size_t i = 0; i < n; i++)
		starting_close_ready(&s[i]);
	pthread_mutex_lock(&d->lock);
	for (size_t i = 0; i < n && ret == 0; i++) {
		struct tracked *t = find_tracked(d, s[i].id);
		struct reg_vm vm;

		ret = registry_vm_get(d->reg, s[i].id, &vm, err);
		if (ret < 0)
			break;
		if (t && !t->dead) {
			if (s[i].probed && s[i].proc.pid == t->pid)
				vm.proc = s[i].proc;
			else if (registry_proc_probe(t->pid, &vm.proc, err) < 0)
				vm.proc.pid = t->pid;
			vm.state = REG_VM_RUNNING;
			snprintf(vm.net_netns, sizeof(vm.net_netns), "%s", t->net_netns);
			snprintf(vm.net_host_addr, sizeof(vm.net_host_addr), "%s",
				 t->net_host_addr);
			ret = registry_vm_update(d->reg, &vm, err);
			if (!s[i].meta_saved || t->meta.mem_mib != s[i].saved_mem_mib ||
			    t->meta.cpus != s[i].saved_cpus)
				meta_save(d, vm.id, &t->meta);
		}
		if (t)
			t->busy = false;
		if (ret == 0 && out) {
			json_t *o = vm_json(d, &vm);

			if (o && s[i].up)
				json_object_set_new(o, "start_ms", json_ms(s[i].start_s));
			json_array_append_new(out, o);
		}
	}
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/*
 * What needs a started VMM's pid but not its answer, done while the VMMs restore (≈ 10 ms in
 * which this thread would only wait) rather than between their answer and ours: the /proc
 * identity the registry records with the pid, and vm.json with the size their snapshot says
 * (mem_mib and cpus, 0: unknown; finish_started writes it again if `status` says otherwise).
 * Lock not held.
 */
static void prepare_started(struct daemon *d, struct starting *s, size_t n, int mem_mib, int cpus)
{
	for (size_t i = 0; i < n; i++) {
		struct fk_err ignored = {0};
		struct tracked *t;
		struct vm_meta meta;
		bool have = false;

		s[i].probed = registry_proc_probe(s[i].pid, &s[i].proc, &ignored) == 0;
		if (!mem_mib || !cpus)
			continue;
		pthread_mutex_lock(&d->lock);
		t = find_tracked(d, s[i].id);
		if (t && !t->dead) {
			t->meta.mem_mib = mem_mib;
			t->meta.cpus = cpus;
			meta = t->meta;
			have = true;
		}
		pthread_mutex_unlock(&d->lock);
		if (!have)
			continue;
		/* The VM is busy (being started): no other operation writes its vm.json. */
		meta_save(d, s[i].id, &meta);
		s[i].meta_saved = true;
		s[i].saved_mem_mib = mem_mib;
		s[i].saved_cpus = cpus;
	}
}

/* The image cache, where forkd-vmm --image looks (src/core/config.c). */
static const char *image_cache(void)
{
	const char *cache = getenv("FORKD_IMAGE_CACHE");

	return cache && *cache ? cache : VMM_IMAGE_CACHE_DEFAULT;
}

static int check_file(const char *what, const char *key, const char *path, struct fk_err *err)
{
	struct stat st;

	if (strlen(path) >= REG_PATH_MAX)
		return fk_fail(err, ENAMETOOLONG, "%s: \"%s\": path longer than %d bytes", what,
			       key, REG_PATH_MAX - 1);
	if (path[0] != '/')
		return fk_fail(err, EINVAL, "%s: \"%s\" '%s': expected an absolute path", what, key,
			       path);
	if (stat(path, &st) < 0 || !S_ISREG(st.st_mode) || access(path, R_OK) < 0)
		return fk_fail(err, EINVAL, "%s: \"%s\" '%s': expected a readable file", what, key,
			       path);
	return 0;
}

/*
 * The image's root file system where forkd-vmm --image looks for it
 * (src/core/config.c): a missing image is the client's mistake (400), not a
 * VMM that failed to start (500).
 */
static int check_image(const char *what, const char *image, struct fk_err *err)
{
	const char *cache = image_cache();
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s/rootfs.ext4", cache, image) >= (int)sizeof(path))
		return fk_fail(err, ENAMETOOLONG, "%s: \"image\" '%s': path too long", what, image);
	if (access(path, R_OK) < 0)
		return fk_fail(err, EINVAL,
			       "%s: \"image\" '%s': no %s (build it with `forkd image build %s`)",
			       what, image, path, image);
	return 0;
}

/*
 * `--net-policy P,id=ID` for a VM of policy net (false for none): its namespace is then
 * forkd-<vm id>, which names it for whoever looks at `ip netns`. A VM id ("vm-" and 8
 * lower-case hex digits) is a valid namespace id as it is (lower-case letters, digits and
 * '-', 1..32 characters, docs/networking.md).
 */
static bool net_args(const char *net, const char *id, char *buf, size_t len)
{
	if (!net[0] || strcmp(net, "none") == 0)
		return false;
	snprintf(buf, len, "%s,id=%s", net, id);
	return true;
}

/*
 * The limits of a create or spawn body ("memory_max_mib", "cpu_max",
 * "pids_max"; none: no cgroup). Any of them needs cgroup v2 on this machine:
 * without it, ENOTSUP (501) says what is mounted instead.
 */
static int get_limits(json_t *body, const char *what, struct vm_limits *lim, struct fk_err *err)
{
	const char *cpu = NULL;
	uint64_t quota, period;
	struct fk_err why = {0};
	int ret;

	memset(lim, 0, sizeof(*lim));
	if ((ret = get_int(body, what, "memory_max_mib", LIMIT_MEM_MIB_MIN, MEM_MIB_MAX,
			   &lim->memory_max_mib, err)) < 0 ||
	    (ret = get_int(body, what, "pids_max", 1, LIMIT_PIDS_MAX, &lim->pids_max, err)) < 0 ||
	    (ret = get_str(body, what, "cpu_max", &cpu, err)) < 0)
		return ret;
	if (cpu) {
		if (cgroup_parse_cpu_max(cpu, &quota, &period, &why) < 0)
			return fk_fail(err, EINVAL, "%s: \"cpu_max\": %s", what, why.msg);
		snprintf(lim->cpu_max, sizeof(lim->cpu_max), "%llu/%llu", (unsigned long long)quota,
			 (unsigned long long)period);
	}
	if (!lim->memory_max_mib && !lim->pids_max && !lim->cpu_max[0])
		return 0;
	if (cgroup_check_v2(DAEMON_CGROUP_ROOT, &why) < 0)
		return fk_fail(err, ENOTSUP, "%s: limits need cgroup v2 here: %s", what, why.msg);
	return 0;
}

/* Numbers of forkd-vmm's cgroup options, alive as long as the argv using them. */
struct limit_args {
	char mem[32];
	char pids[24];
};

/* A VM with limits gets the cgroup vm-<hex of its id>, i.e. its id; false: no limits. */
static bool limits_name(struct vm_limits *l, const char *id)
{
	if (!l->memory_max_mib && !l->pids_max && !l->cpu_max[0])
		return false;
	snprintf(l->cgroup, sizeof(l->cgroup), "%s", id);
	return true;
}

/* Appends forkd-vmm's cgroup options for limits l, named by limits_name (none: nothing). */
static void add_limit_args(const struct vm_limits *l, struct limit_args *b, char **argv, int *a)
{
	if (!l->cgroup[0])
		return;
	argv[(*a)++] = "--cgroup";
	argv[(*a)++] = DAEMON_CGROUP_PARENT;
	argv[(*a)++] = "--cgroup-name";
	argv[(*a)++] = (char *)l->cgroup + 3; /* forkd-vmm names it vm-NAME */
	if (l->memory_max_mib) {
		snprintf(b->mem, sizeof(b->mem), "%lldM", l->memory_max_mib);
		argv[(*a)++] = "--memory-max";
		argv[(*a)++] = b->mem;
	}
	if (l->cpu_max[0]) {
		argv[(*a)++] = "--cpu-max";
		argv[(*a)++] = (char *)l->cpu_max;
	}
	if (l->pids_max) {
		snprintf(b->pids, sizeof(b->pids), "%lld", l->pids_max);
		argv[(*a)++] = "--pids-max";
		argv[(*a)++] = b->pids;
	}
}

int daemon_vm_create(struct daemon *d, json_t *body, json_t **out, struct fk_err *err)
{
	static const char *const fields[] = {
	    "image", "kernel", "initrd",	 "append",  "mem_mib",	"cpus", "tag",
	    "vsock", "net",    "memory_max_mib", "cpu_max", "pids_max", NULL};
	const char *what = "POST /v1/vms", *image = NULL, *kernel = NULL, *initrd = NULL,
		   *append = NULL, *tag = NULL, *net = NULL;
	char net_policy[REG_NET_MAX + 4 + REG_ID_MAX];
	long long mem_mib = 512, cpus = 1;
	char dir[PATH_MAX], serial[PATH_MAX], mem[32], ncpus[16];
	struct limit_args lim_args;
	struct jail_args jail_args;
	struct vm_limits lim;
	uint32_t uid = 0;
	struct starting s;
	struct reg_vm vm = {0};
	struct tracked *t;
	json_t *vms = NULL;
	bool vsock;
	int ret;

	*out = NULL;
	memset(&s, 0, sizeof(s));
	if (!body)
		return fk_fail(err, EINVAL, "%s: expected a body with \"image\" or \"kernel\"",
			       what);
	if ((ret = check_fields(body, what, fields, err)) < 0 ||
	    (ret = get_str(body, what, "image", &image, err)) < 0 ||
	    (ret = get_str(body, what, "kernel", &kernel, err)) < 0 ||
	    (ret = get_str(body, what, "initrd", &initrd, err)) < 0 ||
	    (ret = get_str(body, what, "append", &append, err)) < 0 ||
	    (ret = get_int(body, what, "mem_mib", MEM_MIB_MIN, MEM_MIB_MAX, &mem_mib, err)) < 0 ||
	    (ret = get_int(body, what, "cpus", 1, CPUS_MAX, &cpus, err)) < 0 ||
	    (ret = get_tag(body, what, &tag, err)) < 0 ||
	    (ret = get_str(body, what, "net", &net, err)) < 0 ||
	    (ret = get_limits(body, what, &lim, err)) < 0)
		return ret;
	if (net && strcmp(net, "none") != 0 && strcmp(net, "host") != 0 && strcmp(net, "nat") != 0)
		return fk_fail(err, EINVAL,
			       "%s: \"net\" '%.32s': expected \"none\", \"host\" or \"nat\"", what,
			       net);
	vsock = image != NULL;
	if ((ret = get_bool(body, what, "vsock", &vsock, err)) < 0)
		return ret;
	if (!image == !kernel)
		return fk_fail(err, EINVAL, "%s: expected exactly one of \"image\" or \"kernel\"",
			       what);
	if (image && (initrd || append))
		return fk_fail(err, EINVAL,
			       "%s: \"%s\" comes with \"kernel\", not with \"image\" (the image "
			       "brings its own)",
			       what, initrd ? "initrd" : "append");
	if (image && !daemon_image_name_ok(image))
		return fk_fail(
		    err, EINVAL,
		    "%s: \"image\" '%s': expected an image name ([a-z0-9][a-z0-9._-]{0,62})", what,
		    image);
	if (image && (ret = check_image(what, image, err)) < 0)
		return ret;
	if (kernel && (ret = check_file(what, "kernel", kernel, err)) < 0)
		return ret;
	if (initrd && (ret = check_file(what, "initrd", initrd, err)) < 0)
		return ret;
	if (append && strlen(append) > 4095)
		return fk_fail(err, EINVAL, "%s: \"append\": %zu bytes (expected at most 4095)",
			       what, strlen(append));

	vm.state = REG_VM_STARTING;
	vm.exit_status = REG_NO_EXIT;
	snprintf(vm.image, sizeof(vm.image), "%s", image ? image : "");
	snprintf(vm.kernel, sizeof(vm.kernel), "%s", kernel ? kernel : "");
	snprintf(vm.tag, sizeof(vm.tag), "%s", tag ? tag : "");
	snprintf(vm.net, sizeof(vm.net), "%s", net ? net : "none");
	pthread_mutex_lock(&d->lock);
	/* Taken in the same hold as the VM is tracked: two creates never get one uid. */
	ret = d->jail ? jail_uid_alloc(d, &uid, err) : 0;
	if (ret == 0)
		ret = registry_vm_add(d->reg, &vm, err);
	t = ret == 0 ? track(d, vm.id, false) : NULL;
	if (ret == 0 && !t)
		ret = fk_fail(err, ENOMEM, "%s: out of memory", vm.id);
	if (t) {
		t->busy = true;
		t->meta.mem_mib = (int)mem_mib;
		t->meta.cpus = (int)cpus;
		t->meta.uid = uid;
	}
	if (t && limits_name(&lim, vm.id))
		t->meta.limits = lim;
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return fk_wrap(err, "%s", what);
	snprintf(s.id, sizeof(s.id), "%s", vm.id);

	if ((ret = vm_dir(d, vm.id, NULL, dir, sizeof(dir), err)) < 0 ||
	    (ret = vm_dir(d, vm.id, "control.sock", vm.control_sock, sizeof(vm.control_sock),
			  err)) < 0 ||
	    (ret = vm_dir(d, vm.id, "vsock.sock", vm.vsock_sock, sizeof(vm.vsock_sock), err)) < 0 ||
	    (ret = vm_dir(d, vm.id, "serial.log", serial, sizeof(serial), err)) < 0 ||
	    (ret = vm_dir(d, vm.id, "vmm.err", s.err_path, sizeof(s.err_path), err)) < 0)
		goto fail;
	if (mkdir(dir, 0755) < 0) {
		ret = fk_fail_errno(err, errno, "%s: create %s", vm.id, dir);
		goto fail;
	}
	if ((ret = jail_prepare(d, vm.id, uid, dir, &jail_args, err)) < 0)
		goto fail;
	{
		struct vm_meta m = {
		    .mem_mib = (int)mem_mib, .cpus = (int)cpus, .limits = lim, .uid = uid};
		meta_save(d, vm.id, &m);
	}
	snprintf(s.sock, sizeof(s.sock), "%s", vm.control_sock);
	if (!vsock)
		vm.vsock_sock[0] = '\0';
	snprintf(mem, sizeof(mem), "%lldM", mem_mib);
	snprintf(ncpus, sizeof(ncpus), "%lld", cpus);
	{
		char *argv[40];
		int a = 0;

		argv[a++] = d->vmm;
		if (image) {
			argv[a++] = "--image";
			argv[a++] = (char *)image;
		} else {
			argv[a++] = "--kernel";
			argv[a++] = (char *)kernel;
			if (initrd) {
				argv[a++] = "--initrd";
				argv[a++] = (char *)initrd;
			}
			if (append) {
				argv[a++] = "--append";
				argv[a++] = (char *)append;
			}
		}
		argv[a++] = "--mem";
		argv[a++] = mem;
		argv[a++] = "--cpus";
		argv[a++] = ncpus;
		argv[a++] = "--control";
		argv[a++] = vm.control_sock;
		argv[a++] = "--serial";
		argv[a++] = serial;
		argv[a++] = "--serial-in";
		argv[a++] = "none";
		if (vsock) {
			argv[a++] = "--vsock";
			argv[a++] = vm.vsock_sock;
		}
		if (net_args(vm.net, vm.id, net_policy, sizeof(net_policy))) {
			argv[a++] = "--net-policy";
			argv[a++] = net_policy;
		}
		add_limit_args(&lim, &lim_args, argv, &a);
		add_jail_args(uid, &jail_args, argv, &a);
		argv[a] = NULL;
		pthread_mutex_lock(&d->lock);
		ret = registry_vm_update(d->reg, &vm, err);
		if (ret == 0)
			ret = launch_locked(d, &s, argv, err);
		pthread_mutex_unlock(&d->lock);
		if (ret < 0)
			goto fail;
	}
	ret = wait_answering(d, &s, 1, false, err);
	if (ret == 0 && image && vsock)
		ret = wait_agent(d, &s, vm.vsock_sock, serial, err);
	if (ret < 0)
		goto fail;
	vms = json_array();
	ret = finish_started(d, &s, 1, vms, err);
	if (ret < 0)
		goto fail;
	*out = json_incref(json_array_get(vms, 0));
	json_decref(vms);
	return 0;
fail:
	json_decref(vms);
	abort_started(d, &s, 1);
	return fk_wrap(err, "%s", what);
}

/* ---- Listing ---- */

/*
 * Lists are read on a reader connection, not under d->lock (many GETs at once
 * would queue behind each other and behind every operation's bookkeeping);
 * the lock is taken only to copy the VMs' sizes, and the JSON is built after.
 */
int daemon_vm_list(struct daemon *d, json_t **out, struct fk_err *err)
{
	struct reader *rd = reader_get(d);
	const struct reg_vm **refs = NULL;
	struct reg_vm *vms = NULL;
	struct vm_meta *sz = NULL;
	size_t n = 0;
	json_t *arr;
	int ret;

	*out = NULL;
	if (!rd)
		pthread_mutex_lock(&d->lock);
	ret = registry_vm_list(rd ? rd->reg : d->reg, &vms, &n, err);
	if (rd)
		reader_put(rd);
	else
		pthread_mutex_unlock(&d->lock);
	if (ret == 0 && !(refs = calloc(n ? n : 1, sizeof(*refs))))
		ret = fk_fail(err, ENOMEM, "out of memory for %zu VMs", n);
	for (size_t i = 0; ret == 0 && i < n; i++)
		refs[i] = &vms[i];
	if (ret == 0)
		ret = sizes_of(d, refs, n, &sz, err);
	if (ret == 0) {
		arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, vm_json_sized(&vms[i], &sz[i]));
		*out = json_pack("{s:o}", "vms", arr);
	}
	free(sz);
	free(refs);
	free(vms);
	return ret;
}

/*
 * A VM paused or resumed through its own control socket (forkd vm call) is
 * not seen by the daemon, so a single VM's GET asks its VMM: `status` says
 * running or paused, and the registry is set to what it says (the list then
 * shows it too). Not while an operation holds the VM (a branch pauses it for
 * its own sake) nor for a VMM that does not answer within STATUS_ASK_MS: the
 * registry's state stands then. At most one ask per VM at a time and none
 * within STATUS_FRESH_S of the last: 100 GETs of one VM at once asked its
 * VMM 100 times (its control server takes a few clients at a time) and took
 * up to 250 ms each (bench/api.sh, concurrent); they now read what the last
 * ask recorded.
 */
#define STATUS_ASK_MS  250
#define STATUS_FRESH_S 0.1 /* a VM's state asked this recently is not asked again */

static int vmm_call(const char *what, const char *sock, json_t *req, int timeout_ms,
		    json_t **reply_out, struct fk_err *err);

/* Records the namespace and host address a VMM's status reports when they changed. */
static void refresh_net(struct daemon *d, struct reg_vm *vm, json_t *reply)
{
	char netns[REG_NETNS_MAX], addr[REG_ADDR_MAX];
	struct fk_err ignored = {0};
	struct reg_vm now;
	struct tracked *t;

	snprintf(netns, sizeof(netns), "%s", vm->net_netns);
	snprintf(addr, sizeof(addr), "%s", vm->net_host_addr);
	net_from_status(reply, netns, addr);
	if (strcmp(netns, vm->net_netns) == 0 && strcmp(addr, vm->net_host_addr) == 0)
		return;
	pthread_mutex_lock(&d->lock);
	t = find_tracked(d, vm->id);
	/* the record as it is now: only the two fields change */
	if (t && !t->busy && !t->dead && registry_vm_get(d->reg, vm->id, &now, &ignored) == 0) {
		snprintf(now.net_netns, sizeof(now.net_netns), "%s", netns);
		snprintf(now.net_host_addr, sizeof(now.net_host_addr), "%s", addr);
		if (registry_vm_update(d->reg, &now, &ignored) == 0) {
			snprintf(vm->net_netns, sizeof(vm->net_netns), "%s", netns);
			snprintf(vm->net_host_addr, sizeof(vm->net_host_addr), "%s", addr);
		}
	}
	pthread_mutex_unlock(&d->lock);
}

static void refresh_paused(struct daemon *d, struct reg_vm *vm)
{
	struct fk_err ignored = {0};
	json_t *reply = NULL;
	const char *state;
	enum reg_vm_state now;
	struct tracked *t;
	bool ask;
	int ret;

	pthread_mutex_lock(&d->lock);
	t = find_tracked(d, vm->id);
	ask = (vm->state == REG_VM_RUNNING || vm->state == REG_VM_PAUSED) && t && !t->busy &&
	      !t->dead && t->pidfd >= 0 && !t->asking && mono_s() - t->asked_at >= STATUS_FRESH_S;
	if (ask)
		t->asking = true;
	pthread_mutex_unlock(&d->lock);
	if (!ask)
		return;
	ret = vmm_call("status", vm->control_sock, json_pack("{s:s}", "cmd", "status"),
		       STATUS_ASK_MS, &reply, &ignored);
	pthread_mutex_lock(&d->lock);
	t = find_tracked(d, vm->id);
	if (t) {
		t->asking = false;
		t->asked_at = mono_s();
	}
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return;
	refresh_net(d, vm, reply);
	state = json_string_value(json_object_get(reply, "state"));
	if (state && (strcmp(state, "paused") == 0 || strcmp(state, "running") == 0)) {
		now = strcmp(state, "paused") == 0 ? REG_VM_PAUSED : REG_VM_RUNNING;
		pthread_mutex_lock(&d->lock);
		t = find_tracked(d, vm->id);
		/* Unless it died or an operation took it meanwhile. */
		if (now != vm->state && t && !t->busy && !t->dead &&
		    registry_vm_set_state(d->reg, vm->id, now, REG_NO_EXIT, &ignored) == 0)
			vm->state = now;
		pthread_mutex_unlock(&d->lock);
	}
	json_decref(reply);
}

/*
 * A BRANCH child made its namespace before it answered the branch, but the
 * branch reply does not carry it: asks the child's status (STATUS_ASK_MS at
 * most) and records and sets "net_netns" and "net_host_addr" in its JSON.
 * A child that does not answer keeps nulls; a later GET fills them.
 */
static void net_ask(struct daemon *d, json_t *vmj)
{
	const char *id = json_string_value(json_object_get(vmj, "id"));
	struct fk_err ignored = {0};
	json_t *reply = NULL;
	struct reg_vm vm;
	int ret;

	if (!id)
		return;
	pthread_mutex_lock(&d->lock);
	ret = registry_vm_get(d->reg, id, &vm, &ignored);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0 || vm.state != REG_VM_RUNNING)
		return;
	if (vmm_call("status", vm.control_sock, json_pack("{s:s}", "cmd", "status"), STATUS_ASK_MS,
		     &reply, &ignored) < 0)
		return;
	refresh_net(d, &vm, reply);
	json_decref(reply);
	json_object_set_new(vmj, "net_netns", str_or_null(vm.net_netns));
	json_object_set_new(vmj, "net_host_addr", str_or_null(vm.net_host_addr));
}

int daemon_vm_get(struct daemon *d, const char *id, json_t **out, struct fk_err *err)
{
	struct reg_vm vm;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&d->lock);
	ret = registry_vm_get(d->reg, id, &vm, err);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	refresh_paused(d, &vm);
	pthread_mutex_lock(&d->lock);
	*out = vm_json(d, &vm);
	pthread_mutex_unlock(&d->lock);
	return 0;
}

int daemon_vm_agent_socket(struct daemon *d, const char *id, char *path, size_t len,
			   struct fk_err *err)
{
	struct reg_vm vm;
	int ret;

	pthread_mutex_lock(&d->lock);
	ret = registry_vm_get(d->reg, id, &vm, err);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	if (!live_state(vm.state))
		return fk_fail(err, ENOTCONN, "vm %s is %s: expected a running VM", id,
			       reg_vm_state_name(vm.state));
	if (!vm.vsock_sock[0])
		return fk_fail(err, ENOTCONN,
			       "vm %s has no vsock device (create it with "
			       "\"vsock\":true)",
			       id);
	if ((size_t)snprintf(path, len, "%s", vm.vsock_sock) >= len)
		return fk_fail(err, ENAMETOOLONG, "vm %s: vsock path longer than %zu bytes", id,
			       len - 1);
	return 0;
}

/* As daemon_vm_list: the lineage query on a reader, the JSON outside the lock. */
int daemon_tree(struct daemon *d, json_t **out, struct fk_err *err)
{
	struct reader *rd = reader_get(d);
	const struct reg_vm **refs = NULL;
	struct vm_meta *sz = NULL;
	struct reg_lineage_node *nodes = NULL;
	size_t n = 0;
	json_t *arr;
	int ret;

	*out = NULL;
	if (!rd)
		pthread_mutex_lock(&d->lock);
	ret = registry_lineage(rd ? rd->reg : d->reg, &nodes, &n, err);
	if (rd)
		reader_put(rd);
	else
		pthread_mutex_unlock(&d->lock);
	if (ret == 0 && !(refs = calloc(n ? n : 1, sizeof(*refs))))
		ret = fk_fail(err, ENOMEM, "out of memory for %zu VMs", n);
	for (size_t i = 0; ret == 0 && i < n; i++)
		refs[i] = &nodes[i].vm;
	if (ret == 0)
		ret = sizes_of(d, refs, n, &sz, err);
	if (ret == 0) {
		arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr,
					      json_pack("{s:o,s:i,s:b}", "vm",
							vm_json_sized(&nodes[i].vm, &sz[i]),
							"depth", (int)nodes[i].depth,
							"last_sibling", nodes[i].last_sibling));
		*out = json_pack("{s:o}", "tree", arr);
	}
	free(sz);
	free(refs);
	free(nodes);
	return ret;
}

int daemon_health(struct daemon *d, json_t **out, struct fk_err *err)
{
	struct reg_vm *vms = NULL;
	size_t n = 0;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&d->lock);
	ret = registry_vm_list(d->reg, &vms, &n, err);
	pthread_mutex_unlock(&d->lock);
	free(vms);
	if (ret < 0)
		return ret;
	*out = json_pack("{s:b,s:i}", "ok", 1, "vms", (int)n);
	return 0;
}

int daemon_snapshot_list(struct daemon *d, json_t **out, struct fk_err *err)
{
	struct reg_snapshot *snaps = NULL;
	size_t n = 0;
	json_t *arr;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&d->lock);
	ret = registry_snapshot_list(d->reg, false, &snaps, &n, err);
	if (ret == 0) {
		arr = json_array();
		for (size_t i = 0; i < n; i++)
			json_array_append_new(arr, snap_json(d, &snaps[i]));
		*out = json_pack("{s:o}", "snapshots", arr);
	}
	pthread_mutex_unlock(&d->lock);
	free(snaps);
	return ret;
}

int daemon_snapshot_get(struct daemon *d, const char *tag, json_t **out, struct fk_err *err)
{
	struct reg_snapshot s;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&d->lock);
	ret = registry_snapshot_get(d->reg, tag, &s, err);
	if (ret == 0)
		*out = snap_json(d, &s);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/* ---- Delete ---- */

/* Sends req (consumed) to sock; 0 with *reply_out on "ok":true, else -errno naming what. */
static int vmm_call(const char *what, const char *sock, json_t *req, int timeout_ms,
		    json_t **reply_out, struct fk_err *err)
{
	json_t *reply = NULL;
	int ret;

	if (!req)
		return fk_fail(err, ENOMEM, "%s: out of memory", what);
	ret = control_call(sock, req, &reply, timeout_ms, err);
	json_decref(req);
	if (ret < 0)
		return fk_wrap(err, "%s", what);
	if (!json_is_true(json_object_get(reply, "ok"))) {
		const char *msg = json_string_value(json_object_get(reply, "error"));

		ret =
		    fk_fail(err, EIO, "%s: the VMM refused: %s", what, msg ? msg : "(no message)");
		json_decref(reply);
		return ret;
	}
	if (reply_out)
		*reply_out = reply;
	else
		json_decref(reply);
	return 0;
}

/*
 * Marks the VMs in[] (indices into all[]) busy, or fails with -EBUSY naming one already busy.
 * Lock held.
 */
static int claim(struct daemon *d, const struct reg_vm *all, const bool *in, size_t n,
		 struct fk_err *err)
{
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = in[i] ? find_tracked(d, all[i].id) : NULL;

		if (t && t->busy)
			return fk_fail(
			    err, EBUSY,
			    "vm %s is busy (a branch, snapshot, start or delete of it is "
			    "in progress); try again",
			    all[i].id);
	}
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = in[i] ? find_tracked(d, all[i].id) : NULL;

		if (t)
			t->busy = true;
	}
	return 0;
}

/* Adds every descendant of the VMs in in[] to in[]. */
static void add_descendants(const struct reg_vm *all, bool *in, size_t n)
{
	bool grew = true;

	while (grew) {
		grew = false;
		for (size_t i = 0; i < n; i++) {
			if (in[i] || !all[i].parent_vm[0])
				continue;
			for (size_t j = 0; j < n; j++) {
				if (in[j] && strcmp(all[i].parent_vm, all[j].id) == 0) {
					in[i] = true;
					grew = true;
					break;
				}
			}
		}
	}
}

/* Lists the VMs of in[] that match (names for an error message). */
static void name_list(const struct reg_vm *all, const bool *in, size_t n, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && used < len; i++)
		if (in[i])
			used += (size_t)snprintf(buf + used, len - used, "%s%s", used ? ", " : "",
						 all[i].id);
}

/* Whether every VM of in[] that was watched has died. Lock held. */
static bool all_dead(struct daemon *d, const struct reg_vm *all, const bool *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = in[i] ? find_tracked(d, all[i].id) : NULL;

		if (t && t->pidfd >= 0)
			return false;
	}
	return true;
}

/* Waits (lock held) until all_dead or timeout_ms passed. */
static void wait_all_dead(struct daemon *d, const struct reg_vm *all, const bool *in, size_t n,
			  int timeout_ms)
{
	struct timespec until;

	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += timeout_ms / 1000;
	until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	while (!all_dead(d, all, in, n))
		if (pthread_cond_timedwait(&d->cond, &d->lock, &until) == ETIMEDOUT)
			return;
}

/*
 * Stops the VMMs of in[]: `shutdown` to each, then SIGKILL to those still running after
 * SHUTDOWN_WAIT_MS. Lock held on entry and return, dropped while talking to them and waiting.
 */
static void stop_all(struct daemon *d, const struct reg_vm *all, const bool *in, size_t n)
{
	if (all_dead(d, all, in, n))
		return;
	pthread_mutex_unlock(&d->lock);
	for (size_t i = 0; i < n; i++) {
		struct fk_err ignored = {0};

		if (in[i] && live_state(all[i].state) && all[i].control_sock[0])
			vmm_call("shutdown", all[i].control_sock,
				 json_pack("{s:s}", "cmd", "shutdown"), STATUS_CALL_MS, NULL,
				 &ignored);
	}
	pthread_mutex_lock(&d->lock);
	wait_all_dead(d, all, in, n, SHUTDOWN_WAIT_MS);
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = in[i] ? find_tracked(d, all[i].id) : NULL;

		if (t && t->pidfd >= 0)
			fk_pidfd_kill(t->pidfd, SIGKILL);
	}
	wait_all_dead(d, all, in, n, KILL_WAIT_MS);
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = in[i] ? find_tracked(d, all[i].id) : NULL;

		if (t && t->pidfd >= 0)
			fprintf(stderr, "forkd serve: %s (pid %d) did not die after SIGKILL\n",
				t->id, (int)t->pid);
	}
}

/* 1 if the process p names has exited (a zombie, or gone), 0 if it runs. */
static int proc_exited(const struct reg_proc *p)
{
	struct fk_err ignored = {0};
	char path[64], buf[512], *paren;
	ssize_t len;
	int fd;

	if (p->pid <= 0 || registry_proc_still_same(p, &ignored) != 1)
		return 1;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)p->pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 1;
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len <= 0)
		return 1;
	buf[len] = '\0';
	paren = strrchr(buf, ')');
	return paren && paren[1] == ' ' && paren[2] == 'Z';
}

/*
 * A VMM removes its namespace as it exits; one that was SIGKILLed (or died) leaves it until
 * the next forkd-vmm with a network sweeps. A deleted VM leaves none: the namespace of a
 * stopped VM in[] that is still there is removed now. Lock not held: this runs ip and nft.
 */
static void sweep_netns_of(const struct reg_vm *all, const bool *in, size_t n)
{
	struct fk_err err = {0};
	char path[PATH_MAX];

	for (size_t i = 0; i < n; i++) {
		if (!in[i] || !all[i].net_netns[0])
			continue;
		snprintf(path, sizeof(path), "/run/netns/%s", all[i].net_netns);
		if (access(path, F_OK) < 0 || !proc_exited(&all[i].proc))
			continue;
		/*
		 * Its VMM is gone without removing it (SIGKILL), or is a zombie: a killed
		 * BRANCH child stays one until its source or we reap it, and fk_netns_sweep
		 * counts a zombie as the namespace's living maker. Its name cannot be taken
		 * by another VM meanwhile (a zombie keeps its pid; VM ids are never reused),
		 * so it is removed by name.
		 */
		if (fk_netns_destroy(all[i].net_netns, &err) < 0)
			fprintf(stderr, "forkd serve: %s: removing namespace %s: %s\n", all[i].id,
				all[i].net_netns, err.msg);
	}
}

/* A BRANCH child's files (console, overlay, sockets) are in its branch directory below its
 * parent's directory: DIR/vms/<parent>/branches/<k>/child-<i>. */
static void remove_branch_child_dir(struct daemon *d, const struct reg_vm *all, size_t n,
				    const char *id)
{
	char dir[REG_SOCK_MAX], *slash;
	size_t len = strlen(d->state_dir);

	for (size_t i = 0; i < n; i++) {
		if (strcmp(all[i].id, id) != 0 || !all[i].parent_vm[0])
			continue;
		snprintf(dir, sizeof(dir), "%s", all[i].control_sock);
		slash = strrchr(dir, '/');
		if (!slash || strncmp(dir, d->state_dir, len) != 0 || dir[len] != '/' ||
		    !strstr(dir + len, "/branches/"))
			return;
		*slash = '\0';
		fk_remove_tree(dir);
		return;
	}
}

static void forget_removed(struct daemon *d, const struct reg_ids *removed, json_t *arr,
			   const struct reg_vm *all, size_t n)
{
	struct fk_err ignored = {0};
	char dir[PATH_MAX];

	for (size_t i = 0; i < removed->n; i++) {
		remove_branch_child_dir(d, all, n, removed->ids[i]);
		for (struct tracked *t = d->tracked; t;) {
			struct tracked *next = t->next;
			if (t->is_zygote && strcmp(t->vm, removed->ids[i]) == 0)
				untrack(d, t->id);
			t = next;
		}
		untrack(d, removed->ids[i]);
		if (vm_dir(d, removed->ids[i], NULL, dir, sizeof(dir), &ignored) == 0)
			fk_remove_tree(dir);
		/* A jail is its VM's and its children's: all are gone now (delete cascades). */
		if (jail_dir(d, removed->ids[i], dir, sizeof(dir), &ignored) == 0)
			fk_remove_tree(dir);
		json_array_append_new(arr, json_string(removed->ids[i]));
	}
}

static void release_claim(struct daemon *d, const struct reg_vm *all, const bool *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = in[i] ? find_tracked(d, all[i].id) : NULL;

		if (t)
			t->busy = false;
	}
}

int daemon_vm_delete(struct daemon *d, const char *id, bool cascade, json_t **out,
		     struct fk_err *err)
{
	struct reg_ids removed = {0};
	struct reg_vm *all = NULL;
	bool *in = NULL, claimed = false;
	size_t n = 0, self = 0;
	json_t *arr = NULL;
	int ret;

	*out = NULL;
	pthread_mutex_lock(&d->lock);
	ret = registry_vm_list(d->reg, &all, &n, err);
	if (ret < 0)
		goto out;
	in = calloc(n ? n : 1, sizeof(*in));
	if (!in) {
		ret = fk_fail(err, ENOMEM, "delete vm %s: out of memory", id);
		goto out;
	}
	for (self = 0; self < n && strcmp(all[self].id, id) != 0; self++)
		;
	if (self == n) {
		ret = fk_fail(err, ENOENT, "vm %s: no such VM", id);
		goto out;
	}
	in[self] = true;
	add_descendants(all, in, n);
	if (!cascade) {
		char names[400];
		bool any = false;

		in[self] = false;
		for (size_t i = 0; i < n; i++)
			any |= in[i];
		if (any) {
			name_list(all, in, n, names, sizeof(names));
			ret = fk_fail(err, EBUSY,
				      "vm %s has descendants: %s (delete them first, or "
				      "cascade=true)",
				      id, names);
			goto out;
		}
		in[self] = true;
	}
	ret = claim(d, all, in, n, err);
	if (ret < 0)
		goto out;
	claimed = true;
	stop_all(d, all, in, n);
	ret = registry_vm_delete(d->reg, id, cascade, &removed, err);
	if (ret < 0)
		goto out;
	arr = json_array();
	forget_removed(d, &removed, arr, all, n);
	*out = json_pack("{s:o}", "removed", arr);
	claimed = false;
out:
	if (claimed)
		release_claim(d, all, in, n);
	pthread_mutex_unlock(&d->lock);
	if (ret == 0)
		sweep_netns_of(all, in, n);
	free(removed.ids);
	free(all);
	free(in);
	return ret;
}

/*
 * The registered snapshots that are diffs of `tag` (their PARENT names its
 * directory, docs/diff-snapshots.md): deleting it would break their chains.
 * Their tags into *tags (malloc'ed array, *n of them). Lock not held: it
 * takes it to list.
 */
static int diff_children(struct daemon *d, const char *tag, char (**tags)[REG_TAG_MAX + 1],
			 size_t *n, struct fk_err *err)
{
	char self[PATH_MAX], parent[PATH_MAX];
	struct reg_snapshot *all = NULL, snap;
	size_t count = 0;
	int ret;

	*tags = NULL;
	*n = 0;
	pthread_mutex_lock(&d->lock);
	ret = registry_snapshot_get(d->reg, tag, &snap, err);
	if (ret == 0)
		ret = registry_snapshot_list(d->reg, true, &all, &count, err);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	if (!realpath(snap.path, self))
		goto out; /* gone from disk: nothing can depend on its files */
	*tags = calloc(count ? count : 1, sizeof(**tags));
	if (!*tags) {
		ret = fk_fail(err, ENOMEM, "delete snapshot %s: out of memory", tag);
		goto out;
	}
	for (size_t i = 0; i < count; i++) {
		struct snap_parent_info pi;
		struct snap_reader *r = NULL;
		struct fk_err ignored;

		if (strcmp(all[i].tag, tag) == 0 || snap_reader_open(all[i].path, &r, &ignored) < 0)
			continue;
		if (snap_reader_parent(r, &pi) == 0 && realpath(pi.path, parent) &&
		    strcmp(parent, self) == 0)
			snprintf((*tags)[(*n)++], REG_TAG_MAX + 1, "%s", all[i].tag);
		snap_reader_close(r);
	}
out:
	free(all);
	return ret;
}

int daemon_snapshot_delete(struct daemon *d, const char *tag, bool cascade, json_t **out,
			   struct fk_err *err)
{
	char(*diff_tags)[REG_TAG_MAX + 1] = NULL;
	json_t *diff_removed = NULL;
	size_t nr_diffs = 0;
	struct reg_ids removed = {0};
	struct reg_snapshot snap;
	struct reg_vm *all = NULL;
	bool *in = NULL, claimed = false, any = false;
	size_t n = 0;
	char names[400];
	json_t *arr;
	int ret;

	*out = NULL;
	/* Diff snapshots whose parent this is: refused, or (cascade) deleted first. */
	ret = diff_children(d, tag, &diff_tags, &nr_diffs, err);
	if (ret == 0 && nr_diffs > 0 && !cascade) {
		size_t len = 0;
		names[0] = '\0';
		for (size_t i = 0; i < nr_diffs && len < sizeof(names); i++)
			len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s",
						i ? ", " : "", diff_tags[i]);
		ret = fk_fail(err, EBUSY,
			      "snapshot %s is the parent of diff snapshot%s %s (delete %s first, "
			      "or cascade=true)",
			      tag, nr_diffs == 1 ? "" : "s", names, nr_diffs == 1 ? "it" : "them");
	}
	for (size_t i = 0; ret == 0 && i < nr_diffs; i++) {
		json_t *o = NULL;
		ret = daemon_snapshot_delete(d, diff_tags[i], true, &o, err);
		if (ret == 0) {
			if (!diff_removed)
				diff_removed = json_array();
			json_array_extend(diff_removed, json_object_get(o, "removed"));
			json_decref(o);
		}
	}
	free(diff_tags);
	if (ret < 0) {
		json_decref(diff_removed);
		return ret;
	}
	pthread_mutex_lock(&d->lock);
	ret = registry_snapshot_get(d->reg, tag, &snap, err);
	if (ret < 0)
		goto out;
	if (snap.state == REG_SNAP_WRITING) {
		ret = fk_fail(err, EBUSY,
			      "snapshot %s is being written; try again once it is ready", tag);
		goto out;
	}
	ret = registry_vm_list(d->reg, &all, &n, err);
	if (ret < 0)
		goto out;
	in = calloc(n ? n : 1, sizeof(*in));
	if (!in) {
		ret = fk_fail(err, ENOMEM, "delete snapshot %s: out of memory", tag);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		in[i] = strcmp(all[i].snapshot, tag) == 0;
		any |= in[i];
	}
	if (any && !cascade) {
		name_list(all, in, n, names, sizeof(names));
		ret = fk_fail(err, EBUSY,
			      "snapshot %s has VMs spawned from it: %s (delete them first, or "
			      "cascade=true)",
			      tag, names);
		goto out;
	}
	add_descendants(all, in, n);
	ret = claim(d, all, in, n, err);
	if (ret < 0)
		goto out;
	claimed = true;
	stop_all(d, all, in, n);
	ret = registry_snapshot_delete(d->reg, tag, cascade, &removed, err);
	if (ret < 0)
		goto out;
	claimed = false;
	arr = json_array();
	forget_removed(d, &removed, arr, all, n);
	json_array_append_new(arr, json_string(tag));
	if (diff_removed)
		json_array_extend(arr, diff_removed);
	snap_meta_drop(d, tag);
	fk_remove_tree(snap.path);
	*out = json_pack("{s:o}", "removed", arr);
out:
	if (claimed)
		release_claim(d, all, in, n);
	pthread_mutex_unlock(&d->lock);
	if (ret == 0 && in)
		sweep_netns_of(all, in, n);
	free(removed.ids);
	free(all);
	free(in);
	json_decref(diff_removed);
	return ret;
}

/* ---- Control calls ---- */

/* Looks up a running VM for an operation and marks it busy. Lock held. */
static int claim_running(struct daemon *d, const char *id, struct reg_vm *vm, struct fk_err *err)
{
	struct tracked *t;
	int ret = registry_vm_get(d->reg, id, vm, err);

	if (ret < 0)
		return ret;
	t = find_tracked(d, id);
	if (!live_state(vm->state) || vm->state == REG_VM_STARTING || !t || t->pidfd < 0)
		return fk_fail(err, ENOTCONN, "vm %s is %s: expected a running VM", id,
			       reg_vm_state_name(vm->state));
	if (t->busy)
		return fk_fail(err, EBUSY,
			       "vm %s is busy (a branch, snapshot or delete of it is in progress); "
			       "try again",
			       id);
	t->busy = true;
	return 0;
}

static void unclaim(struct daemon *d, const char *id)
{
	struct tracked *t;

	pthread_mutex_lock(&d->lock);
	t = find_tracked(d, id);
	if (t)
		t->busy = false;
	pthread_mutex_unlock(&d->lock);
}

/* ---- Snapshot ---- */

int daemon_vm_snapshot(struct daemon *d, const char *id, json_t *body, json_t **out,
		       struct fk_err *err)
{
	static const char *const fields[] = {"tag", NULL};
	const char *what = "snapshot", *tag = NULL;
	char outbox[PATH_MAX];
	struct reg_snapshot snap = {0};
	struct reg_vm vm;
	json_t *reply = NULL;
	int ret;

	*out = NULL;
	if ((ret = check_fields(body, what, fields, err)) < 0 ||
	    (ret = get_tag(body, what, &tag, err)) < 0)
		return ret;
	if (!tag)
		return fk_fail(err, EINVAL, "%s: expected \"tag\" (the snapshot's name)", what);
	snprintf(snap.tag, sizeof(snap.tag), "%s", tag);
	snprintf(snap.parent_vm, sizeof(snap.parent_vm), "%s", id);
	if ((ret = snap_dir(d, tag, snap.path, sizeof(snap.path), err)) < 0)
		return ret;
	pthread_mutex_lock(&d->lock);
	ret = claim_running(d, id, &vm, err);
	if (ret == 0) {
		snprintf(snap.image, sizeof(snap.image), "%s", vm.image);
		snprintf(snap.net, sizeof(snap.net), "%s", vm.net);
		ret = registry_snapshot_add(d->reg, &snap, err);
		if (ret < 0) {
			struct tracked *t = find_tracked(d, id);
			if (t)
				t->busy = false;
		}
	}
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	pthread_mutex_lock(&d->lock);
	if (snap_outbox(d, home_of(d, id), tag, outbox, sizeof(outbox), err) < 0)
		outbox[0] = '\0'; /* cannot happen: daemon_open checked the lengths */
	pthread_mutex_unlock(&d->lock);
	ret = outbox[0] ? vmm_call(what, vm.control_sock,
				   json_pack("{s:s,s:s}", "cmd", "snapshot", "path", outbox),
				   SNAPSHOT_TIMEOUT_MS, &reply, err)
			: -ENAMETOOLONG;
	pthread_mutex_lock(&d->lock);
	if (ret == 0)
		ret = publish_snapshot(d, outbox, snap.path, err);
	if (ret == 0) {
		ret = registry_snapshot_mark_ready(d->reg, tag, err);
		snap_meta_set(d, tag,
			      (uint64_t)json_integer_value(json_object_get(reply, "pause_us")));
	} else {
		struct fk_err ignored = {0};
		registry_snapshot_mark_failed(d->reg, tag, &ignored);
		if (outbox[0])
			fk_remove_tree(outbox);
		fk_remove_tree(snap.path);
	}
	if (ret == 0 && registry_snapshot_get(d->reg, tag, &snap, err) == 0)
		*out = snap_json(d, &snap);
	pthread_mutex_unlock(&d->lock);
	json_decref(reply);
	unclaim(d, id);
	return ret;
}

/* ---- Branch ---- */

/* A persist still writing when the branch returned: mark the snapshot, then release. */
struct persist_job {
	struct daemon *d;
	char sock[REG_SOCK_MAX];
	char tag[REG_TAG_MAX + 1];
	char path[REG_PATH_MAX];
	int zygote;
};

static void release_zygote(const char *sock, int zygote)
{
	struct fk_err ignored = {0};

	vmm_call("zygote release", sock,
		 json_pack("{s:s,s:s,s:i}", "cmd", "zygote", "action", "release", "id", zygote),
		 STATUS_CALL_MS * 5, NULL, &ignored);
}

/* "writing", "ready", "failed", or NULL when the zygote is gone. */
static const char *persist_state(const char *sock, int zygote, char *buf, size_t len)
{
	struct fk_err ignored = {0};
	json_t *reply = NULL, *z;
	size_t i;
	const char *state = NULL;

	if (vmm_call("zygote list", sock, json_pack("{s:s,s:s}", "cmd", "zygote", "action", "list"),
		     STATUS_CALL_MS, &reply, &ignored) < 0)
		return NULL;
	json_array_foreach(json_object_get(reply, "zygotes"), i, z)
	{
		if (json_integer_value(json_object_get(z, "zygote")) == zygote) {
			snprintf(buf, len, "%s",
				 json_string_value(json_object_get(z, "persist")) ?: "");
			state = buf;
		}
	}
	json_decref(reply);
	return state;
}

/*
 * The verdict on a persist that is no longer writing (lock held): ready, it
 * is published from its source's outbox (snap_outbox); else it is failed and
 * removed.
 */
static void persist_done(struct daemon *d, const char *tag, bool ready)
{
	struct fk_err err = {0};
	struct reg_snapshot s;
	char outbox[PATH_MAX];

	if (registry_snapshot_get(d->reg, tag, &s, &err) < 0 || s.state != REG_SNAP_WRITING)
		return;
	if (!s.parent_vm[0] ||
	    snap_outbox(d, home_of(d, s.parent_vm), tag, outbox, sizeof(outbox), &err) < 0)
		outbox[0] = '\0';
	if (ready && outbox[0] && publish_snapshot(d, outbox, s.path, &err) == 0 &&
	    registry_snapshot_mark_ready(d->reg, tag, &err) == 0)
		return;
	/* No outbox (a snapshot of a registry from before them): complete if it is in place. */
	if (ready && !outbox[0] && access(s.path, F_OK) == 0 &&
	    (!d->jail || share_snapshot(d, s.path, &err) == 0) &&
	    registry_snapshot_mark_ready(d->reg, tag, &err) == 0)
		return;
	if (ready)
		fprintf(stderr, "forkd serve: snapshot %s: %s\n", tag, err.msg);
	registry_snapshot_mark_failed(d->reg, tag, &err);
	if (outbox[0])
		fk_remove_tree(outbox);
	fk_remove_tree(s.path);
}

static void *persist_main(void *arg)
{
	struct persist_job *job = arg;
	struct daemon *d = job->d;
	char buf[32];

	for (;;) {
		const char *state;
		bool stopping;

		usleep(PERSIST_POLL_MS * 1000);
		pthread_mutex_lock(&d->lock);
		stopping = d->stopping;
		pthread_mutex_unlock(&d->lock);
		if (stopping)
			break; /* a later daemon_open settles the snapshot from its directory */
		state = persist_state(job->sock, job->zygote, buf, sizeof(buf));
		if (state && strcmp(state, "writing") == 0)
			continue;
		pthread_mutex_lock(&d->lock);
		/* Zygote gone: the snapshot is complete only if it was renamed into place. */
		persist_done(d, job->tag,
			     state ? strcmp(state, "ready") == 0 : access(job->path, F_OK) == 0);
		pthread_mutex_unlock(&d->lock);
		if (state)
			release_zygote(job->sock, job->zygote);
		break;
	}
	pthread_mutex_lock(&d->lock);
	d->nr_persist_threads--;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	free(job);
	return NULL;
}

static int start_persist_thread(struct daemon *d, const char *sock, int zygote, const char *tag,
				const char *path)
{
	struct persist_job *job = calloc(1, sizeof(*job));
	pthread_attr_t attr;
	pthread_t th;
	int ret;

	if (!job)
		return -ENOMEM;
	job->d = d;
	job->zygote = zygote;
	snprintf(job->sock, sizeof(job->sock), "%s", sock);
	snprintf(job->tag, sizeof(job->tag), "%s", tag);
	snprintf(job->path, sizeof(job->path), "%s", path);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&d->lock);
	d->nr_persist_threads++;
	ret = -pthread_create(&th, &attr, persist_main, job);
	if (ret < 0)
		d->nr_persist_threads--;
	pthread_mutex_unlock(&d->lock);
	pthread_attr_destroy(&attr);
	if (ret < 0)
		free(job);
	return ret;
}

/* A zygote to release after the branch has answered. */
struct release_job {
	struct daemon *d;
	char sock[REG_SOCK_MAX];
	int zygote;
	struct release_job *next; /* deferred on this thread */
};

/*
 * Thread-local on purpose: between daemon_defer_begin and daemon_defer_end an API connection
 * thread keeps its own request's zygote releases until its answer is sent (started earlier,
 * the release and the source re-collapsing its memory ran beside the answer on the two cores:
 * ~0.3 ms of each branch's answer in bench/api.sh).
 */
static __thread bool defer_on;
static __thread struct release_job *deferred;

static void start_release(struct release_job *job);

void daemon_defer_begin(void)
{
	defer_on = true;
}

void daemon_defer_end(void)
{
	defer_on = false;
	while (deferred) {
		struct release_job *job = deferred;

		deferred = job->next;
		job->next = NULL;
		start_release(job);
	}
}

static void *release_main(void *arg)
{
	struct release_job *job = arg;
	struct daemon *d = job->d;

	release_zygote(job->sock, job->zygote);
	pthread_mutex_lock(&d->lock);
	/* the next branch's or spawn's IDs, made here rather than in their answer's path */
	if (!d->stopping) {
		struct fk_err ignored = {0};

		reserve_vm_ids(d, VM_ID_RESERVE, &ignored);
	}
	d->nr_persist_threads--;
	pthread_cond_broadcast(&d->cond);
	pthread_mutex_unlock(&d->lock);
	free(job);
	return NULL;
}

/*
 * Releases the zygote after the branch has answered, not before: the children
 * run already, and the release (a control call) and the source re-collapsing
 * its memory right after it only delay the answer (bench/api.sh). A daemon
 * killed before the release leaves the zygote held: the next daemon_open
 * releases it (release_stray_zygotes). Releases at once if no thread starts.
 */
static void release_zygote_later(struct daemon *d, const char *sock, int zygote)
{
	struct release_job *job = calloc(1, sizeof(*job));

	if (!job) {
		release_zygote(sock, zygote);
		return;
	}
	job->d = d;
	job->zygote = zygote;
	snprintf(job->sock, sizeof(job->sock), "%s", sock);
	if (defer_on) {
		job->next = deferred;
		deferred = job;
		return;
	}
	start_release(job);
}

/* Releases job's zygote on a thread of its own (at once if none starts); frees job. */
static void start_release(struct release_job *job)
{
	struct daemon *d = job->d;
	pthread_attr_t attr;
	pthread_t th;
	int ret;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_mutex_lock(&d->lock);
	d->nr_persist_threads++;
	ret = -pthread_create(&th, &attr, release_main, job);
	if (ret < 0)
		d->nr_persist_threads--;
	pthread_mutex_unlock(&d->lock);
	pthread_attr_destroy(&attr);
	if (ret < 0) {
		release_zygote(job->sock, job->zygote);
		free(job);
	}
}

/* Records the children of a branch reply (lock held); appends their JSON to kids. */
static void record_children(struct daemon *d, const struct reg_vm *src, const struct tracked *st,
			    const struct reg_zygote *z, json_t *reply, int64_t branched_us,
			    json_t *kids, struct op_timer *tm)
{
	json_t *c;
	size_t i;

	json_array_foreach(json_object_get(reply, "children"), i, c)
	{
		const char *cdir = json_string_value(json_object_get(c, "dir"));
		pid_t pid = (pid_t)json_integer_value(json_object_get(c, "pid"));
		struct fk_err err = {0};
		struct reg_vm vm = {0};
		struct tracked *t;

		vm.state = REG_VM_RUNNING;
		vm.exit_status = REG_NO_EXIT;
		snprintf(vm.parent_vm, sizeof(vm.parent_vm), "%s", src->id);
		snprintf(vm.zygote, sizeof(vm.zygote), "%s", z->id);
		vm.branched_us = branched_us;
		vm.pause_us = z->pause_us;
		snprintf(vm.image, sizeof(vm.image), "%s", src->image);
		snprintf(vm.kernel, sizeof(vm.kernel), "%s", src->kernel);
		snprintf(vm.net, sizeof(vm.net), "%s", src->net);
		if (!cdir ||
		    path_fmt(vm.control_sock, sizeof(vm.control_sock), &err, "%s/control.sock",
			     cdir) < 0 ||
		    (src->vsock_sock[0] && path_fmt(vm.vsock_sock, sizeof(vm.vsock_sock), &err,
						    "%s/vsock.sock", cdir) < 0))
			vm.state =
			    REG_VM_FAILED; /* cannot happen: daemon_open checked the lengths */
		if (vm.state == REG_VM_RUNNING && registry_proc_probe(pid, &vm.proc, &err) < 0) {
			vm.proc.pid = pid;
			vm.state = REG_VM_EXITED;
		}
		timer_mark(tm, "c.probe");
		/* an ID reserved by daemon_vm_branch before its batch: its directory exists */
		if (take_vm_id(d, json_array_size(json_object_get(reply, "children")) - i, vm.id,
			       &err) < 0 ||
		    registry_vm_add_reserved(d->reg, &vm, &err) < 0) {
			fprintf(stderr, "forkd serve: branch of %s: child pid %d: %s\n", src->id,
				(int)pid, err.msg);
			kill(pid, SIGKILL);
			continue;
		}
		t = track(d, vm.id, false);
		if (t) {
			t->meta = st->meta; /* sizes, the family's cgroup, uid and home */
			if (t->meta.uid && !t->meta.home[0])
				snprintf(t->meta.home, sizeof(t->meta.home), "%s", src->id);
			if (vm.state == REG_VM_RUNNING && watch(d, t, pid, &err) < 0 &&
			    registry_vm_set_state(d->reg, vm.id, REG_VM_EXITED, REG_NO_EXIT,
						  &err) == 0)
				vm.state = REG_VM_EXITED;
		}
		timer_mark(tm, "c.add+watch");
		/*
		 * No vm.json: a child's is its source's (meta_load derives it from the lineage),
		 * and a file of its own was ~0.3 ms of every branch's answer. Its JSON from the
		 * row just written (vm: registry_vm_add_reserved set its created time).
		 */
		json_array_append_new(kids, vm_json(d, &vm));
		timer_mark(tm, "c.json");
	}
}

/*
 * A branch whose source failed before answering (it died mid-branch) may
 * still have made children nobody will record: stop whatever answers below
 * its directory, for a short while (a child reports only once its control
 * socket is up; one that cannot report exits by itself).
 */
static void stop_children_of_failed_branch(const char *bdir)
{
	char pattern[PATH_MAX];

	/* The VMM refused before making the branch directory (or removed it): no children. */
	if (access(bdir, F_OK) < 0 ||
	    (size_t)snprintf(pattern, sizeof(pattern), "%s/child-*/control.sock", bdir) >=
		sizeof(pattern))
		return;
	for (int round = 0; round < 20; round++) {
		glob_t g = {0};

		if (glob(pattern, 0, NULL, &g) == 0) {
			for (size_t i = 0; i < g.gl_pathc; i++) {
				struct fk_err e = {0};
				json_t *bye = NULL;

				if (vmm_call("shutdown", g.gl_pathv[i],
					     json_pack("{s:s}", "cmd", "shutdown"), STATUS_CALL_MS,
					     &bye, &e) == 0)
					fprintf(
					    stderr,
					    "forkd serve: stopped %s, a child of a failed branch\n",
					    g.gl_pathv[i]);
				json_decref(bye);
			}
		}
		globfree(&g);
		usleep(100 * 1000);
	}
}

int daemon_vm_branch(struct daemon *d, const char *id, json_t *body, json_t **out,
		     struct fk_err *err)
{
	static const char *const fields[] = {"n", "persist", "tag", "wait", NULL};
	const char *what = "branch", *tag = NULL, *pstate = NULL;
	long long n = 1;
	bool persist = false, wait = true, persist_writing = false;
	char bdir[REG_PATH_MAX], branches[PATH_MAX], outbox[PATH_MAX] = "";
	struct reg_snapshot snap = {0};
	struct reg_zygote z = {0};
	uint32_t uid = 0;
	int first_k = 0, k;
	struct reg_vm src;
	struct tracked *st, *zt;
	json_t *req, *reply = NULL, *kids = NULL, *res;
	int64_t branched_us;
	int zygote_num, ret;
	struct op_timer tm;
	double vmm_s = 0;
	bool batch;

	*out = NULL;
	timer_start(&tm);
	if ((ret = check_fields(body, what, fields, err)) < 0 ||
	    (ret = get_int(body, what, "n", 0, DAEMON_MAX_CHILDREN, &n, err)) < 0 ||
	    (ret = get_bool(body, what, "persist", &persist, err)) < 0 ||
	    (ret = get_bool(body, what, "wait", &wait, err)) < 0 ||
	    (ret = get_tag(body, what, &tag, err)) < 0)
		return ret;
	if (persist && !tag)
		return fk_fail(err, EINVAL,
			       "%s: \"persist\":true needs \"tag\" (the snapshot's name)", what);
	if (!persist && tag)
		return fk_fail(err, EINVAL,
			       "%s: \"tag\" names the persisted snapshot: expected it only with "
			       "\"persist\":true",
			       what);
	if (n == 0 && !persist)
		return fk_fail(err, EINVAL,
			       "%s: \"n\": 0 children only with \"persist\":true (expected 1..%d)",
			       what, DAEMON_MAX_CHILDREN);
	if (persist) {
		snprintf(snap.tag, sizeof(snap.tag), "%s", tag);
		snprintf(snap.parent_vm, sizeof(snap.parent_vm), "%s", id);
		if ((ret = snap_dir(d, tag, snap.path, sizeof(snap.path), err)) < 0)
			return ret;
	}

	pthread_mutex_lock(&d->lock);
	ret = claim_running(d, id, &src, err);
	if (ret == 0 && persist) {
		snprintf(snap.image, sizeof(snap.image), "%s", src.image);
		snprintf(snap.net, sizeof(snap.net), "%s", src.net);
	}
	if (ret == 0 && persist && (ret = registry_snapshot_add(d->reg, &snap, err)) < 0)
		find_tracked(d, id)->busy = false;
	if (ret == 0) {
		struct tracked *home = find_tracked(d, home_of(d, id));

		uid = find_tracked(d, id)->meta.uid;
		first_k = home ? home->next_branch : 0;
		/* A jailed child branches into its home's directory: the one its jail sees. */
		if ((ret = vm_dir(d, home_of(d, id), "branches", branches, sizeof(branches), err)) <
			0 ||
		    (persist &&
		     (ret = snap_outbox(d, home_of(d, id), tag, outbox, sizeof(outbox), err)) < 0))
			find_tracked(d, id)->busy = false;
	}
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	timer_mark(&tm, "claim");

	if (mkdir(branches, 0755) < 0 && errno != EEXIST) {
		ret = fk_fail_errno(err, errno, "%s: create %s", what, branches);
		goto fail;
	}
	/* A jailed source makes the branch's directory here, as its own uid. */
	if (uid && chown(branches, uid, d->uid_first) < 0) {
		ret = fk_fail_errno(err, errno, "%s: give %s to uid %u", what, branches, uid);
		goto fail;
	}
	for (k = first_k;; k++) {
		struct stat sb;

		if ((ret = path_fmt(bdir, sizeof(bdir), err, "%s/%d", branches, k)) < 0)
			goto fail;
		if (lstat(bdir, &sb) < 0)
			break;
	}
	pthread_mutex_lock(&d->lock);
	{
		struct tracked *home = find_tracked(d, home_of(d, id));

		if (home && home->next_branch <= k)
			home->next_branch = k + 1;
	}
	pthread_mutex_unlock(&d->lock);
	req = json_pack("{s:s,s:I,s:s,s:b}", "cmd", "branch", "n", (json_int_t)n, "dir", bdir,
			"wait", wait);
	if (req && persist)
		json_object_set_new(req, "persist", json_string(outbox));
	branched_us = wall_us();
	timer_mark(&tm, "dir");
	vmm_s = mono_s();
	ret = vmm_call(what, src.control_sock, req, BRANCH_TIMEOUT_MS, &reply, err);
	vmm_s = mono_s() - vmm_s;
	timer_mark(&tm, "vmm");
	if (ret < 0) {
		stop_children_of_failed_branch(bdir);
		goto fail;
	}
	zygote_num = (int)json_integer_value(json_object_get(reply, "zygote"));
	pstate = json_string_value(json_object_get(reply, "persist"));
	persist_writing = persist && pstate && strcmp(pstate, "writing") == 0;

	kids = json_array();
	pthread_mutex_lock(&d->lock);
	st = find_tracked(d, id);
	snprintf(z.vm, sizeof(z.vm), "%s", id);
	snprintf(z.dir, sizeof(z.dir), "%s", bdir);
	z.nr_children = (uint32_t)n;
	z.pause_us = (uint64_t)json_integer_value(json_object_get(reply, "pause_us"));
	if (registry_proc_probe((pid_t)json_integer_value(json_object_get(reply, "zygote_pid")),
				&z.proc, err) < 0)
		memset(&z.proc, 0, sizeof(z.proc));
	timer_mark(&tm, "zprobe");
	/* The children's IDs, reserved outside the batch (one that fails must not undo them). */
	{
		struct fk_err e = {0};

		if (reserve_vm_ids(d, json_array_size(json_object_get(reply, "children")), &e) < 0)
			fprintf(stderr, "forkd serve: branch of %s: reserving IDs: %s\n", id,
				e.msg);
	}
	/* The zygote and its children in one commit: a daemon killed before it leaves none of
	 * them recorded, and re-adoption stops the unrecorded children
	 * (stop_unregistered_children). */
	batch = registry_batch_begin(d->reg, err) == 0;
	ret = registry_zygote_add(d->reg, &z, err);
	timer_mark(&tm, "zadd");
	if (ret == 0) {
		zt = track(d, z.id, true);
		if (zt) {
			snprintf(zt->vm, sizeof(zt->vm), "%s", id);
			if (z.proc.pid)
				watch(d, zt, z.proc.pid, err);
		}
		timer_mark(&tm, "zwatch");
		record_children(d, &src, st, &z, reply, branched_us, kids, &tm);
		timer_mark(&tm, "children");
	}
	if (batch && registry_batch_end(d->reg, err) < 0 && ret == 0) {
		/* Nothing of the branch was recorded: handled as a failed zygote add. */
		json_t *k;
		size_t i;

		json_array_foreach(kids, i, k)
		    untrack(d, json_string_value(json_object_get(k, "id")));
		untrack(d, z.id);
		json_array_clear(kids);
		ret = -EIO;
	}
	timer_mark(&tm, "commit");
	/* Without a zygote record the zygote is released below, ending a persist too. */
	if (persist && (!persist_writing || ret < 0))
		persist_done(d, tag, ret == 0 && pstate && strcmp(pstate, "ready") == 0);
	if (persist)
		snap_meta_set(d, tag, z.pause_us);
	if (persist && registry_snapshot_get(d->reg, tag, &snap, err) < 0)
		persist = false;
	if (st)
		st->busy = false;
	pthread_mutex_unlock(&d->lock);
	if (ret < 0) {
		/* Without a zygote record the children cannot be recorded: end them. */
		json_t *c;
		size_t i;
		json_array_foreach(json_object_get(reply, "children"), i, c)
		    kill((pid_t)json_integer_value(json_object_get(c, "pid")), SIGKILL);
		release_zygote(src.control_sock, zygote_num);
		json_decref(reply);
		json_decref(kids);
		return fk_wrap(err, "%s of %s", what, id);
	}
	timer_mark(&tm, "record");
	report(d, DAEMON_METRIC_BRANCH_PAUSE, z.pause_us / 1e6);
	if (!persist_writing)
		release_zygote_later(d, src.control_sock, zygote_num);
	else if (start_persist_thread(d, src.control_sock, zygote_num, tag, outbox) < 0)
		release_zygote(src.control_sock, zygote_num);
	timer_mark(&tm, "release");
	if (strcmp(src.net[0] ? src.net : "none", "none") != 0) {
		json_t *k;
		size_t i;

		json_array_foreach(kids, i, k) net_ask(d, k);
		timer_mark(&tm, "net");
	}
	/* vmm_ms: the source VMM's branch call, what a client sending it itself would wait */
	res = json_pack("{s:s,s:I,s:o,s:o}", "zygote", z.id, "pause_us", (json_int_t)z.pause_us,
			"vmm_ms", json_ms(vmm_s), "children", kids);
	if (persist) {
		pthread_mutex_lock(&d->lock);
		json_object_set_new(res, "snapshot", snap_json(d, &snap));
		pthread_mutex_unlock(&d->lock);
	}
	json_decref(reply);
	*out = res;
	timer_mark(&tm, "json");
	timer_end(d, &tm, what);
	return 0;
fail:
	pthread_mutex_lock(&d->lock);
	if (persist) {
		struct fk_err ignored = {0};
		registry_snapshot_mark_failed(d->reg, tag, &ignored);
		fk_remove_tree(outbox);
		fk_remove_tree(snap.path);
	}
	st = find_tracked(d, id);
	if (st)
		st->busy = false;
	pthread_mutex_unlock(&d->lock);
	return fk_wrap(err, "%s of %s", what, id);
}

/* ---- Spawn from a snapshot ---- */

/* vm_snapshot_readonly_images' check that each read-only image is the allowed one. */
struct ro_image_check {
	const char *allowed; /* "": none allowed */
	char bad[4096];
};

static int ro_image_ok(const char *path, void *opaque)
{
	struct ro_image_check *chk = opaque;

	if (chk->allowed[0] && strcmp(path, chk->allowed) == 0)
		return 0;
	snprintf(chk->bad, sizeof(chk->bad), "%s", path);
	return -EPERM;
}

/* Whether the snapshot at path has a vsock device, and its size; false: it cannot be read. */
static bool snapshot_facts(const char *path, struct spawn_facts *f)
{
	struct fk_err ignored = {0};
	const struct snap_vm_info *info;
	struct snap_reader *r;
	const void *data;
	uint32_t type;
	size_t len;

	memset(f, 0, sizeof(*f));
	if (snap_reader_open(path, &r, &ignored) < 0)
		return false;
	f->vsock = snap_reader_find_device(r, VM_DEVICE_INSTANCE_VSOCK, &type, &data, &len) == 0;
	info = snap_reader_vm_info(r);
	if (info && info->mem_size >> 20 <= MEM_MIB_MAX && info->nr_vcpus <= CPUS_MAX) {
		f->mem_mib = (int)(info->mem_size >> 20);
		f->cpus = (int)info->nr_vcpus;
	}
	snap_reader_close(r);
	return true;
}

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec && a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

/*
 * A spawn's checks of snapshot tag (struct spawn_check): its read-only disks must be its own
 * image's root file system (allowed, "" for none), else -EINVAL naming the path; fills f.
 * From the cache when the snapshot's state file is unchanged since they last passed. Lock
 * not held.
 */
static int spawn_check_snapshot(struct daemon *d, const char *what, const char *tag,
				const struct reg_snapshot *snap, const char *allowed,
				struct spawn_facts *f, struct fk_err *err)
{
	struct ro_image_check chk = {0};
	struct fk_err why = {0};
	char state[PATH_MAX];
	struct stat st;
	bool cacheable;

	cacheable = (size_t)snprintf(state, sizeof(state), "%s/%s", snap->path, SNAP_STATE_FILE) <
			sizeof(state) &&
		    stat(state, &st) == 0;
	if (cacheable) {
		bool hit = false;

		pthread_mutex_lock(&d->lock);
		for (struct spawn_check *c = d->spawn_checks; c && !hit; c = c->next) {
			hit = strcmp(c->tag, tag) == 0 && strcmp(c->path, snap->path) == 0 &&
			      strcmp(c->allowed, allowed) == 0 && same_file(&c->state, &st);
			if (hit)
				*f = c->facts;
		}
		pthread_mutex_unlock(&d->lock);
		if (hit)
			return 0;
	}
	chk.allowed = allowed;
	/* One that cannot be read is left to the VMMs, which say why. */
	if (vm_snapshot_readonly_images(snap->path, ro_image_ok, &chk, &why) < 0 && chk.bad[0])
		return fk_fail(err, EINVAL,
			       "%s: snapshot %s names the read-only image %s, not its "
			       "image's (%s): refused",
			       what, tag, chk.bad, allowed[0] ? allowed : "none");
	if (!snapshot_facts(snap->path, f) || !cacheable || why.msg[0])
		return 0; /* not kept: the VMMs say what is wrong with it */
	struct spawn_check *c = calloc(1, sizeof(*c));
	if (!c)
		return 0;
	snprintf(c->tag, sizeof(c->tag), "%s", tag);
	snprintf(c->path, sizeof(c->path), "%s", snap->path);
	snprintf(c->allowed, sizeof(c->allowed), "%s", allowed);
	c->state = st;
	c->facts = *f;
	pthread_mutex_lock(&d->lock);
	for (struct spawn_check **pp = &d->spawn_checks; *pp;) {
		struct spawn_check *old = *pp;

		if (strcmp(old->tag, tag) == 0) { /* an earlier version of it */
			*pp = old->next;
			free(old);
		} else {
			pp = &old->next;
		}
	}
	c->next = d->spawn_checks;
	d->spawn_checks = c;
	pthread_mutex_unlock(&d->lock);
	return 0;
}

/* The sockets of a VM restored from a snapshot, named after its ID (vsock: it has the device). */
static int name_restored(struct daemon *d, struct reg_vm *vm, bool vsock, struct fk_err *err)
{
	int ret =
	    vm_dir(d, vm->id, "control.sock", vm->control_sock, sizeof(vm->control_sock), err);

	if (ret == 0 && vsock)
		ret = vm_dir(d, vm->id, "vsock.sock", vm->vsock_sock, sizeof(vm->vsock_sock), err);
	return ret;
}

/* Starts VM vm's VMM (named by name_restored), restoring snap_path. Lock not held. */
static int start_restored(struct daemon *d, const char *snap_path, const struct reg_vm *vm,
			  const struct vm_limits *lim, uint32_t uid, struct starting *s,
			  struct fk_err *err)
{
	struct limit_args lim_args;
	struct jail_args jail_args;
	char overlay[PATH_MAX], serial[PATH_MAX], dir[PATH_MAX];
	char net_policy[REG_NET_MAX + 4 + REG_ID_MAX];
	bool vsock = vm->vsock_sock[0] != '\0';
	int ret;

	if ((ret = vm_dir(d, vm->id, NULL, dir, sizeof(dir), err)) < 0 ||
	    (ret = vm_dir(d, vm->id, "overlay", overlay, sizeof(overlay), err)) < 0 ||
	    (ret = vm_dir(d, vm->id, "serial.log", serial, sizeof(serial), err)) < 0 ||
	    (ret = vm_dir(d, vm->id, "vmm.err", s->err_path, sizeof(s->err_path), err)) < 0)
		return ret;
	/* made when its ID was reserved */
	if (mkdir(dir, 0755) < 0 && errno != EEXIST)
		return fk_fail_errno(err, errno, "%s: create %s", vm->id, dir);
	if ((ret = jail_prepare(d, vm->id, uid, dir, &jail_args, err)) < 0)
		return ret;
	snprintf(s->sock, sizeof(s->sock), "%s", vm->control_sock);
	char *argv[32];
	int a = 0;

	argv[a++] = d->vmm;
	argv[a++] = "--restore";
	argv[a++] = (char *)snap_path;
	argv[a++] = "--overlay-dir";
	argv[a++] = overlay;
	argv[a++] = "--control";
	argv[a++] = (char *)vm->control_sock;
	argv[a++] = "--serial";
	argv[a++] = serial;
	argv[a++] = "--serial-in";
	argv[a++] = "none";
	/* the restored VM makes a namespace of its own, forkd-<its id> */
	if (net_args(vm->net, vm->id, net_policy, sizeof(net_policy))) {
		argv[a++] = "--net-policy";
		argv[a++] = net_policy;
	}
	if (vsock) {
		argv[a++] = "--vsock";
		argv[a++] = (char *)vm->vsock_sock;
	}
	add_limit_args(lim, &lim_args, argv, &a);
	add_jail_args(uid, &jail_args, argv, &a);
	argv[a] = NULL;
	pthread_mutex_lock(&d->lock);
	ret = launch_locked(d, s, argv, err);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

/*
 * Writes the rows of n restored VMs whose VMMs already start (one registry write, while they
 * restore), each with its VMM's pid and /proc identity. A daemon killed before this leaves VMMs
 * without rows: the next one stops them (stop_unrecorded_vms). Lock not held.
 */
static int record_started(struct daemon *d, const struct starting *s, struct reg_vm *regs, size_t n,
			  struct fk_err *err)
{
	struct fk_err ignored = {0};
	int ret;

	for (size_t i = 0; i < n; i++) {
		regs[i].proc.pid = s[i].pid;
		if (s[i].probed && s[i].proc.pid == s[i].pid)
			regs[i].proc = s[i].proc;
	}
	pthread_mutex_lock(&d->lock);
	ret = n > 1 ? registry_batch_begin(d->reg, err) : 0;
	for (size_t i = 0; i < n && ret == 0; i++)
		ret = registry_vm_add_reserved(d->reg, &regs[i], err);
	if (n > 1 && ret == 0)
		ret = registry_batch_end(d->reg, err);
	else if (n > 1)
		registry_batch_end(d->reg,
				   &ignored); /* commits the rows before it; abort removes them */
	/* The next spawn's IDs and directories, made now rather than in its critical path. */
	if (ret == 0 && reserve_vm_ids(d, VM_ID_RESERVE, &ignored) < 0)
		fprintf(stderr, "forkd serve: reserving VM IDs: %s\n", ignored.msg);
	pthread_mutex_unlock(&d->lock);
	return ret;
}

int daemon_snapshot_spawn(struct daemon *d, const char *tag, json_t *body, json_t **out,
			  struct fk_err *err)
{
	static const char *const fields[] = {"n", "memory_max_mib", "cpu_max", "pids_max", NULL};
	const char *what = "spawn";
	struct vm_limits lim, *lims = NULL;
	uint32_t *uids = NULL;
	struct starting *s = NULL;
	struct reg_vm *regs = NULL;
	struct reg_snapshot snap;
	struct reg_vm origin;
	struct spawn_facts facts = {0};
	char want[PATH_MAX] = "";
	long long n = 1;
	double t0 = mono_s();
	json_t *vms = NULL;
	bool vsock;
	int ret;
	struct op_timer tm;

	*out = NULL;
	timer_start(&tm);
	if ((ret = check_fields(body, what, fields, err)) < 0 ||
	    (ret = get_int(body, what, "n", 1, DAEMON_MAX_CHILDREN, &n, err)) < 0 ||
	    (ret = get_limits(body, what, &lim, err)) < 0)
		return ret;
	pthread_mutex_lock(&d->lock);
	ret = registry_snapshot_get(d->reg, tag, &snap, err);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		return ret;
	if (snap.state != REG_SNAP_READY)
		return fk_fail(err, snap.state == REG_SNAP_WRITING ? EBUSY : EINVAL,
			       "%s: snapshot %s is %s: expected a ready snapshot", what, tag,
			       reg_snap_state_name(snap.state));
	/* One written while VMs were not jailed is root's alone: the VMs' group reads it now. */
	if (d->jail && (ret = share_snapshot(d, snap.path, err)) < 0)
		return fk_wrap(err, "%s from snapshot %s", what, tag);
	/*
	 * A snapshot's read-only disks are reopened from the paths it names: only its
	 * own image's root file system may be one (a hostile VMM could have written
	 * any path, and the restored guest would read that file).
	 */
	if (snap.image[0])
		snprintf(want, sizeof(want), "%s/%s/rootfs.ext4", image_cache(), snap.image);
	ret = spawn_check_snapshot(d, what, tag, &snap, want, &facts, err);
	if (ret < 0)
		return ret;
	vsock = facts.vsock;
	timer_mark(&tm, "snapshot");
	s = calloc((size_t)n, sizeof(*s));
	lims = calloc((size_t)n, sizeof(*lims));
	uids = calloc((size_t)n, sizeof(*uids));
	regs = calloc((size_t)n, sizeof(*regs));
	if (!s || !lims || !uids || !regs) {
		free(s);
		free(lims);
		free(uids);
		free(regs);
		return fk_fail(err, ENOMEM, "%s: out of memory for %lld VMs", what, n);
	}

	pthread_mutex_lock(&d->lock);
	/* A restored VM runs what its snapshot's VM booted, when that is still known. */
	if (!snap.parent_vm[0] || registry_vm_get(d->reg, snap.parent_vm, &origin, err) < 0)
		memset(&origin, 0, sizeof(origin));
	for (long long i = 0; i < n && ret == 0; i++) {
		struct reg_vm vm = {0};
		struct tracked *t;

		vm.state = REG_VM_STARTING;
		vm.exit_status = REG_NO_EXIT;
		snprintf(vm.snapshot, sizeof(vm.snapshot), "%s", tag);
		snprintf(vm.image, sizeof(vm.image), "%s", origin.image);
		snprintf(vm.kernel, sizeof(vm.kernel), "%s", origin.kernel);
		snprintf(vm.net, sizeof(vm.net), "%s", snap.net);
		uids[i] = 0;
		ret = d->jail ? jail_uid_alloc(d, &uids[i], err) : 0;
		if (ret == 0)
			ret = take_vm_id(d, (size_t)(n - i), vm.id, err);
		if (ret == 0)
			ret = name_restored(d, &vm, vsock, err);
		if (ret < 0)
			break;
		regs[i] = vm;
		snprintf(s[i].id, sizeof(s[i].id), "%s", vm.id);
		t = track(d, vm.id, false);
		lims[i] = lim; /* each VM its own cgroup, vm-<its id> */
		limits_name(&lims[i], vm.id);
		if (!t)
			ret = fk_fail(err, ENOMEM, "%s: out of memory", vm.id);
		else {
			t->busy = true;
			t->meta.limits = lims[i];
			t->meta.uid = uids[i];
		}
	}
	pthread_mutex_unlock(&d->lock);
	timer_mark(&tm, "register");
	for (long long i = 0; i < n && ret == 0; i++)
		ret = start_restored(d, snap.path, &regs[i], &lims[i], uids[i], &s[i], err);
	timer_mark(&tm, "launch");
	if (ret == 0) {
		prepare_started(d, s, (size_t)n, facts.mem_mib, facts.cpus);
		ret = record_started(d, s, regs, (size_t)n, err);
		timer_mark(&tm, "prepare");
	}
	if (ret == 0)
		ret = wait_answering(d, s, (size_t)n, true, err);
	timer_mark(&tm, "answer");
	if (ret == 0) {
		vms = json_array();
		ret = finish_started(d, s, (size_t)n, vms, err);
	}
	timer_mark(&tm, "finish");
	if (ret < 0) {
		json_decref(vms);
		abort_started(d, s, (size_t)n);
		free(s);
		free(lims);
		free(uids);
		free(regs);
		return fk_wrap(err, "%s %lld from snapshot %s", what, n, tag);
	}
	free(s);
	free(lims);
	free(uids);
	free(regs);
	report(d, DAEMON_METRIC_SPAWN, mono_s() - t0);
	*out = json_pack("{s:o}", "vms", vms);
	timer_end(d, &tm, what);
	return 0;
}

/* ---- Images ---- */

/*
 * What of the registry uses an image: VMs recorded with it (created from it,
 * branched or restored from such a VM), and snapshots taken from such a VM
 * (recorded with the snapshot; for snapshots of registries before schema
 * version 2, their parent or a VM spawned from them says which). A live VM
 * or a snapshot that is not failed holds it: *busy. Arrays of IDs and tags.
 */
static void image_users(const char *name, const struct reg_vm *vms, size_t nv,
			const struct reg_snapshot *snaps, size_t ns, json_t *vm_ids, json_t *tags,
			bool *busy)
{
	for (size_t i = 0; i < nv; i++) {
		if (strcmp(vms[i].image, name) != 0)
			continue;
		json_array_append_new(vm_ids, json_string(vms[i].id));
		if (live_state(vms[i].state))
			*busy = true;
	}
	for (size_t k = 0; k < ns; k++) {
		bool uses = strcmp(snaps[k].image, name) == 0;

		for (size_t i = 0; i < nv && !uses && !snaps[k].image[0]; i++)
			uses = strcmp(vms[i].image, name) == 0 &&
			       (strcmp(vms[i].id, snaps[k].parent_vm) == 0 ||
				strcmp(vms[i].snapshot, snaps[k].tag) == 0);
		if (!uses)
			continue;
		json_array_append_new(tags, json_string(snaps[k].tag));
		if (snaps[k].state != REG_SNAP_FAILED)
			*busy = true;
	}
}

/* "VMs vm-1, vm-2 and snapshots t1" of an image's JSON, for a message (cut at len). */
static void image_users_text(const json_t *img, char *buf, size_t len)
{
	static const char *const keys[] = {"vms", "snapshots"};
	static const char *const labels[] = {"VMs", "snapshots"};
	size_t used = 0;

	buf[0] = '\0';
	for (int k = 0; k < 2; k++) {
		const json_t *arr = json_object_get(img, keys[k]);
		size_t i;
		json_t *v;

		if (!json_array_size(arr))
			continue;
		used += (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s%s",
					 used ? " and " : "", labels[k]);
		json_array_foreach(arr, i, v) used +=
		    (size_t)snprintf(buf + used, used < len ? len - used : 0, "%s %s", i ? "," : "",
				     json_string_value(v));
	}
}

/* Every VM and snapshot, read on a reader connection (or under the lock without one). */
static int read_all(struct daemon *d, struct reg_vm **vms, size_t *nv, struct reg_snapshot **snaps,
		    size_t *ns, bool locked, struct fk_err *err)
{
	struct reader *rd = locked ? NULL : reader_get(d);
	struct registry *reg = rd ? rd->reg : d->reg;
	int ret;

	if (!rd && !locked)
		pthread_mutex_lock(&d->lock);
	ret = registry_vm_list(reg, vms, nv, err);
	if (ret == 0 && (ret = registry_snapshot_list(reg, false, snaps, ns, err)) < 0) {
		free(*vms);
		*vms = NULL;
	}
	if (rd)
		reader_put(rd);
	else if (!locked)
		pthread_mutex_unlock(&d->lock);
	return ret;
}

/* -EINVAL for a name that is no image name (never a path: no '/', no leading '.'). */
static int image_name_check(const char *what, const char *name, struct fk_err *err)
{
	if (!daemon_image_name_ok(name))
		return fk_fail(err, EINVAL,
			       "%s '%.80s': expected an image name of 1 to 63 characters: a-z 0-9 "
			       ". _ - starting with a letter or digit",
			       what, name);
	return 0;
}

/* The image's JSON, or NULL when the cache has no NAME/rootfs.ext4. */
static json_t *image_json(const char *cache, const char *name, const struct reg_vm *vms, size_t nv,
			  const struct reg_snapshot *snaps, size_t ns)
{
	char path[PATH_MAX], manifest[PATH_MAX];
	json_t *o, *m, *vm_ids, *tags, *created = NULL;
	bool busy = false;
	struct stat st;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s/rootfs.ext4", cache, name) >=
		sizeof(path) ||
	    (size_t)snprintf(manifest, sizeof(manifest), "%s/%s/manifest.json", cache, name) >=
		sizeof(manifest) ||
	    stat(path, &st) < 0 || !S_ISREG(st.st_mode))
		return NULL;
	/* The manifest (images/rootfs.sh) says when it was built and from what; an image
	 * made another way has none: its file's time stands in. */
	m = json_load_file(manifest, 0, NULL);
	if (json_is_string(json_object_get(m, "created")))
		created = json_incref(json_object_get(m, "created"));
	else
		created =
		    iso_time((int64_t)st.st_mtim.tv_sec * 1000000 + st.st_mtim.tv_nsec / 1000);
	vm_ids = json_array();
	tags = json_array();
	image_users(name, vms, nv, snaps, ns, vm_ids, tags, &busy);
	o = json_pack("{s:s,s:s,s:I,s:o,s:O,s:o,s:o,s:b}", "name", name, "path", path, "size",
		      (json_int_t)st.st_size, "created", created, "packages",
		      json_is_array(json_object_get(m, "packages")) ? json_object_get(m, "packages")
								    : json_null(),
		      "vms", vm_ids, "snapshots", tags, "in_use", busy);
	json_decref(m);
	return o;
}

static int skip_dots(const struct dirent *e)
{
	return daemon_image_name_ok(e->d_name);
}

int daemon_image_list(struct daemon *d, json_t **out, struct fk_err *err)
{
	const char *cache = image_cache();
	struct reg_snapshot *snaps = NULL;
	struct reg_vm *vms = NULL;
	struct dirent **names = NULL;
	size_t nv = 0, ns = 0;
	json_t *arr;
	int n, ret;

	*out = NULL;
	n = scandir(cache, &names, skip_dots, alphasort);
	if (n < 0 && errno != ENOENT)
		return fk_fail_errno(err, errno, "image cache %s", cache);
	ret = read_all(d, &vms, &nv, &snaps, &ns, false, err);
	arr = json_array();
	for (int i = 0; i < n; i++) {
		json_t *img =
		    ret == 0 ? image_json(cache, names[i]->d_name, vms, nv, snaps, ns) : NULL;

		if (img)
			json_array_append_new(arr, img);
		free(names[i]);
	}
	free(names);
	free(vms);
	free(snaps);
	if (ret < 0) {
		json_decref(arr);
		return ret;
	}
	*out = json_pack("{s:o}", "images", arr);
	return 0;
}

int daemon_image_get(struct daemon *d, const char *name, json_t **out, struct fk_err *err)
{
	struct reg_snapshot *snaps = NULL;
	struct reg_vm *vms = NULL;
	size_t nv = 0, ns = 0;
	int ret;

	*out = NULL;
	if ((ret = image_name_check("image", name, err)) < 0 ||
	    (ret = read_all(d, &vms, &nv, &snaps, &ns, false, err)) < 0)
		return ret;
	*out = image_json(image_cache(), name, vms, nv, snaps, ns);
	free(vms);
	free(snaps);
	if (!*out)
		return fk_fail(err, ENOENT,
			       "image %s: no such image in %s (forkd image ls lists them)", name,
			       image_cache());
	return 0;
}

/*
 * Under the lock, so that no VM is registered with the image between the
 * check and the removal (create registers its VM under the lock before it
 * starts the VMM); a create that checked the image before is refused by
 * forkd-vmm (no rootfs) and leaves nothing. The directory is renamed away
 * first (as images/rootfs.sh --rm does): nobody sees half an image.
 */
int daemon_image_delete(struct daemon *d, const char *name, json_t **out, struct fk_err *err)
{
	const char *cache = image_cache();
	struct reg_snapshot *snaps = NULL;
	struct reg_vm *vms = NULL;
	char dir[PATH_MAX], gone[PATH_MAX], moved[PATH_MAX], lock[PATH_MAX];
	json_t *img = NULL;
	size_t nv = 0, ns = 0;
	bool made_gone;
	int ret;

	*out = NULL;
	if ((ret = image_name_check("image", name, err)) < 0)
		return ret;
	if ((size_t)snprintf(dir, sizeof(dir), "%s/%s", cache, name) >= sizeof(dir) ||
	    (size_t)snprintf(gone, sizeof(gone), "%s/.rm-%s.XXXXXX", cache, name) >= sizeof(gone) ||
	    (size_t)snprintf(lock, sizeof(lock), "%s/.%s.lock", cache, name) >= sizeof(lock))
		return fk_fail(err, ENAMETOOLONG, "image %s: path in %s too long", name, cache);
	pthread_mutex_lock(&d->lock);
	ret = read_all(d, &vms, &nv, &snaps, &ns, true, err);
	if (ret == 0) {
		img = image_json(cache, name, vms, nv, snaps, ns);
		if (!img)
			ret = fk_fail(err, ENOENT, "image %s: no such image in %s", name, cache);
	}
	if (ret == 0 && json_is_true(json_object_get(img, "in_use"))) {
		char users[512];

		image_users_text(img, users, sizeof(users));
		ret =
		    fk_fail(err, EBUSY, "image %s is in use by %s: delete them first", name, users);
	}
	if (ret == 0 && !mkdtemp(gone))
		ret = fk_fail_errno(err, errno, "image %s: %s", name, gone);
	made_gone = ret == 0;
	if (ret == 0 &&
	    (size_t)snprintf(moved, sizeof(moved), "%s/%s", gone, name) >= sizeof(moved))
		ret = fk_fail(err, ENAMETOOLONG, "image %s: path in %s too long", name, gone);
	else if (ret == 0 && rename(dir, moved) < 0)
		ret = fk_fail_errno(err, errno, "image %s: move %s away", name, dir);
	if (ret < 0 && made_gone)
		rmdir(gone); /* still empty */
	pthread_mutex_unlock(&d->lock);
	json_decref(img);
	free(vms);
	free(snaps);
	if (ret < 0)
		return ret;
	fk_remove_tree(gone);
	unlink(lock);
	*out = json_pack("{s:[s]}", "removed", name);
	return 0;
}

/* ---- Open and close ---- */

static int make_dir(const char *path, struct fk_err *err)
{
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		return fk_fail_errno(err, errno, "state dir: cannot create %s", path);
	return 0;
}

/*
 * A snapshot an earlier daemon left "writing": if its source was re-adopted and its zygote is
 * still persisting it, a persist thread (started by daemon_open once the lock is free, from
 * jobs) follows it as before; if the zygote has finished, the snapshot takes its verdict;
 * without a zygote it is complete only if it was renamed into place (snapshots are written
 * under a temporary name). Lock held.
 */
static void settle_writing(struct daemon *d, const struct reg_snapshot *s, json_t *jobs)
{
	struct tracked *src = s->parent_vm[0] ? find_tracked(d, s->parent_vm) : NULL;
	struct fk_err ignored = {0};
	json_t *reply = NULL, *z;
	char outbox[PATH_MAX] = "";
	struct reg_vm vm;
	size_t i;

	if (s->parent_vm[0])
		snap_outbox(d, home_of(d, s->parent_vm), s->tag, outbox, sizeof(outbox), &ignored);
	if (src && src->pidfd >= 0 && registry_vm_get(d->reg, src->id, &vm, &ignored) == 0 &&
	    vmm_call("zygote list", vm.control_sock,
		     json_pack("{s:s,s:s}", "cmd", "zygote", "action", "list"), STATUS_CALL_MS,
		     &reply, &ignored) == 0) {
		json_array_foreach(json_object_get(reply, "zygotes"), i, z)
		{
			const char *path = json_string_value(json_object_get(z, "persist_path"));
			const char *state = json_string_value(json_object_get(z, "persist"));
			int id = (int)json_integer_value(json_object_get(z, "zygote"));

			if (!path || !state || strcmp(path, outbox) != 0)
				continue;
			if (strcmp(state, "writing") == 0) {
				json_array_append_new(
				    jobs, json_pack("{s:s,s:i,s:s,s:s}", "sock", vm.control_sock,
						    "zygote", id, "tag", s->tag, "path", outbox));
			} else {
				persist_done(d, s->tag, strcmp(state, "ready") == 0);
				release_zygote(vm.control_sock, id);
			}
			json_decref(reply);
			return;
		}
		json_decref(reply);
	}
	/* In place already (a daemon killed between the move and the mark), or in the outbox. */
	persist_done(d, s->tag,
		     access(s->path, F_OK) == 0 || (outbox[0] && access(outbox, F_OK) == 0));
}

/*
 * BRANCH children the registry never heard of: the daemon died between the
 * source's branch and recording the children. Their VMMs answer on control
 * sockets below their source's branches/ directory; stop them rather than
 * leave orphans nobody manages. Lock held.
 */
static void stop_unregistered_children(struct daemon *d)
{
	struct reg_vm *vms = NULL;
	struct fk_err e = {0};
	char pattern[PATH_MAX];
	glob_t g = {0};
	size_t n = 0;

	if (snprintf(pattern, sizeof(pattern), "%s/vms/*/branches/*/child-*/control.sock",
		     d->state_dir) >= (int)sizeof(pattern) ||
	    registry_vm_list(d->reg, &vms, &n, &e) < 0)
		return;
	if (glob(pattern, 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			json_t *bye = NULL;
			bool known = false;

			for (size_t k = 0; k < n && !known; k++)
				known = strcmp(vms[k].control_sock, g.gl_pathv[i]) == 0;
			if (!known && vmm_call("shutdown", g.gl_pathv[i],
					       json_pack("{s:s}", "cmd", "shutdown"),
					       STATUS_CALL_MS, &bye, &e) == 0)
				fprintf(
				    stderr,
				    "forkd serve: stopped the unregistered BRANCH child at %s\n",
				    g.gl_pathv[i]);
			json_decref(bye);
		}
	}
	globfree(&g);
	free(vms);
}

/*
 * Kills the forkd-vmm processes started with `--control SOCK`: a VM that
 * cannot be adopted may have a VMM still starting (no socket yet, no pid
 * recorded: the daemon died mid-spawn), which would run on as an orphan.
 */
static void kill_vmms_serving_any(char *const *socks, size_t nr_socks, const struct reg_vm *known,
				  size_t nr_known)
{
	DIR *proc = opendir("/proc");
	struct dirent *e;

	while (proc && (e = readdir(proc))) {
		char path[64], cmd[8192];
		pid_t pid = (pid_t)atoi(e->d_name);
		bool is_vmm = false, has_sock = false;
		const char *sock = NULL;
		ssize_t len;
		int fd;

		if (pid <= 0)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/cmdline", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;
		len = read(fd, cmd, sizeof(cmd) - 1);
		close(fd);
		if (len <= 0)
			continue;
		cmd[len] = '\0';
		/* argv is NUL-separated: argv[0] first, then "--control" and the path. */
		is_vmm = strlen(cmd) >= 9 && strcmp(cmd + strlen(cmd) - 9, "forkd-vmm") == 0;
		for (ssize_t i = 0; is_vmm && !has_sock && i < len;
		     i += (ssize_t)strlen(cmd + i) + 1) {
			if (strcmp(cmd + i, "--control") != 0 || i + 10 >= len)
				continue;
			for (size_t k = 0; k < nr_socks && !has_sock; k++)
				if (strcmp(cmd + i + 10, socks[k]) == 0) {
					has_sock = true;
					sock = socks[k];
				}
		}
		/* BRANCH children carry their source's argv: a VM the registry knows is spared. */
		for (size_t k = 0; has_sock && k < nr_known; k++)
			if (known[k].proc.pid == pid)
				has_sock = false;
		if (has_sock) {
			kill(pid, SIGKILL);
			fprintf(stderr, "forkd serve: killed VMM pid %d of %s, never adopted\n",
				(int)pid, sock);
		}
	}
	if (proc)
		closedir(proc);
}

static void kill_vmms_serving(const char *sock, const struct reg_vm *known, size_t nr_known)
{
	char *socks[1] = {(char *)sock};

	kill_vmms_serving_any(socks, 1, known, nr_known);
}

/*
 * VM directories without a registry row: a daemon killed between starting a spawn's VMMs and
 * recording them (record_started). Their VMMs are stopped (asked on their control socket, then
 * killed if one still starts) and the directories removed: nothing runs that no daemon manages.
 * Lock held.
 */
#define UNRECORDED_SHUTDOWN_MS 200
static void stop_unrecorded_vms(struct daemon *d)
{
	struct reg_vm *vms = NULL;
	struct fk_err e = {0};
	char pattern[PATH_MAX], **socks = NULL;
	glob_t g = {0};
	size_t n = 0, nr_socks = 0;

	if (snprintf(pattern, sizeof(pattern), "%s/vms/vm-*/", d->state_dir) >=
		(int)sizeof(pattern) ||
	    registry_vm_list(d->reg, &vms, &n, &e) < 0)
		return;
	if (glob(pattern, GLOB_ONLYDIR | GLOB_MARK, NULL, &g) == 0 &&
	    (socks = calloc(g.gl_pathc, sizeof(*socks)))) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			char *dir = g.gl_pathv[i], *id;
			size_t len = strlen(dir);
			json_t *bye = NULL;
			bool known = false;

			if (len > 1 && dir[len - 1] == '/')
				dir[--len] = '\0';
			id = strrchr(dir, '/') + 1;
			for (size_t k = 0; k < n && !known; k++)
				known = strcmp(vms[k].id, id) == 0;
			/* empty: an ID reserved and never used (reserve_vm_ids) */
			if (known || rmdir(dir) == 0 ||
			    asprintf(&socks[nr_socks], "%s/control.sock", dir) < 0)
				continue;
			/* bounded: a VMM that does not answer at once is killed below */
			vmm_call("shutdown", socks[nr_socks], json_pack("{s:s}", "cmd", "shutdown"),
				 UNRECORDED_SHUTDOWN_MS, &bye, &e);
			json_decref(bye);
			nr_socks++;
			fprintf(stderr,
				"forkd serve: %s was never recorded (a spawn cut short): its "
				"VMM is stopped and %s removed\n",
				id, dir);
		}
	}
	/* one pass over /proc for all of them: a VMM still starting has no socket yet */
	if (nr_socks)
		kill_vmms_serving_any(socks, nr_socks, vms, n);
	for (size_t i = 0; i < nr_socks; i++) {
		*strrchr(socks[i], '/') = '\0';
		fk_remove_tree(socks[i]);
		free(socks[i]);
	}
	free(socks);
	globfree(&g);
	free(vms);
}

/* Re-adopts the VMMs the registry lists as live; marks the others exited. Lock held. */
/*
 * Zygotes a previous daemon left held (killed between a branch's answer and
 * its release): every zygote of an adopted VM that is not writing a persist
 * (those are followed by settle_writing) is released. Lock held.
 */
static void release_stray_zygotes(struct daemon *d)
{
	struct fk_err ignored = {0};
	struct reg_vm *vms = NULL;
	size_t n = 0;

	if (registry_vm_list(d->reg, &vms, &n, &ignored) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		struct tracked *t = find_tracked(d, vms[i].id);
		json_t *reply = NULL, *z;
		size_t k;

		if (!t || t->pidfd < 0 || t->dead ||
		    vmm_call("zygote list", vms[i].control_sock,
			     json_pack("{s:s,s:s}", "cmd", "zygote", "action", "list"),
			     STATUS_CALL_MS, &reply, &ignored) < 0)
			continue;
		json_array_foreach(json_object_get(reply, "zygotes"), k, z)
		{
			const char *persist = json_string_value(json_object_get(z, "persist"));

			if (persist && strcmp(persist, "writing") == 0)
				continue;
			fprintf(stderr, "forkd serve: %s: releasing zygote %lld left held\n",
				vms[i].id,
				(long long)json_integer_value(json_object_get(z, "zygote")));
			release_zygote(vms[i].control_sock,
				       (int)json_integer_value(json_object_get(z, "zygote")));
		}
		json_decref(reply);
	}
	free(vms);
}

/* An adopted VM's namespace as its VMM reports it, recorded if the registry lacked it. */
static void adopt_net(struct daemon *d, struct reg_vm *vm, json_t *reply)
{
	char netns[REG_NETNS_MAX], addr[REG_ADDR_MAX];
	struct fk_err ignored = {0};

	snprintf(netns, sizeof(netns), "%s", vm->net_netns);
	snprintf(addr, sizeof(addr), "%s", vm->net_host_addr);
	net_from_status(reply, netns, addr);
	if (strcmp(netns, vm->net_netns) == 0 && strcmp(addr, vm->net_host_addr) == 0)
		return;
	snprintf(vm->net_netns, sizeof(vm->net_netns), "%s", netns);
	snprintf(vm->net_host_addr, sizeof(vm->net_host_addr), "%s", addr);
	registry_vm_update(d->reg, vm, &ignored);
}

static int readopt(struct daemon *d, int *adopted, json_t *jobs, struct fk_err *err)
{
	struct reg_snapshot *snaps = NULL;
	struct reg_zygote *zs = NULL;
	struct reg_vm *vms = NULL;
	size_t n = 0, nz = 0, ns = 0;
	bool *gone = NULL;
	int ret;

	ret = registry_vm_list(d->reg, &vms, &n, err);
	if (ret == 0 && !(gone = calloc(n ? n : 1, sizeof(*gone))))
		ret = fk_fail(err, ENOMEM, "re-adopt: out of memory");
	for (size_t i = 0; ret == 0 && i < n; i++) {
		struct tracked *t = track(d, vms[i].id, false);
		struct fk_err e = {0};
		json_t *reply = NULL;
		bool ok = false;

		if (!t) {
			ret = fk_fail(err, ENOMEM, "re-adopt: out of memory");
			break;
		}
		/*
		 * A BRANCH child's meta is its source's, as record_children set it (the registry
		 * lists sources first: created_us order).
		 */
		if (!meta_load(d, t) && vms[i].parent_vm[0]) {
			struct tracked *src = find_tracked(d, vms[i].parent_vm);

			if (src) {
				t->meta = src->meta;
				if (t->meta.uid && !t->meta.home[0])
					snprintf(t->meta.home, sizeof(t->meta.home), "%s", src->id);
			}
		}
		if (!live_state(vms[i].state))
			continue;
		if (vms[i].proc.pid > 0 && registry_proc_still_same(&vms[i].proc, &e) == 1 &&
		    vmm_call("status", vms[i].control_sock, json_pack("{s:s}", "cmd", "status"),
			     STATUS_CALL_MS, &reply, &e) == 0 &&
		    watch(d, t, vms[i].proc.pid, &e) == 0 &&
		    registry_proc_still_same(&vms[i].proc, &e) == 1) {
			const char *state = json_string_value(json_object_get(reply, "state"));
			enum reg_vm_state s =
			    state && strcmp(state, "paused") == 0 ? REG_VM_PAUSED : REG_VM_RUNNING;

			ok = true;
			if (!t->meta.mem_mib)
				t->meta.mem_mib =
				    (int)json_integer_value(json_object_get(reply, "mem_mib"));
			if (!t->meta.cpus)
				t->meta.cpus =
				    (int)json_integer_value(json_object_get(reply, "vcpus"));
			adopt_net(d, &vms[i], reply);
			if (s != vms[i].state)
				registry_vm_set_state(d->reg, vms[i].id, s, REG_NO_EXIT, &e);
			if (adopted)
				(*adopted)++;
		}
		json_decref(reply);
		if (!ok) {
			int status = REG_NO_EXIT, exited_code = 0, fd;
			json_t *bye = NULL;

			unwatch(d, t);
			/*
			 * A VMM that answers on this VM's control socket although it could
			 * not be adopted (the daemon died after starting it and before
			 * recording its pid, mid-spawn): stop it rather than leave an orphan.
			 */
			if (vms[i].control_sock[0] &&
			    vmm_call("shutdown", vms[i].control_sock,
				     json_pack("{s:s}", "cmd", "shutdown"), STATUS_CALL_MS, &bye,
				     &e) == 0)
				fprintf(stderr,
					"forkd serve: %s: stopped its VMM, which ran without a "
					"recorded pid\n",
					vms[i].id);
			json_decref(bye);
			if (vms[i].control_sock[0])
				kill_vmms_serving(vms[i].control_sock, vms, n);
			/* Dead while no daemon watched: if it is our zombie, reap it. */
			if (vms[i].proc.pid > 0 &&
			    registry_proc_still_same(&vms[i].proc, &e) == 1 &&
			    (fd = fk_pidfd_open(vms[i].proc.pid)) >= 0) {
				fk_pidfd_reap(fd, &status, &exited_code);
				close(fd);
			}
			ret = registry_vm_set_state(d->reg, vms[i].id,
						    exited_code && status != 0 ? REG_VM_FAILED
									       : REG_VM_EXITED,
						    status, err);
			gone[i] = true;
		}
	}
	/* namespaces of VMMs that died while no daemon watched */
	if (ret == 0)
		sweep_netns_of(vms, gone, n);
	if (ret == 0)
		ret = registry_zygote_list(d->reg, NULL, &zs, &nz, err);
	for (size_t i = 0; ret == 0 && i < nz; i++) {
		struct fk_err e = {0};
		struct tracked *t;

		if (!zs[i].proc.pid || registry_proc_still_same(&zs[i].proc, &e) != 1)
			continue;
		t = track(d, zs[i].id, true);
		if (t) {
			snprintf(t->vm, sizeof(t->vm), "%s", zs[i].vm);
			watch(d, t, zs[i].proc.pid, &e);
		}
	}
	if (ret == 0)
		ret = registry_snapshot_list(d->reg, false, &snaps, &ns, err);
	for (size_t i = 0; ret == 0 && i < ns; i++)
		if (snaps[i].state == REG_SNAP_WRITING)
			settle_writing(d, &snaps[i], jobs);

	free(gone);
	free(vms);
	free(zs);
	free(snaps);
	return ret;
}

int daemon_open(const struct daemon_config *cfg, struct daemon **out, int *adopted,
		struct fk_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 0};
	json_t *jobs = NULL, *job;
	char path[PATH_MAX];
	struct daemon *d;
	size_t i;
	int ret;

	*out = NULL;
	if (adopted)
		*adopted = 0;
	if (!cfg || !cfg->state_dir || !cfg->state_dir[0])
		return fk_fail(err, EINVAL, "state dir: expected a directory path");
	if (strlen(cfg->state_dir) + LONGEST_SOCK_TAIL >= REG_SOCK_MAX)
		return fk_fail(err, ENAMETOOLONG,
			       "state dir '%s': too long (expected at most %zu characters, so "
			       "that the VMs' sockets below it fit a Unix socket address)",
			       cfg->state_dir, (size_t)REG_SOCK_MAX - 1 - LONGEST_SOCK_TAIL);
	d = calloc(1, sizeof(*d));
	if (!d)
		return fk_fail(err, ENOMEM, "daemon: out of memory");
	d->lockfd = -1;
	d->epfd = -1;
	d->wakefd = -1;
	pthread_mutex_init(&d->lock, NULL);
	pthread_cond_init(&d->cond, NULL);
	for (i = 0; i < NR_READERS; i++)
		pthread_mutex_init(&d->readers[i].lock, NULL);
	d->timing = getenv("FORKD_SERVE_TIMING") && strcmp(getenv("FORKD_SERVE_TIMING"), "1") == 0;
	snprintf(d->state_dir, sizeof(d->state_dir), "%s", cfg->state_dir);
	if (cfg->vmm_path)
		snprintf(d->vmm, sizeof(d->vmm), "%s", cfg->vmm_path);
	else if ((ret = vmm_default_path(d->vmm, sizeof(d->vmm), err)) < 0)
		goto fail;
	if (access(d->vmm, X_OK) < 0) {
		ret =
		    fk_fail_errno(err, errno, "vmm '%s': expected an executable forkd-vmm", d->vmm);
		goto fail;
	}
	d->jail = cfg->jail;
	d->uid_first = cfg->jail_uid_first ? cfg->jail_uid_first : DAEMON_JAIL_UID_FIRST;
	d->uid_count = cfg->jail_uid_count ? cfg->jail_uid_count : DAEMON_JAIL_UID_COUNT;
	if (d->uid_first == 0 || (uint64_t)d->uid_first + d->uid_count > UINT32_MAX) {
		ret = fk_fail(err, EINVAL,
			      "jail uids %u..+%u: expected a range of non-root uids below 2^32",
			      d->uid_first, d->uid_count);
		goto fail;
	}
	if ((ret = make_dir(d->state_dir, err)) < 0 ||
	    (ret = path_fmt(path, sizeof(path), err, "%s/vms", d->state_dir)) < 0 ||
	    (ret = make_dir(path, err)) < 0 ||
	    (ret = path_fmt(path, sizeof(path), err, "%s/snapshots", d->state_dir)) < 0 ||
	    (ret = make_dir(path, err)) < 0 ||
	    (ret = path_fmt(path, sizeof(path), err, "%s/jails", d->state_dir)) < 0 ||
	    (ret = make_dir(path, err)) < 0 ||
	    (ret = path_fmt(path, sizeof(path), err, "%s/daemon.lock", d->state_dir)) < 0)
		goto fail;
	/* Two daemons re-adopting and watching the same VMMs would fight over them. */
	d->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (d->lockfd < 0) {
		ret = fk_fail_errno(err, errno, "%s", path);
		goto fail;
	}
	/*
	 * A daemon killed while it started a VMM leaves that child between its
	 * posix_spawn and its exec for a moment (up to ~0.5 s seen on a loaded
	 * host), holding this descriptor until the exec closes it: wait that out
	 * before calling the state dir taken.
	 */
	for (double until = mono_s() + LOCK_WAIT_MS / 1000.0;;) {
		ret = flock(d->lockfd, LOCK_EX | LOCK_NB);
		if (ret == 0 || errno != EWOULDBLOCK || mono_s() >= until)
			break;
		usleep(20 * 1000);
	}
	if (ret < 0) {
		ret = errno == EWOULDBLOCK
			  ? fk_fail(err, EBUSY,
				    "%s: locked: another forkd serve uses this state dir", path)
			  : fk_fail_errno(err, errno, "%s: flock", path);
		goto fail;
	}
	if ((ret = path_fmt(path, sizeof(path), err, "%s/registry.db", d->state_dir)) < 0)
		goto fail;
	ret = registry_open(path, &d->reg, err);
	if (ret < 0)
		goto fail;
	for (i = 0; i < NR_READERS; i++) {
		struct fk_err reader_err = {0};

		/* Without readers the lists fall back to d->reg under the lock: slower, correct. */
		if (registry_open(path, &d->readers[i].reg, &reader_err) < 0) {
			fprintf(stderr, "forkd serve: registry reader: %s (lists take the lock)\n",
				reader_err.msg);
			break;
		}
	}
	/* BRANCH children whose zygote and source are gone become ours to reap. */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0) {
		ret = fk_fail_errno(err, errno, "prctl(PR_SET_CHILD_SUBREAPER)");
		goto fail;
	}
	d->epfd = epoll_create1(EPOLL_CLOEXEC);
	d->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (d->epfd < 0 || d->wakefd < 0 || epoll_ctl(d->epfd, EPOLL_CTL_ADD, d->wakefd, &ev) < 0) {
		ret = fk_fail_errno(err, errno, "daemon: epoll");
		goto fail;
	}
	jobs = json_array();
	pthread_mutex_lock(&d->lock);
	ret = jobs ? readopt(d, adopted, jobs, err) : fk_fail(err, ENOMEM, "out of memory");
	if (ret == 0)
		stop_unregistered_children(d);
	if (ret == 0)
		stop_unrecorded_vms(d);
	if (ret == 0)
		release_stray_zygotes(d);
	pthread_mutex_unlock(&d->lock);
	if (ret < 0)
		goto fail;
	json_array_foreach(jobs, i, job)
	{
		if (start_persist_thread(d, json_string_value(json_object_get(job, "sock")),
					 (int)json_integer_value(json_object_get(job, "zygote")),
					 json_string_value(json_object_get(job, "tag")),
					 json_string_value(json_object_get(job, "path"))) < 0) {
			pthread_mutex_lock(&d->lock);
			persist_done(d, json_string_value(json_object_get(job, "tag")), false);
			pthread_mutex_unlock(&d->lock);
		}
	}
	json_decref(jobs);
	jobs = NULL;
	ret = -pthread_create(&d->monitor, NULL, monitor_main, d);
	if (ret < 0) {
		fk_fail_errno(err, -ret, "daemon: monitor thread");
		goto fail;
	}
	d->monitor_started = true;
	*out = d;
	return 0;
fail:
	json_decref(jobs);
	daemon_close(d);
	return fk_wrap(err, "daemon %s", cfg->state_dir);
}

void daemon_close(struct daemon *d)
{
	uint64_t one = 1;

	if (!d)
		return;
	pthread_mutex_lock(&d->lock);
	d->stopping = true;
	pthread_mutex_unlock(&d->lock);
	if (d->monitor_started) {
		if (write(d->wakefd, &one, sizeof(one)) < 0) {
		}
		pthread_join(d->monitor, NULL);
	}
	pthread_mutex_lock(&d->lock);
	while (d->nr_persist_threads > 0)
		pthread_cond_wait(&d->cond, &d->lock);
	pthread_mutex_unlock(&d->lock);
	while (d->tracked) {
		struct tracked *t = d->tracked;
		d->tracked = t->next;
		if (t->pidfd >= 0)
			close(t->pidfd);
		free(t);
	}
	while (d->zombies) {
		struct zombie *z = d->zombies;
		d->zombies = z->next;
		close(z->pidfd);
		free(z);
	}
	/* the directories of reserved IDs no VM used: empty */
	for (size_t i = 0; i < d->nr_vm_ids; i++) {
		char dir[PATH_MAX];
		struct fk_err ignored = {0};

		if (vm_dir(d, d->vm_ids[i], NULL, dir, sizeof(dir), &ignored) == 0)
			rmdir(dir);
	}
	free(d->vm_ids);
	while (d->spawn_checks) {
		struct spawn_check *c = d->spawn_checks;
		d->spawn_checks = c->next;
		free(c);
	}
	while (d->snaps) {
		struct snap_meta *m = d->snaps;
		d->snaps = m->next;
		free(m);
	}
	registry_close(d->reg);
	for (size_t i = 0; i < NR_READERS; i++) {
		registry_close(d->readers[i].reg);
		pthread_mutex_destroy(&d->readers[i].lock);
	}
	if (d->epfd >= 0)
		close(d->epfd);
	if (d->wakefd >= 0)
		close(d->wakefd);
	if (d->lockfd >= 0)
		close(d->lockfd);
	pthread_cond_destroy(&d->cond);
	pthread_mutex_destroy(&d->lock);
	free(d);
}
