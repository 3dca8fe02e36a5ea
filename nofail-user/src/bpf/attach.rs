// SPDX-License-Identifier: MIT OR Apache-2.0
//! The attach plan: one declarative table of roles, each with candidate
//! kernel functions in order of preference (newest kernels first), resolved
//! against the running kernel.

use anyhow::{Result, bail};

use crate::{kernel::view::KernelView, model::inject::Stage};

/// Program names (in nofail-ebpf) implementing one role in each mode; a
/// role that only needs the entry or only the exit leaves the other empty.
#[derive(Debug)]
pub struct Programs {
    pub fentry: Option<&'static str>,
    pub fexit: Option<&'static str>,
    pub kprobe: Option<&'static str>,
    pub kretprobe: Option<&'static str>,
}

impl Programs {
    const fn exit_only(fexit: &'static str, kretprobe: &'static str) -> Self {
        Self {
            fentry: None,
            fexit: Some(fexit),
            kprobe: None,
            kretprobe: Some(kretprobe),
        }
    }

    const fn entry_only(fentry: &'static str, kprobe: &'static str) -> Self {
        Self {
            fentry: Some(fentry),
            fexit: None,
            kprobe: Some(kprobe),
            kretprobe: None,
        }
    }

    const fn kprobe_only(kprobe: &'static str) -> Self {
        Self {
            fentry: None,
            fexit: None,
            kprobe: Some(kprobe),
            kretprobe: None,
        }
    }

    /// No fentry/fexit program: the role is a kprobe in every mode.
    pub fn kprobe_only_role(&self) -> bool {
        self.fentry.is_none() && self.fexit.is_none()
    }

    const fn both(
        fentry: &'static str,
        fexit: &'static str,
        kprobe: &'static str,
        kretprobe: &'static str,
    ) -> Self {
        Self {
            fentry: Some(fentry),
            fexit: Some(fexit),
            kprobe: Some(kprobe),
            kretprobe: Some(kretprobe),
        }
    }
}

#[derive(Debug)]
pub struct Role {
    pub name: &'static str,
    /// Candidate functions, first match wins.
    pub candidates: &'static [&'static str],
    pub required: bool,
    /// What the report loses when an optional role cannot be attached.
    pub lost: &'static str,
    pub programs: Programs,
}

/// Every attach point nofail uses, per role, newest kernel's name first.
pub const ROLES: &[Role] = &[
    Role {
        name: "vmalloc-core",
        // 6.9+ renamed it for memory allocation profiling.
        candidates: &["__vmalloc_node_range_noprof", "__vmalloc_node_range"],
        required: true,
        lost: "every vmalloc call",
        programs: Programs::both(
            "vmalloc_core_fentry",
            "vmalloc_core_fexit",
            "vmalloc_core_kprobe",
            "vmalloc_core_kretprobe",
        ),
    },
    Role {
        name: "failure-report",
        // Every stage failure vmalloc reports, read from its message
        // (stages.rs); variadic, so a kprobe in every mode. Runs only when
        // an allocation failed.
        candidates: &["warn_alloc"],
        required: false,
        lost: "area-stage failures and mapping-stage failures of calls that give up",
        programs: Programs::kprobe_only("failure_report"),
    },
    Role {
        name: "pte-alloc",
        candidates: &["__pte_alloc_kernel"],
        required: false,
        lost: "PTE-level page-table failures",
        programs: Programs::exit_only("pte_alloc_fexit", "pte_alloc_kretprobe"),
    },
    Role {
        name: "pmd-alloc",
        candidates: &["__pmd_alloc"],
        required: false,
        lost: "PMD-level page-table failures",
        programs: Programs::exit_only("pmd_alloc_fexit", "pmd_alloc_kretprobe"),
    },
    Role {
        name: "pud-alloc",
        candidates: &["__pud_alloc"],
        required: false,
        lost: "PUD-level page-table failures",
        programs: Programs::exit_only("pud_alloc_fexit", "pud_alloc_kretprobe"),
    },
    Role {
        name: "p4d-alloc",
        candidates: &["__p4d_alloc"],
        required: false,
        lost: "P4D-level page-table failures (5-level paging only)",
        programs: Programs::exit_only("p4d_alloc_fexit", "p4d_alloc_kretprobe"),
    },
    Role {
        name: "retry-sleep",
        candidates: &["schedule_timeout_uninterruptible"],
        required: false,
        lost: "retry sleeps and slept time",
        programs: Programs::both(
            "retry_sleep_fentry",
            "retry_sleep_fexit",
            "retry_sleep_kprobe",
            "retry_sleep_kretprobe",
        ),
    },
    Role {
        name: "io-sleep",
        candidates: &["io_schedule_timeout"],
        required: false,
        lost: "sleeps of open-coded retry loops (memalloc_retry_wait)",
        programs: Programs::entry_only("io_sleep_fentry", "io_sleep_kprobe"),
    },
];

