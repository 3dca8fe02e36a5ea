// SPDX-License-Identifier: MIT OR Apache-2.0
//! How calls were followed: the attach mode asked for, and each role as
//! it ended up attached (the report's `mode` and `attached`).

use std::fmt;

/// How a role's programs are attached.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// fentry/fexit when the kernel allows, kprobes otherwise (per role).
    Auto,
    Fentry,
    Kprobe,
    /// Raw tracepoints, for kernels without kprobes and fentry (auto's
    /// fallback): vmap areas, NOFAIL retry sleeps per stage, slept time; no
    /// latency, NULLs, open-coded retries or injection.
    Tracepoint,
    /// Slow paths only, for always-on use: failures, NULLs, NOFAIL retries
    /// and sleeps, open-coded retries; a call that does not fail runs nothing,
    /// so calls, latency and page-table levels are not counted. Follows up
    /// to 256 tasks in a slow path at once.
    Sentinel,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Fentry => "fentry",
            Mode::Kprobe => "kprobe",
            Mode::Tracepoint => "tracepoint",
            Mode::Sentinel => "sentinel",
        })
    }
}

/// One role as it ended up attached.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    pub role: String,
    pub function: String,
    pub mode: Mode,
    /// Why fentry was not used, when auto mode fell back to kprobes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

/// "kprobe", "fentry", or "mixed" across the attached roles.
/// The mode calls were followed in: vmalloc's core's (the slow-path roles
/// are kprobes in every mode), else the one all roles share.
pub fn mode_of(attached: &[Attached]) -> String {
    if let Some(core) = attached.iter().find(|a| a.role == "vmalloc-core") {
        return core.mode.to_string();
    }
    let mut modes: Vec<String> = attached.iter().map(|a| a.mode.to_string()).collect();
    modes.dedup();
    match modes.as_slice() {
        [] => "none".into(),
        [one] => one.clone(),
        _ => "mixed".into(),
    }
}
