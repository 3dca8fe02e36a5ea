// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail report`: a JSON report read back, printed, compared with a
//! baseline, gated, drawn as SVG, converted to Prometheus text.

use std::path::PathBuf;

use anyhow::Result;

use crate::{
    cmd::{flags::Outputs, gate::GateArgs},
    output::{json, svg, text},
};

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// A JSON report written by `nofail trace/inject --json`.
    pub file: PathBuf,
    /// Draw retries-per-call and stall-time histograms of the top callers.
    #[arg(long, value_name = "OUT.svg")]
    pub svg: Option<PathBuf>,
    /// Callers drawn in the picture (with --svg).
    #[arg(long, default_value_t = 4, requires = "svg", value_parser = clap::value_parser!(u64).range(1..=32))]
    pub svg_callers: u64,
    #[command(flatten)]
    pub gates: GateArgs,
    #[command(flatten)]
    pub outputs: Outputs,
}

/// `nofail report`: everything is read and checked before anything is
/// written, so a bad input leaves no output behind.
pub fn run(args: ReportArgs) -> Result<()> {
    let new = json::read_report(&args.file)?;
    let old = args.gates.load()?;
    // Every output path is checked before any is written (as trace and
    // inject do), so one that cannot be written leaves no other behind.
    args.outputs.check()?;
    if let Some(path) = &args.svg {
        json::check_writable(path)?;
    }
    let picture = args
        .svg
        .as_ref()
        .map(|_| svg::render(&new, args.svg_callers as usize))
        .transpose()?;
    args.outputs
        .show(&text::render_report(&new, args.outputs.top.top as usize))?;
    let verdict = args.gates.judge(&new, old.as_ref());
    if let Some(comparison) = &verdict.comparison {
        args.outputs.show(comparison)?;
    }
    if let (Some(path), Some(picture)) = (&args.svg, picture) {
        json::atomic_write(path, picture.as_bytes())?;
    }
    args.outputs.write(&new)?;
    verdict.result()
}
