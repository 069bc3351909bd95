//! The deployment's own secrets, under envelope encryption.
//!
//! ```text
//! key-encryption key (KEK): a KMS key, or a key file; never in the database or the data dir
//!   ├─ opaque-setup data key      seals the OPAQUE setup (OPRF seed, AKE key pair)
//!   ├─ session-vault data key     seals session keys at rest
//!   ├─ login-names data key       fake records, unknown-name keys, credential ids
//!   └─ server-held-keys data key  wraps the private keys the server holds
//! ```
//!
//! Each data key is made by the provider (KMS `GenerateDataKey`, or the system's RNG for a
//! key file) and kept only wrapped by the KEK, under an encryption context naming its
//! purpose and the deployment (`keyserver:purpose`, `keyserver:deployment`), so a wrapped
//! key cannot be taken for another purpose's or another deployment's. They are kept in the
//! [`Keyring`], one row of the database (so that a fleet shares them: a new instance needs
//! the database URL, its TLS material and access to the KEK). Unwrapped keys live only in
//! memory, zeroized when dropped.
//!
//! - [`provider`]: the KEKs: a key file ([`provider::FileKek`]), AWS KMS
//!   ([`provider::KmsKek`]).
//! - [`deployment`]: the keyring in storage: made or imported at first start, opened at
//!   every start, re-wrapped by `keyserver rotate-kek`.

pub mod deployment;
pub mod provider;

use std::collections::BTreeMap;

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use keyserver_protocol::{
    ServerSetup,
    secret::Key32,
    server_keys::{DataKeys, ServerKeys},
};
use rand::{RngCore, rngs::OsRng};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{kms::KmsError, storage::StorageError};

/// What a data key is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Purpose {
    /// Seals the OPAQUE setup.
    OpaqueSetup,
    /// Seals session keys at rest.
    SessionVault,
    /// Fake records, unknown-name keys and credential identifiers.
    LoginNames,
    /// Wraps the private keys the server holds.
    ServerHeldKeys,
}

impl Purpose {
    /// Every purpose.
    pub const ALL: [Self; 4] = [
        Self::OpaqueSetup,
        Self::SessionVault,
        Self::LoginNames,
        Self::ServerHeldKeys,
    ];

    /// Its name, in the keyring and in encryption contexts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpaqueSetup => "opaque-setup",
            Self::SessionVault => "session-vault",
            Self::LoginNames => "login-names",
            Self::ServerHeldKeys => "server-held-keys",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A deployment's id: random, made with its keyring, bound into every wrapped key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeploymentId(pub [u8; 16]);

impl DeploymentId {
    /// A new one.
    pub fn generate() -> Self {
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        Self(id)
    }

    /// In hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// What a wrapped data key is bound to: its purpose and its deployment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The purpose.
    pub purpose: Purpose,
    /// The deployment.
    pub deployment: DeploymentId,
}

impl Binding {
    /// The KMS encryption context.
    pub fn context(&self) -> crate::kms::Context {
        BTreeMap::from([
            (
                "keyserver:purpose".to_string(),
                self.purpose.as_str().into(),
            ),
            ("keyserver:deployment".to_string(), self.deployment.hex()),
        ])
    }

    /// The associated data of a key wrapped by a key file.
    pub fn aad(&self) -> Vec<u8> {
        let mut aad = b"keyserver/4 data key\0".to_vec();
        aad.extend_from_slice(self.purpose.as_str().as_bytes());
        aad.push(0);
        aad.extend_from_slice(&self.deployment.0);
        aad
    }
}

/// Which key-encryption key a keyring's data keys are wrapped by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", deny_unknown_fields)]
pub enum KekId {
    /// A key file, named by a fingerprint of the key (not the key).
    #[serde(rename = "file")]
    File {
        /// The fingerprint, in hex.
        id: String,
    },
    /// An AWS KMS key.
    #[serde(rename = "aws-kms")]
    Kms {
        /// Its ARN.
        key: String,
    },
}

impl std::fmt::Display for KekId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File { id } => write!(f, "a key file (fingerprint {id})"),
            Self::Kms { key } => write!(f, "the KMS key {key}"),
        }
    }
}

