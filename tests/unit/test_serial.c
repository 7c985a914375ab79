/* SPDX-License-Identifier: MIT */
/* The 16550A UART model, driven through its bus ops the way a guest driver would. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "devices/serial.h"

/* Register offsets and bits, from the 16550A data sheet. */
#define THR 0 /* RBR on read, DLL with DLAB */
#define IER 1 /* DLM with DLAB */
#define IIR 2 /* FCR on write */
#define LCR 3
#define MCR 4
#define LSR 5
#define MSR 6
#define SCR 7

#define IER_RDA	      0x01
#define IER_THRE      0x02
#define IIR_NONE      0x01
#define IIR_THRE      0x02
#define IIR_RDA	      0x04
#define IIR_FIFO_BITS 0xC0
#define FCR_ENABLE    0x01
#define FCR_CLEAR_RX  0x02
#define FCR_CLEAR_TX  0x04
#define LCR_8N1	      0x03
#define LCR_DLAB      0x80
#define LSR_DR	      0x01
#define LSR_THRE      0x20
#define LSR_TEMT      0x40
#define MCR_DTR	      0x01
#define MCR_RTS	      0x02
#define MCR_OUT1      0x04
#define MCR_OUT2      0x08
#define MCR_LOOP      0x10
#define MSR_CTS	      0x10
#define MSR_DSR	      0x20
#define MSR_RI	      0x40
#define MSR_DCD	      0x80

#define GSI 4

struct fixture {
	struct serial s;
	int out[2]; /* pipe: the UART writes out[1], the test reads out[0] */
	bool destroyed;
	/* IRQ level changes, in order. */
	int nr_levels;
	int levels[64];
	/* rx_space calls, and whether the UART lock was free during each. */
	int rx_space_calls;
	bool rx_space_called_locked;
};

static void record_level(void *opaque, uint32_t gsi, int level)
{
	struct fixture *f = opaque;

	assert_int_equal(gsi, GSI);
	assert_true(f->nr_levels < 64);
	f->levels[f->nr_levels++] = level;
}

static void on_rx_space(void *opaque)
{
	struct fixture *f = opaque;

	f->rx_space_calls++;
	/* The event loop refills from here, so the UART lock must not be held. */
	if (pthread_mutex_trylock(&f->s.lock) == 0)
		pthread_mutex_unlock(&f->s.lock);
	else
		f->rx_space_called_locked = true;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(pipe2(f->out, O_NONBLOCK | O_CLOEXEC), 0);
	serial_init(
	    &f->s, f->out[1],
	    (struct irq_line){.gsi = GSI, .eventfd = -1, .set_level = record_level, .opaque = f});
	f->s.rx_space = on_rx_space;
	f->s.rx_space_opaque = f;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	if (!f->destroyed)
		serial_destroy(&f->s);
	close(f->out[0]);
	close(f->out[1]);
	free(f);
	return 0;
}

static void reg_write(struct fixture *f, uint64_t reg, uint8_t v)
{
	serial_bus_ops.write(&f->s, reg, &v, 1);
}

static uint8_t reg_read(struct fixture *f, uint64_t reg)
{
	uint8_t v = 0xEE;

	serial_bus_ops.read(&f->s, reg, &v, 1);
	return v;
}

static void transmit(struct fixture *f, const char *text)
{
	for (; *text; text++)
		reg_write(f, THR, (uint8_t)*text);
}

/* Everything the UART has written to the pipe so far (NUL-terminated). */
static size_t drain_output(struct fixture *f, char *buf, size_t size)
{
	size_t got = 0;
	ssize_t n;

	while (got < size - 1 && (n = read(f->out[0], buf + got, size - 1 - got)) > 0)
		got += (size_t)n;
	buf[got] = '\0';
	return got;
}

static void receive_all(struct fixture *f, const char *text)
{
	assert_int_equal(serial_receive(&f->s, (const uint8_t *)text, strlen(text)), strlen(text));
}

static int last_level(const struct fixture *f)
{
	return f->nr_levels ? f->levels[f->nr_levels - 1] : 0;
}

/* ---- output ---- */

