//! SPDY/3.1, the server side of what the kubelet's streaming clients speak (spdystream): frames,
//! the zlib-compressed header blocks (one compression context per direction for the whole
//! connection, primed with the SPDY/3 dictionary, each block ended by a sync flush), and a
//! connection that hands out the streams the client opens.
//!
//! Flow control (WINDOW_UPDATE) is not used: spdystream neither sends nor honours it, so
//! back-pressure is TCP's, as between kubectl and the kubelet.

use super::dictionary::DICTIONARY;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

pub const VERSION: u16 = 3;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const WINDOW_UPDATE: u16 = 9;

/// FIN on a SYN_STREAM, SYN_REPLY, HEADERS or data frame: the sender's last frame.
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status codes.
pub const PROTOCOL_ERROR: u32 = 1;
pub const REFUSED_STREAM: u32 = 3;
pub const CANCEL: u32 = 5;

/// Control frames carry a few hundred bytes of headers; anything near this is not a client of
/// ours.
const MAX_CONTROL_LEN: usize = 1 << 20;
/// Limit of a decompressed header block (zlib bombs).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Data frames berthd sends are cut to this size.
pub const MAX_DATA_CHUNK: usize = 32 * 1024;

/// Header names (lower case, as SPDY requires) and values, in order. A name with several
/// values appears once per value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn add(&mut self, name: &str, value: &str) {
        self.0.push((name.to_ascii_lowercase(), value.to_string()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        entries: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
    /// A control frame of another type (CREDENTIAL, or newer): ignored, as the spec says.
    Other {
        frame_type: u16,
    },
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The uncompressed header block: a count, then length-prefixed names and values (several
/// values of one name joined by NUL).
fn header_block(h: &Headers) -> Vec<u8> {
    let mut names: Vec<String> = Vec::new();
    let mut values: HashMap<String, Vec<&str>> = HashMap::new();
    for (n, v) in &h.0 {
        let n = n.to_ascii_lowercase();
        if !values.contains_key(&n) {
            names.push(n.clone());
        }
        values.entry(n).or_default().push(v);
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(names.len() as u32).to_be_bytes());
    for n in &names {
        let v = values[n].join("\0");
        out.extend_from_slice(&(n.len() as u32).to_be_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

fn parse_header_block(b: &[u8]) -> io::Result<Headers> {
    let mut pos = 0;
    let mut take = |n: usize| -> io::Result<&[u8]> {
        let s = b
            .get(pos..pos + n)
            .ok_or_else(|| invalid("truncated header block"))?;
        pos += n;
        Ok(s)
    };
    let count = be32(take(4)?) as usize;
    let mut h = Headers::default();
    for _ in 0..count {
        let len = be32(take(4)?) as usize;
        let name = String::from_utf8_lossy(take(len)?).to_ascii_lowercase();
        let len = be32(take(4)?) as usize;
        let value = String::from_utf8_lossy(take(len)?).into_owned();
        for v in value.split('\0') {
            h.0.push((name.clone(), v.to_string()));
        }
    }
    Ok(h)
}

/// Serializes frames; owns the compression context of this direction's header blocks.
pub struct Encoder {
    z: Compress,
}

impl Encoder {
    pub fn new() -> io::Result<Encoder> {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY).map_err(io::Error::other)?;
        Ok(Encoder { z })
    }

    /// Compresses one header block, ending it with a sync flush (the receiver decompresses
    /// each block as soon as its frame is in).
    fn compress(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.z
                .compress_vec(&input[done..], &mut out, FlushCompress::Sync)
                .map_err(io::Error::other)?;
            // The flush is complete once the input is in and there was output room to spare.
            if (self.z.total_in() - start) as usize == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    pub fn encode(&mut self, f: &Frame) -> io::Result<Vec<u8>> {
        let control = |kind: u16, flags: u8, body: Vec<u8>| -> io::Result<Vec<u8>> {
            if body.len() > 0xff_ffff {
                return Err(invalid("frame too large"));
            }
            let mut out = Vec::with_capacity(8 + body.len());
            out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&((flags as u32) << 24 | body.len() as u32).to_be_bytes());
            out.extend_from_slice(&body);
            Ok(out)
        };
        match f {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let mut body = Vec::new();
                body.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                body.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                body.push((priority & 0x7) << 5);
                body.push(0);
                body.extend(self.compress(&header_block(headers))?);
                control(SYN_STREAM, *flags, body)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend(self.compress(&header_block(headers))?);
                control(SYN_REPLY, *flags, body)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend(self.compress(&header_block(headers))?);
                control(HEADERS, *flags, body)
            }
            Frame::RstStream { stream_id, status } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(RST_STREAM, 0, body)
            }
            Frame::Settings { flags, entries } => {
                let mut body = (entries.len() as u32).to_be_bytes().to_vec();
                for e in entries {
                    body.extend_from_slice(
                        &((e.flags as u32) << 24 | (e.id & 0xff_ffff)).to_be_bytes(),
                    );
                    body.extend_from_slice(&e.value.to_be_bytes());
                }
                control(SETTINGS, *flags, body)
            }
            Frame::Ping { id } => control(PING, 0, id.to_be_bytes().to_vec()),
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                let mut body = (last_good_stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&status.to_be_bytes());
                control(GOAWAY, 0, body)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                let mut body = (stream_id & 0x7fff_ffff).to_be_bytes().to_vec();
                body.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
                control(WINDOW_UPDATE, 0, body)
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > 0xff_ffff {
                    return Err(invalid("frame too large"));
                }
                let mut out = Vec::with_capacity(8 + data.len());
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&((*flags as u32) << 24 | data.len() as u32).to_be_bytes());
                out.extend_from_slice(data);
                Ok(out)
            }
            Frame::Other { frame_type } => Err(invalid(format!(
                "cannot encode control frame type {frame_type}"
            ))),
        }
    }
}

/// Parses frames; owns the decompression context of this direction's header blocks.
pub struct Decoder {
    z: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            z: Decompress::new(true),
        }
    }
}

