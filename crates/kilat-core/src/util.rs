//! Small helpers: random identifiers and poison-tolerant locking.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// 64 random-looking bits: std's per-process random hash keys mixed with a counter.
///
/// Good enough for connection ids and stream epochs, which must be unique and unpredictable
/// enough not to collide, not secret. Avoids a dependency on a random number crate.
pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    hasher.finish()
}

/// A new connection id, shaped like a version 4 UUID.
pub(crate) fn new_client_id() -> String {
    let (a, b) = (random_u64(), random_u64());
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    let a = (a & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// A new stream epoch: 16 hex digits.
pub fn new_epoch() -> String {
    format!("{:016x}", random_u64())
}

/// Locks `mutex`, ignoring poisoning: every critical section in this crate leaves its data
/// consistent at each step, so a panic elsewhere must not take the hub down with it.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_look_like_uuids_and_differ() {
        let a = new_client_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, new_client_id());
        assert_ne!(new_epoch(), new_epoch());
    }
}
