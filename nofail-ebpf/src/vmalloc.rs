// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The vmalloc core: `__vmalloc_node_range_noprof()` (6.12, 7.x) or
//! `__vmalloc_node_range()` (6.1); userspace picks the symbol.
//!
//! ```c
//! void *__vmalloc_node_range_noprof(unsigned long size, unsigned long align,
//!         unsigned long start, unsigned long end, gfp_t gfp_mask,
//!         pgprot_t prot, unsigned long vm_flags, int node, const void *caller);
//! ```
//!
//! Entry opens the per-task call record the stage, page-table and sleep
//! programs fill in; exit folds it into the caller's aggregate. Nine
//! arguments: fentry needs a 6.6+ trampoline for that many, so 6.1 uses the
//! kprobe pair, which reads the stack-passed `caller` itself.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_pid_tgid, bpf_get_func_arg},
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RetProbeContext, tracing::StackIdContext,
    },
};
use nofail_common::{
    CallerStats, ChainKey, Health, Inflight, LastNull, NO_STACK, PT_LEVELS, log2_bucket,
};

use crate::{
    config::{chains_on, gfp_nofail, retry_window_ns, selected, what_if},
    maps::{LAST_NULL, LAST_NULL_NS, STACKS, caller_stats, chain_stats, health},
    regs,
    task::{claim_call, close_call, current_tid, find_call, now_ns, reset_call},
    whatif,
};

const ARG_SIZE: usize = 0;
const ARG_START: usize = 2;
const ARG_END: usize = 3;
const ARG_GFP: usize = 4;
const ARG_CALLER: usize = 8;

#[fentry(function = "__vmalloc_node_range_noprof")]
pub fn vmalloc_core_fentry(ctx: FEntryContext) -> u32 {
    // `const void *caller` cannot be read as ctx[8] before 6.13 (the verifier
    // only allowed pointers to structs); bpf_get_func_arg() works from 5.17.
    let mut caller = 0u64;
    unsafe { bpf_get_func_arg(ctx.as_ptr(), ARG_CALLER as u32, &mut caller) };
    // The trampoline's argument block: the same address for this
    // invocation's fentry and fexit, deeper for a nested invocation.
    let frame = ctx.as_ptr() as u64;
    let window = (ctx.arg(ARG_START), ctx.arg(ARG_END));
    try_enter(frame, ctx.arg(ARG_SIZE), ctx.arg(ARG_GFP), caller, window);
    0
}

#[fexit(function = "__vmalloc_node_range_noprof")]
pub fn vmalloc_core_fexit(ctx: FExitContext) -> u32 {
    try_exit(&ctx, ctx.as_ptr() as u64, 0, ctx.ret::<u64>().unwrap_or(0));
    0
}

#[kprobe]
pub fn vmalloc_core_kprobe(ctx: ProbeContext) -> u32 {
    let (Some(size), Some(gfp)) = (ctx.arg::<u64>(ARG_SIZE), ctx.arg::<u32>(ARG_GFP)) else {
        return 0;
    };
    let caller = regs::stack_arg(&ctx, ARG_CALLER).unwrap_or(0);
    let window = (
        ctx.arg::<u64>(ARG_START).unwrap_or(0),
        ctx.arg::<u64>(ARG_END).unwrap_or(u64::MAX),
    );
    // sp at entry: where the call's frame starts.
    let frame = regs::sp(ctx.regs);
    try_enter(frame, size, gfp, caller, window);
    0
}

#[kretprobe]
pub fn vmalloc_core_kretprobe(ctx: RetProbeContext) -> u32 {
    // After `ret`, sp sits one slot above the entry's: allow that slack.
    let frame = regs::sp(ctx.regs);
    try_exit(&ctx, frame, RET_SLACK, ctx.ret::<u64>());
    0
}

/// How far a kretprobe's stack pointer may sit above the entry's for the
/// same invocation; a nested invocation is hundreds of bytes deeper.
const RET_SLACK: u64 = 16;

