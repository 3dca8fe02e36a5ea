// SPDX-License-Identifier: MIT OR Apache-2.0
//! Running `nofail trace` in the background and reading its JSON report.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

pub struct Ctx {
    pub nofail: PathBuf,
    pub trigger: Option<PathBuf>,
    pub out: PathBuf,
}

impl Ctx {
    /// Loads the trigger module (test kernel scenarios only).
    pub fn load_trigger(&self) -> Result<()> {
        crate::trigger::load(self.trigger.as_ref().context("no trigger module")?)
    }

    pub fn new(nofail: PathBuf, trigger: Option<PathBuf>, out: PathBuf) -> Self {
        let _ = std::fs::create_dir_all(&out);
        Self {
            nofail,
            trigger,
            out,
        }
    }
}

/// A `nofail trace` running until `finish`.
pub struct Trace {
    child: Child,
    json: PathBuf,
    /// nofail's stdout (tables) goes here.
    pub stdout: PathBuf,
    /// What nofail printed on stderr until it was attached.
    pub startup: Vec<String>,
    stderr: mpsc::Receiver<String>,
}

impl Trace {
    /// Starts tracing and waits until nofail reports it is attached.
    pub fn start(ctx: &Ctx, name: &str, extra: &[&str]) -> Result<Self> {
        Self::start_cmd(ctx, "trace", name, extra)
    }

    /// Starts `nofail <command>` (trace or inject) and waits until it is
    /// attached.
    pub fn start_cmd(ctx: &Ctx, command: &str, name: &str, extra: &[&str]) -> Result<Self> {
        let json = ctx.out.join(format!("{name}.json"));
        let _ = std::fs::remove_file(&json);
        let stdout = ctx.out.join(format!("{name}.txt"));
        let mut child = Command::new(&ctx.nofail)
            .args([command, "--duration", "600s", "--json"])
            .arg(&json)
            .args(extra)
            .stdout(std::fs::File::create(&stdout)?)
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", ctx.nofail.display()))?;
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("  [nofail] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(120)) {
                Ok(line) if line.contains("(Ctrl-C to stop early)") => break,
                Ok(line) => startup.push(line),
                Err(_) => {
                    let _ = child.kill();
                    bail!("nofail did not start tracing: {:?}", child.wait()?);
                }
            }
        }
        Ok(Self {
            child,
            json,
            stdout,
            startup,
            stderr: rx,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the process to end on its own (or by a signal sent to it).
    pub fn wait(mut self) -> Result<std::process::ExitStatus> {
        Ok(self.child.wait()?)
    }

    /// Runs `work` while nofail is attached, then stops it; nofail is
    /// stopped even when `work` fails.
    pub fn around<T>(self, work: impl FnOnce() -> Result<T>) -> Result<(T, Value)> {
        let result = work();
        let report = self.finish()?;
        Ok((result?, report))
    }

    /// Stops tracing (SIGINT, as Ctrl-C) and returns the JSON report.
    pub fn finish(mut self) -> Result<Value> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let status = self.child.wait()?;
        let rest: Vec<String> = self.stderr.try_iter().collect();
        ensure!(
            status.success(),
            "nofail exited {status}: {}",
            rest.join(" | ")
        );
        let text = std::fs::read_to_string(&self.json).context("nofail wrote no JSON report")?;
        Ok(serde_json::from_str(&text)?)
    }
}

/// The entries of `report[list]` (callers, chains, in_flight, injection
/// behaviour...) whose `caller` is a call site in `symbol`; an error if
/// `list` is not an array (a list renamed or dropped finds no rows by
/// accident).
pub fn rows_of<'a>(list: &'a Value, symbol: &str) -> Result<Vec<&'a Value>> {
    let prefix = format!("{symbol}+");
    let rows = list
        .as_array()
        .with_context(|| format!("looking for {symbol}: not a list: {list}"))?;
    Ok(rows
        .iter()
        .filter(|r| r["caller"].as_str().is_some_and(|s| s.starts_with(&prefix)))
        .collect())
}

/// The one caller row of `symbol` (its call site), or an error naming
/// what nofail reported instead.
pub fn row<'a>(report: &'a Value, symbol: &str) -> Result<&'a Value> {
    let rows = rows_of(&report["callers"], symbol)?;
    ensure!(
        rows.len() == 1,
        "{} rows for {symbol}; callers: {}",
        rows.len(),
        callers(report)
    );
    Ok(rows[0])
}

/// A row's integer field; a missing or non-integer one is an error naming
/// the field and the row, never a 0 that an expectation of zero would pass.
pub use nofail_test_support::json::uint as field;

