// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail inject`: the tracer plus the injection programs, failing
//! sub-allocations only inside targeted stages of targeted calls, and the
//! report of how each caller copes.

use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use aya::{maps::Array, programs::TracePoint};
use nofail_common::{EVENT_INJECTED, InjectRule, map_names};

use crate::{
    bpf::{
        attach::{InjectHook, SYSCALL_EXIT, inject_hook},
        injector, maps, one_line,
        session::Session,
    },
    cmd::{
        carry_on,
        flags::{FilterArgs, LiveArgs, Outputs, parse_duration},
        follow::{EventArgs, follow},
        gate::GateArgs,
        signals::Stop,
        wrap::{CommandArgs, Ending, Prepared, Running, finish},
    },
    model::{
        coping::behaviour,
        filter::CallSelection,
        inject::{InjectMode, InjectRuleView, Injection, Stage},
    },
    output::text::render_behaviour,
};

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
    /// Chance that an eligible allocation fails (above 0, at most 1).
    #[arg(long, allow_negative_numbers = true, value_parser = parse_probability, default_value = "1")]
    pub probability: f64,
    /// Fail only every Nth eligible allocation.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..))]
    pub every: Option<u32>,
    /// Total failures to inject, then stop injecting.
    #[arg(long, allow_negative_numbers = true, value_parser = clap::value_parser!(u64).range(1..))]
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
    /// How long to inject: 10s, 500ms, 2m [default: 10s; with a COMMAND,
    /// until it exits].
    #[arg(long, short, value_parser = parse_duration, conflicts_with = "command")]
    pub duration: Option<Duration>,
    /// Count what would be failed, fail nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// How failures are injected: kprobe override or fmod_ret.
    #[arg(long, value_enum, default_value_t = InjectMode::Auto)]
    pub inject_mode: InjectMode,
    #[command(flatten)]
    pub outputs: Outputs,
    #[command(flatten)]
    pub live: LiveArgs,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub gates: GateArgs,
    #[command(flatten)]
    pub wrapped: CommandArgs,
}

/// How long `inject` runs without `--duration` or a command.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Above 0 (a rule that never fails anything is a `--dry-run`), at most 1.
pub fn parse_probability(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(p) if p > 0.0 && p <= 1.0 => Ok(p),
        _ => Err(format!(
            "probability must be a number from 0 to 1, 0 excluded, got {s:?}"
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
            // The kernel fails when a random u32 is below this: any
            // probability above 0 keeps a threshold above 0 (below 2^-32
            // it rounded to 0, a rule that never failed anything).
            probability: if self.probability >= 1.0 {
                u32::MAX
            } else {
                ((self.probability * u32::MAX as f64) as u32).max(1)
            },
            every: self.every.unwrap_or(0),
            fail_first: self.fail_first.unwrap_or(0),
            max_consecutive: self.max_consecutive,
            dry_run: self.dry_run as u32,
            times: self.times.unwrap_or(u64::MAX),
        }
    }
}

/// The value area of the start-up check's BPF array map: 256 x 4 KiB.
const PROBE_BYTES: u64 = 1 << 20;
/// Where a BPF array map's vmalloc is called from (its call site, as
/// every report of array maps names it: host test cli.rs, README). The
/// compiler decides: Debian's x86-64 kernels inline
/// `__bpf_map_area_alloc()` into `bpf_map_area_alloc()`, whose caller
/// then calls vmalloc; Debian's arm64 kernels and the arm64 test kernel
/// do not (/proc/vmallocinfo there: `bpf_map_area_alloc`). Named wrong,
/// the start-up check says "not checked", never a guard it did not see.
#[cfg(not(target_arch = "aarch64"))]
const PROBE_SITE: &str = "array_map_alloc";
#[cfg(target_arch = "aarch64")]
const PROBE_SITE: &str = "bpf_map_area_alloc";

