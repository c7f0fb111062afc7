//! Accepting the `:authority` that gRPC clients send over a unix socket.
//!
//! A gRPC client that dials a unix socket by its path sends the path as the HTTP/2
//! `:authority` (`/run/berth/berthd.sock`): kubelets before 1.26, the crictl and critest of
//! that time, grpc-java and Python's grpc do. The HTTP/2 library under berthd's gRPC server
//! refuses such a request before berthd sees it (an authority may not contain `/`), and the
//! client sees `RST_STREAM with error code: PROTOCOL_ERROR`. Go servers (containerd, CRI-O)
//! accept it, so these clients expect it to work.
//!
//! [`FixAuthority`] sits between the socket and the server and rewrites, in what the client
//! sends, an `:authority` that is not a valid authority to `localhost` (what newer kubelets
//! send). Header blocks are HPACK-compressed with a table that each side keeps per connection,
//! so the change cannot be made in place: the first header block of a connection is decoded;
//! if its authority is valid (berth's own clients, grpc-go ≥ 1.x with a `unix:` target), the
//! rest of the connection passes through untouched. Otherwise every header block of the
//! connection is decoded (with the client's table) and sent on re-encoded as literals that do
//! not use the server's table, so both tables stay consistent. Other frames pass as they are;
//! what the server writes back is not touched.

use bytes::{Buf, BytesMut};
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The largest frame the server accepts until it says otherwise (SETTINGS_MAX_FRAME_SIZE's
/// initial value, which berthd's server keeps): rewritten blocks are cut to it.
const MAX_FRAME: usize = 16_384;
/// The server's HPACK table size (SETTINGS_HEADER_TABLE_SIZE's initial value, which berthd's
/// server keeps): the client's encoder may not use more.
const TABLE_SIZE: usize = 4_096;
/// A header block larger than this is not buffered to be rewritten: the connection is closed.
const MAX_BLOCK: usize = 1 << 20;
/// A header list that decodes larger than this (names, values and 32 bytes per field, as
/// HTTP/2 counts it) is not rewritten: HPACK can index one large entry many times, and the
/// server refuses lists far smaller (16 KiB) anyway.
const MAX_LIST: usize = 256 << 10;
/// What replaces an invalid authority.
const LOCALHOST: &[u8] = b"localhost";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Before the client's connection preface.
    Preface,
    /// Frames, before the first header block is complete.
    Undecided,
    /// Every header block is rewritten.
    Rewrite,
    /// Everything passes untouched.
    Pass,
}

/// A header block being gathered: HEADERS then CONTINUATION frames up to END_HEADERS.
struct Block {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    raw: Vec<u8>,
}

