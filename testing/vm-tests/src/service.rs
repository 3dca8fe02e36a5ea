// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Debian package as a host installs it, in a guest booted with systemd
//! as PID 1 (`Case::systemd`): docs/install.md's "As a service" commands as
//! written, what `systemctl stop` and `dpkg -r` leave behind, and the drop-in
//! that takes CAP_SYS_ADMIN away.

use std::{
    collections::BTreeSet,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use nofail_test_support::{bpf, prom::sample};

use crate::harness::Ctx;

/// The package's architecture, as its file name ends: this binary's.
#[cfg(target_arch = "x86_64")]
const DEB_ARCH: &str = "_amd64.deb";
#[cfg(target_arch = "aarch64")]
const DEB_ARCH: &str = "_arm64.deb";

/// The package `cargo xtask deb` made (xtask's suite builds it first).
pub fn deb() -> Result<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/deb");
    let mut debs: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("{dir} (cargo xtask deb)"))?
        .filter_map(|e| e.ok())
        .map(|e| e.path().display().to_string())
        .filter(|p| p.ends_with(DEB_ARCH))
        .collect();
    ensure!(
        debs.len() == 1,
        "{} packages in {dir}: {debs:?}",
        debs.len()
    );
    Ok(debs.remove(0))
}

/// `script` run by `sh -c` as docs/install.md writes it: its exit code
/// and what it printed (stdout, then stderr).
pub fn sh(script: &str) -> Result<(i32, String)> {
    let out = Command::new("sh").args(["-c", script]).output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("  $ {script}\n{}", indent(&text));
    Ok((out.status.code().unwrap_or(-1), text))
}

/// `sh`, which must exit 0.
pub fn sh_ok(script: &str) -> Result<String> {
    let (code, text) = sh(script)?;
    ensure!(code == 0, "`{script}` exited {code}: {}", text.trim());
    Ok(text)
}

fn indent(text: &str) -> String {
    text.lines()
        .take(30)
        .map(|l| format!("    {l}\n"))
        .collect()
}

/// The line `nofail serve` prints once every program is attached.
const SERVING: &str = "nofail: serving http://127.0.0.1:9464/metrics";