/// Largest keyring read.
const MAX_KEYRING: usize = 64 * 1024;
/// The keyring's format.
const FORMAT: u32 = 1;
/// The associated data of the sealed OPAQUE setup (then the deployment id).
const SETUP_AAD: &[u8] = b"keyserver/4 opaque setup\0";

/// A deployment's keyring: its id, its KEK, every data key wrapped by it, and the OPAQUE
/// setup sealed under its data key. Nothing in it opens without the KEK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keyring {
    /// The deployment.
    pub deployment: DeploymentId,
    /// The KEK.
    pub kek: KekId,
    /// Each data key, wrapped.
    pub wrapped: BTreeMap<Purpose, Vec<u8>>,
    /// The OPAQUE setup, sealed under the opaque-setup data key.
    pub sealed_setup: Vec<u8>,
    /// Imported from a data dir made before keyrings: the credential key is derived from
    /// the setup, as it was there (see `ServerKeys::imported`).
    pub imported: bool,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringFile {
    format: u32,
    deployment: String,
    kek: KekId,
    data_keys: BTreeMap<String, String>,
    opaque_setup: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    imported: bool,
}

impl Keyring {
    /// As stored.
    pub fn encode(&self) -> Vec<u8> {
        let f = KeyringFile {
            format: FORMAT,
            deployment: self.deployment.hex(),
            kek: self.kek.clone(),
            data_keys: self
                .wrapped
                .iter()
                .map(|(p, w)| (p.as_str().to_string(), B64.encode(w)))
                .collect(),
            opaque_setup: B64.encode(&self.sealed_setup),
            imported: self.imported,
        };
        serde_json::to_vec_pretty(&f).unwrap_or_else(|_| unreachable!("plain data"))
    }

    /// From storage. Every purpose's key must be there, and nothing else.
    pub fn decode(bytes: &[u8]) -> Result<Self, KeyError> {
        let bad = |why: String| KeyError::Malformed(why);
        if bytes.len() > MAX_KEYRING {
            return Err(bad(format!("larger than {MAX_KEYRING} bytes")));
        }
        let f: KeyringFile = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        if f.format != FORMAT {
            return Err(bad(format!("format {} is not known here", f.format)));
        }
        let deployment = hex::decode(&f.deployment)
            .ok()
            .and_then(|v| <[u8; 16]>::try_from(v).ok())
            .map(DeploymentId)
            .ok_or_else(|| bad("the deployment id is not 16 bytes of hex".into()))?;
        let mut wrapped = BTreeMap::new();
        for (name, w) in &f.data_keys {
            let p = Purpose::from_name(name)
                .ok_or_else(|| bad(format!("a data key for no known purpose ({name})")))?;
            let w = B64
                .decode(w)
                .map_err(|_| bad(format!("the {name} data key is not base64")))?;
            wrapped.insert(p, w);
        }
        if let Some(p) = Purpose::ALL.iter().find(|p| !wrapped.contains_key(p)) {
            return Err(bad(format!("no {} data key", p.as_str())));
        }
        let sealed_setup = B64
            .decode(&f.opaque_setup)
            .map_err(|_| bad("the sealed OPAQUE setup is not base64".into()))?;
        Ok(Self {
            deployment,
            kek: f.kek,
            wrapped,
            sealed_setup,
            imported: f.imported,
        })
    }
}

impl Keyring {
    /// Refuses `kek` unless it is the one this keyring is wrapped by (`hint`: what to do).
    fn wrapped_by(
        &self,
        kek: &dyn provider::KeyProvider,
        hint: &'static str,
    ) -> Result<(), KeyError> {
        if kek.id() == self.kek {
            return Ok(());
        }
        Err(KeyError::WrongKek {
            keyring: self.kek.to_string(),
            configured: kek.id().to_string(),
            hint,
        })
    }

