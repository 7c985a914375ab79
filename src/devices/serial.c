/* SPDX-License-Identifier: MIT */
#include "devices/serial.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

/* Register offsets from the base port. */
enum {
	REG_RBR_THR = 0, /* DLL when LCR.DLAB */
	REG_IER = 1,	 /* DLM when LCR.DLAB */
	REG_IIR_FCR = 2,
	REG_LCR = 3,
	REG_MCR = 4,
	REG_LSR = 5,
	REG_MSR = 6,
	REG_SCR = 7,
};

#define LCR_DLAB      0x80
#define IER_RDA	      0x01
#define IER_THRE      0x02
#define IIR_NONE      0x01
#define IIR_THRE      0x02
#define IIR_RDA	      0x04
#define IIR_FIFO_BITS 0xC0
#define FCR_ENABLE    0x01
#define FCR_CLEAR_RX  0x02
#define LSR_DR	      0x01
#define LSR_THRE      0x20
#define LSR_TEMT      0x40
#define MCR_LOOP      0x10
#define MCR_OUT2      0x08
#define MSR_DCD	      0x80
#define MSR_DSR	      0x20
#define MSR_CTS	      0x10

static void write_all(int fd, const uint8_t *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* output gone (closed pipe, full disk): drop it, keep the VM */
		buf += n;
		len -= (size_t)n;
	}
}

static void flush_locked(struct serial *s)
{
	if (s->tx_len && s->out_fd >= 0)
		write_all(s->out_fd, s->tx_buf, s->tx_len);
	s->tx_len = 0;
}

static uint8_t pending_iir(const struct serial_state *st)
{
	if ((st->ier & IER_RDA) && st->rx_count > 0)
		return IIR_RDA;
	if ((st->ier & IER_THRE) && st->thr_interrupt_pending)
		return IIR_THRE;
	return IIR_NONE;
}

/* The IRQ line follows "an enabled interrupt is pending" (level-triggered, like ISA). */
static void update_irq_locked(struct serial *s)
{
	int level = pending_iir(&s->state) != IIR_NONE;

	if (level != s->irq_level) {
		s->irq_level = level;
		irq_line_set_level(&s->irq, level);
	}
}

void serial_init(struct serial *s, int out_fd, struct irq_line irq)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->out_fd = out_fd;
	s->irq = irq;
	s->state.lsr = LSR_THRE | LSR_TEMT;
	s->state.msr = MSR_DCD | MSR_DSR | MSR_CTS;
	s->state.mcr = MCR_OUT2;
	s->state.dll = 12; /* 9600 baud, what firmware would leave */
}

void serial_destroy(struct serial *s)
{
	serial_flush(s);
	pthread_mutex_destroy(&s->lock);
}

void serial_flush(struct serial *s)
{
	pthread_mutex_lock(&s->lock);
	flush_locked(s);
	pthread_mutex_unlock(&s->lock);
}

static void rx_push_locked(struct serial *s, uint8_t byte)
{
	struct serial_state *st = &s->state;

	if (st->rx_count == SERIAL_RX_FIFO_SIZE)
		return;
	st->rx_fifo[(st->rx_head + st->rx_count) % SERIAL_RX_FIFO_SIZE] = byte;
	st->rx_count++;
	st->lsr |= LSR_DR;
}

size_t serial_receive(struct serial *s, const uint8_t *data, size_t len)
{
	size_t n;

	pthread_mutex_lock(&s->lock);
	for (n = 0; n < len && s->state.rx_count < SERIAL_RX_FIFO_SIZE; n++)
		rx_push_locked(s, data[n]);
	if (n < len)
		s->rx_waiting_for_space = true;
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	return n;
}

static void transmit_locked(struct serial *s, uint8_t byte)
{
	if (s->state.mcr & MCR_LOOP) {
		rx_push_locked(s, byte);
		return;
	}
	s->tx_buf[s->tx_len++] = byte;
	if (byte == '\n' || s->tx_len == SERIAL_TX_BUF_SIZE)
		flush_locked(s);
}

