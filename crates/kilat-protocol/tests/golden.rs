//! Golden frames: every file in `tests/fixtures` decodes and re-encodes to the same JSON.
//!
//! Scenario files are arrays of `{"direction": "client" | "server", "frame": <frame>}`;
//! `invalid_client_frames.json` lists raw texts with the expected error and disconnect codes.
//! The JS SDK tests read the same files.

use std::path::PathBuf;

use kilat_protocol::{ClientFrame, ServerFrame, decode_frame, decode_frames};
use serde_json::Value;

fn fixtures() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read fixture");
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (
                name.clone(),
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")),
            )
        })
        .collect()
}

#[test]
fn scenario_frames_round_trip() {
    let mut checked = 0;
    for (name, value) in fixtures() {
        if name == "invalid_client_frames.json" {
            continue;
        }
        for entry in value.as_array().expect("array of frames") {
            let frame = &entry["frame"];
            let text = serde_json::to_vec(frame).expect("serialise");
            let encoded = match entry["direction"].as_str() {
                Some("client") => decode_frame(&text)
                    .unwrap_or_else(|e| panic!("{name}: {frame}: {e}"))
                    .encode(),
                Some("server") => ServerFrame::decode(&text)
                    .unwrap_or_else(|e| panic!("{name}: {frame}: {e}"))
                    .encode(),
                other => panic!("{name}: bad direction {other:?}"),
            };
            let back: Value = serde_json::from_slice(&encoded).expect("re-encoded is JSON");
            assert_eq!(&back, frame, "{name}: re-encoded frame differs");
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} frames checked");
}

#[test]
fn invalid_frames_give_the_documented_codes() {
    let (_, value) = fixtures()
        .into_iter()
        .find(|(n, _)| n == "invalid_client_frames.json")
        .expect("invalid_client_frames.json");
    for case in value.as_array().expect("array") {
        let text = case["text"].as_str().expect("text");
        let err = decode_frame(text.as_bytes()).expect_err(text);
        assert_eq!(
            u64::from(err.code().0),
            case["error"].as_u64().expect("code"),
            "{text}"
        );
        let disconnect = err.disconnect().map(|d| u64::from(d.code));
        assert_eq!(disconnect, case["disconnect"].as_u64(), "{text}");
    }
}

#[test]
fn batched_frames_decode_in_order() {
    let text = b"{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"a\"}}\n{}";
    let frames: Vec<_> = decode_frames(text).map(|f| f.expect("valid")).collect();
    assert!(matches!(frames[0], ClientFrame::Command { id: 1, .. }));
    assert!(matches!(frames[1], ClientFrame::Command { id: 2, .. }));
    assert!(matches!(frames[2], ClientFrame::Ping));
}
