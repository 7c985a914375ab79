/* SPDX-License-Identifier: MIT */
/* VM network namespaces (netns.h): create, destroy, sweep, open a tap inside. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "net/netns.h"
#include "net/slots.h"
#include "util/fdio.h"

#define NETNS_RUN_DIR "/run/netns"
#define RULES_MAX     4096

const char *fk_net_dir(void)
{
	const char *dir = getenv("FORKD_NET_DIR");

	return dir && dir[0] ? dir : FK_NET_DEFAULT_DIR;
}

static struct fk_slots net_slots(void)
{
	return (struct fk_slots){.dir = fk_net_dir(), .nr_slots = FK_SLOTS_MAX};
}

static const char *tun_path(void)
{
	const char *path = getenv("FORKD_NET_TUN");

	return path && path[0] ? path : "/dev/net/tun";
}

int fk_netns_id_valid(const char *id, struct fk_err *err)
{
	size_t len = id ? strlen(id) : 0;

	if (len == 0 || len > FK_NETNS_ID_MAX)
		return fk_fail(err, EINVAL,
			       "network namespace id '%s': expected 1 to %d characters",
			       id ? id : "", FK_NETNS_ID_MAX);
	if (strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789-") != len || id[0] == '-')
		return fk_fail(err, EINVAL,
			       "network namespace id '%s': expected lower-case letters, digits and "
			       "'-', not starting with '-'",
			       id);
	return 0;
}

/*
 * The path of a tool: $env if set (tests point it at a missing file to see
 * the error), else the first of the usual directories that has it.
 */
static int find_tool(const char *tool, const char *env, const char *package, char *path,
		     size_t size, struct fk_err *err)
{
	static const char *const dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
	const char *set = getenv(env);

	if (set && set[0]) {
		if (access(set, X_OK) == 0) {
			snprintf(path, size, "%s", set);
			return 0;
		}
		return fk_fail(err, ENOENT, "%s not found ('%s' from $%s): install %s", tool, set,
			       env, package);
	}
	for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
		snprintf(path, size, "%s/%s", dirs[i], tool);
		if (access(path, X_OK) == 0)
			return 0;
	}
	return fk_fail(err, ENOENT,
		       "%s not found (in /usr/sbin, /sbin, /usr/bin, /bin): install %s "
		       "(scripts/install-deps.sh)",
		       tool, package);
}

