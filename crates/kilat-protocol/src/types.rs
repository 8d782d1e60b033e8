//! Values shared by commands, replies and pushes: publications, client info, stream positions.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Raw JSON kept exactly as received, so application data is never parsed or re-encoded.
pub type RawJson = Box<RawValue>;

/// Who a publication, join or leave came from: `{"client", "user", "info"?}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The connection id (a UUID chosen by the server at connect).
    pub client: String,
    /// The user id (`""` for anonymous connections).
    pub user: String,
    /// Connection info attached by the token or the connect handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<RawJson>,
}

/// A message in a channel: `{"data", "offset"?, "info"?}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// The application payload, any JSON value, kept raw.
    pub data: RawJson,
    /// Position in the channel's stream (present when the channel keeps history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// The publishing client, for client-side publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<ClientInfo>,
}

impl Publication {
    /// About how many bytes this publication takes in a JSON frame (its payload, its publisher's
    /// info and the fixed fields), for bounding replies without encoding them twice.
    pub fn encoded_len_estimate(&self) -> usize {
        const FIXED: usize = 64;
        let info = self.info.as_ref().map_or(0, |info| {
            info.client.len() + info.user.len() + info.info.as_ref().map_or(0, |i| i.get().len())
        });
        FIXED + self.data.get().len() + info
    }
}

/// A position in a channel's stream: the last offset seen and the stream's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication at this position (0 before the first one).
    pub offset: u64,
    /// Identifies one life of the stream; it changes whenever the stream is lost.
    pub epoch: String,
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// Parses `text` as raw JSON (a helper for tests, examples and the server API).
///
/// # Errors
/// When `text` is not one JSON value.
pub fn raw_json(text: &str) -> Result<RawJson, serde_json::Error> {
    RawValue::from_string(text.to_owned())
}
