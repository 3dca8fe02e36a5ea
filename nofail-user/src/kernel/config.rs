// SPDX-License-Identifier: MIT OR Apache-2.0
//! The running kernel's build configuration, where it can be found, in the
//! order the test support crate reads it (testing/support/src/kernel.rs):
//! /proc/config.gz (CONFIG_IKCONFIG_PROC), the file `$NOFAIL_KERNEL_CONFIG`
//! names, /boot/config-<release>.

use std::{
    collections::HashMap,
    io::Read as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, bail};

/// The variable naming a kernel config file (xtask passes it to the
/// guests of stock kernels, which lack /proc/config.gz).
pub const CONFIG_VAR: &str = "NOFAIL_KERNEL_CONFIG";

#[derive(Debug, Default)]
pub struct KernelConfig {
    /// Where it was read from; None when no configuration was found.
    pub source: Option<String>,
    values: HashMap<String, String>,
}

/// Where to look, first found wins.
fn candidates(release: &str, named: Option<&Path>) -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("/proc/config.gz")];
    paths.extend(named.map(Path::to_path_buf));
    paths.push(format!("/boot/config-{release}").into());
    paths
}

/// Plain or gzip-compressed text.
fn text_of(raw: &[u8]) -> std::io::Result<String> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut s = String::new();
        flate2::read::GzDecoder::new(raw).read_to_string(&mut s)?;
        Ok(s)
    } else {
        Ok(String::from_utf8_lossy(raw).into_owned())
    }
}

impl KernelConfig {
    /// The running kernel's configuration, or none (`source` None) when no
    /// candidate exists. A file `$NOFAIL_KERNEL_CONFIG` names must be
    /// there and readable: a typo is an error, not "no config".
    pub fn load(release: &str) -> Result<Self> {
        let named = std::env::var_os(CONFIG_VAR).map(PathBuf::from);
        Self::load_from(&candidates(release, named.as_deref()), named.as_deref())
    }

    fn load_from(candidates: &[PathBuf], named: Option<&Path>) -> Result<Self> {
        if let Some(path) = named {
            let raw = std::fs::read(path)
                .with_context(|| format!("{CONFIG_VAR} names {}", path.display()))?;
            if let Err(e) = text_of(&raw) {
                bail!(
                    "{CONFIG_VAR} names {}: not a kernel config: {e}",
                    path.display()
                );
            }
        }
        for path in candidates {
            let Ok(raw) = std::fs::read(path) else {
                continue;
            };
            let Ok(text) = text_of(&raw) else {
                continue;
            };
            let mut cfg = Self::parse(&text);
            cfg.source = Some(path.display().to_string());
            return Ok(cfg);
        }
        Ok(Self::default())
    }

    pub fn parse(text: &str) -> Self {
        let values = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .filter(|(k, _)| k.starts_with("CONFIG_"))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        Self {
            source: Some("text".into()),
            values,
        }
    }

    /// Some(true) for =y/=m, Some(false) when absent from a known config,
    /// None when no config is known.
    pub fn enabled(&self, option: &str) -> Option<bool> {
        self.source.as_ref()?;
        Some(matches!(
            self.values.get(option).map(String::as_str),
            Some("y" | "m")
        ))
    }

    pub fn value(&self, option: &str) -> Option<&str> {
        self.values.get(option).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let c = KernelConfig::parse(
            "CONFIG_HZ=250\nCONFIG_FAILSLAB=y\n# CONFIG_FAIL_PAGE_ALLOC is not set\nCONFIG_XFS_FS=m\n",
        );
        assert_eq!(c.value("CONFIG_HZ"), Some("250"));
        assert_eq!(c.enabled("CONFIG_FAILSLAB"), Some(true));
        assert_eq!(c.enabled("CONFIG_XFS_FS"), Some(true));
        assert_eq!(c.enabled("CONFIG_FAIL_PAGE_ALLOC"), Some(false));
        assert_eq!(KernelConfig::default().enabled("CONFIG_FAILSLAB"), None);
    }

    /// The order of testing/support/src/kernel.rs: /proc/config.gz, the
    /// named file, /boot/config-<release>.
    #[test]
    fn candidates_in_the_support_crate_order() {
        let named = Path::new("/tmp/config-7.2");
        assert_eq!(
            candidates("7.2.13", Some(named)),
            [
                PathBuf::from("/proc/config.gz"),
                named.into(),
                "/boot/config-7.2.13".into()
            ]
        );
        assert_eq!(candidates("6.1", None).len(), 2);
    }

    /// A file the variable names that is not there (or not a config) is
    /// an error; candidates that are not there are skipped; the first one
    /// found is read, gzip or not.
    #[test]
    fn named_file_must_exist() {
        let dir = std::env::temp_dir().join(format!("nofail-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing");
        let err =
            KernelConfig::load_from(std::slice::from_ref(&missing), Some(&missing)).unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.starts_with("NOFAIL_KERNEL_CONFIG names ") && err.contains("missing"),
            "{err}"
        );
        let bad = dir.join("bad.gz");
        std::fs::write(&bad, [0x1f, 0x8b, 0, 1, 2]).unwrap();
        assert!(KernelConfig::load_from(&[], Some(&bad)).is_err());
        let plain = dir.join("config");
        std::fs::write(&plain, "CONFIG_HZ=250\n").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"CONFIG_HZ=1000\n").unwrap();
        let zipped = dir.join("config.gz");
        std::fs::write(&zipped, gz.finish().unwrap()).unwrap();
        let c = KernelConfig::load_from(
            &[missing.clone(), zipped.clone(), plain.clone()],
            Some(&plain),
        )
        .unwrap();
        assert_eq!(c.value("CONFIG_HZ"), Some("1000"));
        assert_eq!(c.source.as_deref(), zipped.to_str());
        let none = KernelConfig::load_from(&[missing], None).unwrap();
        assert_eq!(none.source, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
