// SPDX-License-Identifier: MIT OR Apache-2.0
//! Prometheus text exposition (format 0.0.4) of a report: counters end in
//! `_total`, base units in names, histograms as cumulative `_bucket{le}`
//! ending in `+Inf` with `_sum` and `_count`. Caller labels are bounded:
//! the top N callers by retries keep their name, the rest add up under
//! `caller="other"`.

use std::{collections::HashSet, fmt::Write as _};

use nofail_common::HIST_BUCKETS;

use crate::model::{
    chains::ChainRow,
    counters::{Aggregate, COUNTERS, Counts, Unit},
    health::HealthCounts,
    hist::bounds,
    inject::InjectCounts,
    mode::{Follow, Needs, Sees},
    report::{CallerRow, PT_LEVEL_NAMES, Report},
};

/// The content type of the text format `serve` answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Which callers (or chains) have a label of their own. A one-shot
/// exposition names the first `bound` in the report's order (most retries
/// first). `serve` keeps one for the life of the process: a caller once
/// named stays named, and one summed into "other" stays there, so no
/// series disappears and "other" never goes down. Re-picking the top at
/// every scrape would move a caller that drops out of it into "other":
/// its series would vanish and "other" could fall, which Prometheus reads
/// as a counter reset and turns into a wrong `rate()`.
#[derive(Debug, Clone)]
pub struct Labels {
    named: HashSet<String>,
    bound: usize,
}

impl Labels {
    pub fn new(bound: usize) -> Self {
        Self {
            named: HashSet::new(),
            bound,
        }
    }

    /// Whether `key` has its own label, naming it while there is room.
    fn own(&mut self, key: &str) -> bool {
        if self.named.contains(key) {
            return true;
        }
        if self.named.len() < self.bound {
            self.named.insert(key.to_string());
            return true;
        }
        false
    }
}

/// The labels of callers and of `--chains` chains, kept across scrapes.
#[derive(Debug, Clone)]
pub struct Sticky {
    callers: Labels,
    chains: Labels,
}

impl Sticky {
    /// At most `top` callers and `top` chains get a label of their own.
    pub fn new(top: usize) -> Self {
        Self {
            callers: Labels::new(top),
            chains: Labels::new(top),
        }
    }
}

