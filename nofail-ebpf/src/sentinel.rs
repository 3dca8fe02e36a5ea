// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Sentinel mode (`--mode sentinel`): only vmalloc's slow paths are hooked,
//! so a call that does not fail runs no nofail program at all.
//!
//! * `warn_alloc()` with a `"vmalloc error: size %lu, "` message: every stage
//!   failure vmalloc reports (`vm_struct allocation failed` is the area
//!   stage, NOFAIL or not; `failed to map pages` the mapping stage of a
//!   plain call; the others: pages, page array, size). gfp (argument 0)
//!   tells a NOFAIL retry from a NULL returned.
//! * `schedule_timeout_uninterruptible()` called from vmalloc: a NOFAIL
//!   retry sleep; the area stage's when `warn_alloc` reported an area
//!   failure of the same call just before (the area loop warns, then
//!   sleeps), the mapping stage's otherwise (that loop sleeps silently).
//! * the same sleep elsewhere, or `io_schedule_timeout()` (memalloc_retry_wait),
//!   after a NULL in the same task: a retry by hand.
//!
//! The caller is read from the stack (frames.rs), as in tracepoint mode.

use aya_ebpf::{
    EbpfContext as _,
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use nofail_common::{LastNull, TpSleep, TpTask};

use crate::{
    config::{gfp_nofail, retry_window_ns},
    frames::{self, Call},
    maps::{LAST_NULL, SENTINEL_SLEEPS, TP_TASKS, caller_stats},
    regs,
    stages::{Failure, classify},
    task::{current_tid, now_ns},
};

/// The kprobe on all three slow-path functions, told apart by the probed
/// address: one program instead of three, because each loaded program
/// (and each of its subprograms) keeps an image in a vmalloc area all
/// run, and what nofail holds there reshapes the free-area tree every
/// vmalloc call searches (`alloc_vmap_area()`: +65 instructions per
/// 8 KiB call in the bare test guest with 11 such areas;
/// docs/benchmark-history.md).
#[kprobe]
pub fn sentinel_slow_path(ctx: ProbeContext) -> u32 {
    // A kprobe reports the probed function's address plus the breakpoint.
    let ip = regs::ip(ctx.regs);
    if frames::in_warn(ip) {
        // void warn_alloc(gfp_t gfp_mask, nodemask_t *nodemask, const char *fmt, ...)
        if let (Some(gfp), Some(fmt)) = (ctx.arg::<u32>(0), ctx.arg::<u64>(2)) {
            try_warn(&ctx, gfp, fmt);
        }
    } else if frames::in_sleep(ip) {
        // schedule_timeout_uninterruptible(long timeout)
        try_sleep(&ctx, ctx.arg::<i64>(0).unwrap_or(0));
    } else {
        // io_schedule_timeout(long timeout)
        note_open_coded_retry_sleep(current_tid());
    }
    0
}

#[kretprobe]
pub fn sentinel_sleep_ret(_ctx: RetProbeContext) -> u32 {
    try_sleep_ret();
    0
}

/// The vmalloc call of a kprobe event, when nofail follows it (the size
/// is not visible: --min-size is refused in this mode).
#[inline(always)]
fn tracked(ctx: &ProbeContext, gfp: u32, retry_sleep: bool) -> Option<Call> {
    let from = regs::sp(ctx.regs);
    let link = regs::entry_link(ctx);
    frames::tracked_call(ctx.as_ptr(), from, retry_sleep, u64::MAX, gfp, link)
}

fn try_warn(ctx: &ProbeContext, gfp: u32, fmt: u64) {
    let Some(failure) = classify(fmt) else {
        return;
    };
    let Some(call) = tracked(ctx, gfp, false) else {
        return;
    };
    let tid = current_tid();
    let nofail = gfp & gfp_nofail() != 0;
    let Some(stats) = caller_stats(call.caller) else {
        return;
    };
    let s = unsafe { &mut *stats };
    // A NOFAIL failure turns the loop (the area stage; NOFAIL mapping
    // failures do not warn); any other is the NULL the caller gets.
    let null = !nofail;
    match failure {
        Failure::Area => {
            s.area_failures += 1;
            if nofail {
                s.area_retries += 1;
                let task = TpTask {
                    slot: call.slot,
                    area_failed: 1,
                    ..Default::default()
                };
                let _ = TP_TASKS.insert(tid, task, 0);
            }
        }
        Failure::Mapping => s.mapping_failures += 1,
        Failure::Other => {}
    }
    if null {
        s.null_returns += 1;
        let last = LastNull {
            caller: call.caller,
            end_ns: now_ns(),
            sleeps: 0,
            _pad: 0,
        };
        let _ = LAST_NULL.insert(tid, last, 0);
    }
}

fn try_sleep(ctx: &ProbeContext, timeout: i64) {
    let tid = current_tid();
    let Some(call) = tracked(ctx, gfp_nofail(), true) else {
        // Not vmalloc's own sleep: maybe a caller's loop after a NULL.
        note_open_coded_retry_sleep(tid);
        return;
    };
    let area = matches!(unsafe { TP_TASKS.get(tid) }, Some(t) if t.slot == call.slot && t.area_failed != 0);
    if area {
        let _ = TP_TASKS.remove(tid);
    }
    if let Some(stats) = caller_stats(call.caller) {
        let s = unsafe { &mut *stats };
        s.sleeps += 1;
        s.sleep_jiffies += timeout.max(0) as u64;
        if !area {
            // The area stage's retry was counted at its warning.
            s.mapping_failures += 1;
            s.mapping_retries += 1;
        }
    }
    let sleep = TpSleep {
        start_ns: now_ns(),
        caller: call.caller,
        tid,
        _pad: 0,
    };
    let _ = SENTINEL_SLEEPS.insert(tid, sleep, 0);
}

fn try_sleep_ret() {
    let tid = current_tid();
    let Some(sleep) = (unsafe { SENTINEL_SLEEPS.get(tid) }).copied() else {
        return;
    };
    let _ = SENTINEL_SLEEPS.remove(tid);
    if let Some(stats) = caller_stats(sleep.caller) {
        unsafe { (*stats).slept_ns += now_ns().saturating_sub(sleep.start_ns) };
    }
}

/// A sleep soon after a NULL in the same task: the caller retrying by
/// hand (counted at its first sleep; the full mode counts it at the next
/// call instead, the same number when every retry sleeps first).
#[inline(always)]
fn note_open_coded_retry_sleep(tid: u32) {
    let Some(last) = LAST_NULL.get_ptr_mut(tid) else {
        return;
    };
    let last = unsafe { &mut *last };
    if now_ns().saturating_sub(last.end_ns) > retry_window_ns() {
        let _ = LAST_NULL.remove(tid);
        return;
    }
    if let Some(stats) = caller_stats(last.caller) {
        unsafe {
            if last.sleeps == 0 {
                (*stats).open_coded_retries += 1;
            }
            (*stats).open_coded_retry_sleeps += 1;
        }
    }
    last.sleeps += 1;
}
