// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernel address → `symbol+0xoff` through /proc/kallsyms.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

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
    module: Option<Arc<str>>,
}

/// Which kernel functions `--caller` and `--module` select: names and
/// globs and/or modules (`None`: no restriction on that axis).
#[derive(Debug, Default, Clone)]
pub struct FunctionSelection<'a> {
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

/// An ELF mapping symbol or local label, no function: arm64 modules list
/// `$x`/`$d` where code and data alternate inside a function (the
/// trigger's `.skip` block), and naming by them cut
/// `site_burst_callers+0x..` down to `$d+0x..`. As the kernel's own
/// `is_mapping_symbol()` (include/linux/module_symbol.h).
fn is_mapping_symbol(name: &str) -> bool {
    matches!(
        name.as_bytes(),
        [b'.', b'L', ..]
            | [b'L', b'0', ..]
            | [b'$', b'a' | b'd' | b't' | b'x']
            | [b'$', b'a' | b'd' | b't' | b'x', b'.', ..]
    )
}

impl Kallsyms {
    pub fn load() -> Result<Self> {
        let text =
            std::fs::read_to_string("/proc/kallsyms").context("cannot read /proc/kallsyms")?;
        Ok(Self::parse(&text))
    }

    pub fn parse(text: &str) -> Self {
        // One module name per module, shared by its symbols: Debian's
        // kernels list some 100,000 module symbols, and the parse runs at
        // every start (under QEMU TCG at a thirtieth of the host's speed).
        let mut modules: Vec<Arc<str>> = Vec::new();
        let mut syms: Vec<Sym> = text
            .lines()
            .filter_map(|line| {
                // "addr kind name" and "\t[module]" when in a module.
                let mut parts = line.split_ascii_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                // Text symbols only: callers are return addresses in code.
                if addr == 0 || !matches!(kind, "t" | "T" | "w" | "W") || is_mapping_symbol(name) {
                    return None;
                }
                let module = parts
                    .next()
                    .and_then(|m| m.strip_prefix('[')?.strip_suffix(']'))
                    .map(|m| match modules.iter().rev().find(|k| &***k == m) {
                        Some(k) => k.clone(),
                        None => {
                            let k: Arc<str> = m.into();
                            modules.push(k.clone());
                            k
                        }
                    });
                Some(Sym {
                    addr,
                    name: name.to_string(),
                    module,
                })
            })
            .collect();
        syms.sort_unstable();
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
        // The last symbol spans one byte; at the top address it spans
        // nothing that can be written as [start, end).
        let end = match self.syms.get(next) {
            Some(s) => s.addr,
            None => sym.addr.checked_add(1)?,
        };
        Some((sym.addr, end))
    }

    /// False when kptr_restrict hides addresses (all read as zero).
    pub fn has_addresses(&self) -> bool {
        !self.syms.is_empty()
    }

    /// `symbol+0xoff` (with ` [module]` for module code), or the address
    /// in hex when this copy does not name it. Tests only: nofail names
    /// addresses through its one `SymbolCache`.
    #[cfg(test)]
    pub fn resolve(&self, addr: u64) -> String {
        self.name_of(addr).unwrap_or_else(|| format!("{addr:#x}"))
    }

    /// `symbol+0xoff`, or None when no function of this copy holds `addr`.
    fn name_of(&self, addr: u64) -> Option<String> {
        let i = self
            .syms
            .partition_point(|s| s.addr <= addr)
            .checked_sub(1)?;
        let Sym {
            addr: base,
            name,
            module,
        } = &self.syms[i];
        // No function is this large: the address belongs to code kallsyms
        // did not list when read (a module loaded since).
        if addr - base > MAX_FUNCTION_SIZE {
            return None;
        }
        Some(match module {
            Some(m) => format!("{name}+{:#x} [{m}]", addr - base),
            None => format!("{name}+{:#x}", addr - base),
        })
    }
}

/// How often, at most, kallsyms is read again to name an address the copy
/// at hand does not (code loaded since, or addresses hidden).
pub const REFRESH: Duration = Duration::from_secs(5);

/// Where a fresh copy of kallsyms comes from: /proc/kallsyms, or a test's.
pub type Source = Box<dyn FnMut() -> Result<Kallsyms>>;

/// What the cache knows of an address.
#[derive(Debug, Clone)]
enum Entry {
    /// Its name, as it was when first named: a caller inside a module
    /// unloaded since keeps it.
    Named(String),
    /// Not named by the copy read at this time (a negative entry): shown
    /// in hex without reading kallsyms again until `REFRESH` has passed.
    Unnamed(Instant),
}

