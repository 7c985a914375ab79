/* SPDX-License-Identifier: MIT */
/*
 * CPL3 -> CPL0 calls (a `ud2` caught by entry.S's #UD handler) and the few
 * privileged-free primitives CPL3 code uses directly: TSC, MMIO, pause.
 */
#ifndef PROBE_SYS_H
#define PROBE_SYS_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

static inline uint64_t sys_call(uint64_t nr, uint64_t a, uint64_t b, uint64_t c)
{
	asm volatile("ud2" : "+a"(nr), "+D"(a), "+S"(b), "+d"(c) : : "rcx", "r11", "memory");
	return nr;
}

static inline void sys_outsb(uint16_t port, const void *buf, size_t len)
{
	sys_call(SYS_OUTSB, port, (uint64_t)(uintptr_t)buf, len);
}

static inline uint8_t sys_inb(uint16_t port)
{
	return (uint8_t)sys_call(SYS_INB, port, 0, 0);
}

static inline uint16_t sys_inw(uint16_t port)
{
	return (uint16_t)sys_call(SYS_INW, port, 0, 0);
}

static inline uint32_t sys_inl(uint16_t port)
{
	return (uint32_t)sys_call(SYS_INL, port, 0, 0);
}

static inline void sys_outb(uint16_t port, uint8_t v)
{
	sys_call(SYS_OUTB, port, v, 0);
}

static inline void sys_outw(uint16_t port, uint16_t v)
{
	sys_call(SYS_OUTW, port, v, 0);
}

static inline void sys_outl(uint16_t port, uint32_t v)
{
	sys_call(SYS_OUTL, port, v, 0);
}

static inline uint64_t sys_rdmsr(uint32_t msr)
{
	return sys_call(SYS_RDMSR, msr, 0, 0);
}

static inline void sys_wrmsr(uint32_t msr, uint64_t v)
{
	sys_call(SYS_WRMSR, msr, v, 0);
}

/* CPUID as the VMM configured it (CPL3 `cpuid` shows the host's under PVM). */
static inline void sys_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t out[4])
{
	sys_call(SYS_CPUID, leaf, subleaf, (uint64_t)(uintptr_t)out);
}

/* Arms the one-shot LAPIC timer with count (if non-zero) and halts until an interrupt. */
static inline void sys_halt(uint32_t lapic_count)
{
	sys_call(SYS_HALT, lapic_count, 0, 0);
}

static inline __attribute__((noreturn)) void sys_stop(void)
{
	for (;;)
		sys_call(SYS_STOP, 0, 0, 0);
}

static inline uint64_t sys_rdtsc0(void)
{
	return sys_call(SYS_RDTSC0, 0, 0, 0);
}

/* After CPL3 edits of the page tables (mem.c): only this CPU's TLB. */
static inline void sys_flush_tlb(void)
{
	sys_call(SYS_FLUSH_TLB, 0, 0, 0);
}

static inline uint64_t rdtsc(void)
{
	uint32_t lo, hi;

	asm volatile("rdtsc" : "=a"(lo), "=d"(hi));
	return ((uint64_t)hi << 32) | lo;
}

static inline void cpu_relax(void)
{
	asm volatile("pause" ::: "memory");
}

static inline void barrier(void)
{
	asm volatile("" ::: "memory");
}

/*
 * MMIO with explicit single mov instructions: the hypervisor decodes the
 * faulting instruction, so keep it a plain load or store of the given width.
 */
static inline uint8_t mmio_read8(uint64_t addr)
{
	uint8_t v;

	asm volatile("movb (%1), %0" : "=q"(v) : "r"(addr) : "memory");
	return v;
}

static inline uint16_t mmio_read16(uint64_t addr)
{
	uint16_t v;

	asm volatile("movw (%1), %0" : "=r"(v) : "r"(addr) : "memory");
	return v;
}

static inline uint32_t mmio_read32(uint64_t addr)
{
	uint32_t v;

	asm volatile("movl (%1), %0" : "=r"(v) : "r"(addr) : "memory");
	return v;
}

static inline uint64_t mmio_read64(uint64_t addr)
{
	uint64_t v;

	asm volatile("movq (%1), %0" : "=r"(v) : "r"(addr) : "memory");
	return v;
}

static inline void mmio_write8(uint64_t addr, uint8_t v)
{
	asm volatile("movb %0, (%1)" : : "q"(v), "r"(addr) : "memory");
}

static inline void mmio_write16(uint64_t addr, uint16_t v)
{
	asm volatile("movw %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}

static inline void mmio_write32(uint64_t addr, uint32_t v)
{
	asm volatile("movl %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}

static inline void mmio_write64(uint64_t addr, uint64_t v)
{
	asm volatile("movq %0, (%1)" : : "r"(v), "r"(addr) : "memory");
}

#endif
