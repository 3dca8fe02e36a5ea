// SPDX-License-Identifier: MIT OR Apache-2.0
//! Every counter of a call site, defined once. The table below gives each
//! its JSON name (caller rows, totals, chain rows), what it counts, how
//! two copies merge (per CPU, callers folded into "other"), its column in
//! the text table and its Prometheus series; the kernel's `CallerStats`
//! field it is read from is named beside it. Adding a counter is one line
//! here (and the kernel field that feeds it).

use nofail_common::{CallerStats, HIST_BUCKETS, PT_LEVELS};
use serde::{Deserialize, Serialize};

use crate::model::mode::Needs;

/// How two copies of a counter combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    Sum,
    /// Largest in one call: the larger copy wins.
    Max,
}

/// What a counter's number is, for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    /// Nanoseconds: milliseconds in text, seconds in Prometheus.
    Ns,
}

/// A counter's Prometheus series: the family, the labels that set it
/// apart from the family's other members, and what a run must have seen
/// to count it (absent otherwise, not exported as 0).
#[derive(Debug, Clone, Copy)]
pub struct Series {
    pub family: &'static str,
    pub help: &'static str,
    pub labels: &'static str,
    pub needs: Needs,
}

#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// JSON field name.
    pub name: &'static str,
    pub unit: Unit,
    pub merge: Merge,
    /// Header of its column in the per-caller text table.
    pub column: Option<&'static str>,
    pub series: Option<Series>,
    pub get: fn(&Counts) -> u64,
}

impl Counter {
    /// Merges `b` into `a` by this counter's rule, saturating (read-back
    /// reports may carry any value).
    pub fn merged(&self, a: u64, b: u64) -> u64 {
        match self.merge {
            Merge::Sum => a.saturating_add(b),
            Merge::Max => a.max(b),
        }
    }
}

