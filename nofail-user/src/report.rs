//! Reads the in-kernel aggregates and turns them into the per-caller report
//! (text table and JSON).

use std::collections::BTreeMap;

use anyhow::{Context as _, Result};
use aya::{
    Ebpf,
    maps::{PerCpuArray, PerCpuHashMap},
};
use nofail_common::{CallerStats, Health};
use serde::Serialize;

use crate::{symbols::Kallsyms, tracer::Attached};

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CallerRow {
    /// `symbol+0xoff` of the call site.
    pub caller: String,
    pub address: String,
    pub calls: u64,
    pub nofail_calls: u64,
    pub null_returns: u64,
    pub total_latency_ns: u64,
    pub mean_latency_ns: u64,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct HealthCounts {
    /// Calls not tracked because the in-flight map was full.
    pub inflight_full: u64,
    /// Calls not counted because the caller map was full.
    pub callers_full: u64,
    /// Exits whose entry happened before attach.
    pub orphan_exits: u64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub kernel: String,
    pub duration_s: f64,
    pub attached: Vec<Attached>,
    pub callers: Vec<CallerRow>,
    pub health: HealthCounts,
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
    Ok(HealthCounts {
        inflight_full: sum(Health::InflightFull)?,
        callers_full: sum(Health::CallersFull)?,
        orphan_exits: sum(Health::OrphanExit)?,
    })
}

/// Rows sorted by calls (descending), then caller name.
pub fn rows(stats: &BTreeMap<u64, CallerStats>, syms: &Kallsyms) -> Vec<CallerRow> {
    let mut rows: Vec<CallerRow> = stats
        .iter()
        .filter(|(_, s)| s.calls > 0)
        .map(|(&addr, s)| CallerRow {
            caller: syms.resolve(addr),
            address: format!("{addr:#x}"),
            calls: s.calls,
            nofail_calls: s.nofail_calls,
            null_returns: s.null_returns,
            total_latency_ns: s.latency_ns,
            mean_latency_ns: s.latency_ns / s.calls,
        })
        .collect();
    rows.sort_by(|a, b| b.calls.cmp(&a.calls).then_with(|| a.caller.cmp(&b.caller)));
    rows
}

pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .callers
        .iter()
        .map(|r| r.caller.len())
        .max()
        .unwrap_or(6)
        .max(6);
    out.push_str(&format!(
        "{:<width$}  {:>9}  {:>9}  {:>6}  {:>12}\n",
        "CALLER", "CALLS", "NOFAIL", "NULL", "MEAN LAT"
    ));
    for r in &report.callers {
        out.push_str(&format!(
            "{:<width$}  {:>9}  {:>9}  {:>6}  {:>12}\n",
            r.caller,
            r.calls,
            r.nofail_calls,
            r.null_returns,
            format_ns(r.mean_latency_ns)
        ));
    }
    if report.callers.is_empty() {
        out.push_str("(no vmalloc calls seen)\n");
    }
    let h = &report.health;
    if h.inflight_full + h.callers_full > 0 {
        out.push_str(&format!(
            "warning: {} calls not tracked (in-flight map full), {} not counted (caller map full)\n",
            h.inflight_full, h.callers_full
        ));
    }
    out
}

pub fn format_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.1} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_sorted_and_resolved() {
        let syms = Kallsyms::parse("ffffffff81000000 T a_fn\nffffffff82000000 T b_fn\n");
        let mut stats = BTreeMap::new();
        stats.insert(
            0xffffffff81000010,
            CallerStats {
                calls: 2,
                nofail_calls: 1,
                null_returns: 0,
                latency_ns: 300,
            },
        );
        stats.insert(
            0xffffffff82000020,
            CallerStats {
                calls: 5,
                nofail_calls: 0,
                null_returns: 1,
                latency_ns: 500,
            },
        );
        stats.insert(0xffffffff82000030, CallerStats::default());
        let rows = rows(&stats, &syms);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].caller, "b_fn+0x20");
        assert_eq!(rows[0].mean_latency_ns, 100);
        assert_eq!(rows[1].caller, "a_fn+0x10");
        assert_eq!(rows[1].nofail_calls, 1);
    }

    #[test]
    fn ns_formatting() {
        assert_eq!(format_ns(999), "999 ns");
        assert_eq!(format_ns(1_500), "1.5 us");
        assert_eq!(format_ns(2_500_000), "2.5 ms");
        assert_eq!(format_ns(3_000_000_000), "3.00 s");
    }

    #[test]
    fn empty_table_says_so() {
        let report = Report {
            kernel: "k".into(),
            duration_s: 1.0,
            attached: vec![],
            callers: vec![],
            health: HealthCounts::default(),
        };
        assert!(render_table(&report).contains("no vmalloc calls seen"));
    }
}
