// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Feature probe, loaded but never attached: the verifier accepts a call to
//! `bpf_override_return()` only when the kernel has
//! `CONFIG_BPF_KPROBE_OVERRIDE` (error injection through kprobes).

use aya_ebpf::{helpers::bpf_override_return, macros::kprobe, programs::ProbeContext};

#[kprobe]
pub fn probe_override_return(ctx: ProbeContext) -> u32 {
    unsafe { bpf_override_return(ctx.regs.cast(), 0) };
    0
}
