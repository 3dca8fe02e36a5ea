// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail doctor`: the attach plan as resolved on the running kernel, and
//! what the kernel offers for fault injection.

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::{
    bpf::{
        attach::{self, AREA_INJECT, MAPPING_INJECT, ROLES, TRACEPOINT_BLIND, TRACEPOINT_ROLES},
        injector, one_line,
        tracer::Tracer,
    },
    kernel::{arch, symbols::Kallsyms, view::KernelView},
    model::{Mode, inject::InjectMode},
};

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Attach mode to try.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
    /// Exit non-zero (1) when the plan cannot trace: a required role of
    /// the mode asked for cannot attach (for scripts and CI gates).
    #[arg(long)]
    pub strict: bool,
}

const GFP_BITS: [&str; 6] = [
    "___GFP_NOFAIL_BIT",
    "___GFP_NORETRY_BIT",
    "___GFP_RETRY_MAYFAIL_BIT",
    "___GFP_DIRECT_RECLAIM_BIT",
    "___GFP_KSWAPD_RECLAIM_BIT",
    "___GFP_NOWARN_BIT",
];

#[derive(Debug, Serialize)]
struct RoleLine {
    role: &'static str,
    required: bool,
    candidates: Vec<&'static str>,
    function: Option<&'static str>,
    in_btf: bool,
    mode: Option<String>,
    note: Option<String>,
}

