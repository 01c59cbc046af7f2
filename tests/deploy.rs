//! The operator files under `deploy/` against the real binary: every metric
//! the alerts and the dashboard name exists in a real `/metrics` scrape (with
//! the labels they select on), the probes and the image's health check hit
//! routes that answer, the shipped configurations pass `luot check-config`,
//! and the timings that must agree (shutdown grace, preStop, stop timeouts)
//! do. YAML syntax and the tools' own validators (promtool, schemas,
//! systemd-analyze, nginx -t) run in `tests/validate-deploy.sh`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::redis::RedisServer;
use common::{BROWSER_UA, Server, poll};
use regex::Regex;
use serde_json::{Value, json};

/// Metrics named in deploy/ that may legitimately be absent from a scrape
/// made by this test, with the reason. Empty: every one is provoked below.
const ALLOWED_ABSENT: &[(&str, &str)] = &[];

/// Labels Prometheus adds at scrape time (not in luot's own output).
const TARGET_LABELS: &[&str] = &["instance", "job"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// `luot_foo_bucket` → `luot_foo` (histogram series share the family name).
fn family(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            return base;
        }
    }
    name
}

/// Every `luot_*` metric name mentioned in `text`, as family names.
fn referenced_metrics(text: &str) -> BTreeSet<String> {
    let re = Regex::new(r"\bluot_[a-z_]+").unwrap();
    re.find_iter(text)
        .map(|m| family(m.as_str().trim_end_matches('_')).to_string())
        .collect()
}

/// For each `luot_*{…}` selector in `text`, the label names it matches on.
fn selector_labels(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let sel = Regex::new(r"\b(luot_[a-z_]+)\{([^}]*)\}").unwrap();
    let label = Regex::new(r#"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*\\?""#).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for c in sel.captures_iter(text) {
        let entry = out.entry(family(&c[1]).to_string()).or_default();
        for l in label.captures_iter(&c[2]) {
            if !TARGET_LABELS.contains(&&l[1]) {
                entry.insert(l[1].to_string());
            }
        }
    }
    out
}

/// What one scrape shows: per family, whether it has a `# TYPE` line, and the
/// label names seen on its samples (`None` until a sample is seen).
#[derive(Default, Debug)]
struct Scrape {
    typed: BTreeSet<String>,
    helped: BTreeSet<String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

fn parse_scrape(text: &str) -> Scrape {
    let mut s = Scrape::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.split_whitespace().next() {
                s.typed.insert(name.to_string());
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(name) = rest.split_whitespace().next() {
                s.helped.insert(name.to_string());
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = family(&line[..name_end]).to_string();
        let labels = s.labels.entry(name).or_default();
        if line[name_end..].starts_with('{') {
            let body = &line[name_end + 1..line.rfind('}').unwrap_or(line.len())];
            for pair in body.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    let k = k.trim().trim_start_matches(',');
                    if k != "le" && k != "quantile" {
                        labels.insert(k.to_string());
                    }
                }
            }
        }
    }
    s
}

/// The metric families named in the alert rules and the dashboard.
fn deploy_metrics() -> BTreeSet<String> {
    let mut wanted = referenced_metrics(&read("deploy/prometheus/alerts.yml"));
    wanted.extend(referenced_metrics(&read("deploy/grafana/luot.json")));
    assert!(
        wanted.len() >= 20,
        "suspiciously few metrics found in deploy/: {wanted:?}"
    );
    wanted
}

/// Panics unless every family in `wanted` has a `# TYPE` line and a sample
/// in `scrape`, and carries every label the alerts and the dashboard select
/// it by.
fn assert_scrape_has(scrape: &Scrape, wanted: &BTreeSet<String>, text: &str) {
    let missing: Vec<_> = wanted
        .iter()
        .filter(|n| !scrape.typed.contains(*n) || !scrape.labels.contains_key(*n))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics named in deploy/ but absent from /metrics (no # TYPE or no sample): \
         {missing:?}\n--- scrape:\n{text}"
    );
    let mut selected = selector_labels(&read("deploy/prometheus/alerts.yml"));
    for (k, v) in selector_labels(&read("deploy/grafana/luot.json")) {
        selected.entry(k).or_default().extend(v);
    }
    for (name, labels) in &selected {
        let Some(seen) = scrape.labels.get(name) else {
            continue;
        };
        for label in labels {
            assert!(
                seen.contains(label),
                "deploy/ selects {name} by label {label:?}, but its samples carry only {seen:?}"
            );
        }
    }
}

fn counted_hit(server: &Server, page: &str) {
    let r = server.hit_as(&json!({"site": "demo", "page": page}), BROWSER_UA);
    assert_eq!(r.status, 200, "a browser's beacon: {}", r.text());
}