    /// The data key of purpose `p`, wrapped, and what it is bound to.
    fn wrapped_key(&self, p: Purpose) -> Result<(&[u8], Binding), KeyError> {
        let w = self
            .wrapped
            .get(&p)
            .ok_or_else(|| KeyError::Malformed(format!("no {} data key", p.as_str())))?;
        Ok((
            w,
            Binding {
                purpose: p,
                deployment: self.deployment,
            },
        ))
    }
}

/// What went wrong with the deployment's keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A KMS call failed.
    #[error("{}", kms_message(kek, source))]
    Kms {
        /// The KMS key.
        kek: String,
        /// The call's error.
        source: KmsError,
    },
    /// The KMS key cannot be used in its state.
    #[error(
        "the KMS key {key} is {state}: it cannot unwrap this deployment's keys (enable it, or re-wrap them under another key with rotate-kek while it is still enabled)"
    )]
    KeyState {
        /// The key.
        key: String,
        /// Its state (`Disabled`, `PendingDeletion`, …).
        state: String,
    },
    /// A data key did not unwrap: altered, swapped, another deployment's, or the wrong KEK.
    #[error(
        "the {purpose} data key does not unwrap with {kek}: the wrapped key was altered, swapped for another purpose's or deployment's, or this is not the key it was wrapped by"
    )]
    Unwrap {
        /// Its purpose.
        purpose: &'static str,
        /// The KEK, described.
        kek: String,
    },
    /// The database has accounts but no keyring: new keys would lock every user out.
    #[error(
        "the database has accounts but no keyring (it was deleted, or the database was restored from a copy made before keyrings): refusing to make new keys, which would lock every user out. Restore the keyring row, or the data dir's server-setup.sealed with its key file"
    )]
    Lost,
    /// The keyring is not one this server can read.
    #[error("the deployment's keyring is malformed: {0}")]
    Malformed(String),
    /// The keyring's KEK is not the one configured.
    #[error(
        "the deployment's keys are wrapped by {keyring}, but {configured} is configured: {hint}"
    )]
    WrongKek {
        /// What the keyring says.
        keyring: String,
        /// What the configuration says.
        configured: String,
        /// What to do.
        hint: &'static str,
    },
    /// The key file.
    #[error("the key file {path}: {why}")]
    KeyFile {
        /// Where.
        path: String,
        /// Why.
        why: String,
    },
    /// The keys' settings.
    #[error("key settings: {0}")]
    Settings(String),
    /// The KMS did not answer in time at start.
    #[error(
        "the deployment's keys could not be unwrapped within {secs} s ({kek}): KMS did not answer in time"
    )]
    Timeout {
        /// The KEK, described.
        kek: String,
        /// The limit.
        secs: u64,
    },
    /// The keyring could not be read or written.
    #[error("the deployment's keyring: {0}")]
    Storage(#[from] StorageError),
    /// The data dir's sealed setup of an older deployment could not be imported.
    #[error("cannot import the data dir's server-setup.sealed: {0}")]
    Import(#[from] crate::files::FileError),
}

/// A KMS error, said as what it means for the keys.
fn kms_message(kek: &str, e: &KmsError) -> String {
    let meaning = match e.code() {
        Some("DisabledException") => "the KMS key is disabled",
        Some("KMSInvalidStateException") => {
            "the KMS key cannot be used in its state (pending deletion or import)"
        }
        Some("NotFoundException") => "the KMS key does not exist",
        Some(
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "IncompleteSignature"
            | "MissingAuthenticationToken"
            | "InvalidClientTokenId"
            | "ExpiredTokenException",
        ) => "the credentials were refused",
        Some("InvalidCiphertextException") => {
            "a wrapped data key was altered, or its encryption context (purpose, deployment) \
             is not the one it was wrapped under"
        }
        Some("ThrottlingException") => "KMS throttled every attempt",
        _ => return format!("{kek}: {e}"),
    };
    format!("{kek}: {meaning} ({e})")
}

/// The deployment's secrets, unwrapped.
pub struct Unwrapped {
    /// The OPAQUE setup.
    pub setup: ServerSetup,
    /// The other keys.
    pub keys: ServerKeys,
}

impl std::fmt::Debug for Unwrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unwrapped(REDACTED)")
    }
}

