/* SPDX-License-Identifier: MIT */
/*
 * COM1. Output: every line is formatted first and written with one
 * `rep outsb` call (one VM exit per line), under a lock so lines from
 * several CPUs never interleave. Input: the BSP polls LSR and collects
 * lines; the UART's FIFO holds what arrives between polls.
 */
#include "probe.h"

#define UART_RBR	      0
#define UART_FCR	      2
#define UART_LSR	      5
#define UART_LSR_DR	      0x01
#define UART_FCR_ENABLE_CLEAR 0x07

#define LINE_MAX 512

/* Serialises output lines between CPUs. */
static struct spinlock out_lock;

/* Partial input line; only the BSP touches it. */
static char in_line[160];
static size_t in_len;
static bool in_overflow;

void spin_lock(struct spinlock *l)
{
	while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
		while (READ_ONCE(l->locked))
			cpu_relax();
}

bool spin_trylock(struct spinlock *l)
{
	return __atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE) == 0;
}

void spin_unlock(struct spinlock *l)
{
	__atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE);
}

void console_init(void)
{
	sys_outb(COM1 + UART_FCR, UART_FCR_ENABLE_CLEAR);
}

static void write_line(const char *line, size_t n)
{
	spin_lock(&out_lock);
	sys_outsb(COM1, line, n);
	spin_unlock(&out_lock);
}

void say(const char *f, ...)
{
	char line[LINE_MAX];
	va_list ap;
	int n;

	va_start(ap, f);
	n = vfmt(line, sizeof(line) - 1, f, ap);
	va_end(ap);
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	write_line(line, (size_t)n);
}

void say_text(const char *prefix, const char *text, size_t n)
{
	char line[CMDLINE_MAX + 64];
	size_t len = strnlen(prefix, 64);

	memcpy(line, prefix, len);
	for (size_t i = 0; i < n && len < sizeof(line) - 1; i++) {
		char ch = text[i];

		line[len++] = (ch >= 0x20 && ch < 0x7f) ? ch : '?';
	}
	line[len++] = '\n';
	write_line(line, len);
}

void say_urgent(const char *line, size_t n)
{
	uint64_t deadline = rdtsc() + us_to_tsc(100000);
	bool locked;

	while (!(locked = spin_trylock(&out_lock)) && rdtsc() < deadline)
		cpu_relax();
	sys_outsb(COM1, line, n);
	if (locked)
		spin_unlock(&out_lock);
}

void console_poll(void)
{
	/* Bounded so a flood of input cannot starve the caller's workload. */
	for (int i = 0; i < 64; i++) {
		char ch;

		if (!(sys_inb(COM1 + UART_LSR) & UART_LSR_DR))
			return;
		ch = (char)sys_inb(COM1 + UART_RBR);
		if (ch == '\n' || ch == '\r') {
			if (in_len && !in_overflow) {
				in_line[in_len] = '\0';
				run_command(in_line);
			} else if (in_overflow) {
				say("error line too long");
			}
			in_len = 0;
			in_overflow = false;
			continue;
		}
		if (in_len < sizeof(in_line) - 1)
			in_line[in_len++] = ch;
		else
			in_overflow = true;
	}
}
