//! AWS Nitro Enclaves attestation documents: parsed, their signature and certificate chain
//! verified, and checked against what a client expects of the enclave.
//!
//! A document is a COSE_Sign1 (RFC 9052; tagged with CBOR tag 18 or untagged) whose protected
//! header is exactly `{1: -35}` (ES384) and whose unprotected header is empty; its payload is
//! the CBOR attestation document AWS specifies (`aws-nitro-enclaves-nsm-api`,
//! `docs/attestation_process.md`): `module_id`, `digest` (`"SHA384"`), `timestamp` (ms),
//! `pcrs`, `certificate` (the leaf, DER), `cabundle` (root first), and optional `public_key`,
//! `user_data`, `nonce` (CBOR null counts as absent, as AWS's own parser reads it).
//!
//! Verification ([`verify`]):
//! 1. every size and type is within AWS's rules, and the whole document within
//!    [`MAX_DOCUMENT`];
//! 2. `cabundle[0]` is the root the caller trusts ([`TrustedRoot`]: by default the AWS Nitro
//!    root, pinned here by the SHA-256 of its DER, [`AWS_NITRO_ROOT_SHA256`]; or a given
//!    certificate, byte for byte);
//! 3. the chain `certificate` ← `cabundle[1..]` ← root verifies (rustls-webpki, ECDSA P-384
//!    with SHA-384) at the document's own time and at the time of the check, the root too being
//!    valid at both;
//! 4. the COSE signature (raw `r || s`, 96 bytes) verifies under the leaf's P-384 key over the
//!    `Signature1` structure (ring).
//!
//! Then [`Expectations::check`] compares what the document says with what the caller expects:
//! the nonce it sent, the TLS key the connection presented (`user_data` must be exactly its
//! SubjectPublicKeyInfo, DER), PCR0/1/2 (and 8), no debug enclave (PCR0, 1 and 2 all zero)
//! unless allowed, and the document's age.
//!
//! Nothing here is cryptography of our own: CBOR is ciborium's, the chain rustls-webpki's,
//! certificates x509-parser's, signatures ring's.

use std::collections::BTreeMap;

use ciborium::Value;
use sha2::{Digest, Sha256};

/// The largest document parsed (AWS's are about 4.5 KiB; every field's own bound adds up
/// to less than this).
pub const MAX_DOCUMENT: usize = crate::limits::MAX_ATTESTATION_DOCUMENT;

/// SHA-256 of the DER of the AWS Nitro Enclaves Root-G1 certificate, as AWS publishes it.
pub const AWS_NITRO_ROOT_SHA256: [u8; 32] = [
    0x64, 0x1a, 0x03, 0x21, 0xa3, 0xe2, 0x44, 0xef, 0xe4, 0x56, 0x46, 0x31, 0x95, 0xd6, 0x06, 0x31,
    0x7e, 0xd7, 0xcd, 0xcc, 0x3c, 0x17, 0x56, 0xe0, 0x98, 0x93, 0xf3, 0xc6, 0x8f, 0x79, 0xbb, 0x5b,
];

/// The protected header AWS uses, and the only one accepted: `{1: -35}` (alg: ES384).
const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];

/// Why a document was refused: each names the check that failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    /// Not a COSE_Sign1 attestation document within AWS's rules.
    #[error("the attestation document is malformed: {0}")]
    Malformed(&'static str),
    /// The first certificate of `cabundle` is not the trusted root.
    #[error("the attestation's certificate chain does not start at the trusted root")]
    UntrustedRoot,
    /// The certificate chain does not verify (at the time given).
    #[error("the attestation's certificate chain does not verify at {at}: {why}")]
    Chain {
        /// Unix seconds.
        at: u64,
        /// webpki's reason.
        why: String,
    },
    /// A certificate of the chain is not valid at the time given (expired, or not yet valid).
    #[error("the attestation's certificate chain is not valid at {at} (expired or not yet valid)")]
    Expired {
        /// Unix seconds.
        at: u64,
    },
    /// The COSE signature does not verify under the leaf certificate's key.
    #[error("the attestation document's signature does not verify")]
    Signature,
    /// The document is older than allowed (or from the future).
    #[error("the attestation document is {age_secs} s old; at most {max_secs} s is accepted")]
    Stale {
        /// Its age at the check.
        age_secs: i64,
        /// The most allowed.
        max_secs: u64,
    },
    /// The nonce is not the one sent.
    #[error("the attestation document does not carry the nonce sent (a replayed document?)")]
    Nonce,
    /// `user_data` is not the SubjectPublicKeyInfo of the TLS certificate presented.
    #[error("the attestation is not bound to the TLS key this connection presented")]
    NotBound,
    /// A PCR is not the expected value (or missing).
    #[error("PCR{0} is not the expected value")]
    Pcr(u8),
    /// PCR0, 1 and 2 are all zero: a debug-mode enclave, whose memory its host can read.
    #[error("the enclave runs in debug mode (PCR0, 1 and 2 are zero): its host can read it")]
    DebugEnclave,
}

