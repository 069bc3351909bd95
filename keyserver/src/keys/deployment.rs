//! The deployment's keyring in storage: made at the first start (or imported from a data
//! dir made before keyrings), opened at every start, wrapped again by `keyserver
//! rotate-kek`.
//!
//! The keyring is one row of the database, written with a compare-and-set on its
//! generation: two instances that start at once on an empty database make one keyring (the
//! second opens the first's), and a re-wrapping is written only in place of the generation
//! it read. A running server keeps the keys it unwrapped; the next start reads the newest
//! wrapping.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use keyserver_protocol::{ServerSetup, server_keys::ServerKeys};
use rand::rngs::OsRng;

use super::{
    KeyError, Keyring, NewKeys, Unwrapped, create, open_keyring,
    provider::{FileKek, KeyProvider, KmsKek},
    rewrap,
};
use crate::{
    attestation::SecurityModule,
    config::{KeySettings, Provider},
    kms::{
        Credentials, Endpoint, KmsClient, TcpConnector,
        enclave::{self, EnclaveRecipient},
    },
    server_setup::{self, SetupKeySource},
    storage::{Durability, Storage},
};

/// The KMS key settings (`[keys]` in `keyserver.toml`, `--kms-*`, `KEYSERVER_KMS_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KmsSettings {
    /// The key: an ARN, a key id or an alias.
    pub key_id: String,
    /// The region; default: the ARN's, else `AWS_REGION` / `AWS_DEFAULT_REGION`.
    pub region: Option<String>,
    /// The endpoint (a VPC endpoint, an emulator); default: AWS's for the region.
    pub endpoint: Option<String>,
    /// Inside an enclave: the host that connects calls to KMS and lends credentials
    /// (`crate::kms::enclave`); `None`: TCP and this machine's credentials.
    pub via_host: Option<crate::relay::Endpoint>,
}

/// Which key-encryption key wraps the deployment's data keys.
#[derive(Clone, Debug)]
pub enum Kek {
    /// A key file (or the key itself, from the environment).
    File(SetupKeySource),
    /// An AWS KMS key, called over the network.
    AwsKms(KmsSettings),
    /// An AWS KMS key, called from inside a Nitro enclave with an attested recipient: the
    /// security module that attests the enclave's RSA key (`None` until the server gives
    /// it one, see [`Kek::attested_by`]).
    NitroKms(KmsSettings, Option<Arc<dyn SecurityModule>>),
}

impl Kek {
    /// The KEK `keys` names; `file` is the key file's source (for the `file` provider).
    pub fn from_settings(keys: &KeySettings, file: SetupKeySource) -> Self {
        let kms = || KmsSettings {
            key_id: keys.kms_key_id.clone().unwrap_or_default(),
            region: keys.kms_region.clone(),
            endpoint: keys.kms_endpoint.clone(),
            via_host: None,
        };
        match keys.provider {
            Provider::File => Self::File(file),
            Provider::AwsKms => Self::AwsKms(kms()),
            Provider::NitroKms => Self::NitroKms(kms(), None),
        }
    }

    /// What it is, for messages (never a key).
    pub fn describe(&self) -> String {
        match self {
            Self::File(s) => format!("the key file {}", s.describe()),
            Self::AwsKms(k) => format!("the KMS key {} at {}", k.key_id, endpoint_of(k)),
            Self::NitroKms(k, _) => format!(
                "the KMS key {} at {} (from an enclave)",
                k.key_id,
                endpoint_of(k)
            ),
        }
    }

