//! Sealing and opening of requests and responses inside a session.
//!
//! Nonce (12 bytes) = `direction (1) || 0 0 0 || seq (8, big-endian)`, with direction 1 for
//! client-to-server and 2 for server-to-client; each direction has its own key as well.
//! Associated data = `session_id (16) || seq (8, big-endian)`.
//!
//! The client never reuses a `seq` (it counts up), and the server seals a response only
//! for a `seq` it has just accepted once from its replay window, so no nonce is ever used
//! twice under one key.

use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::{
    codec::Bytes,
    envelope::{SealedRequest, SealedResponse},
    limits::MAX_SEALED_BODY,
    secret::Key32,
    session::{
        keys::{SessionId, SessionKeys},
        replay::{ReplayError, ReplayWindow},
    },
};

const C2S: u8 = 1;
const S2C: u8 = 2;
const TAG_LEN: usize = 16;

/// A sealed message that could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The ciphertext did not authenticate (wrong key, altered, or wrong seq/session).
    #[error("the sealed message did not authenticate")]
    BadSeal,
    /// The sequence number was refused by the replay window.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The response does not answer the request that was sent.
    #[error("the response answers another request")]
    WrongSequence,
    /// The plaintext is larger than a sealed body may be.
    #[error("the message is too large to seal")]
    TooLarge,
    /// The client used up its sequence numbers (after 2^64 - 1 requests).
    #[error("the session has no sequence numbers left")]
    Exhausted,
}

fn key(k: &Key32) -> LessSafeKey {
    // CHACHA20_POLY1305 takes exactly 32-byte keys, which is what Key32 holds.
    match UnboundKey::new(&CHACHA20_POLY1305, k.expose_secret()) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable_key(),
    }
}

#[cold]
fn unreachable_key() -> LessSafeKey {
    // A 32-byte key is always accepted; this only keeps the type checker happy without panic.
    #[allow(clippy::panic)]
    {
        panic!("ChaCha20-Poly1305 refused a 32-byte key")
    }
}

fn nonce(direction: u8, seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = direction;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(id: &SessionId, seq: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..16].copy_from_slice(&id.0);
    a[16..].copy_from_slice(&seq.to_be_bytes());
    a
}

fn seal(
    key: &LessSafeKey,
    dir: u8,
    id: &SessionId,
    seq: u64,
    plain: &[u8],
) -> Result<Bytes<MAX_SEALED_BODY>, ChannelError> {
    if plain.len() + TAG_LEN > MAX_SEALED_BODY {
        return Err(ChannelError::TooLarge);
    }
    let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
    buf.extend_from_slice(plain);
    key.seal_in_place_append_tag(nonce(dir, seq), Aad::from(aad(id, seq)), &mut buf)
        .map_err(|_| ChannelError::TooLarge)?;
    Bytes::new(buf).ok_or(ChannelError::TooLarge)
}

