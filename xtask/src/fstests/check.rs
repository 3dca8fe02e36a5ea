// SPDX-License-Identifier: MIT OR Apache-2.0
//! The exactness checks of a traced run: nofail's counts against what the
//! kernel counted over the same run, and every injected failure accounted
//! for. A check whose input is missing fails; it never passes by default.

use anyhow::{Context as _, Result, bail, ensure};

use super::parse::{NofailReport, Summary, XfsStats, buf_delta, is_buf_alloc};

/// One check's verdict: what it compared, and how it came out.
#[derive(Clone, Debug)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn from(name: &str, r: Result<String>) -> Self {
        match r {
            Ok(detail) => Self {
                name: name.into(),
                ok: true,
                detail,
            },
            Err(e) => Self {
                name: name.into(),
                ok: false,
                detail: format!("{e:#}"),
            },
        }
    }
}

/// nofail's calls at XFS's buffer allocation that got memory, against the
/// tracepoint `xfs:xfs_buf_backing_vmalloc`, which fires once per
/// successful `__vmalloc` there (after any retries). A NULL (injected or
/// not) is a call without the event, so nofail's side is calls minus
/// NULL returns.
pub fn tracepoint(report: &NofailReport, summary: &Summary) -> Result<String> {
    let rows = report.callers.iter().filter(|r| is_buf_alloc(&r.caller));
    let (mut calls, mut nulls) = (0u64, 0u64);
    for r in rows {
        calls += r.calls;
        nulls += r.null_returns;
    }
    let events = summary.num("tp_vmalloc")?;
    let lost = summary.num("tp_vmalloc_lost")?;
    ensure!(
        lost == 0,
        "the trace instance lost {lost} events: the tracepoint count {events} is short"
    );
    let got = calls - nulls.min(calls);
    ensure!(
        got == events,
        "nofail: {calls} calls - {nulls} NULL = {got} at xfs_buf_alloc, tracepoint xfs_buf_backing_vmalloc: {events}"
    );
    Ok(format!(
        "{calls} calls - {nulls} NULL = {got} = {events} xfs_buf_backing_vmalloc events"
    ))
}

/// nofail's open-coded retries at XFS's buffer allocation against XFS's
/// own `xb_page_retries`, which `xfs_buf_alloc_vmalloc()` raises once per
/// NULL it retries.
pub fn page_retries(report: &NofailReport, before: &XfsStats, after: &XfsStats) -> Result<String> {
    let by_hand: u64 = report
        .callers
        .iter()
        .filter(|r| is_buf_alloc(&r.caller))
        .map(|r| r.open_coded_retries)
        .sum();
    let xfs = buf_delta(before, after, "xb_page_retries")?;
    ensure!(
        by_hand == xfs,
        "nofail: {by_hand} open-coded retries at xfs_buf_alloc, XFS: xb_page_retries +{xfs}"
    );
    Ok(format!(
        "{by_hand} open-coded retries = xb_page_retries +{xfs}"
    ))
}

/// Every injected failure accounted for. An injected failure either made
/// its stage fail, or vmalloc went on without the allocation it failed
/// (in 7.2's area stage the per-CPU vmap_area preload may fail, and
/// after a failed split allocation vmalloc purges and retries): so per
/// caller, stage failures are at most the failures injected, and the rest
/// were absorbed by vmalloc. A plain caller got a NULL for each stage
/// failure, and each NULL was retried by hand, went to userspace as an
/// error, or was absorbed by the caller (the three add up without
/// rounding); a NOFAIL caller retried each inside vmalloc and no call is
/// still looping. The behaviour lines add up to the report's total.
pub fn accounting(report: &NofailReport) -> Result<String> {
    let Some(total) = report.injected_total else {
        bail!("the report has no injection counts");
    };
    let (mut sum, mut failed_all, mut nulls, mut by_vmalloc) = (0, 0, 0, 0);
    for b in &report.behaviour {
        sum += b.injected;
        let row = report
            .callers
            .iter()
            .find(|r| r.caller == b.caller)
            .with_context(|| format!("{}: a behaviour line without a caller row", b.caller))?;
        let failed = row.area_failures + row.mapping_failures;
        ensure!(
            failed <= b.injected,
            "{}: {failed} stage failures but {} injected: failures nofail did not inject",
            b.caller,
            b.injected
        );
        failed_all += failed;
        by_vmalloc += b.injected - failed;
        if b.nofail {
            let retried = b.area_retries + b.mapping_retries;
            ensure!(
                failed == retried && b.still_looping == 0,
                "{}: {failed} stage failures in NOFAIL calls, {retried} retried in vmalloc, {} still looping",
                b.caller,
                b.still_looping
            );
        } else {
            ensure!(
                failed == b.null_returned,
                "{}: {failed} stage failures but {} NULL returned",
                b.caller,
                b.null_returned
            );
            let parts = b.open_coded_retries + b.error_to_userspace + b.absorbed;
            ensure!(
                parts == b.null_returned,
                "{}: {} NULL returned, but retried by hand {} + error to userspace {} + absorbed {} = {parts}",
                b.caller,
                b.null_returned,
                b.open_coded_retries,
                b.error_to_userspace,
                b.absorbed
            );
            nulls += b.null_returned;
        }
    }
    ensure!(
        sum == total,
        "the behaviour lines account for {sum} injected failures, the report injected {total}"
    );
    Ok(format!(
        "{total} injected: {failed_all} failed their stage ({nulls} NULL to plain callers, each retried by hand, returned to userspace or absorbed), {by_vmalloc} absorbed by vmalloc (the stage went on)"
    ))
}

