// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Per-task helpers: which call (if any) the current task is inside.
//!
//! Full mode keeps each call in progress in the array slot `tid %
//! CALL_SLOTS` (`CALLS`): an array lookup is a few instructions the
//! verifier inlines, where a hash map insert, lookup and delete per call
//! cost hundreds (bucket lock, free list, value copies). A slot is taken
//! with a compare-and-swap; a task whose slot another task holds keeps its
//! call in the `INFLIGHT` hash instead (counted in `SPILLED`, so the hash
//! is only searched while it holds any). `--max-inflight` sets how many
//! slots are used and whether the hash takes the rest (config.rs).

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use nofail_common::{Health, Inflight, OWNED};

use crate::{
    config::{slots_used, spill_ok},
    maps::{CALLS, INFLIGHT, SPILLED, cmpxchg, fetch_add, health},
};

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

/// Where a task's call record lives.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Home {
    Slot,
    Spilled,
}

/// The record of `tid`'s call in progress, ignored ones included.
#[inline(always)]
pub fn find_call(tid: u32) -> Option<(*mut Inflight, Home)> {
    let slot = CALLS.get_ptr_mut(tid % slots_used())?;
    if unsafe { (*slot).owner } == OWNED | tid as u64 {
        return Some((slot, Home::Slot));
    }
    if SPILLED.get(0).is_none_or(|n| *n == 0) {
        return None;
    }
    INFLIGHT.get_ptr_mut(tid).map(|c| (c, Home::Spilled))
}

/// Stores a new call record for `tid` (who has none): in its slot when
/// free, else in the hash.
#[inline(always)]
pub fn open_call(tid: u32, call: &Inflight) {
    if let Some(slot) = CALLS.get_ptr_mut(tid % slots_used()) {
        let owner = OWNED | tid as u64;
        if cmpxchg(unsafe { &mut (*slot).owner }, 0, owner) == 0 {
            unsafe {
                *slot = *call;
                (*slot).owner = owner;
            }
            return;
        }
    }
    if !spill_ok() || INFLIGHT.insert(tid, call, 0).is_err() {
        health(Health::InflightFull);
        return;
    }
    if let Some(n) = SPILLED.get_ptr_mut(0) {
        fetch_add(n, 1);
    }
}

/// Drops `tid`'s call record.
#[inline(always)]
pub fn close_call(tid: u32, call: *mut Inflight, home: Home) {
    match home {
        Home::Slot => unsafe { (*call).owner = 0 },
        Home::Spilled => {
            if INFLIGHT.remove(tid).is_ok()
                && let Some(n) = SPILLED.get_ptr_mut(0)
            {
                fetch_add(n, u64::MAX);
            }
        }
    }
}

/// The tracked call the current task is inside, if it is inside one that
/// the filters selected.
#[inline(always)]
pub fn current_call() -> Option<*mut Inflight> {
    let (call, _) = find_call(current_tid())?;
    if unsafe { (*call).ignored } != 0 {
        return None;
    }
    Some(call)
}