impl Decoder {
    fn decompress(&mut self, input: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(input.len() * 4 + 64);
        let start = self.z.total_in();
        loop {
            let done = (self.z.total_in() - start) as usize;
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(invalid("header block too large"));
                }
                out.reserve(out.len().max(256));
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            match self
                .z
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
            {
                Ok(flate2::Status::StreamEnd) => {
                    return Err(invalid("header compression stream ended"))
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| invalid(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(invalid(format!("header block: {e}"))),
            }
            let done = (self.z.total_in() - start) as usize;
            if done == input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if self.z.total_in() == in0 && self.z.total_out() == out0 && out.len() < out.capacity()
            {
                return Err(invalid("header block: truncated"));
            }
        }
    }

    fn headers(&mut self, compressed: &[u8]) -> io::Result<Headers> {
        let block = self.decompress(compressed)?;
        parse_header_block(&block)
    }

    /// The frame with this 8-byte head and body.
    pub fn parse(&mut self, head: [u8; 8], body: &[u8]) -> io::Result<Frame> {
        let flags = head[4];
        if head[0] & 0x80 == 0 {
            return Ok(Frame::Data {
                stream_id: be32(&head[..4]) & 0x7fff_ffff,
                flags,
                data: body.to_vec(),
            });
        }
        let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
        if version != VERSION {
            return Err(invalid(format!("SPDY version {version} (want 3)")));
        }
        let kind = u16::from_be_bytes([head[2], head[3]]);
        let need = |n: usize| {
            if body.len() < n {
                Err(invalid(format!(
                    "control frame {kind}: {} bytes",
                    body.len()
                )))
            } else {
                Ok(())
            }
        };
        let id = |b: &[u8]| be32(b) & 0x7fff_ffff;
        Ok(match kind {
            SYN_STREAM => {
                need(10)?;
                Frame::SynStream {
                    stream_id: id(&body[..4]),
                    associated_to: id(&body[4..8]),
                    priority: body[8] >> 5,
                    flags,
                    headers: self.headers(&body[10..])?,
                }
            }
            SYN_REPLY => {
                need(4)?;
                Frame::SynReply {
                    stream_id: id(&body[..4]),
                    flags,
                    headers: self.headers(&body[4..])?,
                }
            }
            HEADERS => {
                need(4)?;
                Frame::Headers {
                    stream_id: id(&body[..4]),
                    flags,
                    headers: self.headers(&body[4..])?,
                }
            }
            RST_STREAM => {
                need(8)?;
                Frame::RstStream {
                    stream_id: id(&body[..4]),
                    status: be32(&body[4..8]),
                }
            }
            SETTINGS => {
                need(4)?;
                let n = be32(&body[..4]) as usize;
                need(4 + n.saturating_mul(8))?;
                let entries = (0..n)
                    .map(|i| {
                        let e = &body[4 + i * 8..12 + i * 8];
                        Setting {
                            flags: e[0],
                            id: be32(e) & 0xff_ffff,
                            value: be32(&e[4..]),
                        }
                    })
                    .collect();
                Frame::Settings { flags, entries }
            }
            PING => {
                need(4)?;
                Frame::Ping { id: be32(body) }
            }
            GOAWAY => {
                need(4)?;
                Frame::GoAway {
                    last_good_stream_id: id(&body[..4]),
                    status: if body.len() >= 8 {
                        be32(&body[4..8])
                    } else {
                        0
                    },
                }
            }
            WINDOW_UPDATE => {
                need(8)?;
                Frame::WindowUpdate {
                    stream_id: id(&body[..4]),
                    delta: id(&body[4..8]),
                }
            }
            other => Frame::Other { frame_type: other },
        })
    }
}

/// Reads one frame; `None` when the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut Decoder,
) -> io::Result<Option<Frame>> {
    let mut head = [0u8; 8];
    if r.read(&mut head[..1]).await? == 0 {
        return Ok(None);
    }
    r.read_exact(&mut head[1..]).await?;
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    if head[0] & 0x80 != 0 && len > MAX_CONTROL_LEN {
        return Err(invalid(format!("control frame of {len} bytes")));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    dec.parse(head, &body).map(Some)
}

enum Out {
    Frame(Frame),
    /// Flush, shut the write side down and stop.
    Close,
}

/// A stream the client opened.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    /// What the client sends on it; ends at its FIN, a reset, or the connection's end.
    pub rx: mpsc::Receiver<Vec<u8>>,
    pub tx: StreamWriter,
    /// Becomes true when the client resets the stream (or the connection ends).
    pub reset: watch::Receiver<bool>,
}