fn aead(key: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key)
            .unwrap_or_else(|_| unreachable!("a 32-byte ChaCha20-Poly1305 key")),
    )
}

/// `version (1) || nonce (12) || ChaCha20-Poly1305(plain, aad)`.
pub(crate) fn seal(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    OsRng.fill_bytes(&mut nonce);
    let mut buf = Zeroizing::new(plain.to_vec());
    aead(key)
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut *buf,
        )
        .unwrap_or_else(|_| unreachable!("sealing a short buffer cannot fail"));
    let mut out = Vec::with_capacity(1 + 12 + buf.len());
    out.push(1);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&buf);
    out
}

/// Opens what [`seal`] made; `None` if it does not open under `key` and `aad`.
pub(crate) fn open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (version, rest) = sealed.split_first()?;
    if *version != 1 || rest.len() < 12 + 16 {
        return None;
    }
    let (nonce, ct) = rest.split_at(12);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = Zeroizing::new(ct.to_vec());
    let n = aead(key)
        .open_in_place(nonce, Aad::from(aad), &mut buf)
        .ok()?
        .len();
    buf.truncate(n);
    Some(buf)
}

fn setup_aad(deployment: DeploymentId) -> Vec<u8> {
    let mut aad = SETUP_AAD.to_vec();
    aad.extend_from_slice(&deployment.0);
    aad
}

/// The data keys of a new deployment, or of one imported: every one made by the provider
/// unless given.
pub struct NewKeys {
    /// The OPAQUE setup (a new one, or an older deployment's).
    pub setup: ServerSetup,
    /// The data keys to keep (an older deployment's, whose sessions and answers for
    /// unknown names they keep); `None`: new ones.
    pub data_keys: Option<DataKeys>,
}

/// Makes a keyring for `new` under `kek`: its data keys wrapped, its setup sealed.
pub async fn create(
    kek: &dyn provider::KeyProvider,
    new: NewKeys,
) -> Result<(Keyring, Unwrapped), KeyError> {
    let deployment = DeploymentId::generate();
    let at = |purpose| Binding {
        purpose,
        deployment,
    };
    let imported = new.data_keys.is_some();
    let (setup_key, setup_wrapped) = kek.generate(at(Purpose::OpaqueSetup)).await?;
    let mut wrapped = BTreeMap::from([(Purpose::OpaqueSetup, setup_wrapped)]);
    let data_keys = match new.data_keys {
        Some(d) => {
            for (p, k) in [
                (Purpose::SessionVault, &d.session_vault),
                (Purpose::LoginNames, &d.login_names),
                (Purpose::ServerHeldKeys, &d.server_held_keys),
            ] {
                wrapped.insert(p, kek.wrap(k, at(p)).await?);
            }
            d
        }
        None => {
            let mut made = BTreeMap::new();
            for p in [
                Purpose::SessionVault,
                Purpose::LoginNames,
                Purpose::ServerHeldKeys,
            ] {
                let (k, w) = kek.generate(at(p)).await?;
                wrapped.insert(p, w);
                made.insert(p, k);
            }
            let mut take = |p| {
                made.remove(&p)
                    .unwrap_or_else(|| unreachable!("made just above"))
            };
            DataKeys {
                session_vault: take(Purpose::SessionVault),
                login_names: take(Purpose::LoginNames),
                server_held_keys: take(Purpose::ServerHeldKeys),
            }
        }
    };
    let serialized = Zeroizing::new(new.setup.serialize().to_vec());
    let sealed_setup = seal(
        setup_key.expose_secret(),
        &setup_aad(deployment),
        &serialized,
    );
    let keyring = Keyring {
        deployment,
        kek: kek.id(),
        wrapped,
        sealed_setup,
        imported,
    };
    let keys = server_keys(&keyring, data_keys, &new.setup);
    Ok((
        keyring,
        Unwrapped {
            setup: new.setup,
            keys,
        },
    ))
}

