//! Publications travel on a connection of their own: a publish is answered while thousands of
//! recovery reads (a reconnect storm's handshakes) are still queued on the command connection,
//! instead of after all of them (a multiplexed connection answers in order, so before this a
//! publish behind a storm's reads exceeded `command_timeout` and failed with 503).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kilat_core::engine::{Broker, HistoryQuery, PublishOptions};
use kilat_engine_redis::RedisEngine;

use crate::support;

const HISTORY: PublishOptions = PublishOptions {
    history_size: 100,
    history_ttl: Duration::from_secs(60),
};

/// Recovery reads queued ahead of the publish.
const READS: usize = 5_000;

#[tokio::test]
async fn a_publish_is_answered_while_thousands_of_recovery_reads_are_still_queued() {
    let Some(redis) = support::redis("a publish is not queued behind recovery reads") else {
        return;
    };
    let mut config = support::config(&redis);
    // Here the reads must not time out: they are the queue, not the subject.
    config.command_timeout = Duration::from_secs(120);
    let engine = Arc::new(RedisEngine::connect(config).await.expect("engine connects"));
    let channel = support::channel("lane");
    for n in 0..10 {
        engine
            .publish(&channel, support::publication(&n.to_string()), HISTORY)
            .await
            .expect("publish the history");
    }
    let everything = || HistoryQuery {
        since: Some(0),
        limit: None,
        reverse: false,
    };
    assert_eq!(
        engine
            .history(&channel, everything())
            .await
            .expect("read")
            .publications
            .len(),
        10
    );

    // A storm's worth of recovery reads, each sent on its task's first poll (this runtime has
    // one thread: once every task has started, every request is queued).
    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..READS {
        let (engine, channel) = (engine.clone(), channel.clone());
        let (started, done) = (started.clone(), done.clone());
        reads.spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            let page = engine.history(&channel, everything()).await;
            done.fetch_add(1, Ordering::SeqCst);
            page.map(|p| p.publications.len())
        });
    }
    while started.load(Ordering::SeqCst) < READS {
        tokio::task::yield_now().await;
    }
    let queued_before = READS - done.load(Ordering::SeqCst);
    let position = engine
        .publish(&channel, support::publication("\"live\""), HISTORY)
        .await
        .expect("the publish is answered")
        .expect("stored");
    let outstanding = READS - done.load(Ordering::SeqCst);
    assert_eq!(position.offset, 11);
    // On one shared connection the publish waits behind the reads queued before it (in a
    // run before the publish connection: 293 of 5,000 still outstanding); on its own it is
    // answered before most of them.
    assert!(
        outstanding > READS / 2,
        "the publish waited behind the recovery reads: only {outstanding} of {queued_before} still outstanding"
    );
    eprintln!(
        "publish answered with {outstanding} of {queued_before} queued recovery reads still outstanding"
    );
    while let Some(read) = reads.join_next().await {
        let n = read.expect("read task").expect("read");
        assert!(n == 10 || n == 11, "a read saw {n} publications");
    }
    assert_eq!(done.load(Ordering::SeqCst), READS);
}
