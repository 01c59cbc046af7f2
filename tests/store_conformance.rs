//! The store conformance suite (src/store/conformance.rs) against the
//! embedded store, plus what only a file-backed store must do: keep
//! everything across a reopen.

use std::sync::Arc;

use luot::store::{Applied, BatchId, EmbeddedStore, Increment, PeriodKey, Scope, SiteBatch, Store};

async fn fresh_embedded() -> EmbeddedStore {
    // The directory outlives the test process's use of it; the OS cleans
    // /tmp, and each test gets its own.
    let dir = tempfile::tempdir().expect("temp dir").keep();
    EmbeddedStore::open(&dir).expect("open store")
}

mod embedded {
    use super::fresh_embedded;
    luot::store_conformance_tests!(fresh_embedded());
}

#[tokio::test]
async fn embedded_store_keeps_counters_watermarks_and_secrets_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let batch = SiteBatch {
        site: Arc::from("demo"),
        id: BatchId {
            producer: Arc::from("p1"),
            seq: 3,
        },
        increments: vec![Increment {
            scope: Scope::Site,
            period: PeriodKey::Total,
            hits: 42,
            expires_at: None,
        }],
        visitors: Vec::new(),
    };
    {
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.apply(&batch).await.unwrap();
        store.secret("salt:x", [9; 32]).await.unwrap();
    }
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let r = store
        .read("demo", &Scope::Site, &[PeriodKey::Total], "p1")
        .await
        .unwrap();
    assert_eq!((r.values[0], r.watermark), (42, 3));
    assert_eq!(store.apply(&batch).await.unwrap(), Applied::Duplicate);
    assert_eq!(store.secret("salt:x", [1; 32]).await.unwrap(), [9; 32]);
}