    /// The provider. A key file that does not exist is made if `create` (a new
    /// deployment), and is an error otherwise.
    pub async fn provider(&self, create: bool) -> Result<Box<dyn KeyProvider>, KeyError> {
        match self {
            Self::File(SetupKeySource::File(path)) if create => {
                Ok(Box::new(FileKek::load_or_create(path)?))
            }
            Self::File(SetupKeySource::File(path)) => Ok(Box::new(FileKek::load(path)?)),
            Self::File(inline @ SetupKeySource::Inline(key)) => {
                Ok(Box::new(FileKek::from_key(inline.describe(), key.clone())))
            }
            Self::AwsKms(k) => Ok(Box::new(
                KmsKek::resolve(kms_client(k).await?, &k.key_id).await?,
            )),
            Self::NitroKms(_, None) => Err(KeyError::Settings(
                "the nitro-kms provider unwraps keys only inside a Nitro enclave, with an \
                 attested recipient: serve with --attestation nsm (or simulated, against a \
                 KMS test double)"
                    .into(),
            )),
            Self::NitroKms(k, Some(module)) => {
                // The key must be named by the image itself: an alias or a bare key id would
                // be resolved with the credentials the host lends, in whichever account they
                // belong to, and the host could name a key of its own.
                if !is_key_arn(&k.key_id) {
                    return Err(KeyError::Settings(format!(
                        "the nitro-kms provider needs the KMS key as its full ARN                          (arn:aws:kms:REGION:ACCOUNT:key/ID), not {}: an alias or key id                          would be resolved with the host's credentials",
                        k.key_id
                    )));
                }
                let recipient = EnclaveRecipient::new(module.clone())
                    .map_err(|e| KeyError::Settings(e.to_string()))?;
                let kek = KmsKek::resolve(kms_client(k).await?, &k.key_id).await?;
                if kek.key() != k.key_id {
                    return Err(KeyError::Settings(format!(
                        "KMS describes the key {} as {}: not the key this server was built for",
                        k.key_id,
                        kek.key()
                    )));
                }
                Ok(Box::new(kek.for_recipient(Arc::new(recipient))))
            }
        }
    }

    /// This KEK as the server at hand reaches it: through the host's relay at `via_host`
    /// (inside an enclave), and for `nitro-kms` with keys attested by `module`.
    #[must_use]
    pub fn attested_by(
        self,
        module: Option<Arc<dyn SecurityModule>>,
        via_host: Option<crate::relay::Endpoint>,
    ) -> Self {
        match self {
            Self::AwsKms(k) => Self::AwsKms(KmsSettings { via_host, ..k }),
            Self::NitroKms(k, _) => Self::NitroKms(KmsSettings { via_host, ..k }, module),
            file @ Self::File(_) => file,
        }
    }
}

/// Whether `id` is a KMS key's full ARN: `arn:PARTITION:kms:REGION:ACCOUNT:key/ID`.
fn is_key_arn(id: &str) -> bool {
    let parts: Vec<&str> = id.splitn(6, ':').collect();
    matches!(
        parts.as_slice(),
        ["arn", partition, "kms", region, account, resource]
            if !partition.is_empty()
                && !region.is_empty()
                && account.len() == 12
                && account.bytes().all(|b| b.is_ascii_digit())
                && resource.strip_prefix("key/").is_some_and(|k| !k.is_empty())
    )
}

/// Where calls for `k` go, for messages.
fn endpoint_of(k: &KmsSettings) -> String {
    match (&k.endpoint, region_of(k)) {
        (Some(e), _) => e.clone(),
        (None, Ok(r)) => Endpoint::aws(&r).to_string(),
        (None, Err(_)) => "AWS (no region set)".into(),
    }
}

/// The region of a KMS key: the settings', else its ARN's, else the environment's.
fn region_of(k: &KmsSettings) -> Result<String, KeyError> {
    if let Some(r) = &k.region {
        return Ok(r.clone());
    }
    // arn:aws:kms:REGION:ACCOUNT:key/ID
    if let Some(r) = k
        .key_id
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(2))
        .filter(|r| !r.is_empty())
    {
        return Ok(r.to_string());
    }
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()))
        .ok_or_else(|| {
            KeyError::Settings(format!(
                "no region for the KMS key {}: set kms_region (or --kms-region, \
                 KEYSERVER_KMS_REGION, AWS_REGION), or give the key as an ARN",
                k.key_id
            ))
        })
}

