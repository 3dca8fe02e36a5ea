// SPDX-License-Identifier: MIT OR Apache-2.0
//! The scenarios, each checking nofail's counts against a ground truth it
//! does not get from nofail: the trigger module's own counts and the
//! kernel's own fault injectors (failslab, fail_page_alloc, fail_function).

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::bpf;

use crate::{
    harness::{Ctx, Trace, expect_fields, field, pt_total, row},
    trigger::{self, Arm, Injector},
};

pub type Scenario = fn(&Ctx) -> Result<()>;

/// One row of the scenario table.
pub struct Case {
    pub name: &'static str,
    pub run: Scenario,
    /// It leaves the kernel unfit for others (a task spinning in it for
    /// good): xtask boots a VM for it alone.
    pub own_boot: bool,
    /// It needs systemd as PID 1 (the packaged service, Prometheus as a
    /// service): xtask boots one for it alone.
    pub systemd: bool,
    /// Kernel log records it expects (substrings), which the
    /// kernel-is-clean check lets through.
    pub kernel_warnings: &'static [&'static str],
    /// Reports it writes to the output directory that testing/reports
    /// keeps for the host tests (`cargo xtask vm-test --bless`).
    pub records: &'static [&'static str],
    /// The kernel patch it needs (`--kernel-patch`, the stem of the file
    /// xtask built the test kernel with): it runs on that variant only.
    /// None: it runs on unpatched kernels only (and on a patched one
    /// with `--also-unpatched`, unless `stock_only`).
    pub patch: Option<&'static str>,
    /// It asserts what only the stock loop does (a patched twin replaces
    /// it): `--also-unpatched` leaves it out.
    pub stock_only: bool,
    /// Kernel options it needs beyond those every run needs (`needs`).
    pub needs: Vec<&'static str>,
}

pub fn case(name: &'static str, run: Scenario) -> Case {
    Case {
        name,
        run,
        own_boot: false,
        systemd: false,
        kernel_warnings: &[],
        records: &[],
        patch: None,
        stock_only: false,
        needs: Vec::new(),
    }
}

