/* SPDX-License-Identifier: MIT */
/*
 * Everything the probe runs at CPL0: the PVH entry, the AP trampoline, the
 * per-CPU switch to CPL3, the #UD "system call" dispatcher and the interrupt
 * and exception stubs. Under KVM-PVM every CPL0 instruction is emulated
 * (microseconds each), so this file has no loops: page tables, GDT, TSSs and
 * IDT are built by the assembler and linker (probe.ld splits addresses into
 * descriptor fields), and all real work happens in C at CPL3.
 */
#include "layout.h"

/*
 * Stacks start right after the image (probe.ld's __image_end, page aligned)
 * but are not part of it: the loader need not zero 1.3 MiB, a CPU touches
 * only the top of its own stacks, and the BSP's share the image's first
 * 2 MiB (already faulted in by the loader).
 */
#define kstacks __image_end
#define ustacks (__image_end + MAX_CPUS * KSTACK_SIZE)
#define dfstacks (ustacks + MAX_CPUS * USTACK_SIZE)

#define CR0_PE	 0x00000001
#define CR0_PG	 0x80000000
#define CR4_PAE	 0x00000020
#define MSR_EFER 0xC0000080
#define EFER_LME 0x00000100
#define X2APIC_EOI 0x80B
#define X2APIC_TIMER_INIT 0x838
#define PTE_P_RW_US	0x7
#define PTE_P_RW_US_PS	0x87
#define USER_RFLAGS	0x202	/* IF set: only the halt call's timer ever interrupts */

/* PVH: XEN_ELFNOTE_PHYS32_ENTRY, 4-byte physical entry address. */
	.section .note.pvh, "a", @note
	.balign 4
	.long 4			/* namesz: "Xen\0" */
	.long 4			/* descsz */
	.long 18		/* XEN_ELFNOTE_PHYS32_ENTRY */
	.asciz "Xen"
	.long pvh_entry

	.section .text.boot, "ax"
	.code32
	.globl pvh_entry
pvh_entry:
	/* 32-bit protected mode, paging off, EBX = struct hvm_start_info. */
	mov %ebx, pvh_start_info_paddr
	rdtsc
	mov %eax, boot_tsc0
	mov %edx, boot_tsc0 + 4
	lgdt gdt_desc
	mov $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov %cr0, %eax
	or $(CR0_PE | CR0_PG), %eax
	mov %eax, %cr0
	ljmp $SEL_KCODE, $bsp_long

	.code64
bsp_long:
	xor %edi, %edi
	jmp cpu_common

/* APs arrive here from the trampoline, already in long mode. */
ap_long:
	mov $1, %eax
	cpuid				/* EBX[31:24]: initial APIC id */
	shr $24, %ebx
	movzbl apic_to_index(%rbx), %edi

/* EDI = CPU index: per-CPU kernel stack, IDT, TSS, then iretq to cpu_main(index) at CPL3. */
cpu_common:
	mov $SEL_KDATA, %eax
	mov %eax, %ds
	mov %eax, %es
	mov %eax, %ss
	mov %edi, %eax
	shl $KSTACK_SHIFT, %eax
	lea kstacks + KSTACK_SIZE(%rax), %rsp
	lidt idt_desc
	mov %edi, %eax
	shl $4, %eax
	add $SEL_TSS0, %eax
	andb $0xFD, gdt + 5(%rax)	/* clear a stale busy bit (reboot keeps RAM) */
	ltr %ax
	lea 1(%rdi), %eax
	shl $USTACK_SHIFT, %eax
	add $ustacks - 8, %rax		/* as if cpu_main had been called */
	pushq $(SEL_UDATA | 3)
	push %rax
	pushq $USER_RFLAGS
	pushq $(SEL_UCODE | 3)
	pushq $cpu_main
	iretq

/*
 * #UD: `ud2` from CPL3 is a call (rax = number, args rdi, rsi, rdx); any
 * other #UD is a fault. The other ways down fail under KVM-PVM: `int n`
 * raises #UD, and `syscall` enters LSTAR in PVM's native guest-supervisor
 * mode (CS 0x33, hardware ring 3) where port I/O, cli and sysretq #GP.
 */
ud_entry:
	testb $3, 8(%rsp)
	jz 1f
	mov (%rsp), %r11
	cmpw $0x0B0F, (%r11)
	jne 1f
	cmp $SYS_NR, %rax
	jae 2f
	jmp *sys_table(, %rax, 8)
2:	mov $-38, %rax			/* -ENOSYS */
	jmp sys_ret
1:	pushq $0
	pushq $VEC_UD
	jmp common_fault

sys_ret:
	addq $2, (%rsp)
	iretq

sys_outsb:
	mov %rdx, %rcx
	mov %edi, %edx
	cld
	rep outsb
	xor %eax, %eax
	jmp sys_ret
sys_inb:
	mov %edi, %edx
	xor %eax, %eax
	inb %dx, %al
	jmp sys_ret
sys_inw:
	mov %edi, %edx
	xor %eax, %eax
	inw %dx, %ax
	jmp sys_ret
