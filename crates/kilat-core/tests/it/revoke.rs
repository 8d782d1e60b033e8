//! Revocation by token id (`jti`) and by user: open sessions closed with 3505, connects and
//! refreshes refused until the revocation expires.

use std::sync::Arc;

use kilat_core::engine::BoxFuture;
use kilat_core::revoke::{Revocation, Revoked};
use kilat_core::{Authenticator, Credentials, Node, NodeConfig};
use kilat_protocol::{ClientError, ErrorCode};
use serde_json::json;

use crate::support::*;

/// Tokens are `user|jti` in clear text.
#[derive(Debug)]
struct WithId;

impl Authenticator for WithId {
    fn verify_connect<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>> {
        Box::pin(async move {
            let (user, jti) = token.split_once('|').unwrap_or((token, ""));
            Ok(Credentials {
                user: user.to_owned(),
                token_id: (!jti.is_empty()).then(|| jti.to_owned()),
                ..Credentials::default()
            })
        })
    }

    fn verify_subscribe<'a>(
        &'a self,
        _token: &'a str,
        _user: &'a str,
        _channel: &'a str,
    ) -> BoxFuture<'a, Result<Credentials, ClientError>> {
        Box::pin(async { Err(ClientError::new(ErrorCode::UNAUTHORIZED, "no")) })
    }
}

fn node() -> Node {
    let node = Node::new(NodeConfig::default());
    node.set_authenticator(Arc::new(WithId));
    node
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

async fn connected(node: &Node, token: &str) -> Client {
    let mut c = Client::new(node);
    let reply = c.call("connect", json!({ "token": token })).await;
    assert!(reply["connect"].is_object(), "{reply}");
    c
}

async fn refused(node: &Node, token: &str) {
    let mut c = Client::new(node);
    let text = json!({"id": 1, "connect": {"token": token}}).to_string();
    let err = c.send_raw(&text).await.expect_err("refused");
    assert_eq!(err.code, 3505, "{err}");
    assert!(!err.reconnect);
    let frames = c.frames();
    assert_eq!(error_code(&frames[0]), Some(401));
    assert_eq!(frames[0]["error"]["message"], json!("token revoked"));
}

#[tokio::test]
async fn a_revoked_jti_closes_its_sessions_and_refuses_new_connects() {
    let node = node();
    let a = connected(&node, "alice|t1").await;
    let b = connected(&node, "alice|t2").await;
    let c = connected(&node, "bob|t1x").await;
    let until = unix_now() + 60;
    let (new, closed) = node.revoke(&Revocation {
        target: Revoked::Jti("t1".into()),
        until,
    });
    assert!(new);
    assert_eq!(closed, 1);
    assert_eq!(a.close_reason().map(|d| d.code), Some(3505));
    assert_eq!(
        b.close_reason(),
        None,
        "another token of the same user stays"
    );
    assert_eq!(c.close_reason(), None);
    refused(&node, "alice|t1").await;
    connected(&node, "alice|t3").await;
    // Repeating it adds nothing and closes nothing.
    assert_eq!(
        node.revoke(&Revocation {
            target: Revoked::Jti("t1".into()),
            until,
        }),
        (false, 0)
    );
    // A revocation that has already expired is not recorded.
    let (new, _) = node.revoke(&Revocation {
        target: Revoked::Jti("t9".into()),
        until: unix_now() - 1,
    });
    assert!(!new);
    connected(&node, "carol|t9").await;
    assert_eq!(node.revocations().len(), 1);
}

#[tokio::test]
async fn a_revoked_user_loses_every_session_and_cannot_connect_or_refresh() {
    let node = node();
    let a = connected(&node, "mallory|x1").await;
    let b = connected(&node, "mallory").await;
    let mut keep = connected(&node, "alice|y1").await;
    let (_, closed) = node.revoke(&Revocation {
        target: Revoked::User("mallory".into()),
        until: unix_now() + 60,
    });
    assert_eq!(closed, 2);
    assert_eq!(a.close_reason().map(|d| d.code), Some(3505));
    assert_eq!(b.close_reason().map(|d| d.code), Some(3505));
    refused(&node, "mallory|x2").await;
    // A refresh to a revoked token is refused; the session keeps its current token.
    node.revoke(&Revocation {
        target: Revoked::Jti("y2".into()),
        until: unix_now() + 60,
    });
    let reply = keep.call("refresh", json!({"token": "alice|y2"})).await;
    assert_eq!(error_code(&reply), Some(401), "{reply}");
    assert_eq!(reply["error"]["message"], json!("token revoked"));
    let reply = keep.call("refresh", json!({"token": "alice|y3"})).await;
    assert!(reply["refresh"].is_object(), "{reply}");
    assert_eq!(keep.close_reason(), None);
}