/// The named callers in the report's order, then (when any caller is not
/// named) one "other" summing the rest.
fn series(callers: &[CallerRow], labels: &mut Labels) -> Vec<(String, Aggregate)> {
    let mut out: Vec<(String, Aggregate)> = Vec::new();
    let mut other: Option<Aggregate> = None;
    for r in callers {
        if labels.own(&r.caller) {
            out.push((r.caller.clone(), r.aggregate()));
        } else {
            other
                .get_or_insert_with(Aggregate::default)
                .add(&r.aggregate());
        }
    }
    out.extend(other.map(|o| ("other".to_string(), o)));
    out
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// `le` of log2 bucket `i`: the largest integer value it holds, scaled.
fn le(i: usize, scale: f64) -> String {
    let v = (bounds(i).1 - 1) as f64 * scale;
    format!("{v}")
}

/// A per-call histogram family: its log2 buckets and its sum, picked from
/// a caller's aggregate, scaled to base units.
struct HistFamily {
    name: &'static str,
    help: &'static str,
    scale: f64,
    needs: Needs,
    pick: fn(&Aggregate) -> (&[u64; HIST_BUCKETS], f64),
}

/// The histograms, in exposition order.
const HISTOGRAMS: [HistFamily; 5] = [
    HistFamily {
        name: "nofail_vmalloc_retries_per_call",
        help: "NOFAIL loop turns per finished call (0 for calls without __GFP_NOFAIL).",
        scale: 1.0,
        needs: Needs::EveryCall,
        pick: |s| (&s.retries_hist, s.counts.retries() as f64),
    },
    HistFamily {
        name: "nofail_vmalloc_latency_seconds",
        help: "Duration of finished vmalloc calls.",
        scale: 1e-9,
        needs: Needs::EveryCall,
        pick: |s| (&s.latency_hist, seconds(s.counts.total_latency_ns)),
    },
    HistFamily {
        name: "nofail_vmalloc_slept_per_call_seconds",
        help: "Time one finished vmalloc call spent in retry sleeps.",
        scale: 1e-9,
        needs: Needs::EveryCall,
        pick: |s| (&s.slept_hist, seconds(s.counts.slept_ns)),
    },
    HistFamily {
        name: "nofail_whatif_wake_delay_seconds",
        help: "Per NOFAIL retry after a relevant free: time from that free to the task's wake (--what-if).",
        scale: 1e-9,
        needs: Needs::WhatIf,
        pick: |s| (&s.wake_delay_hist, seconds(s.counts.wake_delay_ns)),
    },
    HistFamily {
        name: "nofail_whatif_slept_per_call_seconds",
        help: "Per NOFAIL call: its retry sleeps' time had the first relevant free woken it (--what-if).",
        scale: 1e-9,
        needs: Needs::WhatIf,
        pick: |s| (&s.whatif_hist, seconds(s.counts.whatif_slept_ns)),
    },
];

fn histogram(out: &mut String, family: &HistFamily, rows: &[(String, Aggregate)]) {
    let name = family.name;
    header(out, name, "histogram", family.help);
    for (caller, s) in rows {
        let label = format!("caller=\"{}\"", escape_label(caller));
        let (h, sum) = (family.pick)(s);
        let mut cumulative = 0u64;
        // The last kernel bucket has no upper bound: it is only in +Inf.
        for (i, n) in h.iter().enumerate().take(HIST_BUCKETS - 1) {
            cumulative = cumulative.saturating_add(*n);
            let _ = writeln!(
                out,
                "{name}_bucket{{{label},le=\"{}\"}} {cumulative}",
                le(i, family.scale)
            );
        }
        let count = cumulative.saturating_add(h[HIST_BUCKETS - 1]);
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{label}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label}}} {count}");
    }
}

/// Page-table failures per level: not a scalar counter, so not in the
/// counter table. Counted at the page-table allocators' exits (full mode).
const PT_FAMILY: (&str, &str, Needs) = (
    "nofail_pagetable_failures_total",
    "Page-table page allocations that failed inside vmalloc, per level.",
    Needs::EveryCall,
);

/// `--chains` counters, labelled by call site and chain; the top `top`
/// chains (the report's order) keep their labels, the rest add up under
/// `caller="other",chain="other"`.
fn chain_counters(out: &mut String, chains: &[ChainRow], labels: &mut Labels) {
    let mut rows: Vec<(String, String, Counts)> = Vec::new();
    let mut other: Option<Counts> = None;
    for c in chains {
        let label = c.label();
        if labels.own(&format!("{}\0{label}", c.caller)) {
            rows.push((c.caller.clone(), label, c.counts.clone()));
        } else {
            other.get_or_insert_with(Counts::default).add(&c.counts);
        }
    }
    rows.extend(other.map(|o| ("other".to_string(), "other".to_string(), o)));
    type Family = (&'static str, &'static str, fn(&Counts) -> u64);
    let families: [Family; 6] = [
        (
            "nofail_chain_calls_total",
            "Calls that mattered (NOFAIL, failed, NULL, slept, open-coded retries) per call site and call chain.",
            |c| c.calls,
        ),
        (
            "nofail_chain_nofail_calls_total",
            "__GFP_NOFAIL calls per call site and call chain.",
            |c| c.nofail_calls,
        ),
        (
            "nofail_chain_null_returns_total",
            "NULL returns per call site and call chain.",
            |c| c.null_returns,
        ),
        (
            "nofail_chain_retries_total",
            "Turns of the __GFP_NOFAIL retry loop per call site and call chain.",
            |c| c.retries(),
        ),
        (
            "nofail_chain_retry_sleeps_total",
            "Retry sleeps inside vmalloc per call site and call chain.",
            |c| c.sleeps,
        ),
        (
            "nofail_chain_open_coded_retries_total",
            "Open-coded retries (calls repeated after a NULL) per call site and call chain.",
            |c| c.open_coded_retries,
        ),
    ];
    for (name, help, value) in families {
        header(out, name, "counter", help);
        for (caller, chain, c) in &rows {
            let _ = writeln!(
                out,
                "{name}{{caller=\"{}\",chain=\"{}\"}} {}",
                escape_label(caller),
                escape_label(chain),
                value(c)
            );
        }
    }
}

