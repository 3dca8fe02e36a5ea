// SPDX-License-Identifier: MIT OR Apache-2.0
//! Types shared between the eBPF programs and the `nofail` CLI.
//!
//! Every struct is `#[repr(C)]` with explicit padding fields (no `bool`, no
//! implicit holes) so the bytes the kernel writes are exactly the bytes
//! userspace reads.
#![no_std]

/// Capacity of the per-call-site aggregate map.
pub const MAX_CALLERS: u32 = 4096;
/// Capacity of the per-task in-flight call map (one entry per task inside
/// the vmalloc core at any moment).
pub const MAX_INFLIGHT: u32 = 16384;
/// Buckets of every in-kernel histogram: bucket 0 holds zero, bucket `i`
/// holds values in `[2^(i-1), 2^i)`, the last bucket everything above.
pub const HIST_BUCKETS: usize = 40;
/// Caller address ranges a filter can hold, after adjacent matched
/// functions are merged (`CALLER_RANGES` map; searched in the kernel by a
/// binary search of `CALLER_RANGE_STEPS` steps).
pub const MAX_CALLER_RANGES: u32 = 1 << CALLER_RANGE_STEPS;
pub const CALLER_RANGE_STEPS: u32 = 15;
/// Distinct (call site, kernel stack) aggregates `--chains` can hold.
pub const MAX_CHAINS: u32 = 1024;
/// Kernel stacks kept for `--chains` (the `STACKS` stack-trace map).
pub const MAX_STACKS: u32 = 1024;

/// `comm` length in the kernel (TASK_COMM_LEN).
pub const COMM_LEN: usize = 16;

/// Page-table levels whose allocation can fail inside the mapping stage
/// (`__pte_alloc_kernel`, `__pmd_alloc`, `__pud_alloc`, `__p4d_alloc`).
pub const PT_LEVELS: usize = 4;

/// Histogram bucket of `v` (see [`HIST_BUCKETS`]): `floor(log2(v)) + 1`,
/// 0 for 0. A branchy binary search rather than `leading_zeros()`: the BPF
/// verifier cannot bound a count-leading-zeros sequence, but bounds every
/// path of this one, so the index it yields is provably in range.
#[inline(always)]
pub fn log2_bucket(v: u64) -> usize {
    let mut x = v;
    let mut b = 0usize;
    if x >= 1 << 32 {
        b += 32;
        x >>= 32;
    }
    if x >= 1 << 16 {
        b += 16;
        x >>= 16;
    }
    if x >= 1 << 8 {
        b += 8;
        x >>= 8;
    }
    if x >= 1 << 4 {
        b += 4;
        x >>= 4;
    }
    if x >= 1 << 2 {
        b += 2;
        x >>= 2;
    }
    if x >= 1 << 1 {
        b += 1;
        x >>= 1;
    }
    if x != 0 {
        b += 1;
    }
    if b >= HIST_BUCKETS {
        HIST_BUCKETS - 1
    } else {
        b
    }
}

/// Per-call-site aggregate, kept per CPU in the kernel and summed in
/// userspace. Keyed by the `caller` argument of the vmalloc core.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallerStats {
    /// Finished outermost calls (the page-array recursion is not a call).
    pub calls: u64,
    /// Calls whose gfp mask had `__GFP_NOFAIL`.
    pub nofail_calls: u64,
    /// Calls that returned NULL.
    pub null_returns: u64,
    /// Sum of entry-to-exit latency, ns.
    pub latency_ns: u64,
    /// Stage failures (`__get_vm_area_node` NULL, mapping < 0), any call.
    pub area_failures: u64,
    pub mapping_failures: u64,
    /// Failures that made a NOFAIL loop turn again, per stage.
    pub area_retries: u64,
    pub mapping_retries: u64,
    /// Page-table allocation failures inside calls, by level (pte..p4d).
    pub pt_failures: [u64; PT_LEVELS],
    /// Retry sleeps inside calls and the time actually slept.
    pub sleeps: u64,
    pub slept_ns: u64,
    /// Jiffies the sleeps asked for.
    pub sleep_jiffies: u64,
    /// Most retries seen in one call.
    pub max_retries: u64,
    /// Calls that followed a NULL return from the same call site in the
    /// same task within the retry window: an open-coded retry loop.
    pub open_coded_retries: u64,
    /// Sleeps between such a NULL return and the retry.
    pub open_coded_retry_sleeps: u64,
    /// Failures `nofail inject` caused in this caller's calls.
    pub injected: u64,
    /// Longest time slept in one call, ns.
    pub max_slept_ns: u64,
    /// `--what-if`: NOFAIL retries after which nothing the failed stage
    /// needs had been freed since the failure (an event-driven wait would
    /// not have woken the task), and the others.
    pub futile_retries: u64,
    pub freed_retries: u64,
    /// `--what-if`: time from the first relevant free to the wake, summed
    /// over `freed_retries` (what an event-driven wait would have saved).
    pub wake_delay_ns: u64,
    /// `--what-if`: the retry sleeps' time had the task been woken by the
    /// first relevant free instead of the timer (futile sleeps count
    /// whole: the task would have waited anyway).
    pub whatif_slept_ns: u64,
    pub latency_hist: [u64; HIST_BUCKETS],
    pub retries_hist: [u64; HIST_BUCKETS],
    pub slept_hist: [u64; HIST_BUCKETS],
    /// `--what-if`: wake delay per freed retry, and what-if stall per call.
    pub wake_delay_hist: [u64; HIST_BUCKETS],
    pub whatif_hist: [u64; HIST_BUCKETS],
}