/// Waits until the journal shows the service's `n`th serving line (a start
/// after `n - 1` earlier ones); fails at once if the unit failed.
pub fn wait_serving(n: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let journal = journal()?;
        if journal.matches(SERVING).count() >= n {
            return Ok(());
        }
        let (_, state) = sh("systemctl is-active nofail")?;
        ensure!(
            !state.contains("failed") && Instant::now() < deadline,
            "nofail.service is {} and printed no {SERVING:?} (start {n}); journal:\n{journal}",
            state.trim()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// `journalctl -u nofail` as the package's user reads it.
fn journal() -> Result<String> {
    let out = Command::new("journalctl")
        .args(["-u", "nofail", "--no-pager", "-o", "cat"])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `nofail: attached (MODE...)` lines of the service's `n`th start.
pub fn attach_lines(n: usize) -> Result<Vec<String>> {
    let journal = journal()?;
    let start = journal
        .split(SERVING)
        .nth(n - 1)
        .with_context(|| format!("no start {n} in the journal"))?;
    let lines: Vec<String> = start
        .lines()
        .filter(|l| l.starts_with("nofail: attached ("))
        .map(str::to_string)
        .collect();
    for l in &lines {
        println!("  start {n}: {l}");
    }
    ensure!(!lines.is_empty(), "start {n} printed no attach line");
    Ok(lines)
}

/// The service's main process.
pub fn main_pid() -> Result<u32> {
    let pid: u32 = sh_ok("systemctl show -p MainPID --value nofail")?
        .trim()
        .parse()
        .context("MainPID")?;
    ensure!(pid != 0, "nofail.service has no main process");
    Ok(pid)
}

/// The BPF program, map and link ids a process holds, from its fds'
/// fdinfo (`prog_id:`, `map_id:`, `link_id:`).
#[derive(Debug, Default)]
pub struct Held {
    programs: BTreeSet<u32>,
    maps: BTreeSet<u32>,
    links: BTreeSet<u32>,
}

impl Held {
    pub fn by(pid: u32) -> Result<Self> {
        let mut held = Self::default();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
            let Ok(text) = std::fs::read_to_string(fd?.path()) else {
                continue;
            };
            for line in text.lines() {
                let (key, value) = line.split_once(':').unwrap_or_default();
                let Ok(id) = value.trim().parse::<u32>() else {
                    continue;
                };
                match key {
                    "prog_id" => held.programs.insert(id),
                    "map_id" => held.maps.insert(id),
                    "link_id" => held.links.insert(id),
                    _ => false,
                };
            }
        }
        Ok(held)
    }

    /// Those of the ids still loaded in the kernel, after up to `settle`
    /// for the kernel to free them.
    pub fn still_loaded(&self, settle: Duration) -> Result<String> {
        let deadline = Instant::now() + settle;
        loop {
            let programs: Vec<u32> = bpf::programs()?
                .into_iter()
                .map(|p| p.id)
                .filter(|id| self.programs.contains(id))
                .collect();
            let maps: Vec<u32> = bpf::maps()?
                .into_iter()
                .map(|m| m.id)
                .filter(|id| self.maps.contains(id))
                .collect();
            let links: Vec<u32> = bpf::link_ids()?
                .into_iter()
                .filter(|id| self.links.contains(id))
                .collect();
            if (programs.is_empty() && maps.is_empty() && links.is_empty())
                || Instant::now() >= deadline
            {
                return Ok(
                    if programs.is_empty() && maps.is_empty() && links.is_empty() {
                        String::new()
                    } else {
                        format!("programs {programs:?}, maps {maps:?}, links {links:?}")
                    },
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn summary(&self) -> String {
        format!(
            "{} programs, {} maps, {} links",
            self.programs.len(),
            self.maps.len(),
            self.links.len()
        )
    }
}

/// README.md's service commands: the sh block under "### As a service".
fn readme_commands() -> Result<Vec<String>> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"))?;
    let section = readme
        .split("### As a service\n")
        .nth(1)
        .context("README.md has no \"### As a service\" section")?;
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .context("no sh block in README.md's service section")?;
    Ok(block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// README.md's service commands as written, in the directory holding the
/// package `cargo xtask deb` made (the README names its file), each of
/// those that read the service's state repeated until it succeeds (the
/// service attaches its programs for a few seconds after `systemctl
/// enable --now` returns): `is-active` says active, the journal shows the
/// attach line, the scrape answers. Returns the scrape command.
pub fn install_and_start() -> Result<String> {
    let deb = deb()?;
    let dir = std::path::Path::new(&deb).parent().context("deb dir")?;
    // README.md names the x86-64 package; on arm64 a reader installs the
    // file of their architecture.
    let commands: Vec<String> = readme_commands()?
        .into_iter()
        .map(|c| c.replace("_amd64.deb", DEB_ARCH))
        .collect();
    ensure!(
        commands.len() == 5,
        "README.md's service block: {commands:?}"
    );
    let in_dir = |c: &str| format!("cd {} && {c}", dir.display());
    let named = commands[0].split_whitespace().last().unwrap_or_default();
    ensure!(
        deb.ends_with(&format!("/{named}")),
        "README.md installs {named}, cargo xtask deb made {deb}"
    );
    for c in &commands[..2] {
        sh_ok(&in_dir(c))?;
    }
    let deadline = Instant::now() + Duration::from_secs(240);
    for (c, want) in [
        (&commands[2], "active"),
        (&commands[3], "nofail: attached ("),
        (&commands[4], "nofail_vmalloc_calls_total"),
    ] {
        loop {
            let (code, out) = sh(&in_dir(c))?;
            if code == 0 && out.contains(want) {
                break;
            }
            let (_, state) = sh("systemctl is-active nofail")?;
            ensure!(
                !state.contains("failed") && Instant::now() < deadline,
                "`{c}` never printed {want:?} (nofail.service {}); journal:\n{}",
                state.trim(),
                journal()?
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    wait_serving(1)?;
    Ok(commands[4].clone())
}

/// Makes `n` BPF array maps (each one vmalloc call from the array map's
/// caller, `bpf::array_map_caller`), runs
/// README.md's scrape, and checks that nofail counted every map, or said
/// it lost the ones it did not: `what` names the configuration. A map
/// uncounted must show in `nofail_missed_events_total` of the same window
/// (a run the kernel skipped, a caller unread, a full map); an uncounted
/// map that nofail does not report as lost fails, and so does a count
/// above `n`.
fn counts_the_maps(scrape: &str, n: u64, what: &str) -> Result<()> {
    let (before, missed_before) = (scraped_calls(scrape)?.unwrap_or(0.0), missed_events()?);
    crate::wrap::make_maps(n)?;
    // The scrape reads the maps as they are now: no wait needed, but a
    // map freed later changes nothing either.
    let after = scraped_calls(scrape)?.with_context(|| {
        format!("`{scrape}` shows no line for the array map's caller after {n} maps")
    })?;
    let (counted, missed) = (after - before, missed_events()? - missed_before);
    let n = n as f64;
    ensure!(
        counted <= n && counted + missed >= n,
        "{what}: {}: nofail {counted} != {n} maps made, {missed} events reported missed meanwhile",
        bpf::array_map_caller()?
    );
    if counted < n {
        println!(
            "  {what}: {counted} of {n} maps counted, the rest reported lost ({missed} missed events)"
        );
    }
    Ok(())
}

/// Every `nofail_missed_events_total` sample of the service's /metrics,
/// summed: the events nofail says it lost, for any reason.
fn missed_events() -> Result<f64> {
    let text = sh_ok("curl -s localhost:9464/metrics")?;
    Ok(nofail_test_support::prom::missed_events(&text, None)? as f64)
}

/// array_map_alloc's calls in what README.md's scrape command printed;
/// None if it shows none (before the first map).
fn scraped_calls(scrape: &str) -> Result<Option<f64>> {
    let text = sh_ok(scrape)?;
    Ok(sample(
        &text,
        "nofail_vmalloc_calls_total",
        bpf::array_map_caller()?,
        "",
    )
    .ok())
}

/// README.md's service commands as written; the service counts the maps
/// made meanwhile (each counted, or reported lost: counts_the_maps);
/// `systemctl stop` leaves none of its programs, maps or links loaded; started again and removed with `dpkg -r`, it is
/// stopped and every file the package installed is gone.
pub fn installed_as_written(_ctx: &Ctx) -> Result<()> {
    let scrape = install_and_start()?;
    counts_the_maps(&scrape, 3, "as installed")?;
    // The sandbox as the running systemd scores it (the unit as loaded,
    // not offline): no worse than cargo xtask deb's offline threshold.
    let score = sh_ok("systemd-analyze security nofail.service --no-pager --threshold=23")?;
    let overall = score
        .lines()
        .find(|l| l.contains("Overall exposure level for nofail.service"))
        .context("systemd-analyze security printed no overall score")?;
    println!("  loaded unit: {}", overall.trim());
    let held = Held::by(main_pid()?)?;
    println!("  nofail.service holds {}", held.summary());
    ensure!(
        !held.programs.is_empty(),
        "the service holds no BPF program"
    );
    sh_ok("systemctl stop nofail")?;
    let left = held.still_loaded(Duration::from_secs(10))?;
    ensure!(
        left.is_empty(),
        "after systemctl stop nofail: {left} still loaded"
    );

    // Running, then removed: the package's prerm stops it first.
    let files: Vec<String> = sh_ok("dpkg -L nofail")?
        .lines()
        .filter(|p| std::path::Path::new(p).is_file())
        .map(str::to_string)
        .collect();
    ensure!(
        files.iter().any(|f| f == "/usr/sbin/nofail"),
        "dpkg -L nofail lists no /usr/sbin/nofail"
    );
    sh_ok("systemctl start nofail")?;
    wait_serving(2)?;
    let held = Held::by(main_pid()?)?;
    sh_ok("dpkg -r nofail")?;
    let left = held.still_loaded(Duration::from_secs(10))?;
    ensure!(left.is_empty(), "after dpkg -r nofail: {left} still loaded");
    let (_, state) = sh("systemctl is-active nofail")?;
    ensure!(
        state.trim() != "active",
        "nofail.service still {}",
        state.trim()
    );
    let remaining: Vec<&String> = files
        .iter()
        .filter(|f| std::path::Path::new(f).exists())
        .collect();
    ensure!(
        remaining.is_empty(),
        "dpkg -r left {} of {} files: {remaining:?}",
        remaining.len(),
        files.len()
    );
    let (_, listed) = sh("systemctl list-unit-files nofail.service --no-legend")?;
    ensure!(
        !listed.contains("nofail.service"),
        "systemd still knows nofail.service after dpkg -r: {listed}"
    );
    Ok(())
}

/// The drop-in the package ships disabled, enabled as docs/install.md
/// says: the service runs without CAP_SYS_ADMIN (CapEff loses it and
/// nothing else) and counts the maps made meanwhile (each counted, or
/// reported lost). On a kernel without Debian's perf_event_paranoid
/// restriction (the test kernel: its Debian source built without
/// CONFIG_SECURITY_PERF_EVENTS_RESTRICT, paranoid 2) it attaches as with CAP_SYS_ADMIN; on Debian's own
/// (paranoid 3) kprobes are refused and auto mode runs in tracepoint mode,
/// saying why. Then, with `--mode tracepoint` given by a second drop-in as
/// an admin would, tracepoint mode on either.
pub fn dropin_without_cap_sys_admin(_ctx: &Ctx) -> Result<()> {
    let scrape = install_and_start()?;
    let eff = |pid: u32| -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .context("no CapEff")?;
        Ok(u64::from_str_radix(hex.trim(), 16)?)
    };
    const SYS_ADMIN: u64 = 1 << 21;
    let with = eff(main_pid()?)?;
    ensure!(
        with & SYS_ADMIN != 0,
        "the packaged unit lacks CAP_SYS_ADMIN: {with:#x}"
    );
    let full = attach_lines(1)?;
    sh_ok(
        "mkdir -p /etc/systemd/system/nofail.service.d && \
         cp /usr/share/nofail/systemd/no-cap-sys-admin.conf /etc/systemd/system/nofail.service.d/ && \
         systemctl daemon-reload && systemctl restart nofail",
    )?;
    wait_serving(2)?;
    let without = eff(main_pid()?)?;
    println!("  CapEff {with:#x} -> {without:#x}");
    ensure!(
        without == with & !SYS_ADMIN,
        "with the drop-in CapEff is {without:#x}, not {:#x}",
        with & !SYS_ADMIN
    );
    let paranoid: u32 = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")?
        .trim()
        .parse()?;
    let attached = attach_lines(2)?;
    if paranoid >= 3 {
        ensure!(
            attached.len() == 1
                && attached[0].starts_with("nofail: attached (tracepoint; auto: kprobes refused"),
            "perf_event_paranoid {paranoid} without CAP_SYS_ADMIN: {attached:?}"
        );
    } else {
        ensure!(
            attached == full,
            "perf_event_paranoid {paranoid}: without CAP_SYS_ADMIN nofail attached otherwise than with it"
        );
    }
    counts_the_maps(
        &scrape,
        3,
        &format!("no CAP_SYS_ADMIN, perf_event_paranoid {paranoid}"),
    )?;

    std::fs::write(
        "/etc/systemd/system/nofail.service.d/tracepoint.conf",
        "[Service]\nExecStart=\nExecStart=/usr/sbin/nofail serve --listen 127.0.0.1:9464 --mode tracepoint\n",
    )?;
    sh_ok("systemctl daemon-reload && systemctl restart nofail")?;
    wait_serving(3)?;
    ensure!(
        eff(main_pid()?)? == without,
        "the tracepoint drop-in changed the capabilities"
    );
    let attached = attach_lines(3)?;
    ensure!(
        attached
            .iter()
            .all(|l| l.starts_with("nofail: attached (tracepoint")),
        "with --mode tracepoint: {attached:?}"
    );
    counts_the_maps(&scrape, 3, "tracepoint mode, no CAP_SYS_ADMIN")?;
    Ok(())
}
