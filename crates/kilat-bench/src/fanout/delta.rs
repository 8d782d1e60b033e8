//! `kilat bench fanout --delta`: subscribers ask for `delta: "fossil"` and turn every
//! publication back into its payload (applying deltas as a client does) before checking it, and
//! `--feed ticker` publishes a snapshot that changes a little each time, the feed deltas are for.

use kilat_protocol::delta::apply;
use kilat_protocol::push::decode_delta_fields;
use serde::Deserialize;
use serde_json::value::RawValue;

/// One delta subscriber's base: the text of the last payload it received.
#[derive(Debug, Default)]
pub(super) struct DeltaReader {
    base: Option<String>,
}

impl DeltaReader {
    /// Calls `f` with the payload text of every publication in `message` (one frame or several
    /// separated by `\n`); other frames are passed through as they are. An error when a delta
    /// does not apply.
    pub(super) fn payloads(
        &mut self,
        message: &[u8],
        mut f: impl FnMut(&[u8]),
    ) -> Result<(), String> {
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
        for line in message.split(|b| *b == b'\n') {
            let Ok(outer) = serde_json::from_slice::<Outer<'_>>(line) else {
                f(line);
                continue;
            };
            let fields =
                decode_delta_fields(outer.push.publication.get()).map_err(|e| e.to_string())?;
            match fields {
                None => {
                    self.base = None;
                    f(line);
                }
                Some((text, false)) => {
                    f(text.as_bytes());
                    self.base = Some(text);
                }
                Some((delta, true)) => {
                    let base = self.base.as_deref().ok_or("a delta without a base")?;
                    let out = apply(base.as_bytes(), delta.as_bytes(), 1 << 24)
                        .map_err(|e| e.to_string())?;
                    let text =
                        String::from_utf8(out).map_err(|_| "a delta's result is not UTF-8")?;
                    f(text.as_bytes());
                    self.base = Some(text);
                }
            }
        }
        Ok(())
    }
}

/// A ticker snapshot of about `size` bytes: the bench marker, then quotes of which publication
/// `seq` changes one (quote `seq mod n`); everything else is as in the previous publication.
pub(super) fn ticker_payload(
    publisher: u32,
    seq: u64,
    sent_us: u64,
    intended_us: u64,
    size: usize,
) -> String {
    const QUOTE: usize = 56;
    let quotes = (size.saturating_sub(40) / QUOTE).max(1) as u64;
    let mut s = format!(r#"{{"kb":[{publisher},{seq},{sent_us},{intended_us}],"quotes":["#);
    for i in 0..quotes {
        // How often quote i was updated up to this publication: its values follow from that.
        let version = (seq + quotes - 1 - i) / quotes;
        let mix = (i * 7919 + version * 104_729) % 100_000;
        let bid = 100_000 + mix;
        let volume = 1_000_000 + (i * 31 + version * 977) % 9_000_000;
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"s":"SYM{i:04}","bid":{}.{:02},"ask":{}.{:02},"vol":{volume}}}"#,
            bid / 100,
            bid % 100,
            (bid + 3) / 100,
            (bid + 3) % 100
        ));
    }
    s.push_str("]}");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticker_changes_one_quote_per_publication() {
        let a = ticker_payload(0, 41, 1, 1, 1000);
        let b = ticker_payload(0, 42, 2, 2, 1000);
        assert!((900..=1100).contains(&a.len()), "{} bytes", a.len());
        serde_json::from_str::<serde_json::Value>(&a).expect("json");
        let delta = kilat_protocol::delta::encode(a.as_bytes(), b.as_bytes());
        assert!(delta.len() * 5 < b.len(), "{} bytes of delta", delta.len());
    }

    #[test]
    fn a_reader_turns_full_and_delta_frames_into_payloads() {
        let a = ticker_payload(0, 1, 1, 1, 300);
        let b = ticker_payload(0, 2, 2, 2, 300);
        let delta = String::from_utf8(kilat_protocol::delta::encode(a.as_bytes(), b.as_bytes()))
            .expect("utf8");
        let frame = |text: &str, delta: bool| {
            format!(
                r#"{{"push":{{"channel":"c","pub":{{"data":{},"offset":1,"delta":{delta}}}}}}}"#,
                serde_json::to_string(text).expect("string")
            )
        };
        let message = format!("{}\n{}", frame(&a, false), frame(&delta, true));
        let mut seen = Vec::new();
        let mut reader = DeltaReader::default();
        reader
            .payloads(message.as_bytes(), |p| {
                seen.push(String::from_utf8_lossy(p).into_owned())
            })
            .expect("applies");
        assert_eq!(seen, [a, b]);
        let mut fresh = DeltaReader::default();
        assert!(
            fresh
                .payloads(frame(&delta, true).as_bytes(), |_| {})
                .is_err()
        );
    }
}
