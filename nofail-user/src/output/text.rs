// SPDX-License-Identifier: MIT OR Apache-2.0
//! The text report: the per-caller table, the details of callers that
//! failed, retried or slept (with their histograms), stuck calls, and what
//! nofail could not count.

use crate::model::{
    chains::ChainRow,
    counters::{COUNTERS, Counter, Counts, Unit},
    hist,
    inject::{Behaviour, InjectCounts},
    report::{CallerRow, InflightRow, Report},
};

fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

fn opt_ns(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| format!("<{}", hist::ns_unit(v + 1)))
}

/// Width of the CALLER column: the longest name, at least the header.
pub fn caller_width<'a>(callers: impl Iterator<Item = &'a str>) -> usize {
    callers.map(str::len).max().unwrap_or(0).max("CALLER".len())
}

/// A counter's value as its column shows it.
fn cell(c: &Counter, counts: &Counts) -> String {
    let v = (c.get)(counts);
    match c.unit {
        Unit::Count => v.to_string(),
        Unit::Ns => ms(v),
    }
}

/// The compact table: one line per caller, at most `top` rows (0 = all);
/// a column per counter that has one (model/counters.rs), then latency.
pub fn render_top(callers: &[CallerRow], top: usize) -> String {
    let shown = if top == 0 {
        callers.len()
    } else {
        top.min(callers.len())
    };
    let columns: Vec<(&Counter, &str)> = COUNTERS
        .iter()
        .filter_map(|c| Some((c, c.column?)))
        .collect();
    let width = caller_width(callers[..shown].iter().map(|r| r.caller.as_str()));
    let widths: Vec<usize> = columns
        .iter()
        .map(|(_, h)| h.len().max(7))
        .chain([9, 9])
        .collect();
    let line = |first: &str, cells: Vec<String>| {
        let mut l = format!("{first:<width$}");
        for (cell, w) in cells.iter().zip(&widths) {
            l += &format!(" {cell:>w$}");
        }
        l + "\n"
    };
    let mut heads: Vec<String> = columns.iter().map(|(_, h)| h.to_string()).collect();
    heads.extend(["P50 LAT".into(), "P99 LAT".into()]);
    let mut out = line("CALLER", heads);
    for r in &callers[..shown] {
        let mut cells: Vec<String> = columns.iter().map(|(c, _)| cell(c, &r.counts)).collect();
        cells.extend([opt_ns(r.p50_latency_ns), opt_ns(r.p99_latency_ns)]);
        out.push_str(&line(&r.caller, cells));
    }
    if callers.is_empty() {
        out.push_str("(no vmalloc calls seen)\n");
    } else if shown < callers.len() {
        out.push_str(&format!("({} more callers)\n", callers.len() - shown));
    }
    out
}

/// The rows of what changed since `earlier` (per caller, by name): each
/// changed caller with its counter deltas (maxima as they are now);
/// latency quantiles belong to whole runs and are left out.
pub fn delta_rows(now: &[CallerRow], earlier: &[CallerRow]) -> Vec<CallerRow> {
    now.iter()
        .filter_map(|r| {
            let before = earlier.iter().find(|e| e.caller == r.caller);
            let counts = match before {
                Some(e) => r.counts.since(&e.counts),
                None => r.counts.clone(),
            };
            counts.any().then(|| CallerRow {
                failures: counts.failures(),
                counts,
                p50_latency_ns: None,
                p99_latency_ns: None,
                ..r.clone()
            })
        })
        .collect()
}

pub fn render_inflight(rows: &[InflightRow]) -> String {
    let mut out = String::new();
    for r in rows.iter().filter(|r| r.stuck) {
        out.push_str(&format!(
            "STUCK {:.1} s in vmalloc: {} (pid {} tid {}) from {}, {} bytes, {} failures (area {}, mapping {}), {} sleeps so far\n",
            r.age_ns as f64 / 1e9,
            r.comm,
            r.pid,
            r.tid,
            r.caller,
            r.size,
            r.area_failures + r.mapping_failures,
            r.area_failures,
            r.mapping_failures,
            r.sleeps_so_far
        ));
    }
    out
}

