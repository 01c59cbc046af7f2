//! Proof that the Redis harness of `tests/common/redis.rs` works: the RESP
//! client, a single server surviving SIGKILL through its AOF, a 3×1 cluster
//! (slots, failover, slot migration) and the reply-dropping proxy.

mod common;

use std::time::{Duration, Instant};

use common::redis::{
    DropReplyProxy, RedisCluster, RedisServer, RespConn, RespValue, command, crc16, free_port,
    must, slot_of, wait_until,
};

fn bulk(s: &str) -> RespValue {
    RespValue::Bulk(s.as_bytes().to_vec())
}

#[test]
fn slot_of_follows_the_cluster_spec_without_a_server() {
    // The reference check value of CRC16/XMODEM.
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(slot_of("123456789"), 0x31C3); // already below 16384
    // Hash tags, from the Redis Cluster specification.
    assert_eq!(
        slot_of("{user1000}.following"),
        slot_of("{user1000}.followers")
    );
    assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
    assert_eq!(slot_of("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
    assert_eq!(slot_of("foo{{bar}}zap"), slot_of("{bar"));
    assert_eq!(slot_of("foo{bar}{zap}"), slot_of("bar"));
    assert_eq!(slot_of("no-close{tag"), crc16(b"no-close{tag") % 16384);
    assert!(wait_until(Duration::from_secs(1), || true));
    assert!(!wait_until(Duration::from_millis(120), || false));
    assert_ne!(free_port(), 0);
}

#[test]
fn single_server_round_trip_and_aof_survives_sigkill() {
    let t0 = Instant::now();
    let mut redis = RedisServer::start();
    let started = t0.elapsed();
    assert!(redis.is_running());
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}/", redis.port()));
    assert!(redis.must(&["SET", "greeting", "hello world"]).is_ok());
    assert_eq!(redis.must(&["GET", "greeting"]), bulk("hello world"));
    assert_eq!(redis.must(&["GET", "missing"]), RespValue::Null);
    assert_eq!(redis.must(&["INCRBY", "n", "41"]), RespValue::Integer(41));
    assert_eq!(
        redis.must(&["CONFIG", "GET", "appendfsync"]),
        RespValue::Array(vec![bulk("appendfsync"), bulk("always")])
    );
    assert_eq!(
        redis.must(&["CONFIG", "GET", "save"]),
        RespValue::Array(vec![bulk("save"), bulk("")])
    );
    let pong = redis.must(&["PING"]);
    assert_eq!(pong, RespValue::Simple("PONG".into()));
    let wrong = redis.command(&["INCR", "greeting"]).unwrap();
    assert!(
        wrong.error().is_some_and(|e| e.contains("not an integer")),
        "{wrong:?}"
    );
    // Pipelined on one connection; an array reply.
    let mut conn = RespConn::connect(redis.addr()).unwrap();
    conn.send(&["RPUSH", "list", "a", "b"]).unwrap();
    conn.send(&["LRANGE", "list", "0", "-1"]).unwrap();
    assert_eq!(conn.read().unwrap(), RespValue::Integer(2));
    assert_eq!(
        conn.read().unwrap(),
        RespValue::Array(vec![bulk("a"), bulk("b")])
    );

    // Written right before SIGKILL: appendfsync always keeps it.
    assert_eq!(redis.must(&["INCR", "n"]), RespValue::Integer(42));
    let port = redis.port();
    let t1 = Instant::now();
    redis.kill();
    assert!(!redis.is_running());
    assert!(command(redis.addr(), &["PING"]).is_err());
    redis.restart();
    let restarted = t1.elapsed();
    assert!(redis.is_running());
    assert_eq!(redis.port(), port);
    assert_eq!(redis.must(&["GET", "n"]), bulk("42"), "{}", redis.log());
    assert_eq!(redis.must(&["GET", "greeting"]), bulk("hello world"));
    assert!(redis.log().contains("DB loaded from append only file"));
    eprintln!("single server: start {started:?}, kill+restart {restarted:?}");
}

#[test]
fn cluster_slots_failover_and_migration() {
    let t0 = Instant::now();
    let cluster = RedisCluster::start(3, 1);
    let started = t0.elapsed();
    let masters = cluster.masters();
    let replicas = cluster.replicas();
    assert_eq!(masters.len(), 3, "{:#?}", cluster.nodes());
    assert_eq!(replicas.len(), 3, "{:#?}", cluster.nodes());
    assert_eq!(cluster.seeds().len(), 6);
    assert_eq!(cluster.url_list().split(',').count(), 6);
    assert!(cluster.url_list().starts_with("redis://127.0.0.1:"));
    assert!(
        cluster
            .cluster_url()
            .starts_with("redis+cluster://127.0.0.1:")
    );
    for r in &replicas {
        assert!(cluster.master_of(*r).is_some_and(|m| masters.contains(&m)));
    }

    // slot_of agrees with the server, hash tags included.
    for key in [
        "{a}",
        "{a}:hits",
        "{b}",
        "site:{b}:pages",
        "plain",
        "{}x",
        "x{}{a}",
        "{{a}}",
        "é{ü}",
    ] {
        let theirs = must(masters[0], &["CLUSTER", "KEYSLOT", key]);
        assert_eq!(
            RespValue::Integer(i64::from(slot_of(key))),
            theirs,
            "slot of {key:?}"
        );
    }
    assert_eq!(slot_of("{a}:hits"), slot_of("{a}"));

    // A write through the owner works; elsewhere it is MOVED there.
    let slot_a = slot_of("{a}");
    let owner_a = cluster.node_of_slot(slot_a);
    assert!(must(owner_a, &["SET", "{a}:hits", "7"]).is_ok());
    // Make sure the replica has it before failing over.
    let synced = must(owner_a, &["WAIT", "1", "5000"]);
    assert_eq!(synced, RespValue::Integer(1));
    let other = *masters.iter().find(|m| **m != owner_a).unwrap();
    let moved = command(other, &["GET", "{a}:hits"]).unwrap();
    assert_eq!(
        moved.error(),
        Some(format!("MOVED {slot_a} {owner_a}").as_str()),
        "{moved:?}"
    );

    // Manual failover: the replica of the owner becomes the master.
    let t1 = Instant::now();
    let replica_a = cluster.replicas_of(owner_a)[0];
    cluster.failover(replica_a);
    let failover_time = t1.elapsed();
    assert_eq!(RedisCluster::role_of(replica_a).unwrap(), "master");
    assert_eq!(RedisCluster::role_of(owner_a).unwrap(), "slave");
    assert_eq!(cluster.node_of_slot(slot_a), replica_a);
    assert!(cluster.masters().contains(&replica_a));
    assert!(cluster.replicas().contains(&owner_a));
    assert_eq!(cluster.master_of(owner_a), Some(replica_a));
    assert_eq!(must(replica_a, &["GET", "{a}:hits"]), bulk("7"));
    assert_eq!(
        must(replica_a, &["INCR", "{a}:hits"]),
        RespValue::Integer(8)
    );

    // Slot migration with a key in the slot.
    let t2 = Instant::now();
    let slot_b = slot_of("{b}");
    let from = cluster.node_of_slot(slot_b);
    let to = *cluster
        .masters()
        .iter()
        .find(|m| **m != from)
        .expect("another master");
    assert!(must(from, &["SET", "{b}:k", "v"]).is_ok());
    assert!(must(from, &["SET", "{b}:other", "w"]).is_ok());
    let moved_keys = cluster.migrate_slot(slot_b, from, to);
    let migrate_time = t2.elapsed();
    assert_eq!(moved_keys, 2);
    assert_eq!(cluster.node_of_slot(slot_b), to);
    assert_eq!(must(to, &["GET", "{b}:k"]), bulk("v"));
    assert_eq!(must(to, &["GET", "{b}:other"]), bulk("w"));
    let moved = command(from, &["GET", "{b}:k"]).unwrap();
    assert_eq!(
        moved.error(),
        Some(format!("MOVED {slot_b} {to}").as_str()),
        "{moved:?}"
    );
    cluster.check_stable().unwrap();
    eprintln!(
        "cluster: start {started:?}, failover {failover_time:?}, migrate {migrate_time:?}, \
         total {:?}",
        t0.elapsed()
    );
}

#[test]
fn proxy_forwards_drops_a_script_reply_and_goes_down() {
    let redis = RedisServer::start();
    let proxy = DropReplyProxy::start(redis.addr());
    assert_eq!(proxy.url(), format!("redis://{}/", proxy.addr()));
    assert_eq!(proxy.target(), redis.addr());

    // Pass-through, including a large value crossing several reads.
    assert!(must(proxy.addr(), &["SET", "k", "5"]).is_ok());
    let big = "x".repeat(200_000);
    assert!(must(proxy.addr(), &["SET", "big", &big]).is_ok());
    assert_eq!(must(proxy.addr(), &["GET", "big"]), bulk(&big));
    // Unarmed, a script call passes too.
    let script = "return redis.call('INCR', KEYS[1])";
    assert_eq!(
        must(proxy.addr(), &["EVAL", script, "1", "k"]),
        RespValue::Integer(6)
    );
    assert_eq!(proxy.dropped(), 0);

    // Armed: the EVAL runs in Redis but its reply never arrives.
    let mut conn = RespConn::connect(proxy.addr()).unwrap();
    assert_eq!(conn.call(&["GET", "k"]).unwrap(), bulk("6"));
    proxy.arm_drop_next_script_reply();
    let t = Instant::now();
    let lost = conn.call(&["eval", script, "1", "k"]);
    let err = lost.expect_err("the reply should have been dropped");
    assert!(!err.contains("timed out"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(proxy.dropped(), 1);
    assert!(!proxy.is_armed());
    assert_eq!(redis.must(&["GET", "k"]), bulk("7"));

    // EVALSHA of an unknown script: -NOSCRIPT passes, the shot stays armed
    // for the call that does run.
    let mut conn = RespConn::connect(proxy.addr()).unwrap();
    proxy.arm_drop_next_script_reply();
    let unknown = "0123456789012345678901234567890123456789";
    let noscript = conn.call(&["EVALSHA", unknown, "1", "k"]).unwrap();
    assert!(
        noscript.error().is_some_and(|e| e.starts_with("NOSCRIPT")),
        "{noscript:?}"
    );
    assert!(proxy.is_armed());
    let sha = conn
        .call(&["SCRIPT", "LOAD", script])
        .unwrap()
        .text()
        .unwrap();
    let lost = conn.call(&["EVALSHA", &sha, "1", "k"]);
    assert!(lost.is_err_and(|e| !e.contains("timed out")));
    assert_eq!(proxy.dropped(), 2);
    assert_eq!(redis.must(&["GET", "k"]), bulk("8"));
    // Other connections were not touched; the next call passes again.
    assert_eq!(
        must(proxy.addr(), &["EVALSHA", &sha, "1", "k"]),
        RespValue::Integer(9)
    );

    // Down: open connections are cut, new ones fail; up again: they work.
    let mut open = RespConn::connect(proxy.addr()).unwrap();
    assert_eq!(
        open.call(&["PING"]).unwrap(),
        RespValue::Simple("PONG".into())
    );
    proxy.set_down(true);
    assert!(open.call(&["PING"]).is_err());
    assert!(command(proxy.addr(), &["PING"]).is_err());
    assert_eq!(proxy.open_connections(), 0);
    assert!(redis.is_running());
    proxy.set_down(false);
    assert_eq!(
        must(proxy.addr(), &["GET", "k"]),
        bulk("9"),
        "proxy up again"
    );
}