static void serial_write(void *opaque, uint64_t offset, const uint8_t *data, uint32_t len)
{
	struct serial *s = opaque;
	struct serial_state *st = &s->state;
	bool wake_reader = false;
	uint8_t v = data[0];

	if (len != 1)
		return; /* the UART has byte-wide registers only */
	pthread_mutex_lock(&s->lock);
	switch (offset) {
	case REG_RBR_THR:
		if (st->lcr & LCR_DLAB) {
			st->dll = v;
		} else {
			transmit_locked(s, v);
			/* Transmission is instant: THR is empty again at once. */
			st->thr_interrupt_pending = true;
		}
		break;
	case REG_IER:
		if (st->lcr & LCR_DLAB) {
			st->dlm = v;
		} else {
			/* Enabling THRE while THR is empty raises the interrupt, as on a 16550. */
			if (!(st->ier & IER_THRE) && (v & IER_THRE))
				st->thr_interrupt_pending = true;
			st->ier = v & 0x0F;
		}
		break;
	case REG_IIR_FCR:
		if (v & FCR_CLEAR_RX) {
			st->rx_count = 0;
			st->lsr &= (uint8_t)~LSR_DR;
			/* Input held back while the FIFO was full may flow again. */
			if (s->rx_waiting_for_space) {
				s->rx_waiting_for_space = false;
				wake_reader = true;
			}
		}
		st->iir_fifo = (v & FCR_ENABLE) ? IIR_FIFO_BITS : 0;
		break;
	case REG_LCR:
		st->lcr = v;
		break;
	case REG_MCR:
		st->mcr = v & 0x1F;
		break;
	case REG_SCR:
		st->scr = v;
		break;
	default: /* LSR and MSR are read-only */
		break;
	}
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	if (wake_reader && s->rx_space)
		s->rx_space(s->rx_space_opaque);
}

static void serial_read(void *opaque, uint64_t offset, uint8_t *data, uint32_t len)
{
	struct serial *s = opaque;
	struct serial_state *st = &s->state;
	bool wake_reader = false;
	uint8_t v = 0;

	memset(data, 0, len);
	if (len != 1)
		return;
	pthread_mutex_lock(&s->lock);
	switch (offset) {
	case REG_RBR_THR:
		if (st->lcr & LCR_DLAB) {
			v = st->dll;
		} else if (st->rx_count > 0) {
			v = st->rx_fifo[st->rx_head];
			st->rx_head = (st->rx_head + 1) % SERIAL_RX_FIFO_SIZE;
			st->rx_count--;
			if (st->rx_count == 0)
				st->lsr &= (uint8_t)~LSR_DR;
			if (s->rx_waiting_for_space && st->rx_count < SERIAL_RX_FIFO_SIZE / 2) {
				s->rx_waiting_for_space = false;
				wake_reader = true;
			}
		}
		break;
	case REG_IER:
		v = (st->lcr & LCR_DLAB) ? st->dlm : st->ier;
		break;
	case REG_IIR_FCR:
		v = pending_iir(st) | st->iir_fifo;
		/* Reading IIR acknowledges a THR-empty interrupt. */
		if ((v & 0x0F) == IIR_THRE)
			st->thr_interrupt_pending = false;
		break;
	case REG_LCR:
		v = st->lcr;
		break;
	case REG_MCR:
		v = st->mcr;
		break;
	case REG_LSR:
		v = st->lsr;
		break;
	case REG_MSR:
		if (st->mcr & MCR_LOOP) {
			/* Loopback: modem outputs appear as inputs (Linux probes this). */
			v = (uint8_t)(((st->mcr & 0x01) << 5) | ((st->mcr & 0x02) << 3) |
				      ((st->mcr & 0x04) << 4) | ((st->mcr & 0x08) << 4));
		} else {
			v = st->msr;
		}
		break;
	case REG_SCR:
		v = st->scr;
		break;
	}
	data[0] = v;
	update_irq_locked(s);
	pthread_mutex_unlock(&s->lock);
	if (wake_reader && s->rx_space)
		s->rx_space(s->rx_space_opaque);
}

const struct bus_device_ops serial_bus_ops = {
    .name = "serial",
    .read = serial_read,
    .write = serial_write,
};
