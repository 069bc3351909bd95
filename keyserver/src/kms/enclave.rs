//! KMS from inside a Nitro enclave, which has no network: its calls go over vsock to
//! `keyserver host`, which connects them to KMS (TLS still ends inside the enclave: the host
//! sees ciphertext) and lends the enclave its AWS credentials, as AWS's vsock proxy and
//! credential forwarding do.
//!
//! ```text
//! opening (enclave → host) = "KSR1" || kind
//! kind 3 = a connection to KMS: host length (u16 BE) || host || port (u16 BE); the host
//!          connects only to the KMS endpoint it was given, then copies bytes both ways
//! kind 4 = credentials: the host answers length (u16 BE) || JSON {AccessKeyId,
//!          SecretAccessKey, Token?} and closes
//! ```
//!
//! The credentials only let the enclave call KMS; what KMS gives it is decided by the key
//! policy, which for `nitro-kms` answers `Decrypt` and `GenerateDataKey` only to a request
//! carrying an attestation document of the expected enclave image, and then only encrypted
//! to the key in that document ([`EnclaveRecipient`]). The host, holding the same
//! credentials, gets nothing it can open.

use std::sync::Arc;

use async_trait::async_trait;
use rsa::{RsaPrivateKey, pkcs8::EncodePublicKey};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use zeroize::Zeroizing;

use super::{Connector, Credentials, Recipient, client::Stream};
use crate::{
    attestation::{AttestRequest, ModuleError, SecurityModule},
    relay::{self, MAGIC},
};

/// A connection to KMS, through the host.
pub const KIND_KMS: u8 = 3;
/// The host's credentials.
pub const KIND_CREDENTIALS: u8 = 4;
/// Largest credentials answer.
pub const MAX_CREDENTIALS: usize = 16 * 1024;

/// Opens KMS connections through the host's relay.
#[derive(Debug)]
pub struct HostConnector {
    host: relay::Endpoint,
}

impl HostConnector {
    /// Through the host at `host` (vsock `3:PORT` from an enclave, or `unix:PATH`).
    pub fn new(host: relay::Endpoint) -> Self {
        Self { host }
    }
}

/// The opening of a KMS connection to `host:port`.
pub fn kms_opening(host: &str, port: u16) -> Option<Vec<u8>> {
    let mut out = MAGIC.to_vec();
    out.push(KIND_KMS);
    out.extend_from_slice(&u16::try_from(host.len()).ok()?.to_be_bytes());
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    Some(out)
}

#[async_trait]
impl Connector for HostConnector {
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<Box<dyn Stream>> {
        let opening = kms_opening(host, port)
            .ok_or_else(|| std::io::Error::other("a KMS host name too long"))?;
        let mut s = self.host.connect().await?;
        s.write_all(&opening).await?;
        Ok(Box::new(s))
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Lent {
    access_key_id: String,
    secret_access_key: Zeroizing<String>,
    token: Option<Zeroizing<String>>,
}

/// The host's credentials, asked for now.
pub async fn credentials_from(host: &relay::Endpoint) -> Result<Credentials, String> {
    let ask = async {
        let mut s = host.connect().await.map_err(|e| e.to_string())?;
        let mut opening = MAGIC.to_vec();
        opening.push(KIND_CREDENTIALS);
        s.write_all(&opening).await.map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.map_err(|e| e.to_string())?;
        let len = usize::from(u16::from_be_bytes(len));
        if len > MAX_CREDENTIALS {
            return Err("an answer too large".to_string());
        }
        let mut body = Zeroizing::new(vec![0u8; len]);
        s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        let lent: Lent = serde_json::from_slice(&body)
            .map_err(|_| "an answer that is not credentials".to_string())?;
        Ok(Credentials::new(
            &lent.access_key_id,
            &lent.secret_access_key,
            lent.token.as_deref().map(String::as_str),
        ))
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), ask)
        .await
        .map_err(|_| "no answer within 5 s".to_string())?
        .map_err(|e| {
            format!(
                "the host at {} lent no AWS credentials: {e}",
                host.describe()
            )
        })
}

/// The encoding of `credentials` the host answers with.
pub fn lend(credentials: &Credentials) -> Zeroizing<Vec<u8>> {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Lending<'a> {
        access_key_id: &'a str,
        secret_access_key: &'a str,
        token: Option<&'a str>,
    }
    // Serialised straight into a buffer that is wiped when dropped: no copy of the secret
    // in an ordinary String (sized for the largest answer sent, so it is not moved while written).
    let mut json = Zeroizing::new(Vec::with_capacity(MAX_CREDENTIALS));
    let lending = Lending {
        access_key_id: credentials.access_key_id(),
        secret_access_key: credentials.secret_access_key(),
        token: credentials.session_token(),
    };
    if serde_json::to_writer(&mut *json, &lending).is_err() || json.len() > MAX_CREDENTIALS {
        return Zeroizing::new(vec![0, 0]);
    }
    let mut out = Zeroizing::new(Vec::with_capacity(json.len() + 2));
    let len = u16::try_from(json.len()).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes());
    if len > 0 {
        out.extend_from_slice(&json);
    }
    out
}

/// The enclave as a KMS recipient: an RSA-2048 key made at start, which never leaves the
/// enclave, and the security module that attests it.
pub struct EnclaveRecipient {
    key: RsaPrivateKey,
    public_key: Vec<u8>,
    module: Arc<dyn SecurityModule>,
}

impl std::fmt::Debug for EnclaveRecipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnclaveRecipient").finish_non_exhaustive()
    }
}

impl EnclaveRecipient {
    /// A new key, attested by `module`.
    pub fn new(module: Arc<dyn SecurityModule>) -> Result<Self, ModuleError> {
        let key = RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)
            .map_err(|e| ModuleError::Failed(format!("cannot make the RSA key: {e}")))?;
        let public_key = key
            .to_public_key()
            .to_public_key_der()
            .map_err(|e| ModuleError::Failed(format!("cannot encode the RSA key: {e}")))?
            .into_vec();
        Ok(Self {
            key,
            public_key,
            module,
        })
    }

    /// A `Recipient` for one call: a fresh document carrying the public key.
    pub fn recipient(&self) -> Result<Recipient, ModuleError> {
        let attestation_document = self.module.attest(AttestRequest {
            public_key: Some(&self.public_key),
            ..AttestRequest::default()
        })?;
        Ok(Recipient {
            attestation_document,
        })
    }

    /// Opens a `CiphertextForRecipient`.
    pub fn open(&self, cms: &[u8]) -> Result<Zeroizing<Vec<u8>>, super::cms::CmsError> {
        super::cms::decrypt(cms, &self.key)
    }
}
