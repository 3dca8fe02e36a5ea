// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask ci`: the whole suite. The host builds and the tracepoint
//! mode on this kernel, then the VM matrix: every kernel boots and runs
//! the VM tests against the real nofail binary; the lints, fuzz smoke runs
//! and unit tests' build beside the test kernel's scenarios; the unit
//! tests last (docs/testing.md).

use std::{
    path::Path,
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::Result;

use crate::{
    arch::Arch,
    kernels::{Kernel, KernelName, KernelSpec},
    setup,
    suite::{self, Selection},
    util::workspace_root,
    variant, vm,
};

/// The stages run so far: a line as each ends, a table at the end.
struct Tally {
    stages: Vec<Stage>,
    started: Instant,
}

struct Stage {
    name: String,
    ok: bool,
    secs: f64,
}

impl Tally {
    fn new() -> Self {
        Self {
            stages: Vec::new(),
            started: Instant::now(),
        }
    }

    fn record(&mut self, name: &str, ok: bool, secs: f64) {
        println!(
            "xtask ci: {} {name} ({secs:.0} s)",
            if ok { "ok  " } else { "FAIL" }
        );
        self.stages.push(Stage {
            name: name.to_string(),
            ok,
            secs,
        });
    }

    fn step(&mut self, name: &str, f: impl FnOnce() -> Result<bool>) {
        let t = Instant::now();
        let ok = match f() {
            Ok(ok) => ok,
            Err(e) => {
                eprintln!("xtask ci: {name}: {e:#}");
                false
            }
        };
        self.record(name, ok, t.elapsed().as_secs_f64());
    }

    fn failed(&self) -> usize {
        self.stages.iter().filter(|s| !s.ok).count()
    }

    /// Every stage with its time, then the total (wall time: stages that
    /// ran side by side overlap, so the column adds up to more).
    fn table(&self) -> String {
        let width = self.stages.iter().map(|s| s.name.len()).max().unwrap_or(5);
        let mut out = format!("xtask ci: {:<width$}  result  seconds\n", "stage");
        for s in &self.stages {
            out += &format!(
                "xtask ci: {:<width$}  {:<6}  {:>7.0}\n",
                s.name,
                if s.ok { "ok" } else { "FAIL" },
                s.secs
            );
        }
        out += &format!(
            "xtask ci: {:<width$}  {:<6}  {:>7.0}\n",
            "total (wall)",
            if self.failed() == 0 { "ok" } else { "FAIL" },
            self.started.elapsed().as_secs_f64()
        );
        out
    }
}

/// Seconds each fuzz target runs in `ci` (its stage's name says it too).
const CI_FUZZ_SECS: u64 = 5;

fn cargo(root: &Path, args: &[&str]) -> Result<bool> {
    Ok(Command::new("cargo")
        .args(args)
        .current_dir(root)
        .status()?
        .success())
}

pub fn run(kernels_wanted: Vec<KernelName>) -> Result<i32> {
    let root = workspace_root();
    let since = SystemTime::now();
    let mut t = Tally::new();
    t.step("setup (packages, toolchains, tools)", || {
        setup::ensure().map(|()| true)
    });
    let kernels_wanted = if kernels_wanted.is_empty() {
        KernelName::ALL.to_vec()
    } else {
        kernels_wanted
    };
    let stock: Vec<KernelName> = kernels_wanted
        .iter()
        .copied()
        .filter(|&k| k != KernelName::Test)
        .collect();
    // Newest first: the longest suites start first, so the two lanes end
    // closer together (one CI check: debian-latest 289 s, its arm64 329 s,
    // 6.12 132 s, 6.1 92 s, 5.10 12 s; in the old oldest-first order the
    // arm64 suite ran last, alone in its lane).
    let x86: Vec<KernelSpec> = stock.iter().rev().map(|&n| KernelSpec::plain(n)).collect();
    // arm64: Debian's arm64 kernels (6.1, 6.12, the newest; bullseye's 5.10
    // is x86-64's refusal check alone) run the stock scenario set in the
    // same lanes, each right after its x86-64 twin.
    let arm64_wanted = stock.iter().any(|&n| n.has_arm64());
    // The stock kernels are fetched first, one after the other (apt's
    // state of a suite is shared and unlocked, apt.rs), so that the test
    // kernel's build can start next: at the lowest priority, beside the
    // host builds and then the stock lanes, it takes the CPU time they
    // leave idle (the single-threaded parts of the builds and tests, the
    // guests' sleeps). Started after the host checks and the arm64
    // build instead, it ended more than 7 minutes after the stock lanes
    // on a fresh machine (439 s after them when started here; 466 s in
    // a fresh run of 9c2ec99, with the lints and fuzz runs still first;
    // 617 s in one of 8a62145, with them after it).
    let fetched: Vec<Kernel> = with_arm64_twins(x86, arm64_wanted)
        .iter()
        .filter_map(|s| provide(&mut t, s))
        .collect();
    let test_build = kernels_wanted
        .contains(&KernelName::Test)
        .then(|| std::thread::spawn(build_test_kernel_idle));
    t.step("cargo fmt --check", || {
        cargo(&root, &["fmt", "--all", "--check"])
    });
    host_builds(&mut t, &root);
    if arm64_wanted {
        t.step(
            "arm64: nofail, vm-tests and the package built (aarch64, static)",
            || suite::build_for(Arch::Arm64).map(|()| true),
        );
    }
    let arm64_built = arm64_wanted && t.stages.last().is_some_and(|s| s.ok);
    let stock_kernels: Vec<Kernel> = fetched
        .into_iter()
        .filter(|k| k.arch == Arch::X86_64 || arm64_built)
        .collect();
    stock_matrix(&mut t, &stock_kernels);
    let background = match test_build {
        Some(build) => {
            let waited = Instant::now();
            let (built, secs) = build
                .join()
                .unwrap_or_else(|_| (Err(anyhow::anyhow!("the build thread panicked")), 0.0));
            let background = std::thread::spawn(background_checks);
            let spec = KernelSpec::plain(KernelName::Test);
            if let Some(kernel) = record_kernel(
                &mut t,
                &spec,
                built,
                secs,
                &format!(
                    " (nice 19, beside the host builds and the stock lanes; {:.0} s of it after them)",
                    waited.elapsed().as_secs_f64()
                ),
            ) {
                test_kernel(&mut t, &root, since, &kernel);
            }
            background
        }
        None => std::thread::spawn(background_checks),
    };
    let stages = background.join().unwrap_or_else(|_| {
        let mut t = Tally::new();
        t.record("background checks (the thread panicked)", false, 0.0);
        t
    });
    t.stages.extend(stages.stages);
    // Built beside the test kernel's scenarios; run now, at full priority,
    // as its tests time things (serve's deadlines).
    t.step("cargo test (host)", || cargo(&root, &["test"]));

    print!("{}", t.table());
    for s in t.stages.iter().filter(|s| !s.ok) {
        println!("xtask ci: failed: {}", s.name);
    }
    let failed = t.failed();
    println!("{} passed, {failed} failed", t.stages.len() - failed);
    Ok(if failed == 0 { 0 } else { 1 })
}

/// The stock kernels' specs, each followed by its arm64 twin where
/// Debian has one and `arm64` asks for them.
fn with_arm64_twins(x86: Vec<KernelSpec>, arm64: bool) -> Vec<KernelSpec> {
    x86.into_iter()
        .flat_map(|spec| {
            let twin = (arm64 && spec.name.has_arm64()).then(|| KernelSpec {
                arch: Arch::Arm64,
                ..spec.clone()
            });
            std::iter::once(spec).chain(twin)
        })
        .collect()
}

/// The checks no later stage needs: the lints, the dependency policy,
/// the fuzz smoke runs and the unit tests' build (they run at the end, at
/// full priority). A thread at nice 19 runs them beside the test kernel's
/// scenarios, once that kernel is built: those leave about a core idle
/// (606 of the 1,812 core-seconds of the last 15 minutes of a fresh-machine
/// run of 9c2ec99, 45 min 25 s, when these ran first), and at nice 19
/// these take only what the guests leave. Before the test kernel is built
/// every core is busy (its build takes what the host builds and the stock
/// lanes leave), so run there they only made everything later (a fresh
/// run of 8a62145, with them here: 43 min 57 s, 43 stages passed; with so
/// thin a margin, one run is not a bound). Nothing
/// here measures time: the unit tests, which do (serve's deadlines), are
/// only built here.
fn background_checks() -> Tally {
    lowest_priority("the background checks");
    let root = workspace_root();
    let root = root.as_path();
    let mut t = Tally::new();
    t.step("clippy (host crates; nice 19)", || {
        cargo(
            root,
            &[
                "clippy",
                "--workspace",
                "--exclude",
                "nofail-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        )
    });
    t.step("clippy (eBPF crate; nice 19)", || {
        cargo(
            root,
            &[
                "+nightly",
                "clippy",
                "-p",
                "nofail-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ],
        )
    });
    // Advisories are not checked: the RustSec database cannot be fetched
    // here (deny.toml says so).
    t.step("cargo deny (licenses, bans, sources)", || {
        // The lock file's crates for every platform (Windows-only ones
        // included): deny reads them all, and offline it finds only what
        // the local registry holds (a fresh machine lacked
        // anstyle-wincon).
        if !cargo(root, &["fetch", "--locked"])? {
            return Ok(false);
        }
        cargo(
            root,
            &["deny", "--offline", "check", "licenses", "bans", "sources"],
        )
    });
    t.step("cargo test --no-run (host; nice 19)", || {
        cargo(root, &["test", "--no-run"])
    });
    // Short: CI has little time left. Measured on 2 cores with a warm
    // fuzz/target: 127 s after a commit (47 s of it the rebuild), 80 s
    // with nothing changed (docs/fuzzing.md). The long runs are `cargo
    // xtask fuzz --runs`.
    t.step("fuzz: every target 5 s (cargo fuzz; nice 19)", || {
        crate::fuzz::run(crate::fuzz::FuzzArgs {
            target: None,
            secs: CI_FUZZ_SECS,
            runs: None,
            fresh_corpus: true,
        })
        .map(|code| code == 0)
    });
    t
}

/// What the first boot needs: the release and static builds, the
/// package, and the tracepoint-mode scenarios on this machine's own
/// kernel.
fn host_builds(t: &mut Tally, root: &Path) {
    // For this machine: the host tests and the x86-64 guests (which share
    // its root) run it (xtask/src/suite.rs says why not static).
    t.step("build vm-tests (release)", || {
        cargo(root, &["build", "--release", "-p", "vm-tests"])
    });
    // The VM matrix and the host scenarios run the static binary that
    // `cargo xtask dist` packs, not the glibc build of this machine.
    t.step("dist: static nofail (musl) packed and checked", || {
        crate::dist::build().map(|_| true)
    });
    t.step(
        "deb: package installed into a directory and checked",
        || crate::deb::build().map(|_| true),
    );
    t.step("host tests (tracepoint mode on this kernel)", || {
        // Raw tracepoints attach without tracefs, but the XFS ground truth
        // is read from it.
        if !Path::new("/sys/kernel/tracing/events").exists() {
            let _ = Command::new("mount")
                .args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"])
                .status();
        }
        Ok(Command::new(suite::vm_tests_binary(Arch::X86_64))
            .arg("--host")
            .arg("--nofail")
            .arg(crate::dist::binary()?)
            .arg("--out")
            .arg(root.join("target/host-results"))
            .current_dir(root)
            .status()?
            .success())
    });
}

/// Provides a kernel as a stage of its own (fetch or build time).
fn provide(t: &mut Tally, spec: &KernelSpec) -> Option<Kernel> {
    let t0 = Instant::now();
    let kernel = variant::ensure_spec(spec);
    record_kernel(t, spec, kernel, t0.elapsed().as_secs_f64(), "")
}

/// A kernel provided (or not) in `secs`, recorded as a stage; `how` is
/// appended to its name.
fn record_kernel(
    t: &mut Tally,
    spec: &KernelSpec,
    kernel: Result<Kernel>,
    secs: f64,
    how: &str,
) -> Option<Kernel> {
    match kernel {
        Ok(k) => {
            t.record(
                &format!("kernel {} ({}){how}", k.label, k.release),
                true,
                secs,
            );
            Some(k)
        }
        Err(e) => {
            eprintln!("xtask ci: kernel {spec}: {e:#}");
            t.record(&format!("kernel {spec}{how}"), false, secs);
            None
        }
    }
}

/// Puts the calling thread, and what it runs, at nice 19.
fn lowest_priority(what: &str) {
    // SAFETY: plain integers.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) } != 0 {
        eprintln!(
            "xtask ci: {what} keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The test kernel, built (or found) by a thread at nice 19: on Linux a
/// thread's nice value is its own (`setpriority(PRIO_PROCESS, 0)` sets
/// the calling thread's), and the make it forks inherits it.
fn build_test_kernel_idle() -> (Result<Kernel>, f64) {
    lowest_priority("the test kernel's build");
    let t0 = Instant::now();
    let kernel = variant::ensure_spec(&KernelSpec::plain(KernelName::Test));
    (kernel, t0.elapsed().as_secs_f64())
}

/// Debian's kernels (fetched one after the other before: two of them
/// share the bookworm apt state): their scenarios two kernels at a time,
/// each with up to two of its boots at once (so up to four guests, one
/// QEMU thread each, on two cores); no stock-kernel scenario measures
/// time against a bound tighter than a second.
fn stock_matrix(t: &mut Tally, kernels: &[Kernel]) {
    let results = suite::in_lanes(kernels, |_, kernel| {
        let t0 = Instant::now();
        let ok = suite::run(kernel, Selection::default()).unwrap_or_else(|e| {
            eprintln!("xtask ci: {e:#}");
            false
        });
        (ok, t0.elapsed().as_secs_f64())
    });
    for (kernel, (ok, secs)) in kernels.iter().zip(results) {
        t.record(&format!("vm tests on {}", kernel.label), ok, secs);
    }
}

/// The test kernel: built from Debian's source, the runner's own checks
/// on it (timeout, panic), its scenarios, then its patched variant.
fn test_kernel(t: &mut Tally, root: &Path, since: SystemTime, kernel: &Kernel) {
    runner_checks(t, root, kernel);
    let t0 = Instant::now();
    let ok = suite::run(kernel, Selection::default()).unwrap_or_else(|e| {
        eprintln!("xtask ci: {e:#}");
        false
    });
    t.record("vm tests on test", ok, t0.elapsed().as_secs_f64());
    fstests_stage(t, kernel);
    patched_kernel(t, root, since);
    event_wait_kernel(t, root, since);
    checkpatch_stage(t, root, kernel);
    own_tree(t, root, kernel);
}

/// The VM runner itself: a guest past its timeout is ended, a guest
/// kernel panic is reported as one, with systemd as PID 1 too (its hang
/// detection, the heartbeat unit, is shown by the service scenarios that
/// run longer than HANG_SECS).
fn runner_checks(t: &mut Tally, root: &Path, kernel: &Kernel) {
    let guest_of = |command: &str, timeout: u64, systemd: bool| -> Result<i32> {
        vm::run(&vm::Guest {
            kernel,
            cwd: root,
            command: &["sh".into(), "-c".into(), command.into()],
            env: &[],
            timeout,
            memory: 512,
            icount: false,
            cpus: 2,
            systemd,
        })
    };
    let guest = |command: &str, timeout: u64| -> Result<i32> { guest_of(command, timeout, false) };
    t.step("vm --timeout ends a guest that sleeps too long", || {
        Ok(guest("sleep 300", 30)? == vm::EXIT_TIMEOUT)
    });
    t.step("vm reports a guest kernel panic", || {
        let panic = "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 60";
        Ok(guest(panic, 120)? == vm::EXIT_CRASH)
    });
    t.step("vm --systemd reports a guest kernel panic", || {
        let panic = "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 60";
        Ok(guest_of(panic, 180, true)? == vm::EXIT_CRASH)
    });
}

/// After the test kernel's matrix: the test kernel with the fix in
/// testing/patches (built incrementally from its tree), its scenarios
/// (chosen by the patch), then the gate between the stock kernel's
/// spinning call and the patched kernel's single retry.
fn patched_kernel(t: &mut Tally, root: &Path, since: SystemTime) {
    let Some(kernel) = patched_suite(t, &root.join(crate::gate::PATCH)) else {
        return;
    };
    let results = root.join("target/vm-results");
    t.step(
        "gate: nofail report patched vs stock passes, stock vs patched fails",
        || {
            crate::gate::check(
                &crate::dist::binary()?,
                &results.join("test").join(crate::gate::STOCK_REPORT),
                &results
                    .join(&kernel.label)
                    .join(crate::gate::PATCHED_REPORT),
                since,
            )
            .map(|()| true)
        },
    );
}

/// The test kernel built with `patch` (incrementally, from its tree) as a
/// stage, then the scenarios made for that patch as another.
fn patched_suite(t: &mut Tally, patch: &Path) -> Option<Kernel> {
    let kernel = provide(t, &KernelSpec::patched(patch.to_path_buf()))?;
    let t0 = Instant::now();
    let ok = suite::run(&kernel, Selection::default()).unwrap_or_else(|e| {
        eprintln!("xtask ci: {e:#}");
        false
    });
    t.record(
        &format!("vm tests on {}", kernel.label),
        ok,
        t0.elapsed().as_secs_f64(),
    );
    Some(kernel)
}

/// The test kernel with the event-driven wait (built incrementally), its
/// timed scenarios, then the side-by-side check against the stock
/// kernel's (`whatif_timed_*`, run in the test kernel's stage).
fn event_wait_kernel(t: &mut Tally, root: &Path, since: SystemTime) {
    let Some(kernel) = patched_suite(t, &root.join(crate::event_wait::PATCH)) else {
        return;
    };
    let results = root.join("target/vm-results");
    t.step(
        "event wait: fewer futile retries than stock, --what-if's stall within 10 % or a jiffy",
        || {
            crate::event_wait::check(&results.join("test"), &results.join(&kernel.label), since)
                .map(|()| true)
        },
    );
}

/// Every patch in testing/patches through `scripts/checkpatch.pl
/// --strict` of the test kernel's tree: only the placeholder sign-off a
/// person must replace may be reported (xtask/src/checkpatch.rs).
fn checkpatch_stage(t: &mut Tally, root: &Path, kernel: &Kernel) {
    t.step("checkpatch --strict on testing/patches", || {
        let tree = kernel
            .build_tree
            .as_deref()
            .ok_or_else(|| anyhow::anyhow!("the test kernel has no source tree"))?;
        crate::checkpatch::check_all(tree, &root.join(crate::checkpatch::PATCH_DIR))
    });
}

/// `--kernel DIR` as a developer uses it, with the test kernel's own
/// tree as DIR (nothing rebuilds; the trigger module is built against it
/// once, into the cache): the config check on a copy of the tree with
/// options taken out of its .config (no boot), a few scenarios on the
/// tree (one with the trigger), and `gate --stock DIR --patched
/// test+PATCH`, whose variant the stage before built.
fn own_tree(t: &mut Tally, root: &Path, kernel: &Kernel) {
    let Some(dir) = kernel.build_tree.clone() else {
        return;
    };
    let vm_tests = suite::vm_tests_binary(Arch::X86_64);
    t.step(
        "--kernel DIR: the config check names what a tree lacks",
        || crate::tree::check_the_check(&dir, &vm_tests).map(|()| true),
    );
    t.step("vm-test --kernel DIR (the test kernel's tree)", || {
        let kernel = variant::ensure_spec(&KernelSpec::tree(dir.clone()))?;
        suite::run(
            &kernel,
            Selection {
                exact: &[
                    "bpf_array_map_calls_exact",
                    "doctor_matches_kernel",
                    "trigger_sites_exact",
                ],
                ..Selection::default()
            },
        )
    });
    t.step("gate --stock DIR --patched test+PATCH", || {
        let patched = KernelSpec::patched(root.join(crate::gate::PATCH));
        Ok(crate::gate::compare(&KernelSpec::tree(dir.clone()), &patched, false)? == 0)
    });
}

/// `cargo xtask vm-test`: build, then the VM scenarios on one kernel;
/// with `bless`, only those that record testing/reports, copied there.
/// The kernel is provided (a tree checked) before anything is built.
pub fn vm_test(
    spec: KernelSpec,
    filter: Option<String>,
    bless: bool,
    also_unpatched: bool,
) -> Result<i32> {
    if also_unpatched && spec.patch.is_none() {
        anyhow::bail!("--also-unpatched needs a patched kernel (--kernel test+PATCH)");
    }
    setup::ensure()?;
    let kernel = variant::ensure_spec(&spec)?;
    if kernel.name == KernelName::Own {
        crate::tree::check_suite(&kernel)?;
    }
    suite::build_for(kernel.arch)?;
    let sel = Selection {
        filter: filter.as_deref(),
        bless,
        also_unpatched,
        ..Selection::default()
    };
    Ok(if suite::run(&kernel, sel)? { 0 } else { 1 })
}

/// fstests on XFS (`cargo xtask fstests` with its CI set): untraced,
/// under `nofail trace` and under `nofail inject`, each checked against
/// the kernel's own counts (docs/fstests.md).
fn fstests_stage(t: &mut Tally, kernel: &Kernel) {
    t.step(
        "fstests on XFS: untraced, traced, injected (CI set)",
        || crate::fstests::run(kernel, &crate::fstests::Plan::ci()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_arm64_twin_follows_its_x86_64_kernel_and_5_10_has_none() {
        let x86: Vec<KernelSpec> = KernelName::ALL
            .iter()
            .rev()
            .filter(|&&n| n != KernelName::Test)
            .map(|&n| KernelSpec::plain(n))
            .collect();
        let order = |arm64| -> Vec<String> {
            with_arm64_twins(x86.clone(), arm64)
                .iter()
                .map(|s| format!("{s}/{}", s.arch.debian()))
                .collect()
        };
        assert_eq!(
            order(true),
            [
                "debian-latest/amd64",
                "debian-latest/arm64",
                "debian-6.12/amd64",
                "debian-6.12/arm64",
                "debian-6.1/amd64",
                "debian-6.1/arm64",
                "debian-5.10/amd64",
            ]
        );
        // Not built: no arm64 lane at all.
        assert_eq!(order(false).len(), 4);
    }
}
