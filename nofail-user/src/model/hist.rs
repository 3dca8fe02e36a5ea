// SPDX-License-Identifier: MIT OR Apache-2.0
//! Log2 histograms as the kernel keeps them (`nofail_common::log2_bucket`):
//! quantiles, text bars with empty runs trimmed, and the explicit-bounds
//! form the JSON report carries.

use anyhow::{Result, bail};
use nofail_common::HIST_BUCKETS;
use serde::{Deserialize, Serialize};

/// One non-empty bucket: values `lo <= v < hi`; `hi` is absent for the
/// last bucket, which has no upper bound.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bucket {
    pub lo: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hi: Option<u64>,
    pub count: u64,
}

/// A log2 histogram with its bounds spelled out, non-empty buckets only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hist {
    /// What is counted: "retries" or "ns".
    pub unit: String,
    pub buckets: Vec<Bucket>,
}

impl Hist {
    pub fn from_log2(h: &[u64; HIST_BUCKETS], unit: &str) -> Self {
        let buckets = h
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, &count)| {
                let (lo, hi) = bounds(i);
                Bucket {
                    lo,
                    hi: (i + 1 < HIST_BUCKETS).then_some(hi),
                    count,
                }
            })
            .collect();
        Self {
            unit: unit.into(),
            buckets,
        }
    }

    /// Back to the kernel's buckets; refuses bounds nofail never writes.
    pub fn to_log2(&self) -> Result<[u64; HIST_BUCKETS]> {
        let mut h = [0u64; HIST_BUCKETS];
        for b in &self.buckets {
            let i = match b.lo {
                0 => 0,
                lo if lo.is_power_of_two() => lo.trailing_zeros() as usize + 1,
                lo => bail!("histogram bucket lower bound {lo} is not a power of two"),
            };
            let last = i + 1 >= HIST_BUCKETS;
            if i >= HIST_BUCKETS || b.hi != (!last).then(|| bounds(i).1) {
                bail!(
                    "histogram bucket [{}, {}) is not one of nofail's log2 buckets",
                    b.lo,
                    b.hi.map_or("inf".into(), |v| v.to_string())
                );
            }
            if h[i] != 0 {
                bail!("histogram bucket [{}, ...) appears twice", b.lo);
            }
            h[i] = b.count;
        }
        if h.iter()
            .try_fold(0u64, |acc, &n| acc.checked_add(n))
            .is_none()
        {
            bail!("histogram counts overflow");
        }
        Ok(h)
    }
}

/// Lower and upper (exclusive) bound of bucket `i`.
pub fn bounds(i: usize) -> (u64, u64) {
    match i {
        0 => (0, 1),
        _ if i >= 64 => (1 << 63, u64::MAX),
        _ => (1 << (i - 1), 1u64.checked_shl(i as u32).unwrap_or(u64::MAX)),
    }
}

/// Upper bound of the bucket holding quantile `q` (0..=1), or None when
/// the histogram is empty. An upper bound: the true value is below it.
pub fn quantile(buckets: &[u64; HIST_BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bounds(i).1.saturating_sub(1));
        }
    }
    None
}

/// Renders non-empty buckets as bars; leading and trailing empty buckets
/// are dropped and inner runs of two or more empty buckets fold into "...".
pub fn render(buckets: &[u64; HIST_BUCKETS], unit: fn(u64) -> String, indent: &str) -> String {
    let Some(first) = buckets.iter().position(|&n| n > 0) else {
        return String::new();
    };
    let last = buckets.iter().rposition(|&n| n > 0).expect("non-empty");
    let max = *buckets.iter().max().expect("non-empty");
    let mut out = String::new();
    let mut i = first;
    while i <= last {
        let run = buckets[i..=last].iter().take_while(|&&n| n == 0).count();
        if run >= 2 {
            out.push_str(&format!("{indent}{:>23}\n", "..."));
            i += run;
            continue;
        }
        let (lo, hi) = bounds(i);
        let label = if i == 0 {
            "0".to_string()
        } else {
            format!("[{}, {})", unit(lo), unit(hi))
        };
        let bar = "@".repeat(((buckets[i] * 40).div_ceil(max)) as usize);
        out.push_str(&format!(
            "{indent}{label:>23} {:>8} |{bar:<40}|\n",
            buckets[i]
        ));
        i += 1;
    }
    out
}

/// Plain count: 1, 2, 4, ..., 1K, 1M.
pub fn count_unit(v: u64) -> String {
    match v {
        0..1024 => v.to_string(),
        1024..1048576 => format!("{}K", v / 1024),
        _ => format!("{}M", v / 1048576),
    }
}

/// Nanoseconds in a readable unit.
pub fn ns_unit(v: u64) -> String {
    match v {
        0..1_000 => format!("{v}ns"),
        1_000..1_000_000 => format!("{}us", v / 1_000),
        1_000_000..1_000_000_000 => format!("{}ms", v / 1_000_000),
        _ => format!("{}s", v / 1_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(pairs: &[(usize, u64)]) -> [u64; HIST_BUCKETS] {
        let mut h = [0; HIST_BUCKETS];
        for &(i, n) in pairs {
            h[i] = n;
        }
        h
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        // 90 zero-retry calls, 10 calls with 3 retries (bucket 2: [2,4)).
        let h = hist(&[(0, 90), (2, 10)]);
        assert_eq!(quantile(&h, 0.5), Some(0));
        assert_eq!(quantile(&h, 0.99), Some(3));
        assert_eq!(quantile(&[0; HIST_BUCKETS], 0.5), None);
    }

    #[test]
    fn render_trims_and_folds_empty_runs() {
        let h = hist(&[(3, 4), (4, 2), (9, 1)]);
        let text = render(&h, count_unit, "");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].contains("[4, 8)") && lines[0].contains(&"@".repeat(40)));
        assert!(
            lines[1].contains("[8, 16)")
                && lines[1].contains(&format!("|{}{}|", "@".repeat(20), " ".repeat(20)))
        );
        assert!(lines[2].trim() == "...");
        assert!(lines[3].contains("[256, 512)"));
        assert_eq!(render(&[0; HIST_BUCKETS], count_unit, ""), "");
    }

    #[test]
    fn explicit_bounds_round_trip() {
        let h = hist(&[(0, 3), (2, 10), (HIST_BUCKETS - 1, 1)]);
        let e = Hist::from_log2(&h, "retries");
        assert_eq!(e.buckets.len(), 3);
        assert_eq!(
            e.buckets[1],
            Bucket {
                lo: 2,
                hi: Some(4),
                count: 10
            }
        );
        assert_eq!(e.buckets[2].hi, None);
        assert_eq!(e.to_log2().unwrap(), h);
    }

    #[test]
    fn foreign_bounds_are_refused() {
        let bad = |lo, hi| Hist {
            unit: "ns".into(),
            buckets: vec![Bucket { lo, hi, count: 1 }],
        };
        assert!(bad(3, Some(4)).to_log2().is_err());
        assert!(bad(2, Some(8)).to_log2().is_err());
        assert!(bad(2, None).to_log2().is_err());
        assert!(bad(1 << 63, None).to_log2().is_err());
        let twice = Hist {
            unit: "ns".into(),
            buckets: vec![
                Bucket {
                    lo: 1,
                    hi: Some(2),
                    count: 1
                };
                2
            ],
        };
        assert!(twice.to_log2().is_err());
    }

    #[test]
    fn zero_bucket_is_labelled_zero() {
        let text = render(&hist(&[(0, 5), (1, 1)]), count_unit, "");
        assert!(
            text.lines().next().unwrap().trim_start().starts_with("0 "),
            "{text}"
        );
    }
}
