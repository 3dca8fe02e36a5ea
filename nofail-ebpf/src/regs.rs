// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! A kprobe's registers, per architecture: the stack pointer, the probed
//! address and the arguments the calling convention puts on the stack.
//! aya's `pt_regs` is the kernel's `struct pt_regs` on x86-64 and its
//! leading `struct user_pt_regs` on arm64 (`regs[31]`, `sp`, `pc`).

use aya_ebpf::{bindings::pt_regs, helpers::bpf_probe_read_kernel, programs::ProbeContext};

/// The stack pointer.
#[inline(always)]
pub fn sp(regs: *const pt_regs) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    return unsafe { (*regs).rsp };
    #[cfg(bpf_target_arch = "aarch64")]
    return unsafe { (*regs).sp };
}

/// The probed address (a kprobe reports its function's address plus the
/// breakpoint's length on x86-64; the function's address on arm64).
#[inline(always)]
pub fn ip(regs: *const pt_regs) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    return unsafe { (*regs).rip };
    #[cfg(bpf_target_arch = "aarch64")]
    return unsafe { (*regs).pc };
}

/// Arguments passed in registers; the rest are on the stack.
#[cfg(bpf_target_arch = "x86_64")]
const REG_ARGS: u64 = 6;
#[cfg(bpf_target_arch = "aarch64")]
const REG_ARGS: u64 = 8;

/// Where the first stack argument sits above `sp` at function entry:
/// above the return address `call` pushed on x86-64 (SysV); at `sp`
/// itself on arm64 (AAPCS64: the return address is in the link register).
#[cfg(bpf_target_arch = "x86_64")]
const FIRST_STACK_ARG: u64 = 8;
#[cfg(bpf_target_arch = "aarch64")]
const FIRST_STACK_ARG: u64 = 0;

/// Argument `n` (from 0, at least [`REG_ARGS`]) of a kprobe at function
/// entry, read from the stack.
#[inline(always)]
pub fn stack_arg(ctx: &ProbeContext, n: usize) -> Option<u64> {
    let addr = sp(ctx.regs) + FIRST_STACK_ARG + 8 * (n as u64 - REG_ARGS);
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
}

/// A kprobe at function entry: the return address into the function's
/// caller while it is still in a register, which the stack walk misses.
/// arm64: the link register. bpf_get_stack() there walks frame records
/// from x29, which at entry is still the caller's: the caller's own
/// return address into the function is in no record yet, so the caller is
/// absent from the walk. x86-64: 0 (`call` pushed it, and the walk has
/// it).
#[inline(always)]
pub fn entry_link(ctx: &ProbeContext) -> u64 {
    #[cfg(bpf_target_arch = "x86_64")]
    {
        let _ = ctx;
        0
    }
    #[cfg(bpf_target_arch = "aarch64")]
    return unsafe { (*ctx.regs).regs[30] };
}
