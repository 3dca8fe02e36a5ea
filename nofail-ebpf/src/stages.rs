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
    macros::{fexit, kretprobe},
    programs::{FExitContext, RetProbeContext},
};

use crate::task::current_call;

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
    if area != 0 {
        return;
    }
    if let Some(call) = current_call() {
        unsafe { (*call).area_failures += 1 };
    }
}

fn try_mapping_exit(ret: i32) {
    if ret >= 0 {
        return;
    }
    if let Some(call) = current_call() {
        unsafe { (*call).mapping_failures += 1 };
    }
}
