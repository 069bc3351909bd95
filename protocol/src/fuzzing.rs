//! Checks shared by the fuzz targets (`fuzz/`) and the regression tests that replay every
//! input the fuzzers ever found. Each takes arbitrary bytes and panics only if an invariant
//! breaks: decoding never panics, and whatever decodes re-encodes to the same bytes (one
//! message, one encoding).
//!
//! Not part of the protocol's API.

#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, missing_docs)]

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;

use crate::{
    OpRequest, OpResponse, Request, Response, SecretName, UserName,
    audit_chain::{AuditEvent, ChainVerifier},
    codec, frame,
    handshake::{login, registration},
    limits::MAX_MESSAGE,
    seal::{MasterKey, StorageKey},
    session::{ClientChannel, ReplayWindow, ServerChannel, SessionKeys},
};

/// Nitro attestation documents: whatever the bytes, verification (at a time the real
/// documents verify at, with the AWS root) and the TLS-certificate parser never panic.
pub fn attestation(data: &[u8]) {
    use crate::attestation::{TrustedRoot, spki_of, verify};
    let _ = verify(data, TrustedRoot::AWS, 1_695_057_480);
    let _ = verify(data, TrustedRoot::Der(data), 1_695_057_480);
    let _ = spki_of(data);
}

/// Server-held keys: a private key as imported (the first byte picks the algorithm and
/// options, the next 32 are the key), and signature verification of arbitrary public keys and
/// signatures. Whatever imports signs, and what it signs verifies; nothing panics.
pub fn signing(data: &[u8]) {
    use crate::signing::{Algorithm, MessageHash, PrivateKey, SignOptions, verify};
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let algorithm = Algorithm::ALL[usize::from(selector & 1)];
    let options = SignOptions {
        hash: match (selector >> 1) & 3 {
            0 => None,
            1 => Some(MessageHash::Sha256),
            2 => Some(MessageHash::Keccak256),
            _ => Some(MessageHash::Prehashed),
        },
        recoverable: selector & 8 != 0,
    };
    let (key, message) = rest.split_at(rest.len().min(32));
    if let Ok(k) = PrivateKey::from_bytes(algorithm, key) {
        let public = k.public_key().unwrap();
        if let Ok(sig) = k.sign(message, options) {
            verify(algorithm, &public, message, options, &sig).unwrap();
        }
    }
    // Arbitrary public key and signature: split what is left at the selector's high bits.
    let cut = usize::from(selector >> 4).min(rest.len());
    let (a, b) = rest.split_at(cut.saturating_mul(3).min(rest.len()));
    let _ = verify(algorithm, a, message, options, b);
    let _ = verify(algorithm, key, b, options, a);
}

/// Stream framing: parse, and re-encode what parsed.
pub fn frame(data: &[u8]) {
    if let Ok((frames, used)) = frame::parse_all(data) {
        let again: Vec<u8> = frames
            .iter()
            .flat_map(|f| frame::encode(f.id, &f.body))
            .collect();
        assert_eq!(again.as_slice(), &data[..used]);
    }
}

/// Envelopes, both directions.
pub fn envelope(data: &[u8]) {
    if let Ok(r) = Request::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(r) = Response::decode(data) {
        assert_eq!(r.encode(), data);
    }
}

/// Operations inside a session, both directions.
pub fn op(data: &[u8]) {
    if let Ok(r) = OpRequest::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(r) = OpResponse::decode(data) {
        assert_eq!(r.encode(), data);
    }
    if let Ok(r) = crate::ops::OpAnswer::decode(data) {
        assert_eq!(r.encode(), data);
    }
}

fn setup() -> crate::ServerSetup {
    crate::ServerSetup::new(&mut ChaCha20Rng::seed_from_u64(1))
}

/// The server's OPAQUE parsers: registration request and upload, credential request and
/// finalization (with a real record and with the fake one).
pub fn handshake(data: &[u8]) {
    let setup = setup();
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let user = UserName::new("fuzz").unwrap();
    let _ = registration::respond(&setup, b"credential", data);
    let _ = registration::record(data);
    let _ = login::parse_request(data);
    if let Ok((state, _)) = login::respond(&mut rng, &setup, None, b"credential", &user, data) {
        let _ = state.finish(&user, data);
    }
    let _ = login::respond(
        &mut rng,
        &setup,
        Some(data),
        b"credential",
        &user,
        &[0u8; 96],
    );
}

/// The session channel's open path: a sealed request under known keys, then the replay
/// window with the sequence number.
pub fn sealed_request(data: &[u8]) {
    let keys = SessionKeys::derive(&[7u8; 64]);
    let channel = ServerChannel::new(&keys);
    let client = ClientChannel::new(keys).unwrap();
    let mut window = ReplayWindow::new();
    // The client's side: a sealed response of any shape opens or is refused.
    if let Ok(Response::Sealed(resp)) = Response::decode(data) {
        let _ = client.open_response(resp.seq, &resp);
    }
    if let Ok(Request::Sealed(req)) = Request::decode(data) {
        let first = channel.open_request(&req, &mut window);
        // Whatever happened, the same request can never open twice.
        if first.is_ok() {
            assert!(channel.open_request(&req, &mut window).is_err());
        }
        let _ = channel.open_again(&req);
    }
    // Sequence numbers from the raw bytes, in order.
    for chunk in data.chunks(8) {
        let mut b = [0u8; 8];
        b[..chunk.len()].copy_from_slice(chunk);
        let seq = u64::from_le_bytes(b);
        if window.accept(seq).is_ok() {
            assert!(window.accept(seq).is_err());
        }
    }
}

/// Sealed-at-rest formats: a sealed secret and a sealed storage key.
pub fn sealed_blobs(data: &[u8]) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let sk = StorageKey::generate(&mut rng);
    let user = UserName::new("fuzz").unwrap();
    let name = SecretName::new("n").unwrap();
    assert!(
        sk.open_secret(&user, &name, 1, data).is_err() || data.len() >= crate::seal::SEAL_OVERHEAD
    );
    let mk = MasterKey::derive(&[1u8; 64]);
    let _ = mk.open_storage_key(&user, 1, data);
    let vault = crate::session::SessionVault::new(crate::secret::Key32::from_bytes([2; 32]));
    let binding = crate::session::vault::Binding {
        account: 1,
        user: &user,
        created: 0,
        epoch: 1,
    };
    let _ = vault.open(crate::session::SessionId([3; 16]), &binding, data);
}

/// An audit page as a client receives it, then chain verification.
pub fn audit_chain(data: &[u8]) {
    if let Ok(events) = codec::decode::<Vec<AuditEvent>>(data, MAX_MESSAGE) {
        let mut v = ChainVerifier::new(&UserName::new("fuzz").unwrap());
        for e in &events {
            if v.push(e).is_err() {
                break;
            }
        }
        assert_eq!(codec::encode(&events), data);
    }
}

/// Every check, by target name (for the regression replay).
pub fn by_name(target: &str) -> Option<fn(&[u8])> {
    Some(match target {
        "signing" => signing,
        "attestation" => attestation,
        "frame" => frame,
        "envelope" => envelope,
        "op" => op,
        "handshake" => handshake,
        "sealed_request" => sealed_request,
        "sealed_blobs" => sealed_blobs,
        "audit_chain" => audit_chain,
        _ => return None,
    })
}
