//! The pub/sub message format.
//!
//! Text, so the Lua script can build it by concatenation without a JSON encoder:
//!
//! - `p<offset>:<epoch>:<stored publication>`: a publication; offset and epoch are empty
//!   for a channel without history.
//!
//! A stored publication (also what the history stream and the latest hash keep) has no
//! `offset` (it is the prefix's, or the stream entry's): a JSON publication is its JSON
//! (`{"data":...}`, so it starts with `{`); a binary one is kept as its bytes, not base64:
//! `b<n>:<n bytes of the publisher's ClientInfo JSON, or null><the raw bytes>`. Redis strings
//! and Lua concatenation are binary-safe.
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
pub(crate) fn encode_unstored(stored: &[u8]) -> Vec<u8> {
    [b"p::".as_slice(), stored].concat()
}

/// A publication as stored and published (without its offset), see the module docs.
pub(crate) fn encode_stored(publication: &Publication) -> Result<Vec<u8>, RedisEngineError> {
    let Some(bytes) = &publication.binary else {
        return Ok(serde_json::to_vec(&Publication {
            offset: None,
            ..publication.clone()
        })?);
    };
    let info = serde_json::to_vec(&publication.info)?;
    let mut out = Vec::with_capacity(16 + info.len() + bytes.len());
    out.push(b'b');
    out.extend_from_slice(info.len().to_string().as_bytes());
    out.push(b':');
    out.extend_from_slice(&info);
    out.extend_from_slice(bytes);
    Ok(out)
}

/// Decodes a publication built by [`encode_stored`] (its `offset` is `None`).
pub(crate) fn decode_stored(stored: &[u8]) -> Result<Publication, RedisEngineError> {
    let Some(rest) = stored.strip_prefix(b"b") else {
        return Ok(serde_json::from_slice(stored)?);
    };
    let (len, rest) = split_at_colon(rest).ok_or(RedisEngineError::Malformed("binary header"))?;
    let len: usize = std::str::from_utf8(len)
        .ok()
        .and_then(|l| l.parse().ok())
        .filter(|&l| l <= rest.len())
        .ok_or(RedisEngineError::Malformed("binary header length"))?;
    let (info, bytes) = rest.split_at(len);
    let mut publication = Publication::bytes(bytes::Bytes::copy_from_slice(bytes));
    publication.info = serde_json::from_slice(info)?;
    Ok(publication)
}

fn split_at_colon(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let at = bytes.iter().position(|&b| b == b':')?;
    Some((&bytes[..at], &bytes[at + 1..]))
}

/// The message for a join or leave.
pub(crate) fn encode_join_leave(info: &ClientInfo, join: bool) -> Result<String, RedisEngineError> {
    let json = serde_json::to_string(info)?;
    Ok(format!("{}{json}", if join { 'j' } else { 'l' }))
}

/// Decodes a message built by [`encode_unstored`], [`encode_join_leave`] or the publish script.
pub(crate) fn decode(payload: &[u8]) -> Result<Message, RedisEngineError> {
    match payload.split_first() {
        Some((b'p', rest)) => {
            let (offset, rest) =
                split_at_colon(rest).ok_or(RedisEngineError::Malformed("publication offset"))?;
            let (epoch, stored) =
                split_at_colon(rest).ok_or(RedisEngineError::Malformed("publication epoch"))?;
            let epoch =
                std::str::from_utf8(epoch).map_err(|_| RedisEngineError::Malformed("utf-8"))?;
            let mut publication = decode_stored(stored)?;
            publication.offset = if offset.is_empty() {
                None
            } else {
                Some(
                    std::str::from_utf8(offset)
                        .ok()
                        .and_then(|o| o.parse().ok())
                        .ok_or(RedisEngineError::Malformed("publication offset"))?,
                )
            };
            Ok(Message::Publication {
                publication,
                epoch: epoch.to_owned(),
            })
        }
        Some((kind @ (b'j' | b'l'), rest)) => Ok(Message::JoinLeave {
            info: serde_json::from_slice(rest)?,
            join: *kind == b'j',
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
        match decode(&encode_unstored(json.as_bytes())).expect("decodes") {
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
        let mut binary = Publication::bytes(bytes::Bytes::from_static(b"\0{p1:e:}\xff\n"));
        binary.info = Some(info.clone());
        let stored = encode_stored(&binary).expect("encodes");
        assert!(
            stored.ends_with(b"\0{p1:e:}\xff\n"),
            "kept as bytes, not base64"
        );
        match decode(&[b"p9:e1:".as_slice(), &stored].concat()).expect("decodes") {
            Message::Publication { publication, epoch } => {
                assert_eq!((publication.offset, epoch.as_str()), (Some(9), "e1"));
                assert_eq!(publication.binary.as_deref(), Some(&b"\0{p1:e:}\xff\n"[..]));
                assert_eq!(publication.info.map(|i| i.client), Some("c1".to_owned()));
            }
            other => panic!("{other:?}"),
        }
        for bad in [&b"b"[..], b"b9:null", b"bx:null", b"b4:nul"] {
            assert!(decode_stored(bad).is_err(), "{bad:?}");
        }
        assert!(decode(b"x").is_err());
        assert!(decode(b"pnot-a-number:e:{\"data\":1}").is_err());
    }
}