#[cfg(test)]
/// The whole exposition for `report`, at most `top` named callers.
pub fn render(report: &Report, top: usize) -> String {
    render_sticky(report, &mut Sticky::new(top))
}

/// The exposition for a textfile collector (`--prometheus FILE`): as
/// `render_sticky`, and the time it was written, so an alert can tell a
/// file that stopped being rewritten (a cron job that no longer runs).
pub fn render_file(report: &Report, sticky: &mut Sticky, unix_s: f64) -> String {
    let mut out = render_sticky(report, sticky);
    header(
        &mut out,
        "nofail_last_run_timestamp_seconds",
        "gauge",
        "When nofail last wrote this file (Unix time).",
    );
    let _ = writeln!(out, "nofail_last_run_timestamp_seconds {unix_s}");
    out
}

/// The exposition for `report` with labels kept in `sticky` (`serve`
/// passes the same one at every scrape). Every series is there exactly
/// when the run could count it (`Report::sees`, each family's `Needs`): a
/// mode or a flag that cannot count something leaves it out rather than
/// exporting zeros.
pub fn render_sticky(report: &Report, sticky: &mut Sticky) -> String {
    let sees = report.sees();
    let rows = series(&report.callers, &mut sticky.callers);
    let mut out = String::new();
    info_and_gauges(&mut out, report, sees);
    counter_families(&mut out, sees, &rows);
    if sees.counts(Needs::Chains) {
        chain_counters(&mut out, &report.chains, &mut sticky.chains);
    }
    for family in HISTOGRAMS.iter().filter(|h| sees.counts(h.needs)) {
        histogram(&mut out, family, &rows);
    }
    missed_events(&mut out, &report.health, sees);
    if let Some(inj) = report
        .injection
        .as_ref()
        .filter(|_| sees.counts(Needs::Injection))
    {
        injection_decisions(&mut out, &inj.counts);
    }
    out
}

/// `nofail_info`, the run's duration and the calls in flight.
fn info_and_gauges(out: &mut String, report: &Report, sees: Sees) {
    header(
        out,
        "nofail_info",
        "gauge",
        "nofail build (version, git revision, the first 12 hex digits of its eBPF object's sha256) and the kernel it traces; always 1.",
    );
    let _ = writeln!(
        out,
        "nofail_info{{version=\"{}\",kernel=\"{}\",mode=\"{}\",command=\"{}\",git=\"{}\",object_sha256=\"{}\"}} 1",
        escape_label(&report.nofail_version),
        escape_label(&report.kernel),
        escape_label(&report.mode),
        escape_label(&report.command),
        env!("NOFAIL_GIT_REV"),
        &env!("NOFAIL_OBJECT_SHA256")[..12],
    );
    header(
        out,
        "nofail_trace_duration_seconds",
        "gauge",
        "How long the counts were collected.",
    );
    let _ = writeln!(out, "nofail_trace_duration_seconds {}", report.duration_s);
    if !sees.counts(Needs::InFlight) {
        return;
    }
    header(
        out,
        "nofail_calls_in_flight",
        "gauge",
        "vmalloc calls in progress when the report was taken.",
    );
    let _ = writeln!(out, "nofail_calls_in_flight {}", report.in_flight.len());
    header(
        out,
        "nofail_oldest_call_in_flight_seconds",
        "gauge",
        "Age of the oldest vmalloc call in progress (0 when none).",
    );
    let oldest = report.in_flight.iter().map(|r| r.age_ns).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "nofail_oldest_call_in_flight_seconds {}",
        seconds(oldest)
    );
}