#[inline(always)]
fn try_enter(frame: u64, size: u64, gfp: u32, caller: u64, (vstart, vend): (u64, u64)) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tid, tgid) = (pid_tgid as u32, (pid_tgid >> 32) as u32);
    let record = match find_call(tid) {
        Some(call) => {
            if frame < unsafe { (*call).frame } {
                // Recursion for the page array: same task, deeper frame.
                unsafe { (*call).depth += 1 };
                return;
            }
            // Not deeper: the recorded call returned without us seeing it
            // (a skipped run). Start over in its place rather than nest
            // under a ghost.
            health(Health::StaleReplaced);
            call
        }
        None => match claim_call(tid) {
            Some(slot) => slot,
            None => return,
        },
    };
    // Written in place, field by field: building the record on the stack
    // and copying it cost more than the rest of the program.
    reset_call(record);
    let call = unsafe { &mut *record };
    let now = now_ns();
    call.frame = frame;
    call.start_ns = now;
    call.caller = caller;
    call.size = size;
    call.gfp = gfp;
    call.tgid = tgid;
    call.tid = tid;
    call.vstart = vstart;
    call.vend = vend;
    // The task's name is read only when a --comm filter needs it now
    // (selected): the slow paths that send events take it then
    // (events.rs), and userspace reads /proc for a call in flight without
    // one.
    if !selected(tgid, &mut call.comm, caller, size, gfp) {
        call.ignored = 1;
        return;
    }
    if let Some(sleeps) = note_open_coded_retry(tid, caller, now) {
        call.open_coded_retry = 1;
        call.open_coded_retry_sleeps = sleeps;
    }
}

/// A call from the site that got NULL in this task moments ago is the
/// caller retrying by hand (xfs_buf_alloc_vmalloc() and friends). Counted
/// at once (a retry that never returns is still a retry); returns the
/// sleeps taken since the NULL.
#[inline(always)]
fn note_open_coded_retry(tid: u32, caller: u64, now: u64) -> Option<u32> {
    let newest = LAST_NULL_NS.get(0).copied().unwrap_or(u64::MAX);
    if now.saturating_sub(newest) > retry_window_ns() {
        return None;
    }
    let last = *unsafe { LAST_NULL.get(tid) }?;
    let _ = LAST_NULL.remove(tid);
    if last.caller != caller || now.saturating_sub(last.end_ns) > retry_window_ns() {
        return None;
    }
    if let Some(stats) = caller_stats(caller) {
        unsafe {
            (*stats).open_coded_retries += 1;
            (*stats).open_coded_retry_sleeps += last.sleeps as u64;
        }
    }
    Some(last.sleeps)
}

fn try_exit<C: StackIdContext>(ctx: &C, frame: u64, slack: u64, ret: u64) {
    let tid = current_tid();
    let Some(record) = find_call(tid) else {
        health(Health::OrphanExit);
        return;
    };
    let outer = unsafe { (*record).frame };
    if frame < outer {
        // The nested page-array call returning.
        unsafe {
            if (*record).depth > 0 {
                (*record).depth -= 1;
            }
        }
        return;
    }
    if frame > outer + slack {
        // Returning from a frame above the record's: its entry was not seen
        // and the record is stale.
        close_call(record);
        health(Health::OrphanExit);
        return;
    }
    // Read in place; the record is dropped once it is folded.
    let call = unsafe { &*record };
    whatif::release(call);
    if call.ignored != 0 {
        close_call(record);
        return;
    }
    let now = now_ns();
    if ret == 0 {
        let last = LastNull {
            caller: call.caller,
            end_ns: now,
            sleeps: 0,
            _pad: 0,
        };
        let _ = LAST_NULL.insert(tid, last, 0);
        if let Some(newest) = LAST_NULL_NS.get_ptr_mut(0) {
            unsafe { *newest = now };
        }
    }
    let latency = now.saturating_sub(call.start_ns);
    if let Some(stats) = caller_stats(call.caller) {
        fold(unsafe { &mut *stats }, call, ret, latency);
    }
    if chains_on() && matters(call, ret) {
        // Still in the caller's context: the stack shows who is behind it.
        // Taken only here, on calls that matter, so a call that went well
        // costs one map lookup.
        let stack_id = match ctx.get_stackid(&STACKS, 0) {
            Ok(id) => id as u32,
            Err(_) => {
                health(Health::StackLost);
                NO_STACK
            }
        };
        let key = ChainKey {
            caller: call.caller,
            stack_id,
            _pad: 0,
        };
        if let Some(stats) = chain_stats(&key) {
            fold_chain(unsafe { &mut *stats }, call, ret);
        }
    }
    close_call(record);
}

