// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail report NEW --baseline OLD`: per-caller changes between two
//! reports, and thresholds that turn them into a CI gate. Callers are
//! matched by `symbol+offset` (addresses move with KASLR and module load
//! order), and retries are compared per call, so runs of different length
//! compare fairly. Calls still in vmalloc when a report was taken (its
//! `in_flight` list) count as calls of their caller, with the failures
//! they have retried so far: a call stuck in a NOFAIL loop is the worst
//! case a gate must see, not a caller that is "gone".

use std::collections::BTreeSet;

use nofail_common::{HIST_BUCKETS, log2_bucket};

use crate::model::{
    hist,
    report::{CallerRow, InflightRow, Report},
};

/// Thresholds that fail `nofail report` (exit 3).
#[derive(Debug, Default, Clone)]
pub struct Gates {
    /// Any caller's p99 retries per call above this.
    pub fail_if_p99_retries_above: Option<u64>,
    /// With a baseline: a caller's retries per call grown by more than this
    /// many percent.
    pub fail_if_retries_increase: Option<f64>,
}

/// One caller in one report, as the diff sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Side {
    /// Finished calls.
    pub calls: u64,
    /// Calls still in vmalloc when the report was taken.
    pub in_flight: u64,
    /// Retries of the finished calls, plus the failures of the calls in
    /// flight (each one a retry under way: a call still running after a
    /// failure is looping).
    pub retries: u64,
    /// `retries` per call, finished or in flight.
    pub per_call: f64,
    /// p99 of retries per finished call (the row's histogram), as the
    /// table shows it.
    pub p99: Option<u64>,
    /// p99 of retries per call, finished or in flight, each call in flight
    /// at its failures so far: what `--fail-if-p99-retries-above` gates.
    pub p99_with_in_flight: Option<u64>,
    pub slept_ns: u64,
}

impl From<&CallerRow> for Side {
    fn from(r: &CallerRow) -> Self {
        Self::of(Some(r), &[])
    }
}

impl Side {
    /// A caller's row and its calls in flight, together.
    fn of(row: Option<&CallerRow>, in_flight: &[&InflightRow]) -> Self {
        let calls = row.map_or(0, |r| r.counts.calls);
        let retries = row.map_or(0, |r| r.retries())
            + in_flight
                .iter()
                .map(|f| f.area_failures + f.mapping_failures)
                .sum::<u64>();
        let n = calls + in_flight.len() as u64;
        Self {
            calls,
            in_flight: in_flight.len() as u64,
            retries,
            per_call: if n == 0 {
                0.0
            } else {
                retries as f64 / n as f64
            },
            p99: row.and_then(|r| r.p99_retries),
            p99_with_in_flight: {
                let mut h = row.map_or([0; HIST_BUCKETS], |r| r.aggregate().retries_hist);
                for f in in_flight {
                    let b = &mut h[log2_bucket(f.area_failures.saturating_add(f.mapping_failures))];
                    *b = b.saturating_add(1);
                }
                hist::quantile(&h, 0.99)
            },
            slept_ns: row.map_or(0, |r| r.counts.slept_ns)
                + in_flight.iter().map(|f| f.slept_ns).sum::<u64>(),
        }
    }

    /// The caller's side in `report`; None if it neither finished a call
    /// nor has one in flight there.
    fn find(report: &Report, caller: &str) -> Option<Self> {
        let row = report.callers.iter().find(|c| c.caller == caller);
        let in_flight: Vec<&InflightRow> = report
            .in_flight
            .iter()
            .filter(|f| f.caller == caller)
            .collect();
        (row.is_some() || !in_flight.is_empty()).then(|| Self::of(row, &in_flight))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub caller: String,
    pub old: Option<Side>,
    pub new: Option<Side>,
}

impl Change {
    /// Growth of retries per call in percent; None when it cannot be
    /// expressed (no baseline calls, or no retries before and none now).
    fn growth_pct(&self) -> Option<f64> {
        let (old, new) = (self.old?, self.new?);
        if old.per_call == 0.0 {
            return (new.per_call > 0.0).then_some(f64::INFINITY);
        }
        Some((new.per_call - old.per_call) / old.per_call * 100.0)
    }
}

/// The callers of a report with a finished call or one in flight, in its
/// order (a caller may come more than once).
fn names(r: &Report) -> Vec<String> {
    r.callers
        .iter()
        .map(|c| c.caller.clone())
        .chain(r.in_flight.iter().map(|f| f.caller.clone()))
        .collect()
}

/// Every caller of either report (with finished calls or calls in
/// flight), in the new report's order, then the ones only the baseline
/// has.
pub fn diff(old: &Report, new: &Report) -> Vec<Change> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for caller in names(new).into_iter().chain(names(old)) {
        if seen.insert(caller.clone()) {
            out.push(Change {
                old: Side::find(old, &caller),
                new: Side::find(new, &caller),
                caller,
            });
        }
    }
    out
}

