// SPDX-License-Identifier: MIT OR Apache-2.0
//! The printed table of `cargo xtask fstests`: each test's result per
//! run, nofail's vmalloc calls per xfs_ caller, the injected failures and
//! how XFS coped, XFS's own counters and the tracepoint beside nofail's,
//! the NULLs XFS did not retry (by call chain), trouble in the kernel log,
//! and the checks.

use std::fmt::Write as _;

use super::{
    Plan, Run, RunKind,
    check::Check,
    parse::{Outcome, buf_delta, is_buf_alloc},
};
/// The whole table; `kernel` names the kernel (label and release).
pub fn render(kernel: &str, plan: &Plan, runs: &[Run], checks: &[(RunKind, Check)]) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\nfstests on {kernel}: XFS with -n size=65536 on loop devices in tmpfs; ./check {}",
        plan.check_args.join(" ")
    );
    if let Some(order) = plan.realistic {
        let _ = writeln!(
            o,
            "realistic mode: page allocations of order >= {order} under xfs_buf_alloc fail (fail_page_alloc, stack filter), in every run"
        );
    }
    if plan.runs.contains(&RunKind::Inject) {
        let _ = writeln!(
            o,
            "inject: nofail inject --caller 'xfs_*' {}",
            plan.rule.join(" ")
        );
    }
    tests(&mut o, runs);
    run_lines(&mut o, runs);
    callers(&mut o, runs);
    against_kernel(&mut o, runs);
    not_retried(&mut o, runs);
    kernel_log(&mut o, runs);
    let _ = writeln!(o, "\nchecks:");
    for (kind, c) in checks {
        let _ = writeln!(
            o,
            "  {:<4}  {:<8}  {}: {}",
            if c.ok { "ok" } else { "FAIL" },
            kind.as_str(),
            c.name,
            c.detail
        );
    }
    o
}

fn tests(o: &mut String, runs: &[Run]) {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if let Ok(t) = &r.results {
            for t in t {
                if !names.contains(&t.name.as_str()) {
                    names.push(&t.name);
                }
            }
        }
    }
    let _ = write!(o, "\n{:<14}", "TEST");
    for r in runs {
        let _ = write!(o, " {:<12}", r.kind.as_str());
    }
    let _ = writeln!(o);
    let mut notrun: Vec<(String, String)> = Vec::new();
    for name in names {
        let _ = write!(o, "{name:<14}");
        for r in runs {
            let cell = match &r.results {
                Ok(t) => match t.iter().find(|t| t.name == name) {
                    Some(t) => {
                        if let Outcome::NotRun(why) = &t.outcome
                            && !notrun.iter().any(|(n, _)| n == name)
                        {
                            notrun.push((name.to_string(), why.clone()));
                        }
                        match t.secs {
                            Some(s) if t.outcome != Outcome::Pass || s > 0 => {
                                format!("{} {s}s", t.outcome.word())
                            }
                            _ => t.outcome.word().to_string(),
                        }
                    }
                    None => "-".into(),
                },
                Err(_) => "no result".into(),
            };
            let _ = write!(o, " {cell:<12}");
        }
        let _ = writeln!(o);
    }
    for (name, why) in notrun {
        let _ = writeln!(o, "  {name} not run: {why}");
    }
    for r in runs {
        if let Ok(t) = &r.results {
            for t in t {
                if let Outcome::Fail(why) = &t.outcome {
                    let _ = writeln!(
                        o,
                        "  {} failed in the {} run: {why}",
                        t.name,
                        r.kind.as_str()
                    );
                }
            }
        }
    }
}

