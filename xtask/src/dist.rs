// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask dist`: one static `nofail` for any x86-64 Linux (musl,
//! release, stripped), checked to need no dynamic loader or library, in
//! `target/dist/nofail-<version>-x86_64-linux.tar.gz` with a sha256 file.
//! The VM matrix runs this binary, so "built here, run there" is tested
//! on every kernel of it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::util::{self, workspace_root};

const TARGET: &str = "x86_64-unknown-linux-musl";

fn version(root: &Path) -> Result<String> {
    let toml = std::fs::read_to_string(root.join("Cargo.toml"))?;
    toml.lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .context("no [workspace.package] version in Cargo.toml")
}

/// Where the static binary of the current build lands (unpacked, as in
/// the tarball).
pub fn binary() -> Result<PathBuf> {
    let root = workspace_root();
    Ok(root
        .join("target/dist")
        .join(format!("nofail-{}", version(&root)?))
        .join("nofail"))
}

/// Builds, strips, checks and packs; returns the binary's path.
pub fn build() -> Result<PathBuf> {
    let root = workspace_root();
    util::run(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--target",
                TARGET,
                "-p",
                "nofail-user",
            ])
            .current_dir(&root),
    )?;
    let built = root.join("target").join(TARGET).join("release/nofail");
    let version = version(&root)?;
    let name = format!("nofail-{version}");
    let dist = root.join("target/dist");
    let stage = dist.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let bin = stage.join("nofail");
    std::fs::copy(&built, &bin)?;
    util::run(Command::new("strip").arg(&bin))?;
    let elf = std::fs::read(&bin)?;
    if let Some(why) = dynamic(&elf)? {
        bail!("{} is not static: {why}", bin.display());
    }
    for f in [
        "README.md",
        "LICENSE-MIT",
        "LICENSE-APACHE",
        "LICENSE-GPL-2.0",
    ] {
        std::fs::copy(root.join(f), stage.join(f))?;
    }
    util::run(
        Command::new("cp")
            .args(["-r"])
            .arg(root.join("deploy"))
            .arg(&stage),
    )?;
    let tarball = format!("{name}-x86_64-linux.tar.gz");
    util::run(
        Command::new("tar")
            .args(["--sort=name", "--owner=0", "--group=0", "--numeric-owner"])
            .args(["--mtime=@0", "-czf", &tarball, &name])
            .current_dir(&dist),
    )?;
    let sum = Command::new("sha256sum")
        .arg(&tarball)
        .current_dir(&dist)
        .output()?;
    ensure!(sum.status.success(), "sha256sum failed");
    std::fs::write(dist.join(format!("{tarball}.sha256")), &sum.stdout)?;
    // The packed binary runs here, and says what it is.
    let v = Command::new(&bin).arg("--version").output()?;
    ensure!(v.status.success(), "{} --version failed", bin.display());
    println!(
        "xtask dist: {} ({} KiB, static, stripped), sha256 {}\n{}",
        dist.join(&tarball).display(),
        std::fs::metadata(dist.join(&tarball))?.len() / 1024,
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap_or(""),
        String::from_utf8_lossy(&v.stdout).trim_end()
    );
    Ok(bin)
}

/// Why an ELF64 little-endian executable is dynamic (a program
/// interpreter, or a needed shared library), or None when it is static.
fn dynamic(elf: &[u8]) -> Result<Option<String>> {
    ensure!(
        elf.len() > 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not an ELF64 little-endian file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        match u32_at(ph) {
            // PT_INTERP: a dynamic loader is named.
            3 => return Ok(Some("it names a program interpreter".into())),
            // PT_DYNAMIC: a static-pie has one, but needs nothing.
            2 => {
                let (off, size) = (u64_at(ph + 8) as usize, u64_at(ph + 32) as usize);
                for entry in (off..off + size).step_by(16) {
                    match u64_at(entry) {
                        0 => break,
                        1 => return Ok(Some("it needs a shared library (DT_NEEDED)".into())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check tells this very (dynamic, glibc) build from a static one.
    #[test]
    fn glibc_build_is_dynamic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(dynamic(&me).unwrap().is_some());
        assert!(dynamic(b"not an elf at all, but long enough to read a header from it").is_err());
    }
}