static int enter_netns(const char *name)
{
	char path[128];
	int fd, ret;

	snprintf(path, sizeof(path), NETNS_RUN_DIR "/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	ret = setns(fd, CLONE_NEWNET) < 0 ? -errno : 0;
	close(fd);
	return ret;
}

/*
 * Runs argv (argv[0] a full path) inside namespace `netns` (NULL: this
 * one), `input` on its stdin. A failure's message is the command and the
 * first line of what it printed. Between fork and exec the child makes
 * only async-signal-safe calls: the VMM calling this has other threads.
 */
static int run_tool(const char *netns, char *const argv[], const char *input, struct fk_err *err)
{
	int in = -1, out[2] = {-1, -1}, status, ret = 0;
	char said[512] = "", cmd[256] = "";
	size_t said_len = 0, cmd_len = 0;
	pid_t pid;

	for (int i = 0; argv[i] && cmd_len < sizeof(cmd) - 1; i++) {
		const char *word =
		    i == 0 ? (strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0])
			   : argv[i];
		int n = snprintf(cmd + cmd_len, sizeof(cmd) - cmd_len, "%s%s", i ? " " : "", word);

		cmd_len = n < 0 ? cmd_len : cmd_len + (size_t)n;
	}
	/*
	 * stdin is a memfd written in full before the fork, not a pipe: a tool
	 * that exits without reading (or crashes) cannot SIGPIPE the caller,
	 * and nothing blocks on its reading.
	 */
	in = memfd_create("forkd-net-input", MFD_CLOEXEC);
	if (in < 0) {
		ret = fk_fail_errno(err, errno, "%s: memfd_create", cmd);
		goto out;
	}
	if (input && (ret = fk_write_all(in, input, strlen(input))) < 0) {
		ret = fk_fail_errno(err, -ret, "%s: writing its input", cmd);
		goto out;
	}
	if (lseek(in, 0, SEEK_SET) < 0 || pipe2(out, O_CLOEXEC) < 0) {
		ret = fk_fail_errno(err, errno, "%s: pipe", cmd);
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		ret = fk_fail_errno(err, errno, "%s: fork", cmd);
		goto out;
	}
	if (pid == 0) {
		if (netns && enter_netns(netns) < 0)
			_exit(126);
		if (dup2(in, 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0)
			_exit(127);
		execv(argv[0], argv);
		_exit(127);
	}
	close(out[1]);
	out[1] = -1;
	for (;;) {
		char chunk[512];
		ssize_t n = read(out[0], chunk, sizeof(chunk));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (said_len < sizeof(said) - 1) {
			size_t take = (size_t)n < sizeof(said) - 1 - said_len
					  ? (size_t)n
					  : sizeof(said) - 1 - said_len;
			memcpy(said + said_len, chunk, take);
			said_len += take;
		}
	}
	said[said_len] = '\0';
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			ret = fk_fail_errno(err, errno, "%s: waitpid", cmd);
			goto out;
		}
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		goto out;
	/* the first line names the fault; nft adds the rule text after it */
	said[strcspn(said, "\n")] = '\0';
	if (WIFEXITED(status) && WEXITSTATUS(status) == 126)
		ret = fk_fail(err, ENOENT, "%s: cannot enter network namespace %s", cmd, netns);
	else if (WIFEXITED(status))
		ret = fk_fail(err, EIO, "%s: exit status %d: %s", cmd, WEXITSTATUS(status),
			      said[0] ? said : "(no output)");
	else
		ret = fk_fail(err, EIO, "%s: killed by signal %d", cmd, WTERMSIG(status));
out:
	if (in >= 0)
		close(in);
	for (int i = 0; i < 2; i++) {
		if (out[i] >= 0)
			close(out[i]);
	}
	return ret;
}

/* One `ip` command, its words as arguments: ip("netns", "add", name, NULL). */
static int ip(struct fk_err *err, ...)
{
	char path[256], *argv[24];
	va_list ap;
	int argc = 1, ret;

	ret = find_tool("ip", "FORKD_IP", "iproute2", path, sizeof(path), err);
	if (ret < 0)
		return ret;
	argv[0] = path;
	va_start(ap, err);
	while (argc < 23 && (argv[argc] = va_arg(ap, char *)))
		argc++;
	va_end(ap);
	argv[argc] = NULL;
	return run_tool(NULL, argv, NULL, err);
}

/* `ip -batch -` inside namespace netns: one command a line, stopping at the first failure. */
static int ip_batch(const char *netns, const char *commands, struct fk_err *err)
{
	char path[256], *argv[] = {path, "-batch", "-", NULL};
	int ret = find_tool("ip", "FORKD_IP", "iproute2", path, sizeof(path), err);

	return ret < 0 ? ret : run_tool(netns, argv, commands, err);
}

static int nft(const char *netns, const char *rules, struct fk_err *err)
{
	char path[256], *argv[] = {path, "-f", "-", NULL};
	int ret = find_tool("nft", "FORKD_NFT", "nftables", path, sizeof(path), err);

	return ret < 0 ? ret : run_tool(netns, argv, rules, err);
}

/* Writes value to /proc/sys/<key> inside netns (NULL: this namespace), in a forked child. */
static int sysctl_set(const char *netns, const char *key, const char *value, struct fk_err *err)
{
	char path[256];
	int status;
	pid_t pid;

	snprintf(path, sizeof(path), "/proc/sys/%s", key);
	pid = fork();
	if (pid < 0)
		return fk_fail_errno(err, errno, "sysctl %s: fork", key);
	if (pid == 0) {
		int fd, r;

		if (netns && enter_netns(netns) < 0)
			_exit(1);
		fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd < 0)
			_exit(2);
		r = fk_write_all(fd, value, strlen(value));
		_exit(r < 0 ? 3 : 0);
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR)
			return fk_fail_errno(err, errno, "sysctl %s: waitpid", key);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return fk_fail(err, EIO, "sysctl %s=%s in %s: %s", key, value,
			       netns ? netns : "the root namespace",
			       WIFEXITED(status) && WEXITSTATUS(status) == 1   ? "cannot enter it"
			       : WIFEXITED(status) && WEXITSTATUS(status) == 2 ? "cannot open it"
									       : "cannot write it");
	return 0;
}