sys_inl:
	mov %edi, %edx
	inl %dx, %eax
	jmp sys_ret
sys_outb:
	mov %edi, %edx
	mov %esi, %eax
	outb %al, %dx
	xor %eax, %eax
	jmp sys_ret
sys_outw:
	mov %edi, %edx
	mov %esi, %eax
	outw %ax, %dx
	xor %eax, %eax
	jmp sys_ret
sys_outl:
	mov %edi, %edx
	mov %esi, %eax
	outl %eax, %dx
	xor %eax, %eax
	jmp sys_ret
sys_rdmsr:
	mov %edi, %ecx
	rdmsr
	shl $32, %rdx
	or %rdx, %rax
	jmp sys_ret
sys_wrmsr:
	mov %edi, %ecx
	mov %esi, %eax
	mov %rsi, %rdx
	shr $32, %rdx
	wrmsr
	xor %eax, %eax
	jmp sys_ret
sys_cpuid:
	mov %rdx, %r11
	mov %esi, %ecx
	mov %rbx, %rsi
	mov %edi, %eax
	cpuid
	mov %eax, (%r11)
	mov %ebx, 4(%r11)
	mov %ecx, 8(%r11)
	mov %edx, 12(%r11)
	mov %rsi, %rbx
	xor %eax, %eax
	jmp sys_ret
sys_halt:
	test %rdi, %rdi
	jz 1f
	mov $X2APIC_TIMER_INIT, %ecx
	mov %edi, %eax
	xor %edx, %edx
	wrmsr
1:	sti
sys_halt_hlt:
	hlt
	cli
	xor %eax, %eax
	jmp sys_ret
sys_stop:
	cli
1:	hlt
	jmp 1b
sys_rdtsc0:
	rdtsc
	shl $32, %rdx
	or %rdx, %rax
	jmp sys_ret
sys_flush_tlb:
	mov %cr3, %rax
	mov %rax, %cr3
	xor %eax, %eax
	jmp sys_ret

/*
 * The halt call arms a one-shot timer and relies on `sti; hlt` being one
 * step: STI's interrupt shadow keeps the timer from being taken before the
 * HLT. Nested under QEMU's TCG (SVM emulated) the shadow is sometimes lost
 * across an exit, the interrupt arrives between the two, and the HLT then
 * waits for a timer that has already fired (docs/design/decisions.md): both
 * vCPUs were found halted at sys_halt_hlt + 1 with the timer expired and
 * nothing in IRR or ISR. So if we interrupted that HLT, return past it.
 */
timer_entry:
	push %rax
	push %rcx
	push %rdx
	cmpq $sys_halt_hlt, 24(%rsp)	/* the interrupted RIP */
	jne 1f
	incq 24(%rsp)
	lock incq halt_races		/* reported as halt.races */
1:
	mov $X2APIC_EOI, %ecx
	xor %eax, %eax
	xor %edx, %edx
	wrmsr
	pop %rdx
	pop %rcx
	pop %rax
	iretq

/*
 * Any other exception or interrupt: leave CPL0 at once and let C report it
 * at CPL3 on a fresh user stack (the CPU never returns to the faulting code).
 * Stack: vector, error code, rip, cs, rflags, rsp, ss.
 */
common_fault:
	mov (%rsp), %rsi
	mov 8(%rsp), %rdx
	mov 16(%rsp), %rcx
	mov %cr2, %r8
	mov %rsp, %rdi
	sub $kstacks, %rdi
	shr $KSTACK_SHIFT, %rdi		/* CPU index from the kernel stack in use */
report_at_cpl3:
	lea 1(%rdi), %eax
	shl $USTACK_SHIFT, %eax
	add $ustacks - 8, %rax
	pushq $(SEL_UDATA | 3)
	push %rax
	pushq $0x2			/* IF clear while reporting */
	pushq $(SEL_UCODE | 3)
	pushq $fault_report
	iretq

/*
 * #DF, NMI and #MC arrive on this CPU's IST1 stack (dfstacks): same frame,
 * CPU index from that stack instead.
 */
ist_fault:
	mov (%rsp), %rsi
	mov 8(%rsp), %rdx
	mov 16(%rsp), %rcx
	mov %cr2, %r8
	mov %rsp, %rdi
	sub $dfstacks, %rdi
	shr $DFSTACK_SHIFT, %rdi
	jmp report_at_cpl3

/*
 * 256 stubs of 16 bytes each from a 4 KiB-aligned base, so the IDT below can
 * be assembled from two linker-computed halves of isr_stubs.
 */
	.balign 4096
	.globl isr_stubs, isr_stubs_end
isr_stubs:
	.set vec, 0
	.rept 256
	.balign 16
	.if vec == VEC_UD
	jmp ud_entry
	.elseif vec == VEC_TIMER
	jmp timer_entry
	.elseif vec == VEC_SPURIOUS
	iretq
	.else
	.if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
	.else
	pushq $0			/* no CPU error code: keep one frame layout */
	.endif
	pushq $vec
	.if (vec == 2) || (vec == 8) || (vec == 18)
	jmp ist_fault
	.else
	jmp common_fault
	.endif
	.endif
	.set vec, vec + 1
	.endr
	.balign 16
