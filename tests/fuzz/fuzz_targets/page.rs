//! Page normalisation: no panic; the canonical page starts with `/`, is
//! printable ASCII, fits the bound, and normalising it again gives it back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use luot::page::{PageRules, normalize, normalize_into};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the rules; the rest is the page.
    let Some((&knob, rest)) = data.split_first() else {
        return;
    };
    let Ok(input) = std::str::from_utf8(rest) else {
        return;
    };
    let rules = PageRules {
        keep_query: knob & 1 == 1,
        max_len: match knob >> 1 {
            0 => 1,
            n if n < 64 => n as usize,
            _ => luot::page::DEFAULT_MAX_PAGE_LEN,
        },
    };
    let result = normalize(input, rules);
    let mut buf = String::with_capacity(rules.max_len + 4);
    let cap = buf.capacity();
    let into = normalize_into(input, rules, &mut buf);
    assert_eq!(into.map(|()| buf.clone()), result.clone());
    assert_eq!(buf.capacity(), cap, "normalize_into grew its buffer");
    if let Ok(page) = result {
        assert!(page.starts_with('/'), "{page:?}");
        assert!(page.len() <= rules.max_len.max(1), "{page:?}");
        assert!(page.bytes().all(|b| b.is_ascii_graphic()), "{page:?}");
        assert_eq!(
            normalize(&page, rules).as_ref(),
            Ok(&page),
            "not idempotent"
        );
    }
});