/// The stages, hooked by `nofail inject` only: their entry and exit scope
/// the injector to the stage it targets (`Inflight::stage`). Failures are
/// counted on the slow path in every command (the failure-report and
/// retry-sleep roles), so tracing alone never pays for these.
pub const STAGE_ROLES: &[Role] = &[
    Role {
        name: "area-stage",
        candidates: &["__get_vm_area_node"],
        required: true,
        lost: "injection into the area stage",
        programs: Programs::both(
            "area_stage_fentry",
            "area_stage_fexit",
            "area_stage_kprobe",
            "area_stage_kretprobe",
        ),
    },
    Role {
        name: "mapping-stage",
        // The NOFAIL mapping loop checks vmap_pages_range() (6.x) or
        // __vmap_pages_range() (7.x); both wrappers and vmap_pages_range_noflush
        // get inlined (Debian's 7.2 build calls __vmap_pages_range_noflush
        // straight from __vmalloc_node_range_noprof), so hook the worker all
        // of them end in, once per attempt, with the same return value.
        candidates: &["__vmap_pages_range_noflush", "vmap_pages_range_noflush"],
        required: true,
        lost: "injection into the mapping stage",
        programs: Programs::both(
            "mapping_stage_fentry",
            "mapping_stage_fexit",
            "mapping_stage_kprobe",
            "mapping_stage_kretprobe",
        ),
    },
];

/// `--what-if` (nofail-ebpf/src/whatif.rs): where vmap space is handed
/// back, attached the way vmalloc's core was.
pub const WHAT_IF_ROLES: &[Role] = &[Role {
    name: "vmap-free",
    // vfree()/vunmap() end here (static, so a kprobe or BTF fentry).
    candidates: &["free_vmap_area_noflush"],
    required: true,
    lost: "--what-if for the area stage",
    programs: Programs::entry_only("vmap_free_fentry", "vmap_free_kprobe"),
}];

/// The area stage's event-driven wait of a kernel built with
/// testing/patches/vmalloc-nofail-event-wait.patch, a retry sleep like
/// `schedule_timeout_uninterruptible`; attached where it exists (no
/// released kernel has it, so its absence is not reported).
pub const EVENT_WAIT_ROLES: &[Role] = &[Role {
    name: "event-wait",
    candidates: &["vmap_nofail_wait"],
    required: false,
    lost: "area-stage retry sleeps of the event-wait patch",
    programs: Programs::both(
        "event_wait_fentry",
        "event_wait_fexit",
        "event_wait_kprobe",
        "event_wait_kretprobe",
    ),
}];

/// `--what-if`: page frees (raw tracepoint `kmem:mm_page_free`), for the
/// mapping stage.
pub const PAGE_FREE_TP: &str = "mm_page_free";
pub const PAGE_FREE_PROGRAM: &str = "page_free";

/// A role of the tracepoint mode: a raw tracepoint and its program
/// (nofail-ebpf/src/tracepoints.rs).
#[derive(Debug)]
pub struct TracepointRole {
    pub name: &'static str,
    pub category: &'static str,
    pub event: &'static str,
    pub program: &'static str,
    /// What the role counts.
    pub sees: &'static str,
}