/// Unwraps every data key of `keyring` with `kek` (which must be the keyring's) and opens
/// the setup.
pub async fn open_keyring(
    kek: &dyn provider::KeyProvider,
    keyring: &Keyring,
) -> Result<Unwrapped, KeyError> {
    let keys = unwrap_all(kek, keyring).await?;
    let [setup_key, session_vault, login_names, server_held_keys] = keys;
    let setup = Zeroizing::new(
        open(
            setup_key.expose_secret(),
            &setup_aad(keyring.deployment),
            &keyring.sealed_setup,
        )
        .ok_or_else(|| {
            KeyError::Malformed(
                "the OPAQUE setup does not open under its data key (it was altered)".into(),
            )
        })?,
    );
    let setup = ServerSetup::deserialize(&setup).map_err(|_| {
        KeyError::Malformed("the OPAQUE setup opens but is not a valid setup".into())
    })?;
    let data_keys = DataKeys {
        session_vault,
        login_names,
        server_held_keys,
    };
    Ok(Unwrapped {
        keys: server_keys(keyring, data_keys, &setup),
        setup,
    })
}

/// The server's keys from `keyring`'s data keys `d`.
fn server_keys(keyring: &Keyring, d: DataKeys, setup: &ServerSetup) -> ServerKeys {
    if keyring.imported {
        ServerKeys::imported(d, setup)
    } else {
        ServerKeys::from_data_keys(d)
    }
}

/// Every data key of `keyring`, in [`Purpose::ALL`]'s order.
async fn unwrap_all(
    kek: &dyn provider::KeyProvider,
    keyring: &Keyring,
) -> Result<[Key32; 4], KeyError> {
    keyring.wrapped_by(
        kek,
        "configure the provider and key the keyring names ([keys] in keyserver.toml, \
         --kms-key-id, --setup-key)",
    )?;
    let mut out = Vec::with_capacity(4);
    for p in Purpose::ALL {
        let (w, binding) = keyring.wrapped_key(p)?;
        out.push(kek.unwrap(w, binding).await?);
    }
    out.try_into()
        .map_err(|_| unreachable!("one key per purpose"))
}