fn run_lines(o: &mut String, runs: &[Run]) {
    let _ = writeln!(
        o,
        "\n{:<8} {:>7} {:>5} {:>5} {:>6}  GUEST",
        "RUN", "WALL s", "PASS", "FAIL", "NOTRUN"
    );
    for r in runs {
        let count = |f: fn(&Outcome) -> bool| -> String {
            r.results.as_ref().map_or("-".into(), |t| {
                t.iter().filter(|t| f(&t.outcome)).count().to_string()
            })
        };
        let guest = match r.guest_status {
            0 => "ok".to_string(),
            crate::vm::EXIT_TIMEOUT => "TIMEOUT".into(),
            crate::vm::EXIT_CRASH => "CRASH".into(),
            crate::vm::EXIT_HANG => "HUNG".into(),
            n => format!("exit {n}"),
        };
        let _ = writeln!(
            o,
            "{:<8} {:>7.0} {:>5} {:>5} {:>6}  {guest}",
            r.kind.as_str(),
            r.secs,
            count(|o| *o == Outcome::Pass),
            count(|o| matches!(o, Outcome::Fail(_))),
            count(|o| matches!(o, Outcome::NotRun(_))),
        );
    }
}

fn callers(o: &mut String, runs: &[Run]) {
    let traced: Vec<&Run> = runs.iter().filter(|r| r.report.is_some()).collect();
    if traced.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "\nvmalloc calls per xfs_ caller (nofail; FAILED: area and mapping stage failures):\n{:<8} {:<40} {:>7} {:>7} {:>9} {:>7} {:>6} {:>8} {:>8} {:>9}",
        "RUN",
        "CALLER",
        "CALLS",
        "NOFAIL",
        "INJECTED",
        "FAILED",
        "NULL",
        "BY-HAND",
        "TO-USER",
        "ABSORBED"
    );
    for r in traced {
        let Some(Ok(rep)) = &r.report else {
            let _ = writeln!(o, "{:<8} (no report)", r.kind.as_str());
            continue;
        };
        if rep.callers.is_empty() {
            let _ = writeln!(
                o,
                "{:<8} (no vmalloc call from an xfs_ function)",
                r.kind.as_str()
            );
        }
        for c in &rep.callers {
            let b = rep.behaviour.iter().find(|b| b.caller == c.caller);
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            let _ = writeln!(
                o,
                "{:<8} {:<40} {:>7} {:>7} {:>9} {:>7} {:>6} {:>8} {:>8} {:>9}",
                r.kind.as_str(),
                c.caller,
                c.calls,
                c.nofail_calls,
                c.injected,
                c.area_failures + c.mapping_failures,
                c.null_returns,
                c.open_coded_retries,
                opt(b.map(|b| b.error_to_userspace)),
                opt(b.map(|b| b.absorbed)),
            );
        }
    }
}

fn against_kernel(o: &mut String, runs: &[Run]) {
    let _ = writeln!(
        o,
        "\nnofail beside the kernel's own counts (at xfs_buf_alloc; XFS's counters are /sys/fs/xfs/stats/stats deltas):\n{:<8} {:>16} {:>14} {:>10} {:>16} {:>10} {:>10}",
        "RUN",
        "NOFAIL CALLS-NULL",
        "TP VMALLOC",
        "BY-HAND",
        "XB_PAGE_RETRIES",
        "XB_CREATE",
        "TP FALLBACK"
    );
    for r in runs {
        let (got, by_hand) = match &r.report {
            Some(Ok(rep)) => {
                let rows = rep.callers.iter().filter(|c| is_buf_alloc(&c.caller));
                let (mut calls, mut nulls, mut hand) = (0, 0, 0);
                for c in rows {
                    calls += c.calls;
                    nulls += c.null_returns;
                    hand += c.open_coded_retries;
                }
                ((calls - nulls.min(calls)).to_string(), hand.to_string())
            }
            _ => ("-".into(), "-".into()),
        };
        let tp = |k: &str| r.summary.get(k).unwrap_or("-").to_string();
        let xb = |f: &str| match &r.stats {
            Ok((b, a)) => buf_delta(b, a, f).map_or("?".into(), |d| format!("+{d}")),
            Err(_) => "?".into(),
        };
        let _ = writeln!(
            o,
            "{:<8} {:>16} {:>14} {:>10} {:>16} {:>10} {:>10}",
            r.kind.as_str(),
            got,
            tp("tp_vmalloc"),
            by_hand,
            xb("xb_page_retries"),
            xb("xb_create"),
            tp("tp_fallback"),
        );
    }
}

