// SPDX-License-Identifier: MIT OR GPL-2.0-only
//! Maps shared by the probe families. Userspace reads them by these names;
//! which mode uses which is listed in nofail-user/src/bpf/footprint.rs,
//! which creates the others with one entry.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, PerCpuHashMap, StackTrace},
};
use nofail_common::{
    CALL_SLOTS, CallerRange, CallerStats, ChainKey, Filter, HEALTH_SLOTS, Health, INJECT_COUNTERS,
    Inflight, InjectCounter, InjectRule, LastNull, MAX_CALLER_RANGES, MAX_CALLERS, MAX_CHAINS,
    MAX_INFLIGHT, MAX_STACKS, MAX_WAITERS, SyscallKey, TpSleep, TpTask, Waiter,
};

/// Full mode: calls in progress, in slots from `tid % slots` (task.rs).
#[map]
pub static CALLS: Array<Inflight> = Array::with_max_entries(CALL_SLOTS, 0);

/// Tracepoint mode: the retry loops in progress, per thread id.
#[map]
pub static INFLIGHT: HashMap<u32, Inflight> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Finished calls folded per call site (`caller` address). Entries are
/// allocated per call site seen (BPF_F_NO_PREALLOC, allowed in tracing
/// programs since 6.1): preallocated, the default 4,096 sites took 1.75
/// KiB each per possible CPU from the moment nofail started.
#[map]
pub static CALLERS: PerCpuHashMap<u64, CallerStats> =
    PerCpuHashMap::with_max_entries(MAX_CALLERS, BPF_F_NO_PREALLOC);

/// `--chains`: the calls that matter folded per call site and kernel stack
/// (allocated as they come, as `CALLERS`).
#[map]
pub static CHAINS: PerCpuHashMap<ChainKey, CallerStats> =
    PerCpuHashMap::with_max_entries(MAX_CHAINS, BPF_F_NO_PREALLOC);

/// `--chains`: the kernel stacks `CHAINS` keys refer to.
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(MAX_STACKS, 0);

/// One zeroed `CallerStats`, the source of new `CALLERS` entries (the
/// struct is larger than the 512-byte BPF stack).
#[map]
pub static ZERO_STATS: Array<CallerStats> = Array::with_max_entries(1, 0);

/// Last NULL returned to each thread, for open-coded retry detection. LRU:
/// a task that never calls again must not pin an entry.
#[map]
pub static LAST_NULL: LruHashMap<u32, LastNull> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Full mode: when the last NULL went into `LAST_NULL` (slot 0). A call
/// starting more than the retry window later cannot be a retry by hand,
/// so it skips the `LAST_NULL` lookup: the common case costs an array
/// read instead of a hash lookup.
#[map]
pub static LAST_NULL_NS: Array<u64> = Array::with_max_entries(1, 0);

/// Tracepoint mode: per task, what its vmalloc call showed last.
#[map]
pub static TP_TASKS: LruHashMap<u32, TpTask> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Tracepoint mode: retry sleeps in progress, by timer address.
#[map]
pub static TP_SLEEPS: LruHashMap<u64, TpSleep> = LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// Frames taken per event (frames.rs): the deepest hook (timer_start)
/// sits about six frames below vmalloc's core. A power of two (see
/// `frames::frame`).
pub const FRAMES: usize = 16;

/// Tracepoint and sentinel modes: the kernel stack of the event being
/// handled (frames.rs), per CPU, off the 512-byte BPF stack.
#[map]
pub static FRAMES_BUF: PerCpuArray<[u64; FRAMES]> = PerCpuArray::with_max_entries(1, 0);

/// Per CPU, the bookkeeping of captures into `FRAMES_BUF`: slot
/// `CAPTURE_WRITING`, captures inside bpf_get_stack() now; slot
/// `CAPTURE_WRITTEN`, captures written so far. A tracepoint program runs
/// preemptibly on a kernel that preempts BPF programs (7.2, lazy
/// preemption): another task's program can write the CPU's buffer between
/// a capture and its reading, or in the middle of it (frames.rs
/// `capture`).
#[map]
pub static CAPTURES: PerCpuArray<u64> = PerCpuArray::with_max_entries(2, 0);
pub const CAPTURE_WRITING: u32 = 0;
pub const CAPTURE_WRITTEN: u32 = 1;

/// Tracepoint mode: where a new `INFLIGHT` record is built (the struct is
/// too large for the stack next to a captured kernel stack).
#[map]
pub static SCRATCH_INFLIGHT: PerCpuArray<Inflight> = PerCpuArray::with_max_entries(1, 0);

/// Sentinel mode: retry sleeps in progress, by task.
#[map]
pub static SENTINEL_SLEEPS: LruHashMap<u32, TpSleep> =
    LruHashMap::with_max_entries(MAX_INFLIGHT, 0);