/// `keyring` with every data key wrapped again, by `to` instead of `from` (the keyring's):
/// the same data keys, the same deployment and setup. Where both are KMS keys that can
/// re-encrypt, the keys never leave KMS.
pub async fn rewrap(
    keyring: &Keyring,
    from: &dyn provider::KeyProvider,
    to: &dyn provider::KeyProvider,
) -> Result<Keyring, KeyError> {
    keyring.wrapped_by(
        from,
        "the key it is wrapped by now must be usable to re-wrap it",
    )?;
    from.check().await?;
    to.check().await?;
    let mut wrapped = BTreeMap::new();
    for p in Purpose::ALL {
        let (w, binding) = keyring.wrapped_key(p)?;
        let again = match from.reencrypt_to(w, binding, to).await {
            Some(r) => r?,
            None => {
                let k = from.unwrap(w, binding).await?;
                to.wrap(&k, binding).await?
            }
        };
        wrapped.insert(p, again);
    }
    Ok(Keyring {
        deployment: keyring.deployment,
        kek: to.id(),
        wrapped,
        sealed_setup: keyring.sealed_setup.clone(),
        imported: keyring.imported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use provider::FileKek;

    fn file_kek(byte: u8) -> FileKek {
        FileKek::from_key("test".into(), Zeroizing::new([byte; 32]))
    }

    #[tokio::test]
    async fn a_keyring_opens_only_with_its_key_and_every_wrapped_key_in_its_place() {
        let kek = file_kek(1);
        let setup = ServerSetup::new(&mut OsRng);
        let serialized = setup.serialize().to_vec();
        let (ring, made) = create(
            &kek,
            NewKeys {
                setup,
                data_keys: None,
            },
        )
        .await
        .unwrap();
        let back = Keyring::decode(&ring.encode()).unwrap();
        assert_eq!(back, ring);
        let opened = open_keyring(&kek, &back).await.unwrap();
        assert_eq!(opened.setup.serialize().to_vec(), serialized);
        assert_eq!(
            opened.keys.vault_key().expose_secret(),
            made.keys.vault_key().expose_secret()
        );
        // Another key file: named as not the keyring's.
        assert!(matches!(
            open_keyring(&file_kek(2), &back).await,
            Err(KeyError::WrongKek { .. })
        ));
        // Two purposes' keys swapped: refused, and named.
        let mut swapped = ring.clone();
        let vault = swapped.wrapped[&Purpose::SessionVault].clone();
        let names = swapped.wrapped[&Purpose::LoginNames].clone();
        swapped.wrapped.insert(Purpose::SessionVault, names);
        swapped.wrapped.insert(Purpose::LoginNames, vault);
        let e = open_keyring(&kek, &swapped).await.unwrap_err();
        assert!(e.to_string().contains("session-vault"), "{e}");
        // Another deployment's: refused.
        let mut other = ring.clone();
        other.deployment = DeploymentId([9; 16]);
        assert!(open_keyring(&kek, &other).await.is_err());
        // One bit of a wrapped key, or of the sealed setup: refused.
        let mut flipped = ring.clone();
        if let Some(w) = flipped.wrapped.get_mut(&Purpose::ServerHeldKeys) {
            w[20] ^= 1;
        }
        assert!(matches!(
            open_keyring(&kek, &flipped).await,
            Err(KeyError::Unwrap {
                purpose: "server-held-keys",
                ..
            })
        ));
        let mut flipped = ring;
        flipped.sealed_setup[30] ^= 1;
        assert!(matches!(
            open_keyring(&kek, &flipped).await,
            Err(KeyError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn rewrapping_keeps_every_key_and_changes_only_the_wrapping() {
        let (a, b) = (file_kek(1), file_kek(2));
        let (ring, made) = create(
            &a,
            NewKeys {
                setup: ServerSetup::new(&mut OsRng),
                data_keys: None,
            },
        )
        .await
        .unwrap();
        let moved = rewrap(&ring, &a, &b).await.unwrap();
        assert_eq!(moved.deployment, ring.deployment);
        assert_ne!(moved.wrapped, ring.wrapped);
        assert!(open_keyring(&a, &moved).await.is_err());
        let opened = open_keyring(&b, &moved).await.unwrap();
        assert_eq!(
            opened.keys.server_held_keys().expose_secret(),
            made.keys.server_held_keys().expose_secret()
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_not_used_and_a_made_one_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kek");
        let made = FileKek::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // Made once: the next load (or a second first start) reads the same key.
        use provider::KeyProvider as _;
        assert_eq!(FileKek::load_or_create(&path).unwrap().id(), made.id());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = FileKek::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        assert!(
            FileKek::load(&dir.path().join("missing"))
                .unwrap_err()
                .to_string()
                .contains("does not exist")
        );
    }

    #[test]
    fn a_malformed_keyring_is_refused_with_a_reason() {
        for (bytes, why) in [
            (&b"{"[..], "EOF"),
            (b"{\"format\":2,\"deployment\":\"00\",\"kek\":{\"kind\":\"file\",\"id\":\"x\"},\"data_keys\":{},\"opaque_setup\":\"\"}", "format 2"),
            (b"{\"format\":1,\"deployment\":\"00000000000000000000000000000000\",\"kek\":{\"kind\":\"file\",\"id\":\"x\"},\"data_keys\":{},\"opaque_setup\":\"\"}", "no opaque-setup"),
        ] {
            let e = Keyring::decode(bytes).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        }
        assert!(Keyring::decode(&vec![b' '; MAX_KEYRING + 1]).is_err());
    }
}
