// SPDX-License-Identifier: MIT OR Apache-2.0
//! The report `trace`, `inject` and `serve` produce and `report` reads
//! back: a row per call site (the counters of counters.rs, page-table
//! failures, per-call histograms and what derives from them), totals,
//! calls in flight, health. Field by field in docs/report-schema.md.

use std::collections::BTreeMap;

use nofail_common::{HIST_BUCKETS, PT_LEVELS};
use serde::{Deserialize, Serialize};

use crate::model::{
    Mode,
    counters::{Aggregate, Counts},
    filter::FilterView,
    health::HealthCounts,
    hist::{self, Hist},
    inject::Injection,
    mode::{Attached, Follow, Needs, Sees},
};

/// What the JSON report calls itself; `SCHEMA_VERSION` changes whenever a
/// field changes meaning or goes away (docs/report-schema.md).
pub const SCHEMA: &str = "nofail-report";
pub const SCHEMA_VERSION: u32 = 2;

/// Page-table levels in `pt_failures` order.
pub const PT_LEVEL_NAMES: [&str; PT_LEVELS] = ["pte", "pmd", "pud", "p4d"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallerRow {
    /// `symbol+0xoff` of the call site.
    pub caller: String,
    pub address: String,
    /// The counters (model/counters.rs), each a field of the row.
    #[serde(flatten)]
    pub counts: Counts,
    /// Stage failures in any call (area + mapping).
    pub failures: u64,
    pub pt_failures: BTreeMap<String, u64>,
    pub mean_latency_ns: u64,
    /// Upper bounds of the histogram buckets holding p50/p99.
    pub p50_latency_ns: Option<u64>,
    pub p99_latency_ns: Option<u64>,
    pub p50_retries: Option<u64>,
    pub p99_retries: Option<u64>,
    pub histograms: CallerHists,
}

/// Per-call histograms of one call site; each counts every finished call.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallerHists {
    /// NOFAIL loop turns per call (0 for calls without __GFP_NOFAIL).
    pub retries_per_call: Hist,
    pub latency_ns: Hist,
    /// Time slept in retry sleeps per call.
    pub slept_per_call_ns: Hist,
    /// `--what-if`: time from the first relevant free to the wake, per
    /// retry that had one; absent when none had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_delay_ns: Option<Hist>,
    /// `--what-if`: per NOFAIL call, its retry sleeps' time had the first
    /// relevant free woken it; absent without --what-if.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whatif_slept_per_call_ns: Option<Hist>,
}

impl CallerRow {
    /// The row of a call site from what it adds up to.
    pub fn new(caller: String, address: u64, a: &Aggregate) -> Self {
        let d = Derived::of(a);
        CallerRow {
            caller,
            address: format!("{address:#x}"),
            failures: d.failures,
            pt_failures: pt_map(a.pt_failures),
            mean_latency_ns: d.mean_latency_ns,
            p50_latency_ns: d.p50_latency_ns,
            p99_latency_ns: d.p99_latency_ns,
            p50_retries: d.p50_retries,
            p99_retries: d.p99_retries,
            histograms: CallerHists {
                retries_per_call: Hist::from_log2(&a.retries_hist, "retries"),
                latency_ns: Hist::from_log2(&a.latency_hist, "ns"),
                slept_per_call_ns: Hist::from_log2(&a.slept_hist, "ns"),
                wake_delay_ns: non_empty(&a.wake_delay_hist),
                whatif_slept_per_call_ns: non_empty(&a.whatif_hist),
            },
            counts: a.counts.clone(),
        }
    }

    pub fn retries(&self) -> u64 {
        self.counts.retries()
    }

    pub fn is_open_coded_loop(&self) -> bool {
        self.counts.open_coded_retries > 0
    }

    /// What the row adds up to, for outputs that fold rows together
    /// (Prometheus' "other") or walk log2 buckets. Read-back reports were
    /// validated; a histogram that does not convert counts as empty.
    pub fn aggregate(&self) -> Aggregate {
        let h = &self.histograms;
        let log2 = |h: &Hist| h.to_log2().unwrap_or([0; HIST_BUCKETS]);
        Aggregate {
            counts: self.counts.clone(),
            pt_failures: PT_LEVEL_NAMES.map(|l| self.pt_failures.get(l).copied().unwrap_or(0)),
            retries_hist: log2(&h.retries_per_call),
            latency_hist: log2(&h.latency_ns),
            slept_hist: log2(&h.slept_per_call_ns),
            wake_delay_hist: h.wake_delay_ns.as_ref().map_or([0; HIST_BUCKETS], log2),
            whatif_hist: h
                .whatif_slept_per_call_ns
                .as_ref()
                .map_or([0; HIST_BUCKETS], log2),
        }
    }
}

