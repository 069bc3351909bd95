//! Sealing and opening of requests and responses inside a session.
//!
//! Requests (client to server): ChaCha20-Poly1305 under the c2s key, nonce (12 bytes) =
//! `0x01 || 0 0 0 || seq (8, big-endian)`, associated data = `session_id (16) || seq (8,
//! BE)`. The client numbers its requests 1, 2, 3, … from one counter and never builds two
//! channels from one set of keys, so no request nonce repeats under the key.
//!
//! Responses (server to client): XChaCha20-Poly1305 under the s2c key with a random 192-bit
//! nonce, `body = nonce (24) || ciphertext || tag (16)`, associated data =
//! `"keyserver/2 response" || session_id (16) || seq (8, BE)`. The server cannot promise to
//! seal each `seq` once: a session taken over by another instance (or after a restart)
//! starts with an empty replay window, so a captured read may be run again there and its
//! new answer sealed for the same `seq`. With a nonce counted from `seq`, two different
//! answers would share a nonce under one key, which leaks their XOR and the one-time
//! Poly1305 key (a forgery of that answer). A random 192-bit nonce never repeats, whatever
//! the windows do; `seq` stays in the associated data, so an answer still only opens as the
//! answer to its own request. See `spec/protocol.md`, section 7.
//!
//! Sequence numbers run from 1 to [`MAX_SEQ`] (they are stored as signed 64-bit integers);
//! anything else is refused before any key is touched.

use std::sync::atomic::{AtomicU64, Ordering};

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use rand::{CryptoRng, RngCore};
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

pub use crate::session::replay::MAX_SEQ;

const C2S: u8 = 1;
const TAG_LEN: usize = 16;
/// Bytes of a response's random nonce.
pub const RESPONSE_NONCE_LEN: usize = 24;
/// The label at the start of a response's associated data.
pub const RESPONSE_LABEL: &[u8] = b"keyserver/2 response";
/// Bytes a sealed request adds to its plaintext.
pub const REQUEST_OVERHEAD: usize = TAG_LEN;
/// Bytes a sealed response adds to its plaintext.
pub const RESPONSE_OVERHEAD: usize = RESPONSE_NONCE_LEN + TAG_LEN;

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
    /// The client used up its sequence numbers (after 2^63 - 1 requests).
    #[error("the session has no sequence numbers left")]
    Exhausted,
}

fn key(k: &Key32) -> Result<LessSafeKey, ChannelError> {
    // CHACHA20_POLY1305 takes exactly 32-byte keys, which is what Key32 holds: this never
    // fails, and if it did, nothing would be sealed or opened.
    UnboundKey::new(&CHACHA20_POLY1305, k.expose_secret())
        .map(LessSafeKey::new)
        .map_err(|_| ChannelError::BadSeal)
}

