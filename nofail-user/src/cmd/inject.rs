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
        flags::{FilterArgs, LiveArgs, Outputs, parse_duration},
        follow::{EventArgs, follow},
        signals::Stop,
    },
    model::{
        coping::behaviour,
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
    /// How long to inject: 10s, 500ms, 2m.
    #[arg(long, short, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,
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
}

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

/// With the rule live, nofail makes a vmalloc of its own (a 1 MiB BPF
/// array map: `bpf_map_area_alloc` takes vmalloc above 32 KiB). The kernel
/// programs exclude nofail's process (SELF_TGID), so it must succeed
/// whatever the rule targets; if it fails, the guard is broken and nofail
/// stops (dropping the session detaches everything).
fn own_process_exempt() -> Result<()> {
    use crate::bpf::sys::{bpf_cmd, bpf_fd, bpf_map_type, zeroed_attr};
    let mut attr = zeroed_attr();
    attr.__bindgen_anon_1.map_type = bpf_map_type::BPF_MAP_TYPE_ARRAY as u32;
    attr.__bindgen_anon_1.key_size = 4;
    attr.__bindgen_anon_1.value_size = 4096;
    attr.__bindgen_anon_1.max_entries = 256;
    // The map is closed again right away.
    if let Err(e) = bpf_fd(bpf_cmd::BPF_MAP_CREATE, &mut attr) {
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
    args.live.check()?;
    let hooks: Vec<&InjectHook> = args.stages.iter().map(|&s| inject_hook(s)).collect();
    // Every rule is checked before anything is loaded or attached.
    let mut mechanism = InjectMode::Auto;
    let sink = args.events.sink()?;
    let live = &args.live;
    let globals = args.events.globals(EVENT_INJECTED, live);
    let mut session = Session::start(&args.filter.selection(), live.mode, globals, |view| {
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
    own_process_exempt()?;
    eprintln!(
        "nofail: injecting ({mechanism}) into {:?} for {:?}{} (Ctrl-C to stop early)",
        args.stages,
        args.duration,
        if args.dry_run { ", dry run" } else { "" }
    );
    args.live.ready()?;
    follow(
        &mut session,
        &mut events,
        &mut stop,
        Some(args.duration),
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
    let mut report = session.collect("inject", live.stuck_after)?;
    report.health.events = events.finish(&mut session)?;
    drop(injecting);
    drop(session);
    let behaviour = behaviour(&report.callers, &report.in_flight, &enomem);
    args.outputs.show(&render_behaviour(&counts, &behaviour));
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
