//! Text helpers shared by the faces readers see (widget, dashboard, badge,
//! busuanzi): digit grouping and zero-padding, and reading one query
//! parameter.
//!
//! Nothing here escapes markup: the HTML pages are maud templates, which
//! escape what they splice, and the badge's SVG has its own XML escaper.
//! Nothing here knows about sites or HTTP.

use std::borrow::Cow;
use std::fmt::Write;

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