isr_stubs_end:

/*
 * Real-mode AP trampoline, copied to TRAMPOLINE_PADDR by the BSP (C code):
 * straight from real mode to long mode with the BSP's GDT and page tables.
 */
	.code16
	.globl trampoline_start, trampoline_end
trampoline_start:
	cli
	mov %cs, %ax
	mov %ax, %ds
	lgdtl (tramp_gdt_desc - trampoline_start)
	mov $CR4_PAE, %eax
	mov %eax, %cr4
	mov $pml4, %eax
	mov %eax, %cr3
	mov $MSR_EFER, %ecx
	rdmsr
	or $EFER_LME, %eax
	wrmsr
	mov $(CR0_PE | CR0_PG), %eax
	mov %eax, %cr0
	ljmpl $SEL_KCODE, $ap_long
	.balign 8
tramp_gdt_desc:
	.word gdt_end - gdt - 1
	.long gdt
trampoline_end:
	.code64

	.section .rodata.boot, "a"
	.balign 8
sys_table:
	.quad sys_outsb, sys_inb, sys_inw, sys_inl, sys_outb, sys_outw, sys_outl
	.quad sys_rdmsr, sys_wrmsr, sys_cpuid, sys_halt, sys_stop, sys_rdtsc0
	.quad sys_flush_tlb

	.section .data.boot, "aw"
	/* Timer interrupts that arrived between the halt call's sti and hlt (timer_entry). */
	.balign 8
	.globl halt_races
halt_races:
	.quad 0

	.balign 4096
/*
 * Identity map of the low 4 GiB with 2 MiB pages, all user-accessible
 * (KVM-PVM's shadow MMU rejects 1 GiB pages). The BSP maps RAM above 4 GiB
 * from CPL3 (mem.c) by filling fresh page directories and linking them
 * into pdpt.
 */
	.globl pml4, pdpt
pml4:
	.quad pdpt + PTE_P_RW_US
	.fill 511, 8, 0
pdpt:
	.quad pd_low + 0 * 4096 + PTE_P_RW_US
	.quad pd_low + 1 * 4096 + PTE_P_RW_US
	.quad pd_low + 2 * 4096 + PTE_P_RW_US
	.quad pd_low + 3 * 4096 + PTE_P_RW_US
	.fill 508, 8, 0
pd_low:
	.set i, 0
	.rept 4 * 512
	.quad (i << 21) | PTE_P_RW_US_PS
	.set i, i + 1
	.endr

	.balign 16
	.globl gdt
gdt:
	.quad 0
	.quad 0x00AF9A000000FFFF	/* SEL_KCODE: 64-bit, DPL0 */
	.quad 0x00CF92000000FFFF	/* SEL_KDATA */
	.quad 0x00CFF2000000FFFF	/* SEL_UDATA: DPL3 */
	.quad 0x00AFFA000000FFFF	/* SEL_UCODE: 64-bit, DPL3 */
	.set i, 0
	.rept MAX_CPUS			/* 16-byte available 64-bit TSS descriptors */
	.word 103
	.word tss_base_lo + i * TSS_STRIDE
	.byte tss_base_b2
	.byte 0x89
	.byte 0
	.byte tss_base_b3
	.long 0
	.long 0
	.set i, i + 1
	.endr
gdt_end:

	.balign 8
gdt_desc:
	.word gdt_end - gdt - 1
	.quad gdt
idt_desc:
	.word idt_end - idt - 1
	.quad idt

	.globl pvh_start_info_paddr, boot_tsc0
pvh_start_info_paddr:
	.quad 0
boot_tsc0:
	.quad 0

	.balign 16
idt:
	.set vec, 0
	.rept 256
	.word isr_stubs_lo + vec * 16
	.word SEL_KCODE
	.if (vec == 2) || (vec == 8) || (vec == 18)
	.byte 1				/* IST1: NMI, #DF, #MC (dfstacks) */
	.else
	.byte 0
	.endif
	.byte 0x8E			/* present 64-bit interrupt gate, DPL0 */
	.word isr_stubs_hi
	.long 0
	.long 0
	.set vec, vec + 1
	.endr
idt_end:

	.section .data.tss, "aw"
	.balign 8192
	.globl tss_array
tss_array:
	.set i, 0
	.rept MAX_CPUS
	.long 0
	.quad kstacks + (i + 1) * KSTACK_SIZE	/* rsp0 */
	.quad 0, 0, 0				/* rsp1, rsp2, reserved */
	.quad dfstacks + (i + 1) * DFSTACK_SIZE	/* ist1 */
	.fill 56, 1, 0
	.word 0
	.word 104			/* I/O bitmap base past the limit: none */
	.fill TSS_STRIDE - 104, 1, 0
	.set i, i + 1
	.endr