impl Case {
    /// The kernel options of these groups (`needs`), each once.
    fn needs(mut self, groups: &[&[&'static str]]) -> Self {
        for option in groups.iter().copied().flatten() {
            if !self.needs.contains(option) {
                self.needs.push(option);
            }
        }
        self
    }
}

/// Kernel options scenarios need beyond what every run needs (the VM
/// runner, nofail's BPF object and the trigger module, which xtask checks
/// before it boots a kernel build tree a developer brought:
/// xtask/src/tree.rs). `cargo xtask vm-test --kernel DIR` skips the
/// scenarios naming an option DIR's .config lacks, and says which; the
/// test kernel has them all (`every_needed_option_is_in_the_test_kernel`).
mod needs {
    /// failslab through debugfs: fails the trigger's plain slab allocations.
    pub const FAILSLAB: &[&str] = &["CONFIG_FAILSLAB", "CONFIG_FAULT_INJECTION_DEBUG_FS"];
    /// fail_function on should_failslab (which CONFIG_FAILSLAB defines):
    /// fails a NOFAIL call's vm_struct allocation.
    pub const FAIL_FUNCTION: &[&str] = &[
        "CONFIG_FAIL_FUNCTION",
        "CONFIG_FAILSLAB",
        "CONFIG_FAULT_INJECTION_DEBUG_FS",
    ];
    /// fail_page_alloc through debugfs: fails the mapping stage's
    /// page-table pages.
    pub const FAIL_PAGE_ALLOC: &[&str] =
        &["CONFIG_FAIL_PAGE_ALLOC", "CONFIG_FAULT_INJECTION_DEBUG_FS"];
    /// `nofail inject` by kprobe and bpf_override_return (the options
    /// nofail-user/src/bpf/injector.rs names).
    pub const INJECT_KPROBE: &[&str] = &[
        "CONFIG_BPF_KPROBE_OVERRIDE",
        "CONFIG_FUNCTION_ERROR_INJECTION",
        "CONFIG_FAULT_INJECTION",
    ];
    /// fentry programs (BPF trampolines on the functions' ftrace sites).
    pub const FENTRY: &[&str] = &["CONFIG_FUNCTION_TRACER", "CONFIG_DYNAMIC_FTRACE"];
    /// `nofail inject --inject-mode fmod-ret`.
    pub const INJECT_FMOD_RET: &[&str] = &[
        "CONFIG_FUNCTION_ERROR_INJECTION",
        "CONFIG_FUNCTION_TRACER",
        "CONFIG_DYNAMIC_FTRACE",
    ];
    /// `nofail inject --stage area`: should_failslab.
    pub const AREA: &[&str] = &["CONFIG_FAILSLAB"];
    /// `nofail inject --stage mapping`: should_fail_alloc_page.
    pub const MAPPING: &[&str] = &["CONFIG_FAIL_PAGE_ALLOC"];
    /// XFS on a loop device.
    pub const XFS: &[&str] = &["CONFIG_XFS_FS", "CONFIG_BLK_DEV_LOOP"];
    /// ext4 on a loop device.
    pub const EXT4: &[&str] = &["CONFIG_EXT4_FS", "CONFIG_BLK_DEV_LOOP"];
    /// XFS's NOFAIL kvmalloc of a 16 KiB block: blocks larger than a page
    /// (large folios), fail_page_alloc limited by its stack filter.
    pub const XFS_NOFAIL_KVMALLOC: &[&str] = &[
        "CONFIG_TRANSPARENT_HUGEPAGE",
        "CONFIG_FAIL_PAGE_ALLOC",
        "CONFIG_FAULT_INJECTION_DEBUG_FS",
        "CONFIG_FAULT_INJECTION_STACKTRACE_FILTER",
    ];
    /// systemd as PID 1 over an overlay root (`Case::systemd`), and what the
    /// packaged unit's sandbox asks of the kernel: seccomp filters, cgroup
    /// BPF for its IP allow list, namespaces for its private mounts.
    pub const SYSTEMD: &[&str] = &[
        "CONFIG_OVERLAY_FS",
        "CONFIG_CGROUPS",
        "CONFIG_CGROUP_BPF",
        "CONFIG_INOTIFY_USER",
        "CONFIG_SIGNALFD",
        "CONFIG_TIMERFD",
        "CONFIG_EPOLL",
        "CONFIG_UNIX",
        "CONFIG_SECCOMP_FILTER",
        "CONFIG_NAMESPACES",
    ];
    /// The trigger module unloaded mid-run.
    pub const MODULE_UNLOAD: &[&str] = &["CONFIG_MODULE_UNLOAD"];
    /// `nofail doctor` as the test kernel's: injection supported both
    /// ways, HZ 250.
    pub const DOCTOR: &[&str] = &[
        "CONFIG_HZ_250",
        "CONFIG_BPF_KPROBE_OVERRIDE",
        "CONFIG_FUNCTION_ERROR_INJECTION",
        "CONFIG_FAULT_INJECTION",
        "CONFIG_FAILSLAB",
        "CONFIG_FAIL_PAGE_ALLOC",
    ];
}
use needs::*;

fn recording(name: &'static str, run: Scenario, records: &'static [&'static str]) -> Case {
    Case {
        records,
        ..case(name, run)
    }
}

/// The scenarios for a kernel from before vmalloc's NOFAIL loop.
pub fn predating_nofail() -> Vec<Case> {
    vec![case(
        "refused_on_older_kernel",
        crate::predates::refused_on_older_kernel,
    )]
}

/// The scenarios for a stock kernel, or with the trigger module for the
/// test kernel.
pub fn all(test_kernel: bool) -> Vec<Case> {
    let mut list = vec![
        case("bpf_array_map_calls_exact", bpf_array_map_calls_exact),
        case("doctor_matches_kernel", doctor_matches_kernel).needs(&[DOCTOR]),
        case(
            "tracepoint_mode_counts_maps",
            crate::tracepoint::counts_maps,
        ),
        case(
            "sentinel_silent_without_failures",
            crate::sentinel::silent_without_failures,
        ),
        case(
            "real_xfs_remote_xattrs_traced",
            crate::real::xfs_remote_xattrs_traced,
        )
        .needs(&[XFS]),
        case("real_ext4_filter_exact", crate::real::ext4_filter_exact).needs(&[EXT4]),
        case("every_way_of_stopping", every_way_of_stopping),
        case(
            "serve_scrape_on_every_kernel",
            crate::export::serve_scrape_on_every_kernel,
        ),
        case(
            "service_command_line_under_its_capabilities",
            crate::export::service_command_line_under_its_capabilities,
        ),
        // The package under systemd, as docs/install.md writes it.
        Case {
            systemd: true,
            ..case(
                "service_installed_as_written",
                crate::service::installed_as_written,
            )
        }
        .needs(&[SYSTEMD]),
        Case {
            systemd: true,
            ..case(
                "service_dropin_without_cap_sys_admin",
                crate::service::dropin_without_cap_sys_admin,
            )
        }
        .needs(&[SYSTEMD]),
        case(
            "wrap_exit_status_passes_through",
            crate::wrap::exit_status_passes_through,
        ),
        case(
            "wrap_signals_reach_the_command_first",
            crate::wrap::signals_reach_the_command_first,
        ),
        case(
            "wrap_command_only_counts_the_commands_maps",
            crate::wrap::command_only_counts_the_commands_maps,
        ),
    ];
    if !test_kernel {
        list.push(case(
            "inject_refused_without_injection_support",
            crate::inject::refused_without_injection_support,
        ));
    }
    if test_kernel {
        list.extend([
            case(
                "inject_bad_rules_attach_nothing",
                crate::inject::bad_rules_attach_nothing,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case(
                "inject_dry_run_fails_nothing",
                crate::inject::dry_run_fails_nothing,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case("wrap_gate_exits_3", crate::wrap::gate_exits_3).needs(&[INJECT_KPROBE, AREA]),
            case("trigger_sites_exact", trigger_sites_exact),
            Case {
                systemd: true,
                ..case(
                    "service_under_memory_pressure",
                    crate::pressure::service_under_pressure,
                )
            }
            .needs(&[SYSTEMD, FAILSLAB, FAIL_FUNCTION, FAIL_PAGE_ALLOC]),
            Case {
                systemd: true,
                ..case(
                    "service_alerts_fire_and_resolve",
                    crate::alerts::alerts_fire_and_resolve,
                )
            }
            .needs(&[SYSTEMD, FAIL_FUNCTION, FAIL_PAGE_ALLOC]),
            case(
                "tracepoint_mode_matches_full",
                crate::tracepoint::matches_full_mode,
            )
            .needs(&[FAIL_FUNCTION, FAIL_PAGE_ALLOC, FENTRY]),
            case("sentinel_matches_full", crate::sentinel::matches_full_mode).needs(&[
                FAILSLAB,
                FAIL_FUNCTION,
                FAIL_PAGE_ALLOC,
                FENTRY,
            ]),
            recording(
                "export_formats_from_live_run",
                crate::export::formats_from_live_run,
                &["export_live.json"],
            )
            .needs(&[FAIL_FUNCTION]),
            recording(
                "export_baseline_gate_on_recorded_runs",
                crate::export::baseline_gate_on_recorded_runs,
                &["export_base.json", "export_spin.json"],
            )
            .needs(&[FAIL_FUNCTION]),
            case(
                "nested_page_array_counted_once",
                nested_page_array_counted_once,
            )
            .needs(&[FAIL_FUNCTION]),
            case("area_stage_retries_exact", area_stage_retries_exact).needs(&[FAIL_FUNCTION]),
            case(
                "plain_vmalloc_fails_once_no_retry",
                plain_vmalloc_fails_once_no_retry,
            )
            .needs(&[FAILSLAB]),
            case(
                "open_coded_retry_loop_detected",
                open_coded_retry_loop_detected,
            )
            .needs(&[FAILSLAB]),
            case("filters_select_in_kernel", filters_select_in_kernel),
            case(
                "comm_filter_leaves_out_other_tasks",
                comm_filter_leaves_out_other_tasks,
            ),
            case("module_filter_exact", module_filter_exact),
            case("module_unload_keeps_names", module_unload_keeps_names).needs(&[MODULE_UNLOAD]),
            case(
                "full_caller_map_counted",
                crate::soak::full_caller_map_counted,
            ),
            case(
                "full_inflight_map_counted",
                crate::soak::full_inflight_map_counted,
            )
            .needs(&[FAIL_FUNCTION]),
            case("caller_ranges_at_scale", caller_ranges_at_scale),
            case("chains_exact", chains_exact).needs(&[FAIL_FUNCTION]),
            recording(
                "real_xfs_nofail_kvmalloc_fallback",
                crate::real::xfs_nofail_kvmalloc_fallback,
                &["real_xfs_nofail.json"],
            )
            .needs(&[XFS, XFS_NOFAIL_KVMALLOC]),
            case(
                "real_xfs_nofail_kvmalloc_injected",
                crate::real::xfs_nofail_kvmalloc_injected,
            )
            .needs(&[XFS, XFS_NOFAIL_KVMALLOC, INJECT_KPROBE, AREA]),
            recording(
                "real_xfs_inject_glob_retried_by_hand",
                crate::real::xfs_inject_glob_retried_by_hand,
                &["real_xfs_inject.json"],
            )
            .needs(&[XFS, INJECT_KPROBE, AREA]),
            case(
                "stuck_call_visible_while_looping",
                stuck_call_visible_while_looping,
            )
            .needs(&[FAIL_FUNCTION]),
            case("stress_8_threads_exact_kprobe", stress_kprobe),
            case("stress_8_threads_exact_fentry", stress_fentry).needs(&[FENTRY]),
            case(
                "inject_fail_first_area_exact",
                crate::inject::fail_first_area,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case(
                "inject_fail_first_mapping_exact",
                crate::inject::fail_first_mapping,
            )
            .needs(&[INJECT_KPROBE, MAPPING]),
            case(
                "inject_fail_first_area_exact_fmod_ret",
                crate::inject::fail_first_area_fmod_ret,
            )
            .needs(&[INJECT_FMOD_RET, AREA]),
            recording(
                "inject_fail_first_mapping_exact_fmod_ret",
                crate::inject::fail_first_mapping_fmod_ret,
                &["inject_fail_first_mapping_fmod-ret.json"],
            )
            .needs(&[INJECT_FMOD_RET, MAPPING]),
            case(
                "inject_times_one_plain_null",
                crate::inject::times_one_plain,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case(
                "inject_times_budget_exact_concurrent",
                crate::inject::times_budget_exact_concurrent,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case(
                "inject_own_process_exempt",
                crate::inject::own_process_exempt,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case("inject_retried_by_hand", crate::inject::retried_by_hand)
                .needs(&[INJECT_KPROBE, AREA]),
            case(
                "inject_guard_ends_nofail_loop",
                crate::inject::guard_ends_nofail_loop,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case("inject_kill_9_detaches", crate::inject::kill_9_detaches)
                .needs(&[INJECT_KPROBE, AREA]),
            case(
                "inject_kill_9_detaches_fmod_ret",
                crate::inject::kill_9_detaches_fmod_ret,
            )
            .needs(&[INJECT_FMOD_RET, AREA]),
            case(
                "inject_mapping_stage_plain",
                crate::inject::mapping_stage_plain,
            )
            .needs(&[INJECT_KPROBE, MAPPING]),
            case(
                "inject_bpf_map_error_to_userspace",
                crate::inject::bpf_map_error_to_userspace,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case("events_fail_first_lines", crate::events::fail_first_lines).needs(&[
                INJECT_KPROBE,
                AREA,
                INJECT_FMOD_RET,
                MAPPING,
            ]),
            case(
                "events_times_concurrent_tids",
                crate::events::times_concurrent_tids,
            )
            .needs(&[INJECT_KPROBE, AREA]),
            case("events_dropped_exact", crate::events::dropped_exact)
                .needs(&[INJECT_KPROBE, AREA]),
            case(
                "events_trace_each_retry_and_stuck",
                crate::events::trace_each_retry_and_stuck,
            )
            .needs(&[FAIL_FUNCTION]),
            case("events_off_removes_paths", crate::events::off_removes_paths)
                .needs(&[INJECT_KPROBE, AREA]),
            recording(
                "whatif_area_exhaustion_one_free",
                crate::whatif::area_exhaustion_one_free,
                &["whatif_area.json"],
            ),
            case(
                "whatif_area_exhaustion_irrelevant_frees",
                crate::whatif::area_exhaustion_irrelevant_frees,
            ),
            case(
                "whatif_mapping_page_frees",
                crate::whatif::mapping_page_frees,
            )
            .needs(&[FAIL_PAGE_ALLOC]),
            // The stock side of testing/patches/vmalloc-nofail-event-wait:
            // frees at set times after the first failure (timed_*.json).
            Case {
                stock_only: true,
                ..case("whatif_timed_area", crate::whatif::timed_area_stock)
            },
            Case {
                stock_only: true,
                ..case("whatif_timed_decoys", crate::whatif::timed_decoys_stock)
            },
            Case {
                stock_only: true,
                ..case("whatif_timed_mapping", crate::whatif::timed_mapping_any)
            }
            .needs(&[FAIL_PAGE_ALLOC]),
            case(
                "mapping_stage_failure_counted",
                mapping_stage_failure_counted,
            )
            .needs(&[FAIL_PAGE_ALLOC]),
            // Late: its minutes of churn map page tables across vmalloc
            // space that the mapping-stage scenarios above need fresh.
            case("serve_soak", crate::soak::serve_soak).needs(&[XFS]),
            // The WARN in vmap_pages_pte_range() of the NOFAIL mapping loop
            // that retries over PTEs it left behind is expected; the task
            // then spins until power-off, so it gets a kernel of its own.
            Case {
                own_boot: true,
                kernel_warnings: &["mm/vmalloc.c"],
                ..case(
                    "mapping_failure_after_partial_map_spins",
                    mapping_failure_after_partial_map_spins,
                )
            }
            .needs(&[FAIL_PAGE_ALLOC]),
            // The same loop seen by tracepoint mode alone (with the full
            // mode's kretprobe on the core attached too, the caller would
            // be hidden): the call stays in flight, flagged stuck.
            Case {
                own_boot: true,
                kernel_warnings: &["mm/vmalloc.c"],
                ..case(
                    "tracepoint_mode_keeps_stuck_call_in_flight",
                    crate::tracepoint::stuck_call_in_flight,
                )
            }
            .needs(&[FAIL_PAGE_ALLOC]),
            // The same call on the test kernel with the fix: one retry.
            Case {
                own_boot: true,
                patch: Some(crate::patched::UNWIND_PATCH),
                ..case(
                    "mapping_partial_map_patched_retries_once",
                    crate::patched::partial_map_retries_once,
                )
            }
            .needs(&[FAIL_PAGE_ALLOC]),
            // The same timed runs on the kernel with the event-driven wait.
            Case {
                patch: Some(crate::patched::EVENT_WAIT_PATCH),
                ..case(
                    "event_wait_area_woken_by_free",
                    crate::whatif::event_wait_area,
                )
            },
            Case {
                patch: Some(crate::patched::EVENT_WAIT_PATCH),
                ..case(
                    "event_wait_decoys_do_not_wake",
                    crate::whatif::event_wait_decoys,
                )
            },
            Case {
                patch: Some(crate::patched::EVENT_WAIT_PATCH),
                ..case(
                    "event_wait_mapping_keeps_jiffy",
                    crate::whatif::timed_mapping_any,
                )
            }
            .needs(&[FAIL_PAGE_ALLOC]),
        ]);
    }
    list
}

/// Runs on every kernel: exact calls, and no failure, retry or sleep.
fn bpf_array_map_calls_exact(ctx: &Ctx) -> Result<()> {
    const N: u64 = 7;
    // Before the trace: finding it creates a map.
    let caller = bpf::array_map_caller()?;
    let trace = Trace::start(ctx, "bpf_array_map", &[])?;
    for _ in 0..N {
        bpf::create_big_array_map()?;
    }
    let report = trace.finish()?;
    expect_fields(
        &report,
        caller,
        &[("calls", N), ("nofail_calls", 0), ("null_returns", 0)],
    )?;
    expect_fields(
        &report,
        caller,
        &[
            ("failures", 0),
            ("area_retries", 0),
            ("mapping_retries", 0),
            ("sleeps", 0),
            ("max_retries", 0),
        ],
    )
}

/// `nofail doctor --json` against what is known of each kernel: the core
/// role resolved and attached, `__GFP_NOFAIL` = bit 15, and injection
/// supported exactly on the test kernel (Debian's stock kernels lack
/// CONFIG_BPF_KPROBE_OVERRIDE: the verifier refuses bpf_override_return).
/// `nofail doctor --json` run under `wrapper` (a command and its
/// arguments before nofail's; none: nofail itself), its JSON read back
/// from `name` in the results and its text printed.
fn doctor(ctx: &Ctx, wrapper: &[&str], name: &str) -> Result<serde_json::Value> {
    let json = ctx.out.join(name);
    let mut cmd = match wrapper {
        [] => std::process::Command::new(&ctx.nofail),
        [program, args @ ..] => {
            let mut c = std::process::Command::new(program);
            c.args(args).arg(&ctx.nofail);
            c
        }
    };
    let out = cmd.args(["doctor", "--json"]).arg(&json).output()?;
    ensure!(
        out.status.success(),
        "doctor ({wrapper:?}) failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!(
        "{}",
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("  | {l}\n"))
            .collect::<String>()
    );
    Ok(serde_json::from_str(&std::fs::read_to_string(&json)?)?)
}

fn doctor_matches_kernel(ctx: &Ctx) -> Result<()> {
    let d = doctor(ctx, &[], "doctor.json")?;
    let core = d["roles"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["role"] == "vmalloc-core"))
        .context("no vmalloc-core role")?;
    ensure!(
        core["function"]
            .as_str()
            .is_some_and(|f| f.starts_with("__vmalloc_node_range")),
        "core role: {core}"
    );
    ensure!(core["mode"].is_string(), "core role not attachable: {core}");
    ensure!(
        d["gfp_nofail_mask"] == 0x8000,
        "__GFP_NOFAIL mask {} != 0x8000",
        d["gfp_nofail_mask"]
    );
    let test_kernel = ctx.trigger.is_some();
    ensure!(
        d["injection_supported"] == test_kernel,
        "injection_supported {} on {} kernel",
        d["injection_supported"],
        if test_kernel { "the test" } else { "a stock" }
    );
    ensure!(
        d["hz"] == "250",
        "HZ {} != 250 (Debian and the test kernel use 250)",
        d["hz"]
    );
    // The kernel's own config (passed in by xtask) is the ground truth.
    let override_opt = d["injection_options"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o[0] == "CONFIG_BPF_KPROBE_OVERRIDE"))
        .context("no CONFIG_BPF_KPROBE_OVERRIDE line")?;
    ensure!(
        override_opt[1] == test_kernel,
        "CONFIG_BPF_KPROBE_OVERRIDE reported {}",
        override_opt[1]
    );
    // vm-tests is built for the guest's architecture, as nofail is.
    ensure!(
        d["arch"] == std::env::consts::ARCH,
        "doctor says architecture {}",
        d["arch"]
    );
    let off = d["caller_off"]
        .as_u64()
        .context("doctor names no caller_off (kallsyms read as root)")?;
    let differences: Vec<&str> = d["arch_differences"]
        .as_array()
        .context("no arch_differences")?
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    if cfg!(target_arch = "x86_64") {
        ensure!(
            off == 24 && differences.is_empty(),
            "x86-64: caller_off {off}, differences {differences:?}"
        );
    } else {
        // A frame record of a few saved registers: a non-zero multiple of
        // 8 (0 is unread). Its exactness shows in the counts of the
        // tracepoint and sentinel scenarios, which read callers there.
        ensure!(
            off > 0 && off % 8 == 0 && off < 512,
            "caller_off {off}: vmalloc's core prologue not followed"
        );
        let said = format!("{off} bytes above the saved link register");
        ensure!(
            differences.iter().any(|l| l.contains(&said)),
            "doctor's differences do not say {said:?}: {differences:?}"
        );
        let kcore = std::path::Path::new("/proc/kcore").exists();
        ensure!(
            !kcore
                || differences
                    .iter()
                    .any(|l| l
                        .contains(&format!("{said}, from its prologue, read from /proc/kcore"))),
            "as root with /proc/kcore, doctor did not read it: {differences:?}"
        );
        // The two readers of the prologue agree: without CAP_SYS_RAWIO
        // (as under the packaged unit) /proc/kcore is refused and nofail
        // reads it through BPF. On a kernel without /proc/kcore (the test
        // kernel) both runs read through BPF.
        let d = doctor(
            ctx,
            &[
                "setpriv",
                "--bounding-set=-sys_rawio",
                "--inh-caps=-sys_rawio",
                "--",
            ],
            "doctor-no-rawio.json",
        )?;
        let by_bpf = format!("{said}, from its prologue, read through BPF");
        let lines = d["arch_differences"].to_string();
        ensure!(
            d["caller_off"].as_u64() == Some(off) && lines.contains(&by_bpf),
            "without CAP_SYS_RAWIO doctor says caller_off {} ({lines}), {off} with it",
            d["caller_off"]
        );
        println!(
            "  caller_off {off} from /proc/kcore{}, and {off} through BPF",
            if kcore {
                ""
            } else {
                " (absent: BPF both times)"
            }
        );
    }
    Ok(())
}

fn trigger_sites_exact(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "trigger_sites", &[])?;
    let a = trigger::run("vmalloc_nofail", 5, 64 << 10, Arm::Off)?;
    // 8 MiB is above the largest kmalloc, so kvmalloc always falls back to vmalloc.
    let b = trigger::run("kvmalloc_nofail", 4, 8 << 20, Arm::Off)?;
    let c = trigger::run("vmalloc", 6, 64 << 10, Arm::Off)?;
    let report = trace.finish()?;
    for r in [&a, &b, &c] {
        ensure!(r.null == 0, "trigger saw a NULL without injection: {r:?}");
    }
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[("calls", 5), ("nofail_calls", 5), ("null_returns", 0)],
    )?;
    expect_fields(
        &report,
        "site_kvmalloc_nofail",
        &[("calls", 4), ("nofail_calls", 4), ("null_returns", 0)],
    )?;
    expect_fields(
        &report,
        "site_vmalloc",
        &[("calls", 6), ("nofail_calls", 0), ("null_returns", 0)],
    )
}

/// 8 MiB needs a 16 KiB page array, itself vmalloc'ed from inside the call
/// (same caller, same task): one call each, and an injected area failure
/// of the outer call is one retry, not two.
fn nested_page_array_counted_once(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "nested", &[])?;
    trigger::run("vmalloc_nofail", 3, 8 << 20, Arm::Off)?;
    trigger::run_injected(Injector::ShouldFailslab, 1, "vmalloc_nofail", 1, 8 << 20)?;
    let report = trace.finish()?;
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[
            ("calls", 4),
            ("nofail_calls", 4),
            ("null_returns", 0),
            ("area_retries", 1),
            ("sleeps", 1),
            ("max_retries", 1),
        ],
    )
}

/// fail_function makes should_failslab() fail K times for the trigger's
/// task: the vm_struct allocation of a NOFAIL vmalloc fails K times, so its
/// area-stage loop must turn exactly K times, sleeping a jiffy each.
fn area_stage_retries_exact(ctx: &Ctx) -> Result<()> {
    const K: u64 = 3;
    ctx.load_trigger()?;
    let hz = trigger::hz()?;
    let trace = Trace::start(ctx, "area_stage", &[])?;
    let (run, left) =
        trigger::run_injected(Injector::ShouldFailslab, K, "vmalloc_nofail", 1, 64 << 10)?;
    let report = trace.finish()?;
    ensure!(run.null == 0, "a NOFAIL vmalloc returned NULL: {run:?}");
    ensure!(
        left == 0,
        "fail_function did not use its whole budget of {K}"
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[
            ("calls", 1),
            ("area_failures", K),
            ("area_retries", K),
            ("mapping_retries", 0),
            ("sleeps", K),
            ("sleep_jiffies", K),
            ("max_retries", K),
            ("null_returns", 0),
        ],
    )?;
    let slept = field(row(&report, "site_vmalloc_nofail")?, "slept_ns")?;
    let min = K * 1_000_000_000 / hz;
    ensure!(
        slept >= min,
        "slept {slept} ns < {K} jiffies ({min} ns at HZ={hz})"
    );
    Ok(())
}

/// fail_page_alloc fails the first page-table page of a NOFAIL vmalloc's
/// mapping stage, in address space no call used before: nothing is mapped
/// yet, so the loop turns exactly once and the call succeeds. nofail must
/// put that failure in the mapping stage, at one page-table level, with
/// one retry sleep.
fn mapping_stage_failure_counted(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "mapping_stage", &[])?;
    let finished = trigger::run_mapping_injected(64 << 10, 1, 0);
    let left = Injector::FailPageAlloc.remaining();
    Injector::FailPageAlloc.disarm()?;
    let report = trace.finish()?;
    let status = finished?.context("the NOFAIL call did not finish in 5 s")?;
    ensure!(status.success(), "trigger run failed: {status}");
    ensure!(
        left? == 0,
        "fail_page_alloc never failed the mapping stage's page-table page"
    );
    let r = row(&report, "site_vmalloc_nofail_fresh")?;
    let pt = pt_total(r)?;
    ensure!(
        pt == 1,
        "page-table failures {pt} != 1: {}",
        r["pt_failures"]
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail_fresh",
        &[
            ("calls", 1),
            ("nofail_calls", 1),
            ("mapping_failures", 1),
            ("mapping_retries", 1),
            ("area_failures", 0),
            ("sleeps", 1),
            ("null_returns", 0),
        ],
    )
}

/// A kernel behaviour nofail exists to show: a page-table page failing
/// after part of a NOFAIL call's range was mapped. fail_page_alloc lets
/// the first page-table pages of a 6 MiB call through (its fresh slot's
/// PMD page and the first 2 MiB of PTEs) and fails the next one; every
/// retry then finds those PTEs set (WARN in vmap_pages_pte_range, -EBUSY)
/// and sleeps again, for ever. nofail must show the call stuck, with
/// exactly one page-table failure and mapping failures that keep coming.
/// The task spins until power-off: the scenario table gives it a boot of
/// its own.
fn mapping_failure_after_partial_map_spins(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    trigger::prime_fresh_slot()?;
    let trace = Trace::start(ctx, "mapping_spin", &["--stuck-after", "500ms"])?;
    let report = trigger::spin_mapping_loop(|| trace.finish())?;
    let r = crate::harness::spinning_call(&report)?;
    let pt = pt_total(r)?;
    ensure!(
        pt == 1,
        "page-table failures {pt} != 1 (fail_page_alloc failed exactly one)"
    );
    Ok(())
}

/// The kernel's own failslab fails the first slab allocation of one plain
/// vmalloc (the vm_struct in __get_vm_area_node): one failure, no retry,
/// NULL to the caller.
fn plain_vmalloc_fails_once_no_retry(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "plain_fail", &[])?;
    let (failed, _) = trigger::run_injected(Injector::Failslab, 1, "vmalloc", 1, 64 << 10)?;
    let ok = trigger::run("vmalloc", 3, 64 << 10, Arm::Off)?;
    let report = trace.finish()?;
    ensure!(
        failed.null == 1 && ok.null == 0,
        "failslab did not fail exactly once: {failed:?} {ok:?}"
    );
    expect_fields(
        &report,
        "site_vmalloc",
        &[
            ("calls", 4),
            ("null_returns", 1),
            ("failures", 1),
            ("area_failures", 1),
            ("area_retries", 0),
            ("sleeps", 0),
        ],
    )
}

/// The trigger's hand-made loop (vmalloc, NULL, memalloc_retry_wait,
/// vmalloc again) with 2 injected failures: 2 open-coded retries, 2 sleeps.
fn open_coded_retry_loop_detected(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "open_coded", &[])?;
    let (run, _) = trigger::run_injected(Injector::Failslab, 2, "vmalloc_retry", 1, 64 << 10)?;
    let report = trace.finish()?;
    ensure!(
        run.retries == 2 && run.null == 0,
        "trigger did not retry twice: {run:?}"
    );
    expect_fields(
        &report,
        "site_vmalloc_retry",
        &[
            ("calls", 3),
            ("null_returns", 2),
            ("open_coded_retries", 2),
            ("open_coded_retry_sleeps", 2),
            ("area_retries", 0),
        ],
    )
}

/// --caller, --nofail-only, --min-size and --pid act in the kernel: calls
/// they exclude never reach the report.
fn filters_select_in_kernel(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let pid = std::process::id().to_string();
    let trace = Trace::start(
        ctx,
        "filters",
        &[
            "--caller",
            "site_*",
            "--nofail-only",
            "--min-size",
            "128K",
            "--pid",
            &pid,
            "--comm",
            "vm-tests",
        ],
    )?;
    trigger::run("vmalloc_nofail", 2, 64 << 10, Arm::Off)?; // too small
    trigger::run("vmalloc_nofail", 3, 256 << 10, Arm::Off)?; // selected
    trigger::run("vmalloc", 4, 256 << 10, Arm::Off)?; // not NOFAIL
    bpf::create_big_array_map()?; // caller outside site_*
    let report = trace.finish()?;
    let callers = report["callers"].as_array().map_or(0, |a| a.len());
    ensure!(
        callers == 1,
        "expected only site_vmalloc_nofail, got {callers} callers: {}",
        report["callers"]
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[("calls", 3), ("nofail_calls", 3)],
    )
}

/// --comm alone: the same call site run by a thread of another name is
/// left out, ours is counted; the entry reads the name only because the
/// filter asks for it (the thread's name is the kernel's comm).
fn comm_filter_leaves_out_other_tasks(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "comm", &["--comm", "vm-tests"])?;
    let (before, _) = trigger::totals()?;
    trigger::run("vmalloc", 3, 64 << 10, Arm::Off)?;
    std::thread::Builder::new()
        .name("other-task".into())
        .spawn(|| trigger::run("vmalloc", 5, 64 << 10, Arm::Off))?
        .join()
        .map_err(|_| anyhow::anyhow!("the other thread panicked"))??;
    let (after, _) = trigger::totals()?;
    ensure!(
        after - before == 8,
        "the trigger made {} calls, not 8",
        after - before
    );
    let report = trace.finish()?;
    expect_fields(&report, "site_vmalloc", &[("calls", 3)])
}