/// The functions of vmalloc's area stage that allocate from slabs
/// (inlined helpers report their caller's name): `__get_vm_area_node`'s
/// vm_struct, `alloc_vmap_area`'s vmap_area, its per-CPU preload and
/// the split's spare.
pub const AREA_STAGE_FUNCTIONS: [&str; 5] = [
    "__get_vm_area_node",
    "alloc_vmap_area",
    "preload_this_cpu_lock",
    "__alloc_vmap_area",
    "va_clip",
];

fn function_of(site: &str) -> &str {
    site.split('+').next().unwrap_or(site)
}

/// Where the injected failures landed, as the kernel saw them: the failed
/// slab allocations in vmalloc's area stage (kmem events with ptr 0,
/// counted over the run) equal nofail's injected failures, one for one.
pub fn slab(report: &NofailReport, sites: &[(String, u64)], summary: &Summary) -> Result<String> {
    let lost = summary.num("slab_failed_lost")?;
    ensure!(
        lost == 0,
        "the trace instance lost {lost} failed-allocation events"
    );
    let injected = report.injected_total.unwrap_or(0);
    let in_stage: u64 = sites
        .iter()
        .filter(|(s, _)| AREA_STAGE_FUNCTIONS.contains(&function_of(s)))
        .map(|(_, n)| n)
        .sum();
    let list: Vec<String> = sites.iter().map(|(s, n)| format!("{s} {n}")).collect();
    ensure!(
        in_stage == injected,
        "{in_stage} failed slab allocations in vmalloc's area stage, {injected} injected (failed allocations: {})",
        if list.is_empty() {
            "none".into()
        } else {
            list.join(", ")
        }
    );
    Ok(format!(
        "{in_stage} failed slab allocations in the area stage = {injected} injected ({})",
        if list.is_empty() {
            "none failed".into()
        } else {
            list.join(", ")
        }
    ))
}

