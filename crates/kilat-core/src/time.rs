//! Token expiry times: Unix seconds from tokens turned into TTLs and tokio instants.

/// The instant of the Unix time `expires_at` on tokio's clock.
pub(crate) fn instant_from(expires_at: u64) -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(u64::from(ttl_from(expires_at)))
}

/// Seconds from now until the Unix time `expires_at` (0 when past).
pub(crate) fn ttl_from(expires_at: u64) -> u32 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(expires_at.saturating_sub(now)).unwrap_or(u32::MAX)
}
