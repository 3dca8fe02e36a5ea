// SPDX-License-Identifier: MIT OR Apache-2.0
//! VM integration tests. Each scenario makes an exact number of vmalloc
//! calls from a call site it knows (the trigger module, or a bpf(2) array map
//! creation on stock kernels), traces them with the real `nofail` binary and
//! compares nofail's per-caller counts with that ground truth.

mod alerts;
mod bench;
mod events;
mod export;
mod harness;
mod host;
mod inject;
mod patched;
mod predates;
mod pressure;
mod real;
mod runner;
mod scenarios;
mod sentinel;
mod service;
mod soak;
mod tracepoint;
mod trigger;
mod whatif;
mod wrap;

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use nofail_test_support::outcome::Listing;

#[derive(Parser)]
struct Args {
    /// The nofail binary under test.
    #[arg(long, required_unless_present_any = ["list", "make_maps"])]
    nofail: Option<PathBuf>,
    /// The trigger module (test kernel only); without it, trigger-based
    /// scenarios are not run (nor listed).
    #[arg(long)]
    trigger: Option<PathBuf>,
    /// Directory for JSON reports.
    #[arg(long, required_unless_present_any = ["list", "make_maps"])]
    out: Option<PathBuf>,
    /// Run only scenarios whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Run only the scenario of this exact name (repeatable), in table order.
    #[arg(long)]
    exact: Vec<String>,
    /// Print the scenario table (name, own-boot, records=FILES) and exit.
    #[arg(long)]
    list: bool,
    /// Append each result line and the closing line to this file.
    #[arg(long)]
    results: Option<PathBuf>,
    /// Run the host scenarios (this machine's own kernel, tracepoint
    /// mode) instead of the VM ones.
    #[arg(long)]
    host: bool,
    /// Run the overhead benchmark instead of the scenarios, writing JSON here.
    #[arg(long)]
    bench: Option<PathBuf>,
    /// With --bench: only these configurations (comma-separated; untraced
    /// is always run, as every other one is measured against it).
    #[arg(long, value_delimiter = ',', requires = "bench")]
    bench_configs: Vec<String>,
    /// The kernel was built with this patch (its file stem): only the
    /// scenarios made for it run (without it, only the others).
    #[arg(long)]
    kernel_patch: Option<String>,
    /// With --kernel-patch: the unpatched kernels' scenarios too (but for
    /// those only the stock loop passes), to show the patch breaks none.
    #[arg(long, requires = "kernel_patch")]
    also_unpatched: bool,
    /// The kernel predates vmalloc's NOFAIL loop (before 5.17): only the
    /// refusal scenario runs.
    #[arg(long, conflicts_with_all = ["trigger", "kernel_patch", "host"])]
    predates_nofail: bool,
    /// Make this many 1 MiB BPF array maps and exit: the command the wrap
    /// scenarios run under nofail.
    #[arg(long, hide = true, value_name = "N")]
    make_maps: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(n) = args.make_maps {
        return match wrap::make_maps(n) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vm-tests --make-maps: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let mut cases = if args.host {
        host::all()
    } else if args.predates_nofail {
        scenarios::predating_nofail()
    } else {
        scenarios::all(args.trigger.is_some())
    };
    cases.retain(|c| {
        c.patch == args.kernel_patch.as_deref()
            || (args.also_unpatched && c.patch.is_none() && !c.stock_only)
    });
    if args.list {
        for c in &cases {
            let listing = Listing {
                name: c.name.into(),
                own_boot: c.own_boot || c.systemd,
                systemd: c.systemd,
                records: c.records.iter().map(|r| r.to_string()).collect(),
                needs: c.needs.iter().map(|n| n.to_string()).collect(),
            };
            println!("{listing}");
        }
        return ExitCode::SUCCESS;
    }
    let (Some(nofail), Some(out)) = (args.nofail, args.out) else {
        unreachable!("clap requires --nofail and --out without --list");
    };
    let ctx = harness::Ctx::new(nofail, args.trigger, out);
    if let Some(out) = &args.bench {
        return match bench::run(&ctx, out, &args.bench_configs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                println!("bench failed: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(unknown) = args
        .exact
        .iter()
        .find(|n| !cases.iter().any(|c| c.name == n.as_str()))
    {
        println!("vm-tests: no scenario {unknown} on this kernel");
        return ExitCode::FAILURE;
    }
    let selected: Vec<&scenarios::Case> = cases
        .iter()
        .filter(|c| {
            args.filter
                .as_ref()
                .is_none_or(|f| c.name.contains(f.as_str()))
        })
        .filter(|c| args.exact.is_empty() || args.exact.iter().any(|n| n == c.name))
        .collect();
    match runner::run(&ctx, &selected, args.results.as_deref()) {
        // Nothing run is a failure too: a filter that matches nothing.
        Ok(s) if s.failed == 0 && s.passed + s.skipped > 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            println!("vm-tests: {e:#}");
            ExitCode::FAILURE
        }
    }
}