impl Default for CallerStats {
    fn default() -> Self {
        Self {
            calls: 0,
            nofail_calls: 0,
            null_returns: 0,
            latency_ns: 0,
            area_failures: 0,
            mapping_failures: 0,
            area_retries: 0,
            mapping_retries: 0,
            pt_failures: [0; PT_LEVELS],
            sleeps: 0,
            slept_ns: 0,
            sleep_jiffies: 0,
            max_retries: 0,
            open_coded_retries: 0,
            open_coded_retry_sleeps: 0,
            injected: 0,
            max_slept_ns: 0,
            futile_retries: 0,
            freed_retries: 0,
            wake_delay_ns: 0,
            whatif_slept_ns: 0,
            latency_hist: [0; HIST_BUCKETS],
            retries_hist: [0; HIST_BUCKETS],
            slept_hist: [0; HIST_BUCKETS],
            wake_delay_hist: [0; HIST_BUCKETS],
            whatif_hist: [0; HIST_BUCKETS],
        }
    }
}

impl CallerStats {
    /// Adds another CPU's (or another caller's) counts into this one;
    /// saturating, since read-back reports may carry any value.
    pub fn merge(&mut self, o: &Self) {
        self.calls = self.calls.saturating_add(o.calls);
        self.nofail_calls = self.nofail_calls.saturating_add(o.nofail_calls);
        self.null_returns = self.null_returns.saturating_add(o.null_returns);
        self.latency_ns = self.latency_ns.saturating_add(o.latency_ns);
        self.area_failures = self.area_failures.saturating_add(o.area_failures);
        self.mapping_failures = self.mapping_failures.saturating_add(o.mapping_failures);
        self.area_retries = self.area_retries.saturating_add(o.area_retries);
        self.mapping_retries = self.mapping_retries.saturating_add(o.mapping_retries);
        for i in 0..PT_LEVELS {
            self.pt_failures[i] = self.pt_failures[i].saturating_add(o.pt_failures[i]);
        }
        self.sleeps = self.sleeps.saturating_add(o.sleeps);
        self.slept_ns = self.slept_ns.saturating_add(o.slept_ns);
        self.sleep_jiffies = self.sleep_jiffies.saturating_add(o.sleep_jiffies);
        self.max_retries = self.max_retries.max(o.max_retries);
        self.open_coded_retries = self.open_coded_retries.saturating_add(o.open_coded_retries);
        self.open_coded_retry_sleeps = self
            .open_coded_retry_sleeps
            .saturating_add(o.open_coded_retry_sleeps);
        self.injected = self.injected.saturating_add(o.injected);
        self.max_slept_ns = self.max_slept_ns.max(o.max_slept_ns);
        self.futile_retries = self.futile_retries.saturating_add(o.futile_retries);
        self.freed_retries = self.freed_retries.saturating_add(o.freed_retries);
        self.wake_delay_ns = self.wake_delay_ns.saturating_add(o.wake_delay_ns);
        self.whatif_slept_ns = self.whatif_slept_ns.saturating_add(o.whatif_slept_ns);
        for i in 0..HIST_BUCKETS {
            self.wake_delay_hist[i] = self.wake_delay_hist[i].saturating_add(o.wake_delay_hist[i]);
            self.whatif_hist[i] = self.whatif_hist[i].saturating_add(o.whatif_hist[i]);
            self.latency_hist[i] = self.latency_hist[i].saturating_add(o.latency_hist[i]);
            self.retries_hist[i] = self.retries_hist[i].saturating_add(o.retries_hist[i]);
            self.slept_hist[i] = self.slept_hist[i].saturating_add(o.slept_hist[i]);
        }
    }
}