/// The server's half of a stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    out: mpsc::Sender<Out>,
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "SPDY connection closed")
}

impl StreamWriter {
    async fn send(&self, f: Frame) -> io::Result<()> {
        self.out.send(Out::Frame(f)).await.map_err(|_| gone())
    }

    /// Accepts the stream (SYN_REPLY without headers).
    pub async fn reply(&self) -> io::Result<()> {
        self.send(Frame::SynReply {
            stream_id: self.id,
            flags: 0,
            headers: Headers::default(),
        })
        .await
    }

    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.send(Frame::Data {
                stream_id: self.id,
                flags: 0,
                data: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }

    /// Half-closes the stream: an empty data frame with FIN.
    pub async fn close(&self) -> io::Result<()> {
        self.send(Frame::Data {
            stream_id: self.id,
            flags: FLAG_FIN,
            data: Vec::new(),
        })
        .await
    }

    pub async fn reset(&self, status: u32) -> io::Result<()> {
        self.send(Frame::RstStream {
            stream_id: self.id,
            status,
        })
        .await
    }
}

/// A server connection: a task reads frames and routes them to the streams, another writes
/// what the streams send.
pub struct Conn {
    out: mpsc::Sender<Out>,
    streams: mpsc::Receiver<Stream>,
    closed: watch::Receiver<bool>,
    last_id: Arc<AtomicU32>,
    pumps: super::Pumps,
}

impl Conn {
    pub fn serve<T: AsyncRead + AsyncWrite + Send + 'static>(io: T) -> io::Result<Conn> {
        let (r, w) = tokio::io::split(io);
        let enc = Encoder::new()?;
        let (out_tx, out_rx) = mpsc::channel(64);
        let (streams_tx, streams_rx) = mpsc::channel(16);
        let (closed_tx, closed_rx) = watch::channel(false);
        let last_id = Arc::new(AtomicU32::new(0));
        let writer = tokio::spawn(write_loop(w, out_rx, enc));
        let reader = tokio::spawn(read_loop(
            r,
            out_tx.clone(),
            streams_tx,
            closed_tx,
            last_id.clone(),
        ));
        Ok(Conn {
            out: out_tx,
            streams: streams_rx,
            closed: closed_rx,
            last_id,
            pumps: super::Pumps { reader, writer },
        })
    }

