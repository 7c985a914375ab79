/* SPDX-License-Identifier: MIT */
/*
 * The VMM's device/control thread: an epoll loop over file descriptors
 * (serial input, ioeventfds, timers, later the control socket). Handlers
 * run on the loop thread, one at a time.
 */
#ifndef FORKD_CORE_EVENT_LOOP_H
#define FORKD_CORE_EVENT_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "util/err.h"

#define EVENT_LOOP_MAX_HANDLERS 64 /* at most 256: the slot index is 8 bits of the epoll tag */

typedef void (*event_handler_fn)(void *opaque, uint32_t events);

struct event_handler {
	int fd;
	event_handler_fn fn;
	void *opaque;
	bool in_use;
	bool device; /* in the device set: also served by event_loop_serve_until */
	/*
	 * Bumped each time the slot is taken, and carried in the epoll event:
	 * an event still queued for a removed handler is not delivered to a
	 * new handler that reused the slot within the same batch.
	 */
	uint64_t generation;
};

struct event_loop {
	int epoll_fd;
	/*
	 * Device handlers (guest I/O) are in a second epoll set, itself watched
	 * by epoll_fd, so that a handler that must block (BRANCH waiting for
	 * its zygote) can go on serving the guest's devices without running
	 * control requests re-entrantly.
	 */
	int device_epoll_fd;
	bool stop;
	struct event_handler handlers[EVENT_LOOP_MAX_HANDLERS];
};

int event_loop_init(struct event_loop *loop, struct fk_err *err);
void event_loop_destroy(struct event_loop *loop);
/* events: EPOLLIN etc. */
int event_loop_add(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn,
		   void *opaque, struct fk_err *err);
/* A device handler: safe to run while another handler waits (event_loop_serve_until). */
int event_loop_add_device(struct event_loop *loop, int fd, uint32_t events, event_handler_fn fn,
			  void *opaque, struct fk_err *err);
/*
 * For a handler that must wait: serves device handlers until fd is readable
 * (1), timeout_ms passed (0; -1 waits forever), or an error (-errno).
 */
int event_loop_serve_until(struct event_loop *loop, int fd, int timeout_ms);
/* Changes the events a handler waits for; 0 pauses it. */
int event_loop_modify(struct event_loop *loop, int fd, uint32_t events);
void event_loop_remove(struct event_loop *loop, int fd);
/* Runs until event_loop_stop() is called from a handler. Returns 0 or -errno. */
int event_loop_run(struct event_loop *loop);
void event_loop_stop(struct event_loop *loop);

#endif