/// One task's call in progress, keyed by thread id.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inflight {
    /// Stack address identifying the outermost call's frame (the fentry
    /// ctx, or the kprobe's entry stack pointer): a deeper frame is the
    /// nested page-array call, a frame at or above it means this record's
    /// exit was missed and it is stale.
    pub frame: u64,
    pub start_ns: u64,
    pub caller: u64,
    pub size: u64,
    pub gfp: u32,
    /// Nesting depth below the outermost call (the core recurses once for
    /// the page array in `__vmalloc_area_node`).
    pub depth: u32,
    /// Thread group (process) id and thread id of the caller.
    pub tgid: u32,
    pub tid: u32,
    /// 1 when the filters excluded this call: tracked only so that its
    /// nested call is excluded too.
    pub ignored: u32,
    /// 1 when this call is an open-coded retry (it followed a NULL from
    /// the same site in this task), for the `--chains` aggregate.
    pub open_coded_retry: u32,
    pub area_failures: u32,
    pub mapping_failures: u32,
    pub pt_failures: [u32; PT_LEVELS],
    pub sleeps: u32,
    pub sleep_jiffies: u32,
    pub slept_ns: u64,
    /// Start of the sleep in progress, 0 when not sleeping.
    pub sleep_start_ns: u64,
    pub comm: [u8; COMM_LEN],
    /// Stage the task is in now (`STAGE_*`), 0 outside both.
    pub stage: u32,
    /// Failures nofail injected into this call, and how many in a row
    /// since a stage last succeeded.
    pub injected: u32,
    pub consecutive: u32,
    /// Sleeps between the NULL this call retries and the call itself.
    pub open_coded_retry_sleeps: u32,
    /// Stage whose failure the loop retries now (`STAGE_*`), 0 before the
    /// first failure: the stage a retry sleep event names.
    pub failed_stage: u32,
    /// 1 once the call's STUCK event was sent (one per call).
    pub stuck_noted: u32,
    /// 1 between an area-stage failure report (`warn_alloc`) and the
    /// retry sleep that follows it; a retry sleep without one is a NOFAIL
    /// mapping-stage failure (that loop does not warn).
    pub area_warned: u32,
    /// `--what-if`: 1 + the `WAITERS` slot this task holds, 0 for none.
    pub waiter: u32,
    /// The address window the call asked for (`start`, `end` arguments):
    /// a vmap area freed outside it cannot end an area-stage failure.
    pub vstart: u64,
    pub vend: u64,
    /// `--what-if` sums of this call (see `CallerStats`).
    pub wake_delay_ns: u64,
    pub whatif_ns: u64,
    pub futile: u32,
    pub freed: u32,
    /// Full mode's `CALLS` slots: `OWNED | tid` while the slot holds this
    /// task's call, 0 when free (taken with a compare-and-swap).
    pub owner: u64,
}

/// Full mode: calls in progress live in array slots from `tid % CALL_SLOTS`
/// on (`CALLS`), found by array reads the verifier inlines.
pub const CALL_SLOTS: u32 = 512;
/// Marks an owned slot (so that tid 0 is not a free slot's 0).
pub const OWNED: u64 = 1 << 32;

/// `--what-if`: slots of the `WAITERS` array (a task takes slot
/// `tid % MAX_WAITERS`; a collision is counted, not followed).
pub const MAX_WAITERS: u32 = 16;

/// `--what-if`: a task between a NOFAIL stage failure and its retry,
/// waiting for what the stage needs; the free programs note the first
/// relevant free in it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Waiter {
    /// 0: slot free.
    pub tid: u32,
    /// `STAGE_AREA` (needs vmap space in `[vstart, vend)`) or
    /// `STAGE_MAPPING` (needs pages).
    pub stage: u32,
    pub vstart: u64,
    pub vend: u64,
    /// When the failure armed the slot, and the first relevant free after
    /// it (0: none yet).
    pub armed_ns: u64,
    pub first_free_ns: u64,
}

/// Stages of a vmalloc call nofail can fail (bits of `InjectRule::stages`).
pub const STAGE_AREA: u32 = 1;
pub const STAGE_MAPPING: u32 = 2;