/// A connection from a client whose invalid `:authority` is rewritten (see the module's
/// documentation).
pub struct FixAuthority<S> {
    inner: S,
    mode: Mode,
    /// Read from the client, not yet looked at.
    input: BytesMut,
    /// Ready for the server.
    output: BytesMut,
    /// Payload bytes of the current frame still to pass through as they are.
    passing: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    eof: bool,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        FixAuthority {
            inner,
            mode: Mode::Preface,
            input: BytesMut::new(),
            output: BytesMut::new(),
            passing: 0,
            block: None,
            decoder,
            eof: false,
        }
    }

    /// Everything from here on passes untouched (after what was gathered, as it came).
    fn pass(&mut self) {
        if let Some(b) = self.block.take() {
            self.output.extend_from_slice(&b.raw);
        }
        self.output.extend_from_slice(&self.input.split());
        self.mode = Mode::Pass;
    }

    /// Moves what can be decided from `input` to `output`.
    fn process(&mut self) -> io::Result<()> {
        loop {
            if self.mode == Mode::Pass {
                self.output.extend_from_slice(&self.input.split());
                return Ok(());
            }
            if self.passing > 0 {
                let n = self.passing.min(self.input.len());
                self.output.extend_from_slice(&self.input.split_to(n));
                self.passing -= n;
                if self.passing > 0 {
                    return Ok(());
                }
                continue;
            }
            if self.mode == Mode::Preface {
                if self.input.len() < PREFACE.len() {
                    if !PREFACE.starts_with(&self.input) {
                        self.pass();
                    }
                    return Ok(());
                }
                if &self.input[..PREFACE.len()] != PREFACE {
                    // Not HTTP/2: the server answers it as it would.
                    self.pass();
                    return Ok(());
                }
                self.output
                    .extend_from_slice(&self.input.split_to(PREFACE.len()));
                self.mode = Mode::Undecided;
                continue;
            }
            if self.input.len() < FRAME_HEADER {
                return Ok(());
            }
            let h = &self.input[..FRAME_HEADER];
            let len = u32::from_be_bytes([0, h[0], h[1], h[2]]) as usize;
            let (kind, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let in_block = self.block.is_some();
            match kind {
                HEADERS if !in_block => {}
                CONTINUATION if in_block => {}
                _ if in_block => {
                    // Anything else in the middle of a header block is the client's error:
                    // the server sees it as it was sent and says so.
                    self.pass();
                    return Ok(());
                }
                _ => {
                    self.output
                        .extend_from_slice(&self.input.split_to(FRAME_HEADER));
                    self.passing = len;
                    continue;
                }
            }
            let gathered = self.block.as_ref().map_or(0, |b| b.raw.len());
            if gathered + FRAME_HEADER + len > MAX_BLOCK {
                if self.mode == Mode::Undecided {
                    self.pass();
                    return Ok(());
                }
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "header block too large",
                ));
            }
            if self.input.len() < FRAME_HEADER + len {
                return Ok(());
            }
            let frame = self.input.split_to(FRAME_HEADER + len);
            let mut payload = &frame[FRAME_HEADER..];
            let block = self.block.get_or_insert_with(|| Block {
                stream,
                flags,
                priority: None,
                fragment: Vec::new(),
                raw: Vec::new(),
            });
            block.raw.extend_from_slice(&frame);
            if kind == HEADERS {
                let mut pad = 0;
                if flags & PADDED != 0 && !payload.is_empty() {
                    pad = payload[0] as usize;
                    payload = &payload[1..];
                }
                if flags & PRIORITY != 0 {
                    if payload.len() < 5 {
                        self.pass();
                        return Ok(());
                    }
                    block.priority = Some(payload[..5].try_into().expect("5 bytes"));
                    payload = &payload[5..];
                }
                if pad > payload.len() {
                    // A malformed frame: the server sees it as it was sent.
                    self.pass();
                    return Ok(());
                }
                payload = &payload[..payload.len() - pad];
            } else if stream != block.stream {
                self.pass();
                return Ok(());
            }
            block.fragment.extend_from_slice(payload);
            if flags & END_HEADERS != 0 {
                let block = self.block.take().expect("a block");
                self.finish(block)?;
            }
        }
    }

    /// A complete header block: decoded, and sent on as it was or rewritten.
    fn finish(&mut self, block: Block) -> io::Result<()> {
        let mut headers = Vec::new();
        let mut size = 0usize;
        let decoded = self.decoder.decode_with_cb(&block.fragment, |n, v| {
            size = size.saturating_add(n.len() + v.len() + 32);
            if size <= MAX_LIST {
                headers.push((n.into_owned(), v.into_owned()));
            }
        });
        if decoded.is_err() || size > MAX_LIST {
            if self.mode == Mode::Rewrite {
                // The server's table no longer follows the client's: the connection ends.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a header block that cannot be rewritten",
                ));
            }
            // The server finds the same error in it, or refuses its size.
            self.block = Some(block);
            self.pass();
            return Ok(());
        }
        let invalid = headers
            .iter()
            .any(|(n, v)| n == b":authority" && !valid_authority(v));
        if self.mode == Mode::Undecided && !invalid {
            self.output.extend_from_slice(&block.raw);
            self.mode = Mode::Pass;
            return Ok(());
        }
        self.mode = Mode::Rewrite;
        let mut encoded = Vec::with_capacity(block.fragment.len() + 64);
        for (name, value) in &headers {
            let value: &[u8] = if name == b":authority" && !valid_authority(value) {
                LOCALHOST
            } else {
                value
            };
            literal(&mut encoded, name, value);
        }
        self.frames(&block, &encoded);
        Ok(())
    }

    /// The header block `encoded` as a HEADERS frame and as many CONTINUATION frames as needed.
    fn frames(&mut self, block: &Block, encoded: &[u8]) {
        let first_room = MAX_FRAME - if block.priority.is_some() { 5 } else { 0 };
        let (first, mut rest) = encoded.split_at(encoded.len().min(first_room));
        let mut flags = block.flags & (END_STREAM | PRIORITY);
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        let prio = block.priority.as_ref().map_or(&[][..], |p| &p[..]);
        self.frame_header(prio.len() + first.len(), HEADERS, flags, block.stream);
        self.output.extend_from_slice(prio);
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, more) = rest.split_at(rest.len().min(MAX_FRAME));
            let flags = if more.is_empty() { END_HEADERS } else { 0 };
            self.frame_header(chunk.len(), CONTINUATION, flags, block.stream);
            self.output.extend_from_slice(chunk);
            rest = more;
        }
    }

    fn frame_header(&mut self, len: usize, kind: u8, flags: u8, stream: u32) {
        let l = (len as u32).to_be_bytes();
        self.output
            .extend_from_slice(&[l[1], l[2], l[3], kind, flags]);
        self.output.extend_from_slice(&stream.to_be_bytes());
    }
}

