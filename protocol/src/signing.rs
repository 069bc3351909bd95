//! Keys the server holds and signs with on a user's request: the algorithms, their key
//! material and signatures, checked here once for both sides.
//!
//! The server uses [`PrivateKey`] (it generates, imports and signs); the client uses
//! [`verify`] and [`PrivateKey::public_key`] to check what the server answers: a signature
//! that does not verify under the key's public key, or an imported or exported key whose
//! public key is not the one the server names, is caught before it is used.
//!
//! - `ed25519`: RFC 8032 (PureEdDSA): the message is signed as given; the public key is 32
//!   bytes, a signature 64. Verification is strict (no small-order keys, canonical `S`).
//! - `secp256k1`: ECDSA with RFC 6979 deterministic nonces, `s` normalised to the lower half;
//!   the message is hashed first ([`MessageHash`]: SHA-256 by default, Keccak-256 for
//!   Ethereum, or none when the message already is a 32-byte digest). The public key is 33
//!   bytes (compressed SEC1), a signature `r || s` (64 bytes), or 65 with the recovery id
//!   `v` in {0, 1} appended.
//!
//! Every implementation is the well-kept crate's (`ed25519-dalek`, `k256`, `sha2`, `sha3`):
//! nothing here is cryptography of our own, only the checks around it.

use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::codec::Bytes;

/// Bytes of every private key, in either algorithm.
pub const PRIVATE_KEY_LEN: usize = 32;
/// Largest public key (secp256k1, compressed).
pub const MAX_PUBLIC_KEY: usize = 33;
/// Largest signature (secp256k1 with its recovery id).
pub const MAX_SIGNATURE: usize = 65;

/// A public key on the wire.
pub type PublicKey = Bytes<MAX_PUBLIC_KEY>;
/// A signature on the wire.
pub type SignatureBytes = Bytes<MAX_SIGNATURE>;

/// A signature algorithm. Its number (the variant's index) is part of the wire format and of
/// the associated data a server-held key is sealed with: never reorder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over secp256k1 (SEC 2), RFC 6979 nonces, low `s`.
    Secp256k1,
}

impl Algorithm {
    /// Every algorithm.
    pub const ALL: [Self; 2] = [Self::Ed25519, Self::Secp256k1];

    /// Its name, as the command line takes it and as clients print it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ed25519 => "ed25519",
            Self::Secp256k1 => "secp256k1",
        }
    }

    /// Its one-byte code (databases and associated data).
    pub fn code(self) -> u8 {
        match self {
            Self::Ed25519 => 1,
            Self::Secp256k1 => 2,
        }
    }

    /// The algorithm of `code`, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.code() == code)
    }

    /// Bytes of its public keys.
    pub fn public_key_len(self) -> usize {
        match self {
            Self::Ed25519 => 32,
            Self::Secp256k1 => 33,
        }
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = SigningError;
    fn from_str(s: &str) -> Result<Self, SigningError> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or(SigningError::UnknownAlgorithm)
    }
}

/// How a secp256k1 message is hashed before it is signed. (Ed25519 hashes inside the
/// algorithm and takes none of these.)
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MessageHash {
    /// SHA-256 (Bitcoin and most uses).
    #[default]
    Sha256,
    /// Keccak-256, the pre-standard SHA-3 that Ethereum uses.
    Keccak256,
    /// None (`none` on the command line): the message is the 32-byte digest to sign.
    Prehashed,
}

impl MessageHash {
    /// Every choice.
    pub const ALL: [Self; 3] = [Self::Sha256, Self::Keccak256, Self::Prehashed];

    /// Its name, as the command line takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Keccak256 => "keccak256",
            Self::Prehashed => "none",
        }
    }

    /// The 32-byte digest of `message` this choice signs.
    pub fn digest(self, message: &[u8]) -> Result<[u8; 32], SigningError> {
        match self {
            Self::Sha256 => Ok(Sha256::digest(message).into()),
            Self::Keccak256 => Ok(sha3::Keccak256::digest(message).into()),
            Self::Prehashed => message
                .try_into()
                .map_err(|_| SigningError::NotADigest(message.len())),
        }
    }
}

impl std::str::FromStr for MessageHash {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|h| h.as_str() == s)
            .ok_or_else(|| format!("unknown hash {s:?} (sha256, keccak256 or none)"))
    }
}

