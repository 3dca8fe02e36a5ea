// SPDX-License-Identifier: MIT OR Apache-2.0
//! nofail under the pressure it exists to watch. The packaged unit
//! (`nofail serve`) and the same unit running `nofail trace --interval`
//! instead, side by side, each in its own cgroup with a `MemoryMax=`,
//! while the guest is driven through four kinds of trouble in turn:
//!
//! 1. real memory pressure: stress-ng --vm into reclaim and the OOM killer;
//! 2. a vmalloc window exhausted by the trigger, its NOFAIL call looping;
//! 3. failslab and fail_page_alloc failing every task's allocations,
//!    nofail's own included;
//! 4. 10,000 distinct call sites (far more than `--max-callers`) and more
//!    NOFAIL calls in flight at once than `--max-inflight`.
//!
//! Scrapers read /metrics throughout. Ground truth: the trigger's own
//! totals (calls and NULLs since load, concurrent runs included) and its
//! exhaustion thread's retry sleeps. Every count must be exact or within
//! what nofail reported missed, by reason; neither unit may be killed or
//! restarted; every scrape must be answered 200, but for those counted
//! apart (`Scrapers`): closed unanswered where nofail said the kernel
//! refused its socket memory, refused to the scraper itself, or begun
//! while phase 3 fails every task's allocations and lost on the way.
//! docs/reliability.md has one run's figures.

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use nofail_test_support::{
    http::http_get,
    prom::{missed_events, sample},
};
use serde_json::Value;

use crate::{
    harness::{Ctx, field, rows_of},
    service::{self, sh, sh_ok},
    trigger::{self, Arm, Injector},
};

/// The limits both units run with: low enough that phase 4 overflows
/// them (`--max-callers`, `--max-inflight`).
const MAX_CALLERS: u64 = 512;
const MAX_INFLIGHT: u64 = 8;
/// Their memory limit: twice the measured need. Without a limit, each
/// unit's cgroup peaked at 46 and 47 MiB (memory.peak: the process and
/// the BPF maps charged to it) through all four phases.
const MEMORY_MAX: &str = "96M";
/// Phase 4: the burst of distinct call sites, and the NOFAIL calls held in
/// flight at once.
const BURST_SITES: u64 = 10_000;
const HELD_CALLS: u64 = 16;
/// Phase 3: each allocation of every task fails with this probability
/// (percent), for this long.
const INJECT_PERCENT: u32 = 1;
const INJECT_SECS: u64 = 15;
/// Phase 1: stress-ng's run.
const STRESS_SECS: u64 = 20;

/// The trace unit's outputs, in its RuntimeDirectory=.
const TRACE_DIR: &str = "/run/nofail-trace";

