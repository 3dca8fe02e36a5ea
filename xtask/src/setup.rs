// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask setup`: make a fresh Debian 12 machine ready, idempotently.
//! Every step checks first, so a ready machine passes in well under a second.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    arch::Arch,
    util::{self, cache_dir, is_root},
};

/// Debian packages the project needs: QEMU, the kernel build, module tools,
/// the guest-side tools the tests and benchmark run through the shared root,
/// Prometheus (server and promtool) for the export tests, and what the
/// package check runs (dpkg-deb, man, systemd-analyze, setpriv).
const PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "build-essential",
    "flex",
    "bison",
    "bc",
    "libelf-dev",
    "libssl-dev",
    "dwarves",
    "cpio",
    "xz-utils",
    "zstd",
    "kmod",
    "bpftool",
    "bpftrace",
    "xfsprogs",
    "e2fsprogs",
    "prometheus",
    "dpkg-dev",
    "man-db",
    "systemd",
    "util-linux",
    // The systemd guest runs README.md's service commands as written,
    // `sudo` included (vm-tests service_installed_as_written).
    "sudo",
    "curl",
    // Real memory pressure for the pressure scenarios (vm-tests
    // pressure.rs): stress-ng --vm into reclaim and the OOM killer.
    "stress-ng",
    // The arm64 build: its binary run here under user-mode emulation
    // (`cargo xtask dist --arch arm64`, xtask/src/arch.rs), and the arm64
    // guests (`--arch arm64`: qemu-system-aarch64).
    "qemu-user",
    "qemu-system-arm",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure() -> Result<()> {
    debian_packages()?;
    nightly_rust_src()?;
    musl_target()?;
    bpf_linker()?;
    cargo_deny()?;
    cargo_fuzz()?;
    // fstests from ../shared/thirdparty, built once per tarball
    // (`cargo xtask fstests`, docs/fstests.md).
    crate::fstests::build::ensure()?;
    Ok(())
}

/// The tools installed with `cargo install` run for seconds per CI run:
/// their release profiles' fat LTO and single codegen unit (about three
/// of cargo-deny's five minutes of build on 2 cores) buy nothing here.
/// Config profile settings override the crate's own.
const QUICK_INSTALL: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_LTO", "off"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
];

/// cargo-deny checks the dependency policy (deny.toml) in `xtask ci`.
const CARGO_DENY_VERSION: &str = "0.20.2";

fn cargo_deny() -> Result<()> {
    let current = Command::new("cargo").args(["deny", "--version"]).output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_DENY_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-deny {CARGO_DENY_VERSION} (a few minutes, once)");
    util::run(
        Command::new("cargo")
            .args([
                "install",
                "cargo-deny",
                "--locked",
                "--version",
                &format!("={CARGO_DENY_VERSION}"),
            ])
            .envs(QUICK_INSTALL),
    )
    .context("cargo install cargo-deny failed")
}

/// cargo-fuzz builds and runs the fuzz targets (`cargo xtask fuzz`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn cargo_fuzz() -> Result<()> {
    let current = Command::new("cargo").args(["fuzz", "--version"]).output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(CARGO_FUZZ_VERSION)) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz {CARGO_FUZZ_VERSION} (under a minute, once)");
    util::run(
        Command::new("cargo")
            .args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                &format!("={CARGO_FUZZ_VERSION}"),
            ])
            .envs(QUICK_INSTALL),
    )
    .context("cargo install cargo-fuzz failed")
}

fn debian_packages() -> Result<()> {
    // fstests' build dependencies and the tools its tests run.
    let wanted: Vec<&str> = PACKAGES
        .iter()
        .chain(crate::fstests::build::PACKAGES)
        .copied()
        .collect();
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package} ${db:Status-Abbrev}\n"])
        .args(&wanted)
        .output()
        .context("dpkg-query not found: setup supports Debian machines only")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|p| !text.lines().any(|l| l.starts_with(&format!("{p} ii"))))
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "Debian packages {} are missing and installing them needs root",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    util::run(Command::new("apt-get").arg("update").arg("-qq"))
        .context("apt-get update failed: the Debian archive is not reachable")?;
    util::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get install {} failed", missing.join(" ")))
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = util::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("no nightly Rust toolchain: the eBPF crate needs one (rustup toolchain install nightly)")?;
    Ok(PathBuf::from(out.trim()))
}

fn nightly_rust_src() -> Result<()> {
    if nightly_sysroot()?
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
    {
        return Ok(());
    }
    util::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("cannot add rust-src to the nightly toolchain (needed for -Z build-std=core)")
}

fn musl_target() -> Result<()> {
    let installed = util::output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    // x86-64: the static binary and the guest init; arm64: `dist --arch arm64`.
    for target in [Arch::X86_64, Arch::Arm64].map(Arch::rust_target) {
        if !installed.lines().any(|l| l == target) {
            util::run(Command::new("rustup").args(["target", "add", target]))
                .with_context(|| format!("cannot add the {target} target"))?;
        }
    }
    Ok(())
}

/// bpf-linker must link against the LLVM whose major matches the nightly's:
/// use the libLLVM the nightly ships instead of a system LLVM.
fn bpf_linker() -> Result<()> {
    // It loads the nightly's libLLVM, which `rustup run` puts on the library path.
    let current = Command::new("rustup")
        .args(["run", "nightly", "bpf-linker", "--version"])
        .output();
    if current.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)) {
        return Ok(());
    }
    let verbose = util::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major = verbose
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("nightly rustc does not report its LLVM version")?
        .to_string();
    let lib_dir = nightly_sysroot()?.join("lib");
    let libllvm = std::fs::read_dir(&lib_dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("libLLVM.so.{major}"))
            })
        })
        .with_context(|| {
            format!(
                "the nightly toolchain ships no libLLVM.so.{major}* in {}",
                lib_dir.display()
            )
        })?;
    let prefix = cache_dir().join(format!("llvm-{major}"));
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&libllvm, &link)?;
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against {}",
        libllvm.display()
    );
    util::run(
        Command::new("cargo")
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--version",
                BPF_LINKER_VERSION,
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{major}"),
            ])
            .env("LLVM_PREFIX", &prefix)
            .envs(QUICK_INSTALL),
    )
    .with_context(|| format!("cannot build bpf-linker {BPF_LINKER_VERSION} with llvm-{major}"))
}
