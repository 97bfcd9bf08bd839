//! The console's HTML: one layout, escaping, and the few formats every
//! page uses. Everything dynamic goes through [`esc`].

use std::fmt::Write as _;

/// Escapes text for HTML content and quoted attribute values.
pub(super) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
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

/// Fen as yuan: `¥1,234.56`.
pub(super) fn yuan(fen: u64) -> String {
    let whole = (fen / 100).to_string();
    let mut grouped = String::new();
    for (i, digit) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("¥{grouped}.{:02}", fen % 100)
}

/// A signed amount of fen as yuan.
pub(super) fn signed_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "−" } else { "+" };
    format!("{sign}{}", yuan(fen.unsigned_abs()))
}

/// Milliseconds since the epoch as a UTC time, in a `<time>` element.
pub(super) fn time(ms: i64) -> String {
    let text = chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    );
    let iso = chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
    format!("<time datetime=\"{}\">{}</time>", esc(&iso), esc(&text))
}

/// The pages in the navigation, by path and label.
const NAV: &[(&str, &str)] = &[
    ("/console/approvals", "Approvals"),
    ("/console/payments", "Payments"),
    ("/console/refunds", "Refunds"),
    ("/console/balances", "Balances"),
    ("/console/agents", "Agents"),
    ("/console/audit", "Audit log"),
];

/// Who is looking, for the layout.
pub(super) struct Viewer<'a> {
    pub(super) operator: &'a str,
    pub(super) csrf: &'a str,
}

/// A whole page. `current` is the navigation entry to mark; `viewer` is
/// `None` on the sign-in and registration pages.
pub(super) fn page(title: &str, current: &str, viewer: Option<&Viewer<'_>>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 2048);
    let csrf_meta = viewer.map_or_else(String::new, |v| {
        format!("<meta name=\"csrf-token\" content=\"{}\">", esc(v.csrf))
    });
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         {csrf_meta}<title>{} · wxpay console</title>\
         <link rel=\"stylesheet\" href=\"/console/assets/console.css\">\
         <script src=\"/console/assets/console.js\" defer></script></head><body>\
         <a class=\"skip\" href=\"#main\">Skip to content</a><header>\
         <p class=\"brand\">wxpay console</p>",
        esc(title)
    );
    if let Some(viewer) = viewer {
        out.push_str("<nav aria-label=\"Console\"><ul>");
        for (path, label) in NAV {
            let mark = if *path == current {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<li><a href=\"{path}\"{mark}>{label}</a></li>");
        }
        let _ = write!(
            out,
            "</ul></nav><form method=\"post\" action=\"/console/sign-out\" class=\"sign-out\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             <button type=\"submit\">Sign out {}</button></form>",
            esc(viewer.csrf),
            esc(viewer.operator)
        );
    }
    let live = if viewer.is_some() {
        " data-live=\"/console/events\""
    } else {
        ""
    };
    let _ = write!(
        out,
        "</header><main id=\"main\"{live}><h1>{}</h1>{body}</main>\
         <p id=\"live-status\" class=\"live-status\" role=\"status\" aria-live=\"polite\"></p>\
         </body></html>",
        esc(title)
    );
    out
}

/// A page that only says something (errors, mostly).
pub(super) fn message_page(status: &str, message: &str) -> String {
    page(
        &format!("Error {status}"),
        "",
        None,
        &format!(
            "<p role=\"alert\">{}</p><p><a href=\"/console\">Back to the console</a></p>",
            esc(message)
        ),
    )
}

/// A table with a caption, header cells and rows of already-escaped cells.
pub(super) fn table(caption: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    if rows.is_empty() {
        return format!("<p class=\"empty\">{}: none.</p>", esc(caption));
    }
    let mut out = format!("<table><caption>{}</caption><thead><tr>", esc(caption));
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

/// A search form: a text field and optional selects, submitted by GET.
pub(super) fn filters(action: &str, q: &str, selects: &[(&str, &str, &[&str], &str)]) -> String {
    let mut out = format!(
        "<form method=\"get\" action=\"{action}\" class=\"filters\" role=\"search\">\
         <label>Search <input type=\"search\" name=\"q\" value=\"{}\"></label>",
        esc(q)
    );
    for (name, label, options, chosen) in selects {
        let _ = write!(out, "<label>{} <select name=\"{name}\">", esc(label));
        let _ = write!(out, "<option value=\"\">any</option>");
        for option in *options {
            let mark = if option == chosen { " selected" } else { "" };
            let _ = write!(out, "<option value=\"{0}\"{mark}>{0}</option>", esc(option));
        }
        out.push_str("</select></label>");
    }
    out.push_str("<button type=\"submit\">Filter</button></form>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn yuan_groups_thousands_and_keeps_fen() {
        assert_eq!(yuan(0), "¥0.00");
        assert_eq!(yuan(5), "¥0.05");
        assert_eq!(yuan(123_456_789), "¥1,234,567.89");
        assert_eq!(yuan(100_000), "¥1,000.00");
        assert_eq!(signed_yuan(-250), "−¥2.50");
    }
}
