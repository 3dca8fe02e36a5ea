// SPDX-License-Identifier: MIT OR Apache-2.0
//! `vm-tests --bench FILE`: what each way of tracing costs per vmalloc
//! call, measured in one boot with the configurations interleaved in a
//! carryover-balanced order (`order`): untraced, nofail's full mode with
//! kprobes and with fentry, nofail's sentinel mode, a bpftrace script
//! doing the full mode's per-caller aggregation, and another process that
//! traces nothing. The cost is this thread's
//! CPU time (user and kernel, tracing programs included, sleeps and other
//! tasks excluded), read inside this one process after warm-up; under
//! `cargo xtask bench`'s `-icount shift=0,sleep=off` a guest nanosecond is
//! one guest instruction. The guest has one CPU: the icount clock is
//! shared, so with two, whatever the other CPU ran meanwhile counted as
//! this thread's time (a busy loop there made an 8 KiB vmalloc cost 60 %
//! more). The
//! kernel's own run statistics (kernel.bpf_stats_enabled) give nofail's
//! program runs per call. `--bench-configs` runs a subset (untraced
//! always: the others are measured against it), as `cargo xtask bench
//! --compare` does with untraced alone. Nothing here asserts a time.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::bpf;
use serde_json::{Value, json};

use crate::{
    harness::{Ctx, Trace, field},
    trigger::{self, Arm, Injector},
};

/// One round per configuration: the balanced order needs as many.
const ROUNDS: usize = CONFIGS.len();
const K: u64 = 3;
/// How long bpftrace may take to attach (it parses the kernel's BTF;
/// under plain TCG that takes about a minute).
const BPFTRACE_ATTACH_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Per-caller calls, NOFAIL calls, NULL returns and latency, as nofail's
/// full mode keeps them. Debian's bpftrace refuses kfunc on functions with
/// more than six parameters, so it uses kprobes and reads the stack-passed
/// `caller` (argument 9) as nofail's kprobe mode does: above the return
/// address on x86-64 (`sp + 24`, after arguments 7 and 8), at `sp` on
/// arm64 (arguments 1 to 8 in registers, no return address pushed).
#[cfg(target_arch = "x86_64")]
const CALLER_AT_SP: &str = "24";
#[cfg(target_arch = "aarch64")]
const CALLER_AT_SP: &str = "0";

fn bpftrace_program() -> String {
    BPFTRACE.replace("CALLER_AT_SP", CALLER_AT_SP)
}

const BPFTRACE: &str = r#"
BEGIN { printf("READY\n"); }
kprobe:__vmalloc_node_range_noprof {
    @start[tid] = nsecs; @caller[tid] = *(uint64 *)(reg("sp") + CALLER_AT_SP); @nf[tid] = arg4 & 0x8000;
}
kretprobe:__vmalloc_node_range_noprof /@start[tid]/ {
    $c = ksym(@caller[tid]);
    @calls[$c] = count();
    @lat[$c] = sum(nsecs - @start[tid]);
    if (@nf[tid]) { @nofail[$c] = count(); }
    if (retval == 0) { @null[$c] = count(); }
    delete(@start[tid]); delete(@caller[tid]); delete(@nf[tid]);
}
"#;

struct Workload {
    name: &'static str,
    /// The caller row the calls land in, and how many one run makes: `batches`
    /// of `run`, each starting from a purge of lazily freed vmap areas.
    caller: Caller,
    calls: u64,
    batches: u32,
    run: fn() -> Result<()>,
}