/// The one naming of kernel addresses in a session: every path (the
/// interval tables, the final report, calls in flight, chains, events)
/// asks here, so one address has one name. A name, once given, stays; an
/// address not named is remembered as such, and kallsyms is read again at
/// most once per `REFRESH`, only when an address not named is asked for.
pub struct SymbolCache {
    syms: Kallsyms,
    read: Source,
    /// When `syms` was read.
    read_at: Instant,
    entries: HashMap<u64, Entry>,
    /// Copies of kallsyms read, the first included.
    pub reads: u64,
    /// The next address not named may read kallsyms again before
    /// `REFRESH` has passed (once: the final report).
    refresh_due: bool,
}

impl SymbolCache {
    /// A cache over /proc/kallsyms, read now.
    pub fn load() -> Result<Self> {
        Self::with_source(Box::new(Kallsyms::load), Instant::now())
    }

    /// A cache over `read`, which is called now for the first copy.
    pub fn with_source(mut read: Source, now: Instant) -> Result<Self> {
        Ok(Self {
            syms: read()?,
            read,
            read_at: now,
            entries: HashMap::new(),
            reads: 1,
            refresh_due: false,
        })
    }

    /// The copy at hand (for selecting functions: `select`, `unmatched`).
    pub fn syms(&self) -> &Kallsyms {
        &self.syms
    }

    /// Lets the next address not named read kallsyms again at once: the
    /// final report is made once, and a module loaded less than `REFRESH`
    /// before it (a short run) would otherwise stay in hex there.
    pub fn refresh_before_final(&mut self) {
        self.refresh_due = true;
    }

    /// `addr` as `symbol+0xoff` (with ` [module]`), or in hex.
    pub fn name(&mut self, addr: u64) -> String {
        self.name_at(addr, Instant::now())
    }

