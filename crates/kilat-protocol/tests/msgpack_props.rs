//! Properties of the binary encoding's transcoders (the fuzz target `msgpack_decoder` checks the
//! same on coverage-guided input; these run in every `cargo test`):
//! - any JSON frame survives JSON -> MessagePack -> JSON unchanged as a value;
//! - arbitrary bytes never panic the decoder, and whatever it accepts is JSON within the bound,
//!   in a normal form that transcodes back to itself.

use kilat_protocol::msgpack::{json_to_msgpack, msgpack_to_json};
use proptest::prelude::*;
use serde_json::{Map, Value};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..20).prop_map(Value::Array),
            prop::collection::vec(("[a-z_]{0,12}", inner), 0..20)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn json_survives_the_round_trip(value in json_value()) {
        let text = serde_json::to_vec(&value).unwrap();
        let packed = json_to_msgpack(&text).unwrap();
        let back = msgpack_to_json(&packed, usize::MAX).unwrap();
        let again: Value = serde_json::from_slice(&back).unwrap();
        // Map keys named `b64data` with a valid base64 string come back the same too; numbers
        // compare as values (1.0 and 1 may differ in text).
        prop_assert_eq!(again, value);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let limit = bytes.len() * 8 + 1024;
        if let Ok(json) = msgpack_to_json(&bytes, limit) {
            prop_assert!(json.len() <= limit);
            for line in json.split(|&b| b == b'\n') {
                prop_assert!(serde_json::from_slice::<Value>(line).is_ok());
            }
            let packed = json_to_msgpack(&json).unwrap();
            prop_assert_eq!(msgpack_to_json(&packed, usize::MAX).unwrap(), json);
        }
    }
}
