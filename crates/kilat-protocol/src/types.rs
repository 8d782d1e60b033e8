//! Values shared by commands, replies and pushes: publications, client info, stream positions.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::ser::SerializeStruct as _;
use serde::{Deserialize, Serialize, Serializer};
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

/// A message in a channel: `{"data", "offset"?, "info"?}`, or for a binary publication
/// `{"b64data", "offset"?, "info"?}` (the bytes as standard base64 in JSON; the MessagePack
/// transcoder turns `b64data` into a `bin` `data`).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "WirePublication")]
pub struct Publication {
    /// The application payload, any JSON value, kept raw; `null` (and not sent) for a binary
    /// publication.
    pub data: RawJson,
    /// The payload of a binary publication: its raw bytes, kept as bytes everywhere (history
    /// on both engines included) and base64-encoded only when a JSON frame is written.
    pub binary: Option<Bytes>,
    /// Position in the channel's stream (present when the channel keeps history).
    pub offset: Option<u64>,
    /// The publishing client, for client-side publishes.
    pub info: Option<ClientInfo>,
}

/// The JSON `null` that stands in `data` of a binary publication.
pub fn null_json() -> RawJson {
    RawValue::from_string("null".to_owned()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

/// Decodes a `b64data` value (standard base64 with padding, as the protocol sends it).
///
/// # Errors
/// When `text` is not valid standard base64.
pub fn decode_b64data(text: &str) -> Result<Bytes, base64::DecodeError> {
    BASE64.decode(text).map(Bytes::from)
}

/// Encodes bytes as a `b64data` value (standard base64 with padding).
pub fn encode_b64data(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// A publication as it travels: exactly one of `data` and `b64data`.
#[derive(Deserialize)]
struct WirePublication {
    #[serde(default)]
    data: Option<RawJson>,
    #[serde(default)]
    b64data: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    info: Option<ClientInfo>,
}

impl TryFrom<WirePublication> for Publication {
    type Error = String;

    fn try_from(wire: WirePublication) -> Result<Self, String> {
        let (data, binary) = match (wire.data, wire.b64data) {
            (Some(data), None) => (data, None),
            (None, Some(b64)) => {
                let bytes = decode_b64data(&b64).map_err(|e| format!("invalid b64data: {e}"))?;
                (null_json(), Some(bytes))
            }
            (None, None) => return Err("a publication needs data or b64data".to_owned()),
            (Some(_), Some(_)) => {
                return Err("a publication has data or b64data, not both".to_owned());
            }
        };
        Ok(Publication {
            data,
            binary,
            offset: wire.offset,
            info: wire.info,
        })
    }
}

/// Writes bytes as a base64 JSON string without an intermediate `String`.
struct Base64Str<'a>(&'a [u8]);

impl Serialize for Base64Str<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(self.0, &BASE64))
    }
}

impl Serialize for Publication {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = 1 + usize::from(self.offset.is_some()) + usize::from(self.info.is_some());
        let mut st = s.serialize_struct("Publication", len)?;
        match &self.binary {
            Some(bytes) => st.serialize_field("b64data", &Base64Str(bytes))?,
            None => st.serialize_field("data", &self.data)?,
        }
        if let Some(offset) = self.offset {
            st.serialize_field("offset", &offset)?;
        }
        if let Some(info) = &self.info {
            st.serialize_field("info", info)?;
        }
        st.end()
    }
}

impl Publication {
    /// A JSON publication of `data`, without offset or publisher.
    pub fn json(data: RawJson) -> Self {
        Publication {
            data,
            binary: None,
            offset: None,
            info: None,
        }
    }

    /// A binary publication of `bytes`, without offset or publisher.
    pub fn bytes(bytes: Bytes) -> Self {
        Publication {
            data: null_json(),
            binary: Some(bytes),
            offset: None,
            info: None,
        }
    }

    /// A binary publication's bytes as its `b64data` text (standard base64); `None` for JSON.
    pub fn b64data(&self) -> Option<String> {
        self.binary.as_deref().map(encode_b64data)
    }

    /// The payload's size as the publication size limit counts it: the JSON text, or the
    /// decoded bytes of a binary publication.
    pub fn payload_len(&self) -> usize {
        self.binary
            .as_ref()
            .map_or_else(|| self.data.get().len(), Bytes::len)
    }

    /// About how many bytes this publication takes in a JSON frame (its payload, its publisher's
    /// info and the fixed fields), for bounding replies without encoding them twice.
    pub fn encoded_len_estimate(&self) -> usize {
        const FIXED: usize = 64;
        let info = self.info.as_ref().map_or(0, |info| {
            info.client.len() + info.user.len() + info.info.as_ref().map_or(0, |i| i.get().len())
        });
        let payload = match &self.binary {
            Some(bytes) => bytes.len().div_ceil(3) * 4,
            None => self.data.get().len(),
        };
        FIXED + payload + info
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_publication_travels_as_b64data_and_back() {
        let mut p = Publication::bytes(Bytes::from_static(&[0x1a, 0x45, 0xdf, 0xa3, 0, 0xff]));
        p.offset = Some(4);
        let json = serde_json::to_string(&p).expect("encodes");
        assert_eq!(json, r#"{"b64data":"GkXfowD/","offset":4}"#);
        let back: Publication = serde_json::from_str(&json).expect("decodes");
        assert_eq!(
            back.binary.as_deref(),
            Some(&[0x1a, 0x45, 0xdf, 0xa3, 0, 0xff][..])
        );
        assert_eq!((back.offset, back.payload_len()), (Some(4), 6));
        let p: Publication = serde_json::from_str(r#"{"data":{"a": 1}}"#).expect("json");
        assert_eq!((p.data.get(), p.binary.is_none()), (r#"{"a": 1}"#, true));
        assert_eq!(
            serde_json::to_string(&p).expect("encodes"),
            r#"{"data":{"a": 1}}"#
        );
        for bad in [
            r#"{"b64data":"@@"}"#,
            r#"{"offset":1}"#,
            r#"{"data":1,"b64data":""}"#,
        ] {
            assert!(serde_json::from_str::<Publication>(bad).is_err(), "{bad}");
        }
    }
}
