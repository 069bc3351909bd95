//! A simulated security module for development and tests, never used unless asked for.
//!
//! `keyserver init --simulated-attestation` writes, in the data dir's
//! `simulated-attestation/`:
//!
//! - `root.pem`: a test root certificate (ECDSA P-384, as AWS's), made here;
//! - `root.key`: its private key (mode 0600);
//! - `pcrs.json`: the PCR0, 1 and 2 it reports (random), in the client's `--expect-pcrs`
//!   format.
//!
//! `keyserver serve --attestation simulated` then signs documents of exactly AWS's format:
//! the payload is AWS's own `AttestationDoc` type (from `aws-nitro-enclaves-nsm-api`)
//! encoded by AWS's own code, wrapped in an untagged COSE_Sign1 with ES384, signed by a leaf
//! certificate that lives three hours (as AWS's do) under the test root, which is
//! `cabundle[0]`. The client's real verifier runs on them end to end; it accepts them only
//! when given `--attestation-root` with this root, never by default (its default is AWS's
//! root, pinned by fingerprint). Whoever holds `root.key` can attest anything: it proves
//! nothing about a machine, and exists so that everything around attestation can be tested.

use std::{collections::BTreeMap, path::Path, sync::Mutex, time::Duration};

use aws_nitro_enclaves_nsm_api::api::{AttestationDoc, Digest};
use ciborium::Value;
use rand::{RngCore, rngs::OsRng};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use ring::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair};
use rustls::pki_types::CertificateDer;

use super::{AttestRequest, ModuleError, SecurityModule};
use crate::{
    clock::{Clock, SystemClock},
    files::{FileError, read_bounded, write_private, write_public},
};

/// The folder in the data dir.
pub const DIR: &str = "simulated-attestation";
/// The test root's certificate.
pub const ROOT_CERT: &str = "root.pem";
/// The test root's key.
pub const ROOT_KEY: &str = "root.key";
/// The PCRs reported.
pub const PCRS: &str = "pcrs.json";

/// The module id written into documents (AWS's look like `i-…-enc…`).
const MODULE_ID: &str = "i-00000000000000000-enc0000000000000000 (simulated)";
/// How long a leaf certificate lives (AWS's: about three hours).
const LEAF_LIFETIME: Duration = Duration::from_secs(3 * 3600);
/// A leaf is replaced this long before it expires.
const LEAF_RENEW_BEFORE: Duration = Duration::from_secs(3600);
/// How long the test root lives.
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The protected header of every document: `{1 (alg): -35 (ES384)}`.
const PROTECTED_ES384: [u8; 4] = [0xa1, 0x01, 0x38, 0x22];
/// PCRs a Nitro document reports (0 to 15); those not in `pcrs.json` are zero.
const REPORTED_PCRS: usize = 16;

fn pki(e: rcgen::Error) -> FileError {
    FileError::Pki(e.to_string())
}

fn offset(now_ms: i64, delta_secs: i64) -> Result<time::OffsetDateTime, FileError> {
    time::OffsetDateTime::from_unix_timestamp(now_ms.div_euclid(1000).saturating_add(delta_secs))
        .map_err(|e| FileError::Pki(e.to_string()))
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Writes the test root, its key and the PCRs into `data_dir`/`simulated-attestation`.
/// Refuses to replace a module that exists: clients may have been told to trust its root.
pub fn create(data_dir: &Path) -> Result<(), FileError> {
    let dir = data_dir.join(DIR);
    if dir.exists() {
        return Err(FileError::Invalid(
            dir.display().to_string(),
            "a simulated security module exists already (remove the folder to make a new \
             root)"
                .into(),
        ));
    }
    std::fs::create_dir_all(&dir).map_err(crate::files::io(&dir))?;
    let now = SystemClock::default().now().unix_ms();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(pki)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        DnType::CommonName,
        "keyserver simulated Nitro root (not AWS; development and tests only)",
    );
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = offset(now, -86_400)?;
    params.not_after = offset(now, secs(ROOT_LIFETIME))?;
    let cert = params.self_signed(&key).map_err(pki)?;
    let mut pcrs = serde_json::Map::new();
    for i in 0..3 {
        let mut v = [0u8; 48];
        OsRng.fill_bytes(&mut v);
        pcrs.insert(i.to_string(), hex::encode(v).into());
    }
    let pcrs = serde_json::to_vec_pretty(&pcrs).map_err(|e| FileError::Pki(e.to_string()))?;
    write_private(&dir.join(ROOT_KEY), key.serialize_pem().as_bytes())?;
    write_public(&dir.join(PCRS), &pcrs)?;
    write_public(&dir.join(ROOT_CERT), cert.pem().as_bytes())?;
    Ok(())
}