/// (a) Every metric named by the alert rules and the dashboard exists in a
/// real scrape of a server that has counted, refused, flushed, and lost its
/// Redis (store errors, write-ahead file); every label they select on is on
/// its samples.
#[test]
fn every_metric_named_in_deploy_is_exported() {
    let wanted = deploy_metrics();

    // Redis, so that a store outage can be provoked (store errors, store up
    // 0, the write-ahead file growing).
    let redis = RedisServer::start();
    let server = Server::start_with("", &[("LUOT_REDIS_URL", &redis.url())]);

    // Counted hits with and without a visitor id, a bot, an unknown site, a
    // malformed beacon, a pixel, a read, the probes.
    counted_hit(&server, "/a");
    counted_hit(&server, "/b");
    let with_vid = server.post(
        "/hit",
        &[
            ("Content-Type", "application/json"),
            ("User-Agent", BROWSER_UA),
        ],
        json!({"site": "demo", "page": "/a", "vid": "0123456789abcdef0123456789abcdef"})
            .to_string()
            .as_bytes(),
    );
    assert!(with_vid.status < 300, "{}", with_vid.text());
    let dnt = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain"),
            ("User-Agent", BROWSER_UA),
            ("DNT", "1"),
        ],
        json!({"site": "demo", "page": "/c"}).to_string().as_bytes(),
    );
    assert!(dnt.status < 300, "{}", dnt.text());
    let bot = server.post(
        "/hit",
        &[
            ("Content-Type", "text/plain"),
            (
                "User-Agent",
                "Googlebot/2.1 (+http://www.google.com/bot.html)",
            ),
        ],
        json!({"site": "demo", "page": "/a"}).to_string().as_bytes(),
    );
    assert!(bot.status < 300, "a bot is answered: {}", bot.text());
    let unknown = server.hit(&json!({"site": "no-such-site", "page": "/"}));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let malformed = server.post("/hit", &[("Content-Type", "text/plain")], b"{not json");
    assert_eq!(malformed.status, 400, "{}", malformed.text());
    assert_eq!(
        server
            .get_with(
                "/hit.gif?site=demo&page=/gif",
                &[("User-Agent", BROWSER_UA)]
            )
            .status,
        200
    );
    server.counters("demo", None);
    assert_eq!(server.get("/healthz").status, 200);
    assert_eq!(server.get("/readyz").status, 200);

    // A flush reached Redis.
    poll(Duration::from_secs(20), || {
        let text = server.metrics();
        let flushed = common::metric_value(&text, "luot_flush_duration_seconds_count")?;
        (flushed > 0.0).then_some(())
    })
    .unwrap_or_else(|| panic!("no flush within 20 s:\n{}", server.metrics()));

    // Redis goes away: store errors, store down, the write-ahead file holds
    // the batch that could not be sent.
    redis.kill();
    counted_hit(&server, "/during-outage");
    let text = poll(Duration::from_secs(30), || {
        let text = server.metrics();
        let down = common::metric_value(&text, "luot_store_up")? == 0.0;
        // Every store error series exists from the start: wait for a count.
        let errors: f64 = text
            .lines()
            .filter(|l| l.starts_with("luot_store_errors_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        (down && errors > 0.0).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "no store error within 30 s of killing Redis:\n{}",
            server.metrics()
        )
    });

    let allowed: BTreeMap<&str, &str> = ALLOWED_ABSENT.iter().copied().collect();
    for name in allowed.keys() {
        assert!(
            wanted.contains(*name),
            "ALLOWED_ABSENT lists {name}, which deploy/ no longer names"
        );
    }
    let scrape = parse_scrape(&text);
    let wanted_here: BTreeSet<String> = wanted
        .iter()
        .filter(|n| !allowed.contains_key(n.as_str()))
        .cloned()
        .collect();
    assert_scrape_has(&scrape, &wanted_here, &text);

    // Named without a description is allowed (the exporter prints # HELP
    // only for described metrics), but say so.
    let undescribed: Vec<_> = wanted
        .iter()
        .filter(|n| !scrape.helped.contains(*n))
        .collect();
    if !undescribed.is_empty() {
        eprintln!("note: metrics without # HELP: {undescribed:?}");
    }
}

/// (a') A server that has done nothing yet already exports every metric the
/// alerts and the dashboard name, with the labels they select on: a series
/// that appears only with its first event is invisible to `rate()` and
/// `increase()` for that event.
#[test]
fn every_metric_named_in_deploy_exists_from_the_start() {
    let wanted = deploy_metrics();
    let server = Server::start();
    let text = server.metrics();
    assert_scrape_has(&parse_scrape(&text), &wanted, &text);
    // The first store error and the first 5xx each have a series at 0.
    for series in [
        r#"luot_store_errors_total{op="apply",kind="unavailable"}"#,
        r#"luot_http_requests_total{route="hit",status="500"}"#,
        r#"luot_http_requests_total{route="counters",status="503"}"#,
    ] {
        assert_eq!(
            common::metric_value(&text, series),
            Some(0.0),
            "{series} is not at 0 from the start:\n{text}"
        );
    }
}

