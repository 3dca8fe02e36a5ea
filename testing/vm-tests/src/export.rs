// SPDX-License-Identifier: MIT OR Apache-2.0
//! Export formats from real runs: the Prometheus endpoint scraped while
//! the trigger makes calls with a known number of forced retries, promtool
//! on every output, the JSON read back into a picture and through the
//! baseline gate. The reports written here are the ones recorded under
//! testing/reports/ for the host tests.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use nofail_test_support::bpf;
use nofail_test_support::prom::promtool_check_file as promtool;
use nofail_test_support::{http::http_get, prom::sample};

use crate::{
    harness::{Ctx, Trace, expect_fields},
    trigger::{self, Arm, Injector},
};

const SIZE: u64 = 64 << 10;

/// `nofail serve` on an ephemeral loopback port.
pub struct Serve {
    child: Child,
    pub port: u16,
}

impl Serve {
    pub fn start(ctx: &Ctx) -> Result<Self> {
        Self::start_with(ctx, &[])
    }

    /// `nofail serve` live on an ephemeral port with `extra` arguments.
    pub fn start_with(ctx: &Ctx, extra: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(&ctx.nofail);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Self::start_command(cmd)
    }

    /// A `nofail serve` command line (perhaps under a wrapper), started
    /// and waited for until it serves.
    pub fn start_command(mut cmd: Command) -> Result<Self> {
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  [serve] {line}");
                let _ = tx.send(line);
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.contains("serving http://") => {
                    let port = line
                        .split("127.0.0.1:")
                        .nth(1)
                        .and_then(|s| s.split('/').next())
                        .and_then(|p| p.parse().ok())
                        .with_context(|| format!("no port in {line:?}"))?;
                    return Ok(Self { child, port });
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    bail!("nofail serve did not start: {:?}", child.wait()?);
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) -> Result<()> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        ensure!(status.success(), "nofail serve exited {status}");
        Ok(())
    }
}

/// The Prometheus view of the site must equal the trigger's ground truth:
/// 7 calls, retries 0 x5, 3 x1, 1 x1.
fn check_exposition(text: &str) -> Result<()> {
    let site = "site_vmalloc_nofail";
    let want = [
        ("nofail_vmalloc_calls_total", "", 7.0),
        ("nofail_vmalloc_retries_total", "stage=\"area\"", 4.0),
        ("nofail_vmalloc_retries_total", "stage=\"mapping\"", 0.0),
        ("nofail_retry_sleeps_total", "", 4.0),
        ("nofail_vmalloc_retries_per_call_bucket", "le=\"0\"", 5.0),
        ("nofail_vmalloc_retries_per_call_bucket", "le=\"1\"", 6.0),
        ("nofail_vmalloc_retries_per_call_bucket", "le=\"3\"", 7.0),
        ("nofail_vmalloc_retries_per_call_bucket", "le=\"+Inf\"", 7.0),
        ("nofail_vmalloc_retries_per_call_sum", "", 4.0),
        ("nofail_vmalloc_retries_per_call_count", "", 7.0),
    ];
    for (name, extra, value) in want {
        let got = sample(text, name, site, extra)?;
        ensure!(
            got == value,
            "{name}{{{extra}}}: nofail {got} != truth {value}"
        );
    }
    Ok(())
}

/// Seven NOFAIL calls from the trigger: five clean, one whose vm_struct
/// allocation fails 3 times (fail_function), one that fails once.
fn seven_calls() -> Result<()> {
    let clean = trigger::run("vmalloc_nofail", 5, SIZE, Arm::Off)?;
    ensure!(clean.calls == 5 && clean.null == 0, "{clean:?}");
    for k in [3, 1] {
        let (run, left) =
            trigger::run_injected(Injector::ShouldFailslab, k, "vmalloc_nofail", 1, SIZE)?;
        ensure!(run.null == 0 && left == 0, "K={k}: {run:?}, {left} left");
    }
    Ok(())
}