#[derive(Debug, Serialize)]
struct Doctor {
    kernel: String,
    /// The architecture nofail was built for and traces.
    arch: &'static str,
    /// Where vmalloc's `caller` is read back from the stack (tracepoint
    /// and sentinel modes): bytes above the saved return address, 0 when
    /// unread; None when kallsyms hides addresses.
    caller_off: Option<u64>,
    /// What nofail does here otherwise than on x86-64, a line each.
    arch_differences: Vec<String>,
    btf: bool,
    /// The ftrace function list (`available_filter_functions`) is readable.
    ftrace_functions_readable: bool,
    kprobes: bool,
    preempt: Option<String>,
    /// "debugfs", "kernel command line" or "kernel config".
    preempt_source: Option<&'static str>,
    config_source: Option<String>,
    hz: Option<String>,
    gfp_bits: Vec<(&'static str, Option<i64>)>,
    /// The `__GFP_NOFAIL` mask nofail uses and where it came from.
    gfp_nofail_mask: u32,
    gfp_nofail_source: &'static str,
    roles: Vec<RoleLine>,
    injection_options: Vec<(&'static str, Option<bool>)>,
    override_return_loads: Result<(), String>,
    /// What each injection mechanism lacks here (empty: usable).
    kprobe_override_missing: Vec<String>,
    fmod_ret_missing: Vec<String>,
    injection_supported: bool,
    /// tracefs mounted (tracepoints listed under events/).
    tracefs_mounted: bool,
    /// The kernel lockdown mode in force, when securityfs shows it.
    lockdown: Option<String>,
    /// The attach plan in one line: mode and why.
    plan: String,
    /// Tracepoint mode: its roles, and what it cannot see.
    tracepoint_roles: Vec<TracepointLine>,
    blind: Vec<&'static str>,
}

#[derive(Debug, serde::Serialize)]
struct TracepointLine {
    role: &'static str,
    tracepoint: String,
    attached: bool,
    sees: &'static str,
}

/// `[integrity]` in "none [integrity] confidentiality".
/// Without securityfs, the kernel command line's `lockdown=`.
fn lockdown() -> Option<String> {
    let Ok(text) = std::fs::read_to_string("/sys/kernel/security/lockdown") else {
        let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
        let mode = cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix("lockdown="))?;
        return Some(format!("{mode} (kernel command line)"));
    };
    let start = text.find('[')? + 1;
    Some(text[start..start + text[start..].find(']')?].to_string())
}

pub fn run(args: DoctorArgs) -> Result<()> {
    let kallsyms = Kallsyms::load().ok();
    let view = KernelView::probe(kallsyms.as_ref(), attach::functions().collect())?;
    let attached = Tracer::attach(
        &view,
        kallsyms.as_ref(),
        args.mode,
        &Default::default(),
        &Default::default(),
    );
    let roles = role_lines(&view, &attached);
    let plan = Plan::of(args.mode, &attached);
    let tracepoint_roles = TRACEPOINT_ROLES
        .iter()
        .map(|r| TracepointLine {
            role: r.name,
            tracepoint: format!("{}:{}", r.category, r.event),
            attached: matches!(&attached, Ok(t) if t.attached.iter().any(|a| a.role == r.name)),
            sees: r.sees,
        })
        .collect();
    let cannot_trace = attached.as_ref().err().map(|e| one_line(&format!("{e:#}")));
    let call_frame = attached.as_ref().ok().and_then(|t| t.call_frame);
    // Detached before the injection probe loads the object again.
    drop(attached);
    let injection = Injection::of(&view);
    let doctor = Doctor {
        kernel: view.release.clone(),
        arch: arch::NAME,
        caller_off: call_frame.map(|f| f.caller_off),
        arch_differences: arch::differences(call_frame),
        btf: view.btf.is_some(),
        ftrace_functions_readable: KernelView::ftrace_list_readable(),
        kprobes: view.kprobes,
        preempt: view.preempt.clone(),
        preempt_source: view.preempt_source,
        config_source: view.config.source.clone(),
        hz: view.config.value("CONFIG_HZ").map(str::to_string),
        gfp_bits: GFP_BITS
            .iter()
            .map(|b| {
                (
                    *b,
                    view.btf
                        .as_ref()
                        .and_then(|btf| btf.enumerators.get(*b).copied()),
                )
            })
            .collect(),
        gfp_nofail_mask: view.gfp_nofail(),
        gfp_nofail_source: if view
            .btf
            .as_ref()
            .and_then(|b| b.gfp_flag("___GFP_NOFAIL_BIT"))
            .is_some()
        {
            "BTF enum ___GFP_NOFAIL_BIT"
        } else {
            "default 0x8000 (no ___GFP_*_BIT enum in BTF: before 6.8 the bits are macros)"
        },
        roles,
        injection_options: injection.options,
        override_return_loads: injection.override_return_loads,
        kprobe_override_missing: injection.kprobe_override_missing,
        fmod_ret_missing: injection.fmod_ret_missing,
        injection_supported: injection.supported,
        tracefs_mounted: std::path::Path::new("/sys/kernel/tracing/events").exists()
            || std::path::Path::new("/sys/kernel/debug/tracing/events").exists(),
        lockdown: lockdown(),
        plan: plan.line,
        tracepoint_roles,
        blind: if plan.tracepoint {
            TRACEPOINT_BLIND.to_vec()
        } else if plan.sentinel {
            crate::bpf::attach::SENTINEL_BLIND.to_vec()
        } else {
            Vec::new()
        },
    };
    crate::output::stdout::print(&render(&doctor))?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&doctor)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let (true, Some(why)) = (args.strict, cannot_trace) {
        anyhow::bail!("--strict: {} mode cannot trace here: {why}", args.mode);
    }
    Ok(())
}

/// A line per role of the full mode: the function it would attach to,
/// how it attached (or why not).
fn role_lines(view: &KernelView, attached: &Result<Tracer>) -> Vec<RoleLine> {
    ROLES
        .iter()
        .map(|role| {
            let function = role
                .candidates
                .iter()
                .copied()
                .find(|f| view.is_traceable(f));
            let (mode, note) = match (attached, function) {
                (_, None) => (
                    None,
                    Some(format!("none present or traceable: {} not seen", role.lost)),
                ),
                (Ok(t), Some(_)) => match t.attached.iter().find(|a| a.role == role.name) {
                    Some(a) => (
                        Some(a.mode.to_string()),
                        a.fallback_reason.as_ref().map(|r| format!("fentry {r}")),
                    ),
                    None => (
                        None,
                        t.warnings
                            .iter()
                            .find(|w| w.starts_with(role.name))
                            .cloned(),
                    ),
                },
                (Err(e), Some(_)) => (None, Some(one_line(&format!("{e:#}")))),
            };
            RoleLine {
                role: role.name,
                required: role.required,
                candidates: role.candidates.to_vec(),
                function,
                in_btf: function.is_some_and(|f| view.has_btf_func(f)),
                mode,
                note,
            }
        })
        .collect()
}