static void test_output_is_line_buffered(void **state)
{
	struct fixture *f = *state;
	char buf[64];

	transmit(f, "hello");
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 0);
	transmit(f, "\n");
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 6);
	assert_string_equal(buf, "hello\n");

	transmit(f, "no newline");
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 0);
	serial_flush(&f->s);
	drain_output(f, buf, sizeof(buf));
	assert_string_equal(buf, "no newline");
	serial_flush(&f->s);
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 0);

	/* Output is never delayed by the transmitter: THR is empty again at once. */
	assert_int_equal(reg_read(f, LSR) & (LSR_THRE | LSR_TEMT), LSR_THRE | LSR_TEMT);
}

static void test_output_flushes_full_buffer(void **state)
{
	struct fixture *f = *state;
	char *buf = malloc(2 * SERIAL_TX_BUF_SIZE);

	assert_non_null(buf);
	for (int i = 0; i < SERIAL_TX_BUF_SIZE - 1; i++)
		reg_write(f, THR, 'a' + i % 26);
	assert_int_equal(drain_output(f, buf, 2 * SERIAL_TX_BUF_SIZE), 0);
	reg_write(f, THR, '!');
	assert_int_equal(drain_output(f, buf, 2 * SERIAL_TX_BUF_SIZE), SERIAL_TX_BUF_SIZE);
	for (int i = 0; i < SERIAL_TX_BUF_SIZE - 1; i++)
		assert_int_equal(buf[i], 'a' + i % 26);
	assert_int_equal(buf[SERIAL_TX_BUF_SIZE - 1], '!');
	/* The buffer starts over empty. */
	reg_write(f, THR, 'z');
	assert_int_equal(drain_output(f, buf, 2 * SERIAL_TX_BUF_SIZE), 0);
	serial_destroy(&f->s);
	f->destroyed = true;
	assert_int_equal(drain_output(f, buf, 2 * SERIAL_TX_BUF_SIZE), 1);
	assert_int_equal(buf[0], 'z');
	free(buf);
}

static void test_output_without_fd_is_dropped(void **state)
{
	struct fixture *f = *state;
	char buf[64];

	f->s.out_fd = -1;
	transmit(f, "lost\n");
	for (int i = 0; i < 2 * SERIAL_TX_BUF_SIZE; i++)
		reg_write(f, THR, 'x');
	serial_flush(&f->s);
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 0);
	assert_int_equal(reg_read(f, LSR) & LSR_THRE, LSR_THRE);
}

/* ---- registers ---- */

static void test_divisor_latch(void **state)
{
	struct fixture *f = *state;
	char buf[8];

	reg_write(f, IER, IER_RDA);
	reg_write(f, LCR, LCR_DLAB | LCR_8N1);
	assert_int_equal(reg_read(f, LCR), LCR_DLAB | LCR_8N1);
	/* Power-on divisor: 9600 baud from the 1.8432 MHz clock. */
	assert_int_equal(reg_read(f, THR), 1843200 / 16 / 9600);
	assert_int_equal(reg_read(f, IER), 0);
	reg_write(f, THR, 0x01); /* 115200 baud */
	reg_write(f, IER, 0x02);
	assert_int_equal(reg_read(f, THR), 0x01);
	assert_int_equal(reg_read(f, IER), 0x02);

	/* With DLAB clear the same offsets are THR and IER again, with their own values. */
	reg_write(f, LCR, LCR_8N1);
	assert_int_equal(reg_read(f, IER), IER_RDA);
	reg_write(f, THR, 'k');
	serial_flush(&f->s);
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 1);
	assert_string_equal(buf, "k");
	reg_write(f, LCR, LCR_DLAB | LCR_8N1);
	assert_int_equal(reg_read(f, THR), 0x01);
	assert_int_equal(reg_read(f, IER), 0x02);
}

static void test_ier_keeps_low_nibble(void **state)
{
	struct fixture *f = *state;

	reg_write(f, IER, 0xFF);
	assert_int_equal(reg_read(f, IER), 0x0F);
}

