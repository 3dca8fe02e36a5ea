// SPDX-License-Identifier: MIT OR Apache-2.0
//! `nofail inject`'s flags through clap, and what the command builds from
//! them before it touches the kernel: the kernel-side rule
//! (`InjectArgs::rule`) and the call selection's filter and caller ranges
//! (`CallSelection::build`, against a fixed kallsyms). Any command line
//! is refused with an error or gives a rule in range; never a panic.
//! Input: segments split at NUL, each a flag (its first byte picks one)
//! and its value (the rest).
#![no_main]

use std::sync::OnceLock;

use clap::{CommandFactory as _, FromArgMatches as _};
use libfuzzer_sys::fuzz_target;
use nofail_user::{
    cmd::{Cli, Command},
    kernel::symbols::Kallsyms,
    model::inject::Stage,
};

/// Flags with a value, then flags without one.
const WITH_VALUE: [&str; 13] = [
    "--stage",
    "--probability",
    "--every",
    "--times",
    "--fail-first",
    "--max-consecutive",
    "--caller",
    "--module",
    "--min-size",
    "--pid",
    "--comm",
    "--inject-mode",
    "--chains",
];
const SWITCHES: [&str; 3] = ["--no-nofail", "--nofail-only", "--dry-run"];

/// Built-in functions and two modules' code, as /proc/kallsyms lists it.
const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81200000 T __vmalloc_node_range_noprof
ffffffff81200400 t __vmalloc_area_node
ffffffff81300000 T array_map_alloc
ffffffff81300200 T xfs_buf_alloc
ffffffff81300400 T xfs_attr_get
ffffffffc0000000 t trigger_nofail_vmalloc\t[nofail_trigger]
ffffffffc0000100 t xfs_mod_fn\t[xfs]
";

/// `Cli::try_parse_from` in two steps, the command built once: clap
/// checks a command's definition each time it builds one (debug
/// assertions are on), which made that most of each input's time.
fn parse(argv: &[String]) -> Option<Cli> {
    static COMMAND: OnceLock<clap::Command> = OnceLock::new();
    let command = COMMAND.get_or_init(|| {
        let mut c = Cli::command();
        c.build();
        c
    });
    let matches = command.clone().try_get_matches_from(argv).ok()?;
    Cli::from_arg_matches(&matches).ok()
}

fuzz_target!(|data: &[u8]| {
    let mut argv = vec!["nofail".to_string(), "inject".to_string()];
    for segment in data.split(|&b| b == 0) {
        let Some((&pick, value)) = segment.split_first() else {
            continue;
        };
        let pick = pick as usize % (WITH_VALUE.len() + SWITCHES.len());
        match WITH_VALUE.get(pick) {
            Some(flag) => {
                argv.push(flag.to_string());
                argv.push(String::from_utf8_lossy(value).into_owned());
            }
            None => argv.push(SWITCHES[pick - WITH_VALUE.len()].to_string()),
        }
    }
    let Some(cli) = parse(&argv) else {
        return;
    };
    let Command::Inject(args) = cli.command else {
        panic!("inject parsed as another command: {argv:?}");
    };
    let p = args.probability;
    assert!(p > 0.0 && p <= 1.0, "{argv:?}: probability {p}");
    assert!(!args.stages.is_empty(), "{argv:?}: no stage");
    for n in [args.every, args.fail_first].into_iter().flatten() {
        assert!(n >= 1, "{argv:?}");
    }
    assert!(args.times.is_none_or(|t| t >= 1), "{argv:?}");
    assert!(args.max_consecutive >= 1, "{argv:?}");

    let rule = args.rule();
    let bits = args.stages.iter().fold(0, |b, s| b | s.bit());
    assert!(rule.stages == bits && bits != 0, "{argv:?}");
    assert_eq!(
        rule.stages & !(Stage::Area.bit() | Stage::Mapping.bit()),
        0,
        "{argv:?}"
    );
    // The kernel fails an allocation when a random u32 is below the
    // threshold: a probability above 0 must leave one above 0, and only
    // 1 means every time.
    assert!(
        rule.probability >= 1,
        "{argv:?}: probability {p} never fails"
    );
    assert_eq!(rule.probability == u32::MAX, p == 1.0, "{argv:?}");
    assert_eq!(rule.every, args.every.unwrap_or(0), "{argv:?}");
    assert_eq!(rule.fail_first, args.fail_first.unwrap_or(0), "{argv:?}");
    assert_eq!(rule.max_consecutive, args.max_consecutive, "{argv:?}");
    assert_eq!(rule.enabled, 1);
    assert!(rule.nofail <= 2, "{argv:?}");

    let syms = Kallsyms::parse(KALLSYMS);
    if let Ok(targets) = args.filter.selection().build(&syms) {
        assert_eq!(targets.filter.n_ranges as usize, targets.ranges.len());
        let (c, m) = (&args.filter.caller, &args.filter.module);
        assert_eq!(
            targets.ranges.is_empty(),
            c.is_empty() && m.is_empty(),
            "{argv:?}"
        );
        for w in targets.ranges.windows(2) {
            assert!(w[0].end < w[1].start, "{argv:?}");
        }
    }
});
