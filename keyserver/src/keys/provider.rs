//! Key-encryption keys: where the data keys are wrapped.
//!
//! - [`FileKek`]: a 32-byte key file (mode 0600), next to the data dir by default: the
//!   embedded default for a laptop. Whoever holds the file and the database holds every
//!   key.
//! - [`KmsKek`]: an AWS KMS key, called over HTTPS with SigV4; the KEK never leaves KMS, and
//!   a stolen disk, database dump or backup is worthless without access to it.

use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use keyserver_protocol::secret::Key32;
use rand::{RngCore, rngs::OsRng};
use zeroize::Zeroizing;

use super::{Binding, KekId, KeyError, open, seal};
use crate::{
    files::{FileError, read_bounded, write_private},
    kms::{KmsClient, Recipient, client::Secret, enclave::EnclaveRecipient},
};

/// A key-encryption key.
#[async_trait]
pub trait KeyProvider: Send + Sync + std::fmt::Debug {
    /// What a keyring wrapped by it records.
    fn id(&self) -> KekId;

    /// Checks that it can be used now (a KMS key that is disabled or scheduled for deletion
    /// cannot).
    async fn check(&self) -> Result<(), KeyError>;

    /// A new data key, and the key wrapped for `binding`.
    async fn generate(&self, binding: Binding) -> Result<(Key32, Vec<u8>), KeyError>;

    /// `key` wrapped for `binding`.
    async fn wrap(&self, key: &Key32, binding: Binding) -> Result<Vec<u8>, KeyError>;

    /// The key `wrapped` for `binding`; refused if it was wrapped for another binding, by
    /// another key, or altered.
    async fn unwrap(&self, wrapped: &[u8], binding: Binding) -> Result<Key32, KeyError>;

    /// `wrapped` wrapped again by `to` without the key leaving the KMS, if both can do
    /// that; `None` if not (the caller unwraps and wraps).
    async fn reencrypt_to(
        &self,
        _wrapped: &[u8],
        _binding: Binding,
        _to: &dyn KeyProvider,
    ) -> Option<Result<Vec<u8>, KeyError>> {
        None
    }

    /// The KMS key, if this is one that KMS can re-encrypt to.
    fn kms_key(&self) -> Option<&str> {
        None
    }
}

/// Label of a key file's fingerprint.
const FINGERPRINT_LABEL: &[u8] = b"keyserver/4 key file fingerprint";

/// A key file.
pub struct FileKek {
    path: String,
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FileKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileKek")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl FileKek {
    /// The key `key`, said to be from `path`.
    pub fn from_key(path: String, key: Zeroizing<[u8; 32]>) -> Self {
        Self { path, key }
    }

    /// The key in file `path` (exactly 32 bytes).
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::KeyFile {
            path: path.display().to_string(),
            why,
        };
        let bytes = Zeroizing::new(read_bounded(path, 64).map_err(|e| match e {
            FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                bad("does not exist".into())
            }
            other => bad(other.to_string()),
        })?);
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("a key file is exactly 32 bytes".into()))?;
        // Like ssh with a private key: a key others can read is not used.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(bad(format!(
                "is readable or writable by others than its owner (mode {:o}): \
                 chmod 600 it, and consider whether the key was exposed",
                mode & 0o777
            )));
        }
        Ok(Self::from_key(
            path.display().to_string(),
            Zeroizing::new(key),
        ))
    }

    /// The key in file `path`, made (random, mode 0600) if there is none.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        if path.exists() {
            return Self::load(path);
        }
        let mut key = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(key.as_mut());
        match write_private(path, key.as_ref()) {
            Ok(()) => Ok(Self::from_key(path.display().to_string(), key)),
            // Another process made it first (two first starts at once): use theirs.
            Err(FileError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AlreadyExists =>
            {
                Self::load(path)
            }
            Err(e) => Err(KeyError::KeyFile {
                path: path.display().to_string(),
                why: e.to_string(),
            }),
        }
    }

    /// Where the key came from.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn describe(&self) -> String {
        format!("the key file {}", self.path)
    }
}

#[async_trait]
impl KeyProvider for FileKek {
    fn id(&self) -> KekId {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.key.as_ref());
        let tag = ring::hmac::sign(&key, FINGERPRINT_LABEL);
        KekId::File {
            id: hex::encode(&tag.as_ref()[..16]),
        }
    }

    async fn check(&self) -> Result<(), KeyError> {
        Ok(())
    }

    async fn generate(&self, binding: Binding) -> Result<(Key32, Vec<u8>), KeyError> {
        let mut k = [0u8; 32];
        OsRng.fill_bytes(&mut k);
        let key = Key32::from_bytes(k);
        let wrapped = self.wrap(&key, binding).await?;
        Ok((key, wrapped))
    }

    async fn wrap(&self, key: &Key32, binding: Binding) -> Result<Vec<u8>, KeyError> {
        Ok(seal(&self.key, &binding.aad(), key.expose_secret()))
    }

    async fn unwrap(&self, wrapped: &[u8], binding: Binding) -> Result<Key32, KeyError> {
        open(&self.key, &binding.aad(), wrapped)
            .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
            .map(Key32::from_bytes)
            .ok_or_else(|| KeyError::Unwrap {
                purpose: binding.purpose.as_str(),
                kek: self.describe(),
            })
    }
}

/// An AWS KMS key.
#[derive(Debug)]
pub struct KmsKek {
    client: KmsClient,
    key: String,
    /// Inside an enclave (`nitro-kms`): data keys come back only encrypted to this
    /// recipient's key, never in clear.
    recipient: Option<Arc<EnclaveRecipient>>,
}

