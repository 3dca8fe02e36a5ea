//! Kernel address → `symbol+0xoff` through /proc/kallsyms.

use anyhow::{Context as _, Result};

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
                format!("{name}+{:#x}", addr - base)
            }
        }
    }
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
    }

    #[test]
    fn hidden_addresses_are_detected() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 T foo\n");
        assert!(!k.has_addresses());
    }
}