/// `--chains`: one paragraph per chain, outermost frame last.
pub fn render_chains(chains: &[ChainRow]) -> String {
    if chains.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\ncall chains of the calls that mattered (NOFAIL, failed, NULL, slept, open-coded retries):\n",
    );
    for row in chains {
        let c = &row.counts;
        out.push_str(&format!(
            "  {} calls ({} NOFAIL): {} retries, {} retry sleeps ({} ms), {} NULL, {} open-coded retries\n",
            c.calls,
            c.nofail_calls,
            c.retries(),
            c.sleeps,
            ms(c.slept_ns),
            c.null_returns,
            c.open_coded_retries
        ));
        for frame in &row.chain {
            out.push_str(&format!("      {frame}\n"));
        }
    }
    out
}

/// The final report: the table of the first `top` callers (the report's
/// order: most retries first), then details for those of them that
/// failed, retried or slept, with their histograms.
pub fn render_report(report: &Report, top: usize) -> String {
    let mut out = render_top(&report.callers, top);
    for r in report.callers.iter().take(top) {
        if r.failures + r.counts.sleeps + r.counts.open_coded_retries == 0 {
            continue;
        }
        out.push_str(&format!(
            "\n{} ({} calls, {} NOFAIL)\n",
            r.caller, r.counts.calls, r.counts.nofail_calls
        ));
        if r.is_open_coded_loop() {
            out.push_str(&format!(
                "  open-coded retry loop: {} calls again after a NULL, {} sleeps between them\n",
                r.counts.open_coded_retries, r.counts.open_coded_retry_sleeps
            ));
        }
        let pt: Vec<String> = r
            .pt_failures
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(l, n)| format!("{l} {n}"))
            .collect();
        out.push_str(&format!(
            "  failures: area {}, mapping {}{}; NOFAIL retries: area {}, mapping {}; max {} in one call\n",
            r.counts.area_failures,
            r.counts.mapping_failures,
            if pt.is_empty() { String::new() } else { format!(" (page tables: {})", pt.join(", ")) },
            r.counts.area_retries,
            r.counts.mapping_retries,
            r.counts.max_retries
        ));
        out.push_str(&format!(
            "  retry sleeps: {} ({} jiffies asked), slept {} ms; NULL returned {}\n",
            r.counts.sleeps,
            r.counts.sleep_jiffies,
            ms(r.counts.slept_ns),
            r.counts.null_returns
        ));
        let s = r.aggregate();
        let c = &r.counts;
        if c.futile_retries + c.freed_retries > 0 {
            out.push_str(&format!(
                "  what-if: {} of {} retries futile (nothing the stage needs freed since the failure); {} after a free, woken {} ms after it in all; slept {} ms, {} ms had the free woken it; latency {} ms, {} ms had it woken the task\n",
                c.futile_retries,
                c.futile_retries + c.freed_retries,
                c.freed_retries,
                ms(c.wake_delay_ns),
                ms(c.slept_ns),
                ms(c.whatif_slept_ns),
                ms(c.total_latency_ns),
                // The latency less the sleep the wake would have cut: the
                // failed attempts stay (the free had not come yet). This,
                // not the sleep alone, is what a kernel with the
                // event-driven wait measured (docs/findings).
                ms(c.total_latency_ns
                    .saturating_sub(c.slept_ns.saturating_sub(c.whatif_slept_ns)))
            ));
        }
        for (title, h, unit) in [
            (
                "retries per call",
                &s.retries_hist,
                hist::count_unit as fn(u64) -> String,
            ),
            ("latency", &s.latency_hist, hist::ns_unit),
            ("slept per call", &s.slept_hist, hist::ns_unit),
            (
                "what-if: wake delay per freed retry",
                &s.wake_delay_hist,
                hist::ns_unit,
            ),
            (
                "what-if: stall per call had a free woken it",
                &s.whatif_hist,
                hist::ns_unit,
            ),
        ] {
            let text = hist::render(h, unit, "    ");
            if !text.is_empty() {
                out.push_str(&format!("  {title}:\n{text}"));
            }
        }
    }
    out.push_str(&render_chains(&report.chains));
    if !report.in_flight.is_empty() {
        out.push('\n');
        out.push_str(&render_inflight(&report.in_flight));
    }
    let h = &report.health;
    if h.missed_runs > 0 {
        let worst: Vec<String> = h
            .programs
            .iter()
            .filter(|p| p.recursion_misses > 0)
            .map(|p| format!("{} {}", p.program, p.recursion_misses))
            .collect();
        out.push_str(&format!(
            "warning: the kernel skipped {} program runs (recursion protection: {}); counts above miss those events\n",
            h.missed_runs,
            worst.join(", ")
        ));
    }
    if h.stacks_lost + h.chains_full > 0 {
        out.push_str(&format!(
            "warning: --chains: {} calls' stacks lost (shown as \"(stack lost)\"), {} calls in no chain (chain map full)\n",
            h.stacks_lost, h.chains_full
        ));
    }
    if h.inflight_full + h.callers_full > 0 {
        out.push_str(&format!(
            "warning: {} calls not tracked (in-flight map full), {} not counted (caller map full)\n",
            h.inflight_full, h.callers_full
        ));
    }
    // A read-back inject report: how each caller coped (inject itself
    // prints this as it ends).
    if let Some(inj) = &report.injection {
        out.push('\n');
        out.push_str(&render_behaviour(&inj.counts, &inj.behaviour));
    }
    out
}

