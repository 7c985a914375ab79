/* SPDX-License-Identifier: MIT */
/*
 * 16550A-compatible UART (COM1). Output is buffered per line and written to
 * an fd; input bytes are pushed in by the event loop. Register state is
 * plain data (struct serial_state) so a snapshot can copy it.
 */
#ifndef FORKD_DEVICES_SERIAL_H
#define FORKD_DEVICES_SERIAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/bus.h"

#define SERIAL_RX_FIFO_SIZE 4096
#define SERIAL_TX_BUF_SIZE  1024
#define SERIAL_NR_PORTS	    8

struct serial_state {
	uint8_t ier, iir_fifo, lcr, mcr, lsr, msr, scr, dll, dlm;
	bool thr_interrupt_pending; /* THR-empty interrupt raised and not yet acknowledged */
	uint32_t rx_head, rx_count;
	uint8_t rx_fifo[SERIAL_RX_FIFO_SIZE];
};

struct serial {
	pthread_mutex_t lock;
	struct serial_state state;
	struct irq_line irq;
	int irq_level;
	int out_fd; /* -1: output discarded */
	uint32_t tx_len;
	uint8_t tx_buf[SERIAL_TX_BUF_SIZE];
	/* Called (lock not held) when the guest drained the receive FIFO below half. */
	void (*rx_space)(void *opaque);
	void *rx_space_opaque;
	bool rx_waiting_for_space;
};

void serial_init(struct serial *s, int out_fd, struct irq_line irq);
void serial_destroy(struct serial *s);
extern const struct bus_device_ops serial_bus_ops;

/*
 * Queues input bytes for the guest; returns how many were accepted (fewer
 * than len when the FIFO is full: the caller keeps the rest and waits for
 * rx_space).
 */
size_t serial_receive(struct serial *s, const uint8_t *data, size_t len);
/* Writes out buffered output. */
void serial_flush(struct serial *s);

#endif