/// A NOFAIL call kept looping (~1 s of injected area failures) shows up in
/// the --interval view as stuck, with its task and caller, while it runs.
fn stuck_call_visible_while_looping(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let hz = trigger::hz()?;
    let turns = hz + hz / 2; // 1.5 s of one-jiffy sleeps
    let trace = Trace::start(
        ctx,
        "stuck",
        &["--interval", "250ms", "--stuck-after", "300ms"],
    )?;
    trigger::run_injected(
        Injector::ShouldFailslab,
        turns,
        "vmalloc_nofail",
        1,
        64 << 10,
    )?;
    std::thread::sleep(Duration::from_millis(300));
    let stdout = trace.stdout.clone();
    let report = trace.finish()?;
    let text = std::fs::read_to_string(&stdout)?;
    let stuck = text
        .lines()
        .find(|l| l.starts_with("STUCK") && l.contains("site_vmalloc_nofail"));
    ensure!(
        stuck.is_some(),
        "no STUCK line for site_vmalloc_nofail in the --interval output"
    );
    ensure!(
        stuck.unwrap().contains("vm-tests"),
        "stuck line does not name the task: {}",
        stuck.unwrap()
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[
            ("calls", 1),
            ("area_retries", turns),
            ("max_retries", turns),
        ],
    )
}