/// The chains of NULLs that were not followed by a retry by hand: where
/// an injected failure went when XFS did not retry it.
fn not_retried(o: &mut String, runs: &[Run]) {
    for r in runs.iter().filter(|r| r.kind == RunKind::Inject) {
        let Some(Ok(rep)) = &r.report else { continue };
        for b in &rep.behaviour {
            let mut line = format!(
                "{}: {} injected; NULL returned {}: retried by hand {}, error to userspace {}",
                b.caller, b.injected, b.null_returned, b.open_coded_retries, b.error_to_userspace
            );
            if !b.syscalls.is_empty() {
                let calls: Vec<String> =
                    b.syscalls.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = write!(line, " ({})", calls.join(", "));
            }
            let _ = write!(line, ", absorbed {}", b.absorbed);
            let failed = rep
                .callers
                .iter()
                .find(|c| c.caller == b.caller)
                .map_or(0, |c| c.area_failures + c.mapping_failures);
            let by_vmalloc = b.injected.saturating_sub(failed);
            if by_vmalloc > 0 {
                let _ = write!(
                    line,
                    "; {by_vmalloc} injected without failing the stage (vmalloc went on without that allocation)"
                );
            }
            if b.nofail {
                line = format!(
                    "{} [NOFAIL]: {} injected, retried in vmalloc {}, still looping {}",
                    b.caller,
                    b.injected,
                    b.area_retries + b.mapping_retries,
                    b.still_looping
                );
            }
            let _ = writeln!(o, "\n{line}");
        }
        if let Some(Ok(sites)) = &r.failed_slab {
            let list: Vec<String> = sites.iter().map(|(s, n)| format!("{s} {n}")).collect();
            let _ = writeln!(
                o,
                "failed slab allocations (kmem events, ptr 0) by call site: {}",
                if list.is_empty() {
                    "none".to_string()
                } else {
                    list.join(", ")
                }
            );
        }
        let chains: Vec<_> = rep
            .chains
            .iter()
            .filter(|c| c.null_returns > c.open_coded_retries)
            .collect();
        if !chains.is_empty() {
            let _ = writeln!(
                o,
                "NULLs not followed by a retry by hand, by call chain ({} run):",
                r.kind.as_str()
            );
        }
        for c in chains {
            let _ = writeln!(
                o,
                "  {} NULL ({} injected), {} retried by hand: {}",
                c.null_returns,
                c.injected,
                c.open_coded_retries,
                c.frames.join(" <- ")
            );
        }
    }
}