    /// The next stream the client opens; `None` once the connection is gone.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.streams.recv().await
    }

    /// Refuses the streams the client opens from now on (and those not accepted yet), so that
    /// nothing waits for a reader that will never come.
    pub async fn refuse_new(&mut self) {
        self.streams.close();
        while let Some(s) = self.streams.recv().await {
            let _ = s.tx.reset(REFUSED_STREAM).await;
        }
    }

    /// Becomes true when the client's side of the connection has ended.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// GOAWAY, then the write side shut down after what was queued and the client's side read
    /// to its end ([`super::Pumps::finish`]).
    pub async fn close(&mut self) {
        self.streams.close();
        let _ = self
            .out
            .send(Out::Frame(Frame::GoAway {
                last_good_stream_id: self.last_id.load(Ordering::Relaxed),
                status: 0,
            }))
            .await;
        let _ = self.out.send(Out::Close).await;
        self.pumps.finish().await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(w: W, mut rx: mpsc::Receiver<Out>, mut enc: Encoder) {
    let mut w = tokio::io::BufWriter::new(w);
    'outer: while let Some(mut m) = rx.recv().await {
        // Everything queued goes out in one flush.
        loop {
            match m {
                Out::Frame(f) => match enc.encode(&f) {
                    Ok(b) => {
                        if w.write_all(&b).await.is_err() {
                            break 'outer;
                        }
                    }
                    Err(e) => {
                        tracing::debug!("SPDY: encode {f:?}: {e}");
                        break 'outer;
                    }
                },
                Out::Close => break 'outer,
            }
            match rx.try_recv() {
                Ok(next) => m = next,
                Err(_) => break,
            }
        }
        if w.flush().await.is_err() {
            break;
        }
    }
    let _ = w.flush().await;
    let _ = w.shutdown().await;
}

