// SPDX-License-Identifier: MIT OR Apache-2.0
//! The reference for `kernel::symbols::glob_match`: the textbook dynamic
//! programme over (pattern prefix, text prefix), `*` any run of
//! characters, `?` exactly one, everything else itself.

pub fn reference(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    // m[j]: pattern[..i] matches text[..j], row i at a time.
    let mut m = vec![false; t.len() + 1];
    m[0] = true;
    for &pc in &p {
        let mut next = vec![false; t.len() + 1];
        if pc == '*' {
            // `*` takes text[..j] if any shorter prefix matched before it.
            let mut any = false;
            for j in 0..=t.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=t.len() {
                next[j] = m[j - 1] && (pc == '?' || pc == t[j - 1]);
            }
        }
        m = next;
    }
    m[t.len()]
}

#[cfg(test)]
mod tests {
    use super::reference;

    #[test]
    fn reference_globs() {
        assert!(reference("xfs_*", "xfs_buf_alloc"));
        assert!(reference("*vmalloc?", "kvmallocx"));
        assert!(!reference("xfs_*", "ext4_buf"));
        assert!(reference("*", ""));
        assert!(!reference("?", ""));
        assert!(reference("a*b*c", "aXbYc"));
        assert!(!reference("a*b*c", "aXbY"));
        assert!(reference("", ""));
        assert!(!reference("", "a"));
    }
}
