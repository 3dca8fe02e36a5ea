// SPDX-License-Identifier: MIT OR Apache-2.0
//! Builds the in-kernel `Filter` from what the user selected and writes it to the
//! `FILTER` map (runtime rules: no reload needed to change them).

use anyhow::{Context as _, Result, bail};
use aya::{Ebpf, maps::Array};
use nofail_common::{
    COMM_LEN, CallerRange, Filter, MAX_CALLER_RANGES, MAX_CALLERS, MAX_INFLIGHT, map_names,
};

use crate::{
    kernel::symbols::{FunctionSelection, Kallsyms, Patterns},
    model::filter::CallSelection,
};

/// Sizes of the kernel maps that bound what nofail can hold, fixed when
/// the object is loaded.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub max_callers: u32,
    pub max_inflight: u32,
}

impl Default for Capacity {
    fn default() -> Self {
        Self {
            max_callers: MAX_CALLERS,
            max_inflight: MAX_INFLIGHT,
        }
    }
}

/// What the filter arguments become in the kernel: the `FILTER` rule and
/// the sorted caller ranges of `CALLER_RANGES`.
#[derive(Debug, Default, Clone)]
pub struct Targets {
    pub filter: Filter,
    pub capacity: Capacity,
    pub ranges: Vec<CallerRange>,
    /// What --caller/--module selected, for the start-up line.
    pub summary: Option<String>,
}

/// What a selection becomes in the kernel.
impl CallSelection {
    pub fn build(&self, syms: &Kallsyms) -> Result<Targets> {
        let mut f = Filter {
            pid: self.pid.unwrap_or(0),
            nofail_only: self.nofail_only as u32,
            min_size: self.min_size.unwrap_or(0),
            chains: self.chains.is_some() as u32,
            cgroup_id: self.cgroup.as_ref().map_or(0, |c| c.id),
            cgroup_level: self.cgroup.as_ref().map_or(0, |c| c.level),
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
        let (ranges, summary) = self.caller_ranges(syms)?;
        f.n_ranges = ranges.len() as u32;
        Ok(Targets {
            filter: f,
            capacity: Capacity {
                max_callers: self.max_callers,
                max_inflight: self.max_inflight,
            },
            ranges,
            summary,
        })
    }

    /// The merged address ranges of the selected functions; empty when
    /// neither --caller nor --module is given.
    fn caller_ranges(&self, syms: &Kallsyms) -> Result<(Vec<CallerRange>, Option<String>)> {
        if self.caller.is_empty() && self.module.is_empty() {
            return Ok((vec![], None));
        }
        if self.caller.iter().any(|p| p.trim().is_empty()) {
            bail!("--caller has an empty pattern (use 'a,b' without spaces or empty items)");
        }
        if let Some(pattern) = syms.unmatched(&self.caller).first() {
            bail!("--caller {pattern:?} matches no kernel function in /proc/kallsyms");
        }
        for module in &self.module {
            if !syms.has_module(module) {
                bail!(
                    "--module {module:?} is not a loaded module with code in /proc/kallsyms \
                     (built-in code has no module: select it with --caller)"
                );
            }
        }
        let (ranges, functions) = syms.select(&self.functions());
        let what = self.describe_targets();
        if ranges.is_empty() {
            bail!("{what} selects no kernel function");
        }
        if ranges.len() > MAX_CALLER_RANGES as usize {
            bail!(
                "{what} selects {} separate address ranges; at most {MAX_CALLER_RANGES} can be searched in the kernel (narrow the patterns)",
                ranges.len()
            );
        }
        let summary = format!(
            "{what}: {functions} functions in {} address ranges",
            ranges.len()
        );
        let ranges = ranges
            .into_iter()
            .map(|(start, end)| CallerRange { start, end })
            .collect();
        Ok((ranges, Some(summary)))
    }

    /// The functions --caller and --module select.
    fn functions(&self) -> FunctionSelection<'_> {
        FunctionSelection {
            names: (!self.caller.is_empty()).then(|| Patterns::new(&self.caller)),
            modules: (!self.module.is_empty()).then_some(self.module.as_slice()),
        }
    }

    /// Whether calls made from inside `function` pass --caller and
    /// --module (all do without them); false when `syms` lacks it.
    pub fn selects_calls_from(&self, syms: &Kallsyms, function: &str) -> bool {
        if self.caller.is_empty() && self.module.is_empty() {
            return true;
        }
        let Some((start, _)) = syms.extent(function) else {
            return false;
        };
        syms.select(&self.functions())
            .0
            .iter()
            .any(|&(s, e)| s <= start && start < e)
    }

    fn describe_targets(&self) -> String {
        let mut parts = Vec::new();
        if !self.caller.is_empty() {
            let shown = if self.caller.len() <= 4 {
                self.caller.join(",")
            } else {
                format!(
                    "{},... ({} patterns)",
                    self.caller[..3].join(","),
                    self.caller.len()
                )
            };
            parts.push(format!("--caller {shown:?}"));
        }
        if !self.module.is_empty() {
            parts.push(format!("--module {:?}", self.module.join(",")));
        }
        parts.join(" with ")
    }
}