fn request_nonce(seq: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[0] = C2S;
    n[4..].copy_from_slice(&seq.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn request_aad(id: &SessionId, seq: u64) -> [u8; 24] {
    let mut a = [0u8; 24];
    a[..16].copy_from_slice(&id.0);
    a[16..].copy_from_slice(&seq.to_be_bytes());
    a
}

fn response_aad(id: &SessionId, seq: u64) -> Vec<u8> {
    let mut a = Vec::with_capacity(RESPONSE_LABEL.len() + 24);
    a.extend_from_slice(RESPONSE_LABEL);
    a.extend_from_slice(&id.0);
    a.extend_from_slice(&seq.to_be_bytes());
    a
}

fn seal_request(
    key: &LessSafeKey,
    id: &SessionId,
    seq: u64,
    plain: &[u8],
) -> Result<Bytes<MAX_SEALED_BODY>, ChannelError> {
    if plain.len() + REQUEST_OVERHEAD > MAX_SEALED_BODY {
        return Err(ChannelError::TooLarge);
    }
    let mut buf = Vec::with_capacity(plain.len() + TAG_LEN);
    buf.extend_from_slice(plain);
    key.seal_in_place_append_tag(
        request_nonce(seq),
        Aad::from(request_aad(id, seq)),
        &mut buf,
    )
    .map_err(|_| ChannelError::TooLarge)?;
    Bytes::new(buf).ok_or(ChannelError::TooLarge)
}

fn open_request(
    key: &LessSafeKey,
    id: &SessionId,
    seq: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    let mut buf = sealed.to_vec();
    let len = key
        .open_in_place(
            request_nonce(seq),
            Aad::from(request_aad(id, seq)),
            &mut buf,
        )
        .map_err(|_| ChannelError::BadSeal)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

fn seal_response<R: RngCore + CryptoRng>(
    rng: &mut R,
    key: &Key32,
    id: &SessionId,
    seq: u64,
    plain: &[u8],
) -> Result<Bytes<MAX_SEALED_BODY>, ChannelError> {
    if plain.len() + RESPONSE_OVERHEAD > MAX_SEALED_BODY {
        return Err(ChannelError::TooLarge);
    }
    let mut nonce = [0u8; RESPONSE_NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let aad = response_aad(id, seq);
    let ct = XChaCha20Poly1305::new(key.expose_secret().into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &aad,
            },
        )
        .map_err(|_| ChannelError::TooLarge)?;
    let mut body = Vec::with_capacity(RESPONSE_NONCE_LEN + ct.len());
    body.extend_from_slice(&nonce);
    body.extend_from_slice(&ct);
    Bytes::new(body).ok_or(ChannelError::TooLarge)
}

fn open_response(
    key: &Key32,
    id: &SessionId,
    seq: u64,
    sealed: &[u8],
) -> Result<Vec<u8>, ChannelError> {
    let (nonce, ct) = sealed
        .split_at_checked(RESPONSE_NONCE_LEN)
        .ok_or(ChannelError::BadSeal)?;
    let aad = response_aad(id, seq);
    XChaCha20Poly1305::new(key.expose_secret().into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
        .map_err(|_| ChannelError::BadSeal)
}

/// The client's end of a session. Shared by every task that sends in the session: the
/// sequence counter is atomic, so concurrent requests never share a number.
pub struct ClientChannel {
    id: SessionId,
    c2s: LessSafeKey,
    s2c: Key32,
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
    /// The client's end of the session derived from `keys`. It takes the keys: one set of
    /// keys makes one channel, so two counters can never number requests under one key.
    pub fn new(keys: SessionKeys) -> Result<Self, ChannelError> {
        Ok(Self {
            id: keys.id,
            c2s: key(&keys.c2s)?,
            s2c: keys.s2c.clone(),
            next_seq: AtomicU64::new(1),
        })
    }

    /// The session id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// Seals `plain` as the next request. Returns the request; its `seq` is what
    /// [`Self::open_response`] must be given.
    pub fn seal_request(&self, plain: &[u8]) -> Result<SealedRequest, ChannelError> {
        // The counter never wraps: past MAX_SEQ every call fails, and fetch_update leaves it
        // there instead of counting on to 2^64 and around.
        let seq = self
            .next_seq
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s <= MAX_SEQ).then(|| s + 1)
            })
            .map_err(|_| ChannelError::Exhausted)?;
        let body = seal_request(&self.c2s, &self.id, seq, plain)?;
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
        open_response(&self.s2c, &self.id, seq, resp.body.as_slice())
    }
}

/// The server's end of a session: keys only. The replay window is kept by the caller, who
/// decides how it is shared between threads.
///
/// A server holds one of these per open session, so it keeps the raw 32-byte keys (zeroized
/// on drop) and makes the cipher for each message: ring's `LessSafeKey` is sized for its
/// largest algorithm (AES-GCM's expanded key and tables, about half a KiB), and setting up
/// a ChaCha20 key is a copy of its 32 bytes.
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

    /// The session's keys, to seal them again at rest (see [`crate::session::vault`]).
    pub fn keys(&self) -> SessionKeys {
        SessionKeys {
            id: self.id,
            c2s: self.c2s.clone(),
            s2c: self.s2c.clone(),
        }
    }

    /// Opens a request and records its `seq` in `window`.
    ///
    /// The order matters: a `seq` is refused early if already used (or out of range), and
    /// recorded only once the ciphertext authenticates, so that forged requests cannot
    /// burn numbers.
    pub fn open_request(
        &self,
        req: &SealedRequest,
        window: &mut ReplayWindow,
    ) -> Result<Vec<u8>, ChannelError> {
        if req.session_id != self.id {
            return Err(ChannelError::BadSeal);
        }
        window.check(req.seq)?;
        let plain = open_request(&key(&self.c2s)?, &self.id, req.seq, req.body.as_slice())?;
        window.accept(req.seq)?;
        Ok(plain)
    }

    /// Opens a request whose `seq` the replay window refused, without touching the window:
    /// a client that lost its connection sends the very same bytes again, and the caller
    /// answers with the response recorded for that `seq` (sealed again) or refuses it.
    /// Never run an operation on what this returns.
    pub fn open_again(&self, req: &SealedRequest) -> Result<Vec<u8>, ChannelError> {
        if req.session_id != self.id {
            return Err(ChannelError::BadSeal);
        }
        if req.seq == 0 || req.seq > MAX_SEQ {
            return Err(ChannelError::Replay(ReplayError::OutOfRange));
        }
        open_request(&key(&self.c2s)?, &self.id, req.seq, req.body.as_slice())
    }

    /// Seals the response to the request that carried `seq`, under a fresh random nonce:
    /// sealing twice for one `seq` (a retry answered from its recorded response, or a read
    /// run again after the session moved) never reuses a nonce.
    pub fn seal_response<R: RngCore + CryptoRng>(
        &self,
        rng: &mut R,
        seq: u64,
        plain: &[u8],
    ) -> Result<SealedResponse, ChannelError> {
        let body = seal_response(rng, &self.s2c, &self.id, seq, plain)?;
        Ok(SealedResponse { seq, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(5)
    }

    fn pair() -> (ClientChannel, ServerChannel) {
        let keys = SessionKeys::derive(&[9u8; 64]);
        let server = ServerChannel::new(&keys);
        (ClientChannel::new(keys).unwrap(), server)
    }

    #[test]
    fn a_request_and_its_response_round_trip() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"hello").unwrap();
        assert_eq!(s.open_request(&req, &mut w).unwrap(), b"hello");
        let resp = s.seal_response(&mut rng(), req.seq, b"world").unwrap();
        assert_eq!(resp.body.len(), 5 + RESPONSE_OVERHEAD);
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
    fn a_resent_request_opens_again_and_its_answer_is_sealed_under_a_new_nonce() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        let req = c.seal_request(b"store").unwrap();
        s.open_request(&req, &mut w).unwrap();
        let mut r = rng();
        let first = s.seal_response(&mut r, req.seq, b"stored").unwrap();
        assert!(s.open_request(&req, &mut w).is_err());
        assert_eq!(s.open_again(&req).unwrap(), b"store");
        let again = s.seal_response(&mut r, req.seq, b"stored").unwrap();
        assert_ne!(
            first.body.as_slice()[..RESPONSE_NONCE_LEN],
            again.body.as_slice()[..RESPONSE_NONCE_LEN]
        );
        assert_eq!(c.open_response(req.seq, &again).unwrap(), b"stored");
    }

    /// Two different answers sealed for one `seq` (a read run again on an instance that
    /// took the session over with an empty window) never share a nonce.
    #[test]
    fn two_answers_to_one_sequence_number_never_share_a_nonce() {
        let keys = SessionKeys::derive(&[9u8; 64]);
        let (a, b) = (ServerChannel::new(&keys), ServerChannel::new(&keys));
        let mut r = rng();
        let mut nonces = std::collections::BTreeSet::new();
        for i in 0..1000u32 {
            let s = if i % 2 == 0 { &a } else { &b };
            let resp = s.seal_response(&mut r, 7, &i.to_be_bytes()).unwrap();
            assert!(nonces.insert(resp.body.as_slice()[..RESPONSE_NONCE_LEN].to_vec()));
        }
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
        let resp1 = s.seal_response(&mut rng(), r1.seq, b"a").unwrap();
        assert_eq!(
            c.open_response(r2.seq, &resp1),
            Err(ChannelError::WrongSequence)
        );
        let mut moved = resp1;
        moved.seq = r2.seq;
        assert_eq!(c.open_response(r2.seq, &moved), Err(ChannelError::BadSeal));
    }

    #[test]
    fn sequence_numbers_beyond_the_signed_range_are_refused_on_both_sides() {
        let (c, s) = pair();
        let mut w = ReplayWindow::new();
        c.next_seq.store(MAX_SEQ, Ordering::Relaxed);
        let last = c.seal_request(b"last").unwrap();
        assert_eq!(last.seq, MAX_SEQ);
        assert_eq!(s.open_request(&last, &mut w).unwrap(), b"last");
        // The client stops there, and stays stopped: its counter never wraps to 1.
        for _ in 0..3 {
            assert_eq!(c.seal_request(b"x"), Err(ChannelError::Exhausted));
        }
        // A request numbered past it (only a forger makes one) is refused unopened.
        let mut past = last.clone();
        past.seq = MAX_SEQ + 1;
        assert_eq!(
            s.open_request(&past, &mut w),
            Err(ChannelError::Replay(ReplayError::OutOfRange))
        );
        assert_eq!(
            s.open_again(&past),
            Err(ChannelError::Replay(ReplayError::OutOfRange))
        );
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
