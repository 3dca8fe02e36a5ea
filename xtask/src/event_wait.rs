// SPDX-License-Identifier: MIT OR Apache-2.0
//! The event-driven wait of testing/patches/vmalloc-nofail-event-wait.patch
//! held against the stock loop and against what `--what-if` predicted from
//! it. The same timed exhaustion runs (testing/vm-tests/src/whatif.rs:
//! `whatif_timed_*` on the stock test kernel, `event_wait_*` on the
//! patched one) write `timed_<kind>.json` into each kernel's results; this
//! puts them side by side and checks, per kind, on the medians of each
//! kernel's runs (a run under TCG can lose milliseconds to the host):
//!
//! - area stage (`area`, `decoys`): the patched loop makes fewer retries
//!   and fewer futile ones than the stock loop;
//! - area stage: the stall `--what-if` predicted from the stock runs is
//!   within 10 % or one jiffy, whichever is larger, of the stall measured
//!   on the patched kernel;
//! - mapping stage: the same retries (the patch keeps that loop's
//!   one-jiffy poll). Its prediction is printed, not gated: it models a
//!   wake at the first page free, a wait the patch does not build, so the
//!   patched stall is the stock loop's, a few jiffies that TCG stretches
//!   by milliseconds from run to run.
//!
//! `cargo xtask event-wait` runs both kernels and prints the table; CI
//! runs the same check on the runs of its two suite stages.

use std::{path::Path, time::SystemTime};

use anyhow::{Context as _, Result, bail, ensure};
use nofail_test_support::timed::{KINDS, Series, Timed};

use crate::{
    kernels::{KernelName, KernelSpec},
    suite::{self, Selection},
    util::workspace_root,
    variant,
};

/// The patch, relative to the workspace root.
pub const PATCH: &str = "testing/patches/vmalloc-nofail-event-wait.patch";

/// The stock scenarios and the patched ones, in `KINDS` order.
const STOCK_SCENARIOS: [&str; 3] = [
    "whatif_timed_area",
    "whatif_timed_decoys",
    "whatif_timed_mapping",
];

/// One kind's medians on both kernels.
struct Pair {
    /// Runs per kernel (the stock series').
    runs: usize,
    stock: Medians,
    patched: Medians,
}

/// The medians the check compares, of one kernel's series.
struct Medians {
    kind: String,
    jiffy_ns: u64,
    free_after_ns: u64,
    retries: u64,
    futile: u64,
    stall_ns: u64,
    predicted_stall_ns: u64,
}

impl Medians {
    fn of(s: &Series) -> Self {
        Self {
            kind: s.kind.clone(),
            jiffy_ns: s.runs.first().map_or(0, Timed::jiffy_ns),
            free_after_ns: s.median(|t| t.free_after_ns),
            retries: s.median(|t| t.retries),
            futile: s.median(|t| t.futile),
            stall_ns: s.median(|t| t.stall_ns),
            predicted_stall_ns: s.median(Timed::predicted_stall_ns),
        }
    }
}

impl Pair {
    fn new(stock: &Series, patched: &Series) -> Self {
        Self {
            runs: stock.runs.len(),
            stock: Medians::of(stock),
            patched: Medians::of(patched),
        }
    }

    /// The prediction's error against the patched stall, ns (signed).
    fn error_ns(&self) -> i64 {
        self.stock.predicted_stall_ns as i64 - self.patched.stall_ns as i64
    }

    /// The goal: 10 % of the patched stall or one jiffy, the larger.
    fn bound_ns(&self) -> u64 {
        (self.patched.stall_ns / 10).max(self.patched.jiffy_ns)
    }

    /// Whether the prediction is held to the bound: the area stage's, whose
    /// wait the patch builds.
    fn gated(&self) -> bool {
        self.stock.kind != "mapping"
    }