/* The first word of a small file into buf: 0 or -errno. */
static int fk_read_file_word(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, " \n")] = '\0';
	return 0;
}

/* --- records: DIR/ns-<name> = "pid starttime slot policy" --- */

struct record {
	pid_t pid;
	unsigned long long start;
	int slot;
	enum fk_net_policy policy;
};

static void record_path(const char *name, char *path, size_t size)
{
	snprintf(path, size, "%s/ns-%s", fk_net_dir(), name);
}

/* The start time of pid (clock ticks since boot, /proc/PID/stat field 22), or 0 if gone. */
/*
 * The start time of a live process pid, or 0 if there is none: a zombie (or
 * a dying task) counts as gone, since it will never use its namespace again
 * and kill(pid, 0) would still succeed on it until it is reaped.
 */
static unsigned long long pid_start(pid_t pid)
{
	char path[64], buf[1024], *p, state;
	unsigned long long start = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	p = strrchr(buf, ')');
	/* after "pid (comm)": state is field 3, starttime field 22 */
	if (!p || sscanf(p + 2,
			 "%c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
			 "%*d %*d %llu",
			 &state, &start) != 2)
		return 0;
	return state == 'Z' || state == 'X' ? 0 : start;
}

/* Alive: the same process (pid and start time) still exists and is no zombie. */
static bool record_owner_alive(const struct record *rec)
{
	return rec->pid > 0 && pid_start(rec->pid) == rec->start && kill(rec->pid, 0) == 0;
}

static int record_read(const char *name, struct record *rec)
{
	char path[512], buf[128], word[16];
	ssize_t n;
	int fd, pid;

	record_path(name, path, sizeof(path));
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	if (sscanf(buf, "%d %llu %d %15s", &pid, &rec->start, &rec->slot, word) != 4 ||
	    fk_net_policy_parse(word, &rec->policy, &(struct fk_err){0}) < 0)
		return -EINVAL;
	rec->pid = pid;
	return 0;
}

int fk_netns_owner(const char *name, pid_t *owner)
{
	struct record rec;
	int ret = record_read(name, &rec);

	if (ret == 0)
		*owner = rec.pid;
	return ret;
}

