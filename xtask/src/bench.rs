//! `cargo xtask bench`: tracing overhead, measured in one test-VM boot by
//! `vm-tests --bench` (untraced, nofail fentry, nofail kprobe, bpftrace).
//! Results: printed, and written to target/bench.json.

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
    let out = root.join("target/bench.json");
    let command: Vec<String> = vec![
        root.join("target/release/vm-tests").display().to_string(),
        "--nofail".into(),
        root.join("target/release/nofail").display().to_string(),
        "--trigger".into(),
        ko.display().to_string(),
        "--out".into(),
        root.join("target/vm-results/bench").display().to_string(),
        "--bench".into(),
        out.display().to_string(),
    ];
    let code = vm::run(&vm::Guest {
        kernel: &kernel,
        cwd: &root,
        command: &command,
        env: &[],
        timeout: 1200,
        memory: 2048,
    })?;
    if code != 0 {
        bail!("benchmark failed in the VM (exit {code})");
    }
    println!("xtask bench: results in {}", out.display());
    Ok(0)
}