/// What `nofail inject` fails, slot 0 of the `INJECT_RULE` array map;
/// userspace may rewrite it at any time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InjectRule {
    /// 0: injection off. Set last, after the other fields.
    pub enabled: u32,
    /// `STAGE_*` bits.
    pub stages: u32,
    /// 0: any call; 1: only `__GFP_NOFAIL` calls; 2: only the others.
    pub nofail: u32,
    /// Chance per eligible allocation, out of `u32::MAX` (`u32::MAX` =
    /// always).
    pub probability: u32,
    /// Fail only every Nth eligible allocation (0 or 1: each one).
    pub every: u32,
    /// Fail the first K attempts of each targeted call, then let it through
    /// (0: off).
    pub fail_first: u32,
    /// Never more than this many injected failures in a row in one call.
    pub max_consecutive: u32,
    /// 1: count what would be failed, fail nothing.
    pub dry_run: u32,
    /// Total failures allowed over the run (`u64::MAX`: no limit).
    pub times: u64,
}

/// Key of `ENOMEM_SYSCALLS`: a call site whose NULL reached userspace as a
/// system call failing with -ENOMEM, and that system call's number.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SyscallKey {
    pub caller: u64,
    pub nr: u32,
    pub _pad: u32,
}

/// Slots of the per-CPU `INJECT_STATS` counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectCounter {
    /// Allocations inside a targeted stage of a targeted call.
    Eligible = 0,
    /// Failed (or, with --dry-run, would have been failed).
    Injected = 1,
    /// Passed because the --times budget was spent.
    SkippedBudget = 2,
    /// Passed because of --max-consecutive.
    SkippedGuard = 3,
    /// Passed by --probability, --every or --fail-first.
    SkippedSelection = 4,
}

pub const INJECT_COUNTERS: u32 = 5;

/// A NULL returned to a call site, remembered per task to recognise an
/// open-coded retry (the same task calling from the same site again soon).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LastNull {
    pub caller: u64,
    pub end_ns: u64,
    /// Sleeps the task took since that NULL (memalloc_retry_wait & co).
    pub sleeps: u32,
    pub _pad: u32,
}

/// Runtime filters, slot 0 of the `FILTER` array map; userspace may
/// rewrite it at any time. A zero field means "no filter".
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this process (tgid).
    pub pid: u32,
    /// 1: only calls with `__GFP_NOFAIL`.
    pub nofail_only: u32,
    /// Only calls of at least this many bytes.
    pub min_size: u64,
    /// Only tasks with this exact comm (NUL-padded); empty = any.
    pub comm: [u8; COMM_LEN],
    /// Only callers inside one of the first `n_ranges` entries of the
    /// `CALLER_RANGES` map (sorted, disjoint); 0 = any caller.
    pub n_ranges: u32,
    /// 1: also fold the calls that matter (NOFAIL, failed, NULL, slept,
    /// retried by hand) per kernel stack into `CHAINS` (`--chains`).
    pub chains: u32,
    /// Only tasks in this cgroup v2 or below it (its id, the cgroup
    /// directory's inode number); 0 = any (`--command-only`).
    pub cgroup_id: u64,
    /// The level of `cgroup_id` below the root (root = 0): the ancestor of
    /// a task's cgroup compared with it.
    pub cgroup_level: u32,
    pub _pad: u32,
}

/// `[start, end)` of kernel text whose calls a filter selects; entries of
/// the `CALLER_RANGES` array map, sorted by `start`, disjoint.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallerRange {
    pub start: u64,
    pub end: u64,
}

/// Key of the `CHAINS` aggregate: the call site and the kernel stack the
/// call was made from (`stack_id` from the `STACKS` map, `NO_STACK` when
/// the stack could not be taken).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainKey {
    pub caller: u64,
    pub stack_id: u32,
    pub _pad: u32,
}

/// `ChainKey::stack_id` of a call whose stack was lost.
pub const NO_STACK: u32 = u32::MAX;