struct Entry {
    data: Option<mpsc::Sender<Vec<u8>>>,
    reset: watch::Sender<bool>,
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut r: R,
    out: mpsc::Sender<Out>,
    new_streams: mpsc::Sender<Stream>,
    closed: watch::Sender<bool>,
    last_id: Arc<AtomicU32>,
) {
    let mut dec = Decoder::default();
    let mut streams: HashMap<u32, Entry> = HashMap::new();
    let mut accepting = true;
    let rst = |stream_id: u32, status: u32| Out::Frame(Frame::RstStream { stream_id, status });
    loop {
        let f = match read_frame(&mut r, &mut dec).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("SPDY: read: {e}");
                break;
            }
        };
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                // Streams nobody holds any more are forgotten.
                streams.retain(|_, e| {
                    !e.reset.is_closed() || e.data.as_ref().is_some_and(|d| !d.is_closed())
                });
                let last = last_id.load(Ordering::Relaxed);
                if stream_id == 0 || stream_id % 2 == 0 || stream_id <= last {
                    let _ = out.send(rst(stream_id, PROTOCOL_ERROR)).await;
                    continue;
                }
                last_id.store(stream_id, Ordering::Relaxed);
                let (data_tx, data_rx) = mpsc::channel(16);
                let (reset_tx, reset_rx) = watch::channel(false);
                let s = Stream {
                    id: stream_id,
                    headers,
                    rx: data_rx,
                    tx: StreamWriter {
                        id: stream_id,
                        out: out.clone(),
                    },
                    reset: reset_rx,
                };
                if !accepting || new_streams.send(s).await.is_err() {
                    let _ = out.send(rst(stream_id, REFUSED_STREAM)).await;
                    continue;
                }
                streams.insert(
                    stream_id,
                    Entry {
                        data: (flags & FLAG_FIN == 0).then_some(data_tx),
                        reset: reset_tx,
                    },
                );
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(e) = streams.get_mut(&stream_id) {
                    if let Some(tx) = &e.data {
                        if !data.is_empty() && tx.send(data).await.is_err() {
                            e.data = None;
                        }
                    }
                    if flags & FLAG_FIN != 0 {
                        e.data = None;
                    }
                }
            }
            Frame::RstStream { stream_id, .. } => {
                if let Some(e) = streams.remove(&stream_id) {
                    let _ = e.reset.send(true);
                }
            }
            // Pings the client starts have odd ids: echoed. (berthd starts none.)
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = out.send(Out::Frame(Frame::Ping { id })).await;
            }
            // No new streams after GOAWAY; those open go on.
            Frame::GoAway { .. } => accepting = false,
            _ => {}
        }
    }
    for (_, e) in streams.drain() {
        let _ = e.reset.send(true);
    }
    let _ = closed.send(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> Headers {
        let mut h = Headers::default();
        for (n, v) in pairs {
            h.add(n, v);
        }
        h
    }

    fn parse_all(dec: &mut Decoder, mut b: &[u8]) -> Vec<Frame> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let head: [u8; 8] = b[..8].try_into().unwrap();
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            out.push(dec.parse(head, &b[8..8 + len]).unwrap());
            b = &b[8 + len..];
        }
        out
    }

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(DICTIONARY.ends_with(b"utf-,*,enq=0."));
    }

    #[test]
    fn frames_round_trip() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                flags: 0,
                headers: headers(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 0,
                priority: 7,
                flags: FLAG_FIN,
                headers: headers(&[
                    ("streamType", "data"),
                    ("port", "8080"),
                    ("requestid", "0"),
                    ("x-multi", "a"),
                    ("x-multi", "b"),
                ]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::default(),
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: headers(&[("status", "200")]),
            },
            Frame::Data {
                stream_id: 3,
                flags: 0,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: vec![],
            },
            Frame::RstStream {
                stream_id: 5,
                status: CANCEL,
            },
            Frame::Settings {
                flags: 0,
                entries: vec![Setting {
                    flags: 1,
                    id: 7,
                    value: 65536,
                }],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 3,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 1024,
            },
        ];
        let mut enc = Encoder::new().unwrap();
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(enc.encode(f).unwrap());
        }
        let mut dec = Decoder::default();
        let mut got = parse_all(&mut dec, &wire);
        let want: Vec<Frame> = frames
            .into_iter()
            .map(|f| match f {
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers,
                } => Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    flags,
                    headers: Headers(
                        headers
                            .0
                            .into_iter()
                            .map(|(n, v)| (n.to_ascii_lowercase(), v))
                            .collect(),
                    ),
                },
                f => f,
            })
            .collect();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.drain(..).zip(want) {
            assert_eq!(g, w);
        }
    }

    #[test]
    fn frame_layout_is_the_specs() {
        let mut enc = Encoder::new().unwrap();
        assert_eq!(
            enc.encode(&Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: b"ab".to_vec()
            })
            .unwrap(),
            [0, 0, 0, 5, 1, 0, 0, 2, b'a', b'b']
        );
        assert_eq!(
            enc.encode(&Frame::RstStream {
                stream_id: 3,
                status: CANCEL
            })
            .unwrap(),
            [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
        );
        assert_eq!(
            enc.encode(&Frame::Ping { id: 7 }).unwrap(),
            [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]
        );
        // A SYN_REPLY's header block is a zlib stream with the dictionary's id (FDICT).
        let reply = enc
            .encode(&Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: Headers::default(),
            })
            .unwrap();
        assert_eq!(&reply[..4], [0x80, 3, 0, 2]);
        let zlib = &reply[12..];
        assert_eq!(zlib[0] & 0x0f, 8, "deflate");
        assert_ne!(zlib[1] & 0x20, 0, "FDICT");
        // Sync flush: the block ends with an empty stored block.
        assert!(reply.ends_with(&[0, 0, 0xff, 0xff]));
    }

    #[test]
    fn header_blocks_share_one_context() {
        // The second block of the same headers compresses to far less: the context carries.
        let mut enc = Encoder::new().unwrap();
        let h = headers(&[("streamtype", "stdout"), ("x-long", &"v".repeat(200))]);
        let f = |id| Frame::SynStream {
            stream_id: id,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: h.clone(),
        };
        let a = enc.encode(&f(1)).unwrap();
        let b = enc.encode(&f(3)).unwrap();
        assert!(b.len() < a.len(), "{} then {}", a.len(), b.len());
        let mut dec = Decoder::default();
        let mut both = a;
        both.extend(b);
        let got = parse_all(&mut dec, &both);
        assert_eq!(got[1], f(3));
        // Without the first, the second cannot be read.
        let first = 8 + u32::from_be_bytes([0, both[5], both[6], both[7]]) as usize;
        let head: [u8; 8] = both[first..first + 8].try_into().unwrap();
        assert!(Decoder::default().parse(head, &both[first + 8..]).is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let mut dec = Decoder::default();
        // Version 2.
        assert!(dec.parse([0x80, 2, 0, 1, 0, 0, 0, 10], &[0; 10]).is_err());
        // Short bodies.
        assert!(dec.parse([0x80, 3, 0, 1, 0, 0, 0, 4], &[0; 4]).is_err());
        assert!(dec.parse([0x80, 3, 0, 3, 0, 0, 0, 4], &[0; 4]).is_err());
        assert!(dec
            .parse([0x80, 3, 0, 4, 0, 0, 0, 4], &[0xff, 0xff, 0xff, 0xff])
            .is_err());
        // A header block that is not zlib.
        assert!(Decoder::default()
            .parse([0x80, 3, 0, 2, 0, 0, 0, 8], &[0, 0, 0, 1, 1, 2, 3, 4])
            .is_err());
        // Unknown control frames are skipped.
        assert_eq!(
            dec.parse([0x80, 3, 0, 10, 0, 0, 0, 0], &[]).unwrap(),
            Frame::Other { frame_type: 10 }
        );
        // A header block claiming more than it has.
        assert!(parse_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
    }

    #[tokio::test]
    async fn connection_routes_streams_and_answers_pings() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut conn = Conn::serve(server).unwrap();
        let (mut cr, mut cw) = tokio::io::split(client);
        let mut enc = Encoder::new().unwrap();
        let mut dec = Decoder::default();
        let mut send = |f: Frame| enc.encode(&f).unwrap();
        let mut wire = Vec::new();
        wire.extend(send(Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: headers(&[("streamtype", "stdin")]),
        }));
        wire.extend(send(Frame::Data {
            stream_id: 1,
            flags: 0,
            data: b"in".to_vec(),
        }));
        wire.extend(send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: vec![],
        }));
        wire.extend(send(Frame::Ping { id: 1 }));
        cw.write_all(&wire).await.unwrap();

        let mut s = conn.accept().await.unwrap();
        assert_eq!((s.id, s.headers.get("streamType")), (1, Some("stdin")));
        s.tx.reply().await.unwrap();
        assert_eq!(s.rx.recv().await.unwrap(), b"in");
        assert!(s.rx.recv().await.is_none(), "FIN ends the data");
        s.tx.write(b"out").await.unwrap();
        s.tx.close().await.unwrap();

        let mut got = Vec::new();
        while got.len() < 4 {
            got.push(read_frame(&mut cr, &mut dec).await.unwrap().unwrap());
        }
        assert!(got.contains(&Frame::Ping { id: 1 }), "{got:?}");
        let rest: Vec<_> = got
            .into_iter()
            .filter(|f| !matches!(f, Frame::Ping { .. }))
            .collect();
        assert_eq!(
            rest,
            vec![
                Frame::SynReply {
                    stream_id: 1,
                    flags: 0,
                    headers: Headers::default()
                },
                Frame::Data {
                    stream_id: 1,
                    flags: 0,
                    data: b"out".to_vec()
                },
                Frame::Data {
                    stream_id: 1,
                    flags: FLAG_FIN,
                    data: vec![]
                },
            ]
        );

        // A stream id that does not increase is refused; a reset reaches the stream.
        let mut wire = send(Frame::SynStream {
            stream_id: 5,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::default(),
        });
        wire.extend(send(Frame::SynStream {
            stream_id: 3,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::default(),
        }));
        wire.extend(send(Frame::RstStream {
            stream_id: 5,
            status: CANCEL,
        }));
        cw.write_all(&wire).await.unwrap();
        let mut s5 = conn.accept().await.unwrap();
        assert_eq!(s5.id, 5);
        assert_eq!(
            read_frame(&mut cr, &mut dec).await.unwrap().unwrap(),
            Frame::RstStream {
                stream_id: 3,
                status: PROTOCOL_ERROR
            }
        );
        s5.reset.wait_for(|r| *r).await.unwrap();
        assert!(s5.rx.recv().await.is_none());

        // Once new streams are refused, the client is told so.
        conn.refuse_new().await;
        cw.write_all(&send(Frame::SynStream {
            stream_id: 7,
            associated_to: 0,
            priority: 0,
            flags: 0,
            headers: Headers::default(),
        }))
        .await
        .unwrap();
        assert_eq!(
            read_frame(&mut cr, &mut dec).await.unwrap().unwrap(),
            Frame::RstStream {
                stream_id: 7,
                status: REFUSED_STREAM
            }
        );

        // The client goes: the connection says so; closing sends GOAWAY.
        cw.shutdown().await.unwrap();
        let mut closed = conn.closed();
        closed.wait_for(|c| *c).await.unwrap();
        assert!(conn.accept().await.is_none());
        conn.close().await;
        assert_eq!(
            read_frame(&mut cr, &mut dec).await.unwrap().unwrap(),
            Frame::GoAway {
                last_good_stream_id: 7,
                status: 0
            }
        );
        assert!(read_frame(&mut cr, &mut dec).await.unwrap().is_none());
    }
}
