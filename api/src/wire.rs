//! Helpers for both ends of berth's API: time as the API carries it, and a blocking reader
//! over the chunks of a stream.

use std::io::Read;

pub use berth_time::{now_nanos, parse_rfc3339, rfc3339_nanos};

/// Reads the chunks a channel delivers as one byte stream (a tar coming over gRPC, say).
pub struct ChanReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChanReader {
    pub fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> ChanReader {
        ChanReader {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChanReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
