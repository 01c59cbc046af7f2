//! The README's quick start, as a newcomer runs it: its first `curl`
//! beacon, read out of README.md and sent with the same method, path,
//! headers and body curl would send, must count against the real binary.

mod common;

use std::time::Duration;

use common::Server;

/// The User-Agent curl sends when the command line gives none (`-A`).
const CURL_UA: &str = "curl/8.5.0";

/// What one `curl` command line sends.
#[derive(Debug, Default)]
struct CurlRequest {
    method: Option<String>,
    url: String,
    user_agent: Option<String>,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// Splits a shell line into words: spaces separate, single quotes keep
/// everything up to the next one (all the README's lines need).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                assert!(
                    !matches!(c, '"' | '\\' | '$' | '`' | '|' | ';'),
                    "the quick start's curl line uses shell syntax this test \
                     does not read ({c:?}): {line}"
                );
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// Reads the options of a `curl` command line.
fn parse_curl(line: &str) -> CurlRequest {
    let words = shell_words(line);
    assert_eq!(words.first().map(String::as_str), Some("curl"), "{line}");
    let mut req = CurlRequest::default();
    let mut it = words[1..].iter();
    while let Some(w) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .unwrap_or_else(|| panic!("{flag} without a value: {line}"))
                .clone()
        };
        match w.as_str() {
            "-X" | "--request" => req.method = Some(value(w)),
            m if m.starts_with("-X") => req.method = Some(m[2..].to_string()),
            "-A" | "--user-agent" => req.user_agent = Some(value(w)),
            "-H" | "--header" => {
                let h = value(w);
                let (k, v) = h.split_once(':').expect("a header is name: value");
                req.headers
                    .push((k.trim().to_string(), v.trim().to_string()));
            }
            "-d" | "--data" | "--data-raw" => req.body = Some(value(w)),
            o if o.starts_with('-') => panic!("an option this test does not know: {o}"),
            url => req.url = url.to_string(),
        }
    }
    req
}

/// The first `curl` line of the README's "Run it" section that sends a
/// beacon.
fn quick_start_beacon() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let run_it = readme
        .split("\n## ")
        .find(|s| s.starts_with("Run it"))
        .expect("a \"Run it\" section");
    let line = run_it
        .lines()
        .find(|l| l.starts_with("curl ") && l.contains("/hit"))
        .expect("a curl beacon in the quick start");
    assert!(
        !line.trim_end().ends_with('\\'),
        "the beacon example is one line: {line}"
    );
    line.to_string()
}

#[test]
fn the_readme_quick_start_curl_beacon_counts_as_written() {
    let line = quick_start_beacon();
    let req = parse_curl(&line);
    let path = req
        .url
        .strip_prefix("localhost:8080")
        .unwrap_or_else(|| panic!("the example talks to localhost:8080: {line}"));
    let server = Server::start();
    assert_eq!(server.total("demo", None), 0);

    // As curl sends it: `-d` makes it a POST of a form body, and curl names
    // itself unless `-A` says otherwise.
    let method = req
        .method
        .clone()
        .unwrap_or_else(|| if req.body.is_some() { "POST" } else { "GET" }.to_string());
    assert_eq!(method, "POST", "{line}");
    let mut headers = vec![
        (
            "User-Agent".to_string(),
            req.user_agent.clone().unwrap_or_else(|| CURL_UA.into()),
        ),
        ("Accept".to_string(), "*/*".to_string()),
    ];
    if req.body.is_some() {
        headers.push((
            "Content-Type".to_string(),
            "application/x-www-form-urlencoded".to_string(),
        ));
    }
    headers.extend(req.headers.iter().cloned());
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let answer = server.post(
        path,
        &pairs,
        req.body.as_deref().unwrap_or_default().as_bytes(),
    );
    assert!(
        (200..300).contains(&answer.status),
        "{line}: {} {}",
        answer.status,
        answer.text()
    );
    // A reader sees a counted hit at once; the wait only spares a slow
    // machine.
    let figures = server.wait_figures("demo", Duration::from_secs(5), |f| f["total"] == 1);
    let verdicts: Vec<String> = server
        .metrics()
        .lines()
        .filter(|l| l.starts_with("luot_hits_total"))
        .map(str::to_string)
        .collect();
    assert!(
        figures.is_ok(),
        "the README's beacon counted nothing ({line}); figures {figures:?}; {verdicts:?}"
    );
}