/// An attestation document whose signature and chain verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Document {
    /// The enclave's module id.
    pub module_id: String,
    /// When the security module made it (Unix milliseconds).
    pub timestamp_ms: u64,
    /// The PCRs, by index.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The leaf certificate (DER).
    pub certificate: Vec<u8>,
    /// The enclave's public key, if it gave one.
    pub public_key: Option<Vec<u8>>,
    /// The user data, if any (for this server: its TLS key's SubjectPublicKeyInfo).
    pub user_data: Option<Vec<u8>>,
    /// The nonce, if any (for this server: the client's).
    pub nonce: Option<Vec<u8>>,
}

fn malformed(what: &'static str) -> AttestationError {
    AttestationError::Malformed(what)
}

/// The four parts of a COSE_Sign1, tagged or not.
struct Sign1 {
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn sign1(bytes: &[u8]) -> Result<Sign1, AttestationError> {
    if bytes.len() > MAX_DOCUMENT {
        return Err(malformed("larger than 16 KiB"));
    }
    let value: Value = ciborium::de::from_reader_with_recursion_limit(bytes, 8)
        .map_err(|_| malformed("not CBOR"))?;
    let value = match value {
        Value::Tag(18, inner) => *inner,
        Value::Tag(..) => return Err(malformed("a CBOR tag other than COSE_Sign1's")),
        v => v,
    };
    let Value::Array(parts) = value else {
        return Err(malformed("not a COSE_Sign1 array"));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] = parts
        .try_into()
        .map_err(|_| malformed("a COSE_Sign1 has four parts"))?;
    let (
        Value::Bytes(protected),
        Value::Map(unprotected),
        Value::Bytes(payload),
        Value::Bytes(signature),
    ) = (protected, unprotected, payload, signature)
    else {
        return Err(malformed("a COSE_Sign1 part of the wrong type"));
    };
    if protected != PROTECTED_ES384 {
        return Err(malformed("the protected header is not {alg: ES384}"));
    }
    if !unprotected.is_empty() {
        return Err(malformed("the unprotected header is not empty"));
    }
    if signature.len() != 96 {
        return Err(malformed("an ES384 signature is 96 bytes"));
    }
    Ok(Sign1 {
        protected,
        payload,
        signature,
    })
}

/// The bytes a COSE_Sign1 signs: `["Signature1", protected, h'', payload]` (RFC 9052 §4.4).
fn to_be_signed(s: &Sign1) -> Result<Vec<u8>, AttestationError> {
    let structure = Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(s.protected.clone()),
        Value::Bytes(Vec::new()),
        Value::Bytes(s.payload.clone()),
    ]);
    let mut out = Vec::with_capacity(s.payload.len() + 32);
    ciborium::ser::into_writer(&structure, &mut out).map_err(|_| malformed("encoding"))?;
    Ok(out)
}

fn bytes_field(
    v: Value,
    min: usize,
    max: usize,
    what: &'static str,
) -> Result<Vec<u8>, AttestationError> {
    match v {
        Value::Bytes(b) if (min..=max).contains(&b.len()) => Ok(b),
        _ => Err(malformed(what)),
    }
}

/// An optional field: absent, or CBOR null, is `None`.
fn optional(
    v: Option<Value>,
    max: usize,
    what: &'static str,
) -> Result<Option<Vec<u8>>, AttestationError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => bytes_field(v, 0, max, what).map(Some),
    }
}