/// Slots of the per-CPU health counter array (`HEALTH` map).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Entry seen but the in-flight map was full: call not tracked.
    InflightFull = 0,
    /// Call finished but the caller map was full: call not counted.
    CallersFull = 1,
    /// Exit seen with no matching entry (attach raced a call in progress).
    OrphanExit = 2,
    /// A record whose exit was never seen, replaced by the task's next call.
    StaleReplaced = 3,
    /// `--chains`: the kernel stack could not be stored (stack map full or
    /// a hash collision); the call is counted under `NO_STACK`.
    StackLost = 4,
    /// `--chains`: the chain map was full; the call is in its caller's
    /// row but in no chain.
    ChainsFull = 5,
    /// Tracepoint and sentinel modes: a vmalloc event whose `caller`
    /// argument could not be found in stack memory; or an event whose
    /// stack could not be taken, or was written by another program on the
    /// CPU around its reading, twice (it may not have been a vmalloc
    /// call); not counted.
    CallerUnread = 6,
    /// `--what-if`: a retry whose waiter slot another task held; it is
    /// counted as a retry but neither futile nor freed.
    WaiterBusy = 7,
}

/// Number of slots in the `HEALTH` map.
pub const HEALTH_SLOTS: u32 = 8;

/// Tracepoint mode: what the current task's vmalloc call showed last, for
/// telling a retry sleep's stage (nofail-ebpf/src/tracepoints.rs).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TpTask {
    /// Stack address of the call's return-address slot: the call's identity.
    pub slot: u64,
    /// Start of the vmap area the call got (0: none); its free ends the
    /// call for stage purposes, so a later call from the same frame does
    /// not inherit `area_ok`.
    pub addr: u64,
    /// The call got its vmap area (a later sleep is the mapping stage's).
    pub area_ok: u32,
    /// An area failure was counted from `alloc_vmap_area` and its retry
    /// sleep has not come yet.
    pub area_failed: u32,
}

/// Tracepoint mode: a retry sleep in progress, keyed by its timer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TpSleep {
    pub start_ns: u64,
    pub caller: u64,
    /// The sleeping task (the sleep ends in timer context).
    pub tid: u32,
    pub _pad: u32,
}

/// Tracepoint mode: a task whose last retry sleep began longer ago than
/// this is out of its loop (a turn is one jiffy plus the attempt).
pub const TP_LOOP_GAP_NS: u64 = 1_000_000_000;

/// `--events`: what the programs send, bits of the `EVENT_KINDS` load-time
/// constant and the `Event::kind` of one record.
pub const EVENT_INJECTED: u32 = 1;
pub const EVENT_RETRY: u32 = 2;
pub const EVENT_STUCK: u32 = 4;
/// `EVENT_KINDS` bit: also take the kernel stack (`Event::stack_id`).
pub const EVENT_STACK: u32 = 8;
/// Bytes of the `EVENTS` ring buffer (a power of two, in pages).
pub const EVENT_RING_BYTES: u32 = 256 * 1024;

/// `Event::reason` bits of an injected failure: which terms of the rule
/// applied to it (none: every eligible allocation fails).
pub const REASON_FAIL_FIRST: u32 = 1;
pub const REASON_EVERY: u32 = 2;
pub const REASON_PROBABILITY: u32 = 4;
pub const REASON_TIMES: u32 = 8;
pub const REASON_DRY_RUN: u32 = 16;

/// One `--events` record in the `EVENTS` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// bpf_ktime_get_ns() (CLOCK_MONOTONIC) when it happened.
    pub ktime_ns: u64,
    pub caller: u64,
    pub size: u64,
    pub call_start_ns: u64,
    /// Injected: the eligible allocation's number in the run (1-based).
    /// STUCK: failures of the call so far.
    pub seq: u64,
    /// Injected: failures spent against --times, this one included (0
    /// without --times). Retry: requested sleep in jiffies.
    pub spent: u64,
    pub tgid: u32,
    pub tid: u32,
    /// `EVENT_INJECTED`, `EVENT_RETRY` or `EVENT_STUCK`.
    pub kind: u32,
    /// `STAGE_*`: the stage failed (injected) or being retried (retry).
    pub stage: u32,
    /// The call's attempt the event belongs to (1-based): the failed one.
    pub attempt: u32,
    /// Injected: `REASON_*` bits.
    pub reason: u32,
    pub gfp: u32,
    /// In the `STACKS` map; < 0 when not asked for or lost.
    pub stack_id: i32,
    pub comm: [u8; COMM_LEN],
}

/// Slots of the per-CPU `EVENT_STATS` counters.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventCounter {
    /// Records written to the ring buffer.
    Sent = 0,
    /// Left out by --events-rate.
    OverRate = 1,
    /// Left out because the ring buffer was full (the reader lagged).
    RingFull = 2,
}