/* Writes the record: O_EXCL when `create` (the name's reservation), else temp + rename. */
static int record_write(const char *name, const struct record *rec, bool create, struct fk_err *err)
{
	char path[512], tmp[520], line[128];
	int fd, ret;

	record_path(name, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	snprintf(line, sizeof(line), "%d %llu %d %s\n", (int)rec->pid, rec->start, rec->slot,
		 fk_net_policy_name(rec->policy));
	fd = open(create ? path : tmp, O_WRONLY | O_CREAT | O_CLOEXEC | (create ? O_EXCL : O_TRUNC),
		  0600);
	if (fd < 0)
		return create && errno == EEXIST ? -EEXIST
						 : fk_fail_errno(err, errno, "net record %s", path);
	ret = fk_write_all(fd, line, strlen(line));
	close(fd);
	if (ret == 0 && !create && rename(tmp, path) < 0)
		ret = -errno;
	if (ret < 0)
		return fk_fail_errno(err, -ret, "net record %s", path);
	return 0;
}

static bool netns_exists(const char *name)
{
	char path[128];

	snprintf(path, sizeof(path), NETNS_RUN_DIR "/%s", name);
	return access(path, F_OK) == 0;
}

static bool root_link_exists(const char *ifname)
{
	return if_nametoindex(ifname) != 0;
}

/* --- uplinks: where nat traffic leaves the machine and its replies come back --- */

#define UPLINKS_MAX 8

/*
 * The uplinks: $FORKD_NET_UPLINK (comma-separated interface names; "none":
 * leave every interface alone), else the interfaces of this namespace's
 * IPv4 default routes. Returns how many.
 */
static int find_uplinks(char names[UPLINKS_MAX][IFNAMSIZ])
{
	const char *set = getenv("FORKD_NET_UPLINK");
	char line[256];
	int n = 0;
	FILE *f;

	if (set && strcmp(set, "none") == 0)
		return 0;
	if (set && set[0]) {
		while (*set && n < UPLINKS_MAX) {
			size_t len = strcspn(set, ",");

			if (len > 0 && len < IFNAMSIZ) {
				memcpy(names[n], set, len);
				names[n++][len] = '\0';
			}
			set += len + (set[len] == ',');
		}
		return n;
	}
	f = fopen("/proc/net/route", "r");
	if (!f)
		return 0;
	while (n < UPLINKS_MAX && fgets(line, sizeof(line), f)) {
		char ifname[IFNAMSIZ + 1];
		unsigned dest, mask;
		bool dup = false;

		if (sscanf(line, "%16s %x %*x %*x %*d %*d %*d %x", ifname, &dest, &mask) != 3 ||
		    dest != 0 || mask != 0 || strlen(ifname) >= IFNAMSIZ)
			continue;
		for (int i = 0; i < n; i++)
			dup |= strcmp(names[i], ifname) == 0;
		if (!dup) {
			memcpy(names[n], ifname, strlen(ifname) + 1); /* < IFNAMSIZ: checked */
			n++;
		}
	}
	fclose(f);
	return n;
}

static void uplink_path(const char *ifname, char *path, size_t size)
{
	snprintf(path, size, "%s/uplink-%s", fk_net_dir(), ifname);
}

/* The uplinks forkd switched forwarding on for (DIR/uplink-<if> holds the value before). */
static int flipped_uplinks(char names[UPLINKS_MAX][IFNAMSIZ])
{
	struct dirent *de;
	DIR *d = opendir(fk_net_dir());
	int n = 0;

	if (!d)
		return 0;
	while (n < UPLINKS_MAX && (de = readdir(d))) {
		if (strncmp(de->d_name, "uplink-", 7) == 0 && strlen(de->d_name + 7) < IFNAMSIZ)
			snprintf(names[n++], IFNAMSIZ, "%s", de->d_name + 7);
	}
	closedir(d);
	return n;
}

/* The guard table for the flipped uplinks, or none when no uplink is flipped. */
static int uplink_guard(struct fk_err *err)
{
	char names[UPLINKS_MAX][IFNAMSIZ], rules[RULES_MAX];
	const char *list[UPLINKS_MAX];
	int n = flipped_uplinks(names), ret;

	if (n == 0) {
		ret = nft(NULL,
			  "add table ip " FK_NFT_UPLINK_TABLE "\n"
			  "delete table ip " FK_NFT_UPLINK_TABLE "\n",
			  err);
		return ret < 0 ? fk_wrap(err, "removing the uplink guard") : 0;
	}
	for (int i = 0; i < n; i++)
		list[i] = names[i];
	ret = fk_nft_uplink_rules(list, n, rules, sizeof(rules), err);
	if (ret == 0)
		ret = nft(NULL, rules, err);
	return ret < 0 ? fk_wrap(err, "the uplink guard") : 0;
}

/*
 * nat: replies to masqueraded traffic arrive on the uplink and are routed
 * on to our veth, which the kernel does only if the uplink forwards. Where
 * it does not, switch it on for that interface alone, note the old value,
 * and guard it (nft.h: FK_NFT_UPLINK_TABLE) so nothing else is forwarded.
 */
static int uplinks_acquire(struct fk_err *err)
{
	struct fk_slots slots = net_slots();
	char names[UPLINKS_MAX][IFNAMSIZ], key[192], path[600], value[16];
	int n = find_uplinks(names), lock, ret = 0;
	bool flipped = false;

	if (n == 0)
		return 0;
	lock = fk_slots_lock(&slots, err);
	if (lock < 0)
		return lock;
	for (int i = 0; i < n && ret == 0; i++) {
		snprintf(key, sizeof(key), "/proc/sys/net/ipv4/conf/%s/forwarding", names[i]);
		ret = fk_read_file_word(key, value, sizeof(value));
		if (ret < 0) {
			ret = fk_fail_errno(err, -ret, "uplink %s: %s", names[i], key);
			break;
		}
		if (strcmp(value, "0") != 0)
			continue; /* forwarding already, by the machine's choice or ours */
		uplink_path(names[i], path, sizeof(path));
		int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd >= 0) {
			ret = fk_write_all(fd, "0\n", 2);
			close(fd);
		}
		if (ret == 0)
			ret = sysctl_set(NULL, key + strlen("/proc/sys/"), "1", err);
		flipped = true;
	}
	if (ret == 0 && flipped)
		ret = uplink_guard(err);
	close(lock);
	return ret;
}