/// The counter families of the counter table, in its order (a family's
/// members, stage="area" and stage="mapping", together under one header),
/// page-table failures after the retries; those the run could count.
fn counter_families(out: &mut String, sees: Sees, rows: &[(String, Aggregate)]) {
    let mut families: Vec<(&str, Needs)> = COUNTERS
        .iter()
        .filter_map(|c| Some((c.series?.family, c.series?.needs)))
        .collect();
    families.dedup();
    families.insert(
        families
            .iter()
            .position(|(f, _)| *f == "nofail_vmalloc_retries_total")
            .map_or(families.len(), |i| i + 1),
        (PT_FAMILY.0, PT_FAMILY.2),
    );
    for (name, _) in families
        .into_iter()
        .filter(|(_, needs)| sees.counts(*needs))
    {
        if name == PT_FAMILY.0 {
            header(out, name, "counter", PT_FAMILY.1);
            for (caller, a) in rows {
                for (l, n) in PT_LEVEL_NAMES.iter().zip(a.pt_failures) {
                    let _ = writeln!(
                        out,
                        "{name}{{caller=\"{}\",level=\"{l}\"}} {n}",
                        escape_label(caller)
                    );
                }
            }
            continue;
        }
        let members: Vec<_> = COUNTERS
            .iter()
            .filter_map(|c| Some((c, c.series?)))
            .filter(|(_, s)| s.family == name)
            .collect();
        let help = match name {
            "nofail_vmalloc_calls_total" if sees.follow == Follow::Tracepoint => {
                "vmap areas allocated per call site (tracepoint mode: calls that reached alloc_vmap_area)."
            }
            _ => members[0].1.help,
        };
        header(out, name, "counter", help);
        for (caller, a) in rows {
            for (c, s) in &members {
                let v = (c.get)(&a.counts);
                let v = match c.unit {
                    Unit::Count => v.to_string(),
                    Unit::Ns => seconds(v).to_string(),
                };
                let _ = writeln!(
                    out,
                    "{name}{{caller=\"{}\"{}}} {v}",
                    escape_label(caller),
                    s.labels
                );
            }
        }
    }
}

/// Why an event was not counted, and what a run must follow for that to
/// happen at all.
type Missed = (&'static str, Needs, fn(&HealthCounts) -> u64);
const MISSED: [Missed; 9] = [
    ("program_skipped", Needs::Nothing, |h| h.missed_runs),
    ("inflight_map_full", Needs::InFlight, |h| h.inflight_full),
    ("caller_map_full", Needs::Nothing, |h| h.callers_full),
    ("chain_map_full", Needs::Chains, |h| h.chains_full),
    ("stack_lost", Needs::Chains, |h| h.stacks_lost),
    // A call whose exit was not seen (kretprobe instances exhausted, a
    // skipped run): its record was replaced by the task's next call, or
    // an exit came without its entry.
    ("exit_missed", Needs::EveryCall, |h| h.stale_replaced),
    ("entry_missed", Needs::EveryCall, |h| h.orphan_exits),
    ("caller_unread", Needs::StackCaller, |h| h.caller_unread),
    ("whatif_waiter_busy", Needs::WhatIf, |h| h.waiter_busy),
];

fn missed_events(out: &mut String, h: &HealthCounts, sees: Sees) {
    header(
        out,
        "nofail_missed_events_total",
        "counter",
        "Events nofail did not count: skipped program runs, full maps.",
    );
    for (reason, _, value) in MISSED.iter().filter(|(_, needs, _)| sees.counts(*needs)) {
        let _ = writeln!(
            out,
            "nofail_missed_events_total{{reason=\"{reason}\"}} {}",
            value(h)
        );
    }
}

/// `nofail serve`'s reads of the kernel's counts that failed since it
/// started (each scrape then answered with the last counts read;
/// output/serve.rs).
pub fn failed_reads(n: u64) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "nofail_failed_reads_total",
        "counter",
        "Reads of the kernel's counts that failed (ENOMEM under memory pressure); each scrape then answered with the last counts read.",
    );
    let _ = writeln!(out, "nofail_failed_reads_total {n}");
    out
}

