//! Fuzzes the conflation key parser (`kilat-core/src/keys.rs`): a namespace's `conflate_key`
//! read from every publication's data without building it. Input: a field name (first line)
//! and the data (the rest). Properties: no panic, no hang; a key is at most 255 bytes; and on
//! data that is one JSON value (what the protocol decoder lets through) without escapes, the
//! answer equals what serde_json's `Value` says: a string or integer at that field is the key,
//! a float, bool, null, array or object is `BadType`, a missing field `Missing`, anything but
//! an object `NotObject`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (field, data) = text.split_once('\n').unwrap_or(("sym", text));
    let got = kilat_core::fuzzing::publication_key(data, field);
    if let Ok(key) = &got {
        assert!(key.len() <= 255, "key of {} bytes", key.len());
    }
    // The oracle, where it is exact: escaped names could make a second entry with the same
    // name, which the parser (first wins) and Value (last wins) resolve differently.
    if data.contains('\\') || field.contains('"') || field.contains('\\') {
        return;
    }
    let Ok(value) = serde_json::from_str::<Value>(data) else {
        return;
    };
    let expected: Result<String, &str> = match &value {
        Value::Object(map) => match map.get(field) {
            None => Err("Missing"),
            Some(Value::String(s)) if s.len() > 255 => Err("TooLong"),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Some(_) => Err("BadType"),
        },
        _ => Err("NotObject"),
    };
    // Value keeps the last of repeated names, the parser the first: compare only when the
    // field's name occurs once.
    if data.matches(&format!("\"{field}\"")).count() > 1 {
        return;
    }
    match (&got, &expected) {
        (Ok(a), Ok(b)) => assert_eq!(a.as_ref(), b.as_str(), "{data:?} under {field:?}"),
        (Err(a), Err(b)) => assert_eq!(a, b, "{data:?} under {field:?}"),
        _ => panic!("{data:?} under {field:?}: parser {got:?}, serde_json {expected:?}"),
    }
});
