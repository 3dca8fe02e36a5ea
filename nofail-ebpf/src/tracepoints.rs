//! Tracepoint mode (`--mode tracepoint`): for kernels that refuse kprobes
//! and fentry but attach raw tracepoints. No hook sees vmalloc's arguments,
//! so the caller comes from the stack (frames.rs):
//!
//! * `vmalloc:alloc_vmap_area` (`alloc_vmap_area()`, once per vmap area,
//!   `failed` set when no range was found): vmap areas per caller and the
//!   area failures the kernel reports;
//! * `timer:timer_start` with `process_timeout` (the timer of
//!   `schedule_timeout()`) called from `schedule_timeout_uninterruptible()`
//!   called from vmalloc: a NOFAIL retry sleep, of the mapping stage when the
//!   call already got its vmap area (or the sleep is in an out-of-line
//!   `__vmalloc_area_node`), of the area stage otherwise;
//! * `timer:timer_cancel` (`detach_timer()`, on expiry and on deletion): the
//!   end of that sleep.

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_comm, bpf_jiffies64, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use nofail_common::{Health, TpSleep, TpTask};

use crate::{
    config::selected,
    frames::{self, Call},
    maps::{TP_SLEEPS, TP_TASKS, caller_stats, health},
    task::{current_tgid, current_tid, now_ns},
};

/// `process_timeout`, the function of every `schedule_timeout()` timer.
#[unsafe(no_mangle)]
static PROCESS_TIMEOUT: u64 = 0;
/// `struct timer_list` member offsets (BTF; x86-64 defaults).
#[unsafe(no_mangle)]
static TIMER_EXPIRES_OFF: u64 = 16;
#[unsafe(no_mangle)]
static TIMER_FUNCTION_OFF: u64 = 24;

#[inline(always)]
fn global(g: &u64) -> u64 {
    unsafe { core::ptr::read_volatile(g) }
}

#[raw_tracepoint(tracepoint = "alloc_vmap_area")]
pub fn vmap_area_tp(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(addr, size, align, vstart, vend, int failed)
    let size: u64 = ctx.arg(1);
    let failed: u64 = ctx.arg(5);
    try_vmap_area(&ctx, size, failed as u32 != 0);
    0
}

#[raw_tracepoint(tracepoint = "timer_start")]
pub fn sleep_start_tp(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    try_sleep_start(&ctx, timer);
    0
}

#[raw_tracepoint(tracepoint = "timer_cancel")]
pub fn sleep_end_tp(ctx: RawTracePointContext) -> i32 {
    let timer: u64 = ctx.arg(0);
    try_sleep_end(timer);
    0
}

/// The vmalloc call this event belongs to, when it is one nofail follows
/// (not its own process, selected by the filters).
#[inline(always)]
fn tracked_call(ctx: &RawTracePointContext, size: u64) -> Option<(Call, [u64; frames::FRAMES])> {
    let tgid = current_tgid();
    let frames = frames::stack(ctx.as_ptr());
    let call = frames::vmalloc_call(&frames, frames::address_of(ctx.as_ptr()))?;
    if call.caller == 0 {
        health(Health::CallerUnread);
        return None;
    }
    let comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // The gfp mask is not visible here (--nofail-only is refused).
    if !selected(tgid, &comm, call.caller, size, 0) {
        return None;
    }
    Some((call, frames))
}

fn try_vmap_area(ctx: &RawTracePointContext, size: u64, failed: bool) {
    let Some((call, _)) = tracked_call(ctx, size) else {
        return;
    };
    // The page array of a large call is a vmalloc of its own, with the
    // outer call's caller: counted with the outer call, as the full mode does.
    if call.nested {
        return;
    }
    if let Some(stats) = caller_stats(call.caller) {
        unsafe {
            (*stats).calls += 1;
            if failed {
                (*stats).area_failures += 1;
            }
        }
    }
    let task = TpTask {
        slot: call.slot,
        area_ok: !failed as u32,
        area_failed: failed as u32,
    };
    let _ = TP_TASKS.insert(current_tid(), task, 0);
}

fn try_sleep_start(ctx: &RawTracePointContext, timer: u64) {
    // Every timer start passes here: decide on the timer's function first.
    let function =
        unsafe { bpf_probe_read_kernel((timer + global(&TIMER_FUNCTION_OFF)) as *const u64) };
    if function.ok() != Some(global(&PROCESS_TIMEOUT)) || global(&PROCESS_TIMEOUT) == 0 {
        return;
    }
    let Some((call, frames)) = tracked_call(ctx, u64::MAX) else {
        return;
    };
    // Only vmalloc's own sleep: the frame below vmalloc's first is
    // schedule_timeout_uninterruptible (reclaim sleeping inside a call is
    // not a retry).
    let below = match call.first.checked_sub(1) {
        Some(i) => frames.get(i).copied().unwrap_or(0),
        None => 0,
    };
    if !frames::in_sleep(below) {
        return;
    }
    let site = frames.get(call.first).copied().unwrap_or(0);
    let tid = current_tid();
    let mut task = match unsafe { TP_TASKS.get(tid) } {
        Some(t) if t.slot == call.slot => *t,
        _ => TpTask {
            slot: call.slot,
            ..Default::default()
        },
    };
    let mapping = frames::in_area_node(site) || task.area_ok != 0;
    let expires =
        unsafe { bpf_probe_read_kernel((timer + global(&TIMER_EXPIRES_OFF)) as *const u64) }
            .unwrap_or(0);
    let jiffies = expires.saturating_sub(unsafe { bpf_jiffies64() });
    if let Some(stats) = caller_stats(call.caller) {
        let s = unsafe { &mut *stats };
        s.sleeps += 1;
        s.sleep_jiffies += jiffies;
        // Every NOFAIL turn of either loop sleeps once: a sleep is a retry,
        // and a failure of its stage unless the kernel already reported
        // that failure (alloc_vmap_area's `failed`).
        if mapping {
            s.mapping_retries += 1;
            s.mapping_failures += 1;
        } else {
            s.area_retries += 1;
            if task.area_failed == 0 {
                s.area_failures += 1;
            }
        }
    }
    task.area_failed = 0;
    if !mapping {
        task.area_ok = 0;
    }
    let _ = TP_TASKS.insert(tid, task, 0);
    let sleep = TpSleep {
        start_ns: now_ns(),
        caller: call.caller,
    };
    let _ = TP_SLEEPS.insert(timer, sleep, 0);
}

fn try_sleep_end(timer: u64) {
    let Some(sleep) = (unsafe { TP_SLEEPS.get(timer) }).copied() else {
        return;
    };
    let _ = TP_SLEEPS.remove(timer);
    if let Some(stats) = caller_stats(sleep.caller) {
        unsafe { (*stats).slept_ns += now_ns().saturating_sub(sleep.start_ns) };
    }
}
