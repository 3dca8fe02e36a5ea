//! `nofail`: see and break the kernel's never-fail allocation retry loops.

mod attach;
mod btf;
mod cli;
mod doctor;
mod filter;
mod hist;
mod kconfig;
mod kernel;
mod progstats;
mod report;
mod symbols;
mod trace;
mod tracer;

use std::process::ExitCode;

use clap::Parser as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Trace(args) => trace::run(args).await,
        cli::Command::Doctor(args) => doctor::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the context chain joined, never a backtrace.
            eprintln!("nofail: error: {}", tracer::one_line(&format!("{err:#}")));
            ExitCode::FAILURE
        }
    }
}
