use std::sync::Arc;
use std::time::Duration;

use kilat_core::engine::{Broker, PresenceStore, PublishOptions};
use kilat_engine_redis::{RedisConfig, RedisEngine};

use crate::support::{self, Recorder};

fn config(cluster: &support::TestCluster) -> RedisConfig {
    let mut config = RedisConfig::cluster(cluster.urls());
    config.command_timeout = Duration::from_millis(1000);
    config.connect_timeout = Duration::from_millis(1000);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_passes_the_conformance_suites() {
    let Some(cluster) = support::cluster("redis_cluster_passes_the_conformance_suites") else {
        return;
    };
    let config = config(&cluster);
    kilat_core::testing::broker_conformance(|| {
        let engine = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(RedisEngine::connect(config.clone()))
        })
        .expect("engine connects to the cluster");
        Arc::new(engine) as Arc<dyn Broker>
    })
    .await;
    let engine = RedisEngine::connect(config.clone())
        .await
        .expect("engine connects to the cluster");
    kilat_core::testing::presence_conformance(Arc::new(engine) as Arc<dyn PresenceStore>).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_share_channels_over_sharded_pubsub() {
    let Some(cluster) = support::cluster("cluster_nodes_share_channels_over_sharded_pubsub") else {
        return;
    };
    let a = RedisEngine::connect(config(&cluster)).await.expect("a");
    let b = RedisEngine::connect(config(&cluster)).await.expect("b");
    let seen = Arc::new(Recorder::default());
    b.set_handler(seen.clone());
    let options = PublishOptions {
        history_size: 10,
        history_ttl: Duration::from_secs(60),
    };
    // Enough channels to land on every master.
    let channels: Vec<String> = (0..30)
        .map(|i| support::channel(&format!("c{i}")))
        .collect();
    for ch in &channels {
        b.subscribe(ch).await.expect("ssubscribe");
    }
    for ch in &channels {
        for i in 1..=3 {
            a.publish(ch, support::publication(&i.to_string()), options)
                .await
                .expect("publish");
        }
    }
    for ch in &channels {
        let got = seen.wait_until(ch, |s| s.len() >= 3).await;
        let offsets: Vec<_> = got.iter().filter_map(|s| s.1).collect();
        assert_eq!(offsets, [1, 2, 3], "{ch}: once each, in offset order");
    }
    assert_eq!(b.subscribed_channels(), channels.len());
    for ch in &channels {
        b.unsubscribe(ch).await.expect("sunsubscribe");
    }
    assert_eq!(b.subscribed_channels(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_inboxes_work_on_a_cluster() {
    let Some(cluster) = support::cluster("node_inboxes_work_on_a_cluster") else {
        return;
    };
    let a = RedisEngine::connect(config(&cluster)).await.expect("a");
    let b = RedisEngine::connect(config(&cluster)).await.expect("b");
    support::check_node_inboxes(&a, &b).await;
    assert!(
        b.node_inbox("another").await.is_err(),
        "one inbox per engine on a cluster"
    );
}
