//! What the running kernel offers nofail: BTF, traceable functions, kprobes.

use std::collections::HashSet;

use crate::btf::KernelBtf;

/// A snapshot of the kernel facts the attach plan depends on.
#[derive(Debug, Default)]
pub struct KernelView {
    pub release: String,
    /// None when /sys/kernel/btf/vmlinux is missing or unreadable.
    pub btf: Option<KernelBtf>,
    /// Functions ftrace can attach to (`available_filter_functions`); None
    /// when tracefs is not mounted. Inlined and `notrace` functions are
    /// absent even though BTF or kallsyms may still name them.
    pub traceable: Option<HashSet<String>>,
    /// The kprobe PMU exists (`CONFIG_KPROBES` and perf kprobe support).
    pub kprobes: bool,
}

const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

impl KernelView {
    pub fn probe() -> Self {
        Self {
            release: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            btf: KernelBtf::from_sys_fs().ok(),
            traceable: TRACEFS.iter().find_map(|dir| {
                let text =
                    std::fs::read_to_string(format!("{dir}/available_filter_functions")).ok()?;
                Some(parse_filter_functions(&text))
            }),
            kprobes: std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
        }
    }

    /// Can `function` be attached to at all (present and not inlined)?
    pub fn is_traceable(&self, function: &str) -> bool {
        match &self.traceable {
            Some(set) => set.contains(function),
            // Without tracefs, BTF is the best evidence the symbol exists.
            None => self
                .btf
                .as_ref()
                .is_some_and(|b| b.funcs.contains(function)),
        }
    }

    pub fn has_btf_func(&self, function: &str) -> bool {
        self.btf
            .as_ref()
            .is_some_and(|b| b.funcs.contains(function))
    }

    /// `__GFP_NOFAIL` from BTF; 0x8000 (6.x/7.x) when BTF is absent.
    pub fn gfp_nofail(&self) -> u32 {
        self.btf
            .as_ref()
            .and_then(|b| b.gfp_flag("___GFP_NOFAIL_BIT"))
            .unwrap_or(0x8000)
    }
}

/// One function per line, optionally followed by ` [module]`.
fn parse_filter_functions(text: &str) -> HashSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_functions_with_modules() {
        let set = parse_filter_functions("vmalloc\n__pmd_alloc\nxfs_buf_alloc [xfs]\n");
        assert!(set.contains("xfs_buf_alloc"));
        assert!(set.contains("__pmd_alloc"));
        assert_eq!(set.len(), 3);
    }

    #[test]
    fn traceable_requires_listing() {
        let view = KernelView {
            traceable: Some(parse_filter_functions("vmalloc\n")),
            ..Default::default()
        };
        assert!(view.is_traceable("vmalloc"));
        assert!(!view.is_traceable("__vmap_pages_range"));
        assert_eq!(view.gfp_nofail(), 0x8000);
    }
}