/// (b) The JSON under deploy/ parses; the dashboard uses its datasource
/// variable everywhere, has unique panel ids, fits the 24-column grid, and
/// shows what an operator looks for first.
#[test]
fn the_dashboard_is_sound() {
    let text = read("deploy/grafana/luot.json");
    let dash: Value = serde_json::from_str(&text).expect("deploy/grafana/luot.json is JSON");
    assert_eq!(dash["uid"], "luot");
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter().any(|v| v["type"] == "datasource"
            && v["name"] == "datasource"
            && v["query"] == "prometheus"),
        "a Prometheus datasource variable named `datasource`"
    );

    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    let mut stack: Vec<&Value> = dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner);
        }
        let id = p["id"].as_u64().expect("every panel has a numeric id");
        assert!(ids.insert(id), "panel id {id} is used twice");
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap(), g["w"].as_u64().unwrap());
        assert!(x + w <= 24, "panel {:?} overflows the grid", p["title"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {:?} must use the datasource variable",
            p["title"]
        );
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${datasource}");
            let e = t["expr"].as_str().expect("a PromQL expr");
            exprs.push(e.to_string());
        }
    }
    let all = exprs.join("\n");
    for needle in [
        "luot_hits_total",
        "luot_http_request_duration_seconds_bucket",
        "luot_http_requests_total",
        "luot_flush_duration_seconds_bucket",
        "luot_flush_batch_keys_bucket",
        "luot_pending_keys",
        "luot_store_up",
        "luot_duplicate_batches_total",
        "luot_late_deltas_total",
        "luot_wal_bytes",
        "luot_http_connections",
        "luot_site_hits_total",
        "luot_site_online_visitors",
        "luot_rate_limiter_clients",
        "luot_site_pages",
    ] {
        assert!(all.contains(needle), "the dashboard shows {needle}");
    }
    assert!(
        all.contains("histogram_quantile(0.99, sum by (le, route)"),
        "latency percentiles by route"
    );

    // Any other JSON under deploy/ parses too.
    for path in files_under(&root().join("deploy"), "json") {
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str::<Value>(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    }
}

fn files_under(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                out.push(path);
            }
        }
    }
    out
}

