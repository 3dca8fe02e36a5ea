// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the running kernel offers nofail: BTF, traceable functions, kprobes.

use std::{collections::HashSet, sync::OnceLock};

use crate::kernel::{btf::KernelBtf, config::KernelConfig, symbols::Kallsyms};

/// A snapshot of the kernel facts the attach plan depends on.
#[derive(Debug, Default)]
pub struct KernelView {
    pub release: String,
    /// None when /sys/kernel/btf/vmlinux is missing or unreadable.
    pub btf: Option<KernelBtf>,
    /// Which of the attach tables' functions (attach::functions) the
    /// kernel has as code: kallsyms' text symbols, where a kprobe attaches
    /// (fentry also needs the function in BTF, checked when attaching). A
    /// function inlined into every caller is absent. From ftrace's list
    /// (`available_filter_functions`) only when kallsyms hides addresses:
    /// that list costs the kernel a symbol lookup per function (2.0 s under
    /// QEMU TCG on Debian's 7.2, of a 1-second `nofail trace`'s 7.2 s).
    /// None when neither is readable.
    pub traceable: Option<HashSet<String>>,
    /// aya's parse of the kernel's BTF, made on first use (fentry and
    /// fmod_ret attach by it): a kprobe-only run never pays for it.
    pub(crate) aya_btf_cell: OnceLock<Option<aya::Btf>>,
    /// The functions `traceable` was asked about.
    pub(crate) looked_up: Vec<&'static str>,
    /// The kprobe PMU exists (`CONFIG_KPROBES` and perf kprobe support).
    pub kprobes: bool,
    /// Preemption model in use (`none`, `voluntary`, `full`, `lazy`, `rt`):
    /// from /sys/kernel/debug/sched/preempt, else the command line's
    /// `preempt=`, else the build config's default; None when none says.
    pub preempt: Option<String>,
    /// Where `preempt` came from.
    pub preempt_source: Option<&'static str>,
    /// The build configuration (kernel/config.rs), read once.
    pub config: KernelConfig,
}

const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

impl KernelView {
    /// The running kernel, with `functions` (the attach tables') looked
    /// up in `kallsyms` (the session's one copy). Fails only when
    /// `$NOFAIL_KERNEL_CONFIG` names a file that cannot be read as a kernel
    /// config.
    pub fn probe(
        kallsyms: Option<&Kallsyms>,
        functions: Vec<&'static str>,
    ) -> anyhow::Result<Self> {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        let traceable = match kallsyms.filter(|k| k.has_addresses()) {
            Some(k) => Some(k.functions_among(functions.iter().copied())),
            None => TRACEFS.iter().find_map(|dir| {
                let text =
                    std::fs::read_to_string(format!("{dir}/available_filter_functions")).ok()?;
                Some(parse_filter_functions(&text))
            }),
        };
        Ok(Self {
            config: KernelConfig::load(&release)?,
            release,
            btf: KernelBtf::from_sys_fs().ok(),
            traceable,
            looked_up: functions,
            kprobes: std::path::Path::new("/sys/bus/event_source/devices/kprobe/type").exists(),
            ..Default::default()
        }
        .with_preempt())
    }

    /// aya's BTF of the running kernel, parsed once, on first use.
    pub fn aya_btf(&self) -> Option<&aya::Btf> {
        self.aya_btf_cell
            .get_or_init(|| aya::Btf::from_sys_fs().ok())
            .as_ref()
    }

    /// Is ftrace's function list readable (tracefs mounted, root)? One
    /// page of it is read, not the list.
    pub fn ftrace_list_readable() -> bool {
        use std::io::Read as _;
        TRACEFS.iter().any(|dir| {
            std::fs::File::open(format!("{dir}/available_filter_functions"))
                .and_then(|mut f| f.read(&mut [0u8; 64]))
                .is_ok_and(|n| n > 0)
        })
    }

    /// The preemption model: debugfs shows the one in force; without it
    /// (debugfs not mounted or not readable, as under lockdown) the
    /// command line's `preempt=` overrides the config's default under
    /// PREEMPT_DYNAMIC, and the config's choice is the model otherwise.
    /// Guessing none would let auto mode pick fentry on a kernel that
    /// preempts BPF programs and skips their runs.
    fn with_preempt(mut self) -> Self {
        let debugfs = std::fs::read_to_string("/sys/kernel/debug/sched/preempt")
            .ok()
            .and_then(|t| parse_preempt(&t));
        let cmdline = std::fs::read_to_string("/proc/cmdline")
            .ok()
            .and_then(|c| preempt_of_cmdline(&c));
        let config = || preempt_of_config(&self.config);
        (self.preempt, self.preempt_source) = match (debugfs, cmdline) {
            (Some(m), _) => (Some(m), Some("debugfs")),
            (None, Some(m)) => (Some(m), Some("kernel command line")),
            (None, None) => match config() {
                Some(m) => (Some(m), Some("kernel config")),
                None => (None, None),
            },
        };
        self
    }