/// With the rule live, nofail makes a vmalloc of its own (a 1 MiB BPF
/// array map: `bpf_map_area_alloc` takes vmalloc above 32 KiB). The kernel
/// programs exclude nofail's process (SELF_TGID), so it must succeed
/// whatever the rule targets; if it fails, the guard is broken and nofail
/// stops (dropping the session detaches everything).
fn own_allocation() -> Result<()> {
    use crate::bpf::sys::{bpf_cmd, bpf_fd, bpf_map_type, zeroed_attr};
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_1.map_type = bpf_map_type::BPF_MAP_TYPE_ARRAY as u32;
    attr.__bindgen_anon_1.key_size = 4;
    attr.__bindgen_anon_1.value_size = 4096;
    attr.__bindgen_anon_1.max_entries = (PROBE_BYTES / 4096) as u32;
    // The map is closed again right away.
    if let Err(e) = bpf_fd(bpf_cmd::BPF_MAP_CREATE, &mut attr) {
        bail!(
            "nofail's own 1 MiB allocation failed while injecting ({e}): the own-process guard did not hold; stopped"
        );
    }
    Ok(())
}

/// nofail's own process, as the kernel's filter sees it.
struct Own {
    pid: u32,
    comm: String,
}

impl Own {
    fn now() -> Self {
        Self {
            pid: std::process::id(),
            comm: std::fs::read_to_string("/proc/self/comm")
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default(),
        }
    }
}

/// Why the start-up allocation (1 MiB, GFP_KERNEL without __GFP_NOFAIL,
/// from the BPF map code, by nofail's own process) proves nothing about
/// the own-process guard: what in the rule would have spared it anyway,
/// had the guard not excluded nofail's process. Empty: the rule would
/// have failed it at its first vm_struct allocation (area stage), so its
/// going through shows the guard held. `site_selected`: --caller and
/// --module take calls from `PROBE_SITE`; `spent`: attempts on the
/// `--times` budget by the end of the check.
fn guard_unproven(args: &InjectArgs, own: &Own, site_selected: bool, spent: u64) -> Vec<String> {
    let f = &args.filter;
    let mut why = Vec::new();
    if args.dry_run {
        why.push("--dry-run fails nothing".to_string());
    }
    if !args.stages.contains(&Stage::Area) {
        why.push("--stage mapping alone: its page tables may need no new page".to_string());
    }
    if let Some(pid) = f.pid.filter(|&p| p != own.pid) {
        why.push(format!("--pid {pid} is another process"));
    }
    if let Some(comm) = f.comm.as_deref().filter(|&c| c != own.comm) {
        why.push(format!("--comm {comm:?} is not nofail's name"));
    }
    if f.nofail_only {
        why.push("--nofail-only: it is not a NOFAIL call".to_string());
    }
    if let Some(min) = f.min_size.filter(|&m| m > PROBE_BYTES) {
        why.push(format!("--min-size {min}: it is 1 MiB"));
    }
    if !site_selected {
        why.push(format!(
            "--caller/--module do not select {PROBE_SITE}, its call site"
        ));
    }
    if args.probability < 1.0 {
        why.push(format!(
            "--probability {} picks it only by chance",
            args.probability
        ));
    }
    if let Some(every) = args.every.filter(|&n| n > 1) {
        why.push(format!("--every {every} picks it only on its turn"));
    }
    if let Some(times) = args.times.filter(|&t| spent >= t) {
        why.push(format!("the --times {times} budget was spent"));
    }
    why
}