/// A KMS client for `k`: over TCP with the standard AWS credentials, or through the host
/// with the credentials it lends.
async fn kms_client(k: &KmsSettings) -> Result<KmsClient, KeyError> {
    let region = region_of(k)?;
    let endpoint = match &k.endpoint {
        Some(url) => Endpoint::parse(url).map_err(KeyError::Settings)?,
        None => Endpoint::aws(&region),
    };
    if let Some(host) = &k.via_host {
        let credentials = enclave::credentials_from(host)
            .await
            .map_err(KeyError::Settings)?;
        return Ok(KmsClient::new(
            endpoint,
            region,
            credentials,
            Arc::new(enclave::HostConnector::new(host.clone())),
        ));
    }
    let credentials = Credentials::from_environment()
        .map_err(|e| KeyError::Settings(format!("AWS credentials: {e}")))?;
    Ok(KmsClient::new(
        endpoint,
        region,
        credentials,
        Arc::new(TcpConnector),
    ))
}

/// A data dir made before keyrings: its sealed OPAQUE setup, and the key that seals it.
#[derive(Clone, Debug)]
pub struct Legacy {
    /// The data dir.
    pub data_dir: PathBuf,
    /// The key of its `server-setup.sealed`.
    pub key: SetupKeySource,
}

impl Legacy {
    fn file(&self) -> PathBuf {
        self.data_dir.join(server_setup::SETUP_FILE)
    }
}

/// How the keyring came to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Made {
    /// It was there.
    Opened,
    /// It was made now, with a new OPAQUE setup.
    Created,
    /// It was made now from a data dir's `server-setup.sealed` (which is then removed).
    Imported,
}

/// The deployment's keys, unwrapped, and their keyring.
#[derive(Debug)]
pub struct Opened {
    /// The keys.
    pub unwrapped: Unwrapped,
    /// The keyring.
    pub keyring: Keyring,
    /// How it came to be.
    pub made: Made,
}

async fn read_keyring(storage: &Storage) -> Result<Option<(u64, Keyring)>, KeyError> {
    Ok(read_state(storage).await?.0)
}

/// The keyring (with its generation), and whether the database has accounts.
async fn read_state(storage: &Storage) -> Result<(Option<(u64, Keyring)>, bool), KeyError> {
    let (row, accounts) = storage
        .read(|tx| Box::pin(async move { Ok((tx.keyring().await?, tx.has_accounts().await?)) }))
        .await?;
    let keyring = row
        .map(|(generation, body)| Ok::<_, KeyError>((generation, Keyring::decode(&body)?)))
        .transpose()?;
    Ok((keyring, accounts))
}

async fn put_keyring(
    storage: &Storage,
    previous: Option<u64>,
    generation: u64,
    keyring: &Keyring,
) -> Result<bool, KeyError> {
    let body = keyring.encode();
    Ok(storage
        .write(Durability::Disk, move |tx| {
            Box::pin(async move { tx.put_keyring(previous, generation, &body).await })
        })
        .await?)
}

/// Opens the deployment's keyring with `kek`, or makes it: from `legacy`'s sealed setup if
/// it has one, else with a new OPAQUE setup and new data keys, but only if the database has
/// no account yet ([`KeyError::Lost`] otherwise: new keys would lock every user out).
pub async fn open_or_create(
    storage: &Storage,
    kek: &Kek,
    legacy: Option<&Legacy>,
) -> Result<Opened, KeyError> {
    let (keyring, accounts) = read_state(storage).await?;
    if let Some((_, keyring)) = keyring {
        let provider = kek.provider(false).await?;
        let unwrapped = open_keyring(provider.as_ref(), &keyring).await?;
        if let Some(l) = legacy {
            forget_imported(l, &unwrapped.setup);
        }
        return Ok(Opened {
            unwrapped,
            keyring,
            made: Made::Opened,
        });
    }
    let (new, made) = match legacy.filter(|l| l.file().is_file()) {
        Some(l) => {
            let setup = server_setup::load(&l.data_dir, &l.key)?;
            let data_keys = ServerKeys::legacy_data_keys(&setup);
            (
                NewKeys {
                    setup,
                    data_keys: Some(data_keys),
                },
                Made::Imported,
            )
        }
        None if accounts => return Err(KeyError::Lost),
        None => (
            NewKeys {
                setup: ServerSetup::new(&mut OsRng),
                data_keys: None,
            },
            Made::Created,
        ),
    };
    let provider = kek.provider(true).await?;
    provider.check().await?;
    let (keyring, unwrapped) = create(provider.as_ref(), new).await?;
    if put_keyring(storage, None, 1, &keyring).await? {
        if let Some(l) = legacy.filter(|_| made == Made::Imported) {
            forget_imported(l, &unwrapped.setup);
        }
        return Ok(Opened {
            unwrapped,
            keyring,
            made,
        });
    }
    // Another instance made one first: that one is the deployment's.
    let (_, keyring) = read_keyring(storage)
        .await?
        .ok_or_else(|| KeyError::Malformed("the keyring was written and is gone".into()))?;
    let unwrapped = open_keyring(provider.as_ref(), &keyring).await?;
    Ok(Opened {
        unwrapped,
        keyring,
        made: Made::Opened,
    })
}

