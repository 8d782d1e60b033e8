//! [`RedisEngineError`]: everything that can go wrong talking to Redis.

use std::time::Duration;

use kilat_core::engine::EngineError;
use thiserror::Error;

/// Failures of the Redis engine. Trait methods return them wrapped in
/// [`EngineError::Unavailable`] (the hub answers 503 and logs the source).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RedisEngineError {
    /// Redis refused a command, or the connection failed.
    #[error("redis command failed")]
    Redis(#[from] redis::RedisError),
    /// Redis did not answer in time (stuck, overloaded or unreachable).
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The pub/sub connection of this channel's shard is down and reconnecting.
    #[error("pub/sub connection {0} is reconnecting")]
    NotConnected(usize),
    /// A reply or pub/sub message did not have the expected shape.
    #[error("malformed data from redis: {0}")]
    Malformed(&'static str),
    /// A stored publication or client info is not valid JSON.
    #[error("stored JSON does not parse")]
    Json(#[from] serde_json::Error),
    /// The configuration cannot work (e.g. zero pub/sub shards).
    #[error("invalid redis engine configuration: {0}")]
    Config(&'static str),
}

impl From<RedisEngineError> for EngineError {
    fn from(error: RedisEngineError) -> Self {
        EngineError::Unavailable(Box::new(error))
    }
}

/// Runs `fut` for at most `limit`, turning a timeout into [`RedisEngineError::Timeout`].
pub(crate) async fn bounded<T, E>(
    limit: Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, RedisEngineError>
where
    RedisEngineError: From<E>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(result) => result.map_err(RedisEngineError::from),
        Err(_) => Err(RedisEngineError::Timeout(limit)),
    }
}
