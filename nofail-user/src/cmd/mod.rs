// SPDX-License-Identifier: MIT OR Apache-2.0
//! The command line: one file per subcommand, each owning its flags; the
//! flags several share are declared once in `flags.rs` and flattened.
//! The only layer that sees them all: it turns flags into plain values
//! for `bpf`, `model` and `output`, and wires a session to its outputs.

pub mod carry_on;
pub mod doctor;
pub mod flags;
pub mod follow;
pub mod gate;
pub mod generate;
pub mod inject;
pub mod report;
pub mod serve;
pub mod signals;
pub mod trace;
pub mod wrap;

use clap::{Parser, Subcommand};

/// `nofail --version`: what this binary is made of.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\ngit revision: ",
    env!("NOFAIL_GIT_REV"),
    "\naya: ",
    env!("NOFAIL_AYA_VERSION"),
    "\neBPF object sha256: ",
    env!("NOFAIL_OBJECT_SHA256"),
);

#[derive(Debug, Parser)]
#[command(
    name = "nofail",
    version,
    long_version = LONG_VERSION,
    about = "See and break the kernel's never-fail allocation retry loops"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Trace vmalloc calls and their retry loops per call site until the
    /// duration ends or Ctrl-C.
    Trace(trace::TraceArgs),
    /// Fail sub-allocations inside targeted stages of targeted vmalloc calls
    /// and report how each caller copes.
    Inject(inject::InjectArgs),
    /// Show how nofail would attach on this kernel: roles, functions,
    /// modes, injection support, HZ and gfp bits.
    Doctor(doctor::DoctorArgs),
    /// Read a JSON report back: print it, compare it with a baseline, gate
    /// on thresholds, draw it as SVG, convert it to Prometheus text.
    Report(report::ReportArgs),
    /// Serve Prometheus metrics over HTTP: live counts, or a recorded
    /// report with --report.
    Serve(serve::ServeArgs),
    /// Write man pages and shell completions (for packaging).
    #[command(name = "generate-files", hide = true)]
    GenerateFiles(generate::GenerateArgs),
}

impl Command {
    /// It reads or loads into the running kernel (a recorded report, the
    /// packaging files do not).
    pub fn touches_kernel(&self) -> bool {
        match self {
            Self::Trace(_) | Self::Inject(_) | Self::Doctor(_) => true,
            Self::Serve(args) => args.report.is_none(),
            Self::Report(_) | Self::GenerateFiles(_) => false,
        }
    }
}