/// The attach plan in one line, and which reduced mode it is in.
struct Plan {
    line: String,
    tracepoint: bool,
    sentinel: bool,
}

impl Plan {
    fn of(mode: Mode, attached: &Result<Tracer>) -> Self {
        let sentinel = mode == Mode::Sentinel && attached.is_ok();
        let tracepoint = !sentinel && matches!(attached, Ok(t) if !t.sees_every_call());
        let line = match attached {
            Ok(t) => {
                let modes: std::collections::BTreeSet<String> =
                    t.attached.iter().map(|a| a.mode.to_string()).collect();
                let why = t.attached.iter().find_map(|a| a.fallback_reason.clone());
                match why {
                    Some(w) if tracepoint => format!("tracepoint (auto: {w})"),
                    Some(w) => format!("{} (fentry {w})", Vec::from_iter(modes).join("+")),
                    None => Vec::from_iter(modes).join("+"),
                }
            }
            Err(e) => format!("cannot trace: {}", one_line(&format!("{e:#}"))),
        };
        Self {
            line,
            tracepoint,
            sentinel,
        }
    }
}

/// What the kernel offers fault injection.
struct Injection {
    options: Vec<(&'static str, Option<bool>)>,
    override_return_loads: Result<(), String>,
    kprobe_override_missing: Vec<String>,
    fmod_ret_missing: Vec<String>,
    supported: bool,
}

impl Injection {
    fn of(view: &KernelView) -> Self {
        let config = &view.config;
        let hooks = [&AREA_INJECT, &MAPPING_INJECT];
        let kprobe_override_missing = injector::missing(InjectMode::Kprobe, view, config, &hooks);
        let fmod_ret_missing = injector::missing(InjectMode::FmodRet, view, config, &hooks);
        Self {
            options: injector::KPROBE_OPTIONS
                .iter()
                .chain([&AREA_INJECT.option, &MAPPING_INJECT.option])
                .map(|o| (*o, config.enabled(o)))
                .collect(),
            override_return_loads: injector::probe_override_return(),
            supported: kprobe_override_missing.is_empty() || fmod_ret_missing.is_empty(),
            kprobe_override_missing,
            fmod_ret_missing,
        }
    }
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

/// The whole report, section by section.
fn render(d: &Doctor) -> String {
    [
        render_kernel(d),
        render_roles(d),
        render_blind(d),
        render_injection(d),
    ]
    .concat()
}

/// The kernel line, the plan, HZ and the gfp bits.
fn render_kernel(d: &Doctor) -> String {
    let mut out = format!(
        "kernel {}: BTF {}, tracefs {}, ftrace functions {}, kprobes {}, lockdown {}, preempt {}, config {}\n",
        d.kernel,
        yes_no(Some(d.btf)),
        if d.tracefs_mounted {
            "mounted"
        } else {
            "not mounted"
        },
        yes_no(Some(d.ftrace_functions_readable)),
        yes_no(Some(d.kprobes)),
        d.lockdown.as_deref().unwrap_or("unknown"),
        match (&d.preempt, d.preempt_source) {
            (Some(m), Some(from)) => format!("{m} ({from})"),
            _ => "unknown".to_string(),
        },
        d.config_source.as_deref().unwrap_or("not found")
    );
    out.push_str(&format!("plan: {}\n", d.plan));
    if d.arch_differences.is_empty() {
        out.push_str(&format!("architecture: {}\n", d.arch));
    } else {
        out.push_str(&format!(
            "architecture: {}, otherwise than on x86-64:\n",
            d.arch
        ));
        for l in &d.arch_differences {
            out.push_str(&format!("  {l}\n"));
        }
    }
    out.push_str(&format!(
        "HZ {}\n",
        d.hz.as_deref().unwrap_or("unknown (no kernel config)")
    ));
    let bits: Vec<String> = d
        .gfp_bits
        .iter()
        .map(|(n, v)| {
            format!(
                "{}={}",
                n.trim_start_matches("___GFP_").trim_end_matches("_BIT"),
                v.map_or("?".into(), |v| format!("{:#x}", 1u64 << v))
            )
        })
        .collect();
    out.push_str(&format!("gfp bits (BTF): {}\n", bits.join(" ")));
    out.push_str(&format!(
        "__GFP_NOFAIL used: {:#x} from {}\n\n",
        d.gfp_nofail_mask, d.gfp_nofail_source
    ));
    out
}

/// The roles of the full mode, a note shared by several said once below.
fn render_roles(d: &Doctor) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<14} {:<34} {:<7} {}\n",
        "ROLE", "FUNCTION", "MODE", "NOTE"
    ));
    // A note shared by several roles (one fallback reason for all) is
    // printed once, below the table, and referenced by number.
    let mut notes: Vec<&str> = Vec::new();
    for r in &d.roles {
        let note = match r.note.as_deref() {
            Some(n)
                if d.roles
                    .iter()
                    .filter(|o| o.note.as_deref() == Some(n))
                    .count()
                    > 1 =>
            {
                let i = notes.iter().position(|x| *x == n).unwrap_or_else(|| {
                    notes.push(n);
                    notes.len() - 1
                });
                format!("[{}]", i + 1)
            }
            Some(n) => n.to_string(),
            None if r.required => "required".to_string(),
            None => String::new(),
        };
        out.push_str(&format!(
            "{:<14} {:<34} {:<7} {}\n",
            r.role,
            r.function.unwrap_or("-"),
            r.mode.as_deref().unwrap_or("-"),
            note
        ));
    }
    for (i, n) in notes.iter().enumerate() {
        out.push_str(&format!("[{}] {n}\n", i + 1));
    }
    out
}