/// (c) The image checks health with the binary itself, runs unprivileged,
/// exposes both listeners and stops with SIGTERM; `luot healthcheck` really
/// tells a ready server from an absent one.
#[test]
fn the_image_checks_health_with_luot_healthcheck() {
    let dockerfile = read("deploy/docker/Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    let joined = dockerfile.replace("\\\n", " ");
    let healthcheck = joined
        .lines()
        .find(|l| l.trim_start().starts_with("HEALTHCHECK"))
        .expect("a HEALTHCHECK instruction");
    assert!(
        healthcheck.contains(r#"CMD ["luot", "healthcheck"]"#),
        "HEALTHCHECK runs `luot healthcheck`: {healthcheck}"
    );
    for tool in ["curl", "wget"] {
        assert!(
            !lines.iter().any(|l| l.contains(tool)),
            "the image needs no {tool}"
        );
    }
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("a USER instruction");
    assert!(!user.contains("root") && !user.ends_with(" 0"), "{user}");
    assert!(lines.contains(&"EXPOSE 8080 9090"));
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    assert!(lines.contains(&"VOLUME /var/lib/luot"));
    for env in [
        "LUOT_DATA_DIR=/var/lib/luot",
        "LUOT_LISTEN=0.0.0.0:8080",
        "LUOT_ADMIN_LISTEN=0.0.0.0:9090",
    ] {
        assert!(joined.contains(env), "the image sets {env}");
    }
    assert!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 2,
        "a multi-stage build"
    );

    // The health check the image runs, against a real server and an absent one.
    let server = Server::start();
    let healthcheck = |listen: &str| {
        Command::new(env!("CARGO_BIN_EXE_luot"))
            .arg("healthcheck")
            .env_remove("LUOT_CONFIG")
            .env("LUOT_LISTEN", listen)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run luot healthcheck")
    };
    assert!(healthcheck(&server.public.to_string()).success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert!(
        !healthcheck(&closed.to_string()).success(),
        "no server on {closed}: unhealthy"
    );
}

/// (c) The Kubernetes probes and the ports they name exist: the paths
/// answer 200 from the real binary on the port the image listens on.
#[test]
fn kubernetes_probes_hit_routes_that_answer() {
    let server = Server::start();
    for file in [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/statefulset.yaml",
    ] {
        let text = read(file);
        let mut probes = 0;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t == "readinessProbe:" || t == "livenessProbe:" {
                let path = lines[i..]
                    .iter()
                    .find_map(|l| l.trim().strip_prefix("path: "))
                    .unwrap_or_else(|| panic!("{file}: {t} without a path"));
                let expected = if t == "readinessProbe:" {
                    "/readyz"
                } else {
                    "/healthz"
                };
                assert_eq!(path, expected, "{file}: {t}");
                let r = server.get(path);
                assert_eq!(r.status, 200, "{file}: GET {path}: {}", r.text());
                probes += 1;
            }
        }
        assert_eq!(probes, 2, "{file}: a readiness and a liveness probe");
        assert!(
            text.contains("name: http\n              containerPort: 8080"),
            "{file}: the probes' port `http` is 8080"
        );
    }
}

/// The shipped configuration files pass `luot check-config`: deploy/luot.toml
/// and the luot.toml inside the ConfigMap.
#[test]
fn shipped_configurations_are_valid() {
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let embedded = block_scalar(&configmap, "luot.toml: |");
    assert!(
        embedded.contains("[[sites]]"),
        "the ConfigMap declares a site"
    );
    let dir = tempfile::TempDir::new().unwrap();
    let from_configmap = dir.path().join("luot.toml");
    std::fs::write(&from_configmap, embedded).unwrap();

    for path in [root().join("deploy/luot.toml"), from_configmap] {
        let out = Command::new(env!("CARGO_BIN_EXE_luot"))
            .arg("check-config")
            .arg("--config")
            .arg(&path)
            .env_remove("LUOT_CONFIG")
            .env_remove("LUOT_REDIS_URL")
            .output()
            .expect("run luot check-config");
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The text of the YAML block scalar introduced by the line `key` (e.g.
/// `luot.toml: |`), dedented.
fn block_scalar(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != key);
    let header = lines.next().unwrap_or_else(|| panic!("no `{key}`"));
    let outer = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| if l.len() >= indent { &l[indent..] } else { "" })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first integer after `key` on a line of `text`.
fn number_after(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix(key)?;
            let digits: String = rest
                .trim_start_matches([' ', ':', '=', '"'])
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or_else(|| panic!("no number after {key:?}"))
}

/// Stop timings agree: every supervisor waits at least luot's shutdown grace
/// (plus the preStop sleep on Kubernetes) before it kills.
#[test]
fn stop_timeouts_cover_the_shutdown_grace() {
    let default_grace = number_after(&read("config/default.toml"), "shutdown_grace");
    let configmap = read("deploy/kubernetes/configmap.yaml");
    let grace = number_after(&configmap, "shutdown_grace").max(default_grace);
    for file in [
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/statefulset.yaml",
    ] {
        let text = read(file);
        let termination = number_after(&text, "terminationGracePeriodSeconds");
        let pre_stop = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("command: [\"sleep\", \""))
            .and_then(|r| r.trim_end_matches("\"]").parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{file}: a preStop sleep"));
        assert!(
            termination >= grace + pre_stop,
            "{file}: terminationGracePeriodSeconds {termination} < shutdown_grace {grace} + preStop {pre_stop}"
        );
    }
    let unit = read("deploy/systemd/luot.service");
    assert!(number_after(&unit, "TimeoutStopSec=") > default_grace);
    let compose = read("deploy/compose.yaml");
    assert!(number_after(&compose, "stop_grace_period:") > default_grace);
}

/// The compose file and nginx agree on who the trusted proxy is, and nginx
/// appends to X-Forwarded-For rather than replacing it.
#[test]
fn compose_trusts_exactly_its_nginx() {
    let compose = read("deploy/compose.yaml");
    let nginx_ip = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("ipv4_address: "))
        .expect("nginx has a fixed address");
    let trusted = compose
        .lines()
        .find_map(|l| l.trim().strip_prefix("LUOT_TRUSTED_PROXIES: "))
        .expect("LUOT_TRUSTED_PROXIES is set");
    assert_eq!(trusted, nginx_ip);

    let conf = read("deploy/nginx/luot.conf");
    assert!(conf.contains("proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"));
    for upstream in ["server luot-1:8080", "server luot-2:8080"] {
        assert!(conf.contains(upstream), "nginx proxies to {upstream}");
    }
    let prometheus = read("deploy/prometheus/prometheus.yml");
    for target in ["luot-1:9090", "luot-2:9090"] {
        assert!(prometheus.contains(target), "Prometheus scrapes {target}");
    }
    for (flag, value) in [
        ("--appendonly", "\"yes\""),
        ("--appendfsync", "always"),
        ("--maxmemory-policy", "noeviction"),
    ] {
        assert!(
            compose.contains(&format!("- {flag}\n      - {value}")),
            "redis runs with {flag} {value}"
        );
    }
}