    /// What is wrong with this pair, one line each.
    fn violations(&self) -> Vec<String> {
        let (s, p) = (&self.stock, &self.patched);
        let mut out = Vec::new();
        let kind = &s.kind;
        if !self.gated() {
            if p.retries != s.retries {
                out.push(format!(
                    "{kind}: {} retries patched, {} stock: the patch leaves the mapping loop alone",
                    p.retries, s.retries
                ));
            }
            return out;
        }
        if p.futile >= s.futile || p.retries >= s.retries {
            out.push(format!(
                "{kind}: patched {} retries ({} futile), not fewer than stock {} ({} futile)",
                p.retries, p.futile, s.retries, s.futile
            ));
        }
        if self.error_ns().unsigned_abs() > self.bound_ns() {
            out.push(format!(
                "{kind}: --what-if predicted {:.1} ms from the stock runs, the patched stall was {:.1} ms: off by more than {:.1} ms",
                ms(s.predicted_stall_ns),
                ms(p.stall_ns),
                ms(self.bound_ns())
            ));
        }
        out
    }
}

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn read(dir: &Path, kind: &str) -> Result<Series> {
    let path = dir.join(format!("timed_{kind}.json"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("no {}: its scenario did not run", path.display()))?;
    let s: Series =
        serde_json::from_str(&text).with_context(|| format!("cannot read {}", path.display()))?;
    ensure!(
        s.kind == kind && !s.runs.is_empty() && s.runs.iter().all(|t| t.kind == kind),
        "{} holds no {kind} runs",
        path.display()
    );
    Ok(s)
}

/// The side-by-side table: per kind, the medians of retries, futile
/// retries and stall on both kernels, then --what-if's prediction from the
/// stock runs and its error against the patched stall.
fn table(pairs: &[Pair]) -> String {
    let runs = pairs.first().map_or(0, |p| p.runs);
    let mut out = format!(
        "medians of {runs} runs per kernel\n\
         scenario  free at  retries      futile       stall ms          what-if (stock runs)\n\
         \x20                  stock patch  stock patch  stock   patched   predicted  error   bound\n",
    );
    for pair in pairs {
        let (s, p) = (&pair.stock, &pair.patched);
        out.push_str(&format!(
            "{:<8}  {:>5.1} ms {:>5} {:>5}  {:>5} {:>5}  {:>6.1}  {:>6.1}    {:>6.1}  {:>+6.1}  {}\n",
            s.kind,
            ms(s.free_after_ns),
            s.retries,
            p.retries,
            s.futile,
            p.futile,
            ms(s.stall_ns),
            ms(p.stall_ns),
            ms(s.predicted_stall_ns),
            pair.error_ns() as f64 / 1e6,
            if pair.gated() {
                format!("{:>5.1}", ms(pair.bound_ns()))
            } else {
                "not gated (the patch keeps the jiffy poll)".into()
            },
        ));
    }
    out
}

/// Reads both kernels' runs (written since `since`), prints the table and
/// fails with every violation.
pub fn check(stock_dir: &Path, patched_dir: &Path, since: SystemTime) -> Result<()> {
    let mut pairs = Vec::new();
    for kind in KINDS {
        for dir in [stock_dir, patched_dir] {
            crate::gate::written_since(&dir.join(format!("timed_{kind}.json")), since)?;
        }
        pairs.push(Pair::new(
            &read(stock_dir, kind)?,
            &read(patched_dir, kind)?,
        ));
    }
    print!("{}", table(&pairs));
    let violations: Vec<String> = pairs.iter().flat_map(Pair::violations).collect();
    if !violations.is_empty() {
        bail!("{}", violations.join("; "));
    }
    Ok(())
}

/// `cargo xtask event-wait`: the stock scenarios on the test kernel and
/// the patched ones on `test+PATCH` (two guests at once), then `check`.
pub fn run() -> Result<i32> {
    crate::setup::ensure()?;
    let root = workspace_root();
    let stock = variant::ensure_spec(&KernelSpec::plain(KernelName::Test))?;
    let patched = variant::ensure_spec(&KernelSpec::patched(root.join(PATCH)))?;
    suite::build()?;
    let since = SystemTime::now();
    let runs = [(&stock, true), (&patched, false)];
    let ran = suite::in_lanes(&runs, |_, (kernel, is_stock)| {
        // The patched kernel's own scenarios are the event_wait_* ones.
        let exact: &[&str] = if *is_stock { &STOCK_SCENARIOS } else { &[] };
        suite::run(
            kernel,
            Selection {
                exact,
                ..Selection::default()
            },
        )
    });
    for ((kernel, _), ok) in runs.iter().zip(ran) {
        if !ok? {
            eprintln!("xtask event-wait: the scenarios failed on {}", kernel.label);
            return Ok(1);
        }
    }
    let results = root.join("target/vm-results");
    match check(
        &results.join(&stock.label),
        &results.join(&patched.label),
        since,
    ) {
        Ok(()) => Ok(0),
        Err(e) => {
            eprintln!("xtask event-wait: {e:#}");
            Ok(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A series whose medians are `one(...)`'s: a run 50 ms slower and a
    /// run twice as fast around it, which the medians drop.
    fn timed(kind: &str, retries: u64, futile: u64, stall_ms: u64, predicted_ms: u64) -> Series {
        let run = one(kind, retries, futile, stall_ms, predicted_ms);
        let mut high = one(
            kind,
            retries + 5,
            futile + 5,
            stall_ms + 50,
            predicted_ms + 50,
        );
        high.freed = run.freed;
        let mut low = run.clone();
        low.futile = low.futile.saturating_sub(1);
        low.retries = low.retries.saturating_sub(1).max(low.futile);
        low.stall_ns /= 2;
        low.slept_ns /= 2;
        low.whatif_slept_ns /= 2;
        Series {
            kind: kind.into(),
            runs: vec![high, run, low],
        }
    }

    fn one(kind: &str, retries: u64, futile: u64, stall_ms: u64, predicted_ms: u64) -> Timed {
        // slept - whatif_slept = stall - predicted.
        Timed {
            kind: kind.into(),
            hz: 250,
            free_after_ns: 40_000_000,
            retries,
            futile,
            freed: retries - futile,
            stall_ns: stall_ms * 1_000_000,
            slept_ns: stall_ms * 1_000_000,
            whatif_slept_ns: predicted_ms * 1_000_000,
            wake_delay_ns: 0,
            truth_wake_delay_ns: 0,
        }
    }

    #[test]
    fn a_patched_loop_that_retries_less_within_the_bound_passes() {
        let pair = Pair::new(&timed("area", 6, 5, 47, 42), &timed("area", 1, 0, 43, 43));
        assert!(pair.violations().is_empty(), "{:?}", pair.violations());
        assert_eq!(pair.error_ns(), -1_000_000);
        assert_eq!(pair.bound_ns(), 4_300_000);
        let t = table(&[pair]);
        assert!(t.contains("area"), "{t}");
        assert!(t.contains("-1.0"), "{t}");
    }

    #[test]
    fn as_many_futile_retries_fail() {
        let pair = Pair::new(
            &timed("decoys", 5, 4, 42, 41),
            &timed("decoys", 5, 4, 42, 42),
        );
        let v = pair.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].starts_with("decoys: patched 5 retries (4 futile)"),
            "{v:?}"
        );
    }

    #[test]
    fn a_prediction_off_by_more_than_a_jiffy_and_10_percent_fails() {
        let pair = Pair::new(&timed("area", 6, 5, 47, 30), &timed("area", 1, 0, 43, 43));
        let v = pair.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("off by more than 4.3 ms"), "{v:?}");
    }

    #[test]
    fn the_mapping_loop_must_retry_as_often() {
        let pair = Pair::new(
            &timed("mapping", 4, 3, 35, 33),
            &timed("mapping", 3, 2, 34, 34),
        );
        let v = pair.violations();
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("leaves the mapping loop alone"), "{v:?}");
    }

    #[test]
    fn the_mapping_prediction_is_printed_not_gated() {
        let pair = Pair::new(
            &timed("mapping", 4, 3, 32, 30),
            &timed("mapping", 4, 3, 42, 42),
        );
        assert!(pair.violations().is_empty(), "{:?}", pair.violations());
        let t = table(&[pair]);
        assert!(t.contains("-12.0  not gated"), "{t}");
    }
}