/// Removes a data dir's `server-setup.sealed` once the keyring holds the same setup: the
/// setup then exists only under the keyring's KEK. Left (and said) if it holds another.
fn forget_imported(legacy: &Legacy, setup: &ServerSetup) {
    let path = legacy.file();
    if !path.is_file() {
        return;
    }
    match server_setup::load(&legacy.data_dir, &legacy.key) {
        Ok(old) if old.serialize() == setup.serialize() => {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), error = %e, "cannot remove the imported setup file");
            } else {
                tracing::info!(file = %path.display(), "the OPAQUE setup is in the keyring now; removed its old sealed file");
            }
        }
        _ => tracing::warn!(
            file = %path.display(),
            "the data dir holds a sealed OPAQUE setup that is not the keyring's; it is not used"
        ),
    }
}

/// What [`rotate`] did.
#[derive(Debug)]
pub struct Rotated {
    /// The KEK before.
    pub from: super::KekId,
    /// The KEK now.
    pub to: super::KekId,
    /// The keyring's generation now.
    pub generation: u64,
}

/// Wraps every data key of the deployment again, by `to` instead of `from`. The new
/// wrapping is checked to open to the same keys before it is written, and it is written
/// only in place of the generation read. Servers running keep serving with what they
/// unwrapped; their next start uses the new wrapping.
pub async fn rotate(storage: &Storage, from: &Kek, to: &Kek) -> Result<Rotated, KeyError> {
    let (generation, keyring) = read_keyring(storage).await?.ok_or_else(|| {
        KeyError::Settings(
            "this deployment has no keyring yet: start the server (or keyserver init) first".into(),
        )
    })?;
    let from_p = from.provider(false).await?;
    let to_p = to.provider(true).await?;
    if to_p.id() == keyring.kek {
        return Err(KeyError::Settings(format!(
            "the keys are already wrapped by {}",
            keyring.kek
        )));
    }
    let before = open_keyring(from_p.as_ref(), &keyring).await?;
    let again = rewrap(&keyring, from_p.as_ref(), to_p.as_ref()).await?;
    let after = open_keyring(to_p.as_ref(), &again).await?;
    if !same(&before, &after) {
        return Err(KeyError::Malformed(
            "the keys wrapped again do not open to the same keys; nothing was written".into(),
        ));
    }
    if !put_keyring(storage, Some(generation), generation + 1, &again).await? {
        return Err(KeyError::Settings(
            "the keyring changed while it was being wrapped again (another rotate-kek?); \
             nothing was written: run it again"
                .into(),
        ));
    }
    Ok(Rotated {
        from: keyring.kek,
        to: again.kek,
        generation: generation + 1,
    })
}

fn same(a: &Unwrapped, b: &Unwrapped) -> bool {
    use subtle::ConstantTimeEq;
    let eq = |x: &[u8], y: &[u8]| bool::from(x.ct_eq(y));
    eq(&a.setup.serialize(), &b.setup.serialize())
        && eq(
            a.keys.vault_key().expose_secret(),
            b.keys.vault_key().expose_secret(),
        )
        && eq(
            a.keys.fake_seed().expose_secret(),
            b.keys.fake_seed().expose_secret(),
        )
        && eq(
            a.keys.server_held_keys().expose_secret(),
            b.keys.server_held_keys().expose_secret(),
        )
}

