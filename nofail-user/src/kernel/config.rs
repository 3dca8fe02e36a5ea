// SPDX-License-Identifier: MIT OR Apache-2.0
//! The running kernel's build configuration, where it can be found:
//! `$NOFAIL_KERNEL_CONFIG`, /proc/config.gz (CONFIG_IKCONFIG_PROC) or
//! /boot/config-<release>.

use std::{collections::HashMap, io::Read as _};

#[derive(Debug, Default)]
pub struct KernelConfig {
    /// Where it was read from; None when no configuration was found.
    pub source: Option<String>,
    values: HashMap<String, String>,
}

impl KernelConfig {
    pub fn load(release: &str) -> Self {
        let candidates: Vec<std::path::PathBuf> = match std::env::var_os("NOFAIL_KERNEL_CONFIG") {
            Some(p) => vec![p.into()],
            None => vec![
                "/proc/config.gz".into(),
                format!("/boot/config-{release}").into(),
            ],
        };
        for path in candidates {
            let Ok(raw) = std::fs::read(&path) else {
                continue;
            };
            let text = if raw.starts_with(&[0x1f, 0x8b]) {
                let mut s = String::new();
                if flate2::read::GzDecoder::new(&raw[..])
                    .read_to_string(&mut s)
                    .is_err()
                {
                    continue;
                }
                s
            } else {
                String::from_utf8_lossy(&raw).into_owned()
            };
            let mut cfg = Self::parse(&text);
            cfg.source = Some(path.display().to_string());
            return cfg;
        }
        Self::default()
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
}
