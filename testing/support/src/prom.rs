// SPDX-License-Identifier: MIT OR Apache-2.0
//! Prometheus text: Debian's promtool as the judge of the exposition
//! format, and samples looked up by metric, caller and labels.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};

/// `promtool check metrics` must accept `text` without a lint complaint.
pub fn promtool_check(text: &[u8]) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("promtool not found (cargo xtask setup installs Debian's prometheus)")?;
    // promtool reads all of stdin before it answers: write, then close.
    child.stdin.take().context("stdin")?.write_all(text)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// `promtool_check` on a file, naming it in the error.
pub fn promtool_check_file(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    promtool_check(&text).with_context(|| path.display().to_string())
}

/// The value of the one sample `name{caller="<symbol>+...",...}` whose
/// line also contains `extra` (e.g. `stage="area"`; "" for any).
pub fn sample(text: &str, name: &str, symbol: &str, extra: &str) -> Result<f64> {
    let prefix = format!("{name}{{caller=\"{symbol}+");
    let hits: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&prefix) && l.contains(extra))
        .collect();
    ensure!(hits.len() == 1, "{} lines {prefix}..{extra}", hits.len());
    let value = hits[0].rsplit(' ').next().unwrap_or_default();
    value
        .parse()
        .with_context(|| format!("bad value {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_finds_exactly_one_line() {
        let text = "# HELP x\n\
            nofail_vmalloc_retries_total{caller=\"site+0x13\",stage=\"area\"} 4\n\
            nofail_vmalloc_retries_total{caller=\"site+0x13\",stage=\"mapping\"} 0\n\
            nofail_vmalloc_retries_total{caller=\"site_other+0x1\",stage=\"area\"} 9\n";
        let s = |extra| sample(text, "nofail_vmalloc_retries_total", "site", extra);
        assert_eq!(s("stage=\"area\"").unwrap(), 4.0);
        assert_eq!(s("stage=\"mapping\"").unwrap(), 0.0);
        // Two lines match: an error, not the first.
        assert!(s("").is_err());
        assert!(sample(text, "nofail_other", "site", "").is_err());
    }
}
