// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask dist [--arch arm64]`: one static `nofail` for any x86-64
//! (or arm64) Linux (musl, release, stripped), checked to be built for
//! that machine and to need no dynamic loader or library, in
//! `target/dist/nofail-<version>-<x86_64|aarch64>-linux.tar.gz` with a
//! sha256 file. The VM matrix runs this binary, so "built here, run
//! there" is tested on every kernel of it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    arch::Arch,
    util::{self, workspace_root},
};

fn version(root: &Path) -> Result<String> {
    let toml = std::fs::read_to_string(root.join("Cargo.toml"))?;
    toml.lines()
        .skip_while(|l| l.trim() != "[workspace.package]")
        .find_map(|l| l.strip_prefix("version = "))
        .map(|v| v.trim().trim_matches('"').to_string())
        .context("no [workspace.package] version in Cargo.toml")
}

/// Where the static x86-64 binary of the current build lands (unpacked,
/// as in the tarball).
pub fn binary() -> Result<PathBuf> {
    binary_for(Arch::X86_64)
}

/// The stage directory of `arch`'s tarball: `target/dist/nofail-V` for
/// x86-64 (where the VM matrix and the package take it from), under
/// `target/dist/aarch64/` for arm64.
fn stage_dir(root: &Path, arch: Arch) -> Result<PathBuf> {
    let dist = root.join("target/dist");
    let dir = match arch {
        Arch::X86_64 => dist,
        Arch::Arm64 => dist.join(arch.uname()),
    };
    Ok(dir.join(format!("nofail-{}", version(root)?)))
}

pub fn binary_for(arch: Arch) -> Result<PathBuf> {
    Ok(stage_dir(&workspace_root(), arch)?.join("nofail"))
}

/// Builds, strips, checks and packs the x86-64 binary; returns its path.
pub fn build() -> Result<PathBuf> {
    build_for(Arch::X86_64)
}

/// Builds, strips, checks and packs; returns the binary's path.
pub fn build_for(arch: Arch) -> Result<PathBuf> {
    let root = workspace_root();
    let target = arch.rust_target();
    let mut cargo = Command::new("cargo");
    cargo
        .args([
            "build",
            "--release",
            "--target",
            target,
            "-p",
            "nofail-user",
        ])
        .current_dir(&root);
    if arch != Arch::X86_64 {
        // The host's binutils strip only x86 objects: rustc has the
        // linker (rust-lld, .cargo/config.toml) drop the symbols instead.
        cargo.env("CARGO_PROFILE_RELEASE_STRIP", "symbols");
    }
    util::run(&mut cargo)?;
    let built = root.join("target").join(target).join("release/nofail");
    let version = version(&root)?;
    let name = format!("nofail-{version}");
    let stage = stage_dir(&root, arch)?;
    let dist = stage.parent().context("stage directory")?.to_path_buf();
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let bin = stage.join("nofail");
    std::fs::copy(&built, &bin)?;
    if arch == Arch::X86_64 {
        util::run(Command::new("strip").arg(&bin))?;
    }
    let elf = std::fs::read(&bin)?;
    let (machine, symbols) = machine_and_symbols(&elf)?;
    ensure!(
        machine == arch.elf_machine(),
        "{} is for ELF machine {machine}, not {} ({})",
        bin.display(),
        arch.elf_machine(),
        arch.uname()
    );
    ensure!(
        !symbols,
        "{} is not stripped: it has a symbol table",
        bin.display()
    );
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
    let tarball = format!("{name}-{}-linux.tar.gz", arch.uname());
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
    // The packed binary runs here (arm64: under qemu-aarch64), and says
    // what it is.
    let v = arch.command(&bin).arg("--version").output()?;
    ensure!(v.status.success(), "{} --version failed", bin.display());
    println!(
        "xtask dist: {} ({} KiB, {}, static, stripped), sha256 {}\n{}",
        dist.join(&tarball).display(),
        std::fs::metadata(dist.join(&tarball))?.len() / 1024,
        arch.uname(),
        String::from_utf8_lossy(&sum.stdout)
            .split_whitespace()
            .next()
            .unwrap_or(""),
        String::from_utf8_lossy(&v.stdout).trim_end()
    );
    Ok(bin)
}

/// An ELF64 little-endian file's `e_machine`, and whether it has a
/// symbol table (SHT_SYMTAB: not stripped).
fn machine_and_symbols(elf: &[u8]) -> Result<(u16, bool)> {
    ensure!(
        elf.len() > 64 && elf[..4] == *b"\x7fELF" && elf[4] == 2 && elf[5] == 1,
        "not an ELF64 little-endian file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let (shoff, shentsize, shnum) = (u64_at(0x28) as usize, u16_at(0x3a) as usize, u16_at(0x3c));
    let symbols = (0..shnum as usize)
        .map(|i| shoff + i * shentsize)
        .filter(|&sh| sh + 8 <= elf.len())
        .any(|sh| u32_at(sh + 4) == 2);
    Ok((u16_at(0x12), symbols))
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

    /// This test binary: x86-64, with its symbols.
    #[test]
    fn machine_and_symbols_of_this_build() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(
            machine_and_symbols(&me).unwrap(),
            (Arch::X86_64.elf_machine(), true)
        );
    }
}
