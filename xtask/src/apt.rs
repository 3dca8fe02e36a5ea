// SPDX-License-Identifier: MIT OR Apache-2.0
//! Private apt state per Debian suite: its own sources list, lists and cache
//! under the nofail cache, so the machine's own apt configuration is never
//! touched. Used to find and download kernel packages.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, SystemTime},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    arch::Arch,
    util::{self, cache_dir},
};

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Package lists older than this are refreshed.
const MAX_LIST_AGE: Duration = Duration::from_secs(6 * 3600);

pub struct Apt {
    dir: PathBuf,
    arch: Arch,
}

impl Apt {
    pub fn bookworm() -> Result<Self> {
        Self::bookworm_for(Arch::X86_64)
    }

    pub fn sid() -> Result<Self> {
        Self::sid_for(Arch::X86_64)
    }

    /// Bookworm's packages for `arch`.
    pub fn bookworm_for(arch: Arch) -> Result<Self> {
        Self::new(
            "bookworm",
            arch,
            &[
                "http://deb.debian.org/debian bookworm main",
                "http://deb.debian.org/debian bookworm-updates main",
                "http://deb.debian.org/debian-security bookworm-security main",
            ],
        )
    }

    /// Bullseye's 5.10 is the only kernel older than 5.17 the archive
    /// still serves (bullseye-backports and its 5.15 are gone).
    pub fn bullseye_for(arch: Arch) -> Result<Self> {
        Self::new(
            "bullseye",
            arch,
            &[
                "http://deb.debian.org/debian bullseye main",
                "http://deb.debian.org/debian bullseye-updates main",
                "http://deb.debian.org/debian-security bullseye-security main",
            ],
        )
    }

    pub fn sid_for(arch: Arch) -> Result<Self> {
        Self::new("sid", arch, &["http://deb.debian.org/debian sid main"])
    }

    /// x86-64's state in `apt-NAME` (as before there was another), each
    /// other architecture's in `apt-NAME-ARCH`.
    fn new(name: &str, arch: Arch, suites: &[&str]) -> Result<Self> {
        let dir = cache_dir().join(match arch {
            Arch::X86_64 => format!("apt-{name}"),
            other => format!("apt-{name}-{}", other.debian()),
        });
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let sources: String = suites
            .iter()
            .map(|s| format!("deb [signed-by={KEYRING}] {s}\n"))
            .collect();
        let path = dir.join("sources.list");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(&sources) {
            std::fs::write(&path, sources)?;
            let _ = std::fs::remove_file(dir.join("updated"));
        }
        let apt = Self { dir, arch };
        apt.update_if_stale()?;
        Ok(apt)
    }

    fn options(&self) -> Vec<String> {
        let d = self.dir.display();
        vec![
            format!("-oDir::Etc::sourcelist={d}/sources.list"),
            "-oDir::Etc::sourceparts=-".into(),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
            "-oDir::State::status=/dev/null".into(),
            format!("-oAPT::Architecture={}", self.arch.debian()),
            format!("-oAPT::Architectures={}", self.arch.debian()),
            "-oAPT::Sandbox::User=root".into(),
            "-qq".into(),
        ]
    }

    fn update_if_stale(&self) -> Result<()> {
        let stamp = self.dir.join("updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() < MAX_LIST_AGE);
        if fresh {
            return Ok(());
        }
        util::run(Command::new("apt-get").args(self.options()).arg("update"))
            .context("cannot update the package lists from deb.debian.org")?;
        std::fs::write(stamp, "")?;
        Ok(())
    }

    /// All package names starting with `prefix`.
    pub fn pkgnames(&self, prefix: &str) -> Result<Vec<String>> {
        let out = util::output(
            Command::new("apt-cache")
                .args(self.options())
                .args(["pkgnames", prefix]),
        )?;
        Ok(out.lines().map(str::to_string).collect())
    }

    /// Candidate version of `pkg`.
    pub fn version(&self, pkg: &str) -> Result<String> {
        let out = util::output(
            Command::new("apt-cache")
                .args(self.options())
                .args(["policy", pkg]),
        )?;
        out.lines()
            .find_map(|l| l.trim().strip_prefix("Candidate: "))
            .filter(|v| *v != "(none)")
            .map(str::to_string)
            .with_context(|| format!("package {pkg} is not in the archive"))
    }

    /// Direct `Depends:` of the candidate of `pkg`.
    pub fn depends(&self, pkg: &str) -> Result<Vec<String>> {
        let out = util::output(
            Command::new("apt-cache")
                .args(self.options())
                .args(["depends", pkg]),
        )?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().trim_start_matches('|').strip_prefix("Depends: "))
            .map(|s| s.trim_matches(|c| c == '<' || c == '>').to_string())
            .collect())
    }

    /// Downloads `pkgs` and everything they depend on, as apt would
    /// install them on an empty system (no recommends), into `dest`;
    /// returns the .deb paths.
    pub fn download_closure(&self, pkgs: &[&str], dest: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dest.join("partial"))?;
        util::run(
            Command::new("apt-get")
                .args(self.options())
                // The status is /dev/null: there is no dpkg database to lock.
                .arg("-oDebug::NoLocking=1")
                .arg(format!("-oDir::Cache::Archives={}", dest.display()))
                .args([
                    "install",
                    "--download-only",
                    "-y",
                    "--no-install-recommends",
                ])
                .args(pkgs),
        )
        .with_context(|| format!("cannot download {} with their dependencies", pkgs.join(" ")))?;
        Ok(std::fs::read_dir(dest)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect())
    }

    /// Downloads the candidates of `pkgs` into `dest`; returns the .deb paths.
    pub fn download(&self, pkgs: &[String], dest: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dest)?;
        util::run(
            Command::new("apt-get")
                .args(self.options())
                .arg("download")
                .args(pkgs)
                .current_dir(dest),
        )
        .with_context(|| format!("cannot download {}", pkgs.join(" ")))?;
        let debs: Vec<PathBuf> = std::fs::read_dir(dest)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "deb"))
            .collect();
        if debs.len() < pkgs.len() {
            bail!(
                "apt-get download left {} of {} packages",
                debs.len(),
                pkgs.len()
            );
        }
        Ok(debs)
    }
}

/// Highest name by Debian-ish version order (numeric runs compared as numbers).
pub fn newest(names: impl IntoIterator<Item = String>) -> Option<String> {
    names
        .into_iter()
        .max_by(|a, b| version_key(a).cmp(&version_key(b)))
}

fn version_key(s: &str) -> Vec<(u64, String)> {
    let mut key = Vec::new();
    let mut rest = s;
    while !rest.is_empty() {
        let text_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (text, tail) = rest.split_at(text_end);
        let num_end = tail
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (num, tail) = tail.split_at(num_end);
        key.push((num.parse().unwrap_or(0), text.to_string()));
        rest = tail;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_compares_numbers() {
        let names = [
            "linux-image-6.12.9+deb12-amd64",
            "linux-image-6.12.117+deb12-amd64",
            "linux-image-6.12.115+deb12-amd64",
        ];
        assert_eq!(
            newest(names.map(String::from)).unwrap(),
            "linux-image-6.12.117+deb12-amd64"
        );
        assert_eq!(
            newest(["linux-source-7.2", "linux-source-7.10"].map(String::from)).unwrap(),
            "linux-source-7.10"
        );
    }
}
