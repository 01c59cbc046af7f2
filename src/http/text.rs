//! Text helpers shared by the faces readers see (widget, badge, busuanzi):
//! escaping for HTML and XML, digit grouping and zero-padding, and reading
//! one query parameter.
//!
//! Everything that puts request-controlled or configured text into markup
//! goes through [`escape_markup`]; nothing here knows about sites or HTTP.

use std::borrow::Cow;
use std::fmt::Write;

/// Escapes `text` for HTML or XML text and quoted attribute values
/// (`&`, `<`, `>`, `"`, `'`). Control characters other than tab and line
/// breaks are dropped: XML 1.0 cannot carry them at all.
pub fn escape_markup(text: &str) -> Cow<'_, str> {
    let needs = |c: char| matches!(c, '&' | '<' | '>' | '"' | '\'') || is_forbidden(c);
    if !text.chars().any(needs) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if is_forbidden(c) => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

fn is_forbidden(c: char) -> bool {
    (c.is_control() && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
}

/// `n` with its digits grouped by threes with `separator`: `9,356,665`
/// (English) or `9.356.665` (Vietnamese), as `toLocaleString` writes them.
pub fn group(n: u64, separator: char) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(separator);
        }
        out.push(d);
    }
    out
}

/// `n` zero-padded to at least `width` digits, without grouping, like an
/// odometer; a longer number is shown whole.
pub fn pad(n: u64, width: usize) -> String {
    let mut out = String::new();
    let _ = write!(out, "{n:0width$}");
    out
}

/// The first value of query parameter `name`, decoded.
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_and_quotes_and_drops_controls() {
        assert_eq!(escape_markup("plain"), "plain");
        assert!(matches!(escape_markup("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_markup(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape_markup("a\u{0}b\u{1b}c\td"), "abc\td");
        assert_eq!(escape_markup("Lượt Truy Cập"), "Lượt Truy Cập");
    }

    #[test]
    fn grouping_matches_to_locale_string() {
        assert_eq!(group(0, ','), "0");
        assert_eq!(group(999, ','), "999");
        assert_eq!(group(1353, '.'), "1.353");
        assert_eq!(group(9_356_665, ','), "9,356,665");
        assert_eq!(group(100_000, ','), "100,000");
        assert_eq!(group(u64::MAX, ','), "18,446,744,073,709,551,615");
    }

    #[test]
    fn padding_is_an_odometer() {
        assert_eq!(pad(9_356_665, 8), "09356665");
        assert_eq!(pad(0, 8), "00000000");
        assert_eq!(pad(123_456_789, 8), "123456789");
        assert_eq!(pad(7, 1), "7");
    }

    #[test]
    fn query_params_are_decoded_first_wins() {
        assert_eq!(
            query_param(Some("a=1&label=%3Cb%3E+x&label=2"), "label").as_deref(),
            Some("<b> x")
        );
        assert_eq!(query_param(Some("a=1"), "label"), None);
        assert_eq!(query_param(None, "label"), None);
    }
}
