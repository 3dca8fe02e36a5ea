// SPDX-License-Identifier: MIT OR Apache-2.0
//! `cargo xtask ci`: the whole suite. Host checks (fmt, clippy, unit tests,
//! the refusal on this kernel), then the VM matrix: every kernel boots and
//! runs the VM tests against the real nofail binary.

use std::{
    path::Path,
    process::Command,
    time::{Instant, SystemTime},
};

use anyhow::Result;

use crate::{
    kernels::{self, KernelName, KernelSpec},
    setup,
    suite::{self, Selection},
    util::workspace_root,
    vm,
};

struct Tally {
    passed: u32,
    failed: Vec<String>,
    started: Instant,
}

impl Tally {
    fn record(&mut self, name: &str, ok: bool, secs: f64) {
        println!(
            "xtask ci: {} {name} ({secs:.0} s)",
            if ok { "ok  " } else { "FAIL" }
        );
        if ok {
            self.passed += 1;
        } else {
            self.failed.push(name.to_string());
        }
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
}

fn cargo(root: &Path, args: &[&str]) -> Result<bool> {
    Ok(Command::new("cargo")
        .args(args)
        .current_dir(root)
        .status()?
        .success())
}

pub fn run(kernels_wanted: Vec<KernelName>) -> Result<i32> {
    setup::ensure()?;
    let root = workspace_root();
    let since = SystemTime::now();
    let mut t = Tally {
        passed: 0,
        failed: vec![],
        started: Instant::now(),
    };

    t.step("cargo fmt --check", || {
        cargo(&root, &["fmt", "--all", "--check"])
    });
    t.step("clippy (host crates)", || {
        cargo(
            &root,
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
    t.step("clippy (eBPF crate)", || {
        cargo(
            &root,
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
        if !cargo(&root, &["fetch", "--locked"])? {
            return Ok(false);
        }
        cargo(
            &root,
            &["deny", "--offline", "check", "licenses", "bans", "sources"],
        )
    });
    t.step("cargo test (host)", || cargo(&root, &["test"]));
    t.step("build nofail and vm-tests (release)", || {
        cargo(
            &root,
            &["build", "--release", "-p", "nofail-user", "-p", "vm-tests"],
        )
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
        Ok(Command::new(root.join("target/release/vm-tests"))
            .arg("--host")
            .arg("--nofail")
            .arg(crate::dist::binary()?)
            .arg("--out")
            .arg(root.join("target/host-results"))
            .current_dir(&root)
            .status()?
            .success())
    });

    let kernels_wanted = if kernels_wanted.is_empty() {
        KernelName::ALL.to_vec()
    } else {
        kernels_wanted
    };
    for &name in &kernels_wanted {
        let t0 = Instant::now();
        let kernel = match kernels::ensure(name) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("xtask ci: kernel {}: {e:#}", name.as_str());
                t.record(
                    &format!("kernel {}", name.as_str()),
                    false,
                    t0.elapsed().as_secs_f64(),
                );
                continue;
            }
        };
        t.record(
            &format!("kernel {} ({})", name.as_str(), kernel.release),
            true,
            t0.elapsed().as_secs_f64(),
        );
        if name == KernelName::Test {
            t.step("vm --timeout ends a guest that sleeps too long", || {
                let code = vm::run(&vm::Guest {
                    kernel: &kernel,
                    cwd: &root,
                    command: &["sleep".into(), "300".into()],
                    env: &[],
                    timeout: 30,
                    memory: 512,
                    icount: false,
                    cpus: 2,
                })?;
                Ok(code == vm::EXIT_TIMEOUT)
            });
            t.step("vm reports a guest kernel panic", || {
                let panic =
                    "echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 60";
                let code = vm::run(&vm::Guest {
                    kernel: &kernel,
                    cwd: &root,
                    command: &["sh".into(), "-c".into(), panic.into()],
                    env: &[],
                    timeout: 120,
                    memory: 512,
                    icount: false,
                    cpus: 2,
                })?;
                Ok(code == vm::EXIT_CRASH)
            });
        }
        let t0 = Instant::now();
        let ok = suite::run(&kernel, Selection::default()).unwrap_or_else(|e| {
            eprintln!("xtask ci: {e:#}");
            false
        });
        t.record(
            &format!("vm tests on {}", name.as_str()),
            ok,
            t0.elapsed().as_secs_f64(),
        );
    }

    if kernels_wanted.contains(&KernelName::Test) {
        patched_kernel(&mut t, &root, since);
    }

    let failed = t.failed.len();
    println!(
        "xtask ci: finished in {:.0} s",
        t.started.elapsed().as_secs_f64()
    );
    for f in &t.failed {
        println!("xtask ci: failed: {f}");
    }
    println!("{} passed, {failed} failed", t.passed);
    Ok(if failed == 0 { 0 } else { 1 })
}

/// After the test kernel's matrix: the test kernel with the fix in
/// testing/patches (built incrementally from its tree), its scenarios
/// (chosen by the patch), then the gate between the stock kernel's
/// spinning call and the patched kernel's single retry.
fn patched_kernel(t: &mut Tally, root: &Path, since: SystemTime) {
    let spec = KernelSpec {
        name: KernelName::Test,
        patch: Some(root.join(crate::gate::PATCH)),
    };
    let t0 = Instant::now();
    let kernel = match kernels::ensure_spec(&spec) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("xtask ci: kernel {spec}: {e:#}");
            t.record(&format!("kernel {spec}"), false, t0.elapsed().as_secs_f64());
            return;
        }
    };
    t.record(
        &format!("kernel {} ({})", kernel.label, kernel.release),
        true,
        t0.elapsed().as_secs_f64(),
    );
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
        },
    );
}

/// `cargo xtask vm-test`: build, then the VM scenarios on one kernel;
/// with `bless`, only those that record testing/reports, copied there.
pub fn vm_test(spec: KernelSpec, filter: Option<String>, bless: bool) -> Result<i32> {
    setup::ensure()?;
    let root = workspace_root();
    if !cargo(
        &root,
        &["build", "--release", "-p", "nofail-user", "-p", "vm-tests"],
    )? {
        anyhow::bail!("build failed");
    }
    crate::dist::build()?;
    let kernel = kernels::ensure_spec(&spec)?;
    let sel = Selection {
        filter: filter.as_deref(),
        bless,
    };
    Ok(if suite::run(&kernel, sel)? { 0 } else { 1 })
}
