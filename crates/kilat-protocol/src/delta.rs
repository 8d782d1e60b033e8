//! The fossil delta format: [`encode`] a target against a source, [`apply`] a delta to a source.
//!
//! kilat sends `delta: "fossil"` subscribers the difference between a channel's previous
//! publication and the new one instead of the whole payload (docs/protocol.md, "Delta
//! compression"). The format is Fossil SCM's delta format, the one Centrifugo's clients speak:
//!
//! ```text
//! delta   = size "\n" *( copy / literal ) checksum ";"
//! copy    = count "@" offset ","      ; count bytes of the source from offset
//! literal = count ":" <count bytes>   ; bytes of the target, as they are
//! ```
//!
//! Every number is written in base 64 with the digits `0-9 A-Z _ a-z ~` (most significant
//! first); `size` is the target's length and `checksum` the wrapping sum of the target read as
//! big-endian 32-bit words (the last word padded with zero bytes).
//!
//! Written here rather than taken from the `fossil-delta` crate: its applier panics and
//! allocates what a delta claims on hostile input (it is only a dev-dependency, to check that
//! both speak the same format), and the encoder runs on the publish path, once per publication
//! of a channel with delta subscribers, where it should reuse no-nonsense buffers.

use std::fmt;

/// Bytes per block of the source that the encoder indexes (and the shortest match it looks for).
const BLOCK: usize = 16;

/// How many candidate blocks with the same hash the encoder tries at one target position.
const MAX_CANDIDATES: usize = 64;

/// The base-64 digits of the format, by value.
const DIGITS: &[u8; 64] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~";

/// Why a delta could not be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaError {
    /// The delta's header is missing or malformed.
    BadHeader,
    /// The target would be larger than the caller allows.
    TooLarge,
    /// A number has more digits than fit.
    BadNumber,
    /// A command byte other than `@`, `:` or `;`, or a copy without its `,`.
    BadCommand,
    /// A copy reads past the end of the source.
    CopyOutOfRange,
    /// A literal is longer than what is left of the delta.
    LiteralOutOfRange,
    /// The commands produce more bytes than the header announced.
    SizeExceeded,
    /// The output is shorter than the header announced.
    SizeMismatch,
    /// The output's checksum differs from the delta's.
    BadChecksum,
    /// The delta ends without its checksum.
    Unterminated,
}

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeltaError::BadHeader => "delta: malformed size header",
            DeltaError::TooLarge => "delta: target larger than allowed",
            DeltaError::BadNumber => "delta: number too large",
            DeltaError::BadCommand => "delta: unknown command",
            DeltaError::CopyOutOfRange => "delta: copy outside the source",
            DeltaError::LiteralOutOfRange => "delta: literal past the end of the delta",
            DeltaError::SizeExceeded => "delta: output longer than announced",
            DeltaError::SizeMismatch => "delta: output shorter than announced",
            DeltaError::BadChecksum => "delta: checksum mismatch",
            DeltaError::Unterminated => "delta: no checksum at the end",
        })
    }
}

impl std::error::Error for DeltaError {}

fn digit_value(byte: u8) -> Option<u64> {
    Some(match byte {
        b'0'..=b'9' => byte - b'0',
        b'A'..=b'Z' => byte - b'A' + 10,
        b'_' => 36,
        b'a'..=b'z' => byte - b'a' + 37,
        b'~' => 63,
        _ => return None,
    } as u64)
}

fn put_number(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 11];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = DIGITS[(value & 63) as usize];
        value >>= 6;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// How many base-64 digits `value` takes.
fn number_len(mut value: usize) -> usize {
    let mut len = 1;
    while value >= 64 {
        value >>= 6;
        len += 1;
    }
    len
}

/// The format's checksum of `data`.
fn checksum(data: &[u8]) -> u32 {
    let mut words = data.chunks_exact(4);
    let mut sum = 0u32;
    for word in words.by_ref() {
        sum = sum.wrapping_add(u32::from_be_bytes([word[0], word[1], word[2], word[3]]));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        sum = sum.wrapping_add(u32::from_be_bytes(last));
    }
    sum
}

/// A weak hash of one block, rolled one byte at a time along the target.
#[derive(Clone, Copy)]
struct Rolling {
    /// Sum of the block's bytes.
    sum: u32,
    /// Sum of the running sums (weights each byte by its distance from the end).
    weighted: u32,
}

