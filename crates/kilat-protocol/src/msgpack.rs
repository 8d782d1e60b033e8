//! The binary encoding of the protocol: the same frames as JSON, written as MessagePack.
//!
//! The JSON protocol is the canonical form: the hub encodes every frame as JSON once, and a
//! connection that negotiated MessagePack (`kilat.msgpack`, docs/protocol.md section 2.1) gets
//! the frame transcoded from that JSON, once per frame (a [`crate::SharedFrame`] slot), never per
//! subscriber. Client frames in MessagePack are transcoded to JSON before the command decoder
//! reads them, so both encodings share one decoder, one set of limits and one set of errors.
//! Because the transcoding is structural, every field the JSON protocol has or gains (delta
//! fields included) exists in MessagePack with the same name and the same meaning.
//!
//! Binary payloads: a JSON object member `"b64data": "<base64>"` is the MessagePack member
//! `"data": <bin>` and the other way round, so a binary-protocol client sends and receives raw
//! bytes while a JSON client sees base64.
//!
//! Both transcoders are written by hand rather than through `rmp-serde` and a `serde_json::Value`
//! in between: the JSON-to-MessagePack side runs once per publication on the fan-out path and
//! streams without building a tree (a `Value` would also reorder object keys), and the other
//! side reads hostile input, so it checks every declared length against the bytes actually
//! present before using it, bounds nesting, and bounds its output.

use std::fmt;
use std::io::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// The WebSocket subprotocol (and the `encoding` query parameter value) of the binary encoding.
pub const SUBPROTOCOL_MSGPACK: &str = "kilat.msgpack";
/// The WebSocket subprotocol naming the JSON encoding explicitly (the default when none is asked).
pub const SUBPROTOCOL_JSON: &str = "kilat.json";

/// Deepest nesting of arrays and maps accepted in a client frame. Below serde_json's own limit
/// (128) with room to spare, so whatever the transcoder accepts the command decoder can parse
/// (the fuzz target `msgpack_decoder` found 129 levels passing here and failing there).
pub const MAX_DEPTH: usize = 100;

/// The protocol encoding a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// JSON text frames (the default).
    #[default]
    Json,
    /// MessagePack binary frames.
    Msgpack,
}

impl Encoding {
    /// The encoding named `name`: `json`/`kilat.json` or `msgpack`/`kilat.msgpack`.
    pub fn from_name(name: &str) -> Option<Encoding> {
        match name {
            "json" | SUBPROTOCOL_JSON => Some(Encoding::Json),
            "msgpack" | SUBPROTOCOL_MSGPACK => Some(Encoding::Msgpack),
            _ => None,
        }
    }

    /// The encoding's short name (`json` or `msgpack`).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Msgpack => "msgpack",
        }
    }

    /// The encoding's WebSocket subprotocol.
    pub fn subprotocol(self) -> &'static str {
        match self {
            Encoding::Json => SUBPROTOCOL_JSON,
            Encoding::Msgpack => SUBPROTOCOL_MSGPACK,
        }
    }
}

/// Why a frame could not be transcoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranscodeError {
    /// The MessagePack input is malformed, truncated, or holds a value JSON cannot carry.
    #[error("malformed MessagePack frame: {0}")]
    Malformed(&'static str),
    /// Nesting deeper than [`MAX_DEPTH`].
    #[error("MessagePack frame nested deeper than {MAX_DEPTH}")]
    TooDeep,
    /// The JSON form of the frame would exceed the limit.
    #[error("frame larger than {0} bytes as JSON")]
    TooLarge(usize),
    /// The JSON input is not JSON (never for frames the server encoded).
    #[error("invalid JSON frame: {0}")]
    Json(String),
}

// ---------------------------------------------------------------------------------------------
// JSON -> MessagePack (server frames; once per frame)

/// Transcodes JSON text (one frame, or several separated by whitespace/newlines) to MessagePack
/// values written one after another (MessagePack values are self-delimiting).
///
/// # Errors
/// [`TranscodeError::Json`] when `json` is not a sequence of JSON values.
pub fn json_to_msgpack(json: &[u8]) -> Result<Vec<u8>, TranscodeError> {
    let mut out = Vec::with_capacity(json.len());
    let mut de = serde_json::Deserializer::from_slice(json);
    loop {
        if de.end().is_ok() {
            break;
        }
        de::Deserializer::deserialize_any(
            &mut de,
            Writer {
                out: &mut out,
                b64: false,
            },
        )
        .map_err(|e| TranscodeError::Json(e.to_string()))?;
    }
    Ok(out)
}

/// Visits one JSON value and writes it as MessagePack.
struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// The value is a `b64data` member's: a string is written as `bin` of its decoded bytes.
    b64: bool,
}