fn callers(report: &Value) -> String {
    report["callers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| format!("{}={}", r["caller"].as_str().unwrap_or("?"), r["calls"]))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks named fields of `symbol`'s row against the ground truth.
pub fn expect_fields(report: &Value, symbol: &str, want: &[(&str, u64)]) -> Result<()> {
    let r = row(report, symbol)?;
    let mut wrong = Vec::new();
    for (name, v) in want {
        let got = field(r, name)?;
        if got != *v {
            wrong.push(format!("{name}: nofail {got} != truth {v}"));
        }
    }
    ensure!(wrong.is_empty(), "{symbol}: {}", wrong.join("; "));
    Ok(())
}

/// Page-table allocation failures of a caller or in-flight row, all levels.
pub fn pt_total(row: &Value) -> Result<u64> {
    let levels = row
        .get("pt_failures")
        .with_context(|| format!("no field pt_failures in {}", row["caller"]))?;
    ["pte", "pmd", "pud", "p4d"]
        .iter()
        .map(|l| field(levels, l).with_context(|| format!("pt_failures of {}", row["caller"])))
        .sum()
}

/// The kernel log from now on, read through /dev/kmsg (records, not the
/// ring buffer's text: old lines rotating out do not matter).
pub struct Kmsg(std::fs::File);

impl Kmsg {
    pub fn from_now() -> Result<Self> {
        use std::{io::Seek as _, os::unix::fs::OpenOptionsExt as _};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        f.seek(std::io::SeekFrom::End(0))?;
        Ok(Self(f))
    }

    /// Every record logged since `from_now` (or the last call).
    pub fn read_new(&mut self) -> Result<Vec<String>> {
        use std::io::Read as _;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        loop {
            match self.0.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // A record overwritten before it was read.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }
}

/// What in a kernel log record means the kernel is not clean: a WARN,
/// a BUG or oops, a lockdep report.
pub const KERNEL_TROUBLE: &[&str] = &[
    "WARNING:",
    "BUG:",
    "Oops",
    "general protection fault",
    "possible circular locking",
    "possible recursive locking",
    "inconsistent lock state",
    "lockdep",
];

/// The records of `records` that show kernel trouble, except those a
/// scenario expects (`allowed` substrings, e.g. the WARN of the known
/// endless mapping loop).
pub fn kernel_trouble<'a>(records: &'a [String], allowed: &[&str]) -> Vec<&'a str> {
    records
        .iter()
        .map(String::as_str)
        .filter(|r| KERNEL_TROUBLE.iter().any(|t| r.contains(t)))
        .filter(|r| !allowed.iter().any(|a| r.contains(a)))
        .collect()
}

/// Two reports of the same work by two modes agree on `fields` of `site`'s
/// row (each present in both: a missing field is a failure, not a 0).
/// Returns "name full/other ..." for the log.
pub fn same_fields(
    full: &Value,
    other: &Value,
    mode: &str,
    site: &str,
    fields: &[&str],
) -> Result<String> {
    let (f, o) = (row(full, site)?, row(other, site)?);
    let mut line = String::new();
    for name in fields {
        let (a, b) = (field(f, name)?, field(o, name)?);
        line += &format!(" {name} {a}/{b}");
        ensure!(a == b, "{site}: {name}: full {a}, {mode} {b}");
    }
    Ok(line)
}

/// Maps and programs created while `f` ran, from the ids before and after.
/// Ground truth: the kernel hands out map and program ids in order, so if
/// nothing was created meanwhile, the probe made after `f` has the next id
/// after the one made before (a program list read after a process exited
/// would be empty either way).
pub fn loaded_while<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, (u32, u32))> {
    use nofail_test_support::bpf;
    let (map0, prog0) = (bpf::next_map_id()?, bpf::next_prog_id()?);
    let value = f()?;
    let (map1, prog1) = (bpf::next_map_id()?, bpf::next_prog_id()?);
    Ok((value, (map1 - map0 - 1, prog1 - prog0 - 1)))
}

/// The one call in the in-flight view of a report taken while the
/// trigger's endless mapping loop spins (trigger::spin_mapping_loop):
/// flagged stuck, mapping failures that kept coming, a sleep after each.
pub fn spinning_call(report: &serde_json::Value) -> Result<&serde_json::Value> {
    let stuck: Vec<&serde_json::Value> =
        rows_of(&report["in_flight"], "site_vmalloc_nofail_fresh")?;
    ensure!(
        stuck.len() == 1,
        "the spinning call is not in the in-flight view: {}",
        report["in_flight"]
    );
    let r = stuck[0];
    let (mapping, sleeps) = (field(r, "mapping_failures")?, field(r, "sleeps_so_far")?);
    ensure!(
        field(r, "area_failures")? == 0,
        "area failures in a mapping-stage injection: {r}"
    );
    ensure!(mapping >= 2, "the loop did not keep failing: {r}");
    // Sampled mid-loop: the last failure's sleep may not have started yet.
    ensure!(
        sleeps == mapping || sleeps + 1 == mapping,
        "{sleeps} sleeps for {mapping} mapping failures"
    );
    ensure!(
        r["stuck"] == true,
        "the spinning call is not flagged stuck: {r}"
    );
    println!("  (the NOFAIL loop spins on -EBUSY: {mapping} mapping failures so far)");
    Ok(r)
}
