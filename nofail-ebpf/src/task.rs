// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Per-task helpers: which call (if any) the current task is inside.

use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use nofail_common::Inflight;

use crate::maps::INFLIGHT;

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

/// The tracked call the current task is inside, if it is inside one that
/// the filters selected.
#[inline(always)]
pub fn current_call() -> Option<*mut Inflight> {
    let call = INFLIGHT.get_ptr_mut(current_tid())?;
    if unsafe { (*call).ignored } != 0 {
        return None;
    }
    Some(call)
}