/// `nofail inject`; its exit status (the wrapped command's, if any).
pub async fn run(args: InjectArgs) -> Result<u8> {
    let mut stop = Stop::listen()?;
    args.outputs.check()?;
    args.live.check()?;
    let baseline = args.gates.load()?;
    let hooks: Vec<&InjectHook> = args.stages.iter().map(|&s| inject_hook(s)).collect();
    // Every rule is checked before anything is loaded or attached.
    let mut mechanism = InjectMode::Auto;
    let sink = args.events.sink()?;
    let command = args.wrapped.prepare()?;
    let live = &args.live;
    let globals = args.events.globals(EVENT_INJECTED, live);
    let selection = CallSelection {
        cgroup: command.as_ref().and_then(Prepared::scope),
        ..args.filter.selection()
    };
    let mut session = Session::start(&selection, live.mode, globals, |view| {
        mechanism = injector::choose(args.inject_mode, view, &view.config, &hooks)?;
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
    let mut rule_map: Array<_, InjectRule> = Array::try_from(
        ebpf.map_mut(map_names::INJECT_RULE)
            .context("INJECT_RULE missing")?,
    )?;
    rule_map.set(0, args.rule(), 0)?;
    let mut events = args.events.stream(&mut session, sink)?;
    session.tracer.announce();
    // The guard is checked only when the rule would fail this allocation
    // were nofail's process not excluded; otherwise nofail says so.
    own_allocation()?;
    let spent = maps::read_times_spent(&session.tracer.ebpf)?;
    let site_selected = args
        .filter
        .selection()
        .selects_calls_from(session.names.syms(), PROBE_SITE);
    match guard_unproven(&args, &Own::now(), site_selected, spent).as_slice() {
        [] => eprintln!(
            "nofail: own-process guard checked: a 1 MiB vmalloc of nofail's own, which the rule would fail, went through"
        ),
        why => eprintln!(
            "nofail: own-process guard not checked: the rule would not fail nofail's own 1 MiB vmalloc anyway ({}); it went through",
            why.join("; ")
        ),
    }
    let duration = match &command {
        Some(c) => {
            eprintln!(
                "nofail: injecting ({mechanism}) into {:?} until `{}` exits{}",
                args.stages,
                c.describe(),
                if args.dry_run { ", dry run" } else { "" }
            );
            None
        }
        None => {
            let d = args.duration.unwrap_or(DEFAULT_DURATION);
            eprintln!(
                "nofail: injecting ({mechanism}) into {:?} for {d:?}{} (Ctrl-C to stop early)",
                args.stages,
                if args.dry_run { ", dry run" } else { "" }
            );
            Some(d)
        }
    };
    args.live.ready()?;
    let mut running = command.map(Prepared::spawn).transpose()?;
    let mut ending = match &mut running {
        Some(r) => Ending::Command(r, &mut stop),
        None => Ending::Signal(&mut stop),
    };
    follow(
        &mut session,
        &mut events,
        &mut ending,
        duration,
        None,
        |_| Ok(true),
    )
    .await?;
    // Stop injecting before reading, so the numbers are final.
    let mut rule_map: Array<_, InjectRule> = Array::try_from(
        session
            .tracer
            .ebpf
            .map_mut(map_names::INJECT_RULE)
            .context("INJECT_RULE missing")?,
    )?;
    rule_map.set(0, InjectRule::default(), 0)?;
    let counts = maps::read_counts(&session.tracer.ebpf)?;
    let enomem = maps::read_enomem(&session.tracer.ebpf)?;
    let mut report = carry_on::retried("the final read of the counts", || {
        session.collect_final("inject", live.stuck_after)
    })?;
    report.health.events = events.finish(&mut session)?;
    drop(injecting);
    drop(session);
    let behaviour = behaviour(&report.callers, &report.in_flight, &enomem);
    args.outputs.show(&render_behaviour(&counts, &behaviour))?;
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
    let verdict = args.gates.judge(&report, baseline.as_ref());
    if let Some(comparison) = &verdict.comparison {
        args.outputs.show(comparison)?;
    }
    args.outputs.write(&report)?;
    finish(running.as_ref().and_then(Running::code), verdict.result())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn args(extra: &[&str]) -> InjectArgs {
        let cli = crate::cmd::Cli::try_parse_from(
            [&["nofail", "inject", "--stage", "area"], extra].concat(),
        )
        .unwrap();
        match cli.command {
            crate::cmd::Command::Inject(a) => a,
            _ => unreachable!(),
        }
    }

    /// The start-up allocation proves the guard only when the rule would
    /// fail it were nofail's process not excluded; each term that would
    /// spare it anyway is named.
    #[test]
    fn guard_check_proves_only_what_the_rule_selects() {
        let own = Own {
            pid: 4242,
            comm: "nofail".into(),
        };
        // Whether --caller/--module take PROBE_SITE is the filter's to
        // say (bpf/filter.rs); here, as they would on a kernel where
        // PROBE_SITE is built in.
        let unproven = |extra: &[&str], spent| {
            let a = args(extra);
            let selected =
                a.filter.caller.iter().all(|c| c == PROBE_SITE) && a.filter.module.is_empty();
            guard_unproven(&a, &own, selected, spent)
        };
        for selects in [
            &[][..],
            &["--pid", "4242"],
            &["--comm", "nofail"],
            &["--no-nofail"],
            &["--min-size", "1M"],
            &["--fail-first", "1"],
            &["--every", "1"],
            &["--times", "3"],
            &["--stage", "mapping"],
            &["--max-consecutive", "1"],
            &["--caller", PROBE_SITE],
        ] {
            assert_eq!(unproven(selects, 0), Vec::<String>::new(), "{selects:?}");
        }
        let not_selected = format!("--caller/--module do not select {PROBE_SITE}, its call site");
        for (spares, why) in [
            (&["--caller", "xfs_*"][..], not_selected.as_str()),
            (&["--module", "xfs"], not_selected.as_str()),
            (&["--nofail-only"], "--nofail-only: it is not a NOFAIL call"),
            (&["--pid", "1"], "--pid 1 is another process"),
            (
                &["--comm", "xfsaild"],
                "--comm \"xfsaild\" is not nofail's name",
            ),
            (&["--min-size", "2M"], "--min-size 2097152: it is 1 MiB"),
            (&["--dry-run"], "--dry-run fails nothing"),
            (
                &["--probability", "0.5"],
                "--probability 0.5 picks it only by chance",
            ),
            (&["--every", "3"], "--every 3 picks it only on its turn"),
        ] {
            assert_eq!(unproven(spares, 0), vec![why.to_string()], "{spares:?}");
        }
        // --stage mapping alone: page tables may already be there.
        let mapping =
            crate::cmd::Cli::try_parse_from(["nofail", "inject", "--stage", "mapping"]).unwrap();
        let crate::cmd::Command::Inject(mapping) = mapping.command else {
            unreachable!()
        };
        assert_eq!(guard_unproven(&mapping, &own, true, 0).len(), 1);
        // The budget: spent by others before the check, nothing proven.
        assert_eq!(unproven(&["--times", "3"], 2), Vec::<String>::new());
        assert_eq!(
            unproven(&["--times", "3"], 3),
            vec!["the --times 3 budget was spent".to_string()]
        );
        // Several at once, each named.
        assert_eq!(unproven(&["--nofail-only", "--pid", "1"], 0).len(), 2);
    }

    /// Found by the inject_rules fuzz target: `--probability 1e-12` was
    /// accepted and became the kernel threshold 0, which never fails.
    #[test]
    fn a_tiny_probability_still_fails_sometimes() {
        assert_eq!(args(&["--probability", "1e-12"]).rule().probability, 1);
        assert_eq!(args(&["--probability", "1"]).rule().probability, u32::MAX);
        assert_eq!(
            args(&["--probability", "0.5"]).rule().probability,
            u32::MAX / 2
        );
    }

    #[test]
    fn probability_bounds() {
        assert!(parse_probability("0").is_err());
        assert!(parse_probability("0.0").is_err());
        assert!(parse_probability("1e-9").is_ok());
        assert!(parse_probability("1").is_ok());
        assert!(parse_probability("0.25").is_ok());
        assert!(parse_probability("1.5").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("x").is_err());
    }
}
