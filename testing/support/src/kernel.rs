// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the running kernel is: its symbols (/proc/kallsyms), its build
//! configuration and whether it has kprobes.

use std::{collections::HashMap, io::Read as _, path::Path};

use anyhow::{Context as _, Result};

/// Text symbols of a kallsyms text, sorted by address: (address, name),
/// as nofail reads them (t, T, w, W).
pub fn kernel_functions(kallsyms: &str) -> Vec<(u64, &str)> {
    let mut funcs: Vec<(u64, &str)> = kallsyms
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let addr = u64::from_str_radix(f.next()?, 16).ok()?;
            let kind = f.next()?;
            matches!(kind, "t" | "T" | "w" | "W").then_some(())?;
            Some((addr, f.next()?))
        })
        .collect();
    funcs.sort();
    funcs
}

/// How many symbols of any kind carry each name (static functions of
/// different files share names).
pub fn name_counts(kallsyms: &str) -> HashMap<&str, u32> {
    let mut count = HashMap::new();
    for name in kallsyms.lines().filter_map(|l| l.split_whitespace().nth(2)) {
        *count.entry(name).or_default() += 1;
    }
    count
}

/// `[start, end)` of the function `name`: from its address to the next
/// higher function address.
pub fn function_range(kallsyms: &str, name: &str) -> Result<(u64, u64)> {
    let funcs = kernel_functions(kallsyms);
    let i = funcs
        .iter()
        .position(|(_, n)| *n == name)
        .with_context(|| format!("{name} not in kallsyms"))?;
    let start = funcs[i].0;
    let end = funcs[i..]
        .iter()
        .map(|(a, _)| *a)
        .find(|a| *a > start)
        .with_context(|| format!("no function after {name}"))?;
    Ok((start, end))
}

/// Whether the kernel offers kprobes (the kprobe PMU nofail attaches with).
pub fn has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

/// A kernel build configuration (`CONFIG_*=...` lines).
pub struct KernelConfig(String);

impl KernelConfig {
    pub fn parse(text: &str) -> Self {
        Self(text.to_string())
    }

    /// The running kernel's: `/proc/config.gz`, else the file named by
    /// `NOFAIL_KERNEL_CONFIG` (xtask passes it to guests of stock
    /// kernels), else `/boot/config-<release>`.
    pub fn running() -> Result<Self> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut tried = Vec::new();
        let candidates = ["/proc/config.gz".to_string()]
            .into_iter()
            .chain(std::env::var("NOFAIL_KERNEL_CONFIG").ok())
            .chain([format!("/boot/config-{}", release.trim())]);
        for path in candidates {
            match std::fs::read(&path) {
                Ok(raw) => return Self::from_bytes(&raw).with_context(|| path.clone()),
                Err(_) => tried.push(path),
            }
        }
        anyhow::bail!("no kernel config (tried {})", tried.join(", "))
    }

    /// Plain or gzip-compressed text.
    pub fn from_bytes(raw: &[u8]) -> Result<Self> {
        let mut text = String::new();
        if raw.starts_with(&[0x1f, 0x8b]) {
            flate2::read::GzDecoder::new(raw).read_to_string(&mut text)?;
        } else {
            text = String::from_utf8_lossy(raw).into_owned();
        }
        Ok(Self(text))
    }

    /// The value of `name` (`CONFIG_HZ` -> "250", `CONFIG_KPROBES` -> "y"),
    /// quotes kept; `None` when unset.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
    }

    /// Built in or a module.
    pub fn enabled(&self, name: &str) -> bool {
        matches!(self.get(name), Some("y" | "m"))
    }

    /// `CONFIG_HZ`.
    pub fn hz(&self) -> Result<u64> {
        self.get("CONFIG_HZ")
            .context("no CONFIG_HZ")?
            .parse()
            .context("bad CONFIG_HZ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 t helper
ffffffff81000100 t helper_alias
ffffffff81000200 D some_data
ffffffff81000300 W weak_fn
ffffffff81000400 t helper\t[mod]
";

    #[test]
    fn functions_ranges_and_name_counts() {
        let f = kernel_functions(KALLSYMS);
        assert_eq!(f.len(), 5);
        assert!(f.windows(2).all(|w| w[0] <= w[1]));
        assert!(!f.iter().any(|(_, n)| *n == "some_data"));
        assert_eq!(
            function_range(KALLSYMS, "_stext").unwrap(),
            (0xffffffff81000000, 0xffffffff81000100)
        );
        // Aliases at one address: the range ends at the next address.
        assert_eq!(
            function_range(KALLSYMS, "helper").unwrap().1,
            0xffffffff81000300
        );
        assert!(function_range(KALLSYMS, "nothing").is_err());
        assert_eq!(name_counts(KALLSYMS)["helper"], 2);
    }

    #[test]
    fn config_values_plain_and_gzip() {
        let text = "CONFIG_HZ=250\nCONFIG_KPROBES=y\nCONFIG_XFS_FS=m\n# CONFIG_FOO is not set\nCONFIG_HZ_250=y\n";
        let c = KernelConfig::parse(text);
        assert_eq!(c.hz().unwrap(), 250);
        assert!(c.enabled("CONFIG_KPROBES") && c.enabled("CONFIG_XFS_FS"));
        assert!(!c.enabled("CONFIG_FOO") && c.get("CONFIG_FOO").is_none());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let c = KernelConfig::from_bytes(&gz.finish().unwrap()).unwrap();
        assert_eq!(c.get("CONFIG_HZ"), Some("250"));
    }
}
