// SPDX-License-Identifier: MIT OR Apache-2.0
//! What nofail could not see, counted: full maps, skipped program runs,
//! lost stacks, events left out (the report's `health`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct HealthCounts {
    /// Calls not tracked because the in-flight map was full.
    pub inflight_full: u64,
    /// Calls not counted because the caller map was full.
    pub callers_full: u64,
    /// Exits whose entry happened before attach (or was skipped).
    pub orphan_exits: u64,
    /// Records whose exit was skipped, replaced by the task's next call.
    pub stale_replaced: u64,
    /// `--chains`: calls whose kernel stack could not be stored (counted
    /// under the chain "(stack lost)").
    #[serde(default)]
    pub stacks_lost: u64,
    /// `--chains`: calls in no chain because the chain map was full.
    #[serde(default)]
    pub chains_full: u64,
    /// Tracepoint and sentinel modes: vmalloc events whose caller could not
    /// be read from the stack (a kretprobe on vmalloc's core hides it), and
    /// events whose stack could not be taken or was written by another
    /// program on the CPU around its reading, twice (each may not have been
    /// a vmalloc call); not counted.
    #[serde(default)]
    pub caller_unread: u64,
    /// `--what-if`: retries whose waiter slot another task held, counted
    /// as retries but neither futile nor freed.
    #[serde(default)]
    pub waiter_busy: u64,
    /// Program runs the kernel skipped (recursion protection); each is an
    /// event nofail did not see.
    pub missed_runs: u64,
    pub programs: Vec<ProgStats>,
    /// `--events`: lines shown and records left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<EventHealth>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct ProgStats {
    pub program: String,
    /// Runs and time spent in the program body; both stay 0 unless the
    /// kernel's run statistics are on (sysctl kernel.bpf_stats_enabled).
    pub run_count: u64,
    pub run_time_ns: u64,
    pub recursion_misses: u64,
    /// Instructions of the program as loaded (after the verifier removed
    /// dead paths, e.g. `--events` when off).
    pub insns: u64,
}

/// What happened to the events of a run (JSON health `events`).
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct EventHealth {
    /// Lines printed (and JSON lines written).
    pub shown: u64,
    /// Records the kernel side sent; equal to `shown` once drained.
    pub sent: u64,
    /// Left out: over `rate_per_s` plus with the ring buffer full.
    pub dropped: u64,
    pub over_rate: u64,
    pub ring_full: u64,
    pub rate_per_s: u64,
}
