// SPDX-License-Identifier: MIT OR Apache-2.0
//! Reads the in-kernel aggregates and turns them into the per-caller report
//! (text and JSON).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{HashMap, PerCpuArray, PerCpuHashMap},
};
use nofail_common::{CallerStats, HIST_BUCKETS, Health, Inflight, PT_LEVELS};
use serde::{Deserialize, Serialize};

use crate::{
    filter::FilterArgs,
    hist::{self, Hist},
    inject::{Behaviour, InjectCounts, InjectRuleView},
    symbols::Kallsyms,
    tracer::Attached,
};

/// What the JSON report calls itself; `SCHEMA_VERSION` changes whenever a
/// field changes meaning or goes away (docs/report-schema.md).
pub const SCHEMA: &str = "nofail-report";
pub const SCHEMA_VERSION: u32 = 1;

/// Page-table levels in `pt_failures` order.
pub const PT_LEVEL_NAMES: [&str; PT_LEVELS] = ["pte", "pmd", "pud", "p4d"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CallerRow {
    /// `symbol+0xoff` of the call site.
    pub caller: String,
    pub address: String,
    pub calls: u64,
    pub nofail_calls: u64,
    pub null_returns: u64,
    /// Stage failures in any call (area + mapping).
    pub failures: u64,
    pub area_failures: u64,
    pub mapping_failures: u64,
    /// Loop turns of NOFAIL calls, per stage.
    pub area_retries: u64,
    pub mapping_retries: u64,
    pub pt_failures: BTreeMap<String, u64>,
    pub sleeps: u64,
    pub sleep_jiffies: u64,
    pub slept_ns: u64,
    pub max_retries: u64,
    /// Calls that retried by hand after a NULL from the same site.
    pub open_coded_retries: u64,
    pub open_coded_retry_sleeps: u64,
    /// Failures `nofail inject` caused in this caller's calls.
    pub injected: u64,
    pub max_slept_ns: u64,
    pub total_latency_ns: u64,
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
}

impl CallerRow {
    pub fn retries(&self) -> u64 {
        self.area_retries + self.mapping_retries
    }

    pub fn is_open_coded_loop(&self) -> bool {
        self.open_coded_retries > 0
    }

    /// The row back in the kernel's form, for code that sums or walks
    /// histograms. Read-back reports were validated; a bucket that does not
    /// convert counts as empty.
    pub fn stats(&self) -> CallerStats {
        let h = &self.histograms;
        let log2 = |h: &Hist| h.to_log2().unwrap_or([0; HIST_BUCKETS]);
        CallerStats {
            calls: self.calls,
            nofail_calls: self.nofail_calls,
            null_returns: self.null_returns,
            latency_ns: self.total_latency_ns,
            area_failures: self.area_failures,
            mapping_failures: self.mapping_failures,
            area_retries: self.area_retries,
            mapping_retries: self.mapping_retries,
            pt_failures: PT_LEVEL_NAMES.map(|l| self.pt_failures.get(l).copied().unwrap_or(0)),
            sleeps: self.sleeps,
            slept_ns: self.slept_ns,
            sleep_jiffies: self.sleep_jiffies,
            max_retries: self.max_retries,
            hand_retries: self.open_coded_retries,
            hand_retry_sleeps: self.open_coded_retry_sleeps,
            injected: self.injected,
            max_slept_ns: self.max_slept_ns,
            latency_hist: log2(&h.latency_ns),
            retries_hist: log2(&h.retries_per_call),
            slept_hist: log2(&h.slept_per_call_ns),
        }
    }
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
    /// Tracepoint mode: vmalloc events whose caller could not be read from
    /// the stack (a kretprobe on vmalloc's core hides it); not counted.
    #[serde(default)]
    pub caller_unread: u64,
    /// Program runs the kernel skipped (recursion protection); each is an
    /// event nofail did not see.
    pub missed_runs: u64,
    pub programs: Vec<crate::progstats::ProgStats>,
    /// `--events`: lines shown and records left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<crate::events::EventHealth>,
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
    /// Sums over `callers` (recomputed when a report is read back).
    #[serde(default)]
    pub totals: Totals,
    pub callers: Vec<CallerRow>,
    /// `--chains`: the calls that matter per call site and call chain
    /// (empty without `--chains`).
    #[serde(default)]
    pub chains: Vec<crate::chains::ChainRow>,
    pub in_flight: Vec<InflightRow>,
    pub health: HealthCounts,
    /// Present for `nofail inject`.
    pub injection: Option<Injection>,
}

/// The in-kernel filter the counts were taken under.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FilterView {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// `--caller` patterns, comma-separated.
    pub caller: Option<String>,
    /// `--module` names, comma-separated.
    #[serde(default)]
    pub module: Option<String>,
    pub nofail_only: bool,
    pub min_size: Option<u64>,
    /// `--chains` depth.
    #[serde(default)]
    pub chains: Option<u32>,
}

