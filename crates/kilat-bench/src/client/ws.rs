//! The WebSocket client: the opening handshake (offering permessage-deflate with
//! `--compression`), masked client frames and unmasked server frames, both through
//! kilat-transport's frame codec (`ws::frame`), the same one the server runs.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use kilat_protocol::msgpack::{json_to_msgpack, msgpack_to_json};
use kilat_transport::ws::frame::{
    FrameHeader, HeaderError, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
    apply_mask, parse_close_payload,
};
use tokio::io::AsyncWriteExt;

use super::conn::{Conn, MAX_FRAME};
use super::net::{Target, connect_stream, header, read_head, settings};

/// Opens a WebSocket and completes the opening handshake (offering permessage-deflate when
/// `--compression` was given).
pub(crate) async fn open(target: &Target, timeout: Duration) -> Result<Conn> {
    tokio::time::timeout(timeout, async {
        let mut stream = connect_stream(target).await?;
        let extension = if settings().compression {
            "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover; server_no_context_takeover\r\n"
        } else {
            ""
        };
        let msgpack = settings().msgpack;
        let subprotocol = if msgpack {
            "Sec-WebSocket-Protocol: kilat.msgpack\r\n"
        } else {
            ""
        };
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: a2lsYXQtYmVuY2gta2V5IQ==\r\nSec-WebSocket-Version: 13\r\n{extension}{subprotocol}\r\n",
            target.path, target.addr
        );
        stream.write_all(request.as_bytes()).await?;
        let (head, rest) = read_head(&mut stream).await?;
        if !head.starts_with("HTTP/1.1 101") {
            bail!("upgrade refused: {}", head.lines().next().unwrap_or_default());
        }
        let inflate = header(&head, "sec-websocket-extensions")
            .is_some_and(|v| v.contains("permessage-deflate"));
        if msgpack && header(&head, "sec-websocket-protocol") != Some("kilat.msgpack") {
            bail!("the server did not agree to the kilat.msgpack subprotocol (--encoding msgpack needs a kilat server that has it)");
        }
        // Whatever follows the head (a server that speaks first) stays buffered.
        Ok(Conn {
            stream,
            buf: rest,
            consumed: 0,
            inflate,
            compressed: 0,
            read_bytes: 0,
            scratch: Vec::new(),
            sse: None,
        })
    })
    .await
    .context("handshake timed out")?
}

/// Inflates one permessage-deflate message (compressed without context takeover) into `out`.
fn inflate_message(payload: &[u8], out: &mut Vec<u8>) -> Result<()> {
    use flate2::{Decompress, FlushDecompress, Status};
    thread_local! {
        static INFLATER: std::cell::RefCell<Decompress> =
            std::cell::RefCell::new(Decompress::new(false));
    }
    let mut input = Vec::with_capacity(payload.len() + 4);
    input.extend_from_slice(payload);
    input.extend_from_slice(&[0x00, 0x00, 0xff, 0xff]);
    INFLATER.with_borrow_mut(|d| {
        d.reset(false);
        out.clear();
        let mut at = 0;
        loop {
            if out.capacity() - out.len() < 4096 {
                out.reserve(4096.max(payload.len() * 4));
            }
            let (in_before, out_before) = (d.total_in(), d.total_out());
            let status = d
                .decompress_vec(&input[at..], out, FlushDecompress::Sync)
                .context("bad permessage-deflate data from the server")?;
            at += (d.total_in() - in_before) as usize;
            if out.len() as u64 > MAX_FRAME {
                bail!("inflated server message larger than the bench client accepts");
            }
            let stuck = d.total_in() == in_before && d.total_out() == out_before;
            let done = at == input.len() && out.len() < out.capacity();
            if status == Status::StreamEnd || done || stuck {
                return Ok(());
            }
        }
    })
}