static bool any_nat_record(void)
{
	struct dirent *de;
	DIR *d = opendir(fk_net_dir());
	bool found = false;

	if (!d)
		return false;
	while (!found && (de = readdir(d))) {
		struct record rec;

		if (strncmp(de->d_name, "ns-", 3) == 0 && !strchr(de->d_name + 3, '.') &&
		    record_read(de->d_name + 3, &rec) == 0 && rec.policy == FK_NET_NAT)
			found = true;
	}
	closedir(d);
	return found;
}

/* When no nat namespace is left: every flipped uplink gets its old value back, the guard goes. */
static int uplinks_release(struct fk_err *err)
{
	struct fk_slots slots = net_slots();
	char names[UPLINKS_MAX][IFNAMSIZ], key[192], path[600], value[16];
	int n, lock, ret = 0;

	lock = fk_slots_lock(&slots, err);
	if (lock < 0)
		return lock;
	n = flipped_uplinks(names);
	if (n == 0 || any_nat_record())
		goto out;
	for (int i = 0; i < n; i++) {
		uplink_path(names[i], path, sizeof(path));
		if (fk_read_file_word(path, value, sizeof(value)) < 0)
			snprintf(value, sizeof(value), "0");
		snprintf(key, sizeof(key), "net/ipv4/conf/%s/forwarding", names[i]);
		/* an uplink that went away meanwhile has nothing to restore */
		if (if_nametoindex(names[i]) != 0) {
			int r = sysctl_set(NULL, key, value, err);

			if (r < 0) {
				ret = r;
				continue;
			}
		}
		unlink(path);
	}
	if (ret == 0)
		ret = uplink_guard(err);
out:
	close(lock);
	return ret;
}

/* --- create / destroy --- */