impl<'de> DeserializeSeed<'de> for Writer<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Writer<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }
    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_uint(self.out, v);
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        if v >= 0 {
            write_uint(self.out, v as u64);
        } else if v >= -32 {
            self.out.push(v as i8 as u8);
        } else if v >= i64::from(i8::MIN) {
            self.out.push(0xd0);
            self.out.push(v as i8 as u8);
        } else if v >= i64::from(i16::MIN) {
            self.out.push(0xd1);
            self.out.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i64::from(i32::MIN) {
            self.out.push(0xd2);
            self.out.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            self.out.push(0xd3);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.out.push(0xcb);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.b64 {
            // Written by the server from bytes, so valid; anything else stays a string.
            if let Ok(bytes) = BASE64.decode(v) {
                write_bin(self.out, &bytes);
                return Ok(());
            }
        }
        write_str(self.out, v);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let mut n = 0u32;
        while seq
            .next_element_seed(Writer {
                out: self.out,
                b64: false,
            })?
            .is_some()
        {
            n += 1;
        }
        fix_header(self.out, start, n, 0x90, 0xdc, 0xdd);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = self.out.len();
        self.out.extend_from_slice(&[0; 5]);
        let mut n = 0u32;
        while let Some(b64) = map.next_key_seed(Key { out: self.out })? {
            map.next_value_seed(Writer { out: self.out, b64 })?;
            n += 1;
        }
        fix_header(self.out, start, n, 0x80, 0xde, 0xdf);
        Ok(())
    }
}

/// Writes a map key; `b64data` is written as `data` and reported so its value becomes `bin`.
struct Key<'a> {
    out: &'a mut Vec<u8>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        if v == "b64data" {
            write_str(self.out, "data");
            return Ok(true);
        }
        write_str(self.out, v);
        Ok(false)
    }
}

/// Replaces the 5-byte placeholder at `start` with the smallest header for `n` elements.
fn fix_header(out: &mut Vec<u8>, start: usize, n: u32, fix: u8, m16: u8, m32: u8) {
    let mut head = [0u8; 5];
    let len = if n < 16 {
        head[0] = fix | n as u8;
        1
    } else if n <= u32::from(u16::MAX) {
        head[0] = m16;
        head[1..3].copy_from_slice(&(n as u16).to_be_bytes());
        3
    } else {
        head[0] = m32;
        head[1..5].copy_from_slice(&n.to_be_bytes());
        5
    };
    out[start..start + len].copy_from_slice(&head[..len]);
    if len < 5 {
        out.copy_within(start + 5.., start + len);
        out.truncate(out.len() - (5 - len));
    }
}

