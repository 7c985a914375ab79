/* SPDX-License-Identifier: MIT */
#include "uffd/uffd_vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "uffd/uffd_proto.h"

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

/*
 * The syscall first; /dev/userfaultfd where the syscall refuses kernel-mode
 * faults (vm.unprivileged_userfaultfd=0 without CAP_SYS_PTRACE). KVM's own
 * accesses to guest RAM are kernel-mode faults, so UFFD_USER_MODE_ONLY is
 * never an option here.
 */
int uffd_open_fd(struct fk_err *err)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	int dev, e;

	if (fd >= 0)
		return fd;
	e = errno;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		e = errno;
		close(dev);
		if (fd >= 0)
			return fd;
	}
	return fk_fail_errno(err, e,
			     "userfaultfd: neither the syscall nor /dev/userfaultfd gave one "
			     "(forkd doctor shows what this host allows)");
}

static int connect_handler(const char *path, struct fk_err *err)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return fk_fail(err, ENAMETOOLONG, "--uffd-handler %s: path longer than %zu bytes",
			       path, sizeof(sa.sun_path) - 1);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fk_fail_errno(err, errno, "--uffd-handler %s: socket", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int e = errno;
		close(fd);
		return fk_fail_errno(err, e,
				     "--uffd-handler %s: cannot connect (is forkd-uffd "
				     "listening there?)",
				     path);
	}
	return fd;
}

int uffd_vmm_attach(const struct guest_mem *mem, const char *sock_path, struct uffd_watch *w,
		    struct fk_err *err)
{
	struct uffdio_api api = {.api = UFFD_API,
				 .features = UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP};
	struct uffd_region regions[GUEST_MEM_MAX_REGIONS];
	int uffd = -1, conn = -1, ret;

	memset(w, 0, sizeof(*w));
	w->conn = w->uffd = -1;
	if (mem->backend != GUEST_MEM_UFFD)
		return fk_fail(err, EINVAL, "userfaultfd: guest memory is not the uffd backend");
	conn = connect_handler(sock_path, err);
	if (conn < 0)
		return conn;
	uffd = uffd_open_fd(err);
	if (uffd < 0) {
		ret = uffd;
		goto out;
	}
	if (ioctl(uffd, UFFDIO_API, &api) < 0) {
		ret = fk_fail_errno(err, errno,
				    "userfaultfd: UFFDIO_API (EVENT_REMOVE, EVENT_UNMAP)");
		goto out;
	}
	for (int i = 0; i < mem->nr_regions; i++) {
		const struct guest_mem_region *r = &mem->regions[i];
		struct uffdio_register reg = {.range = {.start = (uintptr_t)r->hva, .len = r->size},
					      .mode = UFFDIO_REGISTER_MODE_MISSING};

		if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
			ret = fk_fail_errno(
			    err, errno, "userfaultfd: register region %d (guest 0x%llx, %llu MiB)",
			    i, (unsigned long long)r->gpa, (unsigned long long)(r->size >> 20));
			goto out;
		}
		if (!(reg.ioctls & (1ULL << _UFFDIO_COPY))) {
			ret = fk_fail(err, EOPNOTSUPP,
				      "userfaultfd: region %d does not offer UFFDIO_COPY", i);
			goto out;
		}
		regions[i] = (struct uffd_region){.base_host_virt_addr = (uintptr_t)r->hva,
						  .size = r->size,
						  .offset = (uint64_t)(r->hva - mem->mapping),
						  .page_size = 4096};
	}
	ret = uffd_handshake_send(conn, uffd, regions, mem->nr_regions, err);
	if (ret < 0) {
		fk_wrap(err, "--uffd-handler %s", sock_path);
		goto out;
	}
	w->conn = conn;
	w->uffd = uffd;
	conn = uffd = -1;
out:
	if (uffd >= 0)
		close(uffd);
	if (conn >= 0)
		close(conn);
	return ret;
}

static void *watch_thread(void *arg)
{
	struct uffd_watch *w = arg;
	char buf[64];
	ssize_t n;

	/* Blocking read: the only way out is the connection's end (or junk, refused alike). */
	do
		n = read(w->conn, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	if (atomic_load(&w->stopping))
		return NULL;
	if (w->on_lost)
		w->on_lost(w->opaque);
	/*
	 * The VM is stopping now: waking the waiting faults (they resolve as
	 * zeros once no one holds the userfaultfd) lets its threads finish.
	 */
	close(w->uffd);
	w->uffd = -1;
	return NULL;
}

int uffd_watch_start(struct uffd_watch *w, void (*on_lost)(void *opaque), void *opaque,
		     struct fk_err *err)
{
	int ret;

	w->on_lost = on_lost;
	w->opaque = opaque;
	ret = pthread_create(&w->thread, NULL, watch_thread, w);
	if (ret)
		return fk_fail(err, ret, "uffd handler watch: cannot start its thread: %s",
			       strerror(ret));
	w->started = true;
	return 0;
}

void uffd_watch_stop(struct uffd_watch *w)
{
	if (!w)
		return;
	atomic_store(&w->stopping, true);
	if (w->started) {
		shutdown(w->conn, SHUT_RDWR);
		pthread_join(w->thread, NULL);
		w->started = false;
	}
	if (w->uffd >= 0)
		close(w->uffd);
	if (w->conn >= 0)
		close(w->conn);
	w->uffd = w->conn = -1;
}
