//! What a client is told to expect of an attested server: the PCRs (`--expect-pcrs`) and the
//! root its attestation chains to (`--attestation-root`), read from files with a bound; and
//! the check of a live server on every new connection. The verification of a document
//! itself is `keyserver_protocol::attestation`.
//!
//! ```text
//! TLS handshake: any certificate, but the server proves it holds the certificate's key
//!   (TLS 1.3 CertificateVerify, checked as usual)
//! first request: Attest { fresh nonce } ──▶ document
//!   verify: COSE ES384 signature, chain to the pinned root at the document's time and now
//!   check:  PCRs, not a debug enclave, nonce, age, user_data == SPKI of that certificate
//! only then: any other request on the connection
//! ```
//!
//! The certificate needs no CA: the attestation says which key the enclave made, and the
//! handshake proves the server holds it. A host that terminates TLS itself holds another key
//! and cannot show a document naming it.

use std::{collections::BTreeMap, io::Read, path::Path, sync::Arc};

use keyserver_protocol::{
    ErrorCode, Request, Response,
    attestation::{self, Expectations, TrustedRoot},
    limits::ATTESTATION_NONCE,
};
use rand::{RngCore, rngs::OsRng};
use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    pki_types::{CertificateDer, ServerName, UnixTime},
};

use crate::{ClientError, link::Link};

/// The most a document may be older (or newer: clocks differ) than the check of it. The
/// server makes it on request, so this is clock skew plus a round trip.
pub const MAX_AGE_SECS: u64 = 300;

/// What a client requires of an attested server.
#[derive(Clone, Debug)]
pub struct Policy {
    /// PCR values that must match (0, 1, 2, and 8 if given).
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The root the document must chain to (DER); `None`: AWS's, pinned by fingerprint.
    pub root: Option<Vec<u8>>,
    /// Accept a debug enclave (PCR0, 1 and 2 zero), whose memory its host can read.
    pub allow_debug: bool,
}

fn refused(why: impl std::fmt::Display) -> ClientError {
    ClientError::NotAttested(why.to_string())
}

fn now_secs() -> u64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "an attestation is checked against the wall clock"
    )]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Asks the server on `link` for its attestation and checks it against `policy` and the
/// certificate the link's TLS handshake presented. Sent first on every new connection.
pub async fn check(link: &dyn Link, policy: &Policy) -> Result<(), ClientError> {
    let cert = link
        .peer_certificate()
        .ok_or_else(|| refused("the connection has no server certificate to bind to"))?;
    let tls_spki = attestation::spki_of(&cert).map_err(refused)?;
    let mut nonce = [0u8; ATTESTATION_NONCE];
    OsRng.fill_bytes(&mut nonce);
    let answer = link
        .call(&Request::Attest { nonce }.encode())
        .await
        .map_err(|e| match e {
            crate::LinkError::Lost(why) => ClientError::Unreachable(why),
            crate::LinkError::Fatal(e) => e,
        })?;
    let document = match Response::decode(&answer) {
        Ok(Response::Attestation { document }) => document,
        Ok(Response::Error(e)) if e.code == ErrorCode::NO_ATTESTATION => {
            return Err(refused(
                "attestation missing: the server runs without a security module (not in an \
                 enclave)",
            ));
        }
        Ok(Response::Error(e)) if e.code == ErrorCode::SLOW_DOWN => {
            return Err(ClientError::Server(e.code));
        }
        Ok(Response::Error(e)) => {
            return Err(refused(format!(
                "attestation missing: the server answered {}",
                e.code.name()
            )));
        }
        _ => {
            return Err(refused(
                "attestation missing: an answer that is not a document",
            ));
        }
    };
    let now = now_secs();
    let root = policy
        .root
        .as_deref()
        .map_or(TrustedRoot::AWS, TrustedRoot::Der);
    let doc = attestation::verify(document.as_slice(), root, now).map_err(refused)?;
    Expectations {
        pcrs: policy.pcrs.clone(),
        allow_debug: policy.allow_debug,
        nonce: Some(nonce.to_vec()),
        tls_spki: Some(tls_spki),
        max_age_secs: Some(MAX_AGE_SECS),
    }
    .check(&doc, now)
    .map_err(refused)
}

