// SPDX-License-Identifier: MIT OR Apache-2.0
//! What a report derives from its counters and histograms, recomputed and
//! compared: a report read back (output/json.rs) that disagrees with its
//! own counts is refused rather than believed. A gate that read `p99_retries`
//! as written would pass a report whose histogram says otherwise.
//!
//! Derived: per caller `failures`, `mean_latency_ns` and the p50/p99 of
//! latency and retries; `health.missed_runs` (the programs' recursion
//! misses) and `health.events.dropped`; for `nofail inject`, each caller's
//! behaviour line (from its row and its calls in flight). The totals are
//! compared by the JSON reader, which knows which counters an older
//! version wrote.

use std::collections::BTreeMap;

use crate::model::{
    coping::behaviour,
    report::{Derived, Report},
};

fn shown(v: Option<u64>) -> String {
    v.map_or("null".into(), |v| v.to_string())
}

/// The first field of `report` derived from counters and histograms that
/// disagrees with them, as one sentence naming it by path; None when all
/// agree. The histograms must have been checked (`Hist::to_log2`).
pub fn disagreement(report: &Report) -> Option<String> {
    for (i, row) in report.callers.iter().enumerate() {
        let computed = Derived::of(&row.aggregate());
        let written = Derived::written(row);
        for ((name, from, w), (_, _, c)) in written.fields().into_iter().zip(computed.fields()) {
            if w != c {
                return Some(format!(
                    "callers[{i}] ({}): {name} is {}, but {from} gives {}",
                    row.caller,
                    shown(w),
                    shown(c)
                ));
            }
        }
    }
    let h = &report.health;
    let misses = h
        .programs
        .iter()
        .fold(0u64, |n, p| n.saturating_add(p.recursion_misses));
    if h.missed_runs != misses {
        return Some(format!(
            "health.missed_runs is {}, but the programs' recursion_misses add up to {misses}",
            h.missed_runs
        ));
    }
    if let Some(e) = &h.events {
        let dropped = e.over_rate.saturating_add(e.ring_full);
        if e.dropped != dropped {
            return Some(format!(
                "health.events.dropped is {}, but over_rate + ring_full give {dropped}",
                e.dropped
            ));
        }
    }
    report.injection.as_ref().and_then(|inj| {
        // The system calls each caller's NULLs became are counted only
        // there: taken as written, the rest recomputed around them.
        let mut enomem = BTreeMap::new();
        for b in &inj.behaviour {
            if let Some(addr) = report
                .callers
                .iter()
                .find(|r| r.caller == b.caller)
                .and_then(|r| u64::from_str_radix(r.address.trim_start_matches("0x"), 16).ok())
            {
                enomem.insert(addr, b.syscalls.clone());
            }
        }
        let computed = behaviour(&report.callers, &report.in_flight, &enomem);
        if computed.len() != inj.behaviour.len() {
            return Some(format!(
                "injection.behaviour has {} lines, but {} callers' rows count injected failures",
                inj.behaviour.len(),
                computed.len()
            ));
        }
        inj.behaviour
            .iter()
            .zip(&computed)
            .enumerate()
            .find_map(|(i, (w, c))| {
                let (w, c) = (serde_json::to_value(w).ok()?, serde_json::to_value(c).ok()?);
                let (w, c) = (w.as_object()?, c.as_object()?);
                let (key, _) = w.iter().find(|(k, v)| c.get(*k) != Some(*v))?;
                Some(format!(
                    "injection.behaviour[{i}] ({}): {key} is {}, but the caller's row and calls in flight give {}",
                    w["caller"].as_str().unwrap_or_default(),
                    w[key],
                    c.get(key).unwrap_or(&serde_json::Value::Null)
                ))
            })
    })
}

#[cfg(test)]
mod tests {
    use nofail_common::CallerStats;

    use super::*;
    use crate::model::report::{CallerRow, sample, sample_row};

    fn row() -> CallerRow {
        let mut s = CallerStats {
            calls: 10,
            nofail_calls: 10,
            area_failures: 9,
            area_retries: 9,
            latency_ns: 1000,
            ..Default::default()
        };
        s.retries_hist[0] = 7;
        s.retries_hist[2] = 3;
        s.latency_hist[7] = 10;
        sample_row("site+0x13", &s)
    }

    #[test]
    fn rows_as_computed_agree() {
        assert_eq!(disagreement(&sample(vec![row()])), None);
    }

    /// Each derived field changed on its own is named, with what it
    /// derives from.
    #[test]
    fn each_derived_field_is_checked() {
        type Edit = fn(&mut CallerRow);
        let edits: [(Edit, &str); 7] = [
            (
                |r| r.failures = 8,
                "failures is 8, but area_failures + mapping_failures gives 9",
            ),
            (
                |r| r.mean_latency_ns = 1,
                "mean_latency_ns is 1, but total_latency_ns / calls gives 100",
            ),
            (
                |r| r.p50_latency_ns = Some(1),
                "p50_latency_ns is 1, but histogram latency_ns gives 127",
            ),
            (
                |r| r.p99_latency_ns = None,
                "p99_latency_ns is null, but histogram latency_ns gives 127",
            ),
            (
                |r| r.p50_retries = Some(3),
                "p50_retries is 3, but histogram retries_per_call gives 0",
            ),
            (
                |r| r.p99_retries = None,
                "p99_retries is null, but histogram retries_per_call gives 3",
            ),
            (
                |r| r.counts.calls = 5,
                "mean_latency_ns is 100, but total_latency_ns / calls gives 200",
            ),
        ];
        for (edit, want) in edits {
            let mut r = row();
            edit(&mut r);
            let got = disagreement(&sample(vec![r])).expect(want);
            assert_eq!(got, format!("callers[0] (site+0x13): {want}"));
        }
    }

    /// An inject report's behaviour lines are recomputed from the rows
    /// and calls in flight, the -ENOMEM system calls taken as written.
    #[test]
    fn behaviour_is_checked() {
        use crate::model::inject::{InjectCounts, InjectMode, InjectRuleView, Injection};
        let mut r = row();
        r.counts.injected = 2;
        r.counts.null_returns = 3;
        r.counts.open_coded_retries = 1;
        let mut report = sample(vec![r]);
        let addr =
            u64::from_str_radix(report.callers[0].address.trim_start_matches("0x"), 16).unwrap();
        let enomem = BTreeMap::from([(addr, BTreeMap::from([("bpf".to_string(), 1)]))]);
        report.injection = Some(Injection {
            rule: InjectRuleView::always_area(InjectMode::Kprobe),
            counts: InjectCounts::default(),
            behaviour: behaviour(&report.callers, &report.in_flight, &enomem),
        });
        assert_eq!(disagreement(&report), None);
        report.injection.as_mut().unwrap().behaviour[0].absorbed = 2;
        assert_eq!(
            disagreement(&report).unwrap(),
            "injection.behaviour[0] (site+0x13): absorbed is 2, but the caller's row and calls in flight give 1"
        );
    }

    #[test]
    fn health_sums_are_checked() {
        let mut report = sample(vec![]);
        report.health.missed_runs = 2;
        assert!(
            disagreement(&report)
                .unwrap()
                .starts_with("health.missed_runs is 2")
        );
        report.health.missed_runs = 0;
        report.health.events = Some(crate::model::health::EventHealth {
            dropped: 3,
            over_rate: 1,
            ..Default::default()
        });
        assert!(
            disagreement(&report)
                .unwrap()
                .contains("over_rate + ring_full give 1")
        );
    }
}