fn kernel_log(o: &mut String, runs: &[Run]) {
    for r in runs {
        if r.kernel_log.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "\nkernel log of the {} run ({} lines of trouble):",
            r.kind.as_str(),
            r.kernel_log.len()
        );
        for l in r.kernel_log.iter().take(20) {
            let _ = writeln!(o, "  | {l}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse::{
        Behaviour, CallerCounts, Chain, NofailReport, Summary, TestResult, XfsStats,
    };
    use super::*;

    fn run(kind: RunKind, outcome: Outcome, report: Option<NofailReport>) -> Run {
        Run {
            kind,
            guest_status: 0,
            secs: 100.0,
            summary: Summary::parse(
                "tp_vmalloc 1603\ntp_vmalloc_lost 0\ntp_fallback 1801\ndone 1\n",
            ),
            results: Ok(vec![
                TestResult {
                    name: "generic/117".into(),
                    secs: Some(17),
                    outcome,
                },
                TestResult {
                    name: "generic/020".into(),
                    secs: None,
                    outcome: Outcome::NotRun("no attr support".into()),
                },
            ]),
            stats: Ok((
                XfsStats::parse("buf 1 10 0 0 0 0 5 0 0\n").unwrap(),
                XfsStats::parse("buf 1 90 0 0 0 0 178 0 0\n").unwrap(),
            )),
            report: report.map(Ok),
            failed_slab: Some(Ok(vec![
                ("__get_vm_area_node+0x85".into(), 120),
                ("alloc_vmap_area+0xa67".into(), 1),
            ])),
            kernel_log: vec!["[ 9.1] WARNING: CPU: 0 PID: 7 at fs/xfs/x.c:1".into()],
        }
    }

    #[test]
    fn table_shows_results_counts_chains_and_checks() {
        let report = NofailReport {
            command: "inject".into(),
            callers: vec![CallerCounts {
                caller: "xfs_buf_alloc+0x336".into(),
                calls: 1777,
                null_returns: 174,
                injected: 175,
                area_failures: 174,
                open_coded_retries: 173,
                ..Default::default()
            }],
            chains: vec![Chain {
                caller: "xfs_buf_alloc+0x336".into(),
                frames: vec![
                    "xfs_buf_alloc+0x336".into(),
                    "xfs_buf_get_map+0x1f8".into(),
                    "xfs_buf_readahead_map+0x2e".into(),
                ],
                calls: 1,
                null_returns: 1,
                open_coded_retries: 0,
                injected: 1,
            }],
            injected_total: Some(175),
            behaviour: vec![Behaviour {
                caller: "xfs_buf_alloc+0x336".into(),
                injected: 175,
                null_returned: 174,
                open_coded_retries: 173,
                absorbed: 1,
                ..Default::default()
            }],
            ..Default::default()
        };
        let plan = Plan {
            check_args: vec!["generic/117".into(), "generic/020".into()],
            realistic: Some(1),
            runs: vec![RunKind::Untraced, RunKind::Inject],
            rule: vec!["--stage".into(), "area".into()],
            timeout: 1,
            name: None,
            reread: false,
        };
        let runs = [
            run(RunKind::Untraced, Outcome::Pass, None),
            run(
                RunKind::Inject,
                Outcome::Fail("- output mismatch".into()),
                Some(report),
            ),
        ];
        let checks = [(
            RunKind::Inject,
            Check {
                name: "nofail open-coded retries = xb_page_retries".into(),
                ok: false,
                detail: "nofail: 173, XFS: +173".into(),
            },
        )];
        let t = render("test (7.2.13)", &plan, &runs, &checks);
        for want in [
            "fstests on test (7.2.13)",
            "order >= 1 under xfs_buf_alloc",
            "generic/117    pass 17s     FAIL",
            "generic/020 not run: no attr support",
            "generic/117 failed in the inject run: - output mismatch",
            "xfs_buf_alloc+0x336: 175 injected; NULL returned 174: retried by hand 173, error to userspace 0, absorbed 1; 1 injected without failing the stage",
            "1 NULL (1 injected), 0 retried by hand: xfs_buf_alloc+0x336 <- xfs_buf_get_map+0x1f8 <- xfs_buf_readahead_map+0x2e",
            "WARNING: CPU: 0",
            "by call site: __get_vm_area_node+0x85 120, alloc_vmap_area+0xa67 1",
            "FAIL  inject    nofail open-coded retries = xb_page_retries",
        ] {
            assert!(t.contains(want), "table lacks {want:?}:\n{t}");
        }
        // nofail's calls minus NULLs beside the tracepoint, retries beside
        // xb_page_retries (+173), the fallback count.
        let row = t
            .lines()
            .find(|l| l.starts_with("inject") && l.contains("+173"))
            .unwrap_or_else(|| panic!("no inject row with +173:\n{t}"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells,
            ["inject", "1603", "1603", "173", "+173", "+80", "1801"]
        );
    }
}