static int setup_links(struct fk_netns *ns, struct fk_err *err)
{
	char host_cidr[24], ns_cidr[24], gw_cidr[24], key[96], rules[RULES_MAX], batch[512];
	struct fk_nft_ns spec = {
	    .policy = ns->policy,
	    .ns_if = FK_NET_NS_VETH,
	    .tap_if = FK_NET_TAP,
	    .ns_addr = ns->ns_addr,
	    .host_addr = ns->host_addr,
	    .guest_addr = FK_NET_GUEST_ADDR,
	    .gateway_addr = FK_NET_GATEWAY_ADDR,
	};
	char *name = ns->name, *host_if = ns->host_if;
	int ret;

	snprintf(host_cidr, sizeof(host_cidr), "%s/30", ns->host_addr);
	snprintf(ns_cidr, sizeof(ns_cidr), "%s/30", ns->ns_addr);
	snprintf(gw_cidr, sizeof(gw_cidr), "%s/30", FK_NET_GATEWAY_ADDR);
	if ((ret = ip(err, "link", "add", host_if, "type", "veth", "peer", "name", FK_NET_NS_VETH,
		      "netns", name, NULL)) < 0 ||
	    (ret = ip(err, "addr", "add", host_cidr, "dev", host_if, NULL)) < 0)
		return ret;
	/* the namespace's side in one `ip -batch` run inside it: one process instead of eight */
	snprintf(batch, sizeof(batch),
		 "addr add %s dev " FK_NET_NS_VETH "\n"
		 "link set " FK_NET_NS_VETH " up\n"
		 "route add default via %s\n"
		 "tuntap add dev " FK_NET_TAP " mode tap vnet_hdr\n"
		 "link set " FK_NET_TAP " address " FK_NET_GATEWAY_MAC "\n"
		 "addr add %s dev " FK_NET_TAP "\n"
		 "link set " FK_NET_TAP " up\n",
		 ns_cidr, ns->host_addr, gw_cidr);
	ret = ip_batch(name, batch, err);
	if (ret < 0)
		return fk_wrap(err, "in %s", name);
	/* the namespace's own forwarding switch: a fresh namespace's, nobody else's */
	ret = sysctl_set(name, "net/ipv4/ip_forward", "1", err);
	if (ret < 0)
		return ret;
	ret = fk_nft_ns_rules(&spec, rules, sizeof(rules), err);
	if (ret == 0)
		ret = nft(name, rules, err);
	if (ret < 0)
		return fk_wrap(err, "nftables in %s", name);
	/*
	 * The root end forwards only for nat, set on this interface alone: the
	 * machine's net.ipv4.ip_forward is never touched.
	 */
	snprintf(key, sizeof(key), "net/ipv4/conf/%s/forwarding", host_if);
	ret = sysctl_set(NULL, key, ns->policy == FK_NET_NAT ? "1" : "0", err);
	if (ret == 0 && ns->policy == FK_NET_NAT) {
		ret = uplinks_acquire(err);
		if (ret < 0)
			return fk_wrap(err, "nat");
		ret = fk_nft_root_rules((unsigned)ns->slot, host_if, ns->ns_addr, rules,
					sizeof(rules), err);
		if (ret == 0)
			ret = nft(NULL, rules, err);
		if (ret < 0)
			return fk_wrap(err, "nftables in the root namespace");
	}
	if (ret == 0)
		ret = ip(err, "link", "set", host_if, "up", NULL);
	return ret;
}

static int create_once(const char *id, enum fk_net_policy policy, pid_t owner, struct fk_netns *ns,
		       struct fk_err *err)
{
	struct fk_slots slots = net_slots();
	struct record rec = {.pid = owner, .slot = -1, .policy = policy};
	char path[256];
	unsigned slot;
	int ret;

	memset(ns, 0, sizeof(*ns));
	snprintf(ns->name, sizeof(ns->name), FK_NETNS_PREFIX "%s", id);
	ns->policy = policy;
	ns->slot = -1;
	ns->owner = owner;
	rec.start = pid_start(owner);
	if (rec.start == 0)
		return fk_fail(err, ESRCH, "network namespace %s: owner pid %d not running",
			       ns->name, (int)owner);
	ret = fk_slots_prepare(&slots, err);
	if (ret < 0)
		return ret;
	ret = record_write(ns->name, &rec, true, err);
	if (ret == -EEXIST)
		return -EEXIST; /* the caller looks at the holder */
	if (ret < 0)
		return ret;
	if (netns_exists(ns->name)) {
		record_path(ns->name, path, sizeof(path));
		unlink(path);
		return fk_fail(err, EEXIST,
			       "network namespace name collision: " NETNS_RUN_DIR
			       "/%s exists and forkd has no record of it (%s)",
			       ns->name, fk_net_dir());
	}
	ret = ip(err, "netns", "add", ns->name, NULL);
	if (ret == 0)
		ret = ip(err, "-n", ns->name, "link", "set", "lo", "up", NULL);
	if (ret < 0 || policy == FK_NET_NONE)
		goto out;
	ret = fk_slot_alloc(&slots, ns->name, &slot, err);
	if (ret < 0)
		goto out;
	ns->slot = (int)slot;
	rec.slot = (int)slot;
	ret = record_write(ns->name, &rec, false, err);
	if (ret < 0)
		goto out;
	snprintf(ns->host_if, sizeof(ns->host_if), "fkv%u", slot);
	fk_ipv4_str(fk_slot_host_addr(slot), ns->host_addr);
	fk_ipv4_str(fk_slot_ns_addr(slot), ns->ns_addr);
	if (root_link_exists(ns->host_if)) {
		ret = fk_fail(err, EEXIST,
			      "interface %s of slot %u already exists in the root namespace",
			      ns->host_if, slot);
		goto out;
	}
	ret = setup_links(ns, err);
out:
	if (ret < 0) {
		struct fk_err ignored;

		fk_wrap(err, "network namespace %s (policy %s)", ns->name,
			fk_net_policy_name(policy));
		fk_netns_destroy(ns->name, &ignored);
	}
	return ret;
}