macro_rules! counters {
    ($(
        $(#[doc = $doc:literal])+
        $field:ident <- $stat:ident, $unit:ident, $merge:ident, $column:expr, $series:expr;
    )*) => {
        /// The scalar counters of a call site (or a chain, or a sum).
        #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
        #[serde(default)]
        pub struct Counts {
            $($(#[doc = $doc])+ pub $field: u64,)*
        }

        /// The table, in the order of the text columns and the exposition.
        pub const COUNTERS: &[Counter] = &[$(Counter {
            name: stringify!($field),
            unit: Unit::$unit,
            merge: Merge::$merge,
            column: $column,
            series: $series,
            get: |c: &Counts| c.$field,
        },)*];

        impl Counts {
            /// The kernel's aggregate, field by field as the table says.
            pub fn of_stats(s: &CallerStats) -> Self {
                Self { $($field: s.$stat,)* }
            }

            /// Each counter, in table order.
            fn for_each_mut(&mut self, mut f: impl FnMut(&mut u64)) {
                $(f(&mut self.$field);)*
            }

            /// Adds `o` in, each counter by its merge rule.
            pub fn add(&mut self, o: &Self) {
                let mut i = 0;
                $(
                    self.$field = COUNTERS[i].merged(self.$field, o.$field);
                    i += 1;
                )*
                debug_assert_eq!(i, COUNTERS.len());
            }
        }
    };
}

const fn series(
    family: &'static str,
    help: &'static str,
    labels: &'static str,
    needs: Needs,
) -> Option<Series> {
    Some(Series {
        family,
        help,
        labels,
        needs,
    })
}

const FAILURES: &str = "Stage failures inside vmalloc: area (vmap area) or mapping (page tables).";
const RETRIES: &str = "Turns of the __GFP_NOFAIL retry loop per stage.";

counters! {
    /// Finished vmalloc calls.
    calls <- calls, Count, Sum, Some("CALLS"),
        series("nofail_vmalloc_calls_total", "Finished vmalloc calls per call site.", "", Needs::Calls);
    /// Finished calls with __GFP_NOFAIL.
    nofail_calls <- nofail_calls, Count, Sum, Some("NOFAIL"),
        series("nofail_vmalloc_nofail_calls_total", "Finished vmalloc calls with __GFP_NOFAIL per call site.", "", Needs::EveryCall);
    /// Calls that returned NULL to their caller.
    null_returns <- null_returns, Count, Sum, Some("NULL"),
        series("nofail_vmalloc_null_returns_total", "vmalloc calls that returned NULL to their caller.", "", Needs::Returns);
    /// Failures of the area stage (`__get_vm_area_node` NULL), any call.
    area_failures <- area_failures, Count, Sum, Some("F-AREA"),
        series("nofail_vmalloc_failures_total", FAILURES, ",stage=\"area\"", Needs::Nothing);
    /// Failures of the mapping stage (page tables), any call.
    mapping_failures <- mapping_failures, Count, Sum, Some("F-MAP"),
        series("nofail_vmalloc_failures_total", FAILURES, ",stage=\"mapping\"", Needs::Nothing);
    /// NOFAIL loop turns after an area failure.
    area_retries <- area_retries, Count, Sum, Some("R-AREA"),
        series("nofail_vmalloc_retries_total", RETRIES, ",stage=\"area\"", Needs::Nothing);
    /// NOFAIL loop turns after a mapping failure.
    mapping_retries <- mapping_retries, Count, Sum, Some("R-MAP"),
        series("nofail_vmalloc_retries_total", RETRIES, ",stage=\"mapping\"", Needs::Nothing);
    /// Retry sleeps (schedule_timeout_uninterruptible) inside calls.
    sleeps <- sleeps, Count, Sum, Some("SLEEPS"),
        series("nofail_retry_sleeps_total", "Retry sleeps (schedule_timeout_uninterruptible) inside vmalloc.", "", Needs::Nothing);
    /// Jiffies the retry sleeps asked for.
    sleep_jiffies <- sleep_jiffies, Count, Sum, None, None;
    /// Time slept in retry sleeps.
    slept_ns <- slept_ns, Ns, Sum, Some("SLEPT ms"),
        series("nofail_retry_slept_seconds_total", "Time spent in retry sleeps inside vmalloc.", "", Needs::Nothing);
    /// Most NOFAIL loop turns in one call.
    max_retries <- max_retries, Count, Max, Some("MAXR"), None;
    /// Calls that followed a NULL from the same call site in the same task
    /// within the retry window: an open-coded retry loop.
    open_coded_retries <- open_coded_retries, Count, Sum, Some("OPEN-CODED"),
        series("nofail_open_coded_retries_total", "Open-coded retries: calls repeated after a NULL from the same site and task.", "", Needs::Returns);
    /// Sleeps between such a NULL and the retry.
    open_coded_retry_sleeps <- open_coded_retry_sleeps, Count, Sum, None,
        series("nofail_open_coded_retry_sleeps_total", "Sleeps between open-coded retries.", "", Needs::Returns);
    /// Failures `nofail inject` caused in this caller's calls.
    injected <- injected, Count, Sum, None,
        series("nofail_injected_failures_total", "Sub-allocation failures nofail inject caused in this caller's calls.", "", Needs::Injection);
    /// Longest time slept in one call.
    max_slept_ns <- max_slept_ns, Ns, Max, None, None;
    /// Entry-to-exit time of finished calls, summed.
    total_latency_ns <- latency_ns, Ns, Sum, None, None;
    /// `--what-if`: NOFAIL retries after which nothing the failed stage
    /// needs had been freed since the failure (an event-driven wait would
    /// not have woken the task for them).
    futile_retries <- futile_retries, Count, Sum, None,
        series("nofail_whatif_futile_retries_total", "NOFAIL retries with nothing the failed stage needs freed since the failure (--what-if).", "", Needs::WhatIf);
    /// `--what-if`: NOFAIL retries with such a free before the wake.
    freed_retries <- freed_retries, Count, Sum, None,
        series("nofail_whatif_freed_retries_total", "NOFAIL retries after a free the failed stage could use (--what-if).", "", Needs::WhatIf);
    /// `--what-if`: time from the first relevant free to the task's wake,
    /// summed over those retries (what an event-driven wait would save).
    wake_delay_ns <- wake_delay_ns, Ns, Sum, None,
        series("nofail_whatif_wake_delay_seconds_total", "Time from the first relevant free to the retrying task's wake (--what-if).", "", Needs::WhatIf);
    /// `--what-if`: the retry sleeps' time had the first relevant free
    /// woken the task (futile sleeps count whole), next to `slept_ns`.
    whatif_slept_ns <- whatif_slept_ns, Ns, Sum, None,
        series("nofail_whatif_slept_seconds_total", "Retry sleep time had the first relevant free woken the task (--what-if).", "", Needs::WhatIf);
}

impl Counts {
    /// What changed since `earlier` of the same call site: sums by their
    /// difference; a maximum has no difference and stays as it is.
    pub fn since(&self, earlier: &Self) -> Self {
        let mut out = self.clone();
        let mut i = 0;
        out.for_each_mut(|v| {
            let c = &COUNTERS[i];
            if c.merge == Merge::Sum {
                *v = v.saturating_sub((c.get)(earlier));
            }
            i += 1;
        });
        out
    }

    /// Anything at all, maxima left out (a delta with only a maximum is
    /// no change).
    pub fn any(&self) -> bool {
        COUNTERS
            .iter()
            .any(|c| c.merge == Merge::Sum && (c.get)(self) > 0)
    }

    pub fn failures(&self) -> u64 {
        self.area_failures.saturating_add(self.mapping_failures)
    }

    pub fn retries(&self) -> u64 {
        self.area_retries.saturating_add(self.mapping_retries)
    }

    /// Loop turns of either kind: NOFAIL retries and open-coded retries
    /// (the order of rows everywhere).
    pub fn all_retries(&self) -> u64 {
        self.retries().saturating_add(self.open_coded_retries)
    }
}

/// Log2 histograms of finished calls (`nofail_common::log2_bucket`).
pub type Log2 = [u64; HIST_BUCKETS];

/// Everything a call site adds up to: the counters, page-table failures
/// per level and the per-call histograms. Per-CPU copies of the kernel's
/// aggregate, and callers folded together, merge through `add`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    pub counts: Counts,
    pub pt_failures: [u64; PT_LEVELS],
    pub retries_hist: Log2,
    pub latency_hist: Log2,
    pub slept_hist: Log2,
    /// `--what-if`: wake delay per freed retry; what-if stall per call.
    pub wake_delay_hist: Log2,
    pub whatif_hist: Log2,
}

impl Default for Aggregate {
    fn default() -> Self {
        Self {
            counts: Counts::default(),
            pt_failures: [0; PT_LEVELS],
            retries_hist: [0; HIST_BUCKETS],
            latency_hist: [0; HIST_BUCKETS],
            slept_hist: [0; HIST_BUCKETS],
            wake_delay_hist: [0; HIST_BUCKETS],
            whatif_hist: [0; HIST_BUCKETS],
        }
    }
}

impl Aggregate {
    pub fn of_stats(s: &CallerStats) -> Self {
        Self {
            counts: Counts::of_stats(s),
            pt_failures: s.pt_failures,
            retries_hist: s.retries_hist,
            latency_hist: s.latency_hist,
            slept_hist: s.slept_hist,
            wake_delay_hist: s.wake_delay_hist,
            whatif_hist: s.whatif_hist,
        }
    }

    pub fn add(&mut self, o: &Self) {
        self.counts.add(&o.counts);
        let sum = |a: &mut [u64], b: &[u64]| {
            for (x, y) in a.iter_mut().zip(b) {
                *x = x.saturating_add(*y);
            }
        };
        sum(&mut self.pt_failures, &o.pt_failures);
        sum(&mut self.retries_hist, &o.retries_hist);
        sum(&mut self.latency_hist, &o.latency_hist);
        sum(&mut self.slept_hist, &o.slept_hist);
        sum(&mut self.wake_delay_hist, &o.wake_delay_hist);
        sum(&mut self.whatif_hist, &o.whatif_hist);
    }

    /// Anything to show: calls, or (sentinel mode, open-coded loops)
    /// failures, NULLs, sleeps without a counted call.
    pub fn is_empty(&self) -> bool {
        let c = &self.counts;
        c.calls + c.open_coded_retries + c.null_returns + c.failures() + c.sleeps == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_every_field_once() {
        let json = serde_json::to_value(Counts::default()).unwrap();
        let fields: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), COUNTERS.len());
        for c in COUNTERS {
            assert!(
                json.get(c.name).is_some(),
                "{} is not a Counts field",
                c.name
            );
        }
    }

    #[test]
    fn since_subtracts_sums_and_keeps_maxima() {
        let earlier = Counts {
            calls: 2,
            max_retries: 5,
            ..Default::default()
        };
        let now = Counts {
            calls: 7,
            max_retries: 5,
            sleeps: 1,
            ..Default::default()
        };
        let d = now.since(&earlier);
        assert_eq!((d.calls, d.sleeps, d.max_retries), (5, 1, 5));
        assert!(d.any());
        assert!(!now.since(&now).any(), "only a maximum left: no change");
    }

    #[test]
    fn merge_rules_follow_the_table() {
        let s = CallerStats {
            calls: 2,
            max_retries: 5,
            latency_ns: 7,
            open_coded_retries: 1,
            ..Default::default()
        };
        let mut a = Counts::of_stats(&s);
        assert_eq!(a.total_latency_ns, 7);
        a.add(&Counts {
            calls: 3,
            max_retries: 4,
            open_coded_retries: u64::MAX,
            ..Default::default()
        });
        assert_eq!(a.calls, 5);
        assert_eq!(a.max_retries, 5, "a maximum, not a sum");
        assert_eq!(a.open_coded_retries, u64::MAX, "saturating");
        // Every getter reads its own field.
        let mut probe = Counts::default();
        probe.add(&Counts::of_stats(&CallerStats {
            sleeps: 9,
            ..Default::default()
        }));
        let sleeps = COUNTERS.iter().find(|c| c.name == "sleeps").unwrap();
        assert_eq!((sleeps.get)(&probe), 9);
        assert_eq!(
            COUNTERS.iter().map(|c| (c.get)(&probe)).sum::<u64>(),
            9,
            "only the sleeps getter reads sleeps"
        );
    }
}
