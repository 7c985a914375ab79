/* SPDX-License-Identifier: MIT */
#include "vmm/event_loop.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Slot index in the low 8 bits, the slot's generation above. */
static uint64_t event_tag(const struct event_loop *loop, int slot)
{
	return (loop->handlers[slot].generation << 8) | (uint64_t)slot;
}

int event_loop_init(struct event_loop *loop, struct fk_err *err)
{
	memset(loop, 0, sizeof(*loop));
	loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epoll_fd < 0)
		return fk_fail_errno(err, errno, "epoll_create1");
	return 0;
}

void event_loop_destroy(struct event_loop *loop)
{
	if (loop->epoll_fd >= 0)
		close(loop->epoll_fd);
	loop->epoll_fd = -1;
}

int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn,
		   void *opaque, struct fk_err *err)
{
	struct epoll_event ev = {.events = events};
	int i;

	for (i = 0; i < EVENT_LOOP_MAX_HANDLERS && loop->handlers[i].in_use; i++)
		;
	if (i == EVENT_LOOP_MAX_HANDLERS)
		return fk_fail(err, ENOSPC, "event loop: more than %d handlers",
			       EVENT_LOOP_MAX_HANDLERS);
	loop->handlers[i] = (struct event_handler){.fd = fd,
						   .fn = fn,
						   .opaque = opaque,
						   .in_use = true,
						   .generation = loop->handlers[i].generation + 1};
	ev.data.u64 = event_tag(loop, i);
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		loop->handlers[i].in_use = false;
		return fk_fail_errno(err, errno, "event loop: watch fd %d", fd);
	}
	return 0;
}

static struct event_handler *find_handler(struct event_loop *loop, int fd)
{
	for (int i = 0; i < EVENT_LOOP_MAX_HANDLERS; i++)
		if (loop->handlers[i].in_use && loop->handlers[i].fd == fd)
			return &loop->handlers[i];
	return NULL;
}

int event_loop_modify(struct event_loop *loop, int fd, uint32_t events)
{
	struct event_handler *h = find_handler(loop, fd);
	struct epoll_event ev = {.events = events};

	if (!h)
		return -ENOENT;
	ev.data.u64 = event_tag(loop, (int)(h - loop->handlers));
	return epoll_ctl(loop->epoll_fd, EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void event_loop_remove(struct event_loop *loop, int fd)
{
	struct event_handler *h = find_handler(loop, fd);

	if (!h)
		return;
	epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
	h->in_use = false;
}

int event_loop_run(struct event_loop *loop)
{
	struct epoll_event events[16];

	while (!loop->stop) {
		int n = epoll_wait(loop->epoll_fd, events, 16, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (int i = 0; i < n && !loop->stop; i++) {
			uint64_t tag = events[i].data.u64;
			struct event_handler *h = &loop->handlers[tag & 0xff];
			/* A handler earlier in this batch may have removed (and reused) this slot.
			 */
			if (h->in_use && h->generation == tag >> 8)
				h->fn(h->opaque, events[i].events);
		}
	}
	return 0;
}

void event_loop_stop(struct event_loop *loop)
{
	loop->stop = true;
}
