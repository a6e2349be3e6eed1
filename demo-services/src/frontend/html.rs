//! The shop page: plain HTML, no scripts, no external assets.

use std::fmt::Write;

use super::view::{CallReport, Notifications, ProductsView};

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
.bad{color:#b00}.note{color:#666}</style></head><body>\n<h1>Mycel demo shop</h1>\n";

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
    let _ = writeln!(
        out,
        "<p>served for <code>{}</code>; trace <code>{}</code></p>",
        escape(view.caller.as_deref().unwrap_or("(no caller identity)")),
        escape(view.trace_id.as_deref().unwrap_or("(none)"))
    );
    for p in &view.products {
        let _ = writeln!(
            out,
            "<h2>{} <small>${:.2}</small> <span title=\"stars\">{}</span></h2>",
            escape(&p.name),
            p.price,
            stars(p.stars)
        );
        let _ = writeln!(out, "<p>{} in stock</p>", p.stock);
        if let Some(version) = &p.reviews_version {
            let ratings = match (&p.reviews_ratings_caller, &p.reviews_ratings_error) {
                (_, Some(e)) => format!(
                    " <span class=\"bad\">(ratings failed: {})</span>",
                    escape(e)
                ),
                (Some(c), None) => format!(" (ratings saw <code>{}</code>)", escape(c)),
                (None, None) => String::new(),
            };
            let _ = writeln!(out, "<p>reviews {}{ratings}</p>", escape(version));
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
    out.push_str(&notifications(&view.notifications));
    out.push_str("<h2>Calls</h2>\n<table><tr><th>service</th><th>product</th><th>caller seen</th><th>result</th></tr>\n");
    for c in &view.calls {
        out.push_str(&call_row(c));
    }
    out.push_str(
        "</table>\n<p>JSON: <a href=\"/api/products\">/api/products</a></p>\n</body></html>\n",
    );
    out
}

fn notifications(n: &Notifications) -> String {
    let mut out = String::from("<h2>Latest notifications</h2>\n");
    if let Some(e) = &n.error {
        let _ = writeln!(
            out,
            "<p class=\"note\">notifications unavailable: {}</p>",
            escape(e)
        );
        return out;
    }
    if n.items.is_empty() {
        out.push_str("<p>none yet</p>\n");
        return out;
    }
    out.push_str("<ul>\n");
    for item in &n.items {
        let _ = writeln!(
            out,
            "<li>{} <small>{}</small></li>",
            escape(&item.text),
            escape(&item.at)
        );
    }
    let _ = writeln!(
        out,
        "</ul>\n<p><small>caller seen by notifications: <code>{}</code></small></p>",
        escape(n.caller.as_deref().unwrap_or("(none)"))
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
                stock: 7,
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
            caller: Some("spiffe://cluster.local/ns/shop/sa/gateway".into()),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
            notifications: Notifications {
                error: Some("refused".into()),
                ..Notifications::default()
            },
        };
        let html = page(&view, None);
        assert!(html.contains("7 in stock"));
        assert!(html.contains("trace <code>4bf92f3577b34da6a3ce929d0e0e4736</code>"));
        assert!(html.contains("spiffe://cluster.local/ns/shop/sa/gateway"));
        assert!(html.contains("notifications unavailable: refused"));
        assert!(!html.contains("catalog failed"));
        assert!(html.contains("Kit &lt;b&gt;"));
        assert!(html.contains("$2.50"));
        assert!(html.contains("★★★☆☆"));
        assert!(html.contains("&lt;503&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
