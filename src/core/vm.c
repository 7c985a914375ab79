/* SPDX-License-Identifier: MIT */
/* Assembles a VM from its configuration, runs it, and tears it down. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "boot/boot.h"
#include "devices/tap.h"
#include "core/layout.h"
#include "core/vm.h"
#include "jail/seccomp.h"
#include "state/vm_snapshot.h"
#include "state/vm_state.h"
#include "state/diff_track.h"
#include "state/live_async.h"
#include "uffd/uffd_vmm.h"
#include "uffd/uffd_live.h"

#define SERIAL_FLUSH_INTERVAL_NS (20 * 1000 * 1000)

/* Serial input that the guest's FIFO could not take yet. */
struct serial_input {
	int fd;
	bool is_stream; /* watched by epoll (pipe, tty, socket) vs read once (regular file) */
	int wake_fd;	/* the UART signals here when its FIFO has room again */
	size_t pending_off, pending_len;
	uint8_t pending[65536];
};

/*
 * The only file-scope state: the serial input of the one VM this process
 * runs. It lives here rather than in struct vm only because of its size.
 */
static struct serial_input serial_input = {.fd = -1, .wake_fd = -1};

void vm_request_exit(struct vm *vm, int status, const char *fmt, ...)
{
	uint64_t one = 1;
	va_list ap;

	pthread_mutex_lock(&vm->exit_lock);
	if (!atomic_load(&vm->stopping)) {
		va_start(ap, fmt);
		vsnprintf(vm->exit_reason, sizeof(vm->exit_reason), fmt, ap);
		va_end(ap);
		atomic_store(&vm->exit_status, status);
		atomic_store(&vm->stopping, true);
		if (write(vm->exit_eventfd, &one, sizeof(one)) < 0) {
		}
		/* A pause in progress must not wait for vCPUs that are leaving. */
		pthread_mutex_lock(&vm->pause_lock);
		pthread_cond_broadcast(&vm->pause_changed);
		pthread_mutex_unlock(&vm->pause_lock);
	}
	pthread_mutex_unlock(&vm->exit_lock);
}

uint64_t monotonic_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

void vcpu_park_if_requested(struct vcpu *vcpu)
{
	struct vm *vm = vcpu->vm;

	pthread_mutex_lock(&vm->pause_lock);
	if (vm->pause_requested && !atomic_load(&vm->stopping)) {
		vm->nr_parked++;
		pthread_cond_broadcast(&vm->pause_changed);
		while (vm->pause_requested && !atomic_load(&vm->stopping))
			pthread_cond_wait(&vm->pause_changed, &vm->pause_lock);
		vm->nr_parked--;
		pthread_cond_broadcast(&vm->pause_changed);
	}
	pthread_mutex_unlock(&vm->pause_lock);
}

bool vm_is_paused(struct vm *vm)
{
	bool paused;

	pthread_mutex_lock(&vm->pause_lock);
	paused = vm->pause_requested && vm->nr_parked == vm->nr_vcpus;
	pthread_mutex_unlock(&vm->pause_lock);
	return paused;
}

int vm_pause(struct vm *vm, struct fk_err *err)
{
	uint64_t start = monotonic_us();

	pthread_mutex_lock(&vm->pause_lock);
	if (vm->pause_requested) {
		pthread_mutex_unlock(&vm->pause_lock);
		return fk_fail(err, EALREADY, "the VM is already paused");
	}
	vm->pause_requested = true;
	pthread_mutex_unlock(&vm->pause_lock);

	for (int i = 0; i < vm->nr_vcpus; i++)
		vcpu_kick(&vm->vcpus[i]);

	pthread_mutex_lock(&vm->pause_lock);
	while (vm->nr_parked < vm->nr_vcpus && !atomic_load(&vm->stopping))
		pthread_cond_wait(&vm->pause_changed, &vm->pause_lock);
	vm->last_pause_us = monotonic_us() - start;
	pthread_mutex_unlock(&vm->pause_lock);
	if (atomic_load(&vm->stopping))
		return fk_fail(err, ESHUTDOWN, "the VM is shutting down");
	return 0;
}

