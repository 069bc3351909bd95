//! The rules of keys the server holds for its users, written once for every backend: how a
//! private key is sealed at rest, and how fast a key and an account may sign.
//!
//! A private key is sealed under the deployment's data key for server-held keys (wrapped by
//! the KEK: a key file, KMS, or KMS answering only the attested enclave), with
//! ChaCha20-Poly1305 and the associated data
//!
//! ```text
//! "keyserver/4 held key" || account (i64 BE) || u16 BE length || user name
//!   || u16 BE length || key name || algorithm (u8) || u16 BE length || public key
//!   || exportable (u8: 0 or 1)
//! ```
//!
//! so a sealed key copied to another account or name, relabelled with another algorithm,
//! shown with another public key (a database writer swapping the address a user pays to) or
//! made exportable behind its user's back does not open: every use of a key (sign, public,
//! list, export) opens it first.

use keyserver_protocol::{
    KeyName, UserName,
    secret::Key32,
    signing::{Algorithm, PrivateKey},
};

use crate::storage::{AccountId, HeldKeyRow, KeyUsage, StorageError};

const AAD_LABEL: &[u8] = b"keyserver/4 held key";

/// Length of the rate limit's window, in seconds.
pub const WINDOW_SECS: i64 = 60;

fn put(aad: &mut Vec<u8>, field: &[u8]) {
    aad.extend_from_slice(&u16::try_from(field.len()).unwrap_or(u16::MAX).to_be_bytes());
    aad.extend_from_slice(field);
}

/// The associated data a key is sealed with (see the module's documentation).
fn aad(owner: Owner<'_>, name: &KeyName, key: Sealed<'_>) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len() + 8 + 3 * 2 + 64 + 128 + 1 + 33 + 1);
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(&owner.account.to_be_bytes());
    put(&mut aad, owner.user.as_str().as_bytes());
    put(&mut aad, name.as_str().as_bytes());
    aad.push(key.algorithm.code());
    put(&mut aad, key.public_key);
    aad.push(u8::from(key.exportable));
    aad
}

/// What a sealed key is bound to besides its owner and name.
#[derive(Clone, Copy)]
struct Sealed<'a> {
    algorithm: Algorithm,
    public_key: &'a [u8],
    exportable: bool,
}

/// Who a key belongs to: what its sealing is bound to besides the key's own row.
#[derive(Clone, Copy, Debug)]
pub struct Owner<'a> {
    /// The account's id.
    pub account: AccountId,
    /// Its user name.
    pub user: &'a UserName,
}

/// Seals `key`, named `name`, for `owner`, under the data key `dek`, exportable or not;
/// returns the public key and the sealed private key.
pub fn seal(
    dek: &Key32,
    owner: Owner<'_>,
    name: &KeyName,
    key: &PrivateKey,
    exportable: bool,
) -> Result<(Vec<u8>, Vec<u8>), keyserver_protocol::signing::SigningError> {
    let public_key = key.public_key()?;
    let bound = Sealed {
        algorithm: key.algorithm(),
        public_key: &public_key,
        exportable,
    };
    let sealed = crate::keys::seal(
        dek.expose_secret(),
        &aad(owner, name, bound),
        key.expose_secret(),
    );
    Ok((public_key, sealed))
}

/// Opens `row`'s private key for `owner`: the row is the one sealed for this account, name,
/// algorithm and public key, or this is an error (the database was altered).
pub fn open(dek: &Key32, owner: Owner<'_>, row: &HeldKeyRow) -> Result<PrivateKey, StorageError> {
    let aad = aad(
        owner,
        &row.name,
        Sealed {
            algorithm: row.algorithm,
            public_key: &row.public_key,
            exportable: row.exportable,
        },
    );
    let corrupt = || {
        StorageError::Corrupt(format!(
            "held key of account {}: the sealed key does not open for its row",
            owner.account
        ))
    };
    let plain =
        crate::keys::open(dek.expose_secret(), &aad, &row.sealed_key).ok_or_else(corrupt)?;
    PrivateKey::from_bytes(row.algorithm, &plain).map_err(|_| corrupt())
}

/// How fast keys may sign: at most `per_key` signatures per key and `per_account` per
/// account in each window of [`WINDOW_SECS`] (fixed windows, aligned to the epoch, so every
/// instance of a fleet counts in the same one; the counts live in the key rows, under the
/// account's lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignLimits {
    /// Signatures per key per window.
    pub per_key: u64,
    /// Signatures per account per window.
    pub per_account: u64,
}

/// The start of the window `now` falls in. (The account's count sums the windows from
/// here on: see [`decide_sign`], whose windows never move back.)
pub fn window_start(now: i64) -> i64 {
    now - now.rem_euclid(WINDOW_SECS)
}