impl From<&FilterArgs> for FilterView {
    fn from(f: &FilterArgs) -> Self {
        Self {
            pid: f.pid,
            comm: f.comm.clone(),
            caller: (!f.caller.is_empty()).then(|| f.caller.join(",")),
            module: (!f.module.is_empty()).then(|| f.module.join(",")),
            nofail_only: f.nofail_only,
            min_size: f.min_size,
            chains: f.chains,
        }
    }
}

/// The counters a caller row, the totals and a `--chains` row share.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Counts {
    pub calls: u64,
    pub nofail_calls: u64,
    pub null_returns: u64,
    pub area_failures: u64,
    pub mapping_failures: u64,
    pub area_retries: u64,
    pub mapping_retries: u64,
    pub sleeps: u64,
    pub slept_ns: u64,
    pub open_coded_retries: u64,
    pub injected: u64,
}

impl Counts {
    pub fn of_stats(s: &CallerStats) -> Self {
        Self {
            calls: s.calls,
            nofail_calls: s.nofail_calls,
            null_returns: s.null_returns,
            area_failures: s.area_failures,
            mapping_failures: s.mapping_failures,
            area_retries: s.area_retries,
            mapping_retries: s.mapping_retries,
            sleeps: s.sleeps,
            slept_ns: s.slept_ns,
            open_coded_retries: s.hand_retries,
            injected: s.injected,
        }
    }

    fn of_row(r: &CallerRow) -> Self {
        Self {
            calls: r.calls,
            nofail_calls: r.nofail_calls,
            null_returns: r.null_returns,
            area_failures: r.area_failures,
            mapping_failures: r.mapping_failures,
            area_retries: r.area_retries,
            mapping_retries: r.mapping_retries,
            sleeps: r.sleeps,
            slept_ns: r.slept_ns,
            open_coded_retries: r.open_coded_retries,
            injected: r.injected,
        }
    }

    /// Adds `o` in, saturating (read-back reports may carry any value).
    pub fn add(&mut self, o: &Self) {
        self.calls = self.calls.saturating_add(o.calls);
        self.nofail_calls = self.nofail_calls.saturating_add(o.nofail_calls);
        self.null_returns = self.null_returns.saturating_add(o.null_returns);
        self.area_failures = self.area_failures.saturating_add(o.area_failures);
        self.mapping_failures = self.mapping_failures.saturating_add(o.mapping_failures);
        self.area_retries = self.area_retries.saturating_add(o.area_retries);
        self.mapping_retries = self.mapping_retries.saturating_add(o.mapping_retries);
        self.sleeps = self.sleeps.saturating_add(o.sleeps);
        self.slept_ns = self.slept_ns.saturating_add(o.slept_ns);
        self.open_coded_retries = self.open_coded_retries.saturating_add(o.open_coded_retries);
        self.injected = self.injected.saturating_add(o.injected);
    }

    pub fn retries(&self) -> u64 {
        self.area_retries.saturating_add(self.mapping_retries)
    }
}

/// Sums over the caller rows. The counters are spelled out (not a
/// flattened `Counts`) so that a bad value in a read-back report is named
/// by its exact path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Totals {
    pub callers: u64,
    pub calls: u64,
    pub nofail_calls: u64,
    pub null_returns: u64,
    pub area_failures: u64,
    pub mapping_failures: u64,
    pub area_retries: u64,
    pub mapping_retries: u64,
    pub sleeps: u64,
    pub slept_ns: u64,
    pub open_coded_retries: u64,
    pub injected: u64,
}

