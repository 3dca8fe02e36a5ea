// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `--what-if`: would waiting for an event have beaten sleeping a jiffy?
//!
//! A NOFAIL stage failure arms a waiter slot for the task (`arm`), naming
//! what the stage needs: vmap space in the call's `[start, end)` window
//! (area stage) or pages (mapping stage). The free programs below note the
//! first relevant free in every armed slot: `free_vmap_area_noflush()`,
//! where `vfree()`/`vunmap()` hand an area back (the next failing
//! `alloc_vmap_area()` purges it and can use it), and the `mm_page_free`
//! tracepoint. When the retry sleep ends (`judge`), a retry with no free
//! since the failure was futile; otherwise the time from that free to the
//! wake is what an event-driven wait would have saved. Nothing here runs
//! for a call that does not fail; the free programs exit after one array
//! read while no task waits.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{fentry, kprobe, raw_tracepoint},
    programs::{FEntryContext, ProbeContext, RawTracePointContext},
};
use nofail_common::{
    Health, Inflight, MAX_WAITERS, STAGE_AREA, STAGE_MAPPING, Waiter, log2_bucket,
};

use crate::{
    config::{gfp_nofail, what_if},
    maps::{WAITERS, WAITING, caller_stats, fetch_add, health},
    task::now_ns,
};

/// A slot not re-armed for this long belongs to a task whose call ended
/// unseen: another task may take it.
const STALE_NS: u64 = 1_000_000_000;

/// A NOFAIL stage failure: the task now waits for what `stage` needs.
#[inline(always)]
pub fn arm(call: &mut Inflight, stage: u32) {
    if !what_if() || call.gfp & gfp_nofail() == 0 {
        return;
    }
    let idx = call.tid % MAX_WAITERS;
    let Some(slot) = WAITERS.get_ptr_mut(idx) else {
        return;
    };
    let slot = unsafe { &mut *slot };
    let now = now_ns();
    if slot.tid != call.tid {
        if slot.tid != 0 && now.saturating_sub(slot.armed_ns) < STALE_NS {
            call.waiter = 0;
            return;
        }
        if slot.tid == 0
            && let Some(n) = WAITING.get_ptr_mut(0)
        {
            fetch_add(n, 1);
        }
    }
    *slot = Waiter {
        tid: call.tid,
        stage,
        vstart: call.vstart,
        vend: call.vend,
        armed_ns: now,
        first_free_ns: 0,
    };
    call.waiter = idx + 1;
}

/// The retry sleep that began at `start` ended at `now`: futile, or how
/// long the timer kept the task after the first relevant free.
#[inline(always)]
pub fn judge(call: &mut Inflight, start: u64, now: u64) {
    if !what_if() || call.gfp & gfp_nofail() == 0 {
        return;
    }
    let Some(slot) = held(call) else {
        health(Health::WaiterBusy);
        return;
    };
    let first = unsafe { (*slot).first_free_ns };
    let slept = now.saturating_sub(start);
    if first == 0 {
        call.futile += 1;
        call.whatif_ns += slept;
        return;
    }
    let delay = now.saturating_sub(first);
    call.freed += 1;
    call.wake_delay_ns += delay;
    // Woken by the free: at once if it came before the sleep began.
    call.whatif_ns += first.saturating_sub(start).min(slept);
    if let Some(stats) = caller_stats(call.caller)
        && let Some(b) = unsafe { (*stats).wake_delay_hist.get_mut(log2_bucket(delay)) }
    {
        *b += 1;
    }
}

/// The call ended: its slot is free again.
#[inline(always)]
pub fn release(call: &Inflight) {
    if !what_if() || call.waiter == 0 {
        return;
    }
    if let Some(slot) = held(call) {
        unsafe { (*slot).tid = 0 };
        if let Some(n) = WAITING.get_ptr_mut(0) {
            fetch_add(n, u64::MAX);
        }
    }
}

#[inline(always)]
fn held(call: &Inflight) -> Option<*mut Waiter> {
    if call.waiter == 0 {
        return None;
    }
    let slot = WAITERS.get_ptr_mut(call.waiter - 1)?;
    (unsafe { (*slot).tid } == call.tid).then_some(slot)
}

#[fentry(function = "free_vmap_area_noflush")]
pub fn vmap_free_fentry(ctx: FEntryContext) -> u32 {
    try_vmap_free(ctx.arg::<u64>(0));
    0
}

#[kprobe]
pub fn vmap_free_kprobe(ctx: ProbeContext) -> u32 {
    try_vmap_free(ctx.arg::<u64>(0).unwrap_or(0));
    0
}

/// `free_vmap_area_noflush(struct vmap_area *va)`: `va_start` and
/// `va_end` are the struct's first two words on every kernel since 2.6.28.
fn try_vmap_free(va: u64) {
    if !waiting() || va == 0 {
        return;
    }
    let start = unsafe { bpf_probe_read_kernel(va as *const u64) }.unwrap_or(0);
    let end = unsafe { bpf_probe_read_kernel((va + 8) as *const u64) }.unwrap_or(0);
    note_free(STAGE_AREA, start, end);
}

/// `mm_page_free(struct page *page, unsigned int order)`: any page freed
/// can be the page-table page the mapping stage failed to get.
#[raw_tracepoint(tracepoint = "mm_page_free")]
pub fn page_free(_ctx: RawTracePointContext) -> i32 {
    if waiting() {
        note_free(STAGE_MAPPING, 0, u64::MAX);
    }
    0
}

#[inline(always)]
fn waiting() -> bool {
    WAITING.get(0).is_some_and(|n| *n != 0)
}

/// Marks the first free since arming in every slot that waits for it.
#[inline(always)]
fn note_free(stage: u32, start: u64, end: u64) {
    let mut now = 0;
    for i in 0..MAX_WAITERS {
        let Some(slot) = WAITERS.get_ptr_mut(i) else {
            continue;
        };
        let w = unsafe { &mut *slot };
        if w.tid == 0 || w.stage != stage || w.first_free_ns != 0 {
            continue;
        }
        if stage == STAGE_AREA && (end <= w.vstart || start >= w.vend) {
            continue;
        }
        if now == 0 {
            now = now_ns();
        }
        w.first_free_ns = now;
    }
}