fn open(
    key: &LessSafeKey,
    dir: u8,
    id: &SessionId,
    seq: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    let mut buf = sealed.to_vec();
    let len = key
        .open_in_place(nonce(dir, seq), Aad::from(aad(id, seq)), &mut buf)
        .map_err(|_| ChannelError::BadSeal)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// The client's end of a session. Shared by every task that sends in the session: the
/// sequence counter is atomic, so concurrent requests never share a number.
pub struct ClientChannel {
    id: SessionId,
    c2s: LessSafeKey,
    s2c: LessSafeKey,
    next_seq: AtomicU64,
}

impl std::fmt::Debug for ClientChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientChannel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ClientChannel {
    /// The client's end of the session derived from `keys`.
    pub fn new(keys: &SessionKeys) -> Self {
        Self {
            id: keys.id,
            c2s: key(&keys.c2s),
            s2c: key(&keys.s2c),
            next_seq: AtomicU64::new(1),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Seals `plain` as the next request. Returns the request; its `seq` is what
    /// [`Self::open_response`] must be given.
    pub fn seal_request(&self, plain: &[u8]) -> Result<SealedRequest, ChannelError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        if seq == u64::MAX {
            return Err(ChannelError::Exhausted);
        }
        let body = seal(&self.c2s, C2S, &self.id, seq, plain)?;
        Ok(SealedRequest {
            session_id: self.id,
            seq,
            body,
        })
    }

    /// Opens the response to the request that carried `seq`.
    pub fn open_response(&self, seq: u64, resp: &SealedResponse) -> Result<Vec<u8>, ChannelError> {
        if resp.seq != seq {
            return Err(ChannelError::WrongSequence);
        }
        open(&self.s2c, S2C, &self.id, seq, resp.body.as_slice())
    }
}

/// The server's end of a session: keys only. The replay window is kept by the caller, who
/// decides how it is shared between threads.
///
/// A server holds one of these per open session, so it keeps the raw 32-byte keys (zeroized
/// on drop) and makes ring's key for each message: ring's `LessSafeKey` is sized for its
/// largest algorithm (AES-GCM's expanded key and tables, about half a KiB), and setting up
/// a ChaCha20-Poly1305 key is a copy of its 32 bytes.
pub struct ServerChannel {
    id: SessionId,
    c2s: Key32,
    s2c: Key32,
}

impl std::fmt::Debug for ServerChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChannel")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ServerChannel {
    /// The server's end of the session derived from `keys`.
    pub fn new(keys: &SessionKeys) -> Self {
        Self {
            id: keys.id,
            c2s: keys.c2s.clone(),
            s2c: keys.s2c.clone(),
        }
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Opens a request and records its `seq` in `window`.
    ///
    /// The order matters: a `seq` is refused early if already used, and recorded only once
    /// the ciphertext authenticates, so that forged requests cannot burn numbers.
    pub fn open_request(
        &self,
        req: &SealedRequest,
        window: &mut ReplayWindow,
    ) -> Result<Vec<u8>, ChannelError> {
        if req.session_id != self.id {
            return Err(ChannelError::BadSeal);
        }
        window.check(req.seq)?;
        let plain = open(&key(&self.c2s), C2S, &self.id, req.seq, req.body.as_slice())?;
        window.accept(req.seq)?;
        Ok(plain)
    }

    /// Opens a request whose `seq` the replay window refused, without touching the window:
    /// a client that lost its connection sends the very same bytes again, and the caller
    /// answers with the response recorded for that `seq` (sealed again, it is the same
    /// ciphertext: same key, nonce and plaintext) or refuses it. Never run an operation on
    /// what this returns.
    pub fn open_again(&self, req: &SealedRequest) -> Result<Vec<u8>, ChannelError> {
        if req.session_id != self.id {
            return Err(ChannelError::BadSeal);
        }
        open(&key(&self.c2s), C2S, &self.id, req.seq, req.body.as_slice())
    }

    /// Seals the response to the request that carried `seq`. Call it at most once per
    /// accepted `seq`, or again with the same plaintext for a request opened with
    /// [`Self::open_again`].
    pub fn seal_response(&self, seq: u64, plain: &[u8]) -> Result<SealedResponse, ChannelError> {
        let body = seal(&key(&self.s2c), S2C, &self.id, seq, plain)?;
        Ok(SealedResponse { seq, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (ClientChannel, ServerChannel) {
        let keys = SessionKeys::derive(&[9u8; 64]);
        (ClientChannel::new(&keys), ServerChannel::new(&keys))
    }

    #[test]
    fn a_request_and_its_response_round_trip() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"hello").unwrap();
        assert_eq!(s.open_request(&req, &mut w).unwrap(), b"hello");
        let resp = s.seal_response(req.seq, b"world").unwrap();
        assert_eq!(c.open_response(req.seq, &resp).unwrap(), b"world");
    }

    #[test]
    fn refuses_a_replayed_request() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"store").unwrap();
        s.open_request(&req, &mut w).unwrap();
        assert_eq!(
            s.open_request(&req, &mut w),
            Err(ChannelError::Replay(ReplayError::Duplicate))
        );
    }

    #[test]
    fn a_forged_request_does_not_burn_its_sequence_number() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"x").unwrap();
        let mut forged = req.clone();
        let mut body = forged.body.into_vec();
        body[0] ^= 1;
        forged.body = Bytes::new(body).unwrap();
        assert_eq!(s.open_request(&forged, &mut w), Err(ChannelError::BadSeal));
        assert_eq!(s.open_request(&req, &mut w).unwrap(), b"x");
    }

    #[test]
    fn a_resent_request_opens_again_and_its_response_seals_identically() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"store").unwrap();
        s.open_request(&req, &mut w).unwrap();
        let first = s.seal_response(req.seq, b"stored").unwrap();
        assert!(s.open_request(&req, &mut w).is_err());
        assert_eq!(s.open_again(&req).unwrap(), b"store");
        assert_eq!(s.seal_response(req.seq, b"stored").unwrap(), first);
    }

    #[test]
    fn refuses_a_request_under_another_session_or_direction() {
        let (c, _) = pair();
        let other = ServerChannel::new(&SessionKeys::derive(&[8u8; 64]));
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"x").unwrap();
        assert_eq!(other.open_request(&req, &mut w), Err(ChannelError::BadSeal));
        // A request reflected back to the client as a response does not open.
        let (c, _) = pair();
        let req = c.seal_request(b"x").unwrap();
        let reflected = SealedResponse {
            seq: req.seq,
            body: req.body,
        };
        assert_eq!(
            c.open_response(req.seq, &reflected),
            Err(ChannelError::BadSeal)
        );
    }

    #[test]
    fn refuses_a_response_to_another_request() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let r1 = c.seal_request(b"1").unwrap();
        let r2 = c.seal_request(b"2").unwrap();
        s.open_request(&r1, &mut w).unwrap();
        s.open_request(&r2, &mut w).unwrap();
        let resp1 = s.seal_response(r1.seq, b"a").unwrap();
        assert_eq!(
            c.open_response(r2.seq, &resp1),
            Err(ChannelError::WrongSequence)
        );
        let mut moved = resp1;
        moved.seq = r2.seq;
        assert_eq!(c.open_response(r2.seq, &moved), Err(ChannelError::BadSeal));
    }

    #[test]
    fn sequence_numbers_are_distinct_across_threads() {
        let (c, _) = pair();
        let c = std::sync::Arc::new(c);
        let seqs: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let c = c.clone();
                    s.spawn(move || {
                        (0..100)
                            .map(|_| c.seal_request(b"").unwrap().seq)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let set: std::collections::BTreeSet<_> = seqs.iter().collect();
        assert_eq!(set.len(), 400);
    }
}