    /// Whether a task can be preempted inside a BPF program. fentry/fexit
    /// programs run preemptibly; while one is preempted, the kernel skips
    /// every other run of it on that CPU (recursion protection), losing
    /// events. kprobe handlers run with preemption off.
    pub fn preempts_bpf(&self) -> bool {
        matches!(self.preempt.as_deref(), Some("full" | "lazy" | "rt"))
    }

    /// Can `function` be attached to at all (present and not inlined)?
    /// Only the attach tables' functions are looked up.
    pub fn is_traceable(&self, function: &str) -> bool {
        debug_assert!(
            self.traceable.is_none() || self.looked_up.contains(&function),
            "{function} was not looked up"
        );
        match &self.traceable {
            Some(set) => set.contains(function),
            // Without tracefs, BTF is the best evidence the symbol exists.
            None => self
                .btf
                .as_ref()
                .is_some_and(|b| b.funcs.contains_key(function)),
        }
    }

    pub fn has_btf_func(&self, function: &str) -> bool {
        self.btf
            .as_ref()
            .is_some_and(|b| b.funcs.contains_key(function))
    }

    /// `__GFP_NOFAIL` from BTF; 0x8000 (6.x/7.x) when BTF is absent.
    pub fn gfp_nofail(&self) -> u32 {
        self.btf
            .as_ref()
            .and_then(|b| b.gfp_flag("___GFP_NOFAIL_BIT"))
            .unwrap_or(0x8000)
    }
}

/// `preempt=full` on the kernel command line (PREEMPT_DYNAMIC).
fn preempt_of_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("preempt="))
        .map(str::to_string)
}

/// The build's preemption model (the default one under PREEMPT_DYNAMIC).
fn preempt_of_config(config: &KernelConfig) -> Option<String> {
    [
        ("CONFIG_PREEMPT_RT", "rt"),
        ("CONFIG_PREEMPT_LAZY", "lazy"),
        ("CONFIG_PREEMPT", "full"),
        ("CONFIG_PREEMPT_VOLUNTARY", "voluntary"),
        ("CONFIG_PREEMPT_NONE", "none"),
    ]
    .iter()
    .find(|(option, _)| config.enabled(option) == Some(true))
    .map(|(_, model)| model.to_string())
}

/// "none voluntary (full) lazy": the model in parentheses is the one in use.
fn parse_preempt(text: &str) -> Option<String> {
    let start = text.find('(')? + 1;
    let end = start + text[start..].find(')')?;
    Some(text[start..end].to_string())
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
    fn preempt_without_debugfs() {
        assert_eq!(
            preempt_of_cmdline("ro quiet preempt=full x").as_deref(),
            Some("full")
        );
        assert_eq!(preempt_of_cmdline("ro quiet"), None);
        let config = |text: &str| preempt_of_config(&KernelConfig::parse(text));
        assert_eq!(
            config("CONFIG_PREEMPT_DYNAMIC=y\nCONFIG_PREEMPT_LAZY=y\nCONFIG_PREEMPT_BUILD=y\n")
                .as_deref(),
            Some("lazy")
        );
        assert_eq!(
            config("CONFIG_PREEMPT_VOLUNTARY=y\n# CONFIG_PREEMPT is not set\n").as_deref(),
            Some("voluntary")
        );
        assert_eq!(config("CONFIG_HZ=250\n"), None);
    }

    #[test]
    fn preempt_model() {
        assert_eq!(
            parse_preempt("none voluntary full (lazy)\n").as_deref(),
            Some("lazy")
        );
        assert_eq!(
            parse_preempt("none (voluntary) full lazy").as_deref(),
            Some("voluntary")
        );
        assert_eq!(parse_preempt("garbage"), None);
        let view = KernelView {
            preempt: Some("lazy".into()),
            ..Default::default()
        };
        assert!(view.preempts_bpf());
        assert!(
            !KernelView {
                preempt: Some("voluntary".into()),
                ..Default::default()
            }
            .preempts_bpf()
        );
    }

    #[test]
    fn traceable_requires_listing() {
        let view = KernelView {
            traceable: Some(parse_filter_functions("__pmd_alloc\n")),
            looked_up: vec!["__pmd_alloc", "__pud_alloc"],
            ..Default::default()
        };
        assert!(view.is_traceable("__pmd_alloc"));
        assert!(!view.is_traceable("__pud_alloc"));
        assert_eq!(view.gfp_nofail(), 0x8000);
    }
}