/// `--what-if`: tasks waiting between a NOFAIL failure and its retry
/// (whatif.rs), and how many slots are taken (slot 0): the free programs
/// look no further while it is 0.
#[map]
pub static WAITERS: Array<Waiter> = Array::with_max_entries(MAX_WAITERS, 0);
#[map]
pub static WAITING: Array<u64> = Array::with_max_entries(1, 0);

/// Runtime filters (slot 0), rewritten by userspace without reloading.
#[map]
pub static FILTER: Array<Filter> = Array::with_max_entries(1, 0);

/// `--caller`/`--module`: sorted, disjoint `[start, end)` ranges of the
/// selected functions (the first `Filter::n_ranges` entries).
#[map]
pub static CALLER_RANGES: Array<CallerRange> = Array::with_max_entries(MAX_CALLER_RANGES, 0);

/// What `nofail inject` fails (slot 0), rewritten by userspace at will.
#[map]
pub static INJECT_RULE: Array<InjectRule> = Array::with_max_entries(1, 0);

/// Shared sequence counters of the injector: [0] failures spent against
/// --times, [1] eligible allocations seen (for --every).
#[map]
pub static INJECT_SEQ: Array<u64> = Array::with_max_entries(2, 0);

/// Per-CPU injector counters (see `InjectCounter`).
#[map]
pub static INJECT_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(INJECT_COUNTERS, 0);

#[inline(always)]
pub fn inject_count(slot: InjectCounter) {
    bump_percpu(&INJECT_STATS, slot as u32);
}

/// fmod_ret mode: the verdict the fentry decision program left for the
/// task's fmod_ret program on the same `should_*` call (tid -> return
/// value). The fmod_ret program, assembled by userspace (aya cannot load
/// BPF_MODIFY_RETURN), takes and deletes it.
#[map]
pub static VERDICT: HashMap<u32, u64> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// NULL returns that became a system call failing with -ENOMEM, per call
/// site and system call number (`inject`). Allocated as they come, as
/// `CALLERS`: preallocated, its 1,024 entries were a 72 KiB vmalloc area
/// held in every mode.
#[map]
pub static ENOMEM_SYSCALLS: HashMap<SyscallKey, u64> =
    HashMap::with_max_entries(1024, BPF_F_NO_PREALLOC);

/// Counters of what the programs could not track (see `Health`).
#[map]
pub static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(HEALTH_SLOTS, 0);

#[inline(always)]
pub fn health(slot: Health) {
    bump_percpu(&HEALTH, slot as u32);
}

/// Adds one to this CPU's counter `slot` (no atomics needed: per CPU).
#[inline(always)]
pub fn bump_percpu(map: &PerCpuArray<u64>, slot: u32) {
    if let Some(counter) = map.get_ptr_mut(slot) {
        unsafe { *counter += 1 };
    }
}

/// This CPU's aggregate for `caller`, created zeroed on first use.
#[inline(always)]
pub fn caller_stats(caller: u64) -> Option<*mut CallerStats> {
    stats_entry(&CALLERS, &caller, Health::CallersFull)
}

/// This CPU's `--chains` aggregate for `key`, created zeroed on first use.
#[inline(always)]
pub fn chain_stats(key: &ChainKey) -> Option<*mut CallerStats> {
    stats_entry(&CHAINS, key, Health::ChainsFull)
}

#[inline(always)]
fn stats_entry<K>(
    map: &PerCpuHashMap<K, CallerStats>,
    key: &K,
    full: Health,
) -> Option<*mut CallerStats> {
    if let Some(stats) = map.get_ptr_mut(key) {
        return Some(stats);
    }
    let zero = ZERO_STATS.get(0)?;
    // BPF_NOEXIST: losing a race with another CPU is fine (per-CPU values).
    let _ = map.insert(key, zero, 1);
    let stats = map.get_ptr_mut(key);
    if stats.is_none() {
        health(full);
    }
    stats
}

/// Sets `*p` to `new` if it holds `old`, atomically (BPF_CMPXCHG, kernel
/// 5.12+); returns what it held.
#[inline(always)]
pub fn cmpxchg(p: *mut u64, old: u64, new: u64) -> u64 {
    let mut r0 = old;
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({p} + 0, r0, {new})",
            p = in(reg) p,
            new = in(reg) new,
            inout("r0") r0,
        );
    }
    r0
}

/// Adds `n` to a shared counter and returns the value before, atomically
/// (BPF_ATOMIC | BPF_FETCH, kernel 5.12+), so tasks on several CPUs never
/// overshoot a budget. Written out because rustc compiles bpfel for cpu
/// v1, where LLVM refuses a fetching add.
#[inline(always)]
pub fn fetch_add(counter: *mut u64, n: u64) -> u64 {
    let mut before = n;
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) counter,
            v = inout(reg) before,
        );
    }
    before
}
