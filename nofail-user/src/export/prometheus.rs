//! Prometheus text exposition (format 0.0.4) of a report: counters end in
//! `_total`, base units in names, histograms as cumulative `_bucket{le}`
//! ending in `+Inf` with `_sum` and `_count`. Caller labels are bounded:
//! the top N callers by retries keep their name, the rest add up under
//! `caller="other"`.

use std::fmt::Write as _;

use nofail_common::HIST_BUCKETS;

use crate::{
    hist::bounds,
    report::{CallerRow, Report},
};

/// The content type of the text format `serve` answers with.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One label set's values, summed over folded callers.
#[derive(Clone)]
struct Series {
    caller: String,
    calls: u64,
    nofail_calls: u64,
    null_returns: u64,
    area_failures: u64,
    mapping_failures: u64,
    area_retries: u64,
    mapping_retries: u64,
    pt_failures: Vec<(String, u64)>,
    sleeps: u64,
    slept_ns: u64,
    open_coded_retries: u64,
    open_coded_retry_sleeps: u64,
    injected: u64,
    latency_ns: u64,
    retries_hist: [u64; HIST_BUCKETS],
    latency_hist: [u64; HIST_BUCKETS],
    slept_hist: [u64; HIST_BUCKETS],
}

impl Series {
    fn named(caller: &str) -> Self {
        Self {
            caller: caller.into(),
            calls: 0,
            nofail_calls: 0,
            null_returns: 0,
            area_failures: 0,
            mapping_failures: 0,
            area_retries: 0,
            mapping_retries: 0,
            pt_failures: Vec::new(),
            sleeps: 0,
            slept_ns: 0,
            open_coded_retries: 0,
            open_coded_retry_sleeps: 0,
            injected: 0,
            latency_ns: 0,
            retries_hist: [0; HIST_BUCKETS],
            latency_hist: [0; HIST_BUCKETS],
            slept_hist: [0; HIST_BUCKETS],
        }
    }

    fn add(&mut self, r: &CallerRow) {
        let add = |a: &mut u64, b: u64| *a = a.saturating_add(b);
        add(&mut self.calls, r.calls);
        add(&mut self.nofail_calls, r.nofail_calls);
        add(&mut self.null_returns, r.null_returns);
        add(&mut self.area_failures, r.area_failures);
        add(&mut self.mapping_failures, r.mapping_failures);
        add(&mut self.area_retries, r.area_retries);
        add(&mut self.mapping_retries, r.mapping_retries);
        add(&mut self.sleeps, r.sleeps);
        add(&mut self.slept_ns, r.slept_ns);
        add(&mut self.open_coded_retries, r.open_coded_retries);
        add(&mut self.open_coded_retry_sleeps, r.open_coded_retry_sleeps);
        add(&mut self.injected, r.injected);
        add(&mut self.latency_ns, r.total_latency_ns);
        for (level, n) in &r.pt_failures {
            match self.pt_failures.iter_mut().find(|(l, _)| l == level) {
                Some((_, total)) => add(total, *n),
                None => self.pt_failures.push((level.clone(), *n)),
            }
        }
        let h = &r.histograms;
        // Reports are validated when read; a live report always converts.
        for (into, from) in [
            (&mut self.retries_hist, &h.retries_per_call),
            (&mut self.latency_hist, &h.latency_ns),
            (&mut self.slept_hist, &h.slept_per_call_ns),
        ] {
            for (a, b) in into
                .iter_mut()
                .zip(from.to_log2().unwrap_or([0; HIST_BUCKETS]))
            {
                add(a, b);
            }
        }
    }
}

/// The top `top` callers by retries (the report's order) and, when more
/// exist, one "other" series holding the rest.
fn series(callers: &[CallerRow], top: usize) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for (i, r) in callers.iter().enumerate() {
        if i < top {
            let mut s = Series::named(&r.caller);
            s.add(r);
            out.push(s);
        } else {
            if out.len() == top {
                out.push(Series::named("other"));
            }
            out[top].add(r);
        }
    }
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

fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    scale: f64,
    rows: &[Series],
    pick: impl Fn(&Series) -> (&[u64; HIST_BUCKETS], f64),
) {
    header(out, name, "histogram", help);
    for s in rows {
        let label = format!("caller=\"{}\"", escape_label(&s.caller));
        let (h, sum) = pick(s);
        let mut cumulative = 0u64;
        // The last kernel bucket has no upper bound: it is only in +Inf.
        for (i, n) in h.iter().enumerate().take(HIST_BUCKETS - 1) {
            cumulative = cumulative.saturating_add(*n);
            let _ = writeln!(
                out,
                "{name}_bucket{{{label},le=\"{}\"}} {cumulative}",
                le(i, scale)
            );
        }
        let count = cumulative.saturating_add(h[HIST_BUCKETS - 1]);
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{label}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{label}}} {count}");
    }
}

fn counter(
    out: &mut String,
    name: &str,
    help: &str,
    rows: &[Series],
    values: impl Fn(&Series) -> Vec<(String, u64)>,
) {
    header(out, name, "counter", help);
    for s in rows {
        for (extra, v) in values(s) {
            let _ = writeln!(
                out,
                "{name}{{caller=\"{}\"{extra}}} {v}",
                escape_label(&s.caller)
            );
        }
    }
}

/// One value, no extra labels.
fn plain(v: u64) -> Vec<(String, u64)> {
    vec![(String::new(), v)]
}

