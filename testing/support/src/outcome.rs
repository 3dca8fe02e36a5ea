// SPDX-License-Identifier: MIT OR Apache-2.0
//! The words vm-tests and xtask exchange: one result line per scenario in
//! libtest's form (`test NAME ... ok (12.3 s)`), a closing `test result:`
//! line, the scenario table (`vm-tests --list`), and the error a scenario
//! returns when the kernel lacks what it needs.

use std::fmt;

/// Returned (inside an `anyhow::Error`) by a scenario that cannot run on
/// this kernel: counted as skipped, with the reason, never as passed.
#[derive(Debug)]
pub struct Skip(pub String);

impl fmt::Display for Skip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped: {}", self.0)
    }
}

impl std::error::Error for Skip {}

/// A scenario's `Err` that says it was skipped, and why.
pub fn skip(reason: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Skip(reason.into()))
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Ok,
    Failed,
    Skipped(String),
}

/// One scenario's result line.
#[derive(Clone, Debug, PartialEq)]
pub struct TestLine {
    pub name: String,
    pub outcome: Outcome,
    pub secs: f64,
}

impl fmt::Display for TestLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, secs) = (&self.name, self.secs);
        match &self.outcome {
            Outcome::Ok => write!(f, "test {name} ... ok ({secs:.1} s)"),
            Outcome::Failed => write!(f, "test {name} ... FAILED ({secs:.1} s)"),
            Outcome::Skipped(why) => write!(f, "test {name} ... skipped: {why} ({secs:.1} s)"),
        }
    }
}

impl TestLine {
    pub fn parse(line: &str) -> Option<Self> {
        let (name, rest) = line.strip_prefix("test ")?.split_once(" ... ")?;
        let (what, secs) = rest.strip_suffix(" s)")?.rsplit_once(" (")?;
        let outcome = match what {
            "ok" => Outcome::Ok,
            "FAILED" => Outcome::Failed,
            _ => Outcome::Skipped(what.strip_prefix("skipped: ")?.to_string()),
        };
        Some(Self {
            name: name.to_string(),
            outcome,
            secs: secs.parse().ok()?,
        })
    }
}

/// The closing line's counts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
}

impl Summary {
    pub fn add(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Ok => self.passed += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        let mut n = line.strip_prefix("test result: ")?.split(", ").map(|part| {
            let (n, word) = part.split_once(' ')?;
            Some((n.parse().ok()?, word))
        });
        let mut take = |word: &str| match n.next()? {
            Some((v, w)) if w == word => Some(v),
            _ => None,
        };
        Some(Self {
            passed: take("passed")?,
            failed: take("failed")?,
            skipped: take("skipped")?,
        })
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "test result: {} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }
}

/// One row of `vm-tests --list`: a scenario, whether it needs a kernel of
/// its own, the reports it writes that testing/reports keeps, and the
/// kernel options it needs beyond those every run needs (xtask skips it on
/// a kernel build tree whose .config lacks one).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub name: String,
    pub own_boot: bool,
    /// It runs in a guest booted with systemd as PID 1 (a boot of its own).
    pub systemd: bool,
    pub records: Vec<String>,
    pub needs: Vec<String>,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name)?;
        if self.own_boot {
            write!(f, " own-boot")?;
        }
        if self.systemd {
            write!(f, " systemd")?;
        }
        if !self.records.is_empty() {
            write!(f, " records={}", self.records.join(","))?;
        }
        if !self.needs.is_empty() {
            write!(f, " needs={}", self.needs.join(","))?;
        }
        Ok(())
    }
}

impl Listing {
    pub fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        let mut l = Self {
            name: words.next()?.to_string(),
            ..Self::default()
        };
        let list = |v: &str| v.split(',').map(str::to_string).collect();
        for w in words {
            if let Some(files) = w.strip_prefix("records=") {
                l.records = list(files);
            } else if let Some(options) = w.strip_prefix("needs=") {
                l.needs = list(options);
            } else if w == "own-boot" {
                l.own_boot = true;
            } else if w == "systemd" {
                l.systemd = true;
            } else {
                return None;
            }
        }
        Some(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_read_back_as_written() {
        for outcome in [
            Outcome::Ok,
            Outcome::Failed,
            Outcome::Skipped("no tracepoint (it maps buffers with vm_map_ram)".into()),
        ] {
            let line = TestLine {
                name: "real_xfs_x".into(),
                outcome,
                secs: 12.3,
            };
            assert_eq!(TestLine::parse(&line.to_string()), Some(line));
        }
        assert_eq!(
            TestLine {
                name: "a".into(),
                outcome: Outcome::Ok,
                secs: 1.25
            }
            .to_string(),
            "test a ... ok (1.2 s)"
        );
        assert_eq!(TestLine::parse("ok   old_style"), None);
        assert_eq!(TestLine::parse("test a ... maybe (1.0 s)"), None);
        let s = Summary {
            passed: 52,
            failed: 1,
            skipped: 0,
        };
        assert_eq!(s.to_string(), "test result: 52 passed, 1 failed, 0 skipped");
        assert_eq!(Summary::parse(&s.to_string()), Some(s));
        assert_eq!(Summary::parse("test result: 1 passed, 2 failed"), None);
        let mut t = Summary::default();
        t.add(&Outcome::Skipped("x".into()));
        t.add(&Outcome::Ok);
        assert_eq!((t.passed, t.failed, t.skipped), (1, 0, 1));
    }

    #[test]
    fn listings_read_back_as_written() {
        for l in [
            Listing {
                name: "plain".into(),
                ..Listing::default()
            },
            Listing {
                name: "spins".into(),
                own_boot: true,
                ..Listing::default()
            },
            Listing {
                name: "export".into(),
                records: vec!["a.json".into(), "b.json".into()],
                ..Listing::default()
            },
            Listing {
                name: "inject".into(),
                own_boot: true,
                records: vec!["c.json".into()],
                needs: vec!["CONFIG_FAILSLAB".into(), "CONFIG_XFS_FS".into()],
                ..Listing::default()
            },
            Listing {
                name: "service".into(),
                own_boot: true,
                systemd: true,
                ..Listing::default()
            },
        ] {
            assert_eq!(Listing::parse(&l.to_string()), Some(l));
        }
        assert_eq!(Listing::parse("x bogus"), None);
    }

    #[test]
    fn skip_is_found_inside_anyhow_context() {
        use anyhow::Context as _;
        let e = Err::<(), _>(skip("no such tracepoint"))
            .context("scenario x")
            .unwrap_err();
        assert_eq!(e.downcast_ref::<Skip>().unwrap().0, "no such tracepoint");
    }
}