impl Conn {
    /// Sends `text` as one masked text frame.
    pub(super) async fn send_frame(&mut self, text: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(text.len() + 14);
        encode_text(&mut frame, text);
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends a close frame with `code` (a clean WebSocket close; the caller then drops the
    /// connection without waiting for the server's close).
    pub(crate) async fn send_close(&mut self, code: u16) -> Result<()> {
        if self.sse.is_some() {
            bail!("a close frame needs a WebSocket connection");
        }
        let mut frame = Vec::with_capacity(8);
        encode_frame(&mut frame, OP_CLOSE, &code.to_be_bytes());
        self.stream.write_all(&frame).await?;
        Ok(())
    }

    /// Sends bytes already framed with [`encode_text`] (several frames in one write).
    pub(crate) async fn send_raw(&mut self, frames: &[u8]) -> Result<()> {
        if self.sse.is_some() {
            bail!("publishing needs a WebSocket connection (or --publish-via http)");
        }
        self.stream.write_all(frames).await?;
        Ok(())
    }

    /// The next WebSocket data message (see [`Conn::next`]).
    pub(super) async fn next_message(&mut self) -> Result<(u8, &[u8])> {
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        loop {
            if let Some((header, start, end)) = self.parse()? {
                match header.opcode {
                    OP_CLOSE => {
                        let code = self
                            .buf
                            .get(start..end)
                            .and_then(|p| parse_close_payload(p).ok())
                            .and_then(|(code, _)| code);
                        bail!("server closed the connection (code {code:?})");
                    }
                    OP_PING => {
                        let mut pong = Vec::with_capacity(end - start + 6);
                        encode_frame(&mut pong, OP_PONG, &self.buf[start..end]);
                        self.buf.drain(..end);
                        self.stream.write_all(&pong).await?;
                        continue;
                    }
                    OP_PONG => {
                        self.buf.drain(..end);
                        continue;
                    }
                    opcode => {
                        self.consumed = end;
                        let inflated = header.rsv1;
                        if inflated {
                            if !self.inflate {
                                bail!("compressed message without permessage-deflate");
                            }
                            self.compressed += 1;
                            inflate_message(&self.buf[start..end], &mut self.scratch)?;
                        }
                        if opcode == OP_BINARY && settings().msgpack {
                            // Checked as JSON, like every other message: the transcoding is
                            // the bench's CPU, not the server's.
                            let packed = if inflated {
                                &self.scratch[..]
                            } else {
                                &self.buf[start..end]
                            };
                            let json = msgpack_to_json(packed, MAX_FRAME as usize)
                                .context("malformed MessagePack from the server")?;
                            self.scratch = json;
                            return Ok((OP_TEXT, &self.scratch));
                        }
                        if inflated {
                            return Ok((opcode, &self.scratch));
                        }
                        return Ok((opcode, &self.buf[start..end]));
                    }
                }
            }
            self.fill().await?;
        }
    }

    /// Parses one frame at the front of the buffer: (its header, payload start, payload end),
    /// with the payload unmasked in place if the server masked it.
    fn parse(&mut self) -> Result<Option<(FrameHeader, usize, usize)>> {
        let (header, at) = match FrameHeader::parse(&self.buf) {
            Ok(parsed) => parsed,
            Err(HeaderError::Incomplete) => return Ok(None),
            Err(HeaderError::LengthOverflow) => bail!("server frame length overflows"),
        };
        if !header.fin || header.opcode == OP_CONTINUATION {
            bail!("fragmented server messages are not supported by the bench client");
        }
        if header.payload_len > MAX_FRAME {
            bail!(
                "server frame of {} bytes is larger than the bench client accepts",
                header.payload_len
            );
        }
        let end = at + header.payload_len as usize;
        if self.buf.len() < end {
            if self.buf.capacity() < end {
                self.buf.reserve(end - self.buf.len());
            }
            return Ok(None);
        }
        if let Some(key) = header.mask {
            apply_mask(&mut self.buf[at..end], key, 0);
        }
        Ok(Some((header, at, end)))
    }
}

/// Appends one masked text frame carrying `text` to `out`; with `--encoding msgpack`, one
/// binary frame carrying the same frames in MessagePack.
pub(crate) fn encode_text(out: &mut Vec<u8>, text: &[u8]) {
    if settings().msgpack {
        match json_to_msgpack(text) {
            Ok(packed) => return encode_frame(out, OP_BINARY, &packed),
            // Not JSON (a raw broadcast payload): sent as it is.
            Err(_) => return encode_frame(out, OP_TEXT, text),
        }
    }
    encode_frame(out, OP_TEXT, text);
}

/// Appends one masked, final frame of `opcode` carrying `payload` to `out`.
fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let mask = rand_mask();
    FrameHeader {
        fin: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: Some(mask),
        payload_len: payload.len() as u64,
    }
    .encode(out);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask, 0);
}

/// A mask key; need not be unpredictable for a load generator.
fn rand_mask() -> [u8; 4] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0x5eed);
    nanos.to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_back_with_the_servers_codec() {
        for len in [0, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut out = Vec::new();
            encode_text(&mut out, &payload);
            let (header, at) = FrameHeader::parse(&out).expect("a whole header");
            assert!(header.fin && header.opcode == OP_TEXT);
            assert_eq!(header.payload_len, len as u64);
            let key = header.mask.expect("client frames are masked");
            let mut body = out[at..].to_vec();
            apply_mask(&mut body, key, 0);
            assert_eq!(body, payload);
        }
    }
}
