/* SPDX-License-Identifier: MIT */
#include "devices/tap.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#define TUN_PATH  "/dev/net/tun"
#define NETNS_DIR "/run/netns"

/* Opens the tap in the calling thread's network namespace. */
static int open_here(const char *name, const char *where, struct fk_err *err)
{
	struct ifreq ifr = {0};
	int hdr = TAP_VNET_HDR_SIZE, fd, ret;

	fd = open(TUN_PATH, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENODEV || errno == ENXIO)
			return fk_fail_errno(err, errno,
					     "tap %s%s: no usable %s (is the tun module loaded?)",
					     name, where, TUN_PATH);
		return fk_fail_errno(err, errno, "tap %s%s: cannot open %s", name, where, TUN_PATH);
	}
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
	if (ioctl(fd, TUNSETIFF, &ifr) < 0) {
		if (errno == EBUSY)
			ret = fk_fail_errno(err, errno,
					    "tap %s%s: busy (another process has it open)", name,
					    where);
		else if (errno == EINVAL)
			ret = fk_fail_errno(err, errno,
					    "tap %s%s: exists but is not a single-queue tap, or "
					    "the name is taken by another kind of interface",
					    name, where);
		else if (errno == EPERM)
			ret = fk_fail_errno(err, errno,
					    "tap %s%s: not permitted (needs CAP_NET_ADMIN or the "
					    "tap's owner)",
					    name, where);
		else
			ret = fk_fail_errno(err, errno, "tap %s%s: TUNSETIFF", name, where);
		goto fail;
	}
	if (ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0) {
		ret = fk_fail_errno(err, errno, "tap %s%s: TUNSETVNETHDRSZ %d", name, where, hdr);
		goto fail;
	}
	if (ioctl(fd, TUNSETOFFLOAD, 0UL) < 0) {
		ret = fk_fail_errno(err, errno, "tap %s%s: TUNSETOFFLOAD", name, where);
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return ret;
}

struct netns_open {
	int ns_fd;
	const char *name;
	const char *where;
	struct fk_err *err;
	int ret;
};

/*
 * setns() changes only this thread's namespace, and the thread ends right
 * after: the VMM's other threads (and this one's creator) never leave
 * their own. The tap stays in the namespace it was created in.
 */
static void *open_in_netns(void *arg)
{
	struct netns_open *o = arg;

	if (setns(o->ns_fd, CLONE_NEWNET) < 0) {
		o->ret = fk_fail_errno(o->err, errno, "tap %s%s: cannot enter the namespace",
				       o->name, o->where);
		return NULL;
	}
	o->ret = open_here(o->name, o->where, o->err);
	return NULL;
}

int tap_open(const char *name, const char *netns, struct fk_err *err)
{
	char path[sizeof(NETNS_DIR) + 256], where[300];
	struct netns_open o = {.name = name, .where = where, .err = err};
	pthread_t thread;
	int ret;

	if (!name || !*name || strlen(name) >= IFNAMSIZ)
		return fk_fail(err, EINVAL, "tap '%s': expected an interface name of 1 to %d bytes",
			       name ? name : "", IFNAMSIZ - 1);
	if (!netns || !*netns)
		return open_here(name, "", err);
	if (strchr(netns, '/') || netns[0] == '.' || strlen(netns) > 200)
		return fk_fail(err, EINVAL, "tap %s: netns '%s' is not a name in %s", name, netns,
			       NETNS_DIR);
	snprintf(where, sizeof(where), " in netns %s", netns);
	snprintf(path, sizeof(path), "%s/%s", NETNS_DIR, netns);
	o.ns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (o.ns_fd < 0) {
		if (errno == ENOENT)
			return fk_fail(err, ENOENT, "tap %s: unknown netns %s (no %s)", name, netns,
				       path);
		return fk_fail_errno(err, errno, "tap %s: netns %s: cannot open %s", name, netns,
				     path);
	}
	ret = pthread_create(&thread, NULL, open_in_netns, &o);
	if (ret) {
		close(o.ns_fd);
		return fk_fail_errno(err, ret, "tap %s%s: thread", name, where);
	}
	pthread_join(thread, NULL);
	close(o.ns_fd);
	return o.ret;
}

int tap_set_offload(int fd, unsigned flags, struct fk_err *err)
{
	if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)flags) < 0)
		return fk_fail_errno(err, errno, "TUNSETOFFLOAD 0x%x", flags);
	return 0;
}