/// How a message is to be signed: what a sign request asks for besides the key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignOptions {
    /// For secp256k1, the message's hash (`None`: SHA-256). Ed25519 refuses any.
    pub hash: Option<MessageHash>,
    /// For secp256k1, append the recovery id. Ed25519 refuses it.
    pub recoverable: bool,
}

impl SignOptions {
    /// Whether `algorithm` takes these options.
    pub fn check(self, algorithm: Algorithm) -> Result<(), SigningError> {
        match algorithm {
            Algorithm::Ed25519 if self.hash.is_some() || self.recoverable => {
                Err(SigningError::OptionNotForAlgorithm)
            }
            _ => Ok(()),
        }
    }
}

/// What can go wrong with key material or a signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// An algorithm name this server does not know.
    #[error("unknown algorithm (ed25519 or secp256k1)")]
    UnknownAlgorithm,
    /// A private key that is not 32 bytes, or not a valid scalar of the curve.
    #[error("not a valid {0} private key (32 raw bytes; for secp256k1, between 1 and n - 1)")]
    BadPrivateKey(Algorithm),
    /// A public key that does not decode for its algorithm.
    #[error("not a valid {0} public key")]
    BadPublicKey(Algorithm),
    /// `--hash none` with a message that is not a 32-byte digest.
    #[error("with no hash, the message must be a 32-byte digest (it is {0} bytes)")]
    NotADigest(usize),
    /// A hash or recovery id asked of an algorithm that takes none.
    #[error("ed25519 signs the message as given: no hash or recovery id applies")]
    OptionNotForAlgorithm,
    /// The signature does not verify (or is malleable: a high `s`).
    #[error("the signature does not verify under the key")]
    BadSignature,
}

/// A private key, zeroized when dropped. Its `Debug` prints the algorithm only.
#[derive(Clone)]
pub struct PrivateKey {
    algorithm: Algorithm,
    bytes: Zeroizing<[u8; PRIVATE_KEY_LEN]>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, REDACTED)", self.algorithm)
    }
}

impl PrivateKey {
    /// A new random key.
    pub fn generate<R: RngCore + CryptoRng>(algorithm: Algorithm, rng: &mut R) -> Self {
        match algorithm {
            // Every 32 bytes are an Ed25519 secret key (RFC 8032 §5.1.5).
            Algorithm::Ed25519 => {
                let mut bytes = Zeroizing::new([0u8; PRIVATE_KEY_LEN]);
                rng.fill_bytes(&mut *bytes);
                Self { algorithm, bytes }
            }
            Algorithm::Secp256k1 => {
                let key = k256::ecdsa::SigningKey::random(rng);
                let mut field = key.to_bytes();
                let bytes = Zeroizing::new(field.into());
                field.zeroize();
                Self { algorithm, bytes }
            }
        }
    }

    /// The raw key `bytes` of `algorithm`, checked: 32 bytes, and for secp256k1 a scalar in
    /// `[1, n - 1]` (no reduction: another number would be another key).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Result<Self, SigningError> {
        let bad = SigningError::BadPrivateKey(algorithm);
        let bytes: Zeroizing<[u8; PRIVATE_KEY_LEN]> =
            Zeroizing::new(bytes.try_into().map_err(|_| bad)?);
        if algorithm == Algorithm::Secp256k1 {
            k256::ecdsa::SigningKey::from_bytes(&(*bytes).into()).map_err(|_| bad)?;
        }
        Ok(Self { algorithm, bytes })
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw key: for sealing it at rest and for the export of an exportable key only.
    pub fn expose_secret(&self) -> &[u8; PRIVATE_KEY_LEN] {
        &self.bytes
    }