/// Writes the caller ranges, then the rule that counts them (a reader
/// never sees `n_ranges` cover entries not yet written).
pub fn install(ebpf: &mut Ebpf, targets: &Targets) -> Result<()> {
    let mut ranges: Array<_, CallerRange> = Array::try_from(
        ebpf.map_mut(map_names::CALLER_RANGES)
            .context("CALLER_RANGES map missing")?,
    )?;
    for (i, r) in targets.ranges.iter().enumerate() {
        ranges.set(i as u32, r, 0)?;
    }
    let mut map: Array<_, Filter> = Array::try_from(
        ebpf.map_mut(map_names::FILTER)
            .context("FILTER map missing")?,
    )?;
    map.set(0, targets.filter, 0)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(caller: &[&str], module: &[&str]) -> CallSelection {
        CallSelection {
            caller: caller.iter().map(|s| s.to_string()).collect(),
            module: module.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn builds_caller_ranges_and_comm() {
        let syms = Kallsyms::parse(
            "ffffffff81000000 T xfs_buf_alloc\nffffffff81000100 T ext4_y\nffffffff81000200 T xfs_buf_free\nffffffff81000300 T xfs_x\nffffffff81000400 T ext4_x\n",
        );
        let mut a = args(&["xfs_*"], &[]);
        a.comm = Some("kworker".into());
        let t = a.build(&syms).unwrap();
        assert_eq!(t.filter.n_ranges, 2);
        assert_eq!(
            t.ranges,
            vec![
                CallerRange {
                    start: 0xffffffff81000000,
                    end: 0xffffffff81000100
                },
                // xfs_buf_free and xfs_x are adjacent: one range.
                CallerRange {
                    start: 0xffffffff81000200,
                    end: 0xffffffff81000400
                },
            ]
        );
        assert_eq!(&t.filter.comm[..8], b"kworker\0");
        // A comma list is the union of its patterns.
        let t = args(&["xfs_buf_alloc", "ext4_*"], &[])
            .build(&syms)
            .unwrap();
        assert_eq!(t.ranges.len(), 2);
        assert_eq!(t.ranges[0].end, 0xffffffff81000200);
        assert_eq!(t.ranges[1].start, 0xffffffff81000400);
    }

    /// `n` functions alternating selected / not selected: `n / 2` ranges.
    fn alternating(n: usize) -> Kallsyms {
        let mut text = String::new();
        for i in 0..n {
            let prefix = if i % 2 == 0 { "sub" } else { "other" };
            text.push_str(&format!(
                "{:x} T {prefix}_{i}\n",
                0xffffffff81000000u64 + 16 * i as u64
            ));
        }
        Kallsyms::parse(&text)
    }

    #[test]
    fn range_limit_is_exact() {
        let max = MAX_CALLER_RANGES as usize;
        let at = args(&["sub_*"], &[]).build(&alternating(2 * max)).unwrap();
        assert_eq!(at.ranges.len(), max);
        assert_eq!(at.filter.n_ranges, MAX_CALLER_RANGES);
        let err = args(&["sub_*"], &[])
            .build(&alternating(2 * max + 2))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("selects {} separate address ranges", max + 1)),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1);
    }

    #[test]
    fn modules_select_their_code() {
        let syms = Kallsyms::parse(
            "ffffffff81000000 T xfs_core\nffffffffc0000000 t site_a\t[trig]\nffffffffc0000100 t site_b\t[trig]\nffffffffc0000200 t xfs_m\t[xfs]\n",
        );
        let t = args(&[], &["trig"]).build(&syms).unwrap();
        assert_eq!(
            t.ranges,
            vec![CallerRange {
                start: 0xffffffffc0000000,
                end: 0xffffffffc0000200
            }]
        );
        let t = args(&["xfs_*"], &["xfs"]).build(&syms).unwrap();
        assert_eq!(t.ranges[0].start, 0xffffffffc0000200);
        let err = args(&[], &["ext4"]).build(&syms).unwrap_err().to_string();
        assert!(err.contains("not a loaded module"), "{err}");
        let err = args(&["site_*"], &["xfs"])
            .build(&syms)
            .unwrap_err()
            .to_string();
        assert!(err.contains("selects no kernel function"), "{err}");
    }

    #[test]
    fn calls_from_a_function_pass_or_not() {
        let syms = Kallsyms::parse(
            "ffffffff81000000 T array_map_alloc\nffffffff81000100 T bpf_x\nffffffffc0000000 t m\t[mod]\n",
        );
        let sel = |caller: &[&str], module: &[&str]| args(caller, module);
        assert!(sel(&[], &[]).selects_calls_from(&syms, "array_map_alloc"));
        assert!(sel(&["array_map_alloc"], &[]).selects_calls_from(&syms, "array_map_alloc"));
        assert!(sel(&["*map*"], &[]).selects_calls_from(&syms, "array_map_alloc"));
        assert!(!sel(&["bpf_*"], &[]).selects_calls_from(&syms, "array_map_alloc"));
        // Built-in code has no module.
        assert!(!sel(&[], &["mod"]).selects_calls_from(&syms, "array_map_alloc"));
        assert!(!sel(&["array_map_alloc"], &[]).selects_calls_from(&syms, "nothing"));
    }

    #[test]
    fn bad_filters_are_errors() {
        let syms = Kallsyms::parse("ffffffff81000000 T a\n");
        let unknown = args(&["nope_*"], &[]);
        assert!(
            unknown
                .build(&syms)
                .unwrap_err()
                .to_string()
                .contains("matches no kernel function")
        );
        let long = CallSelection {
            comm: Some("a-very-long-command".into()),
            ..Default::default()
        };
        assert!(long.build(&syms).is_err());
    }
}