fn side_text(s: Option<Side>) -> (String, String, String) {
    match s {
        None => ("-".into(), "-".into(), "-".into()),
        Some(s) => (
            if s.in_flight > 0 {
                format!("{}+{}", s.calls, s.in_flight)
            } else {
                s.calls.to_string()
            },
            format!("{:.2}", s.per_call),
            s.p99.map_or("-".into(), |v| format!("<={v}")),
        ),
    }
}

pub fn render(changes: &[Change]) -> String {
    let width = crate::output::text::caller_width(changes.iter().map(|c| c.caller.as_str()));
    let mut out = format!(
        "{:<width$} {:>9} {:>9} {:>10} {:>10} {:>7} {:>7} {:>9}\n",
        "CALLER",
        "CALLS OLD",
        "CALLS NEW",
        "R/CALL OLD",
        "R/CALL NEW",
        "P99 OLD",
        "P99 NEW",
        "CHANGE"
    );
    for c in changes {
        let (oc, or, op) = side_text(c.old);
        let (nc, nr, np) = side_text(c.new);
        let change = match (c.old, c.new, c.growth_pct()) {
            (None, Some(_), _) => "new".to_string(),
            (Some(_), None, _) => "gone".to_string(),
            (_, _, Some(p)) if p.is_infinite() => "retries now".to_string(),
            (_, _, Some(p)) => format!("{p:+.1}%"),
            _ => "=".to_string(),
        };
        out.push_str(&format!(
            "{:<width$} {oc:>9} {nc:>9} {or:>10} {nr:>10} {op:>7} {np:>7} {change:>9}\n",
            c.caller
        ));
    }
    if changes
        .iter()
        .flat_map(|c| [c.old, c.new])
        .any(|s| s.is_some_and(|s| s.in_flight > 0))
    {
        out.push_str(
            "(N+M calls: N finished, M still in vmalloc when the report was taken; their failures so far count as retries; P99 is of the finished calls)\n",
        );
    }
    out
}

/// What the gates refuse, one sentence each; empty when all pass.
pub fn violations(new: &Report, changes: Option<&[Change]>, gates: &Gates) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(limit) = gates.fail_if_p99_retries_above {
        // Every caller with a finished call or one in flight: a call stuck
        // in a loop is the one this gate exists for.
        let mut seen = BTreeSet::new();
        for caller in names(new) {
            if !seen.insert(caller.clone()) {
                continue;
            }
            let Some(side) = Side::find(new, &caller) else {
                continue;
            };
            if let Some(p99) = side.p99_with_in_flight.filter(|&p| p > limit) {
                out.push(format!(
                    "{caller}: p99 retries per call <={p99} is above {limit}{}",
                    match side.in_flight {
                        0 => String::new(),
                        n => format!(
                            ", counting {n} call{} still in flight with {} failures so far as retries",
                            if n == 1 { "" } else { "s" },
                            if n == 1 { "its" } else { "their" }
                        ),
                    }
                ));
            }
        }
    }
    if let (Some(pct), Some(changes)) = (gates.fail_if_retries_increase, changes) {
        for c in changes {
            match (c.old, c.new, c.growth_pct()) {
                (None, Some(n), _) if n.retries > 0 => out.push(format!(
                    "{}: retries {:.2} per call, not in the baseline{}",
                    c.caller,
                    n.per_call,
                    in_flight_note(n)
                )),
                (Some(o), Some(n), Some(g)) if g > pct => out.push(format!(
                    "{}: retries per call {:.2} -> {:.2} ({}), more than +{pct}%{}",
                    c.caller,
                    o.per_call,
                    n.per_call,
                    if g.is_infinite() {
                        "none before".to_string()
                    } else {
                        format!("{g:+.1}%")
                    },
                    in_flight_note(n)
                )),
                _ => {}
            }
        }
    }
    out
}

