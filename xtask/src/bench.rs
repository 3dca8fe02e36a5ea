// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask bench`: what tracing costs per vmalloc call, measured by
//! `vm-tests --bench` (untraced, nofail kprobe, fentry and sentinel,
//! bpftrace; interleaved rounds) in two test-VM boots: under `-icount`
//! (guest instructions, the counted metric) and plain TCG (wall time).
//! Results: printed, and written to target/bench-{icount,wall}.json.

use anyhow::{Result, bail};

use crate::{
    kernels::{self, KernelName},
    setup, trigger,
    util::{self, workspace_root},
    vm,
};

pub fn run() -> Result<i32> {
    setup::ensure()?;
    let root = workspace_root();
    util::run(
        std::process::Command::new("cargo")
            .args(["build", "--release", "-p", "nofail-user", "-p", "vm-tests"])
            .current_dir(&root),
    )?;
    let kernel = kernels::ensure(KernelName::Test)?;
    let ko = trigger::build(&kernel)?;
    // Two boots: the counted metric (-icount: one guest nanosecond per
    // guest instruction), then plain TCG wall time for comparison.
    for (clock, icount) in [("icount", true), ("wall", false)] {
        let out = root.join(format!("target/bench-{clock}.json"));
        let command: Vec<String> = vec![
            root.join("target/release/vm-tests").display().to_string(),
            "--nofail".into(),
            root.join("target/release/nofail").display().to_string(),
            "--trigger".into(),
            ko.display().to_string(),
            "--out".into(),
            root.join(format!("target/vm-results/bench-{clock}"))
                .display()
                .to_string(),
            "--bench".into(),
            out.display().to_string(),
        ];
        println!("xtask bench: {clock} boot");
        let code = vm::run(&vm::Guest {
            kernel: &kernel,
            cwd: &root,
            command: &command,
            env: &[format!("NOFAIL_BENCH_CLOCK={clock}")],
            timeout: 3600,
            memory: 2048,
            icount,
        })?;
        if code != 0 {
            bail!("benchmark failed in the VM ({clock} boot, exit {code})");
        }
        println!("xtask bench: results in {}", out.display());
    }
    Ok(0)
}
