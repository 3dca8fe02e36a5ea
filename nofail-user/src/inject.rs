// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail inject`: the tracer plus the injection programs, failing
//! sub-allocations only inside targeted stages of targeted calls, and the
//! report of how each caller copes.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, bail};
use aya::{
    maps::{Array, HashMap, PerCpuArray},
    programs::TracePoint,
};
use nofail_common::{
    EVENT_INJECTED, INJECT_COUNTERS, InjectCounter, InjectRule, STAGE_AREA, STAGE_MAPPING,
    SyscallKey,
};
use serde::{Deserialize, Serialize};

use crate::{
    attach::{AREA_INJECT, InjectHook, MAPPING_INJECT, Mode, SYSCALL_EXIT},
    cli::parse_duration,
    events,
    filter::FilterArgs,
    injector::{self, InjectMode},
    kconfig::KernelConfig,
    report::{CallerRow, InflightRow, Injection},
    session::{Session, Stop},
    tracer::one_line,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// `should_failslab` inside `__get_vm_area_node`.
    Area,
    /// `should_fail_alloc_page` inside the page-table mapping function.
    Mapping,
}

impl Stage {
    fn bit(self) -> u32 {
        match self {
            Stage::Area => STAGE_AREA,
            Stage::Mapping => STAGE_MAPPING,
        }
    }

    /// The error-injectable kernel function and the program overriding it
    /// (declared with the attach table).
    fn hook(self) -> &'static InjectHook {
        match self {
            Stage::Area => &AREA_INJECT,
            Stage::Mapping => &MAPPING_INJECT,
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Stage to fail (repeatable).
    #[arg(long = "stage", value_enum, required = true)]
    pub stages: Vec<Stage>,
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Only calls without __GFP_NOFAIL.
    #[arg(long, conflicts_with = "nofail_only")]
    pub no_nofail: bool,
    /// Chance that an eligible allocation fails (0 to 1).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_probability, default_value = "1")]
    pub probability: f64,
    /// Fail only every Nth eligible allocation.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: Option<u32>,
    /// Total failures to inject, then stop injecting.
    #[arg(long, allow_negative_numbers = true)]
    pub times: Option<u64>,
    /// Fail the first K attempts of each targeted call, then let it through.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub fail_first: Option<u32>,
    /// Never fail one call more than this many times in a row (so a NOFAIL
    /// loop always ends).
    #[arg(
        long,
        default_value_t = 50,
        allow_negative_numbers = true,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_consecutive: u32,
    /// How long to inject: 10s, 500ms, 2m.
    #[arg(long, short, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Count what would be failed, fail nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Attach mode of the tracer.
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    pub mode: Mode,
    /// How failures are injected: kprobe override or fmod_ret.
    #[arg(long, value_enum, default_value_t = InjectMode::Auto)]
    pub inject_mode: InjectMode,
    #[command(flatten)]
    pub outputs: crate::export::Outputs,
    /// Calls still in vmalloc after this long are flagged stuck.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub stuck_after: Duration,
    /// A call from the same site and task within this long after a NULL
    /// return counts as a retry by hand.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub retry_window: Duration,
    #[command(flatten)]
    pub events: crate::events::EventArgs,
}

pub fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "probability must be a number from 0 to 1, got {s:?}"
        )),
    }
}

impl InjectArgs {
    pub fn rule(&self) -> InjectRule {
        InjectRule {
            enabled: 1,
            stages: self.stages.iter().fold(0, |bits, s| bits | s.bit()),
            nofail: if self.filter.nofail_only {
                1
            } else if self.no_nofail {
                2
            } else {
                0
            },
            probability: if self.probability >= 1.0 {
                u32::MAX
            } else {
                (self.probability * u32::MAX as f64) as u32
            },
            every: self.every.unwrap_or(0),
            fail_first: self.fail_first.unwrap_or(0),
            max_consecutive: self.max_consecutive,
            dry_run: self.dry_run as u32,
            times: self.times.unwrap_or(u64::MAX),
        }
    }
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct InjectCounts {
    pub eligible: u64,
    pub injected: u64,
    pub skipped_budget: u64,
    pub skipped_guard: u64,
    pub skipped_selection: u64,
}

/// How one caller coped with the failures it was given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Behaviour {
    pub caller: String,
    pub nofail: bool,
    pub injected: u64,
    pub calls: u64,
    pub area_retries: u64,
    pub mapping_retries: u64,
    pub sleeps: u64,
    pub stall_ms: f64,
    pub max_stall_ms: f64,
    pub still_looping: u64,
    pub null_returned: u64,
    pub retried_by_hand: u64,
    pub retry_sleeps_by_hand: u64,
    /// NULL returns that became a system call failing with -ENOMEM, and
    /// which system calls.
    pub error_to_userspace: u64,
    pub syscalls: BTreeMap<String, u64>,
    /// NULL returns neither retried by hand nor handed to userspace within
    /// the window.
    pub absorbed: u64,
}

