//! bare-broadcaster: the physical-limit reference for kilat's benchmarks.
//!
//! A raw WebSocket server with no protocol at all: every text (or binary) message a client sends
//! is framed ONCE into a shared `Bytes` and queued to every connected client. Per connection:
//! one reader task, one writer task, a bounded queue, and no buffers held while idle.
//!
//!   PORT=9100 bare-broadcaster      # listens on 127.0.0.1:$PORT (default 9100)

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Clients = Arc<RwLock<HashMap<u64, mpsc::Sender<Bytes>>>>;

const QUEUE: usize = 4096;
const MAX_MESSAGE: usize = 1 << 20;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let port = std::env::var("PORT").unwrap_or_else(|_| "9100".into());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    eprintln!("bare-broadcaster on ws://{}/", listener.local_addr()?);
    let clients: Clients = Arc::default();
    let ids = AtomicU64::new(0);
    loop {
        let (stream, _) = listener.accept().await?;
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let clients = clients.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let stream = Arc::new(stream);
            if handshake(&stream).await.is_err() {
                return;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            clients.write().unwrap().insert(id, tx.clone());
            let writer = tokio::spawn(write_loop(stream.clone(), rx));
            let _ = read_loop(&stream, &clients, &tx).await;
            clients.write().unwrap().remove(&id);
            drop(tx);
            writer.abort();
        });
    }
}

/// Reads the upgrade request (without keeping a buffer) and answers 101.
async fn handshake(stream: &TcpStream) -> std::io::Result<()> {
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
        stream.readable().await?;
        let mut tmp = [0u8; 2048];
        match stream.try_read(&mut tmp) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => head.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let key = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .ok_or(std::io::ErrorKind::InvalidData)?;
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha.finalize());
    let reply = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    write_all(stream, reply.as_bytes()).await
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Writes queued frames, coalescing whatever is queued into one write.
async fn write_loop(stream: Arc<TcpStream>, mut rx: mpsc::Receiver<Bytes>) {
    let mut out = Vec::new();
    while let Some(first) = rx.recv().await {
        out.extend_from_slice(&first);
        while out.len() < 64 * 1024 {
            match rx.try_recv() {
                Ok(more) => out.extend_from_slice(&more),
                Err(_) => break,
            }
        }
        if write_all(&stream, &out).await.is_err() {
            return;
        }
        out.clear();
        if out.capacity() > 64 * 1024 {
            out = Vec::new();
        }
    }
}

/// Reads client frames; broadcasts data messages, answers pings, stops on close or error.
async fn read_loop(
    stream: &TcpStream,
    clients: &Clients,
    me: &mpsc::Sender<Bytes>,
) -> std::io::Result<()> {
    // Partial frames only; empty (no allocation) while the connection is idle.
    let mut pending: Vec<u8> = Vec::new();
    loop {
        stream.readable().await?;
        {
            let mut tmp = [0u8; 16 * 1024];
            match stream.try_read(&mut tmp) {
                Ok(0) => return Ok(()),
                Ok(n) => pending.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        let mut at = 0;
        while let Some((opcode, start, end)) = parse(&mut pending[at..])? {
            let payload = &pending[at + start..at + end];
            match opcode {
                0x1 | 0x2 => {
                    let frame = frame(0x80 | opcode, payload);
                    let senders: Vec<mpsc::Sender<Bytes>> =
                        clients.read().unwrap().values().cloned().collect();
                    for s in senders {
                        // A client whose queue is full misses the message (slow consumer).
                        let _ = s.try_send(frame.clone());
                    }
                }
                0x8 => {
                    let _ = me.try_send(frame(0x88, payload));
                    return Ok(());
                }
                0x9 => {
                    let _ = me.try_send(frame(0x8a, payload));
                }
                _ => {}
            }
            at += end;
        }
        pending.drain(..at);
        if pending.is_empty() {
            pending = Vec::new();
        }
    }
}

/// One unmasked server frame.
fn frame(first: u8, payload: &[u8]) -> Bytes {
    let mut f = Vec::with_capacity(payload.len() + 10);
    f.push(first);
    match payload.len() {
        n if n < 126 => f.push(n as u8),
        n if n <= 0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    Bytes::from(f)
}

/// Parses and unmasks one client frame at the front of `b`: (opcode, payload start, end).
fn parse(b: &mut [u8]) -> std::io::Result<Option<(u8, usize, usize)>> {
    if b.len() < 2 {
        return Ok(None);
    }
    let opcode = b[0] & 0x0f;
    let (len, mut at) = match b[1] & 0x7f {
        126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
        127 if b.len() >= 10 => {
            let mut l = [0u8; 8];
            l.copy_from_slice(&b[2..10]);
            (u64::from_be_bytes(l) as usize, 10)
        }
        126 | 127 => return Ok(None),
        n => (usize::from(n), 2),
    };
    if len > MAX_MESSAGE {
        return Err(std::io::ErrorKind::InvalidData.into());
    }
    let masked = b[1] & 0x80 != 0;
    let mask = if masked {
        if b.len() < at + 4 {
            return Ok(None);
        }
        let m = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    let end = at + len;
    if b.len() < end {
        return Ok(None);
    }
    if let Some(m) = mask {
        for (i, x) in b[at..end].iter_mut().enumerate() {
            *x ^= m[i % 4];
        }
    }
    Ok(Some((opcode, at, end)))
}
