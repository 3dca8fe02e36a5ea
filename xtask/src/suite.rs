// SPDX-License-Identifier: MIT OR Apache-2.0
//! The VM scenarios on one kernel: which boots to make (a scenario marked
//! own-boot gets a kernel of its own, the rest share one), the results
//! read back from each boot, one libtest-style summary for the kernel,
//! and `--bless`: the reports testing/reports keeps, regenerated. On a
//! developer's tree (`--kernel DIR`) the scenarios needing an option its
//! .config lacks are skipped before anything boots (xtask/src/tree.rs).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};
use nofail_test_support::outcome::{Listing, Outcome, Summary, TestLine};

use crate::{
    arch::Arch,
    kernels::{Kernel, KernelName},
    tree, trigger,
    util::{self, workspace_root},
    vm,
};

/// What the scenarios run: the release nofail and vm-tests, and the
/// static nofail (`cargo xtask dist`) the guests run (after
/// `setup::ensure`).
pub fn build() -> Result<()> {
    build_for(Arch::X86_64)
}

/// What the scenarios of an `arch` guest run. x86-64: vm-tests built for
/// this machine (the guest shares its root); a static (musl) vm-tests
/// made the harness abort under the pressure scenario's failslab (its
/// malloc maps memory more often: exit 134) and that phase's OOM kill
/// went missing, twice. arm64: vm-tests static, as the guest root has no
/// Rust runtime of its own. Then the static nofail and the package the
/// systemd scenarios install (dpkg -i in the guest), which packs it.
pub fn build_for(arch: Arch) -> Result<()> {
    let mut cargo = Command::new("cargo");
    cargo
        .args(["build", "--release", "-p", "vm-tests"])
        .current_dir(workspace_root());
    if arch != Arch::X86_64 {
        cargo.args(["--target", arch.rust_target()]);
    }
    util::run(&mut cargo)?;
    crate::deb::build_for(arch)?;
    Ok(())
}

/// The vm-tests binary a guest of `arch` runs (and the host tests, for
/// x86-64).
pub fn vm_tests_binary(arch: Arch) -> PathBuf {
    let target = workspace_root().join("target");
    match arch {
        Arch::X86_64 => target.join("release/vm-tests"),
        other => target.join(other.rust_target()).join("release/vm-tests"),
    }
}

/// The trigger module built against `kernel`, where its guest finds it:
/// a guest of another architecture sees the checkout, not the host's root
/// (and so not the cache), so the module is copied into `out` (under
/// target/).
pub fn trigger_for_guest(kernel: &Kernel, out: &Path) -> Result<PathBuf> {
    let ko = trigger::build(kernel)?;
    if kernel.arch == Arch::X86_64 {
        return Ok(ko);
    }
    std::fs::create_dir_all(out)?;
    let shared = out.join("nofail_trigger.ko");
    std::fs::copy(&ko, &shared)
        .with_context(|| format!("cannot copy {} to {}", ko.display(), shared.display()))?;
    Ok(shared)
}

/// `--filter`: no filter takes every scenario; a filter takes those whose
/// name contains it, or one of its comma-separated parts.
fn selected_by(filter: Option<&str>, name: &str) -> bool {
    filter.is_none_or(|f| f.split(',').any(|part| name.contains(part)))
}

/// What to run on the kernel.
#[derive(Clone, Copy, Default)]
pub struct Selection<'a> {
    /// Only scenarios whose name contains this, or one of its
    /// comma-separated parts.
    pub filter: Option<&'a str>,
    /// Only the scenarios of these names (none: all).
    pub exact: &'a [&'a str],
    /// Only the scenarios that record reports for testing/reports, whose
    /// files are then copied there.
    pub bless: bool,
    /// On a patched test kernel: the unpatched kernels' scenarios too.
    pub also_unpatched: bool,
}

