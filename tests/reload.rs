//! SIGHUP reloads the configuration: a new site counts at once, a changed
//! site keeps what it counted, a removed site's last hits still reach the
//! store, and a broken file is refused while counting goes on.

mod common;

use std::time::Duration;

use common::{Server, poll};
use serde_json::json;

const BASE: &str = "[counting]\nrate_limit_per_second = 100000\nrate_limit_burst = 100000\n";

fn site(id: &str, initial_total: u64) -> String {
    format!(
        "[[sites]]\nid = \"{id}\"\ntimezone = \"UTC\"\norigins = [\"*\"]\ninitial_total = {initial_total}\n"
    )
}

fn beacons(server: &Server, site: &str, n: usize) {
    for i in 0..n {
        let r = server.hit(&json!({"site": site, "page": format!("/p{}", i % 3)}));
        assert!(r.status == 200 || r.status == 204, "{site}: {}", r.status);
    }
}

fn total(server: &Server, site: &str) -> u64 {
    server.counters(site, None)["total"].as_u64().unwrap_or(0)
}

#[test]
fn sighup_adds_changes_and_removes_sites_without_losing_a_hit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("luot.toml");
    std::fs::write(&file, format!("{BASE}{}", site("alpha", 0))).unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = file.to_str().unwrap().to_string();
    let env = [("LUOT_CONFIG", config.as_str())];
    let mut server = Server::start_in(data.path(), "", &env);

    beacons(&server, "alpha", 5);
    assert_eq!(
        server.hit(&json!({"site": "beta", "page": "/"})).status,
        404
    );

    // Add beta, give alpha a starting total.
    std::fs::write(
        &file,
        format!("{BASE}{}{}", site("alpha", 1000), site("beta", 0)),
    )
    .unwrap();
    server.signal("HUP");
    let beta_counts = poll(Duration::from_secs(20), || {
        let r = server.hit(&json!({"site": "beta", "page": "/"}));
        (r.status == 200).then_some(())
    });
    assert!(
        beta_counts.is_some(),
        "beta was never declared:\n{}",
        server.log()
    );
    beacons(&server, "alpha", 5);
    assert_eq!(
        total(&server, "alpha"),
        1010,
        "alpha kept its 5 and gained 5 + 1000"
    );
    beacons(&server, "beta", 3);

    // A broken file is refused; both sites keep counting.
    std::fs::write(&file, "[[sites]]\nid = \"Bad Id\"\n").unwrap();
    server.signal("HUP");
    let refused = poll(Duration::from_secs(20), || {
        server.log().contains("reload refused").then_some(())
    });
    assert!(refused.is_some(), "no refusal logged:\n{}", server.log());
    beacons(&server, "alpha", 2);
    beacons(&server, "beta", 2);
    assert_eq!(total(&server, "alpha"), 1012);
    assert_eq!(total(&server, "beta"), 6);

    // Remove beta right after hits: they must still reach the store.
    beacons(&server, "beta", 4);
    std::fs::write(&file, format!("{BASE}{}", site("alpha", 1000))).unwrap();
    server.signal("HUP");
    // Probes sent before the reload takes effect are counted: keep count.
    let mut probes_counted = 0u64;
    let gone = poll(Duration::from_secs(20), || {
        let status = server.hit(&json!({"site": "beta", "page": "/"})).status;
        if status == 200 {
            probes_counted += 1;
        }
        (status == 404).then_some(())
    });
    assert!(gone.is_some(), "beta still declared:\n{}", server.log());
    // Let the flusher send beta's last hits (a whole pass after the last
    // probe), then stop and declare it again.
    server.wait_flushes(2);
    assert!(server.terminate().success());
    std::fs::write(
        &file,
        format!("{BASE}{}{}", site("alpha", 1000), site("beta", 0)),
    )
    .unwrap();
    let server = Server::start_in(data.path(), "", &env);
    assert_eq!(total(&server, "alpha"), 1012, "alpha after a restart");
    assert_eq!(
        total(&server, "beta"),
        10 + probes_counted,
        "beta's hits, including the four just before its removal"
    );
}

