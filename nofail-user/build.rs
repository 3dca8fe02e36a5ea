// SPDX-License-Identifier: MIT OR Apache-2.0
use std::{path::Path, process::Command};

use sha2::{Digest as _, Sha256};

/// Builds `nofail-ebpf` for bpfel-unknown-none (nightly, bpf-linker) and drops
/// the object in OUT_DIR, from where `main.rs` embeds it into the binary;
/// then records what `nofail --version` says of this build: the git
/// revision, the aya version and the object's sha256.
fn main() -> anyhow::Result<()> {
    let out = std::env::var("OUT_DIR")?;
    // Fuzz builds (cargo fuzz sets --cfg fuzzing, which cargo passes to
    // build scripts as CARGO_CFG_FUZZING) never load BPF: their object is
    // left empty instead of built again in fuzz/'s own target directory.
    if std::env::var_os("CARGO_CFG_FUZZING").is_some() {
        std::fs::write(Path::new(&out).join("nofail"), b"")?;
    } else {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nofail-ebpf");
        let root = root.canonicalize()?;
        let root_dir = root.to_str().expect("utf-8 path");
        aya_build::build_ebpf(
            [aya_build::Package {
                name: "nofail-ebpf",
                root_dir,
                ..Default::default()
            }],
            aya_build::Toolchain::default(),
        )?;
    }
    let object = std::fs::read(Path::new(&out).join("nofail"))?;
    let sha = Sha256::digest(&object);
    let hex: String = sha.iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=NOFAIL_OBJECT_SHA256={hex}");
    println!("cargo:rustc-env=NOFAIL_GIT_REV={}", git_revision());
    println!("cargo:rustc-env=NOFAIL_AYA_VERSION={}", aya_version());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );
    // Asked of git: in a worktree `.git` is a file, and naming files that
    // do not exist re-ran this script (and rebuilt nofail) every build.
    for f in ["HEAD", "index"] {
        if let Some(path) = git_path(f) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Ok(())
}

/// Where git keeps `name` for this checkout (`git rev-parse --git-path`).
fn git_path(name: &str) -> Option<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .args(["rev-parse", "--git-path", name])
        .current_dir(dir)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let path = dir.join(String::from_utf8_lossy(&out.stdout).trim());
    path.exists().then_some(path)
}

/// `git describe`-like: the short revision, `-dirty` with uncommitted
/// changes; "unknown" outside a checkout (a source tarball).
fn git_revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(rev) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("{rev}{}", if dirty { "-dirty" } else { "" })
        }
        None => "unknown".into(),
    }
}

/// The aya version Cargo.lock resolved.
fn aya_version() -> String {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if l == "name = \"aya\""
            && let Some(v) = lines.next().and_then(|v| v.strip_prefix("version = "))
        {
            return v.trim_matches('"').to_string();
        }
    }
    "unknown".into()
}