/// One scenario's result as read back from its boot.
struct Finished {
    line: TestLine,
    /// A failure's message (its first line is shown in the summary).
    message: Vec<String>,
}

/// A guest run of some scenarios.
struct Boot {
    names: Vec<String>,
    timeout: u64,
    /// systemd as PID 1 (the scenario runs from a unit after
    /// multi-user.target).
    systemd: bool,
}

/// Runs the selected scenarios on `kernel`; true if none failed (and, on
/// the test kernel, none was skipped; on a developer's tree, none but for
/// an option it lacks).
pub fn run(kernel: &Kernel, sel: Selection) -> Result<bool> {
    let root = workspace_root();
    let out = root.join("target/vm-results").join(&kernel.label);
    std::fs::create_dir_all(&out)?;
    let vm_tests = vm_tests_binary(kernel.arch);
    let mut base = vec![
        vm_tests.display().to_string(),
        "--nofail".into(),
        crate::dist::binary_for(kernel.arch)?.display().to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    if kernel.name == KernelName::Own {
        tree::check_suite(kernel)?;
    }
    if kernel.name.has_trigger() {
        let ko = trigger_for_guest(kernel, &out)?;
        base.extend(["--trigger".into(), ko.display().to_string()]);
    }
    // A variant of the test kernel runs the scenarios of its patch, and
    // only those; the stock kernels never run them.
    if let Some(patch) = &kernel.patch {
        base.extend(["--kernel-patch".into(), patch.clone()]);
        if sel.also_unpatched {
            base.push("--also-unpatched".into());
        }
    }
    if kernel.name.predates_nofail() {
        base.push("--predates-nofail".into());
    }
    if sel.bless && (kernel.name != KernelName::Test || kernel.patch.is_some()) {
        bail!("--bless records reports on the test kernel only (--kernel test)");
    }
    let table = list(&vm_tests, kernel, sel.also_unpatched)?;
    let chosen: Vec<&Listing> = table
        .iter()
        .filter(|l| selected_by(sel.filter, &l.name))
        .filter(|l| sel.exact.is_empty() || sel.exact.contains(&l.name.as_str()))
        .filter(|l| !sel.bless || !l.records.is_empty())
        .collect();
    // The systemd boots (the packaged service) run on the newest stock
    // kernel and the test kernel: the two older stock kernels would add a
    // boot each for what their own scenarios already show of the unit's
    // command line (service_command_line_under_its_capabilities).
    let chosen: Vec<&Listing> =
        if matches!(kernel.name, KernelName::Debian61 | KernelName::Debian612) {
            let (systemd, rest): (Vec<&Listing>, Vec<&Listing>) =
                chosen.into_iter().partition(|l| l.systemd);
            for l in systemd {
                println!(
                    "xtask vm-test: {} runs on debian-latest and the test kernel, not on {}",
                    l.name, kernel.label
                );
            }
            rest
        } else {
            chosen
        };
    if chosen.is_empty() {
        bail!("no scenario on {} matches", kernel.label);
    }
    // A developer's tree: what its config lacks is skipped, said before
    // anything boots.
    let skips = match (&kernel.name, &kernel.build_tree, &kernel.config) {
        (KernelName::Own, Some(dir), Some(config)) => {
            let skips = tree::skips(dir, &std::fs::read_to_string(config)?, &chosen);
            for line in skips.lines(dir) {
                println!("{line}");
            }
            skips.scenarios
        }
        _ => Default::default(),
    };
    let mut finished: Vec<Finished> = skips
        .iter()
        .map(|(name, why)| Finished {
            line: TestLine {
                name: name.clone(),
                outcome: Outcome::Skipped(why.clone()),
                secs: 0.0,
            },
            message: Vec::new(),
        })
        .collect();
    let chosen: Vec<&Listing> = chosen
        .into_iter()
        .filter(|l| !skips.contains_key(&l.name))
        .collect();
    if sel.bless {
        // A stale copy must never be blessed: the scenarios write them anew.
        for file in chosen.iter().flat_map(|l| &l.records) {
            let _ = std::fs::remove_file(out.join(file));
        }
    }
    let boots = plan(&chosen);
    let started = Instant::now();
    let ran = run_boots(kernel, &root, &out, &base, &boots);
    let mut trouble: Vec<String> = Vec::new();
    for (i, (boot, result)) in boots.iter().zip(ran).enumerate() {
        let (code, lines, closed) = result?;
        for name in &boot.names {
            if !lines.iter().any(|f| &f.line.name == name) {
                finished.push(Finished {
                    line: TestLine {
                        name: name.clone(),
                        outcome: Outcome::Failed,
                        secs: 0.0,
                    },
                    message: vec![format!("not run: the guest ended with exit code {code}")],
                });
            }
        }
        let failed = lines
            .iter()
            .any(|f| matches!(f.line.outcome, Outcome::Failed));
        if code != 0 && !failed {
            trouble.push(format!(
                "boot {}: guest exit code {code}{}",
                i + 1,
                if closed {
                    ""
                } else {
                    " before its closing line"
                }
            ));
        }
        finished.extend(lines);
    }
    // The test kernel must lack nothing; a developer's tree only what its
    // config says it lacks.
    let strict = kernel.name.has_trigger();
    let allowed = |f: &Finished| !strict || skips.contains_key(&f.line.name);
    let summary = report(kernel, &finished, &trouble, &allowed, started);
    let unexplained = finished
        .iter()
        .filter(|f| matches!(f.line.outcome, Outcome::Skipped(_)) && !allowed(f))
        .count();
    let ok = summary.failed == 0 && trouble.is_empty() && unexplained == 0;
    if sel.bless {
        bless(&root, &out, &chosen, &finished)?;
    }
    Ok(ok)
}

/// Guests run at once where the scenarios allow it (one host core each).
pub const VM_LANES: usize = 2;

/// What one boot gave: the guest's exit code, its result lines, and
/// whether its closing line was there.
type BootResult = Result<(i32, Vec<Finished>, bool)>;

/// Runs the boots, up to `VM_LANES` guests at a time (each is one
/// QEMU thread, so two on two cores do not slow each other); results in
/// boot order. The shared boots are the longest and go first, the
/// own-boot scenarios after them.
fn run_boots(
    kernel: &Kernel,
    root: &Path,
    out: &Path,
    base: &[String],
    boots: &[Boot],
) -> Vec<BootResult> {
    in_lanes(boots, |i, boot| {
        run_boot(kernel, root, out, base, boots.len(), i, boot)
    })
}

/// `f` on every item (with its index), `VM_LANES` items at a time, the
/// next one started as one ends; results in item order.
pub fn in_lanes<I: Sync, T: Send>(items: &[I], f: impl Fn(usize, &I) -> T + Sync) -> Vec<T> {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };
    let results: Mutex<Vec<Option<T>>> = Mutex::new(items.iter().map(|_| None).collect());
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..VM_LANES.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { break };
                    let result = f(i, item);
                    results.lock().expect("no lane panicked")[i] = Some(result);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("no lane panicked")
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

fn run_boot(
    kernel: &Kernel,
    root: &Path,
    out: &Path,
    base: &[String],
    of: usize,
    i: usize,
    boot: &Boot,
) -> BootResult {
    let results = out.join(format!("results-{i}.txt"));
    let _ = std::fs::remove_file(&results);
    let mut command = base.to_vec();
    command.extend(["--results".into(), results.display().to_string()]);
    for name in &boot.names {
        command.extend(["--exact".into(), name.clone()]);
    }
    println!(
        "xtask vm-test: boot {} of {of} on {}{}: {}",
        i + 1,
        kernel.label,
        if boot.systemd { " (systemd)" } else { "" },
        if boot.names.len() == 1 {
            boot.names[0].clone()
        } else {
            format!("{} scenarios", boot.names.len())
        }
    );
    let code = vm::run(&vm::Guest {
        kernel,
        cwd: root,
        command: &command,
        env: &guest_env(kernel),
        timeout: boot.timeout,
        memory: 2048,
        icount: false,
        cpus: 2,
        systemd: boot.systemd,
    })?;
    let (lines, closed) = read_results(&results);
    Ok((code, lines, closed))
}

/// NOFAIL_KERNEL_CONFIG: nofail reads the kernel config from there when
/// the guest has none.
fn guest_env(kernel: &Kernel) -> Vec<String> {
    // A guest of another architecture has its own root, with the config
    // at /boot/config-<release> (xtask/src/guestroot.rs).
    if kernel.arch != Arch::X86_64 {
        return Vec::new();
    }
    kernel
        .config
        .iter()
        .map(|c| format!("NOFAIL_KERNEL_CONFIG={}", c.display()))
        .collect()
}

/// The scenario table of vm-tests, read on the host.
fn list(vm_tests: &Path, kernel: &Kernel, also_unpatched: bool) -> Result<Vec<Listing>> {
    let mut cmd = kernel.arch.command(vm_tests);
    cmd.arg("--list");
    if kernel.name.has_trigger() {
        // Only its presence matters for the table.
        cmd.args(["--trigger", "nofail_trigger.ko"]);
    }
    if let Some(patch) = &kernel.patch {
        cmd.args(["--kernel-patch", patch]);
        if also_unpatched {
            cmd.arg("--also-unpatched");
        }
    }
    if kernel.name.predates_nofail() {
        cmd.arg("--predates-nofail");
    }
    util::output(&mut cmd)?
        .lines()
        .map(|l| Listing::parse(l).with_context(|| format!("vm-tests --list: {l:?}")))
        .collect()
}

/// Shared boots for the scenarios that leave the kernel as they found it,
/// then one boot each for those that do not. A shared set larger than
/// `SPLIT_SHARED_FROM` (the test kernel's) is split in two
/// boots, alternate scenarios in each, that run side by side in the two
/// lanes: one boot of them all kept one lane busy for most of the stage
/// while the other ran the own-boot scenarios and then stood idle.
fn plan(chosen: &[&Listing]) -> Vec<Boot> {
    let shared: Vec<String> = chosen
        .iter()
        .filter(|l| !l.own_boot)
        .map(|l| l.name.clone())
        .collect();
    let halves: Vec<Vec<String>> = if shared.len() > SPLIT_SHARED_FROM {
        (0..VM_LANES)
            .map(|lane| {
                shared
                    .iter()
                    .skip(lane)
                    .step_by(VM_LANES)
                    .cloned()
                    .collect()
            })
            .collect()
    } else if shared.is_empty() {
        Vec::new()
    } else {
        vec![shared]
    };
    // A guard against hangs, not a time limit: the test kernel's shared
    // scenarios (the 3-minute soak among them) took about 10 minutes in
    // one boot under TCG on 2 cores.
    let mut boots: Vec<Boot> = halves
        .into_iter()
        .map(|names| Boot {
            names,
            timeout: 1800,
            systemd: false,
        })
        .collect();
    boots.extend(chosen.iter().filter(|l| l.own_boot).map(|l| Boot {
        names: vec![l.name.clone()],
        timeout: 600,
        systemd: l.systemd,
    }));
    boots
}

/// Shared scenarios above this many are split over two boots (`plan`);
/// the stock kernels' 13 or so stay in one, their kernels already run
/// two at a time.
const SPLIT_SHARED_FROM: usize = 30;

/// The result lines of one boot's file (each failure with its indented
/// message), and whether its closing `test result:` line is there.
fn read_results(path: &Path) -> (Vec<Finished>, bool) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<Finished> = Vec::new();
    let mut closed = false;
    for line in text.lines() {
        if let Some(t) = TestLine::parse(line) {
            out.push(Finished {
                line: t,
                message: Vec::new(),
            });
        } else if let (Some(msg), Some(last)) = (line.strip_prefix("    "), out.last_mut()) {
            last.message.push(msg.to_string());
        } else if Summary::parse(line).is_some() {
            closed = true;
        }
    }
    (out, closed)
}