impl Rolling {
    fn of(block: &[u8]) -> Self {
        let mut hash = Rolling {
            sum: 0,
            weighted: 0,
        };
        for &byte in &block[..BLOCK] {
            hash.sum = hash.sum.wrapping_add(byte as u32);
            hash.weighted = hash.weighted.wrapping_add(hash.sum);
        }
        hash
    }

    /// Moves the window one byte: `out` leaves at the front, `into` enters at the back.
    fn roll(&mut self, out: u8, into: u8) {
        self.sum = self.sum.wrapping_sub(out as u32).wrapping_add(into as u32);
        self.weighted = self
            .weighted
            .wrapping_sub((BLOCK as u32).wrapping_mul(out as u32))
            .wrapping_add(self.sum);
    }

    fn value(self) -> u32 {
        (self.sum & 0xffff) | (self.weighted << 16)
    }
}

fn put_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    if !bytes.is_empty() {
        put_number(out, bytes.len() as u64);
        out.push(b':');
        out.extend_from_slice(bytes);
    }
}

/// Appends to `out` a delta that turns `source` into `target`.
///
/// The source is indexed in blocks of 16 bytes; the target is scanned with a rolling hash, and
/// each match found is stretched backwards and forwards and written as a copy when that is
/// shorter than the bytes it replaces. Costs O(source + target) time and one index of
/// `source.len() / 16` entries.
pub fn encode_into(source: &[u8], target: &[u8], out: &mut Vec<u8>) {
    put_number(out, target.len() as u64);
    out.push(b'\n');
    let blocks = source.len() / BLOCK;
    if blocks == 0 || target.len() < BLOCK {
        put_literal(out, target);
        put_number(out, checksum(target) as u64);
        out.push(b';');
        return;
    }
    // heads[h]: the last block whose hash falls in bucket h; chain[b]: the block before it in
    // the same bucket (u32::MAX ends a chain).
    let buckets = blocks.next_power_of_two();
    let mut heads = vec![u32::MAX; buckets];
    let mut chain = vec![u32::MAX; blocks];
    for block in 0..blocks {
        let bucket = Rolling::of(&source[block * BLOCK..]).value() as usize & (buckets - 1);
        chain[block] = heads[bucket];
        heads[bucket] = block as u32;
    }

    // `pending` is where the target's not yet written bytes start; `at` the window's start.
    let mut pending = 0usize;
    let mut at = 0usize;
    let mut hash = Rolling::of(target);
    while at + BLOCK <= target.len() {
        let bucket = hash.value() as usize & (buckets - 1);
        let mut candidate = heads[bucket];
        let mut best: Option<(usize, usize, usize)> = None; // (source start, target start, len)
        let mut tries = 0;
        while candidate != u32::MAX && tries < MAX_CANDIDATES {
            tries += 1;
            let src = candidate as usize * BLOCK;
            candidate = chain[candidate as usize];
            let forward = source[src..]
                .iter()
                .zip(&target[at..])
                .take_while(|(a, b)| a == b)
                .count();
            if forward < BLOCK {
                continue;
            }
            let backward = source[..src]
                .iter()
                .rev()
                .zip(target[pending..at].iter().rev())
                .take_while(|(a, b)| a == b)
                .count();
            let len = forward + backward;
            if best.is_none_or(|(_, _, best_len)| len > best_len) {
                best = Some((src - backward, at - backward, len));
            }
        }
        if let Some((src, start, len)) = best {
            // A copy costs its two numbers and two command bytes.
            let cost = number_len(len) + number_len(src) + 2;
            if len > cost {
                put_literal(out, &target[pending..start]);
                put_number(out, len as u64);
                out.push(b'@');
                put_number(out, src as u64);
                out.push(b',');
                pending = start + len;
                at = pending;
                if at + BLOCK <= target.len() {
                    hash = Rolling::of(&target[at..]);
                }
                continue;
            }
        }
        if at + BLOCK < target.len() {
            hash.roll(target[at], target[at + BLOCK]);
        }
        at += 1;
    }
    put_literal(out, &target[pending..]);
    put_number(out, checksum(target) as u64);
    out.push(b';');
}

/// A delta that turns `source` into `target` (see [`encode_into`]).
pub fn encode(source: &[u8], target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len() / 4 + 32);
    encode_into(source, target, &mut out);
    out
}