/// How each caller coped with `nofail inject`, a line each.
pub fn render_behaviour(counts: &InjectCounts, rows: &[Behaviour]) -> String {
    let mut out = format!(
        "injection: {} eligible, {} injected, skipped: {} by budget, {} by --max-consecutive, {} by selection\n",
        counts.eligible,
        counts.injected,
        counts.skipped_budget,
        counts.skipped_guard,
        counts.skipped_selection
    );
    if rows.is_empty() {
        out.push_str("(no caller received an injected failure)\n");
    }
    for b in rows {
        if b.nofail {
            out.push_str(&format!(
                "{} [NOFAIL]: {} failures injected; retries area {}, mapping {}; {} retry sleeps, stalled {:.1} ms (max {:.1} ms in one call); {} calls completed, {} still looping\n",
                b.caller, b.injected, b.area_retries, b.mapping_retries, b.sleeps, b.stall_ms, b.max_stall_ms, b.calls, b.still_looping
            ));
        } else {
            let syscalls: Vec<String> =
                b.syscalls.iter().map(|(n, c)| format!("{n} {c}")).collect();
            out.push_str(&format!(
                "{}: {} failures injected; NULL returned {}: open-coded retries {} ({} sleeps), error to userspace {}{}, absorbed {}\n",
                b.caller,
                b.injected,
                b.null_returned,
                b.open_coded_retries,
                b.open_coded_retry_sleeps,
                b.error_to_userspace,
                if syscalls.is_empty() { String::new() } else { format!(" (-ENOMEM from {})", syscalls.join(", ")) },
                b.absorbed
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use nofail_common::CallerStats;

    use super::*;
    use crate::{
        kernel::symbols::Kallsyms,
        model::{
            counters::Aggregate,
            report::{rows, sample},
        },
    };

    fn syms() -> Kallsyms {
        Kallsyms::parse("ffffffff81000000 T a_fn\nffffffff82000000 T b_fn\n")
    }

    /// A report of the call sites' kernel stats, named by `syms()`.
    fn report_of(stats: &BTreeMap<u64, CallerStats>) -> Report {
        let sites = stats
            .iter()
            .map(|(&a, s)| (a, Aggregate::of_stats(s)))
            .collect();
        let syms = syms();
        sample(rows(&sites, |a| syms.resolve(a)))
    }

    #[test]
    fn report_details_failing_callers_only() {
        let mut s = CallerStats {
            calls: 4,
            nofail_calls: 4,
            area_failures: 6,
            area_retries: 6,
            sleeps: 6,
            sleep_jiffies: 6,
            slept_ns: 24_000_000,
            max_retries: 3,
            ..Default::default()
        };
        s.retries_hist[0] = 1;
        s.retries_hist[2] = 3;
        s.latency_hist[20] = 4;
        let mut stats = BTreeMap::new();
        stats.insert(0xffffffff81000010, s);
        stats.insert(
            0xffffffff82000000,
            CallerStats {
                calls: 1,
                ..Default::default()
            },
        );
        let report = report_of(&stats);
        let text = render_report(&report, 20);
        assert!(text.contains("a_fn+0x10 (4 calls, 4 NOFAIL)"), "{text}");
        assert!(
            text.contains("NOFAIL retries: area 6, mapping 0; max 3 in one call"),
            "{text}"
        );
        assert!(text.contains("slept 24.0 ms"), "{text}");
        assert!(text.contains("retries per call:"), "{text}");
        assert!(!text.contains("b_fn+0x0 ("), "{text}");
    }

    /// `--top` bounds the final table and its details as it bounds the
    /// interval tables: the rest are counted in one line.
    #[test]
    fn top_bounds_the_final_table() {
        let failing = |calls| CallerStats {
            calls,
            area_failures: 1,
            area_retries: 1,
            ..Default::default()
        };
        let mut stats = BTreeMap::new();
        stats.insert(0xffffffff81000010, failing(2));
        stats.insert(0xffffffff82000020, failing(1));
        let report = report_of(&stats);
        let text = render_report(&report, 1);
        assert!(text.contains("a_fn+0x10 (2 calls"), "{text}");
        assert!(!text.contains("b_fn"), "{text}");
        assert!(text.contains("(1 more callers)"), "{text}");
        let all = render_report(&report, 2);
        assert!(all.contains("b_fn+0x20 (1 calls") && !all.contains("more callers"));
    }

    #[test]
    fn empty_table_says_so() {
        assert!(render_top(&[], 10).contains("no vmalloc calls seen"));
    }

    #[test]
    fn stuck_calls_are_flagged() {
        let row = InflightRow {
            tid: 7,
            pid: 7,
            comm: "xfsaild".into(),
            caller: "a_fn+0x1".into(),
            size: 4096,
            age_ns: 3_000_000_000,
            area_failures: 0,
            mapping_failures: 12,
            pt_failures: [("pte".to_string(), 1)].into(),
            sleeps_so_far: 12,
            slept_ns: 48_000_000,
            stuck: true,
        };
        let text = render_inflight(&[
            row.clone(),
            InflightRow {
                stuck: false,
                ..row
            },
        ]);
        assert_eq!(text.lines().count(), 1);
        assert!(text.starts_with("STUCK 3.0 s in vmalloc: xfsaild (pid 7 tid 7) from a_fn+0x1"));
        assert!(
            text.contains("12 failures (area 0, mapping 12), 12 sleeps"),
            "{text}"
        );
    }

    #[test]
    fn chains_render_frames_under_their_counts() {
        let mut c = crate::model::chains::sample("a+0x1", &["a+0x1", "b+0x2"]);
        c.counts.calls = 3;
        c.counts.nofail_calls = 3;
        c.counts.area_retries = 2;
        c.counts.sleeps = 2;
        let text = render_chains(&[c]);
        assert!(
            text.contains("  3 calls (3 NOFAIL): 2 retries, 2 retry sleeps"),
            "{text}"
        );
        assert!(text.contains("\n      a+0x1\n      b+0x2\n"), "{text}");
        assert_eq!(render_chains(&[]), "");
    }

    #[test]
    fn empty_behaviour_says_so() {
        use crate::model::{coping::behaviour, inject::InjectCounts};
        assert!(behaviour(&[], &[], &Default::default()).is_empty());
        let text = render_behaviour(&InjectCounts::default(), &[]);
        assert!(text.contains("no caller received an injected failure"));
    }
}