/// `POST /admin/v1/import` of one day of history `days_ago` days back,
/// under import id `id`; the answer's `late` (days past their retention).
fn import_day(server: &Server, id: &str, days_ago: i64) -> u64 {
    let date = jiff::Zoned::now()
        .with_time_zone(jiff::tz::TimeZone::UTC)
        .date()
        .checked_sub(jiff::Span::new().days(days_ago))
        .unwrap();
    let body =
        json!({"site": "alpha", "id": id, "history": [{"date": date.to_string(), "hits": 7}]});
    let answer = common::agent()
        .post(server.admin_url("/admin/v1/import"))
        .header("Content-Type", "application/json")
        .send(body.to_string().as_bytes());
    let reply = common::into_reply(answer, "import");
    assert_eq!(reply.status, 200, "import: {}", reply.text());
    reply.json()["late"].as_u64().expect("late")
}

/// How many times `needle` is in the server's log.
fn logged(server: &Server, needle: &str) -> usize {
    server.log().matches(needle).count()
}

#[test]
fn sighup_applies_retention_and_online_window_and_names_restart_only_sections() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("luot.toml");
    let retention = |days: u32| format!("[retention]\nsite_days = \"{days}d\"\n");
    std::fs::write(
        &file,
        format!("{BASE}{}{}", retention(30), site("alpha", 0)),
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = file.to_str().unwrap().to_string();
    let env = [("LUOT_CONFIG", config.as_str())];
    let server = Server::start_in(data.path(), "", &env);

    // 100 days back is past a 30-day retention: the import counts it late.
    assert_eq!(import_day(&server, "a0a0a0a0a0a0a0a0", 100), 1);

    // A longer retention, a new online window and new limits.
    let limits = "[limits]\nmax_body_bytes = 4096\n";
    let online = "online_window = \"10m\"\n";
    let reloaded = format!(
        "{BASE}{online}{limits}{}{}",
        retention(400),
        site("alpha", 0)
    );
    std::fs::write(&file, &reloaded).unwrap();
    server.signal("HUP");
    let applied = poll(Duration::from_secs(20), || {
        (logged(&server, "configuration reloaded") == 1).then_some(())
    });
    assert!(applied.is_some(), "no reload:\n{}", server.log());
    // The same day is within the reloaded retention now.
    assert_eq!(
        import_day(&server, "b1b1b1b1b1b1b1b1", 100),
        0,
        "the import still dates expiries by the start-up retention:\n{}",
        server.log()
    );
    let flusher_took = poll(Duration::from_secs(20), || {
        (logged(&server, "the flusher takes the reloaded retention") == 1).then_some(())
    });
    assert!(
        flusher_took.is_some(),
        "flusher kept its retention:\n{}",
        server.log()
    );
    assert_eq!(logged(&server, "[retention] reloaded"), 1);
    assert_eq!(logged(&server, "online_window reloaded"), 1);
    assert_eq!(logged(&server, "change only at a restart"), 1);
    assert!(server.log().contains("[limits]"), "{}", server.log());

    // The same file again: compared with what runs now, nothing changed
    // but [limits], which still waits for a restart.
    server.signal("HUP");
    let again = poll(Duration::from_secs(20), || {
        (logged(&server, "configuration reloaded") == 2).then_some(())
    });
    assert!(again.is_some(), "no second reload:\n{}", server.log());
    assert_eq!(
        logged(&server, "[retention] reloaded"),
        1,
        "the second reload was compared with the start-up configuration:\n{}",
        server.log()
    );
    assert_eq!(logged(&server, "online_window reloaded"), 1);
    assert_eq!(logged(&server, "change only at a restart"), 2);
}