/// Reads one base-64 number at the start of `input`; returns it and the rest.
fn read_number(input: &[u8]) -> Result<(u64, &[u8]), DeltaError> {
    let mut value = 0u64;
    let mut used = 0;
    for &byte in input {
        let Some(digit) = digit_value(byte) else {
            break;
        };
        // 10 digits hold 60 bits: far above any length kilat accepts.
        if used == 10 {
            return Err(DeltaError::BadNumber);
        }
        value = (value << 6) | digit;
        used += 1;
    }
    Ok((value, &input[used..]))
}

/// Applies `delta` to `source` and returns the target, refusing a target over `max_len` bytes
/// before allocating it. Every malformed delta is an error, never a panic.
///
/// # Errors
/// A [`DeltaError`] saying what is wrong with the delta.
pub fn apply(source: &[u8], delta: &[u8], max_len: usize) -> Result<Vec<u8>, DeltaError> {
    let (size, rest) = read_number(delta)?;
    let Some((b'\n', mut rest)) = rest.split_first().map(|(b, r)| (*b, r)) else {
        return Err(DeltaError::BadHeader);
    };
    let size = usize::try_from(size).map_err(|_| DeltaError::TooLarge)?;
    if size > max_len {
        return Err(DeltaError::TooLarge);
    }
    let mut out = Vec::with_capacity(size);
    while !rest.is_empty() {
        let (count, after) = read_number(rest)?;
        let count = usize::try_from(count).map_err(|_| DeltaError::SizeExceeded)?;
        let Some((&command, after)) = after.split_first() else {
            return Err(DeltaError::Unterminated);
        };
        match command {
            b'@' => {
                let (offset, after) = read_number(after)?;
                let Some((b',', after)) = after.split_first().map(|(b, r)| (*b, r)) else {
                    return Err(DeltaError::BadCommand);
                };
                if count > size - out.len() {
                    return Err(DeltaError::SizeExceeded);
                }
                let start = usize::try_from(offset).map_err(|_| DeltaError::CopyOutOfRange)?;
                let bytes = start
                    .checked_add(count)
                    .and_then(|end| source.get(start..end))
                    .ok_or(DeltaError::CopyOutOfRange)?;
                out.extend_from_slice(bytes);
                rest = after;
            }
            b':' => {
                if count > size - out.len() {
                    return Err(DeltaError::SizeExceeded);
                }
                let bytes = after.get(..count).ok_or(DeltaError::LiteralOutOfRange)?;
                out.extend_from_slice(bytes);
                rest = &after[count..];
            }
            b';' => {
                if out.len() != size {
                    return Err(DeltaError::SizeMismatch);
                }
                if u64::from(checksum(&out)) != count as u64 {
                    return Err(DeltaError::BadChecksum);
                }
                return Ok(out);
            }
            _ => return Err(DeltaError::BadCommand),
        }
    }
    Err(DeltaError::Unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: usize = 1 << 20;

    fn round_trip(source: &[u8], target: &[u8]) -> Vec<u8> {
        let delta = encode(source, target);
        assert_eq!(
            apply(source, &delta, LIMIT).as_deref(),
            Ok(target),
            "delta {:?}",
            String::from_utf8_lossy(&delta)
        );
        delta
    }

    fn ticker(price: u32, volume: u32) -> Vec<u8> {
        format!(
            r#"{{"symbol":"ACME","exchange":"XNAS","currency":"USD","price":{price}.25,"bid":{}.20,"ask":{}.30,"volume":{volume},"open":101.5,"high":109.75,"low":99.25,"status":"trading","updated":"2026-12-02T11:00:00Z"}}"#,
            price - 1,
            price + 1
        )
        .into_bytes()
    }

    #[test]
    fn numbers_use_the_formats_digits() {
        let mut out = Vec::new();
        for (value, text) in [
            (0, "0"),
            (9, "9"),
            (10, "A"),
            (36, "_"),
            (63, "~"),
            (64, "10"),
        ] {
            out.clear();
            put_number(&mut out, value);
            assert_eq!(out, text.as_bytes());
            assert_eq!(read_number(text.as_bytes()), Ok((value, &b""[..])));
            assert_eq!(number_len(value as usize), text.len());
        }
    }

    #[test]
    fn a_known_delta_applies() {
        // "hello world" -> "hello brave world": 6 copied, a literal, 5 copied.
        let source = b"hello world";
        let target = b"hello brave world";
        let mut delta = Vec::new();
        put_number(&mut delta, target.len() as u64);
        delta.extend_from_slice(b"\n6@0,6:brave 5@6,");
        put_number(&mut delta, checksum(target) as u64);
        delta.push(b';');
        assert_eq!(apply(source, &delta, LIMIT).as_deref(), Ok(&target[..]));
    }

    #[test]
    fn the_protocol_docs_example_is_what_the_encoder_makes() {
        let delta = encode(
            br#"{"title":"Report","revision":8}"#,
            br#"{"title":"Report","revision":9}"#,
        );
        assert_eq!(String::from_utf8_lossy(&delta), "V\nT@0,2:9}35R1Lg;");
    }

    #[test]
    fn a_small_change_makes_a_small_delta() {
        let old = ticker(105, 1_200_300);
        let new = ticker(106, 1_200_400);
        let delta = round_trip(&old, &new);
        assert!(
            delta.len() * 2 < new.len(),
            "{} bytes of delta for {} of payload: {:?}",
            delta.len(),
            new.len(),
            String::from_utf8_lossy(&delta)
        );
    }

    #[test]
    fn edge_cases_round_trip() {
        let long: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        let cases: [(&[u8], &[u8]); 7] = [
            (b"", b""),
            (b"", b"abc"),
            (b"abc", b""),
            (&long, &long),
            (&long[100..], &long),
            (&long, &long[..4000]),
            (
                b"0123456789abcdef0123456789abcdef",
                b"xx0123456789abcdef0123456789abcdefyy",
            ),
        ];
        for (source, target) in cases {
            round_trip(source, target);
        }
        let mut edited = long.clone();
        edited[2500] ^= 0xff;
        edited.splice(10..10, b"inserted".iter().copied());
        let delta = round_trip(&long, &edited);
        assert!(delta.len() < 100, "{} bytes", delta.len());
    }

    #[test]
    fn pseudo_random_pairs_round_trip() {
        // A fixed xorshift sequence: targets built from pieces of the source and noise.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..300 {
            let len = (next() % 600) as usize;
            let source: Vec<u8> = (0..len).map(|_| (next() % 4) as u8 + b'a').collect();
            let mut target = Vec::new();
            while target.len() < len {
                let start = (next() as usize) % (source.len() + 1);
                let take = (next() % 40) as usize;
                target.extend_from_slice(&source[start..(start + take).min(source.len())]);
                if next() % 3 == 0 {
                    target.push((next() % 256) as u8);
                }
            }
            round_trip(&source, &target);
        }
    }

    #[test]
    fn hostile_deltas_are_errors_not_panics() {
        let source = b"0123456789";
        let cases: [(&[u8], DeltaError); 12] = [
            (b"", DeltaError::BadHeader),
            (b"A", DeltaError::BadHeader),
            (b"~~~~~~~~~~~\n", DeltaError::BadNumber),
            (b"~~~~~~~~~~\n", DeltaError::TooLarge),
            (b"5\n", DeltaError::Unterminated),
            (b"5\n5", DeltaError::Unterminated),
            (b"5\n5@0", DeltaError::BadCommand),
            (b"5\n5@8,", DeltaError::CopyOutOfRange),
            (b"5\n6@0,", DeltaError::SizeExceeded),
            (b"5\n9:abc", DeltaError::SizeExceeded),
            (b"5\n5:abc", DeltaError::LiteralOutOfRange),
            (b"5\n5@0,0;", DeltaError::BadChecksum),
        ];
        for (delta, error) in cases {
            assert_eq!(
                apply(source, delta, 1000),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(delta)
            );
        }
        assert_eq!(
            apply(source, b"5\n4@0,0;", 1000),
            Err(DeltaError::SizeMismatch)
        );
        assert_eq!(
            apply(source, b"5\n5@0,!", 1000),
            Err(DeltaError::BadCommand)
        );
    }

    #[test]
    fn speaks_the_same_format_as_the_fossil_delta_crate() {
        let pairs = [
            (ticker(105, 1_200_300), ticker(106, 1_200_400)),
            (ticker(1, 1), ticker(99_999, 7)),
            (b"short".to_vec(), b"a short one".to_vec()),
        ];
        for (old, new) in pairs {
            // Ours applied by theirs (their `apply(source, delta)`).
            let ours = encode(&old, &new);
            assert_eq!(
                fossil_delta::apply(&old, &ours).expect("theirs applies"),
                new
            );
            // Theirs applied by ours (their `delta(target, source)`).
            let theirs = fossil_delta::delta(&new, &old);
            assert_eq!(apply(&old, &theirs, LIMIT).as_deref(), Ok(&new[..]));
        }
    }
}
