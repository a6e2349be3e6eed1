//! Aligned text tables and the `-o table|json|yaml` choice, shared by
//! `proxy-config` and `authz explain`.

use serde::Serialize;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    #[default]
    Table,
    /// One JSON document.
    Json,
    /// The same document as YAML.
    Yaml,
}

/// Renders `doc` as JSON or YAML; None for [`Format::Table`].
pub fn document<T: Serialize>(format: Format, doc: &T) -> anyhow::Result<Option<String>> {
    Ok(match format {
        Format::Table => None,
        Format::Json => Some(serde_json::to_string_pretty(doc)? + "\n"),
        Format::Yaml => Some(serde_saphyr::to_string(doc)?),
    })
}

/// Columns padded to their widest cell; the last column is not padded, so
/// no line ends in spaces.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&'static str]) -> Self {
        Self {
            header: header.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(cols) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = row.get(i).map(String::as_str).unwrap_or("");
                if i + 1 == cols {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = width - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `-` for an empty cell, so columns stay readable.
pub fn or_dash(s: impl Into<String>) -> String {
    let s = s.into();
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_lines_do_not_end_in_spaces() {
        let mut t = Table::new(&["NAME", "PORTS", "STATE"]);
        t.row(vec!["ratings.shop".into(), "80".into(), "known".into()]);
        t.row(vec!["a.b".into(), "".into(), "".into()]);
        assert_eq!(
            t.render(),
            "NAME          PORTS  STATE\nratings.shop  80     known\na.b\n"
        );
    }

    #[test]
    fn documents() {
        let doc = serde_json::json!({"a": [1]});
        assert_eq!(document(Format::Table, &doc).unwrap(), None);
        let json = document(Format::Json, &doc).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json).unwrap(),
            doc
        );
        let yaml = document(Format::Yaml, &doc).unwrap().unwrap();
        assert!(yaml.contains("a:"), "{yaml}");
    }
}
