//! Golden frames of the binary encoding: `tests/fixtures/msgpack/frames.json` holds every frame
//! of the JSON golden scenarios and some binary-payload frames, each with its MessagePack bytes
//! as written by an independent implementation (@msgpack/msgpack, see
//! `sdk/js/scripts/msgpack-golden-gen.mjs`). The server's transcoder must produce exactly those
//! bytes from the JSON and give back exactly the JSON from them; the JS SDK's codec is checked
//! against the same file (`sdk/js/test/msgpack.test.js`).

use std::path::PathBuf;

use kilat_protocol::msgpack::{json_to_msgpack, msgpack_to_json};
use serde_json::Value;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn frames() -> Vec<Value> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/msgpack/frames.json");
    let text = std::fs::read_to_string(path).expect("fixture");
    serde_json::from_str::<Vec<Value>>(&text).expect("fixture is JSON")
}

#[test]
fn transcoding_matches_the_golden_bytes_both_ways() {
    let frames = frames();
    assert!(frames.len() > 50, "only {} golden frames", frames.len());
    let mut binary = 0;
    for entry in &frames {
        let json = entry["json"].as_str().expect("json text");
        let packed = entry["msgpack"].as_str().expect("msgpack hex");
        assert_eq!(
            hex(&json_to_msgpack(json.as_bytes()).expect("transcodes")),
            packed,
            "JSON -> MessagePack of {json}"
        );
        let back = msgpack_to_json(&unhex(packed), 1 << 20).expect("decodes");
        assert_eq!(
            String::from_utf8(back).expect("utf8"),
            json,
            "MessagePack -> JSON of {packed}"
        );
        binary += usize::from(json.contains("b64data"));
    }
    assert!(binary >= 4, "only {binary} binary-payload frames");
}

#[test]
fn a_batch_is_the_values_one_after_another() {
    let frames = frames();
    let (a, b) = (&frames[0], &frames[1]);
    let text = format!(
        "{}\n{}",
        a["json"].as_str().unwrap(),
        b["json"].as_str().unwrap()
    );
    let packed = json_to_msgpack(text.as_bytes()).expect("transcodes");
    assert_eq!(
        hex(&packed),
        format!(
            "{}{}",
            a["msgpack"].as_str().unwrap(),
            b["msgpack"].as_str().unwrap()
        )
    );
    assert_eq!(
        msgpack_to_json(&packed, 1 << 20).expect("decodes"),
        text.as_bytes()
    );
}

/// The golden binary-payload frames through the protocol types: the publish command from
/// MessagePack bytes decodes to the raw bytes, and the server's own encoding of a binary
/// publication (the hub's `pub` push, a history reply) is exactly the golden JSON and so, by
/// the transcoder, the golden MessagePack.
#[test]
fn binary_payload_frames_are_what_the_server_reads_and_writes() {
    use kilat_protocol::command::{ClientFrame, Command, decode_frame};
    use kilat_protocol::{Payload, Publication, ServerFrame};
    let frames = frames();
    let binary: Vec<&Value> = frames
        .iter()
        .filter(|f| f["source"] == "binary payloads")
        .collect();
    let publish = binary
        .iter()
        .find(|f| f["direction"] == "client")
        .expect("a binary publish frame");
    let json = msgpack_to_json(&unhex(publish["msgpack"].as_str().unwrap()), 1 << 20).unwrap();
    let Ok(ClientFrame::Command {
        command: Command::Publish(mut request),
        ..
    }) = decode_frame(&json)
    else {
        panic!("not a publish")
    };
    let Ok(Payload::Binary(bytes)) = request.payload() else {
        panic!("not binary")
    };
    assert_eq!(&bytes[..], b"\x1a\x45\xdf\xa3\x00\xff\x0a\x7b\x22");
    let mut pushes = 0;
    for entry in binary.iter().filter(|f| f["direction"] == "server") {
        let json = entry["json"].as_str().unwrap();
        let Ok(ServerFrame::Push(push)) = ServerFrame::decode(json.as_bytes()) else {
            continue;
        };
        let kilat_protocol::PushBody::Pub(publication) = push.body else {
            continue;
        };
        assert!(publication.binary.is_some(), "{json}");
        let mut fresh = Publication::bytes(publication.binary.clone().unwrap());
        fresh.offset = publication.offset;
        fresh.info = publication.info;
        let encoded =
            kilat_protocol::push::encode_publication(push.channel.as_deref().unwrap(), &fresh);
        assert_eq!(String::from_utf8(encoded).unwrap(), json);
        assert_eq!(
            hex(&json_to_msgpack(json.as_bytes()).unwrap()),
            entry["msgpack"].as_str().unwrap()
        );
        pushes += 1;
    }
    assert!(pushes >= 2, "only {pushes} binary pub pushes");
}