impl Totals {
    pub fn of(callers: &[CallerRow]) -> Self {
        let mut c = Counts::default();
        for r in callers {
            c.add(&Counts::of_row(r));
        }
        Self {
            callers: callers.len() as u64,
            calls: c.calls,
            nofail_calls: c.nofail_calls,
            null_returns: c.null_returns,
            area_failures: c.area_failures,
            mapping_failures: c.mapping_failures,
            area_retries: c.area_retries,
            mapping_retries: c.mapping_retries,
            sleeps: c.sleeps,
            slept_ns: c.slept_ns,
            open_coded_retries: c.open_coded_retries,
            injected: c.injected,
        }
    }
}

/// What `nofail inject` did and how each caller coped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Injection {
    pub rule: InjectRuleView,
    pub counts: InjectCounts,
    pub behaviour: Vec<Behaviour>,
}

/// "kprobe", "fentry", or "mixed" across the attached roles.
/// The mode calls were followed in: vmalloc's core's (the slow-path roles
/// are kprobes in every mode), else the one all roles share.
pub fn mode_of(attached: &[Attached]) -> String {
    if let Some(core) = attached.iter().find(|a| a.role == "vmalloc-core") {
        return core.mode.to_string();
    }
    let mut modes: Vec<String> = attached.iter().map(|a| a.mode.to_string()).collect();
    modes.dedup();
    match modes.as_slice() {
        [] => "none".into(),
        [one] => one.clone(),
        _ => "mixed".into(),
    }
}

/// The call sites in the aggregate map (keys only: cheap to poll).
pub fn caller_addresses(ebpf: &Ebpf) -> Result<Vec<u64>> {
    let map: PerCpuHashMap<_, u64, CallerStats> =
        PerCpuHashMap::try_from(ebpf.map("CALLERS").context("CALLERS map missing")?)?;
    Ok(map.keys().filter_map(|k| k.ok()).collect())
}

/// Sums the per-CPU aggregates of every call site.
pub fn read_callers(ebpf: &Ebpf) -> Result<BTreeMap<u64, CallerStats>> {
    let map: PerCpuHashMap<_, u64, CallerStats> =
        PerCpuHashMap::try_from(ebpf.map("CALLERS").context("CALLERS map missing")?)?;
    let mut out = BTreeMap::new();
    for entry in map.iter() {
        let (caller, per_cpu) = entry?;
        let total: &mut CallerStats = out.entry(caller).or_default();
        for stats in per_cpu.iter() {
            total.merge(stats);
        }
    }
    Ok(out)
}

pub fn read_health(ebpf: &Ebpf) -> Result<HealthCounts> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("HEALTH").context("HEALTH map missing")?)?;
    let sum = |slot: Health| -> Result<u64> { Ok(map.get(&(slot as u32), 0)?.iter().sum()) };
    let programs = crate::progstats::read(ebpf);
    Ok(HealthCounts {
        inflight_full: sum(Health::InflightFull)?,
        callers_full: sum(Health::CallersFull)?,
        orphan_exits: sum(Health::OrphanExit)?,
        stale_replaced: sum(Health::StaleReplaced)?,
        stacks_lost: sum(Health::StackLost)?,
        chains_full: sum(Health::ChainsFull)?,
        caller_unread: sum(Health::CallerUnread)?,
        missed_runs: programs.iter().map(|p| p.recursion_misses).sum(),
        programs,
        events: None,
    })
}

/// CLOCK_MONOTONIC, the clock of bpf_ktime_get_ns().
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Calls in progress, oldest first.
/// In tracepoint mode (`loops_only`) the map holds retry loops, kept while
/// their sleeps keep coming (nofail-ebpf/src/tracepoints.rs).
pub fn read_inflight(
    ebpf: &Ebpf,
    syms: &Kallsyms,
    stuck_after_ns: u64,
    loops_only: bool,
) -> Result<Vec<InflightRow>> {
    let map: HashMap<_, u32, Inflight> =
        HashMap::try_from(ebpf.map("INFLIGHT").context("INFLIGHT map missing")?)?;
    let now = monotonic_ns();
    let mut rows = Vec::new();
    for entry in map.iter() {
        let Ok((_, call)) = entry else { continue }; // entries vanish while we iterate
        if call.ignored != 0 {
            continue;
        }
        if loops_only && now.saturating_sub(call.sleep_start_ns) >= nofail_common::TP_LOOP_GAP_NS {
            continue; // the loop ended: no sleep for a while
        }
        let age_ns = now.saturating_sub(call.start_ns);
        let comm_len = call
            .comm
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(call.comm.len());
        rows.push(InflightRow {
            tid: call.tid,
            pid: call.tgid,
            comm: String::from_utf8_lossy(&call.comm[..comm_len]).into_owned(),
            caller: syms.resolve(call.caller),
            size: call.size,
            age_ns,
            area_failures: call.area_failures as u64,
            mapping_failures: call.mapping_failures as u64,
            pt_failures: pt_map(call.pt_failures.map(u64::from)),
            sleeps_so_far: call.sleeps as u64,
            slept_ns: call.slept_ns,
            stuck: age_ns >= stuck_after_ns,
        });
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.age_ns));
    Ok(rows)
}