/// The tracepoint mode's attach points. All are required: without the vmap
/// area event there is no caller, without the timer events no retry.
pub const TRACEPOINT_ROLES: &[TracepointRole] = &[
    TracepointRole {
        name: "vmap-area",
        category: "vmalloc",
        event: "alloc_vmap_area",
        program: "vmap_area_tp",
        sees: "vmap areas per caller (calls that reach alloc_vmap_area) and the area failures it reports",
    },
    TracepointRole {
        name: "vmap-free",
        category: "vmalloc",
        event: "free_vmap_area_noflush",
        program: "vmap_free_tp",
        sees: "the end of a call whose area is freed by the same task (for telling the next call's retry stage)",
    },
    TracepointRole {
        name: "retry-timer",
        category: "timer",
        event: "timer_start",
        program: "sleep_start_tp",
        sees: "NOFAIL retry sleeps per caller and stage (schedule_timeout_uninterruptible called from vmalloc)",
    },
    TracepointRole {
        name: "sleep-end",
        category: "timer",
        event: "timer_cancel",
        program: "sleep_end_tp",
        sees: "time slept in those retry sleeps (timer start to expiry or deletion)",
    },
];

/// What the tracepoint mode cannot see, said in doctor, the report's
/// warnings and --help.
pub const TRACEPOINT_BLIND: &[&str] = &[
    "per-call latency and NOFAIL call counts (no hook at a call's entry or exit)",
    "calls that fail before alloc_vmap_area (the vm_struct allocation), unless they retry",
    "mapping-stage failures of plain calls and page-table failures per level (no trace left)",
    "NULL returns and open-coded retries (no hook sees a call return)",
    "injection (needs kprobes or fentry)",
];

/// Sentinel mode's one kprobe program, attached to each role's function
/// (it tells them apart by the probed address).
pub const SENTINEL_PROGRAM: &str = "sentinel_slow_path";

/// Sentinel mode's attach points (kprobes; nofail-ebpf/src/sentinel.rs).
pub const SENTINEL_ROLES: &[Role] = &[
    Role {
        name: "failure-report",
        candidates: &["warn_alloc"],
        required: true,
        lost: "stage failures and NULL returns",
        programs: Programs::kprobe_only(SENTINEL_PROGRAM),
    },
    Role {
        name: "retry-sleep",
        candidates: &["schedule_timeout_uninterruptible"],
        required: true,
        lost: "retry sleeps, slept time and mapping-stage retries",
        programs: Programs {
            fentry: None,
            fexit: None,
            kprobe: Some(SENTINEL_PROGRAM),
            kretprobe: Some("sentinel_sleep_ret"),
        },
    },
    Role {
        name: "io-sleep",
        candidates: &["io_schedule_timeout"],
        required: false,
        lost: "open-coded retries that sleep in memalloc_retry_wait",
        programs: Programs::kprobe_only(SENTINEL_PROGRAM),
    },
];

/// What sentinel mode does not count, said in doctor, the report's
/// warnings and --help.
pub const SENTINEL_BLIND: &[&str] = &[
    "call counts, NOFAIL call counts and latency (no hook runs for a call that does not fail)",
    "page-table failures per level",
    "NULLs vmalloc does not warn about (zero size, page allocation cut short by a fatal signal); a failed huge-page attempt that falls back to small pages counts as a NULL",
    "open-coded retries that do not sleep before calling again",
    "injection",
];

/// An error-injectable kernel function `nofail inject` overrides, and the
/// programs doing it (nofail-ebpf/src/inject.rs): a kprobe calling
/// bpf_override_return, or an fentry deciding plus the fmod_ret program
/// userspace assembles (fmodret.rs), named here.
#[derive(Debug)]
pub struct InjectHook {
    pub function: &'static str,
    /// The kernel option that makes `function` traceable for a kprobe.
    pub option: &'static str,
    pub kprobe: &'static str,
    pub decide: &'static str,
    pub fmod_ret: &'static str,
}

