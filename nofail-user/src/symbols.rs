//! Kernel address → `symbol+0xoff` through /proc/kallsyms.

use anyhow::{Context as _, Result};

const MAX_FUNCTION_SIZE: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct Kallsyms {
    /// Sorted by address.
    syms: Vec<(u64, String)>,
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text =
            std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                // Text symbols only: callers are return addresses in code.
                if addr == 0 || !matches!(kind, "t" | "T" | "w" | "W") {
                    return None;
                }
                Some((addr, name.to_string()))
            })
            .collect();
        syms.sort();
        Self { syms }
    }

    /// False when kptr_restrict hides addresses (all read as zero).
    pub fn has_addresses(&self) -> bool {
        !self.syms.is_empty()
    }

    pub fn resolve(&self, addr: u64) -> String {
        match self.syms.partition_point(|(a, _)| *a <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let (base, name) = &self.syms[i - 1];
                // No function is this large: the address belongs to code
                // kallsyms did not list when read (a module loaded since).
                if addr - base > MAX_FUNCTION_SIZE {
                    return format!("{addr:#x}");
                }
                format!("{name}+{:#x}", addr - base)
            }
        }
    }
}

impl Kallsyms {
    /// `[start, end)` of every function whose name matches `pattern` (a
    /// name or a `*`/`?` glob); `end` is the next symbol's address.
    pub fn ranges(&self, pattern: &str) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (i, (addr, name)) in self.syms.iter().enumerate() {
            if glob_match(pattern, name) {
                let end = self.syms[i + 1..]
                    .iter()
                    .map(|(a, _)| *a)
                    .find(|a| a > addr)
                    .unwrap_or(addr + 1);
                if !out.contains(&(*addr, end)) {
                    out.push((*addr, end));
                }
            }
        }
        out
    }
}

/// Shell-style glob with `*` and `?`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81200000 T __vmalloc_node_range_noprof
ffffffff81200400 t __vmalloc_area_node
ffffffff81300000 D some_data
ffffffffc0000000 t trigger_nofail_vmalloc\t[nofail_trigger]
";

    #[test]
    fn resolves_to_symbol_plus_offset() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.resolve(0xffffffff81200410), "__vmalloc_area_node+0x10");
        assert_eq!(
            k.resolve(0xffffffff81200000),
            "__vmalloc_node_range_noprof+0x0"
        );
        assert_eq!(k.resolve(0xffffffffc0000042), "trigger_nofail_vmalloc+0x42");
        assert_eq!(k.resolve(0x1000), "0x1000");
        assert_eq!(k.resolve(0xffffffffe0000000), "0xffffffffe0000000");
    }

    #[test]
    fn hidden_addresses_are_detected() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 T foo\n");
        assert!(!k.has_addresses());
    }

    #[test]
    fn globs() {
        assert!(glob_match("xfs_*", "xfs_buf_alloc"));
        assert!(glob_match("*vmalloc?", "kvmallocx"));
        assert!(!glob_match("xfs_*", "ext4_buf"));
        assert!(glob_match("*", ""));
        assert_eq!(Kallsyms::parse(SAMPLE).ranges("__vmalloc*").len(), 2);
    }
}
