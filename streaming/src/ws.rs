//! The Kubernetes WebSocket channel protocols: every message is prefixed with the number of
//! the channel it belongs to: a byte in the binary protocols (`channel.k8s.io`,
//! `v4.channel.k8s.io`, `v5.channel.k8s.io`), an ASCII digit followed by base64 in the text
//! ones (`base64.channel.k8s.io`, `v4.base64.channel.k8s.io`). In v5 the client half-closes a
//! channel with `[255, channel]`. The WebSocket framing itself is tokio-tungstenite's.

use base64::Engine;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// v5's close signal: `[CLOSE_SIGNAL, channel]`.
pub const CLOSE_SIGNAL: u8 = 255;

/// Output is cut into messages of at most this size.
const MAX_CHUNK: usize = 32 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Binary,
    Base64,
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.trim().as_bytes())
}

/// A message on `channel`.
pub fn encode(codec: Codec, channel: u8, data: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut b = Vec::with_capacity(data.len() + 1);
            b.push(channel);
            b.extend_from_slice(data);
            Message::Binary(b.into())
        }
        Codec::Base64 => Message::Text(
            format!(
                "{}{}",
                (b'0' + channel) as char,
                base64::engine::general_purpose::STANDARD.encode(data)
            )
            .into(),
        ),
    }
}

/// What a client message means.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    Data(u8, Vec<u8>),
    /// v5: the client will send nothing more on this channel.
    Close(u8),
    /// Control messages, empty or undecodable ones.
    Ignore,
}

pub fn decode(codec: Codec, v5: bool, msg: &Message) -> Incoming {
    let raw: &[u8] = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => t.as_bytes(),
        _ => return Incoming::Ignore,
    };
    let Some((&first, rest)) = raw.split_first() else {
        return Incoming::Ignore;
    };
    if v5 && first == CLOSE_SIGNAL {
        return match rest {
            [ch] => Incoming::Close(*ch),
            _ => Incoming::Ignore,
        };
    }
    match codec {
        Codec::Binary => Incoming::Data(first, rest.to_vec()),
        Codec::Base64 => match base64::engine::general_purpose::STANDARD.decode(rest) {
            Ok(d) => Incoming::Data(first.wrapping_sub(b'0'), d),
            Err(_) => Incoming::Ignore,
        },
    }
}

enum Out {
    Msg(Message),
    Close,
}

/// Writes one channel.
#[derive(Clone)]
pub struct ChannelWriter {
    channel: u8,
    codec: Codec,
    out: mpsc::Sender<Out>,
}

impl ChannelWriter {
    /// Sends `data` (an empty message if it is empty).
    pub async fn write(&self, data: &[u8]) -> io::Result<()> {
        let mut chunks: Vec<&[u8]> = data.chunks(MAX_CHUNK).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for c in chunks {
            self.out
                .send(Out::Msg(encode(self.codec, self.channel, c)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed"))?;
        }
        Ok(())
    }
}

/// A server connection: a task reads messages and routes them by channel, another writes.
pub struct Conn {
    codec: Codec,
    out: mpsc::Sender<Out>,
    closed: watch::Receiver<bool>,
    pumps: super::Pumps,
}

impl Conn {
    /// Serves the upgraded connection `io`. What the client sends on channel `c` goes to
    /// `routes[c]`, which is dropped at v5's close signal for `c` or when the connection ends;
    /// other channels are ignored.
    pub async fn serve<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
        io: T,
        codec: Codec,
        v5: bool,
        routes: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    ) -> Conn {
        let ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
        let (sink, stream) = ws.split();
        let (out_tx, out_rx) = mpsc::channel(64);
        let (closed_tx, closed_rx) = watch::channel(false);
        Conn {
            codec,
            out: out_tx,
            closed: closed_rx,
            pumps: super::Pumps {
                reader: tokio::spawn(read_loop(stream, codec, v5, routes, closed_tx)),
                writer: tokio::spawn(write_loop(sink, out_rx)),
            },
        }
    }

    pub fn writer(&self, channel: u8) -> ChannelWriter {
        ChannelWriter {
            channel,
            codec: self.codec,
            out: self.out.clone(),
        }
    }

    /// Becomes true when the client closed or dropped the connection.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    /// Sends a normal close after what is queued, then waits for the client's
    /// ([`super::Pumps::finish`]).
    pub async fn close(&mut self) {
        let _ = self.out.send(Out::Close).await;
        self.pumps.finish().await;
    }
}

async fn read_loop<T: AsyncRead + AsyncWrite + Unpin>(
    mut stream: SplitStream<WebSocketStream<T>>,
    codec: Codec,
    v5: bool,
    mut routes: HashMap<u8, mpsc::Sender<Vec<u8>>>,
    closed: watch::Sender<bool>,
) {
    while let Some(m) = stream.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("WebSocket: read: {e}");
                break;
            }
        };
        if let Message::Close(_) = m {
            // Nothing more comes; go on reading so that tungstenite can answer the close.
            routes.clear();
            let _ = closed.send(true);
            continue;
        }
        match decode(codec, v5, &m) {
            Incoming::Data(ch, data) => {
                if let Some(tx) = routes.get(&ch) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        routes.remove(&ch);
                    }
                }
            }
            Incoming::Close(ch) => {
                routes.remove(&ch);
            }
            Incoming::Ignore => {}
        }
    }
    routes.clear();
    let _ = closed.send(true);
}

