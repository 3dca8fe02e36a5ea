// SPDX-License-Identifier: MIT OR GPL-2.0-only
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
//! Two mechanisms, chosen by userspace (`--inject-mode`):
//!
//! * kprobe + `bpf_override_return` (needs CONFIG_BPF_KPROBE_OVERRIDE);
//! * fmod_ret (needs only CONFIG_FUNCTION_ERROR_INJECTION and BTF): an
//!   fentry program here decides and leaves the verdict in `VERDICT`; the
//!   fmod_ret program on the same trampoline returns it (userspace
//!   assembles that one: aya cannot load BPF_MODIFY_RETURN).
//!
//! An override skips the kernel's own guard that never fails a
//! `__GFP_NOFAIL` request, so the guards live here: stage scoping (a NOFAIL
//! call's data pages are allocated outside both stages and are never
//! failed), the runtime filters (nofail's own process is always excluded),
//! and `max_consecutive` so a NOFAIL loop always ends.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_prandom_u32, bpf_override_return},
    macros::{fentry, kprobe},
    programs::{FEntryContext, ProbeContext, tracing::StackIdContext},
};
use nofail_common::{
    EVENT_INJECTED, InjectCounter, InjectRule, REASON_DRY_RUN, REASON_EVERY, REASON_FAIL_FIRST,
    REASON_PROBABILITY, REASON_TIMES, STAGE_AREA, STAGE_MAPPING,
};

use crate::{
    config::gfp_nofail,
    events::{self, Detail},
    maps::{INJECT_RULE, INJECT_SEQ, VERDICT, fetch_add, inject_count},
    task::current_call,
};

/// should_failslab() returns -ENOMEM to fail (an int since 6.x).
const FAILSLAB_RC: u64 = (-12i64) as u64;
/// should_fail_alloc_page() returns true to fail.
const FAIL_PAGE_RC: u64 = 1;

#[kprobe]
pub fn inject_failslab(ctx: ProbeContext) -> u32 {
    override_with(&ctx, try_decide(&ctx, STAGE_AREA, FAILSLAB_RC));
    0
}

#[kprobe]
pub fn inject_fail_page(ctx: ProbeContext) -> u32 {
    override_with(&ctx, try_decide(&ctx, STAGE_MAPPING, FAIL_PAGE_RC));
    0
}

#[fentry(function = "should_failslab")]
pub fn decide_failslab(ctx: FEntryContext) -> u32 {
    leave_verdict(try_decide(&ctx, STAGE_AREA, FAILSLAB_RC));
    0
}

#[fentry(function = "should_fail_alloc_page")]
pub fn decide_fail_page(ctx: FEntryContext) -> u32 {
    leave_verdict(try_decide(&ctx, STAGE_MAPPING, FAIL_PAGE_RC));
    0
}

fn override_with(ctx: &ProbeContext, rc: Option<u64>) {
    if let Some(rc) = rc {
        unsafe { bpf_override_return(ctx.regs.cast(), rc) };
    }
}

/// Every decision overwrites the task's verdict, so one the fmod_ret
/// program missed (a skipped run) cannot fail a later allocation.
fn leave_verdict(rc: Option<u64>) {
    let tid = bpf_get_current_pid_tgid() as u32;
    match rc {
        Some(rc) => {
            let _ = VERDICT.insert(tid, rc, 0);
        }
        None => {
            // Lookup first: lockless, and most tasks have no verdict.
            if unsafe { VERDICT.get(tid) }.is_some() {
                let _ = VERDICT.remove(tid);
            }
        }
    }
}

/// Adds one to the injector's shared counter `slot`; the value before.
#[inline(always)]
fn bump(slot: u32) -> u64 {
    INJECT_SEQ.get_ptr_mut(slot).map_or(0, |v| fetch_add(v, 1))
}

/// Whether to fail this `should_*` call, and with which return value.
fn try_decide<C: StackIdContext>(ctx: &C, stage: u32, rc: u64) -> Option<u64> {
    let rule = INJECT_RULE.get(0)?;
    if rule.enabled == 0 || rule.stages & stage == 0 {
        return None;
    }
    let call = unsafe { &mut *current_call()? };
    if call.stage != stage {
        return None;
    }
    let nofail = call.gfp & gfp_nofail() != 0;
    if (rule.nofail == 1 && !nofail) || (rule.nofail == 2 && nofail) {
        return None;
    }
    inject_count(InjectCounter::Eligible);
    let seq = bump(1);
    if call.consecutive >= rule.max_consecutive {
        inject_count(InjectCounter::SkippedGuard);
        return None;
    }
    let skip = (rule.fail_first != 0 && call.injected >= rule.fail_first)
        || (rule.every > 1 && !(seq + 1).is_multiple_of(rule.every as u64))
        || (rule.probability != u32::MAX && unsafe { bpf_get_prandom_u32() } >= rule.probability);
    if skip {
        inject_count(InjectCounter::SkippedSelection);
        return None;
    }
    let mut spent = 0;
    if rule.times != u64::MAX {
        spent = bump(0) + 1;
        if spent > rule.times {
            inject_count(InjectCounter::SkippedBudget);
            return None;
        }
    }
    call.injected += 1;
    call.consecutive += 1;
    inject_count(InjectCounter::Injected);
    if events::wanted(EVENT_INJECTED) {
        let detail = Detail {
            kind: EVENT_INJECTED,
            stage,
            // Each failure so far turned the loop once: this is the
            // call's next attempt.
            attempt: call.area_failures + call.mapping_failures + 1,
            reason: reasons(rule),
            seq: seq + 1,
            spent,
        };
        events::send(ctx, call, detail);
    }
    (rule.dry_run == 0).then_some(rc)
}

/// Which terms of the rule picked a failure (`REASON_*`).
#[inline(always)]
fn reasons(rule: &InjectRule) -> u32 {
    let mut bits = 0;
    if rule.fail_first != 0 {
        bits |= REASON_FAIL_FIRST;
    }
    if rule.every > 1 {
        bits |= REASON_EVERY;
    }
    if rule.probability != u32::MAX {
        bits |= REASON_PROBABILITY;
    }
    if rule.times != u64::MAX {
        bits |= REASON_TIMES;
    }
    if rule.dry_run != 0 {
        bits |= REASON_DRY_RUN;
    }
    bits
}
