// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail`: see and break the kernel's never-fail allocation retry loops.

use std::process::ExitCode;

use clap::Parser as _;
use nofail_user::{alloc, bpf, cmd, kernel};

/// A failed allocation is retried before it aborts (alloc.rs).
#[global_allocator]
static HEAP: alloc::Retrying = alloc::Retrying::system();

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match cmd::Cli::try_parse() {
        Ok(cli) => cli,
        // --help and --version print in full; usage errors in one line.
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            // clap's first paragraph, joined: "the following required
            // arguments were not provided: --stage <STAGES>".
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("nofail: {}", first.join(" ").trim_start_matches("error: "));
            return ExitCode::from(2);
        }
    };
    // Before anything reads or loads: a kernel without the NOFAIL loop
    // gets one line saying so, not a verifier log.
    if cli.command.touches_kernel()
        && let Err(why) = kernel::support::check_running()
    {
        eprintln!("nofail: error: {why}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        cmd::Command::Trace(args) => cmd::trace::run(args).await,
        cmd::Command::Doctor(args) => cmd::doctor::run(args).map(|()| 0),
        cmd::Command::Inject(args) => cmd::inject::run(args).await,
        cmd::Command::Report(args) => cmd::report::run(args).map(|()| 0),
        cmd::Command::Serve(args) => cmd::serve::run(args).await.map(|()| 0),
        cmd::Command::GenerateFiles(args) => cmd::generate::run(args).map(|()| 0),
    };
    match result {
        // The wrapped command's status, or 0.
        Ok(code) => ExitCode::from(code),
        Err(err) if err.downcast_ref::<cmd::gate::GateFailed>().is_some() => {
            // One line per violation, nothing else.
            if let Some(cmd::gate::GateFailed(violations)) = err.downcast_ref() {
                for v in violations {
                    eprintln!("nofail: gate: {v}");
                }
            }
            ExitCode::from(3)
        }
        Err(err) if err.downcast_ref::<cmd::wrap::CannotRun>().is_some() => {
            // 127 not found, 126 not runnable, as shells say it.
            let cannot = err.downcast_ref::<cmd::wrap::CannotRun>().expect("checked");
            eprintln!("nofail: error: {cannot}");
            ExitCode::from(cannot.code)
        }
        Err(err) => {
            // One line: the context chain joined, never a backtrace.
            eprintln!("nofail: error: {}", bpf::one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