fn stress_kprobe(ctx: &Ctx) -> Result<()> {
    stress(ctx, "kprobe")
}

fn stress_fentry(ctx: &Ctx) -> Result<()> {
    stress(ctx, "fentry")
}

/// 8 threads × 10,000 calls at once through the trigger: nothing lost.
fn stress(ctx: &Ctx, mode: &str) -> Result<()> {
    const THREADS: u64 = 8;
    const CALLS: u64 = 10_000;
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, &format!("stress_{mode}"), &["--mode", mode])?;
    std::fs::write("/sys/kernel/debug/nofail_trigger/size", "8192")?;
    std::fs::write("/sys/kernel/debug/nofail_trigger/count", CALLS.to_string())?;
    std::fs::write("/sys/kernel/debug/nofail_trigger/fail", "0")?;
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            std::thread::spawn(|| {
                std::fs::write("/sys/kernel/debug/nofail_trigger/run", "vmalloc_nofail")
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("thread panicked"))?
            .context("trigger run")?;
    }
    let report = trace.finish()?;
    let health = &report["health"];
    ensure!(
        health["inflight_full"] == 0 && health["callers_full"] == 0,
        "nofail dropped calls: inflight_full {} callers_full {}",
        health["inflight_full"],
        health["callers_full"]
    );
    let truth = THREADS * CALLS;
    let seen = field(row(&report, "site_vmalloc_nofail")?, "calls")?;
    // Runs of the vmalloc-core programs the kernel skipped: a preempted
    // fentry program blocks its other runs on that CPU (kprobe handlers run
    // with preemption off and are not skipped this way).
    let core_missed: u64 = health["programs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            p["program"]
                .as_str()
                .is_some_and(|n| n.starts_with("vmalloc_core"))
        })
        .map(|p| field(p, "recursion_misses"))
        .sum::<Result<u64>>()?;
    if mode == "fentry" && core_missed > 0 {
        // Not exact on a preemptible kernel, but never silent: every lost
        // call is a skipped run nofail reports, and nothing counts twice.
        ensure!(seen <= truth, "counted {seen} calls of {truth}");
        ensure!(
            truth - seen <= core_missed,
            "lost {} calls but reported only {core_missed} skipped runs",
            truth - seen
        );
        println!("  (fentry: {seen} of {truth} calls seen, {core_missed} skipped runs reported)");
        return Ok(());
    }
    ensure!(
        health["missed_runs"] == 0,
        "kernel skipped {} program runs",
        health["missed_runs"]
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[
            ("calls", truth),
            ("nofail_calls", truth),
            ("null_returns", 0),
        ],
    )
}