/// x86-64 system call names for the calls that commonly surface -ENOMEM.
fn syscall_name(nr: u32) -> String {
    let name = match nr {
        0 => "read",
        1 => "write",
        9 => "mmap",
        16 => "ioctl",
        54 => "setsockopt",
        56 => "clone",
        57 => "fork",
        59 => "execve",
        175 => "init_module",
        257 => "openat",
        313 => "finit_module",
        321 => "bpf",
        435 => "clone3",
        _ => return format!("syscall {nr}"),
    };
    name.to_string()
}

/// -ENOMEM system calls per call site address.
fn read_enomem(ebpf: &aya::Ebpf) -> Result<BTreeMap<u64, BTreeMap<String, u64>>> {
    let map: HashMap<_, SyscallKey, u64> = HashMap::try_from(
        ebpf.map("ENOMEM_SYSCALLS")
            .context("ENOMEM_SYSCALLS missing")?,
    )?;
    let mut out: BTreeMap<u64, BTreeMap<String, u64>> = BTreeMap::new();
    for entry in map.iter() {
        let (key, count) = entry?;
        *out.entry(key.caller)
            .or_default()
            .entry(syscall_name(key.nr))
            .or_default() += count;
    }
    Ok(out)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InjectRuleView {
    /// The mechanism used: "kprobe" or "fmod-ret".
    pub mechanism: InjectMode,
    pub stages: Vec<Stage>,
    pub probability: f64,
    pub every: Option<u32>,
    pub times: Option<u64>,
    pub fail_first: Option<u32>,
    pub max_consecutive: u32,
    pub dry_run: bool,
}

pub fn behaviour(
    callers: &[CallerRow],
    in_flight: &[InflightRow],
    enomem: &BTreeMap<u64, BTreeMap<String, u64>>,
) -> Vec<Behaviour> {
    callers
        .iter()
        .filter(|r| r.injected > 0)
        .map(|r| {
            let looping = in_flight.iter().filter(|f| f.caller == r.caller).count() as u64;
            let addr = u64::from_str_radix(r.address.trim_start_matches("0x"), 16).unwrap_or(0);
            let syscalls = enomem.get(&addr).cloned().unwrap_or_default();
            let to_user: u64 = syscalls.values().sum();
            Behaviour {
                caller: r.caller.clone(),
                nofail: r.nofail_calls > 0,
                injected: r.injected,
                calls: r.calls,
                area_retries: r.area_retries,
                mapping_retries: r.mapping_retries,
                sleeps: r.sleeps,
                stall_ms: r.slept_ns as f64 / 1e6,
                max_stall_ms: r.max_slept_ns as f64 / 1e6,
                still_looping: looping,
                null_returned: r.null_returns,
                retried_by_hand: r.open_coded_retries,
                retry_sleeps_by_hand: r.open_coded_retry_sleeps,
                error_to_userspace: to_user,
                syscalls,
                absorbed: r
                    .null_returns
                    .saturating_sub(r.open_coded_retries + to_user),
            }
        })
        .collect()
}

pub fn render_behaviour(counts: &InjectCounts, rows: &[Behaviour]) -> String {
    let mut out = format!(
        "injection: {} eligible, {} injected, skipped: {} by budget, {} by --max-consecutive, {} by selection\n",
        counts.eligible,
        counts.injected,
        counts.skipped_budget,
        counts.skipped_guard,
        counts.skipped_selection
    );
    if rows.is_empty() {
        out.push_str("(no caller received an injected failure)\n");
    }
    for b in rows {
        if b.nofail {
            out.push_str(&format!(
                "{} [NOFAIL]: {} failures injected; retries area {}, mapping {}; {} retry sleeps, stalled {:.1} ms (max {:.1} ms in one call); {} calls completed, {} still looping\n",
                b.caller, b.injected, b.area_retries, b.mapping_retries, b.sleeps, b.stall_ms, b.max_stall_ms, b.calls, b.still_looping
            ));
        } else {
            let syscalls: Vec<String> =
                b.syscalls.iter().map(|(n, c)| format!("{n} {c}")).collect();
            out.push_str(&format!(
                "{}: {} failures injected; NULL returned {}: retried by hand {} ({} sleeps), error to userspace {}{}, absorbed {}\n",
                b.caller,
                b.injected,
                b.null_returned,
                b.retried_by_hand,
                b.retry_sleeps_by_hand,
                b.error_to_userspace,
                if syscalls.is_empty() { String::new() } else { format!(" (-ENOMEM from {})", syscalls.join(", ")) },
                b.absorbed
            ));
        }
    }
    out
}

fn read_counts(ebpf: &aya::Ebpf) -> Result<InjectCounts> {
    let map: PerCpuArray<_, u64> =
        PerCpuArray::try_from(ebpf.map("INJECT_STATS").context("INJECT_STATS missing")?)?;
    let mut sums = [0u64; INJECT_COUNTERS as usize];
    for (i, sum) in sums.iter_mut().enumerate() {
        *sum = map.get(&(i as u32), 0)?.iter().sum();
    }
    Ok(InjectCounts {
        eligible: sums[InjectCounter::Eligible as usize],
        injected: sums[InjectCounter::Injected as usize],
        skipped_budget: sums[InjectCounter::SkippedBudget as usize],
        skipped_guard: sums[InjectCounter::SkippedGuard as usize],
        skipped_selection: sums[InjectCounter::SkippedSelection as usize],
    })
}

/// With the rule live, nofail makes a vmalloc of its own (a 1 MiB BPF
/// array map: `bpf_map_area_alloc` takes vmalloc above 32 KiB). The kernel
/// programs exclude nofail's process (SELF_TGID), so it must succeed
/// whatever the rule targets; if it fails, the guard is broken and nofail
/// stops (dropping the session detaches everything).
fn own_process_exempt() -> Result<()> {
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = 4096; // value_size
    attr[3] = 256; // max_entries
    // BPF_MAP_CREATE; the map is closed again right away.
    if let Err(e) = crate::sysbpf::bpf_fd(0, &mut attr) {
        bail!(
            "nofail's own 1 MiB allocation failed while injecting ({e}): the own-process guard did not hold; stopped"
        );
    }
    eprintln!("nofail: own-process guard checked: a 1 MiB vmalloc of nofail's own went through");
    Ok(())
}

pub async fn run(args: InjectArgs) -> Result<()> {
    let mut stop = Stop::listen()?;
    args.outputs.check()?;
    let hooks: Vec<&InjectHook> = args.stages.iter().map(|s| s.hook()).collect();
    // Every rule is checked before anything is loaded or attached.
    let mut mechanism = InjectMode::Auto;
    let events_json = args.events.open_json()?;
    let globals = args
        .events
        .globals(EVENT_INJECTED, args.retry_window, args.stuck_after);
    let mut session = Session::start(&args.filter, args.mode, globals, |view| {
        let config = KernelConfig::load(&view.release);
        mechanism = injector::choose(args.inject_mode, view, &config, &hooks)?;
        Ok(())
    })?;
    session.tracer.attach_stages(&session.view)?;
    let ebpf = &mut session.tracer.ebpf;
    let injecting = injector::attach(ebpf, mechanism, &hooks)?;
    let (category, name, program) = SYSCALL_EXIT;
    let exit: &mut TracePoint = ebpf
        .program_mut(program)
        .context("syscall_exit program missing")?
        .try_into()?;
    exit.load()
        .map_err(|e| anyhow::anyhow!("cannot load {program}: {}", one_line(&e)))?;
    exit.attach(category, name)
        .map_err(|e| anyhow::anyhow!("cannot attach to {category}:{name}: {}", one_line(&e)))?;
    let mut rule_map: Array<_, InjectRule> =
        Array::try_from(ebpf.map_mut("INJECT_RULE").context("INJECT_RULE missing")?)?;
    rule_map.set(0, args.rule(), 0)?;
    let mut events = args.events.stream(&mut session, events_json)?;
    session.tracer.announce();
    own_process_exempt()?;
    eprintln!(
        "nofail: injecting ({mechanism}) into {:?} for {:?}{} (Ctrl-C to stop early)",
        args.stages,
        args.duration,
        if args.dry_run { ", dry run" } else { "" }
    );
    let deadline = tokio::time::sleep(args.duration);
    tokio::pin!(deadline);
    let mut naming = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut deadline => break,
            _ = stop.signalled() => break,
            _ = naming.tick() => session.learn_names()?,
            ready = events::ready(&mut events) => {
                ready?;
                events::drain(&mut events, &session)?;
            }
        }
    }
    // Stop injecting before reading, so the numbers are final.
    let mut rule_map: Array<_, InjectRule> = Array::try_from(
        session
            .tracer
            .ebpf
            .map_mut("INJECT_RULE")
            .context("INJECT_RULE missing")?,
    )?;
    rule_map.set(0, InjectRule::default(), 0)?;
    let counts = read_counts(&session.tracer.ebpf)?;
    let enomem = read_enomem(&session.tracer.ebpf)?;
    let mut report = session.collect("inject", args.stuck_after)?;
    report.health.events = events::finish(events, &session)?;
    drop(injecting);
    drop(session);
    let behaviour = behaviour(&report.callers, &report.in_flight, &enomem);
    print!("{}", render_behaviour(&counts, &behaviour));
    report.injection = Some(Injection {
        rule: InjectRuleView {
            mechanism,
            stages: args.stages.clone(),
            probability: args.probability,
            every: args.every,
            times: args.times,
            fail_first: args.fail_first,
            max_consecutive: args.max_consecutive,
            dry_run: args.dry_run,
        },
        counts,
        behaviour,
    });
    args.outputs.write(&report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probability_bounds() {
        assert!(parse_probability("0").is_ok());
        assert!(parse_probability("1").is_ok());
        assert!(parse_probability("0.25").is_ok());
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("x").is_err());
    }

    #[test]
    fn empty_behaviour_says_so() {
        assert!(behaviour(&[], &[], &BTreeMap::new()).is_empty());
        assert_eq!(syscall_name(321), "bpf");
        assert_eq!(syscall_name(9999), "syscall 9999");
        let text = render_behaviour(&InjectCounts::default(), &[]);
        assert!(text.contains("no caller received an injected failure"));
    }
}
