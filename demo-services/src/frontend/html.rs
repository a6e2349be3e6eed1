//! The shop page: plain HTML, no scripts, no external assets.

use std::fmt::Write;

use super::view::{CallReport, ProductsView};

/// Escapes text for HTML element content and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn stars(n: Option<u32>) -> String {
    match n {
        Some(n) => {
            let n = n.min(5) as usize;
            format!("{}{}", "★".repeat(n), "☆".repeat(5 - n))
        }
        None => "(no rating)".to_string(),
    }
}

const HEAD: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Mycel demo shop</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
.bad{color:#b00}</style></head><body>\n<h1>Mycel demo shop</h1>\n";

/// The whole page. `error` is set when the catalog could not be read.
pub fn page(view: &ProductsView, error: Option<&str>) -> String {
    let mut out = String::from(HEAD);
    if let Some(error) = error {
        let _ = writeln!(
            out,
            "<p class=\"bad\">catalog failed: {}</p>",
            escape(error)
        );
    }
    for p in &view.products {
        let _ = writeln!(
            out,
            "<h2>{} <small>${:.2}</small> <span title=\"stars\">{}</span></h2>",
            escape(&p.name),
            p.price,
            stars(p.stars)
        );
        if let Some(version) = &p.reviews_version {
            let _ = writeln!(out, "<p>reviews {}</p>", escape(version));
        }
        out.push_str("<ul>\n");
        for r in &p.reviews {
            let s = r
                .stars
                .map(|n| format!(" {}", stars(Some(n))))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<li><b>{}</b>: {}{}</li>",
                escape(&r.reviewer),
                escape(&r.text),
                s
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Calls</h2>\n<table><tr><th>service</th><th>product</th><th>caller seen</th><th>result</th></tr>\n");
    for c in &view.calls {
        out.push_str(&call_row(c));
    }
    out.push_str(
        "</table>\n<p>JSON: <a href=\"/api/products\">/api/products</a></p>\n</body></html>\n",
    );
    out
}

fn call_row(c: &CallReport) -> String {
    let result = match (&c.error, c.ok) {
        (_, true) => "ok".to_string(),
        (Some(e), false) => format!("<span class=\"bad\">{}</span>", escape(e)),
        (None, false) => "<span class=\"bad\">failed</span>".to_string(),
    };
    format!(
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        escape(&c.service),
        escape(c.product_id.as_deref().unwrap_or("")),
        escape(c.caller.as_deref().unwrap_or("(none)")),
        result
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::view::{ProductView, ReviewView};

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn page_lists_products_reviews_stars_and_failures() {
        let view = ProductsView {
            products: vec![ProductView {
                id: "p1".into(),
                name: "Kit <b>".into(),
                price: 2.5,
                reviews: vec![ReviewView {
                    reviewer: "ana".into(),
                    text: "good".into(),
                    stars: Some(3),
                }],
                stars: Some(3),
                reviews_version: Some("v2".into()),
                reviews_ratings_caller: None,
                reviews_ratings_error: None,
            }],
            calls: vec![CallReport::failed("ratings", Some("p1"), "<503>".into())],
            caller: None,
        };
        let html = page(&view, None);
        assert!(html.contains("Kit &lt;b&gt;"));
        assert!(html.contains("$2.50"));
        assert!(html.contains("★★★☆☆"));
        assert!(html.contains("&lt;503&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
