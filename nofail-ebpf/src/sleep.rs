// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Retry sleeps. vmalloc's NOFAIL loops sleep with
//! `schedule_timeout_uninterruptible(1)` right after a failed stage, so a
//! retry sleep also tells a NOFAIL mapping failure, which nothing else
//! reports (stages.rs); open-coded loops such as XFS's
//! sleep with `memalloc_retry_wait()`, an inline around
//! `io_schedule_timeout()`. Inside a tracked call a sleep is a retry sleep
//! of that call (requested jiffies and time actually slept); between a NULL
//! return and the next call it belongs to a hand-made retry.

use aya_ebpf::{
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{
        FEntryContext, FExitContext, ProbeContext, RetProbeContext, tracing::StackIdContext,
    },
};

use nofail_common::{EVENT_RETRY, EVENT_STUCK, Inflight, STAGE_MAPPING};

use crate::{
    events::{self, Detail},
    frames,
    maps::LAST_NULL,
    regs,
    task::{current_call, current_tid, now_ns},
    whatif,
};

#[fentry(function = "schedule_timeout_uninterruptible")]
pub fn retry_sleep_fentry(ctx: FEntryContext) -> u32 {
    try_sleep_enter(&ctx, ctx.arg::<i64>(0), true, 0);
    0
}

#[fexit(function = "schedule_timeout_uninterruptible")]
pub fn retry_sleep_fexit(_ctx: FExitContext) -> u32 {
    try_sleep_exit();
    0
}

#[kprobe]
pub fn retry_sleep_kprobe(ctx: ProbeContext) -> u32 {
    try_sleep_enter(
        &ctx,
        ctx.arg::<i64>(0).unwrap_or(0),
        true,
        regs::entry_link(&ctx),
    );
    0
}

#[kretprobe]
pub fn retry_sleep_kretprobe(_ctx: RetProbeContext) -> u32 {
    try_sleep_exit();
    0
}

/// With testing/patches/vmalloc-nofail-event-wait.patch the area stage
/// waits in `vmap_nofail_wait(start, end)` for vmap space to be freed
/// instead (a retry sleep all the same, after the failure report). Its
/// timeout is no argument: no jiffies asked are counted for it.
#[fentry(function = "vmap_nofail_wait")]
pub fn event_wait_fentry(ctx: FEntryContext) -> u32 {
    try_sleep_enter(&ctx, 0, true, 0);
    0
}

#[fexit(function = "vmap_nofail_wait")]
pub fn event_wait_fexit(_ctx: FExitContext) -> u32 {
    try_sleep_exit();
    0
}

#[kprobe]
pub fn event_wait_kprobe(ctx: ProbeContext) -> u32 {
    try_sleep_enter(&ctx, 0, true, regs::entry_link(&ctx));
    0
}

#[kretprobe]
pub fn event_wait_kretprobe(_ctx: RetProbeContext) -> u32 {
    try_sleep_exit();
    0
}

#[fentry(function = "io_schedule_timeout")]
pub fn io_sleep_fentry(ctx: FEntryContext) -> u32 {
    try_sleep_enter(&ctx, ctx.arg::<i64>(0), false, 0);
    0
}

#[kprobe]
pub fn io_sleep_kprobe(ctx: ProbeContext) -> u32 {
    try_sleep_enter(
        &ctx,
        ctx.arg::<i64>(0).unwrap_or(0),
        false,
        regs::entry_link(&ctx),
    );
    0
}

/// `in_call_sleep`: whether this sleep function is vmalloc's own retry
/// sleep (counted inside calls); io_schedule_timeout inside a call is
/// reclaim or I/O, not a retry.
/// `link`: `regs::entry_link` of a kprobe, 0 for the other hooks.
fn try_sleep_enter<C: StackIdContext>(ctx: &C, timeout: i64, in_call_sleep: bool, link: u64) {
    if let Some(call) = current_call() {
        if in_call_sleep && frames::is_retry_sleep(ctx.as_ptr(), link) {
            let call = unsafe { &mut *call };
            if call.area_warned != 0 {
                // The area failure warn_alloc reported (stages.rs).
                call.area_warned = 0;
            } else {
                // The mapping loop retries without a report.
                call.mapping_failures += 1;
                call.failed_stage = STAGE_MAPPING;
                whatif::arm(call, STAGE_MAPPING);
            }
            let now = now_ns();
            call.sleeps += 1;
            call.sleep_jiffies += timeout.max(0) as u32;
            call.sleep_start_ns = now;
            retry_events(ctx, call, timeout.max(0) as u64, now);
        }
        return;
    }
    if let Some(last) = LAST_NULL.get_ptr_mut(current_tid()) {
        unsafe { (*last).sleeps += 1 };
    }
}

/// `--events`: the retry sleep, and the call turning STUCK at the first
/// retry sleep past --stuck-after.
#[inline(always)]
fn retry_events<C: StackIdContext>(ctx: &C, call: &mut Inflight, jiffies: u64, now: u64) {
    if events::wanted(EVENT_RETRY) {
        let detail = Detail {
            kind: EVENT_RETRY,
            stage: call.failed_stage,
            attempt: call.sleeps,
            reason: 0,
            seq: 0,
            spent: jiffies,
        };
        events::send(ctx, call, detail);
    }
    if events::wanted(EVENT_STUCK)
        && call.stuck_noted == 0
        && now.saturating_sub(call.start_ns) >= events::stuck_after_ns()
    {
        call.stuck_noted = 1;
        let detail = Detail {
            kind: EVENT_STUCK,
            stage: call.failed_stage,
            attempt: call.sleeps,
            reason: 0,
            seq: (call.area_failures + call.mapping_failures) as u64,
            spent: now.saturating_sub(call.start_ns),
        };
        events::send(ctx, call, detail);
    }
}

fn try_sleep_exit() {
    if let Some(call) = current_call() {
        let call = unsafe { &mut *call };
        let start = call.sleep_start_ns;
        if start != 0 {
            let now = now_ns();
            call.slept_ns += now.saturating_sub(start);
            call.sleep_start_ns = 0;
            whatif::judge(call, start, now);
        }
    }
}
