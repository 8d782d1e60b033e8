//! Applying the fossil deltas of `delta: "fossil"` subscriptions (docs/protocol.md, "Delta
//! compression"), so the application only ever sees full payloads.
//!
//! Per channel the client keeps the text of the last payload it received in the delta form: a
//! `delta: false` publication replaces it, a `delta: true` one is applied to it, a plain one
//! (a repair, a conflation window's end) forgets it.

use std::collections::HashMap;

use kilat_protocol::Publication;
use kilat_protocol::delta::{DeltaError, apply};
use kilat_protocol::push::decode_delta_fields;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Largest payload a delta may produce: the server refuses publications far below this, so a
/// delta claiming more is broken or hostile.
const MAX_PAYLOAD: usize = 64 << 20;

/// Why a publication in the delta form could not be turned into a payload.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeltaFailure {
    /// A delta arrived with no base to apply it to.
    #[error("a delta without a previous payload")]
    NoBase,
    /// The delta is malformed or does not match the base.
    #[error(transparent)]
    Delta(#[from] DeltaError),
    /// The frame or the reconstructed payload is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The reconstructed payload is not UTF-8.
    #[error("the payload is not UTF-8")]
    Utf8,
}

/// The base payload of each channel with a delta subscription.
#[derive(Debug, Default)]
pub(crate) struct Bases(HashMap<String, String>);

impl Bases {
    /// Turns `publication` (decoded from `frame`, a `pub` push for `channel`) into its full
    /// payload when it came in the delta form. Cheap for plain frames: only frames that
    /// mention `"delta"` are looked at again.
    pub(crate) fn resolve(
        &mut self,
        channel: &str,
        frame: &[u8],
        publication: &mut Publication,
    ) -> Result<(), DeltaFailure> {
        if publication.binary.is_some() {
            // Binary publications always come in full and are no base for a delta.
            self.0.remove(channel);
            return Ok(());
        }
        if !self.0.contains_key(channel) && !contains(frame, b"\"delta\"") {
            return Ok(());
        }
        #[derive(Deserialize)]
        struct Outer<'a> {
            #[serde(borrow)]
            push: Inner<'a>,
        }
        #[derive(Deserialize)]
        struct Inner<'a> {
            #[serde(borrow, rename = "pub")]
            publication: &'a RawValue,
        }
        let outer: Outer<'_> = serde_json::from_slice(frame)?;
        let text = match decode_delta_fields(outer.push.publication.get())? {
            None => {
                self.0.remove(channel);
                return Ok(());
            }
            Some((text, false)) => text,
            Some((delta, true)) => {
                let base = self.0.get(channel).ok_or(DeltaFailure::NoBase)?;
                let out = apply(base.as_bytes(), delta.as_bytes(), MAX_PAYLOAD)?;
                String::from_utf8(out).map_err(|_| DeltaFailure::Utf8)?
            }
        };
        publication.data = RawValue::from_string(text.clone())?;
        self.0.insert(channel.to_owned(), text);
        Ok(())
    }

    /// Forgets `channel`'s base (unsubscribed, or subscribing again).
    pub(crate) fn forget(&mut self, channel: &str) {
        self.0.remove(channel);
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(data: &str, delta: Option<bool>) -> String {
        let data = serde_json::to_string(data).expect("string");
        match delta {
            Some(delta) => {
                format!(r#"{{"push":{{"channel":"c","pub":{{"data":{data},"delta":{delta}}}}}}}"#)
            }
            None => format!(r#"{{"push":{{"channel":"c","pub":{{"data":{data}}}}}}}"#),
        }
    }

    fn resolve(bases: &mut Bases, frame: &str) -> Result<String, DeltaFailure> {
        let decoded = kilat_protocol::ServerFrame::decode(frame.as_bytes()).expect("frame");
        let kilat_protocol::ServerFrame::Push(push) = decoded else {
            panic!("a push")
        };
        let kilat_protocol::PushBody::Pub(mut publication) = push.body else {
            panic!("a pub")
        };
        bases.resolve("c", frame.as_bytes(), &mut publication)?;
        Ok(publication.data.get().to_owned())
    }

    #[test]
    fn full_then_delta_then_plain() {
        let mut bases = Bases::default();
        let v1 = r#"{"title":"Report","revision":8}"#;
        let v2 = r#"{"title":"Report","revision":9}"#;
        assert_eq!(
            resolve(&mut bases, &frame(v1, Some(false))).expect("full"),
            v1
        );
        let delta = String::from_utf8(kilat_protocol::delta::encode(v1.as_bytes(), v2.as_bytes()))
            .expect("utf8");
        assert_eq!(
            resolve(&mut bases, &frame(&delta, Some(true))).expect("delta"),
            v2
        );
        // A plain publication (raw JSON data) forgets the base: a delta after it fails.
        let plain = r#"{"push":{"channel":"c","pub":{"data":{"a":1}}}}"#;
        assert_eq!(resolve(&mut bases, plain).expect("plain"), r#"{"a":1}"#);
        assert!(matches!(
            resolve(&mut bases, &frame(&delta, Some(true))),
            Err(DeltaFailure::NoBase)
        ));
    }

    #[test]
    fn a_corrupt_delta_is_an_error() {
        let mut bases = Bases::default();
        resolve(&mut bases, &frame("{}", Some(false))).expect("full");
        assert!(matches!(
            resolve(&mut bases, &frame("9\n9@0,0;", Some(true))),
            Err(DeltaFailure::Delta(_))
        ));
    }
}