/// Prints the kernel's failures and skips (those not `allowed` marked as
/// failures), then its `test result:` line.
fn report(
    kernel: &Kernel,
    finished: &[Finished],
    trouble: &[String],
    allowed: &dyn Fn(&Finished) -> bool,
    started: Instant,
) -> Summary {
    let mut summary = Summary::default();
    for f in finished {
        summary.add(&f.line.outcome);
    }
    println!(
        "\nxtask vm-test: {} ({}), {:.0} s",
        kernel.label,
        kernel.release,
        started.elapsed().as_secs_f64()
    );
    let failures: Vec<&Finished> = finished
        .iter()
        .filter(|f| f.line.outcome == Outcome::Failed)
        .collect();
    if !failures.is_empty() || !trouble.is_empty() {
        println!("failures:");
        for f in failures {
            let first = f.message.first().map(String::as_str).unwrap_or("");
            println!("    {}: {first}", f.line.name);
        }
        for t in trouble {
            println!("    {t}");
        }
    }
    let skips: Vec<(&str, &str, bool)> = finished
        .iter()
        .filter_map(|f| match &f.line.outcome {
            Outcome::Skipped(why) => Some((f.line.name.as_str(), why.as_str(), allowed(f))),
            _ => None,
        })
        .collect();
    if !skips.is_empty() {
        println!("skipped:");
        for (name, why, allowed) in skips {
            let failure = match kernel.name {
                _ if allowed => "",
                KernelName::Own => {
                    " (a failure: no option the tree lacks explains it; the scenario table's needs column should name one)"
                }
                _ => " (a failure: the test kernel must lack nothing a scenario needs)",
            };
            println!("    {name}: {why}{failure}");
        }
    }
    println!("{summary}");
    summary
}

