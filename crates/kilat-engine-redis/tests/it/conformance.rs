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
