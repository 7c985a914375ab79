/* SPDX-License-Identifier: MIT */
/*
 * Constants shared by the probe's CPL0 assembly (entry.S) and its CPL3 C
 * code. Plain #defines only: this file is included from assembly.
 */
#ifndef PROBE_LAYOUT_H
#define PROBE_LAYOUT_H

#define PROBE_VERSION 1

/* Per-CPU resources (TSS, stacks) are reserved statically for this many CPUs. */
#define MAX_CPUS 64

/*
 * Per-CPU stacks, right after the image (entry.S). Kernel stacks: only the
 * #UD call dispatcher and the ISRs run on them. User stacks: all C code
 * runs on them. probe.ld checks they end below ALLOC_START.
 */
#define KSTACK_SHIFT 12
#define KSTACK_SIZE  (1 << KSTACK_SHIFT)
#define USTACK_SHIFT 14
#define USTACK_SIZE  (1 << USTACK_SHIFT)
/*
 * Double-fault stacks, after the user stacks: #DF, NMI and #MC switch to
 * one (IST1), so a fault whose frame cannot be pushed on the kernel stack
 * is still reported instead of becoming a silent triple fault.
 */
#define DFSTACK_SHIFT 10
#define DFSTACK_SIZE  (1 << DFSTACK_SHIFT)
/* One TSS per CPU, at this stride (a TSS is 104 bytes). */
#define TSS_STRIDE 128

/* GDT selectors */
#define SEL_KCODE 0x08
#define SEL_KDATA 0x10
#define SEL_UDATA 0x18
#define SEL_UCODE 0x20
#define SEL_TSS0  0x28 /* TSS of CPU i at SEL_TSS0 + 16 * i */

/* Interrupt vectors */
#define VEC_UD	     6
#define VEC_TIMER    0xF0
#define VEC_SPURIOUS 0xFF

/*
 * CPL3 -> CPL0 calls: `ud2` with rax = call number, arguments in rdi, rsi,
 * rdx, result in rax; rcx and r11 are clobbered (see sys.h, entry.S).
 */
#define SYS_OUTSB     0 /* (port, buf, len): rep outsb */
#define SYS_INB	      1 /* (port) */
#define SYS_INW	      2
#define SYS_INL	      3
#define SYS_OUTB      4 /* (port, value) */
#define SYS_OUTW      5
#define SYS_OUTL      6
#define SYS_RDMSR     7	 /* (msr) -> edx:eax as one 64-bit value */
#define SYS_WRMSR     8	 /* (msr, value) */
#define SYS_CPUID     9	 /* (leaf, subleaf, uint32_t out[4]) */
#define SYS_HALT      10 /* (lapic timer count or 0): arm one-shot timer, sti; hlt; cli */
#define SYS_STOP      11 /* cli; hlt forever */
#define SYS_RDTSC0    12 /* rdtsc at CPL0 (for comparing with CPL3's) */
#define SYS_FLUSH_TLB 13 /* reload CR3: drops this CPU's non-global TLB entries */
#define SYS_NR	      14

/* Real-mode AP trampoline: SIPI vector 0x08 starts APs at 0x0800:0000. */
#define TRAMPOLINE_PADDR 0x8000

/* The image is linked (and loaded) at 1 MiB; workload memory starts here. */
#define IMAGE_PADDR 0x100000
#define ALLOC_START 0x1000000 /* 16 MiB */
#define ALLOC_ALIGN 0x200000  /* 2 MiB */

#endif