/// nofail saw every call: no run of a counting program skipped, no call
/// left inside vmalloc when the run ended. Skipped runs of the injector
/// (`inject_*`, `decide_*`: nested in another BPF program's run on that
/// CPU, as from an interrupt) are named but do not fail the check: they
/// change which allocations could have been failed, not what was
/// counted, and the accounting check covers every failure injected.
pub fn complete(report: &NofailReport) -> Result<String> {
    let injector = |p: &str| p.starts_with("inject_") || p.starts_with("decide_");
    let counting: Vec<String> = report
        .missed
        .iter()
        .filter(|(p, _)| !injector(p))
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    ensure!(
        counting.is_empty(),
        "runs of counting programs were skipped ({}): the counts are incomplete",
        counting.join(", ")
    );
    ensure!(
        report.in_flight == 0,
        "{} calls were still inside vmalloc at the end",
        report.in_flight
    );
    let skipped: Vec<String> = report
        .missed
        .iter()
        .map(|(p, n)| format!("{p} {n}"))
        .collect();
    Ok(if skipped.is_empty() {
        "no program run skipped, no call in flight".into()
    } else {
        format!(
            "no counting program's run skipped, no call in flight; injector runs skipped: {}",
            skipped.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse::{Behaviour, CallerCounts};
    use super::*;

    fn report(calls: u64, nulls: u64, by_hand: u64) -> NofailReport {
        NofailReport {
            command: "inject".into(),
            callers: vec![
                CallerCounts {
                    caller: "xfs_buf_alloc+0x336".into(),
                    calls,
                    null_returns: nulls,
                    injected: nulls,
                    area_failures: nulls,
                    open_coded_retries: by_hand,
                    ..Default::default()
                },
                // Not XFS's buffer allocation: not in the comparison.
                CallerCounts {
                    caller: "xfs_attr3_leaf_to_shortform+0xa8".into(),
                    calls: 5,
                    nofail_calls: 5,
                    ..Default::default()
                },
            ],
            injected_total: Some(nulls),
            behaviour: vec![Behaviour {
                caller: "xfs_buf_alloc+0x336".into(),
                injected: nulls,
                null_returned: nulls,
                open_coded_retries: by_hand,
                absorbed: nulls - by_hand,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn tracepoint_counts_calls_that_got_memory() {
        let s = Summary::parse("tp_vmalloc 1603\ntp_vmalloc_lost 0\n");
        assert!(tracepoint(&report(1777, 174, 173), &s).is_ok());
        assert!(tracepoint(&report(1778, 174, 173), &s).is_err());
        // Lost events make the ground truth short: a failure, not a pass.
        let lost = Summary::parse("tp_vmalloc 1603\ntp_vmalloc_lost 2\n");
        assert!(tracepoint(&report(1777, 174, 173), &lost).is_err());
        // No count at all is a failure too.
        let none = Summary::parse("tp_vmalloc_lost 0\n");
        assert!(tracepoint(&report(1777, 174, 173), &none).is_err());
    }

    #[test]
    fn page_retries_against_xfs() {
        let before = XfsStats::parse("buf 1 1 1 0 0 0 10 0 0\n").unwrap();
        let after = XfsStats::parse("buf 9 9 9 0 0 0 183 0 0\n").unwrap();
        assert!(page_retries(&report(1777, 174, 173), &before, &after).is_ok());
        assert!(page_retries(&report(1777, 174, 174), &before, &after).is_err());
        let no_buf = XfsStats::parse("xpc 1 2 3\n").unwrap();
        assert!(page_retries(&report(1777, 174, 173), &before, &no_buf).is_err());
    }

    #[test]
    fn every_injection_accounted() {
        assert!(accounting(&report(1777, 174, 173)).is_ok());
        // A NULL neither retried, returned nor absorbed.
        let mut r = report(1777, 174, 173);
        r.behaviour[0].absorbed = 0;
        assert!(accounting(&r).is_err());
        // More parts than NULLs (a saturated `absorbed` would hide it).
        let mut r = report(1777, 174, 173);
        r.behaviour[0].error_to_userspace = 5;
        assert!(accounting(&r).is_err());
        // An injection vmalloc went on without: the stage did not fail,
        // no NULL; accounted as absorbed by vmalloc.
        let mut r = report(1777, 174, 173);
        r.behaviour[0].injected = 175;
        r.injected_total = Some(175);
        assert!(accounting(&r).unwrap().contains("1 absorbed by vmalloc"));
        // A stage failure without a NULL for a plain caller.
        let mut r = report(1777, 174, 173);
        r.callers[0].area_failures = 175;
        r.behaviour[0].injected = 175;
        r.injected_total = Some(175);
        assert!(accounting(&r).is_err());
        // More stage failures than injected: not nofail's.
        let mut r = report(1777, 174, 173);
        r.callers[0].area_failures = 175;
        assert!(accounting(&r).is_err());
        // A behaviour line whose caller has no row.
        let mut r = report(1777, 174, 173);
        r.callers.remove(0);
        assert!(accounting(&r).is_err());
        // The lines do not add up to the total.
        let mut r = report(1777, 174, 173);
        r.injected_total = Some(180);
        assert!(accounting(&r).is_err());
        // No injection section: fails, does not pass.
        let mut r = report(1777, 174, 173);
        r.injected_total = None;
        assert!(accounting(&r).is_err());
        // NOFAIL: every failure retried inside vmalloc, none looping.
        let mut r = report(1777, 0, 0);
        r.callers[1].area_failures = 3;
        r.behaviour = vec![Behaviour {
            caller: "xfs_attr3_leaf_to_shortform+0xa8".into(),
            nofail: true,
            injected: 3,
            area_retries: 3,
            ..Default::default()
        }];
        r.injected_total = Some(3);
        assert!(accounting(&r).is_ok());
        r.behaviour[0].still_looping = 1;
        assert!(accounting(&r).is_err());
    }

    #[test]
    fn failed_slab_allocations_are_the_injected_ones() {
        let s = Summary::parse("slab_failed_lost 0\n");
        let r = report(1777, 174, 173);
        let sites = [
            ("__get_vm_area_node+0x85".to_string(), 120),
            ("alloc_vmap_area+0x24a".to_string(), 53),
            ("alloc_vmap_area+0xa67".to_string(), 1),
            // A failure elsewhere is listed, not counted.
            ("alloc_pid+0x5a".to_string(), 2),
        ];
        assert!(slab(&r, &sites, &s).is_ok());
        assert!(slab(&r, &sites[..2], &s).is_err());
        let lost = Summary::parse("slab_failed_lost 1\n");
        assert!(slab(&r, &sites, &lost).is_err());
        assert!(slab(&r, &sites, &Summary::parse("")).is_err());
        // No injection: no failed allocation in the stage.
        let mut t = report(10, 0, 0);
        t.injected_total = None;
        assert!(slab(&t, &[], &s).is_ok());
        assert!(slab(&t, &sites[..1], &s).is_err());
    }

    #[test]
    fn incomplete_counts_fail() {
        let mut r = report(1, 0, 0);
        assert!(complete(&r).is_ok());
        r.missed = vec![("inject_failslab".into(), 5)];
        assert!(complete(&r).unwrap().contains("inject_failslab 5"));
        r.missed.push(("vmalloc_core_kprobe".into(), 1));
        assert!(complete(&r).is_err());
        r.missed.clear();
        r.in_flight = 1;
        assert!(complete(&r).is_err());
    }

    #[test]
    fn check_keeps_the_reason() {
        let c = Check::from("x", Err(anyhow::anyhow!("short by 1")));
        assert!(!c.ok);
        assert_eq!(c.detail, "short by 1");
    }
}