pub fn formats_from_live_run(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    let prom = ctx.out.join("export_live.prom");
    let scraped = ctx.out.join("export_scrape.prom");
    let svg = ctx.out.join("export_live.svg");
    let serve = Serve::start(ctx)?;
    let trace = Trace::start(
        ctx,
        "export_live",
        &["--prometheus", prom.to_str().context("path")?],
    )?;
    let work = seven_calls().and_then(|_| http_get(serve.port, "/metrics"));
    let report = trace.finish()?;
    serve.stop()?;
    let (code, body) = work?;
    ensure!(code == 200, "GET /metrics answered {code}");
    std::fs::write(&scraped, &body)?;
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[
            ("calls", 7),
            ("area_retries", 4),
            ("sleeps", 4),
            ("max_retries", 3),
        ],
    )?;
    for file in [&scraped, &prom] {
        promtool(file)?;
        check_exposition(&std::fs::read_to_string(file)?)
            .with_context(|| file.display().to_string())?;
    }
    let out = Command::new(&ctx.nofail)
        .arg("report")
        .arg(ctx.out.join("export_live.json"))
        .arg("--svg")
        .arg(&svg)
        .output()?;
    ensure!(
        out.status.success(),
        "nofail report --svg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let picture = std::fs::read_to_string(&svg)?;
    // The panel titles carry the trigger's ground truth: 7 calls, 4
    // retries, 4 sleeps, 5 calls that never slept.
    for want in [
        "<svg",
        "retries per call (7 calls, 4 retries)",
        "stall per call (4 sleeps,",
        "5 calls never slept",
    ] {
        ensure!(picture.contains(want), "the picture lacks {want:?}");
    }
    Ok(())
}

/// Every kernel: `nofail serve` live while this process creates 3 BPF
/// array maps of 16 MiB; the scrape passes promtool and counts exactly 3
/// calls from array_map_alloc, with no retry.
/// Makes `maps` BPF array maps while `serve` runs, scrapes it once, stops
/// it, and returns the text after promtool accepted it (kept as `name`).
pub fn scrape_after_maps(ctx: &Ctx, serve: Serve, maps: u32, name: &str) -> Result<String> {
    let work = (0..maps)
        .try_for_each(|_| bpf::create_big_array_map())
        .and_then(|_| http_get(serve.port, "/metrics"));
    serve.stop()?;
    let (code, body) = work?;
    ensure!(code == 200, "GET /metrics answered {code}");
    let scraped = ctx.out.join(name);
    std::fs::write(&scraped, &body)?;
    promtool(&scraped)?;
    Ok(body)
}

pub fn serve_scrape_on_every_kernel(ctx: &Ctx) -> Result<()> {
    let body = scrape_after_maps(ctx, Serve::start(ctx)?, 3, "serve_scrape.prom")?;
    for (name, extra, value) in [
        ("nofail_vmalloc_calls_total", "", 3.0),
        ("nofail_vmalloc_nofail_calls_total", "", 0.0),
        ("nofail_vmalloc_retries_total", "stage=\"area\"", 0.0),
        ("nofail_vmalloc_retries_per_call_count", "", 3.0),
        ("nofail_vmalloc_retries_per_call_bucket", "le=\"0\"", 3.0),
    ] {
        let got = sample(
            &body,
            name,
            nofail_test_support::bpf::array_map_caller()?,
            extra,
        )?;
        ensure!(
            got == value,
            "{name}{{{extra}}}: nofail {got} != truth {value}"
        );
    }
    Ok(())
}

