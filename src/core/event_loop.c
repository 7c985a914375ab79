/* SPDX-License-Identifier: MIT */
#include "core/event_loop.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

/* epoll_fd's tag for the device set: no handler slot has it. */
#define DEVICE_SET_TAG UINT64_MAX

/* Slot index in the low 8 bits, the slot's generation above. */
static uint64_t event_tag(const struct event_loop *loop, int slot)
{
	return (loop->handlers[slot].generation << 8) | (uint64_t)slot;
}

int event_loop_init(struct event_loop *loop, struct fk_err *err)
{
	struct epoll_event ev = {.events = EPOLLIN, .data.u64 = DEVICE_SET_TAG};

	memset(loop, 0, sizeof(*loop));
	loop->device_epoll_fd = -1;
	loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epoll_fd < 0)
		return fk_fail_errno(err, errno, "epoll_create1");
	loop->device_epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->device_epoll_fd < 0 ||
	    epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, loop->device_epoll_fd, &ev) < 0) {
		int ret = fk_fail_errno(err, errno, "epoll: device set");
		event_loop_destroy(loop);
		return ret;
	}
	return 0;
}

void event_loop_destroy(struct event_loop *loop)
{
	if (loop->epoll_fd >= 0)
		close(loop->epoll_fd);
	if (loop->device_epoll_fd >= 0)
		close(loop->device_epoll_fd);
	loop->epoll_fd = loop->device_epoll_fd = -1;
}

static int add_handler(struct event_loop *loop, bool device, int fd, uint32_t events,
		       event_handler_fn fn, void *opaque, struct fk_err *err)
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
						   .device = device,
						   .generation = loop->handlers[i].generation + 1};
	ev.data.u64 = event_tag(loop, i);
	if (epoll_ctl(device ? loop->device_epoll_fd : loop->epoll_fd, EPOLL_CTL_ADD, fd, &ev) <
	    0) {
		loop->handlers[i].in_use = false;
		return fk_fail_errno(err, errno, "event loop: watch fd %d", fd);
	}
	return 0;
}

int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn,
		   void *opaque, struct fk_err *err)
{
	return add_handler(loop, false, fd, events, fn, opaque, err);
}

int event_loop_add_device(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn,
			  void *opaque, struct fk_err *err)
{
	return add_handler(loop, true, fd, events, fn, opaque, err);
}

static int handler_set(const struct event_loop *loop, const struct event_handler *h)
{
	return h->device ? loop->device_epoll_fd : loop->epoll_fd;
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
	return epoll_ctl(handler_set(loop, h), EPOLL_CTL_MOD, fd, &ev) < 0 ? -errno : 0;
}

void event_loop_remove(struct event_loop *loop, int fd)
{
	struct event_handler *h = find_handler(loop, fd);

	if (!h)
		return;
	epoll_ctl(handler_set(loop, h), EPOLL_CTL_DEL, fd, NULL);
	h->in_use = false;
}

static void dispatch(struct event_loop *loop, const struct epoll_event *events, int n);

/* Runs the device handlers that are ready now. */
static void serve_devices(struct event_loop *loop)
{
	struct epoll_event events[16];
	int n = epoll_wait(loop->device_epoll_fd, events, 16, 0);

	if (n > 0)
		dispatch(loop, events, n);
}

static void dispatch(struct event_loop *loop, const struct epoll_event *events, int n)
{
	for (int i = 0; i < n && !loop->stop; i++) {
		uint64_t tag = events[i].data.u64;
		struct event_handler *h = &loop->handlers[tag & 0xff];

		if (tag == DEVICE_SET_TAG) {
			serve_devices(loop);
			continue;
		}
		/* A handler earlier in this batch may have removed (and reused) this slot. */
		if (h->in_use && h->generation == tag >> 8)
			h->fn(h->opaque, events[i].events);
	}
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
		dispatch(loop, events, n);
	}
	return 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int event_loop_serve_until(struct event_loop *loop, int fd, int timeout_ms)
{
	long long deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;

	for (;;) {
		struct pollfd p[2] = {{.fd = fd, .events = POLLIN},
				      {.fd = loop->device_epoll_fd, .events = POLLIN}};
		long long left = deadline < 0 ? -1 : deadline - now_ms();
		int r;

		if (deadline >= 0 && left < 0)
			left = 0;
		r = poll(p, 2, (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (p[0].revents)
			return 1;
		if (r == 0)
			return 0;
		serve_devices(loop);
	}
}

void event_loop_stop(struct event_loop *loop)
{
	loop->stop = true;
}