/// ", N call(s) still in flight" when the new side has some.
fn in_flight_note(s: Side) -> String {
    match s.in_flight {
        0 => String::new(),
        n => format!(
            ", {n} call{} still in flight",
            if n == 1 { "" } else { "s" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use nofail_common::{CallerStats, log2_bucket};

    use super::*;
    use crate::model::report::{sample, sample_row};

    fn caller(name: &str, calls: u64, retries_each: u64) -> CallerRow {
        let mut s = CallerStats {
            calls,
            nofail_calls: calls,
            area_retries: calls * retries_each,
            ..Default::default()
        };
        s.retries_hist[log2_bucket(retries_each)] = calls;
        sample_row(name, &s)
    }

    #[test]
    fn gates_pass_and_fail() {
        let old = sample(vec![caller("a+0x1", 10, 2), caller("b+0x2", 5, 0)]);
        let same = sample(vec![caller("a+0x1", 20, 2), caller("b+0x2", 1, 0)]);
        let worse = sample(vec![caller("a+0x1", 10, 5), caller("b+0x2", 5, 1)]);
        let gates = Gates {
            fail_if_p99_retries_above: Some(3),
            fail_if_retries_increase: Some(10.0),
        };
        let d = diff(&old, &same);
        assert!(violations(&same, Some(&d), &gates).is_empty());
        let d = diff(&old, &worse);
        let v = violations(&worse, Some(&d), &gates);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(v[0].contains("a+0x1: p99 retries per call <=7 is above 3"));
        assert!(v[1].contains("2.00 -> 5.00 (+150.0%)"));
        assert!(v[2].contains("b+0x2") && v[2].contains("none before"));
        let text = render(&d);
        assert!(
            text.contains("+150.0%") && text.contains("retries now"),
            "{text}"
        );
    }

    #[test]
    fn new_and_gone_callers() {
        let old = sample(vec![caller("gone+0x1", 1, 0)]);
        let new = sample(vec![caller("new+0x1", 3, 1)]);
        let d = diff(&old, &new);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].caller, "new+0x1");
        assert!(d[0].old.is_none() && d[1].new.is_none());
        let gates = Gates {
            fail_if_retries_increase: Some(0.0),
            ..Default::default()
        };
        let v = violations(&new, Some(&d), &gates);
        assert_eq!(
            v,
            vec!["new+0x1: retries 1.00 per call, not in the baseline"]
        );
    }

    fn stuck(caller: &str, mapping_failures: u64) -> InflightRow {
        InflightRow {
            tid: 64,
            pid: 64,
            comm: "sh".into(),
            caller: caller.into(),
            size: 6 << 20,
            age_ns: 6_000_000_000,
            area_failures: 0,
            mapping_failures,
            pt_failures: [("pte".to_string(), 1)].into(),
            sleeps_so_far: mapping_failures,
            slept_ns: 5_000_000_000,
            stuck: true,
        }
    }

    /// The stock kernel's report: no call of the site finished, one is
    /// stuck with 744 mapping failures. The patched kernel's: one call,
    /// one mapping retry. In-flight calls count, so the stuck call is
    /// 744 retries per call, not a caller that is gone.
    #[test]
    fn calls_in_flight_count_with_their_failures() {
        let site = "site_vmalloc_nofail_fresh+0x71 [nofail_trigger]";
        let mut stock = sample(vec![caller("kernel_clone+0xdf", 1, 0)]);
        stock.in_flight = vec![stuck(site, 744)];
        let mut once = CallerStats {
            calls: 1,
            nofail_calls: 1,
            mapping_failures: 1,
            mapping_retries: 1,
            ..Default::default()
        };
        once.retries_hist[log2_bucket(1)] = 1;
        let patched = sample(vec![
            sample_row(site, &once),
            caller("kernel_clone+0xdf", 1, 0),
        ]);
        let gates = Gates {
            fail_if_retries_increase: Some(50.0),
            fail_if_p99_retries_above: Some(1),
        };

        let d = diff(&stock, &patched);
        assert_eq!(d[0].caller, site);
        let (old, new) = (d[0].old.unwrap(), d[0].new.unwrap());
        assert_eq!((old.calls, old.in_flight, old.retries), (0, 1, 744));
        assert_eq!((new.calls, new.in_flight, new.retries), (1, 0, 1));
        assert_eq!(old.per_call, 744.0);
        assert!(violations(&patched, Some(&d), &gates).is_empty());
        assert_eq!(old.p99_with_in_flight, Some(1023), "744 is in [512, 1024)");
        let text = render(&d);
        let line = text.lines().find(|l| l.starts_with(site)).unwrap();
        assert_eq!(
            line.split_whitespace().skip(2).collect::<Vec<_>>(),
            ["0+1", "1", "744.00", "1.00", "-", "<=1", "-99.9%"],
            "{text}"
        );
        assert!(text.contains("(N+M calls: N finished, M still in vmalloc"));

        let d = diff(&patched, &stock);
        let v = violations(&stock, Some(&d), &gates);
        assert_eq!(
            v,
            vec![
                format!(
                    "{site}: p99 retries per call <=1023 is above 1, counting 1 call still in flight with its failures so far as retries"
                ),
                format!(
                    "{site}: retries per call 1.00 -> 744.00 (+74300.0%), more than +50%, 1 call still in flight"
                )
            ]
        );
        // Not in the baseline at all: a stuck call is still a new retrier.
        let d = diff(&sample(vec![]), &stock);
        let increase = Gates {
            fail_if_p99_retries_above: None,
            ..gates.clone()
        };
        assert_eq!(
            violations(&stock, Some(&d), &increase),
            vec![format!(
                "{site}: retries 744.00 per call, not in the baseline, 1 call still in flight"
            )]
        );
        // The p99 gate alone, without a baseline: the only call of the site
        // is in flight, and it is the one the gate exists for.
        let p99 = Gates {
            fail_if_p99_retries_above: Some(3),
            ..Default::default()
        };
        assert_eq!(
            violations(&stock, None, &p99),
            vec![format!(
                "{site}: p99 retries per call <=1023 is above 3, counting 1 call still in flight with its failures so far as retries"
            )]
        );
        assert!(violations(&patched, None, &p99).is_empty());
        // Without calls in flight nothing changes: no footnote.
        assert!(!render(&diff(&patched, &patched)).contains("N+M"));
    }
}
