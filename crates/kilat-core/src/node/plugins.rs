//! [`Plugins`]: the node's slots for the application's pluggable parts, token verification
//! ([`Authenticator`]) and backend hooks ([`Backend`]), installed after the node is built.

use std::sync::{Arc, PoisonError, RwLock};

use crate::auth::Authenticator;
use crate::proxy::{Backend, Hook};

/// The installed authenticator and backend. Read on every connect, subscribe and hooked
/// command; written once at start-up, hence `RwLock`.
#[derive(Default)]
pub(super) struct Plugins {
    /// Token verification; `None` until configured (then tokens are refused with 401).
    authenticator: RwLock<Option<Arc<dyn Authenticator>>>,
    /// The application's backend hooks; `None` until configured (then nothing is proxied).
    backend: RwLock<Option<Arc<dyn Backend>>>,
}

impl Plugins {
    pub(super) fn set_authenticator(&self, authenticator: Arc<dyn Authenticator>) {
        *self
            .authenticator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(authenticator);
    }

    pub(super) fn authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        self.authenticator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_backend(&self, backend: Arc<dyn Backend>) {
        *self.backend.write().unwrap_or_else(PoisonError::into_inner) = Some(backend);
    }

    pub(super) fn backend(&self) -> Option<Arc<dyn Backend>> {
        self.backend
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The backend, when it handles `hook`.
    pub(super) fn backend_for(&self, hook: Hook) -> Option<Arc<dyn Backend>> {
        self.backend
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|backend| backend.handles(hook))
            .cloned()
    }
}