/// Whether HTTP/2 (the `http` crate's parser, which the server uses) takes `v` as an authority.
fn valid_authority(v: &[u8]) -> bool {
    http::uri::Authority::try_from(v).is_ok()
}

/// A header field as an HPACK literal without indexing, name and value as plain strings.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    for s in [name, value] {
        integer(out, s.len(), 7, 0);
        out.extend_from_slice(s);
    }
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 5.1); `first` holds the bits above it.
fn integer(out: &mut Vec<u8>, mut v: usize, n: u8, first: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.output.is_empty() {
                let n = buf.remaining().min(this.output.len());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.mode == Mode::Pass && this.input.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            let mut chunk = [0u8; 8192];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                // The client is gone: what was gathered goes on as it came.
                this.eof = true;
                this.pass();
                continue;
            }
            this.input.extend_from_slice(rb.filled());
            this.process()?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected
    for FixAuthority<S>
{
    type ConnectInfo = S::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn headers_frame(out: &mut Vec<u8>, stream: u32, flags: u8, block: &[u8]) {
        let l = (block.len() as u32).to_be_bytes();
        out.extend_from_slice(&[l[1], l[2], l[3], HEADERS, flags]);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(block);
    }

    fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/runtime.v1alpha2.RuntimeService/Version"),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ]
        .iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
    }

    /// What the server reads when the client writes `sent`.
    async fn through(sent: Vec<u8>) -> Vec<u8> {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut fixed = FixAuthority::new(server);
        client.write_all(&sent).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        fixed.read_to_end(&mut got).await.unwrap();
        got
    }

    /// The header blocks of the frames in `wire` (after the preface), decoded in order.
    fn decode_all(wire: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        assert!(wire.starts_with(PREFACE));
        let mut rest = &wire[PREFACE.len()..];
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut fragment = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            let (kind, flags) = (rest[3], rest[4]);
            let mut payload = &rest[FRAME_HEADER..FRAME_HEADER + len];
            if kind == HEADERS || kind == CONTINUATION {
                if kind == HEADERS && flags & PRIORITY != 0 {
                    payload = &payload[5..];
                }
                fragment.extend_from_slice(payload);
                if flags & END_HEADERS != 0 {
                    blocks.push(dec.decode(&fragment).unwrap());
                    fragment.clear();
                }
            }
            rest = &rest[FRAME_HEADER + len..];
        }
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> String {
        let v = &block.iter().find(|(n, _)| n == b":authority").unwrap().1;
        String::from_utf8(v.clone()).unwrap()
    }

    #[tokio::test]
    async fn a_socket_path_becomes_localhost_in_every_request() {
        // Two requests as grpc-go sends them: the first adds :path, :authority and
        // content-type to the client's table, the second refers to them by index.
        let string = |out: &mut Vec<u8>, s: &str| {
            integer(out, s.len(), 7, 0);
            out.extend_from_slice(s.as_bytes());
        };
        let mut first = vec![0x83, 0x86, 0x44];
        string(&mut first, "/runtime.v1alpha2.RuntimeService/Version");
        first.push(0x41);
        string(&mut first, "/run/berth/berthd.sock");
        first.push(0x5f);
        string(&mut first, "application/grpc");
        let second = [0x83, 0x86, 0xc0, 0xbf, 0xbe];
        let mut wire = PREFACE.to_vec();
        // SETTINGS, then the first request split into HEADERS (padded, with priority) and a
        // CONTINUATION, a DATA frame, then the second.
        wire.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        let (a, b) = first.split_at(7);
        let mut h = vec![2u8]; // pad length
        h.extend_from_slice(&[0, 0, 0, 0, 15]); // priority
        h.extend_from_slice(a);
        h.extend_from_slice(&[0, 0]); // padding
        headers_frame(&mut wire, 1, PADDED | PRIORITY, &h);
        let l = (b.len() as u32).to_be_bytes();
        wire.extend_from_slice(&[l[1], l[2], l[3], CONTINUATION, END_HEADERS, 0, 0, 0, 1]);
        wire.extend_from_slice(b);
        wire.extend_from_slice(&[0, 0, 5, 0, END_STREAM, 0, 0, 0, 1, 0, 0, 0, 0, 0]);
        headers_frame(&mut wire, 3, END_HEADERS, &second);

        let got = through(wire).await;
        let blocks = decode_all(&got);
        assert_eq!(blocks.len(), 2);
        for b in &blocks {
            assert_eq!(authority(b), "localhost");
            assert_eq!(b[2].1, b"/runtime.v1alpha2.RuntimeService/Version");
        }
        // The DATA frame and the SETTINGS passed unchanged.
        assert!(got
            .windows(14)
            .any(|w| w == [0, 0, 5, 0, END_STREAM, 0, 0, 0, 1, 0, 0, 0, 0, 0]));
        assert_eq!(
            &got[PREFACE.len()..PREFACE.len() + 9],
            &[0, 0, 0, 4, 0, 0, 0, 0, 0]
        );
    }

    #[tokio::test]
    async fn a_valid_authority_passes_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let req = request("localhost");
        let block = enc.encode(req.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut wire = PREFACE.to_vec();
        headers_frame(&mut wire, 1, END_HEADERS, &block);
        headers_frame(&mut wire, 3, END_HEADERS, &block[..3]);
        wire.extend_from_slice(b"anything after is not looked at");
        assert_eq!(through(wire.clone()).await, wire);
    }

    #[tokio::test]
    async fn what_is_not_http2_or_not_hpack_reaches_the_server_as_sent() {
        let wire = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        assert_eq!(through(wire.clone()).await, wire);
        let mut wire = PREFACE.to_vec();
        headers_frame(
            &mut wire,
            1,
            END_HEADERS,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        );
        assert_eq!(through(wire.clone()).await, wire);
        // Cut short in the middle of a frame.
        let mut wire = PREFACE.to_vec();
        headers_frame(&mut wire, 1, END_HEADERS, &[0x82, 0x86]);
        wire.truncate(wire.len() - 1);
        assert_eq!(through(wire.clone()).await, wire);
    }

    #[tokio::test]
    async fn a_header_list_that_decodes_too_large_is_not_rewritten() {
        // One 4 KB entry in the client's table, then referred to 100 000 times (400 MB).
        let mut block = vec![0x41];
        integer(&mut block, 4000, 7, 0);
        block.extend_from_slice(&[b'/'; 4000]);
        block.extend(std::iter::repeat_n(0xbe, 100_000));
        let mut wire = PREFACE.to_vec();
        headers_frame(&mut wire, 1, END_HEADERS, &block);
        // Undecided: passed as it came, for the server to refuse.
        assert_eq!(through(wire.clone()).await, wire);
        // Once rewriting: the connection ends.
        let mut first = vec![0x41];
        integer(&mut first, 5, 7, 0);
        first.extend_from_slice(b"/a.so");
        let mut wire = PREFACE.to_vec();
        headers_frame(&mut wire, 1, END_HEADERS, &first);
        headers_frame(&mut wire, 3, END_HEADERS, &block);
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut fixed = FixAuthority::new(server);
        client.write_all(&wire).await.unwrap();
        drop(client);
        let mut got = Vec::new();
        let e = fixed.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_large_block_is_cut_into_continuations() {
        let mut req = request("/run/berth/berthd.sock");
        req.push((b"x-big".to_vec(), vec![b'a'; 40_000]));
        let block = loona_hpack::Encoder::new().encode(req.iter().map(|(n, v)| (&n[..], &v[..])));
        let mut wire = PREFACE.to_vec();
        let (a, rest) = block.split_at(MAX_FRAME);
        let (b, c) = rest.split_at(MAX_FRAME);
        headers_frame(&mut wire, 1, END_STREAM, a);
        for (part, flags) in [(b, 0), (c, END_HEADERS)] {
            let l = (part.len() as u32).to_be_bytes();
            wire.extend_from_slice(&[l[1], l[2], l[3], CONTINUATION, flags, 0, 0, 0, 1]);
            wire.extend_from_slice(part);
        }
        let got = through(wire).await;
        let blocks = decode_all(&got);
        assert_eq!(authority(&blocks[0]), "localhost");
        assert_eq!(blocks[0][5].1.len(), 40_000);
        // No frame is larger than the server's limit; END_STREAM stays on the HEADERS frame.
        let mut rest = &got[PREFACE.len()..];
        let mut first = true;
        while !rest.is_empty() {
            let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]) as usize;
            assert!(len <= MAX_FRAME);
            if first {
                assert_eq!((rest[3], rest[4] & END_STREAM), (HEADERS, END_STREAM));
                first = false;
            }
            rest = &rest[FRAME_HEADER + len..];
        }
    }
}
