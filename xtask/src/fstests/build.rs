// SPDX-License-Identifier: MIT OR Apache-2.0
//! fstests (xfstests, GPL-2.0) built from the tarball beside the
//! workspace (`../shared/thirdparty/`) into the nofail cache, keyed by the
//! tarball's sha256: a built tree is found in well under a second, a
//! changed tarball is built afresh. The guest runs the tree in place, read
//! only, over the shared host root.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, cache_dir, sha256_hex, workspace_root};

/// The tarball, relative to the workspace root.
pub const TARBALL: &str = "../shared/thirdparty/xfstests-63a29724.tar.gz";

/// Debian packages fstests needs: its build dependencies (autotools, the
/// headers of the libraries its helpers link) and the tools its tests run
/// in the guest, which sees the host's root (fstests' README lists them;
/// lvm2, dump and the kernel headers are left out: no device-mapper in
/// the test kernel, no ext dump tests, no modules built).
pub const PACKAGES: &[&str] = &[
    "autoconf",
    "automake",
    "libtool",
    "libtool-bin",
    "make",
    "gcc",
    "gawk",
    "uuid-dev",
    "xfslibs-dev",
    "libacl1-dev",
    "libaio-dev",
    "libcap-dev",
    "libgdbm-dev",
    "libgdbm-compat-dev",
    "liburing-dev",
    "acl",
    "attr",
    "bc",
    "dbench",
    "fio",
    "psmisc",
    "quota",
    "sed",
    "uuid-runtime",
    "xfsdump",
    "xfsprogs",
    "python3",
];

/// The tarball's path, or one line saying where it was looked for.
pub fn tarball() -> Result<PathBuf> {
    let path = workspace_root().join(TARBALL);
    if !path.is_file() {
        bail!(
            "the fstests source {} is missing (looked for {}): fstests cannot be built",
            TARBALL.trim_start_matches("../"),
            path.display()
        );
    }
    Ok(path.canonicalize().unwrap_or(path))
}

/// The built tree for the tarball as it is now (its `check` script at the
/// top), building it first where it is not in the cache.
pub fn ensure() -> Result<PathBuf> {
    let tarball = tarball()?;
    let data = std::fs::read(&tarball).with_context(|| format!("read {}", tarball.display()))?;
    let sha = sha256_hex(&data);
    let base = cache_dir().join("fstests");
    let dir = base.join(&sha[..16]);
    let tree = dir.join("xfstests");
    let stamp = dir.join("built");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == sha)
        && tree.join("check").is_file()
    {
        return Ok(tree);
    }
    let t0 = Instant::now();
    eprintln!(
        "xtask: building fstests from {} (sha256 {}) into {}",
        tarball.display(),
        &sha[..16],
        dir.display()
    );
    // Built beside the final place and renamed into it: a build cut short
    // leaves no half tree where a finished one is looked for.
    std::fs::create_dir_all(&base)?;
    let stage = base.join(format!(".build-{}-{}", &sha[..16], std::process::id()));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    if let Err(e) = build_in(&tarball, &stage) {
        // The log outlives the stage.
        let _ = std::fs::rename(stage.join("build.log"), base.join("failed-build.log"));
        let _ = std::fs::remove_dir_all(&stage);
        return Err(e);
    }
    std::fs::write(stage.join("built"), format!("{sha}\n"))?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&stage, &dir).with_context(|| format!("rename into {}", dir.display()))?;
    eprintln!(
        "xtask: fstests built in {:.0} s: {}",
        t0.elapsed().as_secs_f64(),
        tree.display()
    );
    Ok(tree)
}

fn build_in(tarball: &Path, stage: &Path) -> Result<()> {
    util::run(
        Command::new("tar")
            .arg("xzf")
            .arg(tarball)
            .current_dir(stage),
    )
    .context("cannot unpack the fstests tarball")?;
    let tree = stage.join("xfstests");
    if !tree.join("check").is_file() {
        bail!("the fstests tarball did not unpack into xfstests/ with a check script");
    }
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Quiet unless it fails: make's output is kept and its tail shown.
    let log = stage.join("build.log");
    let out = std::fs::File::create(&log)?;
    let status = Command::new("make")
        .arg(format!("-j{jobs}"))
        .current_dir(&tree)
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .context("cannot start make")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        for line in tail.iter().rev() {
            eprintln!("  | {line}");
        }
        bail!(
            "building fstests failed ({status}); the log: {}",
            stage
                .parent()
                .unwrap_or(stage)
                .join("failed-build.log")
                .display()
        );
    }
    Ok(())
}