/// The fields a caller row derives from its counters and histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Derived {
    pub failures: u64,
    pub mean_latency_ns: u64,
    pub p50_latency_ns: Option<u64>,
    pub p99_latency_ns: Option<u64>,
    pub p50_retries: Option<u64>,
    pub p99_retries: Option<u64>,
}

impl Derived {
    /// As nofail computes them from what a call site adds up to.
    pub fn of(a: &Aggregate) -> Self {
        let c = &a.counts;
        Self {
            failures: c.failures(),
            mean_latency_ns: c.total_latency_ns.checked_div(c.calls).unwrap_or(0),
            p50_latency_ns: hist::quantile(&a.latency_hist, 0.5),
            p99_latency_ns: hist::quantile(&a.latency_hist, 0.99),
            p50_retries: hist::quantile(&a.retries_hist, 0.5),
            p99_retries: hist::quantile(&a.retries_hist, 0.99),
        }
    }

    /// As a row carries them.
    pub fn written(r: &CallerRow) -> Self {
        Self {
            failures: r.failures,
            mean_latency_ns: r.mean_latency_ns,
            p50_latency_ns: r.p50_latency_ns,
            p99_latency_ns: r.p99_latency_ns,
            p50_retries: r.p50_retries,
            p99_retries: r.p99_retries,
        }
    }

    /// Each field: its JSON name, what it derives from, its value.
    pub fn fields(&self) -> [(&'static str, &'static str, Option<u64>); 6] {
        [
            (
                "failures",
                "area_failures + mapping_failures",
                Some(self.failures),
            ),
            (
                "mean_latency_ns",
                "total_latency_ns / calls",
                Some(self.mean_latency_ns),
            ),
            (
                "p50_latency_ns",
                "histogram latency_ns",
                self.p50_latency_ns,
            ),
            (
                "p99_latency_ns",
                "histogram latency_ns",
                self.p99_latency_ns,
            ),
            (
                "p50_retries",
                "histogram retries_per_call",
                self.p50_retries,
            ),
            (
                "p99_retries",
                "histogram retries_per_call",
                self.p99_retries,
            ),
        ]
    }
}

/// A `--what-if` histogram, absent when nothing was counted in it.
fn non_empty(h: &[u64; HIST_BUCKETS]) -> Option<Hist> {
    h.iter().any(|&n| n > 0).then(|| Hist::from_log2(h, "ns"))
}

/// A call still inside vmalloc when the report was taken.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InflightRow {
    pub tid: u32,
    pub pid: u32,
    pub comm: String,
    pub caller: String,
    pub size: u64,
    pub age_ns: u64,
    pub area_failures: u64,
    pub mapping_failures: u64,
    pub pt_failures: BTreeMap<String, u64>,
    pub sleeps_so_far: u64,
    pub slept_ns: u64,
    /// Older than the --stuck-after threshold.
    pub stuck: bool,
}

/// The report `trace`, `inject` and `serve` produce, and `report` reads
/// back. Documented field by field in docs/report-schema.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub schema: String,
    pub schema_version: u32,
    pub nofail_version: String,
    /// "trace" or "inject".
    pub command: String,
    pub kernel: String,
    /// "kprobe", "fentry", or "mixed" when roles differ.
    pub mode: String,
    /// Unix time the tracer was attached.
    pub started_unix_s: u64,
    pub duration_s: f64,
    pub filters: FilterView,
    pub attached: Vec<Attached>,
    pub warnings: Vec<String>,
    /// Sums over `callers` (recomputed and compared when a report is read
    /// back).
    #[serde(default)]
    pub totals: Totals,
    pub callers: Vec<CallerRow>,
    /// `--chains`: the calls that matter per call site and call chain
    /// (empty without `--chains`).
    #[serde(default)]
    pub chains: Vec<crate::model::chains::ChainRow>,
    pub in_flight: Vec<InflightRow>,
    pub health: HealthCounts,
    /// Present for `nofail inject`.
    pub injection: Option<Injection>,
}