/// Where the data dir's legacy setup would be, for messages.
pub fn legacy_file(data_dir: &Path) -> PathBuf {
    data_dir.join(server_setup::SETUP_FILE)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use keyserver_protocol::{UserName, session::SessionId};

    use super::*;
    use crate::storage::{NewAccount, sqlite::SqliteBackend};

    #[test]
    fn only_a_full_key_arn_names_the_key_of_an_enclave() {
        for ok in [
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k",
        ] {
            assert!(is_key_arn(ok), "{ok}");
        }
        for bad in [
            "alias/keyserver",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/keyserver",
            "arn:aws:kms:eu-west-1:1111:key/k",
            "arn:aws:kms::111122223333:key/k",
            "arn:aws:kms:eu-west-1:111122223333:key/",
            "arn:aws:s3:eu-west-1:111122223333:key/k",
        ] {
            assert!(!is_key_arn(bad), "{bad}");
        }
    }

    async fn sqlite(dir: &Path) -> Storage {
        Storage::new(Arc::new(
            SqliteBackend::open(&dir.join("keyserver.db"))
                .await
                .unwrap(),
        ))
    }

    fn file_kek(dir: &Path) -> Kek {
        Kek::File(SetupKeySource::File(dir.join("kek")))
    }

    #[tokio::test]
    async fn a_keyring_is_made_once_and_opened_after() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(dir.path()).await;
        let kek = file_kek(dir.path());
        let made = open_or_create(&s, &kek, None).await.unwrap();
        assert_eq!(made.made, Made::Created);
        let again = open_or_create(&s, &kek, None).await.unwrap();
        assert_eq!(again.made, Made::Opened);
        assert_eq!(again.keyring, made.keyring);
        assert_eq!(
            again.unwrapped.setup.serialize(),
            made.unwrapped.setup.serialize()
        );
    }

    /// A database with accounts and no keyring lost it: new keys would lock every user out.
    #[tokio::test]
    async fn no_new_keys_for_a_database_that_has_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let s = sqlite(dir.path()).await;
        let alice = UserName::new("alice").unwrap();
        s.write(Durability::Disk, move |tx| {
            Box::pin(async move {
                tx.insert_account(&NewAccount {
                    user: &alice,
                    record: b"record",
                    credential_id: b"id",
                    sealed_storage_key: b"key",
                    created: 1,
                })
                .await
            })
        })
        .await
        .unwrap();
        let e = open_or_create(&s, &file_kek(dir.path()), None)
            .await
            .unwrap_err();
        assert!(matches!(e, KeyError::Lost), "{e}");
    }

    /// A data dir made before keyrings: its setup and every key it derived are kept, and its
    /// sealed file goes once the keyring holds the setup.
    #[tokio::test]
    async fn an_old_data_dir_is_imported_with_every_key_it_had() {
        let dir = tempfile::tempdir().unwrap();
        let key = SetupKeySource::File(dir.path().join("setup.key"));
        server_setup::create(dir.path(), &key).unwrap();
        let setup = server_setup::load(dir.path(), &key).unwrap();
        let old = ServerKeys::derive(&setup);
        let s = sqlite(dir.path()).await;
        let legacy = Legacy {
            data_dir: dir.path().to_path_buf(),
            key: key.clone(),
        };
        let opened = open_or_create(&s, &Kek::File(key.clone()), Some(&legacy))
            .await
            .unwrap();
        assert_eq!(opened.made, Made::Imported);
        assert!(!legacy.file().exists());
        let reopened = open_or_create(&s, &Kek::File(key), Some(&legacy))
            .await
            .unwrap();
        for k in [&opened.unwrapped.keys, &reopened.unwrapped.keys] {
            assert_eq!(
                k.vault_key().expose_secret(),
                old.vault_key().expose_secret()
            );
            assert_eq!(
                k.fake_seed().expose_secret(),
                old.fake_seed().expose_secret()
            );
            let session = SessionId([7; 16]);
            assert_eq!(
                k.next_credential_id(&session, 3),
                old.next_credential_id(&session, 3)
            );
        }
        assert_eq!(reopened.unwrapped.setup.serialize(), setup.serialize());
    }
}
