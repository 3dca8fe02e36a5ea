//! Maps shared by the probe families. Userspace reads them by these names.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use nofail_common::{CallerStats, HEALTH_SLOTS, Health, Inflight, MAX_CALLERS, MAX_INFLIGHT};

/// Call in progress per thread id.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Finished calls folded per call site (`caller` address).
#[map]
pub static CALLERS: PerCpuHashMap<u64, CallerStats> =
    PerCpuHashMap::with_max_entries(MAX_CALLERS, 0);

/// Counters of what the programs could not track (see `Health`).
#[map]
pub static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(HEALTH_SLOTS, 0);

#[inline(always)]
pub fn health(slot: Health) {
    if let Some(counter) = HEALTH.get_ptr_mut(slot as u32) {
        unsafe { *counter += 1 };
    }
}

/// This CPU's aggregate for `caller`, created zeroed on first use.
#[inline(always)]
pub fn caller_stats(caller: u64) -> Option<*mut CallerStats> {
    if let Some(stats) = CALLERS.get_ptr_mut(caller) {
        return Some(stats);
    }
    // BPF_NOEXIST: another CPU may have raced us to the insert, which is fine
    // (per-CPU values are independent).
    let _ = CALLERS.insert(caller, CallerStats::default(), 1);
    let stats = CALLERS.get_ptr_mut(caller);
    if stats.is_none() {
        health(Health::CallersFull);
    }
    stats
}