impl Report {
    /// What the run could count, from the report alone (live or read back):
    /// its mode, and the flags that add counts. `--what-if` is its
    /// vmap-free role attached as a kprobe or fentry (tracepoint mode has
    /// a vmap-free role of its own, which is not `--what-if`).
    pub fn sees(&self) -> Sees {
        let follow = match self.mode.as_str() {
            "tracepoint" => Follow::Tracepoint,
            "sentinel" => Follow::Sentinel,
            _ => Follow::Full,
        };
        Sees {
            follow,
            what_if: self
                .attached
                .iter()
                .any(|a| a.role == "vmap-free" && matches!(a.mode, Mode::Kprobe | Mode::Fentry)),
            chains: self.filters.chains.is_some(),
            injection: self.injection.is_some(),
        }
    }

    /// Taken with `--what-if` (and so in the full mode).
    pub fn what_if(&self) -> bool {
        self.sees().counts(Needs::WhatIf)
    }
}

/// Sums over the caller rows.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Totals {
    pub callers: u64,
    #[serde(flatten)]
    pub counts: Counts,
}

impl Totals {
    pub fn of(callers: &[CallerRow]) -> Self {
        let mut counts = Counts::default();
        for r in callers {
            counts.add(&r.counts);
        }
        Self {
            callers: callers.len() as u64,
            counts,
        }
    }
}

pub fn pt_map(levels: [u64; PT_LEVELS]) -> BTreeMap<String, u64> {
    PT_LEVEL_NAMES
        .iter()
        .map(|l| l.to_string())
        .zip(levels)
        .collect()
}

/// Rows sorted by retries (NOFAIL and open-coded), then calls
/// (descending), then caller name, each call site named by `name`. Call
/// sites with no finished call but open-coded retries still show, as do
/// sentinel mode's rows (failures only, no call counts).
pub fn rows(
    sites: &BTreeMap<u64, Aggregate>,
    mut name: impl FnMut(u64) -> String,
) -> Vec<CallerRow> {
    let mut rows: Vec<CallerRow> = sites
        .iter()
        .filter(|(_, a)| !a.is_empty())
        .map(|(&addr, a)| CallerRow::new(name(addr), addr, a))
        .collect();
    rows.sort_by(|a, b| {
        (b.counts.all_retries())
            .cmp(&a.counts.all_retries())
            .then(b.counts.calls.cmp(&a.counts.calls))
            .then_with(|| a.caller.cmp(&b.caller))
    });
    rows
}

/// A report around `callers`, for tests.
#[cfg(test)]
pub fn sample(callers: Vec<CallerRow>) -> Report {
    Report {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        nofail_version: "0.1.0".into(),
        command: "trace".into(),
        kernel: "7.2.13".into(),
        mode: "kprobe".into(),
        started_unix_s: 0,
        duration_s: 1.0,
        filters: FilterView::default(),
        attached: vec![],
        warnings: vec![],
        totals: Totals::of(&callers),
        callers,
        chains: vec![],
        in_flight: vec![],
        health: HealthCounts::default(),
        injection: None,
    }
}

/// A caller row from kernel-style stats, for tests.
#[cfg(test)]
pub fn sample_row(caller: &str, s: &nofail_common::CallerStats) -> CallerRow {
    CallerRow::new(caller.into(), 0xffffffff81000000, &Aggregate::of_stats(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::symbols::Kallsyms;

    fn syms() -> Kallsyms {
        Kallsyms::parse("ffffffff81000000 T a_fn\nffffffff82000000 T b_fn\n")
    }

    #[test]
    fn rows_sorted_by_retries_then_calls() {
        use nofail_common::CallerStats;
        let mut stats = BTreeMap::new();
        stats.insert(
            0xffffffff81000010,
            CallerStats {
                calls: 2,
                nofail_calls: 1,
                latency_ns: 300,
                area_retries: 3,
                ..Default::default()
            },
        );
        stats.insert(
            0xffffffff82000020,
            CallerStats {
                calls: 5,
                null_returns: 1,
                latency_ns: 500,
                ..Default::default()
            },
        );
        stats.insert(0xffffffff82000030, CallerStats::default());
        let sites = stats
            .iter()
            .map(|(&a, s)| (a, Aggregate::of_stats(s)))
            .collect();
        let syms = syms();
        let rows = rows(&sites, |a| syms.resolve(a));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].caller, "a_fn+0x10");
        assert_eq!(rows[0].retries(), 3);
        assert_eq!(rows[1].caller, "b_fn+0x20");
        assert_eq!(rows[1].mean_latency_ns, 100);
    }
}
