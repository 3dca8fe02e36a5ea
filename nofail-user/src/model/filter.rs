// SPDX-License-Identifier: MIT OR Apache-2.0
//! What the user selected to count (or fail): tasks, call sites, sizes,
//! and the map sizes that bound it; and how a report records it.

use serde::{Deserialize, Serialize};

/// Which vmalloc calls are counted (or failed), by task, call site and
/// size, and the map sizes that bound how many; as plain values (the flags
/// are in cmd/flags.rs; what it becomes in the kernel is bpf/filter.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSelection {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// Symbols or globs of the calling functions.
    pub caller: Vec<String>,
    /// Loadable modules whose code calls.
    pub module: Vec<String>,
    pub nofail_only: bool,
    pub min_size: Option<u64>,
    /// `--chains` depth.
    pub chains: Option<u32>,
    pub max_callers: u32,
    pub max_inflight: u32,
    /// Only tasks in this cgroup v2 or below it (`--command-only`).
    pub cgroup: Option<CgroupScope>,
}

/// A cgroup v2 subtree, as the kernel programs compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupScope {
    /// The cgroup's id (its directory's inode number).
    pub id: u64,
    /// Its level below the root (the root is 0).
    pub level: u32,
    /// Its directory, for the report.
    pub path: String,
}

impl Default for CallSelection {
    fn default() -> Self {
        Self {
            pid: None,
            comm: None,
            caller: vec![],
            module: vec![],
            nofail_only: false,
            min_size: None,
            chains: None,
            max_callers: nofail_common::MAX_CALLERS,
            max_inflight: nofail_common::MAX_INFLIGHT,
            cgroup: None,
        }
    }
}

/// The in-kernel filter the counts were taken under.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FilterView {
    pub pid: Option<u32>,
    pub comm: Option<String>,
    /// `--caller` patterns, comma-separated.
    pub caller: Option<String>,
    /// `--module` names, comma-separated.
    #[serde(default)]
    pub module: Option<String>,
    pub nofail_only: bool,
    pub min_size: Option<u64>,
    /// `--chains` depth.
    #[serde(default)]
    pub chains: Option<u32>,
    /// `--command-only`: the cgroup v2 nofail made for the command; only
    /// tasks in it or below it were counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
}

impl From<&CallSelection> for FilterView {
    fn from(f: &CallSelection) -> Self {
        Self {
            pid: f.pid,
            comm: f.comm.clone(),
            caller: (!f.caller.is_empty()).then(|| f.caller.join(",")),
            module: (!f.module.is_empty()).then(|| f.module.join(",")),
            nofail_only: f.nofail_only,
            min_size: f.min_size,
            chains: f.chains,
            cgroup: f.cgroup.as_ref().map(|c| c.path.clone()),
        }
    }
}
