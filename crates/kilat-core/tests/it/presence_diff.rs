//! Join/leave batched into `presence_diff` pushes under random concurrent joins and leaves:
//! every subscriber that stays sees every change after its own join, once, in the order each
//! member made them, all subscribers see the same sequence, and the diffs add up to the
//! presence list.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kilat_core::{Node, NodeConfig};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::support::*;

const MEMBERS: usize = 5;
const WATCHERS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// Subscribe member `n` (connecting it first if it has no session).
    Join(usize),
    /// Unsubscribe member `n`.
    Leave(usize),
    /// Close member `n`'s session (a leave when subscribed).
    Disconnect(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..MEMBERS).prop_map(Op::Join),
        2 => (0..MEMBERS).prop_map(Op::Leave),
        1 => (0..MEMBERS).prop_map(Op::Disconnect),
    ]
}

/// A step: ops run concurrently on distinct members, then virtual time moves on by `pause`
/// milliseconds (across window ends or within a window).
fn step() -> impl Strategy<Value = (Vec<Op>, u64)> {
    (prop::collection::vec(op(), 1..4), 0u64..250)
}

struct Member {
    client: Option<Client>,
    subscribed: bool,
}

async fn run(node: Node, steps: Vec<(Vec<Op>, u64)>) -> Result<(), TestCaseError> {
    let mut watchers = Vec::new();
    let mut last_watcher = String::new();
    for _ in 0..WATCHERS {
        let mut w = Client::new(&node);
        w.connect().await;
        w.call("subscribe", json!({"channel": "room"})).await;
        last_watcher = w.session().client().expect("connected").client.clone();
        watchers.push(w);
    }
    // Every watcher is subscribed once the last one's join is out: compare what follows it.
    let after_watchers = |seq: Vec<(String, bool)>| -> Vec<(String, bool)> {
        let at = seq
            .iter()
            .position(|(client, _)| *client == last_watcher)
            .map_or(seq.len(), |at| at + 1);
        seq[at..].to_vec()
    };
    let mut expected: Vec<(String, bool)> = Vec::new();
    let mut members: Vec<Member> = (0..MEMBERS)
        .map(|_| Member {
            client: None,
            subscribed: false,
        })
        .collect();
    for (ops, pause) in steps {
        // One op per member per step; the rest of the step's ops run concurrently.
        let mut seen = BTreeSet::new();
        let ops: Vec<Op> = ops
            .into_iter()
            .filter(|op| {
                let (Op::Join(n) | Op::Leave(n) | Op::Disconnect(n)) = op;
                seen.insert(*n)
            })
            .collect();
        let mut futures = Vec::new();
        // Split the members so each op owns its member mutably.
        let mut slots: Vec<Option<&mut Member>> = members.iter_mut().map(Some).collect();
        for op in ops {
            let (Op::Join(n) | Op::Leave(n) | Op::Disconnect(n)) = op;
            let member = slots[n].take().expect("one op per member");
            let node = node.clone();
            futures.push(async move {
                match op {
                    Op::Join(_) if !member.subscribed => {
                        let client = member.client.get_or_insert_with(|| Client::new(&node));
                        if client.session().client().is_none() {
                            client.connect().await;
                        }
                        client.call("subscribe", json!({"channel": "room"})).await;
                        member.subscribed = true;
                        let id = client.session().client().expect("connected").client.clone();
                        Some((id, true))
                    }
                    Op::Leave(_) if member.subscribed => {
                        let client = member.client.as_mut().expect("subscribed has a client");
                        client.call("unsubscribe", json!({"channel": "room"})).await;
                        member.subscribed = false;
                        let id = client.session().client().expect("connected").client.clone();
                        Some((id, false))
                    }
                    Op::Disconnect(_) if member.client.is_some() => {
                        let mut client = member.client.take().expect("checked");
                        let id = client
                            .session()
                            .client()
                            .map(|c| c.client.clone())
                            .unwrap_or_default();
                        client.close().await;
                        let was = std::mem::replace(&mut member.subscribed, false);
                        was.then_some((id, false))
                    }
                    _ => None,
                }
            });
        }
        // Each member's own changes are ordered; members' changes race one another, so the
        // expected order per member is what counts (checked below).
        for change in futures_util::future::join_all(futures)
            .await
            .into_iter()
            .flatten()
        {
            expected.push(change);
        }
        tokio::time::advance(Duration::from_millis(pause)).await;
    }
    let total = expected.len();
    let mut sequences = Vec::new();
    for w in &mut watchers {
        let frames = w
            .frames_until(|f| after_watchers(presence_changes(f, "room")).len() >= total)
            .await;
        let diffs = frames
            .iter()
            .filter(|f| f["push"]["presence_diff"].is_object())
            .count();
        prop_assert!(
            frames
                .iter()
                .all(|f| f["push"].get("join").is_none() && f["push"].get("leave").is_none()),
            "only diffs when presence_diff_ms is set"
        );
        prop_assert!(diffs <= total + WATCHERS, "never more diffs than changes");
        sequences.push(after_watchers(presence_changes(&frames, "room")));
    }
    // Complete and once: exactly the changes made, no more.
    let per_member = |seq: &[(String, bool)]| {
        let mut by: HashMap<String, Vec<bool>> = HashMap::new();
        for (client, join) in seq {
            by.entry(client.clone()).or_default().push(*join);
        }
        by
    };
    let want = per_member(&expected);
    for seq in &sequences {
        prop_assert_eq!(seq.len(), total, "every change once: {:?}", seq);
        // In order for each member.
        prop_assert_eq!(&per_member(seq), &want);
        // Every watcher sees the same order.
        prop_assert_eq!(seq, &sequences[0]);
    }
    // The diffs add up to the presence list.
    let mut present: BTreeSet<String> = watchers
        .iter_mut()
        .map(|w| w.session().client().expect("connected").client.clone())
        .collect();
    for (client, join) in &sequences[0] {
        if *join {
            prop_assert!(present.insert(client.clone()), "joined twice: {}", client);
        } else {
            prop_assert!(present.remove(client), "left without joining: {}", client);
        }
    }
    let list: Value = watchers[0]
        .call("presence", json!({"channel": "room"}))
        .await;
    let listed: BTreeSet<String> = list["presence"]["clients"]
        .as_object()
        .expect("clients")
        .keys()
        .cloned()
        .collect();
    prop_assert_eq!(listed, present);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn diffs_are_complete_ordered_and_shared(steps in prop::collection::vec(step(), 1..25)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime");
        runtime.block_on(run(Node::new(NodeConfig::dev()), steps))?;
    }
}