int vm_resume(struct vm *vm, struct fk_err *err)
{
	pthread_mutex_lock(&vm->pause_lock);
	if (!vm->pause_requested) {
		pthread_mutex_unlock(&vm->pause_lock);
		return fk_fail(err, EALREADY, "the VM is not paused");
	}
	vm->pause_requested = false;
	pthread_cond_broadcast(&vm->pause_changed);
	pthread_mutex_unlock(&vm->pause_lock);
	return 0;
}

static void on_pm_event(void *opaque, enum acpi_pm_event ev)
{
	struct vm *vm = opaque;

	if (ev == ACPI_PM_POWEROFF)
		vm_request_exit(vm, VMM_EXIT_POWEROFF, "guest powered off");
	else
		vm_request_exit(vm, VMM_EXIT_RESET, "guest requested a reset");
}

static void on_exit_event(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;

	(void)events;
	event_loop_stop(&vm->loop);
}

static void on_signal(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;
	struct signalfd_siginfo si;

	(void)events;
	if (read(vm->signal_fd, &si, sizeof(si)) != sizeof(si))
		return;
	vm_request_exit(vm, 128 + (int)si.ssi_signo, "stopped by signal %u", si.ssi_signo);
}

static void on_flush_timer(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;
	uint64_t ticks;

	(void)events;
	if (read(vm->flush_timer_fd, &ticks, sizeof(ticks)) < 0) {
	}
	serial_flush(&vm->serial);
	/* Reap zygotes and re-parented branch children (we are their subreaper). */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/* Hands pending input to the UART; pauses the input fd while the FIFO is full. */
static void serial_input_push(struct vm *vm)
{
	struct serial_input *in = &serial_input;
	size_t n;

	n = serial_receive(&vm->serial, in->pending + in->pending_off, in->pending_len);
	in->pending_off += n;
	in->pending_len -= n;
	if (in->is_stream && in->fd >= 0)
		event_loop_modify(&vm->loop, in->fd, in->pending_len ? 0 : EPOLLIN);
}

static void on_serial_input(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;
	struct serial_input *in = &serial_input;
	ssize_t n;

	(void)events;
	n = read(in->fd, in->pending, sizeof(in->pending));
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (n <= 0) {
		/* End of input: the guest simply receives nothing more. */
		event_loop_remove(&vm->loop, in->fd);
		in->fd = -1;
		return;
	}
	in->pending_off = 0;
	in->pending_len = (size_t)n;
	serial_input_push(vm);
}

static void on_serial_space(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;
	uint64_t v;

	(void)events;
	if (read(serial_input.wake_fd, &v, sizeof(v)) < 0) {
	}
	if (serial_input.pending_len)
		serial_input_push(vm);
}

/* Called on a vCPU thread when the UART's FIFO drained: wake the loop thread. */
static void serial_rx_space(void *opaque)
{
	uint64_t one = 1;

	(void)opaque;
	if (write(serial_input.wake_fd, &one, sizeof(one)) < 0) {
	}
}

static int open_serial_output(const char *spec, int *fd, struct fk_err *err)
{
	if (strcmp(spec, "stdout") == 0) {
		*fd = STDOUT_FILENO;
		return 0;
	}
	if (strcmp(spec, "none") == 0) {
		*fd = -1;
		return 0;
	}
	*fd = open(spec, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (*fd < 0)
		return fk_fail_errno(err, errno, "--serial %s: cannot open for writing", spec);
	return 0;
}

static int setup_serial_input(struct vm *vm, struct fk_err *err)
{
	struct serial_input *in = &serial_input;
	const char *spec = vm->cfg->serial_in;
	struct stat st;
	int ret;

	/* A BRANCH child inherits its source's copy: start from nothing. */
	in->fd = in->wake_fd = -1;
	in->is_stream = false;
	in->pending_off = in->pending_len = 0;
	if (strcmp(spec, "none") == 0)
		return 0;
	if (strcmp(spec, "stdin") == 0) {
		in->fd = STDIN_FILENO;
	} else {
		/*
		 * A FIFO is opened read-write: open would otherwise wait for a
		 * writer, and every writer closing would read as end of input.
		 */
		bool fifo = stat(spec, &st) == 0 && S_ISFIFO(st.st_mode);
		in->fd = open(spec, (fifo ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	}
	if (in->fd < 0)
		return fk_fail_errno(err, errno, "--serial-in %s: cannot open for reading", spec);
	if (fstat(in->fd, &st) < 0)
		return fk_fail_errno(err, errno, "--serial-in %s: cannot stat", spec);
	in->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (in->wake_fd < 0)
		return fk_fail_errno(err, errno, "eventfd");
	ret = event_loop_add_device(&vm->loop, in->wake_fd, EPOLLIN, on_serial_space, vm, err);
	if (ret < 0)
		return ret;
	vm->serial.rx_space = serial_rx_space;
	vm->serial.rx_space_opaque = vm;
	if (S_ISDIR(st.st_mode))
		return fk_fail(err, EISDIR, "--serial-in %s: is a directory", spec);
	in->is_stream = true;
	if (event_loop_add_device(&vm->loop, in->fd, EPOLLIN, on_serial_input, vm, err) == 0)
		return 0;
	if (err->code != EPERM)
		return -err->code;
	/* epoll cannot watch regular files or /dev/null: take the first 64 KiB up front. */
	in->is_stream = false;
	ssize_t n = read(in->fd, in->pending, sizeof(in->pending));
	if (n < 0)
		return fk_fail_errno(err, errno, "--serial-in %s: read", spec);
	in->pending_len = (size_t)n;
	serial_input_push(vm);
	return 0;
}

static void on_disk_notify(void *opaque, uint32_t events)
{
	struct vm_disk *d = opaque;
	uint64_t v;

	(void)events;
	if (read(d->notify_fd, &v, sizeof(v)) == sizeof(v))
		virtio_mmio_notify(&d->transport, 0);
}

static int setup_disk(struct vm *vm, int i, struct fk_err *err)
{
	const struct vmm_disk_config *dc = &vm->cfg->disks[i];
	struct vm_disk *d = &vm->disks[i];
	uint64_t base = LAYOUT_VIRTIO_MMIO_BASE + (uint64_t)i * VIRTIO_MMIO_SIZE;
	struct irq_line irq;
	struct fk_err soft;
	int ret;

	d->notify_fd = d->irq_fd = -1;
	ret = virtio_blk_open(&d->blk, dc->path, dc->readonly, dc->id, err);
	if (ret < 0)
		return fk_wrap(err, "--disk %s", dc->path);
	d->irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->irq_fd < 0)
		return fk_fail_errno(err, errno, "eventfd");
	irq = (struct irq_line){.gsi = LAYOUT_VIRTIO_GSI_BASE + (uint32_t)i, .eventfd = d->irq_fd};
	ret = kvm_irqfd(vm, d->irq_fd, irq.gsi, err);
	if (ret < 0)
		return ret;
	ret = virtio_mmio_init(&d->transport, &virtio_blk_ops, d->blk, &vm->mem, irq, base, err);
	if (ret < 0)
		return ret;
	d->transport_ready = true;
	ret = bus_register(&vm->mmio, base, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, &d->transport,
			   err);
	if (ret < 0)
		return ret;

	/*
	 * An ioeventfd lets KVM complete the guest's queue notification without
	 * waking a VMM thread; the request is handled on the loop thread. If KVM
	 * refuses, notifications arrive as ordinary MMIO writes instead.
	 */
	d->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->notify_fd < 0)
		return fk_fail_errno(err, errno, "eventfd");
	if (kvm_ioeventfd_mmio(vm, d->notify_fd, base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, 0, &soft) <
	    0) {
		close(d->notify_fd);
		d->notify_fd = -1;
		return 0;
	}
	return event_loop_add_device(&vm->loop, d->notify_fd, EPOLLIN, on_disk_notify, d, err);
}

static void on_vsock_event(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;

	(void)events;
	virtio_vsock_process_events(vm->vsock.dev, 0);
}

/*
 * Like a disk, in the next virtio-mmio window with the next GSI, but its
 * queue notifications and Unix sockets all sit in the device's own epoll
 * set, which takes one slot of the VM's event loop.
 */
int vm_setup_vsock(struct vm *vm, struct fk_err *err)
{
	struct vm_vsock *v = &vm->vsock;
	uint64_t base = LAYOUT_VIRTIO_MMIO_BASE + (uint64_t)vm->nr_disks * VIRTIO_MMIO_SIZE;
	struct irq_line irq;
	struct fk_err soft;
	int ret;

	v->present = true;
	v->irq_fd = -1;
	ret = virtio_vsock_open(&v->dev, vm->cfg->vsock_path, vm->cfg->vsock_cid, err);
	if (ret < 0)
		return ret;
	v->irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (v->irq_fd < 0)
		return fk_fail_errno(err, errno, "eventfd");
	irq = (struct irq_line){.gsi = LAYOUT_VIRTIO_GSI_BASE + (uint32_t)vm->nr_disks,
				.eventfd = v->irq_fd};
	ret = kvm_irqfd(vm, v->irq_fd, irq.gsi, err);
	if (ret < 0)
		return ret;
	ret = virtio_mmio_init(&v->transport, &virtio_vsock_ops, v->dev, &vm->mem, irq, base, err);
	if (ret < 0)
		return ret;
	v->transport_ready = true;
	virtio_vsock_attach(v->dev, &v->transport);
	ret = bus_register(&vm->mmio, base, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, &v->transport,
			   err);
	if (ret < 0)
		return ret;
	for (uint32_t q = 0; q < VIRTIO_VSOCK_NR_QUEUES; q++) {
		int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

		if (fd < 0)
			return fk_fail_errno(err, errno, "eventfd");
		/* Refused: that queue's notifications arrive as MMIO writes instead. */
		if (kvm_ioeventfd_mmio(vm, fd, base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, q, &soft) < 0) {
			close(fd);
			continue;
		}
		ret = virtio_vsock_watch_notify(v->dev, q, fd, err);
		if (ret < 0)
			return ret;
	}
	ret = event_loop_add_device(&vm->loop, virtio_vsock_epoll_fd(v->dev), EPOLLIN,
				    on_vsock_event, vm, err);
	if (ret < 0)
		return ret;
	v->loop_watched = true;
	return 0;
}

static void vsock_destroy(struct vm *vm)
{
	struct vm_vsock *v = &vm->vsock;

	if (!v->present)
		return;
	if (v->loop_watched)
		event_loop_remove(&vm->loop, virtio_vsock_epoll_fd(v->dev));
	if (v->transport_ready)
		virtio_mmio_destroy(&v->transport);
	virtio_vsock_close(v->dev);
	if (v->irq_fd >= 0)
		close(v->irq_fd);
	*v = (struct vm_vsock){0};
}

static void on_net_event(void *opaque, uint32_t events)
{
	struct vm *vm = opaque;

	(void)events;
	virtio_net_process_events(vm->net.dev);
}

int vm_open_net_tap(const struct vmm_config *cfg, uint8_t mac[6], struct fk_err *err)
{
	int fd;

	if (cfg->net_mac_given) {
		memcpy(mac, cfg->net_mac, 6);
	} else {
		/* Locally administered, unicast; the rest random so VMs on one bridge differ. */
		if (getrandom(mac, 6, 0) != 6)
			return fk_fail_errno(err, errno, "--net: random MAC");
		mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
	}
	fd = vm_net_tap_fd(cfg, err);
	if (fd < 0)
		return fk_wrap(err, "--net");
	return fd;
}

int vm_net_tap_fd(const struct vmm_config *cfg, struct fk_err *err)
{
	/* handed over already open (a jailed VMM's, from the network broker) */
	if (cfg->net_tap_fd >= 0)
		return cfg->net_tap_fd;
	return tap_open(cfg->net_tap, cfg->net_netns, err);
}

/*
 * Like vsock: the next virtio-mmio window and GSI, its tap and queue
 * notifications in the device's own epoll set (one event-loop slot).
 */
int vm_setup_net(struct vm *vm, const uint8_t mac[6], int tap_fd, const char *tap_name,
		 struct fk_err *err)
{
	struct vm_net *v = &vm->net;
	uint32_t index = (uint32_t)vm->nr_disks + (vm->vsock.transport_ready ? 1 : 0);
	uint64_t base = LAYOUT_VIRTIO_MMIO_BASE + (uint64_t)index * VIRTIO_MMIO_SIZE;
	struct irq_line irq;
	struct fk_err soft;
	int ret;

	v->present = true;
	v->irq_fd = -1;
	ret = virtio_net_create(&v->dev, mac, tap_fd, tap_name, err);
	if (ret < 0)
		return ret;
	v->irq_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (v->irq_fd < 0)
		return fk_fail_errno(err, errno, "eventfd");
	irq = (struct irq_line){.gsi = LAYOUT_VIRTIO_GSI_BASE + index, .eventfd = v->irq_fd};
	ret = kvm_irqfd(vm, v->irq_fd, irq.gsi, err);
	if (ret < 0)
		return ret;
	ret = virtio_mmio_init(&v->transport, &virtio_net_ops, v->dev, &vm->mem, irq, base, err);
	if (ret < 0)
		return ret;
	v->transport_ready = true;
	virtio_net_attach(v->dev, &v->transport);
	ret = bus_register(&vm->mmio, base, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, &v->transport,
			   err);
	if (ret < 0)
		return ret;
	for (uint32_t q = 0; q < VIRTIO_NET_NR_QUEUES; q++) {
		int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

		if (fd < 0)
			return fk_fail_errno(err, errno, "eventfd");
		/*
		 * Refused by KVM: notifications arrive as MMIO writes, and the fd
		 * still serves the tx queue to re-kick itself after a full batch.
		 */
		kvm_ioeventfd_mmio(vm, fd, base + VIRTIO_MMIO_QUEUE_NOTIFY, 4, q, &soft);
		ret = virtio_net_watch_notify(v->dev, q, fd, err);
		if (ret < 0)
			return ret;
	}
	ret = event_loop_add_device(&vm->loop, virtio_net_epoll_fd(v->dev), EPOLLIN, on_net_event,
				    vm, err);
	if (ret < 0)
		return ret;
	v->loop_watched = true;
	return 0;
}

static void net_destroy(struct vm *vm)
{
	struct vm_net *v = &vm->net;

	if (!v->present)
		return;
	if (v->loop_watched)
		event_loop_remove(&vm->loop, virtio_net_epoll_fd(v->dev));
	if (v->transport_ready)
		virtio_mmio_destroy(&v->transport);
	virtio_net_close(v->dev);
	if (v->irq_fd >= 0)
		close(v->irq_fd);
	*v = (struct vm_net){0};
}

static int setup_pio_devices(struct vm *vm, struct fk_err *err)
{
	int ret;

	ret = bus_register(&vm->pio, LAYOUT_COM1_PORT, SERIAL_NR_PORTS, &serial_bus_ops,
			   &vm->serial, err);
	if (!ret)
		ret = bus_register(&vm->pio, LAYOUT_PM_SLEEP_CONTROL, 1, &acpi_pm_sleep_control_ops,
				   &vm->pm, err);
	if (!ret)
		ret = bus_register(&vm->pio, LAYOUT_PM_SLEEP_STATUS, 1, &acpi_pm_sleep_status_ops,
				   &vm->pm, err);
	if (!ret)
		ret = bus_register(&vm->pio, LAYOUT_PM_RESET, 1, &acpi_pm_reset_ops, &vm->pm, err);
	if (!ret)
		ret =
		    bus_register(&vm->pio, LAYOUT_I8042_PORT, 1, &acpi_pm_i8042_ops, &vm->pm, err);
	if (!ret)
		ret = bus_register(&vm->pio, LAYOUT_POST_PORT, 1, &acpi_pm_post_ops, &vm->pm, err);
	return ret;
}

static int setup_event_sources(struct vm *vm, struct fk_err *err)
{
	struct itimerspec its = {
	    .it_interval = {.tv_nsec = SERIAL_FLUSH_INTERVAL_NS},
	    .it_value = {.tv_nsec = SERIAL_FLUSH_INTERVAL_NS},
	};
	sigset_t sigs;
	int ret;

	vm->exit_eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (vm->exit_eventfd < 0)
		return fk_fail_errno(err, errno, "eventfd");
	ret = event_loop_add(&vm->loop, vm->exit_eventfd, EPOLLIN, on_exit_event, vm, err);
	if (ret < 0)
		return ret;

	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	/* Both fds are closed by vm_destroy, also when a later step fails. */
	vm->signal_fd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	if (vm->signal_fd < 0)
		return fk_fail_errno(err, errno, "signalfd");
	ret = event_loop_add(&vm->loop, vm->signal_fd, EPOLLIN, on_signal, vm, err);
	if (ret < 0)
		return ret;

	vm->flush_timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (vm->flush_timer_fd < 0)
		return fk_fail_errno(err, errno, "timerfd_create");
	if (timerfd_settime(vm->flush_timer_fd, 0, &its, NULL) < 0)
		return fk_fail_errno(err, errno, "serial flush timer");
	return event_loop_add(&vm->loop, vm->flush_timer_fd, EPOLLIN, on_flush_timer, vm, err);
}

/* The parts every VM has, booted or restored: event loop, KVM VM, buses. */
int vm_setup_host(struct vm *vm, struct fk_err *err)
{
	int ret;

	ret = event_loop_init(&vm->loop, err);
	if (ret < 0)
		return ret;
	ret = setup_event_sources(vm, err);
	if (ret < 0)
		return ret;
	ret = kvm_open(vm, vm->cfg->kvm_path, err);
	if (ret < 0)
		return ret;
	return kvm_create_vm(vm, err);
}

/* Serial, power management, serial input and the control socket. */
/*
 * --ready-fd: said once the control socket listens (a request sent from then on waits in the
 * socket and is answered once the VM runs: its launcher need not poll, and its first request
 * is already queued when the event loop starts), else, without --control, when the VM runs.
 * A VM already stopping tells nothing: its launcher sees the descriptor close without
 * "ready", as when the VMM exits early.
 */
static void signal_ready(struct vm *vm)
{
	if (vm->ready_fd < 0)
		return;
	if (!atomic_load(&vm->stopping) && write(vm->ready_fd, "ready\n", 6) != 6) {
		/* The launcher went away (EPIPE, SIGPIPE ignored): nobody to tell. */
	}
	close(vm->ready_fd);
	vm->ready_fd = -1;
}

int vm_setup_devices(struct vm *vm, struct fk_err *err)
{
	struct irq_line com1_irq;
	int serial_fd, ret;

	ret = open_serial_output(vm->cfg->serial_out, &serial_fd, err);
	if (ret < 0)
		return ret;
	com1_irq = (struct irq_line){
	    .gsi = LAYOUT_COM1_GSI, .eventfd = -1, .set_level = kvm_set_irq_level, .opaque = vm};
	serial_init(&vm->serial, serial_fd, com1_irq);
	acpi_pm_init(&vm->pm, LAYOUT_PM_RESET_VALUE, on_pm_event, vm);
	ret = setup_pio_devices(vm, err);
	if (ret < 0)
		return ret;
	ret = setup_serial_input(vm, err);
	if (ret < 0)
		return ret;
	if (vm->cfg->control_path) {
		ret = vm_control_init(vm, err);
		if (ret < 0)
			return ret;
		signal_ready(vm);
	}
	return 0;
}

int vm_setup_disks(struct vm *vm, struct fk_err *err)
{
	for (int i = 0; i < vm->cfg->nr_disks; i++) {
		int ret = setup_disk(vm, i, err);
		vm->nr_disks = i + 1;
		if (ret < 0)
			return ret;
	}
	return 0;
}

int vm_create_vcpus(struct vm *vm, struct fk_err *err)
{
	int ret;

	vm->vcpus = calloc((size_t)vm->nr_vcpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return fk_fail(err, ENOMEM, "vcpus: out of memory");
	for (int i = 0; i < vm->nr_vcpus; i++)
		vm->vcpus[i].fd = -1;
	for (int i = 0; i < vm->nr_vcpus; i++) {
		ret = vcpu_create(vm, i, err);
		if (ret < 0)
			return ret;
	}
	return vm_state_init_msr_list(vm, err);
}

/* A fresh 128-bit VM generation ID in guest memory (brief §7). */
void vm_new_generation_id(struct vm *vm)
{
	ssize_t n = getrandom(vm->genid, sizeof(vm->genid), 0);

	if (n != (ssize_t)sizeof(vm->genid)) {
		/* getrandom on Linux >= 3.17 does not fail for 16 bytes; keep the IDs distinct
		 * anyway. */
		uint64_t t = monotonic_us() ^ ((uint64_t)getpid() << 32);
		memcpy(vm->genid, &t, sizeof(t));
	}
	guest_mem_write(&vm->mem, LAYOUT_VMGENID_ADDR, vm->genid, sizeof(vm->genid));
}

int vm_prepare(struct vm *vm, const struct vmm_config *cfg, struct fk_err *err)
{
	(void)err;
	vm->cfg = cfg;
	vm->kvm_fd = vm->vm_fd = vm->exit_eventfd = -1;
	vm->signal_fd = vm->flush_timer_fd = -1;
	vm->ready_fd = cfg->ready_fd;
	vm->loop.epoll_fd = -1;
	vm->nr_vcpus = cfg->nr_cpus;
	pthread_mutex_init(&vm->exit_lock, NULL);
	pthread_mutex_init(&vm->pause_lock, NULL);
	pthread_cond_init(&vm->pause_changed, NULL);
	bus_init(&vm->pio, "pio");
	bus_init(&vm->mmio, "mmio");
	signal(SIGPIPE, SIG_IGN);
	vcpu_install_kick_handler();
	return 0;
}

int vm_init(struct vm *vm, const struct vmm_config *cfg, struct fk_err *err)
{
	int ret;

	memset(vm, 0, sizeof(*vm));
	vm_prepare(vm, cfg, err);
	if (cfg->restore_dir)
		return vm_restore_init(vm, err);

	/* Validate the cheap inputs before asking KVM for anything. */
	if (access(cfg->kernel, R_OK) < 0)
		return fk_fail_errno(err, errno, "kernel %s: cannot read", cfg->kernel);
	if (cfg->initrd && access(cfg->initrd, R_OK) < 0)
		return fk_fail_errno(err, errno, "initrd %s: cannot read", cfg->initrd);

	ret = vm_setup_host(vm, err);
	if (ret < 0)
		return ret;
	ret = guest_mem_init(&vm->mem, cfg->mem_backend, cfg->mem_size, err);
	if (ret < 0)
		return ret;
	ret = kvm_add_memslots(vm, err);
	if (ret < 0)
		return ret;
	ret = vm_setup_devices(vm, err);
	if (ret < 0)
		return ret;
	ret = vm_setup_disks(vm, err);
	if (ret < 0)
		return ret;
	if (cfg->vsock_path[0]) {
		ret = vm_setup_vsock(vm, err);
		if (ret < 0)
			return ret;
	}
	if (cfg->net_tap[0]) {
		uint8_t mac[6];
		int fd = vm_open_net_tap(cfg, mac, err);

		if (fd < 0)
			return fd;
		ret = vm_setup_net(vm, mac, fd, cfg->net_tap, err);
		if (ret < 0)
			return ret;
	}
	ret = boot_setup(vm, err);
	if (ret < 0)
		return ret;
	vm_new_generation_id(vm);
	ret = vm_create_vcpus(vm, err);
	if (ret < 0)
		return ret;
	return boot_setup_bsp(vm, err);
}

int vm_run(struct vm *vm)
{
	struct fk_err err;
	int ret;

	vm->started_us = monotonic_us();
	/* Everything is open; the vCPU threads inherit this filter and add their own. */
	if (fk_seccomp_install_process(vm->cfg->seccomp, &err) < 0)
		vm_request_exit(vm, VMM_EXIT_ERROR, "%s", err.msg);
	for (int i = 0; i < vm->nr_vcpus && !atomic_load(&vm->stopping); i++) {
		if (vcpu_start(&vm->vcpus[i], &err) < 0) {
			vm_request_exit(vm, VMM_EXIT_ERROR, "%s", err.msg);
			break;
		}
	}
	if (vm->restored)
		vm_restore_started(vm);
	signal_ready(vm);
	ret = event_loop_run(&vm->loop);
	if (ret < 0)
		vm_request_exit(vm, VMM_EXIT_ERROR, "event loop: %s", strerror(-ret));

	/* Parked vCPUs wake on the broadcast and see `stopping`. */
	pthread_mutex_lock(&vm->pause_lock);
	pthread_cond_broadcast(&vm->pause_changed);
	pthread_mutex_unlock(&vm->pause_lock);
	for (int i = 0; i < vm->nr_vcpus; i++)
		if (vm->vcpus[i].thread_started)
			vcpu_kick(&vm->vcpus[i]);
	for (int i = 0; i < vm->nr_vcpus; i++) {
		if (vm->vcpus[i].thread_started) {
			pthread_join(vm->vcpus[i].thread, NULL);
			vm->vcpus[i].thread_started = false;
		}
	}
	serial_flush(&vm->serial);
	return atomic_load(&vm->exit_status);
}

void vm_destroy(struct vm *vm)
{
	/* First: its thread reads guest RAM and its final pause uses the vCPUs. */
	live_async_destroy(vm);
	if (vm->branch_ops)
		vm->branch_ops->teardown(vm);
	if (vm->control_ready)
		control_server_destroy(&vm->control);
	for (int i = 0; vm->vcpus && i < vm->nr_vcpus; i++) {
		if (vm->vcpus[i].run)
			munmap(vm->vcpus[i].run, vm->vcpu_mmap_size);
		if (vm->vcpus[i].fd >= 0)
			close(vm->vcpus[i].fd);
	}
	free(vm->vcpus);
	net_destroy(vm);
	vsock_destroy(vm);
	for (int i = 0; i < vm->nr_disks; i++) {
		struct vm_disk *d = &vm->disks[i];
		if (d->transport_ready)
			virtio_mmio_destroy(&d->transport);
		if (d->blk)
			virtio_blk_close(d->blk);
		if (d->notify_fd >= 0)
			close(d->notify_fd);
		if (d->irq_fd >= 0)
			close(d->irq_fd);
	}
	if (vm->serial.out_fd > STDERR_FILENO)
		close(vm->serial.out_fd);
	/*
	 * Before the unmap: with the handler gone, the VMM's copy of the
	 * userfaultfd would make munmap wait for an UNMAP event no one reads.
	 */
	uffd_watch_stop(vm->uffd);
	uffd_live_end(vm); /* a uffd-wp snapshot's copier reads guest RAM until it ends */
	free(vm->uffd);
	vm->uffd = NULL;
	diff_track_free(vm);
	guest_mem_destroy(&vm->mem);
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	free(vm->supported_cpuid);
	free(vm->msr_indices);
	event_loop_destroy(&vm->loop);
	if (vm->exit_eventfd >= 0)
		close(vm->exit_eventfd);
	if (vm->signal_fd >= 0)
		close(vm->signal_fd);
	if (vm->flush_timer_fd >= 0)
		close(vm->flush_timer_fd);
}