/// NOFAIL, failed in a stage, returned NULL, slept, or retried by hand:
/// the calls `--chains` attributes to a call chain.
#[inline(always)]
fn matters(call: &Inflight, ret: u64) -> bool {
    call.gfp & gfp_nofail() != 0
        || ret == 0
        || call.area_failures != 0
        || call.mapping_failures != 0
        || call.sleeps != 0
        || call.open_coded_retry != 0
}

/// Adds one call that mattered to a `--chains` aggregate: its counters
/// only (no histograms or maxima), so the exit program stays small enough
/// for the verifier to walk.
#[inline(always)]
fn fold_chain(stats: &mut CallerStats, call: &Inflight, ret: u64) {
    let nofail = (call.gfp & gfp_nofail() != 0) as u64;
    let (area, mapping) = (call.area_failures as u64, call.mapping_failures as u64);
    stats.calls += 1;
    stats.nofail_calls += nofail;
    stats.area_retries += area * nofail;
    stats.mapping_retries += mapping * nofail;
    stats.null_returns += (ret == 0) as u64;
    stats.area_failures += area;
    stats.mapping_failures += mapping;
    stats.sleeps += call.sleeps as u64;
    stats.slept_ns += call.slept_ns;
    stats.injected += call.injected as u64;
    // Caller rows count a retry by hand at its entry; a chain learns of
    // it here.
    stats.open_coded_retries += call.open_coded_retry as u64;
    stats.open_coded_retry_sleeps += call.open_coded_retry_sleeps as u64;
}

/// Adds one finished call to an aggregate.
#[inline(always)]
fn fold(stats: &mut CallerStats, call: &Inflight, ret: u64, latency: u64) {
    let nofail = call.gfp & gfp_nofail() != 0;
    stats.calls += 1;
    stats.latency_ns += latency;
    if nofail {
        stats.nofail_calls += 1;
    }
    if ret == 0 {
        stats.null_returns += 1;
    }
    if let Some(b) = stats.latency_hist.get_mut(log2_bucket(latency)) {
        *b += 1;
    }
    if quiet(call) {
        // Nothing failed, slept or was injected (almost every call): no
        // retries and no sleep, bucket 0 of each, and no sum to add to.
        stats.retries_hist[0] += 1;
        stats.slept_hist[0] += 1;
        if what_if() && nofail {
            stats.whatif_hist[0] += 1;
        }
        return;
    }
    fold_eventful(stats, call, nofail);
}

/// No stage failure, page-table failure, sleep or injection in this call:
/// every slow-path counter of the record is still 0.
#[inline(always)]
fn quiet(call: &Inflight) -> bool {
    let mut any = call.area_failures | call.mapping_failures | call.sleeps | call.injected;
    for level in 0..PT_LEVELS {
        any |= call.pt_failures[level];
    }
    any == 0
}

/// The rest of `fold` for a call in which something failed or slept.
#[inline(always)]
fn fold_eventful(stats: &mut CallerStats, call: &Inflight, nofail: bool) {
    let (area, mapping) = (call.area_failures as u64, call.mapping_failures as u64);
    // A failed stage turns the loop again only under __GFP_NOFAIL; without
    // it the failure is the NULL returned.
    let retries = if nofail { area + mapping } else { 0 };
    if nofail {
        stats.area_retries += area;
        stats.mapping_retries += mapping;
    }
    stats.area_failures += area;
    stats.mapping_failures += mapping;
    for level in 0..PT_LEVELS {
        stats.pt_failures[level] += call.pt_failures[level] as u64;
    }
    stats.sleeps += call.sleeps as u64;
    stats.injected += call.injected as u64;
    if call.slept_ns > stats.max_slept_ns {
        stats.max_slept_ns = call.slept_ns;
    }
    stats.sleep_jiffies += call.sleep_jiffies as u64;
    stats.slept_ns += call.slept_ns;
    if retries > stats.max_retries {
        stats.max_retries = retries;
    }
    if let Some(b) = stats.retries_hist.get_mut(log2_bucket(retries)) {
        *b += 1;
    }
    if let Some(b) = stats.slept_hist.get_mut(log2_bucket(call.slept_ns)) {
        *b += 1;
    }
    if what_if() && nofail {
        stats.futile_retries += call.futile as u64;
        stats.freed_retries += call.freed as u64;
        stats.wake_delay_ns += call.wake_delay_ns;
        stats.whatif_slept_ns += call.whatif_ns;
        if let Some(b) = stats.whatif_hist.get_mut(log2_bucket(call.whatif_ns)) {
            *b += 1;
        }
    }
}
