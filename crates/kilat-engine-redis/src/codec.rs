//! The pub/sub message format.
//!
//! Text, so the Lua script can build it by concatenation without a JSON encoder:
//!
//! - `p<offset>:<epoch>:<publication JSON>`: a publication; offset and epoch are empty
//!   for a channel without history. The JSON has no `offset` (it is the prefix's).
//! - `j<ClientInfo JSON>` / `l<ClientInfo JSON>`: a join / a leave.
//!
//! Epochs are hex strings chosen by this crate, so they never contain `:`.

use kilat_protocol::{ClientInfo, Publication};

use crate::error::RedisEngineError;

/// A decoded pub/sub message.
#[derive(Debug)]
pub(crate) enum Message {
    /// A publication with its offset set, and its stream's epoch (`""` without history).
    Publication {
        publication: Publication,
        epoch: String,
    },
    /// A join (`join = true`) or leave.
    JoinLeave { info: ClientInfo, join: bool },
}

/// The message for a publication without history.
pub(crate) fn encode_unstored(publication_json: &str) -> String {
    format!("p::{publication_json}")
}

/// The message for a join or leave.
pub(crate) fn encode_join_leave(info: &ClientInfo, join: bool) -> Result<String, RedisEngineError> {
    let json = serde_json::to_string(info)?;
    Ok(format!("{}{json}", if join { 'j' } else { 'l' }))
}

/// Decodes a message built by [`encode_unstored`], [`encode_join_leave`] or the publish script.
pub(crate) fn decode(payload: &[u8]) -> Result<Message, RedisEngineError> {
    let text = std::str::from_utf8(payload).map_err(|_| RedisEngineError::Malformed("utf-8"))?;
    let mut chars = text.chars();
    match chars.next() {
        Some('p') => {
            let rest = chars.as_str();
            let (offset, rest) = rest
                .split_once(':')
                .ok_or(RedisEngineError::Malformed("publication offset"))?;
            let (epoch, json) = rest
                .split_once(':')
                .ok_or(RedisEngineError::Malformed("publication epoch"))?;
            let mut publication: Publication = serde_json::from_str(json)?;
            publication.offset = if offset.is_empty() {
                None
            } else {
                Some(
                    offset
                        .parse()
                        .map_err(|_| RedisEngineError::Malformed("publication offset"))?,
                )
            };
            Ok(Message::Publication {
                publication,
                epoch: epoch.to_owned(),
            })
        }
        Some(kind @ ('j' | 'l')) => Ok(Message::JoinLeave {
            info: serde_json::from_str(chars.as_str())?,
            join: kind == 'j',
        }),
        _ => Err(RedisEngineError::Malformed("message kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kilat_protocol::types::raw_json;

    #[test]
    fn publications_and_join_leave_round_trip() {
        let json = r#"{"data":{"a": [1, 2]}}"#;
        match decode(format!("p7:ab12:{json}").as_bytes()).expect("decodes") {
            Message::Publication { publication, epoch } => {
                assert_eq!(publication.offset, Some(7));
                assert_eq!(epoch, "ab12");
                assert_eq!(
                    publication.data.get(),
                    r#"{"a": [1, 2]}"#,
                    "data byte-identical"
                );
            }
            other => panic!("{other:?}"),
        }
        match decode(encode_unstored(json).as_bytes()).expect("decodes") {
            Message::Publication { publication, epoch } => {
                assert_eq!(publication.offset, None);
                assert_eq!(epoch, "");
            }
            other => panic!("{other:?}"),
        }
        let info = ClientInfo {
            client: "c1".into(),
            user: "u".into(),
            info: Some(raw_json("{\"x\":1}").expect("json")),
        };
        for join in [true, false] {
            let encoded = encode_join_leave(&info, join).expect("encodes");
            match decode(encoded.as_bytes()).expect("decodes") {
                Message::JoinLeave { info: got, join: j } => {
                    assert_eq!((got.client.as_str(), j), ("c1", join));
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(decode(b"x").is_err());
        assert!(decode(b"pnot-a-number:e:{\"data\":1}").is_err());
    }
}