/// Area stage: the vm_struct/vmap_area slabs of `__get_vm_area_node`.
pub const AREA_INJECT: InjectHook = InjectHook {
    function: "should_failslab",
    option: "CONFIG_FAILSLAB",
    kprobe: "inject_failslab",
    decide: "decide_failslab",
    fmod_ret: "fmodret_slab",
};
/// Mapping stage: page-table pages inside `__vmap_pages_range_noflush`.
pub const MAPPING_INJECT: InjectHook = InjectHook {
    function: "should_fail_alloc_page",
    option: "CONFIG_FAIL_PAGE_ALLOC",
    kprobe: "inject_fail_page",
    decide: "decide_fail_page",
    fmod_ret: "fmodret_page",
};
/// Where a NULL surfaces in userspace as -ENOMEM (nofail-ebpf/src/syscall.rs):
/// tracepoint category, name, program.
pub const SYSCALL_EXIT: (&str, &str, &str) = ("raw_syscalls", "sys_exit", "syscall_exit");

/// A role matched to a function of the running kernel.
#[derive(Debug)]
pub struct Resolved {
    pub role: &'static Role,
    pub function: &'static str,
}

/// Resolves every role; a missing required role is an error, a missing
/// optional one comes back in the second list with what is lost.
pub fn resolve(view: &KernelView) -> Result<(Vec<Resolved>, Vec<&'static Role>)> {
    resolve_table(view, ROLES)
}

/// `resolve` for any table of roles (the full mode's, sentinel's).
pub fn resolve_table(
    view: &KernelView,
    roles: &'static [Role],
) -> Result<(Vec<Resolved>, Vec<&'static Role>)> {
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for role in roles {
        match role.candidates.iter().find(|f| view.is_traceable(f)) {
            Some(function) => found.push(Resolved { role, function }),
            None if role.required => bail!(
                "kernel {} has none of the functions nofail needs for {} ({}): cannot trace it",
                view.release,
                role.name,
                role.candidates.join(", ")
            ),
            None => missing.push(role),
        }
    }
    Ok((found, missing))
}

/// Every function a table above attaches to or injects at: what
/// `KernelView` looks up in kallsyms.
pub fn functions() -> impl Iterator<Item = &'static str> {
    [
        ROLES,
        STAGE_ROLES,
        WHAT_IF_ROLES,
        EVENT_WAIT_ROLES,
        SENTINEL_ROLES,
    ]
    .into_iter()
    .flatten()
    .flat_map(|r| r.candidates.iter().copied())
    .chain([AREA_INJECT.function, MAPPING_INJECT.function])
}

/// The error-injectable kernel function and the program overriding it
/// for a stage.
pub fn inject_hook(stage: Stage) -> &'static InjectHook {
    match stage {
        Stage::Area => &AREA_INJECT,
        Stage::Mapping => &MAPPING_INJECT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::view::KernelView;

    fn view(functions: &[&str]) -> KernelView {
        KernelView {
            release: "test".into(),
            traceable: Some(functions.iter().map(|s| s.to_string()).collect()),
            looked_up: super::functions().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn prefers_newest_name() {
        let (found, _) = resolve(&view(&[
            "__vmalloc_node_range_noprof",
            "__vmalloc_node_range",
        ]))
        .unwrap();
        assert_eq!(found[0].function, "__vmalloc_node_range_noprof");
    }

    #[test]
    fn falls_back_to_6_1_name() {
        let (found, _) = resolve(&view(&["__vmalloc_node_range"])).unwrap();
        assert_eq!(found[0].function, "__vmalloc_node_range");
    }

    #[test]
    fn sentinel_table_names_what_a_kernel_lacks() {
        let view = view(&["warn_alloc", "schedule_timeout_uninterruptible"]);
        let (found, missing) = resolve_table(&view, SENTINEL_ROLES).unwrap();
        let names: Vec<_> = found.iter().map(|r| r.function).collect();
        assert_eq!(names, ["warn_alloc", "schedule_timeout_uninterruptible"]);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "io-sleep");
        let err = resolve_table(&super::tests::view(&["warn_alloc"]), SENTINEL_ROLES)
            .unwrap_err()
            .to_string();
        assert!(err.contains("retry-sleep"), "{err}");
    }

    #[test]
    fn missing_required_role_is_an_error() {
        let err = resolve(&view(&["kmalloc"])).unwrap_err().to_string();
        assert!(err.contains("vmalloc-core"), "{err}");
    }
}