static void test_iir_priorities(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(reg_read(f, IIR), IIR_NONE);

	/* Enabling THRE with THR empty raises it; reading IIR acknowledges it. */
	reg_write(f, IER, IER_THRE);
	assert_int_equal(reg_read(f, IIR), IIR_THRE);
	assert_int_equal(reg_read(f, IIR), IIR_NONE);
	/* Re-writing the same enable bits does not raise it again. */
	reg_write(f, IER, IER_THRE);
	assert_int_equal(reg_read(f, IIR), IIR_NONE);

	/* Received data outranks THRE, and reading IIR then leaves THRE pending. */
	reg_write(f, IER, IER_RDA | IER_THRE);
	receive_all(f, "r");
	reg_write(f, THR, 't');
	assert_int_equal(reg_read(f, IIR), IIR_RDA);
	assert_int_equal(reg_read(f, IIR), IIR_RDA);
	assert_int_equal(reg_read(f, THR), 'r');
	assert_int_equal(reg_read(f, IIR), IIR_THRE);
	assert_int_equal(reg_read(f, IIR), IIR_NONE);

	/* A disabled source is not reported even when its condition holds. */
	reg_write(f, IER, IER_THRE);
	receive_all(f, "x");
	assert_int_equal(reg_read(f, IIR), IIR_NONE);
	reg_write(f, IER, IER_RDA);
	assert_int_equal(reg_read(f, IIR), IIR_RDA);
}

static void test_iir_fifo_bits(void **state)
{
	struct fixture *f = *state;

	reg_write(f, IIR, FCR_ENABLE);
	assert_int_equal(reg_read(f, IIR), IIR_FIFO_BITS | IIR_NONE);
	reg_write(f, IER, IER_RDA);
	receive_all(f, "a");
	assert_int_equal(reg_read(f, IIR), IIR_FIFO_BITS | IIR_RDA);
	reg_write(f, IER, IER_RDA | IER_THRE);
	assert_int_equal(reg_read(f, THR), 'a');
	/* The THRE acknowledge still works with the FIFO bits set. */
	assert_int_equal(reg_read(f, IIR), IIR_FIFO_BITS | IIR_THRE);
	assert_int_equal(reg_read(f, IIR), IIR_FIFO_BITS | IIR_NONE);
	reg_write(f, IIR, 0);
	assert_int_equal(reg_read(f, IIR), IIR_NONE);
}

static void test_lsr_data_ready(void **state)
{
	struct fixture *f = *state;

	assert_int_equal(reg_read(f, LSR), LSR_THRE | LSR_TEMT);
	receive_all(f, "ab");
	assert_int_equal(reg_read(f, LSR), LSR_THRE | LSR_TEMT | LSR_DR);
	assert_int_equal(reg_read(f, THR), 'a');
	assert_int_equal(reg_read(f, LSR) & LSR_DR, LSR_DR);
	assert_int_equal(reg_read(f, THR), 'b');
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);
	/* Reading an empty receiver changes nothing. */
	assert_int_equal(reg_read(f, THR), 0);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);

	/* FCR "clear receive FIFO" drops pending input. */
	receive_all(f, "cd");
	reg_write(f, IIR, FCR_ENABLE | FCR_CLEAR_RX);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);
	assert_int_equal(reg_read(f, THR), 0);
	receive_all(f, "e");
	assert_int_equal(reg_read(f, THR), 'e');
}

static void test_read_only_and_scratch_registers(void **state)
{
	struct fixture *f = *state;

	reg_write(f, LSR, 0);
	reg_write(f, MSR, 0);
	assert_int_equal(reg_read(f, LSR), LSR_THRE | LSR_TEMT);
	assert_int_equal(reg_read(f, MSR), MSR_DCD | MSR_DSR | MSR_CTS);
	reg_write(f, SCR, 0x5A);
	assert_int_equal(reg_read(f, SCR), 0x5A);
	reg_write(f, MCR, 0xFF);
	assert_int_equal(reg_read(f, MCR), 0x1F);
}

/* ---- input ---- */

