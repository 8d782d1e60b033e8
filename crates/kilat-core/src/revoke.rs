//! Revoked tokens and users: what the server API's `revoke` records (docs/security.md).
//!
//! A revocation names a token by its `jti` or a user, and carries an expiry (Unix seconds,
//! typically the token's `exp`): until then a connect or refresh with that token, or of that
//! user, is refused, and sessions holding it are closed with 3505. Expired entries are dropped
//! on the next insert or listing, so the lists hold only what still matters.
//!
//! Checked at connect and refresh only (never on delivery); an empty list costs one atomic load.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::util::lock;

/// Most entries kept per kind; past it the revocations that expire soonest are dropped first.
pub const MAX_REVOCATIONS: usize = 100_000;

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Revoked {
    /// A token, by its `jti` claim.
    Jti(String),
    /// Every token of a user (the `sub` claim).
    User(String),
}

/// One revocation: what, and until when (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The token or user revoked.
    #[serde(flatten)]
    pub target: Revoked,
    /// Unix seconds after which the revocation no longer applies.
    pub until: u64,
}

/// The node's revocations (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Revocations {
    any: AtomicBool,
    entries: Mutex<HashMap<Revoked, u64>>,
}

/// A token id's hash as the session registry keeps it (0: no id).
pub(crate) fn token_hash(jti: Option<&str>) -> u64 {
    let Some(jti) = jti else { return 0 };
    let mut hasher = DefaultHasher::new();
    jti.hash(&mut hasher);
    hasher.finish().max(1)
}

/// Now, in Unix seconds.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Revocations {
    /// Records `revocation` (keeping the later expiry of a repeat); false when it had already
    /// expired or was known with that expiry or a later one (nothing new).
    pub(crate) fn insert(&self, revocation: &Revocation, now: u64) -> bool {
        if revocation.until <= now {
            return false;
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= MAX_REVOCATIONS {
            entries.retain(|_, until| *until > now);
        }
        if entries.len() >= MAX_REVOCATIONS {
            // Still full of live entries: forget the one that expires first.
            if let Some(first) = entries
                .iter()
                .min_by_key(|(_, until)| **until)
                .map(|(target, _)| target.clone())
            {
                entries.remove(&first);
            }
        }
        let known = entries.entry(revocation.target.clone()).or_insert(0);
        let new = revocation.until > *known;
        *known = (*known).max(revocation.until);
        self.any.store(true, Ordering::Release);
        new
    }

    /// Whether `user` or the token `jti` is revoked at `now`.
    pub(crate) fn is_revoked(&self, user: &str, jti: Option<&str>, now: u64) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let entries = lock(&self.entries);
        let live = |target: Revoked| entries.get(&target).is_some_and(|until| *until > now);
        live(Revoked::User(user.to_owned()))
            || jti.is_some_and(|j| live(Revoked::Jti(j.to_owned())))
    }

    /// Every revocation still in force at `now`.
    pub(crate) fn list(&self, now: u64) -> Vec<Revocation> {
        let mut entries = lock(&self.entries);
        entries.retain(|_, until| *until > now);
        entries
            .iter()
            .map(|(target, until)| Revocation {
                target: target.clone(),
                until: *until,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jti(id: &str, until: u64) -> Revocation {
        Revocation {
            target: Revoked::Jti(id.into()),
            until,
        }
    }

    #[test]
    fn revocations_apply_until_their_expiry() {
        let r = Revocations::default();
        assert!(!r.is_revoked("u", Some("a"), 100));
        assert!(r.insert(&jti("a", 200), 100));
        assert!(
            !r.insert(&jti("a", 150), 100),
            "an earlier expiry adds nothing"
        );
        assert!(r.insert(
            &Revocation {
                target: Revoked::User("bob".into()),
                until: 300
            },
            100
        ));
        assert!(r.is_revoked("u", Some("a"), 199));
        assert!(!r.is_revoked("u", Some("a"), 200), "expired");
        assert!(!r.is_revoked("u", Some("b"), 150));
        assert!(r.is_revoked("bob", None, 299));
        assert!(!r.insert(&jti("old", 50), 100), "already expired");
        assert_eq!(r.list(250).len(), 1, "expired entries are dropped");
    }

    #[test]
    fn token_hashes_are_never_zero_for_an_id() {
        assert_eq!(token_hash(None), 0);
        assert_ne!(token_hash(Some("")), 0);
        assert_ne!(token_hash(Some("a")), token_hash(Some("b")));
    }
}
