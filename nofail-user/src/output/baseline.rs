// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail report NEW --baseline OLD`: per-caller changes between two
//! reports, and thresholds that turn them into a CI gate. Callers are
//! matched by `symbol+offset` (addresses move with KASLR and module load
//! order), and retries are compared per call, so runs of different length
//! compare fairly.

use std::collections::BTreeSet;

use crate::model::report::{CallerRow, Report};

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
    pub calls: u64,
    pub retries: u64,
    pub per_call: f64,
    pub p99: Option<u64>,
    pub slept_ns: u64,
}

impl From<&CallerRow> for Side {
    fn from(r: &CallerRow) -> Self {
        Self {
            calls: r.counts.calls,
            retries: r.retries(),
            per_call: if r.counts.calls == 0 {
                0.0
            } else {
                r.retries() as f64 / r.counts.calls as f64
            },
            p99: r.p99_retries,
            slept_ns: r.counts.slept_ns,
        }
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

/// Every caller of either report, in the new report's order, then the ones
/// only the baseline has.
pub fn diff(old: &Report, new: &Report) -> Vec<Change> {
    let find = |r: &Report, caller: &str| {
        r.callers
            .iter()
            .find(|c| c.caller == caller)
            .map(Side::from)
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for c in new.callers.iter().chain(&old.callers) {
        if seen.insert(c.caller.clone()) {
            out.push(Change {
                caller: c.caller.clone(),
                old: find(old, &c.caller),
                new: find(new, &c.caller),
            });
        }
    }
    out
}

fn side_text(s: Option<Side>) -> (String, String, String) {
    match s {
        None => ("-".into(), "-".into(), "-".into()),
        Some(s) => (
            s.calls.to_string(),
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
    out
}

/// What the gates refuse, one sentence each; empty when all pass.
pub fn violations(new: &Report, changes: Option<&[Change]>, gates: &Gates) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(limit) = gates.fail_if_p99_retries_above {
        for r in &new.callers {
            if let Some(p99) = r.p99_retries.filter(|&p| p > limit) {
                out.push(format!(
                    "{}: p99 retries per call <={p99} is above {limit}",
                    r.caller
                ));
            }
        }
    }
    if let (Some(pct), Some(changes)) = (gates.fail_if_retries_increase, changes) {
        for c in changes {
            match (c.old, c.new, c.growth_pct()) {
                (None, Some(n), _) if n.retries > 0 => out.push(format!(
                    "{}: retries {:.2} per call, not in the baseline",
                    c.caller, n.per_call
                )),
                (Some(o), Some(n), Some(g)) if g > pct => out.push(format!(
                    "{}: retries per call {:.2} -> {:.2} ({}), more than +{pct}%",
                    c.caller,
                    o.per_call,
                    n.per_call,
                    if g.is_infinite() {
                        "none before".to_string()
                    } else {
                        format!("{g:+.1}%")
                    }
                )),
                _ => {}
            }
        }
    }
    out
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
}