const WORKLOADS: &[Workload] = &[
    // 250 areas of 17 pages (a guard page each) stay under the one-CPU
    // guest's lazy-free limit (lazy_max_pages(): 8,192 pages), so a batch
    // that starts from a purge meets none: a purge is worth thousands of
    // instructions per call.
    Workload {
        name: "vmalloc_64k",
        caller: Caller::Trigger("site_vmalloc"),
        calls: 2000,
        batches: LAYOUTS,
        run: || vmalloc(250, 64 << 10),
    },
    // 500 areas of 3 pages: 1,500.
    Workload {
        name: "vmalloc_8k",
        caller: Caller::Trigger("site_vmalloc"),
        calls: 4000,
        batches: LAYOUTS,
        run: || vmalloc(500, 8 << 10),
    },
    Workload {
        name: "bpf_map_create",
        caller: Caller::ArrayMap,
        calls: 50,
        batches: 1,
        run: || (0..50).try_for_each(|_| bpf::create_big_array_map()),
    },
    Workload {
        name: "nofail_3_retries",
        caller: Caller::Trigger("site_vmalloc_nofail"),
        calls: 1,
        batches: 1,
        run: || {
            let (r, left) =
                trigger::run_injected(Injector::ShouldFailslab, K, "vmalloc_nofail", 1, 64 << 10)?;
            ensure!(r.null == 0 && left == 0, "{r:?}");
            Ok(())
        },
    },
];

/// Whose row a workload's calls land in.
#[derive(Clone, Copy, PartialEq)]
enum Caller {
    /// A trigger module site.
    Trigger(&'static str),
    /// Where an array map's vmalloc call is recorded: the compiler decides
    /// (`array_map_alloc` on x86-64, `bpf_map_area_alloc` on arm64), so it
    /// is read from /proc/vmallocinfo (`bpf::array_map_caller`).
    ArrayMap,
}

impl Caller {
    fn name(self) -> Result<&'static str> {
        match self {
            Self::Trigger(site) => Ok(site),
            Self::ArrayMap => bpf::array_map_caller(),
        }
    }
}

