// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! `--events`: one record per injected failure (inject.rs), per NOFAIL
//! retry sleep and per call turning STUCK (sleep.rs), sent to userspace
//! through the `EVENTS` ring buffer.
//!
//! Which kinds are sent is a load-time constant (`EVENT_KINDS`): with
//! `--events` off every `wanted()` is a constant false, and the verifier
//! removes the paths below from the loaded programs, so nothing of this
//! runs unless asked. Bounded by `--events-rate` records per second; every
//! record left out is counted (`EVENT_STATS`), by reason.

use aya_ebpf::{
    helpers::bpf_get_current_comm,
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
    programs::tracing::StackIdContext,
};
use nofail_common::{EVENT_COUNTERS, EVENT_RING_BYTES, EVENT_STACK, Event, EventCounter, Inflight};

use crate::{
    maps::{STACKS, bump_percpu, fetch_add},
    task::now_ns,
};

/// `EVENT_*` bits: which events to send, and whether with stacks.
#[unsafe(no_mangle)]
static EVENT_KINDS: u32 = 0;

/// Records per second at most (`--events-rate`).
#[unsafe(no_mangle)]
static EVENT_RATE: u64 = 0;

/// `--stuck-after`: a call this old at a retry sleep turns STUCK.
#[unsafe(no_mangle)]
static STUCK_AFTER_NS: u64 = u64::MAX;

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENT_RING_BYTES, 0);

/// The rate limit's window: [0] the second (bpf_ktime_get_ns / 1e9), [1]
/// records admitted in it.
#[map]
static EVENT_WINDOW: Array<u64> = Array::with_max_entries(2, 0);

/// Per-CPU `EventCounter`s.
#[map]
static EVENT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(EVENT_COUNTERS, 0);

#[inline(always)]
pub fn wanted(kind: u32) -> bool {
    // Volatile: the value is rewritten in .rodata after compilation.
    unsafe { core::ptr::read_volatile(&EVENT_KINDS) & kind != 0 }
}

#[inline(always)]
pub fn stuck_after_ns() -> u64 {
    unsafe { core::ptr::read_volatile(&STUCK_AFTER_NS) }
}

/// What an event says beyond the call it belongs to.
pub struct Detail {
    pub kind: u32,
    pub stage: u32,
    pub attempt: u32,
    pub reason: u32,
    pub seq: u64,
    pub spent: u64,
}

/// Within --events-rate for the current second? Two CPUs crossing into a
/// new second at once may both reset the window and let a few more
/// through; every record is still counted exactly once, sent or not.
#[inline(always)]
fn admit() -> bool {
    let (Some(second), Some(admitted)) = (EVENT_WINDOW.get_ptr_mut(0), EVENT_WINDOW.get_ptr_mut(1))
    else {
        return false;
    };
    let now = now_ns() / 1_000_000_000;
    unsafe {
        if *second != now {
            *second = now;
            *admitted = 0;
        }
    }
    fetch_add(admitted, 1) < unsafe { core::ptr::read_volatile(&EVENT_RATE) }
}

/// Sends one record about `call`.
#[inline(always)]
pub fn send<C: StackIdContext>(ctx: &C, call: &Inflight, d: Detail) {
    if !admit() {
        bump_percpu(&EVENT_STATS, EventCounter::OverRate as u32);
        return;
    }
    let stack_id = if wanted(EVENT_STACK) {
        ctx.get_stackid(&STACKS, 0).map_or(-1, |id| id as i32)
    } else {
        -1
    };
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        bump_percpu(&EVENT_STATS, EventCounter::RingFull as u32);
        return;
    };
    entry.write(Event {
        ktime_ns: now_ns(),
        caller: call.caller,
        size: call.size,
        call_start_ns: call.start_ns,
        seq: d.seq,
        spent: d.spent,
        tgid: call.tgid,
        tid: call.tid,
        kind: d.kind,
        stage: d.stage,
        attempt: d.attempt,
        reason: d.reason,
        gfp: call.gfp,
        stack_id,
        // The full mode's entry leaves the name out unless a --comm filter
        // needs it; every event is sent from the calling task itself.
        comm: if call.comm[0] != 0 {
            call.comm
        } else {
            bpf_get_current_comm().unwrap_or([0; 16])
        },
    });
    entry.submit(0);
    bump_percpu(&EVENT_STATS, EventCounter::Sent as u32);
}
