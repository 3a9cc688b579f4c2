// The preemption trampoline (design: preempt.cpp).
//
// The SIGURG handler rewrote the interrupted context so that, when the
// handler returns, this runs as if the interrupted instruction had called
// it: [rsp] holds the interrupted rip, and the 128-byte red zone of the
// interrupted code lies above that slot. Everything the interrupted code
// may hold in a caller-saved register is saved here; the callee-saved
// registers are kept by ember_preempt_yield (C calling convention) and by
// the context switch inside it. `ret $128` returns to the interrupted
// instruction with the original stack pointer.
#if defined(__x86_64__) && defined(__linux__)
    .text
    .globl  ember_preempt_trampoline
    .hidden ember_preempt_trampoline
    .type   ember_preempt_trampoline, @function
    .p2align 4
ember_preempt_trampoline:
    .cfi_startproc
    .cfi_signal_frame
    // The caller's stack pointer is 8 + 128 above ours: the return address
    // and the red zone.
    .cfi_def_cfa %rsp, 136
    .cfi_offset %rip, -136
    pushfq
    .cfi_adjust_cfa_offset 8
    pushq   %rax
    .cfi_adjust_cfa_offset 8
    pushq   %rcx
    .cfi_adjust_cfa_offset 8
    pushq   %rdx
    .cfi_adjust_cfa_offset 8
    pushq   %rsi
    .cfi_adjust_cfa_offset 8
    pushq   %rdi
    .cfi_adjust_cfa_offset 8
    pushq   %r8
    .cfi_adjust_cfa_offset 8
    pushq   %r9
    .cfi_adjust_cfa_offset 8
    pushq   %r10
    .cfi_adjust_cfa_offset 8
    pushq   %r11
    .cfi_adjust_cfa_offset 8
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_offset %rbx, -224
    movq    %rsp, %rbx
    .cfi_def_cfa_register %rbx
    // The XSAVE area: 64-byte aligned, its 64-byte header zeroed (XRSTOR
    // requires the reserved bytes to be zero).
    subq    ember_xsave_bytes(%rip), %rsp
    andq    $-64, %rsp
    xorl    %eax, %eax
    movq    %rax, 512(%rsp)
    movq    %rax, 520(%rsp)
    movq    %rax, 528(%rsp)
    movq    %rax, 536(%rsp)
    movq    %rax, 544(%rsp)
    movq    %rax, 552(%rsp)
    movq    %rax, 560(%rsp)
    movq    %rax, 568(%rsp)
    movl    $-1, %eax
    movl    $-1, %edx
    xsave64 (%rsp)
    cld
    call    ember_preempt_yield
    movl    $-1, %eax
    movl    $-1, %edx
    xrstor64 (%rsp)
    movq    %rbx, %rsp
    .cfi_def_cfa_register %rsp
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %r11
    .cfi_adjust_cfa_offset -8
    popq    %r10
    .cfi_adjust_cfa_offset -8
    popq    %r9
    .cfi_adjust_cfa_offset -8
    popq    %r8
    .cfi_adjust_cfa_offset -8
    popq    %rdi
    .cfi_adjust_cfa_offset -8
    popq    %rsi
    .cfi_adjust_cfa_offset -8
    popq    %rdx
    .cfi_adjust_cfa_offset -8
    popq    %rcx
    .cfi_adjust_cfa_offset -8
    popq    %rax
    .cfi_adjust_cfa_offset -8
    popfq
    .cfi_adjust_cfa_offset -8
    ret     $128
    .cfi_endproc
    .size   ember_preempt_trampoline, .-ember_preempt_trampoline
#endif
    .section .note.GNU-stack,"",@progbits
