//! The requests the streaming URLs stand for, behind single-use random tokens (as the
//! kubelet's streaming server keeps them): a token is good for one request within its
//! lifetime.

use crate::request::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::Error;
use base64::Engine;
use std::collections::HashMap;
use std::io::Read;
use std::time::{Duration, Instant};

/// How long a token is good for.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// At most this many unused tokens (the kubelet's limit); more is ResourceExhausted.
const MAX_IN_FLIGHT: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

pub struct Cache {
    ttl: Duration,
    entries: HashMap<String, (Instant, Request)>,
}

/// 128 random bits, URL-safe.
fn token() -> Result<String, Error> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::internal(format!("streaming token: /dev/urandom: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl Cache {
    pub fn new(ttl: Duration) -> Cache {
        Cache {
            ttl,
            entries: HashMap::new(),
        }
    }

    pub fn insert(&mut self, r: Request) -> Result<String, Error> {
        let now = Instant::now();
        self.entries.retain(|_, (expires, _)| *expires > now);
        if self.entries.len() >= MAX_IN_FLIGHT {
            return Err(Error::resource_exhausted(
                "maximum number of in-flight streaming requests exceeded",
            ));
        }
        loop {
            let t = token()?;
            if !self.entries.contains_key(&t) {
                self.entries.insert(t.clone(), (now + self.ttl, r));
                return Ok(t);
            }
        }
    }

    /// The request behind `token`, which is gone afterwards; `None` if unknown or expired.
    pub fn consume(&mut self, token: &str) -> Option<Request> {
        let (expires, r) = self.entries.remove(token)?;
        (Instant::now() < expires).then_some(r)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Request {
        Request::PortForward(PortForwardRequest {
            pod_sandbox_id: "p".into(),
            port: vec![80],
        })
    }

    #[test]
    fn tokens_are_single_use() {
        let mut c = Cache::new(TOKEN_TTL);
        let a = c.insert(pf()).unwrap();
        let b = c.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert!(a
            .bytes()
            .all(|x| x.is_ascii_alphanumeric() || x == b'-' || x == b'_'));
        assert_eq!(c.consume(&a), Some(pf()));
        assert_eq!(c.consume(&a), None);
        assert_eq!(c.consume("nosuch"), None);
        assert_eq!(c.consume(&b), Some(pf()));
    }

    #[test]
    fn tokens_expire() {
        let mut c = Cache::new(Duration::from_millis(20));
        let a = c.insert(pf()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(c.consume(&a), None);
        // Expired entries go at the next insert.
        c.insert(pf()).unwrap();
        std::thread::sleep(Duration::from_millis(30));
        c.insert(pf()).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn in_flight_is_limited() {
        let mut c = Cache::new(TOKEN_TTL);
        for _ in 0..MAX_IN_FLIGHT {
            c.insert(pf()).unwrap();
        }
        let e = c.insert(pf()).unwrap_err();
        assert_eq!(e.code(), crate::Code::ResourceExhausted);
    }
}