/// The current leaf: its certificate and the key that signs documents.
struct Leaf {
    der: Vec<u8>,
    key: EcdsaKeyPair,
    renew_at_ms: i64,
}

/// The simulated module of a data dir.
pub struct Simulated {
    root_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    pcrs: BTreeMap<usize, Vec<u8>>,
    leaf: Mutex<Option<Leaf>>,
}

impl std::fmt::Debug for Simulated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulated").finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> ModuleError {
    ModuleError::Unavailable(format!(
        "the simulated security module ({DIR}/ in the data dir; make it with `keyserver init \
         --simulated-attestation`): {e}"
    ))
}

/// Reads `pcrs.json`: `{"0": hex, …}`, each 48 bytes, indices below 16.
fn read_pcrs(path: &Path) -> Result<BTreeMap<usize, Vec<u8>>, ModuleError> {
    let text = read_bounded(path, 64 * 1024).map_err(unavailable)?;
    let map: BTreeMap<String, String> = serde_json::from_slice(&text)
        .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
    let mut pcrs: BTreeMap<usize, Vec<u8>> = (0..REPORTED_PCRS).map(|i| (i, vec![0; 48])).collect();
    for (k, v) in map {
        let i = k
            .parse::<usize>()
            .ok()
            .filter(|i| *i < REPORTED_PCRS)
            .ok_or_else(|| unavailable(format!("{}: PCR {k:?}", path.display())))?;
        let value = hex::decode(v.trim())
            .ok()
            .filter(|v| v.len() == 48)
            .ok_or_else(|| {
                unavailable(format!("{}: PCR{i} is not 48 hex bytes", path.display()))
            })?;
        pcrs.insert(i, value);
    }
    Ok(pcrs)
}

impl Simulated {
    /// Loads the module of `data_dir` and checks that a document it signs verifies under
    /// its root.
    pub fn open(data_dir: &Path) -> Result<Self, ModuleError> {
        let dir = data_dir.join(DIR);
        let pem = read_bounded(&dir.join(ROOT_CERT), 64 * 1024).map_err(unavailable)?;
        let root: CertificateDer<'static> = rustls_pemfile::certs(&mut pem.as_slice())
            .next()
            .and_then(Result::ok)
            .ok_or_else(|| unavailable(format!("{ROOT_CERT} holds no certificate")))?;
        let key_pem = zeroize::Zeroizing::new(
            read_bounded(&dir.join(ROOT_KEY), 64 * 1024).map_err(unavailable)?,
        );
        let key = std::str::from_utf8(&key_pem)
            .ok()
            .and_then(|k| KeyPair::from_pem(k).ok())
            .ok_or_else(|| unavailable(format!("{ROOT_KEY} is not a PEM private key")))?;
        let issuer = Issuer::from_ca_cert_der(&root, key).map_err(unavailable)?;
        let module = Self {
            root_der: root.to_vec(),
            issuer,
            pcrs: read_pcrs(&dir.join(PCRS))?,
            leaf: Mutex::new(None),
        };
        let probe = module.attest(AttestRequest::default())?;
        let now = SystemClock::default().now().unix_secs();
        keyserver_protocol::attestation::verify(
            &probe,
            keyserver_protocol::attestation::TrustedRoot::Der(&module.root_der),
            u64::try_from(now).unwrap_or(0),
        )
        .map_err(|e| unavailable(format!("{ROOT_KEY} does not sign for {ROOT_CERT}: {e}")))?;
        Ok(module)
    }

    /// A new leaf certificate and key under the root, valid from a little before `now_ms`.
    fn new_leaf(&self, now_ms: i64) -> Result<Leaf, ModuleError> {
        let fail = |e: &dyn std::fmt::Display| ModuleError::Failed(format!("leaf: {e}"));
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).map_err(|e| fail(&e))?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|e| fail(&e))?;
        params.distinguished_name.push(
            DnType::CommonName,
            "i-00000000000000000-enc0000000000000000",
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = offset(now_ms, -300).map_err(|e| fail(&e))?;
        params.not_after = offset(now_ms, secs(LEAF_LIFETIME)).map_err(|e| fail(&e))?;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| fail(&e))?;
        let signing = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            key.serialized_der(),
            &ring::rand::SystemRandom::new(),
        )
        .map_err(|e| fail(&e))?;
        Ok(Leaf {
            der: cert.der().to_vec(),
            key: signing,
            renew_at_ms: now_ms.saturating_add(
                i64::try_from((LEAF_LIFETIME - LEAF_RENEW_BEFORE).as_millis()).unwrap_or(0),
            ),
        })
    }
}

