//! The OpenAPI document against the real server: every documented route
//! answers one of its documented statuses, a JSON answer carries the keys its
//! schema requires, and every route the router knows is documented.

mod common;

use std::time::Duration;

use common::{Server, poll};
use serde_json::{Value, json};

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/openapi.yaml"))
        .expect("deploy/openapi.yaml");
    serde_yaml::from_str(&text).expect("the OpenAPI document is YAML")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let mut at = spec;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            resolve(spec, at)
        }
        None => v,
    }
}

/// An example value for a parameter, by name.
fn example(name: &str) -> &'static str {
    match name {
        "site" => "site=demo",
        "page" => "page=/a",
        "path" => "path=/a&path=/b",
        "jsonpCallback" => "jsonpCallback=cb",
        "by" => "by=channel",
        _ => "",
    }
}

#[test]
fn every_documented_route_answers_a_documented_status_and_shape() {
    let spec = spec();
    let server = Server::start();
    // Something to read: a counted hit on /a.
    let r = server.hit(&json!({"site": "demo", "page": "/a"}));
    assert_eq!(r.status, 200);
    assert!(
        poll(Duration::from_secs(20), || {
            (server.counters("demo", None)["total"].as_u64() == Some(1)).then_some(())
        })
        .is_some()
    );
    let paths = spec["paths"].as_object().expect("paths");
    let mut checked = 0;
    for (template, item) in paths {
        let path = template
            .replace("{site}", "demo")
            .replace("{site}.svg", "demo.svg");
        for (method, op) in item.as_object().expect("path item") {
            let method = method.to_ascii_uppercase();
            if method == "OPTIONS" {
                continue;
            }
            // Required query parameters, from the operation's list.
            let query: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| resolve(&spec, p))
                        .filter(|p| p["in"] == "query" && p["required"] == true)
                        .map(|p| example(p["name"].as_str().unwrap_or_default()))
                        .filter(|e| !e.is_empty())
                        .collect()
                })
                .unwrap_or_default();
            let url = if query.is_empty() {
                path.clone()
            } else {
                format!("{path}?{}", query.join("&"))
            };
            let reply = match method.as_str() {
                "GET" => server.get(&url),
                "POST" => server.post(
                    &url,
                    &[("Content-Type", "text/plain")],
                    br#"{"site":"demo","page":"/b"}"#,
                ),
                other => panic!("{other} {template}: no request built for this method"),
            };
            let status = reply.status.to_string();
            let responses = op["responses"].as_object().expect("responses");
            let documented = responses.get(&status).or_else(|| {
                let class = format!("{}XX", &status[..1]);
                responses.get(&class)
            });
            let Some(documented) = documented else {
                panic!(
                    "{method} {url} answered {status}, documented: {:?}\n{}",
                    responses.keys().collect::<Vec<_>>(),
                    reply.text()
                );
            };
            let documented = resolve(&spec, documented);
            if let Some(schema) = documented["content"]["application/json"]["schema"].as_object() {
                let schema = resolve(&spec, &Value::Object(schema.clone())).clone();
                let body: Value = serde_json::from_slice(&reply.body)
                    .unwrap_or_else(|_| panic!("{method} {url}: not JSON: {}", reply.text()));
                for key in schema["required"].as_array().into_iter().flatten() {
                    let key = key.as_str().unwrap_or_default();
                    assert!(
                        body.get(key).is_some(),
                        "{method} {url}: the answer lacks `{key}` that the schema requires: {body}"
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "only {checked} operations checked");
}

#[test]
fn errors_are_documented_json() {
    let spec = spec();
    let server = Server::start();
    let required: Vec<String> = resolve(&spec, &spec["components"]["schemas"]["Error"])["required"]
        .as_array()
        .expect("Error.required")
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    for (url, status) in [
        ("/api/v1/sites/nope/counters", 404),
        ("/api/v1/sites/demo/series?from=bad", 400),
        ("/api/v1/sites/demo/top?limit=0", 400),
        ("/api/v1/sites/demo/top?period=2h", 400),
        ("/widget/demo/top?limit=99", 400),
        ("/api/v1/sites/demo/breakdown?by=referrer", 400),
        ("/api/v1/sites/demo/pages", 400),
        ("/api/v1/sites/demo/online?limit=21", 400),
        ("/no/such/route", 404),
    ] {
        let reply = server.get(url);
        assert_eq!(reply.status, status, "{url}");
        let body: Value = serde_json::from_slice(&reply.body).expect("JSON error");
        for key in &required {
            assert!(body.get(key).is_some(), "{url}: {body}");
        }
    }
}
