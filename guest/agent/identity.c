/* SPDX-License-Identifier: MIT */
/*
 * Fork identity: ping, fork_notify and shutdown.
 *
 * Debian's kernel has no VMGENID driver, so the agent reads the 16-byte VM
 * generation ID itself through /dev/mem (forkd-vmm keeps it at
 * LAYOUT_VMGENID_ADDR, reserved memory below 1 MiB that /dev/mem may map).
 * A BRANCH child or a restored VM has a new generation; until the VMM's
 * fork_notify for it has been applied (fresh entropy, clock, hostname,
 * machine-id) the guest still has its parent's identity, so exec waits for
 * it and then refuses.
 */
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/random.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MACHINE_ID_PATH	    "/etc/machine-id"
#define MACHINE_ID_TMP_PATH "/etc/.machine-id.forkd-agent"
#define NOTIFY_POLL_MS	    10

/* Lives in a MAP_SHARED page created before handlers fork, so all of them see one record. */
struct identity_shared {
	pthread_mutex_t lock; /* process-shared, robust: a handler may die holding it */
	uint8_t applied[AGENT_GENID_LEN];
};

struct identity {
	const volatile uint64_t *genid; /* NULL: unknown */
	struct identity_shared *shared;
};

static int map_genid(struct identity *id, const char *dev, uint64_t addr)
{
	long pagesize = sysconf(_SC_PAGESIZE);
	uint64_t base = addr & ~((uint64_t)pagesize - 1);
	int fd = open(dev, O_RDONLY | O_SYNC | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr,
			"forkd-agent: %s: %s; the VM generation is unknown (fork detection off)\n",
			dev, strerror(errno));
		return -errno;
	}
	void *map = mmap(NULL, (size_t)pagesize, PROT_READ, MAP_SHARED, fd, (off_t)base);
	int err = errno;
	close(fd);
	if (map == MAP_FAILED) {
		fprintf(stderr,
			"forkd-agent: mmap %s at 0x%" PRIx64 ": %s; the VM generation is unknown "
			"(fork detection off)\n",
			dev, base, strerror(err));
		return -err;
	}
	id->genid = (const volatile uint64_t *)((uint8_t *)map + (addr - base));
	return 0;
}