static void test_rx_fifo_capacity(void **state)
{
	struct fixture *f = *state;
	const size_t extra = 100;
	uint8_t *in = malloc(SERIAL_RX_FIFO_SIZE + extra);

	assert_non_null(in);
	for (size_t i = 0; i < SERIAL_RX_FIFO_SIZE + extra; i++)
		in[i] = (uint8_t)(i * 13 + i / 256);
	assert_int_equal(serial_receive(&f->s, in, SERIAL_RX_FIFO_SIZE + extra),
			 SERIAL_RX_FIFO_SIZE);
	assert_int_equal(serial_receive(&f->s, in + SERIAL_RX_FIFO_SIZE, extra), 0);
	assert_int_equal(serial_receive(&f->s, in, 0), 0);

	/* Drain half, then queue the rest: the ring wraps and keeps the order. */
	for (size_t i = 0; i < SERIAL_RX_FIFO_SIZE / 2; i++)
		assert_int_equal(reg_read(f, THR), in[i]);
	assert_int_equal(serial_receive(&f->s, in + SERIAL_RX_FIFO_SIZE, extra), extra);
	for (size_t i = SERIAL_RX_FIFO_SIZE / 2; i < SERIAL_RX_FIFO_SIZE + extra; i++)
		assert_int_equal(reg_read(f, THR), in[i]);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);
	free(in);
}

static void fill_rx_fifo(struct fixture *f)
{
	uint8_t *in = calloc(1, SERIAL_RX_FIFO_SIZE + 1);

	assert_non_null(in);
	assert_int_equal(serial_receive(&f->s, in, SERIAL_RX_FIFO_SIZE + 1), SERIAL_RX_FIFO_SIZE);
	free(in);
}

static void test_rx_space_called_below_half(void **state)
{
	struct fixture *f = *state;

	fill_rx_fifo(f);
	/* Down to exactly half full: not yet. */
	for (int i = 0; i < SERIAL_RX_FIFO_SIZE / 2; i++)
		reg_read(f, THR);
	assert_int_equal(f->rx_space_calls, 0);
	/* One below half: the reader is woken, once, without the UART lock. */
	reg_read(f, THR);
	assert_int_equal(f->rx_space_calls, 1);
	assert_false(f->rx_space_called_locked);
	for (int i = 0; i < SERIAL_RX_FIFO_SIZE / 2 - 1; i++)
		reg_read(f, THR);
	assert_int_equal(f->rx_space_calls, 1);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);
}

static void test_rx_space_not_called_without_backlog(void **state)
{
	struct fixture *f = *state;
	uint8_t *in = calloc(1, SERIAL_RX_FIFO_SIZE);

	assert_non_null(in);
	/* Everything fit: nobody is waiting, so draining wakes nobody. */
	assert_int_equal(serial_receive(&f->s, in, SERIAL_RX_FIFO_SIZE), SERIAL_RX_FIFO_SIZE);
	for (int i = 0; i < SERIAL_RX_FIFO_SIZE; i++)
		reg_read(f, THR);
	assert_int_equal(f->rx_space_calls, 0);
	free(in);
}

/*
 * Linux's 8250 driver clears the FIFOs when the port is opened; a reader
 * waiting for space must be woken then too, or input stalls for good: the
 * FIFO is empty, so no later RBR read ever reaches the wake-up.
 */
static void test_rx_space_called_after_fifo_clear(void **state)
{
	struct fixture *f = *state;
	const uint8_t more = 'm';

	fill_rx_fifo(f);
	reg_write(f, IIR, FCR_ENABLE | FCR_CLEAR_RX | FCR_CLEAR_TX);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);
	assert_int_equal(f->rx_space_calls, 1);
	assert_false(f->rx_space_called_locked);
	assert_int_equal(serial_receive(&f->s, &more, 1), 1);
}

/* ---- loopback ---- */

static void test_loopback(void **state)
{
	struct fixture *f = *state;
	char buf[8];

	reg_write(f, MCR, MCR_LOOP | MCR_OUT2);
	reg_write(f, IER, IER_RDA);
	reg_write(f, THR, 'Q');
	serial_flush(&f->s);
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 0);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, LSR_DR);
	assert_int_equal(reg_read(f, IIR), IIR_RDA);
	assert_int_equal(last_level(f), 1);
	assert_int_equal(reg_read(f, THR), 'Q');
	assert_int_equal(last_level(f), 0);

	/* Leaving loopback sends output to the fd again. */
	reg_write(f, MCR, MCR_OUT2);
	transmit(f, "out\n");
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 4);
	assert_int_equal(reg_read(f, LSR) & LSR_DR, 0);
}

