//! The path (and query) a part is fetched at, made from the client's
//! request: `/products/{last}`, `/ratings?product={last}`.
//!
//! Placeholders: `{last}` is the last non-empty segment of the request
//! path, `{path}` the whole request path, `{query}` the request's query
//! string (empty when it has none). Values are copied percent-encoded as
//! they came, never decoded: decoding here and encoding again would be a
//! second interpretation of the client's bytes that the backend does not
//! share.
//!
//! A value must not change the structure the operator wrote, so rendering
//! is refused (not escaped: a request that tries is not one to serve) when:
//! - a path value (`{last}`, or a segment of `{path}`) is a dot segment,
//!   `.` or `..`, also percent-encoded (`%2e%2e`): the backend, or a proxy
//!   before it, would resolve it and the part would read another resource;
//! - a value holds `?` or `#` (new query or fragment), or an encoded slash
//!   or backslash (`%2f`, `%5c`, `\`) that some servers decode into a
//!   separator, or an encoded NUL;
//! - a path value placed in the query part of the template holds `&` or
//!   `=`, which would add parameters (`?product=1&admin=true`);
//! - `{query}` stands before the template's `?`: the client's query would
//!   become path.

use std::fmt;
use std::str::FromStr;

use http::uri::PathAndQuery;

/// Longest template, a sanity bound on configuration.
pub const MAX_TEMPLATE_LEN: usize = 1024;

/// A parsed template; render it with [`PathTemplate::render`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    pieces: Vec<Piece>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Last { in_query: bool },
    Path { in_query: bool },
    Query,
}

/// Why a template string is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("the template must start with '/'")]
    NotAbsolute,
    #[error("the template is {0} bytes, more than {MAX_TEMPLATE_LEN}")]
    TooLong(usize),
    #[error("unbalanced brace at byte {0}")]
    Unbalanced(usize),
    #[error("unknown placeholder {{{0}}} (known: {{last}}, {{path}}, {{query}})")]
    UnknownPlaceholder(String),
    #[error("{{query}} stands in the path: it may only follow the template's '?'")]
    QueryInPath,
    #[error(
        "character {0:?} is not allowed in a template (printable ASCII only, no fragment, no backslash)"
    )]
    BadChar(char),
    #[error("the template is not a valid path and query")]
    Invalid,
}

/// Why a request cannot be turned into a part's path; the client's doing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the request path has no segment for {{last}}")]
    NoLastSegment,
    #[error("dot segment {0:?} refused (path traversal)")]
    DotSegment(String),
    #[error("{0:?} refused in a value: it would change the part's path or query")]
    Delimiter(String),
    #[error("the rendered path is not a valid path and query")]
    Invalid,
}

impl FromStr for PathTemplate {
    type Err = TemplateError;

    fn from_str(s: &str) -> Result<Self, TemplateError> {
        PathTemplate::parse(s)
    }
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PathTemplate {
    pub fn parse(s: &str) -> Result<PathTemplate, TemplateError> {
        if s.len() > MAX_TEMPLATE_LEN {
            return Err(TemplateError::TooLong(s.len()));
        }
        if !s.starts_with('/') {
            return Err(TemplateError::NotAbsolute);
        }
        if let Some(c) = s
            .chars()
            .find(|c| !c.is_ascii_graphic() || *c == '#' || *c == '\\')
        {
            return Err(TemplateError::BadChar(c));
        }
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut in_query = false;
        let mut rest = s;
        let mut at = 0;
        while let Some(i) = rest.find(['{', '}']) {
            if rest.as_bytes()[i] == b'}' {
                return Err(TemplateError::Unbalanced(at + i));
            }
            literal.push_str(&rest[..i]);
            in_query |= rest[..i].contains('?');
            let after = &rest[i + 1..];
            let close = after
                .find(['{', '}'])
                .filter(|j| after.as_bytes()[*j] == b'}')
                .ok_or(TemplateError::Unbalanced(at + i))?;
            let piece = match &after[..close] {
                "last" => Piece::Last { in_query },
                "path" => Piece::Path { in_query },
                "query" if in_query => Piece::Query,
                "query" => return Err(TemplateError::QueryInPath),
                other => return Err(TemplateError::UnknownPlaceholder(other.to_string())),
            };
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            at += i + 1 + close + 1;
            rest = &after[close + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        // What the operator wrote must be valid whatever the values are,
        // so a refusal at render time is always the client's doing.
        let sample: String = pieces
            .iter()
            .map(|p| match p {
                Piece::Literal(l) => l.as_str(),
                _ => "x",
            })
            .collect();
        PathAndQuery::try_from(sample.as_str()).map_err(|_| TemplateError::Invalid)?;
        Ok(PathTemplate {
            source: s.to_string(),
            pieces,
        })
    }

    /// The part's path and query for a request with `path` (as it came,
    /// percent-encoded) and `query`.
    pub fn render(&self, path: &str, query: Option<&str>) -> Result<String, RenderError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(l) => out.push_str(l),
                Piece::Last { in_query } => {
                    let last = path
                        .split('/')
                        .rfind(|s| !s.is_empty())
                        .ok_or(RenderError::NoLastSegment)?;
                    check_segment(last, *in_query)?;
                    out.push_str(last);
                }
                Piece::Path { in_query } => {
                    for segment in path.split('/') {
                        check_segment(segment, *in_query)?;
                    }
                    out.push_str(path);
                }
                Piece::Query => {
                    let q = query.unwrap_or("");
                    check_value(q)?;
                    out.push_str(q);
                }
            }
        }
        PathAndQuery::try_from(out.as_str()).map_err(|_| RenderError::Invalid)?;
        Ok(out)
    }
}

/// One path segment of the client's, about to be copied.
fn check_segment(segment: &str, in_query: bool) -> Result<(), RenderError> {
    let decoded_dots = segment.to_ascii_lowercase().replace("%2e", ".");
    if decoded_dots == "." || decoded_dots == ".." {
        return Err(RenderError::DotSegment(segment.to_string()));
    }
    check_value(segment)?;
    if in_query {
        if let Some(c) = segment.chars().find(|c| matches!(c, '&' | '=')) {
            return Err(RenderError::Delimiter(c.to_string()));
        }
    }
    Ok(())
}

/// Anything copied: no new query or fragment, no separator in disguise.
fn check_value(value: &str) -> Result<(), RenderError> {
    if let Some(c) = value.chars().find(|c| matches!(c, '?' | '#' | '\\')) {
        return Err(RenderError::Delimiter(c.to_string()));
    }
    let lower = value.to_ascii_lowercase();
    for encoded in ["%2f", "%5c", "%00"] {
        if lower.contains(encoded) {
            return Err(RenderError::Delimiter(encoded.to_string()));
        }
    }
    Ok(())
}
