//! Reading now (issue 25 §4) through the real binary: a page's `online`
//! (its distinct readers in the online window) in the page figures, the
//! beacon's answer and the badge; the ranking of pages by readers
//! (`GET /api/v1/sites/{site}/online`), its limit and its read token; on
//! the embedded store and on Redis, where two instances see the union of
//! their readers.

mod common;

use std::time::Duration;

use common::redis::RedisServer;
use common::{BROWSER_UA, Server, demo_site, int, poll};
use serde_json::{Value, json};

/// Every request of a test comes from 127.0.0.1: no limit in the way.
const NO_LIMITS: &str = "[counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\n\
    read_rate_limit_per_second = 100000\nread_rate_limit_burst = 100000\n";

const SETTLE: Duration = Duration::from_secs(20);

const PRIVATE: &str = r#"
[[sites]]
id = "secret"
timezone = "Europe/Paris"
origins = ["*"]
initial_total = 0
public = false
read_token = "owner-read-token-0123456789"
"#;

/// One beacon; its answer.
fn read(server: &Server, site: &str, page: &str, vid: &str) -> Value {
    let r = server.hit_as(
        &json!({"site": site, "page": page, "ref": "", "vid": vid}),
        BROWSER_UA,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn online(server: &Server, site: &str, query: &str) -> Value {
    let r = server.get(&format!("/api/v1/sites/{site}/online{query}"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// `[(page, online)]` of a ranking answer.
fn ranked(answer: &Value) -> Vec<(String, u64)> {
    answer["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|p| (p["page"].as_str().unwrap().to_string(), int(p, "online")))
        .collect()
}

#[test]
fn a_page_s_online_counts_its_distinct_readers_and_pages_rank_by_them() {
    let server = Server::start_with(&format!("{NO_LIMITS}{}", demo_site(PRIVATE)), &[]);
    read(&server, "demo", "/a", "reader-1");
    read(&server, "demo", "/a", "reader-1");
    let answer = read(&server, "demo", "/a", "reader-2");
    // The beacon's answer: the page's readers, the site's visitors.
    assert_eq!(answer["page"]["online"], 2, "{answer}");
    let answer = read(&server, "demo", "/b/", "reader-1");
    assert_eq!(answer["page"]["page"], "/b");
    assert_eq!(answer["page"]["online"], 1, "{answer}");
    assert_eq!(answer["site"]["online"], 2, "{answer}");

    // The figures route and the badge.
    assert_eq!(server.counters("demo", Some("/a"))["online"], 2);
    assert_eq!(server.counters("demo", Some("/b"))["online"], 1);
    assert_eq!(server.counters("demo", Some("/never"))["online"], 0);
    let badge = server.get("/badge/demo.svg?page=/a&period=online");
    assert_eq!(badge.status, 200);
    assert!(badge.text().contains(">2<"), "{}", badge.text());

    // The ranking, made at flush.
    let mut last = Value::Null;
    let ranking = poll(SETTLE, || {
        last = online(&server, "demo", "");
        (ranked(&last).len() == 2).then(|| last.clone())
    })
    .unwrap_or_else(|| panic!("no ranking of two pages: {last}"));
    assert_eq!(ranking["site"], "demo");
    assert_eq!(ranking["online"], 2);
    assert_eq!(
        ranked(&ranking),
        vec![("/a".to_string(), 2), ("/b".to_string(), 1)]
    );
    assert!(
        ranking["hour"].as_array().is_some_and(|h| h.len() == 60),
        "{ranking}"
    );
    let top1 = online(&server, "demo", "?limit=1");
    assert_eq!(ranked(&top1), vec![("/a".to_string(), 2)]);
    for bad in ["?limit=0", "?limit=21", "?limit=x"] {
        let r = server.get(&format!("/api/v1/sites/demo/online{bad}"));
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"], "bad_limit");
    }
    assert_eq!(server.get("/api/v1/sites/nope/online").status, 404);

    // A private site's readers need its token.
    read(&server, "secret", "/x", "reader-9");
    assert_eq!(server.get("/api/v1/sites/secret/online").status, 401);
    let with_token = server.get_with(
        "/api/v1/sites/secret/online",
        &[("Authorization", "Bearer owner-read-token-0123456789")],
    );
    assert_eq!(with_token.status, 200, "{}", with_token.text());
    assert_eq!(with_token.json()["online"], 1);

    // The pages tracked are a metric.
    assert!(
        poll(SETTLE, || {
            (server.metric("luot_site_online_pages{site=\"demo\"}") == Some(2.0)).then_some(())
        })
        .is_some(),
        "{}",
        server.metrics()
    );
}

/// Two instances on one Redis: each page's readers merge through the
/// store's page-minute sketches, so both instances show the union, and
/// the instances' rankings merge, so a page read on one only is ranked
/// on both.
#[test]
fn two_instances_on_one_redis_see_the_union_of_a_page_s_readers() {
    let redis = RedisServer::start();
    let env = [("LUOT_REDIS_URL", redis.url())];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = Server::start_with(NO_LIMITS, &env);
    let b = Server::start_with(NO_LIMITS, &env);
    read(&a, "demo", "/a", "reader-1");
    read(&b, "demo", "/a", "reader-2");
    read(&b, "demo", "/a", "reader-1");
    read(&b, "demo", "/b", "reader-3");
    for (name, server) in [("A", &a), ("B", &b)] {
        let mut last = Value::Null;
        let agreed = poll(SETTLE, || {
            last = server.counters("demo", Some("/a"));
            (last["online"] == 2).then_some(())
        });
        assert!(agreed.is_some(), "instance {name}: /a read by 2: {last}");
        let mut last = Value::Null;
        let ranked_a = poll(SETTLE, || {
            last = online(server, "demo", "");
            ranked(&last)
                .first()
                .is_some_and(|(p, n)| p == "/a" && *n == 2)
                .then_some(())
        });
        assert!(ranked_a.is_some(), "instance {name}: /a first by 2: {last}");
    }
    assert_eq!(b.counters("demo", Some("/b"))["online"], 1);
    // /b was read on B only: A learns it from the instances' shared
    // ranking, lists it and answers its figure.
    let mut last = Value::Null;
    let shared = poll(SETTLE, || {
        last = online(&a, "demo", "");
        (ranked(&last) == vec![("/a".to_string(), 2), ("/b".to_string(), 1)]).then_some(())
    });
    assert!(shared.is_some(), "A ranks B's page too: {last}");
    assert_eq!(a.counters("demo", Some("/b"))["online"], 1);
    let keys = redis.must(&["KEYS", "luot:{demo}:po:*"]);
    let keys: Vec<String> = keys
        .array()
        .unwrap_or_default()
        .iter()
        .filter_map(|k| k.text())
        .collect();
    assert!(
        keys.iter().any(|k| k.ends_with(":/a")) && keys.iter().any(|k| k.ends_with(":/b")),
        "page-minute sketches carry the site's tag: {keys:?}"
    );
}