/// Allocations of nofail's own heap tried again after the kernel failed
/// them (crate::alloc), since the process started.
pub fn alloc_retries(n: u64) -> String {
    let mut out = String::new();
    header(
        &mut out,
        "nofail_alloc_retries_total",
        "counter",
        "Allocations of nofail's own heap that failed and were tried again (alloc.rs).",
    );
    let _ = writeln!(out, "nofail_alloc_retries_total {n}");
    out
}

fn injection_decisions(out: &mut String, c: &InjectCounts) {
    header(
        out,
        "nofail_injection_decisions_total",
        "counter",
        "Sub-allocations the injection rule saw, by outcome.",
    );
    for (outcome, v) in [
        ("injected", c.injected),
        ("skipped_budget", c.skipped_budget),
        ("skipped_guard", c.skipped_guard),
        ("skipped_selection", c.skipped_selection),
    ] {
        let _ = writeln!(
            out,
            "nofail_injection_decisions_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
}

#[cfg(test)]
mod tests {
    use nofail_common::CallerStats;

    use super::*;
    use crate::model::report::{sample, sample_row};

    fn stats(calls: u64, retries_each: u64) -> CallerStats {
        let mut s = CallerStats {
            calls,
            nofail_calls: calls,
            area_retries: calls * retries_each,
            latency_ns: calls * 1000,
            ..Default::default()
        };
        s.retries_hist[nofail_common::log2_bucket(retries_each)] = calls;
        s.latency_hist[10] = calls;
        s.slept_hist[0] = calls;
        s
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix}"))
    }

    /// The value of the calls counter of `caller`, or None without one.
    fn calls_of(text: &str, caller: &str) -> Option<u64> {
        let prefix = format!("nofail_vmalloc_calls_total{{caller=\"{caller}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.parse().unwrap())
    }

    #[test]
    fn labels_stick_and_other_never_goes_down() {
        let mut sticky = Sticky::new(1);
        // First scrape: a retries most and gets the one label.
        let first = sample(vec![
            sample_row("a+0x1", &stats(2, 3)),
            sample_row("b+0x1", &stats(5, 0)),
        ]);
        let text = render_sticky(&first, &mut sticky);
        assert_eq!(calls_of(&text, "a+0x1"), Some(2));
        assert_eq!(calls_of(&text, "other"), Some(5));
        // b now retries most and c appears: a keeps its label, b and c
        // stay in other, which only grew.
        let second = sample(vec![
            sample_row("b+0x1", &stats(9, 7)),
            sample_row("a+0x1", &stats(3, 3)),
            sample_row("c+0x1", &stats(1, 0)),
        ]);
        let text = render_sticky(&second, &mut sticky);
        assert_eq!(calls_of(&text, "a+0x1"), Some(3));
        assert_eq!(calls_of(&text, "b+0x1"), None);
        assert_eq!(calls_of(&text, "other"), Some(10));
        // A one-shot exposition of the same report names its top caller.
        let once = render(&second, 1);
        assert_eq!(calls_of(&once, "b+0x1"), Some(9));
        assert_eq!(calls_of(&once, "other"), Some(4));
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_inf() {
        let text = render(&sample(vec![sample_row("a+0x1", &stats(10, 3))]), 20);
        let name = "nofail_vmalloc_retries_per_call";
        assert!(text.contains(&format!("# TYPE {name} histogram\n")));
        assert_eq!(
            line(
                &text,
                &format!("{name}_bucket{{caller=\"a+0x1\",le=\"1\"}}")
            ),
            format!("{name}_bucket{{caller=\"a+0x1\",le=\"1\"}} 0")
        );
        assert!(text.contains(&format!("{name}_bucket{{caller=\"a+0x1\",le=\"3\"}} 10\n")));
        assert!(text.contains(&format!("{name}_bucket{{caller=\"a+0x1\",le=\"7\"}} 10\n")));
        assert!(text.contains(&format!(
            "{name}_bucket{{caller=\"a+0x1\",le=\"+Inf\"}} 10\n"
        )));
        assert!(text.contains(&format!("{name}_sum{{caller=\"a+0x1\"}} 30\n")));
        assert!(text.contains(&format!("{name}_count{{caller=\"a+0x1\"}} 10\n")));
        // Latency bucket 10 holds [512, 1024) ns: le is 1023 ns in seconds.
        assert!(text.contains(
            "nofail_vmalloc_latency_seconds_bucket{caller=\"a+0x1\",le=\"0.000001023\"} 10\n"
        ));
        assert!(text.contains("nofail_vmalloc_latency_seconds_sum{caller=\"a+0x1\"} 0.00001\n"));
        let buckets = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket")))
            .count();
        assert_eq!(buckets, HIST_BUCKETS);
    }

    #[test]
    fn chains_are_labelled_and_bounded() {
        let mut report = sample(vec![sample_row("a+0x1", &stats(10, 3))]);
        let mut c1 = crate::model::chains::sample("a+0x1", &["a+0x1", "wrap+0x10", "fs_op+0x20"]);
        c1.counts.calls = 5;
        c1.counts.area_retries = 3;
        let mut c2 = crate::model::chains::sample("a+0x1", &["a+0x1", "other_op+0x8"]);
        c2.counts.calls = 2;
        c2.counts.null_returns = 1;
        let mut c3 = crate::model::chains::sample("a+0x1", &["a+0x1", "third+0x8"]);
        c3.counts.calls = 1;
        report.chains = vec![c1, c2, c3];
        // Chains are counted with --chains only.
        assert!(!render(&report, 1).contains("nofail_chain_"));
        report.filters.chains = Some(3);
        let text = render(&report, 1);
        assert!(
            text.contains("nofail_chain_calls_total{caller=\"a+0x1\",chain=\"a;wrap;fs_op\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "nofail_chain_retries_total{caller=\"a+0x1\",chain=\"a;wrap;fs_op\"} 3\n"
            )
        );
        // Beyond --top-labels: one "other" series with the sums.
        assert!(text.contains("nofail_chain_calls_total{caller=\"other\",chain=\"other\"} 3\n"));
        assert!(
            text.contains("nofail_chain_null_returns_total{caller=\"other\",chain=\"other\"} 1\n")
        );
        assert!(!text.contains("other_op"));
        // No --chains: no chain families at all.
        let plain = render(&sample(vec![sample_row("a+0x1", &stats(1, 0))]), 5);
        assert!(!plain.contains("nofail_chain_"));
    }

    #[test]
    fn callers_beyond_top_fold_into_other() {
        let rows = vec![
            sample_row("a+0x1", &stats(10, 3)),
            sample_row("b+0x2", &stats(4, 1)),
            sample_row("c+0x3", &stats(6, 0)),
        ];
        let text = render(&sample(rows), 1);
        assert!(text.contains("nofail_vmalloc_calls_total{caller=\"a+0x1\"} 10\n"));
        assert!(text.contains("nofail_vmalloc_calls_total{caller=\"other\"} 10\n"));
        assert!(!text.contains("b+0x2"));
        assert!(
            text.contains("nofail_vmalloc_retries_per_call_bucket{caller=\"other\",le=\"0\"} 6\n")
        );
        assert!(
            text.contains("nofail_vmalloc_retries_per_call_bucket{caller=\"other\",le=\"1\"} 10\n")
        );
        assert!(text.contains("nofail_vmalloc_retries_total{caller=\"other\",stage=\"area\"} 4\n"));
    }

    #[test]
    fn labels_are_escaped_and_counters_end_in_total() {
        let text = render(&sample(vec![sample_row("x\"\\\ny", &stats(1, 0))]), 5);
        assert!(text.contains("caller=\"x\\\"\\\\\\ny\""), "{text}");
        for l in text.lines().filter(|l| l.starts_with("# TYPE")) {
            let parts: Vec<&str> = l.split(' ').collect();
            assert_eq!(
                parts[3].ends_with("counter"),
                parts[2].ends_with("_total"),
                "{l}"
            );
        }
    }
}
