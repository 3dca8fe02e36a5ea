// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The two stages vmalloc retries under `__GFP_NOFAIL`:
//!
//! * area: `__get_vm_area_node()` returns NULL when the `vm_struct` or the
//!   `vmap_area` cannot be allocated (or no address range is free);
//! * mapping: the page-table mapping function returns < 0 (`vmap_pages_range`
//!   on 6.x, `__vmap_pages_range`/`__vmap_pages_range_noflush` on 7.x:
//!   userspace picks the one this kernel has).
//!
//! A call that does not fail must cost only the core's entry and exit, so
//! failures are counted on the slow path: `warn_alloc()`, which vmalloc
//! calls for every stage failure it reports (`failure_report` below), and
//! the NOFAIL loop's retry sleep, the only trace of a NOFAIL mapping-stage
//! failure (sleep.rs). The stage entry and exit programs only scope the
//! injector (`Inflight::stage`, inject.rs) and are attached by `nofail
//! inject` alone.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::{fentry, fexit, kprobe, kretprobe},
    programs::{FEntryContext, FExitContext, ProbeContext, RetProbeContext},
};
use nofail_common::{STAGE_AREA, STAGE_MAPPING};

use crate::task::current_call;

// Entry marks the stage the task is in, for the injector (inject.rs).

#[fentry(function = "__get_vm_area_node")]
pub fn area_stage_fentry(_ctx: FEntryContext) -> u32 {
    enter_stage(STAGE_AREA);
    0
}

#[kprobe]
pub fn area_stage_kprobe(_ctx: ProbeContext) -> u32 {
    enter_stage(STAGE_AREA);
    0
}

#[fentry(function = "__vmap_pages_range_noflush")]
pub fn mapping_stage_fentry(_ctx: FEntryContext) -> u32 {
    enter_stage(STAGE_MAPPING);
    0
}

#[kprobe]
pub fn mapping_stage_kprobe(_ctx: ProbeContext) -> u32 {
    enter_stage(STAGE_MAPPING);
    0
}

fn enter_stage(stage: u32) {
    if let Some(call) = current_call() {
        unsafe { (*call).stage = stage };
    }
}

/// Leaving a stage: a success ends any run of consecutive injected failures.
fn leave_stage(call: *mut nofail_common::Inflight, failed: bool) {
    unsafe {
        (*call).stage = 0;
        if !failed {
            (*call).consecutive = 0;
        }
    }
}

#[fexit(function = "__get_vm_area_node")]
pub fn area_stage_fexit(ctx: FExitContext) -> u32 {
    try_area_exit(ctx.ret::<u64>().unwrap_or(1));
    0
}

#[kretprobe]
pub fn area_stage_kretprobe(ctx: RetProbeContext) -> u32 {
    try_area_exit(ctx.ret::<u64>());
    0
}

#[fexit(function = "__vmap_pages_range_noflush")]
pub fn mapping_stage_fexit(ctx: FExitContext) -> u32 {
    try_mapping_exit(ctx.ret::<i64>().unwrap_or(0) as i32);
    0
}

#[kretprobe]
pub fn mapping_stage_kretprobe(ctx: RetProbeContext) -> u32 {
    try_mapping_exit(ctx.ret::<i64>() as i32);
    0
}

fn try_area_exit(area: u64) {
    if let Some(call) = current_call() {
        leave_stage(call, area == 0);
    }
}

fn try_mapping_exit(ret: i32) {
    if let Some(call) = current_call() {
        leave_stage(call, ret < 0);
    }
}

/// `"vmalloc error: size %lu, "`: every vmalloc failure message starts so.
const PREFIX: &[u8; 25] = b"vmalloc error: size %lu, ";
const MSG: usize = 40;

/// What a vmalloc `warn_alloc()` message reports.
pub enum Failure {
    /// `vm_struct allocation failed`: the area stage, NOFAIL or not (the
    /// NOFAIL loop warns, then sleeps and retries).
    Area,
    /// `failed to map pages`: the mapping stage of a call that gives up
    /// (the NOFAIL loop retries silently).
    Mapping,
    /// Pages, page array, size: no stage of the retry loops.
    Other,
}

/// Reads the format string of a `warn_alloc()` call; None when it is not
/// vmalloc's.
#[inline(always)]
pub fn classify(fmt: u64) -> Option<Failure> {
    let mut msg = [0u8; MSG];
    let got = unsafe { bpf_probe_read_kernel_str_bytes(fmt as *const u8, &mut msg) }.ok()?;
    if got.len() < PREFIX.len() + 11 || &msg[..PREFIX.len()] != PREFIX {
        return None;
    }
    let rest = &msg[PREFIX.len()..PREFIX.len() + 11];
    Some(if rest.starts_with(b"vm_struct") {
        Failure::Area
    } else if rest == b"failed to m" {
        Failure::Mapping
    } else {
        Failure::Other
    })
}

/// `warn_alloc()` inside a tracked call: a stage failure (variadic, so a
/// kprobe in every mode; it runs only when an allocation failed).
#[kprobe]
pub fn failure_report(ctx: ProbeContext) -> u32 {
    // void warn_alloc(gfp_t gfp_mask, nodemask_t *nodemask, const char *fmt, ...)
    if let Some(fmt) = ctx.arg::<u64>(2) {
        try_failure_report(fmt);
    }
    0
}

fn try_failure_report(fmt: u64) {
    let Some(call) = current_call() else {
        return;
    };
    let call = unsafe { &mut *call };
    match classify(fmt) {
        Some(Failure::Area) => {
            call.area_failures += 1;
            call.failed_stage = STAGE_AREA;
            // The retry sleep that follows is this failure's, not a
            // silent mapping failure.
            call.area_warned = 1;
            crate::whatif::arm(call, STAGE_AREA);
        }
        Some(Failure::Mapping) => {
            call.mapping_failures += 1;
            call.failed_stage = STAGE_MAPPING;
        }
        _ => {}
    }
}