impl KmsKek {
    /// The KMS key `key` (its ARN, as a keyring records it), called with `client`.
    pub fn new(client: KmsClient, key: String) -> Self {
        Self {
            client,
            key,
            recipient: None,
        }
    }

    /// The key's ARN.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same key, asked for data keys as `recipient` (`nitro-kms`).
    #[must_use]
    pub fn for_recipient(self, recipient: Arc<EnclaveRecipient>) -> Self {
        Self {
            recipient: Some(recipient),
            ..self
        }
    }

    /// A `Recipient` for one call, if this key is used from an enclave.
    fn recipient(&self) -> Result<Option<Recipient>, KeyError> {
        self.recipient
            .as_ref()
            .map(|r| r.recipient())
            .transpose()
            .map_err(|e| KeyError::Settings(format!("no attestation for KMS: {e}")))
    }

    /// The KMS key named `key_id` (an ARN, key id or alias) as its ARN, after checking
    /// that it can be used.
    pub async fn resolve(client: KmsClient, key_id: &str) -> Result<Self, KeyError> {
        let d = match client.describe_key(key_id).await {
            Ok(d) => d,
            // A role allowed to decrypt but not to describe (least privilege, an enclave's):
            // a full ARN needs no resolving, and the calls themselves say what is wrong.
            Err(e) if e.code() == Some("AccessDeniedException") && key_id.starts_with("arn:") => {
                return Ok(Self::new(client, key_id.to_string()));
            }
            Err(source) => {
                return Err(KeyError::Kms {
                    kek: format!("the KMS key {key_id} at {}", client.endpoint()),
                    source,
                });
            }
        };
        if d.state != "Enabled" {
            return Err(KeyError::KeyState {
                key: d.arn,
                state: d.state,
            });
        }
        Ok(Self::new(client, d.arn))
    }

    fn err(&self, source: crate::kms::KmsError) -> KeyError {
        KeyError::Kms {
            kek: format!("the KMS key {} at {}", self.key, self.client.endpoint()),
            source,
        }
    }

    fn plain(&self, secret: Secret, binding: Binding) -> Result<Key32, KeyError> {
        let refused = |why: String| KeyError::Unwrap {
            purpose: binding.purpose.as_str(),
            kek: format!("the KMS key {} ({why})", self.key),
        };
        let bytes = match (secret, &self.recipient) {
            (Secret::Plain(p), None) => p,
            (Secret::ForRecipient(cms), Some(r)) => {
                r.open(&cms).map_err(|e| refused(e.to_string()))?
            }
            (Secret::Plain(_), Some(_)) => {
                return Err(refused(
                    "a key in clear to a request for the enclave".into(),
                ));
            }
            (Secret::ForRecipient(_), None) => {
                return Err(refused(
                    "an answer for a recipient to a request without one".into(),
                ));
            }
        };
        <[u8; 32]>::try_from(bytes.as_slice())
            .map(Key32::from_bytes)
            .map_err(|_| refused("not a 256-bit key".into()))
    }
}

#[async_trait]
impl KeyProvider for KmsKek {
    fn id(&self) -> KekId {
        KekId::Kms {
            key: self.key.clone(),
        }
    }

    async fn check(&self) -> Result<(), KeyError> {
        match self.client.describe_key(&self.key).await {
            Ok(d) if d.state == "Enabled" => Ok(()),
            Ok(d) => Err(KeyError::KeyState {
                key: d.arn,
                state: d.state,
            }),
            // A role allowed to decrypt but not to describe (an enclave's, often): the
            // calls themselves say what is wrong.
            Err(e) if e.code() == Some("AccessDeniedException") => Ok(()),
            Err(e) => Err(self.err(e)),
        }
    }

    async fn generate(&self, binding: Binding) -> Result<(Key32, Vec<u8>), KeyError> {
        let d = self
            .client
            .generate_data_key(&self.key, &binding.context(), self.recipient()?.as_ref())
            .await
            .map_err(|e| self.err(e))?;
        Ok((self.plain(d.secret, binding)?, d.ciphertext_blob))
    }

    async fn wrap(&self, key: &Key32, binding: Binding) -> Result<Vec<u8>, KeyError> {
        self.client
            .encrypt(&self.key, key.expose_secret(), &binding.context())
            .await
            .map_err(|e| self.err(e))
    }

    async fn unwrap(&self, wrapped: &[u8], binding: Binding) -> Result<Key32, KeyError> {
        let d = self
            .client
            .decrypt(
                wrapped,
                &binding.context(),
                Some(&self.key),
                self.recipient()?.as_ref(),
            )
            .await
            .map_err(|e| match e.code() {
                // Altered, swapped for another purpose's or deployment's, or wrapped by
                // another key: name which data key.
                Some("InvalidCiphertextException" | "IncorrectKeyException") => KeyError::Unwrap {
                    purpose: binding.purpose.as_str(),
                    kek: format!("the KMS key {} ({e})", self.key),
                },
                _ => self.err(e),
            })?;
        self.plain(d.secret, binding)
    }

    async fn reencrypt_to(
        &self,
        wrapped: &[u8],
        binding: Binding,
        to: &dyn KeyProvider,
    ) -> Option<Result<Vec<u8>, KeyError>> {
        let dest = to.kms_key()?;
        Some(
            self.client
                .re_encrypt(wrapped, &binding.context(), dest)
                .await
                .map_err(|e| self.err(e)),
        )
    }

    fn kms_key(&self) -> Option<&str> {
        Some(&self.key)
    }
}
