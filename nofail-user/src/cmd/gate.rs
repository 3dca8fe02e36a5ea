// SPDX-License-Identifier: MIT OR Apache-2.0
//! The gate flags `report`, `trace` and `inject` share: a baseline to
//! compare with and the thresholds that fail a run (exit status 3, one
//! `nofail: gate:` line per violation).

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    model::report::Report,
    output::{baseline, json},
};

#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    /// Compare with an older report (per-caller changes).
    #[arg(long, value_name = "OLD.json")]
    pub baseline: Option<PathBuf>,
    /// Fail when any caller's p99 retries per call is above N (p99 is the
    /// upper bound of its log2 bucket: 0, 1, 3, 7, 15, ...). Calls still in
    /// flight in the report count as calls, with their failures so far as
    /// retries.
    #[arg(long, value_name = "N")]
    pub fail_if_p99_retries_above: Option<u64>,
    /// With --baseline: fail when a caller's retries per call grew by more
    /// than PCT percent (a caller that did not retry before and does now
    /// always fails). Calls still in flight in a report count as calls,
    /// with their failures so far as retries.
    #[arg(long, value_name = "PCT", value_parser = parse_pct)]
    pub fail_if_retries_increase: Option<f64>,
}

fn parse_pct(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("invalid percentage {s:?}"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("percentage must be 0 or more, got {s:?}"));
    }
    Ok(v)
}

/// The gate refused the report: its violations, one line each
/// (`nofail: gate: ...`, printed by main), exit status 3.
#[derive(Debug)]
pub struct GateFailed(pub Vec<String>);

impl std::fmt::Display for GateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gate: {}", self.0.join("; "))
    }
}

impl std::error::Error for GateFailed {}

/// What the gate said of a report.
pub struct Verdict {
    /// The per-caller comparison with the baseline, for people.
    pub comparison: Option<String>,
    /// One sentence per threshold crossed; empty when all pass.
    pub violations: Vec<String>,
}

impl GateArgs {
    /// The baseline, read and checked before anything is attached or
    /// written, so a bad one costs nothing.
    pub fn load(&self) -> Result<Option<Report>> {
        if self.fail_if_retries_increase.is_some() && self.baseline.is_none() {
            anyhow::bail!("--fail-if-retries-increase needs --baseline OLD.json");
        }
        self.baseline.as_deref().map(json::read_report).transpose()
    }

    pub fn judge(&self, new: &Report, old: Option<&Report>) -> Verdict {
        let changes = old.map(|old| baseline::diff(old, new));
        let comparison = changes.as_ref().zip(self.baseline.as_ref()).map(|(c, b)| {
            format!(
                "\nagainst baseline {}:\n{}",
                b.display(),
                baseline::render(c)
            )
        });
        let gates = baseline::Gates {
            fail_if_p99_retries_above: self.fail_if_p99_retries_above,
            fail_if_retries_increase: self.fail_if_retries_increase,
        };
        Verdict {
            comparison,
            violations: baseline::violations(new, changes.as_deref(), &gates),
        }
    }
}

impl Verdict {
    pub fn result(self) -> Result<()> {
        if self.violations.is_empty() {
            Ok(())
        } else {
            Err(GateFailed(self.violations).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages() {
        assert_eq!(parse_pct("50").unwrap(), 50.0);
        assert_eq!(parse_pct("12.5%").unwrap(), 12.5);
        for bad in ["-1", "x", "inf", "NaN"] {
            assert!(parse_pct(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_increase_gate_needs_a_baseline() {
        let g = GateArgs {
            baseline: None,
            fail_if_p99_retries_above: None,
            fail_if_retries_increase: Some(10.0),
        };
        let err = g.load().unwrap_err().to_string();
        assert_eq!(err, "--fail-if-retries-increase needs --baseline OLD.json");
    }
}
