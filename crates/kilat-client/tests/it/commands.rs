//! Commands with acknowledgement with the Rust client as the device: acks reach the sender, and
//! a command sent while the device's connection is cut runs once after the reconnect.

use kilat_client::commands::{Ack, CommandReceiver, acknowledge};
use kilat_client::{Client, Event, Events, SubscribeOptions};
use serde_json::{Value, json};

use crate::support::*;

/// Runs the device loop until `n` commands ran; returns their names.
async fn run_device(
    device: &Client,
    events: &mut Events,
    receiver: &mut CommandReceiver,
    n: usize,
) -> Vec<String> {
    let mut ran = Vec::new();
    while ran.len() < n {
        let event = next_matching(events, "a command", |e| {
            matches!(e, Event::Publication { .. })
        })
        .await;
        let Event::Publication {
            channel,
            publication,
        } = event
        else {
            continue;
        };
        let Some(command) = receiver.accept(&publication.data) else {
            continue;
        };
        acknowledge(device, &channel, &command.id, &Ack::Delivered)
            .await
            .expect("delivered ack");
        let result = json!({"relay": command.args["on"]});
        acknowledge(device, &channel, &command.id, &Ack::Done(result))
            .await
            .expect("done ack");
        ran.push(command.name);
    }
    ran
}

/// The acks the sender saw for command `id`, waiting for `done`.
async fn acks_until_done(events: &mut Events, id: &str) -> Vec<Value> {
    let mut acks = Vec::new();
    loop {
        let event =
            next_matching(events, "an ack", |e| matches!(e, Event::Publication { .. })).await;
        let Event::Publication { publication, .. } = event else {
            continue;
        };
        let data: Value = serde_json::from_str(publication.data.get()).expect("json");
        if data["ack"]["id"] == json!(id) {
            acks.push(data["ack"].clone());
            if data["ack"]["status"] == json!("done") {
                return acks;
            }
        }
    }
}

#[tokio::test]
async fn a_device_acks_commands_and_runs_one_sent_while_offline_once_after_reconnecting() {
    let server = TestServer::start().await;
    let proxy = Proxy::start(server.addr).await;
    let (device, mut device_events) = connect(proxy.url()).await;
    let (sender, mut sender_events) = connect(server.url()).await;
    for client in [&device, &sender] {
        client
            .subscribe("device:d1", SubscribeOptions::recoverable())
            .await
            .expect("subscribe");
    }
    let mut receiver = CommandReceiver::new();
    let command =
        |id: &str, on: bool| json!({"cmd": {"id": id, "name": "relay", "args": {"on": on}}});

    sender
        .publish("device:d1", &command("c1", true))
        .await
        .expect("send");
    assert_eq!(
        run_device(&device, &mut device_events, &mut receiver, 1).await,
        ["relay"]
    );
    let acks = acks_until_done(&mut sender_events, "c1").await;
    assert_eq!(acks[0]["status"], json!("delivered"));
    assert_eq!(
        acks[1],
        json!({"id": "c1", "status": "done", "result": {"relay": true}})
    );

    // Offline: the command waits in the channel's history.
    proxy.cut();
    next_matching(&mut device_events, "the loss", |e| {
        matches!(e, Event::Disconnected { .. })
    })
    .await;
    sender
        .publish("device:d1", &command("c2", false))
        .await
        .expect("send while offline");
    // The sender retries too (same id): still one execution.
    sender
        .publish("device:d1", &command("c2", false))
        .await
        .expect("resend");
    proxy.restore();
    assert_eq!(
        run_device(&device, &mut device_events, &mut receiver, 1).await,
        ["relay"]
    );
    let acks = acks_until_done(&mut sender_events, "c2").await;
    assert_eq!(
        acks.last().expect("done")["result"],
        json!({"relay": false})
    );

    // Nothing else runs: a new command is the next one the device executes.
    sender
        .publish("device:d1", &command("c3", true))
        .await
        .expect("send");
    let mut next = Vec::new();
    next_matching(&mut device_events, "c3", |e| {
        if let Event::Publication { publication, .. } = e
            && let Some(command) = receiver.accept(&publication.data)
        {
            next.push(command.id);
        }
        !next.is_empty()
    })
    .await;
    assert_eq!(next, ["c3"], "c2's resend and c1 never ran again");
}
