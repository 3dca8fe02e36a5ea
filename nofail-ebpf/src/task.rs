// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Per-task helpers: which call (if any) the current task is inside.
//!
//! Full mode keeps each call in progress in an array slot (`CALLS`): an
//! array lookup is a few instructions the verifier inlines, where a hash
//! map insert, lookup and delete per call cost hundreds (bucket lock, free
//! list, value copies). A task's call goes to the first free of `PROBES`
//! slots from `tid % slots`, taken with a compare-and-swap; when all are
//! held the call is not tracked and counted (`InflightFull`). One map for
//! every record also keeps the verifier's walk small: pointers into two
//! maps (an earlier hash fallback) doubled the states it explored and its
//! time at load. `--max-inflight` sets how many slots are used
//! (config.rs).

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use nofail_common::{Health, Inflight, OWNED};

use crate::{
    config::slots_used,
    maps::{CALLS, cmpxchg, health},
};

/// Slots tried per task, from `tid % slots` on.
const PROBES: u32 = 4;

#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn now_ns() -> u64 {
    unsafe { bpf_ktime_get_ns() }
}

/// The record of `tid`'s call in progress, ignored ones included.
#[inline(always)]
pub fn find_call(tid: u32) -> Option<*mut Inflight> {
    let slots = slots_used();
    let owner = OWNED | tid as u64;
    for i in 0..PROBES {
        let slot = CALLS.get_ptr_mut((tid + i) % slots)?;
        if unsafe { (*slot).owner } == owner {
            return Some(slot);
        }
    }
    None
}

/// Takes the first free of `tid`'s slots for a new call (`tid` has
/// none), leaving its other words as the last call left them: the caller
/// writes every field in place (`reset_call`). None when all are held.
#[inline(always)]
pub fn claim_call(tid: u32) -> Option<*mut Inflight> {
    let slots = slots_used();
    let owner = OWNED | tid as u64;
    for i in 0..PROBES {
        let slot = CALLS.get_ptr_mut((tid + i) % slots)?;
        if cmpxchg(unsafe { &mut (*slot).owner }, 0, owner) == 0 {
            return Some(slot);
        }
    }
    health(Health::InflightFull);
    None
}

/// Zeroes a record but its `owner`, with one 8-byte store per word.
/// Written out because LLVM turns a struct literal's zero runs into calls
/// to the BPF target's `memset`, which stores a byte per five
/// instructions: more than half of the entry program's cost.
#[inline(always)]
pub fn reset_call(call: *mut Inflight) {
    const WORDS: usize = core::mem::offset_of!(Inflight, owner) / 8;
    const _: () = assert!(
        core::mem::size_of::<Inflight>() == (WORDS + 1) * 8,
        "owner must be the last word"
    );
    let words = call as *mut u64;
    for i in 0..WORDS {
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
}

/// Drops a call record.
#[inline(always)]
pub fn close_call(call: *mut Inflight) {
    unsafe { (*call).owner = 0 };
}

/// The tracked call the current task is inside, if it is inside one that
/// the filters selected.
#[inline(always)]
pub fn current_call() -> Option<*mut Inflight> {
    let call = find_call(current_tid())?;
    if unsafe { (*call).ignored } != 0 {
        return None;
    }
    Some(call)
}
