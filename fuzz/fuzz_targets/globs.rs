// SPDX-License-Identifier: MIT OR Apache-2.0
//! `--caller` globs and `--module` against kallsyms: `glob_match` agrees
//! with the reference (fuzz/src/glob.rs) on every pattern and name, a
//! plain name matches only itself, and selecting functions from any
//! kallsyms text gives sorted, disjoint, non-empty ranges. The input is
//! `pattern \0 name-or-module \0 kallsyms text`. The matcher is
//! quadratic at worst; libFuzzer's -timeout catches anything slower.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nofail_fuzz::glob::reference;
use nofail_user::kernel::symbols::{FunctionSelection, Kallsyms, Patterns, glob_match};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == 0).map(std::str::from_utf8);
    let (Some(Ok(pattern)), Some(Ok(name))) = (parts.next(), parts.next()) else {
        return;
    };
    let kallsyms = parts.next().and_then(Result::ok).unwrap_or_default();

    let want = reference(pattern, name);
    assert_eq!(glob_match(pattern, name), want, "{pattern:?} {name:?}");
    let patterns = [pattern.to_string()];
    let matcher = Patterns::new(&patterns);
    let is_glob = pattern.contains(['*', '?']);
    assert_eq!(
        matcher.matches(name),
        if is_glob { want } else { pattern == name },
        "--caller {pattern:?} on {name:?}"
    );

    let syms = Kallsyms::parse(kallsyms);
    let modules = [name.to_string()];
    for sel in [
        FunctionSelection {
            names: Some(Patterns::new(&patterns)),
            modules: None,
        },
        FunctionSelection {
            names: None,
            modules: Some(&modules),
        },
        FunctionSelection {
            names: Some(Patterns::new(&patterns)),
            modules: Some(&modules),
        },
    ] {
        let (ranges, functions) = syms.select(&sel);
        assert!(
            functions >= ranges.len(),
            "{functions} functions, {ranges:?}"
        );
        for r in &ranges {
            assert!(r.0 < r.1, "empty range {r:?}");
        }
        for w in ranges.windows(2) {
            assert!(w[0].1 < w[1].0, "ranges not sorted and apart: {ranges:?}");
        }
    }
    let _ = syms.has_module(name);
    let _ = syms.unmatched(&patterns);
    if let Some((start, end)) = syms.extent(pattern) {
        assert!(start < end, "{pattern}: {start:#x}..{end:#x}");
    }
});
