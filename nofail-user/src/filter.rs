//! Builds the in-kernel `Filter` from the command line and writes it to the
//! `FILTER` map (runtime rules: no reload needed to change them).

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, maps::Array};
use nofail_common::{COMM_LEN, Filter, MAX_CALLER_RANGES};

use crate::symbols::Kallsyms;

#[derive(Debug, Default, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only calls made by this process (tgid).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Only calls made by tasks with this command name.
    #[arg(long)]
    pub comm: Option<String>,
    /// Only calls from call sites inside functions matching this symbol or
    /// glob (e.g. 'xfs_*').
    #[arg(long)]
    pub caller: Option<String>,
    /// Only calls with __GFP_NOFAIL.
    #[arg(long)]
    pub nofail_only: bool,
    /// Only calls of at least this size (bytes; K, M, G suffixes).
    #[arg(long, value_parser = parse_size)]
    pub min_size: Option<u64>,
}

pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?} (try 4096, 64K, 1M)"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} too large"))
}

impl FilterArgs {
    pub fn build(&self, syms: &Kallsyms) -> Result<Filter> {
        let mut f = Filter {
            pid: self.pid.unwrap_or(0),
            nofail_only: self.nofail_only as u32,
            min_size: self.min_size.unwrap_or(0),
            ..Default::default()
        };
        if let Some(comm) = &self.comm {
            if comm.is_empty() || comm.len() >= COMM_LEN {
                bail!(
                    "--comm must be 1 to {} bytes (the kernel's comm length), got {comm:?}",
                    COMM_LEN - 1
                );
            }
            f.comm[..comm.len()].copy_from_slice(comm.as_bytes());
        }
        if let Some(pattern) = &self.caller {
            let ranges = syms.ranges(pattern);
            if ranges.is_empty() {
                bail!("--caller {pattern:?} matches no kernel function in /proc/kallsyms");
            }
            if ranges.len() > MAX_CALLER_RANGES {
                bail!(
                    "--caller {pattern:?} matches {} functions; at most {MAX_CALLER_RANGES} can be traced",
                    ranges.len()
                );
            }
            for (slot, (start, end)) in f.ranges.iter_mut().zip(&ranges) {
                *slot = [*start, *end];
            }
            f.n_ranges = ranges.len() as u32;
        }
        Ok(f)
    }
}

pub fn install(ebpf: &mut Ebpf, filter: &Filter) -> Result<()> {
    let mut map: Array<_, Filter> =
        Array::try_from(ebpf.map_mut("FILTER").context("FILTER map missing")?)?;
    map.set(0, filter, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64K").unwrap(), 65536);
        assert_eq!(parse_size("1M").unwrap(), 1 << 20);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("12Q").is_err());
    }

    #[test]
    fn builds_caller_ranges_and_comm() {
        let syms = Kallsyms::parse(
            "ffffffff81000000 T xfs_buf_alloc\nffffffff81000100 T xfs_buf_free\nffffffff81000200 T ext4_x\n",
        );
        let args = FilterArgs {
            caller: Some("xfs_*".into()),
            comm: Some("kworker".into()),
            ..Default::default()
        };
        let f = args.build(&syms).unwrap();
        assert_eq!(f.n_ranges, 2);
        assert_eq!(f.ranges[0], [0xffffffff81000000, 0xffffffff81000100]);
        assert_eq!(f.ranges[1], [0xffffffff81000100, 0xffffffff81000200]);
        assert_eq!(&f.comm[..8], b"kworker\0");
    }

    #[test]
    fn bad_filters_are_errors() {
        let syms = Kallsyms::parse("ffffffff81000000 T a\n");
        let unknown = FilterArgs {
            caller: Some("nope_*".into()),
            ..Default::default()
        };
        assert!(
            unknown
                .build(&syms)
                .unwrap_err()
                .to_string()
                .contains("matches no kernel function")
        );
        let long = FilterArgs {
            comm: Some("a-very-long-command".into()),
            ..Default::default()
        };
        assert!(long.build(&syms).is_err());
    }
}
