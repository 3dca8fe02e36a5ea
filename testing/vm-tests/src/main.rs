// SPDX-License-Identifier: MIT OR Apache-2.0
//! VM integration tests. Each scenario makes an exact number of vmalloc
//! calls from a call site it knows (the trigger module, or a bpf(2) array map
//! creation on stock kernels), traces them with the real `nofail` binary and
//! compares nofail's per-caller counts with that ground truth.

mod bench;
mod bpf;
mod events;
mod export;
mod harness;
mod host;
mod inject;
mod real;
mod scenarios;
mod sentinel;
mod soak;
mod tracepoint;
mod trigger;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// The nofail binary under test.
    #[arg(long)]
    nofail: PathBuf,
    /// The trigger module (test kernel only); without it, trigger-based
    /// scenarios are not run.
    #[arg(long)]
    trigger: Option<PathBuf>,
    /// Directory for JSON reports.
    #[arg(long)]
    out: PathBuf,
    /// Run only scenarios whose name contains this.
    #[arg(long)]
    filter: Option<String>,
    /// Run the host scenarios (this machine's own kernel, tracepoint
    /// mode) instead of the VM ones.
    #[arg(long)]
    host: bool,
    /// Run the overhead benchmark instead of the scenarios, writing JSON here.
    #[arg(long)]
    bench: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let ctx = harness::Ctx::new(args.nofail, args.trigger, args.out);
    if let Some(out) = &args.bench {
        return match bench::run(&ctx, out) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                println!("bench failed: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let (mut passed, mut failed) = (0, 0);
    let list = if args.host {
        host::all()
    } else {
        scenarios::all(&ctx)
    };
    for (name, scenario) in list {
        if args
            .filter
            .as_ref()
            .is_some_and(|f| !name.contains(f.as_str()))
        {
            continue;
        }
        let mut kmsg = harness::Kmsg::from_now();
        let result = scenario(&ctx).and_then(|()| {
            // The kernel must stay clean: no WARN, BUG, oops or lockdep
            // report the scenario does not expect.
            let records = kmsg
                .as_mut()
                .map_err(|e| anyhow::anyhow!("{e:#}"))?
                .read_new()?;
            let trouble =
                harness::kernel_trouble(&records, scenarios::expected_kernel_warnings(name));
            anyhow::ensure!(
                trouble.is_empty(),
                "kernel log: {}",
                trouble.join(" | ").trim()
            );
            Ok(())
        });
        match result {
            Ok(()) => {
                println!("ok   {name}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {name}: {e:#}");
                failed += 1;
            }
        }
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "vm-tests on {}: {passed} passed, {failed} failed",
        release.trim()
    );
    if failed > 0 || passed == 0 {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
