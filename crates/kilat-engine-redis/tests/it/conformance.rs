use std::sync::Arc;

use kilat_core::engine::{Broker, PresenceStore};
use kilat_engine_redis::RedisEngine;

use crate::support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_passes_the_broker_conformance_suite() {
    let Some(redis) = support::redis("redis_engine_passes_the_broker_conformance_suite") else {
        return;
    };
    let config = support::config(&redis);
    // The suite's factory is synchronous; connecting is not.
    kilat_core::testing::broker_conformance(|| {
        let engine = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(RedisEngine::connect(config.clone()))
        })
        .expect("engine connects");
        Arc::new(engine) as Arc<dyn Broker>
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_engine_passes_the_presence_conformance_suite() {
    let Some(redis) = support::redis("redis_engine_passes_the_presence_conformance_suite") else {
        return;
    };
    let engine = support::engine(&redis).await;
    kilat_core::testing::presence_conformance(engine as Arc<dyn PresenceStore>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_holds_with_a_single_pubsub_connection() {
    let Some(redis) = support::redis("conformance_holds_with_a_single_pubsub_connection") else {
        return;
    };
    let mut config = support::config(&redis);
    config.pubsub_shards = 1;
    kilat_core::testing::broker_conformance(|| {
        let engine = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(RedisEngine::connect(config.clone()))
        })
        .expect("engine connects");
        Arc::new(engine) as Arc<dyn Broker>
    })
    .await;
}

/// The conformance suite checks that binary publications come back with their bytes; this
/// checks how Redis keeps them: the raw bytes in the stream entry, no base64 (a third larger).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_publications_are_stored_as_raw_bytes() {
    let Some(redis) = support::redis("binary_publications_are_stored_as_raw_bytes") else {
        return;
    };
    let engine = support::engine(&redis).await;
    let ch = support::channel("binary-raw");
    let bytes: Vec<u8> = (0..=255).collect();
    let mut publication = kilat_protocol::Publication::bytes(bytes.clone().into());
    publication.info = Some(support::info("c1", "u1"));
    let options = kilat_core::engine::PublishOptions {
        history_size: 10,
        history_ttl: std::time::Duration::from_secs(60),
    };
    engine
        .publish(&ch, publication, options)
        .await
        .expect("publish");
    let client = redis::Client::open(redis.url()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    // Each entry: its id and its field/value pairs.
    type Entry = (String, Vec<(String, Vec<u8>)>);
    let entries: Vec<Entry> = redis::cmd("XRANGE")
        .arg(format!("{{kilat:ch:{ch}}}:stream"))
        .arg("-")
        .arg("+")
        .query_async(&mut admin)
        .await
        .expect("XRANGE");
    assert_eq!(entries.len(), 1, "one entry: {entries:?}");
    let (_, stored) = entries[0]
        .1
        .iter()
        .find(|(field, _)| field == "d")
        .expect("the entry's publication field");
    assert!(
        stored.ends_with(&bytes),
        "the stored publication ends with the raw bytes: {stored:?}"
    );
    assert!(
        stored.len() < bytes.len() + 64,
        "no base64 copy beside them ({} bytes stored for {})",
        stored.len(),
        bytes.len()
    );
}