async fn write_loop<T: AsyncRead + AsyncWrite + Unpin>(
    mut sink: SplitSink<WebSocketStream<T>, Message>,
    mut rx: mpsc::Receiver<Out>,
) {
    'outer: while let Some(mut m) = rx.recv().await {
        loop {
            match m {
                Out::Msg(msg) => {
                    if sink.feed(msg).await.is_err() {
                        break 'outer;
                    }
                }
                Out::Close => {
                    let _ = sink
                        .send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Normal,
                            reason: "".into(),
                        })))
                        .await;
                    break 'outer;
                }
            }
            match rx.try_recv() {
                Ok(next) => m = next,
                Err(_) => break,
            }
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    let _ = sink.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_prefixes() {
        let m = encode(Codec::Binary, 1, b"out");
        assert_eq!(m, Message::Binary(b"\x01out".to_vec().into()));
        assert_eq!(
            decode(Codec::Binary, false, &m),
            Incoming::Data(1, b"out".to_vec())
        );
        // An empty message still names its channel (the "connected" message).
        assert_eq!(
            encode(Codec::Binary, 3, b""),
            Message::Binary(vec![3].into())
        );
        let m = encode(Codec::Base64, 2, b"err\n");
        assert_eq!(m, Message::Text("2ZXJyCg==".into()));
        assert_eq!(
            decode(Codec::Base64, false, &m),
            Incoming::Data(2, b"err\n".to_vec())
        );
        assert_eq!(
            decode(Codec::Base64, false, &Message::Text("0!!".into())),
            Incoming::Ignore
        );
    }

    #[test]
    fn v5_close_signal() {
        let close = Message::Binary(vec![255, 0].into());
        assert_eq!(decode(Codec::Binary, true, &close), Incoming::Close(0));
        // Before v5, 255 is just a channel number.
        assert_eq!(
            decode(Codec::Binary, false, &close),
            Incoming::Data(255, vec![0])
        );
        assert_eq!(
            decode(
                Codec::Binary,
                true,
                &Message::Binary(vec![255, 0, 1].into())
            ),
            Incoming::Ignore
        );
        assert_eq!(
            decode(Codec::Binary, true, &Message::Binary(vec![].into())),
            Incoming::Ignore
        );
        assert_eq!(
            decode(Codec::Binary, true, &Message::Ping(vec![].into())),
            Incoming::Ignore
        );
    }

    #[test]
    fn accept_key_is_rfc6455s() {
        assert_eq!(
            accept_key("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[tokio::test]
    async fn connection_routes_channels() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let (stdin_tx, mut stdin_rx) = mpsc::channel(4);
        let (resize_tx, mut resize_rx) = mpsc::channel(4);
        let routes = HashMap::from([(0, stdin_tx), (4, resize_tx)]);
        let server = tokio::spawn(async move {
            let conn = Conn::serve(server, Codec::Binary, true, routes).await;
            conn.writer(1).write(b"hello").await.unwrap();
            conn
        });
        let mut client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
        let mut conn = server.await.unwrap();
        assert_eq!(
            client.next().await.unwrap().unwrap(),
            Message::Binary(b"\x01hello".to_vec().into())
        );
        client
            .send(Message::Binary(b"\x00in".to_vec().into()))
            .await
            .unwrap();
        client
            .send(Message::Binary(
                br#"{"Width":80,"Height":24}"#.to_vec().into(),
            ))
            .await
            .unwrap();
        client
            .send(Message::Binary(b"\x04{}".to_vec().into()))
            .await
            .unwrap();
        client
            .send(Message::Binary(vec![255, 0].into()))
            .await
            .unwrap();
        assert_eq!(stdin_rx.recv().await.unwrap(), b"in");
        assert!(stdin_rx.recv().await.is_none(), "closed by the signal");
        assert_eq!(resize_rx.recv().await.unwrap(), b"{}");
        // The server closes: the client sees a normal close.
        let closing = tokio::spawn(async move {
            conn.close().await;
            conn
        });
        match client.next().await.unwrap().unwrap() {
            Message::Close(Some(f)) => assert_eq!(f.code, CloseCode::Normal),
            m => panic!("{m:?}"),
        }
        assert!(client.next().await.is_none());
        let conn = closing.await.unwrap();
        assert!(*conn.closed().borrow());
        assert!(resize_rx.recv().await.is_none());
    }
}