/// `--chains 3` against the trigger's ground truth: the calls that matter
/// (NOFAIL, here 5 plain and one with 2 area failures from the kernel's
/// fail_function, and 4 kvmalloc NOFAIL fallbacks) are in chains that
/// start at their call site and go on into the trigger's `run_site`; the
/// 6 plain calls that went well are in no chain. Summed per caller, the
/// chains equal the caller rows.
fn chains_exact(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "chains", &["--chains", "3"])?;
    trigger::run("vmalloc_nofail", 5, 64 << 10, Arm::Off)?;
    let (inj, left) =
        trigger::run_injected(Injector::ShouldFailslab, 2, "vmalloc_nofail", 1, 64 << 10)?;
    trigger::run("vmalloc", 6, 64 << 10, Arm::Off)?;
    trigger::run("kvmalloc_nofail", 4, 8 << 20, Arm::Off)?;
    let report = trace.finish()?;
    ensure!(
        inj.retries == 0 && inj.null == 0 && left == 0,
        "fail_function: {inj:?}, {left} left"
    );
    // rows_of fails without the array: no "no chain" check below can pass
    // by accident.
    let of = |site: &str| crate::harness::rows_of(&report["chains"], site);
    for (site, calls, retries) in [
        ("site_vmalloc_nofail", 6, 2),
        ("site_kvmalloc_nofail", 4, 0),
    ] {
        let mine = of(site)?;
        let sum = |k: &str| nofail_test_support::json::sum(mine.iter().map(|c| &c["counts"]), k);
        ensure!(
            sum("calls")? == calls && sum("nofail_calls")? == calls,
            "{site}: chains {mine:?}"
        );
        ensure!(
            sum("area_retries")? == retries && sum("sleeps")? == retries,
            "{site}: chains {mine:?}"
        );
        let caller = row(&report, site)?["caller"].clone();
        for c in &mine {
            let frames: Vec<&str> = c["chain"]
                .as_array()
                .context("chain")?
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            ensure!(
                // run_site() is inlined into run_write() on the test kernel.
                frames.len() == 3
                    && frames[0] == caller
                    && (frames[1].starts_with("run_site+") || frames[1].starts_with("run_write+")),
                "{site}: chain {frames:?} (caller {caller})"
            );
        }
    }
    ensure!(
        of("site_vmalloc")?.is_empty(),
        "calls that went well got a chain"
    );
    expect_fields(&report, "site_vmalloc", &[("calls", 6)])?;
    ensure!(
        report["health"]["stacks_lost"] == 0 && report["health"]["chains_full"] == 0,
        "health {}",
        report["health"]
    );
    Ok(())
}