    fn ed25519(&self) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&self.bytes)
    }

    fn secp256k1(&self) -> Result<k256::ecdsa::SigningKey, SigningError> {
        // Checked when made; checked again, rather than trusted, on the way in from storage.
        k256::ecdsa::SigningKey::from_bytes(&(*self.bytes).into())
            .map_err(|_| SigningError::BadPrivateKey(self.algorithm))
    }

    /// Its public key: 32 bytes (Ed25519) or 33 (secp256k1, compressed SEC1).
    pub fn public_key(&self) -> Result<Vec<u8>, SigningError> {
        Ok(match self.algorithm {
            Algorithm::Ed25519 => self.ed25519().verifying_key().to_bytes().to_vec(),
            Algorithm::Secp256k1 => self
                .secp256k1()?
                .verifying_key()
                .to_encoded_point(true)
                .as_bytes()
                .to_vec(),
        })
    }

    /// Signs `message` as `options` say.
    pub fn sign(&self, message: &[u8], options: SignOptions) -> Result<Vec<u8>, SigningError> {
        options.check(self.algorithm)?;
        match self.algorithm {
            Algorithm::Ed25519 => {
                use ed25519_dalek::Signer;
                Ok(self.ed25519().sign(message).to_bytes().to_vec())
            }
            Algorithm::Secp256k1 => {
                let digest = options.hash.unwrap_or_default().digest(message)?;
                // RFC 6979 nonce; k256 normalises `s` to the lower half and flips the
                // recovery id to match.
                let (signature, recovery) = self
                    .secp256k1()?
                    .sign_prehash_recoverable(&digest)
                    .map_err(|_| SigningError::BadSignature)?;
                let mut out = signature.to_bytes().to_vec();
                if options.recoverable {
                    out.push(recovery.to_byte());
                }
                Ok(out)
            }
        }
    }
}

/// Checks that `public` is a public key of `algorithm`: 32 bytes that decode to an Ed25519
/// point, or 33 bytes of a compressed secp256k1 point.
pub fn check_public_key(algorithm: Algorithm, public: &[u8]) -> Result<(), SigningError> {
    let bad = SigningError::BadPublicKey(algorithm);
    let ok = match algorithm {
        Algorithm::Ed25519 => <&[u8; 32]>::try_from(public)
            .is_ok_and(|k| ed25519_dalek::VerifyingKey::from_bytes(k).is_ok()),
        Algorithm::Secp256k1 => {
            public.len() == 33 && k256::ecdsa::VerifyingKey::from_sec1_bytes(public).is_ok()
        }
    };
    if ok { Ok(()) } else { Err(bad) }
}

/// Checks that `signature` is `public`'s signature of `message` under `options`: strict
/// Ed25519, or secp256k1 ECDSA with a low `s` (and, if recoverable, a recovery id that
/// recovers `public`).
pub fn verify(
    algorithm: Algorithm,
    public: &[u8],
    message: &[u8],
    options: SignOptions,
    signature: &[u8],
) -> Result<(), SigningError> {
    options.check(algorithm)?;
    let bad = SigningError::BadSignature;
    match algorithm {
        Algorithm::Ed25519 => {
            let public: &[u8; 32] = public
                .try_into()
                .map_err(|_| SigningError::BadPublicKey(algorithm))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(public)
                .map_err(|_| SigningError::BadPublicKey(algorithm))?;
            let signature = ed25519_dalek::Signature::from_slice(signature).map_err(|_| bad)?;
            key.verify_strict(message, &signature).map_err(|_| bad)
        }
        Algorithm::Secp256k1 => {
            use k256::ecdsa::signature::hazmat::PrehashVerifier;
            let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(public)
                .map_err(|_| SigningError::BadPublicKey(algorithm))?;
            if public.len() != 33 {
                return Err(SigningError::BadPublicKey(algorithm));
            }
            let digest = options.hash.unwrap_or_default().digest(message)?;
            let (rs, recovery) = match (options.recoverable, signature.len()) {
                (false, 64) => (signature, None),
                (true, 65) => (&signature[..64], Some(signature[64])),
                _ => return Err(bad),
            };
            let sig = k256::ecdsa::Signature::from_slice(rs).map_err(|_| bad)?;
            if sig.normalize_s().is_some() {
                // A high `s`: valid ECDSA, but not what this server makes.
                return Err(bad);
            }
            key.verify_prehash(&digest, &sig).map_err(|_| bad)?;
            if let Some(v) = recovery {
                let id = k256::ecdsa::RecoveryId::from_byte(v).ok_or(bad)?;
                let recovered = k256::ecdsa::VerifyingKey::recover_from_prehash(&digest, &sig, id)
                    .map_err(|_| bad)?;
                if recovered != key {
                    return Err(bad);
                }
            }
            Ok(())
        }
    }
}

