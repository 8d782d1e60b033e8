use kilat_client::{Event, HistoryOptions, StreamPosition, SubscribeOptions};

use crate::support::*;

#[tokio::test]
async fn history_reads_recent_since_and_reverse() {
    let server = TestServer::start().await;
    let (client, _events) = connect(server.url()).await;
    for n in 1..=5 {
        client.publish("log", &n).await.expect("publish");
    }
    let recent = client
        .history(
            "log",
            HistoryOptions {
                limit: Some(3),
                ..HistoryOptions::default()
            },
        )
        .await
        .expect("history");
    assert_eq!(offsets(&recent.publications), [3, 4, 5]);
    assert_eq!(recent.offset, 5);

    let since = client
        .history(
            "log",
            HistoryOptions {
                since: Some(StreamPosition {
                    offset: 2,
                    epoch: recent.epoch.clone(),
                }),
                ..HistoryOptions::default()
            },
        )
        .await
        .expect("history since");
    assert_eq!(offsets(&since.publications), [3, 4, 5]);

    let reverse = client
        .history(
            "log",
            HistoryOptions {
                limit: Some(2),
                reverse: true,
                ..HistoryOptions::default()
            },
        )
        .await
        .expect("reverse history");
    assert_eq!(offsets(&reverse.publications), [5, 4]);
}

#[tokio::test]
async fn subscribe_since_a_position_recovers_what_was_missed() {
    let server = TestServer::start().await;
    let (client, mut events) = connect(server.url()).await;
    for n in 1..=4 {
        client.publish("since", &n).await.expect("publish");
    }
    let epoch = client
        .history(
            "since",
            HistoryOptions {
                limit: Some(0),
                ..HistoryOptions::default()
            },
        )
        .await
        .expect("position")
        .epoch;
    let options = SubscribeOptions {
        since: Some(StreamPosition { offset: 2, epoch }),
        ..SubscribeOptions::default()
    };
    let result = client.subscribe("since", options).await.expect("subscribe");
    assert!(result.recovered);
    let subscribed = next_matching(&mut events, "Subscribed", |e| {
        matches!(e, Event::Subscribed { .. })
    })
    .await;
    assert!(matches!(
        subscribed,
        Event::Subscribed {
            recovered: true,
            recovering: true,
            ..
        }
    ));
    assert_eq!(
        offsets(&publications(&mut events, "since", 2).await),
        [3, 4]
    );
}

#[tokio::test]
async fn presence_lists_subscribers() {
    let server = TestServer::start().await;
    let (a, mut a_events) = connect(server.url()).await;
    let (b, mut b_events) = connect(server.url()).await;
    let a_id = connected(&mut a_events).await;
    let b_id = connected(&mut b_events).await;
    for client in [&a, &b] {
        client
            .subscribe("room", SubscribeOptions::default())
            .await
            .expect("subscribe");
    }
    let presence = a.presence("room").await.expect("presence");
    let mut ids: Vec<_> = presence.clients.keys().cloned().collect();
    ids.sort();
    let mut expected = vec![a_id, b_id];
    expected.sort();
    assert_eq!(ids, expected);
    let stats = b.presence_stats("room").await.expect("stats");
    assert_eq!(stats.num_clients, 2);
}

#[tokio::test]
async fn presence_pages_list_every_member_once_and_presence_merges_them() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..7 {
        let (client, mut events) = connect(server.url()).await;
        ids.push(connected(&mut events).await);
        client
            .subscribe("room", SubscribeOptions::default())
            .await
            .expect("subscribe");
        clients.push((client, events));
    }
    let asker = &clients[0].0;
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = asker
            .presence_page("room", cursor, Some(2))
            .await
            .expect("page");
        pages += 1;
        assert!(page.clients.len() <= 2, "at most the limit");
        seen.extend(page.clients.into_keys());
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 4, "7 members in pages of 2");
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids, "every member once");
    let mut all: Vec<_> = asker
        .presence("room")
        .await
        .expect("presence")
        .clients
        .into_keys()
        .collect();
    all.sort();
    assert_eq!(all, ids);
}

#[tokio::test]
async fn join_and_leave_reach_subscribers_who_asked() {
    let server = TestServer::start().await;
    let (watcher, mut events) = connect(server.url()).await;
    let (visitor, mut visitor_events) = connect(server.url()).await;
    let visitor_id = connected(&mut visitor_events).await;
    watcher
        .subscribe(
            "hall",
            SubscribeOptions {
                join_leave: Some(true),
                ..SubscribeOptions::default()
            },
        )
        .await
        .expect("subscribe");
    visitor
        .subscribe("hall", SubscribeOptions::default())
        .await
        .expect("subscribe");
    let join = next_matching(
        &mut events,
        "a join of the visitor",
        |e| matches!(e, Event::Join { info, .. } if info.client == visitor_id),
    )
    .await;
    assert!(matches!(join, Event::Join { channel, .. } if channel == "hall"));
    visitor.unsubscribe("hall").await.expect("unsubscribe");
    next_matching(
        &mut events,
        "a leave of the visitor",
        |e| matches!(e, Event::Leave { info, .. } if info.client == visitor_id),
    )
    .await;
}
