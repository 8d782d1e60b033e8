//! Fuzzes the fossil delta applier (what a client does with a `delta: true` publication from the
//! network) and the encoder. Input: one byte splitting the rest into a source and a delta.
//! Properties: applying never panics and never returns more than the limit; a delta the encoder
//! made from the source to the "delta" bytes applies back to exactly those bytes.
#![no_main]

use kilat_protocol::delta::{apply, encode};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = (split as usize * rest.len() / 255).min(rest.len());
    let (source, delta) = rest.split_at(split);
    if let Ok(out) = apply(source, delta, LIMIT) {
        assert!(out.len() <= LIMIT);
    }
    let made = encode(source, delta);
    assert_eq!(apply(source, &made, LIMIT).as_deref(), Ok(delta));
});
