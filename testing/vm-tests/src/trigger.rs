//! The trigger module's debugfs interface and the kernel's own fault
//! injection (failslab with task-filter), the ground truth of the test kernel.

use std::path::Path;

use anyhow::{Context as _, Result, ensure};

const DIR: &str = "/sys/kernel/debug/nofail_trigger";

pub fn load(module: &Path) -> Result<()> {
    if Path::new(DIR).exists() {
        return Ok(());
    }
    let out = std::process::Command::new("insmod").arg(module).output()?;
    ensure!(
        out.status.success(),
        "insmod {}: {}",
        module.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

fn write(file: &str, value: &str) -> Result<()> {
    std::fs::write(format!("{DIR}/{file}"), value)
        .with_context(|| format!("write {value:?} to {DIR}/{file}"))
}

/// What the trigger saw for its last run.
#[derive(Debug, PartialEq, Eq)]
pub struct Results {
    pub calls: u64,
    pub null: u64,
    pub retries: u64,
}

/// Makes `count` calls of `size` bytes from `site`, with the kernel's fault
/// injection armed for them when `fail`.
pub fn run(site: &str, count: u64, size: u64, fail: bool) -> Result<Results> {
    write("size", &size.to_string())?;
    write("count", &count.to_string())?;
    write("fail", if fail { "1" } else { "0" })?;
    write("run", site)?;
    let text = std::fs::read_to_string(format!("{DIR}/results"))?;
    let field = |name: &str| -> Result<u64> {
        text.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name} in {text:?}"))?
            .parse()
            .context("bad number")
    };
    Ok(Results {
        calls: field("calls")?,
        null: field("null")?,
        retries: field("retries")?,
    })
}

/// Arms failslab for tasks with make_it_fail: fail the next `times` slab
/// allocations (including sleeping ones, which it skips by default).
pub fn arm_failslab(times: u64) -> Result<()> {
    let d = "/sys/kernel/debug/failslab";
    for (file, value) in [
        ("task-filter", "Y"),
        ("ignore-gfp-wait", "N"),
        ("probability", "100"),
        ("interval", "1"),
        ("verbose", "0"),
        ("space", "0"),
        ("times", &times.to_string()),
    ] {
        std::fs::write(format!("{d}/{file}"), value)
            .with_context(|| format!("write {d}/{file}"))?;
    }
    Ok(())
}

pub fn disarm_failslab() -> Result<()> {
    std::fs::write("/sys/kernel/debug/failslab/times", "0")?;
    std::fs::write("/sys/kernel/debug/failslab/probability", "0")?;
    Ok(())
}
