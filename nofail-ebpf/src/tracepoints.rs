// SPDX-License-Identifier: MIT OR GPL-2.0-only
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
//!   end of that sleep;
//! * `vmalloc:free_vmap_area_noflush`: the task freeing its last call's
//!   area ends that call, so the next call from the same stack frame does
//!   not look as if it had its area already (a call whose area is kept
//!   still can, if the next one fails allocating its `vm_struct`).

use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_current_comm, bpf_jiffies64, bpf_probe_read_kernel},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use nofail_common::{Health, Inflight, TP_LOOP_GAP_NS, TpSleep, TpTask};

use crate::{
    frames::{self, Call},
    maps::{INFLIGHT, SCRATCH_INFLIGHT, TP_SLEEPS, TP_TASKS, caller_stats, health},
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
    let addr: u64 = ctx.arg(0);
    let size: u64 = ctx.arg(1);
    let failed: u64 = ctx.arg(5);
    try_vmap_area(&ctx, addr, size, failed as u32 != 0);
    0
}

#[raw_tracepoint(tracepoint = "free_vmap_area_noflush")]
pub fn vmap_free_tp(ctx: RawTracePointContext) -> i32 {
    // TP_PROTO(va_start, nr_lazy, nr_lazy_max)
    let va_start: u64 = ctx.arg(0);
    try_vmap_free(va_start);
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

/// The vmalloc call of this event, when nofail follows it. The gfp mask is
/// not visible here (--nofail-only is refused in this mode).
#[inline(always)]
fn tracked_call(ctx: &RawTracePointContext, size: u64, retry_sleep: bool) -> Option<Call> {
    let from = frames::address_of(ctx.as_ptr());
    frames::tracked_call(ctx.as_ptr(), from, retry_sleep, size, 0, 0)
}

fn try_vmap_area(ctx: &RawTracePointContext, addr: u64, size: u64, failed: bool) {
    let Some(call) = tracked_call(ctx, size, false) else {
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
        addr: if failed { 0 } else { addr },
        area_ok: !failed as u32,
        area_failed: failed as u32,
    };
    let _ = TP_TASKS.insert(current_tid(), task, 0);
}

/// The task freed the vmap area of its last call: that call is over.
fn try_vmap_free(va_start: u64) {
    if let Some(task) = TP_TASKS.get_ptr_mut(current_tid()) {
        unsafe {
            if (*task).addr == va_start && va_start != 0 {
                (*task).addr = 0;
                (*task).area_ok = 0;
            }
        }
    }
}

fn try_sleep_start(ctx: &RawTracePointContext, timer: u64) {
    // Every timer start passes here: decide on the timer's function first.
    let function =
        unsafe { bpf_probe_read_kernel((timer + global(&TIMER_FUNCTION_OFF)) as *const u64) };
    if function.ok() != Some(global(&PROCESS_TIMEOUT)) || global(&PROCESS_TIMEOUT) == 0 {
        return;
    }
    // Before the stack walk: a tick during it (slow under QEMU TCG, and
    // preemptible on 7.2), the likely cause, made a 1-jiffy sleep read as
    // 0 jiffies asked once in `tracepoint_mode_matches_full`.
    let now_jiffies = unsafe { bpf_jiffies64() };
    let Some(call) = tracked_call(ctx, u64::MAX, true) else {
        return;
    };
    let site = frames::frame(call.first);
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
    let jiffies = expires.saturating_sub(now_jiffies);
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
    let now = now_ns();
    note_looping(tid, call.caller, mapping, now);
    let sleep = TpSleep {
        start_ns: now,
        caller: call.caller,
        tid,
        _pad: 0,
    };
    let _ = TP_SLEEPS.insert(timer, sleep, 0);
}

/// Keeps the task's loop in `INFLIGHT` (the report's calls in flight and
/// STUCK): a run of retry sleeps from one caller, each within
/// `TP_LOOP_GAP_NS` of the last; its age counts from the first sleep.
#[inline(never)]
fn note_looping(tid: u32, caller: u64, mapping: bool, now: u64) {
    if let Some(call) = INFLIGHT.get_ptr_mut(tid) {
        let c = unsafe { &mut *call };
        if c.caller == caller && now.saturating_sub(c.sleep_start_ns) < TP_LOOP_GAP_NS {
            c.sleeps += 1;
            c.sleep_start_ns = now;
            if mapping {
                c.mapping_failures += 1;
            } else {
                c.area_failures += 1;
            }
            return;
        }
    }
    let Some(call) = SCRATCH_INFLIGHT.get_ptr_mut(0) else {
        return;
    };
    let c = unsafe { &mut *call };
    *c = Inflight::default();
    c.start_ns = now;
    c.caller = caller;
    c.tgid = current_tgid();
    c.tid = tid;
    c.sleeps = 1;
    c.sleep_start_ns = now;
    c.area_failures = !mapping as u32;
    c.mapping_failures = mapping as u32;
    c.comm = bpf_get_current_comm().unwrap_or([0; 16]);
    // By reference: a copy would put the struct back on the stack.
    #[allow(clippy::needless_borrows_for_generic_args)]
    if INFLIGHT.insert(tid, &*c, 0).is_err() {
        health(Health::InflightFull);
    }
}

fn try_sleep_end(timer: u64) {
    let Some(sleep) = (unsafe { TP_SLEEPS.get(timer) }).copied() else {
        return;
    };
    let _ = TP_SLEEPS.remove(timer);
    let slept = now_ns().saturating_sub(sleep.start_ns);
    if let Some(stats) = caller_stats(sleep.caller) {
        unsafe { (*stats).slept_ns += slept };
    }
    if let Some(call) = INFLIGHT.get_ptr_mut(sleep.tid) {
        unsafe { (*call).slept_ns += slept };
    }
}