fn write_uint(out: &mut Vec<u8>, v: u64) {
    if v < 128 {
        out.push(v as u8);
    } else if v <= u64::from(u8::MAX) {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= u64::from(u16::MAX) {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= u64::from(u32::MAX) {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    if n <= usize::from(u8::MAX) {
        out.extend_from_slice(&[0xc4, n as u8]);
    } else if n <= usize::from(u16::MAX) {
        out.push(0xc5);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

// ---------------------------------------------------------------------------------------------
// MessagePack -> JSON (client frames, hostile; and the Rust client's reading of server frames)

/// Transcodes MessagePack values written one after another into JSON frames separated by `\n`
/// (the JSON protocol's batching), refusing output longer than `max_json` bytes.
///
/// A `bin` value is accepted only as a map's `data` member and becomes `"b64data": "<base64>"`.
/// Map keys must be strings; floats must be finite; extension types are refused.
///
/// # Errors
/// [`TranscodeError`] for malformed or truncated input, nesting over [`MAX_DEPTH`], or output
/// over `max_json`.
pub fn msgpack_to_json(input: &[u8], max_json: usize) -> Result<Vec<u8>, TranscodeError> {
    let mut reader = Reader {
        input,
        pos: 0,
        out: Vec::with_capacity(input.len().min(max_json).saturating_mul(2).min(max_json)),
        max: max_json,
    };
    if input.is_empty() {
        return Err(TranscodeError::Malformed("empty message"));
    }
    while reader.pos < input.len() {
        if reader.pos > 0 {
            reader.out.push(b'\n');
        }
        reader.value(0)?;
        reader.check()?;
    }
    Ok(reader.out)
}

struct Reader<'a> {
    input: &'a [u8],
    pos: usize,
    out: Vec<u8>,
    max: usize,
}

type R<T> = Result<T, TranscodeError>;

impl<'a> Reader<'a> {
    fn check(&self) -> R<()> {
        if self.out.len() > self.max {
            Err(TranscodeError::TooLarge(self.max))
        } else {
            Ok(())
        }
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.input.len())
            .ok_or(TranscodeError::Malformed("truncated"))?;
        let bytes = &self.input[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> R<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    /// A length prefix of `n` bytes, as usize.
    fn len(&mut self, n: usize) -> R<usize> {
        usize::try_from(self.be(n)?).map_err(|_| TranscodeError::Malformed("length too large"))
    }

    fn string(&mut self, n: usize) -> R<&'a str> {
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| TranscodeError::Malformed("string is not UTF-8"))
    }

    /// The length of a `str` at the cursor, if the next value is one.
    fn str_len(&mut self, marker: u8) -> R<Option<usize>> {
        Ok(match marker {
            0xa0..=0xbf => Some(usize::from(marker & 0x1f)),
            0xd9 => Some(self.len(1)?),
            0xda => Some(self.len(2)?),
            0xdb => Some(self.len(4)?),
            _ => None,
        })
    }

    fn write_json_str(&mut self, s: &str) {
        // Writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.out, s);
    }

    fn value(&mut self, depth: usize) -> R<()> {
        if depth > MAX_DEPTH {
            return Err(TranscodeError::TooDeep);
        }
        let marker = self.byte()?;
        if let Some(n) = self.str_len(marker)? {
            let s = self.string(n)?;
            self.write_json_str(s);
            return self.check();
        }
        match marker {
            0x00..=0x7f => self.uint(u64::from(marker)),
            0xe0..=0xff => self.int(i64::from(marker as i8)),
            0xc0 => self.out.extend_from_slice(b"null"),
            0xc2 => self.out.extend_from_slice(b"false"),
            0xc3 => self.out.extend_from_slice(b"true"),
            0xcc => {
                let v = self.be(1)?;
                self.uint(v);
            }
            0xcd => {
                let v = self.be(2)?;
                self.uint(v);
            }
            0xce => {
                let v = self.be(4)?;
                self.uint(v);
            }
            0xcf => {
                let v = self.be(8)?;
                self.uint(v);
            }
            0xd0 => {
                let v = self.be(1)? as u8 as i8;
                self.int(i64::from(v));
            }
            0xd1 => {
                let v = self.be(2)? as u16 as i16;
                self.int(i64::from(v));
            }
            0xd2 => {
                let v = self.be(4)? as u32 as i32;
                self.int(i64::from(v));
            }
            0xd3 => {
                let v = self.be(8)? as i64;
                self.int(v);
            }
            0xca => {
                let v = f32::from_bits(self.be(4)? as u32);
                self.float(f64::from(v))?;
            }
            0xcb => {
                let v = f64::from_bits(self.be(8)?);
                self.float(v)?;
            }
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xdc => {
                let n = self.len(2)?;
                self.array(n, depth)?;
            }
            0xdd => {
                let n = self.len(4)?;
                self.array(n, depth)?;
            }
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0xde => {
                let n = self.len(2)?;
                self.map(n, depth)?;
            }
            0xdf => {
                let n = self.len(4)?;
                self.map(n, depth)?;
            }
            0xc4..=0xc6 => {
                return Err(TranscodeError::Malformed(
                    "binary value outside a `data` member",
                ));
            }
            0xc7..=0xc9 | 0xd4..=0xd8 => {
                return Err(TranscodeError::Malformed("extension types are not allowed"));
            }
            // 0xc1 is never used.
            _ => return Err(TranscodeError::Malformed("invalid marker")),
        }
        self.check()
    }

    fn uint(&mut self, v: u64) {
        // Writing to a Vec cannot fail.
        let _ = write!(self.out, "{v}");
    }

    fn int(&mut self, v: i64) {
        let _ = write!(self.out, "{v}");
    }

    fn float(&mut self, v: f64) -> R<()> {
        if !v.is_finite() {
            return Err(TranscodeError::Malformed("NaN or infinite float"));
        }
        let _ = serde_json::to_writer(&mut self.out, &v);
        Ok(())
    }

    fn array(&mut self, n: usize, depth: usize) -> R<()> {
        // Every element takes at least one byte: a count larger than what is left is a lie,
        // refused before looping on it.
        if n > self.input.len() - self.pos {
            return Err(TranscodeError::Malformed("truncated"));
        }
        self.out.push(b'[');
        for i in 0..n {
            if i > 0 {
                self.out.push(b',');
            }
            self.value(depth + 1)?;
        }
        self.out.push(b']');
        Ok(())
    }

    fn map(&mut self, n: usize, depth: usize) -> R<()> {
        if n > (self.input.len() - self.pos) / 2 {
            return Err(TranscodeError::Malformed("truncated"));
        }
        self.out.push(b'{');
        for i in 0..n {
            if i > 0 {
                self.out.push(b',');
            }
            let marker = self.byte()?;
            let Some(len) = self.str_len(marker)? else {
                return Err(TranscodeError::Malformed("map key is not a string"));
            };
            let key = self.string(len)?;
            let next = *self
                .input
                .get(self.pos)
                .ok_or(TranscodeError::Malformed("truncated"))?;
            if key == "data" && (0xc4..=0xc6).contains(&next) {
                self.pos += 1;
                let len = self.len(1 << (next - 0xc4))?;
                let bytes = self.take(len)?;
                // Check the size before allocating the base64 text.
                if self.out.len() + bytes.len().div_ceil(3) * 4 + 12 > self.max {
                    return Err(TranscodeError::TooLarge(self.max));
                }
                self.out.extend_from_slice(b"\"b64data\":\"");
                let at = self.out.len();
                self.out.resize(at + bytes.len().div_ceil(3) * 4, 0);
                let written = BASE64
                    .encode_slice(bytes, &mut self.out[at..])
                    .map_err(|_| TranscodeError::Malformed("base64"))?;
                self.out.truncate(at + written);
                self.out.push(b'"');
            } else {
                self.write_json_str(key);
                self.out.push(b':');
                self.value(depth + 1)?;
            }
            self.check()?;
        }
        self.out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(json: &str) -> String {
        let packed = json_to_msgpack(json.as_bytes()).expect("encodes");
        String::from_utf8(msgpack_to_json(&packed, 1 << 20).expect("decodes")).expect("utf8")
    }

    #[test]
    fn frames_round_trip_with_key_order_kept() {
        let json = r#"{"push":{"channel":"c","pub":{"data":{"z":1,"a":[true,false,null,-1,-200,70000,1.5,"é"]},"offset":3}}}"#;
        assert_eq!(roundtrip(json), json);
        assert_eq!(roundtrip("{}\n{\"id\":1}"), "{}\n{\"id\":1}");
    }

    #[test]
    fn b64data_is_bin_data_in_msgpack() {
        let json = r#"{"pub":{"b64data":"AAEC/w=="}}"#;
        let packed = json_to_msgpack(json.as_bytes()).expect("encodes");
        let mut expected = vec![0x81, 0xa3];
        expected.extend_from_slice(b"pub");
        expected.extend_from_slice(&[0x81, 0xa4]);
        expected.extend_from_slice(b"data");
        expected.extend_from_slice(&[0xc4, 4, 0, 1, 2, 255]);
        assert_eq!(packed, expected);
        assert_eq!(roundtrip(json), json);
    }

    #[test]
    fn sizes_switch_to_wider_headers() {
        let long = "x".repeat(40_000);
        let items = vec!["1"; 20].join(",");
        let json = format!(r#"{{"s":"{long}","a":[{items}]}}"#);
        assert_eq!(roundtrip(&json), json);
    }

    #[test]
    fn hostile_input_is_refused_without_panic() {
        for bad in [
            &[0xc1][..],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xdf, 0xff, 0xff, 0xff, 0xff],
            &[0xdb, 0xff, 0xff, 0xff, 0xff],
            &[0x81, 0x01, 0x01],
            &[0xa2, 0xff, 0xfe],
            &[0xc4, 0x01, 0x00],
            &[0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0],
            &[0xd4, 0, 0],
            &[],
        ] {
            assert!(msgpack_to_json(bad, 1 << 20).is_err(), "{bad:?}");
        }
        // Found by the fuzz target: 129 nested arrays passed here and then failed serde_json's
        // recursion limit in the command decoder.
        let mut nested = vec![0x91u8; MAX_DEPTH + 1];
        nested.push(0xc0);
        assert_eq!(
            msgpack_to_json(&nested, 1 << 20),
            Err(TranscodeError::TooDeep)
        );
        let mut ok = vec![0x91u8; MAX_DEPTH];
        ok.push(0xc0);
        let json = msgpack_to_json(&ok, 1 << 20).expect("within the depth limit");
        serde_json::from_slice::<serde_json::Value>(&json).expect("serde_json reads it");
        let deep = vec![0x91u8; 200];
        assert_eq!(
            msgpack_to_json(&deep, 1 << 20),
            Err(TranscodeError::TooDeep)
        );
        let nils = vec![0xc0u8; 1000];
        let mut arr = vec![0xdc, 0x03, 0xe8];
        arr.extend_from_slice(&nils);
        assert_eq!(
            msgpack_to_json(&arr, 100),
            Err(TranscodeError::TooLarge(100))
        );
    }
}
