// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! The two stages vmalloc retries under `__GFP_NOFAIL`:
//!
//! * area: `__get_vm_area_node()` returns NULL when the `vm_struct` or the
//!   `vmap_area` cannot be allocated (or no address range is free);
//! * mapping: the page-table mapping function returns < 0 (`vmap_pages_range`
//!   on 6.x, `__vmap_pages_range`/`__vmap_pages_range_noflush` on 7.x:
//!   userspace picks the one this kernel has).
//!
//! Only failures inside a tracked call count; they are folded into the call
//! on its exit.

use aya_ebpf::{
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
        if area == 0 {
            unsafe {
                (*call).area_failures += 1;
                (*call).failed_stage = STAGE_AREA;
            }
        }
    }
}

fn try_mapping_exit(ret: i32) {
    if let Some(call) = current_call() {
        leave_stage(call, ret < 0);
        if ret < 0 {
            unsafe {
                (*call).mapping_failures += 1;
                (*call).failed_stage = STAGE_MAPPING;
            }
        }
    }
}
