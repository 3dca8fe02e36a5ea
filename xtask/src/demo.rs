// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask demo`: boot a VM and show `nofail trace` on real traffic.

use anyhow::Result;

use crate::{
    kernels::{self, KernelName},
    setup, trigger,
    util::{self, workspace_root},
    vm,
};

pub fn run(name: KernelName) -> Result<i32> {
    setup::ensure()?;
    let root = workspace_root();
    util::run(
        std::process::Command::new("cargo")
            .args(["build", "--release", "-p", "nofail-user"])
            .current_dir(&root),
    )?;
    let kernel = kernels::ensure(name)?;
    let mut command = vec![
        "sh".to_string(),
        "testing/demo.sh".into(),
        root.join("target/release/nofail").display().to_string(),
    ];
    if name == KernelName::Test {
        command.push(trigger::build(&kernel)?.display().to_string());
    }
    vm::run(&vm::Guest {
        kernel: &kernel,
        cwd: &root,
        command: &command,
        env: &[],
        timeout: 600,
        memory: 2048,
        icount: false,
        cpus: 2,
        systemd: false,
    })
}
