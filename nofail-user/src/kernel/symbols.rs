// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernel address → `symbol+0xoff` through /proc/kallsyms.

use anyhow::{Context as _, Result};

const MAX_FUNCTION_SIZE: u64 = 1 << 20;

#[derive(Debug, Default)]
pub struct Kallsyms {
    /// Sorted by address.
    syms: Vec<Sym>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Sym {
    addr: u64,
    name: String,
    /// The loadable module the code lives in (kallsyms' `[name]` tag);
    /// `None` for built-in code.
    module: Option<String>,
}

/// Which functions a filter selects: names and globs and/or modules
/// (`None`: no restriction on that axis).
#[derive(Debug, Default, Clone)]
pub struct Selection<'a> {
    pub names: Option<Patterns<'a>>,
    pub modules: Option<&'a [String]>,
}

/// Name patterns split for speed: plain names are looked up in a set (a
/// list of tens of thousands of names stays fast), globs are matched.
#[derive(Debug, Default, Clone)]
pub struct Patterns<'a> {
    exact: std::collections::HashSet<&'a str>,
    globs: Vec<&'a str>,
}

impl<'a> Patterns<'a> {
    pub fn new(patterns: &'a [String]) -> Self {
        let mut p = Self::default();
        for pat in patterns {
            if pat.contains(['*', '?']) {
                p.globs.push(pat);
            } else {
                p.exact.insert(pat);
            }
        }
        p
    }

    pub fn matches(&self, name: &str) -> bool {
        self.exact.contains(name) || self.globs.iter().any(|g| glob_match(g, name))
    }
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text =
            std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        let mut syms: Vec<Sym> = text
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
                let module = parts
                    .next()
                    .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
                    .map(str::to_string);
                Some(Sym {
                    addr,
                    name: name.to_string(),
                    module,
                })
            })
            .collect();
        syms.sort();
        Self { syms }
    }

    /// `[start, end)` of a built-in function: up to the next symbol at a
    /// higher address.
    pub fn extent(&self, name: &str) -> Option<(u64, u64)> {
        let sym = self
            .syms
            .iter()
            .find(|s| s.name == name && s.module.is_none())?;
        let next = self.syms.partition_point(|s| s.addr <= sym.addr);
        let end = self.syms.get(next).map_or(sym.addr + 1, |s| s.addr);
        Some((sym.addr, end))
    }

    /// False when kptr_restrict hides addresses (all read as zero).
    pub fn has_addresses(&self) -> bool {
        !self.syms.is_empty()
    }

    pub fn resolve(&self, addr: u64) -> String {
        match self.syms.partition_point(|s| s.addr <= addr) {
            0 => format!("{addr:#x}"),
            i => {
                let Sym {
                    addr: base,
                    name,
                    module,
                } = &self.syms[i - 1];
                // No function is this large: the address belongs to code
                // kallsyms did not list when read (a module loaded since).
                if addr - base > MAX_FUNCTION_SIZE {
                    return format!("{addr:#x}");
                }
                match module {
                    Some(m) => format!("{name}+{:#x} [{m}]", addr - base),
                    None => format!("{name}+{:#x}", addr - base),
                }
            }
        }
    }
}

impl Kallsyms {
    /// `[start, end)` ranges of the code of every function `sel` selects,
    /// sorted, with adjacent functions merged into one range (a whole
    /// subsystem is usually a few hundred ranges, not thousands). A
    /// function ends where the next symbol at a higher address starts.
    #[cfg(test)]
    pub fn ranges(&self, sel: &Selection) -> Vec<(u64, u64)> {
        self.select(sel).0
    }

    /// `ranges`, and how many functions (distinct addresses) they hold.
    pub fn select(&self, sel: &Selection) -> (Vec<(u64, u64)>, usize) {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut functions = 0;
        let mut i = 0;
        while i < self.syms.len() {
            // Aliases share an address: the function is selected when any
            // of its names is.
            let addr = self.syms[i].addr;
            let mut j = i;
            let mut hit = false;
            while j < self.syms.len() && self.syms[j].addr == addr {
                hit |= sel.selects(&self.syms[j]);
                j += 1;
            }
            if hit {
                functions += 1;
                let end = self.syms.get(j).map_or(addr + 1, |s| s.addr);
                match out.last_mut() {
                    Some(last) if last.1 == addr => last.1 = end,
                    _ => out.push((addr, end)),
                }
            }
            i = j;
        }
        (out, functions)
    }

    /// Is `module` a loadable module with code in kallsyms?
    pub fn has_module(&self, module: &str) -> bool {
        self.syms
            .iter()
            .any(|s| s.module.as_deref() == Some(module))
    }

    /// The patterns that match no function name.
    pub fn unmatched<'p>(&self, patterns: &'p [String]) -> Vec<&'p str> {
        let names: std::collections::HashSet<&str> =
            self.syms.iter().map(|s| s.name.as_str()).collect();
        patterns
            .iter()
            .filter(|p| {
                if p.contains(['*', '?']) {
                    !names.iter().any(|n| glob_match(p, n))
                } else {
                    !names.contains(p.as_str())
                }
            })
            .map(String::as_str)
            .collect()
    }
}

impl Selection<'_> {
    fn selects(&self, sym: &Sym) -> bool {
        let name_ok = self.names.as_ref().is_none_or(|p| p.matches(&sym.name));
        let module_ok = self.modules.is_none_or(|mods| {
            sym.module
                .as_deref()
                .is_some_and(|m| mods.iter().any(|want| want == m))
        });
        name_ok && module_ok
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
        assert_eq!(
            k.resolve(0xffffffffc0000042),
            "trigger_nofail_vmalloc+0x42 [nofail_trigger]"
        );
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
    }

    fn names(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn adjacent_functions_merge_into_one_range() {
        let k = Kallsyms::parse(SAMPLE);
        let pats = names(&["__vmalloc*"]);
        let sel = Selection {
            names: Some(Patterns::new(&pats)),
            modules: None,
        };
        // Two adjacent functions, one range ending at the next symbol.
        assert_eq!(
            k.ranges(&sel),
            vec![(0xffffffff81200000, 0xffffffffc0000000)]
        );
    }

    #[test]
    fn modules_and_aliases() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T a\nffffffff81000000 T a_alias\nffffffff81000100 T b\n\
             ffffffffc0000000 t m1\t[mod]\nffffffffc0000100 t m2\t[mod]\nffffffffc0000200 t o\t[other]\n",
        );
        let mods = names(&["mod"]);
        let sel = Selection {
            names: None,
            modules: Some(&mods),
        };
        assert_eq!(
            k.ranges(&sel),
            vec![(0xffffffffc0000000, 0xffffffffc0000200)]
        );
        let pats = names(&["a_alias"]);
        let sel = Selection {
            names: Some(Patterns::new(&pats)),
            modules: None,
        };
        assert_eq!(
            k.ranges(&sel),
            vec![(0xffffffff81000000, 0xffffffff81000100)]
        );
        assert!(k.has_module("mod") && !k.has_module("a"));
        // Names and modules together: the intersection.
        let pats = names(&["m2", "a"]);
        let sel = Selection {
            names: Some(Patterns::new(&pats)),
            modules: Some(&mods),
        };
        assert_eq!(
            k.ranges(&sel),
            vec![(0xffffffffc0000100, 0xffffffffc0000200)]
        );
    }
}
