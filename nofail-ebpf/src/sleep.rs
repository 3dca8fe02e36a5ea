// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Retry sleeps. vmalloc's NOFAIL loops sleep with
//! `schedule_timeout_uninterruptible(1)`; open-coded loops such as XFS's
//! sleep with `memalloc_retry_wait()`, an inline around
//! `io_schedule_timeout()`. Inside a tracked call a sleep is a retry sleep
//! of that call (requested jiffies and time actually slept); between a NULL
//! return and the next call it belongs to a hand-made retry.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};

use crate::{
    maps::LAST_NULL,
    task::{current_call, current_tid, now_ns},
};

#[fentry(function = "schedule_timeout_uninterruptible")]
pub fn retry_sleep_fentry(ctx: FEntryContext) -> u32 {
    try_sleep_enter(ctx.arg::<i64>(0), true);
    0
}

#[fexit(function = "schedule_timeout_uninterruptible")]
pub fn retry_sleep_fexit(_ctx: FExitContext) -> u32 {
    try_sleep_exit();
    0
}

#[kprobe]
pub fn retry_sleep_kprobe(ctx: ProbeContext) -> u32 {
    try_sleep_enter(ctx.arg::<i64>(0).unwrap_or(0), true);
    0
}

#[kretprobe]
pub fn retry_sleep_kretprobe(_ctx: RetProbeContext) -> u32 {
    try_sleep_exit();
    0
}

#[fentry(function = "io_schedule_timeout")]
pub fn io_sleep_fentry(ctx: FEntryContext) -> u32 {
    try_sleep_enter(ctx.arg::<i64>(0), false);
    0
}

#[kprobe]
pub fn io_sleep_kprobe(ctx: ProbeContext) -> u32 {
    try_sleep_enter(ctx.arg::<i64>(0).unwrap_or(0), false);
    0
}

/// `in_call_sleep`: whether this sleep function is vmalloc's own retry
/// sleep (counted inside calls); io_schedule_timeout inside a call is
/// reclaim or I/O, not a retry.
fn try_sleep_enter(timeout: i64, in_call_sleep: bool) {
    if let Some(call) = current_call() {
        if in_call_sleep {
            unsafe {
                (*call).sleeps += 1;
                (*call).sleep_jiffies += timeout.max(0) as u32;
                (*call).sleep_start_ns = now_ns();
            }
        }
        return;
    }
    if let Some(last) = LAST_NULL.get_ptr_mut(current_tid()) {
        unsafe { (*last).sleeps += 1 };
    }
}

fn try_sleep_exit() {
    if let Some(call) = current_call() {
        unsafe {
            let start = (*call).sleep_start_ns;
            if start != 0 {
                (*call).slept_ns += now_ns().saturating_sub(start);
                (*call).sleep_start_ns = 0;
            }
        }
    }
}
