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

/// `nofail_missed_events_total{reason="<reason>"}` in a scrape, or the sum
/// of every reason's sample with `None`: the events nofail says it lost.
/// A scrape without the sample asked for is an error, never 0.
pub fn missed_events(text: &str, reason: Option<&str>) -> Result<u64> {
    let prefix = match reason {
        Some(r) => format!("nofail_missed_events_total{{reason=\"{r}\"}} "),
        None => "nofail_missed_events_total{".to_string(),
    };
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            let v = l.rsplit(' ').next().unwrap_or_default();
            v.parse()
                .with_context(|| format!("missed events: bad value {v:?}"))
        })
        .collect::<Result<_>>()?;
    ensure!(!values.is_empty(), "the scrape has no {prefix}..}} sample");
    Ok(values.iter().sum())
}

/// A real Prometheus server (Debian's `prometheus`) scraping one target
/// every second, with its data in `dir`; killed when dropped.
pub struct Server {
    child: std::process::Child,
    pub port: u16,
    log: std::path::PathBuf,
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Server {
    pub fn start(target_port: u16, dir: &std::path::Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: nofail\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )?;
        let port = free_port()?;
        let log = dir.join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("prometheus not found (cargo xtask setup installs Debian's prometheus)")?;
        Ok(Self { child, port, log })
    }

    /// An instant query: each result's labels and value; None until the
    /// server answers.
    pub fn query(&self, expr: &str) -> Option<Vec<(serde_json::Value, f64)>> {
        query(self.port, expr)
    }

    /// `query` until it returns at least one result, for up to `wait`.
    pub fn query_until(
        &self,
        expr: &str,
        wait: std::time::Duration,
    ) -> Result<Vec<(serde_json::Value, f64)>> {
        query_until(self.port, expr, wait).with_context(|| {
            format!(
                "log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            )
        })
    }
}

/// An instant query of the Prometheus on `port`: each result's labels and
/// value (NaN for a histogram_quantile of nothing); None until the server
/// answers.
pub fn query(port: u16, expr: &str) -> Option<Vec<(serde_json::Value, f64)>> {
    try_query(port, expr).ok()
}

/// `query`, with what went wrong: no connection, or the server's status
/// and answer (a query it refused says why).
pub fn try_query(port: u16, expr: &str) -> Result<Vec<(serde_json::Value, f64)>> {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (code, body) = crate::http::http_get(port, &format!("/api/v1/query?query={encoded}"))?;
    ensure!(code == 200, "prometheus answered {code} to {expr}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("{expr}: not JSON: {body}"))?;
    let results = v["data"]["result"]
        .as_array()
        .with_context(|| format!("{expr}: no result list: {body}"))?;
    Ok(results
        .iter()
        .filter_map(|r| {
            let value = r["value"][1].as_str()?.parse().ok()?;
            Some((r["metric"].clone(), value))
        })
        .collect())
}

/// `query` until it returns at least one result, for up to `wait`.
pub fn query_until(
    port: u16,
    expr: &str,
    wait: std::time::Duration,
) -> Result<Vec<(serde_json::Value, f64)>> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let last = match try_query(port, expr) {
            Ok(r) if !r.is_empty() => return Ok(r),
            Ok(_) => "an empty result".to_string(),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            std::time::Instant::now() < deadline,
            "prometheus gave no answer to {expr} in {wait:?} (last: {last})"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missed_events_by_reason_and_summed() {
        let text = "# TYPE nofail_missed_events_total counter\n\
                    nofail_missed_events_total{reason=\"program_skipped\"} 2\n\
                    nofail_missed_events_total{reason=\"caller_map_full\"} 5\n\
                    nofail_other_total 9\n";
        assert_eq!(missed_events(text, Some("caller_map_full")).unwrap(), 5);
        assert_eq!(missed_events(text, None).unwrap(), 7);
        // Missing is an error, not 0; so is a value that is no count.
        assert!(missed_events(text, Some("exit_missed")).is_err());
        assert!(missed_events("nofail_other_total 1\n", None).is_err());
        assert!(missed_events("nofail_missed_events_total{reason=\"x\"} y\n", None).is_err());
    }

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