fn row(addr: u64, s: &CallerStats, syms: &Kallsyms) -> CallerRow {
    CallerRow {
        caller: syms.resolve(addr),
        address: format!("{addr:#x}"),
        calls: s.calls,
        nofail_calls: s.nofail_calls,
        null_returns: s.null_returns,
        failures: s.area_failures + s.mapping_failures,
        area_failures: s.area_failures,
        mapping_failures: s.mapping_failures,
        area_retries: s.area_retries,
        mapping_retries: s.mapping_retries,
        pt_failures: pt_map(s.pt_failures),
        sleeps: s.sleeps,
        sleep_jiffies: s.sleep_jiffies,
        slept_ns: s.slept_ns,
        max_retries: s.max_retries,
        open_coded_retries: s.hand_retries,
        open_coded_retry_sleeps: s.hand_retry_sleeps,
        injected: s.injected,
        max_slept_ns: s.max_slept_ns,
        total_latency_ns: s.latency_ns,
        mean_latency_ns: s.latency_ns.checked_div(s.calls).unwrap_or(0),
        p50_latency_ns: hist::quantile(&s.latency_hist, 0.5),
        p99_latency_ns: hist::quantile(&s.latency_hist, 0.99),
        p50_retries: hist::quantile(&s.retries_hist, 0.5),
        p99_retries: hist::quantile(&s.retries_hist, 0.99),
        histograms: CallerHists {
            retries_per_call: Hist::from_log2(&s.retries_hist, "retries"),
            latency_ns: Hist::from_log2(&s.latency_hist, "ns"),
            slept_per_call_ns: Hist::from_log2(&s.slept_hist, "ns"),
        },
    }
}

fn pt_map(levels: [u64; PT_LEVELS]) -> BTreeMap<String, u64> {
    PT_LEVEL_NAMES
        .iter()
        .map(|l| l.to_string())
        .zip(levels)
        .collect()
}

/// Rows sorted by retries, then calls (descending), then caller name. Call
/// sites with no finished call but open-coded retries still show, as do
/// sentinel mode's rows (failures only, no call counts).
pub fn rows(stats: &BTreeMap<u64, CallerStats>, syms: &Kallsyms) -> Vec<CallerRow> {
    let mut rows: Vec<CallerRow> = stats
        .iter()
        .filter(|(_, s)| {
            s.calls
                + s.hand_retries
                + s.null_returns
                + s.area_failures
                + s.mapping_failures
                + s.sleeps
                > 0
        })
        .map(|(&addr, s)| row(addr, s, syms))
        .collect();
    rows.sort_by(|a, b| {
        (b.retries() + b.open_coded_retries)
            .cmp(&(a.retries() + a.open_coded_retries))
            .then(b.calls.cmp(&a.calls))
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
pub fn sample_row(caller: &str, s: &CallerStats) -> CallerRow {
    CallerRow {
        caller: caller.into(),
        ..row(0xffffffff81000000, s, &Kallsyms::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms() -> Kallsyms {
        Kallsyms::parse("ffffffff81000000 T a_fn\nffffffff82000000 T b_fn\n")
    }

    #[test]
    fn rows_sorted_by_retries_then_calls() {
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
        let rows = rows(&stats, &syms());
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].caller, "a_fn+0x10");
        assert_eq!(rows[0].retries(), 3);
        assert_eq!(rows[1].caller, "b_fn+0x20");
        assert_eq!(rows[1].mean_latency_ns, 100);
    }
}