/// The whole exposition for `report`, at most `top` named callers.
pub fn render(report: &Report, top: usize) -> String {
    let rows = series(&report.callers, top);
    let mut out = String::new();

    header(
        &mut out,
        "nofail_info",
        "gauge",
        "nofail build and the kernel it traces; always 1.",
    );
    let _ = writeln!(
        out,
        "nofail_info{{version=\"{}\",kernel=\"{}\",mode=\"{}\",command=\"{}\"}} 1",
        escape_label(&report.nofail_version),
        escape_label(&report.kernel),
        escape_label(&report.mode),
        escape_label(&report.command)
    );
    header(
        &mut out,
        "nofail_trace_duration_seconds",
        "gauge",
        "How long the counts were collected.",
    );
    let _ = writeln!(out, "nofail_trace_duration_seconds {}", report.duration_s);
    header(
        &mut out,
        "nofail_calls_in_flight",
        "gauge",
        "vmalloc calls in progress when the report was taken.",
    );
    let _ = writeln!(out, "nofail_calls_in_flight {}", report.in_flight.len());
    header(
        &mut out,
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

    counter(
        &mut out,
        "nofail_vmalloc_calls_total",
        "Finished vmalloc calls per call site.",
        &rows,
        |s| plain(s.calls),
    );
    counter(
        &mut out,
        "nofail_vmalloc_nofail_calls_total",
        "Finished vmalloc calls with __GFP_NOFAIL per call site.",
        &rows,
        |s| plain(s.nofail_calls),
    );
    counter(
        &mut out,
        "nofail_vmalloc_null_returns_total",
        "vmalloc calls that returned NULL to their caller.",
        &rows,
        |s| plain(s.null_returns),
    );
    counter(
        &mut out,
        "nofail_vmalloc_failures_total",
        "Stage failures inside vmalloc: area (vmap area) or mapping (page tables).",
        &rows,
        |s| {
            vec![
                (",stage=\"area\"".into(), s.area_failures),
                (",stage=\"mapping\"".into(), s.mapping_failures),
            ]
        },
    );
    counter(
        &mut out,
        "nofail_vmalloc_retries_total",
        "Turns of the __GFP_NOFAIL retry loop per stage.",
        &rows,
        |s| {
            vec![
                (",stage=\"area\"".into(), s.area_retries),
                (",stage=\"mapping\"".into(), s.mapping_retries),
            ]
        },
    );
    counter(
        &mut out,
        "nofail_pagetable_failures_total",
        "Page-table page allocations that failed inside vmalloc, per level.",
        &rows,
        |s| {
            s.pt_failures
                .iter()
                .map(|(l, n)| (format!(",level=\"{}\"", escape_label(l)), *n))
                .collect()
        },
    );
    counter(
        &mut out,
        "nofail_retry_sleeps_total",
        "Retry sleeps (schedule_timeout_uninterruptible) inside vmalloc.",
        &rows,
        |s| plain(s.sleeps),
    );
    header(
        &mut out,
        "nofail_retry_slept_seconds_total",
        "counter",
        "Time spent in retry sleeps inside vmalloc.",
    );
    for s in &rows {
        let _ = writeln!(
            out,
            "nofail_retry_slept_seconds_total{{caller=\"{}\"}} {}",
            escape_label(&s.caller),
            seconds(s.slept_ns)
        );
    }
    counter(
        &mut out,
        "nofail_open_coded_retries_total",
        "Calls repeated by hand after a NULL from the same site and task.",
        &rows,
        |s| plain(s.open_coded_retries),
    );
    counter(
        &mut out,
        "nofail_open_coded_retry_sleeps_total",
        "Sleeps between open-coded retries.",
        &rows,
        |s| plain(s.open_coded_retry_sleeps),
    );
    counter(
        &mut out,
        "nofail_injected_failures_total",
        "Sub-allocation failures nofail inject caused in this caller's calls.",
        &rows,
        |s| plain(s.injected),
    );

    histogram(
        &mut out,
        "nofail_vmalloc_retries_per_call",
        "NOFAIL loop turns per finished call (0 for calls without __GFP_NOFAIL).",
        1.0,
        &rows,
        |s| {
            (
                &s.retries_hist,
                s.area_retries.saturating_add(s.mapping_retries) as f64,
            )
        },
    );
    histogram(
        &mut out,
        "nofail_vmalloc_latency_seconds",
        "Duration of finished vmalloc calls.",
        1e-9,
        &rows,
        |s| (&s.latency_hist, seconds(s.latency_ns)),
    );
    histogram(
        &mut out,
        "nofail_vmalloc_slept_per_call_seconds",
        "Time one finished vmalloc call spent in retry sleeps.",
        1e-9,
        &rows,
        |s| (&s.slept_hist, seconds(s.slept_ns)),
    );

    let h = &report.health;
    header(
        &mut out,
        "nofail_missed_events_total",
        "counter",
        "Events nofail did not count: skipped program runs, full maps.",
    );
    for (reason, v) in [
        ("program_skipped", h.missed_runs),
        ("inflight_map_full", h.inflight_full),
        ("caller_map_full", h.callers_full),
    ] {
        let _ = writeln!(out, "nofail_missed_events_total{{reason=\"{reason}\"}} {v}");
    }
    if let Some(inj) = &report.injection {
        header(
            &mut out,
            "nofail_injection_decisions_total",
            "counter",
            "Sub-allocations the injection rule saw, by outcome.",
        );
        let c = &inj.counts;
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
    out
}

#[cfg(test)]
mod tests {
    use nofail_common::CallerStats;

    use super::*;
    use crate::report::{sample, sample_row};

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