    fn name_at(&mut self, addr: u64, now: Instant) -> String {
        match self.entries.get(&addr) {
            Some(Entry::Named(name)) => return name.clone(),
            // Unnamed in this very copy, and no new copy due yet.
            Some(Entry::Unnamed(at))
                if *at == self.read_at
                    && !self.refresh_due
                    && now.saturating_duration_since(self.read_at) < REFRESH =>
            {
                return format!("{addr:#x}");
            }
            _ => {}
        }
        let mut name = self.syms.name_of(addr);
        if name.is_none()
            && (self.refresh_due || now.saturating_duration_since(self.read_at) >= REFRESH)
        {
            self.refresh_due = false;
            // A copy that cannot be read keeps the one at hand; the next
            // attempt waits as long.
            if let Ok(syms) = (self.read)() {
                self.syms = syms;
            }
            self.reads += 1;
            self.read_at = now;
            name = self.syms.name_of(addr);
        }
        match name {
            Some(name) => {
                self.entries.insert(addr, Entry::Named(name.clone()));
                name
            }
            None => {
                self.entries.insert(addr, Entry::Unnamed(self.read_at));
                format!("{addr:#x}")
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
    pub fn ranges(&self, sel: &FunctionSelection) -> Vec<(u64, u64)> {
        self.select(sel).0
    }

    /// `ranges`, and how many functions (distinct addresses) they hold.
    pub fn select(&self, sel: &FunctionSelection) -> (Vec<(u64, u64)>, usize) {
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
            // The last symbol spans one byte; one at the top address has
            // no [start, end) and is not selected (found by the globs
            // fuzz target: `addr + 1` overflowed).
            let end = match self.syms.get(j) {
                Some(s) => Some(s.addr),
                None => addr.checked_add(1),
            };
            if let (true, Some(end)) = (hit, end) {
                functions += 1;
                match out.last_mut() {
                    Some(last) if last.1 == addr => last.1 = end,
                    _ => out.push((addr, end)),
                }
            }
            i = j;
        }
        (out, functions)
    }

    /// Which of `names` this copy lists as code (built-in or module).
    pub fn functions_among<'n>(
        &self,
        names: impl IntoIterator<Item = &'n str>,
    ) -> std::collections::HashSet<String> {
        let wanted: std::collections::HashSet<&str> = names.into_iter().collect();
        self.syms
            .iter()
            .filter(|s| wanted.contains(s.name.as_str()))
            .map(|s| s.name.clone())
            .collect()
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

impl FunctionSelection<'_> {
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
        // `*` first: it is a wildcard even where the text has a `*` too.
        if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
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
    fn functions_among_are_code_only() {
        let k = Kallsyms::parse(SAMPLE);
        let found = k.functions_among([
            "__vmalloc_node_range_noprof",
            "__vmalloc_node_range",
            "some_data",
            "trigger_nofail_vmalloc",
        ]);
        let mut found: Vec<_> = found.into_iter().collect();
        found.sort();
        assert_eq!(
            found,
            ["__vmalloc_node_range_noprof", "trigger_nofail_vmalloc"]
        );
        // Hidden addresses (kptr_restrict) list no code at all.
        let hidden = Kallsyms::parse("0000000000000000 T __vmalloc_node_range_noprof\n");
        assert!(!hidden.has_addresses());
        assert!(
            hidden
                .functions_among(["__vmalloc_node_range_noprof"])
                .is_empty()
        );
    }

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

    /// arm64: a module function with data inside (the trigger's `.skip`)
    /// is listed with mapping symbols after it, which name nothing.
    #[test]
    fn mapping_symbols_name_nothing() {
        let k = Kallsyms::parse(
            "ffff800079c400e0 t site_burst_callers\t[nofail_trigger]\n\
             ffff800079c400e8 t $d\t[nofail_trigger]\n\
             ffff800079c400f0 t $x.12\t[nofail_trigger]\n\
             ffff800079c440ec t .Ltmp3\t[nofail_trigger]\n\
             ffff800079c44100 t site_burst\t[nofail_trigger]\n",
        );
        assert_eq!(
            k.resolve(0xffff800079c400e0 + 16 + 5),
            "site_burst_callers+0x15 [nofail_trigger]"
        );
        assert_eq!(
            k.resolve(0xffff800079c44104),
            "site_burst+0x4 [nofail_trigger]"
        );
        for name in ["$d", "$x", "$a.1", "$t", ".Lfoo", "L0bar"] {
            assert!(is_mapping_symbol(name), "{name}");
        }
        for name in ["$dx", "d", "site", "Lfoo", "_L0"] {
            assert!(!is_mapping_symbol(name), "{name}");
        }
    }

    /// A source that counts its reads and gives `texts[i]` at read `i`
    /// (the last one from then on).
    fn source(texts: &[&'static str]) -> (Source, std::rc::Rc<std::cell::Cell<usize>>) {
        let reads = std::rc::Rc::new(std::cell::Cell::new(0));
        let (texts, count) = (texts.to_vec(), reads.clone());
        let read: Source = Box::new(move || {
            let i = count.get();
            count.set(i + 1);
            Ok(Kallsyms::parse(texts[i.min(texts.len() - 1)]))
        });
        (read, reads)
    }

    const CORE: &str =
        "ffffffff81200000 T __vmalloc_node_range_noprof\nffffffff81200400 t __vmalloc_area_node\n";
    const WITH_MODULE: &str = "ffffffff81200000 T __vmalloc_node_range_noprof\nffffffff81200400 t __vmalloc_area_node\nffffffffc0000000 t site_a\t[trig]\n";

    /// A module loaded after the first read: its call site is unnamed
    /// (however often it is asked for) until `REFRESH` has passed since
    /// that read; then kallsyms is read once and the name kept, also once
    /// the module is gone from a later copy. Names never read again.
    #[test]
    fn cache_names_once_and_reads_at_most_once_per_refresh() {
        let t0 = Instant::now();
        let (read, reads) = source(&[CORE, WITH_MODULE, CORE]);
        let mut c = SymbolCache::with_source(read, t0).unwrap();
        let (core, site, gone) = (0xffffffff81200010, 0xffffffffc0000010, 0xffffffffe0000000);
        assert_eq!(c.name_at(core, t0), "__vmalloc_node_range_noprof+0x10");
        for s in 0..REFRESH.as_secs() {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(c.name_at(site, now), "0xffffffffc0000010");
        }
        assert_eq!(reads.get(), 1, "no second read before REFRESH");
        assert_eq!(c.name_at(site, t0 + REFRESH), "site_a+0x10 [trig]");
        assert_eq!(reads.get(), 2);
        // The module unloaded: a third copy (read for another address)
        // lacks it, and the name stays.
        assert_eq!(c.name_at(gone, t0 + 2 * REFRESH), "0xffffffffe0000000");
        assert_eq!(reads.get(), 3);
        assert_eq!(c.name_at(site, t0 + 3 * REFRESH), "site_a+0x10 [trig]");
        assert_eq!(
            c.name_at(core, t0 + 3 * REFRESH),
            "__vmalloc_node_range_noprof+0x10"
        );
        assert_eq!(reads.get(), 3, "named addresses never read again");
        assert_eq!(c.reads, 3);
    }

    /// A short run: the module was loaded after the first copy and the
    /// final report comes before REFRESH has passed; it still names the
    /// site, with one more read, and only one.
    #[test]
    fn final_report_reads_once_more_for_unnamed_sites() {
        let t0 = Instant::now();
        let (read, reads) = source(&[CORE, WITH_MODULE]);
        let mut c = SymbolCache::with_source(read, t0).unwrap();
        let (site, gone) = (0xffffffffc0000010, 0xffffffffe0000000);
        let soon = t0 + Duration::from_secs(1);
        assert_eq!(c.name_at(site, soon), "0xffffffffc0000010");
        c.refresh_before_final();
        assert_eq!(c.name_at(site, soon), "site_a+0x10 [trig]");
        assert_eq!(c.name_at(gone, soon), "0xffffffffe0000000");
        assert_eq!(
            reads.get(),
            2,
            "one read for the final report, not one per address"
        );
    }

    /// Addresses hidden (kptr_restrict: every copy empty): however many
    /// different addresses are asked for, kallsyms is read at most once
    /// per REFRESH.
    #[test]
    fn hidden_addresses_read_at_most_once_per_refresh() {
        let t0 = Instant::now();
        let hidden = "0000000000000000 T _stext\n";
        let (read, reads) = source(&[hidden]);
        let mut c = SymbolCache::with_source(read, t0).unwrap();
        for i in 0..1000u64 {
            let now = t0 + Duration::from_millis(i * 20);
            assert_eq!(
                c.name_at(0xffffffff81000000 + i, now),
                format!("{:#x}", 0xffffffff81000000u64 + i)
            );
        }
        // Just under 20 s of asking: the first read, then one per REFRESH
        // (at 5, 10 and 15 s).
        assert_eq!(reads.get() as u64, 1 + 19 / REFRESH.as_secs());
        assert_eq!(c.reads, reads.get() as u64);
    }

    /// An address unnamed in one copy is named from a newer copy read for
    /// another address, without a read of its own.
    #[test]
    fn negative_entries_are_looked_up_again_in_a_newer_copy() {
        let t0 = Instant::now();
        let (read, reads) = source(&[CORE, WITH_MODULE]);
        let mut c = SymbolCache::with_source(read, t0).unwrap();
        let (m1, m2) = (0xffffffffc0000001, 0xffffffffc0000002);
        assert_eq!(c.name_at(m1, t0), "0xffffffffc0000001");
        assert_eq!(c.name_at(m2, t0 + REFRESH), "site_a+0x2 [trig]");
        assert_eq!(c.name_at(m1, t0 + REFRESH), "site_a+0x1 [trig]");
        assert_eq!(reads.get(), 2);
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
        // Found by the globs fuzz target: the pattern's `*` was taken
        // for a literal where the name had a `*` at the same place.
        assert!(glob_match("xfs_*", "xfs_*uf_aarlloc"));
        assert!(glob_match("a*c", "a*bc"));
    }

    fn names(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    /// Found by the globs fuzz target in CI: a selected symbol at the top
    /// address, last in kallsyms, overflowed `addr + 1`.
    #[test]
    fn a_symbol_at_the_top_address_is_not_selected() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81200000 T __vmalloc_a\nffffffffffffffff T __vmalloc_top\n",
        );
        let pats = names(&["__vmalloc*"]);
        let sel = FunctionSelection {
            names: Some(Patterns::new(&pats)),
            modules: None,
        };
        assert_eq!(
            k.select(&sel),
            (vec![(0xffffffff81200000, 0xffffffffffffffff)], 1)
        );
        assert_eq!(k.extent("__vmalloc_top"), None);
        assert_eq!(
            k.extent("__vmalloc_a"),
            Some((0xffffffff81200000, 0xffffffffffffffff))
        );
    }

    #[test]
    fn adjacent_functions_merge_into_one_range() {
        let k = Kallsyms::parse(SAMPLE);
        let pats = names(&["__vmalloc*"]);
        let sel = FunctionSelection {
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
        let sel = FunctionSelection {
            names: None,
            modules: Some(&mods),
        };
        assert_eq!(
            k.ranges(&sel),
            vec![(0xffffffffc0000000, 0xffffffffc0000200)]
        );
        let pats = names(&["a_alias"]);
        let sel = FunctionSelection {
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
        let sel = FunctionSelection {
            names: Some(Patterns::new(&pats)),
            modules: Some(&mods),
        };
        assert_eq!(
            k.ranges(&sel),
            vec![(0xffffffffc0000100, 0xffffffffc0000200)]
        );
    }
}