int fk_netns_create(const char *id, enum fk_net_policy policy, pid_t owner, struct fk_netns *ns,
		    struct fk_err *err)
{
	char name[sizeof(ns->name)], tool[256];
	struct record rec;
	struct stat st;
	int ret;

	fk_err_clear(err);
	ret = fk_netns_id_valid(id, err);
	if (ret < 0)
		return ret;
	if (policy != FK_NET_NONE && policy != FK_NET_HOST && policy != FK_NET_NAT)
		return fk_fail(err, EINVAL, "network policy %d: expected none, host or nat",
			       policy);
	if (policy != FK_NET_NONE) {
		if (stat(tun_path(), &st) < 0 || !S_ISCHR(st.st_mode))
			return fk_fail(err, ENODEV,
				       "tun device %s missing: load the tun module (modprobe tun) "
				       "or create the node (mknod %s c 10 200)",
				       tun_path(), tun_path());
		ret = find_tool("nft", "FORKD_NFT", "nftables", tool, sizeof(tool), err);
		if (ret < 0)
			return ret;
	}
	ret = find_tool("ip", "FORKD_IP", "iproute2", tool, sizeof(tool), err);
	if (ret < 0)
		return ret;
	if (owner == 0)
		owner = getpid();
	snprintf(name, sizeof(name), FK_NETNS_PREFIX "%s", id);
	ret = create_once(id, policy, owner, ns, err);
	if (ret != -EEXIST || err->code)
		return ret;
	/* a record holds the name: a live VM's, or left by one that died */
	if (record_read(name, &rec) == 0 && record_owner_alive(&rec))
		return fk_fail(err, EEXIST,
			       "network namespace name collision: %s is in use by pid %d", name,
			       (int)rec.pid);
	ret = fk_netns_destroy(name, err);
	if (ret < 0)
		return fk_wrap(err, "network namespace %s: removing the stale one", name);
	ret = create_once(id, policy, owner, ns, err);
	if (ret == -EEXIST && !err->code)
		return fk_fail(err, EEXIST, "network namespace name collision: %s was taken again",
			       name);
	return ret;
}

int fk_netns_destroy(const char *name, struct fk_err *err)
{
	struct fk_slots slots = net_slots();
	struct record rec = {.slot = -1};
	char path[512], host_if[16], table[32], rules[64];
	int ret = 0, r;

	fk_err_clear(err);
	r = record_read(name, &rec);
	if (r == -ENOENT)
		return 0; /* not ours (or already gone): a namespace without a record is left alone
			   */
	if (r < 0)
		rec.slot = -1; /* unreadable: remove what its name alone finds */
	if (rec.slot >= 0) {
		snprintf(host_if, sizeof(host_if), "fkv%d", rec.slot);
		fk_nft_root_table((unsigned)rec.slot, table, sizeof(table));
		snprintf(rules, sizeof(rules), "delete table ip %s\n", table);
		if (rec.policy == FK_NET_NAT && nft(NULL, rules, err) < 0) {
			/* an error is one only if the table is still there */
			snprintf(rules, sizeof(rules), "list table ip %s\n", table);
			if (nft(NULL, rules, &(struct fk_err){0}) == 0)
				ret = -err->code;
			else
				fk_err_clear(err);
		}
		/* another sweeper may remove it first: an error only if it is still there */
		if (root_link_exists(host_if) && (r = ip(err, "link", "del", host_if, NULL)) < 0 &&
		    root_link_exists(host_if))
			ret = r;
	}
	if (netns_exists(name) && (r = ip(err, "netns", "del", name, NULL)) < 0 &&
	    netns_exists(name))
		ret = r;
	if (ret < 0)
		return fk_wrap(err, "destroy network namespace %s", name);
	fk_err_clear(err);
	if (rec.slot >= 0) {
		r = fk_slot_free(&slots, (unsigned)rec.slot, name, err);
		if (r < 0 && r != -ENOENT && r != -EPERM)
			return fk_wrap(err, "destroy network namespace %s", name);
		fk_err_clear(err);
	}
	record_path(name, path, sizeof(path));
	if (unlink(path) < 0 && errno != ENOENT)
		return fk_fail_errno(err, errno, "destroy network namespace %s: unlink %s", name,
				     path);
	if (rec.policy == FK_NET_NAT && uplinks_release(err) < 0)
		return fk_wrap(err, "destroy network namespace %s", name);
	return 0;
}

