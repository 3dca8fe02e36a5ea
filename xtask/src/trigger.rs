// SPDX-License-Identifier: MIT OR Apache-2.0
//! Builds the trigger module (testing/trigger) against the test kernel tree,
//! in the cache next to that tree so the checkout stays clean; against a
//! developer's tree (`--kernel DIR`), in the nofail cache, never beside it.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    kernels::{Kernel, KernelName},
    util::{self, sha256_hex, workspace_root},
};

pub fn build(kernel: &Kernel) -> Result<PathBuf> {
    // One build at a time: the test kernel and a patched variant share a
    // tree, so two lanes (`in_lanes`) would run make in the same
    // directory at once (kbuild's fixdep then fails on the other's .d).
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = BUILDING.lock().unwrap_or_else(|e| e.into_inner());
    let tree = kernel
        .build_tree
        .as_ref()
        .context("the trigger module builds only against a kernel build tree")?;
    let src_dir = workspace_root().join("testing/trigger");
    let mut sources = Vec::new();
    for name in ["Makefile", "nofail_trigger.c"] {
        sources.extend(std::fs::read(src_dir.join(name))?);
    }
    let own = kernel.name == KernelName::Own;
    let name = format!("trigger-{}", &sha256_hex(&sources)[..12]);
    let dir = if own {
        crate::tree::work_dir(&kernel.label).join(name)
    } else {
        tree.parent().expect("tree has a parent").join(name)
    };
    let ko = dir.join("nofail_trigger.ko");
    // The test kernel's tree never changes under its cache key; a
    // developer's may have been rebuilt since: kbuild decides (the module
    // is relinked when vmlinux changed, for its BTF).
    if ko.exists() && !own {
        return Ok(ko);
    }
    std::fs::create_dir_all(&dir)?;
    for name in ["Makefile", "nofail_trigger.c"] {
        let (from, to) = (src_dir.join(name), dir.join(name));
        // Copied once: a fresh copy's time would rebuild it every run.
        if !to.exists() {
            std::fs::copy(from, to)?;
        }
    }
    let awk = if own {
        crate::kernels::awk_of_foreign_tree(tree)?
    } else {
        crate::kernels::pinned_awk(tree)?
    };
    util::run(
        Command::new("make")
            .arg("-s")
            .arg(format!("AWK={}", awk.display()))
            .args(crate::kernels::make_args(kernel.arch)?)
            .arg("-C")
            .arg(tree)
            .arg(format!("M={}", dir.display()))
            .arg("modules"),
    )
    .with_context(|| format!("cannot build the trigger module against {}", tree.display()))?;
    Ok(ko)
}