/// The payload's fields, checked against AWS's rules; and the cabundle.
fn payload(bytes: &[u8]) -> Result<(Document, Vec<Vec<u8>>), AttestationError> {
    let value: Value = ciborium::de::from_reader_with_recursion_limit(bytes, 8)
        .map_err(|_| malformed("the payload is not CBOR"))?;
    let Value::Map(entries) = value else {
        return Err(malformed("the payload is not a map"));
    };
    let mut fields: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in entries {
        let Value::Text(k) = k else {
            return Err(malformed("a payload key is not text"));
        };
        if fields.insert(k, v).is_some() {
            return Err(malformed("a payload key appears twice"));
        }
    }
    let mut take = |k: &str| fields.remove(k);
    let module_id = match take("module_id") {
        Some(Value::Text(t)) if !t.is_empty() && t.len() <= 256 => t,
        _ => return Err(malformed("module_id")),
    };
    match take("digest") {
        Some(Value::Text(t)) if t == "SHA384" => {}
        _ => return Err(malformed("digest is not SHA384")),
    }
    let timestamp_ms = match take("timestamp") {
        Some(Value::Integer(i)) => u64::try_from(i)
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| malformed("timestamp"))?,
        _ => return Err(malformed("timestamp")),
    };
    let Some(Value::Map(pcr_entries)) = take("pcrs") else {
        return Err(malformed("pcrs"));
    };
    if pcr_entries.is_empty() || pcr_entries.len() > 32 {
        return Err(malformed("pcrs: 1 to 32 of them"));
    }
    let mut pcrs = BTreeMap::new();
    for (k, v) in pcr_entries {
        let index = match k {
            Value::Integer(i) => u8::try_from(i).ok().filter(|i| *i < 32),
            _ => None,
        }
        .ok_or_else(|| malformed("a PCR index"))?;
        let value = match v {
            Value::Bytes(b) if matches!(b.len(), 32 | 48 | 64) => b,
            _ => return Err(malformed("a PCR value")),
        };
        if pcrs.insert(index, value).is_some() {
            return Err(malformed("a PCR appears twice"));
        }
    }
    let certificate = bytes_field(
        take("certificate").ok_or_else(|| malformed("certificate"))?,
        1,
        1024,
        "certificate",
    )?;
    let Some(Value::Array(bundle)) = take("cabundle") else {
        return Err(malformed("cabundle"));
    };
    if bundle.is_empty() || bundle.len() > 8 {
        return Err(malformed("cabundle: 1 to 8 certificates"));
    }
    let cabundle = bundle
        .into_iter()
        .map(|c| bytes_field(c, 1, 1024, "a cabundle certificate"))
        .collect::<Result<Vec<_>, _>>()?;
    let public_key = optional(take("public_key"), 1024, "public_key")?;
    let user_data = optional(take("user_data"), 512, "user_data")?;
    let nonce = optional(take("nonce"), 512, "nonce")?;
    if !fields.is_empty() {
        return Err(malformed("the payload has fields AWS does not define"));
    }
    Ok((
        Document {
            module_id,
            timestamp_ms,
            pcrs,
            certificate,
            public_key,
            user_data,
            nonce,
        },
        cabundle,
    ))
}

fn unix(secs: u64) -> rustls_pki_types::UnixTime {
    rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs))
}

/// The chain `leaf` ← `intermediates` ← `root` at `at` (Unix seconds), the root's own
/// validity included (webpki takes a trust anchor as valid).
fn chain(
    root: &[u8],
    intermediates: &[Vec<u8>],
    leaf: &[u8],
    at: u64,
) -> Result<(), AttestationError> {
    use rustls_pki_types::CertificateDer;
    let (_, root_cert) =
        x509_parser::parse_x509_certificate(root).map_err(|_| malformed("the root certificate"))?;
    let at_i = i64::try_from(at).unwrap_or(i64::MAX);
    let validity = root_cert.validity();
    if at_i < validity.not_before.timestamp() || at_i > validity.not_after.timestamp() {
        return Err(AttestationError::Expired { at });
    }
    let root_der = CertificateDer::from(root);
    let anchor = webpki::anchor_from_trusted_cert(&root_der)
        .map_err(|_| malformed("the root certificate"))?;
    let intermediates: Vec<CertificateDer<'_>> = intermediates
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    let leaf_der = CertificateDer::from(leaf);
    let ee = webpki::EndEntityCert::try_from(&leaf_der)
        .map_err(|_| malformed("the leaf certificate"))?;
    ee.verify_for_usage(
        &[webpki::ring::ECDSA_P384_SHA384],
        &[anchor],
        &intermediates,
        unix(at),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| match e {
        webpki::Error::CertExpired { .. } | webpki::Error::CertNotValidYet { .. } => {
            AttestationError::Expired { at }
        }
        other => AttestationError::Chain {
            at,
            why: format!("{other:?}"),
        },
    })
}