/// The SHA-256 of a signed message, as its audit event records it (whatever the key hashed).
pub fn message_digest(message: &[u8]) -> [u8; 32] {
    Sha256::digest(message).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(7)
    }

    #[test]
    fn generated_keys_sign_and_verify_in_every_form() {
        let mut rng = rng();
        for algorithm in Algorithm::ALL {
            let key = PrivateKey::generate(algorithm, &mut rng);
            let public = key.public_key().unwrap();
            assert_eq!(public.len(), algorithm.public_key_len());
            let options: Vec<SignOptions> = match algorithm {
                Algorithm::Ed25519 => vec![SignOptions::default()],
                Algorithm::Secp256k1 => [
                    None,
                    Some(MessageHash::Sha256),
                    Some(MessageHash::Keccak256),
                ]
                .into_iter()
                .flat_map(|hash| [false, true].map(|recoverable| SignOptions { hash, recoverable }))
                .collect(),
            };
            for o in options {
                let sig = key.sign(b"pay bob 5", o).unwrap();
                verify(algorithm, &public, b"pay bob 5", o, &sig).unwrap();
                assert_eq!(
                    verify(algorithm, &public, b"pay bob 6", o, &sig),
                    Err(SigningError::BadSignature)
                );
                // Deterministic: the same message signs the same way.
                assert_eq!(key.sign(b"pay bob 5", o).unwrap(), sig);
            }
        }
    }

    #[test]
    fn ed25519_refuses_a_hash_or_a_recovery_id() {
        let key = PrivateKey::generate(Algorithm::Ed25519, &mut rng());
        for o in [
            SignOptions {
                hash: Some(MessageHash::Sha256),
                recoverable: false,
            },
            SignOptions {
                hash: None,
                recoverable: true,
            },
        ] {
            assert_eq!(key.sign(b"m", o), Err(SigningError::OptionNotForAlgorithm));
        }
    }

    #[test]
    fn secp256k1_private_keys_out_of_range_are_refused() {
        let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .unwrap();
        for bad in [
            vec![0u8; 32],
            n.clone(),
            vec![0xff; 32],
            vec![1; 31],
            vec![1; 33],
        ] {
            assert_eq!(
                PrivateKey::from_bytes(Algorithm::Secp256k1, &bad).unwrap_err(),
                SigningError::BadPrivateKey(Algorithm::Secp256k1)
            );
        }
        let mut n_minus_1 = n;
        n_minus_1[31] -= 1;
        assert!(PrivateKey::from_bytes(Algorithm::Secp256k1, &n_minus_1).is_ok());
        assert!(PrivateKey::from_bytes(Algorithm::Ed25519, &[0xff; 32]).is_ok());
        assert!(PrivateKey::from_bytes(Algorithm::Ed25519, &[0xff; 31]).is_err());
    }

    #[test]
    fn a_high_s_or_a_wrong_recovery_id_does_not_verify() {
        let key = PrivateKey::generate(Algorithm::Secp256k1, &mut rng());
        let public = key.public_key().unwrap();
        let o = SignOptions {
            hash: Some(MessageHash::Prehashed),
            recoverable: true,
        };
        let digest = [9u8; 32];
        let sig = key.sign(&digest, o).unwrap();
        let mut flipped = sig.clone();
        flipped[64] ^= 1;
        assert!(verify(Algorithm::Secp256k1, &public, &digest, o, &flipped).is_err());
        // s' = n - s verifies as plain ECDSA but is the malleable twin.
        let low = k256::ecdsa::Signature::from_slice(&sig[..64]).unwrap();
        let (r, s) = low.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
        let plain = SignOptions {
            hash: Some(MessageHash::Prehashed),
            recoverable: false,
        };
        assert!(
            verify(
                Algorithm::Secp256k1,
                &public,
                &digest,
                plain,
                &high.to_bytes()
            )
            .is_err()
        );
        assert!(verify(Algorithm::Secp256k1, &public, &digest, plain, &sig[..64]).is_ok());
        // Not a digest.
        assert_eq!(key.sign(b"short", plain), Err(SigningError::NotADigest(5)));
    }

    #[test]
    fn debug_shows_no_key() {
        let key = PrivateKey::from_bytes(Algorithm::Ed25519, &[0xab; 32]).unwrap();
        assert!(!format!("{key:?}").contains("ab"));
    }
}