/// The shipped unit's command line (deploy/systemd/nofail.service,
/// ExecStart with the binary under test) run as nobody with exactly the
/// unit's capabilities (setpriv: inheritable, ambient and bounding sets,
/// no new privileges): the process has those and no others, and it counts
/// the maps made meanwhile exactly, with call sites named (CAP_SYSLOG).
pub fn service_command_line_under_its_capabilities(ctx: &Ctx) -> Result<()> {
    let unit_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/systemd/nofail.service"
    );
    let unit = std::fs::read_to_string(unit_path).context("deploy/systemd/nofail.service")?;
    let value = |key: &str| -> Result<String> {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .with_context(|| format!("no {key}= in the unit"))
    };
    let caps: Vec<String> = value("AmbientCapabilities")?
        .split_whitespace()
        .map(|c| c.trim_start_matches("CAP_").to_lowercase())
        .collect();
    ensure!(
        value("CapabilityBoundingSet")? == value("AmbientCapabilities")?,
        "the unit's bounding set is not its ambient set"
    );
    let exec = value("ExecStart")?;
    let mut words = exec.split_whitespace();
    ensure!(
        words.next() == Some("/usr/sbin/nofail"),
        "ExecStart: {exec}"
    );
    let set = format!(
        "-all,{}",
        caps.iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--no-new-privs",
    ])
    .arg(format!("--inh-caps={set}"))
    .arg(format!("--ambient-caps={set}"))
    .arg(format!("--bounding-set={set}"))
    .arg("--")
    .arg(&ctx.nofail)
    .args(words);
    let serve = Serve::start_command(cmd)?;
    // What the serving process holds: nobody, the unit's capabilities.
    let status = std::fs::read_to_string(format!("/proc/{}/status", serve.pid()))?;
    let field = |name: &str| -> Result<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("no {name} in /proc/PID/status"))
    };
    let number = |cap: &str| -> Result<u32> {
        Ok(match cap {
            "dac_read_search" => 2,
            "syslog" => 34,
            "sys_admin" => 21,
            "perfmon" => 38,
            "bpf" => 39,
            other => anyhow::bail!("capability {other} not known to this test"),
        })
    };
    let mut want = 0u64;
    for c in &caps {
        want |= 1 << number(c)?;
    }
    let eff = u64::from_str_radix(&field("CapEff:")?, 16)?;
    let bnd = u64::from_str_radix(&field("CapBnd:")?, 16)?;
    let uid = field("Uid:")?;
    println!("  unit caps {caps:?}: CapEff {eff:#x}, CapBnd {bnd:#x}, Uid {uid}");
    ensure!(
        eff == want && bnd == want,
        "CapEff {eff:#x} CapBnd {bnd:#x}, unit {want:#x}"
    );
    ensure!(uid.split_whitespace().all(|u| u == "65534"), "Uid {uid}");
    let body = scrape_after_maps(ctx, serve, 3, "service_scrape.prom")?;
    let calls = sample(
        &body,
        "nofail_vmalloc_calls_total",
        nofail_test_support::bpf::array_map_caller()?,
        "",
    )?;
    ensure!(
        calls == 3.0,
        "the array map's caller: {calls} != 3 (named, so kallsyms was readable)"
    );
    Ok(())
}

/// Records `runs` NOFAIL calls, `spins` of them failing `k` times each.
fn record(ctx: &Ctx, name: &str, runs: u64, spins: u64, k: u64) -> Result<()> {
    let trace = Trace::start(ctx, name, &[])?;
    let work = || -> Result<()> {
        trigger::run("vmalloc_nofail", runs - spins, SIZE, Arm::Off)?;
        for _ in 0..spins {
            let (run, left) =
                trigger::run_injected(Injector::ShouldFailslab, k, "vmalloc_nofail", 1, SIZE)?;
            ensure!(run.null == 0 && left == 0, "{run:?}, {left} left");
        }
        Ok(())
    };
    let ((), report) = trace.around(work)?;
    expect_fields(
        &report,
        "site_vmalloc_nofail",
        &[("calls", runs), ("area_retries", spins * k)],
    )
}

/// The gate both ways on two real runs: a kernel whose loop spins more
/// (3 of 10 calls retrying 3 times, against 1 of 10 retrying once) fails
/// it with exit status 3; the baseline against itself passes.
pub fn baseline_gate_on_recorded_runs(ctx: &Ctx) -> Result<()> {
    ctx.load_trigger()?;
    record(ctx, "export_base", 10, 1, 1)?;
    record(ctx, "export_spin", 10, 3, 3)?;
    let gate = |new: &str, old: &str| -> Result<(Option<i32>, String)> {
        let out = Command::new(&ctx.nofail)
            .arg("report")
            .arg(ctx.out.join(format!("{new}.json")))
            .arg("--baseline")
            .arg(ctx.out.join(format!("{old}.json")))
            .args(["--fail-if-retries-increase", "50"])
            .output()?;
        Ok((
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    };
    let (code, err) = gate("export_spin", "export_base")?;
    ensure!(
        code == Some(3),
        "spinning run passed the gate: {code:?} {err}"
    );
    ensure!(
        err.contains("site_vmalloc_nofail") && err.contains("0.10 -> 0.90"),
        "{err}"
    );
    let (code, err) = gate("export_base", "export_base")?;
    ensure!(
        code == Some(0),
        "baseline failed against itself: {code:?} {err}"
    );
    Ok(())
}
