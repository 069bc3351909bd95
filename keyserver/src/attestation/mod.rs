//! The enclave's proof of what it runs: attestation documents from a security module, bound
//! to the TLS key the server made at boot.
//!
//! ```text
//! boot:    TLS key made in memory (never written) ──▶ its SubjectPublicKeyInfo
//! request: Attest { nonce } ──▶ module.attest(user_data = SPKI, nonce) ──▶ COSE_Sign1
//! ```
//!
//! A client that expects an attested server asks for a document first on every connection
//! and checks that it was signed for the enclave image it expects (PCRs), for its nonce, and
//! for the key that the TLS connection it is on was made with: a host that terminates TLS
//! itself cannot present a document for its own key.
//!
//! - [`nsm`]: the AWS Nitro Security Module (`/dev/nsm`), inside an enclave.
//! - [`simulated`]: a module of the project's own, for development and tests, that signs
//!   documents of exactly AWS's format under a test root made by `keyserver init
//!   --simulated-attestation`. Clients accept it only when told to trust that root.

pub mod nsm;
pub mod simulated;

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::sync::Semaphore;

use keyserver_protocol::limits::{ATTESTATION_NONCE, MAX_ATTESTATION_DOCUMENT};

/// Which security module the server asks for attestation documents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// None: the server serves the data dir's certificate and answers `NO_ATTESTATION`.
    #[default]
    Off,
    /// The AWS Nitro Security Module (`/dev/nsm`): only inside a Nitro enclave.
    Nsm,
    /// The simulated module of the data dir (`keyserver init --simulated-attestation`):
    /// development and tests only.
    Simulated,
}

impl Mode {
    /// Its name in settings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Nsm => "nsm",
            Self::Simulated => "simulated",
        }
    }
}

/// Why a security module gave no document.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// The module cannot be used at all (no `/dev/nsm`, missing or invalid files).
    #[error("the security module is unavailable: {0}")]
    Unavailable(String),
    /// The module refused or failed this request.
    #[error("the security module failed: {0}")]
    Failed(String),
}

/// What a document is asked to carry. Every field is signed into the document.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttestRequest<'a> {
    /// `user_data`: the SubjectPublicKeyInfo of the server's TLS key.
    pub user_data: Option<&'a [u8]>,
    /// `nonce`: the client's.
    pub nonce: Option<&'a [u8]>,
    /// `public_key`: a key KMS is to encrypt to (the `nitro-kms` provider's recipient).
    pub public_key: Option<&'a [u8]>,
}

/// A source of attestation documents (COSE_Sign1 over AWS's document format).
pub trait SecurityModule: Send + Sync + std::fmt::Debug {
    /// A document carrying `request`, made now. Blocking (a device call or a signature).
    fn attest(&self, request: AttestRequest<'_>) -> Result<Vec<u8>, ModuleError>;
}

/// Opens the module `mode` names, for the data dir `data_dir`; `None` for [`Mode::Off`].
pub fn open(
    mode: Mode,
    data_dir: &std::path::Path,
) -> Result<Option<Arc<dyn SecurityModule>>, ModuleError> {
    Ok(match mode {
        Mode::Off => None,
        Mode::Nsm => Some(Arc::new(nsm::Nsm::open()?)),
        Mode::Simulated => Some(Arc::new(simulated::Simulated::open(data_dir)?)),
    })
}

/// The TLS identity of an attested server: a key made in memory at boot, never written,
/// and a self-signed certificate for it. Clients do not check it against a CA: the
/// attestation document names its key.
pub struct TlsIdentity {
    /// The certificate (one, self-signed).
    pub certs: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate's SubjectPublicKeyInfo (DER), which documents carry as `user_data`.
    pub spki: Vec<u8>,
}

impl TlsIdentity {
    /// A new key (ECDSA P-256) and certificate.
    pub fn generate() -> Result<Self, ModuleError> {
        let fail = |e: rcgen::Error| ModuleError::Failed(format!("cannot make the TLS key: {e}"));
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::new(crate::pki::DEV_NAMES.map(String::from).to_vec())
            .map_err(fail)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "keyserver (attested)");
        let cert = params.self_signed(&key).map_err(fail)?;
        let spki = keyserver_protocol::attestation::spki_of(cert.der())
            .map_err(|e| ModuleError::Failed(e.to_string()))?;
        Ok(Self {
            certs: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            spki,
        })
    }
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

/// Most documents made at once (each a blocking module call); more wait their turn.
const CONCURRENT_DOCUMENTS: usize = 4;

/// Answers attestation requests: documents bound to the server's TLS key.
#[derive(Debug)]
pub struct Attester {
    module: Arc<dyn SecurityModule>,
    spki: Vec<u8>,
    slots: Semaphore,
}

impl Attester {
    /// Documents from `module` for the TLS key whose SubjectPublicKeyInfo is `spki`.
    pub fn new(module: Arc<dyn SecurityModule>, spki: Vec<u8>) -> Self {
        Self {
            module,
            spki,
            slots: Semaphore::new(CONCURRENT_DOCUMENTS),
        }
    }

    /// A document carrying the TLS key and `nonce`.
    pub async fn document(&self, nonce: [u8; ATTESTATION_NONCE]) -> Result<Vec<u8>, ModuleError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| ModuleError::Failed("closed".into()))?;
        let (module, spki) = (self.module.clone(), self.spki.clone());
        let doc = tokio::task::spawn_blocking(move || {
            module.attest(AttestRequest {
                user_data: Some(&spki),
                nonce: Some(&nonce),
                public_key: None,
            })
        })
        .await
        .map_err(|e| ModuleError::Failed(e.to_string()))??;
        if doc.len() > MAX_ATTESTATION_DOCUMENT {
            return Err(ModuleError::Failed(format!(
                "a document of {} bytes is larger than the protocol carries",
                doc.len()
            )));
        }
        Ok(doc)
    }
}