/// CBOR of `value`.
fn cbor(value: &Value) -> Result<Vec<u8>, ModuleError> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out)
        .map_err(|e| ModuleError::Failed(format!("CBOR: {e}")))?;
    Ok(out)
}

impl SecurityModule for Simulated {
    fn attest(&self, request: AttestRequest<'_>) -> Result<Vec<u8>, ModuleError> {
        let now_ms = SystemClock::default().now().unix_ms();
        let mut leaf = self
            .leaf
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if leaf.as_ref().is_none_or(|l| now_ms >= l.renew_at_ms) {
            *leaf = Some(self.new_leaf(now_ms)?);
        }
        let Some(leaf) = leaf.as_ref() else {
            return Err(ModuleError::Failed("no leaf".into()));
        };
        let payload = AttestationDoc::new(
            MODULE_ID.into(),
            Digest::SHA384,
            u64::try_from(now_ms).unwrap_or(0),
            self.pcrs.clone(),
            leaf.der.clone(),
            vec![self.root_der.clone()],
            request.user_data.map(<[u8]>::to_vec),
            request.nonce.map(<[u8]>::to_vec),
            request.public_key.map(<[u8]>::to_vec),
        )
        .to_binary();
        // RFC 9052 §4.4: the signature covers ["Signature1", protected, external_aad, payload].
        let to_sign = cbor(&Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Bytes(Vec::new()),
            Value::Bytes(payload.clone()),
        ]))?;
        let signature = leaf
            .key
            .sign(&ring::rand::SystemRandom::new(), &to_sign)
            .map_err(|e| ModuleError::Failed(format!("signing: {e}")))?;
        cbor(&Value::Array(vec![
            Value::Bytes(PROTECTED_ES384.to_vec()),
            Value::Map(Vec::new()),
            Value::Bytes(payload),
            Value::Bytes(signature.as_ref().to_vec()),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyserver_protocol::attestation::{self, Expectations, TrustedRoot};

    #[test]
    fn documents_verify_under_the_test_root_and_only_there() {
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).unwrap();
        let module = Simulated::open(dir.path()).unwrap();
        let doc = module
            .attest(AttestRequest {
                user_data: Some(b"spki"),
                nonce: Some(&[7; 32]),
                public_key: None,
            })
            .unwrap();
        let now = u64::try_from(SystemClock::default().now().unix_secs()).unwrap();
        let verified = attestation::verify(&doc, TrustedRoot::Der(&module.root_der), now).unwrap();
        assert_eq!(verified.user_data.as_deref(), Some(&b"spki"[..]));
        assert_eq!(verified.nonce.as_deref(), Some(&[7u8; 32][..]));
        assert_eq!(verified.pcrs.len(), REPORTED_PCRS);
        Expectations {
            pcrs: module
                .pcrs
                .iter()
                .take(3)
                .map(|(i, v)| (u8::try_from(*i).unwrap(), v.clone()))
                .collect(),
            allow_debug: false,
            nonce: Some(vec![7; 32]),
            tls_spki: Some(b"spki".to_vec()),
            max_age_secs: Some(60),
        }
        .check(&verified, now)
        .unwrap();
        // Never under AWS's root.
        assert!(matches!(
            attestation::verify(&doc, TrustedRoot::AWS, now),
            Err(attestation::AttestationError::UntrustedRoot)
        ));
        // Nor past the leaf's three hours.
        assert!(
            attestation::verify(&doc, TrustedRoot::Der(&module.root_der), now + 4 * 3600).is_err()
        );
    }

    #[test]
    fn a_module_is_never_replaced_and_a_mismatched_key_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        create(a.path()).unwrap();
        assert!(create(a.path()).is_err());
        create(b.path()).unwrap();
        std::fs::copy(
            a.path().join(DIR).join(ROOT_KEY),
            b.path().join(DIR).join(ROOT_KEY),
        )
        .unwrap();
        let e = Simulated::open(b.path()).unwrap_err().to_string();
        assert!(e.contains("does not sign"), "{e}");
        assert!(Simulated::open(tempfile::tempdir().unwrap().path()).is_err());
    }

    #[test]
    fn the_key_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(DIR).join(ROOT_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