pub const EVENT_COUNTERS: u32 = 3;

/// Names of the kernel side's maps, as userspace looks them up (the eBPF
/// crate declares each as a `#[map]` static of this name; a host test
/// checks the built object has every one).
pub mod map_names {
    pub const CALLERS: &str = "CALLERS";
    pub const CALLS: &str = "CALLS";
    pub const CALLER_RANGES: &str = "CALLER_RANGES";
    pub const CHAINS: &str = "CHAINS";
    pub const ENOMEM_SYSCALLS: &str = "ENOMEM_SYSCALLS";
    pub const EVENTS: &str = "EVENTS";
    pub const EVENT_STATS: &str = "EVENT_STATS";
    pub const FILTER: &str = "FILTER";
    pub const HEALTH: &str = "HEALTH";
    pub const INFLIGHT: &str = "INFLIGHT";
    pub const INJECT_RULE: &str = "INJECT_RULE";
    pub const INJECT_STATS: &str = "INJECT_STATS";
    pub const STACKS: &str = "STACKS";
    pub const VERDICT: &str = "VERDICT";
    /// Every map userspace reads or writes.
    pub const ALL: &[&str] = &[
        CALLERS,
        CALLS,
        CALLER_RANGES,
        CHAINS,
        ENOMEM_SYSCALLS,
        EVENTS,
        EVENT_STATS,
        FILTER,
        HEALTH,
        INFLIGHT,
        INJECT_RULE,
        INJECT_STATS,
        STACKS,
        VERDICT,
    ];
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integer fields only, no padding.
    unsafe impl aya::Pod for super::CallerStats {}
    unsafe impl aya::Pod for super::Inflight {}
    unsafe impl aya::Pod for super::LastNull {}
    unsafe impl aya::Pod for super::Filter {}
    unsafe impl aya::Pod for super::InjectRule {}
    unsafe impl aya::Pod for super::SyscallKey {}
    unsafe impl aya::Pod for super::CallerRange {}
    unsafe impl aya::Pod for super::ChainKey {}
    unsafe impl aya::Pod for super::TpTask {}
    unsafe impl aya::Pod for super::TpSleep {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::Waiter {}
}

#[cfg(test)]
mod capture_model;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 1);
        assert_eq!(log2_bucket(2), 2);
        assert_eq!(log2_bucket(3), 2);
        assert_eq!(log2_bucket(4), 3);
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
        for v in [5u64, 1000, 65535, 65536, 1 << 38] {
            assert_eq!(
                log2_bucket(v),
                ((64 - v.leading_zeros()) as usize).min(HIST_BUCKETS - 1),
                "{v}"
            );
        }
    }

    #[test]
    fn no_implicit_padding() {
        // Sizes are the sum of the fields: any hole would show here.
        assert_eq!(
            core::mem::size_of::<CallerStats>(),
            8 * (4 + 4 + PT_LEVELS + 8 + 4 + 5 * HIST_BUCKETS)
        );
        assert_eq!(
            core::mem::size_of::<Inflight>(),
            8 * 4 + 4 * 6 + 4 * 2 + 4 * PT_LEVELS + 4 * 2 + 8 * 2 + COMM_LEN + 4 * 8
                // window, what-if sums, futile/freed, slot owner
                + 8 * 2 + 8 * 2 + 4 * 2 + 8
        );
        assert_eq!(core::mem::size_of::<Waiter>(), 4 * 2 + 8 * 4);
        assert_eq!(core::mem::size_of::<Event>(), 8 * 6 + 4 * 8 + COMM_LEN);
        assert_eq!(core::mem::size_of::<InjectRule>(), 4 * 8 + 8);
        assert_eq!(
            core::mem::size_of::<Filter>(),
            4 * 2 + 8 + COMM_LEN + 4 * 2 + 8 + 4 * 2
        );
        assert_eq!(core::mem::size_of::<CallerRange>(), 16);
        assert_eq!(core::mem::size_of::<ChainKey>(), 16);
    }

    #[test]
    fn merge_sums_and_takes_max() {
        let mut a = CallerStats {
            calls: 1,
            max_retries: 3,
            ..Default::default()
        };
        a.latency_hist[5] = 1;
        let mut b = CallerStats {
            calls: 2,
            max_retries: 2,
            ..Default::default()
        };
        b.latency_hist[5] = 4;
        a.merge(&b);
        assert_eq!((a.calls, a.max_retries, a.latency_hist[5]), (3, 3, 5));
    }
}