pub fn service_under_pressure(ctx: &Ctx) -> Result<()> {
    // The harness must outlive the OOM killer's choices; nofail must not
    // be helped: the units keep the score systemd gives them.
    std::fs::write("/proc/self/oom_score_adj", "-1000")?;
    // Nor may reclaim page it out: its scrapes time nofail, not the
    // harness paging itself back in.
    // SAFETY: mlockall takes flags only.
    ensure!(
        unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } == 0,
        "mlockall: {}",
        std::io::Error::last_os_error()
    );
    ctx.load_trigger()?;
    service::install_and_start()?;
    install_units()?;
    let serve = Unit::started("nofail", "nofail: serving http://127.0.0.1:9464/metrics")?;
    let trace = Unit::started("nofail-trace", "nofail: tracing until Ctrl-C or SIGTERM")?;
    // Each trigger site once, so that each has its label from the start.
    for site in ["vmalloc_nofail", "vmalloc"] {
        trigger::run(site, 1, 64 << 10, Arm::Off)?;
    }
    let scrapers = Scrapers::start(2);
    let _progress = Progress::start();
    let mut truth = Truth::default();
    truth.add("site_vmalloc_nofail", 1, 0);
    truth.add("site_vmalloc", 1, 0);

    let phases = (|| -> Result<()> {
        memory_pressure(&mut truth)?;
        vmalloc_exhaustion(&mut truth)?;
        inject_everywhere(&mut truth)?;
        callers_and_inflight(&mut truth)
    })();
    // Let a last scrape see the end state, then stop the scrapers.
    std::thread::sleep(Duration::from_secs(2));
    let scraped = scrapers.stop();
    phases?;
    let scraped = scraped.context("the scrapers")?;
    let said = unit_journal("nofail")
        .context("the unit's journal after the phases")?
        .lines()
        .filter(|l| l.contains("a scrape") && l.contains("failed: ") && l.contains("memory"))
        .count() as u64;
    println!(
        "  scrapes answered: {} (all 200), slowest {} ms; closed unanswered: {} (nofail said {said} times that the kernel refused its socket memory); not made: {} (the kernel failed the scraper's own socket calls: ENOMEM); lost under injection (begun in phase 3, no answer in 30 s): {}",
        scraped.answered,
        scraped.slowest_ms,
        scraped.unanswered,
        scraped.refused_to_client,
        scraped.lost_under_injection
    );
    ensure!(
        scraped.unanswered <= said,
        "{} scrapes closed unanswered, nofail said why for {said}",
        scraped.unanswered
    );

    let (code, body) = http_get(9464, "/metrics").context("the final scrape")?;
    ensure!(code == 200, "final scrape answered {code}");
    let serve_peak = serve
        .still_running()
        .context("nofail.service after the phases")?;
    let trace_peak = trace
        .still_running()
        .context("nofail-trace.service after the phases")?;
    sh_ok("systemctl stop nofail-trace")?;
    let report = trace_report().context("nofail-trace's report")?;
    println!("  serve (/metrics):");
    let own = |name: &str| -> Result<u64> {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .with_context(|| format!("no {name} in the final scrape"))
    };
    let said_reads = unit_journal("nofail")?
        .lines()
        .filter(|l| l.contains("reading the counts for a scrape failed"))
        .count() as u64;
    let failed_reads = own("nofail_failed_reads_total")?;
    println!(
        "    own health: {failed_reads} reads of the counts failed (the journal has {said_reads} of them said), {} heap allocations retried",
        own("nofail_alloc_retries_total")?
    );
    // A warning can be dropped when stderr cannot take it (stdout::say).
    ensure!(
        said_reads <= failed_reads,
        "more failed reads said than counted"
    );
    truth.check_scrape(&body)?;
    println!("  trace --interval (final JSON):");
    truth.check_report(&report)?;
    println!(
        "  peak memory (cgroup memory.peak, MemoryMax={MEMORY_MAX}): serve {} KiB, trace {} KiB",
        serve_peak / 1024,
        trace_peak / 1024
    );
    for unit in ["nofail", "nofail-trace"] {
        let warnings = unit_journal(unit)?
            .lines()
            .filter(|l| l.starts_with("nofail: warning:") && l.contains("failed"))
            .map(str::to_string)
            .collect::<Vec<_>>();
        println!(
            "  {unit}: {} own failures said and carried on{}",
            warnings.len(),
            warnings
                .first()
                .map(|w| format!(", first: {w}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// The package's unit with pressure limits (a drop-in), and a second unit
/// made from the installed one: the same sandbox and capabilities, its
/// ExecStart `nofail trace --interval` writing its outputs at the end.
fn install_units() -> Result<()> {
    let limits = format!("--max-callers {MAX_CALLERS} --max-inflight {MAX_INFLIGHT}");
    std::fs::create_dir_all("/etc/systemd/system/nofail.service.d")?;
    std::fs::write(
        "/etc/systemd/system/nofail.service.d/pressure.conf",
        format!(
            "[Service]\nExecStart=\nExecStart=/usr/sbin/nofail serve --listen 127.0.0.1:9464 {limits}\nMemoryMax={MEMORY_MAX}\nMemorySwapMax=0\n"
        ),
    )?;
    let unit = std::fs::read_to_string("/lib/systemd/system/nofail.service")?;
    let exec = unit
        .lines()
        .find(|l| l.starts_with("ExecStart="))
        .context("the packaged unit has no ExecStart=")?;
    let trace = unit
        .replace(
            exec,
            &format!(
                "ExecStart=/usr/sbin/nofail trace --interval 2s {limits} --json {TRACE_DIR}/report.json --prometheus {TRACE_DIR}/nofail.prom\nRuntimeDirectory=nofail-trace\nRuntimeDirectoryPreserve=yes\nMemoryMax={MEMORY_MAX}\nMemorySwapMax=0"
            ),
        );
    std::fs::write("/etc/systemd/system/nofail-trace.service", trace)?;
    sh_ok("systemctl daemon-reload && systemctl restart nofail && systemctl start nofail-trace")?;
    Ok(())
}

/// A running unit: its main process and cgroup, to show it was neither
/// killed nor restarted.
struct Unit {
    name: &'static str,
    pid: u32,
}

impl Unit {
    /// Waits for `line` in the unit's journal (its programs attached).
    fn started(name: &'static str, line: &str) -> Result<Self> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !unit_journal(name)?.contains(line) {
            let (_, state) = sh(&format!("systemctl is-active {name}"))?;
            ensure!(
                !state.contains("failed") && Instant::now() < deadline,
                "{name} is {} and printed no {line:?}:\n{}",
                state.trim(),
                unit_journal(name)?
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let pid = main_pid(name)?;
        println!("  {name}: pid {pid}, attached");
        Ok(Self { name, pid })
    }

    /// The same process still runs, never restarted; its cgroup's peak
    /// memory (bytes).
    fn still_running(&self) -> Result<u64> {
        let name = self.name;
        let restarts = sh_ok(&format!("systemctl show -p NRestarts --value {name}"))?;
        ensure!(
            restarts.trim() == "0" && main_pid(name)? == self.pid,
            "{name} was restarted ({} restarts, pid {} -> {}):\n{}",
            restarts.trim(),
            self.pid,
            main_pid(name).unwrap_or(0),
            unit_journal(name)?
        );
        let cgroup = sh_ok(&format!("systemctl show -p ControlGroup --value {name}"))?;
        let peak = std::fs::read_to_string(format!("/sys/fs/cgroup{}/memory.peak", cgroup.trim()))?;
        Ok(peak.trim().parse()?)
    }
}

fn main_pid(unit: &str) -> Result<u32> {
    let pid: u32 = sh_ok(&format!("systemctl show -p MainPID --value {unit}"))?
        .trim()
        .parse()?;
    ensure!(pid != 0, "{unit} has no main process");
    Ok(pid)
}

fn unit_journal(unit: &str) -> Result<String> {
    let out = Command::new("journalctl")
        .args(["-u", unit, "--no-pager", "-o", "cat"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The trace unit's final report, written at its stop: whole (renamed
/// into place), nothing half-written left beside it.
fn trace_report() -> Result<Value> {
    let mut names: Vec<String> = std::fs::read_dir(TRACE_DIR)?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    ensure!(
        names == ["nofail.prom", "report.json"],
        "{TRACE_DIR} holds {names:?}"
    );
    let text = std::fs::read_to_string(format!("{TRACE_DIR}/report.json"))?;
    serde_json::from_str(&text).context("the trace unit's report.json")
}

/// What the trigger made, per call site, and what phase 4 overflowed.
#[derive(Default)]
struct Truth {
    /// (site symbol, calls, NULL returns)
    sites: Vec<(&'static str, u64, u64)>,
    /// NOFAIL retry sleeps of the exhaustion thread's window call.
    window_calls: u64,
    window_retries: u64,
}

impl Truth {
    fn add(&mut self, site: &'static str, calls: u64, nulls: u64) {
        match self.sites.iter_mut().find(|s| s.0 == site) {
            Some(s) => {
                s.1 += calls;
                s.2 += nulls;
            }
            None => self.sites.push((site, calls, nulls)),
        }
    }

    /// `nofail serve`'s last scrape: each trigger site's calls and NULLs
    /// exact or short by at most what it reported missed; the window
    /// call's retries exact; the burst's overflow reported as
    /// caller_map_full.
    fn check_scrape(&self, body: &str) -> Result<()> {
        let missed = |reason: &str| missed_events(body, Some(reason));
        let reasons = [
            "program_skipped",
            "exit_missed",
            "entry_missed",
            "inflight_map_full",
        ];
        let mut slack = 0;
        for reason in reasons {
            let n = missed(reason)?;
            print!("    missed {reason}: {n};");
            slack += n;
        }
        println!();
        let mut short = 0;
        for &(site, calls, nulls) in &self.sites {
            let got = sample(body, "nofail_vmalloc_calls_total", site, "")? as u64;
            let got_null = sample(body, "nofail_vmalloc_null_returns_total", site, "")? as u64;
            println!("    {site}: calls {got} of {calls}, NULL {got_null} of {nulls}");
            ensure!(
                got <= calls && got_null <= nulls,
                "{site}: more than the truth"
            );
            short += calls - got;
        }
        let retries = sample(
            body,
            "nofail_vmalloc_retries_total",
            "site_vmalloc_nofail_window",
            "stage=\"area\"",
        )? as u64;
        let window_calls = sample(
            body,
            "nofail_vmalloc_calls_total",
            "site_vmalloc_nofail_window",
            "",
        )? as u64;
        ensure!(
            window_calls == self.window_calls,
            "window calls {window_calls}"
        );
        println!(
            "    window call: {retries} area retries of {} sleeps; short {short}, reported missed {slack} (skipped runs, exits, full in-flight map); caller map full {}",
            self.window_retries,
            missed("caller_map_full")?
        );
        ensure!(retries == self.window_retries, "window retries");
        ensure!(
            short <= slack,
            "{short} calls short, {slack} reported missed"
        );
        ensure!(
            missed("caller_map_full")? >= BURST_SITES - MAX_CALLERS,
            "the burst's overflow is not reported"
        );
        Ok(())
    }

    /// The trace unit's final JSON: the same, and the burst's call sites
    /// one row each, each exactly one call.
    fn check_report(&self, report: &Value) -> Result<()> {
        let health = &report["health"];
        let slack = field(health, "missed_runs")?
            + field(health, "stale_replaced")?
            + field(health, "orphan_exits")?
            + field(health, "inflight_full")?;
        let mut short = 0;
        for &(site, calls, nulls) in &self.sites {
            let rows = rows_of(&report["callers"], site)?;
            let got: u64 = rows
                .iter()
                .map(|r| field(r, "calls"))
                .sum::<Result<u64>>()?;
            let got_null: u64 = rows
                .iter()
                .map(|r| field(r, "null_returns"))
                .sum::<Result<u64>>()?;
            println!("    {site}: calls {got} of {calls}, NULL {got_null} of {nulls}");
            ensure!(
                got <= calls && got_null <= nulls,
                "{site}: more than the truth"
            );
            short += calls - got;
        }
        let window = rows_of(&report["callers"], "site_vmalloc_nofail_window")?;
        let retries: u64 = window
            .iter()
            .map(|r| field(r, "area_retries"))
            .sum::<Result<u64>>()?;
        let window_calls: u64 = window
            .iter()
            .map(|r| field(r, "calls"))
            .sum::<Result<u64>>()?;
        ensure!(
            retries == self.window_retries && window_calls == self.window_calls,
            "window: {window_calls} calls, {retries} retries"
        );
        let burst = rows_of(&report["callers"], "site_burst_callers")?;
        let full = field(health, "callers_full")?;
        for r in &burst {
            ensure!(
                field(r, "calls")? == 1,
                "a burst site with {:?} calls",
                r["calls"]
            );
        }
        // A burst call neither counted nor refused by the full caller map
        // was lost on the way (a skipped run, a full in-flight map): it
        // must be in the same slack as the trigger sites' shortfall.
        let burst_short = BURST_SITES.saturating_sub(burst.len() as u64 + full);
        println!(
            "    window call: {retries} area retries of {}; burst: {} sites counted, one call each, {} calls not counted (caller map full), {burst_short} lost on the way; short {short}, reported missed {slack}",
            self.window_retries,
            burst.len(),
            full
        );
        ensure!(
            short + burst_short <= slack,
            "{short} calls short at the trigger's sites and {burst_short} of the burst ({} counted, {full} refused by the full caller map, of {BURST_SITES}), {slack} reported missed",
            burst.len()
        );
        Ok(())
    }
}

/// `site` called over and over (64 KiB each, `pause` between runs) until `until` says stop; the
/// calls and NULLs it made, from the trigger's totals. Runs whose debugfs
/// write itself fails (ENOMEM under injection) are not calls: the totals
/// count what ran.
fn churn(site: &str, pause: Duration, mut until: impl FnMut() -> bool) -> Result<(u64, u64)> {
    let (c0, n0) = trigger::totals()?;
    let mut failed_writes = 0;
    while !until() {
        if trigger::run(site, 4, 64 << 10, Arm::Off).is_err() {
            failed_writes += 1;
        }
        std::thread::sleep(pause);
    }
    let (c1, n1) = read_until_ok(trigger::totals)?;
    if failed_writes > 0 {
        println!("    ({failed_writes} trigger runs refused by the kernel: their write failed)");
    }
    Ok((c1 - c0, n1 - n0))
}

/// A read that fails while the kernel fails allocations, tried again.
fn read_until_ok<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    for _ in 0..50 {
        if let Ok(v) = f() {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// `name value` of /proc/vmstat.
fn vmstat(name: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/vmstat")?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("no {name} in /proc/vmstat"))?
        .parse()
        .context("vmstat")
}

fn mem_total_kib() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("MemTotal")
}

/// Phase 1: stress-ng's memory hogs fill the guest while the trigger
/// calls; the kernel must have reclaimed and OOM-killed (its own counters
/// say so), or the phase did not happen.
fn memory_pressure(truth: &mut Truth) -> Result<()> {
    println!("  phase 1: stress-ng --vm for {STRESS_SECS} s");
    let (oom0, scan0) = (vmstat("oom_kill")?, vmstat("pgscan_direct")?);
    let mut stress: Child = Command::new("stress-ng")
        // Two hogs sharing 1.4 times the guest's memory (stress-ng
        // divides --vm-bytes among them), prefaulted at mmap
        // (--vm-populate: touched by hand under TCG, the guest would not
        // fill in time): more than there is, so the kernel reclaims, then
        // the OOM killer takes one, and --oomable leaves it dead: the one
        // left fits. A percentage would be of the memory available,
        // shared by the hogs: no OOM.
        .args([
            "--vm",
            "2",
            "--vm-bytes",
            &format!("{}K", mem_total_kib()? * 7 / 5),
            "--vm-populate",
            "--oomable",
            "--vm-keep",
            "--timeout",
            &format!("{STRESS_SECS}s"),
            "--quiet",
        ])
        .spawn()
        .context("stress-ng (cargo xtask setup installs it)")?;
    let started = Instant::now();
    // Paced: the hogs need the guest's CPUs to fill its memory.
    let (calls, nulls) = churn("vmalloc_nofail", Duration::from_millis(5), || {
        started.elapsed() > Duration::from_secs(STRESS_SECS)
    })?;
    let status = stress.wait()?;
    let (oom, scan) = (vmstat("oom_kill")? - oom0, vmstat("pgscan_direct")? - scan0);
    println!(
        "    stress-ng {status}; {oom} OOM kills, {scan} pages scanned by direct reclaim; trigger: {calls} calls, {nulls} NULL"
    );
    ensure!(
        oom > 0 && scan > 0,
        "no OOM kill or no direct reclaim: no pressure"
    );
    truth.add("site_vmalloc_nofail", calls, nulls);
    Ok(())
}

/// Phase 2: the trigger's exhaustion window, its NOFAIL call retrying
/// (a jiffy a turn) until the trigger frees at a known sleep; three runs.
fn vmalloc_exhaustion(truth: &mut Truth) -> Result<()> {
    println!("  phase 2: vmalloc window exhausted, its NOFAIL call looping");
    for free_at in [20, 40, 60] {
        let ex = crate::whatif::exhaust_area(0, free_at)?;
        println!("    window run: {} retry sleeps, ok {}", ex.0, ex.1);
        ensure!(ex.1, "the window call failed");
        truth.window_calls += 1;
        truth.window_retries += ex.0;
    }
    Ok(())
}

/// Phase 3 is on: every task's allocations may fail.
static INJECTING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

const EVERYWHERE: [&str; 2] = [
    "/sys/kernel/debug/failslab",
    "/sys/kernel/debug/fail_page_alloc",
];

/// failslab and fail_page_alloc for every task (task-filter N), waiting
/// allocations and order 0 included, at `percent`; 0 turns them off. The
/// probabilities go on last and come off first: once on, these writes
/// can fail themselves (ENOMEM), and are tried again.
fn set_everywhere(percent: u32) -> Result<()> {
    let set = |dir: &str, file: &str, value: &str| -> Result<()> {
        read_until_ok(|| {
            std::fs::write(format!("{dir}/{file}"), value)
                .with_context(|| format!("write {value:?} to {dir}/{file}"))
        })
    };
    if percent == 0 {
        for dir in EVERYWHERE {
            set(dir, "probability", "0")?;
        }
        for dir in EVERYWHERE {
            set(dir, "task-filter", "Y")?;
        }
        return Ok(());
    }
    let page = EVERYWHERE[1];
    set(page, "ignore-gfp-highmem", "N")?;
    set(page, "min-order", "0")?;
    for dir in EVERYWHERE {
        for (file, value) in [
            ("probability", "0"),
            ("ignore-gfp-wait", "N"),
            ("task-filter", "N"),
            ("verbose", "0"),
            ("interval", "1"),
            ("space", "0"),
            ("times", "-1"),
        ] {
            set(dir, file, value)?;
        }
    }
    for dir in EVERYWHERE {
        set(dir, "probability", &percent.to_string())?;
    }
    Ok(())
}

/// Phase 3: every task's allocations fail at INJECT_PERCENT while the
/// trigger calls plain vmalloc (whose failures reach it as NULL).
fn inject_everywhere(truth: &mut Truth) -> Result<()> {
    println!(
        "  phase 3: failslab and fail_page_alloc at {INJECT_PERCENT} % for every task, {INJECT_SECS} s"
    );
    let started = Instant::now();
    INJECTING.store(true, std::sync::atomic::Ordering::Relaxed);
    set_everywhere(INJECT_PERCENT)?;
    let churned = churn("vmalloc", Duration::ZERO, || {
        started.elapsed() > Duration::from_secs(INJECT_SECS)
    });
    // Off whatever happened.
    set_everywhere(0)?;
    INJECTING.store(false, std::sync::atomic::Ordering::Relaxed);
    let (calls, nulls) = churned?;
    println!("    trigger: {calls} calls, {nulls} NULL");
    ensure!(
        nulls > 0,
        "no allocation of the trigger failed: no injection"
    );
    truth.add("site_vmalloc", calls, nulls);
    Ok(())
}

/// Phase 4: BURST_SITES call sites at once, then HELD_CALLS NOFAIL calls
/// looping together (should_failslab failing their vm_struct until a
/// budget is used up), twice MAX_INFLIGHT.
fn callers_and_inflight(truth: &mut Truth) -> Result<()> {
    println!(
        "  phase 4: {BURST_SITES} call sites, then {HELD_CALLS} NOFAIL calls in flight at once"
    );
    let (c0, _) = trigger::totals()?;
    trigger::run("burst", BURST_SITES, 4096, Arm::Off)?;
    let (c1, _) = trigger::totals()?;
    ensure!(c1 - c0 == BURST_SITES, "the burst made {} calls", c1 - c0);
    let turns = trigger::hz()? / 10;
    let budget = HELD_CALLS * turns;
    Injector::ShouldFailslab.arm(budget)?;
    let held: Vec<_> = (0..HELD_CALLS)
        .map(|_| std::thread::spawn(|| trigger::run("vmalloc_nofail", 1, 64 << 10, Arm::Call)))
        .collect();
    let mut failed = None;
    for h in held {
        if let Err(e) = h.join().expect("held call thread") {
            failed = Some(e);
        }
    }
    let injected = Injector::ShouldFailslab.release(budget)?;
    Injector::ShouldFailslab.disarm()?;
    if let Some(e) = failed {
        bail!("a held call: {e:#}");
    }
    println!("    {injected} area failures injected into {HELD_CALLS} held calls");
    truth.add("site_vmalloc_nofail", HELD_CALLS, 0);
    Ok(())
}

/// Every 10 s, what the guest is doing: the trigger's totals, memory
/// available, and where the harness's and stress-ng's tasks wait. A
/// phase that hangs shows where.
struct Progress(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Progress {
    fn start() -> Self {
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(10));
                let avail = std::fs::read_to_string("/proc/meminfo")
                    .ok()
                    .and_then(|m| {
                        m.lines()
                            .find(|l| l.starts_with("MemAvailable:"))
                            .map(str::to_string)
                    })
                    .unwrap_or_default();
                let (calls, nulls) = trigger::totals().unwrap_or_default();
                let waits = waiting_tasks();
                println!(
                    "    [{:.0} s] trigger {calls} calls {nulls} NULL; {}; tasks waiting: {waits}",
                    started.elapsed().as_secs_f64(),
                    avail.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        });
        Self(done)
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `comm:wchan` of the harness's, stress-ng's and nofail's tasks, counted
/// (read in process: an `sh` loop forking `cat` per task took longer than
/// the interval under pressure).
fn waiting_tasks() -> String {
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    let read = |p: &std::path::Path, f: &str| {
        std::fs::read_to_string(p.join(f))
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    for proc_ in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(tasks) = std::fs::read_dir(proc_.path().join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let comm = read(&task.path(), "comm");
            if comm == "vm-tests" || comm.starts_with("stress-ng") || comm == "nofail" {
                let state = read(&task.path(), "stat")
                    .rsplit(") ")
                    .next()
                    .and_then(|r| r.split(' ').next().map(str::to_string))
                    .unwrap_or_default();
                let wchan = read(&task.path(), "wchan");
                *seen.entry(format!("{comm}:{state}:{wchan}")).or_default() += 1;
            }
        }
    }
    seen.iter().map(|(k, n)| format!("{n}x{k} ")).collect()
}

/// Two scrapers reading /metrics every 250 ms from the start of the first
/// phase to the end of the last. A scrape is answered when a 200 with
/// the exposition came back; anything else (an error status, a reset, a
/// timeout, counters going down) fails the scenario, except an ENOMEM the
/// kernel gave the scraper itself while phase 3 fails every task's
/// allocations (its connect, send or receive): those are counted apart,
/// as scrapes not made.
struct Scrapers {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Result<Scraped>>>,
}

#[derive(Default)]
struct Scraped {
    answered: u64,
    slowest_ms: u64,
    refused_to_client: u64,
    unanswered: u64,
    lost_under_injection: u64,
}

impl Scrapers {
    fn start(n: usize) -> Self {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let done = done.clone();
                std::thread::spawn(move || -> Result<Scraped> {
                    let mut got = Scraped::default();
                    let mut last = 0.0f64;
                    while !done.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let injecting = INJECTING.load(Ordering::Relaxed);
                        let (code, body) = match http_get(9464, "/metrics") {
                            Ok(answer) => answer,
                            Err(e) if own_enomem(&e) => {
                                got.refused_to_client += 1;
                                continue;
                            }
                            // Closed before an answer: nofail must have
                            // said why (checked against its journal).
                            Err(e) if closed_unanswered(&e) => {
                                got.unanswered += 1;
                                continue;
                            }
                            // Begun while every task's allocations
                            // fail, the request or its answer can be
                            // lost on the loopback path itself: counted,
                            // with where nofail was (idle in epoll_wait
                            // means it never saw it).
                            Err(e) if injecting || INJECTING.load(Ordering::Relaxed) => {
                                if got.lost_under_injection == 0 {
                                    println!(
                                        "    a scrape begun under injection lost after {:.1} s ({e:#}); nofail serve then:\n{}",
                                        t.elapsed().as_secs_f64(),
                                        serve_state()
                                    );
                                }
                                got.lost_under_injection += 1;
                                continue;
                            }
                            Err(e) => {
                                return Err(e.context(format!(
                                    "a scrape, after {:.1} s; nofail serve then:\n{}",
                                    t.elapsed().as_secs_f64(),
                                    serve_state()
                                )));
                            }
                        };
                        got.slowest_ms = got.slowest_ms.max(t.elapsed().as_millis() as u64);
                        ensure!(code == 200, "a scrape answered {code}: {body}");
                        let calls =
                            sample(&body, "nofail_vmalloc_calls_total", "site_vmalloc_nofail", "")?;
                        ensure!(calls >= last, "calls went down: {last} -> {calls}");
                        last = calls;
                        got.answered += 1;
                        std::thread::sleep(Duration::from_millis(250));
                    }
                    Ok(got)
                })
            })
            .collect();
        Self { done, threads }
    }

    fn stop(self) -> Result<Scraped> {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Scraped::default();
        for t in self.threads {
            let got = t.join().expect("scraper")?;
            all.answered += got.answered;
            all.slowest_ms = all.slowest_ms.max(got.slowest_ms);
            all.refused_to_client += got.refused_to_client;
            all.unanswered += got.unanswered;
            all.lost_under_injection += got.lost_under_injection;
        }
        Ok(all)
    }
}

/// The connection closed (or reset) before an HTTP head came.
fn closed_unanswered(e: &anyhow::Error) -> bool {
    e.to_string().contains("no HTTP head")
        || e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionReset)
        })
}

/// An error of the scraper's own system calls: ENOMEM, ENOBUFS.
fn own_enomem(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| matches!(io.raw_os_error(), Some(libc::ENOMEM | libc::ENOBUFS)))
    })
}

/// Whether `nofail serve` still runs, where its threads are in the
/// kernel, and its last words: for a scrape that was not answered.
fn serve_state() -> String {
    let mut out = String::new();
    match main_pid("nofail") {
        Ok(pid) => {
            for task in std::fs::read_dir(format!("/proc/{pid}/task"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let read =
                    |f: &str| std::fs::read_to_string(task.path().join(f)).unwrap_or_default();
                out += &format!(
                    "{} {} {}\n{}",
                    task.path().display(),
                    read("comm").trim(),
                    read("wchan"),
                    read("stack")
                );
            }
        }
        Err(e) => out += &format!("no main process: {e:#}\n"),
    }
    out += &sh("systemctl show -p NRestarts,ActiveState,Result nofail; journalctl -u nofail -n 15 --no-pager -o cat")
        .map(|(_, text)| text)
        .unwrap_or_default();
    out
}
