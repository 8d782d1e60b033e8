//! Token and user revocation on the node: record, close the sessions concerned with 3505, and
//! the check connect and refresh make (docs/security.md, "Revoking tokens").

use kilat_protocol::Disconnect;

use super::Node;
use crate::revoke::{Revocation, Revoked, token_hash, unix_now};

impl Node {
    /// Records `revocation` and closes this node's sessions it covers with 3505 (token
    /// revoked). Returns whether it was new here (not known with that expiry or a later one,
    /// not expired) and how many sessions it closed. The server spreads it to the other nodes.
    pub fn revoke(&self, revocation: &Revocation) -> (bool, usize) {
        if !self.inner.revocations.insert(revocation, unix_now()) {
            return (false, 0);
        }
        let sessions = &self.inner.sessions;
        let closed = match &revocation.target {
            Revoked::User(user) => sessions.disconnect(user, None, &Disconnect::TOKEN_REVOKED),
            Revoked::Jti(jti) => {
                sessions.disconnect_token(token_hash(Some(jti)), &Disconnect::TOKEN_REVOKED)
            }
        };
        tracing::info!(
            target = ?revocation.target,
            until = revocation.until,
            closed,
            "revoked"
        );
        (true, closed)
    }

    /// Every revocation still in force, for spreading to nodes that start later.
    pub fn revocations(&self) -> Vec<Revocation> {
        self.inner.revocations.list(unix_now())
    }

    /// Whether connections of `user`, or with token `jti`, are refused now.
    pub(crate) fn is_revoked(&self, user: &str, jti: Option<&str>) -> bool {
        self.inner.revocations.is_revoked(user, jti, unix_now())
    }
}