/// Decides one more signature at `now` by a key that has signed as `usage` says, in an
/// account whose keys signed `account_in_window` times in the current window: the key's
/// usage after it, or the seconds to wait.
///
/// A window never moves back: a request stamped before another that committed first (many
/// in flight at a minute's turn, or instances whose clocks differ by a second) counts in the
/// newer window, so it cannot reset that window's count.
pub fn decide_sign(
    limits: SignLimits,
    now: i64,
    usage: KeyUsage,
    account_in_window: u64,
) -> Result<KeyUsage, u64> {
    let start = window_start(now).max(usage.window_start);
    let key_in_window = if usage.window_start == start {
        usage.window_count
    } else {
        0
    };
    if key_in_window >= limits.per_key || account_in_window >= limits.per_account {
        let wait = (start + WINDOW_SECS).saturating_sub(now);
        return Err(u64::try_from(wait)
            .unwrap_or(1)
            .clamp(1, WINDOW_SECS as u64 * 2));
    }
    Ok(KeyUsage {
        signatures: usage.signatures.saturating_add(1),
        window_start: start,
        window_count: key_in_window + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::OsRng;

    fn row(name: &str, key: &PrivateKey, owner: Owner<'_>, dek: &Key32) -> HeldKeyRow {
        let name = KeyName::new(name).unwrap();
        let (public_key, sealed_key) = seal(dek, owner, &name, key, false).unwrap();
        HeldKeyRow {
            name,
            algorithm: key.algorithm(),
            public_key,
            sealed_key,
            exportable: false,
            created: 0,
            usage: KeyUsage::default(),
        }
    }

    #[test]
    fn a_sealed_key_opens_only_for_its_account_name_algorithm_and_public_key() {
        let dek = Key32::from_bytes([7; 32]);
        let alice = UserName::new("alice").unwrap();
        let owner = Owner {
            account: 1,
            user: &alice,
        };
        let key = PrivateKey::generate(Algorithm::Secp256k1, &mut OsRng);
        let good = row("eth-hot", &key, owner, &dek);
        assert_eq!(
            open(&dek, owner, &good).unwrap().expose_secret(),
            key.expose_secret()
        );
        // Nothing of the key is in what is stored.
        assert!(
            !good
                .sealed_key
                .windows(32)
                .any(|w| w == key.expose_secret())
        );

        let other_account = Owner {
            account: 2,
            user: &alice,
        };
        assert!(open(&dek, other_account, &good).is_err());
        let bob = UserName::new("bob").unwrap();
        assert!(
            open(
                &dek,
                Owner {
                    account: 1,
                    user: &bob
                },
                &good
            )
            .is_err()
        );
        let mut renamed = good.clone();
        renamed.name = KeyName::new("eth-cold").unwrap();
        assert!(open(&dek, owner, &renamed).is_err());
        let mut relabelled = good.clone();
        relabelled.algorithm = Algorithm::Ed25519;
        assert!(open(&dek, owner, &relabelled).is_err());
        let mut swapped = good.clone();
        swapped.public_key = PrivateKey::generate(Algorithm::Secp256k1, &mut OsRng)
            .public_key()
            .unwrap();
        assert!(open(&dek, owner, &swapped).is_err());
        let mut exportable = good.clone();
        exportable.exportable = true;
        assert!(open(&dek, owner, &exportable).is_err());
        assert!(open(&Key32::from_bytes([8; 32]), owner, &good).is_err());
    }

    #[test]
    fn each_key_and_each_account_signs_at_most_its_limit_per_window() {
        let limits = SignLimits {
            per_key: 3,
            per_account: 5,
        };
        let mut usage = KeyUsage::default();
        let now = 6_000; // a window's start
        for i in 0..3 {
            usage = decide_sign(limits, now + i, usage, i.try_into().unwrap()).unwrap();
        }
        assert_eq!(usage.window_count, 3);
        assert_eq!(usage.signatures, 3);
        // The key is spent until the next window: 57 s from now + 3.
        assert_eq!(decide_sign(limits, now + 3, usage, 3), Err(57));
        // Another key of the account may still sign, until the account is spent.
        assert!(decide_sign(limits, now + 3, KeyUsage::default(), 4).is_ok());
        assert_eq!(
            decide_sign(limits, now + 59, KeyUsage::default(), 5),
            Err(1)
        );
        // A new window counts from zero; the total goes on.
        let next = decide_sign(limits, now + 60, usage, 0).unwrap();
        assert_eq!(
            (next.window_start, next.window_count, next.signatures),
            (6_060, 1, 4)
        );
    }
}
