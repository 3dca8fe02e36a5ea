// SPDX-License-Identifier: MIT OR Apache-2.0
//! Reads of report JSON that fail when the field is not there: a renamed
//! or dropped field must fail the test that reads it, never read as 0.

use anyhow::{Result, anyhow};
use serde_json::Value;

/// What names `row` in an error: its `caller` (or `program`), else the row.
fn label(row: &Value) -> String {
    ["caller", "program", "role"]
        .iter()
        .find_map(|k| row.get(*k).and_then(Value::as_str))
        .map_or_else(|| short(row), |s| s.to_string())
}

fn short(v: &Value) -> String {
    let mut s = v.to_string();
    if s.len() > 200 {
        s.truncate(200);
        s.push_str("...");
    }
    s
}

/// `row[name]` as an unsigned integer; an error naming the field and the
/// row when it is missing or not one.
pub fn uint(row: &Value, name: &str) -> Result<u64> {
    match row.get(name) {
        Some(v) => v.as_u64().ok_or_else(|| {
            anyhow!(
                "field {name} of {} is {v}, not an unsigned integer",
                label(row)
            )
        }),
        None => Err(anyhow!("no field {name} in {}", label(row))),
    }
}

/// `row[name]` as a number (integer or not); an error naming the field and
/// the row when it is missing or not one.
pub fn float(row: &Value, name: &str) -> Result<f64> {
    match row.get(name) {
        Some(v) => v
            .as_f64()
            .ok_or_else(|| anyhow!("field {name} of {} is {v}, not a number", label(row))),
        None => Err(anyhow!("no field {name} in {}", label(row))),
    }
}

/// The sum of `uint(row, name)` over `rows`.
pub fn sum<'a>(rows: impl IntoIterator<Item = &'a Value>, name: &str) -> Result<u64> {
    rows.into_iter().map(|r| uint(r, name)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn missing_and_wrong_fields_are_errors_naming_field_and_row() {
        let row = json!({"caller": "site+0x1", "calls": 3, "slept": -1, "p": 0.5});
        assert_eq!(uint(&row, "calls").unwrap(), 3);
        let e = uint(&row, "sleeps").unwrap_err().to_string();
        assert!(e.contains("sleeps") && e.contains("site+0x1"), "{e}");
        let e = uint(&row, "slept").unwrap_err().to_string();
        assert!(e.contains("not an unsigned integer"), "{e}");
        assert_eq!(float(&row, "p").unwrap(), 0.5);
        assert!(float(&row, "q").is_err());
        assert!(uint(&json!(null), "calls").is_err());
        let rows = [json!({"calls": 1}), json!({"calls": 2})];
        assert_eq!(sum(&rows, "calls").unwrap(), 3);
        assert!(sum(&[json!({"calls": 1}), json!({})], "calls").is_err());
    }
}