/// Accepts any server certificate in the handshake, which must still prove that the server
/// holds its key (TLS 1.3 signatures are checked as usual); [`check`] then requires an
/// attestation naming that key before anything else is sent.
#[derive(Debug)]
pub(crate) struct AttestedServer(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AttestedServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // Deliberately no CA: the attestation document vouches for this certificate's key,
        // and nothing but the attestation request is sent before it has.
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Largest PCR or root file read.
const MAX_FILE: u64 = 64 * 1024;

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ClientError> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE + 1).read_to_end(&mut buf))
        .map_err(|e| {
            ClientError::InvalidInput(format!("cannot read {what} {}: {e}", path.display()))
        })?;
    if buf.len() as u64 > MAX_FILE {
        return Err(ClientError::InvalidInput(format!(
            "{what} {} is larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// The PCRs a server must attest, from a JSON object `{"0": "hex", "1": "hex", "2": "hex"}`
/// (and optionally `"8"`): each 48 bytes (SHA-384), as `nitro-cli describe-eif` prints them.
pub fn read_expected_pcrs(path: &Path) -> Result<BTreeMap<u8, Vec<u8>>, ClientError> {
    let bad = |why: String| {
        ClientError::InvalidInput(format!("the PCR file {} is invalid: {why}", path.display()))
    };
    let text = read(path, "the PCR file")?;
    let map: BTreeMap<String, String> =
        serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut pcrs = BTreeMap::new();
    for (k, v) in map {
        let index = match k.as_str() {
            "0" => 0,
            "1" => 1,
            "2" => 2,
            "8" => 8,
            other => return Err(bad(format!("PCR {other:?} (only 0, 1, 2 and 8)"))),
        };
        let value = hex::decode(v.trim()).map_err(|_| bad(format!("PCR{index} is not hex")))?;
        if value.len() != 48 {
            return Err(bad(format!("PCR{index} is not 48 bytes")));
        }
        pcrs.insert(index, value);
    }
    for required in [0, 1, 2] {
        if !pcrs.contains_key(&required) {
            return Err(bad(format!("PCR{required} is missing")));
        }
    }
    Ok(pcrs)
}

/// A root certificate from a PEM (or DER) file.
pub fn read_root(path: &Path) -> Result<Vec<u8>, ClientError> {
    let bytes = read(path, "the attestation root")?;
    if !bytes.starts_with(b"-----") {
        return Ok(bytes);
    }
    let mut reader = bytes.as_slice();
    match rustls_pemfile::certs(&mut reader).next() {
        Some(Ok(c)) => Ok(c.to_vec()),
        _ => Err(ClientError::InvalidInput(format!(
            "the attestation root {} holds no certificate",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pcr_file_names_pcr0_1_2_and_maybe_8_each_48_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pcrs.json");
        let h = "ab".repeat(48);
        std::fs::write(
            &f,
            format!(r#"{{"0":"{h}","1":"{h}","2":"{h}","8":"{h}"}}"#),
        )
        .unwrap();
        assert_eq!(read_expected_pcrs(&f).unwrap().len(), 4);
        for bad in [
            format!(r#"{{"0":"{h}","1":"{h}"}}"#),
            format!(r#"{{"0":"{h}","1":"{h}","2":"abcd"}}"#),
            format!(r#"{{"0":"{h}","1":"{h}","2":"{h}","3":"{h}"}}"#),
            format!(r#"{{"0":"{h}","1":"{h}","2":"zz"}}"#),
            "[]".to_string(),
        ] {
            std::fs::write(&f, bad).unwrap();
            assert!(matches!(
                read_expected_pcrs(&f),
                Err(ClientError::InvalidInput(_))
            ));
        }
    }
}