int identity_init(struct identity **out, const char *genid_dev, uint64_t genid_addr)
{
	pthread_mutexattr_t attr;
	struct identity *id = calloc(1, sizeof(*id));
	int ret;

	if (!id)
		return -ENOMEM;
	id->shared = mmap(NULL, sizeof(*id->shared), PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (id->shared == MAP_FAILED) {
		ret = -errno;
		free(id);
		return ret;
	}
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	ret = -pthread_mutex_init(&id->shared->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	if (ret < 0) {
		munmap(id->shared, sizeof(*id->shared));
		free(id);
		return ret;
	}
	/* Unreadable: logged once by map_genid, then the VM counts as never forked. */
	if (genid_dev)
		map_genid(id, genid_dev, genid_addr);
	identity_current(id, id->shared->applied);
	*out = id;
	return 0;
}

void identity_current(const struct identity *id, uint8_t out[AGENT_GENID_LEN])
{
	uint64_t words[2] = {0, 0};

	if (id->genid) {
		words[0] = id->genid[0];
		words[1] = id->genid[1];
	}
	memcpy(out, words, AGENT_GENID_LEN);
}

static void lock_shared(struct identity_shared *shared)
{
	if (pthread_mutex_lock(&shared->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&shared->lock);
}

static void applied_generation(struct identity *id, uint8_t out[AGENT_GENID_LEN])
{
	lock_shared(id->shared);
	memcpy(out, id->shared->applied, AGENT_GENID_LEN);
	pthread_mutex_unlock(&id->shared->lock);
}

void identity_set_applied(struct identity *id, const uint8_t generation[AGENT_GENID_LEN])
{
	lock_shared(id->shared);
	memcpy(id->shared->applied, generation, AGENT_GENID_LEN);
	pthread_mutex_unlock(&id->shared->lock);
}

bool identity_fork_pending(struct identity *id)
{
	uint8_t current[AGENT_GENID_LEN], applied[AGENT_GENID_LEN];

	if (!id->genid)
		return false;
	identity_current(id, current);
	applied_generation(id, applied);
	return memcmp(current, applied, AGENT_GENID_LEN) != 0;
}

int identity_wait_notified(struct identity *id, int timeout_ms)
{
	for (int waited = 0; identity_fork_pending(id); waited += NOTIFY_POLL_MS) {
		if (waited >= timeout_ms)
			return -EAGAIN;
		nanosleep(&(struct timespec){.tv_nsec = NOTIFY_POLL_MS * 1000000L}, NULL);
	}
	return 0;
}

static void read_boot_id(char *out, size_t len)
{
	int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, out, len - 1) : -1;

	if (fd >= 0)
		close(fd);
	if (n < 0)
		n = 0;
	out[n] = '\0';
	out[strcspn(out, "\n")] = '\0';
}

int handle_ping(struct conn *c, const struct agent_config *cfg)
{
	uint8_t generation[AGENT_GENID_LEN];
	char generation_hex[2 * AGENT_GENID_LEN + 1], boot_id[64];

	identity_current(cfg->identity, generation);
	agent_hex_encode(generation, sizeof(generation), generation_hex);
	read_boot_id(boot_id, sizeof(boot_id));
	json_t *answer = json_pack("{s:s,s:i,s:i,s:s,s:b,s:s}", "agent", "forkd-agent", "version",
				   FK_AGENT_VERSION, "pid", (int)cfg->agent_pid, "boot_id", boot_id,
				   "fork_pending", identity_fork_pending(cfg->identity),
				   "generation", generation_hex);
	int ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
	json_decref(answer);
	return ret;
}

int handle_shutdown(struct conn *c, const struct agent_config *cfg, bool reboot)
{
	/* forkd-init (guest/init/forkd-init.c) reboots on SIGTERM and powers off on SIGUSR2. */
	int sig = reboot ? SIGTERM : SIGUSR2;
	json_t *answer = json_object();
	int ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;

	json_decref(answer);
	if (cfg->no_identity) {
		fprintf(stderr, "forkd-agent: shutdown: %s requested (--no-identity: ignored)\n",
			reboot ? "reboot" : "poweroff");
		return ret;
	}
	fprintf(stderr, "forkd-agent: shutdown: asking PID 1 to %s\n",
		reboot ? "reboot" : "power off");
	if (kill(1, sig) < 0) {
		fprintf(stderr, "forkd-agent: shutdown: signal %d to PID 1: %s\n", sig,
			strerror(errno));
		return -errno;
	}
	return ret;
}

static int feed_entropy(const uint8_t *bytes, size_t len)
{
	struct {
		struct rand_pool_info info;
		uint8_t buf[AGENT_ENTROPY_MAX];
	} pool;
	int ret = 0;
	int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	pool.info.entropy_count = (int)(len * 8);
	pool.info.buf_size = (int)len;
	memcpy(pool.buf, bytes, len);
	if (ioctl(fd, RNDADDENTROPY, &pool.info) < 0 || ioctl(fd, RNDRESEEDCRNG) < 0)
		ret = -errno;
	close(fd);
	explicit_bzero(&pool, sizeof(pool));
	return ret;
}

/* 1 written, 0 where /etc cannot hold it (read-only or missing), or -errno. */
static int write_machine_id(const char *machine_id)
{
	char line[2 * AGENT_MACHINE_ID_LEN + 2];
	int ret = 0;
	int fd = open(MACHINE_ID_TMP_PATH, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0444);

	if (fd < 0)
		return errno == EROFS || errno == ENOENT ? 0 : -errno;
	snprintf(line, sizeof(line), "%s\n", machine_id);
	size_t len = strlen(line);
	if (write(fd, line, len) != (ssize_t)len || fsync(fd) < 0)
		ret = errno ? -errno : -EIO;
	if (close(fd) < 0 && ret == 0)
		ret = -errno;
	if (ret == 0 && rename(MACHINE_ID_TMP_PATH, MACHINE_ID_PATH) < 0)
		ret = -errno;
	if (ret < 0) {
		unlink(MACHINE_ID_TMP_PATH);
		return ret;
	}
	return 1;
}

int handle_fork_notify(struct conn *c, const struct agent_config *cfg,
		       const struct fork_notify_request *n)
{
	uint8_t current[AGENT_GENID_LEN];
	char current_hex[2 * AGENT_GENID_LEN + 1], notify_hex[2 * AGENT_GENID_LEN + 1];
	bool machine_id_written = false;
	int ret;

	agent_hex_encode(n->generation, sizeof(n->generation), notify_hex);
	identity_current(cfg->identity, current);
	agent_hex_encode(current, sizeof(current), current_hex);
	/* A notification meant for an earlier generation must not clear a newer fork. */
	if (cfg->identity->genid && memcmp(current, n->generation, sizeof(current)) != 0)
		return conn_send_error(
		    c, ESTALE,
		    "fork_notify for generation %s, but this VM is at generation "
		    "%s (a notification for an earlier fork?)",
		    notify_hex, current_hex);

	if (!cfg->no_identity) {
		ret = feed_entropy(n->entropy, n->entropy_len);
		if (ret < 0)
			return conn_send_error(c, -ret, "fork_notify: feed /dev/urandom: %s",
					       strerror(-ret));
		/* The host's time when it sent the request, plus what has passed here since. */
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		int64_t since_ns = (now.tv_sec - c->request_at.tv_sec) * 1000000000LL +
				   (now.tv_nsec - c->request_at.tv_nsec);
		int64_t realtime_ns = n->realtime_ns + (since_ns > 0 ? since_ns : 0);
		struct timespec ts = {.tv_sec = realtime_ns / 1000000000,
				      .tv_nsec = realtime_ns % 1000000000};
		if (clock_settime(CLOCK_REALTIME, &ts) < 0)
			return conn_send_error(c, errno, "fork_notify: set CLOCK_REALTIME: %s",
					       strerror(errno));
		if (sethostname(n->hostname, strlen(n->hostname)) < 0)
			return conn_send_error(c, errno, "fork_notify: sethostname %s: %s",
					       n->hostname, strerror(errno));
		ret = write_machine_id(n->machine_id);
		if (ret < 0)
			return conn_send_error(c, -ret, "fork_notify: write %s: %s",
					       MACHINE_ID_PATH, strerror(-ret));
		machine_id_written = ret == 1;
	}
	identity_set_applied(cfg->identity, n->generation);
	fprintf(stderr, "forkd-agent: fork_notify: generation %s applied%s\n", notify_hex,
		cfg->no_identity ? " (--no-identity: system left alone)" : "");
	json_t *answer = json_pack("{s:b,s:b,s:s}", "applied", true, "machine_id_written",
				   machine_id_written, "generation", notify_hex);
	ret = answer ? conn_send_json(c, FK_FRAME_RESPONSE, answer) : -ENOMEM;
	json_decref(answer);
	return ret;
}