/// `--module nofail_trigger` selects the module's code and nothing else;
/// with `--caller site_vmalloc` only that function of the module.
fn module_filter_exact(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let whole = Trace::start(ctx, "module_whole", &["--module", "nofail_trigger"])?;
    let one = Trace::start(
        ctx,
        "module_one",
        &["--module", "nofail_trigger", "--caller", "site_vmalloc"],
    )?;
    trigger::run("vmalloc_nofail", 2, 64 << 10, Arm::Off)?;
    trigger::run("vmalloc", 3, 64 << 10, Arm::Off)?;
    bpf::create_big_array_map()?; // built-in caller: outside
    let one = one.finish()?;
    let whole = whole.finish()?;
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["callers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                c["caller"]
                    .as_str()
                    .unwrap_or("?")
                    .split('+')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    let mut w = names(&whole);
    w.sort();
    ensure!(
        w == ["site_vmalloc", "site_vmalloc_nofail"],
        "--module rows: {w:?}"
    );
    expect_fields(
        &whole,
        "site_vmalloc_nofail",
        &[("calls", 2), ("nofail_calls", 2)],
    )?;
    expect_fields(&whole, "site_vmalloc", &[("calls", 3)])?;
    ensure!(
        names(&one) == ["site_vmalloc"],
        "--module --caller rows: {:?}",
        names(&one)
    );
    expect_fields(&one, "site_vmalloc", &[("calls", 3)])
}

/// Every other function of the running kernel (tens of thousands of names
/// on the command line, as many separate address ranges as this kernel
/// allows), with two known call sites forced in and one forced out: the
/// in-kernel binary search selects exactly those, with exact counts.
fn caller_ranges_at_scale(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let text = std::fs::read_to_string("/proc/kallsyms")?;
    let mut funcs = nofail_test_support::kernel::kernel_functions(&text);
    funcs.dedup_by_key(|(a, _)| *a);
    // Only names that denote one function (static functions share names):
    // one name, one range.
    let count = nofail_test_support::kernel::name_counts(&text);
    let map_caller = bpf::array_map_caller()?;
    let (wanted, unwanted) = (["site_vmalloc_nofail", map_caller], "site_vmalloc");
    // Every other function: no two selected ones are adjacent, so each is
    // a range of its own; capped just below the limit.
    const LIMIT: usize = 32768;
    let every_other = |take: usize| -> std::collections::BTreeSet<&str> {
        let mut names: std::collections::BTreeSet<&str> = funcs
            .iter()
            .step_by(2)
            .map(|(_, n)| *n)
            .filter(|n| *n != unwanted && count.get(n) == Some(&1))
            .take(take)
            .collect();
        names.extend(wanted);
        names
    };
    let caller_args = |names: &std::collections::BTreeSet<&str>| -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut chunk = String::new();
        for n in names {
            if chunk.len() + n.len() > 100_000 {
                args.extend(["--caller".into(), std::mem::take(&mut chunk)]);
            }
            if !chunk.is_empty() {
                chunk.push(',');
            }
            chunk.push_str(n);
        }
        args.extend(["--caller".into(), chunk]);
        args
    };
    if funcs.len() / 2 > LIMIT + 64 {
        // Above the limit: one line, non-zero exit, before anything loads.
        let out = std::process::Command::new(&ctx.nofail)
            .args(["trace", "--duration", "1s"])
            .args(caller_args(&every_other(LIMIT + 32)))
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(1)
                && err.lines().count() == 1
                && err.contains(&format!("at most {LIMIT}")),
            "above the limit: {:?} {err}",
            out.status
        );
    }
    let names = every_other(LIMIT - 8);
    let args = caller_args(&names);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let trace = Trace::start(ctx, "ranges_at_scale", &refs)?;
    let ranges: u64 = trace
        .startup
        .iter()
        .find_map(|l| {
            l.split(" functions in ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .context("no selection line")?;
    println!(
        "  {} names, {ranges} address ranges of {} functions",
        names.len(),
        funcs.len()
    );
    let target = (funcs.len() / 2).min(LIMIT - 8) as u64;
    ensure!(
        ranges <= LIMIT as u64 && ranges * 10 >= target * 9,
        "{ranges} ranges for {target} names of every other function"
    );
    trigger::run("vmalloc_nofail", 2, 64 << 10, Arm::Off)?;
    trigger::run("vmalloc", 3, 64 << 10, Arm::Off)?;
    bpf::create_big_array_map()?;
    let report = trace.finish()?;
    expect_fields(&report, "site_vmalloc_nofail", &[("calls", 2)])?;
    expect_fields(&report, map_caller, &[("calls", 1)])?;
    for r in report["callers"].as_array().into_iter().flatten() {
        let f = r["caller"]
            .as_str()
            .unwrap_or("?")
            .split('+')
            .next()
            .unwrap_or("");
        ensure!(names.contains(f), "{f} counted but not selected");
    }
    Ok(())
}

/// A caller inside a module that is unloaded while nofail runs keeps the
/// name it had when first seen, module tag included.
fn module_unload_keeps_names(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let trace = Trace::start(ctx, "module_unload", &["--module", "nofail_trigger"])?;
    let (_, report) = trace.around(|| {
        trigger::run("vmalloc_nofail", 2, 64 << 10, Arm::Off)?;
        // nofail names call sites about once a second.
        std::thread::sleep(Duration::from_millis(2500));
        let name = c"nofail_trigger";
        let rc = unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK) };
        ensure!(
            rc == 0,
            "delete_module: {}",
            std::io::Error::last_os_error()
        );
        ensure!(
            !std::path::Path::new("/sys/module/nofail_trigger").exists(),
            "module still loaded"
        );
        Ok(())
    })?;
    // Back for the scenarios after this one.
    ctx.load_trigger()?;
    let r = row(&report, "site_vmalloc_nofail")?;
    ensure!(
        r["caller"]
            .as_str()
            .is_some_and(|c| c.ends_with(" [nofail_trigger]")),
        "caller name after unload: {}",
        r["caller"]
    );
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[("calls", 2), ("nofail_calls", 2)],
    )
}

