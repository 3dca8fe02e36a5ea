// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail`: see and break the kernel's never-fail allocation retry loops.

mod attach;
mod btf;
mod chains;
mod cli;
mod doctor;
mod events;
mod export;
mod filter;
mod fmodret;
mod hist;
mod inject;
mod injector;
mod kconfig;
mod kernel;
mod progstats;
mod render;
mod report;
mod session;
mod symbols;
mod sysbpf;
mod tpmode;
mod trace;
mod tracer;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
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
    let result = match cli.command {
        cli::Command::Trace(args) => trace::run(args).await,
        cli::Command::Doctor(args) => doctor::run(args),
        cli::Command::Inject(args) => inject::run(args).await,
        cli::Command::Report(args) => export::run_report(args),
        cli::Command::Serve(args) => export::serve::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.downcast_ref::<export::GateFailed>().is_some() => {
            eprintln!("nofail: {err}");
            ExitCode::from(3)
        }
        Err(err) => {
            // One line: the context chain joined, never a backtrace.
            eprintln!("nofail: error: {}", tracer::one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
