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
        build_object(Path::new(&out))?;
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

/// Builds the eBPF object with aya-build into `out`. aya-build builds under
/// OUT_DIR, and every build of nofail-user has its own (clippy, tests,
/// release, the static and aarch64 ones): each compiled `core` and the
/// probes again, about 25 s, four times in a CI run. The object is built
/// instead in one directory per BPF target architecture under cargo's
/// target directory (`ebpf/<arch>`), where cargo finds it up to date, and
/// copied from there.
fn build_object(out: &Path) -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../nofail-ebpf");
    let root = root.canonicalize()?;
    let root_dir = root.to_str().expect("utf-8 path");
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH")?;
    let shared = target_dir(out).map(|t| t.join("ebpf").join(&arch));
    let build_dir = shared.as_deref().unwrap_or(out);
    std::fs::create_dir_all(build_dir)?;
    // SAFETY: a build script is one thread; aya-build reads OUT_DIR once,
    // and it is put back before anything else reads it.
    unsafe { std::env::set_var("OUT_DIR", build_dir) };
    let built = aya_build::build_ebpf(
        [aya_build::Package {
            name: "nofail-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    );
    unsafe { std::env::set_var("OUT_DIR", out) };
    built?;
    if build_dir != out {
        // Through a temporary name: another build may read it meanwhile.
        let tmp = out.join("nofail.tmp");
        std::fs::copy(build_dir.join("nofail"), &tmp)?;
        std::fs::rename(tmp, out.join("nofail"))?;
    }
    Ok(())
}

/// Cargo's target directory: OUT_DIR is
/// `<target dir>/[<triple>/]<profile>/build/<package>-<hash>/out`, the
/// triple there when cargo was given `--target`; checked by the
/// `CACHEDIR.TAG` cargo writes at its root. None if the layout is another.
fn target_dir(out: &Path) -> Option<std::path::PathBuf> {
    let mut dir = out.ancestors().nth(4)?;
    let triple = std::env::var("TARGET").ok()?;
    if dir.file_name().is_some_and(|n| n == triple.as_str()) {
        dir = dir.parent()?;
    }
    dir.join("CACHEDIR.TAG")
        .is_file()
        .then(|| dir.to_path_buf())
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