/// The leaf's P-384 public key (an uncompressed SEC1 point).
fn leaf_p384_key(leaf: &[u8]) -> Result<Vec<u8>, AttestationError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf).map_err(|_| malformed("the leaf certificate"))?;
    let spki = cert.public_key();
    let alg = &spki.algorithm;
    let curve = alg
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    if alg.algorithm.to_id_string() != "1.2.840.10045.2.1"
        || curve.as_deref() != Some("1.3.132.0.34")
    {
        return Err(malformed("the leaf's key is not ECDSA P-384"));
    }
    Ok(spki.subject_public_key.data.to_vec())
}

/// The root a document's chain must end at.
#[derive(Clone, Copy, Debug)]
pub enum TrustedRoot<'a> {
    /// The certificate whose DER has this SHA-256 (the document carries it as
    /// `cabundle[0]`): [`AWS_NITRO_ROOT_SHA256`] by default.
    Fingerprint([u8; 32]),
    /// This certificate (DER), e.g. the test root of a simulated security module.
    Der(&'a [u8]),
}

impl TrustedRoot<'_> {
    /// The AWS Nitro Enclaves root, by its pinned fingerprint.
    pub const AWS: TrustedRoot<'static> = TrustedRoot::Fingerprint(AWS_NITRO_ROOT_SHA256);

    fn accepts(&self, cert: &[u8]) -> bool {
        match self {
            Self::Fingerprint(f) => Sha256::digest(cert).as_slice() == f,
            Self::Der(d) => *d == cert,
        }
    }
}

/// Parses `bytes` and verifies its chain to `root` at the document's own time and at `now`
/// (Unix seconds), and its signature.
pub fn verify(bytes: &[u8], root: TrustedRoot<'_>, now: u64) -> Result<Document, AttestationError> {
    let s = sign1(bytes)?;
    let (doc, cabundle) = payload(&s.payload)?;
    let Some(root) = cabundle.first().filter(|r| root.accepts(r)) else {
        return Err(AttestationError::UntrustedRoot);
    };
    let made = doc.timestamp_ms / 1000;
    chain(root, &cabundle[1..], &doc.certificate, made)?;
    chain(root, &cabundle[1..], &doc.certificate, now)?;
    let key = leaf_p384_key(&doc.certificate)?;
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, key)
        .verify(&to_be_signed(&s)?, &s.signature)
        .map_err(|_| AttestationError::Signature)?;
    Ok(doc)
}

/// What a client expects of an attested enclave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Expectations {
    /// PCR values that must match exactly (0, 1, 2, and 8 if given).
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// Accept a debug-mode enclave (PCR0, 1 and 2 all zero).
    pub allow_debug: bool,
    /// The nonce the client sent.
    pub nonce: Option<Vec<u8>>,
    /// The SubjectPublicKeyInfo (DER) of the TLS certificate the connection presented.
    pub tls_spki: Option<Vec<u8>>,
    /// The most seconds the document may be older than the check (and newer: clocks differ).
    pub max_age_secs: Option<u64>,
}

impl Expectations {
    /// Checks `doc`, verified at `now` (Unix seconds), against these expectations.
    pub fn check(&self, doc: &Document, now: u64) -> Result<(), AttestationError> {
        let zero = |i: u8| doc.pcrs.get(&i).is_some_and(|v| v.iter().all(|b| *b == 0));
        if !self.allow_debug && zero(0) && zero(1) && zero(2) {
            return Err(AttestationError::DebugEnclave);
        }
        for (i, want) in &self.pcrs {
            if doc.pcrs.get(i) != Some(want) {
                return Err(AttestationError::Pcr(*i));
            }
        }
        if let Some(max) = self.max_age_secs {
            let age = i64::try_from(now).unwrap_or(i64::MAX)
                - i64::try_from(doc.timestamp_ms / 1000).unwrap_or(i64::MAX);
            if age.unsigned_abs() > max {
                return Err(AttestationError::Stale {
                    age_secs: age,
                    max_secs: max,
                });
            }
        }
        if let Some(nonce) = &self.nonce
            && doc.nonce.as_ref() != Some(nonce)
        {
            return Err(AttestationError::Nonce);
        }
        if let Some(spki) = &self.tls_spki
            && doc.user_data.as_ref() != Some(spki)
        {
            return Err(AttestationError::NotBound);
        }
        Ok(())
    }
}

/// The SubjectPublicKeyInfo (DER) of a certificate (DER).
pub fn spki_of(cert: &[u8]) -> Result<Vec<u8>, AttestationError> {
    let (_, c) =
        x509_parser::parse_x509_certificate(cert).map_err(|_| malformed("the TLS certificate"))?;
    Ok(c.public_key().raw.to_vec())
}
