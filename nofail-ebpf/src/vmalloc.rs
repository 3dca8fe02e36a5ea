//! The vmalloc core: `__vmalloc_node_range_noprof()` (6.12, 7.x) or
//! `__vmalloc_node_range()` (6.1); userspace picks the symbol.
//!
//! ```c
//! void *__vmalloc_node_range_noprof(unsigned long size, unsigned long align,
//!         unsigned long start, unsigned long end, gfp_t gfp_mask,
//!         pgprot_t prot, unsigned long vm_flags, int node, const void *caller);
//! ```
//!
//! Nine arguments: fentry needs a 6.6+ trampoline for that many, so 6.1 uses
//! the kprobe pair, which reads the stack-passed `caller` itself.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_func_arg, bpf_ktime_get_ns, bpf_probe_read_kernel,
    },
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use nofail_common::{Health, Inflight};

use crate::{
    config::gfp_nofail,
    maps::{INFLIGHT, caller_stats, health},
};

const ARG_SIZE: usize = 0;
const ARG_GFP: usize = 4;
const ARG_CALLER: usize = 8;

#[fentry(function = "__vmalloc_node_range_noprof")]
pub fn vmalloc_core_fentry(ctx: FEntryContext) -> u32 {
    // `const void *caller` cannot be read as ctx[8] before 6.13 (the verifier
    // only allowed pointers to structs); bpf_get_func_arg() works from 5.17.
    let mut caller = 0u64;
    unsafe { bpf_get_func_arg(ctx.as_ptr(), ARG_CALLER as u32, &mut caller) };
    try_enter(ctx.arg(ARG_SIZE), ctx.arg(ARG_GFP), caller);
    0
}

#[fexit(function = "__vmalloc_node_range_noprof")]
pub fn vmalloc_core_fexit(ctx: FExitContext) -> u32 {
    try_exit(ctx.ret::<u64>().unwrap_or(0));
    0
}

#[kprobe]
pub fn vmalloc_core_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(size), Some(gfp)) = (ctx.arg::<u64>(ARG_SIZE), ctx.arg::<u32>(ARG_GFP)) else {
        return 0;
    };
    let caller = stack_arg(&ctx, ARG_CALLER).unwrap_or(0);
    try_enter(size, gfp, caller);
    0
}

#[kretprobe]
pub fn vmalloc_core_kretprobe(ctx: RetProbeContext) -> u32 {
    try_exit(ctx.ret::<u64>());
    0
}

/// x86-64 SysV: arguments 6+ are on the stack above the return address, and
/// a kprobe at function entry sees `sp` pointing at that return address.
#[inline(always)]
fn stack_arg(ctx: &ProbeContext, n: usize) -> Option<u64> {
    let sp = unsafe { (*ctx.regs).rsp };
    let addr = sp + 8 * (n as u64 - 5);
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.ok()
}

#[inline(always)]
fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

fn try_enter(size: u64, gfp: u32, caller: u64) {
    let tid = current_tid();
    if let Some(call) = INFLIGHT.get_ptr_mut(tid) {
        // Recursion for the page array: same task, already inside the core.
        unsafe { (*call).depth += 1 };
        return;
    }
    let call = Inflight {
        start_ns: unsafe { bpf_ktime_get_ns() },
        caller,
        size,
        gfp,
        depth: 0,
    };
    if INFLIGHT.insert(tid, call, 0).is_err() {
        health(Health::InflightFull);
    }
}

fn try_exit(ret: u64) {
    let tid = current_tid();
    let Some(call) = INFLIGHT.get_ptr_mut(tid) else {
        health(Health::OrphanExit);
        return;
    };
    let call = unsafe {
        if (*call).depth > 0 {
            (*call).depth -= 1;
            return;
        }
        *call
    };
    let _ = INFLIGHT.remove(tid);
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(stats) = caller_stats(call.caller) else {
        return;
    };
    unsafe {
        (*stats).calls += 1;
        if call.gfp & gfp_nofail() != 0 {
            (*stats).nofail_calls += 1;
        }
        if ret == 0 {
            (*stats).null_returns += 1;
        }
        (*stats).latency_ns += now.saturating_sub(call.start_ns);
    }
}
