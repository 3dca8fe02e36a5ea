// SPDX-License-Identifier: MIT OR Apache-2.0
//! Builds the trigger module (testing/trigger) against the test kernel tree,
//! in the cache next to that tree so the checkout stays clean.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    kernels::Kernel,
    util::{self, sha256_hex, workspace_root},
};

pub fn build(kernel: &Kernel) -> Result<PathBuf> {
    let tree = kernel
        .build_tree
        .as_ref()
        .context("the trigger module builds only against the test kernel")?;
    let src_dir = workspace_root().join("testing/trigger");
    let mut sources = Vec::new();
    for name in ["Makefile", "nofail_trigger.c"] {
        sources.extend(std::fs::read(src_dir.join(name))?);
    }
    let dir = tree
        .parent()
        .expect("tree has a parent")
        .join(format!("trigger-{}", &sha256_hex(&sources)[..12]));
    let ko = dir.join("nofail_trigger.ko");
    if ko.exists() {
        return Ok(ko);
    }
    std::fs::create_dir_all(&dir)?;
    for name in ["Makefile", "nofail_trigger.c"] {
        std::fs::copy(src_dir.join(name), dir.join(name))?;
    }
    util::run(
        Command::new("make")
            .arg("-s")
            .arg(format!(
                "AWK={}",
                crate::kernels::pinned_awk(tree)?.display()
            ))
            .arg("-C")
            .arg(tree)
            .arg(format!("M={}", dir.display()))
            .arg("modules"),
    )
    .context("cannot build the trigger module")?;
    Ok(ko)
}