fn vmalloc(count: u64, size: u64) -> Result<()> {
    let r = trigger::run("vmalloc", count, size, Arm::Off)?;
    ensure!(r.calls == count && r.null == 0, "trigger run: {r:?}");
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Config {
    Untraced,
    Nofail(&'static str),
    Bpftrace,
    /// A process that traces nothing (`sleep`), started and stopped as the
    /// tracers are: what any new process's kernel memory (its stack, page
    /// tables) does to the cost of vmalloc calls. Measured on 8 KiB calls
    /// after a full-mode run: -4 to +57 instructions per call.
    OtherProcess,
}

const CONFIGS: &[(&str, Config)] = &[
    ("untraced", Config::Untraced),
    ("nofail_kprobe", Config::Nofail("kprobe")),
    ("nofail_fentry", Config::Nofail("fentry")),
    ("nofail_sentinel", Config::Nofail("sentinel")),
    ("bpftrace", Config::Bpftrace),
    ("other_process", Config::OtherProcess),
];

/// The configurations of round `round` (of `n`, even): a Williams
/// design. Over `n` rounds every configuration comes right after every
/// other one exactly once and sits at every position once. What one
/// configuration leaves behind (a torn-down tracer's freed memory) moves
/// the next one's cost by up to 2.5 % on 8 KiB calls; a plain rotation
/// (A B C D E, B C D E A, ...) put sentinel after the fentry mode in four
/// rounds of five.
fn order(n: usize, round: usize) -> Vec<usize> {
    // 0, 1, n-1, 2, n-2, ...: the successive differences are all distinct.
    (0..n)
        .map(|k| {
            let step = if k % 2 == 1 { k.div_ceil(2) } else { n - k / 2 };
            (round + step % n) % n
        })
        .collect()
}

/// One configuration in one round: ns per call per workload, calls
/// counted per workload caller, program runs and run time.
struct Sample {
    ns_per_call: Vec<f64>,
    counted: Vec<Option<u64>>,
    runs: u64,
    run_time_ns: u64,
    skipped: u64,
}

impl Sample {
    /// A configuration that runs no tracing program and counts nothing.
    fn untraced(ns_per_call: Vec<f64>) -> Self {
        Sample {
            ns_per_call,
            counted: vec![None; WORKLOADS.len()],
            runs: 0,
            run_time_ns: 0,
            skipped: 0,
        }
    }
}

/// This thread's CPU time (user and kernel): what its calls cost, tracing
/// programs included (they run in its context), without the time other
/// tasks (bpftrace printing, nofail reading its maps) took from the vCPU
/// meanwhile, and without the time it slept.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Batches per vmalloc workload, each under its own memory layout.
const LAYOUTS: u32 = 8;

/// A memory layout for one batch: preallocated BPF hash maps held through
/// it, 0 to 32 of them, of 16 to 4,096 64-byte values (log-uniform),
/// drawn from `seed`. Hash maps, not array maps: an array map's vmalloc
/// counts at the array map's caller, whose calls the
/// `bpf_map_create` workload checks (the first three runs with array maps
/// counted 1,018 calls there for 300 made).
/// What else the kernel holds moves a vmalloc call's cost both ways:
/// measured on 8 KiB calls (test kernel, one boot, one layout), one held
/// 64 KiB map cost +78 instructions per call, four +16, 27 of them -51,
/// 27 kmalloc'd 16 KiB maps -50. A configuration measured in one layout
/// draws one of these by luck. Averaged over layouts, as Stabilizer
/// (Curtsinger and Berger, ASPLOS 2013) does for user programs, the
/// `sleep` process and the 16 KiB maps came to within 1 of untraced,
/// and 27 held 64 KiB maps to +17 (8 KiB calls) and +120 (64 KiB): what
/// is left is what the held memory itself costs.
fn layout(seed: u64) -> Result<Vec<std::os::fd::OwnedFd>> {
    layout_entries(seed)
        .into_iter()
        .map(|entries| bpf::hash_map(64, entries).context("cannot create a layout map"))
        .collect()
}

/// The 64-byte entries of each map of layout `seed`.
fn layout_entries(seed: u64) -> Vec<u32> {
    // splitmix64
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..next() % 33)
        .map(|_| (2f64.powf(10.0 + (next() % 33) as f64 / 4.0) / 64.0) as u32)
        .collect()
}

/// Cost per call of each workload in `round`. Batch `b` of workload `w`
/// runs under layout (round, w, b): every configuration of a round meets
/// the same layouts, so a round's differences compare like with like.
fn measure_all(round: usize) -> Result<Vec<f64>> {
    WORKLOADS
        .iter()
        .enumerate()
        .map(|(w, work)| {
            let mut spent = 0;
            for b in 0..work.batches {
                let held = layout(((round as u64) << 32) | ((w as u64) << 16) | b as u64)?;
                // Every batch starts with no lazily freed vmap area pending;
                // the purge itself is not measured.
                trigger::purge_lazy()?;
                let t = thread_cpu_ns();
                (work.run)()?;
                spent += thread_cpu_ns().saturating_sub(t);
                drop(held);
                // The maps are freed from a workqueue: let it run now, not
                // during the next batch.
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Ok(spent as f64 / work.calls as f64)
        })
        .collect()
}

fn counted_by_nofail(report: &Value, caller: &str) -> Result<u64> {
    nofail_test_support::json::sum(
        crate::harness::rows_of(&report["callers"], caller)?,
        "calls",
    )
}

fn with_nofail(ctx: &Ctx, mode: &str, round: usize) -> Result<Sample> {
    let trace = Trace::start(ctx, &format!("bench_{mode}_{round}"), &["--mode", mode])?;
    let ns = measure_all(round);
    let report = trace.finish()?;
    let ns_per_call = ns?;
    let programs = report["health"]["programs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let sum = |k: &str| programs.iter().map(|p| field(p, k)).sum::<Result<u64>>();
    Ok(Sample {
        ns_per_call,
        // Sentinel counts no calls, only what failed.
        counted: WORKLOADS
            .iter()
            .map(|w| {
                (mode != "sentinel")
                    .then(|| counted_by_nofail(&report, w.caller.name()?))
                    .transpose()
            })
            .collect::<Result<_>>()?,
        runs: sum("run_count")?,
        run_time_ns: sum("run_time_ns")?,
        skipped: field(&report["health"], "missed_runs")?,
    })
}

fn with_bpftrace(round: usize) -> Result<Sample> {
    let mut child = Command::new("bpftrace")
        .args(["-e", &bpftrace_program()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run bpftrace")?;
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    // A bpftrace that never gets its probes attached (one wall-time boot
    // waited on it until the VM's timeout) is killed, and the run fails.
    let pid = child.id() as i32;
    let (attached, watch) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        let late = watch.recv_timeout(BPFTRACE_ATTACH_LIMIT).is_err();
        if late {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        late
    });
    // BEGIN runs once every probe is attached ("Attaching N probes..."
    // comes before).
    let ready = loop {
        match lines.next() {
            Some(Ok(line)) if line.starts_with("READY") => break Ok(()),
            Some(Ok(_)) => {}
            Some(Err(e)) => break Err(e.into()),
            None => break Err(anyhow::anyhow!("bpftrace exited before attaching")),
        }
    };
    let _ = attached.send(());
    if watchdog.join().unwrap_or(false) {
        let _ = child.wait();
        anyhow::bail!(
            "bpftrace did not attach within {} s",
            BPFTRACE_ATTACH_LIMIT.as_secs()
        );
    }
    ready?;
    let ns = measure_all(round);
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let maps: Vec<String> = lines.map_while(Result::ok).collect();
    child.wait()?;
    // `@calls[site_vmalloc]: 2000` (ksym() gives the symbol without offset).
    let calls = |caller: &str| -> u64 {
        maps.iter()
            .filter(|l| {
                l.strip_prefix("@calls[")
                    .and_then(|r| r.split(']').next())
                    .is_some_and(|sym| sym == caller || sym.starts_with(&format!("{caller}+")))
            })
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
            .sum()
    };
    Ok(Sample {
        ns_per_call: ns?,
        counted: WORKLOADS
            .iter()
            .map(|w| Ok(Some(calls(w.caller.name()?))))
            .collect::<Result<_>>()?,
        runs: 0,
        run_time_ns: 0,
        skipped: 0,
    })
}

fn with_other_process(round: usize) -> Result<Sample> {
    let mut child = Command::new("sleep")
        .arg("1000")
        .spawn()
        .context("cannot run sleep")?;
    let ns = measure_all(round);
    child.kill()?;
    child.wait()?;
    Ok(Sample::untraced(ns?))
}

/// Idle threads held through the whole benchmark, as on a host: each has
/// a kernel stack, a vmalloc area (16 KiB and a guard page). The bare
/// guest holds about 86 vmalloc areas where a host holds hundreds to
/// thousands, and in so empty a space what any tracer holds (sentinel
/// mode held 11: its programs, a hash table, a ring buffer, a kretprobe's
/// pool) reshapes the free-area tree vmalloc searches: an instruction
/// profile of 8 KiB calls (test kernel, one layout) put +65 instructions
/// per call with sentinel loaded, all in alloc_vmap_area() (the lowest-fit
/// search and the tree's augment propagation), and +8 with 500 threads
/// started (417 kept; testing/profile).
/// `cargo xtask bench --backdrop-threads N` (NOFAIL_BENCH_THREADS) sets
/// how many; 0 is the bare guest.
const HOST_THREADS: usize = 500;
/// For every five kept, one more is started and exits again, leaving
/// holes as thread churn does.
const KEPT_PER_EXITED: usize = 5;

fn host_threads() -> Result<usize> {
    match std::env::var("NOFAIL_BENCH_THREADS") {
        Ok(v) => v
            .parse()
            .with_context(|| format!("NOFAIL_BENCH_THREADS={v:?}: not a number")),
        Err(_) => Ok(HOST_THREADS),
    }
}

/// The host's threads (`HOST_THREADS`), parked until dropped.
struct Backdrop {
    release: Vec<std::sync::mpsc::Sender<()>>,
}

impl Backdrop {
    fn start(kept: usize) -> Result<Self> {
        let mut release = Vec::new();
        let mut exiting = Vec::new();
        for i in 0..kept + kept / KEPT_PER_EXITED {
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let thread = std::thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || {
                    let _ = rx.recv();
                })
                .context("cannot start a backdrop thread")?;
            // Every sixth exits: kept / 5 of them, as kept + kept / 5
            // threads hold that many complete groups of six.
            if i % (KEPT_PER_EXITED + 1) == KEPT_PER_EXITED {
                exiting.push((tx, thread));
            } else {
                release.push(tx);
            }
        }
        for (tx, thread) in exiting {
            drop(tx);
            let _ = thread.join();
        }
        Ok(Self { release })
    }

    fn threads(&self) -> usize {
        self.release.len()
    }
}

/// Live vmalloc areas (lazily freed ones left out).
fn vmalloc_areas() -> Result<usize> {
    Ok(std::fs::read_to_string("/proc/vmallocinfo")?
        .lines()
        .filter(|l| !l.contains("unpurged"))
        .count())
}

/// The configurations `--bench-configs` names, as indices into CONFIGS in
/// table order, untraced always first: every other configuration is
/// measured against it. None named: all of them.
fn selected(names: &[String]) -> Result<Vec<usize>> {
    if let Some(unknown) = names
        .iter()
        .find(|n| !CONFIGS.iter().any(|(name, _)| name == n))
    {
        anyhow::bail!(
            "no benchmark configuration {unknown:?} (one of {})",
            CONFIGS
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((0..CONFIGS.len())
        .filter(|&i| i == 0 || names.is_empty() || names.iter().any(|n| n == CONFIGS[i].0))
        .collect())
}

fn median_min_max(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Runs the configurations named in `configs` (all when empty; untraced
/// always) and writes their results to `out`.
pub fn run(ctx: &Ctx, out: &std::path::Path, configs: &[String]) -> Result<()> {
    let configs = selected(configs)?;
    ctx.load_trigger()?;
    // Read now, not in a measured round: it makes a map of its own.
    bpf::array_map_caller()?;
    // Run statistics cost every program run two clock reads: off while
    // costs are measured, on in a round of their own afterwards.
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0")
        .context("cannot set BPF run statistics")?;
    let backdrop = Backdrop::start(host_threads()?)?;
    trigger::purge_lazy()?;
    let areas = vmalloc_areas()?;
    println!(
        "  backdrop: {} threads, {areas} vmalloc areas",
        backdrop.threads()
    );
    let samples = measure_rounds(ctx, &configs)?;
    let stats = statistics_round(ctx, &configs)?;
    let (table, configs_json) = summarize(&configs, &samples, &stats, backdrop.threads(), areas);
    print!("{table}");
    let icount = std::env::var("NOFAIL_BENCH_CLOCK").unwrap_or_else(|_| "wall".into());
    let json = json!({
        "clock": icount,
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease")?.trim(),
        "rounds": ROUNDS,
        "backdrop": {"threads": backdrop.threads(), "vmalloc_areas": areas},
        "configs": configs_json,
        "table": table,
    });
    std::fs::write(out, serde_json::to_string_pretty(&json)? + "\n")?;
    Ok(())
}

/// The measured rounds of `configs` (indices into CONFIGS), in a
/// carryover-balanced order (after one warm-up): samples per
/// configuration, in the order of `configs`. A subset keeps the six
/// rounds, so that its layouts are those of the whole set.
fn measure_rounds(ctx: &Ctx, configs: &[usize]) -> Result<Vec<Vec<Sample>>> {
    measure_all(ROUNDS + 1)?; // warm up
    let mut samples: Vec<Vec<Sample>> = configs.iter().map(|_| Vec::new()).collect();
    for round in 0..ROUNDS {
        for i in order(configs.len(), round) {
            let (name, config) = &CONFIGS[configs[i]];
            let s = match config {
                Config::Untraced => Sample::untraced(measure_all(round)?),
                Config::Nofail(mode) => with_nofail(ctx, mode, round)?,
                Config::Bpftrace => with_bpftrace(round)?,
                Config::OtherProcess => with_other_process(round)?,
            };
            println!(
                "  round {round} {name}: {}",
                s.ns_per_call
                    .iter()
                    .map(|n| format!("{n:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            samples[i].push(s);
        }
    }
    Ok(samples)
}

/// Program runs and time per call from the kernel, in one more round
/// per nofail configuration of `configs` with run statistics on.
fn statistics_round(ctx: &Ctx, configs: &[usize]) -> Result<Vec<Option<Sample>>> {
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
        .context("cannot enable BPF run statistics")?;
    let mut stats: Vec<Option<Sample>> = Vec::new();
    for (name, config) in configs.iter().map(|&i| &CONFIGS[i]) {
        stats.push(match config {
            Config::Nofail(mode) => {
                let s = with_nofail(ctx, mode, ROUNDS)?;
                println!(
                    "  statistics round {name}: {} runs, {} ns",
                    s.runs, s.run_time_ns
                );
                Some(s)
            }
            _ => None,
        });
    }
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0")?;
    Ok(stats)
}

/// The printed table and the JSON rows, per configuration of `configs`
/// and workload against the untraced run of the same round.
fn summarize(
    configs: &[usize],
    samples: &[Vec<Sample>],
    stats: &[Option<Sample>],
    threads: usize,
    areas: usize,
) -> (String, Vec<serde_json::Value>) {
    let calls_per_round: u64 = WORKLOADS.iter().map(|w| w.calls).sum();
    let mut table = format!("backdrop: {threads} idle threads, {areas} vmalloc areas\n");
    table += &format!(
        "{:<16} {:<17} {:>12} {:>10} {:>26} {:>16}\n",
        "CONFIG", "WORKLOAD", "NS/CALL", "ADDED", "OVERHEAD med [min-max]", "COUNTED"
    );
    let mut configs_json = Vec::new();
    for (i, (name, _)) in configs.iter().map(|&c| &CONFIGS[c]).enumerate() {
        let mut workloads_json = Vec::new();
        for (w, work) in WORKLOADS.iter().enumerate() {
            let ns: Vec<f64> = samples[i].iter().map(|s| s.ns_per_call[w]).collect();
            // Each round against the untraced run of the same round.
            let over: Vec<f64> = samples[i]
                .iter()
                .zip(&samples[0])
                .map(|(s, base)| s.ns_per_call[w] / base.ns_per_call[w] - 1.0)
                .collect();
            let added: Vec<f64> = samples[i]
                .iter()
                .zip(&samples[0])
                .map(|(s, base)| s.ns_per_call[w] - base.ns_per_call[w])
                .collect();
            let (ns_med, ns_min, ns_max) = median_min_max(ns.clone());
            let (o_med, o_min, o_max) = median_min_max(over);
            let (a_med, _, _) = median_min_max(added);
            // Rows sharing a caller (the two vmalloc sizes) are counted
            // together: completeness is judged per caller.
            let made: u64 = WORKLOADS
                .iter()
                .filter(|x| x.caller == work.caller)
                .map(|x| x.calls)
                .sum::<u64>()
                * ROUNDS as u64;
            let counted: Option<u64> = samples[i].iter().map(|s| s.counted[w]).sum::<Option<u64>>();
            let counted_text = match counted {
                Some(c) => format!("{c}/{made}"),
                None => "-".into(),
            };
            table += &format!(
                "{:<16} {:<17} {:>12.0} {:>10.0} {:>8.1}% [{:>5.1}–{:>5.1}%] {:>16}\n",
                name,
                work.name,
                ns_med,
                a_med,
                o_med * 100.0,
                o_min * 100.0,
                o_max * 100.0,
                counted_text
            );
            workloads_json.push(json!({
                "workload": work.name, "calls_per_run": work.calls,
                // Per round too: round r meets the same layouts on every
                // kernel, so two kernels compare over the same ones.
                "ns_per_call": {"median": ns_med, "min": ns_min, "max": ns_max, "rounds": ns},
                "added_ns_per_call_median": a_med,
                "overhead": {"median": o_med, "min": o_min, "max": o_max},
                "calls_counted": counted, "calls_made": made,
            }));
        }
        let (runs, time) = stats[i]
            .as_ref()
            .map_or((0, 0), |s| (s.runs, s.run_time_ns));
        let skipped: u64 = samples[i].iter().map(|s| s.skipped).sum();
        let made = calls_per_round;
        table += &format!(
            "{:<16} program runs per call {:.2}, program time per call {:.0} ns, skipped runs {skipped}\n",
            name,
            runs as f64 / made as f64,
            time as f64 / made as f64
        );
        configs_json.push(json!({
            "name": name, "workloads": workloads_json,
            "program_runs_per_call": runs as f64 / made as f64,
            "program_ns_per_call": time as f64 / made as f64,
            "skipped_runs": skipped,
        }));
    }
    (table, configs_json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_vary_within_their_bounds_and_repeat_per_seed() {
        let all: Vec<Vec<u32>> = (0..64).map(layout_entries).collect();
        assert_eq!(all, (0..64).map(layout_entries).collect::<Vec<_>>());
        let counts: Vec<usize> = all.iter().map(Vec::len).collect();
        assert!(counts.iter().all(|&n| n <= 32), "{counts:?}");
        assert!(counts.iter().min() < Some(&4), "{counts:?}");
        assert!(counts.iter().max() > Some(&28), "{counts:?}");
        let sizes: Vec<u32> = all.concat();
        assert_eq!(sizes.iter().min(), Some(&16), "1 KiB");
        assert_eq!(sizes.iter().max(), Some(&4096), "256 KiB");
    }

    #[test]
    fn selected_configs_keep_untraced_first_in_table_order() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(CONFIGS[0].1 == Config::Untraced);
        assert_eq!(
            selected(&[]).unwrap(),
            (0..CONFIGS.len()).collect::<Vec<_>>()
        );
        assert_eq!(selected(&names(&["untraced"])).unwrap(), [0]);
        assert_eq!(
            selected(&names(&["bpftrace", "nofail_kprobe"])).unwrap(),
            [0, 1, 4]
        );
        let err = selected(&names(&["untrace"])).unwrap_err().to_string();
        assert!(
            err.contains("\"untrace\"") && err.contains("other_process"),
            "{err}"
        );
    }

    #[test]
    fn backdrop_keeps_the_threads_asked_for() {
        for kept in [0, 4, 10, 13] {
            assert_eq!(Backdrop::start(kept).unwrap().threads(), kept);
        }
    }

    #[test]
    fn order_balances_what_comes_before() {
        let n = CONFIGS.len();
        assert_eq!(
            n % 2,
            0,
            "a Williams square of one round per configuration needs an even count"
        );
        let rounds: Vec<Vec<usize>> = (0..n).map(|r| order(n, r)).collect();
        let mut follows = vec![vec![0; n]; n];
        let mut at = vec![vec![0; n]; n];
        for row in &rounds {
            let mut seen = row.clone();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "{row:?}");
            for (pos, &c) in row.iter().enumerate() {
                at[c][pos] += 1;
            }
            for pair in row.windows(2) {
                follows[pair[0]][pair[1]] += 1;
            }
        }
        for (a, (positions, after)) in at.iter().zip(&follows).enumerate() {
            assert!(
                positions.iter().all(|&k| k == 1),
                "positions of {a}: {positions:?}"
            );
            for (b, &times) in after.iter().enumerate() {
                assert_eq!(times, usize::from(a != b), "{b} after {a}: {rounds:?}");
            }
        }
    }
}