/// Copies the reports of every recording scenario that passed into
/// testing/reports, saying for each whether it changed.
fn bless(root: &Path, out: &Path, chosen: &[&Listing], finished: &[Finished]) -> Result<()> {
    let reports = root.join("testing/reports");
    let passed = |name: &str| {
        finished
            .iter()
            .any(|f| f.line.name == name && f.line.outcome == Outcome::Ok)
    };
    let mut copied = 0;
    for l in chosen {
        if !passed(&l.name) {
            println!(
                "xtask vm-test --bless: {} did not pass; its reports are left as they were",
                l.name
            );
            continue;
        }
        for file in &l.records {
            let (from, to): (PathBuf, PathBuf) = (out.join(file), reports.join(file));
            let new = std::fs::read(&from)
                .with_context(|| format!("{} passed but wrote no {}", l.name, from.display()))?;
            let status = match std::fs::read(&to) {
                Ok(old) if old == new => "unchanged",
                Ok(_) => "updated",
                Err(_) => "new",
            };
            std::fs::write(&to, &new)?;
            copied += 1;
            println!(
                "xtask vm-test --bless: testing/reports/{file}: {status} (from {})",
                l.name
            );
        }
    }
    println!("xtask vm-test --bless: {copied} reports copied");
    // What changed, as git sees it (nothing printed when nothing did).
    let _ = Command::new("git")
        .args(["--no-pager", "diff", "--stat", "--", "testing/reports"])
        .current_dir(root)
        .status();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_takes_any_of_its_comma_separated_parts() {
        let names = [
            "sentinel_matches_full",
            "export_formats_from_live_run",
            "serve_soak",
        ];
        let taken = |f: Option<&str>| -> Vec<&str> {
            names.into_iter().filter(|n| selected_by(f, n)).collect()
        };
        assert_eq!(taken(None), names);
        assert_eq!(taken(Some("soak")), ["serve_soak"]);
        assert_eq!(
            taken(Some("sentinel,export")),
            ["sentinel_matches_full", "export_formats_from_live_run"]
        );
        assert!(taken(Some("nothing,else")).is_empty());
    }

    fn listing(name: &str, own_boot: bool) -> Listing {
        Listing {
            name: name.into(),
            own_boot,
            ..Listing::default()
        }
    }

    #[test]
    fn lanes_keep_item_order_and_run_each_once() {
        let items: Vec<u64> = (0..7).collect();
        let ran = std::sync::atomic::AtomicUsize::new(0);
        let out = in_lanes(&items, |i, &x| {
            ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Later items finish first: order must still be the items'.
            std::thread::sleep(std::time::Duration::from_millis(20 - 2 * x));
            (i, x * 10)
        });
        assert_eq!(ran.into_inner(), 7);
        assert_eq!(
            out,
            (0..7).map(|x| (x as usize, x * 10)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn own_boot_scenarios_get_a_boot_each_after_the_shared_one() {
        let table = [
            listing("a", false),
            listing("spins", true),
            listing("b", false),
            listing("spins_too", true),
        ];
        let chosen: Vec<&Listing> = table.iter().collect();
        let boots = plan(&chosen);
        let names: Vec<Vec<String>> = boots.iter().map(|b| b.names.clone()).collect();
        assert_eq!(names, [vec!["a", "b"], vec!["spins"], vec!["spins_too"]]);
        // Only an own-boot scenario chosen: no shared boot at all.
        let boots = plan(&[&table[1]]);
        assert_eq!(boots.len(), 1);
        assert_eq!(boots[0].names, ["spins"]);
    }

    #[test]
    fn a_large_shared_set_is_split_over_two_boots_each_scenario_once() {
        let mut table: Vec<Listing> = (0..=SPLIT_SHARED_FROM)
            .map(|i| listing(&format!("s{i}"), false))
            .collect();
        table.push(listing("own", true));
        let chosen: Vec<&Listing> = table.iter().collect();
        let boots = plan(&chosen);
        assert_eq!(boots.len(), 3);
        assert_eq!(boots[0].names[..2], ["s0", "s2"]);
        assert_eq!(boots[1].names[..2], ["s1", "s3"]);
        assert!(boots[0].names.len().abs_diff(boots[1].names.len()) <= 1);
        let mut all: Vec<&String> = boots[..2].iter().flat_map(|b| &b.names).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), SPLIT_SHARED_FROM + 1);
        assert_eq!(boots[2].names, ["own"]);
        // At the threshold: one shared boot.
        let boots = plan(&chosen[1..]);
        assert_eq!(boots[0].names.len(), SPLIT_SHARED_FROM);
        assert_eq!(boots.len(), 2);
    }

    #[test]
    fn results_file_read_back_with_messages() {
        let dir = std::env::temp_dir().join(format!("xtask-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.txt");
        std::fs::write(
            &path,
            "test a ... ok (1.0 s)\n\
             test b ... FAILED (2.0 s)\n    site: calls 1 != 2\n    more\n\
             test c ... skipped: no tracepoint (0.1 s)\n\
             test result: 1 passed, 1 failed, 1 skipped\n",
        )
        .unwrap();
        let (lines, closed) = read_results(&path);
        assert!(closed);
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].message, ["site: calls 1 != 2", "more"]);
        assert_eq!(
            lines[2].line.outcome,
            Outcome::Skipped("no tracepoint".into())
        );
        // A guest that died mid-run: what finished, and no closing line.
        std::fs::write(&path, "test a ... ok (1.0 s)\n").unwrap();
        let (lines, closed) = read_results(&path);
        assert!(!closed && lines.len() == 1);
        assert_eq!(read_results(&dir.join("missing")).0.len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
