//! Publication keys: the value of a namespace's `conflate_key` field in a publication's data
//! (docs/protocol.md, "Per-key conflation and latest values").
//!
//! The key is a top-level field of a JSON object, a string or an integer. It is read without
//! building the object: every other field is skipped, nothing is allocated but the key itself.

use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};

/// Longest key, in bytes.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Why a publication has no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyError {
    /// The data is not a JSON object.
    NotObject,
    /// The object has no such field.
    Missing,
    /// The field is neither a string nor an integer (a float, bool, null, array or object).
    BadType,
    /// The string is longer than [`MAX_KEY_LEN`].
    TooLong,
}

impl KeyError {
    /// The error message for the publisher, naming the field.
    pub(crate) fn message(self, field: &str) -> String {
        let why = match self {
            KeyError::NotObject => "data is not a JSON object",
            KeyError::Missing => "data has no such field",
            KeyError::BadType => "the field is not a string or an integer",
            KeyError::TooLong => "the key is longer than 255 bytes",
        };
        format!(
            "this namespace keys publications by the field \"{field}\" (conflate_key): {why}; \
             publish an object like {{\"{field}\": \"key\", ...}}"
        )
    }
}

/// The key of `data` (raw JSON) under `field`: a string as is, an integer in decimal.
pub(crate) fn publication_key(data: &str, field: &str) -> Result<Box<str>, KeyError> {
    let mut de = serde_json::Deserializer::from_str(data);
    match de.deserialize_any(ObjectVisitor { field }) {
        Ok(found) => found,
        // Not an object (a visitor error) or not JSON at all.
        Err(_) => Err(KeyError::NotObject),
    }
}

struct ObjectVisitor<'f> {
    field: &'f str,
}

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = Result<Box<str>, KeyError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Err(KeyError::Missing);
        while let Some(name) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if name == self.field && found == Err(KeyError::Missing) {
                found = map.next_value_seed(KeyValue)?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Reads a key value: a string or an integer.
struct KeyValue;

impl<'de> DeserializeSeed<'de> for KeyValue {
    type Value = Result<Box<str>, KeyError>;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyValue {
    type Value = Result<Box<str>, KeyError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an integer")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if v.len() > MAX_KEY_LEN {
            Err(KeyError::TooLong)
        } else {
            Ok(v.into())
        })
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Ok(v.to_string().into()))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Ok(v.to_string().into()))
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(KeyError::BadType))
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(KeyError::BadType))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err(KeyError::BadType))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err(KeyError::BadType))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Err(KeyError::BadType))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_and_integers_are_keys() {
        assert_eq!(
            publication_key(r#"{"p":1.5,"sym":"BTC","x":[1,{"sym":2}]}"#, "sym"),
            Ok("BTC".into())
        );
        assert_eq!(publication_key(r#"{"id":42}"#, "id"), Ok("42".into()));
        assert_eq!(publication_key(r#"{"id":-7}"#, "id"), Ok("-7".into()));
        assert_eq!(
            publication_key(r#"{"k":"a\"b"}"#, "k"),
            Ok("a\"b".into()),
            "escaped strings are unescaped"
        );
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        assert_eq!(publication_key("[1]", "k"), Err(KeyError::NotObject));
        assert_eq!(publication_key("\"k\"", "k"), Err(KeyError::NotObject));
        assert_eq!(publication_key("not json", "k"), Err(KeyError::NotObject));
        assert_eq!(publication_key(r#"{"j":1}"#, "k"), Err(KeyError::Missing));
        for bad in ["1.5", "true", "null", "[1]", "{\"a\":1}"] {
            assert_eq!(
                publication_key(&format!("{{\"k\":{bad}}}"), "k"),
                Err(KeyError::BadType),
                "{bad}"
            );
        }
        let long = "x".repeat(MAX_KEY_LEN + 1);
        assert_eq!(
            publication_key(&format!("{{\"k\":\"{long}\"}}"), "k"),
            Err(KeyError::TooLong)
        );
        assert!(KeyError::BadType.message("sym").contains("\"sym\""));
    }
}
