// SPDX-License-Identifier: MIT OR Apache-2.0
//! A strict reader of the Prometheus text exposition format 0.0.4, to
//! read nofail's writer back: every line a `# HELP`, a `# TYPE` or a
//! sample `name{label="value",...} value`, label values unescaped from
//! `\\`, `\"` and `\n` (any other escape is an error), no series twice
//! (as written), a family's samples after its `# TYPE`.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and
/// `_count` are its family's.
fn family<'a>(name: &'a str, types: &std::collections::HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base;
        }
    }
    name
}

/// The quoted label value at the start of `s` (after its opening quote),
/// unescaped, and the rest after the closing quote.
fn label_value(s: &str) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                other => return Err(format!("bad escape \\{other:?}")),
            },
            c => out.push(c),
        }
    }
    Err("unterminated label value".into())
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').ok_or("label without =")?;
            let lname = &inner[..eq];
            if !is_label_name(lname) {
                return Err(format!("bad label name {lname:?}"));
            }
            let quoted = inner[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let (value, after) = label_value(quoted)?;
            if labels.iter().any(|(n, _)| n == lname) {
                return Err(format!("label {lname} twice"));
            }
            labels.push((lname.to_string(), value));
            inner = match after.strip_prefix(',') {
                Some(a) => a,
                None if after.starts_with('}') => after,
                None => return Err(format!("junk after label value: {after:?}")),
            };
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = value.split(' ');
    let v = parse_value(fields.next().unwrap_or_default())?;
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("junk after the timestamp".into());
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: v,
    })
}

/// Every sample of `text`, or the first line that is not the format.
pub fn parse(text: &str) -> Result<Vec<Sample>, String> {
    let body = text.strip_suffix('\n').ok_or("does not end in a newline")?;
    let mut types = std::collections::HashMap::new();
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (n, line) in body.split('\n').enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.splitn(4, ' ');
            let (_, keyword, name) = (words.next(), words.next(), words.next());
            match keyword {
                Some("TYPE") => {
                    let name = name.ok_or_else(|| at("TYPE without a name".into()))?;
                    let kind = words.next().unwrap_or_default();
                    if !matches!(
                        kind,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(at(format!("bad type {kind:?}")));
                    }
                    if types.insert(name.to_string(), kind.to_string()).is_some() {
                        return Err(at("TYPE twice".into()));
                    }
                }
                Some("HELP") if !name.is_some_and(is_metric_name) => {
                    return Err(at("HELP without a metric name".into()));
                }
                _ => {}
            }
            continue;
        }
        let s = sample(line).map_err(at)?;
        if !types.contains_key(family(&s.name, &types)) {
            return Err(at("sample before its TYPE".into()));
        }
        // The series as written (name and labels, before the value): a
        // writer that repeats one repeats it in the same form. Cheaper
        // than a sorted copy of the labels, which fuzzing pays per line.
        let series = &line[..line.len() - line.rsplit(' ').next().map_or(0, str::len)];
        if !seen.insert(series) {
            return Err(at("series twice".into()));
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_escapes_and_refuses_what_is_not_the_format() {
        let text = "# HELP m_total x\n# TYPE m_total counter\nm_total{caller=\"a\\\"b\\\\c\\nd\",k=\"\"} 3\n";
        let s = parse(text).unwrap();
        assert_eq!(
            s[0].labels,
            vec![
                ("caller".to_string(), "a\"b\\c\nd".to_string()),
                ("k".to_string(), String::new())
            ]
        );
        assert_eq!(s[0].value, 3.0);
        for bad in [
            "# TYPE m counter\nm{a=\"x\\t\"} 1\n",
            "# TYPE m counter\nm{a=\"x\"\"} 1\n",
            "# TYPE m counter\nm{a=\"x} 1\n",
            "# TYPE m counter\nm 1\nm 2\n",
            "m 1\n",
            "# TYPE m counter\nm  1\n",
            "# TYPE m counter\nm 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let h = "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n";
        assert_eq!(parse(h).unwrap().len(), 3);
    }
}
