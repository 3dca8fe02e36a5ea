//! Scoped fault injection. The kernel lets BPF fail only functions marked
//! ALLOW_ERROR_INJECTION; in mm/ those are `should_failslab()` (slab) and
//! `should_fail_alloc_page()` (page allocator). nofail overrides them only
//! while the task is inside a targeted stage of a targeted call:
//!
//! * area: `should_failslab` inside `__get_vm_area_node()`, whose vm_struct
//!   and vmap_area come from slabs: it returns NULL and the NOFAIL loop turns
//!   (a plain vmalloc returns NULL);
//! * mapping: `should_fail_alloc_page` inside `__vmap_pages_range_noflush()`,
//!   where the only page allocations are page-table pages.
//!
//! An override skips the kernel's own guard that never fails a
//! `__GFP_NOFAIL` request, so the guards live here: stage scoping (a NOFAIL
//! call's data pages are allocated outside both stages and are never
//! failed), the runtime filters (nofail's own process is always excluded),
//! and `max_consecutive` so a NOFAIL loop always ends.

use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_override_return},
    macros::kprobe,
    programs::ProbeContext,
};
use nofail_common::{InjectCounter, STAGE_AREA, STAGE_MAPPING};

use crate::{
    config::gfp_nofail,
    maps::{INJECT_RULE, INJECT_SEQ, inject_count},
    task::current_call,
};

/// should_failslab() returns -ENOMEM to fail (an int since 6.x).
const FAILSLAB_RC: u64 = (-12i64) as u64;
/// should_fail_alloc_page() returns true to fail.
const FAIL_PAGE_RC: u64 = 1;

#[kprobe]
pub fn inject_failslab(ctx: ProbeContext) -> u32 {
    try_inject(&ctx, STAGE_AREA, FAILSLAB_RC);
    0
}

#[kprobe]
pub fn inject_fail_page(ctx: ProbeContext) -> u32 {
    try_inject(&ctx, STAGE_MAPPING, FAIL_PAGE_RC);
    0
}

/// Adds one to a shared counter and returns the value before, atomically
/// (BPF_ATOMIC | BPF_FETCH), so tasks on several CPUs never overshoot
/// --times.
#[inline(always)]
fn bump(slot: u32) -> u64 {
    let Some(v) = INJECT_SEQ.get_ptr_mut(slot) else {
        return 0;
    };
    // BPF_ATOMIC | BPF_FETCH (kernel 5.12+). Written out because rustc
    // compiles bpfel for cpu v1, where LLVM refuses a fetching add.
    let mut before: u64 = 1;
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) v,
            v = inout(reg) before,
        );
    }
    before
}

fn try_inject(ctx: &ProbeContext, stage: u32, rc: u64) {
    let Some(rule) = INJECT_RULE.get(0) else {
        return;
    };
    if rule.enabled == 0 || rule.stages & stage == 0 {
        return;
    }
    let Some(call) = current_call() else {
        return;
    };
    let call = unsafe { &mut *call };
    if call.stage != stage {
        return;
    }
    let nofail = call.gfp & gfp_nofail() != 0;
    if (rule.nofail == 1 && !nofail) || (rule.nofail == 2 && nofail) {
        return;
    }
    inject_count(InjectCounter::Eligible);
    let seq = bump(1);
    if call.consecutive >= rule.max_consecutive {
        inject_count(InjectCounter::SkippedGuard);
        return;
    }
    let skip = (rule.fail_first != 0 && call.injected >= rule.fail_first)
        || (rule.every > 1 && !(seq + 1).is_multiple_of(rule.every as u64))
        || (rule.probability != u32::MAX && unsafe { bpf_get_prandom_u32() } >= rule.probability);
    if skip {
        inject_count(InjectCounter::SkippedSelection);
        return;
    }
    if rule.times != u64::MAX && bump(0) >= rule.times {
        inject_count(InjectCounter::SkippedBudget);
        return;
    }
    call.injected += 1;
    call.consecutive += 1;
    inject_count(InjectCounter::Injected);
    if rule.dry_run == 0 {
        unsafe { bpf_override_return(ctx.regs, rc) };
    }
}