static bool slot_holder_recorded(const char *name, void *ctx)
{
	char path[512];

	(void)ctx;
	record_path(name, path, sizeof(path));
	return access(path, F_OK) == 0;
}

int fk_netns_sweep(struct fk_err *err)
{
	struct fk_slots slots = net_slots();
	const char *dir = fk_net_dir();
	int destroyed = 0, ret = 0;
	struct dirent *de;
	DIR *d;

	d = opendir(dir);
	if (!d)
		return errno == ENOENT ? 0
				       : fk_fail_errno(err, errno, "net sweep: opendir %s", dir);
	while ((de = readdir(d))) {
		const char *name = de->d_name + 3;
		struct record rec;

		if (strncmp(de->d_name, "ns-", 3) != 0 || strchr(name, '.') ||
		    strncmp(name, FK_NETNS_PREFIX, strlen(FK_NETNS_PREFIX)) != 0)
			continue;
		if (record_read(name, &rec) == 0 && record_owner_alive(&rec))
			continue;
		ret = fk_netns_destroy(name, err);
		if (ret < 0)
			break;
		destroyed++;
	}
	closedir(d);
	if (ret < 0)
		return ret;
	ret = fk_slot_sweep(&slots, slot_holder_recorded, NULL, err);
	return ret < 0 ? ret : destroyed;
}

/* --- the tap, opened from inside the namespace --- */

struct tap_open {
	const char *netns, *ifname;
	int flags;
	int fd;	  /* result: fd or -errno */
	int step; /* 0 enter, 1 open, 2 TUNSETIFF: which one failed */
};

static void *tap_open_thread(void *arg)
{
	struct tap_open *t = arg;
	struct ifreq ifr = {0};
	int fd;

	t->step = 0;
	t->fd = enter_netns(t->netns);
	if (t->fd < 0)
		return NULL;
	t->step = 1;
	fd = open(tun_path(), O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		t->fd = -errno;
		return NULL;
	}
	t->step = 2;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", t->ifname);
	ifr.ifr_flags = (short)(IFF_TAP | IFF_NO_PI | t->flags);
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		t->fd = -errno;
		close(fd);
		return NULL;
	}
	t->fd = fd;
	return NULL;
}

int fk_netns_open_tap(const char *name, const char *ifname, int extra_flags, struct fk_err *err)
{
	static const char *const steps[] = {"enter the namespace", "open the tun device",
					    "TUNSETIFF"};
	struct tap_open t = {.netns = name, .ifname = ifname, .flags = extra_flags, .fd = -EIO};
	pthread_t thread;
	int ret;

	if (strlen(ifname) >= IFNAMSIZ)
		return fk_fail(err, EINVAL, "tap '%s': expected a name below %d characters", ifname,
			       IFNAMSIZ);
	/* a thread of its own: setns() changes only the calling thread, which then exits */
	ret = pthread_create(&thread, NULL, tap_open_thread, &t);
	if (ret != 0)
		return fk_fail_errno(err, ret, "tap %s in %s: pthread_create", ifname, name);
	pthread_join(thread, NULL);
	if (t.fd < 0)
		return fk_fail_errno(err, -t.fd, "tap %s in %s: %s (%s)", ifname, name,
				     steps[t.step], tun_path());
	return t.fd;
}
