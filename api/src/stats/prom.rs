//! A parser for the Prometheus text exposition format (and the OpenMetrics
//! text the proxies write, which is a superset for what is read here).
//! Input comes from proxies over the network, so every malformed line is an
//! error naming its line, never a panic.

use std::collections::BTreeMap;

/// One sample: a metric name, its labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("metrics line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Bounds the work a hostile or broken endpoint can cause.
pub const MAX_SAMPLES: usize = 200_000;

/// Every sample of a text exposition, in order. Comments (`# HELP`,
/// `# TYPE`, `# EOF`) and blank lines are skipped.
pub fn parse(text: &str) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| ParseError {
            line: i + 1,
            reason: reason.to_string(),
        };
        if out.len() >= MAX_SAMPLES {
            return Err(err("too many samples"));
        }
        out.push(parse_line(line).map_err(|r| err(&r))?);
    }
    Ok(out)
}

fn is_name_char(c: char, first: bool) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || (!first && c.is_ascii_digit())
}

fn parse_line(line: &str) -> Result<Sample, String> {
    let name_end = line
        .char_indices()
        .find(|&(i, c)| !is_name_char(c, i == 0))
        .map(|(i, _)| i)
        .unwrap_or(line.len());
    if name_end == 0 {
        return Err("no metric name".into());
    }
    let name = line[..name_end].to_string();
    let mut rest = line[name_end..].trim_start();
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = parse_labels(after, &mut labels)?;
    }
    // Value, then an optional timestamp and (OpenMetrics) exemplar.
    let value = rest
        .split_whitespace()
        .next()
        .ok_or_else(|| format!("{name}: no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("{name}: bad value {value:?}"))?;
    Ok(Sample {
        name,
        labels,
        value,
    })
}

/// Reads `k="v",...}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut s: &'a str,
    labels: &mut BTreeMap<String, String>,
) -> Result<&'a str, String> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim();
        if key.is_empty()
            || !key
                .chars()
                .enumerate()
                .all(|(i, c)| is_name_char(c, i == 0))
        {
            return Err(format!("bad label name {key:?}"));
        }
        s = s[eq + 1..]
            .trim_start()
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("expected ',' or '}' after a label".into());
        }
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_exemplars() {
        let text = "# HELP x A counter.\n# TYPE x counter\n\
            x_total{a=\"1\",b=\"q\\\"uo\\\\te\\n\"} 3\n\
            plain 4.5 1700000000\n\
            h_bucket{le=\"+Inf\"} 7 # {trace_id=\"abc\"} 1.0\n\
            spaced { a = \"x\" , } 1e3\n\
            # EOF\n";
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].name, "x_total");
        assert_eq!(s[0].label("a"), "1");
        assert_eq!(s[0].label("b"), "q\"uo\\te\n");
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].value, 4.5);
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!(s[2].value, 7.0);
        assert_eq!(s[3].label("a"), "x");
        assert_eq!(s[3].value, 1000.0);
        assert_eq!(s[1].label("missing"), "");
    }

    #[test]
    fn malformed_lines_are_named() {
        for (text, line) in [
            ("ok 1\n{a=\"b\"} 1", 2),
            ("x{a=\"b} 1", 1),
            ("x{a=b} 1", 1),
            ("x{a=\"b\" c=\"d\"} 1", 1),
            ("x{=\"b\"} 1", 1),
            ("x", 1),
            ("\n\nx abc", 3),
            ("x{a=\"\\", 1),
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
        }
    }

    #[test]
    fn special_values() {
        let s = parse("a +Inf\nb -Inf\nc NaN").unwrap();
        assert!(s[0].value.is_infinite() && s[0].value > 0.0);
        assert!(s[1].value.is_infinite() && s[1].value < 0.0);
        assert!(s[2].value.is_nan());
    }
}