/// Every way of stopping writes both outputs whole and detaches
/// everything: SIGTERM (systemd's stop), SIGINT sent twice in a row (a
/// second signal during the final write), the end of --duration; SIGHUP
/// is ignored. Ground truth: the kernel's program and map lists while
/// running and after, and the files parsed back.
fn every_way_of_stopping(ctx: &Ctx) -> Result<()> {
    let check_outputs =
        |name: &str, prom: &std::path::Path, before: &bpf::Snapshot| -> Result<()> {
            let json = ctx.out.join(format!("{name}.json"));
            let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json)?)
                .with_context(|| format!("{name}: JSON report"))?;
            ensure!(report["schema"] == "nofail-report", "{name}: {report}");
            let text = std::fs::read_to_string(prom)?;
            ensure!(
                text.starts_with("# HELP nofail_info") && text.ends_with('\n'),
                "{name}: Prometheus file"
            );
            let leftovers: Vec<_> = std::fs::read_dir(&ctx.out)?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
                .collect();
            ensure!(
                leftovers.is_empty(),
                "{name}: temporary files left: {leftovers:?}"
            );
            // Programs and maps are freed shortly after their last fd closes.
            let left = before.left_after(Duration::from_secs(2))?;
            ensure!(left.is_empty(), "{name}: left loaded: {left}");
            Ok(())
        };
    for (name, signals) in [
        ("stop_sigterm", &[libc::SIGTERM][..]),
        (
            "stop_sighup_then_sigint_twice",
            &[libc::SIGHUP, libc::SIGINT, libc::SIGINT][..],
        ),
    ] {
        let prom = ctx.out.join(format!("{name}.prom"));
        let before = bpf::Snapshot::take()?;
        let trace = Trace::start(ctx, name, &["--prometheus", prom.to_str().unwrap()])?;
        let attached = |what: &str| -> Result<()> {
            let running = before.created_since()?;
            ensure!(!running.programs.is_empty(), "{name}: {what}: {running}");
            Ok(())
        };
        attached("nothing attached")?;
        bpf::create_big_array_map()?;
        for &sig in signals {
            unsafe { libc::kill(trace.pid() as i32, sig) };
            if sig == libc::SIGHUP {
                std::thread::sleep(Duration::from_millis(500));
                attached("SIGHUP stopped nofail")?;
            }
        }
        let status = trace.wait()?;
        ensure!(status.success(), "{name}: {status}");
        check_outputs(name, &prom, &before)?;
    }
    let (json, prom) = (
        ctx.out.join("stop_duration.json"),
        ctx.out.join("stop_duration.prom"),
    );
    let before = bpf::Snapshot::take()?;
    let out = std::process::Command::new(&ctx.nofail)
        .args(["trace", "--duration", "2s", "--json"])
        .arg(&json)
        .arg("--prometheus")
        .arg(&prom)
        .output()?;
    ensure!(
        out.status.success(),
        "--duration: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_outputs("stop_duration", &prom, &before)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test kernel lacks nothing a scenario needs: every option named
    /// in the table is `=y` in testing/kernel.config (a misspelt option
    /// would make every developer's tree skip its scenarios).
    #[test]
    fn every_needed_option_is_in_the_test_kernel() {
        let fragment = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel.config"),
        )
        .unwrap();
        let mut named = 0;
        for case in all(true) {
            for option in &case.needs {
                assert!(
                    fragment.lines().any(|l| l == format!("{option}=y")),
                    "{}: {option} is not =y in testing/kernel.config",
                    case.name
                );
                named += 1;
            }
        }
        assert!(named > 40, "only {named} needs");
    }
}
