// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernels older than vmalloc's `__GFP_NOFAIL` loop: the retry loops came
//! with 9376130c390a ("mm/vmalloc: add support for __GFP_NOFAIL", v5.17),
//! and the BPF features nofail's object is built on came in the same era.
//! On such a kernel every command that would touch it refuses in one line,
//! before anything is loaded, naming what is missing.

/// The release that added vmalloc's NOFAIL retry loops.
pub const NOFAIL_LOOP_SINCE: (u32, u32) = (5, 17);

/// A BPF feature nofail's programs need, how to see it in the running
/// kernel, and the release that added it.
struct Feature {
    name: &'static str,
    since: (u32, u32),
    /// A kallsyms name present exactly when the kernel has the feature;
    /// None: only the release tells.
    symbol: Option<&'static str>,
}

const FEATURES: &[Feature] = &[
    Feature {
        name: "bpf_loop",
        since: (5, 17),
        symbol: Some("bpf_loop"),
    },
    // The fetching atomic add (BPF_ATOMIC | BPF_FETCH); the verifier
    // rejects it with -EINVAL before 5.12, and no symbol names it.
    Feature {
        name: "BPF atomics",
        since: (5, 12),
        symbol: None,
    },
    // include/trace/events/vmalloc.h (6.3): tracepoint mode and the
    // what-if's area wake-ups.
    Feature {
        name: "vmalloc tracepoints",
        since: (6, 3),
        symbol: Some("__traceiter_alloc_vmap_area"),
    },
];

/// `major.minor` of a release string such as `5.10.0-33-amd64`.
pub fn major_minor(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Ok on a kernel with the NOFAIL loop (or a release nofail cannot read,
/// which it leaves to the loader to judge); otherwise the one-line
/// refusal. `has_symbol` answers from /proc/kallsyms.
pub fn check(release: &str, has_symbol: impl Fn(&str) -> bool) -> Result<(), String> {
    let Some(version) = major_minor(release) else {
        return Ok(());
    };
    if version >= NOFAIL_LOOP_SINCE {
        return Ok(());
    }
    let missing: Vec<String> = FEATURES
        .iter()
        .filter(|f| match f.symbol {
            Some(s) => !has_symbol(s),
            None => version < f.since,
        })
        .map(|f| format!("{} ({}.{})", f.name, f.since.0, f.since.1))
        .collect();
    let (major, minor) = NOFAIL_LOOP_SINCE;
    Err(format!(
        "kernel {release} predates vmalloc's __GFP_NOFAIL retry loop (added in {major}.{minor}): there is no loop to see or break{}; nothing was loaded",
        if missing.is_empty() {
            String::new()
        } else {
            format!(
                ", and it lacks BPF features nofail's programs need: {}",
                missing.join(", ")
            )
        }
    ))
}

/// `check` on the running kernel.
pub fn check_running() -> Result<(), String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    // Read only on an old kernel: a modern one never gets this far.
    if major_minor(release).is_none_or(|v| v >= NOFAIL_LOOP_SINCE) {
        return Ok(());
    }
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let names: std::collections::HashSet<&str> = kallsyms
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    check(release, |s| names.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_read() {
        assert_eq!(major_minor("5.10.0-33-amd64"), Some((5, 10)));
        assert_eq!(major_minor("7.2.13"), Some((7, 2)));
        assert_eq!(major_minor("6.12.57+deb12-amd64"), Some((6, 12)));
        assert_eq!(major_minor("garbage"), None);
        assert_eq!(major_minor(""), None);
    }

    #[test]
    fn bullseye_refused_with_every_missing_feature() {
        let err = check("5.10.0-33-amd64", |_| false).unwrap_err();
        assert!(!err.contains('\n'), "{err}");
        for needle in [
            "5.10.0-33-amd64",
            "predates",
            "5.17",
            "bpf_loop (5.17)",
            "BPF atomics (5.12)",
            "vmalloc tracepoints (6.3)",
            "nothing was loaded",
        ] {
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn features_read_from_the_kernel_where_a_symbol_shows_them() {
        // A 5.16 with bpf_loop backported: only the tracepoints missing.
        let err = check("5.16.0", |s| s == "bpf_loop").unwrap_err();
        assert!(!err.contains("bpf_loop"), "{err}");
        assert!(!err.contains("BPF atomics"), "{err}");
        assert!(err.contains("vmalloc tracepoints (6.3)"), "{err}");
    }

    #[test]
    fn kernels_with_the_loop_pass() {
        for release in ["5.17.0", "6.1.0-40-amd64", "6.18.1", "7.2.13", "10.0"] {
            assert!(check(release, |_| false).is_ok(), "{release}");
        }
        // An unreadable release is the loader's to judge.
        assert!(check("", |_| false).is_ok());
    }
}