static void test_loopback_msr_mirrors_mcr(void **state)
{
	static const struct {
		uint8_t mcr, msr;
	} cases[] = {
	    {0, 0},
	    {MCR_DTR, MSR_DSR},
	    {MCR_RTS, MSR_CTS},
	    {MCR_OUT1, MSR_RI},
	    {MCR_OUT2, MSR_DCD},
	    {MCR_RTS | MCR_OUT2, MSR_CTS | MSR_DCD}, /* what Linux's 8250 probe checks */
	    {MCR_DTR | MCR_RTS | MCR_OUT1 | MCR_OUT2, MSR_DSR | MSR_CTS | MSR_RI | MSR_DCD},
	};
	struct fixture *f = *state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		reg_write(f, MCR, MCR_LOOP | cases[i].mcr);
		if ((reg_read(f, MSR) & 0xF0) != cases[i].msr)
			fail_msg("MCR %#x: MSR %#x, want %#x", cases[i].mcr, reg_read(f, MSR),
				 cases[i].msr);
	}
	/* Out of loopback, the modem lines are the fixed "cable connected" ones. */
	reg_write(f, MCR, 0);
	assert_int_equal(reg_read(f, MSR) & 0xF0, MSR_DCD | MSR_DSR | MSR_CTS);
}

/* ---- the interrupt line ---- */

static void test_irq_level_follows_pending(void **state)
{
	struct fixture *f = *state;
	static const int want[] = {1, 0, 1, 0, 1, 0};

	reg_write(f, IER, IER_RDA);
	assert_int_equal(f->nr_levels, 0); /* nothing pending: stays low */
	receive_all(f, "ab");		   /* raised */
	receive_all(f, "c");		   /* already high: no new edge */
	assert_int_equal(f->nr_levels, 1);
	reg_read(f, THR);
	reg_read(f, THR);
	assert_int_equal(f->nr_levels, 1); /* still data */
	reg_read(f, THR);		   /* lowered */
	assert_int_equal(f->nr_levels, 2);

	reg_write(f, IER, 0);
	receive_all(f, "d");
	assert_int_equal(f->nr_levels, 2); /* source disabled */
	reg_write(f, IER, IER_RDA);	   /* raised: enabling with data pending */
	reg_write(f, IER, 0);		   /* lowered */
	reg_read(f, THR);

	reg_write(f, IER, IER_THRE); /* raised: THR is empty */
	reg_read(f, IIR);	     /* lowered: acknowledged */
	assert_int_equal(f->nr_levels, 6);
	assert_memory_equal(f->levels, want, sizeof(want));
}

/* ---- access sizes ---- */

static void test_non_byte_accesses_ignored(void **state)
{
	struct fixture *f = *state;
	uint8_t wide[4] = {LCR_DLAB, 'x', 'y', 'z'};
	char buf[8];

	receive_all(f, "k");
	memset(wide, 0x77, sizeof(wide));
	serial_bus_ops.read(&f->s, THR, wide, 2);
	assert_int_equal(wide[0], 0);
	assert_int_equal(wide[1], 0);
	serial_bus_ops.read(&f->s, LSR, wide, 4);
	for (int i = 0; i < 4; i++)
		assert_int_equal(wide[i], 0);

	wide[0] = LCR_DLAB;
	serial_bus_ops.write(&f->s, LCR, wide, 2);
	assert_int_equal(reg_read(f, LCR), 0);
	wide[0] = 'W';
	serial_bus_ops.write(&f->s, THR, wide, 4);
	serial_flush(&f->s);
	assert_int_equal(drain_output(f, buf, sizeof(buf)), 0);
	/* The wide read did not consume the byte. */
	assert_int_equal(reg_read(f, THR), 'k');
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
	const struct CMUnitTest tests[] = {
	    T(test_output_is_line_buffered),
	    T(test_output_flushes_full_buffer),
	    T(test_output_without_fd_is_dropped),
	    T(test_divisor_latch),
	    T(test_ier_keeps_low_nibble),
	    T(test_iir_priorities),
	    T(test_iir_fifo_bits),
	    T(test_lsr_data_ready),
	    T(test_read_only_and_scratch_registers),
	    T(test_rx_fifo_capacity),
	    T(test_rx_space_called_below_half),
	    T(test_rx_space_not_called_without_backlog),
	    T(test_rx_space_called_after_fifo_clear),
	    T(test_loopback),
	    T(test_loopback_msr_mirrors_mcr),
	    T(test_irq_level_follows_pending),
	    T(test_non_byte_accesses_ignored),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
