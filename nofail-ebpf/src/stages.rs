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
/// The message is read as words and compared as numbers: comparing byte
/// slices compiles to a call to the BPF target's `memcmp`, a subprogram
/// the kernel keeps loaded as one more vmalloc area (what a loaded
/// program holds makes every vmalloc call dearer; docs/benchmark-history.md).
const WORDS: usize = 5;
const AREA: &[u8] = b"vm_struct";
const MAPPING: &[u8] = b"failed to m";

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

/// `n` (<= 8) bytes of `s` from `at`, as a little-endian word.
const fn word(s: &[u8], at: usize, n: usize) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < n {
        w |= (s[at + i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const fn low_bytes(n: usize) -> u64 {
    (1u64 << (8 * n)) - 1
}

/// The prefix's first three words; its 25th byte is the low byte of word 3.
const PREFIX_WORDS: [u64; 3] = [word(PREFIX, 0, 8), word(PREFIX, 8, 8), word(PREFIX, 16, 8)];

/// A text right after the prefix (bytes 25.. of the message): its first
/// seven bytes are the top of word 3, the rest the low bytes of word 4.
struct Rest {
    top_of_w3: u64,
    low_of_w4: u64,
    mask_of_w4: u64,
}

const fn rest(s: &[u8]) -> Rest {
    // Word 4 ends at byte 40; a full word 4 would overflow the mask.
    assert!(s.len() >= 8 && s.len() <= 14);
    Rest {
        top_of_w3: word(s, 0, 7),
        low_of_w4: word(s, 7, s.len() - 7),
        mask_of_w4: low_bytes(s.len() - 7),
    }
}

// Constants, so that nothing of this is computed in the program.
const AREA_REST: Rest = rest(AREA);
const MAPPING_REST: Rest = rest(MAPPING);

#[inline(always)]
fn rest_is(w3: u64, w4: u64, r: &Rest) -> bool {
    w3 >> 8 == r.top_of_w3 && w4 & r.mask_of_w4 == r.low_of_w4
}

/// Reads the format string of a `warn_alloc()` call; None when it is not
/// vmalloc's.
#[inline(always)]
pub fn classify(fmt: u64) -> Option<Failure> {
    let mut msg = core::mem::MaybeUninit::<[u64; WORDS]>::uninit();
    let words = crate::zero::words(&mut msg);
    let buf = unsafe { core::slice::from_raw_parts_mut(words.as_mut_ptr() as *mut u8, WORDS * 8) };
    let got = unsafe { bpf_probe_read_kernel_str_bytes(fmt as *const u8, buf) }
        .ok()?
        .len();
    if got < PREFIX.len() + MAPPING.len() {
        return None;
    }
    let [w0, w1, w2, w3, w4] = *words;
    // Word by word: comparing the arrays is a `memcmp` call again.
    if w0 != PREFIX_WORDS[0]
        || w1 != PREFIX_WORDS[1]
        || w2 != PREFIX_WORDS[2]
        || w3 & 0xff != PREFIX[24] as u64
    {
        return None;
    }
    Some(if rest_is(w3, w4, &AREA_REST) {
        Failure::Area
    } else if rest_is(w3, w4, &MAPPING_REST) {
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