/// What the reduced mode the plan chose does not see.
fn render_blind(d: &Doctor) -> String {
    let mut out = String::new();
    if !d.blind.is_empty() && d.plan.starts_with("sentinel") {
        out.push_str("\nnot counted in sentinel mode:\n");
        for b in &d.blind {
            out.push_str(&format!("  - {b}\n"));
        }
    } else if !d.blind.is_empty() {
        out.push_str("\ntracepoint mode:\n");
        for t in &d.tracepoint_roles {
            out.push_str(&format!(
                "{:<14} {:<34} {:<7} {}\n",
                t.role,
                t.tracepoint,
                if t.attached { "yes" } else { "no" },
                t.sees
            ));
        }
        out.push_str("not seen in this mode:\n");
        for b in &d.blind {
            out.push_str(&format!("  - {b}\n"));
        }
    }
    out
}

/// What each injection mechanism needs, and whether one is usable.
fn render_injection(d: &Doctor) -> String {
    let mut out = String::new();
    out.push_str("\ninjection:\n");
    for (opt, on) in &d.injection_options {
        out.push_str(&format!("  {opt:<34} {}\n", yes_no(*on)));
    }
    out.push_str(&format!(
        "  bpf_override_return             {}\n",
        match &d.override_return_loads {
            Ok(()) => "accepted by the verifier".to_string(),
            Err(e) => format!("refused ({e})"),
        }
    ));
    for (name, missing) in [
        ("kprobe override", &d.kprobe_override_missing),
        ("fmod_ret", &d.fmod_ret_missing),
    ] {
        out.push_str(&format!(
            "  {name:<34} {}\n",
            if missing.is_empty() {
                "usable".to_string()
            } else {
                format!("lacks {}", missing.join(", "))
            }
        ));
    }
    out.push_str(&format!(
        "  => fault injection {}\n",
        if d.injection_supported {
            "supported"
        } else {
            "NOT supported on this kernel: use the test kernel (cargo xtask vm --kernel test)"
        }
    ));
    out
}
